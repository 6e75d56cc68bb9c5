//! Employer invoices: what Org says (the unit tree, the units' claim forms, who was enrolled when)
//! is read before the write; the charges a month bills are read and marked, the member-months
//! charged and the invoices stored inside one write transaction of the organization, so that an
//! assembly or another invoice run cannot take the same charges. Payments are ledger entries on the
//! lines' charges, allocated by the pure [`invoice::allocate`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use pm_api::billing::{
    ChargeSource, ChargeState, Contract, Invoice, InvoiceBasis, InvoiceLine, InvoiceState,
    LedgerEntry, LedgerEntryKind,
};
use pm_api::org::EnrollmentEventKind;
use pm_runtime::docstore;
use pm_runtime::names::NamePattern;
use pm_runtime::time::now_micros;
use pm_runtime::{ApiError, ApiResult, Db};
use sqlx::AnyConnection;

use crate::charges::{self, ChargeRow};
use crate::domain::charge::Profile;
use crate::domain::invoice::{
    self, Basis, Event, InvoiceContract, Member, Month, Owed, State, Unallocated, VisitCharge,
};
use crate::domain::money::Cents;
use crate::invoice_store::{self, StoredInvoice, StoredLine};
use crate::org::OrgView;

/// `organizations/{organization}/invoices/{invoice}`.
pub const INVOICE_NAME: NamePattern = NamePattern(&["organizations", "invoices"]);

/// A contract and what its invoice needs from Org, gathered before the write.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The contract's terms.
    pub contract: InvoiceContract,
    /// Its billing entity.
    pub billing_entity: String,
    /// Per member per month: the members of the month.
    pub members: Vec<Member>,
}

/// Invoices over Billing's slice, asking Org through `org`.
pub struct Invoicing {
    db: Db,
    org: Arc<OrgView>,
}

fn micros(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(t.nanos / 1_000))
}

/// The contract's terms as invoicing reads them (`None` for one whose stored terms do not parse).
fn terms(c: &Contract) -> Option<(InvoiceContract, String)> {
    let (from, until) =
        crate::domain::validate::period("", c.effective_from.as_ref(), c.effective_until.as_ref())
            .ok()?;
    let basis = invoice::basis(c.invoice_basis, c.member_month_fee_cents).ok()?;
    Some((
        InvoiceContract {
            name: c.name.clone(),
            payer: c.payer.clone(),
            units: c.units.clone(),
            from,
            until,
            basis,
        },
        c.billing_entity.clone(),
    ))
}

/// `in_subtree(unit, ancestor)` over an organization's tree (unit, parent).
fn subtree(tree: &[(String, String)]) -> impl Fn(&str, &str) -> bool + '_ {
    let parents: HashMap<&str, &str> = tree.iter().map(|(u, p)| (u.as_str(), p.as_str())).collect();
    move |unit: &str, ancestor: &str| {
        let mut at = unit;
        for _ in 0..=parents.len() {
            if at == ancestor {
                return true;
            }
            match parents.get(at) {
                Some(up) if !up.is_empty() => at = up,
                _ => return false,
            }
        }
        false
    }
}

/// The organization's local date today and the local month's bounds as UTC instants (µs).
fn local_bounds(zone: &str, month: Month) -> ApiResult<(NaiveDate, i64, i64)> {
    let tz: Tz = zone.parse().map_err(|_| {
        ApiError::invalid(
            "parent",
            "the organization's time zone is unknown: months are counted in it",
        )
        .because("ZONE_UNKNOWN")
    })?;
    let start = |day: NaiveDate| {
        tz.from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
            .earliest()
            .map(|t| t.with_timezone(&Utc).timestamp_micros())
            .unwrap_or(i64::MAX)
    };
    let today = Utc::now().with_timezone(&tz).date_naive();
    Ok((
        today,
        start(month.first_day()),
        start(month.next_first_day()),
    ))
}

impl Invoicing {
    /// Invoices over `db`, asking Org through `org`.
    pub fn new(db: Db, org: Arc<OrgView>) -> Self {
        Self { db, org }
    }

    /// The organization's live contracts (all of them, or the one named), by name.
    pub async fn contracts(&self, organization: &str) -> ApiResult<Vec<Contract>> {
        let mut conn = self.db.read().await?;
        Ok(
            docstore::all_live::<Contract>(&mut conn, &format!("{organization}/contracts"))
                .await?
                .into_iter()
                .map(|s| s.resource)
                .collect(),
        )
    }

    /// What each contract's invoice for `month` needs from Org. A contract not in force in the
    /// month is left out; for a per-visit contract the month must have ended, for a
    /// per-member-per-month one it must have begun (FAILED_PRECONDITION naming `month` when the
    /// only contract asked for is refused so; others are left out).
    pub async fn prepare(
        &self,
        organization: &str,
        month: Month,
        contracts: &[Contract],
        named: bool,
    ) -> ApiResult<Vec<Prepared>> {
        let zone = self.org.organization_zone(organization).await?;
        let (today, from_us, until_us) = local_bounds(&zone, month)?;
        let tree = self.org.unit_tree(organization).await?;
        let in_subtree = subtree(&tree);
        let mut prepared = Vec::new();
        let mut eligibilities = None;
        for contract in contracts {
            let Some((terms, billing_entity)) = terms(contract) else {
                continue;
            };
            if !terms.in_force_during(month) {
                continue;
            }
            if let Err(refused) = invoice::check_invoiceable(month, terms.basis, today) {
                if named {
                    return Err(ApiError::precondition(refused.reason, refused.message)
                        .with_meta("field", refused.field));
                }
                continue;
            }
            let mut members = Vec::new();
            if let Basis::PerMemberPerMonth(_) = terms.basis {
                if eligibilities.is_none() {
                    let patients = self.org.patient_names(organization).await?;
                    eligibilities = Some(self.org.eligibilities(organization, &patients).await?);
                }
                let until_us = until_us.min(now_micros().saturating_add(1));
                let mut invoiced_unit: HashMap<String, bool> = HashMap::new();
                for eligibility in eligibilities.iter().flatten() {
                    for enrollment in &eligibility.enrollments {
                        let history: Vec<(i64, Event)> = enrollment
                            .history
                            .iter()
                            .map(|e| {
                                let at = e.time.as_ref().map(micros).unwrap_or(0);
                                match EnrollmentEventKind::try_from(e.kind) {
                                    Ok(EnrollmentEventKind::Discharged) => (at, Event::Out),
                                    _ => (at, Event::In(e.unit.clone())),
                                }
                            })
                            .collect();
                        let spans = invoice::spans(&history);
                        let covered = |unit: &str| terms.units.iter().any(|c| in_subtree(unit, c));
                        for unit in invoice::units_during(&spans, from_us, until_us, &covered) {
                            let invoiced = match invoiced_unit.get(&unit) {
                                Some(known) => *known,
                                None => {
                                    let known = match self.org.unit(&unit).await {
                                        Ok(info) => info.profile.claim_form == "NONE",
                                        Err(e) if e.code == tonic::Code::Unavailable => {
                                            return Err(e);
                                        }
                                        Err(_) => false,
                                    };
                                    invoiced_unit.insert(unit.clone(), known);
                                    known
                                }
                            };
                            if invoiced {
                                members.push(Member {
                                    patient: eligibility.patient.clone(),
                                    unit,
                                });
                            }
                        }
                    }
                }
            }
            prepared.push(Prepared {
                contract: terms,
                billing_entity,
                members,
            });
        }
        Ok(prepared)
    }

    /// Writes the invoices of `prepared` for `month` (in the caller's transaction): a contract
    /// invoiced for the month already, or with nothing to bill, makes none. Returns those made.
    pub async fn write(
        &self,
        conn: &mut AnyConnection,
        organization: &str,
        month: Month,
        prepared: &[Prepared],
    ) -> ApiResult<Vec<StoredInvoice>> {
        let tree = self.org.unit_tree(organization).await?;
        let in_subtree = subtree(&tree);
        let month_text = month.to_string();
        let mut taken: HashSet<String> = HashSet::new();
        let mut made = Vec::new();
        for p in prepared {
            let contract = &p.contract;
            if invoice_store::exists_for(conn, &contract.name, &month_text).await? {
                continue;
            }
            let name = invoice_store::invoice_name(&contract.name, &month_text);
            let now = now_micros();
            let (composed, member_charges) = match contract.basis {
                Basis::PerVisit => {
                    let rows =
                        invoice_store::candidates(conn, &contract.name, &contract.payer, month)
                            .await?;
                    let visits: Vec<VisitCharge> = rows
                        .iter()
                        .filter(|r| !taken.contains(&r.name))
                        .map(|r| VisitCharge {
                            charge: r.name.clone(),
                            patient: r.patient.clone(),
                            unit: r.unit.clone(),
                            payer: r.payer.clone(),
                            contract: r.contract.clone(),
                            claim_form: r.profile.claim_form.clone(),
                            service_date: r.service_date,
                            code: r.code.clone(),
                            amount: r.amount,
                        })
                        .filter(|v| invoice::takes(contract, month, v, &in_subtree))
                        .collect();
                    (invoice::compose_visits(&visits), Vec::new())
                }
                Basis::PerMemberPerMonth(fee) => {
                    let charge_name = |patient: &str| member_month_charge(&name, patient);
                    let composed = invoice::compose_members(&p.members, month, fee, &charge_name);
                    let rows: Vec<ChargeRow> = composed
                        .iter()
                        .flat_map(|c| c.lines.iter())
                        .map(|l| ChargeRow {
                            name: l.charge.clone(),
                            source: ChargeSource::MemberMonth,
                            encounter: None,
                            patient: l.patient.clone(),
                            unit: l.unit.clone(),
                            provider: String::new(),
                            payer: contract.payer.clone(),
                            billing_entity: p.billing_entity.clone(),
                            contract: contract.name.clone(),
                            code: l.code.clone(),
                            modifiers: Vec::new(),
                            units: 1,
                            diagnoses: Vec::new(),
                            service_date: l.service_date,
                            place_of_service: String::new(),
                            unit_price: l.amount,
                            amount: l.amount,
                            fee_schedule_version: String::new(),
                            state: ChargeState::Open,
                            hold_reason: String::new(),
                            related_charge: String::new(),
                            profile: Profile {
                                billing_entity: p.billing_entity.clone(),
                                claim_form: "NONE".into(),
                                ..Profile::default()
                            },
                            create_us: now,
                            update_us: now,
                        })
                        .collect();
                    (composed, rows)
                }
            };
            let Some(composed) = composed else {
                continue;
            };
            for row in &member_charges {
                charges::insert(conn, row).await?;
            }
            let stored = StoredInvoice {
                name: name.clone(),
                contract: contract.name.clone(),
                payer: contract.payer.clone(),
                billing_entity: p.billing_entity.clone(),
                month: month_text.clone(),
                basis: contract.basis.as_str().to_string(),
                units: contract.units.clone(),
                state: State::Open,
                total: composed.total,
                issue_us: now,
                update_us: now,
                lines: composed
                    .lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| StoredLine {
                        line_number: i32::try_from(i + 1).unwrap_or(i32::MAX),
                        charge: l.charge.clone(),
                        patient: l.patient.clone(),
                        unit: l.unit.clone(),
                        service_date: l.service_date,
                        code: l.code.clone(),
                        month: l.month.map(|m| m.to_string()).unwrap_or_default(),
                        amount: l.amount,
                        balance: l.amount,
                        paid: Cents::ZERO,
                    })
                    .collect(),
            };
            invoice_store::insert(conn, &stored).await?;
            taken.extend(stored.lines.iter().map(|l| l.charge.clone()));
            if let Some(read) = invoice_store::get(conn, &name).await? {
                made.push(read);
            }
        }
        Ok(made)
    }

    /// A stored invoice, or NOT_FOUND.
    pub async fn get(&self, name: &str) -> ApiResult<StoredInvoice> {
        let mut conn = self.db.read().await?;
        invoice_store::get(&mut conn, name)
            .await?
            .ok_or_else(|| ApiError::not_found(name))
    }
}

/// The name of a member-month's charge: derived from its invoice and patient, so that it is the
/// same on a retry and a client can find it.
pub fn member_month_charge(invoice: &str, patient: &str) -> String {
    let organization = pm_runtime::names::organization_of(invoice);
    let id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("pm:member-month:{invoice}:{patient}").as_bytes(),
    );
    format!("{organization}/charges/{id}")
}

/// Posts a payment of `amount` on `invoice` (in the caller's transaction): allocated across its
/// lines oldest first as `payment` entries; the invoice's state follows its ledger. Refused whole
/// (nothing written) when it is more than the balance.
pub async fn pay(
    conn: &mut AnyConnection,
    invoice: &str,
    amount: Cents,
    reference: &str,
) -> ApiResult<(StoredInvoice, Vec<LedgerEntry>)> {
    let stored = invoice_store::get(conn, invoice)
        .await?
        .ok_or_else(|| ApiError::not_found(invoice))?;
    let owed: Vec<Owed> = stored
        .lines
        .iter()
        .map(|l| Owed {
            charge: l.charge.clone(),
            service_date: l.service_date,
            line_number: l.line_number,
            balance: l.balance,
        })
        .collect();
    let parts = match invoice::allocate(&owed, amount) {
        Ok(parts) => parts,
        Err(Unallocated::NotPositive) => {
            return Err(ApiError::invalid("amount_cents", "a payment is above zero")
                .because("PAYMENT_NOT_POSITIVE"));
        }
        Err(Unallocated::ExceedsBalance(balance)) => {
            return Err(ApiError::precondition(
                "PAYMENT_EXCEEDS_BALANCE",
                format!(
                    "amount_cents: the payment ({amount}) exceeds the invoice's balance ({balance}); nothing was posted"
                ),
            )
            .with_meta("field", "amount_cents")
            .with_meta("balanceCents", balance.cents().to_string()));
        }
    };
    let memo = format!("invoice payment {reference}");
    let mut posted = Vec::with_capacity(parts.len());
    for (charge, part) in &parts {
        charges::post(conn, charge, LedgerEntryKind::Payment, -*part, &memo).await?;
        if let Some(entry) = charges::ledger(conn, charge).await?.pop() {
            posted.push(entry);
        }
    }
    let after = invoice_store::get(conn, invoice)
        .await?
        .ok_or_else(|| ApiError::not_found(invoice))?;
    let state = invoice::state(after.balance(), after.paid());
    invoice_store::set_state(conn, invoice, state).await?;
    let after = invoice_store::get(conn, invoice)
        .await?
        .ok_or_else(|| ApiError::not_found(invoice))?;
    Ok((after, posted))
}

fn date(day: NaiveDate) -> pm_api::types::Date {
    use chrono::Datelike;
    pm_api::types::Date {
        year: day.year(),
        month: i32::try_from(day.month()).unwrap_or(0),
        day: i32::try_from(day.day()).unwrap_or(0),
    }
}

/// An invoice on the wire.
pub fn wire(stored: &StoredInvoice) -> Invoice {
    let state = match stored.state {
        State::Open => InvoiceState::Open,
        State::PartiallyPaid => InvoiceState::PartiallyPaid,
        State::Paid => InvoiceState::Paid,
    };
    let basis = if stored.basis == Basis::PerVisit.as_str() {
        InvoiceBasis::PerVisit
    } else {
        InvoiceBasis::PerMemberPerMonth
    };
    Invoice {
        name: stored.name.clone(),
        contract: stored.contract.clone(),
        payer: stored.payer.clone(),
        billing_entity: stored.billing_entity.clone(),
        month: stored.month.clone(),
        basis: basis.into(),
        state: state.into(),
        total_cents: stored.total.cents(),
        paid_cents: stored.paid().cents(),
        balance_cents: stored.balance().cents(),
        lines: stored
            .lines
            .iter()
            .map(|l| InvoiceLine {
                line_number: l.line_number,
                charge: l.charge.clone(),
                patient: l.patient.clone(),
                unit: l.unit.clone(),
                service_date: Some(date(l.service_date)),
                code: l.code.clone(),
                month: l.month.clone(),
                amount_cents: l.amount.cents(),
                balance_cents: l.balance.cents(),
            })
            .collect(),
        issue_time: Some(pm_runtime::time::to_timestamp(stored.issue_us)),
        units: stored.units.clone(),
        create_time: Some(pm_runtime::time::to_timestamp(stored.issue_us)),
        update_time: Some(pm_runtime::time::to_timestamp(stored.update_us)),
        delete_time: None,
        etag: format!("\"{}\"", stored.update_us),
    }
}

/// The patients of an invoice, for the audit record.
pub fn patients_of(invoice: &Invoice) -> Vec<String> {
    let mut patients: Vec<String> = invoice.lines.iter().map(|l| l.patient.clone()).collect();
    patients.sort();
    patients.dedup();
    patients
}

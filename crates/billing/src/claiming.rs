//! From charges to claims and back: assembly and scrubbing (with what Org knows of the subscriber
//! and the provider), export as 837P batches, and 835 remittances posted to the ledger. The rules
//! are pure ([`crate::domain::claims`], [`crate::domain::x12`], [`crate::domain::x12in`]); this
//! module gathers their inputs, calls them and stores what they decide, each write in one
//! transaction.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use pm_api::billing::{
    BillingEntity, ChargeState, ClaimBatch, ImportRemittanceResponse, LedgerEntryKind, Payer,
    PostedClaim, SetAsideLine, UnmatchedPayment, UsageIndicator,
};
use pm_api::org::{AdministrativeGender, Coverage, Patient};
use pm_runtime::docstore;
use pm_runtime::time::now_micros;
use pm_runtime::{ApiError, ApiResult, Db, names};
use sqlx::AnyConnection;

use crate::charges::{self, ChargeRow};
use crate::claim_store::{
    self, Adjudication, ChargeLink, Problem, StoredAdjustment, StoredClaim, StoredLine,
};
use crate::domain::charge::qualified;
use crate::domain::claims::{
    self, Amendment, ChargeLine, ClaimAction, ClaimKey, ClaimState, ContractTerms, DraftClaim,
    DraftLine, EntityDetails, PayerDetails, PriorAdjustment, PriorLine, PriorPayer,
    RenderingDetails, RoutedBy, Routing, ScrubContext, SubscriberDetails,
};
use crate::domain::invalid::Invalid;
use crate::domain::money::Cents;
use crate::domain::x12::{self, Address, Envelope, Frequency, Receiver, Sex, Submitter, Usage};
use crate::domain::x12in;
use crate::org::OrgView;

/// Charges read per AssembleClaims call at most.
pub const ASSEMBLY_BATCH: usize = 2_000;

/// Claims one export writes at most.
pub const EXPORT_BATCH: usize = 5_000;

/// What assembly made.
pub struct Assembled {
    /// The claims, stored.
    pub claims: Vec<StoredClaim>,
    /// Lines set aside, with the reason.
    pub set_aside: Vec<SetAsideLine>,
    /// More unclaimed charges wait.
    pub more: bool,
}

/// Claims over Billing's slice, asking Org for the subscriber and the provider.
pub struct Claims {
    db: Db,
    org: Arc<OrgView>,
}

fn address_of(address: Option<&pm_api::types::PostalAddress>) -> Option<Address> {
    let address = address?;
    let mut lines = address.address_lines.iter();
    Some(Address {
        line1: lines.next()?.clone(),
        line2: lines.next().cloned(),
        city: address.locality.clone(),
        state: address.administrative_area.clone(),
        zip: address.postal_code.clone(),
    })
}

/// A provider's first and last name from its display name: honorifics (`Dr.`) and anything after a
/// comma (credentials, `MD`) dropped, the last word the last name. Org keeps one display name.
pub fn person_name(display: &str) -> (String, String) {
    let main = display.split(',').next().unwrap_or_default();
    let words: Vec<&str> = main
        .split_whitespace()
        .filter(|w| {
            !matches!(
                w.to_ascii_lowercase().as_str(),
                "dr." | "dr" | "prof." | "mx."
            )
        })
        .collect();
    match words.split_last() {
        Some((last, first)) => (first.join(" "), (*last).to_string()),
        None => (String::new(), String::new()),
    }
}

/// Whether a coverage is in force on `date`.
pub fn coverage_in_force(coverage: &Coverage, date: NaiveDate) -> bool {
    let instant = |t: Option<&prost_types::Timestamp>| {
        t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
            .map(|t| t.date_naive())
    };
    let period = coverage.effective_period.as_ref();
    let start = instant(period.and_then(|p| p.start_time.as_ref()));
    let end = instant(period.and_then(|p| p.end_time.as_ref()));
    start.is_some_and(|s| s <= date) && end.is_none_or(|e| date < e)
}

/// How a line was routed, as stored: `profile`, `contract {name}`, `rule: {reason}`.
fn routed_by_text(routing: &Routing) -> String {
    match &routing.because {
        RoutedBy::Profile => "profile".into(),
        RoutedBy::Contract(name) => format!("contract {name}"),
        RoutedBy::Rule(reason) => format!("rule: {reason}"),
    }
}

fn routed_by_of(entity: &str, text: &str) -> Routing {
    let because = if let Some(name) = text.strip_prefix("contract ") {
        RoutedBy::Contract(name.to_string())
    } else if let Some(reason) = text.strip_prefix("rule: ") {
        RoutedBy::Rule(reason.to_string())
    } else {
        RoutedBy::Profile
    };
    Routing {
        entity: entity.to_string(),
        because,
    }
}

fn charge_line(row: &ChargeRow) -> ChargeLine {
    ChargeLine {
        charge: row.name.clone(),
        patient: row.patient.clone(),
        unit: row.unit.clone(),
        provider: row.provider.clone(),
        payer: row.payer.clone(),
        billing_entity: row.billing_entity.clone(),
        contract: row.contract.clone(),
        claim_form: row.profile.claim_form.clone(),
        code: row.code.clone(),
        modifiers: row.modifiers.clone(),
        units: row.units,
        diagnoses: row.diagnoses.clone(),
        service_date: row.service_date,
        place_of_service: row.place_of_service.clone(),
        amount: row.amount,
    }
}

/// A stored claim as the pure rules read it again (to scrub or export it).
fn draft_of(claim: &StoredClaim, rows: &HashMap<String, ChargeRow>) -> DraftClaim {
    let lines: Vec<DraftLine> = claim
        .lines
        .iter()
        .filter_map(|line| {
            Some(DraftLine {
                line: charge_line(rows.get(&line.charge)?),
                routing: routed_by_of(&claim.billing_entity, &line.routed_by),
                diagnosis_pointers: line.diagnosis_pointers.clone(),
            })
        })
        .collect();
    DraftClaim {
        key: ClaimKey {
            billing_entity: claim.billing_entity.clone(),
            payer: claim.payer.clone(),
            patient: claim.patient.clone(),
            service_date: claim.service_date,
        },
        provider: claim.provider.clone(),
        place_of_service: claim.place_of_service.clone(),
        part: 0,
        diagnoses: claim.diagnoses.clone(),
        total: lines.iter().map(|l| l.line.amount).sum(),
        lines,
        frequency: frequency_of(claim),
        split_from: Vec::new(),
    }
}

/// CLM05-3 of a stored claim: a correction (7) or void (8) carries, as its payer claim number, the
/// number of the claim it amends (REF*F8).
fn frequency_of(claim: &StoredClaim) -> Frequency {
    let payer_claim_number = claim.payer_claim_number.clone();
    match claim.frequency_code {
        7 => Frequency::Corrected { payer_claim_number },
        8 => Frequency::Void { payer_claim_number },
        _ => Frequency::Original,
    }
}

/// The name of the claim an amendment makes: the same for a retry of the same call.
fn amended_name(original: &str, amendment: Amendment, request_id: &str) -> String {
    let kind = match amendment {
        Amendment::Correct => "correct",
        Amendment::Void => "void",
    };
    let id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("pm:claim-{kind}:{original}:{request_id}").as_bytes(),
    );
    format!("{}/claims/{id}", names::organization_of(original))
}

/// The name of the secondary claim of a primary one (at most one per primary).
pub fn secondary_name(primary: &str) -> String {
    let id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("pm:claim-secondary:{primary}").as_bytes(),
    );
    format!("{}/claims/{id}", names::organization_of(primary))
}

/// The coverage a claim's balance goes to next: among the patient's coverages in force on the
/// date of service, the one billed (the lowest priority with the claim's payer), then the first by
/// priority after it with another payer that `known` accepts. `None` when the billed coverage is
/// not found or none follows.
pub fn next_coverage<'a>(
    coverages: &'a [Coverage],
    organization: &str,
    billed_payer: &str,
    date: NaiveDate,
    known: impl Fn(&str) -> bool,
) -> Option<&'a Coverage> {
    let in_force: Vec<&Coverage> = coverages
        .iter()
        .filter(|c| coverage_in_force(c, date))
        .collect();
    let billed = in_force
        .iter()
        .filter(|c| qualified(organization, &c.payer) == billed_payer)
        .map(|c| c.priority)
        .min()?;
    let mut after: Vec<&Coverage> = in_force
        .into_iter()
        .filter(|c| c.priority > billed && qualified(organization, &c.payer) != billed_payer)
        .collect();
    after.sort_by_key(|c| c.priority);
    after
        .into_iter()
        .find(|c| known(&qualified(organization, &c.payer)))
}

/// A stored claim's lines and diagnoses rebuilt from charges (the claim's diagnoses in order of
/// first appearance, each line pointing at its own).
fn lines_of(rows: &[(ChargeRow, String)]) -> (Vec<StoredLine>, Vec<String>) {
    let mut diagnoses: Vec<String> = Vec::new();
    let mut lines = Vec::with_capacity(rows.len());
    for (i, (row, routed_by)) in rows.iter().enumerate() {
        let mut pointers = Vec::new();
        for diagnosis in &row.diagnoses {
            let at = match diagnoses.iter().position(|d| d == diagnosis) {
                Some(at) => at,
                None => {
                    diagnoses.push(diagnosis.clone());
                    diagnoses.len() - 1
                }
            };
            if let Ok(pointer) = u8::try_from(at + 1)
                && !pointers.contains(&pointer)
            {
                pointers.push(pointer);
            }
        }
        lines.push(StoredLine {
            line_number: i32::try_from(i + 1).unwrap_or(i32::MAX),
            charge: row.name.clone(),
            code: row.code.clone(),
            modifiers: row.modifiers.clone(),
            units: row.units,
            amount: row.amount,
            diagnosis_pointers: pointers,
            routed_by: routed_by.clone(),
        });
    }
    (lines, diagnoses)
}

/// A claim's name, from the charges it bills (a charge is claimed once, so the name is unique and
/// the same whichever replica assembles it): `organizations/{o}/claims/{uuid}`. The id, 36
/// characters, is the claim number sent as CLM01 (at most 38).
pub fn claim_name(organization: &str, charges: &[String]) -> String {
    let id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("pm:claim:{}", charges.join(",")).as_bytes(),
    );
    format!("{organization}/claims/{id}")
}

/// The id part of a claim's name: the claim number sent as CLM01.
pub fn claim_number(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or_default()
}

impl Claims {
    /// Claims over `db`, asking Org through `org`.
    pub fn new(db: Db, org: Arc<OrgView>) -> Self {
        Self { db, org }
    }

    /// What the scrubber and the writer need besides the claim: the entity and payer from
    /// Billing's configuration, the subscriber (the patient and its coverage with the payer at
    /// the date of service) and the rendering provider from Org. A part that cannot be found is
    /// left out: the scrubber reports it.
    async fn context(
        &self,
        key: &ClaimKey,
        provider: &str,
        people: &mut People,
    ) -> ApiResult<ScrubContext> {
        let (entity, payer) = {
            let mut conn = self.db.read().await?;
            let entity = docstore::get_live::<BillingEntity>(&mut conn, &key.billing_entity)
                .await?
                .map(|s| s.resource);
            let payer = docstore::get_live::<Payer>(&mut conn, &key.payer)
                .await?
                .map(|s| s.resource);
            (entity, payer)
        };
        let billing_entity = entity.map(|e| EntityDetails {
            name: e.legal_name.clone(),
            npi: e.npi.clone(),
            ein: e.tax_id.clone(),
            taxonomy: e.taxonomy.clone(),
            address: address_of(e.billing_address.as_ref()).unwrap_or(Address {
                line1: String::new(),
                line2: None,
                city: String::new(),
                state: String::new(),
                zip: String::new(),
            }),
            pay_to: address_of(e.pay_to_address.as_ref()),
        });
        let payer = payer.as_ref().map(payer_details);
        let subscriber = self.subscriber(key, people).await?;
        let rendering_provider = match self.org.provider(provider).await {
            Ok(p) => {
                let (first_name, last_name) = person_name(&p.display_name);
                Some(RenderingDetails {
                    npi: p.npi,
                    first_name,
                    last_name,
                })
            }
            Err(e) if e.code == tonic::Code::Unavailable => return Err(e),
            Err(_) => None,
        };
        Ok(ScrubContext {
            billing_entity,
            payer,
            subscriber,
            rendering_provider,
        })
    }

    /// The patient and its coverages, asked of Org once per call however many claims it has.
    async fn person<'a>(
        &self,
        patient: &str,
        people: &'a mut People,
    ) -> ApiResult<&'a Option<(Patient, Vec<Coverage>)>> {
        if !people.contains_key(patient) {
            let found = match self.org.patient(patient).await {
                Ok(p) => Some((p, self.org.coverages(patient).await?)),
                Err(e) if e.code == tonic::Code::Unavailable => return Err(e),
                Err(_) => None,
            };
            people.insert(patient.to_string(), found);
        }
        Ok(people.get(patient).unwrap_or(&None))
    }

    async fn subscriber(
        &self,
        key: &ClaimKey,
        people: &mut People,
    ) -> ApiResult<Option<SubscriberDetails>> {
        let organization = names::organization_of(&key.patient);
        let Some((patient, coverages)) = self.person(&key.patient, people).await? else {
            return Ok(None);
        };
        let Some(coverage) = coverages
            .iter()
            .filter(|c| qualified(organization, &c.payer) == key.payer)
            .filter(|c| coverage_in_force(c, key.service_date))
            .min_by_key(|c| c.priority)
        else {
            return Ok(None);
        };
        let sex = match AdministrativeGender::try_from(patient.gender) {
            Ok(AdministrativeGender::Female) => Sex::Female,
            Ok(AdministrativeGender::Male) => Sex::Male,
            _ => Sex::Unknown,
        };
        Ok(Some(SubscriberDetails {
            member_id: coverage.member_id.clone(),
            first_name: patient.given_name.clone(),
            last_name: patient.family_name.clone(),
            birth_date: patient.birth_date.as_ref().and_then(|d| {
                NaiveDate::from_ymd_opt(
                    d.year,
                    u32::try_from(d.month).ok()?,
                    u32::try_from(d.day).ok()?,
                )
            }),
            sex,
            address: address_of(patient.address.as_ref()),
            group_number: None,
        }))
    }

    /// The organization's contracts, as routing reads them.
    async fn contracts(&self, organization: &str) -> ApiResult<Vec<ContractTerms>> {
        let mut conn = self.db.read().await?;
        let stored = docstore::all_live::<pm_api::billing::Contract>(
            &mut conn,
            &format!("{organization}/contracts"),
        )
        .await?;
        Ok(stored
            .into_iter()
            .filter_map(|s| {
                let c = s.resource;
                let (from, until) = crate::domain::validate::period(
                    "",
                    c.effective_from.as_ref(),
                    c.effective_until.as_ref(),
                )
                .ok()?;
                Some(ContractTerms {
                    name: c.name,
                    payer: c.payer,
                    billing_entity: c.billing_entity,
                    units: c.units,
                    from,
                    until,
                })
            })
            .collect())
    }

    /// The organization's routing rules, as assembly reads them.
    async fn routing_rules(&self, organization: &str) -> ApiResult<Vec<claims::RoutingRule>> {
        let mut conn = self.db.read().await?;
        let stored = docstore::all_live::<pm_api::billing::RoutingRule>(
            &mut conn,
            &format!("{organization}/routingRules"),
        )
        .await?;
        let set = |v: String| Some(v).filter(|v| !v.is_empty());
        Ok(stored
            .into_iter()
            .map(|s| {
                let r = s.resource;
                claims::RoutingRule {
                    code: set(r.code),
                    unit: set(r.unit),
                    payer: set(r.payer),
                    billing_entity: r.billing_entity,
                    reason: r.reason,
                }
            })
            .collect())
    }

    /// Assembles claims from the organization's unclaimed open charges, scrubs each, and stores
    /// them (READY or DRAFT) with the charges marked claimed, in one transaction.
    pub async fn assemble(&self, organization: &str) -> ApiResult<Assembled> {
        let rows = {
            let mut conn = self.db.read().await?;
            charges::unclaimed(&mut conn, organization, false, "", ASSEMBLY_BATCH + 1).await?
        };
        let more = rows.len() > ASSEMBLY_BATCH;
        let rows: Vec<ChargeRow> = rows.into_iter().take(ASSEMBLY_BATCH).collect();
        let lines: Vec<ChargeLine> = rows.iter().map(charge_line).collect();
        let contracts = self.contracts(organization).await?;
        let tree = self.org.unit_tree(organization).await?;
        let parents: HashMap<&str, &str> =
            tree.iter().map(|(u, p)| (u.as_str(), p.as_str())).collect();
        let in_subtree = |unit: &str, ancestor: &str| {
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
        };
        let rules = self.routing_rules(organization).await?;
        let assembly = claims::assemble(&lines, &contracts, &rules, &in_subtree);
        let today = Utc::now().date_naive();
        let now = now_micros();
        // Names first, so that split claims can name their siblings.
        let named: Vec<(String, &DraftClaim)> = assembly
            .claims
            .iter()
            .map(|c| {
                let charges: Vec<String> = c.lines.iter().map(|l| l.line.charge.clone()).collect();
                (claim_name(organization, &charges), c)
            })
            .collect();
        let mut stored = Vec::with_capacity(named.len());
        let mut people = People::new();
        for (name, draft) in &named {
            let context = self
                .context(&draft.key, &draft.provider, &mut people)
                .await?;
            let problems: Vec<Problem> = claims::scrub(draft, &context, today)
                .iter()
                .map(Problem::from)
                .collect();
            let split_with = named
                .iter()
                .filter(|(other, c)| other != name && draft.split_from.contains(&c.key))
                .map(|(other, _)| other.clone())
                .collect();
            stored.push(StoredClaim {
                name: name.clone(),
                billing_entity: draft.key.billing_entity.clone(),
                payer: draft.key.payer.clone(),
                patient: draft.key.patient.clone(),
                service_date: draft.key.service_date,
                provider: draft.provider.clone(),
                place_of_service: draft.place_of_service.clone(),
                unit: draft
                    .lines
                    .first()
                    .map(|l| l.line.unit.clone())
                    .unwrap_or_default(),
                state: if problems.is_empty() {
                    ClaimState::Ready
                } else {
                    ClaimState::Draft
                },
                frequency_code: 1,
                original_claim: String::new(),
                payer_claim_number: String::new(),
                total: draft.total,
                diagnoses: draft.diagnoses.clone(),
                problems,
                split_with,
                batch: String::new(),
                lines: draft
                    .lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| StoredLine {
                        line_number: i32::try_from(i + 1).unwrap_or(i32::MAX),
                        charge: l.line.charge.clone(),
                        code: l.line.code.clone(),
                        modifiers: l.line.modifiers.clone(),
                        units: l.line.units,
                        amount: l.line.amount,
                        diagnosis_pointers: l.diagnosis_pointers.clone(),
                        routed_by: routed_by_text(&l.routing),
                    })
                    .collect(),
                history: Vec::new(),
                create_us: now,
                update_us: now,
                payer_sequence: "P".into(),
                prior_claim: String::new(),
            });
        }
        let set_aside: Vec<SetAsideLine> = assembly
            .not_claimed
            .iter()
            .chain(assembly.held.iter())
            .map(|s| SetAsideLine {
                charge: s.line.charge.clone(),
                reason: s.reason.to_string(),
            })
            .collect();
        let mut tx = self.db.write(organization).await?;
        for claim in &stored {
            claim_store::insert(tx.conn(), claim).await?;
        }
        for line in &set_aside {
            claim_store::set_aside(tx.conn(), &line.charge, &line.reason).await?;
        }
        tx.commit().await?;
        let mut conn = self.db.read().await?;
        let mut claims = Vec::with_capacity(stored.len());
        for claim in &stored {
            if let Some(read) = claim_store::get(&mut conn, &claim.name).await? {
                claims.push(read);
            }
        }
        Ok(Assembled {
            claims,
            set_aside,
            more,
        })
    }

    /// A stored claim's charges, by name.
    async fn charges_of(&self, claim: &StoredClaim) -> ApiResult<HashMap<String, ChargeRow>> {
        let mut conn = self.db.read().await?;
        let mut rows = HashMap::new();
        for line in &claim.lines {
            if let Some(row) = charges::get(&mut conn, &line.charge).await? {
                rows.insert(row.name.clone(), row);
            }
        }
        Ok(rows)
    }

    /// A claim as stored.
    pub async fn get(&self, name: &str) -> ApiResult<StoredClaim> {
        let mut conn = self.db.read().await?;
        claim_store::get(&mut conn, name)
            .await?
            .ok_or_else(|| ApiError::not_found(name))
    }

    /// Scrubs a DRAFT, REJECTED or READY claim again: READY when clean, DRAFT with its problems.
    pub async fn scrub(&self, name: &str) -> ApiResult<StoredClaim> {
        let claim = self.get(name).await?;
        let rows = self.charges_of(&claim).await?;
        let draft = draft_of(&claim, &rows);
        let mut people = People::new();
        let context = self
            .context(&draft.key, &draft.provider, &mut people)
            .await?;
        let problems = self.problems(&claim, &draft, &context, &mut people).await?;
        let action = ClaimAction::Scrubbed {
            ok: problems.is_empty(),
        };
        let to = claims::apply(claim.state, action).map_err(refused)?;
        let reason = if problems.is_empty() {
            "scrubbed clean"
        } else {
            "scrub found problems"
        };
        let mut tx = self.db.write(names::organization_of(name)).await?;
        claim_store::transition(tx.conn(), name, claim.state, to, reason, Some(&problems)).await?;
        tx.commit().await?;
        self.get(name).await
    }

    /// Exports READY claims as one 837P file per billing entity, marking them SUBMITTED, in one
    /// transaction (`write`, to run inside the caller's idempotent transaction).
    pub async fn prepare_export(
        &self,
        organization: &str,
        billing_entity: &str,
        named: &[String],
    ) -> ApiResult<Vec<ExportGroup>> {
        let mut conn = self.db.read().await?;
        let chosen: Vec<String> = if named.is_empty() {
            claim_store::in_state(
                &mut conn,
                organization,
                ClaimState::Ready,
                billing_entity,
                EXPORT_BATCH,
            )
            .await?
        } else {
            named.to_vec()
        };
        let mut claims = Vec::with_capacity(chosen.len());
        let mut not_ready = Vec::new();
        for name in &chosen {
            match claim_store::get(&mut conn, name).await? {
                Some(c) if c.state == ClaimState::Ready => claims.push(c),
                Some(_) | None => not_ready.push(name.clone()),
            }
        }
        drop(conn);
        if !not_ready.is_empty() {
            return Err(ApiError::precondition(
                "CLAIM_NOT_READY",
                format!(
                    "only READY claims are exported; not ready: {}",
                    not_ready.join(", ")
                ),
            )
            .with_meta("claims", not_ready.join(",")));
        }
        let mut groups: Vec<ExportGroup> = Vec::new();
        let mut people = People::new();
        for claim in claims {
            let rows = self.charges_of(&claim).await?;
            let draft = draft_of(&claim, &rows);
            let context = self
                .context(&draft.key, &draft.provider, &mut people)
                .await?;
            let mut x12_claim = claims::to_x12_claim(&draft, &context, claim_number(&claim.name))
                .map_err(refused)?;
            if claim.payer_sequence == "S" {
                let prior = self
                    .prior_payer(&claim, &mut people)
                    .await?
                    .map_err(refused)?;
                x12_claim = claims::with_prior_payer(x12_claim, &prior).map_err(refused)?;
            }
            match groups
                .iter_mut()
                .find(|g| g.billing_entity == claim.billing_entity)
            {
                Some(group) => {
                    group.claims.push((claim.name.clone(), x12_claim));
                }
                None => {
                    let provider = claims::to_x12_billing_provider(&context).map_err(refused)?;
                    groups.push(ExportGroup {
                        billing_entity: claim.billing_entity.clone(),
                        provider,
                        claims: vec![(claim.name.clone(), x12_claim)],
                    });
                }
            }
        }
        Ok(groups)
    }

    /// Writes the prepared groups as 837P files in the caller's transaction: a control number per
    /// file from the database, the file stored, each claim SUBMITTED.
    pub async fn write_export(
        &self,
        conn: &mut AnyConnection,
        organization: &str,
        groups: &[ExportGroup],
    ) -> ApiResult<Vec<ClaimBatch>> {
        let mut batches = Vec::new();
        for group in groups {
            let entity = docstore::get_live::<BillingEntity>(conn, &group.billing_entity)
                .await?
                .map(|s| s.resource)
                .ok_or_else(|| ApiError::not_found(&group.billing_entity))?;
            let settings = entity.clearinghouse.clone().unwrap_or_default();
            for (field, value) in [
                ("isa_sender_id", &settings.isa_sender_id),
                ("isa_receiver_id", &settings.isa_receiver_id),
                ("contact_name", &settings.contact_name),
                ("contact_phone", &settings.contact_phone),
            ] {
                if value.is_empty() {
                    return Err(ApiError::precondition(
                        "CLEARINGHOUSE_INCOMPLETE",
                        format!(
                            "billing entity {} lacks clearinghouse.{field}: set it before exporting",
                            group.billing_entity
                        ),
                    )
                    .with_meta("field", format!("billing_entity.clearinghouse.{field}")));
                }
            }
            let number = claim_store::new_batch(
                conn,
                organization,
                &group.billing_entity,
                group.claims.len(),
            )
            .await?;
            let control = u32::try_from(number)
                .ok()
                .filter(|n| x12::control_number_ok(*n))
                .ok_or_else(|| {
                    ApiError::internal("an interchange control number", &"out of range")
                })?;
            let batch = x12::Batch {
                envelope: Envelope {
                    sender_id: settings.isa_sender_id.clone(),
                    receiver_id: settings.isa_receiver_id.clone(),
                    gs_sender: non_empty(&settings.gs_sender_code, &settings.isa_sender_id),
                    gs_receiver: non_empty(&settings.gs_receiver_code, &settings.isa_receiver_id),
                    usage: if settings.usage_indicator == UsageIndicator::Production as i32 {
                        Usage::Production
                    } else {
                        Usage::Test
                    },
                    interchange_control: control,
                    group_control: control,
                    created: Utc::now().naive_utc(),
                },
                submitter: Submitter {
                    name: entity.legal_name.clone(),
                    id: settings.isa_sender_id.clone(),
                    contact_name: settings.contact_name.clone(),
                    phone: settings.contact_phone.clone(),
                },
                receiver: Receiver {
                    name: non_empty(&settings.receiver_name, "CLEARINGHOUSE"),
                    id: settings.isa_receiver_id.clone(),
                },
                billing_provider: group.provider.clone(),
                claims: group.claims.iter().map(|(_, c)| c.clone()).collect(),
            };
            let content = x12::write_837p(&batch).map_err(|e| match e {
                x12::WriteError::Invalid(invalid) => refused(invalid),
            })?;
            let entity_id = group.billing_entity.rsplit('/').next().unwrap_or_default();
            let file_name = format!("837P-{entity_id}-{number:09}.x12");
            claim_store::fill_batch(conn, number, &file_name, &content).await?;
            let batch_name = format!("{organization}/claimBatches/{number}");
            for (claim, _) in &group.claims {
                let to = claims::apply(ClaimState::Ready, ClaimAction::Submit).map_err(refused)?;
                claim_store::transition(conn, claim, ClaimState::Ready, to, "exported", None)
                    .await?;
                claim_store::set_batch(conn, claim, &batch_name).await?;
            }
            batches.push(ClaimBatch {
                name: batch_name,
                billing_entity: group.billing_entity.clone(),
                interchange_control_number: number,
                file_name,
                content,
                claim_count: i32::try_from(group.claims.len()).unwrap_or(i32::MAX),
                create_time: Some(pm_runtime::time::to_timestamp(now_micros())),
            });
        }
        Ok(batches)
    }

    /// Posts an 835 in one transaction (see the RPC's contract). A primary claim adjudicated with
    /// a balance left goes on to the patient's next coverage as a secondary claim, made in the same
    /// transaction and scrubbed after it.
    pub async fn import_835(
        &self,
        organization: &str,
        content: &str,
    ) -> ApiResult<ImportRemittanceResponse> {
        let remittances = x12in::parse_835(content).map_err(refused)?;
        // The coverages of the patients of primary claims, asked of Org before the transaction.
        let mut people = People::new();
        {
            let mut patients = Vec::new();
            let mut conn = self.db.read().await?;
            for paid in remittances.iter().flat_map(|r| r.claims.iter()) {
                let name = format!(
                    "{organization}/claims/{}",
                    paid.claim_id.to_ascii_lowercase()
                );
                if let Some(claim) = claim_store::get(&mut conn, &name).await?
                    && claim.payer_sequence != "S"
                    && !patients.contains(&claim.patient)
                {
                    patients.push(claim.patient);
                }
            }
            drop(conn);
            // Org down must not stop a remittance from posting: those claims get no secondary,
            // and their history says why.
            for patient in &patients {
                if let Err(e) = self.person(patient, &mut people).await {
                    tracing::warn!(code = ?e.code, "coverages not read for a remittance's claim");
                }
            }
        }
        let mut tx = self.db.write(organization).await?;
        let mut answer = ImportRemittanceResponse::default();
        let mut imported_before = 0;
        let mut secondaries = Vec::new();
        for remittance in &remittances {
            answer.trace_number = remittance.trace.number.clone();
            answer.total_paid_cents += remittance.payment.total.cents();
            let payer_id = remittance
                .payer
                .id
                .clone()
                .unwrap_or_else(|| remittance.payer.name.clone());
            let Some(id) = claim_store::record_remittance(
                tx.conn(),
                organization,
                &payer_id,
                &remittance.trace.number,
                remittance.payment.total,
            )
            .await?
            else {
                imported_before += 1;
                continue;
            };
            let posting = Posting {
                organization,
                remittance: id,
                date: remittance.payment.date,
                people: &people,
            };
            for (i, paid) in remittance.claims.iter().enumerate() {
                if let Some(secondary) =
                    post_claim(tx.conn(), &posting, i, paid, &mut answer).await?
                {
                    secondaries.push(secondary);
                }
            }
        }
        answer.already_imported = !remittances.is_empty() && imported_before == remittances.len();
        tx.commit().await?;
        // DRAFT → scrub → READY. A scrub that cannot run now (Org unavailable) leaves the claim
        // DRAFT for ScrubClaim; the remittance is posted either way.
        for name in &secondaries {
            if let Err(e) = self.scrub(name).await {
                tracing::warn!(claim = %name, code = ?e.code, "a secondary claim was not scrubbed");
            }
        }
        Ok(answer)
    }

    /// The primary payer's adjudication a secondary claim carries (loops 2320/2330/2430): the
    /// primary claim's stored adjudication, its payer, and the patient's member id there. What is
    /// missing is the claim's problem (`Err`), not the call's.
    async fn prior_payer(
        &self,
        claim: &StoredClaim,
        people: &mut People,
    ) -> ApiResult<Result<PriorPayer, Invalid>> {
        let (prior, adjudication, payer) = {
            let mut conn = self.db.read().await?;
            let prior = claim_store::get(&mut conn, &claim.prior_claim).await?;
            let adjudication = claim_store::adjudication(&mut conn, &claim.prior_claim).await?;
            let payer = match &prior {
                Some(p) => docstore::get_live::<Payer>(&mut conn, &p.payer)
                    .await?
                    .map(|s| s.resource),
                None => None,
            };
            (prior, adjudication, payer)
        };
        let (Some(prior), Some(payer)) = (prior, payer) else {
            return Ok(Err(Invalid::new(
                "claim.prior_payer",
                claims::PAYER_MISSING,
                "the primary claim or its payer is not on file",
            )));
        };
        let organization = names::organization_of(&claim.name);
        let member_id = self
            .person(&claim.patient, people)
            .await?
            .as_ref()
            .and_then(|(_, coverages)| {
                coverages
                    .iter()
                    .filter(|c| qualified(organization, &c.payer) == prior.payer)
                    .filter(|c| coverage_in_force(c, claim.service_date))
                    .min_by_key(|c| c.priority)
                    .map(|c| c.member_id.clone())
            });
        let Some(member_id) = member_id else {
            return Ok(Err(Invalid::new(
                "claim.prior_payer.subscriber",
                claims::SUBSCRIBER_MISSING,
                "the patient has no coverage on file with the primary payer",
            )));
        };
        let adjustments_of = |a: &Adjudication| -> Vec<PriorAdjustment> {
            a.adjustments
                .iter()
                .map(|x| PriorAdjustment {
                    group: x.group.clone(),
                    reason: x.reason.clone(),
                    amount: x.amount,
                })
                .collect()
        };
        let claim_level = adjudication
            .iter()
            .find(|a| a.line_number == 0)
            .map(adjustments_of)
            .unwrap_or_default();
        let lines = claim
            .lines
            .iter()
            .filter_map(|line| {
                adjudication
                    .iter()
                    .find(|a| a.line_number > 0 && a.line_number == line.line_number)
                    .map(|a| PriorLine {
                        paid: a.paid,
                        adjustments: adjustments_of(a),
                        date: a.date,
                    })
            })
            .collect();
        Ok(Ok(PriorPayer {
            payer: payer_details(&payer),
            member_id,
            group_number: None,
            adjustments: claim_level,
            lines,
        }))
    }

    /// What the scrubber finds on a stored claim; for a secondary claim that scrubs clean, also
    /// what the COB mapping refuses.
    async fn problems(
        &self,
        claim: &StoredClaim,
        draft: &DraftClaim,
        context: &ScrubContext,
        people: &mut People,
    ) -> ApiResult<Vec<Problem>> {
        let mut problems: Vec<Problem> = claims::scrub(draft, context, Utc::now().date_naive())
            .iter()
            .map(Problem::from)
            .collect();
        if problems.is_empty() && claim.payer_sequence == "S" {
            let refused = match self.prior_payer(claim, people).await? {
                Ok(prior) => claims::to_x12_claim(draft, context, claim_number(&claim.name))
                    .and_then(|c| claims::with_prior_payer(c, &prior))
                    .err(),
                Err(invalid) => Some(invalid),
            };
            problems.extend(refused.as_ref().map(Problem::from));
        }
        Ok(problems)
    }

    /// Prepares a correction or void of `original` (see the RPCs): the new claim, scrubbed, and the
    /// original's next state. Refuses (nothing written) what [`claims::amend`] refuses.
    pub async fn prepare_amendment(
        &self,
        original: &StoredClaim,
        amendment: Amendment,
        request_id: &str,
    ) -> ApiResult<(StoredClaim, ClaimState)> {
        let amended = claims::amend(
            original.state,
            original.frequency_code,
            &original.payer_claim_number,
            amendment,
        )
        .map_err(precondition)?;
        let (lines, diagnoses) = match amendment {
            Amendment::Void => (original.lines.clone(), original.diagnoses.clone()),
            Amendment::Correct => {
                let mut conn = self.db.read().await?;
                let mut current = Vec::with_capacity(original.lines.len());
                for line in &original.lines {
                    let Some(mut row) = charges::get(&mut conn, &line.charge).await? else {
                        return Err(ApiError::internal("a claimed charge", &"not found"));
                    };
                    // A corrected charge is billed by the charge that replaced it (and so on).
                    for _ in 0..32 {
                        if row.state != ChargeState::Reversed || row.related_charge.is_empty() {
                            break;
                        }
                        match charges::get(&mut conn, &row.related_charge).await? {
                            Some(next) => row = next,
                            None => break,
                        }
                    }
                    current.push((row, line.routed_by.clone()));
                }
                lines_of(&current)
            }
        };
        let (frequency_code, payer_claim_number) = match &amended.frequency {
            Frequency::Corrected { payer_claim_number } => (7, payer_claim_number.clone()),
            Frequency::Void { payer_claim_number } => (8, payer_claim_number.clone()),
            Frequency::Original => (1, String::new()),
        };
        let now = now_micros();
        let mut claim = StoredClaim {
            name: amended_name(&original.name, amendment, request_id),
            billing_entity: original.billing_entity.clone(),
            payer: original.payer.clone(),
            patient: original.patient.clone(),
            service_date: original.service_date,
            provider: original.provider.clone(),
            place_of_service: original.place_of_service.clone(),
            unit: original.unit.clone(),
            state: ClaimState::Draft,
            frequency_code,
            original_claim: original.name.clone(),
            payer_claim_number,
            total: lines.iter().map(|l| l.amount).sum(),
            diagnoses,
            problems: Vec::new(),
            split_with: Vec::new(),
            batch: String::new(),
            lines,
            history: Vec::new(),
            create_us: now,
            update_us: now,
            payer_sequence: original.payer_sequence.clone(),
            prior_claim: original.prior_claim.clone(),
        };
        let rows = self.charges_of(&claim).await?;
        let draft = draft_of(&claim, &rows);
        let mut people = People::new();
        let context = self
            .context(&draft.key, &draft.provider, &mut people)
            .await?;
        claim.problems = self.problems(&claim, &draft, &context, &mut people).await?;
        if claim.problems.is_empty() {
            claim.state = ClaimState::Ready;
        }
        Ok((claim, amended.original_to))
    }

    /// Writes a prepared amendment in the caller's transaction: the original moved (compare-and-set
    /// on the state it was read in), the new claim stored. Returns both as stored.
    pub async fn write_amendment(
        &self,
        conn: &mut AnyConnection,
        original: &StoredClaim,
        original_to: ClaimState,
        claim: &StoredClaim,
        why: &str,
    ) -> ApiResult<(StoredClaim, StoredClaim)> {
        let number = claim_number(&claim.name);
        let (moved, made, link) = if original_to == ClaimState::Replaced {
            (
                format!("replaced by corrected claim {number}"),
                format!("corrects claim {}", claim_number(&original.name)),
                ChargeLink::From(&original.name),
            )
        } else {
            (
                format!("voided by claim {number}: {why}"),
                format!("voids claim {}", claim_number(&original.name)),
                ChargeLink::Keep,
            )
        };
        claim_store::transition(
            conn,
            &original.name,
            original.state,
            original_to,
            &moved,
            None,
        )
        .await?;
        claim_store::insert_linked(conn, claim, link, &made).await?;
        let read = async |conn: &mut AnyConnection, name: &str| {
            claim_store::get(conn, name)
                .await?
                .ok_or_else(|| ApiError::not_found(name))
        };
        let original = read(conn, &original.name).await?;
        let claim = read(conn, &claim.name).await?;
        Ok((original, claim))
    }
}

impl Claims {
    /// Posts a 999 or 277CA (see the RPC's contract), in one transaction.
    pub async fn acknowledge(
        &self,
        organization: &str,
        content: &str,
    ) -> ApiResult<pm_api::billing::ImportAcknowledgmentResponse> {
        use pm_api::billing::{AcknowledgedClaim, ImportAcknowledgmentResponse};
        let kind = x12in::tokenizer::tokenize(content)
            .map_err(refused)?
            .transactions()
            .next()
            .map(|t| t.id.to_string())
            .unwrap_or_default();
        let mut answer = ImportAcknowledgmentResponse::default();
        // (claim, accepted, reason, the payer's claim number from REF*1K) to apply.
        let mut verdicts: Vec<(String, bool, String, Option<String>)> = Vec::new();
        let mut conn = self.db.read().await?;
        match kind.as_str() {
            "999" => {
                answer.kind = "999".into();
                for group in x12in::parse_999(content).map_err(refused)? {
                    let Ok(control) = group.group_control_number.parse::<i64>() else {
                        answer.not_applied.push(format!(
                            "group {}: not a batch of ours",
                            x12in::tokenizer::shown(&group.group_control_number)
                        ));
                        continue;
                    };
                    let rejected = group.transactions.iter().any(|t| !t.status.is_accepted());
                    let claims =
                        claim_store::submitted_in_batch(&mut conn, organization, control).await?;
                    if claims.is_empty() {
                        answer.not_applied.push(format!(
                            "batch {control}: no claim awaits an acknowledgment"
                        ));
                    }
                    let reason = if rejected {
                        "999 rejected"
                    } else {
                        "999 accepted"
                    };
                    for claim in claims {
                        verdicts.push((claim, !rejected, reason.into(), None));
                    }
                }
            }
            "277" => {
                answer.kind = "277CA".into();
                for ack in x12in::parse_277ca(content).map_err(refused)? {
                    let name = format!(
                        "{organization}/claims/{}",
                        ack.claim_id.to_ascii_lowercase()
                    );
                    let codes: Vec<String> = ack
                        .statuses
                        .iter()
                        .map(|s| format!("{}:{}", s.category, s.code))
                        .collect();
                    verdicts.push((
                        name,
                        ack.accepted,
                        format!("277CA {}", codes.join(" ")),
                        ack.payer_claim_number.clone(),
                    ));
                }
            }
            _ => {
                return Err(ApiError::invalid(
                    "content",
                    "an acknowledgment is a 999 or a 277 (277CA) transaction",
                )
                .because("X12_TRANSACTION_UNEXPECTED"));
            }
        }
        drop(conn);
        let mut tx = self.db.write(organization).await?;
        for (name, accepted, reason, payer_claim_number) in verdicts {
            let state = claim_store::get(tx.conn(), &name).await?.map(|c| c.state);
            let to = state.and_then(|s| {
                claims::apply(s, ClaimAction::Acknowledge { accepted })
                    .ok()
                    .map(|to| (s, to))
            });
            let Some((from, to)) = to else {
                answer.not_applied.push(format!(
                    "{}: no claim of ours awaits an acknowledgment",
                    claim_number(&name)
                ));
                continue;
            };
            claim_store::transition(tx.conn(), &name, from, to, &reason, None).await?;
            // The payer's number, for a later correction or void (REF*F8).
            if let Some(number) = payer_claim_number.filter(|n| !n.trim().is_empty()) {
                claim_store::set_payer_claim_number(tx.conn(), &name, number.trim()).await?;
            }
            answer.claims.push(AcknowledgedClaim {
                claim: name,
                state: crate::claim_wire::state(to).into(),
                reason,
            });
        }
        tx.commit().await?;
        Ok(answer)
    }
}

/// The patients a call has asked Org about (PHI, in memory for that call only), by name: `None`
/// for one Org does not know.
type People = HashMap<String, Option<(Patient, Vec<Coverage>)>>;

/// The READY claims of one billing entity, mapped for the writer.
pub struct ExportGroup {
    /// The entity.
    pub billing_entity: String,
    /// Its loop 2010AA.
    pub provider: x12::BillingProvider,
    /// (claim name, its 837P claim), in order.
    pub claims: Vec<(String, x12::Claim)>,
}

fn non_empty(value: &str, fallback: &str) -> String {
    if value.is_empty() {
        fallback.to_string()
    } else {
        value.to_string()
    }
}

/// A rule's refusal as the API answers it.
fn refused(invalid: Invalid) -> ApiError {
    crate::handlers::refusal(invalid)
}

/// One remittance being posted: where, which, when the payer adjudicated, and the coverages of
/// the patients of its primary claims.
struct Posting<'a> {
    organization: &'a str,
    remittance: i64,
    date: NaiveDate,
    people: &'a People,
}

fn stored_adjustments(list: &[x12in::Adjustment]) -> Vec<StoredAdjustment> {
    list.iter()
        .map(|a| StoredAdjustment {
            group: a.group.code().to_string(),
            reason: a.reason.clone(),
            amount: a.amount,
        })
        .collect()
}

/// What one CLP posts: per service line, its payment and CAS adjustments (contractual, other,
/// payer-initiated; patient responsibility stays on the balance, and on a secondary claim OA-23, the
/// impact of the prior payer's adjudication, is not posted again), matched to the claim's lines by
/// code and modifiers in order. A claim-level payment without service lines goes to the lines in
/// order, each up to its balance. More than a line's balance refuses the whole remittance. The
/// adjudication (per line: paid, every CAS, the date) is kept. A primary claim left with a balance
/// makes a secondary claim to the patient's next coverage (its name returned, to scrub); the
/// history says where the balance went.
async fn post_claim(
    conn: &mut AnyConnection,
    posting: &Posting<'_>,
    index: usize,
    paid: &x12in::ClaimPayment,
    answer: &mut ImportRemittanceResponse,
) -> ApiResult<Option<String>> {
    let organization = posting.organization;
    let remittance = posting.remittance;
    let name = format!(
        "{organization}/claims/{}",
        paid.claim_id.to_ascii_lowercase()
    );
    let claim = claim_store::get(conn, &name).await?;
    let found = claim.is_some();
    let Some(claim) =
        claim.filter(|c| matches!(c.state, ClaimState::Submitted | ClaimState::Accepted))
    else {
        let reason = if found {
            "CLAIM_NOT_AWAITING_PAYMENT"
        } else {
            "NO_SUCH_CLAIM"
        };
        claim_store::unmatched(
            conn,
            organization,
            remittance,
            &paid.claim_id,
            paid.paid,
            reason,
        )
        .await?;
        answer.unmatched.push(UnmatchedPayment {
            claim_number: paid.claim_id.clone(),
            paid_cents: paid.paid.cents(),
            reason: reason.into(),
        });
        return Ok(None);
    };
    let at = |what: &str| format!("CLP (claim {}) {what}", index + 1);
    let secondary = claim.payer_sequence == "S";
    let adjustments = |list: &[x12in::Adjustment]| -> (Cents, Cents) {
        let mut adjusted = Cents::ZERO;
        let mut patient = Cents::ZERO;
        for a in list {
            match a.group {
                x12in::AdjustmentGroup::PatientResponsibility => patient = patient + a.amount,
                // On a secondary's 835, OA-23 is the primary's adjudication, posted already.
                x12in::AdjustmentGroup::Other if secondary && a.reason == "23" => {}
                _ => adjusted = adjusted + a.amount,
            }
        }
        (adjusted, patient)
    };
    let mut due = Cents::ZERO;
    for line in &claim.lines {
        due = due + charges::balance(conn, &line.charge).await?;
    }
    // (line's charge, paid, adjusted) to post; what the payer decided, per line.
    let mut postings: Vec<(String, Cents, Cents)> = Vec::new();
    let mut adjudications: Vec<Adjudication> = Vec::new();
    let mut used = vec![false; claim.lines.len()];
    let mut patient_total = Cents::ZERO;
    for (s, service) in paid.services.iter().enumerate() {
        let matched = claim.lines.iter().enumerate().position(|(i, line)| {
            !used[i]
                && line.code == service.procedure.code
                && line.modifiers == service.procedure.modifiers
        });
        let Some(i) = matched else {
            return Err(ApiError::precondition(
                "REMITTANCE_LINE_UNMATCHED",
                format!(
                    "{}: the service line matches no line of the claim",
                    at(&format!("SVC {}", s + 1))
                ),
            ));
        };
        used[i] = true;
        let (adjusted, patient) = adjustments(&service.adjustments);
        patient_total = patient_total + patient;
        postings.push((claim.lines[i].charge.clone(), service.paid, adjusted));
        adjudications.push(Adjudication {
            line_number: claim.lines[i].line_number,
            paid: service.paid,
            adjustments: stored_adjustments(&service.adjustments),
            date: posting.date,
        });
    }
    let (claim_adjusted, claim_patient) = adjustments(&paid.adjustments);
    patient_total = patient_total + claim_patient;
    if paid.services.is_empty() {
        // Claim-level amounts only: spread over the lines in order, each up to its balance.
        let (mut pay, mut adjust) = (paid.paid, claim_adjusted);
        for line in &claim.lines {
            let balance = charges::balance(conn, &line.charge).await?;
            let p = if pay < balance { pay } else { balance };
            let a = if adjust < balance - p {
                adjust
            } else {
                balance - p
            };
            postings.push((line.charge.clone(), p, a));
            adjudications.push(Adjudication {
                line_number: line.line_number,
                paid: p,
                adjustments: Vec::new(),
                date: posting.date,
            });
            pay = pay - p;
            adjust = adjust - a;
        }
        if pay.is_positive() || adjust.is_positive() {
            return Err(payment_exceeds(&at("CLP04")));
        }
    } else if claim_adjusted != Cents::ZERO {
        // Claim-level adjustments beside service lines: on the first line.
        if let Some(first) = postings.first_mut() {
            first.2 = first.2 + claim_adjusted;
        }
    }
    if !paid.adjustments.is_empty() {
        adjudications.push(Adjudication {
            line_number: 0,
            paid: Cents::ZERO,
            adjustments: stored_adjustments(&paid.adjustments),
            date: posting.date,
        });
    }
    let mut total_paid = Cents::ZERO;
    let mut total_adjusted = Cents::ZERO;
    for (charge, pay, adjust) in &postings {
        let balance = charges::balance(conn, charge).await?;
        if *pay + *adjust > balance {
            return Err(payment_exceeds(&at("SVC")));
        }
        if pay.is_positive() {
            charges::post(conn, charge, LedgerEntryKind::Payment, -*pay, "835 payment").await?;
        }
        if adjust.is_positive() {
            charges::post(
                conn,
                charge,
                LedgerEntryKind::Adjustment,
                -*adjust,
                "835 adjustment",
            )
            .await?;
        }
        total_paid = total_paid + *pay;
        total_adjusted = total_adjusted + *adjust;
    }
    // A secondary payer is billed what the primary left: paying all of it is paying in full.
    let billed = if secondary && due.is_positive() {
        due
    } else {
        claim.total
    };
    let to = claims::apply(
        claim.state,
        ClaimAction::Remit {
            paid: paid.paid,
            billed,
        },
    )
    .map_err(refused)?;
    claim_store::transition(conn, &claim.name, claim.state, to, "835 posted", None).await?;
    if !paid.payer_claim_control_number.is_empty() {
        claim_store::set_payer_claim_number(conn, &claim.name, &paid.payer_claim_control_number)
            .await?;
    }
    for adjudication in &adjudications {
        claim_store::record_adjudication(conn, &claim.name, remittance, adjudication).await?;
    }
    let made = balance_onward(conn, posting, &claim, to).await?;
    answer.claims.push(PostedClaim {
        claim: claim.name.clone(),
        state: crate::claim_wire::state(to).into(),
        paid_cents: total_paid.cents(),
        adjusted_cents: total_adjusted.cents(),
        patient_responsibility_cents: patient_total.cents(),
        secondary_claim: made.clone().unwrap_or_default(),
    });
    Ok(made)
}

/// Where an adjudicated claim's balance goes: nowhere when none is left; for a primary claim, to a
/// secondary claim (DRAFT, same lines, payer sequence S) to the patient's next coverage whose payer
/// Billing knows; else it stays with the patient. The claim's history says which.
async fn balance_onward(
    conn: &mut AnyConnection,
    posting: &Posting<'_>,
    claim: &StoredClaim,
    state: ClaimState,
) -> ApiResult<Option<String>> {
    let mut left = Cents::ZERO;
    for line in &claim.lines {
        left = left + charges::balance(conn, &line.charge).await?;
    }
    if !left.is_positive() {
        return Ok(None);
    }
    if claim.payer_sequence == "S" || claim.frequency_code == 8 {
        claim_store::note(conn, &claim.name, state, "balance left to the patient").await?;
        return Ok(None);
    }
    let Some(person) = posting.people.get(&claim.patient) else {
        claim_store::note(
            conn,
            &claim.name,
            state,
            "balance kept: the patient's coverages could not be read, no secondary claim made",
        )
        .await?;
        return Ok(None);
    };
    let coverages = person
        .as_ref()
        .map(|(_, coverages)| coverages.as_slice())
        .unwrap_or_default();
    let mut known = Vec::new();
    for coverage in coverages {
        let payer = qualified(posting.organization, &coverage.payer);
        if docstore::get_live::<Payer>(conn, &payer).await?.is_some() {
            known.push(payer);
        }
    }
    let next = next_coverage(
        coverages,
        posting.organization,
        &claim.payer,
        claim.service_date,
        |payer| known.iter().any(|k| k == payer),
    );
    let Some(next) = next else {
        claim_store::note(
            conn,
            &claim.name,
            state,
            "balance left to the patient: no other coverage",
        )
        .await?;
        return Ok(None);
    };
    let name = secondary_name(&claim.name);
    if claim_store::get(conn, &name).await?.is_some() {
        claim_store::note(
            conn,
            &claim.name,
            state,
            &format!("balance already on secondary claim {}", claim_number(&name)),
        )
        .await?;
        return Ok(None);
    }
    let now = now_micros();
    let secondary = StoredClaim {
        name: name.clone(),
        payer: qualified(posting.organization, &next.payer),
        state: ClaimState::Draft,
        frequency_code: 1,
        original_claim: String::new(),
        payer_claim_number: String::new(),
        problems: Vec::new(),
        split_with: Vec::new(),
        batch: String::new(),
        history: Vec::new(),
        create_us: now,
        update_us: now,
        payer_sequence: "S".into(),
        prior_claim: claim.name.clone(),
        ..claim.clone()
    };
    claim_store::insert_linked(
        conn,
        &secondary,
        ChargeLink::Keep,
        &format!("secondary to claim {}", claim_number(&claim.name)),
    )
    .await?;
    claim_store::note(
        conn,
        &claim.name,
        state,
        &format!(
            "balance to secondary claim {} ({})",
            claim_number(&name),
            secondary.payer
        ),
    )
    .await?;
    Ok(Some(name))
}

/// A refusal that depends on the claim's state, as the API answers it: FAILED_PRECONDITION with
/// the reason and the field in the metadata.
fn precondition(invalid: Invalid) -> ApiError {
    ApiError::precondition(invalid.reason, invalid.message).with_meta("field", invalid.field)
}

/// A payer's details as the scrubber and the mapping read them.
fn payer_details(p: &Payer) -> PayerDetails {
    PayerDetails {
        name: p.display_name.clone(),
        payer_id: p.payer_id.clone(),
        claim_filing_indicator: p.claim_filing_indicator.clone(),
        timely_filing_days: u32::try_from(p.timely_filing_days).ok().filter(|d| *d > 0),
        address: address_of(p.address.as_ref()),
    }
}

fn payment_exceeds(at: &str) -> ApiError {
    ApiError::precondition(
        "PAYMENT_EXCEEDS_BALANCE",
        format!("{at}: the payment and adjustments exceed the line's balance; nothing was posted"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coverage(payer: &str, priority: i32, from: i64, until: Option<i64>) -> Coverage {
        let at = |seconds: i64| prost_types::Timestamp { seconds, nanos: 0 };
        Coverage {
            payer: format!("payers/{payer}"),
            member_id: "M1".into(),
            priority,
            effective_period: Some(pm_api::types::Interval {
                start_time: Some(at(from)),
                end_time: until.map(at),
            }),
            ..Default::default()
        }
    }

    /// The coverage after the one billed, by priority: in force on the date of service, another
    /// payer, known to Billing; none when the billed one is not found or nothing follows.
    #[test]
    fn the_balance_goes_to_the_next_coverage_in_force() {
        const ORG: &str = "organizations/acme";
        // 2026-01-01 and 2026-06-01 (UTC); dates of service in March and July.
        let (jan, jun) = (1_767_225_600, 1_780_272_000);
        let march = NaiveDate::from_ymd_opt(2026, 3, 10).unwrap_or_default();
        let july = NaiveDate::from_ymd_opt(2026, 7, 10).unwrap_or_default();
        let all_known = |_: &str| true;
        let payer = |p: &str| format!("{ORG}/payers/{p}");
        let next = |coverages: &[Coverage], billed: &str, date, known: &dyn Fn(&str) -> bool| {
            next_coverage(coverages, ORG, &payer(billed), date, known)
                .map(|c| (c.payer.clone(), c.priority))
        };
        let family = [
            coverage("medicare", 1, jan, None),
            coverage("aetna", 2, jan, Some(jun)),
            coverage("bcbs-ma", 3, jan, None),
        ];
        type Known<'a> = &'a dyn Fn(&str) -> bool;
        type Case<'a> = (&'a str, NaiveDate, Known<'a>, Option<(&'a str, i32)>);
        let cases: [Case; 7] = [
            ("medicare", march, &all_known, Some(("payers/aetna", 2))),
            // Aetna's coverage ended in June: the next in force is BCBS.
            ("medicare", july, &all_known, Some(("payers/bcbs-ma", 3))),
            ("aetna", march, &all_known, Some(("payers/bcbs-ma", 3))),
            // The last coverage: nothing after it.
            ("bcbs-ma", march, &all_known, None),
            // Billed to a payer the patient has no coverage with.
            ("globex-direct", march, &all_known, None),
            // A payer Billing does not know is passed over.
            (
                "medicare",
                march,
                &|p: &str| !p.ends_with("/aetna"),
                Some(("payers/bcbs-ma", 3)),
            ),
            ("medicare", march, &|_: &str| false, None),
        ];
        for (billed, date, known, expected) in cases {
            assert_eq!(
                next(&family, billed, date, known),
                expected.map(|(p, n)| (p.to_string(), n)),
                "{billed} on {date}"
            );
        }
        // The same payer again at a lower rank is not a next coverage.
        let twice = [
            coverage("medicare", 1, jan, None),
            coverage("medicare", 2, jan, None),
        ];
        assert_eq!(next(&twice, "medicare", march, &all_known), None);
    }

    #[test]
    fn provider_names_come_from_the_display_name() {
        assert_eq!(
            person_name("Dr. Amara Okafor"),
            ("Amara".into(), "Okafor".into())
        );
        assert_eq!(person_name("Lee, MD"), (String::new(), "Lee".into()));
        assert_eq!(
            person_name("Mary Ann van Dyke, DO"),
            ("Mary Ann van".into(), "Dyke".into())
        );
        assert_eq!(person_name(""), (String::new(), String::new()));
    }
}

//! Employer invoices end to end over mTLS, on SQLite and PostgreSQL, with the demo seeded (the
//! Globex employee-health unit bills claim form NONE under a per-visit contract): a month's visits
//! become one invoice whose total is the contract schedule's fees of its lines, the same month
//! again makes nothing, a per-member-per-month contract bills each patient enrolled in the month
//! once, payments are allocated to the lines in the ledger (more than the balance is refused and
//! writes nothing), the aging report shows what is left under the employer, and a caller outside
//! the contract's units sees no invoice.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;

use chrono::{Datelike, Months, NaiveDate, Utc};
use pm_api::billing::billing_service_client::BillingServiceClient;
use pm_api::billing::*;
use pm_api::org::{
    CreateEnrollmentRequest, Enrollment, GetOrganizationRequest, GetPatientEligibilityRequest,
};
use pm_api::types::Date;
use pm_runtime::client::AuthedChannel;
use pm_runtime::config::Backend;
use support::TestMesh;
use support::status::{fields, reason};
use tonic::Code;

const ORG: &str = "organizations/acme";
const GLOBEX_UNIT: &str = "organizations/acme/units/globex-employer";
const NORTH: &str = "organizations/acme/units/north-clinic";
const GRETA: &str = "organizations/acme/patients/p-0002";
const WALTER: &str = "organizations/acme/patients/p-0003";
const HAROLD: &str = "organizations/acme/patients/p-0001";
const OKAFOR: &str = "organizations/acme/providers/dr-okafor";
const GLOBEX_PAYER: &str = "organizations/acme/payers/globex-direct";
const MEDICARE: &str = "organizations/acme/payers/medicare";
const GLOBEX_CONTRACT: &str = "organizations/acme/contracts/globex-direct-2026";
const GLOBEX_ENTITY: &str = "organizations/acme/billingEntities/acme-employer-services";
const GLOBEX_SCHEDULE: &str = "organizations/acme/feeSchedules/globex-contract/versions/v2026";
const ADMIN: &str = "principals/admin";
/// Billing Staff of north-clinic and lakeside-clinic: outside the Globex unit.
const JORDAN: &str = "principals/jordan-billing";
/// Billing Staff of the Globex unit alone (made here).
const GLOBEX_CLERK: &str = "principals/globex-clerk";

type Billing = BillingServiceClient<AuthedChannel>;

fn date(day: NaiveDate) -> Option<Date> {
    Some(Date {
        year: day.year(),
        month: day.month() as i32,
        day: day.day() as i32,
    })
}

fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The month two months back (whatever the organization's zone, it has ended) and its days.
fn past_month() -> NaiveDate {
    Utc::now()
        .date_naive()
        .with_day(1)
        .unwrap()
        .checked_sub_months(Months::new(2))
        .unwrap()
}

async fn seeded(backend: Backend) -> anyhow::Result<TestMesh> {
    let mesh = TestMesh::start_with_demo(backend).await?;
    // Billing Staff of the Globex unit only.
    mesh.bind_user(
        "globex-clerk",
        ORG,
        pm_api::rbac::Role::BillingStaff,
        &[GLOBEX_UNIT],
    )
    .await?;
    Ok(mesh)
}

async fn charge(
    billing: &mut Billing,
    patient: &str,
    unit: &str,
    payer: &str,
    code: &str,
    modifiers: &[&str],
    day: NaiveDate,
) -> anyhow::Result<Charge> {
    Ok(billing
        .create_charge(CreateChargeRequest {
            parent: ORG.into(),
            charge: Some(Charge {
                patient: patient.into(),
                unit: unit.into(),
                provider: OKAFOR.into(),
                payer: payer.into(),
                code: code.into(),
                modifiers: modifiers.iter().map(|m| m.to_string()).collect(),
                units: 1,
                diagnoses: vec!["Z00.00".into()],
                service_date: date(day),
                ..Default::default()
            }),
            request_id: rid(),
        })
        .await?
        .into_inner())
}

/// Every ledger entry of every charge named, in order: what "nothing written" compares.
async fn ledgers(billing: &mut Billing, charges: &[String]) -> anyhow::Result<Vec<LedgerEntry>> {
    let mut all = Vec::new();
    for charge in charges {
        all.extend(
            billing
                .list_ledger_entries(ListLedgerEntriesRequest {
                    charge: charge.clone(),
                })
                .await?
                .into_inner()
                .entries,
        );
    }
    Ok(all)
}

fn line_charges(invoice: &Invoice) -> Vec<String> {
    invoice.lines.iter().map(|l| l.charge.clone()).collect()
}

/// The aging row of the Globex employer (billing entity × payer), by submission as of today.
async fn globex_aging(billing: &mut Billing) -> anyhow::Result<Option<AgingRow>> {
    Ok(billing
        .report_aging(ReportAgingRequest {
            parent: ORG.into(),
            basis: AgingBasis::Submission as i32,
            ..Default::default()
        })
        .await?
        .into_inner()
        .rows
        .into_iter()
        .find(|r| r.billing_entity == GLOBEX_ENTITY && r.payer == GLOBEX_PAYER))
}

async fn per_visit_invoices(backend: Backend) -> anyhow::Result<()> {
    let mesh = seeded(backend).await?;
    let mut admin = mesh.billing_as(ADMIN).await?;
    let first = past_month();
    let month = first.format("%Y-%m").to_string();
    // Greta's three employer visits of the month (one by telehealth), one of the month after, and a
    // clinic visit of the same month billed to Medicare.
    let mut visits = Vec::new();
    for (day, modifiers) in [(17, &[][..]), (3, &[][..]), (9, &["95"][..])] {
        let day = first.with_day(day).unwrap();
        visits.push(
            charge(
                &mut admin,
                GRETA,
                GLOBEX_UNIT,
                GLOBEX_PAYER,
                "99213",
                modifiers,
                day,
            )
            .await?,
        );
    }
    let later = charge(
        &mut admin,
        GRETA,
        GLOBEX_UNIT,
        GLOBEX_PAYER,
        "99213",
        &[],
        first.checked_add_months(Months::new(1)).unwrap(),
    )
    .await?;
    let clinic = charge(&mut admin, HAROLD, NORTH, MEDICARE, "99213", &[], first).await?;
    for c in visits.iter().chain([&later]) {
        assert_eq!(c.state, ChargeState::Open as i32, "{c:?}");
        assert_eq!(
            c.profile.as_ref().unwrap().contract,
            GLOBEX_CONTRACT,
            "the unit's profile names the contract"
        );
    }
    // Assembly sets the employer lines aside (claim form NONE): they stay for the invoice.
    let assembled = admin
        .assemble_claims(AssembleClaimsRequest { parent: ORG.into() })
        .await?
        .into_inner();
    for v in &visits {
        assert!(
            assembled
                .set_aside
                .iter()
                .any(|s| s.charge == v.name && s.reason == "INVOICED_NOT_CLAIMED"),
            "{assembled:?}"
        );
    }

    // Bad input: named fields, stable reasons, nothing written.
    let create = |month: &str, contract: &str, request_id: &str| CreateInvoicesRequest {
        parent: ORG.into(),
        month: month.into(),
        contract: contract.into(),
        request_id: request_id.into(),
    };
    for bad in ["2026-13", "", "26-01", "2026-1"] {
        let err = admin
            .create_invoices(create(bad, GLOBEX_CONTRACT, &rid()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
        assert_eq!(reason(&err), "MONTH_INVALID");
        assert_eq!(fields(&err), ["month"]);
    }
    let err = admin
        .create_invoices(create(&month, GLOBEX_CONTRACT, ""))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), fields(&err)),
        (Code::InvalidArgument, vec!["request_id".to_string()])
    );
    let unknown = format!("{ORG}/contracts/nowhere");
    let err = admin
        .create_invoices(create(&month, &unknown, &rid()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(&unknown), "{err:?}");
    let this_month = Utc::now().date_naive().format("%Y-%m").to_string();
    let err = admin
        .create_invoices(create(&this_month, GLOBEX_CONTRACT, &rid()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(reason(&err), "INVOICE_MONTH_NOT_ENDED");
    let none = admin
        .list_invoices(ListInvoicesRequest {
            parent: ORG.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(none.invoices.is_empty(), "{none:?}");
    // A caller outside the contract's units cannot invoice it: as if it did not exist.
    let mut jordan = mesh.billing_as(JORDAN).await?;
    let err = jordan
        .create_invoices(create(&month, GLOBEX_CONTRACT, &rid()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // The Globex clerk invoices the month: one invoice, the month's three visits, oldest first.
    let mut clerk = mesh.billing_as(GLOBEX_CLERK).await?;
    let request_id = rid();
    let made = clerk
        .create_invoices(create(&month, GLOBEX_CONTRACT, &request_id))
        .await?
        .into_inner();
    assert_eq!(made.invoices.len(), 1, "{made:?}");
    let invoice = made.invoices[0].clone();
    assert_eq!(invoice.contract, GLOBEX_CONTRACT);
    assert_eq!(invoice.payer, GLOBEX_PAYER);
    assert_eq!(invoice.billing_entity, GLOBEX_ENTITY);
    assert_eq!(invoice.month, month);
    assert_eq!(invoice.basis, InvoiceBasis::PerVisit as i32);
    assert_eq!(invoice.state, InvoiceState::Open as i32);
    let mut expected: Vec<&Charge> = visits.iter().collect();
    expected.sort_by_key(|c| (c.service_date.as_ref().map(|d| d.day), c.name.clone()));
    assert_eq!(
        line_charges(&invoice),
        expected.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
    );
    // The total is the contract schedule's fees of the lines (from the schedule itself).
    let entries: HashMap<(String, Vec<String>), i64> = admin
        .get_fee_schedule_version(GetFeeScheduleVersionRequest {
            name: GLOBEX_SCHEDULE.into(),
        })
        .await?
        .into_inner()
        .entries
        .into_iter()
        .map(|e| ((e.code, e.modifiers), e.amount_cents))
        .collect();
    let scheduled: i64 = visits
        .iter()
        .map(|v| entries[&(v.code.clone(), v.modifiers.clone())])
        .sum();
    assert!(scheduled > 0);
    assert_eq!(invoice.total_cents, scheduled);
    assert_eq!(invoice.balance_cents, scheduled);
    assert_eq!(invoice.paid_cents, 0);
    assert_eq!(
        invoice.lines.iter().map(|l| l.amount_cents).sum::<i64>(),
        scheduled
    );
    // A retry answers the first call; the same month again makes nothing.
    let replay = clerk
        .create_invoices(create(&month, GLOBEX_CONTRACT, &request_id))
        .await?
        .into_inner();
    assert_eq!(replay.invoices.len(), 1);
    assert_eq!(replay.invoices[0].name, invoice.name);
    assert_eq!(line_charges(&replay.invoices[0]), line_charges(&invoice));
    let again = admin
        .create_invoices(create(&month, "", &rid()))
        .await?
        .into_inner();
    assert!(again.invoices.is_empty(), "{again:?}");
    let listed = admin
        .list_invoices(ListInvoicesRequest {
            parent: ORG.into(),
            contract: GLOBEX_CONTRACT.into(),
            month: month.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(listed.invoices.len(), 1);
    assert_eq!(listed.invoices[0].name, invoice.name);
    // Invoiced lines are claimed by no assembly and not set aside again.
    let assembled = admin
        .assemble_claims(AssembleClaimsRequest { parent: ORG.into() })
        .await?
        .into_inner();
    for v in &visits {
        assert!(!assembled.set_aside.iter().any(|s| s.charge == v.name));
        assert!(
            !assembled
                .claims
                .iter()
                .any(|c| c.lines.iter().any(|l| l.charge == v.name))
        );
    }

    // Out of the contract's units, the invoice answers exactly like one that does not exist.
    let missing = format!("{ORG}/invoices/nowhere");
    let mut refusals = Vec::new();
    for name in [invoice.name.clone(), missing.clone()] {
        let err = jordan
            .get_invoice(GetInvoiceRequest { name: name.clone() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        refusals.push((err.code(), err.message().replace(&name, "<name>")));
    }
    assert_eq!(refusals[0], refusals[1]);
    let err = jordan
        .post_invoice_payment(PostInvoicePaymentRequest {
            invoice: invoice.name.clone(),
            amount_cents: 100,
            reference: "CHK-1".into(),
            request_id: rid(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let jordans = jordan
        .list_invoices(ListInvoicesRequest {
            parent: ORG.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(jordans.invoices.is_empty(), "{jordans:?}");
    let clerks = clerk
        .list_invoices(ListInvoicesRequest {
            parent: ORG.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(clerks.invoices.len(), 1);

    // Paying more than the balance (or nothing) is refused and writes nothing.
    let charges = line_charges(&invoice);
    let before = ledgers(&mut admin, &charges).await?;
    let pay = |amount: i64, request_id: &str| PostInvoicePaymentRequest {
        invoice: invoice.name.clone(),
        amount_cents: amount,
        reference: "EFT-4471".into(),
        request_id: request_id.into(),
    };
    let err = clerk
        .post_invoice_payment(pay(scheduled + 1, &rid()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(reason(&err), "PAYMENT_EXCEEDS_BALANCE");
    assert!(err.message().contains("amount_cents"), "{err:?}");
    for amount in [0, -100] {
        let err = clerk
            .post_invoice_payment(pay(amount, &rid()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(reason(&err), "PAYMENT_NOT_POSITIVE");
        assert_eq!(fields(&err), ["amount_cents"]);
    }
    let mut no_reference = pay(100, &rid());
    no_reference.reference = " ".into();
    let err = clerk.post_invoice_payment(no_reference).await.unwrap_err();
    assert_eq!(fields(&err), ["reference"]);
    assert_eq!(ledgers(&mut admin, &charges).await?, before);
    let unchanged = admin
        .get_invoice(GetInvoiceRequest {
            name: invoice.name.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(unchanged.balance_cents, scheduled);
    assert_eq!(unchanged.state, InvoiceState::Open as i32);
    assert_eq!(
        globex_aging(&mut admin).await?.unwrap().days_0_30_cents,
        scheduled,
        "issued today: the whole invoice is 0-30 days old"
    );

    // A partial payment: the oldest line first, then the next; PARTIALLY_PAID.
    let first_line = invoice.lines[0].amount_cents;
    let partial = first_line + 1_000;
    let payment_id = rid();
    let paid = clerk
        .post_invoice_payment(pay(partial, &payment_id))
        .await?
        .into_inner();
    let after = paid.invoice.clone().unwrap();
    assert_eq!(after.state, InvoiceState::PartiallyPaid as i32);
    assert_eq!(after.balance_cents, scheduled - partial);
    assert_eq!(after.paid_cents, partial);
    assert_eq!(after.lines[0].balance_cents, 0);
    assert_eq!(
        after.lines[1].balance_cents,
        after.lines[1].amount_cents - 1_000
    );
    assert_eq!(after.lines[2].balance_cents, after.lines[2].amount_cents);
    assert_eq!(paid.entries.len(), 2);
    assert!(
        paid.entries
            .iter()
            .all(|e| e.kind == LedgerEntryKind::Payment as i32 && e.amount_cents < 0)
    );
    assert_eq!(
        paid.entries.iter().map(|e| e.amount_cents).sum::<i64>(),
        -partial
    );
    // A retry posts nothing more.
    let replayed = clerk
        .post_invoice_payment(pay(partial, &payment_id))
        .await?
        .into_inner();
    assert_eq!(replayed.invoice.unwrap().balance_cents, scheduled - partial);
    let posted = ledgers(&mut admin, &charges).await?;
    assert_eq!(posted.len(), before.len() + 2);
    // Aging shows the remainder under the employer; the later, uninvoiced visit is unbilled.
    let aging = globex_aging(&mut admin).await?.unwrap();
    assert_eq!(aging.days_0_30_cents, scheduled - partial);
    assert_eq!(aging.unbilled_cents, later.amount_cents);
    let by_state = admin
        .list_invoices(ListInvoicesRequest {
            parent: ORG.into(),
            state: InvoiceState::PartiallyPaid as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(by_state.invoices.len(), 1);

    // The rest: PAID; nothing more can be paid.
    let rest = clerk
        .post_invoice_payment(pay(scheduled - partial, &rid()))
        .await?
        .into_inner()
        .invoice
        .unwrap();
    assert_eq!(rest.state, InvoiceState::Paid as i32);
    assert_eq!(rest.balance_cents, 0);
    assert_eq!(rest.paid_cents, scheduled);
    let err = clerk
        .post_invoice_payment(pay(1, &rid()))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "PAYMENT_EXCEEDS_BALANCE");
    let aging = globex_aging(&mut admin).await?.unwrap();
    assert_eq!(aging.days_0_30_cents, 0);
    // The revenue report carries the invoiced money: charged and paid under the employer.
    let revenue = admin
        .report_revenue(ReportRevenueRequest {
            parent: ORG.into(),
            group_by: vec![RevenueDimension::Payer as i32],
            from_month: month.clone(),
            until_month: month.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let row = revenue
        .rows
        .iter()
        .find(|r| r.key == [GLOBEX_PAYER])
        .unwrap();
    let amounts = row.amounts.unwrap();
    assert_eq!(amounts.charged_cents, scheduled);
    assert_eq!(amounts.paid_cents, -scheduled);
    assert_eq!(amounts.outstanding_cents, 0);
    // The clinic's Medicare visit was never invoiced.
    assert!(!charges.contains(&clinic.name));

    // A correction of a paid, invoiced visit joins the invoice: its replacement is a new line, the
    // total follows the lines in force, and the employer owes the difference.
    let corrected_line = rest.lines[2].clone();
    let corrected = admin
        .correct_charge(CorrectChargeRequest {
            name: corrected_line.charge.clone(),
            correction: Some(ChargeLine {
                code: "99214".into(),
                units: 1,
                diagnoses: vec!["Z00.00".into()],
                ..Default::default()
            }),
            reason: "coded as a moderate visit".into(),
            request_id: rid(),
        })
        .await?
        .into_inner();
    let replacement = corrected.correction.unwrap();
    assert!(
        replacement.amount_cents > corrected_line.amount_cents,
        "{replacement:?}"
    );
    let after_correction = admin
        .get_invoice(GetInvoiceRequest {
            name: invoice.name.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(after_correction.lines.len(), 4, "{after_correction:?}");
    assert_eq!(after_correction.lines[3].charge, replacement.name);
    assert_eq!(
        after_correction.lines[3].amount_cents,
        replacement.amount_cents
    );
    let difference = replacement.amount_cents - corrected_line.amount_cents;
    assert_eq!(after_correction.total_cents, scheduled + difference);
    assert_eq!(after_correction.balance_cents, difference);
    assert_eq!(after_correction.state, InvoiceState::PartiallyPaid as i32);
    assert_eq!(after_correction.paid_cents, scheduled, "the payment stays");
    // It takes the difference and no more; then it is paid.
    let err = clerk
        .post_invoice_payment(pay(difference + 1, &rid()))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "PAYMENT_EXCEEDS_BALANCE");
    let settled = clerk
        .post_invoice_payment(pay(difference, &rid()))
        .await?
        .into_inner()
        .invoice
        .unwrap();
    assert_eq!(
        (settled.state, settled.balance_cents),
        (InvoiceState::Paid as i32, 0)
    );
    // The replacement is billed by that invoice alone: no claim, no second invoice.
    let again = admin
        .create_invoices(create(&month, "", &rid()))
        .await?
        .into_inner();
    assert!(again.invoices.is_empty(), "{again:?}");
    let assembled = admin
        .assemble_claims(AssembleClaimsRequest { parent: ORG.into() })
        .await?
        .into_inner();
    assert!(
        !assembled
            .claims
            .iter()
            .any(|c| c.lines.iter().any(|l| l.charge == replacement.name))
    );
    mesh.stop().await?;
    Ok(())
}

async fn member_month_invoices(backend: Backend) -> anyhow::Result<()> {
    let mesh = seeded(backend).await?;
    let mut admin = mesh.billing_as(ADMIN).await?;
    let mut org = mesh.org_as(ADMIN).await?;
    // Walter joins Greta in the Globex program this month.
    org.create_enrollment(CreateEnrollmentRequest {
        parent: WALTER.into(),
        enrollment: Some(Enrollment {
            unit: GLOBEX_UNIT.into(),
            ..Default::default()
        }),
        enrollment_id: "globex".into(),
        request_id: String::new(),
    })
    .await?;
    let zone: chrono_tz::Tz = org
        .get_organization(GetOrganizationRequest { name: ORG.into() })
        .await?
        .into_inner()
        .time_zone
        .parse()?;
    let month = Utc::now()
        .with_timezone(&zone)
        .date_naive()
        .format("%Y-%m")
        .to_string();

    // The fee and the basis are checked together; a refused contract is not written.
    let contract = |basis: InvoiceBasis, fee: i64| Contract {
        display_name: "Globex per member".into(),
        payer: GLOBEX_PAYER.into(),
        billing_entity: GLOBEX_ENTITY.into(),
        units: vec![GLOBEX_UNIT.into()],
        effective_from: Some(Date {
            year: 2026,
            month: 1,
            day: 1,
        }),
        invoice_basis: basis as i32,
        member_month_fee_cents: fee,
        ..Default::default()
    };
    for (basis, fee, why) in [
        (
            InvoiceBasis::PerMemberPerMonth,
            0,
            "MEMBER_MONTH_FEE_REQUIRED",
        ),
        (
            InvoiceBasis::PerMemberPerMonth,
            -5,
            "MEMBER_MONTH_FEE_REQUIRED",
        ),
        (
            InvoiceBasis::PerVisit,
            4_500,
            "MEMBER_MONTH_FEE_NOT_ALLOWED",
        ),
        (
            InvoiceBasis::Unspecified,
            4_500,
            "MEMBER_MONTH_FEE_NOT_ALLOWED",
        ),
    ] {
        let err = admin
            .create_contract(CreateContractRequest {
                parent: ORG.into(),
                contract: Some(contract(basis, fee)),
                contract_id: "globex-pmpm".into(),
                request_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert_eq!(reason(&err), why);
        assert_eq!(fields(&err), ["contract.member_month_fee_cents"]);
    }
    let pmpm = format!("{ORG}/contracts/globex-pmpm");
    let err = admin
        .get_contract(GetContractRequest { name: pmpm.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let fee = 4_500;
    let stored = admin
        .create_contract(CreateContractRequest {
            parent: ORG.into(),
            contract: Some(contract(InvoiceBasis::PerMemberPerMonth, fee)),
            contract_id: "globex-pmpm".into(),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(stored.member_month_fee_cents, fee);
    assert_eq!(stored.invoice_basis, InvoiceBasis::PerMemberPerMonth as i32);

    // The members, as Org tells them: every patient with an enrollment in the Globex unit.
    let mut members = Vec::new();
    for patient in ["p-0001", "p-0002", "p-0003", "p-0004"] {
        let patient = format!("{ORG}/patients/{patient}");
        let eligibility = org
            .get_patient_eligibility(GetPatientEligibilityRequest {
                patient: patient.clone(),
            })
            .await?
            .into_inner();
        if eligibility
            .enrollments
            .iter()
            .any(|e| e.unit == GLOBEX_UNIT)
        {
            members.push(patient);
        }
    }
    assert_eq!(members, [GRETA, WALTER]);

    let made = admin
        .create_invoices(CreateInvoicesRequest {
            parent: ORG.into(),
            month: month.clone(),
            contract: pmpm.clone(),
            request_id: rid(),
        })
        .await?
        .into_inner();
    assert_eq!(made.invoices.len(), 1, "{made:?}");
    let invoice = &made.invoices[0];
    assert_eq!(invoice.basis, InvoiceBasis::PerMemberPerMonth as i32);
    let mut billed: Vec<String> = invoice.lines.iter().map(|l| l.patient.clone()).collect();
    billed.sort();
    assert_eq!(billed, members);
    assert_eq!(invoice.total_cents, fee * members.len() as i64);
    for line in &invoice.lines {
        assert_eq!(line.code, "PMPM");
        assert_eq!(line.month, month);
        assert_eq!(line.amount_cents, fee);
        assert_eq!(line.unit, GLOBEX_UNIT);
        // Each member-month is a charge in the ledger.
        let charge = admin
            .get_charge(GetChargeRequest {
                name: line.charge.clone(),
            })
            .await?
            .into_inner();
        assert_eq!(charge.source, ChargeSource::MemberMonth as i32);
        assert_eq!(charge.amount_cents, fee);
        assert_eq!(charge.payer, GLOBEX_PAYER);
        let ledger = admin
            .list_ledger_entries(ListLedgerEntriesRequest {
                charge: line.charge.clone(),
            })
            .await?
            .into_inner();
        assert_eq!(ledger.balance_cents, fee);
    }
    // The whole organization's run of the same month makes nothing more.
    let again = admin
        .create_invoices(CreateInvoicesRequest {
            parent: ORG.into(),
            month: month.clone(),
            contract: String::new(),
            request_id: rid(),
        })
        .await?
        .into_inner();
    assert!(again.invoices.is_empty(), "{again:?}");
    // A partial payment shows in aging under the employer.
    let paid = admin
        .post_invoice_payment(PostInvoicePaymentRequest {
            invoice: invoice.name.clone(),
            amount_cents: fee + 500,
            reference: "ACH 2026-PMPM".into(),
            request_id: rid(),
        })
        .await?
        .into_inner()
        .invoice
        .unwrap();
    assert_eq!(paid.state, InvoiceState::PartiallyPaid as i32);
    assert_eq!(paid.balance_cents, invoice.total_cents - fee - 500);
    let aging = globex_aging(&mut admin).await?.unwrap();
    assert_eq!(aging.days_0_30_cents, paid.balance_cents);
    mesh.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_visit_invoices_on_sqlite() -> anyhow::Result<()> {
    per_visit_invoices(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_visit_invoices_on_postgres() -> anyhow::Result<()> {
    per_visit_invoices(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_month_invoices_on_sqlite() -> anyhow::Result<()> {
    member_month_invoices(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_month_invoices_on_postgres() -> anyhow::Result<()> {
    member_month_invoices(Backend::Postgres).await
}

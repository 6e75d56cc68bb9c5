//! Claims end to end over mTLS, on SQLite and PostgreSQL, with the demo seeded: charges become
//! claims (scrubbed READY, or DRAFT naming what is missing until it is fixed), READY claims are
//! exported as 837P files that pyx12 accepts (when `PM_X12VALID` names its `x12valid`), exporting a
//! claim that is not READY is refused by name, and an 835 posts payments and adjustments to the
//! ledger once: a second import posts nothing, and a broken or overpaying 835 posts nothing at all.

#![allow(clippy::unwrap_used)]

mod support;

use chrono::{Datelike, Days, NaiveDate, Utc};
use pm_api::billing::*;
use pm_api::org::{Coverage, CreateCoverageRequest};
use pm_api::types::{Date, Interval};
use pm_runtime::client::AuthedChannel;
use pm_runtime::config::Backend;
use support::TestMesh;
use support::status::reason;
use tonic::Code;
use tonic_types::StatusExt;

const ORG: &str = "organizations/acme";
const CCM: &str = "organizations/acme/units/ccm-program";
const ROSA: &str = "organizations/acme/patients/p-0004";
const OKAFOR: &str = "organizations/acme/providers/dr-okafor";
const MEDICARE: &str = "organizations/acme/payers/medicare";
const AETNA: &str = "organizations/acme/payers/aetna";
const ADMIN: &str = "principals/admin";

type Billing = BillingServiceClient<AuthedChannel>;
use pm_api::billing::billing_service_client::BillingServiceClient;

fn date(day: NaiveDate) -> Option<Date> {
    Some(Date {
        year: day.year(),
        month: day.month() as i32,
        day: day.day() as i32,
    })
}

/// Ten days ago: a date of service in the past, within every payer's filing window.
fn service_day() -> NaiveDate {
    Utc::now().date_naive() - Days::new(10)
}

async fn seeded(backend: Backend) -> anyhow::Result<TestMesh> {
    TestMesh::start_with_demo(backend).await
}

async fn charge(billing: &mut Billing, payer: &str, code: &str) -> anyhow::Result<Charge> {
    Ok(billing
        .create_charge(CreateChargeRequest {
            parent: ORG.into(),
            charge: Some(Charge {
                patient: ROSA.into(),
                unit: CCM.into(),
                provider: OKAFOR.into(),
                payer: payer.into(),
                code: code.into(),
                units: 1,
                diagnoses: vec!["E11.9".into(), "I10".into()],
                service_date: date(service_day()),
                ..Default::default()
            }),
            request_id: uuid::Uuid::new_v4().to_string(),
        })
        .await?
        .into_inner())
}

async fn states(billing: &mut Billing) -> anyhow::Result<Vec<(String, i32)>> {
    let mut all: Vec<(String, i32)> = billing
        .list_claims(ListClaimsRequest {
            parent: ORG.into(),
            page_size: 100,
            ..Default::default()
        })
        .await?
        .into_inner()
        .claims
        .into_iter()
        .map(|c| (c.name, c.state))
        .collect();
    all.sort();
    Ok(all)
}

async fn balance(billing: &mut Billing, charge: &str) -> anyhow::Result<i64> {
    Ok(billing
        .list_ledger_entries(ListLedgerEntriesRequest {
            charge: charge.into(),
        })
        .await?
        .into_inner()
        .balance_cents)
}

/// What pyx12 says of `content` (None when `PM_X12VALID` is unset).
fn pyx12(content: &str) -> Option<String> {
    let validator = std::env::var("PM_X12VALID")
        .ok()
        .filter(|v| !v.is_empty())?;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("claims.x12");
    std::fs::write(&path, content).unwrap();
    let out = std::process::Command::new(validator)
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    Some(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// One service line of a test remittance: code, billed, paid, contractual adjustment.
type Service<'a> = (&'a str, &'a str, &'a str, &'a str);

/// An 835 paying one claim (its number, billed and paid totals, service lines) by EFT with trace
/// `trace`, its SE count computed; `se_delta` breaks the count on purpose.
fn remittance(
    trace: &str,
    number: &str,
    billed: &str,
    paid: &str,
    services: &[Service],
    se_delta: i64,
) -> String {
    let today = Utc::now().format("%Y%m%d").to_string();
    let mut body = vec![
        "ST*835*0001".to_string(),
        format!(
            "BPR*I*{paid}*C*ACH*CCP*01*999999992*DA*123456*1512345678**01*999988880*DA*98765*{today}"
        ),
        format!("TRN*1*{trace}*1512345678"),
        format!("DTM*405*{today}"),
        "N1*PR*MEDICARE PART B".into(),
        "N3*1 PAYER WAY".into(),
        "N4*BALTIMORE*MD*21244".into(),
        "REF*2U*MEDICARE".into(),
        "PER*BL*PROVIDER SERVICES*TE*8005551212".into(),
        "N1*PE*ACME MEDICAL GROUP*XX*1234567893".into(),
        "LX*1".into(),
        format!("CLP*{number}*1*{billed}*{paid}*0*MB*PCN-{number}*11*1"),
        "NM1*QC*1*FICTIVEZ*ROSA****MI*3GJ6VG7PM94".into(),
    ];
    for (code, billed, paid, adjusted) in services {
        body.push(format!("SVC*HC:{code}*{billed}*{paid}**1"));
        if *adjusted != "0" {
            body.push(format!("CAS*CO*45*{adjusted}"));
        }
    }
    let count = body.len() as i64 + 1 + se_delta;
    body.push(format!("SE*{count}*0001"));
    let mut file = vec![
        "ISA*00*          *00*          *ZZ*MEDICARE       *ZZ*ACMEMED        *261205*1200*^*00501*000000777*0*T*:".to_string(),
        format!("GS*HP*MEDICARE*ACMEMED*{today}*1200*777*X*005010X221A1"),
    ];
    file.extend(body);
    file.push("GE*1*777".into());
    file.push("IEA*1*000000777".into());
    file.join("~\n") + "~\n"
}

async fn claims_go_out_as_837p_and_come_back_paid(backend: Backend) -> anyhow::Result<()> {
    let mesh = seeded(backend).await?;
    let mut billing = mesh.billing_as(ADMIN).await?;
    let g0506 = charge(&mut billing, MEDICARE, "G0506").await?;
    let ccm = charge(&mut billing, MEDICARE, "99490").await?;
    let uncovered = charge(&mut billing, AETNA, "99490").await?;
    let assembled = billing
        .assemble_claims(AssembleClaimsRequest { parent: ORG.into() })
        .await?
        .into_inner();
    assert_eq!(assembled.claims.len(), 2, "one claim per payer");
    let medicare = assembled
        .claims
        .iter()
        .find(|c| c.payer == MEDICARE)
        .unwrap()
        .clone();
    let aetna = assembled
        .claims
        .iter()
        .find(|c| c.payer == AETNA)
        .unwrap()
        .clone();
    assert_eq!(
        medicare.state,
        ClaimState::Ready as i32,
        "{:?}",
        medicare.problems
    );
    assert_eq!(medicare.total_cents, 5800 + 6049);
    assert_eq!(medicare.lines.len(), 2);
    assert_eq!(medicare.diagnoses, vec!["E11.9", "I10"]);
    // Both are CCM codes: the demo's routing rules send them to the CCM program's own entity.
    assert_eq!(
        medicare.billing_entity,
        format!("{ORG}/billingEntities/acme-ccm-services")
    );
    assert!(
        medicare
            .lines
            .iter()
            .all(|l| l.routed_by == "rule: chronic care management is billed by the CCM entity")
    );
    // Rosa has no Aetna coverage: the claim waits, saying so.
    assert_eq!(aetna.state, ClaimState::Draft as i32);
    assert!(
        aetna
            .problems
            .iter()
            .any(|p| p.reason == "SUBSCRIBER_MISSING"),
        "{:?}",
        aetna.problems
    );
    // Assembling again makes nothing new: every charge is on a claim.
    let again = billing
        .assemble_claims(AssembleClaimsRequest { parent: ORG.into() })
        .await?
        .into_inner();
    assert!(again.claims.is_empty());
    // The fix: record the coverage in Org, scrub again: READY.
    mesh.org_as(ADMIN)
        .await?
        .create_coverage(CreateCoverageRequest {
            parent: ROSA.into(),
            coverage: Some(Coverage {
                payer: "payers/aetna".into(),
                member_id: "W998877665".into(),
                plan: "Aetna Choice POS II".into(),
                priority: 2,
                effective_period: Some(Interval {
                    start_time: Some(prost_types::Timestamp {
                        seconds: 1_767_225_600,
                        nanos: 0,
                    }),
                    end_time: None,
                }),
                ..Default::default()
            }),
            coverage_id: "aetna".into(),
            request_id: String::new(),
        })
        .await?;
    let fixed = billing
        .scrub_claim(ScrubClaimRequest {
            name: aetna.name.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        fixed.state,
        ClaimState::Ready as i32,
        "{:?}",
        fixed.problems
    );
    assert!(fixed.problems.is_empty());

    // Export the Medicare claim alone: one file for its entity, which pyx12 accepts.
    let exported = billing
        .export_claims(ExportClaimsRequest {
            parent: ORG.into(),
            claim_names: vec![medicare.name.clone()],
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(exported.batches.len(), 1);
    let batch = &exported.batches[0];
    assert_eq!(batch.claim_count, 1);
    let id = medicare.name.rsplit('/').next().unwrap();
    assert!(
        batch.content.contains(&format!("CLM*{id}*118.49*")),
        "{}",
        batch.content
    );
    assert!(
        batch.content.contains("SV1*HC:G0506*58*UN*1***1:2"),
        "{}",
        batch.content
    );
    if let Some(report) = pyx12(&batch.content) {
        assert!(
            report.contains(": OK") && !report.contains("Failure"),
            "{report}"
        );
    } else {
        println!("PM_X12VALID is not set: the 837P file was not run through pyx12");
    }
    // Exporting it again is refused by name, and nothing moves.
    let before = states(&mut billing).await?;
    let refused = billing
        .export_claims(ExportClaimsRequest {
            parent: ORG.into(),
            claim_names: vec![medicare.name.clone(), aetna.name.clone()],
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::FailedPrecondition, "CLAIM_NOT_READY")
    );
    assert!(refused.message().contains(&medicare.name) && !refused.message().contains(&aetna.name));
    assert_eq!(states(&mut billing).await?, before, "nothing exported");
    // The next export takes the other READY claim, with the next control number.
    let second = billing
        .export_claims(ExportClaimsRequest {
            parent: ORG.into(),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(second.batches.len(), 1);
    assert!(second.batches[0].interchange_control_number > batch.interchange_control_number);

    // An 835 with a wrong SE count, or paying more than a line's balance: refused, nothing posted.
    let broken = remittance("EFT-1", id, "58", "40", &[("G0506", "58", "40", "18")], 1);
    let refused = billing
        .import_remittance(ImportRemittanceRequest {
            parent: ORG.into(),
            content: broken,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "X12_SEGMENT_COUNT");
    let greedy = remittance("EFT-1", id, "58", "70", &[("G0506", "58", "70", "0")], 0);
    let refused = billing
        .import_remittance(ImportRemittanceRequest {
            parent: ORG.into(),
            content: greedy,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "PAYMENT_EXCEEDS_BALANCE");
    assert_eq!(
        balance(&mut billing, &g0506.name).await?,
        5800,
        "nothing posted"
    );
    // The real one: G0506 paid 40 with 18 written off by contract; 99490 paid in part.
    let paid = remittance(
        "EFT-1",
        id,
        "118.49",
        "70",
        &[("G0506", "58", "40", "18"), ("99490", "60.49", "30", "0")],
        0,
    );
    let posted = billing
        .import_remittance(ImportRemittanceRequest {
            parent: ORG.into(),
            content: paid.clone(),
        })
        .await?
        .into_inner();
    assert!(!posted.already_imported);
    assert_eq!(posted.claims.len(), 1, "{posted:?}");
    assert_eq!(posted.claims[0].state, ClaimState::PartiallyPaid as i32);
    assert_eq!(posted.claims[0].paid_cents, 7000);
    assert_eq!(posted.claims[0].adjusted_cents, 1800);
    assert_eq!(balance(&mut billing, &g0506.name).await?, 0);
    assert_eq!(balance(&mut billing, &ccm.name).await?, 6049 - 3000);
    // The same remittance again: recognised, nothing posted.
    let again = billing
        .import_remittance(ImportRemittanceRequest {
            parent: ORG.into(),
            content: paid,
        })
        .await?
        .into_inner();
    assert!(again.already_imported);
    assert_eq!(balance(&mut billing, &ccm.name).await?, 6049 - 3000);
    let claim = billing
        .get_claim(GetClaimRequest {
            name: medicare.name.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(claim.state, ClaimState::PartiallyPaid as i32);
    assert_eq!(claim.payer_claim_number, format!("PCN-{id}"));
    assert_eq!(
        claim.history.iter().map(|e| e.state).collect::<Vec<_>>(),
        vec![
            ClaimState::Ready as i32,
            ClaimState::Submitted as i32,
            ClaimState::PartiallyPaid as i32,
            ClaimState::PartiallyPaid as i32
        ]
    );
    // The balance went on to Rosa's Aetna coverage as a secondary claim; this 835 does not balance
    // (99490's unpaid 30.49 has no CAS), so the secondary waits as DRAFT, saying so.
    let secondary = &posted.claims[0].secondary_claim;
    assert_eq!(
        claim.history[3].reason,
        format!(
            "balance to secondary claim {} ({AETNA})",
            secondary.rsplit('/').next().unwrap()
        )
    );
    let secondary = billing
        .get_claim(GetClaimRequest {
            name: secondary.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        (secondary.state, secondary.payer.as_str()),
        (ClaimState::Draft as i32, AETNA)
    );
    assert_eq!(
        secondary
            .problems
            .iter()
            .map(|p| (p.reason.as_str(), p.field.as_str()))
            .collect::<Vec<_>>(),
        vec![("COB_NOT_BALANCED", "claim.prior_payer")]
    );
    let _ = uncovered;
    mesh.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_on_sqlite() -> anyhow::Result<()> {
    claims_go_out_as_837p_and_come_back_paid(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_on_postgres() -> anyhow::Result<()> {
    claims_go_out_as_837p_and_come_back_paid(Backend::Postgres).await
}

/// Care-management time on both backends: a month's minutes become 99490 + 99439 for Rosa (consent
/// and a care plan recorded), priced by the CCM program's schedule; the closed month takes no more
/// entries and is not closed twice (a retry answers the first close); Harold, without a care plan,
/// closes with CARE_PLAN_MISSING and no charge; the current month cannot be closed; bad minutes are
/// refused naming the field.
async fn care_months_close_into_charges(backend: Backend) -> anyhow::Result<()> {
    use chrono::TimeZone;
    let mesh = seeded(backend).await?;
    let mut billing = mesh.billing_as(ADMIN).await?;
    let today = Utc::now()
        .with_timezone(&chrono_tz::America::New_York)
        .date_naive();
    let first_of_this_month = today.with_day(1).unwrap();
    let last_month_day = first_of_this_month - Days::new(20);
    let month = last_month_day.format("%Y-%m").to_string();
    let at = |day: NaiveDate, hour: u32| {
        let local = chrono_tz::America::New_York
            .from_local_datetime(&day.and_hms_opt(hour, 0, 0).unwrap())
            .single()
            .unwrap();
        prost_types::Timestamp {
            seconds: local.timestamp(),
            nanos: 0,
        }
    };
    let entry = |patient: &str, minutes: i32, day: NaiveDate| CreateCareTimeEntryRequest {
        parent: ORG.into(),
        care_time_entry: Some(CareTimeEntry {
            patient: patient.into(),
            unit: CCM.into(),
            staff: "Nurse Kim".into(),
            role: CareStaffRole::ClinicalStaff as i32,
            minutes,
            performed_time: Some(at(day, 10)),
            billing_practitioner: OKAFOR.into(),
            ..Default::default()
        }),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    const HAROLD: &str = "organizations/acme/patients/p-0001";
    for (patient, minutes) in [(ROSA, 25), (ROSA, 20), (HAROLD, 30)] {
        let recorded = billing
            .create_care_time_entry(entry(patient, minutes, last_month_day))
            .await?
            .into_inner();
        assert_eq!(recorded.month, month);
    }
    // Minutes out of range: refused naming the field, nothing written.
    let bad = billing
        .create_care_time_entry(entry(ROSA, 0, last_month_day))
        .await
        .unwrap_err();
    assert_eq!(reason(&bad), "MINUTES_INVALID");
    assert!(
        bad.get_details_bad_request().is_some_and(|b| b
            .field_violations
            .iter()
            .any(|v| v.field == "care_time_entry.minutes")),
        "{bad:?}"
    );
    let list = |patient: &str| ListCareTimeEntriesRequest {
        patient: patient.into(),
        unit: CCM.into(),
        month: month.clone(),
    };
    assert_eq!(
        billing
            .list_care_time_entries(list(ROSA))
            .await?
            .into_inner()
            .care_time_entries
            .len(),
        2
    );
    let close = |patient: &str, request_id: &str| CloseCareMonthRequest {
        patient: patient.into(),
        unit: CCM.into(),
        month: month.clone(),
        program: CareProgram::Ccm as i32,
        request_id: request_id.into(),
        diagnoses: vec!["E11.9".into(), "I10".into()],
    };
    let request = uuid::Uuid::new_v4().to_string();
    let closed = billing
        .close_care_month(close(ROSA, &request))
        .await?
        .into_inner();
    assert_eq!(closed.total_minutes, 45);
    assert_eq!(
        closed
            .codes
            .iter()
            .map(|c| (c.code.as_str(), c.units))
            .collect::<Vec<_>>(),
        vec![("99490", 1), ("99439", 1)],
        "20 minutes for 99490, one more full 20 for 99439 (CMS MLN909188 via ../shared/notes/oracles.md)"
    );
    assert_eq!(
        closed
            .charges
            .iter()
            .map(|c| c.amount_cents)
            .collect::<Vec<_>>(),
        vec![6049, 4593],
        "the CCM program's schedule prices them"
    );
    assert!(
        closed
            .charges
            .iter()
            .all(|c| c.source == ChargeSource::CareTime as i32 && c.payer == MEDICARE)
    );
    // A retry answers the first close; another close is refused; the month takes no more entries.
    let retried = billing
        .close_care_month(close(ROSA, &request))
        .await?
        .into_inner();
    assert_eq!(retried, closed);
    let again = billing
        .close_care_month(close(ROSA, &uuid::Uuid::new_v4().to_string()))
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "MONTH_CLOSED");
    let late = billing
        .create_care_time_entry(entry(ROSA, 15, last_month_day))
        .await
        .unwrap_err();
    assert_eq!(reason(&late), "MONTH_CLOSED");
    let listed = billing
        .list_care_time_entries(list(ROSA))
        .await?
        .into_inner();
    assert_eq!(
        (listed.care_time_entries.len(), listed.closed),
        (2, true),
        "nothing written"
    );
    // Harold has consent but no care plan: the month closes unbilled, saying why.
    let harold = billing
        .close_care_month(close(HAROLD, &uuid::Uuid::new_v4().to_string()))
        .await?
        .into_inner();
    assert_eq!(harold.not_billed_reason, "CARE_PLAN_MISSING");
    assert!(harold.charges.is_empty() && harold.codes.is_empty());
    // This month has not ended.
    let early = billing
        .close_care_month(CloseCareMonthRequest {
            month: today.format("%Y-%m").to_string(),
            ..close(ROSA, &uuid::Uuid::new_v4().to_string())
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&early), "MONTH_NOT_ENDED");
    mesh.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn care_months_on_sqlite() -> anyhow::Result<()> {
    care_months_close_into_charges(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn care_months_on_postgres() -> anyhow::Result<()> {
    care_months_close_into_charges(Backend::Postgres).await
}

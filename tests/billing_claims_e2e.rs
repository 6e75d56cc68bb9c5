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

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

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
    let mesh = TestMesh::start(backend).await?;
    mesh.seed_access().await?;
    pm::demo::seed(&mut mesh.org_as(ADMIN).await?).await?;
    pm::demo::seed_billing(&mut mesh.billing_as(ADMIN).await?).await?;
    Ok(mesh)
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

/// An 835 paying `claims` (claim number, code, billed, paid, contractual adjustment) by EFT with
/// trace `trace`, its SE count computed; `se_delta` breaks it on purpose.
fn remittance(trace: &str, claims: &[(&str, &str, &str, &str, &str)], se_delta: i64) -> String {
    let total: i64 = claims
        .iter()
        .map(|c| {
            pm_billing::domain::money::Cents::parse_decimal(c.3)
                .unwrap()
                .cents()
        })
        .sum();
    let total = pm_billing::domain::money::Cents::new(total).to_x12();
    let today = Utc::now().format("%Y%m%d").to_string();
    let mut body = vec![
        "ST*835*0001".to_string(),
        format!(
            "BPR*I*{total}*C*ACH*CCP*01*999999992*DA*123456*1512345678**01*999988880*DA*98765*{today}"
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
    ];
    for (number, code, billed, paid, adjusted) in claims {
        body.push(format!(
            "CLP*{number}*1*{billed}*{paid}*0*MB*PCN-{number}*11*1"
        ));
        body.push("NM1*QC*1*FICTIVEZ*ROSA****MI*3GJ6VG7PM94".into());
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
    assert_eq!(
        medicare.billing_entity,
        format!("{ORG}/billingEntities/acme-medical-group")
    );
    assert!(
        medicare
            .lines
            .iter()
            .all(|l| l.routed_by == format!("contract {ORG}/contracts/medicare-2026"))
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
    let broken = remittance("EFT-1", &[(id, "G0506", "58", "40", "18")], 1);
    let refused = billing
        .import_remittance(ImportRemittanceRequest {
            parent: ORG.into(),
            content: broken,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "X12_SEGMENT_COUNT");
    let greedy = remittance("EFT-1", &[(id, "G0506", "58", "70", "0")], 0);
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
    let paid = remittance("EFT-1", &[(id, "G0506", "58", "40", "18")], 0);
    let paid = paid.replace(
        &format!("SVC*HC:G0506*58*40**1~\nCAS*CO*45*18~\n"),
        "SVC*HC:G0506*58*40**1~\nCAS*CO*45*18~\nSVC*HC:99490*60.49*30**1~\n",
    );
    let paid = paid
        .replace(
            &format!("CLP*{id}*1*58*40*"),
            &format!("CLP*{id}*1*118.49*70*"),
        )
        .replace("BPR*I*40*", "BPR*I*70*");
    let paid = {
        // One more segment (the second SVC): recount.
        let se = paid
            .lines()
            .filter(|l| {
                !l.starts_with("ISA")
                    && !l.starts_with("GS")
                    && !l.starts_with("GE")
                    && !l.starts_with("IEA")
            })
            .count();
        let start = paid.find("SE*").unwrap();
        let end = paid[start..].find('~').unwrap() + start;
        format!("{}SE*{se}*0001{}", &paid[..start], &paid[end..])
    };
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
            ClaimState::PartiallyPaid as i32
        ]
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

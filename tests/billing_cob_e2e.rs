//! Corrections, voids and secondary claims end to end over mTLS, on SQLite and PostgreSQL, with the
//! demo seeded (Rosa: Medicare primary, Aetna secondary added here):
//! - a Medicare claim goes out, its 835 pays part and leaves coinsurance: a secondary claim to Aetna
//!   is made with Medicare's payment and adjustments (837P loops 2320/2330/2430 that pyx12 accepts),
//!   and Aetna's 835 pays the rest on the same charges: the balance is 0;
//! - an Aetna claim left with a balance has no coverage after it: no secondary, the history says so;
//! - CorrectClaim (after a CorrectCharge: the replacement is billed) and VoidClaim go out with
//!   CLM05-3 7 and 8 and REF*F8; every refusal writes nothing; out of scope is NOT_FOUND.

#![allow(clippy::unwrap_used)]

mod support;

use chrono::{Datelike, Days, NaiveDate, Utc};
use pm_api::billing::billing_service_client::BillingServiceClient;
use pm_api::billing::*;
use pm_api::org::{Coverage, CreateCoverageRequest};
use pm_api::types::{Date, Interval};
use pm_runtime::client::AuthedChannel;
use pm_runtime::config::Backend;
use support::TestMesh;
use support::status::reason;
use tonic::Code;

const ORG: &str = "organizations/acme";
const CCM: &str = "organizations/acme/units/ccm-program";
const ROSA: &str = "organizations/acme/patients/p-0004";
const OKAFOR: &str = "organizations/acme/providers/dr-okafor";
const MEDICARE: &str = "organizations/acme/payers/medicare";
const AETNA: &str = "organizations/acme/payers/aetna";
const ADMIN: &str = "principals/admin";
/// Billing staff of the Lakeside clinic only (made here): Rosa's CCM claims are out of scope.
const LAKESIDE: &str = "principals/lakeside-billing";

type Billing = BillingServiceClient<AuthedChannel>;

fn date(day: NaiveDate) -> Option<Date> {
    Some(Date {
        year: day.year(),
        month: day.month() as i32,
        day: day.day() as i32,
    })
}

fn service_day() -> NaiveDate {
    Utc::now().date_naive() - Days::new(10)
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn id(name: &str) -> &str {
    name.rsplit('/').next().unwrap()
}

async fn seeded(backend: Backend) -> anyhow::Result<TestMesh> {
    let mesh = TestMesh::start_with_demo(backend).await?;
    // Billing Staff of the Lakeside clinic only: the out-of-scope caller.
    let lakeside_clinic = format!("{ORG}/units/lakeside-clinic");
    mesh.bind_user(
        "lakeside-billing",
        ORG,
        pm_api::rbac::Role::BillingStaff,
        &[&lakeside_clinic],
    )
    .await?;
    // Rosa's second coverage: Aetna, after Medicare.
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
            request_id: request_id(),
        })
        .await?
        .into_inner())
}

/// Assembles the open charges: the one claim they make.
async fn assemble_one(billing: &mut Billing) -> anyhow::Result<Claim> {
    let assembled = billing
        .assemble_claims(AssembleClaimsRequest { parent: ORG.into() })
        .await?
        .into_inner();
    assert_eq!(assembled.claims.len(), 1, "{assembled:?}");
    let claim = assembled.claims[0].clone();
    assert_eq!(
        claim.state,
        ClaimState::Ready as i32,
        "{:?}",
        claim.problems
    );
    Ok(claim)
}

/// Exports `claims` alone: the one file, which pyx12 accepts.
async fn export(billing: &mut Billing, claims: &[&str]) -> anyhow::Result<String> {
    let exported = billing
        .export_claims(ExportClaimsRequest {
            parent: ORG.into(),
            claim_names: claims.iter().map(|c| c.to_string()).collect(),
            request_id: request_id(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(exported.batches.len(), 1);
    let content = exported.batches[0].content.clone();
    pyx12_accepts(&content);
    Ok(content)
}

/// pyx12's `x12valid` (named by `PM_X12VALID`) accepts the file; its exit code is unreliable, so
/// its report is read.
fn pyx12_accepts(content: &str) {
    let Some(validator) = std::env::var("PM_X12VALID").ok().filter(|v| !v.is_empty()) else {
        println!("PM_X12VALID is not set: the 837P file was not run through pyx12");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("claims.x12");
    std::fs::write(&path, content).unwrap();
    let out = std::process::Command::new(validator)
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&format!("{}: OK", path.display())) && !report.contains("ERROR"),
        "{report}\n{content}"
    );
}

/// One service line of a test 835: code, billed, paid, CAS segments (`CO*45*18`).
type Service<'a> = (&'a str, &'a str, &'a str, &'a [&'a str]);

/// An 835 from `payer` (name, id) paying one claim, with trace `trace` and the payer's claim
/// number `PCN-{number}`.
fn remittance(
    payer: (&str, &str),
    trace: &str,
    number: &str,
    billed: &str,
    paid: &str,
    services: &[Service],
) -> String {
    let today = Utc::now().format("%Y%m%d").to_string();
    let mut body = vec![
        "ST*835*0001".to_string(),
        format!(
            "BPR*I*{paid}*C*ACH*CCP*01*999999992*DA*123456*1512345678**01*999988880*DA*98765*{today}"
        ),
        format!("TRN*1*{trace}*1512345678"),
        format!("DTM*405*{today}"),
        format!("N1*PR*{}", payer.0),
        "N3*1 PAYER WAY".into(),
        "N4*BALTIMORE*MD*21244".into(),
        format!("REF*2U*{}", payer.1),
        "PER*BL*PROVIDER SERVICES*TE*8005551212".into(),
        "N1*PE*ACME MEDICAL GROUP*XX*1234567893".into(),
        "LX*1".into(),
        format!("CLP*{number}*1*{billed}*{paid}*0*MB*PCN-{number}*11*1"),
        "NM1*QC*1*FICTIVEZ*ROSA****MI*3GJ6VG7PM94".into(),
    ];
    for (code, billed, paid, adjustments) in services {
        body.push(format!("SVC*HC:{code}*{billed}*{paid}**1"));
        for cas in *adjustments {
            body.push(format!("CAS*{cas}"));
        }
    }
    let count = body.len() + 1;
    body.push(format!("SE*{count}*0001"));
    let mut file = vec![
        "ISA*00*          *00*          *ZZ*PAYER          *ZZ*ACMEMED        *261205*1200*^*00501*000000777*0*T*:".to_string(),
        format!("GS*HP*PAYER*ACMEMED*{today}*1200*777*X*005010X221A1"),
    ];
    file.extend(body);
    file.push("GE*1*777".into());
    file.push("IEA*1*000000777".into());
    file.join("~\n") + "~\n"
}

/// A 277CA from Medicare accepting claim `number` (billed `amount`) for adjudication, with the
/// payer's claim number `pcn` (REF*1K).
fn accepted_277ca(number: &str, amount: &str, pcn: &str) -> String {
    let today = Utc::now().format("%Y%m%d").to_string();
    let day = service_day().format("%Y%m%d").to_string();
    let mut body = vec![
        "ST*277*0001*005010X214".to_string(),
        format!("BHT*0085*08*BATCH0042*{today}*1400*TH"),
        "HL*1**20*1".into(),
        "NM1*PR*2*MEDICARE PART B*****PI*MEDICARE".into(),
        "TRN*1*ACK0001".into(),
        format!("DTP*050*D8*{today}"),
        format!("DTP*009*D8*{today}"),
        "HL*2*1*21*1".into(),
        "NM1*41*2*ACME CCM SERVICES*****46*ACMEMED".into(),
        "TRN*2*BATCH0042".into(),
        format!("STC*A1:19:PR*{today}*WQ*{amount}"),
        "QTY*90*1".into(),
        format!("AMT*YU*{amount}"),
        "HL*3*2*19*1".into(),
        "NM1*85*2*ACME CCM SERVICES*****XX*1234567893".into(),
        "TRN*1*0".into(),
        format!("STC*A1:19:85**WQ*{amount}"),
        "QTY*QA*1".into(),
        format!("AMT*YU*{amount}"),
        "HL*4*3*PT".into(),
        "NM1*QC*1*FICTIVEZ*ROSA****MI*3GJ6VG7PM94".into(),
        format!("TRN*2*{number}"),
        format!("STC*A2:20:PR*{today}*WQ*{amount}"),
        format!("REF*1K*{pcn}"),
        format!("DTP*472*RD8*{day}-{day}"),
    ];
    let count = body.len() + 1;
    body.push(format!("SE*{count}*0001"));
    let mut file = vec![
        "ISA*00*          *00*          *ZZ*CLEARINGHOUSE  *ZZ*ACMEMED        *261205*1400*^*00501*000000078*0*T*:".to_string(),
        format!("GS*HN*CLEARINGHOUSE*ACMEMED*{today}*1400*78*X*005010X214"),
    ];
    file.extend(body);
    file.push("GE*1*78".into());
    file.push("IEA*1*000000078".into());
    file.join("~\n") + "~\n"
}

async fn import(
    billing: &mut Billing,
    content: String,
) -> anyhow::Result<ImportRemittanceResponse> {
    Ok(billing
        .import_remittance(ImportRemittanceRequest {
            parent: ORG.into(),
            content,
        })
        .await?
        .into_inner())
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

async fn get(billing: &mut Billing, name: &str) -> anyhow::Result<Claim> {
    Ok(billing
        .get_claim(GetClaimRequest { name: name.into() })
        .await?
        .into_inner())
}

/// Every claim of the organization with its state and history length: what a refusal must leave
/// as it was.
async fn snapshot(billing: &mut Billing) -> anyhow::Result<Vec<(String, i32, usize)>> {
    let mut all: Vec<(String, i32, usize)> = billing
        .list_claims(ListClaimsRequest {
            parent: ORG.into(),
            page_size: 100,
            ..Default::default()
        })
        .await?
        .into_inner()
        .claims
        .into_iter()
        .map(|c| (c.name, c.state, c.history.len()))
        .collect();
    all.sort();
    Ok(all)
}

fn correct(claim: &str, request: &str) -> CorrectClaimRequest {
    CorrectClaimRequest {
        claim: claim.into(),
        request_id: request.into(),
    }
}

fn void(claim: &str, request: &str) -> VoidClaimRequest {
    VoidClaimRequest {
        claim: claim.into(),
        reason: "billed to the wrong payer".into(),
        request_id: request.into(),
    }
}

/// The primary pays part, the secondary pays the rest: balance 0.
async fn secondary_pays_the_rest(mesh: &TestMesh) -> anyhow::Result<Claim> {
    let mut billing = mesh.billing_as(ADMIN).await?;
    let g0506 = charge(&mut billing, MEDICARE, "G0506").await?;
    let ccm = charge(&mut billing, MEDICARE, "99490").await?;
    let primary = assemble_one(&mut billing).await?;
    assert_eq!(primary.payer_sequence, PayerSequence::Primary as i32);
    let file = export(&mut billing, &[&primary.name]).await?;
    assert!(file.contains("SBR*P*18"), "{file}");
    // Medicare: 40 of 58 (18 written off by contract), 30 of 60.49 (30.49 coinsurance).
    let number = id(&primary.name);
    let posted = import(
        &mut billing,
        remittance(
            ("MEDICARE PART B", "MEDICARE"),
            "EFT-1",
            number,
            "118.49",
            "70",
            &[
                ("G0506", "58", "40", &["CO*45*18"]),
                ("99490", "60.49", "30", &["PR*2*30.49"]),
            ],
        ),
    )
    .await?;
    assert_eq!(posted.claims.len(), 1, "{posted:?}");
    let posted = &posted.claims[0];
    assert_eq!(
        (posted.state, posted.paid_cents, posted.adjusted_cents),
        (ClaimState::PartiallyPaid as i32, 7000, 1800)
    );
    assert_eq!(posted.patient_responsibility_cents, 3049);
    assert_eq!(balance(&mut billing, &g0506.name).await?, 0);
    assert_eq!(balance(&mut billing, &ccm.name).await?, 3049);
    // The balance went on to Aetna, scrubbed READY.
    let secondary = get(&mut billing, &posted.secondary_claim).await?;
    assert_eq!(
        secondary.state,
        ClaimState::Ready as i32,
        "{:?}",
        secondary.problems
    );
    assert_eq!(secondary.payer, AETNA);
    assert_eq!(secondary.payer_sequence, PayerSequence::Secondary as i32);
    assert_eq!(secondary.prior_claim, primary.name);
    assert_eq!(secondary.total_cents, 11_849);
    assert_eq!(
        secondary.lines, primary.lines,
        "the same lines, on the same charges"
    );
    let primary_now = get(&mut billing, &primary.name).await?;
    let last = primary_now.history.last().unwrap();
    assert_eq!(
        last.reason,
        format!(
            "balance to secondary claim {} ({AETNA})",
            id(&secondary.name)
        )
    );
    // Its 837P carries Medicare's payment and adjustments.
    let file = export(&mut billing, &[&secondary.name]).await?;
    let sid = id(&secondary.name);
    let from = file.find(&format!("CLM*{sid}*118.49*")).unwrap();
    let claim_part = &file[from..];
    for expected in [
        "SBR*P*18*******MB~",
        "AMT*D*70~",
        "OI***Y***Y~",
        "NM1*IL*1*FICTIVEZ*ROSA****MI*3GJ6-VG7-PM94~",
        "NM1*PR*2*MEDICARE PART B*****PI*MEDICARE~",
        "SVD*MEDICARE*40*HC:G0506**1~",
        "CAS*CO*45*18~",
        "SVD*MEDICARE*30*HC:99490**1~",
        "CAS*PR*2*30.49~",
        "DTP*573*D8*",
    ] {
        assert!(claim_part.contains(expected), "{expected} in\n{file}");
    }
    let subscriber_loop = &file[..from];
    assert!(
        subscriber_loop.contains("SBR*S*18*******CI~"),
        "the secondary's own SBR01 is S:\n{file}"
    );
    // Aetna pays the coinsurance (OA-23: Medicare's part, not posted again): nothing is left.
    let paid = import(
        &mut billing,
        remittance(
            ("AETNA", "60054"),
            "EFT-2",
            sid,
            "118.49",
            "30.49",
            &[
                ("G0506", "58", "0", &["OA*23*58"]),
                ("99490", "60.49", "30.49", &["OA*23*30"]),
            ],
        ),
    )
    .await?;
    assert_eq!(paid.claims.len(), 1, "{paid:?}");
    assert_eq!(paid.claims[0].state, ClaimState::Paid as i32);
    assert!(paid.claims[0].secondary_claim.is_empty());
    assert_eq!(balance(&mut billing, &g0506.name).await?, 0);
    assert_eq!(balance(&mut billing, &ccm.name).await?, 0);
    let secondary = get(&mut billing, &secondary.name).await?;
    assert_eq!(
        secondary
            .history
            .iter()
            .map(|e| e.state)
            .collect::<Vec<_>>(),
        vec![
            ClaimState::Draft as i32,
            ClaimState::Ready as i32,
            ClaimState::Submitted as i32,
            ClaimState::Paid as i32
        ]
    );
    get(&mut billing, &primary.name).await
}

/// A claim to Rosa's last coverage left with a balance: no secondary, and the history says so.
async fn no_coverage_left(mesh: &TestMesh) -> anyhow::Result<()> {
    let mut billing = mesh.billing_as(ADMIN).await?;
    let ccm = charge(&mut billing, AETNA, "99490").await?;
    let claim = assemble_one(&mut billing).await?;
    export(&mut billing, &[&claim.name]).await?;
    let before = snapshot(&mut billing).await?.len();
    let posted = import(
        &mut billing,
        remittance(
            ("AETNA", "60054"),
            "EFT-3",
            id(&claim.name),
            "60.49",
            "50",
            &[("99490", "60.49", "50", &["PR*1*10.49"])],
        ),
    )
    .await?;
    assert_eq!(posted.claims[0].state, ClaimState::PartiallyPaid as i32);
    assert!(posted.claims[0].secondary_claim.is_empty());
    assert_eq!(snapshot(&mut billing).await?.len(), before, "no claim made");
    assert_eq!(balance(&mut billing, &ccm.name).await?, 1049);
    let claim = get(&mut billing, &claim.name).await?;
    assert_eq!(
        claim.history.last().unwrap().reason,
        "balance left to the patient: no other coverage"
    );
    Ok(())
}

/// CorrectClaim and VoidClaim, their refusals (nothing written), retries, and scope.
async fn corrections_and_voids(mesh: &TestMesh, paid_primary: Claim) -> anyhow::Result<()> {
    let mut billing = mesh.billing_as(ADMIN).await?;
    let first = charge(&mut billing, MEDICARE, "99490").await?;
    let claim = assemble_one(&mut billing).await?;
    // Never submitted: refused, nothing written.
    let before = snapshot(&mut billing).await?;
    let refused = billing
        .correct_claim(correct(&claim.name, &request_id()))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::FailedPrecondition, "FREQUENCY_NOT_SUBMITTED")
    );
    assert_eq!(snapshot(&mut billing).await?, before, "nothing written");
    export(&mut billing, &[&claim.name]).await?;
    // Submitted, but the payer's claim number is not known yet: refused, nothing written.
    let before = snapshot(&mut billing).await?;
    let refused = billing
        .void_claim(void(&claim.name, &request_id()))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::FailedPrecondition, "PAYER_CLAIM_NUMBER_MISSING")
    );
    assert_eq!(snapshot(&mut billing).await?, before, "nothing written");
    // Paid in full (PCN known, nothing left: no secondary).
    let number = id(&claim.name);
    let posted = import(
        &mut billing,
        remittance(
            ("MEDICARE PART B", "MEDICARE"),
            "EFT-4",
            number,
            "60.49",
            "60.49",
            &[("99490", "60.49", "60.49", &[])],
        ),
    )
    .await?;
    assert_eq!(posted.claims[0].state, ClaimState::Paid as i32);
    // The charge is corrected: the correction bills its replacement.
    let corrected = billing
        .correct_charge(CorrectChargeRequest {
            name: first.name.clone(),
            correction: Some(ChargeLine {
                code: "G0506".into(),
                units: 1,
                diagnoses: vec!["E11.9".into()],
                ..Default::default()
            }),
            reason: "wrong code".into(),
            request_id: request_id(),
        })
        .await?
        .into_inner();
    let replacement = corrected.correction.unwrap();
    // Out of scope answers exactly like a claim that does not exist (the shared layer's refusal,
    // "permission denied (or it might not exist)"): code, message and details, the name aside.
    let mut outsider = mesh.billing_as(LAKESIDE).await?;
    let missing = format!("{ORG}/claims/00000000-0000-0000-0000-000000000000");
    let before = snapshot(&mut billing).await?;
    let mut answers = Vec::new();
    for name in [claim.name.as_str(), missing.as_str()] {
        let corrected = outsider
            .correct_claim(correct(name, &request_id()))
            .await
            .unwrap_err();
        let voided = outsider
            .void_claim(void(name, &request_id()))
            .await
            .unwrap_err();
        for refused in [corrected, voided] {
            assert!(
                matches!(refused.code(), Code::NotFound | Code::PermissionDenied),
                "{refused:?}"
            );
            answers.push((
                refused.code(),
                refused.message().replace(name, "NAME"),
                String::from_utf8_lossy(refused.details()).replace(name, "NAME"),
            ));
        }
    }
    assert_eq!(
        answers[..2],
        answers[2..],
        "out of scope is told apart from missing"
    );
    assert_eq!(snapshot(&mut billing).await?, before, "nothing written");
    let request = request_id();
    let answer = billing
        .correct_claim(correct(&claim.name, &request))
        .await?
        .into_inner();
    let (original, correction) = (answer.original.unwrap(), answer.correction.unwrap());
    assert_eq!(original.state, ClaimState::Replaced as i32);
    assert!(
        original
            .history
            .last()
            .unwrap()
            .reason
            .contains(id(&correction.name))
    );
    assert_eq!(
        (
            correction.frequency_code,
            correction.original_claim.as_str(),
            correction.payer_claim_number.as_str(),
            correction.state,
        ),
        (
            7,
            claim.name.as_str(),
            format!("PCN-{number}").as_str(),
            ClaimState::Ready as i32
        ),
        "{:?}",
        correction.problems
    );
    assert_eq!(correction.lines.len(), 1);
    assert_eq!(correction.lines[0].charge, replacement.name);
    assert_eq!(
        (correction.lines[0].code.as_str(), correction.total_cents),
        ("G0506", 5800)
    );
    // A retry answers the first call.
    let again = billing
        .correct_claim(correct(&claim.name, &request))
        .await?
        .into_inner();
    assert_eq!(again.correction.unwrap().name, correction.name);
    // A replaced claim is neither corrected nor voided again.
    let before = snapshot(&mut billing).await?;
    for refused in [
        billing
            .correct_claim(correct(&claim.name, &request_id()))
            .await
            .unwrap_err(),
        billing
            .void_claim(void(&claim.name, &request_id()))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(
            (refused.code(), reason(&refused).as_str()),
            (Code::FailedPrecondition, "CLAIM_STATE_INVALID")
        );
    }
    assert_eq!(snapshot(&mut billing).await?, before, "nothing written");
    // The next export sends it: frequency 7, REF*F8 with the payer's number.
    let file = export(&mut billing, &[&correction.name]).await?;
    assert!(
        file.contains(&format!(
            "CLM*{}*58***11:B:7*Y*A*Y*Y~\nREF*F8*PCN-{number}~",
            id(&correction.name)
        )),
        "{file}"
    );

    // Void the primary of the COB flow (paid in part, its payer's number known).
    let answer = billing
        .void_claim(void(&paid_primary.name, &request_id()))
        .await?
        .into_inner();
    let (original, voided) = (answer.original.unwrap(), answer.void_claim.unwrap());
    assert_eq!(original.state, ClaimState::Void as i32);
    assert!(
        original
            .history
            .last()
            .unwrap()
            .reason
            .ends_with(": billed to the wrong payer")
    );
    assert_eq!(
        (voided.frequency_code, voided.state),
        (8, ClaimState::Ready as i32),
        "{:?}",
        voided.problems
    );
    let pid = id(&paid_primary.name);
    let file = export(&mut billing, &[&voided.name]).await?;
    assert!(
        file.contains(&format!(
            "CLM*{}*118.49***11:B:8*Y*A*Y*Y~\nREF*F8*PCN-{pid}~",
            id(&voided.name)
        )),
        "{file}"
    );
    // A void is not voided again, nor is the claim it voided.
    let before = snapshot(&mut billing).await?;
    for name in [&voided.name, &paid_primary.name] {
        let refused = billing
            .void_claim(void(name, &request_id()))
            .await
            .unwrap_err();
        assert_eq!(reason(&refused), "CLAIM_STATE_INVALID", "{name}");
    }
    assert_eq!(snapshot(&mut billing).await?, before, "nothing written");
    // The payer's number from a 277CA is enough: an ACCEPTED claim is voided with it.
    let third = charge(&mut billing, MEDICARE, "99490").await?;
    let accepted = assemble_one(&mut billing).await?;
    export(&mut billing, &[&accepted.name]).await?;
    let acked = billing
        .import_acknowledgment(ImportAcknowledgmentRequest {
            parent: ORG.into(),
            content: accepted_277ca(&id(&accepted.name).to_uppercase(), "60.49", "ICN-77"),
        })
        .await?
        .into_inner();
    assert_eq!(acked.claims.len(), 1, "{acked:?}");
    assert_eq!(acked.claims[0].state, ClaimState::Accepted as i32);
    let accepted = get(&mut billing, &accepted.name).await?;
    assert_eq!(accepted.payer_claim_number, "ICN-77");
    let answer = billing
        .void_claim(void(&accepted.name, &request_id()))
        .await?
        .into_inner();
    let voided_too = answer.void_claim.unwrap();
    assert_eq!(
        voided_too.lines[0].charge, third.name,
        "the void bills the same charge"
    );
    let file = export(&mut billing, &[&voided_too.name]).await?;
    assert!(
        file.contains(&format!(
            "CLM*{}*60.49***11:B:8*Y*A*Y*Y~\nREF*F8*ICN-77~",
            id(&voided_too.name)
        )),
        "{file}"
    );
    let before = snapshot(&mut billing).await?;
    // A void needs its reason (after authorization).
    let refused = billing
        .void_claim(VoidClaimRequest {
            reason: " ".into(),
            ..void(&voided.name, &request_id())
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(support::status::fields(&refused), vec!["reason"]);
    let refused = billing
        .void_claim(VoidClaimRequest {
            reason: "wrong\u{1b}payer".into(),
            ..void(&voided.name, &request_id())
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "TEXT_INVALID");
    assert_eq!(snapshot(&mut billing).await?, before, "nothing written");
    Ok(())
}

async fn cob_corrections_and_voids(backend: Backend) -> anyhow::Result<()> {
    let mesh = seeded(backend).await?;
    let primary = secondary_pays_the_rest(&mesh).await?;
    no_coverage_left(&mesh).await?;
    corrections_and_voids(&mesh, primary).await?;
    mesh.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cob_on_sqlite() -> anyhow::Result<()> {
    cob_corrections_and_voids(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cob_on_postgres() -> anyhow::Result<()> {
    cob_corrections_and_voids(Backend::Postgres).await
}

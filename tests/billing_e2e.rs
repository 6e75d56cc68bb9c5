//! The Billing service end to end: a real mesh (Org, RBAC, Scheduling, Billing) over mTLS gRPC, on
//! SQLite and on PostgreSQL, seeded with the demo. A completed encounter becomes priced charges
//! (Billing follows Scheduling's stream with its own certificate), exactly once across a crash;
//! prices are explained; corrections reverse and re-charge through the append-only ledger; bad
//! configuration is refused naming the field with nothing written; charges are cut to the caller's
//! units.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use pm_api::billing::billing_service_client::BillingServiceClient;
use pm_api::billing::*;
use pm_api::scheduling::*;
use pm_api::types::{Date, Interval};
use pm_runtime::client::AuthedChannel;
use pm_runtime::config::Backend;
use support::TestMesh;
use support::status::{fields, reason};
use support::time::{at, next_monday, ts};
use tonic::Code;

const ORG: &str = "organizations/acme";
const CCM: &str = "organizations/acme/units/ccm-program";
const ROSA: &str = "organizations/acme/patients/p-0004";
const OKAFOR: &str = "organizations/acme/providers/dr-okafor";
const NORTH_MAIN: &str = "organizations/acme/locations/north-main";
const ENROLLMENT_VISIT: &str = "organizations/acme/units/ccm-program/visitTypes/ccm-enrollment";
const MEDICARE: &str = "organizations/acme/payers/medicare";
const ADMIN: &str = "principals/admin";
const JORDAN: &str = "principals/jordan-billing";
const CASEY: &str = "principals/casey-ccm";

type Billing = BillingServiceClient<AuthedChannel>;

fn date(day: chrono::NaiveDate) -> Option<Date> {
    use chrono::Datelike;
    Some(Date {
        year: day.year(),
        month: day.month() as i32,
        day: day.day() as i32,
    })
}

/// A mesh with the whole demo (access, Org, Scheduling, Billing) seeded.
async fn seeded(backend: Backend) -> anyhow::Result<TestMesh> {
    let mesh = TestMesh::start_with_demo(backend).await?;
    pm::demo::seed_scheduling(&mut mesh.scheduling_as(ADMIN).await?).await?;
    Ok(mesh)
}

/// Books Rosa's CCM enrollment visit at `hour` New York time next Monday and completes it with two
/// service lines; returns the encounter's name.
async fn complete_visit(mesh: &TestMesh, hour: u32) -> anyhow::Result<String> {
    let mut scheduling = mesh.scheduling_as(ADMIN).await?;
    let start = at(next_monday(), hour, 0);
    let booked = scheduling
        .book_appointment(BookAppointmentRequest {
            parent: ORG.into(),
            appointment: Some(Appointment {
                unit: CCM.into(),
                patient: ROSA.into(),
                provider: OKAFOR.into(),
                location: NORTH_MAIN.into(),
                visit_type: ENROLLMENT_VISIT.into(),
                interval: Some(Interval {
                    start_time: Some(ts(start)),
                    end_time: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    let line = |code: &str, pointers: &[i32]| ServiceLine {
        code: code.into(),
        modifiers: Vec::new(),
        units: 1,
        diagnosis_pointers: pointers.to_vec(),
        place_of_service: String::new(),
    };
    let completed = scheduling
        .complete_appointment(CompleteAppointmentRequest {
            name: booked.name,
            diagnoses: vec!["E11.9".into(), "I10".into()],
            service_lines: vec![line("G0506", &[1, 2]), line("99490", &[2])],
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(completed.encounter.unwrap().name)
}

/// The charges of an encounter once Billing has made `count` of them (it follows the stream).
async fn charges_of(
    billing: &mut Billing,
    encounter: &str,
    count: usize,
) -> anyhow::Result<Vec<Charge>> {
    for _ in 0..200 {
        let page = billing
            .list_charges(ListChargesRequest {
                parent: ORG.into(),
                encounter: encounter.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        if page.charges.len() >= count {
            let mut charges = page.charges;
            charges.sort_by_key(|c| c.line_number);
            return Ok(charges);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("Billing made no {count} charges of {encounter} within 20 s")
}

async fn encounters_become_charges_exactly_once(backend: Backend) -> anyhow::Result<()> {
    let mesh = seeded(backend).await?;
    let encounter = complete_visit(&mesh, 9).await?;
    let mut billing = mesh.billing_as(ADMIN).await?;
    let charges = charges_of(&mut billing, &encounter, 2).await?;
    assert_eq!(charges.len(), 2);
    // G0506: the CCM program's schedule (a program ranks above the organization; Medicare's
    // payer schedule has no entry for it). 99490 likewise.
    let (g0506, ccm) = (&charges[0], &charges[1]);
    assert_eq!((g0506.code.as_str(), g0506.amount_cents), ("G0506", 5800));
    assert_eq!((ccm.code.as_str(), ccm.amount_cents), ("99490", 6049));
    assert_eq!(
        g0506.fee_schedule_version,
        format!("{ORG}/feeSchedules/ccm-2026/versions/v2026")
    );
    assert_eq!(g0506.state, ChargeState::Open as i32);
    assert_eq!(g0506.diagnoses, vec!["E11.9", "I10"]);
    assert_eq!(ccm.diagnoses, vec!["I10"]);
    assert_eq!(g0506.payer, MEDICARE);
    assert_eq!(g0506.service_date, date(next_monday()));
    let profile = g0506.profile.clone().unwrap();
    assert_eq!(
        profile.billing_entity,
        format!("{ORG}/billingEntities/acme-medical-group")
    );
    assert_eq!(
        profile.billing_entity_source,
        format!("{ORG}/units/north-clinic"),
        "the program inherits its billing entity from the clinic: the snapshot says so"
    );
    assert_eq!(
        g0506.billing_entity,
        format!("{ORG}/billingEntities/acme-medical-group")
    );
    // The ledger holds the charge, and the balance is its sum.
    let ledger = billing
        .list_ledger_entries(ListLedgerEntriesRequest {
            charge: g0506.name.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(ledger.entries.len(), 1);
    assert_eq!(ledger.balance_cents, 5800);

    // A crash, a restart: the follower resumes from its stored cursor and makes nothing twice;
    // a visit completed after the restart is charged once too.
    let mesh = mesh.kill_and_restart().await?;
    let later = complete_visit(&mesh, 10).await?;
    let mut billing = mesh.billing_as(ADMIN).await?;
    assert_eq!(charges_of(&mut billing, &later, 2).await?.len(), 2);
    let again = charges_of(&mut billing, &encounter, 2).await?;
    assert_eq!(
        again.iter().map(|c| &c.name).collect::<Vec<_>>(),
        charges.iter().map(|c| &c.name).collect::<Vec<_>>(),
        "the first encounter still has exactly its two charges"
    );
    let all = billing
        .list_charges(ListChargesRequest {
            parent: ORG.into(),
            page_size: 100,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(all.charges.len(), 4, "two encounters, two lines each");
    mesh.stop().await
}

async fn prices_are_explained_and_charges_corrected(backend: Backend) -> anyhow::Result<()> {
    let mesh = seeded(backend).await?;
    let mut billing = mesh.billing_as(ADMIN).await?;
    let explained = billing
        .explain_price(ExplainPriceRequest {
            unit: CCM.into(),
            code: "99490".into(),
            modifiers: Vec::new(),
            service_date: date(next_monday()),
            payer: MEDICARE.into(),
        })
        .await?
        .into_inner();
    assert!(explained.priced);
    assert_eq!(explained.amount_cents, 6049);
    let outcome = |schedule: &str| {
        explained
            .candidates
            .iter()
            .find(|c| c.fee_schedule == format!("{ORG}/feeSchedules/{schedule}"))
            .map(|c| PriceOutcome::try_from(c.outcome).unwrap())
    };
    assert_eq!(outcome("ccm-2026"), Some(PriceOutcome::Chosen));
    assert_eq!(
        outcome("medicare-2026"),
        Some(PriceOutcome::NoEntry),
        "the payer level is asked first"
    );
    assert_eq!(outcome("standard-2026"), Some(PriceOutcome::Outranked));
    assert_eq!(
        outcome("cardiology-2026"),
        Some(PriceOutcome::NotApplicable)
    );
    assert_eq!(
        explained.candidates.len(),
        5,
        "every schedule of the organization, once"
    );

    // A charge entered by hand, then corrected: the original is reversed in the ledger, the
    // correction priced anew; a retry answers the same; a second correction of the original is refused.
    let charge = billing
        .create_charge(CreateChargeRequest {
            parent: ORG.into(),
            charge: Some(Charge {
                patient: ROSA.into(),
                unit: CCM.into(),
                provider: OKAFOR.into(),
                payer: MEDICARE.into(),
                code: "99490".into(),
                units: 1,
                diagnoses: vec!["E11.9".into()],
                service_date: date(next_monday()),
                ..Default::default()
            }),
            request_id: uuid::Uuid::new_v4().to_string(),
        })
        .await?
        .into_inner();
    assert_eq!(charge.amount_cents, 6049);
    let correct = CorrectChargeRequest {
        name: charge.name.clone(),
        correction: Some(ChargeLine {
            code: "99439".into(),
            units: 2,
            diagnoses: vec!["E11.9".into()],
            ..Default::default()
        }),
        reason: "second 20 minutes were documented, wrong code".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let corrected = billing.correct_charge(correct.clone()).await?.into_inner();
    let reversed = corrected.reversed.unwrap();
    let replacement = corrected.correction.unwrap();
    assert_eq!(reversed.state, ChargeState::Reversed as i32);
    assert_eq!(reversed.related_charge, replacement.name);
    assert_eq!(replacement.related_charge, charge.name);
    assert_eq!(replacement.amount_cents, 2 * 4593);
    let retried = billing.correct_charge(correct.clone()).await?.into_inner();
    assert_eq!(
        retried.correction.unwrap().name,
        replacement.name,
        "a retry is answered, not redone"
    );
    let ledger = billing
        .list_ledger_entries(ListLedgerEntriesRequest {
            charge: charge.name.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        ledger
            .entries
            .iter()
            .map(|e| e.amount_cents)
            .collect::<Vec<_>>(),
        vec![6049, -6049]
    );
    assert_eq!(ledger.balance_cents, 0);
    let again = billing
        .correct_charge(CorrectChargeRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            ..correct
        })
        .await
        .unwrap_err();
    assert_eq!(
        (again.code(), reason(&again).as_str()),
        (Code::FailedPrecondition, "CHARGE_REVERSED")
    );
    mesh.stop().await
}

async fn version_count(billing: &mut Billing, schedule: &str) -> anyhow::Result<usize> {
    Ok(billing
        .list_fee_schedule_versions(ListFeeScheduleVersionsRequest {
            parent: format!("{ORG}/feeSchedules/{schedule}"),
            ..Default::default()
        })
        .await?
        .into_inner()
        .fee_schedule_versions
        .len())
}

async fn bad_input_is_refused_naming_the_field(backend: Backend) -> anyhow::Result<()> {
    let mesh = seeded(backend).await?;
    let mut billing = mesh.billing_as(ADMIN).await?;
    let version = |csv: &str, from: (i32, i32)| CreateFeeScheduleVersionRequest {
        parent: format!("{ORG}/feeSchedules/standard-2026"),
        fee_schedule_version: Some(FeeScheduleVersion {
            effective_from: Some(Date {
                year: from.0,
                month: from.1,
                day: 1,
            }),
            ..Default::default()
        }),
        csv: csv.into(),
        ..Default::default()
    };
    // A version overlapping 2026 (open-ended from January).
    let overlap = billing
        .create_fee_schedule_version(version(
            "code,modifiers,amount,description\n99213,,99.00,x\n",
            (2026, 6),
        ))
        .await
        .unwrap_err();
    assert_eq!(overlap.code(), Code::FailedPrecondition);
    assert_eq!(reason(&overlap), "FEE_SCHEDULE_VERSIONS_OVERLAP");
    // A bad amount on the third line, a negative one on the fourth: both named.
    let csv = "code,modifiers,amount,description\n99213,,95.00,ok\n99214,,12.345,x\n99215,,-3,x\n";
    let bad_rows = billing
        .create_fee_schedule_version(version(csv, (2030, 1)))
        .await
        .unwrap_err();
    assert_eq!(bad_rows.code(), Code::InvalidArgument);
    let named = fields(&bad_rows);
    assert!(
        named
            .iter()
            .any(|f| f.contains("line 3") && f.contains("amount")),
        "{named:?}"
    );
    assert!(
        named
            .iter()
            .any(|f| f.contains("line 4") && f.contains("amount")),
        "{named:?}"
    );
    assert_eq!(
        version_count(&mut billing, "standard-2026").await?,
        1,
        "nothing written"
    );
    // A bad procedure code and a fractional... amount on the wire.
    let bad_code = billing
        .create_fee_schedule_version(CreateFeeScheduleVersionRequest {
            csv: String::new(),
            fee_schedule_version: Some(FeeScheduleVersion {
                effective_from: Some(Date {
                    year: 2030,
                    month: 1,
                    day: 1,
                }),
                entries: vec![FeeEntry {
                    code: "9921".into(),
                    amount_cents: 100,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..version("", (2030, 1))
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&bad_code), "PROCEDURE_CODE_INVALID");
    assert_eq!(
        fields(&bad_code),
        vec!["fee_schedule_version.entries[0].code"]
    );
    // An NPI whose check digit is wrong.
    let entity = billing
        .get_billing_entity(GetBillingEntityRequest {
            name: format!("{ORG}/billingEntities/acme-medical-group"),
        })
        .await?
        .into_inner();
    let bad_npi = billing
        .create_billing_entity(CreateBillingEntityRequest {
            parent: ORG.into(),
            billing_entity: Some(BillingEntity {
                npi: "1234567890".into(),
                ..entity
            }),
            billing_entity_id: "second-group".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&bad_npi), "NPI_CHECK_DIGIT");
    assert_eq!(fields(&bad_npi), vec!["billing_entity.npi"]);
    let missing = billing
        .get_billing_entity(GetBillingEntityRequest {
            name: format!("{ORG}/billingEntities/second-group"),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "nothing written");
    // A charge whose diagnosis is malformed.
    let bad_charge = billing
        .create_charge(CreateChargeRequest {
            parent: ORG.into(),
            charge: Some(Charge {
                patient: ROSA.into(),
                unit: CCM.into(),
                provider: OKAFOR.into(),
                code: "99490".into(),
                units: 1,
                diagnoses: vec!["11.9".into()],
                service_date: date(next_monday()),
                ..Default::default()
            }),
            request_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&bad_charge), "DIAGNOSIS_CODE_INVALID");
    assert_eq!(fields(&bad_charge), vec!["charge.diagnoses[0]"]);
    let none = billing
        .list_charges(ListChargesRequest {
            parent: ORG.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(none.charges.is_empty(), "nothing written");
    mesh.stop().await
}

async fn charges_are_cut_to_the_callers_units(backend: Backend) -> anyhow::Result<()> {
    let mesh = seeded(backend).await?;
    let encounter = complete_visit(&mesh, 11).await?;
    let mut admin = mesh.billing_as(ADMIN).await?;
    let charges = charges_of(&mut admin, &encounter, 2).await?;
    // Jordan bills for the two clinics: the CCM program sits under the north clinic.
    let mut jordan = mesh.billing_as(JORDAN).await?;
    assert_eq!(charges_of(&mut jordan, &encounter, 2).await?.len(), 2);
    // Casey manages the CCM program but holds no billing permission: refused, as for nothing.
    let mut casey = mesh.billing_as(CASEY).await?;
    let refused = casey
        .get_charge(GetChargeRequest {
            name: charges[0].name.clone(),
        })
        .await
        .unwrap_err();
    let nothing = casey
        .get_charge(GetChargeRequest {
            name: format!("{ORG}/charges/does-not-exist"),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), nothing.code());
    assert_eq!(
        refused.message().replace(&charges[0].name, "X"),
        nothing
            .message()
            .replace(&format!("{ORG}/charges/does-not-exist"), "X")
    );
    // Revenue: the administrator's clinic total holds its CCM program's; the program's manager sees
    // the program alone, and is refused a unit outside it exactly like a missing one.
    let by_unit = |roll_up_units: bool| ReportRevenueRequest {
        parent: ORG.into(),
        group_by: vec![RevenueDimension::Unit as i32],
        roll_up_units,
        ..Default::default()
    };
    let rolled = admin.report_revenue(by_unit(true)).await?.into_inner();
    let charged = |rows: &[RevenueRow], unit: &str| {
        rows.iter()
            .find(|r| r.key == [format!("{ORG}/units/{unit}")])
            .map(|r| r.amounts.unwrap().charged_cents)
    };
    assert_eq!(charged(&rolled.rows, "ccm-program"), Some(5800 + 6049));
    assert_eq!(
        charged(&rolled.rows, "north-clinic"),
        Some(5800 + 6049),
        "the clinic rolls up its program"
    );
    assert_eq!(rolled.total.unwrap().charged_cents, 5800 + 6049);
    // By program: the CCM program's two tags each carry its lines; the total counts them once.
    let by_tag = admin
        .report_revenue(ReportRevenueRequest {
            parent: ORG.into(),
            group_by: vec![
                RevenueDimension::ReportingTag as i32,
                RevenueDimension::Code as i32,
            ],
            ..Default::default()
        })
        .await?
        .into_inner();
    let tag_rows: Vec<(Vec<String>, i64)> = by_tag
        .rows
        .iter()
        .map(|r| (r.key.clone(), r.amounts.unwrap().charged_cents))
        .collect();
    let row = |tag: &str, code: &str, cents: i64| (vec![tag.to_string(), code.to_string()], cents);
    assert_eq!(
        tag_rows,
        vec![
            row("ccm", "99490", 6049),
            row("ccm", "G0506", 5800),
            row("chronic-care", "99490", 6049),
            row("chronic-care", "G0506", 5800),
        ]
    );
    assert_eq!(by_tag.total.unwrap().charged_cents, 5800 + 6049);
    // Drill-down into a tag's cell lists its lines; the untagged cell (`-`) holds none of them.
    let tag_lines = |tag: &str| ListRevenueLinesRequest {
        parent: ORG.into(),
        reporting_tag: tag.into(),
        ..Default::default()
    };
    let ccm_lines = admin
        .list_revenue_lines(tag_lines("ccm"))
        .await?
        .into_inner();
    let mut drilled: Vec<String> = ccm_lines
        .lines
        .iter()
        .filter_map(|l| l.charge.as_ref().map(|c| c.name.clone()))
        .collect();
    drilled.sort();
    let mut made: Vec<String> = charges.iter().map(|c| c.name.clone()).collect();
    made.sort();
    assert_eq!(drilled, made);
    let untagged = admin.list_revenue_lines(tag_lines("-")).await?.into_inner();
    assert!(untagged.lines.is_empty(), "{:?}", untagged.lines);
    let other = admin
        .list_revenue_lines(tag_lines("cardiology"))
        .await?
        .into_inner();
    assert!(other.lines.is_empty());
    let mut casey_reports = mesh.billing_as(CASEY).await?;
    let own = casey_reports
        .report_revenue(by_unit(false))
        .await?
        .into_inner();
    assert_eq!(
        own.rows.iter().map(|r| r.key.clone()).collect::<Vec<_>>(),
        vec![vec![CCM.to_string()]]
    );
    let lines = casey_reports
        .list_revenue_lines(ListRevenueLinesRequest {
            parent: ORG.into(),
            unit: CCM.into(),
            month: next_monday().format("%Y-%m").to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let sum: i64 = lines
        .lines
        .iter()
        .map(|l| l.amounts.unwrap().outstanding_cents)
        .sum();
    assert_eq!(sum, 5800 + 6049, "the lines add up to the cell");
    let outside = casey_reports
        .list_revenue_lines(ListRevenueLinesRequest {
            parent: ORG.into(),
            unit: format!("{ORG}/units/lakeside-clinic"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let missing = casey_reports
        .list_revenue_lines(ListRevenueLinesRequest {
            parent: ORG.into(),
            unit: format!("{ORG}/units/nowhere"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(outside.code(), Code::PermissionDenied);
    assert_eq!(
        outside.message().replace("lakeside-clinic", "X"),
        missing.message().replace("nowhere", "X")
    );
    // Jordan reads the payers but may not write the organization's configuration.
    assert!(
        jordan
            .get_payer(GetPayerRequest {
                name: MEDICARE.into()
            })
            .await
            .is_ok()
    );
    let write = jordan
        .delete_payer(DeletePayerRequest {
            name: MEDICARE.into(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(write.code(), Code::PermissionDenied);
    assert!(
        admin
            .get_payer(GetPayerRequest {
                name: MEDICARE.into()
            })
            .await
            .is_ok(),
        "nothing deleted"
    );
    mesh.stop().await
}

/// A schedule added after charges were made: a dry run says which unclaimed charge would change
/// and by how much, writing nothing; applied (with a request_id), the held charge is reversed and
/// charged again at its new price; a second dry run finds nothing left to change.
async fn charges_are_repriced_after_a_schedule_change(backend: Backend) -> anyhow::Result<()> {
    let mesh = seeded(backend).await?;
    let mut billing = mesh.billing_as(ADMIN).await?;
    let manual = |code: &str| CreateChargeRequest {
        parent: ORG.into(),
        charge: Some(Charge {
            patient: ROSA.into(),
            unit: CCM.into(),
            provider: OKAFOR.into(),
            payer: MEDICARE.into(),
            code: code.into(),
            units: 1,
            diagnoses: vec!["E11.9".into()],
            service_date: date(next_monday()),
            ..Default::default()
        }),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let held = billing.create_charge(manual("99215")).await?.into_inner();
    assert_eq!(
        (held.state, held.hold_reason.as_str()),
        (ChargeState::Held as i32, "NO_FEE_SCHEDULE_ENTRY")
    );
    let priced = billing.create_charge(manual("99490")).await?.into_inner();
    let dry = |apply: bool, request_id: &str| RepriceChargesRequest {
        parent: ORG.into(),
        unit: String::new(),
        apply,
        request_id: request_id.into(),
    };
    let nothing = billing.reprice_charges(dry(false, "")).await?.into_inner();
    assert_eq!((nothing.examined, nothing.changes.len()), (2, 0));
    // The program adds its own unit-level schedule: 99215 priced now, 99490 still the program's.
    billing
        .create_fee_schedule(CreateFeeScheduleRequest {
            parent: ORG.into(),
            fee_schedule: Some(FeeSchedule {
                display_name: "CCM extras".into(),
                scope: Some(FeeScheduleScope {
                    target: Some(fee_schedule_scope::Target::Unit(CCM.into())),
                }),
                ..Default::default()
            }),
            fee_schedule_id: "ccm-extras".into(),
            request_id: String::new(),
        })
        .await?;
    billing
        .create_fee_schedule_version(CreateFeeScheduleVersionRequest {
            parent: format!("{ORG}/feeSchedules/ccm-extras"),
            fee_schedule_version: Some(FeeScheduleVersion {
                effective_from: Some(Date {
                    year: 2026,
                    month: 1,
                    day: 1,
                }),
                ..Default::default()
            }),
            csv: "code,modifiers,amount,description\n99215,,150.00,visit\n99490,,70.00,x\n".into(),
            fee_schedule_version_id: "v2026".into(),
            request_id: String::new(),
        })
        .await?;
    let preview = billing.reprice_charges(dry(false, "")).await?.into_inner();
    assert!(!preview.applied);
    assert_eq!(preview.changes.len(), 1, "{:?}", preview.changes);
    let change = &preview.changes[0];
    assert_eq!(
        (
            change.charge.as_str(),
            change.old_amount_cents,
            change.new_amount_cents
        ),
        (held.name.as_str(), 0, 15000)
    );
    assert_eq!(preview.delta_cents, 15000);
    let listed = |billing: &mut Billing| {
        let mut billing = billing.clone();
        async move {
            Ok::<_, anyhow::Error>(
                billing
                    .list_charges(ListChargesRequest {
                        parent: ORG.into(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner()
                    .charges,
            )
        }
    };
    assert_eq!(
        listed(&mut billing).await?.len(),
        2,
        "a dry run writes nothing"
    );
    let refused = billing.reprice_charges(dry(true, "")).await.unwrap_err();
    assert_eq!(reason(&refused), "FIELD_REQUIRED");
    let applied = billing
        .reprice_charges(dry(true, &uuid::Uuid::new_v4().to_string()))
        .await?
        .into_inner();
    assert!(applied.applied);
    let new_name = applied.changes[0].new_charge.clone();
    let new = billing
        .get_charge(GetChargeRequest { name: new_name })
        .await?
        .into_inner();
    assert_eq!(
        (new.state, new.amount_cents),
        (ChargeState::Open as i32, 15000)
    );
    assert_eq!(new.related_charge, held.name);
    let old = billing
        .get_charge(GetChargeRequest {
            name: held.name.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(old.state, ChargeState::Reversed as i32);
    let untouched = billing
        .get_charge(GetChargeRequest {
            name: priced.name.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        (untouched.state, untouched.amount_cents),
        (ChargeState::Open as i32, 6049)
    );
    let after = billing.reprice_charges(dry(false, "")).await?.into_inner();
    assert!(after.changes.is_empty(), "{:?}", after.changes);
    mesh.stop().await
}

/// A unit named under the demo organization.
fn profile_unit(profile: pm_api::org::BillingProfile) -> pm_api::org::CreateServiceUnitRequest {
    pm_api::org::CreateServiceUnitRequest {
        parent: ORG.into(),
        service_unit: Some(pm_api::org::ServiceUnit {
            display_name: "Sleep lab".into(),
            kind: pm_api::org::UnitKind::ServiceLine as i32,
            parent_unit: format!("{ORG}/units/north-clinic"),
            billing_profile: Some(profile),
            ..Default::default()
        }),
        service_unit_id: "sleep-lab".into(),
        request_id: String::new(),
    }
}

/// Org asks Billing about every name a unit's billing profile holds: an unknown, deleted or
/// other organization's one is refused naming the field, and nothing is written; known short
/// names are written in full; an update touching the profile is checked the same way.
async fn org_refuses_billing_references_billing_does_not_know(
    backend: Backend,
) -> anyhow::Result<()> {
    use pm_api::org::{
        BillingProfile, GetServiceUnitRequest, PayerContract, ServiceUnit, UpdateServiceUnitRequest,
    };
    let mesh = seeded(backend).await?;
    let mut org = mesh.org_as(ADMIN).await?;
    let mut billing = mesh.billing_as(ADMIN).await?;
    billing
        .create_payer(CreatePayerRequest {
            parent: ORG.into(),
            payer: Some(Payer {
                display_name: "Retired plan".into(),
                payer_id: "RETIRED".into(),
                claim_filing_indicator: "CI".into(),
                timely_filing_days: 90,
                ..Default::default()
            }),
            payer_id: "retired".into(),
            request_id: String::new(),
        })
        .await?;
    billing
        .delete_payer(DeletePayerRequest {
            name: format!("{ORG}/payers/retired"),
            etag: String::new(),
        })
        .await?;
    let accepting = |payer: &str, contract: &str| BillingProfile {
        accepted_payers: vec![PayerContract {
            payer: payer.into(),
            contract: contract.into(),
        }],
        ..Default::default()
    };
    let refused = [
        (
            BillingProfile {
                billing_entity: "billingEntities/nobody".into(),
                ..Default::default()
            },
            "service_unit.billing_profile.billing_entity",
            "UNKNOWN_REFERENCE",
        ),
        (
            accepting("payers/medicare", "contracts/medicare-1999"),
            "service_unit.billing_profile.accepted_payers[0].contract",
            "UNKNOWN_REFERENCE",
        ),
        (
            accepting("payers/retired", ""),
            "service_unit.billing_profile.accepted_payers[0].payer",
            "UNKNOWN_REFERENCE",
        ),
        (
            BillingProfile {
                fee_schedule: "feeSchedules/nothing-2026".into(),
                ..Default::default()
            },
            "service_unit.billing_profile.fee_schedule",
            "UNKNOWN_REFERENCE",
        ),
        (
            accepting("organizations/other/payers/medicare", ""),
            "service_unit.billing_profile.accepted_payers[0].payer",
            "",
        ),
    ];
    let missing = |e: &tonic::Status| e.code() == Code::NotFound;
    for (profile, field, why) in refused {
        let err = org
            .create_service_unit(profile_unit(profile))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert_eq!(fields(&err), vec![field.to_string()], "{err:?}");
        if !why.is_empty() {
            assert_eq!(reason(&err), why);
        }
        let unit = org
            .get_service_unit(GetServiceUnitRequest {
                name: format!("{ORG}/units/sleep-lab"),
            })
            .await
            .unwrap_err();
        assert!(missing(&unit), "nothing written: {unit:?}");
    }
    // Known names in their short forms are written in full.
    let created = org
        .create_service_unit(profile_unit(BillingProfile {
            billing_entity: "billingEntities/acme-medical-group".into(),
            fee_schedule: "feeSchedules/standard-2026".into(),
            ..accepting("payers/medicare", "medicare-2026")
        }))
        .await?
        .into_inner();
    let profile = created.billing_profile.unwrap();
    assert_eq!(
        profile.billing_entity,
        format!("{ORG}/billingEntities/acme-medical-group")
    );
    assert_eq!(
        profile.fee_schedule,
        format!("{ORG}/feeSchedules/standard-2026")
    );
    assert_eq!(profile.accepted_payers[0].payer, MEDICARE);
    assert_eq!(
        profile.accepted_payers[0].contract,
        format!("{ORG}/contracts/medicare-2026")
    );
    // An update of the profile naming a payer Billing does not know: refused, the unit unchanged.
    let err = org
        .update_service_unit(UpdateServiceUnitRequest {
            service_unit: Some(ServiceUnit {
                name: created.name.clone(),
                billing_profile: Some(accepting("payers/nobody", "")),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["billing_profile".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "UNKNOWN_REFERENCE");
    let unchanged = org
        .get_service_unit(GetServiceUnitRequest {
            name: created.name.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(unchanged.etag, created.etag, "nothing written");
    mesh.stop().await
}

/// Billing down: a unit naming a billing resource cannot be checked, so it is refused UNAVAILABLE
/// and nothing is written; a unit naming none is written as ever.
async fn org_answers_unavailable_while_billing_is_down(backend: Backend) -> anyhow::Result<()> {
    use pm::mesh::Service;
    use pm_api::org::{
        BillingProfile, CreateOrganizationRequest, GetServiceUnitRequest, Organization,
    };
    let mesh =
        TestMesh::start_only(backend, &[Service::Org, Service::Rbac, Service::Scheduling]).await?;
    let mut org = mesh.org().await?;
    org.create_organization(CreateOrganizationRequest {
        organization: Some(Organization {
            display_name: "Acme".into(),
            time_zone: "America/New_York".into(),
            ..Default::default()
        }),
        organization_id: "acme".into(),
        request_id: String::new(),
    })
    .await?;
    let mut request = profile_unit(BillingProfile {
        billing_entity: "billingEntities/acme-medical-group".into(),
        ..Default::default()
    });
    if let Some(unit) = request.service_unit.as_mut() {
        unit.parent_unit = String::new();
    }
    let err = org.create_service_unit(request.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(reason(&err), "PEER_UNAVAILABLE");
    let nothing = org
        .get_service_unit(GetServiceUnitRequest {
            name: format!("{ORG}/units/sleep-lab"),
        })
        .await
        .unwrap_err();
    assert_eq!(nothing.code(), Code::NotFound);
    if let Some(unit) = request.service_unit.as_mut() {
        unit.billing_profile = None;
    }
    org.create_service_unit(request).await?;
    mesh.stop().await
}

macro_rules! both_backends {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() -> anyhow::Result<()> {
                    super::$test(pm_runtime::config::Backend::Sqlite).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() -> anyhow::Result<()> {
                    super::$test(pm_runtime::config::Backend::Postgres).await
                }
            )*
        }
    };
}

both_backends!(
    charges_are_repriced_after_a_schedule_change,
    encounters_become_charges_exactly_once,
    prices_are_explained_and_charges_corrected,
    bad_input_is_refused_naming_the_field,
    charges_are_cut_to_the_callers_units,
    org_refuses_billing_references_billing_does_not_know,
    org_answers_unavailable_while_billing_is_down,
);

//! Intake requirements that bind, end to end over mTLS on SQLite and on PostgreSQL: a unit that
//! requires a referral excludes every slot of a patient without one (INTAKE_REFERRAL_MISSING) until
//! Org records it on the enrollment (RecordIntake), and booking refuses with the same reason; a prior
//! authorization that lapsed before the window excludes the slots with PRIOR_AUTH_EXPIRED, the lapse
//! in the exclusion and in the refusal; one that lapses inside the window cuts the slots there; a
//! revoked record (RevokeIntake) meets nothing.

#![allow(clippy::unwrap_used)]

mod support;

use chrono::{DateTime, Utc};
use pm_api::org::org_service_client::OrgServiceClient;
use pm_api::org::*;
use pm_api::scheduling::scheduling_service_client::SchedulingServiceClient;
use pm_api::scheduling::*;
use pm_api::types::{Date, Interval};
use pm_runtime::client::AuthedChannel;
use pm_runtime::config::Backend;
use support::TestMesh;
use support::time::{at, minutes, next_monday, since_2024, ts};
use tonic::Code;
use tonic_types::StatusExt;

const ORG: &str = "organizations/acme";
const CARDIOLOGY: &str = "organizations/acme/units/cardiology";
const INFUSION: &str = "organizations/acme/units/infusion";
const MAIN: &str = "organizations/acme/locations/main";
const OKAFOR: &str = "organizations/acme/providers/dr-okafor";
const PATIENT: &str = "organizations/acme/patients/p1";
const CONSULT: &str = "organizations/acme/units/cardiology/visitTypes/consult";
const INFUSE: &str = "organizations/acme/units/infusion/visitTypes/infusion";

type Org = OrgServiceClient<AuthedChannel>;
type Scheduling = SchedulingServiceClient<AuthedChannel>;

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

fn meta(status: &tonic::Status, key: &str) -> Option<String> {
    status
        .get_details_error_info()
        .and_then(|i| i.metadata.get(key).cloned())
}

/// Two self-pay units of Acme, cardiology requiring a referral and infusion a prior authorization;
/// Dr. Okafor credentialed in both at Main street; patient p1 enrolled in both, with nothing recorded.
async fn seed_org(org: &mut Org) -> anyhow::Result<()> {
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
    for (id, requirement, visit) in [
        ("cardiology", IntakeRequirement::Referral, "consult"),
        (
            "infusion",
            IntakeRequirement::PriorAuthorization,
            "infusion",
        ),
    ] {
        org.create_service_unit(CreateServiceUnitRequest {
            parent: ORG.into(),
            service_unit: Some(ServiceUnit {
                display_name: id.into(),
                kind: UnitKind::ServiceLine as i32,
                billing_profile: Some(BillingProfile {
                    self_pay_allowed: Some(true),
                    ..Default::default()
                }),
                workflow_rules: Some(WorkflowRules {
                    intake_requirements: vec![requirement as i32],
                    allowed_visit_types: vec![visit.into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            service_unit_id: id.into(),
            request_id: String::new(),
        })
        .await?;
    }
    org.create_location(CreateLocationRequest {
        parent: ORG.into(),
        location: Some(Location {
            display_name: "Main street".into(),
            time_zone: "America/New_York".into(),
            ..Default::default()
        }),
        location_id: "main".into(),
        request_id: String::new(),
    })
    .await?;
    org.create_provider(CreateProviderRequest {
        parent: ORG.into(),
        provider: Some(Provider {
            display_name: "Dr. Okafor".into(),
            npi: "1234567893".into(),
            taxonomy_code: "207Q00000X".into(),
            ..Default::default()
        }),
        provider_id: "dr-okafor".into(),
        request_id: String::new(),
    })
    .await?;
    for (id, unit) in [("cardiology", CARDIOLOGY), ("infusion", INFUSION)] {
        org.create_credential(CreateCredentialRequest {
            parent: OKAFOR.into(),
            credential: Some(Credential {
                unit: unit.into(),
                state: CredentialState::Active as i32,
                effective_period: since_2024(),
                ..Default::default()
            }),
            credential_id: id.into(),
            request_id: String::new(),
        })
        .await?;
    }
    org.create_patient(CreatePatientRequest {
        parent: ORG.into(),
        patient: Some(Patient {
            given_name: "Canary".into(),
            family_name: "Test-intake".into(),
            birth_date: Some(Date {
                year: 1950,
                month: 1,
                day: 1,
            }),
            ..Default::default()
        }),
        patient_id: "p1".into(),
        request_id: String::new(),
    })
    .await?;
    for (id, unit) in [("cardiology", CARDIOLOGY), ("infusion", INFUSION)] {
        org.create_enrollment(CreateEnrollmentRequest {
            parent: PATIENT.into(),
            enrollment: Some(Enrollment {
                unit: unit.into(),
                ..Default::default()
            }),
            enrollment_id: id.into(),
            request_id: String::new(),
        })
        .await?;
    }
    Ok(())
}

/// The visit types, and Dr. Okafor's Mondays: cardiology 09:00-12:00, infusion 13:00-16:00 (New York).
async fn seed_scheduling(s: &mut Scheduling) -> anyhow::Result<()> {
    for (unit, code) in [(CARDIOLOGY, "consult"), (INFUSION, "infusion")] {
        s.create_visit_type(CreateVisitTypeRequest {
            parent: unit.into(),
            visit_type: Some(VisitType {
                code: code.into(),
                display_name: code.into(),
                duration: minutes(30),
                billing_code_hints: vec!["99213".into()],
                ..Default::default()
            }),
            visit_type_id: code.into(),
            request_id: String::new(),
        })
        .await?;
    }
    for (unit, start, end) in [(CARDIOLOGY, "09:00", "12:00"), (INFUSION, "13:00", "16:00")] {
        s.create_availability_rule(CreateAvailabilityRuleRequest {
            parent: OKAFOR.into(),
            availability_rule: Some(AvailabilityRule {
                unit: unit.into(),
                location: MAIN.into(),
                weekday: Weekday::Monday as i32,
                start_time: start.into(),
                end_time: end.into(),
                effective_from: Some(Date {
                    year: 2026,
                    month: 1,
                    day: 1,
                }),
                ..Default::default()
            }),
            availability_rule_id: String::new(),
            request_id: String::new(),
        })
        .await?;
    }
    Ok(())
}

async fn find(s: &mut Scheduling, unit: &str, visit: &str) -> anyhow::Result<FindSlotsResponse> {
    let day = next_monday();
    Ok(s.find_slots(FindSlotsRequest {
        unit: unit.into(),
        patient: PATIENT.into(),
        visit_type: visit.into(),
        window: Some(Interval {
            start_time: Some(ts(at(day, 0, 0))),
            end_time: Some(ts(at(day, 23, 0))),
        }),
        ..Default::default()
    })
    .await?
    .into_inner())
}

async fn book(
    s: &mut Scheduling,
    unit: &str,
    visit: &str,
    start: DateTime<Utc>,
) -> Result<Appointment, tonic::Status> {
    s.book_appointment(BookAppointmentRequest {
        parent: ORG.into(),
        appointment: Some(Appointment {
            unit: unit.into(),
            patient: PATIENT.into(),
            provider: OKAFOR.into(),
            location: MAIN.into(),
            visit_type: visit.into(),
            interval: Some(Interval {
                start_time: Some(ts(start)),
                end_time: None,
            }),
            ..Default::default()
        }),
        hold_ttl: None,
        request_id: String::new(),
        appointment_id: String::new(),
    })
    .await
    .map(|r| r.into_inner())
}

async fn appointments_of_patient(s: &mut Scheduling) -> anyhow::Result<usize> {
    Ok(s.list_appointments(ListAppointmentsRequest {
        parent: ORG.into(),
        filter: format!("patient = \"{PATIENT}\""),
        ..Default::default()
    })
    .await?
    .into_inner()
    .appointments
    .len())
}

async fn record(
    org: &mut Org,
    enrollment: &str,
    record: IntakeRecord,
) -> Result<Enrollment, tonic::Status> {
    org.record_intake(RecordIntakeRequest {
        name: format!("{PATIENT}/enrollments/{enrollment}"),
        record: Some(record),
        etag: String::new(),
        request_id: String::new(),
    })
    .await
    .map(|r| r.into_inner())
}

async fn intake(backend: Backend) -> anyhow::Result<()> {
    let mesh = TestMesh::start(backend).await?;
    let mut org = mesh.org().await?;
    seed_org(&mut org).await?;
    let mut s = mesh.scheduling_as(pm::demo::ADMIN).await?;
    seed_scheduling(&mut s).await?;
    let day = next_monday();

    // No referral: no slot, and why (the patient, INTAKE_REFERRAL_MISSING, which requirement).
    let found = find(&mut s, CARDIOLOGY, CONSULT).await?;
    assert!(found.slots.is_empty(), "{found:?}");
    assert_eq!(
        found.exclusions,
        vec![Exclusion {
            subject: ExclusionSubject::Patient as i32,
            reason: "INTAKE_REFERRAL_MISSING".into(),
            requirement: "INTAKE_REQUIREMENT_REFERRAL".into(),
            ..Default::default()
        }]
    );
    // Booking re-checks every rule: refused with the same reason, nothing written.
    let err = book(&mut s, CARDIOLOGY, CONSULT, at(day, 9, 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(reason(&err), "INTAKE_REFERRAL_MISSING");
    assert_eq!(
        meta(&err, "requirement").as_deref(),
        Some("INTAKE_REQUIREMENT_REFERRAL")
    );
    assert_eq!(appointments_of_patient(&mut s).await?, 0);

    // A referral for another visit type does not count; one for the consult does.
    let referral = |visit: &str| IntakeRecord {
        requirement: IntakeRequirement::Referral as i32,
        effective_time: Some(prost_types::Timestamp {
            seconds: 1_704_067_200,
            nanos: 0,
        }),
        referring_provider: "1987654328".into(),
        visit_types: vec![visit.into()],
        ..Default::default()
    };
    record(&mut org, "cardiology", referral("echo-review")).await?;
    let found = find(&mut s, CARDIOLOGY, CONSULT).await?;
    assert!(found.slots.is_empty(), "{found:?}");
    assert_eq!(found.exclusions[0].reason, "INTAKE_REFERRAL_MISSING");
    let recorded = record(&mut org, "cardiology", referral("consult")).await?;
    assert_eq!(recorded.intake_records.len(), 2);
    let found = find(&mut s, CARDIOLOGY, CONSULT).await?;
    assert_eq!(
        found.slots.len(),
        6,
        "09:00 to 12:00 by 30 minutes: {found:?}"
    );
    assert_eq!(
        found.slots[0].interval.as_ref().and_then(|i| i.start_time),
        Some(ts(at(day, 9, 0)))
    );
    assert!(found.exclusions.is_empty(), "{found:?}");
    book(&mut s, CARDIOLOGY, CONSULT, at(day, 9, 0)).await?;
    assert_eq!(appointments_of_patient(&mut s).await?, 1);

    // The referral was entered in error: revoked, it meets nothing any more.
    let consult_referral = &recorded.intake_records[1];
    let revoked = org
        .revoke_intake(RevokeIntakeRequest {
            name: recorded.name.clone(),
            record_id: consult_referral.id.clone(),
            reason: "entered in error".into(),
            etag: recorded.etag.clone(),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    assert!(revoked.intake_records[1].revoke_time.is_some());
    let found = find(&mut s, CARDIOLOGY, CONSULT).await?;
    assert!(found.slots.is_empty(), "{found:?}");
    assert_eq!(found.exclusions[0].reason, "INTAKE_REFERRAL_MISSING");

    // A prior authorization that lapsed on Sunday: PRIOR_AUTH_EXPIRED, since its expiry.
    let lapsed = at(day - chrono::Days::new(1), 12, 0);
    let prior_auth = |until: DateTime<Utc>| IntakeRecord {
        requirement: IntakeRequirement::PriorAuthorization as i32,
        effective_time: Some(ts(lapsed - chrono::TimeDelta::days(90))),
        expire_time: Some(ts(until)),
        authorization_number: "PA-123456".into(),
        ..Default::default()
    };
    record(&mut org, "infusion", prior_auth(lapsed)).await?;
    let found = find(&mut s, INFUSION, INFUSE).await?;
    assert!(found.slots.is_empty(), "{found:?}");
    assert_eq!(
        found.exclusions,
        vec![Exclusion {
            subject: ExclusionSubject::Patient as i32,
            reason: "PRIOR_AUTH_EXPIRED".into(),
            requirement: "INTAKE_REQUIREMENT_PRIOR_AUTHORIZATION".into(),
            expire_time: Some(ts(lapsed)),
            ..Default::default()
        }]
    );
    let err = book(&mut s, INFUSION, INFUSE, at(day, 13, 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(reason(&err), "PRIOR_AUTH_EXPIRED");
    assert_eq!(
        meta(&err, "expireTime"),
        Some(lapsed.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    );
    assert!(
        !err.message().contains("PA-123456"),
        "no PHI in the message"
    );
    assert_eq!(appointments_of_patient(&mut s).await?, 1, "nothing written");

    // Renewed until 14:00 on Monday: the slots before it, and the first one after excluded.
    let renewed = at(day, 14, 0);
    record(
        &mut org,
        "infusion",
        IntakeRecord {
            effective_time: Some(ts(lapsed)),
            ..prior_auth(renewed)
        },
    )
    .await?;
    let found = find(&mut s, INFUSION, INFUSE).await?;
    let starts: Vec<_> = found
        .slots
        .iter()
        .filter_map(|s| s.interval.as_ref().and_then(|i| i.start_time))
        .collect();
    assert_eq!(starts, vec![ts(at(day, 13, 0)), ts(at(day, 13, 30))]);
    assert_eq!(
        found.exclusions,
        vec![Exclusion {
            subject: ExclusionSubject::Candidate as i32,
            provider: OKAFOR.into(),
            start_time: Some(ts(renewed)),
            reason: "PRIOR_AUTH_EXPIRED".into(),
            requirement: "INTAKE_REQUIREMENT_PRIOR_AUTHORIZATION".into(),
            expire_time: Some(ts(renewed)),
            ..Default::default()
        }]
    );
    let err = book(&mut s, INFUSION, INFUSE, at(day, 14, 30))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "PRIOR_AUTH_EXPIRED");
    book(&mut s, INFUSION, INFUSE, at(day, 13, 0)).await?;

    // Each RecordIntake and RevokeIntake is in the patient's trail.
    let trail = support::trail(&mut org, PATIENT).await?;
    let writes = |method: &str| trail.iter().filter(|r| r.method.ends_with(method)).count();
    assert_eq!(writes("/RecordIntake"), 4, "{trail:?}");
    assert_eq!(writes("/RevokeIntake"), 1, "{trail:?}");
    mesh.stop().await?;
    Ok(())
}

async fn cancel(s: &mut Scheduling, name: &str) -> anyhow::Result<()> {
    s.cancel_appointment(CancelAppointmentRequest {
        name: name.into(),
        reason: "patient request".into(),
        etag: String::new(),
    })
    .await?;
    Ok(())
}

/// A prior authorization for two infusions binds: two are booked, the third is excluded and refused
/// with PRIOR_AUTH_VISITS_USED (the record and its count, no PHI) and nothing written; a
/// cancellation frees a visit; two bookings racing for the last one: exactly one wins.
async fn visit_counts(backend: Backend) -> anyhow::Result<()> {
    let mesh = TestMesh::start(backend).await?;
    let mut org = mesh.org().await?;
    seed_org(&mut org).await?;
    let mut s = mesh.scheduling_as(pm::demo::ADMIN).await?;
    seed_scheduling(&mut s).await?;
    let day = next_monday();

    let recorded = record(
        &mut org,
        "infusion",
        IntakeRecord {
            requirement: IntakeRequirement::PriorAuthorization as i32,
            effective_time: Some(ts(at(day, 0, 0) - chrono::TimeDelta::days(30))),
            authorization_number: "PA-777777".into(),
            visit_types: vec!["infusion".into()],
            visit_count: 2,
            ..Default::default()
        },
    )
    .await?;
    let id = recorded.intake_records[0].id.clone();
    assert!(!id.is_empty());

    // 0 and N-1 visits used: every slot.
    assert_eq!(find(&mut s, INFUSION, INFUSE).await?.slots.len(), 6);
    let first = book(&mut s, INFUSION, INFUSE, at(day, 13, 0)).await?;
    let found = find(&mut s, INFUSION, INFUSE).await?;
    assert!(!found.slots.is_empty(), "{found:?}");
    assert!(
        found
            .exclusions
            .iter()
            .all(|e| e.reason == "PROVIDER_BOOKED"),
        "{found:?}"
    );
    let second = book(&mut s, INFUSION, INFUSE, at(day, 13, 30)).await?;

    // N used: no slot, and why.
    let used_up = Exclusion {
        subject: ExclusionSubject::Patient as i32,
        reason: "PRIOR_AUTH_VISITS_USED".into(),
        requirement: "INTAKE_REQUIREMENT_PRIOR_AUTHORIZATION".into(),
        intake_record: id.clone(),
        visit_count: 2,
        ..Default::default()
    };
    let found = find(&mut s, INFUSION, INFUSE).await?;
    assert!(found.slots.is_empty(), "{found:?}");
    assert_eq!(found.exclusions, vec![used_up.clone()]);
    // The other unit's visits are not the record's: cardiology is unaffected by it.
    record(
        &mut org,
        "cardiology",
        IntakeRecord {
            requirement: IntakeRequirement::Referral as i32,
            effective_time: Some(ts(at(day, 0, 0) - chrono::TimeDelta::days(30))),
            referring_provider: "1987654328".into(),
            ..Default::default()
        },
    )
    .await?;
    assert_eq!(find(&mut s, CARDIOLOGY, CONSULT).await?.slots.len(), 6);

    // The third is refused with the reason, the record and the count; nothing written.
    let err = book(&mut s, INFUSION, INFUSE, at(day, 14, 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(reason(&err), "PRIOR_AUTH_VISITS_USED");
    assert_eq!(
        meta(&err, "requirement").as_deref(),
        Some("INTAKE_REQUIREMENT_PRIOR_AUTHORIZATION")
    );
    assert_eq!(meta(&err, "record"), Some(id.clone()));
    assert_eq!(meta(&err, "visitCount").as_deref(), Some("2"));
    assert!(!err.message().contains("PA-777777"), "no PHI: {err:?}");
    assert!(!format!("{:?}", err.metadata()).contains("PA-777777"));
    assert_eq!(appointments_of_patient(&mut s).await?, 2, "nothing written");

    // A cancellation frees a visit: the third books, then the fourth is refused again.
    cancel(&mut s, &second.name).await?;
    assert_eq!(find(&mut s, INFUSION, INFUSE).await?.exclusions.len(), 1);
    let third = book(&mut s, INFUSION, INFUSE, at(day, 14, 0)).await?;
    let err = book(&mut s, INFUSION, INFUSE, at(day, 15, 0))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "PRIOR_AUTH_VISITS_USED");
    assert_eq!(appointments_of_patient(&mut s).await?, 3);

    // One visit left, five bookings race for it (at five free times: no occupancy conflict between
    // them, only the count): exactly one wins, the others are refused with the reason.
    cancel(&mut s, &third.name).await?;
    // A weekly series of two with one visit left: the second occurrence is refused, nothing written.
    let err = s
        .book_series(BookSeriesRequest {
            parent: ORG.into(),
            appointment: Some(Appointment {
                unit: INFUSION.into(),
                patient: PATIENT.into(),
                provider: OKAFOR.into(),
                location: MAIN.into(),
                visit_type: INFUSE.into(),
                interval: Some(Interval {
                    start_time: Some(ts(at(day, 15, 0))),
                    end_time: None,
                }),
                ..Default::default()
            }),
            count: 2,
            every: Some(prost_types::Duration {
                seconds: 7 * 86_400,
                nanos: 0,
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "PRIOR_AUTH_VISITS_USED", "{err:?}");
    assert_eq!(meta(&err, "occurrence").as_deref(), Some("1"));
    assert_eq!(appointments_of_patient(&mut s).await?, 3, "nothing written");

    let mut racers = Vec::new();
    for (hour, minute) in [(13, 30), (14, 0), (14, 30), (15, 0), (15, 30)] {
        let mut client = mesh.scheduling_as(pm::demo::ADMIN).await?;
        racers
            .push(async move { book(&mut client, INFUSION, INFUSE, at(day, hour, minute)).await });
    }
    let results = futures::future::join_all(racers).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "exactly one wins: {results:?}");
    for lost in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(reason(lost), "PRIOR_AUTH_VISITS_USED", "{lost:?}");
    }
    assert_eq!(appointments_of_patient(&mut s).await?, 4);
    let found = find(&mut s, INFUSION, INFUSE).await?;
    assert_eq!(found.exclusions, vec![used_up]);

    // All used: moving a covered visit does not count it against itself.
    let free = [(13, 30), (14, 0), (14, 30), (15, 0), (15, 30)]
        .into_iter()
        .map(|(h, m)| at(day, h, m))
        .find(|t| {
            results
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .all(|a| a.interval.as_ref().and_then(|i| i.start_time) != Some(ts(*t)))
        })
        .unwrap();
    let moved = s
        .reschedule_appointment(RescheduleAppointmentRequest {
            name: first.name.clone(),
            start_time: Some(ts(free)),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        moved.interval.as_ref().and_then(|i| i.start_time),
        Some(ts(free))
    );
    assert_eq!(appointments_of_patient(&mut s).await?, 4);
    assert!(first.name != second.name);
    mesh.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visit_counts_on_sqlite() -> anyhow::Result<()> {
    visit_counts(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visit_counts_on_postgres() -> anyhow::Result<()> {
    visit_counts(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_requirements_on_sqlite() -> anyhow::Result<()> {
    intake(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_requirements_on_postgres() -> anyhow::Result<()> {
    intake(Backend::Postgres).await
}

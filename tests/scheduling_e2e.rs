//! The Scheduling service end to end: a real mesh (Org, RBAC, Scheduling) over mTLS gRPC, on SQLite
//! and on PostgreSQL. Org holds the facts (units with their policies, credentials, enrollments,
//! coverage); Scheduling asks for them over gRPC, searches slots, books under concurrency, and audits.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use pm_api::org::org_service_client::OrgServiceClient;
use pm_api::org::*;
use pm_api::scheduling::scheduling_service_client::SchedulingServiceClient;
use pm_api::scheduling::*;
use pm_api::types::{Date, Interval};
use pm_runtime::client::AuthedChannel;
use pm_runtime::config::Backend;
use support::TestMesh;
use tonic::Code;
use tonic_types::StatusExt;

const ORG: &str = "organizations/acme";
const CLINIC: &str = "organizations/acme/units/north-clinic";
const CCM: &str = "organizations/acme/units/ccm-program";
const MAIN: &str = "organizations/acme/locations/main";
const OKAFOR: &str = "organizations/acme/providers/dr-okafor";
const LEE: &str = "organizations/acme/providers/dr-lee";
const COVERED: &str = "organizations/acme/patients/pat-covered";
const UNCOVERED: &str = "organizations/acme/patients/pat-uncovered";
const UNENROLLED: &str = "organizations/acme/patients/pat-unenrolled";
const WAITING: &str = "organizations/acme/patients/pat-waiting";
const FOLLOW_UP: &str = "organizations/acme/units/north-clinic/visitTypes/follow-up";
const WELLNESS: &str = "organizations/acme/units/north-clinic/visitTypes/wellness";

type Org = OrgServiceClient<AuthedChannel>;
type Scheduling = SchedulingServiceClient<AuthedChannel>;

use support::time::{at, minutes, next_monday, since_2024, ts};

/// Org's side of the world, through Org's public API.
async fn seed_org(mesh: &TestMesh, org: &mut Org) -> anyhow::Result<()> {
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
    let unit = |name: &str, payers: &[&str], visits: &[&str], steps: &[&str]| ServiceUnit {
        display_name: name.into(),
        kind: UnitKind::Clinic as i32,
        billing_profile: Some(BillingProfile {
            accepted_payers: payers
                .iter()
                .map(|p| PayerContract {
                    payer: format!("payers/{p}"),
                    contract: String::new(),
                })
                .collect(),
            self_pay_allowed: Some(false),
            ..Default::default()
        }),
        workflow_rules: Some(WorkflowRules {
            allowed_visit_types: visits.iter().map(|v| v.to_string()).collect(),
            care_pathway_steps: steps
                .iter()
                .map(|s| CarePathwayStep {
                    id: s.to_string(),
                    display_name: s.to_string(),
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    mesh.seed_payers(
        pm::demo::ADMIN,
        "organizations/acme",
        &["aetna", "medicare"],
    )
    .await?;
    for (id, unit) in [
        (
            "north-clinic",
            unit(
                "North clinic",
                &["aetna"],
                &["follow-up", "procedure", "annual-wellness"],
                &[],
            ),
        ),
        (
            "ccm-program",
            unit(
                "CCM",
                &["medicare"],
                &["ccm-monthly"],
                &["enroll", "monthly"],
            ),
        ),
    ] {
        org.create_service_unit(CreateServiceUnitRequest {
            parent: ORG.into(),
            service_unit: Some(unit),
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
    for (id, npi, unit) in [
        ("dr-okafor", "1234567893", CLINIC),
        ("dr-lee", "1987654328", CCM),
    ] {
        org.create_provider(CreateProviderRequest {
            parent: ORG.into(),
            provider: Some(Provider {
                display_name: id.into(),
                npi: npi.into(),
                taxonomy_code: "207Q00000X".into(),
                ..Default::default()
            }),
            provider_id: id.into(),
            request_id: String::new(),
        })
        .await?;
        org.create_credential(CreateCredentialRequest {
            parent: format!("{ORG}/providers/{id}"),
            credential: Some(Credential {
                unit: unit.into(),
                state: CredentialState::Active as i32,
                effective_period: since_2024(),
                ..Default::default()
            }),
            credential_id: "main".into(),
            request_id: String::new(),
        })
        .await?;
    }
    for (id, enrolled, payer) in [
        ("pat-covered", true, "aetna"),
        ("pat-uncovered", true, "cigna"),
        ("pat-unenrolled", false, "aetna"),
        ("pat-waiting", true, "aetna"),
    ] {
        let name = format!("{ORG}/patients/{id}");
        org.create_patient(CreatePatientRequest {
            parent: ORG.into(),
            patient: Some(Patient {
                given_name: "Canary".into(),
                family_name: format!("Test-{id}"),
                birth_date: Some(Date {
                    year: 1950,
                    month: 1,
                    day: 1,
                }),
                ..Default::default()
            }),
            patient_id: id.into(),
            request_id: String::new(),
        })
        .await?;
        if enrolled {
            org.create_enrollment(CreateEnrollmentRequest {
                parent: name.clone(),
                enrollment: Some(Enrollment {
                    unit: CLINIC.into(),
                    ..Default::default()
                }),
                enrollment_id: "clinic".into(),
                request_id: String::new(),
            })
            .await?;
        }
        org.create_coverage(CreateCoverageRequest {
            parent: name,
            coverage: Some(Coverage {
                payer: format!("payers/{payer}"),
                member_id: "M-1".into(),
                plan: "PPO".into(),
                priority: 1,
                effective_period: since_2024(),
                ..Default::default()
            }),
            coverage_id: "primary".into(),
            request_id: String::new(),
        })
        .await?;
    }
    Ok(())
}

/// Scheduling's side: visit types and weekday mornings at Main street for both providers. The
/// clinic then withdraws `annual-wellness` from its allowed visit types (a visit type is refused
/// when written unless its unit allows it): the wellness visit type stays, and slot search and
/// booking exclude it.
async fn seed_scheduling(s: &mut Scheduling, org: &mut Org) -> anyhow::Result<()> {
    for (id, code) in [("follow-up", "follow-up"), ("wellness", "annual-wellness")] {
        s.create_visit_type(CreateVisitTypeRequest {
            parent: CLINIC.into(),
            visit_type: Some(VisitType {
                code: code.into(),
                display_name: id.into(),
                duration: minutes(30),
                buffer_after: minutes(10),
                billing_code_hints: vec!["99213".into()],
                ..Default::default()
            }),
            visit_type_id: id.into(),
            request_id: String::new(),
        })
        .await?;
    }
    org.update_service_unit(UpdateServiceUnitRequest {
        service_unit: Some(ServiceUnit {
            name: CLINIC.into(),
            workflow_rules: Some(WorkflowRules {
                allowed_visit_types: vec!["follow-up".into(), "procedure".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["workflow_rules.allowed_visit_types".into()],
        }),
    })
    .await?;
    for provider in [OKAFOR, LEE] {
        for weekday in [Weekday::Monday, Weekday::Tuesday] {
            s.create_availability_rule(CreateAvailabilityRuleRequest {
                parent: provider.into(),
                availability_rule: Some(AvailabilityRule {
                    unit: CLINIC.into(),
                    location: MAIN.into(),
                    weekday: weekday as i32,
                    start_time: "09:00".into(),
                    end_time: "12:00".into(),
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
    }
    Ok(())
}

fn booking(patient: &str, provider: &str, visit: &str, start: DateTime<Utc>) -> Appointment {
    Appointment {
        unit: CLINIC.into(),
        patient: patient.into(),
        provider: provider.into(),
        location: MAIN.into(),
        visit_type: visit.into(),
        interval: Some(Interval {
            start_time: Some(ts(start)),
            end_time: None,
        }),
        ..Default::default()
    }
}

fn book_request(appointment: Appointment, request_id: &str) -> BookAppointmentRequest {
    BookAppointmentRequest {
        parent: ORG.into(),
        appointment: Some(appointment),
        hold_ttl: None,
        request_id: request_id.into(),
        appointment_id: String::new(),
    }
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

async fn appointments(s: &mut Scheduling) -> anyhow::Result<Vec<Appointment>> {
    Ok(s.list_appointments(ListAppointmentsRequest {
        parent: ORG.into(),
        page_size: 1000,
        ..Default::default()
    })
    .await?
    .into_inner()
    .appointments)
}

fn window(day: NaiveDate) -> Option<Interval> {
    Some(Interval {
        start_time: Some(ts(at(day, 0, 0))),
        end_time: Some(ts(at(day.succ_opt().unwrap(), 0, 0))),
    })
}

async fn find(s: &mut Scheduling, patient: &str, visit: &str, day: NaiveDate) -> FindSlotsResponse {
    s.find_slots(FindSlotsRequest {
        unit: CLINIC.into(),
        patient: patient.into(),
        visit_type: visit.into(),
        window: window(day),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

fn starts(found: &FindSlotsResponse) -> Vec<i64> {
    found
        .slots
        .iter()
        .map(|s| {
            s.interval
                .as_ref()
                .unwrap()
                .start_time
                .as_ref()
                .unwrap()
                .seconds
        })
        .collect()
}

/// The scheduling story, told once per backend on one mesh: each chapter below is a step that
/// builds on the state the steps before it left (the storm's booking is the one cancelled, the
/// calendar shows what the bookings made, the audit slice counts every booking of the story), and
/// each has its own test (`<step>::on_sqlite`, `<step>::on_postgres`) that reports that step's
/// outcome. The first test of a backend to run plays the whole story (the others wait for it);
/// a step after a failed one is reported as not run, naming the failed step.
struct Story {
    mesh: Option<TestMesh>,
    org: Org,
    s: Scheduling,
    monday: NaiveDate,
    tuesday: NaiveDate,
    /// The booking storm's one winner (cancelled in `cancelling_frees_the_slot`).
    first: Option<Appointment>,
    /// Tuesday 09:00 as confirmed from a hold (the roles look at it), and as checked in.
    booked: Option<Appointment>,
    checked_in: Option<Appointment>,
    /// Okafor's Monday as `the_calendar_shows_live_visits_and_open_time` read it.
    calendar: Option<ListCalendarResponse>,
}

impl Story {
    /// The fixture: a mesh on `backend` with access seeded, Org's and Scheduling's facts.
    async fn seeded(backend: Backend) -> anyhow::Result<Story> {
        let mesh = TestMesh::start(backend).await?;
        mesh.seed_access().await?;
        let mut org = mesh.org_as(pm::demo::ADMIN).await?;
        seed_org(&mesh, &mut org).await?;
        let mut s = mesh.scheduling_as(pm::demo::ADMIN).await?;
        seed_scheduling(&mut s, &mut org).await?;
        let monday = next_monday();
        let tuesday = monday.succ_opt().unwrap();
        Ok(Story {
            mesh: Some(mesh),
            org,
            s,
            monday,
            tuesday,
            first: None,
            booked: None,
            checked_in: None,
            calendar: None,
        })
    }

    fn mesh(&self) -> &TestMesh {
        self.mesh
            .as_ref()
            .expect("the mesh runs until the last step")
    }
}

/// A step of the story.
type Step = for<'a> fn(&'a mut Story) -> futures::future::LocalBoxFuture<'a, anyhow::Result<()>>;

/// Each step's name and outcome, in the story's order.
type Outcomes = Vec<(&'static str, Result<(), String>)>;

/// Runs `steps` in order on a fresh seeded mesh (its own runtime, as `#[tokio::test]` would make),
/// and returns each step's outcome: `Err` with the panic or error, or with the step that failed
/// before it.
fn play(backend: Backend, steps: &[(&'static str, Step)]) -> Outcomes {
    use futures::FutureExt;
    record_panic_locations();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let mut outcomes = Vec::new();
        let mut story = match std::panic::AssertUnwindSafe(Story::seeded(backend))
            .catch_unwind()
            .await
        {
            Ok(Ok(story)) => Some(story),
            Ok(Err(err)) => {
                let why = format!("the fixture (mesh and seed) failed: {err:?}");
                outcomes.extend(steps.iter().map(|(name, _)| (*name, Err(why.clone()))));
                None
            }
            Err(panic) => {
                let why = format!(
                    "the fixture (mesh and seed) panicked: {}",
                    panicked(&*panic)
                );
                outcomes.extend(steps.iter().map(|(name, _)| (*name, Err(why.clone()))));
                None
            }
        };
        if let Some(story) = story.as_mut() {
            let mut failed: Option<&str> = None;
            for (name, step) in steps {
                let outcome = match failed {
                    Some(before) => Err(format!("not run: the earlier step `{before}` failed")),
                    None => match std::panic::AssertUnwindSafe(step(story))
                        .catch_unwind()
                        .await
                    {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(err)) => Err(format!("{err:?}")),
                        Err(panic) => Err(panicked(&*panic)),
                    },
                };
                if outcome.is_err() && failed.is_none() {
                    failed = Some(*name);
                }
                outcomes.push((*name, outcome));
            }
        }
        outcomes
    })
}

thread_local! {
    /// Where the last panic on this thread happened, with its message (set by the hook below).
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Keeps each panic's location and message for the step that caught it (a caught panic's payload
/// has the message only), then lets the default hook print it as usual.
fn record_panic_locations() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = LAST_PANIC.try_with(|last| *last.borrow_mut() = Some(info.to_string()));
            default(info);
        }));
    });
}

/// The panic just caught on this thread: location and message.
fn panicked(payload: &(dyn std::any::Any + Send)) -> String {
    LAST_PANIC
        .with(|last| last.borrow_mut().take())
        .unwrap_or_else(|| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into())
        })
}

/// The story's steps in order, and a test per step and backend reporting its outcome.
macro_rules! story {
    ($($step:ident),* $(,)?) => {
        const STEPS: &[(&str, Step)] = &[$((stringify!($step), |story| Box::pin($step(story)))),*];

        /// The outcome of every step on `backend`, the story played once per test binary.
        fn outcomes(backend: Backend) -> &'static [(&'static str, Result<(), String>)] {
            static SQLITE: std::sync::OnceLock<Outcomes> = std::sync::OnceLock::new();
            static POSTGRES: std::sync::OnceLock<Outcomes> = std::sync::OnceLock::new();
            match backend {
                Backend::Sqlite => SQLITE.get_or_init(|| play(backend, STEPS)),
                Backend::Postgres => POSTGRES.get_or_init(|| play(backend, STEPS)),
            }
        }

        fn check(backend: Backend, step: &str) {
            let outcome = outcomes(backend)
                .iter()
                .find(|(name, _)| *name == step)
                .map(|(_, outcome)| outcome.clone())
                .unwrap_or_else(|| Err(format!("no step {step}")));
            if let Err(why) = outcome {
                panic!("{step} on {backend:?}: {why}");
            }
        }

        $(
            mod $step {
                use super::*;

                #[test]
                fn on_sqlite() {
                    check(Backend::Sqlite, stringify!($step));
                }

                #[test]
                fn on_postgres() {
                    check(Backend::Postgres, stringify!($step));
                }
            }
        )*
    };
}

story!(
    slot_search_offers_the_free_grid_and_explains_the_rest,
    patient_rules_leave_no_slots_and_say_why,
    a_window_ending_before_it_starts_is_invalid,
    refused_bookings_name_their_rule_and_write_nothing,
    a_booking_storm_books_exactly_one,
    an_overlapping_booking_is_refused,
    a_replay_storm_books_once,
    slot_search_skips_what_is_booked,
    cancelling_frees_the_slot_and_keeps_the_history,
    a_lapsed_hold_neither_confirms_nor_blocks,
    confirming_a_hold_rechecks_the_rules,
    a_confirmed_hold_is_checked_in_once,
    completing_a_visit_makes_one_encounter_for_billing,
    the_calendar_shows_live_visits_and_open_time,
    watch_calendar_follows_a_unit_live,
    roles_see_and_do_only_their_part,
    patient_accesses_merge_both_trails_oldest_first,
    only_org_reads_a_services_trail,
    the_audit_slice_records_each_booking_once,
    the_mesh_stops,
);

/// Slot search: Okafor's mornings on the 30-minute grid, where a 30-minute visit plus its
/// 10-minute buffer fits before noon; Lee is explained away (credentialed in CCM only).
async fn slot_search_offers_the_free_grid_and_explains_the_rest(
    st: &mut Story,
) -> anyhow::Result<()> {
    let (s, monday) = (&mut st.s, st.monday);
    let found = find(s, COVERED, FOLLOW_UP, monday).await;
    let expected: Vec<i64> = [(9, 0), (9, 30), (10, 0), (10, 30), (11, 0)]
        .iter()
        .map(|(h, m)| at(monday, *h, *m).timestamp())
        .collect();
    assert_eq!(starts(&found), expected);
    assert!(found.slots.iter().all(|s| s.provider == OKAFOR
        && s.location == MAIN
        && s.payer == "organizations/acme/payers/aetna"));
    assert!(found.exclusions.iter().any(|e| e.provider == LEE
        && e.reason == "PROVIDER_NOT_CREDENTIALED"
        && e.subject == ExclusionSubject::Provider as i32));
    Ok(())
}

/// Patient-level rules: no slots at all, and why.
async fn patient_rules_leave_no_slots_and_say_why(st: &mut Story) -> anyhow::Result<()> {
    let (s, monday) = (&mut st.s, st.monday);
    for (patient, visit, why) in [
        (UNCOVERED, FOLLOW_UP, "PAYER_NOT_ACCEPTED"),
        (UNENROLLED, FOLLOW_UP, "PATIENT_NOT_ENROLLED"),
        (COVERED, WELLNESS, "VISIT_TYPE_NOT_ALLOWED"),
    ] {
        let found = find(s, patient, visit, monday).await;
        assert!(found.slots.is_empty(), "{why}");
        assert!(
            found
                .exclusions
                .iter()
                .any(|e| e.reason == why && e.subject == ExclusionSubject::Patient as i32),
            "{why}: {:?}",
            found.exclusions
        );
    }
    Ok(())
}

/// A window that ends before it starts.
async fn a_window_ending_before_it_starts_is_invalid(st: &mut Story) -> anyhow::Result<()> {
    let (s, monday) = (&mut st.s, st.monday);
    let err = s
        .find_slots(FindSlotsRequest {
            unit: CLINIC.into(),
            patient: COVERED.into(),
            visit_type: FOLLOW_UP.into(),
            window: Some(Interval {
                start_time: Some(ts(at(monday, 12, 0))),
                end_time: Some(ts(at(monday, 9, 0))),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    Ok(())
}

/// Every refused booking names its rule and writes nothing.
async fn refused_bookings_name_their_rule_and_write_nothing(st: &mut Story) -> anyhow::Result<()> {
    let (s, monday) = (&mut st.s, st.monday);
    let yesterday = Utc::now() - chrono::Duration::days(1);
    let past = yesterday - chrono::Duration::seconds(yesterday.timestamp() % 60);
    for (appointment, code, why) in [
        (
            booking(COVERED, OKAFOR, FOLLOW_UP, at(monday, 13, 0)),
            Code::FailedPrecondition,
            "OUTSIDE_AVAILABILITY",
        ),
        (
            booking(COVERED, LEE, FOLLOW_UP, at(monday, 9, 0)),
            Code::FailedPrecondition,
            "PROVIDER_NOT_CREDENTIALED",
        ),
        (
            booking(UNENROLLED, OKAFOR, FOLLOW_UP, at(monday, 9, 0)),
            Code::FailedPrecondition,
            "PATIENT_NOT_ENROLLED",
        ),
        (
            booking(UNCOVERED, OKAFOR, FOLLOW_UP, at(monday, 9, 0)),
            Code::FailedPrecondition,
            "PAYER_NOT_ACCEPTED",
        ),
        (
            booking(COVERED, OKAFOR, WELLNESS, at(monday, 9, 0)),
            Code::FailedPrecondition,
            "VISIT_TYPE_NOT_ALLOWED",
        ),
        (
            booking(COVERED, OKAFOR, FOLLOW_UP, past),
            Code::InvalidArgument,
            "SLOT_IN_THE_PAST",
        ),
    ] {
        let err = s
            .book_appointment(book_request(appointment, ""))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err).as_str()),
            (code, why),
            "{}",
            err.message()
        );
    }
    assert!(appointments(s).await?.is_empty());
    Ok(())
}

/// Booking storm: 64 clients, one provider, one slot, distinct request ids: exactly one wins.
async fn a_booking_storm_books_exactly_one(st: &mut Story) -> anyhow::Result<()> {
    let nine = at(st.monday, 9, 0);
    let s = &mut st.s;
    let storm = (0..64).map(|_| {
        let mut s = s.clone();
        async move {
            s.book_appointment(book_request(
                booking(COVERED, OKAFOR, FOLLOW_UP, nine),
                &uuid::Uuid::new_v4().to_string(),
            ))
            .await
        }
    });
    let results = futures::future::join_all(storm).await;
    let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let refusals: std::collections::BTreeSet<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| format!("{:?} {}: {}", e.code(), reason(e), e.message()))
        .collect();
    assert_eq!(won.len(), 1, "refusals: {refusals:#?}");
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            (err.code(), reason(err).as_str()),
            (Code::FailedPrecondition, "SLOT_UNAVAILABLE")
        );
    }
    let first = won[0].get_ref().clone();
    assert_eq!(first.state, AppointmentState::Booked as i32);
    assert_eq!(first.payer, "organizations/acme/payers/aetna");
    assert_eq!(appointments(s).await?.len(), 1);
    st.first = Some(first);
    Ok(())
}

/// Overlapping the booking (09:30 falls in 09:00-09:40 with the buffer): refused.
async fn an_overlapping_booking_is_refused(st: &mut Story) -> anyhow::Result<()> {
    let err =
        st.s.book_appointment(book_request(
            booking(COVERED, OKAFOR, FOLLOW_UP, at(st.monday, 9, 30)),
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "SLOT_UNAVAILABLE");
    Ok(())
}

/// Replay storm: one request id sent 20 times at once gives one appointment.
async fn a_replay_storm_books_once(st: &mut Story) -> anyhow::Result<()> {
    let (s, monday) = (&mut st.s, st.monday);
    let request_id = uuid::Uuid::new_v4().to_string();
    let replays = (0..20).map(|_| {
        let mut s = s.clone();
        let request_id = request_id.clone();
        async move {
            s.book_appointment(book_request(
                booking(COVERED, OKAFOR, FOLLOW_UP, at(monday, 10, 0)),
                &request_id,
            ))
            .await
        }
    });
    let names: std::collections::BTreeSet<String> = futures::future::join_all(replays)
        .await
        .into_iter()
        .map(|r| r.unwrap().into_inner().name)
        .collect();
    assert_eq!(names.len(), 1);
    assert_eq!(appointments(s).await?.len(), 2);
    Ok(())
}

/// The calendar as search sees it now: 09:00, 09:30, 10:00 and 10:30 are taken or overlap.
async fn slot_search_skips_what_is_booked(st: &mut Story) -> anyhow::Result<()> {
    let (s, monday) = (&mut st.s, st.monday);
    let found = find(s, COVERED, FOLLOW_UP, monday).await;
    assert_eq!(starts(&found), vec![at(monday, 11, 0).timestamp()]);
    assert!(
        found
            .exclusions
            .iter()
            .any(|e| e.reason == "PROVIDER_BOOKED")
    );
    Ok(())
}

/// Cancelling frees the slot; the history keeps what happened.
async fn cancelling_frees_the_slot_and_keeps_the_history(st: &mut Story) -> anyhow::Result<()> {
    let nine = at(st.monday, 9, 0);
    let first = st.first.clone().expect("the storm's booking");
    let s = &mut st.s;
    let cancelled = s
        .cancel_appointment(CancelAppointmentRequest {
            name: first.name.clone(),
            reason: "patient asked".into(),
            etag: first.etag.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(cancelled.state, AppointmentState::Cancelled as i32);
    assert_eq!(cancelled.history.len(), 2);
    let err = s
        .cancel_appointment(CancelAppointmentRequest {
            name: first.name.clone(),
            reason: "again".into(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "WRONG_APPOINTMENT_STATE");
    s.book_appointment(book_request(booking(COVERED, OKAFOR, FOLLOW_UP, nine), ""))
        .await?;
    Ok(())
}

/// A hold that lapses cannot be confirmed, and does not block the slot.
async fn a_lapsed_hold_neither_confirms_nor_blocks(st: &mut Story) -> anyhow::Result<()> {
    let (s, org, monday) = (&mut st.s, &mut st.org, st.monday);
    let mut hold = book_request(booking(COVERED, OKAFOR, FOLLOW_UP, at(monday, 11, 0)), "");
    hold.hold_ttl = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    let held = s.book_appointment(hold).await?.into_inner();
    assert_eq!(held.state, AppointmentState::Held as i32);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let err = s
        .confirm_appointment(ConfirmAppointmentRequest {
            name: held.name.clone(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    // Refused as lapsed, or as expired if the worker's sweep has marked it already.
    assert!(
        ["HOLD_EXPIRED", "WRONG_APPOINTMENT_STATE"].contains(&reason(&err).as_str()),
        "{err:?}"
    );
    // Nor does the calendar show it as holding the time, whether or not it is marked expired yet.
    let calendar = s
        .list_calendar(ListCalendarRequest {
            scope: OKAFOR.into(),
            window: window(monday),
            show_inactive: false,
            raw_availability: false,
        })
        .await?
        .into_inner();
    assert!(!calendar.entries.iter().any(|e| matches!(&e.entry,
        Some(calendar_entry::Entry::Appointment(a)) if a.name == held.name)));
    // The sweep marks it expired with nothing booked in its way, and audits that as its own write.
    let expired = expired_soon(s, &held.name).await?;
    assert_eq!(
        expired.history.last().map(|e| e.reason.as_str()),
        Some("hold lapsed")
    );
    assert!(
        in_trail(org, COVERED, EXPIRE_HOLD, &held.name).await?,
        "the expiry is in the patient's trail"
    );
    s.book_appointment(book_request(
        booking(COVERED, OKAFOR, FOLLOW_UP, at(monday, 11, 0)),
        "",
    ))
    .await?;
    Ok(())
}

/// Confirming re-checks the rules: a hold whose patient lost its coverage meanwhile is refused,
/// and stays a hold.
async fn confirming_a_hold_rechecks_the_rules(st: &mut Story) -> anyhow::Result<()> {
    let (s, org, tuesday) = (&mut st.s, &mut st.org, st.tuesday);
    let mut hold = book_request(booking(WAITING, OKAFOR, FOLLOW_UP, at(tuesday, 11, 0)), "");
    hold.hold_ttl = minutes(5);
    let held = s.book_appointment(hold).await?.into_inner();
    org.delete_coverage(DeleteCoverageRequest {
        name: format!("{WAITING}/coverages/primary"),
        etag: String::new(),
    })
    .await?;
    let err = s
        .confirm_appointment(ConfirmAppointmentRequest {
            name: held.name.clone(),
            etag: held.etag.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "PAYER_NOT_ACCEPTED");
    assert_still_held(s, &held).await?;
    org.create_coverage(CreateCoverageRequest {
        parent: WAITING.into(),
        coverage: Some(Coverage {
            payer: "payers/aetna".into(),
            member_id: "M-1".into(),
            plan: "PPO".into(),
            priority: 1,
            effective_period: since_2024(),
            ..Default::default()
        }),
        coverage_id: "restored".into(),
        request_id: String::new(),
    })
    .await?;
    let confirmed = s
        .confirm_appointment(ConfirmAppointmentRequest {
            name: held.name.clone(),
            etag: held.etag.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(confirmed.state, AppointmentState::Booked as i32);
    Ok(())
}

/// A hold confirmed in time is booked; then the visit's lifecycle: checked in once (a second
/// check-in with the old etag is stale).
async fn a_confirmed_hold_is_checked_in_once(st: &mut Story) -> anyhow::Result<()> {
    let (s, tuesday) = (&mut st.s, st.tuesday);
    let mut hold = book_request(booking(COVERED, OKAFOR, FOLLOW_UP, at(tuesday, 9, 0)), "");
    hold.hold_ttl = minutes(5);
    let held = s.book_appointment(hold).await?.into_inner();
    let booked = s
        .confirm_appointment(ConfirmAppointmentRequest {
            name: held.name.clone(),
            etag: held.etag.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(booked.state, AppointmentState::Booked as i32);
    let checked_in = s
        .check_in_appointment(CheckInAppointmentRequest {
            name: booked.name.clone(),
            etag: booked.etag.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(checked_in.state, AppointmentState::CheckedIn as i32);
    let err = s
        .check_in_appointment(CheckInAppointmentRequest {
            name: booked.name.clone(),
            etag: booked.etag.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "a stale etag");
    st.booked = Some(booked);
    st.checked_in = Some(checked_in);
    Ok(())
}

/// Completing the visit creates its encounter, and Billing's feed carries it once.
async fn completing_a_visit_makes_one_encounter_for_billing(st: &mut Story) -> anyhow::Result<()> {
    let booked = st.booked.clone().expect("the confirmed visit");
    let checked_in = st.checked_in.clone().expect("the checked-in visit");
    let (s, mesh) = (&mut st.s, st.mesh.as_ref().expect("the mesh runs"));
    // A service line pointing at a diagnosis the encounter does not have: refused naming it, and
    // the visit stays as it was (the completion below, with the same etag, succeeds).
    let pointless = s
        .complete_appointment(CompleteAppointmentRequest {
            name: booked.name.clone(),
            etag: checked_in.etag.clone(),
            diagnoses: vec!["E11.9".into()],
            service_lines: vec![ServiceLine {
                code: "99213".into(),
                units: 1,
                diagnosis_pointers: vec![2],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(pointless.code(), Code::InvalidArgument);
    let violations: Vec<String> = pointless
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    assert_eq!(violations, vec!["service_lines[0].diagnosis_pointers[0]"]);
    let done = s
        .complete_appointment(CompleteAppointmentRequest {
            name: booked.name.clone(),
            etag: checked_in.etag.clone(),
            service_codes: vec![],
            diagnoses: vec!["E11.9".into()],
            care_minutes: 20,
            service_lines: vec![],
        })
        .await?
        .into_inner();
    assert_eq!(
        done.appointment.unwrap().state,
        AppointmentState::Completed as i32
    );
    let encounter = done.encounter.unwrap();
    assert_eq!(
        (
            encounter.patient.as_str(),
            encounter.provider.as_str(),
            encounter.care_minutes
        ),
        (COVERED, OKAFOR, 20)
    );
    assert_eq!(
        encounter.service_codes,
        vec!["99213".to_string()],
        "the visit type's hint"
    );
    assert_eq!(
        s.get_encounter(GetEncounterRequest {
            name: encounter.name.clone()
        })
        .await?
        .into_inner(),
        encounter
    );
    let events = drain(&mut mesh.scheduling_as_service("billing").await?, 0).await?;
    assert_eq!(completed(&events, &encounter.name), 1);
    assert!(events.windows(2).all(|w| w[0].sequence < w[1].sequence));
    let err = s
        .stream_events(StreamEventsRequest { after_sequence: 0 })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "people follow WatchCalendar instead"
    );
    Ok(())
}

/// The unified calendar: Okafor's Monday holds the three live visits and the open morning.
async fn the_calendar_shows_live_visits_and_open_time(st: &mut Story) -> anyhow::Result<()> {
    let (s, monday) = (&mut st.s, st.monday);
    let calendar = s
        .list_calendar(ListCalendarRequest {
            scope: OKAFOR.into(),
            window: window(monday),
            show_inactive: false,
            raw_availability: false,
        })
        .await?
        .into_inner();
    assert_eq!(live(&calendar).len(), 3);
    assert!(calendar.entries.iter().any(|e| matches!(&e.entry,
        Some(calendar_entry::Entry::Availability(b)) if b.provider == OKAFOR && b.location == MAIN)));
    // Open time is free time: no block overlaps one of her live visits. The raw rule does.
    let overlapping = |calendar: &ListCalendarResponse| {
        let visits: Vec<(i64, i64)> = live(calendar).iter().map(|a| span_of(a)).collect();
        calendar
            .entries
            .iter()
            .filter_map(|e| match &e.entry {
                Some(calendar_entry::Entry::Availability(b)) => b.interval.as_ref(),
                _ => None,
            })
            .filter(|i| {
                let (start, end) = (seconds(&i.start_time), seconds(&i.end_time));
                visits.iter().any(|&(s, e)| start < e && s < end)
            })
            .count()
    };
    assert_eq!(overlapping(&calendar), 0, "free time leaves the visits out");
    let raw = s
        .list_calendar(ListCalendarRequest {
            scope: OKAFOR.into(),
            window: window(monday),
            show_inactive: false,
            raw_availability: true,
        })
        .await?
        .into_inner();
    assert_eq!(live(&raw).len(), 3);
    assert!(
        overlapping(&raw) > 0,
        "the raw rule still covers the visits"
    );
    st.calendar = Some(calendar);
    Ok(())
}

/// An appointment's `[start, end)` in seconds.
fn span_of(a: &Appointment) -> (i64, i64) {
    let interval = a.interval.as_ref();
    (
        seconds(&interval.and_then(|i| i.start_time)),
        seconds(&interval.and_then(|i| i.end_time)),
    )
}

fn seconds(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().map(|t| t.seconds).unwrap_or_default()
}

/// The appointments of a calendar.
fn live(calendar: &ListCalendarResponse) -> Vec<&Appointment> {
    calendar
        .entries
        .iter()
        .filter_map(|e| match &e.entry {
            Some(calendar_entry::Entry::Appointment(a)) => Some(a),
            _ => None,
        })
        .collect()
}

/// WatchCalendar follows a unit's changes live.
async fn watch_calendar_follows_a_unit_live(st: &mut Story) -> anyhow::Result<()> {
    let calendar = st.calendar.clone().expect("the calendar read before");
    let s = &mut st.s;
    let mut watch = s
        .watch_calendar(WatchCalendarRequest {
            scope: CLINIC.into(),
            after_sequence: calendar.sequence,
        })
        .await?
        .into_inner();
    let change = live(&calendar)[0].clone();
    s.cancel_appointment(CancelAppointmentRequest {
        name: change.name.clone(),
        reason: "clinic closed".into(),
        etag: String::new(),
    })
    .await?;
    let seen = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await??
        .unwrap();
    match seen.kind {
        Some(scheduling_event::Kind::AppointmentChanged(a)) => {
            assert_eq!(
                (a.name, a.state),
                (change.name.clone(), AppointmentState::Cancelled as i32)
            )
        }
        other => panic!("unexpected event {other:?}"),
    }
    Ok(())
}

/// Roles: the billing staff of the clinic may search and book there; the provider may read
/// appointments of the unit it is credentialed in but not book; the CCM program manager sees
/// nothing of the clinic, and cannot tell a clinic appointment from a missing one.
async fn roles_see_and_do_only_their_part(st: &mut Story) -> anyhow::Result<()> {
    let booked = st.booked.clone().expect("the confirmed visit");
    let (monday, tuesday) = (st.monday, st.tuesday);
    let mesh = st.mesh.as_ref().expect("the mesh runs until the last step");
    let mut billing = mesh.scheduling_as("principals/jordan-billing").await?;
    assert!(
        !find(&mut billing, COVERED, FOLLOW_UP, tuesday)
            .await
            .slots
            .is_empty()
    );
    let mut provider = mesh.scheduling_as("principals/dr-okafor").await?;
    provider
        .get_appointment(GetAppointmentRequest {
            name: booked.name.clone(),
        })
        .await?;
    let err = provider
        .book_appointment(book_request(
            booking(COVERED, OKAFOR, FOLLOW_UP, at(tuesday, 10, 0)),
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut manager = mesh.scheduling_as("principals/casey-ccm").await?;
    let theirs = manager
        .get_appointment(GetAppointmentRequest {
            name: booked.name.clone(),
        })
        .await
        .unwrap_err();
    let missing = manager
        .get_appointment(GetAppointmentRequest {
            name: format!("{ORG}/appointments/no-such-thing"),
        })
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), Code::PermissionDenied);
    assert_eq!(missing.code(), Code::PermissionDenied);
    assert!(appointments(&mut manager).await?.is_empty());
    let err = manager
        .list_calendar(ListCalendarRequest {
            scope: CLINIC.into(),
            window: window(monday),
            show_inactive: true,
            raw_availability: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(appointments(&mut st.s).await?.len(), 7);
    Ok(())
}

/// "Who accessed this patient": Org merges its own trail with Scheduling's, oldest first, over
/// pages that carry a cursor per trail.
async fn patient_accesses_merge_both_trails_oldest_first(st: &mut Story) -> anyhow::Result<()> {
    let org = &mut st.org;
    let mut records = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = org
            .list_patient_accesses(ListPatientAccessesRequest {
                patient: COVERED.into(),
                page_size: 7,
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let keys: std::collections::BTreeSet<(String, i64)> =
        records.iter().map(|r| (r.service.clone(), r.seq)).collect();
    assert_eq!(keys.len(), records.len(), "no record twice across pages");
    let times: Vec<(i64, i32)> = records
        .iter()
        .map(|r| r.time.as_ref().map(|t| (t.seconds, t.nanos)).unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    assert!(
        records
            .iter()
            .any(|r| r.service == "scheduling" && r.method.ends_with("/BookAppointment"))
    );
    assert!(records.iter().any(|r| r.service == "org"
        && r.calling_service.contains("scheduling")
        && r.method.ends_with("/BatchGetPatientEligibility")));
    Ok(())
}

/// A service's trail is for Org to read, not for people nor other services: every role is
/// refused, so is a service not declared for it, and a call without a token.
async fn only_org_reads_a_services_trail(st: &mut Story) -> anyhow::Result<()> {
    use pm_api::audit::audit_service_client::AuditServiceClient;
    let mesh = st.mesh();
    let trail_request = || pm_api::audit::ListPatientAccessesRequest {
        patient: COVERED.into(),
        ..Default::default()
    };
    for principal in [
        pm::demo::ADMIN,
        "principals/casey-ccm",
        "principals/dr-okafor",
        "principals/jordan-billing",
    ] {
        let channel = mesh
            .authed(pm::mesh::Service::Scheduling, principal)
            .await?;
        let err = AuditServiceClient::new(channel)
            .list_patient_accesses(trail_request())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{principal}");
    }
    let scheduling_url = mesh.url(pm::mesh::Service::Scheduling);
    let as_service = async |identity: &str| {
        anyhow::Ok(AuditServiceClient::new(
            pm_runtime::client::channel(&mesh.config, identity, &scheduling_url).await?,
        ))
    };
    let own = as_service("org")
        .await?
        .list_patient_accesses(trail_request())
        .await?;
    assert!(
        !own.into_inner().records.is_empty(),
        "Org reads Scheduling's trail"
    );
    let err = as_service("billing")
        .await?
        .list_patient_accesses(trail_request())
        .await
        .unwrap_err();
    // Not declared for the RPC, a service counts as a caller that must bring a token.
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "billing is not declared for it"
    );
    let err = as_service(pm_runtime::tls::CLIENT)
        .await?
        .list_patient_accesses(trail_request())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "a person's tool without a token"
    );
    Ok(())
}

/// The audit trail of the Scheduling slice holds the bookings, naming the patient.
async fn the_audit_slice_records_each_booking_once(st: &mut Story) -> anyhow::Result<()> {
    let mesh = st.mesh();
    let db =
        pm_runtime::Db::open(&mesh.config, pm_scheduling::NAME, pm_scheduling::MIGRATIONS).await?;
    let records = pm_authz::audit::records(&db, 0, 10_000).await.unwrap();
    let bookings = records
        .iter()
        .filter(|r| {
            r.event.method.ends_with("/BookAppointment")
                && r.event.outcome == pm_authz::audit::Outcome::Success
        })
        .count();
    assert_eq!(
        bookings, 7,
        "one record per successful booking (replays answered from the first)"
    );
    assert!(
        records
            .iter()
            .any(|r| r.event.method.ends_with("/FindSlots")
                && r.event.patients == vec![COVERED.to_string()])
    );
    db.close().await;
    Ok(())
}

/// The mesh stops cleanly at the end of the story.
async fn the_mesh_stops(st: &mut Story) -> anyhow::Result<()> {
    st.mesh
        .take()
        .expect("the mesh runs until the last step")
        .stop()
        .await
}

/// Every event after `after` until the stream has been quiet for a moment.
async fn drain(
    s: &mut SchedulingServiceClient<tonic::transport::Channel>,
    after: i64,
) -> anyhow::Result<Vec<SchedulingEvent>> {
    let mut stream = s
        .stream_events(StreamEventsRequest {
            after_sequence: after,
        })
        .await?
        .into_inner();
    let mut events = Vec::new();
    while let Ok(next) = tokio::time::timeout(Duration::from_millis(700), stream.message()).await {
        match next? {
            Some(event) => events.push(event),
            None => break,
        }
    }
    Ok(events)
}

/// How many EncounterCompleted events name `encounter`.
fn completed(events: &[SchedulingEvent], encounter: &str) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(&e.kind,
            Some(scheduling_event::Kind::EncounterCompleted(x)) if x.name == encounter)
        })
        .count()
}

/// Books and completes a visit; returns the encounter's name.
async fn complete_visit(s: &mut Scheduling, start: DateTime<Utc>) -> anyhow::Result<String> {
    let booked = s
        .book_appointment(book_request(booking(COVERED, OKAFOR, FOLLOW_UP, start), ""))
        .await?
        .into_inner();
    let done = s
        .complete_appointment(CompleteAppointmentRequest {
            name: booked.name,
            etag: String::new(),
            service_codes: vec!["99214".into()],
            diagnoses: vec![],
            care_minutes: 0,
            service_lines: vec![],
        })
        .await?
        .into_inner();
    Ok(done.encounter.unwrap().name)
}

/// The outbox across a crash: an encounter committed just before the process dies is delivered
/// after the restart, once; a consumer resuming after its last sequence sees only what is new.
async fn outbox_survives_a_crash(backend: Backend) -> anyhow::Result<()> {
    let mesh = TestMesh::start(backend).await?;
    mesh.seed_access().await?;
    seed_org(&mesh, &mut mesh.org_as(pm::demo::ADMIN).await?).await?;
    let mut s = mesh.scheduling_as(pm::demo::ADMIN).await?;
    seed_scheduling(&mut s, &mut mesh.org_as(pm::demo::ADMIN).await?).await?;
    let monday = next_monday();
    // Committed, and nobody has read it yet when the process dies.
    let first = complete_visit(&mut s, at(monday, 9, 0)).await?;
    let mesh = mesh.kill_and_restart().await?;

    let mut billing = mesh.scheduling_as_service("billing").await?;
    let events = drain(&mut billing, 0).await?;
    assert_eq!(
        completed(&events, &first),
        1,
        "delivered once after the restart"
    );
    let cursor = events.last().unwrap().sequence;

    let mut s = mesh.scheduling_as(pm::demo::ADMIN).await?;
    let second = complete_visit(&mut s, at(monday, 10, 0)).await?;

    // A cancellation, then the process dies at once: the freed time is still offered to the
    // waitlist after the restart (from the outbox), exactly once.
    s.create_waitlist_entry(CreateWaitlistEntryRequest {
        parent: ORG.into(),
        waitlist_entry: Some(WaitlistEntry {
            patient: WAITING.into(),
            unit: CLINIC.into(),
            visit_type: FOLLOW_UP.into(),
            window: window(monday),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await?;
    let freed = s
        .book_appointment(book_request(
            booking(COVERED, OKAFOR, FOLLOW_UP, at(monday, 11, 0)),
            "",
        ))
        .await?
        .into_inner();
    s.cancel_appointment(CancelAppointmentRequest {
        name: freed.name.clone(),
        reason: "patient travelling".into(),
        etag: String::new(),
    })
    .await?;
    let mesh = mesh.kill_and_restart().await?;
    let mut s = mesh.scheduling_as(pm::demo::ADMIN).await?;
    let entries = offered(&mut s).await?;
    assert_eq!(entries[0].state, WaitlistState::Offered as i32);
    let holds: Vec<Appointment> = appointments(&mut s)
        .await?
        .into_iter()
        .filter(|a| a.patient == WAITING && start_of(a) == at(monday, 11, 0).timestamp())
        .collect();
    assert_eq!(holds.len(), 1, "one offer: {holds:?}");
    assert_eq!(holds[0].name, entries[0].offered_appointment);
    let mut billing = mesh.scheduling_as_service("billing").await?;
    let resumed = drain(&mut billing, cursor).await?;
    assert_eq!(completed(&resumed, &first), 0, "nothing twice");
    assert_eq!(completed(&resumed, &second), 1);
    let ids: std::collections::BTreeSet<&str> = events
        .iter()
        .chain(&resumed)
        .map(|e| e.event_id.as_str())
        .collect();
    assert_eq!(
        ids.len(),
        events.len() + resumed.len(),
        "event ids are unique"
    );
    mesh.stop().await
}

/// The waitlist once an offer was made (the worker follows the outbox), or as it is after 10 s.
async fn offered(s: &mut Scheduling) -> anyhow::Result<Vec<WaitlistEntry>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let entries = s
            .list_waitlist_entries(ListWaitlistEntriesRequest {
                parent: ORG.into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .waitlist_entries;
        let done = entries
            .iter()
            .any(|e| e.state == WaitlistState::Offered as i32);
        if done || tokio::time::Instant::now() > deadline {
            return Ok(entries);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The trail's names for Scheduling's own writes.
const EXPIRE_HOLD: &str = "pm.scheduling.internal/UpdateLapsedHoldExpired";
const OFFER: &str = "pm.scheduling.internal/UpdateWaitlistEntryOffered";

/// Whether `patient`'s merged trail holds a record of `method` about `resource`.
async fn in_trail(
    org: &mut Org,
    patient: &str,
    method: &str,
    resource: &str,
) -> anyhow::Result<bool> {
    let records = support::trail(org, patient).await?;
    Ok(records
        .iter()
        .any(|r| r.method == method && r.resources.iter().any(|n| n == resource)))
}

/// The appointment once the waitlist worker's sweep has marked it EXPIRED (it runs about once a
/// second); fails after 10 s.
async fn expired_soon(s: &mut Scheduling, name: &str) -> anyhow::Result<Appointment> {
    for _ in 0..100 {
        let a = s
            .get_appointment(GetAppointmentRequest { name: name.into() })
            .await?
            .into_inner();
        if a.state == AppointmentState::Expired as i32 {
            return Ok(a);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{name} was not marked expired within 10 s")
}

/// Asserts that a refused confirmation left the hold as it was (state and etag).
async fn assert_still_held(s: &mut Scheduling, held: &Appointment) -> anyhow::Result<()> {
    let now = s
        .get_appointment(GetAppointmentRequest {
            name: held.name.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        (now.state, &now.etag),
        (AppointmentState::Held as i32, &held.etag),
        "the refused confirmation wrote nothing"
    );
    Ok(())
}

fn start_of(a: &Appointment) -> i64 {
    a.interval
        .as_ref()
        .unwrap()
        .start_time
        .as_ref()
        .unwrap()
        .seconds
}

/// Rescheduling, recurring series (all or nothing) and the waitlist.
async fn changes(backend: Backend) -> anyhow::Result<()> {
    let mesh = TestMesh::start(backend).await?;
    mesh.seed_access().await?;
    seed_org(&mesh, &mut mesh.org_as(pm::demo::ADMIN).await?).await?;
    let mut s = mesh.scheduling_as(pm::demo::ADMIN).await?;
    seed_scheduling(&mut s, &mut mesh.org_as(pm::demo::ADMIN).await?).await?;
    let monday = next_monday();
    let tuesday = monday.succ_opt().unwrap();

    // Rescheduling to an overlapping time: its own old time does not count against it.
    let booked = s
        .book_appointment(book_request(
            booking(COVERED, OKAFOR, FOLLOW_UP, at(monday, 9, 0)),
            "",
        ))
        .await?
        .into_inner();
    let moved = s
        .reschedule_appointment(RescheduleAppointmentRequest {
            name: booked.name.clone(),
            start_time: Some(ts(at(monday, 9, 30))),
            etag: booked.etag.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(start_of(&moved), at(monday, 9, 30).timestamp());
    assert!(
        moved
            .history
            .last()
            .unwrap()
            .reason
            .starts_with("rescheduled from")
    );
    let moved = s
        .reschedule_appointment(RescheduleAppointmentRequest {
            name: booked.name.clone(),
            start_time: Some(ts(at(monday, 11, 0))),
            ..Default::default()
        })
        .await?
        .into_inner();
    // The old time is free again; a conflicting move is refused and changes nothing.
    let other = s
        .book_appointment(book_request(
            booking(WAITING, OKAFOR, FOLLOW_UP, at(monday, 9, 0)),
            "",
        ))
        .await?
        .into_inner();
    let err = s
        .reschedule_appointment(RescheduleAppointmentRequest {
            name: moved.name.clone(),
            start_time: Some(ts(at(monday, 9, 0))),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "SLOT_UNAVAILABLE");
    let unchanged = s
        .get_appointment(GetAppointmentRequest {
            name: moved.name.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        (start_of(&unchanged), &unchanged.etag),
        (start_of(&moved), &moved.etag)
    );

    // A series that cannot be booked whole is not booked at all, and says which occurrence failed.
    let week_three = tuesday + chrono::Days::new(21);
    s.book_appointment(book_request(
        booking(WAITING, OKAFOR, FOLLOW_UP, at(week_three, 11, 0)),
        "",
    ))
    .await?;
    let before = appointments(&mut s).await?.len();
    let series = |start: DateTime<Utc>, request_id: &str| BookSeriesRequest {
        parent: ORG.into(),
        appointment: Some(booking(COVERED, OKAFOR, FOLLOW_UP, start)),
        count: 6,
        every: Some(prost_types::Duration {
            seconds: 7 * 86_400,
            nanos: 0,
        }),
        request_id: request_id.into(),
    };
    let err = s
        .book_series(series(at(tuesday, 11, 0), ""))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "SLOT_UNAVAILABLE");
    let info = err.get_details_error_info().unwrap();
    assert_eq!(
        info.metadata.get("occurrence").map(String::as_str),
        Some("3")
    );
    assert_eq!(
        appointments(&mut s).await?.len(),
        before,
        "nothing of the series was written"
    );

    // Weekly for 6 weeks at 10:00 New York time, once even when retried.
    let request_id = uuid::Uuid::new_v4().to_string();
    let weekly = s
        .book_series(series(at(tuesday, 10, 0), &request_id))
        .await?
        .into_inner();
    let again = s
        .book_series(series(at(tuesday, 10, 0), &request_id))
        .await?
        .into_inner();
    assert_eq!(weekly, again);
    assert_eq!(weekly.appointments.len(), 6);
    for (i, a) in weekly.appointments.iter().enumerate() {
        let day = tuesday + chrono::Days::new(7 * i as u64);
        assert_eq!(
            start_of(a),
            at(day, 10, 0).timestamp(),
            "10:00 local, week {i}"
        );
        assert_eq!(a.series, weekly.appointments[0].name);
    }
    assert_eq!(appointments(&mut s).await?.len(), before + 6);

    // Across the spring-forward change (New York, 14 March 2027): 10:00 local every week, so
    // 15:00Z before it and 14:00Z after.
    let march = NaiveDate::from_ymd_opt(2027, 3, 2).unwrap();
    let spring = s
        .book_series(BookSeriesRequest {
            count: 3,
            ..series(at(march, 10, 0), "")
        })
        .await?
        .into_inner();
    let utc_hours: Vec<u32> = spring
        .appointments
        .iter()
        .map(|a| DateTime::from_timestamp(start_of(a), 0).unwrap().hour())
        .collect();
    assert_eq!(utc_hours, vec![15, 15, 14]);

    // The waitlist: a cancellation offers the freed slot, as a hold, to the first patient waiting.
    let entry = s
        .create_waitlist_entry(CreateWaitlistEntryRequest {
            parent: ORG.into(),
            waitlist_entry: Some(WaitlistEntry {
                patient: WAITING.into(),
                unit: CLINIC.into(),
                visit_type: FOLLOW_UP.into(),
                window: window(monday),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(entry.state, WaitlistState::Waiting as i32);
    s.cancel_appointment(CancelAppointmentRequest {
        name: moved.name.clone(),
        reason: "patient travelling".into(),
        etag: String::new(),
    })
    .await?;
    // The waitlist worker makes the offer from the outbox, moments after the cancellation.
    let entries = offered(&mut s).await?;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].state, WaitlistState::Offered as i32);
    let offer = s
        .get_appointment(GetAppointmentRequest {
            name: entries[0].offered_appointment.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        (offer.patient.as_str(), offer.state, start_of(&offer)),
        (
            WAITING,
            AppointmentState::Held as i32,
            at(monday, 11, 0).timestamp()
        )
    );
    // The offer is the service's own change of the patient's waitlist entry: in the trail.
    let mut org = mesh.org_as(pm::demo::ADMIN).await?;
    assert!(
        in_trail(&mut org, WAITING, OFFER, &entries[0].name).await?,
        "the offer is in the patient's trail"
    );
    let confirmed = s
        .confirm_appointment(ConfirmAppointmentRequest {
            name: offer.name.clone(),
            etag: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(confirmed.state, AppointmentState::Booked as i32);
    let _ = other;

    // Time off takes time out of search and shows on the calendar as blocked.
    let later = monday + chrono::Days::new(14);
    s.create_availability_exception(CreateAvailabilityExceptionRequest {
        parent: OKAFOR.into(),
        availability_exception: Some(AvailabilityException {
            kind: ExceptionKind::TimeOff as i32,
            interval: Some(Interval {
                start_time: Some(ts(at(later, 9, 0))),
                end_time: Some(ts(at(later, 10, 30))),
            }),
            description: "training".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await?;
    let found = find(&mut s, COVERED, FOLLOW_UP, later).await;
    assert_eq!(
        starts(&found),
        vec![at(later, 10, 30).timestamp(), at(later, 11, 0).timestamp()]
    );
    let calendar = s
        .list_calendar(ListCalendarRequest {
            scope: OKAFOR.into(),
            window: window(later),
            show_inactive: false,
            raw_availability: false,
        })
        .await?
        .into_inner();
    assert!(calendar.entries.iter().any(|e| matches!(&e.entry,
        Some(calendar_entry::Entry::Blocked(b)) if b.kind == ExceptionKind::TimeOff as i32)));
    mesh.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_sqlite() -> anyhow::Result<()> {
    changes(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_postgres() -> anyhow::Result<()> {
    changes(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_crash_on_sqlite() -> anyhow::Result<()> {
    outbox_survives_a_crash(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_crash_on_postgres() -> anyhow::Result<()> {
    outbox_survives_a_crash(Backend::Postgres).await
}

/// A visit type that needs a room: slot search and booking pick a free room at the location, two
/// visits at the same time need two rooms, and a refusal for want of a room writes nothing.
async fn rooms(backend: Backend) -> anyhow::Result<()> {
    let mesh = TestMesh::start(backend).await?;
    mesh.seed_access().await?;
    let mut org = mesh.org_as(pm::demo::ADMIN).await?;
    seed_org(&mesh, &mut org).await?;
    let mut s = mesh.scheduling_as(pm::demo::ADMIN).await?;
    seed_scheduling(&mut s, &mut org).await?;
    let monday = next_monday();
    // Lee works in the clinic too, so two providers can see patients at once.
    org.create_credential(CreateCredentialRequest {
        parent: LEE.into(),
        credential: Some(Credential {
            unit: CLINIC.into(),
            state: CredentialState::Active as i32,
            effective_period: since_2024(),
            ..Default::default()
        }),
        credential_id: "clinic".into(),
        request_id: String::new(),
    })
    .await?;
    let procedure = format!("{CLINIC}/visitTypes/procedure");
    s.create_visit_type(CreateVisitTypeRequest {
        parent: CLINIC.into(),
        visit_type: Some(VisitType {
            code: "procedure".into(),
            display_name: "Procedure".into(),
            duration: minutes(30),
            needs_room: true,
            ..Default::default()
        }),
        visit_type_id: "procedure".into(),
        request_id: String::new(),
    })
    .await?;
    let room = |id: &str| CreateRoomRequest {
        parent: MAIN.into(),
        room: Some(Room {
            display_name: format!("Exam {id}"),
            ..Default::default()
        }),
        room_id: id.into(),
        request_id: String::new(),
    };
    let exam_1 = s.create_room(room("exam-1")).await?.into_inner().name;

    // Search offers the room with every slot; the booking takes it without being told.
    let found = find(&mut s, COVERED, &procedure, monday).await;
    assert!(!found.slots.is_empty());
    assert!(found.slots.iter().all(|slot| slot.room == exam_1));
    let first = s
        .book_appointment(book_request(
            booking(COVERED, OKAFOR, &procedure, at(monday, 9, 0)),
            "",
        ))
        .await?
        .into_inner();
    assert_eq!(first.room, exam_1);

    // The same time with the other provider: the only room is taken, nothing is written.
    let before = appointments(&mut s).await?.len();
    let err = s
        .book_appointment(book_request(
            booking(WAITING, LEE, &procedure, at(monday, 9, 0)),
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "SLOT_UNAVAILABLE");
    assert_eq!(appointments(&mut s).await?.len(), before);
    // Naming the taken room is refused too.
    let mut named = booking(WAITING, LEE, &procedure, at(monday, 9, 0));
    named.room = exam_1.clone();
    let err = s
        .book_appointment(book_request(named, ""))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "SLOT_UNAVAILABLE");
    assert_eq!(appointments(&mut s).await?.len(), before);

    // A second room makes the second visit possible, in that room.
    let exam_2 = s.create_room(room("exam-2")).await?.into_inner().name;
    let second = s
        .book_appointment(book_request(
            booking(WAITING, LEE, &procedure, at(monday, 9, 0)),
            "",
        ))
        .await?
        .into_inner();
    assert_eq!(second.room, exam_2);
    // Both rooms are busy at 09:00 now: no slot there for a third patient.
    let found = find(&mut s, UNCOVERED, &procedure, monday).await;
    let nine = at(monday, 9, 0).timestamp();
    assert!(!starts(&found).contains(&nine));
    mesh.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_on_sqlite() -> anyhow::Result<()> {
    rooms(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_on_postgres() -> anyhow::Result<()> {
    rooms(Backend::Postgres).await
}

/// A graceful stop seals the audit records the last writes staged before the slice's database
/// closes: nothing is left for the next start, and no "could not be sealed" on the way out.
#[tokio::test]
async fn a_graceful_stop_seals_every_staged_audit_record() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    mesh.seed_access().await?;
    seed_org(&mesh, &mut mesh.org_as(pm::demo::ADMIN).await?).await?;
    let mut s = mesh.scheduling_as(pm::demo::ADMIN).await?;
    seed_scheduling(&mut s, &mut mesh.org_as(pm::demo::ADMIN).await?).await?;
    let booked = s
        .book_appointment(book_request(
            booking(COVERED, OKAFOR, FOLLOW_UP, at(next_monday(), 9, 0)),
            "",
        ))
        .await?
        .into_inner();
    // Stop at once, before the writer's timer seals the booking's record; keep the data.
    let TestMesh {
        mesh: running,
        config,
        _dir: keep,
        ..
    } = mesh;
    running.stop(Duration::from_secs(10)).await?;
    let db = pm_runtime::Db::open(&config, pm_scheduling::NAME, pm_scheduling::MIGRATIONS).await?;
    assert_eq!(pm_authz::audit::seal(&db).await?, 0, "nothing left staged");
    let records = pm_authz::audit::records(&db, 0, 10_000).await?;
    assert!(
        records
            .iter()
            .any(|r| r.event.method.ends_with("/BookAppointment")
                && r.event.resources.contains(&booked.name))
    );
    db.close().await;
    drop(keep);
    Ok(())
}

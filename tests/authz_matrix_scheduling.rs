//! The authorization matrix of the Scheduling service, generated from the descriptor set
//! (`pm_api::RULES`): every Scheduling RPC × every demo role × (a resource in the role's scope, one
//! out of it, one that does not exist), each outcome compared with the policy table
//! (`pm_authz::policy::role_grants`). The mesh (Org, RBAC, Scheduling) runs in-process over mTLS on
//! SQLite, seeded through the services' public APIs.
//!
//! The fixture: `organizations/acme` has two sibling units, north-clinic (Jordan's, billing staff;
//! Dr. Okafor is credentialed there) and ccm-program (Casey's, program manager; Dr. Lee is
//! credentialed there, Dr. Okafor is not). Each unit has its provider, an enrolled and covered
//! patient, a location with a room, a visit type, a Monday availability rule, an availability
//! exception, a waitlist entry, a booked appointment and a completed one (and so an encounter).
//! `organizations/other`, seeded by its own administrator (who has no binding in acme, nor acme's
//! principals in it), has one of each: it is the administrator's "out of scope". A unit-scoped
//! role's "out of scope" is the other acme unit's world; the RPCs authorized at the organization
//! level (provider- and location-parented resources) then pass, and a last block sends every RPC of
//! those roles to `organizations/other`, which must refuse.
//!
//! No call changes state, so the matrix does not depend on its order: Creates and bookings carry a
//! request that fails validation only after the object-level check (no body, no weekday, no window,
//! a hold of 0 seconds, a series of 0 occurrences, a reschedule without a start), the lifecycle
//! verbs and Deletes a stale etag, ConfirmAppointment a booked (not held) appointment. An allowed
//! write therefore answers INVALID_ARGUMENT, ABORTED, FAILED_PRECONDITION or NOT_FOUND, a refused
//! one PERMISSION_DENIED; a write that answers OK fails the test. Narrowed Lists (and the
//! organization's calendar, listed or watched) must return exactly what the role's units hold.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::NaiveDate;
use pm::mesh::Service;
use pm_api::MethodRule;
use pm_api::org::org_service_client::OrgServiceClient;
use pm_api::org::{
    BillingProfile, Coverage, CreateCoverageRequest, CreateCredentialRequest,
    CreateEnrollmentRequest, CreateLocationRequest, CreateOrganizationRequest,
    CreatePatientRequest, CreateProviderRequest, CreateServiceUnitRequest, Credential,
    CredentialState, Enrollment, GetPatientRequest, ListEnrollmentsRequest, Location, Organization,
    Patient, PayerContract, Provider, ServiceUnit, UnitKind, WorkflowRules,
};
use pm_api::scheduling::calendar_entry::Entry;
use pm_api::scheduling::scheduling_event::Kind as EventKind;
use pm_api::scheduling::scheduling_service_client::SchedulingServiceClient;
use pm_api::scheduling::*;
use pm_api::types::{Date, Interval};
use pm_authz::policy::Role;
use pm_runtime::client::AuthedChannel;
use pm_runtime::config::Backend;
use pm_runtime::names::organization_of;
use pm_runtime::tls;
use support::TestMesh;
use support::matrix::{
    CASES, Case, Expect, Findings, Level, NOBODY, Reply, RoleFixture, STALE, Tally, Verdict,
    classify, code_of, detail_with_items, expect, is_read, judge, many, methods_of, one, principal,
    refusals, run_role,
};
use tonic::Code;

type Org = OrgServiceClient<AuthedChannel>;
type Scheduling = SchedulingServiceClient<AuthedChannel>;

const ACME: &str = pm::demo::ORG;
/// A second organization: out of scope for every principal of the demo, the administrator included.
const OTHER: &str = "organizations/other";
const OTHER_ADMIN: &str = "principals/other-admin";
const SCHEDULING_SERVICE: &str = "/pm.scheduling.v1.SchedulingService/";
/// The visit type every unit offers.
const VISIT: &str = "follow-up";

// One unit's world, as seeded in Org and Scheduling.

/// A unit with its provider (credentialed there), its patient (enrolled there, covered by a payer
/// the unit accepts), its location (with one room) and, in Scheduling, a visit type, a Monday
/// availability rule of the provider at the location, an availability exception of the provider, a
/// waitlist entry `{short}-waiting` of the patient, an appointment `{short}-booked` (booked) and an
/// appointment `{short}-done` (completed, so the encounter `{short}-done`).
#[derive(Debug, Clone, Copy)]
struct Place {
    organization: &'static str,
    unit: &'static str,
    short: &'static str,
    provider: &'static str,
    npi: &'static str,
    patient: &'static str,
    location: &'static str,
    room: &'static str,
}

const NORTH: Place = Place {
    organization: ACME,
    unit: "north-clinic",
    short: "north",
    provider: "dr-okafor",
    npi: "1234567893",
    patient: "pat-north",
    location: "main",
    room: "exam-1",
};

const CCM: Place = Place {
    organization: ACME,
    unit: "ccm-program",
    short: "ccm",
    provider: "dr-lee",
    npi: "1987654328",
    patient: "pat-ccm",
    location: "annex",
    room: "exam-2",
};

const PLANT: Place = Place {
    organization: OTHER,
    unit: "plant-clinic",
    short: "plant",
    provider: "dr-gil",
    npi: "1234567893",
    patient: "pat-plant",
    location: "hq",
    room: "exam-1",
};

impl Place {
    /// The request_id the place's charge was entered with.
    fn charge_request(&self) -> String {
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, self.short.as_bytes()).to_string()
    }
    /// The charge seeded in the place (named after its request_id).
    fn charge(&self) -> String {
        pm_billing::handlers::manual_charge_name(self.organization, &self.charge_request())
    }
    /// The claim of the place's charge (assembled at seeding).
    fn claim(&self) -> String {
        pm_billing::claiming::claim_name(self.organization, &[self.charge()])
    }
    fn fee_schedule(&self) -> String {
        format!("{}/feeSchedules/main-schedule", self.organization)
    }
    fn unit(&self) -> String {
        format!("{}/units/{}", self.organization, self.unit)
    }
    fn visit_type(&self) -> String {
        format!("{}/visitTypes/{VISIT}", self.unit())
    }
    fn provider(&self) -> String {
        format!("{}/providers/{}", self.organization, self.provider)
    }
    fn patient(&self) -> String {
        format!("{}/patients/{}", self.organization, self.patient)
    }
    fn location(&self) -> String {
        format!("{}/locations/{}", self.organization, self.location)
    }
    fn room(&self) -> String {
        format!("{}/rooms/{}", self.location(), self.room)
    }
    fn rule(&self) -> String {
        format!("{}/availabilityRules/monday", self.provider())
    }
    fn exception(&self) -> String {
        format!("{}/availabilityExceptions/vacation", self.provider())
    }
    fn booked(&self) -> String {
        format!("{}/appointments/{}-booked", self.organization, self.short)
    }
    fn done(&self) -> String {
        format!("{}/appointments/{}-done", self.organization, self.short)
    }
    fn encounter(&self) -> String {
        format!("{}/encounters/{}-done", self.organization, self.short)
    }
    /// The organization's payer, billing entity and contract (Billing's, organization-level).
    fn payer(&self) -> String {
        format!("{}/payers/main-payer", self.organization)
    }
    fn billing_entity(&self) -> String {
        format!("{}/billingEntities/main-entity", self.organization)
    }
    fn contract(&self) -> String {
        format!("{}/contracts/main-contract", self.organization)
    }
    fn waitlist_entry(&self) -> String {
        format!(
            "{}/waitlistEntries/{}-waiting",
            self.organization, self.short
        )
    }
}

// Seeding, through Org's and Scheduling's public APIs.

use support::time::{at, minutes, next_monday, since_2024, ts};

/// The whole of `day` (New York).
fn day_window(day: NaiveDate) -> Option<Interval> {
    Some(Interval {
        start_time: Some(ts(at(day, 0, 0))),
        end_time: Some(ts(at(day.succ_opt().unwrap(), 0, 0))),
    })
}

/// An organization in Org: `places` (all of it) with their units, providers and credentials,
/// patients with enrollments and coverage, and locations.
async fn seed_org(
    org: &mut Org,
    organization: &str,
    display_name: &str,
    places: &[Place],
) -> anyhow::Result<()> {
    org.create_organization(CreateOrganizationRequest {
        organization: Some(Organization {
            display_name: display_name.into(),
            time_zone: "America/New_York".into(),
            ..Default::default()
        }),
        organization_id: organization.trim_start_matches("organizations/").into(),
        request_id: String::new(),
    })
    .await?;
    for place in places {
        org.create_service_unit(CreateServiceUnitRequest {
            parent: organization.into(),
            service_unit: Some(ServiceUnit {
                display_name: place.unit.into(),
                kind: UnitKind::Clinic as i32,
                billing_profile: Some(BillingProfile {
                    accepted_payers: vec![PayerContract {
                        payer: "payers/aetna".into(),
                        contract: String::new(),
                    }],
                    self_pay_allowed: Some(false),
                    ..Default::default()
                }),
                workflow_rules: Some(WorkflowRules {
                    allowed_visit_types: vec![VISIT.into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            service_unit_id: place.unit.into(),
            request_id: String::new(),
        })
        .await?;
        org.create_location(CreateLocationRequest {
            parent: organization.into(),
            location: Some(Location {
                display_name: place.location.into(),
                time_zone: "America/New_York".into(),
                ..Default::default()
            }),
            location_id: place.location.into(),
            request_id: String::new(),
        })
        .await?;
        org.create_provider(CreateProviderRequest {
            parent: organization.into(),
            provider: Some(Provider {
                display_name: place.provider.into(),
                npi: place.npi.into(),
                taxonomy_code: "207Q00000X".into(),
                ..Default::default()
            }),
            provider_id: place.provider.into(),
            request_id: String::new(),
        })
        .await?;
        org.create_credential(CreateCredentialRequest {
            parent: place.provider(),
            credential: Some(Credential {
                unit: place.unit(),
                state: CredentialState::Active as i32,
                effective_period: since_2024(),
                ..Default::default()
            }),
            credential_id: place.unit.into(),
            request_id: String::new(),
        })
        .await?;
        org.create_patient(CreatePatientRequest {
            parent: organization.into(),
            patient: Some(Patient {
                given_name: "Matrix".into(),
                family_name: format!("Case-{}", place.patient),
                birth_date: Some(Date {
                    year: 1950,
                    month: 1,
                    day: 1,
                }),
                ..Default::default()
            }),
            patient_id: place.patient.into(),
            request_id: String::new(),
        })
        .await?;
        org.create_enrollment(CreateEnrollmentRequest {
            parent: place.patient(),
            enrollment: Some(Enrollment {
                unit: place.unit(),
                ..Default::default()
            }),
            enrollment_id: place.short.into(),
            request_id: String::new(),
        })
        .await?;
        org.create_coverage(CreateCoverageRequest {
            parent: place.patient(),
            coverage: Some(Coverage {
                payer: "payers/aetna".into(),
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

/// A place's side in Scheduling, by its organization's administrator: the visit type, the Monday
/// rule, the exception, the room, the waitlist entry, and two appointments on `monday` (09:00
/// booked, 10:00 completed).
async fn seed_scheduling(
    s: &mut Scheduling,
    place: &Place,
    monday: NaiveDate,
) -> anyhow::Result<()> {
    s.create_visit_type(CreateVisitTypeRequest {
        parent: place.unit(),
        visit_type: Some(VisitType {
            code: VISIT.into(),
            display_name: "Follow-up".into(),
            duration: minutes(30),
            buffer_after: minutes(10),
            ..Default::default()
        }),
        visit_type_id: VISIT.into(),
        request_id: String::new(),
    })
    .await?;
    s.create_availability_rule(CreateAvailabilityRuleRequest {
        parent: place.provider(),
        availability_rule: Some(AvailabilityRule {
            unit: place.unit(),
            location: place.location(),
            weekday: Weekday::Monday as i32,
            start_time: "09:00".into(),
            end_time: "12:00".into(),
            effective_from: Some(Date {
                year: 2024,
                month: 1,
                day: 1,
            }),
            ..Default::default()
        }),
        availability_rule_id: "monday".into(),
        request_id: String::new(),
    })
    .await?;
    // A week after the Monday used here: it takes nothing away from the bookings below.
    let later = monday + chrono::Days::new(7);
    s.create_availability_exception(CreateAvailabilityExceptionRequest {
        parent: place.provider(),
        availability_exception: Some(AvailabilityException {
            kind: ExceptionKind::TimeOff as i32,
            interval: day_window(later),
            description: "authorization matrix".into(),
            ..Default::default()
        }),
        availability_exception_id: "vacation".into(),
        request_id: String::new(),
    })
    .await?;
    s.create_room(CreateRoomRequest {
        parent: place.location(),
        room: Some(Room {
            display_name: format!("{} exam room", place.short),
            ..Default::default()
        }),
        room_id: place.room.into(),
        request_id: String::new(),
    })
    .await?;
    // The patient waits for an earlier visit: nothing is cancelled here, so nothing is offered.
    s.create_waitlist_entry(CreateWaitlistEntryRequest {
        parent: place.organization.into(),
        waitlist_entry: Some(WaitlistEntry {
            patient: place.patient(),
            unit: place.unit(),
            visit_type: place.visit_type(),
            window: day_window(monday),
            ..Default::default()
        }),
        waitlist_entry_id: format!("{}-waiting", place.short),
        request_id: String::new(),
    })
    .await?;
    for (id, hour) in [("booked", 9), ("done", 10)] {
        let booked = s
            .book_appointment(BookAppointmentRequest {
                parent: place.organization.into(),
                appointment: Some(Appointment {
                    unit: place.unit(),
                    patient: place.patient(),
                    provider: place.provider(),
                    location: place.location(),
                    visit_type: place.visit_type(),
                    interval: Some(Interval {
                        start_time: Some(ts(at(monday, hour, 0))),
                        end_time: None,
                    }),
                    ..Default::default()
                }),
                hold_ttl: None,
                request_id: String::new(),
                appointment_id: format!("{}-{id}", place.short),
            })
            .await?
            .into_inner();
        if id == "done" {
            s.complete_appointment(CompleteAppointmentRequest {
                name: booked.name,
                etag: booked.etag,
                ..Default::default()
            })
            .await?;
        }
    }
    Ok(())
}

/// The demo's principals and bindings in acme (RBAC), both organizations in Org, and their
/// scheduling. `organizations/other` is seeded in Scheduling first, so that the outbox's first
/// event (which WatchCalendar with `after_sequence = 1` skips) is not one of acme's.
async fn seed(mesh: &TestMesh, monday: NaiveDate) -> anyhow::Result<()> {
    mesh.seed_access().await?;
    principal(mesh, OTHER_ADMIN, Some(OTHER)).await?;
    mesh.seed_payers(OTHER_ADMIN, OTHER, &["aetna"]).await?;
    mesh.seed_payers(pm::demo::ADMIN, ACME, &["aetna"]).await?;
    seed_org(
        &mut mesh.org_as(OTHER_ADMIN).await?,
        OTHER,
        "Other Health",
        &[PLANT],
    )
    .await?;
    seed_org(
        &mut mesh.org_as(pm::demo::ADMIN).await?,
        ACME,
        "Acme",
        &[NORTH, CCM],
    )
    .await?;
    seed_scheduling(&mut mesh.scheduling_as(OTHER_ADMIN).await?, &PLANT, monday).await?;
    let mut admin = mesh.scheduling_as(pm::demo::ADMIN).await?;
    for place in [NORTH, CCM] {
        seed_scheduling(&mut admin, &place, monday).await?;
    }
    seed_billing(mesh, OTHER_ADMIN, &PLANT, monday).await?;
    seed_billing(mesh, pm::demo::ADMIN, &NORTH, monday).await?;
    seed_charge(mesh, pm::demo::ADMIN, &CCM, monday).await?;
    // Each place's charge on its own claim.
    for (admin, organization) in [(OTHER_ADMIN, OTHER), (pm::demo::ADMIN, ACME)] {
        mesh.billing_as(admin)
            .await?
            .assemble_claims(pm_api::billing::AssembleClaimsRequest {
                parent: organization.into(),
            })
            .await?;
    }
    for place in [PLANT, NORTH, CCM] {
        let claim = mesh
            .billing_as(if place.organization == OTHER {
                OTHER_ADMIN
            } else {
                pm::demo::ADMIN
            })
            .await?
            .get_claim(pm_api::billing::GetClaimRequest {
                name: place.claim(),
            })
            .await?
            .into_inner();
        assert_eq!(claim.unit, place.unit());
    }
    Ok(())
}

/// A payer, a billing entity and a contract of `place`'s organization (Billing's configuration sits
/// at the organization level).
async fn seed_billing(
    mesh: &TestMesh,
    admin: &str,
    place: &Place,
    monday: NaiveDate,
) -> anyhow::Result<()> {
    use pm_api::billing::*;
    let mut billing = mesh.billing_as(admin).await?;
    let parent = place.organization.to_string();
    billing
        .create_payer(CreatePayerRequest {
            parent: parent.clone(),
            payer: Some(Payer {
                display_name: "Main payer".into(),
                payer_id: "MAINPAYER".into(),
                claim_filing_indicator: "CI".into(),
                timely_filing_days: 180,
                ..Default::default()
            }),
            payer_id: "main-payer".into(),
            request_id: String::new(),
        })
        .await?;
    billing
        .create_billing_entity(CreateBillingEntityRequest {
            parent: parent.clone(),
            billing_entity: Some(BillingEntity {
                display_name: "Main entity".into(),
                legal_name: "MAIN ENTITY".into(),
                npi: place.npi.into(),
                tax_id: "12-3456789".into(),
                taxonomy: "261QP2300X".into(),
                billing_address: Some(pm_api::types::PostalAddress {
                    address_lines: vec!["1 Main Street".into()],
                    locality: "Boston".into(),
                    administrative_area: "MA".into(),
                    postal_code: "021101234".into(),
                    region_code: "US".into(),
                }),
                ..Default::default()
            }),
            billing_entity_id: "main-entity".into(),
            request_id: String::new(),
        })
        .await?;
    billing
        .create_contract(CreateContractRequest {
            parent,
            contract: Some(Contract {
                display_name: "Main contract".into(),
                payer: place.payer(),
                billing_entity: place.billing_entity(),
                units: vec![place.unit()],
                effective_from: Some(Date {
                    year: 2026,
                    month: 1,
                    day: 1,
                }),
                ..Default::default()
            }),
            contract_id: "main-contract".into(),
            request_id: String::new(),
        })
        .await?;
    billing
        .create_fee_schedule(CreateFeeScheduleRequest {
            parent: place.organization.into(),
            fee_schedule: Some(FeeSchedule {
                display_name: "Main schedule".into(),
                scope: Some(FeeScheduleScope {
                    target: Some(fee_schedule_scope::Target::Organization(true)),
                }),
                ..Default::default()
            }),
            fee_schedule_id: "main-schedule".into(),
            request_id: String::new(),
        })
        .await?;
    billing
        .create_fee_schedule_version(CreateFeeScheduleVersionRequest {
            parent: place.fee_schedule(),
            fee_schedule_version: Some(FeeScheduleVersion {
                effective_from: Some(Date {
                    year: 2026,
                    month: 1,
                    day: 1,
                }),
                ..Default::default()
            }),
            csv: "code,modifiers,amount,description\n99213,,95.00,visit\n".into(),
            fee_schedule_version_id: "v1".into(),
            request_id: String::new(),
        })
        .await?;
    billing
        .create_routing_rule(CreateRoutingRuleRequest {
            parent: place.organization.into(),
            routing_rule: Some(RoutingRule {
                code: "99214".into(),
                billing_entity: place.billing_entity(),
                reason: "test".into(),
                ..Default::default()
            }),
            routing_rule_id: "main-rule".into(),
            request_id: String::new(),
        })
        .await?;
    seed_charge(mesh, admin, place, monday).await
}

/// A charge entered by hand for `place`'s patient in its unit ([`Place::charge`]).
async fn seed_charge(
    mesh: &TestMesh,
    admin: &str,
    place: &Place,
    monday: NaiveDate,
) -> anyhow::Result<()> {
    use chrono::Datelike;
    use pm_api::billing::*;
    let charge = mesh
        .billing_as(admin)
        .await?
        .create_charge(CreateChargeRequest {
            parent: place.organization.into(),
            charge: Some(Charge {
                patient: place.patient(),
                unit: place.unit(),
                provider: place.provider(),
                payer: place.payer(),
                code: "99213".into(),
                units: 1,
                diagnoses: vec!["E11.9".into()],
                service_date: Some(Date {
                    year: monday.year(),
                    month: monday.month() as i32,
                    day: monday.day() as i32,
                }),
                ..Default::default()
            }),
            request_id: place.charge_request(),
        })
        .await?
        .into_inner();
    assert_eq!(charge.name, place.charge());
    Ok(())
}

// Each role's resources: in its scope, out of it, missing.

struct Fixture {
    principal: &'static str,
    role: Role,
    scope: &'static str,
    /// The world in the role's scope.
    inside: Place,
    /// The world out of it: the other acme unit's for a unit-scoped role, another organization's
    /// for the administrator.
    outside: Place,
    /// The places whose unit the role sees: what its narrowed Lists must return, exactly.
    visible: &'static [Place],
    /// The Monday the appointments are on.
    monday: NaiveDate,
}

/// The names a call is made about, for one case.
struct Names {
    organization: String,
    unit: String,
    visit_type: String,
    provider: String,
    patient: String,
    location: String,
    room: String,
    rule: String,
    exception: String,
    appointment: String,
    encounter: String,
    waitlist_entry: String,
}

impl Fixture {
    fn names(&self, case: Case) -> Names {
        let place = match case {
            Case::InScope => self.inside,
            Case::OutOfScope => self.outside,
            Case::Missing => {
                // Nothing of these exists; the rest (a patient or a provider to book with) is the
                // role's own.
                let inside = self.inside;
                let unit = format!("{ACME}/units/nowhere");
                return Names {
                    organization: "organizations/nowhere".into(),
                    visit_type: format!("{unit}/visitTypes/{VISIT}"),
                    unit,
                    provider: format!("{ACME}/providers/nobody"),
                    patient: inside.patient(),
                    location: format!("{ACME}/locations/nowhere"),
                    room: format!("{}/rooms/nowhere", inside.location()),
                    rule: format!("{}/availabilityRules/nowhere", inside.provider()),
                    exception: format!("{}/availabilityExceptions/nowhere", inside.provider()),
                    appointment: format!("{ACME}/appointments/nowhere"),
                    encounter: format!("{ACME}/encounters/nowhere"),
                    waitlist_entry: format!("{ACME}/waitlistEntries/nowhere"),
                };
            }
        };
        Names {
            organization: place.organization.into(),
            unit: place.unit(),
            visit_type: place.visit_type(),
            provider: place.provider(),
            patient: place.patient(),
            location: place.location(),
            room: place.room(),
            rule: place.rule(),
            exception: place.exception(),
            appointment: place.booked(),
            encounter: place.encounter(),
            waitlist_entry: place.waitlist_entry(),
        }
    }
}

fn availability_item(unit: &str) -> String {
    format!("availability of {unit}")
}

fn fixtures(monday: NaiveDate) -> Vec<Fixture> {
    vec![
        Fixture {
            principal: pm::demo::ADMIN,
            role: Role::OrganizationAdministrator,
            scope: "organizations/acme",
            inside: NORTH,
            outside: PLANT,
            visible: &[NORTH, CCM],
            monday,
        },
        Fixture {
            principal: "principals/casey-ccm",
            role: Role::ProgramManager,
            scope: "units/ccm-program",
            inside: CCM,
            outside: NORTH,
            visible: &[CCM],
            monday,
        },
        Fixture {
            principal: "principals/dr-okafor",
            role: Role::Provider,
            scope: "providers/dr-okafor, credentialed in units/north-clinic",
            inside: NORTH,
            outside: CCM,
            visible: &[NORTH],
            monday,
        },
        Fixture {
            principal: "principals/jordan-billing",
            role: Role::BillingStaff,
            // lakeside-clinic is not seeded in Org here.
            scope: "units/north-clinic, units/lakeside-clinic",
            inside: NORTH,
            outside: CCM,
            visible: &[NORTH],
            monday,
        },
    ]
}

// One call per (method, case).

/// The appointments a WatchCalendar stream sends until it has been quiet for a second (the backlog
/// comes at once; the stream then waits for new commits).
async fn drain(mut stream: tonic::Streaming<SchedulingEvent>) -> Reply {
    let mut seen = BTreeSet::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
            Err(_) | Ok(Ok(None)) => break,
            Ok(Ok(Some(event))) => {
                if let Some(EventKind::AppointmentChanged(a)) = event.kind {
                    seen.insert(a.name);
                }
            }
            Ok(Err(status)) => return Err(status),
        }
    }
    Ok(Some(seen.into_iter().collect()))
}

fn calendar_items(calendar: ListCalendarResponse) -> Vec<String> {
    let items: BTreeSet<String> = calendar
        .entries
        .into_iter()
        .filter_map(|e| match e.entry? {
            Entry::Appointment(a) => Some(a.name),
            Entry::Availability(b) => Some(availability_item(&b.unit)),
            Entry::Blocked(b) => Some(format!("blocked time of {}", b.provider)),
        })
        .collect();
    items.into_iter().collect()
}

/// Calls `method` (e.g. `GetAppointment`) on the resource of `case` for `fx`, returning the level
/// of the resource the object-level check runs on and the reply. Fails on a method without an
/// entry: a new Scheduling RPC cannot skip the matrix.
///
/// The levels in Scheduling: `Organization` is an organization as the parent of a List narrowed to
/// the caller's units (appointments, encounters, waitlist entries, the organization's calendar
/// listed or watched), whose out-of-scope case is a filter on a unit out of the role's scope (or
/// another organization), which must come back empty. `OrganizationWide` is what every role of the
/// organization may reach (a provider's availability rules and exceptions, a location's rooms): a
/// unit-scoped role's out-of-scope case (the other unit's provider or location, in acme) passes,
/// the administrator's (in another organization) does not. `Unit` is something in a unit (a visit
/// type, the unit searched or booked in, a new availability rule's or waitlist entry's unit, the
/// stored unit of an availability rule, an appointment, an encounter or a waitlist entry, a unit's
/// calendar). `Mesh` is a call without a resource, which the rule opens to services only.
async fn probe(
    s: &mut Scheduling,
    method: &str,
    case: Case,
    fx: &Fixture,
) -> anyhow::Result<(Level, Reply)> {
    use Level::{Mesh as M, Organization as O, OrganizationWide as W, Unit as U};
    let n = fx.names(case);
    // Creates that name a unit in their body need a provider and a location that exist, in the
    // unit's organization (a cross-organization pair is INVALID_ARGUMENT before any authorization).
    let (provider, location) = match case {
        Case::Missing => (fx.inside.provider(), fx.inside.location()),
        _ => (n.provider.clone(), n.location.clone()),
    };
    let stale = STALE.to_string();
    let reason = "authorization matrix".to_string();
    // A narrowed List's out-of-scope case: a filter on a unit out of the role's scope.
    let filter = match case {
        Case::OutOfScope => format!("unit = \"{}\"", n.unit),
        Case::InScope | Case::Missing => String::new(),
    };
    Ok(match method {
        // Visit types: checked against their unit (the parent).
        "GetVisitType" => (
            U,
            one(s
                .get_visit_type(GetVisitTypeRequest { name: n.visit_type })
                .await),
        ),
        "ListVisitTypes" => {
            let request = ListVisitTypesRequest {
                parent: n.unit,
                ..Default::default()
            };
            (U, one(s.list_visit_types(request).await))
        }
        "CreateVisitType" => {
            // No body: INVALID_ARGUMENT after the check.
            let request = CreateVisitTypeRequest {
                parent: n.unit,
                visit_type: None,
                visit_type_id: "matrix-visit".into(),
                request_id: String::new(),
            };
            (U, one(s.create_visit_type(request).await))
        }
        "DeleteVisitType" => {
            let request = DeleteVisitTypeRequest {
                name: n.visit_type,
                etag: stale,
            };
            (U, one(s.delete_visit_type(request).await))
        }
        "UpdateVisitType" => {
            // A stale etag: ABORTED after the check, nothing changes.
            let request = UpdateVisitTypeRequest {
                visit_type: Some(VisitType {
                    name: n.visit_type,
                    display_name: "Matrix".into(),
                    etag: stale,
                    ..Default::default()
                }),
                update_mask: None,
            };
            (U, one(s.update_visit_type(request).await))
        }
        "UndeleteVisitType" => {
            let request = UndeleteVisitTypeRequest {
                name: n.visit_type,
                etag: stale,
            };
            (U, one(s.undelete_visit_type(request).await))
        }

        // Availability rules: a provider's, each for a unit.
        "ListAvailabilityRules" => {
            // A provider's rules are narrowed to the caller's units: another unit's provider
            // lists as empty (which reveals nothing), never with that unit's rules.
            let request = ListAvailabilityRulesRequest {
                parent: n.provider,
                ..Default::default()
            };
            let reply = s.list_availability_rules(request).await;
            (
                U,
                many(reply, |r| {
                    r.availability_rules.into_iter().map(|r| r.name).collect()
                }),
            )
        }
        "CreateAvailabilityRule" => {
            // The check is on the rule's unit; no weekday and no times are refused after it.
            let request = CreateAvailabilityRuleRequest {
                parent: provider,
                availability_rule: Some(AvailabilityRule {
                    unit: n.unit,
                    location,
                    ..Default::default()
                }),
                availability_rule_id: "matrix-rule".into(),
                request_id: String::new(),
            };
            (U, one(s.create_availability_rule(request).await))
        }
        "DeleteAvailabilityRule" => {
            // A rule is for a unit, as CreateAvailabilityRule checks: deleting it is expected to be
            // checked against the same unit.
            let request = DeleteAvailabilityRuleRequest {
                name: n.rule,
                etag: stale,
            };
            (U, one(s.delete_availability_rule(request).await))
        }
        "UpdateAvailabilityRule" | "UndeleteAvailabilityRule" => {
            // Checked against the stored rule's unit, as DeleteAvailabilityRule; a stale etag
            // changes nothing.
            let reply = if method == "UpdateAvailabilityRule" {
                let request = UpdateAvailabilityRuleRequest {
                    availability_rule: Some(AvailabilityRule {
                        name: n.rule,
                        end_time: "11:00".into(),
                        etag: stale,
                        ..Default::default()
                    }),
                    update_mask: None,
                };
                one(s.update_availability_rule(request).await)
            } else {
                let request = UndeleteAvailabilityRuleRequest {
                    name: n.rule,
                    etag: stale,
                };
                one(s.undelete_availability_rule(request).await)
            };
            (U, reply)
        }

        // Availability exceptions: a provider's time off sits in the units the provider is
        // credentialed in (a unit-scoped caller cannot see or change another unit's provider's).
        "ListAvailabilityExceptions" => {
            let request = ListAvailabilityExceptionsRequest {
                parent: n.provider,
                ..Default::default()
            };
            (U, one(s.list_availability_exceptions(request).await))
        }
        "CreateAvailabilityException" => {
            let request = CreateAvailabilityExceptionRequest {
                parent: n.provider,
                availability_exception: None,
                availability_exception_id: "matrix-exception".into(),
                request_id: String::new(),
            };
            (U, one(s.create_availability_exception(request).await))
        }
        "DeleteAvailabilityException" => {
            let request = DeleteAvailabilityExceptionRequest {
                name: n.exception,
                etag: stale,
            };
            (U, one(s.delete_availability_exception(request).await))
        }

        // Rooms: a location's (organization level).
        "ListRooms" => {
            let request = ListRoomsRequest {
                parent: n.location,
                ..Default::default()
            };
            (W, one(s.list_rooms(request).await))
        }
        "CreateRoom" => {
            let request = CreateRoomRequest {
                parent: n.location,
                room: None,
                room_id: "matrix-room".into(),
                request_id: String::new(),
            };
            (W, one(s.create_room(request).await))
        }
        "DeleteRoom" => {
            let request = DeleteRoomRequest {
                name: n.room,
                etag: stale,
            };
            (W, one(s.delete_room(request).await))
        }

        // Slot search and booking: checked against the unit searched or booked in.
        "FindSlots" => {
            let request = FindSlotsRequest {
                unit: n.unit,
                patient: n.patient,
                visit_type: n.visit_type,
                window: day_window(fx.monday),
                ..Default::default()
            };
            (U, one(s.find_slots(request).await))
        }
        "BookAppointment" => {
            // A hold of 0 seconds: INVALID_ARGUMENT after the check.
            let request = BookAppointmentRequest {
                parent: organization_of(&n.unit).to_string(),
                appointment: Some(Appointment {
                    unit: n.unit,
                    patient: n.patient,
                    provider,
                    location,
                    visit_type: n.visit_type,
                    interval: Some(Interval {
                        start_time: Some(ts(at(fx.monday, 11, 0))),
                        end_time: None,
                    }),
                    ..Default::default()
                }),
                hold_ttl: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 0,
                }),
                request_id: String::new(),
                appointment_id: "matrix-appointment".into(),
            };
            (U, one(s.book_appointment(request).await))
        }

        // Appointments: checked against the stored appointment's unit.
        "ConfirmAppointment" => {
            // The appointment is booked, not held: FAILED_PRECONDITION after the check.
            let request = ConfirmAppointmentRequest {
                name: n.appointment,
                etag: stale,
            };
            (U, one(s.confirm_appointment(request).await))
        }
        "GetAppointment" => (
            U,
            one(s
                .get_appointment(GetAppointmentRequest {
                    name: n.appointment,
                })
                .await),
        ),
        "ListAppointments" => {
            let request = ListAppointmentsRequest {
                parent: n.organization,
                page_size: 1000,
                filter,
                ..Default::default()
            };
            let reply = s.list_appointments(request).await;
            (
                O,
                many(reply, |r| {
                    r.appointments.into_iter().map(|a| a.name).collect()
                }),
            )
        }
        "CancelAppointment" => {
            let request = CancelAppointmentRequest {
                name: n.appointment,
                reason,
                etag: stale,
            };
            (U, one(s.cancel_appointment(request).await))
        }
        "CheckInAppointment" => {
            let request = CheckInAppointmentRequest {
                name: n.appointment,
                etag: stale,
            };
            (U, one(s.check_in_appointment(request).await))
        }
        "MarkNoShow" => {
            let request = MarkNoShowRequest {
                name: n.appointment,
                reason,
                etag: stale,
            };
            (U, one(s.mark_no_show(request).await))
        }
        "CompleteAppointment" => {
            let request = CompleteAppointmentRequest {
                name: n.appointment,
                etag: stale,
                ..Default::default()
            };
            (U, one(s.complete_appointment(request).await))
        }

        "RescheduleAppointment" => {
            // No new start: INVALID_ARGUMENT after the check.
            let request = RescheduleAppointmentRequest {
                name: n.appointment,
                start_time: None,
                etag: stale,
                ..Default::default()
            };
            (U, one(s.reschedule_appointment(request).await))
        }
        "BookSeries" => {
            // A series of 0 occurrences: INVALID_ARGUMENT after the check (on the first one's
            // unit).
            let request = BookSeriesRequest {
                parent: organization_of(&n.unit).to_string(),
                appointment: Some(Appointment {
                    unit: n.unit,
                    patient: n.patient,
                    provider,
                    location,
                    visit_type: n.visit_type,
                    interval: Some(Interval {
                        start_time: Some(ts(at(fx.monday, 11, 0))),
                        end_time: None,
                    }),
                    ..Default::default()
                }),
                count: 0,
                every: None,
                request_id: String::new(),
            };
            (U, one(s.book_series(request).await))
        }

        // The waitlist: entries of a unit, under the organization.
        "CreateWaitlistEntry" => {
            // No window: INVALID_ARGUMENT after the check (on the entry's unit).
            let request = CreateWaitlistEntryRequest {
                parent: organization_of(&n.unit).to_string(),
                waitlist_entry: Some(WaitlistEntry {
                    patient: n.patient,
                    unit: n.unit,
                    visit_type: n.visit_type,
                    window: None,
                    ..Default::default()
                }),
                waitlist_entry_id: "matrix-entry".into(),
                request_id: String::new(),
            };
            (U, one(s.create_waitlist_entry(request).await))
        }
        "ListWaitlistEntries" => {
            let request = ListWaitlistEntriesRequest {
                parent: n.organization,
                page_size: 1000,
                filter,
                ..Default::default()
            };
            let reply = s.list_waitlist_entries(request).await;
            (
                O,
                many(reply, |r| {
                    r.waitlist_entries.into_iter().map(|e| e.name).collect()
                }),
            )
        }
        "DeleteWaitlistEntry" => {
            let request = DeleteWaitlistEntryRequest {
                name: n.waitlist_entry,
                etag: stale,
            };
            (U, one(s.delete_waitlist_entry(request).await))
        }

        // Encounters: checked against the stored encounter's unit; listed narrowed.
        "GetEncounter" => (
            U,
            one(s
                .get_encounter(GetEncounterRequest { name: n.encounter })
                .await),
        ),
        "ListEncounters" => {
            let request = ListEncountersRequest {
                parent: n.organization,
                page_size: 1000,
                filter,
                ..Default::default()
            };
            let reply = s.list_encounters(request).await;
            (
                O,
                many(reply, |r| {
                    r.encounters.into_iter().map(|e| e.name).collect()
                }),
            )
        }

        // The outbox, mesh-wide: for services only.
        "StreamEvents" => {
            let reply = s
                .stream_events(StreamEventsRequest { after_sequence: 0 })
                .await;
            (M, one(reply))
        }

        // Calendars: in scope the organization's (narrowed to the role's units); out of scope and
        // missing a unit's.
        "ListCalendar" | "WatchCalendar" => {
            let (level, scope) = match case {
                Case::InScope => (O, n.organization),
                Case::OutOfScope | Case::Missing => (U, n.unit),
            };
            let reply = if method == "ListCalendar" {
                let request = ListCalendarRequest {
                    scope,
                    window: day_window(fx.monday),
                    show_inactive: true,
                    raw_availability: false,
                };
                many(s.list_calendar(request).await, calendar_items)
            } else {
                // From the second event on: every appointment change the stream lets through.
                let request = WatchCalendarRequest {
                    scope,
                    after_sequence: 1,
                };
                match s.watch_calendar(request).await {
                    Ok(stream) if case == Case::InScope => drain(stream.into_inner()).await,
                    Ok(_) => Ok(None),
                    Err(status) => Err(status),
                }
            };
            (level, reply)
        }
        other => anyhow::bail!(
            "{SCHEDULING_SERVICE}{other} has no entry in the Scheduling authorization matrix \
             (tests/authz_matrix_scheduling.rs): add one so that the new RPC is checked for every \
             role"
        ),
    })
}

/// The Scheduling RPCs of the descriptor set, by short name.
fn scheduling_methods() -> Vec<(&'static str, &'static MethodRule)> {
    methods_of(SCHEDULING_SERVICE, "Scheduling")
}

impl RoleFixture for Fixture {
    type Client = Scheduling;
    const WIDTHS: [usize; 3] = [28, 32, 20];
    const READS: &'static [&'static str] = &["Get", "List", "Find", "Watch", "Stream"];

    fn who(&self) -> (&'static str, Role, &'static str) {
        (self.principal, self.role, self.scope)
    }

    /// One case for a method without a resource.
    fn cases(rule: &MethodRule) -> &'static [Case] {
        if rule.resource_field.is_empty() {
            &[Case::InScope]
        } else {
            &CASES
        }
    }

    async fn probe(
        &self,
        s: &mut Scheduling,
        method: &str,
        case: Case,
    ) -> anyhow::Result<(Level, Reply)> {
        probe(s, method, case, self).await
    }

    /// A unit-scoped role's out-of-scope resources are the other acme unit's: its organization-wide
    /// ones are in reach.
    fn expect(&self, permission: &str, case: Case, level: Level) -> Expect {
        expect(
            self.role,
            permission,
            case,
            level,
            self.outside.organization == ACME,
        )
    }

    /// What a narrowed List must return in scope, exactly.
    fn expected_list(&self, method: &str) -> Option<Vec<String>> {
        let appointments = || {
            self.visible
                .iter()
                .flat_map(|p| [p.booked(), p.done()])
                .collect::<Vec<_>>()
        };
        Some(match method {
            "ListAppointments" | "WatchCalendar" => appointments(),
            "ListEncounters" => self.visible.iter().map(Place::encounter).collect(),
            "ListAvailabilityRules" => vec![self.inside.rule()],
            "ListWaitlistEntries" => self.visible.iter().map(Place::waitlist_entry).collect(),
            "ListCalendar" => appointments()
                .into_iter()
                .chain(self.visible.iter().map(|p| availability_item(&p.unit())))
                .collect(),
            _ => return None,
        })
    }

    fn detail(expected: Expect, reply: &Reply) -> String {
        detail_with_items(expected, reply)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scheduling_rpc_by_every_role_matches_the_policy_table() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    let monday = next_monday();
    seed(&mesh, monday).await?;
    let methods = scheduling_methods();
    let fixtures = fixtures(monday);
    let mut findings = Findings::default();
    let mut expected_calls = 0;
    for fx in &fixtures {
        let mut s = mesh.scheduling_as(fx.principal).await?;
        expected_calls += run_role(&mut s, fx, &methods, &mut findings).await?;
    }

    // Every unit-scoped role against the other organization (the administrator's out-of-scope
    // resources): whatever the level, nothing there is theirs.
    let admin = &fixtures[0];
    let unit_scoped: Vec<&Fixture> = fixtures
        .iter()
        .filter(|f| f.outside.organization == ACME)
        .collect();
    let with_resource = methods
        .iter()
        .filter(|(_, rule)| Fixture::cases(rule).len() > 1)
        .count();
    let mut cross = Tally::default();
    for fx in &unit_scoped {
        let mut s = mesh.scheduling_as(fx.principal).await?;
        for (method, rule) in &methods {
            if Fixture::cases(rule).len() == 1 {
                continue;
            }
            let (level, reply) = probe(&mut s, method, Case::OutOfScope, admin).await?;
            let outcome = classify(&reply);
            let verdict = judge(Expect::Deny, outcome);
            if reply.is_ok() && !is_read(method, Fixture::READS) {
                findings
                    .writes_that_succeeded
                    .push(format!("{method} as {} (in {OTHER})", fx.principal));
            }
            if verdict != Verdict::Expected {
                findings.unexpected.push(format!(
                    "{verdict:?}: {method} as {} ({}), in {OTHER} ({level:?}): {}",
                    fx.principal,
                    fx.role,
                    detail_with_items(Expect::Deny, &reply)
                ));
            }
            cross.add(Expect::Deny, verdict);
        }
    }
    println!(
        "\ncross-organization: {} calls ({} unit-scoped roles x {} RPCs in {OTHER}), {} denied, {} unexpected allows",
        cross.calls,
        unit_scoped.len(),
        with_resource,
        cross.denied,
        cross.unexpected_allows
    );
    findings.total.merge(&cross);

    let total = &findings.total;
    println!(
        "\n{} Scheduling RPCs x {} roles x {} cases (one for an RPC without a resource), plus the cross-organization block; {} allowed calls were harmless answers about nonexistent resources",
        methods.len(),
        fixtures.len(),
        CASES.len(),
        total.harmless
    );
    println!("scheduling authz matrix: {}", total.summary());
    findings.print_unexpected();
    mesh.stop().await?;
    assert_eq!(
        total.calls,
        expected_calls + cross.calls,
        "one call per method, role and case"
    );
    findings.assert_clean();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scheduling_rpc_refuses_anonymous_and_unbound_callers() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    principal(&mesh, NOBODY, None).await?;
    let mut anonymous = SchedulingServiceClient::new(
        mesh.channel_with_token(Service::Scheduling, tls::CLIENT, "")
            .await?,
    );
    let mut unbound = mesh.scheduling_as(NOBODY).await?;
    let fixtures = fixtures(next_monday());
    let admin = &fixtures[0];
    let methods = scheduling_methods();
    let mut wrong = refusals(&mut anonymous, &mut unbound, admin, &methods).await?;
    // The service callers of a rule without a token: the one listed is served, another is not.
    for (method, rule) in methods
        .iter()
        .filter(|(_, r)| !r.service_callers.is_empty())
    {
        for service in pm_runtime::tls::SERVICES {
            let mut s = SchedulingServiceClient::new(
                mesh.channel_with_token(Service::Scheduling, service, "")
                    .await?,
            );
            let (_, reply) = probe(&mut s, method, Case::InScope, admin).await?;
            let code = code_of(&reply);
            let expected = if rule.service_callers.contains(service) {
                Code::Ok
            } else {
                Code::Unauthenticated
            };
            if code != expected {
                wrong.push(format!(
                    "{method} as the {service} service without a token: {code:?}, expected {expected:?}"
                ));
            }
        }
    }
    println!(
        "scheduling authz sweep: {} Scheduling RPCs without a token and as a principal without bindings, service callers of {} of them, {} wrong",
        methods.len(),
        methods
            .iter()
            .filter(|(_, r)| !r.service_callers.is_empty())
            .count(),
        wrong.len()
    );
    mesh.stop().await?;
    assert!(wrong.is_empty(), "{wrong:#?}");
    Ok(())
}

// Every declared reference, generated from the rules' `reference_fields`.

/// What kind of resource a declared reference field names (the rule says which field, the test
/// must know what to put there). A declaration this does not know fails the test: add its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefKind {
    Unit,
    Patient,
    Provider,
    Location,
    Room,
    VisitType,
    Exception,
    Payer,
    BillingEntity,
    Contract,
}

fn ref_kind(method: &str, field: &str) -> Option<RefKind> {
    let name = method.rsplit('/').next().unwrap_or_default();
    let last = field.rsplit('.').next().unwrap_or_default();
    Some(match (name, last) {
        (
            "ListAvailabilityExceptions" | "CreateAvailabilityException" | "CreateAvailabilityRule",
            "parent",
        ) => RefKind::Provider,
        ("CreateEnrollment", "parent") => RefKind::Patient,
        ("DeleteAvailabilityException", "name") => RefKind::Exception,
        // A calendar's scope can be any of several kinds; a patient is the one a unit-scoped
        // caller could otherwise watch without seeing.
        ("ListCalendar" | "WatchCalendar", "scope") => RefKind::Patient,
        (_, "unit" | "units" | "parent_unit") => RefKind::Unit,
        (_, "patient" | "patients") => RefKind::Patient,
        (_, "provider" | "providers" | "billing_practitioner") => RefKind::Provider,
        (_, "location" | "locations") => RefKind::Location,
        (_, "room") => RefKind::Room,
        (_, "visit_type") => RefKind::VisitType,
        (_, "program") => RefKind::Unit,
        (_, "payer") => RefKind::Payer,
        (_, "billing_entity") => RefKind::BillingEntity,
        (_, "contract") => RefKind::Contract,
        _ => return None,
    })
}

impl RefKind {
    /// Locations (and their rooms) belong to the whole organization: every role there reaches them.
    fn organization_level(self) -> bool {
        matches!(
            self,
            RefKind::Location
                | RefKind::Room
                | RefKind::Payer
                | RefKind::BillingEntity
                | RefKind::Contract
        )
    }

    fn of(self, place: &Place) -> String {
        match self {
            RefKind::Unit => place.unit(),
            RefKind::Patient => place.patient(),
            RefKind::Provider => place.provider(),
            RefKind::Location => place.location(),
            RefKind::Room => place.room(),
            RefKind::VisitType => place.visit_type(),
            RefKind::Exception => place.exception(),
            RefKind::Payer => place.payer(),
            RefKind::BillingEntity => place.billing_entity(),
            RefKind::Contract => place.contract(),
        }
    }

    /// A name of this kind in acme that does not exist.
    fn missing(self, inside: &Place) -> String {
        match self {
            RefKind::Unit => format!("{ACME}/units/nowhere"),
            RefKind::Patient => format!("{ACME}/patients/nobody"),
            RefKind::Provider => format!("{ACME}/providers/nobody"),
            RefKind::Location => format!("{ACME}/locations/nowhere"),
            RefKind::Room => format!("{}/rooms/nowhere", inside.location()),
            RefKind::VisitType => format!("{}/visitTypes/nowhere", inside.unit()),
            RefKind::Exception => format!("{}/availabilityExceptions/nowhere", inside.provider()),
            RefKind::Payer => format!("{ACME}/payers/nowhere"),
            RefKind::BillingEntity => format!("{ACME}/billingEntities/nowhere"),
            RefKind::Contract => format!("{ACME}/contracts/nowhere"),
        }
    }
}

/// An answer with the probed name replaced, so that answers about different names compare: the
/// code, the message and every decoded error detail (the raw detail bytes carry the name's length).
fn normalized(answer: &Result<bytes::Bytes, tonic::Status>, name: &str) -> String {
    match answer {
        Ok(_) => "OK".into(),
        Err(status) => format!(
            "{:?} | {} | {}",
            status.code(),
            status.message().replace(name, "<name>"),
            format!(
                "{:?}",
                tonic_types::StatusExt::get_error_details_vec(status)
            )
            .replace(name, "<name>")
        ),
    }
}

fn refused_on(answer: &Result<bytes::Bytes, tonic::Status>, name: &str) -> bool {
    matches!(answer, Err(s) if s.code() == Code::PermissionDenied && s.message().contains(name))
}

/// For every RPC of the mesh, every field its rule declares as a reference, every demo role that
/// holds the permission, and a name in the role's scope, in another unit, in another organization
/// and one that does not exist: the name in scope passes the check; every name out of the role's
/// scope is refused, and the refusals of the other unit, the other organization and the missing
/// name are byte-identical (code, message and details, the name itself aside). Locations and rooms
/// belong to the whole organization. Only the probed field is set, so the answer is the
/// reference check's (a request that passes it fails validation later and writes nothing).
#[tokio::test(flavor = "multi_thread")]
async fn every_declared_reference_is_refused_out_of_scope_exactly_like_a_missing_one()
-> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    let monday = next_monday();
    seed(&mesh, monday).await?;
    let pool = support::raw::pool();
    let references: Vec<&MethodRule> = pm_api::RULES
        .iter()
        .filter(|r| !r.reference_fields.is_empty())
        .collect();
    assert!(!references.is_empty());
    let mut problems = Vec::new();
    let mut checked = 0;
    for fx in fixtures(monday) {
        let org = mesh.authed(Service::Org, fx.principal).await?;
        let scheduling = mesh.authed(Service::Scheduling, fx.principal).await?;
        let billing = mesh.authed(Service::Billing, fx.principal).await?;
        for rule in &references {
            if !pm_authz::policy::role_grants(fx.role, rule.permission) {
                continue;
            }
            let (input, streaming) = support::raw::method(&pool, rule.method)
                .ok_or_else(|| anyhow::anyhow!("{} is not in the contract", rule.method))?;
            let channel = if rule.method.starts_with("/pm.org.") {
                org.clone()
            } else if rule.method.starts_with("/pm.billing.") {
                billing.clone()
            } else {
                scheduling.clone()
            };
            for field in rule.reference_fields {
                let kind = ref_kind(rule.method, field).ok_or_else(|| {
                    anyhow::anyhow!(
                        "{} declares {field}: tell ref_kind what it names",
                        rule.method
                    )
                })?;
                let ask =
                    async |name: &str| -> anyhow::Result<Result<bytes::Bytes, tonic::Status>> {
                        let mut message = prost_reflect::DynamicMessage::new(input.clone());
                        support::raw::set_path(&mut message, field, name)?;
                        // A Delete or a verb that passes the check must still change nothing.
                        if input.get_field_by_name("etag").is_some() {
                            support::raw::set_path(&mut message, "etag", STALE)?;
                        }
                        let body = bytes::Bytes::from(prost::Message::encode_to_vec(&message));
                        Ok(support::raw::call(
                            channel.clone(),
                            rule.method,
                            streaming,
                            body,
                            Duration::from_millis(300),
                        )
                        .await)
                    };
                let inside = kind.of(&fx.inside);
                let other_unit = kind.of(if fx.role == Role::OrganizationAdministrator {
                    &CCM
                } else {
                    &fx.outside
                });
                let other_org = kind.of(&PLANT);
                let missing = kind.missing(&fx.inside);
                let answers = [
                    ("in scope", &inside, ask(&inside).await?),
                    ("other unit", &other_unit, ask(&other_unit).await?),
                    ("other organization", &other_org, ask(&other_org).await?),
                    ("missing", &missing, ask(&missing).await?),
                ];
                checked += answers.len();
                let unit_scoped = fx.role != Role::OrganizationAdministrator;
                for (case, name, answer) in &answers {
                    let should_refuse = match *case {
                        "in scope" => false,
                        "other organization" => true,
                        // Every role of the organization can list its locations' rooms: whether
                        // a missing one is refused here or later reveals nothing.
                        "missing" if kind.organization_level() => refused_on(answer, name),
                        _ => unit_scoped && !kind.organization_level(),
                    };
                    if refused_on(answer, name) != should_refuse {
                        problems.push(format!(
                            "{} {field} as {} ({case}: {name}): expected {}, got {}",
                            rule.method,
                            fx.principal,
                            if should_refuse {
                                "a refusal"
                            } else {
                                "no refusal on it"
                            },
                            normalized(answer, name)
                        ));
                    }
                }
                // Out of scope answers exactly like missing.
                let refusals: Vec<(&str, String)> = answers
                    .iter()
                    .filter(|(_, name, answer)| refused_on(answer, name))
                    .map(|(case, name, answer)| (*case, normalized(answer, name)))
                    .collect();
                if refusals.windows(2).any(|pair| pair[0].1 != pair[1].1) {
                    problems.push(format!(
                        "{} {field} as {}: refusals differ: {refusals:#?}",
                        rule.method, fx.principal
                    ));
                }
            }
        }
    }
    println!(
        "reference matrix: {checked} calls, {} problems",
        problems.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    mesh.stop().await?;
    Ok(())
}

/// A Program Manager cannot take over a patient she cannot see: enrolling into her own unit a
/// patient enrolled nowhere, or only in another unit, is refused exactly like enrolling a patient
/// that does not exist; nothing is written and the patient stays out of her reach. An
/// organization administrator can enroll the patient, and then the manager sees it.
#[tokio::test(flavor = "multi_thread")]
async fn a_program_manager_cannot_take_over_a_patient_she_cannot_see() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    seed(&mesh, next_monday()).await?;
    let mut admin = mesh.org_as(pm::demo::ADMIN).await?;
    admin
        .create_patient(CreatePatientRequest {
            parent: ACME.into(),
            patient: Some(Patient {
                given_name: "Nowhere".into(),
                family_name: "Enrolled".into(),
                birth_date: Some(Date {
                    year: 1960,
                    month: 5,
                    day: 5,
                }),
                ..Default::default()
            }),
            patient_id: "unenrolled".into(),
            request_id: String::new(),
        })
        .await?;
    let unenrolled = format!("{ACME}/patients/unenrolled");
    let enroll = |patient: &str| CreateEnrollmentRequest {
        parent: patient.to_string(),
        enrollment: Some(Enrollment {
            unit: CCM.unit(),
            ..Default::default()
        }),
        enrollment_id: "takeover".into(),
        request_id: String::new(),
    };
    let mut casey = mesh.org_as("principals/casey-ccm").await?;
    let mut answers = Vec::new();
    for patient in [
        unenrolled.clone(),
        NORTH.patient(),
        format!("{ACME}/patients/nobody"),
    ] {
        let status = casey
            .create_enrollment(enroll(&patient))
            .await
            .expect_err("a patient out of reach cannot be enrolled");
        assert_eq!(status.code(), Code::PermissionDenied, "{patient}");
        answers.push(normalized(&Err(status), &patient));
    }
    assert!(
        answers.windows(2).all(|pair| pair[0] == pair[1]),
        "out of scope must answer like missing: {answers:#?}"
    );
    // Nothing was written, and the patient is still out of her reach.
    for patient in [&unenrolled, &NORTH.patient()] {
        let enrollments = admin
            .list_enrollments(ListEnrollmentsRequest {
                parent: patient.to_string(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .enrollments;
        assert!(
            enrollments.iter().all(|e| e.unit != CCM.unit()),
            "{patient}"
        );
        let read = casey
            .get_patient(GetPatientRequest {
                name: patient.to_string(),
            })
            .await;
        assert_eq!(read.err().map(|s| s.code()), Some(Code::PermissionDenied));
    }
    // The administrator can; then the patient is in the manager's unit and she reads it.
    admin.create_enrollment(enroll(&unenrolled)).await?;
    casey
        .get_patient(GetPatientRequest {
            name: unenrolled.clone(),
        })
        .await?;
    mesh.stop().await?;
    Ok(())
}

// Every declared target, generated from the rules' `resource_field`.

/// What a rule's target names, by method (the rule says which field, the test must know what to
/// put there). A method this does not know fails the test: add it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    Organization,
    Unit,
    Location,
    Provider,
    Credential,
    Patient,
    Enrollment,
    Coverage,
    VisitType,
    Room,
    Rule,
    Appointment,
    Encounter,
    WaitlistEntry,
    Payer,
    BillingEntity,
    Contract,
    FeeSchedule,
    FeeScheduleVersion,
    Charge,
    RoutingRule,
    Claim,
    Invoice,
}

fn target_kind(method: &str) -> Option<TargetKind> {
    use TargetKind::*;
    let name = method.rsplit('/').next().unwrap_or_default();
    Some(match name {
        "GetOrganization"
        | "UpdateOrganization"
        | "DeleteOrganization"
        | "ListServiceUnits"
        | "CreateServiceUnit"
        | "ListLocations"
        | "CreateLocation"
        | "ListProviders"
        | "CreateProvider"
        | "ListPatients"
        | "SearchPatients"
        | "CreatePatient"
        | "BatchGetPatientEligibility"
        | "ResolveScopes"
        | "ListAppointments"
        | "ListEncounters"
        | "ListWaitlistEntries"
        | "ListBillingEntities"
        | "CreateBillingEntity"
        | "ListPayers"
        | "CreatePayer"
        | "ListContracts"
        | "CreateContract"
        | "ListFeeSchedules"
        | "CreateFeeSchedule"
        | "ListCharges"
        | "CreateCharge"
        | "ReportRevenue"
        | "ListRevenueLines"
        | "ReportAging"
        | "ListRoutingRules"
        | "CreateRoutingRule"
        | "AssembleClaims"
        | "ListClaims"
        | "ExportClaims"
        | "ImportRemittance"
        | "ImportAcknowledgment"
        | "CreateCareTimeEntry"
        | "RepriceCharges"
        | "CreateInvoices"
        | "ListInvoices" => Organization,
        "GetServiceUnit"
        | "UpdateServiceUnit"
        | "DeleteServiceUnit"
        | "UndeleteServiceUnit"
        | "GetEffectivePolicy"
        | "ListVisitTypes"
        | "CreateVisitType"
        | "FindSlots"
        | "ExplainPrice" => Unit,
        "GetLocation" | "UpdateLocation" | "DeleteLocation" | "UndeleteLocation" | "ListRooms"
        | "CreateRoom" => Location,
        "GetProvider"
        | "UpdateProvider"
        | "DeleteProvider"
        | "UndeleteProvider"
        | "ListCredentials"
        | "ListAvailabilityRules" => Provider,
        "GetCredential" | "UpdateCredential" | "DeleteCredential" | "UndeleteCredential" => {
            Credential
        }
        "GetPatient"
        | "UpdatePatient"
        | "DeletePatient"
        | "UndeletePatient"
        | "GetPatientEligibility"
        | "ListEnrollments"
        | "ListCoverages"
        | "CreateCoverage"
        | "ListPatientAccesses"
        | "CheckAccess"
        | "ListCareTimeEntries"
        | "CloseCareMonth" => Patient,
        "GetEnrollment"
        | "DeleteEnrollment"
        | "UndeleteEnrollment"
        | "TransferEnrollment"
        | "DischargeEnrollment"
        | "RecordIntake"
        | "RevokeIntake" => Enrollment,
        "GetCoverage" | "UpdateCoverage" | "DeleteCoverage" | "UndeleteCoverage" => Coverage,
        "GetVisitType" | "UpdateVisitType" | "DeleteVisitType" | "UndeleteVisitType" => VisitType,
        "DeleteRoom" => Room,
        "UpdateAvailabilityRule" | "DeleteAvailabilityRule" | "UndeleteAvailabilityRule" => Rule,
        "ConfirmAppointment"
        | "GetAppointment"
        | "CancelAppointment"
        | "CheckInAppointment"
        | "MarkNoShow"
        | "CompleteAppointment"
        | "RescheduleAppointment" => Appointment,
        "GetEncounter" => Encounter,
        "DeleteWaitlistEntry" => WaitlistEntry,
        "GetPayer" | "UpdatePayer" | "DeletePayer" => Payer,
        "GetBillingEntity" | "UpdateBillingEntity" | "DeleteBillingEntity" => BillingEntity,
        "GetContract" | "DeleteContract" => Contract,
        "GetFeeSchedule"
        | "DeleteFeeSchedule"
        | "CreateFeeScheduleVersion"
        | "ListFeeScheduleVersions" => FeeSchedule,
        "GetFeeScheduleVersion" | "ExportFeeScheduleVersion" => FeeScheduleVersion,
        "GetCharge" | "CorrectCharge" | "ListLedgerEntries" => Charge,
        "GetRoutingRule" | "DeleteRoutingRule" => RoutingRule,
        "GetClaim" | "ScrubClaim" | "CorrectClaim" | "VoidClaim" => Claim,
        "GetInvoice" | "PostInvoicePayment" => Invoice,
        _ => return None,
    })
}

impl TargetKind {
    /// An organization, its locations (and their rooms) and its providers, as targets, belong to
    /// the whole organization: every role there reaches them. So do invoices at the layer: an
    /// invoice bills every unit of its contract, and the handler answers NOT_FOUND alike for one
    /// out of the caller's units and one that does not exist (`tests/billing_invoices_e2e.rs`).
    fn organization_level(self) -> bool {
        matches!(
            self,
            TargetKind::Organization
                | TargetKind::Invoice
                | TargetKind::Location
                | TargetKind::Provider
                | TargetKind::Room
                | TargetKind::Payer
                | TargetKind::BillingEntity
                | TargetKind::Contract
                | TargetKind::FeeSchedule
                | TargetKind::FeeScheduleVersion
                | TargetKind::RoutingRule
        )
    }

    fn of(self, place: &Place) -> String {
        match self {
            TargetKind::Organization => place.organization.to_string(),
            TargetKind::Unit => place.unit(),
            TargetKind::Location => place.location(),
            TargetKind::Provider => place.provider(),
            TargetKind::Credential => format!("{}/credentials/{}", place.provider(), place.unit),
            TargetKind::Patient => place.patient(),
            TargetKind::Enrollment => format!("{}/enrollments/{}", place.patient(), place.short),
            TargetKind::Coverage => format!("{}/coverages/primary", place.patient()),
            TargetKind::VisitType => place.visit_type(),
            TargetKind::Room => place.room(),
            TargetKind::Rule => place.rule(),
            TargetKind::Appointment => place.booked(),
            TargetKind::Encounter => place.encounter(),
            TargetKind::WaitlistEntry => place.waitlist_entry(),
            TargetKind::Payer => place.payer(),
            TargetKind::BillingEntity => place.billing_entity(),
            TargetKind::Contract => place.contract(),
            TargetKind::FeeSchedule => place.fee_schedule(),
            TargetKind::FeeScheduleVersion => format!("{}/versions/v1", place.fee_schedule()),
            TargetKind::Charge => place.charge(),
            TargetKind::RoutingRule => format!("{}/routingRules/main-rule", place.organization),
            TargetKind::Claim => place.claim(),
            TargetKind::Invoice => format!("{}/invoices/main-contract-2026-01", place.organization),
        }
    }

    /// A name of this kind in acme that does not exist (in the caller's own unit where the name
    /// says where it sits).
    fn missing(self, inside: &Place) -> String {
        match self {
            TargetKind::Organization => "organizations/nowhere".into(),
            TargetKind::Unit => format!("{ACME}/units/nowhere"),
            TargetKind::Location => format!("{ACME}/locations/nowhere"),
            TargetKind::Provider => format!("{ACME}/providers/nobody"),
            TargetKind::Credential => format!("{}/credentials/nowhere", inside.provider()),
            TargetKind::Patient => format!("{ACME}/patients/nobody"),
            TargetKind::Enrollment => format!("{}/enrollments/nowhere", inside.patient()),
            TargetKind::Coverage => format!("{ACME}/patients/nobody/coverages/primary"),
            TargetKind::VisitType => format!("{ACME}/units/nowhere/visitTypes/{VISIT}"),
            TargetKind::Room => format!("{}/rooms/nowhere", inside.location()),
            TargetKind::Rule => format!("{}/availabilityRules/nowhere", inside.provider()),
            TargetKind::Appointment => format!("{ACME}/appointments/nowhere"),
            TargetKind::Encounter => format!("{ACME}/encounters/nowhere"),
            TargetKind::WaitlistEntry => format!("{ACME}/waitlistEntries/nowhere"),
            TargetKind::Payer => format!("{ACME}/payers/nowhere"),
            TargetKind::BillingEntity => format!("{ACME}/billingEntities/nowhere"),
            TargetKind::Contract => format!("{ACME}/contracts/nowhere"),
            TargetKind::FeeSchedule => format!("{ACME}/feeSchedules/nowhere"),
            TargetKind::FeeScheduleVersion => format!("{ACME}/feeSchedules/nowhere/versions/v1"),
            TargetKind::Charge => format!("{ACME}/charges/nowhere"),
            TargetKind::RoutingRule => format!("{ACME}/routingRules/nowhere"),
            TargetKind::Claim => format!("{ACME}/claims/nowhere"),
            TargetKind::Invoice => format!("{ACME}/invoices/nowhere"),
        }
    }
}

/// For every Org, Scheduling and Billing RPC whose target (`resource_field`) is not also a declared
/// reference, every unit-scoped demo role that holds the permission, and a target in another unit,
/// in another organization and one that does not exist: every target out of the role's scope is
/// refused, and the refusals are byte-identical (code, message and details, the name aside).
/// Organization-level targets (an organization, a location, a provider, a room) pass for every role
/// of the organization and are refused in another one. Only the target is set, so a request that
/// passes the check fails validation later and writes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn every_declared_target_is_refused_out_of_scope_exactly_like_a_missing_one()
-> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    let monday = next_monday();
    seed(&mesh, monday).await?;
    let pool = support::raw::pool();
    let targets: Vec<&MethodRule> = pm_api::RULES
        .iter()
        .filter(|r| {
            r.method.starts_with("/pm.org.")
                || r.method.starts_with(SCHEDULING_SERVICE)
                || r.method.starts_with("/pm.billing.")
        })
        .filter(|r| !r.resource_field.is_empty() && !r.reference_fields.contains(&r.resource_field))
        .collect();
    assert!(targets.len() > 40, "{} targets", targets.len());
    let mut problems = Vec::new();
    let mut checked = 0;
    for fx in fixtures(monday) {
        if fx.role == Role::OrganizationAdministrator {
            continue;
        }
        let org = mesh.authed(Service::Org, fx.principal).await?;
        let scheduling = mesh.authed(Service::Scheduling, fx.principal).await?;
        let billing = mesh.authed(Service::Billing, fx.principal).await?;
        for rule in &targets {
            if !pm_authz::policy::role_grants(fx.role, rule.permission) {
                continue;
            }
            let kind = target_kind(rule.method).ok_or_else(|| {
                anyhow::anyhow!("{}: tell target_kind what it targets", rule.method)
            })?;
            let (input, streaming) = support::raw::method(&pool, rule.method)
                .ok_or_else(|| anyhow::anyhow!("{} is not in the contract", rule.method))?;
            let channel = if rule.method.starts_with("/pm.org.") {
                org.clone()
            } else if rule.method.starts_with("/pm.billing.") {
                billing.clone()
            } else {
                scheduling.clone()
            };
            let ask = async |name: &str| -> anyhow::Result<Result<bytes::Bytes, tonic::Status>> {
                let mut message = prost_reflect::DynamicMessage::new(input.clone());
                support::raw::set_path(&mut message, rule.resource_field, name)?;
                if input.get_field_by_name("etag").is_some() {
                    support::raw::set_path(&mut message, "etag", STALE)?;
                }
                let body = bytes::Bytes::from(prost::Message::encode_to_vec(&message));
                Ok(support::raw::call(
                    channel.clone(),
                    rule.method,
                    streaming,
                    body,
                    Duration::from_millis(300),
                )
                .await)
            };
            let mut cases = vec![("other organization", kind.of(&PLANT))];
            if !kind.organization_level() {
                cases.push(("other unit", kind.of(&fx.outside)));
                cases.push(("missing", kind.missing(&fx.inside)));
            }
            let mut refusals = Vec::new();
            for (case, name) in cases {
                let answer = ask(&name).await?;
                checked += 1;
                if !refused_on(&answer, &name) {
                    problems.push(format!(
                        "{} {} as {} ({case}: {name}): expected a refusal, got {}",
                        rule.method,
                        rule.resource_field,
                        fx.principal,
                        normalized(&answer, &name)
                    ));
                }
                refusals.push((case, normalized(&answer, &name)));
            }
            if refusals.windows(2).any(|pair| pair[0].1 != pair[1].1) {
                problems.push(format!(
                    "{} as {}: refusals differ: {refusals:#?}",
                    rule.method, fx.principal
                ));
            }
        }
    }
    println!(
        "target matrix: {checked} calls, {} problems",
        problems.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    mesh.stop().await?;
    Ok(())
}

/// The layer, not the handler, refuses a target out of scope: FindSlots validates its request
/// before its own check, so a request with only a unit fails validation in the handler (naming the
/// patient) when the unit is the caller's, and is refused on the unit when it is another unit's or
/// does not exist, which only the shared layer can have answered. The refusal is in the trail,
/// under the caller.
#[tokio::test(flavor = "multi_thread")]
async fn a_target_out_of_scope_is_refused_by_the_layer_before_the_handler() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    seed(&mesh, next_monday()).await?;
    let mut casey = mesh.scheduling_as("principals/casey-ccm").await?;
    let only_unit = |unit: String| FindSlotsRequest {
        unit,
        ..Default::default()
    };
    let own = casey.find_slots(only_unit(CCM.unit())).await.unwrap_err();
    assert_eq!(own.code(), Code::InvalidArgument, "{own:?}");
    assert!(own.message().contains("patient"), "{own:?}");
    let missing = format!("{ACME}/units/nowhere");
    let mut refusals = Vec::new();
    for unit in [NORTH.unit(), missing.clone()] {
        let refused = casey.find_slots(only_unit(unit.clone())).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains(&unit), "{refused:?}");
        refusals.push(normalized(&Err(refused), &unit));
    }
    assert_eq!(refusals[0], refusals[1]);
    let TestMesh {
        mesh: running,
        config,
        _dir: keep,
        ..
    } = mesh;
    running.stop(Duration::from_secs(10)).await?;
    let db = pm_runtime::Db::open(&config, pm_scheduling::NAME, pm_scheduling::MIGRATIONS).await?;
    let denied = pm_authz::audit::records(&db, 0, 10_000)
        .await?
        .into_iter()
        .filter(|r| {
            r.event.method == "/pm.scheduling.v1.SchedulingService/FindSlots"
                && r.event.principal == "principals/casey-ccm"
                && r.event.outcome == pm_authz::audit::Outcome::Denied
        })
        .count();
    assert_eq!(denied, 2, "both refusals are audited under the caller");
    db.close().await;
    drop(keep);
    Ok(())
}

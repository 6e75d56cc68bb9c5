//! `pm demo seed`: a realistic operating model loaded through the public gRPC API (never the
//! database): one organization with clinics, a service line, a chronic-care program, an employer
//! program and a referral path, each with its own billing profile and workflow rules; locations in two
//! time zones; providers credentialed differently per unit; patients with enrollments and coverage.
//! All people are fictional. Running it twice is harmless: existing resources are kept.

use pm_api::org::org_service_client::OrgServiceClient;
use pm_api::org::*;
use pm_api::types::{Date, Interval, PostalAddress};
use prost_types::Timestamp;
use tonic::Code;
use tonic::transport::Channel;

/// The seeded organization.
pub const ORG: &str = "organizations/acme";

type Client = OrgServiceClient<pm_runtime::client::AuthedChannel>;
/// Billing as the demo's administrator.
pub type BillingClient = pm_api::billing::billing_service_client::BillingServiceClient<
    pm_runtime::client::AuthedChannel,
>;

/// Counts of what a seed run did.
#[derive(Debug, Default)]
pub struct SeedReport {
    /// Resources created now.
    pub created: usize,
    /// Resources that were already there.
    pub existing: usize,
}

impl SeedReport {
    fn record<T>(
        &mut self,
        what: &str,
        result: Result<tonic::Response<T>, tonic::Status>,
    ) -> anyhow::Result<()> {
        match result {
            Ok(_) => {
                self.created += 1;
                println!("  created  {what}");
                Ok(())
            }
            Err(status) if status.code() == Code::AlreadyExists => {
                self.existing += 1;
                println!("  exists   {what}");
                Ok(())
            }
            Err(status) => Err(anyhow::anyhow!(
                "creating {what}: {}: {}",
                status.code(),
                status.message()
            )),
        }
    }
}

fn date_time(year: i32, month: u32, day: u32) -> Option<Timestamp> {
    let at = chrono::NaiveDate::from_ymd_opt(year, month, day)?
        .and_hms_opt(0, 0, 0)?
        .and_utc();
    Some(Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    })
}

fn from(year: i32, month: u32, day: u32) -> Option<Interval> {
    Some(Interval {
        start_time: date_time(year, month, day),
        end_time: None,
    })
}

/// Accepted payers by id, under the organization's contracts where it has one (Medicare's).
fn payers(ids: &[&str]) -> Vec<PayerContract> {
    ids.iter()
        .map(|id| PayerContract {
            payer: format!("{ORG}/payers/{id}"),
            contract: if *id == "medicare" {
                format!("{ORG}/contracts/medicare-2026")
            } else {
                String::new()
            },
        })
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn unit_name(id: &str) -> String {
    format!("{ORG}/units/{id}")
}

/// Seeds the demo model through `client`.
pub async fn seed(client: &mut Client, billing: &mut BillingClient) -> anyhow::Result<SeedReport> {
    let mut report = SeedReport::default();
    println!("organization");
    let org = Organization {
        display_name: "Acme Health Partners".into(),
        time_zone: "America/New_York".into(),
        ..Default::default()
    };
    let result = client
        .create_organization(CreateOrganizationRequest {
            organization: Some(org),
            organization_id: "acme".into(),
            request_id: String::new(),
        })
        .await;
    report.record(ORG, result)?;

    // Billing's configuration before the units: Org refuses a billing profile naming an entity,
    // payer, contract or fee schedule Billing does not know.
    let billing_report = seed_billing(billing).await?;
    report.created += billing_report.created;
    report.existing += billing_report.existing;

    println!("service units");
    for (id, unit) in units() {
        let result = client
            .create_service_unit(CreateServiceUnitRequest {
                parent: ORG.into(),
                service_unit: Some(unit),
                service_unit_id: id.into(),
                request_id: String::new(),
            })
            .await;
        report.record(&unit_name(id), result)?;
    }

    println!("locations");
    for (id, name, zone, lines, city, state, zip) in [
        (
            "north-main",
            "Northside Medical Building",
            "America/New_York",
            "120 Harbor Street",
            "Boston",
            "MA",
            "02110",
        ),
        (
            "lakeside",
            "Lakeside Family Medicine",
            "America/Chicago",
            "400 Lake Shore Drive",
            "Chicago",
            "IL",
            "60611",
        ),
    ] {
        let location = Location {
            display_name: name.into(),
            time_zone: zone.into(),
            address: Some(PostalAddress {
                address_lines: vec![lines.into()],
                locality: city.into(),
                administrative_area: state.into(),
                postal_code: zip.into(),
                region_code: "US".into(),
            }),
            ..Default::default()
        };
        let result = client
            .create_location(CreateLocationRequest {
                parent: ORG.into(),
                location: Some(location),
                location_id: id.into(),
                request_id: String::new(),
            })
            .await;
        report.record(&format!("{ORG}/locations/{id}"), result)?;
    }

    println!("providers and credentials");
    for (id, name, npi, taxonomy, credentials) in providers() {
        let provider = Provider {
            display_name: name.into(),
            npi: npi.into(),
            taxonomy_code: taxonomy.into(),
            ..Default::default()
        };
        let parent = format!("{ORG}/providers/{id}");
        let result = client
            .create_provider(CreateProviderRequest {
                parent: ORG.into(),
                provider: Some(provider),
                provider_id: id.into(),
                request_id: String::new(),
            })
            .await;
        report.record(&parent, result)?;
        for (credential_id, unit, state, period) in credentials {
            let credential = Credential {
                unit: unit_name(unit),
                state: state as i32,
                effective_period: period,
                ..Default::default()
            };
            let result = client
                .create_credential(CreateCredentialRequest {
                    parent: parent.clone(),
                    credential: Some(credential),
                    credential_id: credential_id.into(),
                    request_id: String::new(),
                })
                .await;
            report.record(&format!("{parent}/credentials/{credential_id}"), result)?;
        }
    }

    println!("patients, enrollments and coverage");
    for demo in patients() {
        let name = format!("{ORG}/patients/{}", demo.id);
        let result = client
            .create_patient(CreatePatientRequest {
                parent: ORG.into(),
                patient: Some(demo.patient),
                patient_id: demo.id.into(),
                request_id: String::new(),
            })
            .await;
        report.record(&name, result)?;
        for (enrollment_id, unit, step) in demo.enrollments {
            let enrollment = Enrollment {
                unit: unit_name(unit),
                pathway_step: step.into(),
                ..Default::default()
            };
            let result = client
                .create_enrollment(CreateEnrollmentRequest {
                    parent: name.clone(),
                    enrollment: Some(enrollment),
                    enrollment_id: enrollment_id.into(),
                    request_id: String::new(),
                })
                .await;
            report.record(&format!("{name}/enrollments/{enrollment_id}"), result)?;
        }
        for (enrollment_id, requirement) in demo.intake {
            record_intake(
                client,
                &mut report,
                &format!("{name}/enrollments/{enrollment_id}"),
                requirement,
            )
            .await?;
        }
        for (coverage_id, payer, member_id, plan, priority) in demo.coverages {
            let coverage = Coverage {
                payer: format!("{ORG}/payers/{payer}"),
                member_id: member_id.into(),
                plan: plan.into(),
                priority,
                effective_period: from(2026, 1, 1),
                ..Default::default()
            };
            let result = client
                .create_coverage(CreateCoverageRequest {
                    parent: name.clone(),
                    coverage: Some(coverage),
                    coverage_id: coverage_id.into(),
                    request_id: String::new(),
                })
                .await;
            report.record(&format!("{name}/coverages/{coverage_id}"), result)?;
        }
    }
    Ok(report)
}

/// Records that `requirement` is met for the enrollment (signed on 2026-01-01, open-ended), unless
/// it already has a record of it: RecordIntake appends, so a second seed run checks first.
async fn record_intake(
    client: &mut Client,
    report: &mut SeedReport,
    enrollment: &str,
    requirement: IntakeRequirement,
) -> anyhow::Result<()> {
    let what = format!("{enrollment} intake {}", requirement.as_str_name());
    let stored = client
        .get_enrollment(GetEnrollmentRequest {
            name: enrollment.into(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("reading {enrollment}: {}: {}", s.code(), s.message()))?
        .into_inner();
    if stored
        .intake_records
        .iter()
        .any(|r| r.requirement == requirement as i32)
    {
        report.existing += 1;
        println!("  exists   {what}");
        return Ok(());
    }
    let result = client
        .record_intake(RecordIntakeRequest {
            name: enrollment.into(),
            record: Some(IntakeRecord {
                requirement: requirement as i32,
                recorded_by: "demo seed".into(),
                effective_time: date_time(2026, 1, 1),
                note: "signed at the enrollment visit".into(),
                ..Default::default()
            }),
            etag: stored.etag,
            request_id: String::new(),
        })
        .await;
    report.record(&what, result)
}

fn units() -> Vec<(&'static str, ServiceUnit)> {
    let clinic = |name: &str, payer_ids: &[&str], tags: &[&str]| ServiceUnit {
        display_name: name.into(),
        kind: UnitKind::Clinic as i32,
        billing_profile: Some(BillingProfile {
            billing_entity: format!("{ORG}/billingEntities/acme-medical-group"),
            accepted_payers: payers(payer_ids),
            self_pay_allowed: Some(true),
            fee_schedule: format!("{ORG}/feeSchedules/standard-2026"),
            place_of_service: "11".into(),
            claim_form: ClaimForm::Cms1500 as i32,
        }),
        workflow_rules: Some(WorkflowRules {
            allowed_visit_types: strings(&["new-patient", "follow-up", "annual-wellness"]),
            reporting_tags: strings(tags),
            ..Default::default()
        }),
        ..Default::default()
    };
    let step = |id: &str, name: &str| CarePathwayStep {
        id: id.into(),
        display_name: name.into(),
    };
    vec![
        (
            "north-clinic",
            clinic(
                "Northside Primary Care",
                &["medicare", "aetna", "bcbs-ma"],
                &["primary-care", "boston"],
            ),
        ),
        (
            "lakeside-clinic",
            clinic(
                "Lakeside Family Medicine",
                &["medicare", "bcbs-il"],
                &["primary-care", "chicago"],
            ),
        ),
        (
            "cardiology",
            ServiceUnit {
                display_name: "Northside Cardiology".into(),
                kind: UnitKind::ServiceLine as i32,
                parent_unit: unit_name("north-clinic"),
                billing_profile: Some(BillingProfile {
                    fee_schedule: format!("{ORG}/feeSchedules/cardiology-2026"),
                    ..Default::default()
                }),
                workflow_rules: Some(WorkflowRules {
                    intake_requirements: vec![IntakeRequirement::Referral as i32],
                    allowed_visit_types: strings(&["cardio-consult", "echo-review"]),
                    reporting_tags: strings(&["cardiology"]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        (
            "ccm-program",
            ServiceUnit {
                display_name: "Chronic Care Management".into(),
                kind: UnitKind::Program as i32,
                parent_unit: unit_name("north-clinic"),
                billing_profile: Some(BillingProfile {
                    accepted_payers: payers(&["medicare"]),
                    self_pay_allowed: Some(false),
                    fee_schedule: format!("{ORG}/feeSchedules/ccm-2026"),
                    ..Default::default()
                }),
                workflow_rules: Some(WorkflowRules {
                    intake_requirements: vec![
                        IntakeRequirement::Consent as i32,
                        IntakeRequirement::CarePlan as i32,
                    ],
                    allowed_visit_types: strings(&["ccm-enrollment", "ccm-monthly-checkin"]),
                    care_pathway_steps: vec![
                        step("enrollment", "Enrollment and consent"),
                        step("care-plan", "Comprehensive care plan"),
                        step("monthly-management", "Monthly care management"),
                        step("graduation", "Graduation"),
                    ],
                    reporting_tags: strings(&["ccm", "chronic-care"]),
                }),
                ..Default::default()
            },
        ),
        (
            "globex-employer",
            ServiceUnit {
                display_name: "Globex Employee Health".into(),
                kind: UnitKind::EmployerProgram as i32,
                billing_profile: Some(BillingProfile {
                    billing_entity: format!("{ORG}/billingEntities/acme-employer-services"),
                    // Billing's Globex contract (invoiced per visit, claim form NONE).
                    accepted_payers: vec![PayerContract {
                        payer: format!("{ORG}/payers/globex-direct"),
                        contract: format!("{ORG}/contracts/globex-direct-2026"),
                    }],
                    self_pay_allowed: Some(false),
                    fee_schedule: format!("{ORG}/feeSchedules/globex-contract"),
                    place_of_service: "02".into(),
                    claim_form: ClaimForm::None as i32,
                }),
                workflow_rules: Some(WorkflowRules {
                    allowed_visit_types: strings(&["employee-wellness", "telehealth-follow-up"]),
                    reporting_tags: strings(&["employer", "globex"]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        (
            "riverside-referrals",
            ServiceUnit {
                display_name: "Riverside Partner Referrals".into(),
                kind: UnitKind::ReferralPath as i32,
                parent_unit: unit_name("cardiology"),
                workflow_rules: Some(WorkflowRules {
                    intake_requirements: vec![
                        IntakeRequirement::Referral as i32,
                        IntakeRequirement::PriorAuthorization as i32,
                    ],
                    reporting_tags: strings(&["partner-riverside"]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    ]
}

type DemoCredential = (
    &'static str,
    &'static str,
    CredentialState,
    Option<Interval>,
);

fn providers() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Vec<DemoCredential>,
)> {
    let until = |start: (i32, u32, u32), end: (i32, u32, u32)| {
        Some(Interval {
            start_time: date_time(start.0, start.1, start.2),
            end_time: date_time(end.0, end.1, end.2),
        })
    };
    vec![
        (
            "dr-okafor",
            "Dr. Amara Okafor, MD",
            "1234567893",
            "207Q00000X",
            vec![
                (
                    "north-clinic",
                    "north-clinic",
                    CredentialState::Active,
                    from(2024, 1, 1),
                ),
                (
                    "ccm-program",
                    "ccm-program",
                    CredentialState::Active,
                    from(2025, 1, 1),
                ),
            ],
        ),
        (
            "dr-lindqvist",
            "Dr. Erik Lindqvist, MD",
            "1987654328",
            "207RC0000X",
            vec![
                (
                    "cardiology",
                    "cardiology",
                    CredentialState::Active,
                    from(2024, 6, 1),
                ),
                (
                    "lakeside-clinic",
                    "lakeside-clinic",
                    CredentialState::Pending,
                    from(2026, 12, 1),
                ),
            ],
        ),
        (
            "np-reyes",
            "Marisol Reyes, NP",
            "1452039864",
            "363LF0000X",
            vec![
                (
                    "globex-employer",
                    "globex-employer",
                    CredentialState::Active,
                    from(2025, 3, 1),
                ),
                (
                    "ccm-program",
                    "ccm-program",
                    CredentialState::Active,
                    until((2025, 6, 1), (2026, 6, 1)),
                ),
            ],
        ),
    ]
}

struct DemoPatient {
    id: &'static str,
    patient: Patient,
    enrollments: Vec<(&'static str, &'static str, &'static str)>,
    /// Intake requirements met, by enrollment id: what the enrollment's unit requires before a visit.
    intake: Vec<(&'static str, IntakeRequirement)>,
    coverages: Vec<(&'static str, &'static str, &'static str, &'static str, i32)>,
}

fn patients() -> Vec<DemoPatient> {
    let person = |given: &str,
                  family: &str,
                  (year, month, day): (i32, i32, i32),
                  gender: AdministrativeGender,
                  mrn: &str| Patient {
        given_name: given.into(),
        family_name: family.into(),
        birth_date: Some(Date { year, month, day }),
        gender: gender as i32,
        identifiers: vec![PatientIdentifier {
            system: "urn:pm:ehr:northside-epic:mrn".into(),
            value: mrn.into(),
        }],
        // Fictional, like the people: claims carry it as the subscriber's address.
        address: Some(pm_api::types::PostalAddress {
            address_lines: vec!["12 Elm Street".into()],
            locality: "Boston".into(),
            administrative_area: "MA".into(),
            postal_code: "02110".into(),
            region_code: "US".into(),
        }),
        ..Default::default()
    };
    vec![
        DemoPatient {
            id: "p-0001",
            patient: person(
                "Harold",
                "Testpatient",
                (1948, 3, 14),
                AdministrativeGender::Male,
                "MRN-100001",
            ),
            enrollments: vec![("ccm", "ccm-program", "care-plan")],
            // Consent signed; the care plan is still being drafted (CCM requires both).
            intake: vec![("ccm", IntakeRequirement::Consent)],
            coverages: vec![(
                "medicare",
                "medicare",
                "1EG4-TE5-MK72",
                "Medicare Part B",
                1,
            )],
        },
        DemoPatient {
            id: "p-0002",
            patient: person(
                "Greta",
                "Samplefield",
                (1985, 9, 2),
                AdministrativeGender::Female,
                "MRN-100002",
            ),
            enrollments: vec![("globex", "globex-employer", "")],
            intake: vec![],
            coverages: vec![(
                "globex",
                "globex-direct",
                "GLX-55012",
                "Globex Direct Contract",
                1,
            )],
        },
        DemoPatient {
            id: "p-0003",
            patient: person(
                "Walter",
                "Democase",
                (1957, 11, 30),
                AdministrativeGender::Male,
                "MRN-100003",
            ),
            enrollments: vec![],
            intake: vec![],
            coverages: vec![
                ("aetna", "aetna", "W123456789", "Aetna Choice POS II", 1),
                (
                    "medicare",
                    "medicare",
                    "2FH5-UF6-NL83",
                    "Medicare Part B",
                    2,
                ),
            ],
        },
        DemoPatient {
            id: "p-0004",
            patient: person(
                "Rosa",
                "Fictivez",
                (1972, 5, 21),
                AdministrativeGender::Female,
                "MRN-100004",
            ),
            enrollments: vec![("ccm", "ccm-program", "enrollment")],
            // Everything CCM requires, so that the tour's FindSlots and BookAppointment work.
            intake: vec![
                ("ccm", IntakeRequirement::Consent),
                ("ccm", IntakeRequirement::CarePlan),
            ],
            coverages: vec![(
                "medicare",
                "medicare",
                "3GJ6-VG7-PM94",
                "Medicare Part B",
                1,
            )],
        },
    ]
}

/// The demo's administrator, who seeds the Org data.
pub const ADMIN: &str = "principals/admin";

/// The demo's people and their roles in `organizations/acme` (RBAC). Run it first: in dev mode the
/// tool certificate may create principals and bindings before anyone can log in.
pub async fn seed_access(
    client: &mut pm_api::rbac::rbac_service_client::RbacServiceClient<Channel>,
    report: &mut SeedReport,
) -> anyhow::Result<()> {
    use pm_api::rbac::{
        CreatePrincipalRequest, CreateRoleBindingRequest, Principal, PrincipalKind, Role,
        RoleBinding,
    };
    println!("principals and role bindings");
    let people: [(&str, &str, &str, Role, &[&str]); 4] = [
        (
            "admin",
            "Avery Admin",
            "",
            Role::OrganizationAdministrator,
            &[],
        ),
        (
            "casey-ccm",
            "Casey (CCM program manager)",
            "",
            Role::ProgramManager,
            &["ccm-program"],
        ),
        (
            "dr-okafor",
            "Dr. Amara Okafor",
            "dr-okafor",
            Role::Provider,
            &[],
        ),
        (
            "jordan-billing",
            "Jordan (billing)",
            "",
            Role::BillingStaff,
            &["north-clinic", "lakeside-clinic"],
        ),
    ];
    for (id, display_name, provider, role, units) in people {
        let principal = Principal {
            display_name: display_name.into(),
            kind: PrincipalKind::User as i32,
            provider: if provider.is_empty() {
                String::new()
            } else {
                format!("{ORG}/providers/{provider}")
            },
            ..Default::default()
        };
        let result = client
            .create_principal(CreatePrincipalRequest {
                principal: Some(principal),
                principal_id: id.into(),
                request_id: String::new(),
            })
            .await;
        report.record(&format!("principals/{id}"), result)?;
        let binding = RoleBinding {
            principal: format!("principals/{id}"),
            role: role as i32,
            units: units.iter().map(|u| unit_name(u)).collect(),
            reason: "demo operating model".into(),
            ..Default::default()
        };
        let result = client
            .create_role_binding(CreateRoleBindingRequest {
                parent: ORG.into(),
                role_binding: Some(binding),
                role_binding_id: id.into(),
                request_id: String::new(),
            })
            .await;
        report.record(&format!("{ORG}/roleBindings/{id}"), result)?;
    }
    Ok(())
}

/// The Scheduling side of the demo: visit types of the clinic and the CCM program, and Dr. Okafor's
/// weekly hours for both at the Northside building. Patient p-0004 (CCM, step `enrollment`, consent
/// and care plan recorded) can book `ccm-enrollment`; p-0001 (step `care-plan`, consent only) is told
/// WRONG_PATHWAY_STEP and INTAKE_CARE_PLAN_MISSING; p-0003 (enrolled
/// nowhere) PATIENT_NOT_ENROLLED.
pub async fn seed_scheduling(
    client: &mut pm_api::scheduling::scheduling_service_client::SchedulingServiceClient<
        pm_runtime::client::AuthedChannel,
    >,
) -> anyhow::Result<SeedReport> {
    use pm_api::scheduling::{
        AvailabilityRule, CreateAvailabilityRuleRequest, CreateVisitTypeRequest, VisitModality,
        VisitType, Weekday,
    };
    let minutes = |m: i64| {
        Some(prost_types::Duration {
            seconds: m * 60,
            nanos: 0,
        })
    };
    let mut report = SeedReport::default();
    println!("visit types");
    let visit_types = [
        (
            "north-clinic",
            "follow-up",
            "Follow-up visit",
            30,
            10,
            "",
            VisitModality::InPerson,
            &["99213"][..],
        ),
        (
            "north-clinic",
            "new-patient",
            "New patient visit",
            45,
            15,
            "",
            VisitModality::InPerson,
            &["99203"][..],
        ),
        (
            "ccm-program",
            "ccm-enrollment",
            "CCM enrollment",
            45,
            0,
            "enrollment",
            VisitModality::InPerson,
            &["G0506"][..],
        ),
        (
            "ccm-program",
            "ccm-monthly-checkin",
            "CCM monthly check-in",
            20,
            0,
            "monthly-management",
            VisitModality::Telehealth,
            &["99490"][..],
        ),
    ];
    for (unit, code, display, duration, after, step, modality, hints) in visit_types {
        let parent = unit_name(unit);
        let result = client
            .create_visit_type(CreateVisitTypeRequest {
                parent: parent.clone(),
                visit_type: Some(VisitType {
                    code: code.into(),
                    display_name: display.into(),
                    duration: minutes(duration),
                    buffer_after: minutes(after),
                    pathway_step: step.into(),
                    modality: modality as i32,
                    billing_code_hints: strings(hints),
                    ..Default::default()
                }),
                visit_type_id: code.into(),
                request_id: String::new(),
            })
            .await;
        report.record(&format!("{parent}/visitTypes/{code}"), result)?;
    }
    println!("availability");
    let provider = format!("{ORG}/providers/dr-okafor");
    let weekdays = [
        ("mon", Weekday::Monday),
        ("tue", Weekday::Tuesday),
        ("wed", Weekday::Wednesday),
        ("thu", Weekday::Thursday),
        ("fri", Weekday::Friday),
    ];
    for (unit, start, end) in [
        ("ccm-program", "09:00", "12:00"),
        ("north-clinic", "13:00", "17:00"),
    ] {
        for (day, weekday) in weekdays {
            let id = format!("{unit}-{day}");
            let result = client
                .create_availability_rule(CreateAvailabilityRuleRequest {
                    parent: provider.clone(),
                    availability_rule: Some(AvailabilityRule {
                        unit: unit_name(unit),
                        location: format!("{ORG}/locations/north-main"),
                        weekday: weekday as i32,
                        start_time: start.into(),
                        end_time: end.into(),
                        effective_from: Some(Date {
                            year: 2026,
                            month: 1,
                            day: 1,
                        }),
                        ..Default::default()
                    }),
                    availability_rule_id: id.clone(),
                    request_id: String::new(),
                })
                .await;
            report.record(&format!("{provider}/availabilityRules/{id}"), result)?;
        }
    }
    Ok(report)
}

/// The Billing side of the demo: the two billing entities Org's profiles name, the payers the units
/// accept, a Medicare contract, and fee schedules at four levels (organization, the CCM program,
/// the Medicare payer, cardiology), each with a 2026 version. Run after [`seed`]: the program and
/// unit scopes name Org's units.
pub async fn seed_billing(
    client: &mut pm_api::billing::billing_service_client::BillingServiceClient<
        pm_runtime::client::AuthedChannel,
    >,
) -> anyhow::Result<SeedReport> {
    use pm_api::billing::fee_schedule_scope::Target;
    use pm_api::billing::*;
    use pm_api::types::PostalAddress;
    let mut report = SeedReport::default();
    let address = |line: &str, city: &str, state: &str, zip: &str| PostalAddress {
        address_lines: vec![line.into()],
        locality: city.into(),
        administrative_area: state.into(),
        postal_code: zip.into(),
        region_code: "US".into(),
    };
    println!("billing entities");
    for (id, display, npi, ein, taxonomy) in [
        (
            "acme-medical-group",
            "Acme Medical Group",
            "1234567893",
            "12-3456789",
            "261QP2300X",
        ),
        (
            "acme-ccm-services",
            "Acme Chronic Care Services",
            "1456789019",
            "46-1234567",
            "261QC1500X",
        ),
        (
            "acme-employer-services",
            "Acme Employer Services",
            "1987654328",
            "27-1234567",
            "261QM1300X",
        ),
    ] {
        let entity = BillingEntity {
            display_name: display.into(),
            legal_name: display.to_uppercase(),
            npi: npi.into(),
            tax_id: ein.into(),
            taxonomy: taxonomy.into(),
            billing_address: Some(address("100 Main Street", "Boston", "MA", "021101234")),
            clearinghouse: Some(ClearinghouseSettings {
                isa_sender_id: "ACMEMED".into(),
                isa_receiver_id: "CLEARINGHOUSE".into(),
                gs_sender_code: "ACMEMED".into(),
                gs_receiver_code: "CLEARINGHOUSE".into(),
                usage_indicator: UsageIndicator::Test as i32,
                receiver_name: "Demo Clearinghouse".into(),
                contact_name: "Jordan Billing".into(),
                contact_phone: "6175550100".into(),
            }),
            ..Default::default()
        };
        let result = client
            .create_billing_entity(CreateBillingEntityRequest {
                parent: ORG.into(),
                billing_entity: Some(entity),
                billing_entity_id: id.into(),
                request_id: String::new(),
            })
            .await;
        report.record(&format!("{ORG}/billingEntities/{id}"), result)?;
    }
    println!("payers");
    for (id, display, payer_id, filing) in [
        ("medicare", "Medicare Part B", "MEDICARE", "MB"),
        ("aetna", "Aetna", "60054", "CI"),
        (
            "bcbs-ma",
            "Blue Cross Blue Shield of Massachusetts",
            "BCBSMA",
            "BL",
        ),
        (
            "bcbs-il",
            "Blue Cross Blue Shield of Illinois",
            "BCBSIL",
            "BL",
        ),
        (
            "globex-direct",
            "Globex (employer, direct contract)",
            "GLOBEX",
            "ZZ",
        ),
    ] {
        let payer = Payer {
            display_name: display.into(),
            payer_id: payer_id.into(),
            claim_filing_indicator: filing.into(),
            timely_filing_days: if filing == "MB" { 365 } else { 180 },
            ..Default::default()
        };
        let result = client
            .create_payer(CreatePayerRequest {
                parent: ORG.into(),
                payer: Some(payer),
                payer_id: id.into(),
                request_id: String::new(),
            })
            .await;
        report.record(&format!("{ORG}/payers/{id}"), result)?;
    }
    println!("contracts");
    let contract = Contract {
        display_name: "Medicare Part B 2026".into(),
        payer: format!("{ORG}/payers/medicare"),
        billing_entity: format!("{ORG}/billingEntities/acme-medical-group"),
        units: vec![unit_name("north-clinic"), unit_name("lakeside-clinic")],
        effective_from: Some(Date {
            year: 2026,
            month: 1,
            day: 1,
        }),
        ..Default::default()
    };
    let result = client
        .create_contract(CreateContractRequest {
            parent: ORG.into(),
            contract: Some(contract),
            contract_id: "medicare-2026".into(),
            request_id: String::new(),
        })
        .await;
    report.record(&format!("{ORG}/contracts/medicare-2026"), result)?;
    let contract = Contract {
        display_name: "Globex employee health 2026 (invoiced per visit)".into(),
        payer: format!("{ORG}/payers/globex-direct"),
        billing_entity: format!("{ORG}/billingEntities/acme-employer-services"),
        units: vec![unit_name("globex-employer")],
        effective_from: Some(Date {
            year: 2026,
            month: 1,
            day: 1,
        }),
        invoice_basis: InvoiceBasis::PerVisit as i32,
        ..Default::default()
    };
    let result = client
        .create_contract(CreateContractRequest {
            parent: ORG.into(),
            contract: Some(contract),
            contract_id: "globex-direct-2026".into(),
            request_id: String::new(),
        })
        .await;
    report.record(&format!("{ORG}/contracts/globex-direct-2026"), result)?;
    println!("fee schedules");
    let schedules: [(&str, &str, Target, &str); 5] = [
        (
            "standard-2026",
            "Standard fees",
            Target::Organization(true),
            "code,modifiers,amount,description\n99203,,150.00,New patient visit\n99213,,95.00,Established patient visit\n99214,,135.00,Established patient visit (moderate)\n99213,95,95.00,Established patient visit (telehealth)\nG0506,,64.00,CCM initiating visit add-on\n99490,,62.00,CCM first 20 minutes\n99439,,47.00,CCM each additional 20 minutes\n",
        ),
        (
            "ccm-2026",
            "CCM program fees",
            Target::Program(unit_name("ccm-program")),
            "code,modifiers,amount,description\nG0506,,58.00,CCM initiating visit add-on\n99490,,60.49,CCM first 20 minutes\n99439,,45.93,CCM each additional 20 minutes\n",
        ),
        (
            "medicare-2026",
            "Medicare Part B allowed amounts",
            Target::Payer(format!("{ORG}/payers/medicare")),
            "code,modifiers,amount,description\n99213,,88.20,Established patient visit\n99214,,124.50,Established patient visit (moderate)\n",
        ),
        (
            "cardiology-2026",
            "Cardiology fees",
            Target::Unit(unit_name("cardiology")),
            "code,modifiers,amount,description\n93000,,25.00,Electrocardiogram\n93306,,210.00,Echocardiogram\n",
        ),
        (
            "globex-contract",
            "Globex employer contract",
            Target::Payer(format!("{ORG}/payers/globex-direct")),
            "code,modifiers,amount,description\n99213,,85.00,Employee visit\n99213,95,85.00,Employee visit (telehealth)\n",
        ),
    ];
    for (id, display, target, csv) in schedules {
        let name = format!("{ORG}/feeSchedules/{id}");
        let result = client
            .create_fee_schedule(CreateFeeScheduleRequest {
                parent: ORG.into(),
                fee_schedule: Some(FeeSchedule {
                    display_name: display.into(),
                    scope: Some(FeeScheduleScope {
                        target: Some(target),
                    }),
                    ..Default::default()
                }),
                fee_schedule_id: id.into(),
                request_id: String::new(),
            })
            .await;
        report.record(&name, result)?;
        let result = client
            .create_fee_schedule_version(CreateFeeScheduleVersionRequest {
                parent: name.clone(),
                fee_schedule_version: Some(FeeScheduleVersion {
                    effective_from: Some(Date {
                        year: 2026,
                        month: 1,
                        day: 1,
                    }),
                    ..Default::default()
                }),
                csv: csv.into(),
                fee_schedule_version_id: "v2026".into(),
                request_id: String::new(),
            })
            .await;
        report.record(&format!("{name}/versions/v2026"), result)?;
    }
    println!("routing rules");
    for (id, code) in [
        ("ccm-g0506", "G0506"),
        ("ccm-99490", "99490"),
        ("ccm-99439", "99439"),
    ] {
        let result = client
            .create_routing_rule(CreateRoutingRuleRequest {
                parent: ORG.into(),
                routing_rule: Some(RoutingRule {
                    code: code.into(),
                    billing_entity: format!("{ORG}/billingEntities/acme-ccm-services"),
                    reason: "chronic care management is billed by the CCM entity".into(),
                    ..Default::default()
                }),
                routing_rule_id: id.into(),
                request_id: String::new(),
            })
            .await;
        report.record(&format!("{ORG}/routingRules/{id}"), result)?;
    }
    Ok(report)
}

/// A request_id the demo uses for `label`: the same on every run, so a second seed replays.
fn demo_request(label: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("pm-demo:{label}").as_bytes(),
    )
    .to_string()
}

/// The last month of the demo's billing: charges entered for visits of the past 30 days (the
/// scheduling demo's visits are all ahead), assembled into claims (Harold's clinic visit is split:
/// its CCM line goes to the CCM entity by rule, the office visit to the clinic group by contract;
/// Greta's employer visit is set aside from claims), Walter's Aetna claim exported and paid by an
/// 835, Greta's visit (dated last month) invoiced to Globex on the month's invoice. The other claims
/// stay READY for `pm billing export-837`.
pub async fn seed_billing_month(
    client: &mut pm_api::billing::billing_service_client::BillingServiceClient<
        pm_runtime::client::AuthedChannel,
    >,
) -> anyhow::Result<SeedReport> {
    let mut report = SeedReport::default();
    let report = &mut report;
    use pm_api::billing::*;
    println!("a month of charges, claims and a remittance");
    let today = chrono::Utc::now().date_naive();
    // (patient, unit, payer, code, diagnoses, days ago)
    type Visit<'a> = (&'a str, &'a str, &'a str, &'a str, &'a [&'a str], u64);
    let visits: [Visit; 7] = [
        (
            "p-0004",
            "ccm-program",
            "medicare",
            "G0506",
            &["E11.9", "I10"],
            28,
        ),
        (
            "p-0004",
            "ccm-program",
            "medicare",
            "99490",
            &["E11.9", "I10"],
            21,
        ),
        ("p-0004", "ccm-program", "medicare", "99439", &["E11.9"], 7),
        ("p-0001", "north-clinic", "medicare", "99213", &["I10"], 14),
        (
            "p-0001",
            "north-clinic",
            "medicare",
            "G0506",
            &["I10", "E78.5"],
            14,
        ),
        ("p-0003", "north-clinic", "aetna", "99214", &["M54.50"], 10),
        (
            "p-0002",
            "globex-employer",
            "globex-direct",
            "99213",
            &["Z00.00"],
            5,
        ),
    ];
    // Greta's employer visit falls in the month before this one, so that the month has ended and
    // is invoiced below.
    let previous_month_day = |days_ago: u64| {
        let first = chrono::Datelike::with_day(&today, 1).unwrap_or(today);
        first - chrono::Days::new(days_ago)
    };
    for (i, (patient, unit, payer, code, diagnoses, days_ago)) in visits.into_iter().enumerate() {
        let day = if unit == "globex-employer" {
            previous_month_day(days_ago)
        } else {
            today - chrono::Days::new(days_ago)
        };
        let request_id = demo_request(&format!("charge-{i}"));
        // A charge entered by hand is named after its request_id: one there means an earlier seed.
        let name = pm_billing::handlers::manual_charge_name(ORG, &request_id);
        if client
            .get_charge(GetChargeRequest { name: name.clone() })
            .await
            .is_ok()
        {
            report.existing += 1;
            println!("  exists   {name}");
            continue;
        }
        let result = client
            .create_charge(CreateChargeRequest {
                parent: ORG.into(),
                charge: Some(Charge {
                    patient: format!("{ORG}/patients/{patient}"),
                    unit: unit_name(unit),
                    provider: format!("{ORG}/providers/dr-okafor"),
                    payer: format!("{ORG}/payers/{payer}"),
                    code: code.into(),
                    units: 1,
                    diagnoses: strings(diagnoses),
                    service_date: Some(Date {
                        year: chrono::Datelike::year(&day),
                        month: chrono::Datelike::month(&day) as i32,
                        day: chrono::Datelike::day(&day) as i32,
                    }),
                    ..Default::default()
                }),
                request_id,
            })
            .await;
        report.record(&name, result)?;
    }
    let assembled = client
        .assemble_claims(AssembleClaimsRequest { parent: ORG.into() })
        .await
        .map_err(|s| anyhow::anyhow!("assembling claims: {}", s.message()))?
        .into_inner();
    for claim in &assembled.claims {
        let state = ClaimState::try_from(claim.state).unwrap_or(ClaimState::Unspecified);
        println!(
            "  claim    {} ({}, {})",
            claim.name,
            state.as_str_name(),
            claim.billing_entity
        );
    }
    // Globex's invoice for the month of Greta's visit (its contract bills per visit).
    let greta_month = previous_month_day(5).format("%Y-%m").to_string();
    let globex = format!("{ORG}/contracts/globex-direct-2026");
    let existing = client
        .list_invoices(ListInvoicesRequest {
            parent: ORG.into(),
            contract: globex.clone(),
            month: greta_month.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("listing invoices: {}", s.message()))?
        .into_inner();
    if let Some(invoice) = existing.invoices.first() {
        report.existing += 1;
        println!("  exists   {}", invoice.name);
        return walter_paid(client, report).await;
    }
    let invoiced = client
        .create_invoices(CreateInvoicesRequest {
            parent: ORG.into(),
            month: greta_month.clone(),
            contract: globex,
            request_id: demo_request(&format!("invoices-{greta_month}")),
        })
        .await;
    match invoiced {
        Ok(answer) => {
            for invoice in &answer.get_ref().invoices {
                report.created += 1;
                println!(
                    "  invoice  {} ({} lines, {} cents)",
                    invoice.name,
                    invoice.lines.len(),
                    invoice.total_cents
                );
            }
            if answer.get_ref().invoices.is_empty() {
                println!("  nothing  to invoice to Globex for {greta_month}");
            }
        }
        // Early on the first of a month the organization's zone may still be in the last one.
        Err(status) if status.code() == Code::FailedPrecondition => {
            println!("  skipped  invoice for {greta_month}: {}", status.message());
        }
        Err(status) => {
            return Err(anyhow::anyhow!(
                "invoicing {greta_month}: {}: {}",
                status.code(),
                status.message()
            ));
        }
    }
    walter_paid(client, report).await
}

/// Walter's Aetna claim: exported, then paid 80% with the rest written off by contract.
async fn walter_paid(
    client: &mut pm_api::billing::billing_service_client::BillingServiceClient<
        pm_runtime::client::AuthedChannel,
    >,
    report: &mut SeedReport,
) -> anyhow::Result<SeedReport> {
    use pm_api::billing::*;
    let listed = client
        .list_claims(ListClaimsRequest {
            parent: ORG.into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("listing claims: {}", s.message()))?
        .into_inner();
    let Some(walter) = listed
        .claims
        .into_iter()
        .find(|c| c.patient.ends_with("/p-0003"))
    else {
        return Ok(std::mem::take(report));
    };
    if walter.state == ClaimState::Ready as i32 || walter.state == ClaimState::Submitted as i32 {
        let exported = client
            .export_claims(ExportClaimsRequest {
                parent: ORG.into(),
                claim_names: vec![walter.name.clone()],
                request_id: demo_request("export-walter"),
                ..Default::default()
            })
            .await;
        report.record(&format!("837P batch for {}", walter.name), exported)?;
        let content = demo_835(&walter, "DEMO-EFT-0001");
        let posted = client
            .import_remittance(ImportRemittanceRequest {
                parent: ORG.into(),
                content,
            })
            .await
            .map_err(|s| anyhow::anyhow!("posting the demo 835: {}", s.message()))?
            .into_inner();
        if posted.already_imported {
            println!("  exists   remittance DEMO-EFT-0001");
        } else {
            report.created += 1;
            println!("  created  remittance DEMO-EFT-0001");
        }
    }
    Ok(std::mem::take(report))
}

/// An 835 (005010X221A1) from Aetna paying 80% of every line of `claim`, the rest written off as a
/// contractual adjustment (CAS CO-45), with its segment count computed.
pub fn demo_835(claim: &pm_api::billing::Claim, trace: &str) -> String {
    let money = |cents: i64| {
        let (whole, part) = (cents / 100, cents % 100);
        if part == 0 {
            format!("{whole}")
        } else {
            format!("{whole}.{part:02}")
        }
    };
    let paid_of = |cents: i64| cents * 4 / 5;
    let number = claim.name.rsplit('/').next().unwrap_or_default();
    let total_paid: i64 = claim.lines.iter().map(|l| paid_of(l.amount_cents)).sum();
    let date = chrono::Utc::now().format("%Y%m%d").to_string();
    let mut body = vec![
        "ST*835*0001".to_string(),
        format!(
            "BPR*I*{}*C*ACH*CCP*01*999999992*DA*123456*1512345678**01*999988880*DA*98765*{date}",
            money(total_paid)
        ),
        format!("TRN*1*{trace}*1512345678"),
        format!("DTM*405*{date}"),
        "N1*PR*AETNA".into(),
        "N3*151 FARMINGTON AVENUE".into(),
        "N4*HARTFORD*CT*06156".into(),
        "REF*2U*60054".into(),
        "PER*BL*PROVIDER SERVICES*TE*8005551212".into(),
        "N1*PE*ACME MEDICAL GROUP*XX*1234567893".into(),
        "LX*1".into(),
        format!(
            "CLP*{number}*1*{}*{}*0*CI*AETNA-{number}*11*1",
            money(claim.total_cents),
            money(total_paid)
        ),
        "NM1*QC*1*DEMOCASE*WALTER****MI*W123456789".into(),
    ];
    for line in &claim.lines {
        let mut code = format!("HC:{}", line.code);
        for modifier in &line.modifiers {
            code.push(':');
            code.push_str(modifier);
        }
        let paid = paid_of(line.amount_cents);
        body.push(format!(
            "SVC*{code}*{}*{}**{}",
            money(line.amount_cents),
            money(paid),
            line.units
        ));
        if line.amount_cents > paid {
            body.push(format!("CAS*CO*45*{}", money(line.amount_cents - paid)));
        }
    }
    let count = body.len() + 1;
    body.push(format!("SE*{count}*0001"));
    let mut file = vec![
        "ISA*00*          *00*          *ZZ*AETNA          *ZZ*ACMEMED        *261205*1200*^*00501*000000901*0*T*:".to_string(),
        format!("GS*HP*AETNA*ACMEMED*{date}*1200*901*X*005010X221A1"),
    ];
    file.extend(body);
    file.push("GE*1*901".into());
    file.push("IEA*1*000000901".into());
    file.join("~\n") + "~\n"
}

//! Configuration a clinic changes after setting it up, end to end over mTLS on SQLite and on
//! PostgreSQL: visit types and availability rules are updated (update_mask, etag) and undeleted;
//! a visit type its unit's rules do not allow is refused when written; a deleted id's reuse says to
//! undelete it; the front desk finds patients by name prefix, within the units it may see.

#![allow(clippy::unwrap_used)]

mod support;

use pm_api::org::org_service_client::OrgServiceClient;
use pm_api::org::*;
use pm_api::scheduling::scheduling_service_client::SchedulingServiceClient;
use pm_api::scheduling::*;
use pm_api::types::Date;
use pm_runtime::client::AuthedChannel;
use pm_runtime::config::Backend;
use prost_types::FieldMask;
use support::TestMesh;
use support::time::{minutes, since_2024};
use tonic::Code;
use tonic_types::StatusExt;

const ORG: &str = "organizations/acme";
const CLINIC: &str = "organizations/acme/units/north-clinic";
const CCM: &str = "organizations/acme/units/ccm-program";
const MAIN: &str = "organizations/acme/locations/main";
const OKAFOR: &str = "organizations/acme/providers/dr-okafor";
const CASEY: &str = "principals/casey-ccm";

type Org = OrgServiceClient<AuthedChannel>;
type Scheduling = SchedulingServiceClient<AuthedChannel>;

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

fn fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

/// Acme with the demo's unit ids (the demo principals' bindings name them): the clinic allows
/// `follow-up`, the CCM program `ccm-monthly` with the steps `enroll` and `monthly`; Okafor works
/// at Main street.
async fn seed(org: &mut Org) -> anyhow::Result<()> {
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
    for (id, visits, steps) in [
        ("north-clinic", &["follow-up"][..], &[][..]),
        (
            "ccm-program",
            &["ccm-monthly"][..],
            &["enroll", "monthly"][..],
        ),
    ] {
        org.create_service_unit(CreateServiceUnitRequest {
            parent: ORG.into(),
            service_unit: Some(ServiceUnit {
                display_name: id.into(),
                kind: UnitKind::Clinic as i32,
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
            ..Default::default()
        }),
        provider_id: "dr-okafor".into(),
        request_id: String::new(),
    })
    .await?;
    org.create_credential(CreateCredentialRequest {
        parent: OKAFOR.into(),
        credential: Some(Credential {
            unit: CLINIC.into(),
            state: CredentialState::Active as i32,
            effective_period: since_2024(),
            ..Default::default()
        }),
        credential_id: "main".into(),
        request_id: String::new(),
    })
    .await?;
    Ok(())
}

fn visit(code: &str, step: &str) -> VisitType {
    VisitType {
        code: code.into(),
        display_name: code.into(),
        duration: minutes(30),
        pathway_step: step.into(),
        ..Default::default()
    }
}

async fn create_visit(
    s: &mut Scheduling,
    unit: &str,
    id: &str,
    visit: VisitType,
) -> Result<VisitType, tonic::Status> {
    s.create_visit_type(CreateVisitTypeRequest {
        parent: unit.into(),
        visit_type: Some(visit),
        visit_type_id: id.into(),
        request_id: String::new(),
    })
    .await
    .map(|r| r.into_inner())
}

async fn get_visit(s: &mut Scheduling, name: &str) -> Result<VisitType, tonic::Status> {
    s.get_visit_type(GetVisitTypeRequest { name: name.into() })
        .await
        .map(|r| r.into_inner())
}

/// Visit types: a code the unit does not allow and a pathway step it does not have are refused on
/// create and on update, naming the field, and nothing is written; Update follows its mask and etag;
/// a deleted visit type's id cannot be reused but the visit type can be undeleted.
async fn visit_types(backend: Backend) -> anyhow::Result<()> {
    let mesh = TestMesh::start(backend).await?;
    let mut org = mesh.org().await?;
    seed(&mut org).await?;
    let mut s = mesh.scheduling_as(pm::demo::ADMIN).await?;

    // Refused when written, not found out later in slot search.
    for (unit, id, candidate, why, field) in [
        (
            CLINIC,
            "x-ray",
            visit("x-ray", ""),
            "VISIT_TYPE_NOT_ALLOWED",
            "visit_type.code",
        ),
        (
            CCM,
            "ccm-lost",
            visit("ccm-monthly", "nowhere"),
            "PATHWAY_STEP_UNKNOWN",
            "visit_type.pathway_step",
        ),
    ] {
        let err = create_visit(&mut s, unit, id, candidate).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert_eq!(reason(&err), why);
        assert!(err.message().contains(field), "{}", err.message());
        let name = format!("{unit}/visitTypes/{id}");
        assert_eq!(
            get_visit(&mut s, &name).await.unwrap_err().code(),
            Code::NotFound,
            "nothing written"
        );
    }

    let follow_up = create_visit(&mut s, CLINIC, "follow-up", visit("follow-up", "")).await?;
    let monthly = create_visit(&mut s, CCM, "monthly", visit("ccm-monthly", "monthly")).await?;

    // Update: the fields of the mask, a new etag.
    let mut patch = follow_up.clone();
    patch.display_name = "Follow-up visit".into();
    patch.duration = minutes(45);
    patch.buffer_after = minutes(10);
    let updated = s
        .update_visit_type(UpdateVisitTypeRequest {
            visit_type: Some(patch.clone()),
            update_mask: mask(&["display_name", "duration"]),
        })
        .await?
        .into_inner();
    assert_eq!(updated.display_name, "Follow-up visit");
    assert_eq!(updated.duration, minutes(45));
    assert_eq!(updated.buffer_after, None, "outside the mask: unchanged");
    assert_ne!(updated.etag, follow_up.etag);

    // A bad mask, a stale etag, a bad value: refused, nothing written.
    let mut fresh = patch.clone();
    fresh.etag = updated.etag.clone();
    for (paths, code) in [
        (&["code"][..], Code::InvalidArgument),
        (&["no_such_field"][..], Code::InvalidArgument),
        (&["etag"][..], Code::InvalidArgument),
    ] {
        let err = s
            .update_visit_type(UpdateVisitTypeRequest {
                visit_type: Some(fresh.clone()),
                update_mask: mask(paths),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{paths:?}: {err:?}");
        assert_eq!(fields(&err), vec!["update_mask"], "{paths:?}");
    }
    let err = s
        .update_visit_type(UpdateVisitTypeRequest {
            visit_type: Some(patch.clone()), // the etag of the first read
            update_mask: mask(&["display_name"]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    let mut short = updated.clone();
    short.duration = minutes(1);
    let err = s
        .update_visit_type(UpdateVisitTypeRequest {
            visit_type: Some(short),
            update_mask: mask(&["duration"]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), vec!["visit_type.duration"]);
    let mut lost = monthly.clone();
    lost.pathway_step = "nowhere".into();
    let err = s
        .update_visit_type(UpdateVisitTypeRequest {
            visit_type: Some(lost),
            update_mask: mask(&["pathway_step"]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "PATHWAY_STEP_UNKNOWN");
    assert_eq!(get_visit(&mut s, &follow_up.name).await?, updated);
    assert_eq!(get_visit(&mut s, &monthly.name).await?, monthly);

    // Deleted: its id is not reused, and the error says why; undelete brings it back.
    let deleted = s
        .delete_visit_type(DeleteVisitTypeRequest {
            name: follow_up.name.clone(),
            etag: updated.etag.clone(),
        })
        .await?
        .into_inner();
    let err = create_visit(&mut s, CLINIC, "follow-up", visit("follow-up", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(reason(&err), "RESOURCE_DELETED");
    assert!(
        err.message().contains("was deleted; undelete it"),
        "{}",
        err.message()
    );
    let err = s
        .undelete_visit_type(UndeleteVisitTypeRequest {
            name: follow_up.name.clone(),
            etag: updated.etag.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::Aborted,
        "the etag read before the delete is stale"
    );
    let restored = s
        .undelete_visit_type(UndeleteVisitTypeRequest {
            name: follow_up.name.clone(),
            etag: deleted.etag.clone(),
        })
        .await?
        .into_inner();
    assert!(restored.delete_time.is_none());
    assert_eq!(restored.display_name, "Follow-up visit");
    let err = s
        .undelete_visit_type(UndeleteVisitTypeRequest {
            name: follow_up.name.clone(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "RESOURCE_NOT_DELETED");

    // A program manager undeletes in her own unit (the scope of a deleted visit type is its unit).
    let mut casey = mesh.scheduling_as(CASEY).await?;
    casey
        .delete_visit_type(DeleteVisitTypeRequest {
            name: monthly.name.clone(),
            etag: String::new(),
        })
        .await?;
    let back = casey
        .undelete_visit_type(UndeleteVisitTypeRequest {
            name: monthly.name.clone(),
            etag: String::new(),
        })
        .await?
        .into_inner();
    assert!(back.delete_time.is_none());
    let err = casey
        .undelete_visit_type(UndeleteVisitTypeRequest {
            name: follow_up.name.clone(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "the clinic is not hers");

    // A live visit type took the code meanwhile: the undelete is refused and writes nothing.
    s.delete_visit_type(DeleteVisitTypeRequest {
        name: follow_up.name.clone(),
        etag: String::new(),
    })
    .await?;
    create_visit(&mut s, CLINIC, "follow-up-2", visit("follow-up", "")).await?;
    let err = s
        .undelete_visit_type(UndeleteVisitTypeRequest {
            name: follow_up.name.clone(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(reason(&err), "VISIT_TYPE_CODE_TAKEN");
    assert!(
        get_visit(&mut s, &follow_up.name)
            .await?
            .delete_time
            .is_some()
    );
    mesh.stop().await?;
    Ok(())
}

/// Availability rules: Update follows its mask and etag (unit and location are immutable, times are
/// validated), a deleted rule's id cannot be reused, and the rule can be undeleted.
async fn availability_rules(backend: Backend) -> anyhow::Result<()> {
    let mesh = TestMesh::start(backend).await?;
    let mut org = mesh.org().await?;
    seed(&mut org).await?;
    let mut s = mesh.scheduling_as(pm::demo::ADMIN).await?;
    let create = |id: &str| CreateAvailabilityRuleRequest {
        parent: OKAFOR.into(),
        availability_rule: Some(AvailabilityRule {
            unit: CLINIC.into(),
            location: MAIN.into(),
            weekday: Weekday::Monday as i32,
            start_time: "09:00".into(),
            end_time: "12:00".into(),
            effective_from: Some(Date {
                year: 2026,
                month: 1,
                day: 1,
            }),
            ..Default::default()
        }),
        availability_rule_id: id.into(),
        request_id: String::new(),
    };
    let rule = s
        .create_availability_rule(create("mon"))
        .await?
        .into_inner();

    let mut patch = rule.clone();
    patch.end_time = "10:30".into();
    patch.weekday = Weekday::Tuesday as i32;
    let updated = s
        .update_availability_rule(UpdateAvailabilityRuleRequest {
            availability_rule: Some(patch.clone()),
            update_mask: mask(&["end_time"]),
        })
        .await?
        .into_inner();
    assert_eq!(updated.end_time, "10:30");
    assert_eq!(updated.weekday, Weekday::Monday as i32, "outside the mask");
    assert_eq!(updated.time_zone, rule.time_zone);
    assert_ne!(updated.etag, rule.etag);

    let current = |s: &mut Scheduling| {
        let mut s = s.clone();
        async move {
            s.list_availability_rules(ListAvailabilityRulesRequest {
                parent: OKAFOR.into(),
                show_deleted: true,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().availability_rules)
        }
    };
    for paths in [
        &["unit"][..],
        &["location"][..],
        &["time_zone"][..],
        &["nope"][..],
    ] {
        let mut moved = updated.clone();
        moved.unit = CCM.into();
        let err = s
            .update_availability_rule(UpdateAvailabilityRuleRequest {
                availability_rule: Some(moved),
                update_mask: mask(paths),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{paths:?}");
        assert_eq!(fields(&err), vec!["update_mask"]);
    }
    let mut backwards = updated.clone();
    backwards.end_time = "08:00".into();
    let err = s
        .update_availability_rule(UpdateAvailabilityRuleRequest {
            availability_rule: Some(backwards),
            update_mask: mask(&["end_time"]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = s
        .update_availability_rule(UpdateAvailabilityRuleRequest {
            availability_rule: Some(patch), // the first etag
            update_mask: mask(&["end_time"]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(
        current(&mut s).await?,
        vec![updated.clone()],
        "nothing written"
    );

    let deleted = s
        .delete_availability_rule(DeleteAvailabilityRuleRequest {
            name: rule.name.clone(),
            etag: updated.etag.clone(),
        })
        .await?
        .into_inner();
    let err = s.create_availability_rule(create("mon")).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(reason(&err), "RESOURCE_DELETED");
    assert!(err.message().contains("was deleted; undelete it"));
    let restored = s
        .undelete_availability_rule(UndeleteAvailabilityRuleRequest {
            name: rule.name.clone(),
            etag: deleted.etag.clone(),
        })
        .await?
        .into_inner();
    assert!(restored.delete_time.is_none());
    assert_eq!(restored.end_time, "10:30");
    let err = s
        .undelete_availability_rule(UndeleteAvailabilityRuleRequest {
            name: rule.name.clone(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "RESOURCE_NOT_DELETED");
    mesh.stop().await?;
    Ok(())
}

async fn patient(org: &mut Org, id: &str, given: &str, family: &str, unit: &str, step: &str) {
    let name = format!("{ORG}/patients/{id}");
    org.create_patient(CreatePatientRequest {
        parent: ORG.into(),
        patient: Some(Patient {
            given_name: given.into(),
            family_name: family.into(),
            birth_date: Some(Date {
                year: 1961,
                month: 3,
                day: 14,
            }),
            ..Default::default()
        }),
        patient_id: id.into(),
        request_id: String::new(),
    })
    .await
    .unwrap();
    org.create_enrollment(CreateEnrollmentRequest {
        parent: name,
        enrollment: Some(Enrollment {
            unit: unit.into(),
            pathway_step: step.into(),
            ..Default::default()
        }),
        enrollment_id: "main".into(),
        request_id: String::new(),
    })
    .await
    .unwrap();
}

async fn search(org: &mut Org, family: &str, given: &str) -> SearchPatientsResponse {
    org.search_patients(SearchPatientsRequest {
        parent: ORG.into(),
        family_name: family.into(),
        given_name: given.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

fn ids(found: &SearchPatientsResponse) -> Vec<&str> {
    found
        .patients
        .iter()
        .map(|p| p.name.rsplit('/').next().unwrap_or_default())
        .collect()
}

/// The front desk's search: "mul" finds Müller; a program manager of the CCM program finds only
/// the CCM program's patients, and a patient of the clinic answers exactly like no match; every
/// search is in the patients' audit trail as a PHI read.
async fn patient_search(backend: Backend) -> anyhow::Result<()> {
    let mesh = TestMesh::start(backend).await?;
    let mut org = mesh.org().await?;
    seed(&mut org).await?;
    patient(&mut org, "anna", "Anna", "Müller", CLINIC, "").await;
    patient(&mut org, "bernd", "Bernd", "MULLER", CCM, "enroll").await;
    patient(&mut org, "carl", "Carl", "Mueller", CCM, "enroll").await;

    let found = search(&mut org, "mul", "").await;
    assert_eq!(ids(&found), vec!["anna", "bernd"]);
    assert_eq!(found.patients[0].family_name, "Müller");
    assert_eq!(ids(&search(&mut org, "MÜLLER", "ann").await), vec!["anna"]);

    let mut casey = mesh.org_as(CASEY).await?;
    assert_eq!(ids(&search(&mut casey, "mul", "").await), vec!["bernd"]);
    let other_unit = search(&mut casey, "müller", "anna").await;
    let no_match = search(&mut casey, "zzz", "").await;
    assert!(other_unit.patients.is_empty());
    assert_eq!(other_unit, no_match, "out of scope answers like no match");

    // A soft-deleted patient is not found; undeleted (by the manager of its unit), it is again.
    casey
        .delete_patient(DeletePatientRequest {
            name: format!("{ORG}/patients/bernd"),
            etag: String::new(),
        })
        .await?;
    assert!(search(&mut casey, "mul", "").await.patients.is_empty());
    let err = org
        .create_patient(CreatePatientRequest {
            parent: ORG.into(),
            patient: Some(Patient {
                given_name: "Bernd".into(),
                family_name: "Muller".into(),
                birth_date: Some(Date {
                    year: 1961,
                    month: 3,
                    day: 14,
                }),
                ..Default::default()
            }),
            patient_id: "bernd".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(reason(&err), "RESOURCE_DELETED");
    assert!(!err.message().contains("Muller") && !err.message().contains("Bernd"));
    casey
        .undelete_patient(UndeletePatientRequest {
            name: format!("{ORG}/patients/bernd"),
            etag: String::new(),
        })
        .await?;
    assert_eq!(ids(&search(&mut casey, "mul", "").await), vec!["bernd"]);

    // Audited as a PHI read, for each patient returned.
    let trail = support::trail(&mut org, &format!("{ORG}/patients/anna")).await?;
    assert!(
        trail
            .iter()
            .any(|r| r.method.ends_with("/SearchPatients") && r.principal == pm::demo::ADMIN),
        "{trail:?}"
    );
    let trail = support::trail(&mut org, &format!("{ORG}/patients/anna")).await?;
    assert!(
        !trail
            .iter()
            .any(|r| r.method.ends_with("/SearchPatients") && r.principal == CASEY),
        "nothing of anna's was returned to casey"
    );
    mesh.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visit_types_on_sqlite() -> anyhow::Result<()> {
    visit_types(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visit_types_on_postgres() -> anyhow::Result<()> {
    visit_types(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_rules_on_sqlite() -> anyhow::Result<()> {
    availability_rules(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_rules_on_postgres() -> anyhow::Result<()> {
    availability_rules(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_search_on_sqlite() -> anyhow::Result<()> {
    patient_search(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_search_on_postgres() -> anyhow::Result<()> {
    patient_search(Backend::Postgres).await
}

//! Onboarding an organization (issue 12): `pm admin bootstrap`'s platform operator, once and audited;
//! what it may do over mTLS (create an organization, grant its first administrator) and what it may
//! not (anything inside any organization, answered like a resource that does not exist); and the
//! administrator it made running the organization. On SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used)]

use pm::mesh::Service;
use pm_api::org::org_service_client::OrgServiceClient;
use pm_api::org::*;
use pm_api::rbac::rbac_service_client::RbacServiceClient;
use pm_api::rbac::{
    CreatePrincipalRequest, CreateRoleBindingRequest, ListRoleBindingsRequest, Principal,
    PrincipalKind, Role, RoleBinding,
};
use pm_api::scheduling::FindSlotsRequest;
use pm_api::scheduling::scheduling_service_client::SchedulingServiceClient;
use pm_rbac::bootstrap::{self, BOOTSTRAP_METHOD, TOKEN_METHOD};
use pm_runtime::config::Backend;
use pm_runtime::{Db, tls};
use tonic::Code;
use tonic_types::StatusExt;

mod support;
use support::TestMesh;

const HOUR: i64 = 3_600_000_000;

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// The audit records of RBAC's slice written by `method`.
async fn records_of(db: &Db, method: &str) -> anyhow::Result<Vec<pm_authz::audit::AuditEvent>> {
    Ok(pm_authz::audit::records(db, 0, 1_000)
        .await?
        .into_iter()
        .map(|r| r.event)
        .filter(|e| e.method == method)
        .collect())
}

fn principal(id: &str, name: &str) -> CreatePrincipalRequest {
    CreatePrincipalRequest {
        principal_id: id.into(),
        principal: Some(Principal {
            display_name: name.into(),
            kind: PrincipalKind::User as i32,
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

fn grant(organization: &str, id: &str, principal: &str, role: Role) -> CreateRoleBindingRequest {
    CreateRoleBindingRequest {
        parent: organization.into(),
        role_binding_id: id.into(),
        role_binding: Some(RoleBinding {
            principal: principal.into(),
            role: role as i32,
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

async fn onboarding(backend: Backend) -> anyhow::Result<()> {
    let mesh = TestMesh::start(backend).await?;
    // The demo organization exists, with its administrators and patients.
    let mut acme_admin = mesh.org().await?;
    pm::demo::seed(
        &mut acme_admin,
        &mut mesh.billing_as(pm::demo::ADMIN).await?,
    )
    .await?;
    let db = Db::open(&mesh.config, pm_rbac::NAME, pm_rbac::MIGRATIONS).await?;

    // Bad input: refused, nothing written.
    let bad = bootstrap::platform_operator(&db, "Ops!", "x", "os-user:test", HOUR)
        .await
        .unwrap_err();
    assert_eq!(bad.code, Code::InvalidArgument);
    let too_long = bootstrap::platform_operator(&db, "ops", "x", "os-user:test", 2 * HOUR)
        .await
        .unwrap_err();
    assert_eq!(too_long.code, Code::InvalidArgument);
    assert!(records_of(&db, BOOTSTRAP_METHOD).await?.is_empty());

    // Once: the principal, its platform binding, an audit record, a token.
    let made =
        bootstrap::platform_operator(&db, "ops", "Platform operations", "os-user:test", HOUR)
            .await?;
    assert_eq!(made.principal.name, "principals/ops");
    assert_eq!(made.binding.name, "organizations/-/roleBindings/ops");
    assert_eq!(made.binding.role, Role::PlatformOperator as i32);
    let recorded = records_of(&db, BOOTSTRAP_METHOD).await?;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].service, "rbac");
    assert_eq!(recorded[0].principal, "os-user:test");
    assert_eq!(
        recorded[0].resources,
        vec!["principals/ops", "organizations/-/roleBindings/ops"]
    );
    assert!(recorded[0].patients.is_empty());
    let keys = std::collections::HashMap::new();
    assert!(pm_authz::audit::verify(&db, &keys).await?.is_ok());

    // Twice: refused, naming the operator that exists; nothing written (no principal, no record).
    let trail_before = pm_authz::audit::records(&db, 0, 1_000).await?.len();
    let again = bootstrap::platform_operator(&db, "ops2", "Second", "os-user:test", HOUR)
        .await
        .unwrap_err();
    assert_eq!(again.code, Code::FailedPrecondition);
    assert_eq!(again.reason, "ALREADY_BOOTSTRAPPED");
    assert!(
        again
            .message
            .contains("principals/ops (organizations/-/roleBindings/ops)")
            && again.message.contains("nothing was written"),
        "{}",
        again.message
    );
    let same_principal = bootstrap::platform_operator(&db, "ops", "Again", "os-user:test", HOUR)
        .await
        .unwrap_err();
    assert_eq!(same_principal.code, Code::FailedPrecondition);
    assert_eq!(
        pm_authz::audit::records(&db, 0, 1_000).await?.len(),
        trail_before
    );
    {
        let mut conn = db.read().await?;
        assert!(
            pm_runtime::docstore::get::<Principal>(&mut conn, "principals/ops2")
                .await?
                .is_none()
        );
    }

    let ops = &made.token.token;
    let mut ops_org = OrgServiceClient::new(
        mesh.channel_with_token(Service::Org, tls::CLIENT, ops)
            .await?,
    );
    let mut ops_rbac = RbacServiceClient::new(
        mesh.channel_with_token(Service::Rbac, tls::CLIENT, ops)
            .await?,
    );
    let mut ops_scheduling = SchedulingServiceClient::new(
        mesh.channel_with_token(Service::Scheduling, tls::CLIENT, ops)
            .await?,
    );

    // It creates an organization...
    let riverside = ops_org
        .create_organization(CreateOrganizationRequest {
            organization_id: "riverside".into(),
            organization: Some(Organization {
                display_name: "Riverside Family Practice".into(),
                time_zone: "America/Denver".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(riverside.name, "organizations/riverside");

    // ... and reads nothing inside any: an existing patient is refused exactly like a missing one.
    let existing = ops_org
        .get_patient(GetPatientRequest {
            name: "organizations/acme/patients/p-0001".into(),
        })
        .await
        .unwrap_err();
    let missing = ops_org
        .get_patient(GetPatientRequest {
            name: "organizations/acme/patients/nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(existing.code(), Code::PermissionDenied);
    assert_eq!(
        (existing.code(), existing.message(), reason(&existing)),
        (missing.code(), missing.message(), reason(&missing))
    );
    assert!(!existing.message().contains("p-0001"));
    for refused in [
        ops_org
            .list_patients(ListPatientsRequest {
                parent: "organizations/acme".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ops_org
            .get_organization(GetOrganizationRequest {
                name: "organizations/riverside".into(),
            })
            .await
            .map(|_| ()),
        ops_org
            .create_service_unit(CreateServiceUnitRequest {
                parent: "organizations/riverside".into(),
                service_unit_id: "x".into(),
                service_unit: Some(ServiceUnit {
                    display_name: "x".into(),
                    kind: UnitKind::Clinic as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .map(|_| ()),
        ops_scheduling
            .find_slots(FindSlotsRequest {
                unit: "organizations/acme/units/ccm-program".into(),
                patient: "organizations/acme/patients/p-0004".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ops_rbac
            .list_role_bindings(ListRoleBindingsRequest {
                parent: "organizations/acme".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    ] {
        assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    }

    // It grants the new organization its first administrator, and nothing more.
    ops_rbac
        .create_principal(principal("dana", "Dana Whitfield"))
        .await?;
    ops_rbac.create_principal(principal("erin", "Erin")).await?;
    let dana = ops_rbac
        .create_role_binding(grant(
            "organizations/riverside",
            "dana",
            "principals/dana",
            Role::OrganizationAdministrator,
        ))
        .await?
        .into_inner();
    assert_eq!(dana.name, "organizations/riverside/roleBindings/dana");
    for (request, expected) in [
        // A second grant there: the organization has an administrator now.
        (
            grant(
                "organizations/riverside",
                "erin",
                "principals/erin",
                Role::OrganizationAdministrator,
            ),
            "has role bindings already",
        ),
        // An existing organization.
        (
            grant(
                "organizations/acme",
                "erin",
                "principals/erin",
                Role::OrganizationAdministrator,
            ),
            "has role bindings already",
        ),
        // Itself, in a fresh organization.
        (
            grant(
                "organizations/hillside",
                "ops",
                "principals/ops",
                Role::OrganizationAdministrator,
            ),
            "cannot be bound",
        ),
        // Another role than the first administrator.
        (
            CreateRoleBindingRequest {
                role_binding: Some(RoleBinding {
                    principal: "principals/erin".into(),
                    role: Role::ProgramManager as i32,
                    units: vec!["organizations/hillside/units/a".into()],
                    ..Default::default()
                }),
                ..grant("organizations/hillside", "erin", "", Role::ProgramManager)
            },
            "only ROLE_ORGANIZATION_ADMINISTRATOR",
        ),
    ] {
        let refused = ops_rbac.create_role_binding(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert_eq!(reason(&refused), "GRANT_OUT_OF_SCOPE");
        assert!(
            refused.message().contains(expected),
            "{}",
            refused.message()
        );
    }
    // No API call makes a platform binding, neither under `organizations/-` nor in an organization.
    let platform = ops_rbac
        .create_role_binding(grant(
            "organizations/-",
            "erin",
            "principals/erin",
            Role::PlatformOperator,
        ))
        .await
        .unwrap_err();
    assert_eq!(platform.code(), Code::InvalidArgument);
    let mut acme_rbac = mesh.rbac_as(pm::demo::ADMIN).await?;
    let in_acme = acme_rbac
        .create_role_binding(grant(
            "organizations/acme",
            "erin-ops",
            "principals/erin",
            Role::PlatformOperator,
        ))
        .await
        .unwrap_err();
    assert_eq!(in_acme.code(), Code::InvalidArgument);
    assert!(
        in_acme.message().contains("pm admin bootstrap"),
        "{}",
        in_acme.message()
    );
    // The refused grants wrote nothing.
    let riverside_bindings = mesh
        .rbac_as("principals/dana")
        .await?
        .list_role_bindings(ListRoleBindingsRequest {
            parent: "organizations/riverside".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .role_bindings;
    assert_eq!(riverside_bindings.len(), 1, "{riverside_bindings:?}");

    // The administrator it made runs the organization (its token minted with `pm admin token`,
    // audited); the operator still reads nothing of it.
    let dana_token = bootstrap::token(&db, "principals/dana", "os-user:test", HOUR).await?;
    assert_eq!(records_of(&db, TOKEN_METHOD).await?.len(), 1);
    let missing_principal = bootstrap::token(&db, "principals/nobody", "os-user:test", HOUR)
        .await
        .unwrap_err();
    assert_eq!(missing_principal.code, Code::NotFound);
    assert_eq!(records_of(&db, TOKEN_METHOD).await?.len(), 1);
    let mut dana_org = OrgServiceClient::new(
        mesh.channel_with_token(Service::Org, tls::CLIENT, &dana_token.token)
            .await?,
    );
    dana_org
        .create_service_unit(CreateServiceUnitRequest {
            parent: "organizations/riverside".into(),
            service_unit_id: "main-clinic".into(),
            service_unit: Some(ServiceUnit {
                display_name: "Riverside Main Clinic".into(),
                kind: UnitKind::Clinic as i32,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?;
    dana_org
        .create_patient(CreatePatientRequest {
            parent: "organizations/riverside".into(),
            patient_id: "p-0001".into(),
            patient: Some(Patient {
                given_name: "Ines".into(),
                family_name: "Examplova".into(),
                birth_date: Some(pm_api::types::Date {
                    year: 1980,
                    month: 4,
                    day: 2,
                }),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await?;
    dana_org
        .get_patient(GetPatientRequest {
            name: "organizations/riverside/patients/p-0001".into(),
        })
        .await?;
    let theirs = ops_org
        .get_patient(GetPatientRequest {
            name: "organizations/riverside/patients/p-0001".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (theirs.code(), theirs.message()),
        (missing.code(), missing.message())
    );
    // Dana cannot reach the demo organization either.
    let other = dana_org
        .get_patient(GetPatientRequest {
            name: "organizations/acme/patients/p-0001".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);

    assert!(pm_authz::audit::verify(&db, &keys).await?.is_ok());
    db.close().await;
    mesh.stop().await
}

/// With `tls.mode = files` the tool certificate bootstraps nothing (no principal, no binding, no
/// token without a token); `pm admin bootstrap`'s operator, then the administrator it grants, are the
/// way in.
async fn onboarding_in_files_mode(backend: Backend) -> anyhow::Result<()> {
    let mesh = TestMesh::start_with(backend, |config| {
        // The operator's own PKI: here the dev CA's files, named in the configuration.
        let dir = config.data_dir.join("operator-pki");
        tls::ensure_dev_pki(&dir).unwrap();
        config.tls.mode = pm_runtime::config::TlsMode::Files;
        config.tls.ca_cert = Some(dir.join("ca.crt"));
        config.tls.cert_dir = Some(dir);
        let key = config.data_dir.join("page-token.key");
        std::fs::write(&key, "ab".repeat(32)).unwrap();
        config.server.page_token_key_file = Some(key);
    })
    .await?;
    let mut tool = mesh.rbac()?;
    let refused = tool
        .create_principal(principal("dana", "Dana Whitfield"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(reason(&refused), "TOKEN_MISSING");

    let db = Db::open(&mesh.config, pm_rbac::NAME, pm_rbac::MIGRATIONS).await?;
    let made =
        bootstrap::platform_operator(&db, "ops", "Platform operations", "os-user:test", HOUR)
            .await?;
    let ops = &made.token.token;
    OrgServiceClient::new(
        mesh.channel_with_token(Service::Org, tls::CLIENT, ops)
            .await?,
    )
    .create_organization(CreateOrganizationRequest {
        organization_id: "riverside".into(),
        organization: Some(Organization {
            display_name: "Riverside Family Practice".into(),
            time_zone: "America/Denver".into(),
            ..Default::default()
        }),
        request_id: String::new(),
    })
    .await?;
    let mut ops_rbac = RbacServiceClient::new(
        mesh.channel_with_token(Service::Rbac, tls::CLIENT, ops)
            .await?,
    );
    ops_rbac
        .create_principal(principal("dana", "Dana Whitfield"))
        .await?;
    ops_rbac
        .create_role_binding(grant(
            "organizations/riverside",
            "dana",
            "principals/dana",
            Role::OrganizationAdministrator,
        ))
        .await?;
    // Nobody mints Dana's first token over the wire here (the tool certificate may not): the
    // deployment's operator does, with RBAC's slice.
    let refused = tool
        .issue_token(pm_api::rbac::IssueTokenRequest {
            principal: "principals/dana".into(),
            ttl: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let dana = bootstrap::token(&db, "principals/dana", "os-user:test", HOUR).await?;
    let unit = OrgServiceClient::new(
        mesh.channel_with_token(Service::Org, tls::CLIENT, &dana.token)
            .await?,
    )
    .create_service_unit(CreateServiceUnitRequest {
        parent: "organizations/riverside".into(),
        service_unit_id: "main-clinic".into(),
        service_unit: Some(ServiceUnit {
            display_name: "Riverside Main Clinic".into(),
            kind: UnitKind::Clinic as i32,
            ..Default::default()
        }),
        request_id: String::new(),
    })
    .await?
    .into_inner();
    assert_eq!(unit.name, "organizations/riverside/units/main-clinic");
    assert_eq!(records_of(&db, BOOTSTRAP_METHOD).await?.len(), 1);
    assert_eq!(records_of(&db, TOKEN_METHOD).await?.len(), 1);
    db.close().await;
    mesh.stop().await
}

/// Eight bootstraps at once (other principals each): exactly one platform operator is made, the others
/// are refused and write nothing.
async fn concurrent_bootstraps(backend: Backend) -> anyhow::Result<()> {
    let mesh = TestMesh::start(backend).await?;
    let db = Db::open(&mesh.config, pm_rbac::NAME, pm_rbac::MIGRATIONS).await?;
    let attempts = (0..8).map(|i| {
        let db = db.clone();
        tokio::spawn(async move {
            bootstrap::platform_operator(&db, &format!("ops-{i}"), "Ops", "os-user:test", HOUR)
                .await
        })
    });
    let results = futures::future::join_all(attempts).await;
    let mut made = Vec::new();
    for result in results {
        match result? {
            Ok(bootstrapped) => made.push(bootstrapped.principal.name),
            Err(err) => assert_eq!(err.reason, "ALREADY_BOOTSTRAPPED", "{}", err.message),
        }
    }
    assert_eq!(made.len(), 1, "{made:?}");
    let recorded = records_of(&db, BOOTSTRAP_METHOD).await?;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].resources[0], made[0]);
    let mut conn = db.read().await?;
    for i in 0..8 {
        let name = format!("principals/ops-{i}");
        let exists = pm_runtime::docstore::get::<Principal>(&mut conn, &name)
            .await?
            .is_some();
        assert_eq!(exists, name == made[0], "{name}");
    }
    drop(conn);
    db.close().await;
    mesh.stop().await
}

#[tokio::test]
async fn concurrent_bootstraps_on_sqlite() -> anyhow::Result<()> {
    concurrent_bootstraps(Backend::Sqlite).await
}

#[tokio::test]
async fn concurrent_bootstraps_on_postgres() -> anyhow::Result<()> {
    concurrent_bootstraps(Backend::Postgres).await
}

#[tokio::test]
async fn onboarding_in_files_mode_on_sqlite() -> anyhow::Result<()> {
    onboarding_in_files_mode(Backend::Sqlite).await
}

#[tokio::test]
async fn onboarding_in_files_mode_on_postgres() -> anyhow::Result<()> {
    onboarding_in_files_mode(Backend::Postgres).await
}

#[tokio::test]
async fn onboarding_on_sqlite() -> anyhow::Result<()> {
    onboarding(Backend::Sqlite).await
}

#[tokio::test]
async fn onboarding_on_postgres() -> anyhow::Result<()> {
    onboarding(Backend::Postgres).await
}

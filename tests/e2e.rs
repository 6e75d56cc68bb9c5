//! End-to-end: the mesh started in-process exactly as `pm run` starts it, on ephemeral ports over real
//! mTLS, called through the generated clients. Runs on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pm::mesh::Service;
use pm_api::org::org_service_client::OrgServiceClient;
use pm_api::org::*;
use pm_api::rbac::ListPermissionsRequest;
use pm_api::rbac::rbac_service_client::RbacServiceClient;
use pm_runtime::config::{Backend, Config};
use pm_runtime::{client, tls};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

mod support;
use support::TestMesh;

async fn health_of(
    channel: tonic::transport::Channel,
    service: &str,
) -> Result<i32, tonic::Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(response.into_inner().status)
}

async fn serving_and_reflecting(backend: Backend) -> anyhow::Result<()> {
    let mesh = TestMesh::start(backend).await?;
    let org_channel = client::channel(&mesh.config, tls::CLIENT, &mesh.url(Service::Org)).await?;
    let rbac_channel = client::channel(&mesh.config, tls::CLIENT, &mesh.url(Service::Rbac)).await?;
    for (channel, service) in [
        (org_channel.clone(), ""),
        (org_channel.clone(), "pm.org.v1.OrgService"),
        (rbac_channel.clone(), ""),
        (rbac_channel.clone(), "pm.rbac.v1.RbacService"),
    ] {
        assert_eq!(
            health_of(channel, service).await?,
            ServingStatus::Serving as i32,
            "{service}"
        );
    }
    let unknown = health_of(org_channel.clone(), "pm.nope.v1.Nope").await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);

    let listed = list_services_v1(org_channel.clone()).await?;
    for expected in ["pm.org.v1.OrgService", "grpc.health.v1.Health"] {
        assert!(listed.contains(&expected.to_string()), "{listed:?}");
    }
    assert!(
        !listed.contains(&"pm.rbac.v1.RbacService".to_string()),
        "each port reflects only what it serves"
    );
    let listed_alpha = list_services_v1alpha(org_channel.clone()).await?;
    assert!(
        listed_alpha.contains(&"pm.org.v1.OrgService".to_string()),
        "{listed_alpha:?}"
    );

    let permissions = RbacServiceClient::new(rbac_channel)
        .list_permissions(ListPermissionsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .permissions;
    let methods: usize = permissions.iter().map(|p| p.methods.len()).sum();
    assert_eq!(
        methods,
        pm_api::RULES.len(),
        "every RPC's permission is published"
    );
    mesh.stop().await
}

async fn list_services_v1(channel: tonic::transport::Channel) -> anyhow::Result<Vec<String>> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = stream
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no reflection answer"))?;
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => anyhow::bail!("unexpected reflection answer {other:?}"),
    }
}

async fn list_services_v1alpha(channel: tonic::transport::Channel) -> anyhow::Result<Vec<String>> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = stream
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no reflection answer"))?;
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => anyhow::bail!("unexpected reflection answer {other:?}"),
    }
}

async fn demo_seed_over_mtls(backend: Backend) -> anyhow::Result<()> {
    let mesh = TestMesh::start(backend).await?;
    let mut org = mesh.org().await?;
    let first = pm::demo::seed(&mut org, &mut mesh.billing_as(pm::demo::ADMIN).await?).await?;
    assert!(first.created >= 25, "{first:?}");
    assert_eq!(first.existing, 0);
    let second = pm::demo::seed(&mut org, &mut mesh.billing_as(pm::demo::ADMIN).await?).await?;
    assert_eq!(second.created, 0, "seeding twice creates nothing new");
    assert_eq!(second.existing, first.created);

    let units = org
        .list_service_units(ListServiceUnitsRequest {
            parent: "organizations/acme".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .service_units;
    let kinds: std::collections::HashSet<i32> = units.iter().map(|u| u.kind).collect();
    assert_eq!(kinds.len(), 5, "every kind of unit is represented");
    let locations = org
        .list_locations(ListLocationsRequest {
            parent: "organizations/acme".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .locations;
    let zones: std::collections::HashSet<String> =
        locations.into_iter().map(|l| l.time_zone).collect();
    assert_eq!(zones.len(), 2, "locations in two time zones");

    let policy = org
        .get_effective_policy(GetEffectivePolicyRequest {
            unit: "organizations/acme/units/ccm-program".into(),
        })
        .await?
        .into_inner();
    let billing = policy.billing_profile.unwrap();
    assert_eq!(
        billing.billing_entity, "organizations/acme/billingEntities/acme-medical-group",
        "inherited from the clinic"
    );
    assert_eq!(
        billing.fee_schedule, "organizations/acme/feeSchedules/ccm-2026",
        "the program's own"
    );

    // Reyes was credentialed in CCM until 2026-06-01; Okafor still is.
    let july_2026 = prost_types::Timestamp {
        seconds: 1_783_000_000,
        nanos: 0,
    };
    let check = |provider: &str| CheckCredentialRequest {
        provider: format!("organizations/acme/providers/{provider}"),
        unit: "organizations/acme/units/ccm-program".into(),
        time: Some(july_2026),
    };
    assert!(
        org.check_credential(check("dr-okafor"))
            .await?
            .into_inner()
            .credentialed
    );
    assert!(
        !org.check_credential(check("np-reyes"))
            .await?
            .into_inner()
            .credentialed
    );

    // Errors reach a client with their google.rpc details.
    let status = org
        .create_location(CreateLocationRequest {
            parent: "organizations/acme".into(),
            location: Some(Location {
                display_name: "X".into(),
                time_zone: "Mars/Olympus".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "INVALID_ARGUMENT");
    assert_eq!(
        details.bad_request().unwrap().field_violations[0].field,
        "location.time_zone"
    );
    mesh.stop().await
}

#[tokio::test]
async fn sqlite_mesh_serves_health_reflection_and_permissions() -> anyhow::Result<()> {
    serving_and_reflecting(Backend::Sqlite).await
}

#[tokio::test]
async fn postgres_mesh_serves_health_reflection_and_permissions() -> anyhow::Result<()> {
    serving_and_reflecting(Backend::Postgres).await
}

#[tokio::test]
async fn sqlite_mesh_takes_the_demo_seed() -> anyhow::Result<()> {
    demo_seed_over_mtls(Backend::Sqlite).await
}

#[tokio::test]
async fn postgres_mesh_takes_the_demo_seed() -> anyhow::Result<()> {
    demo_seed_over_mtls(Backend::Postgres).await
}

/// A channel that trusts the mesh's CA but presents `identity` (or nothing).
async fn call_health_with(
    mesh: &TestMesh,
    identity: Option<Identity>,
    ca_pem: &str,
) -> Result<i32, tonic::Status> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    let endpoint = Endpoint::from_shared(mesh.url(Service::Org))
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    health_of(endpoint.connect_lazy(), "").await
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate_from_the_ca() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    let pki = tls::dev_pki_dir(&mesh.config);
    let ca = std::fs::read_to_string(pki.join("ca.crt"))?;

    let good = Identity::from_pem(
        std::fs::read(pki.join("client.crt"))?,
        std::fs::read(pki.join("client.key"))?,
    );
    assert_eq!(
        call_health_with(&mesh, Some(good), &ca).await?,
        ServingStatus::Serving as i32
    );

    assert!(
        call_health_with(&mesh, None, &ca).await.is_err(),
        "no client certificate"
    );

    let other = tempfile::tempdir()?;
    tls::ensure_dev_pki(other.path())?;
    let foreign = Identity::from_pem(
        std::fs::read(other.path().join("client.crt"))?,
        std::fs::read(other.path().join("client.key"))?,
    );
    assert!(
        call_health_with(&mesh, Some(foreign), &ca).await.is_err(),
        "a certificate from another CA"
    );

    let key = rcgen::KeyPair::generate()?;
    let self_signed =
        rcgen::CertificateParams::new(vec!["localhost".to_string()])?.self_signed(&key)?;
    let self_signed = Identity::from_pem(self_signed.pem(), key.serialize_pem());
    assert!(
        call_health_with(&mesh, Some(self_signed), &ca)
            .await
            .is_err(),
        "a self-signed certificate"
    );

    // And the client refuses a server its CA did not sign.
    let foreign_ca = std::fs::read_to_string(other.path().join("ca.crt"))?;
    let good = Identity::from_pem(
        std::fs::read(pki.join("client.crt"))?,
        std::fs::read(pki.join("client.key"))?,
    );
    assert!(
        call_health_with(&mesh, Some(good), &foreign_ca)
            .await
            .is_err(),
        "an untrusted server"
    );
    mesh.stop().await
}

#[tokio::test]
async fn health_reports_not_serving_while_the_database_is_unreachable() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::defaults_in(dir.path());
    config.server.health_probe_interval_ms = 100;
    let db = pm_runtime::Db::open_sqlite(&dir.path().join("org.db"), 2, pm_org::MIGRATIONS).await?;
    let listener = pm_runtime::server::bind("127.0.0.1:0".parse()?).await?;
    let url = format!("https://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let (config, db, shutdown) = (config.clone(), db.clone(), shutdown.clone());
        // Health needs no caller; the layer's RBAC is never reached here.
        let rbac = client::lazy_channel(&config, "org", "https://localhost:9")?;
        let authz = pm_authz::layer::Authz::new(
            std::sync::Arc::new(pm_authz::layer::RbacAccess::new(rbac)),
            false,
        )?;
        async move {
            pm_runtime::server::serve(
                &config,
                pm_org::service(
                    db,
                    authz,
                    Vec::new(),
                    client::lazy_channel(&config, "org", "https://localhost:9")?,
                ),
                listener,
                shutdown,
            )
            .await
        }
    });
    let channel = client::channel(&config, tls::CLIENT, &url).await?;
    assert_eq!(
        health_of(channel.clone(), "pm.org.v1.OrgService").await?,
        ServingStatus::Serving as i32
    );

    db.close().await; // the database goes away
    let mut status = ServingStatus::Serving as i32;
    for _ in 0..50 {
        status = health_of(channel.clone(), "pm.org.v1.OrgService").await?;
        if status == ServingStatus::NotServing as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, ServingStatus::NotServing as i32);
    assert_eq!(
        health_of(channel, "").await?,
        ServingStatus::NotServing as i32
    );
    shutdown.cancel();
    server.await??;
    Ok(())
}

#[tokio::test]
async fn shutdown_drains_and_closes_the_port() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    let url = mesh.url(Service::Org);
    let config = mesh.config.clone();
    let mut org = mesh.org().await?;
    // Keep calls in flight while shutdown begins: each must finish OK or be refused cleanly.
    let calls = (0..32).map(|_| {
        let mut org = org.clone();
        async move {
            org.list_organizations(ListOrganizationsRequest::default())
                .await
                .map(|_| ())
        }
    });
    let in_flight = tokio::spawn(futures::future::join_all(calls));
    tokio::task::yield_now().await;
    mesh.mesh.shutdown.cancel();
    for result in in_flight.await? {
        if let Err(status) = result {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        }
    }
    mesh.stop().await?;
    assert!(
        org.list_organizations(ListOrganizationsRequest::default())
            .await
            .is_err()
    );
    assert!(
        client::channel(&config, tls::CLIENT, &url).await.is_err(),
        "the port is closed"
    );
    Ok(())
}

#[tokio::test]
async fn refused_phi_calls_are_audited() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    let admin = mesh.org().await?; // seeds the demo principals
    drop(admin);
    let channel = client::channel(&mesh.config, tls::CLIENT, &mesh.url(Service::Org)).await?;
    let anonymous = OrgServiceClient::new(channel)
        .get_patient(GetPatientRequest {
            name: "organizations/acme/patients/p-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let denied = mesh
        .org_as("principals/casey-ccm")
        .await?
        .get_patient(GetPatientRequest {
            name: "organizations/acme/patients/p-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Stop the servers but keep the data directory to read the trail.
    let TestMesh {
        mesh: running,
        config,
        _dir: keep,
        ..
    } = mesh;
    running.stop(Duration::from_secs(10)).await?;

    let db = pm_runtime::Db::open(&config, pm_org::NAME, pm_org::MIGRATIONS).await?;
    let records = pm_authz::audit::records(&db, 0, 100).await?;
    let seen: Vec<(String, String, pm_authz::audit::Outcome)> = records
        .into_iter()
        .map(|r| (r.event.method, r.event.principal, r.event.outcome))
        .collect();
    let get_patient = "/pm.org.v1.OrgService/GetPatient".to_string();
    assert!(
        seen.contains(&(
            get_patient.clone(),
            "spiffe://pm.local/client/dev-tools".into(),
            pm_authz::audit::Outcome::Failed {
                code: Code::Unauthenticated as i32
            }
        )),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(
            get_patient,
            "principals/casey-ccm".into(),
            pm_authz::audit::Outcome::Denied
        )),
        "{seen:?}"
    );
    let keys = pm_authz::checkpoints::verifying_keys(&config.audit_key_dir())?;
    assert!(pm_authz::audit::verify(&db, &keys).await?.is_ok());
    db.close().await;
    drop(keep);
    Ok(())
}

#[tokio::test]
async fn mtls_refuses_expired_and_not_yet_valid_certificates() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    let pki = tls::dev_pki_dir(&mesh.config);
    let ca = std::fs::read_to_string(pki.join("ca.crt"))?;
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let id = "spiffe://pm.local/client/dev-tools";
    for (label, from, until) in [
        ("expired", now - day * 30, now - day),
        ("not yet valid", now + day, now + day * 30),
    ] {
        let (cert, key) = tls::issue_dev_client(&pki, id, from, until)?;
        let result = call_health_with(&mesh, Some(Identity::from_pem(cert, key)), &ca).await;
        assert!(result.is_err(), "{label} certificate accepted");
    }
    let (cert, key) = tls::issue_dev_client(&pki, id, now - day, now + day)?;
    assert_eq!(
        call_health_with(&mesh, Some(Identity::from_pem(cert, key)), &ca).await?,
        ServingStatus::Serving as i32,
        "the same CA's valid certificate is accepted (the refusals above are about validity)"
    );
    mesh.stop().await
}

#[tokio::test]
async fn a_service_may_call_only_the_rpcs_that_list_it() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    // The org service's own certificate, without a token.
    let channel = client::channel(&mesh.config, "org", &mesh.url(Service::Rbac)).await?;
    let mut as_org = RbacServiceClient::new(channel);
    let keys = as_org
        .list_signing_keys(pm_api::rbac::ListSigningKeysRequest {})
        .await?;
    assert!(
        !keys.into_inner().keys.is_empty(),
        "ListSigningKeys lists org in service_callers"
    );
    let refused = as_org
        .create_principal(pm_api::rbac::CreatePrincipalRequest {
            principal: Some(pm_api::rbac::Principal {
                display_name: "Intruder".into(),
                kind: pm_api::rbac::PrincipalKind::User as i32,
                ..Default::default()
            }),
            principal_id: "intruder".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let listed = mesh
        .rbac()?
        .lookup_role_bindings(pm_api::rbac::LookupRoleBindingsRequest {
            principal: "principals/intruder".into(),
        })
        .await;
    assert!(listed.is_err(), "the tool certificate is no service either");
    let found = as_org
        .lookup_role_bindings(pm_api::rbac::LookupRoleBindingsRequest {
            principal: "principals/intruder".into(),
        })
        .await?
        .into_inner();
    assert!(
        found.principal.is_none(),
        "the refused call never reached the handler: nothing was created"
    );
    mesh.stop().await
}

#[tokio::test]
async fn a_revoked_role_stops_working_within_the_cache_bound() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    let mut admin = mesh.org().await?;
    pm::demo::seed(&mut admin, &mut mesh.billing_as(pm::demo::ADMIN).await?).await?;
    let mut manager = mesh.org_as("principals/casey-ccm").await?;
    let patient = GetPatientRequest {
        name: "organizations/acme/patients/p-0001".into(),
    };
    manager.get_patient(patient.clone()).await?;
    // The administrator revokes the manager's binding.
    let channel = client::channel(&mesh.config, tls::CLIENT, &mesh.url(Service::Rbac)).await?;
    let bearer = client::Bearer::new(&mesh.token(pm::demo::ADMIN).await?)?;
    let mut rbac = RbacServiceClient::new(tonic::service::interceptor::InterceptedService::new(
        channel, bearer,
    ));
    rbac.delete_role_binding(pm_api::rbac::DeleteRoleBindingRequest {
        name: "organizations/acme/roleBindings/casey-ccm".into(),
        etag: String::new(),
    })
    .await?;
    let revoked_at = std::time::Instant::now();
    let bound = pm_authz::layer::ACCESS_TTL + Duration::from_millis(500);
    loop {
        match manager.get_patient(patient.clone()).await {
            Err(status) if status.code() == Code::PermissionDenied => break,
            Ok(_) if revoked_at.elapsed() < bound => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!(
                "still allowed {:?} after revocation: {other:?}",
                revoked_at.elapsed()
            ),
        }
    }
    assert!(revoked_at.elapsed() <= bound);
    mesh.stop().await
}

#[tokio::test]
async fn who_accessed_a_patient_is_answered_from_the_trail() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    let mut admin = mesh.org().await?;
    pm::demo::seed(&mut admin, &mut mesh.billing_as(pm::demo::ADMIN).await?).await?;
    let patient = "organizations/acme/patients/p-0001".to_string();
    let mut provider = mesh.org_as("principals/dr-okafor").await?;
    let mut read = tonic::Request::new(GetPatientRequest {
        name: patient.clone(),
    });
    read.metadata_mut()
        .insert("x-purpose-of-use", "TREAT".parse()?);
    provider.get_patient(read).await?;
    let accesses = |page_token: String| ListPatientAccessesRequest {
        patient: patient.clone(),
        page_size: 2,
        page_token,
        ..Default::default()
    };
    // Page through everything: the seed's writes, the provider's read.
    let mut records = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_patient_accesses(accesses(token))
            .await?
            .into_inner();
        assert!(page.records.len() <= 2);
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let read = records
        .iter()
        .find(|r| {
            r.method == "/pm.org.v1.OrgService/GetPatient" && r.principal == "principals/dr-okafor"
        })
        .expect("the provider's read is in the trail");
    assert_eq!(read.purpose, "TREAT");
    assert_eq!(read.outcome, "success");
    let fhir: serde_json::Value = serde_json::from_str(&read.fhir_audit_event)?;
    assert_eq!(fhir["resourceType"], "AuditEvent");
    // Oldest first across the merged trails, and no record twice.
    let key = |r: &AccessRecord| {
        let t = r.time.unwrap_or_default();
        (t.seconds, t.nanos, r.service.clone(), r.seq)
    };
    assert!(
        records.windows(2).all(|w| key(&w[0]) < key(&w[1])),
        "oldest first, no repeats"
    );
    // The query is itself audited: asking again shows the first query.
    let again = admin
        .list_patient_accesses(accesses(String::new()))
        .await?
        .into_inner();
    let mut all = again.records;
    let mut token = again.next_page_token;
    while !token.is_empty() {
        let page = admin
            .list_patient_accesses(accesses(token))
            .await?
            .into_inner();
        all.extend(page.records);
        token = page.next_page_token;
    }
    assert!(
        all.iter()
            .any(|r| r.method == "/pm.org.v1.OrgService/ListPatientAccesses")
    );
    // Nobody but an organization administrator may ask.
    let refused = provider
        .list_patient_accesses(accesses(String::new()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    mesh.stop().await
}

#[tokio::test]
async fn break_glass_access_is_audited_as_such() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    let mut admin = mesh.org().await?;
    pm::demo::seed(&mut admin, &mut mesh.billing_as(pm::demo::ADMIN).await?).await?;
    // p-0002 is in the employer program, where Dr. Okafor is not credentialed.
    let patient = "organizations/acme/patients/p-0002".to_string();
    let token = mesh.token("principals/dr-okafor").await?;
    let channel = client::channel(&mesh.config, tls::CLIENT, &mesh.url(Service::Rbac)).await?;
    let mut rbac = RbacServiceClient::new(tonic::service::interceptor::InterceptedService::new(
        channel,
        client::Bearer::new(&token)?,
    ));
    let granted = rbac
        .break_glass(pm_api::rbac::BreakGlassRequest {
            parent: "organizations/acme".into(),
            principal: "principals/dr-okafor".into(),
            role: pm_api::rbac::Role::ProgramManager as i32,
            units: vec!["organizations/acme/units/globex-employer".into()],
            reason: "unresponsive patient brought to the Northside ED".into(),
            duration: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            request_id: String::new(),
        })
        .await?
        .into_inner();
    assert!(granted.break_glass);
    let mut provider = mesh.org_as("principals/dr-okafor").await?;
    provider
        .get_patient(GetPatientRequest {
            name: patient.clone(),
        })
        .await?;
    let records = support::trail(&mut admin, &patient).await?;
    let read = records
        .iter()
        .find(|r| {
            r.method == "/pm.org.v1.OrgService/GetPatient" && r.principal == "principals/dr-okafor"
        })
        .expect("the emergency read is in the trail");
    assert_eq!(read.purpose, "BTG", "recorded as break-the-glass access");
    mesh.stop().await
}

#[tokio::test]
async fn the_audit_chain_is_checkpointed_at_shutdown_and_verifies_with_the_published_key()
-> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    let mut admin = mesh.org().await?;
    pm::demo::seed(&mut admin, &mut mesh.billing_as(pm::demo::ADMIN).await?).await?;
    admin
        .get_patient(GetPatientRequest {
            name: "organizations/acme/patients/p-0001".into(),
        })
        .await?;
    let TestMesh {
        mesh: running,
        config,
        _dir: keep,
        ..
    } = mesh;
    running.stop(Duration::from_secs(10)).await?;

    let db = pm_runtime::Db::open(&config, pm_org::NAME, pm_org::MIGRATIONS).await?;
    let keys = pm_authz::checkpoints::verifying_keys(&config.audit_key_dir())?;
    assert!(
        keys.keys().any(|id| id.contains("org")),
        "the org service published its checkpoint key: {:?}",
        keys.keys().collect::<Vec<_>>()
    );
    match pm_authz::audit::verify(&db, &keys).await? {
        pm_authz::audit::VerifyReport::Ok {
            checkpoints,
            records,
            ..
        } => {
            assert!(checkpoints >= 1, "a checkpoint was signed at shutdown");
            assert!(records > 10);
        }
        other => panic!("the trail does not verify: {other:?}"),
    }
    // Without the key, the same checkpoint cannot be trusted.
    let report = pm_authz::audit::verify(&db, &std::collections::HashMap::new()).await?;
    assert!(
        !report.is_ok(),
        "an unknown checkpoint key is reported: {report:?}"
    );
    db.close().await;
    drop(keep);
    Ok(())
}

#[tokio::test]
async fn key_rotation_needs_no_downtime() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    let mut before = mesh.org().await?;
    let request = ListOrganizationsRequest::default();
    before.list_organizations(request.clone()).await?;
    let channel = client::channel(&mesh.config, tls::CLIENT, &mesh.url(Service::Rbac)).await?;
    let bearer = client::Bearer::new(&mesh.token(pm::demo::ADMIN).await?)?;
    let mut rbac = RbacServiceClient::new(tonic::service::interceptor::InterceptedService::new(
        channel, bearer,
    ));
    let new_key = rbac
        .rotate_signing_key(pm_api::rbac::RotateSigningKeyRequest {})
        .await?
        .into_inner();
    // A token signed with the new key: the Org service has never seen the key and fetches it.
    let mut after = mesh.org_as(pm::demo::ADMIN).await?;
    after.list_organizations(request.clone()).await?;
    // The token signed before the rotation still works until it expires.
    before.list_organizations(request).await?;
    let keys = rbac
        .list_signing_keys(pm_api::rbac::ListSigningKeysRequest {})
        .await?
        .into_inner()
        .keys;
    assert_eq!(keys.first().map(|k| k.kid.clone()), Some(new_key.kid));
    assert_eq!(keys.len(), 2);
    mesh.stop().await
}

#[tokio::test]
async fn check_access_explains_who_may_and_why() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    let mut admin = mesh.org().await?;
    pm::demo::seed(&mut admin, &mut mesh.billing_as(pm::demo::ADMIN).await?).await?;
    let ask = |principal: &str, permission: &str, resource: &str| CheckAccessRequest {
        principal: principal.into(),
        permission: permission.into(),
        resource: resource.into(),
    };
    let allowed = admin
        .check_access(ask(
            "principals/casey-ccm",
            "org.patients.get",
            "organizations/acme/patients/p-0001",
        ))
        .await?
        .into_inner();
    assert!(allowed.allowed);
    assert_eq!(allowed.binding, "organizations/acme/roleBindings/casey-ccm");
    let refused = admin
        .check_access(ask(
            "principals/casey-ccm",
            "org.patients.get",
            "organizations/acme/patients/p-0003",
        ))
        .await?
        .into_inner();
    assert!(!refused.allowed);
    assert!(
        refused.reason.contains("does not cover"),
        "{}",
        refused.reason
    );
    let wrong_role = admin
        .check_access(ask(
            "principals/dr-okafor",
            "org.patients.delete",
            "organizations/acme/patients/p-0001",
        ))
        .await?
        .into_inner();
    assert!(!wrong_role.allowed);
    assert!(
        wrong_role
            .reason
            .contains("does not carry org.patients.delete"),
        "{}",
        wrong_role.reason
    );
    let provider = admin
        .check_access(ask(
            "principals/dr-okafor",
            "org.patients.get",
            "organizations/acme/patients/p-0001",
        ))
        .await?
        .into_inner();
    assert!(
        provider.allowed,
        "credentialed in the CCM program: {}",
        provider.reason
    );
    // Only organization administrators may ask.
    let denied = mesh
        .org_as("principals/casey-ccm")
        .await?
        .check_access(ask(
            "principals/admin",
            "org.patients.get",
            "organizations/acme/patients/p-0001",
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    mesh.stop().await
}

/// BatchGetPatientEligibility as Scheduling calls it (its own certificate, no token): each patient
/// answered in the order asked, as GetPatientEligibility answers it; bad batches refused whole; each
/// call in the trail of every patient it named.
#[tokio::test]
async fn batched_eligibility_answers_each_patient_in_order_and_is_audited() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    let mut admin = mesh.org().await?;
    pm::demo::seed(&mut admin, &mut mesh.billing_as(pm::demo::ADMIN).await?).await?;
    let channel = client::channel(&mesh.config, "scheduling", &mesh.url(Service::Org)).await?;
    let mut scheduling = OrgServiceClient::new(channel);
    let acme = "organizations/acme".to_string();
    let (p1, p4) = (
        format!("{acme}/patients/p-0001"),
        format!("{acme}/patients/p-0004"),
    );
    let batch = |patients: Vec<String>| BatchGetPatientEligibilityRequest {
        parent: acme.clone(),
        patients,
    };

    let answers = scheduling
        .batch_get_patient_eligibility(batch(vec![p4.clone(), p1.clone(), p4.clone()]))
        .await?
        .into_inner()
        .eligibilities;
    let alone = |patient: &String| {
        let mut client = scheduling.clone();
        let patient = patient.clone();
        async move {
            let request = GetPatientEligibilityRequest { patient };
            anyhow::Ok(client.get_patient_eligibility(request).await?.into_inner())
        }
    };
    let (one, four) = (alone(&p1).await?, alone(&p4).await?);
    assert!(!one.enrollments.is_empty() && !one.coverages.is_empty());
    assert_ne!(one, four);
    assert_eq!(answers, vec![four.clone(), one, four]);

    // Refused whole, each with the field at fault.
    let refused = |patients: Vec<String>, parent: &str| {
        let mut client = scheduling.clone();
        let request = BatchGetPatientEligibilityRequest {
            parent: parent.to_string(),
            patients,
        };
        async move {
            client
                .batch_get_patient_eligibility(request)
                .await
                .unwrap_err()
        }
    };
    let too_many: Vec<String> = (0..=pm_org::handlers::MAX_BATCH)
        .map(|_| p1.clone())
        .collect();
    for (patients, parent, field) in [
        (vec![], acme.as_str(), "patients"),
        (too_many, acme.as_str(), "patients"),
        (
            vec![p1.clone(), "patients/p-0001".into()],
            acme.as_str(),
            "patients",
        ),
        (
            vec!["organizations/globex/patients/p-0002".into()],
            acme.as_str(),
            "patients",
        ),
        (vec![p1.clone()], "acme", "parent"),
    ] {
        let status = refused(patients, parent).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let violations = status.get_error_details().bad_request().cloned();
        assert_eq!(violations.unwrap().field_violations[0].field, field);
    }
    let missing = format!("{acme}/patients/p-9999");
    let status = refused(vec![p1.clone(), missing.clone()], &acme).await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains(&missing), "{}", status.message());

    // The trail of p-0001 shows the answered batch and the refused ones (each named it).
    let accesses = support::trail(&mut admin, &p1).await?;
    let batch_reads: Vec<&str> = accesses
        .iter()
        .filter(|r| r.method == "/pm.org.v1.OrgService/BatchGetPatientEligibility")
        .map(|r| r.outcome.as_str())
        .collect();
    assert!(batch_reads.contains(&"success"), "{batch_reads:?}");
    assert!(
        batch_reads.iter().any(|o| *o != "success"),
        "{batch_reads:?}"
    );
    mesh.stop().await
}

//! No PHI in logs or traces: canary patient data goes through every Org PHI path (create, read, list,
//! filter, search by name, a refused duplicate, a refused search, a denied read) on a mesh whose
//! every log line and span (DEBUG, all crates) is captured; none of the canary values may appear.
//! Its own test binary, so the global subscriber sees only this mesh.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pm::mesh::{self, Service};
use pm_api::org::org_service_client::OrgServiceClient;
use pm_api::org::*;
use pm_api::rbac::IssueTokenRequest;
use pm_api::rbac::rbac_service_client::RbacServiceClient;
use pm_runtime::config::Config;
use pm_runtime::{client, tls};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const CANARIES: &[&str] = &[
    "Zqxcanary",
    "Wvutester",
    "MRN-CANARY-9317",
    "1931-07-04",
    "CANARY-MEMBER-5521",
    "Hlsevencanary",
    "Pqrhlgiven",
    "HL7-CANARY-4471",
    "19420303",
    "1942-03-03",
];

#[tokio::test]
async fn canary_phi_never_reaches_logs_or_spans() -> anyhow::Result<()> {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(move || writer.clone())
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .init();

    let dir = tempfile::tempdir()?;
    let mut config = Config::defaults_in(dir.path());
    config.listen.org_port = 0;
    config.listen.rbac_port = 0;
    config.listen.scheduling_port = 0;
    config.listen.billing_port = 0;
    config.listen.mllp_port = 0;
    let mesh = mesh::start(&config, &Service::MESH, CancellationToken::new()).await?;
    let rbac_url = mesh.url(Service::Rbac).unwrap();
    let mut rbac = RbacServiceClient::new(client::channel(&config, tls::CLIENT, &rbac_url).await?);
    pm::demo::seed_access(&mut rbac, &mut pm::demo::SeedReport::default()).await?;
    let token = |principal: &str| {
        let mut rbac = rbac.clone();
        let principal = principal.to_string();
        async move {
            let response = rbac
                .issue_token(IssueTokenRequest {
                    principal,
                    ttl: None,
                })
                .await?;
            anyhow::Ok(response.into_inner().token)
        }
    };
    let org_url = mesh.url(Service::Org).unwrap();
    let as_principal = |token: String| {
        let config = config.clone();
        let org_url = org_url.clone();
        async move {
            let channel = client::channel(&config, tls::CLIENT, &org_url).await?;
            let bearer = client::Bearer::new(&token)?;
            anyhow::Ok(OrgServiceClient::new(
                tonic::service::interceptor::InterceptedService::new(channel, bearer),
            ))
        }
    };
    let mut admin = as_principal(token(pm::demo::ADMIN).await?).await?;
    admin
        .create_organization(CreateOrganizationRequest {
            organization: Some(Organization {
                display_name: "Acme".into(),
                time_zone: "UTC".into(),
                ..Default::default()
            }),
            organization_id: "acme".into(),
            request_id: String::new(),
        })
        .await?;
    let canary = Patient {
        given_name: "Zqxcanary".into(),
        family_name: "Wvutester".into(),
        birth_date: Some(pm_api::types::Date {
            year: 1931,
            month: 7,
            day: 4,
        }),
        identifiers: vec![PatientIdentifier {
            system: "urn:test:mrn".into(),
            value: "MRN-CANARY-9317".into(),
        }],
        ..Default::default()
    };
    let create = |id: &str| CreatePatientRequest {
        parent: "organizations/acme".into(),
        patient: Some(canary.clone()),
        patient_id: id.into(),
        request_id: String::new(),
    };
    let patient = admin.create_patient(create("canary")).await?.into_inner();
    admin
        .create_coverage(CreateCoverageRequest {
            parent: patient.name.clone(),
            coverage: Some(Coverage {
                payer: "payers/medicare".into(),
                member_id: "CANARY-MEMBER-5521".into(),
                priority: 1,
                effective_period: Some(pm_api::types::Interval {
                    start_time: Some(prost_types::Timestamp {
                        seconds: 0,
                        nanos: 0,
                    }),
                    end_time: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    let duplicate = admin.create_patient(create("twin")).await.unwrap_err();
    assert_eq!(duplicate.code(), tonic::Code::AlreadyExists);
    admin
        .get_patient(GetPatientRequest {
            name: patient.name.clone(),
        })
        .await?;
    admin
        .list_patients(ListPatientsRequest {
            parent: "organizations/acme".into(),
            filter: r#"identifier = "urn:test:mrn|MRN-CANARY-9317""#.into(),
            ..Default::default()
        })
        .await?;
    // The front desk's search by name (the names typed are the canary's).
    let found = admin
        .search_patients(SearchPatientsRequest {
            parent: "organizations/acme".into(),
            family_name: "Wvutester".into(),
            given_name: "Zqxcanary".into(),
            birth_date: canary.birth_date,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(found.patients.len(), 1);
    let refused_search = admin
        .search_patients(SearchPatientsRequest {
            parent: "organizations/acme".into(),
            family_name: format!("Wvutester{}", "x".repeat(100)),
            given_name: "Zqxcanary".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused_search.code(), tonic::Code::InvalidArgument);
    let mut manager = as_principal(token("principals/casey-ccm").await?).await?;
    let denied = manager
        .get_patient(GetPatientRequest {
            name: patient.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let denied_search = manager
        .search_patients(SearchPatientsRequest {
            parent: "organizations/acme".into(),
            family_name: "Wvutester".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(
        denied_search.patients.is_empty(),
        "out of the manager's units"
    );
    for field in [&duplicate, &denied, &refused_search] {
        for canary in CANARIES {
            assert!(
                !field.message().contains(canary),
                "an error message leaks {canary}"
            );
        }
    }
    hl7_paths(&mesh, &mut admin).await?;
    mesh.stop(Duration::from_secs(10)).await?;

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).to_string();
    assert!(
        logs.contains("GetPatient"),
        "the capture saw the calls (method paths are logged)"
    );
    assert!(
        logs.contains("hl7 message logged") && logs.contains("ehr message applied"),
        "the capture saw the gateway's work"
    );
    for canary in CANARIES {
        assert!(!logs.contains(canary), "{canary} appears in the logs");
    }
    Ok(())
}

/// HL7 canaries through the EHR gateway (MLLP): an A04 applied to Org, its duplicate, an AE (PID-3
/// missing), an A08 of an unknown patient (dead), an unparseable frame; every ACK is PHI-free too.
async fn hl7_paths(
    mesh: &mesh::Mesh,
    admin: &mut OrgServiceClient<client::AuthedChannel>,
) -> anyhow::Result<()> {
    use futures::{SinkExt as _, StreamExt as _};
    let addr = mesh.mllp_addr().unwrap();
    let mut conn = tokio_util::codec::Framed::new(
        tokio::net::TcpStream::connect(addr).await?,
        pm_hl7::MllpCodec::new(1 << 20),
    );
    let msh = |trigger: &str, id: &str| {
        format!(
            "MSH|^~\\&|EPIC|CANARYHOSP|PMGW|PRACTICE|20260105083000||ADT^{trigger}|{id}|P|2.5.1\r"
        )
    };
    let messages = [
        format!(
            "{}PID|1||HL7-CANARY-4471^^^CANARYHOSP^MR||Hlsevencanary^Pqrhlgiven||19420303|F\r",
            msh("A04", "K1")
        ),
        format!(
            "{}PID|1||HL7-CANARY-4471^^^CANARYHOSP^MR||Hlsevencanary^Pqrhlgiven||19420303|F\r",
            msh("A04", "K1")
        ),
        format!(
            "{}PID|1||||Hlsevencanary^Pqrhlgiven||19420303|F\r",
            msh("A04", "K2")
        ),
        format!(
            "{}PID|1||HL7-CANARY-4471X^^^CANARYHOSP^MR||Hlsevencanary^Pqrhlgiven||19420303|F\r",
            msh("A08", "K3")
        ),
        "Hlsevencanary Pqrhlgiven HL7-CANARY-4471 19420303\r".to_string(),
    ];
    for message in messages {
        conn.send(message).await?;
        let ack = tokio::time::timeout(Duration::from_secs(10), conn.next())
            .await?
            .unwrap()??;
        for canary in CANARIES {
            assert!(!ack.contains(canary), "an ACK leaks {canary}");
        }
    }
    // Wait until the A04 is in Org (applied by the gateway) and the A08 was tried.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let found = admin
            .list_patients(ListPatientsRequest {
                parent: "organizations/acme".into(),
                filter: r#"identifier = "CANARYHOSP|HL7-CANARY-4471""#.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        if !found.patients.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the A04 never reached Org"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

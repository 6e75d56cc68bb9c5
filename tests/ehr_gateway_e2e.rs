//! The EHR gateway end to end (issue 14, first slice): a real mesh (Org, RBAC, Scheduling, Billing
//! and the gateway on port 0) over mTLS gRPC, on SQLite and on PostgreSQL, seeded with the demo.
//! HL7 v2 ADT over MLLP on real sockets: A04 → AA and the patient in Org with the mapped identifier
//! (written by the gateway with its own service identity, through the dev catch-all source); the
//! same control id again → processed once; A08 updates the name; PID-3 missing → AE naming
//! PID^1^3 and nothing written in Org; garbage and an oversized frame on one connection do not
//! disturb another; the mesh killed right after an ACK and restarted → nothing lost; Org down → the
//! message waits and is applied once Org is up.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use pm_api::org::ListPatientsRequest;
use pm_api::org::org_service_client::OrgServiceClient;
use pm_ehr_gateway::store::{self, State};
use pm_hl7::MllpCodec;
use pm_runtime::client::AuthedChannel;
use pm_runtime::config::Backend;
use support::TestMesh;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const ORG: &str = "organizations/acme";
const ADMIN: &str = "principals/admin";

type Org = OrgServiceClient<AuthedChannel>;
type Conn = Framed<TcpStream, MllpCodec>;

async fn seeded(backend: Backend) -> anyhow::Result<TestMesh> {
    let mesh = TestMesh::start(backend).await?;
    mesh.seed_access().await?;
    pm::demo::seed(
        &mut mesh.org_as(ADMIN).await?,
        &mut mesh.billing_as(pm::demo::ADMIN).await?,
    )
    .await?;
    Ok(mesh)
}

fn adt(trigger: &str, control_id: &str, pid: &str) -> String {
    format!(
        "MSH|^~\\&|EPIC|E2EHOSP|PMGW|PRACTICE|20260105083000||ADT^{trigger}^ADT_A01|{control_id}|P|2.5.1\rEVN|{trigger}\r{pid}\r"
    )
}

async fn connect(mesh: &TestMesh) -> anyhow::Result<Conn> {
    Ok(Framed::new(
        TcpStream::connect(mesh.mllp()).await?,
        MllpCodec::new(1 << 20),
    ))
}

async fn exchange(conn: &mut Conn, message: &str) -> anyhow::Result<String> {
    conn.send(message).await?;
    let ack = tokio::time::timeout(Duration::from_secs(10), conn.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("connection closed before the ACK"))???;
    Ok(ack)
}

fn segment<'a>(ack: &'a str, id: &str) -> &'a str {
    ack.split('\r').find(|s| s.starts_with(id)).unwrap_or("")
}

async fn by_identifier(org: &mut Org, value: &str) -> anyhow::Result<Vec<pm_api::org::Patient>> {
    Ok(org
        .list_patients(ListPatientsRequest {
            parent: ORG.into(),
            filter: format!("identifier = \"E2EHOSP|{value}\""),
            ..ListPatientsRequest::default()
        })
        .await?
        .into_inner()
        .patients)
}

/// Waits until `check` holds for the patients with identifier `value` (at most 15 s).
async fn eventually(
    org: &mut Org,
    value: &str,
    check: impl Fn(&[pm_api::org::Patient]) -> bool,
) -> anyhow::Result<Vec<pm_api::org::Patient>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let patients = by_identifier(org, value).await?;
        if check(&patients) {
            return Ok(patients);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("Org never reached the expected state for identifier {value}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn gateway_log(mesh: &TestMesh, control_id: &str) -> anyhow::Result<Option<store::LogRow>> {
    let db = pm_runtime::Db::open(
        &mesh.config,
        pm_ehr_gateway::SLICE,
        pm_ehr_gateway::MIGRATIONS,
    )
    .await?;
    let row = store::find(&db, pm_ehr_gateway::domain::CATCH_ALL, control_id).await?;
    db.close().await;
    Ok(row)
}

async fn register_duplicate_update_and_refusal(backend: Backend) -> anyhow::Result<()> {
    let mesh = seeded(backend).await?;
    let mut org = mesh.org_as(ADMIN).await?;
    let mut conn = connect(&mesh).await?;

    let a04 = adt(
        "A04",
        "E2E-1",
        "PID|1||MRN-1^^^E2EHOSP^MR||CANARYFAM^ALPHA||19800214|M",
    );
    let ack = exchange(&mut conn, &a04).await?;
    assert_eq!(segment(&ack, "MSA"), "MSA|AA|E2E-1");
    let patients = eventually(&mut org, "MRN-1", |p| p.len() == 1).await?;
    assert_eq!(patients[0].family_name, "CANARYFAM");
    assert_eq!(patients[0].given_name, "ALPHA");
    assert_eq!(patients[0].identifiers[0].system, "E2EHOSP");
    let name = patients[0].name.clone();

    // The same control id again: the same ACK, nothing applied twice.
    let ack = exchange(&mut conn, &a04).await?;
    assert_eq!(segment(&ack, "MSA"), "MSA|AA|E2E-1");
    let row = gateway_log(&mesh, "E2E-1").await?.unwrap();
    assert_eq!(row.state, State::Applied);
    assert_eq!(row.attempts, 1);

    // A08 updates the name of the same patient.
    let a08 = adt(
        "A08",
        "E2E-2",
        "PID|1||MRN-1^^^E2EHOSP^MR||CANARYNEW^ALPHA||19800214|M",
    );
    assert_eq!(
        segment(&exchange(&mut conn, &a08).await?, "MSA"),
        "MSA|AA|E2E-2"
    );
    let patients = eventually(&mut org, "MRN-1", |p| {
        p.len() == 1 && p[0].family_name == "CANARYNEW"
    })
    .await?;
    assert_eq!(patients[0].name, name);
    // Org audited the update under the gateway's service identity.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let trail = support::trail(&mut org, &name).await?;
        if trail
            .iter()
            .any(|r| r.calling_service == "ehr-gateway" && r.method.ends_with("UpdatePatient"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no UpdatePatient by ehr-gateway in the trail: {:?}",
            trail
                .iter()
                .map(|r| (&r.method, &r.calling_service, &r.principal))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // PID-3 missing: AE naming PID^1^3 with code 101, and nothing written in Org.
    let bad = adt("A04", "E2E-3", "PID|1||||CANARYBAD^BETA||19800214|F");
    let ack = exchange(&mut conn, &bad).await?;
    assert_eq!(segment(&ack, "MSA"), "MSA|AE|E2E-3");
    assert!(segment(&ack, "ERR").contains("|PID^1^3|101^"), "{ack}");
    assert!(!ack.contains("CANARYBAD"));
    let row = gateway_log(&mesh, "E2E-3").await?.unwrap();
    assert_eq!(row.state, State::Rejected);
    let named = org
        .list_patients(ListPatientsRequest {
            parent: ORG.into(),
            filter: "family_name = \"CANARYBAD\"".into(),
            ..ListPatientsRequest::default()
        })
        .await?
        .into_inner()
        .patients;
    assert!(named.is_empty());
    mesh.stop().await
}

async fn bad_peer_does_not_disturb_another(backend: Backend) -> anyhow::Result<()> {
    let mesh = seeded(backend).await?;
    let mut good = connect(&mesh).await?;
    let mut bad = TcpStream::connect(mesh.mllp()).await?;
    bad.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let mut huge = vec![0x0B];
    huge.extend_from_slice(adt("A04", "BIG", &"X".repeat(2 << 20)).as_bytes());
    huge.extend_from_slice(&[0x1C, 0x0D]);
    // The gateway hangs up after the oversized frame's AR: the write may fail part way.
    let _ = bad.write_all(&huge).await;
    let ack = exchange(
        &mut good,
        &adt(
            "A04",
            "E2E-9",
            "PID|1||MRN-9^^^E2EHOSP^MR||CANARYNINE^GAMMA||19900101|F",
        ),
    )
    .await?;
    assert_eq!(segment(&ack, "MSA"), "MSA|AA|E2E-9");
    assert!(gateway_log(&mesh, "BIG").await?.is_none());
    mesh.stop().await
}

async fn killed_after_ack_loses_nothing(backend: Backend) -> anyhow::Result<()> {
    let mesh = seeded(backend).await?;
    let mut conn = connect(&mesh).await?;
    let a04 = adt(
        "A04",
        "E2E-5",
        "PID|1||MRN-5^^^E2EHOSP^MR||CANARYFIVE^DELTA||19700101|F",
    );
    assert_eq!(
        segment(&exchange(&mut conn, &a04).await?, "MSA"),
        "MSA|AA|E2E-5"
    );
    drop(conn);
    let mesh = mesh.kill_and_restart().await?;
    let mut org = mesh.org_as(ADMIN).await?;
    let patients = eventually(&mut org, "MRN-5", |p| p.len() == 1).await?;
    assert_eq!(patients[0].family_name, "CANARYFIVE");
    // Sent again after the restart: still one patient, the log's one row applied.
    let mut conn = connect(&mesh).await?;
    assert_eq!(
        segment(&exchange(&mut conn, &a04).await?, "MSA"),
        "MSA|AA|E2E-5"
    );
    assert_eq!(by_identifier(&mut org, "MRN-5").await?.len(), 1);
    let row = gateway_log(&mesh, "E2E-5").await?.unwrap();
    assert_eq!(row.state, State::Applied);
    mesh.stop().await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Org down: the message is acknowledged, waits `received` while the gateway retries, and is
/// applied once Org is up. A seeded mesh on fixed ports is killed, restarted without Org (the
/// gateway's lazy channel points at Org's configured port), then Org alone is started.
async fn org_down_waits_then_applies_once(backend: Backend) -> anyhow::Result<()> {
    use pm::mesh::{self, Service};
    use pm_runtime::{client, tls};
    use tokio_util::sync::CancellationToken;
    let mesh = TestMesh::start_with(backend, |c| {
        c.listen.org_port = free_port();
        c.listen.rbac_port = free_port();
        c.listen.scheduling_port = free_port();
        c.listen.billing_port = free_port();
        c.server.per_caller_concurrency = 256;
    })
    .await?;
    mesh.seed_access().await?;
    pm::demo::seed(
        &mut mesh.org_as(ADMIN).await?,
        &mut mesh.billing_as(pm::demo::ADMIN).await?,
    )
    .await?;
    let TestMesh {
        mesh: full,
        config,
        schema,
        _dir,
    } = mesh;
    full.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let without_org = mesh::start(
        &config,
        &[
            Service::Rbac,
            Service::Scheduling,
            Service::Billing,
            Service::EhrGateway,
        ],
        CancellationToken::new(),
    )
    .await?;
    let mut conn = Framed::new(
        TcpStream::connect(without_org.mllp_addr().unwrap()).await?,
        MllpCodec::new(1 << 20),
    );
    let a04 = adt(
        "A04",
        "E2E-7",
        "PID|1||MRN-7^^^E2EHOSP^MR||CANARYSEVEN^EPS||19750505|F",
    );
    assert_eq!(
        segment(&exchange(&mut conn, &a04).await?, "MSA"),
        "MSA|AA|E2E-7"
    );
    let probe = TestMeshView(&config);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let row = probe.log("E2E-7").await?.unwrap();
        assert_eq!(row.state, State::Received, "waits while Org is down");
        if row.attempts >= 2 {
            assert_eq!(row.last_error, "ORG_UNAVAILABLE");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never retried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let org_only = mesh::start(&config, &[Service::Org], CancellationToken::new()).await?;
    let mut rbac = pm_api::rbac::rbac_service_client::RbacServiceClient::new(
        client::channel(
            &config,
            tls::CLIENT,
            &without_org.url(Service::Rbac).unwrap(),
        )
        .await?,
    );
    let token = rbac
        .issue_token(pm_api::rbac::IssueTokenRequest {
            principal: ADMIN.into(),
            ttl: None,
        })
        .await?
        .into_inner()
        .token;
    let channel =
        client::channel(&config, tls::CLIENT, &org_only.url(Service::Org).unwrap()).await?;
    let mut org = OrgServiceClient::new(tonic::service::interceptor::InterceptedService::new(
        channel,
        client::Bearer::new(&token)?,
    ));
    let patients = eventually(&mut org, "MRN-7", |p| p.len() == 1).await?;
    assert_eq!(patients[0].family_name, "CANARYSEVEN");
    let row = probe.log("E2E-7").await?.unwrap();
    assert_eq!(row.state, State::Applied);
    without_org.stop(Duration::from_secs(10)).await?;
    org_only.stop(Duration::from_secs(10)).await?;
    if let Some(prefix) = schema {
        for service in Service::MESH {
            pm_runtime::Db::drop_postgres_schema(
                &support::postgres_url(),
                &format!("{prefix}{}", service.name().replace('-', "_")),
            )
            .await?;
        }
    }
    Ok(())
}

/// The gateway's log, read with the mesh's configuration.
struct TestMeshView<'a>(&'a pm_runtime::config::Config);

impl TestMeshView<'_> {
    async fn log(&self, control_id: &str) -> anyhow::Result<Option<store::LogRow>> {
        let db =
            pm_runtime::Db::open(self.0, pm_ehr_gateway::SLICE, pm_ehr_gateway::MIGRATIONS).await?;
        let row = store::find(&db, pm_ehr_gateway::domain::CATCH_ALL, control_id).await?;
        db.close().await;
        Ok(row)
    }
}

macro_rules! both {
    ($($name:ident),*) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> anyhow::Result<()> {
                super::$name(pm_runtime::config::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> anyhow::Result<()> {
                super::$name(pm_runtime::config::Backend::Postgres).await
            })*
        }
    };
}

both!(
    register_duplicate_update_and_refusal,
    bad_peer_does_not_disturb_another,
    killed_after_ack_loses_nothing,
    org_down_waits_then_applies_once
);

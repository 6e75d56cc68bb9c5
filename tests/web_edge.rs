//! The web edge (grpc-web for the calendar page): server-only TLS, only the page's RPCs forwarded,
//! a bearer token required, and the token is what the services decide on.

#![allow(clippy::unwrap_used)]

mod support;

use pm::mesh::Service;
use pm_api::org::org_service_client::OrgServiceClient;
use pm_api::org::{GetServiceUnitRequest, ListServiceUnitsRequest};
use pm_api::rbac::ListRoleBindingsRequest;
use pm_api::rbac::rbac_service_client::RbacServiceClient;
use pm_api::scheduling::scheduling_service_client::SchedulingServiceClient;
use pm_api::scheduling::{ListCalendarRequest, WatchCalendarRequest};
use pm_runtime::config::Backend;
use pm_runtime::{client, tls};
use support::TestMesh;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const PROGRAM_MANAGER: &str = "principals/casey-ccm";

/// A mesh with the demo seeded, and the edge in front of it on a free port.
async fn edge() -> anyhow::Result<(TestMesh, pm::web::WebEdge, CancellationToken)> {
    let mut mesh = TestMesh::start_with_demo(Backend::Sqlite).await?;
    let shutdown = CancellationToken::new();
    let edge = mesh.start_web_edge(shutdown.clone()).await?;
    Ok((mesh, edge, shutdown))
}

/// A channel to the edge as a browser reaches it: trusting the dev CA, with NO client certificate.
async fn browser_channel(mesh: &TestMesh, edge: &pm::web::WebEdge) -> anyhow::Result<Channel> {
    let ca = std::fs::read_to_string(tls::dev_pki_dir(&mesh.config).join("ca.crt"))?;
    let channel = Endpoint::from_shared(format!("https://localhost:{}", edge.addr.port()))?
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name("localhost"),
        )?
        .connect()
        .await?;
    Ok(channel)
}

fn with_token(
    channel: Channel,
    token: &str,
) -> anyhow::Result<tonic::service::interceptor::InterceptedService<Channel, client::Bearer>> {
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel,
        client::Bearer::new(token)?,
    ))
}

fn unit(id: &str) -> String {
    format!("{}/units/{id}", pm::demo::ORG)
}

#[tokio::test]
async fn the_edge_forwards_the_pages_rpcs_as_the_caller_and_nothing_else() -> anyhow::Result<()> {
    let (mesh, edge, shutdown) = edge().await?;
    let channel = browser_channel(&mesh, &edge).await?;
    let admin_token = mesh.token(pm::demo::ADMIN).await?;
    let pm_token = mesh.token(PROGRAM_MANAGER).await?;

    // The administrator sees every unit of the organization through the edge.
    let mut admin = OrgServiceClient::new(with_token(channel.clone(), &admin_token)?);
    let all = admin
        .list_service_units(ListServiceUnitsRequest {
            parent: pm::demo::ORG.into(),
            page_size: 100,
            ..Default::default()
        })
        .await?
        .into_inner()
        .service_units;
    let all_names: Vec<&str> = all.iter().map(|u| u.name.as_str()).collect();
    assert!(
        all_names.contains(&unit("lakeside-clinic").as_str()),
        "{all_names:?}"
    );
    assert!(
        all_names.contains(&unit("ccm-program").as_str()),
        "{all_names:?}"
    );

    // The Program Manager's token travels: the service answers with its units only, and another
    // unit is refused exactly as it is on the mesh directly (the service decides, not the edge).
    let mut manager = OrgServiceClient::new(with_token(channel.clone(), &pm_token)?);
    let mine = manager
        .list_service_units(ListServiceUnitsRequest {
            parent: pm::demo::ORG.into(),
            page_size: 100,
            ..Default::default()
        })
        .await?
        .into_inner()
        .service_units;
    let mine: Vec<String> = mine.into_iter().map(|u| u.name).collect();
    assert!(mine.contains(&unit("ccm-program")), "{mine:?}");
    assert!(!mine.contains(&unit("lakeside-clinic")), "{mine:?}");
    assert!(mine.len() < all.len(), "{mine:?}");
    let other = manager
        .get_service_unit(GetServiceUnitRequest {
            name: unit("lakeside-clinic"),
        })
        .await
        .unwrap_err();
    let direct = mesh
        .org_as(PROGRAM_MANAGER)
        .await?
        .get_service_unit(GetServiceUnitRequest {
            name: unit("lakeside-clinic"),
        })
        .await
        .unwrap_err();
    assert_eq!(direct.code(), other.code(), "{other:?}");
    assert_eq!(direct.message(), other.message());
    let own = manager
        .get_service_unit(GetServiceUnitRequest {
            name: unit("ccm-program"),
        })
        .await?
        .into_inner();
    assert_eq!(own.name, unit("ccm-program"));

    // Scheduling through the edge: the calendar of the manager's unit (a unary call) and its live
    // feed (a server stream) open; another unit's calendar is refused as it is directly.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let seconds = i64::try_from(now.as_secs())?;
    let window = Some(pm_api::types::Interval {
        start_time: Some(prost_types::Timestamp { seconds, nanos: 0 }),
        end_time: Some(prost_types::Timestamp {
            seconds: seconds + 7 * 86_400,
            nanos: 0,
        }),
    });
    let calendar = |scope: String| ListCalendarRequest {
        scope,
        window,
        ..Default::default()
    };
    let mut schedule = SchedulingServiceClient::new(with_token(channel.clone(), &pm_token)?);
    schedule
        .list_calendar(calendar(unit("ccm-program")))
        .await?;
    let through_edge = schedule
        .list_calendar(calendar(unit("lakeside-clinic")))
        .await
        .unwrap_err();
    let direct = mesh
        .scheduling_as(PROGRAM_MANAGER)
        .await?
        .list_calendar(calendar(unit("lakeside-clinic")))
        .await
        .unwrap_err();
    assert_eq!(through_edge.code(), direct.code(), "{through_edge:?}");
    let feed = schedule
        .watch_calendar(WatchCalendarRequest {
            scope: unit("ccm-program"),
            after_sequence: 0,
        })
        .await?;
    drop(feed);

    // A method the page does not call is refused by the edge, even for the administrator, whose
    // token the service itself would accept for it.
    let mut rbac = RbacServiceClient::new(with_token(channel.clone(), &admin_token)?);
    let refused = rbac
        .list_role_bindings(ListRoleBindingsRequest {
            parent: pm::demo::ORG.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
    mesh.rbac_as(pm::demo::ADMIN)
        .await?
        .list_role_bindings(ListRoleBindingsRequest {
            parent: pm::demo::ORG.into(),
            ..Default::default()
        })
        .await?;

    // Without a token (and with a malformed one) the edge answers UNAUTHENTICATED.
    for token in ["", "not-a-token"] {
        let mut anonymous = OrgServiceClient::new(with_token(channel.clone(), token)?);
        let status = anonymous
            .list_service_units(ListServiceUnitsRequest {
                parent: pm::demo::ORG.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{token:?}: {status:?}"
        );
    }

    shutdown.cancel();
    edge.task.await??;
    mesh.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_edge_speaks_grpc_web() -> anyhow::Result<()> {
    let (mesh, edge, shutdown) = edge().await?;
    // A grpc-web client as the page is one: binary grpc-web framing over the edge's server-only TLS
    // (curl trusts the dev CA and presents no certificate; ALPN h2, as browsers negotiate).
    let Ok(curl) = which("curl") else {
        // CI (`.ci/run`) installs curl: there, a missing curl is a failure.
        anyhow::ensure!(
            std::env::var_os("CI").is_none(),
            "curl is not installed (the grpc-web check needs it)"
        );
        eprintln!("skipping the grpc-web check: curl is not installed");
        shutdown.cancel();
        mesh.stop().await?;
        return Ok(());
    };
    use prost::Message as _;
    let request = ListServiceUnitsRequest {
        parent: pm::demo::ORG.into(),
        page_size: 100,
        ..Default::default()
    }
    .encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(request.len())?.to_be_bytes());
    framed.extend_from_slice(&request);
    let dir = tempfile::tempdir()?;
    let body = dir.path().join("request.bin");
    std::fs::write(&body, &framed)?;
    let ca = tls::dev_pki_dir(&mesh.config).join("ca.crt");
    let headers = dir.path().join("headers.txt");
    let url = format!(
        "https://localhost:{}/pm.org.v1.OrgService/ListServiceUnits",
        edge.addr.port()
    );
    // The response's body, and its HTTP headers (a trailers-only answer carries its status there).
    // tokio's process: the edge serves on this test's runtime, which must not block on curl.
    let run = async |authorization: &str| -> anyhow::Result<(Vec<u8>, String)> {
        let out = tokio::process::Command::new(&curl)
            .args(["-sS", "--http2", "--max-time", "20", "--cacert"])
            .arg(&ca)
            .arg("-D")
            .arg(&headers)
            .args(["-H", "content-type: application/grpc-web+proto"])
            .args(["-H", "x-grpc-web: 1"])
            .args(["-H", authorization])
            .arg("--data-binary")
            .arg(format!("@{}", body.display()))
            .arg(&url)
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "curl ({authorization}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.stdout, std::fs::read_to_string(&headers)?))
    };
    // Dev sign-in, as the page's sign-in screen does it: the edge asks RBAC for the token.
    let sign_in = async |edge_port: u16, principal: &str| -> anyhow::Result<(String, String)> {
        let out = tokio::process::Command::new(&curl)
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&ca)
            .arg("-D")
            .arg(&headers)
            .args(["-H", "content-type: text/plain", "--data-binary", principal])
            .arg(format!(
                "https://localhost:{edge_port}{}",
                pm::web::DEV_SIGN_IN
            ))
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((
            String::from_utf8(out.stdout)?,
            std::fs::read_to_string(&headers)?,
        ))
    };
    let (signed_in, head) = sign_in(edge.addr.port(), PROGRAM_MANAGER).await?;
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    assert_eq!(signed_in.split('.').count(), 3, "a JWT: {signed_in}");
    let (body, head) = sign_in(edge.addr.port(), "principals/nobody").await?;
    assert!(
        head.starts_with("HTTP/2 404") || head.starts_with("HTTP/2 400"),
        "{head}{body}"
    );
    assert!(body.contains("principal"), "{body}");
    let (_, head) = sign_in(edge.addr.port(), "organizations/acme").await?;
    assert!(head.starts_with("HTTP/2 400"), "{head}");
    // The signed-in token is the Program Manager's: the grpc-web call below lists its units only.
    let token = signed_in;
    let (answer, _) = run(&format!("authorization: Bearer {token}")).await?;
    // First frame: the message; then a trailers frame (flag 0x80) with grpc-status: 0.
    assert!(answer.len() > 5, "{answer:?}");
    assert_eq!(answer[0], 0, "{answer:?}");
    let len = u32::from_be_bytes([answer[1], answer[2], answer[3], answer[4]]) as usize;
    let units = pm_api::org::ListServiceUnitsResponse::decode(&answer[5..5 + len])?;
    let names: Vec<String> = units.service_units.into_iter().map(|u| u.name).collect();
    assert!(names.contains(&unit("ccm-program")), "{names:?}");
    assert!(!names.contains(&unit("lakeside-clinic")), "{names:?}");
    let trailers = String::from_utf8_lossy(&answer[5 + len..])
        .to_lowercase()
        .replace(' ', "");
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    // Without the token: UNAUTHENTICATED (16), in the headers or in grpc-web's trailer frame.
    let (body, head) = run("x-nothing: 1").await?;
    let refused = format!("{head}{}", String::from_utf8_lossy(&body))
        .to_lowercase()
        .replace(' ', "");
    assert!(refused.contains("grpc-status:16"), "{refused}");

    // Outside dev mode there is no sign-in: an edge with the same certificates as files mints nothing.
    let mut files = mesh.config.clone();
    let pki = tls::dev_pki_dir(&mesh.config);
    files.tls.mode = pm_runtime::config::TlsMode::Files;
    files.tls.ca_cert = Some(pki.join("ca.crt"));
    files.tls.cert_dir = Some(pki.clone());
    let (org, scheduling, rbac) = (
        mesh.url(Service::Org),
        mesh.url(Service::Scheduling),
        mesh.url(Service::Rbac),
    );
    let peers = pm::web::Peers {
        org: &org,
        scheduling: &scheduling,
        rbac: &rbac,
    };
    let production = pm::web::start(&files, peers, shutdown.clone()).await?;
    let (body, head) = sign_in(production.addr.port(), PROGRAM_MANAGER).await?;
    let head = head.to_lowercase().replace(' ', "");
    assert!(head.contains("grpc-status:12"), "{head}");
    assert!(body.is_empty(), "{body}");

    shutdown.cancel();
    edge.task.await??;
    production.task.await??;
    mesh.stop().await?;
    Ok(())
}

fn which(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| anyhow::anyhow!("{name} not found"))
}

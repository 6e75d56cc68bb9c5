//! Bounded work per call, probed from outside over mTLS gRPC: abusive filters, a caller flooding a
//! service, page tokens carried to another RPC or caller, and a claimed break-the-glass purpose.

use std::time::{Duration, Instant};

use pm::mesh::Service;
use pm_api::org::*;
use pm_runtime::config::Backend;
use pm_runtime::{client, tls};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

mod support;
use support::TestMesh;

const ORG: &str = "organizations/acme";

fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// Filters a client might send to make a List expensive: huge, many terms, huge unknown fields.
fn abusive_filters() -> Vec<String> {
    let terms = |n: usize| vec!["display_name = x"; n].join(" AND ");
    vec![
        format!(r#"display_name = "{}""#, "x".repeat(100_000)),
        terms(17),
        terms(200),
        terms(999),
        format!("{} = 1", "f".repeat(100_000)),
        format!("{} = 1", "f".repeat(900)),
        format!(r#"display_name = "{}"#, "y".repeat(1_000)),
    ]
}

#[tokio::test]
async fn a_caller_flooding_org_with_abusive_lists_slows_nobody_else_on_postgres()
-> anyhow::Result<()> {
    let mesh = TestMesh::start_with(Backend::Postgres, |config| {
        config.server.per_caller_concurrency = 16;
    })
    .await?;
    let mut admin = mesh.org().await?;
    pm::demo::seed(&mut admin, &mut mesh.billing_as(pm::demo::ADMIN).await?).await?;
    // A provider: the lowest privilege that may list locations and patients.
    let abuser = mesh.org_as("principals/dr-okafor").await?;

    let mut flood = Vec::new();
    for round in 0..8 {
        for (i, filter) in abusive_filters().into_iter().enumerate() {
            let mut abuser = abuser.clone();
            flood.push(tokio::spawn(async move {
                let result = if (round + i) % 2 == 0 {
                    abuser
                        .list_locations(ListLocationsRequest {
                            parent: ORG.into(),
                            filter,
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                } else {
                    abuser
                        .list_patients(ListPatientsRequest {
                            parent: ORG.into(),
                            filter,
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                };
                (i, result)
            }));
        }
    }

    // Meanwhile another principal's calls stay fast, and Org stays SERVING.
    let health_channel =
        client::channel(&mesh.config, tls::CLIENT, &mesh.url(Service::Org)).await?;
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        admin
            .get_organization(GetOrganizationRequest { name: ORG.into() })
            .await?;
        admin
            .list_locations(ListLocationsRequest {
                parent: ORG.into(),
                ..Default::default()
            })
            .await?;
        slowest = slowest.max(started.elapsed());
        let health = HealthClient::new(health_channel.clone())
            .check(HealthCheckRequest {
                service: "pm.org.v1.OrgService".into(),
            })
            .await?
            .into_inner();
        assert_eq!(health.status, ServingStatus::Serving as i32);
    }
    assert!(
        slowest < Duration::from_secs(2),
        "another principal's calls took {slowest:?}"
    );

    let mut codes = std::collections::BTreeMap::new();
    for call in flood {
        let (i, result) = call.await?;
        let status = match result {
            Ok(()) => panic!("abusive filter #{i} was served"),
            Err(status) => status,
        };
        assert!(
            matches!(
                status.code(),
                Code::InvalidArgument | Code::ResourceExhausted
            ),
            "abusive filter #{i}: {:?} {}",
            status.code(),
            status.message()
        );
        if status.code() == Code::ResourceExhausted {
            assert_eq!(reason(&status), "TOO_MANY_CALLS_IN_FLIGHT");
        } else {
            let details = status.get_error_details();
            let bad = details.bad_request().expect("a field violation");
            assert_eq!(bad.field_violations[0].field, "filter", "#{i}");
        }
        assert!(
            status.message().len() <= 1024,
            "abusive filter #{i} echoed {} bytes",
            status.message().len()
        );
        *codes.entry(format!("{:?}", status.code())).or_insert(0) += 1;
    }
    assert!(codes.contains_key("InvalidArgument"), "{codes:?}");

    // The abuser's own calls work again once its flood is over.
    let mut abuser = abuser.clone();
    abuser
        .list_locations(ListLocationsRequest {
            parent: ORG.into(),
            filter: "display_name = x".into(),
            ..Default::default()
        })
        .await?;
    mesh.stop().await
}

#[tokio::test]
async fn a_callers_calls_in_flight_are_bounded() -> anyhow::Result<()> {
    let mesh = TestMesh::start_with(Backend::Sqlite, |config| {
        config.server.per_caller_concurrency = 2;
    })
    .await?;
    let mut admin = mesh.org().await?;
    pm::demo::seed(&mut admin, &mut mesh.billing_as(pm::demo::ADMIN).await?).await?;
    let provider = mesh.org_as("principals/dr-okafor").await?;
    let calls = (0..64).map(|_| {
        let mut provider = provider.clone();
        async move {
            provider
                .list_patients(ListPatientsRequest {
                    parent: ORG.into(),
                    page_size: 1000,
                    ..Default::default()
                })
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let exhausted = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .inspect(|status| {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert_eq!(reason(status), "TOO_MANY_CALLS_IN_FLIGHT");
        })
        .count();
    assert!(results.iter().any(|r| r.is_ok()));
    assert!(exhausted > 0, "64 calls at once never met a bound of 2");
    // Another principal is not refused meanwhile, and the provider is served again afterwards.
    admin
        .get_organization(GetOrganizationRequest { name: ORG.into() })
        .await?;
    provider
        .clone()
        .list_patients(ListPatientsRequest {
            parent: ORG.into(),
            ..Default::default()
        })
        .await?;
    mesh.stop().await
}

/// A stream holds no call in flight once open, but a task and a feed for as long as it lasts: one
/// caller may have `server.per_caller_streams` open per service. The next is refused at once; closing
/// one frees its place; the caller's unary calls are served meanwhile.
#[tokio::test]
async fn a_callers_open_streams_are_bounded() -> anyhow::Result<()> {
    use pm_api::scheduling::WatchCalendarRequest;
    let mesh = TestMesh::start_with(Backend::Sqlite, |config| {
        config.server.per_caller_streams = 2;
        config.server.per_caller_concurrency = 2;
    })
    .await?;
    let mut admin = mesh.org().await?;
    pm::demo::seed(&mut admin, &mut mesh.billing_as(pm::demo::ADMIN).await?).await?;
    let mut casey = mesh.scheduling_as("principals/casey-ccm").await?;
    let watch = || WatchCalendarRequest {
        scope: ORG.into(),
        after_sequence: 0,
    };
    let first = casey.watch_calendar(watch()).await?;
    let second = casey.watch_calendar(watch()).await?;
    let refused = casey
        .watch_calendar(watch())
        .await
        .expect_err("a third stream is over the bound");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "TOO_MANY_OPEN_STREAMS");
    // Open streams are not calls in flight: with two open, unary calls still go through.
    let mut casey_org = mesh.org_as("principals/casey-ccm").await?;
    for _ in 0..3 {
        casey_org
            .get_organization(GetOrganizationRequest { name: ORG.into() })
            .await?;
    }
    // Closing a stream gives its place back (the server sees the reset shortly after).
    drop(first);
    let mut reopened = None;
    for _ in 0..50 {
        match casey.watch_calendar(watch()).await {
            Ok(stream) => {
                reopened = Some(stream);
                break;
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => return Err(status.into()),
        }
    }
    assert!(
        reopened.is_some(),
        "a closed stream's place was never given back"
    );
    drop(second);
    mesh.stop().await
}

#[tokio::test]
async fn page_tokens_are_good_only_for_their_rpc_caller_and_query() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    let mut admin = mesh.org().await?;
    pm::demo::seed(&mut admin, &mut mesh.billing_as(pm::demo::ADMIN).await?).await?;
    let first = admin
        .list_locations(ListLocationsRequest {
            parent: ORG.into(),
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    let token = first.next_page_token;
    assert!(!token.is_empty(), "the demo has more than one location");
    // The same RPC, caller and query: the next page.
    let second = admin
        .list_locations(ListLocationsRequest {
            parent: ORG.into(),
            page_size: 1,
            page_token: token.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_ne!(first.locations, second.locations);

    let mut refusals = Vec::new();
    // Another List with the same parent.
    refusals.push(
        admin
            .list_providers(ListProvidersRequest {
                parent: ORG.into(),
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    // Another caller.
    let mut provider = mesh.org_as("principals/dr-okafor").await?;
    refusals.push(
        provider
            .list_locations(ListLocationsRequest {
                parent: ORG.into(),
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    // Another query.
    refusals.push(
        admin
            .list_locations(ListLocationsRequest {
                parent: ORG.into(),
                page_size: 1,
                page_token: token.clone(),
                filter: "display_name = x".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    // A token edited by hand.
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    refusals.push(
        admin
            .list_locations(ListLocationsRequest {
                parent: ORG.into(),
                page_size: 1,
                page_token: String::from_utf8(tampered)?,
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    let mut messages = std::collections::BTreeSet::new();
    for (i, refusal) in refusals.into_iter().enumerate() {
        let status = refusal.expect_err("a foreign page token must be refused");
        assert_eq!(status.code(), Code::InvalidArgument, "#{i}: {status:?}");
        let details = status.get_error_details();
        let bad = details.bad_request().expect("a field violation");
        assert_eq!(bad.field_violations[0].field, "page_token", "#{i}");
        messages.insert(status.message().to_string());
    }
    assert_eq!(
        messages.len(),
        1,
        "one message for every refusal: {messages:?}"
    );
    mesh.stop().await
}

#[tokio::test]
async fn purpose_btg_is_believed_only_with_a_live_break_glass_grant() -> anyhow::Result<()> {
    let mesh = TestMesh::start(Backend::Sqlite).await?;
    let mut admin = mesh.org().await?;
    pm::demo::seed(&mut admin, &mut mesh.billing_as(pm::demo::ADMIN).await?).await?;
    // p-0001 is in reach of Dr. Okafor's ordinary binding.
    let patient = "organizations/acme/patients/p-0001";
    let mut provider = mesh.org_as("principals/dr-okafor").await?;
    let read = |purpose: &str| -> anyhow::Result<tonic::Request<GetPatientRequest>> {
        let mut request = tonic::Request::new(GetPatientRequest {
            name: patient.into(),
        });
        request
            .metadata_mut()
            .insert("x-purpose-of-use", purpose.parse()?);
        Ok(request)
    };
    for claim in ["BTG", "btg"] {
        let refused = provider
            .get_patient(read(claim)?)
            .await
            .expect_err("BTG without a break-glass grant");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert_eq!(reason(&refused), "BREAK_GLASS_NOT_GRANTED");
    }
    // Any other purpose is the caller's claim, as before.
    provider.get_patient(read("TREAT")?).await?;

    // With a live break-glass grant, BTG is accepted and recorded.
    let token = mesh.token("principals/dr-okafor").await?;
    let channel = client::channel(&mesh.config, tls::CLIENT, &mesh.url(Service::Rbac)).await?;
    let mut rbac = pm_api::rbac::rbac_service_client::RbacServiceClient::new(
        tonic::service::interceptor::InterceptedService::new(channel, client::Bearer::new(&token)?),
    );
    rbac.break_glass(pm_api::rbac::BreakGlassRequest {
        parent: ORG.into(),
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
    .await?;
    // The layer caches bindings for ACCESS_TTL: the grant shows within that bound.
    let deadline = Instant::now() + pm_authz::layer::ACCESS_TTL + Duration::from_secs(2);
    loop {
        match provider.get_patient(read("BTG")?).await {
            Ok(_) => break,
            Err(status) if reason(&status) == "BREAK_GLASS_NOT_GRANTED" => {
                assert!(Instant::now() < deadline, "the grant never took effect");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(status) => return Err(status.into()),
        }
    }
    let records = support::trail(&mut admin, patient).await?;
    let purposes: Vec<&str> = records
        .iter()
        .filter(|r| {
            r.method == "/pm.org.v1.OrgService/GetPatient" && r.principal == "principals/dr-okafor"
        })
        .map(|r| r.purpose.as_str())
        .collect();
    assert!(purposes.contains(&"TREAT"), "{purposes:?}");
    assert!(purposes.contains(&"BTG"), "{purposes:?}");
    mesh.stop().await
}

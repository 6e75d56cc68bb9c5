//! The server bootstrap answers a panicking handler with INTERNAL for that call only, over the real
//! mTLS listener `serve` builds, and keeps serving: the next call, health, and another panic.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pm_runtime::config::Config;
use pm_runtime::server::{self, ServiceDef, TaskTracker};
use pm_runtime::{catch_panic, client, tls};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::codegen::http;
use tonic::service::Routes;

/// A gRPC service whose every method panics, with what looks like patient data in the payload.
#[derive(Clone)]
struct Panics;

impl tonic::server::NamedService for Panics {
    const NAME: &'static str = "test.v1.Panics";
}

impl tower::Service<http::Request<tonic::body::Body>> for Panics {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            // Let the panic happen after an await, as a handler's would.
            tokio::task::yield_now().await;
            panic!("patient Jane Doe, born 1970-01-01");
        })
    }
}

async fn call_panicking(channel: tonic::transport::Channel) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(err) = grpc.ready().await {
        return tonic::Status::unavailable(format!("not ready: {err}"));
    }
    let path = http::uri::PathAndQuery::from_static("/test.v1.Panics/Boom");
    match grpc
        .unary::<(), (), _>(
            tonic::Request::new(()),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
    {
        Ok(_) => tonic::Status::ok("unexpectedly answered"),
        Err(status) => status,
    }
}

#[tokio::test]
async fn a_panicking_handler_is_internal_for_that_call_and_the_server_keeps_serving()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = Config::defaults_in(dir.path());
    let listener = server::bind("127.0.0.1:0".parse()?).await?;
    let url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
    let shutdown = CancellationToken::new();
    let def = ServiceDef {
        name: "org",
        grpc_services: vec![],
        routes: Routes::new(Panics),
        db: None,
        background: TaskTracker::new(),
    };
    let served = tokio::spawn({
        let config = config.clone();
        let shutdown = shutdown.clone();
        async move { server::serve(&config, def, listener, shutdown).await }
    });

    let channel = client::channel(&config, tls::CLIENT, &url).await?;
    for attempt in 0..3 {
        let status = call_panicking(channel.clone()).await;
        assert_eq!(
            status.code(),
            Code::Internal,
            "attempt {attempt}: {status:?}"
        );
        assert_eq!(status.message(), catch_panic::MESSAGE, "generic message");
        assert!(!status.message().contains("Jane"), "no payload echoed");

        // The same connection still serves other calls.
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let serving = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner()
            .status;
        assert_eq!(
            serving,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), served).await???;
    Ok(())
}

//! Serving one service: mTLS, health (per service and overall, NOT_SERVING while the database is
//! unreachable), reflection v1 and v1alpha, request timeouts, a concurrency limit, per-call tracing
//! spans (method path only: no PHI), a panic in a handler answered as INTERNAL for that call only
//! ([`crate::catch_panic`]), and graceful shutdown that drains in-flight calls.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::config::Config;
use crate::db::Db;
use crate::tls;

/// One service ready to serve.
pub struct ServiceDef {
    /// Short name: `org`, `rbac`; also its certificate's name.
    pub name: &'static str,
    /// Full gRPC service names it serves, e.g. `pm.org.v1.OrgService`.
    pub grpc_services: Vec<&'static str>,
    /// Its gRPC routes.
    pub routes: Routes,
    /// Its database, probed for health.
    pub db: Option<Db>,
    /// Its tasks that must end before its database closes (the audit writer's last seal): once
    /// the server has drained, [`serve`] waits for them, at most [`BACKGROUND_GRACE`].
    pub background: TaskTracker,
}

/// How long [`serve`] waits, after draining, for a service's background tasks to end.
pub const BACKGROUND_GRACE: Duration = Duration::from_secs(5);

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// Serves `service` on `listener` until `shutdown` is cancelled, then drains in-flight calls.
pub async fn serve(
    config: &Config,
    service: ServiceDef,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let routes = service
        .routes
        .add_service(health)
        .add_service(reflection_for(&service.grpc_services).build_v1()?)
        .add_service(reflection_for(&service.grpc_services).build_v1alpha()?);

    // The first probe completes before serving, so health never answers "not registered".
    let healthy = is_healthy(service.db.as_ref()).await;
    report(&reporter, &service.grpc_services, healthy).await;
    let probe = tokio::spawn(probe_health(
        reporter,
        healthy,
        service.grpc_services.clone(),
        service.db.clone(),
        Duration::from_millis(config.server.health_probe_interval_ms.max(100)),
        shutdown.clone(),
    ));

    let mut builder = Server::builder();
    match tls::material(config, service.name)? {
        Some(material) => builder = builder.tls_config(material.server())?,
        None => {
            for _ in 0..3 {
                tracing::warn!(
                    service = service.name,
                    "PLAINTEXT: tls.mode = plaintext, this listener has no TLS and no client authentication; never use it outside local debugging"
                );
            }
        }
    }
    let result = builder
        .timeout(Duration::from_millis(config.server.request_timeout_ms))
        .trace_fn(|request| tracing::info_span!("grpc", method = %request.uri().path()))
        // Outermost of our layers, so that a panic anywhere below (authorization, handler) answers
        // INTERNAL for that call and releases its concurrency permit as it unwinds.
        .layer(crate::catch_panic::CatchPanicLayer)
        .layer(GlobalConcurrencyLimitLayer::new(
            config.server.concurrency_limit.max(1),
        ))
        .add_routes(routes)
        // No Nagle: a reply written in several pieces must not wait for the peer's delayed ACK (40 ms).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled_owned(),
        )
        .await;
    probe.abort();
    // The routes are gone with the server: what the background tasks wait for (the last handle on
    // the audit writer) is released, and they finish their last writes before the caller closes
    // the database.
    service.background.close();
    if tokio::time::timeout(BACKGROUND_GRACE, service.background.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            service = service.name,
            "background tasks still running after {BACKGROUND_GRACE:?}; closing anyway"
        );
    }
    result.map_err(|e| anyhow::anyhow!("{} server failed: {e}", service.name))
}

fn reflection_for(grpc_services: &[&'static str]) -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pm_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(pm_api::GOOGLE_RPC_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    for name in grpc_services {
        builder = builder.with_service_name(*name);
    }
    builder
}

/// Sets every served service (and the overall "" entry) SERVING while the database answers and
/// NOT_SERVING while it does not.
async fn probe_health(
    reporter: tonic_health::server::HealthReporter,
    mut last: bool,
    grpc_services: Vec<&'static str>,
    db: Option<Db>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                report(&reporter, &grpc_services, false).await;
                return;
            }
            () = tokio::time::sleep(interval) => {}
        }
        let healthy = is_healthy(db.as_ref()).await;
        if healthy != last {
            if healthy {
                tracing::info!("database reachable again: reporting SERVING");
            } else {
                tracing::warn!("database unreachable: reporting NOT_SERVING");
            }
            report(&reporter, &grpc_services, healthy).await;
            last = healthy;
        }
    }
}

async fn is_healthy(db: Option<&Db>) -> bool {
    match db {
        Some(db) => db.ping().await,
        None => true,
    }
}

async fn report(
    reporter: &tonic_health::server::HealthReporter,
    grpc_services: &[&'static str],
    healthy: bool,
) {
    let status = if healthy {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for name in grpc_services.iter().copied().chain([""]) {
        reporter.set_service_status(name, status).await;
    }
}

/// A token cancelled on SIGTERM or Ctrl-C.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(err) => {
                        tracing::error!(%err, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        trigger.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested: draining in-flight calls");
        trigger.cancel();
    });
    token
}

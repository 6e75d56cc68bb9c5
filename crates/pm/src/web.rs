//! The web edge: grpc-web for the calendar page (issue 15).
//!
//! Browsers cannot present the mesh's client certificates, so the edge listens on
//! `listen.web_port` with server-only TLS (the `web` certificate of the dev CA, or `web.crt` in
//! `tls.cert_dir`) and accepts grpc-web (HTTP/1.1 or HTTP/2, through tonic-web) as well as plain
//! gRPC. It forwards only the methods in [`FORWARDED`], each to its service over mTLS with the
//! edge's own certificate, carrying the caller's `authorization: Bearer <token>` header unchanged.
//! The services authenticate the token and decide, exactly as for any other caller; the edge
//! authorizes nothing itself. A call without a bearer token is refused here with UNAUTHENTICATED
//! (the services would refuse it too: no method the edge forwards lists `web` among its service
//! callers), and a method not on the list with UNIMPLEMENTED, so the edge never widens access.
//!
//! The token is RBAC's (`pm login` in dev mode): a JWT signed with Ed25519 (`alg` `EdDSA`, `kid` one
//! of the keys RBAC publishes) with `iss` `pm-rbac`, `aud` `pm-mesh`, `sub` the principal
//! (`principals/<id>`) and `exp` at most an hour away. An organization's identity provider fits in
//! front of it by exchanging its own sign-in for such a token (the principal is the one RBAC binds
//! roles to); the edge only passes the header through.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, TE};
use pm_api::rbac::IssueTokenRequest;
use pm_api::rbac::rbac_service_client::RbacServiceClient;
use pm_runtime::config::{Config, TlsMode};
use pm_runtime::{client, server, tls};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tower::{Service as _, ServiceExt as _};

/// The edge's identity: its certificate name under the PKI.
pub const IDENTITY: &str = "web";

/// The only methods the edge forwards: what the calendar page calls.
pub const FORWARDED: &[&str] = &[
    "/pm.org.v1.OrgService/ListServiceUnits",
    "/pm.org.v1.OrgService/GetServiceUnit",
    // The calendar shows times in the location's zone.
    "/pm.org.v1.OrgService/GetLocation",
    "/pm.scheduling.v1.SchedulingService/ListVisitTypes",
    "/pm.scheduling.v1.SchedulingService/ListCalendar",
    "/pm.scheduling.v1.SchedulingService/WatchCalendar",
    "/pm.scheduling.v1.SchedulingService/FindSlots",
    "/pm.scheduling.v1.SchedulingService/BookAppointment",
    "/pm.scheduling.v1.SchedulingService/ConfirmAppointment",
    "/pm.scheduling.v1.SchedulingService/CancelAppointment",
    "/pm.scheduling.v1.SchedulingService/RescheduleAppointment",
];

/// The page's bundle, built by `make web` from `web/` (esbuild) and committed, so that a machine with
/// only the Rust toolchain serves it; CI rebuilds it and fails if it differs.
const PAGE_HTML: &str = include_str!("../web-dist/index.html");
const PAGE_JS: &str = include_str!("../web-dist/app.js");

fn asset(body: &'static str, content_type: &'static str) -> http::Response<axum::body::Body> {
    let mut response = http::Response::new(axum::body::Body::from(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    response
}

/// Request headers passed on to the service; every other header stays at the edge.
const PASSED_HEADERS: &[&str] = &[
    "content-type",
    "te",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "authorization",
    "x-purpose-of-use",
];

/// Where the edge forwards to.
#[derive(Clone)]
struct Upstreams {
    org: Channel,
    scheduling: Channel,
}

impl Upstreams {
    fn for_path(&self, path: &str) -> Option<Channel> {
        if !FORWARDED.contains(&path) {
            return None;
        }
        if path.starts_with("/pm.org.v1.") {
            Some(self.org.clone())
        } else if path.starts_with("/pm.scheduling.v1.") {
            Some(self.scheduling.clone())
        } else {
            None
        }
    }
}

/// A running edge.
pub struct WebEdge {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The server task (ends after the shutdown token is cancelled).
    pub task: JoinHandle<anyhow::Result<()>>,
}

/// Where the edge's services are.
pub struct Peers<'a> {
    /// Org (`ListServiceUnits`, `GetServiceUnit`).
    pub org: &'a str,
    /// Scheduling (the calendar, slots, appointments).
    pub scheduling: &'a str,
    /// RBAC, asked for dev sign-in tokens (dev mode only).
    pub rbac: &'a str,
}

/// Binds `listen.web_port` and serves the edge in front of `peers` until `shutdown` is cancelled.
pub async fn start(
    config: &Config,
    peers: Peers<'_>,
    shutdown: CancellationToken,
) -> anyhow::Result<WebEdge> {
    let (org_url, scheduling_url) = (peers.org, peers.scheduling);
    let listener =
        server::bind(SocketAddr::new(config.listen.host, config.listen.web_port)).await?;
    let addr = listener.local_addr()?;
    let upstreams = Upstreams {
        org: client::lazy_channel(config, IDENTITY, org_url)?,
        scheduling: client::lazy_channel(config, IDENTITY, scheduling_url)?,
    };
    let mut builder = tonic::transport::Server::builder()
        .accept_http1(true)
        .timeout(Duration::from_millis(
            config.server.request_timeout_ms.max(1),
        ));
    if let Some(material) = tls::material(config, IDENTITY)? {
        // Server-only: no client_ca_root, browsers have no client certificate.
        builder = builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(&material.cert_pem, &material.key_pem),
        ))?;
    }
    let mut router = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let upstreams = upstreams.clone();
        async move { forward(upstreams, request).await }
    });
    // The page itself (GET only; every POST is grpc-web for the fallback).
    let html = axum::routing::get(|| async { asset(PAGE_HTML, "text/html; charset=utf-8") });
    router = router
        .route("/", html.clone())
        .route("/index.html", html)
        .route(
            "/app.js",
            axum::routing::get(|| async { asset(PAGE_JS, "text/javascript; charset=utf-8") }),
        );
    if config.tls.mode == TlsMode::Dev {
        // Dev sign-in, as `pm login` does: RBAC mints the token for the tool certificate, which
        // only dev mode lets bootstrap access. Never in another mode.
        let rbac = RbacServiceClient::new(client::lazy_channel(config, tls::CLIENT, peers.rbac)?);
        router = router.route(
            DEV_SIGN_IN,
            axum::routing::post(move |principal: String| {
                let rbac = rbac.clone();
                async move { dev_sign_in(rbac, principal).await }
            }),
        );
    }
    let scheme = if tls::material(config, IDENTITY)?.is_some() {
        "https"
    } else {
        "http"
    };
    let origins = [
        format!("{scheme}://localhost:{}", addr.port()),
        format!("{scheme}://127.0.0.1:{}", addr.port()),
    ]
    .iter()
    .filter_map(|origin| HeaderValue::from_str(origin).ok())
    .collect::<Vec<_>>();
    // Only the edge's own origin: the page is served from here.
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([http::Method::POST])
        .allow_headers([
            CONTENT_TYPE,
            AUTHORIZATION,
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
        ]);
    let mut server = builder.layer(cors).layer(tonic_web::GrpcWebLayer::new());
    let serving = server.add_routes(tonic::service::Routes::from(router));
    let task = tokio::spawn(async move {
        serving
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown.cancelled_owned(),
            )
            .await?;
        Ok(())
    });
    Ok(WebEdge { addr, task })
}

/// Dev mode only: `POST` a principal's name (`principals/<id>`, as text) to get a 15-minute token for
/// it, as `pm login` prints.
pub const DEV_SIGN_IN: &str = "/dev/sign-in";

/// The longest principal name dev sign-in accepts.
const MAX_PRINCIPAL_LEN: usize = 128;

async fn dev_sign_in(
    mut rbac: RbacServiceClient<Channel>,
    principal: String,
) -> http::Response<axum::body::Body> {
    let text = |status: http::StatusCode, body: String| {
        let mut response = http::Response::new(axum::body::Body::from(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    let principal = principal.trim();
    let id = principal.strip_prefix("principals/").unwrap_or_default();
    if id.is_empty()
        || principal.len() > MAX_PRINCIPAL_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return text(
            http::StatusCode::BAD_REQUEST,
            "principal: expected `principals/<id>` (lowercase letters, digits, hyphens)".into(),
        );
    }
    let issued = rbac
        .issue_token(IssueTokenRequest {
            principal: principal.to_string(),
            ttl: Some(prost_types::Duration {
                seconds: 15 * 60,
                nanos: 0,
            }),
        })
        .await;
    match issued {
        Ok(response) => text(http::StatusCode::OK, response.into_inner().token),
        // RBAC answers an unknown principal as one outside the caller's reach.
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::NotFound | tonic::Code::PermissionDenied
            ) =>
        {
            text(
                http::StatusCode::NOT_FOUND,
                format!("{principal} does not exist (run `make seed` for the demo's principals)"),
            )
        }
        // RBAC's own words: it names the field (a principal name is not PHI).
        Err(status) if status.code() == tonic::Code::InvalidArgument => text(
            http::StatusCode::BAD_REQUEST,
            format!("RBAC refused the dev token: {}", status.message()),
        ),
        Err(status) => {
            tracing::warn!(code = ?status.code(), "web edge: dev sign-in refused by RBAC");
            text(
                http::StatusCode::BAD_GATEWAY,
                format!("RBAC refused the dev token: {}", status.code()),
            )
        }
    }
}

/// A gRPC status as a complete (trailers-only) response.
fn refuse(status: tonic::Status) -> http::Response<axum::body::Body> {
    status.into_http()
}

/// Whether the request carries `authorization: Bearer <something>`.
fn has_bearer(headers: &http::HeaderMap) -> bool {
    headers.get_all(AUTHORIZATION).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.get(..7)
                .is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
                && !v[7..].trim().is_empty()
        })
    })
}

/// Reads (a bounded amount of) a refused request's body before answering: an HTTP/2 answer sent
/// while the client is still sending resets the stream, and the client would see a framing error
/// instead of the status.
async fn drain(request: axum::extract::Request) {
    let _ = axum::body::to_bytes(request.into_body(), 1 << 20).await;
}

async fn forward(
    upstreams: Upstreams,
    request: axum::extract::Request,
) -> http::Response<axum::body::Body> {
    let path = request.uri().path().to_string();
    let Some(mut channel) = upstreams.for_path(&path) else {
        drain(request).await;
        return refuse(tonic::Status::unimplemented(
            "the web edge does not forward this method",
        ));
    };
    if !has_bearer(request.headers()) {
        drain(request).await;
        return refuse(tonic::Status::unauthenticated(
            "the web edge forwards only calls that carry `authorization: Bearer <token>`",
        ));
    }
    let (parts, body) = request.into_parts();
    let mut builder = http::Request::builder()
        .method(http::Method::POST)
        .uri(path.as_str())
        .version(http::Version::HTTP_2);
    for name in PASSED_HEADERS {
        for value in parts.headers.get_all(*name) {
            builder = builder.header(*name, value.clone());
        }
    }
    if !parts.headers.contains_key(TE) {
        builder = builder.header(TE, "trailers");
    }
    let Ok(outgoing) = builder.body(tonic::body::Body::new(body)) else {
        return refuse(tonic::Status::invalid_argument(
            "a request header is malformed",
        ));
    };
    let ready = match channel.ready().await {
        Ok(ready) => ready,
        Err(err) => {
            tracing::warn!(method = %path, error = %err, "web edge: service unreachable");
            return refuse(tonic::Status::unavailable("the service is unreachable"));
        }
    };
    match ready.call(outgoing).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(err) => {
            tracing::warn!(method = %path, error = %err, "web edge: forwarding failed");
            refuse(tonic::Status::unavailable("the service is unreachable"))
        }
    }
}

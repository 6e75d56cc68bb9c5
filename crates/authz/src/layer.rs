//! The authorization layer every service mounts in front of its handlers.
//!
//! For each call it finds the method's declared rule (`pm_api::RULES`, generated from the
//! `(pm.authz.v1.rule)` option) and refuses a method without one; reads the caller's mTLS identity
//! (the SPIFFE URI of its certificate); verifies the bearer token locally against RBAC's published
//! keys; loads the principal's role bindings from RBAC (cached for [`ACCESS_TTL`], the bound on how
//! long a revoked role keeps working); and refuses the call unless some binding's role carries the
//! permission. Handlers then check the permission against the resource's own scope with
//! [`Caller::decide`], after loading it.
//!
//! A call without a token is accepted only from a service whose name the rule lists in
//! `service_callers`, or, in dev mode, from the dev tool certificate for the few RBAC calls that
//! bootstrap access ([`BOOTSTRAP_PERMISSIONS`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use pm_api::MethodRule;
use pm_api::rbac::rbac_service_client::RbacServiceClient;
use pm_api::rbac::{LookupRoleBindingsRequest, RoleBinding};
use tokio::sync::Mutex;
use tonic::codegen::http;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::policy::{Decision, Grant, Role, Target, decide};
use crate::token::{PublicKey, TokenError, Verifier};

/// How long a principal's bindings are cached: a revoked role stops working within this bound.
pub const ACCESS_TTL: Duration = Duration::from_secs(5);
/// The `iss` of RBAC's tokens.
pub const ISSUER: &str = "pm-rbac";
/// The `aud` every service expects.
pub const AUDIENCE: &str = "pm-mesh";
/// The SPIFFE identity of the dev tool certificate.
pub const DEV_TOOLS_IDENTITY: &str = "spiffe://pm.local/client/dev-tools";
/// What the dev tool certificate may do without a token in dev mode: create the first principals and
/// bindings and log in. Never enabled with `tls.mode = files`.
pub const BOOTSTRAP_PERMISSIONS: &[&str] = &[
    "rbac.principals.create",
    "rbac.bindings.create",
    "rbac.tokens.issue",
    "rbac.permissions.list",
];

/// Who is calling, as the layer established it; handlers find it in the request's extensions.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The SPIFFE identity of the peer certificate, if any.
    pub peer: Option<String>,
    /// The peer's service name when the certificate is a service's (`org`).
    pub service: Option<String>,
    /// The end user (`principals/...`) when a token was presented.
    pub principal: Option<String>,
    /// The principal's provider record, for the Provider role.
    pub provider: Option<String>,
    /// The principal's live role bindings.
    pub grants: Arc<Vec<Grant>>,
    /// The dev tool bootstrapping access (dev mode only).
    pub bootstrap: bool,
    /// The peer's address.
    pub source: Option<SocketAddr>,
    /// The purpose of use the caller stated in `x-purpose-of-use` (an HL7 v3 PurposeOfUse code such as
    /// `TREAT`, `HPAYMT`, `HOPERAT`, `ETREAT`), recorded in the audit trail.
    pub purpose: Option<String>,
}

impl Caller {
    /// The service `service` acting on its own (a background task, such as Scheduling's waitlist
    /// worker), on nobody's behalf: its writes are audited under the service's identity.
    pub fn itself(service: &str) -> Self {
        Self {
            peer: Some(pm_runtime::tls::service_identity(service)),
            service: Some(service.to_string()),
            ..Default::default()
        }
    }

    /// A caller with every organization-wide right in `organization` (tests and tools acting as an
    /// administrator without the network).
    pub fn organization_admin(organization: &str) -> Self {
        Self {
            principal: Some("principals/test-admin".into()),
            grants: Arc::new(vec![Grant {
                binding: format!("{organization}/roleBindings/test-admin"),
                role: Role::OrganizationAdministrator,
                organization: organization.into(),
                units: Vec::new(),
                expire_micros: None,
                break_glass: false,
            }]),
            ..Self::default()
        }
    }

    /// Whether a service is calling on its own behalf (its declared internal RPCs: no scope check).
    pub fn is_service(&self) -> bool {
        self.principal.is_none() && self.service.is_some()
    }

    /// Whether any binding could carry `permission` somewhere.
    pub fn may_ever(&self, permission: &str) -> bool {
        self.grants
            .iter()
            .any(|g| crate::policy::role_grants(g.role, permission))
    }

    /// Whether this caller has a Provider binding in `organization` (and so needs its credentialed
    /// units for a decision).
    pub fn is_provider_in(&self, organization: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.role == Role::Provider && g.organization == organization)
    }

    /// Refuses unless `permission` on `target` (where `resource` sits) is allowed, with the same
    /// PERMISSION_DENIED whether the resource is out of reach or does not exist (no existence
    /// oracle). Access through a break-glass binding is logged as such.
    pub fn enforce(
        &self,
        permission: &str,
        target: &Target,
        provider_units: &[String],
        resource: &str,
    ) -> pm_runtime::ApiResult<()> {
        let decision = self.decide(
            permission,
            target,
            provider_units,
            pm_runtime::time::now_micros(),
        );
        if decision.allowed {
            if decision.break_glass {
                tracing::warn!(binding = ?decision.binding, permission, "access through a break-glass binding");
            }
            Ok(())
        } else {
            tracing::debug!(permission, reason = %decision.reason, "permission denied");
            Err(out_of_reach(resource))
        }
    }

    /// Decides `permission` on `target`. `provider_units` are the units the caller's provider record is
    /// credentialed in now (only read for Provider bindings).
    pub fn decide(
        &self,
        permission: &str,
        target: &Target,
        provider_units: &[String],
        now_micros: i64,
    ) -> Decision {
        if self.is_service() {
            return Decision {
                allowed: true,
                binding: None,
                break_glass: false,
                reason: format!(
                    "service {} calling a declared internal method",
                    self.service.as_deref().unwrap_or("?")
                ),
            };
        }
        let grants: Vec<Grant> = self
            .grants
            .iter()
            .map(|g| {
                let mut g = g.clone();
                if g.role == Role::Provider {
                    g.units = provider_units.to_vec();
                }
                g
            })
            .collect();
        decide(&grants, permission, target, now_micros)
    }
}

/// The rule of the method the layer matched for this request (the layer hands it to the handler),
/// so that handlers name no method strings.
pub fn rule_of<T>(request: &tonic::Request<T>) -> pm_runtime::ApiResult<&'static MethodRule> {
    request
        .extensions()
        .get::<&'static MethodRule>()
        .copied()
        .ok_or_else(|| {
            pm_runtime::ApiError::new(
                Code::Internal,
                "NO_RULE",
                "the authorization layer is not installed",
            )
        })
}

/// A call as its handler sees it: the caller the layer authenticated and the method it matched.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    /// Who calls.
    pub caller: &'a Caller,
    /// The full gRPC method path.
    pub method: &'static str,
    /// The permission the method's rule requires.
    pub permission: &'static str,
}

/// Serves one call: `handle` runs with the caller the layer attached and the method it matched
/// (without the layer in front, as in a store suite, the request's own rule:
/// [`pm_api::RpcRequest`]). PHI calls go through [`crate::phi::PhiAudit::serve`], which adds the audit.
pub async fn serve<Req: pm_api::RpcRequest, T>(
    request: tonic::Request<Req>,
    handle: impl AsyncFnOnce(Call<'_>, Req) -> pm_runtime::ApiResult<T>,
) -> pm_runtime::ApiResult<T> {
    let rule = rule_of(&request).or_else(|err| Req::rule().ok_or(err))?;
    let caller = require_caller(&request)?;
    let call = Call {
        caller: &caller,
        method: rule.method,
        permission: rule.permission,
    };
    handle(call, request.into_inner()).await
}

/// The permission of the method the layer matched for this request ([`rule_of`]).
pub fn permission_of<T>(request: &tonic::Request<T>) -> pm_runtime::ApiResult<&'static str> {
    rule_of(request).map(|rule| rule.permission)
}

/// Reads the caller the layer attached to a request.
pub fn caller_of<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    request.extensions().get::<Caller>().ok_or_else(|| {
        Status::internal("no caller on the request: the authorization layer is not installed")
    })
}

/// The caller the layer attached, cloned, as handlers want it (INTERNAL if the layer is missing).
pub fn require_caller<T>(request: &tonic::Request<T>) -> pm_runtime::ApiResult<Caller> {
    caller_of(request).cloned().map_err(|_| {
        pm_runtime::ApiError::new(
            Code::Internal,
            "NO_CALLER",
            "the authorization layer is not installed",
        )
    })
}

/// Where the layer gets role bindings and token keys.
#[tonic::async_trait]
pub trait AccessSource: Send + Sync + 'static {
    /// The principal's provider record (if any) and live bindings; `None` if it does not exist.
    async fn lookup(
        &self,
        principal: &str,
    ) -> Result<Option<(Option<String>, Vec<RoleBinding>)>, Status>;
    /// The keys that verify tokens now.
    async fn keys(&self) -> Result<Vec<PublicKey>, Status>;
}

/// RBAC over gRPC, with the service's own identity.
pub struct RbacAccess {
    client: RbacServiceClient<tonic::transport::Channel>,
}

impl RbacAccess {
    /// A source over a channel to RBAC (lazily connected).
    pub fn new(channel: tonic::transport::Channel) -> Self {
        Self {
            client: RbacServiceClient::new(channel),
        }
    }
}

#[tonic::async_trait]
impl AccessSource for RbacAccess {
    async fn lookup(
        &self,
        principal: &str,
    ) -> Result<Option<(Option<String>, Vec<RoleBinding>)>, Status> {
        let response = self
            .client
            .clone()
            .lookup_role_bindings(LookupRoleBindingsRequest {
                principal: principal.to_string(),
            })
            .await?
            .into_inner();
        Ok(response.principal.map(|p| {
            let provider = (!p.provider.is_empty()).then_some(p.provider);
            (provider, response.role_bindings)
        }))
    }

    async fn keys(&self) -> Result<Vec<PublicKey>, Status> {
        let response = self
            .client
            .clone()
            .list_signing_keys(pm_api::rbac::ListSigningKeysRequest {})
            .await?
            .into_inner();
        Ok(response
            .keys
            .into_iter()
            .map(|k| PublicKey { kid: k.kid, x: k.x })
            .collect())
    }
}

/// A principal's provider record and grants, converted once per cache period.
type Access = Arc<(Option<String>, Arc<Vec<Grant>>)>;
type Cached = (Instant, Option<Access>);

struct Shared {
    /// Calls in flight per caller ([`crate::inflight`]).
    limiter: Arc<crate::inflight::Limiter>,
    /// Open streams per caller: a stream's permit lives as long as its response body.
    streams: Arc<crate::inflight::Limiter>,
    /// Signs the page tokens of this service's Lists ([`pm_runtime::paging`]).
    page_key: pm_runtime::paging::PageKey,
    verifier: Verifier,
    source: Arc<dyn AccessSource>,
    dev_bootstrap: bool,
    cache: std::sync::Mutex<HashMap<String, Cached>>,
    verified: std::sync::Mutex<HashMap<String, Arc<crate::token::Claims>>>,
    keys_fetched: Mutex<KeyRefresh>,
}

/// When keys were last fetched, and the key ids found missing since (not worth another fetch yet).
#[derive(Default)]
struct KeyRefresh {
    recent: std::collections::VecDeque<Instant>,
    missing: std::collections::HashSet<String>,
}

/// The layer. Clone it freely.
#[derive(Clone)]
pub struct Authz {
    shared: Arc<Shared>,
    audit: Option<Arc<crate::audit::AuditWriter>>,
    scopes: Option<Arc<dyn crate::references::ScopeResolver>>,
}

impl Authz {
    /// A layer over `source` with the default bounds and a page-token key of this process (tests
    /// and tools; a served mesh uses [`Authz::bounded`]). `dev_bootstrap` lets the dev tool
    /// certificate bootstrap access.
    pub fn new(source: Arc<dyn AccessSource>, dev_bootstrap: bool) -> anyhow::Result<Self> {
        Self::bounded(source, dev_bootstrap, crate::admission::Bounds::defaults()?)
    }

    /// A layer over `source` enforcing `bounds` (from the configuration:
    /// [`crate::admission::Bounds::from_config`]).
    pub fn bounded(
        source: Arc<dyn AccessSource>,
        dev_bootstrap: bool,
        bounds: crate::admission::Bounds,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            shared: Arc::new(Shared {
                limiter: crate::inflight::Limiter::new(
                    bounds.per_caller_concurrency,
                    bounds.per_service_concurrency,
                ),
                streams: crate::inflight::Limiter::for_streams(
                    bounds.per_caller_streams,
                    bounds.per_service_concurrency,
                ),
                page_key: bounds.page_key,
                verifier: Verifier::new(ISSUER, AUDIENCE, Vec::new())?,
                source,
                dev_bootstrap,
                cache: std::sync::Mutex::new(HashMap::new()),
                verified: std::sync::Mutex::new(HashMap::new()),
                keys_fetched: Mutex::new(KeyRefresh::default()),
            }),
            audit: None,
            scopes: None,
        })
    }

    /// The same layer, placing the resources a request references with `scopes` (see
    /// [`crate::references`]). Without one, a reference a caller's organization-wide role does not
    /// cover is refused.
    pub fn with_scopes(&self, scopes: Arc<dyn crate::references::ScopeResolver>) -> Self {
        Self {
            scopes: Some(scopes),
            ..self.clone()
        }
    }

    /// The same layer, recording in `audit` every refused call to a method that touches PHI (the
    /// handlers record the calls they serve).
    pub fn with_audit(&self, audit: Arc<crate::audit::AuditWriter>) -> Self {
        Self {
            audit: Some(audit),
            ..self.clone()
        }
    }

    /// Admits an authenticated `caller` to `path`: RESOURCE_EXHAUSTED when it has its bound of calls
    /// in flight. Run the handler's future through [`crate::admission::Admission::run`], which holds
    /// the caller's place until the response is ready and binds page tokens to the method and caller.
    pub fn admit(
        &self,
        path: &str,
        caller: &Caller,
    ) -> Result<crate::admission::Admission, Status> {
        crate::admission::admit(&self.shared.limiter, &self.shared.page_key, path, caller)
    }

    /// A place among the caller's open streams for a server-streaming method (`None` for a unary
    /// one, or a call with no established caller): RESOURCE_EXHAUSTED `TOO_MANY_OPEN_STREAMS` when
    /// the caller has its bound open.
    fn open_stream(
        &self,
        path: &str,
        caller: &Caller,
    ) -> Result<Option<crate::inflight::Permit>, Status> {
        if !crate::edge::answers_with_stream(path) {
            return Ok(None);
        }
        match crate::admission::caller_key(caller) {
            Some((key, kind)) => self.shared.streams.acquire(key, kind).map(Some),
            None => Ok(None),
        }
    }

    /// Records a refused PHI call: who (as far as known: the caller once authenticated, as its
    /// handler would), which method, from where, and why.
    async fn audit_refusal(
        &self,
        path: &str,
        peer: Option<&TlsConnectInfo<TcpConnectInfo>>,
        status: &Status,
        caller: Option<&Caller>,
    ) {
        let Some(audit) = &self.audit else { return };
        if !pm_api::rule_for(path).is_some_and(|r| r.phi) {
            return;
        }
        let service = path.split('/').nth(1).unwrap_or_default().to_string();
        let outcome = crate::audit::Outcome::from_code(status.code());
        let event = match caller {
            Some(caller) => {
                crate::phi::audit_event(&service, caller, path, outcome, Vec::new(), Vec::new())
            }
            None => {
                let (identity, source) = peer_identity(peer);
                let who = identity.clone().unwrap_or_else(|| "anonymous".into());
                crate::audit::AuditEvent {
                    calling_service: identity,
                    source: source.map(|a| a.to_string()),
                    ..crate::audit::AuditEvent::new(service, path, who, outcome)
                }
            }
        };
        if let Err(err) = audit.record(event).await {
            tracing::error!(method = path, error = %err.message, "a refused call could not be audited");
        }
    }

    /// Authenticates and coarsely authorizes one call: the caller, or the status to answer with.
    pub async fn authenticate(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        peer: Option<&TlsConnectInfo<TcpConnectInfo>>,
    ) -> Result<Caller, Status> {
        if path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.") {
            return Ok(Caller::default());
        }
        let rule = pm_api::rule_for(path).ok_or_else(|| {
            denied(
                "NO_AUTHZ_RULE",
                "this method declares no authorization rule and is refused",
            )
        })?;
        let (peer_identity, source) = peer_identity(peer);
        let service = peer_identity
            .as_deref()
            .and_then(|id| id.strip_prefix("spiffe://pm.local/service/"))
            .map(str::to_string);
        // Only the authorization header(s), not a copy of every header.
        let mut metadata = MetadataMap::new();
        for value in headers.get_all(http::header::AUTHORIZATION) {
            let value = tonic::metadata::MetadataValue::try_from(value.as_bytes())
                .map_err(|_| unauthenticated(TokenError::Malformed))?;
            metadata.append("authorization", value);
        }
        let token = crate::token::bearer_token(&metadata).map_err(unauthenticated)?;
        let purpose = headers
            .get("x-purpose-of-use")
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 32
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
            .map(str::to_string);
        let base = Caller {
            peer: peer_identity.clone(),
            service: service.clone(),
            source,
            purpose,
            ..Caller::default()
        };
        let Some(token) = token else {
            let caller = self.without_token(rule, base)?;
            crate::purpose::check(&caller, pm_runtime::time::now_micros())?;
            return Ok(caller);
        };
        let claims = self.verify(token).await?;
        let Some(access) = self.lookup(&claims.sub).await? else {
            return Err(Status::unauthenticated(
                "the token's principal does not exist",
            ));
        };
        let caller = Caller {
            principal: Some(claims.sub.clone()),
            provider: access.0.clone(),
            grants: Arc::clone(&access.1),
            ..base
        };
        if !caller.may_ever(rule.permission) {
            return Err(denied(
                "PERMISSION_DENIED",
                &format!("no role of the caller carries {}", rule.permission),
            ));
        }
        crate::purpose::check(&caller, pm_runtime::time::now_micros())?;
        Ok(caller)
    }

    /// The caller a principal would be, with its live grants (for explaining access); `None` when the
    /// principal does not exist.
    pub async fn caller_for(&self, principal: &str) -> Result<Option<Caller>, Status> {
        Ok(self.lookup(principal).await?.map(|access| Caller {
            principal: Some(principal.to_string()),
            provider: access.0.clone(),
            grants: Arc::clone(&access.1),
            ..Caller::default()
        }))
    }

    fn without_token(&self, rule: &MethodRule, base: Caller) -> Result<Caller, Status> {
        if let Some(service) = &base.service
            && rule.service_callers.contains(&service.as_str())
        {
            return Ok(base);
        }
        if self.shared.dev_bootstrap
            && base.peer.as_deref() == Some(DEV_TOOLS_IDENTITY)
            && BOOTSTRAP_PERMISSIONS.contains(&rule.permission)
        {
            return Ok(Caller {
                bootstrap: true,
                ..base
            });
        }
        Err(unauthenticated(TokenError::Missing))
    }

    async fn verify(&self, token: &str) -> Result<Arc<crate::token::Claims>, Status> {
        let now = chrono::Utc::now().timestamp();
        // A token verified before is not verified again until it expires (signature checks dominate
        // the layer's cost otherwise).
        if let Some(claims) = self
            .shared
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            && claims.exp >= now
        {
            return Ok(Arc::clone(claims));
        }
        let claims = Arc::new(self.verify_signature(token, now).await?);
        let mut verified = self
            .shared
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if verified.len() > 10_000 {
            verified.retain(|_, c| c.exp >= now);
        }
        verified.insert(token.to_string(), Arc::clone(&claims));
        Ok(claims)
    }

    async fn verify_signature(
        &self,
        token: &str,
        now: i64,
    ) -> Result<crate::token::Claims, Status> {
        match self.shared.verifier.verify(token, now) {
            Err(TokenError::UnknownKey(kid)) => {
                // A new key after rotation, or the first call: refresh and retry.
                self.refresh_keys(&kid).await?;
                self.shared
                    .verifier
                    .verify(token, now)
                    .map_err(unauthenticated)
            }
            other => other.map_err(unauthenticated),
        }
    }

    /// Fetches RBAC's keys for an unknown `kid`: at once for a kid not seen missing since the last
    /// fetch (a rotation must not refuse fresh tokens), at most 10 fetches in any second, and a kid
    /// still missing after a fetch waits a second (forged kids cannot make us hammer RBAC).
    async fn refresh_keys(&self, kid: &str) -> Result<(), Status> {
        let mut fetched = self.shared.keys_fetched.lock().await;
        let second = Duration::from_secs(1);
        while fetched
            .recent
            .front()
            .is_some_and(|at| at.elapsed() >= second)
        {
            fetched.recent.pop_front();
        }
        let last = fetched.recent.back().map(|at| at.elapsed());
        let known_missing = fetched.missing.contains(kid) && last.is_some_and(|l| l < second);
        if known_missing || fetched.recent.len() >= 10 {
            return Ok(());
        }
        let keys = self.shared.source.keys().await.map_err(|s| {
            tracing::warn!(code = ?s.code(), "cannot fetch token keys from rbac");
            Status::unavailable("token keys are unavailable, retry later")
        })?;
        self.shared
            .verifier
            .replace_keys(keys)
            .map_err(|e| Status::internal(format!("bad token keys from rbac: {e}")))?;
        fetched.recent.push_back(Instant::now());
        fetched.missing.clear();
        if !self.shared.verifier.key_ids().iter().any(|k| k == kid) && fetched.missing.len() < 1_000
        {
            fetched.missing.insert(kid.to_string());
        }
        Ok(())
    }

    async fn lookup(&self, principal: &str) -> Result<Option<Access>, Status> {
        if let Some((at, access)) = self
            .shared
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(principal)
            && at.elapsed() < ACCESS_TTL
        {
            return Ok(access.clone());
        }
        let found = self.shared.source.lookup(principal).await.map_err(|s| {
            tracing::warn!(code = ?s.code(), "cannot look up role bindings in rbac");
            Status::unavailable("role bindings are unavailable, retry later")
        })?;
        // Expired break-glass grants are kept here: the decision skips them.
        let access: Option<Access> = found.map(|(provider, bindings)| {
            Arc::new((
                provider,
                Arc::new(bindings.iter().filter_map(grant_of).collect()),
            ))
        });
        let mut cache = self
            .shared
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cache.len() > 10_000 {
            cache.retain(|_, (at, _)| at.elapsed() < ACCESS_TTL);
        }
        cache.insert(principal.to_string(), (Instant::now(), access.clone()));
        Ok(access)
    }
}

fn denied(reason: &'static str, message: &str) -> Status {
    pm_runtime::ApiError::new(Code::PermissionDenied, reason, message).into_status("authz.pm.dev")
}

fn unauthenticated(err: TokenError) -> Status {
    let reason = match err {
        TokenError::Missing => "TOKEN_MISSING",
        TokenError::Expired => "TOKEN_EXPIRED",
        TokenError::NotYetValid => "TOKEN_NOT_YET_VALID",
        TokenError::UnknownKey(_) => "TOKEN_UNKNOWN_KEY",
        TokenError::UnsupportedAlgorithm(_) => "TOKEN_ALGORITHM",
        TokenError::WrongAudience => "TOKEN_AUDIENCE",
        TokenError::WrongIssuer => "TOKEN_ISSUER",
        TokenError::BadSignature => "TOKEN_SIGNATURE",
        _ => "TOKEN_INVALID",
    };
    pm_runtime::ApiError::new(
        Code::Unauthenticated,
        reason,
        format!("bearer token refused: {err}"),
    )
    .into_status("authz.pm.dev")
}

/// The SPIFFE URI SAN of the peer's certificate and the peer's address.
fn peer_identity(
    peer: Option<&TlsConnectInfo<TcpConnectInfo>>,
) -> (Option<String>, Option<SocketAddr>) {
    let Some(peer) = peer else {
        return (None, None);
    };
    let address = peer.get_ref().remote_addr();
    let identity = peer
        .peer_certs()
        .and_then(|certs| certs.first().and_then(|der| spiffe_id(der.as_ref())));
    (identity, address)
}

/// The SPIFFE URI SAN of a DER certificate. Parsed once per distinct certificate: every call on a
/// connection presents the same one, and X.509 parsing would otherwise be a fixed cost per call.
fn spiffe_id(der: &[u8]) -> Option<String> {
    static PARSED: std::sync::OnceLock<std::sync::Mutex<HashMap<Vec<u8>, Option<String>>>> =
        std::sync::OnceLock::new();
    let parsed = PARSED.get_or_init(Default::default);
    if let Some(found) = parsed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(der)
    {
        return found.clone();
    }
    let identity = x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, cert)| {
            let san = cert.subject_alternative_name().ok().flatten()?;
            san.value.general_names.iter().find_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                    Some(uri.to_string())
                }
                _ => None,
            })
        });
    let mut cache = parsed.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= 4_096 {
        cache.clear();
    }
    cache.insert(der.to_vec(), identity.clone());
    identity
}

/// The policy role of a wire role (`None` for unspecified or unknown values).
pub fn role_of(role: i32) -> Option<Role> {
    use pm_api::rbac::Role as Pb;
    match Pb::try_from(role).ok()? {
        Pb::OrganizationAdministrator => Some(Role::OrganizationAdministrator),
        Pb::ProgramManager => Some(Role::ProgramManager),
        Pb::Provider => Some(Role::Provider),
        Pb::BillingStaff => Some(Role::BillingStaff),
        Pb::PlatformOperator => Some(Role::PlatformOperator),
        Pb::Unspecified => None,
    }
}

/// The decision's view of a binding (Provider units are filled in per decision).
pub fn grant_of(binding: &RoleBinding) -> Option<Grant> {
    let role = role_of(binding.role)?;
    Some(Grant {
        binding: binding.name.clone(),
        role,
        organization: pm_runtime::names::organization_of(&binding.name).to_string(),
        units: binding.units.clone(),
        expire_micros: binding
            .expire_time
            .as_ref()
            .map(pm_runtime::time::to_micros),
        break_glass: binding.break_glass,
    })
}

impl<S> Layer<S> for Authz {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            authz: self.clone(),
        }
    }
}

/// A service behind the layer.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    authz: Authz,
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<tonic::body::Body>> for Guarded<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone that was polled ready serves this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authz = self.authz.clone();
        Box::pin(async move {
            let path = request.uri().path().to_string();
            let peer = request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .cloned();
            let admitted = match authz
                .authenticate(&path, request.headers(), peer.as_ref())
                .await
            {
                Ok(caller) => match authz.admit(&path, &caller) {
                    // The admission bounds the caller's calls in flight until the response is
                    // ready and binds page tokens to the method and the caller; a stream's permit
                    // bounds its open streams for as long as it lasts.
                    Ok(admission) => match authz.open_stream(&path, &caller) {
                        Ok(stream) => authz
                            .inspect(&path, caller, request)
                            .await
                            .map(|request| (admission, stream, request))
                            .map_err(|(status, caller)| (status, Some(caller))),
                        Err(status) => Err((status, None)),
                    },
                    Err(status) => Err((status, None)),
                },
                Err(status) => Err((status, None)),
            };
            match admitted {
                Ok((admission, stream, request)) => {
                    let response = admission.run(inner.call(request)).await;
                    Ok(match (response?, stream) {
                        (response, None) => response,
                        // The permit goes with the body: dropped when the stream ends or the
                        // client goes away.
                        (response, Some(permit)) => response.map(|body| {
                            tonic::body::Body::new(http_body_util::BodyExt::map_frame(
                                body,
                                move |frame| {
                                    let _open = &permit;
                                    frame
                                },
                            ))
                        }),
                    })
                }
                Err((status, caller)) => {
                    authz
                        .audit_refusal(&path, peer.as_ref(), &status, caller.as_ref())
                        .await;
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// A request that passed the edge: its parts, its rule (none for health and reflection) and its
/// body to hand on.
type Checked = (
    http::request::Parts,
    Option<&'static MethodRule>,
    tonic::body::Body,
);

impl Authz {
    /// The shared edge after authentication: decodes the request against the method's input,
    /// checks the mesh-wide bounds, the call's target and every declared reference against the caller's scope, and
    /// hands the handler the request with its caller and its rule.
    async fn inspect(
        &self,
        path: &str,
        caller: Caller,
        request: http::Request<tonic::body::Body>,
    ) -> Result<http::Request<tonic::body::Body>, (Status, Caller)> {
        match self.decode_and_check(path, &caller, request).await {
            Ok((mut parts, rule, bytes)) => {
                parts.extensions.insert(caller);
                if let Some(rule) = rule {
                    parts.extensions.insert(rule);
                }
                Ok(http::Request::from_parts(parts, bytes))
            }
            Err(status) => Err((status, caller)),
        }
    }

    /// [`Authz::inspect`]'s checks: the request to hand on, or the status that refuses it.
    async fn decode_and_check(
        &self,
        path: &str,
        caller: &Caller,
        request: http::Request<tonic::body::Body>,
    ) -> Result<Checked, Status> {
        let (parts, body) = request.into_parts();
        let Some(rule) = pm_api::rule_for(path) else {
            // Health and reflection: no rule, nothing of ours to check.
            return Ok((parts, None, body));
        };
        let edge = |err: pm_runtime::ApiError| err.into_status("pm.dev");
        let input = crate::edge::input_of(path).ok_or_else(|| {
            Status::internal("the method's input message is missing from the contract")
        })?;
        let limited = http_body_util::Limited::new(body, crate::edge::MAX_REQUEST_BYTES);
        let bytes = match http_body_util::BodyExt::collect(limited).await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return Err(edge(pm_runtime::ApiError::new(
                    Code::InvalidArgument,
                    "REQUEST_TOO_LARGE",
                    format!(
                        "the request is larger than {} bytes or was cut off",
                        crate::edge::MAX_REQUEST_BYTES
                    ),
                )));
            }
        };
        let message = crate::edge::decode(&input, &bytes).map_err(edge)?;
        crate::edge::validate(&message).map_err(edge)?;
        // A break-glass purpose needs its grant in the organization this call is about.
        if caller.purpose.is_some() {
            let target = crate::edge::values_at(&message, rule.resource_field);
            let organization = target
                .first()
                .map(|(_, name)| pm_runtime::names::organization_of(name))
                .filter(|o| o.starts_with("organizations/"));
            crate::purpose::check_in(caller, organization, pm_runtime::time::now_micros())?;
        }
        crate::references::check(caller, rule, &message, self.scopes.as_deref())
            .await
            .map_err(|e| e.into_status(domain_of(path)))?;
        Ok((
            parts,
            Some(rule),
            tonic::body::Body::new(http_body_util::Full::new(bytes)),
        ))
    }
}

/// The ErrorInfo domain of a service's errors, from its method path (`/pm.org.v1.OrgService/...`
/// gives `org.pm.dev`).
fn domain_of(path: &str) -> &'static str {
    match path.split('.').nth(1) {
        Some("org") => "org.pm.dev",
        Some("scheduling") => "scheduling.pm.dev",
        Some("rbac") => "rbac.pm.dev",
        Some("billing") => "billing.pm.dev",
        Some("audit") => "audit.pm.dev",
        _ => "authz.pm.dev",
    }
}

/// Measurement only (`pm-bench` compares calls with and without the authorization layer): attaches a
/// fixed caller and checks nothing. `pm` never mounts it.
#[derive(Clone)]
pub struct FixedCallerForBenchmarks(pub Caller);

impl<S> Layer<S> for FixedCallerForBenchmarks {
    type Service = WithFixedCaller<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithFixedCaller {
            inner,
            caller: self.0.clone(),
        }
    }
}

/// A service behind [`FixedCallerForBenchmarks`].
#[derive(Clone)]
pub struct WithFixedCaller<S> {
    inner: S,
    caller: Caller,
}

impl<S: NamedService> NamedService for WithFixedCaller<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for WithFixedCaller<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.caller.clone());
        self.inner.call(request)
    }
}

/// The refusal for both "not yours" and "not there".
pub fn out_of_reach(resource: &str) -> pm_runtime::ApiError {
    pm_runtime::ApiError::new(
        tonic::Code::PermissionDenied,
        "PERMISSION_DENIED",
        format!("permission denied on {resource} (or it might not exist)"),
    )
    .with_meta("resource", resource)
}

//! What the layer does between authenticating a call and running its handler: counts the call
//! against its caller's bound ([`crate::inflight`]) and binds the page tokens the handler issues and
//! accepts to the method and the caller ([`pm_runtime::paging`]). The [`Admission`] lives as long as
//! the handler's response future.

use std::future::Future;
use std::sync::Arc;

use pm_runtime::config::Config;
use pm_runtime::paging::{PageKey, TokenScope};
use tonic::Status;

use crate::inflight::{CallerKind, Limiter, Permit};
use crate::layer::Caller;

/// The per-call bounds a layer enforces, and the page-token key.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Calls in flight per principal (`server.per_caller_concurrency`).
    pub per_caller_concurrency: usize,
    /// Calls in flight per service calling on its own behalf (`server.per_service_concurrency`).
    pub per_service_concurrency: usize,
    /// Open streams per principal (`server.per_caller_streams`).
    pub per_caller_streams: usize,
    /// The key signing page tokens, shared by every replica.
    pub page_key: PageKey,
}

impl Bounds {
    /// The bounds `config` sets; fails when the page-token key cannot be had (see
    /// [`PageKey::load`]).
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            per_caller_concurrency: config.server.per_caller_concurrency,
            per_service_concurrency: config.server.per_service_concurrency,
            per_caller_streams: config.server.per_caller_streams,
            page_key: PageKey::load(config)?,
        })
    }

    /// The defaults, with a random page-token key of this process (tests, tools, benchmarks).
    pub fn defaults() -> anyhow::Result<Self> {
        let server = pm_runtime::config::ServerConfig::default();
        Ok(Self {
            per_caller_concurrency: server.per_caller_concurrency,
            per_service_concurrency: server.per_service_concurrency,
            per_caller_streams: server.per_caller_streams,
            page_key: PageKey::random()?,
        })
    }
}

/// A call let through: hold it while the handler runs ([`Admission::run`]).
#[must_use = "the call is bounded only while the admission is held"]
pub struct Admission {
    _permit: Option<Permit>,
    scope: TokenScope,
}

impl Admission {
    /// Runs the handler's future `call` with page tokens bound to this call, keeping the caller's
    /// place in flight until it completes (or is dropped, when the deadline passes or the client
    /// goes away).
    pub async fn run<F: Future>(self, call: F) -> F::Output {
        let Admission {
            _permit: permit,
            scope,
        } = self;
        let output = pm_runtime::paging::scoped(scope, call).await;
        drop(permit);
        output
    }
}

/// Whom a call counts against, and page tokens are bound to: the principal, else the peer's
/// certificate identity (a service on its own behalf, the dev tool). `None` for calls no caller is
/// established for (health, reflection).
pub fn caller_key(caller: &Caller) -> Option<(&str, CallerKind)> {
    if let Some(principal) = caller.principal.as_deref() {
        return Some((principal, CallerKind::Principal));
    }
    let peer = caller.peer.as_deref()?;
    let kind = if caller.is_service() {
        CallerKind::Service
    } else {
        CallerKind::Principal
    };
    Some((peer, kind))
}

/// Admits an authenticated call to `path`, or refuses it with RESOURCE_EXHAUSTED when its caller
/// has its bound in flight.
pub fn admit(
    limiter: &Arc<Limiter>,
    page_key: &PageKey,
    path: &str,
    caller: &Caller,
) -> Result<Admission, Status> {
    let (permit, key) = match caller_key(caller) {
        Some((key, kind)) => (Some(limiter.acquire(key, kind)?), key),
        None => (None, ""),
    };
    Ok(Admission {
        _permit: permit,
        scope: TokenScope::new(page_key.clone(), path, key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_admission_holds_the_callers_place_until_the_call_completes() -> anyhow::Result<()> {
        let limiter = Limiter::new(1, 1);
        let key = PageKey::random()?;
        let caller = Caller {
            principal: Some("principals/a".into()),
            ..Caller::default()
        };
        let admission = admit(
            &limiter,
            &key,
            "/pm.org.v1.OrgService/ListLocations",
            &caller,
        )?;
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let call = tokio::spawn(admission.run(async move {
            let _ = released.await;
            // The handler sees its call's page-token scope.
            pm_runtime::paging::encode_token("q", vec!["a".into()])
        }));
        tokio::task::yield_now().await;
        assert_eq!(limiter.in_flight("principals/a"), 1);
        assert!(admit(&limiter, &key, "/x", &caller).is_err());
        let _ = release.send(());
        let token = call.await?;
        assert_eq!(limiter.in_flight("principals/a"), 0);
        // The token is good for the same method and caller only.
        let same = admit(
            &limiter,
            &key,
            "/pm.org.v1.OrgService/ListLocations",
            &caller,
        )?;
        assert!(
            same.run(async { pm_runtime::paging::decode_token(&token, "q") })
                .await
                .is_ok()
        );
        let other = admit(
            &limiter,
            &key,
            "/pm.org.v1.OrgService/ListProviders",
            &caller,
        )?;
        assert!(
            other
                .run(async { pm_runtime::paging::decode_token(&token, "q") })
                .await
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn health_and_reflection_calls_count_against_nobody() -> anyhow::Result<()> {
        let limiter = Limiter::new(1, 1);
        let key = PageKey::random()?;
        let anonymous = Caller::default();
        let _a = admit(&limiter, &key, "/grpc.health.v1.Health/Check", &anonymous)?;
        let _b = admit(&limiter, &key, "/grpc.health.v1.Health/Check", &anonymous)?;
        assert_eq!(limiter.callers(), 0);
        Ok(())
    }
}

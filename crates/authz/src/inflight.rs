//! A bound on the calls one caller may have in flight at one service (OWASP API #4): without it, one
//! principal sending many slow calls at once takes every connection of the service's pool, and every
//! other caller waits behind it.
//!
//! A call over the bound is refused at once with RESOURCE_EXHAUSTED (`TOO_MANY_CALLS_IN_FLIGHT`)
//! rather than queued: a queue would hold the abuser's calls (and their memory) and still delay the
//! others. The count of a caller is held by a [`Permit`] until its call's response is ready; a caller
//! with no call in flight has no entry, so the map holds at most as many entries as there are calls in
//! flight (and never more than [`MAX_CALLERS`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tonic::{Code, Status};

/// The most distinct callers tracked at once. The server's own concurrency limit keeps the real
/// number far below; this is the bound should it be raised without thought.
pub const MAX_CALLERS: usize = 65_536;

/// Calls in flight per caller, for one service.
#[derive(Debug)]
pub struct Limiter {
    per_principal: usize,
    per_service: usize,
    /// What is counted, for the refusal: calls in flight, or open streams.
    counts_streams: bool,
    in_flight: Mutex<HashMap<String, usize>>,
}

/// Which bound applies to a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// An end user (a token's principal), or a tool's certificate.
    Principal,
    /// A service of the mesh calling on its own behalf: a larger bound, since it carries the work of
    /// many users (coalesced lookups, followers of a stream).
    Service,
}

/// One call's place in its caller's count, given back when dropped.
#[derive(Debug)]
#[must_use = "the call counts as in flight only while the permit lives"]
pub struct Permit {
    limiter: Arc<Limiter>,
    key: String,
}

impl Limiter {
    /// A limiter allowing `per_principal` calls in flight to each principal and `per_service` to each
    /// service calling on its own behalf (each at least 1).
    pub fn new(per_principal: usize, per_service: usize) -> Arc<Self> {
        Arc::new(Self {
            per_principal: per_principal.max(1),
            per_service: per_service.max(1),
            counts_streams: false,
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// A limiter of open streams (a permit held for as long as the stream's body lives), refusing
    /// with `TOO_MANY_OPEN_STREAMS`.
    pub fn for_streams(per_principal: usize, per_service: usize) -> Arc<Self> {
        Arc::new(Self {
            per_principal: per_principal.max(1),
            per_service: per_service.max(1),
            counts_streams: true,
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one more call of `key` (a principal or a peer identity), or refuses it at once with
    /// RESOURCE_EXHAUSTED when `key` already has its bound in flight. The message names no caller.
    pub fn acquire(self: &Arc<Self>, key: &str, kind: CallerKind) -> Result<Permit, Status> {
        let bound = match kind {
            CallerKind::Principal => self.per_principal,
            CallerKind::Service => self.per_service,
        };
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let refuse = || {
            if self.counts_streams {
                too_many_streams(bound)
            } else {
                too_many(bound)
            }
        };
        if in_flight.len() >= MAX_CALLERS && !in_flight.contains_key(key) {
            return Err(refuse());
        }
        let count = in_flight.entry(key.to_string()).or_insert(0);
        if *count >= bound {
            return Err(refuse());
        }
        *count += 1;
        Ok(Permit {
            limiter: Arc::clone(self),
            key: key.to_string(),
        })
    }

    /// Calls of `key` in flight now.
    pub fn in_flight(&self, key: &str) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Callers with a call in flight now.
    pub fn callers(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut in_flight = self
            .limiter
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = in_flight.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_flight.remove(&self.key);
            }
        }
    }
}

fn too_many_streams(bound: usize) -> Status {
    pm_runtime::ApiError::new(
        Code::ResourceExhausted,
        "TOO_MANY_OPEN_STREAMS",
        format!("this caller already has {bound} streams open at this service: close one first"),
    )
    .with_meta("limit", bound.to_string())
    .into_status("authz.pm.dev")
}

fn too_many(bound: usize) -> Status {
    pm_runtime::ApiError::new(
        Code::ResourceExhausted,
        "TOO_MANY_CALLS_IN_FLIGHT",
        format!(
            "this caller already has {bound} calls in flight at this service: wait for one to finish"
        ),
    )
    .with_meta("limit", bound.to_string())
    .into_status("authz.pm.dev")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt as _;

    #[test]
    fn a_caller_over_its_bound_is_refused_and_others_are_not() -> Result<(), Status> {
        let limiter = Limiter::new(2, 8);
        let a1 = limiter.acquire("principals/a", CallerKind::Principal)?;
        let _a2 = limiter.acquire("principals/a", CallerKind::Principal)?;
        let refused = limiter
            .acquire("principals/a", CallerKind::Principal)
            .expect_err("over the bound");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        let details = refused.get_error_details();
        assert_eq!(
            details.error_info().map(|i| i.reason.as_str()),
            Some("TOO_MANY_CALLS_IN_FLIGHT")
        );
        assert!(!refused.message().contains("principals/a"));
        // Another caller is not affected.
        let _b = limiter.acquire("principals/b", CallerKind::Principal)?;
        // A call ending frees its place.
        drop(a1);
        let _a3 = limiter.acquire("principals/a", CallerKind::Principal)?;
        Ok(())
    }

    #[test]
    fn services_have_their_own_larger_bound() -> Result<(), Status> {
        let limiter = Limiter::new(1, 3);
        let service = "spiffe://pm.local/service/scheduling";
        let permits = (0..3)
            .map(|_| limiter.acquire(service, CallerKind::Service))
            .collect::<Result<Vec<_>, _>>()?;
        assert_eq!(limiter.in_flight(service), 3);
        assert!(limiter.acquire(service, CallerKind::Service).is_err());
        drop(permits);
        assert_eq!(limiter.in_flight(service), 0);
        Ok(())
    }

    #[test]
    fn callers_with_nothing_in_flight_leave_no_entry() -> Result<(), Status> {
        let limiter = Limiter::new(4, 4);
        for i in 0..1_000 {
            let _permit = limiter.acquire(&format!("principals/p{i}"), CallerKind::Principal)?;
        }
        assert_eq!(limiter.callers(), 0);
        let held: Vec<_> = (0..10)
            .map(|i| limiter.acquire(&format!("principals/p{i}"), CallerKind::Principal))
            .collect::<Result<_, _>>()?;
        assert_eq!(limiter.callers(), 10);
        drop(held);
        assert_eq!(limiter.callers(), 0);
        Ok(())
    }

    #[tokio::test]
    async fn permits_are_released_by_cancelled_calls() -> Result<(), Status> {
        let limiter = Limiter::new(1, 1);
        let permit = limiter.acquire("principals/a", CallerKind::Principal)?;
        // A call whose future is dropped mid-way (deadline, client gone) gives its place back.
        let call = tokio::spawn(async move {
            let _held = permit;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        assert!(
            limiter
                .acquire("principals/a", CallerKind::Principal)
                .is_err()
        );
        call.abort();
        let _ = call.await;
        let _again = limiter.acquire("principals/a", CallerKind::Principal)?;
        Ok(())
    }
}

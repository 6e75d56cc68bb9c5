//! A follower: a consumer of an event stream (this slice's outbox, or another service's stream over
//! gRPC) that applies each event's effects exactly once.
//!
//! Its cursor (the last sequence applied) is stored in its own slice, in the transaction that writes
//! the effects of the events before it, so a crash repeats nothing that committed and loses nothing
//! that did not. Work that cannot sit inside that transaction (a call to another service, a write
//! through an RPC that opens its own) happens first, in [`Follow::prepare`], and must be idempotent:
//! it gets a request_id derived from the event ([`request_id`]), so doing it again after a crash
//! finds the first answer. Replicas may follow side by side: the cursor only moves from where a
//! batch started, so of two replicas applying the same events one commits and the other rolls back
//! and resubscribes.
//!
//! Scheduling's waitlist offers are the first user; Billing's charge posting (from Scheduling's
//! completed encounters) and the gateway's outbound messages are the next.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use pm_api::Event;
use sqlx::AnyConnection;
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::idempotency::derived_request_id;
use crate::outbox::{EventStream, Outbox};

/// Where a follower reads: a stream of the events after a sequence, in sequence order.
pub trait Source<E>: Send + Sync + 'static {
    /// Opens the stream of the events after `after`.
    fn subscribe(&self, after: i64) -> impl Future<Output = ApiResult<EventStream<E>>> + Send;
}

/// This slice's own outbox.
impl<E: Event> Source<E> for Outbox<E> {
    async fn subscribe(&self, after: i64) -> ApiResult<EventStream<E>> {
        Ok(self.stream(after, |_| true))
    }
}

/// What a follower does with each event.
pub trait Follow<E>: Send + Sync + 'static {
    /// What [`Follow::prepare`] hands to [`Follow::write`].
    type Effect: Send;

    /// Work outside any transaction: reads, calls to other services, writes made idempotent by
    /// `request_id` (derived from the event). `None`: nothing to write for this event.
    fn prepare(
        &self,
        event: &E,
        request_id: &str,
    ) -> impl Future<Output = ApiResult<Option<Self::Effect>>> + Send;

    /// Writes a prepared effect in the transaction that moves the cursor past its event.
    fn write(
        &self,
        conn: &mut AnyConnection,
        effect: Self::Effect,
    ) -> impl Future<Output = ApiResult<()>> + Send;
}

/// How a follower runs.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    /// Its name: the key of its cursor and the namespace of its request ids (`waitlist`).
    pub name: &'static str,
    /// The most events applied in one transaction.
    pub batch: usize,
    /// The least time between two batches: under a stream of events, a few larger transactions
    /// instead of one per event.
    pub pause: Duration,
    /// How long to wait before resubscribing after a failure (the source down, an effect failed).
    pub retry: Duration,
}

impl FollowerConfig {
    /// A follower named `name` with the defaults: batches of 100, no pause, retries after a second.
    pub fn named(name: &'static str) -> Self {
        Self {
            name,
            batch: 100,
            pause: Duration::ZERO,
            retry: Duration::from_secs(1),
        }
    }
}

/// The request_id of the work `follower` does for `event`: the same on every attempt.
pub fn request_id<E: Event>(follower: &str, event: &E) -> String {
    derived_request_id(&format!("follower:{follower}"), &[event.event_id()])
}

/// The follower's cursor: the last sequence it applied (0 before its first event).
pub async fn cursor(db: &Db, follower: &str) -> ApiResult<i64> {
    let mut conn = db.read().await?;
    let after: Option<i64> =
        sqlx::query_scalar("SELECT after_seq FROM follower_cursors WHERE follower = $1")
            .bind(follower)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(after.unwrap_or(0))
}

/// Moves the cursor from `from` to `to`, in the caller's transaction. Fails with ABORTED
/// `CURSOR_MOVED` when another replica moved it meanwhile (its effects are then the ones kept).
async fn advance(conn: &mut AnyConnection, follower: &str, from: i64, to: i64) -> ApiResult<()> {
    let moved = sqlx::query(
        "UPDATE follower_cursors SET after_seq = $1 WHERE follower = $2 AND after_seq = $3",
    )
    .bind(to)
    .bind(follower)
    .bind(from)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if moved == 1 {
        return Ok(());
    }
    // No row yet is a follower's first batch (from 0); any other miss is a replica's move.
    let created = if from == 0 {
        sqlx::query(
            "INSERT INTO follower_cursors (follower, after_seq) VALUES ($1, $2) \
             ON CONFLICT (follower) DO NOTHING",
        )
        .bind(follower)
        .bind(to)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    } else {
        0
    };
    if created == 1 {
        Ok(())
    } else {
        Err(ApiError::new(
            tonic::Code::Aborted,
            "CURSOR_MOVED",
            format!("another replica of follower {follower} applied these events first"),
        ))
    }
}

/// Applies `events` (in sequence order, from a stream that may repeat some) after cursor `after`:
/// prepares each one after the cursor, then writes every effect and moves the cursor in one
/// transaction. Returns the new cursor.
pub async fn apply<E: Event, F: Follow<E>>(
    db: &Db,
    config: &FollowerConfig,
    handler: &F,
    after: i64,
    events: &[E],
) -> ApiResult<i64> {
    let fresh: Vec<&E> = events.iter().filter(|e| e.sequence() > after).collect();
    let Some(last) = fresh.last().map(|e| e.sequence()) else {
        return Ok(after);
    };
    let mut effects = Vec::new();
    for event in &fresh {
        let request_id = request_id(config.name, *event);
        if let Some(effect) = handler.prepare(event, &request_id).await? {
            effects.push(effect);
        }
    }
    let mut tx = db.write(&format!("pm.follower.{}", config.name)).await?;
    for effect in effects {
        handler.write(tx.conn(), effect).await?;
    }
    advance(tx.conn(), config.name, after, last).await?;
    tx.commit().await?;
    Ok(last)
}

/// Follows `source` from the stored cursor until `shutdown`: each batch of ready events (at most
/// `config.batch`) is [`apply`]'d; a failure is logged (reason only: events carry PHI) and the
/// follower resubscribes from its stored cursor after `config.retry`.
pub fn spawn<E, S, F>(
    db: Db,
    config: FollowerConfig,
    source: S,
    handler: F,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    E: Event,
    S: Source<E>,
    F: Follow<E>,
{
    tokio::spawn(async move {
        loop {
            let outcome = tokio::select! {
                outcome = follow(&db, &config, &source, &handler) => outcome,
                _ = shutdown.cancelled() => return,
            };
            // A stream ended by the shutdown is no failure.
            if shutdown.is_cancelled() {
                return;
            }
            if let Err(err) = outcome {
                tracing::warn!(
                    follower = config.name,
                    reason = err.reason,
                    "a follower failed; resubscribing"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(config.retry) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    })
}

/// One subscription: from the stored cursor until the stream ends or something fails.
async fn follow<E: Event, S: Source<E>, F: Follow<E>>(
    db: &Db,
    config: &FollowerConfig,
    source: &S,
    handler: &F,
) -> ApiResult<()> {
    let mut after = cursor(db, config.name).await?;
    let mut batches = source
        .subscribe(after)
        .await?
        .ready_chunks(config.batch.max(1));
    while let Some(batch) = batches.next().await {
        let mut events = Vec::with_capacity(batch.len());
        let mut failure = None;
        for item in batch {
            match item {
                Ok(event) => events.push(event),
                Err(status) => {
                    failure = Some(status);
                    break;
                }
            }
        }
        after = apply(db, config, handler, after, &events).await?;
        if let Some(status) = failure {
            return Err(ApiError::new(
                status.code(),
                "SOURCE_FAILED",
                "the followed stream failed",
            ));
        }
        tokio::time::sleep(config.pause).await;
    }
    Ok(())
}

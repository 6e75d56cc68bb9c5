//! The transactional outbox: events are staged in the transaction of the change they describe
//! (both commit or neither does), given their sequence by the sequencer once committed, and read
//! back in sequence order by streams and followers. Delivery is the reader's cursor: nothing is
//! "sent" that a crash could lose, and a consumer that resumes after the last sequence it saw gets
//! every later event once (it may deduplicate on `event_id` when it cannot store its cursor
//! atomically with its own effects; [`crate::follower`] does store it so).
//!
//! Generic over the event message ([`Event`]): each service publishing events has the tables of
//! [`MIGRATIONS`] in its slice and one [`Outbox`] of its event type.
//!
//! Why a sequencer: a writer that chose its own sequence (max + 1) had to hold a slice-wide lock
//! until its commit, or a reader could see seq N+1 before N commits and skip N for good. Staging
//! takes no lock, so writers run side by side; one sequencer at a time ([`sequence`], under its own
//! write lock) numbers what has committed. Its task runs when this process commits events
//! ([`Outbox::committed`]), every [`SEQUENCER_POLL`] for other replicas' events and after a crash,
//! and once more at shutdown; after a run that numbered events it waits [`SEQUENCER_GATHER`], so
//! that a stream of writes is numbered in a few large runs.

use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use pm_api::Event;
use sqlx::{AnyConnection, Row};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::batch::Insert;
use crate::db::{Db, Migrations};
use crate::error::{ApiError, ApiResult};
use crate::time::{now_micros, to_timestamp};

/// The event tables (`outbox`, `outbox_staged`, `follower_cursors`; versions 1200-1299 of a slice).
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: || sqlx::migrate!("./migrations/events/sqlite"),
    postgres: || sqlx::migrate!("./migrations/events/postgres"),
};

/// A stream of events as tonic serves it (and as a follower reads it).
pub type EventStream<E> = Pin<Box<dyn tokio_stream::Stream<Item = Result<E, Status>> + Send>>;

/// The sequencer's write-lock scope (no organization is named like this).
const SEQUENCER_SCOPE: &str = "pm.outbox-sequencer";
/// Staged events moved per sequencer transaction.
const SEQUENCER_BATCH: i64 = 1000;
/// How often the sequencer looks for events nobody rang about (other replicas', a crash's).
pub const SEQUENCER_POLL: Duration = Duration::from_millis(250);
/// After a run that numbered events, the sequencer waits this long before the next: events are
/// published at most this much later under load, in fewer, larger runs (an idle slice's first
/// event goes at once).
pub const SEQUENCER_GATHER: Duration = Duration::from_millis(20);
/// How often a stream looks at the outbox when nothing rang (writes of other replicas).
pub const STREAM_POLL: Duration = Duration::from_millis(500);
/// Events a stream reads per query.
const STREAM_BATCH: i64 = 256;

/// Stages one event in the caller's write transaction: one insert, no lock.
pub async fn append<E: Event>(conn: &mut AnyConnection, event: E) -> ApiResult<()> {
    staging_insert(event).execute(conn).await
}

/// The statement [`append`] runs, for a write that sends its statements together
/// ([`crate::batch`]). The event gets its UUID (v7: time-ordered) and time here.
pub fn staging_insert<E: Event>(mut event: E) -> Insert {
    let time = now_micros();
    let id = uuid::Uuid::now_v7().to_string();
    event.set_sequence(0);
    event.stamp(id.clone(), to_timestamp(time));
    Insert::new(
        "outbox_staged",
        "INSERT INTO outbox_staged (id, time, body) VALUES ($1, $2, $3)",
        vec![id.into(), time.into(), event.encode_to_vec().into()],
    )
}

/// Moves every committed staged event into the outbox with the next sequences, in staging order;
/// returns how many it moved.
pub async fn sequence(db: &Db) -> ApiResult<usize> {
    // A look first, on a read connection: an idle slice never takes the write lock.
    let staged = {
        let mut conn = db.read().await?;
        sqlx::query("SELECT 1 AS one FROM outbox_staged LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?
    };
    if staged.is_none() {
        return Ok(0);
    }
    let mut total = 0;
    loop {
        let mut tx = db.write(SEQUENCER_SCOPE).await?;
        let head = head(tx.conn()).await?;
        let moved = sqlx::query(
            "INSERT INTO outbox (seq, id, time, body) \
             SELECT $1 + row_number() OVER (ORDER BY pos), id, time, body \
             FROM (SELECT pos, id, time, body FROM outbox_staged ORDER BY pos LIMIT $2) AS next",
        )
        .bind(head)
        .bind(SEQUENCER_BATCH)
        .execute(tx.conn())
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(total);
        }
        // Exactly the events just numbered (a staged event that committed meanwhile stays).
        sqlx::query("DELETE FROM outbox_staged WHERE id IN (SELECT id FROM outbox WHERE seq > $1)")
            .bind(head)
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        total += moved as usize;
        if (moved as i64) < SEQUENCER_BATCH {
            return Ok(total);
        }
    }
}

/// Up to `limit` events after `after`, in sequence order.
pub async fn read_after<E: Event>(
    conn: &mut AnyConnection,
    after: i64,
    limit: i64,
) -> ApiResult<Vec<E>> {
    let rows = sqlx::query("SELECT seq, body FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $2")
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            let body: Vec<u8> = row.try_get("body")?;
            let mut event = E::decode(body.as_slice())
                .map_err(|e| ApiError::internal("decoding an outbox event", &e))?;
            event.set_sequence(row.try_get("seq")?);
            Ok(event)
        })
        .collect()
}

/// The last sequence committed (0 when the outbox is empty).
pub async fn head(conn: &mut AnyConnection) -> ApiResult<i64> {
    Ok(
        sqlx::query("SELECT COALESCE(MAX(seq), 0) AS head FROM outbox")
            .fetch_one(&mut *conn)
            .await?
            .try_get("head")?,
    )
}

/// A slice's outbox of events `E`: its sequencer task and the doorbells that wake it and the
/// streams. Cheap to clone.
pub struct Outbox<E> {
    db: Db,
    /// Rung after a commit that staged events: wakes the sequencer.
    staged: Doorbell,
    /// Rung by the sequencer when it numbered events: wakes the streams.
    published: Doorbell,
    /// Ends the sequencer and the streams (a graceful drain would wait for open streams).
    shutdown: CancellationToken,
    /// The error domain of a stream's failure (`ErrorInfo.domain`).
    domain: &'static str,
    event: PhantomData<fn() -> E>,
}

impl<E> Clone for Outbox<E> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            staged: self.staged.clone(),
            published: self.published.clone(),
            shutdown: self.shutdown.clone(),
            domain: self.domain,
            event: PhantomData,
        }
    }
}

impl<E: Event> Outbox<E> {
    /// The outbox of `db`, with its sequencer running until `shutdown` (then once more).
    pub fn start(db: Db, domain: &'static str, shutdown: CancellationToken) -> Self {
        let outbox = Self {
            db,
            staged: Doorbell::default(),
            published: Doorbell::default(),
            shutdown,
            domain,
            event: PhantomData,
        };
        outbox.spawn_sequencer();
        outbox
    }

    /// Says that a write staging events committed: the sequencer numbers them now rather than at
    /// its next poll.
    pub fn committed(&self) {
        self.staged.ring();
    }

    /// The doorbell rung when events were numbered (by this process's sequencer).
    pub fn published(&self) -> &Doorbell {
        &self.published
    }

    /// The events after `after` that `keep` accepts, then every later one as it is numbered, until
    /// the receiver goes away or the server shuts down (the stream then ends with UNAVAILABLE: resume
    /// after the last sequence seen). Wakes on [`Outbox::published`] or every [`STREAM_POLL`].
    pub fn stream(&self, after: i64, keep: impl Fn(&E) -> bool + Send + 'static) -> EventStream<E> {
        let (sender, receiver) = mpsc::channel(64);
        let mut bell = self.published.subscribe();
        let (db, shutdown, domain) = (self.db.clone(), self.shutdown.clone(), self.domain);
        tokio::spawn(async move {
            let mut cursor = after;
            loop {
                let batch = async {
                    let mut conn = db.read().await?;
                    read_after::<E>(&mut conn, cursor, STREAM_BATCH).await
                }
                .await;
                let events = match batch {
                    Ok(events) => events,
                    Err(err) => {
                        let _ = sender.send(Err(err.into_status(domain))).await;
                        return;
                    }
                };
                let full = events.len() as i64 == STREAM_BATCH;
                for event in events {
                    cursor = event.sequence();
                    if !keep(&event) {
                        continue;
                    }
                    // A reader that stops reading must not hold the server's shutdown: a send
                    // waiting on a full channel gives way to it.
                    tokio::select! {
                        sent = sender.send(Ok(event)) => if sent.is_err() { return },
                        _ = shutdown.cancelled() => return,
                    }
                }
                if full {
                    continue;
                }
                tokio::select! {
                    _ = bell.changed() => {}
                    _ = tokio::time::sleep(STREAM_POLL) => {}
                    _ = sender.closed() => return,
                    _ = shutdown.cancelled() => {
                        let bye = Status::unavailable(
                            "the server is shutting down: resume after the last sequence seen",
                        );
                        // Said when there is room; a reader that stopped reading only sees the end.
                        let _ = sender.try_send(Err(bye));
                        return;
                    }
                }
            }
        });
        Box::pin(ReceiverStream::new(receiver))
    }

    /// Runs [`sequence`] whenever a commit rings (and every [`SEQUENCER_POLL`]), ringing
    /// `published` when it numbered events, until shutdown; then runs it once more.
    fn spawn_sequencer(&self) {
        let mut bell = self.staged.subscribe();
        let (db, published, shutdown) = (
            self.db.clone(),
            self.published.clone(),
            self.shutdown.clone(),
        );
        tokio::spawn(async move {
            loop {
                match sequence(&db).await {
                    Ok(0) => {}
                    Ok(_) => {
                        published.ring();
                        // Under a stream of writes, let events gather a moment: one run (a
                        // handful of round trips and a commit) then numbers many instead of a few.
                        tokio::select! {
                            _ = tokio::time::sleep(SEQUENCER_GATHER) => {}
                            _ = shutdown.cancelled() => break,
                        }
                    }
                    Err(err) => {
                        tracing::warn!(reason = err.reason, "the outbox sequencer failed; retrying")
                    }
                }
                tokio::select! {
                    _ = bell.changed() => {}
                    _ = tokio::time::sleep(SEQUENCER_POLL) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
            if let Ok(n) = sequence(&db).await
                && n > 0
            {
                published.ring();
            }
        });
    }
}

/// Wakes a task of this process: the sequencer when a write committed events, the streams when the
/// sequencer numbered some. Other replicas' events are found by polling.
#[derive(Clone)]
pub struct Doorbell {
    sender: watch::Sender<u64>,
}

impl Default for Doorbell {
    fn default() -> Self {
        Self {
            sender: watch::channel(0).0,
        }
    }
}

impl Doorbell {
    /// Rings after a commit.
    pub fn ring(&self) {
        self.sender.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees the next ring.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }
}

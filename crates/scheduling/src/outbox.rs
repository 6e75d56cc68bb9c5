//! The transactional outbox: events are staged in the transaction of the change they describe
//! (both commit or neither does), given their sequence by the sequencer once committed, and read
//! back in sequence order by the streaming RPCs. Delivery is the reader's cursor: nothing is "sent"
//! that a crash could lose, and a consumer that resumes after the last sequence it saw gets every
//! later event once (it may deduplicate on `event_id` when it cannot store its cursor atomically
//! with its own effects).
//!
//! Why a sequencer: a writer that chose its own sequence (max + 1) had to hold a slice-wide lock
//! until its commit, or a reader could see seq N+1 before N commits and skip N for good. Staging
//! takes no lock, so writers run side by side; one sequencer at a time ([`sequence`], under its own
//! write lock) numbers what has committed. Its task ([`spawn_sequencer`]) runs when this process
//! commits events (the `staged` doorbell), every [`SEQUENCER_POLL`] for other replicas' events and
//! after a crash, and once more at shutdown; after a run that numbered events it waits
//! [`SEQUENCER_GATHER`], so that a stream of writes is numbered in a few large runs.

use std::time::Duration;

use pm_api::scheduling::SchedulingEvent;
use pm_api::scheduling::scheduling_event::Kind as EventKind;
use pm_runtime::batch::Insert;
use pm_runtime::time::{now_micros, to_timestamp};
use pm_runtime::{ApiError, ApiResult, Db};
use prost::Message;
use sqlx::{AnyConnection, Row};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The sequencer's write-lock scope (no organization is named like this).
const SEQUENCER_SCOPE: &str = "pm.scheduling.outbox-sequencer";
/// Staged events moved per sequencer transaction.
const SEQUENCER_BATCH: i64 = 1000;
/// How often the sequencer looks for events nobody rang about (other replicas', a crash's).
pub const SEQUENCER_POLL: Duration = Duration::from_millis(250);

/// After a run that numbered events, the sequencer waits this long before the next: events are
/// published at most this much later under load, in fewer, larger runs (an idle slice's first
/// event goes at once).
pub const SEQUENCER_GATHER: Duration = Duration::from_millis(20);

/// Stages one event in the caller's write transaction: one insert, no lock.
pub async fn append(conn: &mut AnyConnection, kind: EventKind) -> ApiResult<()> {
    staging_insert(kind).execute(conn).await
}

/// The statement [`append`] runs, for a write that sends its statements together
/// ([`pm_runtime::batch`]).
pub fn staging_insert(kind: EventKind) -> Insert {
    let time = now_micros();
    let id = uuid::Uuid::now_v7().to_string();
    let event = SchedulingEvent {
        sequence: 0,
        event_id: id.clone(),
        time: Some(to_timestamp(time)),
        kind: Some(kind),
    };
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

/// Runs [`sequence`] whenever `staged` rings (and every [`SEQUENCER_POLL`]), ringing `published`
/// when it numbered events, until `shutdown`; then runs it once more.
pub fn spawn_sequencer(
    db: Db,
    staged: Doorbell,
    published: Doorbell,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut bell = staged.subscribe();
    tokio::spawn(async move {
        loop {
            match sequence(&db).await {
                Ok(0) => {}
                Ok(_) => {
                    published.ring();
                    // Under a stream of writes, let events gather a moment: one run (a handful of
                    // round trips and a commit) then numbers many instead of a few each time.
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
    })
}

/// Up to `limit` events after `after`, in sequence order.
pub async fn read_after(
    conn: &mut AnyConnection,
    after: i64,
    limit: i64,
) -> ApiResult<Vec<SchedulingEvent>> {
    let rows = sqlx::query("SELECT seq, body FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $2")
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            let body: Vec<u8> = row.try_get("body")?;
            let mut event = SchedulingEvent::decode(body.as_slice())
                .map_err(|e| ApiError::internal("decoding an outbox event", &e))?;
            event.sequence = row.try_get("seq")?;
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

/// Wakes a task of this process: the sequencer when a write committed events (`staged`), the streams
/// when the sequencer numbered some (`published`). Other replicas' events are found by polling.
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

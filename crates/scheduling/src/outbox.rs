//! The transactional outbox: events are appended in the transaction of the change they describe
//! (both commit or neither does), and read back in sequence order by the streaming RPCs. Delivery
//! is the reader's cursor: nothing is "sent" that a crash could lose, and a consumer that resumes
//! after the last sequence it saw gets every later event once (it may deduplicate on `event_id`
//! when it cannot store its cursor atomically with its own effects).

use pm_api::scheduling::SchedulingEvent;
use pm_api::scheduling::scheduling_event::Kind as EventKind;
use pm_runtime::time::{now_micros, to_timestamp};
use pm_runtime::{ApiError, ApiResult};
use prost::Message;
use sqlx::{AnyConnection, Row};
use tokio::sync::watch;

/// Advisory lock serializing sequence assignment on PostgreSQL (any constant unique in the slice).
const OUTBOX_LOCK_KEY: i64 = 0x6f75_7462_6f78; // "outbox"

/// Appends one event in the caller's write transaction; returns its sequence.
pub async fn append(conn: &mut AnyConnection, kind: EventKind) -> ApiResult<i64> {
    if conn.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS locked")
            .bind(OUTBOX_LOCK_KEY)
            .execute(&mut *conn)
            .await?;
    }
    let seq: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM outbox")
        .fetch_one(&mut *conn)
        .await?
        .try_get("next")?;
    let time = now_micros();
    let id = uuid::Uuid::now_v7().to_string();
    let event = SchedulingEvent {
        sequence: 0,
        event_id: id.clone(),
        time: Some(to_timestamp(time)),
        kind: Some(kind),
    };
    sqlx::query("INSERT INTO outbox (seq, id, time, body) VALUES ($1, $2, $3, $4)")
        .bind(seq)
        .bind(id)
        .bind(time)
        .bind(event.encode_to_vec())
        .execute(&mut *conn)
        .await?;
    Ok(seq)
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

/// Wakes the streams of this process when a write committed events (other replicas' writes are
/// seen by the streams' periodic poll).
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

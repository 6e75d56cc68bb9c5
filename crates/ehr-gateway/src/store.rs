//! The gateway's typed tables (see the migrations): the inbound message log, unique on (source,
//! control id), and the patient cross-references. SQL lives only here.

use pm_runtime::db::Migrations;
use pm_runtime::{ApiResult, Db};
use sqlx::Row;

/// The migration set of the gateway's tables.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: || sqlx::migrate!("./migrations/sqlite"),
    postgres: || sqlx::migrate!("./migrations/postgres"),
};

/// Where a logged message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Persisted and acknowledged AA; waiting to be applied.
    Received,
    /// Applied downstream.
    Applied,
    /// Answered AE/AR; never applied.
    Rejected,
    /// Refused downstream for good (the reason says why).
    Dead,
}

impl State {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Received => "received",
            State::Applied => "applied",
            State::Rejected => "rejected",
            State::Dead => "dead",
        }
    }

    fn parse(text: &str) -> Option<State> {
        match text {
            "received" => Some(State::Received),
            "applied" => Some(State::Applied),
            "rejected" => Some(State::Rejected),
            "dead" => Some(State::Dead),
            _ => None,
        }
    }
}

/// A message to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage<'a> {
    /// The source id.
    pub source: &'a str,
    /// MSH-10.
    pub control_id: &'a str,
    /// When it arrived (µs since the epoch).
    pub received_us: i64,
    /// MSH-9.1.
    pub message_type: &'a str,
    /// MSH-9.2.
    pub trigger_event: &'a str,
    /// The message as received (PHI: stored, never logged).
    pub raw: &'a str,
    /// `Received` (accepted) or `Rejected`.
    pub state: State,
    /// A stable reason for a rejection ("" otherwise).
    pub reason: &'a str,
    /// The ACK code sent: AA, AE or AR.
    pub ack_code: &'a str,
}

/// What logging a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Logged {
    /// Committed as a new row.
    New,
    /// The source already sent this control id: nothing written; the first ACK code.
    Duplicate {
        /// The ACK code the first copy got.
        ack_code: String,
    },
}

/// Logs an inbound message, committed when this returns (before its ACK is written). A second
/// copy of (source, control id) writes nothing and returns the first copy's ACK code.
pub async fn log(db: &Db, message: &NewMessage<'_>) -> ApiResult<Logged> {
    let mut tx = db.write_constrained().await?;
    let inserted = sqlx::query(
        "INSERT INTO inbound_messages (source, control_id, received_us, message_type, \
         trigger_event, raw, state, last_error, ack_code) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (source, control_id) DO NOTHING",
    )
    .bind(message.source)
    .bind(message.control_id)
    .bind(message.received_us)
    .bind(message.message_type)
    .bind(message.trigger_event)
    .bind(message.raw)
    .bind(message.state.as_str())
    .bind(message.reason)
    .bind(message.ack_code)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if inserted == 1 {
        tx.commit().await?;
        return Ok(Logged::New);
    }
    let ack_code: String = sqlx::query_scalar(
        "SELECT ack_code FROM inbound_messages WHERE source = $1 AND control_id = $2",
    )
    .bind(message.source)
    .bind(message.control_id)
    .fetch_one(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(Logged::Duplicate { ack_code })
}

/// One logged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    /// Row id (arrival order).
    pub id: i64,
    /// The source id.
    pub source: String,
    /// MSH-10.
    pub control_id: String,
    /// The raw message.
    pub raw: String,
    /// Its state.
    pub state: State,
    /// Apply attempts so far.
    pub attempts: i64,
    /// The last error's stable reason.
    pub last_error: String,
    /// The ACK code sent.
    pub ack_code: String,
}

/// A logged message by (source, control id).
pub async fn find(db: &Db, source: &str, control_id: &str) -> ApiResult<Option<LogRow>> {
    let mut conn = db.read().await?;
    let row = sqlx::query(
        "SELECT id, source, control_id, raw, state, attempts, last_error, ack_code \
         FROM inbound_messages WHERE source = $1 AND control_id = $2",
    )
    .bind(source)
    .bind(control_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| to_logged(&r)).transpose()
}

/// How many messages are logged (all states).
pub async fn count(db: &Db) -> ApiResult<i64> {
    let mut conn = db.read().await?;
    let n: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM inbound_messages")
        .fetch_one(&mut *conn)
        .await?;
    Ok(n)
}

fn to_logged(row: &sqlx::any::AnyRow) -> ApiResult<LogRow> {
    let state: String = row.try_get("state")?;
    Ok(LogRow {
        id: row.try_get("id")?,
        source: row.try_get("source")?,
        control_id: row.try_get("control_id")?,
        raw: row.try_get("raw")?,
        state: State::parse(&state).unwrap_or(State::Dead),
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        ack_code: row.try_get("ack_code")?,
    })
}

/// The messages waiting to be applied, oldest first (at most `limit`).
pub async fn pending(db: &Db, limit: i64) -> ApiResult<Vec<Pending>> {
    let mut conn = db.read().await?;
    let rows = sqlx::query(
        "SELECT id, source, raw, attempts, next_attempt_us FROM inbound_messages \
         WHERE state = 'received' ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Pending {
                id: r.try_get("id")?,
                source: r.try_get("source")?,
                raw: r.try_get("raw")?,
                attempts: r.try_get("attempts")?,
                next_attempt_us: r.try_get("next_attempt_us")?,
            })
        })
        .collect()
}

/// A message waiting to be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Row id.
    pub id: i64,
    /// The source id.
    pub source: String,
    /// The raw message.
    pub raw: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Not before this instant (µs).
    pub next_attempt_us: i64,
}

/// Marks a message applied and records the cross-reference to the patient it touched.
pub async fn applied(
    db: &Db,
    id: i64,
    source: &str,
    system: &str,
    value: &str,
    patient: &str,
) -> ApiResult<()> {
    let mut tx = db.write_constrained().await?;
    sqlx::query(
        "UPDATE inbound_messages SET state = 'applied', attempts = attempts + 1, last_error = '' \
         WHERE id = $1 AND state = 'received'",
    )
    .bind(id)
    .execute(tx.conn())
    .await?;
    sqlx::query(
        "INSERT INTO patient_xrefs (source, identifier_system, identifier_value, patient) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (source, identifier_system, identifier_value) \
         DO UPDATE SET patient = excluded.patient",
    )
    .bind(source)
    .bind(system)
    .bind(value)
    .bind(patient)
    .execute(tx.conn())
    .await?;
    tx.commit().await
}

/// Schedules another attempt at `next_us` after a transient failure (`reason` is PHI-free).
pub async fn retry_later(db: &Db, id: i64, next_us: i64, reason: &str) -> ApiResult<()> {
    let mut tx = db.write_constrained().await?;
    sqlx::query(
        "UPDATE inbound_messages SET attempts = attempts + 1, next_attempt_us = $1, \
         last_error = $2 WHERE id = $3 AND state = 'received'",
    )
    .bind(next_us)
    .bind(reason)
    .bind(id)
    .execute(tx.conn())
    .await?;
    tx.commit().await
}

/// Moves a message refused for good to `dead` with its reason.
pub async fn dead(db: &Db, id: i64, reason: &str) -> ApiResult<()> {
    let mut tx = db.write_constrained().await?;
    sqlx::query(
        "UPDATE inbound_messages SET state = 'dead', attempts = attempts + 1, last_error = $1 \
         WHERE id = $2 AND state = 'received'",
    )
    .bind(reason)
    .bind(id)
    .execute(tx.conn())
    .await?;
    tx.commit().await
}

/// The Org patient a source's identifier was last applied to.
pub async fn xref(db: &Db, source: &str, system: &str, value: &str) -> ApiResult<Option<String>> {
    let mut conn = db.read().await?;
    Ok(sqlx::query_scalar(
        "SELECT patient FROM patient_xrefs WHERE source = $1 AND identifier_system = $2 \
         AND identifier_value = $3",
    )
    .bind(source)
    .bind(system)
    .bind(value)
    .fetch_optional(&mut *conn)
    .await?)
}

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

//! The audit tables and every statement on the records: appending to the chain, staging the
//! records of writes and sealing them into it, and reading records back (the row encoding both
//! ways). Kept apart so that the SQL and its PostgreSQL/SQLite differences live in one place; the
//! verifier's walk over the same tables is in `verify`.

use std::borrow::Cow;
use std::collections::BTreeSet;

use pm_runtime::batch::Insert;
use pm_runtime::db::{Db, Migrations};
use pm_runtime::error::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};

use super::chain::{GENESIS_HASH, record_hash};
use super::{AuditEvent, Outcome, StoredAuditEvent};

/// The audit trail's tables (`audit_events`, `audit_patients`, `audit_checkpoints`, and
/// `audit_staged` where the records of writes wait to be sealed), version 1000 and up; open every
/// slice that serves PHI with these beside the service's own migrations.
pub const AUDIT_MIGRATIONS: Migrations = Migrations {
    sqlite: || sqlx::migrate!("./migrations/sqlite"),
    postgres: || sqlx::migrate!("./migrations/postgres"),
};

/// The advisory-lock key appenders serialize on (PostgreSQL): "pm.audit" in ASCII.
const CHAIN_LOCK_KEY: i64 = 0x706d_2e61_7564_6974;
/// Staged records moved into the chain per sealing transaction.
pub(super) const SEAL_BATCH: i64 = 500;
/// Largest page of [`accesses_to_patient`]; a page size of 0 means the default.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

pub(super) const EVENT_COLUMNS: &str = "seq, id, time, service, method, principal, on_behalf_of, \
     calling_service, resources, patients, source, purpose, outcome, status_code, prev_hash, hash";
const EVENT_COLUMNS_E: &str = "e.seq, e.id, e.time, e.service, e.method, e.principal, \
     e.on_behalf_of, e.calling_service, e.resources, e.patients, e.source, e.purpose, e.outcome, \
     e.status_code, e.prev_hash, e.hash";

// ---------------------------------------------------------------------------------------------
// Appending

fn is_postgres(conn: &AnyConnection) -> bool {
    conn.backend_name() == "PostgreSQL"
}

pub(super) async fn read_head(conn: &mut AnyConnection) -> ApiResult<Option<(i64, String)>> {
    let row = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| -> ApiResult<(i64, String)> { Ok((row.try_get("seq")?, row.try_get("hash")?)) })
        .transpose()
}

/// A record as inserted: the batch goes to the database as one JSON array, so that one statement
/// (prepared once per connection) inserts a batch of any size.
#[derive(Serialize)]
struct EventRow<'a> {
    seq: i64,
    id: &'a str,
    time: i64,
    service: &'a str,
    method: &'a str,
    principal: &'a str,
    on_behalf_of: Option<&'a str>,
    calling_service: Option<&'a str>,
    resources: String,
    patients: String,
    source: Option<&'a str>,
    purpose: Option<&'a str>,
    outcome: &'static str,
    status_code: i32,
    prev_hash: String,
    hash: String,
}

/// A row of the patient index.
#[derive(Serialize)]
struct IndexRow<'a> {
    patient: &'a str,
    time: i64,
    seq: i64,
}

/// PostgreSQL: both tables in one statement (a data-modifying CTE), from JSON arrays.
const INSERT_POSTGRES: &str = "WITH events AS (\
       INSERT INTO audit_events SELECT * FROM json_populate_recordset(NULL::audit_events, $1::json)) \
     INSERT INTO audit_patients (patient, time, seq) \
     SELECT patient, time, seq FROM json_populate_recordset(NULL::audit_patients, $2::json)";
/// SQLite: both tables in one round trip to the connection's thread (two statements). Rows go as
/// JSON arrays of positional arrays (see [`EventRow::positional`]): `->>` by index is cheaper than a
/// `json_extract` by key per column, and json_each keeps the array's order.
const INSERT_SQLITE: &str = "INSERT INTO audit_events (seq, id, time, service, method, \
     principal, on_behalf_of, calling_service, resources, patients, source, purpose, outcome, \
     status_code, prev_hash, hash) SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, \
     value ->> 4, value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, \
     value ->> 11, value ->> 12, value ->> 13, value ->> 14, value ->> 15 FROM json_each($1); \
     INSERT INTO audit_patients (patient, time, seq) \
     SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each($2)";

/// The columns of an [`EventRow`] in table order.
type PositionalEventRow<'r> = (
    i64,
    &'r str,
    i64,
    &'r str,
    &'r str,
    &'r str,
    Option<&'r str>,
    Option<&'r str>,
    &'r str,
    &'r str,
    Option<&'r str>,
    Option<&'r str>,
    &'static str,
    i32,
    &'r str,
    &'r str,
);

impl<'a> EventRow<'a> {
    fn positional(&self) -> PositionalEventRow<'_> {
        (
            self.seq,
            self.id,
            self.time,
            self.service,
            self.method,
            self.principal,
            self.on_behalf_of,
            self.calling_service,
            &self.resources,
            &self.patients,
            self.source,
            self.purpose,
            self.outcome,
            self.status_code,
            &self.prev_hash,
            &self.hash,
        )
    }
}

impl IndexRow<'_> {
    fn positional(&self) -> (&str, i64, i64) {
        (self.patient, self.time, self.seq)
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> ApiResult<String> {
    serde_json::to_string(value).map_err(|e| ApiError::internal("encoding an audit record", &e))
}

/// Appends `events` to the chain in the caller's transaction, so that they commit with it or not at
/// all. The sealer and the [`AuditWriter`](super::AuditWriter)'s batches use it; a PHI write
/// stages its record with [`stage`] instead, which takes no lock.
///
/// Must run inside a transaction: on PostgreSQL one at READ COMMITTED (the default), where this
/// takes the chain's advisory lock until the transaction ends (call it last, right before commit);
/// on SQLite one begun with `Db::write` or `Db::write_dedicated`, whose writer lock serializes
/// appenders.
pub async fn append(conn: &mut AnyConnection, events: &[AuditEvent]) -> ApiResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    require_transaction(conn, "appending audit records")?;
    lock_chain(conn).await?;
    append_locked(conn, events).await
}

fn require_transaction(conn: &mut AnyConnection, context: &str) -> ApiResult<()> {
    if conn.is_in_transaction() {
        Ok(())
    } else {
        Err(ApiError::internal(
            context,
            &"audit records must be written inside a transaction",
        ))
    }
}

/// PostgreSQL: takes the chain's advisory lock until the transaction ends (on SQLite the caller's
/// writer lock does this).
pub(super) async fn lock_chain(conn: &mut AnyConnection) -> ApiResult<()> {
    if is_postgres(conn) {
        sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS locked")
            .bind(CHAIN_LOCK_KEY)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// [`append`] once the chain is the caller's (see [`lock_chain`]).
pub(super) async fn append_locked(
    conn: &mut AnyConnection,
    events: &[AuditEvent],
) -> ApiResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let postgres = is_postgres(conn);
    let (head_seq, head_hash) = read_head(conn)
        .await?
        .unwrap_or_else(|| (0, GENESIS_HASH.to_string()));

    let mut rows = Vec::with_capacity(events.len());
    let mut index = Vec::new();
    let mut seq = head_seq;
    let mut prev_hash = head_hash;
    for event in events {
        seq = seq
            .checked_add(1)
            .ok_or_else(|| ApiError::internal("appending audit records", &"seq overflow"))?;
        let hash = record_hash(&prev_hash, seq, event);
        let (outcome, status_code) = event.outcome.columns();
        let patients: BTreeSet<&str> = event.patients.iter().map(String::as_str).collect();
        index.extend(patients.into_iter().map(|patient| IndexRow {
            patient,
            time: event.time,
            seq,
        }));
        rows.push(EventRow {
            seq,
            id: &event.id,
            time: event.time,
            service: &event.service,
            method: &event.method,
            principal: &event.principal,
            on_behalf_of: event.on_behalf_of.as_deref(),
            calling_service: event.calling_service.as_deref(),
            resources: to_json(&event.resources)?,
            patients: to_json(&event.patients)?,
            source: event.source.as_deref(),
            purpose: event.purpose.as_deref(),
            outcome,
            status_code,
            prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
            hash,
        });
    }

    let (rows, index) = if postgres {
        (to_json(&rows)?, to_json(&index)?)
    } else {
        let rows: Vec<_> = rows.iter().map(EventRow::positional).collect();
        let index: Vec<_> = index.iter().map(IndexRow::positional).collect();
        (to_json(&rows)?, to_json(&index)?)
    };
    let insert = if postgres {
        INSERT_POSTGRES
    } else {
        INSERT_SQLITE
    };
    sqlx::query(insert)
        .bind(rows)
        .bind(index)
        .execute(&mut *conn)
        .await?;

    tracing::debug!(
        count = events.len(),
        first_seq = head_seq + 1,
        last_seq = seq,
        "audit records appended"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Staging and sealing

/// A staged record: the [`AuditEvent`] as the JSON object `audit_staged.body` holds.
#[derive(Serialize, Deserialize)]
struct StagedRecord<'a> {
    id: Cow<'a, str>,
    time: i64,
    service: Cow<'a, str>,
    method: Cow<'a, str>,
    principal: Cow<'a, str>,
    on_behalf_of: Option<Cow<'a, str>>,
    calling_service: Option<Cow<'a, str>>,
    resources: Cow<'a, [String]>,
    patients: Cow<'a, [String]>,
    source: Option<Cow<'a, str>>,
    purpose: Option<Cow<'a, str>>,
    outcome: Cow<'a, str>,
    status_code: i32,
}

impl<'a> StagedRecord<'a> {
    fn of(event: &'a AuditEvent) -> StagedRecord<'a> {
        let (outcome, status_code) = event.outcome.columns();
        StagedRecord {
            id: Cow::Borrowed(&event.id),
            time: event.time,
            service: Cow::Borrowed(&event.service),
            method: Cow::Borrowed(&event.method),
            principal: Cow::Borrowed(&event.principal),
            on_behalf_of: event.on_behalf_of.as_deref().map(Cow::Borrowed),
            calling_service: event.calling_service.as_deref().map(Cow::Borrowed),
            resources: Cow::Borrowed(&event.resources),
            patients: Cow::Borrowed(&event.patients),
            source: event.source.as_deref().map(Cow::Borrowed),
            purpose: event.purpose.as_deref().map(Cow::Borrowed),
            outcome: Cow::Borrowed(outcome),
            status_code,
        }
    }

    fn into_event(self) -> Option<AuditEvent> {
        Some(AuditEvent {
            outcome: Outcome::from_columns(&self.outcome, self.status_code)?,
            id: self.id.into_owned(),
            time: self.time,
            service: self.service.into_owned(),
            method: self.method.into_owned(),
            principal: self.principal.into_owned(),
            on_behalf_of: self.on_behalf_of.map(Cow::into_owned),
            calling_service: self.calling_service.map(Cow::into_owned),
            resources: self.resources.into_owned(),
            patients: self.patients.into_owned(),
            source: self.source.map(Cow::into_owned),
            purpose: self.purpose.map(Cow::into_owned),
        })
    }
}

/// PostgreSQL: one row per element of the JSON array, numbered in the array's order.
const STAGE_POSTGRES: &str = "INSERT INTO audit_staged (body) \
     SELECT r.body::text FROM json_array_elements($1::json) WITH ORDINALITY AS r(body, n) ORDER BY r.n";
/// SQLite: json_each walks the array in order (`key` is the index).
const STAGE_SQLITE: &str =
    "INSERT INTO audit_staged (body) SELECT value FROM json_each($1) ORDER BY key";

/// Stages `events` in the caller's transaction (the one holding the change they describe), so that
/// they commit with it or not at all; [`seal`] later moves them into the chain.
///
/// One INSERT: no lock and no read of the chain's head, so concurrent writes do not wait for each
/// other. Must run inside a transaction.
pub async fn stage(conn: &mut AnyConnection, events: &[AuditEvent]) -> ApiResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    require_transaction(conn, "staging audit records")?;
    let records: Vec<StagedRecord<'_>> = events.iter().map(StagedRecord::of).collect();
    let insert = if is_postgres(conn) {
        STAGE_POSTGRES
    } else {
        STAGE_SQLITE
    };
    sqlx::query(insert)
        .bind(to_json(&records)?)
        .execute(&mut *conn)
        .await?;
    tracing::debug!(count = events.len(), "audit records staged");
    Ok(())
}

/// The statement that stages one record, for a write that sends its statements together
/// ([`pm_runtime::batch`]): the same row [`stage`] writes, with no lock either.
pub fn staging_insert(event: &AuditEvent) -> ApiResult<Insert> {
    Ok(Insert::new(
        "audit_staged",
        "INSERT INTO audit_staged (body) VALUES ($1)",
        vec![to_json(&StagedRecord::of(event))?.into()],
    ))
}

/// The newest staged record's id, if any record is staged (a transaction of its own: on SQLite a
/// read that later wrote could not upgrade if another process wrote in between).
async fn newest_staged(db: &Db) -> ApiResult<Option<i64>> {
    let mut tx = db.write_dedicated().await?;
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM audit_staged")
        .fetch_one(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(newest)
}

/// Moves the oldest staged records (at most [`SEAL_BATCH`], none newer than `up_to`) into the chain
/// in the caller's transaction (on SQLite one holding the writer lock; call it first, so that the
/// transaction's first statement writes). Returns how many it moved.
pub(super) async fn seal_batch(conn: &mut AnyConnection, up_to: i64) -> ApiResult<usize> {
    // Lock first: the DELETE then sees every staged row another sealer already moved as gone.
    lock_chain(conn).await?;
    let rows = sqlx::query(
        "DELETE FROM audit_staged WHERE id IN \
         (SELECT id FROM audit_staged WHERE id <= $1 ORDER BY id LIMIT $2) RETURNING id, body",
    )
    .bind(up_to)
    .bind(SEAL_BATCH)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut staged = rows
        .iter()
        .map(|row| -> ApiResult<(i64, String)> { Ok((row.try_get("id")?, row.try_get("body")?)) })
        .collect::<ApiResult<Vec<_>>>()?;
    staged.sort_unstable_by_key(|(id, _)| *id);
    let events = staged
        .iter()
        .map(|(id, body)| {
            // The parse error is not passed on: it could quote the record's content.
            serde_json::from_str::<StagedRecord<'_>>(body)
                .ok()
                .and_then(StagedRecord::into_event)
                .ok_or_else(|| {
                    ApiError::internal(
                        "sealing audit records",
                        &format_args!("staged record {id} is malformed"),
                    )
                })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    append_locked(conn, &events).await?;
    Ok(events.len())
}

/// Seals: moves every record staged (and committed) before the call into the chain, oldest first,
/// a bounded batch per transaction on the slice's dedicated connection, each batch appended as
/// [`append`] appends and deleted from `audit_staged` in the same transaction. Returns how many it
/// sealed. Safe to run from several replicas at once (see the [`audit`](super) module
/// documentation); records staged while it runs may be left for the next seal.
pub async fn seal(db: &Db) -> ApiResult<usize> {
    let Some(up_to) = newest_staged(db).await? else {
        return Ok(0);
    };
    let mut sealed = 0;
    loop {
        let mut tx = db.write_dedicated().await?;
        let moved = seal_batch(tx.conn(), up_to).await?;
        tx.commit().await?;
        sealed += moved;
        if moved < SEAL_BATCH as usize {
            break;
        }
    }
    if sealed > 0 {
        tracing::debug!(count = sealed, "staged audit records sealed");
    }
    Ok(sealed)
}

// ---------------------------------------------------------------------------------------------
// Reading records

/// A row decoded as far as it goes: `event` is `None` when its content cannot be a record (invalid
/// JSON, unknown outcome), which the verifier reports as tampering.
pub(super) struct RawRecord {
    pub(super) seq: i64,
    pub(super) id: String,
    pub(super) event: Option<AuditEvent>,
    pub(super) prev_hash: String,
    pub(super) hash: String,
}

pub(super) fn decode_raw(row: &AnyRow) -> ApiResult<RawRecord> {
    // Only seq must decode (it is the integer key); whatever else an attacker made unreadable
    // (a string in an integer column on SQLite) is reported against its record.
    let id: String = row.try_get("id").unwrap_or_default();
    let content = (|| {
        let resources: String = row.try_get("resources").ok()?;
        let patients: String = row.try_get("patients").ok()?;
        let outcome: String = row.try_get("outcome").ok()?;
        Some(AuditEvent {
            id: row.try_get("id").ok()?,
            time: row.try_get("time").ok()?,
            service: row.try_get("service").ok()?,
            method: row.try_get("method").ok()?,
            principal: row.try_get("principal").ok()?,
            on_behalf_of: row.try_get("on_behalf_of").ok()?,
            calling_service: row.try_get("calling_service").ok()?,
            resources: serde_json::from_str(&resources).ok()?,
            patients: serde_json::from_str(&patients).ok()?,
            source: row.try_get("source").ok()?,
            purpose: row.try_get("purpose").ok()?,
            outcome: Outcome::from_columns(&outcome, row.try_get("status_code").ok()?)?,
        })
    })();
    Ok(RawRecord {
        seq: row.try_get("seq")?,
        id,
        event: content,
        prev_hash: row.try_get("prev_hash").unwrap_or_default(),
        hash: row.try_get("hash").unwrap_or_default(),
    })
}

fn decode_stored(row: &AnyRow) -> ApiResult<StoredAuditEvent> {
    let raw = decode_raw(row)?;
    let event = raw.event.ok_or_else(|| {
        ApiError::internal(
            "reading audit records",
            &format_args!("record {} is malformed", raw.seq),
        )
    })?;
    Ok(StoredAuditEvent {
        seq: raw.seq,
        event,
        prev_hash: raw.prev_hash,
        hash: raw.hash,
    })
}

/// The records after `after_seq` in chain order, at most `limit` (0 means 100; at most 1000): pages
/// through the whole trail, e.g. to export it. Seals first (see [`seal`]).
pub async fn records(db: &Db, after_seq: i64, limit: usize) -> ApiResult<Vec<StoredAuditEvent>> {
    let limit = match limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    seal(db).await?;
    let mut conn = db.read().await?;
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
    ))
    .bind(after_seq)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode_stored).collect()
}

/// Who accessed `patient` (a resource name) in `[from_micros, to_micros)`: one page of records in
/// time order (then seq), and the cursor of the next page (pass it as `after_seq`), if any.
/// `page_size` 0 means 100; at most 1000. Seals first (see [`seal`]), so that a write committed
/// before the call is in the answer.
pub async fn accesses_to_patient(
    db: &Db,
    patient: &str,
    from_micros: i64,
    to_micros: i64,
    page_size: usize,
    after_seq: Option<i64>,
) -> ApiResult<(Vec<StoredAuditEvent>, Option<i64>)> {
    if to_micros < from_micros {
        return Err(ApiError::invalid(
            "to_time",
            "must not be before the start of the interval",
        ));
    }
    let page_size = match page_size {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let limit = i64::try_from(page_size + 1).unwrap_or(i64::MAX);
    seal(db).await?;
    let mut conn = db.read().await?;
    let rows = match after_seq {
        None => {
            let sql = format!(
                "SELECT {EVENT_COLUMNS_E} FROM audit_patients p JOIN audit_events e ON e.seq = p.seq \
                 WHERE p.patient = $1 AND p.time >= $2 AND p.time < $3 \
                 ORDER BY p.time, p.seq LIMIT $4"
            );
            sqlx::query(&sql)
                .bind(patient)
                .bind(from_micros)
                .bind(to_micros)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
        }
        Some(cursor) => {
            let time: Option<i64> = sqlx::query_scalar(
                "SELECT time FROM audit_patients WHERE patient = $1 AND seq = $2",
            )
            .bind(patient)
            .bind(cursor)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(time) = time else {
                return Err(ApiError::invalid(
                    "after_seq",
                    "is not a position of this patient's accesses",
                ));
            };
            let sql = format!(
                "SELECT {EVENT_COLUMNS_E} FROM audit_patients p JOIN audit_events e ON e.seq = p.seq \
                 WHERE p.patient = $1 AND p.time >= $2 AND p.time < $3 \
                 AND (p.time > $4 OR (p.time = $4 AND p.seq > $5)) \
                 ORDER BY p.time, p.seq LIMIT $6"
            );
            sqlx::query(&sql)
                .bind(patient)
                .bind(from_micros.max(time))
                .bind(to_micros)
                .bind(time)
                .bind(cursor)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
        }
    };
    let mut events = rows
        .iter()
        .map(decode_stored)
        .collect::<ApiResult<Vec<_>>>()?;
    let next = if events.len() > page_size {
        events.truncate(page_size);
        events.last().map(|e| e.seq)
    } else {
        None
    };
    Ok((events, next))
}

//! The HIPAA audit trail (45 CFR 164.312(b)): every call that reads or writes PHI leaves a record of
//! who (principal, on behalf of, calling service), what (method, resource names), which patients,
//! when, from where, why (purpose of use) and with what outcome, denials included.
//!
//! # Durability
//! - A write stages its record with [`stage`] in the transaction of the change, so both commit or
//!   neither does: one INSERT into `audit_staged`, with no lock and no read of the chain's head, so
//!   that the PHI writes of a slice never wait for each other on the chain.
//! - A single sealer at a time ([`seal`]) orders the committed staged records into the chain: oldest
//!   first, hashed and indexed exactly as [`append`] appends, and deleted from `audit_staged` in the
//!   same transaction, so each is sealed exactly once. The [`AuditWriter`] task seals before every
//!   batch it writes (in the batch's transaction), every [`SEAL_INTERVAL`] when idle (a one-query
//!   check when nothing is staged), and once more when it stops.
//! - A read hands its record to an [`AuditWriter`] and answers only once [`AuditWriter::record`] has
//!   returned, i.e. once the record's transaction committed; if it cannot be written the read fails.
//!   The writer commits whatever is queued in one transaction (group commit), so that one commit
//!   (and its fsync) serves many reads.
//! - Every reader of the trail ([`records`], [`accesses_to_patient`], [`verify`]) seals first, so
//!   it sees the record of every write committed before it was called.
//!
//! # Tamper evidence
//! Records form one hash chain per database slice: `seq` is the gapless position (1, 2, 3, ...), and
//!
//! ```text
//! hash(seq) = lowercase_hex(SHA-256(str(prev_hash) || canonical(record)))
//! prev_hash(1) = "000...000" (64 zeros), prev_hash(seq) = hash(seq - 1)
//!
//! canonical(record) = str("pm.audit.v1") || i64(seq) || str(id) || i64(time) || str(service)
//!     || str(method) || str(principal) || opt(on_behalf_of) || opt(calling_service)
//!     || list(resources) || list(patients) || opt(source) || opt(purpose)
//!     || str(outcome) || i32(status_code)
//!
//! i64(x), i32(x) = big-endian two's complement (8 and 4 bytes)
//! str(s)         = u32 big-endian length of the UTF-8 bytes || the UTF-8 bytes
//! opt(None)      = 0x00;  opt(Some(s)) = 0x01 || str(s)
//! list(xs)       = u32 big-endian count || str(x) for each x, in the stored order
//! outcome        = "success" (status_code 0) | "denied" (status_code 7) | "failed" (its code)
//! ```
//!
//! Every field is length-prefixed, so no two distinct records encode alike. A [`Checkpoint`] is an
//! Ed25519 signature over [`checkpoint_message`] (the head's seq and hash, the key id and the time),
//! taken periodically with [`checkpoint`]; copies shipped off the database (logs, object storage)
//! also catch an attacker who deletes the tail together with the checkpoints after it.
//!
//! [`verify`] walks the chain in pages and names the first problem: an edited record
//! ([`VerifyReport::Tampered`]), a deleted one ([`VerifyReport::Missing`]), a moved one
//! ([`VerifyReport::OutOfOrder`]), a patient index row that does not match its record
//! ([`VerifyReport::IndexMismatch`]) or a checkpoint that is forged or points past the end of a
//! truncated chain ([`VerifyReport::BadCheckpoint`]). On PostgreSQL the tables are also append-only
//! at the database level (triggers raise on UPDATE, DELETE and TRUNCATE; SQLite has the same
//! triggers); an owner or superuser can disable them, which is what the chain is for.
//!
//! A staged record is not in the chain yet: `audit_staged` refuses UPDATE but must allow DELETE (the
//! sealer's), so whoever can write the database can remove or edit (delete and re-insert) a record
//! there without a trace until it is sealed. That window is the time from the write's commit to the
//! next seal: at most about [`SEAL_INTERVAL`] while a service's audit writer runs, and any read of
//! the trail closes it first.
//!
//! # Serialization
//! The chain has one head, so appenders take turns: on PostgreSQL [`append`] takes a
//! transaction-scoped advisory lock on a constant key (held until the caller's transaction ends); on
//! SQLite the caller must be inside `Db::write` or `Db::write_dedicated`, whose writer lock admits one
//! writer per file. Either way the primary key on `seq` turns any misuse into an error, never into a
//! fork of the chain. The appenders are the sealer and the writer's batches, both on the slice's
//! dedicated connection, so PHI writes no longer queue for the lock.
//!
//! Several replicas may seal at once: a sealer takes the chain's lock before it reads the staged
//! records (PostgreSQL, READ COMMITTED: each statement sees what committed before it began, so the
//! records another sealer moved are gone), and on SQLite the file's single writer orders them. The
//! chain's order is the order of sealing: within a seal, the staged records' insertion order; a
//! record whose transaction committed late (PostgreSQL numbers a staged row at its INSERT, not at
//! its commit) is sealed by a later round, after records staged after it. Its `time` keeps when
//! the call happened.
//!
//! # Logging
//! Nothing here logs record contents (not even resource names): only counts and seq numbers.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use pm_runtime::batch::Insert;
use pm_runtime::db::{Db, Migrations};
use pm_runtime::error::{ApiError, ApiResult};
use pm_runtime::time::now_micros;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tonic::Code;

/// The audit trail's tables (`audit_events`, `audit_patients`, `audit_checkpoints`, and
/// `audit_staged` where the records of writes wait to be sealed), version 1000 and up; open every
/// slice that serves PHI with these beside the service's own migrations.
pub const AUDIT_MIGRATIONS: Migrations = Migrations {
    sqlite: || sqlx::migrate!("./migrations/sqlite"),
    postgres: || sqlx::migrate!("./migrations/postgres"),
};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The advisory-lock key appenders serialize on (PostgreSQL): "pm.audit" in ASCII.
const CHAIN_LOCK_KEY: i64 = 0x706d_2e61_7564_6974;
/// The write scope taken to insert a checkpoint (not an organization name: it holds a dot).
const CHECKPOINT_SCOPE: &str = "pm.audit/checkpoints";
const RECORD_TAG: &str = "pm.audit.v1";
const CHECKPOINT_TAG: &str = "pm.audit.checkpoint.v1";
/// Records per page when walking the chain.
const VERIFY_PAGE: i64 = 500;
/// Checkpoints per page when walking the chain.
const CHECKPOINT_PAGE: i64 = 256;
/// Staged records moved into the chain per sealing transaction.
const SEAL_BATCH: i64 = 500;
/// How often an [`AuditWriter`] seals staged records when no read gives it a batch to seal them with.
pub const SEAL_INTERVAL: Duration = Duration::from_millis(200);
/// The longest an [`AuditWriter`] waits between attempts while sealing keeps failing.
const SEAL_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Largest page of [`accesses_to_patient`]; a page size of 0 means the default.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

const EVENT_COLUMNS: &str = "seq, id, time, service, method, principal, on_behalf_of, \
     calling_service, resources, patients, source, purpose, outcome, status_code, prev_hash, hash";
const EVENT_COLUMNS_E: &str = "e.seq, e.id, e.time, e.service, e.method, e.principal, \
     e.on_behalf_of, e.calling_service, e.resources, e.patients, e.source, e.purpose, e.outcome, \
     e.status_code, e.prev_hash, e.hash";

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served (`status_code` 0).
    Success,
    /// Refused by authorization (PERMISSION_DENIED, `status_code` 7).
    Denied,
    /// Failed with this gRPC status code (including UNAUTHENTICATED, 16).
    Failed {
        /// The gRPC status code.
        code: i32,
    },
}

impl Outcome {
    /// The outcome of a call that ended with `code`.
    pub fn from_code(code: Code) -> Outcome {
        match code {
            Code::Ok => Outcome::Success,
            Code::PermissionDenied => Outcome::Denied,
            other => Outcome::Failed { code: other as i32 },
        }
    }

    /// The stored form: (`outcome`, `status_code`).
    fn columns(self) -> (&'static str, i32) {
        match self {
            Outcome::Success => ("success", 0),
            Outcome::Denied => ("denied", Code::PermissionDenied as i32),
            Outcome::Failed { code } => ("failed", code),
        }
    }

    fn from_columns(outcome: &str, status_code: i32) -> Option<Outcome> {
        match outcome {
            "success" => Some(Outcome::Success),
            "denied" => Some(Outcome::Denied),
            "failed" => Some(Outcome::Failed { code: status_code }),
            _ => None,
        }
    }
}

/// One audited call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// UUIDv7.
    pub id: String,
    /// When, in microseconds since the Unix epoch (UTC).
    pub time: i64,
    /// The service that served the call (the observer), e.g. `org`.
    pub service: String,
    /// The full gRPC method, e.g. `/pm.org.v1.OrgService/GetPatient`.
    pub method: String,
    /// Who: the authenticated principal (the token's subject, or the peer's identity).
    pub principal: String,
    /// The principal the caller acts for, when it acts for someone else.
    pub on_behalf_of: Option<String>,
    /// The peer service (its SPIFFE id) when the call came through another service.
    pub calling_service: Option<String>,
    /// The resource names the call read or wrote.
    pub resources: Vec<String>,
    /// The patients (resource names) whose PHI the call touched.
    pub patients: Vec<String>,
    /// From where: the peer's network address.
    pub source: Option<String>,
    /// Purpose of use, an HL7 v3 PurposeOfUse code (`TREAT`, `HPAYMT`, `HOPERAT`, `ETREAT`, ...).
    pub purpose: Option<String>,
    /// How the call ended.
    pub outcome: Outcome,
}

impl AuditEvent {
    /// A record stamped now with a fresh UUIDv7; fill in the rest with struct update syntax.
    pub fn new(
        service: impl Into<String>,
        method: impl Into<String>,
        principal: impl Into<String>,
        outcome: Outcome,
    ) -> AuditEvent {
        AuditEvent {
            id: uuid::Uuid::now_v7().to_string(),
            time: now_micros(),
            service: service.into(),
            method: method.into(),
            principal: principal.into(),
            on_behalf_of: None,
            calling_service: None,
            resources: Vec::new(),
            patients: Vec::new(),
            source: None,
            purpose: None,
            outcome,
        }
    }
}

/// A record as stored: its place in the chain and its hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditEvent {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// The record.
    pub event: AuditEvent,
    /// The hash of the record before (64 zeros for the first).
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// A signed statement that the chain's record `seq` has hash `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The head's seq when signed.
    pub seq: i64,
    /// The head's hash.
    pub hash: String,
    /// Hex of the Ed25519 signature of [`checkpoint_message`].
    pub signature: String,
    /// Names the verifying key.
    pub key_id: String,
    /// When it was signed (microseconds).
    pub time: i64,
}

/// What is wrong with a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFault {
    /// The signature does not verify with the named key (or is malformed).
    BadSignature,
    /// No verifying key has this key id.
    UnknownKey,
    /// The chain's record at the checkpoint's seq has another hash.
    HashMismatch,
    /// The checkpoint is past the chain's last record: the tail was truncated.
    BeyondHead,
    /// The checkpoint's seq is not a position of the chain (zero or negative).
    NotInChain,
}

/// The result of [`verify`]: counts, or the first problem found and the record it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyReport {
    /// Every record and checkpoint checks out.
    Ok {
        /// Records walked.
        records: u64,
        /// Checkpoints verified.
        checkpoints: u64,
        /// The last record's seq (0 when empty).
        head_seq: i64,
        /// The last record's hash ([`GENESIS_HASH`] when empty); compare with an off-site copy.
        head_hash: String,
    },
    /// The record's content does not match its hash: it was edited.
    Tampered {
        /// Its seq.
        seq: i64,
        /// Its id.
        id: String,
    },
    /// Records after `after_seq` are missing: deleted.
    Missing {
        /// The last seq before the gap.
        after_seq: i64,
    },
    /// The record does not link to the one before it (its `prev_hash` differs): moved, or the record
    /// before it was replaced.
    OutOfOrder {
        /// Its seq.
        seq: i64,
        /// Its id.
        id: String,
    },
    /// The patient index rows of the record do not match its patients and time.
    IndexMismatch {
        /// Its seq.
        seq: i64,
    },
    /// A checkpoint is forged or does not match the chain.
    BadCheckpoint {
        /// The checkpoint's seq.
        seq: i64,
        /// What is wrong with it.
        fault: CheckpointFault,
    },
}

impl VerifyReport {
    /// Whether the chain checked out.
    pub fn is_ok(&self) -> bool {
        matches!(self, VerifyReport::Ok { .. })
    }

    /// The seq the problem concerns (`None` when OK).
    pub fn problem_seq(&self) -> Option<i64> {
        match self {
            VerifyReport::Ok { .. } => None,
            VerifyReport::Tampered { seq, .. }
            | VerifyReport::OutOfOrder { seq, .. }
            | VerifyReport::IndexMismatch { seq }
            | VerifyReport::BadCheckpoint { seq, .. } => Some(*seq),
            VerifyReport::Missing { after_seq } => Some(after_seq + 1),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical encoding and hashes

fn put_str(out: &mut Vec<u8>, s: &str) {
    // A record's field never nears 4 GiB (requests are limited far below), so the length fits.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn put_list(out: &mut Vec<u8>, items: &[String]) {
    let count = u32::try_from(items.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for item in items {
        put_str(out, item);
    }
}

/// The canonical encoding of record `seq` (see the module documentation).
pub fn canonical_bytes(seq: i64, event: &AuditEvent) -> Vec<u8> {
    let (outcome, status_code) = event.outcome.columns();
    let mut out = Vec::with_capacity(256);
    put_str(&mut out, RECORD_TAG);
    out.extend_from_slice(&seq.to_be_bytes());
    put_str(&mut out, &event.id);
    out.extend_from_slice(&event.time.to_be_bytes());
    put_str(&mut out, &event.service);
    put_str(&mut out, &event.method);
    put_str(&mut out, &event.principal);
    put_opt(&mut out, event.on_behalf_of.as_deref());
    put_opt(&mut out, event.calling_service.as_deref());
    put_list(&mut out, &event.resources);
    put_list(&mut out, &event.patients);
    put_opt(&mut out, event.source.as_deref());
    put_opt(&mut out, event.purpose.as_deref());
    put_str(&mut out, outcome);
    out.extend_from_slice(&status_code.to_be_bytes());
    out
}

/// `lowercase_hex(SHA-256(str(prev_hash) || canonical_bytes(seq, event)))`.
pub fn record_hash(prev_hash: &str, seq: i64, event: &AuditEvent) -> String {
    let mut prefix = Vec::with_capacity(68);
    put_str(&mut prefix, prev_hash);
    let mut digest = Sha256::new();
    digest.update(&prefix);
    digest.update(canonical_bytes(seq, event));
    hex::encode(digest.finalize())
}

/// The bytes a checkpoint signs: `str("pm.audit.checkpoint.v1") || i64(seq) || str(hash) ||
/// str(key_id) || i64(time)`.
pub fn checkpoint_message(seq: i64, hash: &str, key_id: &str, time: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    put_str(&mut out, CHECKPOINT_TAG);
    out.extend_from_slice(&seq.to_be_bytes());
    put_str(&mut out, hash);
    put_str(&mut out, key_id);
    out.extend_from_slice(&time.to_be_bytes());
    out
}

// ---------------------------------------------------------------------------------------------
// Appending

fn is_postgres(conn: &AnyConnection) -> bool {
    conn.backend_name() == "PostgreSQL"
}

async fn read_head(conn: &mut AnyConnection) -> ApiResult<Option<(i64, String)>> {
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
/// all. The sealer and the [`AuditWriter`]'s batches use it; a PHI write stages its record with
/// [`stage`] instead, which takes no lock.
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
async fn lock_chain(conn: &mut AnyConnection) -> ApiResult<()> {
    if is_postgres(conn) {
        sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS locked")
            .bind(CHAIN_LOCK_KEY)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// [`append`] once the chain is the caller's (see [`lock_chain`]).
async fn append_locked(conn: &mut AnyConnection, events: &[AuditEvent]) -> ApiResult<()> {
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
async fn seal_batch(conn: &mut AnyConnection, up_to: i64) -> ApiResult<usize> {
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
/// sealed. Safe to run from several replicas at once (see the module documentation); records
/// staged while it runs may be left for the next seal.
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
// Group commit

struct Pending {
    event: AuditEvent,
    done: oneshot::Sender<ApiResult<()>>,
}

/// Writes the audit records of reads in batches: whatever is queued (up to `max_batch`) goes in one
/// transaction, and each caller of [`AuditWriter::record`] is answered once that transaction
/// committed (or failed: then every caller of the batch gets the error, and its read must fail).
///
/// It is also the slice's sealer: each batch first seals staged records in its transaction, and
/// the task seals on its own every [`SEAL_INTERVAL`] (see [`seal`]), so that the records of writes
/// reach the chain promptly even when no read is recorded.
///
/// Share it behind an `Arc`. Dropping it lets the task write what is queued, seal what is staged
/// and stop; [`close`] does the same and waits for it.
///
/// [`close`]: AuditWriter::close
pub struct AuditWriter {
    queue: Option<mpsc::Sender<Pending>>,
    task: Option<JoinHandle<()>>,
    /// Set when this process staged a record since the last batch: only then does a batch of
    /// reads also seal (an empty look would cost every batch a statement); the timer finds the rest.
    staged: Arc<AtomicBool>,
}

fn writer_closed() -> ApiError {
    ApiError::new(
        Code::Unavailable,
        "AUDIT_UNAVAILABLE",
        "the audit trail is unavailable, retry later",
    )
}

impl AuditWriter {
    /// Starts the writer task on the current Tokio runtime.
    pub fn spawn(db: Db, max_batch: usize) -> AuditWriter {
        Self::spawn_tracked(db, max_batch, &TaskTracker::new())
    }

    /// [`AuditWriter::spawn`], its task on `tracker`: a server waits for it (its last seal, once
    /// the last handle is dropped) before the database closes.
    pub fn spawn_tracked(db: Db, max_batch: usize, tracker: &TaskTracker) -> AuditWriter {
        let max_batch = max_batch.max(1);
        let (queue, receiver) = mpsc::channel(max_batch.saturating_mul(4).max(64));
        let staged = Arc::new(AtomicBool::new(false));
        let task = tracker.spawn(run_writer(db, receiver, max_batch, Arc::clone(&staged)));
        AuditWriter {
            queue: Some(queue),
            task: Some(task),
            staged,
        }
    }

    /// Tells the writer that a write staged a record (see [`stage`]): its next batch seals too.
    pub fn note_staged(&self) {
        self.staged.store(true, Ordering::Relaxed);
    }

    /// Records `event` and returns once it is committed. Cancelling the call after the event was
    /// queued does not withdraw it: it is still written.
    pub async fn record(&self, event: AuditEvent) -> ApiResult<()> {
        let queue = self.queue.as_ref().ok_or_else(writer_closed)?;
        let (done, answer) = oneshot::channel();
        queue
            .send(Pending { event, done })
            .await
            .map_err(|_| writer_closed())?;
        answer.await.map_err(|_| writer_closed())?
    }

    /// Stops taking records, writes those queued, seals what is staged and waits for the task to
    /// end.
    pub async fn close(mut self) {
        self.queue = None;
        if let Some(task) = self.task.take()
            && let Err(err) = task.await
        {
            tracing::error!(%err, "the audit writer task failed");
        }
    }
}

/// How many times the writer yields to let more records join a batch before committing it.
const LINGER_YIELDS: usize = 4;

async fn run_writer(
    db: Db,
    mut receiver: mpsc::Receiver<Pending>,
    max_batch: usize,
    staged: Arc<AtomicBool>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut sealing = SealTimer::new();
    loop {
        let received = tokio::select! {
            biased;
            received = receiver.recv_many(&mut batch, max_batch) => received,
            () = tokio::time::sleep_until(sealing.next) => {
                let sealed = writer_seal(&db).await;
                sealing.after(sealed);
                continue;
            }
        };
        if received == 0 {
            break;
        }
        // Group commit: give the callers that are about to record (their reads already running)
        // a moment to join this batch instead of paying a commit of their own.
        for _ in 0..LINGER_YIELDS {
            if batch.len() >= max_batch {
                break;
            }
            tokio::task::yield_now().await;
            while batch.len() < max_batch {
                match receiver.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
        }
        let (events, waiters): (Vec<AuditEvent>, Vec<_>) =
            batch.drain(..).map(|p| (p.event, p.done)).unzip();
        // While sealing fails, only the timer retries it (backing off); batches write their reads.
        let seal = sealing.healthy() && staged.swap(false, Ordering::Relaxed);
        let result = write_batch(&db, &events, seal).await;
        if let Err(err) = &result {
            tracing::warn!(
                count = events.len(),
                reason = err.reason,
                "an audit batch could not be written; its reads fail"
            );
        }
        for waiter in waiters {
            // A caller that went away no longer needs its answer.
            let _ = waiter.send(result.clone().map(|_| ()));
        }
        match result {
            // The batch sealed a full round: more may be waiting, seal them now (its reads have
            // their answers already).
            Ok(Some(sealed)) if sealed >= SEAL_BATCH as usize => {
                let sealed = writer_seal(&db).await;
                sealing.after(sealed);
            }
            Ok(Some(_)) => sealing.after(Some(0)),
            Ok(None) if sealing.healthy() => sealing.after(None),
            Ok(None) | Err(_) => {}
        }
    }
    // Stopping: seal what the slice's writes staged meanwhile.
    writer_seal(&db).await;
    tracing::debug!("audit writer stopped");
}

/// [`seal`] for the writer: a failure is logged (no read waits on it) and the staged records stay
/// for the next seal.
async fn writer_seal(db: &Db) -> Option<usize> {
    match seal(db).await {
        Ok(sealed) => Some(sealed),
        Err(err) => {
            tracing::warn!(
                reason = err.reason,
                "staged audit records could not be sealed; retrying later"
            );
            None
        }
    }
}

/// When the writer seals on its own: [`SEAL_INTERVAL`] after its last seal, backing off (doubling
/// up to [`SEAL_BACKOFF_MAX`]) while sealing fails, so that a database outage or a record that
/// cannot be sealed is not retried and logged five times a second.
struct SealTimer {
    next: tokio::time::Instant,
    delay: Duration,
}

impl SealTimer {
    fn new() -> SealTimer {
        SealTimer {
            next: tokio::time::Instant::now() + SEAL_INTERVAL,
            delay: SEAL_INTERVAL,
        }
    }

    /// Whether the last seal succeeded.
    fn healthy(&self) -> bool {
        self.delay == SEAL_INTERVAL
    }

    /// Schedules the next seal after one that sealed this many (`None`: it failed).
    fn after(&mut self, sealed: Option<usize>) {
        self.delay = match sealed {
            Some(_) => SEAL_INTERVAL,
            None => (self.delay * 2).min(SEAL_BACKOFF_MAX),
        };
        self.next = tokio::time::Instant::now() + self.delay;
    }
}

/// Writes a batch of reads' records in one transaction, first sealing staged records in it when
/// `seal` (one commit serves both, and writes committed before the reads precede them in the
/// chain). Returns how many it sealed, `None` when it did not seal: not asked to, or sealing failed
/// (logged) and the reads were written alone, since a staged record that cannot be sealed must not
/// make every read of the slice fail.
async fn write_batch(db: &Db, events: &[AuditEvent], seal: bool) -> ApiResult<Option<usize>> {
    // The dedicated connection: a batch never waits for a pooled connection behind the reads it
    // records. On SQLite it holds the writer lock; on PostgreSQL the chain's lock is taken first.
    let mut tx = db.write_dedicated().await?;
    let mut sealed = None;
    if seal {
        match seal_batch(tx.conn(), i64::MAX).await {
            Ok(n) => sealed = Some(n),
            Err(err) => {
                drop(tx); // rolled back: nothing was sealed
                tracing::warn!(
                    reason = err.reason,
                    "staged audit records could not be sealed; writing the reads' records alone"
                );
                tx = db.write_dedicated().await?;
            }
        }
    }
    if sealed.is_none() {
        lock_chain(tx.conn()).await?;
    }
    append_locked(tx.conn(), events).await?;
    tx.commit().await?;
    Ok(sealed)
}

// ---------------------------------------------------------------------------------------------
// Reading records

/// A row decoded as far as it goes: `event` is `None` when its content cannot be a record (invalid
/// JSON, unknown outcome), which the verifier reports as tampering.
struct RawRecord {
    seq: i64,
    id: String,
    event: Option<AuditEvent>,
    prev_hash: String,
    hash: String,
}

fn decode_raw(row: &AnyRow) -> ApiResult<RawRecord> {
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

// ---------------------------------------------------------------------------------------------
// Checkpoints and verification

fn decode_checkpoint(row: &AnyRow) -> ApiResult<Checkpoint> {
    Ok(Checkpoint {
        seq: row.try_get("seq")?,
        hash: row.try_get("hash")?,
        signature: row.try_get("signature")?,
        key_id: row.try_get("key_id")?,
        time: row.try_get("time")?,
    })
}

const CHECKPOINT_COLUMNS: &str = "seq, hash, signature, key_id, time";

/// Pages through the checkpoints with `seq <= max_seq` (those that existed when the walk began).
struct CheckpointCursor<'k> {
    keys: &'k HashMap<String, VerifyingKey>,
    max_seq: i64,
    after: i64,
    buffer: VecDeque<Checkpoint>,
    exhausted: bool,
    verified: u64,
}

impl CheckpointCursor<'_> {
    async fn peek(&mut self, conn: &mut AnyConnection) -> ApiResult<Option<&Checkpoint>> {
        if self.buffer.is_empty() && !self.exhausted {
            let rows = sqlx::query(&format!(
                "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints \
                 WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3"
            ))
            .bind(self.after)
            .bind(self.max_seq)
            .bind(CHECKPOINT_PAGE)
            .fetch_all(&mut *conn)
            .await?;
            self.exhausted = (rows.len() as i64) < CHECKPOINT_PAGE;
            for row in &rows {
                let checkpoint = decode_checkpoint(row)?;
                self.after = checkpoint.seq;
                self.buffer.push_back(checkpoint);
            }
        }
        Ok(self.buffer.front())
    }

    /// Checks the checkpoint at the front against the record at its seq, whose hash is `hash`.
    fn check_front(&mut self, hash: &str) -> Result<(), VerifyReport> {
        let Some(checkpoint) = self.buffer.pop_front() else {
            return Ok(());
        };
        let bad = |fault| VerifyReport::BadCheckpoint {
            seq: checkpoint.seq,
            fault,
        };
        if checkpoint.hash != hash {
            return Err(bad(CheckpointFault::HashMismatch));
        }
        let Some(key) = self.keys.get(&checkpoint.key_id) else {
            return Err(bad(CheckpointFault::UnknownKey));
        };
        let signature = hex::decode(&checkpoint.signature)
            .ok()
            .and_then(|bytes| Signature::from_slice(&bytes).ok());
        let message = checkpoint_message(
            checkpoint.seq,
            &checkpoint.hash,
            &checkpoint.key_id,
            checkpoint.time,
        );
        match signature {
            Some(signature) if key.verify_strict(&message, &signature).is_ok() => {
                self.verified += 1;
                Ok(())
            }
            _ => Err(bad(CheckpointFault::BadSignature)),
        }
    }
}

/// Walks the records with `after_seq < seq <= up_to`, starting from a chain whose record `after_seq`
/// has hash `prev_hash`, checking each record (and each checkpoint, when given) on the way.
async fn walk(
    conn: &mut AnyConnection,
    after_seq: i64,
    prev_hash: String,
    up_to: i64,
    mut checkpoints: Option<CheckpointCursor<'_>>,
) -> ApiResult<VerifyReport> {
    let mut expected = after_seq + 1;
    let mut prev_hash = prev_hash;
    let mut records = 0u64;
    let mut cursor = after_seq;
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > $1 AND seq <= $2 \
             ORDER BY seq LIMIT $3"
        ))
        .bind(cursor)
        .bind(up_to)
        .bind(VERIFY_PAGE)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last() else { break };
        let last_seq: i64 = last.try_get("seq")?;

        let index_rows = sqlx::query(
            "SELECT seq, patient, time FROM audit_patients WHERE seq > $1 AND seq <= $2",
        )
        .bind(cursor)
        .bind(last_seq)
        .fetch_all(&mut *conn)
        .await?;
        let mut index: HashMap<i64, Vec<(String, i64)>> = HashMap::new();
        for row in &index_rows {
            index
                .entry(row.try_get("seq")?)
                .or_default()
                .push((row.try_get("patient")?, row.try_get("time")?));
        }

        for row in &rows {
            let raw = decode_raw(row)?;
            if raw.seq != expected {
                return Ok(VerifyReport::Missing {
                    after_seq: expected - 1,
                });
            }
            if raw.prev_hash != prev_hash {
                return Ok(VerifyReport::OutOfOrder {
                    seq: raw.seq,
                    id: raw.id,
                });
            }
            let Some(event) = raw.event else {
                return Ok(VerifyReport::Tampered {
                    seq: raw.seq,
                    id: raw.id,
                });
            };
            if record_hash(&raw.prev_hash, raw.seq, &event) != raw.hash {
                return Ok(VerifyReport::Tampered {
                    seq: raw.seq,
                    id: raw.id,
                });
            }
            let wanted: Vec<(String, i64)> = event
                .patients
                .iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|patient| (patient.clone(), event.time))
                .collect();
            let mut found = index.remove(&raw.seq).unwrap_or_default();
            found.sort();
            if found != wanted {
                return Ok(VerifyReport::IndexMismatch { seq: raw.seq });
            }
            if let Some(cps) = checkpoints.as_mut() {
                while let Some(checkpoint_seq) = cps.peek(conn).await?.map(|c| c.seq) {
                    if checkpoint_seq > raw.seq {
                        break;
                    }
                    if checkpoint_seq < raw.seq {
                        return Ok(VerifyReport::BadCheckpoint {
                            seq: checkpoint_seq,
                            fault: CheckpointFault::NotInChain,
                        });
                    }
                    if let Err(report) = cps.check_front(&raw.hash) {
                        return Ok(report);
                    }
                }
            }
            prev_hash = raw.hash;
            expected += 1;
            records += 1;
            cursor = raw.seq;
        }
        if (rows.len() as i64) < VERIFY_PAGE {
            break;
        }
    }
    let mut verified = 0;
    if let Some(mut cps) = checkpoints {
        if let Some(checkpoint) = cps.peek(conn).await? {
            let fault = if checkpoint.seq < 1 {
                CheckpointFault::NotInChain
            } else {
                CheckpointFault::BeyondHead
            };
            return Ok(VerifyReport::BadCheckpoint {
                seq: checkpoint.seq,
                fault,
            });
        }
        verified = cps.verified;
    }
    Ok(VerifyReport::Ok {
        records,
        checkpoints: verified,
        head_seq: expected - 1,
        head_hash: prev_hash,
    })
}

/// Walks the whole chain in seq order, a page at a time, checking every record's link and hash,
/// its patient index rows, and every checkpoint's place and signature (with `keys`, by key id).
/// Returns the counts, or the first problem and the record it concerns.
///
/// Seals first (see [`seal`]): it writes to the slice, moving the records staged by committed
/// writes into the chain, so that they are verified too (a record still staged is not chained, and
/// could not be). It needs the rights to write the audit tables.
pub async fn verify(db: &Db, keys: &HashMap<String, VerifyingKey>) -> ApiResult<VerifyReport> {
    seal(db).await?;
    let mut conn = db.read().await?;
    // Checkpoints signed after the walk began may point past the records it saw: leave them out.
    let max_checkpoint: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM audit_checkpoints")
        .fetch_one(&mut *conn)
        .await?;
    let checkpoints = CheckpointCursor {
        keys,
        max_seq: max_checkpoint.unwrap_or(i64::MIN),
        after: i64::MIN,
        buffer: VecDeque::new(),
        exhausted: max_checkpoint.is_none(),
        verified: 0,
    };
    let report = walk(
        &mut conn,
        0,
        GENESIS_HASH.to_string(),
        i64::MAX,
        Some(checkpoints),
    )
    .await?;
    match &report {
        VerifyReport::Ok {
            records,
            checkpoints,
            head_seq,
            ..
        } => tracing::info!(records, checkpoints, head_seq, "audit chain verified"),
        problem => tracing::error!(
            seq = problem.problem_seq(),
            "audit chain verification failed: {}",
            problem_kind(problem)
        ),
    }
    Ok(report)
}

fn problem_kind(report: &VerifyReport) -> &'static str {
    match report {
        VerifyReport::Ok { .. } => "ok",
        VerifyReport::Tampered { .. } => "record edited",
        VerifyReport::Missing { .. } => "records missing",
        VerifyReport::OutOfOrder { .. } => "record out of order",
        VerifyReport::IndexMismatch { .. } => "patient index does not match",
        VerifyReport::BadCheckpoint { .. } => "bad checkpoint",
    }
}

/// Signs the chain's head: checks the records since the last checkpoint, then stores and returns a
/// checkpoint of the head's (seq, hash). Returns the existing checkpoint when the head already has
/// one, `None` when the chain is empty, and FAILED_PRECONDITION (`AUDIT_CHAIN_BROKEN`) rather than
/// sign a chain that does not check out.
pub async fn checkpoint(db: &Db, key: &SigningKey, key_id: &str) -> ApiResult<Option<Checkpoint>> {
    let mut conn = db.read().await?;
    let Some((head_seq, head_hash)) = read_head(&mut conn).await? else {
        return Ok(None);
    };
    let last = sqlx::query(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
    ))
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(decode_checkpoint)
    .transpose()?;
    let broken = |seq: i64| {
        ApiError::precondition(
            "AUDIT_CHAIN_BROKEN",
            format!("the audit chain does not verify at seq {seq}: run a full verification"),
        )
        .with_meta("seq", seq.to_string())
    };
    let (after, prev_hash) = match last {
        Some(last) if last.seq == head_seq => {
            return if last.hash == head_hash {
                Ok(Some(last))
            } else {
                Err(broken(head_seq))
            };
        }
        Some(last) if last.seq > head_seq => return Err(broken(last.seq)),
        Some(last) => (last.seq, last.hash),
        None => (0, GENESIS_HASH.to_string()),
    };
    match walk(&mut conn, after, prev_hash, head_seq, None).await? {
        VerifyReport::Ok {
            head_seq: seq,
            head_hash: hash,
            ..
        } if seq == head_seq && hash == head_hash => {}
        VerifyReport::Ok { head_seq: seq, .. } => return Err(broken(seq + 1)),
        problem => return Err(broken(problem.problem_seq().unwrap_or(head_seq))),
    }
    drop(conn);

    let time = now_micros();
    let signature = key.sign(&checkpoint_message(head_seq, &head_hash, key_id, time));
    let mut tx = db.write(CHECKPOINT_SCOPE).await?;
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, hash, signature, key_id, time) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING",
    )
    .bind(head_seq)
    .bind(head_hash.as_str())
    .bind(hex::encode(signature.to_bytes()))
    .bind(key_id)
    .bind(time)
    .execute(tx.conn())
    .await?;
    // Another checkpoint of the same head may have won the race: return the one stored.
    let stored = sqlx::query(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq = $1"
    ))
    .bind(head_seq)
    .fetch_one(tx.conn())
    .await?;
    let stored = decode_checkpoint(&stored)?;
    tx.commit().await?;
    tracing::info!(seq = head_seq, "audit checkpoint signed");
    Ok(Some(stored))
}

// ---------------------------------------------------------------------------------------------
// FHIR export

const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
const PURPOSE_OF_USE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const DICOM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const METHOD_SYSTEM: &str = "urn:pm:grpc-method";
const PRINCIPAL_SYSTEM: &str = "urn:pm:principal";
const SERVICE_SYSTEM: &str = "urn:pm:service";
const RESOURCE_SYSTEM: &str = "urn:pm:resource";

/// The FHIR action code of a gRPC method, from the prefix of its name (the part after the last `/`
/// or `.`): Get, List, BatchGet, Search → R; Create → C; Update, Undelete → U; Delete → D; else E.
pub fn fhir_action(method: &str) -> &'static str {
    let name = method.rsplit(['/', '.']).next().unwrap_or(method);
    if ["Get", "List", "BatchGet", "Search"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        "R"
    } else if name.starts_with("Create") {
        "C"
    } else if name.starts_with("Update") || name.starts_with("Undelete") {
        "U"
    } else if name.starts_with("Delete") {
        "D"
    } else {
        "E"
    }
}

fn network(source: &str) -> Value {
    // AuditEventAgentNetworkType: 1 machine name, 2 IP address, 5 URI.
    if let Ok(addr) = source.parse::<SocketAddr>() {
        json!({ "address": addr.ip().to_string(), "type": "2" })
    } else if source.parse::<IpAddr>().is_ok() {
        json!({ "address": source, "type": "2" })
    } else if source.contains(':') {
        json!({ "address": source, "type": "5" })
    } else {
        json!({ "address": source, "type": "1" })
    }
}

/// The record as a FHIR R4 AuditEvent (http://hl7.org/fhir/R4/auditevent.html): `type` (DICOM
/// "rest"), `subtype` (the method), `action`, `recorded`, `outcome`, `purposeOfEvent`, the agents
/// (the principal as requestor, the calling service and the principal acted for), `source` (the
/// service as observer) and an `entity` for each resource and each patient.
pub fn to_fhir_audit_event(event: &StoredAuditEvent) -> Value {
    let e = &event.event;
    let recorded = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(e.time)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (outcome, outcome_desc) = match e.outcome {
        Outcome::Success => ("0", "OK".to_string()),
        Outcome::Denied => ("4", "PERMISSION_DENIED".to_string()),
        Outcome::Failed { code } => {
            let status = Code::from_i32(code);
            // Refused for want of credentials is a denial too; other failures are serious.
            let fhir = if status == Code::Unauthenticated {
                "4"
            } else {
                "8"
            };
            (fhir, format!("gRPC status {status:?} ({code})"))
        }
    };

    let mut requestor = json!({
        "who": { "identifier": { "system": PRINCIPAL_SYSTEM, "value": e.principal } },
        "requestor": true,
    });
    let mut agents = Vec::new();
    match (&e.calling_service, &e.source) {
        (Some(service), source) => {
            let mut agent = json!({
                "type": { "coding": [{ "system": DICOM, "code": "110153", "display": "Source Role ID" }] },
                "who": { "identifier": { "system": SERVICE_SYSTEM, "value": service } },
                "requestor": false,
            });
            if let Some(source) = source {
                agent["network"] = network(source);
            }
            agents.push(requestor);
            agents.push(agent);
        }
        (None, Some(source)) => {
            requestor["network"] = network(source);
            agents.push(requestor);
        }
        (None, None) => agents.push(requestor),
    }
    if let Some(principal) = &e.on_behalf_of {
        agents.push(json!({
            "type": { "text": "on behalf of" },
            "who": { "identifier": { "system": PRINCIPAL_SYSTEM, "value": principal } },
            "requestor": false,
        }));
    }

    let mut entities: Vec<Value> = e
        .resources
        .iter()
        .map(|name| {
            json!({
                "what": { "identifier": { "system": RESOURCE_SYSTEM, "value": name } },
                "type": { "system": ENTITY_TYPE, "code": "2", "display": "System Object" },
            })
        })
        .collect();
    entities.extend(e.patients.iter().map(|name| {
        json!({
            "what": { "type": "Patient", "identifier": { "system": RESOURCE_SYSTEM, "value": name } },
            "type": { "system": ENTITY_TYPE, "code": "1", "display": "Person" },
            "role": { "system": OBJECT_ROLE, "code": "1", "display": "Patient" },
        })
    }));

    let mut resource = json!({
        "resourceType": "AuditEvent",
        "id": e.id,
        "type": { "system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation" },
        "subtype": [{ "system": METHOD_SYSTEM, "code": e.method }],
        "action": fhir_action(&e.method),
        "recorded": recorded,
        "outcome": outcome,
        "outcomeDesc": outcome_desc,
        "agent": agents,
        "source": {
            "observer": { "identifier": { "system": SERVICE_SYSTEM, "value": e.service } },
            "type": [{ "system": SOURCE_TYPE, "code": "4", "display": "Application Server" }],
        },
    });
    if !entities.is_empty() {
        resource["entity"] = Value::Array(entities);
    }
    if let Some(purpose) = &e.purpose {
        let is_code = !purpose.is_empty() && purpose.bytes().all(|b| b.is_ascii_uppercase());
        resource["purposeOfEvent"] = if is_code {
            json!([{ "coding": [{ "system": PURPOSE_OF_USE, "code": purpose }] }])
        } else {
            json!([{ "text": purpose }])
        };
    }
    resource
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> StoredAuditEvent {
        let event = AuditEvent {
            on_behalf_of: Some("users/bob".into()),
            calling_service: Some("spiffe://pm.dev/scheduling".into()),
            resources: vec!["organizations/acme/patients/p1".into()],
            patients: vec!["organizations/acme/patients/p1".into()],
            source: Some("10.1.2.3:45678".into()),
            purpose: Some("TREAT".into()),
            time: 1_700_000_000_123_456,
            ..AuditEvent::new(
                "org",
                "/pm.org.v1.OrgService/GetPatient",
                "users/alice",
                Outcome::Success,
            )
        };
        let hash = record_hash(GENESIS_HASH, 1, &event);
        StoredAuditEvent {
            seq: 1,
            event,
            prev_hash: GENESIS_HASH.into(),
            hash,
        }
    }

    /// The elements FHIR R4 AuditEvent (http://hl7.org/fhir/R4/auditevent.html) requires (1..1):
    /// type, recorded, agent (1..*) with agent.requestor, source with source.observer; and
    /// entity.what, action and outcome as this mapping fills them.
    #[test]
    fn fhir_export_has_the_required_r4_elements() {
        let fhir = to_fhir_audit_event(&sample());
        assert_eq!(fhir["resourceType"], "AuditEvent");
        assert_eq!(fhir["type"]["system"], AUDIT_EVENT_TYPE);
        assert_eq!(fhir["type"]["code"], "rest");
        assert_eq!(
            fhir["subtype"][0]["code"],
            "/pm.org.v1.OrgService/GetPatient"
        );
        assert_eq!(fhir["action"], "R");
        assert_eq!(fhir["recorded"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(fhir["outcome"], "0");
        let agents = fhir["agent"].as_array().unwrap();
        assert!(!agents.is_empty());
        assert!(agents.iter().all(|a| a["requestor"].is_boolean()));
        assert_eq!(agents[0]["requestor"], true);
        assert_eq!(agents[0]["who"]["identifier"]["value"], "users/alice");
        assert_eq!(
            agents[1]["who"]["identifier"]["value"],
            "spiffe://pm.dev/scheduling"
        );
        assert_eq!(agents[1]["network"]["address"], "10.1.2.3");
        assert_eq!(agents[2]["who"]["identifier"]["value"], "users/bob");
        assert_eq!(fhir["source"]["observer"]["identifier"]["value"], "org");
        let entities = fhir["entity"].as_array().unwrap();
        assert_eq!(entities.len(), 2);
        assert!(entities.iter().all(|e| e["what"].is_object()));
        assert_eq!(entities[1]["what"]["type"], "Patient");
        assert_eq!(fhir["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
    }

    #[test]
    fn fhir_outcomes_and_actions() {
        let mut stored = sample();
        stored.event.outcome = Outcome::Denied;
        assert_eq!(to_fhir_audit_event(&stored)["outcome"], "4");
        stored.event.outcome = Outcome::Failed { code: 13 };
        assert_eq!(to_fhir_audit_event(&stored)["outcome"], "8");
        stored.event.calling_service = None;
        let fhir = to_fhir_audit_event(&stored);
        assert_eq!(fhir["agent"][0]["network"]["type"], "2");
        assert_eq!(fhir_action("/pm.org.v1.OrgService/ListPatients"), "R");
        assert_eq!(fhir_action("/pm.org.v1.OrgService/CreatePatient"), "C");
        assert_eq!(fhir_action("/pm.org.v1.OrgService/UpdatePatient"), "U");
        assert_eq!(fhir_action("/pm.org.v1.OrgService/DeletePatient"), "D");
        assert_eq!(fhir_action("/pm.org.v1.OrgService/MergePatients"), "E");
        assert_eq!(fhir_action("GetPatient"), "R");
    }

    #[test]
    fn every_field_is_bound_into_the_hash() {
        let base = sample();
        let h = |e: &AuditEvent, seq: i64| record_hash(GENESIS_HASH, seq, e);
        let reference = h(&base.event, 1);
        assert_eq!(reference.len(), 64);
        assert_ne!(h(&base.event, 2), reference, "seq");
        assert_ne!(
            record_hash(&"1".repeat(64), 1, &base.event),
            reference,
            "prev_hash"
        );
        type Change = Box<dyn Fn(&mut AuditEvent)>;
        let variants: Vec<Change> = vec![
            Box::new(|e| e.id.push('x')),
            Box::new(|e| e.time += 1),
            Box::new(|e| e.service.push('x')),
            Box::new(|e| e.method.push('x')),
            Box::new(|e| e.principal.push('x')),
            Box::new(|e| e.on_behalf_of = None),
            Box::new(|e| e.calling_service = Some(String::new())),
            Box::new(|e| e.resources.push(String::new())),
            Box::new(|e| e.patients.clear()),
            Box::new(|e| e.source = None),
            Box::new(|e| e.purpose = Some("HPAYMT".into())),
            Box::new(|e| e.outcome = Outcome::Denied),
            Box::new(|e| e.outcome = Outcome::Failed { code: 0 }),
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut event = base.event.clone();
            change(&mut event);
            assert_ne!(h(&event, 1), reference, "variant {i}");
        }
        // Length prefixes: moving bytes between adjacent fields changes the hash.
        let mut a = base.event.clone();
        a.service = "ab".into();
        a.method = "c".into();
        let mut b = base.event.clone();
        b.service = "a".into();
        b.method = "bc".into();
        assert_ne!(h(&a, 1), h(&b, 1));
    }

    #[test]
    fn outcome_columns_round_trip() {
        for outcome in [
            Outcome::Success,
            Outcome::Denied,
            Outcome::Failed { code: 14 },
        ] {
            let (text, code) = outcome.columns();
            assert_eq!(Outcome::from_columns(text, code), Some(outcome));
        }
        assert_eq!(Outcome::from_code(Code::Ok), Outcome::Success);
        assert_eq!(Outcome::from_code(Code::PermissionDenied), Outcome::Denied);
        assert_eq!(
            Outcome::from_code(Code::NotFound),
            Outcome::Failed { code: 5 }
        );
    }
}

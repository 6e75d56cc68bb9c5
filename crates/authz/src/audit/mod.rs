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
//! - Every reader of the trail ([`records`], [`accesses_to_patient`], [`verify`](fn@verify)) seals
//!   first, so it sees the record of every write committed before it was called.
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
//! [`verify`](fn@verify) walks the chain in pages and names the first problem: an edited record
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
//!
//! # Layout
//! - `chain`: the canonical encoding of a record and of a checkpoint, and the record hash.
//! - `store`: the tables and every statement on the records: append, stage, seal, read.
//! - `writer`: the [`AuditWriter`] task (group commit of reads' records, the slice's sealer).
//! - `verify`: walking the chain, [`verify`](fn@verify), [`checkpoint`] and their reports (the
//!   signing keys and the periodic task are in [`crate::checkpoints`]).
//! - `fhir`: the FHIR R4 AuditEvent export, which needs only the record types.
//!
//! Everything public is re-exported here: callers name `pm_authz::audit::*`, never a submodule.

mod chain;
mod fhir;
mod store;
mod verify;
mod writer;

pub use chain::{GENESIS_HASH, canonical_bytes, checkpoint_message, record_hash};
pub use fhir::{fhir_action, to_fhir_audit_event};
pub use store::{
    AUDIT_MIGRATIONS, accesses_to_patient, append, records, seal, stage, staging_insert,
};
pub use verify::{Checkpoint, CheckpointFault, VerifyReport, checkpoint, verify};
pub use writer::{AuditWriter, SEAL_INTERVAL};

use pm_runtime::time::now_micros;
use tonic::Code;

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The record the unit tests of the submodules share.
    pub(super) fn sample() -> StoredAuditEvent {
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

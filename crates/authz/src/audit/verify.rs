//! Checking the chain and signing its head: [`verify`] walks every record, its patient index rows
//! and every checkpoint and names the first problem; [`checkpoint`] signs the head once the records
//! since the last checkpoint check out. Kept apart from the store because it reads the tables as an
//! auditor would, trusting nothing in them. The signing keys and the periodic task that calls
//! [`checkpoint`] are in [`crate::checkpoints`].

use std::collections::{BTreeSet, HashMap, VecDeque};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use pm_runtime::db::Db;
use pm_runtime::error::{ApiError, ApiResult};
use pm_runtime::time::now_micros;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::chain::{GENESIS_HASH, checkpoint_message, record_hash};
use super::store::{EVENT_COLUMNS, decode_raw, read_head, seal};

/// The write scope taken to insert a checkpoint (not an organization name: it holds a dot).
const CHECKPOINT_SCOPE: &str = "pm.audit/checkpoints";
/// Records per page when walking the chain.
const VERIFY_PAGE: i64 = 500;
/// Checkpoints per page when walking the chain.
const CHECKPOINT_PAGE: i64 = 256;

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

//! Group commit of the records of reads, and the slice's sealer: [`AuditWriter`] and its task.
//! Kept apart from the store because it is a runtime (a Tokio task, its queue, its timer and
//! backoff) around the store's statements, not SQL of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pm_runtime::db::Db;
use pm_runtime::error::{ApiError, ApiResult};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tonic::Code;

use super::AuditEvent;
use super::store::{SEAL_BATCH, append_locked, lock_chain, seal, seal_batch};

/// How often an [`AuditWriter`] seals staged records when no read gives it a batch to seal them with.
pub const SEAL_INTERVAL: Duration = Duration::from_millis(200);
/// The longest an [`AuditWriter`] waits between attempts while sealing keeps failing.
const SEAL_BACKOFF_MAX: Duration = Duration::from_secs(10);

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

    /// Tells the writer that a write staged a record (see [`stage`](super::stage)): its next batch
    /// seals too.
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

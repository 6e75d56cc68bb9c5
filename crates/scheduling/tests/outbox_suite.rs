//! The transactional outbox on SQLite and PostgreSQL: events staged by writers get their sequence
//! only once committed, in one gapless order, exactly once, whatever the writers and sequencers do
//! at the same time; a reader tailing the outbox never skips one.

use std::collections::BTreeSet;

use pm_api::scheduling::scheduling_event::Kind as EventKind;
use pm_api::scheduling::{Appointment, SchedulingEvent};
use pm_runtime::config::Backend;
use pm_runtime::{ApiResult, Db};
use pm_scheduling::{occupancy, outbox};
use pm_testing::TestSlice;

pub struct Harness {
    slice: TestSlice,
}

impl Harness {
    pub async fn new(backend: Backend) -> anyhow::Result<Harness> {
        let slice = TestSlice::open(
            backend,
            &[&pm_runtime::docstore::MIGRATIONS, &occupancy::MIGRATIONS],
        )
        .await?;
        Ok(Harness { slice })
    }

    pub async fn finish(self) -> anyhow::Result<()> {
        self.slice.finish().await
    }
}

/// An event about appointment `name`.
fn changed(name: &str) -> EventKind {
    EventKind::AppointmentChanged(Appointment {
        name: name.to_string(),
        ..Default::default()
    })
}

fn name_of(event: &SchedulingEvent) -> &str {
    match &event.kind {
        Some(EventKind::AppointmentChanged(a)) => &a.name,
        _ => "",
    }
}

/// Stages one event in a write transaction of its own (without a lock on PostgreSQL, as bookings
/// run), committing it or rolling it back.
async fn stage(db: &Db, name: &str, commit: bool) -> ApiResult<()> {
    let mut tx = db.write_constrained().await?;
    outbox::append(tx.conn(), changed(name)).await?;
    if commit { tx.commit().await } else { Ok(()) }
}

async fn everything(db: &Db) -> ApiResult<Vec<SchedulingEvent>> {
    let mut conn = db.read().await?;
    outbox::read_after(&mut conn, 0, 100_000).await
}

pm_testing::on_both_backends!(
    crate::Harness;
    staged_events_are_numbered_once_committed_and_only_once,
    concurrent_writers_and_sequencers_number_every_event_once_without_gaps,
);

async fn staged_events_are_numbered_once_committed_and_only_once(
    h: &Harness,
) -> anyhow::Result<()> {
    let db = &h.slice.db;
    stage(db, "a1", true).await?;
    stage(db, "rolled-back", false).await?;
    stage(db, "a2", true).await?;
    // Committed, not yet numbered: no reader sees them (a crash here leaves them staged).
    assert!(everything(db).await?.is_empty());
    {
        let mut conn = db.read().await?;
        assert_eq!(outbox::head(&mut conn).await?, 0);
    }

    assert_eq!(outbox::sequence(db).await?, 2);
    let events = everything(db).await?;
    let seen: Vec<(i64, &str)> = events.iter().map(|e| (e.sequence, name_of(e))).collect();
    assert_eq!(seen, vec![(1, "a1"), (2, "a2")]);
    // Numbered once: another run finds nothing, and later events continue the order.
    assert_eq!(outbox::sequence(db).await?, 0);
    stage(db, "a3", true).await?;
    assert_eq!(outbox::sequence(db).await?, 1);
    let events = everything(db).await?;
    assert_eq!(events.len(), 3);
    assert_eq!((events[2].sequence, name_of(&events[2])), (3, "a3"));
    Ok(())
}

const WRITERS: usize = 16;
const EVENTS_PER_WRITER: usize = 20;

async fn concurrent_writers_and_sequencers_number_every_event_once_without_gaps(
    h: &Harness,
) -> anyhow::Result<()> {
    let db = h.slice.db.clone();
    let total = WRITERS * EVENTS_PER_WRITER;

    // A reader tails the outbox as a stream consumer does, checking it never skips a sequence.
    let tail = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut cursor = 0;
            let mut names = Vec::new();
            while names.len() < total {
                let mut conn = db.read().await?;
                for event in outbox::read_after(&mut conn, cursor, 50).await? {
                    anyhow::ensure!(
                        event.sequence == cursor + 1,
                        "the reader skipped from {cursor} to {}",
                        event.sequence
                    );
                    cursor = event.sequence;
                    names.push(name_of(&event).to_string());
                }
                drop(conn);
                tokio::task::yield_now().await;
            }
            anyhow::Ok(names)
        })
    };
    // Two sequencers (as two replicas would run) racing the writers.
    let done = tokio_util::sync::CancellationToken::new();
    let sequencers: Vec<_> = (0..2)
        .map(|_| {
            let (db, done) = (db.clone(), done.clone());
            tokio::spawn(async move {
                let mut numbered = 0;
                while !done.is_cancelled() {
                    numbered += outbox::sequence(&db).await?;
                    tokio::task::yield_now().await;
                }
                anyhow::Ok(numbered)
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in 0..EVENTS_PER_WRITER {
                    stage(&db, &format!("w{w}-{i}"), true).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    done.cancel();
    let mut numbered = 0;
    for sequencer in sequencers {
        numbered += sequencer.await??;
    }
    numbered += outbox::sequence(&db).await?;
    assert_eq!(numbered, total, "every event numbered once");

    let names = tail.await??;
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), total, "each event delivered once");
    let events = everything(&db).await?;
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=total as i64).collect::<Vec<_>>(), "gapless");
    // Each writer's own events keep their order.
    for w in 0..WRITERS {
        let mine: Vec<&String> = names
            .iter()
            .filter(|n| n.starts_with(&format!("w{w}-")))
            .collect();
        let expected: Vec<String> = (0..EVENTS_PER_WRITER)
            .map(|i| format!("w{w}-{i}"))
            .collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>());
    }
    Ok(())
}

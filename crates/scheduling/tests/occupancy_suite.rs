//! The double-booking guard on SQLite and PostgreSQL: spans, conflicts per holder kind, release,
//! invalid spans, a 64-writer storm, and (PostgreSQL only) the exclusion constraint catching two
//! transactions that both passed the pre-check.

use std::time::Duration;

use pm_runtime::config::Backend;
use pm_runtime::{ApiError, ApiResult};
use pm_scheduling::occupancy::{self, Holder, HolderKind};
use pm_testing::TestSlice;
use sqlx::{AnyConnection, Row};
use tonic::Code;

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

    /// Reserves in its own write transaction, committing on success and rolling back otherwise.
    async fn book(
        &self,
        appointment: &str,
        holders: &[Holder],
        start: i64,
        end: i64,
    ) -> ApiResult<()> {
        let mut tx = self.slice.db.write(ORG).await?;
        occupancy::reserve(tx.conn(), appointment, holders, (start, end), None).await?;
        tx.commit().await
    }

    async fn release(&self, appointment: &str) -> ApiResult<()> {
        let mut tx = self.slice.db.write(ORG).await?;
        occupancy::release(tx.conn(), appointment).await?;
        tx.commit().await
    }

    async fn busy(
        &self,
        kind: HolderKind,
        holders: &[&str],
        from: i64,
        until: i64,
    ) -> anyhow::Result<Busy> {
        let names: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
        let mut conn = self.slice.db.read().await?;
        Ok(occupancy::busy(&mut conn, kind, &names, from, until).await?)
    }

    /// Every row as (appointment, kind, holder, start, end), sorted.
    async fn rows(&self) -> anyhow::Result<Vec<(String, String, String, i64, i64)>> {
        let mut conn = self.slice.db.read().await?;
        rows(&mut conn).await
    }

    async fn overlapping_pairs(&self) -> anyhow::Result<i64> {
        let mut conn = self.slice.db.read().await?;
        overlapping_pairs(&mut conn).await
    }
}

type Busy = std::collections::HashMap<String, Vec<(String, i64, i64)>>;

async fn rows(conn: &mut AnyConnection) -> anyhow::Result<Vec<(String, String, String, i64, i64)>> {
    let rows = sqlx::query(
        "SELECT appointment, kind, holder, start_us, end_us FROM occupancy \
         ORDER BY appointment, kind, holder",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("appointment")?,
                r.try_get("kind")?,
                r.try_get("holder")?,
                r.try_get("start_us")?,
                r.try_get("end_us")?,
            ))
        })
        .collect()
}

/// Pairs of rows of one holder whose spans overlap: the invariant says none.
async fn overlapping_pairs(conn: &mut AnyConnection) -> anyhow::Result<i64> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM occupancy a JOIN occupancy b \
         ON a.kind = b.kind AND a.holder = b.holder AND a.appointment < b.appointment \
         AND a.start_us < b.end_us AND b.start_us < a.end_us",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get("n")?)
}

const ORG: &str = "organizations/acme";
const P1: &str = "organizations/acme/providers/p1";
const P2: &str = "organizations/acme/providers/p2";
const ROOM: &str = "organizations/acme/rooms/r1";
/// 2027-01-15T08:00:00Z in microseconds.
const T: i64 = 1_799_999_200_000_000;
const MIN: i64 = 60_000_000;

fn provider(name: &str) -> Holder {
    Holder {
        kind: HolderKind::Provider,
        name: name.into(),
    }
}
fn patient(id: &str) -> Holder {
    Holder {
        kind: HolderKind::Patient,
        name: format!("organizations/acme/patients/{id}"),
    }
}
fn room(name: &str) -> Holder {
    Holder {
        kind: HolderKind::Room,
        name: name.into(),
    }
}

/// Asserts a SLOT_UNAVAILABLE refusal naming `kind` and nothing else about the holder.
fn assert_slot_unavailable(result: ApiResult<()>, kind: &str) {
    let err: ApiError = match result {
        Ok(()) => panic!("expected SLOT_UNAVAILABLE for {kind}, got Ok"),
        Err(err) => err,
    };
    assert_eq!(err.code, Code::FailedPrecondition, "{err}");
    assert_eq!(err.reason, "SLOT_UNAVAILABLE", "{err}");
    assert_eq!(
        err.metadata,
        vec![("holderKind", kind.to_string())],
        "{err}"
    );
    assert!(
        !err.message.contains("organizations/"),
        "no holder name in: {err}"
    );
}

pm_testing::on_both_backends!(
    crate::Harness;
    reserved_spans_are_busy_and_touching_spans_do_not_conflict,
    an_overlap_for_the_same_provider_is_refused_and_writes_nothing,
    each_holder_kind_conflicts_only_with_itself,
    release_frees_the_time_and_is_idempotent,
    an_empty_or_reversed_span_is_invalid_and_writes_nothing,
    a_storm_of_64_overlapping_writers_admits_exactly_one,
);

async fn reserved_spans_are_busy_and_touching_spans_do_not_conflict(
    h: &Harness,
) -> anyhow::Result<()> {
    h.book(
        "appointments/a1",
        &[provider(P1), patient("x1")],
        T,
        T + 30 * MIN,
    )
    .await?;
    // [T+30, T+60) touches [T, T+30) at one instant: half-open spans do not overlap.
    h.book(
        "appointments/a2",
        &[provider(P1), patient("x1")],
        T + 30 * MIN,
        T + 60 * MIN,
    )
    .await?;
    h.book("appointments/a0", &[provider(P1)], T - 15 * MIN, T)
        .await?;

    let busy = h
        .busy(HolderKind::Provider, &[P1, P2], T, T + 60 * MIN)
        .await?;
    assert_eq!(busy.len(), 1, "P2 has nothing and is absent: {busy:?}");
    assert_eq!(
        busy[P1],
        vec![
            ("appointments/a1".to_string(), T, T + 30 * MIN),
            ("appointments/a2".to_string(), T + 30 * MIN, T + 60 * MIN),
        ],
        "a0 ends where the window starts and is not reported"
    );
    // A window inside one span finds it; the patient's spans are kept apart from the provider's.
    let inside = h
        .busy(
            HolderKind::Patient,
            &["organizations/acme/patients/x1"],
            T + 5 * MIN,
            T + 6 * MIN,
        )
        .await?;
    assert_eq!(
        inside["organizations/acme/patients/x1"],
        vec![("appointments/a1".to_string(), T, T + 30 * MIN)]
    );
    assert!(
        h.busy(HolderKind::Room, &[P1], T, T + 60 * MIN)
            .await?
            .is_empty()
    );
    assert!(
        h.busy(HolderKind::Provider, &[], T, T + 60 * MIN)
            .await?
            .is_empty()
    );
    assert_eq!(h.overlapping_pairs().await?, 0);
    Ok(())
}

async fn an_overlap_for_the_same_provider_is_refused_and_writes_nothing(
    h: &Harness,
) -> anyhow::Result<()> {
    h.book(
        "appointments/a1",
        &[provider(P1), patient("x1")],
        T,
        T + 30 * MIN,
    )
    .await?;
    let before = h.rows().await?;
    assert_eq!(before.len(), 2);

    // The conflicting holder is listed last: the refusal must still leave no row of the others.
    let mut tx = h.slice.db.write(ORG).await?;
    let refused = occupancy::reserve(
        tx.conn(),
        "appointments/a2",
        &[patient("x2"), room(ROOM), provider(P1)],
        (T + 29 * MIN, T + 45 * MIN),
        None,
    )
    .await;
    assert_slot_unavailable(refused, "provider");
    let inside =
        sqlx::query("SELECT COUNT(*) AS n FROM occupancy WHERE appointment = 'appointments/a2'")
            .fetch_one(tx.conn())
            .await;
    if h.slice.db.backend() == Backend::Postgres {
        // The one insert failed whole, and the transaction with it: it can only roll back.
        let aborted = inside
            .err()
            .and_then(|e| e.into_database_error()?.code()?.into_owned().into());
        assert_eq!(
            aborted.as_deref(),
            Some("25P02"),
            "the transaction is aborted"
        );
    } else {
        assert_eq!(
            inside?.try_get::<i64, _>("n")?,
            0,
            "nothing written even before the rollback"
        );
    }
    drop(tx); // rolls back

    assert_eq!(h.rows().await?, before);
    // A span enclosing the existing one conflicts too.
    assert_slot_unavailable(
        h.book("appointments/a3", &[provider(P1)], T - MIN, T + 31 * MIN)
            .await,
        "provider",
    );
    assert_eq!(h.rows().await?, before);
    Ok(())
}

async fn each_holder_kind_conflicts_only_with_itself(h: &Harness) -> anyhow::Result<()> {
    h.book(
        "appointments/a1",
        &[provider(P1), patient("x1"), room(ROOM)],
        T,
        T + 30 * MIN,
    )
    .await?;
    // Another provider and patient at the same time, no room: fine.
    h.book(
        "appointments/a2",
        &[provider(P2), patient("x2")],
        T,
        T + 30 * MIN,
    )
    .await?;
    // The same patient with another provider: refused on the patient.
    let p3 = "organizations/acme/providers/p3";
    assert_slot_unavailable(
        h.book(
            "appointments/a3",
            &[provider(p3), patient("x1")],
            T + 10 * MIN,
            T + 20 * MIN,
        )
        .await,
        "patient",
    );
    // The same room with another provider and patient: refused on the room.
    assert_slot_unavailable(
        h.book(
            "appointments/a4",
            &[provider(p3), patient("x3"), room(ROOM)],
            T + 10 * MIN,
            T + 20 * MIN,
        )
        .await,
        "room",
    );
    // The same name under another kind is another holder.
    h.book(
        "appointments/a5",
        &[Holder {
            kind: HolderKind::Room,
            name: P1.into(),
        }],
        T,
        T + 30 * MIN,
    )
    .await?;
    // A holder listed twice is reserved once.
    h.book(
        "appointments/a6",
        &[provider(p3), provider(p3)],
        T,
        T + 30 * MIN,
    )
    .await?;

    let rows = h.rows().await?;
    let appointments: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        appointments,
        [
            "appointments/a1",
            "appointments/a1",
            "appointments/a1",
            "appointments/a2",
            "appointments/a2",
            "appointments/a5",
            "appointments/a6"
        ]
    );
    assert_eq!(h.overlapping_pairs().await?, 0);
    Ok(())
}

async fn release_frees_the_time_and_is_idempotent(h: &Harness) -> anyhow::Result<()> {
    h.book(
        "appointments/a1",
        &[provider(P1), patient("x1")],
        T,
        T + 30 * MIN,
    )
    .await?;
    h.book(
        "appointments/a2",
        &[provider(P1), patient("x1")],
        T + 30 * MIN,
        T + 60 * MIN,
    )
    .await?;
    assert_slot_unavailable(
        h.book("appointments/a3", &[provider(P1)], T, T + 30 * MIN)
            .await,
        "provider",
    );

    h.release("appointments/a1").await?;
    h.release("appointments/a1").await?;
    h.release("appointments/never-booked").await?;
    assert_eq!(
        h.busy(HolderKind::Provider, &[P1], T, T + 60 * MIN).await?[P1],
        vec![("appointments/a2".to_string(), T + 30 * MIN, T + 60 * MIN)]
    );

    h.book(
        "appointments/a3",
        &[provider(P1), patient("x1")],
        T,
        T + 30 * MIN,
    )
    .await?;
    // Reschedule inside one transaction: release, then reserve the new span.
    let mut tx = h.slice.db.write(ORG).await?;
    occupancy::release(tx.conn(), "appointments/a3").await?;
    occupancy::reserve(
        tx.conn(),
        "appointments/a3",
        &[provider(P1), patient("x1")],
        (T - 30 * MIN, T),
        None,
    )
    .await?;
    tx.commit().await?;
    assert_eq!(h.rows().await?.len(), 4);
    assert_eq!(h.overlapping_pairs().await?, 0);
    Ok(())
}

async fn an_empty_or_reversed_span_is_invalid_and_writes_nothing(
    h: &Harness,
) -> anyhow::Result<()> {
    for (start, end) in [(T, T), (T + MIN, T)] {
        let err = match h.book("appointments/a1", &[provider(P1)], start, end).await {
            Ok(()) => anyhow::bail!("[{start}, {end}) was accepted"),
            Err(err) => err,
        };
        assert_eq!(err.code, Code::InvalidArgument, "{err}");
        assert_eq!(err.reason, "INVALID_ARGUMENT", "{err}");
    }
    // No holders at all is the caller's bug, not the client's.
    let err = match h.book("appointments/a1", &[], T, T + MIN).await {
        Ok(()) => anyhow::bail!("no holders was accepted"),
        Err(err) => err,
    };
    assert_eq!(err.code, Code::Internal, "{err}");
    assert!(h.rows().await?.is_empty());
    Ok(())
}

async fn a_storm_of_64_overlapping_writers_admits_exactly_one(h: &Harness) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for i in 0..64i64 {
        let db = h.slice.db.clone();
        tasks.push(tokio::spawn(async move {
            // Spans shifted by a minute each, two hours long: every pair overlaps.
            let start = T + i * MIN;
            let mut tx = db.write(ORG).await?;
            occupancy::reserve(
                tx.conn(),
                &format!("appointments/s{i:02}"),
                &[provider(P1), patient(&format!("x{i}"))],
                (start, start + 120 * MIN),
                None,
            )
            .await?;
            tx.commit().await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await? {
            Ok(()) => won += 1,
            refused => assert_slot_unavailable(refused, "provider"),
        }
    }
    assert_eq!(won, 1);
    let rows = h.rows().await?;
    assert_eq!(
        rows.len(),
        2,
        "the winner's provider and patient rows: {rows:?}"
    );
    assert_eq!(rows[0].0, rows[1].0);
    assert_eq!(h.overlapping_pairs().await?, 0);
    Ok(())
}

/// PostgreSQL only: two transactions without any lock (as bookings run) insert overlapping spans;
/// the second insert waits on the first's uncommitted index entry and, once that commits, the
/// exclusion constraint refuses it as SLOT_UNAVAILABLE.
#[tokio::test]
async fn postgres_exclusion_constraint_catches_an_uncommitted_overlap() -> anyhow::Result<()> {
    let h = Harness::new(Backend::Postgres).await?;
    let db = h.slice.db.clone();
    let mut a = db.read().await?;
    let mut b = db.read().await?;
    let b_pid: i32 = sqlx::query("SELECT pg_backend_pid() AS pid")
        .fetch_one(&mut *b)
        .await?
        .try_get("pid")?;

    sqlx::query("BEGIN").execute(&mut *a).await?;
    occupancy::reserve(
        &mut a,
        "appointments/a",
        &[provider(P1), patient("xa")],
        (T, T + 30 * MIN),
        None,
    )
    .await?;

    let racer = tokio::spawn(async move {
        sqlx::query("BEGIN").execute(&mut *b).await?;
        let result = occupancy::reserve(
            &mut b,
            "appointments/b",
            &[provider(P1), patient("xb")],
            (T + 10 * MIN, T + 40 * MIN),
            None,
        )
        .await;
        sqlx::query("ROLLBACK").execute(&mut *b).await?;
        anyhow::Ok(result)
    });

    // Wait until B's insert is blocked on A's uncommitted row: B cannot have seen A's rows.
    let mut watcher = db.read().await?;
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let wait: Option<String> =
                sqlx::query("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1")
                    .bind(b_pid)
                    .fetch_one(&mut *watcher)
                    .await?
                    .try_get("wait_event_type")?;
            if wait.as_deref() == Some("Lock") {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    sqlx::query("COMMIT").execute(&mut *a).await?;
    anyhow::ensure!(
        matches!(waited, Ok(Ok(()))),
        "B never blocked on A: {waited:?}"
    );

    assert_slot_unavailable(racer.await??, "provider");
    drop((a, watcher));
    let rows = h.rows().await?;
    assert_eq!(rows.len(), 2, "only A's rows: {rows:?}");
    assert!(rows.iter().all(|r| r.0 == "appointments/a"));
    assert_eq!(h.overlapping_pairs().await?, 0);
    h.finish().await
}

/// PostgreSQL only: writers without the organization's lock (as bookings run) reserve the same
/// provider at the same instant, round after round. Each must end in one winner and SLOT_UNAVAILABLE
/// for the rest: without the holders' advisory locks taken before the insert, writers that inserted
/// their index entries together each waited for the other while checking the exclusion constraint,
/// and PostgreSQL broke the deadlock by failing one of them a second later ("deadlock detected").
#[tokio::test]
async fn postgres_simultaneous_writers_of_one_holder_never_deadlock() -> anyhow::Result<()> {
    const WRITERS: usize = 4; // the test slice's pool
    const ROUNDS: i64 = 300; // fails within the first few dozen without the locks (seen here)
    let h = Harness::new(Backend::Postgres).await?;
    for round in 0..ROUNDS {
        let start = T + round * 180 * MIN;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(WRITERS));
        let writers = (0..WRITERS).map(|i| {
            let (db, barrier) = (h.slice.db.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut tx = db.write_constrained().await?;
                barrier.wait().await;
                occupancy::reserve(
                    tx.conn(),
                    &format!("appointments/r{round}-{i}"),
                    &[provider(P1), patient(&format!("x{round}-{i}"))],
                    (start, start + 60 * MIN),
                    None,
                )
                .await?;
                tx.commit().await
            })
        });
        let mut won = 0;
        for writer in futures::future::join_all(writers).await {
            match writer? {
                Ok(()) => won += 1,
                refused => assert_slot_unavailable(refused, "provider"),
            }
        }
        assert_eq!(won, 1, "round {round}");
    }
    assert_eq!(h.overlapping_pairs().await?, 0);
    h.finish().await
}

/// PostgreSQL only: a transaction PostgreSQL aborts to break a deadlock reaches the client as
/// ABORTED (retry), not as an internal error.
#[tokio::test]
async fn postgres_a_deadlock_victim_is_told_to_retry() -> anyhow::Result<()> {
    let h = Harness::new(Backend::Postgres).await?;
    let (mut a, mut b) = (h.slice.db.read().await?, h.slice.db.read().await?);
    for (conn, key) in [(&mut a, 1i64), (&mut b, 2)] {
        sqlx::query("BEGIN").execute(&mut **conn).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut **conn)
            .await?;
    }
    // Each now waits for the other's key: one of them is the victim.
    let (a_waits, b_waits) = (
        "SELECT pg_advisory_xact_lock(2)",
        "SELECT pg_advisory_xact_lock(1)",
    );
    let (first, second) = tokio::join!(
        sqlx::query(a_waits).execute(&mut *a),
        sqlx::query(b_waits).execute(&mut *b)
    );
    let victim = match (first, second) {
        (Err(err), Ok(_)) | (Ok(_), Err(err)) => pm_runtime::ApiError::from(err),
        other => anyhow::bail!("expected exactly one deadlock victim: {other:?}"),
    };
    assert_eq!(
        (victim.code, victim.reason),
        (Code::Aborted, "CONCURRENT_TRANSACTION")
    );
    for conn in [&mut a, &mut b] {
        sqlx::query("ROLLBACK").execute(&mut **conn).await?;
    }
    drop((a, b));
    h.finish().await
}

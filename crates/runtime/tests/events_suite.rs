//! The shared event mechanisms on SQLite and PostgreSQL: idempotent writes to a typed table, the
//! generic outbox's stream, and a follower whose cursor commits with its effects, so that every
//! event's effect is written exactly once whatever fails, repeats or runs twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use pm_runtime::config::Backend;
use pm_runtime::follower::{self, Follow, FollowerConfig, Source};
use pm_runtime::idempotency::Idempotent;
use pm_runtime::outbox::{self, EventStream, Outbox};
use pm_runtime::testing::TestSlice;
use pm_runtime::{ApiError, ApiResult, Db};
use sqlx::AnyConnection;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

/// An event of the test's own (any message with the envelope fields will do).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TestEvent {
    #[prost(int64, tag = "1")]
    pub sequence: i64,
    #[prost(string, tag = "2")]
    pub event_id: String,
    #[prost(message, optional, tag = "3")]
    pub time: Option<prost_types::Timestamp>,
    #[prost(string, tag = "10")]
    pub what: String,
}

impl pm_api::Event for TestEvent {
    fn sequence(&self) -> i64 {
        self.sequence
    }
    fn set_sequence(&mut self, sequence: i64) {
        self.sequence = sequence;
    }
    fn event_id(&self) -> &str {
        &self.event_id
    }
    fn stamp(&mut self, event_id: String, time: prost_types::Timestamp) {
        self.event_id = event_id;
        self.time = Some(time);
    }
}

fn event(what: &str) -> TestEvent {
    TestEvent {
        what: what.into(),
        ..Default::default()
    }
}

pub struct Harness {
    slice: TestSlice,
    shutdown: CancellationToken,
}

impl Harness {
    pub async fn new(backend: Backend) -> anyhow::Result<Harness> {
        let slice = TestSlice::open(
            backend,
            &[&pm_runtime::docstore::MIGRATIONS, &outbox::MIGRATIONS],
        )
        .await?;
        // A typed table of effects, as a follower's (Billing's charges) would be. No unique key:
        // a duplicate effect would show as a second row.
        let mut conn = slice.db.read().await?;
        sqlx::query("CREATE TABLE effects (what TEXT NOT NULL, request_id TEXT NOT NULL)")
            .execute(&mut *conn)
            .await?;
        drop(conn);
        Ok(Harness {
            slice,
            shutdown: CancellationToken::new(),
        })
    }

    fn db(&self) -> &Db {
        &self.slice.db
    }

    pub async fn finish(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.slice.finish().await
    }
}

async fn effects(db: &Db) -> ApiResult<Vec<String>> {
    let mut conn = db.read().await?;
    Ok(sqlx::query_scalar("SELECT what FROM effects ORDER BY what")
        .fetch_all(&mut *conn)
        .await?)
}

async fn insert_effect(conn: &mut AnyConnection, what: &str, request_id: &str) -> ApiResult<()> {
    sqlx::query("INSERT INTO effects (what, request_id) VALUES ($1, $2)")
        .bind(what.to_string())
        .bind(request_id.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Stages events in one committed transaction each.
async fn publish(outbox: &Outbox<TestEvent>, db: &Db, whats: &[&str]) -> ApiResult<()> {
    for what in whats {
        let mut tx = db.write("test-org").await?;
        outbox::append(tx.conn(), event(what)).await?;
        tx.commit().await?;
    }
    outbox.committed();
    Ok(())
}

async fn idempotent_writes_to_a_typed_table_happen_once(h: &Harness) -> anyhow::Result<()> {
    let request = event("the request");
    let request_id = uuid::Uuid::new_v4().to_string();
    let key = Idempotent::new("/test.Service/Post", &request_id, &request)?;
    let write = async |conn: &mut AnyConnection| {
        insert_effect(conn, "posted", &request_id).await?;
        Ok(event("the answer"))
    };
    let first = key.once(h.db(), "test-org", write).await?;
    let again = key
        .once(h.db(), "test-org", async |conn: &mut AnyConnection| {
            insert_effect(conn, "posted twice", &request_id).await?;
            Ok(event("another answer"))
        })
        .await?;
    assert_eq!(again, first, "a retry gets the first answer");
    assert_eq!(effects(h.db()).await?, ["posted"], "and writes nothing");

    // The same request_id with another request: refused, nothing written.
    let other = Idempotent::new("/test.Service/Post", &request_id, &event("different"))?;
    let err = other
        .once(h.db(), "test-org", async |conn: &mut AnyConnection| {
            insert_effect(conn, "reused", &request_id).await?;
            Ok(event("x"))
        })
        .await
        .expect_err("a reused request_id is refused");
    assert_eq!(err.reason, "REQUEST_ID_REUSED");
    assert_eq!(effects(h.db()).await?, ["posted"]);

    // A failed write records no answer: the retry writes.
    let failing_id = uuid::Uuid::new_v4().to_string();
    let failing = Idempotent::new("/test.Service/Post", &failing_id, &request)?;
    let err = failing
        .once(h.db(), "test-org", async |conn: &mut AnyConnection| {
            insert_effect(conn, "rolled back", &failing_id).await?;
            Err::<TestEvent, _>(ApiError::precondition("NOPE", "refused"))
        })
        .await
        .expect_err("the write fails");
    assert_eq!(err.reason, "NOPE");
    failing
        .once(h.db(), "test-org", async |conn: &mut AnyConnection| {
            insert_effect(conn, "retried", &failing_id).await?;
            Ok(event("ok"))
        })
        .await?;
    assert_eq!(effects(h.db()).await?, ["posted", "retried"]);

    assert!(Idempotent::new("/test.Service/Post", "not-a-uuid", &request).is_err());
    Ok(())
}

async fn the_outbox_streams_in_order_and_resumes_after_a_sequence(
    h: &Harness,
) -> anyhow::Result<()> {
    let outbox = Outbox::<TestEvent>::start(h.db().clone(), "test.pm.dev", h.shutdown.clone());
    publish(&outbox, h.db(), &["a", "b", "c", "d"]).await?;
    let all: Vec<TestEvent> = take(outbox.stream(0, |_| true), 4).await?;
    let sequences: Vec<i64> = all.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [1, 2, 3, 4]);
    let whats: Vec<&str> = all.iter().map(|e| e.what.as_str()).collect();
    assert_eq!(whats, ["a", "b", "c", "d"]);
    assert!(
        all.iter()
            .all(|e| !e.event_id.is_empty() && e.time.is_some())
    );

    // Resuming after 2, with a filter; a later event arrives on the open stream.
    let stream = outbox.stream(2, |e: &TestEvent| e.what != "c");
    publish(&outbox, h.db(), &["e"]).await?;
    let rest: Vec<String> = take(stream, 2).await?.into_iter().map(|e| e.what).collect();
    assert_eq!(rest, ["d", "e"]);
    Ok(())
}

/// The first `n` events of a stream, within 10 s.
async fn take(stream: EventStream<TestEvent>, n: usize) -> anyhow::Result<Vec<TestEvent>> {
    let events =
        tokio::time::timeout(Duration::from_secs(10), stream.take(n).collect::<Vec<_>>()).await?;
    Ok(events.into_iter().collect::<Result<Vec<_>, _>>()?)
}

/// Writes one effect per event in the follower's transaction; fails once on the event whose
/// `what` is `fail_on` (before anything of its batch commits).
struct Recorder {
    fail_on: &'static str,
    failures_left: AtomicI64,
}

impl Recorder {
    fn failing_once_on(what: &'static str) -> Self {
        Recorder {
            fail_on: what,
            failures_left: AtomicI64::new(1),
        }
    }
}

impl Follow<TestEvent> for Arc<Recorder> {
    type Effect = (String, String);

    async fn prepare(
        &self,
        event: &TestEvent,
        request_id: &str,
    ) -> ApiResult<Option<(String, String)>> {
        if event.what == self.fail_on && self.failures_left.fetch_sub(1, Ordering::SeqCst) > 0 {
            return Err(ApiError::unavailable("a downstream call", &"down"));
        }
        Ok(Some((event.what.clone(), request_id.to_string())))
    }

    async fn write(&self, conn: &mut AnyConnection, effect: (String, String)) -> ApiResult<()> {
        insert_effect(conn, &effect.0, &effect.1).await
    }
}

async fn stored_events(db: &Db) -> ApiResult<Vec<TestEvent>> {
    outbox::sequence(db).await?;
    let mut conn = db.read().await?;
    outbox::read_after(&mut conn, 0, 1000).await
}

async fn a_failed_batch_writes_nothing_and_moves_no_cursor(h: &Harness) -> anyhow::Result<()> {
    let outbox = Outbox::<TestEvent>::start(h.db().clone(), "test.pm.dev", h.shutdown.clone());
    publish(&outbox, h.db(), &["a", "b", "c"]).await?;
    let events = stored_events(h.db()).await?;
    let config = FollowerConfig::named("recorder");
    let recorder = Arc::new(Recorder::failing_once_on("c"));

    let err = follower::apply(h.db(), &config, &recorder, 0, &events)
        .await
        .expect_err("the third event's preparation fails");
    assert_eq!(err.code, tonic::Code::Unavailable);
    assert!(effects(h.db()).await?.is_empty(), "a and b did not commit");
    assert_eq!(follower::cursor(h.db(), "recorder").await?, 0);

    assert_eq!(
        follower::apply(h.db(), &config, &recorder, 0, &events).await?,
        3
    );
    assert_eq!(effects(h.db()).await?, ["a", "b", "c"]);
    assert_eq!(follower::cursor(h.db(), "recorder").await?, 3);

    // A source that redelivers from the start (at least once): nothing is applied twice.
    assert_eq!(
        follower::apply(h.db(), &config, &recorder, 3, &events).await?,
        3
    );
    assert_eq!(effects(h.db()).await?, ["a", "b", "c"]);

    // The request ids are derived from the events: the same on every attempt, one per event.
    let mut conn = h.db().read().await?;
    let ids: Vec<String> = sqlx::query_scalar("SELECT request_id FROM effects ORDER BY what")
        .fetch_all(&mut *conn)
        .await?;
    let expected: Vec<String> = events
        .iter()
        .map(|e| follower::request_id("recorder", e))
        .collect();
    assert_eq!(ids, expected);
    Ok(())
}

async fn a_replica_behind_the_cursor_rolls_back(h: &Harness) -> anyhow::Result<()> {
    let outbox = Outbox::<TestEvent>::start(h.db().clone(), "test.pm.dev", h.shutdown.clone());
    publish(&outbox, h.db(), &["a", "b"]).await?;
    let events = stored_events(h.db()).await?;
    let config = FollowerConfig::named("recorder");
    let recorder = Arc::new(Recorder::failing_once_on("none"));
    follower::apply(h.db(), &config, &recorder, 0, &events[..1]).await?;
    follower::apply(h.db(), &config, &recorder, 1, &events).await?;
    // A second replica that read the cursor at 1 before the first moved it to 2.
    let err = follower::apply(h.db(), &config, &recorder, 1, &events)
        .await
        .expect_err("the cursor moved");
    assert_eq!(err.reason, "CURSOR_MOVED");
    assert_eq!(
        effects(h.db()).await?,
        ["a", "b"],
        "its effects rolled back"
    );
    Ok(())
}

/// Redelivers the outbox from sequence 0 on every subscription, whatever the cursor.
struct FromTheStart(Outbox<TestEvent>);

impl Source<TestEvent> for FromTheStart {
    async fn subscribe(&self, _after: i64) -> ApiResult<EventStream<TestEvent>> {
        Ok(self.0.stream(0, |_| true))
    }
}

async fn a_running_follower_applies_every_event_once(h: &Harness) -> anyhow::Result<()> {
    let outbox = Outbox::<TestEvent>::start(h.db().clone(), "test.pm.dev", h.shutdown.clone());
    publish(&outbox, h.db(), &["a", "b", "c"]).await?;
    let config = FollowerConfig {
        batch: 2,
        retry: Duration::from_millis(50),
        ..FollowerConfig::named("recorder")
    };
    // It fails once on "d" (then resubscribes from its cursor), and its source repeats everything.
    let recorder = Arc::new(Recorder::failing_once_on("d"));
    let task = follower::spawn(
        h.db().clone(),
        config,
        FromTheStart(outbox.clone()),
        recorder.clone(),
        h.shutdown.clone(),
    );
    publish(&outbox, h.db(), &["d", "e"]).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while effects(h.db()).await?.len() < 5 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(effects(h.db()).await?, ["a", "b", "c", "d", "e"]);
    // "d" was prepared twice: it failed once (1 -> 0), then it was applied (0 -> -1).
    assert_eq!(recorder.failures_left.load(Ordering::SeqCst), -1);
    assert_eq!(follower::cursor(h.db(), "recorder").await?, 5);
    h.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await??;
    Ok(())
}

pm_runtime::on_both_backends!(crate::Harness;
    idempotent_writes_to_a_typed_table_happen_once,
    the_outbox_streams_in_order_and_resumes_after_a_sequence,
    a_failed_batch_writes_nothing_and_moves_no_cursor,
    a_replica_behind_the_cursor_rolls_back,
    a_running_follower_applies_every_event_once,
);

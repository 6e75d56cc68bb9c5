//! Appointment spans on SQLite and PostgreSQL: the calendar's window query returns exactly the
//! appointments overlapping the window (touching ones excluded) for each kind of scope, every write
//! path of the store keeps an appointment's span in step (insert, batch insert, replace, transition),
//! and the back-fill of appointments older than the table runs once and writes nothing twice.

use pm_api::scheduling::Appointment;
use pm_runtime::ApiResult;
use pm_runtime::docstore::{self, VerbCall};
use pm_scheduling::occupancy;
use pm_scheduling::store::{self, APPOINTMENT, SpanScope, SpansReady};
use pm_testing::TestSlice;
use sqlx::Row;

pub struct Harness {
    slice: TestSlice,
}

impl Harness {
    pub async fn new(backend: pm_runtime::config::Backend) -> anyhow::Result<Harness> {
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

    /// Inserts through the store, in a write transaction of its own.
    async fn insert(&self, a: Appointment) -> ApiResult<Appointment> {
        let mut tx = self.slice.db.write(ORG).await?;
        let stored = store::insert_appointment(tx.conn(), a).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Inserts behind the store's back (no span): an appointment written before the table existed.
    async fn insert_without_span(&self, a: Appointment) -> anyhow::Result<()> {
        let mut tx = self.slice.db.write(ORG).await?;
        docstore::insert(tx.conn(), &APPOINTMENT, a).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The names the window query returns for `scope` over `[from, until)` minutes after [`T`].
    async fn window(
        &self,
        scope: SpanScope<'_>,
        from: i64,
        until: i64,
    ) -> anyhow::Result<Vec<String>> {
        let mut conn = self.slice.db.read().await?;
        let found =
            store::appointments_in_window(&mut conn, scope, T + from * MIN, T + until * MIN)
                .await?;
        Ok(found.into_iter().map(|s| s.resource.name).collect())
    }

    /// Every span row as (appointment, provider, start, end), by appointment.
    async fn spans(&self) -> anyhow::Result<Vec<(String, String, i64, i64)>> {
        let mut conn = self.slice.db.read().await?;
        let rows = sqlx::query(
            "SELECT appointment, provider, start_us, end_us FROM appointment_spans \
             ORDER BY appointment",
        )
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("appointment")?,
                    r.try_get("provider")?,
                    r.try_get("start_us")?,
                    r.try_get("end_us")?,
                ))
            })
            .collect()
    }

    async fn reset_backfill_marker(&self) -> anyhow::Result<()> {
        let mut tx = self.slice.db.write(ORG).await?;
        sqlx::query("UPDATE appointment_spans_backfill SET done = 0")
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

const ORG: &str = "organizations/acme";
const UNIT_A: &str = "organizations/acme/units/a";
const UNIT_B: &str = "organizations/acme/units/b";
const P1: &str = "organizations/acme/providers/p1";
const P2: &str = "organizations/acme/providers/p2";
const L1: &str = "organizations/acme/locations/l1";
const L2: &str = "organizations/acme/locations/l2";
/// 2027-01-15T08:00:00Z in microseconds.
const T: i64 = 1_799_999_200_000_000;
const MIN: i64 = 60_000_000;

fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).unwrap_or_default(),
    }
}

fn interval(start: i64, end: i64) -> Option<pm_api::types::Interval> {
    Some(pm_api::types::Interval {
        start_time: Some(timestamp(T + start * MIN)),
        end_time: Some(timestamp(T + end * MIN)),
    })
}

/// An appointment `id` of acme over `[start, end)` minutes after [`T`].
fn appointment(id: &str, unit: &str, provider: &str, start: i64, end: i64) -> Appointment {
    Appointment {
        name: format!("{ORG}/appointments/{id}"),
        unit: unit.into(),
        provider: provider.into(),
        location: if provider == P1 { L1 } else { L2 }.into(),
        patient: format!("{ORG}/patients/x-{id}"),
        interval: interval(start, end),
        ..Default::default()
    }
}

fn named(ids: &[&str]) -> Vec<String> {
    ids.iter()
        .map(|id| format!("{ORG}/appointments/{id}"))
        .collect()
}

pm_testing::on_both_backends!(
    crate::Harness;
    the_window_returns_exactly_the_overlapping_appointments_of_each_scope,
    every_write_path_of_the_store_keeps_the_span_in_step,
    the_backfill_writes_missing_spans_once_and_nothing_twice,
);

async fn the_window_returns_exactly_the_overlapping_appointments_of_each_scope(
    h: &Harness,
) -> anyhow::Result<()> {
    // The window is [60, 120) minutes after T.
    for a in [
        appointment("past", UNIT_A, P1, -600, -570),
        appointment("touching-before", UNIT_A, P1, 30, 60),
        appointment("over-the-start", UNIT_A, P1, 45, 75),
        appointment("inside", UNIT_B, P2, 80, 90),
        appointment("over-the-end", UNIT_B, P2, 110, 130),
        appointment("touching-after", UNIT_A, P1, 120, 150),
        appointment("around", UNIT_A, P2, 0, 300),
        appointment("later", UNIT_B, P2, 600, 630),
    ] {
        h.insert(a).await?;
    }
    // Another organization's appointment in the window.
    h.insert(Appointment {
        name: "organizations/other/appointments/theirs".into(),
        unit: "organizations/other/units/a".into(),
        provider: "organizations/other/providers/p1".into(),
        location: "organizations/other/locations/l1".into(),
        patient: "organizations/other/patients/x".into(),
        interval: interval(70, 80),
        ..Default::default()
    })
    .await?;

    let in_window = named(&["around", "inside", "over-the-end", "over-the-start"]);
    assert_eq!(
        h.window(SpanScope::Organization(ORG), 60, 120).await?,
        in_window
    );
    let units = [UNIT_A.to_string()];
    assert_eq!(
        h.window(SpanScope::Units(&units), 60, 120).await?,
        named(&["around", "over-the-start"])
    );
    let both = [UNIT_A.to_string(), UNIT_B.to_string()];
    assert_eq!(h.window(SpanScope::Units(&both), 60, 120).await?, in_window);
    assert_eq!(h.window(SpanScope::Units(&[]), 60, 120).await?, named(&[]));
    assert_eq!(
        h.window(SpanScope::Provider(P2), 60, 120).await?,
        named(&["around", "inside", "over-the-end"])
    );
    assert_eq!(
        h.window(SpanScope::Location(L1), 60, 120).await?,
        named(&["over-the-start"])
    );
    assert_eq!(
        h.window(
            SpanScope::Patient(&format!("{ORG}/patients/x-inside")),
            60,
            120
        )
        .await?,
        named(&["inside"])
    );
    // The past is found when the window asks for it; the gap between "around" (ending at 300) and
    // "later" (starting at 600) holds nothing.
    assert_eq!(
        h.window(SpanScope::Organization(ORG), -610, -590).await?,
        named(&["past"])
    );
    assert_eq!(
        h.window(SpanScope::Organization(ORG), 300, 600).await?,
        named(&[])
    );
    Ok(())
}

async fn every_write_path_of_the_store_keeps_the_span_in_step(h: &Harness) -> anyhow::Result<()> {
    // A booking's batch insert.
    let (booked, inserts) =
        store::appointment_insert_statements(appointment("booked", UNIT_A, P1, 0, 30));
    pm_runtime::batch::commit_inserts(&h.slice.db, inserts, async |_| Ok(())).await?;
    assert_eq!(booked.etag, "r1");
    // A series' insert in a transaction.
    h.insert(appointment("series", UNIT_A, P1, 60, 90)).await?;
    assert_eq!(
        h.spans().await?,
        vec![
            (named(&["booked"])[0].clone(), P1.into(), T, T + 30 * MIN),
            (
                named(&["series"])[0].clone(),
                P1.into(),
                T + 60 * MIN,
                T + 90 * MIN
            ),
        ]
    );

    // A reschedule (a transition) moves the span, to another provider too.
    let call = VerbCall {
        method: "/pm.test.v1.Test/RescheduleAppointment",
        name: &booked.name,
        etag: "",
        request_id: "",
        request_hash: String::new(),
    };
    let mut seen_span_in_transaction = false;
    store::transition_appointment(
        &h.slice.db,
        call,
        async |_, a| {
            a.provider = P2.into();
            a.location = L2.into();
            a.interval = interval(240, 270);
            Ok(())
        },
        async |conn, a| {
            // `after` runs once the span is written, in the same transaction.
            let row = sqlx::query("SELECT start_us FROM appointment_spans WHERE appointment = $1")
                .bind(a.name.as_str())
                .fetch_one(&mut *conn)
                .await?;
            seen_span_in_transaction = row.try_get::<i64, _>("start_us")? == T + 240 * MIN;
            Ok(())
        },
    )
    .await?;
    assert!(seen_span_in_transaction);
    assert_eq!(h.window(SpanScope::Provider(P1), 0, 30).await?, named(&[]));
    assert_eq!(
        h.window(SpanScope::Provider(P2), 240, 270).await?,
        named(&["booked"])
    );
    assert_eq!(
        h.window(SpanScope::Location(L2), 0, 300).await?,
        named(&["booked"])
    );

    // A transition refused by `change` leaves the span where it was.
    let call = VerbCall {
        method: "/pm.test.v1.Test/RescheduleAppointment",
        name: &booked.name,
        etag: "",
        request_id: "",
        request_hash: String::new(),
    };
    let refused = store::transition_appointment(
        &h.slice.db,
        call,
        async |_, a| {
            a.interval = interval(500, 530);
            Err(pm_runtime::ApiError::invalid("interval", "refused"))
        },
        async |_, _| Ok(()),
    )
    .await;
    assert!(refused.is_err());
    assert_eq!(
        h.window(SpanScope::Organization(ORG), 500, 530).await?,
        named(&[])
    );

    // A replace (a hold's expiry, any verb) in a transaction moves it too.
    let mut tx = h.slice.db.write(ORG).await?;
    let stored = store::live_appointment(tx.conn(), &named(&["series"])[0])
        .await?
        .ok_or_else(|| anyhow::anyhow!("the series appointment is missing"))?;
    let mut moved = stored.resource;
    moved.interval = interval(1000, 1030);
    store::replace_appointment(tx.conn(), stored.revision, moved).await?;
    tx.commit().await?;
    assert_eq!(
        h.window(SpanScope::Organization(ORG), 60, 90).await?,
        named(&[])
    );
    assert_eq!(
        h.window(SpanScope::Organization(ORG), 1029, 2000).await?,
        named(&["series"])
    );
    assert_eq!(h.spans().await?.len(), 2);
    Ok(())
}

async fn the_backfill_writes_missing_spans_once_and_nothing_twice(
    h: &Harness,
) -> anyhow::Result<()> {
    // Appointments from before the table, one written since (with its span), one without a
    // valid interval (no calendar shows it).
    h.insert_without_span(appointment("old-1", UNIT_A, P1, 0, 30))
        .await?;
    h.insert_without_span(appointment("old-2", UNIT_B, P2, 60, 90))
        .await?;
    h.insert_without_span(Appointment {
        interval: None,
        ..appointment("no-interval", UNIT_A, P1, 0, 30)
    })
    .await?;
    h.insert(appointment("new", UNIT_A, P1, 120, 150)).await?;
    assert_eq!(
        h.window(SpanScope::Organization(ORG), 0, 200).await?,
        named(&["new"])
    );

    assert_eq!(store::backfill_spans(&h.slice.db).await?, Some(2));
    let spans = h.spans().await?;
    assert_eq!(spans.len(), 3);
    assert_eq!(
        h.window(SpanScope::Organization(ORG), 0, 200).await?,
        named(&["new", "old-1", "old-2"])
    );
    // Done once: the marker says so.
    assert_eq!(store::backfill_spans(&h.slice.db).await?, None);
    // Run again regardless (the marker lost): it writes nothing and changes nothing.
    h.reset_backfill_marker().await?;
    assert_eq!(store::backfill_spans(&h.slice.db).await?, Some(0));
    assert_eq!(h.spans().await?, spans);
    // The service's wrapper: runs it (nothing left to do) and returns once done.
    SpansReady::default().ensure(&h.slice.db).await?;
    SpansReady::default().ensure(&h.slice.db).await?;
    assert_eq!(h.spans().await?, spans);
    Ok(())
}

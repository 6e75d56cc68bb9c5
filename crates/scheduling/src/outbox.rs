//! Scheduling's events through the shared transactional outbox ([`pm_runtime::outbox`]): an
//! appointment's change or a completed encounter is staged in the transaction of the change itself.

use pm_api::scheduling::SchedulingEvent;
use pm_api::scheduling::scheduling_event::Kind as EventKind;
use pm_runtime::ApiResult;
use pm_runtime::batch::Insert;
use sqlx::AnyConnection;

pub use pm_runtime::outbox::{head, sequence};

/// Scheduling's outbox.
pub type Outbox = pm_runtime::outbox::Outbox<SchedulingEvent>;

fn event(kind: EventKind) -> SchedulingEvent {
    SchedulingEvent {
        kind: Some(kind),
        ..Default::default()
    }
}

/// Stages one event in the caller's write transaction: one insert, no lock.
pub async fn append(conn: &mut AnyConnection, kind: EventKind) -> ApiResult<()> {
    pm_runtime::outbox::append(conn, event(kind)).await
}

/// The statement [`append`] runs, for a write that sends its statements together.
pub fn staging_insert(kind: EventKind) -> Insert {
    pm_runtime::outbox::staging_insert(event(kind))
}

/// Up to `limit` events after `after`, in sequence order.
pub async fn read_after(
    conn: &mut AnyConnection,
    after: i64,
    limit: i64,
) -> ApiResult<Vec<SchedulingEvent>> {
    pm_runtime::outbox::read_after(conn, after, limit).await
}

//! The double-booking guard: an appointment (or a hold, a short-lived appointment) occupies its
//! padded time span for each of its holders (provider, patient, optionally a room), and two
//! occupancies of the same holder never overlap.
//!
//! Table `occupancy(appointment, kind, holder, start_us, end_us)` ([`MIGRATIONS`]), spans half-open
//! `[start_us, end_us)` in microseconds since the Unix epoch, UTC, so touching spans do not conflict.
//! The guarantee rests on a different mechanism per backend:
//! - PostgreSQL: exclusion constraints (one per kind, `holder =` and `int8range &&`), which hold
//!   whatever the writers do, with or without locks: [`reserve`] just inserts, and a violation's
//!   constraint name says which kind of holder conflicted (the only client-safe detail it has).
//! - SQLite: the pre-check alone, which is safe because every write runs under the slice's
//!   process-wide writer lock (`Db::write`), so nothing can commit between check and insert.

use std::collections::HashMap;

use pm_runtime::batch::{Insert, Value};
use pm_runtime::db::{Migrations, lock_key};
use pm_runtime::{ApiError, ApiResult};
use sqlx::{AnyConnection, Row};

/// What holds time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HolderKind {
    /// The provider who sees the patient.
    Provider,
    /// The patient.
    Patient,
    /// The room the visit needs, if any.
    Room,
}

impl HolderKind {
    const ALL: [HolderKind; 3] = [HolderKind::Provider, HolderKind::Patient, HolderKind::Room];

    /// The stored `kind` value: `provider`, `patient` or `room`.
    pub fn as_str(self) -> &'static str {
        match self {
            HolderKind::Provider => "provider",
            HolderKind::Patient => "patient",
            HolderKind::Room => "room",
        }
    }

    /// The kind whose PostgreSQL exclusion constraint is `constraint` (see the migration).
    fn of_constraint(constraint: &str) -> Option<HolderKind> {
        let kind = constraint
            .strip_prefix("occupancy_")?
            .strip_suffix("_overlap")?;
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

/// One holder of an appointment: kind + resource name (e.g. `organizations/acme/providers/p1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// What kind of holder.
    pub kind: HolderKind,
    /// Its resource name.
    pub name: String,
}

/// This module's tables (version 1 of the scheduling slice; shared sets use 1000 and up).
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: || sqlx::migrate!("./migrations/sqlite"),
    postgres: || sqlx::migrate!("./migrations/postgres"),
};

/// SQLSTATE exclusion_violation.
const EXCLUSION_VIOLATION: &str = "23P01";

/// The refusal for a taken slot. It names the holder's kind only: the holder's name may identify a
/// patient, and errors carry no PHI.
fn slot_unavailable(kind: &str) -> ApiError {
    ApiError::precondition(
        "SLOT_UNAVAILABLE",
        format!("the {kind} already has an appointment or hold overlapping this time"),
    )
    .with_meta("holderKind", kind)
}

/// Inserts one occupancy row per holder for `appointment` over `[start_micros, end_micros)` (buffers
/// included: the caller pads the span), lapsing at `expire_micros` for a hold (`None`: a booking).
/// Runs inside the caller's write transaction (a `pm_runtime::db::WriteTx`'s connection, or a
/// PostgreSQL transaction).
///
/// A holder listed twice is reserved once. If any holder already has an overlapping occupancy (a
/// lapsed hold included: its rows go when it is marked expired), fails with FAILED_PRECONDITION
/// `SLOT_UNAVAILABLE` (metadata `holderKind`) having written nothing. On PostgreSQL that is the
/// exclusion constraints' verdict, taken by the one insert (a conflict with a writer not yet committed
/// waits for it), which leaves the transaction aborted: the caller rolls back. On SQLite a check
/// comes first, safe under the writer lock. Rescheduling an appointment means [`release`] first: its
/// own old rows would conflict.
pub async fn reserve(
    conn: &mut AnyConnection,
    appointment: &str,
    holders: &[Holder],
    span: (i64, i64),
    expire_micros: Option<i64>,
) -> ApiResult<()> {
    let postgres = conn.backend_name() == "PostgreSQL";
    let insert = reserve_statement(appointment, holders, span, expire_micros, postgres)?;
    if !postgres {
        check_free(conn, holders, span).await?;
    }
    insert.execute(conn).await
}

/// The one statement [`reserve`] inserts with, for a write that sends its statements together
/// ([`pm_runtime::batch`]; on SQLite its guard must be [`check_free`]). On PostgreSQL an overlap
/// fails it with SLOT_UNAVAILABLE, from the exclusion constraint named after the holder's kind.
///
/// On PostgreSQL (`postgres`) the statement first takes a transaction-scoped advisory lock per
/// holder, in key order, before inserting. Without them, writers that book the same holder at the
/// same instant each insert their index entry, then each waits for the other's transaction while
/// checking the exclusion constraint: a deadlock, resolved one victim per `deadlock_timeout` (1 s),
/// which under a storm of 64 cascaded for seconds until clients gave up and nobody won. With them,
/// the second writer waits for the first to commit, then meets its committed row: SLOT_UNAVAILABLE
/// at once. Writers of different holders take different keys and do not wait for each other.
pub fn reserve_statement(
    appointment: &str,
    holders: &[Holder],
    (start_micros, end_micros): (i64, i64),
    expire_micros: Option<i64>,
    postgres: bool,
) -> ApiResult<Insert> {
    if start_micros >= end_micros {
        return Err(ApiError::invalid(
            "end_time",
            "must be after the start time (buffers included)",
        ));
    }
    let holders = distinct(holders);
    if holders.is_empty() {
        return Err(ApiError::internal(
            "occupancy",
            &"an appointment needs at least one holder",
        ));
    }
    // One row per holder: `($1, $2, $3, $4, $5, $6), ($1, $2, $3, $4, $7, $8), ...`.
    let rows = (0..holders.len())
        .map(|i| format!("($1, $2, $3, $4, ${}, ${})", 2 * i + 5, 2 * i + 6))
        .collect::<Vec<_>>()
        .join(", ");
    let mut values: Vec<Value> = vec![
        appointment.into(),
        start_micros.into(),
        end_micros.into(),
        expire_micros.into(),
    ];
    for holder in &holders {
        values.push(holder.kind.as_str().into());
        values.push(holder.name.as_str().into());
    }
    let columns = "occupancy (appointment, start_us, end_us, expire_us, kind, holder)";
    let sql = if postgres {
        // The keys, sorted so that writers sharing holders lock them in one order; the scalar
        // subquery runs once, before the first row is inserted.
        let mut keys: Vec<i64> = holders
            .iter()
            .map(|h| lock_key(&format!("occupancy/{}/{}", h.kind.as_str(), h.name)))
            .collect();
        keys.sort_unstable();
        let first = values.len() + 1;
        let key_rows = (first..first + keys.len())
            .map(|i| format!("(${i}::BIGINT)"))
            .collect::<Vec<_>>()
            .join(", ");
        values.extend(keys.into_iter().map(Value::from));
        format!(
            "INSERT INTO {columns} SELECT * FROM (VALUES {rows}) AS new_rows \
             WHERE (SELECT COUNT(pg_advisory_xact_lock(k)) FROM (VALUES {key_rows}) AS keys (k)) > 0"
        )
    } else {
        format!("INSERT INTO {columns} VALUES {rows}")
    };
    Ok(Insert::new("occupancy", sql, values).refusing(|e| {
        // The constraint's name gives the kind of holder (PostgreSQL only).
        (e.code().as_deref() == Some(EXCLUSION_VIOLATION)).then(|| {
            let kind = e
                .constraint()
                .and_then(HolderKind::of_constraint)
                .map_or("unknown", HolderKind::as_str);
            slot_unavailable(kind)
        })
    }))
}

/// SLOT_UNAVAILABLE when any of `holders` already has an occupancy overlapping the span (a lapsed
/// hold included). What SQLite checks in place of PostgreSQL's exclusion constraints, safe under its
/// writer lock.
pub async fn check_free(
    conn: &mut AnyConnection,
    holders: &[Holder],
    (start_micros, end_micros): (i64, i64),
) -> ApiResult<()> {
    let holders = distinct(holders);
    match first_conflict(conn, &holders, start_micros, end_micros).await? {
        Some(kind) => Err(slot_unavailable(&kind)),
        None => Ok(()),
    }
}

/// A holder listed twice is reserved once: dropping repeats keeps a careless caller from a
/// primary-key error (INTERNAL).
fn distinct(holders: &[Holder]) -> Vec<&Holder> {
    holders
        .iter()
        .enumerate()
        .filter(|(i, h)| !holders[..*i].contains(h))
        .map(|(_, h)| h)
        .collect()
}

/// The kind of the first holder with an occupancy overlapping the span, in one query.
async fn first_conflict(
    conn: &mut AnyConnection,
    holders: &[&Holder],
    start_micros: i64,
    end_micros: i64,
) -> ApiResult<Option<String>> {
    let any_holder = (0..holders.len())
        .map(|i| format!("(kind = ${} AND holder = ${})", 2 * i + 3, 2 * i + 4))
        .collect::<Vec<_>>()
        .join(" OR ");
    let sql = format!(
        "SELECT kind FROM occupancy WHERE start_us < $1 AND end_us > $2 AND ({any_holder}) LIMIT 1"
    );
    let mut query = sqlx::query(&sql).bind(end_micros).bind(start_micros);
    for holder in holders {
        query = query.bind(holder.kind.as_str()).bind(holder.name.as_str());
    }
    let row = query.fetch_optional(&mut *conn).await?;
    Ok(row.map(|r| r.try_get("kind")).transpose()?)
}

/// Deletes the occupancy rows of `appointment` (cancel, no-show, expired hold, reschedule), freeing
/// its time. Idempotent.
pub async fn release(conn: &mut AnyConnection, appointment: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM occupancy WHERE appointment = $1")
        .bind(appointment)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The holds whose lapse has passed by `now_micros` and still hold time (not yet marked expired),
/// of `organization` only when given, at most `limit`, earliest lapse first.
pub async fn lapsed(
    conn: &mut AnyConnection,
    organization: Option<&str>,
    now_micros: i64,
    limit: i64,
) -> ApiResult<Vec<String>> {
    let of_organization = if organization.is_some() {
        "AND substr(appointment, 1, length($3)) = $3"
    } else {
        ""
    };
    let sql = format!(
        "SELECT appointment FROM occupancy WHERE expire_us IS NOT NULL AND expire_us <= $1 \
         {of_organization} GROUP BY appointment ORDER BY MIN(expire_us) LIMIT $2"
    );
    let mut query = sqlx::query_scalar(&sql).bind(now_micros).bind(limit);
    if let Some(organization) = organization {
        query = query.bind(format!("{organization}/"));
    }
    Ok(query.fetch_all(&mut *conn).await?)
}

/// Makes `appointment`'s occupancy lapse at `expire_micros` (a hold), or never (`None`: a booking,
/// or a hold confirmed).
pub async fn set_expiry(
    conn: &mut AnyConnection,
    appointment: &str,
    expire_micros: Option<i64>,
) -> ApiResult<()> {
    sqlx::query("UPDATE occupancy SET expire_us = $1 WHERE appointment = $2")
        .bind(expire_micros)
        .bind(appointment)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The occupied spans of each named holder of `kind` that overlap `[from_micros, until_micros)`, as
/// `(appointment, start_micros, end_micros)` in start order, grouped by holder name. Holders without
/// such spans are absent from the map.
pub async fn busy(
    conn: &mut AnyConnection,
    kind: HolderKind,
    holders: &[String],
    from_micros: i64,
    until_micros: i64,
) -> ApiResult<HashMap<String, Vec<(String, i64, i64)>>> {
    let mut found: HashMap<String, Vec<(String, i64, i64)>> = HashMap::new();
    if holders.is_empty() || from_micros >= until_micros {
        return Ok(found);
    }
    // One round trip for all holders: `holder IN ($5, $6, ...)`. Lapsed holds are not busy. The SQL text holds placeholders
    // only; the Any driver has no array binds.
    let placeholders = (0..holders.len())
        .map(|i| format!("${}", i + 5))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT holder, appointment, start_us, end_us FROM occupancy \
         WHERE kind = $1 AND start_us < $2 AND end_us > $3 \
         AND (expire_us IS NULL OR expire_us > $4) AND holder IN ({placeholders}) \
         ORDER BY holder, start_us, appointment"
    );
    let mut query = sqlx::query(&sql)
        .bind(kind.as_str())
        .bind(until_micros)
        .bind(from_micros)
        .bind(pm_runtime::time::now_micros());
    for holder in holders {
        query = query.bind(holder.as_str());
    }
    for row in query.fetch_all(&mut *conn).await? {
        let holder: String = row.try_get("holder")?;
        found.entry(holder).or_default().push((
            row.try_get("appointment")?,
            row.try_get("start_us")?,
            row.try_get("end_us")?,
        ));
    }
    Ok(found)
}

//! Billing's configuration in the generic resource store (billing entities, payers, contracts, fee
//! schedules and their versions), with the typed rows that guard it (`fee_schedule_periods`), and
//! the reads pricing needs. Charges and the ledger are typed tables: [`crate::charges`].

use chrono::{Datelike, NaiveDate};
use pm_api::billing::{
    BillingEntity, Contract, FeeSchedule, FeeScheduleVersion, Payer, RoutingRule,
};
use pm_runtime::docstore::{self, Kind};
use pm_runtime::names::{NamePattern, patterns};
use pm_runtime::{ApiError, ApiResult};
use sqlx::AnyConnection;

use crate::domain::pricing::{Schedule, Version};
use crate::domain::validate;

/// Billing entities, under the organization.
pub const BILLING_ENTITY: Kind<BillingEntity> = Kind {
    pattern: patterns::BILLING_ENTITY,
    field: "billing_entity",
    local_parent: false,
    filterable: &["npi", "tax_id"],
    protected: &[],
    attrs: |e| vec![("npi", e.npi.clone()), ("tax_id", e.tax_id.clone())],
};

/// Payers, under the organization.
pub const PAYER: Kind<Payer> = Kind {
    pattern: patterns::PAYER,
    field: "payer",
    local_parent: false,
    filterable: &["payer_id", "claim_filing_indicator"],
    protected: &[],
    attrs: |p| {
        vec![
            ("payer_id", p.payer_id.clone()),
            ("claim_filing_indicator", p.claim_filing_indicator.clone()),
        ]
    },
};

/// Contracts, under the organization.
pub const CONTRACT: Kind<Contract> = Kind {
    pattern: patterns::CONTRACT,
    field: "contract",
    local_parent: false,
    filterable: &["payer", "billing_entity"],
    protected: &["payer", "billing_entity"],
    attrs: |c| {
        vec![
            ("payer", c.payer.clone()),
            ("billing_entity", c.billing_entity.clone()),
        ]
    },
};

/// Routing rules, under the organization.
pub const ROUTING_RULE: Kind<RoutingRule> = Kind {
    pattern: NamePattern(&["organizations", "routingRules"]),
    field: "routing_rule",
    local_parent: false,
    filterable: &["code", "billing_entity"],
    protected: &[],
    attrs: |r| {
        vec![
            ("code", r.code.clone()),
            ("billing_entity", r.billing_entity.clone()),
        ]
    },
};

/// Fee schedules, under the organization. The scope is immutable: versions were checked against it.
pub const FEE_SCHEDULE: Kind<FeeSchedule> = Kind {
    pattern: patterns::FEE_SCHEDULE,
    field: "fee_schedule",
    local_parent: false,
    filterable: &["scope"],
    protected: &["scope"],
    attrs: |f| {
        let key = validate::scope(pm_runtime::names::organization_of(&f.name), f)
            .map(|(_, key)| key)
            .unwrap_or_default();
        vec![("scope", key)]
    },
};

/// Fee schedule versions, under their schedule (which must exist in this slice).
pub const FEE_SCHEDULE_VERSION: Kind<FeeScheduleVersion> = Kind {
    pattern: NamePattern(&["organizations", "feeSchedules", "versions"]),
    field: "fee_schedule_version",
    local_parent: true,
    filterable: &[],
    protected: &["effective_from", "effective_until", "entries"],
    attrs: |_| Vec::new(),
};

/// Day number of a date (days since 0001-01-01 is day 1), as `fee_schedule_periods` stores it.
fn day(date: NaiveDate) -> i32 {
    date.num_days_from_ce()
}

/// Whether `name` is live in the store.
pub async fn exists(conn: &mut AnyConnection, name: &str) -> ApiResult<bool> {
    docstore::exists_live(conn, name).await
}

/// Refuses a version whose period overlaps another version of a schedule of the same scope
/// (`scope_key`), naming it; then records the period. Runs in the version's write transaction. On
/// SQLite the check is the guarantee (under the writer lock); on PostgreSQL the exclusion
/// constraint is, and the check gives the clear error first.
pub async fn claim_period(
    conn: &mut AnyConnection,
    version: &str,
    scope_key: &str,
    from: NaiveDate,
    until: Option<NaiveDate>,
) -> ApiResult<()> {
    let (from, until) = (day(from), until.map(day));
    let overlapping: Option<(String, String)> = sqlx::query_as(
        "SELECT version, schedule FROM fee_schedule_periods \
         WHERE scope_key = $1 AND (until_day IS NULL OR until_day > $2) \
         AND ($3 IS NULL OR from_day < $3) ORDER BY from_day LIMIT 1",
    )
    .bind(scope_key)
    .bind(from)
    .bind(until)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((other, other_schedule)) = overlapping {
        let schedule = pm_runtime::names::parent_of(version);
        let message = if other_schedule == schedule {
            format!("the period overlaps version {other} of the same schedule")
        } else {
            format!(
                "the period overlaps version {other} of {other_schedule}, a schedule of the same scope"
            )
        };
        return Err(
            ApiError::precondition("FEE_SCHEDULE_VERSIONS_OVERLAP", message)
                .with_meta("overlaps", other),
        );
    }
    let inserted = sqlx::query(
        "INSERT INTO fee_schedule_periods (version, schedule, scope_key, from_day, until_day) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(version)
    .bind(pm_runtime::names::parent_of(version))
    .bind(scope_key)
    .bind(from)
    .bind(until)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        // A concurrent writer on PostgreSQL claimed an overlapping period first.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23P01") => {
            Err(ApiError::precondition(
                "FEE_SCHEDULE_VERSIONS_OVERLAP",
                "the period overlaps a version written at the same time",
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Frees the periods of a deleted schedule's versions, in its delete transaction.
pub async fn release_periods(conn: &mut AnyConnection, schedule: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM fee_schedule_periods WHERE schedule = $1")
        .bind(schedule)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Every live fee schedule of the organization with its versions, as pricing reads them. Versions
/// whose stored body cannot be read as a period (none are written so) are skipped.
pub async fn schedules(conn: &mut AnyConnection, organization: &str) -> ApiResult<Vec<Schedule>> {
    let headers: Vec<FeeSchedule> =
        docstore::all_live::<FeeSchedule>(conn, &format!("{organization}/feeSchedules"))
            .await?
            .into_iter()
            .map(|s| s.resource)
            .collect();
    let collections: Vec<String> = headers
        .iter()
        .map(|h| format!("{}/versions", h.name))
        .collect();
    let versions: Vec<FeeScheduleVersion> = if collections.is_empty() {
        Vec::new()
    } else {
        docstore::all_live_in::<FeeScheduleVersion>(conn, &collections)
            .await?
            .into_iter()
            .map(|v| v.resource)
            .collect()
    };
    let mut schedules = Vec::with_capacity(headers.len());
    for header in headers {
        let Ok((scope, _)) = validate::scope(organization, &header) else {
            continue;
        };
        let prefix = format!("{}/versions/", header.name);
        let versions = versions
            .iter()
            .filter(|v| v.name.starts_with(&prefix))
            .filter_map(|v| {
                let (from, until) =
                    validate::period("", v.effective_from.as_ref(), v.effective_until.as_ref())
                        .ok()?;
                Some(Version {
                    name: v.name.clone(),
                    effective_from: from,
                    effective_until: until,
                    entries: v.entries.iter().map(validate::entry_of).collect(),
                })
            })
            .collect();
        schedules.push(Schedule {
            name: header.name,
            scope,
            versions,
        });
    }
    Ok(schedules)
}

//! Revenue reports from the store: summaries grouped on any combination of dimensions, read from
//! `revenue_rollup` (kept with every ledger entry), the same summary computed from the ledger itself
//! (the bare scan the benchmark compares with, and the check that the roll-up is exact), and the
//! charges behind one cell (drill-down), each with its balance.

use pm_runtime::{ApiError, ApiResult, paging};
use sqlx::{AnyConnection, Row};

use crate::charges::{self, ChargeRow};
use crate::domain::money::Cents;
use crate::domain::report::{Aging, Amounts};

/// What a report may group on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// The unit the service was given in.
    Unit,
    /// The payer billed ("" for self-pay).
    Payer,
    /// The billing entity the line routes to.
    BillingEntity,
    /// The rendering provider.
    Provider,
    /// The procedure code.
    Code,
    /// The month of service (local), `YYYY-MM`.
    Month,
}

impl Dimension {
    /// Its column, in `revenue_rollup` and (but for the month) in `charges`.
    fn column(self) -> &'static str {
        match self {
            Dimension::Unit => "unit",
            Dimension::Payer => "payer",
            Dimension::BillingEntity => "billing_entity",
            Dimension::Provider => "provider",
            Dimension::Code => "code",
            Dimension::Month => "month",
        }
    }

    /// Its expression over `charges c`.
    fn charge_expression(self) -> &'static str {
        match self {
            Dimension::Unit => "c.unit",
            Dimension::Payer => "c.payer",
            Dimension::BillingEntity => "c.billing_entity",
            Dimension::Provider => "c.provider",
            Dimension::Code => "c.code",
            Dimension::Month => "substr(c.service_date, 1, 7)",
        }
    }
}

/// The most cells one summary answers: a report wider than this is refused (narrow the months or
/// the dimensions) rather than served slowly.
pub const MAX_CELLS: usize = 10_000;

/// The most units a caller's scope is bound into one query as.
const MAX_BOUND_UNITS: usize = 500;

/// What a summary covers.
#[derive(Debug, Clone, Default)]
pub struct Summary<'a> {
    /// The organization.
    pub organization: &'a str,
    /// The dimensions, in the order the cells' keys come.
    pub group_by: &'a [Dimension],
    /// First month (`YYYY-MM`, inclusive; "" for no bound).
    pub from_month: &'a str,
    /// Last month (inclusive; "" for no bound).
    pub until_month: &'a str,
    /// Only these units (`None`: every unit).
    pub units: Option<&'a [String]>,
}

/// One cell: its key (one value per dimension, in order) and its amounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// The values of the grouped dimensions.
    pub key: Vec<String>,
    /// What it sums.
    pub amounts: Amounts,
}

fn too_many_units(units: Option<&[String]>) -> ApiResult<()> {
    if units.is_some_and(|u| u.len() > MAX_BOUND_UNITS) {
        return Err(ApiError::invalid(
            "unit",
            format!("the report covers more than {MAX_BOUND_UNITS} units: narrow it to a subtree"),
        )
        .because("REPORT_TOO_LARGE"));
    }
    Ok(())
}

/// The shared WHERE clause of both summaries (`$1` organization, `$2`/`$3` months, then the units
/// from `$4`), with `month` the month's expression.
fn conditions(month: &str, units: Option<&[String]>) -> String {
    let mut sql = format!(
        " WHERE {org} = $1 AND ($2 = '' OR {month} >= $2) AND ($3 = '' OR {month} <= $3)",
        org = if month == "month" {
            "organization"
        } else {
            "c.organization"
        }
    );
    if let Some(units) = units {
        let unit = if month == "month" { "unit" } else { "c.unit" };
        if units.is_empty() {
            sql.push_str(" AND 1 = 0");
        } else {
            let placeholders: Vec<String> =
                (0..units.len()).map(|i| format!("${}", i + 4)).collect();
            sql.push_str(&format!(" AND {unit} IN ({})", placeholders.join(", ")));
        }
    }
    sql
}

async fn run(conn: &mut AnyConnection, sql: &str, summary: &Summary<'_>) -> ApiResult<Vec<Cell>> {
    let mut query = sqlx::query(sql)
        .bind(summary.organization)
        .bind(summary.from_month)
        .bind(summary.until_month);
    for unit in summary.units.unwrap_or_default() {
        query = query.bind(unit);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    if rows.len() > MAX_CELLS {
        return Err(ApiError::invalid(
            "group_by",
            format!("the report has more than {MAX_CELLS} cells: group on fewer dimensions or fewer months"),
        )
        .because("REPORT_TOO_LARGE"));
    }
    rows.iter()
        .map(|row| {
            let key = (0..summary.group_by.len())
                .map(|i| row.try_get::<String, _>(i))
                .collect::<Result<Vec<_>, _>>()?;
            let at = summary.group_by.len();
            let amount = |i: usize| -> ApiResult<Cents> {
                Ok(Cents::new(
                    row.try_get::<Option<i64>, _>(at + i)?.unwrap_or(0),
                ))
            };
            Ok(Cell {
                key,
                amounts: Amounts {
                    charged: amount(0)?,
                    reversed: amount(1)?,
                    paid: amount(2)?,
                    adjusted: amount(3)?,
                },
            })
        })
        .collect()
}

fn grouped(expressions: &[&str]) -> (String, String) {
    if expressions.is_empty() {
        return (String::new(), String::new());
    }
    let list = expressions.join(", ");
    (format!("{list}, "), format!(" GROUP BY {list}"))
}

/// `aggregate` with its cells ordered by their keys: sorting the few cells after grouping, not
/// the many rows before (an ORDER BY on the grouping itself lets PostgreSQL sort every ledger row
/// by text to group them: over a million lines, twelve times the bare GROUP BY's time).
fn ordered(aggregate: &str, keys: usize) -> String {
    if keys == 0 {
        return format!("{aggregate} LIMIT {}", MAX_CELLS + 1);
    }
    let order: Vec<String> = (1..=keys).map(|k| k.to_string()).collect();
    format!(
        "SELECT * FROM ({aggregate}) AS cells ORDER BY {} LIMIT {}",
        order.join(", "),
        MAX_CELLS + 1
    )
}

/// The summary from the roll-up: one row per cell of the grouped dimensions.
pub async fn summarize(conn: &mut AnyConnection, summary: &Summary<'_>) -> ApiResult<Vec<Cell>> {
    too_many_units(summary.units)?;
    let columns: Vec<&str> = summary.group_by.iter().map(|d| d.column()).collect();
    let (select, group) = grouped(&columns);
    let sql = format!(
        "SELECT {select}CAST(SUM(charged_cents) AS BIGINT), CAST(SUM(reversed_cents) AS BIGINT), \
         CAST(SUM(paid_cents) AS BIGINT), CAST(SUM(adjusted_cents) AS BIGINT) FROM revenue_rollup{}{group}",
        conditions("month", summary.units),
    );
    run(conn, &ordered(&sql, summary.group_by.len()), summary).await
}

/// The same summary computed from the ledger and the charges, entry by entry (no roll-up).
pub async fn summarize_from_ledger(
    conn: &mut AnyConnection,
    summary: &Summary<'_>,
) -> ApiResult<Vec<Cell>> {
    too_many_units(summary.units)?;
    let expressions: Vec<&str> = summary
        .group_by
        .iter()
        .map(|d| d.charge_expression())
        .collect();
    let (select, group) = grouped(&expressions);
    let sql = format!(
        "SELECT {select}\
         CAST(SUM(CASE WHEN l.kind = 'charge' THEN l.amount_cents ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN l.kind = 'reversal' THEN l.amount_cents ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN l.kind = 'payment' THEN l.amount_cents ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN l.kind IN ('adjustment', 'write_off') THEN l.amount_cents ELSE 0 END) AS BIGINT) \
         FROM ledger_entries l JOIN charges c ON c.name = l.charge{}{group}",
        conditions("substr(c.service_date, 1, 7)", summary.units),
    );
    run(conn, &ordered(&sql, summary.group_by.len()), summary).await
}

/// One cell of a report, as drill-down names it: each set field narrows (None: any value).
#[derive(Debug, Clone, Default)]
pub struct CellFilter<'a> {
    /// The organization.
    pub organization: &'a str,
    /// Only these units (a unit, or its subtree), already cut to the caller's scope (`None`: any).
    pub units: Option<&'a [String]>,
    /// None of these units (the tagged ones, when drilling into the untagged cell).
    pub except_units: &'a [String],
    /// The payer.
    pub payer: Option<&'a str>,
    /// The billing entity.
    pub billing_entity: Option<&'a str>,
    /// The provider.
    pub provider: Option<&'a str>,
    /// The code.
    pub code: Option<&'a str>,
    /// The month of service, `YYYY-MM`.
    pub month: Option<&'a str>,
}

/// A charge behind a cell, with where its money stands.
#[derive(Debug, Clone)]
pub struct Line {
    /// The charge.
    pub charge: ChargeRow,
    /// Its ledger summed by kind.
    pub amounts: Amounts,
}

/// A page of the charges behind a cell (ordered by date of service, then name), with their
/// amounts: the cell's totals are the sum of its lines' amounts.
pub async fn lines(
    conn: &mut AnyConnection,
    cell: &CellFilter<'_>,
    page_size: i32,
    page_token: &str,
) -> ApiResult<(Vec<Line>, String)> {
    too_many_units(cell.units)?;
    too_many_units(Some(cell.except_units))?;
    let size = paging::page_size(page_size)?;
    let opt = |v: Option<&str>| v.unwrap_or("\u{0}any").to_string();
    let units_key = cell
        .units
        .map(|u| u.join(","))
        .unwrap_or_else(|| "\u{0}any".into());
    let fingerprint = paging::query_fingerprint(&[
        "revenue-lines",
        cell.organization,
        &units_key,
        &cell.except_units.join(","),
        &opt(cell.payer),
        &opt(cell.billing_entity),
        &opt(cell.provider),
        &opt(cell.code),
        &opt(cell.month),
    ]);
    let (after_date, after_name) = match paging::decode_token(page_token, &fingerprint)?.as_deref()
    {
        Some([date, name]) => (date.clone(), name.clone()),
        Some(_) => return Err(paging::invalid_token()),
        None => (String::new(), String::new()),
    };
    let filters = [
        ("c.payer", cell.payer),
        ("c.billing_entity", cell.billing_entity),
        ("c.provider", cell.provider),
        ("c.code", cell.code),
        ("substr(c.service_date, 1, 7)", cell.month),
    ];
    let mut sql = String::from(
        "SELECT c.name FROM charges c WHERE c.organization = $1 \
         AND (c.service_date > $2 OR (c.service_date = $2 AND c.name > $3))",
    );
    let mut next = 4;
    let mut values: Vec<String> = Vec::new();
    for (expression, value) in filters {
        if let Some(value) = value {
            sql.push_str(&format!(" AND {expression} = ${next}"));
            values.push(value.to_string());
            next += 1;
        }
    }
    if let Some(units) = cell.units {
        if units.is_empty() {
            sql.push_str(" AND 1 = 0");
        } else {
            let placeholders: Vec<String> =
                (0..units.len()).map(|i| format!("${}", next + i)).collect();
            sql.push_str(&format!(" AND c.unit IN ({})", placeholders.join(", ")));
            values.extend(units.iter().cloned());
            next += units.len();
        }
    }
    if !cell.except_units.is_empty() {
        let placeholders: Vec<String> = (0..cell.except_units.len())
            .map(|i| format!("${}", next + i))
            .collect();
        sql.push_str(&format!(" AND c.unit NOT IN ({})", placeholders.join(", ")));
        values.extend(cell.except_units.iter().cloned());
    }
    sql.push_str(&format!(
        " ORDER BY c.service_date, c.name LIMIT {}",
        size + 1
    ));
    let mut query = sqlx::query(&sql)
        .bind(cell.organization)
        .bind(after_date)
        .bind(after_name);
    for value in &values {
        query = query.bind(value);
    }
    let names: Vec<String> = query
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
    let mut lines = Vec::with_capacity(names.len().min(size));
    for name in names.iter().take(size) {
        let Some(charge) = charges::get(conn, name).await? else {
            continue;
        };
        let amounts = charge_amounts(conn, name).await?;
        lines.push(Line { charge, amounts });
    }
    let token = if names.len() > size {
        lines
            .last()
            .map(|l| {
                paging::encode_token(
                    &fingerprint,
                    vec![
                        l.charge.service_date.format("%Y-%m-%d").to_string(),
                        l.charge.name.clone(),
                    ],
                )
            })
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok((lines, token))
}

/// A charge's ledger summed by kind.
async fn charge_amounts(conn: &mut AnyConnection, charge: &str) -> ApiResult<Amounts> {
    let mut amounts = Amounts::default();
    for entry in charges::ledger(conn, charge).await? {
        let cents = Cents::new(entry.amount_cents);
        use pm_api::billing::LedgerEntryKind as K;
        match K::try_from(entry.kind).unwrap_or(K::Unspecified) {
            K::Charge | K::Unspecified => amounts.charged = amounts.charged + cents,
            K::Reversal => amounts.reversed = amounts.reversed + cents,
            K::Payment => amounts.paid = amounts.paid + cents,
            K::Adjustment | K::WriteOff => amounts.adjusted = amounts.adjusted + cents,
        }
    }
    Ok(amounts)
}

/// What receivables are aged from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgingBasis {
    /// The date of service.
    ServiceDate,
    /// The day the claim was submitted (charges not submitted are unbilled).
    Submission,
}

/// Microseconds in a day.
const DAY_US: i64 = 86_400_000_000;

/// Receivables by billing entity × payer, aged to `as_of`. The sums come from the ledger grouped by
/// entity, payer and day (one short row per day with money); the buckets are filled here.
pub async fn aging(
    conn: &mut AnyConnection,
    organization: &str,
    basis: AgingBasis,
    as_of: chrono::NaiveDate,
    units: Option<&[String]>,
) -> ApiResult<Vec<((String, String), Aging)>> {
    too_many_units(units)?;
    let day = match basis {
        AgingBasis::ServiceDate => "c.service_date".to_string(),
        // A day number (days since the epoch) as text: the claim's submission, or the invoice's
        // issue; '' for a charge on neither (unbilled).
        AgingBasis::Submission => format!(
            "CASE WHEN k.submit_us > 0 THEN CAST(k.submit_us / {DAY_US} AS TEXT) \
             WHEN i.issue_us > 0 THEN CAST(i.issue_us / {DAY_US} AS TEXT) ELSE '' END"
        ),
    };
    let join = match basis {
        AgingBasis::ServiceDate => "",
        AgingBasis::Submission => {
            " LEFT JOIN claims k ON k.name = c.claim LEFT JOIN invoices i ON i.name = c.invoice"
        }
    };
    let mut sql = format!(
        "SELECT c.billing_entity, c.payer, {day}, CAST(SUM(l.amount_cents) AS BIGINT) \
         FROM ledger_entries l JOIN charges c ON c.name = l.charge{join} WHERE c.organization = $1"
    );
    if let Some(units) = units {
        if units.is_empty() {
            sql.push_str(" AND 1 = 0");
        } else {
            let placeholders: Vec<String> =
                (0..units.len()).map(|i| format!("${}", i + 2)).collect();
            sql.push_str(&format!(" AND c.unit IN ({})", placeholders.join(", ")));
        }
    }
    sql.push_str(&format!(" GROUP BY c.billing_entity, c.payer, {day}"));
    let mut query = sqlx::query(&sql).bind(organization);
    for unit in units.unwrap_or_default() {
        query = query.bind(unit);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let as_of_days = as_of
        .signed_duration_since(chrono::NaiveDate::default())
        .num_days();
    let epoch_days = chrono::DateTime::UNIX_EPOCH
        .date_naive()
        .signed_duration_since(chrono::NaiveDate::default())
        .num_days();
    let mut by_key: std::collections::BTreeMap<(String, String), Aging> = Default::default();
    for row in rows {
        let entity: String = row.try_get(0)?;
        let payer: String = row.try_get(1)?;
        let day: String = row.try_get(2)?;
        let amount = Cents::new(row.try_get::<Option<i64>, _>(3)?.unwrap_or(0));
        if amount == Cents::ZERO {
            continue;
        }
        let age = match basis {
            AgingBasis::ServiceDate => chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                .ok()
                .map(|d| {
                    as_of_days
                        - d.signed_duration_since(chrono::NaiveDate::default())
                            .num_days()
                }),
            AgingBasis::Submission => day
                .parse::<i64>()
                .ok()
                .map(|d| as_of_days - (epoch_days + d)),
        };
        by_key.entry((entity, payer)).or_default().add(age, amount);
    }
    Ok(by_key.into_iter().collect())
}

//! Invoices in typed tables (`invoices`, `invoice_lines`; migration 2006): written inside the
//! caller's write transaction. An invoice's money is never stored beside its total: each line is a
//! charge, and balances and payments are read from the ledger.

use chrono::NaiveDate;
use pm_runtime::time::now_micros;
use pm_runtime::{ApiError, ApiResult, paging};
use sqlx::{AnyConnection, Row};

use crate::charges::{self, ChargeRow};
use crate::domain::invoice::{self, State};
use crate::domain::money::Cents;

/// One line of a stored invoice, with its ledger summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLine {
    /// 1-based.
    pub line_number: i32,
    /// The charge.
    pub charge: String,
    /// The patient.
    pub patient: String,
    /// The unit.
    pub unit: String,
    /// The date of service.
    pub service_date: NaiveDate,
    /// The code.
    pub code: String,
    /// `YYYY-MM` for a member-month, "" for a visit.
    pub month: String,
    /// What it bills.
    pub amount: Cents,
    /// The sum of its charge's ledger entries.
    pub balance: Cents,
    /// Paid on it (positive).
    pub paid: Cents,
}

/// A stored invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInvoice {
    /// `organizations/{o}/invoices/{i}`.
    pub name: String,
    /// The contract.
    pub contract: String,
    /// Its payer.
    pub payer: String,
    /// Its billing entity.
    pub billing_entity: String,
    /// `YYYY-MM`.
    pub month: String,
    /// `per_visit` or `per_member_per_month`.
    pub basis: String,
    /// The contract's units when issued.
    pub units: Vec<String>,
    /// Where it is.
    pub state: State,
    /// The sum of the lines.
    pub total: Cents,
    /// When it was issued (µs).
    pub issue_us: i64,
    /// When its state last changed (µs).
    pub update_us: i64,
    /// Its lines, in order.
    pub lines: Vec<StoredLine>,
}

impl StoredInvoice {
    /// What is still owed: the sum of the lines' ledgers.
    pub fn balance(&self) -> Cents {
        self.lines.iter().map(|l| l.balance).sum()
    }

    /// What was paid.
    pub fn paid(&self) -> Cents {
        self.lines.iter().map(|l| l.paid).sum()
    }
}

/// The name of the invoice of `contract` for `month`: one per contract and month.
pub fn invoice_name(contract: &str, month: &str) -> String {
    let organization = pm_runtime::names::organization_of(contract);
    let id = contract.rsplit('/').next().unwrap_or_default();
    format!("{organization}/invoices/{id}-{month}")
}

/// Whether `contract` has an invoice for `month`.
pub async fn exists_for(conn: &mut AnyConnection, contract: &str, month: &str) -> ApiResult<bool> {
    let found: Option<String> = sqlx::query_scalar(
        "SELECT name FROM invoices WHERE organization = $1 AND contract = $2 AND month = $3",
    )
    .bind(pm_runtime::names::organization_of(contract))
    .bind(contract)
    .bind(month)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(found.is_some())
}

/// The OPEN charges a per-visit invoice of `contract` (billing `payer`) for `month` may take: dated
/// in the month, on no claim (set aside as invoiced is no claim) and no invoice, naming the
/// contract or naming none and billed to its payer. The caller narrows them further (claim form,
/// units) with [`invoice::takes`].
pub async fn candidates(
    conn: &mut AnyConnection,
    contract: &str,
    payer: &str,
    month: invoice::Month,
) -> ApiResult<Vec<ChargeRow>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM charges WHERE organization = $1 AND invoice = '' AND state = 'open' \
         AND claim IN ('', '-INVOICED_NOT_CLAIMED') AND service_date >= $2 AND service_date < $3 \
         AND (contract = $4 OR (contract = '' AND payer = $5)) ORDER BY service_date, name",
    )
    .bind(pm_runtime::names::organization_of(contract))
    .bind(month.first_day().format("%Y-%m-%d").to_string())
    .bind(month.next_first_day().format("%Y-%m-%d").to_string())
    .bind(contract)
    .bind(payer)
    .fetch_all(&mut *conn)
    .await?;
    let mut rows = Vec::with_capacity(names.len());
    for name in names {
        if let Some(row) = charges::get(conn, &name).await? {
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Stores an invoice and its lines and marks each line's charge invoiced (from '' only: a charge
/// invoiced or claimed meanwhile aborts the write). The member-month charges are written first by
/// the caller.
pub async fn insert(conn: &mut AnyConnection, invoice: &StoredInvoice) -> ApiResult<()> {
    let organization = pm_runtime::names::organization_of(&invoice.name);
    sqlx::query(
        "INSERT INTO invoices (name, organization, contract, payer, billing_entity, month, basis, \
         units, state, total_cents, issue_us, update_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&invoice.name)
    .bind(organization)
    .bind(&invoice.contract)
    .bind(&invoice.payer)
    .bind(&invoice.billing_entity)
    .bind(&invoice.month)
    .bind(&invoice.basis)
    .bind(invoice.units.join(":"))
    .bind(invoice.state.as_str())
    .bind(invoice.total.cents())
    .bind(invoice.issue_us)
    .bind(invoice.update_us)
    .execute(&mut *conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => ApiError::already_exists(
            "INVOICE_EXISTS",
            format!(
                "{} is invoiced for {} already; nothing was written",
                invoice.contract, invoice.month
            ),
        ),
        _ => ApiError::from(e),
    })?;
    for line in &invoice.lines {
        // The charge first: one taken meanwhile aborts before anything names it.
        let marked = sqlx::query(
            "UPDATE charges SET invoice = $1 WHERE name = $2 AND invoice = '' AND state = 'open' \
             AND claim IN ('', '-INVOICED_NOT_CLAIMED')",
        )
        .bind(&invoice.name)
        .bind(&line.charge)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if marked == 0 {
            return Err(ApiError::new(
                tonic::Code::Aborted,
                "CHARGE_CLAIMED",
                format!(
                    "{} was claimed, invoiced or reversed meanwhile; nothing was written: retry",
                    line.charge
                ),
            ));
        }
        sqlx::query(
            "INSERT INTO invoice_lines (invoice, line_number, charge, patient, unit, service_date, \
             code, month, amount_cents) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&invoice.name)
        .bind(line.line_number)
        .bind(&line.charge)
        .bind(&line.patient)
        .bind(&line.unit)
        .bind(line.service_date.format("%Y-%m-%d").to_string())
        .bind(&line.code)
        .bind(&line.month)
        .bind(line.amount.cents())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The invoice `charge` is on ("" for none).
pub async fn invoice_of(conn: &mut AnyConnection, charge: &str) -> ApiResult<String> {
    let row = sqlx::query("SELECT invoice FROM charges WHERE name = $1")
        .bind(charge)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(row) => row.try_get("invoice")?,
        None => String::new(),
    })
}

/// A correction of an invoiced charge joins the invoice, so that nothing it bills is lost: the
/// replacement becomes a new line (the reversed original stays, its ledger netting to what was
/// paid on it), the total follows the lines in force, and the state is read again from the
/// ledger. A correction to no amount adds no line; one that would leave the invoice owing nothing
/// at all is refused (`INVOICE_WOULD_BE_EMPTY`), nothing written.
pub async fn add_correction(
    conn: &mut AnyConnection,
    invoice: &str,
    original: &ChargeRow,
    correction: &ChargeRow,
) -> ApiResult<()> {
    let stored = get(conn, invoice)
        .await?
        .ok_or_else(|| ApiError::not_found(invoice))?;
    let Some(line) = stored.lines.iter().find(|l| l.charge == original.name) else {
        return Ok(());
    };
    // What was paid on the original is carried to the correction: the original is reversed in
    // full (its open balance was reversed already), leaving the payment as a credit on the invoice,
    // which then owes the difference.
    if line.paid.is_positive() {
        charges::post(
            conn,
            &original.name,
            pm_api::billing::LedgerEntryKind::Reversal,
            -line.paid,
            &format!("paid part reversed: carried to {}", correction.name),
        )
        .await?;
    }
    let total = stored.total - original.amount + correction.amount;
    if !total.is_positive() {
        return Err(ApiError::precondition(
            "INVOICE_WOULD_BE_EMPTY",
            format!(
                "{}: the correction would leave {invoice} billing nothing; nothing was written",
                original.name
            ),
        ));
    }
    if correction.amount.is_positive() {
        let next = stored
            .lines
            .iter()
            .map(|l| l.line_number)
            .max()
            .unwrap_or(0)
            + 1;
        sqlx::query("UPDATE charges SET invoice = $1 WHERE name = $2")
            .bind(invoice)
            .bind(&correction.name)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO invoice_lines (invoice, line_number, charge, patient, unit, service_date, \
             code, month, amount_cents) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(invoice)
        .bind(next)
        .bind(&correction.name)
        .bind(&correction.patient)
        .bind(&correction.unit)
        .bind(correction.service_date.format("%Y-%m-%d").to_string())
        .bind(&correction.code)
        .bind(&line.month)
        .bind(correction.amount.cents())
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("UPDATE invoices SET total_cents = $1 WHERE name = $2")
        .bind(total.cents())
        .bind(invoice)
        .execute(&mut *conn)
        .await?;
    let after = get(conn, invoice)
        .await?
        .ok_or_else(|| ApiError::not_found(invoice))?;
    set_state(conn, invoice, invoice::state(after.balance(), after.paid())).await
}

const INVOICE_COLUMNS: &str = "name, contract, payer, billing_entity, month, basis, units, state, \
    total_cents, issue_us, update_us";

/// One invoice with its lines and their ledgers.
pub async fn get(conn: &mut AnyConnection, name: &str) -> ApiResult<Option<StoredInvoice>> {
    let Some(row) = sqlx::query(&format!(
        "SELECT {INVOICE_COLUMNS} FROM invoices WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let lines = sqlx::query(
        "SELECT il.line_number, il.charge, il.patient, il.unit, il.service_date, il.code, \
         il.month, il.amount_cents, \
         CAST(COALESCE(SUM(l.amount_cents), 0) AS BIGINT) AS balance, \
         CAST(COALESCE(SUM(CASE WHEN l.kind = 'payment' THEN -l.amount_cents ELSE 0 END), 0) \
         AS BIGINT) AS paid \
         FROM invoice_lines il LEFT JOIN ledger_entries l ON l.charge = il.charge \
         WHERE il.invoice = $1 \
         GROUP BY il.line_number, il.charge, il.patient, il.unit, il.service_date, il.code, \
         il.month, il.amount_cents ORDER BY il.line_number",
    )
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    let lines = lines
        .iter()
        .map(|l| {
            let date: String = l.try_get("service_date")?;
            Ok(StoredLine {
                line_number: l.try_get("line_number")?,
                charge: l.try_get("charge")?,
                patient: l.try_get("patient")?,
                unit: l.try_get("unit")?,
                service_date: NaiveDate::parse_from_str(&date, "%Y-%m-%d")
                    .map_err(|e| ApiError::internal("a stored invoice line's date", &e))?,
                code: l.try_get("code")?,
                month: l.try_get("month")?,
                amount: Cents::new(l.try_get("amount_cents")?),
                balance: Cents::new(l.try_get("balance")?),
                paid: Cents::new(l.try_get("paid")?),
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let units: String = row.try_get("units")?;
    Ok(Some(StoredInvoice {
        name: row.try_get("name")?,
        contract: row.try_get("contract")?,
        payer: row.try_get("payer")?,
        billing_entity: row.try_get("billing_entity")?,
        month: row.try_get("month")?,
        basis: row.try_get("basis")?,
        units: units
            .split(':')
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect(),
        state: State::parse(&row.try_get::<String, _>("state")?),
        total: Cents::new(row.try_get("total_cents")?),
        issue_us: row.try_get("issue_us")?,
        update_us: row.try_get("update_us")?,
        lines,
    }))
}

/// Whether an invoice exists (for the shared scope check).
pub async fn exists(conn: &mut AnyConnection, name: &str) -> ApiResult<bool> {
    let found: Option<String> = sqlx::query_scalar("SELECT name FROM invoices WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

/// Sets an invoice's state (after a payment, in its transaction).
pub async fn set_state(conn: &mut AnyConnection, name: &str, state: State) -> ApiResult<()> {
    sqlx::query("UPDATE invoices SET state = $1, update_us = $2 WHERE name = $3")
        .bind(state.as_str())
        .bind(now_micros())
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What a ListInvoices narrows to.
#[derive(Debug, Default)]
pub struct InvoiceQuery<'a> {
    /// The organization.
    pub organization: &'a str,
    /// Only this contract ("" for any).
    pub contract: &'a str,
    /// Only this state (`None`: any).
    pub state: Option<State>,
    /// Only this month ("" for any).
    pub month: &'a str,
    /// Only these contracts' (`None`: every contract; the caller's scope).
    pub visible_contracts: Option<&'a [String]>,
}

/// A page of invoice names, newest first, and the token of the next.
pub async fn list(
    conn: &mut AnyConnection,
    query: &InvoiceQuery<'_>,
    page_size: i32,
    page_token: &str,
) -> ApiResult<(Vec<String>, String)> {
    let size = paging::page_size(page_size)?;
    let state = query.state.map(State::as_str).unwrap_or("");
    let fingerprint = paging::query_fingerprint(&[
        "invoices",
        query.organization,
        query.contract,
        state,
        query.month,
    ]);
    let (after_us, after_name) = paging::decode_newest_first(page_token, &fingerprint)?;
    let mut sql = String::from(
        "SELECT name, issue_us FROM invoices WHERE organization = $1 \
         AND (issue_us < $2 OR (issue_us = $2 AND ($3 = '' OR name < $3))) \
         AND ($4 = '' OR contract = $4) AND ($5 = '' OR state = $5) AND ($6 = '' OR month = $6)",
    );
    let visible = query.visible_contracts.unwrap_or_default();
    if query.visible_contracts.is_some() {
        if visible.is_empty() {
            sql.push_str(" AND 1 = 0");
        } else {
            let placeholders: Vec<String> =
                (0..visible.len()).map(|i| format!("${}", i + 8)).collect();
            sql.push_str(&format!(" AND contract IN ({})", placeholders.join(", ")));
        }
    }
    sql.push_str(" ORDER BY issue_us DESC, name DESC LIMIT $7");
    let mut q = sqlx::query(&sql)
        .bind(query.organization)
        .bind(after_us)
        .bind(after_name)
        .bind(query.contract)
        .bind(state)
        .bind(query.month)
        .bind(i64::try_from(size + 1).unwrap_or(i64::MAX));
    for contract in visible {
        q = q.bind(contract);
    }
    let rows = q.fetch_all(&mut *conn).await?;
    let mut page: Vec<(String, i64)> = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<ApiResult<_>>()?;
    let next = if page.len() > size {
        page.truncate(size);
        page.last()
            .map(|(name, us)| {
                paging::encode_token(&fingerprint, vec![us.to_string(), name.clone()])
            })
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok((page.into_iter().map(|(n, _)| n).collect(), next))
}

/// Every contract the organization's invoices bill, with the units each invoice of it covers (for
/// narrowing a list to the caller's scope).
pub async fn contract_units(
    conn: &mut AnyConnection,
    organization: &str,
) -> ApiResult<Vec<(String, Vec<String>)>> {
    let rows = sqlx::query("SELECT DISTINCT contract, units FROM invoices WHERE organization = $1")
        .bind(organization)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            let units: String = r.try_get(1)?;
            Ok((
                r.try_get(0)?,
                units
                    .split(':')
                    .filter(|u| !u.is_empty())
                    .map(str::to_string)
                    .collect(),
            ))
        })
        .collect()
}

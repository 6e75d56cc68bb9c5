//! Charges and the ledger, in typed tables (`charges`, `ledger_entries`; see the migrations): one
//! row per priced service line and one per movement of money. Written only here, inside the
//! caller's write transaction; the ledger only ever grows.

use chrono::NaiveDate;
use pm_api::billing::{
    Charge, ChargeSource, ChargeState, LedgerEntry, LedgerEntryKind, ProfileSnapshot,
};
use pm_runtime::db::Migrations;
use pm_runtime::paging;
use pm_runtime::time::now_micros;
use pm_runtime::{ApiError, ApiResult};
use sqlx::{AnyConnection, Row};

use crate::domain::charge::Profile;
use crate::domain::money::Cents;

/// The migration set of Billing's typed tables.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: || sqlx::migrate!("./migrations/sqlite"),
    postgres: || sqlx::migrate!("./migrations/postgres"),
};

/// One charge row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRow {
    /// `organizations/{o}/charges/{c}`.
    pub name: String,
    /// How it came to be.
    pub source: ChargeSource,
    /// The encounter and its line (1-based), for a charge made from one.
    pub encounter: Option<(String, i32)>,
    /// The patient.
    pub patient: String,
    /// The unit.
    pub unit: String,
    /// The rendering provider.
    pub provider: String,
    /// The payer billed ("" for self-pay).
    pub payer: String,
    /// The billing entity the line routes to.
    pub billing_entity: String,
    /// The contract it is billed under ("" for none).
    pub contract: String,
    /// The procedure code.
    pub code: String,
    /// Its modifiers.
    pub modifiers: Vec<String>,
    /// Units of service.
    pub units: i32,
    /// Its diagnoses, in order.
    pub diagnoses: Vec<String>,
    /// The local date of service.
    pub service_date: NaiveDate,
    /// Place of service.
    pub place_of_service: String,
    /// Price per unit (zero while held).
    pub unit_price: Cents,
    /// `unit_price × units`.
    pub amount: Cents,
    /// The fee schedule version that priced it ("" while held).
    pub fee_schedule_version: String,
    /// Where it is.
    pub state: ChargeState,
    /// Why it is held ("" otherwise).
    pub hold_reason: String,
    /// The charge it corrects, or the one that replaced it once reversed.
    pub related_charge: String,
    /// The billing profile it was made under.
    pub profile: Profile,
    /// When it was made, and last changed (µs since the epoch).
    pub create_us: i64,
    /// When its state last changed.
    pub update_us: i64,
}

fn source_name(source: ChargeSource) -> &'static str {
    match source {
        ChargeSource::Manual => "manual",
        ChargeSource::Correction => "correction",
        ChargeSource::CareTime => "care_time",
        ChargeSource::MemberMonth => "member_month",
        ChargeSource::Encounter | ChargeSource::Unspecified => "encounter",
    }
}

fn state_name(state: ChargeState) -> &'static str {
    match state {
        ChargeState::Held => "held",
        ChargeState::Reversed => "reversed",
        ChargeState::Open | ChargeState::Unspecified => "open",
    }
}

fn split_list(text: &str) -> Vec<String> {
    text.split(':')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

const COLUMNS: &str = "name, source, encounter, line_number, patient, unit, provider, payer, \
    billing_entity, contract, code, modifiers, units, diagnoses, service_date, place_of_service, \
    unit_price_cents, amount_cents, fee_schedule_version, state, hold_reason, related_charge, \
    profile, create_us, update_us";

fn decode(row: &sqlx::any::AnyRow) -> ApiResult<ChargeRow> {
    let source = match row.try_get::<String, _>("source")?.as_str() {
        "manual" => ChargeSource::Manual,
        "correction" => ChargeSource::Correction,
        "care_time" => ChargeSource::CareTime,
        "member_month" => ChargeSource::MemberMonth,
        _ => ChargeSource::Encounter,
    };
    let state = match row.try_get::<String, _>("state")?.as_str() {
        "held" => ChargeState::Held,
        "reversed" => ChargeState::Reversed,
        _ => ChargeState::Open,
    };
    let encounter: Option<String> = row.try_get("encounter")?;
    let line: Option<i32> = row.try_get("line_number")?;
    let date: String = row.try_get("service_date")?;
    let service_date = NaiveDate::parse_from_str(&date, "%Y-%m-%d")
        .map_err(|e| ApiError::internal("a stored date of service", &e))?;
    let profile: String = row.try_get("profile")?;
    Ok(ChargeRow {
        name: row.try_get("name")?,
        source,
        encounter: encounter.zip(line),
        patient: row.try_get("patient")?,
        unit: row.try_get("unit")?,
        provider: row.try_get("provider")?,
        payer: row.try_get("payer")?,
        billing_entity: row.try_get("billing_entity")?,
        contract: row.try_get("contract")?,
        code: row.try_get("code")?,
        modifiers: split_list(&row.try_get::<String, _>("modifiers")?),
        units: row.try_get("units")?,
        diagnoses: split_list(&row.try_get::<String, _>("diagnoses")?),
        service_date,
        place_of_service: row.try_get("place_of_service")?,
        unit_price: Cents::new(row.try_get("unit_price_cents")?),
        amount: Cents::new(row.try_get("amount_cents")?),
        fee_schedule_version: row.try_get("fee_schedule_version")?,
        state,
        hold_reason: row.try_get("hold_reason")?,
        related_charge: row.try_get("related_charge")?,
        profile: serde_json::from_str(&profile).unwrap_or_default(),
        create_us: row.try_get("create_us")?,
        update_us: row.try_get("update_us")?,
    })
}

/// Inserts a charge and, when it is priced, its ledger entry. Returns false (and writes nothing)
/// when a charge of the same encounter line exists: a replayed event makes nothing new.
pub async fn insert(conn: &mut AnyConnection, charge: &ChargeRow) -> ApiResult<bool> {
    let (encounter, line) = charge.encounter.clone().unzip();
    let profile = serde_json::to_string(&charge.profile)
        .map_err(|e| ApiError::internal("a billing profile snapshot", &e))?;
    let inserted = sqlx::query(&format!(
        "INSERT INTO charges (organization, {COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
         $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26) \
         ON CONFLICT DO NOTHING"
    ))
    .bind(pm_runtime::names::organization_of(&charge.name))
    .bind(&charge.name)
    .bind(source_name(charge.source))
    .bind(encounter)
    .bind(line)
    .bind(&charge.patient)
    .bind(&charge.unit)
    .bind(&charge.provider)
    .bind(&charge.payer)
    .bind(&charge.billing_entity)
    .bind(&charge.contract)
    .bind(&charge.code)
    .bind(charge.modifiers.join(":"))
    .bind(charge.units)
    .bind(charge.diagnoses.join(":"))
    .bind(charge.service_date.format("%Y-%m-%d").to_string())
    .bind(&charge.place_of_service)
    .bind(charge.unit_price.cents())
    .bind(charge.amount.cents())
    .bind(&charge.fee_schedule_version)
    .bind(state_name(charge.state))
    .bind(&charge.hold_reason)
    .bind(&charge.related_charge)
    .bind(profile)
    .bind(charge.create_us)
    .bind(charge.update_us)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    if charge.state == ChargeState::Open && charge.amount.is_positive() {
        post(
            conn,
            &charge.name,
            LedgerEntryKind::Charge,
            charge.amount,
            "charge posted",
        )
        .await?;
    }
    Ok(true)
}

fn kind_name(kind: LedgerEntryKind) -> &'static str {
    match kind {
        LedgerEntryKind::Reversal => "reversal",
        LedgerEntryKind::Payment => "payment",
        LedgerEntryKind::Adjustment => "adjustment",
        LedgerEntryKind::WriteOff => "write_off",
        LedgerEntryKind::Charge | LedgerEntryKind::Unspecified => "charge",
    }
}

/// Appends one ledger entry on `charge` (the table's checks keep the signs right).
pub async fn post(
    conn: &mut AnyConnection,
    charge: &str,
    kind: LedgerEntryKind,
    amount: Cents,
    memo: &str,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO ledger_entries (organization, charge, kind, amount_cents, memo, post_us) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(pm_runtime::names::organization_of(charge))
    .bind(charge)
    .bind(kind_name(kind))
    .bind(amount.cents())
    .bind(memo)
    .bind(now_micros())
    .execute(&mut *conn)
    .await?;
    roll_up(conn, charge, kind, amount).await
}

/// The column of `revenue_rollup` an entry of `kind` adds to.
fn rollup_column(kind: LedgerEntryKind) -> &'static str {
    match kind {
        LedgerEntryKind::Reversal => "reversed_cents",
        LedgerEntryKind::Payment => "paid_cents",
        LedgerEntryKind::Adjustment | LedgerEntryKind::WriteOff => "adjusted_cents",
        LedgerEntryKind::Charge | LedgerEntryKind::Unspecified => "charged_cents",
    }
}

/// Adds an entry to its charge's cell of `revenue_rollup`, in the entry's transaction.
async fn roll_up(
    conn: &mut AnyConnection,
    charge: &str,
    kind: LedgerEntryKind,
    amount: Cents,
) -> ApiResult<()> {
    let column = rollup_column(kind);
    sqlx::query(&format!(
        "INSERT INTO revenue_rollup (organization, unit, payer, billing_entity, provider, code, \
         month, {column}) \
         SELECT organization, unit, payer, billing_entity, provider, code, \
         substr(service_date, 1, 7), $1 FROM charges WHERE name = $2 \
         ON CONFLICT (organization, unit, payer, billing_entity, provider, code, month) \
         DO UPDATE SET {column} = revenue_rollup.{column} + excluded.{column}"
    ))
    .bind(amount.cents())
    .bind(charge)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One charge.
pub async fn get(conn: &mut AnyConnection, name: &str) -> ApiResult<Option<ChargeRow>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM charges WHERE name = $1"))
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(decode).transpose()
}

/// The organization's charges on no claim and no invoice, oldest first, at most `limit`: OPEN
/// ones, and HELD ones too when `held_too`; only those of `unit` when it is not empty. One query,
/// rows decoded here.
pub async fn unclaimed(
    conn: &mut AnyConnection,
    organization: &str,
    held_too: bool,
    unit: &str,
    limit: usize,
) -> ApiResult<Vec<ChargeRow>> {
    let states = if held_too {
        "('open', 'held')"
    } else {
        "('open')"
    };
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM charges WHERE organization = $1 AND claim = '' AND invoice = '' \
         AND state IN {states} AND ($2 = '' OR unit = $2) ORDER BY create_us, name LIMIT {limit}"
    ))
    .bind(organization)
    .bind(unit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(decode).collect()
}

/// The unit a charge, or any charge of an encounter, sits in (for the shared scope check).
pub async fn unit_of(conn: &mut AnyConnection, name: &str) -> ApiResult<Option<String>> {
    let unit: Option<String> = sqlx::query_scalar(
        "SELECT unit FROM charges WHERE name = $1 OR encounter = $1 ORDER BY name LIMIT 1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(unit)
}

/// Marks a charge REVERSED, replaced by `replaced_by`, and posts the reversal of what it posted.
/// FAILED_PRECONDITION `CHARGE_REVERSED` when it already was (a concurrent correction won).
pub async fn reverse(
    conn: &mut AnyConnection,
    charge: &ChargeRow,
    replaced_by: &str,
    memo: &str,
) -> ApiResult<()> {
    let moved = sqlx::query(
        "UPDATE charges SET state = 'reversed', related_charge = $1, update_us = $2 \
         WHERE name = $3 AND state <> 'reversed'",
    )
    .bind(replaced_by)
    .bind(now_micros())
    .bind(&charge.name)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if moved == 0 {
        return Err(charge_reversed());
    }
    let balance = balance(conn, &charge.name).await?;
    if balance.is_positive() {
        post(
            conn,
            &charge.name,
            LedgerEntryKind::Reversal,
            -balance,
            memo,
        )
        .await?;
    }
    Ok(())
}

/// The refusal to correct a charge that was reversed already.
pub fn charge_reversed() -> ApiError {
    ApiError::precondition(
        "CHARGE_REVERSED",
        "the charge was reversed already; correct the charge that replaced it",
    )
}

/// The sum of a charge's ledger entries.
pub async fn balance(conn: &mut AnyConnection, charge: &str) -> ApiResult<Cents> {
    let sum: Option<i64> = sqlx::query_scalar(
        "SELECT CAST(SUM(amount_cents) AS BIGINT) FROM ledger_entries WHERE charge = $1",
    )
    .bind(charge)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Cents::new(sum.unwrap_or(0)))
}

/// A charge's ledger entries, in order.
pub async fn ledger(conn: &mut AnyConnection, charge: &str) -> ApiResult<Vec<LedgerEntry>> {
    let rows = sqlx::query(
        "SELECT sequence, charge, kind, amount_cents, memo, post_us FROM ledger_entries \
         WHERE charge = $1 ORDER BY sequence",
    )
    .bind(charge)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            let kind = match row.try_get::<String, _>("kind")?.as_str() {
                "reversal" => LedgerEntryKind::Reversal,
                "payment" => LedgerEntryKind::Payment,
                "adjustment" => LedgerEntryKind::Adjustment,
                "write_off" => LedgerEntryKind::WriteOff,
                _ => LedgerEntryKind::Charge,
            };
            Ok(LedgerEntry {
                sequence: row.try_get("sequence")?,
                charge: row.try_get("charge")?,
                kind: kind.into(),
                amount_cents: row.try_get("amount_cents")?,
                memo: row.try_get("memo")?,
                post_time: Some(pm_runtime::time::to_timestamp(row.try_get("post_us")?)),
            })
        })
        .collect()
}

/// What a ListCharges narrows to.
#[derive(Debug, Default)]
pub struct ChargeQuery<'a> {
    /// The organization.
    pub organization: &'a str,
    /// Only this unit ("" for any).
    pub unit: &'a str,
    /// Only this patient ("" for any).
    pub patient: &'a str,
    /// Only this encounter ("" for any).
    pub encounter: &'a str,
    /// Only these units (`None`: every unit of the organization).
    pub visible_units: Option<&'a [String]>,
}

/// The most units a caller's scope is written into one query as; a scope wider than this (a
/// program manager of a large tree) is read without the unit condition and filtered here.
const MAX_BOUND_UNITS: usize = 500;

/// A page of charges, newest first, and the token of the next.
pub async fn list(
    conn: &mut AnyConnection,
    query: &ChargeQuery<'_>,
    page_size: i32,
    page_token: &str,
) -> ApiResult<(Vec<ChargeRow>, String)> {
    let size = paging::page_size(page_size)?;
    let fingerprint = paging::query_fingerprint(&[
        "charges",
        query.organization,
        query.unit,
        query.patient,
        query.encounter,
    ]);
    let (after_us, after_name) = paging::decode_newest_first(page_token, &fingerprint)?;
    let units = query.visible_units.filter(|u| u.len() <= MAX_BOUND_UNITS);
    let mut sql = format!(
        "SELECT {COLUMNS} FROM charges WHERE organization = $1 \
         AND (create_us < $2 OR (create_us = $2 AND ($3 = '' OR name < $3))) \
         AND ($4 = '' OR unit = $4) AND ($5 = '' OR patient = $5) AND ($6 = '' OR encounter = $6)"
    );
    if let Some(units) = units {
        let placeholders: Vec<String> = (0..units.len()).map(|i| format!("${}", i + 8)).collect();
        sql.push_str(&format!(" AND unit IN ({})", placeholders.join(", ")));
        if units.is_empty() {
            sql.push_str(" AND 1 = 0");
        }
    }
    sql.push_str(" ORDER BY create_us DESC, name DESC LIMIT $7");
    let sql = sql.replace("unit IN ()", "unit IN ('')");
    let mut q = sqlx::query(&sql)
        .bind(query.organization)
        .bind(after_us)
        .bind(after_name)
        .bind(query.unit)
        .bind(query.patient)
        .bind(query.encounter)
        .bind(i64::try_from(size + 1).unwrap_or(i64::MAX));
    for unit in units.unwrap_or_default() {
        q = q.bind(unit);
    }
    let rows = q.fetch_all(&mut *conn).await?;
    let mut charges: Vec<ChargeRow> = rows.iter().map(decode).collect::<ApiResult<_>>()?;
    if let Some(visible) = query.visible_units.filter(|u| u.len() > MAX_BOUND_UNITS) {
        charges.retain(|c| visible.contains(&c.unit));
    }
    let next = if charges.len() > size {
        charges.truncate(size);
        charges
            .last()
            .map(|c| {
                paging::encode_token(&fingerprint, vec![c.create_us.to_string(), c.name.clone()])
            })
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok((charges, next))
}

/// A charge on the wire.
pub fn wire(row: &ChargeRow) -> Charge {
    use chrono::Datelike;
    let (encounter, line) = row.encounter.clone().unwrap_or_default();
    Charge {
        name: row.name.clone(),
        source: row.source.into(),
        encounter,
        line_number: line,
        patient: row.patient.clone(),
        unit: row.unit.clone(),
        provider: row.provider.clone(),
        payer: row.payer.clone(),
        billing_entity: row.billing_entity.clone(),
        code: row.code.clone(),
        modifiers: row.modifiers.clone(),
        units: row.units,
        diagnoses: row.diagnoses.clone(),
        service_date: Some(pm_api::types::Date {
            year: row.service_date.year(),
            month: i32::try_from(row.service_date.month()).unwrap_or(0),
            day: i32::try_from(row.service_date.day()).unwrap_or(0),
        }),
        unit_price_cents: row.unit_price.cents(),
        amount_cents: row.amount.cents(),
        fee_schedule_version: row.fee_schedule_version.clone(),
        state: row.state.into(),
        hold_reason: row.hold_reason.clone(),
        related_charge: row.related_charge.clone(),
        profile: Some(ProfileSnapshot {
            billing_entity: row.profile.billing_entity.clone(),
            billing_entity_source: row.profile.billing_entity_source.clone(),
            place_of_service: row.profile.place_of_service.clone(),
            place_of_service_source: row.profile.place_of_service_source.clone(),
            claim_form: row.profile.claim_form.clone(),
            claim_form_source: row.profile.claim_form_source.clone(),
            contract: row.contract.clone(),
        }),
        place_of_service: row.place_of_service.clone(),
        create_time: Some(pm_runtime::time::to_timestamp(row.create_us)),
        update_time: Some(pm_runtime::time::to_timestamp(row.update_us)),
        delete_time: None,
        etag: format!("\"{}\"", row.update_us),
    }
}

//! Claims in their typed tables (`claims`, `claim_lines`, `claim_events`, `claim_batches`,
//! `remittances`, `unmatched_payments`; see migration 2004; `claim_line_adjudications` and
//! `claim_line_adjustments`, migration 2007): written only here, inside the caller's write
//! transaction.

use chrono::NaiveDate;
use pm_runtime::time::now_micros;
use pm_runtime::{ApiError, ApiResult, paging};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use crate::domain::claims::ClaimState;
use crate::domain::invalid::Invalid;
use crate::domain::money::Cents;

/// A problem the scrubber found, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The field.
    pub field: String,
    /// The stable reason.
    pub reason: String,
    /// For people.
    pub message: String,
}

impl From<&Invalid> for Problem {
    fn from(invalid: &Invalid) -> Self {
        Problem {
            field: invalid.field.clone(),
            reason: invalid.reason.to_string(),
            message: invalid.message.clone(),
        }
    }
}

/// One line of a stored claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLine {
    /// 1-based.
    pub line_number: i32,
    /// The charge it bills.
    pub charge: String,
    /// The code.
    pub code: String,
    /// Its modifiers.
    pub modifiers: Vec<String>,
    /// Units.
    pub units: i32,
    /// Billed.
    pub amount: Cents,
    /// Into the claim's diagnoses, 1-based.
    pub diagnosis_pointers: Vec<u8>,
    /// `profile`, `contract {name}` or `rule: {reason}`.
    pub routed_by: String,
}

/// A stored claim with its lines and history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredClaim {
    /// `organizations/{o}/claims/{id}`.
    pub name: String,
    /// The billing entity.
    pub billing_entity: String,
    /// The payer.
    pub payer: String,
    /// The patient.
    pub patient: String,
    /// The date of service.
    pub service_date: NaiveDate,
    /// The rendering provider.
    pub provider: String,
    /// Place of service.
    pub place_of_service: String,
    /// The unit of its first line.
    pub unit: String,
    /// Where it is.
    pub state: ClaimState,
    /// 1, 7 or 8.
    pub frequency_code: i32,
    /// The claim it corrects or voids.
    pub original_claim: String,
    /// The payer's claim control number.
    pub payer_claim_number: String,
    /// Sum of the lines.
    pub total: Cents,
    /// Diagnoses in pointer order.
    pub diagnoses: Vec<String>,
    /// What the scrubber found.
    pub problems: Vec<Problem>,
    /// Other claims of the same visit.
    pub split_with: Vec<String>,
    /// The 837P batch.
    pub batch: String,
    /// Its lines.
    pub lines: Vec<StoredLine>,
    /// (state, reason, µs) oldest first.
    pub history: Vec<(ClaimState, String, i64)>,
    /// Made.
    pub create_us: i64,
    /// Last changed.
    pub update_us: i64,
    /// `P` (primary) or `S` (secondary).
    pub payer_sequence: String,
    /// For a secondary claim: the primary claim whose adjudication it carries.
    pub prior_claim: String,
}

/// What a new claim does to its charges' `claim` link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeLink<'a> {
    /// Takes charges no claim holds (assembly).
    Take,
    /// Takes them from the claim it replaces, or unclaimed ones (a correction's replacement
    /// charges).
    From(&'a str),
    /// Leaves them where they are (a void copy or a secondary claim bills the same charges).
    Keep,
}

/// One CAS adjustment as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAdjustment {
    /// CO, PR, OA, PI or CR.
    pub group: String,
    /// The CARC.
    pub reason: String,
    /// The amount.
    pub amount: Cents,
}

/// A payer's adjudication of one claim line (line 0: the claim level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjudication {
    /// The line (0 for the claim level).
    pub line_number: i32,
    /// Paid on it.
    pub paid: Cents,
    /// Its adjustments.
    pub adjustments: Vec<StoredAdjustment>,
    /// When the payer adjudicated it.
    pub date: NaiveDate,
}

/// The stored text of a state.
pub fn state_name(state: ClaimState) -> &'static str {
    match state {
        ClaimState::Draft => "draft",
        ClaimState::Ready => "ready",
        ClaimState::Submitted => "submitted",
        ClaimState::Accepted => "accepted",
        ClaimState::Rejected => "rejected",
        ClaimState::Paid => "paid",
        ClaimState::PartiallyPaid => "partially_paid",
        ClaimState::Denied => "denied",
        ClaimState::Void => "void",
        ClaimState::Replaced => "replaced",
    }
}

fn state_of(text: &str) -> ApiResult<ClaimState> {
    Ok(match text {
        "draft" => ClaimState::Draft,
        "ready" => ClaimState::Ready,
        "submitted" => ClaimState::Submitted,
        "accepted" => ClaimState::Accepted,
        "rejected" => ClaimState::Rejected,
        "paid" => ClaimState::Paid,
        "partially_paid" => ClaimState::PartiallyPaid,
        "denied" => ClaimState::Denied,
        "void" => ClaimState::Void,
        "replaced" => ClaimState::Replaced,
        other => return Err(ApiError::internal("a stored claim state", &other)),
    })
}

fn joined(items: &[String]) -> String {
    items.join(":")
}

fn split(text: &str) -> Vec<String> {
    text.split(':')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Inserts a claim with its lines and first event, taking its charges.
pub async fn insert(conn: &mut AnyConnection, claim: &StoredClaim) -> ApiResult<()> {
    insert_linked(conn, claim, ChargeLink::Take, "assembled").await
}

/// Inserts a claim with its lines and first event (`reason`), linking its charges as `link` says.
pub async fn insert_linked(
    conn: &mut AnyConnection,
    claim: &StoredClaim,
    link: ChargeLink<'_>,
    reason: &str,
) -> ApiResult<()> {
    let problems = serde_json::to_string(&claim.problems)
        .map_err(|e| ApiError::internal("a claim's problems", &e))?;
    sqlx::query(
        "INSERT INTO claims (name, organization, billing_entity, payer, patient, service_date, \
         provider, place_of_service, unit, state, frequency_code, original_claim, \
         payer_claim_number, total_cents, diagnoses, problems, split_with, batch, submit_us, \
         create_us, update_us, payer_sequence, prior_claim) VALUES ($1, $2, $3, $4, $5, $6, $7, \
         $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, 0, $19, $19, $20, $21)",
    )
    .bind(&claim.name)
    .bind(pm_runtime::names::organization_of(&claim.name))
    .bind(&claim.billing_entity)
    .bind(&claim.payer)
    .bind(&claim.patient)
    .bind(claim.service_date.format("%Y-%m-%d").to_string())
    .bind(&claim.provider)
    .bind(&claim.place_of_service)
    .bind(&claim.unit)
    .bind(state_name(claim.state))
    .bind(claim.frequency_code)
    .bind(&claim.original_claim)
    .bind(&claim.payer_claim_number)
    .bind(claim.total.cents())
    .bind(joined(&claim.diagnoses))
    .bind(problems)
    .bind(joined(&claim.split_with))
    .bind(&claim.batch)
    .bind(claim.create_us)
    .bind(&claim.payer_sequence)
    .bind(&claim.prior_claim)
    .execute(&mut *conn)
    .await?;
    for line in &claim.lines {
        sqlx::query(
            "INSERT INTO claim_lines (claim, line_number, charge, code, modifiers, units, \
             amount_cents, diagnosis_pointers, routed_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&claim.name)
        .bind(line.line_number)
        .bind(&line.charge)
        .bind(&line.code)
        .bind(joined(&line.modifiers))
        .bind(line.units)
        .bind(line.amount.cents())
        .bind(
            line.diagnosis_pointers
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(":"),
        )
        .bind(&line.routed_by)
        .execute(&mut *conn)
        .await?;
        // Claimed once: a concurrent assembly that took the charge first wins.
        let from = match link {
            ChargeLink::Keep => continue,
            ChargeLink::Take => "",
            ChargeLink::From(original) => original,
        };
        let taken = sqlx::query(
            "UPDATE charges SET claim = $1 WHERE name = $2 AND (claim = '' OR claim = $3)",
        )
        .bind(&claim.name)
        .bind(&line.charge)
        .bind(from)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if taken != 1 {
            return Err(ApiError::new(
                tonic::Code::Aborted,
                "CHARGE_CLAIMED",
                "a charge was claimed by a concurrent call; assemble again",
            ));
        }
    }
    record_event(conn, &claim.name, claim.state, reason).await
}

/// Appends an event to a claim's history without changing its state (what happened beside it:
/// a secondary claim made, or why none was).
pub async fn note(
    conn: &mut AnyConnection,
    claim: &str,
    state: ClaimState,
    reason: &str,
) -> ApiResult<()> {
    record_event(conn, claim, state, reason).await
}

/// Appends an event to a claim's history.
async fn record_event(
    conn: &mut AnyConnection,
    claim: &str,
    state: ClaimState,
    reason: &str,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO claim_events (claim, seq, state, reason, at_us) \
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4 FROM claim_events WHERE claim = $1",
    )
    .bind(claim)
    .bind(state_name(state))
    .bind(reason)
    .bind(now_micros())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Moves a claim from `from` to `to` (compare-and-set on the state), with the problems found and
/// an event. ABORTED `CLAIM_CHANGED` when a concurrent call moved it first.
pub async fn transition(
    conn: &mut AnyConnection,
    claim: &str,
    from: ClaimState,
    to: ClaimState,
    reason: &str,
    problems: Option<&[Problem]>,
) -> ApiResult<()> {
    let problems = problems
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| ApiError::internal("a claim's problems", &e))?;
    let moved = sqlx::query(
        "UPDATE claims SET state = $1, update_us = $2, problems = COALESCE($3, problems) \
         WHERE name = $4 AND state = $5",
    )
    .bind(state_name(to))
    .bind(now_micros())
    .bind(problems)
    .bind(claim)
    .bind(state_name(from))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if moved != 1 {
        return Err(ApiError::new(
            tonic::Code::Aborted,
            "CLAIM_CHANGED",
            "the claim changed meanwhile; read it again",
        ));
    }
    record_event(conn, claim, to, reason).await
}

/// Records the batch a submitted claim went out in.
pub async fn set_batch(conn: &mut AnyConnection, claim: &str, batch: &str) -> ApiResult<()> {
    sqlx::query("UPDATE claims SET batch = $1, submit_us = $2 WHERE name = $3")
        .bind(batch)
        .bind(now_micros())
        .bind(claim)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records the payer's claim control number once known.
pub async fn set_payer_claim_number(
    conn: &mut AnyConnection,
    claim: &str,
    number: &str,
) -> ApiResult<()> {
    sqlx::query("UPDATE claims SET payer_claim_number = $1 WHERE name = $2")
        .bind(number)
        .bind(claim)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// One claim with its lines and history.
pub async fn get(conn: &mut AnyConnection, name: &str) -> ApiResult<Option<StoredClaim>> {
    let Some(row) = sqlx::query(
        "SELECT name, billing_entity, payer, patient, service_date, provider, place_of_service, \
         unit, state, frequency_code, original_claim, payer_claim_number, total_cents, diagnoses, \
         problems, split_with, batch, create_us, update_us, payer_sequence, prior_claim \
         FROM claims WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let date: String = row.try_get("service_date")?;
    let problems: String = row.try_get("problems")?;
    let mut claim = StoredClaim {
        name: row.try_get("name")?,
        billing_entity: row.try_get("billing_entity")?,
        payer: row.try_get("payer")?,
        patient: row.try_get("patient")?,
        service_date: NaiveDate::parse_from_str(&date, "%Y-%m-%d")
            .map_err(|e| ApiError::internal("a stored date of service", &e))?,
        provider: row.try_get("provider")?,
        place_of_service: row.try_get("place_of_service")?,
        unit: row.try_get("unit")?,
        state: state_of(&row.try_get::<String, _>("state")?)?,
        frequency_code: row.try_get("frequency_code")?,
        original_claim: row.try_get("original_claim")?,
        payer_claim_number: row.try_get("payer_claim_number")?,
        total: Cents::new(row.try_get("total_cents")?),
        diagnoses: split(&row.try_get::<String, _>("diagnoses")?),
        problems: serde_json::from_str(&problems).unwrap_or_default(),
        split_with: split(&row.try_get::<String, _>("split_with")?),
        batch: row.try_get("batch")?,
        lines: Vec::new(),
        history: Vec::new(),
        create_us: row.try_get("create_us")?,
        update_us: row.try_get("update_us")?,
        payer_sequence: row.try_get("payer_sequence")?,
        prior_claim: row.try_get("prior_claim")?,
    };
    let lines = sqlx::query(
        "SELECT line_number, charge, code, modifiers, units, amount_cents, diagnosis_pointers, \
         routed_by FROM claim_lines WHERE claim = $1 ORDER BY line_number",
    )
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    for line in lines {
        claim.lines.push(StoredLine {
            line_number: line.try_get("line_number")?,
            charge: line.try_get("charge")?,
            code: line.try_get("code")?,
            modifiers: split(&line.try_get::<String, _>("modifiers")?),
            units: line.try_get("units")?,
            amount: Cents::new(line.try_get("amount_cents")?),
            diagnosis_pointers: split(&line.try_get::<String, _>("diagnosis_pointers")?)
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect(),
            routed_by: line.try_get("routed_by")?,
        });
    }
    let events =
        sqlx::query("SELECT state, reason, at_us FROM claim_events WHERE claim = $1 ORDER BY seq")
            .bind(name)
            .fetch_all(&mut *conn)
            .await?;
    for event in events {
        claim.history.push((
            state_of(&event.try_get::<String, _>("state")?)?,
            event.try_get("reason")?,
            event.try_get("at_us")?,
        ));
    }
    Ok(Some(claim))
}

/// The unit a claim sits in (for the shared scope check).
pub async fn unit_of(conn: &mut AnyConnection, name: &str) -> ApiResult<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT unit FROM claims WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// The names of the claims in `state` (of one billing entity, when given), oldest first.
pub async fn in_state(
    conn: &mut AnyConnection,
    organization: &str,
    state: ClaimState,
    billing_entity: &str,
    limit: usize,
) -> ApiResult<Vec<String>> {
    let names: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT name FROM claims WHERE organization = $1 AND state = $2 \
         AND ($3 = '' OR billing_entity = $3) ORDER BY create_us, name LIMIT {limit}"
    ))
    .bind(organization)
    .bind(state_name(state))
    .bind(billing_entity)
    .fetch_all(&mut *conn)
    .await?;
    Ok(names)
}

/// Rows read per query while filling a page of claims.
const LIST_CHUNK: usize = 200;
/// Chunks read at most for one page: a caller who sees few claims among many gets a short page
/// (and a token to go on) rather than a scan of the whole table.
const LIST_CHUNKS: usize = 50;

/// A page of claims (names), newest first, in the caller's units (`None`: every unit).
pub async fn list(
    conn: &mut AnyConnection,
    organization: &str,
    state: Option<ClaimState>,
    units: Option<&[String]>,
    page_size: i32,
    page_token: &str,
) -> ApiResult<(Vec<String>, String)> {
    let size = paging::page_size(page_size)?;
    let state = state.map(state_name).unwrap_or("");
    let fingerprint = paging::query_fingerprint(&["claims", organization, state]);
    let mut cursor = paging::decode_newest_first(page_token, &fingerprint)?;
    let mut found: Vec<(i64, String)> = Vec::new();
    let mut exhausted = false;
    'chunks: for _ in 0..LIST_CHUNKS {
        let rows = sqlx::query(&format!(
            "SELECT name, unit, create_us FROM claims WHERE organization = $1 \
             AND ($2 = '' OR state = $2) \
             AND (create_us < $3 OR (create_us = $3 AND ($4 = '' OR name < $4))) \
             ORDER BY create_us DESC, name DESC LIMIT {LIST_CHUNK}"
        ))
        .bind(organization)
        .bind(state)
        .bind(cursor.0)
        .bind(cursor.1.clone())
        .fetch_all(&mut *conn)
        .await?;
        for row in &rows {
            let name: String = row.try_get("name")?;
            let unit: String = row.try_get("unit")?;
            let create_us: i64 = row.try_get("create_us")?;
            if units.is_none_or(|u| u.contains(&unit)) {
                found.push((create_us, name.clone()));
                if found.len() > size {
                    break 'chunks;
                }
            }
            cursor = (create_us, name);
        }
        if rows.len() < LIST_CHUNK {
            exhausted = true;
            break;
        }
    }
    let token = if found.len() > size {
        found.truncate(size);
        let (us, name) = found.last().cloned().unwrap_or_default();
        paging::encode_token(&fingerprint, vec![us.to_string(), name])
    } else if exhausted {
        String::new()
    } else {
        // The scan's bound was reached: go on from where it stopped.
        paging::encode_token(&fingerprint, vec![cursor.0.to_string(), cursor.1])
    };
    Ok((found.into_iter().map(|(_, name)| name).collect(), token))
}

/// Marks charges set aside (self-pay, invoiced, held) so that assembly does not read them again:
/// their `claim` becomes `-{reason}`.
pub async fn set_aside(conn: &mut AnyConnection, charge: &str, reason: &str) -> ApiResult<()> {
    sqlx::query("UPDATE charges SET claim = $1 WHERE name = $2 AND claim = ''")
        .bind(format!("-{reason}"))
        .bind(charge)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Allocates the next interchange control number for a batch and stores the batch (its content is
/// written by [`fill_batch`] once the file, which carries the number, is written).
pub async fn new_batch(
    conn: &mut AnyConnection,
    organization: &str,
    billing_entity: &str,
    claim_count: usize,
) -> ApiResult<i64> {
    let number: i64 = sqlx::query_scalar(
        "INSERT INTO claim_batches (organization, billing_entity, file_name, content, claim_count, \
         create_us) VALUES ($1, $2, '', '', $3, $4) RETURNING control_number",
    )
    .bind(organization)
    .bind(billing_entity)
    .bind(i32::try_from(claim_count).unwrap_or(i32::MAX))
    .bind(now_micros())
    .fetch_one(&mut *conn)
    .await?;
    Ok(number)
}

/// Stores a batch's file.
pub async fn fill_batch(
    conn: &mut AnyConnection,
    control_number: i64,
    file_name: &str,
    content: &str,
) -> ApiResult<()> {
    sqlx::query("UPDATE claim_batches SET file_name = $1, content = $2 WHERE control_number = $3")
        .bind(file_name)
        .bind(content)
        .bind(control_number)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records a remittance once: `None` when the same payer's trace number was imported before.
pub async fn record_remittance(
    conn: &mut AnyConnection,
    organization: &str,
    payer_id: &str,
    trace_number: &str,
    total: Cents,
) -> ApiResult<Option<i64>> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO remittances (organization, payer_id, trace_number, total_cents, import_us) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(organization)
    .bind(payer_id)
    .bind(trace_number)
    .bind(total.cents())
    .bind(now_micros())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(id)
}

/// Keeps a payment that matched no claim.
pub async fn unmatched(
    conn: &mut AnyConnection,
    organization: &str,
    remittance: i64,
    claim_number: &str,
    paid: Cents,
    reason: &str,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO unmatched_payments (organization, remittance, claim_number, paid_cents, \
         reason, create_us) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(organization)
    .bind(remittance)
    .bind(claim_number)
    .bind(paid.cents())
    .bind(reason)
    .bind(now_micros())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The claims of a batch (by its interchange control number), still SUBMITTED.
pub async fn submitted_in_batch(
    conn: &mut AnyConnection,
    organization: &str,
    control_number: i64,
) -> ApiResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT name FROM claims WHERE organization = $1 AND batch = $2 AND state = 'submitted' \
         ORDER BY name",
    )
    .bind(organization)
    .bind(format!("{organization}/claimBatches/{control_number}"))
    .fetch_all(&mut *conn)
    .await?)
}

/// Keeps a payer's adjudication of one claim line (line 0: the claim level) from remittance
/// `remittance`: what it paid, when, and each CAS adjustment in order.
pub async fn record_adjudication(
    conn: &mut AnyConnection,
    claim: &str,
    remittance: i64,
    adjudication: &Adjudication,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO claim_line_adjudications (claim, line_number, remittance, paid_cents, \
         adjudication_date) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(claim)
    .bind(adjudication.line_number)
    .bind(remittance)
    .bind(adjudication.paid.cents())
    .bind(adjudication.date.format("%Y-%m-%d").to_string())
    .execute(&mut *conn)
    .await?;
    for (seq, a) in (1i32..).zip(&adjudication.adjustments) {
        sqlx::query(
            "INSERT INTO claim_line_adjustments (claim, line_number, remittance, seq, group_code, \
             reason_code, amount_cents) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(claim)
        .bind(adjudication.line_number)
        .bind(remittance)
        .bind(seq)
        .bind(&a.group)
        .bind(&a.reason)
        .bind(a.amount.cents())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A claim's adjudication from its latest remittance, by line (line 0 first when present).
pub async fn adjudication(conn: &mut AnyConnection, claim: &str) -> ApiResult<Vec<Adjudication>> {
    let latest: Option<i64> =
        sqlx::query_scalar("SELECT MAX(remittance) FROM claim_line_adjudications WHERE claim = $1")
            .bind(claim)
            .fetch_one(&mut *conn)
            .await?;
    let Some(remittance) = latest else {
        return Ok(Vec::new());
    };
    let rows = sqlx::query(
        "SELECT line_number, paid_cents, adjudication_date FROM claim_line_adjudications \
         WHERE claim = $1 AND remittance = $2 ORDER BY line_number",
    )
    .bind(claim)
    .bind(remittance)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let date: String = row.try_get("adjudication_date")?;
        out.push(Adjudication {
            line_number: row.try_get("line_number")?,
            paid: Cents::new(row.try_get("paid_cents")?),
            adjustments: Vec::new(),
            date: NaiveDate::parse_from_str(&date, "%Y-%m-%d")
                .map_err(|e| ApiError::internal("a stored adjudication date", &e))?,
        });
    }
    let adjustments = sqlx::query(
        "SELECT line_number, group_code, reason_code, amount_cents FROM claim_line_adjustments \
         WHERE claim = $1 AND remittance = $2 ORDER BY line_number, seq",
    )
    .bind(claim)
    .bind(remittance)
    .fetch_all(&mut *conn)
    .await?;
    for row in adjustments {
        let line: i32 = row.try_get("line_number")?;
        if let Some(entry) = out.iter_mut().find(|a| a.line_number == line) {
            entry.adjustments.push(StoredAdjustment {
                group: row.try_get("group_code")?,
                reason: row.try_get("reason_code")?,
                amount: Cents::new(row.try_get("amount_cents")?),
            });
        }
    }
    Ok(out)
}

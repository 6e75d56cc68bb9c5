//! Care-management time (CCM/PCM): entries recorded per patient and program unit, summed per month
//! in the organization's time zone, and months closed into charges. The rules (thresholds, code
//! selection, prerequisites) are pure, in [`crate::domain::care_time`]; this module stores entries
//! and closed months (`care_time_entries`, `care_months`), reads the prerequisites from Org's intake
//! records, and makes the charges through [`Charging`], in one transaction with the month's close.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use pm_api::billing::{
    CareCode, CareProgram, CareStaffRole, CareTimeEntry, ChargeSource, CloseCareMonthResponse,
};
use pm_api::org::IntakeRequirement;
use pm_runtime::time::{now_micros, to_micros, to_timestamp};
use pm_runtime::{ApiError, ApiResult, Db, names};
use sqlx::{AnyConnection, Row};

use crate::charges;
use crate::charging::{Charging, Context};
use crate::domain::care_time::{self, MonthKey, Prerequisites, Program, StaffRole, TimeEntry};
use crate::domain::charge::{Line, qualified};

/// Care time over Billing's slice.
pub struct CareTime {
    db: Db,
    charging: Arc<Charging>,
}

fn role_name(role: StaffRole) -> &'static str {
    match role {
        StaffRole::ClinicalStaff => "clinical_staff",
        StaffRole::Physician => "physician",
    }
}

fn month_text(month: MonthKey) -> String {
    month.to_string()
}

/// A `YYYY-MM` month.
pub fn parse_month(field: &str, text: &str) -> ApiResult<MonthKey> {
    NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d")
        .ok()
        .filter(|_| text.len() == 7)
        .map(MonthKey::of_date)
        .ok_or_else(|| ApiError::invalid(field, "a month is YYYY-MM").because("MONTH_INVALID"))
}

async fn closed(
    conn: &mut AnyConnection,
    patient: &str,
    unit: &str,
    month: &str,
) -> ApiResult<bool> {
    let row: Option<String> = sqlx::query_scalar(
        "SELECT outcome FROM care_months WHERE patient = $1 AND unit = $2 AND month = $3",
    )
    .bind(patient)
    .bind(unit)
    .bind(month)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.is_some())
}

fn month_closed() -> ApiError {
    ApiError::precondition(
        "MONTH_CLOSED",
        "the month is closed for billing: it takes no more entries",
    )
}

impl CareTime {
    /// Care time over `db`, charging through `charging`.
    pub fn new(db: Db, charging: Arc<Charging>) -> Self {
        Self { db, charging }
    }

    /// The organization's time zone (months are counted in it).
    async fn zone(&self, organization: &str) -> ApiResult<String> {
        self.charging.org().organization_zone(organization).await
    }

    /// Checks an entry (minutes, not ahead) and names it and its month; [`write_entry`] records it.
    pub async fn prepare_entry(
        &self,
        organization: &str,
        entry: &CareTimeEntry,
    ) -> ApiResult<PreparedEntry> {
        let role = match CareStaffRole::try_from(entry.role).unwrap_or(CareStaffRole::Unspecified) {
            CareStaffRole::ClinicalStaff => StaffRole::ClinicalStaff,
            CareStaffRole::Physician => StaffRole::Physician,
            CareStaffRole::Unspecified => {
                return Err(ApiError::invalid("care_time_entry.role", "is required")
                    .because("FIELD_REQUIRED"));
            }
        };
        let performed_at = entry
            .performed_time
            .as_ref()
            .map(to_micros)
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(|| {
                ApiError::invalid("care_time_entry.performed_time", "is required")
                    .because("FIELD_REQUIRED")
            })?;
        let pure = TimeEntry {
            patient: entry.patient.clone(),
            staff: entry.staff.clone(),
            role,
            minutes: entry.minutes,
            performed_at,
            billing_practitioner: entry.billing_practitioner.clone(),
        };
        let zone = self.zone(organization).await?;
        care_time::check_entry(&pure, &[], &zone)
            .map_err(|e| crate::handlers::refusal(e.under("care_time_entry")))?;
        let month = care_time::month_of(performed_at, &zone)
            .map(month_text)
            .unwrap_or_default();
        Ok(PreparedEntry {
            entry: CareTimeEntry {
                name: format!("{organization}/careTimeEntries/{}", uuid::Uuid::now_v7()),
                month,
                create_time: Some(to_timestamp(now_micros())),
                ..entry.clone()
            },
            role,
            performed_us: performed_at.timestamp_micros(),
        })
    }

    /// A month's entries, oldest first, and whether it is closed.
    pub async fn entries(
        &self,
        patient: &str,
        unit: &str,
        month: &str,
    ) -> ApiResult<(Vec<CareTimeEntry>, bool)> {
        let mut conn = self.db.read().await?;
        let rows = sqlx::query(
            "SELECT name, staff, role, minutes, performed_us, billing_practitioner, create_us \
             FROM care_time_entries WHERE patient = $1 AND unit = $2 AND month = $3 \
             ORDER BY performed_us, name LIMIT 2000",
        )
        .bind(patient)
        .bind(unit)
        .bind(month)
        .fetch_all(&mut *conn)
        .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let role = match row.try_get::<String, _>("role")?.as_str() {
                "physician" => CareStaffRole::Physician,
                _ => CareStaffRole::ClinicalStaff,
            };
            entries.push(CareTimeEntry {
                name: row.try_get("name")?,
                patient: patient.to_string(),
                unit: unit.to_string(),
                staff: row.try_get("staff")?,
                role: role.into(),
                minutes: row.try_get("minutes")?,
                performed_time: Some(to_timestamp(row.try_get("performed_us")?)),
                billing_practitioner: row.try_get("billing_practitioner")?,
                month: month.to_string(),
                create_time: Some(to_timestamp(row.try_get("create_us")?)),
            });
        }
        let is_closed = closed(&mut conn, patient, unit, month).await?;
        Ok((entries, is_closed))
    }

    /// Consent and a care plan on the patient's enrollment in `unit`: the day each came into force
    /// (the earliest record not revoked and not expired by the month's end).
    async fn prerequisites(
        &self,
        patient: &str,
        unit: &str,
        month_end: NaiveDate,
    ) -> ApiResult<Prerequisites> {
        let enrollments = self.charging.org().enrollments(patient).await?;
        let end = month_end
            .and_hms_opt(23, 59, 59)
            .map(|t| t.and_utc())
            .unwrap_or_else(Utc::now);
        let since = |requirement: IntakeRequirement| {
            enrollments
                .iter()
                .filter(|e| e.unit == unit)
                .flat_map(|e| e.intake_records.iter())
                .filter(|r| r.requirement == requirement as i32 && r.revoke_time.is_none())
                .filter(|r| {
                    r.expire_time
                        .as_ref()
                        .and_then(|t| DateTime::from_timestamp(t.seconds, 0))
                        .is_none_or(|expiry| expiry > end)
                })
                .filter_map(|r| {
                    r.effective_time
                        .as_ref()
                        .and_then(|t| DateTime::from_timestamp(t.seconds, 0))
                })
                .filter(|start| *start <= end)
                .min()
                .map(|start| start.date_naive())
        };
        Ok(Prerequisites {
            consent_since: since(IntakeRequirement::Consent),
            care_plan_since: since(IntakeRequirement::CarePlan),
        })
    }

    /// Computes a month's close (see the RPC's contract); [`write_close`] records it.
    pub async fn prepare_close(
        &self,
        patient: &str,
        unit: &str,
        month: MonthKey,
        program: CareProgram,
        diagnoses: &[String],
    ) -> ApiResult<PreparedClose> {
        let organization = names::organization_of(patient).to_string();
        let program = match program {
            CareProgram::Ccm => Program::Ccm,
            CareProgram::ComplexCcm => Program::ComplexCcm,
            CareProgram::Pcm => Program::Pcm,
            CareProgram::Unspecified => {
                return Err(ApiError::invalid("program", "is required").because("FIELD_REQUIRED"));
            }
        };
        let month_end = month.last_day().ok_or_else(|| {
            ApiError::invalid("month", "a month is YYYY-MM").because("MONTH_INVALID")
        })?;
        let zone = self.zone(&organization).await?;
        if care_time::month_of(Utc::now(), &zone).is_some_and(|now| now <= month) {
            return Err(ApiError::precondition(
                "MONTH_NOT_ENDED",
                "a month is closed once it has ended",
            ));
        }
        let month_name = month_text(month);
        let (wire_entries, is_closed) = self.entries(patient, unit, &month_name).await?;
        if is_closed {
            return Err(ApiError::precondition(
                "MONTH_CLOSED",
                "the month is closed for billing already",
            ));
        }
        let entries: Vec<TimeEntry> = wire_entries
            .iter()
            .map(|e| TimeEntry {
                patient: patient.to_string(),
                staff: e.staff.clone(),
                role: if e.role == CareStaffRole::Physician as i32 {
                    StaffRole::Physician
                } else {
                    StaffRole::ClinicalStaff
                },
                minutes: e.minutes,
                performed_at: e
                    .performed_time
                    .as_ref()
                    .map(to_micros)
                    .and_then(DateTime::from_timestamp_micros)
                    .unwrap_or_default(),
                billing_practitioner: e.billing_practitioner.clone(),
            })
            .collect();
        let prerequisites = self.prerequisites(patient, unit, month_end).await?;
        let outcome = care_time::close_month(program, &entries, prerequisites, month_end);
        let mut rows = Vec::new();
        if outcome.not_billed.is_none() && !outcome.codes.is_empty() {
            let payer = self
                .primary_payer(&organization, patient, month_end)
                .await?;
            let context = Context {
                patient: patient.to_string(),
                unit: unit.to_string(),
                provider: outcome.practitioner.clone(),
                payer,
                service_date: month_end,
            };
            let schedules = self.charging.fee_schedules(&organization).await?;
            for code in &outcome.codes {
                let line = Line {
                    code: code.code.to_string(),
                    modifiers: Vec::new(),
                    units: code.units,
                    diagnoses: diagnoses.to_vec(),
                    place_of_service: String::new(),
                };
                let name = care_charge_name(patient, unit, &month_name, code.code);
                rows.push(
                    self.charging
                        .charge(&schedules, name, ChargeSource::CareTime, &context, &line)
                        .await?,
                );
            }
        }
        let (reason, why) = match &outcome.not_billed {
            Some(not_billed) => (not_billed.reason().to_string(), not_billed.why()),
            None => (String::new(), String::new()),
        };
        let answer = CloseCareMonthResponse {
            total_minutes: outcome.total_minutes,
            codes: outcome
                .codes
                .iter()
                .map(|c| CareCode {
                    code: c.code.to_string(),
                    units: c.units,
                    minutes_covered: c.minutes_covered,
                    why: c.why.clone(),
                })
                .collect(),
            not_billed_reason: reason,
            not_billed_why: why,
            charges: rows.iter().map(charges::wire).collect(),
        };
        Ok(PreparedClose {
            patient: patient.to_string(),
            unit: unit.to_string(),
            month: month_name,
            program,
            rows,
            answer,
        })
    }

    /// The payer of the patient's primary coverage in force at `day` ("" for self-pay).
    async fn primary_payer(
        &self,
        organization: &str,
        patient: &str,
        day: NaiveDate,
    ) -> ApiResult<String> {
        let coverages = self.charging.org().coverages(patient).await?;
        Ok(coverages
            .iter()
            .filter(|c| crate::claiming::coverage_in_force(c, day))
            .min_by_key(|c| c.priority)
            .map(|c| qualified(organization, &c.payer))
            .unwrap_or_default())
    }
}

/// A checked entry, ready to record.
pub struct PreparedEntry {
    entry: CareTimeEntry,
    role: StaffRole,
    performed_us: i64,
}

/// Records a prepared entry in the caller's transaction, unless its month was closed meanwhile
/// (FAILED_PRECONDITION `MONTH_CLOSED`).
pub async fn write_entry(
    conn: &mut AnyConnection,
    prepared: &PreparedEntry,
) -> ApiResult<CareTimeEntry> {
    let entry = &prepared.entry;
    if closed(conn, &entry.patient, &entry.unit, &entry.month).await? {
        return Err(month_closed());
    }
    sqlx::query(
        "INSERT INTO care_time_entries (name, organization, patient, unit, staff, role, minutes, \
         performed_us, month, billing_practitioner, create_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&entry.name)
    .bind(names::organization_of(&entry.name))
    .bind(&entry.patient)
    .bind(&entry.unit)
    .bind(&entry.staff)
    .bind(role_name(prepared.role))
    .bind(entry.minutes)
    .bind(prepared.performed_us)
    .bind(&entry.month)
    .bind(&entry.billing_practitioner)
    .bind(
        entry
            .create_time
            .as_ref()
            .map(to_micros)
            .unwrap_or_else(now_micros),
    )
    .execute(&mut *conn)
    .await?;
    Ok(entry.clone())
}

/// A month's close, computed, ready to write.
pub struct PreparedClose {
    patient: String,
    unit: String,
    month: String,
    program: Program,
    rows: Vec<crate::charges::ChargeRow>,
    answer: CloseCareMonthResponse,
}

/// Writes a computed close in the caller's transaction: the month closed (refused if it was
/// meanwhile) and its charges.
pub async fn write_close(
    conn: &mut AnyConnection,
    close: &PreparedClose,
) -> ApiResult<CloseCareMonthResponse> {
    let outcome = if close.answer.not_billed_reason.is_empty() {
        "billed"
    } else {
        close.answer.not_billed_reason.as_str()
    };
    let inserted = sqlx::query(
        "INSERT INTO care_months (patient, unit, month, program, outcome, closed_us) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&close.patient)
    .bind(&close.unit)
    .bind(&close.month)
    .bind(format!("{:?}", close.program))
    .bind(outcome)
    .bind(now_micros())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::precondition(
            "MONTH_CLOSED",
            "the month is closed for billing already",
        ));
    }
    for row in &close.rows {
        charges::insert(conn, row).await?;
    }
    Ok(close.answer.clone())
}

/// The charge of one code of a closed month: the same name however often the close is retried.
fn care_charge_name(patient: &str, unit: &str, month: &str, code: &str) -> String {
    let id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("pm:care-month:{patient}:{unit}:{month}:{code}").as_bytes(),
    );
    format!("{}/charges/{id}", names::organization_of(patient))
}

//! Patients in the store: the standard methods with the rules a write must pass inside its
//! transaction, and the lookups other calls need.

use pm_api::org::Patient;
use pm_runtime::docstore::{self, CreateCall, ListCall, Page};
use pm_runtime::filter::Term;
use pm_runtime::{ApiError, ApiResult, Db};
use prost_types::FieldMask;
use sqlx::AnyConnection;

use super::{FAMILY_KEY, GIVEN_KEY, PATIENT, identifier_taken};
use crate::domain;

/// A live patient.
pub async fn get(db: &Db, name: &str) -> ApiResult<Patient> {
    docstore::get_by_name(db, &PATIENT, name).await
}

/// One page of an organization's patients.
pub async fn list(db: &Db, call: ListCall<'_>) -> ApiResult<Page<Patient>> {
    docstore::list(db, &PATIENT, call).await
}

/// What a patient search asks for: the folded keys of the typed names and the birth date
/// (`YYYY-MM-DD`), each `None` when not asked.
pub struct NameQuery {
    /// The family-name key ([`crate::search::query_key`]).
    pub family: Option<String>,
    /// The given-name key.
    pub given: Option<String>,
    /// The birth date.
    pub birth_date: Option<String>,
}

/// One page of the live patients matching `query` (at least one name key), by name: the name keys'
/// index drives the read, the call's scope and page token apply as for [`list`].
pub async fn search(db: &Db, call: ListCall<'_>, query: NameQuery) -> ApiResult<Page<Patient>> {
    let term = |field: &str, value: String| Term {
        field: field.to_string(),
        value,
    };
    let terms: Vec<Term> = [
        query.family.map(|k| term(FAMILY_KEY, k)),
        query.given.map(|k| term(GIVEN_KEY, k)),
        query.birth_date.map(|d| term("birth_date", d)),
    ]
    .into_iter()
    .flatten()
    .collect();
    docstore::list_matching(db, &PATIENT, call, terms).await
}

/// Indexes for SearchPatients the patients stored before it existed (those without name keys);
/// returns how many.
pub async fn index_names(db: &Db) -> ApiResult<usize> {
    docstore::backfill_attr(db, &PATIENT, FAMILY_KEY).await
}

/// Undeletes a patient: its identifiers must still be its own; `record` as for [`create`].
pub async fn undelete<R>(db: &Db, name: &str, etag: &str, record: R) -> ApiResult<Patient>
where
    R: AsyncFnOnce(&mut AnyConnection, &Patient) -> ApiResult<()>,
{
    docstore::undelete(db, &PATIENT, name, etag, async |conn, p| {
        check(conn, p).await?;
        record(conn, p).await
    })
    .await
}

/// Whether a patient of this name was ever stored, deleted or not: the accesses to a deleted
/// patient's record stay listable.
pub async fn ever_stored(db: &Db, name: &str) -> ApiResult<bool> {
    let mut conn = db.read().await?;
    Ok(docstore::get::<Patient>(&mut conn, name).await?.is_some())
}

/// The live patients among `patients` and the live resources of `collections` (their enrollments
/// and coverages), in one query: eligibility reads many patients at once.
pub async fn with_collections(
    conn: &mut AnyConnection,
    patients: &[String],
    collections: &[String],
) -> ApiResult<docstore::LiveRows> {
    docstore::read_live(conn, patients, collections).await
}

/// Creates a patient; `record` runs in the same transaction once the rules pass (the PHI audit
/// of the write: both commit or neither does).
pub async fn create<R>(
    db: &Db,
    call: CreateCall<'_>,
    patient: Patient,
    record: R,
) -> ApiResult<Patient>
where
    R: AsyncFnOnce(&mut AnyConnection, &Patient) -> ApiResult<()>,
{
    docstore::create(db, &PATIENT, call, patient, async |conn, p| {
        check(conn, p).await?;
        record(conn, p).await
    })
    .await
}

/// Updates the fields of `patch` named by `mask`; `record` as for [`create`].
pub async fn update<R>(
    db: &Db,
    patch: Option<Patient>,
    mask: Option<&FieldMask>,
    record: R,
) -> ApiResult<Patient>
where
    R: AsyncFnOnce(&mut AnyConnection, &Patient) -> ApiResult<()>,
{
    docstore::update(db, &PATIENT, patch, mask, async |conn, _, p| {
        check(conn, p).await?;
        record(conn, p).await
    })
    .await
}

/// Soft-deletes a patient; `record` as for [`create`].
pub async fn delete<R>(db: &Db, name: &str, etag: &str, record: R) -> ApiResult<Patient>
where
    R: AsyncFnOnce(&mut AnyConnection, &Patient) -> ApiResult<()>,
{
    docstore::soft_delete(db, &PATIENT, name, etag, async |conn, p| {
        record(conn, p).await
    })
    .await
}

/// The patient's own rules, then no other live patient of the organization may hold one of its
/// identifiers.
async fn check(conn: &mut AnyConnection, patient: &Patient) -> ApiResult<()> {
    domain::validate_patient(patient, chrono::Utc::now().date_naive())?;
    if let Some(index) = identifier_taken(conn, patient).await? {
        // The identifier itself is PHI: the error names its position, not its value.
        return Err(ApiError::already_exists(
            "PATIENT_IDENTIFIER_TAKEN",
            format!("patient.identifiers[{index}] already identifies another patient of the organization"),
        )
        .with_violation(format!("patient.identifiers[{index}]"), "already identifies another patient"));
    }
    Ok(())
}

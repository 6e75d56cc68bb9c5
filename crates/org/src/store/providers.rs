//! Providers and their credentials in the store: the standard methods with the rules a write must
//! pass inside its transaction, and the lookups CheckCredential needs.

use pm_api::org::{Credential, Provider};
use pm_runtime::docstore::{self, CreateCall, ListCall, Page};
use pm_runtime::{ApiError, ApiResult, Db, names};
use prost_types::FieldMask;
use sqlx::AnyConnection;

use super::{
    CREDENTIAL, PROVIDER, credential_periods, credentials_for, provider_with_npi, referenced_unit,
};
use crate::domain;

/// A live provider.
pub async fn get(db: &Db, name: &str) -> ApiResult<Provider> {
    docstore::get_by_name(db, &PROVIDER, name).await
}

/// One page of an organization's providers.
pub async fn list(db: &Db, call: ListCall<'_>) -> ApiResult<Page<Provider>> {
    docstore::list(db, &PROVIDER, call).await
}

/// Creates a provider.
pub async fn create(db: &Db, call: CreateCall<'_>, provider: Provider) -> ApiResult<Provider> {
    docstore::create(db, &PROVIDER, call, provider, async |conn, p| {
        check_provider(conn, p).await
    })
    .await
}

/// Updates the fields of `patch` named by `mask`.
pub async fn update(
    db: &Db,
    patch: Option<Provider>,
    mask: Option<&FieldMask>,
) -> ApiResult<Provider> {
    docstore::update(db, &PROVIDER, patch, mask, async |conn, _, p| {
        check_provider(conn, p).await
    })
    .await
}

/// Undeletes a provider: no other live provider of the organization may have taken its NPI.
pub async fn undelete(db: &Db, name: &str, etag: &str) -> ApiResult<Provider> {
    docstore::undelete(db, &PROVIDER, name, etag, async |conn, p| {
        check_provider(conn, p).await
    })
    .await
}

/// Soft-deletes a provider.
pub async fn delete(db: &Db, name: &str, etag: &str) -> ApiResult<Provider> {
    docstore::soft_delete(db, &PROVIDER, name, etag, async |_, _| Ok(())).await
}

/// A live credential.
pub async fn get_credential(db: &Db, name: &str) -> ApiResult<Credential> {
    docstore::get_by_name(db, &CREDENTIAL, name).await
}

/// One page of a provider's credentials.
pub async fn list_credentials(db: &Db, call: ListCall<'_>) -> ApiResult<Page<Credential>> {
    docstore::list(db, &CREDENTIAL, call).await
}

/// Grants a credential.
pub async fn create_credential(
    db: &Db,
    call: CreateCall<'_>,
    credential: Credential,
) -> ApiResult<Credential> {
    docstore::create(db, &CREDENTIAL, call, credential, async |conn, c| {
        check_credential(conn, c).await
    })
    .await
}

/// Updates the fields of `patch` named by `mask`.
pub async fn update_credential(
    db: &Db,
    patch: Option<Credential>,
    mask: Option<&FieldMask>,
) -> ApiResult<Credential> {
    docstore::update(db, &CREDENTIAL, patch, mask, async |conn, _, c| {
        check_credential(conn, c).await
    })
    .await
}

/// Undeletes a credential: it may not overlap a live credential of the provider for its unit.
pub async fn undelete_credential(db: &Db, name: &str, etag: &str) -> ApiResult<Credential> {
    docstore::undelete(db, &CREDENTIAL, name, etag, async |conn, c| {
        check_credential(conn, c).await
    })
    .await
}

/// Soft-deletes a credential.
pub async fn delete_credential(db: &Db, name: &str, etag: &str) -> ApiResult<Credential> {
    docstore::soft_delete(db, &CREDENTIAL, name, etag, async |_, _| Ok(())).await
}

/// The live credentials of `provider` for `unit`; NOT_FOUND for whichever of the two (provider
/// first) is missing or deleted.
pub async fn credentials_of(db: &Db, provider: &str, unit: &str) -> ApiResult<Vec<Credential>> {
    let mut conn = db.read().await?;
    for name in [provider, unit] {
        if !docstore::exists_live(&mut conn, name).await? {
            return Err(ApiError::not_found(name));
        }
    }
    credentials_for(&mut conn, provider, unit).await
}

/// The provider's own rules, then no other live provider of the organization may hold its NPI.
async fn check_provider(conn: &mut AnyConnection, provider: &Provider) -> ApiResult<()> {
    domain::validate_provider(provider)?;
    let organization = names::organization_of(&provider.name);
    if let Some(other) =
        provider_with_npi(conn, organization, &provider.npi, &provider.name).await?
    {
        return Err(ApiError::already_exists(
            "NPI_ALREADY_REGISTERED",
            format!("provider {other} already has this NPI"),
        )
        .with_meta("provider", other)
        .with_violation("provider.npi", "is already registered to another provider"));
    }
    Ok(())
}

/// The credential's own rules, its unit must exist, and it may not overlap the provider's other
/// credentials for that unit.
async fn check_credential(conn: &mut AnyConnection, credential: &Credential) -> ApiResult<()> {
    let period = domain::validate_credential(credential)?;
    referenced_unit(conn, &credential.unit, "credential.unit").await?;
    let provider = names::parent_of(&credential.name);
    let others = credential_periods(conn, provider, &credential.unit, &credential.name).await?;
    domain::check_no_credential_overlap(&period, &others)
}

//! `pm admin`: what the operator of a deployment does with RBAC's own slice and configuration, before
//! anyone can call the API (the first platform operator) or when nobody can mint a token over it.
//!
//! These run with the database credentials of RBAC's slice, not over the wire: whoever holds them can
//! already write any binding, so the tool adds no power, and no RPC accepts an unauthenticated caller
//! in production (`tls.mode = files` has no bootstrap certificate). Each write commits together with
//! its audit record in RBAC's trail (`pm audit verify --service rbac`).

use pm_api::rbac::{IssueTokenResponse, Principal, PrincipalKind, Role as PbRole, RoleBinding};
use pm_authz::audit::{self, AuditEvent, Outcome};
use pm_authz::policy::PLATFORM;
use pm_runtime::time::Micros;
use pm_runtime::{ApiError, ApiResult, Db, docstore, names};
use tonic::Code;

use crate::store::{self, PRINCIPAL, ROLE_BINDING};
use crate::{domain, handlers, keys};

/// The `method` of the audit record of a bootstrap.
pub const BOOTSTRAP_METHOD: &str = "pm admin bootstrap";
/// The `method` of the audit record of a token minted by `pm admin token`.
pub const TOKEN_METHOD: &str = "pm admin token";

/// What `pm admin bootstrap` made.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The new principal.
    pub principal: Principal,
    /// Its Platform Operator binding, under `organizations/-`.
    pub binding: RoleBinding,
    /// A token for it.
    pub token: IssueTokenResponse,
}

/// Creates the first platform operator: principal `principals/{principal_id}` and its binding
/// `organizations/-/roleBindings/{principal_id}`, with an audit record naming `actor` (who ran the
/// tool), in one transaction; then a token lasting `ttl`. Refused (FAILED_PRECONDITION,
/// `ALREADY_BOOTSTRAPPED`, naming the existing operator) when a platform operator exists, and
/// ALREADY_EXISTS when the principal does: nothing is written either way.
pub async fn platform_operator(
    db: &Db,
    principal_id: &str,
    display_name: &str,
    actor: &str,
    ttl: Micros,
) -> ApiResult<Bootstrapped> {
    if !names::is_valid_id(principal_id) {
        return Err(ApiError::invalid(
            "principal",
            "must be 1 to 63 lowercase letters, digits and dashes, starting with a letter",
        ));
    }
    check_ttl(ttl)?;
    let principal = Principal {
        name: format!("principals/{principal_id}"),
        display_name: display_name.to_string(),
        kind: PrincipalKind::User as i32,
        ..Default::default()
    };
    domain::validate_principal(&principal)?;
    // Every bootstrap takes the platform's lock: two at once cannot both find no operator.
    let mut tx = db.write(PLATFORM).await?;
    if let Some(existing) = store::platform_bindings_of(tx.conn(), "").await?.first() {
        return Err(ApiError::new(
            Code::FailedPrecondition,
            "ALREADY_BOOTSTRAPPED",
            format!(
                "a platform operator exists already: {} ({}); nothing was written. It creates \
                 organizations and grants their first administrators",
                existing.principal, existing.name
            ),
        )
        .with_meta("role_binding", &existing.name));
    }
    let principal = docstore::insert(tx.conn(), &PRINCIPAL, principal).await?;
    let binding = RoleBinding {
        name: format!("{PLATFORM}/roleBindings/{principal_id}"),
        principal: principal.name.clone(),
        role: PbRole::PlatformOperator as i32,
        reason: "pm admin bootstrap".into(),
        ..Default::default()
    };
    let binding = docstore::insert(tx.conn(), &ROLE_BINDING, binding).await?;
    let record = AuditEvent {
        resources: vec![principal.name.clone(), binding.name.clone()],
        ..AuditEvent::new(crate::NAME, BOOTSTRAP_METHOD, actor, Outcome::Success)
    };
    audit::stage(tx.conn(), &[record]).await?;
    tx.commit().await?;
    audit::seal(db).await?;
    let token = handlers::mint_token(db, &principal.name, ttl).await?;
    Ok(Bootstrapped {
        principal,
        binding,
        token,
    })
}

/// A token for the live principal `principal`, lasting `ttl`, minted with the slice's key and
/// recorded in RBAC's trail under `actor` (for a deployment without a dev tool certificate, where
/// nobody else can mint a principal's first token).
pub async fn token(
    db: &Db,
    principal: &str,
    actor: &str,
    ttl: Micros,
) -> ApiResult<IssueTokenResponse> {
    store::PRINCIPAL_NAME.parse("principal", principal)?;
    check_ttl(ttl)?;
    let mut tx = db.write(principal).await?;
    if docstore::get_live::<Principal>(tx.conn(), principal)
        .await?
        .is_none()
    {
        return Err(ApiError::new(
            Code::NotFound,
            "PRINCIPAL_NOT_FOUND",
            format!("{principal} does not exist"),
        ));
    }
    let record = AuditEvent {
        resources: vec![principal.to_string()],
        ..AuditEvent::new(crate::NAME, TOKEN_METHOD, actor, Outcome::Success)
    };
    audit::stage(tx.conn(), &[record]).await?;
    tx.commit().await?;
    audit::seal(db).await?;
    handlers::mint_token(db, principal, ttl).await
}

fn check_ttl(ttl: Micros) -> ApiResult<()> {
    if ttl <= 0 || ttl > keys::MAX_TOKEN_TTL_MICROS {
        return Err(ApiError::invalid(
            "ttl",
            format!(
                "must be positive and at most {} minutes",
                keys::MAX_TOKEN_TTL_MICROS / 60_000_000
            ),
        ));
    }
    Ok(())
}

//! The gRPC surface of the RBAC service.

use pm_api::rbac::rbac_service_server::RbacService;
use pm_api::rbac::*;
use pm_authz::layer::Caller;
use pm_authz::policy::Role;
use pm_authz::token::{self, Claims};
use pm_runtime::docstore::{self, CreateCall, ListCall};
use pm_runtime::idempotency;
use pm_runtime::time::{Micros, now_micros, to_timestamp};
use pm_runtime::{ApiError, ApiResult, Db, paging};
use tonic::Request;

use crate::store::{self, PRINCIPAL, PRINCIPAL_NAME, ROLE_BINDING};

/// `organizations/{organization}`.
const ORG_NAME: pm_runtime::names::NamePattern = pm_runtime::names::NamePattern(&["organizations"]);
use crate::{domain, keys};

/// The ErrorInfo domain of this service's errors.
pub const DOMAIN: &str = "rbac.pm.dev";
/// The `iss` of the tokens RBAC issues.
pub const ISSUER: &str = "pm-rbac";
/// The `aud` every service of the mesh expects.
pub const AUDIENCE: &str = "pm-mesh";
/// Default and longest token lifetimes.
const DEFAULT_TTL_MICROS: Micros = 15 * 60 * 1_000_000;
/// Default break-glass duration.
const DEFAULT_BREAK_GLASS_MICROS: Micros = 3600 * 1_000_000;

/// The RBAC service.
#[derive(Clone)]
pub struct RbacApi {
    db: Db,
}

impl RbacApi {
    /// A service over its database slice.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

use pm_runtime::grpc::Reply;

fn reply<T>(result: ApiResult<T>) -> Reply<T> {
    pm_runtime::grpc::reply(result, DOMAIN)
}

fn duration_micros(
    duration: Option<&prost_types::Duration>,
    default: Micros,
    max: Micros,
    field: &str,
) -> ApiResult<Micros> {
    let Some(d) = duration else {
        return Ok(default);
    };
    let micros = d
        .seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(d.nanos / 1_000));
    if micros <= 0 || micros > max {
        return Err(ApiError::invalid(
            field,
            format!("must be positive and at most {} seconds", max / 1_000_000),
        ));
    }
    Ok(micros)
}

async fn live_principal(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    field: &str,
) -> ApiResult<Principal> {
    PRINCIPAL_NAME.parse(field, name)?;
    docstore::get_live::<Principal>(conn, name)
        .await?
        .map(|s| s.resource)
        .ok_or_else(|| {
            ApiError::new(
                tonic::Code::InvalidArgument,
                "UNKNOWN_REFERENCE",
                format!("{field}: {name} does not exist"),
            )
            .with_violation(field, "does not exist")
        })
}

use pm_authz::layer::require_caller as caller;

fn out_of_scope(what: &str) -> ApiError {
    ApiError::new(
        tonic::Code::PermissionDenied,
        "PERMISSION_DENIED",
        format!("permission denied on {what} (or it might not exist)"),
    )
}

/// Whether the caller administers `organization` (an organization-wide role, or a service, or the
/// dev bootstrap).
fn administers(caller: &Caller, organization: &str) -> bool {
    let now = now_micros();
    caller.bootstrap
        || caller.is_service()
        || caller.grants.iter().any(|g| {
            g.role == Role::OrganizationAdministrator
                && g.organization == organization
                && g.expire_micros.is_none_or(|end| end > now)
        })
}

/// Granting is itself permissioned: organization administrators grant anything in their organization;
/// program managers grant unit-scoped roles only on units they are themselves bound to.
fn may_grant(caller: &Caller, binding: &RoleBinding) -> ApiResult<()> {
    let organization = pm_runtime::names::organization_of(&binding.name);
    if administers(caller, organization) {
        return Ok(());
    }
    let now = now_micros();
    let managed: Vec<&String> = caller
        .grants
        .iter()
        .filter(|g| {
            g.role == Role::ProgramManager
                && g.organization == organization
                && g.expire_micros.is_none_or(|end| end > now)
        })
        .flat_map(|g| g.units.iter())
        .collect();
    let unit_scoped = matches!(
        domain::role_of(binding.role),
        Some(Role::ProgramManager | Role::BillingStaff)
    );
    if unit_scoped
        && !binding.units.is_empty()
        && binding.units.iter().all(|u| managed.contains(&u))
    {
        return Ok(());
    }
    Err(domain::grant_refused(
        "only organization administrators grant organization-wide roles; program managers grant within their own units",
    ))
}

/// Whether the caller holds a live Platform Operator binding.
fn is_platform_operator(caller: &Caller) -> bool {
    let now = now_micros();
    caller.grants.iter().any(|g| {
        g.role == Role::PlatformOperator
            && g.organization == pm_authz::policy::PLATFORM
            && g.expire_micros.is_none_or(|end| end > now)
    })
}

/// [`may_grant`], or, for a platform operator, the grant of a new organization's first administrator
/// ([`domain::first_administrator`]), checked inside the write (under the organization's lock).
async fn may_grant_in(
    conn: &mut sqlx::AnyConnection,
    caller: &Caller,
    binding: &RoleBinding,
) -> ApiResult<()> {
    match may_grant(caller, binding) {
        Err(_) if is_platform_operator(caller) => {
            let organization = pm_runtime::names::organization_of(&binding.name);
            let has_bindings = store::any_binding_ever(conn, organization).await?;
            let operator = !store::platform_bindings_of(conn, &binding.principal)
                .await?
                .is_empty();
            domain::first_administrator(binding, has_bindings, operator)
        }
        other => other,
    }
}

/// Reading or revoking an organization's bindings needs a role there.
fn check_organization(caller: &Caller, name: &str) -> ApiResult<()> {
    let organization = pm_runtime::names::organization_of(name);
    if caller.is_service()
        || caller.bootstrap
        || caller.grants.iter().any(|g| g.organization == organization)
    {
        Ok(())
    } else {
        Err(out_of_scope(name))
    }
}

impl RbacApi {
    /// Principals are global; a caller reaches one that is itself, that has no live binding yet
    /// (unassigned), or whose every binding is in an organization the caller administers. Anything else
    /// is out of scope (and answers like a principal that does not exist).
    async fn check_principal(&self, caller: &Caller, principal: &str) -> ApiResult<()> {
        if caller.is_service() || caller.principal.as_deref() == Some(principal) {
            return Ok(());
        }
        let mut conn = self.db.read().await?;
        let bindings =
            docstore::find_anywhere_by_attr::<RoleBinding>(&mut conn, "principal", principal)
                .await?;
        let administers_any = caller
            .grants
            .iter()
            .any(|g| g.role == Role::OrganizationAdministrator);
        let all_administered = bindings
            .iter()
            .all(|b| administers(caller, pm_runtime::names::organization_of(&b.resource.name)));
        if administers_any && all_administered {
            Ok(())
        } else {
            Err(out_of_scope(principal))
        }
    }
}

#[tonic::async_trait]
impl RbacService for RbacApi {
    async fn list_permissions(
        &self,
        request: Request<ListPermissionsRequest>,
    ) -> Reply<ListPermissionsResponse> {
        let req = request.into_inner();
        let result = (|| {
            let page_size = paging::page_size(req.page_size)?;
            let fingerprint = paging::query_fingerprint(&[&req.name_prefix]);
            let after = paging::decode_token(&req.page_token, &fingerprint)?
                .and_then(|key| key.into_iter().next())
                .unwrap_or_default();
            let mut matching: Vec<_> = domain::catalog(pm_api::RULES)
                .into_iter()
                .filter(|p| p.name.starts_with(&req.name_prefix) && p.name > after)
                .collect();
            let more = matching.len() > page_size;
            matching.truncate(page_size);
            let next_page_token = match matching.last() {
                Some(last) if more => paging::encode_token(&fingerprint, vec![last.name.clone()]),
                _ => String::new(),
            };
            Ok(ListPermissionsResponse {
                permissions: matching,
                next_page_token,
            })
        })();
        reply(result)
    }

    async fn get_principal(&self, request: Request<GetPrincipalRequest>) -> Reply<Principal> {
        reply(
            async {
                let caller = caller(&request)?;
                let name = &request.get_ref().name;
                PRINCIPAL_NAME.parse("name", name)?;
                self.check_principal(&caller, name).await?;
                docstore::get_by_name(&self.db, &PRINCIPAL, name).await
            }
            .await,
        )
    }

    async fn list_principals(
        &self,
        request: Request<ListPrincipalsRequest>,
    ) -> Reply<ListPrincipalsResponse> {
        let req = request.into_inner();
        let call = ListCall {
            parent: "",
            page_size: req.page_size,
            page_token: &req.page_token,
            filter: &req.filter,
            order_by: "",
            show_deleted: req.show_deleted,
            scope: None,
        };
        reply(
            docstore::list(&self.db, &PRINCIPAL, call)
                .await
                .map(|p| ListPrincipalsResponse {
                    principals: p.items,
                    next_page_token: p.next_page_token,
                }),
        )
    }

    async fn create_principal(&self, request: Request<CreatePrincipalRequest>) -> Reply<Principal> {
        let req = request.into_inner();
        let result = async {
            let principal = req
                .principal
                .clone()
                .ok_or_else(|| ApiError::invalid("principal", "is required"))?;
            let call = CreateCall {
                method: "/pm.rbac.v1.RbacService/CreatePrincipal",
                parent: "",
                id: &req.principal_id,
                id_field: "principal_id",
                request_id: &req.request_id,
                request_hash: idempotency::request_hash(&req),
            };
            docstore::create(&self.db, &PRINCIPAL, call, principal, async |_, p| {
                domain::validate_principal(p)
            })
            .await
        };
        reply(result.await)
    }

    async fn delete_principal(&self, request: Request<DeletePrincipalRequest>) -> Reply<Principal> {
        reply(
            async {
                let caller = caller(&request)?;
                let req = request.into_inner();
                PRINCIPAL_NAME.parse("name", &req.name)?;
                self.check_principal(&caller, &req.name).await?;
                docstore::soft_delete(&self.db, &PRINCIPAL, &req.name, &req.etag, async |_, _| {
                    Ok(())
                })
                .await
            }
            .await,
        )
    }

    async fn get_role_binding(
        &self,
        request: Request<GetRoleBindingRequest>,
    ) -> Reply<RoleBinding> {
        reply(
            async {
                let caller = caller(&request)?;
                let name = &request.get_ref().name;
                ROLE_BINDING.pattern.parse("name", name)?;
                check_organization(&caller, name)?;
                docstore::get_by_name(&self.db, &ROLE_BINDING, name).await
            }
            .await,
        )
    }

    async fn list_role_bindings(
        &self,
        request: Request<ListRoleBindingsRequest>,
    ) -> Reply<ListRoleBindingsResponse> {
        reply(
            async {
                let caller = caller(&request)?;
                let req = request.into_inner();
                ORG_NAME.parse("parent", &req.parent)?;
                check_organization(&caller, &req.parent)?;
                let call = ListCall {
                    parent: &req.parent,
                    page_size: req.page_size,
                    page_token: &req.page_token,
                    filter: &req.filter,
                    order_by: "",
                    show_deleted: req.show_deleted,
                    scope: None,
                };
                let page = docstore::list(&self.db, &ROLE_BINDING, call).await?;
                Ok(ListRoleBindingsResponse {
                    role_bindings: page.items,
                    next_page_token: page.next_page_token,
                })
            }
            .await,
        )
    }

    async fn create_role_binding(
        &self,
        request: Request<CreateRoleBindingRequest>,
    ) -> Reply<RoleBinding> {
        reply(
            async {
                let caller = caller(&request)?;
                let req = request.into_inner();
                let mut binding = req
                    .role_binding
                    .clone()
                    .ok_or_else(|| ApiError::invalid("role_binding", "is required"))?;
                binding.break_glass = false;
                let call = CreateCall {
                    method: "/pm.rbac.v1.RbacService/CreateRoleBinding",
                    parent: &req.parent,
                    id: &req.role_binding_id,
                    id_field: "role_binding_id",
                    request_id: &req.request_id,
                    request_hash: idempotency::request_hash(&req),
                };
                docstore::create(&self.db, &ROLE_BINDING, call, binding, async |conn, b| {
                    may_grant_in(conn, &caller, b).await?;
                    let principal =
                        live_principal(conn, &b.principal, "role_binding.principal").await?;
                    domain::validate_binding(b, &principal, now_micros())
                })
                .await
            }
            .await,
        )
    }

    async fn delete_role_binding(
        &self,
        request: Request<DeleteRoleBindingRequest>,
    ) -> Reply<RoleBinding> {
        reply(
            async {
                let caller = caller(&request)?;
                let req = request.into_inner();
                ROLE_BINDING.pattern.parse("name", &req.name)?;
                check_organization(&caller, &req.name)?;
                docstore::soft_delete(
                    &self.db,
                    &ROLE_BINDING,
                    &req.name,
                    &req.etag,
                    async |_, b| may_grant(&caller, b),
                )
                .await
            }
            .await,
        )
    }

    async fn break_glass(&self, request: Request<BreakGlassRequest>) -> Reply<RoleBinding> {
        let caller = caller(&request);
        let req = request.into_inner();
        let result = async {
            let caller = caller?;
            // Break-glass is for the caller itself, in an organization where it already has a role (or
            // granted by an administrator of that organization); it never grants organization-wide roles.
            let own = caller.principal.as_deref() == Some(req.principal.as_str());
            let member = caller.grants.iter().any(|g| g.organization == req.parent);
            let allowed = administers(&caller, &req.parent) || (own && member);
            if !allowed {
                return Err(out_of_scope(&req.parent));
            }
            if !matches!(
                domain::role_of(req.role),
                Some(Role::ProgramManager | Role::BillingStaff)
            ) {
                return Err(ApiError::invalid(
                    "role",
                    "break-glass grants ROLE_PROGRAM_MANAGER or ROLE_BILLING_STAFF on named units",
                ));
            }
            if req.reason.trim().is_empty() {
                return Err(ApiError::invalid(
                    "reason",
                    "is required for break-glass access",
                ));
            }
            let duration = duration_micros(
                req.duration.as_ref(),
                DEFAULT_BREAK_GLASS_MICROS,
                domain::MAX_BREAK_GLASS_MICROS,
                "duration",
            )?;
            let binding = RoleBinding {
                principal: req.principal.clone(),
                role: req.role,
                units: req.units.clone(),
                expire_time: Some(to_timestamp(now_micros() + duration)),
                break_glass: true,
                reason: req.reason.clone(),
                ..Default::default()
            };
            let call = CreateCall {
                method: "/pm.rbac.v1.RbacService/BreakGlass",
                parent: &req.parent,
                id: "",
                id_field: "role_binding_id",
                request_id: &req.request_id,
                request_hash: idempotency::request_hash(&req),
            };
            let created =
                docstore::create(&self.db, &ROLE_BINDING, call, binding, async |conn, b| {
                    let principal = live_principal(conn, &b.principal, "principal").await?;
                    domain::validate_binding(b, &principal, now_micros())
                })
                .await?;
            tracing::warn!(binding = %created.name, principal = %created.principal, "break-glass access granted");
            Ok(created)
        };
        reply(result.await)
    }

    async fn issue_token(&self, request: Request<IssueTokenRequest>) -> Reply<IssueTokenResponse> {
        let caller = caller(&request);
        let req = request.into_inner();
        let result = async {
            let caller = caller?;
            // A principal refreshes its own token; only the dev bootstrap mints tokens for others.
            if !(caller.bootstrap
                || caller.is_service()
                || caller.principal.as_deref() == Some(req.principal.as_str()))
            {
                return Err(out_of_scope(&req.principal));
            }
            let ttl = duration_micros(
                req.ttl.as_ref(),
                DEFAULT_TTL_MICROS,
                keys::MAX_TOKEN_TTL_MICROS,
                "ttl",
            )?;
            {
                let mut conn = self.db.read().await?;
                live_principal(&mut conn, &req.principal, "principal").await?;
            }
            mint_token(&self.db, &req.principal, ttl).await
        };
        reply(result.await)
    }

    async fn lookup_role_bindings(
        &self,
        request: Request<LookupRoleBindingsRequest>,
    ) -> Reply<LookupRoleBindingsResponse> {
        let principal = &request.get_ref().principal;
        let result = async {
            PRINCIPAL_NAME.parse("principal", principal)?;
            let mut conn = self.db.read().await?;
            let Some(found) = docstore::get_live::<Principal>(&mut conn, principal).await? else {
                return Ok(LookupRoleBindingsResponse::default());
            };
            let bindings =
                docstore::find_anywhere_by_attr::<RoleBinding>(&mut conn, "principal", principal)
                    .await?;
            Ok(LookupRoleBindingsResponse {
                principal: Some(found.resource),
                role_bindings: bindings.into_iter().map(|b| b.resource).collect(),
            })
        };
        reply(result.await)
    }

    async fn list_signing_keys(
        &self,
        _request: Request<ListSigningKeysRequest>,
    ) -> Reply<ListSigningKeysResponse> {
        let keys = keys::published(&self.db)
            .await
            .map(|keys| ListSigningKeysResponse {
                keys: keys.into_iter().map(to_wire).collect(),
            });
        reply(keys)
    }

    async fn rotate_signing_key(
        &self,
        _request: Request<RotateSigningKeyRequest>,
    ) -> Reply<SigningKey> {
        reply(keys::rotate(&self.db).await.map(to_wire))
    }
}

/// Signs a token for `principal` (whose existence the caller checked) lasting `ttl`, with RBAC's
/// current key: the handler's and `pm admin`'s one way to mint.
pub async fn mint_token(db: &Db, principal: &str, ttl: Micros) -> ApiResult<IssueTokenResponse> {
    let key = keys::current(db).await?;
    let now = now_micros() / 1_000_000;
    let expire = now + ttl / 1_000_000;
    let claims = Claims {
        sub: principal.to_string(),
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        exp: expire,
        nbf: now,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
        act: None,
    };
    let token =
        token::issue(&key, &claims).map_err(|e| ApiError::internal("signing a token", &e))?;
    Ok(IssueTokenResponse {
        token,
        expire_time: Some(to_timestamp(expire * 1_000_000)),
    })
}

fn to_wire(published: keys::Published) -> SigningKey {
    SigningKey {
        kid: published.key.kid,
        x: published.key.x,
        create_time: Some(to_timestamp(published.create_time)),
        retire_time: published.retire_time.map(to_timestamp),
    }
}

//! The gRPC surface of the Org service: decode the request, authorize, call the store or the pure
//! rules, encode the answer. Rules live in `domain` and `lifecycle` (pure); every read and write of
//! the service's resources, with the rules that must run inside the write, sits in `store`.

use pm_api::org::org_service_server::OrgService;
use pm_api::org::*;
use pm_authz::audit::AuditWriter;
use pm_authz::layer::Caller;
use pm_authz::phi::{Audited, PhiAudit};
use pm_authz::policy::Target;
use pm_runtime::docstore::{ListCall, ListScope, Page};
use pm_runtime::names::NamePattern;
use pm_runtime::time::{now_micros, to_micros};
use pm_runtime::{ApiError, ApiResult, Db, names};
use pm_runtime::{create_call, list_call};
use tonic::Request;

use crate::store::{
    self, COVERAGE, CREDENTIAL, ENROLLMENT, LOCATION, ORGANIZATION, PATIENT, PROVIDER, UNIT,
};
use crate::{NAME, access, domain, lifecycle, search};

/// The ErrorInfo domain of this service's errors.
pub const DOMAIN: &str = "org.pm.dev";

/// Patients one BatchGetPatientEligibility call may name at most.
pub const MAX_BATCH: usize = 100;

/// The Org service.
#[derive(Clone)]
pub struct OrgApi {
    db: Db,
    phi: PhiAudit,
    /// The audit trails of the other services that hold PHI (ListPatientAccesses merges them).
    peers: Vec<crate::accesses::Peer>,
    /// The authorization layer's view of RBAC, for explaining another principal's access.
    access: Option<pm_authz::layer::Authz>,
    /// Billing, asked whether a billing profile's references exist (`None` only in a bare Org
    /// built without the mesh, as the benchmarks do).
    billing: Option<crate::billing_refs::BillingRefs>,
}

impl OrgApi {
    /// A service over its database slice (with its audit trail).
    pub fn new(db: Db) -> Self {
        let audit = std::sync::Arc::new(AuditWriter::spawn(db.clone(), 256));
        Self::with_audit(db, audit)
    }

    /// A service recording PHI access through `audit` (shared with its authorization layer).
    pub fn with_audit(db: Db, audit: std::sync::Arc<AuditWriter>) -> Self {
        Self {
            db,
            phi: PhiAudit::new(NAME, audit),
            peers: Vec::new(),
            access: None,
            billing: None,
        }
    }

    /// The same service, answering ListPatientAccesses with the trails of `peers` merged in.
    pub fn with_audit_peers(mut self, peers: Vec<crate::accesses::Peer>) -> Self {
        self.peers = peers;
        self
    }

    /// The same service, refusing a unit whose billing profile names what `billing` does not know.
    pub fn checking_billing_with(mut self, billing: crate::billing_refs::BillingRefs) -> Self {
        self.billing = Some(billing);
        self
    }

    /// `unit` with its billing profile's references in full form, each known to Billing, when
    /// the write touches the profile (see [`crate::billing_refs::BillingRefs::checked`]).
    async fn billing_checked(
        &self,
        organization: &str,
        mut unit: ServiceUnit,
        touches_profile: bool,
    ) -> ApiResult<ServiceUnit> {
        if let (Some(billing), true) = (&self.billing, touches_profile)
            && let Some(profile) = unit.billing_profile.take()
        {
            unit.billing_profile = Some(
                billing
                    .checked(organization, "service_unit", profile)
                    .await?,
            );
        }
        Ok(unit)
    }

    /// The same service, able to explain other principals' access through `authz` (CheckAccess).
    pub fn explaining_with(mut self, authz: pm_authz::layer::Authz) -> Self {
        self.access = Some(authz);
        self
    }

    /// Measurement only (`pm-bench` compares audited reads with unaudited ones): serves PHI reads
    /// without recording them. `pm` never mounts it.
    pub fn unaudited_for_benchmarks(db: Db) -> Self {
        Self {
            db,
            phi: PhiAudit::disabled_for_benchmarks(NAME),
            peers: Vec::new(),
            access: None,
            billing: None,
        }
    }
}

use pm_runtime::grpc::{Reply, required};

fn reply<T>(result: ApiResult<T>) -> Reply<T> {
    pm_runtime::grpc::reply(result, DOMAIN)
}

/// How to find what a request is about, for the object-level check.
enum About<'a> {
    /// An existing resource of this service, by name.
    Name(&'a str),
    /// Something in a unit (to be created there, or checked against it).
    Unit(&'a str),
    /// A patient's records.
    Patient(&'a str),
    /// An organization-level collection or resource.
    Organization(&'a str),
    /// Organization-wide roles only (e.g. a top-level unit).
    OrganizationWide(&'a str),
}

impl OrgApi {
    /// The object-level check: resolves where the request's resource sits and asks the caller's
    /// bindings. Done before anything reveals whether the resource exists.
    async fn check(&self, caller: &Caller, method: &str, about: About<'_>) -> ApiResult<()> {
        if caller.is_service() {
            return Ok(());
        }
        let permission = pm_api::rule_for(method)
            .map(|r| r.permission)
            .unwrap_or_default();
        let resource = match about {
            About::Name(r)
            | About::Unit(r)
            | About::Patient(r)
            | About::Organization(r)
            | About::OrganizationWide(r) => r,
        };
        // An organization-wide role decides without looking up where the resource sits.
        let organization_wide = Target::units(names::organization_of(resource), Vec::new());
        if caller
            .decide(permission, &organization_wide, &[], now_micros())
            .allowed
        {
            return Ok(());
        }
        let mut conn = self.db.read().await?;
        let (resource, target) = match about {
            About::Name(name) => (name, access::of(&mut conn, name).await?),
            About::Unit(unit) => (unit, access::in_unit(&mut conn, unit).await?),
            About::Patient(patient) => (patient, access::patient(&mut conn, patient).await?),
            About::Organization(org) => (org, Target::organization(names::organization_of(org))),
            About::OrganizationWide(org) => {
                (org, Target::units(names::organization_of(org), Vec::new()))
            }
        };
        access::authorize(&mut conn, caller, permission, resource, &target).await
    }

    /// The scope a List under `parent` is narrowed to for this caller.
    /// A List under `parent`: the caller may list there (`about`), and the page holds only what sits
    /// in the units it may see (`collection_id` says how the store narrows to them).
    #[allow(clippy::too_many_arguments)]
    async fn list_narrowed<T>(
        &self,
        caller: &Caller,
        method: &str,
        parent_pattern: &NamePattern,
        about: About<'_>,
        collection_id: &str,
        mut call: ListCall<'_>,
        list: impl AsyncFnOnce(&Db, ListCall<'_>) -> ApiResult<Page<T>>,
    ) -> ApiResult<Page<T>> {
        parent_pattern.parse("parent", call.parent)?;
        self.check(caller, method, about).await?;
        call.scope = self
            .narrow(caller, method, call.parent, collection_id)
            .await?;
        list(&self.db, call).await
    }

    async fn narrow(
        &self,
        caller: &Caller,
        method: &str,
        parent: &str,
        collection_id: &str,
    ) -> ApiResult<Option<ListScope>> {
        let permission = pm_api::rule_for(method)
            .map(|r| r.permission)
            .unwrap_or_default();
        let mut conn = self.db.read().await?;
        let units = access::visible_units(
            &mut conn,
            caller,
            permission,
            names::organization_of(parent),
        )
        .await?;
        Ok(units.map(|units| access::scope_for(collection_id, units)))
    }
}

/// The audit of a write of `resource` (recorded in the write's transaction when it succeeds); a
/// refused or failed one names the patient the resource belongs to.
fn audited_write<T>(resource: &str) -> Audited<T> {
    Audited::write(resource).naming(vec![patient_of(resource)])
}

/// The audit of a read about one patient's `resource`: the record names that patient, whatever the
/// outcome.
fn audited_read_of_patient<T>(resource: &str) -> Audited<T> {
    let patient = patient_of(resource);
    let asked = vec![patient.clone()];
    Audited::read(resource, move |_: &T| vec![patient.clone()]).naming(asked)
}

/// The patient a resource belongs to (`organizations/o/patients/p` for anything under it), or "".
fn patient_of(name: &str) -> String {
    let segments: Vec<&str> = name.split('/').collect();
    match segments.as_slice() {
        ["organizations", _, "patients", _, ..] => segments[..4].join("/"),
        _ => String::new(),
    }
}

/// The caller as an intake record's `recorded_by`: its principal, or the calling service's identity
/// when no end user's token came with the call.
fn recorder_of(caller: &Caller) -> String {
    caller
        .principal
        .clone()
        .or_else(|| caller.peer.clone())
        .unwrap_or_default()
}

impl OrgApi {
    /// The eligibility of `patients` (well-formed names, one organization), in their order, from
    /// one query: each patient's enrollments the caller may list (a unit-scoped caller sees its
    /// units' ones) and its coverage. NOT_FOUND (or PERMISSION_DENIED) for the first patient that is
    /// missing (or out of the caller's reach).
    async fn eligibility_of(
        &self,
        caller: &Caller,
        method: &str,
        patients: &[String],
    ) -> ApiResult<Vec<PatientEligibility>> {
        let Some(first) = patients.first() else {
            return Ok(Vec::new());
        };
        for patient in patients {
            self.check(caller, method, About::Patient(patient)).await?;
        }
        let collections_of = |patient: &str| {
            [
                format!("{patient}/{}", ENROLLMENT.pattern.collection_id()),
                format!("{patient}/{}", COVERAGE.pattern.collection_id()),
            ]
        };
        let mut distinct = patients.to_vec();
        distinct.sort();
        distinct.dedup();
        let collections: Vec<String> = distinct.iter().flat_map(|p| collections_of(p)).collect();
        let mut conn = self.db.read().await?;
        let rows = store::patients::with_collections(&mut conn, &distinct, &collections).await?;
        let permission = pm_api::rule_for(method)
            .map(|r| r.permission)
            .unwrap_or_default();
        let organization = names::organization_of(first);
        let units = access::visible_units(&mut conn, caller, permission, organization).await?;
        let mut answers = Vec::with_capacity(patients.len());
        for patient in patients {
            if !rows.has(patient) {
                return Err(ApiError::not_found(patient));
            }
            let [enrollments_of, coverages_of] = collections_of(patient);
            let enrollments = rows
                .in_collection::<Enrollment>(&enrollments_of)?
                .into_iter()
                .map(|e| e.resource)
                .filter(|e| units.as_ref().is_none_or(|units| units.contains(&e.unit)))
                .collect();
            let coverages = rows
                .in_collection::<Coverage>(&coverages_of)?
                .into_iter()
                .map(|c| c.resource)
                .collect();
            answers.push(PatientEligibility {
                patient: patient.clone(),
                enrollments,
                coverages,
            });
        }
        Ok(answers)
    }
}

impl OrgApi {
    /// Records a successful PHI write in the write's own transaction: both commit or neither does.
    async fn record_write(
        &self,
        conn: &mut sqlx::AnyConnection,
        caller: &Caller,
        method: &str,
        name: &str,
    ) -> ApiResult<()> {
        self.phi
            .record_write(conn, caller, method, name, vec![patient_of(name)])
            .await
    }
}

#[tonic::async_trait]
impl OrgService for OrgApi {
    // Organizations

    async fn get_organization(
        &self,
        request: Request<GetOrganizationRequest>,
    ) -> Reply<Organization> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let name = &req.name;
                ORGANIZATION.pattern.parse("name", name)?;
                self.check(caller, rpc.method, About::Name(name)).await?;
                store::organizations::get(&self.db, name).await
            })
            .await,
        )
    }

    async fn list_organizations(
        &self,
        request: Request<ListOrganizationsRequest>,
    ) -> Reply<ListOrganizationsResponse> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let mut call = list_call!(req, "");
                call.scope = access::visible_organizations(caller).map(ListScope::Names);
                let page = store::organizations::list(&self.db, call).await?;
                Ok(ListOrganizationsResponse {
                    organizations: page.items,
                    next_page_token: page.next_page_token,
                })
            })
            .await,
        )
    }

    async fn create_organization(
        &self,
        request: Request<CreateOrganizationRequest>,
    ) -> Reply<Organization> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                if req.organization_id.is_empty() && !caller.is_service() {
                // Access to an organization is granted by name, before it exists: the name must be chosen.
                return Err(ApiError::invalid(
                    "organization_id",
                    "is required: an administrator's role binding names the organization before it is created",
                ));
            }
            let target = format!("organizations/{}", req.organization_id);
                self.check(
                    caller,
                    rpc.method,
                    About::Organization(&target),
                )
                .await?;
                let org = required(req.organization.clone(), "organization")?;
                let call = create_call!(req, rpc.method, "", organization_id);
                store::organizations::create(&self.db, call, org).await
            })
            .await,
        )
    }

    async fn update_organization(
        &self,
        request: Request<UpdateOrganizationRequest>,
    ) -> Reply<Organization> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let name = req
                    .organization
                    .as_ref()
                    .map(|o| o.name.clone())
                    .unwrap_or_default();
                ORGANIZATION.pattern.parse("organization.name", &name)?;
                self.check(caller, rpc.method, About::OrganizationWide(&name))
                    .await?;
                store::organizations::update(&self.db, req.organization, req.update_mask.as_ref())
                    .await
            })
            .await,
        )
    }

    async fn delete_organization(
        &self,
        request: Request<DeleteOrganizationRequest>,
    ) -> Reply<Organization> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                ORGANIZATION.pattern.parse("name", &req.name)?;
                self.check(caller, rpc.method, About::OrganizationWide(&req.name))
                    .await?;
                store::organizations::delete(&self.db, &req.name, &req.etag).await
            })
            .await,
        )
    }

    // Service units

    async fn get_service_unit(
        &self,
        request: Request<GetServiceUnitRequest>,
    ) -> Reply<ServiceUnit> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let name = &req.name;
                UNIT.pattern.parse("name", name)?;
                self.check(caller, rpc.method, About::Name(name)).await?;
                store::units::get(&self.db, name).await
            })
            .await,
        )
    }

    async fn list_service_units(
        &self,
        request: Request<ListServiceUnitsRequest>,
    ) -> Reply<ListServiceUnitsResponse> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let page = self
                    .list_narrowed(
                        caller,
                        rpc.method,
                        &ORGANIZATION.pattern,
                        About::Organization(&req.parent),
                        "units",
                        list_call!(req, &req.parent),
                        store::units::list,
                    )
                    .await?;
                Ok(ListServiceUnitsResponse {
                    service_units: page.items,
                    next_page_token: page.next_page_token,
                })
            })
            .await,
        )
    }

    async fn create_service_unit(
        &self,
        request: Request<CreateServiceUnitRequest>,
    ) -> Reply<ServiceUnit> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                ORGANIZATION.pattern.parse("parent", &req.parent)?;
                let unit = required(req.service_unit.clone(), "service_unit")?;
                let about = if unit.parent_unit.is_empty() {
                    About::OrganizationWide(&req.parent)
                } else {
                    About::Unit(&unit.parent_unit)
                };
                self.check(caller, rpc.method, about).await?;
                let unit = self.billing_checked(&req.parent, unit, true).await?;
                let call = create_call!(req, rpc.method, &req.parent, service_unit_id);
                store::units::create(&self.db, call, unit).await
            })
            .await,
        )
    }

    async fn update_service_unit(
        &self,
        request: Request<UpdateServiceUnitRequest>,
    ) -> Reply<ServiceUnit> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let patch = required(req.service_unit.clone(), "service_unit")?;
                UNIT.pattern.parse("service_unit.name", &patch.name)?;
                self.check(caller, rpc.method, About::Name(&patch.name))
                    .await?;
                let moving_to = patch.parent_unit.clone();
                let moves = req
                    .update_mask
                    .as_ref()
                    .is_some_and(|m| m.paths.iter().any(|p| p == "parent_unit" || p == "*"));
                if moves && !moving_to.is_empty() {
                    // Moving a unit needs the right where it lands, too.
                    self.check(caller, rpc.method, About::Unit(&moving_to))
                        .await?;
                } else if moves {
                    self.check(caller, rpc.method, About::OrganizationWide(&patch.name))
                        .await?;
                }
                let touches_profile = req.update_mask.as_ref().is_none_or(|m| {
                    m.paths.is_empty()
                        || m.paths
                            .iter()
                            .any(|p| p == "*" || p.starts_with("billing_profile"))
                });
                let organization = names::organization_of(&patch.name).to_string();
                let patch = self
                    .billing_checked(&organization, patch, touches_profile)
                    .await?;
                store::units::update(&self.db, patch, req.update_mask.as_ref()).await
            })
            .await,
        )
    }

    async fn delete_service_unit(
        &self,
        request: Request<DeleteServiceUnitRequest>,
    ) -> Reply<ServiceUnit> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                UNIT.pattern.parse("name", &req.name)?;
                self.check(caller, rpc.method, About::Name(&req.name))
                    .await?;
                store::units::delete(&self.db, &req.name, &req.etag).await
            })
            .await,
        )
    }

    async fn undelete_service_unit(
        &self,
        request: Request<UndeleteServiceUnitRequest>,
    ) -> Reply<ServiceUnit> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                UNIT.pattern.parse("name", &req.name)?;
                self.check(caller, rpc.method, About::Name(&req.name))
                    .await?;
                store::units::undelete(&self.db, &req.name, &req.etag).await
            })
            .await,
        )
    }

    async fn get_effective_policy(
        &self,
        request: Request<GetEffectivePolicyRequest>,
    ) -> Reply<EffectivePolicy> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let unit = &req.unit;
                domain::UNIT_NAME.parse("unit", unit)?;
                self.check(caller, rpc.method, About::Name(unit)).await?;
                store::units::policy_of(&self.db, unit).await
            })
            .await,
        )
    }

    // Locations

    async fn get_location(&self, request: Request<GetLocationRequest>) -> Reply<Location> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let name = &req.name;
                LOCATION.pattern.parse("name", name)?;
                self.check(caller, rpc.method, About::Name(name)).await?;
                store::locations::get(&self.db, name).await
            })
            .await,
        )
    }

    async fn list_locations(
        &self,
        request: Request<ListLocationsRequest>,
    ) -> Reply<ListLocationsResponse> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                ORGANIZATION.pattern.parse("parent", &req.parent)?;
                self.check(caller, rpc.method, About::Organization(&req.parent))
                    .await?;
                let page = store::locations::list(&self.db, list_call!(req, &req.parent)).await?;
                Ok(ListLocationsResponse {
                    locations: page.items,
                    next_page_token: page.next_page_token,
                })
            })
            .await,
        )
    }

    async fn create_location(&self, request: Request<CreateLocationRequest>) -> Reply<Location> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                ORGANIZATION.pattern.parse("parent", &req.parent)?;
                self.check(caller, rpc.method, About::Organization(&req.parent))
                    .await?;
                let location = required(req.location.clone(), "location")?;
                let call = create_call!(req, rpc.method, &req.parent, location_id);
                store::locations::create(&self.db, call, location).await
            })
            .await,
        )
    }

    async fn update_location(&self, request: Request<UpdateLocationRequest>) -> Reply<Location> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let name = req
                    .location
                    .as_ref()
                    .map(|l| l.name.clone())
                    .unwrap_or_default();
                LOCATION.pattern.parse("location.name", &name)?;
                self.check(caller, rpc.method, About::Name(&name)).await?;
                store::locations::update(&self.db, req.location, req.update_mask.as_ref()).await
            })
            .await,
        )
    }

    async fn delete_location(&self, request: Request<DeleteLocationRequest>) -> Reply<Location> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                LOCATION.pattern.parse("name", &req.name)?;
                self.check(caller, rpc.method, About::Name(&req.name))
                    .await?;
                store::locations::delete(&self.db, &req.name, &req.etag).await
            })
            .await,
        )
    }

    async fn undelete_location(
        &self,
        request: Request<UndeleteLocationRequest>,
    ) -> Reply<Location> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                LOCATION.pattern.parse("name", &req.name)?;
                self.check(caller, rpc.method, About::Name(&req.name))
                    .await?;
                store::locations::undelete(&self.db, &req.name, &req.etag).await
            })
            .await,
        )
    }

    // Providers

    async fn get_provider(&self, request: Request<GetProviderRequest>) -> Reply<Provider> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let name = &req.name;
                PROVIDER.pattern.parse("name", name)?;
                self.check(caller, rpc.method, About::Name(name)).await?;
                store::providers::get(&self.db, name).await
            })
            .await,
        )
    }

    async fn list_providers(
        &self,
        request: Request<ListProvidersRequest>,
    ) -> Reply<ListProvidersResponse> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                ORGANIZATION.pattern.parse("parent", &req.parent)?;
                self.check(caller, rpc.method, About::Organization(&req.parent))
                    .await?;
                let page = store::providers::list(&self.db, list_call!(req, &req.parent)).await?;
                Ok(ListProvidersResponse {
                    providers: page.items,
                    next_page_token: page.next_page_token,
                })
            })
            .await,
        )
    }

    async fn create_provider(&self, request: Request<CreateProviderRequest>) -> Reply<Provider> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                ORGANIZATION.pattern.parse("parent", &req.parent)?;
                self.check(caller, rpc.method, About::Organization(&req.parent))
                    .await?;
                let provider = required(req.provider.clone(), "provider")?;
                let call = create_call!(req, rpc.method, &req.parent, provider_id);
                store::providers::create(&self.db, call, provider).await
            })
            .await,
        )
    }

    async fn update_provider(&self, request: Request<UpdateProviderRequest>) -> Reply<Provider> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let name = req
                    .provider
                    .as_ref()
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                PROVIDER.pattern.parse("provider.name", &name)?;
                self.check(caller, rpc.method, About::Name(&name)).await?;
                store::providers::update(&self.db, req.provider, req.update_mask.as_ref()).await
            })
            .await,
        )
    }

    async fn delete_provider(&self, request: Request<DeleteProviderRequest>) -> Reply<Provider> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                PROVIDER.pattern.parse("name", &req.name)?;
                self.check(caller, rpc.method, About::Name(&req.name))
                    .await?;
                store::providers::delete(&self.db, &req.name, &req.etag).await
            })
            .await,
        )
    }

    async fn undelete_provider(
        &self,
        request: Request<UndeleteProviderRequest>,
    ) -> Reply<Provider> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                PROVIDER.pattern.parse("name", &req.name)?;
                self.check(caller, rpc.method, About::Name(&req.name))
                    .await?;
                store::providers::undelete(&self.db, &req.name, &req.etag).await
            })
            .await,
        )
    }

    // Credentials

    async fn get_credential(&self, request: Request<GetCredentialRequest>) -> Reply<Credential> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let name = &req.name;
                CREDENTIAL.pattern.parse("name", name)?;
                self.check(caller, rpc.method, About::Name(name)).await?;
                store::providers::get_credential(&self.db, name).await
            })
            .await,
        )
    }

    async fn list_credentials(
        &self,
        request: Request<ListCredentialsRequest>,
    ) -> Reply<ListCredentialsResponse> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let page = self
                    .list_narrowed(
                        caller,
                        rpc.method,
                        &PROVIDER.pattern,
                        About::Organization(&req.parent),
                        "credentials",
                        list_call!(req, &req.parent),
                        store::providers::list_credentials,
                    )
                    .await?;
                Ok(ListCredentialsResponse {
                    credentials: page.items,
                    next_page_token: page.next_page_token,
                })
            })
            .await,
        )
    }

    async fn create_credential(
        &self,
        request: Request<CreateCredentialRequest>,
    ) -> Reply<Credential> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                PROVIDER.pattern.parse("parent", &req.parent)?;
                let credential = required(req.credential.clone(), "credential")?;
                domain::check_same_org_unit("credential.unit", &credential.unit, &req.parent)?;
                self.check(caller, rpc.method, About::Unit(&credential.unit))
                    .await?;
                let call = create_call!(req, rpc.method, &req.parent, credential_id);
                store::providers::create_credential(&self.db, call, credential).await
            })
            .await,
        )
    }

    async fn update_credential(
        &self,
        request: Request<UpdateCredentialRequest>,
    ) -> Reply<Credential> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                let name = req
                    .credential
                    .as_ref()
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                CREDENTIAL.pattern.parse("credential.name", &name)?;
                self.check(caller, rpc.method, About::Name(&name)).await?;
                store::providers::update_credential(
                    &self.db,
                    req.credential,
                    req.update_mask.as_ref(),
                )
                .await
            })
            .await,
        )
    }

    async fn delete_credential(
        &self,
        request: Request<DeleteCredentialRequest>,
    ) -> Reply<Credential> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                CREDENTIAL.pattern.parse("name", &req.name)?;
                self.check(caller, rpc.method, About::Name(&req.name))
                    .await?;
                store::providers::delete_credential(&self.db, &req.name, &req.etag).await
            })
            .await,
        )
    }

    async fn undelete_credential(
        &self,
        request: Request<UndeleteCredentialRequest>,
    ) -> Reply<Credential> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                CREDENTIAL.pattern.parse("name", &req.name)?;
                self.check(caller, rpc.method, About::Name(&req.name))
                    .await?;
                store::providers::undelete_credential(&self.db, &req.name, &req.etag).await
            })
            .await,
        )
    }

    async fn check_credential(
        &self,
        request: Request<CheckCredentialRequest>,
    ) -> Reply<CheckCredentialResponse> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                domain::PROVIDER_NAME.parse("provider", &req.provider)?;
                domain::check_same_org_unit("unit", &req.unit, &req.provider)?;
                self.check(caller, rpc.method, About::Unit(&req.unit))
                    .await?;
                let at = match &req.time {
                    Some(time) if pm_runtime::time::is_valid(time) => to_micros(time),
                    Some(_) => return Err(ApiError::invalid("time", "is not a valid timestamp")),
                    None => now_micros(),
                };
                let in_force = store::providers::credentials_of(&self.db, &req.provider, &req.unit)
                    .await?
                    .into_iter()
                    .find(|c| {
                        domain::period_of(c.effective_period.as_ref())
                            .is_some_and(|p| p.contains(at))
                    });
                Ok(CheckCredentialResponse {
                    credentialed: in_force
                        .as_ref()
                        .is_some_and(|c| c.state == CredentialState::Active as i32),
                    credential: in_force,
                })
            })
            .await,
        )
    }

    // Patients

    async fn get_patient(&self, request: Request<GetPatientRequest>) -> Reply<Patient> {
        let audit = |r: &GetPatientRequest| {
            let resource = r.name.clone();
            let patient = patient_of(&resource);
            Audited::read(resource, |r: &Patient| vec![patient_of(&r.name)]).naming(vec![patient])
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    let name = &req.name;
                    PATIENT.pattern.parse("name", name)?;
                    self.check(caller, rpc.method, About::Name(name)).await?;
                    store::patients::get(&self.db, name).await
                })
                .await,
        )
    }

    async fn get_patient_eligibility(
        &self,
        request: Request<GetPatientEligibilityRequest>,
    ) -> Reply<PatientEligibility> {
        let audit = |r: &GetPatientEligibilityRequest| audited_read_of_patient(&r.patient);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    let patient = &req.patient;
                    PATIENT.pattern.parse("patient", patient)?;
                    let method = rpc.method;
                    let mut read = self
                        .eligibility_of(caller, method, std::slice::from_ref(patient))
                        .await?;
                    read.pop()
                        .ok_or_else(|| ApiError::internal("the eligibility read", &"no answer"))
                })
                .await,
        )
    }

    async fn batch_get_patient_eligibility(
        &self,
        request: Request<BatchGetPatientEligibilityRequest>,
    ) -> Reply<BatchGetPatientEligibilityResponse> {
        // Every patient asked about is named in the record, whether the read succeeded or not.
        let audit = |r: &BatchGetPatientEligibilityRequest| {
            let patients: Vec<String> = r.patients.iter().map(|p| patient_of(p)).collect();
            let asked = patients.clone();
            Audited::read(&r.parent, move |_: &BatchGetPatientEligibilityResponse| {
                patients.clone()
            })
            .naming(asked)
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    ORGANIZATION.pattern.parse("parent", &req.parent)?;
                    if req.patients.is_empty() || req.patients.len() > MAX_BATCH {
                        return Err(ApiError::invalid(
                            "patients",
                            format!("from 1 to {MAX_BATCH} patients"),
                        ));
                    }
                    for patient in &req.patients {
                        PATIENT.pattern.parse("patients", patient)?;
                        if names::organization_of(patient) != req.parent {
                            return Err(ApiError::invalid(
                                "patients",
                                "every patient must be in the parent organization",
                            ));
                        }
                    }
                    let eligibilities = self
                        .eligibility_of(rpc.caller, rpc.method, &req.patients)
                        .await?;
                    Ok(BatchGetPatientEligibilityResponse { eligibilities })
                })
                .await,
        )
    }

    async fn resolve_scopes(
        &self,
        request: Request<ResolveScopesRequest>,
    ) -> Reply<ResolveScopesResponse> {
        // A patient's scope is its enrollments: the read is in each named patient's trail.
        let audit = |r: &ResolveScopesRequest| {
            let mut patients: Vec<String> = r
                .names
                .iter()
                .map(|n| patient_of(n))
                .filter(|p| !p.is_empty())
                .collect();
            patients.dedup();
            let asked = patients.clone();
            Audited::read(&r.parent, move |_: &ResolveScopesResponse| patients.clone())
                .naming(asked)
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    ORGANIZATION.pattern.parse("parent", &req.parent)?;
                    if req.names.is_empty() || req.names.len() > MAX_BATCH {
                        return Err(ApiError::invalid(
                            "names",
                            format!("from 1 to {MAX_BATCH} names"),
                        ));
                    }
                    if req
                        .names
                        .iter()
                        .any(|n| names::organization_of(n) != req.parent)
                    {
                        return Err(ApiError::invalid(
                            "names",
                            "every name must be in the parent organization",
                        ));
                    }
                    let mut conn = self.db.read().await?;
                    let organization = Target::organization(req.parent.as_str());
                    access::authorize(
                        &mut conn,
                        rpc.caller,
                        rpc.permission,
                        &req.parent,
                        &organization,
                    )
                    .await?;
                    let mut scopes = Vec::with_capacity(req.names.len());
                    for name in &req.names {
                        let target = access::reference_target(&mut conn, name).await?;
                        scopes.push(pm_authz::references::scope_of(name, &target));
                    }
                    Ok(ResolveScopesResponse { scopes })
                })
                .await,
        )
    }

    async fn list_patients(
        &self,
        request: Request<ListPatientsRequest>,
    ) -> Reply<ListPatientsResponse> {
        let audit = |r: &ListPatientsRequest| {
            let resource = r.parent.clone();
            let patient = patient_of(&resource);
            Audited::read(resource, |r: &ListPatientsResponse| {
                r.patients.iter().map(|p| p.name.clone()).collect()
            })
            .naming(vec![patient])
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let page = self
                        .list_narrowed(
                            rpc.caller,
                            rpc.method,
                            &ORGANIZATION.pattern,
                            About::Organization(&req.parent),
                            "patients",
                            list_call!(req, &req.parent),
                            store::patients::list,
                        )
                        .await?;
                    Ok(ListPatientsResponse {
                        patients: page.items,
                        next_page_token: page.next_page_token,
                    })
                })
                .await,
        )
    }

    async fn search_patients(
        &self,
        request: Request<SearchPatientsRequest>,
    ) -> Reply<SearchPatientsResponse> {
        let audit = |r: &SearchPatientsRequest| {
            let resource = r.parent.clone();
            let patient = patient_of(&resource);
            Audited::read(resource, |r: &SearchPatientsResponse| {
                r.patients.iter().map(|p| p.name.clone()).collect()
            })
            .naming(vec![patient])
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let query = store::patients::NameQuery {
                        family: search::query_key(&req.family_name, "family_name")?,
                        given: search::query_key(&req.given_name, "given_name")?,
                        birth_date: req
                            .birth_date
                            .as_ref()
                            .map(domain::search_birth_date)
                            .transpose()?,
                    };
                    if query.family.is_none() && query.given.is_none() {
                        let required = "family_name or given_name is required";
                        return Err(ApiError::invalid_fields(vec![
                            ("family_name".into(), required.into()),
                            ("given_name".into(), required.into()),
                        ]));
                    }
                    let call = ListCall {
                        parent: &req.parent,
                        page_size: req.page_size,
                        page_token: &req.page_token,
                        filter: "",
                        order_by: "",
                        show_deleted: false,
                        scope: None,
                    };
                    // Scoped as ListPatients: only patients enrolled in the caller's units.
                    let page = self
                        .list_narrowed(
                            rpc.caller,
                            rpc.method,
                            &ORGANIZATION.pattern,
                            About::Organization(&req.parent),
                            "patients",
                            call,
                            async |db, call| store::patients::search(db, call, query).await,
                        )
                        .await?;
                    Ok(SearchPatientsResponse {
                        patients: page.items,
                        next_page_token: page.next_page_token,
                    })
                })
                .await,
        )
    }

    async fn create_patient(&self, request: Request<CreatePatientRequest>) -> Reply<Patient> {
        let audit = |r: &CreatePatientRequest| audited_write(&r.parent);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    ORGANIZATION.pattern.parse("parent", &req.parent)?;
                    self.check(caller, rpc.method, About::Organization(&req.parent))
                        .await?;
                    let patient = required(req.patient.clone(), "patient")?;
                    let call = create_call!(req, rpc.method, &req.parent, patient_id);
                    store::patients::create(&self.db, call, patient, async |conn, p| {
                        self.record_write(conn, caller, rpc.method, &p.name).await
                    })
                    .await
                })
                .await,
        )
    }

    async fn update_patient(&self, request: Request<UpdatePatientRequest>) -> Reply<Patient> {
        let audit = |r: &UpdatePatientRequest| {
            audited_write(
                &r.patient
                    .as_ref()
                    .map(|p| p.name.clone())
                    .unwrap_or_default(),
            )
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    let name = req
                        .patient
                        .as_ref()
                        .map(|p| p.name.clone())
                        .unwrap_or_default();
                    PATIENT.pattern.parse("patient.name", &name)?;
                    self.check(caller, rpc.method, About::Name(&name)).await?;
                    store::patients::update(
                        &self.db,
                        req.patient,
                        req.update_mask.as_ref(),
                        async |conn, p| self.record_write(conn, caller, rpc.method, &p.name).await,
                    )
                    .await
                })
                .await,
        )
    }

    async fn delete_patient(&self, request: Request<DeletePatientRequest>) -> Reply<Patient> {
        let audit = |r: &DeletePatientRequest| audited_write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    PATIENT.pattern.parse("name", &req.name)?;
                    self.check(caller, rpc.method, About::Name(&req.name))
                        .await?;
                    store::patients::delete(&self.db, &req.name, &req.etag, async |conn, p| {
                        self.record_write(conn, caller, rpc.method, &p.name).await
                    })
                    .await
                })
                .await,
        )
    }

    async fn undelete_patient(&self, request: Request<UndeletePatientRequest>) -> Reply<Patient> {
        let audit = |r: &UndeletePatientRequest| audited_write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    PATIENT.pattern.parse("name", &req.name)?;
                    self.check(caller, rpc.method, About::Name(&req.name))
                        .await?;
                    store::patients::undelete(&self.db, &req.name, &req.etag, async |conn, r| {
                        self.record_write(conn, caller, rpc.method, &r.name).await
                    })
                    .await
                })
                .await,
        )
    }

    // Enrollments

    async fn get_enrollment(&self, request: Request<GetEnrollmentRequest>) -> Reply<Enrollment> {
        let audit = |r: &GetEnrollmentRequest| {
            let resource = r.name.clone();
            let patient = patient_of(&resource);
            Audited::read(resource, |r: &Enrollment| vec![patient_of(&r.name)])
                .naming(vec![patient])
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    let name = &req.name;
                    ENROLLMENT.pattern.parse("name", name)?;
                    self.check(caller, rpc.method, About::Name(name)).await?;
                    store::enrollments::get(&self.db, name).await
                })
                .await,
        )
    }

    async fn list_enrollments(
        &self,
        request: Request<ListEnrollmentsRequest>,
    ) -> Reply<ListEnrollmentsResponse> {
        let audit = |r: &ListEnrollmentsRequest| audited_read_of_patient(&r.parent);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let page = self
                        .list_narrowed(
                            rpc.caller,
                            rpc.method,
                            &PATIENT.pattern,
                            About::Patient(&req.parent),
                            "enrollments",
                            list_call!(req, &req.parent),
                            store::enrollments::list,
                        )
                        .await?;
                    Ok(ListEnrollmentsResponse {
                        enrollments: page.items,
                        next_page_token: page.next_page_token,
                    })
                })
                .await,
        )
    }

    async fn create_enrollment(
        &self,
        request: Request<CreateEnrollmentRequest>,
    ) -> Reply<Enrollment> {
        let audit = |r: &CreateEnrollmentRequest| audited_write(&r.parent);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    PATIENT.pattern.parse("parent", &req.parent)?;
                    let enrollment = required(req.enrollment.clone(), "enrollment")?;
                    domain::check_same_org_unit("enrollment.unit", &enrollment.unit, &req.parent)?;
                    self.check(caller, rpc.method, About::Unit(&enrollment.unit))
                        .await?;
                    let call = create_call!(req, rpc.method, &req.parent, enrollment_id);
                    store::enrollments::create(&self.db, call, enrollment, async |conn, e| {
                        self.record_write(conn, caller, rpc.method, &e.name).await
                    })
                    .await
                })
                .await,
        )
    }

    async fn delete_enrollment(
        &self,
        request: Request<DeleteEnrollmentRequest>,
    ) -> Reply<Enrollment> {
        let audit = |r: &DeleteEnrollmentRequest| audited_write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    ENROLLMENT.pattern.parse("name", &req.name)?;
                    self.check(caller, rpc.method, About::Name(&req.name))
                        .await?;
                    store::enrollments::delete(&self.db, &req.name, &req.etag, async |conn, e| {
                        self.record_write(conn, caller, rpc.method, &e.name).await
                    })
                    .await
                })
                .await,
        )
    }

    async fn undelete_enrollment(
        &self,
        request: Request<UndeleteEnrollmentRequest>,
    ) -> Reply<Enrollment> {
        let audit = |r: &UndeleteEnrollmentRequest| audited_write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    ENROLLMENT.pattern.parse("name", &req.name)?;
                    self.check(caller, rpc.method, About::Name(&req.name))
                        .await?;
                    store::enrollments::undelete(&self.db, &req.name, &req.etag, async |conn, r| {
                        self.record_write(conn, caller, rpc.method, &r.name).await
                    })
                    .await
                })
                .await,
        )
    }

    async fn transfer_enrollment(
        &self,
        request: Request<TransferEnrollmentRequest>,
    ) -> Reply<Enrollment> {
        let audit = |r: &TransferEnrollmentRequest| audited_write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    ENROLLMENT.pattern.parse("name", &req.name)?;
                    self.check(caller, rpc.method, About::Name(&req.name))
                        .await?;
                    if !req.unit.is_empty() {
                        domain::check_same_org_unit("unit", &req.unit, &req.name)?;
                        self.check(caller, rpc.method, About::Unit(&req.unit))
                            .await?;
                    }
                    let action = lifecycle::Action::Transfer {
                        unit: req.unit.clone(),
                        pathway_step: req.pathway_step.clone(),
                        reason: req.reason.clone(),
                    };
                    let call =
                        store::verb_call(rpc.method, &req.name, &req.etag, &req.request_id, &req);
                    store::enrollments::advance(&self.db, call, &action, async |conn, e| {
                        self.record_write(conn, caller, rpc.method, &e.name).await
                    })
                    .await
                })
                .await,
        )
    }

    async fn list_patient_accesses(
        &self,
        request: Request<ListPatientAccessesRequest>,
    ) -> Reply<ListPatientAccessesResponse> {
        let audit = |r: &ListPatientAccessesRequest| audited_read_of_patient(&r.patient);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    PATIENT.pattern.parse("patient", &req.patient)?;
                    self.check(caller, rpc.method, About::OrganizationWide(&req.patient))
                        .await?;
                    if !store::patients::ever_stored(&self.db, &req.patient).await? {
                        return Err(ApiError::not_found(&req.patient));
                    }
                    crate::accesses::list(&self.db, &self.peers, &req).await
                })
                .await,
        )
    }

    async fn check_access(
        &self,
        request: Request<CheckAccessRequest>,
    ) -> Reply<CheckAccessResponse> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let caller = rpc.caller;
                pm_runtime::names::NamePattern(&["principals"])
                    .parse("principal", &req.principal)?;
                if !req.resource.starts_with("organizations/") {
                    return Err(ApiError::invalid(
                        "resource",
                        "must be a resource name of the Org service",
                    ));
                }
                self.check(caller, rpc.method, About::OrganizationWide(&req.resource))
                    .await?;
                let authz = self.access.as_ref().ok_or_else(|| {
                    ApiError::new(
                        tonic::Code::Unimplemented,
                        "NO_ACCESS_SOURCE",
                        "access cannot be explained here",
                    )
                })?;
                let subject = authz
                    .caller_for(&req.principal)
                    .await
                    .map_err(|s| ApiError::peer_unavailable("rbac", &s.message().to_string()))?
                    .ok_or_else(|| ApiError::not_found(&req.principal))?;
                let mut conn = self.db.read().await?;
                let target = access::of(&mut conn, &req.resource).await?;
                let decision =
                    access::explain(&mut conn, &subject, &req.permission, &target).await?;
                Ok(CheckAccessResponse {
                    allowed: decision.allowed,
                    binding: decision.binding.unwrap_or_default(),
                    break_glass: decision.break_glass,
                    reason: decision.reason,
                })
            })
            .await,
        )
    }

    async fn discharge_enrollment(
        &self,
        request: Request<DischargeEnrollmentRequest>,
    ) -> Reply<Enrollment> {
        let audit = |r: &DischargeEnrollmentRequest| audited_write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    ENROLLMENT.pattern.parse("name", &req.name)?;
                    self.check(caller, rpc.method, About::Name(&req.name))
                        .await?;
                    let action = lifecycle::Action::Discharge {
                        reason: req.reason.clone(),
                    };
                    let call =
                        store::verb_call(rpc.method, &req.name, &req.etag, &req.request_id, &req);
                    store::enrollments::advance(&self.db, call, &action, async |conn, e| {
                        self.record_write(conn, caller, rpc.method, &e.name).await
                    })
                    .await
                })
                .await,
        )
    }

    async fn record_intake(&self, request: Request<RecordIntakeRequest>) -> Reply<Enrollment> {
        let audit = |r: &RecordIntakeRequest| audited_write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    ENROLLMENT.pattern.parse("name", &req.name)?;
                    // Authorize before validating: a malformed record for an enrollment out of
                    // reach answers as out of reach.
                    self.check(caller, rpc.method, About::Name(&req.name))
                        .await?;
                    let mut record = required(req.record.clone(), "record")?;
                    domain::validate_intake_record(&record)?;
                    if record.recorded_by.trim().is_empty() {
                        // Who recorded it defaults to who called: the audit trail says so too,
                        // but the record travels to Scheduling and staff screens without it.
                        record.recorded_by = recorder_of(caller);
                    }
                    let call =
                        store::verb_call(rpc.method, &req.name, &req.etag, &req.request_id, &req);
                    store::enrollments::record_intake(&self.db, call, record, async |conn, e| {
                        self.record_write(conn, caller, rpc.method, &e.name).await
                    })
                    .await
                })
                .await,
        )
    }

    async fn revoke_intake(&self, request: Request<RevokeIntakeRequest>) -> Reply<Enrollment> {
        let audit = |r: &RevokeIntakeRequest| audited_write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    ENROLLMENT.pattern.parse("name", &req.name)?;
                    self.check(caller, rpc.method, About::Name(&req.name))
                        .await?;
                    domain::validate_revocation(&req.record_id, &req.reason)?;
                    let call =
                        store::verb_call(rpc.method, &req.name, &req.etag, &req.request_id, &req);
                    store::enrollments::revoke_intake(
                        &self.db,
                        call,
                        &req.record_id,
                        &req.reason,
                        async |conn, e| self.record_write(conn, caller, rpc.method, &e.name).await,
                    )
                    .await
                })
                .await,
        )
    }

    // Coverages

    async fn get_coverage(&self, request: Request<GetCoverageRequest>) -> Reply<Coverage> {
        let audit = |r: &GetCoverageRequest| {
            let resource = r.name.clone();
            let patient = patient_of(&resource);
            Audited::read(resource, |r: &Coverage| vec![patient_of(&r.name)]).naming(vec![patient])
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    let name = &req.name;
                    COVERAGE.pattern.parse("name", name)?;
                    self.check(caller, rpc.method, About::Name(name)).await?;
                    store::coverages::get(&self.db, name).await
                })
                .await,
        )
    }

    async fn list_coverages(
        &self,
        request: Request<ListCoveragesRequest>,
    ) -> Reply<ListCoveragesResponse> {
        let audit = |r: &ListCoveragesRequest| audited_read_of_patient(&r.parent);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    PATIENT.pattern.parse("parent", &req.parent)?;
                    self.check(caller, rpc.method, About::Patient(&req.parent))
                        .await?;
                    let page =
                        store::coverages::list(&self.db, list_call!(req, &req.parent)).await?;
                    Ok(ListCoveragesResponse {
                        coverages: page.items,
                        next_page_token: page.next_page_token,
                    })
                })
                .await,
        )
    }

    async fn create_coverage(&self, request: Request<CreateCoverageRequest>) -> Reply<Coverage> {
        let audit = |r: &CreateCoverageRequest| audited_write(&r.parent);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    PATIENT.pattern.parse("parent", &req.parent)?;
                    self.check(caller, rpc.method, About::Patient(&req.parent))
                        .await?;
                    let coverage = required(req.coverage.clone(), "coverage")?;
                    let call = create_call!(req, rpc.method, &req.parent, coverage_id);
                    store::coverages::create(&self.db, call, coverage, async |conn, c| {
                        self.record_write(conn, caller, rpc.method, &c.name).await
                    })
                    .await
                })
                .await,
        )
    }

    async fn update_coverage(&self, request: Request<UpdateCoverageRequest>) -> Reply<Coverage> {
        let audit = |r: &UpdateCoverageRequest| {
            audited_write(
                &r.coverage
                    .as_ref()
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
            )
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    let name = req
                        .coverage
                        .as_ref()
                        .map(|c| c.name.clone())
                        .unwrap_or_default();
                    COVERAGE.pattern.parse("coverage.name", &name)?;
                    self.check(caller, rpc.method, About::Name(&name)).await?;
                    store::coverages::update(
                        &self.db,
                        req.coverage,
                        req.update_mask.as_ref(),
                        async |conn, c| self.record_write(conn, caller, rpc.method, &c.name).await,
                    )
                    .await
                })
                .await,
        )
    }

    async fn delete_coverage(&self, request: Request<DeleteCoverageRequest>) -> Reply<Coverage> {
        let audit = |r: &DeleteCoverageRequest| audited_write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    COVERAGE.pattern.parse("name", &req.name)?;
                    self.check(caller, rpc.method, About::Name(&req.name))
                        .await?;
                    store::coverages::delete(&self.db, &req.name, &req.etag, async |conn, c| {
                        self.record_write(conn, caller, rpc.method, &c.name).await
                    })
                    .await
                })
                .await,
        )
    }

    async fn undelete_coverage(
        &self,
        request: Request<UndeleteCoverageRequest>,
    ) -> Reply<Coverage> {
        let audit = |r: &UndeleteCoverageRequest| audited_write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let caller = rpc.caller;
                    COVERAGE.pattern.parse("name", &req.name)?;
                    self.check(caller, rpc.method, About::Name(&req.name))
                        .await?;
                    store::coverages::undelete(&self.db, &req.name, &req.etag, async |conn, r| {
                        self.record_write(conn, caller, rpc.method, &r.name).await
                    })
                    .await
                })
                .await,
        )
    }
}

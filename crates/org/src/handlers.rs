//! The gRPC surface of the Org service: decode the request, run the resource's rules inside the
//! generic standard methods, encode the answer. Rules live in `domain` (pure) and lookups in `store`.

use pm_api::org::org_service_server::OrgService;
use pm_api::org::*;
use pm_runtime::docstore::{self, CreateCall, ListCall, VerbCall};
use pm_runtime::time::{now_micros, to_micros, to_timestamp};
use pm_runtime::{ApiError, ApiResult, Db, names};
use tonic::{Request, Response, Status};

use crate::domain;
use crate::store::{
    self, COVERAGE, CREDENTIAL, ENROLLMENT, LOCATION, ORGANIZATION, PATIENT, PROVIDER, UNIT,
};

/// The ErrorInfo domain of this service's errors.
pub const DOMAIN: &str = "org.pm.dev";

/// The Org service.
#[derive(Clone)]
pub struct OrgApi {
    db: Db,
}

impl OrgApi {
    /// A service over its database slice.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T>(result: ApiResult<T>) -> Reply<T> {
    result.map(Response::new).map_err(|e| e.into_status(DOMAIN))
}

fn required<T>(value: Option<T>, field: &str) -> ApiResult<T> {
    value.ok_or_else(|| ApiError::invalid(field, "is required"))
}

macro_rules! method {
    ($name:literal) => {
        concat!("/pm.org.v1.OrgService/", $name)
    };
}

macro_rules! list_call {
    ($req:expr, $parent:expr) => {
        ListCall {
            parent: $parent,
            page_size: $req.page_size,
            page_token: &$req.page_token,
            filter: &$req.filter,
            order_by: &$req.order_by,
            show_deleted: $req.show_deleted,
        }
    };
}

macro_rules! create_call {
    ($req:expr, $method:literal, $parent:expr, $id:ident) => {
        CreateCall {
            method: method!($method),
            parent: $parent,
            id: &$req.$id,
            id_field: stringify!($id),
            request_id: &$req.request_id,
            request_hash: docstore::request_hash(&$req),
        }
    };
}

#[tonic::async_trait]
impl OrgService for OrgApi {
    // Organizations

    async fn get_organization(
        &self,
        request: Request<GetOrganizationRequest>,
    ) -> Reply<Organization> {
        reply(docstore::get_by_name(&self.db, &ORGANIZATION, &request.get_ref().name).await)
    }

    async fn list_organizations(
        &self,
        request: Request<ListOrganizationsRequest>,
    ) -> Reply<ListOrganizationsResponse> {
        let req = request.into_inner();
        let page = docstore::list(&self.db, &ORGANIZATION, list_call!(req, "")).await;
        reply(page.map(|p| ListOrganizationsResponse {
            organizations: p.items,
            next_page_token: p.next_page_token,
        }))
    }

    async fn create_organization(
        &self,
        request: Request<CreateOrganizationRequest>,
    ) -> Reply<Organization> {
        let req = request.into_inner();
        let result = async {
            let org = required(req.organization.clone(), "organization")?;
            let call = create_call!(req, "CreateOrganization", "", organization_id);
            docstore::create(&self.db, &ORGANIZATION, call, org, async |_, org| {
                domain::validate_organization(org)
            })
            .await
        };
        reply(result.await)
    }

    async fn update_organization(
        &self,
        request: Request<UpdateOrganizationRequest>,
    ) -> Reply<Organization> {
        let req = request.into_inner();
        reply(
            docstore::update(
                &self.db,
                &ORGANIZATION,
                req.organization,
                req.update_mask.as_ref(),
                async |_, _, org| domain::validate_organization(org),
            )
            .await,
        )
    }

    async fn delete_organization(
        &self,
        request: Request<DeleteOrganizationRequest>,
    ) -> Reply<Organization> {
        let req = request.into_inner();
        reply(
            docstore::soft_delete(
                &self.db,
                &ORGANIZATION,
                &req.name,
                &req.etag,
                async |conn, org| {
                    if store::has_live_units(conn, &org.name).await? {
                        return Err(ApiError::precondition(
                            "ORGANIZATION_NOT_EMPTY",
                            format!("{} still has service units: delete them first", org.name),
                        ));
                    }
                    Ok(())
                },
            )
            .await,
        )
    }

    // Service units

    async fn get_service_unit(
        &self,
        request: Request<GetServiceUnitRequest>,
    ) -> Reply<ServiceUnit> {
        reply(docstore::get_by_name(&self.db, &UNIT, &request.get_ref().name).await)
    }

    async fn list_service_units(
        &self,
        request: Request<ListServiceUnitsRequest>,
    ) -> Reply<ListServiceUnitsResponse> {
        let req = request.into_inner();
        let page = docstore::list(&self.db, &UNIT, list_call!(req, &req.parent)).await;
        reply(page.map(|p| ListServiceUnitsResponse {
            service_units: p.items,
            next_page_token: p.next_page_token,
        }))
    }

    async fn create_service_unit(
        &self,
        request: Request<CreateServiceUnitRequest>,
    ) -> Reply<ServiceUnit> {
        let req = request.into_inner();
        let result = async {
            let unit = required(req.service_unit.clone(), "service_unit")?;
            let call = create_call!(req, "CreateServiceUnit", &req.parent, service_unit_id);
            docstore::create(&self.db, &UNIT, call, unit, async |conn, unit| {
                domain::validate_unit(unit)?;
                if !unit.parent_unit.is_empty() {
                    store::referenced_unit(conn, &unit.parent_unit, "service_unit.parent_unit")
                        .await?;
                }
                Ok(())
            })
            .await
        };
        reply(result.await)
    }

    async fn update_service_unit(
        &self,
        request: Request<UpdateServiceUnitRequest>,
    ) -> Reply<ServiceUnit> {
        let req = request.into_inner();
        reply(
            docstore::update(
                &self.db,
                &UNIT,
                req.service_unit,
                req.update_mask.as_ref(),
                async |conn, stored, unit| {
                    domain::validate_unit(unit)?;
                    if !unit.parent_unit.is_empty() && unit.parent_unit != stored.parent_unit {
                        store::referenced_unit(conn, &unit.parent_unit, "service_unit.parent_unit")
                            .await?;
                        let lineage = store::lineage_names(conn, &unit.parent_unit).await?;
                        domain::check_no_cycle(&unit.name, &lineage)?;
                    }
                    Ok(())
                },
            )
            .await,
        )
    }

    async fn delete_service_unit(
        &self,
        request: Request<DeleteServiceUnitRequest>,
    ) -> Reply<ServiceUnit> {
        let req = request.into_inner();
        reply(
            docstore::soft_delete(&self.db, &UNIT, &req.name, &req.etag, async |conn, unit| {
                if store::has_live_children(conn, &unit.name).await? {
                    return Err(ApiError::precondition(
                        "UNIT_HAS_CHILDREN",
                        format!(
                            "{} still has child units: move or delete them first",
                            unit.name
                        ),
                    ));
                }
                Ok(())
            })
            .await,
        )
    }

    async fn get_effective_policy(
        &self,
        request: Request<GetEffectivePolicyRequest>,
    ) -> Reply<EffectivePolicy> {
        let unit = &request.get_ref().unit;
        let result = async {
            domain::UNIT_NAME.parse("unit", unit)?;
            let mut conn = self.db.read().await?;
            if docstore::get_live::<ServiceUnit>(&mut conn, unit)
                .await?
                .is_none()
            {
                return Err(ApiError::not_found(unit));
            }
            store::effective_policy(&mut conn, unit).await
        };
        reply(result.await)
    }

    // Locations

    async fn get_location(&self, request: Request<GetLocationRequest>) -> Reply<Location> {
        reply(docstore::get_by_name(&self.db, &LOCATION, &request.get_ref().name).await)
    }

    async fn list_locations(
        &self,
        request: Request<ListLocationsRequest>,
    ) -> Reply<ListLocationsResponse> {
        let req = request.into_inner();
        let page = docstore::list(&self.db, &LOCATION, list_call!(req, &req.parent)).await;
        reply(page.map(|p| ListLocationsResponse {
            locations: p.items,
            next_page_token: p.next_page_token,
        }))
    }

    async fn create_location(&self, request: Request<CreateLocationRequest>) -> Reply<Location> {
        let req = request.into_inner();
        let result = async {
            let location = required(req.location.clone(), "location")?;
            let call = create_call!(req, "CreateLocation", &req.parent, location_id);
            docstore::create(&self.db, &LOCATION, call, location, async |_, l| {
                domain::validate_location(l)
            })
            .await
        };
        reply(result.await)
    }

    async fn update_location(&self, request: Request<UpdateLocationRequest>) -> Reply<Location> {
        let req = request.into_inner();
        reply(
            docstore::update(
                &self.db,
                &LOCATION,
                req.location,
                req.update_mask.as_ref(),
                async |_, _, l| domain::validate_location(l),
            )
            .await,
        )
    }

    async fn delete_location(&self, request: Request<DeleteLocationRequest>) -> Reply<Location> {
        let req = request.into_inner();
        reply(
            docstore::soft_delete(&self.db, &LOCATION, &req.name, &req.etag, async |_, _| {
                Ok(())
            })
            .await,
        )
    }

    // Providers

    async fn get_provider(&self, request: Request<GetProviderRequest>) -> Reply<Provider> {
        reply(docstore::get_by_name(&self.db, &PROVIDER, &request.get_ref().name).await)
    }

    async fn list_providers(
        &self,
        request: Request<ListProvidersRequest>,
    ) -> Reply<ListProvidersResponse> {
        let req = request.into_inner();
        let page = docstore::list(&self.db, &PROVIDER, list_call!(req, &req.parent)).await;
        reply(page.map(|p| ListProvidersResponse {
            providers: p.items,
            next_page_token: p.next_page_token,
        }))
    }

    async fn create_provider(&self, request: Request<CreateProviderRequest>) -> Reply<Provider> {
        let req = request.into_inner();
        let result = async {
            let provider = required(req.provider.clone(), "provider")?;
            let call = create_call!(req, "CreateProvider", &req.parent, provider_id);
            docstore::create(&self.db, &PROVIDER, call, provider, async |conn, p| {
                check_provider(conn, p).await
            })
            .await
        };
        reply(result.await)
    }

    async fn update_provider(&self, request: Request<UpdateProviderRequest>) -> Reply<Provider> {
        let req = request.into_inner();
        reply(
            docstore::update(
                &self.db,
                &PROVIDER,
                req.provider,
                req.update_mask.as_ref(),
                async |conn, _, p| check_provider(conn, p).await,
            )
            .await,
        )
    }

    async fn delete_provider(&self, request: Request<DeleteProviderRequest>) -> Reply<Provider> {
        let req = request.into_inner();
        reply(
            docstore::soft_delete(&self.db, &PROVIDER, &req.name, &req.etag, async |_, _| {
                Ok(())
            })
            .await,
        )
    }

    // Credentials

    async fn get_credential(&self, request: Request<GetCredentialRequest>) -> Reply<Credential> {
        reply(docstore::get_by_name(&self.db, &CREDENTIAL, &request.get_ref().name).await)
    }

    async fn list_credentials(
        &self,
        request: Request<ListCredentialsRequest>,
    ) -> Reply<ListCredentialsResponse> {
        let req = request.into_inner();
        let page = docstore::list(&self.db, &CREDENTIAL, list_call!(req, &req.parent)).await;
        reply(page.map(|p| ListCredentialsResponse {
            credentials: p.items,
            next_page_token: p.next_page_token,
        }))
    }

    async fn create_credential(
        &self,
        request: Request<CreateCredentialRequest>,
    ) -> Reply<Credential> {
        let req = request.into_inner();
        let result = async {
            let credential = required(req.credential.clone(), "credential")?;
            let call = create_call!(req, "CreateCredential", &req.parent, credential_id);
            docstore::create(&self.db, &CREDENTIAL, call, credential, async |conn, c| {
                check_credential(conn, c).await
            })
            .await
        };
        reply(result.await)
    }

    async fn update_credential(
        &self,
        request: Request<UpdateCredentialRequest>,
    ) -> Reply<Credential> {
        let req = request.into_inner();
        reply(
            docstore::update(
                &self.db,
                &CREDENTIAL,
                req.credential,
                req.update_mask.as_ref(),
                async |conn, _, c| check_credential(conn, c).await,
            )
            .await,
        )
    }

    async fn delete_credential(
        &self,
        request: Request<DeleteCredentialRequest>,
    ) -> Reply<Credential> {
        let req = request.into_inner();
        reply(
            docstore::soft_delete(&self.db, &CREDENTIAL, &req.name, &req.etag, async |_, _| {
                Ok(())
            })
            .await,
        )
    }

    async fn check_credential(
        &self,
        request: Request<CheckCredentialRequest>,
    ) -> Reply<CheckCredentialResponse> {
        let req = request.into_inner();
        let result = async {
            domain::PROVIDER_NAME.parse("provider", &req.provider)?;
            domain::check_same_org_unit("unit", &req.unit, &req.provider)?;
            let at = match &req.time {
                Some(time) if pm_runtime::time::is_valid(time) => to_micros(time),
                Some(_) => return Err(ApiError::invalid("time", "is not a valid timestamp")),
                None => now_micros(),
            };
            let mut conn = self.db.read().await?;
            for name in [&req.provider, &req.unit] {
                if !docstore::exists_live(&mut conn, name).await? {
                    return Err(ApiError::not_found(name));
                }
            }
            let in_force = store::credentials_for(&mut conn, &req.provider, &req.unit)
                .await?
                .into_iter()
                .find(|c| {
                    domain::period_of(c.effective_period.as_ref()).is_some_and(|p| p.contains(at))
                });
            Ok(CheckCredentialResponse {
                credentialed: in_force
                    .as_ref()
                    .is_some_and(|c| c.state == CredentialState::Active as i32),
                credential: in_force,
            })
        };
        reply(result.await)
    }

    // Patients

    async fn get_patient(&self, request: Request<GetPatientRequest>) -> Reply<Patient> {
        reply(docstore::get_by_name(&self.db, &PATIENT, &request.get_ref().name).await)
    }

    async fn list_patients(
        &self,
        request: Request<ListPatientsRequest>,
    ) -> Reply<ListPatientsResponse> {
        let req = request.into_inner();
        let page = docstore::list(&self.db, &PATIENT, list_call!(req, &req.parent)).await;
        reply(page.map(|p| ListPatientsResponse {
            patients: p.items,
            next_page_token: p.next_page_token,
        }))
    }

    async fn create_patient(&self, request: Request<CreatePatientRequest>) -> Reply<Patient> {
        let req = request.into_inner();
        let result = async {
            let patient = required(req.patient.clone(), "patient")?;
            let call = create_call!(req, "CreatePatient", &req.parent, patient_id);
            docstore::create(&self.db, &PATIENT, call, patient, async |conn, p| {
                check_patient(conn, p).await
            })
            .await
        };
        reply(result.await)
    }

    async fn update_patient(&self, request: Request<UpdatePatientRequest>) -> Reply<Patient> {
        let req = request.into_inner();
        reply(
            docstore::update(
                &self.db,
                &PATIENT,
                req.patient,
                req.update_mask.as_ref(),
                async |conn, _, p| check_patient(conn, p).await,
            )
            .await,
        )
    }

    async fn delete_patient(&self, request: Request<DeletePatientRequest>) -> Reply<Patient> {
        let req = request.into_inner();
        reply(
            docstore::soft_delete(
                &self.db,
                &PATIENT,
                &req.name,
                &req.etag,
                async |_, _| Ok(()),
            )
            .await,
        )
    }

    // Enrollments

    async fn get_enrollment(&self, request: Request<GetEnrollmentRequest>) -> Reply<Enrollment> {
        reply(docstore::get_by_name(&self.db, &ENROLLMENT, &request.get_ref().name).await)
    }

    async fn list_enrollments(
        &self,
        request: Request<ListEnrollmentsRequest>,
    ) -> Reply<ListEnrollmentsResponse> {
        let req = request.into_inner();
        let page = docstore::list(&self.db, &ENROLLMENT, list_call!(req, &req.parent)).await;
        reply(page.map(|p| ListEnrollmentsResponse {
            enrollments: p.items,
            next_page_token: p.next_page_token,
        }))
    }

    async fn create_enrollment(
        &self,
        request: Request<CreateEnrollmentRequest>,
    ) -> Reply<Enrollment> {
        let req = request.into_inner();
        let result = async {
            let enrollment = required(req.enrollment.clone(), "enrollment")?;
            let call = create_call!(req, "CreateEnrollment", &req.parent, enrollment_id);
            docstore::create(&self.db, &ENROLLMENT, call, enrollment, async |conn, e| {
                domain::check_same_org_unit("enrollment.unit", &e.unit, &e.name)?;
                check_enrollment_target(conn, e, &e.unit, &e.pathway_step, "enrollment").await?;
                e.state = EnrollmentState::Active as i32;
                e.history = vec![EnrollmentEvent {
                    kind: EnrollmentEventKind::Enrolled as i32,
                    time: Some(to_timestamp(now_micros())),
                    unit: e.unit.clone(),
                    pathway_step: e.pathway_step.clone(),
                    reason: String::new(),
                }];
                Ok(())
            })
            .await
        };
        reply(result.await)
    }

    async fn delete_enrollment(
        &self,
        request: Request<DeleteEnrollmentRequest>,
    ) -> Reply<Enrollment> {
        let req = request.into_inner();
        reply(
            docstore::soft_delete(&self.db, &ENROLLMENT, &req.name, &req.etag, async |_, _| {
                Ok(())
            })
            .await,
        )
    }

    async fn transfer_enrollment(
        &self,
        request: Request<TransferEnrollmentRequest>,
    ) -> Reply<Enrollment> {
        let req = request.into_inner();
        let call = VerbCall {
            method: method!("TransferEnrollment"),
            name: &req.name,
            etag: &req.etag,
            request_id: &req.request_id,
            request_hash: docstore::request_hash(&req),
        };
        reply(
            docstore::transition(&self.db, &ENROLLMENT, call, async |conn, e| {
                require_active(e)?;
                let unit = if req.unit.is_empty() {
                    e.unit.clone()
                } else {
                    req.unit.clone()
                };
                domain::check_same_org_unit("unit", &unit, &e.name)?;
                if unit == e.unit && req.pathway_step == e.pathway_step {
                    return Err(ApiError::invalid(
                        "unit",
                        "a transfer must change the unit or the pathway step",
                    ));
                }
                check_enrollment_target(conn, e, &unit, &req.pathway_step, "").await?;
                e.unit = unit;
                e.pathway_step = req.pathway_step.clone();
                e.history.push(EnrollmentEvent {
                    kind: EnrollmentEventKind::Transferred as i32,
                    time: Some(to_timestamp(now_micros())),
                    unit: e.unit.clone(),
                    pathway_step: e.pathway_step.clone(),
                    reason: req.reason.clone(),
                });
                Ok(())
            })
            .await,
        )
    }

    async fn discharge_enrollment(
        &self,
        request: Request<DischargeEnrollmentRequest>,
    ) -> Reply<Enrollment> {
        let req = request.into_inner();
        let call = VerbCall {
            method: method!("DischargeEnrollment"),
            name: &req.name,
            etag: &req.etag,
            request_id: &req.request_id,
            request_hash: docstore::request_hash(&req),
        };
        reply(
            docstore::transition(&self.db, &ENROLLMENT, call, async |_, e| {
                if req.reason.trim().is_empty() {
                    return Err(ApiError::invalid("reason", "must not be empty"));
                }
                require_active(e)?;
                e.state = EnrollmentState::Discharged as i32;
                e.history.push(EnrollmentEvent {
                    kind: EnrollmentEventKind::Discharged as i32,
                    time: Some(to_timestamp(now_micros())),
                    unit: e.unit.clone(),
                    pathway_step: e.pathway_step.clone(),
                    reason: req.reason.clone(),
                });
                Ok(())
            })
            .await,
        )
    }

    // Coverages

    async fn get_coverage(&self, request: Request<GetCoverageRequest>) -> Reply<Coverage> {
        reply(docstore::get_by_name(&self.db, &COVERAGE, &request.get_ref().name).await)
    }

    async fn list_coverages(
        &self,
        request: Request<ListCoveragesRequest>,
    ) -> Reply<ListCoveragesResponse> {
        let req = request.into_inner();
        let page = docstore::list(&self.db, &COVERAGE, list_call!(req, &req.parent)).await;
        reply(page.map(|p| ListCoveragesResponse {
            coverages: p.items,
            next_page_token: p.next_page_token,
        }))
    }

    async fn create_coverage(&self, request: Request<CreateCoverageRequest>) -> Reply<Coverage> {
        let req = request.into_inner();
        let result = async {
            let coverage = required(req.coverage.clone(), "coverage")?;
            let call = create_call!(req, "CreateCoverage", &req.parent, coverage_id);
            docstore::create(&self.db, &COVERAGE, call, coverage, async |conn, c| {
                check_coverage(conn, c).await
            })
            .await
        };
        reply(result.await)
    }

    async fn update_coverage(&self, request: Request<UpdateCoverageRequest>) -> Reply<Coverage> {
        let req = request.into_inner();
        reply(
            docstore::update(
                &self.db,
                &COVERAGE,
                req.coverage,
                req.update_mask.as_ref(),
                async |conn, _, c| check_coverage(conn, c).await,
            )
            .await,
        )
    }

    async fn delete_coverage(&self, request: Request<DeleteCoverageRequest>) -> Reply<Coverage> {
        let req = request.into_inner();
        reply(
            docstore::soft_delete(&self.db, &COVERAGE, &req.name, &req.etag, async |_, _| {
                Ok(())
            })
            .await,
        )
    }
}

async fn check_provider(conn: &mut sqlx::AnyConnection, provider: &Provider) -> ApiResult<()> {
    domain::validate_provider(provider)?;
    let organization = names::organization_of(&provider.name);
    if let Some(other) =
        store::provider_with_npi(conn, organization, &provider.npi, &provider.name).await?
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

async fn check_credential(
    conn: &mut sqlx::AnyConnection,
    credential: &Credential,
) -> ApiResult<()> {
    let period = domain::validate_credential(credential)?;
    store::referenced_unit(conn, &credential.unit, "credential.unit").await?;
    let provider = names::parent_of(&credential.name);
    let others =
        store::credential_periods(conn, provider, &credential.unit, &credential.name).await?;
    domain::check_no_credential_overlap(&period, &others)
}

async fn check_patient(conn: &mut sqlx::AnyConnection, patient: &Patient) -> ApiResult<()> {
    domain::validate_patient(patient, chrono::Utc::now().date_naive())?;
    if let Some(index) = store::identifier_taken(conn, patient).await? {
        // The identifier itself is PHI: the error names its position, not its value.
        return Err(ApiError::already_exists(
            "PATIENT_IDENTIFIER_TAKEN",
            format!("patient.identifiers[{index}] already identifies another patient of the organization"),
        )
        .with_violation(format!("patient.identifiers[{index}]"), "already identifies another patient"));
    }
    Ok(())
}

async fn check_coverage(conn: &mut sqlx::AnyConnection, coverage: &Coverage) -> ApiResult<()> {
    let period = domain::validate_coverage(coverage)?;
    let others =
        store::coverage_periods(conn, names::parent_of(&coverage.name), &coverage.name).await?;
    domain::check_no_coverage_overlap(coverage, &period, &others)
}

fn require_active(enrollment: &Enrollment) -> ApiResult<()> {
    if enrollment.state == EnrollmentState::Active as i32 {
        Ok(())
    } else {
        Err(ApiError::precondition(
            "ENROLLMENT_NOT_ACTIVE",
            format!("{} is not active", enrollment.name),
        ))
    }
}

/// The unit must exist, the step must belong to its effective pathway, and the patient may not already
/// be actively enrolled there.
async fn check_enrollment_target(
    conn: &mut sqlx::AnyConnection,
    enrollment: &Enrollment,
    unit: &str,
    step: &str,
    prefix: &str,
) -> ApiResult<()> {
    let field = |f: &str| {
        if prefix.is_empty() {
            f.to_string()
        } else {
            format!("{prefix}.{f}")
        }
    };
    store::referenced_unit(conn, unit, &field("unit")).await?;
    let policy = store::effective_policy(conn, unit).await?;
    domain::check_pathway_step(
        &field("pathway_step"),
        step,
        &policy.workflow_rules.unwrap_or_default(),
    )?;
    let patient = names::parent_of(&enrollment.name);
    if let Some(other) = store::active_enrollment_in(conn, patient, unit, &enrollment.name).await? {
        return Err(ApiError::precondition(
            "ALREADY_ENROLLED",
            format!("the patient is already enrolled in {unit} ({other})"),
        )
        .with_meta("enrollment", other)
        .with_meta("unit", unit));
    }
    Ok(())
}

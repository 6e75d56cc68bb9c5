//! What Scheduling asks of Org, over mTLS gRPC as the `scheduling` service (each Org RPC used here
//! lists `scheduling` in its `service_callers`). The unit policies, location zones, unit tree and
//! provider credentials change rarely and are cached for [`CACHE_TTL`]; a patient's enrollments and
//! coverage (PHI) are read fresh on every call, concurrent lookups sent together as one
//! BatchGetPatientEligibility call ([`pm_runtime::coalesce`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use pm_api::org::org_service_client::OrgServiceClient;
use pm_api::org::{
    BatchGetPatientEligibilityRequest, CredentialState, EnrollmentState, GetEffectivePolicyRequest,
    GetLocationRequest, GetPatientEligibilityRequest, IntakeRecord, IntakeRequirement,
    ListCredentialsRequest, ListServiceUnitsRequest, PatientEligibility,
};
use pm_runtime::coalesce::{Coalescer, Missed, SendBatch};
use pm_runtime::{ApiError, ApiResult, names};
use tokio::sync::Semaphore;
use tonic::Code;
use tonic::transport::Channel;

use crate::cache::TtlCache;
use crate::eligibility::{
    CoverageInfo, CredentialInfo, EnrollmentInfo, IntakeInfo, PatientContext, Requirement,
    UnitPolicy,
};

pub use crate::cache::CACHE_TTL;

/// A unit's effective policy and where it sits.
#[derive(Debug, Clone)]
pub struct UnitInfo {
    /// The rules slot search applies.
    pub policy: UnitPolicy,
    /// The unit's ancestors, root first, then the unit.
    pub lineage: Vec<String>,
}

/// Org as Scheduling sees it.
pub struct OrgView {
    client: OrgServiceClient<Channel>,
    units: TtlCache<UnitInfo>,
    zones: TtlCache<String>,
    credentials: TtlCache<Vec<CredentialInfo>>,
    /// The credential calls to Org in flight, shared by the searches waiting for them.
    credential_fetches: Mutex<HashMap<String, SharedFetch>>,
    credential_permits: Arc<Semaphore>,
    trees: TtlCache<Vec<(String, String)>>,
    /// Patient-eligibility lookups, sent to Org in batches.
    eligibility: Coalescer<String, PatientEligibility, tonic::Status>,
}

/// One call to Org for a provider's credentials, awaited by every search that needs them.
type SharedFetch = Shared<BoxFuture<'static, ApiResult<Vec<CredentialInfo>>>>;

/// Credential calls to Org in flight at most.
pub const CREDENTIAL_FETCHES: usize = 32;

/// BatchGetPatientEligibility calls in flight at once: a lookup asked while they are all on their
/// way waits and goes in the next batch.
pub const ELIGIBILITY_LANES: usize = 1;

/// Patients per BatchGetPatientEligibility call at most (Org's limit).
pub const ELIGIBILITY_BATCH: usize = 100;

/// Org's refusal or failure, as this service reports it. NOT_FOUND and INVALID_ARGUMENT about a
/// name the caller gave are passed on; anything else means Org is unavailable.
fn from_org(status: tonic::Status, what: &str) -> ApiError {
    match status.code() {
        Code::NotFound | Code::PermissionDenied => ApiError::not_found(what),
        Code::InvalidArgument => ApiError::invalid(what, "Org refused it as malformed"),
        _ => ApiError::peer_unavailable("org", &status.message()),
    }
}

/// Org's intake requirement as slot search knows it; `None` for UNSPECIFIED or a value this build
/// does not know (Org refuses both on write, so a unit never declares one).
fn requirement_of(value: i32) -> Option<Requirement> {
    match IntakeRequirement::try_from(value).ok()? {
        IntakeRequirement::Referral => Some(Requirement::Referral),
        IntakeRequirement::Consent => Some(Requirement::Consent),
        IntakeRequirement::PriorAuthorization => Some(Requirement::PriorAuthorization),
        IntakeRequirement::CarePlan => Some(Requirement::CarePlan),
        IntakeRequirement::Unspecified => None,
    }
}

/// An intake record as slot search checks it; `None` for a revoked one (it meets nothing any more)
/// and for one it cannot read (Org validates each on write), which then meets nothing either.
fn intake_of(record: &IntakeRecord) -> Option<IntakeInfo> {
    if record.revoke_time.is_some() {
        return None;
    }
    Some(IntakeInfo {
        requirement: requirement_of(record.requirement)?,
        from: micros_to_time(record.effective_time.as_ref())?,
        until: micros_to_time(record.expire_time.as_ref()),
        visit_types: record.visit_types.clone(),
        record: record.id.clone(),
        visit_count: u32::try_from(record.visit_count).unwrap_or(0),
    })
}

fn micros_to_time(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    ts.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
}

impl OrgView {
    /// Org at the other end of `channel` (an mTLS channel with this service's certificate).
    pub fn new(channel: Channel) -> Self {
        let client = OrgServiceClient::new(channel);
        Self {
            client: client.clone(),
            units: TtlCache::new(),
            zones: TtlCache::new(),
            credentials: TtlCache::new(),
            credential_fetches: Mutex::new(HashMap::new()),
            credential_permits: Arc::new(Semaphore::new(CREDENTIAL_FETCHES)),
            trees: TtlCache::new(),
            eligibility: Coalescer::new(
                eligibility_sender(client),
                ELIGIBILITY_LANES,
                ELIGIBILITY_BATCH,
            ),
        }
    }

    /// The unit's effective policy and lineage.
    pub async fn unit(&self, unit: &str) -> ApiResult<UnitInfo> {
        if let Some(info) = self.units.get(unit) {
            return Ok(info);
        }
        self.unit_now(unit).await
    }

    /// The unit's effective policy and lineage as Org has them now, not as cached (for a write
    /// that is checked against them: a visit type must be allowed by the rules in force); the
    /// cache keeps the fresh answer.
    pub async fn unit_now(&self, unit: &str) -> ApiResult<UnitInfo> {
        let policy = self
            .client
            .clone()
            .get_effective_policy(GetEffectivePolicyRequest { unit: unit.into() })
            .await
            .map_err(|s| from_org(s, unit))?
            .into_inner();
        let billing = policy.billing_profile.unwrap_or_default();
        let workflow = policy.workflow_rules.unwrap_or_default();
        let info = UnitInfo {
            policy: UnitPolicy {
                unit: unit.to_string(),
                allowed_visit_types: workflow.allowed_visit_types,
                care_pathway_steps: workflow
                    .care_pathway_steps
                    .into_iter()
                    .map(|s| s.id)
                    .collect(),
                // Payers compare in their full form: profiles and coverages written before Billing
                // existed hold the short `payers/{id}`.
                accepted_payers: billing
                    .accepted_payers
                    .into_iter()
                    .map(|p| names::qualified(names::organization_of(unit), "payers", &p.payer))
                    .collect(),
                self_pay_allowed: billing.self_pay_allowed.unwrap_or(false),
                intake_requirements: workflow
                    .intake_requirements
                    .into_iter()
                    .filter_map(requirement_of)
                    .collect(),
            },
            lineage: policy.lineage,
        };
        self.units.put(unit, info.clone());
        Ok(info)
    }

    /// The IANA time zone of a location.
    pub async fn zone(&self, location: &str) -> ApiResult<String> {
        if let Some(zone) = self.zones.get(location) {
            return Ok(zone);
        }
        let zone = self
            .client
            .clone()
            .get_location(GetLocationRequest {
                name: location.into(),
            })
            .await
            .map_err(|s| from_org(s, location))?
            .into_inner()
            .time_zone;
        self.zones.put(location, zone.clone());
        Ok(zone)
    }

    /// Every unit of the organization with its parent ("" for a root).
    pub async fn unit_tree(&self, organization: &str) -> ApiResult<Vec<(String, String)>> {
        if let Some(tree) = self.trees.get(organization) {
            return Ok(tree);
        }
        let tree = all_pages(|page_token| {
            let mut client = self.client.clone();
            async move {
                let page = client
                    .list_service_units(ListServiceUnitsRequest {
                        parent: organization.into(),
                        page_size: 1000,
                        page_token,
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| from_org(s, organization))?
                    .into_inner();
                let units = page.service_units.into_iter();
                Ok((
                    units.map(|u| (u.name, u.parent_unit)).collect(),
                    page.next_page_token,
                ))
            }
        })
        .await?;
        self.trees.put(organization, tree.clone());
        Ok(tree)
    }

    /// All of a provider's credentials. Concurrent searches that miss the cache for the same
    /// provider share one call to Org, and at most [`CREDENTIAL_FETCHES`] such calls are in flight:
    /// when the entries of a large unit expire together, a burst of searches must not turn into a
    /// burst of thousands of Org calls.
    pub async fn credentials(&self, provider: &str) -> ApiResult<Vec<CredentialInfo>> {
        if let Some(credentials) = self.credentials.get(provider) {
            return Ok(credentials);
        }
        let fetch = {
            let mut in_flight = self
                .credential_fetches
                .lock()
                .map_err(|_| ApiError::internal("the credentials cache", &"poisoned"))?;
            in_flight
                .entry(provider.to_string())
                .or_insert_with(|| {
                    let client = self.client.clone();
                    let permits = Arc::clone(&self.credential_permits);
                    let provider = provider.to_string();
                    async move {
                        let _permit = permits
                            .acquire_owned()
                            .await
                            .map_err(|_| ApiError::internal("the credentials cache", &"closed"))?;
                        fetch_credentials(client, &provider).await
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        let result = fetch.await;
        if let Ok(credentials) = &result {
            self.credentials.put(provider, credentials.clone());
        }
        if let Ok(mut in_flight) = self.credential_fetches.lock() {
            in_flight.remove(provider);
        }
        result
    }

    /// The patient's enrollment in `unit` (or, failing that, any active one) and coverage, in one
    /// call. Never cached: it is PHI and booking must see its current state.
    pub async fn patient(&self, patient: &str, unit: &str) -> ApiResult<PatientContext> {
        let eligibility = match self.eligibility.get(patient.to_string()).await {
            Ok(eligibility) => eligibility,
            Err(Missed::Alone(status)) => return Err(from_org(status, patient)),
            Err(Missed::Shared(status)) if !about_one_patient(&status) => {
                return Err(from_org(status, patient));
            }
            // Another patient of the batch failed it (or an older Org has no batch call): this
            // one alone, to learn its own answer.
            Err(Missed::Shared(_) | Missed::Lost) => self
                .client
                .clone()
                .get_patient_eligibility(GetPatientEligibilityRequest {
                    patient: patient.into(),
                })
                .await
                .map_err(|s| from_org(s, patient))?
                .into_inner(),
        };
        let (enrollments, coverages) = (eligibility.enrollments, eligibility.coverages);
        let active: Vec<_> = enrollments
            .into_iter()
            .filter(|e| e.state == EnrollmentState::Active as i32)
            .collect();
        let enrollment = active
            .iter()
            .find(|e| e.unit == unit)
            .or_else(|| active.first())
            .map(|e| EnrollmentInfo {
                unit: e.unit.clone(),
                pathway_step: (!e.pathway_step.is_empty()).then(|| e.pathway_step.clone()),
                active: true,
                intake: e.intake_records.iter().filter_map(intake_of).collect(),
            });
        let coverages = coverages
            .into_iter()
            .filter_map(|c| {
                let period = c.effective_period.unwrap_or_default();
                Some(CoverageInfo {
                    payer: names::qualified(names::organization_of(patient), "payers", &c.payer),
                    priority: c.priority,
                    from: micros_to_time(period.start_time.as_ref())?,
                    until: micros_to_time(period.end_time.as_ref()),
                })
            })
            .collect();
        // The visits the intake records count are this slice's; the caller adds them.
        Ok(PatientContext {
            enrollment,
            coverages,
            visits: Vec::new(),
        })
    }
}

/// Whether a batch call's failure may be one patient's doing, so that the others would be
/// answered alone.
fn about_one_patient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::NotFound | Code::PermissionDenied | Code::InvalidArgument | Code::Unimplemented
    )
}

/// Sends a batch of patients' eligibility lookups: one BatchGetPatientEligibility call per
/// organization (a call names one), the answers put back in the order asked.
fn eligibility_sender(
    client: OrgServiceClient<Channel>,
) -> SendBatch<String, PatientEligibility, tonic::Status> {
    Arc::new(move |patients: Vec<String>| {
        let client = client.clone();
        async move {
            let mut by_organization: Vec<(String, Vec<String>)> = Vec::new();
            for patient in &patients {
                let organization = names::organization_of(patient);
                match by_organization.iter_mut().find(|(o, _)| o == organization) {
                    Some((_, mine)) => mine.push(patient.clone()),
                    None => by_organization.push((organization.to_string(), vec![patient.clone()])),
                }
            }
            let calls = by_organization.into_iter().map(|(parent, patients)| {
                let mut client = client.clone();
                async move {
                    let reply = client
                        .batch_get_patient_eligibility(BatchGetPatientEligibilityRequest {
                            parent: parent.clone(),
                            patients,
                        })
                        .await?;
                    Ok::<_, tonic::Status>((parent, reply.into_inner().eligibilities.into_iter()))
                }
            });
            let mut answers: HashMap<String, _> = futures::future::try_join_all(calls)
                .await?
                .into_iter()
                .collect();
            // Each answer names its patient: one out of place would be another patient's.
            patients
                .iter()
                .map(|p| {
                    answers
                        .get_mut(names::organization_of(p))
                        .and_then(Iterator::next)
                        .filter(|answer| &answer.patient == p)
                        .ok_or_else(|| tonic::Status::internal("Org answered a batch out of order"))
                })
                .collect()
        }
        .boxed()
    })
}

/// Every credential of `provider`, asked of Org.
async fn fetch_credentials(
    client: OrgServiceClient<Channel>,
    provider: &str,
) -> ApiResult<Vec<CredentialInfo>> {
    all_pages(|page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_credentials(ListCredentialsRequest {
                    parent: provider.into(),
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .map_err(|s| from_org(s, provider))?
                .into_inner();
            let credentials = page.credentials.into_iter().filter_map(|c| {
                let period = c.effective_period.unwrap_or_default();
                Some(CredentialInfo {
                    unit: c.unit,
                    active: c.state == CredentialState::Active as i32,
                    from: micros_to_time(period.start_time.as_ref())?,
                    until: micros_to_time(period.end_time.as_ref()),
                })
            });
            Ok((credentials.collect(), page.next_page_token))
        }
    })
    .await
}

/// Every item of a paginated List: `fetch` gets a page token ("" first) and answers a page of items
/// with the next token ("" after the last page).
async fn all_pages<T, F, Fut>(mut fetch: F) -> ApiResult<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = ApiResult<(Vec<T>, String)>>,
{
    let mut items = Vec::new();
    let mut page_token = String::new();
    loop {
        let (page, next) = fetch(page_token).await?;
        items.extend(page);
        if next.is_empty() {
            return Ok(items);
        }
        page_token = next;
    }
}

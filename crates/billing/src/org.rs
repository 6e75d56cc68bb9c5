//! What Billing asks of Org, over mTLS gRPC as the `billing` service (each Org RPC used here lists
//! `billing` in its `service_callers`): a unit's effective billing profile and lineage, the units'
//! kinds and parents, a location's time zone. They change rarely and are cached for
//! [`CACHE_TTL`](pm_runtime::cache::CACHE_TTL).

use pm_api::org::org_service_client::OrgServiceClient;
use pm_api::org::{
    BatchGetPatientEligibilityRequest, ClaimForm, Coverage, GetEffectivePolicyRequest,
    GetLocationRequest, GetPatientEligibilityRequest, GetPatientRequest, GetProviderRequest,
    ListPatientsRequest, ListServiceUnitsRequest, Patient, PatientEligibility, Provider, UnitKind,
};
use pm_runtime::cache::TtlCache;
use pm_runtime::{ApiError, ApiResult};
use tonic::Code;
use tonic::transport::Channel;

use crate::domain::charge::Profile;

/// The most patients a member-month invoice run looks through.
pub const MAX_MEMBER_SCAN: usize = 50_000;

/// A unit as Billing needs it: where it sits and how it bills.
#[derive(Debug, Clone)]
pub struct UnitBilling {
    /// The unit first, then its parent, up to the root (nearest first, as pricing walks it).
    pub nearest_first: Vec<String>,
    /// The nearest unit of the lineage (itself included) that is a program, if any.
    pub program: Option<String>,
    /// Its effective billing profile, each value with the unit it came from.
    pub profile: Profile,
    /// The payers the unit accepts, each with the contract it bills under ("" for none).
    pub accepted_payers: Vec<(String, String)>,
}

/// One unit of the tree: its parent ("" for a root) and kind.
#[derive(Debug, Clone)]
struct TreeUnit {
    name: String,
    parent: String,
    kind: UnitKind,
    /// Its own reporting tags (not inherited).
    tags: Vec<String>,
}

/// Org as Billing sees it.
pub struct OrgView {
    client: OrgServiceClient<Channel>,
    units: TtlCache<UnitBilling>,
    zones: TtlCache<String>,
    trees: TtlCache<Vec<TreeUnit>>,
    providers: TtlCache<Provider>,
}

/// Org's refusal or failure, as Billing reports it: a name Org does not know is one Billing does
/// not know either; anything else means Org is unavailable.
fn from_org(status: tonic::Status, what: &str) -> ApiError {
    match status.code() {
        Code::NotFound | Code::PermissionDenied => ApiError::not_found(what),
        Code::InvalidArgument => ApiError::invalid(what, "Org refused it as malformed"),
        _ => ApiError::peer_unavailable("org", &status.message()),
    }
}

impl OrgView {
    /// Org at the other end of `channel` (an mTLS channel with Billing's certificate).
    pub fn new(channel: Channel) -> Self {
        Self {
            client: OrgServiceClient::new(channel),
            units: TtlCache::new(),
            zones: TtlCache::new(),
            trees: TtlCache::new(),
            providers: TtlCache::new(),
        }
    }

    /// The unit's lineage, program and effective billing profile.
    pub async fn unit(&self, unit: &str) -> ApiResult<UnitBilling> {
        if let Some(info) = self.units.get(unit) {
            return Ok(info);
        }
        let policy = self
            .client
            .clone()
            .get_effective_policy(GetEffectivePolicyRequest { unit: unit.into() })
            .await
            .map_err(|s| from_org(s, unit))?
            .into_inner();
        let tree = self.tree(pm_runtime::names::organization_of(unit)).await?;
        let nearest_first: Vec<String> = policy.lineage.iter().rev().cloned().collect();
        let program = nearest_first
            .iter()
            .find(|u| {
                tree.iter()
                    .any(|t| &t.name == *u && t.kind == UnitKind::Program)
            })
            .cloned();
        let billing = policy.billing_profile.unwrap_or_default();
        let source = |field: &str| {
            policy
                .sources
                .iter()
                .find(|s| s.field == format!("billing_profile.{field}"))
                .map(|s| s.unit.clone())
                .unwrap_or_default()
        };
        let claim_form = ClaimForm::try_from(billing.claim_form)
            .unwrap_or(ClaimForm::Unspecified)
            .as_str_name()
            .trim_start_matches("CLAIM_FORM_")
            .to_string();
        let info = UnitBilling {
            nearest_first,
            program,
            profile: Profile {
                billing_entity: billing.billing_entity.clone(),
                billing_entity_source: source("billing_entity"),
                place_of_service: billing.place_of_service.clone(),
                place_of_service_source: source("place_of_service"),
                claim_form,
                claim_form_source: source("claim_form"),
            },
            accepted_payers: billing
                .accepted_payers
                .into_iter()
                .map(|p| (p.payer, p.contract))
                .collect(),
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

    /// A provider (its NPI and display name), cached like the tree.
    pub async fn provider(&self, name: &str) -> ApiResult<Provider> {
        if let Some(provider) = self.providers.get(name) {
            return Ok(provider);
        }
        let provider = self
            .client
            .clone()
            .get_provider(GetProviderRequest { name: name.into() })
            .await
            .map_err(|s| from_org(s, name))?
            .into_inner();
        self.providers.put(name, provider.clone());
        Ok(provider)
    }

    /// A patient (PHI: read fresh each time, never cached).
    pub async fn patient(&self, name: &str) -> ApiResult<Patient> {
        Ok(self
            .client
            .clone()
            .get_patient(GetPatientRequest { name: name.into() })
            .await
            .map_err(|s| from_org(s, name))?
            .into_inner())
    }

    /// A patient's enrollments, with their intake records (PHI: read fresh each time).
    pub async fn enrollments(&self, patient: &str) -> ApiResult<Vec<pm_api::org::Enrollment>> {
        Ok(self.eligibility(patient).await?.enrollments)
    }

    /// A patient's enrollments and coverages, as Org's GetPatientEligibility answers.
    async fn eligibility(&self, patient: &str) -> ApiResult<pm_api::org::PatientEligibility> {
        Ok(self
            .client
            .clone()
            .get_patient_eligibility(GetPatientEligibilityRequest {
                patient: patient.into(),
            })
            .await
            .map_err(|s| from_org(s, patient))?
            .into_inner())
    }

    /// The organization's IANA time zone (cached).
    pub async fn organization_zone(&self, organization: &str) -> ApiResult<String> {
        if let Some(zone) = self.zones.get(organization) {
            return Ok(zone);
        }
        let zone = self
            .client
            .clone()
            .get_organization(pm_api::org::GetOrganizationRequest {
                name: organization.into(),
            })
            .await
            .map_err(|s| from_org(s, organization))?
            .into_inner()
            .time_zone;
        self.zones.put(organization, zone.clone());
        Ok(zone)
    }

    /// A patient's coverages (PHI: read fresh each time).
    pub async fn coverages(&self, patient: &str) -> ApiResult<Vec<Coverage>> {
        Ok(self.eligibility(patient).await?.coverages)
    }

    /// The names of the organization's patients (PHI: read fresh each time), at most
    /// [`MAX_MEMBER_SCAN`]; more is refused rather than read slowly.
    pub async fn patient_names(&self, organization: &str) -> ApiResult<Vec<String>> {
        let mut names = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .client
                .clone()
                .list_patients(ListPatientsRequest {
                    parent: organization.into(),
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .map_err(|s| from_org(s, organization))?
                .into_inner();
            names.extend(page.patients.into_iter().map(|p| p.name));
            if names.len() > MAX_MEMBER_SCAN {
                return Err(ApiError::precondition(
                    "MEMBER_SCAN_TOO_LARGE",
                    format!("more than {MAX_MEMBER_SCAN} patients to look through for members"),
                ));
            }
            if page.next_page_token.is_empty() {
                return Ok(names);
            }
            page_token = page.next_page_token;
        }
    }

    /// The enrollments and coverages of `patients` (PHI: read fresh each time), 100 per call.
    pub async fn eligibilities(
        &self,
        organization: &str,
        patients: &[String],
    ) -> ApiResult<Vec<PatientEligibility>> {
        let mut all = Vec::with_capacity(patients.len());
        for chunk in patients.chunks(100) {
            let answer = self
                .client
                .clone()
                .batch_get_patient_eligibility(BatchGetPatientEligibilityRequest {
                    parent: organization.into(),
                    patients: chunk.to_vec(),
                })
                .await
                .map_err(|s| from_org(s, organization))?
                .into_inner();
            all.extend(answer.eligibilities);
        }
        Ok(all)
    }

    /// Every unit of the organization with its parent ("" for a root).
    pub async fn unit_tree(&self, organization: &str) -> ApiResult<Vec<(String, String)>> {
        Ok(self
            .tree(organization)
            .await?
            .into_iter()
            .map(|u| (u.name, u.parent))
            .collect())
    }

    /// Every unit of the organization with its effective reporting tags (units without any are
    /// left out).
    pub async fn reporting_tags(
        &self,
        organization: &str,
    ) -> ApiResult<std::collections::HashMap<String, Vec<String>>> {
        let tree: Vec<(String, String, Vec<String>)> = self
            .tree(organization)
            .await?
            .into_iter()
            .map(|u| (u.name, u.parent, u.tags))
            .collect();
        Ok(crate::domain::report::effective_tags(&tree))
    }

    async fn tree(&self, organization: &str) -> ApiResult<Vec<TreeUnit>> {
        if let Some(tree) = self.trees.get(organization) {
            return Ok(tree);
        }
        let mut tree = Vec::new();
        let mut page_token = String::new();
        // An organization's tree is read whole; 50 pages of 1000 is far beyond any real one.
        for _ in 0..50 {
            let page = self
                .client
                .clone()
                .list_service_units(ListServiceUnitsRequest {
                    parent: organization.into(),
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .map_err(|s| from_org(s, organization))?
                .into_inner();
            tree.extend(page.service_units.into_iter().map(|u| {
                TreeUnit {
                    kind: UnitKind::try_from(u.kind).unwrap_or(UnitKind::Unspecified),
                    tags: u
                        .workflow_rules
                        .map(|w| w.reporting_tags)
                        .unwrap_or_default(),
                    name: u.name,
                    parent: u.parent_unit,
                }
            }));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        self.trees.put(organization, tree.clone());
        Ok(tree)
    }
}

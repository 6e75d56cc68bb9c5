//! Org asks Billing whether the billing entities, payers, contracts and fee schedules a unit's
//! billing profile names exist, before writing the unit. Billing owns those resources; Org keeps
//! only their names, in the full form (`organizations/{o}/payers/{p}`).

use pm_api::billing::billing_service_client::BillingServiceClient;
use pm_api::billing::{
    GetBillingEntityRequest, GetContractRequest, GetFeeScheduleRequest, GetPayerRequest,
};
use pm_api::org::BillingProfile;
use pm_runtime::{ApiError, ApiResult};
use tonic::Code;
use tonic::transport::Channel;

use crate::domain::{self, BillingCollection};

/// Billing, as Org asks it (with Org's certificate).
#[derive(Clone)]
pub struct BillingRefs {
    client: BillingServiceClient<Channel>,
}

impl BillingRefs {
    /// Billing at the other end of `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: BillingServiceClient::new(channel),
        }
    }

    /// `profile` with its references in full form, once Billing knows each of them (not deleted).
    /// A name Billing does not know: INVALID_ARGUMENT `UNKNOWN_REFERENCE` naming the field
    /// (`prefix.billing_profile...`); Billing unreachable: UNAVAILABLE. Nothing is written either way.
    pub async fn checked(
        &self,
        organization: &str,
        prefix: &str,
        mut profile: BillingProfile,
    ) -> ApiResult<BillingProfile> {
        domain::validate_billing_profile(prefix, &profile, organization)?;
        domain::qualify_billing_profile(organization, &mut profile);
        let mut asked: Vec<String> = Vec::new();
        for (field, collection, name) in domain::billing_references(&profile) {
            if asked.contains(&name) {
                continue;
            }
            if !self.exists(collection, &name).await? {
                return Err(ApiError::invalid(
                    format!("{prefix}.{field}"),
                    format!("names a {} that Billing does not know", noun(collection)),
                )
                .because("UNKNOWN_REFERENCE"));
            }
            asked.push(name);
        }
        Ok(profile)
    }

    /// Whether Billing holds `name`, not deleted.
    async fn exists(&self, collection: BillingCollection, name: &str) -> ApiResult<bool> {
        let mut client = self.client.clone();
        let name = name.to_string();
        let deleted = match collection {
            BillingCollection::Entities => client
                .get_billing_entity(GetBillingEntityRequest { name })
                .await
                .map(|r| r.into_inner().delete_time.is_some()),
            BillingCollection::Payers => client
                .get_payer(GetPayerRequest { name })
                .await
                .map(|r| r.into_inner().delete_time.is_some()),
            BillingCollection::Contracts => client
                .get_contract(GetContractRequest { name })
                .await
                .map(|r| r.into_inner().delete_time.is_some()),
            BillingCollection::FeeSchedules => client
                .get_fee_schedule(GetFeeScheduleRequest { name })
                .await
                .map(|r| r.into_inner().delete_time.is_some()),
        };
        match deleted {
            Ok(deleted) => Ok(!deleted),
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                Ok(false)
            }
            Err(status) => Err(ApiError::peer_unavailable("billing", &status.message())),
        }
    }
}

fn noun(collection: BillingCollection) -> &'static str {
    match collection {
        BillingCollection::Entities => "billing entity",
        BillingCollection::FeeSchedules => "fee schedule",
        BillingCollection::Payers => "payer",
        BillingCollection::Contracts => "contract",
    }
}

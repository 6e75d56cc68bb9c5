//! `pm billing`: the billing office's files through a running mesh. `export-837` writes the READY
//! claims' 837P batches into a folder; `import-835` posts a remittance file. Both call Billing's
//! API (ExportClaims, ImportRemittance) with a bearer token, so they are authorized and audited like
//! any other caller.

use std::path::Path;

use pm_api::billing::billing_service_client::BillingServiceClient;
use pm_api::billing::{ExportClaimsRequest, ImportRemittanceRequest};
use pm_runtime::client;
use tonic::transport::Channel;

/// Billing through `channel`, as the bearer of `token`.
pub type Billing = BillingServiceClient<client::AuthedChannel>;

/// A Billing client over `channel` carrying `token`.
pub fn client(channel: Channel, token: &str) -> anyhow::Result<Billing> {
    Ok(BillingServiceClient::new(
        tonic::service::interceptor::InterceptedService::new(channel, client::Bearer::new(token)?),
    ))
}

fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

/// Exports every READY claim (of `billing_entity`, when given) and writes each batch into `out`,
/// each file first to a temporary name and then renamed, so a reader never sees half a file.
pub async fn export_837(
    mut billing: Billing,
    organization: &str,
    billing_entity: Option<String>,
    out: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let response = billing
        .export_claims(ExportClaimsRequest {
            parent: organization.into(),
            billing_entity: billing_entity.unwrap_or_default(),
            claim_names: Vec::new(),
            request_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    if response.batches.is_empty() {
        println!("no READY claims to export");
    }
    for batch in response.batches {
        let path = out.join(&batch.file_name);
        let partial = out.join(format!(".{}.partial", batch.file_name));
        std::fs::write(&partial, &batch.content)?;
        std::fs::rename(&partial, &path)?;
        println!(
            "{}: {} claim(s) of {} (interchange {})",
            path.display(),
            batch.claim_count,
            batch.billing_entity,
            batch.interchange_control_number
        );
    }
    Ok(())
}

/// Posts the 835 in `file` and prints what it did to each claim.
pub async fn import_835(
    mut billing: Billing,
    organization: &str,
    file: &Path,
) -> anyhow::Result<()> {
    let content = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let response = billing
        .import_remittance(ImportRemittanceRequest {
            parent: organization.into(),
            content,
        })
        .await
        .map_err(refused)?
        .into_inner();
    if response.already_imported {
        println!(
            "remittance {} was imported before: nothing posted",
            response.trace_number
        );
        return Ok(());
    }
    println!(
        "remittance {}: {} cents paid",
        response.trace_number, response.total_paid_cents
    );
    for claim in response.claims {
        println!(
            "  {}: paid {} cents, adjusted {} cents, patient owes {} cents",
            claim.claim, claim.paid_cents, claim.adjusted_cents, claim.patient_responsibility_cents
        );
    }
    for unmatched in response.unmatched {
        println!(
            "  unmatched claim number {}: {} cents ({})",
            unmatched.claim_number, unmatched.paid_cents, unmatched.reason
        );
    }
    Ok(())
}

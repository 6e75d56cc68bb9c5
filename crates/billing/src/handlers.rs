//! The gRPC surface of the Billing service: decode, authorize (the shared layer has placed every
//! name the request carries; configuration writes need an organization-wide role), call the domain
//! and the store, encode. Charges are PHI: their calls are audited.

use std::sync::Arc;

use pm_api::billing::billing_service_server::BillingService;
use pm_api::billing::*;
use pm_authz::layer::Call;
use pm_authz::phi::{Audited, PhiAudit};
use pm_runtime::docstore::{self, Kind};
use pm_runtime::grpc::{Reply, required};
use pm_runtime::idempotency::Idempotent;
use pm_runtime::names::patterns::{
    ORGANIZATION as ORGANIZATION_NAME, PATIENT as PATIENT_NAME, PROVIDER as PROVIDER_NAME,
    UNIT as UNIT_NAME,
};
use pm_runtime::{ApiError, ApiResult, Db, create_call, list_call, names};
use tonic::Request;

use crate::access;
use crate::care::{self, CareTime};
use crate::charges::{self, ChargeQuery, ChargeRow};
use crate::charging::{Charging, Context};
use crate::claim_store::{self, StoredClaim};
use crate::claim_wire;
use crate::claiming::Claims;
use crate::domain::charge::{self, Line};
use crate::domain::claims::Amendment;
use crate::domain::invalid::Invalid;
use crate::domain::invoice::{Month, State as InvoiceStateKind};
use crate::domain::money::Cents;
use crate::domain::pricing::{Candidate, Level, Outcome};
use crate::domain::report::{self, Aging, Amounts};
use crate::domain::{fee_csv, validate};
use crate::invoice_store::{self, InvoiceQuery, StoredInvoice};
use crate::invoicing::{self, INVOICE_NAME, Invoicing};
use crate::reports::{self, CellFilter, Dimension, Summary};
use crate::repricing;
use crate::store::{
    self, BILLING_ENTITY, CONTRACT, FEE_SCHEDULE, FEE_SCHEDULE_VERSION, PAYER, ROUTING_RULE,
};

/// The ErrorInfo domain of this service's errors.
pub const DOMAIN: &str = "billing.pm.dev";

/// The largest CSV a version is created from.
const MAX_CSV_BYTES: usize = 2 * 1024 * 1024;

fn reply<T>(result: ApiResult<T>) -> Reply<T> {
    pm_runtime::grpc::reply(result, DOMAIN)
}

/// A validation failure as the API answers it: INVALID_ARGUMENT naming the field, with the reason
/// (FAILED_PRECONDITION for the overlap of two versions, which depends on what is stored).
pub fn refusal(invalid: Invalid) -> ApiError {
    if invalid.reason == "FEE_SCHEDULE_VERSIONS_OVERLAP" {
        return ApiError::precondition(invalid.reason, invalid.message);
    }
    ApiError::invalid(invalid.field, invalid.message).because(invalid.reason)
}

/// The Billing service.
pub struct BillingApi {
    db: Db,
    charging: Arc<Charging>,
    claims: Arc<Claims>,
    care: CareTime,
    invoicing: Invoicing,
    phi: PhiAudit,
}

impl BillingApi {
    /// The service over its slice, making charges through `charging`, auditing PHI through `phi`.
    pub fn new(db: Db, charging: Arc<Charging>, claims: Arc<Claims>, phi: PhiAudit) -> Self {
        Self {
            care: CareTime::new(db.clone(), charging.clone()),
            invoicing: Invoicing::new(db.clone(), charging.shared_org()),
            db,
            charging,
            claims,
            phi,
        }
    }

    /// A claim the caller may see (in its unit), or NOT_FOUND exactly as for one that does not
    /// exist.
    async fn visible_claim(&self, rpc: Call<'_>, name: &str) -> ApiResult<StoredClaim> {
        let claim = self.claims.get(name).await?;
        access::in_unit(
            self.charging.org(),
            rpc.caller,
            rpc.permission,
            name,
            &claim.unit,
        )
        .await
        .map_err(|_| ApiError::not_found(name))?;
        Ok(claim)
    }

    /// An invoice the caller may see (every unit it covers in the caller's scope), or NOT_FOUND
    /// exactly as for one that does not exist. `field` names the request field.
    async fn visible_invoice(
        &self,
        rpc: Call<'_>,
        field: &str,
        name: &str,
    ) -> ApiResult<StoredInvoice> {
        INVOICE_NAME.parse(field, name)?;
        let invoice = self.invoicing.get(name).await?;
        access::in_every_unit(
            self.charging.org(),
            rpc.caller,
            rpc.permission,
            name,
            &invoice.units,
        )
        .await?;
        Ok(invoice)
    }

    async fn create_invoices(
        &self,
        rpc: Call<'_>,
        req: CreateInvoicesRequest,
    ) -> ApiResult<CreateInvoicesResponse> {
        ORGANIZATION_NAME.parse("parent", &req.parent)?;
        let month = Month::parse("month", &req.month).map_err(refusal)?;
        if req.request_id.is_empty() {
            return Err(
                ApiError::invalid("request_id", "is required: a month is invoiced once")
                    .because("FIELD_REQUIRED"),
            );
        }
        let idempotent = Idempotent::new(rpc.method, &req.request_id, &req)?;
        let contracts = if req.contract.is_empty() {
            access::organization_wide(rpc.caller, rpc.permission, &req.parent)?;
            self.invoicing.contracts(&req.parent).await?
        } else {
            CONTRACT.pattern.parse("contract", &req.contract)?;
            let unknown = || ApiError::not_found(&req.contract).with_meta("field", "contract");
            if names::organization_of(&req.contract) != req.parent {
                return Err(unknown());
            }
            let contract = self
                .invoicing
                .contracts(&req.parent)
                .await?
                .into_iter()
                .find(|c| c.name == req.contract)
                .ok_or_else(unknown)?;
            access::in_every_unit(
                self.charging.org(),
                rpc.caller,
                rpc.permission,
                &req.contract,
                &contract.units,
            )
            .await
            .map_err(|e| e.with_meta("field", "contract"))?;
            vec![contract]
        };
        let prepared = self
            .invoicing
            .prepare(&req.parent, month, &contracts, !req.contract.is_empty())
            .await?;
        idempotent
            .once(&self.db, &req.parent, async |conn| {
                let made = self
                    .invoicing
                    .write(conn, &req.parent, month, &prepared)
                    .await?;
                Ok(CreateInvoicesResponse {
                    invoices: made.iter().map(invoicing::wire).collect(),
                })
            })
            .await
    }

    async fn list_invoices(
        &self,
        rpc: Call<'_>,
        req: ListInvoicesRequest,
    ) -> ApiResult<ListInvoicesResponse> {
        ORGANIZATION_NAME.parse("parent", &req.parent)?;
        if !req.contract.is_empty() {
            CONTRACT.pattern.parse("contract", &req.contract)?;
        }
        if !req.month.is_empty() {
            Month::parse("month", &req.month).map_err(refusal)?;
        }
        let state = match InvoiceState::try_from(req.state) {
            Ok(InvoiceState::Unspecified) => None,
            Ok(InvoiceState::Open) => Some(InvoiceStateKind::Open),
            Ok(InvoiceState::PartiallyPaid) => Some(InvoiceStateKind::PartiallyPaid),
            Ok(InvoiceState::Paid) => Some(InvoiceStateKind::Paid),
            Err(_) => return Err(ApiError::invalid("state", "not an invoice state")),
        };
        let units =
            access::visible_units(self.charging.org(), rpc.caller, rpc.permission, &req.parent)
                .await?;
        let mut conn = self.db.read().await?;
        let visible_contracts: Option<Vec<String>> = match units {
            None => None,
            Some(units) => Some(
                invoice_store::contract_units(&mut conn, &req.parent)
                    .await?
                    .into_iter()
                    .filter(|(_, covered)| {
                        !covered.is_empty() && covered.iter().all(|u| units.contains(u))
                    })
                    .map(|(contract, _)| contract)
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            ),
        };
        let query = InvoiceQuery {
            organization: &req.parent,
            contract: &req.contract,
            state,
            month: &req.month,
            visible_contracts: visible_contracts.as_deref(),
        };
        let (names, next_page_token) =
            invoice_store::list(&mut conn, &query, req.page_size, &req.page_token).await?;
        let mut invoices = Vec::with_capacity(names.len());
        for name in names {
            if let Some(invoice) = invoice_store::get(&mut conn, &name).await? {
                invoices.push(invoicing::wire(&invoice));
            }
        }
        Ok(ListInvoicesResponse {
            invoices,
            next_page_token,
        })
    }

    async fn post_invoice_payment(
        &self,
        rpc: Call<'_>,
        req: PostInvoicePaymentRequest,
    ) -> ApiResult<PostInvoicePaymentResponse> {
        INVOICE_NAME.parse("invoice", &req.invoice)?;
        if req.amount_cents <= 0 {
            return Err(ApiError::invalid("amount_cents", "a payment is above zero")
                .because("PAYMENT_NOT_POSITIVE"));
        }
        let reference = req.reference.trim();
        if reference.is_empty() {
            return Err(ApiError::invalid(
                "reference",
                "is required: the payer's check or transfer number",
            )
            .because("FIELD_REQUIRED"));
        }
        if reference.chars().count() > 80 || reference.chars().any(char::is_control) {
            return Err(
                ApiError::invalid("reference", "1 to 80 printable characters")
                    .because("FIELD_TOO_LONG"),
            );
        }
        if req.request_id.is_empty() {
            return Err(
                ApiError::invalid("request_id", "is required: a payment is posted once")
                    .because("FIELD_REQUIRED"),
            );
        }
        let idempotent = Idempotent::new(rpc.method, &req.request_id, &req)?;
        self.visible_invoice(rpc, "invoice", &req.invoice).await?;
        idempotent
            .once(
                &self.db,
                names::organization_of(&req.invoice),
                async |conn| {
                    let (invoice, entries) =
                        invoicing::pay(conn, &req.invoice, Cents::new(req.amount_cents), reference)
                            .await?;
                    Ok(PostInvoicePaymentResponse {
                        invoice: Some(invoicing::wire(&invoice)),
                        entries,
                    })
                },
            )
            .await
    }

    async fn reprice(
        &self,
        rpc: Call<'_>,
        req: RepriceChargesRequest,
    ) -> ApiResult<RepriceChargesResponse> {
        ORGANIZATION_NAME.parse("parent", &req.parent)?;
        access::organization_wide(rpc.caller, rpc.permission, &req.parent)?;
        if !req.unit.is_empty() {
            UNIT_NAME.parse("unit", &req.unit)?;
        }
        if req.apply && req.request_id.is_empty() {
            return Err(ApiError::invalid(
                "request_id",
                "is required to apply: a reprice is applied once",
            )
            .because("FIELD_REQUIRED"));
        }
        let idempotent = Idempotent::new(rpc.method, &req.request_id, &req)?;
        let found = repricing::find(&self.db, &self.charging, &req.parent, &req.unit).await?;
        let answer = |applied: bool| RepriceChargesResponse {
            changes: found
                .changes
                .iter()
                .map(|c| repricing::wire(c, applied))
                .collect(),
            examined: i32::try_from(found.examined).unwrap_or(i32::MAX),
            delta_cents: found
                .changes
                .iter()
                .map(|c| c.new.amount.cents() - c.old.amount.cents())
                .sum(),
            applied,
            more: found.more,
        };
        if !req.apply {
            return Ok(answer(false));
        }
        idempotent
            .once(&self.db, &req.parent, async |conn| {
                repricing::apply(conn, &found.changes).await?;
                Ok(answer(true))
            })
            .await
    }

    async fn export(
        &self,
        rpc: Call<'_>,
        req: ExportClaimsRequest,
    ) -> ApiResult<ExportClaimsResponse> {
        ORGANIZATION_NAME.parse("parent", &req.parent)?;
        access::organization_wide(rpc.caller, rpc.permission, &req.parent)?;
        if req.request_id.is_empty() {
            return Err(
                ApiError::invalid("request_id", "is required: a batch is exported once")
                    .because("FIELD_REQUIRED"),
            );
        }
        if !req.billing_entity.is_empty() {
            BILLING_ENTITY
                .pattern
                .parse("billing_entity", &req.billing_entity)?;
        }
        for (i, name) in req.claim_names.iter().enumerate() {
            if names::organization_of(name) != req.parent || !name.contains("/claims/") {
                return Err(ApiError::invalid(
                    format!("claim_names[{i}]"),
                    "is not a claim of the parent organization",
                )
                .because("RESOURCE_NAME_INVALID"));
            }
        }
        let idempotent = Idempotent::new(rpc.method, &req.request_id, &req)?;
        let groups = self
            .claims
            .prepare_export(&req.parent, &req.billing_entity, &req.claim_names)
            .await?;
        idempotent
            .once(&self.db, &req.parent, async |conn| {
                let batches = self.claims.write_export(conn, &req.parent, &groups).await?;
                Ok(ExportClaimsResponse { batches })
            })
            .await
    }

    /// CorrectClaim and VoidClaim: the claim in the caller's units, a retry answered from the
    /// first call, the amendment prepared (refusals write nothing) and written in one transaction.
    #[allow(clippy::too_many_arguments)]
    async fn amend<Q: prost::Message, R: prost::Message + Default>(
        &self,
        rpc: Call<'_>,
        request: &Q,
        claim: &str,
        request_id: &str,
        amendment: Amendment,
        why: &str,
        answer: impl Fn(StoredClaim, StoredClaim) -> R,
    ) -> ApiResult<R> {
        // Authorized first: an unknown or out-of-scope claim answers NOT_FOUND whatever the rest.
        let original = self.visible_claim(rpc, claim).await?;
        if amendment == Amendment::Void {
            if why.is_empty() || why.chars().count() > 200 {
                return Err(
                    ApiError::invalid("reason", "1 to 200 characters").because("FIELD_REQUIRED")
                );
            }
            if why.chars().any(char::is_control) {
                return Err(
                    ApiError::invalid("reason", "holds control characters").because("TEXT_INVALID")
                );
            }
        }
        if request_id.is_empty() {
            return Err(ApiError::invalid(
                "request_id",
                "is required: a claim is corrected or voided once",
            )
            .because("FIELD_REQUIRED"));
        }
        let idempotent = Idempotent::new(rpc.method, request_id, request)?;
        {
            let mut conn = self.db.read().await?;
            if let Some(previous) = pm_runtime::idempotency::replay::<R>(
                &mut conn,
                rpc.method,
                request_id,
                &idempotent.hash,
            )
            .await?
            {
                return Ok(previous);
            }
        }
        let (made, original_to) = self
            .claims
            .prepare_amendment(&original, amendment, request_id)
            .await?;
        idempotent
            .once(&self.db, names::organization_of(claim), async |conn| {
                let (original, made) = self
                    .claims
                    .write_amendment(conn, &original, original_to, &made, why)
                    .await?;
                self.phi
                    .record_write(
                        conn,
                        rpc.caller,
                        rpc.method,
                        &made.name,
                        vec![made.patient.clone()],
                    )
                    .await?;
                Ok(answer(original, made))
            })
            .await
    }

    /// Creates a configuration resource under the organization `parent` (organization-wide roles).
    async fn create<T: pm_api::Resource>(
        &self,
        rpc: Call<'_>,
        kind: &Kind<T>,
        call: docstore::CreateCall<'_>,
        resource: T,
        check: impl AsyncFnOnce(&mut sqlx::AnyConnection, &mut T) -> ApiResult<()>,
    ) -> ApiResult<T> {
        ORGANIZATION_NAME.parse("parent", call.parent)?;
        access::organization_wide(rpc.caller, rpc.permission, call.parent)?;
        docstore::create(&self.db, kind, call, resource, check).await
    }

    async fn get<T: pm_api::Resource>(&self, kind: &Kind<T>, name: &str) -> ApiResult<T> {
        kind.pattern.parse("name", name)?;
        docstore::get_by_name(&self.db, kind, name).await
    }

    async fn list<T: pm_api::Resource>(
        &self,
        kind: &Kind<T>,
        call: docstore::ListCall<'_>,
    ) -> ApiResult<docstore::Page<T>> {
        ORGANIZATION_NAME.parse("parent", call.parent)?;
        docstore::list(&self.db, kind, call).await
    }

    async fn delete<T: pm_api::Resource>(
        &self,
        rpc: Call<'_>,
        kind: &Kind<T>,
        name: &str,
        etag: &str,
        after: impl AsyncFnOnce(&mut sqlx::AnyConnection, &T) -> ApiResult<()>,
    ) -> ApiResult<T> {
        kind.pattern.parse("name", name)?;
        access::organization_wide(rpc.caller, rpc.permission, name)?;
        docstore::soft_delete(&self.db, kind, name, etag, after).await
    }

    async fn update<T: pm_api::Resource>(
        &self,
        rpc: Call<'_>,
        kind: &Kind<T>,
        patch: Option<T>,
        mask: Option<&prost_types::FieldMask>,
        check: impl AsyncFnOnce(&mut T) -> ApiResult<()>,
    ) -> ApiResult<T> {
        let name = patch
            .as_ref()
            .map(|p| p.name().to_string())
            .unwrap_or_default();
        access::organization_wide(rpc.caller, rpc.permission, &name)?;
        docstore::update(&self.db, kind, patch, mask, async |_, _, merged| {
            check(merged).await
        })
        .await
    }

    /// Refuses unless every named resource exists live in this slice (`field` names the request
    /// field), answering as the layer does for a name out of reach.
    async fn check_exists(
        &self,
        conn: &mut sqlx::AnyConnection,
        field: &str,
        name: &str,
    ) -> ApiResult<()> {
        if store::exists(conn, name).await? {
            Ok(())
        } else {
            Err(ApiError::not_found(name).with_meta("field", field.to_string()))
        }
    }

    /// A charge the caller may see (in its unit), or NOT_FOUND exactly as for one that does not
    /// exist.
    async fn visible_charge(&self, rpc: Call<'_>, name: &str) -> ApiResult<ChargeRow> {
        let charge = {
            let mut conn = self.db.read().await?;
            charges::get(&mut conn, name).await?
        };
        let charge = charge.ok_or_else(|| ApiError::not_found(name))?;
        access::in_unit(
            self.charging.org(),
            rpc.caller,
            rpc.permission,
            name,
            &charge.unit,
        )
        .await
        .map_err(|_| ApiError::not_found(name))?;
        Ok(charge)
    }

    async fn create_version(
        &self,
        rpc: Call<'_>,
        req: CreateFeeScheduleVersionRequest,
    ) -> ApiResult<FeeScheduleVersion> {
        FEE_SCHEDULE.pattern.parse("parent", &req.parent)?;
        access::organization_wide(rpc.caller, rpc.permission, &req.parent)?;
        let mut version = required(req.fee_schedule_version.clone(), "fee_schedule_version")?;
        if !req.csv.is_empty() {
            if req.csv.len() > MAX_CSV_BYTES {
                return Err(ApiError::invalid("csv", "at most 2 MiB").because("FEE_CSV_TOO_LARGE"));
            }
            if !version.entries.is_empty() {
                return Err(ApiError::invalid(
                    "csv",
                    "give the entries either as fee_schedule_version.entries or as csv, not both",
                )
                .because("FEE_ENTRIES_TWICE"));
            }
            let entries = fee_csv::parse(&req.csv).map_err(|errors| {
                let mut err = ApiError::invalid_fields(
                    errors
                        .iter()
                        .map(|e| {
                            (
                                format!("csv {}", e.field),
                                format!("{} ({})", e.message, e.reason),
                            )
                        })
                        .collect(),
                );
                err.reason = errors
                    .first()
                    .map(|e| e.reason)
                    .unwrap_or("FEE_CSV_ROW_INVALID");
                err
            })?;
            version.entries = entries.iter().map(validate::wire_entry).collect();
        }
        let (from, until, _) = validate::version(&version).map_err(refusal)?;
        let schedule = self.get(&FEE_SCHEDULE, &req.parent).await?;
        let organization = names::organization_of(&req.parent).to_string();
        let (_, scope_key) = validate::scope(&organization, &schedule).map_err(refusal)?;
        let call = create_call!(req, rpc.method, &req.parent, fee_schedule_version_id);
        docstore::create_then(
            &self.db,
            &FEE_SCHEDULE_VERSION,
            call,
            version,
            async |_, _| Ok(()),
            async |conn, stored| {
                store::claim_period(conn, &stored.name, &scope_key, from, until).await
            },
        )
        .await
    }

    /// The units a report by `rpc`'s caller covers: its visible units, narrowed to `unit` (with its
    /// subtree when `subtree`) when one is named. `None`: every unit of the organization.
    async fn report_units(
        &self,
        rpc: Call<'_>,
        organization: &str,
        unit: &str,
        subtree: bool,
    ) -> ApiResult<Option<Vec<String>>> {
        let visible = access::visible_units(
            self.charging.org(),
            rpc.caller,
            rpc.permission,
            organization,
        )
        .await?;
        if unit.is_empty() {
            return Ok(visible);
        }
        UNIT_NAME.parse("unit", unit)?;
        let mut chosen = vec![unit.to_string()];
        if subtree {
            let tree = self.charging.org().unit_tree(organization).await?;
            let mut i = 0;
            while let Some(parent) = chosen.get(i).cloned() {
                chosen.extend(
                    tree.iter()
                        .filter(|(_, p)| *p == parent)
                        .map(|(u, _)| u.clone()),
                );
                i += 1;
            }
        }
        Ok(Some(match visible {
            None => chosen,
            Some(visible) => chosen.into_iter().filter(|u| visible.contains(u)).collect(),
        }))
    }

    async fn report(
        &self,
        rpc: Call<'_>,
        req: ReportRevenueRequest,
    ) -> ApiResult<ReportRevenueResponse> {
        ORGANIZATION_NAME.parse("parent", &req.parent)?;
        check_month("from_month", &req.from_month)?;
        check_month("until_month", &req.until_month)?;
        let mut asked = Vec::new();
        for (i, value) in req.group_by.iter().enumerate() {
            let d = dimension(*value, &format!("group_by[{i}]"))?;
            if asked.contains(&d) {
                return Err(ApiError::invalid(format!("group_by[{i}]"), "named twice"));
            }
            asked.push(d);
        }
        let (group_by, key_parts) = stored_dimensions(&asked);
        if req.roll_up_units && asked != [Asked::Stored(Dimension::Unit)] {
            return Err(ApiError::invalid(
                "roll_up_units",
                "rolls up the unit dimension alone: group_by must be [REVENUE_DIMENSION_UNIT]",
            ));
        }
        let units = self
            .report_units(rpc, &req.parent, &req.unit, !req.unit.is_empty())
            .await?;
        let summary = Summary {
            organization: &req.parent,
            group_by: &group_by,
            from_month: &req.from_month,
            until_month: &req.until_month,
            units: units.as_deref(),
        };
        let cells = {
            let mut conn = self.db.read().await?;
            reports::summarize(&mut conn, &summary).await?
        };
        let mut total = Amounts::default();
        for cell in &cells {
            total += cell.amounts;
        }
        let tags = if asked.contains(&Asked::ReportingTag) {
            self.charging.org().reporting_tags(&req.parent).await?
        } else {
            Default::default()
        };
        let rows = if req.roll_up_units {
            let tree = self.charging.org().unit_tree(&req.parent).await?;
            let own: std::collections::HashMap<String, Amounts> = cells
                .into_iter()
                .filter_map(|c| Some((c.key.into_iter().next()?, c.amounts)))
                .collect();
            crate::domain::report::subtree_totals(&own, &tree)
                .into_iter()
                .filter(|(unit, _)| units.as_ref().is_none_or(|u| u.contains(unit)))
                .map(|(unit, amounts)| RevenueRow {
                    key: vec![unit],
                    amounts: Some(wire_amounts(&amounts)),
                })
                .collect()
        } else {
            let cells: Vec<(Vec<String>, Amounts)> =
                cells.into_iter().map(|c| (c.key, c.amounts)).collect();
            report::regroup(&cells, &key_parts, &tags)
                .into_iter()
                .map(|(key, amounts)| RevenueRow {
                    key,
                    amounts: Some(wire_amounts(&amounts)),
                })
                .collect()
        };
        Ok(ReportRevenueResponse {
            rows,
            total: Some(wire_amounts(&total)),
        })
    }

    async fn aging(
        &self,
        rpc: Call<'_>,
        req: ReportAgingRequest,
    ) -> ApiResult<ReportAgingResponse> {
        ORGANIZATION_NAME.parse("parent", &req.parent)?;
        let basis = match AgingBasis::try_from(req.basis).unwrap_or(AgingBasis::Unspecified) {
            AgingBasis::Submission => reports::AgingBasis::Submission,
            AgingBasis::ServiceDate | AgingBasis::Unspecified => reports::AgingBasis::ServiceDate,
        };
        let as_of = match req.as_of.as_ref() {
            Some(_) => validate::date("as_of", req.as_of.as_ref()).map_err(refusal)?,
            None => chrono::Utc::now().date_naive(),
        };
        let units = self
            .report_units(rpc, &req.parent, &req.unit, !req.unit.is_empty())
            .await?;
        let rows = {
            let mut conn = self.db.read().await?;
            reports::aging(&mut conn, &req.parent, basis, as_of, units.as_deref()).await?
        };
        let wire = |entity: String, payer: String, a: &Aging| AgingRow {
            billing_entity: entity,
            payer,
            days_0_30_cents: a.buckets[0].cents(),
            days_31_60_cents: a.buckets[1].cents(),
            days_61_90_cents: a.buckets[2].cents(),
            days_91_120_cents: a.buckets[3].cents(),
            over_120_cents: a.buckets[4].cents(),
            unbilled_cents: a.unbilled.cents(),
            total_cents: a.total().cents(),
        };
        let mut total = Aging::default();
        for (_, aging) in &rows {
            total += *aging;
        }
        Ok(ReportAgingResponse {
            rows: rows
                .into_iter()
                .map(|((entity, payer), aging)| wire(entity, payer, &aging))
                .collect(),
            total: Some(wire(String::new(), String::new(), &total)),
        })
    }

    async fn revenue_lines(
        &self,
        rpc: Call<'_>,
        req: ListRevenueLinesRequest,
    ) -> ApiResult<ListRevenueLinesResponse> {
        ORGANIZATION_NAME.parse("parent", &req.parent)?;
        check_month("month", &req.month)?;
        let mut units = self
            .report_units(rpc, &req.parent, &req.unit, req.include_subtree)
            .await?;
        let mut except_units = Vec::new();
        if req.reporting_tag.chars().count() > 200 {
            return Err(ApiError::invalid(
                "reporting_tag",
                "a reporting tag is at most 200 characters",
            ));
        }
        if !req.reporting_tag.is_empty() {
            let tags = self.charging.org().reporting_tags(&req.parent).await?;
            let mut tagged: Vec<String> = tags
                .iter()
                .filter(|(_, t)| req.reporting_tag == "-" || t.contains(&req.reporting_tag))
                .map(|(unit, _)| unit.clone())
                .collect();
            tagged.sort();
            if req.reporting_tag == "-" {
                except_units = tagged;
            } else {
                units = Some(match units {
                    None => tagged,
                    Some(chosen) => tagged.into_iter().filter(|u| chosen.contains(u)).collect(),
                });
            }
        }
        let set = |v: &str| Some(v.to_string()).filter(|v| !v.is_empty());
        let payer = set(&req.payer).map(|p| if p == "-" { String::new() } else { p });
        let (billing_entity, provider, code, month) = (
            set(&req.billing_entity),
            set(&req.provider),
            set(&req.code),
            set(&req.month),
        );
        let cell = CellFilter {
            organization: &req.parent,
            units: units.as_deref(),
            except_units: &except_units,
            payer: payer.as_deref(),
            billing_entity: billing_entity.as_deref(),
            provider: provider.as_deref(),
            code: code.as_deref(),
            month: month.as_deref(),
        };
        let mut conn = self.db.read().await?;
        let (lines, next_page_token) =
            reports::lines(&mut conn, &cell, req.page_size, &req.page_token).await?;
        Ok(ListRevenueLinesResponse {
            lines: lines
                .iter()
                .map(|l| RevenueLine {
                    charge: Some(charges::wire(&l.charge)),
                    amounts: Some(wire_amounts(&l.amounts)),
                })
                .collect(),
            next_page_token,
        })
    }

    async fn explain(&self, req: ExplainPriceRequest) -> ApiResult<ExplainPriceResponse> {
        UNIT_NAME.parse("unit", &req.unit)?;
        let service_date =
            validate::date("service_date", req.service_date.as_ref()).map_err(refusal)?;
        let line = Line {
            code: req.code.clone(),
            modifiers: req.modifiers.clone(),
            units: 1,
            diagnoses: Vec::new(),
            place_of_service: String::new(),
        };
        crate::domain::codes::ProcedureCode::parse("code", &line.code).map_err(refusal)?;
        crate::domain::codes::Modifier::parse_modifiers("modifiers", &line.modifiers)
            .map_err(refusal)?;
        let organization = names::organization_of(&req.unit);
        let context = Context {
            patient: String::new(),
            unit: req.unit.clone(),
            provider: String::new(),
            payer: charge::qualified(organization, &req.payer),
            service_date,
        };
        let schedules = self.charging.fee_schedules(organization).await?;
        let explained = self.charging.explain(&schedules, &context, &line).await?;
        let (priced, amount, version, trace) = match explained.price {
            Ok(price) => (true, price.amount.cents(), price.version, price.trace),
            Err(unpriced) => (false, 0, String::new(), unpriced.trace),
        };
        Ok(ExplainPriceResponse {
            priced,
            amount_cents: amount,
            fee_schedule_version: version,
            contract: explained.contract,
            candidates: trace.iter().map(candidate).collect(),
        })
    }

    async fn create_charge(&self, rpc: Call<'_>, req: CreateChargeRequest) -> ApiResult<Charge> {
        ORGANIZATION_NAME.parse("parent", &req.parent)?;
        if req.request_id.is_empty() {
            return Err(
                ApiError::invalid("request_id", "is required: a charge is entered once")
                    .because("FIELD_REQUIRED"),
            );
        }
        let idempotent = Idempotent::new(rpc.method, &req.request_id, &req)?;
        let input = required(req.charge.clone(), "charge")?;
        UNIT_NAME.parse("charge.unit", &input.unit)?;
        if names::organization_of(&input.unit) != req.parent {
            return Err(ApiError::invalid(
                "charge.unit",
                "is not a unit of the parent organization",
            ));
        }
        for (field, value) in [
            ("charge.patient", &input.patient),
            ("charge.provider", &input.provider),
        ] {
            if value.is_empty() {
                return Err(ApiError::invalid(field, "is required").because("FIELD_REQUIRED"));
            }
        }
        let line = line_of(&input);
        charge::check_line("charge", &line).map_err(refusal)?;
        let context = Context {
            patient: input.patient.clone(),
            unit: input.unit.clone(),
            provider: input.provider.clone(),
            payer: charge::qualified(&req.parent, &input.payer),
            service_date: validate::date("charge.service_date", input.service_date.as_ref())
                .map_err(refusal)?,
        };
        let name = manual_charge_name(&req.parent, &req.request_id);
        let schedules = self.charging.fee_schedules(&req.parent).await?;
        let row = self
            .charging
            .charge(&schedules, name, ChargeSource::Manual, &context, &line)
            .await?;
        idempotent
            .once(&self.db, &req.parent, async |conn| {
                charges::insert(conn, &row).await?;
                Ok(charges::wire(&row))
            })
            .await
    }

    async fn correct_charge(
        &self,
        rpc: Call<'_>,
        req: CorrectChargeRequest,
    ) -> ApiResult<CorrectChargeResponse> {
        let reason = req.reason.trim();
        if reason.is_empty() || reason.chars().count() > 200 {
            return Err(
                ApiError::invalid("reason", "1 to 200 characters").because("FIELD_REQUIRED")
            );
        }
        if req.request_id.is_empty() {
            return Err(
                ApiError::invalid("request_id", "is required: a correction is made once")
                    .because("FIELD_REQUIRED"),
            );
        }
        let idempotent = Idempotent::new(rpc.method, &req.request_id, &req)?;
        let original = self.visible_charge(rpc, &req.name).await?;
        let input = required(req.correction.clone(), "correction")?;
        let line = Line {
            code: input.code,
            modifiers: input.modifiers,
            units: input.units,
            diagnoses: input.diagnoses,
            place_of_service: input.place_of_service,
        };
        charge::check_line("correction", &line).map_err(refusal)?;
        let context = Context {
            patient: original.patient.clone(),
            unit: original.unit.clone(),
            provider: original.provider.clone(),
            payer: original.payer.clone(),
            service_date: original.service_date,
        };
        let name = format!(
            "{}/charges/{}",
            names::organization_of(&req.name),
            uuid::Uuid::new_v4()
        );
        let schedules = self
            .charging
            .fee_schedules(names::organization_of(&req.name))
            .await?;
        let mut correction = self
            .charging
            .charge(&schedules, name, ChargeSource::Correction, &context, &line)
            .await?;
        correction.related_charge = original.name.clone();
        correction.encounter = None;
        let memo = format!("corrected by {}: {reason}", correction.name);
        idempotent
            .once(&self.db, names::organization_of(&req.name), async |conn| {
                let current = charges::get(conn, &original.name)
                    .await?
                    .ok_or_else(|| ApiError::not_found(&original.name))?;
                if current.state == ChargeState::Reversed {
                    return Err(charges::charge_reversed());
                }
                charges::insert(conn, &correction).await?;
                charges::reverse(conn, &current, &correction.name, &memo).await?;
                let invoice = invoice_store::invoice_of(conn, &current.name).await?;
                if !invoice.is_empty() {
                    invoice_store::add_correction(conn, &invoice, &current, &correction).await?;
                }
                let reversed = charges::get(conn, &original.name)
                    .await?
                    .ok_or_else(|| ApiError::not_found(&original.name))?;
                Ok(CorrectChargeResponse {
                    reversed: Some(charges::wire(&reversed)),
                    correction: Some(charges::wire(&correction)),
                })
            })
            .await
    }
}

/// The name of a charge entered by hand: derived from its request_id, so that a retry names the
/// same charge and a client can know the name before the answer arrives.
pub fn manual_charge_name(organization: &str, request_id: &str) -> String {
    let id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("pm:manual-charge:{organization}:{request_id}").as_bytes(),
    );
    format!("{organization}/charges/{id}")
}

/// A month as reports take it: `YYYY-MM` or empty.
fn check_month(field: &str, month: &str) -> ApiResult<()> {
    let ok = month.is_empty()
        || (month.len() == 7
            && chrono::NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").is_ok());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(field, "a month is YYYY-MM").because("MONTH_INVALID"))
    }
}

/// A dimension a report asks for: one the store groups on, or the reporting tag, which Org holds
/// and the report reads through the units the store groups on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Stored(Dimension),
    ReportingTag,
}

fn dimension(value: i32, field: &str) -> ApiResult<Asked> {
    let stored = match RevenueDimension::try_from(value).unwrap_or(RevenueDimension::Unspecified) {
        RevenueDimension::Unit => Dimension::Unit,
        RevenueDimension::Payer => Dimension::Payer,
        RevenueDimension::BillingEntity => Dimension::BillingEntity,
        RevenueDimension::Provider => Dimension::Provider,
        RevenueDimension::Code => Dimension::Code,
        RevenueDimension::Month => Dimension::Month,
        RevenueDimension::ReportingTag => return Ok(Asked::ReportingTag),
        RevenueDimension::Unspecified => {
            return Err(ApiError::invalid(field, "not a dimension"));
        }
    };
    Ok(Asked::Stored(stored))
}

/// What the store groups on for `asked` (the tag read as its unit, a unit grouped once), and
/// where each asked dimension's value sits in the store's cells.
fn stored_dimensions(asked: &[Asked]) -> (Vec<Dimension>, Vec<report::KeyPart>) {
    let mut stored: Vec<Dimension> = Vec::new();
    let mut position = |d: Dimension| match stored.iter().position(|s| *s == d) {
        Some(i) => i,
        None => {
            stored.push(d);
            stored.len() - 1
        }
    };
    let parts = asked
        .iter()
        .map(|a| match a {
            Asked::Stored(d) => report::KeyPart::Column(position(*d)),
            Asked::ReportingTag => report::KeyPart::TagOfUnit(position(Dimension::Unit)),
        })
        .collect();
    (stored, parts)
}

fn wire_amounts(amounts: &Amounts) -> RevenueAmounts {
    RevenueAmounts {
        charged_cents: amounts.charged.cents(),
        reversed_cents: amounts.reversed.cents(),
        paid_cents: amounts.paid.cents(),
        adjusted_cents: amounts.adjusted.cents(),
        outstanding_cents: amounts.outstanding().cents(),
    }
}

/// A charge's line as the request gives it.
fn line_of(charge: &Charge) -> Line {
    Line {
        code: charge.code.clone(),
        modifiers: charge.modifiers.clone(),
        units: charge.units,
        diagnoses: charge.diagnoses.clone(),
        place_of_service: charge.place_of_service.clone(),
    }
}

/// One schedule of a price's trace on the wire.
fn candidate(c: &Candidate) -> PriceCandidate {
    let outcome = match &c.outcome {
        Outcome::Chosen => PriceOutcome::Chosen,
        Outcome::Outranked { .. } => PriceOutcome::Outranked,
        Outcome::NotApplicable(_) => PriceOutcome::NotApplicable,
        Outcome::NoVersionInForce => PriceOutcome::NoVersionInForce,
        Outcome::NoEntry { .. } => PriceOutcome::NoEntry,
    };
    PriceCandidate {
        fee_schedule: c.schedule.clone(),
        level: c.level.as_ref().map(Level::to_string).unwrap_or_default(),
        version: c.version.clone().unwrap_or_default(),
        outcome: outcome.into(),
        detail: c.detail.clone(),
    }
}

/// The patients of a page of charges, for the audit record.
fn patients_of(charges: &[Charge]) -> Vec<String> {
    charges.iter().map(|c| c.patient.clone()).collect()
}

#[tonic::async_trait]
impl BillingService for BillingApi {
    // Billing entities

    async fn get_billing_entity(
        &self,
        request: Request<GetBillingEntityRequest>,
    ) -> Reply<BillingEntity> {
        reply(
            pm_authz::layer::serve(request, async |_, req| {
                self.get(&BILLING_ENTITY, &req.name).await
            })
            .await,
        )
    }

    async fn list_billing_entities(
        &self,
        request: Request<ListBillingEntitiesRequest>,
    ) -> Reply<ListBillingEntitiesResponse> {
        reply(
            pm_authz::layer::serve(request, async |_, req| {
                let page = self
                    .list(&BILLING_ENTITY, list_call!(req, &req.parent))
                    .await?;
                Ok(ListBillingEntitiesResponse {
                    billing_entities: page.items,
                    next_page_token: page.next_page_token,
                })
            })
            .await,
        )
    }

    async fn create_billing_entity(
        &self,
        request: Request<CreateBillingEntityRequest>,
    ) -> Reply<BillingEntity> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let mut entity = required(req.billing_entity.clone(), "billing_entity")?;
                validate::billing_entity(&mut entity).map_err(refusal)?;
                let call = create_call!(req, rpc.method, &req.parent, billing_entity_id);
                self.create(rpc, &BILLING_ENTITY, call, entity, async |_, _| Ok(()))
                    .await
            })
            .await,
        )
    }

    async fn update_billing_entity(
        &self,
        request: Request<UpdateBillingEntityRequest>,
    ) -> Reply<BillingEntity> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let mask = req.update_mask.as_ref();
                self.update(
                    rpc,
                    &BILLING_ENTITY,
                    req.billing_entity.clone(),
                    mask,
                    async |merged| validate::billing_entity(merged).map_err(refusal),
                )
                .await
            })
            .await,
        )
    }

    async fn delete_billing_entity(
        &self,
        request: Request<DeleteBillingEntityRequest>,
    ) -> Reply<BillingEntity> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                self.delete(rpc, &BILLING_ENTITY, &req.name, &req.etag, async |_, _| {
                    Ok(())
                })
                .await
            })
            .await,
        )
    }

    // Payers

    async fn get_payer(&self, request: Request<GetPayerRequest>) -> Reply<Payer> {
        reply(
            pm_authz::layer::serve(request, async |_, req| self.get(&PAYER, &req.name).await).await,
        )
    }

    async fn list_payers(&self, request: Request<ListPayersRequest>) -> Reply<ListPayersResponse> {
        reply(
            pm_authz::layer::serve(request, async |_, req| {
                let page = self.list(&PAYER, list_call!(req, &req.parent)).await?;
                Ok(ListPayersResponse {
                    payers: page.items,
                    next_page_token: page.next_page_token,
                })
            })
            .await,
        )
    }

    async fn create_payer(&self, request: Request<CreatePayerRequest>) -> Reply<Payer> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let payer = required(req.payer.clone(), "payer")?;
                validate::payer(&payer).map_err(refusal)?;
                let call = create_call!(req, rpc.method, &req.parent, payer_id);
                self.create(rpc, &PAYER, call, payer, async |_, _| Ok(()))
                    .await
            })
            .await,
        )
    }

    async fn update_payer(&self, request: Request<UpdatePayerRequest>) -> Reply<Payer> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let mask = req.update_mask.as_ref();
                self.update(rpc, &PAYER, req.payer.clone(), mask, async |merged| {
                    validate::payer(merged).map_err(refusal)
                })
                .await
            })
            .await,
        )
    }

    async fn delete_payer(&self, request: Request<DeletePayerRequest>) -> Reply<Payer> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                self.delete(rpc, &PAYER, &req.name, &req.etag, async |_, _| Ok(()))
                    .await
            })
            .await,
        )
    }

    // Contracts

    async fn get_contract(&self, request: Request<GetContractRequest>) -> Reply<Contract> {
        reply(
            pm_authz::layer::serve(request, async |_, req| self.get(&CONTRACT, &req.name).await)
                .await,
        )
    }

    async fn list_contracts(
        &self,
        request: Request<ListContractsRequest>,
    ) -> Reply<ListContractsResponse> {
        reply(
            pm_authz::layer::serve(request, async |_, req| {
                let page = self.list(&CONTRACT, list_call!(req, &req.parent)).await?;
                Ok(ListContractsResponse {
                    contracts: page.items,
                    next_page_token: page.next_page_token,
                })
            })
            .await,
        )
    }

    async fn create_contract(&self, request: Request<CreateContractRequest>) -> Reply<Contract> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let contract = required(req.contract.clone(), "contract")?;
                validate::contract(&contract).map_err(refusal)?;
                for (i, unit) in contract.units.iter().enumerate() {
                    UNIT_NAME.parse(&format!("contract.units[{i}]"), unit)?;
                }
                PAYER.pattern.parse("contract.payer", &contract.payer)?;
                BILLING_ENTITY
                    .pattern
                    .parse("contract.billing_entity", &contract.billing_entity)?;
                let call = create_call!(req, rpc.method, &req.parent, contract_id);
                self.create(rpc, &CONTRACT, call, contract, async |conn, c| {
                    self.check_exists(conn, "contract.payer", &c.payer).await?;
                    self.check_exists(conn, "contract.billing_entity", &c.billing_entity)
                        .await
                })
                .await
            })
            .await,
        )
    }

    async fn delete_contract(&self, request: Request<DeleteContractRequest>) -> Reply<Contract> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                self.delete(rpc, &CONTRACT, &req.name, &req.etag, async |_, _| Ok(()))
                    .await
            })
            .await,
        )
    }

    // Routing rules

    async fn get_routing_rule(
        &self,
        request: Request<GetRoutingRuleRequest>,
    ) -> Reply<RoutingRule> {
        reply(
            pm_authz::layer::serve(request, async |_, req| {
                self.get(&ROUTING_RULE, &req.name).await
            })
            .await,
        )
    }

    async fn list_routing_rules(
        &self,
        request: Request<ListRoutingRulesRequest>,
    ) -> Reply<ListRoutingRulesResponse> {
        reply(
            pm_authz::layer::serve(request, async |_, req| {
                let page = self
                    .list(&ROUTING_RULE, list_call!(req, &req.parent))
                    .await?;
                Ok(ListRoutingRulesResponse {
                    routing_rules: page.items,
                    next_page_token: page.next_page_token,
                })
            })
            .await,
        )
    }

    async fn create_routing_rule(
        &self,
        request: Request<CreateRoutingRuleRequest>,
    ) -> Reply<RoutingRule> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let rule = required(req.routing_rule.clone(), "routing_rule")?;
                validate::routing_rule(&rule).map_err(refusal)?;
                BILLING_ENTITY
                    .pattern
                    .parse("routing_rule.billing_entity", &rule.billing_entity)?;
                if !rule.payer.is_empty() {
                    PAYER.pattern.parse("routing_rule.payer", &rule.payer)?;
                }
                if !rule.unit.is_empty() {
                    UNIT_NAME.parse("routing_rule.unit", &rule.unit)?;
                }
                let call = create_call!(req, rpc.method, &req.parent, routing_rule_id);
                self.create(rpc, &ROUTING_RULE, call, rule, async |conn, r| {
                    self.check_exists(conn, "routing_rule.billing_entity", &r.billing_entity)
                        .await?;
                    if r.payer.is_empty() {
                        Ok(())
                    } else {
                        self.check_exists(conn, "routing_rule.payer", &r.payer)
                            .await
                    }
                })
                .await
            })
            .await,
        )
    }

    async fn delete_routing_rule(
        &self,
        request: Request<DeleteRoutingRuleRequest>,
    ) -> Reply<RoutingRule> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                self.delete(
                    rpc,
                    &ROUTING_RULE,
                    &req.name,
                    &req.etag,
                    async |_, _| Ok(()),
                )
                .await
            })
            .await,
        )
    }

    // Fee schedules

    async fn get_fee_schedule(
        &self,
        request: Request<GetFeeScheduleRequest>,
    ) -> Reply<FeeSchedule> {
        reply(
            pm_authz::layer::serve(request, async |_, req| {
                self.get(&FEE_SCHEDULE, &req.name).await
            })
            .await,
        )
    }

    async fn list_fee_schedules(
        &self,
        request: Request<ListFeeSchedulesRequest>,
    ) -> Reply<ListFeeSchedulesResponse> {
        reply(
            pm_authz::layer::serve(request, async |_, req| {
                let page = self
                    .list(&FEE_SCHEDULE, list_call!(req, &req.parent))
                    .await?;
                Ok(ListFeeSchedulesResponse {
                    fee_schedules: page.items,
                    next_page_token: page.next_page_token,
                })
            })
            .await,
        )
    }

    async fn create_fee_schedule(
        &self,
        request: Request<CreateFeeScheduleRequest>,
    ) -> Reply<FeeSchedule> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let schedule = required(req.fee_schedule.clone(), "fee_schedule")?;
                let (scope, _) = validate::scope(&req.parent, &schedule).map_err(refusal)?;
                let call = create_call!(req, rpc.method, &req.parent, fee_schedule_id);
                self.create(rpc, &FEE_SCHEDULE, call, schedule, async |conn, _| {
                    use crate::domain::pricing::Scope;
                    match &scope {
                        Scope::Contract(name) => {
                            self.check_exists(conn, "fee_schedule.scope.contract", name)
                                .await
                        }
                        Scope::Payer(name) => {
                            self.check_exists(conn, "fee_schedule.scope.payer", name)
                                .await
                        }
                        // Units are Org's: the shared layer checked them against the caller's scope.
                        Scope::Unit(_) | Scope::Program(_) | Scope::Organization => Ok(()),
                    }
                })
                .await
            })
            .await,
        )
    }

    async fn delete_fee_schedule(
        &self,
        request: Request<DeleteFeeScheduleRequest>,
    ) -> Reply<FeeSchedule> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                let name = req.name.clone();
                self.delete(rpc, &FEE_SCHEDULE, &req.name, &req.etag, async |conn, _| {
                    store::release_periods(conn, &name).await
                })
                .await
            })
            .await,
        )
    }

    async fn create_fee_schedule_version(
        &self,
        request: Request<CreateFeeScheduleVersionRequest>,
    ) -> Reply<FeeScheduleVersion> {
        reply(
            pm_authz::layer::serve(request, async |rpc, req| {
                self.create_version(rpc, req).await
            })
            .await,
        )
    }

    async fn get_fee_schedule_version(
        &self,
        request: Request<GetFeeScheduleVersionRequest>,
    ) -> Reply<FeeScheduleVersion> {
        reply(
            pm_authz::layer::serve(request, async |_, req| {
                self.get(&FEE_SCHEDULE_VERSION, &req.name).await
            })
            .await,
        )
    }

    async fn list_fee_schedule_versions(
        &self,
        request: Request<ListFeeScheduleVersionsRequest>,
    ) -> Reply<ListFeeScheduleVersionsResponse> {
        reply(
            pm_authz::layer::serve(request, async |_, req| {
                FEE_SCHEDULE.pattern.parse("parent", &req.parent)?;
                let call = docstore::ListCall {
                    parent: &req.parent,
                    page_size: req.page_size,
                    page_token: &req.page_token,
                    filter: "",
                    order_by: "create_time",
                    show_deleted: false,
                    scope: None,
                };
                let page = docstore::list(&self.db, &FEE_SCHEDULE_VERSION, call).await?;
                Ok(ListFeeScheduleVersionsResponse {
                    fee_schedule_versions: page.items,
                    next_page_token: page.next_page_token,
                })
            })
            .await,
        )
    }

    async fn export_fee_schedule_version(
        &self,
        request: Request<ExportFeeScheduleVersionRequest>,
    ) -> Reply<ExportFeeScheduleVersionResponse> {
        reply(
            pm_authz::layer::serve(request, async |_, req| {
                let version = self.get(&FEE_SCHEDULE_VERSION, &req.name).await?;
                let entries: Vec<_> = version.entries.iter().map(validate::entry_of).collect();
                Ok(ExportFeeScheduleVersionResponse {
                    csv: fee_csv::write(&entries),
                })
            })
            .await,
        )
    }

    async fn explain_price(
        &self,
        request: Request<ExplainPriceRequest>,
    ) -> Reply<ExplainPriceResponse> {
        reply(pm_authz::layer::serve(request, async |_, req| self.explain(req).await).await)
    }

    // Charges (PHI)

    async fn get_charge(&self, request: Request<GetChargeRequest>) -> Reply<Charge> {
        let audit =
            |r: &GetChargeRequest| Audited::read(&r.name, |c: &Charge| vec![c.patient.clone()]);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    Ok(charges::wire(&self.visible_charge(rpc, &req.name).await?))
                })
                .await,
        )
    }

    async fn list_charges(
        &self,
        request: Request<ListChargesRequest>,
    ) -> Reply<ListChargesResponse> {
        let audit = |r: &ListChargesRequest| {
            Audited::read(&r.parent, |page: &ListChargesResponse| {
                patients_of(&page.charges)
            })
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    ORGANIZATION_NAME.parse("parent", &req.parent)?;
                    let units = access::visible_units(
                        self.charging.org(),
                        rpc.caller,
                        rpc.permission,
                        &req.parent,
                    )
                    .await?;
                    let query = ChargeQuery {
                        organization: &req.parent,
                        unit: &req.unit,
                        patient: &req.patient,
                        encounter: &req.encounter,
                        visible_units: units.as_deref(),
                    };
                    let mut conn = self.db.read().await?;
                    let (rows, next_page_token) =
                        charges::list(&mut conn, &query, req.page_size, &req.page_token).await?;
                    Ok(ListChargesResponse {
                        charges: rows.iter().map(charges::wire).collect(),
                        next_page_token,
                    })
                })
                .await,
        )
    }

    async fn create_charge(&self, request: Request<CreateChargeRequest>) -> Reply<Charge> {
        let audit = |r: &CreateChargeRequest| {
            let patient = r
                .charge
                .as_ref()
                .map(|c| c.patient.clone())
                .unwrap_or_default();
            Audited::write(&r.parent).naming(vec![patient])
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.create_charge(rpc, req).await
                })
                .await,
        )
    }

    async fn correct_charge(
        &self,
        request: Request<CorrectChargeRequest>,
    ) -> Reply<CorrectChargeResponse> {
        let audit = |r: &CorrectChargeRequest| Audited::write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.correct_charge(rpc, req).await
                })
                .await,
        )
    }

    async fn report_revenue(
        &self,
        request: Request<ReportRevenueRequest>,
    ) -> Reply<ReportRevenueResponse> {
        reply(pm_authz::layer::serve(request, async |rpc, req| self.report(rpc, req).await).await)
    }

    async fn report_aging(
        &self,
        request: Request<ReportAgingRequest>,
    ) -> Reply<ReportAgingResponse> {
        reply(pm_authz::layer::serve(request, async |rpc, req| self.aging(rpc, req).await).await)
    }

    async fn list_revenue_lines(
        &self,
        request: Request<ListRevenueLinesRequest>,
    ) -> Reply<ListRevenueLinesResponse> {
        let audit = |r: &ListRevenueLinesRequest| {
            Audited::read(&r.parent, |page: &ListRevenueLinesResponse| {
                page.lines
                    .iter()
                    .filter_map(|l| l.charge.as_ref().map(|c| c.patient.clone()))
                    .collect()
            })
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.revenue_lines(rpc, req).await
                })
                .await,
        )
    }

    async fn reprice_charges(
        &self,
        request: Request<RepriceChargesRequest>,
    ) -> Reply<RepriceChargesResponse> {
        let audit = |r: &RepriceChargesRequest| Audited::write(&r.parent);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.reprice(rpc, req).await
                })
                .await,
        )
    }

    async fn assemble_claims(
        &self,
        request: Request<AssembleClaimsRequest>,
    ) -> Reply<AssembleClaimsResponse> {
        let audit = |r: &AssembleClaimsRequest| Audited::write(&r.parent);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    ORGANIZATION_NAME.parse("parent", &req.parent)?;
                    access::organization_wide(rpc.caller, rpc.permission, &req.parent)?;
                    let assembled = self.claims.assemble(&req.parent).await?;
                    Ok(AssembleClaimsResponse {
                        claims: assembled.claims.iter().map(claim_wire::claim).collect(),
                        set_aside: assembled.set_aside,
                        more: assembled.more,
                    })
                })
                .await,
        )
    }

    async fn get_claim(&self, request: Request<GetClaimRequest>) -> Reply<Claim> {
        let audit =
            |r: &GetClaimRequest| Audited::read(&r.name, |c: &Claim| vec![c.patient.clone()]);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    Ok(claim_wire::claim(
                        &self.visible_claim(rpc, &req.name).await?,
                    ))
                })
                .await,
        )
    }

    async fn list_claims(&self, request: Request<ListClaimsRequest>) -> Reply<ListClaimsResponse> {
        let audit = |r: &ListClaimsRequest| {
            Audited::read(&r.parent, |page: &ListClaimsResponse| {
                page.claims.iter().map(|c| c.patient.clone()).collect()
            })
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    ORGANIZATION_NAME.parse("parent", &req.parent)?;
                    let units = access::visible_units(
                        self.charging.org(),
                        rpc.caller,
                        rpc.permission,
                        &req.parent,
                    )
                    .await?;
                    let mut conn = self.db.read().await?;
                    let (names, next_page_token) = claim_store::list(
                        &mut conn,
                        &req.parent,
                        claim_wire::state_of(req.state),
                        units.as_deref(),
                        req.page_size,
                        &req.page_token,
                    )
                    .await?;
                    let mut claims = Vec::with_capacity(names.len());
                    for name in names {
                        if let Some(claim) = claim_store::get(&mut conn, &name).await? {
                            claims.push(claim_wire::claim(&claim));
                        }
                    }
                    Ok(ListClaimsResponse {
                        claims,
                        next_page_token,
                    })
                })
                .await,
        )
    }

    async fn scrub_claim(&self, request: Request<ScrubClaimRequest>) -> Reply<Claim> {
        let audit = |r: &ScrubClaimRequest| Audited::write(&r.name);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.visible_claim(rpc, &req.name).await?;
                    Ok(claim_wire::claim(&self.claims.scrub(&req.name).await?))
                })
                .await,
        )
    }

    async fn export_claims(
        &self,
        request: Request<ExportClaimsRequest>,
    ) -> Reply<ExportClaimsResponse> {
        let audit = |r: &ExportClaimsRequest| Audited::write(&r.parent);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| self.export(rpc, req).await)
                .await,
        )
    }

    async fn import_remittance(
        &self,
        request: Request<ImportRemittanceRequest>,
    ) -> Reply<ImportRemittanceResponse> {
        let audit = |r: &ImportRemittanceRequest| Audited::write(&r.parent);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    ORGANIZATION_NAME.parse("parent", &req.parent)?;
                    access::organization_wide(rpc.caller, rpc.permission, &req.parent)?;
                    if req.content.len() > 10 * 1024 * 1024 {
                        return Err(
                            ApiError::invalid("content", "at most 10 MiB").because("X12_TOO_LARGE")
                        );
                    }
                    self.claims.import_835(&req.parent, &req.content).await
                })
                .await,
        )
    }

    async fn import_acknowledgment(
        &self,
        request: Request<ImportAcknowledgmentRequest>,
    ) -> Reply<ImportAcknowledgmentResponse> {
        let audit = |r: &ImportAcknowledgmentRequest| Audited::write(&r.parent);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    ORGANIZATION_NAME.parse("parent", &req.parent)?;
                    access::organization_wide(rpc.caller, rpc.permission, &req.parent)?;
                    if req.content.len() > 10 * 1024 * 1024 {
                        return Err(
                            ApiError::invalid("content", "at most 10 MiB").because("X12_TOO_LARGE")
                        );
                    }
                    self.claims.acknowledge(&req.parent, &req.content).await
                })
                .await,
        )
    }

    async fn create_care_time_entry(
        &self,
        request: Request<CreateCareTimeEntryRequest>,
    ) -> Reply<CareTimeEntry> {
        let audit = |r: &CreateCareTimeEntryRequest| {
            let patient = r
                .care_time_entry
                .as_ref()
                .map(|e| e.patient.clone())
                .unwrap_or_default();
            Audited::write(&r.parent).naming(vec![patient])
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    ORGANIZATION_NAME.parse("parent", &req.parent)?;
                    let idempotent = Idempotent::new(rpc.method, &req.request_id, &req)?;
                    if req.request_id.is_empty() {
                        return Err(ApiError::invalid(
                            "request_id",
                            "is required: an entry is recorded once",
                        )
                        .because("FIELD_REQUIRED"));
                    }
                    let entry = required(req.care_time_entry.clone(), "care_time_entry")?;
                    PATIENT_NAME.parse("care_time_entry.patient", &entry.patient)?;
                    UNIT_NAME.parse("care_time_entry.unit", &entry.unit)?;
                    PROVIDER_NAME.parse(
                        "care_time_entry.billing_practitioner",
                        &entry.billing_practitioner,
                    )?;
                    for (field, name) in [
                        ("care_time_entry.patient", &entry.patient),
                        ("care_time_entry.unit", &entry.unit),
                    ] {
                        if names::organization_of(name) != req.parent {
                            return Err(ApiError::invalid(
                                field,
                                "is not of the parent organization",
                            ));
                        }
                    }
                    let prepared = self.care.prepare_entry(&req.parent, &entry).await?;
                    idempotent
                        .once(&self.db, &req.parent, async |conn| {
                            care::write_entry(conn, &prepared).await
                        })
                        .await
                })
                .await,
        )
    }

    async fn list_care_time_entries(
        &self,
        request: Request<ListCareTimeEntriesRequest>,
    ) -> Reply<ListCareTimeEntriesResponse> {
        let audit = |r: &ListCareTimeEntriesRequest| {
            Audited::read(&r.patient, |_: &ListCareTimeEntriesResponse| Vec::new())
                .naming(vec![r.patient.clone()])
        };
        reply(
            self.phi
                .serve(request, audit, async |_, req| {
                    PATIENT_NAME.parse("patient", &req.patient)?;
                    UNIT_NAME.parse("unit", &req.unit)?;
                    care::parse_month("month", &req.month)?;
                    let (care_time_entries, closed) = self
                        .care
                        .entries(&req.patient, &req.unit, &req.month)
                        .await?;
                    Ok(ListCareTimeEntriesResponse {
                        care_time_entries,
                        closed,
                    })
                })
                .await,
        )
    }

    async fn close_care_month(
        &self,
        request: Request<CloseCareMonthRequest>,
    ) -> Reply<CloseCareMonthResponse> {
        let audit = |r: &CloseCareMonthRequest| Audited::write(&r.patient);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    PATIENT_NAME.parse("patient", &req.patient)?;
                    UNIT_NAME.parse("unit", &req.unit)?;
                    if names::organization_of(&req.unit) != names::organization_of(&req.patient) {
                        return Err(ApiError::invalid(
                            "unit",
                            "is not of the patient's organization",
                        ));
                    }
                    let month = care::parse_month("month", &req.month)?;
                    if req.request_id.is_empty() {
                        return Err(ApiError::invalid(
                            "request_id",
                            "is required: a month is closed once",
                        )
                        .because("FIELD_REQUIRED"));
                    }
                    let idempotent = Idempotent::new(rpc.method, &req.request_id, &req)?;
                    let mut conn = self.db.read().await?;
                    if let Some(previous) =
                        pm_runtime::idempotency::replay::<CloseCareMonthResponse>(
                            &mut conn,
                            idempotent.method,
                            idempotent.request_id,
                            &idempotent.hash,
                        )
                        .await?
                    {
                        return Ok(previous);
                    }
                    drop(conn);
                    let program =
                        CareProgram::try_from(req.program).unwrap_or(CareProgram::Unspecified);
                    let close = self
                        .care
                        .prepare_close(&req.patient, &req.unit, month, program, &req.diagnoses)
                        .await?;
                    idempotent
                        .once(
                            &self.db,
                            names::organization_of(&req.patient),
                            async |conn| care::write_close(conn, &close).await,
                        )
                        .await
                })
                .await,
        )
    }

    async fn list_ledger_entries(
        &self,
        request: Request<ListLedgerEntriesRequest>,
    ) -> Reply<ListLedgerEntriesResponse> {
        let audit = |r: &ListLedgerEntriesRequest| {
            Audited::read(&r.charge, |_: &ListLedgerEntriesResponse| Vec::new())
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let charge = self.visible_charge(rpc, &req.charge).await?;
                    let mut conn = self.db.read().await?;
                    let entries = charges::ledger(&mut conn, &charge.name).await?;
                    let balance = entries.iter().map(|e| e.amount_cents).sum();
                    Ok(ListLedgerEntriesResponse {
                        entries,
                        balance_cents: balance,
                    })
                })
                .await,
        )
    }

    async fn correct_claim(
        &self,
        request: Request<CorrectClaimRequest>,
    ) -> Reply<CorrectClaimResponse> {
        let audit = |r: &CorrectClaimRequest| Audited::write(&r.claim);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.amend(
                        rpc,
                        &req,
                        &req.claim,
                        &req.request_id,
                        Amendment::Correct,
                        "",
                        |original, correction| CorrectClaimResponse {
                            original: Some(claim_wire::claim(&original)),
                            correction: Some(claim_wire::claim(&correction)),
                        },
                    )
                    .await
                })
                .await,
        )
    }

    async fn void_claim(&self, request: Request<VoidClaimRequest>) -> Reply<VoidClaimResponse> {
        let audit = |r: &VoidClaimRequest| Audited::write(&r.claim);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    let why = req.reason.trim();
                    self.amend(
                        rpc,
                        &req,
                        &req.claim,
                        &req.request_id,
                        Amendment::Void,
                        why,
                        |original, void_claim| VoidClaimResponse {
                            original: Some(claim_wire::claim(&original)),
                            void_claim: Some(claim_wire::claim(&void_claim)),
                        },
                    )
                    .await
                })
                .await,
        )
    }

    // Invoices (PHI)

    async fn create_invoices(
        &self,
        request: Request<CreateInvoicesRequest>,
    ) -> Reply<CreateInvoicesResponse> {
        let audit = |r: &CreateInvoicesRequest| Audited::write(&r.parent);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.create_invoices(rpc, req).await
                })
                .await,
        )
    }

    async fn get_invoice(&self, request: Request<GetInvoiceRequest>) -> Reply<Invoice> {
        let audit = |r: &GetInvoiceRequest| Audited::read(&r.name, invoicing::patients_of);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    Ok(invoicing::wire(
                        &self.visible_invoice(rpc, "name", &req.name).await?,
                    ))
                })
                .await,
        )
    }

    async fn list_invoices(
        &self,
        request: Request<ListInvoicesRequest>,
    ) -> Reply<ListInvoicesResponse> {
        let audit = |r: &ListInvoicesRequest| {
            Audited::read(&r.parent, |page: &ListInvoicesResponse| {
                page.invoices
                    .iter()
                    .flat_map(invoicing::patients_of)
                    .collect()
            })
        };
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.list_invoices(rpc, req).await
                })
                .await,
        )
    }

    async fn post_invoice_payment(
        &self,
        request: Request<PostInvoicePaymentRequest>,
    ) -> Reply<PostInvoicePaymentResponse> {
        let audit = |r: &PostInvoicePaymentRequest| Audited::write(&r.invoice);
        reply(
            self.phi
                .serve(request, audit, async |rpc, req| {
                    self.post_invoice_payment(rpc, req).await
                })
                .await,
        )
    }
}

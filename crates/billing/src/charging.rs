//! Making charges: a line, where and when it was done and for whom, becomes a priced (or held)
//! charge row routed by its unit's effective billing profile. Used by the encounter follower
//! ([`crate::posting`]) and by manual entry and correction (the handlers); the rules themselves are
//! pure ([`crate::domain::charge`], [`crate::domain::pricing`]).

use std::sync::Arc;

use chrono::NaiveDate;
use pm_api::billing::{ChargeSource, ChargeState};
use pm_runtime::time::now_micros;
use pm_runtime::{ApiResult, Db, names};

use crate::charges::ChargeRow;
use crate::domain::charge::{self, Line, Priced};
use crate::domain::pricing::{self, Price, Schedule, Unpriced};
use crate::org::{OrgView, UnitBilling};
use crate::store;

/// Who and what a charge is for, besides its line.
#[derive(Debug, Clone)]
pub struct Context {
    /// The patient.
    pub patient: String,
    /// The unit the service was given in.
    pub unit: String,
    /// The rendering provider.
    pub provider: String,
    /// The payer billed, qualified (`organizations/{o}/payers/{p}`), or "" for self-pay.
    pub payer: String,
    /// The local date of service.
    pub service_date: NaiveDate,
}

/// A price with everything it was resolved against.
pub struct Explained {
    /// The winning entry, or why none won.
    pub price: Result<Price, Unpriced>,
    /// The contract the payer is billed under in the unit ("" for none).
    pub contract: String,
}

/// Makes charges.
pub struct Charging {
    db: Db,
    org: Arc<OrgView>,
}

impl Charging {
    /// Charging against Billing's slice `db`, asking Org through `org`.
    pub fn new(db: Db, org: Arc<OrgView>) -> Self {
        Self { db, org }
    }

    /// Org as Billing sees it.
    pub fn org(&self) -> &OrgView {
        &self.org
    }

    /// Org, shared (for the other parts of the service that ask it).
    pub fn shared_org(&self) -> Arc<OrgView> {
        self.org.clone()
    }

    /// The organization's fee schedules with their versions, read once for all the lines a call
    /// prices (each resolution walks them all).
    pub async fn fee_schedules(&self, organization: &str) -> ApiResult<Vec<Schedule>> {
        let mut conn = self.db.read().await?;
        store::schedules(&mut conn, organization).await
    }

    /// Prices `line` for `context` at its date of service from `schedules` (the organization's),
    /// walked contract → payer → program → unit → organization.
    pub async fn explain(
        &self,
        schedules: &[Schedule],
        context: &Context,
        line: &Line,
    ) -> ApiResult<Explained> {
        let unit = self.org.unit(&context.unit).await?;
        Ok(resolve(schedules, &unit, context, line))
    }

    /// The charge `line` becomes: priced and OPEN, or HELD with the reason (a line whose codes
    /// are malformed is held too, with the format's reason: an event cannot be refused).
    pub async fn charge(
        &self,
        schedules: &[Schedule],
        name: String,
        source: ChargeSource,
        context: &Context,
        line: &Line,
    ) -> ApiResult<ChargeRow> {
        let organization = names::organization_of(&context.unit);
        let unit = self.org.unit(&context.unit).await?;
        let explained = resolve(schedules, &unit, context, line);
        let priced = match charge::check_line("line", line) {
            Ok(()) => charge::priced(&explained.price, line.units),
            Err(invalid) => Priced::Held {
                reason: invalid.reason,
            },
        };
        let (state, unit_price, amount, version, hold_reason) = match priced {
            Priced::Open {
                unit_price,
                amount,
                version,
            } => (ChargeState::Open, unit_price, amount, version, ""),
            Priced::Held { reason } => (
                ChargeState::Held,
                Default::default(),
                Default::default(),
                String::new(),
                reason,
            ),
        };
        let now = now_micros();
        let place_of_service = if line.place_of_service.is_empty() {
            unit.profile.place_of_service.clone()
        } else {
            line.place_of_service.clone()
        };
        Ok(ChargeRow {
            name,
            source,
            encounter: None,
            patient: context.patient.clone(),
            unit: context.unit.clone(),
            provider: context.provider.clone(),
            payer: context.payer.clone(),
            billing_entity: charge::qualified(organization, &unit.profile.billing_entity),
            contract: explained.contract,
            code: line.code.clone(),
            modifiers: line.modifiers.clone(),
            units: line.units.max(1),
            diagnoses: line.diagnoses.clone(),
            service_date: context.service_date,
            place_of_service,
            unit_price,
            amount,
            fee_schedule_version: version,
            state,
            hold_reason: hold_reason.to_string(),
            related_charge: String::new(),
            profile: unit.profile.clone(),
            create_us: now,
            update_us: now,
        })
    }
}

/// The price of `line` for `context` in `unit`, from `schedules`.
fn resolve(
    schedules: &[Schedule],
    unit: &UnitBilling,
    context: &Context,
    line: &Line,
) -> Explained {
    let organization = names::organization_of(&context.unit);
    let contract = charge::contract_for(organization, &unit.accepted_payers, &context.payer);
    let query = pricing::Line {
        code: &line.code,
        modifiers: &line.modifiers,
        service_date: context.service_date,
        payer: Some(context.payer.as_str()).filter(|p| !p.is_empty()),
        contract: Some(contract.as_str()).filter(|c| !c.is_empty()),
        program_unit: unit.program.as_deref(),
        unit_lineage: &unit.nearest_first,
    };
    Explained {
        price: pricing::resolve(schedules, &query),
        contract,
    }
}

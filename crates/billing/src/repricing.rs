//! Pricing charges again after a contract or fee-schedule change: which unclaimed OPEN or HELD
//! charges would change and by how much (a dry run, nothing written), and, applied, each changed
//! charge reversed and charged again at its new price, in one transaction. Claimed charges are left
//! alone: a claim already carries them (a corrected claim is the way to change those).

use std::sync::Arc;

use pm_api::billing::{ChargeSource, ChargeState, Repricing};
use pm_runtime::{ApiResult, Db};
use sqlx::AnyConnection;

use crate::charges::{self, ChargeRow};
use crate::charging::{Charging, Context};
use crate::domain::charge::Line;

/// Charges examined per call at most.
pub const REPRICE_BATCH: usize = 5_000;

/// A charge whose price changes: the charge as it is and the one it becomes.
pub struct Change {
    /// The charge now.
    pub old: ChargeRow,
    /// The charge at today's schedules (named; not stored until applied).
    pub new: ChargeRow,
}

/// What a reprice found.
pub struct Found {
    /// The changes.
    pub changes: Vec<Change>,
    /// Charges examined.
    pub examined: usize,
    /// More charges wait.
    pub more: bool,
}

/// The name of the charge a reprice makes of `old`: the same on every retry.
fn repriced_name(old: &str, version: &str) -> String {
    let id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("pm:reprice:{old}:{version}").as_bytes(),
    );
    format!("{}/charges/{id}", pm_runtime::names::organization_of(old))
}

/// Finds the charges whose price changes at today's schedules.
pub async fn find(
    db: &Db,
    charging: &Arc<Charging>,
    organization: &str,
    unit: &str,
) -> ApiResult<Found> {
    let rows = {
        let mut conn = db.read().await?;
        charges::unclaimed(&mut conn, organization, true, unit, REPRICE_BATCH + 1).await?
    };
    let more = rows.len() > REPRICE_BATCH;
    let schedules = charging.fee_schedules(organization).await?;
    let mut changes = Vec::new();
    let mut examined = 0;
    for old in rows.into_iter().take(REPRICE_BATCH) {
        examined += 1;
        let line = Line {
            code: old.code.clone(),
            modifiers: old.modifiers.clone(),
            units: old.units,
            diagnoses: old.diagnoses.clone(),
            place_of_service: old.place_of_service.clone(),
        };
        let context = Context {
            patient: old.patient.clone(),
            unit: old.unit.clone(),
            provider: old.provider.clone(),
            payer: old.payer.clone(),
            service_date: old.service_date,
        };
        let mut new = charging
            .charge(
                &schedules,
                String::new(),
                ChargeSource::Correction,
                &context,
                &line,
            )
            .await?;
        let same = new.state == old.state
            && new.amount == old.amount
            && new.fee_schedule_version == old.fee_schedule_version;
        if same {
            continue;
        }
        new.name = repriced_name(&old.name, &new.fee_schedule_version);
        new.related_charge = old.name.clone();
        new.encounter = None;
        changes.push(Change { old, new });
    }
    Ok(Found {
        changes,
        examined,
        more,
    })
}

/// Applies the changes in the caller's transaction: each old charge reversed (its posted amount
/// taken back), each new one inserted and posted. A charge reversed or claimed meanwhile refuses
/// the whole call (`CHARGE_REVERSED`): nothing is applied.
pub async fn apply(conn: &mut AnyConnection, changes: &[Change]) -> ApiResult<()> {
    for change in changes {
        let current = charges::get(conn, &change.old.name).await?;
        if current
            .as_ref()
            .is_none_or(|c| c.state == ChargeState::Reversed)
        {
            return Err(charges::charge_reversed());
        }
        charges::insert(conn, &change.new).await?;
        charges::reverse(conn, &change.old, &change.new.name, "repriced").await?;
    }
    Ok(())
}

/// A change on the wire.
pub fn wire(change: &Change, applied: bool) -> Repricing {
    Repricing {
        charge: change.old.name.clone(),
        code: change.old.code.clone(),
        old_amount_cents: change.old.amount.cents(),
        new_amount_cents: change.new.amount.cents(),
        old_fee_schedule_version: change.old.fee_schedule_version.clone(),
        new_fee_schedule_version: change.new.fee_schedule_version.clone(),
        new_charge: if applied {
            change.new.name.clone()
        } else {
            String::new()
        },
    }
}

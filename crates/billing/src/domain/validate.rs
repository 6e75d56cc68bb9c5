//! The write rules of Billing's configuration resources: each failure names the field and a stable
//! reason ([`Invalid`]), and nothing is written.

use chrono::NaiveDate;
use pm_api::billing::{
    BillingEntity, ClearinghouseSettings, Contract, FeeEntry as WireEntry, FeeSchedule,
    FeeScheduleVersion, Payer, fee_schedule_scope::Target,
};
use pm_api::types::{Date, PostalAddress};

use crate::domain::codes::{Ein, Npi, PayerId, Taxonomy};
use crate::domain::invalid::Invalid;
use crate::domain::money::{Cents, MAX_AMOUNT};
use crate::domain::pricing::{self, FeeEntry, Scope};

fn required(field: &str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.trim().is_empty() {
        return Err(Invalid::new(field, "FIELD_REQUIRED", "is required"));
    }
    if value.chars().count() > max {
        return Err(Invalid::new(
            field,
            "FIELD_TOO_LONG",
            format!("at most {max} characters"),
        ));
    }
    Ok(())
}

fn address(field: &str, address: Option<&PostalAddress>) -> Result<(), Invalid> {
    let Some(address) = address else {
        return Err(Invalid::new(field, "FIELD_REQUIRED", "is required"));
    };
    let line = address
        .address_lines
        .first()
        .map(String::as_str)
        .unwrap_or("");
    required(&format!("{field}.address_lines"), line, 55)?;
    required(&format!("{field}.locality"), &address.locality, 30)?;
    let state = &address.administrative_area;
    if !(state.len() == 2 && state.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(Invalid::new(
            format!("{field}.administrative_area"),
            "ADDRESS_INVALID",
            "a two-letter state code such as NY",
        ));
    }
    let zip = &address.postal_code;
    if !((zip.len() == 5 || zip.len() == 9) && zip.bytes().all(|b| b.is_ascii_digit())) {
        return Err(Invalid::new(
            format!("{field}.postal_code"),
            "ADDRESS_INVALID",
            "a 5- or 9-digit ZIP code without a dash",
        ));
    }
    Ok(())
}

fn clearinghouse(field: &str, settings: Option<&ClearinghouseSettings>) -> Result<(), Invalid> {
    let Some(settings) = settings else {
        return Ok(());
    };
    for (name, value, max) in [
        ("isa_sender_id", &settings.isa_sender_id, 15),
        ("isa_receiver_id", &settings.isa_receiver_id, 15),
        ("gs_sender_code", &settings.gs_sender_code, 15),
        ("gs_receiver_code", &settings.gs_receiver_code, 15),
    ] {
        required(&format!("{field}.{name}"), value, max)?;
        if !value
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(Invalid::new(
                format!("{field}.{name}"),
                "CLEARINGHOUSE_ID_INVALID",
                "uppercase letters and digits only",
            ));
        }
    }
    Ok(())
}

/// A billing entity: names, a type-2 NPI with its check digit, an IRS EIN, a taxonomy code, a
/// street address; clearinghouse ids when given. Normalises the EIN to 9 digits.
pub fn billing_entity(entity: &mut BillingEntity) -> Result<(), Invalid> {
    let at = |f: &str| format!("billing_entity.{f}");
    required(&at("display_name"), &entity.display_name, 200)?;
    required(&at("legal_name"), &entity.legal_name, 60)?;
    let npi = Npi::parse(&at("npi"), &entity.npi)?;
    if !npi.as_str().starts_with('1') && !npi.as_str().starts_with('2') {
        return Err(Invalid::new(
            at("npi"),
            "NPI_INVALID",
            "an NPI starts with 1 or 2",
        ));
    }
    entity.tax_id = Ein::parse(&at("tax_id"), &entity.tax_id)?
        .as_str()
        .to_string();
    Taxonomy::parse(&at("taxonomy"), &entity.taxonomy)?;
    address(&at("billing_address"), entity.billing_address.as_ref())?;
    if entity.pay_to_address.is_some() {
        address(&at("pay_to_address"), entity.pay_to_address.as_ref())?;
    }
    clearinghouse(&at("clearinghouse"), entity.clearinghouse.as_ref())
}

/// Claim filing indicators (SBR09) a professional claim may carry.
const FILING_INDICATORS: &[&str] = &[
    "11", "12", "13", "14", "15", "16", "17", "AM", "BL", "CH", "CI", "DS", "FI", "HM", "LM", "MA",
    "MB", "MC", "OF", "TV", "VA", "WC", "ZZ",
];

/// A payer: a name, its X12 payer id, a claim filing indicator, a timely-filing window.
pub fn payer(payer: &Payer) -> Result<(), Invalid> {
    required("payer.display_name", &payer.display_name, 200)?;
    PayerId::parse("payer.payer_id", &payer.payer_id)?;
    if !FILING_INDICATORS.contains(&payer.claim_filing_indicator.as_str()) {
        return Err(Invalid::new(
            "payer.claim_filing_indicator",
            "CLAIM_FILING_INDICATOR_INVALID",
            "an X12 claim filing indicator such as MB, MA, CI, BL, HM or ZZ",
        ));
    }
    if !(1..=3650).contains(&payer.timely_filing_days) {
        return Err(Invalid::new(
            "payer.timely_filing_days",
            "TIMELY_FILING_DAYS_INVALID",
            "from 1 to 3650 days",
        ));
    }
    if payer.address.is_some() {
        address("payer.address", payer.address.as_ref())?;
    }
    Ok(())
}

/// A routing rule: a billing entity, a reason, at least one condition, a valid code if any.
pub fn routing_rule(rule: &pm_api::billing::RoutingRule) -> Result<(), Invalid> {
    required("routing_rule.billing_entity", &rule.billing_entity, 300)?;
    required("routing_rule.reason", &rule.reason, 200)?;
    if rule.code.is_empty() && rule.unit.is_empty() && rule.payer.is_empty() {
        return Err(Invalid::new(
            "routing_rule",
            "ROUTING_RULE_EMPTY",
            "a rule needs a code, a unit or a payer to match: a rule matching everything is refused",
        ));
    }
    if !rule.code.is_empty() {
        crate::domain::codes::ProcedureCode::parse("routing_rule.code", &rule.code)?;
    }
    Ok(())
}

/// A calendar date from the wire.
pub fn date(field: &str, date: Option<&Date>) -> Result<NaiveDate, Invalid> {
    date.and_then(|d| {
        NaiveDate::from_ymd_opt(
            d.year,
            u32::try_from(d.month).ok()?,
            u32::try_from(d.day).ok()?,
        )
    })
    .ok_or_else(|| Invalid::new(field, "DATE_INVALID", "a calendar date is required"))
}

/// An effective period: a first day, and a first day no longer in force after it (or none).
pub fn period(
    field: &str,
    from: Option<&Date>,
    until: Option<&Date>,
) -> Result<(NaiveDate, Option<NaiveDate>), Invalid> {
    let from = date(&format!("{field}effective_from"), from)?;
    let until = match until {
        None => None,
        Some(d) => Some(date(&format!("{field}effective_until"), Some(d))?),
    };
    if until.is_some_and(|until| until <= from) {
        return Err(Invalid::new(
            format!("{field}effective_until"),
            "EFFECTIVE_PERIOD_INVALID",
            "the period must end after it starts",
        ));
    }
    Ok((from, until))
}

/// A contract: a name, a payer, a billing entity, at least one unit, a period. (That the payer and
/// entity exist is the store's check.)
pub fn contract(contract: &Contract) -> Result<(NaiveDate, Option<NaiveDate>), Invalid> {
    required("contract.display_name", &contract.display_name, 200)?;
    required("contract.payer", &contract.payer, 300)?;
    required("contract.billing_entity", &contract.billing_entity, 300)?;
    if contract.units.is_empty() {
        return Err(Invalid::new(
            "contract.units",
            "FIELD_REQUIRED",
            "at least one unit",
        ));
    }
    crate::domain::invoice::basis(contract.invoice_basis, contract.member_month_fee_cents)?;
    period(
        "contract.",
        contract.effective_from.as_ref(),
        contract.effective_until.as_ref(),
    )
}

/// A fee schedule's scope, as pricing reads it, and the key two schedules of the same scope share.
pub fn scope(organization: &str, schedule: &FeeSchedule) -> Result<(Scope, String), Invalid> {
    required("fee_schedule.display_name", &schedule.display_name, 200)?;
    let target = schedule.scope.as_ref().and_then(|s| s.target.as_ref());
    let scope = match target {
        Some(Target::Organization(true)) => Scope::Organization,
        Some(Target::Unit(unit)) => Scope::Unit(unit.clone()),
        Some(Target::Program(unit)) => Scope::Program(unit.clone()),
        Some(Target::Contract(contract)) => Scope::Contract(contract.clone()),
        Some(Target::Payer(payer)) => Scope::Payer(payer.clone()),
        Some(Target::Organization(false)) | None => {
            return Err(Invalid::new(
                "fee_schedule.scope",
                "FIELD_REQUIRED",
                "one of organization, unit, program, contract or payer",
            ));
        }
    };
    let key = match &scope {
        Scope::Organization => format!("organization:{organization}"),
        Scope::Unit(name) => format!("unit:{name}"),
        Scope::Program(name) => format!("program:{name}"),
        Scope::Contract(name) => format!("contract:{name}"),
        Scope::Payer(name) => format!("payer:{name}"),
    };
    Ok((scope, key))
}

/// A version's period and entries (each code, modifier set and amount checked).
pub fn version(
    version: &FeeScheduleVersion,
) -> Result<(NaiveDate, Option<NaiveDate>, Vec<FeeEntry>), Invalid> {
    let (from, until) = period(
        "fee_schedule_version.",
        version.effective_from.as_ref(),
        version.effective_until.as_ref(),
    )?;
    if version.entries.is_empty() {
        return Err(Invalid::new(
            "fee_schedule_version.entries",
            "FIELD_REQUIRED",
            "at least one entry (or the csv field)",
        ));
    }
    let entries: Vec<FeeEntry> = version.entries.iter().map(entry_of).collect();
    for (i, entry) in version.entries.iter().enumerate() {
        if entry.amount_cents > MAX_AMOUNT.cents() {
            return Err(Invalid::new(
                format!("fee_schedule_version.entries[{i}].amount_cents"),
                "AMOUNT_INVALID",
                "at most 1,000,000,000,000 cents",
            ));
        }
    }
    pricing::check_entries(&entries).map_err(|e| e.under("fee_schedule_version"))?;
    Ok((from, until, entries))
}

/// A wire entry as pricing reads it.
pub fn entry_of(entry: &WireEntry) -> FeeEntry {
    FeeEntry {
        code: entry.code.clone(),
        modifiers: entry.modifiers.clone(),
        amount: Cents::new(entry.amount_cents),
        description: entry.description.clone(),
    }
}

/// A pricing entry on the wire.
pub fn wire_entry(entry: &FeeEntry) -> WireEntry {
    WireEntry {
        code: entry.code.clone(),
        modifiers: entry.modifiers.clone(),
        amount_cents: entry.amount.cents(),
        description: entry.description.clone(),
    }
}

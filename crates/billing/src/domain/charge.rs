//! How an encounter's lines become charges: the lines it carries, the local date of service, the
//! billing profile and contract it is billed under, and what a price (or its absence) makes of a
//! line. Pure: the follower and the handlers gather the inputs and store the result.

use chrono::{DateTime, NaiveDate, Utc};
use pm_api::scheduling::Encounter;
use serde::{Deserialize, Serialize};

use crate::domain::codes::{DiagnosisCode, Modifier, PlaceOfService, ProcedureCode};
use crate::domain::invalid::Invalid;
use crate::domain::money::Cents;
use crate::domain::pricing::{Price, Unpriced};

/// A unit's effective billing profile at the time a charge is made, with the unit each value came
/// from: kept on the charge as it was, whatever the tree says later.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The billing entity claims route to.
    pub billing_entity: String,
    /// The unit that set it.
    pub billing_entity_source: String,
    /// CMS place of service.
    pub place_of_service: String,
    /// The unit that set it.
    pub place_of_service_source: String,
    /// `CMS1500`, `UB04`, `NONE` (or `UNSPECIFIED` when no unit sets it).
    pub claim_form: String,
    /// The unit that set it.
    pub claim_form_source: String,
}

/// One billable line, before pricing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The procedure code.
    pub code: String,
    /// Its modifiers.
    pub modifiers: Vec<String>,
    /// Units of service.
    pub units: i32,
    /// The diagnoses it is for, in order.
    pub diagnoses: Vec<String>,
    /// The place of service when it differs from the unit's.
    pub place_of_service: String,
}

/// The most diagnosis pointers a professional claim line carries.
const POINTERS: usize = 4;

/// The lines of an encounter: its service lines, or (an encounter that names only service codes)
/// one line per code, 1 unit, for the first four diagnoses.
pub fn lines_of(encounter: &Encounter) -> Vec<Line> {
    if encounter.service_lines.is_empty() {
        let diagnoses: Vec<String> = encounter.diagnoses.iter().take(POINTERS).cloned().collect();
        return encounter
            .service_codes
            .iter()
            .map(|code| Line {
                code: code.clone(),
                modifiers: Vec::new(),
                units: 1,
                diagnoses: diagnoses.clone(),
                place_of_service: String::new(),
            })
            .collect();
    }
    encounter
        .service_lines
        .iter()
        .map(|line| Line {
            code: line.code.clone(),
            modifiers: line.modifiers.clone(),
            units: line.units,
            diagnoses: line
                .diagnosis_pointers
                .iter()
                .filter_map(|p| usize::try_from(*p).ok()?.checked_sub(1))
                .filter_map(|i| encounter.diagnoses.get(i).cloned())
                .collect(),
            place_of_service: line.place_of_service.clone(),
        })
        .collect()
}

/// Checks a line's codes: the procedure code, modifiers, 1 to 999 units, 1 to 4 diagnoses in
/// ICD-10-CM form, place of service. Field paths under `field` (`charge`, `correction`).
pub fn check_line(field: &str, line: &Line) -> Result<(), Invalid> {
    ProcedureCode::parse("code", &line.code).map_err(|e| e.under(field))?;
    Modifier::parse_modifiers("modifiers", &line.modifiers).map_err(|e| e.under(field))?;
    if !(1..=999).contains(&line.units) {
        return Err(Invalid::new(
            format!("{field}.units"),
            "UNITS_INVALID",
            "units of service are from 1 to 999",
        ));
    }
    if !(1..=POINTERS).contains(&line.diagnoses.len()) {
        return Err(Invalid::new(
            format!("{field}.diagnoses"),
            "DIAGNOSES_INVALID",
            "a line is for 1 to 4 diagnoses",
        ));
    }
    for (i, diagnosis) in line.diagnoses.iter().enumerate() {
        DiagnosisCode::parse(&format!("diagnoses[{i}]"), diagnosis).map_err(|e| e.under(field))?;
    }
    if !line.place_of_service.is_empty() {
        PlaceOfService::parse("place_of_service", &line.place_of_service)
            .map_err(|e| e.under(field))?;
    }
    Ok(())
}

/// The local calendar date of `instant` in the IANA `zone` (a date of service is the day at the
/// location). `None` for a zone chrono-tz does not know.
pub fn local_date(instant: DateTime<Utc>, zone: &str) -> Option<NaiveDate> {
    let zone: chrono_tz::Tz = zone.parse().ok()?;
    Some(instant.with_timezone(&zone).date_naive())
}

/// A Billing resource name as written today, `organizations/{o}/{collection}/{id}`, from either
/// that or the short form Org's billing profiles held before Billing existed (`payers/{id}`).
pub fn qualified(organization: &str, name: &str) -> String {
    if name.is_empty() || name.starts_with("organizations/") {
        name.to_string()
    } else {
        format!("{organization}/{name}")
    }
}

/// The contract a payer is billed under in a unit: the one its accepted-payer entry names
/// (qualified), or "" when the entry names none or the payer is not listed.
pub fn contract_for(organization: &str, accepted: &[(String, String)], payer: &str) -> String {
    accepted
        .iter()
        .find(|(p, _)| qualified(organization, p) == payer)
        .map(|(_, contract)| match contract.split('/').next() {
            Some("contracts" | "organizations") => qualified(organization, contract),
            _ => String::new(),
        })
        .unwrap_or_default()
}

/// What pricing made of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Priced {
    /// Priced: the price per unit, the line's amount and the version that priced it.
    Open {
        /// Per unit.
        unit_price: Cents,
        /// `unit_price × units`.
        amount: Cents,
        /// The fee schedule version.
        version: String,
    },
    /// Not priced, with the reason a billing clerk can act on.
    Held {
        /// `NO_FEE_SCHEDULE_ENTRY` or `AMOUNT_TOO_LARGE`.
        reason: &'static str,
    },
}

/// The outcome of pricing `units` of a line.
pub fn priced(price: &Result<Price, Unpriced>, units: i32) -> Priced {
    match price {
        Ok(price) => match price.amount.times(i64::from(units)) {
            Some(amount) => Priced::Open {
                unit_price: price.amount,
                amount,
                version: price.version.clone(),
            },
            None => Priced::Held {
                reason: "AMOUNT_TOO_LARGE",
            },
        },
        Err(_) => Priced::Held {
            reason: "NO_FEE_SCHEDULE_ENTRY",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pm_api::scheduling::ServiceLine;

    #[test]
    fn an_encounter_without_lines_bills_one_line_per_code() {
        let encounter = Encounter {
            service_codes: vec!["99490".into(), "99439".into()],
            diagnoses: vec!["E11.9".into(), "I10".into()],
            ..Default::default()
        };
        let lines = lines_of(&encounter);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].code, "99439");
        assert_eq!(lines[1].units, 1);
        assert_eq!(lines[1].diagnoses, vec!["E11.9", "I10"]);
    }

    #[test]
    fn service_lines_point_at_the_encounters_diagnoses() {
        let encounter = Encounter {
            service_codes: vec!["99213".into()],
            diagnoses: vec!["E11.9".into(), "I10".into(), "Z79.4".into()],
            service_lines: vec![ServiceLine {
                code: "99214".into(),
                modifiers: vec!["25".into()],
                units: 2,
                diagnosis_pointers: vec![3, 1],
                place_of_service: "02".into(),
            }],
            ..Default::default()
        };
        let lines = lines_of(&encounter);
        assert_eq!(lines.len(), 1, "service lines replace the codes");
        assert_eq!(lines[0].diagnoses, vec!["Z79.4", "E11.9"]);
        assert_eq!(lines[0].units, 2);
        assert_eq!(lines[0].place_of_service, "02");
    }

    #[test]
    fn a_line_with_a_bad_part_is_refused_naming_it() {
        let good = Line {
            code: "99213".into(),
            modifiers: vec!["25".into()],
            units: 1,
            diagnoses: vec!["E11.9".into()],
            place_of_service: String::new(),
        };
        assert_eq!(check_line("charge", &good), Ok(()));
        type Spoil = fn(&mut Line);
        let cases: [(Spoil, &str); 5] = [
            (|l| l.code = "9921".into(), "charge.code"),
            (|l| l.modifiers = vec!["2".into()], "charge.modifiers[0]"),
            (|l| l.units = 0, "charge.units"),
            (|l| l.diagnoses = Vec::new(), "charge.diagnoses"),
            (|l| l.diagnoses = vec!["11.9".into()], "charge.diagnoses[0]"),
        ];
        for (spoil, field) in cases {
            let mut bad = good.clone();
            spoil(&mut bad);
            let err = check_line("charge", &bad).expect_err(field);
            assert_eq!(err.field, field);
        }
    }

    #[test]
    fn the_date_of_service_is_the_day_at_the_location() {
        // 03:30 UTC on 2 March is still 1 March in New York.
        let instant = DateTime::parse_from_rfc3339("2026-03-02T03:30:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("instant");
        assert_eq!(
            local_date(instant, "America/New_York"),
            NaiveDate::from_ymd_opt(2026, 3, 1)
        );
        assert_eq!(local_date(instant, "Nowhere/Else"), None);
    }

    #[test]
    fn short_names_from_before_billing_are_qualified() {
        let org = "organizations/acme";
        assert_eq!(
            qualified(org, "payers/medicare"),
            "organizations/acme/payers/medicare"
        );
        assert_eq!(
            qualified(org, "organizations/acme/payers/medicare"),
            "organizations/acme/payers/medicare"
        );
        let accepted = vec![
            (
                "payers/medicare".to_string(),
                "contracts/mcr-2026".to_string(),
            ),
            ("payers/acme-employer".to_string(), "EMP-7".to_string()),
        ];
        assert_eq!(
            contract_for(org, &accepted, "organizations/acme/payers/medicare"),
            "organizations/acme/contracts/mcr-2026"
        );
        assert_eq!(
            contract_for(org, &accepted, "organizations/acme/payers/acme-employer"),
            "",
            "a contract identifier that is not a resource name prices nothing"
        );
        assert_eq!(contract_for(org, &accepted, ""), "");
    }
}

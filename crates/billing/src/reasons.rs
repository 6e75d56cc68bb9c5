//! The error reasons Billing sends beyond the shared ones ([`pm_runtime::reasons::SHARED`] and the
//! authorization layer's [`pm_authz::reasons::CATALOG`]). ErrorInfo domain: `billing.pm.dev`.

use pm_runtime::reasons::Reason;

/// Billing's reasons.
pub const CATALOG: &[Reason] = pm_runtime::reasons![
    "PROCEDURE_CODE_INVALID" InvalidArgument "not a CPT or HCPCS code: 5 characters (99213, 0042T, G0506)",
    "MODIFIER_INVALID" InvalidArgument "a modifier is 2 uppercase letters or digits",
    "MODIFIERS_TOO_MANY" InvalidArgument "a line carries at most 4 modifiers",
    "MODIFIER_REPEATED" InvalidArgument "a modifier appears twice on one line",
    "DIAGNOSIS_CODE_INVALID" InvalidArgument "not an ICD-10-CM code (E11.9, I10, S72.001A)",
    "DIAGNOSES_INVALID" InvalidArgument "a line is for 1 to 4 diagnoses",
    "UNITS_INVALID" InvalidArgument "units of service are from 1 to 999",
    "NPI_INVALID" InvalidArgument "an NPI is 10 digits starting with 1 or 2",
    "NPI_CHECK_DIGIT" InvalidArgument "the NPI's check digit (Luhn, with the 80840 prefix) is wrong",
    "EIN_INVALID" InvalidArgument "an EIN is 9 digits with an IRS-issued prefix",
    "TAXONOMY_INVALID" InvalidArgument "a taxonomy code is 9 uppercase letters or digits then X",
    "PLACE_OF_SERVICE_INVALID" InvalidArgument "a place of service is two digits, 01 to 99",
    "PAYER_ID_INVALID" InvalidArgument "an X12 payer id is 2 to 80 uppercase letters or digits",
    "CLAIM_FILING_INDICATOR_INVALID" InvalidArgument "not an X12 claim filing indicator (SBR09)",
    "TIMELY_FILING_DAYS_INVALID" InvalidArgument "timely filing is 1 to 3650 days",
    "ADDRESS_INVALID" InvalidArgument "an address needs a street line, a city, a two-letter state and a 5- or 9-digit ZIP",
    "CLEARINGHOUSE_ID_INVALID" InvalidArgument "clearinghouse ids are uppercase letters and digits",
    "FIELD_TOO_LONG" InvalidArgument "the field is longer than allowed",
    "DATE_INVALID" InvalidArgument "a calendar date is required",
    "EFFECTIVE_PERIOD_INVALID" InvalidArgument "the period must end after it starts",
    "AMOUNT_INVALID" InvalidArgument "an amount is a decimal with at most two decimals, at most 10 billion",
    "AMOUNT_NOT_POSITIVE" InvalidArgument "a price is above zero",
    "FEE_ENTRY_DUPLICATE" InvalidArgument "two entries price the same code and modifier set",
    "FEE_ENTRIES_TOO_MANY" InvalidArgument "a version has at most 20,000 entries",
    "FEE_ENTRIES_TWICE" InvalidArgument "entries are given either as a list or as CSV",
    "FEE_CSV_HEADER_INVALID" InvalidArgument "the CSV's first line must be code,modifiers,amount,description",
    "FEE_CSV_ROW_INVALID" InvalidArgument "a CSV row must have exactly 4 fields",
    "FEE_CSV_MALFORMED" InvalidArgument "the CSV cannot be read (unbalanced quotes)",
    "FEE_CSV_TOO_LARGE" InvalidArgument "the CSV is larger than 2 MiB",
    "FEE_SCHEDULE_VERSIONS_OVERLAP" FailedPrecondition "the period overlaps another version of the schedule, or of a schedule of the same scope",
    "CHARGE_REVERSED" FailedPrecondition "the charge was reversed already; correct the charge that replaced it",
    "NO_FEE_SCHEDULE_ENTRY" FailedPrecondition "a charge is held: no fee schedule in force prices its code (see ExplainPrice)",
    "MONTH_INVALID" InvalidArgument "a month is YYYY-MM",
    "REPORT_TOO_LARGE" InvalidArgument "the report covers too many cells or units: narrow it",
    "AMOUNT_TOO_LARGE" FailedPrecondition "a charge is held: its units times its price does not fit",
];

#[cfg(test)]
mod tests {
    pm_runtime::catalogued_reasons_test!(super::CATALOG, pm_authz::reasons::CATALOG);
}

//! The Org service's rules, as pure functions over the API's messages: field validation, the NPI check
//! digit, period overlaps, cycle detection in the unit tree, and policy inheritance. Nothing here
//! touches the database; the handlers load what a rule needs and call it.
//!
//! Error messages name fields and resource names, never values: many fields here are PHI.

use std::collections::{BTreeMap, HashSet};

use pm_api::org::{
    AdministrativeGender, BillingProfile, ClaimForm, Coverage, Credential, CredentialState,
    EffectivePolicy, FieldSource, IntakeRecord, IntakeRequirement, Location, Organization, Patient,
    Provider, ServiceUnit, UnitKind, WorkflowRules,
};
use pm_api::types::Interval;
use pm_runtime::names::{self, NamePattern};
use pm_runtime::time::{Micros, is_valid, to_micros};
use pm_runtime::{ApiError, ApiResult, Violations};

pub use pm_runtime::names::patterns::{PROVIDER as PROVIDER_NAME, UNIT as UNIT_NAME};
/// The name pattern of a Billing resource a billing profile or a coverage names: written in full,
/// `organizations/{organization}/{collection}/{id}`; the short `{collection}/{id}` written before
/// Billing existed is still read (and qualified by [`qualify_billing_profile`] on every write).
fn billing_pattern(collection: BillingCollection) -> NamePattern {
    use pm_runtime::names::patterns;
    match collection {
        BillingCollection::Entities => patterns::BILLING_ENTITY,
        BillingCollection::FeeSchedules => patterns::FEE_SCHEDULE,
        BillingCollection::Payers => patterns::PAYER,
        BillingCollection::Contracts => patterns::CONTRACT,
    }
}

/// The Billing collections Org's resources refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingCollection {
    /// `billingEntities`
    Entities,
    /// `feeSchedules`
    FeeSchedules,
    /// `payers`
    Payers,
    /// `contracts`
    Contracts,
}

impl BillingCollection {
    /// Its collection id in resource names.
    pub fn id(self) -> &'static str {
        match self {
            BillingCollection::Entities => "billingEntities",
            BillingCollection::FeeSchedules => "feeSchedules",
            BillingCollection::Payers => "payers",
            BillingCollection::Contracts => "contracts",
        }
    }
}

const MAX_DISPLAY_NAME: usize = 200;
const MAX_TEXT: usize = 200;
/// Deeper than any real unit tree; a bound that stops a walk over corrupt data.
pub const MAX_UNIT_DEPTH: usize = 64;

fn check_display_name(v: &mut Violations, field: &str, value: &str) {
    if value.trim().is_empty() {
        v.add(field, "must not be empty");
    } else if value.chars().count() > MAX_DISPLAY_NAME {
        v.add(
            field,
            format!("must be at most {MAX_DISPLAY_NAME} characters"),
        );
    }
}

fn check_text(v: &mut Violations, field: &str, value: &str, required: bool) {
    if required && value.trim().is_empty() {
        v.add(field, "must not be empty");
    } else if value.chars().count() > MAX_TEXT {
        v.add(field, format!("must be at most {MAX_TEXT} characters"));
    }
}

/// Whether `zone` is an IANA time zone name.
pub fn is_time_zone(zone: &str) -> bool {
    zone.parse::<chrono_tz::Tz>().is_ok()
}

fn check_time_zone(v: &mut Violations, field: &str, zone: &str) {
    if zone.is_empty() {
        v.add(field, "must not be empty");
    } else if !is_time_zone(zone) {
        v.add(field, "must be an IANA time zone such as America/New_York");
    }
}

/// A reference to a Billing resource of `collection` in the organization of `owner` (a name of
/// the referring resource; "" when it has none yet, then any organization's form is accepted).
fn check_billing_reference(
    v: &mut Violations,
    field: &str,
    value: &str,
    collection: BillingCollection,
    owner: &str,
) {
    if value.is_empty() {
        return;
    }
    let organization = if owner.is_empty() {
        names::organization_of(value)
    } else {
        names::organization_of(owner)
    };
    let full = names::qualified(organization, collection.id(), value);
    let pattern = billing_pattern(collection);
    if pattern.parse(field, &full).is_err() || names::organization_of(&full) != organization {
        v.add(
            field,
            format!(
                "must name a Billing resource of this organization, like {}",
                pattern.template()
            ),
        );
    }
}

/// The profile with every Billing reference in its full form, `organizations/{o}/payers/{p}`
/// (short and bare forms qualified under `organization`): the form Org writes.
pub fn qualify_billing_profile(organization: &str, profile: &mut BillingProfile) {
    use BillingCollection as C;
    let full = |c: C, name: &str| names::qualified(organization, c.id(), name);
    profile.billing_entity = full(C::Entities, &profile.billing_entity);
    profile.fee_schedule = full(C::FeeSchedules, &profile.fee_schedule);
    for accepted in &mut profile.accepted_payers {
        accepted.payer = full(C::Payers, &accepted.payer);
        accepted.contract = full(C::Contracts, &accepted.contract);
    }
}

/// Every Billing resource `profile` names, as (field, collection, name), in field order.
pub fn billing_references(profile: &BillingProfile) -> Vec<(String, BillingCollection, String)> {
    use BillingCollection as C;
    let mut found = vec![
        (
            "billing_profile.billing_entity".to_string(),
            C::Entities,
            profile.billing_entity.clone(),
        ),
        (
            "billing_profile.fee_schedule".to_string(),
            C::FeeSchedules,
            profile.fee_schedule.clone(),
        ),
    ];
    for (i, accepted) in profile.accepted_payers.iter().enumerate() {
        found.push((
            format!("billing_profile.accepted_payers[{i}].payer"),
            C::Payers,
            accepted.payer.clone(),
        ));
        found.push((
            format!("billing_profile.accepted_payers[{i}].contract"),
            C::Contracts,
            accepted.contract.clone(),
        ));
    }
    found.retain(|(_, _, name)| !name.is_empty());
    found
}

/// Checks that `unit` names a unit of the same organization as `owner`.
pub fn check_same_org_unit(field: &str, unit: &str, owner: &str) -> ApiResult<()> {
    let mut v = Violations::new("");
    check_unit_in_org(&mut v, field, unit, owner);
    v.finish()
}

/// A reference to a unit of the same organization as `owner`.
fn check_unit_in_org(v: &mut Violations, field: &str, unit: &str, owner: &str) {
    if UNIT_NAME.parse(field, unit).is_err() {
        v.add(
            field,
            format!("must be a resource name like {}", UNIT_NAME.template()),
        );
    } else if names::organization_of(unit) != names::organization_of(owner) {
        v.add(field, "must be a unit of the same organization");
    }
}

fn enum_is<E: TryFrom<i32>>(value: i32) -> bool {
    E::try_from(value).is_ok()
}

/// Validates an organization's own fields.
pub fn validate_organization(org: &Organization) -> ApiResult<()> {
    let mut v = Violations::new("organization");
    check_display_name(&mut v, "display_name", &org.display_name);
    check_time_zone(&mut v, "time_zone", &org.time_zone);
    v.finish()
}

/// Validates a unit's own fields (references are checked for shape here, for existence by the caller).
pub fn validate_unit(unit: &ServiceUnit) -> ApiResult<()> {
    let mut v = Violations::new("service_unit");
    check_display_name(&mut v, "display_name", &unit.display_name);
    if unit.kind == UnitKind::Unspecified as i32 || !enum_is::<UnitKind>(unit.kind) {
        v.add("kind", "must be one of the UNIT_KIND_* values");
    }
    if !unit.parent_unit.is_empty() {
        check_unit_in_org(&mut v, "parent_unit", &unit.parent_unit, &unit.name);
        if unit.parent_unit == unit.name {
            v.add("parent_unit", "a unit cannot be its own parent");
        }
    }
    if let Some(profile) = &unit.billing_profile {
        check_billing_profile(&mut v, profile, &unit.name);
    }
    if let Some(rules) = &unit.workflow_rules {
        check_workflow_rules(&mut v, rules);
    }
    v.finish()
}

/// Validates the shape of a billing profile's fields (`prefix`: the field path of the profile's
/// owner, e.g. `service_unit`), its references as names of `owner`'s organization.
pub fn validate_billing_profile(
    prefix: &str,
    profile: &BillingProfile,
    owner: &str,
) -> ApiResult<()> {
    let mut v = Violations::new(prefix);
    check_billing_profile(&mut v, profile, owner);
    v.finish()
}

fn check_billing_profile(v: &mut Violations, p: &BillingProfile, unit: &str) {
    check_billing_reference(
        v,
        "billing_profile.billing_entity",
        &p.billing_entity,
        BillingCollection::Entities,
        unit,
    );
    check_billing_reference(
        v,
        "billing_profile.fee_schedule",
        &p.fee_schedule,
        BillingCollection::FeeSchedules,
        unit,
    );
    let mut payers = HashSet::new();
    for (i, contract) in p.accepted_payers.iter().enumerate() {
        let field = format!("billing_profile.accepted_payers[{i}].payer");
        if contract.payer.is_empty() {
            v.add(&field, "must not be empty");
        } else {
            check_billing_reference(v, &field, &contract.payer, BillingCollection::Payers, unit);
        }
        let short = contract.payer.rsplit('/').next().unwrap_or_default();
        if !payers.insert(short) {
            v.add(&field, "is listed twice");
        }
        check_billing_reference(
            v,
            &format!("billing_profile.accepted_payers[{i}].contract"),
            &contract.contract,
            BillingCollection::Contracts,
            unit,
        );
    }
    let pos = &p.place_of_service;
    let is_pos_code = pos.len() == 2 && pos.bytes().all(|b| b.is_ascii_digit());
    if !pos.is_empty() && !is_pos_code {
        v.add(
            "billing_profile.place_of_service",
            "must be a two-digit CMS place-of-service code",
        );
    }
    if !enum_is::<ClaimForm>(p.claim_form) {
        v.add(
            "billing_profile.claim_form",
            "must be one of the CLAIM_FORM_* values",
        );
    }
}

fn is_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 63
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn check_workflow_rules(v: &mut Violations, r: &WorkflowRules) {
    let mut seen = HashSet::new();
    for (i, requirement) in r.intake_requirements.iter().enumerate() {
        let field = format!("workflow_rules.intake_requirements[{i}]");
        if *requirement == IntakeRequirement::Unspecified as i32
            || !enum_is::<IntakeRequirement>(*requirement)
        {
            v.add(&field, "must be one of the INTAKE_REQUIREMENT_* values");
        } else if !seen.insert(*requirement) {
            v.add(&field, "is listed twice");
        }
    }
    for (i, code) in r.allowed_visit_types.iter().enumerate() {
        v.check(
            is_code(code),
            format!("workflow_rules.allowed_visit_types[{i}]"),
            "must be a visit type code: lowercase letters, digits, dashes and underscores",
        );
    }
    let mut steps = HashSet::new();
    for (i, step) in r.care_pathway_steps.iter().enumerate() {
        let field = format!("workflow_rules.care_pathway_steps[{i}]");
        if !is_code(&step.id) {
            v.add(
                format!("{field}.id"),
                "must be lowercase letters, digits, dashes and underscores",
            );
        } else if !steps.insert(step.id.as_str()) {
            v.add(format!("{field}.id"), "is used by another step");
        }
        check_display_name(v, &format!("{field}.display_name"), &step.display_name);
    }
    for (i, tag) in r.reporting_tags.iter().enumerate() {
        check_text(v, &format!("workflow_rules.reporting_tags[{i}]"), tag, true);
    }
}

/// Validates a location.
pub fn validate_location(location: &Location) -> ApiResult<()> {
    let mut v = Violations::new("location");
    check_display_name(&mut v, "display_name", &location.display_name);
    check_time_zone(&mut v, "time_zone", &location.time_zone);
    if let Some(address) = &location.address {
        let region = &address.region_code;
        v.check(
            region.is_empty()
                || (region.len() == 2 && region.bytes().all(|b| b.is_ascii_uppercase())),
            "address.region_code",
            "must be a two-letter CLDR region code such as US",
        );
        for (i, line) in address.address_lines.iter().enumerate() {
            check_text(&mut v, &format!("address.address_lines[{i}]"), line, false);
        }
    }
    v.finish()
}

/// Whether `npi` is ten digits with a valid Luhn check digit over the `80840` prefix (CMS).
pub fn is_valid_npi(npi: &str) -> bool {
    if npi.len() != 10 || !npi.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let digits = "80840"
        .bytes()
        .chain(npi.bytes())
        .map(|b| u32::from(b - b'0'));
    let sum: u32 = digits
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Validates a provider.
pub fn validate_provider(provider: &Provider) -> ApiResult<()> {
    let mut v = Violations::new("provider");
    check_display_name(&mut v, "display_name", &provider.display_name);
    v.check(
        is_valid_npi(&provider.npi),
        "npi",
        "must be a 10-digit National Provider Identifier with a valid check digit",
    );
    let taxonomy = provider.taxonomy_code.as_bytes();
    v.check(
        taxonomy.is_empty()
            || (taxonomy.len() == 10
                && taxonomy[9] == b'X'
                && taxonomy[..9]
                    .iter()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())),
        "taxonomy_code",
        "must be a 10-character healthcare provider taxonomy code such as 207Q00000X",
    );
    v.finish()
}

/// A validated half-open period in microseconds; `end` None is open-ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Inclusive start.
    pub start: Micros,
    /// Exclusive end, if any.
    pub end: Option<Micros>,
}

impl Period {
    /// Whether two periods share an instant.
    pub fn overlaps(&self, other: &Period) -> bool {
        let self_before_other_ends = other.end.is_none_or(|end| self.start < end);
        let other_before_self_ends = self.end.is_none_or(|end| other.start < end);
        self_before_other_ends && other_before_self_ends
    }

    /// Whether the period holds `instant`.
    pub fn contains(&self, instant: Micros) -> bool {
        self.start <= instant && self.end.is_none_or(|end| instant < end)
    }
}

fn check_period(v: &mut Violations, field: &str, interval: Option<&Interval>) -> Option<Period> {
    let Some(interval) = interval else {
        v.add(field, "is required");
        return None;
    };
    let Some(start) = interval.start_time.as_ref() else {
        v.add(format!("{field}.start_time"), "is required");
        return None;
    };
    if !is_valid(start) {
        v.add(format!("{field}.start_time"), "is not a valid timestamp");
        return None;
    }
    let end = match interval.end_time.as_ref() {
        None => None,
        Some(end) if !is_valid(end) => {
            v.add(format!("{field}.end_time"), "is not a valid timestamp");
            return None;
        }
        Some(end) => Some(to_micros(end)),
    };
    let period = Period {
        start: to_micros(start),
        end,
    };
    if period.end.is_some_and(|end| end <= period.start) {
        v.add(format!("{field}.end_time"), "must be after start_time");
        return None;
    }
    Some(period)
}

/// The period of a stored interval (already validated on write).
pub fn period_of(interval: Option<&Interval>) -> Option<Period> {
    let mut scratch = Violations::new("");
    check_period(&mut scratch, "", interval)
}

/// Validates a credential's own fields and returns its period.
pub fn validate_credential(credential: &Credential) -> ApiResult<Period> {
    let mut v = Violations::new("credential");
    check_unit_in_org(&mut v, "unit", &credential.unit, &credential.name);
    if credential.state == CredentialState::Unspecified as i32
        || !enum_is::<CredentialState>(credential.state)
    {
        v.add("state", "must be one of the CREDENTIAL_STATE_* values");
    }
    let period = check_period(
        &mut v,
        "effective_period",
        credential.effective_period.as_ref(),
    );
    v.finish()?;
    period.ok_or_else(|| ApiError::invalid("credential.effective_period", "is required"))
}

/// Refuses a credential whose period overlaps another live credential of the same provider and unit.
pub fn check_no_credential_overlap(period: &Period, others: &[(String, Period)]) -> ApiResult<()> {
    match others.iter().find(|(_, other)| other.overlaps(period)) {
        None => Ok(()),
        Some((name, _)) => Err(ApiError::precondition(
            "CREDENTIAL_PERIOD_OVERLAP",
            format!("the effective period overlaps credential {name} for the same unit"),
        )
        .with_meta("conflictingCredential", name.clone())),
    }
}

/// The earliest birth year accepted: nobody alive was born before it, so an earlier year is a typo
/// or a probe (year 0 parses as a proleptic Gregorian date but is not a real birth date).
pub const MIN_BIRTH_YEAR: i32 = 1850;

/// Checks a birth date: a real calendar date from [`MIN_BIRTH_YEAR`] to `today`; the message names
/// the rule broken, never the value (it is PHI).
pub fn check_birth_date(
    date: &pm_api::types::Date,
    today: chrono::NaiveDate,
) -> Result<(), String> {
    let month = u32::try_from(date.month)
        .ok()
        .filter(|m| (1..=12).contains(m));
    let day = u32::try_from(date.day)
        .ok()
        .filter(|d| (1..=31).contains(d));
    let (Some(month), Some(day)) = (month, day) else {
        return Err("month must be 1 to 12 and day 1 to 31".into());
    };
    if date.year < MIN_BIRTH_YEAR {
        return Err(format!("year must be {MIN_BIRTH_YEAR} or later"));
    }
    match chrono::NaiveDate::from_ymd_opt(date.year, month, day) {
        None => Err("is not a valid calendar date".into()),
        Some(date) if date > today => Err("must not be in the future".into()),
        Some(_) => Ok(()),
    }
}

/// The birth date a patient search asks for, as the store indexes it (`YYYY-MM-DD`); INVALID_ARGUMENT
/// on `birth_date` naming the rule broken (never the value) when it is not a possible birth date.
pub fn search_birth_date(date: &pm_api::types::Date) -> ApiResult<String> {
    check_birth_date(date, chrono::Utc::now().date_naive())
        .map_err(|rule| ApiError::invalid("birth_date", rule))?;
    Ok(birth_date_key(date))
}

/// A birth date as the store indexes it: `YYYY-MM-DD`.
pub fn birth_date_key(date: &pm_api::types::Date) -> String {
    format!("{:04}-{:02}-{:02}", date.year, date.month, date.day)
}

/// Validates a patient (today is the UTC date, to refuse future birth dates).
pub fn validate_patient(patient: &Patient, today: chrono::NaiveDate) -> ApiResult<()> {
    let mut v = Violations::new("patient");
    check_text(&mut v, "given_name", &patient.given_name, true);
    check_text(&mut v, "family_name", &patient.family_name, true);
    match &patient.birth_date {
        None => v.add("birth_date", "is required"),
        Some(date) => {
            if let Err(rule) = check_birth_date(date, today) {
                v.add("birth_date", rule);
            }
        }
    }
    v.check(
        enum_is::<AdministrativeGender>(patient.gender),
        "gender",
        "must be one of the ADMINISTRATIVE_GENDER_* values",
    );
    let mut seen = HashSet::new();
    for (i, id) in patient.identifiers.iter().enumerate() {
        check_text(
            &mut v,
            &format!("identifiers[{i}].system"),
            &id.system,
            true,
        );
        check_text(&mut v, &format!("identifiers[{i}].value"), &id.value, true);
        if !seen.insert((&id.system, &id.value)) {
            v.add(format!("identifiers[{i}]"), "is listed twice");
        }
    }
    v.finish()
}

/// The lookup key of a patient identifier: `system|value`.
pub fn identifier_key(system: &str, value: &str) -> String {
    format!("{system}|{value}")
}

/// Validates a coverage and returns its period.
pub fn validate_coverage(coverage: &Coverage) -> ApiResult<Period> {
    let mut v = Violations::new("coverage");
    if coverage.payer.is_empty() {
        v.add("payer", "must not be empty");
    } else {
        check_billing_reference(
            &mut v,
            "payer",
            &coverage.payer,
            BillingCollection::Payers,
            &coverage.name,
        );
    }
    check_text(&mut v, "member_id", &coverage.member_id, true);
    check_text(&mut v, "plan", &coverage.plan, false);
    v.check(
        coverage.priority >= 1,
        "priority",
        "must be 1 (primary) or more",
    );
    let period = check_period(
        &mut v,
        "effective_period",
        coverage.effective_period.as_ref(),
    );
    v.finish()?;
    period.ok_or_else(|| ApiError::invalid("coverage.effective_period", "is required"))
}

/// Visit-type codes one intake record may name at most.
pub const MAX_INTAKE_VISIT_TYPES: usize = 50;
/// Intake records one enrollment may hold at most: the enrollment is one stored document, read on
/// every slot search, so its size stays bounded.
pub const MAX_INTAKE_RECORDS: usize = 200;
const MAX_AUTHORIZATION_NUMBER: usize = 100;
const MAX_VISIT_TYPE_CODE: usize = 100;
const MAX_NOTE: usize = 2000;

/// Validates an intake record sent to RecordIntake (fields under `record.`). A missing requirement or
/// effective time is FIELD_REQUIRED; anything else wrong with the record (an expiry not after the
/// effective time, a referral without its referring provider, a prior authorization without its
/// number, sizes) is INTAKE_RECORD_INVALID. Every violation of the kind reported is listed, so that a
/// client can fix them in one go; the descriptions name fields, never the values (they are PHI).
pub fn validate_intake_record(record: &IntakeRecord) -> ApiResult<()> {
    let mut required = Violations::new("record");
    let requirement = IntakeRequirement::try_from(record.requirement)
        .ok()
        .filter(|r| *r != IntakeRequirement::Unspecified);
    required.check(
        requirement.is_some(),
        "requirement",
        "must be one of the INTAKE_REQUIREMENT_* values",
    );
    required.check(
        record.effective_time.is_some(),
        "effective_time",
        "is required",
    );
    required.finish().map_err(|e| e.because("FIELD_REQUIRED"))?;

    let mut v = Violations::new("record");
    let effective = record.effective_time.as_ref().filter(|t| is_valid(t));
    v.check(
        effective.is_some(),
        "effective_time",
        "is not a valid timestamp",
    );
    if let Some(expire) = &record.expire_time {
        if !is_valid(expire) {
            v.add("expire_time", "is not a valid timestamp");
        } else if effective.is_some_and(|start| to_micros(expire) <= to_micros(start)) {
            v.add("expire_time", "must be after effective_time");
        }
    }
    check_text(&mut v, "recorded_by", &record.recorded_by, false);
    let referral = requirement == Some(IntakeRequirement::Referral);
    if referral && record.referring_provider.trim().is_empty() {
        v.add(
            "referring_provider",
            "is required for a referral (the referring provider's NPI or name)",
        );
    } else {
        check_text(
            &mut v,
            "referring_provider",
            &record.referring_provider,
            false,
        );
    }
    let prior_auth = requirement == Some(IntakeRequirement::PriorAuthorization);
    if prior_auth && record.authorization_number.trim().is_empty() {
        v.add(
            "authorization_number",
            "is required for a prior authorization",
        );
    } else if record.authorization_number.chars().count() > MAX_AUTHORIZATION_NUMBER {
        v.add(
            "authorization_number",
            format!("must be at most {MAX_AUTHORIZATION_NUMBER} characters"),
        );
    }
    if record.visit_types.len() > MAX_INTAKE_VISIT_TYPES {
        v.add(
            "visit_types",
            format!("must name at most {MAX_INTAKE_VISIT_TYPES} visit types"),
        );
    }
    for (i, code) in record.visit_types.iter().enumerate() {
        let length = code.chars().count();
        v.check(
            length > 0 && length <= MAX_VISIT_TYPE_CODE && code.trim() == code,
            format!("visit_types[{i}]"),
            format!("must be a visit type code of 1 to {MAX_VISIT_TYPE_CODE} characters"),
        );
    }
    v.check(
        record.visit_count >= 0,
        "visit_count",
        "must not be negative",
    );
    v.check(
        record.note.chars().count() <= MAX_NOTE,
        "note",
        format!("must be at most {MAX_NOTE} characters"),
    );
    v.finish().map_err(|e| e.because("INTAKE_RECORD_INVALID"))
}

/// Validates a RevokeIntake request's own fields: the record's id and a reason are required
/// (FIELD_REQUIRED); the reason is at most 200 characters.
pub fn validate_revocation(record_id: &str, reason: &str) -> ApiResult<()> {
    let mut required = Violations::new("");
    required.check(!record_id.trim().is_empty(), "record_id", "is required");
    required.check(!reason.trim().is_empty(), "reason", "is required");
    required.finish().map_err(|e| e.because("FIELD_REQUIRED"))?;
    let mut v = Violations::new("");
    check_text(&mut v, "reason", reason, true);
    v.finish()
}

/// Refuses a coverage that shares its priority with another coverage over an overlapping period.
pub fn check_no_coverage_overlap(
    coverage: &Coverage,
    period: &Period,
    others: &[(String, i32, Period)],
) -> ApiResult<()> {
    match others
        .iter()
        .find(|(_, priority, other)| *priority == coverage.priority && other.overlaps(period))
    {
        None => Ok(()),
        Some((name, _, _)) => Err(ApiError::precondition(
            "COVERAGE_PRIORITY_OVERLAP",
            format!("coverage {name} has the same priority over an overlapping period"),
        )
        .with_meta("conflictingCoverage", name.clone())),
    }
}

/// Refuses making `new_parent` the parent of `unit` when `new_parent` is `unit` or lies below it.
/// `ancestors_of_new_parent` is the chain from `new_parent` upward (nearest first).
pub fn check_no_cycle(unit: &str, ancestors_of_new_parent: &[String]) -> ApiResult<()> {
    if ancestors_of_new_parent.iter().any(|a| a == unit) {
        return Err(ApiError::precondition(
            "UNIT_CYCLE",
            format!("moving {unit} there would make it its own ancestor"),
        )
        .with_meta("unit", unit)
        .with_violation(
            "service_unit.parent_unit",
            "is the unit itself or one of its descendants",
        ));
    }
    Ok(())
}

/// A unit's own settings, one level of the lineage.
pub struct PolicyLevel<'a> {
    /// The unit's name.
    pub unit: &'a str,
    /// Its own billing profile.
    pub billing: Option<&'a BillingProfile>,
    /// Its own workflow rules.
    pub workflow: Option<&'a WorkflowRules>,
}

/// Resolves inheritance over `lineage` (root first, the unit last): each field takes the value of the
/// nearest unit that sets it, and `sources` says which unit that was.
pub fn effective_policy(lineage: &[PolicyLevel<'_>]) -> EffectivePolicy {
    let mut billing = BillingProfile::default();
    let mut workflow = WorkflowRules::default();
    let mut sources: BTreeMap<&'static str, String> = BTreeMap::new();
    for level in lineage {
        let mut set = |field: &'static str| {
            sources.insert(field, level.unit.to_string());
        };
        if let Some(own) = level.billing {
            if !own.billing_entity.is_empty() {
                billing.billing_entity.clone_from(&own.billing_entity);
                set("billing_profile.billing_entity");
            }
            if !own.accepted_payers.is_empty() {
                billing.accepted_payers.clone_from(&own.accepted_payers);
                set("billing_profile.accepted_payers");
            }
            if own.self_pay_allowed.is_some() {
                billing.self_pay_allowed = own.self_pay_allowed;
                set("billing_profile.self_pay_allowed");
            }
            if !own.fee_schedule.is_empty() {
                billing.fee_schedule.clone_from(&own.fee_schedule);
                set("billing_profile.fee_schedule");
            }
            if !own.place_of_service.is_empty() {
                billing.place_of_service.clone_from(&own.place_of_service);
                set("billing_profile.place_of_service");
            }
            if own.claim_form != ClaimForm::Unspecified as i32 {
                billing.claim_form = own.claim_form;
                set("billing_profile.claim_form");
            }
        }
        if let Some(own) = level.workflow {
            if !own.intake_requirements.is_empty() {
                workflow
                    .intake_requirements
                    .clone_from(&own.intake_requirements);
                set("workflow_rules.intake_requirements");
            }
            if !own.allowed_visit_types.is_empty() {
                workflow
                    .allowed_visit_types
                    .clone_from(&own.allowed_visit_types);
                set("workflow_rules.allowed_visit_types");
            }
            if !own.care_pathway_steps.is_empty() {
                workflow
                    .care_pathway_steps
                    .clone_from(&own.care_pathway_steps);
                set("workflow_rules.care_pathway_steps");
            }
            if !own.reporting_tags.is_empty() {
                workflow.reporting_tags.clone_from(&own.reporting_tags);
                set("workflow_rules.reporting_tags");
            }
        }
    }
    EffectivePolicy {
        unit: lineage
            .last()
            .map(|l| l.unit.to_string())
            .unwrap_or_default(),
        lineage: lineage.iter().map(|l| l.unit.to_string()).collect(),
        billing_profile: Some(billing),
        workflow_rules: Some(workflow),
        sources: sources
            .into_iter()
            .map(|(field, unit)| FieldSource {
                field: field.to_string(),
                unit,
            })
            .collect(),
    }
}

/// Checks a pathway step against a unit's effective pathway: required and known when the unit has
/// one, empty when it has none.
pub fn check_pathway_step(field: &str, step: &str, rules: &WorkflowRules) -> ApiResult<()> {
    let steps = &rules.care_pathway_steps;
    if steps.is_empty() {
        if step.is_empty() {
            return Ok(());
        }
        return Err(ApiError::invalid(
            field,
            "must be empty: the unit has no care pathway",
        ));
    }
    if step.is_empty() {
        return Err(ApiError::invalid(
            field,
            "is required: the unit has a care pathway",
        ));
    }
    if steps.iter().any(|s| s.id == step) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            "is not a step of the unit's care pathway",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pm_api::org::{CarePathwayStep, PayerContract};
    use prost_types::Timestamp;

    fn ts(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn npi_check_digit_matches_the_cms_luhn_rule() {
        // Valid and invalid examples from notes/oracles.md (python-stdnum agrees).
        assert!(is_valid_npi("1234567893"));
        assert!(!is_valid_npi("1234567890"));
        assert!(!is_valid_npi("123456789"));
        assert!(!is_valid_npi("12345678a3"));
    }

    #[test]
    fn periods_are_half_open_and_open_ended() {
        let a = Period {
            start: 0,
            end: Some(10),
        };
        let b = Period {
            start: 10,
            end: Some(20),
        };
        let open = Period {
            start: 15,
            end: None,
        };
        assert!(!a.overlaps(&b), "touching periods do not overlap");
        assert!(b.overlaps(&open));
        assert!(open.overlaps(&Period {
            start: 1_000,
            end: None
        }));
        assert!(!a.overlaps(&open));
        assert!(a.contains(0) && !a.contains(10));
    }

    #[test]
    fn end_before_start_is_invalid() {
        let credential = Credential {
            name: "organizations/a/providers/p/credentials/c".into(),
            unit: "organizations/a/units/u".into(),
            state: CredentialState::Active as i32,
            effective_period: Some(Interval {
                start_time: ts(100),
                end_time: ts(50),
            }),
            ..Default::default()
        };
        let err = validate_credential(&credential).expect_err("end before start");
        assert_eq!(err.violations[0].0, "credential.effective_period.end_time");
    }

    #[test]
    fn credential_in_another_organization_is_refused() {
        let credential = Credential {
            name: "organizations/a/providers/p/credentials/c".into(),
            unit: "organizations/b/units/u".into(),
            state: CredentialState::Active as i32,
            effective_period: Some(Interval {
                start_time: ts(0),
                end_time: None,
            }),
            ..Default::default()
        };
        let err = validate_credential(&credential).expect_err("cross-organization");
        assert_eq!(err.violations[0].0, "credential.unit");
    }

    #[test]
    fn overlapping_credential_names_the_conflict() {
        let period = Period {
            start: 5,
            end: None,
        };
        let others = vec![(
            "organizations/a/providers/p/credentials/old".to_string(),
            Period {
                start: 0,
                end: Some(6),
            },
        )];
        let err = check_no_credential_overlap(&period, &others).expect_err("overlap");
        assert_eq!(err.reason, "CREDENTIAL_PERIOD_OVERLAP");
        assert!(
            check_no_credential_overlap(
                &Period {
                    start: 6,
                    end: None
                },
                &others
            )
            .is_ok()
        );
    }

    #[test]
    fn unit_validation_reports_every_bad_field() {
        let unit = ServiceUnit {
            name: "organizations/a/units/u".into(),
            display_name: " ".into(),
            kind: 0,
            parent_unit: "organizations/a/units/u".into(),
            billing_profile: Some(BillingProfile {
                place_of_service: "1".into(),
                accepted_payers: vec![
                    PayerContract {
                        payer: "payers/x".into(),
                        contract: String::new(),
                    },
                    PayerContract {
                        payer: "payers/x".into(),
                        contract: String::new(),
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = validate_unit(&unit).expect_err("bad unit");
        let fields: Vec<&str> = err.violations.iter().map(|(f, _)| f.as_str()).collect();
        for expected in [
            "service_unit.display_name",
            "service_unit.kind",
            "service_unit.parent_unit",
            "service_unit.billing_profile.place_of_service",
            "service_unit.billing_profile.accepted_payers[1].payer",
        ] {
            assert!(
                fields.contains(&expected),
                "{expected} missing from {fields:?}"
            );
        }
    }

    #[test]
    fn unknown_time_zone_is_invalid() {
        let org = Organization {
            display_name: "Acme".into(),
            time_zone: "Mars/Olympus".into(),
            ..Default::default()
        };
        let err = validate_organization(&org).expect_err("bad zone");
        assert_eq!(err.violations[0].0, "organization.time_zone");
        assert!(is_time_zone("America/Chicago"));
    }

    #[test]
    fn cycle_is_detected_through_ancestors() {
        let chain = vec![
            "organizations/a/units/child".to_string(),
            "organizations/a/units/root".to_string(),
        ];
        let err = check_no_cycle("organizations/a/units/root", &chain).expect_err("cycle");
        assert_eq!(err.reason, "UNIT_CYCLE");
        assert!(check_no_cycle("organizations/a/units/other", &chain).is_ok());
    }

    #[test]
    fn effective_policy_takes_the_nearest_value_and_names_its_source() {
        let root_billing = BillingProfile {
            billing_entity: "billingEntities/acme".into(),
            place_of_service: "11".into(),
            self_pay_allowed: Some(true),
            claim_form: ClaimForm::Cms1500 as i32,
            ..Default::default()
        };
        let program_billing = BillingProfile {
            place_of_service: "02".into(),
            self_pay_allowed: Some(false),
            ..Default::default()
        };
        let program_rules = WorkflowRules {
            care_pathway_steps: vec![CarePathwayStep {
                id: "intake".into(),
                display_name: "Intake".into(),
            }],
            ..Default::default()
        };
        let policy = effective_policy(&[
            PolicyLevel {
                unit: "organizations/a/units/root",
                billing: Some(&root_billing),
                workflow: None,
            },
            PolicyLevel {
                unit: "organizations/a/units/ccm",
                billing: Some(&program_billing),
                workflow: Some(&program_rules),
            },
        ]);
        let billing = policy.billing_profile.clone().unwrap_or_default();
        assert_eq!(billing.billing_entity, "billingEntities/acme");
        assert_eq!(billing.place_of_service, "02");
        assert_eq!(
            billing.self_pay_allowed,
            Some(false),
            "an explicit false overrides an inherited true"
        );
        let source = |field: &str| {
            policy
                .sources
                .iter()
                .find(|s| s.field == field)
                .map(|s| s.unit.clone())
        };
        assert_eq!(
            source("billing_profile.billing_entity").as_deref(),
            Some("organizations/a/units/root")
        );
        assert_eq!(
            source("billing_profile.place_of_service").as_deref(),
            Some("organizations/a/units/ccm")
        );
        assert_eq!(source("workflow_rules.reporting_tags"), None);
        assert_eq!(policy.lineage.len(), 2);
    }

    #[test]
    fn pathway_step_must_match_the_unit() {
        let rules = WorkflowRules {
            care_pathway_steps: vec![CarePathwayStep {
                id: "intake".into(),
                display_name: "Intake".into(),
            }],
            ..Default::default()
        };
        assert!(check_pathway_step("f", "intake", &rules).is_ok());
        assert!(check_pathway_step("f", "", &rules).is_err());
        assert!(check_pathway_step("f", "other", &rules).is_err());
        assert!(check_pathway_step("f", "", &WorkflowRules::default()).is_ok());
        assert!(check_pathway_step("f", "intake", &WorkflowRules::default()).is_err());
    }

    #[test]
    fn future_birth_date_and_impossible_dates_are_invalid() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap_or_default();
        let mut patient = Patient {
            given_name: "Ada".into(),
            family_name: "Lovelace".into(),
            birth_date: Some(pm_api::types::Date {
                year: 2027,
                month: 1,
                day: 1,
            }),
            ..Default::default()
        };
        assert!(validate_patient(&patient, today).is_err());
        patient.birth_date = Some(pm_api::types::Date {
            year: 2023,
            month: 2,
            day: 29,
        });
        assert!(validate_patient(&patient, today).is_err());
        patient.birth_date = Some(pm_api::types::Date {
            year: 1990,
            month: 2,
            day: 28,
        });
        assert!(validate_patient(&patient, today).is_ok());
    }

    #[test]
    fn impossible_birth_dates_name_the_field() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap_or_default();
        let date = |year, month, day| pm_api::types::Date { year, month, day };
        for (year, month, day) in [
            (0, 1, 1),
            (1849, 12, 31),
            (-1, 6, 1),
            (i32::MIN, 1, 1),
            (i32::MAX, 1, 1),
            (2026, 11, 28),
            (1990, 0, 1),
            (1990, 13, 1),
            (1990, -1, 1),
            (1990, i32::MAX, 1),
            (1990, 1, 0),
            (1990, 1, 32),
            (1990, 4, 31),
            (1990, 2, 29),
            (1990, 1, i32::MIN),
        ] {
            assert!(
                check_birth_date(&date(year, month, day), today).is_err(),
                "{year}-{month}-{day} accepted"
            );
            let patient = Patient {
                given_name: "Ada".into(),
                family_name: "Lovelace".into(),
                birth_date: Some(date(year, month, day)),
                ..Default::default()
            };
            let err = validate_patient(&patient, today).err();
            let fields: Vec<&str> = err
                .as_ref()
                .map(|e| e.violations.iter().map(|(f, _)| f.as_str()).collect())
                .unwrap_or_default();
            assert_eq!(fields, ["patient.birth_date"], "{year}-{month}-{day}");
            assert_eq!(err.map(|e| e.code), Some(tonic::Code::InvalidArgument));
        }
        for (year, month, day) in [(1850, 1, 1), (2000, 2, 29), (2026, 11, 27), (1990, 12, 31)] {
            assert_eq!(check_birth_date(&date(year, month, day), today), Ok(()));
        }
    }

    #[test]
    fn coverage_priority_overlap_is_refused() {
        let coverage = Coverage {
            priority: 1,
            ..Default::default()
        };
        let period = Period {
            start: 0,
            end: None,
        };
        let others = vec![
            (
                "c1".to_string(),
                1,
                Period {
                    start: -5,
                    end: Some(1),
                },
            ),
            ("c2".to_string(), 2, period),
        ];
        assert_eq!(
            check_no_coverage_overlap(&coverage, &period, &others)
                .expect_err("overlap")
                .reason,
            "COVERAGE_PRIORITY_OVERLAP"
        );
        let secondary = Coverage {
            priority: 3,
            ..Default::default()
        };
        assert!(check_no_coverage_overlap(&secondary, &period, &others).is_ok());
    }
}

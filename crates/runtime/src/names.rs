//! Resource names (AIP-122): `organizations/{organization}/units/{unit}`. Names are parsed segment by
//! segment against a pattern, never compared as string prefixes.

use crate::error::{ApiError, ApiResult};

/// The name pattern of every resource the services name across their boundaries, declared once (the
/// owning service's store kinds and every other service's validation use these).
pub mod patterns {
    use super::NamePattern;

    /// `organizations/{organization}`.
    pub const ORGANIZATION: NamePattern = NamePattern(&["organizations"]);
    /// `organizations/{organization}/units/{unit}`.
    pub const UNIT: NamePattern = NamePattern(&["organizations", "units"]);
    /// `organizations/{organization}/locations/{location}`.
    pub const LOCATION: NamePattern = NamePattern(&["organizations", "locations"]);
    /// `organizations/{organization}/providers/{provider}`.
    pub const PROVIDER: NamePattern = NamePattern(&["organizations", "providers"]);
    /// `organizations/{organization}/providers/{provider}/credentials/{credential}`.
    pub const CREDENTIAL: NamePattern = NamePattern(&["organizations", "providers", "credentials"]);
    /// `organizations/{organization}/patients/{patient}`.
    pub const PATIENT: NamePattern = NamePattern(&["organizations", "patients"]);
    /// `organizations/{organization}/patients/{patient}/enrollments/{enrollment}`.
    pub const ENROLLMENT: NamePattern = NamePattern(&["organizations", "patients", "enrollments"]);
    /// `organizations/{organization}/patients/{patient}/coverages/{coverage}`.
    pub const COVERAGE: NamePattern = NamePattern(&["organizations", "patients", "coverages"]);
    /// `organizations/{organization}/billingEntities/{billing_entity}` (Billing's).
    pub const BILLING_ENTITY: NamePattern = NamePattern(&["organizations", "billingEntities"]);
    /// `organizations/{organization}/payers/{payer}` (Billing's).
    pub const PAYER: NamePattern = NamePattern(&["organizations", "payers"]);
    /// `organizations/{organization}/contracts/{contract}` (Billing's).
    pub const CONTRACT: NamePattern = NamePattern(&["organizations", "contracts"]);
    /// `organizations/{organization}/feeSchedules/{fee_schedule}` (Billing's).
    pub const FEE_SCHEDULE: NamePattern = NamePattern(&["organizations", "feeSchedules"]);
}

/// The collection ids of a resource name pattern, outermost first: `["organizations", "units"]` is
/// `organizations/{organization}/units/{unit}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamePattern(pub &'static [&'static str]);

impl NamePattern {
    /// Parses `name`, returning the resource ids in order. `field` names the request field for the
    /// error.
    pub fn parse(&self, field: &str, name: &str) -> ApiResult<Vec<String>> {
        let segments: Vec<&str> = name.split('/').collect();
        let well_formed = segments.len() == self.0.len() * 2
            && segments
                .chunks(2)
                .zip(self.0)
                .all(|(pair, collection)| pair[0] == *collection && is_valid_id(pair[1]));
        if !well_formed {
            return Err(ApiError::invalid(
                field,
                format!("must be a resource name like {}", self.template()),
            )
            .because("RESOURCE_NAME_INVALID"));
        }
        Ok(segments.chunks(2).map(|pair| pair[1].to_string()).collect())
    }

    /// Checks `name` and returns it unchanged.
    pub fn check<'a>(&self, field: &str, name: &'a str) -> ApiResult<&'a str> {
        self.parse(field, name)?;
        Ok(name)
    }

    /// The pattern with placeholders, for messages.
    pub fn template(&self) -> String {
        self.0
            .iter()
            .map(|c| format!("{c}/{{{}}}", singular(c)))
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The collection id of the resource itself (`units`).
    pub fn collection_id(&self) -> &'static str {
        self.0.last().copied().unwrap_or_default()
    }

    /// The pattern of the parent resource, if any.
    pub fn parent(&self) -> Option<NamePattern> {
        match self.0.len() {
            0 | 1 => None,
            n => Some(NamePattern(&self.0[..n - 1])),
        }
    }
}

fn singular(collection: &str) -> &str {
    collection.strip_suffix('s').unwrap_or(collection)
}

/// Whether `id` is a valid resource id: 1 to 63 lowercase letters, digits and dashes starting with a
/// letter and not ending with a dash (AIP-122), or a UUID in lowercase hyphenated form.
pub fn is_valid_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    let aip = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    aip || (uuid::Uuid::try_parse(id).is_ok() && id.len() == 36 && id == id.to_ascii_lowercase())
}

/// The id for a new resource: the caller's choice when given and valid, a fresh UUIDv7 when empty.
pub fn choose_id(field: &str, requested: &str) -> ApiResult<String> {
    if requested.is_empty() {
        return Ok(uuid::Uuid::now_v7().to_string());
    }
    if !is_valid_id(requested) {
        return Err(ApiError::invalid(
            field,
            "must be 1 to 63 lowercase letters, digits and dashes, starting with a letter",
        )
        .because("RESOURCE_ID_INVALID"));
    }
    Ok(requested.to_string())
}

/// The organization a resource name belongs to (`organizations/acme` for anything under it).
pub fn organization_of(name: &str) -> &str {
    let mut cut = name.len();
    if let Some(first) = name.find('/') {
        cut = name[first + 1..]
            .find('/')
            .map_or(name.len(), |second| first + 1 + second);
    }
    &name[..cut]
}

/// The parent of a resource name (`organizations/acme` for `organizations/acme/units/x`), or "" for a
/// top-level resource.
pub fn parent_of(name: &str) -> &str {
    let mut parts = name.rmatch_indices('/');
    match (parts.next(), parts.next()) {
        (Some(_), Some((at, _))) => &name[..at],
        _ => "",
    }
}

/// A name under `organization` in its full form, `organizations/{o}/{collection}/{id}`, from that
/// form, the short `{collection}/{id}` (what billing profiles held before Billing existed) or a bare
/// `{id}`. "" stays "". A name under another organization is returned as it is: the caller's
/// pattern and scope checks refuse it.
pub fn qualified(organization: &str, collection: &str, name: &str) -> String {
    if name.is_empty() || name.starts_with("organizations/") {
        name.to_string()
    } else if name
        .strip_prefix(collection)
        .is_some_and(|rest| rest.starts_with('/'))
    {
        format!("{organization}/{name}")
    } else {
        format!("{organization}/{collection}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: NamePattern = NamePattern(&["organizations", "units"]);

    #[test]
    fn parses_well_formed_names() -> ApiResult<()> {
        assert_eq!(
            UNIT.parse("name", "organizations/acme/units/cardiology")?,
            vec!["acme", "cardiology"]
        );
        Ok(())
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "",
            "organizations/acme",
            "organizations/acme/units/",
            "organizations/acme/locations/x",
            "organizations/Acme/units/x",
            "organizations/acme/units/x/extra/y",
            "/organizations/acme/units/x",
            "organizations/acme/units/x-",
            "organizations/acme/units/../x",
        ] {
            let err = UNIT.parse("name", bad).expect_err(bad);
            assert_eq!(err.code, tonic::Code::InvalidArgument, "{bad}");
            assert_eq!(err.violations[0].0, "name");
        }
    }

    #[test]
    fn accepts_uuid_ids_and_generates_them() -> ApiResult<()> {
        let id = choose_id("unit_id", "")?;
        assert!(is_valid_id(&id));
        assert_eq!(choose_id("unit_id", "north-clinic")?, "north-clinic");
        assert!(choose_id("unit_id", "North Clinic").is_err());
        Ok(())
    }

    #[test]
    fn finds_organization_and_parent() {
        assert_eq!(
            organization_of("organizations/acme/units/x"),
            "organizations/acme"
        );
        assert_eq!(organization_of("organizations/acme"), "organizations/acme");
        assert_eq!(
            parent_of("organizations/acme/units/x"),
            "organizations/acme"
        );
        assert_eq!(parent_of("organizations/acme"), "");
        let org = "organizations/acme";
        for (given, full) in [
            ("payers/medicare", "organizations/acme/payers/medicare"),
            ("medicare", "organizations/acme/payers/medicare"),
            (
                "organizations/acme/payers/medicare",
                "organizations/acme/payers/medicare",
            ),
            (
                "organizations/other/payers/medicare",
                "organizations/other/payers/medicare",
            ),
            ("payersx/y", "organizations/acme/payers/payersx/y"),
            ("", ""),
        ] {
            assert_eq!(qualified(org, "payers", given), full, "{given}");
        }
        assert_eq!(UNIT.template(), "organizations/{organization}/units/{unit}");
    }
}

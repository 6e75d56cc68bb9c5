//! The Org service's slice: how each resource is indexed in the generic store, and the lookups its
//! rules need (all inside the caller's transaction or connection). The submodules hold each
//! resource's reads and writes, the only docstore calls of the service besides the access checks.

use pm_api::org::{
    Coverage, Credential, CredentialState, Enrollment, EnrollmentState, Location, Organization,
    Patient, Provider, ServiceUnit, UnitKind,
};
use pm_runtime::docstore::{self, Kind, Stored, enum_name};
use pm_runtime::idempotency;
use pm_runtime::names::{self, patterns};
use pm_runtime::{ApiError, ApiResult};
use sqlx::AnyConnection;
use tonic::Code;

use crate::domain::{self, MAX_UNIT_DEPTH, PolicyLevel};

pub mod coverages;
pub mod enrollments;
pub mod locations;
pub mod organizations;
pub mod patients;
pub mod providers;
pub mod units;

/// Organizations.
pub const ORGANIZATION: Kind<Organization> = Kind {
    pattern: patterns::ORGANIZATION,
    field: "organization",
    local_parent: true,
    filterable: &["display_name"],
    protected: &[],
    attrs: |o| vec![("display_name", o.display_name.clone())],
};

/// Service units.
pub const UNIT: Kind<ServiceUnit> = Kind {
    pattern: domain::UNIT_NAME,
    field: "service_unit",
    local_parent: true,
    filterable: &["kind", "parent_unit", "display_name"],
    protected: &[],
    attrs: |u| {
        vec![
            ("kind", enum_name(u.kind, UnitKind::as_str_name)),
            ("parent_unit", u.parent_unit.clone()),
            ("display_name", u.display_name.clone()),
        ]
    },
};

/// Locations.
pub const LOCATION: Kind<Location> = Kind {
    pattern: patterns::LOCATION,
    field: "location",
    local_parent: true,
    filterable: &["time_zone", "display_name"],
    protected: &[],
    attrs: |l| {
        vec![
            ("time_zone", l.time_zone.clone()),
            ("display_name", l.display_name.clone()),
        ]
    },
};

/// Providers.
pub const PROVIDER: Kind<Provider> = Kind {
    pattern: domain::PROVIDER_NAME,
    field: "provider",
    local_parent: true,
    filterable: &["npi", "taxonomy_code", "display_name"],
    protected: &[],
    attrs: |p| {
        vec![
            ("npi", p.npi.clone()),
            ("taxonomy_code", p.taxonomy_code.clone()),
            ("display_name", p.display_name.clone()),
        ]
    },
};

/// Credentials: the unit is fixed at creation (grant a new credential to change it).
pub const CREDENTIAL: Kind<Credential> = Kind {
    pattern: patterns::CREDENTIAL,
    field: "credential",
    local_parent: true,
    filterable: &["unit", "state"],
    protected: &["unit"],
    attrs: |c| {
        vec![
            ("unit", c.unit.clone()),
            ("state", enum_name(c.state, CredentialState::as_str_name)),
        ]
    },
};

/// The attribute holding a patient's family-name search keys.
pub const FAMILY_KEY: &str = "family_key";
/// The attribute holding a patient's given-name search keys.
pub const GIVEN_KEY: &str = "given_key";

/// Patients.
pub const PATIENT: Kind<Patient> = Kind {
    pattern: patterns::PATIENT,
    field: "patient",
    local_parent: true,
    filterable: &["identifier", "family_name", "birth_date"],
    protected: &[],
    attrs: |p| {
        let mut attrs: Vec<(&'static str, String)> = p
            .identifiers
            .iter()
            .map(|id| ("identifier", domain::identifier_key(&id.system, &id.value)))
            .collect();
        attrs.push(("family_name", p.family_name.clone()));
        // SearchPatients' index: the folded prefixes of each name (see `crate::search`).
        attrs.extend(
            crate::search::name_keys(&p.family_name)
                .into_iter()
                .map(|k| (FAMILY_KEY, k)),
        );
        attrs.extend(
            crate::search::name_keys(&p.given_name)
                .into_iter()
                .map(|k| (GIVEN_KEY, k)),
        );
        if let Some(date) = &p.birth_date {
            attrs.push(("birth_date", domain::birth_date_key(date)));
        }
        attrs
    },
};

/// Enrollments: state and history change only through the enrollment verbs.
pub const ENROLLMENT: Kind<Enrollment> = Kind {
    pattern: patterns::ENROLLMENT,
    field: "enrollment",
    local_parent: true,
    filterable: &["unit", "state", "pathway_step"],
    protected: &["state", "history"],
    attrs: |e| {
        vec![
            ("unit", e.unit.clone()),
            ("state", enum_name(e.state, EnrollmentState::as_str_name)),
            ("pathway_step", e.pathway_step.clone()),
        ]
    },
};

/// Coverages.
pub const COVERAGE: Kind<Coverage> = Kind {
    pattern: patterns::COVERAGE,
    field: "coverage",
    local_parent: true,
    filterable: &["payer", "priority"],
    protected: &[],
    attrs: |c| {
        vec![
            ("payer", c.payer.clone()),
            ("priority", c.priority.to_string()),
        ]
    },
};

/// The collection of `parent` for a kind: `organizations/acme/units`.
pub fn collection<T>(kind: &Kind<T>, parent: &str) -> String {
    format!("{parent}/{}", kind.pattern.collection_id())
}

/// A live unit named by a request field; INVALID_ARGUMENT naming the field when there is none.
pub async fn referenced_unit(
    conn: &mut AnyConnection,
    unit: &str,
    field: &str,
) -> ApiResult<ServiceUnit> {
    docstore::get_live::<ServiceUnit>(conn, unit)
        .await?
        .map(|s| s.resource)
        .ok_or_else(|| {
            ApiError::new(
                Code::InvalidArgument,
                "UNKNOWN_REFERENCE",
                format!("{field}: {unit} does not exist"),
            )
            .with_violation(field, "does not exist")
            .with_meta("resource", unit)
        })
}

/// The unit and its ancestors, nearest first.
pub async fn unit_and_ancestors(
    conn: &mut AnyConnection,
    unit: &str,
) -> ApiResult<Vec<ServiceUnit>> {
    let mut chain: Vec<ServiceUnit> = Vec::new();
    let mut next = unit.to_string();
    while !next.is_empty() {
        if chain.len() >= MAX_UNIT_DEPTH {
            return Err(ApiError::precondition(
                "UNIT_TREE_TOO_DEEP",
                format!("the unit tree above {unit} is deeper than {MAX_UNIT_DEPTH} levels"),
            ));
        }
        let Some(stored) = docstore::get::<ServiceUnit>(conn, &next).await? else {
            break;
        };
        next = stored.resource.parent_unit.clone();
        chain.push(stored.resource);
    }
    Ok(chain)
}

/// The names of `unit` and its ancestors, nearest first (for cycle checks).
pub async fn lineage_names(conn: &mut AnyConnection, unit: &str) -> ApiResult<Vec<String>> {
    Ok(unit_and_ancestors(conn, unit)
        .await?
        .into_iter()
        .map(|u| u.name)
        .collect())
}

/// The effective policy of a unit (which must exist).
pub async fn effective_policy(
    conn: &mut AnyConnection,
    unit: &str,
) -> ApiResult<pm_api::org::EffectivePolicy> {
    let mut chain = unit_and_ancestors(conn, unit).await?;
    chain.reverse();
    let levels: Vec<PolicyLevel<'_>> = chain
        .iter()
        .map(|u| PolicyLevel {
            unit: &u.name,
            billing: u.billing_profile.as_ref(),
            workflow: u.workflow_rules.as_ref(),
        })
        .collect();
    Ok(domain::effective_policy(&levels))
}

/// Whether a unit has live child units.
pub async fn has_live_children(conn: &mut AnyConnection, unit: &str) -> ApiResult<bool> {
    let units = collection(&UNIT, names::organization_of(unit));
    Ok(
        !docstore::find_by_attr::<ServiceUnit>(conn, &units, "parent_unit", unit)
            .await?
            .is_empty(),
    )
}

/// Whether an organization has any live unit.
pub async fn has_live_units(conn: &mut AnyConnection, organization: &str) -> ApiResult<bool> {
    Ok(
        !docstore::all_live::<ServiceUnit>(conn, &collection(&UNIT, organization))
            .await?
            .is_empty(),
    )
}

/// The other live credentials of a provider for a unit, with their periods.
pub async fn credential_periods(
    conn: &mut AnyConnection,
    provider: &str,
    unit: &str,
    except: &str,
) -> ApiResult<Vec<(String, domain::Period)>> {
    let found = docstore::find_by_attr::<Credential>(
        conn,
        &collection(&CREDENTIAL, provider),
        "unit",
        unit,
    )
    .await?;
    Ok(found
        .into_iter()
        .filter(|c| c.resource.name != except)
        .filter_map(|c| {
            domain::period_of(c.resource.effective_period.as_ref()).map(|p| (c.resource.name, p))
        })
        .collect())
}

/// The live credentials of a provider for a unit.
pub async fn credentials_for(
    conn: &mut AnyConnection,
    provider: &str,
    unit: &str,
) -> ApiResult<Vec<Credential>> {
    Ok(
        docstore::find_by_attr::<Credential>(
            conn,
            &collection(&CREDENTIAL, provider),
            "unit",
            unit,
        )
        .await?
        .into_iter()
        .map(|c| c.resource)
        .collect(),
    )
}

/// Another live provider of the organization with this NPI, if any.
pub async fn provider_with_npi(
    conn: &mut AnyConnection,
    organization: &str,
    npi: &str,
    except: &str,
) -> ApiResult<Option<String>> {
    let found =
        docstore::find_by_attr::<Provider>(conn, &collection(&PROVIDER, organization), "npi", npi)
            .await?;
    Ok(found
        .into_iter()
        .map(|p| p.resource.name)
        .find(|n| n != except))
}

/// The first identifier of `patient` that another live patient of the organization already has
/// (its index in `identifiers`).
pub async fn identifier_taken(
    conn: &mut AnyConnection,
    patient: &Patient,
) -> ApiResult<Option<usize>> {
    let patients = collection(&PATIENT, names::organization_of(&patient.name));
    for (i, id) in patient.identifiers.iter().enumerate() {
        let key = domain::identifier_key(&id.system, &id.value);
        let owners = docstore::find_by_attr::<Patient>(conn, &patients, "identifier", &key).await?;
        if owners.iter().any(|o| o.resource.name != patient.name) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// The other live coverages of a patient with their priorities and periods.
pub async fn coverage_periods(
    conn: &mut AnyConnection,
    patient: &str,
    except: &str,
) -> ApiResult<Vec<(String, i32, domain::Period)>> {
    let found: Vec<Stored<Coverage>> =
        docstore::all_live(conn, &collection(&COVERAGE, patient)).await?;
    Ok(found
        .into_iter()
        .filter(|c| c.resource.name != except)
        .filter_map(|c| {
            let period = domain::period_of(c.resource.effective_period.as_ref())?;
            Some((c.resource.name, c.resource.priority, period))
        })
        .collect())
}

/// The patient's active enrollment in `unit`, other than `except`, if any.
pub async fn active_enrollment_in(
    conn: &mut AnyConnection,
    patient: &str,
    unit: &str,
    except: &str,
) -> ApiResult<Option<String>> {
    let found =
        docstore::find_by_attr::<Enrollment>(conn, &collection(&ENROLLMENT, patient), "unit", unit)
            .await?;
    Ok(found
        .into_iter()
        .map(|e| e.resource)
        .find(|e| e.state == EnrollmentState::Active as i32 && e.name != except)
        .map(|e| e.name))
}

/// What a state-changing custom method asks of the store, its request hashed so that a retried
/// request_id is recognised.
pub fn verb_call<'a>(
    method: &'static str,
    name: &'a str,
    etag: &'a str,
    request_id: &'a str,
    request: &impl prost::Message,
) -> docstore::VerbCall<'a> {
    docstore::VerbCall {
        method,
        name,
        etag,
        request_id,
        request_hash: idempotency::request_hash(request),
    }
}

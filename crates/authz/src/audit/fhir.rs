//! The FHIR R4 AuditEvent export of a record ([`to_fhir_audit_event`], [`fhir_action`]). Kept
//! apart because it needs only the record types, neither the chain nor the database: the EHR
//! gateway reuses it.

use std::net::{IpAddr, SocketAddr};

use serde_json::{Value, json};
use tonic::Code;

use super::{Outcome, StoredAuditEvent};

const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
const PURPOSE_OF_USE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const DICOM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const METHOD_SYSTEM: &str = "urn:pm:grpc-method";
const PRINCIPAL_SYSTEM: &str = "urn:pm:principal";
const SERVICE_SYSTEM: &str = "urn:pm:service";
const RESOURCE_SYSTEM: &str = "urn:pm:resource";

/// The FHIR action code of a gRPC method, from the prefix of its name (the part after the last `/`
/// or `.`): Get, List, BatchGet, Search → R; Create → C; Update, Undelete → U; Delete → D; else E.
pub fn fhir_action(method: &str) -> &'static str {
    let name = method.rsplit(['/', '.']).next().unwrap_or(method);
    if ["Get", "List", "BatchGet", "Search"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        "R"
    } else if name.starts_with("Create") {
        "C"
    } else if name.starts_with("Update") || name.starts_with("Undelete") {
        "U"
    } else if name.starts_with("Delete") {
        "D"
    } else {
        "E"
    }
}

fn network(source: &str) -> Value {
    // AuditEventAgentNetworkType: 1 machine name, 2 IP address, 5 URI.
    if let Ok(addr) = source.parse::<SocketAddr>() {
        json!({ "address": addr.ip().to_string(), "type": "2" })
    } else if source.parse::<IpAddr>().is_ok() {
        json!({ "address": source, "type": "2" })
    } else if source.contains(':') {
        json!({ "address": source, "type": "5" })
    } else {
        json!({ "address": source, "type": "1" })
    }
}

/// The record as a FHIR R4 AuditEvent (http://hl7.org/fhir/R4/auditevent.html): `type` (DICOM
/// "rest"), `subtype` (the method), `action`, `recorded`, `outcome`, `purposeOfEvent`, the agents
/// (the principal as requestor, the calling service and the principal acted for), `source` (the
/// service as observer) and an `entity` for each resource and each patient.
pub fn to_fhir_audit_event(event: &StoredAuditEvent) -> Value {
    let e = &event.event;
    let recorded = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(e.time)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (outcome, outcome_desc) = match e.outcome {
        Outcome::Success => ("0", "OK".to_string()),
        Outcome::Denied => ("4", "PERMISSION_DENIED".to_string()),
        Outcome::Failed { code } => {
            let status = Code::from_i32(code);
            // Refused for want of credentials is a denial too; other failures are serious.
            let fhir = if status == Code::Unauthenticated {
                "4"
            } else {
                "8"
            };
            (fhir, format!("gRPC status {status:?} ({code})"))
        }
    };

    let mut requestor = json!({
        "who": { "identifier": { "system": PRINCIPAL_SYSTEM, "value": e.principal } },
        "requestor": true,
    });
    let mut agents = Vec::new();
    match (&e.calling_service, &e.source) {
        (Some(service), source) => {
            let mut agent = json!({
                "type": { "coding": [{ "system": DICOM, "code": "110153", "display": "Source Role ID" }] },
                "who": { "identifier": { "system": SERVICE_SYSTEM, "value": service } },
                "requestor": false,
            });
            if let Some(source) = source {
                agent["network"] = network(source);
            }
            agents.push(requestor);
            agents.push(agent);
        }
        (None, Some(source)) => {
            requestor["network"] = network(source);
            agents.push(requestor);
        }
        (None, None) => agents.push(requestor),
    }
    if let Some(principal) = &e.on_behalf_of {
        agents.push(json!({
            "type": { "text": "on behalf of" },
            "who": { "identifier": { "system": PRINCIPAL_SYSTEM, "value": principal } },
            "requestor": false,
        }));
    }

    let mut entities: Vec<Value> = e
        .resources
        .iter()
        .map(|name| {
            json!({
                "what": { "identifier": { "system": RESOURCE_SYSTEM, "value": name } },
                "type": { "system": ENTITY_TYPE, "code": "2", "display": "System Object" },
            })
        })
        .collect();
    entities.extend(e.patients.iter().map(|name| {
        json!({
            "what": { "type": "Patient", "identifier": { "system": RESOURCE_SYSTEM, "value": name } },
            "type": { "system": ENTITY_TYPE, "code": "1", "display": "Person" },
            "role": { "system": OBJECT_ROLE, "code": "1", "display": "Patient" },
        })
    }));

    let mut resource = json!({
        "resourceType": "AuditEvent",
        "id": e.id,
        "type": { "system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation" },
        "subtype": [{ "system": METHOD_SYSTEM, "code": e.method }],
        "action": fhir_action(&e.method),
        "recorded": recorded,
        "outcome": outcome,
        "outcomeDesc": outcome_desc,
        "agent": agents,
        "source": {
            "observer": { "identifier": { "system": SERVICE_SYSTEM, "value": e.service } },
            "type": [{ "system": SOURCE_TYPE, "code": "4", "display": "Application Server" }],
        },
    });
    if !entities.is_empty() {
        resource["entity"] = Value::Array(entities);
    }
    if let Some(purpose) = &e.purpose {
        let is_code = !purpose.is_empty() && purpose.bytes().all(|b| b.is_ascii_uppercase());
        resource["purposeOfEvent"] = if is_code {
            json!([{ "coding": [{ "system": PURPOSE_OF_USE, "code": purpose }] }])
        } else {
            json!([{ "text": purpose }])
        };
    }
    resource
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::audit::tests::sample;

    /// The elements FHIR R4 AuditEvent (http://hl7.org/fhir/R4/auditevent.html) requires (1..1):
    /// type, recorded, agent (1..*) with agent.requestor, source with source.observer; and
    /// entity.what, action and outcome as this mapping fills them.
    #[test]
    fn fhir_export_has_the_required_r4_elements() {
        let fhir = to_fhir_audit_event(&sample());
        assert_eq!(fhir["resourceType"], "AuditEvent");
        assert_eq!(fhir["type"]["system"], AUDIT_EVENT_TYPE);
        assert_eq!(fhir["type"]["code"], "rest");
        assert_eq!(
            fhir["subtype"][0]["code"],
            "/pm.org.v1.OrgService/GetPatient"
        );
        assert_eq!(fhir["action"], "R");
        assert_eq!(fhir["recorded"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(fhir["outcome"], "0");
        let agents = fhir["agent"].as_array().unwrap();
        assert!(!agents.is_empty());
        assert!(agents.iter().all(|a| a["requestor"].is_boolean()));
        assert_eq!(agents[0]["requestor"], true);
        assert_eq!(agents[0]["who"]["identifier"]["value"], "users/alice");
        assert_eq!(
            agents[1]["who"]["identifier"]["value"],
            "spiffe://pm.dev/scheduling"
        );
        assert_eq!(agents[1]["network"]["address"], "10.1.2.3");
        assert_eq!(agents[2]["who"]["identifier"]["value"], "users/bob");
        assert_eq!(fhir["source"]["observer"]["identifier"]["value"], "org");
        let entities = fhir["entity"].as_array().unwrap();
        assert_eq!(entities.len(), 2);
        assert!(entities.iter().all(|e| e["what"].is_object()));
        assert_eq!(entities[1]["what"]["type"], "Patient");
        assert_eq!(fhir["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
    }

    #[test]
    fn fhir_outcomes_and_actions() {
        let mut stored = sample();
        stored.event.outcome = Outcome::Denied;
        assert_eq!(to_fhir_audit_event(&stored)["outcome"], "4");
        stored.event.outcome = Outcome::Failed { code: 13 };
        assert_eq!(to_fhir_audit_event(&stored)["outcome"], "8");
        stored.event.calling_service = None;
        let fhir = to_fhir_audit_event(&stored);
        assert_eq!(fhir["agent"][0]["network"]["type"], "2");
        assert_eq!(fhir_action("/pm.org.v1.OrgService/ListPatients"), "R");
        assert_eq!(fhir_action("/pm.org.v1.OrgService/CreatePatient"), "C");
        assert_eq!(fhir_action("/pm.org.v1.OrgService/UpdatePatient"), "U");
        assert_eq!(fhir_action("/pm.org.v1.OrgService/DeletePatient"), "D");
        assert_eq!(fhir_action("/pm.org.v1.OrgService/MergePatients"), "E");
        assert_eq!(fhir_action("GetPatient"), "R");
    }
}

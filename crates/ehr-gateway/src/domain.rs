//! The pure part of the gateway: sources (from configuration, validated), which source a message
//! comes from, and the mapping of ADT^A01/A04/A08 onto a patient registration or update. No I/O, no
//! clocks. Refusals carry an HL7 ERR (segment^sequence^field and a table 0357 code) with a fixed,
//! PHI-free user message and a stable reason.

use pm_api::org::{
    AdministrativeGender, CreatePatientRequest, Patient, PatientIdentifier, UpdatePatientRequest,
};
use pm_api::types::Date;
use pm_hl7::{AckOutcome, ErrorCode, ErrorDetail, ErrorLocation, Message, Severity, Value};

/// What a source may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Register patients (ADT^A01/A04).
    RegisterPatients,
    /// Update patients' demographics (ADT^A08).
    UpdatePatients,
}

impl Permission {
    /// The configuration spelling.
    pub fn parse(text: &str) -> Option<Permission> {
        match text {
            "register_patients" => Some(Permission::RegisterPatients),
            "update_patients" => Some(Permission::UpdatePatients),
            _ => None,
        }
    }
}

/// One sending system, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Its id (stable: the inbound log and the cross-references are keyed by it).
    pub id: String,
    /// MSH-3 (sending application) that identifies it; empty matches any.
    pub sending_application: String,
    /// MSH-4 (sending facility) that identifies it.
    pub sending_facility: String,
    /// The organization its patients belong to (`organizations/{o}`).
    pub organization: String,
    /// Assigning authority (PID-3.4.1) → Org identifier system. With `any_authority`, an authority
    /// not listed maps to itself.
    pub identifier_systems: Vec<(String, String)>,
    /// The dev catch-all: the identifier system is the sender's assigning authority.
    pub any_authority: bool,
    /// What it may do.
    pub permissions: Vec<Permission>,
}

/// A source configuration that cannot be used: the key and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration key, e.g. `ehr.sources[1].sending_facility`.
    pub key: String,
    /// Why.
    pub reason: &'static str,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The configured sources, checked, plus the dev catch-all when enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    sources: Vec<Source>,
    catch_all: Option<Source>,
}

/// The id of the dev-mode catch-all source.
pub const CATCH_ALL: &str = "dev-catch-all";

impl Sources {
    /// Validates `sources` (`key` is the configuration key of the list, e.g. `ehr.sources`); with
    /// `catch_all_organization`, senders no source claims register patients into it.
    pub fn new(
        key: &str,
        sources: Vec<Source>,
        catch_all_organization: Option<&str>,
    ) -> Result<Sources, ConfigError> {
        for (i, source) in sources.iter().enumerate() {
            let at = |field: &str| format!("{key}[{i}].{field}");
            if !valid_id(&source.id) {
                return Err(ConfigError {
                    key: at("id"),
                    reason: "must be 1 to 63 lowercase letters, digits or '-'",
                });
            }
            if source.id == CATCH_ALL {
                return Err(ConfigError {
                    key: at("id"),
                    reason: "is reserved for the dev catch-all source",
                });
            }
            if sources[..i].iter().any(|s| s.id == source.id) {
                return Err(ConfigError {
                    key: at("id"),
                    reason: "is used by another source",
                });
            }
            if source.sending_facility.trim().is_empty() {
                return Err(ConfigError {
                    key: at("sending_facility"),
                    reason: "is required (MSH-4 identifies the source)",
                });
            }
            if sources[..i].iter().any(|s| {
                s.sending_facility == source.sending_facility
                    && (s.sending_application.is_empty()
                        || source.sending_application.is_empty()
                        || s.sending_application == source.sending_application)
            }) {
                return Err(ConfigError {
                    key: at("sending_facility"),
                    reason: "another source already claims this sending application and facility",
                });
            }
            if !valid_organization(&source.organization) {
                return Err(ConfigError {
                    key: at("organization"),
                    reason: "must be organizations/{id}",
                });
            }
            if source.identifier_systems.is_empty() {
                return Err(ConfigError {
                    key: at("identifier_systems"),
                    reason: "must map at least one assigning authority to an identifier system",
                });
            }
            for (j, (authority, system)) in source.identifier_systems.iter().enumerate() {
                if authority.trim().is_empty() || system.trim().is_empty() {
                    return Err(ConfigError {
                        key: at(&format!("identifier_systems[{j}]")),
                        reason: "needs a non-empty assigning authority and identifier system",
                    });
                }
            }
            if source.permissions.is_empty() {
                return Err(ConfigError {
                    key: at("permissions"),
                    reason: "must allow register_patients and/or update_patients",
                });
            }
        }
        let catch_all = match catch_all_organization {
            None => None,
            Some(org) if valid_organization(org) => Some(Source {
                id: CATCH_ALL.into(),
                sending_application: String::new(),
                sending_facility: String::new(),
                organization: org.into(),
                identifier_systems: Vec::new(),
                any_authority: true,
                permissions: vec![Permission::RegisterPatients, Permission::UpdatePatients],
            }),
            Some(_) => {
                return Err(ConfigError {
                    key: "ehr.catch_all_organization".into(),
                    reason: "must be organizations/{id}",
                });
            }
        };
        Ok(Sources { sources, catch_all })
    }

    /// The source a message with this MSH-3/MSH-4 comes from.
    pub fn resolve(&self, application: &str, facility: &str) -> Option<&Source> {
        self.sources
            .iter()
            .find(|s| {
                s.sending_facility == facility
                    && (s.sending_application.is_empty() || s.sending_application == application)
            })
            .or(self.catch_all.as_ref())
    }

    /// A source by id.
    pub fn by_id(&self, id: &str) -> Option<&Source> {
        self.sources
            .iter()
            .chain(self.catch_all.as_ref())
            .find(|s| s.id == id)
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn valid_organization(name: &str) -> bool {
    name.strip_prefix("organizations/")
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// What a message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// ADT^A01/A04: create the patient, or find it by identifier.
    Register,
    /// ADT^A08: update the patient's demographics.
    Update,
}

/// Administrative sex (HL7 table 0001), as far as Org records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    /// F.
    Female,
    /// M.
    Male,
    /// O, A, N, U or absent.
    Other,
    /// Not sent.
    Unknown,
}

/// The patient a message describes, mapped onto the model (PHI: never logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientFacts {
    /// The organization (`organizations/{o}`).
    pub organization: String,
    /// The Org identifier system (mapped from PID-3.4).
    pub identifier_system: String,
    /// PID-3.1.
    pub identifier_value: String,
    /// PID-5.1.
    pub family_name: String,
    /// PID-5.2.
    pub given_name: String,
    /// PID-7 (required: Org requires a birth date).
    pub birth_date: chrono::NaiveDate,
    /// PID-8.
    pub sex: Sex,
}

/// A mapped message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// What to do.
    pub action: Action,
    /// To whom.
    pub patient: PatientFacts,
}

/// Why a message is refused: the ACK outcome (AE or AR), its ERR, and a stable reason for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// AE (content) or AR (not for us).
    pub outcome: AckOutcome,
    /// The ERR segment.
    pub detail: Box<ErrorDetail>,
    /// A stable, PHI-free reason (`PID_3_MISSING` ...).
    pub reason: &'static str,
}

fn refuse(
    outcome: AckOutcome,
    code: ErrorCode,
    location: ErrorLocation,
    message: &'static str,
    reason: &'static str,
) -> Refusal {
    Refusal {
        outcome,
        detail: Box::new(ErrorDetail::new(code, Severity::Error, message).at(location)),
        reason,
    }
}

fn text(value: Value<'_>) -> Option<String> {
    value
        .as_str()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// Maps an ADT message from `source` onto a registration or update, or says why not.
pub fn map_adt(message: &Message, source: &Source) -> Result<Mapped, Refusal> {
    let msh9 = ErrorLocation::field("MSH", 1, 9);
    let kind = text(message.message_type()).unwrap_or_default();
    if kind != "ADT" {
        return Err(refuse(
            AckOutcome::Reject,
            ErrorCode::UnsupportedMessageType,
            msh9,
            "Only ADT messages are accepted",
            "UNSUPPORTED_MESSAGE_TYPE",
        ));
    }
    let trigger = text(message.trigger_event()).unwrap_or_default();
    let (action, permission) = match trigger.as_str() {
        "A01" | "A04" => (Action::Register, Permission::RegisterPatients),
        "A08" => (Action::Update, Permission::UpdatePatients),
        _ => {
            return Err(refuse(
                AckOutcome::Reject,
                ErrorCode::UnsupportedEventCode,
                ErrorLocation::field("MSH", 1, 9).within(1, 2),
                "Only ADT A01, A04 and A08 are accepted",
                "UNSUPPORTED_EVENT",
            ));
        }
    };
    if !source.permissions.contains(&permission) {
        return Err(refuse(
            AckOutcome::Reject,
            ErrorCode::UnsupportedEventCode,
            ErrorLocation::field("MSH", 1, 9).within(1, 2),
            "This source may not send this event",
            "EVENT_NOT_ALLOWED",
        ));
    }
    let Some(pid) = message.segment("PID") else {
        return Err(refuse(
            AckOutcome::Error,
            ErrorCode::SegmentSequenceError,
            ErrorLocation::segment("PID", 1),
            "PID segment missing",
            "PID_MISSING",
        ));
    };
    // The first PID-3 repetition with an id whose assigning authority maps.
    let mut saw_identifier = false;
    let mut identifier = None;
    if let Some(field) = pid.field(3) {
        for (i, rep) in field.repetitions().enumerate() {
            let value = rep
                .component(1)
                .and_then(|c| c.subcomponent(1))
                .map_or(Value::Absent, |s| s.value());
            let Some(value) = text(value) else { continue };
            saw_identifier = true;
            let authority = rep
                .component(4)
                .and_then(|c| c.subcomponent(1))
                .map_or(Value::Absent, |s| s.value());
            let Some(authority) = text(authority) else {
                continue;
            };
            let system = source
                .identifier_systems
                .iter()
                .find(|(a, _)| *a == authority)
                .map(|(_, s)| s.clone())
                .or_else(|| source.any_authority.then(|| authority.clone()));
            if let Some(system) = system {
                identifier = Some((system, value, i));
                break;
            }
        }
    }
    let Some((identifier_system, identifier_value, _)) = identifier else {
        return Err(if saw_identifier {
            refuse(
                AckOutcome::Error,
                ErrorCode::TableValueNotFound,
                ErrorLocation::field("PID", 1, 3).within(1, 4),
                "No patient identifier with a known assigning authority",
                "PID_3_AUTHORITY_UNMAPPED",
            )
        } else {
            refuse(
                AckOutcome::Error,
                ErrorCode::RequiredFieldMissing,
                ErrorLocation::field("PID", 1, 3),
                "Patient identifier list missing",
                "PID_3_MISSING",
            )
        });
    };
    let Some(family_name) = text(pid.value(5, 1, 1, 1)) else {
        return Err(refuse(
            AckOutcome::Error,
            ErrorCode::RequiredFieldMissing,
            ErrorLocation::field("PID", 1, 5),
            "Patient name missing",
            "PID_5_MISSING",
        ));
    };
    let given_name = text(pid.value(5, 1, 2, 1)).unwrap_or_default();
    let Some(birth_date) = text(pid.value(7, 1, 1, 1)) else {
        return Err(refuse(
            AckOutcome::Error,
            ErrorCode::RequiredFieldMissing,
            ErrorLocation::field("PID", 1, 7),
            "Date of birth missing",
            "PID_7_MISSING",
        ));
    };
    let birth_date = hl7_date(&birth_date).ok_or_else(|| {
        refuse(
            AckOutcome::Error,
            ErrorCode::DataTypeError,
            ErrorLocation::field("PID", 1, 7),
            "Date of birth is not a valid date",
            "PID_7_INVALID",
        )
    })?;
    let sex = match text(pid.value(8, 1, 1, 1)).as_deref() {
        None => Sex::Unknown,
        Some("F") => Sex::Female,
        Some("M") => Sex::Male,
        Some("O" | "A" | "N" | "U") => Sex::Other,
        Some(_) => {
            return Err(refuse(
                AckOutcome::Error,
                ErrorCode::TableValueNotFound,
                ErrorLocation::field("PID", 1, 8),
                "Administrative sex is not in table 0001",
                "PID_8_INVALID",
            ));
        }
    };
    Ok(Mapped {
        action,
        patient: PatientFacts {
            organization: source.organization.clone(),
            identifier_system,
            identifier_value,
            family_name,
            given_name,
            birth_date,
            sex,
        },
    })
}

/// `YYYYMMDD[...]` (a DTM), if it is a real date.
fn hl7_date(ts: &str) -> Option<chrono::NaiveDate> {
    let digits = ts.get(..8)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    chrono::NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

impl PatientFacts {
    /// The key messages of one patient are ordered by: `system|value`.
    pub fn key(&self) -> String {
        format!("{}|{}", self.identifier_system, self.identifier_value)
    }

    /// The ListPatients filter that finds this patient by its identifier.
    pub fn identifier_filter(&self) -> String {
        let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        format!(
            "identifier = \"{}\"",
            escape(&format!(
                "{}|{}",
                self.identifier_system, self.identifier_value
            ))
        )
    }

    /// The Org patient these facts describe (name, etag and output fields unset).
    pub fn to_patient(&self) -> Patient {
        use chrono::Datelike as _;
        Patient {
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            birth_date: Some(Date {
                year: self.birth_date.year(),
                month: i32::try_from(self.birth_date.month()).unwrap_or(0),
                day: i32::try_from(self.birth_date.day()).unwrap_or(0),
            }),
            gender: match self.sex {
                Sex::Female => AdministrativeGender::Female,
                Sex::Male => AdministrativeGender::Male,
                Sex::Other => AdministrativeGender::Other,
                Sex::Unknown => AdministrativeGender::Unknown,
            } as i32,
            identifiers: vec![PatientIdentifier {
                system: self.identifier_system.clone(),
                value: self.identifier_value.clone(),
            }],
            ..Patient::default()
        }
    }

    /// CreatePatient for a registration; `request_id` makes a retried apply idempotent.
    pub fn create_request(&self, request_id: &str) -> CreatePatientRequest {
        CreatePatientRequest {
            parent: self.organization.clone(),
            patient: Some(self.to_patient()),
            patient_id: String::new(),
            request_id: request_id.to_owned(),
        }
    }

    /// UpdatePatient of `name`'s demographics (names, birth date, gender; identifiers untouched).
    pub fn update_request(&self, name: &str) -> UpdatePatientRequest {
        let mut patient = self.to_patient();
        patient.name = name.to_owned();
        patient.identifiers.clear();
        UpdatePatientRequest {
            patient: Some(patient),
            update_mask: Some(prost_types::FieldMask {
                paths: ["given_name", "family_name", "birth_date", "gender"]
                    .map(String::from)
                    .to_vec(),
            }),
        }
    }
}

/// The message header fields the log keys on (not PHI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// MSH-3.1.
    pub sending_application: String,
    /// MSH-4.1.
    pub sending_facility: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-9.1.
    pub message_type: String,
    /// MSH-9.2.
    pub trigger_event: String,
}

/// Reads the header; a message without a control id cannot be logged or deduplicated.
pub fn header(message: &Message) -> Result<Header, Refusal> {
    let msh = message.msh();
    let control_id = text(message.control_id()).ok_or_else(|| {
        refuse(
            AckOutcome::Reject,
            ErrorCode::RequiredFieldMissing,
            ErrorLocation::field("MSH", 1, 10),
            "Message control id missing",
            "MSH_10_MISSING",
        )
    })?;
    if control_id.len() > 199 {
        return Err(refuse(
            AckOutcome::Reject,
            ErrorCode::DataTypeError,
            ErrorLocation::field("MSH", 1, 10),
            "Message control id too long",
            "MSH_10_TOO_LONG",
        ));
    }
    Ok(Header {
        sending_application: text(msh.value(3, 1, 1, 1)).unwrap_or_default(),
        sending_facility: text(msh.value(4, 1, 1, 1)).unwrap_or_default(),
        control_id,
        message_type: text(message.message_type()).unwrap_or_default(),
        trigger_event: text(message.trigger_event()).unwrap_or_default(),
    })
}

/// The refusal for a message no configured source claims.
pub fn unknown_source() -> Refusal {
    refuse(
        AckOutcome::Reject,
        ErrorCode::TableValueNotFound,
        ErrorLocation::field("MSH", 1, 4),
        "Unknown sending facility",
        "UNKNOWN_SOURCE",
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pm_hl7::Ack;

    fn north() -> Source {
        Source {
            id: "north".into(),
            sending_application: "EPIC".into(),
            sending_facility: "NORTHHOSP".into(),
            organization: "organizations/acme".into(),
            identifier_systems: vec![("NORTHHOSP".into(), "urn:north:mrn".into())],
            any_authority: false,
            permissions: vec![Permission::RegisterPatients, Permission::UpdatePatients],
        }
    }

    fn adt(trigger: &str, pid: &str) -> Message {
        let raw = format!(
            "MSH|^~\\&|EPIC|NORTHHOSP|PMGW|PRACTICE|20260105083000||ADT^{trigger}|C1|P|2.5.1\rEVN|{trigger}\r{pid}\r"
        );
        Message::parse(&raw).unwrap()
    }

    fn err_of(refusal: &Refusal, msg: &Message) -> String {
        let ack = Ack::new(refusal.outcome)
            .error((*refusal.detail).clone())
            .build(msg, "20260101000000", "X")
            .unwrap();
        ack.split('\r')
            .find(|s| s.starts_with("ERR"))
            .unwrap()
            .to_owned()
    }

    #[test]
    fn a04_maps_identifier_name_birth_date_and_sex() {
        let msg = Message::parse(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../hl7/tests/data/adt_a01.hl7"
            ))
            .unwrap(),
        )
        .unwrap();
        let mapped = map_adt(&msg, &north()).unwrap();
        assert_eq!(mapped.action, Action::Register);
        assert_eq!(mapped.patient.identifier_system, "urn:north:mrn");
        assert_eq!(mapped.patient.identifier_value, "000123456");
        assert_eq!(mapped.patient.family_name, "DOE");
        assert_eq!(mapped.patient.given_name, "JOHN");
        assert_eq!(mapped.patient.birth_date.to_string(), "1980-02-14");
        let request = mapped.patient.create_request("r-1");
        assert_eq!(request.parent, "organizations/acme");
        assert_eq!(request.request_id, "r-1");
        let patient = request.patient.unwrap();
        assert_eq!(patient.identifiers[0].system, "urn:north:mrn");
        assert_eq!(patient.identifiers[0].value, "000123456");
        assert_eq!(patient.gender, AdministrativeGender::Male as i32);
        let date = patient.birth_date.unwrap();
        assert_eq!((date.year, date.month, date.day), (1980, 2, 14));
        assert_eq!(
            mapped.patient.identifier_filter(),
            "identifier = \"urn:north:mrn|000123456\""
        );
        assert_eq!(mapped.patient.sex, Sex::Male);
        assert_eq!(mapped.patient.organization, "organizations/acme");
    }

    #[test]
    fn a08_is_an_update_and_skips_unmapped_authorities() {
        let msg = adt(
            "A08",
            "PID|1||X9^^^OTHER~77^^^NORTHHOSP||ROE^ANN||19900101|F",
        );
        let mapped = map_adt(&msg, &north()).unwrap();
        assert_eq!(mapped.action, Action::Update);
        assert_eq!(mapped.patient.identifier_value, "77");
        assert_eq!(mapped.patient.sex, Sex::Female);
        let update = mapped
            .patient
            .update_request("organizations/acme/patients/p1");
        let patient = update.patient.unwrap();
        assert_eq!(patient.name, "organizations/acme/patients/p1");
        assert_eq!(patient.family_name, "ROE");
        assert!(patient.identifiers.is_empty());
        assert_eq!(update.update_mask.unwrap().paths.len(), 4);
    }

    #[test]
    fn missing_pid_3_is_101_at_pid_1_3() {
        let msg = adt("A04", "PID|1||||ROE^ANN");
        let refusal = map_adt(&msg, &north()).unwrap_err();
        assert_eq!(refusal.outcome, AckOutcome::Error);
        assert_eq!(refusal.reason, "PID_3_MISSING");
        let err = err_of(&refusal, &msg);
        assert!(err.contains("|PID^1^3|101^"), "{err}");
        assert!(!err.contains("ROE"), "{err}");
    }

    #[test]
    fn unmapped_authority_and_bad_values_name_their_field() {
        let cases = [
            (
                "PID|1||5^^^ELSEWHERE||ROE||19900101",
                "PID_3_AUTHORITY_UNMAPPED",
                "|PID^1^3^1^4|103^",
            ),
            ("PID|1||5^^^NORTHHOSP", "PID_5_MISSING", "|PID^1^5|101^"),
            (
                "PID|1||5^^^NORTHHOSP||ROE",
                "PID_7_MISSING",
                "|PID^1^7|101^",
            ),
            (
                "PID|1||5^^^NORTHHOSP||ROE||19901340",
                "PID_7_INVALID",
                "|PID^1^7|102^",
            ),
            (
                "PID|1||5^^^NORTHHOSP||ROE||19900101|Q",
                "PID_8_INVALID",
                "|PID^1^8|103^",
            ),
        ];
        for (pid, reason, location) in cases {
            let msg = adt("A04", pid);
            let refusal = map_adt(&msg, &north()).unwrap_err();
            assert_eq!(refusal.reason, reason);
            let err = err_of(&refusal, &msg);
            assert!(err.contains(location), "{reason}: {err}");
        }
    }

    #[test]
    fn events_outside_the_slice_or_permissions_are_rejected() {
        let msg = adt("A03", "PID|1||5^^^NORTHHOSP||ROE");
        let refusal = map_adt(&msg, &north()).unwrap_err();
        assert_eq!(refusal.outcome, AckOutcome::Reject);
        assert_eq!(refusal.reason, "UNSUPPORTED_EVENT");
        let mut register_only = north();
        register_only.permissions = vec![Permission::RegisterPatients];
        let msg = adt("A08", "PID|1||5^^^NORTHHOSP||ROE");
        let refusal = map_adt(&msg, &register_only).unwrap_err();
        assert_eq!(refusal.reason, "EVENT_NOT_ALLOWED");
    }

    #[test]
    fn catch_all_takes_the_senders_authority_as_system() {
        let sources =
            Sources::new("ehr.sources", vec![north()], Some("organizations/demo")).unwrap();
        let source = sources.resolve("ANY", "SOMEWHERE").unwrap();
        assert_eq!(source.id, CATCH_ALL);
        let msg = adt("A04", "PID|1||5^^^SOMEAUTH||ROE||19900101");
        let mapped = map_adt(&msg, source).unwrap();
        assert_eq!(mapped.patient.identifier_system, "SOMEAUTH");
        assert_eq!(mapped.patient.organization, "organizations/demo");
        assert_eq!(sources.resolve("EPIC", "NORTHHOSP").unwrap().id, "north");
        let strict = Sources::new("ehr.sources", vec![north()], None).unwrap();
        assert!(strict.resolve("ANY", "SOMEWHERE").is_none());
    }

    #[test]
    fn bad_source_configuration_names_the_key() {
        let mut dup = north();
        dup.id = "north2".into();
        let err = Sources::new("ehr.sources", vec![north(), dup], None).unwrap_err();
        assert_eq!(err.key, "ehr.sources[1].sending_facility");
        let mut bad = north();
        bad.id = "North Hosp".into();
        let err = Sources::new("ehr.sources", vec![bad], None).unwrap_err();
        assert_eq!(err.key, "ehr.sources[0].id");
        let mut bad = north();
        bad.identifier_systems.clear();
        let err = Sources::new("ehr.sources", vec![bad], None).unwrap_err();
        assert_eq!(err.key, "ehr.sources[0].identifier_systems");
        let mut bad = north();
        bad.organization = "acme".into();
        assert_eq!(
            Sources::new("ehr.sources", vec![bad], None)
                .unwrap_err()
                .key,
            "ehr.sources[0].organization"
        );
    }

    #[test]
    fn header_requires_a_control_id() {
        let msg = Message::parse("MSH|^~\\&|EPIC|NORTHHOSP|||2026||ADT^A04||P|2.5\r").unwrap();
        assert_eq!(header(&msg).unwrap_err().reason, "MSH_10_MISSING");
    }
}

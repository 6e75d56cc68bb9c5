//! The request edge every service shares, run by the authorization layer before any handler: the
//! request body is decoded against the method's input message (from the contract's descriptor set),
//! every value is checked against the mesh-wide bounds below, and the values of the fields a rule
//! declares as references are read out for the scope check ([`crate::references`]).
//!
//! Bounds (documented in the README's API conventions; a value outside one is INVALID_ARGUMENT
//! naming the field, before any handler work):
//! - a request body of at most [`MAX_REQUEST_BYTES`], one uncompressed gRPC frame;
//! - a string of at most [`MAX_STRING_BYTES`] bytes with no NUL character (PostgreSQL refuses NUL in
//!   text; a NUL must not become INTERNAL on one backend and data on the other);
//! - a repeated field of at most [`MAX_REPEATED`] elements;
//! - a `google.protobuf.Timestamp` within 0001-01-01 and 9999-12-31 and a `google.protobuf.Duration`
//!   within ±10,000 years, as the well-known types define them (handlers convert them without
//!   overflow);
//! - a `bytes` field of at most [`MAX_STRING_BYTES`] bytes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use pm_runtime::{ApiError, ApiResult};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use tonic::Code;

/// Largest request body accepted (the gRPC frame header included).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest string (or bytes) value of any request field.
pub const MAX_STRING_BYTES: usize = 4096;
/// Most elements of any repeated request field.
pub const MAX_REPEATED: usize = 100;

/// Smallest and largest `Timestamp.seconds` (0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z).
const TIMESTAMP_SECONDS: (i64, i64) = (-62_135_596_800, 253_402_300_799);
/// Largest `Duration.seconds` either way (10,000 years).
const DURATION_SECONDS: i64 = 315_576_000_000;

fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(pm_api::FILE_DESCRIPTOR_SET).ok())
        .as_ref()
}

/// Every method of the contract by its gRPC path: its input message and whether it answers with a
/// stream. Built once, so the layer's per-call lookups are one hash probe.
fn methods() -> &'static HashMap<String, (MessageDescriptor, bool)> {
    static METHODS: OnceLock<HashMap<String, (MessageDescriptor, bool)>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let mut methods = HashMap::new();
        for service in pool().into_iter().flat_map(|pool| pool.services()) {
            for method in service.methods() {
                methods.insert(
                    format!("/{}/{}", service.full_name(), method.name()),
                    (method.input(), method.is_server_streaming()),
                );
            }
        }
        methods
    })
}

/// The input message of a method, by its gRPC path (`/pm.org.v1.OrgService/GetPatient`).
pub fn input_of(method_path: &str) -> Option<MessageDescriptor> {
    methods().get(method_path).map(|(input, _)| input.clone())
}

/// Whether a method answers with a stream (WatchCalendar, StreamEvents), by its gRPC path.
pub fn answers_with_stream(method_path: &str) -> bool {
    methods()
        .get(method_path)
        .is_some_and(|(_, streaming)| *streaming)
}

/// Decodes one unary request body (a gRPC frame) as `input`: INVALID_ARGUMENT for a body that is
/// not one well-formed, uncompressed frame of that message.
pub fn decode(input: &MessageDescriptor, body: &[u8]) -> ApiResult<DynamicMessage> {
    let malformed = |why: &str| {
        ApiError::new(
            Code::InvalidArgument,
            "MALFORMED_REQUEST",
            format!("the request is not a valid {}: {why}", input.full_name()),
        )
    };
    let (header, rest) = body
        .split_at_checked(5)
        .ok_or_else(|| malformed("no gRPC frame"))?;
    if header[0] != 0 {
        return Err(ApiError::new(
            Code::Unimplemented,
            "COMPRESSION_UNSUPPORTED",
            "compressed requests are not accepted",
        ));
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if rest.len() != length {
        return Err(malformed("the frame's length does not match its body"));
    }
    DynamicMessage::decode(input.clone(), rest).map_err(|_| malformed("undecodable protobuf"))
}

/// Checks every value of `message` against the bounds of this module; the error names the field
/// (`appointment.patient`, `providers[3]`).
pub fn validate(message: &DynamicMessage) -> ApiResult<()> {
    validate_at(message, "")
}

fn validate_at(message: &DynamicMessage, prefix: &str) -> ApiResult<()> {
    match message.descriptor().full_name() {
        "google.protobuf.Timestamp" => return check_timestamp(message, prefix),
        "google.protobuf.Duration" => return check_duration(message, prefix),
        _ => {}
    }
    for (field, value) in message.fields() {
        let path = join(prefix, field.name());
        match value {
            Value::List(items) => {
                if items.len() > MAX_REPEATED {
                    return Err(ApiError::invalid(
                        path,
                        format!("at most {MAX_REPEATED} elements"),
                    ));
                }
                for (i, item) in items.iter().enumerate() {
                    validate_value(item, &format!("{path}[{i}]"))?;
                }
            }
            Value::Map(entries) => {
                if entries.len() > MAX_REPEATED {
                    return Err(ApiError::invalid(
                        path,
                        format!("at most {MAX_REPEATED} entries"),
                    ));
                }
                for (key, item) in entries {
                    if let prost_reflect::MapKey::String(key) = key {
                        check_string(key, &path)?;
                    }
                    validate_value(item, &path)?;
                }
            }
            other => validate_value(other, &path)?,
        }
    }
    Ok(())
}

fn validate_value(value: &Value, path: &str) -> ApiResult<()> {
    match value {
        Value::String(s) => check_string(s, path),
        Value::Bytes(b) if b.len() > MAX_STRING_BYTES => Err(ApiError::invalid(
            path,
            format!("at most {MAX_STRING_BYTES} bytes"),
        )),
        Value::Message(m) => validate_at(m, path),
        _ => Ok(()),
    }
}

fn check_string(s: &str, path: &str) -> ApiResult<()> {
    if s.len() > MAX_STRING_BYTES {
        return Err(ApiError::invalid(
            path,
            format!("at most {MAX_STRING_BYTES} bytes"),
        ));
    }
    if s.contains('\0') {
        return Err(ApiError::invalid(path, "must not contain NUL characters"));
    }
    Ok(())
}

fn int_field(message: &DynamicMessage, name: &str) -> i64 {
    match message.get_field_by_name(name).as_deref() {
        Some(Value::I64(v)) => *v,
        Some(Value::I32(v)) => i64::from(*v),
        _ => 0,
    }
}

fn check_timestamp(message: &DynamicMessage, path: &str) -> ApiResult<()> {
    let seconds = int_field(message, "seconds");
    let nanos = int_field(message, "nanos");
    if !(TIMESTAMP_SECONDS.0..=TIMESTAMP_SECONDS.1).contains(&seconds)
        || !(0..1_000_000_000).contains(&nanos)
    {
        return Err(ApiError::invalid(
            path,
            "must be a time between 0001-01-01 and 9999-12-31",
        ));
    }
    Ok(())
}

fn check_duration(message: &DynamicMessage, path: &str) -> ApiResult<()> {
    let seconds = int_field(message, "seconds");
    let nanos = int_field(message, "nanos");
    let same_sign = seconds == 0 || nanos == 0 || (seconds > 0) == (nanos > 0);
    if !(-DURATION_SECONDS..=DURATION_SECONDS).contains(&seconds)
        || !(-999_999_999..=999_999_999).contains(&nanos)
        || !same_sign
    {
        return Err(ApiError::invalid(
            path,
            "must be a duration within ±10,000 years",
        ));
    }
    Ok(())
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The non-empty string values at a dotted `path` of `message`, each with the path of the value
/// (`providers[2]`): a repeated string gives each element, a repeated message each element's field.
pub fn values_at(message: &DynamicMessage, path: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    collect(message, path, "", &mut found);
    found
}

fn collect(message: &DynamicMessage, path: &str, prefix: &str, found: &mut Vec<(String, String)>) {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let Some(field) = message.descriptor().get_field_by_name(head) else {
        return;
    };
    if !message.has_field(&field) {
        return;
    }
    let here = join(prefix, head);
    let value: Cow<'_, Value> = message.get_field(&field);
    let items: Vec<(String, &Value)> = match value.as_ref() {
        Value::List(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{here}[{i}]"), v))
            .collect(),
        single => vec![(here.clone(), single)],
    };
    for (at, item) in items {
        match (item, rest) {
            (Value::String(s), None) if !s.is_empty() => found.push((at, s.clone())),
            (Value::Message(m), Some(rest)) => collect(m, rest, &at, found),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message: &impl prost::Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        framed
    }

    fn input(method: &str) -> MessageDescriptor {
        input_of(method).unwrap_or_else(|| panic!("{method} has no input"))
    }

    const BOOK: &str = "/pm.scheduling.v1.SchedulingService/BookAppointment";
    const FIND: &str = "/pm.scheduling.v1.SchedulingService/FindSlots";

    #[test]
    fn decodes_a_frame_and_reads_nested_and_repeated_references() -> ApiResult<()> {
        let request = pm_api::scheduling::BookAppointmentRequest {
            parent: "organizations/acme".into(),
            appointment: Some(pm_api::scheduling::Appointment {
                patient: "organizations/acme/patients/p1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let decoded = decode(&input(BOOK), &frame(&request))?;
        validate(&decoded)?;
        assert_eq!(
            values_at(&decoded, "appointment.patient"),
            vec![(
                "appointment.patient".to_string(),
                "organizations/acme/patients/p1".to_string()
            )]
        );
        assert!(values_at(&decoded, "appointment.room").is_empty());
        let find = pm_api::scheduling::FindSlotsRequest {
            providers: vec!["a".into(), String::new(), "c".into()],
            ..Default::default()
        };
        let decoded = decode(&input(FIND), &frame(&find))?;
        assert_eq!(
            values_at(&decoded, "providers"),
            vec![
                ("providers[0]".to_string(), "a".to_string()),
                ("providers[2]".to_string(), "c".to_string())
            ]
        );
        Ok(())
    }

    #[test]
    fn malformed_bodies_are_invalid_argument() {
        let descriptor = input(FIND);
        for body in [
            vec![],
            vec![0, 0, 0],
            vec![0, 0, 0, 0, 9, 1],
            // Field 2 (patient) as a string of invalid UTF-8.
            vec![0, 0, 0, 0, 4, 0x12, 2, 0xff, 0xfe],
            // A length prefix longer than the message.
            vec![0, 0, 0, 0, 2, 0x12, 50],
        ] {
            let err = decode(&descriptor, &body).expect_err("malformed");
            assert_eq!(err.code, Code::InvalidArgument, "{body:?}");
        }
        let compressed = [1, 0, 0, 0, 0];
        assert_eq!(
            decode(&descriptor, &compressed)
                .map(|_| ())
                .err()
                .map(|e| e.code),
            Some(Code::Unimplemented)
        );
    }

    fn refused(request: &impl prost::Message, method: &str) -> Option<(String, String)> {
        let decoded = decode(&input(method), &frame(request)).ok()?;
        validate(&decoded)
            .err()
            .and_then(|e| e.violations.first().cloned())
    }

    #[test]
    fn bounds_name_the_offending_field() {
        let nul = pm_api::scheduling::FindSlotsRequest {
            patient: "organizations/acme/patients/a\0b".into(),
            ..Default::default()
        };
        assert_eq!(refused(&nul, FIND).map(|v| v.0), Some("patient".into()));
        let long = pm_api::scheduling::FindSlotsRequest {
            visit_type: "x".repeat(MAX_STRING_BYTES + 1),
            ..Default::default()
        };
        assert_eq!(refused(&long, FIND).map(|v| v.0), Some("visit_type".into()));
        let many = pm_api::scheduling::FindSlotsRequest {
            locations: vec!["l".into(); MAX_REPEATED + 1],
            ..Default::default()
        };
        assert_eq!(refused(&many, FIND).map(|v| v.0), Some("locations".into()));
        let nul_in_list = pm_api::scheduling::FindSlotsRequest {
            providers: vec!["ok".into(), "\0".into()],
            ..Default::default()
        };
        assert_eq!(
            refused(&nul_in_list, FIND).map(|v| v.0),
            Some("providers[1]".into())
        );
        let forever = pm_api::scheduling::BookAppointmentRequest {
            hold_ttl: Some(prost_types::Duration {
                seconds: i64::MAX,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(
            refused(&forever, BOOK).map(|v| v.0),
            Some("hold_ttl".into())
        );
        let far = pm_api::scheduling::FindSlotsRequest {
            window: Some(pm_api::types::Interval {
                start_time: Some(prost_types::Timestamp {
                    seconds: i64::MIN,
                    nanos: 0,
                }),
                end_time: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            refused(&far, FIND).map(|v| v.0),
            Some("window.start_time".into())
        );
        let fine = pm_api::scheduling::FindSlotsRequest {
            patient: "organizations/acme/patients/p".into(),
            providers: vec!["p".into(); MAX_REPEATED],
            ..Default::default()
        };
        assert_eq!(refused(&fine, FIND), None);
    }

    #[test]
    fn streaming_methods_are_known_by_path() {
        assert!(answers_with_stream(
            "/pm.scheduling.v1.SchedulingService/WatchCalendar"
        ));
        assert!(!answers_with_stream(FIND));
        assert!(!answers_with_stream("/grpc.health.v1.Health/Check"));
        assert!(!answers_with_stream("nonsense"));
    }

    #[test]
    fn every_method_of_the_contract_has_an_input() {
        for rule in pm_api::RULES {
            assert!(input_of(rule.method).is_some(), "{}", rule.method);
        }
    }
}

//! Every request message of every RPC, generated at random, against a running mesh over real mTLS,
//! on SQLite and on PostgreSQL: no input may make a handler answer INTERNAL or UNKNOWN (a panic, an
//! unmapped error), stall a call past [`CALL_TIMEOUT`], or take a service out of SERVING.
//!
//! Inputs are built with prost-reflect from each method's input descriptor, driven by a byte string
//! of "choices" that proptest generates and shrinks (a shorter, smaller choice string is a simpler
//! message: fields left unset, short lists, plain values), plus raw malformed bytes: a truncated
//! encoding, a string field holding invalid UTF-8, random bytes. They go over the wire as bytes
//! through a pass-through codec, so what is sent is exactly what was generated.
//!
//! The test does not stop at the first failure: it collects every distinct (method, code, message
//! prefix) group, with a shrunk example's hex prefix, and reports them all at the end.
//!
//! `PM_FUZZ_CASES` (default [`DEFAULT_CASES`]) sets the cases per RPC; `PM_FUZZ_SEED` (a u64)
//! replays a run (the seed is printed at the start); `PM_FUZZ_ONLY` keeps the RPCs whose path
//! contains it; `PM_FUZZ_LOG` prints the services' error logs.

mod support;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pm::mesh::Service;
use pm_runtime::config::Backend;
use pm_runtime::{client, tls};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, RngAlgorithm, TestError, TestRng, TestRunner};
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, Value,
};
use support::TestMesh;
use support::raw::RawCodec;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Cases per RPC unless `PM_FUZZ_CASES` says otherwise: about 100 RPCs × this many calls keeps a
/// backend's run near a minute on two cores.
const DEFAULT_CASES: u32 = 100;
/// Shrinking steps spent on one failure: enough to drop most irrelevant fields, bounded in time.
const MAX_SHRINK_ITERS: u32 = 64;
/// Rounds per RPC: each round runs until a failure of a group not yet seen for that RPC.
const ROUNDS: usize = 3;
/// A call not answered within this is reported: it is a denial of service in waiting.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server-streaming call is given for its first message or status.
const STREAM_FIRST: Duration = Duration::from_millis(300);

/// Answers that mean a request got past validation: it joins the RPC's corpus of bases to mutate.
const CORPUS_CODES: &[&str] = &[
    "Ok",
    "NotFound",
    "AlreadyExists",
    "FailedPrecondition",
    "Aborted",
];
/// Bases kept per RPC and caller.
const MAX_CORPUS: usize = 64;

/// RPCs that change what the rest of the run depends on are run after all the others (their
/// requests may name the demo's resources and delete or cancel them), in this order of suffixes;
/// nothing is skipped.
const RUN_LAST: &[&str] = &[
    "/Delete",
    "/Cancel",
    "/Discharge",
    "/RotateSigningKey",
    "/DeleteOrganization",
];

/// RPCs not fuzzed, each with its reason. Empty: every RPC in `pm_api::RULES` is called.
const SKIPPED: &[(&str, &str)] = &[];

/// The second caller: a Program Manager scoped to one unit (`ccm-program`), so that scope checks
/// on generated names run too (with a quarter of the cases and one round).
const UNIT_SCOPED: &str = "principals/casey-ccm";

const ORG: &str = "organizations/acme";
const OTHER: &str = "organizations/globex";

/// Resource names of the demo organization and look-alikes in another one. The two callers'
/// principals and bindings (admin, casey-ccm) are left out on purpose: deleting them would turn
/// every later call into PERMISSION_DENIED (or fail to mint the caller's token) and hide
/// everything after it. Other principals and bindings are fair game.
fn names() -> Vec<String> {
    let mut names = vec![
        ORG.to_string(),
        OTHER.to_string(),
        "organizations/-".into(),
        "principals/dr-okafor".into(),
        "principals/jordan-billing".into(),
        "payers/aetna".into(),
        "payers/medicare".into(),
        format!("{ORG}/patients/p-0001/../../../globex"),
        format!("{ORG}//patients/p-0001"),
        format!("{ORG}/patients/p-0001/"),
    ];
    for org in [ORG, OTHER] {
        for tail in [
            "units/north-clinic",
            "units/ccm-program",
            "units/lakeside-clinic",
            "locations/north-main",
            "providers/dr-okafor",
            "providers/dr-lindqvist",
            "providers/dr-okafor/credentials/main",
            "patients/p-0001",
            "patients/p-0004",
            "patients/p-0001/enrollments/ccm-program",
            "patients/p-0001/coverages/primary",
            "units/north-clinic/visitTypes/follow-up",
            "units/ccm-program/visitTypes/ccm-enrollment",
            "units/north-clinic/rooms/room-1",
            "units/north-clinic/availabilityRules/r-1",
            "appointments/a-1",
            "encounters/e-1",
            "waitlistEntries/w-1",
            "roleBindings/jordan-billing",
        ] {
            names.push(format!("{org}/{tail}"));
        }
    }
    names
}

/// The choices a generated input is built from; reading past the end yields zeros, the simplest
/// choice everywhere, so a shrunk choice string is a simpler message.
struct Choices<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        ((usize::from(self.byte()) << 8) | usize::from(self.byte())) % n
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| (acc << 8) | u64::from(self.byte()))
    }

    /// Mostly zero (one byte spent); now and then a full random word.
    fn random(&mut self) -> u64 {
        if self.byte() > 200 { self.u64() } else { 0 }
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

struct Gen<'a> {
    names: &'a [String],
    /// The collection the method works on (`patients` for GetPatient), so that `name` fields
    /// mostly hold a name of that collection and the input gets past name parsing.
    collection: String,
    /// The parents of names of that collection, for `parent` fields.
    parents: Vec<String>,
}

impl<'a> Gen<'a> {
    fn for_method(method: &str, names: &'a [String]) -> Gen<'a> {
        let collection = collection_of_method(method, names);
        let mut parents: Vec<String> = names
            .iter()
            .filter(|n| !collection.is_empty() && n.rsplit('/').nth(1) == Some(collection.as_str()))
            .filter_map(|n| n.rsplitn(3, '/').nth(2).map(str::to_string))
            .collect();
        parents.sort();
        parents.dedup();
        Gen {
            names,
            collection,
            parents,
        }
    }
}

/// The collection a field most likely names, by the field's name.
fn collection_of(field: &str) -> Option<&'static str> {
    Some(match field {
        "patient" | "patients" => "/patients/",
        "provider" | "providers" => "/providers/",
        "unit" | "units" | "to_unit" | "from_unit" => "/units/",
        "location" | "locations" => "/locations/",
        "visit_type" | "visit_types" => "/visitTypes/",
        "room" | "rooms" => "/rooms/",
        "payer" => "payers/",
        "principal" => "principals/",
        "appointment" => "/appointments/",
        _ => return None,
    })
}

/// The collection a method works on, as named in `names`: the longest run of words of the
/// method's name that, pluralized, is a collection there (`patients` for GetPatientEligibility,
/// `appointments` for CheckInAppointment, `waitlistEntries` for ListWaitlistEntries); "" if none.
fn collection_of_method(method: &str, names: &[String]) -> String {
    let method = method.rsplit('/').next().unwrap_or_default();
    let mut words: Vec<String> = Vec::new();
    for ch in method.chars() {
        match words.last_mut() {
            Some(word) if !ch.is_ascii_uppercase() => word.push(ch),
            _ => words.push(ch.to_string()),
        }
    }
    let plural = |noun: &str| {
        let mut chars = noun.chars();
        let first = chars
            .next()
            .map(|c| c.to_ascii_lowercase())
            .unwrap_or_default();
        let rest: String = chars.collect();
        let noun = format!("{first}{rest}");
        if noun.ends_with('s') {
            noun
        } else if let Some(stem) = noun.strip_suffix('y') {
            format!("{stem}ies")
        } else {
            format!("{noun}s")
        }
    };
    for len in (1..=words.len()).rev() {
        for start in 0..=words.len() - len {
            let collection = plural(&words[start..start + len].concat());
            if names
                .iter()
                .any(|n| n.rsplit('/').nth(1) == Some(collection.as_str()))
            {
                return collection;
            }
        }
    }
    String::new()
}

/// Unix seconds of a few interesting instants.
const TS_MIN: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
const TS_MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
const DURATION_MAX: i64 = 315_576_000_000; // the Duration type's documented limit

impl Gen<'_> {
    fn message(
        &self,
        desc: &MessageDescriptor,
        c: &mut Choices,
        depth: u32,
        small: bool,
    ) -> DynamicMessage {
        let mut message = DynamicMessage::new(desc.clone());
        match desc.full_name() {
            "google.protobuf.Timestamp" => {
                let now = chrono::Utc::now().timestamp();
                let r = c.random() as i64;
                let seconds = c.pick(&[
                    now,
                    now + 3_600,
                    now - 86_400,
                    now + 86_400 * 7,
                    0,
                    TS_MIN,
                    TS_MIN - 1,
                    TS_MAX,
                    TS_MAX + 1,
                    i64::MIN,
                    i64::MAX,
                    -1,
                    r,
                ]);
                self.set(&mut message, "seconds", Value::I64(seconds));
                self.set(&mut message, "nanos", Value::I32(self.nanos(c)));
                return message;
            }
            "google.protobuf.Duration" => {
                let r = c.random() as i64;
                let seconds = c.pick(&[
                    60,
                    0,
                    1,
                    -1,
                    1_800,
                    1_801,
                    86_400,
                    DURATION_MAX,
                    DURATION_MAX + 1,
                    -DURATION_MAX - 1,
                    i64::MAX,
                    i64::MIN,
                    i64::MAX / 1_000,
                    r,
                ]);
                self.set(&mut message, "seconds", Value::I64(seconds));
                self.set(&mut message, "nanos", Value::I32(self.nanos(c)));
                return message;
            }
            "pm.types.v1.Date" => {
                let year = c.pick(&[
                    1980,
                    0,
                    1,
                    1849,
                    1850,
                    2100,
                    9999,
                    10_000,
                    -1,
                    i32::MAX,
                    i32::MIN,
                ]);
                let month = c.pick(&[1, 0, 2, 12, 13, -1, i32::MAX]);
                let day = c.pick(&[1, 0, 28, 29, 30, 31, 32, -1, i32::MAX]);
                self.set(&mut message, "year", Value::I32(year));
                self.set(&mut message, "month", Value::I32(month));
                self.set(&mut message, "day", Value::I32(day));
                return message;
            }
            "google.protobuf.FieldMask" => {
                let paths = (0..c.pick(&[1usize, 0, 2, 300]))
                    .map(|_| {
                        Value::String(c.pick(&[
                            "display_name".to_string(),
                            "*".into(),
                            "name".into(),
                            "etag".into(),
                            "billing_profile.accepted_payers".into(),
                            String::new(),
                            "no_such_field".into(),
                            "a.b.c.d.e.f".into(),
                            "birth_date".into(),
                        ]))
                    })
                    .collect();
                self.set(&mut message, "paths", Value::List(paths));
                return message;
            }
            _ => {}
        }
        for field in desc.fields() {
            // A quarter of the fields stay unset (a sixteenth of those naming resources, which most
            // requests need to get anywhere); a zero choice (a shrunk input) leaves it unset.
            let names_a_resource =
                matches!(field.name(), "name" | "parent") || collection_of(field.name()).is_some();
            if c.byte() < if names_a_resource { 16 } else { 64 } {
                continue;
            }
            if let Some(value) = self.field_value(&field, c, depth, small) {
                // A mismatch would be a bug of this generator; leaving the field unset is harmless.
                let _ = message.try_set_field(&field, value);
            }
        }
        message
    }

    fn field_value(
        &self,
        field: &FieldDescriptor,
        c: &mut Choices,
        depth: u32,
        small: bool,
    ) -> Option<Value> {
        if field.is_map() {
            self.map(field, c, depth, small)
        } else if field.is_list() {
            self.list(field, c, depth, small)
        } else {
            self.value(field, &field.kind(), c, depth, small)
        }
    }

    /// `base` (a request the service got past validation with) with one field, perhaps nested,
    /// changed or cleared: most of the request stays valid, so the change reaches the handler.
    fn mutate(&self, base: &DynamicMessage, c: &mut Choices, depth: u32) -> DynamicMessage {
        let mut message = base.clone();
        let fields: Vec<FieldDescriptor> = message.descriptor().fields().collect();
        if fields.is_empty() {
            return message;
        }
        let field = c.pick(&fields);
        let nested = match (field.kind(), field.is_list() || field.is_map()) {
            (Kind::Message(_), false) if depth < 2 && message.has_field(&field) => {
                match message.get_field(&field).as_message() {
                    Some(inner) if c.byte() < 160 => Some(self.mutate(inner, c, depth + 1)),
                    _ => None,
                }
            }
            _ => None,
        };
        match nested {
            Some(inner) => {
                let _ = message.try_set_field(&field, Value::Message(inner));
            }
            None if c.byte() > 230 => message.clear_field(&field),
            None => {
                if let Some(value) = self.field_value(&field, c, depth, false) {
                    let _ = message.try_set_field(&field, value);
                }
            }
        }
        message
    }

    fn set(&self, message: &mut DynamicMessage, name: &str, value: Value) {
        if let Some(field) = message.descriptor().get_field_by_name(name) {
            let _ = message.try_set_field(&field, value);
        }
    }

    fn nanos(&self, c: &mut Choices) -> i32 {
        c.pick(&[0, 1, 999_999_999, 1_000_000_000, -1, i32::MAX, i32::MIN])
    }

    fn list(
        &self,
        field: &FieldDescriptor,
        c: &mut Choices,
        depth: u32,
        small: bool,
    ) -> Option<Value> {
        let len = c.pick(&[1usize, 0, 2, 3, 1_000]);
        let kind = field.kind();
        if len >= 100 {
            // A long list repeats a few generated elements: its size is the point, and the
            // choices (and the encoded size) stay bounded.
            let distinct: Vec<Value> = (0..3)
                .filter_map(|_| self.value(field, &kind, c, depth + 1, true))
                .collect();
            if distinct.is_empty() {
                return None;
            }
            return Some(Value::List(
                (0..len)
                    .map(|i| distinct[i % distinct.len()].clone())
                    .collect(),
            ));
        }
        Some(Value::List(
            (0..len)
                .filter_map(|_| self.value(field, &kind, c, depth + 1, small))
                .collect(),
        ))
    }

    fn map(
        &self,
        field: &FieldDescriptor,
        c: &mut Choices,
        depth: u32,
        small: bool,
    ) -> Option<Value> {
        let Kind::Message(entry) = field.kind() else {
            return None;
        };
        let key_field = entry.map_entry_key_field();
        let value_field = entry.map_entry_value_field();
        let mut map = HashMap::new();
        for _ in 0..c.pick(&[1usize, 0, 3]) {
            let key = match self.value(&key_field, &key_field.kind(), c, depth + 1, true)? {
                Value::String(s) => MapKey::String(s),
                Value::I32(v) => MapKey::I32(v),
                Value::I64(v) => MapKey::I64(v),
                Value::U32(v) => MapKey::U32(v),
                Value::U64(v) => MapKey::U64(v),
                Value::Bool(v) => MapKey::Bool(v),
                _ => return None,
            };
            let value = self.value(&value_field, &value_field.kind(), c, depth + 1, small)?;
            map.insert(key, value);
        }
        Some(Value::Map(map))
    }

    fn value(
        &self,
        field: &FieldDescriptor,
        kind: &Kind,
        c: &mut Choices,
        depth: u32,
        small: bool,
    ) -> Option<Value> {
        let r = c.random();
        Some(match kind {
            Kind::String => Value::String(self.string(field.name(), c, small)),
            Kind::Bytes => Value::Bytes(Bytes::from(
                (0..c.pick(&[0usize, 1, 16, 300]))
                    .map(|_| c.byte())
                    .collect::<Vec<u8>>(),
            )),
            Kind::Bool => Value::Bool(c.byte() % 2 == 1),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(c.pick(&[
                10,
                0,
                1,
                -1,
                i32::MIN,
                i32::MAX,
                1_000,
                1_001,
                100_000,
                r as i32,
            ])),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(c.pick(&[
                10,
                0,
                1,
                -1,
                i64::MIN,
                i64::MAX,
                i64::from(i32::MAX) + 1,
                r as i64,
            ])),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(c.pick(&[10, 0, 1, u32::MAX, r as u32])),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(c.pick(&[10, 0, 1, u64::MAX, r])),
            Kind::Float => Value::F32(c.pick(&[0.5, 0.0, -1.0, f32::NAN, f32::INFINITY, f32::MAX])),
            Kind::Double => {
                Value::F64(c.pick(&[0.5, 0.0, -1.0, f64::NAN, f64::NEG_INFINITY, f64::MAX]))
            }
            Kind::Enum(e) => {
                let defined: Vec<i32> = e.values().map(|v| v.number()).collect();
                let undefined = [-1, 999, i32::MAX, i32::MIN];
                if c.byte() < 200 && !defined.is_empty() {
                    Value::EnumNumber(c.pick(&defined))
                } else {
                    Value::EnumNumber(c.pick(&undefined))
                }
            }
            Kind::Message(m) => {
                if depth > 4 {
                    Value::Message(DynamicMessage::new(m.clone()))
                } else {
                    Value::Message(self.message(m, c, depth + 1, small))
                }
            }
        })
    }

    /// A name that fits the field when one does (a zero choice picks the fitting one).
    fn fitting_name(&self, field: &str, c: &mut Choices) -> String {
        let wanted = match field {
            "name" | "names" => Some(self.collection.as_str()),
            "parent" => {
                let any = c.pick(self.names);
                return if self.parents.is_empty() || c.byte() > 200 {
                    c.pick(&[ORG.to_string(), OTHER.into(), any])
                } else {
                    c.pick(&self.parents)
                };
            }
            _ => collection_of(field),
        };
        let fitting: Vec<String> = wanted
            .map(|w| {
                // Names whose last collection is the one wanted: `.../patients/p-0001` for a
                // patient, not `.../patients/p-0001/coverages/primary`.
                let wanted = w.trim_matches('/');
                self.names
                    .iter()
                    .filter(|n| n.rsplit('/').nth(1) == Some(wanted))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if fitting.is_empty() || c.byte() > 240 {
            c.pick(self.names)
        } else {
            c.pick(&fitting)
        }
    }

    fn string(&self, field: &str, c: &mut Choices, small: bool) -> String {
        let name = self.fitting_name(field, c);
        if field.ends_with("_id") && c.byte() < 160 {
            // Resource ids and request ids: mostly well-formed and fresh, so creates get through.
            let fresh = format!("fz-{:x}", c.u64());
            return if field == "request_id" {
                uuid::Uuid::from_u64_pair(c.u64(), c.u64()).to_string()
            } else {
                c.pick(&[
                    fresh,
                    "p-0001".into(),
                    "a".into(),
                    "UPPER".into(),
                    "x".repeat(64),
                ])
            };
        }
        // Fields that name resources mostly get a well-formed name (of the demo organization or
        // another one), so that the input gets past name parsing to scope checks and handlers.
        let names_a_resource =
            matches!(field, "name" | "names" | "parent") || collection_of(field).is_some();
        if names_a_resource && c.byte() < 220 {
            return name;
        }
        let kinds = if small { 10 } else { 13 };
        match c.below(kinds) {
            0 => name,
            1 => String::new(),
            2 => format!("{name}\0"),
            3 => "\u{202e}é\u{301}日本語🙂\u{feff}\u{fffd}".into(),
            4 => {
                if field == "filter" {
                    c.pick(&[
                        "display_name = \"a\"".to_string(),
                        "state = ACTIVE AND unit = \"organizations/acme/units/north-clinic\""
                            .into(),
                        "((((((((((a = 1))))))))))".into(),
                        "a = \"".into(),
                        "display_name = \"%\" OR 1 = 1".into(),
                    ])
                } else {
                    c.pick(&[
                        "p-0001".to_string(),
                        "follow-up".into(),
                        "main".into(),
                        "a".into(),
                    ])
                }
            }
            5 => c.pick(&[
                "'; DROP TABLE patients; --".to_string(),
                "%_%".into(),
                "*".into(),
                "../../etc/passwd".into(),
                "organizations/".into(),
                "/".into(),
                "-".into(),
                " ".into(),
            ]),
            6 => (0..c.below(40))
                .map(|_| char::from(32 + c.byte() % 95))
                .collect(),
            7 => format!("{name}/{}", "x".repeat(c.pick(&[1usize, 64, 300]))),
            8 => c.pick(&[
                "America/New_York".to_string(),
                "Mars/Olympus".into(),
                "UTC".into(),
                "1234567893".into(),
                "207Q00000X".into(),
            ]),
            9 => {
                // Something that looks like a page token or an etag.
                let raw: Vec<u8> = (0..c.below(48)).map(|_| c.byte()).collect();
                hex::encode(raw)
            }
            // The big ones stay out of long lists (see `Gen::list`).
            10 => "a".repeat(c.pick(&[1_000usize, 65_536])),
            11 => vec!["x = 1"; 999].join(" AND "),
            _ => "🙂".repeat(20_000),
        }
    }
}

/// What the fuzzer sends.
#[derive(Debug, Clone)]
enum Input {
    /// A well-formed message built from these choices.
    Message(Vec<u8>),
    /// A request the service accepted earlier (see `CORPUS_CODES`) with one field changed, chosen
    /// by these choices; a `Message` until there is one.
    Mutated(Vec<u8>),
    /// A message's encoding cut short, or followed by a length prefix longer than what follows.
    Truncated(Vec<u8>, u16),
    /// A message with a string field set to invalid UTF-8.
    BadUtf8(Vec<u8>, u8),
    /// Random bytes.
    Raw(Vec<u8>),
}

fn inputs() -> impl Strategy<Value = Input> {
    let choices = || proptest::collection::vec(any::<u8>(), 0..400);
    prop_oneof![
        5 => choices().prop_map(Input::Message),
        4 => choices().prop_map(Input::Mutated),
        1 => (choices(), any::<u16>()).prop_map(|(c, cut)| Input::Truncated(c, cut)),
        1 => (choices(), any::<u8>()).prop_map(|(c, k)| Input::BadUtf8(c, k)),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Input::Raw),
    ]
}

/// The bytes to send for `input`, and the message they encode when well-formed.
fn encode(
    generator: &Gen,
    desc: &MessageDescriptor,
    corpus: &[DynamicMessage],
    input: &Input,
) -> (Bytes, Option<DynamicMessage>) {
    let build = |choices: &[u8]| {
        let mut c = Choices {
            bytes: choices,
            at: 0,
        };
        generator.message(desc, &mut c, 0, false).encode_to_vec()
    };
    let well_formed = |choices: &[u8], mutate: bool| {
        let mut c = Choices {
            bytes: choices,
            at: 0,
        };
        let message = if mutate && !corpus.is_empty() {
            let base = &corpus[c.below(corpus.len())];
            generator.mutate(base, &mut c, 0)
        } else {
            generator.message(desc, &mut c, 0, false)
        };
        (Bytes::from(message.encode_to_vec()), Some(message))
    };
    let bytes = match input {
        Input::Message(choices) => return well_formed(choices, false),
        Input::Mutated(choices) => return well_formed(choices, true),
        Input::Truncated(choices, cut) => {
            let mut bytes = build(choices);
            if cut % 2 == 0 && !bytes.is_empty() {
                bytes.truncate(usize::from(*cut) % bytes.len());
            } else {
                // Field 1, length-delimited, claiming 100 bytes; 3 follow.
                bytes.extend_from_slice(&[0x0a, 100, b'a', b'b', b'c']);
            }
            Bytes::from(bytes)
        }
        Input::BadUtf8(choices, which) => {
            let mut bytes = build(choices);
            let strings: Vec<u32> = desc
                .fields()
                .filter(|f| matches!(f.kind(), Kind::String))
                .map(|f| f.number())
                .collect();
            let number = if strings.is_empty() {
                1
            } else {
                strings[usize::from(*which) % strings.len()]
            };
            prost::encoding::encode_key(
                number,
                prost::encoding::WireType::LengthDelimited,
                &mut bytes,
            );
            let bad = [b'o', b'k', 0xff, 0xfe, 0xc3, 0x28];
            prost::encoding::encode_varint(bad.len() as u64, &mut bytes);
            bytes.extend_from_slice(&bad);
            Bytes::from(bytes)
        }
        Input::Raw(bytes) => Bytes::copy_from_slice(bytes),
    };
    (bytes, None)
}

/// How one call ended, as far as this test cares.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Any other code (counted, to show how deep the inputs get).
    Fine(String),
    /// A code that must never come back, with the message's first characters.
    Bad(String, String),
}

/// A status message reduced to what tells failures apart: its first 60 characters with digits
/// masked, and every decoding error of tonic's codec as one class (its detail names the field and
/// the byte that broke it, which says nothing more about the cause).
fn class(message: &str) -> String {
    const UNDECODABLE: &str = "failed to decode Protobuf message";
    if message.starts_with(UNDECODABLE) {
        return format!("{UNDECODABLE}: …");
    }
    message
        .chars()
        .take(60)
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect()
}

async fn call(
    channel: &Channel,
    token: &str,
    method: &str,
    streaming: bool,
    body: Bytes,
) -> Outcome {
    let path = match PathAndQuery::from_str(method) {
        Ok(path) => path,
        Err(_) => return Outcome::Bad("test".into(), format!("bad path {method}")),
    };
    let mut request = tonic::Request::new(body);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let exchange = async {
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
        if streaming {
            let mut stream = grpc
                .server_streaming(request, path, RawCodec)
                .await?
                .into_inner();
            // The first message or status; a stream that stays open and quiet is fine.
            match tokio::time::timeout(STREAM_FIRST, stream.message()).await {
                Ok(first) => first.map(|_| ()),
                Err(_) => Ok(()),
            }
        } else {
            grpc.unary(request, path, RawCodec).await.map(|_| ())
        }
    };
    match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
        Err(_) => Outcome::Bad("NO ANSWER".into(), format!("none within {CALL_TIMEOUT:?}")),
        Ok(Ok(())) => Outcome::Fine("Ok".into()),
        Ok(Err(status)) => match status.code() {
            Code::Internal | Code::Unknown => {
                Outcome::Bad(format!("{:?}", status.code()), class(status.message()))
            }
            code => Outcome::Fine(format!("{code:?}: {}", class(status.message()))),
        },
    }
}

/// A failure group: the method, the code and the message prefix.
type Group = (String, String, String);

#[derive(Debug)]
struct Example {
    count: usize,
    hex: String,
    len: usize,
    shrunk: bool,
}

fn hex_prefix(bytes: &[u8]) -> String {
    hex::encode(&bytes[..bytes.len().min(64)])
}

struct Target {
    method: &'static str,
    service: Service,
    streaming: bool,
    input: MessageDescriptor,
}

fn targets(pool: &DescriptorPool) -> Vec<Target> {
    let mut targets: Vec<Target> = pm_api::RULES
        .iter()
        .map(|rule| {
            let (service_name, method_name) = rule
                .method
                .trim_start_matches('/')
                .split_once('/')
                .unwrap_or_else(|| panic!("malformed method path {}", rule.method));
            let service_desc = pool
                .get_service_by_name(service_name)
                .unwrap_or_else(|| panic!("{service_name} not in the descriptor set"));
            let method = service_desc
                .methods()
                .find(|m| m.name() == method_name)
                .unwrap_or_else(|| panic!("{} not in the descriptor set", rule.method));
            let service = match service_desc.package_name() {
                "pm.org.v1" => Service::Org,
                "pm.rbac.v1" => Service::Rbac,
                "pm.scheduling.v1" | "pm.audit.v1" => Service::Scheduling,
                "pm.billing.v1" => Service::Billing,
                other => panic!("no service of the mesh serves package {other}"),
            };
            Target {
                method: rule.method,
                service,
                streaming: method.is_server_streaming(),
                input: method.input(),
            }
        })
        .filter(|t| !SKIPPED.iter().any(|(m, _)| *m == t.method))
        .filter(|t| {
            std::env::var("PM_FUZZ_ONLY").map_or(true, |only| t.method.contains(only.as_str()))
        })
        .collect();
    let rank = |method: &str| {
        RUN_LAST
            .iter()
            .rposition(|suffix| method.contains(suffix))
            .map_or(0, |i| i + 1)
    };
    targets.sort_by_key(|t| rank(t.method));
    targets
}

async fn assert_serving(mesh: &TestMesh, after: &str) -> anyhow::Result<()> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    for service in Service::ALL {
        let channel = client::channel(&mesh.config, tls::CLIENT, &mesh.url(service)).await?;
        let mut health = HealthClient::new(channel);
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{} health after {after}: {s}", service.name()))?
            .into_inner()
            .status;
        anyhow::ensure!(
            status == ServingStatus::Serving as i32,
            "{} not SERVING after {after}: {status}",
            service.name()
        );
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn fuzz(backend: Backend) -> anyhow::Result<()> {
    let started = Instant::now();
    // PM_FUZZ_LOG=1 shows the services' error logs (the causes behind INTERNAL answers).
    if std::env::var_os("PM_FUZZ_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("error")
            .with_test_writer()
            .try_init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let pool = DescriptorPool::decode(pm_api::FILE_DESCRIPTOR_SET)?;
    let targets = targets(&pool);
    let seed: u64 = std::env::var("PM_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand_seed);
    println!(
        "request fuzz on {backend:?}: {} RPCs × {} cases, PM_FUZZ_SEED={seed}",
        targets.len(),
        cases()
    );
    for (method, reason) in SKIPPED {
        println!("  skipped {method}: {reason}");
    }

    let mesh = rt.block_on(async {
        let mesh = TestMesh::start(backend).await?;
        let mut org = mesh.org().await?;
        pm::demo::seed(&mut org, &mut mesh.billing_as(pm::demo::ADMIN).await?).await?;
        let mut scheduling = mesh.scheduling_as(pm::demo::ADMIN).await?;
        pm::demo::seed_scheduling(&mut scheduling).await?;
        anyhow::Ok(mesh)
    })?;
    let channels: HashMap<&str, Channel> = rt.block_on(async {
        let mut channels = HashMap::new();
        for service in Service::ALL {
            channels.insert(
                service.name(),
                client::channel(&mesh.config, tls::CLIENT, &mesh.url(service)).await?,
            );
        }
        anyhow::Ok(channels)
    })?;

    let names = names();
    let groups: RefCell<BTreeMap<Group, Example>> = RefCell::new(BTreeMap::new());
    let codes: RefCell<BTreeMap<String, usize>> = RefCell::new(BTreeMap::new());
    let shrunk_classes: RefCell<std::collections::BTreeSet<(String, String)>> =
        RefCell::new(std::collections::BTreeSet::new());
    let mut calls = 0usize;
    let mut health_failure = None;

    for (index, target) in targets.iter().enumerate() {
        for (who, (principal, cases, rounds)) in [
            (pm::demo::ADMIN, cases(), ROUNDS),
            (UNIT_SCOPED, (cases() / 4).max(1), 1),
        ]
        .into_iter()
        .enumerate()
        {
            let generator = Gen::for_method(target.method, &names);
            // Requests this RPC got past validation with, as bases for `Input::Mutated`.
            let corpus: RefCell<Vec<DynamicMessage>> = RefCell::new(Vec::new());
            let label = if principal == pm::demo::ADMIN {
                target.method.to_string()
            } else {
                format!("{} as {principal}", target.method)
            };
            // A fresh token per RPC: the run outlives none, and a RotateSigningKey earlier cannot
            // leave the caller with a key the mesh no longer accepts.
            let token = rt.block_on(mesh.token(principal))?;
            let channel = &channels[target.service.name()];
            let mut known: Vec<Group> = Vec::new();
            let mut method_calls = 0usize;
            for round in 0..rounds {
                let config = PropConfig {
                    cases,
                    max_shrink_iters: MAX_SHRINK_ITERS,
                    failure_persistence: None,
                    ..PropConfig::default()
                };
                let mut key = [0u8; 32];
                key[..8].copy_from_slice(&seed.to_le_bytes());
                key[8..16].copy_from_slice(&(index as u64).to_le_bytes());
                key[16] = round as u8;
                key[17] = who as u8;
                let mut runner = TestRunner::new_with_rng(
                    config,
                    TestRng::from_seed(RngAlgorithm::ChaCha, &key),
                );
                let run = |input: &Input| -> Option<Group> {
                    let (body, message) =
                        encode(&generator, &target.input, &corpus.borrow(), input);
                    let outcome = rt.block_on(call(
                        channel,
                        &token,
                        target.method,
                        target.streaming,
                        body.clone(),
                    ));
                    match outcome {
                        Outcome::Fine(code) => {
                            let mut corpus = corpus.borrow_mut();
                            if let Some(message) = message
                                && corpus.len() < MAX_CORPUS
                                && CORPUS_CODES.iter().any(|c| code.starts_with(c))
                            {
                                corpus.push(message);
                            }
                            *codes.borrow_mut().entry(code).or_default() += 1;
                            None
                        }
                        Outcome::Bad(code, message) => {
                            *codes.borrow_mut().entry(code.clone()).or_default() += 1;
                            let group = (label.clone(), code, message);
                            let mut groups = groups.borrow_mut();
                            let example = groups.entry(group.clone()).or_insert_with(|| Example {
                                count: 0,
                                hex: hex_prefix(&body),
                                len: body.len(),
                                shrunk: false,
                            });
                            example.count += 1;
                            // Keep the smallest example seen (shrinking makes them smaller).
                            if body.len() < example.len {
                                example.hex = hex_prefix(&body);
                                example.len = body.len();
                                example.shrunk = true;
                            }
                            Some(group)
                        }
                    }
                };
                let count = std::cell::Cell::new(0usize);
                let result = runner.run(&inputs(), |input| {
                    count.set(count.get() + 1);
                    match run(&input) {
                        // A class already shrunk on another RPC is recorded, not shrunk again:
                        // the budget goes to finding new classes.
                        Some(group)
                            if !known.contains(&group)
                                && !shrunk_classes
                                    .borrow()
                                    .contains(&(group.1.clone(), group.2.clone())) =>
                        {
                            Err(TestCaseError::fail(format!(
                                "{} {}: {}",
                                group.0, group.1, group.2
                            )))
                        }
                        _ => Ok(()),
                    }
                });
                method_calls += count.get();
                match result {
                    Ok(()) => break,
                    Err(TestError::Fail(_, minimal)) => {
                        // The minimal input's group is known from now on; look for another one.
                        if let Some(group) = run(&minimal) {
                            if let Some(example) = groups.borrow_mut().get_mut(&group) {
                                example.shrunk = true;
                            }
                            shrunk_classes
                                .borrow_mut()
                                .insert((group.1.clone(), group.2.clone()));
                            known.push(group);
                        } else {
                            // Flaky (depends on state): stop looking for this RPC.
                            break;
                        }
                    }
                    Err(TestError::Abort(why)) => {
                        anyhow::bail!("proptest aborted {}: {why}", target.method)
                    }
                }
            }
            calls += method_calls;
        }
        if let Err(err) = rt.block_on(assert_serving(&mesh, target.method)) {
            health_failure = Some(err.to_string());
            break;
        }
    }

    rt.block_on(mesh.stop())?;
    let groups = groups.into_inner();
    // What the inputs ran into, most frequent first: shows how deep the generated inputs get.
    let codes = codes.into_inner();
    let mut by_code: BTreeMap<&str, usize> = BTreeMap::new();
    for (answer, n) in &codes {
        *by_code
            .entry(answer.split(':').next().unwrap_or_default())
            .or_default() += n;
    }
    println!("  answers by code: {by_code:?}");
    let mut top: Vec<(&String, &usize)> = codes.iter().collect();
    top.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
    for (answer, n) in top.iter().take(15) {
        println!("    {n:>6} {answer}");
    }
    println!(
        "request fuzz on {backend:?}: {calls} calls in {:.1?}, {} failure groups",
        started.elapsed(),
        groups.len()
    );
    // One line per (code, message class), with every RPC it was seen on and the smallest example.
    let mut classes: BTreeMap<(&str, &str), Vec<(&str, &Example)>> = BTreeMap::new();
    for ((method, code, message), example) in &groups {
        classes
            .entry((code.as_str(), message.as_str()))
            .or_default()
            .push((method.as_str(), example));
    }
    for ((code, message), seen) in &classes {
        let total: usize = seen.iter().map(|(_, e)| e.count).sum();
        println!(
            "  FAIL {code} \"{message}\" ×{total} on {} RPCs:",
            seen.len()
        );
        let mut methods: Vec<&str> = seen.iter().map(|(m, _)| *m).collect();
        methods.sort_unstable();
        println!("    {}", methods.join(" "));
        if let Some((method, example)) = seen.iter().min_by_key(|(_, e)| e.len) {
            println!(
                "    smallest example: {method}, {} bytes{}: {}",
                example.len,
                if example.shrunk { ", shrunk" } else { "" },
                example.hex
            );
        }
    }
    if let Some(failure) = health_failure {
        anyhow::bail!("the mesh stopped serving: {failure}");
    }
    anyhow::ensure!(
        groups.is_empty(),
        "{} (method, code, message) failure groups in {} classes on {backend:?} (listed above; replay with PM_FUZZ_SEED={seed})",
        groups.len(),
        classes.len()
    );
    Ok(())
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}

#[test]
fn every_request_message_on_sqlite() -> anyhow::Result<()> {
    fuzz(Backend::Sqlite)
}

#[test]
fn every_request_message_on_postgres() -> anyhow::Result<()> {
    fuzz(Backend::Postgres)
}

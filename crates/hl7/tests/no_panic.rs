//! Properties: no input makes the reader, the accessors, the escape decoder or the ACK builder
//! panic. (The decoder's property lives in tests/mllp.rs.)
#![allow(clippy::unwrap_used)]

use pm_hl7::{Ack, AckOutcome, Delimiters, Message, Path};
use proptest::prelude::*;

/// Strings made of the characters that matter to an HL7 parser, multi-byte ones included, so
/// that random input gets past the MSH checks and deep into fields and escapes.
fn hl7ish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("MSH|^~\\&|".to_owned()),
        Just("MSH$%~\\&#$".to_owned()),
        Just("\rPID|".to_owned()),
        Just("\nOBX|".to_owned()),
        Just("\r\n".to_owned()),
        Just("\\".to_owned()),
        Just("\\X".to_owned()),
        Just("\\.br\\".to_owned()),
        Just("\"\"".to_owned()),
        Just("FHS|".to_owned()),
        "[|^~&#$%\\\\FSTREXHNP0-9A-F.éü日😀 \r\n]{0,8}",
        any::<String>(),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

/// Path-like strings, mostly valid.
fn pathish() -> impl Strategy<Value = String> {
    prop_oneof![
        "(MSH|PID|OBX|ZZZ)(\\[[0-9]{1,3}\\])?-[0-9]{1,3}(\\[[0-9]{1,3}\\])?(\\.[0-9]{1,3}(\\.[0-9]{1,3})?)?",
        "[A-Z0-9\\[\\]().\\-é]{0,16}",
        any::<String>(),
    ]
}

/// Visits every part of every segment and decodes every leaf.
fn walk(msg: &Message) -> usize {
    let mut leaves = 0;
    for seg in msg.all_segments() {
        for field in seg.fields() {
            let _ = field.value();
            for rep in field.repetitions() {
                for comp in rep.components() {
                    for sub in comp.subcomponents() {
                        let _ = sub.value();
                        leaves += 1;
                    }
                }
            }
        }
    }
    leaves
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn parse_never_panics_on_arbitrary_strings(s in any::<String>()) {
        let _ = Message::parse(&s);
    }

    #[test]
    fn parse_never_panics_on_lossy_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Message::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn parse_get_walk_and_ack_never_panic(s in hl7ish(), paths in proptest::collection::vec(pathish(), 0..8)) {
        match Message::parse(&s) {
            Ok(msg) => {
                walk(&msg);
                for p in &paths {
                    let _ = msg.get(p);
                    if let Ok(path) = p.parse::<Path>() {
                        let _ = msg.get_path(&path);
                    }
                }
                // What we parsed writes back and parses to the same thing.
                prop_assert_eq!(Message::parse(&msg.to_er7()).unwrap(), msg.clone());
                let ack = Ack::new(AckOutcome::Accept).build(&msg, "20260101", "A").unwrap();
                prop_assert!(Message::parse(&ack).is_ok());
            }
            Err(e) => {
                let ack = Ack::new(AckOutcome::Reject)
                    .error(e.error_detail())
                    .build_unparsed(&s, "20260101", "A")
                    .unwrap();
                prop_assert!(Message::parse(&ack).is_ok());
            }
        }
    }

    #[test]
    fn unescape_never_panics_and_escape_round_trips(s in hl7ish(), trunc in any::<bool>()) {
        let d = if trunc {
            Delimiters::from_msh('|', "^~\\&#").unwrap()
        } else {
            Delimiters::default()
        };
        let _ = d.unescape(&s);
        let escaped = d.escape_text(&s);
        prop_assert!(!escaped.contains(['|', '^', '~', '&', '\r', '\n']));
        prop_assert_eq!(d.unescape(&escaped), s.as_str());
    }
}

//! The writer: escaping, structure, refusals, and the parse(write(m)) round trip as a property.
#![allow(clippy::unwrap_used)]

use pm_hl7::{Delimiters, FieldValue, Message, MessageWriter, Value, WriteError};
use proptest::prelude::*;

fn text(s: &str) -> Value<'_> {
    Value::Text(s.into())
}

#[test]
fn writes_msh_and_segments_with_cr() {
    let mut w = MessageWriter::new(Delimiters::default());
    w.msh()
        .text(3, "GW")
        .unwrap()
        .field(9, &FieldValue::components(["ADT", "A01", "ADT_A01"]))
        .unwrap()
        .text(10, "C1")
        .unwrap();
    w.segment("PID").unwrap().text(1, "1").unwrap();
    w.segment("PV1").unwrap();
    assert_eq!(
        w.to_er7(),
        "MSH|^~\\&|GW||||||ADT^A01^ADT_A01|C1\rPID|1\rPV1\r"
    );
}

#[test]
fn escapes_every_delimiter_and_line_breaks() {
    let mut w = MessageWriter::new(Delimiters::default());
    w.segment("NTE")
        .unwrap()
        .text(3, "a|b^c~d\\e&f\r\ng")
        .unwrap();
    let er7 = w.to_er7();
    assert!(er7.ends_with("NTE|||a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f\\X0D\\\\X0A\\g\r"));
    let msg = Message::parse(&er7).unwrap();
    assert_eq!(msg.get("NTE-3").unwrap(), text("a|b^c~d\\e&f\r\ng"));
}

#[test]
fn null_empty_and_literal_quotes() {
    let mut w = MessageWriter::new(Delimiters::default());
    w.segment("PID")
        .unwrap()
        .null(2)
        .unwrap()
        .text(3, "")
        .unwrap()
        .text(4, "\"\"")
        .unwrap();
    let msg = Message::parse(&w.to_er7()).unwrap();
    assert_eq!(msg.get("PID-1").unwrap(), Value::Empty);
    assert_eq!(msg.get("PID-2").unwrap(), Value::Null);
    assert_eq!(msg.get("PID-3").unwrap(), Value::Empty);
    // The text `""` is not the null.
    assert_eq!(msg.get("PID-4").unwrap(), text("\"\""));
    assert_eq!(msg.get("PID-5").unwrap(), Value::Absent);
}

#[test]
fn structured_fields() {
    let mut pid3 = FieldValue::from_repetitions(vec![vec![
        vec!["123".into()],
        vec![],
        vec![],
        vec!["HOSP".into(), "1.2.3".into(), "ISO".into()],
        vec!["MR".into()],
    ]]);
    pid3.push_repetition(["987-65-4329", "", "", "SSA", "SS"]);
    let mut w = MessageWriter::new(Delimiters::default());
    w.segment("PID").unwrap().field(3, &pid3).unwrap();
    let er7 = w.to_er7();
    assert!(er7.contains("PID|||123^^^HOSP&1.2.3&ISO^MR~987-65-4329^^^SSA^SS\r"));
    let msg = Message::parse(&er7).unwrap();
    assert_eq!(msg.get("PID-3[1].4.2").unwrap(), text("1.2.3"));
    assert_eq!(msg.get("PID-3[2].4").unwrap(), text("SSA"));
    assert_eq!(msg.get("PID-3[1].2").unwrap(), Value::Empty);
}

#[test]
fn custom_delimiters_are_declared_and_used() {
    let d = Delimiters::from_msh('$', "%~\\&").unwrap();
    let mut w = MessageWriter::new(d);
    w.msh().text(3, "A$B").unwrap();
    w.segment("PID")
        .unwrap()
        .field(5, &FieldValue::components(["O'NEIL|X", "MARY%ANN"]))
        .unwrap();
    let er7 = w.to_er7();
    assert!(er7.starts_with("MSH$%~\\&$A\\F\\B\r"));
    assert!(er7.contains("PID$$$$$O'NEIL|X%MARY\\S\\ANN\r"));
    let msg = Message::parse(&er7).unwrap();
    assert_eq!(msg.get("MSH-3").unwrap(), text("A$B"));
    assert_eq!(msg.get("PID-5.2").unwrap(), text("MARY%ANN"));
}

#[test]
fn refusals() {
    let mut w = MessageWriter::new(Delimiters::default());
    assert_eq!(w.segment("MSH").unwrap_err(), WriteError::ReservedSegment);
    assert_eq!(w.segment("BHS").unwrap_err(), WriteError::ReservedSegment);
    assert_eq!(w.segment("pid").unwrap_err(), WriteError::InvalidSegmentId);
    assert_eq!(w.segment("PID|").unwrap_err(), WriteError::InvalidSegmentId);
    assert_eq!(
        w.msh().text(1, "x").unwrap_err(),
        WriteError::FieldOutOfRange
    );
    assert_eq!(
        w.msh().text(2, "x").unwrap_err(),
        WriteError::FieldOutOfRange
    );
    let pid = w.segment("PID").unwrap();
    assert_eq!(pid.text(0, "x").unwrap_err(), WriteError::FieldOutOfRange);
    assert_eq!(
        pid.text(1000, "x").unwrap_err(),
        WriteError::FieldOutOfRange
    );
    assert_eq!(
        pid.text(usize::MAX, "x").unwrap_err(),
        WriteError::FieldOutOfRange
    );
    assert_eq!(
        pid.raw(1, "a|b").unwrap_err(),
        WriteError::RawBreaksStructure
    );
    assert_eq!(
        pid.raw(1, "a\rb").unwrap_err(),
        WriteError::RawBreaksStructure
    );
    pid.raw(1, "a^b~c").unwrap();
    let msg = Message::parse(&w.to_er7()).unwrap();
    assert_eq!(msg.get("PID-1[2]").unwrap(), text("c"));
}

#[test]
fn copy_field_between_delimiter_sets() {
    let src = Message::parse("MSH$%~\\&$A\rPID$1$$X|Y%Z\\S\\W~Q&R&S%\"\"").unwrap();
    let field = src.segment("PID").unwrap().field(3).unwrap();
    let mut w = MessageWriter::new(Delimiters::default());
    w.segment("PID").unwrap().copy_field(3, field).unwrap();
    let er7 = w.to_er7();
    // `&` is the subcomponent separator on both sides, so Q&R&S stays three subcomponents.
    assert!(er7.contains("PID|||X\\F\\Y^Z%W~Q&R&S^\"\"\r"), "{er7:?}");
    let out = Message::parse(&er7).unwrap();
    assert_eq!(out.get("PID-3.1").unwrap(), text("X|Y"));
    assert_eq!(out.get("PID-3.2").unwrap(), text("Z%W"));
    assert_eq!(out.get("PID-3[2].1.2").unwrap(), text("R"));
    assert_eq!(out.get("PID-3[2].2").unwrap(), Value::Null);
}

// ---- round trip property ----

/// A delimiter set drawn from ASCII punctuation, sometimes with a truncation character.
fn delimiters() -> impl Strategy<Value = Delimiters> {
    let pool: Vec<char> = "|^~\\&#$%!@*+/:;=?_`{}".chars().collect();
    (Just(pool).prop_shuffle(), any::<bool>()).prop_map(|(p, trunc)| {
        Delimiters::new(p[0], p[1], p[2], p[3], p[4], trunc.then_some(p[5])).unwrap()
    })
}

/// Text that likes delimiters, escapes, quotes, line breaks and multi-byte characters.
fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::collection::vec(
            prop_oneof![
                Just('|'), Just('^'), Just('~'), Just('\\'), Just('&'), Just('#'), Just('$'),
                Just('%'), Just('"'), Just('\r'), Just('\n'), Just('X'), Just('F'), Just('é'),
                Just('日'), Just('😀'), Just(' '), any::<char>()
            ],
            0..12
        )
        .prop_map(|v| v.into_iter().collect()),
        1 => any::<String>(),
        1 => Just("\"\"".to_owned()),
        1 => Just(String::new()),
    ]
}

#[derive(Debug, Clone)]
enum Spec {
    Text(String),
    Null,
    Structured(Vec<Vec<Vec<String>>>),
}

fn spec() -> impl Strategy<Value = Spec> {
    let sub = proptest::collection::vec(leaf(), 1..3);
    let comp = proptest::collection::vec(sub, 1..4);
    let reps = proptest::collection::vec(comp, 1..3);
    prop_oneof![
        3 => leaf().prop_map(Spec::Text),
        1 => Just(Spec::Null),
        3 => reps.prop_map(Spec::Structured),
    ]
}

fn segment_id() -> impl Strategy<Value = String> {
    "[A-Z][A-Z0-9]{2}".prop_filter("reserved", |id| {
        !matches!(id.as_str(), "MSH" | "FHS" | "BHS" | "BTS" | "FTS")
    })
}

fn expected(s: &str) -> Value<'static> {
    if s.is_empty() {
        Value::Empty
    } else {
        Value::Text(s.to_owned().into())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_of_write_round_trips(
        d in delimiters(),
        msh_fields in proptest::collection::vec((3usize..20, leaf()), 0..5),
        segments in proptest::collection::vec(
            (segment_id(), proptest::collection::vec((1usize..30, spec()), 0..6)),
            0..6
        ),
    ) {
        let mut w = MessageWriter::new(d);
        let mut msh_expect = std::collections::BTreeMap::new();
        for (n, t) in &msh_fields {
            w.msh().text(*n, t).unwrap();
            msh_expect.insert(*n, t.clone());
        }
        // Last write to a field wins: keep the expectations the same way.
        let mut seg_expect = Vec::new();
        for (id, fields) in &segments {
            let seg = w.segment(id).unwrap();
            let mut expect = std::collections::BTreeMap::new();
            for (n, s) in fields {
                match s {
                    Spec::Text(t) => { seg.text(*n, t).unwrap(); }
                    Spec::Null => { seg.null(*n).unwrap(); }
                    Spec::Structured(r) => {
                        seg.field(*n, &FieldValue::from_repetitions(r.clone())).unwrap();
                    }
                }
                expect.insert(*n, s.clone());
            }
            seg_expect.push((id.clone(), expect));
        }
        let er7 = w.to_er7();
        let msg = Message::parse(&er7).unwrap();
        prop_assert_eq!(msg.delimiters(), d);
        prop_assert_eq!(msg.all_segments().len(), segments.len() + 1);
        prop_assert_eq!(Message::parse(&msg.to_er7()).unwrap(), msg.clone());

        for (n, t) in &msh_expect {
            prop_assert_eq!(msg.msh().value(*n, 1, 1, 1), expected(t));
        }
        for (index, (id, expect)) in seg_expect.iter().enumerate() {
            let seg = &msg.all_segments()[index + 1];
            prop_assert_eq!(seg.id(), id.as_str());
            for (n, s) in expect {
                match s {
                    Spec::Text(t) => prop_assert_eq!(seg.value(*n, 1, 1, 1), expected(t)),
                    Spec::Null => prop_assert_eq!(seg.value(*n, 1, 1, 1), Value::Null),
                    Spec::Structured(reps) => {
                        let field = seg.field(*n).unwrap();
                        prop_assert_eq!(field.repetitions().count(), reps.len());
                        for (r, comps) in reps.iter().enumerate() {
                            for (c, subs) in comps.iter().enumerate() {
                                for (s, leaf) in subs.iter().enumerate() {
                                    prop_assert_eq!(
                                        seg.value(*n, r + 1, c + 1, s + 1),
                                        expected(leaf)
                                    );
                                }
                                prop_assert_eq!(
                                    seg.value(*n, r + 1, c + 1, subs.len() + 1),
                                    Value::Absent
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

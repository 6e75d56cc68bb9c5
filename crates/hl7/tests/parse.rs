//! The reader's rules, one test per rule.
#![allow(clippy::unwrap_used)]

use pm_hl7::{Message, ParseErrorCode, PathError, Value};

const MSH: &str = "MSH|^~\\&|EHR|HOSP|GW|PM|20260101120000||ADT^A01^ADT_A01|CTRL1|P|2.5.1";

fn text(s: &str) -> Value<'_> {
    Value::Text(s.into())
}

fn parse_err(input: &str) -> pm_hl7::ParseError {
    Message::parse(input).unwrap_err()
}

#[test]
fn segments_split_on_cr_lf_crlf_and_mixed() {
    for sep in ["\r", "\n", "\r\n", "\n\r"] {
        let input = format!("{MSH}{sep}PID|1{sep}PV1|1{sep}");
        let msg = Message::parse(&input).unwrap();
        let ids: Vec<&str> = msg.all_segments().iter().map(|s| s.id()).collect();
        assert_eq!(ids, ["MSH", "PID", "PV1"], "separator {sep:?}");
    }
    let mixed = format!("{MSH}\rPID|1\nPV1|1\r\nOBX|1\r");
    assert_eq!(Message::parse(&mixed).unwrap().all_segments().len(), 4);
}

#[test]
fn blank_lines_bom_and_missing_final_terminator() {
    let input = format!("\u{feff}\r\n\r\n{MSH}\r\r\n   \rPID|1");
    let msg = Message::parse(&input).unwrap();
    assert_eq!(msg.all_segments().len(), 2);
    assert_eq!(msg.get("PID-1").unwrap(), text("1"));
}

#[test]
fn msh_numbering_follows_the_standard() {
    let msg = Message::parse(MSH).unwrap();
    assert_eq!(msg.get("MSH-1").unwrap(), text("|"));
    assert_eq!(msg.get("MSH-2").unwrap(), text("^~\\&"));
    assert_eq!(msg.get("MSH-3").unwrap(), text("EHR"));
    assert_eq!(msg.get("MSH-9").unwrap(), text("ADT"));
    assert_eq!(msg.get("MSH-9.2").unwrap(), text("A01"));
    assert_eq!(msg.get("MSH-10").unwrap(), text("CTRL1"));
    assert_eq!(msg.message_type(), text("ADT"));
    assert_eq!(msg.trigger_event(), text("A01"));
    assert_eq!(msg.control_id(), text("CTRL1"));
    assert_eq!(msg.version(), text("2.5.1"));
    // MSH-1 and MSH-2 are atomic: not split on their own characters, not decoded.
    assert_eq!(msg.get("MSH-2.2").unwrap(), Value::Absent);
    assert_eq!(msg.get("MSH-2[2]").unwrap(), Value::Absent);
    assert_eq!(msg.msh().field(2).unwrap().raw(), "^~\\&");
    assert_eq!(msg.msh().field_count(), 12);
}

#[test]
fn minimal_msh_forms() {
    let msg = Message::parse("MSH|^~\\&").unwrap();
    assert_eq!(msg.msh().field_count(), 2);
    assert_eq!(msg.get("MSH-3").unwrap(), Value::Absent);
    let msg = Message::parse("MSH|^~\\&|").unwrap();
    assert_eq!(msg.get("MSH-3").unwrap(), Value::Empty);
}

#[test]
fn custom_delimiters_from_msh() {
    let msg = Message::parse(
        "MSH$%~\\&$APP$FAC$GW$PM$20260101$$ADT%A08$C1$P$2.3\rPID$1$$ID1%%%AUTH%MR~ID2%%%B%PI$$A|B^C%D\\F\\",
    )
    .unwrap();
    let d = msg.delimiters();
    assert_eq!((d.field(), d.component()), ('$', '%'));
    assert_eq!(msg.get("MSH-1").unwrap(), text("$"));
    assert_eq!(msg.get("MSH-9.2").unwrap(), text("A08"));
    assert_eq!(msg.get("PID-3[2].4").unwrap(), text("B"));
    // `|` and `^` are plain text here; \F\ is the *declared* field separator.
    assert_eq!(msg.get("PID-5.1").unwrap(), text("A|B^C"));
    assert_eq!(msg.get("PID-5.2").unwrap(), text("D$"));
}

#[test]
fn truncation_character_in_msh2() {
    let msg = Message::parse("MSH|^~\\&#|A\rNTE|1||50\\P\\ off #1").unwrap();
    assert_eq!(msg.delimiters().truncation(), Some('#'));
    assert_eq!(msg.get("MSH-2").unwrap(), text("^~\\&#"));
    assert_eq!(msg.get("MSH-3").unwrap(), text("A"));
    assert_eq!(msg.get("NTE-3").unwrap(), text("50# off #1"));
}

#[test]
fn repetitions_components_subcomponents() {
    let msg = Message::parse(&format!(
        "{MSH}\rPID|1||111^^^HOSP&1.2.3&ISO^MR~222^^^SSA^SS~333^^^PAYER^MB||DOE^JOHN"
    ))
    .unwrap();
    let pid = msg.segment("PID").unwrap();
    let pid3 = pid.field(3).unwrap();
    let ids: Vec<_> = pid3.repetitions().map(|r| r.value()).collect();
    assert_eq!(ids, [text("111"), text("222"), text("333")]);
    let first = pid3.repetition(1).unwrap();
    assert_eq!(first.components().count(), 5);
    let authority = first.component(4).unwrap();
    let subs: Vec<_> = authority.subcomponents().map(|s| s.value()).collect();
    assert_eq!(subs, [text("HOSP"), text("1.2.3"), text("ISO")]);
    assert_eq!(msg.get("PID-3[1].4.2").unwrap(), text("1.2.3"));
    assert_eq!(msg.get("PID-3[2].5").unwrap(), text("SS"));
    assert_eq!(msg.get("PID-3[3].1").unwrap(), text("333"));
    assert_eq!(msg.get("PID-3[4].1").unwrap(), Value::Absent);
    assert_eq!(msg.get("PID-5").unwrap(), text("DOE"));
    assert_eq!(msg.get("PID-5.2").unwrap(), text("JOHN"));
    assert_eq!(
        pid3.raw(),
        "111^^^HOSP&1.2.3&ISO^MR~222^^^SSA^SS~333^^^PAYER^MB"
    );
}

#[test]
fn empty_absent_and_null_are_distinguished() {
    let msg = Message::parse(&format!("{MSH}\rPID|1||\"\"|X^^\"\"|\rPV1")).unwrap();
    assert_eq!(msg.get("PID-2").unwrap(), Value::Empty);
    assert_eq!(msg.get("PID-3").unwrap(), Value::Null);
    assert!(msg.segment("PID").unwrap().field(3).unwrap().is_null());
    assert_eq!(msg.get("PID-4.1").unwrap(), text("X"));
    assert_eq!(msg.get("PID-4.2").unwrap(), Value::Empty);
    assert_eq!(msg.get("PID-4.3").unwrap(), Value::Null);
    assert_eq!(msg.get("PID-4.4").unwrap(), Value::Absent);
    assert_eq!(msg.get("PID-5").unwrap(), Value::Empty); // trailing `|`
    assert_eq!(msg.get("PID-6").unwrap(), Value::Absent);
    assert_eq!(msg.get("PV1-1").unwrap(), Value::Absent); // segment without fields
    assert_eq!(msg.get("ZZZ-1").unwrap(), Value::Absent); // segment not there
    assert_eq!(msg.get("PID[2]-1").unwrap(), Value::Absent);
    // A quoted value that is not exactly `""` is text.
    let msg = Message::parse(&format!("{MSH}\rPID|\"\"\"|\"a\"")).unwrap();
    assert_eq!(msg.get("PID-1").unwrap(), text("\"\"\""));
    assert_eq!(msg.get("PID-2").unwrap(), text("\"a\""));
}

#[test]
fn segment_occurrences() {
    let msg = Message::parse(&format!("{MSH}\rOBX|1|ST|A\rNTE|1\rOBX|2|ST|B\rOBX|3|ST|C")).unwrap();
    assert_eq!(msg.segments("OBX").count(), 3);
    assert_eq!(msg.get("OBX[2]-3").unwrap(), text("B"));
    assert_eq!(msg.get("OBX[3]-1").unwrap(), text("3"));
    assert_eq!(msg.get("OBX[4]-1").unwrap(), Value::Absent);
}

#[test]
fn values_are_decoded_raw_is_not() {
    let msg = Message::parse(&format!(
        "{MSH}\rNTE|1||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f éé\\F\\"
    ))
    .unwrap();
    assert_eq!(msg.get("NTE-3").unwrap(), text("a|b^c&d~e\\f éé|"));
    assert_eq!(
        msg.segment("NTE").unwrap().field(3).unwrap().raw(),
        "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f éé\\F\\"
    );
}

#[test]
fn malformed_paths_are_errors() {
    let msg = Message::parse(MSH).unwrap();
    assert_eq!(msg.get("PID").unwrap_err(), PathError::Syntax);
    assert_eq!(msg.get("PID-3(2).1").unwrap_err(), PathError::Syntax);
    assert_eq!(msg.get("PID-0").unwrap_err(), PathError::Index);
    assert_eq!(msg.get("p-1").unwrap_err(), PathError::SegmentId);
}

#[test]
fn to_er7_normalises_line_ends_and_round_trips() {
    let input = format!("{MSH}\nPID|1||X\\F\\Y\r\nPV1|1\n");
    let msg = Message::parse(&input).unwrap();
    let out = msg.to_er7();
    assert_eq!(out, format!("{MSH}\rPID|1||X\\F\\Y\rPV1|1\r"));
    assert_eq!(Message::parse(&out).unwrap(), msg);
}

// ---- errors: stable code, position, no content ----

#[test]
fn empty_input() {
    for input in ["", "\r\n\r\n", "   \n\t"] {
        let e = parse_err(input);
        assert_eq!(e.code, ParseErrorCode::Empty);
        assert_eq!(e.code.as_str(), "empty-message");
    }
}

#[test]
fn first_segment_must_be_msh() {
    let e = parse_err("PID|1||SECRET^NAME\rMSH|^~\\&");
    assert_eq!(e.code, ParseErrorCode::FirstSegmentNotMsh);
    assert_eq!(e.segment_index, Some(0));
    // The id found there is not reported: it is input text, not a fixed id.
    assert_eq!(e.segment_id, None);
    // Garbage in the id slot is not echoed (it could be a patient name).
    let e = parse_err("Jane Doe 1980-02-14");
    assert_eq!(e.segment_id, None);
    assert!(!e.to_string().contains("Jan"));
    // Multi-byte characters in the first three bytes do not panic.
    assert_eq!(parse_err("éé|").code, ParseErrorCode::FirstSegmentNotMsh);
    assert_eq!(parse_err("MS").code, ParseErrorCode::FirstSegmentNotMsh);
}

#[test]
fn batches_are_refused_clearly() {
    let e = parse_err("FHS|^~\\&|APP\rBHS|^~\\&\rMSH|^~\\&|A");
    assert_eq!(e.code, ParseErrorCode::BatchNotSupported);
    let e = parse_err("BHS|^~\\&|APP\rMSH|^~\\&|A");
    assert_eq!(e.code, ParseErrorCode::BatchNotSupported);
    let e = parse_err(&format!("{MSH}\rPID|1\rBTS|1"));
    assert_eq!(e.code, ParseErrorCode::BatchNotSupported);
    assert_eq!(e.segment_index, Some(2));
    let e = parse_err(&format!("{MSH}\rPID|1\r{MSH}\rPID|2"));
    assert_eq!(e.code, ParseErrorCode::SecondMsh);
    assert_eq!(e.segment_index, Some(2));
    assert_eq!(e.segment_occurrence, Some(2));
    assert_eq!(e.code.as_str(), "second-msh");
}

#[test]
fn msh_too_short_or_bad_delimiters() {
    assert_eq!(parse_err("MSH").code, ParseErrorCode::MshTooShort);
    assert_eq!(parse_err("MSH|").code, ParseErrorCode::MshTooShort);
    assert_eq!(parse_err("MSH||A").code, ParseErrorCode::MshTooShort);
    for bad in [
        "MSH|^~\\|A",    // only 3 encoding characters... and one is the separator
        "MSH|^~\\|",     // separator repeated
        "MSH|^~|A",      // too few
        "MSH|^~\\&#!|A", // too many
        "MSH|^^\\&|A",   // duplicate
        "MSH|^~a&|A",    // letter
        "MSH ^~\\& A",   // space as separator
        "MSHa^~\\&aA",   // letter as separator
        "MSHé^~\\&éA",   // non-ASCII separator
        "MSH|^~\\é|A",   // non-ASCII encoding character
    ] {
        let e = parse_err(bad);
        assert_eq!(e.code, ParseErrorCode::InvalidDelimiters, "{bad:?}");
        assert!(e.field == Some(1) || e.field == Some(2), "{bad:?}");
        assert_eq!(e.segment_id, Some("MSH"));
    }
}

#[test]
fn invalid_segment_id_reports_position_without_content() {
    let e = parse_err(&format!("{MSH}\rPID|1\rDOE, JOHN 1980|x\rPV1|1"));
    assert_eq!(e.code, ParseErrorCode::InvalidSegmentId);
    assert_eq!(e.segment_index, Some(2));
    assert_eq!(e.segment_id, None);
    let shown = e.to_string();
    assert_eq!(shown, "HL7 parse error invalid-segment-id at segment #2");
    // Lower-case, too short, or not followed by the field separator.
    for bad in ["pid|1", "PI", "PIDX|1", "PID^1", "1AB|x", "日本語|x"] {
        let e = parse_err(&format!("{MSH}\r{bad}"));
        assert_eq!(e.code, ParseErrorCode::InvalidSegmentId, "{bad:?}");
    }
    // Z-segments and ids with digits are fine.
    assert!(Message::parse(&format!("{MSH}\rZPI|1\rIN1|1\rPV2")).is_ok());
}

#[test]
fn error_display_never_contains_message_text() {
    let secret = "SMITH^JOHN^123-45-6789";
    let inputs = [
        secret.to_owned(),
        format!("MSH|^~\\&#!{secret}"),
        format!("{MSH}\r{secret}"),
        format!("{MSH}\rPID|{secret}\rBHS|{secret}"),
        format!("{MSH}\rPID|{secret}\r{MSH}{secret}"),
    ];
    for input in inputs {
        let e = parse_err(&input);
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("SMITH"), "{shown}");
        assert!(!shown.contains("6789"), "{shown}");
    }
}

#[test]
fn iterating_huge_fields_is_linear() {
    // 200,000 repetitions of 3 components: a quadratic walk would take minutes.
    let field = vec!["a^b^c"; 200_000].join("~");
    let msg = Message::parse(&format!("{MSH}\rOBX|1|ST|{field}")).unwrap();
    let start = std::time::Instant::now();
    let f = msg.segment("OBX").unwrap().field(3).unwrap();
    let mut n = 0;
    for rep in f.repetitions() {
        for comp in rep.components() {
            n += comp.subcomponents().count();
        }
    }
    assert_eq!(n, 600_000);
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}

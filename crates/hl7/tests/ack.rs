//! ACK building: addressing, codes and modes, ERR segments, unparseable input.
#![allow(clippy::unwrap_used)]

mod common;

use pm_hl7::{
    Ack, AckCode, AckError, AckMode, AckOutcome, ErrorCode, ErrorDetail, ErrorLocation, Message,
    Path, Severity, Value,
};

const TS: &str = "20260105083001-0500";

fn text(s: &str) -> Value<'_> {
    Value::Text(s.into())
}

fn inbound() -> Message {
    Message::parse(&common::sample("adt_a04_lf.hl7")).unwrap()
}

#[test]
fn accept_ack_swaps_addresses_and_echoes_control_id() {
    let msg = Message::parse(
        "MSH|^~\\&|EHR^1.2.3^ISO|HOSP|GW|PM|20260101||ADT^A01^ADT_A01|IN-77|P^T|2.5.1\rPID|1",
    )
    .unwrap();
    let er7 = Ack::new(AckOutcome::Accept)
        .build(&msg, TS, "ACK-1")
        .unwrap();
    let ack = Message::parse(&er7).unwrap();
    assert_eq!(ack.get("MSH-3").unwrap(), text("GW"));
    assert_eq!(ack.get("MSH-4").unwrap(), text("PM"));
    assert_eq!(ack.get("MSH-5").unwrap(), text("EHR"));
    assert_eq!(ack.get("MSH-5.2").unwrap(), text("1.2.3")); // copied whole, components kept
    assert_eq!(ack.get("MSH-6").unwrap(), text("HOSP"));
    assert_eq!(ack.get("MSH-7").unwrap(), text(TS));
    assert_eq!(ack.get("MSH-9").unwrap(), text("ACK"));
    assert_eq!(ack.get("MSH-9.2").unwrap(), text("A01"));
    assert_eq!(ack.get("MSH-9.3").unwrap(), text("ACK"));
    assert_eq!(ack.get("MSH-10").unwrap(), text("ACK-1"));
    assert_eq!(ack.get("MSH-11").unwrap(), text("P"));
    assert_eq!(ack.get("MSH-11.2").unwrap(), text("T"));
    assert_eq!(ack.get("MSH-12").unwrap(), text("2.5.1"));
    assert_eq!(ack.get("MSH-15").unwrap(), Value::Absent);
    assert_eq!(ack.get("MSA-1").unwrap(), text("AA"));
    assert_eq!(ack.get("MSA-2").unwrap(), text("IN-77"));
    assert_eq!(ack.segments("ERR").count(), 0);
    assert_eq!(
        er7,
        "MSH|^~\\&|GW|PM|EHR^1.2.3^ISO|HOSP|20260105083001-0500||ACK^A01^ACK|ACK-1|P^T|2.5.1\r\
         MSA|AA|IN-77\r"
    );
}

#[test]
fn error_and_reject_codes_in_original_mode() {
    let msg = inbound();
    assert_eq!(AckMode::of(&msg), AckMode::Original);
    for (outcome, code) in [
        (AckOutcome::Accept, "AA"),
        (AckOutcome::Error, "AE"),
        (AckOutcome::Reject, "AR"),
    ] {
        let ack = Ack::new(outcome).build(&msg, TS, "A").unwrap();
        assert_eq!(
            Message::parse(&ack).unwrap().get("MSA-1").unwrap(),
            text(code)
        );
        assert!(AckMode::of(&msg).wants_ack(outcome));
    }
}

#[test]
fn enhanced_mode_uses_commit_codes() {
    // The A01 sample asks MSH-15 = AL, MSH-16 = NE.
    let msg = Message::parse(&common::sample("adt_a01.hl7")).unwrap();
    let mode = AckMode::of(&msg);
    assert!(matches!(mode, AckMode::Enhanced { .. }));
    assert_eq!(mode.code(AckOutcome::Accept), AckCode::CA);
    assert_eq!(mode.code(AckOutcome::Error), AckCode::CE);
    assert_eq!(mode.code(AckOutcome::Reject), AckCode::CR);
    let ack = Ack::new(AckOutcome::Reject).build(&msg, TS, "A").unwrap();
    assert_eq!(
        Message::parse(&ack).unwrap().get("MSA-1").unwrap(),
        text("CR")
    );

    let with = |msh15: &str, msh16: &str| {
        Message::parse(&format!(
            "MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5|||{msh15}|{msh16}"
        ))
        .unwrap()
    };
    let never = AckMode::of(&with("NE", "AL"));
    assert!(!never.wants_ack(AckOutcome::Accept) && !never.wants_ack(AckOutcome::Reject));
    let errors = AckMode::of(&with("ER", ""));
    assert!(!errors.wants_ack(AckOutcome::Accept) && errors.wants_ack(AckOutcome::Error));
    let success = AckMode::of(&with("SU", ""));
    assert!(success.wants_ack(AckOutcome::Accept) && !success.wants_ack(AckOutcome::Reject));
    // Only MSH-16 valued: still enhanced, accept ACK assumed wanted.
    let only16 = AckMode::of(&with("", "AL"));
    assert_eq!(only16.code(AckOutcome::Accept), AckCode::CA);
    assert!(only16.wants_ack(AckOutcome::Accept));
    assert_eq!(AckMode::of(&with("", "")), AckMode::Original);
}

#[test]
fn err_segments_v25_style() {
    let msg = inbound();
    let ack = Ack::new(AckOutcome::Error)
        .error(
            ErrorDetail::new(
                ErrorCode::RequiredFieldMissing,
                Severity::Error,
                "Patient identifier list is required",
            )
            .at(ErrorLocation::field("PID", 1, 3)),
        )
        .error(
            ErrorDetail::new(
                ErrorCode::TableValueNotFound,
                Severity::Warning,
                "Unknown administrative sex code",
            )
            .at(ErrorLocation::from_path(&"PID-8".parse::<Path>().unwrap())),
        )
        .error(
            ErrorDetail::new(
                ErrorCode::DataTypeError,
                Severity::Information,
                "Visit number format: 1 | 2 ^ 3",
            )
            .at(ErrorLocation::field("PV1", 1, 19).within(1, 1)),
        )
        .error(ErrorDetail::new(
            ErrorCode::ApplicationInternalError,
            Severity::Error,
            "Storage unavailable, retry later",
        ))
        .build(&msg, TS, "A")
        .unwrap();
    let ack = Message::parse(&ack).unwrap();
    assert_eq!(ack.get("MSA-1").unwrap(), text("AE"));
    let errs: Vec<_> = ack.segments("ERR").collect();
    assert_eq!(errs.len(), 4);
    assert_eq!(errs[0].field(1).unwrap().raw(), "");
    assert_eq!(errs[0].field(2).unwrap().raw(), "PID^1^3");
    assert_eq!(
        errs[0].field(3).unwrap().raw(),
        "101^Required field missing^HL70357"
    );
    assert_eq!(errs[0].field(4).unwrap().raw(), "E");
    assert_eq!(
        ack.get("ERR-8").unwrap(),
        text("Patient identifier list is required")
    );
    assert_eq!(errs[1].field(2).unwrap().raw(), "PID^1^8^1^1^1");
    assert_eq!(
        errs[1].field(3).unwrap().raw(),
        "103^Table value not found^HL70357"
    );
    assert_eq!(errs[1].field(4).unwrap().raw(), "W");
    assert_eq!(errs[2].field(2).unwrap().raw(), "PV1^1^19^1^1");
    assert_eq!(errs[2].field(4).unwrap().raw(), "I");
    // The user message is escaped.
    assert_eq!(
        ack.get("ERR[3]-8").unwrap(),
        text("Visit number format: 1 | 2 ^ 3")
    );
    assert_eq!(errs[3].field(2).unwrap().raw(), "");
    assert_eq!(
        errs[3].field(3).unwrap().raw(),
        "207^Application internal error^HL70357"
    );
    for (code, n) in [
        (ErrorCode::MessageAccepted, 0),
        (ErrorCode::SegmentSequenceError, 100),
        (ErrorCode::UnsupportedMessageType, 200),
        (ErrorCode::UnsupportedEventCode, 201),
        (ErrorCode::UnsupportedProcessingId, 202),
        (ErrorCode::UnsupportedVersionId, 203),
        (ErrorCode::UnknownKeyIdentifier, 204),
        (ErrorCode::DuplicateKeyIdentifier, 205),
        (ErrorCode::ApplicationRecordLocked, 206),
    ] {
        assert_eq!(code.code(), n);
    }
}

#[test]
fn ack_uses_the_inbound_delimiters() {
    let msg = Message::parse(&common::sample("adt_a08_custom_delims.hl7")).unwrap();
    let er7 = Ack::new(AckOutcome::Accept)
        .error(
            ErrorDetail::new(ErrorCode::DataTypeError, Severity::Warning, "a$b%c")
                .at(ErrorLocation::field("PID", 1, 7)),
        )
        .build(&msg, TS, "ID$1")
        .unwrap();
    assert!(er7.starts_with("MSH$%~\\&$PMGW$PRACTICE$LEGACYREG$EASTCLINIC$"));
    assert!(er7.contains("$ACK%A08%ACK$ID\\F\\1$P$2.3\r"), "{er7:?}");
    let ack = Message::parse(&er7).unwrap();
    assert_eq!(ack.get("MSA-2").unwrap(), text("A08-CUST-42"));
    assert_eq!(ack.get("MSH-10").unwrap(), text("ID$1"));
    assert_eq!(ack.get("ERR-2").unwrap(), text("PID"));
    assert_eq!(ack.get("ERR-2.3").unwrap(), text("7"));
    assert_eq!(ack.get("ERR-8").unwrap(), text("a$b%c"));
}

#[test]
fn caller_inputs_are_validated() {
    let msg = inbound();
    let ack = Ack::new(AckOutcome::Accept);
    for ts in ["", "2026-01-05", "20260105083001-05", "now", "20260105|x"] {
        assert_eq!(
            ack.build(&msg, ts, "A"),
            Err(AckError::InvalidTimestamp),
            "{ts}"
        );
    }
    for id in [String::new(), "a\rb".to_owned(), "x".repeat(200)] {
        assert_eq!(ack.build(&msg, TS, &id), Err(AckError::InvalidControlId));
    }
    assert!(ack.build(&msg, TS, &"x".repeat(199)).is_ok());
}

#[test]
fn missing_msh_fields_leave_the_ack_fields_empty() {
    let msg = Message::parse("MSH|^~\\&").unwrap();
    let er7 = Ack::new(AckOutcome::Accept).build(&msg, TS, "A1").unwrap();
    assert_eq!(er7, "MSH|^~\\&|||||20260105083001-0500||ACK|A1\rMSA|AA|\r");
}

#[test]
fn unparseable_message_after_a_good_msh_is_answered_with_its_control_id() {
    let raw = "MSH|^~\\&|EHR|HOSP|GW|PM|20260101||SIU^S12^SIU_S12|IN-9|P|2.5.1|||AL|NE\r\
               SCH|1\rDOE, JANE|broken line\r";
    let err = Message::parse(raw).unwrap_err();
    let er7 = Ack::new(AckOutcome::Reject)
        .error(err.error_detail())
        .build_unparsed(raw, TS, "R-1")
        .unwrap();
    let ack = Message::parse(&er7).unwrap();
    // Enhanced mode (MSH-15 = AL): a commit reject.
    assert_eq!(ack.get("MSA-1").unwrap(), text("CR"));
    assert_eq!(ack.get("MSA-2").unwrap(), text("IN-9"));
    assert_eq!(ack.get("MSH-5").unwrap(), text("EHR"));
    assert_eq!(ack.get("MSH-9.2").unwrap(), text("S12"));
    assert_eq!(ack.get("ERR-3").unwrap(), text("100"));
    assert_eq!(ack.get("ERR-2").unwrap(), Value::Empty); // id of a broken line is not known
    assert!(!er7.contains("DOE"));
}

#[test]
fn unparseable_message_without_usable_msh() {
    for raw in [
        "",
        "garbage SMITH",
        "MSH|^^^^|X|Y",
        "PID|1||123\rMSH|^~\\&|A|B|C|D|2026||ADT^A01|9",
    ] {
        let err = Message::parse(raw).unwrap_err();
        let er7 = Ack::new(AckOutcome::Reject)
            .error(err.error_detail())
            .build_unparsed(raw, TS, "R-2")
            .unwrap();
        let ack = Message::parse(&er7).unwrap();
        assert_eq!(ack.delimiters(), pm_hl7::Delimiters::default());
        assert_eq!(ack.get("MSA-1").unwrap(), text("AR"));
        assert_eq!(ack.get("MSA-2").unwrap(), Value::Empty);
        assert_eq!(ack.get("MSH-9").unwrap(), text("ACK"));
        assert_eq!(ack.get("MSH-9.2").unwrap(), Value::Absent);
        assert!(!er7.contains("SMITH") && !er7.contains("123"));
    }
}

#[test]
fn parse_error_details() {
    let cases = [
        ("", 100, None),
        ("PID|1", 100, None),
        ("FHS|^~\\&", 200, Some("FHS^1")),
        ("MSH|^~\\&\rPID|1\rMSH|^~\\&", 100, Some("MSH^2")),
        ("MSH|", 102, Some("MSH^1")),
        ("MSH|^~|", 102, Some("MSH^1^2")),
        ("MSH|^~\\&\rpid|1", 100, None),
    ];
    for (raw, code, location) in cases {
        let err = Message::parse(raw).unwrap_err();
        let er7 = Ack::new(AckOutcome::Reject)
            .error(err.error_detail())
            .build_unparsed(raw, TS, "X")
            .unwrap();
        let ack = Message::parse(&er7).unwrap();
        let err_seg = ack.segment("ERR").unwrap();
        assert_eq!(
            err_seg.field(3).unwrap().value(),
            text(&code.to_string()),
            "{raw:?}"
        );
        assert_eq!(
            err_seg
                .field(2)
                .map(|f| f.raw().to_owned())
                .filter(|s| !s.is_empty()),
            location.map(str::to_owned),
            "{raw:?}"
        );
        assert_eq!(err_seg.field(4).unwrap().raw(), "E");
        assert!(err_seg.field(8).unwrap().value().is_text());
    }
}

#[test]
fn ack_for_every_sample_parses_back() {
    for name in common::sample_names() {
        let msg = Message::parse(&common::sample(&name)).unwrap();
        let er7 = Ack::new(AckOutcome::Accept)
            .build(&msg, TS, "ACK-X")
            .unwrap();
        let ack = Message::parse(&er7).unwrap();
        assert_eq!(ack.get("MSA-2").unwrap(), msg.control_id(), "{name}");
        assert_eq!(ack.trigger_event(), msg.trigger_event(), "{name}");
        assert_eq!(ack.delimiters(), msg.delimiters(), "{name}");
    }
}

#[test]
fn unparseable_msh_with_a_usable_field_separator_is_read_loosely() {
    // MSH-2 is broken (duplicate characters), but the field separator still splits the fields.
    let raw = "MSH|^^^^|EHR^X|HOSP|GW|PM|20260101||ADT^A01|IN-5|P|2.5|||ER\rPID|1";
    let err = Message::parse(raw).unwrap_err();
    assert_eq!(err.code, pm_hl7::ParseErrorCode::InvalidDelimiters);
    let er7 = Ack::new(AckOutcome::Reject)
        .error(err.error_detail())
        .build_unparsed(raw, TS, "R-3")
        .unwrap();
    let ack = Message::parse(&er7).unwrap();
    assert_eq!(ack.delimiters(), pm_hl7::Delimiters::default());
    assert_eq!(ack.get("MSA-2").unwrap(), text("IN-5"));
    assert_eq!(ack.get("MSA-1").unwrap(), text("CR")); // MSH-15 = ER: enhanced mode
    assert_eq!(ack.get("MSH-3").unwrap(), text("GW"));
    assert_eq!(ack.get("MSH-5").unwrap(), text("EHR^X")); // copied as text, escaped
    assert_eq!(ack.get("MSH-12").unwrap(), text("2.5"));
    assert_eq!(ack.get("MSH-9").unwrap(), text("ACK"));
    assert_eq!(ack.get("ERR-2").unwrap(), text("MSH"));
    assert_eq!(ack.get("ERR-2.3").unwrap(), text("2"));
    assert_eq!(ack.get("ERR-3").unwrap(), text("102"));
}

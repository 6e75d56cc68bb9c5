//! Hand-made sample messages (tests/data, written for these tests in the shape real EHR feeds
//! send; no real patient data) parsed end to end.
#![allow(clippy::unwrap_used)]

mod common;

use common::{sample, sample_names};
use pm_hl7::{Message, Value};

fn get(msg: &Message, path: &str) -> String {
    match msg.get(path).unwrap() {
        Value::Text(t) => t.into_owned(),
        other => panic!("{path}: {other:?}"),
    }
}

#[test]
fn every_sample_parses_and_round_trips() {
    let names = sample_names();
    assert!(names.len() >= 11, "{names:?}");
    for name in names {
        let msg = Message::parse(&sample(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(msg.all_segments()[0].id(), "MSH");
        let again = Message::parse(&msg.to_er7()).unwrap();
        assert_eq!(again, msg, "{name}");
    }
}

#[test]
fn adt_a01_admit() {
    let msg = Message::parse(&sample("adt_a01.hl7")).unwrap();
    assert_eq!(get(&msg, "MSH-9"), "ADT");
    assert_eq!(get(&msg, "MSH-9.2"), "A01");
    assert_eq!(get(&msg, "MSH-9.3"), "ADT_A01");
    assert_eq!(get(&msg, "MSH-15"), "AL");
    assert_eq!(get(&msg, "MSH-18"), "UNICODE UTF-8");
    // Several identifiers with assigning authorities (HD with subcomponents).
    let pid3 = msg.segment("PID").unwrap().field(3).unwrap();
    let ids: Vec<(String, String)> = pid3
        .repetitions()
        .map(|r| {
            let id = r.component(1).unwrap().value().as_str().unwrap().to_owned();
            let kind = r.component(5).unwrap().value().as_str().unwrap().to_owned();
            (id, kind)
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("000123456".into(), "MR".into()),
            ("987-65-4329".into(), "SS".into()),
            ("A1B2C3D4".into(), "MB".into())
        ]
    );
    assert_eq!(get(&msg, "PID-3[1].4"), "NORTHHOSP");
    assert_eq!(get(&msg, "PID-3[1].4.2"), "2.16.840.1.113883.3.1234");
    assert_eq!(get(&msg, "PID-3[1].4.3"), "ISO");
    assert_eq!(get(&msg, "PID-3[2].4.2"), "2.16.840.1.113883.4.1");
    assert_eq!(msg.get("PID-3[3].4.2").unwrap(), Value::Absent);
    assert_eq!(get(&msg, "PID-5"), "DOE");
    assert_eq!(get(&msg, "PID-5.4"), "JR");
    assert_eq!(get(&msg, "PID-5[2].2"), "JACK");
    assert_eq!(get(&msg, "PID-7"), "19800214");
    assert_eq!(get(&msg, "PID-11.3"), "SPRINGFIELD");
    assert_eq!(get(&msg, "PID-13[2].4"), "john.doe@example.com");
    assert_eq!(get(&msg, "PID-19"), "987-65-4329");
    assert_eq!(get(&msg, "PV1-2"), "I");
    assert_eq!(get(&msg, "PV1-3.2"), "401");
    assert_eq!(get(&msg, "PV1-7.1"), "1234567893");
    assert_eq!(get(&msg, "PV1-19"), "V0001234");
    assert_eq!(get(&msg, "PV1-44"), "20260105082500-0500");
    assert_eq!(get(&msg, "IN1-3"), "BCBSIL");
    assert_eq!(msg.segments("NK1").count(), 1);
}

#[test]
fn adt_a04_with_lf_endings() {
    let raw = sample("adt_a04_lf.hl7");
    assert!(raw.contains('\n') && !raw.contains('\r'));
    let msg = Message::parse(&raw).unwrap();
    assert_eq!(msg.all_segments().len(), 4);
    assert_eq!(get(&msg, "MSH-9.2"), "A04");
    assert_eq!(get(&msg, "PID-3[2].1"), "555-12-3456");
    assert_eq!(get(&msg, "PV1-19"), "V-77812");
    // Missing optional segments are simply absent.
    assert_eq!(msg.get("NK1-1").unwrap(), Value::Absent);
    assert_eq!(msg.get("PV2-3").unwrap(), Value::Absent);
    // CRLF works the same.
    let crlf = Message::parse(&raw.replace('\n', "\r\n")).unwrap();
    assert_eq!(crlf, msg);
}

#[test]
fn adt_a08_escapes_and_nulls() {
    let msg = Message::parse(&sample("adt_a08_escapes.hl7")).unwrap();
    assert_eq!(get(&msg, "PID-5"), "MÜLLER&SÖHNE");
    assert_eq!(get(&msg, "PID-5.2"), "JOSÉ");
    assert_eq!(get(&msg, "PID-5[2]"), "O^NEIL");
    assert_eq!(get(&msg, "PID-11"), "12 RUE DE L\\ÉCOLE");
    assert_eq!(get(&msg, "PID-11.2"), "APT |3");
    // PID-13 = "" : delete the phone number. PID-30 too.
    assert_eq!(msg.get("PID-13").unwrap(), Value::Null);
    assert_eq!(msg.get("PID-30").unwrap(), Value::Null);
    assert_eq!(msg.get("PID-14").unwrap(), Value::Empty);
    assert_eq!(
        get(&msg, "NTE-3"),
        "First line\nSecond line with emphasis and hex é and latin1 é and \\Zlocal\\ kept"
    );
    assert_eq!(
        get(&msg, "NTE[2]-3"),
        "Tilde ~ caret ^ amp & bar | backslash \\ — 日本語|한국어"
    );
}

#[test]
fn adt_a03_discharge() {
    let msg = Message::parse(&sample("adt_a03.hl7")).unwrap();
    assert_eq!(get(&msg, "MSH-9.3"), "ADT_A03");
    assert_eq!(get(&msg, "PV1-36"), "01");
    assert_eq!(get(&msg, "PV1-45"), "20260109154500-0500");
    assert_eq!(get(&msg, "DG1-3.2"), "Unstable angina");
}

#[test]
fn adt_a40_merge() {
    let msg = Message::parse(&sample("adt_a40.hl7")).unwrap();
    assert_eq!(get(&msg, "MSH-9.2"), "A40");
    assert_eq!(get(&msg, "MSH-9.3"), "ADT_A39");
    assert_eq!(get(&msg, "PID-3.1"), "000123456");
    assert_eq!(get(&msg, "MRG-1[1].1"), "000999888");
    assert_eq!(get(&msg, "MRG-1[2].1"), "000999777");
    assert_eq!(get(&msg, "MRG-1[2].4"), "NORTHHOSP");
    assert_eq!(get(&msg, "MRG-3.1"), "ACCT-555");
    assert_eq!(get(&msg, "MRG-7.2"), "JON");
}

#[test]
fn siu_family() {
    let cases = [
        ("siu_s12.hl7", "S12", "NEW", "Booked", "20260115093000", "A"),
        (
            "siu_s13.hl7",
            "S13",
            "RESCHED",
            "Booked",
            "20260116140000",
            "A",
        ),
        (
            "siu_s14.hl7",
            "S14",
            "MODIFY",
            "Booked",
            "20260115093000",
            "A",
        ),
        (
            "siu_s15.hl7",
            "S15",
            "PATCANCEL",
            "Cancelled",
            "20260115093000",
            "D",
        ),
        (
            "siu_s26.hl7",
            "S26",
            "NOSHOW",
            "Noshow",
            "20260115093000",
            "A",
        ),
    ];
    for (file, trigger, reason, status, start, segment_action) in cases {
        let msg = Message::parse(&sample(file)).unwrap();
        assert_eq!(get(&msg, "MSH-9"), "SIU", "{file}");
        assert_eq!(get(&msg, "MSH-9.2"), trigger, "{file}");
        assert_eq!(get(&msg, "MSH-9.3"), "SIU_S12", "{file}");
        assert_eq!(get(&msg, "SCH-1"), "APT-1001", "{file}");
        assert_eq!(get(&msg, "SCH-2.2"), "PM", "{file}");
        assert_eq!(get(&msg, "SCH-6"), reason, "{file}");
        assert_eq!(get(&msg, "SCH-11.4"), start, "{file}");
        assert_eq!(get(&msg, "SCH-16.2"), "CARE", "{file}");
        assert_eq!(get(&msg, "SCH-25"), status, "{file}");
        assert_eq!(get(&msg, "PID-3[2].5"), "SS", "{file}");
        assert_eq!(get(&msg, "RGS-2"), segment_action, "{file}");
        assert_eq!(get(&msg, "AIS-3.1"), "99213", "{file}");
        assert_eq!(get(&msg, "AIS-3.2"), "Office visit, established", "{file}");
        assert_eq!(get(&msg, "AIS-2"), segment_action, "{file}");
        assert_eq!(get(&msg, "AIL-3.2"), "EXAM3", "{file}");
        assert_eq!(get(&msg, "AIP-3.1"), "1234567893", "{file}");
        assert_eq!(get(&msg, "AIP-4"), "ATND", "{file}");
        assert_eq!(get(&msg, "AIP-6"), start, "{file}");
    }
    let s14 = Message::parse(&sample("siu_s14.hl7")).unwrap();
    assert_eq!(get(&s14, "SCH-9"), "45");
}

#[test]
fn custom_delimiters_sample() {
    let msg = Message::parse(&sample("adt_a08_custom_delims.hl7")).unwrap();
    let d = msg.delimiters();
    assert_eq!(
        (
            d.field(),
            d.component(),
            d.repetition(),
            d.escape(),
            d.subcomponent()
        ),
        ('$', '%', '~', '\\', '&')
    );
    assert_eq!(get(&msg, "MSH-1"), "$");
    assert_eq!(get(&msg, "MSH-9.2"), "A08");
    assert_eq!(get(&msg, "MSH-10"), "A08-CUST-42");
    assert_eq!(get(&msg, "PID-3[2].4"), "EASTLAB");
    assert_eq!(get(&msg, "PID-5"), "O'NEIL");
    assert_eq!(get(&msg, "PID-5.2"), "MARY ANN");
    assert_eq!(get(&msg, "PID-11"), "45 OAK AVE|UNIT 2");
    assert_eq!(get(&msg, "PV1-3"), "EAST^1");
    assert_eq!(get(&msg, "NTE-3"), "Cost $5 for parking% ask front desk");
}

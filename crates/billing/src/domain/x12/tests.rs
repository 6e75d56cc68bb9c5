#![allow(clippy::unwrap_used)]
//! Tests of the 837P writer: a sample batch, the envelope and loop structure, the refusals, a
//! few properties, and pyx12's validator on written files (when `PM_X12VALID` is set).

use chrono::{NaiveDate, NaiveDateTime};
use proptest::prelude::*;

use super::*;
use crate::domain::money::Cents;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn created() -> NaiveDateTime {
    date(2026, 12, 5).and_hms_opt(15, 33, 0).unwrap()
}

fn address(line1: &str, zip: &str) -> Address {
    Address {
        line1: line1.into(),
        line2: None,
        city: "Springfield".into(),
        state: "IL".into(),
        zip: zip.into(),
    }
}

fn subscriber(member_id: &str, last: &str) -> Subscriber {
    Subscriber {
        member_id: member_id.into(),
        last_name: last.into(),
        first_name: "Jane".into(),
        birth_date: date(1980, 2, 29),
        sex: Sex::Female,
        address: address("1 Elm St", "62701"),
        group_number: Some("GRP100".into()),
        claim_filing_indicator: "CI".into(),
    }
}

fn payer() -> Payer {
    Payer {
        name: "Acme Health Plan".into(),
        payer_id: "60054".into(),
        address: None,
    }
}

fn line(code: &str, charge: i64, pointers: &[u8]) -> ServiceLine {
    ServiceLine {
        code: code.into(),
        modifiers: Vec::new(),
        charge: Cents::new(charge),
        units: 1,
        diagnosis_pointers: pointers.to_vec(),
        service_date: date(2026, 12, 1),
        prior: None,
    }
}

fn claim(id: &str, subscriber: Subscriber, lines: Vec<ServiceLine>) -> Claim {
    Claim {
        claim_id: id.into(),
        total: lines.iter().map(|l| l.charge).sum(),
        place_of_service: "11".into(),
        frequency: Frequency::Original,
        diagnoses: vec!["F329".into(), "F411".into(), "Z63.0".replace('.', "")],
        subscriber,
        payer: payer(),
        rendering_provider: None,
        lines,
        other_payer: None,
    }
}

/// Three claims: two for one subscriber (one of them a replacement with a rendering provider
/// and split pointers), one for another.
fn batch() -> Batch {
    let mut corrected = claim(
        "PM-2",
        subscriber("MEM001", "Doe"),
        vec![
            line("90837", 15_000, &[1, 2]),
            ServiceLine {
                modifiers: vec!["95".into(), "GT".into()],
                units: 2,
                ..line("90785", 2_550, &[2, 3, 1])
            },
        ],
    );
    corrected.frequency = Frequency::Corrected {
        payer_claim_number: "PAYERCLM9".into(),
    };
    corrected.rendering_provider = Some(RenderingProvider {
        npi: "1234567893".into(),
        last_name: "Smith".into(),
        first_name: "Ann".into(),
    });
    Batch {
        envelope: Envelope {
            sender_id: "SUBMITTER1".into(),
            receiver_id: "CLEARHOUSE".into(),
            gs_sender: "SUBMITTER1".into(),
            gs_receiver: "CLEARHOUSE".into(),
            usage: Usage::Test,
            interchange_control: 42,
            group_control: 7,
            created: created(),
        },
        submitter: Submitter {
            name: "Acme Therapy Group".into(),
            id: "SUB123".into(),
            contact_name: "Billing Office".into(),
            phone: "5555551234".into(),
        },
        receiver: Receiver {
            name: "Clear House".into(),
            id: "RCV456".into(),
        },
        billing_provider: BillingProvider {
            organization_name: "Acme Therapy Group".into(),
            npi: "1245319599".into(),
            ein: "123456789".into(),
            taxonomy: "103T00000X".into(),
            address: address("100 Main St", "627011234"),
            pay_to: Some(Address {
                line2: Some("Suite 4".into()),
                ..address("PO Box 9", "627019999")
            }),
        },
        claims: vec![
            claim(
                "PM-1",
                subscriber("MEM001", "Doe"),
                vec![line("90834", 12_000, &[1])],
            ),
            claim(
                "PM-3",
                subscriber("MEM777", "Roe"),
                vec![line("90791", 20_005, &[1])],
            ),
            corrected,
        ],
    }
}

/// Segments as element lists, whatever the terminator layout.
fn segments(text: &str) -> Vec<Vec<String>> {
    text.split('~')
        .map(str::trim_start)
        .filter(|s| !s.is_empty())
        .map(|s| s.split('*').map(String::from).collect())
        .collect()
}

fn ids(segs: &[Vec<String>], id: &str) -> Vec<Vec<String>> {
    segs.iter().filter(|s| s[0] == id).cloned().collect()
}

fn written(batch: &Batch) -> Vec<Vec<String>> {
    segments(&write_837p(batch).unwrap())
}

fn reason(batch: &Batch) -> (&'static str, String) {
    let error = write_837p(batch).unwrap_err();
    (error.reason(), error.field().to_string())
}

#[test]
fn writes_the_expected_text() {
    let mut small = batch();
    small.claims.truncate(1);
    small.billing_provider.pay_to = None;
    let expected = "\
ISA*00*          *00*          *ZZ*SUBMITTER1     *ZZ*CLEARHOUSE     *261205*1533*^*00501*000000042*0*T*:~
GS*HC*SUBMITTER1*CLEARHOUSE*20261205*1533*7*X*005010X222A1~
ST*837*0001*005010X222A1~
BHT*0019*00*0000000420001*20261205*1533*CH~
NM1*41*2*ACME THERAPY GROUP*****46*SUB123~
PER*IC*BILLING OFFICE*TE*5555551234~
NM1*40*2*CLEAR HOUSE*****46*RCV456~
HL*1**20*1~
PRV*BI*PXC*103T00000X~
NM1*85*2*ACME THERAPY GROUP*****XX*1245319599~
N3*100 MAIN ST~
N4*SPRINGFIELD*IL*627011234~
REF*EI*123456789~
HL*2*1*22*0~
SBR*P*18*GRP100******CI~
NM1*IL*1*DOE*JANE****MI*MEM001~
N3*1 ELM ST~
N4*SPRINGFIELD*IL*62701~
DMG*D8*19800229*F~
NM1*PR*2*ACME HEALTH PLAN*****PI*60054~
CLM*PM-1*120***11:B:1*Y*A*Y*Y~
HI*ABK:F329*ABF:F411*ABF:Z630~
LX*1~
SV1*HC:90834*120*UN*1***1~
DTP*472*D8*20261201~
SE*24*0001~
GE*1*7~
IEA*1*000000042~
";
    assert_eq!(write_837p(&small).unwrap(), expected);
}

#[test]
fn isa_is_fixed_width() {
    let text = write_837p(&batch()).unwrap();
    let isa = text.lines().next().unwrap();
    // 106 characters including the terminator, whatever the ids' lengths.
    assert_eq!(isa.len(), 106);
    let mut b = batch();
    b.envelope.sender_id = "A".into();
    b.envelope.receiver_id = "123456789012345".into();
    assert_eq!(write_837p(&b).unwrap().lines().next().unwrap().len(), 106);
    b.envelope.usage = Usage::Production;
    assert_eq!(written(&b)[0][15], "P");
}

#[test]
fn envelope_counts_and_control_numbers_match() {
    for (per_set, sets) in [(5000, 1), (3, 1), (2, 2), (1, 3)] {
        let options = WriteOptions {
            claims_per_transaction: per_set,
            ..WriteOptions::default()
        };
        let segs = segments(&write_837p_with(&batch(), &options).unwrap());
        let (sts, ses) = (ids(&segs, "ST"), ids(&segs, "SE"));
        assert_eq!(sts.len(), sets, "per_set {per_set}");
        assert_eq!(ses.len(), sets);
        for (n, (st, se)) in sts.iter().zip(&ses).enumerate() {
            assert_eq!(st[2], format!("{:04}", n + 1));
            assert_eq!(se[2], st[2], "SE02 matches ST02");
        }
        let (gs, ge) = (&ids(&segs, "GS")[0], &ids(&segs, "GE")[0]);
        assert_eq!(ge[1], sets.to_string(), "GE01 counts transaction sets");
        assert_eq!(ge[2], gs[6], "GE02 matches GS06");
        let (isa, iea) = (&segs[0], segs.last().unwrap());
        assert_eq!(iea[0], "IEA");
        assert_eq!(iea[1], "1", "IEA01 counts groups");
        assert_eq!(iea[2], isa[13], "IEA02 matches ISA13");
        assert_eq!(ids(&segs, "CLM").len(), 3, "every claim written once");
    }
}

/// SE01 must equal the number of segments from ST to SE inclusive, in each transaction set.
fn check_se_counts(segs: &[Vec<String>]) {
    let mut start = None;
    for (i, seg) in segs.iter().enumerate() {
        match seg[0].as_str() {
            "ST" => start = Some(i),
            "SE" => {
                let count = i - start.take().unwrap() + 1;
                assert_eq!(seg[1], count.to_string());
            }
            _ => {}
        }
    }
    assert_eq!(start, None, "every ST closed");
}

#[test]
fn se_counts_its_transaction_set() {
    check_se_counts(&written(&batch()));
    let options = WriteOptions {
        claims_per_transaction: 1,
        line_break: false,
    };
    check_se_counts(&segments(&write_837p_with(&batch(), &options).unwrap()));
    // 3 claims, 4 lines, 1 REF*F8, 1 NM1*82, 2 subscriber groups, pay-to:
    // header 5 + 2000A 9 + groups 2*7 + CLM/HI 3*2 + REF + NM1*82 + lines 4*3 + SE = 49.
    assert_eq!(ids(&written(&batch()), "SE")[0][1], "49");
}

#[test]
fn hl_hierarchy_groups_claims_by_subscriber() {
    let segs = written(&batch());
    let hls: Vec<String> = ids(&segs, "HL").iter().map(|s| s.join("*")).collect();
    assert_eq!(hls, ["HL*1**20*1", "HL*2*1*22*0", "HL*3*1*22*0"]);
    // Claims follow their subscriber's HL: PM-1 and PM-2 under DOE, PM-3 under ROE.
    let order: Vec<String> = segs
        .iter()
        .filter(|s| s[0] == "CLM" || (s[0] == "NM1" && s[1] == "IL"))
        .map(|s| s[if s[0] == "CLM" { 1 } else { 3 }].clone())
        .collect();
    assert_eq!(order, ["DOE", "PM-1", "PM-2", "ROE", "PM-3"]);
    // HL numbering restarts in each transaction set.
    let options = WriteOptions {
        claims_per_transaction: 1,
        ..WriteOptions::default()
    };
    let segs = segments(&write_837p_with(&batch(), &options).unwrap());
    let hl_ids: Vec<&str> = segs
        .iter()
        .filter(|s| s[0] == "HL")
        .map(|s| s[1].as_str())
        .collect();
    assert_eq!(hl_ids, ["1", "2", "1", "2", "1", "2"]);
}

#[test]
fn corrected_claim_with_split_pointers_and_rendering_provider() {
    let text = write_837p(&batch()).unwrap();
    let from = text.find("CLM*PM-2").unwrap();
    let expected = "\
CLM*PM-2*175.5***11:B:7*Y*A*Y*Y~
REF*F8*PAYERCLM9~
HI*ABK:F329*ABF:F411*ABF:Z630~
NM1*82*1*SMITH*ANN****XX*1234567893~
LX*1~
SV1*HC:90837*150*UN*1***1:2~
DTP*472*D8*20261201~
LX*2~
SV1*HC:90785:95:GT*25.5*UN*2***2:3:1~
DTP*472*D8*20261201~
";
    let to = from + text[from..].find("HL*3").unwrap();
    assert_eq!(&text[from..to], expected);
}

#[test]
fn void_claim_and_pay_to_and_payer_address() {
    let mut b = batch();
    b.claims[0].frequency = Frequency::Void {
        payer_claim_number: "X1".into(),
    };
    b.claims[0].payer.address = Some(address("9 Payer Way", "606011234"));
    b.claims[0].subscriber.group_number = None;
    let text = write_837p(&b).unwrap();
    assert!(text.contains("CLM*PM-1*120***11:B:8*Y*A*Y*Y~\nREF*F8*X1~\n"));
    assert!(text.contains("NM1*PR*2*ACME HEALTH PLAN*****PI*60054~\nN3*9 PAYER WAY~\n"));
    assert!(text.contains("SBR*P*18*******CI~\n"));
    assert!(text.contains("REF*EI*123456789~\nNM1*87*2~\nN3*PO BOX 9*SUITE 4~\n"));
}

#[test]
fn without_line_breaks_the_content_is_the_same() {
    let options = WriteOptions {
        line_break: false,
        ..WriteOptions::default()
    };
    let flat = write_837p_with(&batch(), &options).unwrap();
    assert!(!flat.contains('\n'));
    assert_eq!(flat, write_837p(&batch()).unwrap().replace('\n', ""));
}

#[test]
fn refuses_what_would_break_or_contradict_the_file() {
    type Edit = fn(&mut Batch);
    let cases: Vec<(Edit, &str, &str)> = vec![
        (
            |b| b.claims[1].total = Cents::new(1),
            CLAIM_TOTAL_MISMATCH,
            "claims[1].total",
        ),
        (
            |b| b.claims[2].lines[1].charge = Cents::new(-5),
            AMOUNT_OUT_OF_RANGE,
            "claims[2].lines[1].charge",
        ),
        (
            |b| b.claims[1].subscriber.last_name = "O*Hara".into(),
            SEPARATOR_IN_DATA,
            "claims[1].subscriber.last_name",
        ),
        (
            |b| b.claims[2].subscriber.first_name = "A~B".into(),
            // Different subscriber data: PM-2 now has its own group, headed by claims[2].
            SEPARATOR_IN_DATA,
            "claims[2].subscriber.first_name",
        ),
        (
            |b| b.billing_provider.organization_name = "A:B".into(),
            SEPARATOR_IN_DATA,
            "billing_provider.organization_name",
        ),
        (
            |b| b.billing_provider.address.line1 = "1^2".into(),
            SEPARATOR_IN_DATA,
            "billing_provider.address.line1",
        ),
        (
            |b| b.submitter.contact_name = "Ann\nLee".into(),
            CHARACTER_INVALID,
            "submitter.contact_name",
        ),
        (|b| b.receiver.id = " ".into(), ELEMENT_EMPTY, "receiver.id"),
        (
            |b| b.claims[0].claim_id = "X".repeat(39),
            ELEMENT_TOO_LONG,
            "claims[0].claim_id",
        ),
        (
            |b| b.envelope.sender_id = "X".repeat(16),
            ELEMENT_TOO_LONG,
            "envelope.sender_id",
        ),
        (|b| b.claims.clear(), BATCH_EMPTY, "claims"),
        (
            |b| b.envelope.interchange_control = 0,
            CONTROL_NUMBER_OUT_OF_RANGE,
            "envelope.interchange_control",
        ),
        (
            |b| b.envelope.group_control = 1_000_000_000,
            CONTROL_NUMBER_OUT_OF_RANGE,
            "envelope.group_control",
        ),
        (
            |b| b.claims[0].lines.clear(),
            CLAIM_LINE_COUNT,
            "claims[0].lines",
        ),
        (
            |b| {
                let one = b.claims[0].lines[0].clone();
                b.claims[0].lines = vec![one; 51];
                b.claims[0].total = Cents::new(12_000 * 51);
            },
            CLAIM_LINE_COUNT,
            "claims[0].lines",
        ),
        (
            |b| b.claims[0].diagnoses.clear(),
            CLAIM_DIAGNOSIS_COUNT,
            "claims[0].diagnoses",
        ),
        (
            |b| b.claims[0].diagnoses = vec!["F329".into(); 13],
            CLAIM_DIAGNOSIS_COUNT,
            "claims[0].diagnoses",
        ),
        (
            |b| b.claims[0].lines[0].diagnosis_pointers = vec![1, 4],
            DIAGNOSIS_POINTER_INVALID,
            "claims[0].lines[0].diagnosis_pointers[1]",
        ),
        (
            |b| b.claims[2].lines[1].diagnosis_pointers = vec![2, 3, 2],
            DIAGNOSIS_POINTER_INVALID,
            "claims[2].lines[1].diagnosis_pointers[2]",
        ),
        (
            |b| b.claims[0].lines[0].diagnosis_pointers = vec![0],
            DIAGNOSIS_POINTER_INVALID,
            "claims[0].lines[0].diagnosis_pointers[0]",
        ),
        (
            |b| b.claims[0].lines[0].diagnosis_pointers = vec![],
            DIAGNOSIS_POINTER_COUNT,
            "claims[0].lines[0].diagnosis_pointers",
        ),
        (
            |b| b.claims[0].lines[0].diagnosis_pointers = vec![1, 2, 3, 1, 2],
            DIAGNOSIS_POINTER_COUNT,
            "claims[0].lines[0].diagnosis_pointers",
        ),
        (
            |b| b.claims[0].lines[0].modifiers = vec!["25".into(); 5],
            SERVICE_MODIFIER_COUNT,
            "claims[0].lines[0].modifiers",
        ),
        (
            |b| b.claims[0].lines[0].modifiers = vec!["259".into()],
            ELEMENT_TOO_LONG,
            "claims[0].lines[0].modifiers[0]",
        ),
        (
            |b| b.claims[0].lines[0].units = 0,
            SERVICE_UNITS_ZERO,
            "claims[0].lines[0].units",
        ),
        (
            |b| b.claims[0].subscriber.birth_date = date(99_999, 1, 1),
            DATE_OUT_OF_RANGE,
            "claims[0].subscriber.birth_date",
        ),
        (
            |b| {
                b.claims[2].frequency = Frequency::Void {
                    payer_claim_number: String::new(),
                }
            },
            ELEMENT_EMPTY,
            "claims[2].frequency.payer_claim_number",
        ),
        (
            |b| b.claims[2].rendering_provider.as_mut().unwrap().npi = "1*2".into(),
            SEPARATOR_IN_DATA,
            "claims[2].rendering_provider.npi",
        ),
        (
            |b| b.claims[0].diagnoses[1] = "F41:1".into(),
            SEPARATOR_IN_DATA,
            "claims[0].diagnoses[1]",
        ),
        (
            |b| b.billing_provider.pay_to.as_mut().unwrap().zip = String::new(),
            ELEMENT_EMPTY,
            "billing_provider.pay_to.zip",
        ),
    ];
    for (edit, expected_reason, expected_field) in cases {
        let mut b = batch();
        edit(&mut b);
        assert_eq!(reason(&b), (expected_reason, expected_field.to_string()));
    }
}

#[test]
fn messages_never_echo_the_data() {
    let mut b = batch();
    b.claims[0].subscriber.last_name = "Secretname*".into();
    let error = write_837p(&b).unwrap_err();
    assert!(!error.to_string().contains("Secretname"), "{error}");
    assert!(error.to_string().contains("X12_SEPARATOR_IN_DATA"));
}

#[test]
fn control_number_range() {
    for (n, ok) in [
        (0, false),
        (1, true),
        (999_999_999, true),
        (1_000_000_000, false),
        (u32::MAX, false),
    ] {
        assert_eq!(control_number_ok(n), ok, "{n}");
    }
}

proptest! {
    /// Any printable text as a name: written (upper-cased, trimmed) when it has no separator
    /// and fits, refused with the right reason otherwise; never a panic, never a broken file.
    #[test]
    fn any_name_is_written_or_refused(name in "[ -~]{0,70}") {
        let mut b = batch();
        b.claims[1].subscriber.last_name = name.clone();
        let trimmed = name.trim();
        match write_837p(&b) {
            Ok(text) => {
                prop_assert!(!trimmed.is_empty() && trimmed.len() <= 60);
                let nm1 = format!("NM1*IL*1*{}*JANE****MI*MEM777~", trimmed.to_ascii_uppercase());
                prop_assert!(text.contains(&nm1));
                check_se_counts(&segments(&text));
            }
            Err(error) => {
                let expected = if trimmed.contains(['~', '*', ':', '^']) {
                    SEPARATOR_IN_DATA
                } else if trimmed.is_empty() {
                    ELEMENT_EMPTY
                } else {
                    ELEMENT_TOO_LONG
                };
                prop_assert_eq!(error.reason(), expected);
                prop_assert_eq!(error.field(), "claims[1].subscriber.last_name");
            }
        }
    }

    /// Whatever the charges, a claim whose total is their sum is written with CLM02 equal to
    /// the SV102 sum; off by any cent, it is refused.
    #[test]
    fn total_must_be_the_sum_of_lines(
        charges in proptest::collection::vec(0i64..10_000_000, 1..6),
        off in prop_oneof![Just(0i64), -500i64..=-1, 1i64..500],
    ) {
        let mut b = batch();
        b.claims[0].lines = charges.iter().map(|&c| line("90834", c, &[1])).collect();
        let sum: i64 = charges.iter().sum();
        b.claims[0].total = Cents::new(sum + off);
        let result = write_837p(&b);
        if off == 0 {
            let segs = segments(&result.unwrap());
            let clm = ids(&segs, "CLM");
            prop_assert_eq!(&clm[0][2], &Cents::new(sum).to_x12());
            let lines: Vec<Cents> = ids(&segs, "SV1")
                .iter()
                .take(charges.len())
                .map(|s| Cents::parse_decimal(&s[2]).unwrap())
                .collect();
            prop_assert_eq!(lines.into_iter().sum::<Cents>(), Cents::new(sum));
        } else {
            let error = result.unwrap_err();
            prop_assert!(
                error.reason() == CLAIM_TOTAL_MISMATCH
                    || (sum + off < 0 && error.reason() == AMOUNT_OUT_OF_RANGE)
            );
        }
    }

    /// However many claims and however they are cut, the envelope adds up.
    #[test]
    fn envelope_adds_up_for_any_cut(claims in 1usize..12, per_set in 1usize..6, line_break: bool) {
        let mut b = batch();
        let template = b.claims[0].clone();
        b.claims = (0..claims)
            .map(|i| Claim {
                claim_id: format!("C{i}"),
                subscriber: subscriber(&format!("M{}", i % 3), "Doe"),
                ..template.clone()
            })
            .collect();
        let options = WriteOptions { line_break, claims_per_transaction: per_set };
        let segs = segments(&write_837p_with(&b, &options).unwrap());
        check_se_counts(&segs);
        let sets = claims.div_ceil(per_set);
        prop_assert_eq!(&ids(&segs, "GE")[0][1], &sets.to_string());
        prop_assert_eq!(ids(&segs, "CLM").len(), claims);
        prop_assert_eq!(ids(&segs, "ST").len(), sets);
    }
}

/// Writes sample batches to files and runs pyx12's `x12valid` on each (the program named by
/// `PM_X12VALID`), requiring `<file>: OK` and no ERROR line. x12valid's exit code is 1 even on
/// success, so only its report (on stderr) is read.
#[test]
fn pyx12_accepts_the_files() {
    for (name, text) in pyx12_samples() {
        crate::domain::pyx12::assert_accepted(&format!("{name}.x12"), &text);
    }
}

/// The batches pyx12 checks: the sample in every layout, a single claim, voids, many claims.
fn pyx12_samples() -> Vec<(&'static str, String)> {
    let flat = WriteOptions {
        line_break: false,
        ..WriteOptions::default()
    };
    let split = WriteOptions {
        claims_per_transaction: 2,
        ..WriteOptions::default()
    };
    let mut single = batch();
    single.claims.truncate(1);
    single.billing_provider.pay_to = None;
    let mut varied = batch();
    varied.envelope.usage = Usage::Production;
    varied.claims[0].frequency = Frequency::Void {
        payer_claim_number: "ORIG1".into(),
    };
    varied.claims[0].payer.address = Some(address("9 Payer Way", "606011234"));
    varied.claims[1].subscriber.group_number = None;
    varied.claims[1].subscriber.sex = Sex::Unknown;
    varied.claims[1].subscriber.claim_filing_indicator = "MB".into();
    varied.claims[1].place_of_service = "02".into();
    varied.claims[1].diagnoses = (0..12).map(|i| format!("F4{i}")).collect();
    varied.claims[1].lines = (1..=12u8)
        .map(|i| line("99213", 100 * i64::from(i), &[i, 13 - i]))
        .collect();
    varied.claims[1].total = varied.claims[1].lines.iter().map(|l| l.charge).sum();
    vec![
        ("secondary", write_837p(&secondary_batch()).unwrap()),
        ("sample", write_837p(&batch()).unwrap()),
        ("flat", write_837p_with(&batch(), &flat).unwrap()),
        ("split", write_837p_with(&batch(), &split).unwrap()),
        ("single", write_837p(&single).unwrap()),
        ("varied", write_837p(&varied).unwrap()),
    ]
}

fn adjustment(group: &str, reason: &str, cents: i64) -> Adjustment {
    Adjustment {
        group: group.into(),
        reason: reason.into(),
        amount: Cents::new(cents),
    }
}

/// The sample batch plus a secondary claim (PM-4, to the same subscriber and payer as PM-1):
/// Medicare paid 80 of 120 on line 1 (CO-45 10, PR-1 30) and 0 of 20 on line 2 (PR-2 20), with
/// a claim-level OA-23 of 0.
fn secondary_batch() -> Batch {
    let mut b = batch();
    let mut secondary = claim(
        "PM-4",
        subscriber("MEM001", "Doe"),
        vec![
            ServiceLine {
                prior: Some(LineAdjudication {
                    paid: Cents::new(8_000),
                    adjustments: vec![adjustment("CO", "45", 1_000), adjustment("PR", "1", 3_000)],
                    date: date(2026, 12, 3),
                }),
                ..line("90834", 12_000, &[1])
            },
            ServiceLine {
                modifiers: vec!["95".into()],
                prior: Some(LineAdjudication {
                    paid: Cents::ZERO,
                    adjustments: vec![adjustment("PR", "2", 2_000)],
                    date: date(2026, 12, 3),
                }),
                ..line("90785", 2_000, &[2])
            },
        ],
    );
    secondary.other_payer = Some(OtherPayer {
        claim_filing_indicator: "MB".into(),
        group_number: None,
        adjustments: vec![adjustment("OA", "23", 0)],
        paid: Cents::new(8_000),
        member_id: "1EG4TE5MK72".into(),
        payer: Payer {
            name: "Medicare Part B".into(),
            payer_id: "MEDICARE".into(),
            address: None,
        },
    });
    b.claims.push(secondary);
    b
}

#[test]
fn secondary_claim_carries_the_primary_payers_adjudication() {
    let text = write_837p(&secondary_batch()).unwrap();
    // Its own subscriber loop, SBR01 = S; the primary claims keep SBR01 = P.
    let segs = segments(&text);
    let sbr: Vec<String> = ids(&segs, "SBR").iter().map(|s| s[1].clone()).collect();
    assert_eq!(sbr, ["P", "P", "S", "P"], "{text}");
    let from = text.find("CLM*PM-4").unwrap();
    let expected = "\
CLM*PM-4*140***11:B:1*Y*A*Y*Y~
HI*ABK:F329*ABF:F411*ABF:Z630~
SBR*P*18*******MB~
CAS*OA*23*0~
AMT*D*80~
OI***Y***Y~
NM1*IL*1*DOE*JANE****MI*1EG4TE5MK72~
NM1*PR*2*MEDICARE PART B*****PI*MEDICARE~
LX*1~
SV1*HC:90834*120*UN*1***1~
DTP*472*D8*20261201~
SVD*MEDICARE*80*HC:90834**1~
CAS*CO*45*10~
CAS*PR*1*30~
DTP*573*D8*20261203~
LX*2~
SV1*HC:90785:95*20*UN*1***2~
DTP*472*D8*20261201~
SVD*MEDICARE*0*HC:90785:95**1~
CAS*PR*2*20~
DTP*573*D8*20261203~
SE*";
    assert_eq!(&text[from..from + expected.len()], expected);
    // The 2000B of the secondary claim says S.
    let hl = text[..from].rfind("HL*").unwrap();
    assert!(
        text[hl..from].contains("SBR*S*18*GRP100******CI~"),
        "{}",
        &text[hl..from]
    );
}

#[test]
fn many_adjustments_of_one_group_fill_cas_segments_of_six() {
    let mut b = secondary_batch();
    let secondary = b.claims.last_mut().unwrap();
    let other = secondary.other_payer.as_mut().unwrap();
    other.adjustments = (1..=7)
        .map(|i| adjustment("CO", &i.to_string(), 0))
        .collect();
    let text = write_837p(&b).unwrap();
    assert!(
        text.contains("CAS*CO*1*0**2*0**3*0**4*0**5*0**6*0~\nCAS*CO*7*0~\n"),
        "{text}"
    );
    crate::domain::pyx12::assert_accepted("cas-six.x12", &text);
}

#[test]
fn secondary_claims_must_balance() {
    // AMT*D is not the sum of the lines' payments.
    let mut b = secondary_batch();
    b.claims
        .last_mut()
        .unwrap()
        .other_payer
        .as_mut()
        .unwrap()
        .paid = Cents::new(7_000);
    assert_eq!(
        reason(&b),
        (
            OTHER_PAYER_NOT_BALANCED,
            "claims[3].other_payer.paid".into()
        )
    );
    // Paid plus adjustments is not the total.
    let mut b = secondary_batch();
    b.claims.last_mut().unwrap().lines[0]
        .prior
        .as_mut()
        .unwrap()
        .adjustments
        .pop();
    assert_eq!(
        reason(&b),
        (
            OTHER_PAYER_NOT_BALANCED,
            "claims[3].other_payer.adjustments".into()
        )
    );
    // A line without the other payer's adjudication.
    let mut b = secondary_batch();
    b.claims.last_mut().unwrap().lines[1].prior = None;
    assert_eq!(
        reason(&b),
        (
            OTHER_PAYER_NOT_BALANCED,
            "claims[3].other_payer.lines".into()
        )
    );
    // A separator in the member id.
    let mut b = secondary_batch();
    b.claims
        .last_mut()
        .unwrap()
        .other_payer
        .as_mut()
        .unwrap()
        .member_id = "A*B".into();
    assert_eq!(reason(&b).1, "claims[3].other_payer.member_id");
}

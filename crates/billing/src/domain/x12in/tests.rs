#![allow(clippy::unwrap_used)]
//! Tests of the X12 readers: the tokenizer's envelope checks, the 835 on real samples (from the
//! `x12-types` crate, see testdata/README.md) and on a hand-made file, the 999 and the 277CA,
//! properties (never panics, delimiters are read not assumed, the balance rule), and pyx12's
//! validator on the hand-made files (when `PM_X12VALID` is set).

use chrono::NaiveDate;
use proptest::prelude::*;

use super::tokenizer::{self, tokenize};
use super::*;
use crate::domain::money::Cents;

const PAYMENT_835: &str = include_str!("testdata/handmade-payment.835");
const REJECTED_999: &str = include_str!("testdata/handmade-rejected.999");
const CLAIMS_277: &str = include_str!("testdata/handmade-claims.277");

/// The real samples, by the number of their `x12-types` test.
const SAMPLES: [(&str, &str); 13] = [
    ("01", include_str!("testdata/x12-types-01.835")),
    ("02", include_str!("testdata/x12-types-02.835")),
    ("03", include_str!("testdata/x12-types-03.835")),
    ("05", include_str!("testdata/x12-types-05.835")),
    ("06", include_str!("testdata/x12-types-06.835")),
    ("07", include_str!("testdata/x12-types-07.835")),
    ("08", include_str!("testdata/x12-types-08.835")),
    ("10", include_str!("testdata/x12-types-10.835")),
    ("11", include_str!("testdata/x12-types-11.835")),
    ("35", include_str!("testdata/x12-types-35.835")),
    ("36", include_str!("testdata/x12-types-36.835")),
    ("39", include_str!("testdata/x12-types-39.835")),
    ("40", include_str!("testdata/x12-types-40.835")),
];

fn sample(number: &str) -> &'static str {
    SAMPLES.iter().find(|(n, _)| *n == number).unwrap().1
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn cents(c: i64) -> Cents {
    Cents::new(c)
}

fn err<T: std::fmt::Debug>(result: Result<T, Invalid>) -> Invalid {
    result.unwrap_err()
}

/// `text` with the first `old` replaced by `new` (which must be there), SE01 recounted so only
/// the intended rule breaks.
fn edited(text: &str, old: &str, new: &str) -> String {
    assert!(text.contains(old), "{old} not in the file");
    recount(&text.replacen(old, new, 1))
}

/// Rewrites every SE01 to the true count of its transaction (for files edited by tests).
fn recount(text: &str) -> String {
    let mut out = Vec::new();
    let mut since_st = 0;
    for piece in text.split('~') {
        let id = piece.trim_start().split('*').next().unwrap_or("");
        if id == "ST" {
            since_st = 0;
        }
        since_st += 1;
        if id == "SE" {
            let rest: Vec<&str> = piece.trim_start().splitn(3, '*').collect();
            let lead = &piece[..piece.len() - piece.trim_start().len()];
            out.push(format!(
                "{lead}SE*{since_st}*{}",
                rest.get(2).unwrap_or(&"")
            ));
        } else {
            out.push(piece.to_string());
        }
    }
    out.join("~")
}

// ---------------------------------------------------------------- tokenizer

#[test]
fn reads_the_delimiters_from_the_isa() {
    let d = tokenizer::read_delimiters(PAYMENT_835).unwrap();
    assert_eq!(
        (d.element, d.repetition, d.component, d.segment),
        ('*', Some('^'), ':', '~')
    );
    // x12-types sample 10 uses `|` as the component separator.
    let d = tokenizer::read_delimiters(sample("10")).unwrap();
    assert_eq!(d.component, '|');
    // A 4010 file has `U` in ISA11: no repetition separator.
    let d = tokenizer::read_delimiters(sample("01")).unwrap();
    assert_eq!((d.repetition, d.component), (None, '>'));
}

#[test]
fn envelope_structure_is_returned() {
    let interchange = tokenize(PAYMENT_835).unwrap();
    assert_eq!(interchange.control_number, "000000042");
    assert_eq!(interchange.groups.len(), 1);
    let group = &interchange.groups[0];
    assert_eq!((group.functional_id, group.control_number), ("HP", "42"));
    assert_eq!(group.version, "005010X221A1");
    let transaction = &group.transactions[0];
    assert_eq!(
        (transaction.id, transaction.control_number),
        ("835", "0001")
    );
    // SE01 is 47: ST and SE plus 45 segments between them.
    assert_eq!(transaction.segments.len(), 45);
    let svc = transaction.segments.iter().find(|s| s.id == "SVC").unwrap();
    assert_eq!(svc.components(1), ["HC", "99213", "25"]);
    assert_eq!(svc.element(2), "150");
    assert_eq!(svc.element(99), "");
    assert_eq!(svc.element(0), "");
}

#[test]
fn line_breaks_after_terminators_do_not_matter() {
    let flat = PAYMENT_835.replace('\n', "");
    let crlf = PAYMENT_835.replace('\n', "\r\n");
    let expected = parse_835(PAYMENT_835).unwrap();
    assert_eq!(parse_835(&flat).unwrap(), expected);
    assert_eq!(parse_835(&crlf).unwrap(), expected);
}

#[test]
fn other_delimiters_give_the_same_result() {
    let swapped: String = PAYMENT_835
        .chars()
        .map(|c| match c {
            '*' => '|',
            ':' => '>',
            '~' => '!',
            '^' => '}',
            other => other,
        })
        .collect();
    assert_eq!(
        parse_835(&swapped).unwrap(),
        parse_835(PAYMENT_835).unwrap()
    );
}

#[test]
fn envelope_errors_name_the_field() {
    let isa_short = PAYMENT_835.replacen("PAYERSENDER    ", "PAYERSENDER   ", 1);
    let same_delimiter = PAYMENT_835.replacen("*T*:~", "*T*~~", 1);
    let letter_delimiter = PAYMENT_835.replacen("*T*:~", "*T*A~", 1);
    let cases: Vec<(&str, String, &str, &str, &str)> = vec![
        ("empty", String::new(), ENVELOPE_INVALID, "ISA", "shorter"),
        (
            "short",
            "ISA*00*".into(),
            ENVELOPE_INVALID,
            "ISA",
            "shorter",
        ),
        (
            "not ISA",
            PAYMENT_835.replacen("ISA", "ISB", 1),
            ENVELOPE_INVALID,
            "ISA",
            "ISA",
        ),
        (
            "ISA width",
            isa_short,
            ENVELOPE_INVALID,
            "ISA",
            "fixed widths",
        ),
        (
            "same delimiter twice",
            same_delimiter,
            ENVELOPE_INVALID,
            "ISA",
            "same character",
        ),
        (
            "letter delimiter",
            letter_delimiter,
            ENVELOPE_INVALID,
            "ISA",
            "letter",
        ),
        (
            "IEA02",
            edited(PAYMENT_835, "IEA*1*000000042", "IEA*1*000000043"),
            ENVELOPE_INVALID,
            "IEA02",
            "expected 000000042, found 000000043",
        ),
        (
            "IEA01",
            edited(PAYMENT_835, "IEA*1*", "IEA*2*"),
            SEGMENT_COUNT,
            "IEA01",
            "expected 1",
        ),
        (
            "GE01",
            edited(PAYMENT_835, "GE*1*42", "GE*3*42"),
            SEGMENT_COUNT,
            "GE01 (group 42)",
            "says 3 transactions; expected 1",
        ),
        (
            "GE02",
            edited(PAYMENT_835, "GE*1*42", "GE*1*41"),
            ENVELOPE_INVALID,
            "GE02 (group 42)",
            "expected 42, found 41",
        ),
        (
            "SE01",
            PAYMENT_835.replacen("SE*47*", "SE*46*", 1),
            SEGMENT_COUNT,
            "SE01 (transaction 0001)",
            "says 46 segments; expected 47",
        ),
        (
            "SE01 not a number",
            PAYMENT_835.replacen("SE*47*", "SE*4x*", 1),
            SEGMENT_COUNT,
            "SE01 (transaction 0001)",
            "digits",
        ),
        (
            "SE02",
            edited(PAYMENT_835, "SE*47*0001", "SE*47*0002"),
            ENVELOPE_INVALID,
            "SE02 (transaction 0001)",
            "expected 0001, found 0002",
        ),
        (
            "no SE",
            PAYMENT_835.replacen("SE*47*0001~", "", 1),
            ENVELOPE_INVALID,
            "SE (transaction 0001)",
            "no SE before the next GE",
        ),
        (
            "no IEA",
            PAYMENT_835.replacen("IEA*1*000000042~", "", 1),
            ENVELOPE_INVALID,
            "IEA",
            "ends before the IEA",
        ),
        (
            "no GE",
            PAYMENT_835.replacen("GE*1*42~", "", 1),
            ENVELOPE_INVALID,
            "file",
            "IEA is not allowed",
        ),
        (
            "data after IEA",
            format!("{PAYMENT_835}ISA*00~"),
            ENVELOPE_INVALID,
            "file",
            "after IEA",
        ),
        (
            "segment outside a group",
            PAYMENT_835.replacen("GS*", "BPR*1~GS*", 1),
            ENVELOPE_INVALID,
            "file",
            "segment BPR",
        ),
    ];
    for (name, text, reason, field, message) in cases {
        let e = err(tokenize(&text));
        assert_eq!((e.reason, e.field.as_str()), (reason, field), "{name}: {e}");
        assert!(e.message.contains(message), "{name}: {e}");
    }
}

#[test]
fn a_real_sample_with_a_wrong_iea02_is_refused() {
    // x12-types sample 01 (from the web) closes ISA 000003438 with IEA 004075123.
    let e = err(parse_835(sample("01")));
    assert_eq!((e.reason, e.field.as_str()), (ENVELOPE_INVALID, "IEA02"));
}

#[test]
fn size_bounds() {
    let big = format!("{PAYMENT_835}{}", " ".repeat(tokenizer::MAX_BYTES));
    let e = err(tokenize(&big));
    assert_eq!((e.reason, e.field.as_str()), (TOO_LARGE, "file"));

    let isa = PAYMENT_835.lines().next().unwrap();
    let many = format!("{isa}{}", "X*1~".repeat(tokenizer::MAX_SEGMENTS));
    let e = err(tokenize(&many));
    assert_eq!(e.reason, TOO_LARGE);
    assert!(e.message.contains("200000 segments"), "{e}");

    let wide = format!("{isa}X{}~", "*".repeat(tokenizer::MAX_ELEMENTS));
    let e = err(tokenize(&wide));
    assert_eq!(e.reason, TOO_LARGE);
    assert!(e.message.contains("2000000 elements"), "{e}");

    // Exactly at the bound the segment count is not the problem (the envelope is).
    let at_bound = format!("{isa}{}", "X*1~".repeat(tokenizer::MAX_SEGMENTS - 1));
    assert_eq!(err(tokenize(&at_bound)).reason, ENVELOPE_INVALID);
}

#[test]
fn shown_hides_what_may_be_data() {
    assert_eq!(tokenizer::shown("0001"), "0001");
    assert_eq!(tokenizer::shown(""), "(empty)");
    assert_eq!(tokenizer::shown("JANE DOE"), "(not shown)");
    assert_eq!(tokenizer::shown("1234567890123456"), "(not shown)");
}

// ---------------------------------------------------------------- 835, hand-made

#[test]
fn handmade_835_header() {
    let remittances = parse_835(PAYMENT_835).unwrap();
    assert_eq!(remittances.len(), 1);
    let r = &remittances[0];
    assert_eq!(r.control_number, "0001");
    assert_eq!(
        r.payer,
        Payer {
            name: "ACME HEALTH PLAN".into(),
            id: Some("ACME01".into())
        }
    );
    assert_eq!(
        r.payee,
        Payee {
            name: "SPRINGFIELD FAMILY CLINIC".into(),
            npi: Some("1234567893".into()),
            tax_id: Some("123456789".into()),
        }
    );
    assert_eq!(
        r.payment,
        Payment {
            handling: "I".into(),
            total: cents(18_300),
            method: PaymentMethod::Ach,
            date: date(2026, 12, 4),
        }
    );
    assert_eq!(r.trace.number, "EFT20261204001");
    assert_eq!(r.trace.originator, "1512345678");
    assert_eq!(r.production_date, Some(date(2026, 12, 3)));
    assert_eq!(
        r.provider_adjustments,
        vec![
            ProviderAdjustment {
                provider_id: "1234567893".into(),
                fiscal_period_end: Some(date(2026, 12, 31)),
                reason: "WO".into(),
                reference: Some("PCN0099".into()),
                amount: cents(200),
            },
            ProviderAdjustment {
                provider_id: "1234567893".into(),
                fiscal_period_end: Some(date(2026, 12, 31)),
                reason: "L6".into(),
                reference: None,
                amount: cents(-50),
            },
        ]
    );
}

#[test]
fn handmade_835_claims() {
    let r = &parse_835(PAYMENT_835).unwrap()[0];
    let summary: Vec<_> = r
        .claims
        .iter()
        .map(|c| {
            (
                c.claim_id.as_str(),
                c.status,
                c.billed,
                c.paid,
                c.patient_responsibility,
                c.payer_claim_control_number.as_str(),
                c.services.len(),
            )
        })
        .collect();
    use ClaimStatus::*;
    assert_eq!(
        summary,
        vec![
            (
                "CLM-0001",
                ProcessedAsPrimary,
                cents(25_000),
                cents(16_000),
                Some(cents(4_000)),
                "PCN0001",
                2
            ),
            (
                "CLM-0002",
                Denied,
                cents(9_000),
                cents(0),
                Some(cents(0)),
                "PCN0002",
                0
            ),
            (
                "CLM-0003",
                Reversal,
                cents(-7_550),
                cents(-7_550),
                Some(cents(0)),
                "PCN0003",
                1
            ),
            (
                "CLM-0004",
                ProcessedAsPrimary,
                cents(12_000),
                cents(10_000),
                Some(cents(2_000)),
                "PCN0004",
                1
            ),
        ]
    );
    // Claim 2 was denied at claim level.
    assert_eq!(
        r.claims[1].adjustments,
        vec![Adjustment {
            group: AdjustmentGroup::Contractual,
            reason: "50".into(),
            amount: cents(9_000),
            quantity: None,
        }]
    );
    assert!(r.claims[0].adjustments.is_empty());
}

#[test]
fn handmade_835_service_lines() {
    let r = &parse_835(PAYMENT_835).unwrap()[0];
    let line = &r.claims[0].services[0];
    assert_eq!(
        line.procedure,
        Procedure {
            qualifier: "HC".into(),
            code: "99213".into(),
            modifiers: vec!["25".into()],
        }
    );
    assert_eq!(
        (line.billed, line.paid, line.units),
        (cents(15_000), cents(10_000), Quantity::ONE)
    );
    assert_eq!(line.service_date, Some(date(2026, 11, 20)));
    assert_eq!(line.line_control_number.as_deref(), Some("CLM-0001-1"));
    use AdjustmentGroup::*;
    let adjustments: Vec<_> = line
        .adjustments
        .iter()
        .map(|a| (a.group, a.reason.as_str(), a.amount, a.quantity))
        .collect();
    assert_eq!(
        adjustments,
        vec![
            (Contractual, "45", cents(2_000), None),
            (
                PatientResponsibility,
                "2",
                cents(2_000),
                Some(Quantity::ONE)
            ),
            (PatientResponsibility, "3", cents(1_000), None),
        ]
    );
    let second = &r.claims[0].services[1];
    assert_eq!(second.units.whole(), Some(2));
    assert!(second.procedure.modifiers.is_empty());
    // Reversal: negative units and amounts.
    let reversed = &r.claims[2].services[0];
    assert_eq!(
        (reversed.paid, reversed.units.whole()),
        (cents(-7_550), Some(-1))
    );
    // Fractional units are kept exactly.
    let fractional = &r.claims[3].services[0];
    assert_eq!(
        (fractional.units.thousandths(), fractional.units.whole()),
        (1_500, None)
    );
}

// ---------------------------------------------------------------- 835, real samples

/// One real sample: (file, payer, trace number, BPR02, claim count, claim index, claim id,
/// CLP03, CLP04, CLP05), all read off the file by hand.
type SampleRow = (
    &'static str,
    &'static str,
    &'static str,
    i64,
    usize,
    usize,
    &'static str,
    i64,
    i64,
    Option<i64>,
);

#[test]
fn real_samples_parse_to_the_values_in_the_files() {
    let rows: [SampleRow; 12] = [
        (
            "02",
            "YOUR TAX DOLLARS AT WORK",
            "0063158ABC",
            3_400,
            1,
            0,
            "0001000055",
            54_100,
            3_400,
            None,
        ),
        (
            "03",
            "NYSDOH",
            "123456789012345",
            157,
            2,
            0,
            "9876543210ABC",
            -3_761_733,
            -62_797,
            None,
        ),
        (
            "05",
            "NYSDOH",
            "10100000000",
            0,
            1,
            0,
            "PATIENT ACCOUNT NUMBER",
            3_400,
            0,
            None,
        ),
        (
            "06",
            "NYSDOH",
            "10100000000",
            4_575,
            3,
            2,
            "PATIENT ACCOUNT NUMBER",
            3_425,
            1_150,
            None,
        ),
        (
            "07",
            "NYSDOH",
            "10100000000",
            21_965,
            3,
            2,
            "PATIENT ACCOUNT NUMBER",
            25_646,
            22_364,
            None,
        ),
        (
            "08",
            "NYSDOH",
            "12345678901",
            0,
            2,
            1,
            "987654321",
            715_117,
            713_101,
            None,
        ),
        (
            "10",
            "ANY PLAN USA",
            "CK NUMBER 1",
            8_000,
            1,
            0,
            "PATACCT",
            40_000,
            8_000,
            None,
        ),
        (
            "11",
            "DELTA DENTAL OF ABC",
            "12345",
            13_200,
            1,
            0,
            "7722337",
            22_600,
            13_200,
            None,
        ),
        (
            "35",
            "RUSHMORE LIFE",
            "71700666555",
            110_000,
            2,
            1,
            "8765432112",
            120_000,
            60_000,
            Some(60_000),
        ),
        (
            "36",
            "ANY PLAN USA",
            "CK NUMBER 1",
            1_106,
            1,
            0,
            "PCN",
            3_620,
            1_106,
            None,
        ),
        (
            "39",
            "DENTAL OF ABC",
            "12345",
            81_080,
            9,
            4,
            "7722337",
            34_800,
            1_680,
            Some(4_420),
        ),
        (
            "40",
            "ANY PLAN USA",
            "CK NUMBER 1",
            800_000,
            1,
            0,
            "PATACCT",
            4_000_000,
            800_000,
            None,
        ),
    ];
    for (file, payer, trace, total, count, index, id, billed, paid, patient) in rows {
        let remittances = parse_835(sample(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(remittances.len(), 1, "{file}");
        let r = &remittances[0];
        assert_eq!(r.payer.name, payer, "{file}");
        assert_eq!(r.trace.number, trace, "{file}");
        assert_eq!(r.payment.total, cents(total), "{file}");
        assert_eq!(r.claims.len(), count, "{file}");
        let claim = &r.claims[index];
        assert_eq!(claim.claim_id, id, "{file}");
        assert_eq!(
            (claim.billed, claim.paid, claim.patient_responsibility),
            (cents(billed), cents(paid), patient.map(cents)),
            "{file}"
        );
    }
}

#[test]
fn real_sample_details() {
    // 02: payee by tax id, line without SVC05 (units default to 1), two OA adjustments.
    let r = &parse_835(sample("02")).unwrap()[0];
    assert_eq!(r.payee.tax_id.as_deref(), Some("3UR334563"));
    assert_eq!(r.payee.npi, None);
    assert_eq!(r.payment.method, PaymentMethod::Check);
    assert_eq!(r.production_date, Some(date(2005, 3, 18)));
    let line = &r.claims[0].services[0];
    assert_eq!(
        (line.procedure.code.as_str(), line.units),
        ("55669", Quantity::ONE)
    );
    let amounts: Vec<_> = line
        .adjustments
        .iter()
        .map(|a| (a.reason.as_str(), a.amount))
        .collect();
    assert_eq!(amounts, vec![("23", cents(51_600)), ("94", cents(-900))]);

    // 03: a reversal claim and a claim-level CAS with a negative amount; payee NPI.
    let r = &parse_835(sample("03")).unwrap()[0];
    assert_eq!(r.claims[0].status, ClaimStatus::Reversal);
    assert_eq!(r.claims[0].adjustments[0].amount, cents(-3_698_936));
    assert_eq!(r.claims[0].payer_claim_control_number, "1300000000000020");
    assert_eq!(r.payee.npi.as_deref(), Some("0123456789"));
    assert_eq!(r.payment.method, PaymentMethod::Ach);

    // 05: no payment; SVC05 of 0 units.
    let r = &parse_835(sample("05")).unwrap()[0];
    assert_eq!(r.payment.method, PaymentMethod::NonPayment);
    assert_eq!(r.claims[0].services[1].units.whole(), Some(0));

    // 06: modifiers.
    let r = &parse_835(sample("06")).unwrap()[0];
    assert_eq!(r.claims[0].services[0].procedure.modifiers, ["RB"]);
    assert_eq!(r.claims[0].services[3].units.whole(), Some(2));

    // 07: NDC lines, a CAS with two triplets, a PLB that reduces the payment.
    let r = &parse_835(sample("07")).unwrap()[0];
    let line = &r.claims[2].services[0];
    assert_eq!(line.procedure.qualifier, "N4");
    assert_eq!(line.units.whole(), Some(30));
    let amounts: Vec<_> = line
        .adjustments
        .iter()
        .map(|a| (a.reason.as_str(), a.amount))
        .collect();
    assert_eq!(amounts, vec![("91", cents(-350)), ("45", cents(3_632))]);
    assert_eq!(r.provider_adjustments.len(), 1);
    let plb = &r.provider_adjustments[0];
    assert_eq!((plb.reason.as_str(), plb.amount), ("WO", cents(399)));
    assert_eq!(plb.reference.as_deref(), Some("FCN#201001010000000"));

    // 08: a negative PLB balancing a reversal.
    let r = &parse_835(sample("08")).unwrap()[0];
    assert_eq!(r.provider_adjustments[0].amount, cents(-2_016));

    // 10: `|` component separator; line control number absent.
    let r = &parse_835(sample("10")).unwrap()[0];
    let codes: Vec<_> = r.claims[0]
        .services
        .iter()
        .map(|s| s.procedure.code.as_str())
        .collect();
    assert_eq!(codes, ["99213", "85003", "36415"]);
    assert_eq!(r.payee.npi.as_deref(), Some("1123454567"));

    // 36: `-.06`, an amount without the leading zero; REF*6R.
    let r = &parse_835(sample("36")).unwrap()[0];
    let line = &r.claims[0].services[0];
    assert_eq!(line.adjustments[1].amount, cents(-6));
    assert_eq!(line.line_control_number.as_deref(), Some("B1"));

    // 40: a CAS quantity.
    let r = &parse_835(sample("40")).unwrap()[0];
    assert_eq!(r.claims[0].adjustments[0].quantity, Some(Quantity::ONE));
    assert_eq!(r.claims[0].adjustments[1].amount, cents(3_000_000));
}

// ---------------------------------------------------------------- 835 refusals

#[test]
fn the_835_refusals_name_segment_and_element() {
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "bad CLP04",
            edited(PAYMENT_835, "CLP*CLM-0002*4*90*0*", "CLP*CLM-0002*4*90*1O*"),
            AMOUNT_INVALID,
            "CLP04 (claim 2)",
        ),
        (
            "fraction of a cent",
            edited(PAYMENT_835, "SVC*HC:81002*100*", "SVC*HC:81002*100.001*"),
            AMOUNT_INVALID,
            "SVC02 (claim 1, service 2)",
        ),
        (
            "CAS amount missing",
            edited(PAYMENT_835, "CAS*PR*1*10~", "CAS*PR*1~"),
            AMOUNT_INVALID,
            "CAS03 (claim 1, service 2)",
        ),
        (
            "bad PLB amount",
            edited(PAYMENT_835, "L6*-0.5", "L6*-0,5"),
            AMOUNT_INVALID,
            "PLB06 (PLB 1)",
        ),
        (
            "total",
            edited(PAYMENT_835, "BPR*I*183*", "BPR*I*183.01*"),
            REMITTANCE_TOTAL_MISMATCH,
            "BPR02",
        ),
        (
            "claim status",
            edited(PAYMENT_835, "CLP*CLM-0001*1*", "CLP*CLM-0001*99*"),
            ELEMENT_INVALID,
            "CLP02 (claim 1)",
        ),
        (
            "CAS group",
            edited(PAYMENT_835, "CAS*CO*45*20~", "CAS*CR*45*20~"),
            ELEMENT_INVALID,
            "CAS01 (claim 1, service 1)",
        ),
        (
            "payment method",
            edited(PAYMENT_835, "BPR*I*183*C*ACH", "BPR*I*183*C*XYZ"),
            ELEMENT_INVALID,
            "BPR04",
        ),
        (
            "service date",
            edited(PAYMENT_835, "DTM*472*20261120", "DTM*472*20261131"),
            ELEMENT_INVALID,
            "DTM02 (claim 1, service 1)",
        ),
        (
            "units",
            edited(PAYMENT_835, "*100**1.5~", "*100**1.5x~"),
            ELEMENT_INVALID,
            "SVC05 (claim 4, service 1)",
        ),
        (
            "claim id",
            edited(PAYMENT_835, "CLP*CLM-0004*", "CLP**"),
            ELEMENT_MISSING,
            "CLP01 (claim 4)",
        ),
        (
            "procedure",
            edited(PAYMENT_835, "SVC*HC:81002*", "SVC*HC*"),
            ELEMENT_MISSING,
            "SVC01 (claim 1, service 2)",
        ),
        (
            "no BPR",
            recount(&drop_segment(PAYMENT_835, "BPR")),
            SEGMENT_MISSING,
            "BPR",
        ),
        (
            "no TRN",
            recount(&drop_segment(PAYMENT_835, "TRN")),
            SEGMENT_MISSING,
            "TRN",
        ),
        (
            "SVC before CLP",
            edited(PAYMENT_835, "LX*1~", "LX*1~\nSVC*HC:99213*1*1~"),
            SEGMENT_UNEXPECTED,
            "SVC",
        ),
        (
            "CAS before CLP",
            edited(PAYMENT_835, "LX*1~", "LX*1~\nCAS*CO*45*1~"),
            SEGMENT_UNEXPECTED,
            "CAS",
        ),
        (
            "a 999",
            REJECTED_999.to_string(),
            TRANSACTION_UNEXPECTED,
            "ST01 (transaction 0001)",
        ),
    ];
    for (name, text, reason, field) in cases {
        let e = err(parse_835(&text));
        assert_eq!((e.reason, e.field.as_str()), (reason, field), "{name}: {e}");
    }
}

/// The file without its (first) `id` segment.
fn drop_segment(text: &str, id: &str) -> String {
    let start = text.find(&format!("\n{id}*")).unwrap() + 1;
    let end = start + text[start..].find('~').unwrap() + 1;
    format!("{}{}", &text[..start], &text[end..])
}

#[test]
fn errors_say_which_transaction_and_never_repeat_the_data() {
    let text = edited(
        PAYMENT_835,
        "CLP*CLM-0002*4*90*",
        "CLP*CLM-0002*4*JANE DOE*",
    );
    let e = err(parse_835(&text));
    assert_eq!(e.field, "CLP03 (claim 2)");
    assert!(e.message.starts_with("transaction 0001: "), "{e}");
    assert!(!e.to_string().contains("JANE"), "{e}");
}

#[test]
fn the_total_rule_counts_provider_adjustments() {
    // Without the PLB the claims (184.50) no longer match BPR02 (183).
    let text = recount(&drop_segment(PAYMENT_835, "PLB"));
    let e = err(parse_835(&text));
    assert_eq!(e.reason, REMITTANCE_TOTAL_MISMATCH);
    assert!(
        e.message.contains("183.00") && e.message.contains("184.50"),
        "{e}"
    );
    let fixed = edited(&text, "BPR*I*183*", "BPR*I*184.5*");
    assert_eq!(parse_835(&fixed).unwrap()[0].payment.total, cents(18_450));
}

#[test]
fn several_transactions_give_several_remittances() {
    let body_start = PAYMENT_835.find("ST*").unwrap();
    let body_end = PAYMENT_835.find("GE*").unwrap();
    let body = &PAYMENT_835[body_start..body_end];
    let second = body
        .replace("ST*835*0001", "ST*835*0002")
        .replace("SE*47*0001", "SE*47*0002");
    let text = PAYMENT_835.replacen("GE*1*42", &format!("{}GE*2*42", second), 1);
    let remittances = parse_835(&text).unwrap();
    let numbers: Vec<_> = remittances
        .iter()
        .map(|r| r.control_number.as_str())
        .collect();
    assert_eq!(numbers, ["0001", "0002"]);
    // An error in the second says so.
    let broken = text
        .replacen("BPR*I*183*", "BPR*I*1*", 2)
        .replacen("BPR*I*1*", "BPR*I*183*", 1);
    let e = err(parse_835(&broken));
    assert!(e.message.starts_with("transaction 0002: "), "{e}");
}

#[test]
fn quantities_parse_x12_decimals() {
    let ok = [
        ("1", 1_000),
        ("1.5", 1_500),
        ("-2", -2_000),
        (".25", 250),
        ("-.5", -500),
        ("0.125", 125),
    ];
    for (text, thousandths) in ok {
        assert_eq!(
            Quantity::parse(text),
            Some(Quantity::from_thousandths(thousandths)),
            "{text}"
        );
    }
    for bad in [
        "",
        "-",
        ".",
        "1.",
        "1.2345",
        "1e3",
        "one",
        "1,5",
        "9999999999999",
    ] {
        assert_eq!(Quantity::parse(bad), None, "{bad}");
    }
}

// ---------------------------------------------------------------- 999

#[test]
fn handmade_999() {
    let acks = parse_999(REJECTED_999).unwrap();
    assert_eq!(acks.len(), 1);
    let group = &acks[0];
    assert_eq!(
        (
            group.functional_id.as_str(),
            group.group_control_number.as_str(),
            group.version.as_deref()
        ),
        ("HC", "12", Some("005010X222A1"))
    );
    assert_eq!(group.status, AckCode::PartiallyAccepted);
    assert_eq!((group.included, group.received, group.accepted), (3, 3, 2));
    let statuses: Vec<_> = group
        .transactions
        .iter()
        .map(|t| {
            (
                t.transaction_id.as_str(),
                t.control_number.as_str(),
                t.status,
                t.errors.len(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("837", "0001", AckCode::Accepted, 0),
            ("837", "0002", AckCode::Rejected, 2),
            ("837", "0003", AckCode::AcceptedWithErrors, 1),
        ]
    );
    let rejected = &group.transactions[1];
    assert_eq!(rejected.error_codes, ["5"]);
    assert_eq!(
        rejected.errors[1],
        SegmentError {
            segment_id: "CLM".into(),
            position: 35,
            loop_id: Some("2300".into()),
            code: "8".into(),
            elements: vec![
                ElementError {
                    position: 5,
                    component: Some(1),
                    repetition: None,
                    reference: Some("1331".into()),
                    code: "7".into(),
                },
                ElementError {
                    position: 2,
                    component: None,
                    repetition: None,
                    reference: Some("782".into()),
                    code: "1".into(),
                },
            ],
        }
    );
    assert_eq!(rejected.errors[0].loop_id, None);
    assert!(group.transactions[2].status.is_accepted());
    assert!(!rejected.status.is_accepted());
}

#[test]
fn the_999_refusals() {
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "IK501",
            edited(REJECTED_999, "IK5*A~", "IK5*Q~"),
            ELEMENT_INVALID,
            "IK501 (AK2 1)",
        ),
        (
            "P is for AK9 only",
            edited(REJECTED_999, "IK5*A~", "IK5*P~"),
            ELEMENT_INVALID,
            "IK501 (AK2 1)",
        ),
        (
            "AK901",
            edited(REJECTED_999, "AK9*P*", "AK9*Z*"),
            ELEMENT_INVALID,
            "AK901",
        ),
        (
            "IK302",
            edited(REJECTED_999, "IK3*CLM*35*", "IK3*CLM*3x*"),
            ELEMENT_INVALID,
            "IK302 (AK2 2)",
        ),
        (
            "IK401",
            edited(REJECTED_999, "IK4*5:1*", "IK4*:1*"),
            ELEMENT_INVALID,
            "IK401 (AK2 2)",
        ),
        (
            "AK902",
            edited(REJECTED_999, "AK9*P*3*", "AK9*P*three*"),
            ELEMENT_INVALID,
            "AK902",
        ),
        (
            "no IK5",
            edited(REJECTED_999, "IK5*A~", ""),
            SEGMENT_MISSING,
            "IK5 (AK2 1)",
        ),
        (
            "no AK9",
            edited(REJECTED_999, "AK9*P*3*3*2~", ""),
            SEGMENT_MISSING,
            "AK9",
        ),
        (
            "no AK1",
            edited(REJECTED_999, "AK1*HC*12*005010X222A1~", ""),
            SEGMENT_MISSING,
            "AK1",
        ),
        (
            "IK4 before IK3",
            edited(REJECTED_999, "IK5*A~", "IK4*1**1~IK5*A~"),
            SEGMENT_UNEXPECTED,
            "IK4 (AK2 1)",
        ),
        (
            "IK3 outside AK2",
            edited(REJECTED_999, "AK9*", "IK3*NM1*1**8~AK9*"),
            SEGMENT_UNEXPECTED,
            "IK3",
        ),
        (
            "an 835",
            PAYMENT_835.to_string(),
            TRANSACTION_UNEXPECTED,
            "ST01 (transaction 0001)",
        ),
    ];
    for (name, text, reason, field) in cases {
        let e = err(parse_999(&text));
        assert_eq!((e.reason, e.field.as_str()), (reason, field), "{name}: {e}");
    }
}

// ---------------------------------------------------------------- 277CA

#[test]
fn handmade_277ca() {
    let claims = parse_277ca(CLAIMS_277).unwrap();
    assert_eq!(claims.len(), 2);
    let accepted = &claims[0];
    assert_eq!(accepted.claim_id, "CLM-0001");
    assert_eq!(accepted.payer_claim_number.as_deref(), Some("PAYER778899"));
    assert_eq!(accepted.clearinghouse_trace.as_deref(), Some("CH0001"));
    assert!(accepted.accepted);
    assert_eq!(
        accepted.statuses,
        vec![ClaimStatusInfo {
            category: "A2".into(),
            code: "20".into(),
            entity: Some("PR".into()),
            date: Some(date(2026, 12, 5)),
            action: Some("WQ".into()),
            amount: Some(cents(12_000)),
        }]
    );
    let rejected = &claims[1];
    assert_eq!(rejected.claim_id, "CLM-0002");
    assert_eq!(rejected.payer_claim_number, None);
    assert!(!rejected.accepted);
    // STC01 and STC10 of the claim; the service line's STC (A7:453) is not the claim's.
    let statuses: Vec<_> = rejected
        .statuses
        .iter()
        .map(|s| {
            (
                s.category.as_str(),
                s.code.as_str(),
                s.entity.as_deref(),
                s.amount,
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("A7", "562", Some("85"), Some(cents(25_000))),
            ("A3", "21", Some("IL"), Some(cents(25_000))),
        ]
    );
}

#[test]
fn status_categories_map_to_accepted() {
    let cases = [
        ("A0", true),
        ("A1", true),
        ("A2", true),
        ("A5", true),
        ("A3", false),
        ("A4", false),
        ("A6", false),
        ("A7", false),
        ("A8", false),
        ("E0", false),
        ("a1", false),
        ("", false),
    ];
    for (category, accepted) in cases {
        assert_eq!(category_accepted(category), accepted, "{category}");
    }
}

#[test]
fn one_rejecting_status_rejects_the_claim() {
    let text = edited(
        CLAIMS_277,
        "STC*A2:20:PR*20261205*WQ*120~",
        "STC*A2:20:PR*20261205*WQ*120~\nSTC*A8:510:IL*20261205*U*120~",
    );
    let claims = parse_277ca(&text).unwrap();
    assert_eq!(claims[0].statuses.len(), 2);
    assert!(!claims[0].accepted);
}

#[test]
fn the_277ca_refusals() {
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "no STC",
            edited(CLAIMS_277, "STC*A2:20:PR*20261205*WQ*120~", ""),
            SEGMENT_MISSING,
            "STC (claim 1)",
        ),
        (
            "amount",
            edited(
                CLAIMS_277,
                "STC*A2:20:PR*20261205*WQ*120~",
                "STC*A2:20:PR*20261205*WQ*12O~",
            ),
            AMOUNT_INVALID,
            "STC04 (claim 1)",
        ),
        (
            "date",
            edited(
                CLAIMS_277,
                "STC*A2:20:PR*20261205*",
                "STC*A2:20:PR*2026125*",
            ),
            ELEMENT_INVALID,
            "STC02 (claim 1)",
        ),
        (
            "no status code",
            edited(CLAIMS_277, "STC*A2:20:PR*", "STC*A2*"),
            ELEMENT_MISSING,
            "STC01 (claim 1)",
        ),
        (
            "second composite without a code",
            edited(CLAIMS_277, "*A3:21:IL~", "*A3~"),
            ELEMENT_MISSING,
            "STC10 (claim 2)",
        ),
        (
            "no claim id",
            edited(CLAIMS_277, "TRN*2*CLM-0002~", "TRN*2~"),
            ELEMENT_MISSING,
            "TRN02 (claim 2)",
        ),
        (
            "a 999",
            REJECTED_999.to_string(),
            TRANSACTION_UNEXPECTED,
            "ST01 (transaction 0001)",
        ),
    ];
    for (name, text, reason, field) in cases {
        let e = err(parse_277ca(&text));
        assert_eq!((e.reason, e.field.as_str()), (reason, field), "{name}: {e}");
    }
}

// ---------------------------------------------------------------- properties

/// Runs all three readers; only panics matter.
fn parse_all(text: &str) {
    let _ = parse_835(text);
    let _ = parse_999(text);
    let _ = parse_277ca(text);
}

/// A one-claim-per-paid-amount 835 whose BPR02 is `total` and with one PLB of `plb` cents.
fn synthetic_835(paid: &[i64], plb: i64, total: i64) -> String {
    let mut body = vec![
        format!("BPR*I*{}*C*CHK************20261204", cents(total).to_x12()),
        "TRN*1*12345*1512345678".to_string(),
        "N1*PR*PAYER".to_string(),
        "N1*PE*CLINIC*XX*1234567893".to_string(),
        "LX*1".to_string(),
    ];
    for (i, p) in paid.iter().enumerate() {
        let p = cents(*p).to_x12();
        body.push(format!("CLP*C{i}*1*{p}*{p}**12*P{i}"));
    }
    body.push(format!(
        "PLB*1234567893*20261231*WO*{}",
        cents(plb).to_x12()
    ));
    let isa = PAYMENT_835.lines().next().unwrap();
    format!(
        "{isa}\nGS*HP*A*B*20261205*1200*42*X*005010X221A1~ST*835*0001~{}~SE*{}*0001~GE*1*42~IEA*1*000000042~",
        body.join("~"),
        body.len() + 2
    )
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        parse_all(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_text_after_an_isa_never_panics(tail in "[A-Z0-9*:~^\\r\\n.-]{0,300}") {
        let isa = PAYMENT_835.lines().next().unwrap();
        parse_all(&format!("{isa}{tail}"));
    }

    #[test]
    fn mutated_valid_files_never_panic(
        file in 0usize..16,
        edits in proptest::collection::vec((any::<usize>(), 0u8..3, any::<char>()), 1..8),
    ) {
        let originals: Vec<&str> = [PAYMENT_835, REJECTED_999, CLAIMS_277]
            .into_iter()
            .chain(SAMPLES.iter().map(|(_, t)| *t))
            .collect();
        let mut chars: Vec<char> = originals[file % originals.len()].chars().collect();
        for (at, kind, c) in edits {
            let at = at % (chars.len() + 1);
            // A mutation is a replacement, an insertion or a deletion; delimiters are favoured
            // since they are what structure hangs on.
            let c = match c as u32 % 4 { 0 => '~', 1 => '*', 2 => ':', _ => c };
            match kind {
                0 if at < chars.len() => chars[at] = c,
                1 => chars.insert(at, c),
                _ if at < chars.len() => { chars.remove(at); }
                _ => {}
            }
        }
        parse_all(&chars.into_iter().collect::<String>());
    }

    #[test]
    fn balanced_remittances_parse_and_unbalanced_are_refused(
        paid in proptest::collection::vec(-1_000_000i64..10_000_000, 1..6),
        plb in -100_000i64..100_000,
        off in prop_oneof![Just(0i64), 1i64..1_000, -1_000i64..-1],
    ) {
        let expected: i64 = paid.iter().sum::<i64>() - plb;
        let result = parse_835(&synthetic_835(&paid, plb, expected + off));
        if off == 0 {
            let r = &result.unwrap()[0];
            prop_assert_eq!(r.payment.total, cents(expected));
            let claim_paid: Vec<i64> = r.claims.iter().map(|c| c.paid.cents()).collect();
            prop_assert_eq!(claim_paid, paid);
        } else {
            prop_assert_eq!(result.unwrap_err().reason, REMITTANCE_TOTAL_MISMATCH);
        }
    }

    #[test]
    fn any_distinct_delimiters_read_the_same(
        chosen in proptest::sample::subsequence(vec!['|', '>', '!', '{', '}', '`', '\\', '#'], 4)
            .prop_shuffle(),
    ) {
        let swapped: String = PAYMENT_835
            .chars()
            .map(|c| match c {
                '*' => chosen[0],
                ':' => chosen[1],
                '~' => chosen[2],
                '^' => chosen[3],
                other => other,
            })
            .collect();
        prop_assert_eq!(parse_835(&swapped).unwrap(), parse_835(PAYMENT_835).unwrap());
    }
}

// ---------------------------------------------------------------- pyx12

/// Runs pyx12's `x12valid` (the program named by `PM_X12VALID`) on the hand-made files,
/// requiring `<file>: OK` and no `ERROR Line:` report. Its exit code is 1 even on success, and
/// on an 835 it logs "ERROR Failed to create 999 response" for a valid file (the 835 guide has
/// no ST03, which its 999 writer wants), so only the per-line errors and the verdict are read.
#[test]
fn pyx12_accepts_the_handmade_files() {
    let files = [
        ("handmade-payment.835", PAYMENT_835),
        ("handmade-rejected.999", REJECTED_999),
        ("handmade-claims.277", CLAIMS_277),
    ];
    for (name, text) in files {
        if let Some((report, ok)) = crate::domain::pyx12::report(name, text) {
            assert!(
                report.contains(&ok) && !report.contains("ERROR Line"),
                "{name}:\n{report}"
            );
        }
    }
}

/// The pyx12 test must be able to fail: a broken count is reported as a failure.
#[test]
fn pyx12_rejects_a_broken_file() {
    let broken = PAYMENT_835.replacen("SE*47*", "SE*46*", 1);
    if let Some((report, ok)) = crate::domain::pyx12::report("broken.835", &broken) {
        let failed = ok.replace(": OK", ": Failure");
        assert!(report.contains(&failed), "{report}");
    }
}

#![allow(clippy::unwrap_used)]
//! The scrubber: a clean claim passes; each rule, broken alone, gives its reason on its field;
//! several broken rules are all reported.

use chrono::NaiveDate;

use super::*;
use crate::domain::claims::{ChargeLine, NAME_CHARACTER_INVALID, NAME_NOT_ASCII, assemble};
use crate::domain::money::Cents;
use crate::domain::x12::Frequency;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// The date the tests scrub on; claims are of 2026-11-02.
pub(crate) fn today() -> NaiveDate {
    date(2026, 12, 5)
}

pub(crate) fn address(line1: &str, zip: &str) -> Address {
    Address {
        line1: line1.into(),
        line2: None,
        city: "Springfield".into(),
        state: "IL".into(),
        zip: zip.into(),
    }
}

pub(crate) fn context() -> ScrubContext {
    ScrubContext {
        billing_entity: Some(EntityDetails {
            name: "Acme Therapy Group".into(),
            npi: "1245319599".into(),
            ein: "12-3456789".into(),
            taxonomy: "103T00000X".into(),
            address: address("100 Main St", "627011234"),
            pay_to: None,
        }),
        payer: Some(PayerDetails {
            name: "Acme Health Plan".into(),
            payer_id: "60054".into(),
            claim_filing_indicator: "CI".into(),
            timely_filing_days: Some(90),
            address: None,
        }),
        subscriber: Some(SubscriberDetails {
            member_id: "MEM001".into(),
            first_name: "Zoë".into(),
            last_name: "Muñoz".into(),
            birth_date: Some(date(1980, 2, 29)),
            sex: Sex::Female,
            address: Some(address("1 Elm St", "62701")),
            group_number: Some("GRP100".into()),
        }),
        rendering_provider: Some(RenderingDetails {
            npi: "1234567893".into(),
            first_name: "Ann".into(),
            last_name: "Smith".into(),
        }),
    }
}

fn line(name: &str, code: &str, diagnoses: &[&str], amount: i64) -> ChargeLine {
    ChargeLine {
        charge: name.into(),
        patient: "patients/p1".into(),
        unit: "units/east".into(),
        provider: "providers/ann".into(),
        payer: "payers/acme".into(),
        billing_entity: "entities/acme".into(),
        contract: String::new(),
        claim_form: "CMS1500".into(),
        code: code.into(),
        modifiers: Vec::new(),
        units: 1,
        diagnoses: diagnoses.iter().map(|d| d.to_string()).collect(),
        service_date: date(2026, 11, 2),
        place_of_service: "11".into(),
        amount: Cents::new(amount),
    }
}

/// Two lines, three diagnoses, assembled the way the service does it.
pub(crate) fn claim() -> DraftClaim {
    let lines = [
        line("charges/1", "90837", &["F32.9", "F41.1"], 15_000),
        ChargeLine {
            modifiers: vec!["95".into(), "GT".into()],
            units: 2,
            ..line("charges/2", "90785", &["F41.1", "Z63.0"], 2_550)
        },
    ];
    let out = assemble(&lines, &[], &[], &|_, _| false);
    out.claims.into_iter().next().unwrap()
}

fn failures(claim: &DraftClaim, ctx: &ScrubContext, on: NaiveDate) -> Vec<(String, &'static str)> {
    scrub(claim, ctx, on)
        .into_iter()
        .map(|f| (f.field, f.reason))
        .collect()
}

#[test]
fn a_clean_claim_passes() {
    assert_eq!(failures(&claim(), &context(), today()), []);
}

type Edit = Box<dyn Fn(&mut DraftClaim, &mut ScrubContext)>;

fn entity(ctx: &mut ScrubContext) -> &mut EntityDetails {
    ctx.billing_entity.as_mut().unwrap()
}
fn payer(ctx: &mut ScrubContext) -> &mut PayerDetails {
    ctx.payer.as_mut().unwrap()
}
fn subscriber(ctx: &mut ScrubContext) -> &mut SubscriberDetails {
    ctx.subscriber.as_mut().unwrap()
}

/// One broken rule per row: the edit, then the one failure expected (field, reason).
fn rules() -> Vec<(Edit, &'static str, &'static str)> {
    vec![
        (
            Box::new(|_, x| x.billing_entity = None),
            "claim.billing_entity",
            BILLING_ENTITY_MISSING,
        ),
        (
            Box::new(|_, x| entity(x).npi = "1245319590".into()),
            "claim.billing_entity.npi",
            "NPI_CHECK_DIGIT",
        ),
        (
            Box::new(|_, x| entity(x).npi = "124531959".into()),
            "claim.billing_entity.npi",
            "NPI_INVALID",
        ),
        (
            Box::new(|_, x| entity(x).ein = "00-1234567".into()),
            "claim.billing_entity.ein",
            "EIN_INVALID",
        ),
        (
            Box::new(|_, x| entity(x).taxonomy = "103T0000X".into()),
            "claim.billing_entity.taxonomy",
            "TAXONOMY_INVALID",
        ),
        (
            Box::new(|_, x| entity(x).name = " ".into()),
            "claim.billing_entity.name",
            NAME_MISSING,
        ),
        (
            Box::new(|_, x| entity(x).address.zip = "62701".into()),
            "claim.billing_entity.address.zip",
            BILLING_ZIP_NOT_9_DIGITS,
        ),
        (
            Box::new(|_, x| entity(x).address.zip = "62701-1234".into()),
            "claim.billing_entity.address.zip",
            BILLING_ZIP_NOT_9_DIGITS,
        ),
        (
            Box::new(|_, x| entity(x).address.line1 = "P.O. Box 12".into()),
            "claim.billing_entity.address.line1",
            BILLING_ADDRESS_PO_BOX,
        ),
        (
            Box::new(|_, x| entity(x).address.state = "Il".into()),
            "claim.billing_entity.address.state",
            ADDRESS_STATE_INVALID,
        ),
        (
            Box::new(|_, x| entity(x).address.city = String::new()),
            "claim.billing_entity.address.city",
            ADDRESS_INCOMPLETE,
        ),
        (
            Box::new(|_, x| entity(x).pay_to = Some(address("PO Box 9", "6270"))),
            "claim.billing_entity.pay_to.zip",
            ADDRESS_ZIP_INVALID,
        ),
        (
            Box::new(|_, x| x.payer = None),
            "claim.payer",
            PAYER_MISSING,
        ),
        (
            Box::new(|_, x| payer(x).payer_id = "60-054".into()),
            "claim.payer.payer_id",
            "PAYER_ID_INVALID",
        ),
        (
            Box::new(|_, x| payer(x).claim_filing_indicator = "XX".into()),
            "claim.payer.claim_filing_indicator",
            CLAIM_FILING_INDICATOR_INVALID,
        ),
        (
            Box::new(|_, x| payer(x).name = "Acme ~ Plan".into()),
            "claim.payer.name",
            NAME_CHARACTER_INVALID,
        ),
        (
            Box::new(|_, x| x.subscriber = None),
            "claim.subscriber",
            SUBSCRIBER_MISSING,
        ),
        (
            Box::new(|_, x| subscriber(x).member_id = " ".into()),
            "claim.subscriber.member_id",
            SUBSCRIBER_MEMBER_ID_MISSING,
        ),
        (
            Box::new(|_, x| subscriber(x).member_id = "MEM*1".into()),
            "claim.subscriber.member_id",
            MEMBER_ID_INVALID,
        ),
        (
            Box::new(|_, x| subscriber(x).first_name = String::new()),
            "claim.subscriber.first_name",
            NAME_MISSING,
        ),
        (
            Box::new(|_, x| subscriber(x).last_name = "Петров".into()),
            "claim.subscriber.last_name",
            NAME_NOT_ASCII,
        ),
        (
            Box::new(|_, x| subscriber(x).last_name = "X".repeat(61)),
            "claim.subscriber.last_name",
            TEXT_TOO_LONG,
        ),
        (
            Box::new(|_, x| subscriber(x).birth_date = None),
            "claim.subscriber.birth_date",
            SUBSCRIBER_BIRTH_DATE_MISSING,
        ),
        (
            Box::new(|_, x| subscriber(x).birth_date = Some(date(2026, 11, 3))),
            "claim.subscriber.birth_date",
            SUBSCRIBER_BIRTH_DATE_INVALID,
        ),
        (
            Box::new(|_, x| subscriber(x).address = None),
            "claim.subscriber.address",
            SUBSCRIBER_ADDRESS_MISSING,
        ),
        (
            Box::new(|_, x| subscriber(x).address = Some(address("1 Elm St", "6270A"))),
            "claim.subscriber.address.zip",
            ADDRESS_ZIP_INVALID,
        ),
        (
            Box::new(|_, x| subscriber(x).group_number = Some("G:1".into())),
            "claim.subscriber.group_number",
            GROUP_NUMBER_INVALID,
        ),
        (
            Box::new(|_, x| x.rendering_provider.as_mut().unwrap().npi = "1234567890".into()),
            "claim.rendering_provider.npi",
            "NPI_CHECK_DIGIT",
        ),
        (
            Box::new(|_, x| x.rendering_provider.as_mut().unwrap().last_name = "李".into()),
            "claim.rendering_provider.last_name",
            NAME_NOT_ASCII,
        ),
        (
            Box::new(|c, _| c.diagnoses[1] = "F41.".into()),
            "claim.diagnoses[1]",
            "DIAGNOSIS_CODE_INVALID",
        ),
        (
            Box::new(|c, _| c.diagnoses.extend((0..10).map(|i| format!("F4{i}")))),
            "claim.diagnoses",
            CLAIM_DIAGNOSIS_COUNT,
        ),
        (
            Box::new(|c, _| c.place_of_service = "00".into()),
            "claim.place_of_service",
            "PLACE_OF_SERVICE_INVALID",
        ),
        (
            Box::new(|c, _| c.lines[1].line.code = "9078".into()),
            "claim.lines[1].code",
            "PROCEDURE_CODE_INVALID",
        ),
        (
            Box::new(|c, _| c.lines[1].line.modifiers[1] = "gt".into()),
            "claim.lines[1].modifiers[1]",
            "MODIFIER_INVALID",
        ),
        (
            Box::new(|c, _| c.lines[0].line.modifiers = vec!["25".into(), "25".into()]),
            "claim.lines[0].modifiers[1]",
            "MODIFIER_REPEATED",
        ),
        (
            Box::new(|c, _| c.lines[0].line.units = 0),
            "claim.lines[0].units",
            SERVICE_UNITS_NOT_POSITIVE,
        ),
        (
            Box::new(|c, _| c.lines[0].line.units = -2),
            "claim.lines[0].units",
            SERVICE_UNITS_NOT_POSITIVE,
        ),
        (
            Box::new(|c, _| c.lines[0].diagnosis_pointers = vec![]),
            "claim.lines[0].diagnosis_pointers",
            DIAGNOSIS_POINTER_COUNT,
        ),
        (
            Box::new(|c, _| c.lines[0].diagnosis_pointers = vec![1, 2, 3, 1, 2]),
            "claim.lines[0].diagnosis_pointers",
            DIAGNOSIS_POINTER_COUNT,
        ),
        (
            Box::new(|c, _| c.lines[0].diagnosis_pointers = vec![1, 4]),
            "claim.lines[0].diagnosis_pointers[1]",
            DIAGNOSIS_POINTER_INVALID,
        ),
        (
            Box::new(|c, _| c.lines[0].diagnosis_pointers = vec![0]),
            "claim.lines[0].diagnosis_pointers[0]",
            DIAGNOSIS_POINTER_INVALID,
        ),
        (
            Box::new(|c, _| c.lines[0].diagnosis_pointers = vec![2, 2]),
            "claim.lines[0].diagnosis_pointers[1]",
            DIAGNOSIS_POINTER_INVALID,
        ),
        (
            Box::new(|c, _| c.total = Cents::new(1)),
            "claim.total",
            CLAIM_TOTAL_MISMATCH,
        ),
        (
            Box::new(|c, _| {
                c.lines[0].line.amount = Cents::new(-100);
                c.total = c.lines.iter().map(|l| l.line.amount).sum();
            }),
            "claim.lines[0].amount",
            LINE_AMOUNT_OUT_OF_RANGE,
        ),
        (
            Box::new(|c, _| {
                c.lines.clear();
                c.total = Cents::ZERO;
            }),
            "claim.lines",
            CLAIM_LINE_COUNT,
        ),
        (
            Box::new(|c, _| {
                let copy = c.lines[0].clone();
                c.lines = vec![copy; 51];
                c.total = c.lines.iter().map(|l| l.line.amount).sum();
            }),
            "claim.lines",
            CLAIM_LINE_COUNT,
        ),
        (
            Box::new(|c, _| {
                c.frequency = Frequency::Void {
                    payer_claim_number: "P1".into(),
                }
            }),
            "",
            "",
        ),
        (
            Box::new(|_, x| payer(x).timely_filing_days = Some(32)),
            "claim.service_date",
            TIMELY_FILING_EXPIRED,
        ),
        (
            Box::new(|c, _| c.key.service_date = date(2026, 12, 6)),
            "claim.service_date",
            DATE_OF_SERVICE_IN_FUTURE,
        ),
    ]
}

#[test]
fn each_rule_alone() {
    for (i, (edit, field, reason)) in rules().into_iter().enumerate() {
        let (mut c, mut x) = (claim(), context());
        edit(&mut c, &mut x);
        let expected: Vec<(String, &str)> = if reason.is_empty() {
            Vec::new()
        } else {
            vec![(field.to_string(), reason)]
        };
        assert_eq!(failures(&c, &x, today()), expected, "rule row {i}");
    }
}

#[test]
fn timely_filing_boundary_and_no_limit() {
    // 2026-11-02 + 33 days = 2026-12-05: 33 days passed, so a 33-day limit is just met.
    let mut x = context();
    payer(&mut x).timely_filing_days = Some(33);
    assert_eq!(failures(&claim(), &x, date(2026, 12, 5)), []);
    assert_eq!(failures(&claim(), &x, date(2026, 12, 6)).len(), 1);
    payer(&mut x).timely_filing_days = None;
    assert_eq!(failures(&claim(), &x, date(2036, 1, 1)), []);
    // Service today is not in the future.
    assert_eq!(failures(&claim(), &context(), date(2026, 11, 2)), []);
}

#[test]
fn reports_every_failure_at_once() {
    let (mut c, mut x) = (claim(), context());
    x.billing_entity = None;
    subscriber(&mut x).member_id = String::new();
    c.lines[0].line.code = "bad".into();
    c.lines[1].line.units = 0;
    let got = failures(&c, &x, date(2027, 6, 1));
    let reasons: Vec<&str> = got.iter().map(|(_, r)| *r).collect();
    assert_eq!(
        reasons,
        [
            BILLING_ENTITY_MISSING,
            SUBSCRIBER_MEMBER_ID_MISSING,
            "PROCEDURE_CODE_INVALID",
            SERVICE_UNITS_NOT_POSITIVE,
            TIMELY_FILING_EXPIRED,
        ]
    );
}

#[test]
fn messages_never_echo_patient_data() {
    let (mut c, mut x) = (claim(), context());
    subscriber(&mut x).member_id = "SECRET*ID".into();
    subscriber(&mut x).last_name = "Secretович".into();
    c.diagnoses[0] = "secret".into();
    for failure in scrub(&c, &x, today()) {
        assert!(
            !failure.message.to_lowercase().contains("secret"),
            "{failure}"
        );
    }
}

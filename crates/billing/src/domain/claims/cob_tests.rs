#![allow(clippy::unwrap_used)]
//! The COB mapping: what the primary did becomes loops 2320/2330/2430, or the first failure.

use chrono::NaiveDate;

use super::*;
use crate::domain::x12::{Address, Claim, Frequency, Payer, ServiceLine, Sex, Subscriber};

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()
}

fn line(code: &str, cents: i64) -> ServiceLine {
    ServiceLine {
        code: code.into(),
        modifiers: Vec::new(),
        charge: Cents::new(cents),
        units: 1,
        diagnosis_pointers: vec![1],
        service_date: day(),
        prior: None,
    }
}

/// A claim to the secondary payer, as `to_x12_claim` makes it: 58.00 + 60.49.
fn claim() -> Claim {
    Claim {
        claim_id: "C1".into(),
        total: Cents::new(11_849),
        place_of_service: "11".into(),
        frequency: Frequency::Original,
        diagnoses: vec!["E119".into()],
        subscriber: Subscriber {
            member_id: "W998877665".into(),
            last_name: "Fictivez".into(),
            first_name: "Rosa".into(),
            birth_date: NaiveDate::from_ymd_opt(1972, 5, 21).unwrap(),
            sex: Sex::Female,
            address: Address {
                line1: "1 Elm St".into(),
                line2: None,
                city: "Boston".into(),
                state: "MA".into(),
                zip: "02118".into(),
            },
            group_number: None,
            claim_filing_indicator: "CI".into(),
        },
        payer: Payer {
            name: "Aetna".into(),
            payer_id: "60054".into(),
            address: None,
        },
        rendering_provider: None,
        lines: vec![line("G0506", 5_800), line("99490", 6_049)],
        other_payer: None,
    }
}

fn adj(group: &str, reason: &str, cents: i64) -> PriorAdjustment {
    PriorAdjustment {
        group: group.into(),
        reason: reason.into(),
        amount: Cents::new(cents),
    }
}

/// Medicare paid 40 + 30, wrote off 18 (CO-45) and left 30.49 to the patient (PR-2).
fn prior() -> PriorPayer {
    PriorPayer {
        payer: PayerDetails {
            name: "Medicare Part B".into(),
            payer_id: "MEDICARE".into(),
            claim_filing_indicator: "MB".into(),
            timely_filing_days: Some(365),
            address: None,
        },
        member_id: " 3GJ6-VG7-PM94 ".into(),
        group_number: Some(" ".into()),
        adjustments: Vec::new(),
        lines: vec![
            PriorLine {
                paid: Cents::new(4_000),
                adjustments: vec![adj("CO", "45", 1_800)],
                date: day(),
            },
            PriorLine {
                paid: Cents::new(3_000),
                adjustments: vec![adj("PR", "2", 3_049)],
                date: day(),
            },
        ],
    }
}

#[test]
fn the_primary_adjudication_is_carried() {
    let mapped = with_prior_payer(claim(), &prior()).unwrap();
    let other = mapped.other_payer.as_ref().unwrap();
    assert_eq!(other.claim_filing_indicator, "MB");
    assert_eq!(other.paid, Cents::new(7_000));
    assert_eq!(other.member_id, "3GJ6-VG7-PM94");
    assert_eq!(other.group_number, None, "a blank group number is none");
    assert_eq!(other.payer.payer_id, "MEDICARE");
    assert!(other.adjustments.is_empty());
    type Triplet = (String, String, i64);
    let prior_lines: Vec<(i64, Vec<Triplet>)> = mapped
        .lines
        .iter()
        .map(|l| {
            let p = l.prior.as_ref().unwrap();
            (
                p.paid.cents(),
                p.adjustments
                    .iter()
                    .map(|a| (a.group.clone(), a.reason.clone(), a.amount.cents()))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        prior_lines,
        vec![
            (4_000, vec![("CO".into(), "45".into(), 1_800)]),
            (3_000, vec![("PR".into(), "2".into(), 3_049)]),
        ]
    );
    // The rest of the claim is untouched.
    let mut back = mapped.clone();
    back.other_payer = None;
    for l in &mut back.lines {
        l.prior = None;
    }
    assert_eq!(back, claim());
    // And the writer takes it.
    let text = crate::domain::x12::write_837p(&crate::domain::x12::Batch {
        envelope: crate::domain::x12::Envelope {
            sender_id: "SUB1".into(),
            receiver_id: "RCV1".into(),
            gs_sender: "S1".into(),
            gs_receiver: "R1".into(),
            usage: crate::domain::x12::Usage::Test,
            interchange_control: 1,
            group_control: 1,
            created: day().and_hms_opt(9, 0, 0).unwrap(),
        },
        submitter: crate::domain::x12::Submitter {
            name: "Acme".into(),
            id: "SUB1".into(),
            contact_name: "Jo".into(),
            phone: "6175550100".into(),
        },
        receiver: crate::domain::x12::Receiver {
            name: "House".into(),
            id: "RCV1".into(),
        },
        billing_provider: crate::domain::x12::BillingProvider {
            organization_name: "Acme".into(),
            npi: "1245319599".into(),
            ein: "123456789".into(),
            taxonomy: "103T00000X".into(),
            address: Address {
                line1: "100 Main St".into(),
                line2: None,
                city: "Boston".into(),
                state: "MA".into(),
                zip: "021181234".into(),
            },
            pay_to: None,
        },
        claims: vec![mapped],
    })
    .unwrap();
    assert!(text.contains("AMT*D*70~"), "{text}");
    crate::domain::pyx12::assert_accepted("cob-mapping.x12", &text);
}

#[test]
fn refusals_name_the_field() {
    type Change = fn(&mut PriorPayer);
    let cases: [(&str, Change, &str, &str); 8] = [
        (
            "unbalanced",
            |p| p.lines[1].adjustments.clear(),
            COB_NOT_BALANCED,
            "claim.prior_payer",
        ),
        (
            "a line missing",
            |p| {
                p.lines.pop();
            },
            COB_LINES_MISMATCH,
            "claim.prior_payer.lines",
        ),
        (
            "group code",
            |p| p.lines[0].adjustments[0].group = "XX".into(),
            COB_ADJUSTMENT_INVALID,
            "claim.prior_payer.lines[0].adjustments[0]",
        ),
        (
            "reason code",
            |p| p.adjustments.push(adj("CO", "45*1", 0)),
            COB_ADJUSTMENT_INVALID,
            "claim.prior_payer.adjustments[0]",
        ),
        (
            "negative payment",
            |p| {
                p.lines[0].paid = Cents::new(-1);
                p.lines[0].adjustments[0].amount = Cents::new(5_801);
            },
            COB_NOT_BALANCED,
            "claim.prior_payer.lines[0].paid",
        ),
        (
            "payer id",
            |p| p.payer.payer_id = "medicare!".into(),
            "PAYER_ID_INVALID",
            "claim.prior_payer.payer.payer_id",
        ),
        (
            "filing indicator",
            |p| p.payer.claim_filing_indicator = "QQ".into(),
            "CLAIM_FILING_INDICATOR_INVALID",
            "claim.prior_payer.payer.claim_filing_indicator",
        ),
        (
            "member id",
            |p| p.member_id = " ".into(),
            "SUBSCRIBER_MEMBER_ID_MISSING",
            "claim.prior_payer.subscriber.member_id",
        ),
    ];
    for (what, change, reason, field) in cases {
        let mut p = prior();
        change(&mut p);
        let error = with_prior_payer(claim(), &p).unwrap_err();
        assert_eq!(
            (error.reason, error.field.as_str()),
            (reason, field),
            "{what}"
        );
        assert!(
            !error.message.contains("3GJ6"),
            "{what}: no member id in messages"
        );
    }
}

#[test]
fn claim_level_adjustments_count_in_the_balance() {
    let mut p = prior();
    // The patient's share reported at claim level instead of on the line.
    p.lines[1].adjustments.clear();
    p.adjustments.push(adj("PR", "2", 3_049));
    let mapped = with_prior_payer(claim(), &p).unwrap();
    let other = mapped.other_payer.unwrap();
    assert_eq!(other.adjustments.len(), 1);
    assert!(
        mapped.lines[1]
            .prior
            .as_ref()
            .unwrap()
            .adjustments
            .is_empty()
    );
}

#![allow(clippy::unwrap_used)]
//! Mapping to the 837P input: the fields, the refusals, a property (scrubbed ⇒ maps and writes),
//! and the written file through pyx12 when `PM_X12VALID` is set.

use chrono::NaiveDate;
use proptest::prelude::*;

use super::*;
use crate::domain::claims::scrub::tests::{address, claim, context, today};
use crate::domain::claims::{ChargeLine, assemble, scrub};
use crate::domain::x12::{Envelope, Frequency, Receiver, Sex, Submitter, Usage, write_837p};

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn batch(claims: Vec<x12::Claim>, ctx: &ScrubContext) -> x12::Batch {
    x12::Batch {
        envelope: Envelope {
            sender_id: "SUBMITTER1".into(),
            receiver_id: "CLEARHOUSE".into(),
            gs_sender: "SUBMITTER1".into(),
            gs_receiver: "CLEARHOUSE".into(),
            usage: Usage::Test,
            interchange_control: 42,
            group_control: 7,
            created: date(2026, 12, 5).and_hms_opt(15, 33, 0).unwrap(),
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
        billing_provider: to_x12_billing_provider(ctx).unwrap(),
        claims,
    }
}

#[test]
fn maps_the_claim() {
    let mapped = to_x12_claim(&claim(), &context(), "PM-1").unwrap();
    assert_eq!(mapped.claim_id, "PM-1");
    assert_eq!(mapped.total, Cents::new(17_550));
    assert_eq!(mapped.place_of_service, "11");
    assert_eq!(mapped.frequency, Frequency::Original);
    assert_eq!(mapped.diagnoses, ["F329", "F411", "Z630"]);
    let lines: Vec<_> = mapped
        .lines
        .iter()
        .map(|l| {
            (
                l.code.as_str(),
                l.modifiers.clone(),
                l.charge,
                l.units,
                l.diagnosis_pointers.clone(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("90837", vec![], Cents::new(15_000), 1, vec![1, 2]),
            (
                "90785",
                vec!["95".to_string(), "GT".to_string()],
                Cents::new(2_550),
                2,
                vec![2, 3]
            ),
        ]
    );
    let s = &mapped.subscriber;
    assert_eq!(
        (s.first_name.as_str(), s.last_name.as_str()),
        ("Zoe", "Munoz"),
        "transliterated"
    );
    assert_eq!(
        (s.member_id.as_str(), s.birth_date, s.sex),
        ("MEM001", date(1980, 2, 29), Sex::Female)
    );
    assert_eq!(s.claim_filing_indicator, "CI");
    assert_eq!(s.group_number.as_deref(), Some("GRP100"));
    assert_eq!(s.address, address("1 Elm St", "62701"));
    assert_eq!(
        (mapped.payer.name.as_str(), mapped.payer.payer_id.as_str()),
        ("Acme Health Plan", "60054")
    );
    let rendering = mapped.rendering_provider.unwrap();
    assert_eq!(
        (rendering.npi.as_str(), rendering.last_name.as_str()),
        ("1234567893", "Smith")
    );
    assert!(
        mapped
            .lines
            .iter()
            .all(|l| l.service_date == date(2026, 11, 2))
    );
}

#[test]
fn billing_provider_carries_the_ein_digits() {
    let provider = to_x12_billing_provider(&context()).unwrap();
    assert_eq!(provider.ein, "123456789");
    assert_eq!(provider.npi, "1245319599");
    assert_eq!(provider.address.zip, "627011234");
    let mut ctx = context();
    ctx.billing_entity = None;
    assert_eq!(
        to_x12_billing_provider(&ctx).unwrap_err().reason,
        BILLING_ENTITY_MISSING
    );
}

#[test]
fn rendering_loop_only_for_someone_else() {
    let mut ctx = context();
    ctx.rendering_provider = None;
    assert_eq!(
        to_x12_claim(&claim(), &ctx, "PM-1")
            .unwrap()
            .rendering_provider,
        None
    );
    let mut ctx = context();
    ctx.rendering_provider.as_mut().unwrap().npi = "1245319599".into();
    assert_eq!(
        to_x12_claim(&claim(), &ctx, "PM-1")
            .unwrap()
            .rendering_provider,
        None
    );
}

#[test]
fn refuses_a_bad_claim_id_or_an_unscrubbed_claim() {
    for bad in ["", "  ", "PM*1", "PM~1", &"X".repeat(39), "PMé"] {
        let error = to_x12_claim(&claim(), &context(), bad).unwrap_err();
        assert_eq!(
            (error.reason, error.field.as_str()),
            (CLAIM_ID_INVALID, "claim_id"),
            "{bad:?}"
        );
    }
    assert!(to_x12_claim(&claim(), &context(), &"X".repeat(38)).is_ok());
    let mut ctx = context();
    ctx.subscriber = None;
    ctx.payer.as_mut().unwrap().payer_id = "x".into();
    // The first failure, in the scrubber's order.
    let error = to_x12_claim(&claim(), &ctx, "PM-1").unwrap_err();
    assert_eq!(
        (error.reason, error.field.as_str()),
        ("PAYER_ID_INVALID", "claim.payer.payer_id")
    );
    // Batch-level and date rules are the scrubber's, not the mapping's.
    let mut ctx = context();
    ctx.billing_entity = None;
    ctx.payer.as_mut().unwrap().timely_filing_days = Some(1);
    assert!(to_x12_claim(&claim(), &ctx, "PM-1").is_ok());
}

#[test]
fn written_as_an_837p() {
    let ctx = context();
    let mut void = claim();
    void.frequency = Frequency::Void {
        payer_claim_number: "PAYERCLM9".into(),
    };
    let claims = vec![
        to_x12_claim(&claim(), &ctx, "PM-1").unwrap(),
        to_x12_claim(&void, &ctx, "PM-2").unwrap(),
    ];
    let text = write_837p(&batch(claims, &ctx)).unwrap();
    for expected in [
        "CLM*PM-1*175.5***11:B:1*Y*A*Y*Y~",
        "CLM*PM-2*175.5***11:B:8*Y*A*Y*Y~",
        "REF*F8*PAYERCLM9~",
        "HI*ABK:F329*ABF:F411*ABF:Z630~",
        "NM1*IL*1*MUNOZ*ZOE****MI*MEM001~",
        "NM1*82*1*SMITH*ANN****XX*1234567893~",
        "SV1*HC:90785:95:GT*25.5*UN*2***2:3~",
        "REF*EI*123456789~",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
    pyx12("claims", &text);
}

#[test]
fn an_assembled_batch_passes_pyx12() {
    // 60 lines, 14 distinct diagnoses: assembly cuts them into several claims.
    let lines: Vec<ChargeLine> = (0..60u32)
        .map(|i| ChargeLine {
            diagnoses: vec![format!("F4{}.{}", i % 7, i % 2), "Z63.0".into()],
            modifiers: if i % 3 == 0 {
                vec!["95".into()]
            } else {
                vec![]
            },
            units: 1 + i32::try_from(i % 2).unwrap(),
            amount: Cents::new(10_000 + i64::from(i)),
            ..claim().lines[0].line.clone()
        })
        .enumerate()
        .map(|(i, line)| ChargeLine {
            charge: format!("charges/{i:02}"),
            ..line
        })
        .collect();
    let out = assemble(&lines, &[], &[], &|_, _| false);
    assert!(out.claims.len() >= 2);
    let ctx = context();
    let claims = out
        .claims
        .iter()
        .enumerate()
        .map(|(i, c)| {
            assert_eq!(scrub(c, &ctx, today()), vec![]);
            to_x12_claim(c, &ctx, &format!("PM-{i}")).unwrap()
        })
        .collect();
    let text = write_837p(&batch(claims, &ctx)).unwrap();
    pyx12("assembled", &text);
}

/// pyx12 accepts `text` (see [`crate::domain::pyx12`]).
fn pyx12(name: &str, text: &str) {
    crate::domain::pyx12::assert_accepted(&format!("{name}.x12"), text);
}

fn arbitrary_line() -> impl Strategy<Value = ChargeLine> {
    (
        prop::sample::select(vec!["90834", "90837", "99213", "G0506", "0001F"]),
        prop::sample::subsequence(vec!["25", "GT", "95", "59", "XE"], 0..=4),
        1i32..5,
        prop::collection::vec(0u8..30, 1..=4),
        0i64..50_000,
        prop::sample::select(vec!["11", "02"]),
        0usize..2,
    )
        .prop_map(
            |(code, modifiers, units, dx, amount, pos, provider)| ChargeLine {
                charge: String::new(),
                patient: "patients/p1".into(),
                unit: "units/east".into(),
                provider: format!("providers/{provider}"),
                payer: "payers/acme".into(),
                billing_entity: "entities/acme".into(),
                contract: String::new(),
                claim_form: "CMS1500".into(),
                code: code.into(),
                modifiers: modifiers.into_iter().map(String::from).collect(),
                units,
                diagnoses: dx
                    .iter()
                    .map(|d| format!("F{}.{}", 10 + d, d % 10))
                    .collect(),
                service_date: date(2026, 11, 2),
                place_of_service: pos.into(),
                amount: Cents::new(amount),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever valid charges come in, each assembled claim scrubs clean, maps, and the batch
    /// writes: the assembly never builds a claim the writer would refuse.
    #[test]
    fn assembled_claims_scrub_map_and_write(lines in prop::collection::vec(arbitrary_line(), 1..80)) {
        let lines: Vec<ChargeLine> = lines
            .into_iter()
            .enumerate()
            .map(|(i, line)| ChargeLine { charge: format!("charges/{i:03}"), ..line })
            .collect();
        let out = assemble(&lines, &[], &[], &|_, _| false);
        let ctx = context();
        let mut mapped = Vec::new();
        for (i, claim) in out.claims.iter().enumerate() {
            prop_assert_eq!(scrub(claim, &ctx, today()), vec![]);
            mapped.push(to_x12_claim(claim, &ctx, &format!("PM-{i}")).unwrap());
        }
        let text = write_837p(&batch(mapped, &ctx));
        prop_assert!(text.is_ok(), "{:?}", text.err());
    }
}

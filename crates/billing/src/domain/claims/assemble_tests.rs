#![allow(clippy::unwrap_used)]
//! Assembly: routing, set-aside lines, grouping and packing, pointers, split claims, order.

use chrono::NaiveDate;
use proptest::prelude::*;

use super::*;
use crate::domain::claims::{ChargeLine, ContractTerms, RoutingRule};

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// Units: `clinic` contains `clinic/east` and `clinic/west`; `other` stands alone.
fn tree(unit: &str, ancestor: &str) -> bool {
    unit.starts_with(&format!("{ancestor}/"))
}

pub(crate) fn charge(name: &str) -> ChargeLine {
    ChargeLine {
        charge: name.into(),
        patient: "patients/p1".into(),
        unit: "clinic/east".into(),
        provider: "providers/ann".into(),
        payer: "payers/acme".into(),
        billing_entity: "entities/profile".into(),
        contract: String::new(),
        claim_form: "CMS1500".into(),
        code: "90834".into(),
        modifiers: Vec::new(),
        units: 1,
        diagnoses: vec!["F32.9".into()],
        service_date: date(2026, 11, 2),
        place_of_service: "11".into(),
        amount: Cents::new(12_000),
    }
}

fn rule(code: Option<&str>, unit: Option<&str>, payer: Option<&str>, entity: &str) -> RoutingRule {
    RoutingRule {
        code: code.map(String::from),
        unit: unit.map(String::from),
        payer: payer.map(String::from),
        billing_entity: entity.into(),
        reason: format!("to {entity}"),
    }
}

fn contract(
    name: &str,
    units: &[&str],
    from: NaiveDate,
    until: Option<NaiveDate>,
) -> ContractTerms {
    ContractTerms {
        name: name.into(),
        payer: "payers/acme".into(),
        billing_entity: format!("entities/{name}"),
        units: units.iter().map(|u| u.to_string()).collect(),
        from,
        until,
    }
}

fn routing_of(line: &ChargeLine, contracts: &[ContractTerms], rules: &[RoutingRule]) -> Routing {
    let out = assemble(std::slice::from_ref(line), contracts, rules, &tree);
    out.claims[0].lines[0].routing.clone()
}

#[test]
fn routing_rules_most_specific_first_then_order() {
    let line = charge("charges/1");
    let by_rule = |entity: &str| Routing {
        entity: format!("entities/{entity}"),
        because: RoutedBy::Rule(format!("to entities/{entity}")),
    };
    let all = rule(
        Some("90834"),
        Some("clinic"),
        Some("payers/acme"),
        "entities/all3",
    );
    let code_unit = rule(Some("90834"), Some("clinic/east"), None, "entities/cu");
    let unit_payer = rule(None, Some("clinic"), Some("payers/acme"), "entities/up");
    let code = rule(Some("90834"), None, None, "entities/code");
    let payer = rule(None, None, Some("payers/acme"), "entities/payer");
    let other_code = rule(Some("99213"), None, None, "entities/nope");
    let other_unit = rule(None, Some("other"), Some("payers/acme"), "entities/nope");
    let empty = rule(None, None, None, "entities/nope");
    let cases: Vec<(Vec<RoutingRule>, Routing)> = vec![
        (
            vec![code.clone(), all.clone(), code_unit.clone()],
            by_rule("all3"),
        ),
        (
            vec![code.clone(), code_unit.clone(), unit_payer.clone()],
            by_rule("cu"),
        ),
        (vec![unit_payer.clone(), code_unit.clone()], by_rule("up")),
        (vec![payer.clone(), code.clone()], by_rule("payer")),
        (vec![code.clone(), payer.clone()], by_rule("code")),
        (
            vec![other_code.clone(), other_unit.clone(), code.clone()],
            by_rule("code"),
        ),
        // A rule with no condition is ignored; non-matching rules fall through to the profile.
        (
            vec![empty, other_code],
            Routing {
                entity: "entities/profile".into(),
                because: RoutedBy::Profile,
            },
        ),
    ];
    for (rules, expected) in cases {
        assert_eq!(routing_of(&line, &[], &rules), expected, "{rules:?}");
    }
}

#[test]
fn rules_beat_contracts_beat_profile() {
    let line = charge("charges/1");
    let c = contract("mcr", &["clinic"], date(2026, 1, 1), None);
    let r = rule(None, None, Some("payers/acme"), "entities/ruled");
    assert_eq!(
        routing_of(&line, std::slice::from_ref(&c), &[r]).entity,
        "entities/ruled"
    );
    assert_eq!(
        routing_of(&line, &[c], &[]),
        Routing {
            entity: "entities/mcr".into(),
            because: RoutedBy::Contract("mcr".into())
        }
    );
}

#[test]
fn contract_must_be_in_force_for_the_payer_and_cover_the_unit() {
    let dos = date(2026, 11, 2);
    let cases = [
        (contract("c", &["clinic"], dos, None), true),
        (
            contract(
                "c",
                &["clinic/east"],
                date(2026, 1, 1),
                Some(date(2026, 11, 3)),
            ),
            true,
        ),
        // `until` is the first day no longer in force.
        (
            contract("c", &["clinic"], date(2026, 1, 1), Some(dos)),
            false,
        ),
        (contract("c", &["clinic"], date(2026, 11, 3), None), false),
        (
            contract("c", &["clinic/west", "other"], date(2026, 1, 1), None),
            false,
        ),
        (
            ContractTerms {
                payer: "payers/other".into(),
                ..contract("c", &["clinic"], dos, None)
            },
            false,
        ),
    ];
    for (terms, applies) in cases {
        let routed = routing_of(&charge("charges/1"), std::slice::from_ref(&terms), &[]);
        assert_eq!(
            routed.because == RoutedBy::Contract("c".into()),
            applies,
            "{terms:?}"
        );
    }
}

#[test]
fn the_lines_named_contract_wins_among_matching_ones() {
    let start = date(2026, 1, 1);
    let first = contract("first", &["clinic"], start, None);
    let named = contract("named", &["clinic"], start, None);
    let mut line = charge("charges/1");
    assert_eq!(
        routing_of(&line, &[first.clone(), named.clone()], &[]).entity,
        "entities/first"
    );
    line.contract = "named".into();
    assert_eq!(
        routing_of(&line, &[first, named], &[]).entity,
        "entities/named"
    );
}

#[test]
fn self_pay_invoiced_and_ub04_are_not_claimed() {
    let with = |name: &str, payer: &str, form: &str| ChargeLine {
        payer: payer.into(),
        claim_form: form.into(),
        ..charge(name)
    };
    let lines = vec![
        with("charges/1", "", "CMS1500"),
        with("charges/2", "payers/acme", "NONE"),
        with("charges/3", "payers/acme", "UB04"),
        with("charges/4", "payers/acme", "CMS1500"),
        with("charges/5", "payers/acme", "UNSPECIFIED"),
        with("charges/6", "payers/acme", "cms1500"),
        with("charges/7", "", "UB04"),
    ];
    let out = assemble(&lines, &[], &[], &tree);
    let reasons = |set: &[SetAside]| {
        set.iter()
            .map(|s| (s.line.charge.clone(), s.reason))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        reasons(&out.not_claimed),
        [
            ("charges/1".to_string(), SELF_PAY),
            ("charges/2".to_string(), INVOICED_NOT_CLAIMED),
            ("charges/7".to_string(), SELF_PAY),
        ]
    );
    assert_eq!(
        reasons(&out.held),
        [
            ("charges/3".to_string(), CLAIM_FORM_UB04_NOT_SUPPORTED),
            ("charges/6".to_string(), CLAIM_FORM_UNKNOWN),
        ]
    );
    assert_eq!(out.claims.len(), 1);
    let claimed: Vec<_> = out.claims[0]
        .lines
        .iter()
        .map(|l| l.line.charge.as_str())
        .collect();
    assert_eq!(claimed, ["charges/4", "charges/5"]);
}

#[test]
fn groups_by_entity_payer_patient_date_then_provider_and_place() {
    let base = charge("charges/0");
    let lines = vec![
        base.clone(),
        ChargeLine {
            charge: "charges/1".into(),
            ..base.clone()
        },
        ChargeLine {
            charge: "charges/2".into(),
            patient: "patients/p2".into(),
            ..base.clone()
        },
        ChargeLine {
            charge: "charges/3".into(),
            payer: "payers/zeta".into(),
            ..base.clone()
        },
        ChargeLine {
            charge: "charges/4".into(),
            service_date: date(2026, 11, 3),
            ..base.clone()
        },
        ChargeLine {
            charge: "charges/5".into(),
            billing_entity: "entities/b".into(),
            ..base.clone()
        },
        ChargeLine {
            charge: "charges/6".into(),
            provider: "providers/bob".into(),
            ..base.clone()
        },
        ChargeLine {
            charge: "charges/7".into(),
            place_of_service: "02".into(),
            ..base.clone()
        },
    ];
    let out = assemble(&lines, &[], &[], &tree);
    let shape: Vec<Vec<&str>> = out
        .claims
        .iter()
        .map(|c| c.lines.iter().map(|l| l.line.charge.as_str()).collect())
        .collect();
    // Sorted by (entity, payer, patient, date, provider, place of service).
    assert_eq!(
        shape,
        vec![
            vec!["charges/5"],
            vec!["charges/7"],
            vec!["charges/0", "charges/1"],
            vec!["charges/6"],
            vec!["charges/4"],
            vec!["charges/2"],
            vec!["charges/3"],
        ]
    );
    let first = &out.claims[2];
    assert_eq!(first.total, Cents::new(24_000));
    assert_eq!(
        (first.provider.as_str(), first.place_of_service.as_str()),
        ("providers/ann", "11")
    );
    assert_eq!(first.frequency, Frequency::Original);
}

#[test]
fn fifty_lines_per_claim() {
    let lines: Vec<ChargeLine> = (0..101)
        .map(|i| charge(&format!("charges/{i:03}")))
        .collect();
    let out = assemble(&lines, &[], &[], &tree);
    let sizes: Vec<(usize, usize)> = out.claims.iter().map(|c| (c.part, c.lines.len())).collect();
    assert_eq!(sizes, [(0, 50), (1, 50), (2, 1)]);
    assert!(out.claims.iter().all(|c| c.key == out.claims[0].key));
    assert_eq!(out.claims[2].lines[0].line.charge, "charges/100");
}

#[test]
fn twelve_diagnoses_per_claim_and_pointers_per_claim() {
    // Line i has diagnoses F40+i and F40+i+1: 13 lines bring 14 distinct codes.
    let lines: Vec<ChargeLine> = (0..13)
        .map(|i| ChargeLine {
            diagnoses: vec![format!("F4{i:02}"), format!("F4{:02}", i + 1)],
            ..charge(&format!("charges/{i:02}"))
        })
        .collect();
    let out = assemble(&lines, &[], &[], &tree);
    assert_eq!(out.claims.len(), 2);
    let (a, b) = (&out.claims[0], &out.claims[1]);
    assert_eq!(a.diagnoses.len(), 12);
    assert_eq!(a.lines.len(), 11, "line 11 would bring a 13th code");
    assert_eq!(a.diagnoses[0], "F40.0", "normalised to the dotted form");
    assert_eq!(a.lines[3].diagnosis_pointers, [4, 5]);
    assert_eq!(b.diagnoses, ["F41.1", "F41.2", "F41.3"]);
    assert_eq!(b.lines[0].diagnosis_pointers, [1, 2]);
    assert_eq!(b.lines[1].diagnosis_pointers, [2, 3]);
}

#[test]
fn shared_and_repeated_diagnoses_share_a_position() {
    let lines = vec![
        ChargeLine {
            diagnoses: vec!["F32.9".into(), "F41.1".into()],
            ..charge("charges/1")
        },
        ChargeLine {
            diagnoses: vec!["F411".into(), "Z63.0".into(), "F41.1".into()],
            ..charge("charges/2")
        },
    ];
    let out = assemble(&lines, &[], &[], &tree);
    let claim = &out.claims[0];
    assert_eq!(claim.diagnoses, ["F32.9", "F41.1", "Z63.0"]);
    assert_eq!(claim.lines[0].diagnosis_pointers, [1, 2]);
    assert_eq!(claim.lines[1].diagnosis_pointers, [2, 3]);
}

#[test]
fn split_encounter_notes_its_sibling_claims() {
    // One encounter (p1, 2026-11-02, clinic/east): 90785 goes to a carve-out entity by rule, one
    // line to another payer, the rest to the profile's entity; another unit's line of the same
    // day, or another patient's, is not part of it.
    let carve = rule(Some("90785"), None, None, "entities/carve");
    let lines = vec![
        charge("charges/1"),
        ChargeLine {
            code: "90785".into(),
            ..charge("charges/2")
        },
        ChargeLine {
            unit: "other".into(),
            payer: "payers/zeta".into(),
            ..charge("charges/3")
        },
        ChargeLine {
            patient: "patients/p2".into(),
            ..charge("charges/4")
        },
        ChargeLine {
            payer: "payers/beta".into(),
            ..charge("charges/5")
        },
    ];
    let out = assemble(&lines, &[], &[carve], &tree);
    let key = |entity: &str, payer: &str| ClaimKey {
        billing_entity: entity.into(),
        payer: payer.into(),
        patient: "patients/p1".into(),
        service_date: date(2026, 11, 2),
    };
    let by_charge = |name: &str| {
        out.claims
            .iter()
            .find(|c| c.lines.iter().any(|l| l.line.charge == name))
            .unwrap()
    };
    let (carved, profile, beta) = (
        key("entities/carve", "payers/acme"),
        key("entities/profile", "payers/acme"),
        key("entities/profile", "payers/beta"),
    );
    assert_eq!(
        by_charge("charges/1").split_from,
        [carved.clone(), beta.clone()]
    );
    assert_eq!(by_charge("charges/2").split_from, [profile.clone(), beta]);
    assert_eq!(by_charge("charges/5").split_from, [carved, profile]);
    assert!(
        by_charge("charges/3").split_from.is_empty(),
        "another unit: another encounter"
    );
    assert!(by_charge("charges/4").split_from.is_empty());
}

#[test]
fn overflow_parts_of_one_key_are_not_splits() {
    let lines: Vec<ChargeLine> = (0..51)
        .map(|i| charge(&format!("charges/{i:02}")))
        .collect();
    let out = assemble(&lines, &[], &[], &tree);
    assert_eq!(out.claims.len(), 2);
    assert!(out.claims.iter().all(|c| c.split_from.is_empty()));
}

#[test]
fn input_order_does_not_matter() {
    let mut lines: Vec<ChargeLine> = (0..30)
        .map(|i| ChargeLine {
            patient: format!("patients/p{}", i % 3),
            diagnoses: vec![format!("F4{}", i % 14)],
            ..charge(&format!("charges/{i:02}"))
        })
        .collect();
    let forward = assemble(&lines, &[], &[], &tree);
    lines.reverse();
    assert_eq!(assemble(&lines, &[], &[], &tree), forward);
}

fn arbitrary_line() -> impl Strategy<Value = ChargeLine> {
    (
        0usize..3,
        prop::sample::select(vec!["", "payers/acme", "payers/zeta"]),
        prop::sample::select(vec!["CMS1500", "UB04", "NONE", "UNSPECIFIED", "X"]),
        prop::collection::vec(0u8..20, 0..5),
        0u32..3,
        0i64..100_000,
        prop::sample::select(vec!["clinic/east", "clinic/west", "other"]),
    )
        .prop_map(|(patient, payer, form, dx, day, amount, unit)| ChargeLine {
            patient: format!("patients/p{patient}"),
            payer: payer.into(),
            claim_form: form.into(),
            diagnoses: dx.iter().map(|d| format!("F{:02}", 10 + d)).collect(),
            service_date: date(2026, 11, 1 + day),
            amount: Cents::new(amount),
            unit: unit.into(),
            ..charge("charges/renamed")
        })
}

proptest! {
    #[test]
    fn every_line_lands_once_and_totals_add_up(
        lines in prop::collection::vec(arbitrary_line(), 0..150),
    ) {
        // Charge names are unique resource names: scramble the index so input order is not
        // name order (7919 and the prime 10007 are coprime, so no name repeats).
        let lines: Vec<ChargeLine> = lines
            .into_iter()
            .enumerate()
            .map(|(i, line)| ChargeLine { charge: format!("charges/{:05}", i * 7919 % 10007), ..line })
            .collect();
        let rules = [rule(None, Some("clinic/west"), None, "entities/west")];
        let contracts = [contract("zeta", &["other"], date(2026, 11, 2), None)];
        let contracts = [ContractTerms { payer: "payers/zeta".into(), ..contracts[0].clone() }];
        let out = assemble(&lines, &contracts, &rules, &tree);
        let mut seen: Vec<&str> = out.claims.iter()
            .flat_map(|c| c.lines.iter().map(|l| l.line.charge.as_str()))
            .chain(out.not_claimed.iter().map(|s| s.line.charge.as_str()))
            .chain(out.held.iter().map(|s| s.line.charge.as_str()))
            .collect();
        let mut expected: Vec<&str> = lines.iter().map(|l| l.charge.as_str()).collect();
        seen.sort_unstable();
        expected.sort_unstable();
        prop_assert_eq!(seen, expected);
        for claim in &out.claims {
            let sum: Cents = claim.lines.iter().map(|l| l.line.amount).sum();
            prop_assert_eq!(claim.total, sum);
            prop_assert!(!claim.lines.is_empty() && claim.lines.len() <= MAX_CLAIM_LINES);
            prop_assert!(claim.diagnoses.len() <= MAX_CLAIM_DIAGNOSES);
            for line in &claim.lines {
                prop_assert_eq!(&line.routing.entity, &claim.key.billing_entity);
                prop_assert_eq!(&line.line.payer, &claim.key.payer);
                for &p in &line.diagnosis_pointers {
                    prop_assert!(p >= 1 && usize::from(p) <= claim.diagnoses.len());
                }
            }
        }
        // Deterministic, and independent of the input order.
        let mut reversed = lines.clone();
        reversed.reverse();
        prop_assert_eq!(assemble(&reversed, &contracts, &rules, &tree), out);
    }
}

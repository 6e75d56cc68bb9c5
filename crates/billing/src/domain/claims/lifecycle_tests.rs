#![allow(clippy::unwrap_used)]
//! Every (state, action) pair, the remittance amounts, and claim frequencies.

use super::*;
use ClaimAction as A;
use ClaimState as S;

const STATES: [ClaimState; 10] = [
    S::Draft,
    S::Ready,
    S::Submitted,
    S::Accepted,
    S::Rejected,
    S::Paid,
    S::PartiallyPaid,
    S::Denied,
    S::Void,
    S::Replaced,
];

fn remit(paid: i64, billed: i64) -> ClaimAction {
    A::Remit {
        paid: Cents::new(paid),
        billed: Cents::new(billed),
    }
}

/// Actions, in the column order of the table below.
fn actions() -> [ClaimAction; 11] {
    [
        A::Scrubbed { ok: true },
        A::Scrubbed { ok: false },
        A::Submit,
        A::Acknowledge { accepted: true },
        A::Acknowledge { accepted: false },
        remit(100, 100),
        remit(40, 100),
        remit(0, 100),
        A::Reopen,
        A::Void,
        A::Correct,
    ]
}

#[test]
fn every_state_and_action() {
    // `None`: refused with CLAIM_STATE_INVALID. Columns as in `actions()`.
    let x: Option<ClaimState> = None;
    let table: [(ClaimState, [Option<ClaimState>; 11]); 10] = [
        (
            S::Draft,
            [Some(S::Ready), Some(S::Draft), x, x, x, x, x, x, x, x, x],
        ),
        (
            S::Ready,
            [
                Some(S::Ready),
                Some(S::Draft),
                Some(S::Submitted),
                x,
                x,
                x,
                x,
                x,
                x,
                x,
                x,
            ],
        ),
        (
            S::Submitted,
            [
                x,
                x,
                x,
                Some(S::Accepted),
                Some(S::Rejected),
                Some(S::Paid),
                Some(S::PartiallyPaid),
                Some(S::Denied),
                x,
                Some(S::Void),
                Some(S::Replaced),
            ],
        ),
        (
            S::Accepted,
            [
                x,
                x,
                x,
                x,
                x,
                Some(S::Paid),
                Some(S::PartiallyPaid),
                Some(S::Denied),
                x,
                Some(S::Void),
                Some(S::Replaced),
            ],
        ),
        (
            S::Rejected,
            [
                Some(S::Ready),
                Some(S::Rejected),
                x,
                x,
                x,
                x,
                x,
                x,
                Some(S::Draft),
                x,
                x,
            ],
        ),
        (
            S::Paid,
            [x, x, x, x, x, x, x, x, x, Some(S::Void), Some(S::Replaced)],
        ),
        (
            S::PartiallyPaid,
            [x, x, x, x, x, x, x, x, x, Some(S::Void), Some(S::Replaced)],
        ),
        (
            S::Denied,
            [x, x, x, x, x, x, x, x, x, Some(S::Void), Some(S::Replaced)],
        ),
        (S::Void, [x; 11]),
        (S::Replaced, [x; 11]),
    ];
    assert_eq!(table.map(|(s, _)| s), STATES, "every state is covered once");
    for (state, row) in table {
        for (action, expected) in actions().into_iter().zip(row) {
            let got = apply(state, action);
            match expected {
                Some(next) => assert_eq!(got, Ok(next), "{state:?} + {action:?}"),
                None => {
                    let error = got.unwrap_err();
                    assert_eq!(error.reason, CLAIM_STATE_INVALID, "{state:?} + {action:?}");
                    assert_eq!(error.field, "state");
                    assert!(
                        error.message.contains(&format!("{state:?}")),
                        "{}",
                        error.message
                    );
                    assert!(error.message.contains(action.name()), "{}", error.message);
                }
            }
        }
    }
}

#[test]
fn remittance_amounts_must_make_sense() {
    let cases = [
        (remit(101, 100), Err(REMIT_AMOUNT_INVALID)),
        (remit(-1, 100), Err(REMIT_AMOUNT_INVALID)),
        (remit(0, 0), Err(REMIT_AMOUNT_INVALID)),
        (remit(0, -5), Err(REMIT_AMOUNT_INVALID)),
        (remit(1, 100), Ok(S::PartiallyPaid)),
        (remit(99, 100), Ok(S::PartiallyPaid)),
        (remit(1, 1), Ok(S::Paid)),
    ];
    for (action, expected) in cases {
        for state in [S::Submitted, S::Accepted] {
            let got = apply(state, action).map_err(|e| e.reason);
            assert_eq!(got, expected, "{state:?} + {action:?}");
        }
    }
    // The state is checked first: a bad remittance on a draft is a state error.
    assert_eq!(
        apply(S::Draft, remit(-1, 0)).unwrap_err().reason,
        CLAIM_STATE_INVALID
    );
}

#[test]
fn remittance_messages_do_not_show_amounts() {
    let error = apply(S::Accepted, remit(12_345, 100)).unwrap_err();
    assert!(!error.message.contains("123"), "{}", error.message);
}

/// `frequency_for`'s arguments: submitted, corrected, void, payer claim number.
type FrequencyArgs = (bool, bool, bool, &'static str);

#[test]
fn frequencies() {
    let void = |n: &str| Frequency::Void {
        payer_claim_number: n.into(),
    };
    let corrected = |n: &str| Frequency::Corrected {
        payer_claim_number: n.into(),
    };
    let cases: [(FrequencyArgs, Result<Frequency, &str>); 8] = [
        ((false, false, false, ""), Ok(Frequency::Original)),
        ((true, false, false, "PCN1"), Ok(Frequency::Original)),
        ((true, true, false, "PCN1"), Ok(corrected("PCN1"))),
        ((true, false, true, " PCN1 "), Ok(void("PCN1"))),
        ((true, true, true, "PCN1"), Ok(void("PCN1"))),
        ((false, true, false, "PCN1"), Err(FREQUENCY_NOT_SUBMITTED)),
        ((false, false, true, "PCN1"), Err(FREQUENCY_NOT_SUBMITTED)),
        ((true, true, false, "  "), Err(PAYER_CLAIM_NUMBER_MISSING)),
    ];
    for ((submitted, corr, voided, number), expected) in cases {
        let got = frequency_for(submitted, corr, voided, number).map_err(|e| e.reason);
        assert_eq!(got, expected, "{submitted} {corr} {voided} {number:?}");
    }
}

/// `amend`: every state, both amendments, with and without a payer claim number, and a void copy.
#[test]
fn amendments() {
    use Amendment::{Correct, Void};
    let corrected = |n: &str| Frequency::Corrected {
        payer_claim_number: n.into(),
    };
    let void = |n: &str| Frequency::Void {
        payer_claim_number: n.into(),
    };
    let held = [
        S::Submitted,
        S::Accepted,
        S::Paid,
        S::PartiallyPaid,
        S::Denied,
    ];
    for state in STATES {
        for (amendment, frequency, to) in [
            (Correct, corrected("PCN1"), S::Replaced),
            (Void, void("PCN1"), S::Void),
        ] {
            let got = amend(state, 1, " PCN1 ", amendment);
            let expected = if held.contains(&state) {
                Ok(Amended {
                    frequency,
                    original_to: to,
                })
            } else if matches!(state, S::Draft | S::Ready | S::Rejected) {
                Err(FREQUENCY_NOT_SUBMITTED)
            } else {
                Err(CLAIM_STATE_INVALID)
            };
            assert_eq!(
                got.map_err(|e| e.reason),
                expected,
                "{state:?} {amendment:?}"
            );
            // Without the payer's claim number: the state is judged first.
            let missing = amend(state, 1, "  ", amendment).map_err(|e| e.reason);
            let expected = match expected {
                Ok(_) => Err(PAYER_CLAIM_NUMBER_MISSING),
                Err(reason) => Err(reason),
            };
            assert_eq!(
                missing.map(|_| ()),
                expected.map(|_: ()| ()),
                "{state:?} {amendment:?}"
            );
        }
    }
    // A void copy (frequency 8) is neither corrected nor voided again.
    for amendment in [Correct, Void] {
        assert_eq!(
            amend(S::Submitted, 8, "PCN1", amendment)
                .unwrap_err()
                .reason,
            CLAIM_STATE_INVALID
        );
    }
    // A corrected claim (frequency 7) the payer holds can be corrected again.
    assert_eq!(
        amend(S::Paid, 7, "PCN2", Correct).unwrap().frequency,
        corrected("PCN2")
    );
}

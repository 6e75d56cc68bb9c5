//! A claim's lifecycle as a pure transition function: the service loads the state, applies the
//! action, and stores the result (or returns the refusal).
//!
//! ```text
//! Draft ──Scrubbed{ok}──▶ Ready ──Submit──▶ Submitted ──Acknowledge──▶ Accepted | Rejected
//!   ▲                       │ Scrubbed{!ok}                │ Remit           │ Remit
//!   └───────────────────────┘                              ▼                 ▼
//! Rejected ──Reopen──▶ Draft          Paid | PartiallyPaid | Denied  (paid = billed | less | 0)
//! Rejected ──Scrubbed{ok}──▶ Ready
//! Submitted, Accepted, Paid, PartiallyPaid, Denied ──Void──▶ Void (sent as frequency 8)
//! Submitted, Accepted, Paid, PartiallyPaid, Denied ──Correct──▶ Replaced (by a frequency-7 claim)
//! ```
//!
//! [`amend()`] decides a correction or void as a whole: whether the claim may be amended, the
//! frequency of the new claim, and the state the original moves to.

use std::fmt;

use crate::domain::invalid::Invalid;
use crate::domain::money::Cents;
use crate::domain::x12::Frequency;

/// Reason: the action is not allowed in the claim's current state.
pub const CLAIM_STATE_INVALID: &str = "CLAIM_STATE_INVALID";
/// Reason: a remittance's amounts make no sense (billed not positive, paid negative or above
/// billed).
pub const REMIT_AMOUNT_INVALID: &str = "REMIT_AMOUNT_INVALID";
/// Reason: a correction or void of a claim that was never submitted.
pub const FREQUENCY_NOT_SUBMITTED: &str = "FREQUENCY_NOT_SUBMITTED";
/// Reason: a correction or void without the payer's claim number (REF*F8).
pub const PAYER_CLAIM_NUMBER_MISSING: &str = "PAYER_CLAIM_NUMBER_MISSING";

/// Where a claim is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClaimState {
    /// Assembled, not (or not successfully) scrubbed.
    Draft,
    /// Scrubbed clean: can be submitted.
    Ready,
    /// Sent to the clearinghouse.
    Submitted,
    /// The payer accepted it for adjudication (277CA / 999 accepted).
    Accepted,
    /// Refused before adjudication; fix and resubmit.
    Rejected,
    /// Paid in full.
    Paid,
    /// Paid less than billed.
    PartiallyPaid,
    /// Adjudicated, nothing paid.
    Denied,
    /// Voided (the service sends a frequency-8 claim).
    Void,
    /// Replaced by a corrected claim (frequency 7) that names it.
    Replaced,
}

/// What happens to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimAction {
    /// The scrubber ran: `ok` when it found nothing.
    Scrubbed {
        /// Whether the scrub found no failure.
        ok: bool,
    },
    /// The claim went out in a file.
    Submit,
    /// The clearinghouse or payer acknowledged it.
    Acknowledge {
        /// Accepted for adjudication, or rejected.
        accepted: bool,
    },
    /// A remittance (835) for the claim.
    Remit {
        /// What the payer paid.
        paid: Cents,
        /// What the claim billed.
        billed: Cents,
    },
    /// Take a rejected claim back to draft to edit it.
    Reopen,
    /// Cancel a claim the payer holds.
    Void,
    /// Replace a claim the payer holds by a corrected one.
    Correct,
}

impl fmt::Display for ClaimState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl ClaimAction {
    /// The action's name without its data (amounts stay out of messages).
    fn name(&self) -> &'static str {
        match self {
            ClaimAction::Scrubbed { .. } => "Scrubbed",
            ClaimAction::Submit => "Submit",
            ClaimAction::Acknowledge { .. } => "Acknowledge",
            ClaimAction::Remit { .. } => "Remit",
            ClaimAction::Reopen => "Reopen",
            ClaimAction::Void => "Void",
            ClaimAction::Correct => "Correct",
        }
    }
}

/// The state after `action`, or `CLAIM_STATE_INVALID` (field `state`) naming both when the
/// action is not allowed from `state`; `REMIT_AMOUNT_INVALID` (field `action.paid`) for a
/// remittance whose amounts make no sense.
///
/// `Scrubbed` applies to Draft and Rejected (clean → Ready, else unchanged) and also to Ready,
/// so a claim whose coverage changed before submission can be re-scrubbed (clean → Ready, else
/// back to Draft).
pub fn apply(state: ClaimState, action: ClaimAction) -> Result<ClaimState, Invalid> {
    use ClaimAction as A;
    use ClaimState as S;
    let next = match (state, action) {
        (S::Draft | S::Rejected | S::Ready, A::Scrubbed { ok: true }) => S::Ready,
        (S::Draft | S::Ready, A::Scrubbed { ok: false }) => S::Draft,
        (S::Rejected, A::Scrubbed { ok: false }) => S::Rejected,
        (S::Ready, A::Submit) => S::Submitted,
        (S::Submitted, A::Acknowledge { accepted: true }) => S::Accepted,
        (S::Submitted, A::Acknowledge { accepted: false }) => S::Rejected,
        (S::Submitted | S::Accepted, A::Remit { paid, billed }) => remitted(paid, billed)?,
        (S::Rejected, A::Reopen) => S::Draft,
        (S::Submitted | S::Accepted | S::Paid | S::PartiallyPaid | S::Denied, A::Void) => S::Void,
        (S::Submitted | S::Accepted | S::Paid | S::PartiallyPaid | S::Denied, A::Correct) => {
            S::Replaced
        }
        _ => {
            return Err(Invalid::new(
                "state",
                CLAIM_STATE_INVALID,
                format!("a {state} claim cannot take the action {}", action.name()),
            ));
        }
    };
    Ok(next)
}

/// Paid in full, in part, or not at all.
fn remitted(paid: Cents, billed: Cents) -> Result<ClaimState, Invalid> {
    if !billed.is_positive() || paid.is_negative() || paid > billed {
        return Err(Invalid::new(
            "action.paid",
            REMIT_AMOUNT_INVALID,
            "a remittance pays from zero up to the billed amount, which is above zero",
        ));
    }
    Ok(if paid == billed {
        ClaimState::Paid
    } else if paid.is_positive() {
        ClaimState::PartiallyPaid
    } else {
        ClaimState::Denied
    })
}

/// CLM05-3 for a claim being sent: `Original` for a first submission (or a resubmission after a
/// rejection, which the payer never adjudicated); `Void` (8) or `Corrected` (7, replacement) of
/// a claim the payer holds, with its claim number for REF*F8. Void wins over corrected.
/// Refuses a correction or void of a claim never submitted (`FREQUENCY_NOT_SUBMITTED`) or
/// without a payer claim number (`PAYER_CLAIM_NUMBER_MISSING`).
pub fn frequency_for(
    original_submitted: bool,
    corrected: bool,
    void: bool,
    payer_claim_number: &str,
) -> Result<Frequency, Invalid> {
    if !(corrected || void) {
        return Ok(Frequency::Original);
    }
    if !original_submitted {
        return Err(Invalid::new(
            "frequency",
            FREQUENCY_NOT_SUBMITTED,
            "only a claim the payer received can be corrected or voided",
        ));
    }
    let number = payer_claim_number.trim();
    if number.is_empty() {
        return Err(Invalid::new(
            "payer_claim_number",
            PAYER_CLAIM_NUMBER_MISSING,
            "a correction or void names the payer's claim number (from the 835 or 277CA)",
        ));
    }
    let payer_claim_number = number.to_string();
    Ok(if void {
        Frequency::Void { payer_claim_number }
    } else {
        Frequency::Corrected { payer_claim_number }
    })
}

/// A correction (frequency 7) or a void (frequency 8) of a claim the payer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Amendment {
    /// Replace the claim by a corrected copy.
    Correct,
    /// Cancel the claim.
    Void,
}

/// What an amendment does: the new claim's frequency (with REF*F8) and the original's next state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amended {
    /// CLM05-3 and REF*F8 of the new claim.
    pub frequency: Frequency,
    /// Where the original goes: `Replaced` or `Void`.
    pub original_to: ClaimState,
}

/// Decides a correction or void of a claim in `state`, itself sent with frequency
/// `frequency_code`, whose payer claim number is `payer_claim_number`. Refusals, in this order:
/// a claim the payer never received (Draft, Ready, or Rejected before adjudication) is
/// `FREQUENCY_NOT_SUBMITTED`; a claim already voided or replaced, or itself a void, is
/// `CLAIM_STATE_INVALID`; no payer claim number is `PAYER_CLAIM_NUMBER_MISSING`.
pub fn amend(
    state: ClaimState,
    frequency_code: i32,
    payer_claim_number: &str,
    amendment: Amendment,
) -> Result<Amended, Invalid> {
    let (correct, void) = match amendment {
        Amendment::Correct => (true, false),
        Amendment::Void => (false, true),
    };
    let action = match amendment {
        Amendment::Correct => ClaimAction::Correct,
        Amendment::Void => ClaimAction::Void,
    };
    let received = !matches!(
        state,
        ClaimState::Draft | ClaimState::Ready | ClaimState::Rejected
    );
    if !received {
        frequency_for(false, correct, void, payer_claim_number)?;
    }
    if frequency_code == 8 {
        return Err(Invalid::new(
            "state",
            CLAIM_STATE_INVALID,
            format!(
                "a void (frequency 8) cannot take the action {}",
                action.name()
            ),
        ));
    }
    // The state first: a claim voided or replaced already is refused as such.
    let original_to = apply(state, action)?;
    let frequency = frequency_for(true, correct, void, payer_claim_number)?;
    Ok(Amended {
        frequency,
        original_to,
    })
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;

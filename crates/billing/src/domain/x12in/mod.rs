//! X12 5010 input from the clearinghouse: 835 remittances ([`parse_835`]), 999 implementation
//! acknowledgments ([`parse_999`]) and 277CA claim acknowledgments ([`parse_277ca`]).
//!
//! All three share one tokenizer ([`tokenizer`]): it reads the delimiters from the ISA, splits
//! the segments and checks the envelope (control numbers and counts of ISA/IEA, GS/GE, ST/SE)
//! before any reader looks at a transaction. Readers are pure: text in, typed values or an
//! [`Invalid`] out, and no input can make them panic.
//!
//! Errors name the segment and element (`CLP04 (claim 2)`); their message starts with the
//! transaction they concern (`transaction 0001: …`) and never repeats element text, which can
//! be patient data.

use crate::domain::invalid::Invalid;

mod ack;
mod fields;
mod r835;
pub mod tokenizer;

#[cfg(test)]
mod tests;

pub use ack::{
    AckCode, ClaimAck, ClaimStatusInfo, ElementError, GroupAck, SegmentError, TransactionAck,
    category_accepted, parse_277ca, parse_999,
};
pub use fields::{
    AMOUNT_INVALID, ELEMENT_INVALID, ELEMENT_MISSING, Quantity, SEGMENT_MISSING,
    SEGMENT_UNEXPECTED, TRANSACTION_UNEXPECTED,
};
pub use r835::{
    Adjustment, AdjustmentGroup, ClaimPayment, ClaimStatus, Payee, Payer, Payment, PaymentMethod,
    Procedure, ProviderAdjustment, REMITTANCE_TOTAL_MISMATCH, Remittance, ServicePayment, Trace,
    parse_835,
};
pub use tokenizer::{ENVELOPE_INVALID, SEGMENT_COUNT, TOO_LARGE};

/// Tokenizes `text` and returns its transactions, all of which must be of kind `id` (ST01:
/// `835`, `999`, `277`). A file with none is refused too: it acknowledges or pays nothing.
fn transactions_of<'a>(
    text: &'a str,
    id: &str,
) -> Result<Vec<tokenizer::Transaction<'a>>, Invalid> {
    let interchange = tokenizer::tokenize(text)?;
    let transactions: Vec<_> = interchange.transactions().cloned().collect();
    if let Some(other) = transactions.iter().find(|t| t.id != id) {
        return Err(Invalid::new(
            format!(
                "ST01 (transaction {})",
                tokenizer::shown(other.control_number)
            ),
            TRANSACTION_UNEXPECTED,
            format!(
                "expected {id} transactions only, found a {}",
                tokenizer::shown(other.id)
            ),
        ));
    }
    if transactions.is_empty() {
        return Err(Invalid::new(
            "ST",
            SEGMENT_MISSING,
            format!("the file holds no {id} transaction"),
        ));
    }
    Ok(transactions)
}

/// Prefixes a transaction reader's error message with the transaction it concerns, so a file
/// of several transactions still says which one is at fault.
fn for_transaction<T>(
    transaction: &tokenizer::Transaction<'_>,
    result: Result<T, Invalid>,
) -> Result<T, Invalid> {
    result.map_err(|e| Invalid {
        message: format!(
            "transaction {}: {}",
            tokenizer::shown(transaction.control_number),
            e.message
        ),
        ..e
    })
}

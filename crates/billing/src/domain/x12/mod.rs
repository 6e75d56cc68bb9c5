//! X12 5010 output. Today: the 837P professional claim (005010X222A1), written by hand from typed
//! input ([`model`]) so every element is one we chose, and checked by pyx12 in the tests.
//!
//! Start at [`write_837p`]. The writer is pure (no I/O, no clock): the caller passes the
//! creation time and the control numbers.

use std::fmt;

use crate::domain::invalid::Invalid;

pub mod model;
mod p837;
mod segments;

#[cfg(test)]
mod tests;

pub use model::*;
pub use p837::{
    AMOUNT_OUT_OF_RANGE, BATCH_EMPTY, CLAIM_DIAGNOSIS_COUNT, CLAIM_LINE_COUNT,
    CLAIM_TOTAL_MISMATCH, CONTROL_NUMBER_OUT_OF_RANGE, DIAGNOSIS_POINTER_COUNT,
    DIAGNOSIS_POINTER_INVALID, OTHER_PAYER_NOT_BALANCED, SERVICE_MODIFIER_COUNT,
    SERVICE_UNITS_ZERO, WriteOptions, write_837p, write_837p_with,
};
pub use segments::{
    CHARACTER_INVALID, DATE_OUT_OF_RANGE, ELEMENT_EMPTY, ELEMENT_TOO_LONG, SEPARATOR_IN_DATA,
};

/// Why a batch could not be written. Every failure today is an input field breaking a rule
/// (the scrubber should have caught it); the enum leaves room for other kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// A field of the batch breaks a rule: its path (`claims[2].subscriber.last_name`), a
    /// stable reason code and a message without patient data.
    Invalid(Invalid),
}

impl WriteError {
    /// The stable reason code, e.g. [`CLAIM_TOTAL_MISMATCH`].
    pub fn reason(&self) -> &'static str {
        match self {
            WriteError::Invalid(invalid) => invalid.reason,
        }
    }

    /// The path of the field at fault, e.g. `claims[0].lines[1].diagnosis_pointers[0]`.
    pub fn field(&self) -> &str {
        match self {
            WriteError::Invalid(invalid) => &invalid.field,
        }
    }
}

impl From<Invalid> for WriteError {
    fn from(invalid: Invalid) -> Self {
        WriteError::Invalid(invalid)
    }
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Invalid(invalid) => write!(f, "cannot write the 837P: {invalid}"),
        }
    }
}

// No `source()`: Display already carries the whole `Invalid`, and reporting it twice in an
// error chain would only repeat it.
impl std::error::Error for WriteError {}

/// Whether `n` can be an interchange (ISA13, 9 digits) or group (GS06) control number:
/// 1..=999_999_999.
///
/// The writer only checks the range. Uniqueness is the caller's job: the service allocates
/// control numbers from a database sequence, so they never repeat (receivers reject a repeated
/// interchange number as a duplicate file). The writer never invents one.
pub fn control_number_ok(n: u32) -> bool {
    (1..=999_999_999).contains(&n)
}

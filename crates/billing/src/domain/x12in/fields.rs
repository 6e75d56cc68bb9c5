//! Reading one element as a typed value (text, amount, date, quantity), with the error naming
//! the segment and element (`CLP04 (claim 2)`). Shared by the 835, 999 and 277CA readers.
//!
//! Messages say what is accepted and never repeat the element's text: an element next to a
//! claim can be patient data.

use chrono::NaiveDate;

use super::tokenizer::Segment;
use crate::domain::invalid::Invalid;
use crate::domain::money::{AmountError, Cents};

/// Reason: an amount element is not an X12 decimal amount in whole cents.
pub const AMOUNT_INVALID: &str = "X12_AMOUNT_INVALID";
/// Reason: a required element is empty or absent.
pub const ELEMENT_MISSING: &str = "X12_ELEMENT_MISSING";
/// Reason: an element holds a code, date or number this reader does not accept.
pub const ELEMENT_INVALID: &str = "X12_ELEMENT_INVALID";
/// Reason: a segment the transaction requires is absent.
pub const SEGMENT_MISSING: &str = "X12_SEGMENT_MISSING";
/// Reason: a segment appears where it cannot belong (an `SVC` before any `CLP`).
pub const SEGMENT_UNEXPECTED: &str = "X12_SEGMENT_UNEXPECTED";
/// Reason: the file holds a transaction of another kind (a 999 given to the 835 reader).
pub const TRANSACTION_UNEXPECTED: &str = "X12_TRANSACTION_UNEXPECTED";

/// A count or quantity from X12 (element type R): units of service, adjustment quantities. Kept
/// in thousandths, since units can be fractional (`1.5` hours) and floats are kept away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(i64);

impl Quantity {
    /// One unit, the default when SVC05 is absent.
    pub const ONE: Quantity = Quantity(1000);

    /// `thousandths` / 1000 units.
    pub const fn from_thousandths(thousandths: i64) -> Self {
        Quantity(thousandths)
    }

    /// The quantity in thousandths of a unit.
    pub const fn thousandths(self) -> i64 {
        self.0
    }

    /// The whole units when the quantity has no fraction (`Some(3)` for `3`), else `None`.
    pub const fn whole(self) -> Option<i64> {
        if self.0 % 1000 == 0 {
            Some(self.0 / 1000)
        } else {
            None
        }
    }

    /// Parses an X12 decimal with at most three decimals (`2`, `1.5`, `-2`, `.25`).
    pub fn parse(text: &str) -> Option<Quantity> {
        let text = with_leading_zero(text);
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let plain = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        // 12 whole digits is far above any real quantity and keeps the arithmetic in range.
        if whole.is_empty() || whole.len() > 12 || !plain(whole) || !plain(fraction) {
            return None;
        }
        if fraction.len() > 3 || (digits.ends_with('.')) {
            return None;
        }
        let whole: i64 = whole.parse().ok()?;
        let padded = format!("{fraction:0<3}");
        let fraction: i64 = padded.parse().ok()?;
        let value = whole.checked_mul(1000)?.checked_add(fraction)?;
        Some(Quantity(if negative { -value } else { value }))
    }
}

/// X12 decimals may omit the zero before the point (`.06`, `-.06`); [`Cents::parse_decimal`]
/// wants it, so it is put back.
fn with_leading_zero(text: &str) -> String {
    if let Some(rest) = text.strip_prefix("-.") {
        format!("-0.{rest}")
    } else if let Some(rest) = text.strip_prefix('.') {
        format!("0.{rest}")
    } else {
        text.to_string()
    }
}

/// The field path of element `n` of `segment`: `CLP04`, or `CLP04 (claim 2)` when `place` is
/// not empty.
pub fn field(segment: &Segment<'_>, n: usize, place: &str) -> String {
    if place.is_empty() {
        format!("{}{n:02}", segment.id)
    } else {
        format!("{}{n:02} ({place})", segment.id)
    }
}

/// Element `n`, trimmed; `None` when empty.
pub fn optional(segment: &Segment<'_>, n: usize) -> Option<String> {
    let value = segment.element(n).trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// Element `n`, trimmed, required.
pub fn required(segment: &Segment<'_>, n: usize, place: &str) -> Result<String, Invalid> {
    optional(segment, n).ok_or_else(|| {
        Invalid::new(
            field(segment, n, place),
            ELEMENT_MISSING,
            format!("{} needs element {n:02}", segment.id),
        )
    })
}

/// Element `n` as an amount, required.
pub fn amount(segment: &Segment<'_>, n: usize, place: &str) -> Result<Cents, Invalid> {
    let text = required(segment, n, place).map_err(|e| Invalid {
        reason: AMOUNT_INVALID,
        ..e
    })?;
    parse_amount(&text).map_err(|error| {
        Invalid::new(
            field(segment, n, place),
            AMOUNT_INVALID,
            format!("not an X12 amount: {error}"),
        )
    })
}

/// Element `n` as an amount, or `None` when empty.
pub fn optional_amount(
    segment: &Segment<'_>,
    n: usize,
    place: &str,
) -> Result<Option<Cents>, Invalid> {
    if segment.element(n).trim().is_empty() {
        return Ok(None);
    }
    amount(segment, n, place).map(Some)
}

/// An X12 amount (`125`, `125.5`, `-3.10`, `.06`) in cents.
pub fn parse_amount(text: &str) -> Result<Cents, AmountError> {
    Cents::parse_decimal(&with_leading_zero(text))
}

/// Element `n` as a D8 date (`CCYYMMDD`), required.
pub fn date(segment: &Segment<'_>, n: usize, place: &str) -> Result<NaiveDate, Invalid> {
    let text = required(segment, n, place)?;
    parse_d8(&text).ok_or_else(|| {
        Invalid::new(
            field(segment, n, place),
            ELEMENT_INVALID,
            "a date here is CCYYMMDD, a real calendar date",
        )
    })
}

/// Element `n` as a D8 date, or `None` when empty.
pub fn optional_date(
    segment: &Segment<'_>,
    n: usize,
    place: &str,
) -> Result<Option<NaiveDate>, Invalid> {
    if segment.element(n).trim().is_empty() {
        return Ok(None);
    }
    date(segment, n, place).map(Some)
}

/// A D8 date, `CCYYMMDD`: exactly 8 digits forming a real date.
pub fn parse_d8(text: &str) -> Option<NaiveDate> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDate::parse_from_str(text, "%Y%m%d").ok()
}

/// Element `n` as a quantity, or `None` when empty.
pub fn optional_quantity(
    segment: &Segment<'_>,
    n: usize,
    place: &str,
) -> Result<Option<Quantity>, Invalid> {
    let text = segment.element(n).trim();
    if text.is_empty() {
        return Ok(None);
    }
    Quantity::parse(text).map(Some).ok_or_else(|| {
        Invalid::new(
            field(segment, n, place),
            ELEMENT_INVALID,
            "a quantity is a decimal number with at most three decimals",
        )
    })
}

/// The error for element `n` holding a code outside `accepted` (listed in the message; codes
/// are not patient data, but the found value is still not repeated).
pub fn bad_code(segment: &Segment<'_>, n: usize, place: &str, accepted: &str) -> Invalid {
    Invalid::new(
        field(segment, n, place),
        ELEMENT_INVALID,
        format!("{}{n:02} must be one of {accepted}", segment.id),
    )
}

/// The error for a required segment that is absent.
pub fn missing_segment(field: &str, message: &str) -> Invalid {
    Invalid::new(field, SEGMENT_MISSING, message)
}

/// The error for a segment that cannot be where it is.
pub fn unexpected_segment(segment: &Segment<'_>, place: &str, message: &str) -> Invalid {
    let field = if place.is_empty() {
        segment.id.to_string()
    } else {
        format!("{} ({place})", segment.id)
    };
    Invalid::new(field, SEGMENT_UNEXPECTED, message)
}

//! Money: whole cents in an `i64`, end to end. No float touches an amount: parsing reads the
//! decimal text digit by digit, and printing (for people, CSV and X12) writes the digits back.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, Neg, Sub};
use std::str::FromStr;

/// An amount of money in cents (US dollars). Negative amounts exist (reversals, adjustments);
/// where only a positive amount makes sense the caller checks [`Cents::is_positive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cents(i64);

/// Why a decimal text is not an amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountError {
    /// Empty, or not digits with an optional `.` and at most two decimals (`12`, `12.5`, `12.50`).
    Malformed,
    /// More than two decimals: a fraction of a cent.
    FractionalCent,
    /// Too large to hold.
    TooLarge,
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AmountError::Malformed => "an amount is digits with an optional . and two decimals",
            AmountError::FractionalCent => "an amount has at most two decimals (whole cents)",
            AmountError::TooLarge => "the amount is too large",
        })
    }
}

impl std::error::Error for AmountError {}

/// The largest amount accepted from text or the wire: ten billion dollars. Sums of many such
/// amounts still fit in an `i64` with room to spare.
pub const MAX_AMOUNT: Cents = Cents(1_000_000_000_000);

impl Cents {
    /// Zero.
    pub const ZERO: Cents = Cents(0);

    /// `cents` cents.
    pub const fn new(cents: i64) -> Self {
        Cents(cents)
    }

    /// The amount in cents.
    pub const fn cents(self) -> i64 {
        self.0
    }

    /// Whether the amount is above zero.
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// Whether the amount is below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// `self * quantity`, or `None` on overflow (a line's units times its unit price).
    pub fn times(self, quantity: i64) -> Option<Cents> {
        self.0.checked_mul(quantity).map(Cents)
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Cents) -> Option<Cents> {
        self.0.checked_add(other.0).map(Cents)
    }

    /// As X12 writes a monetary amount (element type R): no trailing decimal zeros, no trailing
    /// point, a leading `-` when negative: `125`, `125.5`, `125.05`, `-3`.
    pub fn to_x12(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (dollars, cents) = (abs / 100, abs % 100);
        match cents {
            0 => format!("{sign}{dollars}"),
            c if c % 10 == 0 => format!("{sign}{dollars}.{}", c / 10),
            c => format!("{sign}{dollars}.{c:02}"),
        }
    }

    /// Parses a decimal amount (`125`, `125.5`, `125.05`, `-3.10`). More than two decimals is
    /// [`AmountError::FractionalCent`]; exponents, thousands separators and currency signs are
    /// [`AmountError::Malformed`].
    pub fn parse_decimal(text: &str) -> Result<Cents, AmountError> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = match digits.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (digits, None),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) {
            return Err(AmountError::Malformed);
        }
        let fraction = fraction.unwrap_or("");
        if !all_digits(fraction) || (digits.contains('.') && fraction.is_empty()) {
            return Err(AmountError::Malformed);
        }
        if fraction.len() > 2 {
            return Err(AmountError::FractionalCent);
        }
        let whole: i64 = whole.parse().map_err(|_| AmountError::TooLarge)?;
        let fraction: i64 = match fraction.len() {
            0 => 0,
            1 => {
                fraction
                    .parse::<i64>()
                    .map_err(|_| AmountError::Malformed)?
                    * 10
            }
            _ => fraction.parse().map_err(|_| AmountError::Malformed)?,
        };
        let cents = whole
            .checked_mul(100)
            .and_then(|c| c.checked_add(fraction))
            .filter(|c| *c <= MAX_AMOUNT.0)
            .ok_or(AmountError::TooLarge)?;
        Ok(Cents(if negative { -cents } else { cents }))
    }
}

/// `12.50`, `-3.05`: two decimals always, for people and CSV.
impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl FromStr for Cents {
    type Err = AmountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cents::parse_decimal(s)
    }
}

// Arithmetic on amounts that passed MAX_AMOUNT's bound and counts a page can hold cannot overflow
// an i64; the checked forms above are for quantities from input.
impl Add for Cents {
    type Output = Cents;
    fn add(self, other: Cents) -> Cents {
        Cents(self.0 + other.0)
    }
}

impl Sub for Cents {
    type Output = Cents;
    fn sub(self, other: Cents) -> Cents {
        Cents(self.0 - other.0)
    }
}

impl Neg for Cents {
    type Output = Cents;
    fn neg(self) -> Cents {
        Cents(-self.0)
    }
}

impl Sum for Cents {
    fn sum<I: Iterator<Item = Cents>>(iter: I) -> Cents {
        iter.fold(Cents::ZERO, Add::add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_whole_cents_and_refuses_the_rest() {
        let ok = [
            ("125", 12_500),
            ("125.5", 12_550),
            ("125.05", 12_505),
            ("0.01", 1),
            ("-3.10", -310),
            ("0", 0),
        ];
        for (text, cents) in ok {
            assert_eq!(Cents::parse_decimal(text), Ok(Cents(cents)), "{text}");
        }
        let bad = [
            ("", AmountError::Malformed),
            ("12.", AmountError::Malformed),
            (".5", AmountError::Malformed),
            ("1e3", AmountError::Malformed),
            ("1,000", AmountError::Malformed),
            ("$5", AmountError::Malformed),
            ("1.2.3", AmountError::Malformed),
            ("--1", AmountError::Malformed),
            ("12.345", AmountError::FractionalCent),
            ("99999999999999999999", AmountError::TooLarge),
            ("10000000000.01", AmountError::TooLarge),
        ];
        for (text, error) in bad {
            assert_eq!(Cents::parse_decimal(text), Err(error), "{text}");
        }
    }

    #[test]
    fn prints_for_people_and_for_x12() {
        let cases = [
            (12_500, "125.00", "125"),
            (12_550, "125.50", "125.5"),
            (12_505, "125.05", "125.05"),
            (1, "0.01", "0.01"),
            (-310, "-3.10", "-3.1"),
            (0, "0.00", "0"),
        ];
        for (cents, shown, x12) in cases {
            assert_eq!(Cents(cents).to_string(), shown);
            assert_eq!(Cents(cents).to_x12(), x12);
        }
    }

    #[test]
    fn printing_then_parsing_gives_the_amount_back() {
        for cents in [-100_001, -1, 0, 1, 9, 10, 99, 100, 101, 123_456_789] {
            let amount = Cents(cents);
            assert_eq!(Cents::parse_decimal(&amount.to_string()), Ok(amount));
            assert_eq!(Cents::parse_decimal(&amount.to_x12()), Ok(amount));
        }
    }
}

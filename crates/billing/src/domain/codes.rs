//! Format checks for the codes and identifiers a claim carries: procedure codes and modifiers,
//! diagnosis codes, NPI, EIN, provider taxonomy, place of service and X12 payer id.
//!
//! Each is a validated newtype: once built, the text is known to have the right shape, so later
//! code (pricing, the X12 writer) never re-checks it. Parsing takes the text exactly as given (no
//! trimming, no case folding): an operator who typed `e11.9` is told letters must be uppercase
//! rather than having it silently changed. Messages say what is accepted and never repeat the
//! input, since a diagnosis code next to a claim is patient data.

use std::collections::HashSet;
use std::fmt;

use crate::domain::invalid::Invalid;

/// Implements `as_str` and `Display` (the stored text) for a newtype over `String`.
macro_rules! text_newtype {
    ($name:ident) => {
        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// An uppercase ASCII letter or a digit.
fn is_upper_alnum(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

fn all_digits(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_digit)
}

/// Builds the error, adding a hint when lowercase letters are the likely cause.
fn invalid(field: &str, text: &str, reason: &'static str, accepted: &str) -> Invalid {
    let hint = if text.bytes().any(|b| b.is_ascii_lowercase()) {
        " (letters must be uppercase)"
    } else {
        ""
    };
    Invalid::new(field, reason, format!("{accepted}{hint}"))
}

/// A CPT or HCPCS procedure code, treated as an opaque 5-character code: `99213` (CPT
/// Category I), `0001F` / `0042T` (Category II / III), `0001U` (PLA), `G0506` (HCPCS Level II).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcedureCode(String);

text_newtype!(ProcedureCode);

impl ProcedureCode {
    /// Accepts 5 digits, 4 digits + `F`/`T`/`U`, or a letter `A`–`V` + 4 digits.
    /// Reason `PROCEDURE_CODE_INVALID`.
    pub fn parse(field: &str, text: &str) -> Result<Self, Invalid> {
        let ok = match text.as_bytes() {
            [first, rest @ ..] if rest.len() == 4 && (b'A'..=b'V').contains(first) => {
                all_digits(rest)
            }
            [a, b, c, d, last] => {
                all_digits(&[*a, *b, *c, *d])
                    && (last.is_ascii_digit() || matches!(last, b'F' | b'T' | b'U'))
            }
            _ => false,
        };
        if ok {
            return Ok(Self(text.to_string()));
        }
        Err(invalid(
            field,
            text,
            "PROCEDURE_CODE_INVALID",
            "a procedure code is 5 characters: 5 digits (99213), 4 digits then F, T or U \
             (0001F, 0042T, 0001U), or a letter A-V then 4 digits (G0506)",
        ))
    }
}

/// A procedure modifier: exactly two uppercase letters or digits (`25`, `GT`, `95`, `59`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Modifier(String);

text_newtype!(Modifier);

/// A claim line carries at most four modifiers (837P SV101-3 to SV101-6).
pub const MAX_MODIFIERS: usize = 4;

impl Modifier {
    /// Accepts exactly two uppercase alphanumerics. Reason `MODIFIER_INVALID`.
    pub fn parse(field: &str, text: &str) -> Result<Self, Invalid> {
        match text.as_bytes() {
            [a, b] if is_upper_alnum(*a) && is_upper_alnum(*b) => Ok(Self(text.to_string())),
            _ => Err(invalid(
                field,
                text,
                "MODIFIER_INVALID",
                "a modifier is exactly 2 uppercase letters or digits (25, GT)",
            )),
        }
    }

    /// Parses a line's modifiers in order: at most [`MAX_MODIFIERS`] (`MODIFIERS_TOO_MANY` on
    /// `field`), each valid and none repeated (`MODIFIER_INVALID` / `MODIFIER_REPEATED` on
    /// `field[i]`, the offending one).
    pub fn parse_modifiers(field: &str, texts: &[String]) -> Result<Vec<Modifier>, Invalid> {
        if texts.len() > MAX_MODIFIERS {
            return Err(Invalid::new(
                field,
                "MODIFIERS_TOO_MANY",
                format!(
                    "at most {MAX_MODIFIERS} modifiers per line, got {}",
                    texts.len()
                ),
            ));
        }
        let mut seen = HashSet::new();
        let mut parsed = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let path = format!("{field}[{i}]");
            let modifier = Modifier::parse(&path, text)?;
            if !seen.insert(modifier.clone()) {
                return Err(Invalid::new(
                    path,
                    "MODIFIER_REPEATED",
                    format!("modifier {modifier} appears more than once"),
                ));
            }
            parsed.push(modifier);
        }
        Ok(parsed)
    }
}

/// An ICD-10-CM diagnosis code, stored in the dotted form (`E11.9`, `I10`, `S72.001A`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiagnosisCode(String);

text_newtype!(DiagnosisCode);

impl DiagnosisCode {
    /// Accepts a letter, a digit, a letter or digit, then optionally a dot and 1–4 letters or
    /// digits (`E11.9`); the same without the dot is accepted too (`E119`, 3–7 characters) and
    /// normalised to the dotted form. Reason `DIAGNOSIS_CODE_INVALID`.
    pub fn parse(field: &str, text: &str) -> Result<Self, Invalid> {
        let (category, rest) = match text.split_once('.') {
            // With a dot, something must follow it.
            Some((category, rest)) if !rest.is_empty() => (category, rest),
            Some(_) => ("", ""),
            None => text.split_at_checked(3).unwrap_or(("", "")),
        };
        if Self::category_ok(category) && rest.len() <= 4 && rest.bytes().all(is_upper_alnum) {
            let dotted = if rest.is_empty() {
                category.to_string()
            } else {
                format!("{category}.{rest}")
            };
            return Ok(Self(dotted));
        }
        Err(invalid(
            field,
            text,
            "DIAGNOSIS_CODE_INVALID",
            "an ICD-10-CM code is a letter, a digit, a letter or digit, then optionally a dot \
             and 1-4 letters or digits (E11.9, I10, S72.001A; the dot may be left out)",
        ))
    }

    /// The first three characters: letter, digit, letter or digit.
    fn category_ok(category: &str) -> bool {
        matches!(category.as_bytes(), [a, b, c]
            if a.is_ascii_uppercase() && b.is_ascii_digit() && is_upper_alnum(*c))
    }

    /// The code as X12 carries it: without the dot (`E119`).
    pub fn x12(&self) -> String {
        self.0.replace('.', "")
    }
}

/// A National Provider Identifier: 10 digits, first 1 or 2, last a Luhn check digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Npi(String);

text_newtype!(Npi);

/// CMS computes the NPI check digit as if the NPI were an ISO 7812 card number with the
/// health-industry prefix `80840` in front.
const NPI_PREFIX: &[u8] = b"80840";

impl Npi {
    /// Accepts 10 digits starting with 1 or 2 (`NPI_INVALID`) whose last digit is the Luhn check
    /// digit over `80840` + the first nine (`NPI_CHECK_DIGIT`).
    pub fn parse(field: &str, text: &str) -> Result<Self, Invalid> {
        let bytes = text.as_bytes();
        let shaped =
            bytes.len() == 10 && all_digits(bytes) && matches!(bytes.first(), Some(b'1' | b'2'));
        let (body, check) = match bytes.split_last() {
            Some((check, body)) if shaped => (body, *check),
            _ => {
                return Err(Invalid::new(
                    field,
                    "NPI_INVALID",
                    "an NPI is 10 digits starting with 1 or 2",
                ));
            }
        };
        let payload = NPI_PREFIX.iter().chain(body).map(|b| b - b'0');
        if luhn_check_digit(payload) + b'0' != check {
            return Err(Invalid::new(
                field,
                "NPI_CHECK_DIGIT",
                "the NPI's last digit does not match its check digit: probably a typo",
            ));
        }
        Ok(Self(text.to_string()))
    }
}

/// The Luhn digit to append to `digits` (each 0–9): double every second digit from the right,
/// starting with the rightmost, and make the total a multiple of ten.
fn luhn_check_digit(digits: impl DoubleEndedIterator<Item = u8>) -> u8 {
    let sum: u32 = digits
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d);
            match (i % 2 == 0, d * 2) {
                (true, doubled) if doubled > 9 => doubled - 9,
                (true, doubled) => doubled,
                (false, _) => d,
            }
        })
        .sum();
    // `sum % 10` is below 10, so the result fits in a u8.
    ((10 - sum % 10) % 10) as u8
}

/// An Employer Identification Number, stored as 9 digits (`123456789`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ein(String);

/// Two-digit EIN prefixes the IRS does not issue.
const EIN_UNISSUED_PREFIXES: [&str; 17] = [
    "00", "07", "08", "09", "17", "18", "19", "28", "29", "49", "69", "70", "78", "79", "89", "96",
    "97",
];

impl Ein {
    /// Accepts `12-3456789` or `123456789` with an IRS-issued prefix. Reason `EIN_INVALID`.
    pub fn parse(field: &str, text: &str) -> Result<Self, Invalid> {
        let digits = match text.split_once('-') {
            Some((prefix, rest)) if prefix.len() == 2 => format!("{prefix}{rest}"),
            Some(_) => String::new(),
            None => text.to_string(),
        };
        if digits.len() != 9 || !all_digits(digits.as_bytes()) {
            return Err(Invalid::new(
                field,
                "EIN_INVALID",
                "an EIN is 9 digits, written 12-3456789 or 123456789",
            ));
        }
        if EIN_UNISSUED_PREFIXES.iter().any(|p| digits.starts_with(p)) {
            return Err(Invalid::new(
                field,
                "EIN_INVALID",
                "the EIN's first two digits are not an IRS-issued prefix",
            ));
        }
        Ok(Self(digits))
    }

    /// The 9 digits, as X12 carries them (`123456789`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The dashed form people write (`12-3456789`).
    pub fn display(&self) -> String {
        let (prefix, rest) = self.0.split_at_checked(2).unwrap_or((&self.0, ""));
        format!("{prefix}-{rest}")
    }
}

/// Shows the dashed form, like [`Ein::display`].
impl fmt::Display for Ein {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

/// A provider taxonomy code: 9 uppercase letters or digits then `X` (`207Q00000X`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Taxonomy(String);

text_newtype!(Taxonomy);

impl Taxonomy {
    /// Accepts 10 characters: 9 uppercase alphanumerics then `X`. Reason `TAXONOMY_INVALID`.
    pub fn parse(field: &str, text: &str) -> Result<Self, Invalid> {
        match text.as_bytes().split_last() {
            Some((b'X', body)) if body.len() == 9 && body.iter().copied().all(is_upper_alnum) => {
                Ok(Self(text.to_string()))
            }
            _ => Err(invalid(
                field,
                text,
                "TAXONOMY_INVALID",
                "a taxonomy code is 9 uppercase letters or digits then X (207Q00000X)",
            )),
        }
    }
}

/// A CMS place-of-service code: two digits, `01`–`99` (`11` office, `02` telehealth).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlaceOfService(String);

text_newtype!(PlaceOfService);

impl PlaceOfService {
    /// Accepts two digits from `01` to `99`. Reason `PLACE_OF_SERVICE_INVALID`.
    pub fn parse(field: &str, text: &str) -> Result<Self, Invalid> {
        match text.as_bytes() {
            [a, b] if a.is_ascii_digit() && b.is_ascii_digit() && text != "00" => {
                Ok(Self(text.to_string()))
            }
            _ => Err(Invalid::new(
                field,
                "PLACE_OF_SERVICE_INVALID",
                "a place of service is two digits from 01 to 99 (11, 02)",
            )),
        }
    }
}

/// An X12 payer id: 2–80 uppercase letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayerId(String);

text_newtype!(PayerId);

impl PayerId {
    /// Accepts 2–80 uppercase alphanumerics. Reason `PAYER_ID_INVALID`.
    pub fn parse(field: &str, text: &str) -> Result<Self, Invalid> {
        if (2..=80).contains(&text.len()) && text.bytes().all(is_upper_alnum) {
            return Ok(Self(text.to_string()));
        }
        Err(invalid(
            field,
            text,
            "PAYER_ID_INVALID",
            "a payer id is 2 to 80 uppercase letters or digits",
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reason<T>(result: Result<T, Invalid>) -> Option<&'static str> {
        result.err().map(|e| e.reason)
    }

    #[test]
    fn procedure_codes() {
        for ok in [
            "99213", "0001F", "0042T", "0001U", "G0506", "A0001", "V5008", "00000",
        ] {
            let code = ProcedureCode::parse("code", ok).unwrap();
            assert_eq!(code.as_str(), ok);
            assert_eq!(code.to_string(), ok);
        }
        for bad in [
            "", "9921", "992130", "0001X", "W0506", "g0506", "G050", "GG506", "0001f", " 99213",
            "99213 ", "992F1", "AB123", "1234A",
        ] {
            assert_eq!(
                reason(ProcedureCode::parse("code", bad)),
                Some("PROCEDURE_CODE_INVALID"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn lowercase_is_explained_and_input_not_echoed() {
        let error = ProcedureCode::parse("lines[0].code", "g0506").unwrap_err();
        assert_eq!(error.field, "lines[0].code");
        assert!(error.message.contains("uppercase"), "{}", error.message);
        assert!(!error.message.contains("g0506"));
        let error = DiagnosisCode::parse("dx", "e11.9").unwrap_err();
        assert!(error.message.contains("uppercase"));
        assert!(!error.message.contains("e11"));
        let error = ProcedureCode::parse("code", "12").unwrap_err();
        assert!(!error.message.contains("uppercase"));
    }

    #[test]
    fn modifiers() {
        for ok in ["25", "GT", "95", "59", "XE", "Q5"] {
            assert_eq!(Modifier::parse("m", ok).unwrap().as_str(), ok);
        }
        for bad in ["", "2", "255", "gt", "G-", "G "] {
            assert_eq!(
                reason(Modifier::parse("m", bad)),
                Some("MODIFIER_INVALID"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn modifier_lists() {
        let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let parsed = Modifier::parse_modifiers("mods", &list(&["25", "GT"])).unwrap();
        assert_eq!(
            parsed.iter().map(Modifier::as_str).collect::<Vec<_>>(),
            ["25", "GT"]
        );
        assert!(Modifier::parse_modifiers("mods", &[]).unwrap().is_empty());
        assert!(Modifier::parse_modifiers("mods", &list(&["25", "GT", "59", "95"])).is_ok());

        let cases: [(&[&str], &str, &str); 3] = [
            (
                &["25", "GT", "59", "95", "XE"],
                "mods",
                "MODIFIERS_TOO_MANY",
            ),
            (&["25", "GT", "25"], "mods[2]", "MODIFIER_REPEATED"),
            (&["25", "g"], "mods[1]", "MODIFIER_INVALID"),
        ];
        for (items, field, expected) in cases {
            let error = Modifier::parse_modifiers("mods", &list(items)).unwrap_err();
            assert_eq!((error.field.as_str(), error.reason), (field, expected));
        }
    }

    #[test]
    fn diagnosis_codes_normalise_to_dotted() {
        let cases = [
            ("E11.9", "E11.9", "E119"),
            ("E119", "E11.9", "E119"),
            ("I10", "I10", "I10"),
            ("S72.001A", "S72.001A", "S72001A"),
            ("S72001A", "S72.001A", "S72001A"),
            ("U07.1", "U07.1", "U071"),
            ("C4A.0", "C4A.0", "C4A0"),
        ];
        for (text, dotted, x12) in cases {
            let code = DiagnosisCode::parse("dx", text).unwrap();
            assert_eq!(
                (code.as_str(), code.x12().as_str()),
                (dotted, x12),
                "{text}"
            );
        }
        for bad in [
            "",
            "E1",
            "E11.",
            "E11.12345",
            "S72001AB",
            "1E1",
            "EE1",
            "E11.9.1",
            "E1.19",
            "e11.9",
            "E11-9",
            ".E11",
            "E11 ",
        ] {
            assert_eq!(
                reason(DiagnosisCode::parse("dx", bad)),
                Some("DIAGNOSIS_CODE_INVALID"),
                "{bad:?}"
            );
        }
    }

    /// An independent Luhn, written the textbook way: append the check digit, then the total
    /// with every second digit from the right doubled must be a multiple of ten.
    fn textbook_luhn_valid(number: &str) -> bool {
        let total: u32 = number
            .chars()
            .rev()
            .enumerate()
            .map(|(i, c)| {
                let d = c.to_digit(10).unwrap();
                if i % 2 == 1 {
                    let doubled = d * 2;
                    doubled / 10 + doubled % 10
                } else {
                    d
                }
            })
            .sum();
        total.is_multiple_of(10)
    }

    fn npi_with_check_digit(first_nine: &str) -> String {
        (0..10)
            .map(|d| format!("{first_nine}{d}"))
            .find(|npi| textbook_luhn_valid(&format!("80840{npi}")))
            .unwrap()
    }

    #[test]
    fn npi_cms_example_and_computed_ones() {
        // CMS's worked example: 123456789 has check digit 3.
        assert_eq!(npi_with_check_digit("123456789"), "1234567893");
        assert!(Npi::parse("npi", "1234567893").is_ok());
        assert_eq!(
            reason(Npi::parse("npi", "1234567890")),
            Some("NPI_CHECK_DIGIT")
        );
        for first_nine in [
            "100000000",
            "199999999",
            "274658391",
            "112233445",
            "200000001",
        ] {
            let npi = npi_with_check_digit(first_nine);
            assert_eq!(Npi::parse("npi", &npi).unwrap().as_str(), npi);
            // Every other last digit fails the check.
            for d in 0..10 {
                let other = format!("{first_nine}{d}");
                if other != npi {
                    assert_eq!(reason(Npi::parse("npi", &other)), Some("NPI_CHECK_DIGIT"));
                }
            }
        }
        for bad in [
            "",
            "123456789",
            "12345678931",
            "3234567893",
            "0234567893",
            "12345678a3",
        ] {
            assert_eq!(
                reason(Npi::parse("npi", bad)),
                Some("NPI_INVALID"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn eins() {
        for (text, digits, dashed) in [
            ("12-3456789", "123456789", "12-3456789"),
            ("123456789", "123456789", "12-3456789"),
            ("01-0000001", "010000001", "01-0000001"),
            ("98-7654321", "987654321", "98-7654321"),
        ] {
            let ein = Ein::parse("ein", text).unwrap();
            assert_eq!(ein.as_str(), digits);
            assert_eq!(ein.display(), dashed);
            assert_eq!(ein.to_string(), dashed);
        }
        for bad in [
            "",
            "12345678",
            "1234567890",
            "123-456789",
            "12-34567-89",
            "12 3456789",
            "1a3456789",
        ] {
            let error = Ein::parse("ein", bad).unwrap_err();
            assert_eq!(error.reason, "EIN_INVALID", "{bad:?}");
            assert!(!error.message.contains("prefix"));
        }
        for prefix in EIN_UNISSUED_PREFIXES {
            let error = Ein::parse("ein", &format!("{prefix}-1234567")).unwrap_err();
            assert_eq!(error.reason, "EIN_INVALID");
            assert!(error.message.contains("not an IRS-issued prefix"));
        }
    }

    #[test]
    fn taxonomies() {
        for ok in ["207Q00000X", "261QP2300X", "390200000X"] {
            assert_eq!(Taxonomy::parse("t", ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "207Q00000",
            "207Q00000Y",
            "207q00000X",
            "207Q00000x",
            "207Q000000X",
            "207Q-0000X",
        ] {
            assert_eq!(
                reason(Taxonomy::parse("t", bad)),
                Some("TAXONOMY_INVALID"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn places_of_service() {
        for ok in ["01", "02", "10", "11", "99"] {
            assert_eq!(PlaceOfService::parse("pos", ok).unwrap().as_str(), ok);
        }
        for bad in ["", "00", "1", "011", "1A", " 1"] {
            assert_eq!(
                reason(PlaceOfService::parse("pos", bad)),
                Some("PLACE_OF_SERVICE_INVALID"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn payer_ids() {
        let longest = "A".repeat(80);
        for ok in ["AB", "60054", "SX141", longest.as_str()] {
            assert_eq!(PayerId::parse("payer", ok).unwrap().as_str(), ok);
        }
        let too_long = "A".repeat(81);
        for bad in ["", "A", too_long.as_str(), "ab123", "AB-12", "AB 12"] {
            assert_eq!(
                reason(PayerId::parse("payer", bad)),
                Some("PAYER_ID_INVALID"),
                "{bad:?}"
            );
        }
    }
}

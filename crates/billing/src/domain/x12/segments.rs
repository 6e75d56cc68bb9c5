//! X12 text at the lowest level: checking a value before it becomes an element, and a sink that
//! writes segments and counts them (SE01 needs the count).
//!
//! Every value that comes from input goes through [`required`], [`optional`] or [`name`]; the
//! writer's own literals (`NM1`, `46`, `XX`…) do not need to. This is the one place that decides
//! what data may look like, so a separator in a name can never reach the file.

use chrono::{Datelike, NaiveDate};

use crate::domain::invalid::Invalid;

/// Separates elements: `NM1*85*2`.
pub const ELEMENT_SEPARATOR: char = '*';
/// Separates the components of a composite element: `HC:99213:25`.
pub const COMPONENT_SEPARATOR: char = ':';
/// Separates repetitions of an element (declared in ISA11; the 837P writer never repeats one).
pub const REPETITION_SEPARATOR: char = '^';
/// Ends a segment.
pub const SEGMENT_TERMINATOR: char = '~';

/// Reason: a value contains one of the four separators `~ * : ^`.
pub const SEPARATOR_IN_DATA: &str = "X12_SEPARATOR_IN_DATA";
/// Reason: a value contains a character outside printable ASCII (control characters, line
/// breaks, accented letters).
pub const CHARACTER_INVALID: &str = "X12_CHARACTER_INVALID";
/// Reason: a required value is empty or only spaces.
pub const ELEMENT_EMPTY: &str = "X12_ELEMENT_EMPTY";
/// Reason: a value is longer than its element allows.
pub const ELEMENT_TOO_LONG: &str = "X12_ELEMENT_TOO_LONG";
/// Reason: a date's year does not fit the 4 digits of a D8 date (CCYYMMDD).
pub const DATE_OUT_OF_RANGE: &str = "X12_DATE_OUT_OF_RANGE";

/// A required value: trimmed, not empty, printable ASCII without separators, at most `max`
/// characters. `field` names it in the error.
pub fn required(field: &str, value: &str, max: usize) -> Result<String, Invalid> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Invalid::new(
            field,
            ELEMENT_EMPTY,
            "a value is required here",
        ));
    }
    check_characters(field, value)?;
    // Printable ASCII only (checked above), so bytes are characters.
    if value.len() > max {
        return Err(Invalid::new(
            field,
            ELEMENT_TOO_LONG,
            format!("at most {max} characters fit this X12 element"),
        ));
    }
    Ok(value.to_string())
}

/// An optional value: absent, empty or blank gives `None`; otherwise as [`required`].
pub fn optional(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>, Invalid> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(value) => required(field, value, max).map(Some),
    }
}

/// A required name, address part or code: as [`required`], then upper-cased, the usual form
/// payers expect.
pub fn name(field: &str, value: &str, max: usize) -> Result<String, Invalid> {
    required(field, value, max).map(|v| v.to_ascii_uppercase())
}

/// An optional name or address part: as [`optional`], upper-cased.
pub fn optional_name(
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, Invalid> {
    optional(field, value, max).map(|v| v.map(|v| v.to_ascii_uppercase()))
}

/// A D8 date, `CCYYMMDD`. Years outside 1000..=9999 would not be 8 digits, so they are refused.
pub fn d8(field: &str, date: NaiveDate) -> Result<String, Invalid> {
    if !(1000..=9999).contains(&date.year()) {
        return Err(Invalid::new(
            field,
            DATE_OUT_OF_RANGE,
            "the year must have four digits",
        ));
    }
    Ok(format!(
        "{:04}{:02}{:02}",
        date.year(),
        date.month(),
        date.day()
    ))
}

/// Refuses separators first (the most useful message), then anything not printable ASCII.
fn check_characters(field: &str, value: &str) -> Result<(), Invalid> {
    let separators = [
        SEGMENT_TERMINATOR,
        ELEMENT_SEPARATOR,
        COMPONENT_SEPARATOR,
        REPETITION_SEPARATOR,
    ];
    if let Some(found) = value.chars().find(|c| separators.contains(c)) {
        return Err(Invalid::new(
            field,
            SEPARATOR_IN_DATA,
            format!("the character '{found}' separates X12 data and cannot appear in a value"),
        ));
    }
    if !value.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        return Err(Invalid::new(
            field,
            CHARACTER_INVALID,
            "only printable ASCII characters (no accents, tabs or line breaks) can be sent",
        ));
    }
    Ok(())
}

/// Joins the components of a composite element with `:`, dropping trailing empty components
/// (X12 forbids trailing separators).
pub fn composite(components: &[&str]) -> String {
    let used = components
        .iter()
        .rposition(|c| !c.is_empty())
        .map_or(0, |last| last + 1);
    components
        .get(..used)
        .unwrap_or_default()
        .join(&COMPONENT_SEPARATOR.to_string())
}

/// Where segments are written, counting them as they go.
#[derive(Debug)]
pub struct Sink {
    out: String,
    terminator: &'static str,
    written: usize,
}

impl Sink {
    /// An empty sink ending each segment with `terminator` (`~` or `~\n`).
    pub fn new(terminator: &'static str) -> Self {
        Self {
            out: String::new(),
            terminator,
            written: 0,
        }
    }

    /// Writes `id*e1*e2…` and the terminator. Trailing empty elements are dropped (X12 forbids
    /// trailing separators); empty ones in the middle stay, holding the positions.
    pub fn segment(&mut self, id: &str, elements: &[&str]) {
        let used = elements
            .iter()
            .rposition(|e| !e.is_empty())
            .map_or(0, |last| last + 1);
        self.out.push_str(id);
        for element in elements.iter().take(used) {
            self.out.push(ELEMENT_SEPARATOR);
            self.out.push_str(element);
        }
        self.out.push_str(self.terminator);
        self.written += 1;
    }

    /// How many segments were written so far: take it at ST, and SE01 is the difference + 1.
    pub fn written(&self) -> usize {
        self.written
    }

    /// The text written.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn required_values_refuse_what_breaks_the_file() {
        let cases = [
            ("  SMITH ", Ok("SMITH")),
            ("O'N-J", Ok("O'N-J")),
            ("", Err(ELEMENT_EMPTY)),
            ("   ", Err(ELEMENT_EMPTY)),
            ("A*B", Err(SEPARATOR_IN_DATA)),
            ("A~B", Err(SEPARATOR_IN_DATA)),
            ("A:B", Err(SEPARATOR_IN_DATA)),
            ("A^B", Err(SEPARATOR_IN_DATA)),
            ("A\nB", Err(CHARACTER_INVALID)),
            ("A\tB", Err(CHARACTER_INVALID)),
            ("JOSÉ", Err(CHARACTER_INVALID)),
            ("ABCDEF", Err(ELEMENT_TOO_LONG)),
            ("ABCDE", Ok("ABCDE")),
        ];
        for (value, expected) in cases {
            let got = required("f", value, 5);
            match expected {
                Ok(text) => assert_eq!(got, Ok(text.to_string()), "{value:?}"),
                Err(reason) => {
                    let error = got.expect_err(value);
                    assert_eq!(error.reason, reason, "{value:?}");
                    assert_eq!(error.field, "f");
                    let data = value.trim();
                    assert!(
                        data.is_empty() || !error.message.contains(data),
                        "{value:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn optional_and_name_forms() {
        assert_eq!(optional("f", None, 5), Ok(None));
        assert_eq!(optional("f", Some("  "), 5), Ok(None));
        assert_eq!(optional("f", Some("ab"), 5), Ok(Some("ab".to_string())));
        assert_eq!(name("f", "Doe", 5), Ok("DOE".to_string()));
        assert_eq!(
            optional_name("f", Some("Ste 4"), 9),
            Ok(Some("STE 4".to_string()))
        );
        assert_eq!(
            optional_name("f", Some("a*"), 9).map_err(|e| e.reason),
            Err(SEPARATOR_IN_DATA)
        );
    }

    #[test]
    fn dates_are_eight_digits() {
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(d8("f", date(2026, 1, 5)), Ok("20260105".to_string()));
        assert_eq!(d8("f", date(1000, 12, 31)), Ok("10001231".to_string()));
        assert_eq!(
            d8("f", date(999, 1, 1)).unwrap_err().reason,
            DATE_OUT_OF_RANGE
        );
        assert_eq!(
            d8("f", date(10000, 1, 1)).unwrap_err().reason,
            DATE_OUT_OF_RANGE
        );
    }

    #[test]
    fn trailing_empties_are_dropped() {
        assert_eq!(composite(&["HC", "99213", "", ""]), "HC:99213");
        assert_eq!(composite(&["HC", "", "25"]), "HC::25");
        assert_eq!(composite(&["", ""]), "");
        let mut sink = Sink::new("~\n");
        sink.segment("NM1", &["87", "2", "", ""]);
        sink.segment("SV1", &["HC:1", "10", "UN", "1", "", "", "1"]);
        sink.segment("X", &[]);
        assert_eq!(sink.written(), 3);
        assert_eq!(sink.finish(), "NM1*87*2~\nSV1*HC:1*10*UN*1***1~\nX~\n");
    }
}

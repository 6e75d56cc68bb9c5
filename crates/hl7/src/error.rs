//! Parse errors that can be logged and turned into ACKs without leaking PHI.
//!
//! An HL7 message is patient data. A parse error therefore carries a stable code and a position
//! (segment index, segment id, field number) and nothing else: no excerpt of the input. Even the
//! segment id is only reported when it is one of the fixed ids the error is about (MSH, FHS, BHS,
//! BTS, FTS): the first three characters of a broken line could be the start of a name.

use std::fmt;

/// Stable, machine-readable reason for a [`ParseError`]. The string from [`ParseErrorCode::as_str`]
/// is part of the API: logs and dashboards may match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParseErrorCode {
    /// The input holds no segment at all (empty or only line breaks / spaces).
    Empty,
    /// The first segment is not MSH.
    FirstSegmentNotMsh,
    /// FHS/BHS/BTS/FTS batch envelopes are refused: this crate parses one message at a time
    /// (the caller splits batches).
    BatchNotSupported,
    /// A second MSH segment: two messages glued together (e.g. a batch without envelopes).
    SecondMsh,
    /// MSH is shorter than `MSH` + field separator + encoding characters.
    MshTooShort,
    /// MSH-1 / MSH-2 are not 5 or 6 distinct ASCII punctuation characters.
    InvalidDelimiters,
    /// A segment does not start with three upper-case letters or digits followed by the field
    /// separator (or the end of the line).
    InvalidSegmentId,
}

impl ParseErrorCode {
    /// The stable code, e.g. `"invalid-segment-id"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty-message",
            Self::FirstSegmentNotMsh => "first-segment-not-msh",
            Self::BatchNotSupported => "batch-not-supported",
            Self::SecondMsh => "second-msh",
            Self::MshTooShort => "msh-too-short",
            Self::InvalidDelimiters => "invalid-delimiters",
            Self::InvalidSegmentId => "invalid-segment-id",
        }
    }
}

impl fmt::Display for ParseErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message that could not be parsed, with where, but never what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// Why.
    pub code: ParseErrorCode,
    /// Zero-based index of the offending segment among the non-empty lines, if any.
    pub segment_index: Option<usize>,
    /// The offending segment's id, only for the fixed ids the parser checks for (MSH and the
    /// batch envelopes); never copied from the input.
    pub segment_id: Option<&'static str>,
    /// Which occurrence of that segment id it is (1-based), when the id is known; this is the
    /// "segment sequence" of an ERR-2 location.
    pub segment_occurrence: Option<usize>,
    /// The HL7 field number (MSH-1 is the field separator), if the error is in one field.
    pub field: Option<usize>,
}

impl ParseError {
    pub(crate) fn new(code: ParseErrorCode) -> Self {
        Self {
            code,
            segment_index: None,
            segment_id: None,
            segment_occurrence: None,
            field: None,
        }
    }

    /// Sets the position; `occurrence` is kept only together with an id.
    pub(crate) fn at(mut self, index: usize, id: Option<&'static str>, occurrence: usize) -> Self {
        self.segment_index = Some(index);
        self.segment_id = id;
        self.segment_occurrence = id.map(|_| occurrence);
        self
    }

    pub(crate) fn field(mut self, field: usize) -> Self {
        self.field = Some(field);
        self
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HL7 parse error {}", self.code)?;
        if let Some(i) = self.segment_index {
            write!(f, " at segment #{i}")?;
        }
        if let Some(id) = self.segment_id {
            write!(f, " ({id}")?;
            if let Some(n) = self.field {
                write!(f, "-{n}")?;
            }
            write!(f, ")")?;
        } else if let Some(n) = self.field {
            write!(f, " field {n}")?;
        }
        Ok(())
    }
}

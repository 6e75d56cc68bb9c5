//! The ER7 writer: build a message field by field; every text value is escaped, so whatever the
//! text holds (delimiters, line breaks, the two characters `""`) it reads back unchanged.
//!
//! ```
//! use pm_hl7::{Delimiters, FieldValue, Message, MessageWriter};
//!
//! let mut w = MessageWriter::new(Delimiters::default());
//! w.msh()
//!     .text(3, "GATEWAY")?
//!     .field(9, &FieldValue::components(["ADT", "A01", "ADT_A01"]))?
//!     .text(10, "MSG0001")?
//!     .text(12, "2.5.1")?;
//! w.segment("PID")?
//!     .text(1, "1")?
//!     .field(5, &FieldValue::components(["O'Brien|Smith", "Ann"]))?;
//! let msg = Message::parse(&w.to_er7())?;
//! assert_eq!(msg.get("PID-5.1")?.as_str(), Some("O'Brien|Smith"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::encoding::Delimiters;
use crate::message::{Field, Value, is_segment_id};

/// Highest field number the writer accepts. Real segments stop well below 100; the bound turns a
/// mistaken huge index into an error instead of a huge allocation.
pub const MAX_FIELD: usize = 999;

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Segment ids are three upper-case letters or digits starting with a letter.
    #[error("segment id must be three upper-case letters or digits")]
    InvalidSegmentId,
    /// MSH is written by [`MessageWriter::new`]; batch envelopes are not supported.
    #[error("MSH, FHS, BHS, BTS and FTS cannot be added as ordinary segments")]
    ReservedSegment,
    /// Field 0, a field above [`MAX_FIELD`], or MSH-1/MSH-2 (they are the delimiters).
    #[error("field number out of range (1..=999, and MSH-1/MSH-2 are fixed)")]
    FieldOutOfRange,
    /// Raw (pre-encoded) text containing the field separator or a line break.
    #[error("raw field text must not contain the field separator or line breaks")]
    RawBreaksStructure,
}

/// A field value before escaping: repetitions of components of subcomponents, as plain text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldValue {
    repetitions: Vec<Vec<Vec<String>>>,
}

impl FieldValue {
    /// A single text value.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            repetitions: vec![vec![vec![text.into()]]],
        }
    }

    /// One repetition made of components (no subcomponents), e.g. `["Smith", "Ann"]`.
    pub fn components<S: Into<String>>(components: impl IntoIterator<Item = S>) -> Self {
        Self {
            repetitions: vec![components.into_iter().map(|c| vec![c.into()]).collect()],
        }
    }

    /// The full structure: repetitions → components → subcomponents.
    pub fn from_repetitions(repetitions: Vec<Vec<Vec<String>>>) -> Self {
        Self { repetitions }
    }

    /// Adds a repetition made of components (no subcomponents).
    pub fn push_repetition<S: Into<String>>(
        &mut self,
        components: impl IntoIterator<Item = S>,
    ) -> &mut Self {
        self.repetitions
            .push(components.into_iter().map(|c| vec![c.into()]).collect());
        self
    }

    /// The structure as given.
    pub fn repetitions(&self) -> &[Vec<Vec<String>>] {
        &self.repetitions
    }

    fn encode(&self, d: &Delimiters) -> String {
        let mut out = String::new();
        for (r, rep) in self.repetitions.iter().enumerate() {
            if r > 0 {
                out.push(d.repetition());
            }
            for (c, comp) in rep.iter().enumerate() {
                if c > 0 {
                    out.push(d.component());
                }
                for (s, sub) in comp.iter().enumerate() {
                    if s > 0 {
                        out.push(d.subcomponent());
                    }
                    out.push_str(&d.escape_text(sub));
                }
            }
        }
        out
    }
}

/// A segment being written. Obtain one from [`MessageWriter::msh`] or [`MessageWriter::segment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentWriter {
    id: String,
    delimiters: Delimiters,
    /// Encoded text of fields 1..; for MSH, fields 1 and 2 are the delimiters.
    fields: Vec<String>,
    is_msh: bool,
}

impl SegmentWriter {
    fn slot(&mut self, n: usize) -> Result<&mut String, WriteError> {
        let first_free = if self.is_msh { 3 } else { 1 };
        if n < first_free || n > MAX_FIELD {
            return Err(WriteError::FieldOutOfRange);
        }
        if self.fields.len() < n {
            self.fields.resize(n, String::new());
        }
        // `n >= 1` and `fields.len() >= n`, so the slot exists.
        self.fields
            .get_mut(n - 1)
            .ok_or(WriteError::FieldOutOfRange)
    }

    /// Sets field `n` to one text value (escaped).
    pub fn text(&mut self, n: usize, text: &str) -> Result<&mut Self, WriteError> {
        let encoded = self.delimiters.escape_text(text).into_owned();
        *self.slot(n)? = encoded;
        Ok(self)
    }

    /// Sets field `n` to a structured value (every leaf escaped).
    pub fn field(&mut self, n: usize, value: &FieldValue) -> Result<&mut Self, WriteError> {
        let encoded = value.encode(&self.delimiters);
        *self.slot(n)? = encoded;
        Ok(self)
    }

    /// Sets field `n` to the HL7 null `""` ("delete the stored value").
    pub fn null(&mut self, n: usize) -> Result<&mut Self, WriteError> {
        *self.slot(n)? = "\"\"".to_owned();
        Ok(self)
    }

    /// Sets field `n` to already-encoded text (component/repetition delimiters and escape
    /// sequences are kept as given). Refuses text that would break the segment structure.
    pub fn raw(&mut self, n: usize, raw: &str) -> Result<&mut Self, WriteError> {
        if raw.contains(self.delimiters.field()) || raw.contains(['\r', '\n']) {
            return Err(WriteError::RawBreaksStructure);
        }
        *self.slot(n)? = raw.to_owned();
        Ok(self)
    }

    /// Copies a field read from a parsed message into field `n`: byte-exact when both use the
    /// same delimiters, otherwise re-encoded leaf by leaf (decoded, then escaped with this
    /// segment's delimiters; empty and null leaves stay empty and null).
    pub fn copy_field(&mut self, n: usize, field: Field<'_>) -> Result<&mut Self, WriteError> {
        let d = self.delimiters;
        let encoded = if field.delimiters() == d {
            field.raw().to_owned()
        } else {
            let mut out = String::new();
            for (r, rep) in field.repetitions().enumerate() {
                if r > 0 {
                    out.push(d.repetition());
                }
                for (c, comp) in rep.components().enumerate() {
                    if c > 0 {
                        out.push(d.component());
                    }
                    for (s, sub) in comp.subcomponents().enumerate() {
                        if s > 0 {
                            out.push(d.subcomponent());
                        }
                        match sub.value() {
                            Value::Null => out.push_str("\"\""),
                            Value::Text(t) => out.push_str(&d.escape_text(&t)),
                            Value::Empty | Value::Absent => {}
                        }
                    }
                }
            }
            out
        };
        *self.slot(n)? = encoded;
        Ok(self)
    }

    fn write_to(&self, out: &mut String) {
        out.push_str(&self.id);
        let sep = self.delimiters.field();
        // MSH: "MSH" + MSH-1 (the separator itself) + MSH-2 + "|" + MSH-3 ...
        let rest = if self.is_msh {
            self.fields.get(1..).unwrap_or_default()
        } else {
            &self.fields
        };
        for f in rest {
            out.push(sep);
            out.push_str(f);
        }
        out.push('\r');
    }
}

/// Builds one message, MSH first, and writes it as ER7 with CR segment terminators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageWriter {
    delimiters: Delimiters,
    msh: SegmentWriter,
    segments: Vec<SegmentWriter>,
}

impl MessageWriter {
    /// A message whose MSH-1/MSH-2 declare `delimiters`.
    pub fn new(delimiters: Delimiters) -> Self {
        let msh = SegmentWriter {
            id: "MSH".to_owned(),
            delimiters,
            fields: vec![
                delimiters.field().to_string(),
                delimiters.encoding_characters(),
            ],
            is_msh: true,
        };
        Self {
            delimiters,
            msh,
            segments: Vec::new(),
        }
    }

    /// The delimiters in use.
    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    /// The MSH segment; fields 3 and up can be set.
    pub fn msh(&mut self) -> &mut SegmentWriter {
        &mut self.msh
    }

    /// Appends a new segment and returns it for filling.
    pub fn segment(&mut self, id: &str) -> Result<&mut SegmentWriter, WriteError> {
        if matches!(id, "MSH" | "FHS" | "BHS" | "BTS" | "FTS") {
            return Err(WriteError::ReservedSegment);
        }
        if !is_segment_id(id) {
            return Err(WriteError::InvalidSegmentId);
        }
        self.segments.push(SegmentWriter {
            id: id.to_owned(),
            delimiters: self.delimiters,
            fields: Vec::new(),
            is_msh: false,
        });
        self.segments.last_mut().ok_or(WriteError::InvalidSegmentId)
    }

    /// The message as ER7 text, every segment ended by CR.
    pub fn to_er7(&self) -> String {
        let mut out = String::new();
        for s in std::iter::once(&self.msh).chain(&self.segments) {
            s.write_to(&mut out);
        }
        out
    }
}

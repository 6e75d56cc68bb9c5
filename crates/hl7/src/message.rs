//! The lenient ER7 reader: [`Message`], [`Segment`] and borrowed views down to subcomponents.
//!
//! A parsed message keeps every segment's text exactly as received (still escaped) and only
//! remembers where its fields start and end. Repetitions, components and subcomponents are split
//! on demand, and escape sequences are decoded only when a leaf value is asked for. This keeps the
//! parser small, makes [`Message::to_er7`] byte-exact (apart from line endings), and means a
//! malformed field deep inside a segment the gateway never reads cannot fail the whole message.

use std::borrow::Cow;
use std::ops::Range;

use crate::encoding::Delimiters;
use crate::error::{ParseError, ParseErrorCode};
use crate::path::{Path, PathError};

/// A decoded leaf value, keeping apart the four states HL7 gives meaning to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// Not in the message at all: the segment, field, repetition, component or subcomponent does
    /// not exist. For an update this means "leave the stored value alone".
    Absent,
    /// Present but empty (`||`). Treated like absent by most receivers, but visible here.
    Empty,
    /// The HL7 null `""`: the sender asks to *delete* the stored value.
    Null,
    /// Text with escape sequences decoded. Never empty as received, but it can decode to an
    /// empty string (a value made only of `\H\`/`\N\` highlighting marks).
    Text(Cow<'a, str>),
}

impl<'a> Value<'a> {
    /// The text, if there is some (`Text` only).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    /// True for `Text`, i.e. the sender put a value there.
    pub fn is_text(&self) -> bool {
        matches!(self, Value::Text(_))
    }

    /// Detaches the value from the message it was read from.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Absent => Value::Absent,
            Value::Empty => Value::Empty,
            Value::Null => Value::Null,
            Value::Text(t) => Value::Text(Cow::Owned(t.into_owned())),
        }
    }

    fn from_raw(raw: &'a str, delimiters: &Delimiters) -> Self {
        match raw {
            "" => Value::Empty,
            "\"\"" => Value::Null,
            _ => Value::Text(delimiters.unescape(raw)),
        }
    }
}

/// True for a well-formed segment id: three ASCII upper-case letters or digits, starting with a
/// letter (`PID`, `ZPI`, `IN1`).
pub(crate) fn is_segment_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 3
        && b[0].is_ascii_uppercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// One parsed HL7 v2 message: its delimiters and its segments, MSH first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    delimiters: Delimiters,
    segments: Vec<Segment>,
}

impl Message {
    /// Parses one ER7 message.
    ///
    /// Lenient where real feeds deviate: segments may end with CR, LF or CRLF (mixed too), blank
    /// lines and a leading UTF-8 byte-order mark are skipped, delimiters are whatever MSH-1/MSH-2
    /// declare, trailing fields may be missing. Strict where guessing would be dangerous: the first
    /// segment must be MSH, MSH-2 must hold 4 or 5 distinct ASCII punctuation characters, every
    /// segment id must look like one, and FHS/BHS batch envelopes or a second MSH are refused (the
    /// caller splits batches into messages first).
    ///
    /// Line breaks inside field data are not supported: the standard requires them to be escaped
    /// (`\.br\` or `\X0A\`), and a raw one is indistinguishable from a segment end.
    pub fn parse(input: &str) -> Result<Message, ParseError> {
        let input = input.strip_prefix('\u{feff}').unwrap_or(input);
        let mut lines = input
            .split(['\r', '\n'])
            .filter(|line| !line.trim().is_empty());

        let first = lines
            .next()
            .ok_or_else(|| ParseError::new(ParseErrorCode::Empty))?;
        let msh = parse_msh(first)?;
        let delimiters = msh.delimiters;
        let mut segments = vec![msh];

        for (i, line) in lines.enumerate() {
            let index = i + 1;
            let reserved = match line.get(..3) {
                Some("MSH") => Some(("MSH", ParseErrorCode::SecondMsh)),
                Some("FHS") => Some(("FHS", ParseErrorCode::BatchNotSupported)),
                Some("BHS") => Some(("BHS", ParseErrorCode::BatchNotSupported)),
                Some("BTS") => Some(("BTS", ParseErrorCode::BatchNotSupported)),
                Some("FTS") => Some(("FTS", ParseErrorCode::BatchNotSupported)),
                _ => None,
            };
            if let Some((id, code)) = reserved {
                let occurrence = segments.iter().filter(|s| s.id() == id).count() + 1;
                return Err(ParseError::new(code).at(index, Some(id), occurrence));
            }
            let segment = Segment::parse_plain(line, delimiters).ok_or_else(|| {
                ParseError::new(ParseErrorCode::InvalidSegmentId).at(index, None, 0)
            })?;
            segments.push(segment);
        }
        Ok(Message {
            delimiters,
            segments,
        })
    }

    /// The delimiters declared in MSH-1/MSH-2.
    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    /// The MSH segment (always present in a parsed message).
    pub fn msh(&self) -> &Segment {
        // `parse` always puts MSH first, so the fallback is never used; it exists so that this
        // accessor needs neither a panic path nor an `Option` the caller would have to unwrap.
        self.segments.first().unwrap_or(&EMPTY_SEGMENT)
    }

    /// All segments in order, MSH first.
    pub fn all_segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The segments with the given id, in order (`msg.segments("OBX")`).
    pub fn segments<'m>(&'m self, id: &str) -> impl Iterator<Item = &'m Segment> {
        self.segments.iter().filter(move |s| s.id() == id)
    }

    /// The first segment with the given id.
    pub fn segment(&self, id: &str) -> Option<&Segment> {
        self.segments(id).next()
    }

    /// Reads one decoded value with a terser-like path, e.g. `msg.get("PID-3[2].1")`.
    ///
    /// Syntax (see [`Path`]): `SEG[occurrence]-field[repetition].component.subcomponent`, all
    /// 1-based, everything after the field optional and defaulting to 1. So `PID-5` is the family
    /// name (first repetition, first component), `PID-3[2].4.2` is the universal id of the
    /// assigning authority of the second identifier, and `OBX[3]-5` is OBX-5 of the third OBX.
    ///
    /// A malformed path is an error (it is a bug in the caller); a well-formed path that points at
    /// nothing gives [`Value::Absent`].
    pub fn get(&self, path: &str) -> Result<Value<'_>, PathError> {
        Ok(self.get_path(&path.parse()?))
    }

    /// [`Message::get`] with an already parsed path.
    pub fn get_path(&self, path: &Path) -> Value<'_> {
        self.segments(path.segment())
            .nth(path.occurrence() - 1)
            .map_or(Value::Absent, |s| {
                s.value(
                    path.field(),
                    path.repetition(),
                    path.component(),
                    path.subcomponent(),
                )
            })
    }

    /// MSH-9.1, e.g. `ADT`.
    pub fn message_type(&self) -> Value<'_> {
        self.msh().value(9, 1, 1, 1)
    }

    /// MSH-9.2, e.g. `A01`.
    pub fn trigger_event(&self) -> Value<'_> {
        self.msh().value(9, 1, 2, 1)
    }

    /// MSH-10, the sender's message control id (what MSA-2 of the ACK must echo).
    pub fn control_id(&self) -> Value<'_> {
        self.msh().value(10, 1, 1, 1)
    }

    /// MSH-12.1, the version id, e.g. `2.5.1`.
    pub fn version(&self) -> Value<'_> {
        self.msh().value(12, 1, 1, 1)
    }

    /// The message as ER7 text: every segment exactly as received, each ended by CR (so LF or
    /// CRLF input comes out with the standard CR endings).
    pub fn to_er7(&self) -> String {
        let mut out = String::with_capacity(self.segments.iter().map(|s| s.line.len() + 1).sum());
        for s in &self.segments {
            out.push_str(&s.line);
            out.push('\r');
        }
        out
    }
}

static EMPTY_SEGMENT: Segment = Segment {
    line: String::new(),
    fields: Vec::new(),
    delimiters: Delimiters::STANDARD,
    atomic_fields: 0,
};

/// Parses the MSH line: the field separator is the byte after `MSH`, MSH-2 runs up to the next
/// field separator.
fn parse_msh(line: &str) -> Result<Segment, ParseError> {
    match line.get(..3) {
        Some("MSH") => {}
        Some("FHS") => {
            return Err(ParseError::new(ParseErrorCode::BatchNotSupported).at(0, Some("FHS"), 1));
        }
        Some("BHS") => {
            return Err(ParseError::new(ParseErrorCode::BatchNotSupported).at(0, Some("BHS"), 1));
        }
        _ => return Err(ParseError::new(ParseErrorCode::FirstSegmentNotMsh).at(0, None, 0)),
    }
    let id = Some("MSH");
    let too_short = || ParseError::new(ParseErrorCode::MshTooShort).at(0, id, 1);
    let bad_delimiters = |field| {
        ParseError::new(ParseErrorCode::InvalidDelimiters)
            .at(0, id, 1)
            .field(field)
    };
    // `MSH` is ASCII, so byte 3 starts a character.
    let separator = line[3..].chars().next().ok_or_else(too_short)?;
    if !separator.is_ascii_punctuation() {
        return Err(bad_delimiters(1));
    }
    let after = &line[4..];
    let msh2_len = after.find(separator).unwrap_or(after.len());
    if msh2_len == 0 {
        return Err(too_short());
    }
    let delimiters =
        Delimiters::from_msh(separator, &after[..msh2_len]).map_err(|_| bad_delimiters(2))?;

    // MSH-1 is the separator itself (bytes 3..4), MSH-2 the encoding characters; the rest is split
    // like any other segment.
    let mut fields = vec![3..4, 4..4 + msh2_len];
    let rest_start = 4 + msh2_len;
    if rest_start < line.len() {
        fields.extend(split_ranges(line, rest_start + 1, separator));
    }
    Ok(Segment {
        line: line.to_owned(),
        fields,
        delimiters,
        atomic_fields: 2,
    })
}

/// Byte ranges of the `separator`-separated parts of `line[start..]`.
fn split_ranges(
    line: &str,
    start: usize,
    separator: char,
) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut pos = start;
    line[start..].split(separator).map(move |part| {
        let range = pos..pos + part.len();
        pos = range.end + separator.len_utf8();
        range
    })
}

/// One segment: its text as received and where each field is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    line: String,
    /// `fields[0]` is field 1.
    fields: Vec<Range<usize>>,
    delimiters: Delimiters,
    /// How many leading fields are never split or decoded (2 for MSH: MSH-1 and MSH-2).
    atomic_fields: usize,
}

impl Segment {
    /// Parses a non-MSH segment line; `None` if the segment id is malformed.
    fn parse_plain(line: &str, delimiters: Delimiters) -> Option<Segment> {
        line.get(..3).filter(|id| is_segment_id(id))?;
        // The id is three ASCII bytes, so byte 3 is a character boundary.
        let rest = &line[3..];
        let fields = if rest.is_empty() {
            Vec::new()
        } else if rest.starts_with(delimiters.field()) {
            split_ranges(line, 4, delimiters.field()).collect()
        } else {
            return None;
        };
        Some(Segment {
            line: line.to_owned(),
            fields,
            delimiters,
            atomic_fields: 0,
        })
    }

    /// The segment id, e.g. `PID`.
    pub fn id(&self) -> &str {
        self.line.get(..3).unwrap_or("")
    }

    /// The segment text as received (escaped, without the line ending).
    pub fn raw(&self) -> &str {
        &self.line
    }

    /// How many fields the segment has (MSH counts MSH-1 and MSH-2).
    pub fn field_count(&self) -> usize {
        self.fields.len()
    }

    /// Field `n` (1-based, HL7 numbering: for MSH, field 1 is the field separator), or `None` if
    /// the segment has fewer fields.
    pub fn field(&self, n: usize) -> Option<Field<'_>> {
        let range = self.fields.get(n.checked_sub(1)?)?;
        Some(Field {
            raw: self.line.get(range.clone())?,
            delimiters: self.delimiters,
            atomic: n <= self.atomic_fields,
        })
    }

    /// All fields, field 1 first.
    pub fn fields(&self) -> impl Iterator<Item = Field<'_>> {
        (1..=self.fields.len()).filter_map(|n| self.field(n))
    }

    /// The decoded value at field/repetition/component/subcomponent (all 1-based).
    pub fn value(
        &self,
        field: usize,
        repetition: usize,
        component: usize,
        sub: usize,
    ) -> Value<'_> {
        self.field(field)
            .and_then(|f| f.repetition(repetition))
            .and_then(|r| r.component(component))
            .and_then(|c| c.subcomponent(sub))
            .map_or(Value::Absent, |s| s.value())
    }
}

/// Returns part `n` (1-based) of `raw` split on `separator`, or the whole of `raw` for part 1 when
/// `atomic`.
fn nth_part(raw: &str, separator: char, n: usize, atomic: bool) -> Option<&str> {
    if atomic {
        return (n == 1).then_some(raw);
    }
    raw.split(separator).nth(n.checked_sub(1)?)
}

/// The parts of `raw` split on `separator` (just `raw` when `atomic`), in one linear pass.
fn parts(raw: &str, separator: char, atomic: bool) -> impl Iterator<Item = &str> {
    let mut split = (!atomic).then(|| raw.split(separator));
    let mut whole = atomic.then_some(raw);
    std::iter::from_fn(move || match &mut split {
        Some(split) => split.next(),
        None => whole.take(),
    })
}

macro_rules! view {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<'a> {
            raw: &'a str,
            delimiters: Delimiters,
            atomic: bool,
        }

        impl<'a> $name<'a> {
            /// The text as received, escape sequences and inner delimiters included.
            pub fn raw(&self) -> &'a str {
                self.raw
            }

            /// The message's delimiters (needed to decode or copy this part).
            pub fn delimiters(&self) -> Delimiters {
                self.delimiters
            }

            /// True for the HL7 null `""` ("delete the stored value").
            pub fn is_null(&self) -> bool {
                self.raw == "\"\""
            }

            /// True when present but empty.
            pub fn is_empty(&self) -> bool {
                self.raw.is_empty()
            }
        }
    };
}

view!(
    /// A field: one or more repetitions separated by `~`.
    Field
);
view!(
    /// One repetition of a field: components separated by `^`.
    Repetition
);
view!(
    /// One component: subcomponents separated by `&`.
    Component
);
view!(
    /// One subcomponent: a leaf, decoded by [`Subcomponent::value`].
    Subcomponent
);

impl<'a> Field<'a> {
    /// Repetition `n` (1-based). An empty field has one, empty, repetition.
    pub fn repetition(&self, n: usize) -> Option<Repetition<'a>> {
        let raw = nth_part(self.raw, self.delimiters.repetition(), n, self.atomic)?;
        Some(Repetition {
            raw,
            delimiters: self.delimiters,
            atomic: self.atomic,
        })
    }

    /// All repetitions in order.
    pub fn repetitions(&self) -> impl Iterator<Item = Repetition<'a>> + 'a {
        let (delimiters, atomic) = (self.delimiters, self.atomic);
        parts(self.raw, delimiters.repetition(), atomic).map(move |raw| Repetition {
            raw,
            delimiters,
            atomic,
        })
    }

    /// Component `n` of the first repetition.
    pub fn component(&self, n: usize) -> Option<Component<'a>> {
        self.repetition(1)?.component(n)
    }

    /// The decoded first leaf (first repetition, component and subcomponent).
    pub fn value(&self) -> Value<'a> {
        self.repetition(1).map_or(Value::Absent, |r| r.value())
    }
}

impl<'a> Repetition<'a> {
    /// Component `n` (1-based).
    pub fn component(&self, n: usize) -> Option<Component<'a>> {
        let raw = nth_part(self.raw, self.delimiters.component(), n, self.atomic)?;
        Some(Component {
            raw,
            delimiters: self.delimiters,
            atomic: self.atomic,
        })
    }

    /// All components in order.
    pub fn components(&self) -> impl Iterator<Item = Component<'a>> + 'a {
        let (delimiters, atomic) = (self.delimiters, self.atomic);
        parts(self.raw, delimiters.component(), atomic).map(move |raw| Component {
            raw,
            delimiters,
            atomic,
        })
    }

    /// The decoded first leaf (first component and subcomponent).
    pub fn value(&self) -> Value<'a> {
        self.component(1).map_or(Value::Absent, |c| c.value())
    }
}

impl<'a> Component<'a> {
    /// Subcomponent `n` (1-based).
    pub fn subcomponent(&self, n: usize) -> Option<Subcomponent<'a>> {
        let raw = nth_part(self.raw, self.delimiters.subcomponent(), n, self.atomic)?;
        Some(Subcomponent {
            raw,
            delimiters: self.delimiters,
            atomic: self.atomic,
        })
    }

    /// All subcomponents in order.
    pub fn subcomponents(&self) -> impl Iterator<Item = Subcomponent<'a>> + 'a {
        let (delimiters, atomic) = (self.delimiters, self.atomic);
        parts(self.raw, delimiters.subcomponent(), atomic).map(move |raw| Subcomponent {
            raw,
            delimiters,
            atomic,
        })
    }

    /// The decoded first subcomponent.
    pub fn value(&self) -> Value<'a> {
        self.subcomponent(1).map_or(Value::Absent, |s| s.value())
    }
}

impl<'a> Subcomponent<'a> {
    /// The decoded value: `Empty`, `Null` or `Text` with escape sequences decoded. MSH-1 and
    /// MSH-2 are returned as they are (they *are* the delimiters, never escaped).
    pub fn value(&self) -> Value<'a> {
        if self.atomic {
            return Value::Text(Cow::Borrowed(self.raw));
        }
        Value::from_raw(self.raw, &self.delimiters)
    }
}

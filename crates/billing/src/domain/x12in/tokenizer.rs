//! X12 text to segments, and the envelope checked: ISA/IEA, GS/GE, ST/SE.
//!
//! The delimiters are not fixed: each interchange declares them in its ISA segment, which has a
//! fixed width (106 characters) precisely so a reader can find them before knowing them. The
//! tokenizer reads them there, splits the rest, then checks that every envelope's trailer agrees
//! with its header (control numbers and counts), so the transaction readers above it only ever
//! see a well-formed list of transactions.
//!
//! It never panics on any input: every element access goes through [`Segment::element`], which
//! returns `""` for an element that is not there.

use crate::domain::invalid::Invalid;

/// Reason: the file is not a well-formed interchange (no 106-character ISA, bad delimiters,
/// missing or misplaced envelope segment, control numbers that do not match).
pub const ENVELOPE_INVALID: &str = "X12_ENVELOPE_INVALID";
/// Reason: a trailer's count (IEA01, GE01, SE01) does not match what the file holds.
pub const SEGMENT_COUNT: &str = "X12_SEGMENT_COUNT";
/// Reason: the file is larger than [`MAX_BYTES`], or has more than [`MAX_SEGMENTS`] segments or
/// [`MAX_ELEMENTS`] elements.
pub const TOO_LARGE: &str = "X12_TOO_LARGE";

/// The largest file accepted: 10 MiB. Clearinghouse files of a practice are far smaller; the
/// bound keeps one bad upload from holding the service's memory.
pub const MAX_BYTES: usize = 10 * 1024 * 1024;
/// The most segments accepted in one file.
pub const MAX_SEGMENTS: usize = 200_000;
/// The most elements accepted in one file (about ten per segment at [`MAX_SEGMENTS`]). Without
/// it a 10 MiB file of separators alone would make ten million element slices (160 MB).
pub const MAX_ELEMENTS: usize = 2_000_000;

/// The ISA segment's fixed length, terminator included.
const ISA_LENGTH: usize = 106;
/// Byte offsets, inside the ISA, of the 16 element separators (all must be the same byte).
const ISA_SEPARATOR_OFFSETS: [usize; 16] = [
    3, 6, 17, 20, 31, 34, 50, 53, 69, 76, 81, 83, 89, 99, 101, 103,
];
/// Offset of ISA11 (repetition separator in 5010, a standards identifier in 4010).
const ISA11_OFFSET: usize = 82;
/// Offset of ISA16, the component separator.
const ISA16_OFFSET: usize = 104;
/// Offset of the segment terminator, the byte after ISA16.
const TERMINATOR_OFFSET: usize = 105;

/// The delimiters an interchange declares in its ISA segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    /// Between elements (ISA byte 3), usually `*`.
    pub element: char,
    /// Between repetitions (ISA11), usually `^`; `None` when ISA11 is a letter (4010 files put a
    /// standards identifier such as `U` there).
    pub repetition: Option<char>,
    /// Between the components of a composite element (ISA16), usually `:`.
    pub component: char,
    /// Ends a segment (the byte after ISA16), usually `~`.
    pub segment: char,
}

/// One segment: its id and its elements, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    /// The segment id: `CLP`, `SVC`…
    pub id: &'a str,
    /// Elements 1.. (index 0 here is element 1).
    elements: Vec<&'a str>,
    /// The component separator, to split composites.
    component: char,
}

impl<'a> Segment<'a> {
    /// Element `n` (1-based, as X12 numbers them: `CLP04` is `element(4)`), or `""` when the
    /// segment is shorter.
    pub fn element(&self, n: usize) -> &'a str {
        n.checked_sub(1)
            .and_then(|i| self.elements.get(i))
            .copied()
            .unwrap_or("")
    }

    /// Element `n` split into its components (`HC:99213:25` gives `["HC", "99213", "25"]`).
    /// An empty element gives one empty component.
    pub fn components(&self, n: usize) -> Vec<&'a str> {
        self.element(n).split(self.component).collect()
    }

    /// How many elements the segment has (trailing empty ones included if written).
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    /// Whether the segment has no elements at all (`LX` alone).
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }
}

/// One transaction set (ST to SE): its id, control number and the segments between ST and SE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction<'a> {
    /// ST01: `835`, `999`, `277`.
    pub id: &'a str,
    /// ST02, the transaction set control number (also in SE02).
    pub control_number: &'a str,
    /// ST03, the implementation guide version, when present (`005010X221A1`).
    pub version: &'a str,
    /// The segments after ST and before SE.
    pub segments: Vec<Segment<'a>>,
}

/// One functional group (GS to GE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group<'a> {
    /// GS01, the functional identifier: `HP` (835), `FA` (999), `HN` (277).
    pub functional_id: &'a str,
    /// GS06, the group control number (also in GE02).
    pub control_number: &'a str,
    /// GS08, the version: `005010X221A1`.
    pub version: &'a str,
    /// The transactions, in file order.
    pub transactions: Vec<Transaction<'a>>,
}

/// One interchange (ISA to IEA), envelope checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interchange<'a> {
    /// The delimiters read from the ISA.
    pub delimiters: Delimiters,
    /// ISA13, the interchange control number (also in IEA02).
    pub control_number: &'a str,
    /// The groups, in file order.
    pub groups: Vec<Group<'a>>,
}

impl<'a> Interchange<'a> {
    /// Every transaction of every group, in file order.
    pub fn transactions(&self) -> impl Iterator<Item = &Transaction<'a>> {
        self.groups.iter().flat_map(|g| g.transactions.iter())
    }
}

/// Reads one interchange: delimiters from the ISA, then the segments, then the envelope checks.
/// Anything after IEA other than line breaks or spaces is refused: one file, one interchange.
pub fn tokenize(text: &str) -> Result<Interchange<'_>, Invalid> {
    if text.len() > MAX_BYTES {
        return Err(Invalid::new(
            "file",
            TOO_LARGE,
            format!("an X12 file is at most {MAX_BYTES} bytes"),
        ));
    }
    let delimiters = read_delimiters(text)?;
    let segments = split_segments(text, delimiters)?;
    Envelope::new(segments).read(delimiters)
}

/// Reads the delimiters from the fixed-width ISA and checks they can work as delimiters.
pub fn read_delimiters(text: &str) -> Result<Delimiters, Invalid> {
    let isa = text.as_bytes().get(..ISA_LENGTH).ok_or_else(|| {
        envelope_error(
            "ISA",
            "an X12 file starts with a 106-character ISA segment; this one is shorter",
        )
    })?;
    if !isa.starts_with(b"ISA") || !isa.is_ascii() {
        return Err(envelope_error(
            "ISA",
            "an X12 file starts with a 106-character ISA segment in plain ASCII",
        ));
    }
    // The slice is ASCII (checked above), so every offset below is in range and a whole char.
    let byte = |offset: usize| isa.get(offset).copied().map(char::from).unwrap_or('\0');
    let element = byte(3);
    if ISA_SEPARATOR_OFFSETS.iter().any(|&o| byte(o) != element) {
        return Err(envelope_error(
            "ISA",
            "the ISA elements do not have their fixed widths (the ISA must be exactly 106 characters)",
        ));
    }
    let isa11 = byte(ISA11_OFFSET);
    let delimiters = Delimiters {
        element,
        repetition: (!isa11.is_ascii_alphanumeric()).then_some(isa11),
        component: byte(ISA16_OFFSET),
        segment: byte(TERMINATOR_OFFSET),
    };
    check_delimiters(delimiters)?;
    Ok(delimiters)
}

/// Delimiters must be distinct and cannot be letters, digits or spaces (they would cut data).
fn check_delimiters(d: Delimiters) -> Result<(), Invalid> {
    let mut all = vec![d.element, d.component, d.segment];
    all.extend(d.repetition);
    let unusable = |c: &char| c.is_ascii_alphanumeric() || *c == ' ';
    if all.iter().any(unusable) {
        return Err(envelope_error(
            "ISA",
            "a delimiter declared in the ISA is a letter, digit or space",
        ));
    }
    let mut distinct = all.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != all.len() {
        return Err(envelope_error(
            "ISA",
            "the ISA declares the same character for two different delimiters",
        ));
    }
    Ok(())
}

/// Splits the text into segments. Line breaks around a terminator are tolerated (many files
/// put one segment per line); empty pieces (a trailing terminator, blank lines) are skipped.
fn split_segments(text: &str, d: Delimiters) -> Result<Vec<Segment<'_>>, Invalid> {
    let mut segments = Vec::new();
    let mut element_count = 0;
    for piece in text.split(d.segment) {
        let piece = piece.trim_matches(|c| c == '\r' || c == '\n');
        if piece.trim().is_empty() {
            continue;
        }
        if segments.len() == MAX_SEGMENTS {
            return Err(Invalid::new(
                "file",
                TOO_LARGE,
                format!("an X12 file has at most {MAX_SEGMENTS} segments"),
            ));
        }
        let mut parts = piece.split(d.element);
        let id = parts.next().unwrap_or("");
        let elements: Vec<&str> = parts.take(MAX_ELEMENTS + 1 - element_count).collect();
        element_count += elements.len();
        if element_count > MAX_ELEMENTS {
            return Err(Invalid::new(
                "file",
                TOO_LARGE,
                format!("an X12 file has at most {MAX_ELEMENTS} elements"),
            ));
        }
        segments.push(Segment {
            id,
            elements,
            component: d.component,
        });
    }
    Ok(segments)
}

/// Walks the segments once, checking the envelope nesting and trailers.
struct Envelope<'a> {
    segments: std::vec::IntoIter<Segment<'a>>,
}

impl<'a> Envelope<'a> {
    fn new(segments: Vec<Segment<'a>>) -> Self {
        Self {
            segments: segments.into_iter(),
        }
    }

    fn read(mut self, delimiters: Delimiters) -> Result<Interchange<'a>, Invalid> {
        let isa = self.expect_segment("ISA", "the file")?;
        let control_number = isa.element(13);
        let mut groups = Vec::new();
        loop {
            let segment = self.next_segment("IEA", "the interchange")?;
            match segment.id {
                "GS" => groups.push(self.group(segment)?),
                "IEA" => {
                    check_count("IEA01", "groups", segment.element(1), groups.len())?;
                    check_same("IEA02", "ISA13", control_number, segment.element(2))?;
                    break;
                }
                other => return Err(misplaced(other, "between the groups of the interchange")),
            }
        }
        if let Some(extra) = self.segments.next() {
            return Err(misplaced(extra.id, "after IEA (one interchange per file)"));
        }
        Ok(Interchange {
            delimiters,
            control_number,
            groups,
        })
    }

    fn group(&mut self, gs: Segment<'a>) -> Result<Group<'a>, Invalid> {
        let control_number = gs.element(6);
        let label = format!("group {}", shown(control_number));
        let mut transactions = Vec::new();
        loop {
            let segment = self.next_segment("GE", &label)?;
            match segment.id {
                "ST" => transactions.push(self.transaction(segment)?),
                "GE" => {
                    check_count(
                        &format!("GE01 ({label})"),
                        "transactions",
                        segment.element(1),
                        transactions.len(),
                    )?;
                    check_same(
                        &format!("GE02 ({label})"),
                        "GS06",
                        control_number,
                        segment.element(2),
                    )?;
                    break;
                }
                other => {
                    return Err(misplaced(
                        other,
                        &format!("between the transactions of {label}"),
                    ));
                }
            }
        }
        Ok(Group {
            functional_id: gs.element(1),
            control_number,
            version: gs.element(8),
            transactions,
        })
    }

    fn transaction(&mut self, st: Segment<'a>) -> Result<Transaction<'a>, Invalid> {
        let control_number = st.element(2);
        let label = format!("transaction {}", shown(control_number));
        let mut segments = Vec::new();
        loop {
            let segment = self.next_segment("SE", &label)?;
            match segment.id {
                "SE" => {
                    // SE01 counts ST and SE themselves.
                    check_count(
                        &format!("SE01 ({label})"),
                        "segments",
                        segment.element(1),
                        segments.len() + 2,
                    )?;
                    check_same(
                        &format!("SE02 ({label})"),
                        "ST02",
                        control_number,
                        segment.element(2),
                    )?;
                    break;
                }
                "ST" | "GE" | "GS" | "IEA" | "ISA" => {
                    return Err(envelope_error(
                        format!("SE ({label})"),
                        format!("{label} has no SE before the next {}", segment.id),
                    ));
                }
                _ => segments.push(segment),
            }
        }
        Ok(Transaction {
            id: st.element(1),
            control_number,
            version: st.element(3),
            segments,
        })
    }

    /// The next segment, which must be `id`.
    fn expect_segment(&mut self, id: &str, within: &str) -> Result<Segment<'a>, Invalid> {
        let segment = self.next_segment(id, within)?;
        if segment.id == id {
            Ok(segment)
        } else {
            Err(misplaced(segment.id, &format!("where {within} needs {id}")))
        }
    }

    /// The next segment; running out means the closing `trailer` is missing.
    fn next_segment(&mut self, trailer: &str, within: &str) -> Result<Segment<'a>, Invalid> {
        self.segments.next().ok_or_else(|| {
            envelope_error(
                trailer,
                format!("the file ends before the {trailer} that closes {within}"),
            )
        })
    }
}

/// A trailer's count must be a number equal to what was found.
fn check_count(field: &str, what: &str, written: &str, found: usize) -> Result<(), Invalid> {
    match written.trim().parse::<usize>() {
        Ok(n) if n == found => Ok(()),
        Ok(n) => Err(Invalid::new(
            field,
            SEGMENT_COUNT,
            format!("{field} says {n} {what}; expected {found}, the number found"),
        )),
        Err(_) => Err(Invalid::new(
            field,
            SEGMENT_COUNT,
            format!("{field} must be a count of {what} (digits); expected {found}"),
        )),
    }
}

/// A trailer's control number must repeat the header's. Control numbers are envelope data
/// (never patient data), so the message can show both.
fn check_same(field: &str, header: &str, expected: &str, found: &str) -> Result<(), Invalid> {
    if expected.trim() == found.trim() {
        return Ok(());
    }
    Err(envelope_error(
        field,
        format!(
            "{field} must repeat {header}: expected {}, found {}",
            shown(expected),
            shown(found)
        ),
    ))
}

/// A control number as it may appear in a message or field path: control numbers are envelope
/// data, but a broken file can put anything where one belongs, so only a short run of letters
/// and digits is shown.
pub fn shown(value: &str) -> &str {
    let value = value.trim();
    if value.is_empty() {
        "(empty)"
    } else if value.len() <= 15 && value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        value
    } else {
        "(not shown)"
    }
}

fn misplaced(id: &str, place: &str) -> Invalid {
    // A segment id is at most a few letters; a longer "id" is data, which is not repeated.
    let shown = if id.len() <= 3 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        id
    } else {
        "(unreadable)"
    };
    envelope_error("file", format!("segment {shown} is not allowed {place}"))
}

fn envelope_error(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid::new(field, ENVELOPE_INVALID, message)
}

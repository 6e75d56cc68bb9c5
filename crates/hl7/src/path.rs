//! Terser-like paths: `SEG[occurrence]-field[repetition].component.subcomponent`.
//!
//! One syntax only, chosen to read like the way HL7 people write positions (`PID-3`, `PID-5.1`)
//! with square brackets for "which one" (segment occurrence or field repetition):
//!
//! | path            | meaning                                                          |
//! |-----------------|------------------------------------------------------------------|
//! | `PID-5`         | PID-5, 1st repetition, 1st component, 1st subcomponent           |
//! | `PID-5.2`       | PID-5 given name (1st repetition)                                |
//! | `PID-3[2].1`    | id number of the 2nd PID-3 repetition                            |
//! | `PID-3[2].4.2`  | 2nd identifier's assigning authority, universal id (subcomponent)|
//! | `OBX[3]-5`      | OBX-5 of the 3rd OBX segment                                     |
//! | `MSH-9.2`       | trigger event                                                    |
//!
//! All indices are 1-based; omitted ones are 1. Whitespace is not allowed.

use std::fmt;
use std::str::FromStr;

/// Largest index accepted in a path. Far above any real HL7 position, low enough that no
/// arithmetic on it can overflow.
const MAX_INDEX: usize = 1_000_000;

/// A parsed path. Build it with `"PID-3[2].1".parse::<Path>()` or [`Path::new`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    segment: String,
    occurrence: usize,
    field: usize,
    repetition: usize,
    component: usize,
    subcomponent: usize,
}

/// Why a path string was refused (the path is program text, not message content).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with a three-character segment id (`PID`, `ZX1`).
    #[error("path must start with a segment id such as PID")]
    SegmentId,
    /// Something other than `[n]` or `-` follows the segment id, or `]` is missing.
    #[error("path syntax is SEG[occurrence]-field[repetition].component.subcomponent")]
    Syntax,
    /// An index is missing, not a number, zero or larger than 1,000,000.
    #[error("path indices must be numbers from 1 to 1000000")]
    Index,
}

impl Path {
    /// A path from its parts (all 1-based). Fails like parsing would for a bad segment id or an
    /// index of zero.
    pub fn new(
        segment: &str,
        occurrence: usize,
        field: usize,
        repetition: usize,
        component: usize,
        subcomponent: usize,
    ) -> Result<Path, PathError> {
        if !crate::message::is_segment_id(segment) {
            return Err(PathError::SegmentId);
        }
        let indices = [occurrence, field, repetition, component, subcomponent];
        if indices.iter().any(|&i| i == 0 || i > MAX_INDEX) {
            return Err(PathError::Index);
        }
        Ok(Path {
            segment: segment.to_owned(),
            occurrence,
            field,
            repetition,
            component,
            subcomponent,
        })
    }

    /// Segment id.
    pub fn segment(&self) -> &str {
        &self.segment
    }
    /// Which segment with that id (1-based).
    pub fn occurrence(&self) -> usize {
        self.occurrence
    }
    /// Field number.
    pub fn field(&self) -> usize {
        self.field
    }
    /// Repetition (1-based).
    pub fn repetition(&self) -> usize {
        self.repetition
    }
    /// Component (1-based).
    pub fn component(&self) -> usize {
        self.component
    }
    /// Subcomponent (1-based).
    pub fn subcomponent(&self) -> usize {
        self.subcomponent
    }
}

/// Parses the number at the start of `s`, returning it and the rest.
fn number(s: &str) -> Result<(usize, &str), PathError> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: usize = s[..end].parse().map_err(|_| PathError::Index)?;
    if n == 0 || n > MAX_INDEX {
        return Err(PathError::Index);
    }
    Ok((n, &s[end..]))
}

/// Parses an optional `[n]`, returning n (1 when absent) and the rest.
fn bracketed(s: &str) -> Result<(usize, &str), PathError> {
    let Some(inner) = s.strip_prefix('[') else {
        return Ok((1, s));
    };
    let (n, rest) = number(inner)?;
    let rest = rest.strip_prefix(']').ok_or(PathError::Syntax)?;
    Ok((n, rest))
}

impl FromStr for Path {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Path, PathError> {
        let segment = s
            .get(..3)
            .filter(|id| crate::message::is_segment_id(id))
            .ok_or(PathError::SegmentId)?;
        let (occurrence, rest) = bracketed(&s[3..])?;
        let rest = rest.strip_prefix('-').ok_or(PathError::Syntax)?;
        let (field, rest) = number(rest)?;
        let (repetition, mut rest) = bracketed(rest)?;
        let mut parts = [1usize, 1];
        for part in &mut parts {
            match rest.strip_prefix('.') {
                Some(after) => (*part, rest) = number(after)?,
                None => break,
            }
        }
        if !rest.is_empty() {
            return Err(PathError::Syntax);
        }
        Path::new(segment, occurrence, field, repetition, parts[0], parts[1])
    }
}

impl fmt::Display for Path {
    /// The canonical form with every index spelled out: `PID[1]-3[2].1.1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}]-{}[{}].{}.{}",
            self.segment,
            self.occurrence,
            self.field,
            self.repetition,
            self.component,
            self.subcomponent
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(s: &str) -> Result<(String, [usize; 5]), PathError> {
        let p: Path = s.parse()?;
        Ok((
            p.segment().to_owned(),
            [
                p.occurrence(),
                p.field(),
                p.repetition(),
                p.component(),
                p.subcomponent(),
            ],
        ))
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(p("PID-5").unwrap(), ("PID".into(), [1, 5, 1, 1, 1]));
        assert_eq!(p("PID-5.2").unwrap(), ("PID".into(), [1, 5, 1, 2, 1]));
        assert_eq!(p("PID-3[2].1").unwrap(), ("PID".into(), [1, 3, 2, 1, 1]));
        assert_eq!(p("PID-3[2].4.2").unwrap(), ("PID".into(), [1, 3, 2, 4, 2]));
        assert_eq!(p("OBX[3]-5").unwrap(), ("OBX".into(), [3, 5, 1, 1, 1]));
        assert_eq!(
            p("ZX1[2]-10[3].4.5").unwrap(),
            ("ZX1".into(), [2, 10, 3, 4, 5])
        );
    }

    #[test]
    fn refused_forms() {
        assert_eq!(p("PI-5"), Err(PathError::SegmentId));
        assert_eq!(p("pid-5"), Err(PathError::SegmentId));
        assert_eq!(p("PID"), Err(PathError::Syntax));
        assert_eq!(p("PID-"), Err(PathError::Index));
        assert_eq!(p("PID-0"), Err(PathError::Index));
        assert_eq!(p("PID-5.0"), Err(PathError::Index));
        assert_eq!(p("PID-3(2).1"), Err(PathError::Syntax));
        assert_eq!(p("PID-3[2.1"), Err(PathError::Syntax));
        assert_eq!(p("PID-5.1.1.1"), Err(PathError::Syntax));
        assert_eq!(p("PID-99999999999999999999999"), Err(PathError::Index));
        assert_eq!(p("PID-1000001"), Err(PathError::Index));
        assert_eq!(p("é-1"), Err(PathError::SegmentId));
        assert_eq!(p(""), Err(PathError::SegmentId));
    }

    #[test]
    fn display_is_canonical_and_reparses() {
        let path: Path = "PID-3[2].4".parse().unwrap();
        assert_eq!(path.to_string(), "PID[1]-3[2].4.1");
        assert_eq!(path.to_string().parse::<Path>().unwrap(), path);
    }
}

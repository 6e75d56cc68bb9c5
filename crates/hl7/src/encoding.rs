//! Delimiters and the HL7 escape vocabulary.
//!
//! HL7 v2 lets every message choose its own delimiters: MSH-1 is the field separator and MSH-2
//! lists the component, repetition, escape and subcomponent characters (plus, from v2.7, an
//! optional truncation character). Nothing in this crate hard-codes `|^~\&`; everything goes
//! through a [`Delimiters`] value read from (or written into) the MSH segment.

use std::borrow::Cow;

/// The five (or six) characters that structure an ER7 message.
///
/// All of them are ASCII punctuation and pairwise distinct; [`Delimiters::new`] refuses anything
/// else. Restricting them to ASCII keeps every split a byte split on a character boundary, so no
/// slicing in this crate can land inside a multi-byte UTF-8 character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    field: char,
    component: char,
    repetition: char,
    escape: char,
    subcomponent: char,
    truncation: Option<char>,
}

impl Default for Delimiters {
    /// The standard `|^~\&`, without a truncation character (as every version before 2.7).
    fn default() -> Self {
        Self::STANDARD
    }
}

/// Why a set of delimiters was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DelimiterError {
    /// A delimiter is not ASCII punctuation (letters, digits, spaces, controls and non-ASCII are
    /// refused).
    #[error("delimiters must be ASCII punctuation")]
    NotPunctuation,
    /// Two delimiters are the same character.
    #[error("delimiters must be pairwise distinct")]
    NotDistinct,
    /// MSH-2 does not have 4 or 5 characters.
    #[error("MSH-2 must hold 4 or 5 encoding characters")]
    WrongCount,
}

impl Delimiters {
    /// The standard `|^~\&`, without a truncation character.
    pub const STANDARD: Delimiters = Delimiters {
        field: '|',
        component: '^',
        repetition: '~',
        escape: '\\',
        subcomponent: '&',
        truncation: None,
    };

    /// Builds a delimiter set, checking that every character is ASCII punctuation and that no two
    /// are equal.
    pub fn new(
        field: char,
        component: char,
        repetition: char,
        escape: char,
        subcomponent: char,
        truncation: Option<char>,
    ) -> Result<Self, DelimiterError> {
        let all = [
            Some(field),
            Some(component),
            Some(repetition),
            Some(escape),
            Some(subcomponent),
            truncation,
        ];
        let present: Vec<char> = all.iter().flatten().copied().collect();
        if present.iter().any(|c| !c.is_ascii_punctuation()) {
            return Err(DelimiterError::NotPunctuation);
        }
        for (i, a) in present.iter().enumerate() {
            if present[i + 1..].contains(a) {
                return Err(DelimiterError::NotDistinct);
            }
        }
        Ok(Self {
            field,
            component,
            repetition,
            escape,
            subcomponent,
            truncation,
        })
    }

    /// Reads the delimiters from the field separator and the MSH-2 text (`^~\&` or `^~\&#`).
    pub fn from_msh(field: char, encoding_characters: &str) -> Result<Self, DelimiterError> {
        let chars: Vec<char> = encoding_characters.chars().collect();
        match chars.as_slice() {
            [c, r, e, s] => Self::new(field, *c, *r, *e, *s, None),
            [c, r, e, s, t] => Self::new(field, *c, *r, *e, *s, Some(*t)),
            _ => Err(DelimiterError::WrongCount),
        }
    }

    /// Field separator (MSH-1), `|` by default.
    pub fn field(&self) -> char {
        self.field
    }
    /// Component separator, `^` by default.
    pub fn component(&self) -> char {
        self.component
    }
    /// Repetition separator, `~` by default.
    pub fn repetition(&self) -> char {
        self.repetition
    }
    /// Escape character, `\` by default.
    pub fn escape(&self) -> char {
        self.escape
    }
    /// Subcomponent separator, `&` by default.
    pub fn subcomponent(&self) -> char {
        self.subcomponent
    }
    /// Truncation character (v2.7+, usually `#`), if MSH-2 declares one.
    pub fn truncation(&self) -> Option<char> {
        self.truncation
    }

    /// The MSH-2 text for these delimiters, e.g. `^~\&`.
    pub fn encoding_characters(&self) -> String {
        let mut s = String::with_capacity(5);
        s.push(self.component);
        s.push(self.repetition);
        s.push(self.escape);
        s.push(self.subcomponent);
        if let Some(t) = self.truncation {
            s.push(t);
        }
        s
    }

    /// Escapes text so that it can be placed in a single subcomponent: every delimiter becomes
    /// its escape sequence, CR and LF become `\X0D\` / `\X0A\` (a raw line break would end the
    /// segment), and a value that is exactly `""` becomes `\X2222\` so that it is not read back
    /// as the HL7 null.
    ///
    /// Borrows when nothing needs escaping, which is the common case.
    pub fn escape_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if text == "\"\"" {
            return Cow::Owned(format!("{e}X2222{e}", e = self.escape));
        }
        let needs = |c: char| self.is_delimiter(c) || c == '\r' || c == '\n';
        if !text.chars().any(needs) {
            return Cow::Borrowed(text);
        }
        let e = self.escape;
        let mut out = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            let code = match c {
                _ if c == self.field => "F",
                _ if c == self.component => "S",
                _ if c == self.repetition => "R",
                _ if c == self.escape => "E",
                _ if c == self.subcomponent => "T",
                _ if Some(c) == self.truncation => "P",
                '\r' => "X0D",
                '\n' => "X0A",
                _ => {
                    out.push(c);
                    continue;
                }
            };
            out.push(e);
            out.push_str(code);
            out.push(e);
        }
        Cow::Owned(out)
    }

    /// Decodes the escape sequences of one subcomponent's raw text.
    ///
    /// Known sequences: `\F\ \S\ \T\ \R\ \E\` (and `\P\` when a truncation character is declared)
    /// become the delimiter they name; `\Xhh..\` becomes the bytes it spells, read as UTF-8 when
    /// they form valid UTF-8 and as ISO-8859-1 otherwise; `\.br\` becomes a line feed; the
    /// highlighting marks `\H\` and `\N\` are dropped. Anything else (`\Zxx\`, character-set
    /// switches `\C..\` / `\M..\`, other formatting commands, odd-length hex, an escape character
    /// with no closing one) is kept literally, escape characters included: losing data silently
    /// is worse than showing an unusual sequence.
    ///
    /// The scan works on `char`s and only ever slices at positions of the ASCII escape character,
    /// so multi-byte UTF-8 next to an escape cannot cause a panic.
    pub fn unescape<'a>(&self, raw: &'a str) -> Cow<'a, str> {
        let e = self.escape;
        if !raw.contains(e) {
            return Cow::Borrowed(raw);
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(start) = rest.find(e) {
            out.push_str(&rest[..start]);
            // `e` is ASCII, so `start + 1` is a character boundary.
            let after = &rest[start + 1..];
            let Some(len) = after.find(e) else {
                // No closing escape character: keep the remainder as it is.
                out.push_str(&rest[start..]);
                return Cow::Owned(out);
            };
            let body = &after[..len];
            match self.decode_sequence(body) {
                Some(decoded) => out.push_str(&decoded),
                None => {
                    out.push(e);
                    out.push_str(body);
                    out.push(e);
                }
            }
            rest = &after[len + 1..];
        }
        out.push_str(rest);
        Cow::Owned(out)
    }

    /// The text for one escape sequence body (without the surrounding escape characters), or
    /// `None` if the sequence is unknown and must be kept literally.
    fn decode_sequence(&self, body: &str) -> Option<Cow<'static, str>> {
        let one = |c: char| Some(Cow::Owned(c.to_string()));
        match body {
            "F" => one(self.field),
            "S" => one(self.component),
            "T" => one(self.subcomponent),
            "R" => one(self.repetition),
            "E" => one(self.escape),
            "P" => self.truncation.and_then(one),
            ".br" => Some(Cow::Borrowed("\n")),
            "H" | "N" => Some(Cow::Borrowed("")),
            _ => body.strip_prefix('X').and_then(decode_hex).map(Cow::Owned),
        }
    }

    /// True if `c` is one of the structural characters.
    pub fn is_delimiter(&self, c: char) -> bool {
        c == self.field
            || c == self.component
            || c == self.repetition
            || c == self.escape
            || c == self.subcomponent
            || Some(c) == self.truncation
    }
}

/// Decodes the hex digits of a `\Xhh..\` sequence. `None` for an empty, odd-length or non-hex body.
fn decode_hex(hex: &str) -> Option<String> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let bytes: Vec<u8> = hex
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| pair.iter().fold(0u8, |acc, &b| (acc << 4) | hex_value(b)))
        .collect();
    Some(match String::from_utf8(bytes) {
        Ok(s) => s,
        // Not UTF-8: the classic HL7 default character set is ISO-8859-1, where every byte is
        // the code point of the same value.
        Err(e) => e.into_bytes().into_iter().map(char::from).collect(),
    })
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn d() -> Delimiters {
        Delimiters::default()
    }

    #[test]
    fn standard_escapes_decode() {
        assert_eq!(d().unescape(r"a\F\b\S\c\T\d\R\e\E\f"), "a|b^c&d~e\\f");
    }

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(d().unescape("Smith"), Cow::Borrowed("Smith")));
        assert!(matches!(d().escape_text("Smith"), Cow::Borrowed("Smith")));
    }

    #[test]
    fn hex_utf8_and_latin1() {
        assert_eq!(d().unescape(r"\XC3A9\"), "é");
        assert_eq!(d().unescape(r"\XE9\"), "é"); // not UTF-8: ISO-8859-1
        assert_eq!(d().unescape(r"a\X0D0A\b"), "a\r\nb");
    }

    #[test]
    fn formatting_escapes() {
        assert_eq!(d().unescape(r"line1\.br\line2"), "line1\nline2");
        assert_eq!(d().unescape(r"\H\bold\N\"), "bold");
    }

    #[test]
    fn unknown_and_broken_escapes_kept_literally() {
        assert_eq!(d().unescape(r"\Zabc\"), r"\Zabc\");
        assert_eq!(d().unescape(r"\X0\"), r"\X0\");
        assert_eq!(d().unescape(r"\XZZ\"), r"\XZZ\");
        assert_eq!(d().unescape(r"\.sp\"), r"\.sp\");
        assert_eq!(d().unescape(r"abc\F"), r"abc\F");
        assert_eq!(d().unescape(r"\"), r"\");
        assert_eq!(d().unescape(r"\\"), r"\\");
        // \P\ means nothing without a declared truncation character.
        assert_eq!(d().unescape(r"\P\"), r"\P\");
    }

    #[test]
    fn multibyte_next_to_escapes_does_not_panic() {
        // The input that makes the `hl7-parser` crate panic.
        assert_eq!(d().unescape(r"éé\F\"), "éé|");
        assert_eq!(d().unescape(r"\F\éé\S\ü"), "|éé^ü");
        assert_eq!(d().unescape("日本\\X41\\語"), "日本A語");
        assert_eq!(d().unescape("\\é\\"), "\\é\\");
        assert_eq!(d().unescape("é\\"), "é\\");
    }

    #[test]
    fn truncation_character() {
        let t = Delimiters::from_msh('|', "^~\\&#").unwrap();
        assert_eq!(t.truncation(), Some('#'));
        assert_eq!(t.unescape(r"a\P\b"), "a#b");
        assert_eq!(t.escape_text("a#b"), r"a\P\b");
        // Without the declaration `#` is ordinary text.
        assert_eq!(d().escape_text("a#b"), "a#b");
    }

    #[test]
    fn escape_text_covers_every_delimiter_and_line_breaks() {
        assert_eq!(d().escape_text("|^~\\&\r\n"), r"\F\\S\\R\\E\\T\\X0D\\X0A\");
        assert_eq!(d().escape_text("\"\""), r"\X2222\");
        assert_eq!(d().unescape(&d().escape_text("\"\"")), "\"\"");
    }

    #[test]
    fn custom_delimiters() {
        let c = Delimiters::from_msh('$', "%~\\&").unwrap();
        assert_eq!(c.escape_text("a$b%c|d^e"), r"a\F\b\S\c|d^e");
        assert_eq!(c.unescape(r"a\F\b\S\c"), "a$b%c");
        assert_eq!(c.encoding_characters(), "%~\\&");
    }

    #[test]
    fn delimiter_validation() {
        assert_eq!(
            Delimiters::from_msh('|', "^~\\"),
            Err(DelimiterError::WrongCount)
        );
        assert_eq!(
            Delimiters::from_msh('|', "^~\\&#!"),
            Err(DelimiterError::WrongCount)
        );
        assert_eq!(
            Delimiters::from_msh('|', "^~\\|"),
            Err(DelimiterError::NotDistinct)
        );
        assert_eq!(
            Delimiters::from_msh('|', "^~A&"),
            Err(DelimiterError::NotPunctuation)
        );
        assert_eq!(
            Delimiters::from_msh('é', "^~\\&"),
            Err(DelimiterError::NotPunctuation)
        );
    }
}

//! Names for the 837P: the writer accepts printable ASCII only, so names are transliterated
//! (`José Müller` → `Jose Muller`) where a plain Latin letter is the accepted spelling, and
//! refused otherwise, for a person to fix, rather than mangled.

use crate::domain::invalid::Invalid;

/// Reason: a name has a character with no ASCII transliteration (e.g. Cyrillic, CJK).
pub const NAME_NOT_ASCII: &str = "NAME_NOT_ASCII";
/// Reason: a name has a control character or an X12 separator (`~ * : ^`).
pub const NAME_CHARACTER_INVALID: &str = "NAME_CHARACTER_INVALID";

/// `text` in printable ASCII: accented Latin letters lose their accents (`é` → `e`, `ß` → `ss`,
/// `Æ` → `AE`), combining accents are dropped, typographic quotes and dashes become `'` and `-`.
/// Refuses any other non-ASCII character (`NAME_NOT_ASCII`) and control characters or X12
/// separators (`NAME_CHARACTER_INVALID`). The message never repeats the name.
pub fn ascii_name(field: &str, text: &str) -> Result<String, Invalid> {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            if c.is_ascii_control() || matches!(c, '~' | '*' | ':' | '^') {
                return Err(Invalid::new(
                    field,
                    NAME_CHARACTER_INVALID,
                    "a name cannot hold control characters or the characters ~ * : ^",
                ));
            }
            out.push(c);
        } else if is_combining_mark(c) {
            // A decomposed accent (e + U+0301): the base letter is already written.
        } else if let Some(ascii) = transliterate(c) {
            out.push_str(ascii);
        } else {
            return Err(Invalid::new(
                field,
                NAME_NOT_ASCII,
                "a name must be written in Latin letters (accents are removed); \
                 this one has a character with no plain-letter equivalent",
            ));
        }
    }
    Ok(out)
}

/// Combining diacritical marks (U+0300–U+036F).
fn is_combining_mark(c: char) -> bool {
    ('\u{300}'..='\u{36f}').contains(&c)
}

/// The plain spelling of a Latin-1 or Latin Extended-A letter, or a typographic mark.
fn transliterate(c: char) -> Option<&'static str> {
    Some(match c {
        'À'..='Å' | 'Ā' | 'Ă' | 'Ą' => "A",
        'à'..='å' | 'ā' | 'ă' | 'ą' => "a",
        'Æ' => "AE",
        'æ' => "ae",
        'Ç' | 'Ć' | 'Ĉ' | 'Ċ' | 'Č' => "C",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'Ð' | 'Ď' | 'Đ' => "D",
        'ð' | 'ď' | 'đ' => "d",
        'È'..='Ë' | 'Ē' | 'Ĕ' | 'Ė' | 'Ę' | 'Ě' => "E",
        'è'..='ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'Ĝ' | 'Ğ' | 'Ġ' | 'Ģ' => "G",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'Ĥ' | 'Ħ' => "H",
        'ĥ' | 'ħ' => "h",
        'Ì'..='Ï' | 'Ĩ' | 'Ī' | 'Ĭ' | 'Į' | 'İ' => "I",
        'ì'..='ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
        'Ĵ' => "J",
        'ĵ' => "j",
        'Ķ' => "K",
        'ķ' => "k",
        'Ĺ' | 'Ļ' | 'Ľ' | 'Ŀ' | 'Ł' => "L",
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
        'Ñ' | 'Ń' | 'Ņ' | 'Ň' => "N",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'Ò'..='Ö' | 'Ø' | 'Ō' | 'Ŏ' | 'Ő' => "O",
        'ò'..='ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
        'Œ' => "OE",
        'œ' => "oe",
        'Ŕ' | 'Ŗ' | 'Ř' => "R",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'Ś' | 'Ŝ' | 'Ş' | 'Š' => "S",
        'ś' | 'ŝ' | 'ş' | 'š' => "s",
        'ß' => "ss",
        'Ţ' | 'Ť' | 'Ŧ' => "T",
        'ţ' | 'ť' | 'ŧ' => "t",
        'Þ' => "TH",
        'þ' => "th",
        'Ù'..='Ü' | 'Ũ' | 'Ū' | 'Ŭ' | 'Ů' | 'Ű' | 'Ų' => "U",
        'ù'..='ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'Ŵ' => "W",
        'ŵ' => "w",
        'Ý' | 'Ŷ' | 'Ÿ' => "Y",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'Ź' | 'Ż' | 'Ž' => "Z",
        'ź' | 'ż' | 'ž' => "z",
        '\u{2018}' | '\u{2019}' | '\u{02bc}' => "'",
        '\u{2010}'..='\u{2015}' => "-",
        '\u{a0}' => " ",
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn transliterates_latin_letters() {
        let cases = [
            ("Jane", "Jane"),
            ("José", "Jose"),
            ("Müller-Lüdenscheidt", "Muller-Ludenscheidt"),
            ("Strauß", "Strauss"),
            ("Łukasz Żółć", "Lukasz Zolc"),
            ("Æsa Øberg", "AEsa Oberg"),
            ("O\u{2019}Brien", "O'Brien"),
            ("Jose\u{301}", "Jose"),
            ("Nuñez", "Nunez"),
            ("Dvořák", "Dvorak"),
            ("Smith\u{2013}Jones", "Smith-Jones"),
            ("", ""),
        ];
        for (text, ascii) in cases {
            assert_eq!(ascii_name("n", text).unwrap(), ascii, "{text}");
        }
    }

    #[test]
    fn refuses_what_has_no_plain_spelling() {
        let cases = [
            ("Иван", NAME_NOT_ASCII),
            ("李", NAME_NOT_ASCII),
            ("Jane 😀", NAME_NOT_ASCII),
            ("Doe~Jane", NAME_CHARACTER_INVALID),
            ("Doe*", NAME_CHARACTER_INVALID),
            ("a:b", NAME_CHARACTER_INVALID),
            ("a^b", NAME_CHARACTER_INVALID),
            ("line\nbreak", NAME_CHARACTER_INVALID),
            ("tab\t", NAME_CHARACTER_INVALID),
        ];
        for (text, reason) in cases {
            let error = ascii_name("subscriber.last_name", text).unwrap_err();
            assert_eq!(
                (error.reason, error.field.as_str()),
                (reason, "subscriber.last_name"),
                "{text:?}"
            );
            assert!(!error.message.contains(text));
        }
    }
}

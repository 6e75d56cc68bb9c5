//! Patient search by name, as a front desk types it: case- and accent-insensitive prefixes of the
//! family and given names. Pure: the store indexes the keys [`name_keys`] gives a name, and a search
//! looks up the one key [`query_key`] gives the typed text, so that a search reads only its matches.
//!
//! A name is folded to lowercase ASCII letters and digits (accents dropped after canonical
//! decomposition, `ß` → `ss`, `ø` → `o`, …), every other character a word break. Its keys are the
//! prefixes of the whole folded name and of each of its words, at most [`MAX_KEY_CHARS`] long: "Müller"
//! gives `m`, `mu`, `mul`, …; "García López" also gives `l`, `lo`, `lop`, ….

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use pm_runtime::{ApiError, ApiResult};

/// The longest key: a longer typed prefix is compared on its first this many characters.
pub const MAX_KEY_CHARS: usize = 24;

/// The longest typed name accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 64;

/// `name` folded: lowercase ASCII letters and digits, words separated by one space.
pub fn fold(name: &str) -> String {
    let mut folded = String::with_capacity(name.len());
    for c in name.nfkd().filter(|c| !is_combining_mark(*c)) {
        for lower in c.to_lowercase() {
            match lower {
                'a'..='z' | '0'..='9' => folded.push(lower),
                'ß' => folded.push_str("ss"),
                'æ' => folded.push_str("ae"),
                'œ' => folded.push_str("oe"),
                'ø' => folded.push('o'),
                'đ' | 'ð' => folded.push('d'),
                'ł' => folded.push('l'),
                'ı' => folded.push('i'),
                'þ' => folded.push_str("th"),
                _ => folded.push(' '),
            }
        }
    }
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn prefixes(text: &str, keys: &mut Vec<String>) {
    let chars: Vec<char> = text.chars().take(MAX_KEY_CHARS).collect();
    for end in 1..=chars.len() {
        // A key never ends in the space between two words.
        if chars[end - 1] != ' ' {
            keys.push(chars[..end].iter().collect());
        }
    }
}

/// The index keys of a name: every prefix of the folded name and of each of its words.
pub fn name_keys(name: &str) -> Vec<String> {
    let folded = fold(name);
    let mut keys = Vec::new();
    prefixes(&folded, &mut keys);
    if folded.contains(' ') {
        for word in folded.split(' ') {
            prefixes(word, &mut keys);
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The key a typed name is looked up by (`None`: the field was left empty). INVALID_ARGUMENT naming
/// `field` when it is too long or has nothing to compare (only punctuation); the typed text is PHI and
/// is never repeated in the error.
pub fn query_key(typed: &str, field: &str) -> ApiResult<Option<String>> {
    if typed.is_empty() {
        return Ok(None);
    }
    if typed.chars().nth(MAX_QUERY_CHARS).is_some() {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {MAX_QUERY_CHARS} characters long"),
        ));
    }
    let folded = fold(typed);
    if folded.is_empty() {
        return Err(ApiError::invalid(field, "must contain a letter or a digit"));
    }
    Ok(Some(
        folded
            .chars()
            .take(MAX_KEY_CHARS)
            .collect::<String>()
            .trim_end()
            .to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of a typed name ("" when there is none or it is refused).
    fn key(typed: &str) -> String {
        query_key(typed, "family_name")
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// The fields a refused query names.
    fn refused(typed: &str, field: &str) -> Vec<String> {
        match query_key(typed, field) {
            Ok(_) => Vec::new(),
            Err(e) => e.violations.into_iter().map(|(f, _)| f).collect(),
        }
    }

    #[test]
    fn folding_drops_case_and_accents() {
        assert_eq!(fold("Müller"), "muller");
        assert_eq!(fold("MÜLLER"), "muller");
        assert_eq!(fold("Mu\u{308}ller"), "muller");
        assert_eq!(fold("García López"), "garcia lopez");
        assert_eq!(fold("O'Brien-Smith"), "o brien smith");
        assert_eq!(fold("Straße"), "strasse");
        assert_eq!(fold("Øyvind"), "oyvind");
        assert_eq!(fold("  Ana   María "), "ana maria");
        assert_eq!(fold("李"), "");
    }

    #[test]
    fn a_name_is_found_by_every_prefix_of_it_and_of_its_words() {
        let keys = name_keys("García López");
        for typed in [
            "g",
            "Garc",
            "GARCÍA",
            "garcia l",
            "García Ló",
            "lop",
            "López",
        ] {
            assert!(keys.contains(&key(typed)), "{typed} → {}", key(typed));
        }
        for typed in ["arcia", "garcial", "lopezz", "x"] {
            assert!(!keys.contains(&key(typed)), "{typed}");
        }
        assert!(!keys.iter().any(|k| k.ends_with(' ') || k.is_empty()));
    }

    #[test]
    fn long_names_and_queries_compare_on_their_first_characters() {
        let keys = name_keys("Wolfeschlegelsteinhausenbergerdorff");
        assert!(keys.iter().all(|k| k.chars().count() <= MAX_KEY_CHARS));
        assert!(keys.contains(&key("wolfeschlegelsteinhausenbergerdorff")));
    }

    #[test]
    fn empty_punctuation_and_overlong_queries() {
        assert!(matches!(query_key("", "family_name"), Ok(None)));
        assert_eq!(refused("--", "family_name"), vec!["family_name"]);
        let long = format!("Zqxcanary{}", "a".repeat(MAX_QUERY_CHARS));
        assert_eq!(refused(&long, "given_name"), vec!["given_name"]);
        let message = query_key(&long, "given_name")
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(!message.is_empty() && !message.contains("Zqxcanary"));
    }
}

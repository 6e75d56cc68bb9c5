//! The `filter` grammar of List calls: a conjunction of equality terms,
//!
//! ```text
//! filter := term { "AND" term }
//! term   := field "=" value
//! value  := "\"" chars "\"" | bare-token
//! ```
//!
//! for example `kind = UNIT_KIND_PROGRAM AND parent_unit = "organizations/acme/units/north"`. Each
//! resource declares the fields it can be filtered on.
//!
//! A filter is bounded ([`MAX_FILTER_CHARS`], [`MAX_FILTER_TERMS`]): each term becomes a subquery, and
//! an unbounded conjunction is unbounded work for the database (SQLite refuses a few hundred terms
//! as "expression tree is too large", which surfaced as INTERNAL).

use crate::error::{ApiError, ApiResult, quote};

/// The longest filter accepted, in characters.
pub const MAX_FILTER_CHARS: usize = 1024;
/// The most `field = value` terms a filter may join.
pub const MAX_FILTER_TERMS: usize = 16;

/// One `field = value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The field name.
    pub field: String,
    /// The value it must equal.
    pub value: String,
}

/// Parses `filter`, accepting only fields in `allowed`.
pub fn parse(filter: &str, allowed: &[&str]) -> ApiResult<Vec<Term>> {
    // Bytes first: counting the characters of a 100 KB filter is already more work than needed.
    if filter.len() > MAX_FILTER_CHARS && filter.chars().nth(MAX_FILTER_CHARS).is_some() {
        return Err(bad(&format!(
            "must be at most {MAX_FILTER_CHARS} characters long"
        ))
        .with_meta("limit", MAX_FILTER_CHARS.to_string()));
    }
    let mut lexer = Lexer {
        rest: filter.trim(),
    };
    let mut terms = Vec::new();
    if lexer.rest.is_empty() {
        return Ok(terms);
    }
    loop {
        if terms.len() == MAX_FILTER_TERMS {
            return Err(too_many_terms());
        }
        let field = lexer.word().ok_or_else(|| bad("expected a field name"))?;
        if !allowed.contains(&field.as_str()) {
            return Err(bad(&format!(
                "cannot filter on `{}`; filterable fields: {}",
                quote(&field),
                allowed.join(", ")
            )));
        }
        if !lexer.eat("=") {
            return Err(bad(&format!("expected `=` after `{}`", quote(&field))));
        }
        let value = lexer
            .value()
            .ok_or_else(|| bad("expected a value after `=`"))??;
        terms.push(Term { field, value });
        if lexer.rest.is_empty() {
            return Ok(terms);
        }
        if !lexer.keyword("AND") {
            return Err(bad("terms must be joined with AND"));
        }
    }
}

fn too_many_terms() -> ApiError {
    bad(&format!("must join at most {MAX_FILTER_TERMS} terms"))
        .with_meta("limit", MAX_FILTER_TERMS.to_string())
}

fn bad(description: &str) -> ApiError {
    ApiError::invalid("filter", description.to_string()).because("FILTER_INVALID")
}

struct Lexer<'a> {
    rest: &'a str,
}

impl Lexer<'_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn word(&mut self) -> Option<String> {
        self.skip_space();
        let end = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(word.to_string())
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn keyword(&mut self, keyword: &str) -> bool {
        self.skip_space();
        let mut probe = Lexer { rest: self.rest };
        if probe.word().as_deref() == Some(keyword) {
            self.rest = probe.rest;
            true
        } else {
            false
        }
    }

    /// A quoted string (with `\"` and `\\` escapes) or a bare token.
    fn value(&mut self) -> Option<ApiResult<String>> {
        self.skip_space();
        let Some(body) = self.rest.strip_prefix('"') else {
            let end = self
                .rest
                .find(char::is_whitespace)
                .unwrap_or(self.rest.len());
            if end == 0 {
                return None;
            }
            let (word, rest) = self.rest.split_at(end);
            self.rest = rest;
            return Some(Ok(word.to_string()));
        };
        let mut value = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &body[i + 1..];
                    return Some(Ok(value));
                }
                '\\' => match chars.next() {
                    Some((_, escaped @ ('"' | '\\'))) => value.push(escaped),
                    _ => {
                        return Some(Err(bad(
                            "only \\\" and \\\\ escapes are allowed in strings",
                        )));
                    }
                },
                other => value.push(other),
            }
        }
        Some(Err(bad("unterminated string")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[&str] = &["kind", "parent_unit", "display_name"];

    #[test]
    fn parses_conjunctions_of_quoted_and_bare_values() -> ApiResult<()> {
        let terms = parse(
            r#"kind = UNIT_KIND_PROGRAM AND parent_unit = "organizations/acme/units/a b""#,
            FIELDS,
        )?;
        assert_eq!(terms.len(), 2);
        assert_eq!(terms[0].value, "UNIT_KIND_PROGRAM");
        assert_eq!(terms[1].value, "organizations/acme/units/a b");
        assert_eq!(parse("", FIELDS)?, vec![]);
        assert_eq!(parse(r#"parent_unit = """#, FIELDS)?[0].value, "");
        assert_eq!(
            parse(r#"display_name = "say \"hi\"""#, FIELDS)?[0].value,
            "say \"hi\""
        );
        Ok(())
    }

    #[test]
    fn rejects_unknown_fields_and_bad_syntax() {
        for bad in [
            "npi = 1",
            "kind",
            "kind =",
            "kind = A OR kind = B",
            r#"kind = "open"#,
            "= A",
            "kind = A AND",
        ] {
            let err = parse(bad, FIELDS).expect_err(bad);
            assert_eq!(err.violations[0].0, "filter", "{bad}");
        }
    }

    #[test]
    fn refuses_filters_over_the_length_limit() -> ApiResult<()> {
        let at_limit = format!(r#"display_name = "{}""#, "x".repeat(MAX_FILTER_CHARS - 17));
        assert_eq!(at_limit.chars().count(), MAX_FILTER_CHARS);
        parse(&at_limit, FIELDS)?;
        // Multi-byte characters count as one each.
        let wide = format!(r#"display_name = "{}""#, "é".repeat(MAX_FILTER_CHARS - 17));
        parse(&wide, FIELDS)?;
        let over = format!(r#"display_name = "{}""#, "x".repeat(100_000));
        let err = parse(&over, FIELDS).expect_err("too long");
        assert_eq!(err.violations[0].0, "filter");
        assert!(err.message.contains("1024 characters"), "{}", err.message);
        Ok(())
    }

    #[test]
    fn refuses_filters_with_too_many_terms() -> ApiResult<()> {
        let terms = |n: usize| vec!["kind = A"; n].join(" AND ");
        assert_eq!(
            parse(&terms(MAX_FILTER_TERMS), FIELDS)?.len(),
            MAX_FILTER_TERMS
        );
        let err = parse(&terms(MAX_FILTER_TERMS + 1), FIELDS).expect_err("too many terms");
        assert_eq!(err.violations[0].0, "filter");
        assert!(err.message.contains("16 terms"), "{}", err.message);
        // Short terms: many fit in the length limit.
        let short = vec!["kind=A"; 90].join(" AND ");
        assert!(short.len() <= MAX_FILTER_CHARS);
        let err = parse(&short, FIELDS).expect_err("too many terms");
        assert!(err.message.contains("16 terms"), "{}", err.message);
        // A long list of terms meets the length limit first; either way, INVALID_ARGUMENT on filter.
        let err = parse(&terms(999), FIELDS).expect_err("too many terms");
        assert_eq!(err.violations[0].0, "filter");
        // Too many terms is refused even when the rest is garbage: the count comes first.
        let err = parse(&format!("{} AND kind", terms(MAX_FILTER_TERMS)), FIELDS)
            .expect_err("too many terms");
        assert!(err.message.contains("16 terms"), "{}", err.message);
        Ok(())
    }

    #[test]
    fn unknown_field_names_are_quoted_short() {
        let field = "f".repeat(100_000);
        let err = parse(&format!("{field} = 1"), &["f"]).expect_err("unknown field");
        assert!(err.message.len() < 200, "{}", err.message.len());
        let field = "g".repeat(900);
        let err = parse(&format!("{field} = 1"), FIELDS).expect_err("unknown field");
        assert!(err.message.len() < 200, "{}", err.message.len());
        assert!(err.message.contains('…'));
    }
}

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

use crate::error::{ApiError, ApiResult};

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
    let mut lexer = Lexer {
        rest: filter.trim(),
    };
    let mut terms = Vec::new();
    if lexer.rest.is_empty() {
        return Ok(terms);
    }
    loop {
        let field = lexer.word().ok_or_else(|| bad("expected a field name"))?;
        if !allowed.contains(&field.as_str()) {
            return Err(bad(&format!(
                "cannot filter on `{field}`; filterable fields: {}",
                allowed.join(", ")
            )));
        }
        if !lexer.eat("=") {
            return Err(bad(&format!("expected `=` after `{field}`")));
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

fn bad(description: &str) -> ApiError {
    ApiError::invalid("filter", description.to_string())
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
}

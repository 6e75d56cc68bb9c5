//! A validation failure: which field, which stable reason, what is wrong (never the input's
//! patient data). The service turns it into INVALID_ARGUMENT with the reason and the field.

use std::fmt;

/// One input that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The field path, as the caller wrote it: `fee_schedule_version.entries[3].code`, `line 7: amount`.
    pub field: String,
    /// Stable reason code, SCREAMING_SNAKE: `PROCEDURE_CODE_INVALID`.
    pub reason: &'static str,
    /// What is wrong and what is accepted, for a person.
    pub message: String,
}

impl Invalid {
    /// `field` breaks the rule `reason`: `message`.
    pub fn new(field: impl Into<String>, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason,
            message: message.into(),
        }
    }

    /// The same failure under a longer path: `entries[3]` + `.code`.
    pub fn under(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.field, self.message, self.reason)
    }
}

impl std::error::Error for Invalid {}

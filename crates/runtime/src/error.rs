//! The one place errors become `tonic::Status`: every error carries a google.rpc.ErrorInfo with a
//! stable UPPER_SNAKE reason, and INVALID_ARGUMENT carries a google.rpc.BadRequest naming each field.
//!
//! Messages must never hold PHI: they name fields and resource names, never field values.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The most characters of a caller's input any message quotes (see [`quote`]).
pub const QUOTE_CHARS: usize = 40;
/// An upper bound on any status text sent, in bytes (the actual caps, [`MAX_MESSAGE`] and
/// [`MAX_DETAIL`], are tighter): a last guard so that no echo of input can grow a response's
/// trailers.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// A caller's input as a message may quote it: at most [`QUOTE_CHARS`] characters, cut on a char
/// boundary and marked with `…` when cut. Messages quote input so that a client sees what was wrong,
/// but a 100 KB field name must not become a 100 KB `grpc-message` trailer (or log line).
pub fn quote(input: &str) -> String {
    match input.char_indices().nth(QUOTE_CHARS) {
        None => input.to_string(),
        Some((cut, _)) => format!("{}…", &input[..cut]),
    }
}

/// Shorthand for results whose error is an [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

/// An error as the API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// Canonical gRPC code.
    pub code: Code,
    /// Stable machine-readable reason, e.g. `UNIT_CYCLE`.
    pub reason: &'static str,
    /// Human-readable message (no PHI).
    pub message: String,
    /// Dynamic values of the message, lowerCamel keys.
    pub metadata: Vec<(&'static str, String)>,
    /// Field violations (INVALID_ARGUMENT only): field path and description.
    pub violations: Vec<(String, String)>,
}

impl ApiError {
    /// A new error with no metadata.
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            metadata: Vec::new(),
            violations: Vec::new(),
        }
    }

    /// INVALID_ARGUMENT for one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        let field = field.into();
        let description = description.into();
        Self::new(
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            format!("{field}: {description}"),
        )
        .with_violation(field, description)
    }

    /// INVALID_ARGUMENT for several fields at once (so a client can fix them all in one go).
    pub fn invalid_fields(violations: Vec<(String, String)>) -> Self {
        let message = violations
            .iter()
            .map(|(f, d)| format!("{f}: {d}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut err = Self::new(Code::InvalidArgument, "INVALID_ARGUMENT", message);
        err.violations = violations;
        err
    }

    /// NOT_FOUND for a resource name.
    pub fn not_found(resource: &str) -> Self {
        Self::new(
            Code::NotFound,
            "RESOURCE_NOT_FOUND",
            format!("{resource} not found"),
        )
        .with_meta("resource", resource)
    }

    /// FAILED_PRECONDITION with a reason.
    pub fn precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, reason, message)
    }

    /// ALREADY_EXISTS with a reason.
    pub fn already_exists(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(Code::AlreadyExists, reason, message)
    }

    /// ABORTED: the resource changed since the caller read it.
    pub fn stale_etag(resource: &str) -> Self {
        Self::new(
            Code::Aborted,
            "ETAG_MISMATCH",
            format!("{resource} was modified since it was read: get it again and retry"),
        )
        .with_meta("resource", resource)
    }

    /// INTERNAL for a failure the caller cannot fix. The cause is logged (it holds no PHI: store errors
    /// carry SQL state and constraint names, not values) and not sent.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, context, "internal error");
        Self::new(
            Code::Internal,
            "INTERNAL",
            format!("internal error ({context})"),
        )
    }

    /// UNAVAILABLE: the database cannot be reached; retry later.
    pub fn unavailable(context: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(%cause, context, "storage unavailable");
        Self::new(
            Code::Unavailable,
            "STORAGE_UNAVAILABLE",
            "storage is unavailable, retry later",
        )
    }

    /// UNAVAILABLE: another service of the mesh (`peer`: `org`, `rbac`, ...) did not answer; retry
    /// later. The cause is logged, not returned (it may quote the peer's own message).
    pub fn peer_unavailable(peer: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(%cause, peer, "peer service unavailable");
        Self::new(
            Code::Unavailable,
            "PEER_UNAVAILABLE",
            format!("the {peer} service is unavailable, retry later"),
        )
        .with_meta("peer", peer)
    }

    /// The same error with a more specific `reason` (AIP-193: the reason names the proximate cause,
    /// also for INVALID_ARGUMENT). Every reason a service sends is in its catalog
    /// ([`crate::reasons`]).
    pub fn because(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }

    /// Adds a metadata entry.
    pub fn with_meta(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.metadata.push((key, value.into()));
        self
    }

    /// Adds a field violation.
    pub fn with_violation(
        mut self,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        self.violations.push((field.into(), description.into()));
        self
    }

    /// Converts to a status whose ErrorInfo names `domain` (e.g. `org.pm.dev`).
    ///
    /// Messages and details quote what the caller sent (a resource name, a field path with an
    /// index), and they travel as HTTP/2 trailers, which clients cap (16 KiB by default in h2):
    /// unbounded, one 10 KB name quoted twice made the trailers too large, and the caller saw a
    /// protocol error instead of its status. Every part is therefore cut to a bound
    /// ([`MAX_MESSAGE`], [`MAX_DETAIL`], [`MAX_VIOLATIONS`]) that keeps the trailers under 8 KiB.
    pub fn into_status(self, domain: &str) -> Status {
        let metadata: HashMap<String, String> = self
            .metadata
            .into_iter()
            .map(|(k, v)| (k.to_string(), bounded(v, MAX_DETAIL)))
            .collect();
        let mut details = ErrorDetails::with_error_info(self.reason, domain, metadata);
        let count = self.violations.len();
        for (field, description) in self.violations.into_iter().take(MAX_VIOLATIONS) {
            details.add_bad_request_violation(
                bounded(field, MAX_DETAIL),
                bounded(description, MAX_DETAIL),
            );
        }
        if count > MAX_VIOLATIONS {
            details.add_bad_request_violation(
                "",
                format!("and {} more violations", count - MAX_VIOLATIONS),
            );
        }
        Status::with_error_details(self.code, bounded(self.message, MAX_MESSAGE), details)
    }
}

/// Longest status message sent, in bytes (before percent-encoding, which may triple it).
pub const MAX_MESSAGE: usize = 512;
/// Longest ErrorInfo metadata value, violation field path or description sent, in bytes.
pub const MAX_DETAIL: usize = 256;
/// Most field violations sent; the rest are counted in one last violation.
pub const MAX_VIOLATIONS: usize = 10;

/// `text` cut to at most `max` bytes on a character boundary, marked with `…` when cut.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Collects every field violation of a request so the caller can fix them all at once.
#[derive(Debug, Default)]
pub struct Violations {
    found: Vec<(String, String)>,
    prefix: String,
}

impl Violations {
    /// A collector whose field paths start with `prefix` (e.g. `service_unit`), or none when empty.
    pub fn new(prefix: &str) -> Self {
        Self {
            found: Vec::new(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}.")
            },
        }
    }

    /// Records a violation of `field` (relative to the prefix).
    pub fn add(&mut self, field: impl AsRef<str>, description: impl Into<String>) {
        self.found.push((
            format!("{}{}", self.prefix, field.as_ref()),
            description.into(),
        ));
    }

    /// Records a violation unless `ok`.
    pub fn check(&mut self, ok: bool, field: impl AsRef<str>, description: impl Into<String>) {
        if !ok {
            self.add(field, description);
        }
    }

    /// Ok when nothing was recorded, INVALID_ARGUMENT naming every field otherwise.
    pub fn finish(self) -> ApiResult<()> {
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_fields(self.found))
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                ApiError::unavailable("database", &err)
            }
            // PostgreSQL gave up this transaction for a concurrent one (serialization failure,
            // deadlock): nothing was written, and the same call may succeed if retried.
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("40001" | "40P01")) =>
            {
                ApiError::new(
                    Code::Aborted,
                    "CONCURRENT_TRANSACTION",
                    "the database aborted this call in favour of a concurrent one; retry it",
                )
            }
            // 57014 query_canceled: the statement ran past `storage.statement_timeout_ms` (or an
            // operator cancelled it). The work was too large for one call, not an internal fault.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => {
                tracing::warn!("a statement was cancelled by the statement timeout");
                ApiError::new(
                    Code::DeadlineExceeded,
                    "STATEMENT_TIMEOUT",
                    "the database cancelled a statement that ran too long; narrow the request or retry later",
                )
            }
            // 25P03: the session sat idle inside a transaction past the timeout and was ended.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("25P03") => {
                ApiError::unavailable("database", &err)
            }
            _ => ApiError::internal("database", &err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_keeps_short_input_and_cuts_long_input_on_a_char_boundary() {
        assert_eq!(quote("kind"), "kind");
        let exactly = "a".repeat(QUOTE_CHARS);
        assert_eq!(quote(&exactly), exactly);
        let long = "é".repeat(100_000);
        let quoted = quote(&long);
        assert_eq!(quoted.chars().count(), QUOTE_CHARS + 1);
        assert!(quoted.ends_with('…'));
    }

    #[test]
    fn status_texts_are_capped_whatever_the_message_holds() {
        let huge = "ü".repeat(50_000);
        let status = ApiError::invalid("filter", huge.clone())
            .with_meta("resource", huge)
            .into_status("org.pm.dev");
        assert!(
            status.message().len() <= MAX_MESSAGE_BYTES,
            "{}",
            status.message().len()
        );
        assert!(status.message().ends_with('…'));
        let details = status.get_error_details();
        let info = details.error_info().expect("error info");
        assert!(info.metadata["resource"].len() <= MAX_MESSAGE_BYTES);
        let bad = details.bad_request().expect("bad request");
        assert!(bad.field_violations[0].description.len() <= MAX_MESSAGE_BYTES);
    }

    #[test]
    fn invalid_argument_carries_error_info_and_field_violations() {
        let status = ApiError::invalid("service_unit.display_name", "must not be empty")
            .into_status("org.pm.dev");
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.domain, "org.pm.dev");
        let bad = details.bad_request().expect("bad request");
        assert_eq!(bad.field_violations[0].field, "service_unit.display_name");
    }

    #[test]
    fn metadata_reaches_the_client() {
        let status = ApiError::not_found("organizations/acme").into_status("org.pm.dev");
        let details = status.get_error_details();
        let info = details.error_info().expect("error info");
        assert_eq!(
            info.metadata.get("resource").map(String::as_str),
            Some("organizations/acme")
        );
    }

    #[test]
    fn what_an_error_quotes_is_bounded() {
        let long = format!("organizations/{}", "é".repeat(10_000));
        let mut err = ApiError::not_found(&long);
        for i in 0..1_000 {
            err = err.with_violation(format!("names[{i}]"), long.clone());
        }
        let status = err.into_status("org.pm.dev");
        assert!(status.message().len() <= MAX_MESSAGE);
        assert!(status.message().ends_with('…'));
        let details = status.get_error_details();
        let info = details.error_info().expect("error info");
        let resource = info.metadata.get("resource").map_or(0, String::len);
        assert!((1..=MAX_DETAIL).contains(&resource));
        let bad = details.bad_request().expect("bad request");
        assert_eq!(bad.field_violations.len(), MAX_VIOLATIONS + 1);
        assert!(
            bad.field_violations
                .iter()
                .all(|v| v.description.len() <= MAX_DETAIL)
        );
        assert_eq!(
            bad.field_violations[MAX_VIOLATIONS].description,
            "and 990 more violations"
        );
        // What goes on the wire as trailers stays well under h2's default 16 KiB limit.
        let mut headers = tonic::metadata::MetadataMap::new().into_headers();
        let mut wire = status.into_http::<()>();
        headers.extend(wire.headers_mut().drain());
        let size: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        assert!(size < 8 * 1024, "{size} bytes of trailers");
    }

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(bounded("abc".into(), 3), "abc");
        assert_eq!(bounded("abcd".into(), 4), "abcd");
        assert_eq!(bounded("abcdef".into(), 5), "ab…");
    }
}

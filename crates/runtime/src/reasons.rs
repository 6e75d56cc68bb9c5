//! The error reasons every service may send (`google.rpc.ErrorInfo.reason`, AIP-193), and the check
//! that keeps each service's catalog complete.
//!
//! A reason names the proximate cause in UPPER_SNAKE_CASE and never changes once published; clients
//! branch on it (with the ErrorInfo's `domain`, e.g. `org.pm.dev`), not on messages. INVALID_ARGUMENT
//! carries a specific reason where one applies (`PAGE_TOKEN_INVALID`, `UPDATE_MASK_INVALID`, …) and a
//! `google.rpc.BadRequest` naming the fields. Each service lists its own reasons in its `reasons.rs`
//! (`pm_org::reasons`, `pm_scheduling::reasons`, `pm_rbac::reasons`, `pm_authz::reasons` for the
//! shared layer); a unit test in each crate fails when its code sends a reason no catalog lists.

use std::path::Path;

use tonic::Code;

/// One reason of a catalog.
#[derive(Debug, Clone, Copy)]
pub struct Reason {
    /// The `ErrorInfo.reason`.
    pub reason: &'static str,
    /// The status code it comes with.
    pub code: Code,
    /// What it means and what the caller can do.
    pub meaning: &'static str,
}

const fn reason(reason: &'static str, code: Code, meaning: &'static str) -> Reason {
    Reason {
        reason,
        code,
        meaning,
    }
}

/// Reasons of the shared runtime (standard methods, paging, storage), sent by every service.
pub const SHARED: &[Reason] = &[
    reason(
        "INVALID_ARGUMENT",
        Code::InvalidArgument,
        "a field breaks its documented format or range; BadRequest names it",
    ),
    reason(
        "FIELD_REQUIRED",
        Code::InvalidArgument,
        "a required field is missing",
    ),
    reason(
        "RESOURCE_NAME_INVALID",
        Code::InvalidArgument,
        "a field is not a resource name of the expected pattern",
    ),
    reason(
        "RESOURCE_ID_INVALID",
        Code::InvalidArgument,
        "a requested id is not 1 to 63 lowercase letters, digits and dashes starting with a letter",
    ),
    reason(
        "PAGE_SIZE_INVALID",
        Code::InvalidArgument,
        "page_size is negative",
    ),
    reason(
        "PAGE_TOKEN_INVALID",
        Code::InvalidArgument,
        "page_token is not one this server gave for the same query, method and caller",
    ),
    reason(
        "FILTER_INVALID",
        Code::InvalidArgument,
        "filter does not parse, names a field that cannot be filtered, or is too long",
    ),
    reason(
        "ORDER_BY_INVALID",
        Code::InvalidArgument,
        "order_by is not one of the orders the List supports",
    ),
    reason(
        "UPDATE_MASK_INVALID",
        Code::InvalidArgument,
        "update_mask names an unknown, output-only or immutable field",
    ),
    reason(
        "REQUEST_ID_INVALID",
        Code::InvalidArgument,
        "request_id is not a UUID",
    ),
    reason(
        "REQUEST_ID_REUSED",
        Code::FailedPrecondition,
        "request_id was used before with a different request",
    ),
    reason(
        "REQUEST_ID_IN_FLIGHT",
        Code::FailedPrecondition,
        "a twin call with this request_id was being answered; retry to get its answer",
    ),
    reason(
        "RESOURCE_NOT_FOUND",
        Code::NotFound,
        "the named resource does not exist (or is deleted)",
    ),
    reason(
        "RESOURCE_ALREADY_EXISTS",
        Code::AlreadyExists,
        "a resource with the requested name exists",
    ),
    reason(
        "ETAG_MISMATCH",
        Code::Aborted,
        "the resource changed since it was read: get it again and retry",
    ),
    reason(
        "CONCURRENT_TRANSACTION",
        Code::Aborted,
        "a concurrent write got in the way: retry",
    ),
    reason(
        "CURSOR_MOVED",
        Code::Aborted,
        "another replica of a follower applied the same events first (internal, logged)",
    ),
    reason(
        "SOURCE_FAILED",
        Code::Unavailable,
        "a followed event stream failed (internal, logged; the follower resubscribes)",
    ),
    reason(
        "STATEMENT_TIMEOUT",
        Code::DeadlineExceeded,
        "the database statement ran past storage.statement_timeout_ms",
    ),
    reason(
        "STORAGE_UNAVAILABLE",
        Code::Unavailable,
        "the database cannot be reached: retry later",
    ),
    reason(
        "PEER_UNAVAILABLE",
        Code::Unavailable,
        "another service of the mesh cannot be reached: retry later; nothing was written",
    ),
    reason(
        "INTERNAL",
        Code::Internal,
        "a failure the caller cannot fix (logged without PHI)",
    ),
];

/// A catalog: `reasons![ "UNIT_CYCLE" FailedPrecondition "what it means", … ]`.
#[macro_export]
macro_rules! reasons {
    ($($reason:literal $code:ident $meaning:literal),* $(,)?) => {
        &[$($crate::reasons::Reason {
            reason: $reason,
            code: ::tonic::Code::$code,
            meaning: $meaning,
        }),*]
    };
}

/// A unit test in the calling crate: its catalog is well formed and lists every reason its sources
/// send (with the shared ones).
#[macro_export]
macro_rules! catalogued_reasons_test {
    ($catalog:expr $(, $more:expr)*) => {
        #[test]
        fn every_reason_sent_is_in_the_catalog() {
            if let Err(e) = $crate::reasons::check_catalog($catalog) {
                panic!("{e}");
            }
            let src = ::std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
            let catalogs: &[&[$crate::reasons::Reason]] = &[$crate::reasons::SHARED, $catalog $(, $more)*];
            let missing = match $crate::reasons::undeclared(&src, catalogs) {
                Ok(missing) => missing,
                Err(e) => panic!("{e}"),
            };
            assert!(missing.is_empty(), "reasons missing from the catalog:\n{}", missing.join("\n"));
        }
    };
}

/// The reasons sent as string literals in the Rust sources under `src` (through `ApiError::new`,
/// `precondition`, `already_exists` or `because`) that none of `catalogs` lists.
pub fn undeclared(src: &Path, catalogs: &[&[Reason]]) -> std::io::Result<Vec<String>> {
    let mut missing = Vec::new();
    for file in rust_files(src)? {
        let text = std::fs::read_to_string(&file)?;
        for sent in sent_reasons(&text) {
            let listed = catalogs.iter().any(|c| c.iter().any(|r| r.reason == sent));
            if !listed {
                missing.push(format!("{}: {sent}", file.display()));
            }
        }
    }
    missing.sort();
    missing.dedup();
    Ok(missing)
}

fn rust_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(files)
}

/// The first string literal after each error constructor, when it has the shape of a reason.
fn sent_reasons(text: &str) -> Vec<String> {
    const CONSTRUCTORS: [&str; 5] = [
        "ApiError::new(",
        "Self::new(",
        "ApiError::precondition(",
        "ApiError::already_exists(",
        ".because(",
    ];
    let mut found = Vec::new();
    for constructor in CONSTRUCTORS {
        for (at, _) in text.match_indices(constructor) {
            let rest = &text[at + constructor.len()..];
            let Some(open) = rest.find('"').filter(|&i| i < 80) else {
                continue;
            };
            let literal: String = rest[open + 1..].chars().take_while(|&c| c != '"').collect();
            let is_reason = literal.len() >= 3
                && literal
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if is_reason {
                found.push(literal);
            }
        }
    }
    found
}

/// Checks a catalog's own shape: UPPER_SNAKE reasons of at most 63 characters, each listed once.
pub fn check_catalog(catalog: &[Reason]) -> Result<(), String> {
    for (i, r) in catalog.iter().enumerate() {
        let shaped = !r.reason.is_empty()
            && r.reason.len() <= 63
            && r.reason.starts_with(|c: char| c.is_ascii_uppercase())
            && r.reason
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !shaped {
            return Err(format!("{} is not an UPPER_SNAKE reason", r.reason));
        }
        if catalog[..i].iter().any(|o| o.reason == r.reason) {
            return Err(format!("{} is listed twice", r.reason));
        }
        if r.meaning.is_empty() {
            return Err(format!("{} has no meaning", r.reason));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_catalog_lists_every_reason_the_runtime_sends() {
        check_catalog(SHARED).unwrap_or_else(|e| panic!("{e}"));
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let missing = undeclared(&src, &[SHARED]).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            missing.is_empty(),
            "reasons missing from SHARED:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn the_scan_finds_literal_reasons_after_constructors() {
        let text = r#"ApiError::precondition("UNIT_CYCLE", "x"); ApiError::new(Code::Aborted, "ETAG", m);
            x.because("PAGE_TOKEN_INVALID"); ApiError::new(code, reason, "not a reason")"#;
        assert_eq!(
            sent_reasons(text),
            ["ETAG", "UNIT_CYCLE", "PAGE_TOKEN_INVALID"]
        );
    }
}

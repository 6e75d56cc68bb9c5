//! List pagination (AIP-158): page sizes and opaque page tokens bound to the query they came from.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

/// Page size used when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page served; larger requests are coerced down to it.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The page size to serve for a requested `page_size`: 0 is the default, above the maximum is coerced,
/// negative is INVALID_ARGUMENT.
pub fn page_size(requested: i32) -> ApiResult<usize> {
    match usize::try_from(requested) {
        Err(_) => Err(ApiError::invalid("page_size", "must not be negative")),
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(n) => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

/// A digest of everything that defines a list query except the page size and token. A token is only
/// honoured for the query that issued it.
pub fn query_fingerprint(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..12])
}

#[derive(Serialize, Deserialize)]
struct Token {
    /// Query fingerprint.
    q: String,
    /// Sort key of the last item served.
    k: Vec<String>,
}

/// Encodes the token that resumes after the item whose sort key is `after`.
pub fn encode_token(fingerprint: &str, after: Vec<String>) -> String {
    let token = Token {
        q: fingerprint.to_string(),
        k: after,
    };
    // Serializing a struct of strings cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// Decodes a page token for the query with `fingerprint`: `None` for the first page.
pub fn decode_token(token: &str, fingerprint: &str) -> ApiResult<Option<Vec<String>>> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || ApiError::invalid("page_token", "is not a page token issued by this API");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let token: Token = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if token.q != fingerprint {
        return Err(ApiError::invalid(
            "page_token",
            "was issued for a different query: parent, filter, order_by and show_deleted must stay the same across pages",
        )
        .with_meta("reason", "PAGE_TOKEN_QUERY_MISMATCH"));
    }
    Ok(Some(token.k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_coerces_and_rejects_negative() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(7).ok(), Some(7));
        assert_eq!(page_size(1_000_000).ok(), Some(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn token_round_trips_for_the_same_query_only() -> ApiResult<()> {
        let q = query_fingerprint(&["organizations/acme", "kind = X"]);
        let token = encode_token(&q, vec!["organizations/acme/units/b".into()]);
        assert_eq!(
            decode_token(&token, &q)?,
            Some(vec!["organizations/acme/units/b".to_string()])
        );
        let other = query_fingerprint(&["organizations/acme", "kind = Y"]);
        let err = decode_token(&token, &other).expect_err("query changed");
        assert_eq!(err.violations[0].0, "page_token");
        assert!(decode_token("!!not-base64", &q).is_err());
        Ok(())
    }

    #[test]
    fn fingerprint_separates_fields() {
        assert_ne!(
            query_fingerprint(&["ab", "c"]),
            query_fingerprint(&["a", "bc"])
        );
    }
}

//! The error reasons of the shared authorization layer and the audit trail, sent by every service
//! (see [`pm_runtime::reasons`]).

use pm_runtime::reasons::Reason;

/// The layer's and the audit trail's reasons.
pub const CATALOG: &[Reason] = pm_runtime::reasons![
    "TOKEN_MISSING" Unauthenticated "no bearer token, and the peer is not a service allowed without one",
    "TOKEN_INVALID" Unauthenticated "the token cannot be decoded",
    "TOKEN_EXPIRED" Unauthenticated "the token has expired: get a new one",
    "TOKEN_NOT_YET_VALID" Unauthenticated "the token's nbf is in the future",
    "TOKEN_SIGNATURE" Unauthenticated "the token's signature does not verify",
    "TOKEN_UNKNOWN_KEY" Unauthenticated "the token names a signing key RBAC does not publish",
    "TOKEN_ALGORITHM" Unauthenticated "the token is not EdDSA",
    "TOKEN_ISSUER" Unauthenticated "the token was not issued by this mesh's RBAC",
    "TOKEN_AUDIENCE" Unauthenticated "the token is for another audience",
    "PERMISSION_DENIED" PermissionDenied "no binding of the caller allows the call on what it names; identical for a resource that does not exist",
    "NO_AUTHZ_RULE" PermissionDenied "the method declares no authorization rule, so nobody may call it",
    "BREAK_GLASS_NOT_GRANTED" PermissionDenied "purpose BTG without a live break-glass grant in the organization the call is about",
    "NO_RULE" Internal "the authorization layer is not installed in front of the handler",
    "NO_CALLER" Internal "the authorization layer is not installed in front of the handler",
    "MALFORMED_REQUEST" InvalidArgument "the request does not decode as its message, or breaks the mesh-wide bounds (string sizes, NUL, repeated counts, time ranges)",
    "REQUEST_TOO_LARGE" InvalidArgument "the request body is larger than 1 MiB or was cut off",
    "COMPRESSION_UNSUPPORTED" Unimplemented "the request is compressed; send it uncompressed",
    "TOO_MANY_CALLS_IN_FLIGHT" ResourceExhausted "the caller has server.per_caller_concurrency calls in flight on this service: retry with backoff",
    "TOO_MANY_OPEN_STREAMS" ResourceExhausted "the caller has server.per_caller_streams streams open on this service",
    "SCOPES_UNAVAILABLE" Unavailable "where the named resources sit could not be resolved: retry later",
    "AUDIT_UNAVAILABLE" Unavailable "the audit trail cannot record the call, so a PHI read is refused: retry later",
    "AUDIT_CHAIN_BROKEN" FailedPrecondition "verification found a record that does not chain to the one before it",
];

#[cfg(test)]
mod tests {
    pm_runtime::catalogued_reasons_test!(super::CATALOG);
}

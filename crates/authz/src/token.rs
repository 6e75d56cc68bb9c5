//! Bearer tokens for people and client applications.
//!
//! RBAC issues short-lived signed tokens for principals: a JWT signed with Ed25519 (`alg: EdDSA`)
//! whose header names the signing key (`kid`). Every service verifies them locally with RBAC's
//! published public keys ([`PublicKey`], the `x` of an OKP/Ed25519 JWK). Keys rotate without
//! downtime: RBAC publishes the new key, verifiers refresh their key set
//! ([`Verifier::replace_keys`]) and accept both keys, RBAC starts signing with the new key, and the
//! old key is dropped from the set once its last tokens have expired.
//!
//! Verification accepts only `alg: EdDSA` with a known `kid` and a valid signature, then checks
//! `iss`, `aud`, `exp`, `nbf` and `iat` against a caller-supplied clock (with a small leeway for clock
//! skew). Everything else — `alg: none`, HMAC (including HMAC keyed with the public key), other
//! algorithms, unknown or missing key ids, forged or tampered tokens, expired or not-yet-valid
//! tokens, wrong issuer or audience — is a [`TokenError`], which callers map to `UNAUTHENTICATED`.
//!
//! Tokens are credentials: no error message or `Debug` output contains a token, and signing keys
//! never print their key material.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand_core::{OsRng, RngCore as _};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;

mod eddsa_only;

/// The only signature algorithm issued and accepted (RFC 8037: Ed25519 signatures in JOSE).
const ALG: &str = "EdDSA";
/// The default tolerance for clock skew between the issuer and a verifier.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Tokens longer than this are rejected before any parsing (ours are a few hundred bytes).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// The longest key id accepted.
const MAX_KID_LEN: usize = 64;

/// Why a bearer token was not accepted. Every variant means `UNAUTHENTICATED` to the caller.
///
/// Messages never contain the token; the only token-derived strings they carry (an unsupported
/// `alg`, an unknown `kid`) are short, restricted to a safe character set, and otherwise replaced.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed bearer token")]
    Malformed,
    #[error("unsupported token signature algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("token has no key id")]
    MissingKeyId,
    #[error("token signed with unknown key {0:?}")]
    UnknownKey(String),
    #[error("bad token signature")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("token is for a different audience")]
    WrongAudience,
    #[error("token is from an unexpected issuer")]
    WrongIssuer,
    #[error("internal token error: {0}")]
    Internal(String),
}

/// The claims of a principal's token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The principal's resource name, e.g. `principals/alice`.
    pub sub: String,
    /// The issuer (RBAC).
    pub iss: String,
    /// The intended audience (the mesh).
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Not before, seconds since the Unix epoch.
    pub nbf: i64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// A unique token id.
    pub jti: String,
    /// On-behalf-of: the client application acting for the principal, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<String>,
}

/// A published verification key: the `kid` and `x` members of an OKP/Ed25519 JWK (RFC 8037).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PublicKey {
    pub kid: String,
    /// The raw 32-byte Ed25519 public key, base64url without padding.
    pub x: String,
}

/// An Ed25519 private key used by RBAC to sign tokens, with its key id.
///
/// `Debug` prints the key id and the public key only; the key material is zeroized on drop.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
    encoding: EncodingKey,
}

impl SigningKey {
    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate(kid: impl Into<String>) -> Result<Self, TokenError> {
        let kid = checked_kid(kid.into())?;
        let mut seed = zeroize::Zeroizing::new([0u8; ed25519_dalek::SECRET_KEY_LENGTH]);
        OsRng.try_fill_bytes(&mut *seed).map_err(|_| {
            TokenError::Internal("the system random number generator failed".into())
        })?;
        Self::from_dalek(kid, ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// A key stored with [`SigningKey::to_pkcs8_der`] (PKCS#8 v1 or v2, RFC 8410).
    pub fn from_pkcs8_der(kid: impl Into<String>, der: &[u8]) -> Result<Self, TokenError> {
        let kid = checked_kid(kid.into())?;
        let key = ed25519_dalek::SigningKey::from_pkcs8_der(der)
            .map_err(|_| TokenError::Internal("invalid Ed25519 PKCS#8 private key".into()))?;
        Self::from_dalek(kid, key)
    }

    fn from_dalek(kid: String, key: ed25519_dalek::SigningKey) -> Result<Self, TokenError> {
        let der = key
            .to_pkcs8_der()
            .map_err(|_| TokenError::Internal("cannot encode Ed25519 private key".into()))?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        Ok(Self { kid, key, encoding })
    }

    /// The key as a PKCS#8 v2 DER document (private and public key), for storage.
    ///
    /// This is secret key material: store it encrypted or access-controlled, and zeroize copies.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, TokenError> {
        let der = self
            .key
            .to_pkcs8_der()
            .map_err(|_| TokenError::Internal("cannot encode Ed25519 private key".into()))?;
        Ok(der.as_bytes().to_vec())
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key to publish so that services can verify this key's tokens.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            x: URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("x", &self.public_key().x)
            .finish_non_exhaustive()
    }
}

/// Signs `claims` with `key`: a compact JWT with header `{"typ":"JWT","alg":"EdDSA","kid":…}`.
pub fn issue(key: &SigningKey, claims: &Claims) -> Result<String, TokenError> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("JWT".into());
    header.kid = Some(key.kid.clone());
    eddsa_only::install();
    jsonwebtoken::encode(&header, claims, &key.encoding)
        .map_err(|e| TokenError::Internal(format!("cannot sign token: {e}")))
}

/// Verifies tokens locally against a set of published keys.
///
/// Share one `Verifier` (e.g. in an `Arc`) between requests; a background task can refresh the key
/// set with [`Verifier::replace_keys`] while requests are being verified.
pub struct Verifier {
    issuer: String,
    audience: String,
    leeway: i64,
    keys: RwLock<Arc<HashMap<String, DecodingKey>>>,
    validation: Validation,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("kids", &self.key_ids())
            .finish()
    }
}

impl Verifier {
    /// A verifier accepting tokens from `issuer` for `audience` signed by any of `keys`, with the
    /// [`DEFAULT_LEEWAY`]. Fails on a key that is not a valid Ed25519 public key or a key id
    /// listed twice with different keys. An empty key set is allowed (it rejects every token).
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        keys: impl IntoIterator<Item = PublicKey>,
    ) -> Result<Self, TokenError> {
        // Signature, algorithm and key checks are done by jsonwebtoken; every claim check is done
        // here against the caller's clock, so jsonwebtoken's own (wall-clock) checks are all off.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Ok(Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: leeway_secs(DEFAULT_LEEWAY),
            keys: RwLock::new(Arc::new(key_set(keys)?)),
            validation,
        })
    }

    /// The same verifier with a different clock-skew tolerance.
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway_secs(leeway);
        self
    }

    /// Replaces the key set atomically (e.g. after fetching RBAC's published keys). On error the
    /// current key set is kept.
    pub fn replace_keys(
        &self,
        keys: impl IntoIterator<Item = PublicKey>,
    ) -> Result<(), TokenError> {
        let keys = Arc::new(key_set(keys)?);
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
        Ok(())
    }

    /// The key ids currently accepted, sorted.
    pub fn key_ids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.current_keys().keys().cloned().collect();
        kids.sort();
        kids
    }

    fn current_keys(&self) -> Arc<HashMap<String, DecodingKey>> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Verifies `token` at time `now_unix` (seconds since the Unix epoch) and returns its claims.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header = RawHeader::decode(header)?;
        if header.alg != ALG {
            return Err(TokenError::UnsupportedAlgorithm(printable(&header.alg)));
        }
        if let Some(typ) = &header.typ
            && !typ.eq_ignore_ascii_case("JWT")
        {
            return Err(TokenError::Malformed);
        }
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
            return Err(TokenError::Malformed);
        }
        let kid = match header.kid.as_deref() {
            None | Some("") => return Err(TokenError::MissingKeyId),
            Some(kid) => kid,
        };
        let keys = self.current_keys();
        let key = keys
            .get(kid)
            .ok_or_else(|| TokenError::UnknownKey(printable(kid)))?;

        eddsa_only::install();
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?
            .claims;

        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.aud != self.audience {
            return Err(TokenError::WrongAudience);
        }
        if claims.exp < now_unix.saturating_sub(self.leeway) {
            return Err(TokenError::Expired);
        }
        let latest_start = now_unix.saturating_add(self.leeway);
        if claims.nbf > latest_start || claims.iat > latest_start {
            return Err(TokenError::NotYetValid);
        }
        if claims.sub.is_empty() {
            return Err(TokenError::Malformed);
        }
        Ok(claims)
    }

    /// Reads the bearer token from request metadata and verifies it; no token is
    /// [`TokenError::Missing`].
    pub fn verify_metadata(
        &self,
        metadata: &MetadataMap,
        now_unix: i64,
    ) -> Result<Claims, TokenError> {
        let token = bearer_token(metadata)?.ok_or(TokenError::Missing)?;
        self.verify(token, now_unix)
    }
}

/// The members of a JOSE header we look at before trusting anything else in the token.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

impl RawHeader {
    fn decode(encoded: &str) -> Result<Self, TokenError> {
        let json = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
    }
}

fn map_jwt_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => TokenError::UnsupportedAlgorithm(ALG.into()),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::MissingRequiredClaim(_) => TokenError::Malformed,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        // Key or provider trouble on our side. Never format the error: some kinds quote input.
        _ => TokenError::Internal("token verification failed".into()),
    }
}

fn key_set(
    keys: impl IntoIterator<Item = PublicKey>,
) -> Result<HashMap<String, DecodingKey>, TokenError> {
    let mut raw: HashMap<String, String> = HashMap::new();
    for key in keys {
        let kid = checked_kid(key.kid)?;
        let bytes = URL_SAFE_NO_PAD.decode(&key.x).ok();
        let valid = bytes
            .as_deref()
            .and_then(|b| <&[u8; ed25519_dalek::PUBLIC_KEY_LENGTH]>::try_from(b).ok())
            .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(b).ok())
            .is_some_and(|k| !k.is_weak());
        if !valid {
            return Err(TokenError::Internal(format!(
                "invalid Ed25519 public key for key id {kid:?}"
            )));
        }
        if let Some(previous) = raw.insert(kid.clone(), key.x.clone())
            && previous != key.x
        {
            return Err(TokenError::Internal(format!(
                "key id {kid:?} is listed with two different keys"
            )));
        }
    }
    raw.into_iter()
        .map(|(kid, x)| {
            let key = DecodingKey::from_ed_components(&x).map_err(|_| {
                TokenError::Internal(format!("invalid Ed25519 public key for key id {kid:?}"))
            })?;
            Ok((kid, key))
        })
        .collect()
}

fn is_safe_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'))
}

fn checked_kid(kid: String) -> Result<String, TokenError> {
    if is_safe_kid(&kid) {
        Ok(kid)
    } else {
        Err(TokenError::Internal(
            "a key id must be 1-64 characters of A-Z a-z 0-9 - _ . : /".into(),
        ))
    }
}

/// A token-supplied string (an `alg` or `kid`) as it may appear in an error message.
fn printable(value: &str) -> String {
    if is_safe_kid(value) {
        value.to_owned()
    } else {
        "<invalid>".to_owned()
    }
}

fn leeway_secs(leeway: Duration) -> i64 {
    i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX)
}

/// The token of an `authorization: Bearer <token>` request header.
///
/// `Ok(None)` when there is no `authorization` header; [`TokenError::Malformed`] when there is one
/// that is not exactly one `Bearer` credential (scheme matched case-insensitively, RFC 6750) with a
/// non-empty token of `b64token` characters, or when the header is repeated.
pub fn bearer_token(metadata: &MetadataMap) -> Result<Option<&str>, TokenError> {
    let mut values = metadata.get_all("authorization").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(TokenError::Malformed);
    }
    let value = value.to_str().map_err(|_| TokenError::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(TokenError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return Err(TokenError::Malformed);
    }
    let token = token.trim_start_matches(' ');
    if !is_b64token(token) {
        return Err(TokenError::Malformed);
    }
    Ok(Some(token))
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tonic::metadata::MetadataValue;

    const ISS: &str = "rbac";
    const AUD: &str = "pm-mesh";
    const NOW: i64 = 1_750_000_000;

    fn claims() -> Claims {
        Claims {
            sub: "principals/alice".into(),
            iss: ISS.into(),
            aud: AUD.into(),
            exp: NOW + 300,
            nbf: NOW,
            iat: NOW,
            jti: "0197a1b2-0000-7000-8000-000000000001".into(),
            act: Some("clients/front-desk".into()),
        }
    }

    fn verifier(keys: &[&SigningKey]) -> Verifier {
        Verifier::new(ISS, AUD, keys.iter().map(|k| k.public_key())).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn b64_json(value: &serde_json::Value) -> String {
        b64(&serde_json::to_vec(value).unwrap())
    }

    #[test]
    fn round_trip() {
        let key = SigningKey::generate("k1").unwrap();
        let c = claims();
        let token = issue(&key, &c).unwrap();
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            header,
            serde_json::json!({"typ": "JWT", "alg": "EdDSA", "kid": "k1"})
        );
        assert_eq!(verifier(&[&key]).verify(&token, NOW).unwrap(), c);

        let mut no_act = claims();
        no_act.act = None;
        let token = issue(&key, &no_act).unwrap();
        let payload: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert!(payload.get("act").is_none(), "{payload}");
        assert_eq!(verifier(&[&key]).verify(&token, NOW).unwrap(), no_act);
    }

    #[test]
    fn pkcs8_round_trip_and_debug_hides_key() {
        let key = SigningKey::generate("k1").unwrap();
        let der = key.to_pkcs8_der().unwrap();
        let restored = SigningKey::from_pkcs8_der("k1", &der).unwrap();
        assert_eq!(restored.public_key(), key.public_key());
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&key.public_key().x).unwrap().len(),
            32
        );
        let token = issue(&restored, &claims()).unwrap();
        assert_eq!(verifier(&[&key]).verify(&token, NOW).unwrap(), claims());

        let debug = format!("{key:?}");
        let secret = key.key.to_bytes();
        assert!(debug.contains("k1"));
        for encoded in [
            b64(&secret),
            hex::encode(secret),
            format!("{secret:?}"),
            b64(&der),
        ] {
            assert!(!debug.contains(&encoded), "{debug}");
        }
        assert!(SigningKey::from_pkcs8_der("k1", b"not a key").is_err());
        assert!(SigningKey::generate("").is_err());
        assert!(SigningKey::generate("bad kid\n").is_err());
    }

    #[test]
    fn leeway_boundaries() {
        let key = SigningKey::generate("k1").unwrap();
        let v = verifier(&[&key]);
        let token = issue(&key, &claims()).unwrap();
        let exp = claims().exp;
        assert!(v.verify(&token, exp + 30).is_ok());
        assert_eq!(v.verify(&token, exp + 31), Err(TokenError::Expired));
        assert!(v.verify(&token, NOW - 30).is_ok());
        assert_eq!(v.verify(&token, NOW - 31), Err(TokenError::NotYetValid));
        let strict = verifier(&[&key]).with_leeway(Duration::ZERO);
        assert_eq!(strict.verify(&token, exp + 1), Err(TokenError::Expired));
    }

    #[test]
    fn expired() {
        let key = SigningKey::generate("k1").unwrap();
        let mut c = claims();
        c.iat = NOW - 3600;
        c.nbf = NOW - 3600;
        c.exp = NOW - 31;
        let token = issue(&key, &c).unwrap();
        assert_eq!(
            verifier(&[&key]).verify(&token, NOW),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn not_yet_valid() {
        let key = SigningKey::generate("k1").unwrap();
        let mut c = claims();
        c.nbf = NOW + 60;
        c.exp = NOW + 600;
        let token = issue(&key, &c).unwrap();
        assert_eq!(
            verifier(&[&key]).verify(&token, NOW),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(verifier(&[&key]).verify(&token, NOW + 60).unwrap(), c);
    }

    #[test]
    fn forged_signature_same_kid() {
        let real = SigningKey::generate("k1").unwrap();
        let forger = SigningKey::generate("k1").unwrap();
        let token = issue(&forger, &claims()).unwrap();
        assert_eq!(
            verifier(&[&real]).verify(&token, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampered_payload() {
        let key = SigningKey::generate("k1").unwrap();
        let token = issue(&key, &claims()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut c = claims();
        c.sub = "principals/mallory".into();
        let payload = b64_json(&serde_json::to_value(&c).unwrap());
        let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
        assert_eq!(
            verifier(&[&key]).verify(&tampered, NOW),
            Err(TokenError::BadSignature)
        );

        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[0] ^= 1;
        let bad_sig = format!("{}.{}.{}", parts[0], parts[1], b64(&sig));
        assert_eq!(
            verifier(&[&key]).verify(&bad_sig, NOW),
            Err(TokenError::BadSignature)
        );
        let no_sig = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(
            verifier(&[&key]).verify(&no_sig, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn wrong_audience() {
        let key = SigningKey::generate("k1").unwrap();
        let mut c = claims();
        c.aud = "some-other-service".into();
        let token = issue(&key, &c).unwrap();
        assert_eq!(
            verifier(&[&key]).verify(&token, NOW),
            Err(TokenError::WrongAudience)
        );
    }

    #[test]
    fn wrong_issuer() {
        let key = SigningKey::generate("k1").unwrap();
        let mut c = claims();
        c.iss = "not-rbac".into();
        let token = issue(&key, &c).unwrap();
        assert_eq!(
            verifier(&[&key]).verify(&token, NOW),
            Err(TokenError::WrongIssuer)
        );
    }

    #[test]
    fn unknown_kid() {
        let known = SigningKey::generate("k1").unwrap();
        let other = SigningKey::generate("k2").unwrap();
        let token = issue(&other, &claims()).unwrap();
        assert_eq!(
            verifier(&[&known]).verify(&token, NOW),
            Err(TokenError::UnknownKey("k2".into()))
        );
    }

    /// Re-signs `header` + `payload` with `key` as jsonwebtoken would, bypassing `issue`.
    fn sign_raw(
        key: &SigningKey,
        header: &serde_json::Value,
        payload: &serde_json::Value,
    ) -> String {
        use ed25519_dalek::Signer as _;
        let message = format!("{}.{}", b64_json(header), b64_json(payload));
        let sig = key.key.sign(message.as_bytes());
        format!("{message}.{}", b64(&sig.to_bytes()))
    }

    #[test]
    fn missing_kid() {
        let key = SigningKey::generate("k1").unwrap();
        let payload = serde_json::to_value(claims()).unwrap();
        let v = verifier(&[&key]);
        // Correctly signed by a known key, but the header does not say which.
        let token = sign_raw(
            &key,
            &serde_json::json!({"alg": "EdDSA", "typ": "JWT"}),
            &payload,
        );
        assert_eq!(v.verify(&token, NOW), Err(TokenError::MissingKeyId));
        let token = sign_raw(
            &key,
            &serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": ""}),
            &payload,
        );
        assert_eq!(v.verify(&token, NOW), Err(TokenError::MissingKeyId));
        // Sanity: the same construction with the kid verifies.
        let token = sign_raw(
            &key,
            &serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": "k1"}),
            &payload,
        );
        assert_eq!(v.verify(&token, NOW).unwrap(), claims());
    }

    #[test]
    fn alg_none() {
        let key = SigningKey::generate("k1").unwrap();
        let v = verifier(&[&key]);
        let payload = b64_json(&serde_json::to_value(claims()).unwrap());
        for alg in ["none", "None", "NONE"] {
            let header = b64_json(&serde_json::json!({"alg": alg, "typ": "JWT", "kid": "k1"}));
            let token = format!("{header}.{payload}.");
            assert_eq!(
                v.verify(&token, NOW),
                Err(TokenError::UnsupportedAlgorithm(alg.into()))
            );
        }
    }

    /// An HMAC-signed JWT of `claims()`, made as jsonwebtoken's HMAC signer would (our provider
    /// signs EdDSA only).
    fn sign_hmac(header: &Header, secret: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let message = format!(
            "{}.{}",
            b64_json(&serde_json::to_value(header).unwrap()),
            b64_json(&serde_json::to_value(claims()).unwrap())
        );
        fn mac<D: Mac + hmac::digest::KeyInit>(secret: &[u8], message: &str) -> Vec<u8> {
            let mut mac = <D as hmac::digest::KeyInit>::new_from_slice(secret).unwrap();
            mac.update(message.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        let signature = match header.alg {
            Algorithm::HS256 => mac::<Hmac<sha2::Sha256>>(secret, &message),
            Algorithm::HS384 => mac::<Hmac<sha2::Sha384>>(secret, &message),
            Algorithm::HS512 => mac::<Hmac<sha2::Sha512>>(secret, &message),
            other => panic!("not an HMAC algorithm: {other:?}"),
        };
        format!("{message}.{}", b64(&signature))
    }

    #[test]
    fn hs256_with_public_key_as_secret() {
        let key = SigningKey::generate("k1").unwrap();
        let v = verifier(&[&key]);
        let public = key.public_key();
        // The classic confusion attack: HMAC keyed with the published key, in both forms.
        for secret in [
            URL_SAFE_NO_PAD.decode(&public.x).unwrap(),
            public.x.clone().into_bytes(),
        ] {
            for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
                let mut header = Header::new(alg);
                header.kid = Some("k1".into());
                let token = sign_hmac(&header, &secret);
                let name = format!("{alg:?}");
                assert_eq!(
                    v.verify(&token, NOW),
                    Err(TokenError::UnsupportedAlgorithm(name))
                );
            }
        }
    }

    #[test]
    fn other_algorithms_and_garbage() {
        let key = SigningKey::generate("k1").unwrap();
        let v = verifier(&[&key]);
        let payload = serde_json::to_value(claims()).unwrap();
        for alg in ["RS256", "ES256", "PS256", "Ed25519", "eddsa"] {
            let token = sign_raw(
                &key,
                &serde_json::json!({"alg": alg, "kid": "k1"}),
                &payload,
            );
            assert_eq!(
                v.verify(&token, NOW),
                Err(TokenError::UnsupportedAlgorithm(alg.into()))
            );
        }
        let long_alg = "x".repeat(500);
        let token = sign_raw(
            &key,
            &serde_json::json!({"alg": long_alg, "kid": "k1"}),
            &payload,
        );
        assert_eq!(
            v.verify(&token, NOW),
            Err(TokenError::UnsupportedAlgorithm("<invalid>".into()))
        );

        let token = issue(&key, &claims()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(v.verify("", NOW), Err(TokenError::Missing));
        for bad in [
            "abc",
            "a.b",
            "!!!.b.c",
            &format!("{}.{}", parts[0], parts[1]),
            &format!("{token}.extra"),
            &format!("{}.{}.***", parts[0], parts[1]),
            &format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]),
            &format!(
                "{}.{}.{}",
                b64_json(&serde_json::json!({"kid": "k1"})),
                parts[1],
                parts[2]
            ),
            &"a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(v.verify(bad, NOW), Err(TokenError::Malformed), "{bad}");
        }
        // Signed, but with an unknown critical extension, or not a JWT.
        let token = sign_raw(
            &key,
            &serde_json::json!({"alg": "EdDSA", "kid": "k1", "crit": ["exp"]}),
            &payload,
        );
        assert_eq!(v.verify(&token, NOW), Err(TokenError::Malformed));
        let token = sign_raw(
            &key,
            &serde_json::json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"}),
            &payload,
        );
        assert_eq!(v.verify(&token, NOW), Err(TokenError::Malformed));
        // Signed, but the payload is not our claims.
        let token = sign_raw(
            &key,
            &serde_json::json!({"alg": "EdDSA", "kid": "k1"}),
            &serde_json::json!({"sub": "x"}),
        );
        assert_eq!(v.verify(&token, NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn error_messages_do_not_leak_tokens() {
        let key = SigningKey::generate("k1").unwrap();
        let token = issue(&key, &claims()).unwrap();
        let v = verifier(&[]);
        let err = v.verify(&token, NOW).unwrap_err();
        assert_eq!(err, TokenError::UnknownKey("k1".into()));
        let message = err.to_string();
        assert_eq!(message, "token signed with unknown key \"k1\"");
        for part in token.split('.') {
            assert!(!message.contains(part));
        }
    }

    #[test]
    fn rotation() {
        let old = SigningKey::generate("2026-01").unwrap();
        let new = SigningKey::generate("2026-02").unwrap();
        let v = verifier(&[&old, &new]);
        assert_eq!(
            v.key_ids(),
            vec!["2026-01".to_owned(), "2026-02".to_owned()]
        );
        let old_token = issue(&old, &claims()).unwrap();
        let new_token = issue(&new, &claims()).unwrap();
        assert_eq!(v.verify(&old_token, NOW).unwrap(), claims());
        assert_eq!(v.verify(&new_token, NOW).unwrap(), claims());

        v.replace_keys([new.public_key()]).unwrap();
        assert_eq!(
            v.verify(&old_token, NOW),
            Err(TokenError::UnknownKey("2026-01".into()))
        );
        assert_eq!(v.verify(&new_token, NOW).unwrap(), claims());

        // A bad key set is refused and the current one kept.
        let bad = PublicKey {
            kid: "2026-03".into(),
            x: b64(&[0u8; 31]),
        };
        assert!(v.replace_keys([new.public_key(), bad]).is_err());
        let conflicting = PublicKey {
            kid: "2026-02".into(),
            x: old.public_key().x,
        };
        assert!(v.replace_keys([new.public_key(), conflicting]).is_err());
        assert_eq!(v.verify(&new_token, NOW).unwrap(), claims());
    }

    #[test]
    fn invalid_public_keys_rejected() {
        let key = SigningKey::generate("k1").unwrap();
        for x in [
            String::new(),
            "!!".into(),
            b64(&[1u8; 33]),
            b64(&[0u8; 32]),
            format!("{}=", key.public_key().x),
        ] {
            let k = PublicKey {
                kid: "k1".into(),
                x,
            };
            assert!(Verifier::new(ISS, AUD, [k]).is_err());
        }
        let k = PublicKey {
            kid: String::new(),
            x: key.public_key().x,
        };
        assert!(Verifier::new(ISS, AUD, [k]).is_err());
    }

    fn metadata(value: &'static str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", MetadataValue::from_static(value));
        m
    }

    #[test]
    fn bearer_token_parsing() {
        assert_eq!(bearer_token(&MetadataMap::new()), Ok(None));
        assert_eq!(bearer_token(&metadata("Bearer x")), Ok(Some("x")));
        assert_eq!(bearer_token(&metadata("bearer x")), Ok(Some("x")));
        assert_eq!(
            bearer_token(&metadata("BEARER a.b-c_d")),
            Ok(Some("a.b-c_d"))
        );
        assert_eq!(bearer_token(&metadata("Bearer  x")), Ok(Some("x")));
        assert_eq!(bearer_token(&metadata("Bearer x==")), Ok(Some("x==")));
        for bad in [
            "Basic x",
            "Bearer",
            "Bearer ",
            "Bearer    ",
            "Bearerx",
            "x",
            "",
            "Bearer a b",
            "Bearer =",
            "Bearer a,b",
        ] {
            assert_eq!(
                bearer_token(&metadata(bad)),
                Err(TokenError::Malformed),
                "{bad:?}"
            );
        }
        let mut m = MetadataMap::new();
        m.insert(
            "authorization",
            MetadataValue::try_from("Bearer caf\u{e9}".as_bytes()).unwrap(),
        );
        assert_eq!(bearer_token(&m), Err(TokenError::Malformed));
        let mut m = metadata("Bearer x");
        m.append("authorization", MetadataValue::from_static("Bearer y"));
        assert_eq!(bearer_token(&m), Err(TokenError::Malformed));
    }

    #[test]
    fn verify_metadata() {
        let key = SigningKey::generate("k1").unwrap();
        let v = verifier(&[&key]);
        assert_eq!(
            v.verify_metadata(&MetadataMap::new(), NOW),
            Err(TokenError::Missing)
        );
        let mut m = MetadataMap::new();
        let value = format!("Bearer {}", issue(&key, &claims()).unwrap());
        m.insert("authorization", value.parse().unwrap());
        assert_eq!(v.verify_metadata(&m, NOW).unwrap(), claims());
    }
}

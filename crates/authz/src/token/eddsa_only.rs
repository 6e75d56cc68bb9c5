//! jsonwebtoken's cryptography, Ed25519 only, on ed25519-dalek.
//!
//! jsonwebtoken signs and verifies through a process-wide [`CryptoProvider`]. It ships two behind
//! features, and we use neither: `rust_crypto` brings RSA (the `rsa` crate, with an advisory open
//! against it: RUSTSEC-2023-0071), P-256 and P-384 along for algorithms [`super::Verifier`] never
//! accepts, and `aws_lc_rs` would be a second cryptography library next to ring (rustls, rcgen).
//! This provider knows `EdDSA` and nothing else; every other algorithm is an error, not a panic.

use std::sync::Once;

use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, signature};

static EDDSA_ONLY: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    // JWK helpers (thumbprints, keys from JWKs by jsonwebtoken) are not used: our JWKs are read in
    // `super::decoding_keys`.
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes this provider jsonwebtoken's, once per process, before the first signature or
/// verification (jsonwebtoken has no default without its crypto features).
pub(super) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err: a provider is installed already (another one only if some other code in the
        // process chose it); jsonwebtoken keeps the first.
        let _ = EDDSA_ONLY.install_default();
    });
}

fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    if *algorithm != Algorithm::EdDSA || key.family() != AlgorithmFamily::Ed {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let key = SigningKey::from_pkcs8_der(key.as_bytes()).map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(Box::new(EdSigner(key)))
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    if *algorithm != Algorithm::EdDSA || key.family() != AlgorithmFamily::Ed {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let bytes: &[u8; 32] = key
        .try_get_as_bytes()?
        .try_into()
        .map_err(|_| ErrorKind::InvalidEddsaKey)?;
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(Box::new(EdVerifier(key)))
}

struct EdSigner(SigningKey);

impl signature::Signer<Vec<u8>> for EdSigner {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        Ok(self.0.sign(message).to_bytes().to_vec())
    }
}

impl JwtSigner for EdSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

struct EdVerifier(VerifyingKey);

impl signature::Verifier<Vec<u8>> for EdVerifier {
    fn verify(&self, message: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        self.0.verify(message, &Signature::from_slice(sig)?)
    }
}

impl JwtVerifier for EdVerifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use jsonwebtoken::errors::ErrorKind;
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};

    #[test]
    fn other_algorithms_and_short_keys_are_errors_not_panics() {
        super::install();
        for alg in [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256] {
            let err = jsonwebtoken::encode(
                &Header::new(alg),
                &serde_json::json!({}),
                &EncodingKey::from_secret(b"k"),
            )
            .unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::InvalidAlgorithm), "{alg:?}");
        }
        // An EdDSA key of 3 bytes (jsonwebtoken's own verifier slices [..32] and panics).
        let short = DecodingKey::from_ed_components("AAAA").unwrap();
        let err =
            jsonwebtoken::crypto::verify("c2ln", b"message", &short, Algorithm::EdDSA).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidEddsaKey));
        let err = jsonwebtoken::crypto::verify(
            "c2ln",
            b"message",
            &DecodingKey::from_secret(b"k"),
            Algorithm::HS256,
        )
        .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidAlgorithm));
    }
}

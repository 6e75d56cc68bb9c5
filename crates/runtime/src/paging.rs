//! List pagination (AIP-158): page sizes and opaque page tokens.
//!
//! A page token is a cursor (the sort key of the last item served) with an HMAC-SHA256 tag over the
//! query's fingerprint, the RPC (its method path), the caller (principal, or the peer service's
//! identity) and the cursor, under a key every replica shares (`server.page_token_key_file`). So a
//! client cannot forge or edit a cursor, and a token is honoured only by the RPC, the caller and the
//! query that were given it. Every refusal reads the same ([`invalid_token`]): no oracle on which
//! part did not match.
//!
//! The RPC, the caller and the key reach [`encode_token`] and [`decode_token`] through a task-local
//! [`TokenScope`] that the authorization layer sets around each handler ([`scoped`]); code running
//! outside any call (store tests, tools) gets a scope with no RPC, no caller and a per-process key.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, TlsMode};
use crate::error::{ApiError, ApiResult};

/// Page size used when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page served; larger requests are coerced down to it.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The page size to serve for a requested `page_size`: 0 is the default, above the maximum is coerced,
/// negative is INVALID_ARGUMENT.
pub fn page_size(requested: i32) -> ApiResult<usize> {
    match usize::try_from(requested) {
        Err(_) => {
            Err(ApiError::invalid("page_size", "must not be negative").because("PAGE_SIZE_INVALID"))
        }
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

/// Length of a page-token key in bytes.
pub const KEY_BYTES: usize = 32;
const TAG_BYTES: usize = 32;

/// The key that signs page tokens. Never printed.
#[derive(Clone)]
pub struct PageKey(Arc<[u8; KEY_BYTES]>);

impl std::fmt::Debug for PageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageKey(<redacted>)")
    }
}

impl PageKey {
    /// A key of these bytes.
    pub fn new(bytes: [u8; KEY_BYTES]) -> Self {
        Self(Arc::new(bytes))
    }

    /// A fresh random key.
    pub fn random() -> anyhow::Result<Self> {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::getrandom(&mut bytes)
            .map_err(|e| anyhow::anyhow!("no randomness for a page-token key: {e}"))?;
        Ok(Self::new(bytes))
    }

    /// The key a process serves with: `server.page_token_key_file` when set; otherwise, with
    /// `tls.mode = files` (production) a start-up error, since replicas must share one key; in dev
    /// and plaintext mode `<data_dir>/pki/page-token.key`, generated on first use and kept (so tokens
    /// survive a restart, like the dev certificates).
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        if let Some(file) = &config.server.page_token_key_file {
            return Self::read(file).map_err(|e| {
                anyhow::anyhow!("server.page_token_key_file ({}): {e}", file.display())
            });
        }
        anyhow::ensure!(
            config.tls.mode != TlsMode::Files,
            "server.page_token_key_file is required with tls.mode = files: every replica must sign \
             page tokens with the same secret key (64 hex characters, e.g. `openssl rand -hex 32`)"
        );
        let dir = crate::tls::dev_pki_dir(config);
        std::fs::create_dir_all(&dir)?;
        Self::read_or_create(&dir.join("page-token.key"))
    }

    fn read(file: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file)?;
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; KEY_BYTES]>::try_from(b).ok())
            .ok_or_else(|| anyhow::anyhow!("must hold {KEY_BYTES} bytes as 64 hex characters"))?;
        Ok(Self::new(bytes))
    }

    /// Reads the dev key, creating it first if absent. Two processes starting on one data directory
    /// race to create it: the loser reads the winner's.
    fn read_or_create(file: &Path) -> anyhow::Result<Self> {
        use std::io::Write as _;
        if file.exists() {
            return Self::read(file);
        }
        let key = Self::random()?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        match options.open(file) {
            Ok(mut out) => {
                out.write_all(hex::encode(key.0.as_slice()).as_bytes())?;
                out.sync_all()?;
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // The winner may still be writing: wait for a whole key.
                for _ in 0..50 {
                    if let Ok(key) = Self::read(file) {
                        return Ok(key);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Self::read(file)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// What a page token is bound to besides its query: the signing key, the RPC and the caller.
#[derive(Debug, Clone)]
pub struct TokenScope {
    key: PageKey,
    method: String,
    caller: String,
}

impl TokenScope {
    /// Tokens of `method` (the full gRPC path) for `caller` (a principal or a peer identity; empty
    /// for none), signed with `key`.
    pub fn new(key: PageKey, method: impl Into<String>, caller: impl Into<String>) -> Self {
        Self {
            key,
            method: method.into(),
            caller: caller.into(),
        }
    }

    /// The scope outside any call: no RPC, no caller, a key of this process only.
    fn detached() -> Self {
        static KEY: OnceLock<PageKey> = OnceLock::new();
        let key = KEY.get_or_init(|| {
            // Without randomness a fixed key still binds tokens to their queries; it only loses
            // unforgeability for code that runs outside every call (tests, tools).
            PageKey::random().unwrap_or_else(|_| PageKey::new([0x5a; KEY_BYTES]))
        });
        Self::new(key.clone(), "", "")
    }

    fn tag(&self, fingerprint: &str, cursor: &[u8]) -> Hmac<Sha256> {
        // A fixed-size key cannot be refused.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.0.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        for part in [
            b"pm-page-token-v1".as_slice(),
            fingerprint.as_bytes(),
            self.method.as_bytes(),
            self.caller.as_bytes(),
            cursor,
        ] {
            // Length-prefixed, so that no two different tuples feed the same bytes.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }
}

tokio::task_local! {
    static SCOPE: TokenScope;
}

/// Runs `call` (a handler's future) with page tokens bound to `scope`.
pub fn scoped<F: Future>(scope: TokenScope, call: F) -> impl Future<Output = F::Output> {
    SCOPE.scope(scope, call)
}

fn current_scope() -> TokenScope {
    SCOPE
        .try_with(TokenScope::clone)
        .unwrap_or_else(|_| TokenScope::detached())
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    /// Sort key of the last item served.
    k: Vec<String>,
}

/// The one refusal of a page token, whatever was wrong with it.
pub fn invalid_token() -> ApiError {
    ApiError::invalid(
        "page_token",
        "is not a page token of this call: pass next_page_token back unchanged, to the same method \
         as the same caller, with the same parent, filter, order_by and show_deleted",
    )
    .because("PAGE_TOKEN_INVALID")
}

/// Encodes the token that resumes after the item whose sort key is `after`, in the current call's
/// [`TokenScope`].
pub fn encode_token(fingerprint: &str, after: Vec<String>) -> String {
    encode_in(&current_scope(), fingerprint, after)
}

/// Decodes a page token for the query with `fingerprint` in the current call's [`TokenScope`]:
/// `None` for the first page.
pub fn decode_token(token: &str, fingerprint: &str) -> ApiResult<Option<Vec<String>>> {
    decode_in(&current_scope(), token, fingerprint)
}

/// The position a newest-first page resumes after, `(instant µs, name)`, from a token that
/// [`encode_token`] made of those two: `(i64::MAX, "")` (before everything) for the first page.
pub fn decode_newest_first(token: &str, fingerprint: &str) -> ApiResult<(i64, String)> {
    match decode_token(token, fingerprint)?.as_deref() {
        Some([us, name]) => Ok((
            us.parse::<i64>().map_err(|_| invalid_token())?,
            name.clone(),
        )),
        Some(_) => Err(invalid_token()),
        None => Ok((i64::MAX, String::new())),
    }
}

fn encode_in(scope: &TokenScope, fingerprint: &str, after: Vec<String>) -> String {
    // Serializing a struct of strings cannot fail.
    let cursor = serde_json::to_vec(&Cursor { k: after }).unwrap_or_default();
    let tag = scope.tag(fingerprint, &cursor).finalize().into_bytes();
    let mut bytes = Vec::with_capacity(TAG_BYTES + cursor.len());
    bytes.extend_from_slice(&tag);
    bytes.extend_from_slice(&cursor);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_in(scope: &TokenScope, token: &str, fingerprint: &str) -> ApiResult<Option<Vec<String>>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid_token())?;
    if bytes.len() < TAG_BYTES {
        return Err(invalid_token());
    }
    let (tag, cursor) = bytes.split_at(TAG_BYTES);
    // verify_slice compares in constant time.
    scope
        .tag(fingerprint, cursor)
        .verify_slice(tag)
        .map_err(|_| invalid_token())?;
    let cursor: Cursor = serde_json::from_slice(cursor).map_err(|_| invalid_token())?;
    Ok(Some(cursor.k))
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

    const LIST_UNITS: &str = "/pm.org.v1.OrgService/ListServiceUnits";

    fn scope(key: &PageKey, method: &str, caller: &str) -> TokenScope {
        TokenScope::new(key.clone(), method, caller)
    }

    fn refused(result: ApiResult<Option<Vec<String>>>) -> ApiError {
        let err = result.expect_err("the token must be refused");
        assert_eq!(err.violations[0].0, "page_token");
        assert_eq!(err, invalid_token(), "one message for every refusal");
        err
    }

    #[test]
    fn token_round_trips_for_the_same_rpc_caller_and_query() -> anyhow::Result<()> {
        let key = PageKey::random()?;
        let alice = scope(&key, LIST_UNITS, "principals/alice");
        let q = query_fingerprint(&["organizations/acme", "kind = X"]);
        let token = encode_in(&alice, &q, vec!["organizations/acme/units/b".into()]);
        assert_eq!(
            decode_in(&alice, &token, &q)?,
            Some(vec!["organizations/acme/units/b".to_string()])
        );
        assert_eq!(decode_in(&alice, "", &q)?, None);
        Ok(())
    }

    #[test]
    fn token_of_another_query_rpc_caller_or_key_is_refused() -> anyhow::Result<()> {
        let key = PageKey::random()?;
        let alice = scope(&key, LIST_UNITS, "principals/alice");
        let q = query_fingerprint(&["organizations/acme", "kind = X"]);
        let token = encode_in(&alice, &q, vec!["organizations/acme/units/b".into()]);

        let other_query = query_fingerprint(&["organizations/acme", "kind = Y"]);
        refused(decode_in(&alice, &token, &other_query));
        let other_rpc = scope(
            &key,
            "/pm.org.v1.OrgService/ListLocations",
            "principals/alice",
        );
        refused(decode_in(&other_rpc, &token, &q));
        let other_caller = scope(&key, LIST_UNITS, "principals/bob");
        refused(decode_in(&other_caller, &token, &q));
        let other_key = scope(&PageKey::random()?, LIST_UNITS, "principals/alice");
        refused(decode_in(&other_key, &token, &q));
        Ok(())
    }

    #[test]
    fn tampered_or_forged_tokens_are_refused() -> anyhow::Result<()> {
        let key = PageKey::random()?;
        let alice = scope(&key, LIST_UNITS, "principals/alice");
        let q = query_fingerprint(&["organizations/acme"]);
        let token = encode_in(&alice, &q, vec!["organizations/acme/units/b".into()]);
        let mut bytes = URL_SAFE_NO_PAD.decode(&token)?;
        // The cursor edited to skip ahead, the tag kept.
        let cursor = serde_json::to_vec(&Cursor {
            k: vec!["organizations/acme/units/z".into()],
        })?;
        bytes.truncate(TAG_BYTES);
        bytes.extend_from_slice(&cursor);
        refused(decode_in(&alice, &URL_SAFE_NO_PAD.encode(&bytes), &q));
        // One bit of the tag flipped.
        let mut flipped = URL_SAFE_NO_PAD.decode(&token)?;
        flipped[0] ^= 1;
        refused(decode_in(&alice, &URL_SAFE_NO_PAD.encode(&flipped), &q));
        // An unsigned cursor, as tokens were before they were signed.
        refused(decode_in(&alice, &URL_SAFE_NO_PAD.encode(&cursor), &q));
        refused(decode_in(&alice, "!!not-base64", &q));
        Ok(())
    }

    #[tokio::test]
    async fn the_task_local_scope_binds_tokens_to_the_call() -> anyhow::Result<()> {
        let key = PageKey::random()?;
        let q = query_fingerprint(&["organizations/acme"]);
        let token = scoped(scope(&key, LIST_UNITS, "principals/alice"), async {
            encode_token(&q, vec!["a".into()])
        })
        .await;
        let again = scoped(scope(&key, LIST_UNITS, "principals/alice"), async {
            decode_token(&token, &q)
        })
        .await?;
        assert_eq!(again, Some(vec!["a".to_string()]));
        let err = scoped(scope(&key, LIST_UNITS, "principals/bob"), async {
            decode_token(&token, &q)
        })
        .await;
        refused(err);
        // Outside any call: the process's own scope, which did not issue it.
        refused(decode_token(&token, &q));
        Ok(())
    }

    #[test]
    fn keys_load_from_the_configured_file_or_the_dev_directory() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut config = Config::defaults_in(dir.path());
        // Dev: generated once, then the same key.
        let first = PageKey::load(&config)?;
        let second = PageKey::load(&config)?;
        assert_eq!(first.0, second.0);
        // Production without a key: refused at start-up, naming the setting.
        config.tls.mode = TlsMode::Files;
        let err = PageKey::load(&config).expect_err("files mode needs a key");
        assert!(
            err.to_string().contains("server.page_token_key_file"),
            "{err}"
        );
        // A configured file.
        let file = dir.path().join("page.key");
        std::fs::write(&file, format!("{}\n", "ab".repeat(KEY_BYTES)))?;
        config.server.page_token_key_file = Some(file.clone());
        assert_eq!(*PageKey::load(&config)?.0, [0xab; KEY_BYTES]);
        std::fs::write(&file, "too short")?;
        let err = PageKey::load(&config).expect_err("a bad key file");
        assert!(
            err.to_string().contains("server.page_token_key_file"),
            "{err}"
        );
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

//! Periodic signed checkpoints of a slice's audit chain, and the keys that sign and verify them.
//!
//! Each service signs with its own Ed25519 key (`<dir>/audit-<service>.key`, the 32-byte secret in
//! hex, mode 0600; `.pub` beside it holds the public key), created on first use in dev mode. A
//! checkpoint records (seq, hash) of the chain head: an attacker who rewrites or truncates the chain
//! below a checkpoint cannot re-sign it without the key. Keep the public keys (and ideally the latest
//! checkpoint hashes) somewhere the database administrator cannot write.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use pm_runtime::Db;
use tokio_util::sync::CancellationToken;

use crate::audit;

/// The key that signs `service`'s checkpoints and its id, creating it under `dir` if missing.
pub fn load_or_create_key(dir: &Path, service: &str) -> anyhow::Result<(SigningKey, String)> {
    std::fs::create_dir_all(dir)?;
    let secret_path = dir.join(format!("audit-{service}.key"));
    let key = if secret_path.exists() {
        let bytes = hex::decode(std::fs::read_to_string(&secret_path)?.trim())?;
        let secret: [u8; 32] = bytes.try_into().map_err(|_| {
            anyhow::anyhow!("{} does not hold a 32-byte key", secret_path.display())
        })?;
        SigningKey::from_bytes(&secret)
    } else {
        let key = SigningKey::generate(&mut rand_core::OsRng);
        pm_runtime::tls::write_private(&secret_path, &hex::encode(key.to_bytes()))?;
        key
    };
    let public = hex::encode(key.verifying_key().to_bytes());
    std::fs::write(dir.join(format!("audit-{service}.pub")), &public)?;
    Ok((key, key_id(service, &public)))
}

fn key_id(service: &str, public_hex: &str) -> String {
    format!(
        "audit-{service}-{}",
        &public_hex[..16.min(public_hex.len())]
    )
}

/// Every `audit-*.pub` under `dir`, by key id (what `verify` needs).
pub fn verifying_keys(dir: &Path) -> anyhow::Result<HashMap<String, VerifyingKey>> {
    let mut keys = HashMap::new();
    if !dir.exists() {
        return Ok(keys);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(service) = name
            .strip_prefix("audit-")
            .and_then(|n| n.strip_suffix(".pub"))
        else {
            continue;
        };
        let public_hex = std::fs::read_to_string(&path)?.trim().to_string();
        let bytes: [u8; 32] = hex::decode(&public_hex)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} does not hold a 32-byte key", path.display()))?;
        keys.insert(
            key_id(service, &public_hex),
            VerifyingKey::from_bytes(&bytes)?,
        );
    }
    Ok(keys)
}

/// Signs a checkpoint of `db`'s chain every `interval` until `shutdown`, and once more on the way out.
pub async fn run(
    db: Db,
    key: SigningKey,
    key_id: String,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            () = tokio::time::sleep(interval) => false,
        };
        match audit::checkpoint(&db, &key, &key_id).await {
            Ok(Some(checkpoint)) => {
                tracing::debug!(seq = checkpoint.seq, "audit checkpoint signed")
            }
            Ok(None) => {}
            Err(err) => tracing::error!(error = %err, "audit checkpoint failed"),
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_once_and_published() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (first, id) = load_or_create_key(dir.path(), "org")?;
        let (again, same_id) = load_or_create_key(dir.path(), "org")?;
        assert_eq!(first.to_bytes(), again.to_bytes());
        assert_eq!(id, same_id);
        let published = verifying_keys(dir.path())?;
        assert_eq!(published.get(&id), Some(&first.verifying_key()));
        Ok(())
    }
}

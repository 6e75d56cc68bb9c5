//! Token signing keys in RBAC's slice: one signs at a time; rotated-out keys keep verifying until the
//! tokens they signed have expired, so rotation needs no downtime.

use pm_authz::token::{PublicKey, SigningKey};
use pm_runtime::db::WriteTx;
use pm_runtime::time::{Micros, now_micros};
use pm_runtime::{ApiError, ApiResult, Db};
use sqlx::{AnyConnection, Row};

/// The longest token lifetime; a retired key is published this long after retirement.
pub const MAX_TOKEN_TTL_MICROS: Micros = 3600 * 1_000_000;

/// The write-lock scope of key changes.
const KEYS_SCOPE: &str = "rbac/signing-keys";

/// A key as published.
#[derive(Debug, Clone)]
pub struct Published {
    /// Kid and public bytes.
    pub key: PublicKey,
    /// When it started signing.
    pub create_time: Micros,
    /// When it stopped signing.
    pub retire_time: Option<Micros>,
}

fn internal(context: &str) -> impl Fn(pm_authz::token::TokenError) -> ApiError + '_ {
    move |e| ApiError::internal(context, &e)
}

/// The current signing key, creating the first one if there is none.
pub async fn current(db: &Db) -> ApiResult<SigningKey> {
    let mut conn = db.read().await?;
    if let Some(key) = load_current(&mut conn).await? {
        return Ok(key);
    }
    drop(conn);
    let mut tx = db.write(KEYS_SCOPE).await?;
    let key = match load_current(tx.conn()).await? {
        Some(key) => key,
        None => create(&mut tx).await?,
    };
    tx.commit().await?;
    Ok(key)
}

async fn load_current(conn: &mut AnyConnection) -> ApiResult<Option<SigningKey>> {
    let row = sqlx::query(
        "SELECT kid, private_key FROM signing_keys WHERE retire_time IS NULL ORDER BY create_time DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let kid: String = row.try_get("kid")?;
    let der: Vec<u8> = row.try_get("private_key")?;
    SigningKey::from_pkcs8_der(kid, &der)
        .map(Some)
        .map_err(internal("loading the signing key"))
}

async fn create(tx: &mut WriteTx) -> ApiResult<SigningKey> {
    let kid = uuid::Uuid::now_v7().simple().to_string();
    let key = SigningKey::generate(kid.clone()).map_err(internal("generating a signing key"))?;
    let der = key
        .to_pkcs8_der()
        .map_err(internal("encoding a signing key"))?;
    sqlx::query("INSERT INTO signing_keys (kid, private_key, public_x, create_time, retire_time) VALUES ($1, $2, $3, $4, NULL)")
        .bind(kid)
        .bind(der)
        .bind(key.public_key().x)
        .bind(now_micros())
        .execute(tx.conn())
        .await?;
    tracing::info!(kid = key.kid(), "new token signing key");
    Ok(key)
}

/// Retires the current key and starts signing with a new one.
pub async fn rotate(db: &Db) -> ApiResult<Published> {
    let mut tx = db.write(KEYS_SCOPE).await?;
    sqlx::query("UPDATE signing_keys SET retire_time = $1 WHERE retire_time IS NULL")
        .bind(now_micros())
        .execute(tx.conn())
        .await?;
    let key = create(&mut tx).await?;
    tx.commit().await?;
    Ok(Published {
        key: key.public_key(),
        create_time: now_micros(),
        retire_time: None,
    })
}

/// Keys that verify tokens now: the signing key first, then retired keys whose tokens may still be
/// live.
pub async fn published(db: &Db) -> ApiResult<Vec<Published>> {
    current(db).await?;
    let mut conn = db.read().await?;
    let rows = sqlx::query(
        "SELECT kid, public_x, create_time, retire_time FROM signing_keys \
         WHERE retire_time IS NULL OR retire_time > $1 ORDER BY retire_time IS NOT NULL, create_time DESC",
    )
    .bind(now_micros() - MAX_TOKEN_TTL_MICROS)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Published {
                key: PublicKey {
                    kid: row.try_get("kid")?,
                    x: row.try_get("public_x")?,
                },
                create_time: row.try_get("create_time")?,
                retire_time: row.try_get("retire_time")?,
            })
        })
        .collect()
}

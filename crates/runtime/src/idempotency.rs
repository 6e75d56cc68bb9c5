//! Idempotent writes: a request that carries a `request_id` (a UUID the client chooses) is answered
//! once; a retry of the same request gets the first answer, and the same request_id sent with a
//! different request is refused. The answer is recorded in the write's own transaction, so it exists
//! exactly when the write does.
//!
//! The table, `idempotency_keys(method, request_id, request_hash, response, create_time)`, is created
//! by the resource store's migrations ([`crate::docstore::MIGRATIONS`], in every slice); nothing here
//! depends on the resource store, so writes to typed tables use it the same way
//! ([`Idempotent::once`]).

use prost::Message;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use crate::batch::Insert;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::time::now_micros;

/// Validates a `request_id`: empty (no idempotency) or a UUID.
pub fn check_request_id(request_id: &str) -> ApiResult<()> {
    if request_id.is_empty() || uuid::Uuid::try_parse(request_id).is_ok() {
        Ok(())
    } else {
        Err(ApiError::invalid("request_id", "must be a UUID").because("REQUEST_ID_INVALID"))
    }
}

/// A digest of a request, to tell a retry from a different call reusing a request_id.
pub fn request_hash(request: &impl Message) -> String {
    hex::encode(Sha256::digest(request.encode_to_vec()))
}

/// A request_id derived from what caused a write rather than chosen by a client: a name-based UUID
/// (v5) of `namespace` and `parts`, the same on every attempt. A worker that acts on an event (a
/// follower, a retry loop) uses it so that acting twice finds the first answer.
pub fn derived_request_id(namespace: &str, parts: &[&str]) -> String {
    let name = format!("urn:pm:{namespace}:{}", parts.join(":"));
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
}

/// The response recorded for `(method, request_id)`, if this call was made before. A request_id reused
/// with a different request is FAILED_PRECONDITION.
pub async fn replay<R: Message + Default>(
    conn: &mut AnyConnection,
    method: &str,
    request_id: &str,
    hash: &str,
) -> ApiResult<Option<R>> {
    if request_id.is_empty() {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT request_hash, response FROM idempotency_keys WHERE method = $1 AND request_id = $2",
    )
    .bind(method)
    .bind(request_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let stored_hash: String = row.try_get("request_hash")?;
    if stored_hash != hash {
        return Err(ApiError::precondition(
            "REQUEST_ID_REUSED",
            "request_id was already used for a different request",
        )
        .with_meta("requestId", request_id));
    }
    let response: Vec<u8> = row.try_get("response")?;
    R::decode(response.as_slice())
        .map(Some)
        .map_err(|e| ApiError::internal("decoding a recorded response", &e))
}

/// Records the response of `(method, request_id)` in the same transaction as the write.
pub async fn remember(
    conn: &mut AnyConnection,
    method: &str,
    request_id: &str,
    hash: &str,
    response: &impl Message,
) -> ApiResult<()> {
    match remember_statement(method, request_id, hash, response) {
        Some(insert) => insert.execute(conn).await,
        None => Ok(()),
    }
}

/// The statement [`remember`] runs (`None` without a request_id). Its unique key refuses a second
/// call with the request_id (only possible without the organization's lock: a twin committed
/// first) with FAILED_PRECONDITION `REQUEST_ID_IN_FLIGHT`: the caller then answers with the twin's
/// response, found by [`replay`].
pub fn remember_statement(
    method: &str,
    request_id: &str,
    hash: &str,
    response: &impl Message,
) -> Option<Insert> {
    if request_id.is_empty() {
        return None;
    }
    let id = request_id.to_string();
    Some(
        Insert::new(
            "idempotency_keys",
            "INSERT INTO idempotency_keys (method, request_id, request_hash, response, create_time) \
             VALUES ($1, $2, $3, $4, $5)",
            vec![
                method.into(),
                request_id.into(),
                hash.into(),
                response.encode_to_vec().into(),
                now_micros().into(),
            ],
        )
        .refusing(move |e| {
            e.is_unique_violation().then(|| {
                ApiError::precondition(
                    "REQUEST_ID_IN_FLIGHT",
                    "another call with this request_id was being answered; retry to get its answer",
                )
                .with_meta("requestId", &id)
            })
        }),
    )
}

/// One call's idempotency key: its method, its request_id and the digest of its request.
#[derive(Debug, Clone)]
pub struct Idempotent<'a> {
    /// Full gRPC method path (the key's namespace).
    pub method: &'a str,
    /// The request's request_id ("" for none: every call is then a new one).
    pub request_id: &'a str,
    /// [`request_hash`] of the whole request.
    pub hash: String,
}

impl<'a> Idempotent<'a> {
    /// The key of `request`, once its request_id is valid.
    pub fn new(method: &'a str, request_id: &'a str, request: &impl Message) -> ApiResult<Self> {
        check_request_id(request_id)?;
        Ok(Self {
            method,
            request_id,
            hash: request_hash(request),
        })
    }

    /// Runs `write` in a write transaction of `scope` and records its answer there, unless the call
    /// was answered before: then that answer is returned and nothing is written.
    pub async fn once<R, W>(&self, db: &Db, scope: &str, write: W) -> ApiResult<R>
    where
        R: Message + Default,
        W: AsyncFnOnce(&mut AnyConnection) -> ApiResult<R>,
    {
        let mut tx = db.write(scope).await?;
        if let Some(previous) = replay(tx.conn(), self.method, self.request_id, &self.hash).await? {
            return Ok(previous);
        }
        let response = write(tx.conn()).await?;
        remember(
            tx.conn(),
            self.method,
            self.request_id,
            &self.hash,
            &response,
        )
        .await?;
        tx.commit().await?;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_empty_or_uuids() {
        assert!(check_request_id("").is_ok());
        assert!(check_request_id("6f1c2b0e-1d7a-4c55-9a43-0f5d3c1e2b7a").is_ok());
        let err = check_request_id("retry-1").unwrap_err();
        assert_eq!(err.code, tonic::Code::InvalidArgument);
    }

    #[test]
    fn derived_ids_are_stable_uuids_that_differ_per_part() {
        let a = derived_request_id("waitlist-offer", &["appt/1", "entry/2"]);
        assert_eq!(
            a,
            derived_request_id("waitlist-offer", &["appt/1", "entry/2"])
        );
        assert_ne!(
            a,
            derived_request_id("waitlist-offer", &["appt/1", "entry/3"])
        );
        assert_ne!(a, derived_request_id("charge", &["appt/1", "entry/2"]));
        assert!(check_request_id(&a).is_ok());
    }
}

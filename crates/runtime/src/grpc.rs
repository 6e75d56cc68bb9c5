//! What every service's gRPC handlers share: answering with an `ApiError` mapped to a status, and
//! the generic store's call descriptions built from AIP request fields.

use tonic::{Response, Status};

use crate::{ApiError, ApiResult};

/// A handler's answer.
pub type Reply<T> = Result<Response<T>, Status>;

/// The handler's result as tonic wants it, errors carrying `domain` in their ErrorInfo.
pub fn reply<T>(result: ApiResult<T>, domain: &str) -> Reply<T> {
    result.map(Response::new).map_err(|e| e.into_status(domain))
}

/// A message field that must be set.
pub fn required<T>(value: Option<T>, field: &str) -> ApiResult<T> {
    value.ok_or_else(|| ApiError::invalid(field, "is required").because("FIELD_REQUIRED"))
}

/// A `docstore::ListCall` from an AIP List request (`page_size`, `page_token`, `filter`,
/// `order_by`, and `show_deleted` unless given).
#[macro_export]
macro_rules! list_call {
    ($req:expr, $parent:expr) => {
        $crate::list_call!($req, $parent, $req.show_deleted)
    };
    ($req:expr, $parent:expr, $show_deleted:expr) => {
        $crate::docstore::ListCall {
            parent: $parent,
            page_size: $req.page_size,
            page_token: &$req.page_token,
            filter: &$req.filter,
            order_by: &$req.order_by,
            show_deleted: $show_deleted,
            scope: None,
        }
    };
}

/// A `docstore::CreateCall` from an AIP Create request (`<resource>_id`, `request_id`).
#[macro_export]
macro_rules! create_call {
    ($req:expr, $method:expr, $parent:expr, $id:ident) => {
        $crate::docstore::CreateCall {
            method: $method,
            parent: $parent,
            id: &$req.$id,
            id_field: stringify!($id),
            request_id: &$req.request_id,
            request_hash: $crate::idempotency::request_hash(&$req),
        }
    };
}

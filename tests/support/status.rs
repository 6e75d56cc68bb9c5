//! What a refusal carries on the wire: its ErrorInfo reason and the fields its BadRequest names.

use tonic_types::StatusExt;

/// The ErrorInfo reason of `status` ("" when it has none).
pub fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// The fields the BadRequest of `status` names, in order.
pub fn fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

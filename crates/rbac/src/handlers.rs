//! The gRPC surface of the RBAC service.

use pm_api::rbac::rbac_service_server::RbacService;
use pm_api::rbac::{ListPermissionsRequest, ListPermissionsResponse};
use pm_runtime::{ApiError, paging};
use tonic::{Request, Response, Status};

use crate::domain;

/// The ErrorInfo domain of this service's errors.
pub const DOMAIN: &str = "rbac.pm.dev";

/// The RBAC service.
pub struct RbacApi;

#[tonic::async_trait]
impl RbacService for RbacApi {
    async fn list_permissions(
        &self,
        request: Request<ListPermissionsRequest>,
    ) -> Result<Response<ListPermissionsResponse>, Status> {
        let req = request.into_inner();
        let result = (|| {
            let page_size = paging::page_size(req.page_size)?;
            let fingerprint = paging::query_fingerprint(&[&req.name_prefix]);
            let after = paging::decode_token(&req.page_token, &fingerprint)?
                .and_then(|key| key.into_iter().next())
                .unwrap_or_default();
            let mut matching: Vec<_> = domain::catalog(pm_api::RULES)
                .into_iter()
                .filter(|p| p.name.starts_with(&req.name_prefix) && p.name > after)
                .collect();
            let more = matching.len() > page_size;
            matching.truncate(page_size);
            let next_page_token = match matching.last() {
                Some(last) if more => paging::encode_token(&fingerprint, vec![last.name.clone()]),
                _ => String::new(),
            };
            Ok::<_, ApiError>(ListPermissionsResponse {
                permissions: matching,
                next_page_token,
            })
        })();
        result.map(Response::new).map_err(|e| e.into_status(DOMAIN))
    }
}

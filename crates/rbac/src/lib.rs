//! The RBAC service. This first version publishes the permission catalog derived from the rules every
//! RPC declares in `proto/` (the `(pm.authz.v1.rule)` option); principals, role bindings, tokens and
//! the permission decision come with the RBAC issue.

pub mod domain;
pub mod handlers;

use pm_api::rbac::rbac_service_server::RbacServiceServer;
use pm_runtime::server::ServiceDef;

/// The short name of the service.
pub const NAME: &str = "rbac";

/// The gRPC service name.
pub const GRPC_SERVICE: &str = "pm.rbac.v1.RbacService";

/// The service, ready for `pm_runtime::server::serve`.
pub fn service() -> ServiceDef {
    ServiceDef {
        name: NAME,
        grpc_services: vec![GRPC_SERVICE],
        routes: tonic::service::Routes::new(RbacServiceServer::new(handlers::RbacApi)),
        db: None,
    }
}

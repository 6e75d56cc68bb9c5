//! The RBAC service: principals, role bindings (with break-glass), the keys that sign bearer tokens,
//! and the permission catalog derived from the `(pm.authz.v1.rule)` every RPC declares. The decision
//! itself (`pm_authz::policy`) is shared with every service, which enforces it at its API layer.

pub mod bootstrap;
pub mod domain;
pub mod handlers;
pub mod keys;
pub mod reasons;
pub mod store;

use pm_api::rbac::rbac_service_server::RbacServiceServer;
use pm_authz::layer::Authz;
use pm_runtime::Db;
use pm_runtime::db::Migrations;
use pm_runtime::server::ServiceDef;
use tower::Layer as _;

/// The short name of the service.
pub const NAME: &str = "rbac";

/// The gRPC service name.
pub const GRPC_SERVICE: &str = "pm.rbac.v1.RbacService";

/// RBAC's own tables (versions 1-999).
const OWN_MIGRATIONS: Migrations = Migrations {
    sqlite: || sqlx::migrate!("./migrations/sqlite"),
    postgres: || sqlx::migrate!("./migrations/postgres"),
};

/// The migration sets of the RBAC slice (its audit trail records `pm admin` writes).
pub const MIGRATIONS: &[&Migrations] = &[
    &pm_runtime::docstore::MIGRATIONS,
    &pm_authz::audit::AUDIT_MIGRATIONS,
    &OWN_MIGRATIONS,
];

/// The service behind the authorization layer, ready for `pm_runtime::server::serve`.
pub fn service(db: Db, authz: Authz) -> ServiceDef {
    let api = RbacServiceServer::new(handlers::RbacApi::new(db.clone()));
    ServiceDef {
        name: NAME,
        grpc_services: vec![GRPC_SERVICE],
        routes: tonic::service::Routes::new(authz.layer(api)),
        db: Some(db),
        background: Default::default(),
    }
}

//! The Org service: organizations, the service-unit tree with inherited billing profiles and workflow
//! rules, locations, providers and their credentials, patients with enrollments and coverage.
//!
//! Three layers: `handlers` (gRPC in and out), `domain` and `lifecycle` (pure rules), `store`
//! (indexing and lookups in the service's own database slice).

pub mod access;
pub mod accesses;
pub mod billing_refs;
pub mod domain;
pub mod handlers;
pub mod lifecycle;
pub mod reasons;
pub mod search;
pub mod store;

use pm_api::org::org_service_server::OrgServiceServer;
use pm_authz::layer::Authz;
use pm_runtime::Db;
use pm_runtime::db::Migrations;
use pm_runtime::server::ServiceDef;
use tower::Layer as _;

/// The migration sets of the Org slice: the generic resource store and the audit trail.
pub const MIGRATIONS: &[&Migrations] = &[
    &pm_runtime::docstore::MIGRATIONS,
    &pm_authz::audit::AUDIT_MIGRATIONS,
];

/// The short name of the service (database slice, certificate, health entry).
pub const NAME: &str = "org";

/// The gRPC service name.
pub const GRPC_SERVICE: &str = "pm.org.v1.OrgService";

/// The service behind the authorization layer, ready for `pm_runtime::server::serve`. The layer and
/// the handlers share one audit writer: refusals and served PHI calls land in the same trail. `peers`
/// are the other services whose audit trails ListPatientAccesses merges; `billing` reaches Billing,
/// which Org asks whether the names a unit's billing profile references exist.
pub fn service(
    db: Db,
    authz: Authz,
    peers: Vec<accesses::Peer>,
    billing: tonic::transport::Channel,
) -> ServiceDef {
    let background = pm_runtime::server::TaskTracker::new();
    let audit = std::sync::Arc::new(pm_authz::audit::AuditWriter::spawn_tracked(
        db.clone(),
        256,
        &background,
    ));
    // Patients stored before SearchPatients existed get their name keys, once, in the background.
    let indexing = db.clone();
    background.spawn(async move {
        match store::patients::index_names(&indexing).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "indexed patients' names for SearchPatients"),
            Err(e) => tracing::warn!(error = %e.message, "indexing patients' names failed"),
        }
    });
    let api = OrgServiceServer::new(
        handlers::OrgApi::with_audit(db.clone(), audit.clone())
            .explaining_with(authz.clone())
            .with_audit_peers(peers)
            .checking_billing_with(billing_refs::BillingRefs::new(billing)),
    );
    ServiceDef {
        name: NAME,
        grpc_services: vec![GRPC_SERVICE],
        routes: tonic::service::Routes::new(
            authz
                .with_audit(audit)
                .with_scopes(std::sync::Arc::new(access::StoreScopes::new(db.clone())))
                .layer(api),
        ),
        db: Some(db),
        background,
    }
}

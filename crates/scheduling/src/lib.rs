//! The Scheduling service: visit types, weekly availability and exceptions, rooms, eligibility-aware
//! slot search and appointments.
//!
//! Three layers: `handlers` (gRPC in and out, authorization, audit), the pure domain
//! (`availability`: weekly rules in IANA zones expanded across daylight-saving changes;
//! `eligibility`: every rule a bookable slot satisfies, with explanations; `lifecycle`: the
//! appointment's states and the actions each accepts; `domain`: validation and conversions), and
//! the store (`store`: the generic resource store's kinds; `occupancy`: the double-booking guard).
//! What Org owns (unit policies, credentials, enrollments, coverage) is asked of Org over mTLS gRPC
//! (`org`).

pub mod access;
pub mod availability;
pub use pm_runtime::cache;
pub mod domain;
pub mod eligibility;
pub mod handlers;
pub mod lifecycle;
pub mod occupancy;
pub mod org;
pub mod outbox;
pub mod reasons;
pub mod store;

use std::sync::Arc;

use pm_api::audit::audit_service_server::AuditServiceServer;
use pm_api::scheduling::scheduling_service_server::SchedulingServiceServer;
use pm_authz::audit_api::AuditApi;
use pm_authz::layer::Authz;
use pm_authz::phi::PhiAudit;
use pm_runtime::Db;
use pm_runtime::db::Migrations;
use pm_runtime::server::ServiceDef;
use tower::Layer as _;

/// The migration sets of the Scheduling slice: the generic resource store, the audit trail, its own
/// tables (occupancy, and the outbox from before it was shared), then the shared event tables (after
/// its own: they create what is missing only).
pub const MIGRATIONS: &[&Migrations] = &[
    &pm_runtime::docstore::MIGRATIONS,
    &pm_authz::audit::AUDIT_MIGRATIONS,
    &occupancy::MIGRATIONS,
    &pm_runtime::outbox::MIGRATIONS,
];

/// The short name of the service (database slice, certificate, health entry).
pub const NAME: &str = "scheduling";

/// The gRPC service name.
pub const GRPC_SERVICE: &str = "pm.scheduling.v1.SchedulingService";

/// The audit trail's internal gRPC service, served beside it.
pub const AUDIT_GRPC_SERVICE: &str = "pm.audit.v1.AuditService";

/// The service behind the authorization layer, asking Org through `org` (an mTLS channel with this
/// service's certificate). Its streams end when `shutdown` is cancelled.
pub fn service(
    db: Db,
    authz: Authz,
    org: tonic::transport::Channel,
    shutdown: tokio_util::sync::CancellationToken,
) -> ServiceDef {
    let background = pm_runtime::server::TaskTracker::new();
    let audit = Arc::new(pm_authz::audit::AuditWriter::spawn_tracked(
        db.clone(),
        256,
        &background,
    ));
    let api = SchedulingServiceServer::new(handlers::SchedulingApi::new(
        db.clone(),
        Arc::new(org::OrgView::new(org.clone())),
        PhiAudit::new(NAME, audit.clone()),
        shutdown,
    ));
    // Its audit trail, for Org's mesh-wide ListPatientAccesses.
    let trail = AuditServiceServer::new(AuditApi::new(
        db.clone(),
        NAME,
        PhiAudit::new(NAME, audit.clone()),
    ));
    let scopes = pm_authz::references::OrgScopes::new(
        org.clone(),
        Some(Arc::new(access::OwnPlacement::new(db.clone()))),
    );
    let authz = authz.with_audit(audit).with_scopes(Arc::new(scopes));
    ServiceDef {
        name: NAME,
        grpc_services: vec![GRPC_SERVICE, AUDIT_GRPC_SERVICE],
        routes: tonic::service::Routes::new(authz.layer(api)).add_service(authz.layer(trail)),
        db: Some(db),
        background,
    }
}

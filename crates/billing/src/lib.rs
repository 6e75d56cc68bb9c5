//! The Billing service: billing entities, payers, contracts, fee schedules (with effective-dated
//! versions and resolution with a trace), charges and the money ledger.
//!
//! Three layers, as in every service: `handlers` (gRPC in and out, authorization, audit), the pure
//! domain (`domain`: money in integer cents, code formats, fee-schedule resolution, what a line
//! becomes, the X12 837P writer), and the store (`store`: configuration in the generic resource
//! store; `charges`: charges and the ledger in typed tables). Completed encounters arrive from
//! Scheduling's event stream through the shared follower (`posting`); what Org owns (unit policies
//! and the tree, location zones) is asked of Org over mTLS gRPC (`org`).

pub mod access;
pub mod care;
pub mod charges;
pub mod charging;
pub mod claim_store;
pub mod claim_wire;
pub mod claiming;
pub mod domain;
pub mod handlers;
pub mod invoice_store;
pub mod invoicing;
pub mod org;
pub mod posting;
pub mod reasons;
pub mod reports;
pub mod repricing;
pub mod store;

use std::sync::Arc;

use pm_api::billing::billing_service_server::BillingServiceServer;
use pm_authz::layer::Authz;
use pm_authz::phi::PhiAudit;
use pm_runtime::Db;
use pm_runtime::db::Migrations;
use pm_runtime::follower::{self, FollowerConfig};
use pm_runtime::server::ServiceDef;
use tower::Layer as _;

/// The migration sets of the Billing slice: the generic resource store, the audit trail, its own
/// typed tables (charges, ledger, fee schedule periods), then the shared event tables (the
/// follower's cursor).
pub const MIGRATIONS: &[&Migrations] = &[
    &pm_runtime::docstore::MIGRATIONS,
    &pm_authz::audit::AUDIT_MIGRATIONS,
    &charges::MIGRATIONS,
    &pm_runtime::outbox::MIGRATIONS,
];

/// The short name of the service (database slice, certificate, health entry).
pub const NAME: &str = "billing";

/// The gRPC service name.
pub const GRPC_SERVICE: &str = "pm.billing.v1.BillingService";

/// The service behind the authorization layer, asking Org through `org` and following
/// Scheduling's events through `scheduling` (mTLS channels with this service's certificate). The
/// follower stops when `shutdown` is cancelled.
pub fn service(
    db: Db,
    authz: Authz,
    org: tonic::transport::Channel,
    scheduling: tonic::transport::Channel,
    shutdown: tokio_util::sync::CancellationToken,
) -> ServiceDef {
    let background = pm_runtime::server::TaskTracker::new();
    let audit = Arc::new(pm_authz::audit::AuditWriter::spawn_tracked(
        db.clone(),
        256,
        &background,
    ));
    let view = Arc::new(org::OrgView::new(org.clone()));
    let charging = Arc::new(charging::Charging::new(db.clone(), view.clone()));
    let claims = Arc::new(claiming::Claims::new(db.clone(), view));
    background.spawn(follower::spawn(
        db.clone(),
        FollowerConfig::named(posting::FOLLOWER),
        posting::SchedulingEvents::new(scheduling),
        posting::EncounterCharges::new(charging.clone()),
        shutdown,
    ));
    let api = BillingServiceServer::new(handlers::BillingApi::new(
        db.clone(),
        charging,
        claims,
        PhiAudit::new(NAME, audit.clone()),
    ));
    let scopes = pm_authz::references::OrgScopes::new(
        org,
        Some(Arc::new(access::OwnPlacement::new(db.clone()))),
    );
    let authz = authz.with_audit(audit).with_scopes(Arc::new(scopes));
    ServiceDef {
        name: NAME,
        grpc_services: vec![GRPC_SERVICE],
        routes: tonic::service::Routes::new(authz.layer(api)),
        db: Some(db),
        background,
    }
}

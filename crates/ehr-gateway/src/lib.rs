//! The EHR gateway (issue 14), first slice: HL7 v2 ADT^A01/A04/A08 over MLLP.
//!
//! * `domain`: pure — sources from configuration (validated), the mapping of an ADT message onto
//!   a patient registration or update, and refusals as ERR segments (HL7 table 0357).
//! * `store`: the gateway's slice — the inbound message log (unique on source and control id) and
//!   the patient cross-references.
//! * `intake`: one message from frame to ACK; the message is committed to the log before its ACK
//!   is written (a commit acknowledgement: AA means persisted, applied asynchronously).
//! * `listener`: the MLLP listener (plain TCP), bounded connections, a per-frame read deadline.
//! * `apply`: the worker applying accepted messages to Org (generated client, mTLS, the gateway's
//!   identity) with bounded backoff, in order per patient; refusals for good go to `dead`.

pub mod apply;
pub mod domain;
pub mod intake;
pub mod listener;
pub mod store;

use pm_runtime::db::Migrations;

/// The short name of the service (its certificate's identity, logs).
pub const NAME: &str = "ehr-gateway";

/// The name of its database slice (the SQLite file, the PostgreSQL schema after the prefix): a
/// schema name cannot hold a '-'.
pub const SLICE: &str = "ehr_gateway";

/// The migration sets of the gateway's slice.
pub const MIGRATIONS: &[&Migrations] = &[&store::MIGRATIONS];

use std::sync::Arc;
use std::time::Duration;

use pm_runtime::Db;
use pm_runtime::config::{Config, TlsMode};
use tokio_util::sync::CancellationToken;

use crate::domain::{ConfigError, Permission, Source, Sources};

/// The sources `config` declares (`ehr.sources`), checked: a bad one is refused naming its key and
/// the reason. In dev mode `ehr.dev_catch_all_organization` (when set) takes any other sender.
pub fn sources(config: &Config) -> Result<Sources, ConfigError> {
    let mut sources = Vec::new();
    for (i, s) in config.ehr.sources.iter().enumerate() {
        let mut permissions = Vec::new();
        for (j, p) in s.permissions.iter().enumerate() {
            permissions.push(Permission::parse(p).ok_or_else(|| ConfigError {
                key: format!("ehr.sources[{i}].permissions[{j}]"),
                reason: "must be register_patients or update_patients",
            })?);
        }
        sources.push(Source {
            id: s.id.clone(),
            sending_application: s.sending_application.clone(),
            sending_facility: s.sending_facility.clone(),
            organization: s.organization.clone(),
            identifier_systems: s
                .identifier_systems
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
            any_authority: false,
            permissions,
        });
    }
    let catch_all = (config.tls.mode == TlsMode::Dev
        && !config.ehr.dev_catch_all_organization.is_empty())
    .then_some(config.ehr.dev_catch_all_organization.as_str());
    Sources::new("ehr.sources", sources, catch_all)
}

/// The listener's limits from `config`.
pub fn limits(config: &Config) -> listener::Limits {
    listener::Limits {
        max_frame: config.ehr.max_frame_bytes.max(1),
        read_timeout: Duration::from_millis(config.ehr.read_timeout_ms.max(1)),
        max_connections: config.ehr.max_connections.max(1),
    }
}

/// Runs the gateway until `shutdown` is cancelled: the MLLP listener on `mllp` and the worker
/// applying accepted messages to Org through `org` (an mTLS channel with the gateway's own
/// certificate).
pub async fn run(
    config: &Config,
    db: Db,
    sources: Sources,
    mllp: tokio::net::TcpListener,
    org: tonic::transport::Channel,
    shutdown: CancellationToken,
) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let intake = Arc::new(intake::Intake::new(db.clone(), sources.clone()).waking(wake.clone()));
    let worker = apply::Worker::new(
        db,
        sources,
        apply::Org::new(org),
        apply::RetryPolicy::default(),
        wake,
    );
    tokio::join!(
        listener::serve(mllp, intake, limits(config), shutdown.clone()),
        worker.run(shutdown.clone()),
    );
}

//! Starting services: each on its own listener with its own database slice, sharing nothing but the
//! process. Services reach each other only through gRPC clients, as they would across machines.

use std::net::SocketAddr;
use std::time::Duration;

use pm_runtime::config::{Config, TlsMode};
use pm_runtime::server::{self, ServiceDef};
use std::sync::Arc;

use pm_authz::layer::{Authz, RbacAccess};
use pm_runtime::{Db, client, tls};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The services `pm serve` can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    /// Organizations, units, locations, providers, patients.
    Org,
    /// Principals, role bindings, tokens.
    Rbac,
    /// Visit types, availability, slot search, appointments.
    Scheduling,
    /// Billing entities, payers, contracts, fee schedules, charges.
    Billing,
    /// The EHR gateway: HL7 v2 over MLLP (no gRPC API yet; it listens on `listen.mllp_port`).
    EhrGateway,
}

impl Service {
    /// Every gRPC service, in start order.
    pub const ALL: [Service; 4] = [
        Service::Org,
        Service::Rbac,
        Service::Scheduling,
        Service::Billing,
    ];

    /// Everything `pm run` starts: the gRPC services, then the EHR gateway.
    pub const MESH: [Service; 5] = [
        Service::Org,
        Service::Rbac,
        Service::Scheduling,
        Service::Billing,
        Service::EhrGateway,
    ];

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Service::Org => pm_org::NAME,
            Service::Rbac => pm_rbac::NAME,
            Service::Scheduling => pm_scheduling::NAME,
            Service::Billing => pm_billing::NAME,
            Service::EhrGateway => pm_ehr_gateway::NAME,
        }
    }

    fn port(self, config: &Config) -> u16 {
        match self {
            Service::Org => config.listen.org_port,
            Service::Rbac => config.listen.rbac_port,
            Service::Scheduling => config.listen.scheduling_port,
            Service::Billing => config.listen.billing_port,
            Service::EhrGateway => config.listen.mllp_port,
        }
    }
}

/// A running set of services.
pub struct Mesh {
    /// Where each started service listens.
    pub listening: Vec<(Service, SocketAddr)>,
    /// Cancel to shut down (drains in-flight calls).
    pub shutdown: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    dbs: Vec<Db>,
    scheme: &'static str,
}

impl Mesh {
    /// The URL of a started service, e.g. `https://127.0.0.1:7101`.
    pub fn url(&self, service: Service) -> Option<String> {
        self.listening
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, addr)| format!("{}://{addr}", self.scheme))
    }

    /// Where the EHR gateway's MLLP listener is (plain TCP), when it runs here.
    pub fn mllp_addr(&self) -> Option<SocketAddr> {
        self.listening
            .iter()
            .find(|(s, _)| *s == Service::EhrGateway)
            .map(|(_, addr)| *addr)
    }

    /// Waits until every server has stopped (after `shutdown` is cancelled), at most `grace`; then
    /// closes the databases.
    pub async fn stopped(self, grace: Duration) -> anyhow::Result<()> {
        let all = futures::future::join_all(self.tasks);
        let results = tokio::time::timeout(grace, all)
            .await
            .map_err(|_| anyhow::anyhow!("in-flight calls did not finish within {grace:?}"))?;
        for db in &self.dbs {
            db.close().await;
        }
        for result in results {
            result??;
        }
        Ok(())
    }

    /// Stops every server at once, as a crash would: no drain, no final checkpoint, connections
    /// dropped mid-call. For crash tests: what was committed must survive it.
    pub fn kill(self) {
        for task in &self.tasks {
            task.abort();
        }
        // The services' own background tasks (the outbox sequencer, streams) die with a real
        // process: tell them to stop too, so none outlives the servers it belonged to.
        self.shutdown.cancel();
    }

    /// Cancels and waits.
    pub async fn stop(self, grace: Duration) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.stopped(grace).await
    }
}

/// Signs the service's audit chain head periodically (and once more at shutdown).
fn spawn_checkpoints(
    config: &Config,
    service: &str,
    db: Db,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let (key, key_id) =
        pm_authz::checkpoints::load_or_create_key(&config.audit_key_dir(), service)?;
    let interval = Duration::from_millis(config.audit.checkpoint_interval_ms.max(1_000));
    Ok(tokio::spawn(async move {
        pm_authz::checkpoints::run(db, key, key_id, interval, shutdown).await;
        Ok(())
    }))
}

/// The authorization layer of `service`, reading keys and bindings from RBAC at `rbac_url` with the
/// service's own certificate. The dev tool certificate may bootstrap access only in dev mode.
fn authz_layer(config: &Config, service: &str, rbac_url: &str) -> anyhow::Result<Authz> {
    let channel = client::lazy_channel(config, service, rbac_url)?;
    let source = Arc::new(RbacAccess::new(channel));
    let bounds = pm_authz::admission::Bounds::from_config(config)?;
    Authz::bounded(source, config.tls.mode == TlsMode::Dev, bounds)
}

/// Opens each service's slice (migrating it), binds its port and starts serving.
pub async fn start(
    config: &Config,
    services: &[Service],
    shutdown: CancellationToken,
) -> anyhow::Result<Mesh> {
    if config.tls.mode == TlsMode::Dev {
        tls::ensure_dev_pki(&tls::dev_pki_dir(config))?;
    }
    let scheme = if config.tls.mode == TlsMode::Plaintext {
        "http"
    } else {
        "https"
    };
    // A bad gateway configuration is refused before anything starts.
    let ehr_sources = if services.contains(&Service::EhrGateway) {
        Some(pm_ehr_gateway::sources(config).map_err(|e| anyhow::anyhow!("{e}"))?)
    } else {
        None
    };
    // Bind every port first, so each service's authorization layer knows where RBAC listens.
    let mut listening = Vec::new();
    let mut listeners = Vec::new();
    for &service in services {
        let listener =
            server::bind(SocketAddr::new(config.listen.host, service.port(config))).await?;
        listening.push((service, listener.local_addr()?));
        listeners.push(listener);
    }
    // Where each peer listens: here when this process runs it, else where the configuration says.
    let url_of = |service: Service, configured: String| {
        listening
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, addr)| format!("{scheme}://localhost:{}", addr.port()))
            .unwrap_or(configured)
    };
    let rbac_url = url_of(Service::Rbac, config.rbac_url());
    let org_url = url_of(Service::Org, config.org_url());
    let scheduling_url = url_of(Service::Scheduling, config.scheduling_url());
    let billing_url = url_of(Service::Billing, config.billing_url());
    let mut tasks = Vec::new();
    let mut dbs = Vec::new();
    for (&service, listener) in services.iter().zip(listeners) {
        if let (Service::EhrGateway, Some(sources)) = (service, &ehr_sources) {
            let db = Db::open(config, pm_ehr_gateway::SLICE, pm_ehr_gateway::MIGRATIONS).await?;
            dbs.push(db.clone());
            let org = client::lazy_channel(config, pm_ehr_gateway::NAME, &org_url)?;
            let (config, sources, token) = (config.clone(), sources.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move {
                pm_ehr_gateway::run(&config, db, sources, listener, org, token).await;
                Ok(())
            }));
            continue;
        }
        let authz = authz_layer(config, service.name(), &rbac_url)?;
        let def: ServiceDef = match service {
            Service::Org => {
                let db = Db::open(config, pm_org::NAME, pm_org::MIGRATIONS).await?;
                dbs.push(db.clone());
                tasks.push(spawn_checkpoints(
                    config,
                    pm_org::NAME,
                    db.clone(),
                    shutdown.clone(),
                )?);
                // The other trails ListPatientAccesses merges, reached with Org's certificate.
                let peers = vec![pm_org::accesses::Peer {
                    service: pm_scheduling::NAME.to_string(),
                    client: pm_api::audit::audit_service_client::AuditServiceClient::new(
                        client::lazy_channel(config, pm_org::NAME, &scheduling_url)?,
                    ),
                }];
                let billing = client::lazy_channel(config, pm_org::NAME, &billing_url)?;
                pm_org::service(db, authz, peers, billing)
            }
            Service::Rbac => {
                let db = Db::open(config, pm_rbac::NAME, pm_rbac::MIGRATIONS).await?;
                dbs.push(db.clone());
                pm_rbac::service(db, authz)
            }
            Service::Scheduling => {
                let db = Db::open(config, pm_scheduling::NAME, pm_scheduling::MIGRATIONS).await?;
                dbs.push(db.clone());
                tasks.push(spawn_checkpoints(
                    config,
                    pm_scheduling::NAME,
                    db.clone(),
                    shutdown.clone(),
                )?);
                let org = client::lazy_channel(config, pm_scheduling::NAME, &org_url)?;
                pm_scheduling::service(db, authz, org, shutdown.clone())
            }
            Service::Billing => {
                let db = Db::open(config, pm_billing::NAME, pm_billing::MIGRATIONS).await?;
                dbs.push(db.clone());
                tasks.push(spawn_checkpoints(
                    config,
                    pm_billing::NAME,
                    db.clone(),
                    shutdown.clone(),
                )?);
                let org = client::lazy_channel(config, pm_billing::NAME, &org_url)?;
                let scheduling = client::lazy_channel(config, pm_billing::NAME, &scheduling_url)?;
                pm_billing::service(db, authz, org, scheduling, shutdown.clone())
            }
            Service::EhrGateway => continue,
        };
        let config = config.clone();
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            server::serve(&config, def, listener, token).await
        }));
    }
    Ok(Mesh {
        listening,
        shutdown,
        tasks,
        dbs,
        scheme,
    })
}

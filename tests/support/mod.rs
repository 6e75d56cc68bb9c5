//! A whole mesh (Org, RBAC, Scheduling, Billing) on free ports of 127.0.0.1 with dev mTLS, on SQLite or on
//! throwaway PostgreSQL schemas, and clients to it as the demo's principals.

#![allow(dead_code)]

pub mod matrix;
pub mod raw;
pub mod status;
pub mod time;

use std::time::Duration;

use pm::mesh::{self, Mesh, Service};
use pm_api::billing::billing_service_client::BillingServiceClient;
use pm_api::org::org_service_client::OrgServiceClient;
use pm_api::rbac::IssueTokenRequest;
use pm_api::rbac::rbac_service_client::RbacServiceClient;
use pm_api::scheduling::scheduling_service_client::SchedulingServiceClient;
use pm_runtime::config::{Backend, Config};
use pm_runtime::{client, tls};
use tokio_util::sync::CancellationToken;

pub struct TestMesh {
    pub mesh: Mesh,
    pub config: Config,
    /// The PostgreSQL schema prefix, when on PostgreSQL.
    pub schema: Option<String>,
    /// The data directory (SQLite files, dev PKI): kept as long as this value, or moved out to keep
    /// it past `stop`.
    pub _dir: tempfile::TempDir,
}

pub fn postgres_url() -> String {
    std::env::var("PM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl TestMesh {
    pub async fn start(backend: Backend) -> anyhow::Result<TestMesh> {
        Self::start_with(backend, |config| {
            // Several suites storm one principal with up to 64 calls at once to test contention
            // (bookings, shutdown drains); the per-caller bound has tests of its own.
            config.server.per_caller_concurrency = 256;
        })
        .await
    }

    /// A mesh of `services` only (the others unreachable at their configured ports).
    pub async fn start_only(backend: Backend, services: &[Service]) -> anyhow::Result<TestMesh> {
        Self::start_services(backend, services, |_| {}).await
    }

    /// A mesh whose configuration `adjust` changes from the tests' defaults.
    pub async fn start_with(
        backend: Backend,
        adjust: impl FnOnce(&mut Config),
    ) -> anyhow::Result<TestMesh> {
        Self::start_services(backend, &Service::MESH, adjust).await
    }

    async fn start_services(
        backend: Backend,
        services: &[Service],
        adjust: impl FnOnce(&mut Config),
    ) -> anyhow::Result<TestMesh> {
        let dir = tempfile::tempdir()?;
        let mut config = Config::defaults_in(dir.path());
        config.listen.org_port = 0;
        config.listen.rbac_port = 0;
        config.listen.scheduling_port = 0;
        config.listen.billing_port = 0;
        config.listen.mllp_port = 0;
        config.server.health_probe_interval_ms = 200;
        let mut schema = None;
        if backend == Backend::Postgres {
            let prefix = format!("pme2e_{}_", uuid::Uuid::new_v4().simple());
            schema = Some(prefix.clone());
            config.storage.backend = Backend::Postgres;
            config.storage.postgres_url = pm_runtime::config::Secret::new(postgres_url());
            config.storage.postgres_schema_prefix = prefix;
        }
        adjust(&mut config);
        let mesh = mesh::start(&config, services, CancellationToken::new()).await?;
        Ok(TestMesh {
            mesh,
            config,
            schema,
            _dir: dir,
        })
    }

    /// The EHR gateway's MLLP address.
    pub fn mllp(&self) -> std::net::SocketAddr {
        self.mesh
            .mllp_addr()
            .unwrap_or_else(|| panic!("the EHR gateway is not running"))
    }

    pub fn url(&self, service: Service) -> String {
        self.mesh
            .url(service)
            .unwrap_or_else(|| panic!("{} is not running", service.name()))
    }

    pub fn rbac(&self) -> anyhow::Result<RbacServiceClient<tonic::transport::Channel>> {
        Ok(RbacServiceClient::new(client::lazy_channel(
            &self.config,
            tls::CLIENT,
            &self.url(Service::Rbac),
        )?))
    }

    /// The demo's principals and role bindings (through the dev bootstrap).
    pub async fn seed_access(&self) -> anyhow::Result<()> {
        pm::demo::seed_access(&mut self.rbac()?, &mut pm::demo::SeedReport::default()).await
    }

    /// A token for `principal`, minted through the dev bootstrap (the tool certificate).
    pub async fn token(&self, principal: &str) -> anyhow::Result<String> {
        let response = self
            .rbac()?
            .issue_token(IssueTokenRequest {
                principal: principal.into(),
                ttl: None,
            })
            .await?;
        Ok(response.into_inner().token)
    }

    pub async fn authed(
        &self,
        service: Service,
        principal: &str,
    ) -> anyhow::Result<client::AuthedChannel> {
        let channel = client::channel(&self.config, tls::CLIENT, &self.url(service)).await?;
        let bearer = client::Bearer::new(&self.token(principal).await?)?;
        Ok(tonic::service::interceptor::InterceptedService::new(
            channel, bearer,
        ))
    }

    /// A channel to `service` through the certificate of `identity` (a service name, or
    /// `tls::CLIENT`), with `token` as the bearer ("" for none).
    pub async fn channel_with_token(
        &self,
        service: Service,
        identity: &str,
        token: &str,
    ) -> anyhow::Result<client::AuthedChannel> {
        let channel = client::channel(&self.config, identity, &self.url(service)).await?;
        Ok(tonic::service::interceptor::InterceptedService::new(
            channel,
            client::Bearer::new(token)?,
        ))
    }

    /// The RBAC service as `principal`.
    pub async fn rbac_as(
        &self,
        principal: &str,
    ) -> anyhow::Result<RbacServiceClient<client::AuthedChannel>> {
        Ok(RbacServiceClient::new(
            self.authed(Service::Rbac, principal).await?,
        ))
    }

    /// The Org service as `principal`.
    pub async fn org_as(
        &self,
        principal: &str,
    ) -> anyhow::Result<OrgServiceClient<client::AuthedChannel>> {
        Ok(OrgServiceClient::new(
            self.authed(Service::Org, principal).await?,
        ))
    }

    /// The demo's principals and bindings, then the Org service as its administrator.
    pub async fn org(&self) -> anyhow::Result<OrgServiceClient<client::AuthedChannel>> {
        self.seed_access().await?;
        self.org_as(pm::demo::ADMIN).await
    }

    /// The Scheduling service as `principal`.
    pub async fn scheduling_as(
        &self,
        principal: &str,
    ) -> anyhow::Result<SchedulingServiceClient<client::AuthedChannel>> {
        Ok(SchedulingServiceClient::new(
            self.authed(Service::Scheduling, principal).await?,
        ))
    }

    /// The Billing service as `principal`.
    pub async fn billing_as(
        &self,
        principal: &str,
    ) -> anyhow::Result<BillingServiceClient<client::AuthedChannel>> {
        Ok(BillingServiceClient::new(
            self.authed(Service::Billing, principal).await?,
        ))
    }

    /// A mesh with the demo's principals and its operating model (Org with Billing's
    /// configuration) seeded, as its administrator.
    pub async fn start_with_demo(backend: Backend) -> anyhow::Result<TestMesh> {
        let mesh = TestMesh::start(backend).await?;
        mesh.seed_access().await?;
        pm::demo::seed(
            &mut mesh.org_as(pm::demo::ADMIN).await?,
            &mut mesh.billing_as(pm::demo::ADMIN).await?,
        )
        .await?;
        Ok(mesh)
    }

    /// A user principal `principals/{id}` holding `role` on `units` of `organization` only,
    /// bound by the demo's administrator.
    pub async fn bind_user(
        &self,
        id: &str,
        organization: &str,
        role: pm_api::rbac::Role,
        units: &[&str],
    ) -> anyhow::Result<()> {
        use pm_api::rbac::{
            CreatePrincipalRequest, CreateRoleBindingRequest, Principal, PrincipalKind, RoleBinding,
        };
        let mut rbac = self.rbac_as(pm::demo::ADMIN).await?;
        rbac.create_principal(CreatePrincipalRequest {
            principal: Some(Principal {
                display_name: id.to_string(),
                kind: PrincipalKind::User as i32,
                ..Default::default()
            }),
            principal_id: id.to_string(),
            request_id: String::new(),
        })
        .await?;
        rbac.create_role_binding(CreateRoleBindingRequest {
            parent: organization.to_string(),
            role_binding: Some(RoleBinding {
                principal: format!("principals/{id}"),
                role: role as i32,
                units: units.iter().map(|u| u.to_string()).collect(),
                reason: "a test's scoped caller".into(),
                ..Default::default()
            }),
            role_binding_id: id.to_string(),
            request_id: String::new(),
        })
        .await?;
        Ok(())
    }

    /// The web edge in front of this mesh, on a free port, until `shutdown`.
    pub async fn start_web_edge(
        &mut self,
        shutdown: CancellationToken,
    ) -> anyhow::Result<pm::web::WebEdge> {
        self.config.listen.web_port = 0;
        let (org, scheduling, rbac) = (
            self.url(Service::Org),
            self.url(Service::Scheduling),
            self.url(Service::Rbac),
        );
        let peers = pm::web::Peers {
            org: &org,
            scheduling: &scheduling,
            rbac: &rbac,
        };
        pm::web::start(&self.config, peers, shutdown).await
    }

    /// Payers `ids` in Billing under `organization`, created as `principal` (an administrator of
    /// it): Org refuses a billing profile naming a payer Billing does not know.
    pub async fn seed_payers(
        &self,
        principal: &str,
        organization: &str,
        ids: &[&str],
    ) -> anyhow::Result<()> {
        let mut billing = self.billing_as(principal).await?;
        for id in ids {
            billing
                .create_payer(pm_api::billing::CreatePayerRequest {
                    parent: organization.into(),
                    payer: Some(pm_api::billing::Payer {
                        display_name: id.to_string(),
                        payer_id: id.to_uppercase(),
                        claim_filing_indicator: "CI".into(),
                        timely_filing_days: 180,
                        ..Default::default()
                    }),
                    payer_id: id.to_string(),
                    request_id: String::new(),
                })
                .await?;
        }
        Ok(())
    }

    /// Kills the mesh (see `Mesh::kill`) and starts it again on the same slices (on new ports).
    pub async fn kill_and_restart(self) -> anyhow::Result<TestMesh> {
        let TestMesh {
            mesh,
            config,
            schema,
            _dir,
        } = self;
        mesh.kill();
        // Let the aborted tasks unwind and release their ports and connections.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mesh = mesh::start(&config, &Service::MESH, CancellationToken::new()).await?;
        Ok(TestMesh {
            mesh,
            config,
            schema,
            _dir,
        })
    }

    /// Scheduling as the `service` (its own certificate, no token).
    pub async fn scheduling_as_service(
        &self,
        service: &str,
    ) -> anyhow::Result<SchedulingServiceClient<tonic::transport::Channel>> {
        Ok(SchedulingServiceClient::new(
            client::channel(&self.config, service, &self.url(Service::Scheduling)).await?,
        ))
    }

    /// Stops the mesh and drops its PostgreSQL schemas.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.mesh.stop(Duration::from_secs(10)).await?;
        if let Some(prefix) = self.schema {
            for service in Service::MESH {
                // The gateway's slice is `ehr_gateway` (a schema name holds no '-').
                pm_runtime::Db::drop_postgres_schema(
                    &postgres_url(),
                    &format!("{prefix}{}", service.name().replace('-', "_")),
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// The first 1,000 records of `patient`'s merged audit trail (Org's `ListPatientAccesses`), oldest
/// first.
pub async fn trail(
    org: &mut OrgServiceClient<client::AuthedChannel>,
    patient: &str,
) -> anyhow::Result<Vec<pm_api::org::AccessRecord>> {
    Ok(org
        .list_patient_accesses(pm_api::org::ListPatientAccessesRequest {
            patient: patient.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .records)
}

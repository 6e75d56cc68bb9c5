//! `pm-bench`: throughput and latency of the Org and Scheduling services over mTLS, in one run.
//!
//! First the ceiling, an empty call (`grpc.health.v1.Health/Check`, no database work); then, on
//! SQLite and on PostgreSQL, `GetServiceUnit`, `ListServiceUnits` and `CreateServiceUnit`, and the
//! Scheduling rows (`BookAppointment`, `FindSlots` and their baselines: see `bench_scheduling.rs`).
//! Each row runs for a fixed time with a fixed number of calls in flight, spread over a few mTLS
//! channels, and reports successful calls per second, p50 and p99 latency, errors, and its share of the ceiling.
//!
//! The mesh runs in this process (Org, RBAC and Scheduling, on free ports of 127.0.0.1, dev mTLS
//! under a temporary folder), so client and server share the machine's cores.
//!
//! Environment:
//! - `PM_BENCH_SECONDS`: seconds per row (default 5).
//! - `PM_BENCH_CONCURRENCY`: calls in flight (default 32).
//! - `PM_BENCH_ONLY`: `scheduling` runs only the ceiling and the Scheduling rows, `calendar` only
//!   the ceiling and the history rows (a week's calendar and slot search with a small and a large
//!   past), `postgres` skips SQLite's rows; they combine (`scheduling,postgres`; for working on one
//!   part; `make bench` runs all). `billing` runs only Billing's rows (`bench_billing.rs`:
//!   revenue reports and AR aging over `PM_BENCH_BILLING_LINES` lines, the 837P writer).
//! - `PM_BENCH_POSTGRES_URL`: default `postgres://postgres@127.0.0.1:5432/postgres`. The run uses a
//!   fresh schema per service, `pmbench_<random>_<service>`, and drops them at the end; an
//!   unreachable server skips the PostgreSQL rows. The bare baselines run `pgbench` on the
//!   Scheduling schema (skipped when it is not installed).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use pm::mesh::{self, Mesh, Service};
use pm_api::org::org_service_client::OrgServiceClient;
use pm_api::org::{
    CreateOrganizationRequest, CreateServiceUnitRequest, GetServiceUnitRequest,
    ListServiceUnitsRequest, Organization, ServiceUnit, UnitKind,
};
use pm_runtime::client::{AuthedChannel as Channel, Bearer};
use pm_runtime::config::{Backend, Config, Secret, TlsMode};
use pm_runtime::{Db, client, tls};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use uuid::Uuid;

#[path = "bench_billing.rs"]
mod bench_billing;
#[path = "bench_scheduling.rs"]
mod bench_scheduling;

/// mTLS channels the in-flight calls are spread over (one TLS connection caps throughput).
const CHANNELS: usize = 4;
/// Service units created before the rows are measured.
const SEED_UNITS: usize = 200;
/// The organization every row works in.
const ORG_ID: &str = "bench";
/// How long a call may still run after its row's time is up before it counts as an error.
const CALL_GRACE: Duration = Duration::from_secs(10);
/// How long the mesh may take to drain when a backend is done.
const STOP_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The in-process mesh's warnings (a refused call's cause) go to stderr; RUST_LOG overrides.
    let _telemetry = pm_runtime::telemetry::init(&pm_runtime::config::TelemetryConfig {
        log_filter: "warn".into(),
        ..Default::default()
    })?;
    let settings = Settings::from_env()?;
    let root = std::env::temp_dir().join(format!("pm-bench-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let outcome = run(&settings, &root).await;
    if let Err(err) = std::fs::remove_dir_all(&root) {
        eprintln!("pm-bench: could not remove {}: {err}", root.display());
    }
    outcome
}

/// Every row: the ceiling and SQLite on one mesh, then PostgreSQL on another, then Billing's
/// report and export rows (PostgreSQL, no mesh).
async fn run(settings: &Settings, root: &Path) -> anyhow::Result<()> {
    if settings.only_billing {
        bench_billing::run(&settings.postgres_url).await?;
        return bench_billing::posting_lag(root, &settings.postgres_url).await;
    }
    print_header(settings);
    let sqlite = Target::sqlite(root.join("sqlite"));
    let ceiling = bench_target(settings, &sqlite, None).await?;
    let postgres = Target::postgres(root.join("postgres"), &settings.postgres_url);
    if let Err(reason) = postgres.probe().await {
        println!("{:<11} skipped: {reason:#}", postgres.label);
        return Ok(());
    }
    let outcome = bench_target(settings, &postgres, Some(ceiling)).await;
    let cleanup = postgres.cleanup().await;
    outcome.and(cleanup)?;
    bench_billing::run(&settings.postgres_url).await?;
    bench_billing::posting_lag(root, &settings.postgres_url).await
}

/// The run's knobs, from the environment.
struct Settings {
    duration: Duration,
    concurrency: usize,
    postgres_url: String,
    /// Only the Scheduling rows (`PM_BENCH_ONLY` names `scheduling`).
    only_scheduling: bool,
    /// Only PostgreSQL's rows (`PM_BENCH_ONLY` names `postgres`).
    only_postgres: bool,
    /// Only the history rows of Scheduling (`PM_BENCH_ONLY` names `calendar`).
    only_calendar: bool,
    /// Only Billing's rows (`PM_BENCH_ONLY` names `billing`).
    only_billing: bool,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let seconds: f64 = env_or("PM_BENCH_SECONDS", 5.0)?;
        let concurrency: usize = env_or("PM_BENCH_CONCURRENCY", 32)?;
        anyhow::ensure!(
            seconds.is_finite() && seconds > 0.0,
            "PM_BENCH_SECONDS must be a positive number of seconds"
        );
        anyhow::ensure!(concurrency > 0, "PM_BENCH_CONCURRENCY must be at least 1");
        let only: Vec<String> = env_or("PM_BENCH_ONLY", String::new())?
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        if let Some(unknown) = only
            .iter()
            .find(|p| !["scheduling", "calendar", "postgres", "billing"].contains(&p.as_str()))
        {
            anyhow::bail!(
                "PM_BENCH_ONLY: unknown part {unknown:?} (scheduling, calendar, postgres, billing)"
            );
        }
        Ok(Self {
            duration: Duration::from_secs_f64(seconds),
            concurrency,
            postgres_url: env_or("PM_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL.to_string())?,
            only_scheduling: only.iter().any(|p| p == "scheduling"),
            only_postgres: only.iter().any(|p| p == "postgres"),
            only_calendar: only.iter().any(|p| p == "calendar"),
            only_billing: only.iter().any(|p| p == "billing"),
        })
    }
}

fn env_or<T>(name: &str, default: T) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}={value:?}: {e}")),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(err) => Err(anyhow::anyhow!("{name}: {err}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Targets: a backend and the configuration of the mesh that runs on it.

struct Target {
    label: &'static str,
    config: Config,
}

impl Target {
    fn sqlite(data_dir: PathBuf) -> Self {
        Self {
            label: "sqlite",
            config: mesh_config(Backend::Sqlite, data_dir),
        }
    }

    fn postgres(data_dir: PathBuf, url: &str) -> Self {
        let mut config = mesh_config(Backend::Postgres, data_dir);
        config.storage.postgres_url = Secret::new(url);
        let random = Uuid::new_v4().simple().to_string();
        config.storage.postgres_schema_prefix = format!("pmbench_{}_", &random[..12]);
        Self {
            label: "postgres",
            config,
        }
    }

    /// The Org service's schema (PostgreSQL).
    fn schema(&self) -> String {
        format!(
            "{}{}",
            self.config.storage.postgres_schema_prefix,
            pm_org::NAME
        )
    }

    /// Whether PostgreSQL answers (dropping the not-yet-existing schema is a harmless round trip).
    async fn probe(&self) -> anyhow::Result<()> {
        let url = self.config.storage.postgres_url.expose();
        tokio::time::timeout(
            Duration::from_secs(5),
            Db::drop_postgres_schema(url, &self.schema()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer from PostgreSQL within 5 s"))?
        .context("cannot reach PostgreSQL (set PM_BENCH_POSTGRES_URL)")
    }

    async fn cleanup(&self) -> anyhow::Result<()> {
        for service in [
            pm_org::NAME,
            pm_rbac::NAME,
            pm_scheduling::NAME,
            pm_billing::NAME,
        ] {
            let schema = format!("{}{service}", self.config.storage.postgres_schema_prefix);
            Db::drop_postgres_schema(self.config.storage.postgres_url.expose(), &schema)
                .await
                .with_context(|| format!("dropping schema {schema}"))?;
        }
        Ok(())
    }
}

/// The mesh's services on free ports of 127.0.0.1, dev mTLS under `data_dir`.
fn mesh_config(backend: Backend, data_dir: PathBuf) -> Config {
    let mut config = Config::defaults_in(data_dir);
    config.listen.host = [127, 0, 0, 1].into();
    config.listen.org_port = 0;
    config.listen.rbac_port = 0;
    config.listen.scheduling_port = 0;
    config.listen.billing_port = 0;
    config.tls.mode = TlsMode::Dev;
    config.storage.backend = backend;
    // The benchmark's loops all call as one principal: measure throughput, not the per-caller bound.
    config.server.per_caller_concurrency = 1 << 20;
    config.server.per_service_concurrency = 1 << 20;
    config
}

/// Starts the mesh on `target`, measures its rows (and the ceiling first when `ceiling` is not known
/// yet), stops the mesh. Returns the ceiling in calls/s.
async fn bench_target(
    settings: &Settings,
    target: &Target,
    ceiling: Option<f64>,
) -> anyhow::Result<f64> {
    let mesh = mesh::start(
        &target.config,
        // Billing too: Org asks it whether the payers a unit's billing profile names exist.
        &[
            Service::Org,
            Service::Rbac,
            Service::Scheduling,
            Service::Billing,
        ],
        CancellationToken::new(),
    )
    .await
    .with_context(|| format!("starting the mesh on {}", target.label))?;
    let outcome = bench_mesh(settings, target, &mesh, ceiling).await;
    let stopped = mesh
        .stop(STOP_GRACE)
        .await
        .with_context(|| format!("stopping the mesh on {}", target.label));
    let ceiling = outcome?;
    stopped?;
    Ok(ceiling)
}

async fn bench_mesh(
    settings: &Settings,
    target: &Target,
    mesh: &Mesh,
    ceiling: Option<f64>,
) -> anyhow::Result<f64> {
    let (channels, token) = connect(&target.config, mesh).await?;
    let units = seed(&channels[0]).await?;
    let ceiling = match ceiling {
        Some(ceiling) => ceiling,
        None => {
            let result = measure(settings, &channels, &health_check()).await?;
            print_row("-", &result, None);
            result.rate()
        }
    };
    let skip = settings.only_postgres && target.config.storage.backend != Backend::Postgres;
    if skip {
        return Ok(ceiling);
    }
    if !settings.only_scheduling && !settings.only_calendar {
        for workload in [get_unit(units), list_units(), create_unit()] {
            let result = measure(settings, &channels, &workload).await?;
            print_row(target.label, &result, Some(ceiling));
        }
        bench_patient_reads(settings, target, mesh, &channels, &token, ceiling).await?;
    }
    bench_scheduling::bench(settings, target, mesh, &channels, &token, ceiling).await?;
    Ok(ceiling)
}

/// How an Org server for the patient-read comparison is put together.
#[derive(Clone, Copy)]
enum Guard {
    /// No authorization layer (a fixed administrator caller) and no audit.
    Bare,
    /// The authorization layer, no audit.
    Authz,
}

/// The same PHI read (`GetPatient`) three ways on the same slice: bare, behind the authorization
/// layer, and behind the layer with its synchronous (group-committed) audit record, which is the
/// mesh's own Org service.
async fn bench_patient_reads(
    settings: &Settings,
    target: &Target,
    mesh: &Mesh,
    audited_channels: &[Channel],
    token: &str,
    ceiling: f64,
) -> anyhow::Result<()> {
    let patient = seed_patient(&audited_channels[0]).await?;
    let mut servers = Vec::new();
    let mut ways: Vec<(&str, Vec<Channel>)> = Vec::new();
    for guard in [Guard::Bare, Guard::Authz] {
        let shutdown = CancellationToken::new();
        let (url, server, db) = side_server(&target.config, mesh, guard, shutdown.clone()).await?;
        let label = match guard {
            Guard::Bare => "GetPatient bare",
            Guard::Authz => "GetPatient +authz",
        };
        ways.push((label, channels_to(&target.config, &url, token).await?));
        servers.push((shutdown, server, db));
    }
    ways.push(("GetPatient +authz+audit", audited_channels.to_vec()));

    // The three ways alternate, round after round, and each reports its median round: this
    // machine's speed drifts over a run, and a drift must not land on one way only.
    let mut results: Vec<Vec<RowResult>> = ways.iter().map(|_| Vec::new()).collect();
    for _ in 0..PATIENT_ROUNDS {
        for ((label, channels), results) in ways.iter().zip(results.iter_mut()) {
            results.push(measure(settings, channels, &get_patient(label, patient.clone())).await?);
        }
    }
    let mut rates = Vec::new();
    for rounds in results {
        let median = median_round(rounds)?;
        print_row(target.label, &median, Some(ceiling));
        rates.push(median.rate());
    }
    for (shutdown, server, db) in servers {
        shutdown.cancel();
        server.await??;
        db.close().await;
    }
    if let [bare, authz, audited] = rates[..]
        && bare > 0.0
    {
        println!(
            "{:<11}   (median of {PATIENT_ROUNDS} alternating rounds) authorization costs {:.1}% of bare throughput (target <= 10%); audited reads keep {:.1}% of bare (target >= 50%)",
            target.label,
            (1.0 - authz / bare) * 100.0,
            audited / bare * 100.0
        );
    }
    Ok(())
}

/// Rounds of the patient-read comparison.
const PATIENT_ROUNDS: usize = 3;

/// The round of median throughput (of rows measured in alternation, so that a drift of the
/// machine's speed over a run does not land on one of them).
fn median_round(mut rounds: Vec<RowResult>) -> anyhow::Result<RowResult> {
    anyhow::ensure!(!rounds.is_empty(), "no round was measured");
    rounds.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    Ok(rounds.swap_remove(rounds.len() / 2))
}

/// An extra Org server on the mesh's slice, put together as `guard` says.
async fn side_server(
    config: &Config,
    mesh: &Mesh,
    guard: Guard,
    shutdown: CancellationToken,
) -> anyhow::Result<(String, tokio::task::JoinHandle<anyhow::Result<()>>, Db)> {
    use pm_api::org::org_service_server::OrgServiceServer;
    use tower::Layer as _;
    let db = Db::open(config, pm_org::NAME, pm_org::MIGRATIONS).await?;
    let api = OrgServiceServer::new(pm_org::handlers::OrgApi::unaudited_for_benchmarks(
        db.clone(),
    ));
    let routes = match guard {
        Guard::Bare => {
            let admin = pm_authz::layer::Caller::organization_admin(&org_name());
            tonic::service::Routes::new(pm_authz::layer::FixedCallerForBenchmarks(admin).layer(api))
        }
        Guard::Authz => {
            let rbac_url = mesh
                .url(Service::Rbac)
                .context("the mesh did not start the RBAC service")?;
            let source = Arc::new(pm_authz::layer::RbacAccess::new(client::lazy_channel(
                config, "org", &rbac_url,
            )?));
            let bounds = pm_authz::admission::Bounds::from_config(config)?;
            tonic::service::Routes::new(
                pm_authz::layer::Authz::bounded(source, false, bounds)?.layer(api),
            )
        }
    };
    let def = pm_runtime::server::ServiceDef {
        name: pm_org::NAME,
        grpc_services: vec![pm_org::GRPC_SERVICE],
        routes,
        db: Some(db.clone()),
        background: Default::default(),
    };
    let listener = pm_runtime::server::bind("127.0.0.1:0".parse()?).await?;
    let url = format!("https://{}", listener.local_addr()?);
    let config = config.clone();
    let server =
        tokio::spawn(
            async move { pm_runtime::server::serve(&config, def, listener, shutdown).await },
        );
    Ok((url, server, db))
}

/// A patient to read (not timed).
async fn seed_patient(channel: &Channel) -> anyhow::Result<String> {
    let patient = pm_api::org::Patient {
        given_name: "Bench".into(),
        family_name: "Patient".into(),
        birth_date: Some(pm_api::types::Date {
            year: 1970,
            month: 1,
            day: 1,
        }),
        ..Default::default()
    };
    let created = OrgServiceClient::new(channel.clone())
        .create_patient(pm_api::org::CreatePatientRequest {
            parent: org_name(),
            patient: Some(patient),
            patient_id: "bench-patient".into(),
            request_id: String::new(),
        })
        .await
        .context("creating the bench patient")?;
    Ok(created.into_inner().name)
}

fn get_patient(label: &'static str, name: String) -> Workload {
    Workload::new(label, move |channel, _| {
        let name = name.clone();
        async move {
            OrgServiceClient::new(channel)
                .get_patient(pm_api::org::GetPatientRequest { name })
                .await
                .map(drop)
        }
    })
}

/// [`CHANNELS`] mTLS channels to the Org service, as an administrator of the bench organization
/// (bootstrapped through RBAC with the dev tool certificate, as `pm demo seed` does).
async fn connect(config: &Config, mesh: &Mesh) -> anyhow::Result<(Vec<Channel>, String)> {
    let url = mesh
        .url(Service::Org)
        .context("the mesh did not start the Org service")?;
    let token = bootstrap_admin(config, mesh).await?;
    let mut channels = Vec::with_capacity(CHANNELS);
    for _ in 0..CHANNELS {
        let channel = client::channel(config, tls::CLIENT, &url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        channels.push(tonic::service::interceptor::InterceptedService::new(
            channel,
            Bearer::new(&token)?,
        ));
    }
    Ok((channels, token))
}

/// [`CHANNELS`] channels to `url` carrying `token`.
async fn channels_to(config: &Config, url: &str, token: &str) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(CHANNELS);
    for _ in 0..CHANNELS {
        let channel = client::channel(config, tls::CLIENT, url).await?;
        channels.push(tonic::service::interceptor::InterceptedService::new(
            channel,
            Bearer::new(token)?,
        ));
    }
    Ok(channels)
}

/// Creates `principals/bench-admin` with an administrator binding on the bench organization and
/// returns a token for it.
async fn bootstrap_admin(config: &Config, mesh: &Mesh) -> anyhow::Result<String> {
    use pm_api::rbac::rbac_service_client::RbacServiceClient;
    use pm_api::rbac::{
        CreatePrincipalRequest, CreateRoleBindingRequest, IssueTokenRequest, Principal,
        PrincipalKind, Role, RoleBinding,
    };
    let url = mesh
        .url(Service::Rbac)
        .context("the mesh did not start the RBAC service")?;
    let mut rbac = RbacServiceClient::new(client::channel(config, tls::CLIENT, &url).await?);
    let principal = Principal {
        display_name: "Bench administrator".into(),
        kind: PrincipalKind::User as i32,
        ..Default::default()
    };
    rbac.create_principal(CreatePrincipalRequest {
        principal: Some(principal),
        principal_id: "bench-admin".into(),
        request_id: String::new(),
    })
    .await?;
    let binding = RoleBinding {
        principal: "principals/bench-admin".into(),
        role: Role::OrganizationAdministrator as i32,
        ..Default::default()
    };
    rbac.create_role_binding(CreateRoleBindingRequest {
        parent: format!("organizations/{ORG_ID}"),
        role_binding: Some(binding),
        role_binding_id: String::new(),
        request_id: String::new(),
    })
    .await?;
    let token = rbac
        .issue_token(IssueTokenRequest {
            principal: "principals/bench-admin".into(),
            ttl: None,
        })
        .await?;
    Ok(token.into_inner().token)
}

/// Creates the organization and [`SEED_UNITS`] top-level units (not timed); returns the units' names.
async fn seed(channel: &Channel) -> anyhow::Result<Arc<Vec<String>>> {
    let mut client = OrgServiceClient::new(channel.clone());
    let organization = Organization {
        display_name: "Bench Health".into(),
        time_zone: "America/New_York".into(),
        ..Default::default()
    };
    client
        .create_organization(CreateOrganizationRequest {
            organization: Some(organization),
            organization_id: ORG_ID.into(),
            request_id: String::new(),
        })
        .await
        .context("creating the bench organization")?;
    let mut names = Vec::with_capacity(SEED_UNITS);
    for i in 0..SEED_UNITS {
        let unit = client
            .create_service_unit(unit_request(format!("seed-{i:03}")))
            .await
            .with_context(|| format!("creating seed unit {i}"))?
            .into_inner();
        names.push(unit.name);
    }
    Ok(Arc::new(names))
}

fn org_name() -> String {
    format!("organizations/{ORG_ID}")
}

fn unit_request(id: String) -> CreateServiceUnitRequest {
    CreateServiceUnitRequest {
        parent: org_name(),
        service_unit: Some(ServiceUnit {
            display_name: format!("Clinic {id}"),
            kind: UnitKind::Clinic as i32,
            ..Default::default()
        }),
        service_unit_id: id,
        request_id: String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads: what one call of a row is.

type CallFuture = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

/// One row's traffic: a closure producing one call on a channel, given a fresh random number.
#[derive(Clone)]
struct Workload {
    rpc: &'static str,
    call: Arc<dyn Fn(Channel, u64) -> CallFuture + Send + Sync>,
}

impl Workload {
    fn new<F, Fut>(rpc: &'static str, call: F) -> Self
    where
        F: Fn(Channel, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        Self {
            rpc,
            call: Arc::new(move |channel, random| Box::pin(call(channel, random))),
        }
    }
}

fn health_check() -> Workload {
    Workload::new("Health/Check (ceiling)", |channel, _| async move {
        let request = HealthCheckRequest {
            service: pm_org::GRPC_SERVICE.into(),
        };
        let response = HealthClient::new(channel)
            .check(request)
            .await?
            .into_inner();
        if response.status == ServingStatus::Serving as i32 {
            Ok(())
        } else {
            Err(Status::unavailable(format!(
                "health status {}",
                response.status
            )))
        }
    })
}

fn get_unit(units: Arc<Vec<String>>) -> Workload {
    Workload::new("GetServiceUnit", move |channel, random| {
        let index = usize::try_from(random % units.len().max(1) as u64).unwrap_or(0);
        let name = units.get(index).cloned().unwrap_or_default();
        async move {
            OrgServiceClient::new(channel)
                .get_service_unit(GetServiceUnitRequest { name })
                .await
                .map(drop)
        }
    })
}

fn list_units() -> Workload {
    Workload::new("ListServiceUnits", |channel, _| async move {
        let request = ListServiceUnitsRequest {
            parent: org_name(),
            page_size: 20,
            ..Default::default()
        };
        OrgServiceClient::new(channel)
            .list_service_units(request)
            .await
            .map(drop)
    })
}

fn create_unit() -> Workload {
    Workload::new("CreateServiceUnit", |channel, _| async move {
        let id = format!("b{}", Uuid::new_v4().simple());
        OrgServiceClient::new(channel)
            .create_service_unit(unit_request(id))
            .await
            .map(drop)
    })
}

// ---------------------------------------------------------------------------------------------
// Measuring: `concurrency` loops, each issuing one call after another until the row's time is up.

/// What a row (or one of its loops) saw.
struct Tally {
    /// Latency of successful calls, in microseconds.
    latencies: Histogram<u64>,
    errors: u64,
    /// The first error of each status code.
    first_errors: BTreeMap<i32, Status>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latencies: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            errors: 0,
            first_errors: BTreeMap::new(),
        })
    }

    fn record(&mut self, outcome: Result<(), Status>, latency: Duration) {
        match outcome {
            Ok(()) => {
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.latencies.saturating_record(micros.max(1));
            }
            Err(status) => {
                self.errors += 1;
                self.first_errors
                    .entry(status.code() as i32)
                    .or_insert(status);
            }
        }
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.latencies.add(&other.latencies)?;
        self.errors += other.errors;
        for (code, status) in other.first_errors {
            self.first_errors.entry(code).or_insert(status);
        }
        Ok(())
    }
}

/// A measured row.
pub(crate) struct RowResult {
    rpc: &'static str,
    tally: Tally,
    elapsed: Duration,
}

impl RowResult {
    /// Successful calls per second.
    pub(crate) fn rate(&self) -> f64 {
        self.tally.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn millis_at(&self, quantile: f64) -> f64 {
        self.tally.latencies.value_at_quantile(quantile) as f64 / 1000.0
    }
}

async fn measure(
    settings: &Settings,
    channels: &[Channel],
    workload: &Workload,
) -> anyhow::Result<RowResult> {
    let start = Instant::now();
    let deadline = start + settings.duration;
    let loops = (0..settings.concurrency).map(|i| {
        let channel = channels[i % channels.len()].clone();
        tokio::spawn(call_loop(workload.clone(), channel, deadline))
    });
    let mut tally = Tally::new()?;
    for joined in futures::future::join_all(loops).await {
        tally.merge(joined.context("a call loop panicked")??)?;
    }
    Ok(RowResult {
        rpc: workload.rpc,
        tally,
        elapsed: start.elapsed(),
    })
}

/// Issues calls one after another until `deadline`; a call still running [`CALL_GRACE`] after it is
/// abandoned and counted as an error, so the loop always ends.
async fn call_loop(
    workload: Workload,
    channel: Channel,
    deadline: Instant,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut random = SplitMix64(Uuid::new_v4().as_u64_pair().0);
    while Instant::now() < deadline {
        let began = Instant::now();
        let call = (workload.call)(channel.clone(), random.next());
        let outcome = tokio::time::timeout_at(deadline + CALL_GRACE, call)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("abandoned after the row ended")));
        tally.record(outcome, began.elapsed());
    }
    Ok(tally)
}

/// A small, fast pseudo-random sequence (picking units needs no more).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

// ---------------------------------------------------------------------------------------------
// Output.

fn print_header(settings: &Settings) {
    let build = if cfg!(debug_assertions) {
        "DEBUG build (numbers are not representative)"
    } else {
        "release build"
    };
    println!(
        "pm bench: {} s per row, {} in flight over {CHANNELS} mTLS channels, {build}",
        settings.duration.as_secs_f64(),
        settings.concurrency,
    );
    println!(
        "{:<11} {:<24} {:>9} {:>8} {:>8} {:>8} {:>14}",
        "backend", "rpc", "calls/s", "p50 ms", "p99 ms", "errors", "% of ceiling"
    );
}

/// One table line, then the first error of each status code the row saw.
fn print_row(backend: &str, row: &RowResult, ceiling: Option<f64>) {
    let share = match ceiling {
        Some(ceiling) if ceiling > 0.0 => format!("{:.1}%", row.rate() / ceiling * 100.0),
        Some(_) => "n/a".to_string(),
        None => "100%".to_string(),
    };
    println!(
        "{:<11} {:<24} {:>9.0} {:>8.2} {:>8.2} {:>8} {:>14}",
        backend,
        row.rpc,
        row.rate(),
        row.millis_at(0.50),
        row.millis_at(0.99),
        row.tally.errors,
        share,
    );
    for status in row.tally.first_errors.values() {
        println!(
            "{:<11}   ! first {:?} error: {}",
            "",
            status.code(),
            status.message()
        );
    }
}

//! `pm`: run the practice-management mesh, one of its services, or admin commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use pm::mesh::{self, Service};
use pm_api::org::org_service_client::OrgServiceClient;
use pm_api::rbac::IssueTokenRequest;
use pm_api::rbac::rbac_service_client::RbacServiceClient;
use pm_runtime::config::{Backend, Config, TlsMode};
use pm_runtime::{client, server, telemetry, tls};
use tonic::transport::Channel;

#[derive(Parser)]
#[command(
    name = "pm",
    version,
    about = "Practice-management mesh: Org, RBAC (and, as they land, Scheduling, Billing, EHR gateway)"
)]
struct Cli {
    /// TOML configuration file. Every setting also reads from PM_* environment variables
    /// (nested keys with "__", e.g. PM_STORAGE__BACKEND=postgres), which win over the file.
    #[arg(long, global = true, env = "PM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole mesh in one process: every service on its own port with its own database slice.
    Run,
    /// Run one service (for multi-process and Kubernetes deployments).
    Serve {
        /// The service to run (`web`: the web edge, grpc-web for the calendar page).
        service: Served,
    },
    /// Demo data.
    Demo {
        #[command(subcommand)]
        command: DemoCommand,
    },
    /// Create the dev CA and certificates (if missing) and print where they are.
    Certs,
    /// The audit trail of a service's slice (RBAC's records `pm admin` writes).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Administration with RBAC's own slice and configuration: bootstrap, tokens.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Billing files: 837P claims out, 835 remittances in (through a running mesh).
    Billing {
        #[command(subcommand)]
        command: BillingCommand,
        /// Bearer token to call Billing with (or PM_TOKEN). Default in dev mode: a 15-minute
        /// token for the demo administrator, through the dev bootstrap.
        #[arg(long, env = "PM_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The organization.
        #[arg(long, default_value = "organizations/acme")]
        organization: String,
        /// URL of the Billing service. Default: the configured billing port on localhost.
        #[arg(long)]
        billing: Option<String>,
    },
    /// HL7 v2 over MLLP: try a feed against the EHR gateway.
    Ehr {
        #[command(subcommand)]
        command: EhrCommand,
    },
    /// Print a bearer token for a principal (dev): `export TOKEN=$(pm login principals/admin)`.
    Login {
        /// The principal, e.g. `principals/admin`.
        principal: String,
        /// Lifetime in minutes (at most 60).
        #[arg(long, default_value_t = 15)]
        ttl_minutes: i64,
        /// URL of the RBAC service. Default: the configured rbac port on localhost.
        #[arg(long)]
        rbac: Option<String>,
    },
}

#[derive(Subcommand)]
enum EhrCommand {
    /// Send HL7 v2 files (one message each; LF line ends are turned into CR) over MLLP and print
    /// each ACK's MSA and ERR segments. Exits 1 when any message is not accepted.
    Send {
        /// The gateway's MLLP address, `HOST:PORT`.
        #[arg(long)]
        to: String,
        /// How long to wait for the connection and for each ACK, in seconds.
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create the first platform operator (once per deployment) and print a token for it.
    ///
    /// A principal bound to ROLE_PLATFORM_OPERATOR creates organizations and grants each new one its
    /// first administrator, and sees nothing inside any. This writes RBAC's slice directly with this
    /// configuration (dev and `tls.mode = files` alike) together with an audit record in RBAC's
    /// trail, then prints the token on stdout (`OPS_TOKEN=$(pm admin bootstrap --principal ops)`).
    /// Refused with exit code 1, writing nothing, when a platform operator exists.
    Bootstrap {
        /// The new principal's id: `principals/<id>`.
        #[arg(long)]
        principal: String,
        /// Its display name.
        #[arg(long, default_value = "Platform operator")]
        display_name: String,
        /// The token's lifetime in minutes (at most 60).
        #[arg(long, default_value_t = 60)]
        ttl_minutes: i64,
    },
    /// Print a token for an existing principal, minted with RBAC's slice (audited).
    ///
    /// For `tls.mode = files`, where no tool certificate mints tokens: how an administrator the
    /// platform operator granted gets its first token (then IssueToken with its own token refreshes
    /// it). Recorded in RBAC's audit trail.
    Token {
        /// The principal, e.g. `principals/dana`.
        principal: String,
        /// Lifetime in minutes (at most 60).
        #[arg(long, default_value_t = 15)]
        ttl_minutes: i64,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain (and signed checkpoints) and name the first edited, deleted or reordered
    /// record. Exits 1 when the trail was tampered with. Seals the records that committed writes
    /// staged into the chain first, so it writes to the slice.
    Verify {
        /// The service whose slice to verify.
        #[arg(long, value_enum, default_value = "org")]
        service: Service,
    },
}

#[derive(Subcommand)]
enum BillingCommand {
    /// Export every READY claim as 837P files (one per billing entity) into DIR; the claims become
    /// SUBMITTED. Prints each file written.
    #[command(name = "export-837")]
    Export837 {
        /// Where to write the files (created if missing).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Only this billing entity's claims.
        #[arg(long)]
        billing_entity: Option<String>,
    },
    /// Post an 835 remittance file: payments and adjustments to the ledger, claims to PAID,
    /// PARTIALLY_PAID or DENIED. The same file twice posts nothing the second time.
    #[command(name = "import-835")]
    Import835 {
        /// The 835 file.
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum DemoCommand {
    /// Load a realistic operating model through the public gRPC API.
    Seed {
        /// URL of the Org service. Default: the configured org port on localhost.
        #[arg(long)]
        org: Option<String>,
        /// URL of the RBAC service. Default: the configured rbac port on localhost.
        #[arg(long)]
        rbac: Option<String>,
        /// URL of the Scheduling service. Default: the configured scheduling port on localhost.
        #[arg(long)]
        scheduling: Option<String>,
        /// URL of the Billing service. Default: the configured billing port on localhost.
        #[arg(long)]
        billing: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("pm: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("pm: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pm: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Run => serve(config, &Service::MESH, true).await,
        Command::Serve {
            service: Served::Service(service),
        } => serve(config, &[service], false).await,
        Command::Serve {
            service: Served::Web,
        } => serve(config, &[], true).await,
        Command::Demo {
            command:
                DemoCommand::Seed {
                    org,
                    rbac,
                    scheduling,
                    billing,
                },
        } => seed(config, [org, rbac, scheduling, billing]).await,
        Command::Audit {
            command: AuditCommand::Verify { service },
        } => audit_verify(config, service).await,
        Command::Login {
            principal,
            ttl_minutes,
            rbac,
        } => login(config, principal, ttl_minutes, rbac).await,
        Command::Admin { command } => admin(config, command).await,
        Command::Ehr {
            command:
                EhrCommand::Send {
                    to,
                    timeout_secs,
                    files,
                },
        } => {
            let refused =
                pm::ehr_cli::send(&to, &files, Duration::from_secs(timeout_secs.max(1))).await?;
            if refused > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Billing {
            command,
            token,
            organization,
            billing,
        } => {
            let token = match token {
                Some(token) => token,
                None => dev_admin_token(&config).await?,
            };
            let (channel, _) =
                tool_channel(&config, billing, config.listen.billing_port, "Billing").await?;
            let client = pm::billing_cli::client(channel, &token)?;
            match command {
                BillingCommand::Export837 {
                    out,
                    billing_entity,
                } => pm::billing_cli::export_837(client, &organization, billing_entity, &out).await,
                BillingCommand::Import835 { file } => {
                    pm::billing_cli::import_835(client, &organization, &file).await
                }
            }
        }
        Command::Certs => {
            let dir = tls::dev_pki_dir(&config);
            tls::ensure_dev_pki(&dir)?;
            println!("dev PKI in {}", dir.display());
            println!("  CA:          {}", dir.join("ca.crt").display());
            println!(
                "  tool client: {} / {}",
                dir.join("client.crt").display(),
                dir.join("client.key").display()
            );
            Ok(())
        }
    }
}

/// What `pm serve` can run: one service, or the web edge.
#[derive(Clone, Copy)]
enum Served {
    Service(Service),
    Web,
}

impl ValueEnum for Served {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            Served::Service(Service::Org),
            Served::Service(Service::Rbac),
            Served::Service(Service::Scheduling),
            Served::Service(Service::Billing),
            Served::Service(Service::EhrGateway),
            Served::Web,
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        match self {
            Served::Service(service) => service.to_possible_value(),
            Served::Web => Some(clap::builder::PossibleValue::new("web").help(
                "The web edge: grpc-web for the calendar page (server-only TLS, bearer tokens)",
            )),
        }
    }
}

async fn serve(config: Config, services: &[Service], web: bool) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(&config.telemetry)?;
    // A serving process logs where a panic happened, never its payload (it may quote PHI).
    pm_runtime::catch_panic::install_quiet_hook();
    let shutdown = server::shutdown_on_signals();
    let mesh = mesh::start(&config, services, shutdown.clone()).await?;
    let storage = match config.storage.backend {
        Backend::Sqlite => format!("SQLite files under {}", config.data_dir.display()),
        Backend::Postgres => format!(
            "PostgreSQL schemas {}<service>",
            config.storage.postgres_schema_prefix
        ),
    };
    let security = match config.tls.mode {
        TlsMode::Dev => format!(
            "dev mTLS certificates under {}",
            tls::dev_pki_dir(&config).display()
        ),
        TlsMode::Files => "mTLS with the configured certificates".to_string(),
        TlsMode::Plaintext => "PLAINTEXT (no TLS: local debugging only)".to_string(),
    };
    println!("pm: {storage}; {security}");
    let mode = if config.tls.mode == TlsMode::Plaintext {
        "PLAINTEXT"
    } else {
        "mTLS"
    };
    for (service, addr) in &mesh.listening {
        if *service == Service::EhrGateway {
            println!(
                "  {:<5} listening on mllp://{addr} (plain TCP)",
                service.name()
            );
            continue;
        }
        println!(
            "  {:<5} listening on {}://{addr} ({mode})",
            service.name(),
            if mode == "mTLS" { "https" } else { "http" }
        );
    }
    if let Some((_, org)) = mesh.listening.iter().find(|(s, _)| *s == Service::Org) {
        let pki = tls::dev_pki_dir(&config);
        println!("try:");
        println!(
            "  buf curl --protocol grpc --cacert {0}/ca.crt --cert {0}/client.crt --key {0}/client.key \\\n    https://localhost:{1}/grpc.health.v1.Health/Check",
            pki.display(),
            org.port()
        );
        println!("  pm demo seed    # then see README.md for a tour");
    }
    let edge = if web {
        let url = |service: Service, configured: String| mesh.url(service).unwrap_or(configured);
        let (org, scheduling, rbac) = (
            url(Service::Org, config.org_url()),
            url(Service::Scheduling, config.scheduling_url()),
            url(Service::Rbac, config.rbac_url()),
        );
        let peers = pm::web::Peers {
            org: &org,
            scheduling: &scheduling,
            rbac: &rbac,
        };
        let edge = pm::web::start(&config, peers, shutdown.clone()).await?;
        let scheme = if config.tls.mode == TlsMode::Plaintext {
            "http"
        } else {
            "https"
        };
        println!(
            "  web   listening on {scheme}://{} (grpc-web, server-only TLS, bearer tokens)",
            edge.addr
        );
        Some(edge)
    } else {
        None
    };
    println!("ready");
    shutdown.cancelled().await;
    mesh.stopped(Duration::from_millis(config.server.shutdown_grace_ms))
        .await?;
    if let Some(edge) = edge {
        tokio::time::timeout(
            Duration::from_millis(config.server.shutdown_grace_ms),
            edge.task,
        )
        .await
        .map_err(|_| anyhow::anyhow!("the web edge did not stop in time"))???;
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// A channel to a service of the local mesh (or `url`), as the dev tool client.
async fn tool_channel(
    config: &Config,
    url: Option<String>,
    port: u16,
    what: &str,
) -> anyhow::Result<(Channel, String)> {
    let scheme = if config.tls.mode == TlsMode::Plaintext {
        "http"
    } else {
        "https"
    };
    let url = url.unwrap_or_else(|| format!("{scheme}://localhost:{port}"));
    let channel = client::channel(config, tls::CLIENT, &url)
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot reach the {what} service at {url} (is `pm run` up?): {e}")
        })?;
    Ok((channel, url))
}

/// Seeds the demo through the services at `urls` (Org, RBAC, Scheduling, Billing; `None`: the
/// configured port on localhost).
async fn seed(config: Config, urls: [Option<String>; 4]) -> anyhow::Result<()> {
    let [org, rbac, scheduling, billing] = urls;
    let (rbac_channel, url) = tool_channel(&config, rbac, config.listen.rbac_port, "RBAC").await?;
    let mut rbac = RbacServiceClient::new(rbac_channel);
    println!("seeding the demo principals through {url}");
    let mut report = pm::demo::SeedReport::default();
    pm::demo::seed_access(&mut rbac, &mut report).await?;
    let token = issue_token(&mut rbac, pm::demo::ADMIN, 15).await?;
    let bearer = || client::Bearer::new(&token);
    let (billing_channel, billing_url) =
        tool_channel(&config, billing, config.listen.billing_port, "Billing").await?;
    let mut billing = pm_api::billing::billing_service_client::BillingServiceClient::new(
        tonic::service::interceptor::InterceptedService::new(billing_channel, bearer()?),
    );
    let (org_channel, url) = tool_channel(&config, org, config.listen.org_port, "Org").await?;
    println!(
        "seeding the demo operating model through {url} (its billing configuration through \
         {billing_url}) as {}",
        pm::demo::ADMIN
    );
    let mut org = OrgServiceClient::new(tonic::service::interceptor::InterceptedService::new(
        org_channel,
        bearer()?,
    ));
    let (scheduling_channel, url) = tool_channel(
        &config,
        scheduling,
        config.listen.scheduling_port,
        "Scheduling",
    )
    .await?;
    let mut scheduling =
        pm_api::scheduling::scheduling_service_client::SchedulingServiceClient::new(
            tonic::service::interceptor::InterceptedService::new(scheduling_channel, bearer()?),
        );
    let org_report = pm::demo::seed(&mut org, &mut billing).await?;
    println!("seeding the demo schedules through {url}");
    let scheduling_report = pm::demo::seed_scheduling(&mut scheduling).await?;
    println!("seeding a month of billing through {billing_url}");
    let month_report = pm::demo::seed_billing_month(&mut billing).await?;
    for part in [org_report, scheduling_report, month_report] {
        report.created += part.created;
        report.existing += part.existing;
    }
    println!(
        "done: {} created, {} already there",
        report.created, report.existing
    );
    Ok(())
}

async fn issue_token(
    rbac: &mut RbacServiceClient<Channel>,
    principal: &str,
    ttl_minutes: i64,
) -> anyhow::Result<String> {
    let response = rbac
        .issue_token(IssueTokenRequest {
            principal: principal.to_string(),
            ttl: Some(prost_types::Duration {
                seconds: ttl_minutes.saturating_mul(60),
                nanos: 0,
            }),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?;
    Ok(response.into_inner().token)
}

async fn login(
    config: Config,
    principal: String,
    ttl_minutes: i64,
    rbac: Option<String>,
) -> anyhow::Result<()> {
    let (channel, _) = tool_channel(&config, rbac, config.listen.rbac_port, "RBAC").await?;
    println!(
        "{}",
        issue_token(
            &mut RbacServiceClient::new(channel),
            &principal,
            ttl_minutes
        )
        .await?
    );
    Ok(())
}

/// A token for the demo administrator through the dev bootstrap (dev mode only).
async fn dev_admin_token(config: &Config) -> anyhow::Result<String> {
    if config.tls.mode != TlsMode::Dev {
        anyhow::bail!("pass --token (or set PM_TOKEN): only dev mode mints a demo token");
    }
    let (channel, _) = tool_channel(config, None, config.listen.rbac_port, "RBAC").await?;
    issue_token(&mut RbacServiceClient::new(channel), pm::demo::ADMIN, 15).await
}

/// Who ran a `pm admin` command, for its audit record: the operating-system user.
fn local_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("os-user:{user}")
}

async fn admin(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    let db = pm_runtime::Db::open(&config, pm_rbac::NAME, pm_rbac::MIGRATIONS).await?;
    let result = match command {
        AdminCommand::Bootstrap {
            principal,
            display_name,
            ttl_minutes,
        } => pm_rbac::bootstrap::platform_operator(
            &db,
            &principal,
            &display_name,
            &local_actor(),
            ttl_minutes.saturating_mul(60_000_000),
        )
        .await
        .map(|made| {
            eprintln!(
                "pm: created {} ({}), a platform operator through {}; recorded in rbac's audit trail",
                made.principal.name, made.principal.display_name, made.binding.name
            );
            eprintln!(
                "pm: it may create organizations and grant each new one its first administrator; it \
                 sees nothing inside any organization. Token below (until {}); refresh it with \
                 IssueToken before then, or `pm admin token {}`",
                made.token
                    .expire_time
                    .map(|t| pm_runtime::time::to_micros(&t))
                    .and_then(chrono::DateTime::from_timestamp_micros)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                made.principal.name
            );
            made.token.token
        }),
        AdminCommand::Token {
            principal,
            ttl_minutes,
        } => pm_rbac::bootstrap::token(
            &db,
            &principal,
            &local_actor(),
            ttl_minutes.saturating_mul(60_000_000),
        )
        .await
        .map(|issued| issued.token),
    };
    db.close().await;
    let token = result.map_err(|e| anyhow::anyhow!("{}", e.message))?;
    println!("{token}");
    Ok(())
}

async fn audit_verify(config: Config, service: Service) -> anyhow::Result<()> {
    let migrations = match service {
        Service::Org => pm_org::MIGRATIONS,
        Service::Rbac => pm_rbac::MIGRATIONS,
        Service::Scheduling => pm_scheduling::MIGRATIONS,
        Service::Billing => pm_billing::MIGRATIONS,
        Service::EhrGateway => anyhow::bail!("the EHR gateway keeps no audit trail yet"),
    };
    let db = pm_runtime::Db::open(&config, service.name(), migrations).await?;
    let keys = pm_authz::checkpoints::verifying_keys(&config.audit_key_dir())?;
    let report = pm_authz::audit::verify(&db, &keys)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    db.close().await;
    if report.is_ok() {
        println!("audit trail of {}: intact ({report:?})", service.name());
        Ok(())
    } else {
        println!("audit trail of {}: TAMPERED: {report:?}", service.name());
        std::process::exit(1);
    }
}

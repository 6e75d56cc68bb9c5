//! Configuration: defaults, then an optional TOML file, then `PM_*` environment variables (the
//! environment wins). Nested keys use a double underscore: `PM_STORAGE__BACKEND=postgres`.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole configuration of a `pm` process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where SQLite files and the dev PKI live. Default `.pm-data`.
    pub data_dir: PathBuf,
    /// Listening addresses.
    pub listen: ListenConfig,
    /// Database backend.
    pub storage: StorageConfig,
    /// Transport security.
    pub tls: TlsConfig,
    /// Limits and timeouts of every server.
    pub server: ServerConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// Where the other services are (for `pm serve`; `pm run` wires them itself).
    pub peers: PeersConfig,
    /// The audit trail's signed checkpoints.
    pub audit: AuditConfig,
    /// The EHR gateway: MLLP limits and the sources it accepts.
    pub ehr: EhrConfig,
}

/// The EHR gateway (HL7 v2 over MLLP on `listen.mllp_port`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EhrConfig {
    /// Largest HL7 message accepted, in bytes. Default 1 048 576.
    pub max_frame_bytes: usize,
    /// A connection that delivers no whole message for this long is closed. Default 60 000 ms.
    pub read_timeout_ms: u64,
    /// MLLP connections served at once (more are closed on accept). Default 64.
    pub max_connections: usize,
    /// In dev mode (`tls.mode = dev`), messages from senders no source claims register patients
    /// into this organization (identifier system: the sender's assigning authority). Empty turns
    /// the catch-all off. Default `organizations/acme` (the demo organization). Ignored outside dev.
    pub dev_catch_all_organization: String,
    /// The sending systems.
    pub sources: Vec<EhrSourceConfig>,
}

impl Default for EhrConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 1 << 20,
            read_timeout_ms: 60_000,
            max_connections: 64,
            dev_catch_all_organization: "organizations/acme".into(),
            sources: Vec::new(),
        }
    }
}

/// One sending system of the EHR gateway (`[[ehr.sources]]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EhrSourceConfig {
    /// Its id: lowercase letters, digits and '-'.
    pub id: String,
    /// MSH-3 that identifies it (empty: any application of the facility).
    pub sending_application: String,
    /// MSH-4 that identifies it. Required.
    pub sending_facility: String,
    /// The organization its patients belong to, `organizations/{id}`.
    pub organization: String,
    /// Assigning authority (PID-3.4) → Org identifier system.
    pub identifier_systems: std::collections::BTreeMap<String, String>,
    /// What it may do: `register_patients`, `update_patients`.
    pub permissions: Vec<String>,
}

/// Signed checkpoints of each service's audit chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// How often the chain head is signed. Default 60 000 ms.
    pub checkpoint_interval_ms: u64,
    /// Folder of `audit-<service>.key` / `.pub`. Default `<data_dir>/pki` (created in dev mode).
    pub key_dir: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval_ms: 60_000,
            key_dir: None,
        }
    }
}

/// Addresses of other services.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeersConfig {
    /// The RBAC service, for token keys and role bindings. Default `https://localhost:<listen.rbac_port>`.
    pub rbac_url: Option<String>,
    /// The Org service, which Scheduling asks about units, credentials, enrollments and coverage.
    /// Default `https://localhost:<listen.org_port>`.
    pub org_url: Option<String>,
    /// The Scheduling service, whose audit trail Org's ListPatientAccesses merges and whose events
    /// Billing follows. Default `https://localhost:<listen.scheduling_port>`.
    pub scheduling_url: Option<String>,
    /// The Billing service, which Org asks whether the billing entities, payers, contracts and fee
    /// schedules a unit's billing profile names exist. Default `https://localhost:<listen.billing_port>`.
    pub billing_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".pm-data"),
            listen: ListenConfig::default(),
            storage: StorageConfig::default(),
            tls: TlsConfig::default(),
            server: ServerConfig::default(),
            telemetry: TelemetryConfig::default(),
            peers: PeersConfig::default(),
            audit: AuditConfig::default(),
            ehr: EhrConfig::default(),
        }
    }
}

/// Where each service listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// Interface to bind. Default `127.0.0.1`.
    pub host: IpAddr,
    /// Port of the Org service. Default 7101. 0 picks a free port.
    pub org_port: u16,
    /// Port of the RBAC service. Default 7102. 0 picks a free port.
    pub rbac_port: u16,
    /// Port of the Scheduling service. Default 7103. 0 picks a free port.
    pub scheduling_port: u16,
    /// Port of the Billing service. Default 7104. 0 picks a free port.
    pub billing_port: u16,
    /// MLLP port of the EHR gateway (plain TCP). Default 2575. 0 picks a free port.
    pub mllp_port: u16,
    /// Port of the web edge (`pm run`, `pm serve web`): grpc-web for the calendar page over
    /// server-only TLS, bearer tokens. Default 8443. 0 picks a free port.
    pub web_port: u16,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            org_port: 7101,
            rbac_port: 7102,
            scheduling_port: 7103,
            billing_port: 7104,
            mllp_port: 2575,
            web_port: 8443,
        }
    }
}

/// Which database each service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One SQLite file per service under `data_dir` (the embedded default).
    Sqlite,
    /// One PostgreSQL schema per service in the database `postgres_url` names.
    Postgres,
}

/// Storage settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite` (default) or `postgres`.
    pub backend: Backend,
    /// PostgreSQL connection URL. Default `postgres://postgres@127.0.0.1:5432/postgres`.
    pub postgres_url: Secret,
    /// Schema name prefix: the Org service uses `<prefix>org`. Default `pm_`.
    pub postgres_schema_prefix: String,
    /// Connections per service pool. Default 8.
    pub max_connections: u32,
    /// PostgreSQL: the longest one statement may run (and a session may sit idle inside a
    /// transaction) before the server cancels it; the call answers DEADLINE_EXCEEDED
    /// (`STATEMENT_TIMEOUT`). Default 9 000 ms, a little below `server.request_timeout_ms`, so that a
    /// call whose deadline passed does not leave its statement running. 0 disables it.
    pub statement_timeout_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            postgres_url: Secret::new("postgres://postgres@127.0.0.1:5432/postgres"),
            postgres_schema_prefix: "pm_".into(),
            max_connections: 8,
            statement_timeout_ms: 9_000,
        }
    }
}

/// How listeners and clients secure their connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Generate a dev CA and certificates under `<data_dir>/pki` on first run (default).
    Dev,
    /// Use the files named in `tls.ca_cert`, `tls.cert_dir`.
    Files,
    /// No TLS at all. For local debugging only; logged loudly at start-up.
    Plaintext,
}

/// TLS settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// `dev` (default), `files` or `plaintext`.
    pub mode: TlsMode,
    /// With `files`: the CA bundle that client and server certificates must chain to.
    pub ca_cert: Option<PathBuf>,
    /// With `files`: a folder with `<service>.crt` and `<service>.key` for each service served.
    pub cert_dir: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            mode: TlsMode::Dev,
            ca_cert: None,
            cert_dir: None,
        }
    }
}

/// Limits and timeouts applied to every server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Longest a call may run before it is answered DEADLINE_EXCEEDED. Default 10 000 ms.
    pub request_timeout_ms: u64,
    /// Calls served at once per service; more wait. Default 512.
    pub concurrency_limit: usize,
    /// How long a SIGTERM waits for in-flight calls to finish. Default 20 000 ms.
    pub shutdown_grace_ms: u64,
    /// How often the database is probed for health. Default 2 000 ms.
    pub health_probe_interval_ms: u64,
    /// Calls one principal may have in flight per service; more are answered RESOURCE_EXHAUSTED
    /// (`TOO_MANY_CALLS_IN_FLIGHT`) at once, so that one caller cannot take a service's pool.
    /// Default 4 (half the default pool).
    pub per_caller_concurrency: usize,
    /// Streams (WatchCalendar, StreamEvents) one principal may have open per service at once; a
    /// stream holds no connection but a task and a feed for as long as it is open, so it is bounded
    /// apart from calls in flight. More are answered RESOURCE_EXHAUSTED (`TOO_MANY_OPEN_STREAMS`).
    /// Default 8.
    pub per_caller_streams: usize,
    /// The same bound for a service calling on its own behalf (no token). Default 64.
    pub per_service_concurrency: usize,
    /// A file holding the key that signs page tokens (64 hex characters: 32 random bytes), the
    /// same for every replica of the mesh. Required with `tls.mode = files`; in dev mode, when
    /// unset, `<data_dir>/pki/page-token.key` is generated once and reused.
    pub page_token_key_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: 10_000,
            concurrency_limit: 512,
            shutdown_grace_ms: 20_000,
            health_probe_interval_ms: 2_000,
            // Half the default pool: one person's calls can never hold every connection.
            per_caller_concurrency: 4,
            per_caller_streams: 8,
            per_service_concurrency: 64,
            page_token_key_file: None,
        }
    }
}

/// Logging and tracing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `tracing` filter directive. Default `info`.
    pub log_filter: String,
    /// Log lines as JSON objects instead of text. Default false.
    pub log_json: bool,
    /// OTLP/gRPC endpoint of an OpenTelemetry collector, e.g. `http://127.0.0.1:4317`.
    /// Unset (the default) exports no traces.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_filter: "info".into(),
            log_json: false,
            otlp_endpoint: None,
        }
    }
}

/// A string that never shows in Debug output or logs (it may hold a password).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The top-level settings, as environment variables name them (`PM_<SECTION>...`).
const SECTIONS: &[&str] = &[
    "data_dir",
    "listen",
    "storage",
    "tls",
    "server",
    "telemetry",
];

impl Config {
    /// Loads defaults, then `file` if given, then the `PM_*` environment.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only variables naming a setting are read: PM_BIN, PM_TEST_* and the like belong to tools.
        let env = Env::prefixed("PM_")
            .filter(|key| {
                let key = key.as_str().to_ascii_lowercase();
                SECTIONS.iter().any(|section| {
                    key.strip_prefix(section).is_some_and(|rest| {
                        rest.is_empty() || rest.starts_with("__") || rest.starts_with('.')
                    })
                })
            })
            .split("__");
        figment.merge(env).extract().map_err(Box::new)
    }

    /// Where audit checkpoint keys live.
    pub fn audit_key_dir(&self) -> PathBuf {
        self.audit
            .key_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("pki"))
    }

    /// The RBAC service's URL.
    pub fn rbac_url(&self) -> String {
        self.peers.rbac_url.clone().unwrap_or_else(|| {
            let scheme = if self.tls.mode == TlsMode::Plaintext {
                "http"
            } else {
                "https"
            };
            format!("{scheme}://localhost:{}", self.listen.rbac_port)
        })
    }

    /// The Scheduling service's URL.
    pub fn scheduling_url(&self) -> String {
        self.peers.scheduling_url.clone().unwrap_or_else(|| {
            let scheme = if self.tls.mode == TlsMode::Plaintext {
                "http"
            } else {
                "https"
            };
            format!("{scheme}://localhost:{}", self.listen.scheduling_port)
        })
    }

    /// The Org service's URL.
    pub fn org_url(&self) -> String {
        self.peers.org_url.clone().unwrap_or_else(|| {
            let scheme = if self.tls.mode == TlsMode::Plaintext {
                "http"
            } else {
                "https"
            };
            format!("{scheme}://localhost:{}", self.listen.org_port)
        })
    }

    /// The Billing service's URL.
    pub fn billing_url(&self) -> String {
        self.peers.billing_url.clone().unwrap_or_else(|| {
            let scheme = if self.tls.mode == TlsMode::Plaintext {
                "http"
            } else {
                "https"
            };
            format!("{scheme}://localhost:{}", self.listen.billing_port)
        })
    }

    /// The defaults alone (tests and tools that build a config in code).
    pub fn defaults_in(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            ..Self::default()
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return its own (large) error type
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_database_password() {
        let mut config = Config::default();
        config.storage.postgres_url = Secret::new("postgres://admin:hunter2@db/pm");
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults()
    -> Result<(), Box<dyn std::error::Error>> {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "pm.toml",
                "[storage]\nbackend = \"postgres\"\nmax_connections = 3\n[listen]\norg_port = 9000\n",
            )?;
            jail.set_env("PM_LISTEN__ORG_PORT", "9100");
            jail.set_env("PM_BIN", "/usr/bin/pm");
            jail.set_env("PM_TEST_POSTGRES_URL", "postgres://elsewhere");
            let config = Config::load(Some(Path::new("pm.toml"))).map_err(|e| *e)?;
            assert_eq!(config.storage.backend, Backend::Postgres);
            assert_eq!(config.storage.max_connections, 3);
            assert_eq!(config.listen.org_port, 9100);
            assert_eq!(config.listen.rbac_port, 7102);
            Ok(())
        });
        Ok(())
    }

    #[test]
    fn the_statement_timeout_defaults_below_the_call_timeout() {
        let config = Config::default();
        assert!(config.storage.statement_timeout_ms > 0);
        assert!(config.storage.statement_timeout_ms < config.server.request_timeout_ms);
        assert_eq!(
            std::time::Duration::from_millis(config.storage.statement_timeout_ms),
            crate::db::DEFAULT_STATEMENT_TIMEOUT
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("pm.toml", "[storage]\nbackedn = \"postgres\"\n")?;
            jail.set_env("PM_STORAGE__MAX_CONECTIONS", "3");
            let err = match Config::load(Some(Path::new("pm.toml"))) {
                Ok(_) => panic!("a misspelt key must not load"),
                Err(err) => err.to_string(),
            };
            assert!(err.contains("backedn"), "{err}");
            Ok(())
        });
    }
}

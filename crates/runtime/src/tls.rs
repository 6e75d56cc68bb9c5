//! Mutual TLS for every listener and client (rustls through tonic).
//!
//! Identities are SPIFFE-style URI SANs: `spiffe://pm.local/service/<service>` for services and
//! `spiffe://pm.local/client/<name>` for tools. In `dev` mode the first run creates a CA and one
//! certificate per service plus `client` (for grpcurl, buf curl, tests) under `<data_dir>/pki`; later
//! runs reuse them. In `files` mode the operator provides them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{Config, TlsMode};

/// The trust domain of SPIFFE identities.
pub const TRUST_DOMAIN: &str = "pm.local";

/// Every service that gets a certificate in dev mode. `web` is the web edge: its certificate serves
/// browsers (server-only TLS) and identifies it to the services, which still act on the caller's
/// bearer token.
pub const SERVICES: &[&str] = &["org", "rbac", "scheduling", "billing", "ehr-gateway", "web"];

/// The name of the dev certificate for tools and tests.
pub const CLIENT: &str = "client";

/// The SPIFFE identity of a service.
pub fn service_identity(service: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/service/{service}")
}

/// PEM material of one identity plus the CA it trusts.
#[derive(Clone)]
pub struct TlsMaterial {
    /// CA certificate(s) peers must chain to.
    pub ca_pem: String,
    /// This identity's certificate chain.
    pub cert_pem: String,
    /// This identity's private key.
    pub key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsMaterial { key: <redacted> }")
    }
}

impl TlsMaterial {
    /// The server side: present this identity, require a client certificate from the CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// The client side: present this identity, trust the CA, expect the server to be `domain`.
    pub fn client(&self, domain: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(domain)
    }
}

/// Where the dev PKI lives for a config.
pub fn dev_pki_dir(config: &Config) -> PathBuf {
    config.data_dir.join("pki")
}

/// The TLS material of `identity` (a service name or [`CLIENT`]) under `config`, creating the dev PKI
/// on first use. `None` in plaintext mode.
pub fn material(config: &Config, identity: &str) -> anyhow::Result<Option<TlsMaterial>> {
    let (ca, dir) = match config.tls.mode {
        TlsMode::Plaintext => return Ok(None),
        TlsMode::Dev => {
            let dir = dev_pki_dir(config);
            ensure_dev_pki(&dir)?;
            (dir.join("ca.crt"), dir)
        }
        TlsMode::Files => (
            config
                .tls
                .ca_cert
                .clone()
                .context("tls.mode = files needs tls.ca_cert")?,
            config
                .tls
                .cert_dir
                .clone()
                .context("tls.mode = files needs tls.cert_dir")?,
        ),
    };
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    Ok(Some(TlsMaterial {
        ca_pem: read(&ca)?,
        cert_pem: read(&dir.join(format!("{identity}.crt")))?,
        key_pem: read(&dir.join(format!("{identity}.key")))?,
    }))
}

/// Creates the dev CA and every missing certificate under `dir`. Idempotent.
pub fn ensure_dev_pki(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let (ca_cert, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let ca_key_pair = if ca_cert.exists() && ca_key.exists() {
        KeyPair::from_pem(&std::fs::read_to_string(&ca_key)?)?
    } else {
        let key = KeyPair::generate()?;
        let mut params = ca_params()?;
        set_validity(&mut params, 3650);
        let cert = params.self_signed(&key)?;
        write_private(&ca_key, &key.serialize_pem())?;
        std::fs::write(&ca_cert, cert.pem())?;
        key
    };
    // The issuer is rebuilt from the CA's fixed subject and its key: that is all signing needs.
    let issuer = Issuer::new(ca_params()?, ca_key_pair);
    for service in SERVICES {
        let sans = vec![
            SanType::DnsName("localhost".try_into()?),
            SanType::DnsName((*service).try_into()?),
            SanType::DnsName(format!("{service}.pm.internal").as_str().try_into()?),
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
            SanType::URI(service_identity(service).as_str().try_into()?),
        ];
        issue(dir, service, sans, &issuer)?;
    }
    let client_sans = vec![SanType::URI(
        format!("spiffe://{TRUST_DOMAIN}/client/dev-tools")
            .as_str()
            .try_into()?,
    )];
    issue(dir, CLIENT, client_sans, &issuer)?;
    Ok(())
}

/// Signs a client certificate with the dev CA under `dir` for `spiffe_id`, valid from `not_before` to
/// `not_after` (tests use it for expired and not-yet-valid certificates). Returns (cert, key) PEM.
pub fn issue_dev_client(
    dir: &Path,
    spiffe_id: &str,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> anyhow::Result<(String, String)> {
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key"))?)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("test client");
    params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into()?)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn issue(
    dir: &Path,
    identity: &str,
    sans: Vec<SanType>,
    issuer: &Issuer<'_, KeyPair>,
) -> anyhow::Result<()> {
    let (cert_path, key_path) = (
        dir.join(format!("{identity}.crt")),
        dir.join(format!("{identity}.key")),
    );
    if cert_path.exists() && key_path.exists() {
        return Ok(());
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(identity);
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Services are servers to their callers and clients of each other.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    set_validity(&mut params, 825);
    let cert = params.signed_by(&key, issuer)?;
    write_private(&key_path, &key.serialize_pem())?;
    std::fs::write(&cert_path, cert.pem())?;
    Ok(())
}

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name("pm dev CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "pm dev");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// Writes a secret (a private key) readable by its owner only.
pub fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(pem.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_pki_is_created_once_and_reused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        ensure_dev_pki(dir.path())?;
        let first = std::fs::read_to_string(dir.path().join("org.crt"))?;
        ensure_dev_pki(dir.path())?;
        assert_eq!(first, std::fs::read_to_string(dir.path().join("org.crt"))?);
        for identity in SERVICES.iter().chain([&CLIENT]) {
            assert!(
                dir.path().join(format!("{identity}.key")).exists(),
                "{identity}"
            );
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("ca.key"))?
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "private keys are not readable by others");
        }
        Ok(())
    }
}

//! Channels to the mesh's services, over the same mTLS identities the servers use.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::config::Config;
use crate::tls;

/// A channel to `url` presenting `identity`'s certificate (a service name, or [`tls::CLIENT`] for
/// tools). The server must present a certificate valid for `localhost` (dev) or the URL's host.
/// `https://` URLs use mTLS; `http://` only works against a plaintext mesh.
pub async fn channel(config: &Config, identity: &str, url: &str) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        let material = tls::material(config, identity)?
            .ok_or_else(|| anyhow::anyhow!("{url} needs TLS but tls.mode = plaintext"))?;
        let host = endpoint.uri().host().unwrap_or("localhost").to_string();
        let domain = if host.parse::<std::net::IpAddr>().is_ok() {
            "localhost".to_string()
        } else {
            host
        };
        endpoint = endpoint.tls_config(material.client(&domain))?;
    }
    Ok(endpoint.connect().await?)
}

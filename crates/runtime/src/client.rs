//! Channels to the mesh's services, over the same mTLS identities the servers use.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::config::Config;
use crate::tls;

/// A channel to `url` presenting `identity`'s certificate (a service name, or [`tls::CLIENT`] for
/// tools). The server must present a certificate valid for `localhost` (dev) or the URL's host.
/// `https://` URLs use mTLS; `http://` only works against a plaintext mesh.
pub async fn channel(config: &Config, identity: &str, url: &str) -> anyhow::Result<Channel> {
    Ok(endpoint(config, identity, url)?.connect().await?)
}

/// Like [`channel`], but connects on first use (for peers that may start after us).
pub fn lazy_channel(config: &Config, identity: &str, url: &str) -> anyhow::Result<Channel> {
    Ok(endpoint(config, identity, url)?.connect_lazy())
}

fn endpoint(config: &Config, identity: &str, url: &str) -> anyhow::Result<Endpoint> {
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
    Ok(endpoint)
}

/// Adds `authorization: Bearer <token>` to every call (no header when the token is empty).
#[derive(Clone, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// A bearer token for every call; INVALID characters make it an error.
    pub fn new(token: &str) -> anyhow::Result<Self> {
        if token.is_empty() {
            return Ok(Self(None));
        }
        Ok(Self(Some(format!("Bearer {token}").parse()?)))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel whose calls carry a bearer token.
pub type AuthedChannel = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

//! Connections to the push services: TLS (rustls, verified certificates), HTTP/2 through our
//! own client ([`h2c`]: stream concurrency, GOAWAY, pings under our control, one task per
//! connection) and HTTP/1.1 via hyper's
//! connection API (WNS, OAuth token endpoints). Transports know nothing of the registry or of
//! notifications: they move requests and answers.

pub(crate) mod h2c;
pub(crate) mod http1;
pub(crate) mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub use tls::TlsRoots;

/// Time allowed for TCP connect plus TLS handshake plus the HTTP/2 preface.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTPS origin a pool talks to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Endpoint {
    /// `host` or `host:port` as written in URLs and the `:authority`.
    pub(crate) authority: Arc<str>,
    /// The host name or IP literal (brackets removed).
    pub(crate) host: Arc<str>,
    pub(crate) port: u16,
    /// Connect only to public addresses: each resolved address is checked first, and a host
    /// with none is refused without a connection (Web Push's endpoint policy, audit M1).
    pub(crate) public_only: bool,
}

impl Endpoint {
    /// Parses the origin of an `https://` URL (path and query ignored).
    pub(crate) fn from_url(url: &str) -> Result<Endpoint, String> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("{url:?} is not an https:// URL"))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url:?} has no usable host"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed IPv6 literal"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port"))?,
                None if after.is_empty() => 443,
                None => return Err(format!("{url:?}: bad authority")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| format!("{url:?}: bad port"))?,
                ),
                None => (authority.to_string(), 443),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        Ok(Endpoint {
            authority: authority.to_ascii_lowercase().into(),
            host: host.to_ascii_lowercase().into(),
            port,
            public_only: false,
        })
    }

    /// `https://authority`.
    pub(crate) fn origin(&self) -> String {
        format!("https://{}", self.authority)
    }
}

/// Why a connection could not be made or used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// DNS, TCP or timeout.
    #[error("connecting to {endpoint}: {message}")]
    Connect {
        /// host:port
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// The TLS handshake failed (certificate not trusted, client certificate refused, ...).
    #[error("TLS with {endpoint}: {message}")]
    Tls {
        /// host:port
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// The endpoint policy refused every address the host has (loopback, private, link-local
    /// ...): nothing was connected to.
    #[error("refused to connect to {endpoint}: {message}")]
    Refused {
        /// host:port
        endpoint: String,
        /// Why (the address and its range).
        message: String,
    },
    /// The HTTP layer failed.
    #[error("HTTP with {endpoint}: {message}")]
    Http {
        /// host:port
        endpoint: String,
        /// What failed.
        message: String,
    },
}

impl TransportError {
    /// Whether this is a TLS failure that reconnecting cannot fix (bad certificate).
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, TransportError::Tls { .. })
    }

    /// Whether the endpoint policy refused the host's addresses (retrying cannot help until
    /// its DNS changes).
    pub(crate) fn is_refused(&self) -> bool {
        matches!(self, TransportError::Refused { .. })
    }
}

/// Opens TCP + TLS to `ep` offering `config`'s ALPN list; returns the stream and whether the
/// server chose HTTP/2.
pub(crate) async fn connect_tls(
    ep: &Endpoint,
    config: Arc<rustls::ClientConfig>,
) -> Result<(TlsStream<TcpStream>, bool), TransportError> {
    let endpoint = format!("{}:{}", ep.host, ep.port);
    let connect_err = |message: String| TransportError::Connect {
        endpoint: endpoint.clone(),
        message,
    };
    // An uncached lookup per new connection spreads load over the service's addresses
    // (pns-protocols.md §1.7, "DNS").
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((&*ep.host, ep.port))
        .await
        .map_err(|e| connect_err(e.to_string()))?
        .collect();
    let addrs = allowed_addresses(ep, addrs).map_err(|message| TransportError::Refused {
        endpoint: endpoint.clone(),
        message,
    })?;
    let mut last = connect_err("no address".into());
    let mut tcp = None;
    for a in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                tcp = Some(s);
                break;
            }
            Ok(Err(e)) => last = connect_err(format!("{a}: {e}")),
            Err(_) => last = connect_err(format!("{a}: timed out")),
        }
    }
    let tcp = tcp.ok_or(last)?;
    // Requests are small and latency matters more than packet count.
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(ep.host.to_string()).map_err(|e| TransportError::Tls {
        endpoint: endpoint.clone(),
        message: format!("bad server name: {e}"),
    })?;
    let tls = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| connect_err("TLS handshake timed out".into()))?
    .map_err(|e| {
        // rustls reports certificate problems as InvalidData io errors; anything else is
        // the network.
        if e.kind() == std::io::ErrorKind::InvalidData {
            TransportError::Tls {
                endpoint: endpoint.clone(),
                message: e.to_string(),
            }
        } else {
            connect_err(format!("during TLS handshake: {e}"))
        }
    })?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    Ok((tls, h2))
}

/// The addresses of `ep` that may be connected to: all of them, or with `public_only` the
/// public ones (a name that also resolves to a private address is reached at its public
/// ones only, so a rebinding answer cannot lead inside). `Err` names the first address
/// refused when none is left.
fn allowed_addresses(ep: &Endpoint, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, String> {
    if !ep.public_only {
        return Ok(addrs);
    }
    let mut refused = None;
    let public: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(
            |a| match crate::model::require_public(&ep.host, a.ip().to_canonical()) {
                Ok(()) => true,
                Err(why) => {
                    refused.get_or_insert(why);
                    false
                }
            },
        )
        .collect();
    match (public.is_empty(), refused) {
        (true, Some(why)) => Err(why),
        _ => Ok(public),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parsing() {
        let e = Endpoint::from_url("https://api.push.apple.com/3/device/ab").unwrap();
        assert_eq!(
            (&*e.host, e.port, &*e.authority),
            ("api.push.apple.com", 443, "api.push.apple.com")
        );
        let e = Endpoint::from_url("https://127.0.0.1:8443").unwrap();
        assert_eq!((&*e.host, e.port), ("127.0.0.1", 8443));
        let e = Endpoint::from_url("https://[::1]:9/x").unwrap();
        assert_eq!((&*e.host, e.port, &*e.authority), ("::1", 9, "[::1]:9"));
        assert_eq!(e.origin(), "https://[::1]:9");
        assert!(Endpoint::from_url("http://x").is_err());
        assert!(Endpoint::from_url("https://").is_err());
        assert!(Endpoint::from_url("https://h:notaport").is_err());
    }

    #[test]
    fn public_only_endpoints_keep_public_addresses() {
        let mut ep = Endpoint::from_url("https://push.example:8443/x").unwrap();
        let addr = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let mixed = vec![
            addr("127.0.0.1:8443"),
            addr("93.184.216.34:8443"),
            addr("[::ffff:10.0.0.1]:8443"),
        ];
        assert_eq!(allowed_addresses(&ep, mixed.clone()).unwrap(), mixed);
        ep.public_only = true;
        assert_eq!(
            allowed_addresses(&ep, mixed).unwrap(),
            vec![addr("93.184.216.34:8443")]
        );
        assert_eq!(
            allowed_addresses(&ep, vec![addr("[::ffff:169.254.169.254]:8443")]).unwrap_err(),
            "host push.example resolves to 169.254.169.254, link-local, cloud metadata \
             (169.254.0.0/16, RFC 3927), not a public address"
        );
    }
}

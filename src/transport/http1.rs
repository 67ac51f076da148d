//! HTTP/1.1 over TLS with hyper's connection API: keep-alive connections for WNS (which has
//! no documented HTTP/2, pns-protocols.md §3.2) and one-shot POSTs to OAuth token endpoints.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::{connect_tls, Endpoint, TransportError};

/// Largest answer body read; PNS answers are a few hundred bytes.
const MAX_ANSWER_BODY: usize = 64 * 1024;

/// An answer as the dispatcher classifies it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// One keep-alive HTTP/1.1 connection (one request at a time, no pipelining: WNS rules).
pub(crate) struct Http1Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Http1Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Http1Conn {
    /// Connects with a configuration whose ALPN offers `http/1.1` (or nothing).
    pub(crate) async fn connect(
        ep: &Endpoint,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Http1Conn, TransportError> {
        let (tls, _) = connect_tls(ep, config).await?;
        Self::handshake(ep, tls).await
    }

    /// HTTP/1.1 on an open TLS stream (the server's ALPN chose `http/1.1`, or none).
    pub(crate) async fn handshake(
        ep: &Endpoint,
        tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ) -> Result<Http1Conn, TransportError> {
        let (send, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, Full<Bytes>>(TokioIo::new(tls))
            .await
            .map_err(|e| TransportError::Http {
                endpoint: ep.authority.to_string(),
                message: format!("HTTP/1.1 handshake: {e}"),
            })?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Http1Conn { send, driver })
    }

    /// Whether the connection can take another request.
    pub(crate) fn is_open(&self) -> bool {
        !self.send.is_closed()
    }

    /// Sends one request and reads the whole answer. An error means the connection is gone;
    /// whether the server processed the request is unknown unless `not_sent` says so.
    pub(crate) async fn send(&mut self, req: Request<Bytes>) -> Result<Answer, SendFailure> {
        if self.send.ready().await.is_err() {
            return Err(SendFailure {
                not_sent: true,
                message: "connection closed".into(),
            });
        }
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, Full::new(body));
        let resp = self.send.send_request(req).await.map_err(|e| SendFailure {
            // hyper hands the request back only when it never reached the wire.
            not_sent: e.is_canceled(),
            message: e.to_string(),
        })?;
        let (parts, body) = resp.into_parts();
        let body = http_body_util::Limited::new(body, MAX_ANSWER_BODY)
            .collect()
            .await
            .map_err(|e| SendFailure {
                not_sent: false,
                message: format!("reading answer: {e}"),
            })?
            .to_bytes();
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}

/// A request that failed at the transport.
#[derive(Debug)]
pub(crate) struct SendFailure {
    /// The request certainly never reached the server.
    pub(crate) not_sent: bool,
    pub(crate) message: String,
}

/// POSTs a form to `url` on a fresh connection (OAuth token endpoints: once an hour).
pub(crate) async fn post_form(
    url: &str,
    form: String,
    config: Arc<rustls::ClientConfig>,
) -> Result<Answer, TransportError> {
    let ep = Endpoint::from_url(url).map_err(|message| TransportError::Connect {
        endpoint: url.to_string(),
        message,
    })?;
    let path = path_of(url);
    let mut conn = Http1Conn::connect(&ep, config).await?;
    let req = Request::post(path)
        .header(http::header::HOST, &*ep.authority)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(http::header::CONTENT_LENGTH, form.len())
        .body(Bytes::from(form))
        .map_err(|e| TransportError::Http {
            endpoint: ep.authority.to_string(),
            message: e.to_string(),
        })?;
    conn.send(req).await.map_err(|f| TransportError::Http {
        endpoint: ep.authority.to_string(),
        message: f.message,
    })
}

/// The path and query of an absolute URL (`/` when empty).
pub(crate) fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.find('/') {
        Some(i) => &rest[i..],
        None => "/",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_of() {
        assert_eq!(super::path_of("https://h:1/a/b?c"), "/a/b?c");
        assert_eq!(super::path_of("https://h"), "/");
    }
}

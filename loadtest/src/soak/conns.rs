//! Connections that do nothing useful: idle ones (TLS, then an HTTP/2 handshake that answers the
//! server's PINGs, or HTTP/1.1 that never sends a request) and slow ones (an HTTP/1.1 request
//! head dribbled one byte a second, never finished). The server should close both; each is
//! reopened at once, so about the configured number stay open. Records how long each lived.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// TCP connect plus TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A failed connect is retried after this.
const RETRY: Duration = Duration::from_secs(1);

/// Counters of one kind of connection.
#[derive(Default)]
pub(crate) struct Kind {
    pub(crate) open: AtomicU64,
    peak: AtomicU64,
    opened: AtomicU64,
    closed_by_server: AtomicU64,
    connect_errors: AtomicU64,
    lifetimes_ms: Mutex<Vec<u64>>,
    /// Statuses the server wrote before closing (slow connections: a 408, say).
    replies: Mutex<std::collections::BTreeMap<u16, u64>>,
}

/// What the report says about one kind.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KindReport {
    /// Connections opened (handshake done).
    pub opened: u64,
    /// Of those, closed by the server.
    pub closed_by_server: u64,
    /// Connects or handshakes that failed.
    pub connect_errors: u64,
    /// Most open at once.
    pub peak_open: u64,
    /// Lifetime of the connections the server closed, seconds: min, median, max.
    pub lifetime_secs: [f64; 3],
    /// Statuses written before a close.
    pub replies: std::collections::BTreeMap<u16, u64>,
}

impl Kind {
    fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
        let now = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn closed(&self, by_server: bool, lived: Duration) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if by_server {
            self.closed_by_server.fetch_add(1, Ordering::Relaxed);
            let ms = u64::try_from(lived.as_millis()).unwrap_or(u64::MAX);
            self.lifetimes_ms.lock().push(ms);
        }
    }

    pub(crate) fn report(&self) -> KindReport {
        let mut l = self.lifetimes_ms.lock().clone();
        l.sort_unstable();
        let at = |q: usize| l.get(q).map_or(0.0, |ms| *ms as f64 / 1000.0);
        KindReport {
            opened: self.opened.load(Ordering::Relaxed),
            closed_by_server: self.closed_by_server.load(Ordering::Relaxed),
            connect_errors: self.connect_errors.load(Ordering::Relaxed),
            peak_open: self.peak.load(Ordering::Relaxed),
            lifetime_secs: [at(0), at(l.len() / 2), at(l.len().saturating_sub(1))],
            replies: self.replies.lock().clone(),
        }
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub(crate) struct Dial {
    pub(crate) addr: SocketAddr,
    pub(crate) h2: Arc<rustls::ClientConfig>,
    pub(crate) h1: Arc<rustls::ClientConfig>,
}

async fn tls(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let go = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
        TlsConnector::from(config).connect(name, tcp).await
    };
    tokio::time::timeout(CONNECT_TIMEOUT, go)
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

/// Holds idle connection number `i` open (HTTP/2 for even `i`, HTTP/1.1 for odd), reopening
/// it whenever the server closes it, until `stop`.
pub(crate) async fn idle(
    i: usize,
    dial: Dial,
    kind: Arc<Kind>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let stream = if i % 2 == 0 {
            tls(dial.addr, dial.h2.clone()).await
        } else {
            tls(dial.addr, dial.h1.clone()).await
        };
        let Ok(stream) = stream else {
            kind.connect_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(RETRY).await;
            continue;
        };
        kind.opened();
        let t0 = Instant::now();
        let mut stop2 = stop.clone();
        let by_server = tokio::select! {
            _ = hold(i % 2 == 0, stream) => true,
            _ = stop2.wait_for(|s| *s) => false,
        };
        kind.closed(by_server, t0.elapsed());
    }
}

/// Waits until the server closes an idle connection.
async fn hold(h2: bool, mut stream: TlsStream<TcpStream>) {
    if h2 {
        // The client side of h2 answers PINGs (the server's keepalive) and SETTINGS; the
        // connection future ends when the server sends GOAWAY and closes. `_send` must live:
        // dropping the last request handle closes the connection from this side.
        if let Ok((_send, conn)) = h2::client::handshake(stream).await {
            let _ = conn.await;
        }
    } else {
        let mut buf = [0u8; 1024];
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    }
}

/// The request head a slow connection dribbles: longer than any soak runs at a byte a second,
/// never finished.
fn slow_head() -> Vec<u8> {
    let mut h = b"PUT /soak/installations/slow?api-version=2020-06 HTTP/1.1\r\nhost: localhost\r\n\
content-type: application/json\r\nx-soak-padding: "
        .to_vec();
    h.resize(h.len() + 4096, b'a');
    h
}

/// Holds slow connection `i`: dribbles a request head one byte a second until the server
/// closes the connection, then reopens; until `stop`.
pub(crate) async fn slow(dial: Dial, kind: Arc<Kind>, stop: tokio::sync::watch::Receiver<bool>) {
    let head = slow_head();
    while !*stop.borrow() {
        let Ok(stream) = tls(dial.addr, dial.h1.clone()).await else {
            kind.connect_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(RETRY).await;
            continue;
        };
        kind.opened();
        let t0 = Instant::now();
        let mut stop2 = stop.clone();
        let by_server = tokio::select! {
            reply = dribble(stream, &head) => {
                if let Some(s) = reply {
                    *kind.replies.lock().entry(s).or_default() += 1;
                }
                true
            }
            _ = stop2.wait_for(|s| *s) => false,
        };
        kind.closed(by_server, t0.elapsed());
    }
}

/// Writes `head` a byte a second until the connection ends; returns the status line's code
/// if the server wrote one.
async fn dribble(stream: TlsStream<TcpStream>, head: &[u8]) -> Option<u16> {
    let (mut r, mut w) = tokio::io::split(stream);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let mut next = 0;
    loop {
        tokio::select! {
            n = r.read(&mut buf) => match n {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            },
            _ = tick.tick() => {
                let byte = head.get(next..next + 1).unwrap_or(b"a");
                next += 1;
                if w.write_all(byte).await.is_err() || w.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

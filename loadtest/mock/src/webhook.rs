//! A webhook receiver for tests of `tagcast::events`: loopback HTTPS (HTTP/1.1, keep-alive,
//! `Content-Length` bodies) with the generated CA of [`MockTls`], recording every request
//! (headers, body, whether its Standard Webhooks signature verifies) and answering from a
//! script settable at runtime: answer with a status, hang past the client's timeout, throttle
//! with `Retry-After`, or go away for good (410). Everything is bounded: requests recorded,
//! script length, connections, head and body sizes.
//!
//! ```no_run
//! # async fn f() -> Result<(), tagcast_mock::MockError> {
//! use tagcast_mock::{webhook::MockWebhook, MockTls};
//! let hook = MockWebhook::start(MockTls::generate()?, b"secret-of-at-least-24-bytes!").await?;
//! hook.fail_next(500, 3);
//! println!("POST to {} trusting {}", hook.url(), hook.ca_cert_pem().len());
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use parking_lot::Mutex;
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::error::MockError;
use super::tls::MockTls;

/// Requests recorded at most (later ones are answered but not kept).
const MAX_RECORDED: usize = 10_000;
/// Script steps at most.
const MAX_SCRIPT: usize = 10_000;
/// Connections served at once at most (more are closed at accept).
const MAX_CONNECTIONS: usize = 64;
/// Longest request head.
const MAX_HEAD: usize = 16 * 1024;
/// Largest body (a batch of 1000 small CloudEvents is a few hundred KiB).
const MAX_BODY: usize = 4 << 20;
/// Time allowed for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the receiver answers one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer with this status and an empty body.
    Answer(u16),
    /// Read the request, wait this long, then close the connection without answering.
    Hang(Duration),
    /// Answer `status` (429 or 503) with `Retry-After: secs`.
    RetryAfter {
        /// The status.
        status: u16,
        /// The `Retry-After` value (seconds).
        secs: u64,
    },
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct WebhookRequest {
    /// Request target.
    pub path: String,
    /// Headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// `webhook-signature` verifies for `webhook-id`, `webhook-timestamp` and the body.
    pub signature_ok: bool,
    /// The status answered (`None`: hung up without answering).
    pub status: Option<u16>,
}

impl WebhookRequest {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The CloudEvents of the body: the object (structured mode) or the array's elements.
    pub fn events(&self) -> Vec<serde_json::Value> {
        match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(serde_json::Value::Array(a)) => a,
            Ok(v @ serde_json::Value::Object(_)) => vec![v],
            _ => Vec::new(),
        }
    }

    /// Whether it was answered 2xx.
    pub fn acknowledged(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

struct Shared {
    secret: Vec<u8>,
    script: Mutex<VecDeque<Behaviour>>,
    gone: AtomicBool,
    requests: Mutex<Vec<WebhookRequest>>,
    changed: Notify,
}

/// A running receiver; stops when dropped.
pub struct MockWebhook {
    addr: SocketAddr,
    tls: Arc<MockTls>,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Drop for MockWebhook {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection.
        self.accept.abort();
    }
}

impl MockWebhook {
    /// Starts on an ephemeral loopback port; requests are verified against `secret` (key
    /// bytes).
    pub async fn start(tls: Arc<MockTls>, secret: &[u8]) -> Result<MockWebhook, MockError> {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), tls, secret).await
    }

    /// Starts on `addr` (e.g. the address of a receiver stopped earlier, to test restarts).
    pub async fn start_at(
        addr: SocketAddr,
        tls: Arc<MockTls>,
        secret: &[u8],
    ) -> Result<MockWebhook, MockError> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(tls.server_config(&[b"http/1.1"], None)?);
        let shared = Arc::new(Shared {
            secret: secret.to_vec(),
            script: Mutex::new(VecDeque::new()),
            gone: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            changed: Notify::new(),
        });
        let accept = tokio::spawn(accept_loop(listener, acceptor, shared.clone()));
        Ok(MockWebhook {
            addr,
            tls,
            shared,
            accept,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>/hooks/tagcast`.
    pub fn url(&self) -> String {
        format!("https://{}/hooks/tagcast", self.addr)
    }

    /// The CA certificate (PEM) a client must trust.
    pub fn ca_cert_pem(&self) -> &str {
        self.tls.ca_cert_pem()
    }

    /// Answers the next `times` requests per `b` (after the steps already scripted); later
    /// requests get 200.
    pub fn script(&self, b: Behaviour, times: usize) {
        let mut s = self.shared.script.lock();
        let room = MAX_SCRIPT.saturating_sub(s.len());
        s.extend(std::iter::repeat_n(b, times.min(room)));
    }

    /// The next `times` requests get `status`.
    pub fn fail_next(&self, status: u16, times: usize) {
        self.script(Behaviour::Answer(status), times);
    }

    /// The next `times` requests get no answer for `hold`, then the connection closes.
    pub fn hang_next(&self, times: usize, hold: Duration) {
        self.script(Behaviour::Hang(hold), times);
    }

    /// The next `times` requests get 429 with `Retry-After: secs`.
    pub fn throttle_next(&self, times: usize, secs: u64) {
        self.script(Behaviour::RetryAfter { status: 429, secs }, times);
    }

    /// Every request from now on gets 410 Gone.
    pub fn go_away(&self) {
        self.shared.gone.store(true, Ordering::Release);
    }

    /// Every request so far (at most 10,000).
    pub fn requests(&self) -> Vec<WebhookRequest> {
        self.shared.requests.lock().clone()
    }

    /// The CloudEvents of every acknowledged request, in arrival order (duplicates included).
    pub fn delivered(&self) -> Vec<serde_json::Value> {
        self.shared
            .requests
            .lock()
            .iter()
            .filter(|r| r.acknowledged())
            .flat_map(|r| r.events())
            .collect()
    }

    /// Waits until at least `n` events were acknowledged or `within` passed; returns
    /// [`MockWebhook::delivered`].
    pub async fn wait_delivered(&self, n: usize, within: Duration) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.shared.changed.notified();
            let d = self.delivered();
            if d.len() >= n {
                return d;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.delivered();
            }
        }
    }

    /// Waits until at least `n` requests arrived or `within` passed; returns them.
    pub async fn wait_requests(&self, n: usize, within: Duration) -> Vec<WebhookRequest> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.shared.changed.notified();
            let r = self.requests();
            if r.len() >= n {
                return r;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.requests();
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                if conns.len() >= MAX_CONNECTIONS {
                    continue;
                }
                conns.spawn(connection(tcp, acceptor.clone(), shared.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

struct Head {
    path: String,
    headers: Vec<(String, String)>,
    len: usize,
}

async fn read_head<R: tokio::io::AsyncBufRead + Unpin>(io: &mut R) -> Option<Head> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = String::new();
        let n = io.read_line(&mut line).await.ok()?;
        total += n;
        if n == 0 || total > MAX_HEAD {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            break;
        }
        lines.push(line);
    }
    let mut it = lines.into_iter();
    let request_line = it.next()?;
    let path = request_line.split(' ').nth(1)?.to_string();
    let mut headers = Vec::new();
    let mut len = 0;
    for l in it {
        let (name, value) = l.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
        if name == "content-length" {
            len = value.parse().ok()?;
        }
        headers.push((name, value));
    }
    (len <= MAX_BODY).then_some(Head { path, headers, len })
}

async fn connection(tcp: TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
        return;
    };
    let mut io = BufReader::new(tls);
    loop {
        let Some(head) = read_head(&mut io).await else {
            return;
        };
        let mut body = vec![0; head.len];
        if io.read_exact(&mut body).await.is_err() {
            return;
        }
        let mut req = WebhookRequest {
            path: head.path,
            signature_ok: false,
            headers: head.headers,
            body,
            status: None,
        };
        req.signature_ok = verify(&shared.secret, &req);
        let behaviour = if shared.gone.load(Ordering::Acquire) {
            Behaviour::Answer(410)
        } else {
            shared
                .script
                .lock()
                .pop_front()
                .unwrap_or(Behaviour::Answer(200))
        };
        let (status, extra) = match behaviour {
            Behaviour::Answer(s) => (s, String::new()),
            Behaviour::RetryAfter { status, secs } => (status, format!("retry-after: {secs}\r\n")),
            Behaviour::Hang(hold) => {
                record(&shared, req);
                tokio::time::sleep(hold).await;
                return;
            }
        };
        req.status = Some(status);
        record(&shared, req);
        let answer = format!("HTTP/1.1 {status} Mock\r\ncontent-length: 0\r\n{extra}\r\n");
        let w = io.get_mut();
        if w.write_all(answer.as_bytes()).await.is_err() || w.flush().await.is_err() {
            return;
        }
    }
}

fn verify(secret: &[u8], r: &WebhookRequest) -> bool {
    let (Some(id), Some(ts), Some(sig)) = (
        r.header("webhook-id"),
        r.header("webhook-timestamp")
            .and_then(|t| t.parse::<u64>().ok()),
        r.header("webhook-signature"),
    ) else {
        return false;
    };
    signature_verifies(secret, id, ts, &r.body, sig)
}

/// Standard Webhooks (<https://www.standardwebhooks.com>, "Signature scheme"): whether one of
/// the space-separated `v1,<base64>` entries of `header` is HMAC-SHA256 under `secret` of
/// `"{id}.{timestamp}.{body}"`. Written here rather than taken from the engine so the receiver
/// checks the engine's signer against the specification instead of against itself (and so this
/// crate does not depend on `tagcast`, whose tests use it). The tag comparison is constant-time
/// (`Mac::verify_slice`).
fn signature_verifies(secret: &[u8], id: &str, timestamp: u64, body: &[u8], header: &str) -> bool {
    header.split_ascii_whitespace().any(|entry| {
        let Some(tag) = entry
            .strip_prefix("v1,")
            .and_then(|b64| STANDARD.decode(b64).ok())
        else {
            return false;
        };
        // HMAC accepts keys of any length, so this only fails on a bug in `hmac`: treat it as
        // "does not verify" rather than panicking inside the receiver.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return false;
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&tag).is_ok()
    })
}

fn record(shared: &Shared, r: WebhookRequest) {
    {
        let mut reqs = shared.requests.lock();
        if reqs.len() < MAX_RECORDED {
            reqs.push(r);
        }
    }
    shared.changed.notify_waiters();
}

#[cfg(test)]
mod tests {
    use super::signature_verifies;

    /// The example of the Standard Webhooks reference libraries' tests
    /// (standard-webhooks/standard-webhooks, `libraries/*` test vectors): secret
    /// `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw` (the key is the base64-decoded part).
    const KEY_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: u64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn standard_webhooks_vector() {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD
            .decode(KEY_B64)
            .unwrap();
        assert!(signature_verifies(&key, ID, TS, BODY, SIG));
        // Key rotation: any one valid entry among several is enough.
        assert!(signature_verifies(
            &key,
            ID,
            TS,
            BODY,
            &format!("v1,AAAA {SIG}")
        ));
        assert!(!signature_verifies(&key, ID, TS + 1, BODY, SIG));
        assert!(!signature_verifies(&key, "msg_other", TS, BODY, SIG));
        assert!(!signature_verifies(&key, ID, TS, b"{}", SIG));
        assert!(!signature_verifies(&key[1..], ID, TS, BODY, SIG));
        assert!(!signature_verifies(&key, ID, TS, BODY, "v2,g0hM9SsE"));
        assert!(!signature_verifies(&key, ID, TS, BODY, ""));
    }
}

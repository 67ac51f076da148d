//! Webhook subscriptions: configuration, the retry rules (data, no IO), and the delivery task
//! (one per subscription).
//!
//! A subscription's outbox is the log itself plus a durable cursor (the last seq handled), so
//! nothing is copied per subscriber and an event appended is never lost for one, across
//! restarts too. Delivery of one subscription:
//!
//! ```text
//!            ┌──────────────── idle: wait for a new durable event, a redrive or stop ◄──┐
//!            ▼                                                                           │
//!   head batch = redrive queue (first max_batch) or next max_batch matching events after ─┘
//!            │ the cursor, up to the durable watermark            (none)
//!            ▼
//!   POST (fresh signature and timestamp, same webhook-id on every try) ◄──────────────┐
//!            │                                                                       │
//!      2xx ──┼──► advance cursor (or drop from the redrive queue), next head          │
//!      410 ──┼──► disable the subscription, stop (subscribe again to re-enable)       │
//!   other ───┴──► failures += 1 ── < max_attempts ──► sleep(backoff or Retry-After) ──┘
//!                        │ = max_attempts
//!                        ▼
//!                 head → dead letters, advance cursor, next head
//! ```
//!
//! The head batch is fixed at its first try and retried as is, so `webhook-id` is stable
//! (receivers deduplicate on it) and order within the subscription is preserved: no event is
//! sent before every earlier matching event was acknowledged or dead-lettered. Redriven
//! dead letters are sent before new events (they are older), in seq order.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use parking_lot::Mutex;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use super::signature::sign;
use super::store::Store;
use super::{cloudevents, EventKind, EventsError, LoggedEvent, WebhookSecret};
use crate::transport::http1::{path_of, Answer, Http1Conn};
use crate::transport::{Endpoint, TlsRoots};

/// Events in one request at most (a batch of small events stays well under a megabyte).
pub const MAX_BATCH: usize = 1000;
/// Events one look for the next batch reads at most before yielding (a subscription that
/// filters out most kinds must not hold a runtime thread for long).
const SCAN_LIMIT: usize = 4096;
/// Dead letters listed at most by [`crate::EventLog::dead_letters`].
pub const MAX_DEAD_LETTERS_LISTED: usize = 10_000;

/// A webhook subscription's settings. Only `https://` URLs are accepted (no plain HTTP, not
/// even on loopback: tests use the mock receiver's generated CA through `tls_roots`).
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Where to POST, `https://host[:port]/path`.
    pub url: String,
    /// Signing key (Standard Webhooks).
    pub secret: WebhookSecret,
    /// Only these kinds (`None`: all).
    pub kinds: Option<Vec<EventKind>>,
    /// Events per request: 1 sends each event alone (`application/cloudevents+json`), more
    /// sends JSON arrays of up to this many (`application/cloudevents-batch+json`). 1 to
    /// [`MAX_BATCH`].
    pub max_batch: usize,
    /// Tries of one batch before its events become dead letters (≥ 1). Default 10.
    pub max_attempts: u32,
    /// Backoff after the first failure. Default 1 s.
    pub initial_backoff: Duration,
    /// Longest backoff, and the cap on a `Retry-After`. Default 5 min.
    pub max_backoff: Duration,
    /// Time for connect, TLS, request and answer. Default 10 s.
    pub request_timeout: Duration,
    /// Certificate authorities trusted for the receiver. Default: the public roots.
    pub tls_roots: TlsRoots,
}

impl WebhookConfig {
    /// A subscription of every kind, one event per request, default timings.
    pub fn new(url: impl Into<String>, secret: WebhookSecret) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            secret,
            kinds: None,
            max_batch: 1,
            max_attempts: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            request_timeout: Duration::from_secs(10),
            tls_roots: TlsRoots::default(),
        }
    }

    /// Checks the settings; returns the endpoint and TLS configuration to use.
    pub(crate) fn check(&self) -> Result<(Endpoint, Arc<rustls::ClientConfig>), EventsError> {
        let bad = |m: String| Err(EventsError::InvalidConfig(m));
        let ep = Endpoint::from_url(&self.url).map_err(EventsError::InvalidConfig)?;
        if !(1..=MAX_BATCH).contains(&self.max_batch) {
            return bad(format!(
                "max_batch is {}; 1 to {MAX_BATCH} allowed",
                self.max_batch
            ));
        }
        if self.max_attempts == 0 {
            return bad("max_attempts is 0; at least 1 is required".into());
        }
        if self.initial_backoff > self.max_backoff {
            return bad(format!(
                "initial_backoff {:?} is above max_backoff {:?}",
                self.initial_backoff, self.max_backoff
            ));
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout is 0".into());
        }
        if self.kinds.as_ref().is_some_and(|k| k.is_empty()) {
            return bad("kinds is an empty list: the subscription would receive nothing".into());
        }
        let tls = self
            .tls_roots
            .client_config(&[b"http/1.1"], None)
            .map_err(|e| EventsError::InvalidConfig(e.to_string()))?;
        Ok((ep, tls))
    }
}

/// The stored form of a subscription. The secret is stored as is (the database holds it
/// like the registry holds device tokens: protect the directory).
#[derive(Serialize, Deserialize)]
pub(crate) struct PersistedSub {
    url: String,
    secret: String,
    kinds: Option<Vec<String>>,
    max_batch: usize,
    max_attempts: u32,
    initial_backoff_us: u64,
    max_backoff_us: u64,
    request_timeout_us: u64,
    webpki_roots: bool,
    extra_ca_der: Vec<String>,
    /// Why the subscription was disabled (410 Gone), when it was.
    #[serde(default)]
    pub(crate) disabled: Option<String>,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl PersistedSub {
    pub(crate) fn from_config(c: &WebhookConfig) -> PersistedSub {
        use base64::Engine as _;
        let (webpki_roots, extra) = c.tls_roots.to_parts();
        PersistedSub {
            url: c.url.clone(),
            secret: c.secret.to_whsec(),
            kinds: c
                .kinds
                .as_ref()
                .map(|ks| ks.iter().map(|k| k.as_str().to_string()).collect()),
            max_batch: c.max_batch,
            max_attempts: c.max_attempts,
            initial_backoff_us: us(c.initial_backoff),
            max_backoff_us: us(c.max_backoff),
            request_timeout_us: us(c.request_timeout),
            webpki_roots,
            extra_ca_der: extra
                .iter()
                .map(|d| base64::engine::general_purpose::STANDARD.encode(d))
                .collect(),
            disabled: None,
        }
    }

    pub(crate) fn to_config(&self) -> Result<WebhookConfig, EventsError> {
        use base64::Engine as _;
        let bad = |m: String| EventsError::InvalidConfig(format!("stored subscription: {m}"));
        let kinds = match &self.kinds {
            None => None,
            Some(ks) => Some(
                ks.iter()
                    .map(|k| EventKind::parse(k).ok_or_else(|| bad(format!("unknown kind {k:?}"))))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let extra = self
            .extra_ca_der
            .iter()
            .map(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| bad(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WebhookConfig {
            url: self.url.clone(),
            secret: WebhookSecret::parse(&self.secret)?,
            kinds,
            max_batch: self.max_batch,
            max_attempts: self.max_attempts,
            initial_backoff: Duration::from_micros(self.initial_backoff_us),
            max_backoff: Duration::from_micros(self.max_backoff_us),
            request_timeout: Duration::from_micros(self.request_timeout_us),
            tls_roots: TlsRoots::from_parts(self.webpki_roots, extra),
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // Strings, integers and booleans: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

// --- retry rules (no IO) -------------------------------------------------------------------

/// What an answer means for the head batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 2xx: acknowledged.
    Delivered,
    /// The receiver is gone for good (410): disable the subscription.
    Gone,
    /// Try again after `after` (the receiver's `Retry-After`) or the backoff.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
}

/// Classifies an HTTP answer. Everything but 2xx and 410 is retried: 408, 429 and 5xx are
/// transient by definition (RFC 9110 §15), and other 4xx are retried too because a receiver
/// that is being deployed or misconfigured answers them for a while; `max_attempts` bounds the
/// cost. `Retry-After` is read on 429 and 503 (RFC 9110 §10.2.3, RFC 6585 §4).
pub(crate) fn classify(status: u16, retry_after: Option<&str>, now: SystemTime) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Gone,
        _ => Verdict::Retry {
            after: if status == 429 || status == 503 {
                retry_after.and_then(|v| crate::time::parse_retry_after(v, now))
            } else {
                None
            },
            reason: format!("HTTP {status}"),
        },
    }
}

/// The wait after the `failures`-th failure in a row: the receiver's `Retry-After` capped at
/// `max`, else a uniformly random time between `initial` and a ceiling that starts at
/// `initial` and doubles per failure up to `max` (full jitter over that interval, AWS
/// architecture blog "Exponential Backoff and Jitter", with `initial` as the floor so a
/// receiver is never hammered).
pub(crate) fn backoff(
    initial: Duration,
    max: Duration,
    failures: u32,
    retry_after: Option<Duration>,
) -> Duration {
    if let Some(ra) = retry_after {
        return ra.min(max);
    }
    let ceiling = initial
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(max);
    if ceiling <= initial {
        return ceiling;
    }
    let lo = u64::try_from(initial.as_micros()).unwrap_or(u64::MAX);
    let hi = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rand::thread_rng().gen_range(lo..=hi))
}

// --- delivery task -------------------------------------------------------------------------

/// What [`crate::EventLog::subscriptions`] shows of a running subscription.
#[derive(Debug, Default)]
pub(crate) struct SubState {
    pub(crate) cursor: u64,
    pub(crate) failures: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) disabled: Option<String>,
    pub(crate) delivered: u64,
}

/// The batch being delivered.
struct Head {
    events: Vec<LoggedEvent>,
    from_redrive: bool,
    /// The cursor after acknowledging (log batches).
    scanned_to: u64,
    id: String,
}

impl Head {
    fn new(events: Vec<LoggedEvent>, from_redrive: bool, scanned_to: u64, batch: bool) -> Head {
        let id = if !batch && events.len() == 1 {
            events[0].event.id.clone()
        } else {
            let mut ids = String::new();
            for e in &events {
                ids.push_str(&e.event.id);
                ids.push('\n');
            }
            format!("batch_{:032x}", xxhash_rust::xxh3::xxh3_128(ids.as_bytes()))
        };
        Head {
            events,
            from_redrive,
            scanned_to,
            id,
        }
    }
}

enum Next {
    Batch(Head),
    /// Read part of the log, nothing matched yet: look again.
    Progress,
    Idle,
}

/// One subscription's delivery loop.
pub(crate) struct Delivery {
    pub(crate) name: String,
    pub(crate) store: Arc<Store>,
    pub(crate) config: WebhookConfig,
    pub(crate) endpoint: Endpoint,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) source: Arc<str>,
    pub(crate) state: Arc<Mutex<SubState>>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) durable: watch::Receiver<u64>,
}

impl Delivery {
    /// Runs until `stop` changes (or its sender is dropped), or the subscriber is gone.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut conn: Option<Http1Conn> = None;
        let mut head: Option<Head> = None;
        while !*stop.borrow() {
            let h = match head.take() {
                Some(h) => h,
                None => match self.next() {
                    Ok(Next::Batch(h)) => h,
                    Ok(Next::Progress) => {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Ok(Next::Idle) => {
                        tokio::select! {
                            r = self.durable.changed() => if r.is_err() { return },
                            _ = self.wake.notified() => {}
                            _ = stop.changed() => return,
                        }
                        continue;
                    }
                    Err(e) => {
                        self.failed_locally(&e.to_string());
                        if sleep_or_stop(self.config.max_backoff, &mut stop).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let answer = tokio::select! {
                a = self.send(&mut conn, &h) => a,
                _ = stop.changed() => return,
            };
            let verdict = match answer {
                Ok(a) => classify(
                    a.status,
                    a.headers
                        .get(http::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()),
                    SystemTime::now(),
                ),
                Err(reason) => {
                    conn = None;
                    Verdict::Retry {
                        after: None,
                        reason,
                    }
                }
            };
            match verdict {
                Verdict::Delivered => {
                    if let Err(e) = self.acknowledge(&h) {
                        // The batch will be sent again: at least once.
                        self.failed_locally(&e.to_string());
                        head = Some(h);
                        if sleep_or_stop(self.config.initial_backoff, &mut stop).await {
                            return;
                        }
                        continue;
                    }
                    let mut s = self.state.lock();
                    s.failures = 0;
                    s.last_error = None;
                    s.delivered += h.events.len() as u64;
                }
                Verdict::Gone => {
                    self.disable("the receiver answered 410 Gone");
                    return;
                }
                Verdict::Retry { after, reason } => {
                    let failures = {
                        let mut s = self.state.lock();
                        s.failures += 1;
                        s.last_error = Some(reason.clone());
                        s.failures
                    };
                    tracing::debug!(subscription = %self.name, %reason, failures, "webhook delivery failed");
                    if failures >= self.config.max_attempts {
                        tracing::warn!(subscription = %self.name, %reason, events = h.events.len(), "webhook batch dead-lettered");
                        if let Err(e) = self.dead_letter(&h, &reason, failures) {
                            self.failed_locally(&e.to_string());
                            head = Some(h);
                        } else {
                            self.state.lock().failures = 0;
                        }
                        continue;
                    }
                    head = Some(h);
                    let wait = backoff(
                        self.config.initial_backoff,
                        self.config.max_backoff,
                        failures,
                        after,
                    );
                    if sleep_or_stop(wait, &mut stop).await {
                        return;
                    }
                }
            }
        }
    }

    fn next(&mut self) -> Result<Next, EventsError> {
        let batch = self.config.max_batch > 1;
        let redrive = self.store.redrive_head(&self.name, self.config.max_batch)?;
        if !redrive.is_empty() {
            return Ok(Next::Batch(Head::new(redrive, true, 0, batch)));
        }
        let upto = *self.durable.borrow_and_update();
        let cursor = self.state.lock().cursor;
        let (events, scanned_to) = self.store.next_after(
            cursor,
            upto,
            self.config.kinds.as_deref(),
            self.config.max_batch,
            SCAN_LIMIT,
        )?;
        if !events.is_empty() {
            return Ok(Next::Batch(Head::new(events, false, scanned_to, batch)));
        }
        if scanned_to > cursor {
            self.store.set_cursor(&self.name, scanned_to)?;
            self.state.lock().cursor = scanned_to;
            if scanned_to < upto {
                return Ok(Next::Progress);
            }
        }
        Ok(Next::Idle)
    }

    fn acknowledge(&self, h: &Head) -> Result<(), EventsError> {
        if h.from_redrive {
            let seqs: Vec<u64> = h.events.iter().map(|e| e.seq).collect();
            self.store.redrive_done(&self.name, &seqs)
        } else {
            self.store.set_cursor(&self.name, h.scanned_to)?;
            self.state.lock().cursor = h.scanned_to;
            Ok(())
        }
    }

    fn dead_letter(&self, h: &Head, reason: &str, attempts: u32) -> Result<(), EventsError> {
        self.store
            .add_dead(&self.name, &h.events, reason, attempts)?;
        self.acknowledge(h)
    }

    fn failed_locally(&self, message: &str) {
        tracing::warn!(subscription = %self.name, message, "event log storage failed");
        self.state.lock().last_error = Some(message.to_string());
    }

    fn disable(&self, reason: &str) {
        tracing::warn!(subscription = %self.name, reason, "webhook subscription disabled");
        self.state.lock().disabled = Some(reason.to_string());
        let mut p = PersistedSub::from_config(&self.config);
        p.disabled = Some(reason.to_string());
        if let Err(e) = self.store.put_sub(&self.name, &p.encode()) {
            self.failed_locally(&e.to_string());
        }
    }

    /// One try: connect if needed, POST, read the answer, all within `request_timeout`.
    async fn send(&self, conn: &mut Option<Http1Conn>, h: &Head) -> Result<Answer, String> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let refs: Vec<&super::Event> = h.events.iter().map(|e| &e.event).collect();
        let (body, content_type) =
            cloudevents::body(&refs, &self.source, self.config.max_batch > 1);
        let signature = sign(self.config.secret.as_bytes(), &h.id, timestamp, &body);
        let req = Request::post(path_of(&self.config.url))
            .header(http::header::HOST, &*self.endpoint.authority)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(http::header::USER_AGENT, "tagcast")
            .header("webhook-id", &h.id)
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", signature)
            .body(Bytes::from(body))
            .map_err(|e| format!("building the request: {e}"))?;
        let attempt = async {
            if conn.as_ref().is_none_or(|c| !c.is_open()) {
                *conn = None;
                *conn = Some(
                    Http1Conn::connect(&self.endpoint, self.tls.clone())
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            match conn.as_mut() {
                Some(c) => c.send(req).await.map_err(|f| f.message),
                None => Err("no connection".to_string()),
            }
        };
        let result = tokio::time::timeout(self.config.request_timeout, attempt).await;
        match result {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer within {:?}",
                self.config.request_timeout
            )),
        }
    }
}

/// Sleeps `d`; true when `stop` fired first.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.changed() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let now = SystemTime::now();
        assert_eq!(classify(200, None, now), Verdict::Delivered);
        assert_eq!(classify(204, None, now), Verdict::Delivered);
        assert_eq!(classify(410, None, now), Verdict::Gone);
        for s in [301, 400, 401, 404, 408, 413, 500, 502] {
            assert!(
                matches!(
                    classify(s, Some("3"), now),
                    Verdict::Retry { after: None, .. }
                ),
                "{s}"
            );
        }
        assert_eq!(
            classify(429, Some("7"), now),
            Verdict::Retry {
                after: Some(Duration::from_secs(7)),
                reason: "HTTP 429".into()
            }
        );
        assert!(matches!(
            classify(503, Some("x"), now),
            Verdict::Retry { after: None, .. }
        ));
        assert!(matches!(
            classify(503, Some("Sun, 06 Nov 1994 08:49:37 GMT"), now),
            Verdict::Retry { after: Some(d), .. } if d.is_zero()
        ));
    }

    #[test]
    fn backoff_bounds() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(backoff(i, m, 1, None), i);
        for n in 1..40 {
            let d = backoff(i, m, n, None);
            let ceiling = i.saturating_mul(1 << (n - 1).min(20)).min(m);
            assert!(d >= i && d <= ceiling, "{n}: {d:?}");
        }
        assert_eq!(backoff(i, m, 3, Some(Duration::from_secs(60))), m);
        assert_eq!(
            backoff(i, m, 3, Some(Duration::from_millis(5))),
            Duration::from_millis(5)
        );
    }

    #[test]
    fn config_checks() {
        let s = WebhookSecret::generate();
        assert!(WebhookConfig::new("https://127.0.0.1:9/h", s.clone())
            .check()
            .is_ok());
        assert!(WebhookConfig::new("http://127.0.0.1:9/h", s.clone())
            .check()
            .is_err());
        let mut c = WebhookConfig::new("https://h/", s.clone());
        c.max_batch = 0;
        assert!(c.check().is_err());
        c.max_batch = 10;
        c.kinds = Some(vec![]);
        assert!(c.check().is_err());
        c.kinds = Some(vec![EventKind::ScheduleFired]);
        c.initial_backoff = Duration::from_secs(600);
        assert!(c.check().is_err());
    }

    #[test]
    fn persisted_round_trip() {
        let mut c = WebhookConfig::new("https://h:1/x", WebhookSecret::generate());
        c.kinds = Some(vec![EventKind::InstallationPruned]);
        c.max_batch = 7;
        c.initial_backoff = Duration::from_micros(1500);
        let p = PersistedSub::from_config(&c);
        let back: PersistedSub = serde_json::from_slice(&p.encode()).unwrap();
        let b = back.to_config().unwrap();
        assert_eq!(
            (b.url, b.secret, b.kinds, b.max_batch),
            (c.url, c.secret, c.kinds, c.max_batch)
        );
        assert_eq!(b.initial_backoff, c.initial_backoff);
        assert_eq!(b.tls_roots.to_parts(), c.tls_roots.to_parts());
    }
}

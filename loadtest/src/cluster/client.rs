//! The harness's REST client: a few HTTP/2 connections per node, and what it does through
//! them: register the devices (spread over the nodes: any node routes a write to its
//! partition's owner), read them back, start the broadcast, read its outcome and the nodes'
//! `/metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::Method;
use tagcast::nh::sas::token;

use super::nodes::{HUB, KEY};
use crate::mock::testkit::{H2Client, TestResponse};

/// A request without an answer in this long counts as a transport error (the longest wait on
/// the server is a routed write's deadline: 2 × (lease + margin) + 5 s, 13 s by default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections per node.
const CONNECTIONS: usize = 2;
/// Attempts of one registration or read (503 and transport errors are retried).
const ATTEMPTS: usize = 5;

/// The device token of device `i`: 64 hex digits, distinct per device.
pub(crate) fn device_token(i: u64) -> String {
    format!("{:016x}{:048x}", i, i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The installation id of device `i`.
pub(crate) fn device_id(i: u64) -> String {
    format!("dev-{i}")
}

/// HTTP/2 connections to one node.
pub(crate) struct Api {
    addr: SocketAddr,
    ca_pem: String,
    auth: String,
    slots: Vec<tokio::sync::Mutex<Option<H2Client>>>,
    next: AtomicUsize,
}

impl Api {
    pub(crate) fn new(addr: SocketAddr, ca_pem: &str) -> Api {
        let se = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 86_400;
        Api {
            addr,
            ca_pem: ca_pem.to_owned(),
            auth: token(
                &format!("https://localhost:{}/", addr.port()),
                "full",
                KEY,
                se,
            ),
            slots: (0..CONNECTIONS)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    async fn client(&self, i: usize) -> Option<H2Client> {
        let mut slot = self.slots[i].lock().await;
        if slot.is_none() {
            let c =
                tokio::time::timeout(CONNECT_TIMEOUT, H2Client::connect(self.addr, &self.ca_pem));
            *slot = c.await.ok()?.ok();
        }
        slot.clone()
    }

    /// `method path` as is (no hub, no key); `None` on a transport error or timeout (the
    /// connection is then replaced).
    pub(crate) async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Option<TestResponse> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let sent = async {
            let c = self.client(i).await?;
            c.send(method, path, headers, body).await.ok()
        };
        match tokio::time::timeout(timeout, sent).await {
            Ok(Some(r)) => Some(r),
            _ => {
                *self.slots[i].lock().await = None;
                None
            }
        }
    }

    /// `method /<hub><path>?api-version=…` with the hub's key.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Option<TestResponse> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let uri = format!("/{HUB}{path}{sep}api-version=2020-06");
        let mut h: Vec<(&str, &str)> = vec![("authorization", self.auth.as_str())];
        h.extend_from_slice(headers);
        self.raw(method, &uri, &h, body, REQUEST_TIMEOUT).await
    }

    /// The node's `/metrics` page (served on a loopback API listener without a key), or
    /// `None` without an answer within `within`.
    pub(crate) async fn metrics(&self, within: Duration) -> Option<String> {
        let r = self
            .raw(Method::GET, "/metrics", &[], Vec::new(), within)
            .await?;
        (r.status == 200).then(|| String::from_utf8_lossy(&r.body).into_owned())
    }
}

/// What the registration phase did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Registration {
    /// PUTs answered 2xx.
    pub acknowledged: u64,
    /// PUTs refused (4xx): a harness or server bug.
    pub refused: u64,
    /// Devices never acknowledged after every attempt (503, transport errors).
    pub unacknowledged: u64,
    /// Attempts retried after a 503 or a transport error.
    pub retries: u64,
    pub secs: f64,
    /// The first refusals verbatim.
    pub examples: Vec<String>,
}

/// PUTs devices `0..devices` with `concurrency` requests in flight per node, device `i`
/// through node `i mod nodes`; returns which were acknowledged.
pub(crate) async fn register(
    apis: &[Arc<Api>],
    devices: u64,
    concurrency: usize,
) -> (Vec<bool>, Registration) {
    let t0 = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) * apis.len() {
        let (apis, next) = (apis.to_vec(), next.clone());
        set.spawn(async move {
            let mut acked = Vec::new();
            let mut r = Registration::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= devices {
                    break;
                }
                if i > 0 && i % 50_000 == 0 {
                    eprintln!("  registering: {i} of {devices}");
                }
                let api = &apis[(i % apis.len() as u64) as usize];
                let id = device_id(i);
                let body = serde_json::json!({
                    "installationId": id, "platform": "apns",
                    "pushChannel": device_token(i), "tags": ["all"],
                })
                .to_string()
                .into_bytes();
                let path = format!("/installations/{id}");
                let h = [("content-type", "application/json")];
                let (mut ok, mut refused) = (false, false);
                for attempt in 0..ATTEMPTS {
                    if attempt > 0 {
                        r.retries += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    match api.call(Method::PUT, &path, &h, body.clone()).await {
                        Some(a) if (200..300).contains(&a.status) => {
                            ok = true;
                            break;
                        }
                        Some(a) if a.status < 500 => {
                            refused = true;
                            r.refused += 1;
                            if r.examples.len() < 5 {
                                let b = String::from_utf8_lossy(&a.body);
                                r.examples.push(format!(
                                    "PUT {id}: {} {}",
                                    a.status,
                                    clip(&b, 200)
                                ));
                            }
                            break;
                        }
                        _ => {}
                    }
                }
                if ok {
                    acked.push(i);
                } else if !refused {
                    r.unacknowledged += 1;
                }
            }
            (acked, r)
        });
    }
    let mut acked = vec![false; devices as usize];
    let mut total = Registration::default();
    while let Some(done) = set.join_next().await {
        let Ok((ids, r)) = done else { continue };
        for i in ids {
            acked[i as usize] = true;
        }
        total.acknowledged += r.acknowledged;
        total.refused += r.refused;
        total.unacknowledged += r.unacknowledged;
        total.retries += r.retries;
        total.examples.extend(r.examples);
    }
    total.acknowledged = acked.iter().filter(|a| **a).count() as u64;
    total.examples.truncate(5);
    total.secs = t0.elapsed().as_secs_f64();
    (acked, total)
}

/// What reading back the acknowledged devices found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReadBack {
    pub checked: u64,
    /// Acknowledged devices answered 404 or with another device token.
    pub lost: u64,
    /// Acknowledged devices no node answered for (503, transport errors) after every
    /// attempt: counted as lost too (not shown readable).
    pub unanswered: u64,
    pub secs: f64,
    pub examples: Vec<String>,
}

/// GETs every acknowledged device, spread over `apis` (another node on each retry).
pub(crate) async fn read_back(apis: &[Arc<Api>], acked: &[bool], concurrency: usize) -> ReadBack {
    let t0 = Instant::now();
    let ids: Arc<Vec<u64>> = Arc::new(
        acked
            .iter()
            .enumerate()
            .filter(|(_, a)| **a)
            .map(|(i, _)| i as u64)
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) * apis.len() {
        let (apis, next, ids) = (apis.to_vec(), next.clone(), ids.clone());
        set.spawn(async move {
            let mut r = ReadBack::default();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = ids.get(k) else { break };
                r.checked += 1;
                let (id, want) = (device_id(i), device_token(i));
                let path = format!("/installations/{id}");
                let mut verdict = None;
                for attempt in 0..ATTEMPTS {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    let api = &apis[(k + attempt) % apis.len()];
                    match api.call(Method::GET, &path, &[], Vec::new()).await {
                        Some(a) if a.status == 200 => {
                            let body = String::from_utf8_lossy(&a.body);
                            verdict = Some(if body.contains(&want) {
                                Ok(())
                            } else {
                                Err(format!("GET {id}: another token: {}", clip(&body, 200)))
                            });
                            break;
                        }
                        Some(a) if a.status == 404 => {
                            verdict = Some(Err(format!("GET {id}: 404")));
                            break;
                        }
                        _ => {}
                    }
                }
                match verdict {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        r.lost += 1;
                        if r.examples.len() < 5 {
                            r.examples.push(e);
                        }
                    }
                    None => {
                        r.unanswered += 1;
                        if r.examples.len() < 5 {
                            r.examples.push(format!("GET {id}: no answer"));
                        }
                    }
                }
            }
            r
        });
    }
    let mut total = ReadBack::default();
    while let Some(done) = set.join_next().await {
        let Ok(r) = done else { continue };
        total.checked += r.checked;
        total.lost += r.lost;
        total.unanswered += r.unanswered;
        total.examples.extend(r.examples);
    }
    total.examples.truncate(5);
    total.secs = t0.elapsed().as_secs_f64();
    total
}

/// The broadcast: a native APNs alert to every device; its notification id.
pub(crate) async fn broadcast(api: &Api) -> Result<String, String> {
    let h = [
        ("ServiceBusNotification-Format", "apple"),
        ("content-type", "application/json;charset=utf-8"),
        ("apns-priority", "10"),
    ];
    let body = br#"{"aps":{"alert":"cluster load harness"}}"#.to_vec();
    let a = api
        .call(Method::POST, "/messages", &h, body)
        .await
        .ok_or("POST /messages: no answer")?;
    if a.status != 201 {
        return Err(format!(
            "POST /messages: {} {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        ));
    }
    let loc = a.header("location");
    loc.split('?')
        .next()
        .and_then(|p| p.rsplit('/').next())
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| format!("POST /messages: no id in Location {loc:?}"))
}

/// A cluster send's outcome (`ClusterOutcomeCounts`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    pub state: String,
    pub targeted: u64,
    pub success: u64,
    pub failed: u64,
    pub possible_duplicates: u64,
    pub possibly_missed: u64,
    pub partitions_reported: u64,
    pub partitions_finished: u64,
}

impl Outcome {
    /// From `GET /messages/{id}`'s `NotificationDetails`.
    pub(crate) fn parse(xml: &str) -> Outcome {
        let count = |name: &str| -> u64 {
            xml.find(&format!("<Name>{name}</Name>"))
                .and_then(|at| between(&xml[at..], "<Count>", "</Count>"))
                .and_then(|c| c.trim().parse().ok())
                .unwrap_or(0)
        };
        Outcome {
            state: between(xml, "<State>", "</State>")
                .unwrap_or_default()
                .to_owned(),
            targeted: count("Targeted"),
            success: count("Success"),
            failed: count("Failed"),
            possible_duplicates: count("PossibleDuplicates"),
            possibly_missed: count("PossiblyMissed"),
            partitions_reported: count("PartitionsReported"),
            partitions_finished: count("PartitionsFinished"),
        }
    }

    /// Every partition finished the send.
    pub fn completed(&self) -> bool {
        self.state == "Completed"
    }
}

/// The outcome of send `id` as `api` reads it; `None` before any partition reported or
/// without an answer.
pub(crate) async fn outcome(api: &Api, id: &str) -> Option<Outcome> {
    let a = api
        .call(Method::GET, &format!("/messages/{id}"), &[], Vec::new())
        .await?;
    (a.status == 200).then(|| Outcome::parse(&String::from_utf8_lossy(&a.body)))
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let from = s.find(open)? + open.len();
    let len = s[from..].find(close)?;
    Some(&s[from..from + len])
}

fn clip(s: &str, n: usize) -> &str {
    crate::soak::clip(s, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_counts_from_notification_details() {
        let xml = "<NotificationDetails><NotificationId>x</NotificationId>\
                   <State>Completed</State><ClusterOutcomeCounts>\
                   <Outcome><Name>Targeted</Name><Count>10</Count></Outcome>\
                   <Outcome><Name>Success</Name><Count>9</Count></Outcome>\
                   <Outcome><Name>Failed</Name><Count>1</Count></Outcome>\
                   <Outcome><Name>PossibleDuplicates</Name><Count>4</Count></Outcome>\
                   <Outcome><Name>PossiblyMissed</Name><Count>0</Count></Outcome>\
                   <Outcome><Name>PartitionsReported</Name><Count>16</Count></Outcome>\
                   <Outcome><Name>PartitionsFinished</Name><Count>16</Count></Outcome>\
                   </ClusterOutcomeCounts></NotificationDetails>";
        let o = Outcome::parse(xml);
        assert!(o.completed());
        assert_eq!(
            (o.targeted, o.success, o.failed, o.possible_duplicates),
            (10, 9, 1, 4)
        );
        assert_eq!((o.partitions_reported, o.partitions_finished), (16, 16));
    }

    #[test]
    fn device_tokens_are_64_hex_digits_and_distinct() {
        assert_eq!(device_token(199_999).len(), 64);
        assert!(device_token(7).bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(device_token(1), device_token(2));
    }
}

//! Accounting shared by every mock: deliveries per handle (duplicates visible, and whether a
//! duplicate repeated the message id of an earlier ambiguous request), answers per
//! status/reason, connections, resets, GOAWAYs and peak concurrency.
//!
//! Deliveries live in 16 mutex-guarded shards chosen by the handle's hash; a request takes one
//! shard lock once, for a few hash operations. Counters that change per stream are atomics.
//! Each delivery also keeps the instant it was recorded (one monotonic clock read, stored as
//! nanoseconds since the recorder started), so a harness that holds the client and the mock
//! can time a push end to end ([`Delivery::received_at`], `MockServer::first_received`).

use std::collections::{BTreeMap, BTreeSet, HashMap as StdHashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
// foldhash rather than SipHash: the map is hit once per accepted request.
use hashbrown::{HashMap, HashSet};
use parking_lot::Mutex;
use serde::Serialize;

/// One accepted delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The handle: APNs device token, FCM registration token (or `topic:`/`condition:`), WNS
    /// channel id, Web Push subscription id.
    pub handle: String,
    /// `apns-id`, FCM message id, WNS `X-WNS-Msg-ID`, Web Push message id.
    pub message_id: String,
    /// The client-supplied idempotency id if any (`apns-id` header; `None` elsewhere).
    pub client_message_id: Option<String>,
    /// Recorded, then the connection was reset before answering.
    pub ambiguous: bool,
    /// A resend: an earlier *ambiguous* delivery for this handle carried the same
    /// client-supplied id.
    pub repeats_ambiguous: bool,
    /// Order of acceptance across the mock (0-based).
    pub seq: u64,
    /// When the mock recorded it (after the request's checks, before its answer).
    pub received_at: Instant,
    /// The payload as the device would see it (Web Push: the decrypted plaintext).
    pub payload: Bytes,
}

/// A message id as stored: UUIDs (every APNs id) as 16 bytes, anything else as text.
#[derive(Clone, Debug)]
enum StoredId {
    Uuid(u128),
    Text(Box<str>),
}

impl StoredId {
    fn new(id: &str) -> Self {
        match uuid::Uuid::try_parse(id) {
            // Only the canonical lowercase form round-trips through `Uuid`.
            Ok(u) if id.len() == 36 && !id.bytes().any(|c| c.is_ascii_uppercase()) => {
                StoredId::Uuid(u.as_u128())
            }
            _ => StoredId::Text(id.into()),
        }
    }

    fn to_text(&self) -> String {
        match self {
            StoredId::Uuid(u) => uuid::Uuid::from_u128(*u).hyphenated().to_string(),
            StoredId::Text(t) => t.to_string(),
        }
    }

    fn matches(&self, id: &str) -> bool {
        match self {
            StoredId::Uuid(_) => self.to_text() == id,
            StoredId::Text(t) => &**t == id,
        }
    }
}

/// A delivery as stored, compact because a load test records millions: the handle is the map
/// key, the client id is a flag on the message id, the payload shared with the shard's previous
/// delivery when the bytes are the same (a broadcast's payload is stored once per shard, not
/// once per device: recording a million copies cost the mock a tenth of its CPU in first-touch
/// page faults).
#[derive(Clone, Debug)]
struct Stored {
    id: StoredId,
    payload: Arc<[u8]>,
    seq: u64,
    /// Nanoseconds from the recorder's epoch to the recording (8 bytes, not an `Instant`'s 16).
    at_nanos: u64,
    client_supplied_id: bool,
    ambiguous: bool,
    repeats_ambiguous: bool,
}

impl Stored {
    fn to_delivery(&self, handle: &str, epoch: Instant) -> Delivery {
        let message_id = self.id.to_text();
        Delivery {
            received_at: epoch + Duration::from_nanos(self.at_nanos),
            handle: handle.to_owned(),
            client_message_id: self.client_supplied_id.then(|| message_id.clone()),
            message_id,
            ambiguous: self.ambiguous,
            repeats_ambiguous: self.repeats_ambiguous,
            seq: self.seq,
            payload: Bytes::copy_from_slice(&self.payload),
        }
    }
}

/// Shards of the delivery store: a handle lives in exactly one, chosen by its hash, so two
/// worker threads rarely wait on each other (one global lock collapsed throughput whenever
/// its holder was preempted; see docs/benchmarks.md).
const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    responses: BTreeMap<String, u64>,
    deliveries: HashMap<String, Vec<Stored>>,
    /// Handles with an ambiguous delivery (rare: only the reset fault makes them).
    ambiguous_handles: HashSet<String>,
    duplicates: u64,
    repeats_ambiguous: u64,
    /// The payload last stored in this shard, shared by the next delivery with the same bytes.
    last_payload: Option<Arc<[u8]>>,
}

impl Shard {
    /// `payload` as stored: the previous delivery's allocation when the bytes are the same.
    fn share(&mut self, payload: &[u8]) -> Arc<[u8]> {
        match &self.last_payload {
            Some(p) if **p == *payload => p.clone(),
            _ => {
                let p: Arc<[u8]> = payload.into();
                self.last_payload = Some(p.clone());
                p
            }
        }
    }
}

/// The instant a recorder was created: the origin of its deliveries' timestamps.
struct Epoch(Instant);

impl Default for Epoch {
    fn default() -> Self {
        Epoch(Instant::now())
    }
}

/// The live recorder; see [`StatsSnapshot`] for the meaning of each number.
#[derive(Default)]
pub(crate) struct Recorder {
    epoch: Epoch,
    shards: [Mutex<Shard>; SHARDS],
    hasher: hashbrown::DefaultHashBuilder,
    seq: AtomicU64,
    /// Round robin for answers that have no handle.
    next_shard: AtomicU64,
    pub(crate) connections_opened: AtomicU64,
    pub(crate) streams_accepted: AtomicU64,
    pub(crate) streams_refused: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) peak_concurrent_streams: AtomicU64,
    pub(crate) peak_streams_per_connection: AtomicU64,
    pub(crate) resets_unprocessed: AtomicU64,
    pub(crate) requests_dropped_by_reset: AtomicU64,
    pub(crate) resets_after_process: AtomicU64,
    pub(crate) goaways_sent: AtomicU64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

/// Counters of one mock at one instant (also served as JSON at `GET /__mock/stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// TLS connections that completed the handshake.
    pub connections_opened: u64,
    /// Request streams (or HTTP/1.1 requests) accepted for processing, admin paths excluded.
    pub streams_accepted: u64,
    /// Streams refused with RST_STREAM(REFUSED_STREAM) for exceeding the advertised limit
    /// (APNs warm-up: one stream until the first success).
    pub streams_refused: u64,
    /// Highest number of request streams in flight at once, over all connections.
    pub peak_concurrent_streams: u64,
    /// Highest number of request streams in flight at once on one connection.
    pub peak_streams_per_connection: u64,
    /// Answers by `"<status>"` or `"<status> <reason>"` (e.g. `"410 Unregistered"`).
    pub responses: BTreeMap<String, u64>,
    /// Deliveries recorded (ambiguous ones included).
    pub deliveries: u64,
    /// Distinct handles with at least one delivery.
    pub unique_handles: u64,
    /// Deliveries to a handle that already had one.
    pub duplicate_deliveries: u64,
    /// Duplicates that carried the client id of an earlier ambiguous delivery.
    pub duplicates_of_ambiguous: u64,
    /// Resets of the "drop unprocessed" kind.
    pub resets_unprocessed: u64,
    /// Requests that were in flight on a connection dropped by such a reset and not processed.
    pub requests_dropped_by_reset: u64,
    /// Resets of the "process, then reset before answering" kind (= ambiguous deliveries).
    pub resets_after_process: u64,
    /// GOAWAY frames initiated by the fault knob.
    pub goaways_sent: u64,
}

impl Recorder {
    fn shard_of(&self, handle: &str) -> &Mutex<Shard> {
        use std::hash::BuildHasher as _;
        &self.shards[(self.hasher.hash_one(handle) % SHARDS as u64) as usize]
    }

    pub(crate) fn response(&self, key: &str) {
        let i = self.next_shard.fetch_add(1, Ordering::Relaxed) % SHARDS as u64;
        bump(&mut self.shards[i as usize].lock().responses, key);
    }

    /// Records a delivery and its answer key; returns the sequence number.
    pub(crate) fn deliver(
        &self,
        handle: String,
        message_id: &str,
        client_supplied_id: bool,
        ambiguous: bool,
        payload: &[u8],
        response_key: Option<&str>,
    ) -> u64 {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = StoredId::new(message_id);
        let at_nanos = self.epoch.0.elapsed().as_nanos() as u64;
        let mut guard = self.shard_of(&handle).lock();
        let shard = &mut *guard;
        let mut stored = Stored {
            id,
            payload: shard.share(payload),
            seq,
            at_nanos,
            client_supplied_id,
            ambiguous,
            repeats_ambiguous: false,
        };
        if let Some(key) = response_key {
            bump(&mut shard.responses, key);
        }
        if client_supplied_id && !shard.ambiguous_handles.is_empty() {
            if let Some(earlier) = shard.deliveries.get(&handle) {
                stored.repeats_ambiguous = shard.ambiguous_handles.contains(&handle)
                    && earlier
                        .iter()
                        .any(|d| d.ambiguous && d.client_supplied_id && d.id.matches(message_id));
            }
        }
        if ambiguous && client_supplied_id {
            shard.ambiguous_handles.insert(handle.clone());
        }
        // Most handles get one delivery: room for exactly one (a default `Vec` takes four).
        let list = shard
            .deliveries
            .entry(handle)
            .or_insert_with(|| Vec::with_capacity(1));
        if !list.is_empty() {
            shard.duplicates += 1;
            if stored.repeats_ambiguous {
                shard.repeats_ambiguous += 1;
            }
        }
        list.push(stored);
        seq
    }

    pub(crate) fn enter_stream(&self) -> u64 {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_concurrent_streams
            .fetch_max(now, Ordering::Relaxed);
        now
    }

    pub(crate) fn leave_stream(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut snap = StatsSnapshot {
            connections_opened: load(&self.connections_opened),
            streams_accepted: load(&self.streams_accepted),
            streams_refused: load(&self.streams_refused),
            peak_concurrent_streams: load(&self.peak_concurrent_streams),
            peak_streams_per_connection: load(&self.peak_streams_per_connection),
            resets_unprocessed: load(&self.resets_unprocessed),
            requests_dropped_by_reset: load(&self.requests_dropped_by_reset),
            resets_after_process: load(&self.resets_after_process),
            goaways_sent: load(&self.goaways_sent),
            ..StatsSnapshot::default()
        };
        for shard in &self.shards {
            let shard = shard.lock();
            for (k, v) in &shard.responses {
                *snap.responses.entry(k.clone()).or_default() += v;
            }
            snap.deliveries += shard
                .deliveries
                .values()
                .map(|v| v.len() as u64)
                .sum::<u64>();
            snap.unique_handles += shard.deliveries.len() as u64;
            snap.duplicate_deliveries += shard.duplicates;
            snap.duplicates_of_ambiguous += shard.repeats_ambiguous;
        }
        snap
    }

    pub(crate) fn delivered_handles(&self) -> BTreeSet<String> {
        self.shards
            .iter()
            .flat_map(|s| s.lock().deliveries.keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    pub(crate) fn deliveries_for(&self, handle: &str) -> Vec<Delivery> {
        self.shard_of(handle)
            .lock()
            .deliveries
            .get(handle)
            .map(|v| {
                v.iter()
                    .map(|d| d.to_delivery(handle, self.epoch.0))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn all_deliveries(&self) -> Vec<Delivery> {
        let mut all: Vec<Delivery> = Vec::new();
        let epoch = self.epoch.0;
        for shard in &self.shards {
            let shard = shard.lock();
            all.extend(
                shard
                    .deliveries
                    .iter()
                    .flat_map(|(h, v)| v.iter().map(move |d| d.to_delivery(h, epoch))),
            );
        }
        all.sort_by_key(|d| d.seq);
        all
    }

    /// When each handle's first delivery was recorded (no payloads copied).
    pub(crate) fn first_received(&self) -> StdHashMap<String, Instant> {
        let epoch = self.epoch.0;
        let mut out = StdHashMap::new();
        for shard in &self.shards {
            let shard = shard.lock();
            out.extend(shard.deliveries.iter().filter_map(|(h, v)| {
                v.first()
                    .map(|d| (h.clone(), epoch + Duration::from_nanos(d.at_nanos)))
            }));
        }
        out
    }

    /// JSON of the delivered-handle set with per-handle counts (admin path `/__mock/delivered`).
    pub(crate) fn delivered_json(&self) -> Vec<u8> {
        let mut map: BTreeMap<String, usize> = BTreeMap::new();
        for shard in &self.shards {
            let shard = shard.lock();
            map.extend(shard.deliveries.iter().map(|(k, v)| (k.clone(), v.len())));
        }
        // Serializing a map of strings to integers cannot fail.
        serde_json::to_vec(&map).unwrap_or_default()
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_with_the_same_payload_share_one_allocation_and_read_back_whole() {
        let r = Recorder::default();
        // Two handles in one shard, then a third delivery with other bytes.
        let a = "a".to_string();
        let b = (0..)
            .map(|i| format!("b{i}"))
            .find(|h| std::ptr::eq(r.shard_of(h), r.shard_of(&a)))
            .unwrap();
        r.deliver(a.clone(), "1", false, false, b"same", None);
        r.deliver(b.clone(), "2", false, false, b"same", None);
        r.deliver(b.clone(), "3", false, false, b"other", None);
        let shard = r.shard_of(&a).lock();
        let pa = &shard.deliveries[&a][0].payload;
        let pb = &shard.deliveries[&b];
        assert!(Arc::ptr_eq(pa, &pb[0].payload), "equal bytes share");
        assert!(!Arc::ptr_eq(pa, &pb[1].payload));
        assert_eq!(shard.deliveries[&a].capacity(), 1);
        drop(shard);
        let got: Vec<(String, Bytes)> = r
            .all_deliveries()
            .into_iter()
            .map(|d| (d.handle, d.payload))
            .collect();
        assert_eq!(
            got,
            vec![
                (a, Bytes::from_static(b"same")),
                (b.clone(), Bytes::from_static(b"same")),
                (b, Bytes::from_static(b"other")),
            ]
        );
        assert_eq!(r.snapshot().duplicate_deliveries, 1);
    }
}

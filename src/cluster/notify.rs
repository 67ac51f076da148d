//! The send queue and the outcomes of a clustered hub (CLUSTER.md, "Sends"):
//!
//! - **`NOTIFY`** (stream `<PREFIX>_<hub>_NOTIFY`, subject `<prefix>.<hub>.notify`): the API
//!   node stores each accepted send once (`Nats-Msg-Id` = the notification id, so a retried
//!   accept is stored once) and answers 201; every node follows the stream in order and runs
//!   each send on the partitions it owns. A schedule is a send with a not-before time; a
//!   cancel is a tombstone message for its id. A `parts` hint narrows the partitions when the
//!   audience pins them (`$InstallationId:{…}`).
//! - **`OUT`** (stream `<PREFIX>_<hub>_OUT`, subjects `<prefix>.<hub>.out.<home>`, home =
//!   the partition of the notification id): each partition publishes its counts for a send
//!   (message id `<notification>.<p>.<epoch>.<n>`); the home owner sums, per partition, the
//!   result with the highest (epoch, n). Subjects are per partition, never per notification.
//!
//! The node's send loop (`driver.rs`, `runner.rs`) drives them; they are also tested on
//! their own (`tests/cluster_nats.rs`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{ClusterError, Delivery};
use crate::service::request::StoredRequest;
use crate::{NotificationId, SendRequest};

/// A message of `NOTIFY`.
#[derive(Serialize, Deserialize)]
struct Wire {
    id: String,
    /// `None`: a cancel.
    send: Option<WireSend>,
}

#[derive(Serialize, Deserialize)]
struct WireSend {
    request: StoredRequest,
    delivery: Delivery,
    not_before_ms: Option<u64>,
    parts: Option<Vec<u16>>,
}

/// What a node reads from `NOTIFY`.
#[derive(Debug)]
pub enum Notice {
    /// A send to run (at or after `not_before`).
    Send {
        /// The stream sequence (the order every node runs sends in).
        seq: u64,
        /// The notification.
        id: NotificationId,
        /// What to send, to whom.
        request: Box<SendRequest>,
        /// What a takeover does with a crashed owner's claim for this send.
        delivery: Delivery,
        /// A schedule's time.
        not_before: Option<SystemTime>,
        /// The only partitions the audience can match, when known.
        parts: Option<Vec<u16>>,
    },
    /// A cancel of an earlier send or schedule.
    Cancel {
        /// The stream sequence.
        seq: u64,
        /// The notification cancelled.
        id: NotificationId,
    },
}

impl Notice {
    /// Its stream sequence.
    pub fn seq(&self) -> u64 {
        match self {
            Notice::Send { seq, .. } | Notice::Cancel { seq, .. } => *seq,
        }
    }
}

/// A hub's `NOTIFY` stream.
#[derive(Clone)]
pub struct NotifyLog {
    js: jetstream::Context,
    stream: String,
    subject: String,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl NotifyLog {
    /// Creates (or finds) the stream and checks its settings.
    pub(crate) async fn ensure(
        js: &jetstream::Context,
        prefix: &str,
        hub_token: &str,
        replicas: usize,
    ) -> Result<NotifyLog, ClusterError> {
        let stream = format!("{}_{hub_token}_NOTIFY", prefix.to_ascii_uppercase());
        let subject = format!("{prefix}.{hub_token}.notify");
        super::guard::ensure_stream(
            js,
            super::read::log_stream(stream.clone(), vec![subject.clone()], replicas),
        )
        .await?;
        Ok(NotifyLog {
            js: js.clone(),
            stream,
            subject,
        })
    }

    async fn put(&self, msg_id: String, wire: &Wire) -> Result<u64, ClusterError> {
        let body = Bytes::from(serde_json::to_vec(wire).expect("a notice serialises"));
        let publish = jetstream::message::PublishMessage::build()
            .payload(body)
            .message_id(msg_id);
        let ack = self
            .js
            .send_publish(self.subject.clone(), publish)
            .await
            .map_err(|e| ClusterError::Nats(format!("NOTIFY: {e}")))?
            .await
            .map_err(|e| ClusterError::Nats(format!("NOTIFY: {e}")))?;
        Ok(ack.sequence)
    }

    /// Stores a send; the returned sequence is its place in every node's order. Accepting the
    /// same id twice stores it once (within the stream's two-minute duplicate window).
    pub async fn accept(
        &self,
        id: NotificationId,
        request: &SendRequest,
        delivery: Delivery,
        not_before: Option<SystemTime>,
        parts: Option<Vec<u16>>,
    ) -> Result<u64, ClusterError> {
        let wire = Wire {
            id: id.to_string(),
            send: Some(WireSend {
                request: StoredRequest::from_request(request),
                delivery,
                not_before_ms: not_before.map(ms),
                parts,
            }),
        };
        self.put(id.to_string(), &wire).await
    }

    /// Stores a cancel of `id`.
    pub async fn cancel(&self, id: NotificationId) -> Result<u64, ClusterError> {
        let wire = Wire {
            id: id.to_string(),
            send: None,
        };
        self.put(format!("{id}.cancel"), &wire).await
    }

    /// Reads the stream from `from` (inclusive) to its end as of the call, in order.
    pub async fn read(&self, from: u64) -> Result<Vec<Notice>, ClusterError> {
        let mut s = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| ClusterError::Nats(format!("NOTIFY: {e}")))?;
        let last = s
            .info()
            .await
            .map_err(|e| ClusterError::Nats(format!("NOTIFY: {e}")))?
            .state
            .last_sequence;
        let mut out = Vec::new();
        super::read::read_range(&self.js, &self.stream, None, from, last, |seq, m| {
            out.push(notice(seq, &m.payload)?);
            Ok(())
        })
        .await?;
        Ok(out)
    }
}

/// A `NOTIFY` message as a [`Notice`].
fn notice(seq: u64, payload: &[u8]) -> Result<Notice, ClusterError> {
    let bad = |e: &dyn std::fmt::Display| ClusterError::Nats(format!("NOTIFY message {seq}: {e}"));
    let wire: Wire = serde_json::from_slice(payload).map_err(|e| bad(&e))?;
    let id: NotificationId = wire.id.parse().map_err(|e| bad(&e))?;
    Ok(match wire.send {
        None => Notice::Cancel { seq, id },
        Some(s) => Notice::Send {
            seq,
            id,
            request: Box::new(s.request.into_request().map_err(|e| bad(&e))?),
            delivery: s.delivery,
            not_before: s
                .not_before_ms
                .map(|t| SystemTime::UNIX_EPOCH + Duration::from_millis(t)),
            parts: s.parts,
        },
    })
}

/// Distinct push-service reasons a partition keeps per platform and send; the devices of
/// further reasons are counted in [`PlatformCounts::failed`] without one (the REST API calls
/// them `UnknownError`). Keeps the progress value, which every claim rewrites, small.
pub const MAX_REASONS: usize = 8;

/// One platform's counts of a send on a partition (or summed over partitions): what the
/// single-node report has per platform, without retries and throttling.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformCounts {
    /// Accepted by the push service.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delivered: u64,
    /// Dead handles (pruned or kept).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dead: u64,
    /// Given up when the notification expired.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expired: u64,
    /// Not sent: the platform's credential failed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub credential_failure: u64,
    /// Not sent: no payload or no credential for the platform.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u64,
    /// Not sent: the send was cancelled.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cancelled: u64,
    /// Failed or rejected (the two single-node counts together).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: u64,
    /// Of `failed`: by the service's reason, at most [`MAX_REASONS`] of them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reasons: BTreeMap<String, u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl PlatformCounts {
    /// Adds `other`'s counts; reasons beyond [`MAX_REASONS`] stay in `failed` only.
    pub fn add(&mut self, other: &PlatformCounts) {
        self.delivered += other.delivered;
        self.dead += other.dead;
        self.expired += other.expired;
        self.credential_failure += other.credential_failure;
        self.skipped += other.skipped;
        self.cancelled += other.cancelled;
        self.failed += other.failed;
        for (r, n) in &other.reasons {
            if self.reasons.len() < MAX_REASONS || self.reasons.contains_key(r) {
                *self.reasons.entry(r.clone()).or_default() += n;
            }
        }
    }

    /// The counts of a finished range's report, per platform name (platforms with none
    /// left out).
    pub(crate) fn of_report(report: &crate::SendReport) -> BTreeMap<String, PlatformCounts> {
        let mut out = BTreeMap::new();
        for p in crate::Platform::ALL {
            let o = report.platform(p);
            let mut c = PlatformCounts {
                delivered: o.delivered,
                dead: o.dead,
                expired: o.expired,
                credential_failure: o.credential_failure,
                skipped: o.skipped,
                cancelled: o.cancelled,
                failed: o.failed + o.rejected,
                reasons: BTreeMap::new(),
            };
            for ((rp, why), n) in &report.reasons {
                if *rp == p && (c.reasons.len() < MAX_REASONS || c.reasons.contains_key(why)) {
                    *c.reasons.entry(why.clone()).or_default() += n;
                }
            }
            if c != PlatformCounts::default() {
                out.insert(p.as_str().to_owned(), c);
            }
        }
        out
    }
}

/// Adds every platform of `from` into `into`.
pub(crate) fn add_platforms(
    into: &mut BTreeMap<String, PlatformCounts>,
    from: &BTreeMap<String, PlatformCounts>,
) {
    for (p, c) in from {
        into.entry(p.clone()).or_default().add(c);
    }
}

/// A partition's counts for one send, as published to `OUT`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOutcome {
    /// The partition.
    pub partition: u16,
    /// The epoch of the owner that published it.
    pub epoch: u64,
    /// Its publication number within the epoch (later wins).
    pub n: u64,
    /// Devices that matched.
    pub targeted: u64,
    /// Devices the push service accepted.
    pub delivered: u64,
    /// Devices that failed.
    pub failed: u64,
    /// Re-sends after takeovers (each a possible duplicate).
    pub possible_duplicates: u64,
    /// Devices skipped after takeovers at most once (each possibly missed).
    pub possibly_missed: u64,
    /// The partition's walk is finished.
    pub finished: bool,
    /// Counts per platform name (absent from an older node's outcome).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platforms: BTreeMap<String, PlatformCounts>,
}

impl PartitionOutcome {
    /// Takes the counts of a send's progress entry on the partition.
    pub(crate) fn fill_from(&mut self, sp: &super::claims::SendProgress) {
        self.targeted = sp.targeted;
        self.delivered = sp.delivered;
        self.failed = sp.failed;
        self.possible_duplicates = sp.possible_duplicates;
        self.possibly_missed = sp.possibly_missed;
        self.platforms = sp.platforms.clone();
    }
}

/// A send's outcome summed over partitions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Partitions that published.
    pub partitions: usize,
    /// Partitions that finished.
    pub finished: usize,
    /// Sums of the partitions' latest counts.
    pub targeted: u64,
    /// See [`PartitionOutcome::delivered`].
    pub delivered: u64,
    /// See [`PartitionOutcome::failed`].
    pub failed: u64,
    /// See [`PartitionOutcome::possible_duplicates`].
    pub possible_duplicates: u64,
    /// See [`PartitionOutcome::possibly_missed`].
    pub possibly_missed: u64,
    /// See [`PartitionOutcome::platforms`]: summed.
    pub platforms: BTreeMap<String, PlatformCounts>,
}

#[derive(Serialize, Deserialize)]
struct OutWire {
    notification: String,
    outcome: PartitionOutcome,
}

/// A hub's `OUT` stream.
#[derive(Clone)]
pub struct Outcomes {
    js: jetstream::Context,
    stream: String,
    prefix: String,
    partitions: u16,
}

impl Outcomes {
    /// Creates (or finds) the stream and checks its settings.
    pub(crate) async fn ensure(
        js: &jetstream::Context,
        prefix: &str,
        hub_token: &str,
        replicas: usize,
        partitions: u16,
    ) -> Result<Outcomes, ClusterError> {
        let stream = format!("{}_{hub_token}_OUT", prefix.to_ascii_uppercase());
        super::guard::ensure_stream(
            js,
            super::read::log_stream(
                stream.clone(),
                vec![format!("{prefix}.{hub_token}.out.*")],
                replicas,
            ),
        )
        .await?;
        Ok(Outcomes {
            js: js.clone(),
            stream,
            prefix: format!("{prefix}.{hub_token}"),
            partitions,
        })
    }

    /// The home partition of a notification: where its outcome is summed.
    pub fn home(&self, id: NotificationId) -> u16 {
        (xxhash_rust::xxh3::xxh3_64(id.to_string().as_bytes()) % u64::from(self.partitions)) as u16
    }

    /// Publishes partition counts for `id` (a retry of the same (partition, epoch, n) is
    /// stored once).
    pub async fn publish(
        &self,
        id: NotificationId,
        outcome: &PartitionOutcome,
    ) -> Result<(), ClusterError> {
        let home = self.home(id);
        let body = Bytes::from(
            serde_json::to_vec(&OutWire {
                notification: id.to_string(),
                outcome: outcome.clone(),
            })
            .expect("an outcome serialises"),
        );
        let publish = jetstream::message::PublishMessage::build()
            .payload(body)
            .message_id(format!(
                "{id}.{}.{}.{}",
                outcome.partition, outcome.epoch, outcome.n
            ));
        self.js
            .send_publish(format!("{}.out.{home}", self.prefix), publish)
            .await
            .map_err(|e| ClusterError::Nats(format!("OUT: {e}")))?
            .await
            .map_err(|e| ClusterError::Nats(format!("OUT: {e}")))?;
        Ok(())
    }

    /// Sums every send's latest per-partition outcome on `home`'s subject (what the home
    /// owner serves `GET /messages/{id}` from).
    pub async fn collect(&self, home: u16) -> Result<HashMap<String, Totals>, ClusterError> {
        let subject = format!("{}.out.{home}", self.prefix);
        let last = super::read::last_on_subject(&self.js, &self.stream, &subject).await?;
        // Per send, per partition: the outcome with the highest (epoch, n).
        let mut latest: BTreeMap<(String, u16), PartitionOutcome> = BTreeMap::new();
        super::read::read_range(&self.js, &self.stream, Some(&subject), 1, last, |seq, m| {
            let w: OutWire = serde_json::from_slice(&m.payload)
                .map_err(|e| ClusterError::Nats(format!("OUT message {seq}: {e}")))?;
            let k = (w.notification, w.outcome.partition);
            let newer = latest
                .get(&k)
                .is_none_or(|o| (w.outcome.epoch, w.outcome.n) > (o.epoch, o.n));
            if newer {
                latest.insert(k, w.outcome);
            }
            Ok(())
        })
        .await?;
        let mut totals: HashMap<String, Totals> = HashMap::new();
        for ((nid, _), o) in latest {
            let t = totals.entry(nid).or_default();
            t.partitions += 1;
            t.finished += usize::from(o.finished);
            t.targeted += o.targeted;
            t.delivered += o.delivered;
            t.failed += o.failed;
            t.possible_duplicates += o.possible_duplicates;
            t.possibly_missed += o.possibly_missed;
            add_platforms(&mut t.platforms, &o.platforms);
        }
        Ok(totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_counts_add_up_and_keep_a_bounded_set_of_reasons() {
        let one = |r: &str| PlatformCounts {
            delivered: 2,
            failed: 1,
            reasons: [(r.to_owned(), 1)].into(),
            ..PlatformCounts::default()
        };
        let mut sum = PlatformCounts::default();
        for i in 0..MAX_REASONS + 3 {
            sum.add(&one(&format!("r{i}")));
        }
        sum.add(&one("r0"));
        let n = MAX_REASONS as u64 + 4;
        assert_eq!((sum.delivered, sum.failed), (2 * n, n));
        assert_eq!(sum.reasons.len(), MAX_REASONS);
        assert_eq!(sum.reasons["r0"], 2);
        assert!(!sum.reasons.contains_key(&format!("r{}", MAX_REASONS)));
        // Across platforms: by name.
        let mut all = BTreeMap::new();
        add_platforms(&mut all, &[("apns".to_owned(), one("x"))].into());
        add_platforms(&mut all, &[("apns".to_owned(), one("x"))].into());
        assert_eq!(all["apns"].reasons["x"], 2);
        // An older node's outcome has no platforms: it reads as empty.
        let o: PartitionOutcome = serde_json::from_str(
            r#"{"partition":1,"epoch":1,"n":1,"targeted":1,"delivered":1,"failed":0,
                "possible_duplicates":0,"possibly_missed":0,"finished":true}"#,
        )
        .unwrap();
        assert!(o.platforms.is_empty());
    }
}

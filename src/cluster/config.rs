//! `[cluster]`: where NATS is, who this node is, and the cluster's fixed shape (partitions,
//! stream groups, replicas) and timing (lease, margin, claim size). The defaults are
//! CLUSTER.md's; `ClusterConfig::check` refuses what cannot work, naming the setting.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ClusterError;

/// What a takeover does with a crashed owner's unfinished claim (CLUSTER.md, "Takeover").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Re-send the claim: no device missed, duplicates counted (`possible_duplicates`).
    #[default]
    AtLeastOnce,
    /// Skip the claim: no duplicates, misses counted (`possibly_missed`).
    AtMostOnce,
}

/// A cluster node's configuration (`[cluster]` in the server's file, or built by an
/// embedder).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS servers (`nats://host:port` or `tls://host:port`); list every server of the NATS
    /// cluster: each one's version is checked at start.
    pub nats_urls: Vec<String>,
    /// This node's name: unique in the cluster, 1-64 characters of `A-Z a-z 0-9 - _`.
    pub node: String,
    /// A NATS credentials file (JWT and NKey seed).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) for `tls://` servers.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Partitions of every hub, fixed when the cluster is created (default 256; at least 16
    /// times the largest node count is a good size).
    #[serde(default = "default_partitions")]
    pub partitions: u16,
    /// Registry streams per hub; partition p is in stream `p mod stream_groups` (default 16).
    #[serde(default = "default_stream_groups")]
    pub stream_groups: u16,
    /// JetStream replicas of every stream and bucket (default 3; 1 for a one-server NATS in
    /// development, which gives up surviving a NATS server's loss).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// An owner that has not renewed its lease for this long loses it (default 10,000 ms).
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Extra wait before a node takes an expired lease, covering clock-rate differences
    /// between nodes (default 2,000 ms).
    #[serde(default = "default_margin_ms")]
    pub margin_ms: u64,
    /// Devices per write-ahead send claim (default 512): the most a crash can duplicate (or
    /// miss, at most once) per takeover.
    #[serde(default = "default_claim_size")]
    pub claim_size: u32,
    /// How long a stopping node waits for its partitions to be handed over (planned leave,
    /// [`Node::leave`](super::Node::leave)) before it stops anyway (default 30,000 ms; 0:
    /// no handoff, the others take the partitions after lease + margin).
    #[serde(default = "default_leave_timeout_ms")]
    pub leave_timeout_ms: u64,
    /// Keep a hot standby of every partition on its second-choice node (default true).
    #[serde(default = "default_true")]
    pub standby: bool,
    /// What a send does with a crashed owner's unfinished claim, unless the send says.
    #[serde(default)]
    pub delivery: Delivery,
    /// Keep a push handle with one installation across partitions (default true): each
    /// write that gives an installation a handle new to it claims the handle in the hub's
    /// handle index (one replicated key-value write) and expires the previous holder of
    /// another partition. False saves that write where the backend never registers one
    /// device under two installation ids (with it, registration through 3 nodes on the
    /// 2-core test machine ran at 0.56× the rate of the build without the index,
    /// docs/benchmarks.md); a handle taken by an installation of another partition then
    /// stays with both, and a broadcast reaches the device through each.
    #[serde(default = "default_true")]
    pub unique_handles: bool,
    /// Prefix of every stream, bucket and subject name (default `tagcast`), so several
    /// clusters can share one NATS account.
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_partitions() -> u16 {
    256
}
fn default_stream_groups() -> u16 {
    16
}
fn default_replicas() -> usize {
    3
}
fn default_lease_ms() -> u64 {
    10_000
}
fn default_margin_ms() -> u64 {
    2_000
}
fn default_claim_size() -> u32 {
    512
}
fn default_leave_timeout_ms() -> u64 {
    30_000
}
fn default_true() -> bool {
    true
}
fn default_prefix() -> String {
    "tagcast".to_owned()
}

impl ClusterConfig {
    /// A configuration with the defaults, for `node` against `nats_urls`.
    pub fn new(node: &str, nats_urls: &[&str]) -> ClusterConfig {
        ClusterConfig {
            nats_urls: nats_urls.iter().map(|s| s.to_string()).collect(),
            node: node.to_owned(),
            credentials_file: None,
            tls_ca_file: None,
            partitions: default_partitions(),
            stream_groups: default_stream_groups(),
            replicas: default_replicas(),
            lease_ms: default_lease_ms(),
            margin_ms: default_margin_ms(),
            claim_size: default_claim_size(),
            leave_timeout_ms: default_leave_timeout_ms(),
            standby: true,
            delivery: Delivery::default(),
            unique_handles: true,
            prefix: default_prefix(),
        }
    }

    /// `lease_ms` as a duration.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// `margin_ms` as a duration.
    pub fn margin(&self) -> Duration {
        Duration::from_millis(self.margin_ms)
    }

    /// Refuses what cannot work, naming the setting.
    pub fn check(&self) -> Result<(), ClusterError> {
        let bad = |m: String| Err(ClusterError::Config(m));
        if self.nats_urls.is_empty() {
            return bad("[cluster] nats_urls: at least one NATS server".into());
        }
        for u in &self.nats_urls {
            let ok = ["nats://", "tls://"]
                .iter()
                .any(|s| u.starts_with(s) && u.len() > s.len());
            if !ok {
                return bad(format!(
                    "[cluster] nats_urls: {u:?} is not nats://host:port or tls://host:port"
                ));
            }
        }
        if !valid_name(&self.node, 64) {
            return bad(format!(
                "[cluster] node {:?}: 1-64 characters of A-Z a-z 0-9 - _",
                self.node
            ));
        }
        if !valid_name(&self.prefix, 32) {
            return bad(format!(
                "[cluster] prefix {:?}: 1-32 characters of A-Z a-z 0-9 - _",
                self.prefix
            ));
        }
        if self.partitions == 0 {
            return bad("[cluster] partitions must be above 0".into());
        }
        if self.stream_groups == 0 || self.stream_groups > self.partitions {
            return bad(format!(
                "[cluster] stream_groups must be 1..=partitions ({})",
                self.partitions
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return bad("[cluster] replicas must be 1 to 5 (JetStream's limit)".into());
        }
        if self.lease_ms < 500 {
            return bad("[cluster] lease_ms must be at least 500".into());
        }
        if self.margin_ms == 0 || self.margin_ms >= self.lease_ms {
            return bad("[cluster] margin_ms must be above 0 and below lease_ms".into());
        }
        if self.claim_size == 0 {
            return bad("[cluster] claim_size must be above 0".into());
        }
        Ok(())
    }
}

/// A NATS-safe name part: letters, digits, `-` and `_`.
fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_designs() {
        let c = ClusterConfig::new("n1", &["nats://127.0.0.1:4222"]);
        c.check().unwrap();
        assert_eq!(
            (c.partitions, c.stream_groups, c.replicas, c.claim_size),
            (256, 16, 3, 512)
        );
        assert_eq!(c.delivery, Delivery::AtLeastOnce);
    }

    #[test]
    fn refusals_name_the_setting() {
        let ok = ClusterConfig::new("n1", &["nats://127.0.0.1:4222"]);
        type Change = Box<dyn Fn(&mut ClusterConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|c| c.nats_urls.clear()), "nats_urls"),
            (
                Box::new(|c| c.nats_urls = vec!["http://x:1".into()]),
                "nats_urls",
            ),
            (Box::new(|c| c.node = "a.b".into()), "node"),
            (Box::new(|c| c.node = String::new()), "node"),
            (Box::new(|c| c.prefix = "x>".into()), "prefix"),
            (Box::new(|c| c.partitions = 0), "partitions"),
            (Box::new(|c| c.stream_groups = 300), "stream_groups"),
            (Box::new(|c| c.replicas = 0), "replicas"),
            (Box::new(|c| c.lease_ms = 100), "lease_ms"),
            (Box::new(|c| c.margin_ms = 20_000), "margin_ms"),
            (Box::new(|c| c.claim_size = 0), "claim_size"),
        ];
        for (change, want) in cases {
            let mut c = ok.clone();
            change(&mut c);
            let e = c.check().unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e}");
        }
    }
}

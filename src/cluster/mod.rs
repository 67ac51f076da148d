//! Cluster mode on NATS JetStream (issue 16, `shared/design/CLUSTER.md`). **In progress**:
//! what exists is the registry side (partitions owned, served and moved between nodes, writes
//! routed to their owner), each piece tested against real `nats-server` clusters on loopback
//! (`tests/cluster_nats.rs`, `tests/cluster_node.rs`):
//!
//! - [`config`]: `[cluster]` (NATS URLs, node, partitions, stream groups, replicas, lease,
//!   margin, claim size, standby, delivery default), checked;
//! - [`guard`]: every configured NATS server must be ≥ 2.10.23 (Debian's 2.9.10 is refused,
//!   naming its version), and every stream and bucket is read back after creation (a setting
//!   the server dropped refuses the start);
//! - [`lease`]: partition leases by compare-and-set in KV, taken only after a node watched one
//!   revision for lease + margin on its own clock;
//! - [`plog`]: a partition's fenced chunk log (message ids, expected last subject sequence,
//!   epoch markers that reject a deposed owner's next append) and its replay;
//! - [`assign`]: rendezvous assignment of partitions (owner and standby) over live members;
//! - [`claims`]: write-ahead send claims by compare-and-set, the walk in hash order, and the
//!   takeover of a crashed owner's claim (at least once: re-send and count; at most once:
//!   skip and count);
//! - [`notify`]: the send queue `NOTIFY` (accept once per notification id, read in order,
//!   cancels) and `OUT` (per-partition outcomes summed at the home partition, latest per
//!   partition by (epoch, n));
//! - [`runner`]: one native send on one owned partition, claim by claim, through
//!   `Engine::send_to_targets` (dead handles pruned in the partition's registry), with its
//!   outcome published to `OUT`;
//! - `store`: a partition's [`Registry`](crate::Registry) on its log
//!   ([`Cluster::open_partition`]): the registry's group commit with the JetStream ack as its
//!   durability point, recovery by replay, fail-stop when a newer owner fences it; a
//!   read-only replica ([`Cluster::read_partition`]);
//! - `members`: liveness from the revisions of `n.<node>` keys, on each node's own clock;
//! - [`node`]: the node runtime ([`Node`]): an ownership loop that takes, renews, hands over
//!   and gives up partitions by the rendezvous assignment over live members, and
//!   upsert/delete/patch/get routed to the partition's owner (locally, or by a core NATS
//!   request answered by the owner's serving task; `wire` is the request format);
//! - [`partition_of`]: which partition an installation id is in;
//! - `handles`: handle uniqueness across partitions (an eventual index in a KV bucket).
//!
//! Not built yet (docs/operations.md, "Cluster mode"): object-store snapshots (partition logs
//! are compacted and purged in place). The server's `[cluster]` (`src/server/cluster.rs`)
//! serves the whole REST API from a [`Node`]; without `[cluster]`, tagcast is the single-node
//! product.
//!
//! ```text
//!  Cluster::connect(config, hub)
//!    ├─ every nats_urls server: version ≥ 2.10.23 (guard)
//!    ├─ streams <PREFIX>_<hub>_REG_<g>  subjects <prefix>.<hub>.reg.<g>.*   (read back)
//!    ├─ bucket  <prefix>_<hub>_owners   p.<p> → {node, epoch[, from_seq]}   (read back)
//!    ├─ bucket  <prefix>_<hub>_meta     p<p>.<key> → the partition registry's metadata
//!    ├─ bucket  <prefix>_<hub>_members  n.<node>, put every round by its node
//!    ├─ bucket  <prefix>_<hub>_prog     p.<p> → {epoch, sends: {claimed, done_upto, counts}}
//!    ├─ bucket  <prefix>_<hub>_handles  h.<platform>.<hash> → the handle's holder (handles.rs)
//!    ├─ stream  <PREFIX>_<hub>_NOTIFY   sends, schedules, cancels (msg id = notification id)
//!    └─ stream  <PREFIX>_<hub>_OUT      per-partition outcomes on out.<home partition>
//!  cluster.partition_log(p) → PartitionLog (plog)     cluster.leases() → Leases (lease)
//!  cluster.open_partition(p, epoch) → Registry on the partition's log (store): replay,
//!    epoch marker, writes acknowledged on the JetStream ack, fail-stop when fenced
//!  Node::start(cluster, registry config) → the loop (members, leases, handoffs) and
//!    node.upsert/delete/patch/get(id) → partition_of(id) → its owner
//!    (local registry, or request <prefix>.<hub>.w.<p>)
//! ```

pub mod assign;
pub mod claims;
pub mod config;
pub mod driver;
pub mod guard;
mod handles;
pub mod lease;
mod members;
pub mod node;
pub mod notify;
pub mod plog;
mod read;
pub mod runner;
mod standby;
mod store;
mod wire;

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

pub use config::{ClusterConfig, Delivery};
pub use node::{Node, NodeError};
pub use wire::ListFilter;
pub(crate) use wire::Smallest;

/// The partition of an installation id among `partitions`: `(xxh3_64(id) >> 48) mod
/// partitions`, the same function the single-node registry uses for its partitions
/// (`registry::partition_of`). The top bits, because a partition's hash tables index by the
/// low bits of the same hash: with `xxh3_64(id) mod P` every id of a partition would share
/// its low bits and crowd a 1/P share of the buckets. xxh3 is stable across releases; the
/// function is part of the cluster's on-NATS layout and never changes for a cluster.
pub fn partition_of(id: &crate::InstallationId, partitions: u16) -> u16 {
    let h = xxhash_rust::xxh3::xxh3_64(id.as_str().as_bytes());
    ((h >> 48) % u64::from(partitions.max(1))) as u16
}

/// Why cluster mode could not start or an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A `[cluster]` setting that cannot work.
    #[error("cluster configuration: {0}")]
    Config(String),
    /// The NATS side cannot give the guarantees: an old server, a setting it dropped.
    #[error("cluster mode refused: {0}")]
    Refused(String),
    /// NATS could not be reached or answered with an error.
    #[error("NATS: {0}")]
    Nats(String),
}

/// A name part for streams, buckets and subjects: `A-Z a-z 0-9 -` kept, `_` doubled, any
/// other byte (a hub name's `.`) as `_XX` (hex), so distinct hubs never share a name.
pub fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' => out.push(b as char),
            b'_' => out.push_str("__"),
            other => out.push_str(&format!("_{other:02X}")),
        }
    }
    out
}

/// Whether a JetStream error is a failed "expected last (subject) sequence" check, whichever
/// way the client reports it: async-nats 0.46 knows error code 10071, while servers ≥ 2.11
/// also answer 10164 when the check fails as the write is applied (the atomic check
/// CLUSTER.md relies on), which the client reports as "other" with the text in its source.
pub(crate) fn is_wrong_last_sequence(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if text.contains("wrong last sequence")
            || text.contains("wrong last revision")
            || text.contains("error code 10071")
            || text.contains("error code 10164")
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// One node's connection to the cluster for one hub.
pub struct Cluster {
    config: ClusterConfig,
    hub: String,
    js: jetstream::Context,
    leases: lease::Leases,
    meta: kv::Store,
    claims: claims::Claims,
    notify: notify::NotifyLog,
    outcomes: notify::Outcomes,
    members: kv::Store,
    handles: handles::Handles,
}

impl Cluster {
    /// Checks the configuration and every NATS server's version, then creates (or finds) the
    /// hub's registry streams and owners bucket and checks their settings.
    pub async fn connect(config: ClusterConfig, hub: &str) -> Result<Cluster, ClusterError> {
        config.check()?;
        let mut reachable = 0;
        let mut unreachable = Vec::new();
        for url in &config.nats_urls {
            match connect_one(&config, std::slice::from_ref(url)).await {
                Ok(c) => {
                    reachable += 1;
                    let info = c.server_info();
                    guard::check_version(url, &info.version)?;
                    if !info.jetstream {
                        return Err(ClusterError::Refused(format!(
                            "NATS server {url} has JetStream off (`jetstream` in its \
                             configuration)"
                        )));
                    }
                }
                Err(e) => unreachable.push(format!("{url}: {e}")),
            }
        }
        if reachable == 0 {
            return Err(ClusterError::Nats(format!(
                "no NATS server reachable: {}",
                unreachable.join("; ")
            )));
        }
        for u in &unreachable {
            // Its version is checked when this node restarts; the servers that answered were.
            tracing::warn!(server = %u, "NATS server unreachable at start: version not checked");
        }
        let client = connect_one(&config, &config.nats_urls).await?;
        let js = jetstream::new(client);
        let t = token(hub);
        let replicas = config.replicas;
        for g in 0..config.stream_groups {
            guard::ensure_stream(
                &js,
                stream::Config {
                    // Kept from the first layout (the guard refuses a changed stream):
                    // compaction purges a partition's subject below its oldest live chunk,
                    // it does not roll up.
                    allow_rollup: true,
                    ..read::log_stream(
                        format!("{}_{t}_REG_{g}", config.prefix.to_ascii_uppercase()),
                        vec![format!("{}.{t}.reg.{g}.*", config.prefix)],
                        replicas,
                    )
                },
            )
            .await?;
        }
        let owners = guard::ensure_kv(
            &js,
            bucket(format!("{}_{t}_owners", config.prefix), replicas),
        )
        .await?;
        let meta =
            guard::ensure_kv(&js, bucket(format!("{}_{t}_meta", config.prefix), replicas)).await?;
        let prog =
            guard::ensure_kv(&js, bucket(format!("{}_{t}_prog", config.prefix), replicas)).await?;
        // Liveness (node.rs): `n.<node>`, put every round by its node. The age limit only
        // collects the keys of nodes that left; liveness is read from revisions, not ages.
        let members = guard::ensure_kv(
            &js,
            kv::Config {
                max_age: Duration::from_secs(24 * 3600),
                ..bucket(format!("{}_{t}_members", config.prefix), replicas)
            },
        )
        .await?;
        // Handle uniqueness across partitions (handles.rs): `h.<platform>.<hash>` → holder.
        let handles = handles::Handles::new(
            guard::ensure_kv(
                &js,
                bucket(format!("{}_{t}_handles", config.prefix), replicas),
            )
            .await?,
        );
        let notify = notify::NotifyLog::ensure(&js, &config.prefix, &t, replicas).await?;
        let outcomes =
            notify::Outcomes::ensure(&js, &config.prefix, &t, replicas, config.partitions).await?;
        let leases = lease::Leases::new(owners, &config.node, config.lease(), config.margin());
        Ok(Cluster {
            notify,
            outcomes,
            hub: hub.to_owned(),
            js,
            leases,
            meta,
            claims: claims::Claims::new(prog),
            members,
            handles,
            config,
        })
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The hub.
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// The hub's send queue (`NOTIFY`).
    pub fn notify(&self) -> &notify::NotifyLog {
        &self.notify
    }

    /// The hub's per-partition send outcomes (`OUT`).
    pub fn outcomes(&self) -> &notify::Outcomes {
        &self.outcomes
    }

    /// The hub's write-ahead send claims.
    pub fn claims(&self) -> &claims::Claims {
        &self.claims
    }

    /// The hub's partition leases.
    pub fn leases(&self) -> &lease::Leases {
        &self.leases
    }

    /// Opens partition `p`'s registry as its owner at `epoch` (won with this node's lease):
    /// replays the partition's log into a fresh [`Registry`](crate::Registry) with one
    /// partition, then fences older owners out with the epoch's marker. Writes to it are
    /// acknowledged once their chunk is in the log (a JetStream ack from a majority of the
    /// stream's replicas). When a newer owner fences this one, its writes fail with
    /// `RegistryError::StorageFailed` and it must be dropped. `config.partitions` is ignored
    /// (one); compaction is off (see `store`).
    pub async fn open_partition(
        &self,
        p: u16,
        epoch: u64,
        config: crate::RegistryConfig,
    ) -> Result<crate::Registry, ClusterError> {
        Ok(self.open(p, Some(epoch), config).await?.0)
    }

    /// A read-only replica of partition `p` as of now: its log replayed into a fresh
    /// [`Registry`](crate::Registry) whose writes all fail, with no epoch marker (the owner
    /// is not disturbed). Replicas that replayed the same log hold the same state
    /// (CLUSTER.md, guarantee 3): compare one with the owner's.
    pub async fn read_partition(
        &self,
        p: u16,
        config: crate::RegistryConfig,
    ) -> Result<crate::Registry, ClusterError> {
        Ok(self.open(p, None, config).await?.0)
    }

    /// Opens `p` at `epoch` (`None`: read-only); also returns the last sequence replayed.
    pub(crate) async fn open(
        &self,
        p: u16,
        epoch: Option<u64>,
        config: crate::RegistryConfig,
    ) -> Result<(crate::Registry, u64), ClusterError> {
        self.open_cached(p, epoch, config, None).await
    }

    /// [`Cluster::open`] replaying from a standby's copy of the log (`cached`) and the tail
    /// after it.
    pub(crate) async fn open_cached(
        &self,
        p: u16,
        epoch: Option<u64>,
        mut config: crate::RegistryConfig,
        cached: Option<Vec<plog::LogEntry>>,
    ) -> Result<(crate::Registry, u64), ClusterError> {
        if p >= self.config.partitions {
            return Err(ClusterError::Config(format!(
                "partition {p} of {}",
                self.config.partitions
            )));
        }
        config.partitions = 1;
        let rt = tokio::runtime::Handle::current();
        let (log, meta) = (self.partition_log(p), self.meta.clone());
        tokio::task::spawn_blocking(move || {
            store::open_partition(rt, log, meta, format!("p{p}"), epoch, config, cached)
        })
        .await
        .map_err(|e| ClusterError::Nats(format!("opening partition {p}: {e}")))?
    }

    /// The core NATS client (routed writes).
    pub(crate) fn client(&self) -> async_nats::Client {
        self.js.client()
    }

    /// The handle index (handles.rs).
    pub(crate) fn handles(&self) -> &handles::Handles {
        &self.handles
    }

    /// The members bucket.
    pub(crate) fn members_kv(&self) -> &kv::Store {
        &self.members
    }

    /// The subject partition `p`'s owner answers routed writes on.
    pub(crate) fn write_subject(&self, p: u16) -> String {
        format!("{}.{}.w.{p}", self.config.prefix, token(&self.hub))
    }

    /// Partition `p`'s log.
    pub fn partition_log(&self, p: u16) -> plog::PartitionLog {
        let g = p % self.config.stream_groups;
        let t = token(&self.hub);
        plog::PartitionLog::new(
            self.js.clone(),
            &format!("{}_{t}_REG_{g}", self.config.prefix.to_ascii_uppercase()),
            &format!("{}.{t}.reg.{g}.{p}", self.config.prefix),
            p,
        )
    }
}

/// A key-value bucket of cluster mode: one value per key, file storage, `replicas`.
fn bucket(name: String, replicas: usize) -> kv::Config {
    kv::Config {
        bucket: name,
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// A client of `urls` with the configuration's credentials and CA, failing fast when none
/// answers.
async fn connect_one(
    config: &ClusterConfig,
    urls: &[String],
) -> Result<async_nats::Client, ClusterError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("tagcast-{}", config.node))
        .connection_timeout(Duration::from_secs(5));
    if let Some(f) = &config.credentials_file {
        opts = opts
            .credentials_file(f)
            .await
            .map_err(|e| ClusterError::Config(format!("credentials_file {}: {e}", f.display())))?;
    }
    if let Some(ca) = &config.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    let addrs: Vec<async_nats::ServerAddr> = urls
        .iter()
        .map(|u| {
            u.parse()
                .map_err(|e| ClusterError::Config(format!("nats_urls {u:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    opts.connect(addrs)
        .await
        .map_err(|e| ClusterError::Nats(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(Inner);
    #[derive(Debug)]
    struct Inner;
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("failed getting entry")
        }
    }
    impl std::fmt::Display for Inner {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("publish failed: other (code 400, error code 10164)")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    impl std::error::Error for Inner {}

    #[test]
    fn a_failed_sequence_check_is_recognised_in_the_error_chain() {
        assert!(is_wrong_last_sequence(&Outer(Inner)));
        assert!(!is_wrong_last_sequence(&Inner2));
    }

    #[derive(Debug)]
    struct Inner2;
    impl std::fmt::Display for Inner2 {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("timed out")
        }
    }
    impl std::error::Error for Inner2 {}

    #[test]
    fn tokens_are_safe_and_distinct() {
        assert_eq!(token("myhub"), "myhub");
        assert_eq!(token("my-hub"), "my-hub");
        assert_eq!(token("a.b"), "a_2Eb");
        assert_eq!(token("a_2Eb"), "a__2Eb");
        assert_ne!(token("a.b"), token("a_b"));
        for t in [token("x.y"), token("x_y"), token("x-y")] {
            assert!(t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)));
        }
    }
}

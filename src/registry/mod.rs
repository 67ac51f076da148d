//! The registry: installations, their tag index, and crash-safe storage.
//!
//! ```text
//!  upsert / patch / delete / prune          resolve(audience)
//!        |                                        |
//!        v                                        v
//!  [handle stripe lock] -> partition write lock   partition read locks (in parallel)
//!        |  log append (7 KiB chunks in sled)     |  bitmap algebra per partition
//!        |  memory index update                   v
//!        v                                   Resolution: one bitmap per partition
//!  group commit (one fsync for many writers)      |  batches(): ids + handles, a batch at a time
//!        v                                        v
//!  acknowledged = durable                     the dispatcher
//! ```
//!
//! Installations are spread over partitions by the xxh3 hash of their id. Each partition is a
//! `partition::Partition` behind its own `RwLock`: writers of different partitions never
//! contend, and resolution reads partitions in parallel.
//!
//! Handle ownership: a push handle belongs to at most one installation per platform. Claims of
//! a handle are serialised by a striped lock keyed by the handle; an installation that takes a
//! handle another one holds marks the other `push_channel_expired`, and both records are
//! appended under one hold of the log lock, into the same chunk (one store value), so a crash
//! can never leave two owners.
//!
//! Lock order: handle stripe, then partition locks in ascending partition order, then the log.
//! No code path takes a stripe while holding a partition lock.

pub(crate) mod commit;
pub(crate) mod interner;
pub(crate) mod log;
pub(crate) mod partition;
mod query;
pub(crate) mod recovery;
mod shared_templates;
pub(crate) mod store;
#[cfg(test)]
mod tests;
mod undo;
mod version;

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, RwLock};
use roaring::RoaringBitmap;

use crate::audience::{TagExpr, TagRef};
use crate::model::{EndpointPolicy, InvalidInput, PushHandle, WebPushSubscription};
pub use crate::model::{Installation, InstallationId, PatchOp, Platform, Template, UserId};
use crate::state::StorageFailure;
use commit::GroupCommit;
use interner::Interner;
use interner::TagPin;
use log::Log;
use partition::{
    hash_bytes, hash_handle, MemRecord, Partition, Rec, RecordParts, TagId, NO_EXPIRY,
};
use query::Compiled;
use store::{SledStore, Store, StoreError, StoredRecord, StoredTemplate};
use undo::Undo;
pub use version::{Precondition, Version};

/// Registry settings.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Number of partitions (1-4096). Fixed when the store is created; reopening with another
    /// number is an error. Default 16: enough for parallel resolution on many cores while
    /// keeping per-partition tag bitmaps few (each distinct tag costs a bitmap per partition).
    pub partitions: u16,
    /// Most tags one installation (and one template) may carry. Default 60, Notification Hubs'
    /// limit (nh-rest-api.md §5).
    pub max_tags_per_installation: usize,
    /// Hosts WNS channel URIs may point at: exact names or `*.suffix` patterns.
    /// Default `["*.notify.windows.com"]`.
    pub wns_hosts: Vec<String>,
    /// Hosts Web Push endpoints may point at: exact names or `*.suffix` patterns (e.g.
    /// `*.push.services.mozilla.com`, `fcm.googleapis.com`, `*.notify.windows.com`,
    /// `web.push.apple.com`). Default empty: any host. Whatever the list, an endpoint whose
    /// host is an IP literal must be a public address unless
    /// [`web_push_private_endpoints`](Self::web_push_private_endpoints) is set; a name's
    /// addresses are checked when the engine connects (`WebPushSettings`).
    pub web_push_hosts: Vec<String>,
    /// Accept Web Push endpoints at loopback, private, link-local and other non-public IP
    /// literals (tests against local mock push services, embedders on a private network).
    /// Default `false` (server audit M1: a public Listen key could otherwise store an endpoint
    /// at `https://169.254.169.254/` and make every broadcast post to it).
    pub web_push_private_endpoints: bool,
    /// sled's page cache, in bytes (at least 256, sled's minimum). Default
    /// [`RegistryConfig::DEFAULT_CACHE`]: the in-memory index serves every read, the cache only
    /// helps writes and recovery.
    pub cache_capacity: u64,
    /// An unchanged re-registration (every app launch sends one) is acknowledged without any
    /// write unless the stored last-update time is older than this. Default 1 hour.
    pub touch_interval: Duration,
    /// How often expired installations are reaped and the log compacted in the background.
    /// Default 60 s.
    pub reap_interval: Duration,
    /// Group commit: how long a flush may wait for writers that are mid-write to join it.
    /// The wait ends early, after a quarter of it in which no write arrived. Default 2 ms;
    /// zero flushes at once. A lone writer never waits.
    pub commit_window: Duration,
    /// Most installations the registry holds (channel-expired ones included); a write that
    /// would create one more fails with [`RegistryError::QuotaExceeded`], while replacing an
    /// existing installation is always allowed. Default `None`: no limit, for embedders that
    /// bound their registries otherwise; a server exposed to a public Listen key should set
    /// one (server audit H6).
    pub max_installations: Option<usize>,
    /// Most templates one installation may carry; more is an invalid installation
    /// ([`RegistryError::Invalid`]). Default 10 (server audit H6's suggestion; each template
    /// is compiled, stored and rendered per send, and a body may be 16 KiB).
    pub max_templates_per_installation: usize,
    /// The registry's name in metrics and logs (label `registry`), e.g. the hub's name.
    /// Default `"default"`.
    pub name: String,
}

impl RegistryConfig {
    /// The default page cache: 8 MiB (64 MiB before). Reads come from the in-memory index and
    /// the store's working set is the log's tail (log.rs). In the soak, servers with 1 MiB
    /// caches held 13 MiB less after 4 minutes than with 64 MiB ones (docs/benchmarks.md,
    /// "Server soak"). The figure is a loose bound: sled counts pages at their size on disk,
    /// and each of its 256 cache shards keeps at least its last page.
    pub const DEFAULT_CACHE: u64 = 8 << 20;
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            partitions: 16,
            max_tags_per_installation: 60,
            wns_hosts: vec!["*.notify.windows.com".into()],
            web_push_hosts: Vec::new(),
            web_push_private_endpoints: false,
            cache_capacity: Self::DEFAULT_CACHE,
            touch_interval: Duration::from_secs(3600),
            reap_interval: Duration::from_secs(60),
            commit_window: Duration::from_millis(2),
            max_installations: None,
            max_templates_per_installation: 10,
            name: "default".into(),
        }
    }
}

/// Errors of registry operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The installation (or a part of it) is invalid.
    #[error("invalid installation: {0}")]
    Invalid(#[from] InvalidInput),
    /// Too many tags.
    #[error("installation {id:?} has {count} tags; at most {max} are allowed")]
    TooManyTags {
        /// The installation.
        id: String,
        /// Distinct tags given.
        count: usize,
        /// The configured limit.
        max: usize,
    },
    /// A WNS channel URI's host is not on the allowlist.
    #[error("WNS channel host {host:?} is not allowed (allowed: {allowed})")]
    WnsHost {
        /// The host.
        host: String,
        /// The allowlist, comma-separated.
        allowed: String,
    },
    /// A Web Push endpoint's host is not on the allowlist, or is a non-public IP address.
    #[error("Web Push endpoint refused: {problem}")]
    WebPushEndpoint {
        /// The endpoint's host.
        host: String,
        /// Why it is refused (names the host, the address range or the allowlist).
        problem: String,
    },
    /// A patch names an installation that does not exist.
    #[error("installation {0:?} not found")]
    NotFound(String),
    /// A patch tries to change the platform.
    #[error("installation {id:?} is {from}; a patch cannot change it to {to}")]
    PlatformChange {
        /// The installation.
        id: String,
        /// Current platform.
        from: Platform,
        /// Requested platform.
        to: Platform,
    },
    /// Storage failed; the write may or may not have reached the disk and was not acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The registry's storage failed (a flush did not complete): every write since is refused
    /// before it changes anything, and the writes that were not durable were taken back, until
    /// the registry is reopened (docs/operations.md, "Storage failure"). A server should
    /// answer 503 and report itself not ready.
    #[error("the registry's storage failed ({cause}); writes are refused until it is reopened")]
    StorageFailed {
        /// The first failure.
        #[source]
        cause: StorageFailure,
    },
    /// A write would create an installation beyond [`RegistryConfig::max_installations`].
    #[error("the registry holds its maximum of {max} installations")]
    QuotaExceeded {
        /// The configured limit.
        max: usize,
    },
    /// A conditional write's [`Precondition`] does not hold: the installation changed (or
    /// appeared, or went) since the caller read it.
    #[error("installation {id:?} is {}, not {expected}", current_text(.current))]
    VersionMismatch {
        /// The installation.
        id: String,
        /// What the write required.
        expected: Precondition,
        /// The installation's current version; `None` when it does not exist.
        current: Option<Version>,
    },
}

fn current_text(current: &Option<Version>) -> String {
    match current {
        Some(v) => format!("at version {v}"),
        None => "absent".into(),
    }
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// A new installation.
    Created,
    /// An existing installation changed.
    Updated,
    /// Same content as stored: nothing was written.
    Unchanged,
}

/// Who receives a notification.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Audience {
    /// Every installation.
    All,
    /// Every installation of one platform.
    Platform(Platform),
    /// Installations matching a tag expression.
    Expr(TagExpr),
    /// One installation.
    Installation(InstallationId),
    /// Every installation of one user.
    User(UserId),
}

/// Installations at most that the plain tags of an expression may be carried by in all for
/// it to be resolved on the caller's thread ([`Registry::resolves_cheaply`]).
pub(crate) const SMALL_AUDIENCE: u32 = 4096;

impl Audience {
    /// Whether resolving this audience is a hash lookup per partition (one installation id
    /// or one user id, also as the whole of a tag expression), not a bitmap evaluation: cheap
    /// enough to resolve on the caller's thread whatever the registry's size.
    pub(crate) fn is_point_lookup(&self) -> bool {
        use crate::audience::{ExprNode, TagRef};
        match self {
            Audience::Installation(_) | Audience::User(_) => true,
            Audience::Expr(e) => matches!(
                e.root(),
                ExprNode::Tag(TagRef::InstallationId(_) | TagRef::UserId(_))
            ),
            Audience::All | Audience::Platform(_) => false,
        }
    }
}

impl From<TagExpr> for Audience {
    fn from(e: TagExpr) -> Self {
        Audience::Expr(e)
    }
}

/// A device to deliver to, read from the registry at delivery time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The installation.
    pub installation_id: InstallationId,
    /// Its handle.
    pub handle: PushHandle,
    /// When it was last written (the 410-race guard compares against this).
    pub last_update: SystemTime,
}

/// A request to prune a dead handle, from PNS feedback.
#[derive(Clone, Debug)]
pub struct PruneRequest {
    /// The installation the notification went to.
    pub installation_id: InstallationId,
    /// The handle the PNS reported dead.
    pub handle: PushHandle,
    /// When the PNS says the handle became invalid (APNs 410 `timestamp`). An installation
    /// written after this time is kept: the device re-registered since.
    pub invalid_since: Option<SystemTime>,
}

/// What a prune batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Installations deleted.
    pub pruned: usize,
    /// Kept because they were written after the handle became invalid.
    pub kept_updated: usize,
    /// Kept because they no longer carry that handle (or no longer exist).
    pub stale: usize,
}

/// Counters describing the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryStats {
    /// Installations stored.
    pub installations: usize,
    /// Installations that can receive notifications (channel not expired).
    pub sendable: u64,
    /// Partitions.
    pub partitions: usize,
    /// Distinct tags the installations carry (tags no installation carries any more are
    /// reclaimed).
    pub distinct_tags: usize,
    /// Approximate heap bytes of the in-memory index.
    pub index_heap_bytes: usize,
    /// Store flushes so far (group commits).
    pub flushes: u64,
    /// Chunks in the durable log.
    pub log_chunks: usize,
    /// Entries in the durable log (records and tombstones, live or not).
    pub log_entries: u64,
    /// Log records that are the live copy of an installation.
    pub log_live: u64,
}

struct Inner {
    config: RegistryConfig,
    partitions: Box<[RwLock<Partition>]>,
    interner: Interner,
    store: Arc<dyn Store>,
    log: Arc<Log>,
    commit: Arc<GroupCommit>,
    stripes: Box<[Mutex<()>]>,
    reaper: Arc<(Mutex<bool>, Condvar)>,
    /// Installations stored (for [`RegistryConfig::max_installations`]).
    installations: AtomicUsize,
    /// The version clock (see `version.rs`).
    clock: AtomicU64,
    /// Set when a partition's undo records pile up (see `Registry::written`).
    undo_pressure: AtomicBool,
}

/// The installation registry. Cheap to clone; all clones share one registry, which closes
/// (final flush, background threads stopped) when the last clone is dropped.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

const HANDLE_STRIPES: usize = 1024;
/// Upper bound of `RegistryConfig::max_tags_per_installation` (record lengths are u16).
pub const MAX_TAGS_LIMIT: usize = 4096;
/// A partition's undo records past which a writer asks for a flush without waiting for it.
const UNDO_PRESSURE: usize = 4096;
/// How often [`Registry::patch`] re-applies its operations when concurrent writes keep
/// changing the installation under it.
const PATCH_ATTEMPTS: usize = 64;
/// Chunks one [`Registry::compact`] pass rewrites at most: ~1.8 MiB of 7 KiB chunks read and
/// their live entries moved, chunk by chunk under the partition locks, so one pass stays short;
/// the reaper repeats passes while they come back full.
const COMPACTION_BATCH: usize = 256;
/// Gauge: 1 once the registry's storage has failed (writes refused until it is reopened), 0
/// while it works; label `registry` ([`RegistryConfig::name`]).
pub const STORAGE_FAILED_METRIC: &str = "tagcast_registry_storage_failed";
const META_PARTITIONS: &str = "partitions";
const META_VERSION: &str = "layout";
const LAYOUT_VERSION: &[u8] = b"tagcast-registry-1";

fn now_ms() -> u64 {
    to_ms(SystemTime::now())
}

fn to_ms(t: SystemTime) -> u64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis().min(u64::MAX as u128 - 1) as u64,
        Err(_) => 0,
    }
}

fn now_us() -> u64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros().min(u64::MAX as u128) as u64,
        Err(_) => 0,
    }
}

/// The version of a record whose log entry has none (kind 1, see `version.rs`).
pub(crate) fn version_of_time(last_update_ms: u64) -> u64 {
    last_update_ms.saturating_mul(1000)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A write applied in memory and logged, not yet known durable: its commit number and the
/// log position of its last entry.
#[derive(Clone, Copy, Debug)]
struct Pending {
    seq: u64,
    pos: u64,
}

/// An installation's expired copy, logged and not yet installed ([`Registry::log_expired`]).
struct ExpiredCopy {
    mem: MemRecord,
    templates: Option<partition::Templates>,
    /// What it replaces, kept until the change is durable.
    before: (MemRecord, Option<partition::Templates>),
    id: Box<str>,
    pos: u64,
}

/// A write ready to apply: both forms of the record.
struct Prepared {
    pid: u16,
    mem: MemRecord,
    /// The record as the log stores it (`store::encode`).
    encoded: Vec<u8>,
    templates: Option<partition::Templates>,
}

impl Registry {
    /// Opens (or creates) the registry stored in directory `path` with default settings.
    pub fn open(path: impl AsRef<Path>) -> Result<Registry, RegistryError> {
        Registry::open_with(path, RegistryConfig::default())
    }

    /// Opens (or creates) the registry stored in `path`, rebuilding the in-memory index from
    /// the store (partitions in parallel).
    pub fn open_with(
        path: impl AsRef<Path>,
        config: RegistryConfig,
    ) -> Result<Registry, RegistryError> {
        Self::check_partitions(&config)?;
        let path = path.as_ref();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(path, config.cache_capacity)?);
        let reopen = |old: Arc<dyn Store>| -> Result<Arc<dyn Store>, StoreError> {
            // The database must be closed (its file lock released) before it opens again.
            drop(old);
            Ok(Arc::new(SledStore::open(path, config.cache_capacity)?))
        };
        Registry::with_store(store, config.clone(), Some(&reopen))
    }

    /// A registry that persists nothing: everything is lost when it is dropped. For tests and
    /// load generators; every other behaviour (validation, handle ownership, indexes) is the
    /// same as a durable registry's.
    pub fn ephemeral(config: RegistryConfig) -> Result<Registry, RegistryError> {
        Self::check_partitions(&config)?;
        Registry::with_store(Arc::new(store::NullStore), config, None)
    }

    fn check_partitions(config: &RegistryConfig) -> Result<(), RegistryError> {
        if config.max_tags_per_installation > MAX_TAGS_LIMIT {
            return Err(StoreError::Layout(format!(
                "max_tags_per_installation is {}; at most {MAX_TAGS_LIMIT} is supported",
                config.max_tags_per_installation
            ))
            .into());
        }
        if config.partitions == 0 || config.partitions > 4096 {
            return Err(StoreError::Layout(format!(
                "partitions must be 1-4096, not {}",
                config.partitions
            ))
            .into());
        }
        Ok(())
    }

    /// Recovers the registry from `store`; `reopen` closes and reopens it during and after
    /// the scan (see `recovery::recover`).
    pub(crate) fn with_store(
        mut store: Arc<dyn Store>,
        config: RegistryConfig,
        reopen: Option<recovery::Reopen<'_>>,
    ) -> Result<Registry, RegistryError> {
        match (store.meta(META_VERSION)?, store.meta(META_PARTITIONS)?) {
            (Some(v), Some(p)) => {
                if v != LAYOUT_VERSION {
                    return Err(StoreError::Layout(format!(
                        "store layout {:?} is not {:?}",
                        String::from_utf8_lossy(&v),
                        String::from_utf8_lossy(LAYOUT_VERSION)
                    ))
                    .into());
                }
                let n = p.as_slice().try_into().map(u16::from_be_bytes).unwrap_or(0);
                if n != config.partitions {
                    return Err(StoreError::Layout(format!(
                        "the store was created with {n} partitions; the configuration says {}",
                        config.partitions
                    ))
                    .into());
                }
            }
            _ => {
                store.set_meta(META_PARTITIONS, &config.partitions.to_be_bytes())?;
                store.set_meta(META_VERSION, LAYOUT_VERSION)?;
            }
        }
        let interner = Interner::new();
        let rec = recovery::recover(&mut store, config.partitions, &interner, reopen)?;
        if let Some(reopen) = reopen {
            // Let go of what the store kept of the last window (recovery holds no handle).
            store = reopen(store)?;
        }
        let log = Arc::new(Log::new(store.clone(), rec.next_chunk, rec.chunks));
        // Tag references: one per tag of every record recovered (recovery interned the tags
        // of superseded records too; those are freed here).
        interner.recount(
            rec.partitions
                .iter()
                .flat_map(|p| p.iter().flat_map(|(_, r)| r.tags())),
        );
        let max_version = rec
            .partitions
            .iter()
            .flat_map(|p| p.iter().map(|(_, r)| r.version()))
            .max()
            .unwrap_or(0);
        let installations = rec.partitions.iter().map(Partition::len).sum();
        let partitions: Box<[RwLock<Partition>]> =
            rec.partitions.into_iter().map(RwLock::new).collect();
        let inner = Arc::new(Inner {
            commit: GroupCommit::start(log.clone(), config.commit_window),
            log,
            partitions,
            interner,
            store,
            stripes: (0..HANDLE_STRIPES).map(|_| Mutex::new(())).collect(),
            reaper: Arc::new((Mutex::new(false), Condvar::new())),
            installations: AtomicUsize::new(installations),
            clock: AtomicU64::new(max_version.max(now_us())),
            undo_pressure: AtomicBool::new(false),
            config,
        });
        let reg = Registry { inner };
        reg.watch_storage();
        reg.start_reaper();
        Ok(reg)
    }

    /// Sets the storage-failure gauge and installs what happens when storage fails: log it,
    /// set the gauge, take back every write that is not durable (see `commit.rs`, `undo.rs`).
    fn watch_storage(&self) {
        let name = self.inner.config.name.clone();
        metrics::describe_gauge!(
            STORAGE_FAILED_METRIC,
            "1 once the registry's storage failed (writes refused until restart)"
        );
        let gauge = metrics::gauge!(STORAGE_FAILED_METRIC, "registry" => name.clone());
        gauge.set(0.0);
        let weak = Arc::downgrade(&self.inner);
        self.inner.commit.on_failure(Box::new(move |cause| {
            gauge.set(1.0);
            let undone = weak
                .upgrade()
                .map_or(0, |inner| Registry { inner }.roll_back());
            tracing::error!(
                registry = %name,
                error = %cause,
                writes_taken_back = undone,
                "registry storage failed: writes are refused until the registry is reopened"
            );
        }));
    }

    fn start_reaper(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let stop = self.inner.reaper.clone();
        let interval = self.inner.config.reap_interval;
        let _ = std::thread::Builder::new()
            .name("tagcast-reaper".into())
            .spawn(move || loop {
                {
                    // Wait without holding the registry, so dropping it is never delayed.
                    let (lock, cv) = &*stop;
                    let mut stopped = lock.lock();
                    if !*stopped {
                        cv.wait_for(&mut stopped, interval);
                    }
                    if *stopped {
                        return;
                    }
                }
                let Some(inner) = weak.upgrade() else { return };
                // Errors surface on the next foreground write; the reaper tries again later.
                let reg = Registry { inner };
                let _ = reg.reap_expired();
                let _ = reg.compact_until_done(|| *stop.0.lock());
            });
    }

    fn partition_of(&self, id: &str) -> u16 {
        ((hash_bytes(id.as_bytes()) >> 48) % self.inner.partitions.len() as u64) as u16
    }

    fn check_config(&self, inst: &Installation) -> Result<(), RegistryError> {
        let cfg = &self.inner.config;
        let too_many = |count| RegistryError::TooManyTags {
            id: inst.id.to_string(),
            count,
            max: cfg.max_tags_per_installation,
        };
        let distinct = |tags: &[crate::model::Tag]| {
            let mut v: Vec<&str> = tags.iter().map(|t| t.as_str()).collect();
            v.sort_unstable();
            v.dedup();
            v.len()
        };
        let n = distinct(&inst.tags);
        if n > cfg.max_tags_per_installation {
            return Err(too_many(n));
        }
        let max_templates = cfg.max_templates_per_installation;
        if let Some((name, _)) = inst.templates.iter().nth(max_templates) {
            return Err(InvalidInput::Template {
                name: crate::model::shorten(name, 80),
                problem: format!(
                    "is one too many: installation {:?} has {} templates; at most {max_templates} are allowed",
                    inst.id.as_str(),
                    inst.templates.len()
                ),
            }
            .into());
        }
        for (name, t) in &inst.templates {
            check_template(name, t)?;
            let n = distinct(&t.tags);
            if n > cfg.max_tags_per_installation {
                return Err(too_many(n));
            }
        }
        if let PushHandle::Wns(uri) = &inst.handle {
            let host = crate::model::check_https_uri(uri).map_err(|p| InvalidInput::Handle {
                platform: Platform::Wns,
                problem: p,
            })?;
            let ok = cfg
                .wns_hosts
                .iter()
                .any(|pat| match pat.strip_prefix("*.") {
                    Some(suffix) => {
                        host.len() > suffix.len() + 1
                            && host.ends_with(&suffix.to_ascii_lowercase())
                            && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                    }
                    None => host == pat.to_ascii_lowercase(),
                });
            if !ok {
                return Err(RegistryError::WnsHost {
                    host,
                    allowed: cfg.wns_hosts.join(", "),
                });
            }
        }
        if let PushHandle::WebPush(w) = &inst.handle {
            let host =
                crate::model::check_https_uri(w.endpoint()).map_err(|p| InvalidInput::Handle {
                    platform: Platform::WebPush,
                    problem: format!("endpoint {p}"),
                })?;
            let policy = EndpointPolicy::new(&cfg.web_push_hosts, cfg.web_push_private_endpoints);
            policy
                .check_host(&host)
                .map_err(|problem| RegistryError::WebPushEndpoint { host, problem })?;
        }
        Ok(())
    }

    /// Builds both forms of the record for `inst`. The tag ids it interns come with one
    /// reference each (returned too): the record installed owns them; a write that installs
    /// nothing gives them back (see `apply`).
    fn prepare(&self, inst: &Installation, last_update_ms: u64) -> (Prepared, Vec<TagId>) {
        let pid = self.partition_of(inst.id.as_str());
        let mut tags: Vec<&str> = Vec::with_capacity(inst.tags.len());
        for t in &inst.tags {
            if !tags.contains(&t.as_str()) {
                tags.push(t.as_str());
            }
        }
        let tag_ids: Vec<u32> = tags.iter().map(|t| self.inner.interner.intern(t)).collect();
        let extra_vec = match &inst.handle {
            PushHandle::WebPush(w) => {
                let mut v = Vec::with_capacity(81);
                v.extend_from_slice(w.p256dh());
                v.extend_from_slice(w.auth());
                v
            }
            _ => Vec::new(),
        };
        let expiration_ms = inst.expiration_time.map_or(NO_EXPIRY, to_ms);
        let mem = MemRecord::build(&RecordParts {
            last_update_ms,
            // Set when the write is applied, under the partition lock.
            version: 0,
            expiration_ms,
            platform: inst.platform(),
            channel_expired: false,
            has_templates: !inst.templates.is_empty(),
            tags: &tag_ids,
            id: inst.id.as_str().as_bytes(),
            handle_key: inst.handle.key(),
            handle_extra: &extra_vec,
            user: inst.user_id.as_ref().map(|u| u.as_str().as_bytes()),
            log_pos: 0,
        });
        let stored = StoredRecord {
            id: inst.id.to_string(),
            platform: inst.platform().index() as u8,
            handle: inst.handle.key().to_vec(),
            handle_keys: extra_vec,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            user_id: inst.user_id.as_ref().map(|u| u.to_string()),
            templates: templates_to_stored(&inst.templates),
            expiration_ms: (expiration_ms != NO_EXPIRY).then_some(expiration_ms),
            push_channel_expired: false,
            last_update_ms,
        };
        let templates =
            (!inst.templates.is_empty()).then(|| shared_templates::intern(inst.templates.clone()));
        let prep = Prepared {
            pid,
            mem,
            encoded: store::encode(&stored),
            templates,
        };
        (prep, tag_ids)
    }

    /// Gives back one tag reference per id (see `interner.rs`).
    fn release_tags(&self, ids: impl IntoIterator<Item = TagId>) {
        for t in ids {
            self.inner.interner.release(t);
        }
    }

    /// `Ok` while storage works; once it has failed, the error every write gets. Writers call
    /// it under their partition write lock, so a write either precedes the failure's rollback
    /// (which takes every partition lock) or is refused before it changes anything.
    fn check_writable(&self) -> Result<(), RegistryError> {
        if self.inner.commit.is_broken() {
            return Err(self.storage_failed());
        }
        Ok(())
    }

    fn storage_failed(&self) -> RegistryError {
        RegistryError::StorageFailed {
            cause: self
                .inner
                .commit
                .failure()
                .unwrap_or_else(|| StorageFailure::msg("storage failed")),
        }
    }

    /// Waits for a write to be durable.
    fn wait(&self, p: Pending) -> Result<(), RegistryError> {
        let r = self.inner.commit.wait(p.seq);
        self.settled(p, r)
    }

    /// Waits for a write to be durable without blocking a thread.
    async fn wait_async(&self, p: Pending) -> Result<(), RegistryError> {
        let r = self.inner.commit.wait_async(p.seq).await;
        self.settled(p, r)
    }

    /// A write's result once it is durable: waits for its commit when one is pending.
    fn durable<T>(&self, (v, pending): (T, Option<Pending>)) -> Result<T, RegistryError> {
        if let Some(p) = pending {
            self.wait(p)?;
        }
        Ok(v)
    }

    /// [`Registry::durable`] without blocking a thread.
    async fn durable_async<T>(
        &self,
        (v, pending): (T, Option<Pending>),
    ) -> Result<T, RegistryError> {
        if let Some(p) = pending {
            self.wait_async(p).await?;
        }
        Ok(v)
    }

    /// The answer to a write once its wait is over. A write can be durable though its wait
    /// failed: its entry went into a flush that succeeded, but it took its commit number just
    /// after that flush read its target, and the next flush failed. Its position says so,
    /// and then it is acknowledged (it was not taken back either): acknowledged ⇔ durable.
    fn settled(&self, p: Pending, r: Result<(), StoreError>) -> Result<(), RegistryError> {
        match r {
            Ok(()) => Ok(()),
            Err(_) if p.pos < self.inner.log.durable_below() => Ok(()),
            Err(e) => Err(self.wait_failed(e)),
        }
    }

    fn wait_failed(&self, e: StoreError) -> RegistryError {
        if self.inner.commit.is_broken() {
            self.storage_failed()
        } else {
            RegistryError::Store(e)
        }
    }

    /// A new version: a hybrid clock in microseconds, larger than every version handed out
    /// or recovered before (see [`Version`]).
    fn next_version(&self) -> u64 {
        let now = now_us();
        let step = |c: u64| c.saturating_add(1).max(now);
        match self
            .inner
            .clock
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| Some(step(c)))
        {
            Ok(prev) | Err(prev) => step(prev),
        }
    }

    /// Counts a new installation against [`RegistryConfig::max_installations`].
    fn reserve_installation(&self) -> Result<(), RegistryError> {
        let n = &self.inner.installations;
        match self.inner.config.max_installations {
            None => {
                n.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            Some(max) => n
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                    (c < max).then_some(c + 1)
                })
                .map(|_| ())
                .map_err(|_| RegistryError::QuotaExceeded { max }),
        }
    }

    /// The checks of a write to `id` in `p` (write-locked): storage works, the precondition
    /// holds, and a new installation fits the quota (counted). Returns the id's slot.
    fn admit(
        &self,
        p: &Partition,
        id: &str,
        pre: Precondition,
    ) -> Result<Option<u32>, RegistryError> {
        self.check_writable()?;
        let slot = p.find_id(id);
        let current = slot.and_then(|s| p.record(s)).map(|r| Version(r.version()));
        pre.check(id, current)?;
        if slot.is_none() {
            self.reserve_installation()?;
        }
        Ok(slot)
    }

    /// Keeps what a change at log position `pos` replaced until the change is durable (see
    /// `undo.rs`); with a volatile store nothing can fail later, so it goes at once.
    fn retire(
        &self,
        p: &mut Partition,
        pos: u64,
        id: Box<str>,
        before: Option<(MemRecord, Option<partition::Templates>)>,
    ) {
        if self.inner.store.is_volatile() {
            if let Some((mem, _)) = before {
                self.release_tags(mem.view().tags());
            }
            return;
        }
        let durable = self.inner.log.durable_below();
        p.undo
            .trim(durable, |mem| self.release_tags(mem.view().tags()));
        p.undo.push(Undo { pos, id, before });
        if p.undo.len() > UNDO_PRESSURE {
            self.inner.undo_pressure.store(true, Ordering::Relaxed);
        }
    }

    /// Applies a write to store and memory if `pre` holds; returns what it did and the commit
    /// sequence number to wait for (`None` when there is nothing to wait for).
    fn apply(
        &self,
        inst: &Installation,
        pre: Precondition,
    ) -> Result<(WriteOutcome, Option<Pending>), RegistryError> {
        let _active = self.inner.commit.begin();
        self.check_writable()?;
        self.check_config(inst)?;
        let now = now_ms();
        let (prep, tag_ids) = self.prepare(inst, now);
        let r = self.apply_prepared(inst, prep, pre, now);
        if !matches!(r, Ok((WriteOutcome::Created | WriteOutcome::Updated, _))) {
            // Nothing installed: the interned tags' references go back.
            self.release_tags(tag_ids);
        }
        r
    }

    fn apply_prepared(
        &self,
        inst: &Installation,
        prep: Prepared,
        pre: Precondition,
        now: u64,
    ) -> Result<(WriteOutcome, Option<Pending>), RegistryError> {
        let platform = inst.platform();
        let hkey = inst.handle.key();
        let stripe = (hash_handle(platform, hkey) as usize) % HANDLE_STRIPES;
        let _claim = self.inner.stripes[stripe].lock();

        // Unchanged re-registration: no write, no index churn.
        {
            let p = self.inner.partitions[prep.pid as usize].read();
            if let Some(slot) = p.find_id(inst.id.as_str()) {
                if let Some(old) = p.record(slot) {
                    let fresh = now.saturating_sub(old.last_update_ms())
                        < self.inner.config.touch_interval.as_millis() as u64;
                    if fresh
                        && old.same_content(prep.mem.view())
                        && p.templates(slot) == prep.templates.as_ref()
                    {
                        pre.check(inst.id.as_str(), Some(Version(old.version())))?;
                        // The write that stored this content may still be in its commit
                        // window (server audit M11): acknowledge only once it is durable. A
                        // number taken now, after that write's entry is in the log (it was in
                        // the log before it was in memory), is covered by a flush that covers
                        // the entry.
                        let pending = !self.inner.store.is_volatile()
                            && old.log_pos() >= self.inner.log.durable_below();
                        let pos = old.log_pos();
                        let wait = pending.then(|| Pending {
                            seq: self.inner.commit.written(),
                            pos,
                        });
                        return Ok((WriteOutcome::Unchanged, wait));
                    }
                }
            }
        }

        // Does another installation hold this handle? Own partition first, then the others.
        let mut holder = None;
        let n = self.inner.partitions.len() as u16;
        for i in 0..n {
            let pid = (prep.pid + i) % n;
            let p = self.inner.partitions[pid as usize].read();
            if let Some(slot) = p.find_handle(platform, hkey) {
                let owner_is_self =
                    pid == prep.pid && p.record(slot).is_some_and(|r| r.id() == inst.id.as_str());
                if !owner_is_self {
                    holder = Some((pid, slot));
                }
                break;
            }
        }

        let (outcome, pos) = match holder {
            None => {
                let mut p = self.inner.partitions[prep.pid as usize].write();
                let slot = self.admit(&p, inst.id.as_str(), pre)?;
                let version = self.next_version();
                let mut w = self.inner.log.writer();
                let pos = w.record(prep.pid, version, &prep.encoded);
                if let Some(old) = slot.and_then(|s| p.record(s)) {
                    w.kill(old.log_pos());
                }
                w.finish();
                (self.install(&mut p, prep, version, pos, slot), pos)
            }
            Some((hpid, hslot)) => self.apply_with_handover(prep, inst, hpid, hslot, now, pre)?,
        };
        Ok((outcome, self.written().map(|seq| Pending { seq, pos })))
    }

    /// Numbers a write for group commit; `None` for a volatile store (nothing to wait for).
    /// Writes the chunks the write sealed to the store first, unless another writer is at it
    /// (call it after releasing the partition locks: a store insert takes tens of µs).
    fn written(&self) -> Option<u64> {
        let volatile = self.inner.store.is_volatile();
        // A write from an async variant leaves the store insert to the flusher thread, which
        // its wait wakes anyway: nothing on an async worker touches the store (audit M14).
        if volatile || !ON_RUNTIME.with(Cell::get) {
            self.inner.log.write_sealed_if_free();
        }
        if volatile {
            return None;
        }
        let seq = self.inner.commit.written();
        if self.inner.undo_pressure.swap(false, Ordering::Relaxed) {
            // Writers that wait late (a large `upsert_batch`) would otherwise keep every
            // record they replaced for rollback until their wait.
            self.inner.commit.request_flush(seq);
        }
        Some(seq)
    }

    /// Installs `prep` (at `version`, logged at `pos`) in `slot`, or in a new slot; keeps
    /// what it replaces for rollback.
    fn install(
        &self,
        p: &mut Partition,
        mut prep: Prepared,
        version: u64,
        pos: u64,
        slot: Option<u32>,
    ) -> WriteOutcome {
        prep.mem.set_log_pos(pos);
        prep.mem.set_version(version);
        let id: Box<str> = prep.mem.view().id().into();
        match slot {
            Some(slot) => {
                let before = p
                    .record(slot)
                    .map(|r| (r.to_mem(), p.templates(slot).cloned()));
                p.replace(slot, prep.mem, prep.templates);
                self.retire(p, pos, id, before);
                WriteOutcome::Updated
            }
            None => {
                p.insert(prep.mem, prep.templates);
                self.retire(p, pos, id, None);
                WriteOutcome::Created
            }
        }
    }

    /// Writes `prep` and marks the installation in (`hpid`, `hslot`), which holds the same
    /// handle, as expired — atomically in the store.
    fn apply_with_handover(
        &self,
        prep: Prepared,
        inst: &Installation,
        hpid: u16,
        hslot: u32,
        now: u64,
        pre: Precondition,
    ) -> Result<(WriteOutcome, u64), RegistryError> {
        let (first, second) = if hpid <= prep.pid {
            (hpid, prep.pid)
        } else {
            (prep.pid, hpid)
        };
        let mut g1 = self.inner.partitions[first as usize].write();
        let mut g2 = (first != second).then(|| self.inner.partitions[second as usize].write());
        let (own, other): (&mut Partition, Option<&mut Partition>) = match g2.as_deref_mut() {
            None => (&mut *g1, None),
            Some(p2) if second == prep.pid => (p2, Some(&mut *g1)),
            Some(p2) => (&mut *g1, Some(p2)),
        };
        let slot = self.admit(own, inst.id.as_str(), pre)?;
        let version = self.next_version();
        // Re-check the holder under the write locks: it may have moved on since the probe.
        let holder_part: &Partition = match &other {
            Some(o) => o,
            None => own,
        };
        let still = holder_part.record(hslot).filter(|r| {
            !r.channel_expired()
                && r.platform() == inst.platform()
                && r.handle_key() == inst.handle.key()
                && r.id() != inst.id.as_str()
        });
        let mut w = self.inner.log.writer();
        if let Some(old) = slot.and_then(|s| own.record(s)) {
            w.kill(old.log_pos());
        }
        let pos = w.record(prep.pid, version, &prep.encoded);
        let Some(old) = still else {
            w.finish();
            return Ok((self.install(own, prep, version, pos, slot), pos));
        };
        // Both records go into the same chunk (one lock hold): they survive a crash together.
        let x = self.log_expired(&mut w, holder_part, hpid, hslot, old, now);
        w.finish();
        // Own change first: undo records of a partition are in log order.
        let outcome = self.install(own, prep, version, pos, slot);
        let holder = match other {
            Some(o) => o,
            None => own,
        };
        holder.replace(hslot, x.mem, x.templates);
        self.retire(holder, x.pos, x.id, Some(x.before));
        Ok((outcome, x.pos))
    }

    /// Logs (with `w`) the copy of `old`, in partition `pid` at `slot`, marked
    /// `push_channel_expired`, replacing it; returns what the caller installs once the log
    /// writer is finished (`Partition::replace`, then `retire`).
    fn log_expired(
        &self,
        w: &mut log::Writer<'_>,
        part: &Partition,
        pid: u16,
        slot: u32,
        old: partition::Rec<'_>,
        now: u64,
    ) -> ExpiredCopy {
        let mut expired = self.stored_form(part, slot, old);
        expired.push_channel_expired = true;
        expired.last_update_ms = now;
        let version = self.next_version();
        let templates = part.templates(slot).cloned();
        w.kill(old.log_pos());
        let pos = w.record(pid, version, &store::encode(&expired));
        // The expired copy holds its own references; the old record keeps its own for rollback.
        for t in old.tags() {
            self.inner.interner.retain(t);
        }
        ExpiredCopy {
            mem: rebuild_mem(old, true, now, version, pos),
            before: (old.to_mem(), templates.clone()),
            templates,
            id: old.id().into(),
            pos,
        }
    }

    /// Takes back every write that is not durable, after the store failed (see `undo.rs`):
    /// under every partition's write lock at once, so no reader sees half of it.
    fn roll_back(&self) -> usize {
        let mut guards: Vec<_> = self.inner.partitions.iter().map(|p| p.write()).collect();
        let durable = self.inner.log.durable_below();
        let mut undone = 0;
        for p in guards.iter_mut() {
            for u in p.undo.take_undurable(durable) {
                undone += 1;
                let slot = p.find_id(&u.id);
                if let Some(r) = slot.and_then(|s| p.record(s)) {
                    let tags: Vec<TagId> = r.tags().collect();
                    self.release_tags(tags);
                }
                match (slot, u.before) {
                    (Some(s), Some((mem, t))) => p.replace(s, mem, t),
                    (Some(s), None) => p.remove(s),
                    (None, Some((mem, t))) => {
                        p.insert(mem, t);
                    }
                    (None, None) => {}
                }
            }
        }
        let n = guards.iter().map(|p| p.len()).sum();
        self.inner.installations.store(n, Ordering::Release);
        undone
    }

    fn stored_form(&self, p: &Partition, slot: u32, r: Rec<'_>) -> StoredRecord {
        StoredRecord {
            id: r.id().to_string(),
            platform: r.platform().index() as u8,
            handle: r.handle_key().to_vec(),
            handle_keys: r.handle_extra().to_vec(),
            tags: r.tags().map(|t| self.inner.interner.name(t)).collect(),
            user_id: r.user().map(str::to_string),
            templates: p
                .templates(slot)
                .map_or_else(Vec::new, |t| templates_to_stored(t)),
            expiration_ms: (r.expiration_ms() != NO_EXPIRY).then_some(r.expiration_ms()),
            push_channel_expired: r.channel_expired(),
            last_update_ms: r.last_update_ms(),
        }
    }

    fn to_installation(&self, p: &Partition, slot: u32, r: Rec<'_>) -> Installation {
        Installation {
            // Every stored id and tag was validated before it was written.
            id: InstallationId::new(r.id()).unwrap_or_else(|_| unreachable_id(r.id())),
            handle: handle_of(r),
            tags: r
                .tags()
                .filter_map(|t| crate::model::Tag::new(self.inner.interner.name(t)).ok())
                .collect(),
            user_id: r.user().and_then(|u| UserId::new(u).ok()),
            templates: p
                .templates(slot)
                .map_or_else(BTreeMap::new, |t| (**t).clone()),
            expiration_time: (r.expiration_ms() != NO_EXPIRY).then(|| from_ms(r.expiration_ms())),
            push_channel_expired: r.channel_expired(),
            last_update: from_ms(r.last_update_ms()),
        }
    }

    /// Creates or replaces an installation; returns once the write is durable.
    ///
    /// Re-registering an unchanged installation writes nothing (see
    /// [`RegistryConfig::touch_interval`]), but still waits if the write that stored that
    /// content is not durable yet. Taking a handle another installation holds marks that one
    /// `push_channel_expired`.
    pub fn upsert(&self, inst: Installation) -> Result<WriteOutcome, RegistryError> {
        self.upsert_if(inst, Precondition::Any)
    }

    /// [`Registry::upsert`] if `pre` holds when the write is applied (checked under the lock
    /// that orders writes to the installation); [`RegistryError::VersionMismatch`] otherwise.
    pub fn upsert_if(
        &self,
        inst: Installation,
        pre: Precondition,
    ) -> Result<WriteOutcome, RegistryError> {
        self.durable(self.apply(&inst, pre)?)
    }

    /// [`Registry::upsert`] for async callers: the store write happens inline (it does not wait
    /// for the disk), the wait for durability does not block a thread.
    pub async fn upsert_async(&self, inst: Installation) -> Result<WriteOutcome, RegistryError> {
        self.upsert_if_async(inst, Precondition::Any).await
    }

    /// [`Registry::upsert_if`] for async callers (see [`Registry::upsert_async`]).
    pub async fn upsert_if_async(
        &self,
        inst: Installation,
        pre: Precondition,
    ) -> Result<WriteOutcome, RegistryError> {
        let applied = on_runtime(|| self.apply(&inst, pre))?;
        self.durable_async(applied).await
    }

    /// Marks installation `id` `push_channel_expired` (it stops receiving sends) if it still
    /// holds `handle` and is not expired yet, as taking the handle within one registry does
    /// for the previous holder. Cluster mode calls it when an installation of another
    /// partition took the handle. Whether it marked it; durable when it returns.
    #[cfg(feature = "cluster")]
    pub(crate) async fn expire_channel_async(
        &self,
        id: &InstallationId,
        handle: &PushHandle,
    ) -> Result<bool, RegistryError> {
        let applied = on_runtime(|| -> Result<(bool, Option<Pending>), RegistryError> {
            let _active = self.inner.commit.begin();
            let pid = self.partition_of(id.as_str());
            let mut p = self.inner.partitions[pid as usize].write();
            // Under the partition lock, as every write checks (see `check_writable`).
            self.check_writable()?;
            let Some(slot) = p.find_id(id.as_str()) else {
                return Ok((false, None));
            };
            let Some(old) = p.record(slot).filter(|r| {
                !r.channel_expired()
                    && r.platform() == handle.platform()
                    && r.handle_key() == handle.key()
            }) else {
                return Ok((false, None));
            };
            let mut w = self.inner.log.writer();
            let x = self.log_expired(&mut w, &p, pid, slot, old, now_ms());
            w.finish();
            p.replace(slot, x.mem, x.templates);
            self.retire(&mut p, x.pos, x.id, Some(x.before));
            drop(p);
            Ok((true, self.written().map(|seq| Pending { seq, pos: x.pos })))
        })?;
        self.durable_async(applied).await
    }

    /// Writes many installations with one wait for durability. Results are in input order;
    /// an invalid installation fails alone.
    pub fn upsert_batch(
        &self,
        insts: impl IntoIterator<Item = Installation>,
    ) -> Vec<Result<WriteOutcome, RegistryError>> {
        let mut results = Vec::new();
        let mut waits = Vec::new();
        for inst in insts {
            let r = self.apply(&inst, Precondition::Any);
            waits.push(r.as_ref().ok().and_then(|(_, p)| *p));
            results.push(r.map(|(o, _)| o));
        }
        let Some(last) = waits.iter().flatten().map(|p| p.seq).max() else {
            return results;
        };
        if let Err(e) = self.inner.commit.wait(last) {
            let failure = match e {
                StoreError::Engine(f) => f,
                other => StorageFailure::msg(other.to_string()),
            };
            let durable_below = self.inner.log.durable_below();
            for (r, p) in results.iter_mut().zip(waits) {
                // A write durable despite the failed wait is acknowledged (see `settled`).
                if p.is_some_and(|p| p.pos >= durable_below) {
                    *r = Err(if self.inner.commit.is_broken() {
                        self.storage_failed()
                    } else {
                        StoreError::Engine(failure.clone()).into()
                    });
                }
            }
        }
        results
    }

    /// The installation with this id and its version, if any.
    pub fn get_versioned(&self, id: &InstallationId) -> Option<(Installation, Version)> {
        let pid = self.partition_of(id.as_str());
        let p = self.inner.partitions[pid as usize].read();
        let slot = p.find_id(id.as_str())?;
        let r = p.record(slot)?;
        Some((self.to_installation(&p, slot, r), Version(r.version())))
    }

    /// The version of the installation with this id, if any (cheaper than reading it).
    pub fn version(&self, id: &InstallationId) -> Option<Version> {
        let pid = self.partition_of(id.as_str());
        let p = self.inner.partitions[pid as usize].read();
        let slot = p.find_id(id.as_str())?;
        p.record(slot).map(|r| Version(r.version()))
    }

    /// One attempt of a patch: reads the installation, checks it is at `at` (if given),
    /// applies `ops`, and writes the result if nothing changed it meanwhile.
    fn patch_once(
        &self,
        id: &InstallationId,
        ops: &[PatchOp],
        at: Option<Version>,
    ) -> Result<(WriteOutcome, Option<Pending>), RegistryError> {
        let (mut inst, current) = self
            .get_versioned(id)
            .ok_or_else(|| RegistryError::NotFound(id.to_string()))?;
        if let Some(at) = at {
            Precondition::Version(at).check(id.as_str(), Some(current))?;
        }
        apply_ops(&mut inst, ops)?;
        self.apply(&inst, Precondition::Version(current))
    }

    /// A patch retried while concurrent writes change the installation under it.
    fn patch_retrying(
        &self,
        id: &InstallationId,
        ops: &[PatchOp],
    ) -> Result<(WriteOutcome, Option<Pending>), RegistryError> {
        let mut attempt = 0;
        loop {
            match self.patch_once(id, ops, None) {
                Err(RegistryError::VersionMismatch { .. }) if attempt < PATCH_ATTEMPTS => {
                    attempt += 1;
                    std::thread::yield_now();
                }
                r => return r,
            }
        }
    }

    /// Applies Notification Hubs PATCH operations to an existing installation; durable when
    /// it returns.
    ///
    /// Read, apply and write are one compare-and-set: when another write changes the
    /// installation in between, the operations are applied again to the new content (up to
    /// 64 times, then [`RegistryError::VersionMismatch`]), so concurrent patches never lose
    /// each other's changes, and a patch racing a delete answers
    /// [`RegistryError::NotFound`] rather than bringing the installation back. Operations
    /// computed from an earlier read (a JSON Patch `replace` compiled against it) should use
    /// [`Registry::patch_at`] instead.
    pub fn patch(
        &self,
        id: &InstallationId,
        ops: &[PatchOp],
    ) -> Result<WriteOutcome, RegistryError> {
        self.durable(self.patch_retrying(id, ops)?)
    }

    /// [`Registry::patch`] for async callers: the wait for durability does not block a thread.
    pub async fn patch_async(
        &self,
        id: &InstallationId,
        ops: &[PatchOp],
    ) -> Result<WriteOutcome, RegistryError> {
        // Like every `_async` write: the chunk insert is left to the flusher, so no store
        // call runs on the async worker (a blocking store, the cluster's, would panic).
        let applied = on_runtime(|| self.patch_retrying(id, ops))?;
        self.durable_async(applied).await
    }

    /// Applies `ops` to the installation as it was at version `at` (read with
    /// [`Registry::get_versioned`], the version the operations were computed against), or
    /// fails with [`RegistryError::VersionMismatch`] if it has changed since (or was deleted:
    /// `current` is then `None`): read it again, recompute the operations and retry.
    /// [`RegistryError::NotFound`] if it does not exist. Durable when it returns.
    pub fn patch_at(
        &self,
        id: &InstallationId,
        ops: &[PatchOp],
        at: Version,
    ) -> Result<WriteOutcome, RegistryError> {
        self.durable(self.patch_once(id, ops, Some(at))?)
    }

    /// [`Registry::patch_at`] for async callers: the wait for durability does not block a
    /// thread.
    pub async fn patch_at_async(
        &self,
        id: &InstallationId,
        ops: &[PatchOp],
        at: Version,
    ) -> Result<WriteOutcome, RegistryError> {
        let applied = on_runtime(|| self.patch_once(id, ops, Some(at)))?;
        self.durable_async(applied).await
    }

    /// Logs a tombstone for the installation in `slot` and removes it from memory (keeping
    /// it for rollback until the tombstone is durable).
    /// Returns the tombstone's log position (0 if the slot was empty).
    fn remove_slot(&self, p: &mut Partition, pid: u16, slot: u32) -> Result<u64, RegistryError> {
        self.check_writable()?;
        let Some(r) = p.record(slot) else {
            return Ok(0);
        };
        let before = (r.to_mem(), p.templates(slot).cloned());
        let id: Box<str> = r.id().into();
        let mut w = self.inner.log.writer();
        let pos = w.tombstone(pid, r.id());
        w.kill(r.log_pos());
        w.finish();
        p.remove(slot);
        self.inner.installations.fetch_sub(1, Ordering::AcqRel);
        self.retire(p, pos, id, Some(before));
        Ok(pos)
    }

    /// Deletes `id` if `pre` holds; returns whether it existed and what to wait for.
    fn delete_once(
        &self,
        id: &InstallationId,
        pre: Precondition,
    ) -> Result<(bool, Option<Pending>), RegistryError> {
        let _active = self.inner.commit.begin();
        let pid = self.partition_of(id.as_str());
        let pos = {
            let mut p = self.inner.partitions[pid as usize].write();
            self.check_writable()?;
            let slot = p.find_id(id.as_str());
            let current = slot.and_then(|s| p.record(s)).map(|r| Version(r.version()));
            pre.check(id.as_str(), current)?;
            let Some(slot) = slot else {
                return Ok((false, None));
            };
            self.remove_slot(&mut p, pid, slot)?
        };
        Ok((true, self.written().map(|seq| Pending { seq, pos })))
    }

    /// Deletes an installation; `Ok(false)` when it did not exist. Durable when it returns.
    pub fn delete(&self, id: &InstallationId) -> Result<bool, RegistryError> {
        self.delete_if(id, Precondition::Any)
    }

    /// [`Registry::delete`] if `pre` holds when the delete is applied (an `If-Match`);
    /// [`RegistryError::VersionMismatch`] otherwise. Durable when it returns.
    pub fn delete_if(&self, id: &InstallationId, pre: Precondition) -> Result<bool, RegistryError> {
        self.durable(self.delete_once(id, pre)?)
    }

    /// [`Registry::delete`] for async callers: the wait for durability does not block a thread.
    pub async fn delete_async(&self, id: &InstallationId) -> Result<bool, RegistryError> {
        self.delete_if_async(id, Precondition::Any).await
    }

    /// [`Registry::delete_if`] for async callers.
    pub async fn delete_if_async(
        &self,
        id: &InstallationId,
        pre: Precondition,
    ) -> Result<bool, RegistryError> {
        let applied = on_runtime(|| self.delete_once(id, pre))?;
        self.durable_async(applied).await
    }

    /// The storage failure that stopped writes, if storage has failed (see
    /// [`RegistryError::StorageFailed`]). Cheap: for health and readiness checks.
    pub fn storage_failure(&self) -> Option<StorageFailure> {
        self.inner.commit.failure()
    }

    /// The installation with this id, if any.
    pub fn get(&self, id: &InstallationId) -> Option<Installation> {
        let pid = self.partition_of(id.as_str());
        let p = self.inner.partitions[pid as usize].read();
        let slot = p.find_id(id.as_str())?;
        let r = p.record(slot)?;
        Some(self.to_installation(&p, slot, r))
    }

    /// Number of installations stored (including ones whose channel expired).
    pub fn count(&self) -> usize {
        self.inner.partitions.iter().map(|p| p.read().len()).sum()
    }

    /// Calls `f` with every installation's id, without decoding the installations (listings
    /// pick a page by id this way). Read like [`Registry::for_each`].
    pub fn for_each_id(&self, mut f: impl FnMut(&str)) {
        self.scan(|_, _, r| r.id().to_owned(), |id| f(&id));
    }

    /// Calls `f` with every installation. Each partition is read a chunk at a time under its
    /// read lock (never while `f` runs); concurrent writes may or may not be seen.
    pub fn for_each(&self, f: impl FnMut(Installation)) {
        self.scan(|p, s, r| self.to_installation(p, s, r), f);
    }

    /// Every record of every partition: `read` under the partition's read lock, a chunk at a
    /// time; `f` on the results with no lock held.
    fn scan<T>(&self, mut read: impl FnMut(&Partition, u32, Rec<'_>) -> T, mut f: impl FnMut(T)) {
        const CHUNK: usize = 4096;
        for part in self.inner.partitions.iter() {
            let mut from = 0u32;
            loop {
                let (batch, next) = {
                    let p = part.read();
                    let mut next = None;
                    let batch: Vec<T> = p
                        .iter_from(from)
                        .take(CHUNK)
                        .map(|(s, r)| {
                            next = Some(s + 1);
                            read(&p, s, r)
                        })
                        .collect();
                    (batch, next)
                };
                batch.into_iter().for_each(&mut f);
                match next {
                    Some(n) => from = n,
                    None => break,
                }
            }
        }
    }

    /// Whether resolving `audience` is cheap enough for the caller's thread, whatever the
    /// registry's size: a point lookup ([`Audience::is_point_lookup`]), or a tag expression
    /// without `!` whose plain tags are carried by at most [`SMALL_AUDIENCE`] installations
    /// in all (`$InstallationId`/`$UserId` leaves count as one). Its evaluation is then a few
    /// small bitmap operations per partition, cheaper than a hand-off to the blocking pool and
    /// the thread wake-ups it costs (a per-event send to a per-user tag). `!x` is the
    /// complement of `x`'s bitmap, as large as the partition.
    pub(crate) fn resolves_cheaply(&self, audience: &Audience) -> bool {
        use crate::audience::ExprNode;
        /// Installations the leaves of `n` are carried by in all, or `None` past `left`
        /// (or under a `!`).
        fn size(n: &ExprNode, refs: &dyn Fn(&str) -> u32, left: u64) -> Option<u64> {
            let own = match n {
                ExprNode::Tag(TagRef::Tag(t)) => u64::from(refs(t.as_str())),
                ExprNode::Tag(TagRef::InstallationId(_) | TagRef::UserId(_)) => 1,
                ExprNode::Not(_) => return None,
                ExprNode::And(l, r) | ExprNode::Or(l, r) => {
                    let l = size(l, refs, left)?;
                    l + size(r, refs, left - l)?
                }
            };
            (own <= left).then_some(own)
        }
        if audience.is_point_lookup() {
            return true;
        }
        match audience {
            Audience::Expr(e) => size(
                e.root(),
                &|t| self.inner.interner.references_of(t),
                u64::from(SMALL_AUDIENCE),
            )
            .is_some(),
            _ => false,
        }
    }

    /// Resolves an audience to one bitmap of slots per partition.
    pub fn resolve(&self, audience: &Audience) -> Resolution {
        // Before the lookups: the ids compiled must not be reused while this lives.
        let pin = self.inner.interner.pin();
        let compiled = match audience {
            Audience::All => Compiled::All,
            Audience::Platform(_) => Compiled::All,
            Audience::Expr(e) => Compiled::new(e, &|t| self.inner.interner.lookup(t)),
            Audience::Installation(id) => Compiled::InstallationId(id.as_str().into()),
            Audience::User(u) => Compiled::UserId(u.as_str().into()),
        };
        let platform = match audience {
            Audience::Platform(p) => Some(*p),
            _ => None,
        };
        let n = self.inner.partitions.len();
        let now = now_ms();
        // An installation id is in its hash's partition only (`partition_of`): the others
        // are not looked at (a per-event send to one installation took 16 read locks).
        let only = match &compiled {
            Compiled::InstallationId(id) => Some(self.partition_of(id) as usize),
            _ => None,
        };
        let eval_one = |pid: usize| -> RoaringBitmap {
            if only.is_some_and(|o| o != pid) {
                return RoaringBitmap::new();
            }
            let p = self.inner.partitions[pid].read();
            let mut b = compiled.eval(&p).into_owned();
            if let Some(pl) = platform {
                b &= &p.platforms[pl];
            }
            if !p.with_expiry.is_empty() {
                // Only the matches with an expiry: a small audience stays small work however
                // many installations of the partition expire.
                let expiring = &b & &p.with_expiry;
                for s in &expiring {
                    if p.record(s).is_some_and(|r| r.expiration_ms() <= now) {
                        b.remove(s);
                    }
                }
            }
            b
        };
        // Threads only for bitmap work on a large registry: a point lookup (one installation
        // or user id) is a hash lookup per partition, a few rare tags are small bitmaps, and
        // spawning threads for them cost a per-event send more than the lookups themselves.
        let parallel = n > 1 && !self.resolves_cheaply(audience) && self.count() >= 200_000;
        let parts: Vec<RoaringBitmap> = if !parallel {
            (0..n).map(eval_one).collect()
        } else {
            let workers = std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(n);
            let mut out: Vec<Option<RoaringBitmap>> = vec![None; n];
            std::thread::scope(|s| {
                let chunks: Vec<_> = (0..workers)
                    .map(|w| {
                        let eval_one = &eval_one;
                        s.spawn(move || {
                            (w..n)
                                .step_by(workers)
                                .map(|pid| (pid, eval_one(pid)))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                for h in chunks {
                    // A panic in evaluation is a bug; propagate it.
                    for (pid, b) in h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)) {
                        out[pid] = Some(b);
                    }
                }
            });
            out.into_iter().map(Option::unwrap_or_default).collect()
        };
        Resolution {
            registry: self.clone(),
            parts,
            compiled,
            platform,
            _pin: pin,
        }
    }

    /// Resolves the audience of a template send: the devices with templates that are in
    /// `audience`, each with the names of its templates that match. For a tag expression a
    /// template matches when the device's tags *or the template's own tags* satisfy it
    /// (nh-rest-api.md §6.1); every device with templates is examined when read, so the cost
    /// grows with the number of installations that have templates.
    pub fn resolve_templates(&self, audience: &Audience) -> TemplateResolution {
        let pin = self.inner.interner.pin();
        let n = self.inner.partitions.len();
        let compiled = match audience {
            Audience::Installation(id) => Some(Compiled::InstallationId(id.as_str().into())),
            Audience::User(u) => Some(Compiled::UserId(u.as_str().into())),
            _ => None,
        };
        let parts = (0..n)
            .map(|pid| {
                let p = self.inner.partitions[pid].read();
                let mut b = p.with_templates();
                if let Audience::Platform(pl) = audience {
                    b &= &p.platforms[*pl];
                }
                if let Some(c) = &compiled {
                    b &= c.eval(&p).as_ref();
                }
                b
            })
            .collect();
        let tag_ids = match audience {
            Audience::Expr(e) => e
                .tags()
                .filter_map(|t| match t {
                    TagRef::Tag(tag) => Some((
                        tag.as_str().to_owned(),
                        self.inner.interner.lookup(tag.as_str()),
                    )),
                    _ => None,
                })
                .collect(),
            _ => HashMap::new(),
        };
        TemplateResolution {
            registry: self.clone(),
            parts,
            audience: audience.clone(),
            tag_ids,
            _pin: pin,
        }
    }

    /// One bitmap per partition of the slots `ids` occupy now (ids not stored are left out).
    fn slots_of<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a InstallationId>,
    ) -> Vec<RoaringBitmap> {
        let n = self.inner.partitions.len();
        let mut by_part: Vec<Vec<&str>> = vec![Vec::new(); n];
        for id in ids {
            by_part[self.partition_of(id.as_str()) as usize].push(id.as_str());
        }
        by_part
            .into_iter()
            .enumerate()
            .map(|(pid, ids)| {
                if ids.is_empty() {
                    return RoaringBitmap::new();
                }
                let p = self.inner.partitions[pid].read();
                ids.into_iter().filter_map(|id| p.find_id(id)).collect()
            })
            .collect()
    }

    /// Deletes installations whose handles the push services reported dead. An installation is
    /// kept when it no longer carries that handle or was written after `invalid_since`.
    /// Durable when it returns.
    pub fn prune(&self, batch: &[PruneRequest]) -> Result<PruneReport, RegistryError> {
        self.prune_marking(batch, &mut |_| {})
    }

    /// [`Registry::prune`], calling `pruned(i)` for each request `i` whose installation was
    /// deleted (before the batch is durable; the result says whether it became so).
    pub(crate) fn prune_marking(
        &self,
        batch: &[PruneRequest],
        pruned: &mut dyn FnMut(usize),
    ) -> Result<PruneReport, RegistryError> {
        let mut report = PruneReport::default();
        let mut last = 0;
        for (i, req) in batch.iter().enumerate() {
            let pid = self.partition_of(req.installation_id.as_str());
            let mut p = self.inner.partitions[pid as usize].write();
            let Some(slot) = p.find_id(req.installation_id.as_str()) else {
                report.stale += 1;
                continue;
            };
            let Some(r) = p.record(slot) else { continue };
            if r.platform() != req.handle.platform() || r.handle_key() != req.handle.key() {
                report.stale += 1;
                continue;
            }
            if let Some(t) = req.invalid_since {
                if r.last_update_ms() > to_ms(t) {
                    report.kept_updated += 1;
                    continue;
                }
            }
            self.remove_slot(&mut p, pid, slot)?;
            drop(p);
            report.pruned += 1;
            pruned(i);
            last = self.written().unwrap_or(0);
        }
        if last > 0 {
            self.inner.commit.wait(last)?;
        }
        Ok(report)
    }

    /// Deletes every installation whose expiration time has passed; returns how many. The
    /// background reaper calls this every [`RegistryConfig::reap_interval`].
    pub fn reap_expired(&self) -> Result<usize, RegistryError> {
        let now = now_ms();
        let mut n = 0;
        let mut last = 0;
        for (pid, part) in self.inner.partitions.iter().enumerate() {
            let due: Vec<u32> = {
                let p = part.read();
                p.with_expiry
                    .iter()
                    .filter(|&s| p.record(s).is_some_and(|r| r.expiration_ms() <= now))
                    .collect()
            };
            if due.is_empty() {
                continue;
            }
            let mut p = part.write();
            let before = n;
            for s in due {
                let Some(r) = p.record(s) else { continue };
                if r.expiration_ms() > now {
                    continue;
                }
                self.remove_slot(&mut p, pid as u16, s)?;
                n += 1;
            }
            drop(p);
            // One number, taken after the partition lock is released (`written` writes sealed
            // chunks to the store), covers every tombstone appended above.
            if n > before {
                last = self.written().unwrap_or(0);
            }
        }
        if last > 0 {
            self.inner.commit.wait(last)?;
        }
        Ok(n)
    }

    /// Counters describing the registry.
    pub fn stats(&self) -> RegistryStats {
        let mut st = RegistryStats {
            installations: 0,
            sendable: 0,
            partitions: self.inner.partitions.len(),
            distinct_tags: self.inner.interner.len(),
            index_heap_bytes: 0,
            flushes: self.inner.commit.flushes(),
            log_chunks: 0,
            log_entries: 0,
            log_live: 0,
        };
        (st.log_chunks, st.log_entries, st.log_live, _) = self.inner.log.totals();
        for part in self.inner.partitions.iter() {
            let p = part.read();
            st.installations += p.len();
            st.sendable += p.all.len();
            st.index_heap_bytes += p.heap_bytes();
        }
        st
    }

    /// Compaction passes ([`Registry::compact`]) until one finds less than a full batch or
    /// `stop` says to end; returns the chunks compacted. What the background thread runs each
    /// interval: a single pass per interval fell behind a sustained write load (the soak seals
    /// more than a batch of chunks a minute), and the log, and sled's memory holding it, grew
    /// without bound (docs/benchmarks.md, "Server soak").
    pub(crate) fn compact_until_done(
        &self,
        stop: impl Fn() -> bool,
    ) -> Result<usize, RegistryError> {
        let mut total = 0;
        loop {
            let n = self.compact()?;
            total += n;
            if n < COMPACTION_BATCH || stop() {
                return Ok(total);
            }
        }
    }

    /// Bytes the store uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, RegistryError> {
        Ok(self.inner.store.size_on_disk()?)
    }

    /// Rewrites sparsely live log chunks (less than half of their entries live) and deletes
    /// them, at most 256 per call, oldest first; returns how many chunks were
    /// compacted. On a store that can only drop its oldest chunks (cluster mode's partition
    /// log) it rewrites the oldest chunks instead, once less than half of the whole log is live
    /// (`Log::prefix_candidates`). The background thread calls this every [`RegistryConfig::reap_interval`],
    /// again and again while a call compacts a full batch.
    pub fn compact(&self) -> Result<usize, RegistryError> {
        self.check_writable()?;
        let candidates = match self.inner.store.compaction() {
            store::Compaction::Any => self.inner.log.compaction_candidates(COMPACTION_BATCH),
            store::Compaction::Prefix => self.inner.log.prefix_candidates(COMPACTION_BATCH),
            store::Compaction::Off => return Ok(0),
        };
        let mut retired = Vec::new();
        for seq in candidates {
            let Some(bytes) = self.inner.store.get(seq)? else {
                self.inner.log.retire(seq);
                continue;
            };
            let es = log::entries(seq, &bytes)?;
            let oldest = self.inner.log.oldest() == Some(seq);
            let mut pids: Vec<u16> = es.iter().map(|e| e.partition).collect();
            pids.sort_unstable();
            pids.dedup();
            for pid in pids {
                let Some(part) = self.inner.partitions.get(pid as usize) else {
                    continue;
                };
                let mut p = part.write();
                let mut w = self.inner.log.writer();
                for e in es.iter().filter(|e| e.partition == pid) {
                    if log::is_record(e.kind) {
                        let id = store::access(b"log", e.record()?.1)?.id.as_str();
                        let Some(slot) = p.find_id(id) else { continue };
                        if p.record(slot).is_some_and(|r| r.log_pos() == e.pos) {
                            let moved = w.moved(e);
                            w.kill(e.pos);
                            p.set_log_pos(slot, moved);
                        }
                    } else {
                        // A tombstone matters only while the id is absent (a newer record
                        // supersedes everything older) and an older chunk may hold a record
                        // of it. Moving it while the id exists would put it after the newer
                        // record and delete it on replay.
                        w.drop_tombstone(e.pos);
                        let id = String::from_utf8_lossy(e.payload);
                        if !oldest && p.find_id(&id).is_none() {
                            w.tombstone(pid, &id);
                        }
                    }
                }
                w.finish();
            }
            self.inner.log.retire(seq);
            retired.push(seq);
        }
        if retired.is_empty() {
            return Ok(0);
        }
        // The moved entries must be durable before the old chunks go. A failed sync is a
        // storage failure like the group commit's (see `commit.rs`).
        if let Err(e) = self.inner.log.sync() {
            self.inner.commit.fail(match e {
                StoreError::Engine(f) => f,
                other => StorageFailure::msg(other.to_string()),
            });
            return Err(self.storage_failed());
        }
        self.inner.store.remove_many(&retired)?;
        Ok(retired.len())
    }

    /// Checks every invariant of `docs/architecture.md` (Registry): per partition (see
    /// `partition.rs`); that no handle has two live owners across partitions; that replaying the
    /// durable log gives exactly the installations in memory, each at the log position memory
    /// records; and that the log's live counters match. Syncs the log first. Expensive: for
    /// tests and tools.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.inner.log.sync().map_err(|e| e.to_string())?;
        // Replay the log: id -> (position, record) of the latest write, None if deleted.
        type Replayed = Option<(u64, u16, u64, StoredRecord)>;
        let mut replay: hashbrown::HashMap<String, Replayed> = hashbrown::HashMap::new();
        let mut entries_per_chunk: BTreeMap<u64, u32> = BTreeMap::new();
        self.inner
            .store
            .scan(&mut |seq, bytes| {
                let es = log::entries(seq, bytes)?;
                entries_per_chunk.insert(seq, es.len() as u32);
                for e in es {
                    if log::is_record(e.kind) {
                        let (version, payload) = e.record()?;
                        let rec = store::decode(b"log", payload)?;
                        let version = version.unwrap_or(version_of_time(rec.last_update_ms));
                        replay.insert(rec.id.clone(), Some((e.pos, e.partition, version, rec)));
                    } else {
                        replay.insert(String::from_utf8_lossy(e.payload).into_owned(), None);
                    }
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        let stats = self.inner.log.chunk_stats();
        if !self.inner.store.is_volatile() {
            for (seq, n) in &entries_per_chunk {
                if stats.get(seq).map(|c| c.entries) != Some(*n) {
                    return Err(format!(
                        "log chunk {seq}: {n} entries stored, counters say {:?}",
                        stats.get(seq)
                    ));
                }
            }
        }
        let mut live: BTreeMap<u64, u32> = BTreeMap::new();
        let mut owners: hashbrown::HashMap<(Platform, Vec<u8>), String> = hashbrown::HashMap::new();
        let mut in_memory = 0usize;
        for (pid, part) in self.inner.partitions.iter().enumerate() {
            let p = part.read();
            p.check_invariants()
                .map_err(|e| format!("partition {pid}: invariant {e}"))?;
            in_memory += p.len();
            for (slot, r) in p.iter() {
                *live.entry(log::chunk_of(r.log_pos())).or_default() += 1;
                if self.partition_of(r.id()) as usize != pid {
                    return Err(format!(
                        "{:?} is in partition {pid}, its hash says otherwise",
                        r.id()
                    ));
                }
                if !self.inner.store.is_volatile() {
                    match replay.get(r.id()) {
                        Some(Some((pos, lp, version, rec))) => {
                            if *version != r.version() {
                                return Err(format!(
                                    "{:?}: memory says version {}, the log {version}",
                                    r.id(),
                                    r.version()
                                ));
                            }
                            if *pos != r.log_pos() || *lp as usize != pid {
                                return Err(format!(
                                    "{:?}: memory says log position {}, the log {pos}",
                                    r.id(),
                                    r.log_pos()
                                ));
                            }
                            if self.stored_form(&p, slot, r) != *rec {
                                return Err(format!(
                                    "{:?} differs between the log and memory",
                                    r.id()
                                ));
                            }
                        }
                        _ => return Err(format!("{:?} is in memory but not in the log", r.id())),
                    }
                }
                if r.channel_expired() {
                    continue;
                }
                if let Some(other) =
                    owners.insert((r.platform(), r.handle_key().to_vec()), r.id().to_string())
                {
                    return Err(format!("handle owned by both {other:?} and {:?}", r.id()));
                }
            }
        }
        // Tag references: one per tag of every record in memory or kept for rollback, and
        // every referenced id names its tag (`interner.rs`).
        let mut refs: BTreeMap<TagId, u32> = BTreeMap::new();
        for part in self.inner.partitions.iter() {
            let p = part.read();
            let kept = p.undo.records().map(|m| m.view());
            for r in p.iter().map(|(_, r)| r).chain(kept) {
                for t in r.tags() {
                    *refs.entry(t).or_default() += 1;
                }
            }
        }
        let counted: BTreeMap<TagId, u32> = self.inner.interner.references().into_iter().collect();
        if counted != refs {
            let differ = refs
                .keys()
                .chain(counted.keys())
                .find(|t| refs.get(t) != counted.get(t))
                .copied();
            return Err(format!(
                "tag references: {} ids counted, {} referenced; first difference: id {differ:?} \
                 counted {:?}, referenced {:?}",
                counted.len(),
                refs.len(),
                differ.and_then(|t| counted.get(&t)),
                differ.and_then(|t| refs.get(&t))
            ));
        }
        for &t in refs.keys() {
            let name = self.inner.interner.name(t);
            if self.inner.interner.lookup(&name) != Some(t) {
                return Err(format!("tag id {t} ({name:?}) is not found by its text"));
            }
        }
        if !self.inner.store.is_volatile() {
            let durable = replay.values().filter(|v| v.is_some()).count();
            if durable != in_memory {
                return Err(format!(
                    "{durable} installations in the log, {in_memory} in memory"
                ));
            }
            for (seq, c) in &stats {
                if c.live != live.get(seq).copied().unwrap_or(0) {
                    return Err(format!(
                        "log chunk {seq}: live counter {} but {} live records",
                        c.live,
                        live.get(seq).copied().unwrap_or(0)
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        *self.reaper.0.lock() = true;
        self.reaper.1.notify_all();
        fn close(commit: &GroupCommit, store: &dyn Store) {
            commit.shutdown();
            let _ = store.flush();
        }
        // A store that needs the runtime's workers, dropped on one of them: joining the
        // flusher here would wait for a store call that waits for this worker (with every
        // worker so blocked, forever: seen in cluster mode when a NATS server died and
        // partitions stepped down on both workers of a 2-core node). Close on a thread.
        if self.store.waits_on_runtime() && tokio::runtime::Handle::try_current().is_ok() {
            let (commit, store) = (self.commit.clone(), self.store.clone());
            let spawned = std::thread::Builder::new()
                .name("tagcast-registry-close".into())
                .spawn(move || close(&commit, store.as_ref()));
            if spawned.is_ok() {
                return;
            }
        }
        close(&self.commit, self.store.as_ref());
    }
}

fn handle_of(r: Rec<'_>) -> PushHandle {
    match r.platform() {
        Platform::Apns => PushHandle::Apns(r.handle_key().into()),
        Platform::Fcm => PushHandle::Fcm(String::from_utf8_lossy(r.handle_key()).into()),
        Platform::Wns => PushHandle::Wns(String::from_utf8_lossy(r.handle_key()).into()),
        Platform::WebPush => {
            let extra = r.handle_extra();
            let mut p256dh = [0u8; 65];
            let mut auth = [0u8; 16];
            if extra.len() == 81 {
                p256dh.copy_from_slice(&extra[..65]);
                auth.copy_from_slice(&extra[65..]);
            }
            PushHandle::WebPush(WebPushSubscription::from_parts(
                &String::from_utf8_lossy(r.handle_key()),
                p256dh,
                auth,
            ))
        }
    }
}

#[cold]
fn unreachable_id(id: &str) -> InstallationId {
    unreachable!("stored installation id {id:?} failed validation")
}

/// Applies Notification Hubs PATCH operations to `inst`.
fn apply_ops(inst: &mut Installation, ops: &[PatchOp]) -> Result<(), RegistryError> {
    for op in ops {
        match op {
            PatchOp::AddTags(tags) => {
                for t in tags {
                    if !inst.tags.contains(t) {
                        inst.tags.push(t.clone());
                    }
                }
            }
            PatchOp::RemoveTag(t) => inst.tags.retain(|x| x != t),
            PatchOp::SetHandle(h) => {
                if h.platform() != inst.platform() {
                    return Err(RegistryError::PlatformChange {
                        id: inst.id.to_string(),
                        from: inst.platform(),
                        to: h.platform(),
                    });
                }
                inst.handle = h.clone();
            }
            PatchOp::SetUser(u) => inst.user_id = u.clone(),
            PatchOp::AddTemplate(name, t) => {
                inst.templates.insert(name.clone(), t.clone());
            }
            PatchOp::RemoveTemplate(name) => {
                inst.templates.remove(name);
            }
            PatchOp::SetExpiration(at) => inst.expiration_time = *at,
        }
    }
    Ok(())
}

fn rebuild_mem(
    r: Rec<'_>,
    channel_expired: bool,
    last_update_ms: u64,
    version: u64,
    log_pos: u64,
) -> MemRecord {
    let tags: Vec<u32> = r.tags().collect();
    MemRecord::build(&RecordParts {
        last_update_ms,
        version,
        expiration_ms: r.expiration_ms(),
        platform: r.platform(),
        channel_expired,
        has_templates: r.has_templates(),
        tags: &tags,
        id: r.id().as_bytes(),
        handle_key: r.handle_key(),
        handle_extra: r.handle_extra(),
        user: r.user().map(str::as_bytes),
        log_pos,
    })
}

fn templates_to_stored(t: &BTreeMap<String, Template>) -> Vec<StoredTemplate> {
    t.iter()
        .map(|(name, t)| StoredTemplate {
            name: name.clone(),
            body: t.body.clone(),
            headers: t
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            tags: t.tags.iter().map(|t| t.to_string()).collect(),
            expiry: t.expiry.clone(),
        })
        .collect()
}

fn templates_from_stored(v: Vec<StoredTemplate>) -> BTreeMap<String, Template> {
    v.into_iter()
        .map(|t| {
            (
                t.name,
                Template {
                    body: t.body,
                    headers: t.headers.into_iter().collect(),
                    tags: t
                        .tags
                        .iter()
                        .filter_map(|s| crate::model::Tag::new(s).ok())
                        .collect(),
                    expiry: t.expiry,
                },
            )
        })
        .collect()
}

/// A device of a template send with the templates that match it.
#[derive(Clone, Debug)]
pub struct TemplateTarget {
    /// The device.
    pub target: Target,
    /// All its templates, by name.
    pub templates: Arc<BTreeMap<String, Template>>,
    /// The names of the templates that match the send's audience (at least one). Notification
    /// Hubs sends one push per matching template.
    pub matching: Vec<String>,
}

/// The result of resolving the audience of a template send; see
/// [`Registry::resolve_templates`].
pub struct TemplateResolution {
    registry: Registry,
    parts: Vec<RoaringBitmap>,
    audience: Audience,
    /// The expression's tags as interned ids (`None`: no installation carries the tag).
    tag_ids: HashMap<String, Option<partition::TagId>>,
    /// Keeps those ids from being reused for other tags (`interner.rs`).
    _pin: TagPin,
}

impl TemplateResolution {
    /// Devices with templates that may match, at resolution time (an upper bound: each is
    /// checked exactly when read).
    pub fn candidates(&self) -> u64 {
        self.parts.iter().map(RoaringBitmap::len).sum()
    }

    /// Keeps only the installations in `ids` (see [`Resolution::retain_installations`]).
    pub fn retain_installations<'a>(&mut self, ids: impl IntoIterator<Item = &'a InstallationId>) {
        let keep = self.registry.slots_of(ids);
        for (part, keep) in self.parts.iter_mut().zip(keep) {
            *part &= keep;
        }
    }

    /// Iterates the matching devices, at most `size` at a time.
    pub fn batches(&self, size: usize) -> TemplateBatches<'_> {
        TemplateBatches {
            res: self,
            walk: SlotWalk::new(&self.parts, size),
        }
    }

    /// The names of `templates` that match the audience for the record `r`: a template
    /// matches when the device's tags together with the template's own tags satisfy the
    /// expression.
    fn matching(&self, r: Rec<'_>, templates: &BTreeMap<String, Template>) -> Vec<String> {
        let expr = match &self.audience {
            Audience::Expr(e) => e,
            // Broadcast, platform, installation and user sends: every template of a device
            // that is in the audience (checked by the caller).
            _ => return templates.keys().cloned().collect(),
        };
        templates
            .iter()
            .filter(|(_, t)| {
                expr.matches(|tr| match tr {
                    TagRef::Tag(tag) => {
                        self.tag_ids
                            .get(tag.as_str())
                            .copied()
                            .flatten()
                            .is_some_and(|id| r.has_tag(id))
                            || t.tags.iter().any(|own| own == tag)
                    }
                    TagRef::InstallationId(id) => r.id() == id.as_str(),
                    TagRef::UserId(u) => r.user() == Some(u.as_str()),
                })
            })
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// Iterator of template-send batches; see [`TemplateResolution::batches`].
pub struct TemplateBatches<'a> {
    res: &'a TemplateResolution,
    walk: SlotWalk<'a>,
}

impl Iterator for TemplateBatches<'_> {
    type Item = Vec<TemplateTarget>;

    fn next(&mut self) -> Option<Vec<TemplateTarget>> {
        let res = self.res;
        self.walk.next_batch(&res.registry, |p, s, now| {
            let r = p.record(s)?;
            let templates = p.templates(s)?;
            if r.channel_expired() || r.expiration_ms() <= now {
                return None;
            }
            let in_audience = match &res.audience {
                Audience::All | Audience::Expr(_) => true,
                Audience::Platform(pl) => *pl == r.platform(),
                Audience::Installation(id) => r.id() == id.as_str(),
                Audience::User(u) => r.user() == Some(u.as_str()),
            };
            if !in_audience {
                return None;
            }
            let matching = res.matching(r, templates);
            if matching.is_empty() {
                return None;
            }
            Some(TemplateTarget {
                target: target_of(r),
                templates: templates.clone(),
                matching,
            })
        })
    }
}

/// Walks one bitmap of slots per partition, a batch at a time: each batch reads its slots
/// under the partition's read lock, briefly.
struct SlotWalk<'a> {
    parts: &'a [RoaringBitmap],
    size: usize,
    /// Slots not walked yet (what a batch allocates room for, at most `size`: a per-event
    /// send's one target is not a batch-sized allocation).
    left: u64,
    pid: usize,
    iter: Option<roaring::bitmap::Iter<'a>>,
}

impl<'a> SlotWalk<'a> {
    fn new(parts: &'a [RoaringBitmap], size: usize) -> Self {
        SlotWalk {
            parts,
            size: size.max(1),
            left: parts.iter().map(RoaringBitmap::len).sum(),
            pid: 0,
            iter: parts.first().map(|b| b.iter()),
        }
    }

    /// Up to `size` items: `f` maps each slot (with the partition read-locked and the time
    /// now in ms) to an item, or `None` to skip it.
    fn next_batch<T>(
        &mut self,
        reg: &Registry,
        mut f: impl FnMut(&Partition, u32, u64) -> Option<T>,
    ) -> Option<Vec<T>> {
        let mut out = Vec::with_capacity(self.size.min(self.left.try_into().unwrap_or(usize::MAX)));
        let now = now_ms();
        while out.len() < self.size {
            let iter = self.iter.as_mut()?;
            let slots: Vec<u32> = iter.by_ref().take(self.size - out.len()).collect();
            self.left = self.left.saturating_sub(slots.len() as u64);
            if slots.is_empty() {
                self.pid += 1;
                self.iter = self.parts.get(self.pid).map(|b| b.iter());
                if self.iter.is_none() {
                    break;
                }
                continue;
            }
            let p = reg.inner.partitions[self.pid].read();
            out.extend(slots.into_iter().filter_map(|s| f(&p, s, now)));
        }
        (!out.is_empty()).then_some(out)
    }
}

/// The target a stored record describes.
fn target_of(r: Rec<'_>) -> Target {
    Target {
        // Stored ids were validated before they were written.
        installation_id: InstallationId::new(r.id()).unwrap_or_else(|_| unreachable_id(r.id())),
        handle: handle_of(r),
        last_update: from_ms(r.last_update_ms()),
    }
}

/// The result of resolving an audience: one bitmap of slots per partition.
///
/// Holding a resolution holds no lock. Reading targets ([`Resolution::batches`]) takes each
/// partition's read lock briefly per batch, and re-checks every slot against the audience, so
/// installations deleted or changed since resolution are skipped, never misdelivered.
pub struct Resolution {
    registry: Registry,
    parts: Vec<RoaringBitmap>,
    compiled: Compiled,
    platform: Option<Platform>,
    /// Keeps the compiled tag ids from being reused for other tags (`interner.rs`).
    _pin: TagPin,
}

impl Resolution {
    /// Number of targets at resolution time.
    pub fn count(&self) -> u64 {
        self.parts.iter().map(RoaringBitmap::len).sum()
    }

    /// Keeps only the installations in `ids` (a resumed send's remainder: devices the send
    /// had not reached when the engine stopped). Each is still checked against the audience
    /// when read.
    pub fn retain_installations<'a>(&mut self, ids: impl IntoIterator<Item = &'a InstallationId>) {
        let keep = self.registry.slots_of(ids);
        for (part, keep) in self.parts.iter_mut().zip(keep) {
            *part &= keep;
        }
    }

    /// Iterates the targets `size` at a time; memory is bounded by the batch size.
    pub fn batches(&self, size: usize) -> TargetBatches<'_> {
        TargetBatches {
            res: self,
            walk: SlotWalk::new(&self.parts, size),
        }
    }
}

/// Iterator of target batches; see [`Resolution::batches`].
pub struct TargetBatches<'a> {
    res: &'a Resolution,
    walk: SlotWalk<'a>,
}

impl Iterator for TargetBatches<'_> {
    type Item = Vec<Target>;

    fn next(&mut self) -> Option<Vec<Target>> {
        let res = self.res;
        self.walk.next_batch(&res.registry, |p, s, now| {
            let r = p.record(s)?;
            let skip = r.channel_expired()
                || r.expiration_ms() <= now
                || !res.compiled.matches(r)
                || res.platform.is_some_and(|pl| pl != r.platform());
            (!skip).then(|| target_of(r))
        })
    }
}
/// Checks a named template of an installation, compiling it so that one that cannot render is
/// refused when written.
fn check_template(name: &str, t: &Template) -> Result<(), InvalidInput> {
    use crate::model::{MAX_TEMPLATE_BODY_LEN, MAX_TEMPLATE_NAME_LEN};
    let bad = |problem: String| InvalidInput::Template {
        name: crate::model::shorten(name, 80),
        problem,
    };
    if name.is_empty() || name.len() > MAX_TEMPLATE_NAME_LEN {
        return Err(bad(format!("name must be 1-{MAX_TEMPLATE_NAME_LEN} bytes")));
    }
    if name.chars().any(|c| c.is_control() || c == '/') {
        return Err(bad("name contains '/' or a control character".into()));
    }
    if t.body.len() > MAX_TEMPLATE_BODY_LEN {
        return Err(bad(format!(
            "body is {} bytes; at most {MAX_TEMPLATE_BODY_LEN} are allowed",
            t.body.len()
        )));
    }
    // A template that cannot render is refused now, with the position, rather than failing
    // on every send.
    crate::template::CompiledInstallationTemplate::compile(t)
        .map_err(|e| bad(format!("does not compile: {e}")))?;
    Ok(())
}

thread_local! {
    /// Set while an async variant applies a write on a runtime worker (see
    /// [`Registry::written`]).
    static ON_RUNTIME: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (the in-memory step of a write, which never awaits) marked as on a runtime
/// worker.
fn on_runtime<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            ON_RUNTIME.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(ON_RUNTIME.with(|c| c.replace(true)));
    f()
}

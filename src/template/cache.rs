//! A bounded, thread-safe cache of compiled installation templates, keyed by their content.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use xxhash_rust::xxh3::Xxh3;

use super::{CompiledInstallationTemplate, TemplateError};
use crate::model::Template;

/// Default [`TemplateCache`] capacity, in templates. Installations of one app share a handful
/// of templates; a hub serving many apps rarely has more than a few hundred distinct ones.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;

/// Compiled templates by content, shared between threads.
///
/// The key is an xxh3 hash of what compiling reads: the body, the headers and the expiry (the
/// template's tags do not change its compiled form, so templates that differ only in tags share
/// an entry). A hit is confirmed by comparing that content, so a hash collision costs a compile,
/// never a wrong template. Compile errors are cached too, so a broken template sent to a
/// million devices is compiled once.
///
/// Bounded: when an insert finds the cache full, the least recently used quarter is evicted
/// (one pass over the entries per `capacity / 4` inserts). Hits take a read lock and bump an
/// atomic clock; compiling happens outside any lock.
pub struct TemplateCache {
    map: RwLock<hashbrown::HashMap<u64, Entry>>,
    clock: AtomicU64,
    capacity: usize,
}

type Compiled = Result<Arc<CompiledInstallationTemplate>, TemplateError>;

struct Entry {
    body: Box<str>,
    headers: BTreeMap<String, String>,
    expiry: Option<String>,
    compiled: Compiled,
    last_used: AtomicU64,
}

impl Entry {
    fn matches(&self, t: &Template) -> bool {
        *self.body == *t.body && self.headers == t.headers && self.expiry == t.expiry
    }
}

fn key(t: &Template) -> u64 {
    let mut h = Xxh3::new();
    // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
    let mut field = |s: &str| {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    field(&t.body);
    for (k, v) in &t.headers {
        field(k);
        field(v);
    }
    if let Some(x) = &t.expiry {
        field(x);
    }
    h.update(&[u8::from(t.expiry.is_some())]);
    h.digest()
}

impl Default for TemplateCache {
    /// [`DEFAULT_CACHE_CAPACITY`] templates.
    fn default() -> Self {
        TemplateCache::new(DEFAULT_CACHE_CAPACITY)
    }
}

impl std::fmt::Debug for TemplateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl TemplateCache {
    /// A cache holding at most `capacity` templates (at least 1).
    pub fn new(capacity: usize) -> Self {
        TemplateCache {
            map: RwLock::new(hashbrown::HashMap::new()),
            clock: AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    /// The compiled form of `t`, or its compile error, from the cache or compiled now.
    pub fn get_or_compile(
        &self,
        t: &Template,
    ) -> Result<Arc<CompiledInstallationTemplate>, TemplateError> {
        let k = key(t);
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        if let Some(e) = self.map.read().get(&k) {
            if e.matches(t) {
                e.last_used.store(now, Ordering::Relaxed);
                return e.compiled.clone();
            }
        }
        let compiled = CompiledInstallationTemplate::compile(t).map(Arc::new);
        let mut map = self.map.write();
        if let Some(e) = map.get(&k) {
            if e.matches(t) {
                // Another thread compiled it meanwhile: share its copy.
                return e.compiled.clone();
            }
        } else if map.len() >= self.capacity {
            evict(&mut map, self.capacity);
        }
        // A new key, or a collision: the newer template takes the slot.
        map.insert(
            k,
            Entry {
                body: t.body.as_str().into(),
                headers: t.headers.clone(),
                expiry: t.expiry.clone(),
                compiled: compiled.clone(),
                last_used: AtomicU64::new(now),
            },
        );
        compiled
    }

    /// Templates cached (compile errors included).
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most templates kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.map.write().clear();
    }
}

/// Drops the least recently used quarter (at least one entry).
fn evict(map: &mut hashbrown::HashMap<u64, Entry>, capacity: usize) {
    let drop = (capacity / 4).max(1).min(map.len());
    if drop == 0 {
        return;
    }
    let mut ages: Vec<u64> = map
        .values()
        .map(|e| e.last_used.load(Ordering::Relaxed))
        .collect();
    let (_, &mut cut, _) = ages.select_nth_unstable(drop - 1);
    let mut left = drop;
    map.retain(|_, e| {
        if left > 0 && e.last_used.load(Ordering::Relaxed) <= cut {
            left -= 1;
            false
        } else {
            true
        }
    });
}

//! Durable storage behind a small trait, and the on-disk record format.
//!
//! The registry writes every installation to a [`Store`] before acknowledging it. The only
//! implementation is [`SledStore`] (sled, pinned to 0.34.7: its file format is ours to keep);
//! the trait keeps sled out of everything else so it can be replaced.
//!
//! Record format: one key per installation, `[partition: u16 big-endian][installation id bytes]`,
//! so that recovery scans each partition's records as one contiguous range, in parallel. The
//! value is `[FORMAT_VERSION][rkyv archive of StoredRecord]`; rkyv is built with its `unaligned`
//! feature, so archives are read in place from sled's buffers with no copy (bytecheck validates
//! them first: a corrupt record is an error, never undefined behaviour).

use std::path::Path;

use rkyv::rancor;

/// The first byte of every stored value. Bump it when `StoredRecord` changes, and teach
/// `decode` the old layout.
pub(crate) const FORMAT_VERSION: u8 = 1;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage engine failed (I/O, corruption detected by the engine).
    #[error("storage engine: {0}")]
    Engine(String),
    /// A stored record could not be decoded.
    #[error("stored record {key:?} is corrupt: {problem}")]
    Corrupt {
        /// The record's key, lossily as text.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// The store was created with a different layout.
    #[error("{0}")]
    Layout(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Engine(e.to_string())
    }
}

/// A write in an atomic batch: `None` deletes the key.
pub(crate) type Write = (Vec<u8>, Option<Vec<u8>>);

/// What the registry needs from durable storage.
pub(crate) trait Store: Send + Sync + 'static {
    /// Writes one record (not yet durable).
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Deletes one record (not yet durable).
    fn remove(&self, key: &[u8]) -> Result<(), StoreError>;
    /// Applies several writes atomically: after a crash either all or none are present.
    fn apply_atomic(&self, writes: Vec<Write>) -> Result<(), StoreError>;
    /// Makes every write that returned before this call durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Calls `f` with every record whose key starts with `prefix`, in key order.
    fn scan_prefix(
        &self,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// Reads a metadata value.
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes a metadata value (durable when this returns).
    fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Bytes used on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
    /// True when nothing survives the process: writes need no flush before acknowledgement.
    fn is_volatile(&self) -> bool {
        false
    }
}

/// sled-backed [`Store`].
pub(crate) struct SledStore {
    db: sled::Db,
    records: sled::Tree,
    meta: sled::Tree,
}

impl SledStore {
    pub(crate) fn open(path: &Path, cache_capacity: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .mode(sled::Mode::HighThroughput)
            // Durability comes from our own group commit; sled's timer flush only adds I/O.
            .flush_every_ms(None)
            .open()?;
        let records = db.open_tree("installations")?;
        let meta = db.open_tree("meta")?;
        Ok(SledStore { db, records, meta })
    }
}

impl Store for SledStore {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.records.insert(key, value)?;
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.records.remove(key)?;
        Ok(())
    }

    fn apply_atomic(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.records.apply_batch(batch)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        // One fsync covers every tree of the database: they share sled's log.
        self.db.flush()?;
        Ok(())
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for kv in self.records.scan_prefix(prefix) {
            let (k, v) = kv?;
            f(&k, &v)?;
        }
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(key, value)?;
        self.db.flush()?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// A [`Store`] that keeps nothing: for ephemeral registries (tests, load generators, caches
/// rebuilt from elsewhere). Every write is "durable" at once because nothing survives anyway.
pub(crate) struct NullStore;

impl Store for NullStore {
    fn put(&self, _: &[u8], _: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
    fn remove(&self, _: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
    fn apply_atomic(&self, _: Vec<Write>) -> Result<(), StoreError> {
        Ok(())
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn scan_prefix(
        &self,
        _: &[u8],
        _: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    fn meta(&self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    fn set_meta(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn is_volatile(&self) -> bool {
        true
    }
}

/// The durable form of an installation.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct StoredRecord {
    pub id: String,
    /// `Platform::index()`.
    pub platform: u8,
    /// The handle's key bytes (`PushHandle::key`).
    pub handle: Vec<u8>,
    /// Web Push only: p256dh (65 bytes) followed by auth (16 bytes); empty otherwise.
    pub handle_keys: Vec<u8>,
    pub tags: Vec<String>,
    pub user_id: Option<String>,
    pub templates: Vec<StoredTemplate>,
    /// Milliseconds since the Unix epoch.
    pub expiration_ms: Option<u64>,
    pub push_channel_expired: bool,
    /// Milliseconds since the Unix epoch.
    pub last_update_ms: u64,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct StoredTemplate {
    pub name: String,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub tags: Vec<String>,
    pub expiry: Option<String>,
}

/// `[FORMAT_VERSION][archive]`.
pub(crate) fn encode(rec: &StoredRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(FORMAT_VERSION);
    // Serialising plain owned data into memory cannot fail: rancor's error only carries
    // allocation or validation failures, and none of these types has fallible serialisation.
    match rkyv::to_bytes::<rancor::Error>(rec) {
        Ok(bytes) => out.extend_from_slice(&bytes),
        Err(e) => unreachable!("rkyv serialisation of owned data failed: {e}"),
    }
    out
}

/// Validates and reads a stored value in place.
pub(crate) fn access<'a>(
    key: &[u8],
    value: &'a [u8],
) -> Result<&'a ArchivedStoredRecord, StoreError> {
    let corrupt = |problem: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        problem,
    };
    match value.first() {
        Some(&FORMAT_VERSION) => {}
        Some(v) => return Err(corrupt(format!("unknown format version {v}"))),
        None => return Err(corrupt("empty value".into())),
    }
    rkyv::access::<ArchivedStoredRecord, rancor::Error>(&value[1..])
        .map_err(|e| corrupt(e.to_string()))
}

/// Decodes a stored value into owned data.
pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<StoredRecord, StoreError> {
    let archived = access(key, value)?;
    rkyv::deserialize::<StoredRecord, rancor::Error>(archived).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        problem: e.to_string(),
    })
}

/// The key of an installation: partition (big-endian) then id.
pub(crate) fn record_key(partition: u16, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + id.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredRecord {
        StoredRecord {
            id: "inst-1".into(),
            platform: 0,
            handle: vec![0xab; 32],
            handle_keys: vec![],
            tags: vec!["sports".into(), "news".into()],
            user_id: Some("u1".into()),
            templates: vec![StoredTemplate {
                name: "t".into(),
                body: "{\"aps\":{}}".into(),
                headers: vec![("apns-priority".into(), "10".into())],
                tags: vec!["x".into()],
                expiry: None,
            }],
            expiration_ms: Some(5),
            push_channel_expired: false,
            last_update_ms: 42,
        }
    }

    #[test]
    fn round_trip_and_corruption_is_an_error() {
        let r = sample();
        let bytes = encode(&r);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode(b"k", &bytes).unwrap(), r);
        // Unaligned reads work: shift the buffer by one byte.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(decode(b"k", &shifted[1..]).unwrap(), r);
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(decode(b"k", &bad).unwrap_err().to_string().contains("unknown format version 9"));
        let truncated = &bytes[..bytes.len() / 2];
        assert!(decode(b"k", truncated).is_err());
        assert!(decode(b"k", &[]).is_err());
    }

    #[test]
    fn keys_group_by_partition() {
        assert_eq!(record_key(258, "ab"), vec![1, 2, b'a', b'b']);
    }
}

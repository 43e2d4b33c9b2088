//! The registry on RocksDB.
//!
//! Layout (one column family, prefixes):
//! - `c` + version (u64 BE) → the version's delta (the changelog, the primary data);
//! - `k` + key + `\0` + version (u64 BE) → the key's value at that version (or a
//!   tombstone): the index behind `get`, one `seek_for_prev` per read;
//! - `s` + key → the key's value at the latest version (present keys only);
//! - `a` + key → auxiliary state of the store's owner;
//! - `m:latest` → the latest version; `m:schema` → the layout's schema version.
//!
//! Keys never contain `\0` (see `validate_key`), so the `k` index is unambiguous. Every
//! commit is one `WriteBatch` written with `sync`, so a kill -9 after `commit` returns
//! loses nothing, and a crash before leaves the previous version whole.

use super::{AuxWrite, RegistryStore, StoreError, VersionDelta, validate_delta};
use rocksdb::{DB, Options, WriteBatch, WriteOptions};
use std::{collections::BTreeMap, path::Path};
use types::{RegistryVersion, codec};

const LATEST: &[u8] = b"m:latest";
const SCHEMA: &[u8] = b"m:schema";
const SCHEMA_VERSION: u32 = 1;

/// A raw RocksDB key and value.
type RawEntry = (Vec<u8>, Vec<u8>);

/// A persistent registry store.
pub struct RocksStore {
    db: DB,
    latest: RegistryVersion,
    /// A read-only follower of another process's store ([`RocksStore::open_secondary`]).
    secondary: bool,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RocksStore(latest {})", self.latest)
    }
}

fn storage(e: rocksdb::Error) -> StoreError {
    StoreError::Storage(e.to_string())
}

fn changelog_key(v: RegistryVersion) -> Vec<u8> {
    let mut k = vec![b'c'];
    k.extend_from_slice(&v.get().to_be_bytes());
    k
}

/// A delta's changelog entry, index entries, snapshot entries and the new latest marker.
fn put_delta(batch: &mut WriteBatch, delta: &VersionDelta) {
    batch.put(changelog_key(delta.version), codec::encode(delta));
    for c in &delta.changes {
        let mut k = index_prefix(&c.key);
        k.extend_from_slice(&delta.version.get().to_be_bytes());
        batch.put(k, codec::encode(&c.value));
        match &c.value {
            Some(v) => batch.put(prefixed(b's', &c.key), v),
            None => batch.delete(prefixed(b's', &c.key)),
        }
    }
    batch.put(LATEST, delta.version.get().to_be_bytes());
}

fn index_prefix(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 10);
    k.push(b'k');
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k
}

fn prefixed(p: u8, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(p);
    k.extend_from_slice(key.as_bytes());
    k
}

impl RocksStore {
    /// Opens (or creates) the store in `dir`. Refuses a directory written by a newer
    /// layout, without touching it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir).map_err(storage)?;
        match db.get(SCHEMA).map_err(storage)? {
            None => {
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                db.put_opt(SCHEMA, SCHEMA_VERSION.to_be_bytes(), &wo)
                    .map_err(storage)?;
            }
            Some(b) => {
                let found = <[u8; 4]>::try_from(b.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt("schema marker".into()))?;
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Corrupt(format!(
                        "registry store schema {found}; this release reads schema {SCHEMA_VERSION}"
                    )));
                }
            }
        }
        let latest = match db.get(LATEST).map_err(storage)? {
            None => RegistryVersion::ZERO,
            Some(b) => <[u8; 8]>::try_from(b.as_slice())
                .map(|a| RegistryVersion::new(u64::from_be_bytes(a)))
                .map_err(|_| StoreError::Corrupt("latest version marker".into()))?,
        };
        Ok(Self {
            db,
            latest,
            secondary: false,
        })
    }

    /// Opens the store in `primary` read-only, as a RocksDB secondary instance whose own
    /// logs go to `secondary_dir`: another process (the orchestrator) keeps writing the
    /// primary, and [`RocksStore::catch_up`] makes its new versions visible here. Commits
    /// through a secondary are refused.
    pub fn open_secondary(primary: &Path, secondary_dir: &Path) -> Result<Self, StoreError> {
        if !primary.join("CURRENT").exists() {
            return Err(StoreError::Storage(format!(
                "no registry store in {}",
                primary.display()
            )));
        }
        let mut opts = Options::default();
        // A secondary must keep every file open (RocksDB's requirement for followers).
        opts.set_max_open_files(-1);
        let db = DB::open_as_secondary(&opts, primary, secondary_dir).map_err(storage)?;
        let mut s = Self {
            db,
            latest: RegistryVersion::ZERO,
            secondary: true,
        };
        s.catch_up()?;
        Ok(s)
    }

    /// A secondary: reads what the primary committed since. Law 4 holds because the
    /// primary writes each version (delta, index and `latest`) in one batch.
    pub fn catch_up(&mut self) -> Result<RegistryVersion, StoreError> {
        if self.secondary {
            self.db.try_catch_up_with_primary().map_err(storage)?;
        }
        match self.db.get(SCHEMA).map_err(storage)? {
            Some(b) if b.as_slice() == SCHEMA_VERSION.to_be_bytes() => {}
            Some(_) => {
                return Err(StoreError::Corrupt(format!(
                    "registry store schema is not {SCHEMA_VERSION}"
                )));
            }
            None => {}
        }
        self.latest = match self.db.get(LATEST).map_err(storage)? {
            None => RegistryVersion::ZERO,
            Some(b) => <[u8; 8]>::try_from(b.as_slice())
                .map(|a| RegistryVersion::new(u64::from_be_bytes(a)))
                .map_err(|_| StoreError::Corrupt("latest version marker".into()))?,
        };
        Ok(self.latest)
    }

    fn writable(&self) -> Result<(), StoreError> {
        if self.secondary {
            return Err(StoreError::Storage(
                "this store is a read-only secondary".into(),
            ));
        }
        Ok(())
    }

    /// One synced write: durable (law 8) and atomic (law 4) when it returns.
    fn write_synced(
        &mut self,
        batch: WriteBatch,
        latest: RegistryVersion,
    ) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(storage)?;
        self.latest = latest;
        Ok(())
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<RawEntry>, StoreError> {
        let mut it = self.db.raw_iterator();
        it.seek(prefix);
        let mut out = Vec::new();
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
            it.next();
        }
        it.status().map_err(storage)?;
        Ok(out)
    }
}

impl RegistryStore for RocksStore {
    fn latest_version(&self) -> RegistryVersion {
        self.latest
    }

    fn get_versioned(
        &self,
        key: &str,
        version: RegistryVersion,
    ) -> Result<Option<(RegistryVersion, Vec<u8>)>, StoreError> {
        super::check_available(version, self.latest)?;
        let prefix = index_prefix(key);
        let mut target = prefix.clone();
        target.extend_from_slice(&version.get().to_be_bytes());
        let mut it = self.db.raw_iterator();
        it.seek_for_prev(&target);
        if !it.valid() {
            it.status().map_err(storage)?;
            return Ok(None);
        }
        let (Some(k), Some(v)) = (it.key(), it.value()) else {
            return Ok(None);
        };
        if !k.starts_with(&prefix) || k.len() != prefix.len() + 8 {
            return Ok(None);
        }
        let mut at = [0u8; 8];
        at.copy_from_slice(&k[prefix.len()..]);
        let value: Option<Vec<u8>> = codec::decode(v, super::MAX_VALUE_BYTES + 16)
            .map_err(|e| StoreError::Corrupt(format!("index entry for {key:?}: {e}")))?;
        Ok(value.map(|value| (RegistryVersion::new(u64::from_be_bytes(at)), value)))
    }

    fn changes_since(
        &self,
        version: RegistryVersion,
        max_versions: usize,
    ) -> Result<Vec<VersionDelta>, StoreError> {
        let mut out = Vec::new();
        let mut v = version.increment();
        while v <= self.latest && out.len() < max_versions {
            let bytes = self
                .db
                .get(changelog_key(v))
                .map_err(storage)?
                .ok_or_else(|| StoreError::Corrupt(format!("missing delta for version {v}")))?;
            let delta: VersionDelta = codec::decode(&bytes, codec::MAX_ENCODED_BYTES)
                .map_err(|e| StoreError::Corrupt(format!("delta {v}: {e}")))?;
            out.push(delta);
            v = v.increment();
        }
        Ok(out)
    }

    fn latest_snapshot(&self) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        self.scan(b"s")?
            .into_iter()
            .map(|(k, v)| {
                String::from_utf8(k[1..].to_vec())
                    .map(|k| (k, v))
                    .map_err(|_| StoreError::Corrupt("non-UTF-8 key".into()))
            })
            .collect()
    }

    fn commit(&mut self, delta: Option<&VersionDelta>, aux: &[AuxWrite]) -> Result<(), StoreError> {
        self.writable()?;
        let mut batch = WriteBatch::default();
        let mut new_latest = self.latest;
        if let Some(delta) = delta {
            validate_delta(delta, self.latest)?;
            put_delta(&mut batch, delta);
            new_latest = delta.version;
        }
        for (k, v) in aux {
            match v {
                Some(v) => batch.put(prefixed(b'a', k), v),
                None => batch.delete(prefixed(b'a', k)),
            }
        }
        self.write_synced(batch, new_latest)
    }

    fn append_all(&mut self, deltas: &[VersionDelta]) -> Result<(), StoreError> {
        self.writable()?;
        let mut batch = WriteBatch::default();
        let mut latest = self.latest;
        for d in deltas {
            validate_delta(d, latest)?;
            put_delta(&mut batch, d);
            latest = d.version;
        }
        self.write_synced(batch, latest)
    }

    fn aux_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get(prefixed(b'a', key)).map_err(storage)
    }

    fn aux_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.scan(&prefixed(b'a', prefix))?
            .into_iter()
            .map(|(k, v)| {
                String::from_utf8(k[1..].to_vec())
                    .map(|k| (k, v))
                    .map_err(|_| StoreError::Corrupt("non-UTF-8 auxiliary key".into()))
            })
            .collect()
    }
}

//! The versioned key/value store behind the registry.
//!
//! # Laws (every implementation; `tests` checks each against a model: `MemoryStore`,
//! `RocksStore`, `KvStore`)
//!
//! 1. **Versions are dense and monotonic.** A new store is at version 0 (the empty
//!    registry). Each successful [`RegistryStore::apply`] or [`RegistryStore::append`]
//!    creates exactly one new version, `latest + 1`; a failed one changes nothing.
//! 2. **Reads are as of a version.** `get(k, v)` for `v <= latest` is the value written
//!    by the last change to `k` at a version `<= v`, or `None` if there was none or it was
//!    a deletion (a tombstone). `get(k, v)` for `v > latest` is
//!    [`StoreError::VersionNotAvailable`], never a guess.
//! 3. **Versions are immutable.** Once `v <= latest`, `get(k, v)` never changes.
//! 4. **A reported version is fully available.** A batch is committed atomically: no
//!    reader ever sees part of a version, and after a crash the store is at some version
//!    with all of it. [`RegistryStore::append_all`] commits several versions the same
//!    way: all or none.
//! 5. **Deltas replay.** `changes_since(v, max)` returns the deltas of versions
//!    `v+1 ..= min(v + max, latest)` in order, exactly as committed; appending them to a
//!    store at version `v` yields the same reads.
//! 6. **Preconditions are all-or-nothing.** In a batch, `Insert` requires the key absent,
//!    `Update` and `Delete` require it present (at `latest`); a key appears at most once;
//!    if any mutation fails its precondition the whole batch is refused.
//! 7. **Auxiliary state commits with a version.** [`RegistryStore::commit`] writes the
//!    owner's auxiliary entries (governance state) in the same atomic step as the delta.
//! 8. **Durability** (persistent stores): once `commit` returns, a crash (kill -9) loses
//!    nothing it wrote.

pub mod kv;
mod memory;
#[cfg(feature = "io")]
mod rocks;

pub use kv::{Kv, KvStore, MemoryKv};
pub use memory::MemoryStore;
#[cfg(feature = "io")]
pub use rocks::RocksStore;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use types::RegistryVersion;

/// The longest registry key.
pub const MAX_KEY_BYTES: usize = 256;
/// The largest registry value.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// The most mutations in one batch.
pub const MAX_BATCH_MUTATIONS: usize = 10_000;

/// One key's change at a version: `Some(value)` sets it, `None` deletes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChange {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// All changes of one registry version, sorted by key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionDelta {
    pub version: RegistryVersion,
    pub changes: Vec<KeyChange>,
}

/// A requested change, with its precondition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    /// The key must be absent.
    Insert { key: String, value: Vec<u8> },
    /// The key must be present.
    Update { key: String, value: Vec<u8> },
    /// The key must be present.
    Delete { key: String },
}

impl Mutation {
    pub fn key(&self) -> &str {
        match self {
            Self::Insert { key, .. } | Self::Update { key, .. } | Self::Delete { key } => key,
        }
    }
}

/// A write to the owner's auxiliary keyspace: `Some` sets, `None` deletes.
pub type AuxWrite = (String, Option<Vec<u8>>);

/// Why a store operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("registry version {requested} is not available (latest is {latest})")]
    VersionNotAvailable {
        requested: RegistryVersion,
        latest: RegistryVersion,
    },
    #[error("cannot insert {key:?}: it is already present")]
    KeyAlreadyPresent { key: String },
    #[error("cannot {op} {key:?}: it is not present")]
    KeyAbsent { key: String, op: &'static str },
    #[error("key {key:?} appears twice in one batch")]
    DuplicateKey { key: String },
    #[error("an empty batch makes no registry version")]
    EmptyBatch,
    #[error("a batch has at most {max} mutations, this one has {got}")]
    BatchTooLarge { max: usize, got: usize },
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("value for {key:?} has {got} bytes; at most {max}")]
    ValueTooLarge { key: String, got: usize, max: usize },
    #[error("delta for version {got} does not follow the latest version {latest}")]
    NonContiguous {
        latest: RegistryVersion,
        got: RegistryVersion,
    },
    #[error("invalid delta at version {version}: {reason}")]
    InvalidDelta {
        version: RegistryVersion,
        reason: String,
    },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("the stored registry is corrupt: {0}")]
    Corrupt(String),
}

/// Checks a key: 1 to 256 printable ASCII characters, no spaces.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let bad = |reason| {
        Err(StoreError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > MAX_KEY_BYTES {
        return bad("longer than 256 bytes");
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("only printable ASCII without spaces is allowed");
    }
    Ok(())
}

/// Law 2's refusal: a store at `latest` cannot read `version` if it is beyond it.
pub(crate) fn check_available(
    version: RegistryVersion,
    latest: RegistryVersion,
) -> Result<(), StoreError> {
    if version > latest {
        return Err(StoreError::VersionNotAvailable {
            requested: version,
            latest,
        });
    }
    Ok(())
}

/// Checks that `delta` may be appended to a store at `latest`.
pub(crate) fn validate_delta(
    delta: &VersionDelta,
    latest: RegistryVersion,
) -> Result<(), StoreError> {
    if delta.version != latest.increment() {
        return Err(StoreError::NonContiguous {
            latest,
            got: delta.version,
        });
    }
    let invalid = |reason: String| StoreError::InvalidDelta {
        version: delta.version,
        reason,
    };
    if delta.changes.is_empty() {
        return Err(invalid("no changes".into()));
    }
    for pair in delta.changes.windows(2) {
        if pair[0].key >= pair[1].key {
            return Err(invalid(format!(
                "keys not strictly ascending at {:?}",
                pair[1].key
            )));
        }
    }
    for c in &delta.changes {
        validate_key(&c.key)?;
        if let Some(v) = &c.value
            && v.len() > MAX_VALUE_BYTES
        {
            return Err(StoreError::ValueTooLarge {
                key: c.key.clone(),
                got: v.len(),
                max: MAX_VALUE_BYTES,
            });
        }
    }
    Ok(())
}

/// A versioned registry store. See the module docs for the laws.
pub trait RegistryStore: Send + Sync {
    fn latest_version(&self) -> RegistryVersion;

    /// The value of `key` as of `version`, with the version that wrote it.
    fn get_versioned(
        &self,
        key: &str,
        version: RegistryVersion,
    ) -> Result<Option<(RegistryVersion, Vec<u8>)>, StoreError>;

    /// The deltas after `version`, at most `max_versions` of them.
    fn changes_since(
        &self,
        version: RegistryVersion,
        max_versions: usize,
    ) -> Result<Vec<VersionDelta>, StoreError>;

    /// Every present key and its value at the latest version.
    fn latest_snapshot(&self) -> Result<BTreeMap<String, Vec<u8>>, StoreError>;

    /// Atomically appends `delta` (if any; it must be for `latest + 1`) and applies the
    /// auxiliary writes. Durable when it returns.
    fn commit(&mut self, delta: Option<&VersionDelta>, aux: &[AuxWrite]) -> Result<(), StoreError>;

    fn aux_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Auxiliary entries whose key starts with `prefix`, in key order.
    fn aux_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// The value of `key` as of `version`.
    fn get(&self, key: &str, version: RegistryVersion) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get_versioned(key, version)?.map(|(_, v)| v))
    }

    /// Checks a batch's preconditions against the latest version and returns the delta
    /// it would commit, without writing anything.
    fn prepare(&self, mutations: &[Mutation]) -> Result<VersionDelta, StoreError> {
        if mutations.is_empty() {
            return Err(StoreError::EmptyBatch);
        }
        if mutations.len() > MAX_BATCH_MUTATIONS {
            return Err(StoreError::BatchTooLarge {
                max: MAX_BATCH_MUTATIONS,
                got: mutations.len(),
            });
        }
        let latest = self.latest_version();
        let mut seen = BTreeSet::new();
        let mut changes = Vec::with_capacity(mutations.len());
        for m in mutations {
            let key = m.key();
            validate_key(key)?;
            if !seen.insert(key.to_string()) {
                return Err(StoreError::DuplicateKey {
                    key: key.to_string(),
                });
            }
            let present = self.get_versioned(key, latest)?.is_some();
            let (value, ok) = match m {
                Mutation::Insert { value, .. } => (Some(value.clone()), !present),
                Mutation::Update { value, .. } => (Some(value.clone()), present),
                Mutation::Delete { .. } => (None, present),
            };
            if !ok {
                return Err(match m {
                    Mutation::Insert { .. } => StoreError::KeyAlreadyPresent { key: key.into() },
                    Mutation::Update { .. } => StoreError::KeyAbsent {
                        key: key.into(),
                        op: "update",
                    },
                    Mutation::Delete { .. } => StoreError::KeyAbsent {
                        key: key.into(),
                        op: "delete",
                    },
                });
            }
            changes.push(KeyChange {
                key: key.to_string(),
                value,
            });
        }
        changes.sort_by(|a, b| a.key.cmp(&b.key));
        let delta = VersionDelta {
            version: latest.increment(),
            changes,
        };
        validate_delta(&delta, latest)?;
        Ok(delta)
    }

    /// Applies a batch: one new version, or an error and no change.
    fn apply(&mut self, mutations: &[Mutation]) -> Result<RegistryVersion, StoreError> {
        let delta = self.prepare(mutations)?;
        self.commit(Some(&delta), &[])?;
        Ok(delta.version)
    }

    /// Appends a delta received from elsewhere (replication).
    fn append(&mut self, delta: &VersionDelta) -> Result<(), StoreError> {
        self.commit(Some(delta), &[])
    }

    /// Appends consecutive deltas atomically: all of them, or (on any error) none.
    /// A replicator appends a fetched page this way; a persistent store makes it one
    /// durable write instead of one per version.
    fn append_all(&mut self, deltas: &[VersionDelta]) -> Result<(), StoreError> {
        let mut latest = self.latest_version();
        for d in deltas {
            validate_delta(d, latest)?;
            latest = d.version;
        }
        for d in deltas {
            self.commit(Some(d), &[])?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[cfg(feature = "io")]
mod tests;

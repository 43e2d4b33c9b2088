//! State schemas: how user values are laid out, and the migration between layouts.
//!
//! `m/schema` names the layout. Schema 1 stores each user value as written; schema 2 (the
//! next release) stores it followed by an 8-byte checksum. The functions here know every
//! layout up to 2 in both releases (a verifier of the first release checks a schema-2
//! node's answers); which one a release *writes* is [`SCHEMA_VERSION`]. A release refuses,
//! without writing anything, to open a newer schema than it knows, and migrates an older
//! one with [`ReplicatedState::migrate`] once the state is verified against its CUP (a
//! migration changes the state hash, so it must come after that check). Every leaf of the
//! state tree commits to the schema its value is stored in (`tree::value_hash`).

use super::{ReplicatedState, SCHEMA, StateError};
use rocksdb::DB;
use types::{CryptoHash, domain};

/// The state layout this release writes (and the newest it reads).
#[cfg(not(feature = "next-release"))]
pub const SCHEMA_VERSION: u32 = 1;
/// The state layout this release writes (and the newest it reads): values carry checksums.
#[cfg(feature = "next-release")]
pub const SCHEMA_VERSION: u32 = 2;

/// The newest layout [`to_stored`] and [`from_stored`] know (the state tree's: readers
/// that link no replica check witnesses against it).
pub use state_tree::NEWEST_KNOWN_SCHEMA;

/// The bytes of the checksum schema 2 stores after each user value.
pub const CHECKSUM_BYTES: usize = 8;

/// A user value with the checksum stored beside it, if the schema stores one.
pub type StoredValue = (Vec<u8>, Option<[u8; CHECKSUM_BYTES]>);

/// The checksum schema 2 stores after `value`: the first bytes of its domain-separated hash.
pub fn value_checksum(value: &[u8]) -> [u8; CHECKSUM_BYTES] {
    let h = CryptoHash::of(domain::STATE_VALUE_CHECKSUM, value);
    let mut out = [0u8; CHECKSUM_BYTES];
    out.copy_from_slice(&h.0[..CHECKSUM_BYTES]);
    out
}

/// A user value in the form `schema` stores it.
pub fn to_stored(schema: u32, value: &[u8]) -> Vec<u8> {
    if schema >= 2 {
        return [value, &value_checksum(value)].concat();
    }
    value.to_vec()
}

/// A stored value as the user wrote it, with the checksum stored beside it if the schema
/// has one (checked: a mismatch is corruption).
pub fn from_stored(schema: u32, stored: &[u8]) -> Result<StoredValue, StateError> {
    if schema >= 2 {
        let split = stored
            .len()
            .checked_sub(CHECKSUM_BYTES)
            .ok_or_else(|| StateError::Corrupt("a value shorter than its checksum".into()))?;
        let (value, sum) = stored.split_at(split);
        if sum != value_checksum(value) {
            return Err(StateError::Corrupt(format!(
                "a value's checksum {} does not match its bytes",
                hex::encode(sum)
            )));
        }
        let mut c = [0u8; CHECKSUM_BYTES];
        c.copy_from_slice(sum);
        return Ok((value.to_vec(), Some(c)));
    }
    Ok((stored.to_vec(), None))
}

/// Refuses a schema this release cannot read (state sync from a peer on a newer one).
pub fn check_readable(schema: u32) -> Result<(), StateError> {
    if schema == 0 {
        return Err(StateError::Corrupt("state without a schema marker".into()));
    }
    if schema > SCHEMA_VERSION {
        return Err(StateError::NewerSchema {
            dir: "the state offered by peers".into(),
            found: schema,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

pub(super) fn read_schema(db: &DB) -> Result<u32, StateError> {
    match db.get(SCHEMA)? {
        None => Ok(0),
        Some(b) => <[u8; 4]>::try_from(b.as_slice())
            .map(u32::from_be_bytes)
            .map_err(|_| StateError::Corrupt("schema marker".into())),
    }
}

impl ReplicatedState {
    /// Brings an older schema to this release's, in one synced write (a crash leaves the
    /// old schema or the new one, never a mix). Returns how many values were rewritten.
    /// The height stays; the state hash changes with the values, and every leaf with
    /// the schema, so the tree's index is rewritten whole in the same write. (Schema 1 is
    /// the first release's and the first: there it finds nothing to do.)
    pub fn migrate(&mut self) -> Result<u64, StateError> {
        self.migrate_with(false)
    }

    /// [`ReplicatedState::migrate`], keeping the old schema's bucket summaries so the
    /// copy can later follow a newer state of the old schema
    /// ([`ReplicatedState::advance_migrated`]: the migration ahead of the halt).
    pub fn migrate_keeping_base(&mut self) -> Result<u64, StateError> {
        self.migrate_with(true)
    }

    fn migrate_with(&mut self, keep_base: bool) -> Result<u64, StateError> {
        if self.schema >= SCHEMA_VERSION {
            return Ok(0);
        }
        // What the registry left in memory was read in the old layout.
        self.registry_warm = None;
        let mut batch = rocksdb::WriteBatch::default();
        if keep_base {
            self.keep_base(&mut batch);
        }
        let mut entries = Vec::new();
        let mut rewritten = 0;
        let mut it = self.db.raw_iterator();
        it.seek_to_first();
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if super::is_hashed(k) {
                let new = super::ahead::migrated_value(self.schema, k, v)?;
                if new != v {
                    batch.put(k, &new);
                    rewritten += 1;
                }
                entries.push((k.to_vec(), super::tree::value_hash(SCHEMA_VERSION, &new)));
            }
            it.next();
        }
        it.status()?;
        drop(it);
        let top = super::index::write_all(entries, &mut batch);
        super::index::put_top_copy(&mut batch, &top);
        batch.put(SCHEMA, SCHEMA_VERSION.to_be_bytes());
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        self.top = top;
        self.schema = SCHEMA_VERSION;
        Ok(rewritten)
    }
}

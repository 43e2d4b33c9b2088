//! Migration ahead of the halt. A full migration rewrites every value, so doing it at the
//! switch makes the subnet's downtime grow with its state. Instead the preflight migrates
//! a copy of a recent checkpoint while the old release still runs and keeps it, together
//! with the old schema's top tree of the state it came from (`m/pbtop`). At the switch,
//! [`ReplicatedState::advance_migrated`] brings that copy to the state at the CUP: a
//! bucket whose old-schema hash is unchanged holds the same entries (the hash commits to
//! them), and the two top trees name the buckets that differ from the root down, so only
//! those are read from the CUP's state and rewritten in the new schema. The result is
//! the state a full migration at the CUP would give, for any earlier base, so a stale
//! copy costs time, never correctness.

use super::{
    HEIGHT, ReplicatedState, SCHEMA_VERSION, StateError, from_stored, index, to_stored, tree,
};
use rocksdb::WriteBatch;
use std::collections::BTreeSet;
use tree::TopTree;
use types::Height;

/// Where a migrated copy keeps its base's top tree, in the old schema
/// ([`TopTree::to_bytes`]: 4 MiB).
const BASE_TOP: &[u8] = b"m/pbtop";
/// The old schema of the base (4 bytes, big-endian): present only in a migrated copy.
const BASE_SCHEMA: &[u8] = b"m/pbschema";

/// Entry `key`'s stored value `stored` (in `from`) as schema [`SCHEMA_VERSION`] stores it.
/// User values change layout; every other entry is kept as it is.
pub(super) fn migrated_value(from: u32, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, StateError> {
    if key.starts_with(b"v/") {
        Ok(to_stored(SCHEMA_VERSION, &from_stored(from, stored)?.0))
    } else {
        Ok(stored.to_vec())
    }
}

/// What [`ReplicatedState::advance_migrated`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advanced {
    /// The height of the base the copy was at before.
    pub from: Height,
    /// Buckets whose entries changed since the base and were rewritten.
    pub buckets: usize,
    /// Entries written or deleted in them.
    pub entries: usize,
}

impl ReplicatedState {
    /// Puts this state's top tree, in its schema, in `batch` as the base of a migration
    /// about to rewrite the index.
    pub(super) fn keep_base(&self, batch: &mut WriteBatch) {
        batch.put(BASE_TOP, self.top.to_bytes());
        batch.put(BASE_SCHEMA, self.schema.to_be_bytes());
    }

    /// Brings this migrated copy (made by [`ReplicatedState::migrate_keeping_base`]) to the
    /// state `src` holds in the old schema, rewriting only the buckets that changed since
    /// the base, in one synced write. The copy then no longer knows a base (it is to become
    /// the live state). `src` is only read.
    pub fn advance_migrated(&mut self, src: &ReplicatedState) -> Result<Advanced, StateError> {
        let base_schema = self
            .db
            .get(BASE_SCHEMA)?
            .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| StateError::Corrupt("not a migrated copy with a base".into()))?;
        if self.schema != SCHEMA_VERSION || src.schema != base_schema {
            return Err(StateError::Corrupt(format!(
                "a copy in schema {} from schema {base_schema} cannot follow a state in schema {}",
                self.schema, src.schema
            )));
        }
        let base = self
            .db
            .get(BASE_TOP)?
            .and_then(|b| TopTree::from_bytes(&b))
            .ok_or_else(|| StateError::Corrupt("a migrated copy without its base's tree".into()))?;
        let changed = base.differing_buckets(&src.top);

        let mut batch = WriteBatch::default();
        let mut changes = index::TreeChanges::default();
        let mut entries = 0;
        for &b in &changed {
            let theirs = index::read_bucket(&src.db, b)?;
            let keep: BTreeSet<&[u8]> = theirs.iter().map(|(k, _)| k.as_slice()).collect();
            for (k, _) in index::read_bucket(&self.db, b)? {
                if !keep.contains(k.as_slice()) {
                    batch.delete(&k);
                    changes.record(&k, None);
                    entries += 1;
                }
            }
            for (k, _) in &theirs {
                let stored = src.db.get(k)?.ok_or_else(|| {
                    StateError::Corrupt(format!("an indexed entry is missing: {}", hex::encode(k)))
                })?;
                let v = migrated_value(src.schema, k, &stored)?;
                changes.record(k, Some(tree::value_hash(SCHEMA_VERSION, &v)));
                batch.put(k, v);
                entries += 1;
            }
        }
        let mut top = self.top.clone();
        changes.apply(&self.db, &mut top, &mut batch)?;
        index::put_top_copy(&mut batch, &top);
        batch.put(HEIGHT, src.height.get().to_be_bytes());
        batch.delete(BASE_TOP);
        batch.delete(BASE_SCHEMA);
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        let from = self.height;
        self.top = top;
        self.height = src.height;
        Ok(Advanced {
            from,
            buckets: changed.len(),
            entries,
        })
    }

    /// Writes the memtable to disk: a state about to be closed and opened again (the
    /// preflight's migrated copy) then opens without replaying its log.
    pub fn flush(&self) -> Result<(), StateError> {
        self.db.flush()?;
        Ok(())
    }
}

//! Migration ahead of the halt. A full migration rewrites every value, so doing it at the
//! switch makes the subnet's downtime grow with its state. Instead the preflight migrates
//! a copy of a recent checkpoint while the old release still runs and keeps it, together
//! with the old schema's bucket summaries of the state it came from (`m/pb/`). At the
//! switch, [`ReplicatedState::advance_migrated`] brings that copy to the state at the CUP:
//! a bucket whose old-schema summary is unchanged holds the same entries (the summary
//! commits to them), so only the buckets that differ are read from the CUP's state and
//! rewritten in the new schema. The result is the state a full migration at the CUP
//! would give, for any earlier base, so a stale copy costs time, never correctness.

use super::{
    HEIGHT, ReplicatedState, SCHEMA_VERSION, StateError, from_stored,
    index::{self, BucketSummary},
    to_stored, tree,
};
use rocksdb::WriteBatch;
use std::collections::{BTreeMap, BTreeSet};
use types::Height;

/// Where a migrated copy keeps the old schema's bucket summaries of its base.
const BASE_PREFIX: &[u8] = b"m/pb/";
/// The end of [`BASE_PREFIX`]'s range (exclusive).
const BASE_END: &[u8] = b"m/pc";
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
    /// Puts the old schema's summaries of every bucket under [`BASE_PREFIX`] in `batch`
    /// (a migration about to rewrite the index records its base).
    pub(super) fn keep_base(&self, batch: &mut WriteBatch) -> Result<(), StateError> {
        batch.delete_range(BASE_PREFIX, BASE_END);
        for s in index::read_summaries(&self.db, 0, tree::BUCKETS)? {
            index::put_summary_under(batch, BASE_PREFIX, &s);
        }
        batch.put(BASE_SCHEMA, self.schema.to_be_bytes());
        Ok(())
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
        let base: BTreeMap<u16, BucketSummary> =
            index::read_summaries_under(&self.db, BASE_PREFIX, 0, tree::BUCKETS)?
                .into_iter()
                .map(|s| (s.bucket, s))
                .collect();
        let now: BTreeMap<u16, BucketSummary> = index::read_summaries(&src.db, 0, tree::BUCKETS)?
            .into_iter()
            .map(|s| (s.bucket, s))
            .collect();
        let changed: BTreeSet<u16> = base
            .keys()
            .chain(now.keys())
            .filter(|b| base.get(b) != now.get(b))
            .copied()
            .collect();

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
        batch.put(HEIGHT, src.height.get().to_be_bytes());
        batch.delete_range(BASE_PREFIX, BASE_END);
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

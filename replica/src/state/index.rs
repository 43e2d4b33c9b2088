//! The state tree on disk, beside the entries it hashes (see [`super::tree`] for the
//! tree itself).
//!
//! Layout (all under `m/`, so none of it is hashed: it is derived from the entries):
//! - `m/root`: the state root.
//! - `m/tb/<bucket: 2 bytes BE>`: `(count: u32 BE, subroot: 32 bytes)` of each non-empty
//!   bucket ([`BucketSummary`]).
//! - `m/tl/<bucket: 2 bytes BE><entry key>`: the entry's value hash. A prefix scan lists a
//!   bucket's entries in key order, which is the order of its tree's slots.
//!
//! Every block writes the index changes it causes in the same RocksDB batch as its entries
//! and its height, so a crash leaves the old state with its old tree or the new with the
//! new. The top tree is kept in memory ([`TopTree`], rebuilt from the bucket summaries on
//! open and checked against `m/root`).
//!
//! Queries are answered as of the certified height, which can be below the executed one:
//! each block returns a [`TreeUndo`] (every bucket it changed with its entries before, and
//! every top-tree node it changed with its hash before). The tree at an earlier height is
//! the current one seen through the undos of the blocks after it, the oldest first
//! ([`witness_at`]); the driver keeps undos only for executed heights above the newest
//! certified one.

use super::{ROOT, StateError, is_hashed, tree};
use rocksdb::{DB, WriteBatch};
use std::collections::BTreeMap;
use tree::{NodeIndex, TopTree, Witness};
use types::CryptoHash;

const BUCKET_PREFIX: &[u8] = b"m/tb/";
const LEAF_PREFIX: &[u8] = b"m/tl/";

pub use state_tree::sync::BucketSummary;

/// A bucket's entries, sorted: `(entry key, value hash)`.
pub type BucketEntries = Vec<(Vec<u8>, CryptoHash)>;

/// What one block changed in the tree, as it was before the block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeUndo {
    pub buckets: BTreeMap<u16, BucketEntries>,
    pub nodes: BTreeMap<NodeIndex, CryptoHash>,
}

fn bucket_key(b: u16) -> Vec<u8> {
    [BUCKET_PREFIX, &b.to_be_bytes()].concat()
}

fn leaf_key(b: u16, key: &[u8]) -> Vec<u8> {
    [LEAF_PREFIX, &b.to_be_bytes(), key].concat()
}

fn hash32(bytes: &[u8], what: &str) -> Result<CryptoHash, StateError> {
    <[u8; 32]>::try_from(bytes)
        .map(CryptoHash)
        .map_err(|_| StateError::Corrupt(format!("{what}: not 32 bytes")))
}

/// Bucket `b`'s entries in slot order.
pub fn read_bucket(db: &DB, b: u16) -> Result<BucketEntries, StateError> {
    scan_bucket(&mut db.raw_iterator(), b)
}

/// Bucket `b`'s entries in slot order, read with `it` (one iterator serves a block's
/// buckets: creating one costs more than a seek).
fn scan_bucket(it: &mut rocksdb::DBRawIterator<'_>, b: u16) -> Result<BucketEntries, StateError> {
    let prefix = leaf_key(b, &[]);
    let mut out = Vec::new();
    it.seek(&prefix);
    while it.valid() {
        let (Some(k), Some(v)) = (it.key(), it.value()) else {
            break;
        };
        if !k.starts_with(&prefix) {
            break;
        }
        out.push((k[prefix.len()..].to_vec(), hash32(v, "a tree leaf")?));
        it.next();
    }
    it.status()?;
    Ok(out)
}

/// The summaries of the non-empty buckets from `from` on, in bucket order, at most `limit`.
pub fn read_summaries(db: &DB, from: u16, limit: usize) -> Result<Vec<BucketSummary>, StateError> {
    read_summaries_under(db, BUCKET_PREFIX, from, limit)
}

/// Bucket summaries kept under `prefix` (the index's, or another copy of them).
pub fn read_summaries_under(
    db: &DB,
    prefix: &[u8],
    from: u16,
    limit: usize,
) -> Result<Vec<BucketSummary>, StateError> {
    let mut out = Vec::new();
    let mut it = db.raw_iterator();
    it.seek([prefix, &from.to_be_bytes()].concat());
    while it.valid() && out.len() < limit {
        let (Some(k), Some(v)) = (it.key(), it.value()) else {
            break;
        };
        if !k.starts_with(prefix) {
            break;
        }
        let (Ok(b), true) = (<[u8; 2]>::try_from(&k[prefix.len()..]), v.len() == 36) else {
            return Err(StateError::Corrupt("a bucket summary".into()));
        };
        let mut count = [0u8; 4];
        count.copy_from_slice(&v[..4]);
        out.push(BucketSummary {
            bucket: u16::from_be_bytes(b),
            count: u32::from_be_bytes(count),
            subroot: hash32(&v[4..], "a bucket subroot")?,
        });
        it.next();
    }
    it.status()?;
    Ok(out)
}

pub fn put_summary(batch: &mut WriteBatch, s: &BucketSummary) {
    put_summary_under(batch, BUCKET_PREFIX, s);
}

/// Puts `s` under `prefix` (see [`read_summaries_under`]).
pub fn put_summary_under(batch: &mut WriteBatch, prefix: &[u8], s: &BucketSummary) {
    batch.put(
        [prefix, &s.bucket.to_be_bytes()].concat(),
        [s.count.to_be_bytes().as_slice(), &s.subroot.0].concat(),
    );
}

/// Deletes bucket `b`'s summary (it has no entries left).
pub fn delete_summary(batch: &mut WriteBatch, b: u16) {
    batch.delete(bucket_key(b));
}

/// Deletes leaf `key`'s index entry.
pub fn delete_leaf(batch: &mut WriteBatch, key: &[u8]) {
    batch.delete(leaf_key(tree::bucket_of(key), key));
}

pub fn put_leaf(batch: &mut WriteBatch, key: &[u8], value_hash: &CryptoHash) {
    batch.put(leaf_key(tree::bucket_of(key), key), value_hash.0);
}

/// Where a copy of the whole top tree is kept ([`TopTree::to_bytes`], 4 MiB), written
/// when a checkpoint is made and by migrations: a state opened at that point reads it
/// instead of every bucket summary (tens of thousands on a busy subnet) and rehashing the
/// tree. Blocks do not update it, so it is used only while its root is the state's.
const TOP_COPY: &[u8] = b"m/top";

/// Puts a copy of `top` in `batch` (see [`TOP_COPY`]).
pub fn put_top_copy(batch: &mut WriteBatch, top: &TopTree) {
    batch.put(TOP_COPY, top.to_bytes());
}

/// The top tree of the state whose recorded root is `root`: its kept copy if that is
/// the tree of this very root (the root commits to every node below it), else rebuilt
/// from the bucket summaries.
pub fn load_top_for(db: &DB, root: &CryptoHash) -> Result<TopTree, StateError> {
    if let Some(top) = db.get(TOP_COPY)?.and_then(|b| TopTree::from_bytes(&b))
        && top.root() == *root
    {
        return Ok(top);
    }
    load_top(db)
}

/// The top tree from the bucket summaries on disk.
pub fn load_top(db: &DB) -> Result<TopTree, StateError> {
    let summaries = read_summaries(db, 0, tree::BUCKETS)?;
    Ok(TopTree::from_buckets(
        summaries.iter().map(|s| (s.bucket, s.hash())),
    ))
}

/// The root recorded in `m/root`.
pub fn read_root(db: &DB) -> Result<CryptoHash, StateError> {
    let b = db
        .get(ROOT)?
        .ok_or_else(|| StateError::Corrupt("no state root".into()))?;
    hash32(&b, "the state root")
}

/// One block's writes to hashed entries, grouped by bucket (the last write to a key wins).
#[derive(Debug, Default)]
pub struct TreeChanges {
    buckets: BTreeMap<u16, BTreeMap<Vec<u8>, Option<CryptoHash>>>,
}

impl TreeChanges {
    /// Entry `key` now holds a value with this hash (`None`: deleted).
    pub fn record(&mut self, key: &[u8], value_hash: Option<CryptoHash>) {
        self.buckets
            .entry(tree::bucket_of(key))
            .or_default()
            .insert(key.to_vec(), value_hash);
    }

    /// Recomputes each changed bucket once and the top-tree nodes above them, in `top`,
    /// and puts the index changes and the new root in `batch`. `db` must hold the state
    /// before the block. Returns what the block changed, as it was.
    pub fn apply(
        self,
        db: &DB,
        top: &mut TopTree,
        batch: &mut WriteBatch,
    ) -> Result<TreeUndo, StateError> {
        let mut undo = TreeUndo::default();
        let mut hashes = Vec::with_capacity(self.buckets.len());
        let mut it = db.raw_iterator();
        for (b, changes) in self.buckets {
            let before = scan_bucket(&mut it, b)?;
            let mut entries: BTreeMap<Vec<u8>, CryptoHash> = before.iter().cloned().collect();
            for (k, vh) in changes {
                match vh {
                    Some(vh) => {
                        batch.put(leaf_key(b, &k), vh.0);
                        entries.insert(k, vh);
                    }
                    None => {
                        if entries.remove(&k).is_some() {
                            batch.delete(leaf_key(b, &k));
                        }
                    }
                }
            }
            let leaves: Vec<CryptoHash> = entries
                .iter()
                .map(|(k, vh)| tree::leaf_hash(k, vh))
                .collect();
            let s = BucketSummary {
                bucket: b,
                count: leaves.len() as u32,
                subroot: tree::subroot(&leaves),
            };
            if s.count == 0 {
                batch.delete(bucket_key(b));
            } else {
                put_summary(batch, &s);
            }
            hashes.push((b, s.hash()));
            undo.buckets.insert(b, before);
        }
        drop(it);
        undo.nodes = top.set_buckets(&hashes);
        batch.put(ROOT, top.root().0);
        Ok(undo)
    }
}

/// Puts back the top-tree nodes a block changed (its batch was not written).
pub fn revert(top: &mut TopTree, undo: &TreeUndo) {
    top.restore(&undo.nodes);
}

/// The witness for entry `key`, and the root it leads to, as of the height before the
/// blocks whose undos are `later` (oldest first; none: the current state).
pub fn witness_at(
    db: &DB,
    top: &TopTree,
    key: &[u8],
    later: &[&TreeUndo],
) -> Result<(Witness, CryptoHash), StateError> {
    let b = tree::bucket_of(key);
    let entries = match later.iter().find_map(|u| u.buckets.get(&b)) {
        Some(e) => e.clone(),
        None => read_bucket(db, b)?,
    };
    let node = |i: NodeIndex| {
        later
            .iter()
            .find_map(|u| u.nodes.get(&i))
            .copied()
            .unwrap_or_else(|| top.node(i))
    };
    let path = TopTree::path_indices(b).map(node).collect();
    Ok((tree::witness_for(key, &entries, path), node(1)))
}

/// Writes the whole index for `entries` (every hashed entry with its value hash, in key
/// order) into `batch`, over whatever index there was, and returns its top tree.
pub fn write_all(entries: Vec<(Vec<u8>, CryptoHash)>, batch: &mut WriteBatch) -> TopTree {
    let mut leaves: BTreeMap<u16, Vec<CryptoHash>> = BTreeMap::new();
    for (k, vh) in &entries {
        put_leaf(batch, k, vh);
        leaves
            .entry(tree::bucket_of(k))
            .or_default()
            .push(tree::leaf_hash(k, vh));
    }
    let summaries: Vec<BucketSummary> = leaves
        .into_iter()
        .map(|(bucket, l)| BucketSummary {
            bucket,
            count: l.len() as u32,
            subroot: tree::subroot(&l),
        })
        .collect();
    for s in &summaries {
        put_summary(batch, s);
    }
    let top = TopTree::from_buckets(summaries.iter().map(|s| (s.bucket, s.hash())));
    batch.put(ROOT, top.root().0);
    top
}

/// The state root computed from the entries alone, ignoring the index (for checks).
pub fn recompute_root(db: &DB, schema: u32) -> Result<CryptoHash, StateError> {
    let mut leaves: BTreeMap<u16, Vec<CryptoHash>> = BTreeMap::new();
    let mut it = db.raw_iterator();
    it.seek_to_first();
    while it.valid() {
        if let (Some(k), Some(v)) = (it.key(), it.value())
            && is_hashed(k)
        {
            leaves
                .entry(tree::bucket_of(k))
                .or_default()
                .push(tree::leaf_hash(k, &tree::value_hash(schema, v)));
        }
        it.next();
    }
    it.status()?;
    Ok(TopTree::from_buckets(
        leaves
            .into_iter()
            .map(|(b, l)| (b, tree::bucket_hash(l.len() as u32, &tree::subroot(&l)))),
    )
    .root())
}

//! A whole state held in memory, hashed and served for state sync exactly as the
//! replica's checkpoints are: the simulator's node states, and tests of the sync checks.
//! The replica does not use it (its state lives in RocksDB with an incremental index).

use crate::sync::{
    BucketSummary, ChunkPart, Cursor, Entry, SYNC_VERSION, StateChunk, StateManifest, is_hashed,
};
use crate::tree;
use std::collections::BTreeMap;
use types::{CryptoHash, Height};

/// The hashed entries of a state at one height, under one schema, with the tree over
/// them kept up to date on every write (a write costs one bucket tree and 16 top-tree
/// hashes, so a state can be hashed after every block).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryState {
    pub height: Height,
    schema: u32,
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Each non-empty bucket's leaf hashes, by key.
    leaves: BTreeMap<u16, BTreeMap<Vec<u8>, CryptoHash>>,
    summaries: BTreeMap<u16, BucketSummary>,
    /// The top tree's non-empty nodes, by heap index (node 1 the root, bucket `b` at
    /// `BUCKETS + b`); an absent node is the empty subtree of its level.
    nodes: BTreeMap<u32, CryptoHash>,
}

/// How many levels above the buckets top-tree node `i` is.
fn level_of(i: u32) -> u32 {
    tree::BUCKET_BITS - (u32::BITS - 1 - i.leading_zeros())
}

impl MemoryState {
    pub fn new(height: Height, schema: u32) -> Self {
        Self {
            height,
            schema,
            entries: BTreeMap::new(),
            leaves: BTreeMap::new(),
            summaries: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }
    }

    pub fn schema(&self) -> u32 {
        self.schema
    }

    pub fn entries(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.entries
    }

    /// Sets `key` (a hashed key) to `value`; `false` (and nothing changes) for a key
    /// outside the hashed state.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> bool {
        if !is_hashed(&key) {
            return false;
        }
        let b = tree::bucket_of(&key);
        let leaf = tree::leaf_hash(&key, &tree::value_hash(self.schema, &value));
        self.leaves.entry(b).or_default().insert(key.clone(), leaf);
        self.entries.insert(key, value);
        self.refresh(b);
        true
    }

    fn node(&self, i: u32) -> CryptoHash {
        self.nodes
            .get(&i)
            .copied()
            .unwrap_or_else(|| tree::empty_subtree(level_of(i)))
    }

    /// Recomputes bucket `b`'s summary and its path to the root.
    fn refresh(&mut self, b: u16) {
        let leaves: Vec<CryptoHash> = self
            .leaves
            .get(&b)
            .map(|l| l.values().copied().collect())
            .unwrap_or_default();
        let summary = BucketSummary {
            bucket: b,
            count: u32::try_from(leaves.len()).unwrap_or(u32::MAX),
            subroot: tree::subroot(&leaves),
        };
        let mut i = tree::BUCKETS as u32 + u32::from(b);
        self.summaries.insert(b, summary);
        self.nodes.insert(i, summary.hash());
        while i > 1 {
            i /= 2;
            let h = tree::node_hash(&self.node(2 * i), &self.node(2 * i + 1));
            self.nodes.insert(i, h);
        }
    }

    /// The root of the state tree over the entries.
    pub fn root(&self) -> CryptoHash {
        self.node(1)
    }

    /// What consensus certifies for this state: `H(STATE_HASH, (height, root))`.
    pub fn state_hash(&self) -> CryptoHash {
        tree::state_hash(self.height, &self.root())
    }

    /// What an honest peer serves first.
    pub fn manifest(&self) -> StateManifest {
        StateManifest {
            version: SYNC_VERSION,
            height: self.height,
            schema: self.schema,
            buckets: self.summaries.values().copied().collect(),
        }
    }

    /// What an honest peer serves for `from`: at most `max_entries` entries (at least
    /// one) of the stream from there, with the siblings that prove each part. Empty
    /// parts once the stream has ended or if `from` is not a position in it.
    pub fn chunk(&self, from: Cursor, max_entries: usize) -> StateChunk {
        let mut parts = Vec::new();
        let mut left = max_entries.max(1);
        for (&bucket, leaves) in self.leaves.range(from.bucket..) {
            if left == 0 {
                break;
            }
            let start = if bucket == from.bucket {
                from.slot as usize
            } else {
                0
            };
            if start >= leaves.len() {
                break;
            }
            let end = leaves.len().min(start + left);
            left -= end - start;
            let siblings = if start == 0 && end == leaves.len() {
                Vec::new()
            } else {
                let all: Vec<CryptoHash> = leaves.values().copied().collect();
                tree::range_proof(&all, start, end)
            };
            parts.push(ChunkPart {
                bucket,
                start: start as u32,
                entries: leaves
                    .keys()
                    .skip(start)
                    .take(end - start)
                    .map(|k| Entry {
                        key: k.clone(),
                        value: self.entries.get(k).cloned().unwrap_or_default(),
                    })
                    .collect(),
                siblings,
            });
        }
        StateChunk {
            version: SYNC_VERSION,
            height: self.height,
            parts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Verifier;
    use crate::tree::TopTree;

    fn state(n: usize) -> MemoryState {
        let mut s = MemoryState::new(Height::new(12), 1);
        for i in 0..n {
            assert!(s.put(format!("k/{i}").into_bytes(), vec![i as u8; i % 5]));
        }
        // Two more keys in k/0's bucket, so some parts stop inside a bucket.
        let b = tree::bucket_of(b"k/0");
        let mut found = 0;
        for j in 0u32.. {
            let k = format!("n/{j}").into_bytes();
            if tree::bucket_of(&k) == b {
                s.put(k, b"neighbour".to_vec());
                found += 1;
                if found == 2 {
                    break;
                }
            }
        }
        s
    }

    /// An honest serving, chunk by chunk, is exactly what the verifier accepts, at
    /// every chunk size, and rebuilds the same state.
    #[test]
    fn an_honest_peer_is_believed_at_every_chunk_size() {
        let s = state(20);
        for max in 1..=25 {
            let mut v = Verifier::new(s.height, s.state_hash(), &s.manifest()).expect("manifest");
            let mut got = MemoryState::new(s.height, s.schema);
            let mut requests = 0;
            while let Some(c) = v.cursor() {
                requests += 1;
                assert!(requests <= s.entries().len(), "no progress at {c}");
                let a = v.check(&s.chunk(c, max)).expect("an honest chunk verifies");
                for (e, _) in &a.entries {
                    got.put(e.key.clone(), e.value.clone());
                }
                v.advance(a);
            }
            assert_eq!(v.finish().expect("finish"), s.root());
            assert_eq!(got, s);
            let top =
                TopTree::from_buckets(s.manifest().buckets.iter().map(|b| (b.bucket, b.hash())));
            assert_eq!(got.root(), top.root());
        }
    }

    #[test]
    fn a_changed_value_or_a_key_too_many_is_refused() {
        let s = state(6);
        let v = Verifier::new(s.height, s.state_hash(), &s.manifest()).expect("manifest");
        let c = v.cursor().expect("not empty");
        let mut lie = s.chunk(c, 100);
        lie.parts[0].entries[0].value.push(1);
        assert!(v.check(&lie).is_err());
        let mut more = s.clone();
        more.put(b"k/extra".to_vec(), Vec::new());
        assert!(Verifier::new(s.height, s.state_hash(), &more.manifest()).is_err());
        assert!(!more.put(b"m/meta".to_vec(), Vec::new()));
    }

    #[test]
    fn the_empty_state_hashes_as_types_says() {
        assert_eq!(
            MemoryState::new(Height::ZERO, 1).state_hash(),
            types::empty_state_hash()
        );
    }
}

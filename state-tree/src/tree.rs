//! The state tree: a Merkle tree over every hashed entry of the replicated state, whose
//! root the state hash commits to. This module is pure (no storage, no clock); it is the
//! normative description of the tree, its witnesses and its range proofs.
//!
//! # Shape
//!
//! - An **entry** is a hashed key/value pair of the state (`v/<user key>`, `x/<id>`,
//!   `e/<expiry><id>`; never `m/…`), the value as the state's schema stores it.
//! - `value_hash = H(STATE_TREE_VALUE, encode((schema: u32, value: bytes)))`: the leaf
//!   commits to the layout its bytes are in, so a peer cannot pass schema-1 bytes off as
//!   schema 2 (or back) without changing every leaf.
//! - `leaf = H(STATE_TREE_LEAF, encode((key: bytes, value_hash)))`: the key is in the
//!   leaf, so a witness can show a neighbour's key without its value.
//! - An entry lives in **bucket** `b(key)` = the first two bytes (big-endian) of
//!   `H(STATE_TREE_BUCKET_OF, key)`: one of [`BUCKETS`] = 2^16.
//! - A bucket's entries, sorted by key bytes, are the leaves of a **bucket tree**: for
//!   `count` entries, a complete binary tree of `2^ceil(log2(count))` slots (one slot for
//!   one entry, none for an empty bucket). A node whose slots all lie at or past `count`
//!   is [`PAD`] (32 zero bytes); any other inner node is
//!   `H(STATE_TREE_NODE, left || right)`. Its root is the bucket's **subroot** ([`PAD`]
//!   for an empty bucket).
//! - `bucket_hash = H(STATE_TREE_BUCKET, encode((count: u32, subroot)))`: the count fixes
//!   the bucket tree's shape, so the padding is unambiguous.
//! - The **top tree** is the complete binary tree of depth 16 over the 2^16 bucket hashes,
//!   bucket 0 leftmost, inner nodes `H(STATE_TREE_NODE, left || right)`. An empty bucket
//!   has `bucket_hash(0, PAD)`; an empty subtree of height `k` has the precomputed
//!   [`empty_subtree`]`(k)`. Its root is the **state root**.
//! - The state hash at height `h` is `H(STATE_HASH, encode((h, root)))`.
//!
//! Leaves (`STATE_TREE_LEAF`), inner nodes (`STATE_TREE_NODE`) and buckets
//! (`STATE_TREE_BUCKET`) are hashed under different domain tags, so no node can pass for
//! a leaf or a bucket. Every hashed byte string is a canonical [`types::codec`] encoding
//! (the tests check the hand-framed ones against the codec).
//!
//! # Why the order is canonical
//!
//! Where an entry sits depends on its key alone (its bucket from the key's hash, its slot
//! from its rank among the bucket's keys by byte order; keys are unique), and every
//! tree's shape depends on counts alone. So the root is a function of the *set* of
//! entries: two states with the same entries have the same root whatever order their
//! writes came in, and a state with different entries has a different root unless
//! SHA-256 collides. No insertion history, rebalancing or iteration order of a map enters.
//!
//! # Cost
//!
//! A block's writes touch the buckets of the keys it writes: each such bucket's tree is
//! recomputed from its sorted entries (`O(entries in the bucket)`, about `n / 2^16`), then
//! the 16 top-tree nodes above it. A block costs `O(writes × (bucket + 16))` hashes, never
//! `O(state)`. Bucket indices come from a hash: a user who grinds keys into one bucket
//! (2^16 tries per key) makes writes to that bucket cost its size, and its witnesses and
//! state-sync parts grow with it; nothing else.
//!
//! # Witnesses
//!
//! A [`Witness`] proves one key's value, or its absence, against a root:
//! `count` (entries in the key's bucket), `start`, the bucket-tree siblings of the slots
//! `start..start + k`, and the 16 top-tree siblings from the bucket up. For a present key,
//! `k = 1` and the verifier computes the leaf from the claimed value. For an absent key,
//! the witness discloses the `k` entries (key and value hash) around where the key would
//! be: both neighbours (`start + 1 < count`, `key₀ < key < key₁`), only the first entry
//! (`start = 0`, `key < key₀`), only the last (`start = count - 1`, `key > key₀`), or none
//! (`count = 0`). Adjacent slots under one root prove nothing lies between them.
//!
//! # Range proofs
//!
//! The same recursion proves any contiguous run of slots `start..end` of a bucket tree
//! (state sync sends buckets in parts this way): walking the tree from the root, left
//! before right, a node wholly past `count` is [`PAD`] (not sent), a node wholly outside
//! the run is one sibling hash (sent, in walk order), a slot inside the run is its leaf
//! (computed by the verifier), and anything else is split. A proof with a sibling too
//! many or too few is refused.

use types::{CryptoHash, Height, codec, domain};

/// Bits of a bucket index.
pub const BUCKET_BITS: u32 = 16;
/// How many buckets the top tree has.
pub const BUCKETS: usize = 1 << BUCKET_BITS;
/// A bucket-tree node with no entries under it.
pub const PAD: CryptoHash = CryptoHash([0; 32]);
/// The most entries one bucket may claim (its tree is at most 32 levels deep).
pub const MAX_BUCKET_ENTRIES: u64 = u32::MAX as u64;
/// The encoding version of a [`Witness`].
pub const WITNESS_VERSION: u8 = 1;
/// The largest encoded witness a verifier reads (two neighbours of 2 KiB keys at most,
/// 64 bucket-tree siblings, 16 top-tree siblings, with room to spare).
pub const MAX_WITNESS_BYTES: usize = 16 * 1024;

/// Why a witness or a range proof does not lead to a root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the witness does not decode: {0}")]
    Malformed(String),
    #[error("witness version {0}, this build reads version {WITNESS_VERSION}")]
    Version(u8),
    #[error("the proof's shape is wrong: {0}")]
    Shape(&'static str),
    #[error("the proof has {0} sibling hashes too few")]
    TooFewSiblings(usize),
    #[error("the proof has {0} sibling hashes too many")]
    TooManySiblings(usize),
}

/// The bucket `key` falls in.
pub fn bucket_of(key: &[u8]) -> u16 {
    let h = CryptoHash::of(domain::STATE_TREE_BUCKET_OF, key);
    u16::from_be_bytes([h.0[0], h.0[1]])
}

/// `H(STATE_TREE_VALUE, encode((schema, value)))`.
pub fn value_hash(schema: u32, stored: &[u8]) -> CryptoHash {
    CryptoHash::of_parts(
        domain::STATE_TREE_VALUE,
        &[
            &schema.to_be_bytes(),
            &(stored.len() as u64).to_be_bytes(),
            stored,
        ],
    )
}

/// `H(STATE_TREE_LEAF, encode((key, value_hash)))`.
pub fn leaf_hash(key: &[u8], value_hash: &CryptoHash) -> CryptoHash {
    CryptoHash::of_parts(
        domain::STATE_TREE_LEAF,
        &[&(key.len() as u64).to_be_bytes(), key, &value_hash.0],
    )
}

/// `H(STATE_TREE_NODE, left || right)`.
pub fn node_hash(left: &CryptoHash, right: &CryptoHash) -> CryptoHash {
    CryptoHash::of_parts(domain::STATE_TREE_NODE, &[&left.0, &right.0])
}

/// `H(STATE_TREE_BUCKET, encode((count, subroot)))`.
pub fn bucket_hash(count: u32, subroot: &CryptoHash) -> CryptoHash {
    CryptoHash::of_parts(
        domain::STATE_TREE_BUCKET,
        &[&count.to_be_bytes(), &subroot.0],
    )
}

/// `H(STATE_HASH, encode((height, root)))`: what consensus certifies and a CUP carries.
pub fn state_hash(height: Height, root: &CryptoHash) -> CryptoHash {
    CryptoHash::of(domain::STATE_HASH, &codec::encode(&(height, root)))
}

/// The hash of an empty subtree of the top tree `height` levels above the buckets
/// (0: an empty bucket; 16: the root of an empty state).
pub fn empty_subtree(height: u32) -> CryptoHash {
    static EMPTY: std::sync::OnceLock<Vec<CryptoHash>> = std::sync::OnceLock::new();
    let levels = EMPTY.get_or_init(|| {
        let mut v = vec![bucket_hash(0, &PAD)];
        for k in 0..BUCKET_BITS as usize {
            v.push(node_hash(&v[k], &v[k]));
        }
        v
    });
    levels[height.min(BUCKET_BITS) as usize]
}

/// The root of a state with no entries (`types::EMPTY_STATE_ROOT` holds the same bytes).
pub fn empty_root() -> CryptoHash {
    empty_subtree(BUCKET_BITS)
}

/// Levels of a bucket tree with `count` slots: `ceil(log2(count))`.
fn depth(count: u64) -> u32 {
    if count <= 1 {
        0
    } else {
        64 - (count - 1).leading_zeros()
    }
}

/// The subroot of a bucket whose sorted entries have these leaves.
pub fn subroot(leaves: &[CryptoHash]) -> CryptoHash {
    if leaves.is_empty() {
        return PAD;
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| node_hash(&p[0], p.get(1).unwrap_or(&PAD)))
            .collect();
    }
    level[0]
}

/// The hash of the bucket-tree node over slots `lo..lo + size`.
fn node_over(leaves: &[CryptoHash], lo: usize, size: usize) -> CryptoHash {
    if lo >= leaves.len() {
        return PAD;
    }
    if size == 1 {
        return leaves[lo];
    }
    let half = size / 2;
    node_hash(
        &node_over(leaves, lo, half),
        &node_over(leaves, lo + half, half),
    )
}

/// The siblings that prove slots `start..end` of a bucket with these leaves (all of
/// them), in walk order.
pub fn range_proof(leaves: &[CryptoHash], start: usize, end: usize) -> Vec<CryptoHash> {
    fn walk(
        leaves: &[CryptoHash],
        lo: usize,
        size: usize,
        run: (usize, usize),
        out: &mut Vec<CryptoHash>,
    ) {
        if lo >= leaves.len() {
            return;
        }
        if lo + size <= run.0 || lo >= run.1 {
            out.push(node_over(leaves, lo, size));
            return;
        }
        if size == 1 {
            return;
        }
        let half = size / 2;
        walk(leaves, lo, half, run, out);
        walk(leaves, lo + half, half, run, out);
    }
    let mut out = Vec::new();
    let size = 1usize << depth(leaves.len() as u64);
    walk(leaves, 0, size, (start, end), &mut out);
    out
}

/// The subroot of a bucket of `count` entries whose slots `start..start + run.len()` have
/// the leaves `run`, given the siblings of that run in walk order.
pub fn range_subroot(
    count: u64,
    start: u64,
    run: &[CryptoHash],
    siblings: &[CryptoHash],
) -> Result<CryptoHash, ProofError> {
    if count > MAX_BUCKET_ENTRIES {
        return Err(ProofError::Shape("more entries than a bucket may hold"));
    }
    if count == 0 {
        return match (start, run.len(), siblings.len()) {
            (0, 0, 0) => Ok(PAD),
            (_, _, 0) => Err(ProofError::Shape("entries in an empty bucket")),
            (_, _, n) => Err(ProofError::TooManySiblings(n)),
        };
    }
    let end = start
        .checked_add(run.len() as u64)
        .filter(|&e| e <= count && !run.is_empty())
        .ok_or(ProofError::Shape(
            "the run is empty or lies past the bucket's end",
        ))?;
    struct Walk<'a> {
        count: u64,
        start: u64,
        end: u64,
        run: &'a [CryptoHash],
        siblings: std::slice::Iter<'a, CryptoHash>,
        missing: usize,
    }
    impl Walk<'_> {
        fn node(&mut self, lo: u64, size: u64) -> CryptoHash {
            if lo >= self.count {
                return PAD;
            }
            if lo + size <= self.start || lo >= self.end {
                return match self.siblings.next() {
                    Some(h) => *h,
                    None => {
                        self.missing += 1;
                        PAD
                    }
                };
            }
            if size == 1 {
                return self.run[(lo - self.start) as usize];
            }
            let half = size / 2;
            let l = self.node(lo, half);
            let r = self.node(lo + half, half);
            node_hash(&l, &r)
        }
    }
    let mut w = Walk {
        count,
        start,
        end,
        run,
        siblings: siblings.iter(),
        missing: 0,
    };
    let root = w.node(0, 1u64 << depth(count));
    if w.missing > 0 {
        return Err(ProofError::TooFewSiblings(w.missing));
    }
    match w.siblings.len() {
        0 => Ok(root),
        extra => Err(ProofError::TooManySiblings(extra)),
    }
}

/// The root of the top tree, given bucket `bucket`'s hash and its 16 siblings from the
/// bucket up.
pub fn root_from_path(
    bucket: u16,
    bucket_hash: CryptoHash,
    path: &[CryptoHash],
) -> Result<CryptoHash, ProofError> {
    if path.len() != BUCKET_BITS as usize {
        return Err(ProofError::Shape("a top-tree path has 16 siblings"));
    }
    let mut h = bucket_hash;
    for (level, sibling) in path.iter().enumerate() {
        h = if (bucket >> level) & 1 == 0 {
            node_hash(&h, sibling)
        } else {
            node_hash(sibling, &h)
        };
    }
    Ok(h)
}

/// The top tree in memory, as a heap: node 1 is the root, node `i` has children `2i` and
/// `2i + 1`, bucket `b`'s hash is node `BUCKETS + b`. 4 MiB.
#[derive(Clone)]
pub struct TopTree {
    nodes: Vec<CryptoHash>,
}

impl std::fmt::Debug for TopTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TopTree(root {})", self.root())
    }
}

/// A top-tree node's heap index.
pub type NodeIndex = u32;

impl TopTree {
    /// The top tree of an empty state.
    pub fn empty() -> Self {
        let mut nodes = vec![PAD; 2 * BUCKETS];
        for (i, n) in nodes.iter_mut().enumerate().skip(1) {
            // Node i is (16 - floor(log2 i)) levels above the buckets.
            *n = empty_subtree(BUCKET_BITS - (usize::BITS - 1 - i.leading_zeros()));
        }
        Self { nodes }
    }

    /// The top tree over these bucket hashes (the others empty).
    pub fn from_buckets(buckets: impl IntoIterator<Item = (u16, CryptoHash)>) -> Self {
        let mut t = Self::empty();
        let mut dirty = Vec::new();
        for (b, h) in buckets {
            t.nodes[BUCKETS + b as usize] = h;
            dirty.push(b);
        }
        t.update(&dirty);
        t
    }

    pub fn root(&self) -> CryptoHash {
        self.nodes[1]
    }

    /// Node `i` (1 ..= 2 · BUCKETS - 1).
    pub fn node(&self, i: NodeIndex) -> CryptoHash {
        self.nodes.get(i as usize).copied().unwrap_or(PAD)
    }

    pub fn bucket(&self, b: u16) -> CryptoHash {
        self.nodes[BUCKETS + b as usize]
    }

    /// Sets bucket hashes, then recomputes every node above them once. Returns each
    /// node that changed (buckets included) with its value before.
    pub fn set_buckets(
        &mut self,
        buckets: &[(u16, CryptoHash)],
    ) -> std::collections::BTreeMap<NodeIndex, CryptoHash> {
        let mut before = std::collections::BTreeMap::new();
        let mut dirty = Vec::with_capacity(buckets.len());
        for &(b, h) in buckets {
            let i = BUCKETS + b as usize;
            if self.nodes[i] != h {
                before.entry(i as NodeIndex).or_insert(self.nodes[i]);
                self.nodes[i] = h;
                dirty.push(b);
            }
        }
        for (i, old) in self.update(&dirty) {
            before.entry(i).or_insert(old);
        }
        before
    }

    /// Every node, in heap order, 32 bytes each (a copy kept beside a state, to compare
    /// with later without reading its buckets again).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.nodes.iter().flat_map(|n| n.0).collect()
    }

    /// A tree [`TopTree::to_bytes`] wrote; `None` if it is not that long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 2 * BUCKETS * 32 {
            return None;
        }
        let nodes = bytes
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                CryptoHash(h)
            })
            .collect();
        Some(Self { nodes })
    }

    /// The buckets whose hashes differ between the two trees, in order, found from the
    /// root down: a subtree whose node is equal in both holds equal buckets (the hash
    /// commits to them), so the cost follows the differences, not the buckets.
    pub fn differing_buckets(&self, other: &TopTree) -> Vec<u16> {
        let mut out = Vec::new();
        let mut stack = vec![1usize];
        while let Some(i) = stack.pop() {
            if self.nodes[i] == other.nodes[i] {
                continue;
            }
            if i >= BUCKETS {
                out.push((i - BUCKETS) as u16);
            } else {
                // Right first, so the left subtree is popped (and listed) first.
                stack.push(2 * i + 1);
                stack.push(2 * i);
            }
        }
        out
    }

    /// Puts back nodes as [`TopTree::set_buckets`] reported them before.
    pub fn restore(&mut self, before: &std::collections::BTreeMap<NodeIndex, CryptoHash>) {
        for (&i, h) in before {
            if let Some(n) = self.nodes.get_mut(i as usize) {
                *n = *h;
            }
        }
    }

    /// Recomputes the ancestors of `buckets`, level by level, each once; returns the
    /// changed ones with their previous values.
    fn update(&mut self, buckets: &[u16]) -> Vec<(NodeIndex, CryptoHash)> {
        let mut level: Vec<usize> = buckets.iter().map(|&b| BUCKETS + b as usize).collect();
        let mut changed = Vec::new();
        while level.first().is_some_and(|&i| i > 1) {
            let mut parents: Vec<usize> = level.iter().map(|i| i / 2).collect();
            parents.sort_unstable();
            parents.dedup();
            for &p in &parents {
                let h = node_hash(&self.nodes[2 * p], &self.nodes[2 * p + 1]);
                if self.nodes[p] != h {
                    changed.push((p as NodeIndex, self.nodes[p]));
                    self.nodes[p] = h;
                }
            }
            level = parents;
        }
        changed
    }

    /// The heap indices of bucket `b`'s 16 siblings, from the bucket up.
    pub fn path_indices(b: u16) -> impl Iterator<Item = NodeIndex> {
        let mut i = BUCKETS as NodeIndex + NodeIndex::from(b);
        std::iter::from_fn(move || {
            if i <= 1 {
                return None;
            }
            let sibling = i ^ 1;
            i /= 2;
            Some(sibling)
        })
    }
}

/// An entry a witness discloses: its key and value hash, not its value.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Disclosed {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub value_hash: CryptoHash,
}

/// A proof of one key's value, or of its absence, against a state root (see the module
/// docs). Encoded with [`types::codec`]; `version` first.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Witness {
    pub version: u8,
    /// Entries in the key's bucket.
    pub count: u32,
    /// The first slot the proof covers.
    pub start: u32,
    /// Absent key: the entries at `start..` around where it would be; present: none.
    pub disclosed: Vec<Disclosed>,
    /// Bucket-tree siblings of the covered slots, in walk order.
    pub bucket_siblings: Vec<CryptoHash>,
    /// Top-tree siblings, from the bucket up (16).
    pub path: Vec<CryptoHash>,
}

impl Witness {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a witness, refusing more than [`MAX_WITNESS_BYTES`], a non-canonical
    /// encoding, or a version this build does not read.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProofError> {
        let w: Self = codec::decode(bytes, MAX_WITNESS_BYTES)
            .map_err(|e| ProofError::Malformed(e.to_string()))?;
        if w.version != WITNESS_VERSION {
            return Err(ProofError::Version(w.version));
        }
        Ok(w)
    }

    /// The state root this witness leads to for entry `key` holding the value whose hash
    /// is `value_hash` (`None`: the key is absent). A wrong claim leads to another root.
    pub fn root(
        &self,
        key: &[u8],
        value_hash: Option<&CryptoHash>,
    ) -> Result<CryptoHash, ProofError> {
        let (count, start) = (u64::from(self.count), u64::from(self.start));
        let run: Vec<CryptoHash> = match value_hash {
            Some(vh) => {
                if !self.disclosed.is_empty() {
                    return Err(ProofError::Shape(
                        "a proof of a value discloses no other entries",
                    ));
                }
                vec![leaf_hash(key, vh)]
            }
            None => {
                let d = &self.disclosed;
                let key = key.to_vec();
                let fits = match d.len() {
                    0 => count == 0,
                    1 => (start == 0 && key < d[0].key) || (start + 1 == count && key > d[0].key),
                    2 => start + 1 < count && d[0].key < key && key < d[1].key,
                    _ => false,
                };
                if !fits {
                    return Err(ProofError::Shape(
                        "the disclosed entries do not enclose the key",
                    ));
                }
                d.iter().map(|e| leaf_hash(&e.key, &e.value_hash)).collect()
            }
        };
        let sub = range_subroot(count, start, &run, &self.bucket_siblings)?;
        root_from_path(bucket_of(key), bucket_hash(self.count, &sub), &self.path)
    }
}

/// Builds the witness for `key` in a bucket whose sorted entries are `entries`, with the
/// top-tree siblings `path`.
pub fn witness_for(
    key: &[u8],
    entries: &[(Vec<u8>, CryptoHash)],
    path: Vec<CryptoHash>,
) -> Witness {
    let leaves: Vec<CryptoHash> = entries.iter().map(|(k, vh)| leaf_hash(k, vh)).collect();
    let n = entries.len();
    let disclose = |r: std::ops::Range<usize>| -> Vec<Disclosed> {
        entries[r]
            .iter()
            .map(|(k, vh)| Disclosed {
                key: k.clone(),
                value_hash: *vh,
            })
            .collect()
    };
    let (start, end, disclosed) = match entries.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
        Ok(i) => (i, i + 1, Vec::new()),
        Err(_) if n == 0 => (0, 0, Vec::new()),
        Err(0) => (0, 1, disclose(0..1)),
        Err(p) if p == n => (n - 1, n, disclose(n - 1..n)),
        Err(p) => (p - 1, p + 1, disclose(p - 1..p + 1)),
    };
    Witness {
        version: WITNESS_VERSION,
        count: n as u32,
        start: start as u32,
        disclosed,
        bucket_siblings: if n == 0 {
            Vec::new()
        } else {
            range_proof(&leaves, start, end)
        },
        path,
    }
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;

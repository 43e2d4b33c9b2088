//! State sync's wire types and checks, pure: what a syncing node believes of a peer.
//!
//! - The **manifest** ([`StateManifest`]) lists every non-empty bucket's
//!   `(bucket, count, subroot)` in bucket order, with the height and the schema. The
//!   receiver rebuilds the top tree from it and refuses it unless
//!   `H(STATE_HASH, (height, root))` is the state hash the CUP carries, before it fetches
//!   any chunk ([`check_manifest`]). (The schema is not in the root; every leaf commits to
//!   it, so a wrong schema fails at the first chunk with an entry.)
//! - The entries are a stream in **(bucket, slot)** order: bucket by bucket, each
//!   bucket's entries by key. A **chunk** ([`StateChunk`]) continues the stream at a
//!   [`Cursor`] the receiver names: a sequence of **parts**, each a run of one bucket's
//!   slots with the bucket-tree siblings that prove the run against that bucket's
//!   subroot (none for a whole bucket). Only the last part may stop inside its bucket.
//!   A chunk encodes to at most [`MAX_CHUNK_BYTES`].
//! - The receiver ([`Verifier::check`]) checks a whole chunk before anything of it is
//!   written: each part starts exactly at the cursor (no bucket skipped, nothing
//!   repeated), lies within its bucket's count, carries keys in strictly increasing order
//!   that belong to its bucket, and hashes, with its siblings, to the manifest's subroot.
//!   A chunk that fails any check is refused whole: the caller drops the peer that sent it
//!   and asks the next one from the same cursor (a verified manifest is the same for every
//!   honest peer). So nothing is written that the manifest does not vouch for, at most the
//!   manifest's entries are written, and every chunk advances the cursor by at least one
//!   entry, which bounds the requests by the manifest's entry count.
//!
//! The replica writes what [`Verifier::check`] accepted into RocksDB; the simulator runs
//! the same checks against its lying peers.

use crate::tree::{self, TopTree};
use types::{CryptoHash, Height, codec};

/// The most bytes an encoded chunk may have.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// The most bytes an encoded manifest may have: every bucket listed, and the header.
pub const MAX_MANIFEST_BYTES: usize = 64 + 8 + tree::BUCKETS * (2 + 4 + 32);
/// The encoding version of manifests and chunks.
pub const SYNC_VERSION: u8 = 1;

/// Why a manifest or a chunk is not believed: the peer that sent it lied (or is broken).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state sync data does not verify: {0}")]
pub struct Unverified(pub String);

/// Whether a stored key is a hashed entry of the state: metadata and the tree's index
/// live under `m/` and are never hashed, served or imported.
pub fn is_hashed(key: &[u8]) -> bool {
    !key.starts_with(b"m/")
}

/// One bucket of a state: how many entries it has and their bucket tree's root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BucketSummary {
    pub bucket: u16,
    pub count: u32,
    pub subroot: CryptoHash,
}

impl BucketSummary {
    pub fn hash(&self) -> CryptoHash {
        tree::bucket_hash(self.count, &self.subroot)
    }
}

/// What a state-sync peer serves first: the non-empty buckets of its checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateManifest {
    pub version: u8,
    pub height: Height,
    /// The layout the entries are stored in.
    pub schema: u32,
    /// In strictly increasing bucket order, each with at least one entry.
    pub buckets: Vec<BucketSummary>,
}

impl StateManifest {
    /// The state hash this manifest commits to, if it is well formed.
    pub fn state_hash(&self) -> Result<CryptoHash, Unverified> {
        let bad = |why: &str| Unverified(format!("manifest: {why}"));
        if self.version != SYNC_VERSION {
            return Err(bad("unknown version"));
        }
        if self.buckets.windows(2).any(|w| w[0].bucket >= w[1].bucket) {
            return Err(bad("buckets out of order"));
        }
        if self.buckets.iter().any(|b| b.count == 0) {
            return Err(bad("an empty bucket listed"));
        }
        let top = TopTree::from_buckets(self.buckets.iter().map(|b| (b.bucket, b.hash())));
        Ok(tree::state_hash(self.height, &top.root()))
    }

    /// How many entries the state has.
    pub fn entries(&self) -> u64 {
        self.buckets.iter().map(|b| u64::from(b.count)).sum()
    }
}

/// A hashed entry of the state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// A run of one bucket's slots `start..start + entries.len()`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkPart {
    pub bucket: u16,
    pub start: u32,
    pub entries: Vec<Entry>,
    /// The bucket-tree siblings of the run, in walk order (none for a whole bucket).
    pub siblings: Vec<CryptoHash>,
}

/// The entries after a cursor, in (bucket, slot) order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateChunk {
    pub version: u8,
    pub height: Height,
    pub parts: Vec<ChunkPart>,
}

/// A position in the entry stream: bucket `bucket`, slot `slot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub bucket: u16,
    pub slot: u32,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bucket {} slot {}", self.bucket, self.slot)
    }
}

/// Checks a manifest a peer sent for the state at `height` with hash `expected`.
pub fn check_manifest(
    height: Height,
    expected: CryptoHash,
    m: &StateManifest,
) -> Result<(), Unverified> {
    if m.height != height {
        return Err(Unverified(format!(
            "a manifest for height {}, asked {height}",
            m.height
        )));
    }
    let got = m.state_hash()?;
    if got != expected {
        return Err(Unverified(format!(
            "the manifest leads to state hash {got}, the CUP says {expected}"
        )));
    }
    Ok(())
}

/// A chunk that verified: its entries with their value hashes, in stream order, the
/// buckets it starts (their summaries, for the importer's index), and where the stream
/// goes on. [`Verifier::advance`] takes it once its entries are written.
#[derive(Debug)]
pub struct Accepted {
    pub entries: Vec<(Entry, CryptoHash)>,
    pub started: Vec<BucketSummary>,
    next: usize,
    slot: u32,
    last_key: Option<Vec<u8>>,
}

/// Where a state sync stands: the verified manifest and the cursor.
#[derive(Clone, Debug)]
pub struct Verifier {
    height: Height,
    expected: CryptoHash,
    schema: u32,
    buckets: Vec<BucketSummary>,
    /// The bucket (index into `buckets`) and slot the next chunk must start at.
    next: usize,
    slot: u32,
    /// The last key accepted in the bucket being filled.
    last_key: Option<Vec<u8>>,
    accepted: u64,
}

impl Verifier {
    /// Starts from a manifest, which must lead to `expected` at `height`.
    pub fn new(
        height: Height,
        expected: CryptoHash,
        m: &StateManifest,
    ) -> Result<Self, Unverified> {
        check_manifest(height, expected, m)?;
        Ok(Self {
            height,
            expected,
            schema: m.schema,
            buckets: m.buckets.clone(),
            next: 0,
            slot: 0,
            last_key: None,
            accepted: 0,
        })
    }

    /// Continues with another peer's manifest: it must verify too, and name the schema
    /// the entries accepted so far verified under.
    pub fn accept_manifest(&mut self, m: &StateManifest) -> Result<(), Unverified> {
        check_manifest(self.height, self.expected, m)?;
        if m.schema != self.schema {
            if self.accepted > 0 {
                return Err(Unverified(format!(
                    "the manifest says schema {}, the entries verified so far are in schema {}",
                    m.schema, self.schema
                )));
            }
            self.schema = m.schema;
        }
        // The same root means the same buckets (or a SHA-256 collision).
        self.buckets.clone_from(&m.buckets);
        Ok(())
    }

    pub fn height(&self) -> Height {
        self.height
    }

    pub fn expected(&self) -> CryptoHash {
        self.expected
    }

    pub fn schema(&self) -> u32 {
        self.schema
    }

    pub fn buckets(&self) -> &[BucketSummary] {
        &self.buckets
    }

    /// Where the next chunk must start; `None` once every entry is in.
    pub fn cursor(&self) -> Option<Cursor> {
        self.buckets.get(self.next).map(|b| Cursor {
            bucket: b.bucket,
            slot: self.slot,
        })
    }

    /// Entries accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Checks a whole chunk against the manifest and the cursor. Nothing moves until
    /// [`Self::advance`].
    pub fn check(&self, chunk: &StateChunk) -> Result<Accepted, Unverified> {
        let bad = |why: String| Unverified(why);
        if chunk.version != SYNC_VERSION {
            return Err(bad(format!("chunk version {}", chunk.version)));
        }
        if chunk.height != self.height {
            return Err(bad(format!(
                "a chunk for height {}, asked {}",
                chunk.height, self.height
            )));
        }
        if chunk.parts.is_empty() {
            return Err(bad(format!(
                "an empty chunk before the end (at {:?})",
                self.cursor()
            )));
        }
        let (mut next, mut slot, mut last_key) = (self.next, self.slot, self.last_key.clone());
        let mut entries = Vec::new();
        let mut started = Vec::new();
        for (i, part) in chunk.parts.iter().enumerate() {
            let Some(s) = self.buckets.get(next) else {
                return Err(bad("entries past the end of the manifest".into()));
            };
            let here = Cursor {
                bucket: s.bucket,
                slot,
            };
            if part.bucket != s.bucket || part.start != slot {
                return Err(bad(format!(
                    "a part at bucket {} slot {}, expected {here}",
                    part.bucket, part.start
                )));
            }
            let end = u64::from(slot) + part.entries.len() as u64;
            if part.entries.is_empty() || end > u64::from(s.count) {
                return Err(bad(format!(
                    "a part of {} entries at {here}: bucket {} has {}",
                    part.entries.len(),
                    s.bucket,
                    s.count
                )));
            }
            let finishes = end == u64::from(s.count);
            if !finishes && i + 1 != chunk.parts.len() {
                return Err(bad(format!(
                    "a part stops inside bucket {} but is not the chunk's last",
                    s.bucket
                )));
            }
            let mut leaves = Vec::with_capacity(part.entries.len());
            for e in &part.entries {
                if !is_hashed(&e.key) || tree::bucket_of(&e.key) != s.bucket {
                    return Err(bad(format!(
                        "key {} does not belong in bucket {}",
                        hex::encode(&e.key),
                        s.bucket
                    )));
                }
                if last_key.as_ref().is_some_and(|l| e.key <= *l) {
                    return Err(bad(format!("keys out of order in bucket {}", s.bucket)));
                }
                last_key = Some(e.key.clone());
                let vh = tree::value_hash(self.schema, &e.value);
                leaves.push(tree::leaf_hash(&e.key, &vh));
                entries.push((e.clone(), vh));
            }
            let sub =
                tree::range_subroot(u64::from(s.count), u64::from(slot), &leaves, &part.siblings)
                    .map_err(|e| bad(format!("bucket {}: {e}", s.bucket)))?;
            if sub != s.subroot {
                return Err(bad(format!(
                    "bucket {}'s entries at slots {slot}..{end} hash to subroot {sub}, the manifest says {}",
                    s.bucket, s.subroot
                )));
            }
            if slot == 0 {
                started.push(*s);
            }
            if finishes {
                (next, slot, last_key) = (next + 1, 0, None);
            } else {
                slot = end as u32;
            }
        }
        Ok(Accepted {
            entries,
            started,
            next,
            slot,
            last_key,
        })
    }

    /// Moves the cursor past a chunk [`Self::check`] accepted (once it is written).
    pub fn advance(&mut self, a: Accepted) {
        self.accepted += a.entries.len() as u64;
        (self.next, self.slot, self.last_key) = (a.next, a.slot, a.last_key);
    }

    /// The root of the whole state, once every entry is in; `Err` before, or if the
    /// manifest no longer leads to the expected state hash.
    pub fn finish(&self) -> Result<CryptoHash, Unverified> {
        if let Some(c) = self.cursor() {
            return Err(Unverified(format!(
                "the sync stopped at {c}, before the manifest's end"
            )));
        }
        let top = TopTree::from_buckets(self.buckets.iter().map(|b| (b.bucket, b.hash())));
        if tree::state_hash(self.height, &top.root()) != self.expected {
            return Err(Unverified("the manifest changed under the sync".into()));
        }
        Ok(top.root())
    }
}

/// Decodes a manifest a peer sent, bounded by [`MAX_MANIFEST_BYTES`].
pub fn decode_manifest(bytes: &[u8]) -> Result<StateManifest, Unverified> {
    codec::decode(bytes, MAX_MANIFEST_BYTES).map_err(|e| Unverified(format!("manifest: {e}")))
}

/// Decodes a chunk a peer sent, bounded by [`MAX_CHUNK_BYTES`].
pub fn decode_chunk(bytes: &[u8]) -> Result<StateChunk, Unverified> {
    codec::decode(bytes, MAX_CHUNK_BYTES).map_err(|e| Unverified(format!("chunk: {e}")))
}

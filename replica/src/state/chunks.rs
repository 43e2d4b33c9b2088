//! State sync: a checkpoint served as a manifest and chunks, each checked as it arrives.
//!
//! - The **manifest** ([`StateManifest`]) lists every non-empty bucket's
//!   `(bucket, count, subroot)` in bucket order, with the height and the schema. The
//!   receiver rebuilds the top tree from it and refuses it unless
//!   `H(STATE_HASH, (height, root))` is the state hash the CUP carries, before it fetches
//!   any chunk. (The schema is not in the root; every leaf commits to it, so a wrong
//!   schema fails at the first chunk with an entry.)
//! - The entries are a stream in **(bucket, slot)** order: bucket by bucket, each
//!   bucket's entries by key. A **chunk** ([`StateChunk`]) continues the stream at a
//!   [`Cursor`] the receiver names: a sequence of **parts**, each a run of one bucket's
//!   slots with the bucket-tree siblings that prove the run against that bucket's
//!   subroot (none for a whole bucket). Only the last part may stop inside its bucket.
//!   A chunk encodes to at most [`MAX_CHUNK_BYTES`].
//! - The receiver ([`StateImport::add`]) checks a whole chunk before writing any of it:
//!   each part starts exactly at the cursor (no bucket skipped, nothing repeated), lies
//!   within its bucket's count, carries keys in strictly increasing order that belong to
//!   its bucket, and hashes, with its siblings, to the manifest's subroot. A chunk that
//!   fails any check is refused whole: the caller drops the peer that sent it and asks
//!   the next one from the same cursor (a verified manifest is the same for every honest
//!   peer). So nothing is written that the manifest does not vouch for, at most the
//!   manifest's entries are written, and every chunk advances the cursor by at least one
//!   entry, which bounds the requests by the manifest's entry count.

use super::{
    HEIGHT, ROOT, SCHEMA, StateError,
    index::{self, BucketSummary},
    read_meta,
    schema::{check_readable, read_schema},
    tree::{self, TopTree},
};
use rocksdb::{DB, Options, WriteBatch};
use std::path::Path;
use types::{CryptoHash, Height, codec};

/// The most bytes an encoded chunk may have.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// The most bytes an encoded manifest may have: every bucket listed, and the header.
pub const MAX_MANIFEST_BYTES: usize = 64 + 8 + tree::BUCKETS * (2 + 4 + 32);
/// The encoding version of manifests and chunks.
pub const SYNC_VERSION: u8 = 1;
/// Bytes kept free in a chunk for the siblings of its first and last parts: two
/// boundary paths through a bucket tree of at most 32 levels.
const SIBLINGS_RESERVE_BYTES: usize = 2 * 2 * 33 * 32;

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
    pub fn state_hash(&self) -> Result<CryptoHash, StateError> {
        let bad = |why: &str| StateError::Unverified(format!("manifest: {why}"));
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

/// The manifest of the checkpoint in `dir`. Read-only.
pub fn export_manifest(dir: &Path) -> Result<StateManifest, StateError> {
    let db = DB::open_for_read_only(&Options::default(), dir, false)?;
    let (height, _) = read_meta(&db)?;
    Ok(StateManifest {
        version: SYNC_VERSION,
        height,
        schema: read_schema(&db)?,
        buckets: index::read_summaries(&db, 0, tree::BUCKETS)?,
    })
}

/// The entries of the checkpoint in `dir` from `from` on, as many as fit in
/// [`MAX_CHUNK_BYTES`] (at least one, unless the stream has ended). Read-only.
pub fn export_chunk(dir: &Path, from: Cursor) -> Result<StateChunk, StateError> {
    let db = DB::open_for_read_only(&Options::default(), dir, false)?;
    let (height, _) = read_meta(&db)?;
    let mut parts = Vec::new();
    // Version, height, part count.
    let mut size = 1 + 8 + 8;
    let mut cursor = from;
    while let Some(s) = index::read_summaries(&db, cursor.bucket, 1)?.pop() {
        let start = if s.bucket == cursor.bucket {
            cursor.slot
        } else {
            0
        };
        if start >= s.count {
            return Err(StateError::Corrupt(format!(
                "{cursor} is past bucket {}'s {} entries",
                s.bucket, s.count
            )));
        }
        let all = index::read_bucket(&db, s.bucket)?;
        if all.len() != s.count as usize {
            return Err(StateError::Corrupt(format!(
                "bucket {} lists {} entries, its summary says {}",
                s.bucket,
                all.len(),
                s.count
            )));
        }
        // Bucket, start, entry count, sibling count.
        size += 2 + 4 + 8 + 8;
        let mut entries = Vec::new();
        let mut full = false;
        for (k, _) in &all[start as usize..] {
            let value = db
                .get(k)?
                .ok_or_else(|| StateError::Corrupt("an indexed entry is missing".into()))?;
            let bytes = 8 + k.len() + 8 + value.len();
            if size + bytes + SIBLINGS_RESERVE_BYTES > MAX_CHUNK_BYTES
                && (!entries.is_empty() || !parts.is_empty())
            {
                full = true;
                break;
            }
            size += bytes;
            entries.push(Entry {
                key: k.clone(),
                value,
            });
        }
        if entries.is_empty() {
            break;
        }
        let end = start as usize + entries.len();
        let siblings = if start == 0 && end == all.len() {
            Vec::new()
        } else {
            let leaves: Vec<CryptoHash> =
                all.iter().map(|(k, vh)| tree::leaf_hash(k, vh)).collect();
            tree::range_proof(&leaves, start as usize, end)
        };
        size += 32 * siblings.len();
        parts.push(ChunkPart {
            bucket: s.bucket,
            start,
            entries,
            siblings,
        });
        if full || s.bucket == u16::MAX {
            break;
        }
        cursor = Cursor {
            bucket: s.bucket + 1,
            slot: 0,
        };
    }
    Ok(StateChunk {
        version: SYNC_VERSION,
        height,
        parts,
    })
}

/// A state being rebuilt from a verified manifest and chunks checked against it.
pub struct StateImport {
    db: DB,
    height: Height,
    expected: CryptoHash,
    schema: u32,
    buckets: Vec<BucketSummary>,
    /// The bucket (index into `buckets`) and slot the next chunk must start at.
    next: usize,
    slot: u32,
    /// The last key written in the bucket being filled.
    last_key: Option<Vec<u8>>,
    written: u64,
}

impl std::fmt::Debug for StateImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StateImport(height {}, {} entries written, next {:?})",
            self.height,
            self.written,
            self.cursor()
        )
    }
}

impl StateImport {
    /// Starts a fresh state in `dir` (anything there is removed) for the state at
    /// `height` with hash `expected`, from a manifest that must lead to that hash.
    pub fn create(
        dir: &Path,
        height: Height,
        expected: CryptoHash,
        manifest: &StateManifest,
    ) -> Result<Self, StateError> {
        Self::check_manifest(height, expected, manifest)?;
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| StateError::Corrupt(format!("{}: {e}", dir.display())))?;
        }
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir)?;
        Ok(Self {
            db,
            height,
            expected,
            schema: manifest.schema,
            buckets: manifest.buckets.clone(),
            next: 0,
            slot: 0,
            last_key: None,
            written: 0,
        })
    }

    fn check_manifest(
        height: Height,
        expected: CryptoHash,
        m: &StateManifest,
    ) -> Result<(), StateError> {
        if m.height != height {
            return Err(StateError::Unverified(format!(
                "a manifest for height {}, asked {height}",
                m.height
            )));
        }
        let got = m.state_hash()?;
        if got != expected {
            return Err(StateError::Unverified(format!(
                "the manifest leads to state hash {got}, the CUP says {expected}"
            )));
        }
        check_readable(m.schema)
    }

    /// Continues with another peer's manifest: it must verify too, and name the schema
    /// the entries written so far verified under.
    pub fn accept_manifest(&mut self, m: &StateManifest) -> Result<(), StateError> {
        Self::check_manifest(self.height, self.expected, m)?;
        if m.schema != self.schema {
            if self.written > 0 {
                return Err(StateError::Unverified(format!(
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

    /// Where the next chunk must start; `None` once every entry is in.
    pub fn cursor(&self) -> Option<Cursor> {
        self.buckets.get(self.next).map(|b| Cursor {
            bucket: b.bucket,
            slot: self.slot,
        })
    }

    /// Entries written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks a whole chunk against the manifest, then writes it. Returns the entries
    /// it added. A refused chunk writes nothing.
    pub fn add(&mut self, chunk: &StateChunk) -> Result<usize, StateError> {
        let bad = |why: String| StateError::Unverified(why);
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
        let mut batch = WriteBatch::default();
        let mut added = 0;
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
                if !super::is_hashed(&e.key) || tree::bucket_of(&e.key) != s.bucket {
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
                batch.put(&e.key, &e.value);
                index::put_leaf(&mut batch, &e.key, &vh);
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
                index::put_summary(&mut batch, s);
            }
            added += part.entries.len();
            if finishes {
                (next, slot, last_key) = (next + 1, 0, None);
            } else {
                slot = end as u32;
            }
        }
        self.db.write(batch)?;
        (self.next, self.slot, self.last_key) = (next, slot, last_key);
        self.written += added as u64;
        Ok(added)
    }

    /// Seals the state once every entry is in: records its schema, height and root, in
    /// one synced write.
    pub fn finish(self) -> Result<(), StateError> {
        if let Some(c) = self.cursor() {
            return Err(StateError::Unverified(format!(
                "the sync stopped at {c}, before the manifest's end"
            )));
        }
        check_readable(self.schema)?;
        let top = TopTree::from_buckets(self.buckets.iter().map(|b| (b.bucket, b.hash())));
        if tree::state_hash(self.height, &top.root()) != self.expected {
            return Err(StateError::Unverified(
                "the manifest changed under the import".into(),
            ));
        }
        let mut b = WriteBatch::default();
        b.put(SCHEMA, self.schema.to_be_bytes());
        b.put(HEIGHT, self.height.get().to_be_bytes());
        b.put(ROOT, top.root().0);
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(b, &wo)?;
        // Into SST files: a checkpoint of this directory opened read-only (restore)
        // copies files, not the write-ahead log.
        self.db.flush()?;
        Ok(())
    }
}

/// Decodes a manifest a peer sent, bounded by [`MAX_MANIFEST_BYTES`].
pub fn decode_manifest(bytes: &[u8]) -> Result<StateManifest, StateError> {
    codec::decode(bytes, MAX_MANIFEST_BYTES)
        .map_err(|e| StateError::Unverified(format!("manifest: {e}")))
}

/// Decodes a chunk a peer sent, bounded by [`MAX_CHUNK_BYTES`].
pub fn decode_chunk(bytes: &[u8]) -> Result<StateChunk, StateError> {
    codec::decode(bytes, MAX_CHUNK_BYTES).map_err(|e| StateError::Unverified(format!("chunk: {e}")))
}

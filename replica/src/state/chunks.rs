//! State sync on RocksDB: serving a checkpoint as a manifest and chunks, and importing
//! a state chunk by chunk, each checked by the pure [`state_tree::sync::Verifier`] before
//! anything of it is written (the rules are in `state_tree::sync`'s docs).

use super::{
    HEIGHT, ROOT, SCHEMA, StateError, index, read_meta,
    schema::{check_readable, read_schema},
    tree,
};
use rocksdb::{DB, WriteBatch};
pub use state_tree::sync::{
    ChunkPart, Cursor, Entry, MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES, SYNC_VERSION, StateChunk,
    StateManifest,
};
use state_tree::sync::{Unverified, Verifier};
use std::path::Path;
use types::{CryptoHash, Height};

/// Bytes kept free in a chunk for the siblings of its first and last parts: two
/// boundary paths through a bucket tree of at most 32 levels.
const SIBLINGS_RESERVE_BYTES: usize = 2 * 2 * 33 * 32;

/// The manifest of the checkpoint in `dir`. Read-only.
pub fn export_manifest(dir: &Path) -> Result<StateManifest, StateError> {
    let db = super::open_read_only_db(dir)?;
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
    let db = super::open_read_only_db(dir)?;
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
    verifier: Verifier,
}

impl std::fmt::Debug for StateImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StateImport(height {}, {} entries written, next {:?})",
            self.verifier.height(),
            self.verifier.accepted(),
            self.cursor()
        )
    }
}

fn unverified(e: Unverified) -> StateError {
    StateError::Unverified(e.0)
}

impl StateImport {
    /// Starts a fresh state in `dir` (anything there is removed) for the state at
    /// `height` with hash `expected`, from a manifest that must lead to that hash in a
    /// schema this release reads.
    pub fn create(
        dir: &Path,
        height: Height,
        expected: CryptoHash,
        manifest: &StateManifest,
    ) -> Result<Self, StateError> {
        let verifier = Verifier::new(height, expected, manifest).map_err(unverified)?;
        check_readable(manifest.schema)?;
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| StateError::Corrupt(format!("{}: {e}", dir.display())))?;
        }
        let mut opts = super::db_options();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir)?;
        Ok(Self { db, verifier })
    }

    /// Continues with another peer's manifest: it must verify too, and name the schema
    /// the entries written so far verified under.
    pub fn accept_manifest(&mut self, m: &StateManifest) -> Result<(), StateError> {
        self.verifier.accept_manifest(m).map_err(unverified)?;
        check_readable(m.schema)
    }

    /// Where the next chunk must start; `None` once every entry is in.
    pub fn cursor(&self) -> Option<Cursor> {
        self.verifier.cursor()
    }

    /// Entries written so far.
    pub fn written(&self) -> u64 {
        self.verifier.accepted()
    }

    /// Checks a whole chunk against the manifest, then writes it. Returns the entries
    /// it added. A refused chunk writes nothing.
    pub fn add(&mut self, chunk: &StateChunk) -> Result<usize, StateError> {
        let accepted = self.verifier.check(chunk).map_err(unverified)?;
        let mut batch = WriteBatch::default();
        for (e, vh) in &accepted.entries {
            batch.put(&e.key, &e.value);
            index::put_leaf(&mut batch, &e.key, vh);
        }
        for s in &accepted.started {
            index::put_summary(&mut batch, s);
        }
        self.db.write(batch)?;
        let added = accepted.entries.len();
        self.verifier.advance(accepted);
        Ok(added)
    }

    /// Seals the state once every entry is in: records its schema, height and root, in
    /// one synced write.
    pub fn finish(self) -> Result<(), StateError> {
        let root = self.verifier.finish().map_err(unverified)?;
        let schema = self.verifier.schema();
        check_readable(schema)?;
        let mut b = WriteBatch::default();
        b.put(SCHEMA, schema.to_be_bytes());
        b.put(HEIGHT, self.verifier.height().get().to_be_bytes());
        b.put(ROOT, root.0);
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
    state_tree::sync::decode_manifest(bytes).map_err(unverified)
}

/// Decodes a chunk a peer sent, bounded by [`MAX_CHUNK_BYTES`].
pub fn decode_chunk(bytes: &[u8]) -> Result<StateChunk, StateError> {
    state_tree::sync::decode_chunk(bytes).map_err(unverified)
}

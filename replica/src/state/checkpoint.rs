//! Checkpoints: a RocksDB checkpoint of the state (hard links), read back without writing
//! (`peek`), and restored into place. A checkpoint carries the tree's index with it, so a
//! restored state opens with its tree and a peer can serve state sync from it.

use super::{ReplicatedState, SCHEMA_VERSION, StateError, read_meta, schema::read_schema, tree};
use std::path::Path;
use types::{CryptoHash, Height};

impl ReplicatedState {
    /// A RocksDB checkpoint of the state (hard links: its cost does not grow with the state).
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StateError> {
        // With a copy of the top tree, so the checkpoint (and this state, until its next
        // block) opens without rebuilding it.
        let mut b = rocksdb::WriteBatch::default();
        super::index::put_top_copy(&mut b, &self.top);
        self.db.write(b)?;
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    /// The height and state hash recorded in a checkpoint (or state) directory, read
    /// without writing anything; refused if its schema is newer than this release's.
    pub fn peek(dir: &Path) -> Result<(Height, CryptoHash), StateError> {
        let (height, hash, found) = Self::peek_any(dir)?;
        if found > SCHEMA_VERSION {
            return Err(StateError::NewerSchema {
                dir: dir.display().to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok((height, hash))
    }

    /// Height, state hash and schema of a checkpoint (or state) directory, whatever its
    /// schema, read without writing anything.
    pub fn peek_any(dir: &Path) -> Result<(Height, CryptoHash, u32), StateError> {
        let db = super::open_read_only_db(dir)?;
        let found = read_schema(&db)?;
        let (height, root) = read_meta(&db)?;
        Ok((height, tree::state_hash(height, &root), found))
    }

    /// The checkpoint (or state) in `dir`, opened read-only: to read from, as the source
    /// a migrated copy is brought up to. Writing to it fails.
    pub fn open_read_only(dir: &Path) -> Result<Self, StateError> {
        let db = super::open_read_only_db(dir)?;
        Self::with_db(db).map_err(|e| StateError::Corrupt(format!("{}: {e}", dir.display())))
    }

    /// Replaces the state in `state_dir` with the checkpoint in `checkpoint_dir` (hard
    /// links again, so restoring costs what checkpointing does) and opens it. The
    /// checkpoint itself is never written.
    pub fn restore(checkpoint_dir: &Path, state_dir: &Path) -> Result<Self, StateError> {
        let io = |e: std::io::Error| StateError::Corrupt(format!("{}: {e}", state_dir.display()));
        // Build next to the target, then swap: a crash leaves either the old or the new.
        let tmp = state_dir.with_extension("restoring");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io)?;
        }
        link_copy(checkpoint_dir, &tmp)?;
        if state_dir.exists() {
            std::fs::remove_dir_all(state_dir).map_err(io)?;
        }
        // The swap survives a crash once it returns (the directory is synced too).
        durable::rename(&tmp, state_dir).map_err(|e| StateError::Corrupt(e.to_string()))?;
        Self::open(state_dir)
    }

    /// A copy of the checkpoint (or state) in `src` at `dst` (hard links, so it costs
    /// what checkpointing does), opened for writing; `src` is never written. A
    /// rehearsal migrates such a copy and throws it away.
    pub fn copy(src: &Path, dst: &Path) -> Result<Self, StateError> {
        link_copy(src, dst)?;
        Self::open(dst)
    }
}

fn link_copy(src: &Path, dst: &Path) -> Result<(), StateError> {
    let db = super::open_read_only_db(src)?;
    rocksdb::checkpoint::Checkpoint::new(&db)?.create_checkpoint(dst)?;
    Ok(())
}

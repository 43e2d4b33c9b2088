//! This node's own consensus shares on disk, written (synced) before they are sent, so a
//! restarted replica never signs anything that contradicts what it signed before a crash.

use consensus::artifact::Envelope;
use rocksdb::{DB, Options, WriteOptions};
use std::path::Path;
use types::Height;

/// The most envelopes loaded back at start (a bound on a corrupt or runaway pool).
pub const MAX_RESTORED: usize = 100_000;

pub struct PoolStore {
    db: DB,
    next_seq: u64,
}

impl std::fmt::Debug for PoolStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PoolStore(next {})", self.next_seq)
    }
}

fn key(h: Height, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&h.get().to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl PoolStore {
    pub fn open(dir: &Path) -> Result<Self, rocksdb::Error> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir)?;
        let mut next_seq = 0;
        let mut it = db.raw_iterator();
        it.seek_to_first();
        while it.valid() {
            if let Some(k) = it
                .key()
                .and_then(|k| <[u8; 8]>::try_from(k.get(8..16)?).ok())
            {
                next_seq = next_seq.max(u64::from_be_bytes(k) + 1);
            }
            it.next();
        }
        it.status()?;
        drop(it);
        Ok(Self { db, next_seq })
    }

    /// Durable when it returns.
    pub fn append(&mut self, e: &Envelope) -> Result<(), rocksdb::Error> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db
            .put_opt(key(e.artifact.height(), self.next_seq), e.encode(), &wo)?;
        self.next_seq += 1;
        Ok(())
    }

    /// The envelopes above `base` that decode (others are logged and skipped).
    pub fn load_above(&self, base: Height) -> Result<Vec<Envelope>, rocksdb::Error> {
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator();
        it.seek(key(base.increment(), 0));
        while it.valid() && out.len() < MAX_RESTORED {
            if let Some(v) = it.value() {
                match Envelope::decode(v) {
                    Ok(e) => out.push(e),
                    Err(err) => tracing::warn!(%err, "skipping an undecodable persisted share"),
                }
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Forgets everything at or below `h` (below a CUP nothing is signed again).
    pub fn purge_through(&mut self, h: Height) -> Result<(), rocksdb::Error> {
        let mut b = rocksdb::WriteBatch::default();
        b.delete_range(key(Height::ZERO, 0), key(h.increment(), 0));
        self.db.write(b)
    }
}

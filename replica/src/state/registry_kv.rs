//! The registry inside a replicated state (issue 19: the NNS subnet keeps the registry and
//! governance as its state). [`BlockKv`] is one block's view of the state as the ordered
//! byte map a [`KvStore`] keeps the registry in: reads see the block's writes so far, and
//! writes join the block's batch. The registry's entries (`r/`, `g/`: layout in
//! `registry::store::kv`) are hashed into the state tree like every other entry, so the
//! subnet's certification of a height's state hash covers them, and a reader checks any
//! one of them with a witness ([`ReplicatedState::entry_witness`]): the chain hash at a
//! version vouches for every delta up to it (`registry::store::kv::verify_page`).
//!
//! The blocks that carry governance calls are [`super::nns`]'s, and so are reads below the
//! executed height (through the blocks' undos).

use super::{CertifiedRead, ReplicatedState, StateError, Writes};
use super::{index, tree};
use registry::store::{
    Kv, KvStore, StoreError,
    kv::{KvEntry, KvWrite},
};
use rocksdb::DB;
use std::collections::BTreeMap;

/// A block's view of the state as a registry map. See the module docs.
pub struct BlockKv<'a> {
    db: &'a DB,
    writes: &'a mut Writes,
}

impl std::fmt::Debug for BlockKv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockKv({} writes so far)", self.writes.overlay.len())
    }
}

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

impl<'a> BlockKv<'a> {
    pub(super) fn new(db: &'a DB, writes: &'a mut Writes) -> Self {
        Self { db, writes }
    }
}

impl Kv for BlockKv<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.writes.current(self.db, key).map_err(storage)
    }

    fn last_at_or_before(&self, prefix: &[u8], upto: &[u8]) -> Result<Option<KvEntry>, StoreError> {
        // Walk the stored entries and the block's writes down from `upto` together; a
        // write hides the stored entry under the same key, and a deletion hides it too.
        let mut it = self.db.raw_iterator();
        it.seek_for_prev(upto);
        let mut written = self
            .writes
            .overlay
            .range(prefix.to_vec()..=upto.to_vec())
            .rev()
            .peekable();
        loop {
            let stored = it
                .valid()
                .then(|| it.key())
                .flatten()
                .filter(|k| k.starts_with(prefix))
                .map(<[u8]>::to_vec);
            let next_written = written.peek().map(|(k, _)| (*k).clone());
            match (stored, next_written) {
                (None, None) => {
                    it.status().map_err(storage)?;
                    return Ok(None);
                }
                (Some(k), w) if w.as_ref().is_none_or(|w| k > *w) => {
                    let v = it.value().map(<[u8]>::to_vec).unwrap_or_default();
                    return Ok(Some((k, v)));
                }
                (stored, _) => {
                    let Some((k, v)) = written.next() else {
                        return Ok(None);
                    };
                    if stored.as_ref() == Some(k) {
                        it.prev();
                    }
                    if let Some(v) = v {
                        return Ok(Some((k.clone(), v.clone())));
                    }
                }
            }
        }
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<KvEntry>, StoreError> {
        let mut out = BTreeMap::new();
        let mut it = self.db.raw_iterator();
        it.seek(prefix);
        while let (true, Some(k), Some(v)) = (it.valid(), it.key(), it.value()) {
            if !k.starts_with(prefix) {
                break;
            }
            out.insert(k.to_vec(), v.to_vec());
            it.next();
        }
        it.status().map_err(storage)?;
        let written = self
            .writes
            .overlay
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix));
        for (k, v) in written {
            match v {
                Some(v) => out.insert(k.clone(), v.clone()),
                None => out.remove(k),
            };
        }
        Ok(out.into_iter().collect())
    }

    fn write(&mut self, writes: Vec<KvWrite>) -> Result<(), StoreError> {
        for (k, v) in writes {
            if !super::is_hashed(&k) {
                // The registry's layout never names metadata; refuse rather than write
                // outside the hashed entries.
                return Err(StoreError::InvalidKey {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: "not a hashed entry of the state",
                });
            }
            self.writes.remember(self.db, &k).map_err(storage)?;
            self.writes.write(k, v);
        }
        Ok(())
    }
}

impl ReplicatedState {
    /// The registry kept in this state, read-only, as of the executed height.
    pub fn registry_view<R>(
        &self,
        f: impl FnOnce(&KvStore<BlockKv<'_>>) -> Result<R, StoreError>,
    ) -> Result<R, StateError> {
        let mut w = Writes::new();
        let kv = BlockKv {
            db: &self.db,
            writes: &mut w,
        };
        let store = KvStore::open(kv).map_err(StateError::Registry)?;
        f(&store).map_err(StateError::Registry)
    }

    /// Any hashed entry's stored value, with its witness against the root at the
    /// executed height.
    pub fn entry_witness(&self, entry_key: &[u8]) -> Result<CertifiedRead, StateError> {
        let stored = self.db.get(entry_key)?;
        let (witness, root) = index::witness_at(&self.db, &self.top, entry_key, &[])?;
        Ok(CertifiedRead {
            stored,
            witness,
            root,
        })
    }

    /// The root an entry's witness leads to for the value it claims (stored as is:
    /// registry entries carry no checksum in any schema).
    pub fn entry_root(
        schema: u32,
        entry_key: &[u8],
        read: &CertifiedRead,
    ) -> Result<types::CryptoHash, tree::ProofError> {
        let vh = read.stored.as_ref().map(|v| tree::value_hash(schema, v));
        read.witness.root(entry_key, vh.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{BlockUndo, Executed};
    use types::Height;

    impl ReplicatedState {
        /// Runs `f` on the registry kept in this state as the block at `height` (the next
        /// one): what it writes commits with the block, hashed like every entry. `f` returns
        /// an error only to abandon the block (storage failing); then nothing changes. A
        /// refused request is an outcome, for `f` to return as its value. Tests only: the
        /// store's laws checked on a state; blocks run governance through `execute`.
        fn execute_registry<R>(
            &mut self,
            height: Height,
            f: impl FnOnce(&mut KvStore<BlockKv<'_>>) -> Result<R, StoreError>,
        ) -> Result<(R, Executed), StateError> {
            let mut w = self.begin_block(height)?;
            let out = {
                let kv = BlockKv {
                    db: &self.db,
                    writes: &mut w,
                };
                let mut store = KvStore::open(kv).map_err(StateError::Registry)?;
                f(&mut store).map_err(StateError::Registry)?
            };
            let entries = std::mem::take(&mut w.previous);
            let tree = self.commit_block(height, w)?;
            Ok((
                out,
                Executed {
                    state_hash: self.state_hash(),
                    executed: Vec::new(),
                    skipped: 0,
                    undo: BlockUndo {
                        values: BTreeMap::new(),
                        entries,
                        tree,
                    },
                },
            ))
        }
    }
    use registry::store::{
        MemoryStore, Mutation, RegistryStore,
        kv::{chain_key, verify_page},
    };
    use types::RegistryVersion;

    fn batch(i: u8) -> Vec<Mutation> {
        let key = format!("key_{}", i % 3);
        let value = vec![i; 4];
        if i < 3 {
            vec![Mutation::Insert { key, value }]
        } else if i.is_multiple_of(4) {
            vec![Mutation::Delete { key }]
        } else {
            vec![Mutation::Update { key, value }]
        }
    }

    #[test]
    fn the_registry_in_blocks_reads_like_a_store_and_is_certified_by_the_state_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let mut state = ReplicatedState::open(&path).unwrap();
        let mut model = MemoryStore::new();
        let mut h = Height::new(0);
        for i in 0..8u8 {
            let b = batch(i);
            // A delete of an absent key is refused alike by both; its block still runs.
            let expected = model.apply(&b);
            h = h.increment();
            let before = state.state_hash();
            let (got, executed) = state.execute_registry(h, |s| Ok(s.apply(&b))).unwrap();
            assert_eq!(got, expected, "batch {i}");
            assert_ne!(executed.state_hash, before, "a block moves the state hash");
            assert_eq!(state.recompute_hash().unwrap(), state.state_hash());
        }
        // Reopened, the state holds the same registry.
        drop(state);
        let state = ReplicatedState::open(&path).unwrap();
        let latest = model.latest_version();
        state
            .registry_view(|s| {
                assert_eq!(s.latest_version(), latest);
                for v in 0..=latest.get() {
                    for k in ["key_0", "key_1", "key_2"] {
                        let v = RegistryVersion::new(v);
                        assert_eq!(s.get(k, v), model.get(k, v), "{k} at {v}");
                    }
                }
                assert_eq!(s.latest_snapshot(), model.latest_snapshot());
                Ok(())
            })
            .unwrap();

        // A reader that trusts the chain hash at version 2 checks every later delta
        // with one witness against the state root.
        let (trusted, page) = state
            .registry_view(|s| {
                Ok((
                    s.chain_hash_at(RegistryVersion::new(2))?,
                    s.changes_since(RegistryVersion::new(2), 100)?,
                ))
            })
            .unwrap();
        let head_key = chain_key(latest);
        let read = state.entry_witness(&head_key).unwrap();
        assert_eq!(
            ReplicatedState::entry_root(state.schema(), &head_key, &read),
            Ok(state.root())
        );
        let head = types::CryptoHash(read.stored.clone().unwrap().try_into().unwrap());
        assert_eq!(
            verify_page(&trusted, RegistryVersion::new(2), &page, &head),
            Ok(head)
        );
        // A forged head does not lead to the root.
        let mut forged = read.clone();
        forged.stored = Some(vec![0; 32]);
        assert_ne!(
            ReplicatedState::entry_root(state.schema(), &head_key, &forged),
            Ok(state.root())
        );
    }

    #[test]
    fn an_abandoned_block_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ReplicatedState::open(&dir.path().join("state")).unwrap();
        let (_, _) = state
            .execute_registry(Height::new(1), |s| Ok(s.apply(&batch(0))))
            .unwrap();
        let hash = state.state_hash();
        let r = state.execute_registry(Height::new(2), |s| {
            s.apply(&batch(1))?;
            Err::<(), _>(StoreError::Storage("disk gone".into()))
        });
        assert!(matches!(r, Err(StateError::Registry(_))));
        assert_eq!(state.height(), Height::new(1));
        assert_eq!(state.state_hash(), hash);
        state
            .registry_view(|s| {
                assert_eq!(s.latest_version(), RegistryVersion::new(1));
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn reads_through_a_block_see_its_writes_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ReplicatedState::open(&dir.path().join("state")).unwrap();
        let put = |k: &str, v: u8| (k.as_bytes().to_vec(), Some(vec![v]));
        state
            .execute_registry(Height::new(1), |s| {
                let _ = s;
                Ok(())
            })
            .unwrap();
        // Stored: g/a1, g/a3, g/a5. The block writes g/a2, deletes g/a3, rewrites g/a5.
        let mut w = Writes::new();
        {
            let mut kv = BlockKv {
                db: &state.db,
                writes: &mut w,
            };
            kv.write(vec![put("g/a1", 1), put("g/a3", 3), put("g/a5", 5)])
                .unwrap();
        }
        state.commit_block(Height::new(2), w).unwrap();
        let mut w = Writes::new();
        let mut kv = BlockKv {
            db: &state.db,
            writes: &mut w,
        };
        kv.write(vec![
            put("g/a2", 2),
            (b"g/a3".to_vec(), None),
            put("g/a5", 50),
        ])
        .unwrap();
        let last = |upto: &str| {
            kv.last_at_or_before(b"g/a", upto.as_bytes())
                .unwrap()
                .map(|(k, v)| (String::from_utf8(k).unwrap(), v[0]))
        };
        assert_eq!(last("g/a9"), Some(("g/a5".into(), 50)));
        assert_eq!(last("g/a4"), Some(("g/a2".into(), 2)), "g/a3 is deleted");
        assert_eq!(last("g/a3"), Some(("g/a2".into(), 2)));
        assert_eq!(last("g/a1"), Some(("g/a1".into(), 1)));
        assert_eq!(last("g/a0"), None);
        let scanned: Vec<(String, u8)> = kv
            .scan(b"g/a")
            .unwrap()
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), v[0]))
            .collect();
        assert_eq!(
            scanned,
            vec![("g/a1".into(), 1), ("g/a2".into(), 2), ("g/a5".into(), 50)]
        );
        assert!(kv.write(vec![put("m/height", 1)]).is_err());
    }
}

//! The replicated state on RocksDB: the key/value application, replay protection, and a
//! Merkle tree over it whose root the state hash commits to.
//!
//! Layout: `v/<key>` user values; `x/<message id>` executed messages (their expiry), kept
//! until they expire so a replay executes once; `e/<expiry><id>` the same ids by expiry,
//! to purge them in order; `o/<key>` and `q/<sender>`, `q/total`: who owns each value and
//! what each sender's values take ([`quota`]); on an NNS subnet, the registry (`r/`,
//! `g/`: [`registry_kv`]) and governance calls' replies (`n/reply/<message id>`: [`nns`]).
//! These are the **hashed entries**. `m/*` is metadata, not
//! hashed: `m/schema`, `m/height`, `m/root`, and the tree's index (`m/tb/`, `m/tl/`,
//! see [`index`]).
//!
//! State hash: `H(STATE_HASH, encode((height, root)))`, where `root` is the root of the
//! state tree over every hashed entry ([`tree`] specifies it: 2^16 buckets by key hash,
//! a tree over each bucket's sorted entries, a complete tree over the buckets). A block
//! recomputes only the buckets it writes and the nodes above them, and writes the tree's
//! changes in the same batch as its entries.
//!
//! Modules: [`tree`] (the pure tree: hashes, witnesses, range proofs), [`index`] (the tree
//! on disk, undo for reads at the certified height), [`schema`] (layouts and migration),
//! [`ahead`] (a migrated copy brought up to the state at the CUP),
//! [`checkpoint`] (checkpoints, peek, restore), [`chunks`] (state sync: manifest, chunks,
//! import).

pub mod ahead;
pub mod checkpoint;
pub mod chunks;
pub mod index;
pub mod nns;
pub mod quota;
pub mod registry_kv;
pub mod schema;
/// The state tree is pure, in its own crate, so the simulator runs the same code.
pub use state_tree::tree;

pub use chunks::{
    Cursor, MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES, StateChunk, StateImport, StateManifest,
    export_chunk, export_manifest,
};
pub use index::{BucketSummary, TreeUndo};
pub use schema::{
    CHECKSUM_BYTES, NEWEST_KNOWN_SCHEMA, SCHEMA_VERSION, StoredValue, check_readable, from_stored,
    to_stored, value_checksum,
};

use crate::ingress::{Operation, SignedIngress, Validate, VerifiedSignatures};
use rocksdb::{DB, Options, WriteBatch};
use std::{collections::BTreeMap, path::Path};
use tree::{TopTree, Witness};
use types::{CryptoHash, Height, NetworkId};

const SCHEMA: &[u8] = b"m/schema";
const HEIGHT: &[u8] = b"m/height";
const ROOT: &[u8] = b"m/root";
/// The most expired replay records one block purges (the rest go in later blocks).
pub const MAX_EXPIRED_PER_BLOCK: usize = 10_000;

use state_tree::sync::is_hashed;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "the state in {dir} has schema {found}, newer than this release's {supported}: refusing to open it (nothing was changed)"
    )]
    NewerSchema {
        dir: String,
        found: u32,
        supported: u32,
    },
    #[error("state storage: {0}")]
    Storage(#[from] rocksdb::Error),
    #[error("the state is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot execute height {got}: the state is at {at}")]
    OutOfOrder { at: Height, got: Height },
    /// The registry kept in this state (an NNS subnet's) could not be read or written.
    #[error("the registry in the state: {0}")]
    Registry(registry::store::StoreError),
    /// The registry refused a change that is not a user's request (the genesis registry).
    #[error("the registry refused: {0}")]
    RegistryRefused(registry::RegistryError),
    /// State-sync data (a manifest or a chunk) that does not verify: the peer lied.
    #[error("state sync data does not verify: {0}")]
    Unverified(String),
}

/// What a block changed, as it was before: enough to read the state as of an earlier
/// height (see [`index`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockUndo {
    /// Each user key the block wrote, with its stored value before the block (`None`:
    /// absent; [`from_stored`] reads it).
    pub values: BTreeMap<String, Option<Vec<u8>>>,
    /// Each registry entry (`r/`, `g/`: an NNS subnet's) the block wrote, with its value
    /// before the block: for registry reads at the certified height ([`nns`]).
    pub entries: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    pub tree: TreeUndo,
}

/// What executing a block did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    pub state_hash: CryptoHash,
    /// Ids of the messages that executed (not the skipped duplicates or invalid ones).
    pub executed: Vec<CryptoHash>,
    pub skipped: usize,
    /// The driver keeps these for uncertified heights, to answer queries (with witnesses)
    /// as of the certified height.
    pub undo: BlockUndo,
}

/// A user key's stored value as of some height, with the witness that proves it (or its
/// absence) against that height's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedRead {
    /// As the schema stores it ([`from_stored`] reads it).
    pub stored: Option<Vec<u8>>,
    pub witness: Witness,
    pub root: CryptoHash,
}

pub struct ReplicatedState {
    db: DB,
    height: Height,
    top: TopTree,
    /// The layout the stored entries are in (older than [`SCHEMA_VERSION`] until migrated).
    schema: u32,
    /// What execution lets one sender, and the whole state, hold ([`quota::QUOTAS`]).
    quotas: quota::Quotas,
    /// An NNS state's registry as its last block left it in memory ([`registry::Warm`]),
    /// with that block's height: the next block starts from it instead of decoding every
    /// proposal again. Kept only once that block is committed, used only at that height.
    registry_warm: Option<(Height, registry::Warm)>,
}

impl std::fmt::Debug for ReplicatedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ReplicatedState(height {}, hash {})",
            self.height,
            self.state_hash()
        )
    }
}

/// How every state database here is opened. A bloom filter per table file: most of
/// execution's point reads miss (a new update's replay record, a new key's value and
/// owner), and without a filter each miss reads index and data blocks of every level it
/// passes; the pool's replay check misses for every new update too (10 bits a key: about
/// 1% false positives, 1.25 bytes a key of memory).
pub(crate) fn db_options() -> Options {
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table);
    opts
}

/// Attempts at opening a state read-only (see [`open_read_only_db`]).
const READ_ONLY_OPEN_ATTEMPTS: u32 = 10;

/// Opens the database in `dir` read-only, trying again while a file it listed is gone
/// when it reads it. A read-only open reads the write-ahead logs of a database another
/// process may be writing (the preflight's rehearsal peeks at the running replica's
/// state), and that process deletes a log once its memtable is flushed: an open that
/// lists the log just before then fails with "No such file or directory" (seen once in a
/// fresh CI run: a node's rehearsal failed, so the node said it was not ready).
pub(crate) fn open_read_only_db(dir: &Path) -> Result<DB, rocksdb::Error> {
    let mut attempt = 1;
    loop {
        match DB::open_for_read_only(&db_options(), dir, false) {
            Err(e) if attempt < READ_ONLY_OPEN_ATTEMPTS && is_vanished_file(&e) && dir.exists() => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// An error for a file a live database removed while it was being opened.
fn is_vanished_file(e: &rocksdb::Error) -> bool {
    e.kind() == rocksdb::ErrorKind::IOError && e.to_string().contains("No such file or directory")
}

fn prefixed(p: &[u8], k: &[u8]) -> Vec<u8> {
    [p, k].concat()
}

/// The entry key of a user key.
pub fn user_entry_key(key: &str) -> Vec<u8> {
    prefixed(b"v/", key.as_bytes())
}

impl ReplicatedState {
    /// Opens (or creates) the state in `dir`, rebuilding the top tree from the index and
    /// checking it against the recorded root.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        // Look at the schema without opening for writing.
        if dir.join("CURRENT").exists() {
            let ro = open_read_only_db(dir)?;
            let found = schema::read_schema(&ro)?;
            drop(ro);
            if found > SCHEMA_VERSION {
                return Err(StateError::NewerSchema {
                    dir: dir.display().to_string(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
        }
        let mut opts = db_options();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir)?;
        if db.get(SCHEMA)?.is_none() {
            let mut b = WriteBatch::default();
            b.put(SCHEMA, SCHEMA_VERSION.to_be_bytes());
            b.put(HEIGHT, 0u64.to_be_bytes());
            b.put(ROOT, tree::empty_root().0);
            db.write(b)?;
        }
        Self::with_db(db)
    }

    /// The state in an opened database: its schema, height and root, and its top tree
    /// checked against the root.
    fn with_db(db: DB) -> Result<Self, StateError> {
        let schema = schema::read_schema(&db)?;
        if schema == 0 {
            return Err(StateError::Corrupt("no schema marker".into()));
        }
        if schema > SCHEMA_VERSION {
            return Err(StateError::Corrupt(format!(
                "state schema {schema} is newer than this release's {SCHEMA_VERSION}"
            )));
        }
        let (height, root) = read_meta(&db)?;
        let top = index::load_top_for(&db, &root)?;
        if top.root() != root {
            return Err(StateError::Corrupt(format!(
                "the tree index has root {}, the state records {root}",
                top.root()
            )));
        }
        Ok(Self {
            db,
            height,
            top,
            schema,
            quotas: quota::QUOTAS,
            registry_warm: None,
        })
    }

    /// Other bounds than every replica's (tests only: a state with other quotas hashes
    /// differently from its peers' as soon as a bound bites).
    #[cfg(test)]
    pub fn with_quotas(mut self, quotas: quota::Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// The layout the stored entries are in.
    pub fn schema(&self) -> u32 {
        self.schema
    }

    pub fn height(&self) -> Height {
        self.height
    }

    pub fn root(&self) -> CryptoHash {
        self.top.root()
    }

    pub fn state_hash(&self) -> CryptoHash {
        tree::state_hash(self.height, &self.top.root())
    }

    /// The value of `key` as the user wrote it.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.get_stored(key)?.map(|(v, _)| v))
    }

    /// The value of `key` as the user wrote it, with the checksum stored beside it.
    pub fn get_stored(&self, key: &str) -> Result<Option<StoredValue>, StateError> {
        self.db
            .get(user_entry_key(key))?
            .map(|s| from_stored(self.schema, &s))
            .transpose()
    }

    /// `key`'s stored value and its witness as of the height before the blocks whose
    /// undos are `later` (oldest first; empty: the executed height).
    pub fn read_at(&self, key: &str, later: &[&BlockUndo]) -> Result<CertifiedRead, StateError> {
        let stored = match later.iter().find_map(|u| u.values.get(key)) {
            Some(v) => v.clone(),
            None => self.db.get(user_entry_key(key))?,
        };
        let trees: Vec<&TreeUndo> = later.iter().map(|u| &u.tree).collect();
        let (witness, root) = index::witness_at(&self.db, &self.top, &user_entry_key(key), &trees)?;
        Ok(CertifiedRead {
            stored,
            witness,
            root,
        })
    }

    /// Whether the update `id` executed here and its replay record is kept (until its
    /// expiry: after that it can no longer be valid anyway).
    pub fn has_executed(&self, id: &CryptoHash) -> Result<bool, StateError> {
        Ok(self.db.get(prefixed(b"x/", &id.0))?.is_some())
    }

    /// Executes the block at `height` (the next one) with time `time_ns` on `network`
    /// (an update for another network is skipped like any invalid one).
    pub fn execute(
        &mut self,
        height: Height,
        time_ns: u64,
        network: &NetworkId,
        payload: &[SignedIngress],
    ) -> Result<Executed, StateError> {
        let mut fresh = VerifiedSignatures::with_capacity(1);
        self.execute_with(height, time_ns, network, payload, &mut fresh)
    }

    /// [`Self::execute`], with signatures checked through `verified`: the ingress pool's,
    /// where most of a block's updates were checked already. The outcome is the same.
    pub fn execute_with(
        &mut self,
        height: Height,
        time_ns: u64,
        network: &NetworkId,
        payload: &[SignedIngress],
        verified: &mut VerifiedSignatures,
    ) -> Result<Executed, StateError> {
        self.execute_block(height, time_ns, network, payload, verified, None)
    }

    /// The block at `height`; with `install`, an NNS subnet's first block, which writes
    /// the genesis registry before its payload executes ([`nns`]).
    fn execute_block(
        &mut self,
        height: Height,
        time_ns: u64,
        network: &NetworkId,
        payload: &[SignedIngress],
        verified: &mut VerifiedSignatures,
        install: Option<&nns::RegistryGenesis>,
    ) -> Result<Executed, StateError> {
        let mut w = self.begin_block(height)?;
        if let Some(genesis) = install {
            nns::install(&self.db, &mut w, genesis)?;
        }
        // Expired replay records go first: their messages can no longer be valid.
        let mut it = self.db.raw_iterator();
        it.seek(b"e/");
        let mut expired = Vec::new();
        while it.valid() && expired.len() < MAX_EXPIRED_PER_BLOCK {
            let Some(k) = it.key() else { break };
            if !k.starts_with(b"e/") || k.len() != 2 + 8 + 32 {
                break;
            }
            let mut e = [0u8; 8];
            e.copy_from_slice(&k[2..10]);
            if u64::from_be_bytes(e) >= time_ns {
                break;
            }
            expired.push(k.to_vec());
            it.next();
        }
        it.status()?;
        drop(it);
        // An NNS subnet's state: governance calls execute, and their replies expire with
        // their replay records.
        let keeps_registry = install.is_some() || nns::keeps_registry(&self.db)?;
        for ek in expired {
            let id = &ek[10..];
            if keeps_registry {
                let rk = prefixed(nns::REPLY_PREFIX, id);
                if self.db.get(&rk)?.is_some() {
                    w.write(rk, None);
                }
            }
            w.write(prefixed(b"x/", id), None);
            w.write(ek, None);
        }
        let mut calls = Vec::new();
        let mut executed = Vec::new();
        let mut skipped = 0;
        let mut previous_values = BTreeMap::new();
        // What each sender's updates in this block took so far.
        let mut spent: BTreeMap<[u8; 32], usize> = BTreeMap::new();
        for m in payload {
            let id = m.id();
            let xk = prefixed(b"x/", &id.0);
            if m.validate_with(time_ns, network, verified).is_err()
                || w.current(&self.db, &xk)?.is_some()
            {
                skipped += 1;
                continue;
            }
            let sender = m.ingress.sender.as_bytes();
            let size = m.size();
            let so_far = spent.get(sender).copied().unwrap_or(0);
            if so_far + size > self.quotas.block_bytes_per_sender {
                skipped += 1;
                continue;
            }
            let record_replay = |w: &mut Writes| {
                let expiry = m.ingress.expiry_ns.to_be_bytes().to_vec();
                w.write(xk, Some(expiry.clone()));
                w.write(
                    [b"e/".as_slice(), &expiry, &id.0].concat(),
                    Some(Vec::new()),
                );
            };
            let Some(user_key) = m.ingress.operation.key() else {
                // A governance call: run after the block's updates, in order (it reads
                // and writes only the registry, so the order among updates is moot).
                if !keeps_registry {
                    skipped += 1;
                    continue;
                }
                spent.insert(*sender, so_far + size);
                record_replay(&mut w);
                calls.push((id, &m.ingress.operation));
                executed.push(id);
                continue;
            };
            let k = user_entry_key(user_key);
            let old = w.current(&self.db, &k)?;
            let new = match &m.ingress.operation {
                Operation::Put { value, .. } => Some(to_stored(self.schema, value)),
                Operation::Delete { .. } => None,
                #[cfg(feature = "next-release")]
                Operation::Append { value, .. } => {
                    let mut v = match &old {
                        Some(s) => from_stored(self.schema, s)?.0,
                        None => Vec::new(),
                    };
                    v.extend_from_slice(value);
                    if v.len() > crate::ingress::MAX_VALUE_BYTES {
                        // Too long a result: refused like a too-large put.
                        skipped += 1;
                        continue;
                    }
                    Some(to_stored(self.schema, &v))
                }
                // Not a method of this release (`validate` refuses it too).
                #[cfg(not(feature = "next-release"))]
                Operation::Append { .. } => {
                    skipped += 1;
                    continue;
                }
                // Governance calls have no user key: handled above.
                Operation::Propose { .. } | Operation::Vote { .. } => {
                    skipped += 1;
                    continue;
                }
            };
            let sized = |stored: &Option<Vec<u8>>| -> Result<Option<u64>, StateError> {
                stored
                    .as_ref()
                    .map(|s| Ok((user_key.len() + from_stored(self.schema, s)?.0.len()) as u64))
                    .transpose()
            };
            let change = quota::Change {
                sender,
                user_key,
                before: sized(&old)?,
                after: sized(&new)?,
            };
            if !self.quotas.book(&mut w, &self.db, &change)? {
                skipped += 1;
                continue;
            }
            spent.insert(*sender, so_far + size);
            record_replay(&mut w);
            previous_values.entry(user_key.to_string()).or_insert(old);
            w.write(k, new);
            executed.push(id);
        }
        let mut warm = None;
        if keeps_registry {
            let at = self.height;
            let before = self.registry_warm.take().filter(|(h, _)| *h == at);
            warm = Some(nns::execute_calls(
                &self.db,
                &mut w,
                time_ns,
                network,
                &calls,
                before.map(|(_, w)| w),
            )?);
        }
        let entries = std::mem::take(&mut w.previous);
        let tree = self.commit_block(height, w)?;
        self.registry_warm = warm.map(|w| (height, w));
        Ok(Executed {
            state_hash: self.state_hash(),
            executed,
            skipped,
            undo: BlockUndo {
                values: previous_values,
                entries,
                tree,
            },
        })
    }

    /// The writes of the block at `height`, which must be the next one.
    fn begin_block(&self, height: Height) -> Result<Writes, StateError> {
        if height != self.height.increment() {
            return Err(StateError::OutOfOrder {
                at: self.height,
                got: height,
            });
        }
        Ok(Writes::new())
    }

    /// Writes a block's entries, the tree's changes and the new height in one batch, and
    /// moves to `height`. On an error nothing changed.
    fn commit_block(&mut self, height: Height, w: Writes) -> Result<TreeUndo, StateError> {
        let (mut batch, tree) = w.into_batch(self.schema);
        let tree = tree.apply(&self.db, &mut self.top, &mut batch)?;
        batch.put(HEIGHT, height.get().to_be_bytes());
        if let Err(e) = self.db.write(batch) {
            index::revert(&mut self.top, &tree);
            return Err(e.into());
        }
        self.height = height;
        Ok(tree)
    }

    /// The state hash computed from scratch over every entry, ignoring the tree's index
    /// (for checks, not the hot path).
    pub fn recompute_hash(&self) -> Result<CryptoHash, StateError> {
        Ok(tree::state_hash(
            self.height,
            &index::recompute_root(&self.db, self.schema)?,
        ))
    }
}

/// The block's overlay of written entries (`None`: deleted).
type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A block's writes so far, which later messages read through. Only each entry's last
/// write goes to the database and the tree: a block rewrites the total's account at
/// every update and a sender's at each of its updates.
struct Writes {
    overlay: Overlay,
    /// The values before the block of the registry entries it wrote ([`Writes::remember`]).
    previous: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Writes {
    fn new() -> Self {
        Self {
            overlay: Overlay::new(),
            previous: BTreeMap::new(),
        }
    }

    /// Keeps `k`'s value before the block, the first time the block writes it.
    fn remember(&mut self, db: &DB, k: &[u8]) -> Result<(), rocksdb::Error> {
        if !self.previous.contains_key(k) {
            self.previous.insert(k.to_vec(), db.get(k)?);
        }
        Ok(())
    }

    /// An entry's value with this block's writes so far.
    fn current(&self, db: &DB, k: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        match self.overlay.get(k) {
            Some(v) => Ok(v.clone()),
            None => Ok(db.get(k)?),
        }
    }

    fn write(&mut self, key: Vec<u8>, new: Option<Vec<u8>>) {
        self.overlay.insert(key, new);
    }

    /// The block's writes as one batch (in key order), with the tree's changes.
    fn into_batch(self, schema: u32) -> (WriteBatch, index::TreeChanges) {
        let mut batch = WriteBatch::default();
        let mut changes = index::TreeChanges::default();
        for (key, new) in self.overlay {
            match new {
                Some(v) => {
                    changes.record(&key, Some(tree::value_hash(schema, &v)));
                    batch.put(&key, &v);
                }
                None => {
                    changes.record(&key, None);
                    batch.delete(&key);
                }
            }
        }
        (batch, changes)
    }
}

fn read_meta(db: &DB) -> Result<(Height, CryptoHash), StateError> {
    let height = db
        .get(HEIGHT)?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(|b| Height::new(u64::from_be_bytes(b)))
        .ok_or_else(|| StateError::Corrupt("height".into()))?;
    Ok((height, index::read_root(db)?))
}

#[cfg(test)]
mod tests;

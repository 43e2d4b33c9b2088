//! The replicated state on RocksDB: the key/value application, replay protection, and an
//! incremental state hash.
//!
//! Layout: `v/<key>` user values; `x/<message id>` executed messages (their expiry), kept
//! until they expire so a replay executes once; `e/<expiry><id>` the same ids by expiry,
//! to purge them in order; `m/*` metadata (schema, height, hash accumulator), not hashed.
//!
//! State hash: every hashed entry `(k, v)` has a leaf `H(STATE_HASH, (k, v))`; the
//! accumulator is the sum of the leaves modulo 2^256 (an additive multiset hash), updated
//! by subtracting the old leaf and adding the new one on every write, so a block costs what
//! it writes, not what the state holds. The state hash at a height is
//! `H(STATE_HASH, (height, accumulator))`. (An additive hash is collision-resistant only
//! against honest divergence; a lattice hash would harden it against chosen inputs.)
//!
//! Schema: `m/schema` names the layout. Schema 1 stores each user value as written;
//! schema 2 (the next release) stores it followed by an 8-byte checksum. A release refuses,
//! without writing anything, to open a newer schema than it knows, and migrates an older
//! one with [`ReplicatedState::migrate`] once the state is verified against its CUP (a
//! migration changes the state hash, so it must come after that check).

use crate::ingress::{Operation, SignedIngress};
use rocksdb::{DB, Options, WriteBatch};
use std::{collections::BTreeMap, path::Path};
use types::{CryptoHash, Height, NetworkId, codec, domain};

/// The state layout this release writes (and the newest it reads).
#[cfg(not(feature = "next-release"))]
pub const SCHEMA_VERSION: u32 = 1;
/// The state layout this release writes (and the newest it reads): values carry checksums.
#[cfg(feature = "next-release")]
pub const SCHEMA_VERSION: u32 = 2;

/// The bytes of the checksum schema 2 stores after each user value.
pub const CHECKSUM_BYTES: usize = 8;

/// A user value with the checksum stored beside it, if the schema stores one.
pub type StoredValue = (Vec<u8>, Option<[u8; CHECKSUM_BYTES]>);

/// The checksum schema 2 stores after `value`: the first bytes of its domain-separated hash.
pub fn value_checksum(value: &[u8]) -> [u8; CHECKSUM_BYTES] {
    let h = CryptoHash::of(domain::STATE_VALUE_CHECKSUM, value);
    let mut out = [0u8; CHECKSUM_BYTES];
    out.copy_from_slice(&h.0[..CHECKSUM_BYTES]);
    out
}

/// A user value in the form `schema` stores it.
fn to_stored(schema: u32, value: &[u8]) -> Vec<u8> {
    #[cfg(feature = "next-release")]
    if schema >= 2 {
        return [value, &value_checksum(value)].concat();
    }
    let _ = schema;
    value.to_vec()
}

/// A stored value as the user wrote it, with the checksum stored beside it if the schema
/// has one (checked: a mismatch is corruption).
pub fn from_stored(schema: u32, stored: &[u8]) -> Result<StoredValue, StateError> {
    #[cfg(feature = "next-release")]
    if schema >= 2 {
        let split = stored
            .len()
            .checked_sub(CHECKSUM_BYTES)
            .ok_or_else(|| StateError::Corrupt("a value shorter than its checksum".into()))?;
        let (value, sum) = stored.split_at(split);
        if sum != value_checksum(value) {
            return Err(StateError::Corrupt(format!(
                "a value's checksum {} does not match its bytes",
                hex::encode(sum)
            )));
        }
        let mut c = [0u8; CHECKSUM_BYTES];
        c.copy_from_slice(sum);
        return Ok((value.to_vec(), Some(c)));
    }
    let _ = schema;
    Ok((stored.to_vec(), None))
}

const SCHEMA: &[u8] = b"m/schema";
const HEIGHT: &[u8] = b"m/height";
const ACC: &[u8] = b"m/acc";

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
}

/// What executing a block did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    pub state_hash: CryptoHash,
    /// Ids of the messages that executed (not the skipped duplicates or invalid ones).
    pub executed: Vec<CryptoHash>,
    pub skipped: usize,
    /// Each user key this block wrote, with its stored value before the block (`None`:
    /// absent; [`from_stored`] reads it).
    /// The driver keeps these for uncertified heights, to answer queries as of the
    /// certified height.
    pub previous_values: BTreeMap<String, Option<Vec<u8>>>,
}

/// A 256-bit accumulator, little-endian limbs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Acc([u64; 4]);

impl Acc {
    fn leaf(key: &[u8], value: &[u8]) -> Self {
        let h = CryptoHash::of(domain::STATE_HASH, &codec::encode(&(key, value)));
        let mut limbs = [0u64; 4];
        for (i, l) in limbs.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h.0[i * 8..i * 8 + 8]);
            *l = u64::from_le_bytes(b);
        }
        Self(limbs)
    }

    fn add(&mut self, o: &Self) {
        let mut carry = false;
        for i in 0..4 {
            let (s1, c1) = self.0[i].overflowing_add(o.0[i]);
            let (s2, c2) = s1.overflowing_add(u64::from(carry));
            self.0[i] = s2;
            carry = c1 || c2;
        }
    }

    fn sub(&mut self, o: &Self) {
        let mut borrow = false;
        for i in 0..4 {
            let (d1, b1) = self.0[i].overflowing_sub(o.0[i]);
            let (d2, b2) = d1.overflowing_sub(u64::from(borrow));
            self.0[i] = d2;
            borrow = b1 || b2;
        }
    }

    fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, l) in self.0.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&l.to_le_bytes());
        }
        out
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: [u8; 32] = b.try_into().ok()?;
        let mut limbs = [0u64; 4];
        for (i, l) in limbs.iter_mut().enumerate() {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i * 8..i * 8 + 8]);
            *l = u64::from_le_bytes(x);
        }
        Some(Self(limbs))
    }
}

pub struct ReplicatedState {
    db: DB,
    height: Height,
    acc: Acc,
    /// The layout the stored entries are in (older than [`SCHEMA_VERSION`] until migrated).
    schema: u32,
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

fn prefixed(p: &[u8], k: &[u8]) -> Vec<u8> {
    [p, k].concat()
}

impl ReplicatedState {
    /// Opens (or creates) the state in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        // Look at the schema without opening for writing.
        if dir.join("CURRENT").exists() {
            let ro = DB::open_for_read_only(&Options::default(), dir, false)?;
            let found = read_schema(&ro)?;
            drop(ro);
            if found > SCHEMA_VERSION {
                return Err(StateError::NewerSchema {
                    dir: dir.display().to_string(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
        }
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir)?;
        if db.get(SCHEMA)?.is_none() {
            let mut b = WriteBatch::default();
            b.put(SCHEMA, SCHEMA_VERSION.to_be_bytes());
            b.put(HEIGHT, 0u64.to_be_bytes());
            b.put(ACC, Acc::default().to_bytes());
            db.write(b)?;
        }
        let schema = read_schema(&db)?;
        if schema == 0 {
            return Err(StateError::Corrupt("no schema marker".into()));
        }
        let (height, acc) = read_meta(&db)?;
        Ok(Self {
            db,
            height,
            acc,
            schema,
        })
    }

    /// The layout the stored entries are in.
    pub fn schema(&self) -> u32 {
        self.schema
    }

    /// Brings an older schema to this release's, in one synced write (a crash leaves the
    /// old schema or the new one, never a mix). Returns how many values were rewritten.
    /// The height stays; the state hash changes with the values.
    #[cfg(feature = "next-release")]
    pub fn migrate(&mut self) -> Result<u64, StateError> {
        if self.schema >= SCHEMA_VERSION {
            return Ok(0);
        }
        // Schema 1 to 2: every user value gets its checksum.
        let mut batch = WriteBatch::default();
        let mut acc = self.acc;
        let mut rewritten = 0;
        let mut it = self.db.raw_iterator();
        it.seek(b"v/");
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !k.starts_with(b"v/") {
                break;
            }
            let new = to_stored(SCHEMA_VERSION, v);
            acc.sub(&Acc::leaf(k, v));
            acc.add(&Acc::leaf(k, &new));
            batch.put(k, new);
            rewritten += 1;
            it.next();
        }
        it.status()?;
        drop(it);
        batch.put(SCHEMA, SCHEMA_VERSION.to_be_bytes());
        batch.put(ACC, acc.to_bytes());
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        self.acc = acc;
        self.schema = SCHEMA_VERSION;
        Ok(rewritten)
    }

    /// Brings an older schema to this release's. Schema 1 is this release's and the first:
    /// there is nothing older to migrate.
    #[cfg(not(feature = "next-release"))]
    pub fn migrate(&mut self) -> Result<u64, StateError> {
        Ok(0)
    }

    pub fn height(&self) -> Height {
        self.height
    }

    pub fn state_hash(&self) -> CryptoHash {
        state_hash_of(self.height, self.acc)
    }

    /// The value of `key` as the user wrote it.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.get_stored(key)?.map(|(v, _)| v))
    }

    /// The value of `key` as the user wrote it, with the checksum stored beside it.
    pub fn get_stored(&self, key: &str) -> Result<Option<StoredValue>, StateError> {
        self.db
            .get(prefixed(b"v/", key.as_bytes()))?
            .map(|s| from_stored(self.schema, &s))
            .transpose()
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
        if height != self.height.increment() {
            return Err(StateError::OutOfOrder {
                at: self.height,
                got: height,
            });
        }
        let mut batch = WriteBatch::default();
        let mut acc = self.acc;
        // This block's writes, so later messages see earlier ones.
        let mut overlay = Overlay::new();
        let current = |db: &DB, o: &Overlay, k: &[u8]| -> Result<Option<Vec<u8>>, StateError> {
            match o.get(k) {
                Some(v) => Ok(v.clone()),
                None => Ok(db.get(k)?),
            }
        };
        // Expired replay records go first: their messages can no longer be valid.
        let mut it = self.db.raw_iterator();
        it.seek(b"e/");
        let mut expired = Vec::new();
        while it.valid() && expired.len() < 10_000 {
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
        drop(it);
        for ek in expired {
            let id = ek[10..].to_vec();
            let xk = prefixed(b"x/", &id);
            let old_x = current(&self.db, &overlay, &xk)?;
            let old_e = current(&self.db, &overlay, &ek)?;
            write_entry(&mut acc, &mut overlay, &mut batch, xk, old_x, None);
            write_entry(&mut acc, &mut overlay, &mut batch, ek, old_e, None);
        }
        let mut executed = Vec::new();
        let mut skipped = 0;
        let mut previous_values = BTreeMap::new();
        for m in payload {
            let id = m.id();
            let xk = prefixed(b"x/", &id.0);
            if m.validate(time_ns, network).is_err() || current(&self.db, &overlay, &xk)?.is_some()
            {
                skipped += 1;
                continue;
            }
            let k = prefixed(b"v/", m.ingress.operation.key().as_bytes());
            let old = current(&self.db, &overlay, &k)?;
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
            };
            let expiry = m.ingress.expiry_ns.to_be_bytes().to_vec();
            write_entry(
                &mut acc,
                &mut overlay,
                &mut batch,
                xk,
                None,
                Some(expiry.clone()),
            );
            let ek = [b"e/".as_slice(), &expiry, &id.0].concat();
            write_entry(
                &mut acc,
                &mut overlay,
                &mut batch,
                ek,
                None,
                Some(Vec::new()),
            );
            previous_values
                .entry(m.ingress.operation.key().to_string())
                .or_insert_with(|| old.clone());
            write_entry(&mut acc, &mut overlay, &mut batch, k, old, new);
            executed.push(id);
        }
        batch.put(HEIGHT, height.get().to_be_bytes());
        batch.put(ACC, acc.to_bytes());
        self.db.write(batch)?;
        self.height = height;
        self.acc = acc;
        Ok(Executed {
            state_hash: self.state_hash(),
            executed,
            skipped,
            previous_values,
        })
    }

    /// The state hash computed from scratch over every entry (for checks, not the hot path).
    pub fn recompute_hash(&self) -> Result<CryptoHash, StateError> {
        let mut acc = Acc::default();
        let mut it = self.db.raw_iterator();
        it.seek_to_first();
        while it.valid() {
            if let (Some(k), Some(v)) = (it.key(), it.value())
                && !k.starts_with(b"m/")
            {
                acc.add(&Acc::leaf(k, v));
            }
            it.next();
        }
        it.status()?;
        Ok(CryptoHash::of(
            domain::STATE_HASH,
            &codec::encode(&(self.height, acc.to_bytes())),
        ))
    }

    /// A RocksDB checkpoint of the state (hard links: its cost does not grow with the state).
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StateError> {
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
        let db = DB::open_for_read_only(&Options::default(), dir, false)?;
        let found = read_schema(&db)?;
        let (height, acc) = read_meta(&db)?;
        Ok((height, state_hash_of(height, acc), found))
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
        {
            let src = DB::open_for_read_only(&Options::default(), checkpoint_dir, false)?;
            rocksdb::checkpoint::Checkpoint::new(&src)?.create_checkpoint(&tmp)?;
        }
        if state_dir.exists() {
            std::fs::remove_dir_all(state_dir).map_err(io)?;
        }
        std::fs::rename(&tmp, state_dir).map_err(io)?;
        Self::open(state_dir)
    }
}

/// The most bytes of entries in one state-sync chunk.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// A piece of a checkpoint for state sync: hashed entries in key order after a cursor.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateChunk {
    pub height: Height,
    /// The layout the entries are in.
    pub schema: u32,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// No entries after these.
    pub done: bool,
}

/// The hashed entries of the checkpoint in `dir` after key `after`, up to
/// [`MAX_CHUNK_BYTES`]. Read-only.
pub fn export_chunk(dir: &Path, after: Option<&[u8]>) -> Result<StateChunk, StateError> {
    let db = DB::open_for_read_only(&Options::default(), dir, false)?;
    let (height, _) = read_meta(&db)?;
    let schema = read_schema(&db)?;
    let mut it = db.raw_iterator();
    match after {
        Some(k) => {
            it.seek(k);
            if it.key() == Some(k) {
                it.next();
            }
        }
        None => it.seek_to_first(),
    }
    let mut entries = Vec::new();
    let mut bytes = 0;
    let mut done = true;
    while it.valid() {
        let (Some(k), Some(v)) = (it.key(), it.value()) else {
            break;
        };
        if !k.starts_with(b"m/") {
            if bytes + k.len() + v.len() > MAX_CHUNK_BYTES && !entries.is_empty() {
                done = false;
                break;
            }
            bytes += k.len() + v.len();
            entries.push((k.to_vec(), v.to_vec()));
        }
        it.next();
    }
    it.status()?;
    Ok(StateChunk {
        height,
        schema,
        entries,
        done,
    })
}

/// A state being rebuilt from chunks; its hash is known only at the end, and
/// [`StateImport::finish`] refuses it unless that hash is the expected one.
pub struct StateImport {
    db: DB,
    acc: Acc,
    last_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for StateImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StateImport(last {:?})",
            self.last_key.as_ref().map(hex::encode)
        )
    }
}

impl StateImport {
    /// Starts a fresh state in `dir` (anything there is removed).
    pub fn create(dir: &Path) -> Result<Self, StateError> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| StateError::Corrupt(format!("{}: {e}", dir.display())))?;
        }
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir)?;
        Ok(Self {
            db,
            acc: Acc::default(),
            last_key: None,
        })
    }

    /// Adds entries, which must come in strictly increasing key order and not be metadata.
    pub fn add(&mut self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        for (k, v) in entries {
            if k.starts_with(b"m/") || self.last_key.as_ref().is_some_and(|l| k <= l) {
                return Err(StateError::Corrupt(
                    "state sync entries out of order or metadata".into(),
                ));
            }
            self.acc.add(&Acc::leaf(k, v));
            batch.put(k, v);
            self.last_key = Some(k.clone());
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// The key to continue after.
    pub fn cursor(&self) -> Option<&[u8]> {
        self.last_key.as_deref()
    }

    /// Seals the state at `height`, its entries in layout `schema`, if its hash is
    /// `expected`; otherwise nothing usable is left behind (the caller removes the
    /// directory).
    pub fn finish(
        self,
        height: Height,
        expected: CryptoHash,
        schema: u32,
    ) -> Result<(), StateError> {
        check_readable(schema)?;
        let got = state_hash_of(height, self.acc);
        if got != expected {
            return Err(StateError::Corrupt(format!(
                "state sync produced hash {got} at height {height}, the CUP says {expected}"
            )));
        }
        let mut b = WriteBatch::default();
        b.put(SCHEMA, schema.to_be_bytes());
        b.put(HEIGHT, height.get().to_be_bytes());
        b.put(ACC, self.acc.to_bytes());
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(b, &wo)?;
        // Into SST files: a checkpoint of this directory opened read-only (restore)
        // copies files, not the write-ahead log.
        self.db.flush()?;
        Ok(())
    }
}

/// The block's overlay of written entries (`None`: deleted).
type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Writes one hashed entry: moves its leaf in the accumulator, and records the write in
/// the batch and in the block's overlay.
fn write_entry(
    acc: &mut Acc,
    overlay: &mut Overlay,
    batch: &mut WriteBatch,
    key: Vec<u8>,
    old: Option<Vec<u8>>,
    new: Option<Vec<u8>>,
) {
    if let Some(old) = &old {
        acc.sub(&Acc::leaf(&key, old));
    }
    match &new {
        Some(v) => {
            acc.add(&Acc::leaf(&key, v));
            batch.put(&key, v);
        }
        None => batch.delete(&key),
    }
    overlay.insert(key, new);
}

fn state_hash_of(height: Height, acc: Acc) -> CryptoHash {
    CryptoHash::of(
        domain::STATE_HASH,
        &codec::encode(&(height, acc.to_bytes())),
    )
}

fn read_meta(db: &DB) -> Result<(Height, Acc), StateError> {
    let height = db
        .get(HEIGHT)?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(|b| Height::new(u64::from_be_bytes(b)))
        .ok_or_else(|| StateError::Corrupt("height".into()))?;
    let acc = db
        .get(ACC)?
        .and_then(|b| Acc::from_bytes(&b))
        .ok_or_else(|| StateError::Corrupt("accumulator".into()))?;
    Ok((height, acc))
}

/// Refuses a schema this release cannot read (state sync from a peer on a newer one).
pub fn check_readable(schema: u32) -> Result<(), StateError> {
    if schema == 0 {
        return Err(StateError::Corrupt("state without a schema marker".into()));
    }
    if schema > SCHEMA_VERSION {
        return Err(StateError::NewerSchema {
            dir: "the state offered by peers".into(),
            found: schema,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

fn read_schema(db: &DB) -> Result<u32, StateError> {
    match db.get(SCHEMA)? {
        None => Ok(0),
        Some(b) => <[u8; 4]>::try_from(b.as_slice())
            .map(u32::from_be_bytes)
            .map_err(|_| StateError::Corrupt("schema marker".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::Ingress;
    use crypto::ed25519::Ed25519KeyPair;

    const T: u64 = 1_000_000_000_000;
    const NET: NetworkId = NetworkId([5; 32]);

    fn msg(nonce: u64, expiry_ns: u64, operation: Operation) -> SignedIngress {
        let key = Ed25519KeyPair::from_seed(&[3; 32]);
        SignedIngress::sign(
            Ingress {
                network: NET,
                sender: key.public_key(),
                nonce,
                expiry_ns,
                operation,
            },
            &key,
        )
    }

    fn put(k: &str, v: &str) -> Operation {
        Operation::Put {
            key: k.into(),
            value: v.as_bytes().to_vec(),
        }
    }

    #[test]
    fn executes_puts_and_deletes_and_the_incremental_hash_matches_a_full_recompute() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = ReplicatedState::open(dir.path()).expect("open");
        let blocks = [
            vec![
                msg(1, T + 100, put("a", "1")),
                msg(2, T + 100, put("b", "2")),
            ],
            vec![
                msg(3, T + 100, put("a", "3")),
                msg(4, T + 100, Operation::Delete { key: "b".into() }),
            ],
            vec![],
            vec![msg(5, T + 5, put("c", "4"))],
        ];
        let mut hashes = Vec::new();
        for (i, b) in blocks.iter().enumerate() {
            let r = s
                .execute(Height::new(i as u64 + 1), T + i as u64, &NET, b)
                .expect("execute");
            assert_eq!(
                r.state_hash,
                s.recompute_hash().expect("recompute"),
                "height {}",
                i + 1
            );
            hashes.push(r.state_hash);
        }
        assert_eq!(s.get("a").expect("get"), Some(b"3".to_vec()));
        assert_eq!(s.get("b").expect("get"), None);
        assert_eq!(
            hashes
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            hashes.len()
        );
        // Once message 5 expires its replay record is purged, and the hash still matches.
        let r = s
            .execute(Height::new(5), T + 10, &NET, &[])
            .expect("execute");
        assert_eq!(r.state_hash, s.recompute_hash().expect("recompute"));
        // The same blocks on another node give the same hashes.
        let dir2 = tempfile::tempdir().expect("tempdir");
        let mut s2 = ReplicatedState::open(dir2.path()).expect("open");
        for (i, b) in blocks.iter().enumerate() {
            assert_eq!(
                s2.execute(Height::new(i as u64 + 1), T + i as u64, &NET, b)
                    .expect("e")
                    .state_hash,
                hashes[i]
            );
        }
    }

    #[test]
    fn duplicates_execute_once_and_expired_messages_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = ReplicatedState::open(dir.path()).expect("open");
        let m = msg(1, T + 100, put("k", "v"));
        let r = s
            .execute(Height::new(1), T, &NET, &[m.clone(), m.clone()])
            .expect("execute");
        assert_eq!((r.executed.len(), r.skipped), (1, 1));
        let r = s
            .execute(Height::new(2), T + 1, &NET, std::slice::from_ref(&m))
            .expect("replay");
        assert_eq!((r.executed.len(), r.skipped), (0, 1));
        let late = msg(2, T + 1, put("k", "late"));
        let r = s
            .execute(Height::new(3), T + 2, &NET, &[late])
            .expect("expired");
        assert_eq!((r.executed.len(), r.skipped), (0, 1));
        assert_eq!(s.get("k").expect("get"), Some(b"v".to_vec()));
        assert!(matches!(
            s.execute(Height::new(9), T + 3, &NET, &[]),
            Err(StateError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn reopening_keeps_height_and_hash_and_a_checkpoint_reads_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hash = {
            let mut s = ReplicatedState::open(dir.path()).expect("open");
            s.execute(Height::new(1), T, &NET, &[msg(1, T + 100, put("a", "1"))])
                .expect("execute");
            s.state_hash()
        };
        let s = ReplicatedState::open(dir.path()).expect("reopen");
        assert_eq!((s.height(), s.state_hash()), (Height::new(1), hash));
        let cp_root = tempfile::tempdir().expect("tempdir");
        let cp = cp_root.path().join("cp");
        s.checkpoint(&cp).expect("checkpoint");
        drop(s);
        let c = ReplicatedState::open(&cp).expect("open checkpoint");
        assert_eq!((c.height(), c.state_hash()), (Height::new(1), hash));
        assert_eq!(c.get("a").expect("get"), Some(b"1".to_vec()));
    }

    #[test]
    fn a_newer_schema_is_refused_without_touching_anything() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = DB::open_default(dir.path()).expect("open");
            db.put(SCHEMA, (SCHEMA_VERSION + 1).to_be_bytes())
                .expect("put");
            db.put(b"v/x", b"future").expect("put");
        }
        let err = ReplicatedState::open(dir.path()).expect_err("refused");
        assert!(err.to_string().contains("newer than this release"), "{err}");
        let db = DB::open_default(dir.path()).expect("open");
        assert_eq!(read_schema(&db).expect("schema"), SCHEMA_VERSION + 1);
        assert_eq!(db.get(b"v/x").expect("get"), Some(b"future".to_vec()));
    }

    #[test]
    fn a_fresh_state_hashes_to_the_genesis_constant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = ReplicatedState::open(dir.path()).expect("open");
        assert_eq!(s.state_hash(), types::empty_state_hash());
        assert_eq!(
            s.recompute_hash().expect("recompute"),
            types::empty_state_hash()
        );
    }

    #[test]
    fn execute_reports_each_written_keys_previous_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = ReplicatedState::open(dir.path()).expect("open");
        s.execute(Height::new(1), T, &NET, &[msg(1, T + 100, put("a", "1"))])
            .expect("execute");
        let r = s
            .execute(
                Height::new(2),
                T,
                &NET,
                &[
                    msg(2, T + 100, put("a", "2")),
                    msg(3, T + 100, put("a", "3")),
                    msg(4, T + 100, put("b", "1")),
                ],
            )
            .expect("execute");
        // The value before the block, not before the last write in it (as stored).
        let a = r.previous_values.get("a").cloned().flatten().expect("a");
        assert_eq!(
            from_stored(s.schema(), &a).expect("stored").0,
            b"1".to_vec()
        );
        assert_eq!(r.previous_values.get("b"), Some(&None));
        assert_eq!(r.previous_values.len(), 2);
    }

    #[test]
    fn restore_replaces_the_state_with_a_checkpoint_and_leaves_the_checkpoint_alone() {
        let root = tempfile::tempdir().expect("tempdir");
        let (state_dir, cp) = (root.path().join("state"), root.path().join("cp"));
        let mut s = ReplicatedState::open(&state_dir).expect("open");
        s.execute(Height::new(1), T, &NET, &[msg(1, T + 100, put("a", "1"))])
            .expect("execute");
        s.checkpoint(&cp).expect("checkpoint");
        let at_cp = s.state_hash();
        s.execute(Height::new(2), T, &NET, &[msg(2, T + 100, put("a", "2"))])
            .expect("execute");
        drop(s);
        assert_eq!(
            ReplicatedState::peek(&cp).expect("peek"),
            (Height::new(1), at_cp)
        );
        let mut r = ReplicatedState::restore(&cp, &state_dir).expect("restore");
        assert_eq!((r.height(), r.state_hash()), (Height::new(1), at_cp));
        assert_eq!(r.get("a").expect("get"), Some(b"1".to_vec()));
        // Writing the restored state does not change the checkpoint.
        r.execute(Height::new(2), T, &NET, &[msg(3, T + 100, put("a", "3"))])
            .expect("execute");
        drop(r);
        assert_eq!(
            ReplicatedState::peek(&cp).expect("peek"),
            (Height::new(1), at_cp)
        );
    }

    #[test]
    fn state_sync_rebuilds_a_checkpoint_chunk_by_chunk_and_refuses_a_wrong_hash() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = ReplicatedState::open(&root.path().join("state")).expect("open");
        // Enough data for several chunks.
        let big = "x".repeat(60_000);
        let block: Vec<SignedIngress> = (0..60)
            .map(|i| msg(i, T + 100, put(&format!("k{i:03}"), &big)))
            .collect();
        s.execute(Height::new(1), T, &NET, &block).expect("execute");
        let cp = root.path().join("cp");
        s.checkpoint(&cp).expect("checkpoint");
        let expected = s.state_hash();
        let copy = |target: &Path, expected: CryptoHash| -> Result<usize, StateError> {
            let mut import = StateImport::create(target)?;
            let mut chunks = 0;
            loop {
                let after = import.cursor().map(|c| c.to_vec());
                let chunk = export_chunk(&cp, after.as_deref())?;
                assert_eq!(chunk.height, Height::new(1));
                import.add(&chunk.entries)?;
                chunks += 1;
                if chunk.done {
                    import.finish(Height::new(1), expected, chunk.schema)?;
                    return Ok(chunks);
                }
            }
        };
        let target = root.path().join("synced");
        let chunks = copy(&target, expected).expect("sync");
        assert!(chunks > 1, "{chunks} chunk(s)");
        // As the driver does: the synced directory becomes a checkpoint, restored into place.
        let synced = ReplicatedState::restore(&target, &root.path().join("restored"))
            .expect("restore synced");
        assert_eq!(synced.height(), Height::new(1));
        assert_eq!(synced.state_hash(), expected);
        assert_eq!(
            synced.get("k007").expect("get"),
            Some(big.as_bytes().to_vec())
        );
        drop(synced);
        let wrong = copy(&root.path().join("wrong"), CryptoHash([7; 32]));
        assert!(matches!(wrong, Err(StateError::Corrupt(_))), "{wrong:?}");
        // Entries out of order are refused.
        let mut import = StateImport::create(&root.path().join("disorder")).expect("create");
        let e = vec![(b"v/b".to_vec(), vec![]), (b"v/a".to_vec(), vec![])];
        assert!(import.add(&e).is_err());
    }
    #[test]
    fn state_sync_refuses_a_schema_this_release_cannot_read() {
        let root = tempfile::tempdir().expect("tempdir");
        let import = StateImport::create(&root.path().join("s")).expect("create");
        let err = import
            .finish(Height::ZERO, types::empty_state_hash(), SCHEMA_VERSION + 1)
            .expect_err("refused");
        assert!(matches!(err, StateError::NewerSchema { .. }), "{err}");
    }

    #[test]
    fn a_block_update_signed_for_another_network_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = ReplicatedState::open(dir.path()).expect("open");
        let key = Ed25519KeyPair::from_seed(&[3; 32]);
        let foreign = SignedIngress::sign(
            Ingress {
                network: NetworkId([6; 32]),
                sender: key.public_key(),
                nonce: 1,
                expiry_ns: T + 100,
                operation: put("a", "1"),
            },
            &key,
        );
        let r = s
            .execute(Height::new(1), T, &NET, &[foreign])
            .expect("execute");
        assert_eq!((r.executed.len(), r.skipped), (0, 1));
        assert_eq!(s.get("a").expect("get"), None);
    }

    #[cfg(not(feature = "next-release"))]
    #[test]
    fn the_first_release_refuses_the_append_method() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = ReplicatedState::open(dir.path()).expect("open");
        let m = msg(
            1,
            T + 100,
            Operation::Append {
                key: "a".into(),
                value: b"x".to_vec(),
            },
        );
        assert_eq!(
            m.validate(T, &NET),
            Err(crate::ingress::IngressError::UnsupportedMethod("append"))
        );
        let r = s.execute(Height::new(1), T, &NET, &[m]).expect("execute");
        assert_eq!((r.executed.len(), r.skipped), (0, 1));
        assert_eq!(s.get("a").expect("get"), None);
    }

    /// A schema-1 state as the first release leaves it, written directly.
    #[cfg(feature = "next-release")]
    fn schema_1_state(dir: &Path, height: u64, values: &[(&str, &str)]) -> CryptoHash {
        let db = DB::open_default(dir).expect("open");
        let mut acc = Acc::default();
        for (k, v) in values {
            let k = prefixed(b"v/", k.as_bytes());
            acc.add(&Acc::leaf(&k, v.as_bytes()));
            db.put(&k, v.as_bytes()).expect("put");
        }
        // A replay record too: the migration leaves everything but values alone.
        acc.add(&Acc::leaf(b"x/id", b"expiry"));
        db.put(b"x/id", b"expiry").expect("put");
        db.put(SCHEMA, 1u32.to_be_bytes()).expect("put");
        db.put(HEIGHT, height.to_be_bytes()).expect("put");
        db.put(ACC, acc.to_bytes()).expect("put");
        state_hash_of(Height::new(height), acc)
    }

    #[cfg(feature = "next-release")]
    #[test]
    fn the_migration_gives_every_value_its_checksum_once_and_keeps_the_height() {
        let dir = tempfile::tempdir().expect("tempdir");
        let values = [("a", "1"), ("b", "two"), ("c", "")];
        let before = schema_1_state(dir.path(), 5, &values);
        let mut s = ReplicatedState::open(dir.path()).expect("open");
        assert_eq!((s.schema(), s.state_hash()), (1, before));
        assert_eq!(
            s.get_stored("b").expect("get"),
            Some((b"two".to_vec(), None))
        );
        assert_eq!(s.migrate().expect("migrate"), 3);
        assert_eq!((s.schema(), s.height()), (2, Height::new(5)));
        assert_ne!(s.state_hash(), before);
        assert_eq!(s.state_hash(), s.recompute_hash().expect("recompute"));
        for (k, v) in values {
            assert_eq!(
                s.get_stored(k).expect("get"),
                Some((v.as_bytes().to_vec(), Some(value_checksum(v.as_bytes())))),
                "{k}"
            );
        }
        let after = s.state_hash();
        drop(s);
        let mut s = ReplicatedState::open(dir.path()).expect("reopen");
        assert_eq!((s.schema(), s.state_hash()), (2, after));
        assert_eq!(s.migrate().expect("again"), 0);
        assert_eq!(s.state_hash(), after);
        // New writes carry the new form, and a damaged checksum is caught.
        s.execute(Height::new(6), T, &NET, &[msg(1, T + 100, put("d", "4"))])
            .expect("execute");
        assert_eq!(
            s.get_stored("d").expect("get"),
            Some((b"4".to_vec(), Some(value_checksum(b"4"))))
        );
        drop(s);
        {
            let db = DB::open_default(dir.path()).expect("open");
            db.put(b"v/d", b"5\0\0\0\0\0\0\0\0").expect("put");
        }
        let s = ReplicatedState::open(dir.path()).expect("reopen");
        assert!(matches!(s.get("d"), Err(StateError::Corrupt(_))));
    }

    #[cfg(feature = "next-release")]
    #[test]
    fn append_extends_a_value_and_creates_a_missing_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = ReplicatedState::open(dir.path()).expect("open");
        let append = |k: &str, v: &str| Operation::Append {
            key: k.into(),
            value: v.as_bytes().to_vec(),
        };
        let r = s
            .execute(
                Height::new(1),
                T,
                &NET,
                &[
                    msg(1, T + 100, put("a", "x")),
                    msg(2, T + 100, append("a", "y")),
                    msg(3, T + 100, append("b", "z")),
                ],
            )
            .expect("execute");
        assert_eq!(r.executed.len(), 3);
        assert_eq!(s.get("a").expect("get"), Some(b"xy".to_vec()));
        assert_eq!(s.get("b").expect("get"), Some(b"z".to_vec()));
        assert_eq!(s.state_hash(), s.recompute_hash().expect("recompute"));
    }
}

//! Reading a fixture set with this release's code: each file through the function this
//! release reads that format with in production, within the limit it reads it with.

use super::{CheckpointSummary, CompatError, file_err, files};
use crate::{
    ingress::{SignedIngress, read_carryover},
    node_dir::{NodeDir, read_cup},
    state::ReplicatedState,
};
use consensus::artifact::{Envelope, MAX_ENVELOPE_BYTES};
use crypto::bls::BlsPublicKey;
use cup::{Cup, RegistryCup, SignedCup};
use registry::{
    api::ChangesPage,
    invariants::Snapshot,
    store::{MemoryStore, RegistryStore},
};
use std::{collections::BTreeMap, path::Path};
use types::{NetworkId, codec};

/// A fixture set as this release reads it. Envelopes in the wire encoding are kept with
/// their result: a release reads its own protocol's and refuses the other's.
#[derive(Debug)]
pub struct Fixtures {
    pub subnet_key: BlsPublicKey,
    /// Verified with `subnet_key`.
    pub signed_cup: SignedCup,
    pub genesis_cup: RegistryCup,
    pub changes: ChangesPage,
    /// The page's deltas appended to an empty store, as the replicator does.
    pub registry: MemoryStore,
    /// Every record of the registry's latest version, decoded and checked.
    pub snapshot: Snapshot,
    pub update: SignedIngress,
    pub carried: Vec<SignedIngress>,
    /// By artifact kind.
    pub wire: BTreeMap<String, Result<Envelope, codec::CodecError>>,
    pub pool: BTreeMap<String, Envelope>,
    pub checkpoint: CheckpointSummary,
    /// `node.toml`'s network, as the replica reads it.
    pub network: NetworkId,
    /// `node.toml`'s text, for the orchestrator's parser.
    pub node_toml: String,
}

/// Reads at most `limit` bytes of `path`; a longer file is refused before it is held.
pub fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, CompatError> {
    durable::read_bounded(path, limit as u64).map_err(|e| file_err(path, e.source))
}

/// A CUP file as the replica reads one ([`read_cup`]: bounded, decoded, not verified).
fn cup_file(path: &Path) -> Result<Cup, CompatError> {
    read_cup(path).map_err(|e| match e {
        crate::ReplicaError::Cup { reason, .. } => decode_err(path, reason),
        other => decode_err(path, other),
    })
}

fn decode_err(what: &Path, e: impl std::fmt::Display) -> CompatError {
    CompatError::Decode {
        what: what.display().to_string(),
        reason: e.to_string(),
    }
}

/// Reads every file of the set in `dir` but the checkpoint's RocksDB files (see
/// [`open_checkpoint`]).
pub fn read(dir: &Path) -> Result<Fixtures, CompatError> {
    let path = |name: &str| dir.join(name);

    let key_path = path(files::SUBNET_KEY);
    let key_text = read_bounded(&key_path, 1024)?;
    let subnet_key: BlsPublicKey = String::from_utf8_lossy(&key_text)
        .trim()
        .parse()
        .map_err(|e| decode_err(&key_path, e))?;

    let signed_path = path(files::SIGNED_CUP);
    let signed_cup = match cup_file(&signed_path)? {
        Cup::Signed(s) => s,
        Cup::Registry(_) => return Err(decode_err(&signed_path, "not a signed CUP")),
    };
    signed_cup
        .verify(&subnet_key)
        .map_err(|e| decode_err(&signed_path, e))?;
    let genesis_path = path(files::GENESIS_CUP);
    let genesis_cup = match cup_file(&genesis_path)? {
        Cup::Registry(r) => r,
        Cup::Signed(_) => return Err(decode_err(&genesis_path, "not a registry CUP")),
    };

    // As `registry::client::changes` reads a page, and the replicator appends it.
    let changes_path = path(files::REGISTRY_CHANGES);
    let limit = registry::client::MAX_PAGE_ANSWER_BYTES;
    let changes: ChangesPage = codec::decode(&read_bounded(&changes_path, limit)?, limit)
        .map_err(|e| decode_err(&changes_path, e))?;
    let mut registry = MemoryStore::new();
    registry
        .append_all(&changes.deltas)
        .map_err(|e| decode_err(&changes_path, e))?;
    let latest = registry
        .latest_snapshot()
        .map_err(|e| decode_err(&changes_path, e))?;
    let snapshot = Snapshot::decode(&latest).map_err(|e| decode_err(&changes_path, e))?;
    snapshot.check().map_err(|e| decode_err(&changes_path, e))?;

    // As the HTTP API reads an update's body.
    let update_path = path(files::INGRESS);
    let limit = crate::http::MAX_UPDATE_BYTES;
    let update: SignedIngress = codec::decode(&read_bounded(&update_path, limit)?, limit)
        .map_err(|e| decode_err(&update_path, e))?;
    let carry_path = path(files::CARRYOVER);
    let carried = read_carryover(&carry_path, crate::driver::MAX_INGRESS_BYTES)
        .map_err(|e| decode_err(&carry_path, e))?
        .ok_or_else(|| file_err(&carry_path, "missing"))?;

    let mut wire = BTreeMap::new();
    let mut pool = BTreeMap::new();
    for sub in [files::WIRE_DIR, files::POOL_DIR] {
        let d = path(sub);
        let mut names: Vec<String> = std::fs::read_dir(&d)
            .map_err(|e| file_err(&d, e))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let p = d.join(&name);
            let kind = name.trim_end_matches(".bin").to_string();
            let bytes = read_bounded(&p, MAX_ENVELOPE_BYTES)?;
            if sub == files::WIRE_DIR {
                wire.insert(kind, crate::wire::decode(&bytes));
            } else {
                // As `PoolStore::load_above` reads this node's persisted shares.
                pool.insert(
                    kind,
                    Envelope::decode(&bytes).map_err(|e| decode_err(&p, e))?,
                );
            }
        }
    }

    let json_path = path(files::CHECKPOINT_JSON);
    let checkpoint: CheckpointSummary =
        serde_json::from_slice(&read_bounded(&json_path, 64 * 1024)?)
            .map_err(|e| decode_err(&json_path, e))?;

    let node = NodeDir::new(dir);
    let network = node
        .network_id()
        .map_err(|e| decode_err(&node.config(), e))?;
    let node_toml = String::from_utf8(read_bounded(
        &node.config(),
        crate::node_dir::MAX_NODE_TOML_BYTES as usize,
    )?)
    .map_err(|e| decode_err(&node.config(), e))?;

    Ok(Fixtures {
        subnet_key,
        signed_cup,
        genesis_cup,
        changes,
        registry,
        snapshot,
        update,
        carried,
        wire,
        pool,
        checkpoint,
        network,
        node_toml,
    })
}

/// Opens a copy of the set's checkpoint in `scratch` (which must not exist; the committed
/// files are never written) as this release opens a checkpoint it restores: refused if
/// its schema is newer than this release's, and not migrated (the caller does that).
pub fn open_checkpoint(set: &Path, scratch: &Path) -> Result<ReplicatedState, CompatError> {
    let src = set.join(files::CHECKPOINT_DIR);
    // A plain copy first: even a read-only RocksDB open may write a log beside the files.
    let copy = scratch.join("committed");
    std::fs::create_dir_all(&copy).map_err(|e| file_err(&copy, e))?;
    for entry in std::fs::read_dir(&src).map_err(|e| file_err(&src, e))? {
        let entry = entry.map_err(|e| file_err(&src, e))?;
        std::fs::copy(entry.path(), copy.join(entry.file_name()))
            .map_err(|e| file_err(&entry.path(), e))?;
    }
    ReplicatedState::peek(&copy)?;
    Ok(ReplicatedState::restore(&copy, &scratch.join("state"))?)
}

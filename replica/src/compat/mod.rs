//! Golden fixtures: every format that crosses an upgrade, as this release writes it.
//!
//! Each release writes its set with `replica --write-fixtures DIR` (the first release's
//! binary, `replica`, into `replica/tests/fixtures/release-1/`; the next release's,
//! `replica-next`, into `release-2/`; `scripts/write-fixtures.sh` runs both), and the
//! sets are committed. The compatibility tests (`replica/tests/compat.rs`,
//! `replica-next/tests/compat.rs`) read them with [`read`]: a release decodes every
//! fixture of the previous release and its own, the first release also reads the next
//! release's CUP (CUPs cross an upgrade in both directions), and regenerating a set
//! gives the committed bytes, so an accidental format change fails the tests until the
//! fixtures are written again on purpose.
//!
//! A set (the files are named in [`files`]):
//! - CUPs: a signed CUP as consensus makes it at a summary height (with
//!   `next_replica_version`), the genesis CUP as every node builds it from the registry
//!   (`registry::local::registry_cup`: no `next_replica_version`), and the subnet key.
//! - Registry: every record type in the deltas of a `/api/v1/registry/changes` page (the
//!   replicator's input, and the changelog entries of a `RocksStore`): genesis, electing
//!   the next release, deploying it.
//! - Signed ingress: an update's HTTP body, and the carry-over file a halted release
//!   leaves (`DIR/replica/ingress-carryover.bin`).
//! - Consensus envelopes: one of every artifact kind, in this release's wire encoding
//!   (`wire/`, `icup-consensus/1` or `/2`) and in the pool store's encoding (`pool/`,
//!   the canonical one, which the next release reads back from the old release's pool).
//! - A checkpoint in this release's state schema (a RocksDB directory) with
//!   `checkpoint.json`, what it holds.
//! - `node.toml` with every field the orchestrator knows.
//!
//! Everything comes from fixed seeds, heights and times: no clock, no randomness. Every
//! file but the checkpoint's RocksDB files is byte-for-byte deterministic (`MANIFEST`
//! lists them with their SHA-256); RocksDB writes session ids and times into its files,
//! so the checkpoint is golden as to what it holds (`checkpoint.json`), not its bytes.

mod read;

pub use read::{Fixtures, open_checkpoint, read};

use crate::{
    ingress::{Ingress, IngressPool, Operation, SignedIngress, encode_carryover, encode_payload},
    state::ReplicatedState,
};
use consensus::artifact::{
    Aggregate, Artifact, Block, BlockContext, BlockProposal, Envelope, Readiness, Share,
    ThresholdShare, ThresholdSigned,
};
use crypto::ed25519::Ed25519KeyPair;
use cup::{Cup, CupContent, RandomBeacon, SignedCup};
use rand_chacha::rand_core::SeedableRng;
use registry::{
    genesis::{GeneratedNetwork, NetworkParams, generate_network},
    records::{RegistryRecord, ReplicaVersionRecord, SubnetRecord, keys},
    store::{MemoryStore, Mutation, RegistryStore},
};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};
use types::{CryptoHash, Height, NetworkId, RegistryVersion, ReplicaVersion, SubnetId, domain};

/// The file names of a set.
pub mod files {
    pub const README: &str = "README.md";
    pub const MANIFEST: &str = "MANIFEST";
    pub const SUBNET_KEY: &str = "subnet_key.hex";
    pub const SIGNED_CUP: &str = "signed.cup";
    pub const GENESIS_CUP: &str = "genesis.cup";
    pub const REGISTRY_CHANGES: &str = "registry_changes.bin";
    pub const INGRESS: &str = "ingress.bin";
    pub const CARRYOVER: &str = "ingress-carryover.bin";
    pub const WIRE_DIR: &str = "wire";
    pub const POOL_DIR: &str = "pool";
    pub const CHECKPOINT_DIR: &str = "checkpoint";
    pub const CHECKPOINT_JSON: &str = "checkpoint.json";
    pub const NODE_TOML: &str = "node.toml";
}

/// The release number of this build's set (`release-1`, `release-2`).
#[cfg(not(feature = "next-release"))]
pub const RELEASE_NUMBER: u32 = 1;
/// The release number of this build's set (`release-1`, `release-2`).
#[cfg(feature = "next-release")]
pub const RELEASE_NUMBER: u32 = 2;

/// The replica version each release runs as in the fixtures.
pub fn release_version(release: u32) -> ReplicaVersion {
    // `<digits>.0.0` is always a valid version id.
    ReplicaVersion::new(format!("{release}.0.0")).unwrap_or_else(|_| unreachable!())
}

/// The network's genesis time (ns since the Unix epoch); every fixture time is after it.
pub const GENESIS_TIME_NS: u64 = 1_800_000_000_000_000_000;
/// The block time of height `h`: a second per height after genesis.
pub fn block_time_ns(h: u64) -> u64 {
    GENESIS_TIME_NS + h * 1_000_000_000
}
/// Summary blocks every `DKG_INTERVAL_LENGTH + 1` heights.
pub const DKG_INTERVAL_LENGTH: u64 = 9;
/// The height of a release's signed CUP and checkpoint: release `r` makes its at `10 r`.
pub fn cup_height(release: u32) -> Height {
    Height::new(u64::from(release) * (DKG_INTERVAL_LENGTH + 1))
}
/// When the fixtures' updates are accepted; they expire 4 minutes later.
pub fn ingress_time_ns(release: u32) -> u64 {
    block_time_ns(cup_height(release).get())
}
/// The registry version at which the next release is deployed (the latest in the set).
pub const DEPLOY_REGISTRY_VERSION: RegistryVersion = RegistryVersion::new(3);

/// Why a fixture set could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CompatError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{what}: {reason}")]
    Decode { what: String, reason: String },
    #[error("state: {0}")]
    State(#[from] crate::state::StateError),
    #[error("{0}")]
    Make(String),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> CompatError {
    CompatError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The fixed network every set is made of: 4 nodes, 2 neurons, keys from one seed.
pub fn network() -> Result<GeneratedNetwork, CompatError> {
    let params = NetworkParams {
        nodes: 4,
        neurons: 2,
        dkg_interval_length: DKG_INTERVAL_LENGTH,
        unit_delay_ms: 200,
        initial_notary_delay_ms: 50,
        base_port: 31_000,
        replica_version: release_version(1),
        package_sha256: "a1".repeat(32),
        package_urls: vec!["http://127.0.0.1:8000/1.0.0.tar.zst".into()],
        genesis_time_ns: GENESIS_TIME_NS,
    };
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0xC0FF_EE01);
    generate_network(&params, &mut rng).map_err(|e| CompatError::Make(e.to_string()))
}

/// The registry's root key, whose hash is the network id.
pub fn registry_root_key() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed(&[0x52; 32])
}

/// The network every fixture update is signed for.
pub fn network_id() -> NetworkId {
    NetworkId::from_registry_root_key(registry_root_key().public_key().as_bytes())
}

/// The registry of the fixtures: genesis (version 1), the next release elected (2) and
/// deployed to the subnet (3).
pub fn registry(net: &GeneratedNetwork) -> Result<MemoryStore, CompatError> {
    let make = |e: registry::store::StoreError| CompatError::Make(e.to_string());
    let mut store = MemoryStore::new();
    store.apply(&net.genesis.mutations()).map_err(make)?;
    let next = release_version(2);
    let elected = ReplicaVersionRecord {
        version: next.clone(),
        release_package_sha256_hex: "b2".repeat(32),
        release_package_urls: vec![
            "http://127.0.0.1:8000/2.0.0.tar.zst".into(),
            "https://mirror.example/2.0.0.tar.zst".into(),
        ],
        recalled: false,
        extensions: Default::default(),
    };
    store
        .apply(&[Mutation::Insert {
            key: keys::replica_version(&next),
            value: elected.encode_value(),
        }])
        .map_err(make)?;
    let subnet = subnet_id(net);
    let key = keys::subnet_record(&subnet);
    let bytes = store
        .get(&key, store.latest_version())
        .map_err(make)?
        .ok_or_else(|| CompatError::Make("no subnet record".into()))?;
    let mut record =
        SubnetRecord::decode_value(&bytes).map_err(|e| CompatError::Make(e.to_string()))?;
    record.replica_version = next;
    store
        .apply(&[Mutation::Update {
            key,
            value: record.encode_value(),
        }])
        .map_err(make)?;
    Ok(store)
}

pub fn subnet_id(net: &GeneratedNetwork) -> SubnetId {
    net.genesis.subnets[0].subnet_id
}

/// The key every fixture update is signed with (`sender` 0 or 1).
pub fn user_key(sender: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed(&[0x30 + sender; 32])
}

fn update(release: u32, sender: u8, nonce: u64, operation: Operation) -> SignedIngress {
    let key = user_key(sender);
    SignedIngress::sign(
        Ingress {
            network: network_id(),
            sender: key.public_key(),
            nonce,
            expiry_ns: ingress_time_ns(release) + 4 * 60 * 1_000_000_000,
            operation,
        },
        &key,
    )
}

fn put(key: &str, value: &str) -> Operation {
    Operation::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
    }
}

/// This release's update body: a put in the first release, an append (its new method)
/// in the next.
pub fn sample_update(release: u32) -> SignedIngress {
    if release >= 2 {
        update(
            release,
            0,
            7,
            Operation::Append {
                key: "greeting".into(),
                value: b", again".to_vec(),
            },
        )
    } else {
        update(release, 0, 7, put("greeting", "hello"))
    }
}

/// The updates a halted release still held: what its pool selects for the next one.
pub fn carried_updates(release: u32) -> Result<Vec<SignedIngress>, CompatError> {
    let now = ingress_time_ns(release);
    let mut pool = IngressPool::new(network_id(), 100, 1 << 20);
    let mut waiting = vec![
        update(release, 0, 8, put("carried", "over")),
        update(release, 1, 1, Operation::Delete { key: "old".into() }),
    ];
    if release >= 2 {
        waiting.push(update(
            release,
            1,
            2,
            Operation::Append {
                key: "carried".into(),
                value: b"!".to_vec(),
            },
        ));
    }
    for m in waiting {
        pool.insert(m, now)
            .map_err(|e| CompatError::Make(format!("carried update: {e}")))?;
    }
    Ok(pool.select(now, 1 << 20, |_| false))
}

/// One artifact of every kind, as `version` would send it (signatures are fixed bytes:
/// these fixtures pin encodings; the consensus tests pin what is signed).
pub fn sample_artifacts(release: u32) -> Vec<Artifact> {
    let h = cup_height(release).increment();
    let hash = CryptoHash::of(domain::BLOCK_HASH, b"compat fixture block");
    let share = |signer| ThresholdShare {
        height: h,
        value: hash.0.to_vec(),
        signer,
        signature: vec![0xa5; 96],
    };
    let signed = ThresholdSigned {
        height: h,
        value: hash.0.to_vec(),
        signature: vec![0x5a; 96],
    };
    let vote = Share {
        height: h,
        hash,
        signer: 2,
        signature: vec![0x3c; 64],
    };
    let aggregate = Aggregate {
        height: h,
        hash,
        signers: vec![0, 1, 3],
        signature: vec![0xc3; 96],
    };
    let readiness = Readiness {
        signer: 1,
        height: h,
        version: release_version(release + 1),
        ready: true,
        reason: String::new(),
        signature: vec![0x11; 64],
    };
    let block = Block {
        parent: CryptoHash::of(domain::BLOCK_HASH, b"compat fixture parent"),
        height: h,
        rank: 1,
        maker: 3,
        context: BlockContext {
            time_ns: block_time_ns(h.get()),
            registry_version: DEPLOY_REGISTRY_VERSION,
            certified_height: cup_height(release),
        },
        is_summary: false,
        payload: encode_payload(&[sample_update(release)]),
        ready: vec![readiness.clone()],
        resharing: Vec::new(),
    };
    vec![
        Artifact::Proposal(BlockProposal {
            block,
            signature: vec![0x77; 64],
        }),
        Artifact::BeaconShare(share(0)),
        Artifact::Beacon(signed.clone()),
        Artifact::NotarizationShare(vote.clone()),
        Artifact::Notarization(aggregate.clone()),
        Artifact::FinalizationShare(vote),
        Artifact::Finalization(aggregate),
        Artifact::CertificationShare(share(1)),
        Artifact::Certification(signed.clone()),
        Artifact::CupShare(share(2)),
        Artifact::Cup(signed),
        Artifact::Request { height: h },
        Artifact::Readiness(readiness),
    ]
}

/// The state a release checkpoints at its CUP height: a few values written through
/// execution (in this release's schema), in `dir`.
pub fn sample_state(release: u32, dir: &Path) -> Result<ReplicatedState, CompatError> {
    let mut state = ReplicatedState::open(dir)?;
    let net = network_id();
    let mut writes: BTreeMap<u64, Vec<Operation>> = BTreeMap::new();
    writes.insert(
        1,
        vec![put("greeting", "hello"), put("old", "to be deleted")],
    );
    writes.insert(
        3,
        vec![put("counter", "1"), Operation::Delete { key: "old".into() }],
    );
    writes.insert(5, vec![put("counter", "2"), put("empty", "")]);
    if release >= 2 {
        writes.insert(
            7,
            vec![Operation::Append {
                key: "greeting".into(),
                value: b", world".to_vec(),
            }],
        );
    }
    for h in 1..=cup_height(release).get() {
        let payload: Vec<SignedIngress> = writes
            .get(&h)
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, op)| {
                let key = user_key(i as u8 % 2);
                SignedIngress::sign(
                    Ingress {
                        network: net,
                        sender: key.public_key(),
                        nonce: h * 10 + i as u64,
                        expiry_ns: block_time_ns(h) + 60_000_000_000,
                        operation: op.clone(),
                    },
                    &key,
                )
            })
            .collect();
        let r = state.execute(Height::new(h), block_time_ns(h), &net, &payload)?;
        if r.skipped > 0 {
            return Err(CompatError::Make(format!(
                "height {h}: {} updates skipped",
                r.skipped
            )));
        }
    }
    Ok(state)
}

/// What a checkpoint holds (`checkpoint.json`): deterministic where its files are not.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointSummary {
    pub height: u64,
    pub schema: u32,
    pub state_hash: String,
    /// Every user value as written, hex.
    pub values: BTreeMap<String, String>,
}

impl CheckpointSummary {
    pub fn of(state: &ReplicatedState, keys: &[&str]) -> Result<Self, CompatError> {
        let mut values = BTreeMap::new();
        for k in keys {
            if let Some(v) = state.get(k)? {
                values.insert((*k).to_string(), hex::encode(v));
            }
        }
        Ok(Self {
            height: state.height().get(),
            schema: state.schema(),
            state_hash: state.state_hash().to_hex(),
            values,
        })
    }
}

/// The user keys the sample state may hold.
pub const SAMPLE_KEYS: &[&str] = &["counter", "empty", "greeting", "old"];

/// The signed CUP a release makes at its CUP height, as consensus does (with
/// `next_replica_version`), over the checkpoint's state hash.
pub fn signed_cup(
    release: u32,
    net: &GeneratedNetwork,
    state_hash: CryptoHash,
) -> Result<SignedCup, CompatError> {
    let h = cup_height(release);
    let content = CupContent {
        subnet_id: subnet_id(net),
        height: h,
        block_hash: CryptoHash::of(domain::BLOCK_HASH, format!("summary {h}").as_bytes()),
        block_time_ns: block_time_ns(h.get()),
        registry_version: DEPLOY_REGISTRY_VERSION,
        replica_version: release_version(release),
        random_beacon: RandomBeacon(vec![0x42; RandomBeacon::MAX_BYTES]),
        state_hash,
        oldest_registry_version_in_use: RegistryVersion::new(1),
        // The first release's CUP is the handover (a ready quorum for the deployed
        // release); the next release's names itself.
        next_replica_version: Some(release_version(2)),
        committee: None,
        extensions: BTreeMap::new(),
    };
    let high = &net.genesis.subnets[0].high_threshold_key;
    let shares: Vec<_> = net
        .nodes
        .iter()
        .take(high.threshold as usize)
        .map(|n| SignedCup::sign_share(&content, &n.high_share))
        .collect();
    SignedCup::combine(content, high, &shares).map_err(|e| CompatError::Make(e.to_string()))
}

/// `node.toml` with every field the orchestrator knows.
pub fn node_toml() -> String {
    format!(
        "registry_urls = [\"http://127.0.0.1:8080\", \"https://registry.example\"]\n\
         registry_root_key = \"{}\"\n\
         listen = \"127.0.0.1:31012\"\n\
         images_dir = \"images\"\n\
         poll_interval_ms = 300\n\
         replica_stop_grace_ms = 5000\n\
         tls_extra_ca_file = \"mirror-ca.pem\"\n\
         webhooks = [\"http://127.0.0.1:9000/events\"]\n",
        registry_root_key().public_key()
    )
}

/// Writes this release's set into `dir` (created; existing files of the set are
/// replaced). Returns the files written, relative to `dir`.
pub fn write_fixtures(dir: &Path) -> Result<Vec<PathBuf>, CompatError> {
    let release = RELEASE_NUMBER;
    let mut out = Writer {
        dir: dir.to_path_buf(),
        written: BTreeMap::new(),
    };
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let net = network()?;
    let store = registry(&net)?;
    let high = &net.genesis.subnets[0].high_threshold_key;
    out.file(
        files::SUBNET_KEY,
        format!("{}\n", high.group_key).as_bytes(),
    )?;

    // The checkpoint first: the signed CUP names its state hash.
    let scratch = dir.join(".scratch-state");
    let checkpoint = dir.join(files::CHECKPOINT_DIR);
    for d in [&scratch, &checkpoint] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(|e| file_err(d, e))?;
        }
    }
    let state = sample_state(release, &scratch)?;
    state.checkpoint(&checkpoint)?;
    let summary = CheckpointSummary::of(&state, SAMPLE_KEYS)?;
    let state_hash = state.state_hash();
    drop(state);
    std::fs::remove_dir_all(&scratch).map_err(|e| file_err(&scratch, e))?;
    let json =
        serde_json::to_string_pretty(&summary).map_err(|e| CompatError::Make(e.to_string()))?;
    out.file(files::CHECKPOINT_JSON, format!("{json}\n").as_bytes())?;

    let signed = signed_cup(release, &net, state_hash)?;
    out.file(files::SIGNED_CUP, &Cup::Signed(signed).encode())?;
    let genesis = registry::local::registry_cup(&store, &subnet_id(&net), RegistryVersion::new(1))
        .map_err(|e| CompatError::Make(e.to_string()))?;
    out.file(files::GENESIS_CUP, &Cup::Registry(genesis).encode())?;

    let page = registry::api::ChangesPage {
        latest_version: store.latest_version(),
        deltas: store
            .changes_since(
                RegistryVersion::new(0),
                registry::api::MAX_VERSIONS_PER_PAGE,
            )
            .map_err(|e| CompatError::Make(e.to_string()))?,
    };
    out.file(files::REGISTRY_CHANGES, &types::codec::encode(&page))?;

    out.file(files::INGRESS, &sample_update(release).encode())?;
    out.file(
        files::CARRYOVER,
        &encode_carryover(&carried_updates(release)?),
    )?;

    let version = release_version(release);
    for artifact in sample_artifacts(release) {
        let kind = artifact.kind();
        let e = Envelope {
            version: version.clone(),
            artifact,
        };
        out.file(
            &format!("{}/{kind}.bin", files::WIRE_DIR),
            &crate::wire::encode(&e),
        )?;
        out.file(&format!("{}/{kind}.bin", files::POOL_DIR), &e.encode())?;
    }
    out.file(files::NODE_TOML, node_toml().as_bytes())?;
    out.file(files::README, readme(release).as_bytes())?;
    let manifest: String = out
        .written
        .iter()
        .map(|(name, sha)| format!("{sha}  {name}\n"))
        .collect();
    out.file(files::MANIFEST, manifest.as_bytes())?;
    let mut written: Vec<PathBuf> = out.written.keys().map(PathBuf::from).collect();
    written.push(PathBuf::from(files::CHECKPOINT_DIR));
    Ok(written)
}

struct Writer {
    dir: PathBuf,
    /// File name to SHA-256 (hex) of what was written.
    written: BTreeMap<String, String>,
}

impl Writer {
    fn file(&mut self, name: &str, bytes: &[u8]) -> Result<(), CompatError> {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| file_err(parent, e))?;
        }
        durable::write(&path, bytes).map_err(|e| file_err(&path, e))?;
        if name != files::MANIFEST {
            self.written.insert(name.to_string(), sha256_hex(bytes));
        }
        Ok(())
    }
}

/// SHA-256 of `bytes`, hex (the `MANIFEST`'s sums; `sha256sum -c MANIFEST` checks them).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn readme(release: u32) -> String {
    format!(
        "# Golden fixtures of release {release}\n\
         \n\
         Written by `{bin} --write-fixtures` (`replica::compat::write_fixtures`: release \
         `{version}`, state schema {schema}, wire protocol `{wire}`); do not edit by hand. \
         `scripts/write-fixtures.sh` writes them again after a deliberate format change. \
         `MANIFEST` holds the SHA-256 of every file but the checkpoint's RocksDB files \
         (`sha256sum -c MANIFEST`), which RocksDB does not write byte for byte the same \
         twice: `checkpoint.json` says what the checkpoint holds.\n\
         \n\
         | file | what |\n\
         |---|---|\n\
         | `signed.cup` | the CUP consensus makes at height {h}, signed by the subnet |\n\
         | `genesis.cup` | the genesis CUP every node builds from the registry |\n\
         | `subnet_key.hex` | the subnet's public key (verifies `signed.cup`) |\n\
         | `registry_changes.bin` | a page of registry changes (every record type) |\n\
         | `ingress.bin` | a signed update, as sent over HTTP |\n\
         | `ingress-carryover.bin` | the updates a halted release hands to the next |\n\
         | `wire/<kind>.bin` | an envelope of each artifact kind on `{wire}` |\n\
         | `pool/<kind>.bin` | the same envelopes as the pool store keeps them |\n\
         | `checkpoint/`, `checkpoint.json` | a checkpoint at height {h} in schema {schema} |\n\
         | `node.toml` | the orchestrator's configuration, every field set |\n",
        bin = if release >= 2 {
            "replica-next"
        } else {
            "replica"
        },
        version = release_version(release),
        schema = crate::state::SCHEMA_VERSION,
        wire = crate::WIRE_PROTOCOL,
        h = cup_height(release),
    )
}

//! The orchestrator in the simulation: each node keeps a registry copy (the `registry`
//! crate's memory store, with the real records: the subnet with its threshold key and
//! members, the nodes, the elected releases with their package hashes, the genesis CUP
//! contents), holding only the registry versions the node has seen; and on every start
//! and every orchestrator tick it runs the production [`orchestrator::decide::decide_with`]
//! over its own CUP, its copy, and the CUPs its peers serve. Byzantine peers with
//! [`Byzantine::BadCupAnswers`] serve forged, foreign, stale, replayed and made-up CUPs.
//!
//! The one difference from production is the signature check ([`SimCupVerifier`]): with
//! the stand-in crypto a CUP's signature is the stand-in's 32-byte group value, carried in
//! a BLS signature by a per-run wrapping key so that it fits `cup::SignedCup`; the check
//! recomputes the stand-in value for the content and compares. Real-crypto seeds run the
//! production BLS check ([`orchestrator::decide::BlsCupVerifier`]).
//!
//! Checker rule: an honest node starts only from a CUP some honest node's consensus core
//! reported as `CupReady` (a CUP made from, or verified against, n − f shares), or from the
//! registry's genesis CUP.

use super::*;
use ::orchestrator::decide::{BlsCupVerifier, CupVerifier, Decision, Local, Memo};
use consensus::Threshold;
use crypto::{
    bls::{BlsPublicKey, BlsSignature},
    threshold::ThresholdPublicKey,
};
use cup::{Cup, RegistryCup, RegistryCupKind, SignedCup};
use registry::{
    local::registry_cup,
    records::{
        CupContentsKind, CupContentsRecord, NodeRecord, RegistryRecord, ReplicaVersionRecord,
        SubnetListRecord, SubnetRecord, keys,
    },
    store::{MemoryStore, Mutation, RegistryStore},
};
use std::cell::RefCell;
use types::NodeId;

/// The most CUPs a Byzantine node remembers to replay.
const MAX_CUP_HISTORY: usize = 16;
/// The most registry versions a node's copy takes in one replication step.
const MAX_VERSIONS_PER_STEP: usize = 16;

/// The signature check the simulated orchestrators run.
pub(crate) struct SimCupVerifier {
    /// `None`: real-crypto seeds, the production BLS check.
    stand_in: Option<StandInCups>,
    /// The planted bug (`SimConfig::trust_peer_cups`): every signed CUP passes.
    trust_all: bool,
    /// CUPs built so far, by the hash of (content, signature).
    built: RefCell<BTreeMap<CryptoHash, Option<Cup>>>,
}

/// Stand-in CUP signatures: the registry's key must be this run's subnet key, and the
/// signature the wrapped stand-in group value of the content.
pub(crate) struct StandInCups {
    crypto: SimStandInCrypto,
    wrap_key: BlsSecretKey,
    subnet_key: BlsPublicKey,
    /// Wrapped values already computed (a BLS signing each), by stand-in value.
    wrapped: RefCell<BTreeMap<Vec<u8>, [u8; 96]>>,
}

impl StandInCups {
    /// The stand-in value carried in a BLS signature (deterministic: BLS signing is).
    fn wrap(&self, value: &[u8]) -> Option<BlsSignature> {
        let bytes = *self
            .wrapped
            .borrow_mut()
            .entry(value.to_vec())
            .or_insert_with(|| self.wrap_key.sign(domain::CUP_CONTENT, value).to_bytes());
        BlsSignature::from_bytes(&bytes).ok()
    }
}

impl SimCupVerifier {
    /// A CUP as a node's consensus core made it, in the orchestrator's form (each one
    /// built once: a BLS signature's decode and checks cost more than a run's ticks).
    fn to_cup(&self, content: &CupContent, signature: &[u8]) -> Option<Cup> {
        let key = CryptoHash::sha256(&[content.encode(), signature.to_vec()].concat());
        if let Some(c) = self.built.borrow().get(&key) {
            return c.clone();
        }
        let cup = self.build_cup(content, signature);
        self.built.borrow_mut().insert(key, cup.clone());
        cup
    }

    fn build_cup(&self, content: &CupContent, signature: &[u8]) -> Option<Cup> {
        let signature = match &self.stand_in {
            Some(s) => s.wrap(signature)?,
            None => BlsSignature::from_bytes(signature).ok()?,
        };
        SignedCup::from_parts(content.encode(), signature)
            .ok()
            .map(Cup::Signed)
    }
}

impl CupVerifier for SimCupVerifier {
    fn verifies(&self, cup: &SignedCup, key: &ThresholdPublicKey) -> bool {
        if self.trust_all {
            return true;
        }
        let Some(s) = &self.stand_in else {
            return BlsCupVerifier.verifies(cup, key);
        };
        if key.group_key != s.subnet_key {
            return false;
        }
        let share =
            s.crypto
                .sign_threshold(Threshold::High, domain::CUP_CONTENT, cup.content_bytes());
        s.wrap(&share[..32])
            .is_some_and(|w| w.to_bytes() == cup.signature().to_bytes())
    }
}

/// The registry side of the simulation and every node's copy of it.
pub(crate) struct Orchestration {
    /// Every version governance published.
    published: MemoryStore,
    /// Node `i`'s copy: the versions it has seen.
    copies: Vec<MemoryStore>,
    node_ids: Vec<NodeId>,
    verifier: SimCupVerifier,
    /// A key that is not the subnet's: what forgers sign with.
    foreign_key: BlsSecretKey,
    genesis_cup: RegistryCup,
    /// Node `i`'s orchestrator must (re)start its replica as soon as it can decide.
    pending_start: Vec<bool>,
    /// A choice taken by a tick, for the start that follows it.
    chosen: Vec<Option<(Base, ReplicaVersion)>>,
    /// The CUPs node `i`'s core reported (a liar replays them).
    history: Vec<Vec<(CupContent, Vec<u8>)>>,
    /// Node `i`'s last decision by its inputs (the production `decide::Memo`): most ticks
    /// see the same inputs again (decoding the subnet record's keys took 61% of a run's
    /// time before this; `perf`, 2026-11-30).
    memo: Vec<Memo>,
}

pub(crate) fn package_sha256(version: &ReplicaVersion) -> String {
    hex::encode(Sha256::digest(format!("package of {version}").as_bytes()))
}

fn version_record(version: &ReplicaVersion) -> Mutation {
    Mutation::Insert {
        key: keys::replica_version(version),
        value: ReplicaVersionRecord {
            version: version.clone(),
            release_package_sha256_hex: package_sha256(version),
            release_package_urls: vec![format!("https://releases.sim/{version}.tar.zst")],
            recalled: false,
            extensions: Default::default(),
        }
        .encode_value(),
    }
}

impl Orchestration {
    /// The genesis registry (version 1) for `subnet`, on `keys`, and every node's copy.
    pub(crate) fn new(
        cfg: &SimConfig,
        keys: &KeyMaterial,
        subnet: SubnetId,
        version_a: &ReplicaVersion,
        rng: &mut ChaCha20Rng,
    ) -> Self {
        let n = cfg.nodes;
        let foreign_key = BlsSecretKey::generate(rng);
        let (low, high, nodes, verifier) = match keys {
            KeyMaterial::Real { keys, secrets } => {
                let nodes: Vec<NodeRecord> = (0..n)
                    .map(|i| node_record(i, keys.ed25519[i], &secrets[i].1))
                    .collect();
                (keys.low.clone(), keys.high.clone(), nodes, None)
            }
            KeyMaterial::StandIn { key_seed } => {
                // A real key to list in the registry (the stand-in has none), which also
                // wraps stand-in values into BLS signatures; node keys are never used.
                let wrap_key = BlsSecretKey::generate(rng);
                let group = wrap_key.public_key();
                let stand_in = |t| ThresholdPublicKey {
                    group_key: group,
                    share_keys: vec![group; n],
                    threshold: t as u32,
                };
                let node_bls = BlsSecretKey::generate(rng);
                let nodes: Vec<NodeRecord> = (0..n)
                    .map(|i| {
                        let ed = Ed25519KeyPair::generate(rng).public_key();
                        node_record(i, ed, &node_bls)
                    })
                    .collect();
                let verifier = StandInCups {
                    crypto: SimStandInCrypto {
                        me: 0,
                        n,
                        low_threshold: low_threshold(n),
                        high_threshold: high_threshold(n),
                        key_seed: *key_seed,
                    },
                    wrap_key,
                    subnet_key: group,
                    wrapped: RefCell::new(BTreeMap::new()),
                };
                (
                    stand_in(low_threshold(n)),
                    stand_in(high_threshold(n)),
                    nodes,
                    Some(verifier),
                )
            }
        };
        let verifier = SimCupVerifier {
            stand_in: verifier,
            trust_all: cfg.trust_peer_cups,
            built: RefCell::new(BTreeMap::new()),
        };
        let node_ids: Vec<NodeId> = nodes.iter().map(|r| r.node_id).collect();
        let subnet_record = SubnetRecord {
            subnet_id: subnet,
            members: node_ids.clone(),
            replica_version: version_a.clone(),
            dkg_interval_length: cfg.dkg_interval_length,
            unit_delay_ms: 200,
            initial_notary_delay_ms: 100,
            low_threshold_key: low,
            high_threshold_key: high,
            halt_at_cup_height: false,
            is_halted: false,
            key_holders: None,
            kind: None,
            extensions: Default::default(),
        };
        let mut genesis = vec![
            Mutation::Insert {
                key: keys::SUBNET_LIST.to_string(),
                value: SubnetListRecord {
                    subnets: vec![subnet],
                    extensions: Default::default(),
                }
                .encode_value(),
            },
            Mutation::Insert {
                key: keys::subnet_record(&subnet),
                value: subnet_record.encode_value(),
            },
            Mutation::Insert {
                key: keys::cup_contents(&subnet),
                value: CupContentsRecord {
                    kind: CupContentsKind::Genesis,
                    height: Height::ZERO,
                    time_ns: 0,
                    state_hash: types::empty_state_hash(),
                    extensions: Default::default(),
                }
                .encode_value(),
            },
            version_record(version_a),
        ];
        genesis.extend(nodes.iter().map(|r| Mutation::Insert {
            key: keys::node_record(&r.node_id),
            value: r.encode_value(),
        }));
        let mut published = MemoryStore::new();
        published
            .apply(&genesis)
            .expect("the simulated genesis registry is valid");
        let genesis_cup = registry_cup(&published, &subnet, RegistryVersion::new(1))
            .expect("the genesis registry has CUP contents");
        Self {
            copies: vec![published.clone(); n],
            published,
            node_ids,
            verifier,
            foreign_key,
            genesis_cup,
            pending_start: vec![false; n],
            chosen: vec![None; n],
            memo: (0..n).map(|_| Memo::default()).collect(),
            history: vec![Vec::new(); n],
        }
    }

    /// Where every node starts: the registry's genesis CUP.
    pub(crate) fn genesis_base(&self) -> Base {
        Base::from_cup(&self.genesis_cup.content)
    }

    /// Governance deploys `version` to `subnet`: one new registry version.
    pub(crate) fn publish_release(
        &mut self,
        subnet: &SubnetId,
        version: &ReplicaVersion,
    ) -> RegistryVersion {
        let record = self.subnet_record(subnet, version);
        self.apply(vec![record, version_record(version)])
    }

    /// Governance recalls `version`: one new registry version.
    pub(crate) fn recall_release(&mut self, version: &ReplicaVersion) -> RegistryVersion {
        let Mutation::Insert { key, value } = version_record(version) else {
            unreachable!("version_record inserts");
        };
        let mut record = ReplicaVersionRecord::decode_value(&value).expect("the record decodes");
        record.recalled = true;
        let value = record.encode_value();
        self.apply(vec![Mutation::Update { key, value }])
    }

    /// Governance adopts `recover-subnet`: `subnet` back on `version`, and a recovery
    /// CUP at the height of `stalled` with its state hash.
    pub(crate) fn recover(
        &mut self,
        subnet: &SubnetId,
        version: &ReplicaVersion,
        stalled: &CupContent,
    ) -> RegistryVersion {
        let contents = CupContentsRecord {
            kind: CupContentsKind::Recovery,
            height: stalled.height,
            time_ns: stalled.block_time_ns,
            state_hash: stalled.state_hash,
            extensions: Default::default(),
        };
        let record = self.subnet_record(subnet, version);
        self.apply(vec![
            record,
            Mutation::Update {
                key: keys::cup_contents(subnet),
                value: contents.encode_value(),
            },
        ])
    }

    /// The CUP the published registry builds for `subnet` now.
    pub(crate) fn published_registry_cup(&self, subnet: &SubnetId) -> RegistryCup {
        registry_cup(&self.published, subnet, self.published.latest_version())
            .expect("the registry has CUP contents")
    }

    /// Whether node `i`'s registry copy recalls `version` at its latest version.
    pub(crate) fn recalled_in_copy(&self, i: NodeIndex, version: &ReplicaVersion) -> bool {
        let copy = &self.copies[i as usize];
        copy.get(&keys::replica_version(version), copy.latest_version())
            .ok()
            .flatten()
            .and_then(|b| ReplicaVersionRecord::decode_value(&b).ok())
            .is_some_and(|r| r.recalled)
    }

    /// An update of `subnet`'s record to run `version`.
    fn subnet_record(&self, subnet: &SubnetId, version: &ReplicaVersion) -> Mutation {
        let latest = self.published.latest_version();
        let bytes = self
            .published
            .get(&keys::subnet_record(subnet), latest)
            .ok()
            .flatten()
            .expect("the subnet is in the registry");
        let mut record = SubnetRecord::decode_value(&bytes).expect("the record decodes");
        record.replica_version = version.clone();
        Mutation::Update {
            key: keys::subnet_record(subnet),
            value: record.encode_value(),
        }
    }

    fn apply(&mut self, mutations: Vec<Mutation>) -> RegistryVersion {
        self.published
            .apply(&mutations)
            .expect("governance's change is a valid registry change");
        self.published.latest_version()
    }

    /// Node `i`'s copy catches up with the published registry to `version`.
    pub(crate) fn replicate(&mut self, i: NodeIndex, version: RegistryVersion) {
        let copy = &mut self.copies[i as usize];
        while copy.latest_version() < version {
            let Ok(deltas) = self
                .published
                .changes_since(copy.latest_version(), MAX_VERSIONS_PER_STEP)
            else {
                return;
            };
            let deltas: Vec<_> = deltas
                .into_iter()
                .filter(|d| d.version <= version)
                .collect();
            if deltas.is_empty() || copy.append_all(&deltas).is_err() {
                return;
            }
        }
    }
}

fn node_record(
    i: usize,
    ed25519: crypto::ed25519::Ed25519PublicKey,
    bls: &BlsSecretKey,
) -> NodeRecord {
    NodeRecord {
        node_id: ed25519.node_id(),
        ed25519_public_key: ed25519,
        bls_public_key: bls.public_key(),
        bls_proof_of_possession: bls.prove_possession(),
        consensus_address: format!("10.0.0.{i}:4100"),
        http_address: format!("10.0.0.{i}:8080"),
        cup_address: format!("10.0.0.{i}:8081"),
        dealing_encryption_key: None,
        extensions: Default::default(),
    }
}

impl Sim {
    /// A CUP the core of node `i` reported: the checker's record of CUPs a quorum made,
    /// and a Byzantine node's history to replay. Any core counts, a Byzantine node's too:
    /// a core reports only a CUP it assembled from verified shares of a high-threshold
    /// quorum (so from at least f + 1 honest nodes); what a Byzantine node forges goes
    /// out on the wire or through its CUP endpoint, never through its core. (Counting
    /// honest cores only misjudged seed 121: an honest node fetched a genuine CUP from a
    /// Byzantine peer's endpoint before any honest core had assembled it.)
    pub(crate) fn record_cup_ready(&mut self, i: NodeIndex, content: &CupContent, sig: &[u8]) {
        self.checker
            .quorum_cups
            .insert(CryptoHash::sha256(&content.encode()));
        let history = &mut self.orch.history[i as usize];
        if history.len() < MAX_CUP_HISTORY {
            history.push((content.clone(), sig.to_vec()));
        }
    }

    /// The CUP node `j`'s orchestrator serves when asked.
    fn served_cup(&mut self, j: NodeIndex) -> Option<Cup> {
        let node = &self.nodes[j as usize];
        let own = node
            .disk
            .cup
            .as_ref()
            .and_then(|(c, s)| self.orch.verifier.to_cup(c, s));
        if node.byzantine != Some(Byzantine::BadCupAnswers) {
            return own;
        }
        self.lying_cup_answer(j, own)
    }

    /// What node `i`'s orchestrator decides now: the CUP to start from and the release.
    /// `None` when it cannot (it waits, and retries on its next tick).
    fn orchestrator_decision(&mut self, i: NodeIndex) -> Option<(Cup, ReplicaVersion)> {
        let node = &self.nodes[i as usize];
        let local = Local {
            node_id: self.orch.node_ids[i as usize],
            running_version: node.version.clone(),
            running_package_sha256: package_sha256(&node.version),
            cup: node
                .disk
                .cup
                .as_ref()
                .and_then(|(c, s)| self.orch.verifier.to_cup(c, s)),
        };
        let mut peers = Vec::new();
        for j in 0..self.cfg.nodes as NodeIndex {
            if j != i
                && self.nodes[j as usize].core.is_some()
                && let Some(c) = self.served_cup(j)
            {
                peers.push(c);
            }
        }
        let copy = &self.orch.copies[i as usize];
        let decision =
            self.orch.memo[i as usize].decide_with(&local, &peers, copy, &self.orch.verifier);
        if matches!(decision, Decision::Unassigned | Decision::Leave { .. })
            && self.is_honest(i as usize)
        {
            self.checker
                .violation(format!("node {i}'s orchestrator decided {decision:?}"));
        }
        self.step_machine(i, &decision)
    }

    /// The (base, release) node `i` starts from now: a tick's choice, or a new decision.
    /// `None`: the orchestrator waits; it starts the replica on a later tick.
    pub(crate) fn orchestrator_choice(&mut self, i: NodeIndex) -> Option<(Base, ReplicaVersion)> {
        let choice = match self.orch.chosen[i as usize].take() {
            Some(c) => Some(c),
            None => self.orchestrator_decision(i).map(|(cup, version)| {
                self.check_start_cup(i, &cup);
                (Base::from_cup(cup.content()), version)
            }),
        };
        self.orch.pending_start[i as usize] = choice.is_none();
        if let Some((base, version)) = &choice {
            self.log(&[
                b"decide",
                &i.to_be_bytes(),
                &base.height.get().to_be_bytes(),
                version.as_str().as_bytes(),
            ]);
        }
        choice
    }

    /// The rule: an honest node starts only from a CUP a core assembled from a quorum's
    /// shares, or from the registry's genesis CUP or the recovery CUP governance adopted.
    fn check_start_cup(&mut self, i: NodeIndex, cup: &Cup) {
        if !self.is_honest(i as usize) {
            return;
        }
        let known = match cup {
            Cup::Signed(s) => self
                .checker
                .quorum_cups
                .contains(&CryptoHash::sha256(s.content_bytes())),
            Cup::Registry(r) => {
                *r == self.orch.genesis_cup || self.strand.recovery.as_ref() == Some(r)
            }
        };
        if !known {
            let c = cup.content();
            self.checker.violation(format!(
                "node {i} started from a {} CUP at height {} (registry version {}) that no honest quorum produced",
                cup.kind_name(),
                c.height,
                c.registry_version,
            ));
        }
    }

    /// The orchestrator's periodic look: restart the replica from a peer's CUP above what
    /// it finalized, or one that names another release (as the orchestrator does); start
    /// it if an earlier decision had to wait.
    pub(crate) fn orchestrator_tick(&mut self, node: NodeIndex) {
        if self.orch.pending_start[node as usize] {
            self.restart_from_best(node);
            return;
        }
        let Some(core) = self.nodes[node as usize].core.as_ref() else {
            return;
        };
        let finalized = core.finalized_height();
        let halted = core.is_halted();
        let running = self.nodes[node as usize].version.clone();
        let Some((cup, version)) = self.orchestrator_decision(node) else {
            return;
        };
        let height = cup.content().height;
        if (height > finalized || (version != running && height >= finalized))
            && !(halted && self.nodes[node as usize].halted_at == Some(height))
        {
            self.check_start_cup(node, &cup);
            self.orch.chosen[node as usize] = Some((Base::from_cup(cup.content()), version));
            self.restart_from_best(node);
        }
    }

    /// Node `i`'s orchestrator must start its replica as soon as it can decide.
    pub(crate) fn orch_pending_start(&mut self, i: NodeIndex) {
        self.orch.pending_start[i as usize] = true;
    }

    /// A liar's answer, drawn from the seed: the truth, its CUP under a foreign signature,
    /// a CUP of another subnet, a stale or replayed CUP, one far ahead with a bad
    /// signature, a registry CUP the registry does not build, a real signature over other
    /// content, or a CUP pinning a registry version that does not exist.
    fn lying_cup_answer(&mut self, j: NodeIndex, own: Option<Cup>) -> Option<Cup> {
        let interval = self.cfg.dkg_interval_length + 1;
        let base = own
            .as_ref()
            .map(|c| c.content().clone())
            .unwrap_or_else(|| self.orch.genesis_cup.content.clone());
        let ahead = |k: u64| Height::new(base.height.get().saturating_add(k * interval));
        let forge = |orch: &Orchestration, c: &CupContent| {
            let bytes = c.encode();
            let sig = orch.foreign_key.sign(domain::CUP_CONTENT, &bytes);
            SignedCup::from_parts(bytes, sig).ok().map(Cup::Signed)
        };
        let history = &self.orch.history[j as usize];
        match self.rng.random_range(0..9) {
            0 => own,
            1 => forge(&self.orch, &base),
            2 => {
                let other = CupContent {
                    subnet_id: SubnetId(hash(&[b"another subnet", &base.subnet_id.0]).0),
                    height: ahead(3),
                    ..base
                };
                forge(&self.orch, &other)
            }
            3 => {
                let (c, s) = history.first()?;
                self.orch.verifier.to_cup(c, s)
            }
            4 => {
                let (c, s) = history.choose(&mut self.rng)?.clone();
                self.orch.verifier.to_cup(&c, &s)
            }
            5 => {
                let far = CupContent {
                    height: ahead(1000),
                    block_hash: hash(&[b"a block from the future"]),
                    ..base
                };
                forge(&self.orch, &far)
            }
            6 => Some(Cup::Registry(RegistryCup {
                kind: RegistryCupKind::Recovery,
                content: CupContent {
                    height: ahead(2),
                    registry_version: self.orch.published.latest_version(),
                    ..base
                },
            })),
            7 => match own? {
                Cup::Signed(s) => {
                    let other = CupContent {
                        height: ahead(1),
                        state_hash: hash(&[b"a state nobody computed"]),
                        ..base
                    };
                    SignedCup::from_parts(other.encode(), *s.signature())
                        .ok()
                        .map(Cup::Signed)
                }
                r => Some(r),
            },
            _ => {
                let unknown = CupContent {
                    height: ahead(1),
                    registry_version: RegistryVersion::new(99),
                    ..base
                };
                forge(&self.orch, &unknown)
            }
        }
    }
}

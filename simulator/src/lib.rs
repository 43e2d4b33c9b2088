//! A deterministic simulator: N consensus nodes (the production [`consensus::Consensus`]
//! core) in one process, driven by a seeded discrete-event scheduler on virtual time.
//!
//! Every choice comes from the seed: latency, jitter (so reordering), loss, duplication,
//! a partition and its heal, a crash and restart (from the latest CUP, with the shares the
//! node persisted), which nodes are Byzantine and how, and when governance deploys the
//! next release. A run has a *fault phase* (safety is checked throughout) and then a
//! *liveness phase* (no faults; every honest node must reach the target height in time).
//!
//! Checkers: no two honest nodes finalize different blocks at one height; each honest
//! node delivers consecutive heights (its chain is a prefix of the others'); honest nodes
//! compute the same state at each height, and a state synced from peers (some of them
//! lying) is the one its CUP names; certified state hashes and CUPs agree; with an upgrade, every honest node halts at the same
//! summary height, and resumes on the new release from that CUP (or a later one); after
//! the faults end, finality resumes within a bound. The same seed gives the same digest.

// The simulator is test machinery: a set-up that cannot work (a dealing of valid
// parameters failing) is a bug to stop on, not an error to return.
#![allow(clippy::expect_used)]

mod byzantine;
mod checker;
mod clock;
mod config;
mod machines;
pub mod membership;
mod memo_crypto;
mod orchestration;
mod run;
mod sim_crypto;
mod state;

pub use byzantine::{BEHAVIORS, Byzantine};
use checker::Checker;
use clock::Clock;
pub use config::{SimConfig, SimResult};
pub use machines::Strand;
pub use run::{run_seed, tolerated};

/// A seed range `A..B` from the command line (B excluded, not empty).
pub fn parse_seed_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").ok_or("expected A..B, e.g. 0..100")?;
    let a: u64 = a.parse().map_err(|_| format!("{a:?} is not a number"))?;
    let b: u64 = b.parse().map_err(|_| format!("{b:?} is not a number"))?;
    if b <= a {
        return Err(format!("empty range {a}..{b}"));
    }
    Ok((a, b))
}

/// Runs `run(seed)` for each seed in `a..b` on `threads` threads; the results in seed
/// order.
pub fn run_seeds<R: Send>(
    a: u64,
    b: u64,
    threads: usize,
    run: impl Fn(u64) -> R + Sync,
    seed_of: impl Fn(&R) -> u64,
) -> Vec<R> {
    let next = std::sync::Mutex::new(a);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = {
                        let mut g = next.lock().unwrap_or_else(|p| p.into_inner());
                        if *g >= b {
                            break;
                        }
                        *g += 1;
                        *g - 1
                    };
                    let r = run(seed);
                    results.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|r| seed_of(r));
    results
}
use state::Disk;

pub use sim_crypto::SimStandInCrypto;

use consensus::{
    Action, Base, Config, Consensus, ConsensusCrypto, Event, Now, RealCrypto, SubnetInfo,
    artifact::{Artifact, Envelope, NodeIndex, signed_bytes},
    crypto::{NodeSecrets, SubnetKeys},
};
use crypto::{
    bls::BlsSecretKey,
    ed25519::Ed25519KeyPair,
    threshold::{deal, high_threshold, low_threshold, max_faulty},
};
use cup::CupContent;
use rand::{
    Rng, SeedableRng,
    seq::{IndexedRandom, SliceRandom},
};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use types::{CryptoHash, Height, RegistryVersion, ReplicaVersion, SubnetId, domain};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
/// How often a node's orchestrator asks its peers for a newer CUP.
const ORCHESTRATOR_TICK_NS: u64 = 3 * SEC;
/// How far ahead of its own clock an honest node accepts a block's time.
const BLOCK_TIME_SKEW_NS: u64 = SEC;

pub use consensus::BrokenRule;

#[derive(Debug)]
enum SimEvent {
    Deliver {
        to: NodeIndex,
        from: NodeIndex,
        envelope: Envelope,
    },
    Timer {
        node: NodeIndex,
        generation: u64,
    },
    Registry {
        node: NodeIndex,
        version: RegistryVersion,
        info: SubnetInfo,
    },
    Crash {
        node: NodeIndex,
    },
    Restart {
        node: NodeIndex,
    },
    Switch {
        node: NodeIndex,
    },
    Partition {
        side: Vec<bool>,
    },
    Heal,
    /// The orchestrator's periodic look at its peers' CUPs.
    OrchestratorTick {
        node: NodeIndex,
    },
    /// Governance adopts a recovery of the subnet stranded at `height`.
    Recover {
        height: Height,
    },
}

type Core = Consensus<Box<dyn ConsensusCrypto>>;

struct Node {
    core: Option<Core>,
    version: ReplicaVersion,
    disk: Disk,
    generation: u64,
    registry: Vec<(RegistryVersion, SubnetInfo)>,
    last_delivered: Option<Height>,
    payload_counter: u64,
    byzantine: Option<Byzantine>,
    sent: Vec<Envelope>,
    halted_at: Option<Height>,
    /// An equivocator's two blocks per height: (sent to even targets, sent to odd ones).
    twins: BTreeMap<Height, (CryptoHash, CryptoHash)>,
    /// (version, base height) of every start.
    starts: Vec<(ReplicaVersion, Height)>,
    clock: Clock,
}

/// Keys for one node in one run: real or the stand-in.
// One per run: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum KeyMaterial {
    Real {
        keys: SubnetKeys,
        secrets: Vec<(
            Ed25519KeyPair,
            BlsSecretKey,
            crypto::threshold::SecretShare,
            crypto::threshold::SecretShare,
        )>,
    },
    StandIn {
        key_seed: u64,
    },
}

pub struct Sim {
    cfg: SimConfig,
    seed: u64,
    rng: ChaCha20Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), SimEvent>,
    nodes: Vec<Node>,
    keys: KeyMaterial,
    /// Real crypto's remembered answers, shared by this seed's nodes.
    crypto_memo: memo_crypto::Memo,
    subnet: SubnetId,
    version_a: ReplicaVersion,
    version_b: ReplicaVersion,
    published: Vec<(RegistryVersion, SubnetInfo)>,
    upgrade_published: bool,
    checker: Checker,
    digest: Sha256,
    messages: u64,
    // Network model.
    latency_ns: (u64, u64),
    loss: f64,
    duplicate: f64,
    partition: Option<Vec<bool>>,
    fault_phase_end: u64,
    genesis: Base,
    /// Registry copies and the orchestrators' decision (orchestration.rs).
    orch: orchestration::Orchestration,
    /// The time of every block proposal sent, by hash (what a block maker that lies
    /// about time needs to know of the parent).
    block_times: BTreeMap<CryptoHash, u64>,
    sync: state::SyncStats,
    /// Each node's orchestrator upgrade machine (machines.rs).
    machines: Vec<machines::Machine>,
    strand: machines::StrandState,
}

fn hash(parts: &[&[u8]]) -> CryptoHash {
    let mut buf = Vec::new();
    for p in parts {
        buf.extend_from_slice(&(p.len() as u64).to_be_bytes());
        buf.extend_from_slice(p);
    }
    CryptoHash::of(domain::STATE_HASH, &buf)
}

impl Sim {
    pub fn new(cfg: SimConfig, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let n = cfg.nodes;
        let keys = if cfg.real_crypto(seed) {
            let low = deal(n, low_threshold(n), &mut rng).expect("deal");
            let high = deal(n, high_threshold(n), &mut rng).expect("deal");
            let eds: Vec<Ed25519KeyPair> =
                (0..n).map(|_| Ed25519KeyPair::generate(&mut rng)).collect();
            let bls: Vec<BlsSecretKey> = (0..n).map(|_| BlsSecretKey::generate(&mut rng)).collect();
            let keys = SubnetKeys {
                ed25519: eds.iter().map(|k| k.public_key()).collect(),
                bls: bls.iter().map(|k| k.public_key()).collect(),
                low: low.public.clone(),
                high: high.public.clone(),
            };
            let secrets = eds
                .into_iter()
                .zip(bls)
                .zip(low.shares.into_iter().zip(high.shares))
                .map(|((e, b), (l, h))| (e, b, l, h))
                .collect();
            KeyMaterial::Real { keys, secrets }
        } else {
            KeyMaterial::StandIn {
                key_seed: rng.random(),
            }
        };
        let version_a = ReplicaVersion::new("release-A").expect("valid");
        let version_b = ReplicaVersion::new("release-B").expect("valid");
        let info_a = SubnetInfo {
            replica_version: version_a.clone(),
            halt_at_cup_height: false,
            is_halted: false,
            members: Vec::new(),
        };
        let published = vec![(RegistryVersion::new(1), info_a)];
        let subnet = SubnetId(hash(&[b"subnet", &seed.to_be_bytes()]).0);
        let orch = orchestration::Orchestration::new(&cfg, &keys, subnet, &version_a, &mut rng);
        let genesis = orch.genesis_base();
        let package_a = orchestration::package_sha256(&version_a);
        // Byzantine nodes and their behaviors.
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let byzantine: BTreeMap<usize, Byzantine> = order
            .iter()
            .take(cfg.faulty)
            .map(|&i| {
                (
                    i,
                    *cfg.behaviors
                        .choose(&mut rng)
                        .unwrap_or(&Byzantine::Withhold),
                )
            })
            .collect();
        // Network model and fault schedule.
        let (latency_ns, loss, duplicate) = if cfg.faults {
            let lo = rng.random_range(1..5) * MS;
            (
                (lo, lo + rng.random_range(5..80) * MS),
                rng.random_range(0.0..0.03),
                rng.random_range(0.0..0.02),
            )
        } else {
            ((2 * MS, 10 * MS), 0.0, 0.0)
        };
        let fault_phase_end = if cfg.faults {
            rng.random_range(5..20) * SEC
        } else {
            0
        };
        let mut sim = Self {
            nodes: (0..n)
                .map(|i| Node {
                    core: None,
                    version: version_a.clone(),
                    disk: Disk::default(),
                    generation: 0,
                    registry: published.clone(),
                    last_delivered: None,
                    payload_counter: 0,
                    byzantine: byzantine.get(&i).copied(),
                    sent: Vec::new(),
                    halted_at: None,
                    twins: BTreeMap::new(),
                    starts: Vec::new(),
                    clock: Clock::default(),
                })
                .collect(),
            cfg,
            seed,
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            keys,
            crypto_memo: memo_crypto::Memo::default(),
            subnet,
            version_a,
            version_b,
            published,
            upgrade_published: false,
            checker: Checker {
                finalized: BTreeMap::new(),
                certified: BTreeMap::new(),
                cups: BTreeMap::new(),
                states: BTreeMap::new(),
                halts: BTreeMap::new(),
                any_halts: BTreeSet::new(),
                quorum_cups: BTreeSet::new(),
                violations: Vec::new(),
            },
            digest: Sha256::new(),
            messages: 0,
            latency_ns,
            loss,
            duplicate,
            partition: None,
            fault_phase_end,
            genesis,
            orch,
            block_times: BTreeMap::new(),
            sync: state::SyncStats::default(),
            machines: (0..n)
                .map(|_| machines::Machine::new(package_a.clone()))
                .collect(),
            strand: Default::default(),
        };
        sim.draw_clocks();
        if sim.cfg.faults {
            sim.schedule_faults();
        }
        for i in 0..n {
            let base = sim.genesis.clone();
            sim.ensure_state(i as NodeIndex, base.height, base.state_hash);
            sim.start_node(i as NodeIndex, base, sim.version_a.clone());
            let first = sim.rng.random_range(0..ORCHESTRATOR_TICK_NS);
            sim.push(
                first,
                SimEvent::OrchestratorTick {
                    node: i as NodeIndex,
                },
            );
        }
        sim
    }

    /// Every node's clocks: good ones everywhere, and wrong ones (a day off) on as many
    /// honest nodes as the fault budget leaves, and on some Byzantine ones.
    fn draw_clocks(&mut self) {
        if !self.cfg.clock_faults {
            return;
        }
        let n = self.cfg.nodes;
        let end = self.fault_phase_end;
        let budget = max_faulty(n).saturating_sub(self.cfg.faulty);
        let mut honest: Vec<usize> = (0..n).filter(|i| self.is_honest(*i)).collect();
        honest.shuffle(&mut self.rng);
        let wrong = self.rng.random_range(0..=budget.min(honest.len()));
        for i in 0..n {
            let is_wrong = if self.is_honest(i) {
                honest[..wrong].contains(&i)
            } else {
                self.rng.random_bool(0.5)
            };
            self.nodes[i].clock = if is_wrong {
                Clock::wrong(&mut self.rng, end)
            } else {
                Clock::good(&mut self.rng, end)
            };
        }
    }

    /// What node `i`'s clocks read now.
    fn clock_of(&self, i: NodeIndex) -> Now {
        let c = &self.nodes[i as usize].clock;
        Now {
            mono_ns: c.mono(self.now),
            wall_ns: c.wall(self.now),
        }
    }

    /// The true time at which node `i`'s deadline `at` (on its monotonic clock) comes.
    fn deadline_of(&self, i: NodeIndex, at: u64) -> u64 {
        self.nodes[i as usize]
            .clock
            .mono_reaches(at)
            .max(self.now + 1)
    }

    fn schedule_faults(&mut self) {
        let n = self.cfg.nodes;
        let end = self.fault_phase_end;
        if self.rng.random_bool(0.5) {
            let start = self.rng.random_range(0..end / 2);
            let side: Vec<bool> = (0..n).map(|_| self.rng.random_bool(0.5)).collect();
            self.push(start, SimEvent::Partition { side });
            self.push(end, SimEvent::Heal);
        }
        if self.rng.random_bool(0.5) {
            let honest: Vec<usize> = (0..n)
                .filter(|i| self.nodes[*i].byzantine.is_none())
                .collect();
            if let Some(&node) = honest.choose(&mut self.rng) {
                let at = self.rng.random_range(0..end);
                let back = (at + self.rng.random_range(SEC..5 * SEC)).min(end);
                self.push(
                    at,
                    SimEvent::Crash {
                        node: node as NodeIndex,
                    },
                );
                self.push(
                    back.max(at + 1),
                    SimEvent::Restart {
                        node: node as NodeIndex,
                    },
                );
            }
        }
    }

    fn push(&mut self, at: u64, e: SimEvent) {
        self.seq += 1;
        self.queue.insert((at, self.seq), e);
    }

    fn log(&mut self, parts: &[&[u8]]) {
        for p in parts {
            self.digest.update((p.len() as u64).to_be_bytes());
            self.digest.update(p);
        }
    }

    fn is_honest(&self, i: usize) -> bool {
        self.nodes[i].byzantine.is_none()
    }

    fn crypto_for(&self, i: NodeIndex) -> Box<dyn ConsensusCrypto> {
        match &self.keys {
            KeyMaterial::Real { keys, secrets } => {
                let (e, b, l, h) = &secrets[i as usize];
                Box::new(memo_crypto::MemoCrypto::new(
                    RealCrypto {
                        keys: keys.clone(),
                        secrets: NodeSecrets {
                            ed25519: Ed25519KeyPair::from_seed(&e.seed()),
                            bls: b.clone(),
                            low_share: l.clone(),
                            high_share: h.clone(),
                            encryption: None,
                        },
                        hashes: self.crypto_memo.hashes(),
                    },
                    self.crypto_memo.clone(),
                ))
            }
            KeyMaterial::StandIn { key_seed } => Box::new(SimStandInCrypto {
                me: i,
                n: self.cfg.nodes,
                low_threshold: low_threshold(self.cfg.nodes),
                high_threshold: high_threshold(self.cfg.nodes),
                key_seed: *key_seed,
            }),
        }
    }

    /// (Re)starts node `i` at `version` from `base`, with what it persisted.
    fn start_node(&mut self, i: NodeIndex, base: Base, version: ReplicaVersion) {
        let cfg = Config {
            subnet_id: self.subnet,
            me: i,
            n: self.cfg.nodes,
            version: version.clone(),
            dkg_interval_length: self.cfg.dkg_interval_length,
            unit_delay_ns: 200 * MS,
            initial_notary_delay_ns: 100 * MS,
            min_round_ns: 25 * MS,
            busy_payload_bytes: 64,
            resend_interval_ns: SEC,
            max_payload_bytes: 1024,
            max_block_time_skew_ns: BLOCK_TIME_SKEW_NS,
            broken_rule: self.cfg.broken_rule,
            committee: None,
        };
        self.check_not_recalled(i, &version);
        let crypto = self.crypto_for(i);
        let node = &mut self.nodes[i as usize];
        node.disk
            .persisted
            .retain(|e| e.artifact.height() > base.height);
        let restored: Vec<Envelope> = node.disk.persisted.clone();
        node.version = version.clone();
        node.last_delivered = Some(base.height);
        node.starts.push((version.clone(), base.height));
        let now = Now {
            mono_ns: node.clock.mono(self.now),
            wall_ns: node.clock.wall(self.now),
        };
        let core = Consensus::new(cfg, crypto, base, node.registry.clone(), restored, now)
            .expect("the simulator's consensus config is valid");
        node.core = Some(core);
        node.generation += 1;
        self.log(&[b"start", &i.to_be_bytes(), version.as_str().as_bytes()]);
        self.after_event(i);
    }

    fn send(&mut self, from: NodeIndex, to: NodeIndex, envelope: Envelope) {
        if let Some(side) = &self.partition
            && side[from as usize] != side[to as usize]
        {
            return;
        }
        if self.rng.random_bool(self.loss) {
            return;
        }
        let copies = if self.rng.random_bool(self.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.random_range(self.latency_ns.0..=self.latency_ns.1);
            self.messages += 1;
            self.push(
                self.now + delay,
                SimEvent::Deliver {
                    to,
                    from,
                    envelope: envelope.clone(),
                },
            );
        }
    }

    /// Drains node `i`'s actions, performing each, then re-arms its timer.
    fn after_event(&mut self, i: NodeIndex) {
        // State hashes fed back make more actions (certification): drain until quiet.
        for _ in 0..1000 {
            let now = self.clock_of(i);
            let computed = self.drain(i);
            if computed.is_empty() {
                break;
            }
            for (height, state_hash) in computed {
                if let Some(c) = self.nodes[i as usize].core.as_mut() {
                    c.on_event(now, Event::StateComputed { height, state_hash });
                }
            }
        }
        if self.is_honest(i as usize)
            && let Some(c) = self.nodes[i as usize].core.as_ref()
            && c.stats().conflicting_finalizations > 0
        {
            self.checker.violation(format!(
                "node {i} saw a finalized block off its own finalized chain"
            ));
        }
        if let Some(t) = self.nodes[i as usize]
            .core
            .as_ref()
            .and_then(|c| c.poll_timeout())
        {
            let node = &mut self.nodes[i as usize];
            node.generation += 1;
            let generation = node.generation;
            let at = self.deadline_of(i, t);
            self.push(
                at,
                SimEvent::Timer {
                    node: i,
                    generation,
                },
            );
        }
    }

    /// Performs node `i`'s pending actions; returns the states it computed.
    fn drain(&mut self, i: NodeIndex) -> Vec<(Height, CryptoHash)> {
        let mut computed: Vec<(Height, CryptoHash)> = Vec::new();
        let now = self.clock_of(i);
        while let Some(action) = self.nodes[i as usize]
            .core
            .as_mut()
            .and_then(|c| c.poll_action())
        {
            match action {
                Action::Broadcast(e) => self.outgoing(i, None, e),
                Action::SendTo(t, e) => self.outgoing(i, Some(t), e),
                Action::Persist(e) => self.nodes[i as usize].disk.persisted.push(e),
                // A driver offers a payload without what that block carries; the
                // simulated payloads are unique, so the same one again will do.
                Action::BlockPayload { .. } => {
                    let node = &mut self.nodes[i as usize];
                    let payload = sim_payload(i, node.payload_counter);
                    if let Some(c) = node.core.as_mut() {
                        c.on_event(now, Event::Payload(payload));
                    }
                }
                Action::Deliver(d) => {
                    let node = &mut self.nodes[i as usize];
                    let prev = Height::new(d.height.get() - 1);
                    let Some(prev_state) = node.disk.states.get(&prev).cloned() else {
                        self.checker.violation(format!(
                            "node {i} delivered height {} without the state at {prev}",
                            d.height
                        ));
                        continue;
                    };
                    let after = state::execute(&prev_state, d.height, &d.block.payload);
                    let state = after.state_hash();
                    if self.is_honest(i as usize) {
                        self.check_state(i, &after);
                    }
                    let every = self.cfg.dkg_interval_length + 1;
                    let node = &mut self.nodes[i as usize];
                    node.disk.keep_state(std::rc::Rc::new(after), every);
                    if node
                        .last_delivered
                        .is_some_and(|l| d.height != l.increment())
                    {
                        let l = node.last_delivered;
                        self.checker.violation(format!(
                            "node {i} delivered height {} after {l:?}: not a prefix",
                            d.height
                        ));
                    }
                    node.last_delivered = Some(d.height);
                    node.payload_counter += 1;
                    let payload = sim_payload(i, node.payload_counter);
                    if let Some(c) = node.core.as_mut() {
                        c.on_event(now, Event::Payload(payload));
                    }
                    computed.push((d.height, state));
                    if self.is_honest(i as usize) {
                        self.check_block_time(i, d.height, d.block.context.time_ns);
                        match self.checker.finalized.get(&d.height) {
                            Some((h, other)) if *h != d.block_hash => {
                                let msg = format!(
                                    "nodes {other} and {i} finalized different blocks at height {}",
                                    d.height
                                );
                                self.checker.violation(msg);
                            }
                            Some(_) => {}
                            None => {
                                self.checker.finalized.insert(d.height, (d.block_hash, i));
                            }
                        }
                    }
                    self.log(&[
                        b"deliver",
                        &i.to_be_bytes(),
                        &d.height.get().to_be_bytes(),
                        &d.block_hash.0,
                    ]);
                    self.maybe_publish_upgrade();
                }
                Action::Certified {
                    height, state_hash, ..
                } => {
                    if self.is_honest(i as usize) {
                        match self.checker.certified.get(&height) {
                            Some(h) if *h != state_hash => self.checker.violation(format!(
                                "certified state hashes differ at height {height}"
                            )),
                            Some(_) => {}
                            None => {
                                self.checker.certified.insert(height, state_hash);
                            }
                        }
                    }
                }
                Action::CupReady { content, signature } => {
                    self.record_cup_ready(i, &content, &signature);
                    let h = CryptoHash::sha256(&content.encode());
                    match self.checker.cups.get(&content.height) {
                        Some(x) if *x != h => self
                            .checker
                            .violation(format!("two different CUPs at height {}", content.height)),
                        _ => {
                            self.checker.cups.insert(content.height, h);
                        }
                    }
                    self.nodes[i as usize]
                        .disk
                        .keep_higher_cup(content, signature);
                }
                Action::Halted { cup_height } => {
                    self.nodes[i as usize].halted_at = Some(cup_height);
                    if self.is_honest(i as usize) {
                        self.checker.halts.insert(i, cup_height);
                    }
                    // Any core's halt is the protocol's (behaviours only rewrite what a
                    // node sends), and honest nodes may switch on a peer's CUP first.
                    self.checker.any_halts.insert(cup_height);
                    self.log(&[b"halted", &i.to_be_bytes(), &cup_height.get().to_be_bytes()]);
                    self.maybe_strand(cup_height);
                    // The orchestrator notices the CUP and switches the release.
                    let delay = self.rng.random_range(100 * MS..1000 * MS);
                    self.push(self.now + delay, SimEvent::Switch { node: i });
                }
                Action::CatchUp { content, signature } => {
                    self.nodes[i as usize]
                        .disk
                        .keep_higher_cup(content, signature);
                    self.push(self.now + 10 * MS, SimEvent::Restart { node: i });
                }
            }
        }
        computed
    }

    /// Governance deploys release B once the subnet reaches the configured height.
    fn maybe_publish_upgrade(&mut self) {
        let Some(at) = self.cfg.upgrade_at else {
            return;
        };
        if self.upgrade_published
            || self
                .checker
                .finalized
                .keys()
                .next_back()
                .is_none_or(|h| h.get() < at)
        {
            return;
        }
        self.upgrade_published = true;
        let version = self.orch.publish_release(&self.subnet, &self.version_b);
        self.publish_registry(version, self.version_b.clone());
    }

    /// (Re)starts node `i` where its orchestrator decides (`orchestration.rs`); if it
    /// cannot decide yet, the orchestrator's next tick tries again.
    fn restart_from_best(&mut self, i: NodeIndex) {
        let Some((base, version)) = self.orchestrator_choice(i) else {
            return;
        };
        if self.crashes_at_start(i, &version) {
            return;
        }
        // The state at the CUP height: its own, or synced from its peers.
        if !self.ensure_state(i, base.height, base.state_hash) {
            self.push(self.now + SEC, SimEvent::Restart { node: i });
            return;
        }
        self.nodes[i as usize].registry = self.published.clone();
        self.start_node(i, base, version);
    }

    fn handle(&mut self, e: SimEvent) {
        match e {
            SimEvent::Deliver { to, from, envelope } => {
                let now = self.clock_of(to);
                if let Some(c) = self.nodes[to as usize].core.as_mut() {
                    c.on_event(now, Event::Message { from, envelope });
                    self.after_event(to);
                }
            }
            SimEvent::Timer { node, generation } => {
                let now = self.clock_of(node);
                if self.nodes[node as usize].generation == generation
                    && let Some(c) = self.nodes[node as usize].core.as_mut()
                {
                    c.on_event(now, Event::Timer);
                    self.after_event(node);
                }
            }
            SimEvent::Registry {
                node,
                version,
                info,
            } => {
                self.orch.replicate(node, version);
                self.nodes[node as usize]
                    .registry
                    .push((version, info.clone()));
                let now = self.clock_of(node);
                if let Some(c) = self.nodes[node as usize].core.as_mut() {
                    c.on_event(now, Event::Registry { version, info });
                    self.after_event(node);
                }
            }
            SimEvent::Crash { node } => {
                self.nodes[node as usize].core = None;
                self.log(&[b"crash", &node.to_be_bytes()]);
            }
            SimEvent::Restart { node } => self.restart_from_best(node),
            // The orchestrator sees the replica halted at a CUP naming another release.
            SimEvent::Switch { node } => self.restart_from_best(node),
            SimEvent::OrchestratorTick { node } => {
                self.push(
                    self.now + ORCHESTRATOR_TICK_NS,
                    SimEvent::OrchestratorTick { node },
                );
                self.orchestrator_tick(node);
            }
            SimEvent::Recover { height } => self.recover(height),
            SimEvent::Partition { side } => self.partition = Some(side),
            SimEvent::Heal => self.partition = None,
        }
    }
}

/// The payload node `i` offers after its `counter`-th delivery: unique bytes, except that
/// one offer in four is empty (no users at the moment), so rank-0 makers also hold empty
/// blocks back and rounds run at both paces.
fn sim_payload(i: NodeIndex, counter: u64) -> Vec<u8> {
    if counter % 4 == 3 {
        return Vec::new();
    }
    format!("tx-{i}-{counter}").into_bytes()
}

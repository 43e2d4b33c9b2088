//! Scripted tests of the core: a handful of events in, the expected actions out. A small
//! harness runs a few real cores (real ed25519 and BLS keys from a seeded dealer) and
//! carries every broadcast to every other core until the network is quiet; each test
//! sets the clocks it needs.

// Test code: a failed expectation is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::crypto::{NodeSecrets, RealCrypto, SubnetKeys};
use ::crypto::{
    bls::BlsSecretKey,
    ed25519::Ed25519KeyPair,
    threshold::{deal, high_threshold, low_threshold},
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

mod membership;
mod participation;
mod readiness;
mod restart;
mod shares;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
/// A Unix time in 2026: wall clocks read something like this.
const WALL: u64 = 1_780_000_000 * SEC;
const DAY: u64 = 24 * 3600 * SEC;

fn version() -> ReplicaVersion {
    ReplicaVersion::new("1.0.0").unwrap()
}

fn config(me: NodeIndex, n: usize) -> Config {
    Config {
        subnet_id: SubnetId([7; 32]),
        me,
        n,
        version: version(),
        dkg_interval_length: 9,
        unit_delay_ns: 200 * MS,
        initial_notary_delay_ns: 100 * MS,
        min_round_ns: 100 * MS,
        busy_payload_bytes: 1024,
        resend_interval_ns: SEC,
        max_payload_bytes: 1024,
        max_block_time_skew_ns: SEC,
        broken_rule: None,
        committee: None,
    }
}

fn genesis() -> Base {
    Base {
        height: Height::ZERO,
        block_hash: CryptoHash([1; 32]),
        time_ns: WALL - SEC,
        registry_version: RegistryVersion::new(1),
        random_beacon: vec![2; 32],
        state_hash: CryptoHash([3; 32]),
        next_version: None,
        committee: None,
    }
}

fn registry() -> Vec<(RegistryVersion, SubnetInfo)> {
    vec![(
        RegistryVersion::new(1),
        SubnetInfo {
            replica_version: version(),
            halt_at_cup_height: false,
            is_halted: false,
            members: Vec::new(),
        },
    )]
}

/// `n` cores, each with its own clocks, and everything they emitted.
struct Net {
    cores: Vec<Consensus<RealCrypto>>,
    clocks: Vec<Now>,
    /// Every action each core emitted, in order.
    log: Vec<Vec<Action>>,
    /// Nodes cut off from the network: nothing reaches them, nothing of theirs arrives.
    cut: Vec<bool>,
    /// Nodes whose shares go out with another node's signature (a Byzantine member
    /// signing in its own name, badly).
    bad_shares: Vec<bool>,
    /// Whether users keep the pools non-empty ([`Net::new`]) or not ([`Net::idle`]).
    loaded: bool,
    /// Payloads offered so far (each one unique).
    offered: u64,
    /// Whether cores hear back a state hash for every block they deliver (so they
    /// certify and make CUPs).
    executes: bool,
    /// A rewrite of what node `i` sends (a Byzantine node); `None` drops it.
    tamper: Vec<Option<Tamper>>,
}

/// Rewrites a Byzantine node's outgoing artifact, or drops it (`None`).
type Tamper = fn(&Consensus<RealCrypto>, Artifact) -> Option<Artifact>;

/// Node `i`'s id in the test committees.
fn node_id(i: usize) -> NodeId {
    NodeId([i as u8 + 1; 32])
}

/// Node `i`'s dealing encryption key.
fn encryption_key(i: usize) -> ::crypto::reshare::EncryptionSecretKey {
    ::crypto::reshare::EncryptionSecretKey::from_bytes([i as u8 + 101; 32])
}

impl Net {
    /// A subnet whose users keep every node's pool non-empty: each core has a payload on
    /// offer, and a fresh one as soon as a block takes it, so every rank-0 maker proposes
    /// at its round's start.
    fn new(n: usize, walls: &[u64]) -> Self {
        let mut net = Self::idle(n, walls);
        net.loaded = true;
        for i in 0..n {
            net.offer_payload(i);
        }
        net
    }

    /// A subnet with no users: payloads are empty, so rank-0 makers hold their blocks back
    /// until the initial notary delay.
    fn idle(n: usize, walls: &[u64]) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(42);
        let low = deal(n, low_threshold(n), &mut rng).unwrap();
        let high = deal(n, high_threshold(n), &mut rng).unwrap();
        let eds: Vec<Ed25519KeyPair> = (0..n).map(|_| Ed25519KeyPair::generate(&mut rng)).collect();
        let bls: Vec<BlsSecretKey> = (0..n).map(|_| BlsSecretKey::generate(&mut rng)).collect();
        let keys = SubnetKeys {
            ed25519: eds.iter().map(|k| k.public_key()).collect(),
            bls: bls.iter().map(|k| k.public_key()).collect(),
            low: low.public.clone(),
            high: high.public.clone(),
        };
        let clocks: Vec<Now> = walls
            .iter()
            .map(|w| Now {
                mono_ns: SEC,
                wall_ns: *w,
            })
            .collect();
        let committee = crate::resharing::Committee {
            nodes: (0..n).map(node_id).collect(),
            low: low.public.clone(),
            high: high.public.clone(),
        };
        let cores = (0..n)
            .map(|i| {
                let crypto = RealCrypto {
                    keys: keys.clone(),
                    secrets: NodeSecrets {
                        ed25519: Ed25519KeyPair::from_seed(&eds[i].seed()),
                        bls: bls[i].clone(),
                        low_share: low.shares[i].clone(),
                        high_share: high.shares[i].clone(),
                        encryption: Some(encryption_key(i)),
                    },
                    hashes: Default::default(),
                };
                Consensus::new(
                    Config {
                        committee: Some(committee.clone()),
                        ..config(i as NodeIndex, n)
                    },
                    crypto,
                    genesis(),
                    registry(),
                    Vec::new(),
                    clocks[i],
                )
                .unwrap()
            })
            .collect();
        Self::of(cores, clocks)
    }

    /// A network of the given cores, idle.
    fn of(cores: Vec<Consensus<RealCrypto>>, clocks: Vec<Now>) -> Self {
        let n = cores.len();
        Self {
            cores,
            clocks,
            log: vec![Vec::new(); n],
            cut: vec![false; n],
            bad_shares: vec![false; n],
            loaded: false,
            offered: 0,
            executes: false,
            tamper: vec![None; n],
        }
    }

    /// Offers core `i` a payload no block has carried yet.
    fn offer_payload(&mut self, i: usize) {
        self.offered += 1;
        let payload = format!("updates-{}", self.offered).into_bytes();
        let now = self.clocks[i];
        self.cores[i].on_event(now, Event::Payload(payload));
    }

    /// Carries every message until no core has anything left to say.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut quiet = true;
            for i in 0..self.cores.len() {
                while let Some(a) = self.cores[i].poll_action() {
                    quiet = false;
                    self.log[i].push(a.clone());
                    if self.loaded && matches!(a, Action::BlockPayload { .. }) {
                        self.offer_payload(i);
                    }
                    if let (true, Action::Deliver(d)) = (self.executes, &a) {
                        let state_hash =
                            CryptoHash::of(domain::STATE_HASH, &d.height.get().to_be_bytes());
                        let now = self.clocks[i];
                        self.cores[i].on_event(
                            now,
                            Event::StateComputed {
                                height: d.height,
                                state_hash,
                            },
                        );
                    }
                    let a = match (self.tamper[i], a) {
                        (Some(t), Action::Broadcast(e)) => match t(&self.cores[i], e.artifact) {
                            Some(artifact) => Action::Broadcast(Envelope { artifact, ..e }),
                            None => continue,
                        },
                        (_, a) => a,
                    };
                    let sends: Vec<(usize, Envelope)> = match a {
                        Action::Broadcast(e) => (0..self.cores.len())
                            .filter(|j| *j != i)
                            .map(|j| (j, e.clone()))
                            .collect(),
                        Action::SendTo(t, e) => vec![(t as usize, e)],
                        _ => Vec::new(),
                    };
                    for (j, mut envelope) in sends {
                        if self.cut[i] || self.cut[j] {
                            continue;
                        }
                        if self.bad_shares[i] {
                            shares::spoil(&mut envelope.artifact);
                        }
                        let now = self.clocks[j];
                        self.cores[j].on_event(
                            now,
                            Event::Message {
                                from: i as NodeIndex,
                                envelope,
                            },
                        );
                    }
                }
            }
            if quiet {
                return;
            }
        }
        panic!("the network never went quiet");
    }

    /// Hands core `to` an artifact from `from` at `now`.
    fn deliver(&mut self, to: usize, from: NodeIndex, now: Now, artifact: Artifact) {
        let envelope = Envelope {
            version: version(),
            artifact,
        };
        self.cores[to].on_event(now, Event::Message { from, envelope });
    }

    /// Moves every clock on by `ns` and fires each core's timer.
    fn advance(&mut self, ns: u64) {
        for i in 0..self.cores.len() {
            self.clocks[i].mono_ns += ns;
            self.clocks[i].wall_ns = self.clocks[i].wall_ns.saturating_add(ns);
            let now = self.clocks[i];
            self.cores[i].on_event(now, Event::Timer);
        }
        self.settle();
    }

    /// The node of rank `r` at height 1.
    fn rank(&self, r: u32) -> usize {
        (0..self.cores.len())
            .find(|i| self.cores[0].rank_of(Height::new(1), *i as NodeIndex) == Some(r))
            .unwrap()
    }

    /// Heights node `i` sent a notarization share for, with the block's maker.
    fn notarized_makers(&self, i: usize) -> Vec<(u64, NodeIndex)> {
        self.log[i]
            .iter()
            .filter_map(|a| match a {
                Action::Broadcast(Envelope {
                    artifact: Artifact::NotarizationShare(s),
                    ..
                }) => {
                    let pool = self.cores[i].pool.get(&s.height)?;
                    let maker = pool.blocks.get(&s.hash)?.proposal.block.maker;
                    Some((s.height.get(), maker))
                }
                _ => None,
            })
            .collect()
    }

    fn proposals_of(&self, i: usize) -> Vec<Block> {
        self.log[i]
            .iter()
            .filter_map(|a| match a {
                Action::Broadcast(Envelope {
                    artifact: Artifact::Proposal(p),
                    ..
                }) => Some(p.block.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_fresh_core_persists_its_beacon_share_and_then_broadcasts_it() {
    let mut net = Net::new(4, &[WALL; 4]);
    let first: Vec<Action> = std::iter::from_fn(|| net.cores[0].poll_action()).collect();
    assert!(
        matches!(
            first.as_slice(),
            [Action::Persist(p), Action::Broadcast(b)]
                if p == b && matches!(b.artifact, Artifact::BeaconShare(ref s) if s.height == Height::new(1))
        ),
        "{first:?}"
    );
}

#[test]
fn the_rank_zero_maker_proposes_at_its_wall_clock_and_everyone_notarizes_it() {
    let mut net = Net::new(4, &[WALL; 4]);
    net.settle();
    let maker = net.rank(0);
    let blocks = net.proposals_of(maker);
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(blocks[0].context.time_ns, WALL);
    // Its proposal was persisted before it was broadcast.
    let persist = net.log[maker].iter().position(
        |a| matches!(a, Action::Persist(e) if matches!(e.artifact, Artifact::Proposal(_))),
    );
    let broadcast = net.log[maker].iter().position(
        |a| matches!(a, Action::Broadcast(e) if matches!(e.artifact, Artifact::Proposal(_))),
    );
    assert!(persist.unwrap() < broadcast.unwrap());
    net.advance(150 * MS);
    for i in 0..4 {
        assert!(
            net.notarized_makers(i).contains(&(1, maker as NodeIndex)),
            "node {i}: {:?}",
            net.notarized_makers(i)
        );
    }
    assert!(
        net.cores
            .iter()
            .all(|c| c.finalized_height() >= Height::new(1))
    );
}

#[test]
fn a_rank_zero_block_with_a_payload_waits_only_the_minimum_round_and_an_empty_one_is_held() {
    let quick = |net: &mut Net| {
        for c in &mut net.cores {
            c.cfg.min_round_ns = 25 * MS;
        }
    };
    let at = |net: &Net, h: u64| {
        net.cores
            .iter()
            .filter(|c| c.finalized_height() >= Height::new(h))
            .count()
    };
    // Users waiting: the rank-0 block is notarized the minimum round after the start.
    let mut net = Net::new(4, &[WALL; 4]);
    quick(&mut net);
    net.settle();
    let maker = net.rank(0);
    assert_eq!(net.proposals_of(maker).len(), 1);
    net.advance(24 * MS);
    assert_eq!(at(&net, 1), 0, "notarized before the minimum round");
    net.advance(MS);
    assert_eq!(at(&net, 1), 4, "not notarized at the minimum round");
    // A busy subnet (a full parent) waits the whole initial notary delay again.
    for c in &mut net.cores {
        c.cfg.busy_payload_bytes = 9; // "updates-N"
    }
    net.advance(99 * MS);
    assert_eq!(at(&net, 2), 0, "a round after a full block went fast");
    net.advance(MS);
    assert_eq!(at(&net, 2), 4, "not notarized at the initial notary delay");

    // No users: the rank-0 maker holds its empty block back, and proposes the moment a
    // payload comes, which is notarized at once (the minimum round has passed).
    let mut net = Net::idle(4, &[WALL; 4]);
    quick(&mut net);
    net.settle();
    let maker = net.rank(0);
    net.advance(50 * MS);
    assert!(
        net.proposals_of(maker).is_empty(),
        "an empty block was not held"
    );
    net.offer_payload(maker);
    net.settle();
    let blocks = net.proposals_of(maker);
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(blocks[0].payload, b"updates-1");
    assert_eq!(at(&net, 1), 4, "a payload block waited longer than it must");

    // No users at all: the empty block comes at the initial notary delay, and is
    // notarized then, as before.
    let mut net = Net::idle(4, &[WALL; 4]);
    quick(&mut net);
    net.settle();
    let maker = net.rank(0);
    net.advance(99 * MS);
    assert!(net.proposals_of(maker).is_empty());
    assert_eq!(at(&net, 1), 0);
    net.advance(MS);
    let blocks = net.proposals_of(maker);
    assert!(
        blocks.len() == 1 && blocks[0].payload.is_empty(),
        "{blocks:?}"
    );
    assert_eq!(at(&net, 1), 4);
}

#[test]
fn a_maker_whose_clock_is_a_day_ahead_is_not_notarized_and_the_next_rank_takes_its_turn() {
    // Find the rank-0 maker at height 1 first, then set its clock a day ahead.
    // (The beacon, so the ranking, does not depend on the clocks.)
    let mut probe = Net::new(4, &[WALL; 4]);
    probe.settle();
    let fast = probe.rank(0);
    let mut walls = [WALL; 4];
    walls[fast] = WALL + DAY;
    let mut net = Net::new(4, &walls);
    net.settle();
    assert_eq!(net.proposals_of(fast)[0].context.time_ns, WALL + DAY);
    net.advance(150 * MS);
    for i in (0..4).filter(|i| *i != fast) {
        assert!(
            net.notarized_makers(i).is_empty(),
            "node {i} notarized a block from the future"
        );
        assert_eq!(
            net.cores[i].stats().last_not_yet,
            Some("block time ahead of this node's clock")
        );
    }
    // After one unit delay the rank-1 maker proposes, at the true time, and that block is
    // notarized and finalized by the three good clocks.
    net.advance(200 * MS);
    let second = net.rank(1);
    for i in (0..4).filter(|i| *i != fast) {
        assert!(net.notarized_makers(i).contains(&(1, second as NodeIndex)));
    }
    let good = (0..4).find(|i| *i != fast).unwrap();
    assert!(net.cores[good].finalized_height() >= Height::new(1));
    let finalized = net.cores[good].finalized_chain[&Height::new(1)];
    let block = &net.cores[good].pool[&Height::new(1)].blocks[&finalized];
    assert!(block.proposal.block.context.time_ns <= WALL + SEC);
    // The fast node follows: it holds the notarized block although its time is past.
    net.advance(SEC);
    assert!(net.cores[fast].finalized_height() >= Height::new(1));
}

#[test]
fn a_node_whose_clock_is_a_day_behind_follows_the_chain_through_notarizations() {
    let slow = 2;
    let mut walls = [WALL; 4];
    walls[slow] = WALL - DAY;
    let mut net = Net::new(4, &walls);
    net.settle();
    for _ in 0..20 {
        net.advance(100 * MS);
    }
    let honest = net.cores[0].finalized_height();
    assert!(honest >= Height::new(3), "the subnet stalled at {honest}");
    // The slow node notarizes nothing from its future, but finalizes what the others did.
    assert!(
        net.notarized_makers(slow)
            .iter()
            .all(|(_, m)| *m as usize == slow)
    );
    assert!(net.cores[slow].finalized_height().get() + 1 >= honest.get());
}

#[test]
fn a_wall_clock_that_steps_back_an_hour_stalls_no_deadline() {
    let mut net = Net::new(4, &[WALL; 4]);
    net.settle();
    let before = net.cores[1].poll_timeout().unwrap();
    // The wall clock of node 1 steps back an hour; the monotonic one moves on by 1 ms.
    net.clocks[1].wall_ns -= 3600 * SEC;
    net.clocks[1].mono_ns += MS;
    let now = net.clocks[1];
    net.cores[1].on_event(now, Event::Timer);
    assert_eq!(net.cores[1].poll_timeout().unwrap(), before);
    for _ in 0..10 {
        net.advance(100 * MS);
    }
    assert!(net.cores[1].finalized_height() >= Height::new(2));
}

#[test]
fn a_block_at_the_largest_time_is_refused_without_overflowing_anything() {
    let mut net = Net::new(4, &[WALL; 4]);
    net.settle();
    let maker = net.rank(0);
    let target = (maker + 1) % 4;
    let mut block = net.proposals_of(maker)[0].clone();
    block.context.time_ns = u64::MAX;
    let signature = net.cores[maker]
        .crypto()
        .sign_block(&signed_bytes(&version(), &block.hash()));
    let now = net.clocks[target];
    let proposal = Artifact::Proposal(BlockProposal { block, signature });
    net.deliver(target, maker as NodeIndex, now, proposal);
    assert_eq!(
        net.cores[target].stats().last_not_yet,
        Some("block time ahead of this node's clock")
    );
    // The wake-up for it is not a day away, let alone at the end of time.
    assert!(net.cores[target].poll_timeout().unwrap() < net.clocks[target].mono_ns + 10 * SEC);
    for _ in 0..5 {
        net.advance(100 * MS);
    }
    assert!(net.cores[target].finalized_height() >= Height::new(1));
}

#[test]
fn requests_for_heights_at_the_end_of_the_range_are_answered_without_overflow() {
    let mut net = Net::new(4, &[WALL; 4]);
    net.settle();
    for height in [
        Height::new(u64::MAX),
        Height::new(u64::MAX - 1),
        Height::ZERO,
    ] {
        let now = net.clocks[0];
        net.deliver(0, 1, now, Artifact::Request { height });
        net.clocks[0].mono_ns += SEC;
    }
    net.settle();
}

#[test]
fn a_config_that_cannot_work_is_refused_with_the_rule_it_breaks() {
    let check = |edit: fn(&mut Config), expected: &str| {
        let mut c = config(0, 4);
        edit(&mut c);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(expected), "{e:?} should name {expected:?}");
    };
    assert_eq!(config(3, 4).validate(), Ok(()));
    check(|c| c.n = 0, "n = 0");
    check(|c| c.me = 4, "index 4");
    check(|c| c.dkg_interval_length = 0, "dkg_interval_length");
    check(|c| c.unit_delay_ns = 0, "unit_delay_ns");
    check(
        |c| c.initial_notary_delay_ns = u64::MAX,
        "initial_notary_delay_ns",
    );
    check(|c| c.resend_interval_ns = 0, "resend_interval_ns");
    check(|c| c.max_block_time_skew_ns = 0, "max_block_time_skew_ns");
    check(|c| c.max_payload_bytes = 0, "max_payload_bytes");
}

#[test]
#[should_panic(expected = "actions were never polled")]
fn an_action_queue_that_is_never_polled_stops_the_core_instead_of_dropping_an_action() {
    let mut net = Net::new(4, &[WALL; 4]);
    for _ in 0..MAX_ACTIONS + 1 {
        net.cores[0].emit(Action::Halted {
            cup_height: Height::ZERO,
        });
    }
}

/// A node that saw a maker sign two blocks at one height notarizes neither; a maker of
/// the next rank that saw only one of them would wait for it for ever. So the node
/// passes on the evidence, both blocks, when it re-sends.
#[test]
fn a_node_that_sees_an_equivocation_passes_on_both_blocks() {
    let mut net = Net::new(4, &[WALL; 4]);
    net.settle();
    let maker = net.rank(0);
    let target = (maker + 1) % 4;
    let first = net.proposals_of(maker)[0].clone();
    let mut other = first.clone();
    other.context.time_ns += 1;
    let signature = net.cores[maker]
        .crypto()
        .sign_block(&signed_bytes(&version(), &other.hash()));
    let now = net.clocks[target];
    let proposal = Artifact::Proposal(BlockProposal {
        block: other.clone(),
        signature,
    });
    net.deliver(target, maker as NodeIndex, now, proposal);
    while net.cores[target].poll_action().is_some() {}
    let mut later = net.clocks[target];
    later.mono_ns += 2 * SEC;
    later.wall_ns += 2 * SEC;
    net.cores[target].on_event(later, Event::Timer);
    let mut resent = Vec::new();
    while let Some(a) = net.cores[target].poll_action() {
        if let Action::Broadcast(Envelope {
            artifact: Artifact::Proposal(p),
            ..
        }) = a
        {
            resent.push(p.block.hash());
        }
    }
    assert!(
        resent.contains(&first.hash()) && resent.contains(&other.hash()),
        "{resent:?}"
    );
}

/// A node catching up asks for the heights above its finalized one. At a height the
/// answering node finalized through a descendant (no finalization of its own there), the
/// block on the finalized chain need not be the lowest-ranked notarized one: the answer
/// must carry the chain's block, or the asking node can never link the finalizations
/// above to its own tip (found by the soak, n = 4, seeds 1169 and 3482: an equivocator's
/// block notarized beside the chain's, two honest nodes stuck for good).
#[test]
fn a_catch_up_answer_carries_the_finalized_chain_not_the_lowest_ranked_block() {
    let mut net = Net::new(4, &[WALL; 4]);
    net.settle();
    for _ in 0..20 {
        net.advance(150 * MS);
    }
    let h1 = Height::new(1);
    assert!(net.cores[0].finalized_height() >= Height::new(2));
    let chain = net.cores[0].finalized_chain[&h1];
    // Another notarized block at height 1 that ranks before the chain's (same rank, a
    // smaller hash), and no finalization at height 1 itself.
    let pool = net.cores[0].pool.get_mut(&h1).unwrap();
    pool.finalization = None;
    let real = pool.blocks[&chain].clone();
    let mut other = real.clone();
    while other.proposal.block.hash() >= chain {
        other.proposal.block.context.time_ns += 1;
    }
    let hash = other.proposal.block.hash();
    let mut notarization = pool.notarizations[&chain].clone();
    notarization.hash = hash;
    pool.blocks.insert(hash, other);
    pool.notarizations.insert(hash, notarization);
    assert_eq!(
        net.cores[0]
            .notarized_block(&net.cores[0].pool[&h1])
            .unwrap()
            .0,
        hash
    );

    let mut now = net.clocks[0];
    now.mono_ns += 10 * SEC;
    net.deliver(0, 1, now, Artifact::Request { height: h1 });
    let mut sent = Vec::new();
    while let Some(a) = net.cores[0].poll_action() {
        if let Action::SendTo(1, e) = a
            && let Artifact::Proposal(p) = e.artifact
            && p.block.height == h1
        {
            sent.push(p.block.hash());
        }
    }
    assert_eq!(sent, vec![chain], "the block at height 1 answered");
}

/// A node that was cut off gets, for two heights, only the blocks and the finalization
/// of the higher one (as a catch-up answer may carry them: the answering node finalized
/// through a descendant and holds no notarization of the lower block). The finalized
/// block's own finalization shows that n - f nodes found its parent notarized, so the
/// node takes it and finalizes both (found by the soak, n = 4, seed 1169).
#[test]
fn a_finalized_block_is_taken_without_its_parents_notarization() {
    let mut net = Net::new(4, &[WALL; 4]);
    net.cut[3] = true;
    net.settle();
    for _ in 0..20 {
        net.advance(150 * MS);
    }
    let h2 = Height::new(2);
    assert!(net.cores[0].finalized_height() >= h2);
    assert_eq!(net.cores[3].finalized_height(), Height::ZERO);
    let mut give = Vec::new();
    for h in [1, 2].map(Height::new) {
        let c = &net.cores[0];
        let pool = &c.pool[&h];
        give.push(Artifact::Beacon(ThresholdSigned {
            height: h,
            value: c.beacon_at(Height::new(h.get() - 1)).unwrap().clone(),
            signature: pool.beacon.clone().unwrap(),
        }));
        let hash = c.finalized_chain[&h];
        give.push(Artifact::Proposal(pool.blocks[&hash].proposal.clone()));
    }
    let pool = &net.cores[0].pool[&h2];
    let finalization = match &pool.finalization {
        Some(f) => f.clone(),
        None => {
            // Finalized through a descendant: make the aggregate from the shares held.
            let hash = net.cores[0].finalized_chain[&h2];
            let shares = &pool.final_shares[&hash];
            Aggregate {
                height: h2,
                hash,
                signers: shares.keys().copied().collect(),
                signature: net.cores[0]
                    .crypto()
                    .aggregate_multi(&shares.values().map(Vec::as_slice).collect::<Vec<_>>())
                    .unwrap(),
            }
        }
    };
    give.push(Artifact::Finalization(finalization));
    for artifact in give {
        let now = net.clocks[3];
        net.deliver(3, 0, now, artifact);
    }
    assert_eq!(net.cores[3].finalized_height(), h2);
}

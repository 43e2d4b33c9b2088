//! The consensus core of one node: a pure state machine.
//!
//! Driving: [`Consensus::on_event`]`(now, event)` feeds an input; [`Consensus::poll_action`]
//! drains the outputs in order; [`Consensus::poll_timeout`] says when to call again with
//! [`Event::Timer`] if nothing else happens. No clock, no I/O, no randomness of its own.
//!
//! # The protocol (normative)
//!
//! Heights start after the *base*: the CUP the node started from (genesis, a regular CUP,
//! or the CUP of an upgrade). For each height `h` (a *round*):
//!
//! 1. **Random beacon.** `B_base` is the CUP's beacon. Once `B_{h-1}` is known and a block
//!    at `h - 1` is notarized (or `h - 1` is the base), each node sends a low-threshold
//!    (`f + 1`) share on `(version, h, B_{h-1})`; `f + 1` shares combine into `B_h`.
//! 2. **Round start.** Round `h` starts when `B_h` is known and `h - 1` has a notarized
//!    block (or is the base). `B_h` ranks the nodes (sorted by `H(B_h, h, index)`); ranks
//!    `0..=f` are block makers.
//! 3. **Proposal.** The rank-`r` maker proposes `unit_delay × r` after the round starts,
//!    unless it already saw a valid block of lower rank; the rank-0 maker of a running
//!    subnet's ordinary height holds an empty block back until `initial_notary_delay`
//!    (nobody would notarize it sooner) and proposes as soon as it has a payload. The block extends the
//!    lowest-ranked notarized block at `h - 1` (ties: the smallest hash), carries a context
//!    (time, the newest stable registry version at least the parent's, the certified
//!    height), a driver-supplied payload (empty in summary blocks and while halting), and
//!    the maker's ed25519 signature over `(version, hash)`. A maker that signs two blocks
//!    at one height is an equivocator: nobody notarizes its blocks at that height.
//! 4. **Notarization.** `initial_notary_delay + unit_delay × r` after the round starts
//!    (`min_round` for a rank-0 block with a payload, a summary, or on a halting chain), a
//!    node sends a notarization share (BLS multi-signature) for the lowest-rank valid block
//!    it has seen, never for a block of higher rank than one it already shared at `h`.
//!    `n - f` shares on one block make a notarization; any notarized block at `h` ends the
//!    round.
//! 5. **Finalization.** For each height in `(finalized, notarized]` with exactly one known
//!    notarized block `B`, a node that sent notarization shares for no block other than
//!    `B` at that height sends a finalization share for `B` (once). `n - f` shares finalize
//!    `B` and all its ancestors. Finalized blocks are delivered in order, each once.
//! 6. **Summaries.** Heights that are multiples of `dkg_interval_length + 1` hold summary
//!    blocks. A summary block pins its context's registry version for the interval it
//!    starts; [`crate::status`] decides from it whether this release keeps running there.
//! 7. **Certification.** The driver executes delivered blocks and reports each state hash;
//!    nodes send high-threshold (`n - f`) shares on `(version, h, state hash)`; `n - f`
//!    combine into a certification, which raises the certified height.
//! 8. **CUPs.** At a summary height `S`, once `S` is finalized and delivered and its state
//!    is certified, each node sends a high-threshold share on the CUP content; `n - f`
//!    combine into the CUP. A running node then purges everything below `S`.
//! 9. **Halting** (the upgrade). If the summary at `S` stops this release, blocks after `S`
//!    are empty and never delivered, no block reaches the next summary height, and once
//!    the CUP for `S` exists the node is halted: it proposes and signs nothing more. The
//!    CUP at `S` does not wait for a finalized block whose context certifies `S`.
//! 10. **Bounds.** No notarization (or proposal) more than `MAX_CERTIFICATION_GAP` heights
//!     above the certified height or `MAX_CUP_GAP` above the next CUP height; artifacts more
//!     than `MAX_AHEAD` heights above the finalized height are dropped; not-yet-valid
//!     artifacts wait in a bounded queue.
//! 11. **Versions.** Envelopes of another protocol version are dropped, and every
//!     signature binds the version.
//! 13. **Time.** A node reads two clocks ([`Now`]): its deadlines (round delays,
//!     re-sending, answering) run on the monotonic one, so a wall clock that steps back
//!     stalls nothing; block times come from the wall clock. A maker's block time is its
//!     wall clock, or just past the parent's time if that is later. A block whose time is
//!     more than `max_block_time_skew_ns` ahead of the validating node's wall clock is not
//!     valid *yet* (it waits, bounded, in the pending queue) unless the node already holds
//!     a notarization or finalization for it. So a block from the future is notarized only
//!     if `n - f` nodes' clocks have reached it: a Byzantine maker cannot move the chain's
//!     time (against which users' updates expire) ahead, and one node whose clock is a day
//!     fast only loses its turns as block maker. A node whose clock is further off than the
//!     skew bound counts against `f` for liveness (it notarizes nothing from the present);
//!     safety never depends on clocks.
//! 12. **Recovery.** Every `resend_interval` without progress a node re-sends its latest
//!     artifacts, and both blocks of every maker it caught equivocating (the evidence a
//!     next-rank maker that saw only one of them needs to take its turn); a node that
//!     sees artifacts far ahead asks for the missing heights, and is answered with
//!     the finalized chain's blocks up to the answerer's finalized height and every
//!     notarized block above it, with their notarizations and finalizations, or with a
//!     CUP if the height was purged, from which it resumes ([`Action::CatchUp`]). A
//!     block whose own notarization or finalization a node holds needs only its parent
//!     block, not the parent's notarization (n - f nodes checked that).

mod catch_up;
mod certification;
mod combine;
mod membership;
mod pool;
mod readiness;
mod rounds;
#[cfg(test)]
mod tests;
mod validation;

use combine::{Combined, Scheme};
pub use membership::MAX_RESHARING_ITEMS_PER_BLOCK;
use membership::{Interval, ResharingPool};
use pool::{HeightPool, Pin, Shares, ValidBlock};
use validation::Validity;

use crate::{
    artifact::*,
    crypto::{ConsensusCrypto, Threshold},
    resharing::Committee,
    status::{Resharing, Status, SubnetInfo, status},
};
use cup::{CupCommittee, CupContent, RandomBeacon};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use types::{CryptoHash, Height, NodeId, RegistryVersion, ReplicaVersion, SubnetId, domain};

/// No notarization more than this many heights above the certified height.
pub const MAX_CERTIFICATION_GAP: u64 = 70;
/// No notarization more than this many heights above the next CUP height.
pub const MAX_CUP_GAP: u64 = 70;
/// Artifacts more than this many heights above the finalized height are dropped.
pub const MAX_AHEAD: u64 = 200;
/// The most not-yet-valid artifacts kept for a later try.
pub const MAX_PENDING: usize = 4096;
/// The most heights sent in answer to one request.
pub const MAX_HEIGHTS_PER_ANSWER: u64 = 20;
/// The most actions waiting to be polled: a driver that never polls is a bug, and the
/// core stops (panics) rather than drop an action it promised, such as a persist.
pub const MAX_ACTIONS: usize = 100_000;

/// The two clocks a node reads, in nanoseconds: a monotonic one for its own deadlines
/// (it never steps), and the wall clock (Unix time) for block times, which other nodes
/// compare with theirs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    pub mono_ns: u64,
    pub wall_ns: u64,
}

/// A deliberately broken protocol rule, to show that the simulator's checkers catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokenRule {
    /// Send a finalization share for every notarized block, even after notarizing
    /// another block at the same height.
    FinalizeAfterNotarizingTwo,
    /// Accept a block whatever its time (no bound past this node's clock).
    IgnoreBlockTimes,
    /// Choose a resharing's dealers as if nobody had complained.
    IgnoreComplaints,
}

/// A configuration that cannot work, with the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("consensus config: {0}")]
    Invalid(String),
}

/// Static parameters of one node in one subnet at one version.
#[derive(Clone, Debug)]
pub struct Config {
    pub subnet_id: SubnetId,
    pub me: NodeIndex,
    pub n: usize,
    pub version: ReplicaVersion,
    pub dkg_interval_length: u64,
    pub unit_delay_ns: u64,
    pub initial_notary_delay_ns: u64,
    /// The shortest round with work in it: a rank-0 block that carries a payload, is a
    /// summary, or extends a halting chain is notarized this long after its round began
    /// instead of after the initial notary delay (users wait on it, and no block of a
    /// better rank can come). At most the initial notary delay; it bounds how fast a
    /// loaded subnet runs rounds, each of which costs every node a few BLS checks.
    pub min_round_ns: u64,
    /// How busy a subnet is, in payload bytes per block: a rank-0 block whose parent
    /// carried this much or more waits the whole initial notary delay even with a
    /// payload, and less waits proportionally less, down to `min_round_ns`. A loaded
    /// subnet so runs fewer, fuller rounds (its CPU goes to the updates, not to the
    /// rounds' signatures) and a lightly loaded one answers fast.
    pub busy_payload_bytes: usize,
    pub resend_interval_ns: u64,
    pub max_payload_bytes: usize,
    /// How far ahead of this node's wall clock a block's time may be (the clocks of
    /// honest nodes differ by less than this).
    pub max_block_time_skew_ns: u64,
    /// A deliberately broken rule, for the simulator's checker tests only (they show the
    /// checkers catch it). Never set outside those tests.
    pub broken_rule: Option<BrokenRule>,
    /// The committee running consensus (node `i` is `nodes[i]`) with its threshold
    /// public keys: from the base CUP's record, or the registry's key holders. `None`:
    /// the committee never changes (a resharing needs to know it).
    pub committee: Option<Committee>,
}

/// Above this, a delay is surely a unit mistake (an hour, in nanoseconds).
const MAX_DELAY_NS: u64 = 3600 * 1_000_000_000;

impl Config {
    /// Checks every rule the core relies on, naming the first one broken.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: String| Err(ConfigError::Invalid(why));
        if self.n == 0 || self.n > NodeIndex::MAX as usize {
            return bad(format!(
                "n = {} nodes: at least 1 and fits a node index",
                self.n
            ));
        }
        if self.me as usize >= self.n {
            return bad(format!(
                "this node's index {} is not below n = {}",
                self.me, self.n
            ));
        }
        if self.dkg_interval_length == 0 || self.dkg_interval_length > 1_000_000 {
            return bad(format!(
                "dkg_interval_length {} is not in 1..=1000000",
                self.dkg_interval_length
            ));
        }
        for (name, v) in [
            ("unit_delay_ns", self.unit_delay_ns),
            ("initial_notary_delay_ns", self.initial_notary_delay_ns),
            ("resend_interval_ns", self.resend_interval_ns),
            ("max_block_time_skew_ns", self.max_block_time_skew_ns),
        ] {
            if v == 0 || v > MAX_DELAY_NS {
                return bad(format!("{name} = {v} is not in 1..={MAX_DELAY_NS}"));
            }
        }
        if self.min_round_ns > self.initial_notary_delay_ns {
            return bad(format!(
                "min_round_ns = {} is above initial_notary_delay_ns = {}",
                self.min_round_ns, self.initial_notary_delay_ns
            ));
        }
        if self.busy_payload_bytes == 0 {
            return bad("busy_payload_bytes is 0".into());
        }
        if self.max_payload_bytes == 0 {
            return bad("max_payload_bytes is 0".into());
        }
        Ok(())
    }

    pub fn f(&self) -> usize {
        crypto::threshold::max_faulty(self.n)
    }
    fn quorum(&self) -> usize {
        self.n - self.f()
    }
    fn is_summary_height(&self, h: Height) -> bool {
        h.get().is_multiple_of(self.dkg_interval_length + 1)
    }
}

/// Where a node starts: the fields of a CUP consensus needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    pub height: Height,
    pub block_hash: CryptoHash,
    pub time_ns: u64,
    pub registry_version: RegistryVersion,
    pub random_beacon: Vec<u8>,
    pub state_hash: CryptoHash,
    /// The release that runs from this CUP, if the CUP names it
    /// ([`CupContent::next_replica_version`]).
    pub next_version: Option<ReplicaVersion>,
    /// The committee a resharing dealt the keys to, if one did
    /// ([`CupContent::committee`]): every CUP made from here carries it on.
    pub committee: Option<CupCommittee>,
}

impl Base {
    pub fn from_cup(c: &CupContent) -> Self {
        Self {
            height: c.height,
            block_hash: c.block_hash,
            time_ns: c.block_time_ns,
            registry_version: c.registry_version,
            random_beacon: c.random_beacon.0.clone(),
            state_hash: c.state_hash,
            next_version: c.next_replica_version.clone(),
            committee: c.committee.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An envelope from a peer.
    Message { from: NodeIndex, envelope: Envelope },
    /// A deadline from `poll_timeout` was reached.
    Timer,
    /// This node's orchestrator's word on the release the registry deploys: fetched,
    /// verified and rehearsed (`ready`), or not, and why. Repeating the same word is a
    /// no-op; a new one replaces it and is gossiped.
    Readiness {
        version: ReplicaVersion,
        ready: bool,
        reason: String,
    },
    /// A registry version that has been locally available long enough (stable).
    Registry {
        version: RegistryVersion,
        info: SubnetInfo,
    },
    /// The payload for the next block this node makes (replaces the previous one).
    Payload(Vec<u8>),
    /// The driver executed the delivered block at `height`.
    StateComputed {
        height: Height,
        state_hash: CryptoHash,
    },
    /// A resharing item from outside the committee (a joining receiver's complaint,
    /// through the API): checked like a peer's, pooled and gossiped.
    Resharing(crate::resharing::ResharingItem),
}

/// A finalized block handed to the driver for execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub height: Height,
    pub block_hash: CryptoHash,
    pub block: Block,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Broadcast(Envelope),
    SendTo(NodeIndex, Envelope),
    /// Write durably before the next action (own shares, so that a restarted node never
    /// signs against what it signed before the crash).
    Persist(Envelope),
    Deliver(Delivery),
    Certified {
        height: Height,
        state_hash: CryptoHash,
        signature: Vec<u8>,
    },
    CupReady {
        content: CupContent,
        signature: Vec<u8>,
    },
    /// The release stops here: the CUP at `cup_height` carries the subnet on.
    Halted {
        cup_height: Height,
    },
    /// A peer's CUP far ahead: fetch the state at its height and restart from it.
    CatchUp {
        content: CupContent,
        signature: Vec<u8>,
    },
    /// A valid block at `height` (not yet finalized) carries `payload`. A driver leaves
    /// what it carries out of the payloads it offers until `height` is delivered, so
    /// that the next block maker does not propose the same updates again.
    BlockPayload {
        height: Height,
        payload: Vec<u8>,
    },
}

/// Counters for the driver's metrics and the simulator's reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub invalid_artifacts: u64,
    pub dropped_wrong_version: u64,
    pub dropped_out_of_bounds: u64,
    pub pending_overflow: u64,
    pub critical_errors: u64,
    /// Finalizations seen for a block off this node's finalized chain: proof that more
    /// than `f` nodes signed conflicting blocks (a safety violation elsewhere).
    pub conflicting_finalizations: u64,
    /// Artifacts dropped unverified because inserting them would change nothing (a
    /// share already held, a share for an already aggregated block, a second aggregate).
    pub redundant_artifacts: u64,
    /// Persisted artifacts not restored at a start: made on a chain the base replaced.
    pub restored_from_another_chain: u64,
    /// Combinations of unchecked shares that did not verify, so that every share held
    /// was checked on its own (`combine`): a member sent a bad share in its own name.
    pub share_fallbacks: u64,
    /// Why the most recent artifact was rejected.
    pub last_invalid: Option<&'static str>,
    /// Why the most recent artifact had to wait.
    pub last_not_yet: Option<&'static str>,
    /// Resharings a summary could not start (a member without an encryption key, a
    /// committee that is not one) or this node could not deal in.
    pub resharings_refused: u64,
    /// Summaries that ended a resharing without enough qualified dealings (it starts
    /// again there).
    pub resharings_failed: u64,
    pub last_resharing_failure: Option<String>,
}

pub struct Consensus<C: ConsensusCrypto> {
    cfg: Config,
    crypto: C,
    base: Base,
    pool: BTreeMap<Height, HeightPool>,
    registry: BTreeMap<RegistryVersion, SubnetInfo>,
    finalized: Height,
    finalized_hash: CryptoHash,
    delivered: Height,
    certified: Height,
    state_hashes: BTreeMap<Height, CryptoHash>,
    /// The finalized chain above the base (finalization of a block finalizes its
    /// ancestors, which may have no finalization of their own).
    finalized_chain: BTreeMap<Height, CryptoHash>,
    /// The summary height where this release stops, once a finalized summary says so.
    halt_at: Option<Height>,
    halted: bool,
    last_cup: Height,
    payload: Vec<u8>,
    /// A block payload was reported (`Action::BlockPayload`) since the driver last
    /// offered one: `payload` may repeat what that block carries, so no block is made
    /// with it until the driver offers a fresh one.
    payload_stale: bool,
    pending: VecDeque<(NodeIndex, Artifact)>,
    /// Something that can make a pending artifact valid happened since the last retry.
    pending_dirty: bool,
    actions: VecDeque<Action>,
    /// The monotonic clock, as of the latest event (never goes back).
    now_ns: u64,
    /// The wall clock, as of the latest event (may step either way).
    wall_ns: u64,
    /// The earliest wall time at which a block that was ahead of the clock becomes
    /// acceptable (the pending queue is retried then).
    pending_block_time_ns: Option<u64>,
    /// Own artifacts persisted, by identity: each one broadcast must be in here first.
    #[cfg(debug_assertions)]
    persisted_own: BTreeSet<CryptoHash>,
    last_progress_ns: u64,
    last_request_ns: u64,
    /// When each peer was last answered: a peer flooding requests gets one answer per
    /// quarter of the resend interval, so it cannot multiply our outgoing traffic.
    last_answer_ns: Vec<Option<u64>>,
    request_rotation: NodeIndex,
    /// Each node's latest readiness word (this node's own included).
    readiness: BTreeMap<NodeIndex, Readiness>,
    /// The highest finalized height whose notarization or finalization carries this
    /// node's own share (since this core started).
    own_share_height: Option<Height>,
    /// Resharings started by the summaries this node holds (and its base), by the
    /// summary's hash.
    plans: BTreeMap<CryptoHash, Arc<Interval>>,
    /// The new committee's record of each summary that finished a resharing, by its hash
    /// (with its height).
    reshared: BTreeMap<CryptoHash, (Height, CupCommittee)>,
    resharing_pool: ResharingPool,
    /// The resharing and round `resharing_step` last ran for (it runs once a round).
    resharing_round: Option<(CryptoHash, Height)>,
    stats: Stats,
}

impl<C: ConsensusCrypto> std::fmt::Debug for Consensus<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Consensus(node {} v{} finalized {} certified {} base {})",
            self.cfg.me, self.cfg.version, self.finalized, self.certified, self.base.height
        )
    }
}

impl<C: ConsensusCrypto> Consensus<C> {
    /// A node starting from `base`, knowing the registry versions in `registry` (at least
    /// the base's), and holding the shares it persisted before a restart (`restored`).
    pub fn new(
        cfg: Config,
        crypto: C,
        base: Base,
        registry: impl IntoIterator<Item = (RegistryVersion, SubnetInfo)>,
        restored: impl IntoIterator<Item = Envelope>,
        now: Now,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let last_answer_ns = vec![None; cfg.n];
        let mut c = Self {
            finalized: base.height,
            finalized_hash: base.block_hash,
            delivered: base.height,
            certified: base.height,
            last_cup: base.height,
            cfg,
            crypto,
            pool: BTreeMap::new(),
            registry: registry.into_iter().collect(),
            state_hashes: BTreeMap::new(),
            finalized_chain: BTreeMap::new(),
            halt_at: None,
            halted: false,
            payload: Vec::new(),
            payload_stale: false,
            pending: VecDeque::new(),
            pending_dirty: false,
            actions: VecDeque::new(),
            now_ns: now.mono_ns,
            wall_ns: now.wall_ns,
            pending_block_time_ns: None,
            #[cfg(debug_assertions)]
            persisted_own: BTreeSet::new(),
            last_progress_ns: now.mono_ns,
            last_request_ns: 0,
            last_answer_ns,
            request_rotation: 0,
            readiness: BTreeMap::new(),
            own_share_height: None,
            plans: BTreeMap::new(),
            reshared: BTreeMap::new(),
            resharing_pool: ResharingPool::default(),
            resharing_round: None,
            stats: Stats::default(),
            base,
        };
        c.state_hashes.insert(c.base.height, c.base.state_hash);
        // A node restarting inside a resharing interval follows it from its base.
        if let Some(iv) = c.plan_for(c.base.height, c.base.registry_version) {
            c.plans.insert(c.base.block_hash, Arc::new(iv));
        }
        // A base that is itself the halting point of this release (an old release
        // restarted from its own upgrade CUP) stays halted.
        if let Some(info) = c.registry.get(&c.base.registry_version)
            && status(
                &c.cfg.version,
                info,
                c.base_pin().ready,
                c.base_pin().resharing,
                true,
            ) != Status::Running
            && c.base.height > Height::ZERO
        {
            c.halted = true;
            c.halt_at = Some(c.base.height);
        }
        let restored: Vec<Envelope> = restored
            .into_iter()
            .filter(|e| e.version == c.cfg.version)
            .collect();
        // Shares persisted on another chain, before a recovery CUP at or below their
        // height replaced it, are not this chain's: holding its old beacon share at the
        // next height, the node would never sign the one the new chain needs, and with
        // every node so the beacon would never form (found by the simulator's
        // `--strand recall`: a recovery onto the release that persisted them).
        if c.made_on_another_chain(&restored) {
            c.stats.restored_from_another_chain += restored.len() as u64;
        } else {
            for envelope in restored {
                #[cfg(debug_assertions)]
                c.persisted_own.insert(own_identity(&envelope.artifact));
                c.restore(envelope.artifact);
            }
        }
        c.step();
        Ok(c)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn finalized_height(&self) -> Height {
        self.finalized
    }

    pub fn certified_height(&self) -> Height {
        self.certified
    }

    pub fn base(&self) -> &Base {
        &self.base
    }

    /// The highest finalized height whose notarization or finalization carries this
    /// node's own share, since this core started: that this node takes part, not only
    /// follows (the orchestrator's health check after a switch).
    pub fn own_share_height(&self) -> Option<Height> {
        self.own_share_height
    }

    pub fn is_halted(&self) -> bool {
        self.halted
    }

    /// Whether this release is stopping (halting or halted).
    pub fn is_halting(&self) -> bool {
        self.halt_at.is_some()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn crypto(&self) -> &C {
        &self.crypto
    }

    /// A one-line description of the current round, for diagnosing a stall.
    pub fn debug_round(&self) -> String {
        let h = self.round();
        let p = self.pool.get(&h);
        format!(
            "cup@{:?}: content {} shares {:?} mine {}; round {h} (my rank {:?}, proposed {}): beacon {} shares {} blocks {} notar_shares {:?} notarized {} my_notarized {} start {:?}; pending {}; halt_at {:?} halted {}; last_cup {}",
            self.halt_at,
            self.halt_at.is_some_and(|s| self.cup_content(s).is_some()),
            self.halt_at.and_then(|s| self.pool.get(&s)).map(|p| p
                .cup_shares
                .values()
                .map(|m| m.len())
                .collect::<Vec<_>>()),
            self.halt_at
                .and_then(|s| self.pool.get(&s))
                .is_some_and(|p| p.my_cup_share),
            self.rank_of(h, self.cfg.me),
            p.is_some_and(|p| p.proposed),
            self.beacon_at(h).is_some(),
            p.map_or(0, |p| p.beacon_shares.len()),
            p.map_or(0, |p| p.blocks.len()),
            p.map(|p| p.notar_shares.values().map(|m| m.len()).collect::<Vec<_>>()),
            p.map_or(0, |p| p.notarizations.len()),
            p.map_or(0, |p| p.my_notarized.len()),
            p.and_then(|p| p.round_start_ns),
            self.pending.len(),
            self.halt_at,
            self.halted,
            self.last_cup,
        )
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next time (monotonic) at which [`Event::Timer`] may change something.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.halted {
            return None;
        }
        let mut next = self
            .last_progress_ns
            .saturating_add(self.cfg.resend_interval_ns);
        if let Some(wall) = self.pending_block_time_ns {
            // That wall time, on the monotonic clock (as both run now).
            next = next.min(
                self.now_ns
                    .saturating_add(wall.saturating_sub(self.wall_ns)),
            );
        }
        let round = self.round();
        if let Some(start) = self.pool.get(&round).and_then(|p| p.round_start_ns) {
            // When a rank-0 block held now would be notarized eagerly.
            let rank0 = self.pool.get(&round).and_then(|p| {
                p.blocks
                    .values()
                    .find(|b| b.proposal.block.rank == 0)
                    .map(|b| b.proposal.block.parent)
            });
            if let Some(parent) = rank0 {
                let t = start.saturating_add(self.eager_wait(round, &parent));
                if t > self.now_ns && t < next {
                    next = t;
                }
            }
            let f = self.cfg.f() as u64;
            for r in 0..=f {
                let unit = self.cfg.unit_delay_ns.saturating_mul(r);
                for t in [
                    start.saturating_add(unit),
                    start
                        .saturating_add(self.cfg.initial_notary_delay_ns)
                        .saturating_add(unit),
                ] {
                    if t > self.now_ns && t < next {
                        next = t;
                    }
                }
            }
        }
        Some(next.max(self.now_ns.saturating_add(1)))
    }

    pub fn on_event(&mut self, now: Now, event: Event) {
        self.now_ns = self.now_ns.max(now.mono_ns);
        self.wall_ns = now.wall_ns;
        if self
            .pending_block_time_ns
            .is_some_and(|t| t <= self.wall_ns)
        {
            self.pending_block_time_ns = None;
            self.pending_dirty = true;
        }
        match event {
            Event::Message { from, envelope } => {
                if envelope.version != self.cfg.version {
                    self.stats.dropped_wrong_version += 1;
                    return;
                }
                if from as usize >= self.cfg.n {
                    self.stats.invalid_artifacts += 1;
                    return;
                }
                self.receive(from, envelope.artifact);
            }
            Event::Timer => {
                if self.now_ns
                    >= self
                        .last_progress_ns
                        .saturating_add(self.cfg.resend_interval_ns)
                {
                    self.resend();
                    self.last_progress_ns = self.now_ns;
                }
            }
            Event::Readiness {
                version,
                ready,
                reason,
            } => self.own_readiness(version, ready, reason),
            Event::Registry { version, info } => {
                self.registry.insert(version, info);
                self.pending_dirty = true;
            }
            Event::Payload(p) => {
                if p.len() <= self.cfg.max_payload_bytes {
                    self.payload = p;
                    self.payload_stale = false;
                }
            }
            Event::StateComputed { height, state_hash } => {
                if height > self.base.height && height <= self.delivered {
                    self.state_hashes.insert(height, state_hash);
                    self.share_certification(height, state_hash);
                }
            }
            Event::Resharing(item) => self.external_resharing(item),
        }
        self.step();
    }

    fn emit(&mut self, a: Action) {
        // Dropping an action could lose a persist, and with it the rule that a restarted
        // node never signs against itself: a driver that does not poll is a bug to stop on.
        assert!(
            self.actions.len() < MAX_ACTIONS,
            "consensus: {MAX_ACTIONS} actions were never polled"
        );
        #[cfg(debug_assertions)]
        match &a {
            Action::Persist(e) => {
                self.persisted_own.insert(own_identity(&e.artifact));
            }
            Action::Broadcast(e) if self.is_own_share(&e.artifact) => {
                debug_assert!(
                    self.persisted_own.contains(&own_identity(&e.artifact)),
                    "own {} at height {} broadcast before it was persisted",
                    e.artifact.kind(),
                    e.artifact.height()
                );
            }
            _ => {}
        }
        self.actions.push_back(a);
    }

    /// A block or share this core made that binds it at its height (what it must persist
    /// before anyone sees it). A block under this node's key that this core did not make
    /// (its key used elsewhere: a Byzantine node) is not its to persist.
    #[cfg(debug_assertions)]
    fn is_own_share(&self, a: &Artifact) -> bool {
        let me = self.cfg.me;
        match a {
            Artifact::Proposal(p) => self
                .pool
                .get(&p.block.height)
                .and_then(|pool| pool.my_proposal.as_ref())
                .is_some_and(|mine| mine.block == p.block),
            Artifact::NotarizationShare(s) | Artifact::FinalizationShare(s) => s.signer == me,
            Artifact::BeaconShare(s) => s.signer == me,
            _ => false,
        }
    }

    /// The invariants that hold between events; checked after every step.
    fn check_invariants(&self) {
        assert!(
            self.base.height <= self.delivered
                && self.delivered <= self.finalized
                && self.certified <= self.finalized
                && self.base.height <= self.certified
                && self.base.height <= self.last_cup,
            "consensus invariants broken: base {} delivered {} finalized {} certified {} last CUP {}",
            self.base.height,
            self.delivered,
            self.finalized,
            self.certified,
            self.last_cup
        );
        assert!(
            self.finalized < self.round(),
            "the round is not above the finalized height"
        );
        assert!(
            self.pending.len() <= MAX_PENDING,
            "the pending queue passed its bound"
        );
        assert!(
            self.halt_at.is_some() || !self.halted,
            "halted without a halting height"
        );
    }

    fn envelope(&self, artifact: Artifact) -> Envelope {
        Envelope {
            version: self.cfg.version.clone(),
            artifact,
        }
    }

    fn broadcast(&mut self, artifact: Artifact) {
        let e = self.envelope(artifact);
        self.emit(Action::Broadcast(e));
    }

    /// Persists then broadcasts one of this node's own shares.
    fn persist_and_broadcast(&mut self, artifact: Artifact) {
        let e = self.envelope(artifact);
        self.emit(Action::Persist(e.clone()));
        self.emit(Action::Broadcast(e));
    }

    fn msg<T: serde::Serialize>(&self, value: &T) -> Vec<u8> {
        signed_bytes(&self.cfg.version, value)
    }

    fn progress(&mut self) {
        self.last_progress_ns = self.now_ns;
        self.pending_dirty = true;
    }

    /// Applies every rule until nothing changes (bounded).
    fn step(&mut self) {
        self.check_invariants();
        for _ in 0..64 {
            let before = (
                self.round(),
                self.finalized,
                self.certified,
                self.actions.len(),
                self.halted,
            );
            self.retry_pending();
            if !self.halted {
                self.beacon_step();
                self.resharing_step();
                self.propose_step();
                self.notarize_step();
            }
            self.finalize_step();
            self.deliver_step();
            self.cup_step();
            let after = (
                self.round(),
                self.finalized,
                self.certified,
                self.actions.len(),
                self.halted,
            );
            if before == after {
                break;
            }
        }
        self.check_invariants();
    }
}

/// The identity of an own artifact for the persisted-before-broadcast check.
#[cfg(debug_assertions)]
fn own_identity(a: &Artifact) -> CryptoHash {
    CryptoHash::sha256(&types::codec::encode(a))
}

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
//!    unless it already saw a valid block of lower rank. The block extends the
//!    lowest-ranked notarized block at `h - 1` (ties: the smallest hash), carries a context
//!    (time, the newest stable registry version at least the parent's, the certified
//!    height), a driver-supplied payload (empty in summary blocks and while halting), and
//!    the maker's ed25519 signature over `(version, hash)`. A maker that signs two blocks
//!    at one height is an equivocator: nobody notarizes its blocks at that height.
//! 4. **Notarization.** `initial_notary_delay + unit_delay × r` after the round starts, a
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
//! 12. **Recovery.** Every `resend_interval` without progress a node re-sends its latest
//!     artifacts; a node that sees artifacts far ahead asks for the missing heights, and
//!     is answered with blocks, notarizations and finalizations, or with a CUP if the
//!     height was purged, from which it resumes ([`Action::CatchUp`]).

use crate::{
    artifact::*,
    crypto::{ConsensusCrypto, Threshold},
    status::{Status, SubnetInfo, status},
};
use cup::{CupContent, RandomBeacon};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use types::{CryptoHash, Height, RegistryVersion, ReplicaVersion, SubnetId, domain};

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
/// The most actions waiting to be polled (a driver that never polls is a bug).
pub const MAX_ACTIONS: usize = 100_000;

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
    pub resend_interval_ns: u64,
    pub max_payload_bytes: usize,
    /// A deliberately broken rule, for the simulator's checker test only: send a
    /// finalization share for every notarized block, even after notarizing another block
    /// at the same height. Never set outside that test.
    pub broken_finalization_rule: bool,
}

impl Config {
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
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An envelope from a peer.
    Message { from: NodeIndex, envelope: Envelope },
    /// A deadline from `poll_timeout` was reached.
    Timer,
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

#[derive(Clone, Debug)]
struct ValidBlock {
    proposal: BlockProposal,
    /// The registry version pinned by the latest summary at or below this block.
    summary_rv: RegistryVersion,
    /// The height of that summary.
    summary_height: Height,
}

impl HeightPool {
    /// Notarized, or finalized (which implies notarized).
    fn is_notarized(&self, hash: &CryptoHash) -> bool {
        self.notarizations.contains_key(hash)
            || self.finalization.as_ref().is_some_and(|f| f.hash == *hash)
    }

    fn notarized_hashes(&self) -> impl Iterator<Item = &CryptoHash> {
        self.notarizations
            .keys()
            .chain(self.finalization.as_ref().map(|f| &f.hash))
    }
}

#[derive(Clone, Debug, Default)]
struct HeightPool {
    blocks: BTreeMap<CryptoHash, ValidBlock>,
    notar_shares: BTreeMap<CryptoHash, BTreeMap<NodeIndex, Vec<u8>>>,
    notarizations: BTreeMap<CryptoHash, Aggregate>,
    final_shares: BTreeMap<CryptoHash, BTreeMap<NodeIndex, Vec<u8>>>,
    finalization: Option<Aggregate>,
    beacon_shares: BTreeMap<NodeIndex, Vec<u8>>,
    beacon: Option<Vec<u8>>,
    cert_shares: BTreeMap<Vec<u8>, BTreeMap<NodeIndex, Vec<u8>>>,
    certification: Option<ThresholdSigned>,
    cup_shares: BTreeMap<Vec<u8>, BTreeMap<NodeIndex, Vec<u8>>>,
    /// Makers seen signing two blocks at this height.
    equivocators: BTreeSet<NodeIndex>,
    makers: BTreeMap<NodeIndex, CryptoHash>,
    // What this node did at this height.
    my_notarized: BTreeSet<CryptoHash>,
    my_finalized: bool,
    my_beacon_share: bool,
    my_cert_share: bool,
    my_cup_share: bool,
    proposed: bool,
    my_proposal: Option<BlockProposal>,
    round_start_ns: Option<u64>,
    /// Blocks the planted broken rule sent finalization shares for.
    broken_final_shares: BTreeSet<CryptoHash>,
}

/// Shares by signer.
type SignedBy = Vec<(NodeIndex, Vec<u8>)>;

enum Validity {
    Valid,
    Invalid(&'static str),
    /// Not valid yet; the reason says what is missing.
    NotYet(&'static str),
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
    /// Why the most recent artifact was rejected.
    pub last_invalid: Option<&'static str>,
    /// Why the most recent artifact had to wait.
    pub last_not_yet: Option<&'static str>,
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
    now_ns: u64,
    last_progress_ns: u64,
    last_request_ns: u64,
    /// When each peer was last answered: a peer flooding requests gets one answer per
    /// quarter of the resend interval, so it cannot multiply our outgoing traffic.
    last_answer_ns: Vec<Option<u64>>,
    request_rotation: NodeIndex,
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
        now_ns: u64,
    ) -> Self {
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
            now_ns,
            last_progress_ns: now_ns,
            last_request_ns: 0,
            last_answer_ns,
            request_rotation: 0,
            stats: Stats::default(),
            base,
        };
        c.state_hashes.insert(c.base.height, c.base.state_hash);
        // A base that is itself the halting point of this release (an old release
        // restarted from its own upgrade CUP) stays halted.
        if let Some(info) = c.registry.get(&c.base.registry_version)
            && status(&c.cfg.version, info, true) != Status::Running
            && c.base.height > Height::ZERO
        {
            c.halted = true;
            c.halt_at = Some(c.base.height);
        }
        for envelope in restored {
            if envelope.version == c.cfg.version {
                c.restore(envelope.artifact);
            }
        }
        c.step();
        c
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

    /// The next time at which [`Event::Timer`] may change something.
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.halted {
            return None;
        }
        let mut next = self
            .last_progress_ns
            .saturating_add(self.cfg.resend_interval_ns);
        let round = self.round();
        if let Some(start) = self.pool.get(&round).and_then(|p| p.round_start_ns) {
            let f = self.cfg.f() as u64;
            for r in 0..=f {
                for t in [
                    start + self.cfg.unit_delay_ns * r,
                    start + self.cfg.initial_notary_delay_ns + self.cfg.unit_delay_ns * r,
                ] {
                    if t > self.now_ns && t < next {
                        next = t;
                    }
                }
            }
        }
        Some(next.max(self.now_ns + 1))
    }

    pub fn on_event(&mut self, now_ns: u64, event: Event) {
        self.now_ns = self.now_ns.max(now_ns);
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
                if self.now_ns >= self.last_progress_ns + self.cfg.resend_interval_ns {
                    self.resend();
                    self.last_progress_ns = self.now_ns;
                }
            }
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
        }
        self.step();
    }

    // ---------------------------------------------------------------- helpers

    fn emit(&mut self, a: Action) {
        if self.actions.len() >= MAX_ACTIONS {
            self.stats.critical_errors += 1;
            self.actions.pop_front();
        }
        self.actions.push_back(a);
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

    fn round(&self) -> Height {
        // The lowest height above the finalized one without a notarized block we hold.
        let mut h = self.finalized.max(self.base.height).increment();
        while self
            .pool
            .get(&h)
            .is_some_and(|p| self.notarized_block(p).is_some())
        {
            h = h.increment();
        }
        h
    }

    /// The lowest-ranked notarized block we hold at a height (ties: smallest hash), with
    /// its hash (the pool's key: hashing a block encodes its whole payload).
    fn notarized_block<'a>(&self, p: &'a HeightPool) -> Option<(CryptoHash, &'a ValidBlock)> {
        p.notarized_hashes()
            .filter_map(|h| p.blocks.get(h).map(|b| (*h, b)))
            .min_by_key(|(h, b)| (b.proposal.block.rank, *h))
    }

    fn beacon_at(&self, h: Height) -> Option<&Vec<u8>> {
        if h == self.base.height {
            Some(&self.base.random_beacon)
        } else {
            self.pool.get(&h).and_then(|p| p.beacon.as_ref())
        }
    }

    /// Ranks `0..n` at height `h`: node indices sorted by `H(beacon, h, index)`.
    fn ranking(&self, h: Height) -> Option<Vec<NodeIndex>> {
        let beacon = self.beacon_at(h)?;
        let mut order: Vec<(CryptoHash, NodeIndex)> = (0..self.cfg.n as NodeIndex)
            .map(|i| {
                (
                    CryptoHash::of(
                        domain::RANDOM_BEACON,
                        &types::codec::encode(&(beacon, h, i)),
                    ),
                    i,
                )
            })
            .collect();
        order.sort();
        Some(order.into_iter().map(|(_, i)| i).collect())
    }

    fn rank_of(&self, h: Height, node: NodeIndex) -> Option<u32> {
        self.ranking(h)?
            .iter()
            .position(|i| *i == node)
            .map(|r| r as u32)
    }

    /// The parent candidate at `h - 1`: the base, or the lowest-ranked notarized block.
    fn parent_of_round(
        &self,
        h: Height,
    ) -> Option<(CryptoHash, BlockContext, RegistryVersion, Height)> {
        let prev = Height::new(h.get() - 1);
        if prev == self.base.height {
            let ctx = BlockContext {
                time_ns: self.base.time_ns,
                registry_version: self.base.registry_version,
                certified_height: self.base.height,
            };
            return Some((
                self.base.block_hash,
                ctx,
                self.base.registry_version,
                self.base.height,
            ));
        }
        let p = self.pool.get(&prev)?;
        let (hash, b) = self.notarized_block(p)?;
        Some((
            hash,
            b.proposal.block.context.clone(),
            b.summary_rv,
            b.summary_height,
        ))
    }

    /// The status of this release for a chain whose latest summary pinned `rv` at `s`.
    fn chain_status(&self, rv: RegistryVersion, s: Height) -> Option<Status> {
        let info = self.registry.get(&rv)?;
        let cup_made = self.halted && self.halt_at == Some(s);
        Some(status(&self.cfg.version, info, cup_made))
    }

    fn within_bounds(&self, h: Height, summary_height: Height, st: Status) -> bool {
        let next_cup = self.last_cup.get() + self.cfg.dkg_interval_length + 1;
        if h.get() > self.certified.get() + MAX_CERTIFICATION_GAP
            || h.get() > next_cup + MAX_CUP_GAP
        {
            return false;
        }
        // A halting chain never reaches the next summary height.
        !(st != Status::Running && h.get() > summary_height.get() + self.cfg.dkg_interval_length)
    }

    // ------------------------------------------------------------ receiving

    fn receive(&mut self, from: NodeIndex, artifact: Artifact) {
        let h = artifact.height();
        if let Artifact::Request { height } = artifact {
            self.answer(from, height);
            return;
        }
        if let Artifact::Cup(cup) = &artifact {
            self.receive_cup(cup.clone());
            return;
        }
        if h <= self.base.height {
            return;
        }
        if h.get() > self.finalized.get() + MAX_AHEAD {
            self.stats.dropped_out_of_bounds += 1;
            self.request_catch_up(from);
            return;
        }
        if h.get() > self.round().get() + 1 {
            self.request_catch_up(from);
        }
        if self.redundant(&artifact) {
            self.stats.redundant_artifacts += 1;
            return;
        }
        match self.validate(&artifact) {
            Validity::Valid => self.insert(artifact),
            Validity::Invalid(why) => {
                self.stats.invalid_artifacts += 1;
                self.stats.last_invalid = Some(why);
            }
            Validity::NotYet(why) => {
                self.stats.last_not_yet = Some(why);
                if self.pending.len() >= MAX_PENDING {
                    self.pending.pop_front();
                    self.stats.pending_overflow += 1;
                }
                self.pending.push_back((from, artifact));
            }
        }
    }

    /// Asks a peer for the heights above our finalized one. The peer rotates over the
    /// subnet, starting after the one whose artifact showed we are behind: a faulty peer
    /// that withholds blocks must not be the only one asked.
    fn request_catch_up(&mut self, from: NodeIndex) {
        if self.now_ns < self.last_request_ns + self.cfg.resend_interval_ns / 2
            || from == self.cfg.me
        {
            return;
        }
        self.last_request_ns = self.now_ns;
        let n = self.cfg.n as NodeIndex;
        self.request_rotation = self.request_rotation.wrapping_add(1);
        let mut to = (from + self.request_rotation) % n;
        if to == self.cfg.me {
            to = (to + 1) % n;
        }
        let e = self.envelope(Artifact::Request {
            height: self.finalized.increment(),
        });
        self.emit(Action::SendTo(to, e));
    }

    fn retry_pending(&mut self) {
        if !self.pending_dirty {
            return;
        }
        self.pending_dirty = false;
        let mut rounds = 0;
        loop {
            rounds += 1;
            let before = self.pending.len();
            let items: Vec<_> = self.pending.drain(..).collect();
            let mut progressed = false;
            for (from, a) in items {
                if a.height() <= self.base.height || self.redundant(&a) {
                    continue;
                }
                match self.validate(&a) {
                    Validity::Valid => {
                        self.insert(a);
                        progressed = true;
                    }
                    Validity::Invalid(why) => {
                        self.stats.invalid_artifacts += 1;
                        self.stats.last_invalid = Some(why);
                    }
                    Validity::NotYet(_) => self.pending.push_back((from, a)),
                }
            }
            if !progressed || self.pending.len() == before || rounds > 8 {
                break;
            }
        }
    }

    /// Inserting `a` would change nothing: we hold it already, or what it helps make.
    /// Checked before `validate`, whose signature checks are most of a replica's work
    /// (every node broadcasts its shares and its aggregates). Mirrors `insert`'s no-ops.
    fn redundant(&self, a: &Artifact) -> bool {
        let h = a.height();
        if matches!(a, Artifact::CertificationShare(_)) && h <= self.certified {
            return true;
        }
        let Some(pool) = self.pool.get(&h) else {
            return false;
        };
        let holds = |shares: Option<&BTreeMap<NodeIndex, Vec<u8>>>, signer: &NodeIndex| {
            shares.is_some_and(|m| m.contains_key(signer))
        };
        match a {
            Artifact::BeaconShare(s) => {
                pool.beacon.is_some() || pool.beacon_shares.contains_key(&s.signer)
            }
            Artifact::Beacon(_) => pool.beacon.is_some(),
            Artifact::NotarizationShare(s) => {
                pool.notarizations.contains_key(&s.hash)
                    || holds(pool.notar_shares.get(&s.hash), &s.signer)
            }
            Artifact::Notarization(g) => pool.notarizations.contains_key(&g.hash),
            Artifact::FinalizationShare(s) => {
                pool.finalization.is_some() || holds(pool.final_shares.get(&s.hash), &s.signer)
            }
            Artifact::Finalization(_) => pool.finalization.is_some(),
            Artifact::CertificationShare(s) => holds(pool.cert_shares.get(&s.value), &s.signer),
            Artifact::Certification(_) => pool.certification.is_some(),
            Artifact::CupShare(s) => holds(pool.cup_shares.get(&s.value), &s.signer),
            // A block's check is its hash, which validation computes anyway.
            Artifact::Proposal(_) | Artifact::Cup(_) | Artifact::Request { .. } => false,
        }
    }

    fn validate(&self, a: &Artifact) -> Validity {
        let n = self.cfg.n as NodeIndex;
        match a {
            Artifact::Proposal(p) => self.validate_block(p),
            Artifact::BeaconShare(s) => {
                if s.signer >= n {
                    return Validity::Invalid("signer out of range");
                }
                let Some(prev) = self.beacon_at(Height::new(s.height.get() - 1)) else {
                    return Validity::NotYet("previous beacon");
                };
                if &s.value != prev {
                    return Validity::Invalid("beacon share on the wrong previous beacon");
                }
                let m = self.msg(&(s.height, &s.value));
                if self.crypto.verify_threshold_share(
                    Threshold::Low,
                    s.signer,
                    domain::RANDOM_BEACON,
                    &m,
                    &s.signature,
                ) {
                    Validity::Valid
                } else {
                    Validity::Invalid("bad beacon share signature")
                }
            }
            Artifact::Beacon(b) => {
                let Some(prev) = self.beacon_at(Height::new(b.height.get() - 1)) else {
                    return Validity::NotYet("previous beacon");
                };
                if &b.value != prev {
                    return Validity::Invalid("beacon on the wrong previous beacon");
                }
                let m = self.msg(&(b.height, &b.value));
                if self.crypto.verify_threshold(
                    Threshold::Low,
                    domain::RANDOM_BEACON,
                    &m,
                    &b.signature,
                ) {
                    Validity::Valid
                } else {
                    Validity::Invalid("bad beacon signature")
                }
            }
            Artifact::NotarizationShare(s) | Artifact::FinalizationShare(s) => {
                let d = if matches!(a, Artifact::NotarizationShare(_)) {
                    domain::NOTARIZATION
                } else {
                    domain::FINALIZATION
                };
                if s.signer >= n {
                    return Validity::Invalid("signer out of range");
                }
                let m = self.msg(&(s.height, s.hash));
                if self
                    .crypto
                    .verify_multi_share(s.signer, d, &m, &s.signature)
                {
                    Validity::Valid
                } else {
                    Validity::Invalid("bad share signature")
                }
            }
            Artifact::Notarization(g) | Artifact::Finalization(g) => {
                let d = if matches!(a, Artifact::Notarization(_)) {
                    domain::NOTARIZATION
                } else {
                    domain::FINALIZATION
                };
                let distinct: BTreeSet<_> = g.signers.iter().collect();
                if distinct.len() != g.signers.len()
                    || distinct.len() < self.cfg.quorum()
                    || g.signers.iter().any(|s| *s >= n)
                {
                    return Validity::Invalid("bad signer set");
                }
                let m = self.msg(&(g.height, g.hash));
                if self.crypto.verify_multi(&g.signers, d, &m, &g.signature) {
                    Validity::Valid
                } else {
                    Validity::Invalid("bad aggregate signature")
                }
            }
            Artifact::CertificationShare(s) => {
                if s.signer >= n {
                    return Validity::Invalid("signer out of range");
                }
                let m = self.msg(&(s.height, &s.value));
                if self.crypto.verify_threshold_share(
                    Threshold::High,
                    s.signer,
                    domain::STATE_CERTIFICATION,
                    &m,
                    &s.signature,
                ) {
                    Validity::Valid
                } else {
                    Validity::Invalid("bad certification share")
                }
            }
            Artifact::Certification(c) => {
                let m = self.msg(&(c.height, &c.value));
                if self.crypto.verify_threshold(
                    Threshold::High,
                    domain::STATE_CERTIFICATION,
                    &m,
                    &c.signature,
                ) {
                    Validity::Valid
                } else {
                    Validity::Invalid("bad certification")
                }
            }
            Artifact::CupShare(s) => {
                if s.signer >= n {
                    return Validity::Invalid("signer out of range");
                }
                let Ok(content) = CupContent::decode(&s.value) else {
                    return Validity::Invalid("bad CUP content");
                };
                if content.height != s.height || content.subnet_id != self.cfg.subnet_id {
                    return Validity::Invalid("CUP share for another height or subnet");
                }
                if self.crypto.verify_threshold_share(
                    Threshold::High,
                    s.signer,
                    domain::CUP_CONTENT,
                    &s.value,
                    &s.signature,
                ) {
                    Validity::Valid
                } else {
                    Validity::Invalid("bad CUP share")
                }
            }
            Artifact::Cup(_) | Artifact::Request { .. } => Validity::Invalid("not pooled"),
        }
    }

    fn validate_block(&self, p: &BlockProposal) -> Validity {
        let b = &p.block;
        let h = b.height;
        if b.maker as usize >= self.cfg.n {
            return Validity::Invalid("maker out of range");
        }
        if !self
            .crypto
            .verify_block(b.maker, &self.msg(&b.hash()), &p.signature)
        {
            return Validity::Invalid("bad maker signature");
        }
        if b.rank as usize > self.cfg.f() {
            return Validity::Invalid("rank too high to make blocks");
        }
        match self.rank_of(h, b.maker) {
            None => return Validity::NotYet("beacon for the rank"),
            Some(r) if r != b.rank => return Validity::Invalid("wrong rank"),
            Some(_) => {}
        }
        if b.is_summary != self.cfg.is_summary_height(h) {
            return Validity::Invalid("summary flag does not match the height");
        }
        // The parent must be the base or a notarized block we hold.
        let prev = Height::new(h.get() - 1);
        let (parent_ctx, parent_rv, parent_s) = if prev == self.base.height {
            if b.parent != self.base.block_hash {
                return Validity::Invalid("does not extend the base");
            }
            (
                // The CUP does not record the summary block's certified height: no floor.
                BlockContext {
                    time_ns: self.base.time_ns,
                    registry_version: self.base.registry_version,
                    certified_height: Height::ZERO,
                },
                self.base.registry_version,
                self.base.height,
            )
        } else {
            let Some(pp) = self.pool.get(&prev) else {
                return Validity::NotYet("parent height");
            };
            let Some(parent) = pp.blocks.get(&b.parent) else {
                return Validity::NotYet("parent block");
            };
            if !pp.is_notarized(&b.parent) {
                return Validity::NotYet("parent notarization");
            }
            (
                parent.proposal.block.context.clone(),
                parent.summary_rv,
                parent.summary_height,
            )
        };
        let c = &b.context;
        if c.time_ns <= parent_ctx.time_ns
            || c.registry_version < parent_ctx.registry_version
            || c.certified_height < parent_ctx.certified_height
            || c.certified_height >= h
        {
            return Validity::Invalid("context goes backwards");
        }
        if !self.registry.contains_key(&c.registry_version) {
            return Validity::NotYet("registry version");
        }
        let Some(st) = self.chain_status(parent_rv, parent_s) else {
            return Validity::NotYet("chain status");
        };
        if (b.is_summary || st != Status::Running) && !b.payload.is_empty() {
            return Validity::Invalid("payload where the block must be empty");
        }
        if b.payload.len() > self.cfg.max_payload_bytes {
            return Validity::Invalid("payload too large");
        }
        Validity::Valid
    }

    fn insert(&mut self, a: Artifact) {
        let h = a.height();
        let q = self.cfg.quorum();
        match a {
            Artifact::Proposal(p) => {
                let hash = p.block.hash();
                let (rv, s) = if p.block.is_summary {
                    (p.block.context.registry_version, h)
                } else if h.get() - 1 == self.base.height.get() {
                    (self.base.registry_version, self.base.height)
                } else {
                    let prev = self
                        .pool
                        .get(&Height::new(h.get() - 1))
                        .and_then(|pp| pp.blocks.get(&p.block.parent));
                    match prev {
                        Some(v) => (v.summary_rv, v.summary_height),
                        None => return,
                    }
                };
                let maker = p.block.maker;
                let pool = self.pool.entry(h).or_default();
                if pool.blocks.contains_key(&hash) {
                    return;
                }
                match pool.makers.get(&maker) {
                    Some(other) if *other != hash => {
                        pool.equivocators.insert(maker);
                    }
                    _ => {
                        pool.makers.insert(maker, hash);
                    }
                }
                let payload = (!p.block.payload.is_empty() && h > self.delivered)
                    .then(|| p.block.payload.clone());
                pool.blocks.insert(
                    hash,
                    ValidBlock {
                        proposal: p,
                        summary_rv: rv,
                        summary_height: s,
                    },
                );
                if let Some(payload) = payload {
                    self.emit(Action::BlockPayload { height: h, payload });
                    self.payload_stale = true;
                }
                self.progress();
            }
            Artifact::BeaconShare(s) => {
                let pool = self.pool.entry(h).or_default();
                if pool.beacon.is_none() {
                    pool.beacon_shares.insert(s.signer, s.signature);
                }
            }
            Artifact::Beacon(b) => {
                let pool = self.pool.entry(h).or_default();
                if pool.beacon.is_none() {
                    pool.beacon = Some(b.signature);
                    self.progress();
                }
            }
            Artifact::NotarizationShare(s) => {
                let pool = self.pool.entry(h).or_default();
                if !pool.notarizations.contains_key(&s.hash) {
                    pool.notar_shares
                        .entry(s.hash)
                        .or_default()
                        .insert(s.signer, s.signature);
                }
            }
            Artifact::Notarization(g) => {
                let pool = self.pool.entry(h).or_default();
                if let std::collections::btree_map::Entry::Vacant(e) =
                    pool.notarizations.entry(g.hash)
                {
                    e.insert(g);
                    pool.notar_shares.clear();
                    self.progress();
                }
            }
            Artifact::FinalizationShare(s) => {
                let pool = self.pool.entry(h).or_default();
                if pool.finalization.is_none() {
                    pool.final_shares
                        .entry(s.hash)
                        .or_default()
                        .insert(s.signer, s.signature);
                }
            }
            Artifact::Finalization(g) => {
                let pool = self.pool.entry(h).or_default();
                if pool.finalization.is_none() {
                    pool.finalization = Some(g);
                    pool.final_shares.clear();
                    self.progress();
                }
            }
            Artifact::CertificationShare(s) => {
                if h <= self.certified {
                    return;
                }
                let pool = self.pool.entry(h).or_default();
                pool.cert_shares
                    .entry(s.value)
                    .or_default()
                    .insert(s.signer, s.signature);
                self.try_certify(h);
            }
            Artifact::Certification(c) => self.accept_certification(c),
            Artifact::CupShare(s) => {
                let pool = self.pool.entry(h).or_default();
                let shares = pool.cup_shares.entry(s.value.clone()).or_default();
                shares.insert(s.signer, s.signature);
                if shares.len() >= q {
                    self.try_make_cup(h, s.value);
                }
            }
            Artifact::Cup(_) | Artifact::Request { .. } => {}
        }
    }

    fn progress(&mut self) {
        self.last_progress_ns = self.now_ns;
        self.pending_dirty = true;
    }

    /// Re-inserts a share this node persisted before a restart.
    fn restore(&mut self, a: Artifact) {
        let h = a.height();
        if h <= self.base.height {
            return;
        }
        let me = self.cfg.me;
        let pool = self.pool.entry(h).or_default();
        match a {
            Artifact::NotarizationShare(s) if s.signer == me => {
                pool.my_notarized.insert(s.hash);
                pool.notar_shares
                    .entry(s.hash)
                    .or_default()
                    .insert(s.signer, s.signature);
            }
            Artifact::FinalizationShare(s) if s.signer == me => {
                pool.my_finalized = true;
                pool.final_shares
                    .entry(s.hash)
                    .or_default()
                    .insert(s.signer, s.signature);
            }
            Artifact::Proposal(p) if p.block.maker == me => {
                // Our block must not be lost with our memory: validate it again, and
                // re-send it while we have not moved past its height.
                pool.proposed = true;
                pool.my_proposal = Some(p.clone());
                self.pending.push_back((me, Artifact::Proposal(p)));
                self.pending_dirty = true;
            }
            Artifact::BeaconShare(s) if s.signer == me => {
                pool.my_beacon_share = true;
                pool.beacon_shares.insert(s.signer, s.signature);
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------ the step

    /// Applies every rule until nothing changes (bounded).
    fn step(&mut self) {
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
    }

    fn beacon_step(&mut self) {
        let h = self.round();
        let prev = Height::new(h.get() - 1);
        let Some(prev_beacon) = self.beacon_at(prev).cloned() else {
            return;
        };
        let me = self.cfg.me;
        let pool = self.pool.entry(h).or_default();
        if pool.beacon.is_some() {
            return;
        }
        if !pool.my_beacon_share {
            pool.my_beacon_share = true;
            let m = signed_bytes(&self.cfg.version, &(h, &prev_beacon));
            let signature = self
                .crypto
                .sign_threshold(Threshold::Low, domain::RANDOM_BEACON, &m);
            let share = ThresholdShare {
                height: h,
                value: prev_beacon.clone(),
                signer: me,
                signature,
            };
            self.pool
                .entry(h)
                .or_default()
                .beacon_shares
                .insert(me, share.signature.clone());
            self.persist_and_broadcast(Artifact::BeaconShare(share));
        }
        let t = self.cfg.f() + 1;
        let pool = self.pool.entry(h).or_default();
        if pool.beacon_shares.len() >= t {
            let shares: Vec<(NodeIndex, Vec<u8>)> = pool
                .beacon_shares
                .iter()
                .map(|(i, s)| (*i, s.clone()))
                .collect();
            let refs: Vec<(NodeIndex, &[u8])> =
                shares.iter().map(|(i, s)| (*i, s.as_slice())).collect();
            let m = signed_bytes(&self.cfg.version, &(h, &prev_beacon));
            match self.crypto.combine_threshold(Threshold::Low, &refs) {
                Some(sig)
                    if self.crypto.verify_threshold(
                        Threshold::Low,
                        domain::RANDOM_BEACON,
                        &m,
                        &sig,
                    ) =>
                {
                    let pool = self.pool.entry(h).or_default();
                    pool.beacon = Some(sig.clone());
                    pool.round_start_ns.get_or_insert(self.now_ns);
                    self.progress();
                    self.broadcast(Artifact::Beacon(ThresholdSigned {
                        height: h,
                        value: prev_beacon,
                        signature: sig,
                    }));
                }
                _ => {
                    // Shares were verified one by one; a failed combination is a bug.
                    self.stats.critical_errors += 1;
                }
            }
        }
    }

    fn round_started(&mut self, h: Height) -> Option<u64> {
        let has_beacon = self.beacon_at(h).is_some();
        if !has_beacon || self.parent_of_round(h).is_none() {
            return None;
        }
        let now = self.now_ns;
        Some(
            *self
                .pool
                .entry(h)
                .or_default()
                .round_start_ns
                .get_or_insert(now),
        )
    }

    fn propose_step(&mut self) {
        let h = self.round();
        let Some(start) = self.round_started(h) else {
            return;
        };
        let Some(rank) = self.rank_of(h, self.cfg.me) else {
            return;
        };
        if rank as usize > self.cfg.f()
            || self.now_ns < start + self.cfg.unit_delay_ns * rank as u64
        {
            return;
        }
        let Some((parent, pctx, prv, ps)) = self.parent_of_round(h) else {
            return;
        };
        let Some(st) = self.chain_status(prv, ps) else {
            return;
        };
        let pool = self.pool.entry(h).or_default();
        // Skip when a valid lower-rank block exists (blocks of equivocators do not count).
        let lower = pool.blocks.values().any(|b| {
            b.proposal.block.rank < rank && !pool.equivocators.contains(&b.proposal.block.maker)
        });
        if pool.proposed || lower {
            return;
        }
        let is_summary = self.cfg.is_summary_height(h);
        let carries_payload = !is_summary && st == Status::Running;
        if st == Status::Halted
            || !self.within_bounds(h, ps, st)
            || (is_summary && st != Status::Running)
            || (carries_payload && self.payload_stale)
        {
            return;
        }
        let stable = self
            .registry
            .keys()
            .next_back()
            .copied()
            .unwrap_or(pctx.registry_version);
        let block = Block {
            parent,
            height: h,
            rank,
            maker: self.cfg.me,
            context: BlockContext {
                time_ns: self.now_ns.max(pctx.time_ns + 1),
                registry_version: stable.max(pctx.registry_version),
                certified_height: self
                    .certified
                    .max(pctx.certified_height)
                    .min(Height::new(h.get() - 1)),
            },
            is_summary,
            payload: if carries_payload {
                self.payload.clone()
            } else {
                Vec::new()
            },
        };
        let signature = self.crypto.sign_block(&self.msg(&block.hash()));
        let proposal = BlockProposal { block, signature };
        let pool = self.pool.entry(h).or_default();
        pool.proposed = true;
        pool.my_proposal = Some(proposal.clone());
        self.persist_and_broadcast(Artifact::Proposal(proposal.clone()));
        self.insert(Artifact::Proposal(proposal));
    }

    fn notarize_step(&mut self) {
        let h = self.round();
        let Some(start) = self.round_started(h) else {
            return;
        };
        let me = self.cfg.me;
        let Some(pool) = self.pool.get(&h) else {
            return;
        };
        // The lowest-rank eligible block not yet shared.
        let mut candidates: Vec<(u32, CryptoHash, Height, RegistryVersion)> = pool
            .blocks
            .iter()
            .filter(|(_, b)| !pool.equivocators.contains(&b.proposal.block.maker))
            .map(|(hash, b)| (b.proposal.block.rank, *hash, b.summary_height, b.summary_rv))
            .collect();
        candidates.sort();
        let Some(&(rank, hash, s, rv)) = candidates.first() else {
            return;
        };
        // Never share a block of higher rank than one already shared at this height,
        // not counting blocks of makers since caught equivocating (they are disqualified).
        let my_min_rank = pool
            .my_notarized
            .iter()
            .filter_map(|x| pool.blocks.get(x))
            .filter(|b| !pool.equivocators.contains(&b.proposal.block.maker))
            .map(|b| b.proposal.block.rank)
            .min();
        if pool.my_notarized.contains(&hash) || my_min_rank.is_some_and(|m| rank > m) {
            return;
        }
        if self.now_ns
            < start + self.cfg.initial_notary_delay_ns + self.cfg.unit_delay_ns * rank as u64
        {
            return;
        }
        let parent_s = if s == h {
            self.parent_of_round(h).map(|p| (p.2, p.3))
        } else {
            Some((rv, s))
        };
        let Some((prv, ps)) = parent_s else { return };
        let Some(st) = self.chain_status(prv, ps) else {
            return;
        };
        if st == Status::Halted || !self.within_bounds(h, ps, st) {
            return;
        }
        let signature = self
            .crypto
            .sign_multi(domain::NOTARIZATION, &self.msg(&(h, hash)));
        let pool = self.pool.entry(h).or_default();
        pool.my_notarized.insert(hash);
        pool.notar_shares
            .entry(hash)
            .or_default()
            .insert(me, signature.clone());
        self.persist_and_broadcast(Artifact::NotarizationShare(Share {
            height: h,
            hash,
            signer: me,
            signature,
        }));
        self.try_notarize(h);
    }

    fn try_notarize(&mut self, h: Height) {
        let q = self.cfg.quorum();
        let Some(pool) = self.pool.get(&h) else {
            return;
        };
        let ready: Vec<(CryptoHash, SignedBy)> = pool
            .notar_shares
            .iter()
            .filter(|(hash, s)| {
                s.len() >= q
                    && pool.blocks.contains_key(*hash)
                    && !pool.notarizations.contains_key(*hash)
            })
            .map(|(hash, s)| {
                (
                    *hash,
                    s.iter().take(q).map(|(i, sig)| (*i, sig.clone())).collect(),
                )
            })
            .collect();
        for (hash, shares) in ready {
            let refs: Vec<&[u8]> = shares.iter().map(|(_, s)| s.as_slice()).collect();
            let Some(signature) = self.crypto.aggregate_multi(&refs) else {
                self.stats.critical_errors += 1;
                continue;
            };
            let g = Aggregate {
                height: h,
                hash,
                signers: shares.iter().map(|(i, _)| *i).collect(),
                signature,
            };
            self.broadcast(Artifact::Notarization(g.clone()));
            self.insert(Artifact::Notarization(g));
        }
    }

    fn finalize_step(&mut self) {
        let me = self.cfg.me;
        let q = self.cfg.quorum();
        let heights: Vec<Height> = self
            .pool
            .range(self.finalized.increment()..)
            .map(|(h, _)| *h)
            .collect();
        for h in heights {
            self.try_notarize(h);
            let Some(pool) = self.pool.get(&h) else {
                continue;
            };
            // Finalization share: exactly one notarized block we hold, and we shared no other.
            let notarized: Vec<CryptoHash> = pool
                .notarized_hashes()
                .filter(|x| pool.blocks.contains_key(*x))
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if !self.halted
                && !pool.my_finalized
                && pool.finalization.is_none()
                && notarized.len() == 1
                && pool.my_notarized.iter().all(|x| *x == notarized[0])
            {
                let hash = notarized[0];
                let signature = self
                    .crypto
                    .sign_multi(domain::FINALIZATION, &self.msg(&(h, hash)));
                let pool = self.pool.entry(h).or_default();
                pool.my_finalized = true;
                pool.final_shares
                    .entry(hash)
                    .or_default()
                    .insert(me, signature.clone());
                self.persist_and_broadcast(Artifact::FinalizationShare(Share {
                    height: h,
                    hash,
                    signer: me,
                    signature,
                }));
            }
            if self.cfg.broken_finalization_rule && !self.halted {
                self.broken_finalization_shares(h);
            }
            let Some(pool) = self.pool.get(&h) else {
                continue;
            };
            if pool.finalization.is_some() {
                continue;
            }
            let ready = pool
                .final_shares
                .iter()
                .find(|(_, s)| s.len() >= q)
                .map(|(hash, s)| {
                    (
                        *hash,
                        s.iter()
                            .take(q)
                            .map(|(i, sig)| (*i, sig.clone()))
                            .collect::<Vec<_>>(),
                    )
                });
            if let Some((hash, shares)) = ready {
                let refs: Vec<&[u8]> = shares.iter().map(|(_, s)| s.as_slice()).collect();
                if let Some(signature) = self.crypto.aggregate_multi(&refs) {
                    let g = Aggregate {
                        height: h,
                        hash,
                        signers: shares.iter().map(|(i, _)| *i).collect(),
                        signature,
                    };
                    self.broadcast(Artifact::Finalization(g.clone()));
                    self.insert(Artifact::Finalization(g));
                }
            }
        }
    }

    /// The planted bug (see [`Config::broken_finalization_rule`]).
    fn broken_finalization_shares(&mut self, h: Height) {
        let me = self.cfg.me;
        let Some(pool) = self.pool.get(&h) else {
            return;
        };
        let todo: Vec<CryptoHash> = pool
            .notarizations
            .keys()
            .filter(|x| pool.blocks.contains_key(*x) && !pool.broken_final_shares.contains(*x))
            .copied()
            .collect();
        for hash in todo {
            let signature = self
                .crypto
                .sign_multi(domain::FINALIZATION, &self.msg(&(h, hash)));
            let pool = self.pool.entry(h).or_default();
            pool.my_finalized = true;
            pool.broken_final_shares.insert(hash);
            pool.final_shares
                .entry(hash)
                .or_default()
                .insert(me, signature.clone());
            self.broadcast(Artifact::FinalizationShare(Share {
                height: h,
                hash,
                signer: me,
                signature,
            }));
        }
    }

    /// Moves the finalized tip to the highest finalization whose chain we hold, and
    /// delivers the newly finalized blocks in order.
    fn deliver_step(&mut self) {
        let finals: Vec<(Height, CryptoHash)> = self
            .pool
            .range(self.finalized.increment()..)
            .filter_map(|(h, p)| p.finalization.as_ref().map(|f| (*h, f.hash)))
            .collect();
        for (top, top_hash) in finals.into_iter().rev() {
            // Walk down to the current tip.
            let mut chain = Vec::new();
            let (mut h, mut hash) = (top, top_hash);
            let mut complete = true;
            while h > self.finalized {
                let Some(b) = self.pool.get(&h).and_then(|p| p.blocks.get(&hash)) else {
                    complete = false;
                    break;
                };
                chain.push((h, hash, b.proposal.block.clone()));
                hash = b.proposal.block.parent;
                h = Height::new(h.get() - 1);
            }
            if !complete {
                continue;
            }
            if hash != self.finalized_hash {
                // Two finalized chains: only possible with more than f faulty nodes.
                self.stats.critical_errors += 1;
                self.stats.conflicting_finalizations += 1;
                return;
            }
            chain.reverse();
            for (h, hash, block) in chain {
                self.finalized = h;
                self.finalized_hash = hash;
                self.finalized_chain.insert(h, hash);
                if self.halt_at.is_some_and(|s| h > s) {
                    continue;
                }
                if block.is_summary
                    && let Some(info) = self.registry.get(&block.context.registry_version)
                    && status(&self.cfg.version, info, false) != Status::Running
                {
                    self.halt_at = Some(h);
                }
                self.delivered = h;
                self.emit(Action::Deliver(Delivery {
                    height: h,
                    block_hash: hash,
                    block,
                }));
            }
            self.progress();
            return;
        }
    }

    fn share_certification(&mut self, h: Height, state_hash: CryptoHash) {
        let me = self.cfg.me;
        let pool = self.pool.entry(h).or_default();
        if pool.my_cert_share || h <= self.certified {
            return;
        }
        pool.my_cert_share = true;
        let value = state_hash.0.to_vec();
        let m = signed_bytes(&self.cfg.version, &(h, &value));
        let signature =
            self.crypto
                .sign_threshold(Threshold::High, domain::STATE_CERTIFICATION, &m);
        self.pool
            .entry(h)
            .or_default()
            .cert_shares
            .entry(value.clone())
            .or_default()
            .insert(me, signature.clone());
        self.broadcast(Artifact::CertificationShare(ThresholdShare {
            height: h,
            value,
            signer: me,
            signature,
        }));
        self.try_certify(h);
    }

    fn try_certify(&mut self, h: Height) {
        let q = self.cfg.quorum();
        let Some(pool) = self.pool.get(&h) else {
            return;
        };
        if pool.certification.is_some() {
            return;
        }
        let ready = pool
            .cert_shares
            .iter()
            .find(|(_, s)| s.len() >= q)
            .map(|(v, s)| {
                (
                    v.clone(),
                    s.iter()
                        .take(q)
                        .map(|(i, sig)| (*i, sig.clone()))
                        .collect::<Vec<_>>(),
                )
            });
        let Some((value, shares)) = ready else { return };
        let refs: Vec<(NodeIndex, &[u8])> =
            shares.iter().map(|(i, s)| (*i, s.as_slice())).collect();
        let Some(signature) = self.crypto.combine_threshold(Threshold::High, &refs) else {
            self.stats.critical_errors += 1;
            return;
        };
        let c = ThresholdSigned {
            height: h,
            value,
            signature,
        };
        self.broadcast(Artifact::Certification(c.clone()));
        self.accept_certification(c);
    }

    fn accept_certification(&mut self, c: ThresholdSigned) {
        let h = c.height;
        let pool = self.pool.entry(h).or_default();
        if pool.certification.is_some() {
            return;
        }
        pool.certification = Some(c.clone());
        pool.cert_shares.clear();
        if let Ok(bytes) = <[u8; 32]>::try_from(c.value.as_slice()) {
            if h > self.certified {
                self.certified = h;
            }
            self.emit(Action::Certified {
                height: h,
                state_hash: CryptoHash(bytes),
                signature: c.signature,
            });
            self.progress();
        }
    }

    fn cup_content(&self, s: Height) -> Option<CupContent> {
        let pool = self.pool.get(&s)?;
        let block_hash = *self.finalized_chain.get(&s)?;
        let block = &pool.blocks.get(&block_hash)?.proposal.block;
        let state_hash = *self.state_hashes.get(&s)?;
        let cert = pool.certification.as_ref()?;
        if cert.value != state_hash.0 {
            // Our own state differs from the certified one: never sign a CUP for it.
            return None;
        }
        Some(CupContent {
            subnet_id: self.cfg.subnet_id,
            height: s,
            block_hash,
            block_time_ns: block.context.time_ns,
            registry_version: block.context.registry_version,
            replica_version: self.cfg.version.clone(),
            random_beacon: RandomBeacon(pool.beacon.clone()?),
            state_hash,
            oldest_registry_version_in_use: block.context.registry_version,
            extensions: Default::default(),
        })
    }

    fn cup_step(&mut self) {
        // The CUP at the newest delivered summary height above the last CUP.
        let interval = self.cfg.dkg_interval_length + 1;
        let s = Height::new(self.delivered.get() / interval * interval);
        if s <= self.last_cup || s <= self.base.height {
            return;
        }
        let me = self.cfg.me;
        if self.pool.get(&s).is_some_and(|p| p.my_cup_share) {
            return;
        }
        let Some(content) = self.cup_content(s) else {
            return;
        };
        let value = content.encode();
        let signature = self
            .crypto
            .sign_threshold(Threshold::High, domain::CUP_CONTENT, &value);
        let pool = self.pool.entry(s).or_default();
        pool.my_cup_share = true;
        let shares = pool.cup_shares.entry(value.clone()).or_default();
        shares.insert(me, signature.clone());
        let enough = shares.len() >= self.cfg.quorum();
        self.broadcast(Artifact::CupShare(ThresholdShare {
            height: s,
            value: value.clone(),
            signer: me,
            signature,
        }));
        if enough {
            self.try_make_cup(s, value);
        }
    }

    fn try_make_cup(&mut self, s: Height, value: Vec<u8>) {
        if s <= self.last_cup {
            return;
        }
        let q = self.cfg.quorum();
        let Some(shares) = self.pool.get(&s).and_then(|p| p.cup_shares.get(&value)) else {
            return;
        };
        if shares.len() < q {
            return;
        }
        let shares: Vec<(NodeIndex, Vec<u8>)> = shares
            .iter()
            .take(q)
            .map(|(i, x)| (*i, x.clone()))
            .collect();
        let refs: Vec<(NodeIndex, &[u8])> =
            shares.iter().map(|(i, x)| (*i, x.as_slice())).collect();
        let Some(signature) = self.crypto.combine_threshold(Threshold::High, &refs) else {
            self.stats.critical_errors += 1;
            return;
        };
        if !self
            .crypto
            .verify_threshold(Threshold::High, domain::CUP_CONTENT, &value, &signature)
        {
            self.stats.critical_errors += 1;
            return;
        }
        self.broadcast(Artifact::Cup(ThresholdSigned {
            height: s,
            value: value.clone(),
            signature: signature.clone(),
        }));
        self.adopt_cup(s, value, signature);
    }

    /// A CUP made here or received: record it, halt if it is this release's last, purge
    /// below it when running, or catch up to it when it is ahead of what we hold.
    fn adopt_cup(&mut self, s: Height, value: Vec<u8>, signature: Vec<u8>) {
        let Ok(content) = CupContent::decode(&value) else {
            return;
        };
        if s <= self.last_cup {
            return;
        }
        self.last_cup = s;
        self.emit(Action::CupReady {
            content: content.clone(),
            signature: signature.clone(),
        });
        if self.halt_at == Some(s) {
            self.halted = true;
            self.emit(Action::Halted { cup_height: s });
            return;
        }
        if self.delivered >= s && self.state_hashes.get(&s) == Some(&content.state_hash) {
            // Running: everything below the CUP can go.
            let keep = self.pool.split_off(&s);
            self.pool = keep;
            self.state_hashes = self.state_hashes.split_off(&s);
            self.finalized_chain = self.finalized_chain.split_off(&s);
        } else if self.finalized < s {
            self.emit(Action::CatchUp { content, signature });
        } else if self
            .state_hashes
            .get(&s)
            .is_some_and(|h| *h != content.state_hash)
        {
            // n - f nodes certified another state than ours at this height: our execution
            // diverged. Never sign anything on top of it; the driver must state-sync.
            self.stats.critical_errors += 1;
            self.emit(Action::CatchUp { content, signature });
        }
    }

    fn receive_cup(&mut self, cup: ThresholdSigned) {
        if cup.height <= self.last_cup {
            return;
        }
        if !self.crypto.verify_threshold(
            Threshold::High,
            domain::CUP_CONTENT,
            &cup.value,
            &cup.signature,
        ) {
            self.stats.invalid_artifacts += 1;
            return;
        }
        match CupContent::decode(&cup.value) {
            Ok(c) if c.subnet_id == self.cfg.subnet_id && c.height == cup.height => {
                self.adopt_cup(cup.height, cup.value, cup.signature)
            }
            _ => self.stats.invalid_artifacts += 1,
        }
    }

    /// Answers a request for heights from `h` on.
    fn answer(&mut self, to: NodeIndex, h: Height) {
        if to == self.cfg.me {
            return;
        }
        let last = &mut self.last_answer_ns[to as usize];
        if last.is_some_and(|t| self.now_ns < t + self.cfg.resend_interval_ns / 4) {
            return;
        }
        *last = Some(self.now_ns);
        if h <= self.base.height {
            // Purged: send the latest CUP we made, from which the peer can resume.
            if let Some(e) = self.last_cup_envelope() {
                self.emit(Action::SendTo(to, e));
            }
            return;
        }
        let mut out = Vec::new();
        let end = h.get() + MAX_HEIGHTS_PER_ANSWER;
        for (hh, p) in self.pool.range(h..Height::new(end)) {
            if let (Some(b), Some(prev)) = (&p.beacon, self.beacon_at(Height::new(hh.get() - 1))) {
                out.push(Artifact::Beacon(ThresholdSigned {
                    height: *hh,
                    value: prev.clone(),
                    signature: b.clone(),
                }));
            }
            let chosen = p
                .finalization
                .as_ref()
                .map(|f| f.hash)
                .or_else(|| self.notarized_block(p).map(|(h, _)| h));
            if let Some(hash) = chosen {
                if let Some(b) = p.blocks.get(&hash) {
                    out.push(Artifact::Proposal(b.proposal.clone()));
                }
                if let Some(n) = p.notarizations.get(&hash) {
                    out.push(Artifact::Notarization(n.clone()));
                }
                if let Some(f) = &p.finalization {
                    out.push(Artifact::Finalization(f.clone()));
                }
            }
            if let Some(c) = &p.certification {
                out.push(Artifact::Certification(c.clone()));
            }
        }
        for a in out {
            let e = self.envelope(a);
            self.emit(Action::SendTo(to, e));
        }
    }

    fn last_cup_envelope(&self) -> Option<Envelope> {
        let s = self.last_cup;
        let p = self.pool.get(&s)?;
        let q = self.cfg.quorum();
        let (value, shares) = p.cup_shares.iter().find(|(_, x)| x.len() >= q)?;
        let shares: Vec<(NodeIndex, &[u8])> = shares
            .iter()
            .take(q)
            .map(|(i, x)| (*i, x.as_slice()))
            .collect();
        let signature = self.crypto.combine_threshold(Threshold::High, &shares)?;
        Some(self.envelope(Artifact::Cup(ThresholdSigned {
            height: s,
            value: value.clone(),
            signature,
        })))
    }

    /// Re-sends this node's latest artifacts after a quiet period (lost messages,
    /// partitions), bounded to a handful per height.
    fn resend(&mut self) {
        let me = self.cfg.me;
        let round = self.round();
        let mut out: Vec<Artifact> = Vec::new();
        let lo = self.finalized.min(round);
        for (h, p) in self.pool.range(lo..=round) {
            let h = *h;
            if let Some(mine) = &p.my_proposal
                && p.finalization.is_none()
            {
                out.push(Artifact::Proposal(mine.clone()));
            }
            if let Some(b) = &p.beacon
                && let Some(prev) = self.beacon_at(Height::new(h.get() - 1))
            {
                out.push(Artifact::Beacon(ThresholdSigned {
                    height: h,
                    value: prev.clone(),
                    signature: b.clone(),
                }));
            } else if let (Some(s), Some(prev)) = (
                p.beacon_shares.get(&me),
                self.beacon_at(Height::new(h.get() - 1)),
            ) {
                out.push(Artifact::BeaconShare(ThresholdShare {
                    height: h,
                    value: prev.clone(),
                    signer: me,
                    signature: s.clone(),
                }));
            }
            for hash in &p.my_notarized {
                if let Some(b) = p.blocks.get(hash) {
                    out.push(Artifact::Proposal(b.proposal.clone()));
                }
                if let Some(n) = p.notarizations.get(hash) {
                    out.push(Artifact::Notarization(n.clone()));
                } else if let Some(s) = p.notar_shares.get(hash).and_then(|m| m.get(&me)) {
                    out.push(Artifact::NotarizationShare(Share {
                        height: h,
                        hash: *hash,
                        signer: me,
                        signature: s.clone(),
                    }));
                }
            }
            if let Some((hash, b)) = self.notarized_block(p) {
                out.push(Artifact::Proposal(b.proposal.clone()));
                if let Some(n) = p.notarizations.get(&hash) {
                    out.push(Artifact::Notarization(n.clone()));
                }
            }
            if let Some(f) = &p.finalization {
                out.push(Artifact::Finalization(f.clone()));
            } else {
                for (hash, m) in &p.final_shares {
                    if let Some(s) = m.get(&me) {
                        out.push(Artifact::FinalizationShare(Share {
                            height: h,
                            hash: *hash,
                            signer: me,
                            signature: s.clone(),
                        }));
                    }
                }
            }
        }
        // Certification and CUP shares above what is settled.
        let lo = self.certified.increment();
        for (h, p) in self
            .pool
            .range(lo..)
            .take_while(|(h, _)| **h <= self.delivered)
        {
            for (v, m) in &p.cert_shares {
                if let Some(s) = m.get(&me) {
                    out.push(Artifact::CertificationShare(ThresholdShare {
                        height: *h,
                        value: v.clone(),
                        signer: me,
                        signature: s.clone(),
                    }));
                }
            }
        }
        if let Some(c) = self
            .pool
            .get(&self.certified)
            .and_then(|p| p.certification.clone())
        {
            out.push(Artifact::Certification(c));
        }
        let interval = self.cfg.dkg_interval_length + 1;
        let s = Height::new(self.delivered.get() / interval * interval);
        if let Some(p) = self.pool.get(&s) {
            for (v, m) in &p.cup_shares {
                if let Some(x) = m.get(&me) {
                    out.push(Artifact::CupShare(ThresholdShare {
                        height: s,
                        value: v.clone(),
                        signer: me,
                        signature: x.clone(),
                    }));
                }
            }
        }
        if let Some(e) = self.last_cup_envelope() {
            out.push(e.artifact);
        }
        for a in out {
            self.broadcast(a);
        }
    }
}

//! The per-height pool of artifacts, and what the pool says about a round: its
//! height, its beacon and ranking, the parent a block extends, the chain's status.

use super::*;

/// What the latest summary at or below a block decided for the interval it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Pin {
    /// The registry version that summary pinned.
    pub(super) rv: RegistryVersion,
    /// Its height.
    pub(super) height: Height,
    /// Whether it carried a quorum's readiness for the pinned replica version.
    pub(super) ready: bool,
    /// Where it stands in a resharing of the threshold keys.
    pub(super) resharing: Resharing,
    /// Its hash (the base's block hash for the base).
    pub(super) summary: CryptoHash,
}

#[derive(Clone, Debug)]
pub(super) struct ValidBlock {
    pub(super) proposal: BlockProposal,
    pub(super) pin: Pin,
}

/// Shares on one value, by signer (unchecked ones included: `combine`).
pub(super) type Shares = BTreeMap<NodeIndex, Vec<u8>>;

#[derive(Clone, Debug, Default)]
pub(super) struct HeightPool {
    pub(super) blocks: BTreeMap<CryptoHash, ValidBlock>,
    pub(super) notar_shares: BTreeMap<CryptoHash, Shares>,
    pub(super) notarizations: BTreeMap<CryptoHash, Aggregate>,
    pub(super) final_shares: BTreeMap<CryptoHash, Shares>,
    pub(super) finalization: Option<Aggregate>,
    pub(super) beacon_shares: Shares,
    pub(super) beacon: Option<Vec<u8>>,
    pub(super) cert_shares: BTreeMap<Vec<u8>, Shares>,
    pub(super) certification: Option<ThresholdSigned>,
    pub(super) cup_shares: BTreeMap<Vec<u8>, Shares>,
    /// The CUP made or adopted at this height (sent to peers that ask; its shares may
    /// include unchecked ones that arrived after it).
    pub(super) cup: Option<ThresholdSigned>,
    /// Makers seen signing two blocks at this height.
    pub(super) equivocators: BTreeSet<NodeIndex>,
    pub(super) makers: BTreeMap<NodeIndex, CryptoHash>,
    // What this node did at this height.
    pub(super) my_notarized: BTreeSet<CryptoHash>,
    pub(super) my_finalized: bool,
    /// The previous beacon this node's beacon share here signs: a share restored from a
    /// chain that a recovery CUP replaced signs another one, and is made again.
    pub(super) my_beacon_share: Option<Vec<u8>>,
    pub(super) my_cert_share: bool,
    pub(super) my_cup_share: bool,
    pub(super) proposed: bool,
    pub(super) my_proposal: Option<BlockProposal>,
    pub(super) round_start_ns: Option<u64>,
    /// Blocks the planted broken rule sent finalization shares for.
    pub(super) broken_final_shares: BTreeSet<CryptoHash>,
}

impl HeightPool {
    /// Notarized, or finalized (which implies notarized).
    pub(super) fn is_notarized(&self, hash: &CryptoHash) -> bool {
        self.notarizations.contains_key(hash)
            || self.finalization.as_ref().is_some_and(|f| f.hash == *hash)
    }

    pub(super) fn notarized_hashes(&self) -> impl Iterator<Item = &CryptoHash> {
        self.notarizations
            .keys()
            .chain(self.finalization.as_ref().map(|f| &f.hash))
    }
}

impl<C: ConsensusCrypto> Consensus<C> {
    pub(super) fn round(&self) -> Height {
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
    pub(super) fn notarized_block<'a>(
        &self,
        p: &'a HeightPool,
    ) -> Option<(CryptoHash, &'a ValidBlock)> {
        p.notarized_hashes()
            .filter_map(|h| p.blocks.get(h).map(|b| (*h, b)))
            .min_by_key(|(h, b)| (b.proposal.block.rank, *h))
    }

    pub(super) fn beacon_at(&self, h: Height) -> Option<&Vec<u8>> {
        if h == self.base.height {
            Some(&self.base.random_beacon)
        } else {
            self.pool.get(&h).and_then(|p| p.beacon.as_ref())
        }
    }

    /// Ranks `0..n` at height `h`: node indices sorted by `H(beacon, h, index)`.
    pub(super) fn ranking(&self, h: Height) -> Option<Vec<NodeIndex>> {
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

    pub(super) fn rank_of(&self, h: Height, node: NodeIndex) -> Option<u32> {
        self.ranking(h)?
            .iter()
            .position(|i| *i == node)
            .map(|r| r as u32)
    }

    /// The parent candidate at `h - 1`: the base, or the lowest-ranked notarized block.
    pub(super) fn parent_of_round(&self, h: Height) -> Option<(CryptoHash, BlockContext, Pin)> {
        let prev = Height::new(h.get() - 1);
        if prev == self.base.height {
            let ctx = BlockContext {
                time_ns: self.base.time_ns,
                registry_version: self.base.registry_version,
                certified_height: self.base.height,
            };
            return Some((self.base.block_hash, ctx, self.base_pin()));
        }
        let p = self.pool.get(&prev)?;
        let (hash, b) = self.notarized_block(p)?;
        Some((hash, b.proposal.block.context.clone(), b.pin))
    }

    /// The base as a pin: its CUP names the release that runs from it, so it counts as
    /// ready when that is not this one (a CUP from before readiness gating names none,
    /// and the old rule, "the pinned version runs", holds).
    pub(super) fn base_pin(&self) -> Pin {
        Pin {
            rv: self.base.registry_version,
            height: self.base.height,
            ready: self
                .base
                .next_version
                .as_ref()
                .is_none_or(|v| *v != self.cfg.version),
            resharing: if self.plans.contains_key(&self.base.block_hash) {
                Resharing::Started
            } else {
                Resharing::None
            },
            summary: self.base.block_hash,
        }
    }

    /// The pin a summary block sets, on a chain whose previous summary set `parent_pin`
    /// (it records the resharing the summary starts or finishes).
    pub(super) fn summary_pin(&mut self, b: &Block, hash: CryptoHash, parent_pin: Pin) -> Pin {
        Pin {
            rv: b.context.registry_version,
            height: b.height,
            ready: b.ready.len() >= self.cfg.quorum(),
            resharing: self.summary_resharing(b, hash, parent_pin),
            summary: hash,
        }
    }

    /// The status of this release for a chain whose latest summary set `pin`.
    pub(super) fn chain_status(&self, pin: Pin) -> Option<Status> {
        let info = self.registry.get(&pin.rv)?;
        let cup_made = self.halted && self.halt_at == Some(pin.height);
        Some(status(
            &self.cfg.version,
            info,
            pin.ready,
            pin.resharing,
            cup_made,
        ))
    }

    pub(super) fn within_bounds(&self, h: Height, summary_height: Height, st: Status) -> bool {
        let next_cup = self.last_cup.get() + self.cfg.dkg_interval_length + 1;
        if h.get() > self.certified.get() + MAX_CERTIFICATION_GAP
            || h.get() > next_cup + MAX_CUP_GAP
        {
            return false;
        }
        // A halting chain never reaches the next summary height.
        !(st != Status::Running && h.get() > summary_height.get() + self.cfg.dkg_interval_length)
    }
}

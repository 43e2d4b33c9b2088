//! Receiving an artifact: bounds, the cheap redundancy check, validation (valid,
//! invalid, or not yet), the queue of not-yet-valid artifacts, and insertion into the pool.

use super::*;

pub(super) enum Validity {
    Valid,
    Invalid(&'static str),
    /// Not valid yet; the reason says what is missing.
    NotYet(&'static str),
}

impl<C: ConsensusCrypto> Consensus<C> {
    pub(super) fn receive(&mut self, from: NodeIndex, artifact: Artifact) {
        let h = artifact.height();
        if let Artifact::Request { height } = artifact {
            self.answer(from, height);
            return;
        }
        if let Artifact::Cup(cup) = &artifact {
            self.receive_cup(cup.clone());
            return;
        }
        if let Artifact::Readiness(r) = artifact {
            self.receive_readiness(r);
            return;
        }
        if let Artifact::Resharing { height, item } = artifact {
            self.receive_resharing(height, item);
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
        // This node makes (and persists first) its own shares; one in its name from
        // anyone else is at best a replay, and pooled it would be re-sent unpersisted.
        if self.redundant(&artifact)
            || (from != self.cfg.me && artifact.share_signer() == Some(self.cfg.me))
        {
            self.stats.redundant_artifacts += 1;
            return;
        }
        match self.validate(from, &artifact) {
            Validity::Valid => self.insert(artifact),
            Validity::Invalid(why) => {
                self.stats.invalid_artifacts += 1;
                self.stats.last_invalid = Some(why);
            }
            Validity::NotYet(why) => {
                self.stats.last_not_yet = Some(why);
                self.note_future_block(&artifact);
                if self.pending.len() >= MAX_PENDING {
                    self.pending.pop_front();
                    self.stats.pending_overflow += 1;
                }
                self.pending.push_back((from, artifact));
            }
        }
    }

    pub(super) fn retry_pending(&mut self) {
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
                match self.validate(from, &a) {
                    Validity::Valid => {
                        self.insert(a);
                        progressed = true;
                    }
                    Validity::Invalid(why) => {
                        self.stats.invalid_artifacts += 1;
                        self.stats.last_invalid = Some(why);
                    }
                    Validity::NotYet(_) => {
                        self.note_future_block(&a);
                        self.pending.push_back((from, a));
                    }
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
    pub(super) fn redundant(&self, a: &Artifact) -> bool {
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
            Artifact::Proposal(_)
            | Artifact::Cup(_)
            | Artifact::Request { .. }
            | Artifact::Readiness(_)
            | Artifact::Resharing { .. } => false,
        }
    }

    /// `from`: the authenticated member that sent `a`. A share from its own signer is
    /// pooled unchecked and checked in its combination (`combine`); a share relayed by
    /// anyone else is checked here, so no one can take an honest signer's place.
    pub(super) fn validate(&self, from: NodeIndex, a: &Artifact) -> Validity {
        let n = self.cfg.n as NodeIndex;
        let checked_later = |signer: NodeIndex| signer == from;
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
                let scheme = Scheme::Threshold(Threshold::Low, domain::RANDOM_BEACON);
                if checked_later(s.signer) || self.verify_share(scheme, s.signer, &m, &s.signature)
                {
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
                if checked_later(s.signer)
                    || self.verify_share(Scheme::Multi(d), s.signer, &m, &s.signature)
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
                let scheme = Scheme::Threshold(Threshold::High, domain::STATE_CERTIFICATION);
                if checked_later(s.signer) || self.verify_share(scheme, s.signer, &m, &s.signature)
                {
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
                let scheme = Scheme::Threshold(Threshold::High, domain::CUP_CONTENT);
                if checked_later(s.signer)
                    || self.verify_share(scheme, s.signer, &s.value, &s.signature)
                {
                    Validity::Valid
                } else {
                    Validity::Invalid("bad CUP share")
                }
            }
            Artifact::Cup(_)
            | Artifact::Request { .. }
            | Artifact::Readiness(_)
            | Artifact::Resharing { .. } => Validity::Invalid("not pooled"),
        }
    }

    pub(super) fn validate_block(&self, p: &BlockProposal) -> Validity {
        let b = &p.block;
        let h = b.height;
        if b.maker as usize >= self.cfg.n {
            return Validity::Invalid("maker out of range");
        }
        // Before the signature: a block from the future waits unverified (and cheaply).
        if self.ahead_of_clock(b.context.time_ns)
            && !self
                .pool
                .get(&h)
                .is_some_and(|pool| pool.is_notarized(&b.hash()))
        {
            return Validity::NotYet("block time ahead of this node's clock");
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
        let (parent_ctx, parent_pin) = if prev == self.base.height {
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
                self.base_pin(),
            )
        } else {
            let Some(pp) = self.pool.get(&prev) else {
                return Validity::NotYet("parent height");
            };
            let Some(parent) = pp.blocks.get(&b.parent) else {
                return Validity::NotYet("parent block");
            };
            // A notarization or finalization of the block itself shows that n - f nodes,
            // f + 1 of them honest, found its parent notarized: the parent block is enough
            // then. A node catching up may hold a descendant's finalization and no
            // notarization of the parent (found by the soak, n = 4, seed 1169).
            let vouched = self
                .pool
                .get(&h)
                .is_some_and(|pool| pool.is_notarized(&b.hash()));
            if !vouched && !pp.is_notarized(&b.parent) {
                return Validity::NotYet("parent notarization");
            }
            (parent.proposal.block.context.clone(), parent.pin)
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
        let Some(st) = self.chain_status(parent_pin) else {
            return Validity::NotYet("chain status");
        };
        if let Err(why) = self.check_ready_words(b) {
            return Validity::Invalid(why);
        }
        if (b.is_summary || st != Status::Running) && !b.payload.is_empty() {
            return Validity::Invalid("payload where the block must be empty");
        }
        if b.payload.len() > self.cfg.max_payload_bytes {
            return Validity::Invalid("payload too large");
        }
        self.check_resharing_items(b, parent_pin, st)
    }

    pub(super) fn insert(&mut self, a: Artifact) {
        let h = a.height();
        let q = self.cfg.quorum();
        match a {
            Artifact::Proposal(p) => {
                let hash = p.block.hash();
                if self
                    .pool
                    .get(&h)
                    .is_some_and(|pool| pool.blocks.contains_key(&hash))
                {
                    return;
                }
                let parent_pin = if h.get() - 1 == self.base.height.get() {
                    self.base_pin()
                } else {
                    let prev = self
                        .pool
                        .get(&Height::new(h.get() - 1))
                        .and_then(|pp| pp.blocks.get(&p.block.parent));
                    match prev {
                        Some(v) => v.pin,
                        None => return,
                    }
                };
                let pin = if p.block.is_summary {
                    self.summary_pin(&p.block, hash, parent_pin)
                } else {
                    parent_pin
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
                pool.blocks.insert(hash, ValidBlock { proposal: p, pin });
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
            Artifact::Cup(_)
            | Artifact::Request { .. }
            | Artifact::Readiness(_)
            | Artifact::Resharing { .. } => {}
        }
    }

    /// Re-inserts a share this node persisted before a restart.
    /// Whether persisted artifacts were made on another chain than the one from the base:
    /// an own beacon share or block at the next height that does not build on the base.
    pub(super) fn made_on_another_chain(&self, restored: &[Envelope]) -> bool {
        let next = self.base.height.increment();
        restored.iter().any(|e| match &e.artifact {
            Artifact::BeaconShare(s) => s.height == next && s.value != self.base.random_beacon,
            Artifact::Proposal(p) => {
                p.block.height == next && p.block.parent != self.base.block_hash
            }
            _ => false,
        })
    }

    pub(super) fn restore(&mut self, a: Artifact) {
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
                pool.my_beacon_share = Some(s.value);
                pool.beacon_shares.insert(s.signer, s.signature);
            }
            _ => {}
        }
    }

    /// A block time this node cannot accept yet: more than the skew bound ahead of its
    /// wall clock.
    pub(super) fn ahead_of_clock(&self, time_ns: u64) -> bool {
        time_ns > self.wall_ns.saturating_add(self.cfg.max_block_time_skew_ns)
            && self.cfg.broken_rule != Some(BrokenRule::IgnoreBlockTimes)
    }

    /// Remembers when a block waiting for this node's clock becomes acceptable, so that
    /// the pending queue is retried then (and `poll_timeout` wakes the node for it).
    fn note_future_block(&mut self, a: &Artifact) {
        if let Artifact::Proposal(p) = a
            && self.ahead_of_clock(p.block.context.time_ns)
        {
            let at = p
                .block
                .context
                .time_ns
                .saturating_sub(self.cfg.max_block_time_skew_ns);
            // Times beyond a day from now are lies or broken clocks: never wake for them.
            if at <= self.wall_ns.saturating_add(MAX_WAKE_AHEAD_NS) {
                self.pending_block_time_ns =
                    Some(self.pending_block_time_ns.map_or(at, |t| t.min(at)));
            }
        }
    }
}

/// The furthest ahead a block time may be and still get a wake-up of its own (it is
/// retried with the rest of the pending queue anyway, whenever something progresses).
const MAX_WAKE_AHEAD_NS: u64 = 3600 * 1_000_000_000;

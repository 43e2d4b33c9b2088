//! The steps of a round: beacon, proposal, notarization, finalization, delivery.

use super::*;

impl<C: ConsensusCrypto> Consensus<C> {
    pub(super) fn beacon_step(&mut self) {
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
        if pool.my_beacon_share.as_ref() != Some(&prev_beacon) {
            // None yet, or one restored from a chain a recovery CUP replaced below this
            // height (`made_on_another_chain` sees only the height above the base): a
            // share on this chain's previous beacon replaces it.
            pool.my_beacon_share = Some(prev_beacon.clone());
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
            let shares = pool.beacon_shares.clone();
            let m = signed_bytes(&self.cfg.version, &(h, &prev_beacon));
            let scheme = Scheme::Threshold(Threshold::Low, domain::RANDOM_BEACON);
            let (combined, bad) = self.combine_checked(scheme, &m, &shares, t);
            let pool = self.pool.entry(h).or_default();
            for i in bad {
                pool.beacon_shares.remove(&i);
            }
            if let Some(c) = combined {
                pool.beacon = Some(c.signature.clone());
                pool.round_start_ns.get_or_insert(self.now_ns);
                self.progress();
                self.broadcast(Artifact::Beacon(ThresholdSigned {
                    height: h,
                    value: prev_beacon,
                    signature: c.signature,
                }));
            }
        }
    }

    pub(super) fn round_started(&mut self, h: Height) -> Option<u64> {
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

    pub(super) fn propose_step(&mut self) {
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
        let Some((parent, pctx, ppin)) = self.parent_of_round(h) else {
            return;
        };
        let Some(st) = self.chain_status(ppin) else {
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
        // An empty rank-0 block would wait out the initial notary delay at every notary:
        // held back until then, it can still take the updates that arrive meanwhile.
        let hold_empty = rank == 0
            && carries_payload
            && self.payload.is_empty()
            && self.now_ns < start.saturating_add(self.cfg.initial_notary_delay_ns);
        if st == Status::Halted
            || !self.within_bounds(h, ppin.height, st)
            || (is_summary && st != Status::Running)
            || (carries_payload && self.payload_stale)
            || hold_empty
        {
            return;
        }
        let stable = self
            .registry
            .keys()
            .next_back()
            .copied()
            .unwrap_or(pctx.registry_version);
        let registry_version = stable.max(pctx.registry_version);
        let ready = if is_summary {
            self.ready_words(registry_version)
        } else {
            Vec::new()
        };
        let block = Block {
            parent,
            height: h,
            rank,
            maker: self.cfg.me,
            context: BlockContext {
                time_ns: self.wall_ns.max(pctx.time_ns.saturating_add(1)),
                registry_version,
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
            ready,
            resharing: if carries_payload && ppin.resharing == Resharing::Started {
                self.resharing_items_for(h, parent, ppin)
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

    pub(super) fn notarize_step(&mut self) {
        let h = self.round();
        let Some(start) = self.round_started(h) else {
            return;
        };
        let me = self.cfg.me;
        let Some(pool) = self.pool.get(&h) else {
            return;
        };
        // The lowest-rank eligible block not yet shared.
        let mut candidates: Vec<(u32, CryptoHash, Pin)> = pool
            .blocks
            .iter()
            .filter(|(_, b)| !pool.equivocators.contains(&b.proposal.block.maker))
            .map(|(hash, b)| (b.proposal.block.rank, *hash, b.pin))
            .collect();
        candidates.sort();
        let Some(&(rank, hash, pin)) = candidates.first() else {
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
        // A summary block is judged by the chain it extends.
        let ppin = if pin.height == h {
            self.parent_of_round(h).map(|p| p.2)
        } else {
            Some(pin)
        };
        let Some(ppin) = ppin else { return };
        let Some(st) = self.chain_status(ppin) else {
            return;
        };
        // The initial notary delay paces the empty rounds of a running subnet and gives
        // the rank-0 block time to arrive before a higher rank is notarized. A rank-0
        // block needs neither when users wait on it (a payload), when it is a summary (it
        // may be the height of an upgrade's CUP) or extends a halting chain (every round
        // until the CUP is downtime): no better block can come, and `min_round` still
        // bounds the pace of rounds.
        let Some(block) = pool.blocks.get(&hash).map(|b| &b.proposal.block) else {
            return;
        };
        let eager =
            rank == 0 && (st != Status::Running || !block.payload.is_empty() || block.is_summary);
        let wait = if eager {
            self.eager_wait(h, &block.parent)
        } else {
            self.cfg.initial_notary_delay_ns + self.cfg.unit_delay_ns * rank as u64
        };
        if self.now_ns < start.saturating_add(wait) {
            return;
        }
        if st == Status::Halted || !self.within_bounds(h, ppin.height, st) {
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

    /// How long after its round began an eager rank-0 block at `h` is notarized: the
    /// minimum round, stretched towards the initial notary delay by how full its parent
    /// was (see [`Config::busy_payload_bytes`]).
    pub(super) fn eager_wait(&self, h: Height, parent: &CryptoHash) -> u64 {
        let (min, full) = (self.cfg.min_round_ns, self.cfg.initial_notary_delay_ns);
        let prev = Height::new(h.get() - 1);
        let bytes = self
            .pool
            .get(&prev)
            .and_then(|p| p.blocks.get(parent))
            .map_or(0, |b| b.proposal.block.payload.len());
        let busy = self.cfg.busy_payload_bytes.max(1);
        let part = bytes.min(busy) as u128;
        min + (full.saturating_sub(min) as u128 * part / busy as u128) as u64
    }

    pub(super) fn try_notarize(&mut self, h: Height) {
        let q = self.cfg.quorum();
        let Some(pool) = self.pool.get(&h) else {
            return;
        };
        let ready: Vec<(CryptoHash, Shares)> = pool
            .notar_shares
            .iter()
            .filter(|(hash, s)| {
                s.len() >= q
                    && pool.blocks.contains_key(*hash)
                    && !pool.notarizations.contains_key(*hash)
            })
            .map(|(hash, s)| (*hash, s.clone()))
            .collect();
        for (hash, shares) in ready {
            let m = self.msg(&(h, hash));
            let (combined, bad) =
                self.combine_checked(Scheme::Multi(domain::NOTARIZATION), &m, &shares, q);
            if let Some(held) = self
                .pool
                .get_mut(&h)
                .and_then(|p| p.notar_shares.get_mut(&hash))
            {
                held.retain(|i, _| !bad.contains(i));
            }
            let Some(c) = combined else { continue };
            let g = Aggregate {
                height: h,
                hash,
                signers: c.signers,
                signature: c.signature,
            };
            self.broadcast(Artifact::Notarization(g.clone()));
            self.insert(Artifact::Notarization(g));
        }
    }

    pub(super) fn finalize_step(&mut self) {
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
            if self.cfg.broken_rule == Some(BrokenRule::FinalizeAfterNotarizingTwo) && !self.halted
            {
                self.broken_finalization_shares(h);
            }
            let Some(pool) = self.pool.get(&h) else {
                continue;
            };
            if pool.finalization.is_some() {
                continue;
            }
            let ready: Vec<(CryptoHash, Shares)> = pool
                .final_shares
                .iter()
                .filter(|(_, s)| s.len() >= q)
                .map(|(hash, s)| (*hash, s.clone()))
                .collect();
            for (hash, shares) in ready {
                let m = self.msg(&(h, hash));
                let (combined, bad) =
                    self.combine_checked(Scheme::Multi(domain::FINALIZATION), &m, &shares, q);
                if let Some(held) = self
                    .pool
                    .get_mut(&h)
                    .and_then(|p| p.final_shares.get_mut(&hash))
                {
                    held.retain(|i, _| !bad.contains(i));
                }
                if let Some(c) = combined {
                    let g = Aggregate {
                        height: h,
                        hash,
                        signers: c.signers,
                        signature: c.signature,
                    };
                    self.broadcast(Artifact::Finalization(g.clone()));
                    self.insert(Artifact::Finalization(g));
                    break;
                }
            }
        }
    }

    /// The planted bug [`BrokenRule::FinalizeAfterNotarizingTwo`].
    pub(super) fn broken_finalization_shares(&mut self, h: Height) {
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
            self.persist_and_broadcast(Artifact::FinalizationShare(Share {
                height: h,
                hash,
                signer: me,
                signature,
            }));
        }
    }

    /// Moves the finalized tip to the highest finalization whose chain we hold, and
    /// delivers the newly finalized blocks in order.
    pub(super) fn deliver_step(&mut self) {
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
            let me = self.cfg.me;
            let top_signed = self
                .pool
                .get(&top)
                .and_then(|p| p.finalization.as_ref())
                .is_some_and(|f| f.signers.contains(&me));
            for (h, hash, block) in chain {
                let notarized_by_me = self
                    .pool
                    .get(&h)
                    .and_then(|p| p.notarizations.get(&hash))
                    .is_some_and(|n| n.signers.contains(&me));
                if notarized_by_me || (h == top && top_signed) {
                    self.own_share_height = Some(h);
                }
                self.finalized = h;
                self.finalized_hash = hash;
                self.finalized_chain.insert(h, hash);
                if self.halt_at.is_some_and(|s| h > s) {
                    continue;
                }
                if block.is_summary
                    && let Some(pin) = self
                        .pool
                        .get(&h)
                        .and_then(|p| p.blocks.get(&hash))
                        .map(|b| b.pin)
                {
                    if self
                        .chain_status(pin)
                        .is_some_and(|st| st != Status::Running)
                    {
                        self.halt_at = Some(h);
                    }
                    // Once an interval, so that nodes that restarted hear it again.
                    self.rebroadcast_readiness();
                }
                self.delivered = h;
                self.emit(Action::Deliver(Delivery {
                    height: h,
                    block_hash: hash,
                    block,
                }));
            }
            self.raise_certified();
            self.progress();
            return;
        }
    }
}

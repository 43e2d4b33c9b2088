//! Recovery: asking peers for missing heights, answering them, re-sending after a
//! quiet period.

use super::*;

impl<C: ConsensusCrypto> Consensus<C> {
    /// Asks a peer for the heights above our finalized one. The peer rotates over the
    /// subnet, starting after the one whose artifact showed we are behind: a faulty peer
    /// that withholds blocks must not be the only one asked.
    pub(super) fn request_catch_up(&mut self, from: NodeIndex) {
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

    /// Answers a request for heights from `h` on.
    pub(super) fn answer(&mut self, to: NodeIndex, h: Height) {
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
        let end = h.get().saturating_add(MAX_HEIGHTS_PER_ANSWER);
        for (hh, p) in self.pool.range(h..Height::new(end)) {
            if let (Some(b), Some(prev)) = (&p.beacon, self.beacon_at(Height::new(hh.get() - 1))) {
                out.push(Artifact::Beacon(ThresholdSigned {
                    height: *hh,
                    value: prev.clone(),
                    signature: b.clone(),
                }));
            }
            // At a finalized height, the block on the finalized chain (which need not be
            // the lowest-ranked notarized one there, nor carry a finalization of its
            // own); above, every notarized block, as any may become the chain's.
            let chosen: Vec<CryptoHash> = match self.finalized_chain.get(hh) {
                Some(hash) => vec![*hash],
                None => p.notarized_hashes().copied().collect(),
            };
            for hash in chosen {
                if let Some(b) = p.blocks.get(&hash) {
                    out.push(Artifact::Proposal(b.proposal.clone()));
                }
                if let Some(n) = p.notarizations.get(&hash) {
                    out.push(Artifact::Notarization(n.clone()));
                }
            }
            if let Some(f) = &p.finalization {
                out.push(Artifact::Finalization(f.clone()));
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

    pub(super) fn last_cup_envelope(&self) -> Option<Envelope> {
        let s = self.last_cup;
        let cup = self.pool.get(&s)?.cup.clone()?;
        Some(self.envelope(Artifact::Cup(cup)))
    }

    /// Re-sends this node's latest artifacts after a quiet period (lost messages,
    /// partitions), bounded to a handful per height.
    pub(super) fn resend(&mut self) {
        self.rebroadcast_readiness();
        self.resend_resharing();
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
            ) && p.my_beacon_share.as_ref() == Some(prev)
            {
                out.push(Artifact::BeaconShare(ThresholdShare {
                    height: h,
                    value: prev.clone(),
                    signer: me,
                    signature: s.clone(),
                }));
            }
            // The evidence against an equivocator, both its blocks: a maker of the next
            // rank that saw only one of them waits for it forever otherwise, while the
            // nodes that saw both notarize neither (found by the soak at n = 4, seeds
            // 2712, 3168 and 3600: a split block maker stalled the subnet for good).
            for maker in &p.equivocators {
                out.extend(
                    p.blocks
                        .values()
                        .filter(|b| b.proposal.block.maker == *maker)
                        .take(2)
                        .map(|b| Artifact::Proposal(b.proposal.clone())),
                );
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

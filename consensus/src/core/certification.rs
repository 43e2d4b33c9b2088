//! State certification and CUPs: shares on state hashes, the CUP at each summary
//! height, adopting a CUP made here or received.

use super::*;

impl<C: ConsensusCrypto> Consensus<C> {
    pub(super) fn share_certification(&mut self, h: Height, state_hash: CryptoHash) {
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

    pub(super) fn try_certify(&mut self, h: Height) {
        let q = self.cfg.quorum();
        let Some(pool) = self.pool.get(&h) else {
            return;
        };
        if pool.certification.is_some() {
            return;
        }
        let ready: Vec<(Vec<u8>, Shares)> = pool
            .cert_shares
            .iter()
            .filter(|(_, s)| s.len() >= q)
            .map(|(v, s)| (v.clone(), s.clone()))
            .collect();
        for (value, shares) in ready {
            let m = signed_bytes(&self.cfg.version, &(h, &value));
            let scheme = Scheme::Threshold(Threshold::High, domain::STATE_CERTIFICATION);
            let (combined, bad) = self.combine_checked(scheme, &m, &shares, q);
            if let Some(held) = self
                .pool
                .get_mut(&h)
                .and_then(|p| p.cert_shares.get_mut(&value))
            {
                held.retain(|i, _| !bad.contains(i));
            }
            if let Some(c) = combined {
                let c = ThresholdSigned {
                    height: h,
                    value,
                    signature: c.signature,
                };
                self.broadcast(Artifact::Certification(c.clone()));
                self.accept_certification(c);
                return;
            }
        }
    }

    pub(super) fn accept_certification(&mut self, c: ThresholdSigned) {
        let h = c.height;
        let pool = self.pool.entry(h).or_default();
        if pool.certification.is_some() {
            return;
        }
        pool.certification = Some(c.clone());
        pool.cert_shares.clear();
        if let Ok(bytes) = <[u8; 32]>::try_from(c.value.as_slice()) {
            // The certified height never passes the finalized one: a certification from
            // further ahead waits in the pool until this node finalizes that height.
            if h > self.certified && h <= self.finalized {
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

    /// Raises the certified height to the highest certification at or below the
    /// finalized height (after finalization moved).
    pub(super) fn raise_certified(&mut self) {
        if self.certified >= self.finalized {
            return;
        }
        let top = self
            .pool
            .range(self.certified.increment()..=self.finalized)
            .rev()
            .find(|(_, p)| {
                p.certification
                    .as_ref()
                    .is_some_and(|c| c.value.len() == 32)
            })
            .map(|(h, _)| *h);
        if let Some(h) = top {
            self.certified = h;
        }
    }

    pub(super) fn cup_content(&self, s: Height) -> Option<CupContent> {
        let pool = self.pool.get(&s)?;
        let block_hash = *self.finalized_chain.get(&s)?;
        let valid = pool.blocks.get(&block_hash)?;
        let block = &valid.proposal.block;
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
            next_replica_version: Some(self.version_after(valid.pin)?),
            committee: self.committee_record(&block_hash),
            extensions: Default::default(),
        })
    }

    /// The release that runs after a summary that set `pin`: the pinned version if it
    /// stops this one (not while a resharing it starts holds it back), else this one.
    fn version_after(&self, pin: Pin) -> Option<ReplicaVersion> {
        let info = self.registry.get(&pin.rv)?;
        let ready = pin.ready && pin.resharing != Resharing::Started;
        Some(if ready && info.replica_version != self.cfg.version {
            info.replica_version.clone()
        } else {
            self.cfg.version.clone()
        })
    }

    pub(super) fn cup_step(&mut self) {
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

    pub(super) fn try_make_cup(&mut self, s: Height, value: Vec<u8>) {
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
        let shares = shares.clone();
        let scheme = Scheme::Threshold(Threshold::High, domain::CUP_CONTENT);
        let (combined, bad) = self.combine_checked(scheme, &value, &shares, q);
        if let Some(held) = self
            .pool
            .get_mut(&s)
            .and_then(|p| p.cup_shares.get_mut(&value))
        {
            held.retain(|i, _| !bad.contains(i));
        }
        let Some(Combined { signature, .. }) = combined else {
            return;
        };
        self.broadcast(Artifact::Cup(ThresholdSigned {
            height: s,
            value: value.clone(),
            signature: signature.clone(),
        }));
        self.adopt_cup(s, value, signature);
    }

    /// A CUP made here or received: record it, halt if it is this release's last, purge
    /// below it when running, or catch up to it when it is ahead of what we hold.
    pub(super) fn adopt_cup(&mut self, s: Height, value: Vec<u8>, signature: Vec<u8>) {
        let Ok(content) = CupContent::decode(&value) else {
            return;
        };
        if s <= self.last_cup {
            return;
        }
        self.last_cup = s;
        self.pool.entry(s).or_default().cup = Some(ThresholdSigned {
            height: s,
            value: value.clone(),
            signature: signature.clone(),
        });
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
            self.purge_resharing(s);
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

    pub(super) fn receive_cup(&mut self, cup: ThresholdSigned) {
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
}

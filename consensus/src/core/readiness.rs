//! Readiness: each node's signed word on the release the registry deploys to the subnet
//! (its orchestrator fetched, verified and rehearsed it, or could not, and why), gossiped
//! to every node, and carried in summary blocks that pin a new replica version. Such a
//! summary halts this release only with `n - f` ready words for the version it pins
//! (`Pin::ready`), so every honest node picks the same halting height from the chain.

use super::*;

impl<C: ConsensusCrypto> Consensus<C> {
    /// Every node's latest word, by signer (this node's own included).
    pub fn readiness(&self) -> impl Iterator<Item = &Readiness> {
        self.readiness.values()
    }

    /// This node's word, from its driver: signed, kept and gossiped when it changed.
    pub(super) fn own_readiness(&mut self, version: ReplicaVersion, ready: bool, reason: String) {
        let me = self.cfg.me;
        let reason: String = truncate(reason, MAX_READINESS_REASON_BYTES);
        if self
            .readiness
            .get(&me)
            .is_some_and(|r| r.version == version && r.ready == ready && r.reason == reason)
        {
            return;
        }
        let word = self.sign_word(version, ready, reason);
        self.readiness.insert(me, word.clone());
        self.broadcast(Artifact::Readiness(word));
    }

    /// Gossips this node's word again (once an interval and on re-sending), signed
    /// anew at the current finalized height: peers keep the word of the highest height,
    /// and a restarted node's first words carry the lower height of its CUP, so without
    /// this its peers would keep its word from before the restart (found by the
    /// end-to-end upgrade test: three nodes ready, each seeing the others not ready).
    pub(super) fn rebroadcast_readiness(&mut self) {
        let Some(word) = self.readiness.get(&self.cfg.me) else {
            return;
        };
        let word = if word.height < self.finalized {
            self.sign_word(word.version.clone(), word.ready, word.reason.clone())
        } else {
            word.clone()
        };
        self.readiness.insert(self.cfg.me, word.clone());
        self.broadcast(Artifact::Readiness(word));
    }

    fn sign_word(&self, version: ReplicaVersion, ready: bool, reason: String) -> Readiness {
        let mut word = Readiness {
            signer: self.cfg.me,
            height: self.finalized,
            version,
            ready,
            reason,
            signature: Vec::new(),
        };
        word.signature = self
            .crypto
            .sign_node(domain::UPGRADE_READINESS, &self.msg(&word.signed_part()));
        word
    }

    /// A peer's word: kept if it is valid and newer than the one held for its signer.
    pub(super) fn receive_readiness(&mut self, r: Readiness) {
        if r.signer == self.cfg.me {
            return;
        }
        // The highest height wins; at one height, a changed word too (a node whose
        // verdict changed before its finalized height moved).
        if self
            .readiness
            .get(&r.signer)
            .is_some_and(|held| held.height > r.height || *held == r)
        {
            self.stats.redundant_artifacts += 1;
            return;
        }
        if let Err(why) = self.check_word(&r) {
            self.stats.invalid_artifacts += 1;
            self.stats.last_invalid = Some(why);
            return;
        }
        self.readiness.insert(r.signer, r);
    }

    fn check_word(&self, r: &Readiness) -> Result<(), &'static str> {
        if r.signer as usize >= self.cfg.n {
            return Err("readiness signer out of range");
        }
        if r.reason.len() > MAX_READINESS_REASON_BYTES {
            return Err("readiness reason too long");
        }
        if !self.crypto.verify_node(
            r.signer,
            domain::UPGRADE_READINESS,
            &self.msg(&r.signed_part()),
            &r.signature,
        ) {
            return Err("bad readiness signature");
        }
        Ok(())
    }

    /// The ready words a summary pinning `rv` carries: for the version `rv` assigns the
    /// subnet, when that is not this release (nothing to gate otherwise).
    pub(super) fn ready_words(&self, rv: RegistryVersion) -> Vec<Readiness> {
        let Some(info) = self.registry.get(&rv) else {
            return Vec::new();
        };
        if info.replica_version == self.cfg.version {
            return Vec::new();
        }
        self.readiness
            .values()
            .filter(|r| r.ready && r.version == info.replica_version)
            .cloned()
            .collect()
    }

    /// A block's ready words: only in summary blocks, only for the pinned version when
    /// it is a new one, one per node in signer order, each signed by its node.
    pub(super) fn check_ready_words(&self, b: &Block) -> Result<(), &'static str> {
        if b.ready.is_empty() {
            return Ok(());
        }
        if !b.is_summary {
            return Err("readiness outside a summary block");
        }
        if b.ready.len() > self.cfg.n {
            return Err("more ready words than nodes");
        }
        let Some(info) = self.registry.get(&b.context.registry_version) else {
            return Err("readiness for an unknown registry version");
        };
        if info.replica_version == self.cfg.version {
            return Err("readiness for the running version");
        }
        if !b.ready.windows(2).all(|w| w[0].signer < w[1].signer) {
            return Err("ready words not in signer order");
        }
        for r in &b.ready {
            if !r.ready || r.version != info.replica_version {
                return Err("a ready word for another version, or not ready");
            }
            self.check_word(r)?;
        }
        Ok(())
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

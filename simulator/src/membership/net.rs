//! The seeded network the membership simulator runs its cores on, and what Byzantine
//! members do to what they send.

use super::*;

/// One machine: its keys (the old committee's also hold genesis shares).
pub(super) struct Machine {
    pub(super) id: NodeId,
    pub(super) ed: Ed25519KeyPair,
    pub(super) bls: BlsSecretKey,
    pub(super) enc: EncryptionSecretKey,
}

pub(super) struct Net {
    pub(super) rng: ChaCha20Rng,
    pub(super) now: u64,
    pub(super) seq: u64,
    pub(super) cores: Vec<Consensus<RealCrypto>>,
    /// Each core's index in its committee (a silent member has no core).
    pub(super) index: Vec<NodeIndex>,
    pub(super) queue: BTreeMap<(u64, u64), (usize, usize, Envelope)>,
    pub(super) byzantine: BTreeMap<usize, Dealer>,
    /// Actions each core emitted, in order (CUPs and halts are read from here).
    pub(super) cups: Vec<Vec<(CupContent, Vec<u8>)>>,
    pub(super) digest: Sha256,
    /// The registry versions a core restarted from a CUP knows.
    pub(super) registry: Vec<(RegistryVersion, SubnetInfo)>,
}

impl Net {
    pub(super) fn clock(&self) -> Now {
        Now {
            mono_ns: SEC + self.now,
            wall_ns: WALL + self.now,
        }
    }

    fn send(&mut self, from: usize, to: usize, e: Envelope) {
        if self.rng.random_bool(0.02) {
            return;
        }
        let copies = if self.rng.random_bool(0.02) { 2 } else { 1 };
        for _ in 0..copies {
            let at = self.now + self.rng.random_range(MS..40 * MS);
            self.seq += 1;
            self.queue.insert((at, self.seq), (from, to, e.clone()));
        }
    }

    /// Drains core `i`'s actions: sends (through its Byzantine behaviour), executions.
    fn drain(&mut self, i: usize) {
        while let Some(a) = self.cores[i].poll_action() {
            match a {
                Action::Broadcast(e) => {
                    let Some(e) = self.tamper(i, e) else { continue };
                    for j in 0..self.cores.len() {
                        if j != i {
                            self.send(i, j, e.clone());
                        }
                    }
                }
                Action::SendTo(j, e) => {
                    if let (Some(e), Some(to)) =
                        (self.tamper(i, e), self.index.iter().position(|x| *x == j))
                    {
                        self.send(i, to, e);
                    }
                }
                Action::Deliver(d) => {
                    let state_hash =
                        CryptoHash::of(domain::STATE_HASH, &d.height.get().to_be_bytes());
                    let now = self.clock();
                    self.cores[i].on_event(
                        now,
                        Event::StateComputed {
                            height: d.height,
                            state_hash,
                        },
                    );
                }
                Action::CupReady { content, signature } => {
                    self.digest.update(content.encode());
                    self.cups[i].push((content, signature));
                }
                // A node that fell behind a CUP its peers purged below restarts from it,
                // as its replica does after syncing the state there.
                Action::CatchUp { content, .. } => self.restart_from(i, &content),
                _ => {}
            }
        }
    }

    /// Core `i` again, from `content`, with the same keys and configuration.
    fn restart_from(&mut self, i: usize, content: &CupContent) {
        let old = &self.cores[i];
        let crypto = old.crypto().duplicate();
        let now = self.clock();
        self.cores[i] = Consensus::new(
            old.config().clone(),
            crypto,
            Base::from_cup(content),
            self.registry.clone(),
            Vec::new(),
            now,
        )
        .expect("config");
    }

    /// A Byzantine member's sends: its blocks never arrive; its dealing is spoiled or
    /// withheld, its answers kept back, as its behaviour says.
    fn tamper(&mut self, i: usize, e: Envelope) -> Option<Envelope> {
        let Some(b) = self.byzantine.get(&i).copied() else {
            return Some(e);
        };
        let artifact = match e.artifact {
            Artifact::Proposal(_) => return None,
            Artifact::Resharing {
                item: ResharingItem::Dealing(_),
                ..
            } if b == Dealer::Withhold => return None,
            Artifact::Resharing {
                item: ResharingItem::Answer(_),
                ..
            } if b == Dealer::BadValues => return None,
            Artifact::Resharing {
                height,
                item: ResharingItem::Dealing(mut d),
            } if matches!(b, Dealer::BadValues | Dealer::BadValuesAnswered) => {
                let m = d.dealing.high.ciphertexts.len();
                // Spoil a third of the receivers' values (at least one), both keys.
                let mut targets: Vec<usize> = (0..m).collect();
                targets.shuffle(&mut self.rng);
                for &j in targets.iter().take((m / 3).max(1)) {
                    d.dealing.low.ciphertexts[j][0] ^= 1;
                    d.dealing.high.ciphertexts[j][0] ^= 1;
                }
                let core = &self.cores[i];
                let view = core.resharing_view()?;
                let context = core.resharing_context()?;
                d.signature = core.crypto().sign_node(
                    domain::RESHARING_DEALING,
                    &dealing_message(&view.version, &context, &d.dealing),
                );
                Artifact::Resharing {
                    height,
                    item: ResharingItem::Dealing(d),
                }
            }
            a => a,
        };
        Some(Envelope { artifact, ..e })
    }

    /// Hands each of `nodes` the newest CUP a peer of it made, if newer than its own.
    pub(super) fn relay_cups(&mut self, nodes: &[usize]) {
        let newest = (0..self.cores.len())
            .filter_map(|i| self.cups[i].last().map(|c| (c.0.height, i)))
            .max();
        let Some((height, from)) = newest else {
            return;
        };
        let (content, signature) = self.cups[from].last().cloned().expect("a CUP");
        for &i in nodes {
            if self.cups[i].last().is_some_and(|c| c.0.height >= height) {
                continue;
            }
            let now = self.clock();
            let envelope = Envelope {
                version: version(),
                artifact: Artifact::Cup(consensus::artifact::ThresholdSigned {
                    height,
                    value: content.encode(),
                    signature: signature.clone(),
                }),
            };
            self.cores[i].on_event(
                now,
                Event::Message {
                    from: self.index[from],
                    envelope,
                },
            );
        }
    }

    /// Runs until `done` or the patience runs out; returns whether `done` held.
    pub(super) fn run_until(
        &mut self,
        mut done: impl FnMut(&mut Self) -> bool,
        mut each_tick: impl FnMut(&mut Self),
    ) -> bool {
        let deadline = self.now + PATIENCE_NS;
        let mut next_tick = self.now;
        while self.now < deadline {
            for i in 0..self.cores.len() {
                self.drain(i);
            }
            if done(self) {
                return true;
            }
            if self.now >= next_tick {
                each_tick(self);
                next_tick = self.now + 100 * MS;
            }
            // The next event: a message, a core's timer, or the next tick.
            let timer = (0..self.cores.len())
                .filter_map(|i| {
                    self.cores[i]
                        .poll_timeout()
                        .map(|t| (t.saturating_sub(SEC), i))
                })
                .min();
            let message = self.queue.keys().next().copied();
            let at = [timer.map(|t| t.0), message.map(|m| m.0), Some(next_tick)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(deadline)
                .max(self.now);
            self.now = at;
            if let Some(k) = message.filter(|m| m.0 <= at)
                && let Some((from, to, envelope)) = self.queue.remove(&k)
            {
                let now = self.clock();
                self.cores[to].on_event(
                    now,
                    Event::Message {
                        from: self.index[from],
                        envelope,
                    },
                );
                continue;
            }
            if let Some((_, i)) = timer.filter(|t| t.0 <= at) {
                let now = self.clock();
                self.cores[i].on_event(now, Event::Timer);
            }
        }
        false
    }
}

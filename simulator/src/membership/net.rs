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
    /// What each core persisted (its own shares, blocks and dealings), as its replica's
    /// pool store keeps them across a crash.
    pub(super) persisted: Vec<Vec<Envelope>>,
    /// Where each core started: its restart point when it made no CUP since.
    pub(super) bases: Vec<Base>,
    pub(super) faults: Faults,
    /// The new-committee receivers whose complaints a finalized block carried.
    pub(super) complained_on_chain: BTreeSet<u32>,
    /// How far each core's finalized height fell behind the most advanced core's, at
    /// most, sampled at every tick.
    pub(super) max_lag: Vec<u64>,
}

/// The seed's faults besides the network's and the Byzantine members': at most one
/// crash of an honest old member and one partition of the old committee, each over a
/// window of virtual time that may cover any part of the resharing.
#[derive(Clone, Debug, Default)]
pub(super) struct Faults {
    /// `(node, from, until)`: down (nothing in or out), then restarted from its newest
    /// CUP and what it persisted.
    pub(super) crash: Option<(usize, u64, u64)>,
    pub(super) restarted: bool,
    /// `(side of each node, from, until)`: nothing crosses between the two sides.
    pub(super) partition: Option<(Vec<bool>, u64, u64)>,
}

impl Faults {
    /// Draws the faults of a seed from their own generator, so the seed's other draws
    /// stay what they were without faults.
    pub(super) fn draw(seed: u64, honest_old: &[usize], n: usize) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0xfa17);
        let mut f = Faults::default();
        if rng.random_bool(0.5) && !honest_old.is_empty() {
            let node = honest_old[rng.random_range(0..honest_old.len())];
            let from = rng.random_range(0..3 * SEC);
            f.crash = Some((node, from, from + rng.random_range(200 * MS..4 * SEC)));
        }
        if rng.random_bool(0.5) {
            let side: Vec<bool> = (0..n).map(|_| rng.random_bool(0.5)).collect();
            let from = rng.random_range(0..3 * SEC);
            f.partition = Some((side, from, from + rng.random_range(200 * MS..3 * SEC)));
        }
        f
    }

    /// What the result reports of them.
    pub(super) fn describe(&self) -> Vec<String> {
        let ms = |t: u64| t / MS;
        let mut out = Vec::new();
        if let Some((node, from, until)) = self.crash {
            out.push(format!(
                "crash of node {node} {}..{} ms",
                ms(from),
                ms(until)
            ));
        }
        if let Some((side, from, until)) = &self.partition {
            let a: Vec<usize> = (0..side.len()).filter(|i| side[*i]).collect();
            out.push(format!(
                "partition {a:?} | rest {}..{} ms",
                ms(*from),
                ms(*until)
            ));
        }
        out
    }

    /// Whether node `i` was cut off from the subnet's quorum at some point: the crashed
    /// node, or one on the side of the partition without `quorum` nodes.
    pub(super) fn cut_off(&self, i: usize, quorum: usize) -> bool {
        let crashed = self.crash.is_some_and(|(node, _, _)| node == i);
        let partitioned = self.partition.as_ref().is_some_and(|(side, _, _)| {
            let mine = side.get(i).copied();
            let with_me = side.iter().filter(|s| Some(**s) == mine).count();
            mine.is_some() && with_me < quorum
        });
        crashed || partitioned
    }

    fn down(&self, i: usize, now: u64) -> bool {
        self.crash
            .is_some_and(|(node, from, until)| node == i && (from..until).contains(&now))
    }

    fn cut(&self, a: usize, b: usize, now: u64) -> bool {
        self.partition.as_ref().is_some_and(|(side, from, until)| {
            (*from..*until).contains(&now)
                && side.get(a).zip(side.get(b)).is_some_and(|(x, y)| x != y)
        })
    }
}

impl Net {
    pub(super) fn clock(&self) -> Now {
        Now {
            mono_ns: SEC + self.now,
            wall_ns: WALL + self.now,
        }
    }

    /// Whether core `i` is crashed now (it receives, sends and decides nothing).
    pub(super) fn down(&self, i: usize) -> bool {
        self.faults.down(i, self.now)
    }

    fn send(&mut self, from: usize, to: usize, e: Envelope) {
        if self.rng.random_bool(0.02) || self.faults.cut(from, to, self.now) {
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
            if self.down(i) {
                // A crashed node's core is replaced at its restart: what it does while
                // down never leaves the machine.
                continue;
            }
            match a {
                Action::Persist(e) => self.persisted[i].push(e),
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
                    for item in &d.block.resharing {
                        if let ResharingItem::Complaint(c) = item {
                            self.complained_on_chain.insert(c.complaint.receiver);
                        }
                    }
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
        self.restart(i, Base::from_cup(content));
    }

    /// Core `i` again from `base`, with what it persisted above it.
    fn restart(&mut self, i: usize, base: Base) {
        self.persisted[i].retain(|e| e.artifact.height() > base.height);
        let old = &self.cores[i];
        let crypto = old.crypto().duplicate();
        let now = self.clock();
        self.cores[i] = Consensus::new(
            old.config().clone(),
            crypto,
            base,
            self.registry.clone(),
            self.persisted[i].clone(),
            now,
        )
        .expect("config");
    }

    /// Restarts the crashed core once its window is over: from its newest CUP (or where
    /// it started) with what it persisted above it, as its replica starts again.
    fn restart_crashed(&mut self) {
        let Some((i, _, until)) = self.faults.crash else {
            return;
        };
        if self.faults.restarted || self.now < until {
            return;
        }
        self.faults.restarted = true;
        let base = match self.cups[i].last() {
            Some((content, _)) => Base::from_cup(content),
            None => self.bases[i].clone(),
        };
        self.restart(i, base);
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
            if self.down(i) || self.cups[i].last().is_some_and(|c| c.0.height >= height) {
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
            self.restart_crashed();
            for i in 0..self.cores.len() {
                self.drain(i);
            }
            if done(self) {
                return true;
            }
            if self.now >= next_tick {
                let heights: Vec<u64> = self
                    .cores
                    .iter()
                    .map(|c| c.finalized_height().get())
                    .collect();
                let top = heights.iter().copied().max().unwrap_or(0);
                for (lag, h) in self.max_lag.iter_mut().zip(&heights) {
                    *lag = (*lag).max(top - h);
                }
                each_tick(self);
                next_tick = self.now + 100 * MS;
            }
            // The next event: a message, a core's timer, or the next tick.
            let timer = (0..self.cores.len())
                .filter(|i| !self.down(*i))
                .filter_map(|i| {
                    self.cores[i]
                        .poll_timeout()
                        .map(|t| (t.saturating_sub(SEC), i))
                })
                .min();
            let message = self.queue.keys().next().copied();
            let restart = self
                .faults
                .crash
                .filter(|_| !self.faults.restarted)
                .map(|c| c.2);
            let at = [
                timer.map(|t| t.0),
                message.map(|m| m.0),
                Some(next_tick),
                restart,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(deadline)
            .max(self.now);
            self.now = at;
            if let Some(k) = message.filter(|m| m.0 <= at)
                && let Some((from, to, envelope)) = self.queue.remove(&k)
            {
                if self.down(to) {
                    continue;
                }
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

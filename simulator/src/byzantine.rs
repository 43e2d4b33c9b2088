//! What Byzantine nodes do: each behaviour rewrites, adds to or withholds what a node
//! sends, drawn from the seed.

use super::*;

/// What a Byzantine node does on top of (or instead of) the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Byzantine {
    // (The list of all behaviors is `BEHAVIORS`.)
    /// As block maker, sends one block to half the subnet and a different one to the rest.
    Equivocate,
    /// Corrupts the signature of everything it sends.
    BadSignatures,
    /// Sends no shares and no blocks.
    Withhold,
    /// Also re-sends old artifacts it sent before.
    Replay,
    /// Also sends its artifacts tagged with another protocol version.
    WrongVersion,
    /// Also sends CUP shares and CUPs with forged content and signatures.
    ForgeCupShares,
    /// As block maker, sends its blocks with a time of its choosing, under a valid
    /// signature: the largest time there is, a day ahead, just past what honest nodes
    /// accept, or just past the parent's.
    BlockTimes,
    /// Also sends artifacts with absurd fields: heights at the end of the range and
    /// requests for them, aggregates with repeated or out-of-range signers, a payload
    /// over the limit under a valid signature, CUP content that does not decode.
    Malformed,
    /// Asks everyone for heights all the time, and answers requests with lies: blocks of
    /// a chain of its own under valid maker signatures, aggregates that do not verify,
    /// and a forged CUP far ahead.
    LyingCatchUp,
    /// Follows the protocol, and answers state-sync requests with lies: manifests that
    /// lead elsewhere, chunks with a changed, extra, missing or swapped entry, a changed
    /// sibling, a skipped or repeated run, another height's entries, or nothing at all.
    LyingStateSync,
    /// Its orchestrator's CUP endpoint answers with forged, foreign, stale, replayed and
    /// made-up CUPs (`orchestration.rs`); its consensus traffic is honest.
    BadCupAnswers,
    /// Says it is ready for the deployed release although its preflight failed, and at
    /// the switch runs nothing (`machines.rs`); its consensus traffic is honest.
    LyingReadiness,
}

pub const BEHAVIORS: [Byzantine; 12] = [
    Byzantine::Equivocate,
    Byzantine::BadSignatures,
    Byzantine::Withhold,
    Byzantine::Replay,
    Byzantine::WrongVersion,
    Byzantine::ForgeCupShares,
    Byzantine::BlockTimes,
    Byzantine::Malformed,
    Byzantine::LyingCatchUp,
    Byzantine::LyingStateSync,
    Byzantine::BadCupAnswers,
    Byzantine::LyingReadiness,
];

impl Byzantine {
    /// The name `simulate --behaviors` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Equivocate => "equivocate",
            Self::BadSignatures => "bad-signatures",
            Self::Withhold => "withhold",
            Self::Replay => "replay",
            Self::WrongVersion => "wrong-version",
            Self::ForgeCupShares => "forge-cup-shares",
            Self::BlockTimes => "block-times",
            Self::Malformed => "malformed",
            Self::LyingCatchUp => "lying-catch-up",
            Self::LyingStateSync => "lying-state-sync",
            Self::BadCupAnswers => "bad-cup-answers",
            Self::LyingReadiness => "lying-readiness",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        BEHAVIORS.into_iter().find(|b| b.name() == name)
    }
}

impl Sim {
    /// What a node sends, after its Byzantine behavior (if any) had its way.
    pub(crate) fn outgoing(&mut self, from: NodeIndex, to: Option<NodeIndex>, envelope: Envelope) {
        let n = self.cfg.nodes as NodeIndex;
        let targets: Vec<NodeIndex> = match to {
            Some(t) => vec![t],
            None => (0..n).filter(|j| *j != from).collect(),
        };
        let behavior = self.nodes[from as usize].byzantine;
        if let Artifact::Proposal(p) = &envelope.artifact {
            self.block_times
                .insert(p.block.hash(), p.block.context.time_ns);
        }
        let mut sends: Vec<(NodeIndex, Envelope)> = Vec::new();
        match behavior {
            // Lying state-sync peers and bad CUP endpoints lie in their answers
            // (state.rs, orchestration.rs) only.
            None
            | Some(Byzantine::LyingStateSync)
            | Some(Byzantine::BadCupAnswers)
            | Some(Byzantine::LyingReadiness) => {
                sends.extend(targets.iter().map(|t| (*t, envelope.clone())))
            }
            Some(Byzantine::Withhold) => {
                let is_share_or_block = matches!(
                    envelope.artifact,
                    Artifact::Proposal(_)
                        | Artifact::NotarizationShare(_)
                        | Artifact::FinalizationShare(_)
                        | Artifact::BeaconShare(_)
                        | Artifact::CertificationShare(_)
                        | Artifact::CupShare(_)
                );
                if !is_share_or_block {
                    sends.extend(targets.iter().map(|t| (*t, envelope.clone())));
                }
            }
            Some(Byzantine::BadSignatures) => {
                let mut e = envelope.clone();
                corrupt_signature(&mut e.artifact);
                sends.extend(targets.iter().map(|t| (*t, e.clone())));
            }
            Some(Byzantine::Equivocate) => {
                let node = &mut self.nodes[from as usize];
                match (&envelope.artifact, node.core.as_ref()) {
                    (Artifact::Proposal(p), Some(core)) => {
                        let mut other = p.clone();
                        other.block.context.time_ns += 1;
                        other.signature = core
                            .crypto()
                            .sign_block(&signed_bytes(&envelope.version, &other.block.hash()));
                        node.twins
                            .insert(p.block.height, (p.block.hash(), other.block.hash()));
                        let twin = Envelope {
                            version: envelope.version.clone(),
                            artifact: Artifact::Proposal(other),
                        };
                        sends.extend(split(&targets, &envelope, &twin));
                    }
                    // It votes for each twin where it sent that twin.
                    (
                        Artifact::NotarizationShare(sh) | Artifact::FinalizationShare(sh),
                        Some(core),
                    ) if node
                        .twins
                        .get(&sh.height)
                        .is_some_and(|(x, _)| *x == sh.hash) =>
                    {
                        let (_, y) = node.twins[&sh.height];
                        let notarization =
                            matches!(envelope.artifact, Artifact::NotarizationShare(_));
                        let d = if notarization {
                            domain::NOTARIZATION
                        } else {
                            domain::FINALIZATION
                        };
                        let mut other = sh.clone();
                        other.hash = y;
                        other.signature = core
                            .crypto()
                            .sign_multi(d, &signed_bytes(&envelope.version, &(sh.height, y)));
                        let other = if notarization {
                            Artifact::NotarizationShare(other)
                        } else {
                            Artifact::FinalizationShare(other)
                        };
                        let twin = Envelope {
                            version: envelope.version.clone(),
                            artifact: other,
                        };
                        sends.extend(split(&targets, &envelope, &twin));
                    }
                    _ => sends.extend(targets.iter().map(|t| (*t, envelope.clone()))),
                }
            }
            Some(Byzantine::Replay) => {
                sends.extend(targets.iter().map(|t| (*t, envelope.clone())));
                let history = &self.nodes[from as usize].sent;
                if !history.is_empty() && self.rng.random_bool(0.3) {
                    let old = history[self.rng.random_range(0..history.len())].clone();
                    sends.extend(targets.iter().map(|t| (*t, old.clone())));
                }
            }
            Some(Byzantine::WrongVersion) => {
                sends.extend(targets.iter().map(|t| (*t, envelope.clone())));
                let other = if envelope.version == self.version_a {
                    &self.version_b
                } else {
                    &self.version_a
                };
                let mut e = envelope.clone();
                e.version = other.clone();
                corrupt_signature(&mut e.artifact);
                sends.extend(targets.iter().map(|t| (*t, e.clone())));
            }
            Some(Byzantine::ForgeCupShares) => {
                sends.extend(targets.iter().map(|t| (*t, envelope.clone())));
                if let Some(core) = &self.nodes[from as usize].core {
                    let interval = self.cfg.dkg_interval_length + 1;
                    let s = Height::new((core.finalized_height().get() / interval + 1) * interval);
                    let content = CupContent {
                        subnet_id: self.subnet,
                        height: s,
                        block_hash: hash(&[b"forged block"]),
                        block_time_ns: self.now,
                        registry_version: RegistryVersion::new(1),
                        replica_version: envelope.version.clone(),
                        random_beacon: cup::RandomBeacon(vec![7; 32]),
                        state_hash: hash(&[b"forged state"]),
                        oldest_registry_version_in_use: RegistryVersion::new(1),
                        next_replica_version: None,
                        committee: None,
                        extensions: Default::default(),
                    };
                    let value = content.encode();
                    let forged = [
                        Artifact::CupShare(consensus::artifact::ThresholdShare {
                            height: s,
                            value: value.clone(),
                            signer: from,
                            signature: vec![1; 64],
                        }),
                        Artifact::Cup(consensus::artifact::ThresholdSigned {
                            height: s,
                            value,
                            signature: vec![2; 32],
                        }),
                    ];
                    for a in forged {
                        let e = Envelope {
                            version: envelope.version.clone(),
                            artifact: a,
                        };
                        sends.extend(targets.iter().map(|t| (*t, e.clone())));
                    }
                }
            }
            Some(Byzantine::BlockTimes) => {
                let e = self
                    .lie_about_time(from, &envelope)
                    .unwrap_or(envelope.clone());
                sends.extend(targets.iter().map(|t| (*t, e.clone())));
            }
            Some(Byzantine::Malformed) => {
                sends.extend(targets.iter().map(|t| (*t, envelope.clone())));
                if self.rng.random_bool(0.3) {
                    let a = self.malformed(from, &envelope);
                    let e = Envelope {
                        version: envelope.version.clone(),
                        artifact: a,
                    };
                    sends.extend(targets.iter().map(|t| (*t, e.clone())));
                }
            }
            Some(Byzantine::LyingCatchUp) => {
                let lies = match (to, &envelope.artifact) {
                    // An answer to a request: lies instead of the truth.
                    (Some(_), a) if !matches!(a, Artifact::Request { .. }) => {
                        self.lies_for(from, &envelope)
                    }
                    _ => vec![envelope.clone()],
                };
                for e in lies {
                    sends.extend(targets.iter().map(|t| (*t, e.clone())));
                }
                if to.is_none() && self.rng.random_bool(0.3) {
                    let height = self.nodes[from as usize]
                        .core
                        .as_ref()
                        .map_or(Height::new(1), |c| c.finalized_height().increment());
                    let ask = Envelope {
                        version: envelope.version.clone(),
                        artifact: Artifact::Request { height },
                    };
                    let all: Vec<NodeIndex> = (0..n).filter(|j| *j != from).collect();
                    sends.extend(all.into_iter().map(|t| (t, ask.clone())));
                }
            }
        }
        if behavior.is_some() {
            let history = &mut self.nodes[from as usize].sent;
            if history.len() < 256 {
                history.push(envelope);
            }
        }
        for (t, e) in sends {
            self.send(from, t, e);
        }
    }
}

impl Sim {
    /// A Byzantine block maker's block with a time of its choosing, signed again.
    fn lie_about_time(&mut self, from: NodeIndex, e: &Envelope) -> Option<Envelope> {
        let Artifact::Proposal(p) = &e.artifact else {
            return None;
        };
        let parent_time = self.block_times.get(&p.block.parent).copied().unwrap_or(0);
        let mut bad = p.clone();
        bad.block.context.time_ns = match self.rng.random_range(0..4) {
            0 => u64::MAX,
            1 => self.now.saturating_add(clock::DAY_NS),
            2 => self.now.saturating_add(3 * BLOCK_TIME_SKEW_NS),
            _ => parent_time.saturating_add(1),
        };
        let core = self.nodes[from as usize].core.as_ref()?;
        bad.signature = core
            .crypto()
            .sign_block(&signed_bytes(&e.version, &bad.block.hash()));
        self.block_times
            .insert(bad.block.hash(), bad.block.context.time_ns);
        Some(Envelope {
            version: e.version.clone(),
            artifact: Artifact::Proposal(bad),
        })
    }

    /// One artifact with an absurd field, drawn from the seed.
    fn malformed(&mut self, from: NodeIndex, e: &Envelope) -> Artifact {
        use consensus::artifact::{Aggregate, Share, ThresholdShare, ThresholdSigned};
        let h = e.artifact.height();
        let n = self.cfg.nodes as NodeIndex;
        let top = Height::new(u64::MAX);
        match self.rng.random_range(0..10) {
            0 => Artifact::Request { height: top },
            1 => Artifact::BeaconShare(ThresholdShare {
                height: top,
                value: vec![1; 3],
                signer: from,
                signature: vec![0; 7],
            }),
            2 => Artifact::Notarization(Aggregate {
                height: h,
                hash: hash(&[b"nothing"]),
                signers: vec![from; self.cfg.nodes],
                signature: vec![0; 96],
            }),
            3 => Artifact::Finalization(Aggregate {
                height: top,
                hash: hash(&[b"nothing"]),
                signers: (0..n).map(|i| i.wrapping_add(n)).collect(),
                signature: Vec::new(),
            }),
            4 => match (&e.artifact, self.nodes[from as usize].core.as_ref()) {
                // A payload over the limit, under a valid maker signature.
                (Artifact::Proposal(p), Some(core)) => {
                    let mut big = p.clone();
                    big.block.payload = vec![0xAB; 1025];
                    big.signature = core
                        .crypto()
                        .sign_block(&signed_bytes(&e.version, &big.block.hash()));
                    Artifact::Proposal(big)
                }
                _ => Artifact::Request {
                    height: Height::ZERO,
                },
            },
            5 => Artifact::CupShare(ThresholdShare {
                height: h,
                value: vec![0xFF; 40],
                signer: from,
                signature: vec![1; 96],
            }),
            6 => Artifact::Cup(ThresholdSigned {
                height: top,
                value: vec![0xFF; 3],
                signature: Vec::new(),
            }),
            7 => match &e.artifact {
                Artifact::Proposal(p) => {
                    let mut b = p.clone();
                    b.block.maker = NodeIndex::MAX;
                    b.block.rank = u32::MAX;
                    Artifact::Proposal(b)
                }
                _ => Artifact::Request { height: top },
            },
            8 => Artifact::NotarizationShare(Share {
                height: h,
                hash: hash(&[b"nothing"]),
                signer: NodeIndex::MAX,
                signature: vec![0; 96],
            }),
            _ => Artifact::Certification(ThresholdSigned {
                height: h,
                value: vec![9; 7],
                signature: vec![0; 96],
            }),
        }
    }

    /// What a lying peer answers instead of `e`: a block at the same height on a parent
    /// nobody has (validly signed by the liar), an aggregate that does not verify, and a
    /// CUP far ahead that nobody signed.
    fn lies_for(&mut self, from: NodeIndex, e: &Envelope) -> Vec<Envelope> {
        use consensus::artifact::{Aggregate, ThresholdSigned};
        let mut out = Vec::new();
        let wrap = |artifact| Envelope {
            version: e.version.clone(),
            artifact,
        };
        if let (Artifact::Proposal(p), Some(core)) =
            (&e.artifact, self.nodes[from as usize].core.as_ref())
        {
            let mut fake = p.clone();
            fake.block.parent = hash(&[b"a chain of my own", &p.block.parent.0]);
            fake.block.payload = b"lies".to_vec();
            fake.signature = core
                .crypto()
                .sign_block(&signed_bytes(&e.version, &fake.block.hash()));
            let height = fake.block.height;
            let fake_hash = fake.block.hash();
            out.push(wrap(Artifact::Proposal(fake)));
            let signers: Vec<NodeIndex> = (0..self.cfg.nodes as NodeIndex).collect();
            for a in [
                Artifact::Notarization(Aggregate {
                    height,
                    hash: fake_hash,
                    signers: signers.clone(),
                    signature: vec![3; 96],
                }),
                Artifact::Finalization(Aggregate {
                    height,
                    hash: fake_hash,
                    signers,
                    signature: vec![4; 96],
                }),
            ] {
                out.push(wrap(a));
            }
        }
        let far = Height::new(e.artifact.height().get().saturating_add(1000));
        out.push(wrap(Artifact::Cup(ThresholdSigned {
            height: far,
            value: vec![5; 64],
            signature: vec![6; 96],
        })));
        out
    }
}

/// An equivocator's sends: `a` to the even-indexed targets, `b` to the odd ones.
fn split(targets: &[NodeIndex], a: &Envelope, b: &Envelope) -> Vec<(NodeIndex, Envelope)> {
    targets
        .iter()
        .enumerate()
        .map(|(k, t)| (*t, if k % 2 == 0 { a.clone() } else { b.clone() }))
        .collect()
}

fn corrupt_signature(a: &mut Artifact) {
    let sig: Option<&mut Vec<u8>> = match a {
        Artifact::Proposal(p) => Some(&mut p.signature),
        Artifact::NotarizationShare(s) | Artifact::FinalizationShare(s) => Some(&mut s.signature),
        Artifact::Notarization(g) | Artifact::Finalization(g) => Some(&mut g.signature),
        Artifact::BeaconShare(s) | Artifact::CertificationShare(s) | Artifact::CupShare(s) => {
            Some(&mut s.signature)
        }
        Artifact::Beacon(t) | Artifact::Certification(t) | Artifact::Cup(t) => {
            Some(&mut t.signature)
        }
        Artifact::Readiness(r) => Some(&mut r.signature),
        Artifact::Resharing { item, .. } => match item {
            consensus::resharing::ResharingItem::Dealing(d) => Some(&mut d.signature),
            consensus::resharing::ResharingItem::Complaint(c) => Some(&mut c.signature),
            consensus::resharing::ResharingItem::Answer(_) => None,
        },
        Artifact::Request { .. } => None,
    };
    if let Some(sig) = sig
        && let Some(b) = sig.first_mut()
    {
        *b ^= 0x01;
    }
}

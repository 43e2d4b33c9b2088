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
}

pub const BEHAVIORS: [Byzantine; 6] = [
    Byzantine::Equivocate,
    Byzantine::BadSignatures,
    Byzantine::Withhold,
    Byzantine::Replay,
    Byzantine::WrongVersion,
    Byzantine::ForgeCupShares,
];

impl Sim {
    /// What a node sends, after its Byzantine behavior (if any) had its way.
    pub(crate) fn outgoing(&mut self, from: NodeIndex, to: Option<NodeIndex>, envelope: Envelope) {
        let n = self.cfg.nodes as NodeIndex;
        let targets: Vec<NodeIndex> = match to {
            Some(t) => vec![t],
            None => (0..n).filter(|j| *j != from).collect(),
        };
        let behavior = self.nodes[from as usize].byzantine;
        let mut sends: Vec<(NodeIndex, Envelope)> = Vec::new();
        match behavior {
            None => sends.extend(targets.iter().map(|t| (*t, envelope.clone()))),
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
        Artifact::Request { .. } => None,
    };
    if let Some(sig) = sig
        && let Some(b) = sig.first_mut()
    {
        *b ^= 0x01;
    }
}

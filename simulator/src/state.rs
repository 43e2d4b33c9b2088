//! The nodes' replicated state and state sync, with lying peers.
//!
//! Each node's state is a [`MemoryState`] (the replica's Merkle state tree, in memory):
//! a delivered block writes its payload, and its hash is what the node certifies. A node
//! that starts from a CUP it did not execute itself syncs that state from its peers
//! through the replica's own checks ([`Verifier`]): a manifest that must lead to the
//! CUP's state hash, then chunks, each checked whole before anything of it is kept. A
//! Byzantine [`Byzantine::LyingStateSync`] peer answers with lies drawn from the seed;
//! the syncing node drops it at its first bad answer and goes on with the next peer from
//! the same cursor.
//!
//! Checkers: honest nodes compute the same state at each height; a synced state is the
//! one the CUP names; a sync never asks more chunks than the manifest has entries, plus
//! one failed request per peer.

use super::*;
use state_tree::{
    memory::MemoryState,
    sync::{Cursor, StateChunk, StateManifest, Verifier},
};
use std::rc::Rc;

/// The schema the simulated states are stored in.
pub(crate) const SCHEMA: u32 = 1;
/// Summary heights whose states a node keeps (besides its latest).
const KEPT_CHECKPOINTS: usize = 3;

/// What a node keeps across crashes: its persisted artifacts, its best CUP, and its
/// states (the latest and a few checkpoints at summary heights).
#[derive(Default)]
pub(crate) struct Disk {
    pub(crate) persisted: Vec<Envelope>,
    pub(crate) cup: Option<(CupContent, Vec<u8>)>,
    pub(crate) states: BTreeMap<Height, Rc<MemoryState>>,
}

impl Disk {
    /// The orchestrator persists a CUP only if it is higher than the one it has.
    pub(crate) fn keep_higher_cup(&mut self, content: CupContent, signature: Vec<u8>) {
        if self
            .cup
            .as_ref()
            .is_none_or(|(c, _)| c.height < content.height)
        {
            self.cup = Some((content, signature));
        }
    }

    /// Keeps `state` as the latest, with the last few summary heights' states before it.
    pub(crate) fn keep_state(&mut self, state: Rc<MemoryState>, summary_every: u64) {
        let h = state.height;
        self.states.insert(h, state);
        let is_summary = |x: &Height| x.get().is_multiple_of(summary_every);
        self.states.retain(|x, _| *x >= h || is_summary(x));
        let summaries: Vec<Height> = self
            .states
            .keys()
            .filter(|x| **x < h && is_summary(x))
            .copied()
            .collect();
        for old in summaries.iter().rev().skip(KEPT_CHECKPOINTS) {
            self.states.remove(old);
        }
    }
}

/// The state after the block at `height` with `payload`: its payload under a key of its
/// own, and one of eight keys that blocks overwrite in turn.
pub(crate) fn execute(prev: &MemoryState, height: Height, payload: &[u8]) -> MemoryState {
    let mut s = prev.clone();
    s.height = height;
    if !payload.is_empty() {
        let mut key = b"p/".to_vec();
        key.extend_from_slice(payload);
        s.put(key, height.get().to_be_bytes().to_vec());
        s.put(
            format!("c/{}", height.get() % 8).into_bytes(),
            payload.to_vec(),
        );
    }
    s
}

/// How a lying peer lies, drawn per answer.
#[derive(Clone, Copy, Debug)]
enum Lie {
    /// A manifest of a state with one more entry.
    Manifest,
    /// A manifest and chunks of its state at another height.
    OtherHeight,
    ChangedValue,
    ExtraEntry,
    DroppedEntry,
    SwappedEntries,
    /// Starts past the cursor.
    Skipped,
    /// The first chunk again.
    Repeated,
    /// No entries: the stream never ends.
    Empty,
    ChangedSibling,
}

const LIES: [Lie; 10] = [
    Lie::Manifest,
    Lie::OtherHeight,
    Lie::ChangedValue,
    Lie::ExtraEntry,
    Lie::DroppedEntry,
    Lie::SwappedEntries,
    Lie::Skipped,
    Lie::Repeated,
    Lie::Empty,
    Lie::ChangedSibling,
];

/// How one sync went, for the checkers and the result.
#[derive(Default)]
pub(crate) struct SyncStats {
    pub(crate) syncs: u64,
    pub(crate) peers_dropped: u64,
}

impl Sim {
    /// The states node `i` keeps: the state at `base`, its own or synced. `false` if no
    /// peer could serve it now (the caller retries later).
    pub(crate) fn ensure_state(
        &mut self,
        i: NodeIndex,
        height: Height,
        expected: CryptoHash,
    ) -> bool {
        if height == Height::ZERO {
            let empty = Rc::new(MemoryState::new(Height::ZERO, SCHEMA));
            self.nodes[i as usize]
                .disk
                .states
                .insert(Height::ZERO, empty);
            return true;
        }
        if self.nodes[i as usize]
            .disk
            .states
            .get(&height)
            .is_some_and(|s| s.state_hash() == expected)
        {
            return true;
        }
        let Some(state) = self.sync_state(i, height, expected) else {
            return false;
        };
        if state.state_hash() != expected {
            self.checker.violation(format!(
                "node {i} synced a state at height {height} that is not the one its CUP names"
            ));
        }
        if self.is_honest(i as usize) {
            self.check_state(i, &state);
        }
        let every = self.cfg.dkg_interval_length + 1;
        self.nodes[i as usize]
            .disk
            .keep_state(Rc::new(state), every);
        true
    }

    /// Honest nodes agree on the state at every height.
    pub(crate) fn check_state(&mut self, i: NodeIndex, state: &MemoryState) {
        let h = state.state_hash();
        match self.checker.states.get(&state.height) {
            Some(other) if *other != h => self.checker.violation(format!(
                "node {i} has another state at height {} than other honest nodes",
                state.height
            )),
            Some(_) => {}
            None => {
                self.checker.states.insert(state.height, h);
            }
        }
    }

    /// Syncs the state at `height` (hash `expected`) from the peers, in an order drawn
    /// from the seed, through the replica's checks.
    fn sync_state(
        &mut self,
        i: NodeIndex,
        height: Height,
        expected: CryptoHash,
    ) -> Option<MemoryState> {
        self.sync.syncs += 1;
        let mut peers: Vec<NodeIndex> = (0..self.cfg.nodes as NodeIndex)
            .filter(|j| *j != i && self.nodes[*j as usize].core.is_some())
            .collect();
        peers.shuffle(&mut self.rng);
        let max_entries = self.rng.random_range(1..=8);
        if self.cfg.trust_state_sync {
            return peers
                .first()
                .and_then(|&p| self.take_blindly(p, height, max_entries));
        }
        let mut verifier: Option<Verifier> = None;
        let mut got = MemoryState::new(height, SCHEMA);
        let mut requests: u64 = 0;
        'peers: for p in peers {
            let Some(m) = self.serve_manifest(p, height) else {
                continue;
            };
            let believed = match verifier.as_mut() {
                Some(v) => v.accept_manifest(&m),
                None => Verifier::new(height, expected, &m).map(|v| verifier = Some(v)),
            };
            let Some(v) = verifier.as_mut().filter(|_| believed.is_ok()) else {
                self.sync.peers_dropped += 1;
                continue;
            };
            let mut first = true;
            while let Some(at) = v.cursor() {
                requests += 1;
                let chunk = self.serve_chunk(p, height, at, max_entries, first);
                first = false;
                match v.check(&chunk) {
                    Ok(a) => {
                        for (e, _) in &a.entries {
                            got.put(e.key.clone(), e.value.clone());
                        }
                        v.advance(a);
                    }
                    Err(_) => {
                        self.sync.peers_dropped += 1;
                        continue 'peers;
                    }
                }
            }
            let entries = v.accepted();
            let bound = entries + self.cfg.nodes as u64;
            if requests > bound {
                self.checker.violation(format!(
                    "node {i}'s state sync asked {requests} chunks for {entries} entries"
                ));
            }
            if v.finish().is_err() {
                self.checker
                    .violation(format!("node {i}'s finished state sync does not verify"));
            }
            return Some(got);
        }
        None
    }

    /// The planted bug `trust_state_sync`: believe the first peer, unchecked.
    fn take_blindly(&mut self, p: NodeIndex, height: Height, max: usize) -> Option<MemoryState> {
        let m = self.serve_manifest(p, height)?;
        let mut got = MemoryState::new(height, SCHEMA);
        let mut at = Cursor {
            bucket: m.buckets.first()?.bucket,
            slot: 0,
        };
        for n in 0..10_000 {
            let c = self.serve_chunk(p, height, at, max, n == 0);
            let Some(last) = c.parts.last() else { break };
            for e in c.parts.iter().flat_map(|p| &p.entries) {
                got.put(e.key.clone(), e.value.clone());
            }
            let end = last.start + last.entries.len() as u32;
            let count = m.buckets.iter().find(|b| b.bucket == last.bucket)?.count;
            at = if end < count {
                Cursor {
                    bucket: last.bucket,
                    slot: end,
                }
            } else {
                match m.buckets.iter().find(|b| b.bucket > last.bucket) {
                    Some(b) => Cursor {
                        bucket: b.bucket,
                        slot: 0,
                    },
                    None => break,
                }
            };
        }
        Some(got)
    }

    /// What peer `p` has at `height`, if anything.
    fn state_at(&self, p: NodeIndex, height: Height) -> Option<Rc<MemoryState>> {
        self.nodes[p as usize].disk.states.get(&height).cloned()
    }

    fn lies(&self, p: NodeIndex) -> bool {
        self.nodes[p as usize].byzantine == Some(Byzantine::LyingStateSync)
    }

    fn serve_manifest(&mut self, p: NodeIndex, height: Height) -> Option<StateManifest> {
        let own = self.state_at(p, height);
        if !self.lies(p) {
            return own.map(|s| s.manifest());
        }
        let lie = *LIES.choose(&mut self.rng)?;
        let base = own.unwrap_or_else(|| Rc::new(MemoryState::new(height, SCHEMA)));
        Some(match lie {
            Lie::Manifest => {
                let mut s = (*base).clone();
                s.put(b"p/made-up".to_vec(), b"lie".to_vec());
                s.manifest()
            }
            Lie::OtherHeight => {
                let mut s = (*base).clone();
                s.height = height.increment();
                s.manifest()
            }
            // The truth, to lie in the chunks.
            _ => base.manifest(),
        })
    }

    fn serve_chunk(
        &mut self,
        p: NodeIndex,
        height: Height,
        at: Cursor,
        max: usize,
        first: bool,
    ) -> StateChunk {
        let own = self
            .state_at(p, height)
            .unwrap_or_else(|| Rc::new(MemoryState::new(height, SCHEMA)));
        let honest = own.chunk(at, max);
        // A liar tells the truth now and then, so its lie can come mid-stream.
        if !self.lies(p) || (!first && self.rng.random_bool(0.5)) {
            return honest;
        }
        let lie = *LIES.choose(&mut self.rng).unwrap_or(&Lie::Empty);
        let mut c = honest;
        match lie {
            Lie::ChangedValue | Lie::Manifest => {
                if let Some(e) = c.parts.first_mut().and_then(|p| p.entries.first_mut()) {
                    e.value.push(0xff);
                }
            }
            Lie::OtherHeight => c.height = height.increment(),
            Lie::ExtraEntry => {
                if let Some(part) = c.parts.last_mut() {
                    let mut key = part
                        .entries
                        .last()
                        .map(|e| e.key.clone())
                        .unwrap_or_default();
                    key.push(0);
                    part.entries.push(state_tree::sync::Entry {
                        key,
                        value: Vec::new(),
                    });
                }
            }
            Lie::DroppedEntry => {
                if let Some(part) = c.parts.first_mut() {
                    part.entries.remove(0);
                }
            }
            Lie::SwappedEntries => {
                if c.parts.first().is_some_and(|p| p.entries.len() > 1) {
                    c.parts[0].entries.swap(0, 1);
                } else if c.parts.len() > 1 {
                    c.parts.swap(0, 1);
                } else {
                    c.parts.clear();
                }
            }
            Lie::Skipped => {
                c = own.chunk(
                    Cursor {
                        bucket: at.bucket,
                        slot: at.slot + 1,
                    },
                    max,
                );
                if c.parts
                    .first()
                    .is_some_and(|p| p.bucket == at.bucket && p.start == at.slot)
                {
                    c.parts.clear();
                }
            }
            Lie::Repeated => {
                let start = own
                    .manifest()
                    .buckets
                    .first()
                    .map(|b| b.bucket)
                    .unwrap_or(0);
                let again = own.chunk(
                    Cursor {
                        bucket: start,
                        slot: 0,
                    },
                    max,
                );
                if again.parts.first().map(|p| (p.bucket, p.start)) == Some((at.bucket, at.slot)) {
                    // At the start, the first chunk again is the truth; lie otherwise.
                    c.parts.clear();
                } else {
                    c = again;
                }
            }
            Lie::Empty => c.parts.clear(),
            Lie::ChangedSibling => match c.parts.iter_mut().find(|p| !p.siblings.is_empty()) {
                Some(part) => part.siblings[0].0[0] ^= 1,
                None => c.parts.clear(),
            },
        }
        c
    }
}

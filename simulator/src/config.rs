//! What a run is (`SimConfig`, with the command that replays it) and what it found
//! (`SimResult`).

use super::*;

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub faulty: usize,
    /// Every honest node must finalize at least this height.
    pub heights: u64,
    /// When the highest finalized height reaches this, governance deploys release B.
    pub upgrade_at: Option<u64>,
    /// Honest nodes whose orchestrators cannot get release B ready (a failed preflight):
    /// they gossip "not ready". With more than `f` of them the subnet must never halt
    /// for B and must keep finalizing on A.
    pub unready: usize,
    /// Governance strands the subnet on release B (a recall, or a release that crashes
    /// at start) as soon as it halts for it, then adopts a recovery onto release A.
    pub strand: Option<Strand>,
    /// Seeds that are multiples of this run with the real BLS and ed25519 code (0: none).
    pub real_crypto_every: u64,
    pub dkg_interval_length: u64,
    /// Network faults, partitions and crashes in the fault phase.
    pub faults: bool,
    /// Clocks that drift and step, and wrong clocks (a day off) on up to `f - faulty`
    /// honest nodes.
    pub clock_faults: bool,
    pub broken_rule: Option<BrokenRule>,
    /// The Byzantine behaviors to draw from (default: all of them).
    pub behaviors: Vec<Byzantine>,
    /// A planted bug, to show the state checkers catch it: a syncing node believes its
    /// first peer's manifest and chunks without checking them.
    pub trust_state_sync: bool,
    /// A planted bug: orchestrators take any signed CUP without checking its signature
    /// (to see the start-CUP checker catch it).
    pub trust_peer_cups: bool,
}

impl SimConfig {
    pub fn new(nodes: usize, faulty: usize, heights: u64) -> Self {
        Self {
            nodes,
            faulty,
            heights,
            upgrade_at: None,
            unready: 0,
            strand: None,
            real_crypto_every: 0,
            dkg_interval_length: 9,
            faults: true,
            clock_faults: true,
            broken_rule: None,
            behaviors: BEHAVIORS.to_vec(),
            trust_state_sync: false,
            trust_peer_cups: false,
        }
    }

    /// Whether `seed` runs with the real crypto code.
    pub fn real_crypto(&self, seed: u64) -> bool {
        self.real_crypto_every > 0 && seed.is_multiple_of(self.real_crypto_every)
    }

    /// The `simulate` command that runs exactly this configuration for `seed`: every
    /// setting that changes a run is a flag.
    pub fn replay_command(&self, seed: u64) -> String {
        let mut c = format!(
            "simulate --nodes {} --faulty {} --seeds {seed}..{} --heights {} --dkg-interval {} --real-crypto-every {}",
            self.nodes,
            self.faulty,
            seed + 1,
            self.heights,
            self.dkg_interval_length,
            self.real_crypto_every,
        );
        if let Some(k) = self.upgrade_at {
            c.push_str(&format!(" --upgrade-at {k}"));
        }
        if self.unready > 0 {
            c.push_str(&format!(" --unready {}", self.unready));
        }
        if let Some(s) = self.strand {
            c.push_str(&format!(" --strand {}", s.name()));
        }
        if !self.faults {
            c.push_str(" --no-faults");
        }
        if !self.clock_faults {
            c.push_str(" --no-clock-faults");
        }
        match self.broken_rule {
            Some(BrokenRule::FinalizeAfterNotarizingTwo) => {
                c.push_str(" --broken-rule finalize-after-notarizing-two")
            }
            Some(BrokenRule::IgnoreBlockTimes) => c.push_str(" --broken-rule ignore-block-times"),
            // A resharing rule: simulate-membership's, not this simulator's.
            Some(BrokenRule::IgnoreComplaints) | None => {}
        }
        if self.trust_state_sync {
            c.push_str(" --trust-state-sync");
        }
        if self.trust_peer_cups {
            c.push_str(" --trust-peer-cups");
        }
        if self.behaviors != BEHAVIORS {
            let names: Vec<&str> = self.behaviors.iter().map(|b| b.name()).collect();
            c.push_str(&format!(" --behaviors {}", names.join(",")));
        }
        c
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimResult {
    pub seed: u64,
    pub digest: String,
    pub safety_violations: Vec<String>,
    pub liveness_failures: Vec<String>,
    pub messages: u64,
    pub virtual_time_ms: u64,
    pub min_finalized: u64,
    pub upgrade_height: Option<u64>,
    /// Whether the upgrade had to happen (`Some(true)`), had to not happen (too few
    /// nodes ready: `Some(false)`), or either was right (`None`, also with no upgrade).
    pub upgrade_expected: Option<bool>,
    /// Artifacts the honest nodes dropped without verifying (`Stats::redundant_artifacts`).
    pub redundant_artifacts: u64,
    /// State syncs run, and peers dropped for a lie (or a state they did not have).
    pub state_syncs: u64,
    pub sync_peers_dropped: u64,
}

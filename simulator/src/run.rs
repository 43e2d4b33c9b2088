//! Running a seed to its end, and the checks on the whole run (liveness, the upgrade).

use super::*;

impl Sim {
    /// Whether release B must be adopted: yes with `n - f` honest nodes ready for it, no
    /// when even the Byzantine ones cannot make up a quorum, else either is right.
    pub(crate) fn upgrade_expected(&self) -> Option<bool> {
        self.cfg.upgrade_at?;
        let quorum = self.cfg.nodes - tolerated(self.cfg.nodes);
        let honest_ready = (self.cfg.nodes - self.cfg.faulty).saturating_sub(self.cfg.unready);
        if honest_ready >= quorum {
            Some(true)
        } else if honest_ready + self.cfg.faulty < quorum {
            Some(false)
        } else {
            None
        }
    }

    /// The release every honest node must end on: A again after a stranding and its
    /// recovery, B after an upgrade that had to happen.
    fn final_version(&self) -> Option<&ReplicaVersion> {
        if self.cfg.strand.is_some() {
            return Some(&self.version_a);
        }
        (self.upgrade_expected() == Some(true)).then_some(&self.version_b)
    }

    fn honest_done(&self) -> bool {
        let recovered = self.cfg.strand.is_none() || self.strand.recovery.is_some();
        recovered
            && self
                .nodes
                .iter()
                .filter(|n| n.byzantine.is_none())
                .all(|n| {
                    n.core.as_ref().is_some_and(|c| {
                        c.finalized_height().get() >= self.cfg.heights
                            && self.final_version().is_none_or(|v| n.version == *v)
                            && self
                                .strand
                                .halted_at
                                .is_none_or(|h| c.finalized_height() > h)
                    })
                })
    }

    /// Runs to completion and checks.
    pub fn run(mut self) -> SimResult {
        let deadline = self.fault_phase_end + 60 * SEC + self.cfg.heights * 2 * SEC;
        let mut liveness = Vec::new();
        let mut steps: u64 = 0;
        let mut stopped_by_violation = false;
        while let Some(((t, _), e)) = self.queue.pop_first() {
            if t > deadline {
                break;
            }
            self.now = t;
            if t >= self.fault_phase_end {
                self.loss = 0.0;
                self.duplicate = 0.0;
            }
            self.handle(e);
            steps += 1;
            if steps.is_multiple_of(64) && self.now >= self.fault_phase_end && self.honest_done() {
                break;
            }
            // A safety violation is the answer; running on only costs time.
            if !self.checker.violations.is_empty() {
                stopped_by_violation = true;
                break;
            }
            if steps > 50_000_000 {
                liveness.push("the event budget ran out".to_string());
                break;
            }
        }
        if !self.honest_done() {
            for (i, n) in self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.byzantine.is_none())
            {
                let f = n.core.as_ref().map(|c| c.finalized_height().get());
                let detail = core_detail(n);
                liveness.push(format!(
                    "node {i} ({}) reached finalized height {f:?} [{detail}], not {} by {} ms (faults ended at {} ms)",
                    n.version,
                    self.cfg.heights,
                    deadline / MS,
                    self.fault_phase_end / MS
                ));
            }
        }
        // The upgrade: one halting height; everyone on B from that CUP or a later one.
        let mut upgrade_height = None;
        let expected = self.upgrade_expected();
        if expected == Some(false) {
            // Too few nodes ready: no node may halt for B, and none may run it.
            if !self.checker.any_halts.is_empty() {
                let halts = &self.checker.any_halts;
                self.checker.violation(format!(
                    "the subnet halted for a release too few nodes were ready for: {halts:?}"
                ));
            }
            for (i, n) in self.nodes.iter().enumerate() {
                if n.byzantine.is_none() && n.starts.iter().any(|(v, _)| *v == self.version_b) {
                    let msg = format!("node {i} started release B, which no quorum was ready for");
                    self.checker.violations.push(msg);
                }
            }
        }
        if expected == Some(true) {
            let honest: BTreeSet<Height> = self.checker.halts.values().copied().collect();
            if honest.len() > 1 || self.checker.any_halts.len() > 1 {
                let all = &self.checker.any_halts;
                self.checker.violation(format!(
                    "nodes halted at different heights: honest {honest:?}, all {all:?}"
                ));
            }
            // An honest node's orchestrator may switch to B on a peer's CUP before its
            // own core halts (the real `decide`; soak seeds 2568 and 6647 at n = 4): the
            // upgrade's height is then the one the other cores halted at.
            let heights = if honest.is_empty() {
                self.checker.any_halts.clone()
            } else {
                honest
            };
            upgrade_height = heights.iter().next().map(|h| h.get());
            if let Some(s) = heights.iter().next() {
                for (i, n) in self
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.byzantine.is_none())
                {
                    let on_b = n.starts.iter().filter(|(v, _)| *v == self.version_b);
                    for (_, base) in on_b {
                        if base < s {
                            let msg = format!(
                                "node {i} started release B below the upgrade CUP ({base} < {s})"
                            );
                            self.checker.violations.push(msg);
                        }
                    }
                }
            } else if !self.upgrade_published {
                liveness.push("the upgrade was never deployed".into());
            } else {
                liveness.push("no node halted for the upgrade".into());
            }
        }
        // Health after a switch: an honest node whose release B crashed at every start
        // says so (`upgrade.health` unhealthy) once its orchestrator watched it exit
        // after the first start (the first exit is the baseline it watches from).
        let missed: Vec<&NodeIndex> = self
            .strand
            .crashed
            .iter()
            .filter(|(i, n)| {
                **n >= 3
                    && self.is_honest(**i as usize)
                    && !self.strand.judged_unhealthy.contains(i)
            })
            .map(|(i, _)| i)
            .collect();
        if !missed.is_empty() {
            let msg = format!(
                "nodes {missed:?} crashed at every start of release B and never judged it unhealthy"
            );
            self.checker.violations.push(msg);
        }
        if self.cfg.strand.is_some() && !stopped_by_violation {
            match (self.strand.halted_at, &self.strand.recovery) {
                (None, _) => liveness.push("the subnet never halted for release B".into()),
                (Some(h), None) => {
                    liveness.push(format!("the subnet stranded at {h} was never recovered"))
                }
                (Some(h), Some(_)) => {
                    for (i, n) in self
                        .nodes
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| n.byzantine.is_none())
                    {
                        let f = n.core.as_ref().map(|c| c.finalized_height());
                        if f.is_none_or(|f| f <= h) {
                            let detail = core_detail(n);
                            liveness.push(format!(
                                "node {i} ({}) did not resume past the recovery CUP at {h}: finalized {f:?} [{detail}]",
                                n.version
                            ));
                        }
                    }
                }
            }
        }
        let min_finalized = self
            .nodes
            .iter()
            .filter(|n| n.byzantine.is_none())
            .filter_map(|n| n.core.as_ref().map(|c| c.finalized_height().get()))
            .min()
            .unwrap_or(0);
        let redundant_artifacts = self
            .nodes
            .iter()
            .filter(|n| n.byzantine.is_none())
            .filter_map(|n| n.core.as_ref().map(|c| c.stats().redundant_artifacts))
            .sum();
        let digest = hex::encode(self.digest.finalize());
        SimResult {
            seed: self.seed,
            digest,
            safety_violations: self.checker.violations,
            // A run cut short by a violation says nothing about liveness.
            liveness_failures: if stopped_by_violation {
                Vec::new()
            } else {
                liveness
            },
            messages: self.messages,
            virtual_time_ms: self.now / MS,
            min_finalized,
            upgrade_height,
            upgrade_expected: expected,
            redundant_artifacts,
            state_syncs: self.sync.syncs,
            sync_peers_dropped: self.sync.peers_dropped,
        }
    }
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sim(seed {}, {} nodes, t={} ms)",
            self.seed,
            self.nodes.len(),
            self.now / MS
        )
    }
}

/// A node's core as a liveness failure describes it.
fn core_detail(n: &Node) -> String {
    n.core
        .as_ref()
        .map(|c| format!("{c:?} {:?} {}", c.stats(), c.debug_round()))
        .unwrap_or_default()
}

/// Runs one seed. A panic anywhere in the run (a core that overflows on an attacker's
/// value, say) is reported as a safety violation of that seed, not a crash of the batch.
pub fn run_seed(cfg: &SimConfig, seed: u64) -> SimResult {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Sim::new(cfg.clone(), seed).run()
    }));
    run.unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic without a message");
        SimResult {
            seed,
            digest: String::new(),
            safety_violations: vec![format!("the run panicked: {why}")],
            liveness_failures: Vec::new(),
            messages: 0,
            virtual_time_ms: 0,
            min_finalized: 0,
            upgrade_height: None,
            upgrade_expected: None,
            redundant_artifacts: 0,
            state_syncs: 0,
            sync_peers_dropped: 0,
        }
    })
}

/// `max_faulty` re-exported for the binary's argument checks.
pub fn tolerated(n: usize) -> usize {
    max_faulty(n)
}

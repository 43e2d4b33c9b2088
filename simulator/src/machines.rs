//! The orchestrators' upgrade machines, and governance stranding the subnet and bringing
//! it back.
//!
//! Every simulated node's orchestrator steps the production
//! [`orchestrator::upgrade::Upgrade`] machine with each decision and carries its effects
//! out with fakes: a fetch is instant, a preflight passes unless the node is one of the
//! configured unready ones, a readiness word goes to the node's core, a switch restarts
//! the node on the new release, a hold stops its replica.
//!
//! [`Strand`] scenarios: governance recalls release B as soon as the subnet halts for it
//! (or B crashes at start on every node), then adopts a recovery: the subnet's version
//! back to A and a recovery CUP at the halting height with the state hash there. Checks:
//! no honest node starts B once its registry copy holds the recall; the subnet resumes
//! on A from the recovery CUP, and every honest node finalizes past it.

use super::*;
use ::orchestrator::{
    decide::{Decision, Release},
    upgrade::{Effect, Observe, ReplicaSeen, Upgrade, Verdict},
};
use cup::Cup;

/// How long after the subnet halted for B governance adopts the recovery: long enough
/// for the orchestrators to see a crash loop (a few of their 3-second ticks).
const RECOVERY_DELAY_NS: u64 = 15 * SEC;

/// How governance strands the subnet on release B before recovering it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strand {
    /// B is recalled as soon as the subnet halts for it.
    Recall,
    /// B passes preflight and then exits at every start.
    CrashAtStart,
}

impl Strand {
    pub fn name(self) -> &'static str {
        match self {
            Strand::Recall => "recall",
            Strand::CrashAtStart => "crash-at-start",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Strand::Recall, Strand::CrashAtStart]
            .into_iter()
            .find(|k| k.name() == s)
    }
}

/// What node `i`'s fake effects reported to its machine.
#[derive(Default)]
pub(crate) struct Seen {
    images: BTreeSet<String>,
    preflight: BTreeMap<String, Verdict>,
    restarts: u64,
    last_exit: Option<String>,
    /// What the running core reports of its own shares in the finalized chain.
    own_share_height: Option<u64>,
}

impl Observe for Seen {
    fn image_ready(&self, r: &Release) -> bool {
        self.images.contains(&r.package_sha256)
    }
    fn download_failed(&self, _: &Release) -> Option<String> {
        None
    }
    fn preflight(&self, r: &Release) -> Option<Verdict> {
        self.preflight.get(&r.package_sha256).cloned()
    }
    fn refused_until(&self, _: &Release) -> Option<u64> {
        None
    }
    fn replica(&self) -> ReplicaSeen {
        ReplicaSeen {
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            own_share_height: self.own_share_height,
        }
    }
}

/// Node `i`'s orchestrator: its upgrade machine and what its effects reported.
pub(crate) struct Machine {
    upgrade: Upgrade,
    seen: Seen,
}

impl Machine {
    /// The orchestrator of a node that runs `package` (verified at start).
    pub(crate) fn new(package: String) -> Self {
        let mut seen = Seen::default();
        seen.images.insert(package);
        Self {
            upgrade: Upgrade::new(false),
            seen,
        }
    }
}

/// Governance's progress through a [`Strand`] scenario.
#[derive(Clone, Debug, Default)]
pub(crate) struct StrandState {
    /// The height the subnet halted at for B.
    pub(crate) halted_at: Option<Height>,
    /// The recovery CUP, once adopted.
    pub(crate) recovery: Option<cup::RegistryCup>,
    /// How often each node's replica of B exited at a start, and the nodes whose
    /// orchestrator judged B unhealthy.
    pub(crate) crashed: BTreeMap<NodeIndex, u32>,
    pub(crate) judged_unhealthy: BTreeSet<NodeIndex>,
}

impl Sim {
    /// Steps node `i`'s machine with `decision` and carries out its effects. Returns the
    /// CUP and release to (re)start the replica from, if the machine runs or switches.
    pub(crate) fn step_machine(
        &mut self,
        i: NodeIndex,
        decision: &Decision,
    ) -> Option<(Cup, ReplicaVersion)> {
        let n = i as usize;
        let now_ms = self.clock_of(i).mono_ns / MS;
        let running = self.nodes[n].version.clone();
        self.machines[n].seen.own_share_height = self.nodes[n]
            .core
            .as_ref()
            .and_then(|c| c.own_share_height())
            .map(|h| h.get());
        // A fetch or a preflight reports at once here: step again with what it said.
        for _ in 0..3 {
            let m = &mut self.machines[n];
            let fx = m.upgrade.step(now_ms, &running, decision, &m.seen);
            let mut again = false;
            let mut start = None;
            for effect in fx {
                match effect {
                    Effect::Fetch(r) => {
                        again |= self.machines[n].seen.images.insert(r.package_sha256)
                    }
                    Effect::Preflight(r) => {
                        self.fake_preflight(i, &r, now_ms);
                        again = true;
                    }
                    Effect::Readiness {
                        version,
                        ready,
                        reason,
                    } => {
                        let lying = self.nodes[n].byzantine == Some(Byzantine::LyingReadiness);
                        let ready = ready || lying;
                        let now = self.clock_of(i);
                        if let Some(c) = self.nodes[n].core.as_mut() {
                            let word = Event::Readiness {
                                version,
                                ready,
                                reason,
                            };
                            c.on_event(now, word);
                            self.after_event(i);
                        }
                    }
                    Effect::Run { release, .. } => start = Some(release.version),
                    Effect::Switch(release) => {
                        // The rehearsal at the switch refuses what the preflight refused
                        // (production: `switch::rehearse`); a liar runs nothing either.
                        let refused = self.machines[n]
                            .seen
                            .preflight
                            .get(&release.package_sha256)
                            .is_some_and(|v| !v.ok);
                        if refused {
                            let reason =
                                format!("refused {}: its rehearsal fails here", release.version);
                            self.machines[n].upgrade.failed(reason);
                            self.log(&[b"refused", &i.to_be_bytes()]);
                            continue;
                        }
                        self.log(&[
                            b"switch",
                            &i.to_be_bytes(),
                            release.version.as_str().as_bytes(),
                        ]);
                        // The new release's orchestrator takes over.
                        let m = &mut self.machines[n];
                        m.upgrade = Upgrade::new(true);
                        start = Some(release.version);
                    }
                    Effect::StopReplica => {
                        if self.nodes[n].core.take().is_some() {
                            self.log(&[b"hold", &i.to_be_bytes()]);
                        }
                        self.orch_pending_start(i);
                    }
                    Effect::Wipe => {
                        if self.is_honest(n) {
                            self.checker
                                .violation(format!("node {i}'s orchestrator wiped its state"));
                        }
                    }
                    Effect::Notify { step, version, .. } => {
                        if step == "unhealthy" && version == self.version_b {
                            self.strand.judged_unhealthy.insert(i);
                        }
                        self.log(&[b"step", &i.to_be_bytes(), step.as_bytes()]);
                    }
                    Effect::Persist(_) | Effect::NoRestarts | Effect::ClearReadiness => {}
                }
            }
            if !again || start.is_some() {
                let cup = match decision {
                    Decision::Run { cup, .. } | Decision::Upgrade { cup, .. } => cup,
                    _ => return None,
                };
                return start.map(|v| ((**cup).clone(), v));
            }
        }
        None
    }

    /// The preflight's verdict: ready, except on the configured unready nodes (the last
    /// honest ones).
    fn fake_preflight(&mut self, i: NodeIndex, release: &Release, now_ms: u64) {
        let honest: Vec<usize> = (0..self.cfg.nodes).filter(|j| self.is_honest(*j)).collect();
        let unready = honest
            .iter()
            .rev()
            .take(self.cfg.unready)
            .any(|j| *j == i as usize)
            || self.nodes[i as usize].byzantine == Some(Byzantine::LyingReadiness);
        let verdict = Verdict {
            ok: !unready,
            reason: unready.then(|| "preflight failed (simulated)".to_string()),
            finished_ms: now_ms,
        };
        let m = &mut self.machines[i as usize];
        let _ = m
            .upgrade
            .preflight_finished(release, &verdict, String::new());
        m.seen
            .preflight
            .insert(release.package_sha256.clone(), verdict);
    }

    /// A start of release B in the crash-at-start scenario: the replica exits at once;
    /// the orchestrator (now B's) restarts it on its next tick, in vain.
    pub(crate) fn crashes_at_start(&mut self, i: NodeIndex, version: &ReplicaVersion) -> bool {
        if self.cfg.strand != Some(Strand::CrashAtStart) || *version != self.version_b {
            return false;
        }
        let node = &mut self.nodes[i as usize];
        node.version = version.clone();
        node.core = None;
        let seen = &mut self.machines[i as usize].seen;
        seen.restarts += 1;
        seen.last_exit = Some("exit status: 1 (crashed at start, simulated)".into());
        *self.strand.crashed.entry(i).or_default() += 1;
        self.orch_pending_start(i);
        self.log(&[b"crashed at start", &i.to_be_bytes()]);
        true
    }

    /// The checker's rule for a start: no honest node starts B once its own registry
    /// copy holds B's recall.
    pub(crate) fn check_not_recalled(&mut self, i: NodeIndex, version: &ReplicaVersion) {
        if self.is_honest(i as usize) && self.orch.recalled_in_copy(i, version) {
            self.checker.violation(format!(
                "node {i} started {version} after its registry copy recalled it"
            ));
        }
    }

    /// Governance's response to the subnet halting for B at `height`, once.
    pub(crate) fn maybe_strand(&mut self, height: Height) {
        let Some(strand) = self.cfg.strand else {
            return;
        };
        if self.strand.halted_at.is_some() {
            return;
        }
        self.strand.halted_at = Some(height);
        self.log(&[b"stranded", &height.get().to_be_bytes()]);
        if strand == Strand::Recall {
            let version = self.orch.recall_release(&self.version_b);
            self.publish_registry(version, self.version_b.clone());
        }
        self.push(self.now + RECOVERY_DELAY_NS, SimEvent::Recover { height });
    }

    /// Governance adopts `recover-subnet`: release A again, and a recovery CUP at
    /// `height` with the state hash of the CUP there.
    pub(crate) fn recover(&mut self, height: Height) {
        // The stalled CUP: the highest any node holds (as an operator reads it from
        // `/status`), at or above the halt.
        let Some(cup) = self
            .nodes
            .iter()
            .filter_map(|n| n.disk.cup.as_ref())
            .map(|(c, _)| c)
            .filter(|c| c.height >= height)
            .max_by_key(|c| c.height)
            .cloned()
        else {
            self.checker.violation(format!(
                "no node holds the CUP at the halting height {height}"
            ));
            return;
        };
        let height = cup.height;
        let version = self.orch.recover(&self.subnet, &self.version_a, &cup);
        // Governance replaced the history above the recovery height (blocks B's nodes
        // finalized there before the recall reached them): the chain checks start over
        // from it.
        let c = &mut self.checker;
        c.finalized.retain(|h, _| *h <= height);
        c.certified.retain(|h, _| *h <= height);
        c.cups.retain(|h, _| *h <= height);
        c.states.retain(|h, _| *h <= height);
        self.strand.recovery = Some(self.orch.published_registry_cup(&self.subnet));
        self.log(&[b"recovered", &height.get().to_be_bytes()]);
        self.publish_registry(version, self.version_a.clone());
    }

    /// Every node sees registry `version` (the subnet on `replica_version`) after its
    /// own delay.
    pub(crate) fn publish_registry(
        &mut self,
        version: RegistryVersion,
        replica_version: ReplicaVersion,
    ) {
        let info = SubnetInfo {
            replica_version,
            halt_at_cup_height: false,
            is_halted: false,
            members: Vec::new(),
        };
        self.published.push((version, info.clone()));
        for node in 0..self.cfg.nodes as NodeIndex {
            let delay = self.rng.random_range(0..500 * MS);
            self.push(
                self.now + delay,
                SimEvent::Registry {
                    node,
                    version,
                    info: info.clone(),
                },
            );
        }
    }
}

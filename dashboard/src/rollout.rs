//! The timeline of a rollout, as an outside observer sees it: for each member of a subnet
//! that governance deployed a release to, the time the dashboard first saw each step.
//!
//! The steps, in order, and what shows each in a node's answers (`V` the deployed
//! release):
//!
//! | step | shown by |
//! |---|---|
//! | `deployed` | the orchestrator's `upgrade.target_version` is `V`, or a preflight or a readiness word of this node names `V` |
//! | `ready` | the orchestrator's `upgrade.state` is `ready` for `V`, its preflight of `V` passed, or this node's readiness word for `V` says ready |
//! | `halting` | the replica, on another release, says `halting` (its last summary is finalized) |
//! | `cup` | the replica says `halted` (the CUP at the halting height exists), or the orchestrator is `switching` to `V` |
//! | `switched` | the orchestrator runs `V` |
//! | `healthy` | it runs `V` and its `upgrade.health.state` is `healthy` (the subnet made a CUP above the switch) |
//!
//! A node's answers show the furthest step it has reached; the earlier steps the dashboard
//! did not see by themselves (a halt lasts about as long as one poll) are recorded at the
//! same moment and marked `inferred`: for them the time is an upper bound. A step, once
//! recorded, keeps its first time. The timeline is pure: time is an argument.

use crate::answers::{OrchestratorStatus, ReadinessWord, ReplicaStatus};
use serde::Serialize;
use types::{NodeId, ReplicaVersion, SubnetId};

/// One step of a node's rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Deployed,
    Ready,
    Halting,
    Cup,
    Switched,
    Healthy,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Deployed,
        Step::Ready,
        Step::Halting,
        Step::Cup,
        Step::Switched,
        Step::Healthy,
    ];
}

/// What one node's current answers show about a rollout to one release.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The furthest step the answers show, if any.
    pub furthest: Option<Step>,
    /// The height of the CUP the node switched at, when its answers say.
    pub cup_height: Option<u64>,
    /// Why this node is stuck or unwell, in its own words.
    pub problem: Option<String>,
}

/// Reads `node`'s current answers (`None`: that endpoint did not answer this time) and
/// the readiness words any replica reported, for the rollout to `version`.
pub fn evidence(
    version: &ReplicaVersion,
    node: &NodeId,
    replica: Option<&ReplicaStatus>,
    orchestrator: Option<&OrchestratorStatus>,
    words: &[&ReadinessWord],
) -> Evidence {
    let word = words
        .iter()
        .filter(|w| &w.node_id == node && &w.version == version)
        .max_by_key(|w| w.height);
    let upgrade = orchestrator.map(|o| &o.upgrade);
    let targets_v = upgrade.is_some_and(|u| u.target_version.as_ref() == Some(version));
    let preflight = upgrade
        .and_then(|u| u.preflight.as_ref())
        .filter(|p| &p.version == version);
    let running = orchestrator
        .map(|o| &o.running_version)
        .or(replica.map(|r| &r.replica_version));
    let health = upgrade.and_then(|u| u.health.as_ref());

    let furthest = if running == Some(version) {
        // Running V: switched (also when only the replica answers: it runs V, which
        // its orchestrator started), and healthy once the orchestrator says so.
        if health.is_some_and(|h| h.state == "healthy") {
            Some(Step::Healthy)
        } else {
            Some(Step::Switched)
        }
    } else if replica.is_some_and(|r| r.halted)
        || (targets_v && upgrade.is_some_and(|u| u.state == "switching"))
    {
        Some(Step::Cup)
    } else if replica.is_some_and(|r| r.halting) {
        Some(Step::Halting)
    } else if (targets_v && upgrade.is_some_and(|u| u.state == "ready"))
        || preflight.is_some_and(|p| p.ok)
        || word.is_some_and(|w| w.ready)
    {
        Some(Step::Ready)
    } else if targets_v || preflight.is_some() || word.is_some() {
        Some(Step::Deployed)
    } else {
        None
    };

    let cup_height = match (running == Some(version), health, replica) {
        (true, Some(h), _) => Some(h.switched_at_cup_height),
        (false, _, Some(r)) if r.halted => Some(r.cup_height),
        _ => None,
    };

    let problem = if let Some(u) = upgrade.filter(|u| u.state == "failed" || u.state == "recalled")
    {
        Some(format!(
            "{}: {}",
            u.state,
            u.last_error.as_deref().unwrap_or("no reason given")
        ))
    } else if let Some(h) = health.filter(|h| h.state == "unhealthy" && running == Some(version)) {
        Some(format!(
            "unhealthy: {}",
            h.reason.as_deref().unwrap_or("no reason given")
        ))
    } else if let Some(p) = preflight.filter(|p| !p.ok) {
        Some(format!(
            "preflight failed: {}",
            p.reason.as_deref().unwrap_or("no reason given")
        ))
    } else {
        word.filter(|w| !w.ready)
            .map(|w| format!("not ready: {}", w.reason))
    };

    Evidence {
        furthest,
        cup_height,
        problem,
    }
}

/// When the dashboard first saw one step of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepSeen {
    pub step: Step,
    /// Null until seen.
    pub seen_unix_ms: Option<u64>,
    /// Recorded when a later step was first seen: the time is an upper bound.
    pub inferred: bool,
}

/// One member's row of the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RolloutNode {
    pub node_id: NodeId,
    /// Every step of [`Step::ALL`], in order.
    pub steps: Vec<StepSeen>,
    /// The height of the CUP this node switched at, once known.
    pub cup_height: Option<u64>,
    /// Why this node is stuck or unwell now (null when nothing is wrong or it does not
    /// answer).
    pub problem: Option<String>,
}

impl RolloutNode {
    fn new(node_id: NodeId) -> Self {
        Self {
            node_id,
            steps: Step::ALL
                .iter()
                .map(|&step| StepSeen {
                    step,
                    seen_unix_ms: None,
                    inferred: false,
                })
                .collect(),
            cup_height: None,
            problem: None,
        }
    }

    pub fn seen(&self, step: Step) -> Option<u64> {
        self.steps
            .iter()
            .find(|s| s.step == step)
            .and_then(|s| s.seen_unix_ms)
    }
}

/// How the dashboard came to know of a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// It saw the registry change the subnet's release.
    Deployed,
    /// It was under way when the dashboard started (a member ran another release).
    UnderWay,
}

/// The rollout of one release to one subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rollout {
    pub subnet_id: SubnetId,
    pub version: ReplicaVersion,
    /// The subnet's release before, when the dashboard knew it.
    pub previous_version: Option<ReplicaVersion>,
    pub origin: Origin,
    pub started_unix_ms: u64,
    /// When the last member became healthy.
    pub completed_unix_ms: Option<u64>,
    pub nodes: Vec<RolloutNode>,
}

impl Rollout {
    pub fn new(
        subnet_id: SubnetId,
        version: ReplicaVersion,
        previous_version: Option<ReplicaVersion>,
        origin: Origin,
        members: &[NodeId],
        now_unix_ms: u64,
    ) -> Self {
        Self {
            subnet_id,
            version,
            previous_version,
            origin,
            started_unix_ms: now_unix_ms,
            completed_unix_ms: None,
            nodes: members.iter().copied().map(RolloutNode::new).collect(),
        }
    }

    /// Records what `node`'s answers show now.
    pub fn observe(&mut self, now_unix_ms: u64, node: &NodeId, e: &Evidence) {
        let row = match self.nodes.iter().position(|n| &n.node_id == node) {
            Some(i) => &mut self.nodes[i],
            None => {
                self.nodes.push(RolloutNode::new(*node));
                let last = self.nodes.len() - 1;
                &mut self.nodes[last]
            }
        };
        if let Some(furthest) = e.furthest {
            for s in row.steps.iter_mut().filter(|s| s.step <= furthest) {
                if s.seen_unix_ms.is_none() {
                    s.seen_unix_ms = Some(now_unix_ms);
                    s.inferred = s.step < furthest;
                }
            }
        }
        if row.cup_height.is_none() {
            row.cup_height = e.cup_height;
        }
        row.problem = e.problem.clone();
        if self.completed_unix_ms.is_none()
            && !self.nodes.is_empty()
            && self.nodes.iter().all(|n| n.seen(Step::Healthy).is_some())
        {
            self.completed_unix_ms = Some(now_unix_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::answers::{HealthSeen, PreflightSeen, UpgradeSeen};

    fn v(s: &str) -> ReplicaVersion {
        ReplicaVersion::new(s).unwrap()
    }
    fn node(i: u8) -> NodeId {
        NodeId([i; 32])
    }

    fn replica(version: &str, halting: bool, halted: bool) -> ReplicaStatus {
        ReplicaStatus {
            replica_version: v(version),
            node_id: node(1),
            finalized_height: 30,
            certified_height: 29,
            cup_height: if halted { 30 } else { 20 },
            state_schema: Some(1),
            peers_connected: Some(3),
            halting,
            halted,
            storage_error: None,
            readiness: vec![],
        }
    }

    fn orchestrator(running: &str, state: &str, target: Option<&str>) -> OrchestratorStatus {
        OrchestratorStatus {
            node_id: node(1),
            running_version: v(running),
            cup: None,
            upgrade: UpgradeSeen {
                state: state.into(),
                target_version: target.map(v),
                last_error: None,
                preflight: None,
                health: None,
            },
        }
    }

    fn healthy(mut o: OrchestratorStatus, state: &str) -> OrchestratorStatus {
        o.upgrade.health = Some(HealthSeen {
            state: state.into(),
            reason: (state == "unhealthy").then(|| "the replica exited".into()),
            switched_at_cup_height: 30,
        });
        o
    }

    /// `(replica, orchestrator)` answers and the furthest step they show for 2.0.0.
    fn check(r: Option<ReplicaStatus>, o: Option<OrchestratorStatus>, expected: Option<Step>) {
        let e = evidence(&v("2.0.0"), &node(1), r.as_ref(), o.as_ref(), &[]);
        assert_eq!(e.furthest, expected, "{r:?} {o:?}");
    }

    #[test]
    fn the_furthest_step_each_answer_shows() {
        let old = || Some(replica("1.0.0", false, false));
        check(old(), Some(orchestrator("1.0.0", "idle", None)), None);
        check(
            old(),
            Some(orchestrator("1.0.0", "downloading", Some("2.0.0"))),
            Some(Step::Deployed),
        );
        check(
            old(),
            Some(orchestrator("1.0.0", "ready", Some("2.0.0"))),
            Some(Step::Ready),
        );
        check(
            Some(replica("1.0.0", true, false)),
            Some(orchestrator("1.0.0", "ready", Some("2.0.0"))),
            Some(Step::Halting),
        );
        check(
            Some(replica("1.0.0", true, true)),
            Some(orchestrator("1.0.0", "ready", Some("2.0.0"))),
            Some(Step::Cup),
        );
        check(
            None,
            Some(orchestrator("1.0.0", "switching", Some("2.0.0"))),
            Some(Step::Cup),
        );
        check(
            None,
            Some(orchestrator("2.0.0", "idle", None)),
            Some(Step::Switched),
        );
        check(
            Some(replica("2.0.0", false, false)),
            Some(healthy(orchestrator("2.0.0", "idle", None), "watching")),
            Some(Step::Switched),
        );
        check(
            Some(replica("2.0.0", false, false)),
            Some(healthy(orchestrator("2.0.0", "idle", None), "healthy")),
            Some(Step::Healthy),
        );
        // Only the replica answers, on the new release.
        check(
            Some(replica("2.0.0", false, false)),
            None,
            Some(Step::Switched),
        );
        // A deployment to another release shows nothing for this one.
        check(
            old(),
            Some(orchestrator("1.0.0", "ready", Some("3.0.0"))),
            None,
        );
        // Nothing answers: nothing is shown.
        check(None, None, None);
    }

    #[test]
    fn readiness_words_and_preflights_count_for_their_own_node_and_release() {
        let word = |n: u8, version: &str, ready: bool| ReadinessWord {
            node_id: node(n),
            version: v(version),
            ready,
            reason: if ready {
                String::new()
            } else {
                "no URL serves it".into()
            },
            height: 12,
        };
        let (other, wrong_release) = (word(2, "2.0.0", true), word(1, "3.0.0", true));
        let e = evidence(&v("2.0.0"), &node(1), None, None, &[&other, &wrong_release]);
        assert_eq!(e.furthest, None);
        let unready = word(1, "2.0.0", false);
        let e = evidence(&v("2.0.0"), &node(1), None, None, &[&unready]);
        assert_eq!(e.furthest, Some(Step::Deployed));
        assert_eq!(e.problem.as_deref(), Some("not ready: no URL serves it"));
        let ready = word(1, "2.0.0", true);
        let e = evidence(&v("2.0.0"), &node(1), None, None, &[&ready]);
        assert_eq!((e.furthest, e.problem), (Some(Step::Ready), None));

        let mut o = orchestrator("1.0.0", "failed", Some("2.0.0"));
        o.upgrade.last_error = Some("refused 2.0.0 in preflight: migration failed".into());
        o.upgrade.preflight = Some(PreflightSeen {
            version: v("2.0.0"),
            ok: false,
            reason: Some("migration failed".into()),
        });
        let e = evidence(&v("2.0.0"), &node(1), None, Some(&o), &[]);
        assert_eq!(e.furthest, Some(Step::Deployed));
        assert_eq!(
            e.problem.as_deref(),
            Some("failed: refused 2.0.0 in preflight: migration failed")
        );
    }

    #[test]
    fn unhealthy_after_the_switch_is_a_problem() {
        let o = healthy(orchestrator("2.0.0", "idle", None), "unhealthy");
        let e = evidence(&v("2.0.0"), &node(1), None, Some(&o), &[]);
        assert_eq!(e.furthest, Some(Step::Switched));
        assert_eq!(e.cup_height, Some(30));
        assert_eq!(e.problem.as_deref(), Some("unhealthy: the replica exited"));
    }

    #[test]
    fn steps_keep_their_first_time_and_skipped_ones_are_inferred() {
        let mut r = Rollout::new(
            SubnetId([9; 32]),
            v("2.0.0"),
            Some(v("1.0.0")),
            Origin::Deployed,
            &[node(1), node(2)],
            1_000,
        );
        let at = |step| Evidence {
            furthest: Some(step),
            ..Evidence::default()
        };
        r.observe(1_500, &node(1), &at(Step::Ready));
        r.observe(2_000, &node(1), &at(Step::Ready));
        r.observe(3_000, &node(1), &at(Step::Switched));
        let n1 = &r.nodes[0];
        let seen: Vec<_> = n1
            .steps
            .iter()
            .map(|s| (s.step, s.seen_unix_ms, s.inferred))
            .collect();
        assert_eq!(
            seen,
            vec![
                (Step::Deployed, Some(1_500), true),
                (Step::Ready, Some(1_500), false),
                (Step::Halting, Some(3_000), true),
                (Step::Cup, Some(3_000), true),
                (Step::Switched, Some(3_000), false),
                (Step::Healthy, None, false),
            ]
        );
        // An answer showing less (a node that does not answer, or restarts) takes
        // nothing back.
        r.observe(3_500, &node(1), &Evidence::default());
        assert_eq!(r.nodes[0].seen(Step::Switched), Some(3_000));
        assert_eq!(r.completed_unix_ms, None);

        r.observe(4_000, &node(1), &at(Step::Healthy));
        assert_eq!(r.completed_unix_ms, None, "node 2 has not even started");
        r.observe(5_000, &node(2), &at(Step::Healthy));
        assert_eq!(r.completed_unix_ms, Some(5_000));
        r.observe(6_000, &node(2), &at(Step::Healthy));
        assert_eq!(r.completed_unix_ms, Some(5_000));
    }

    #[test]
    fn a_node_not_listed_at_the_start_gets_a_row() {
        let mut r = Rollout::new(
            SubnetId([9; 32]),
            v("2.0.0"),
            None,
            Origin::UnderWay,
            &[node(1)],
            0,
        );
        let e = Evidence {
            furthest: Some(Step::Deployed),
            cup_height: None,
            problem: Some("not ready: busy".into()),
        };
        r.observe(10, &node(3), &e);
        assert_eq!(r.nodes.len(), 2);
        assert_eq!(r.nodes[1].problem.as_deref(), Some("not ready: busy"));
        r.observe(20, &node(3), &Evidence::default());
        assert_eq!(r.nodes[1].problem, None);
    }
}

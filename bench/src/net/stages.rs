//! A node's downtime cut into the stages of the handover, from its replica's blocks with
//! updates and its orchestrator's `upgrade.last_switch`.

use super::{Testnet, get_json, percentile};
use tokio::runtime::Runtime;

/// A node's downtime, stage by stage, in milliseconds: from the last block with updates
/// the old release executed to the first the new release executed on the same node. The
/// stages add up to that node's downtime.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Stages {
    /// The last block with updates to the halting CUP written (the subnet finalizes
    /// empty blocks until the state at the summary height is certified, then signs).
    pub cup_ready_ms: f64,
    /// The CUP written to the orchestrator deciding to switch.
    pub noticed_ms: f64,
    /// Then to the new release's orchestrator running (the switch's rehearsal, if it
    /// ran, the old replica asked to stop, the re-execution and start-up).
    pub new_started_ms: f64,
    /// Then to the old replica gone (what of its shutdown the re-execution did not
    /// cover; an orchestrator from before the overlap stopped it first: 0 here).
    pub old_stopped_ms: f64,
    /// Then to the new replica started.
    pub replica_started_ms: f64,
    /// Then to the first block with updates executed (the replica's start, the peers
    /// meeting again, rounds until a block with updates is finalized).
    pub first_block_ms: f64,
}

impl Stages {
    pub const NAMES: [&'static str; 6] = [
        "last update to CUP written",
        "CUP written to noticed",
        "noticed to new orchestrator started",
        "new orchestrator started to old replica stopped",
        "old stopped to new replica started",
        "new replica started to first block with updates",
    ];

    pub fn values(&self) -> [f64; 6] {
        [
            self.cup_ready_ms,
            self.noticed_ms,
            self.new_started_ms,
            self.old_stopped_ms,
            self.replica_started_ms,
            self.first_block_ms,
        ]
    }

    /// One node's stages: its last and first blocks with updates, and its orchestrator's
    /// `upgrade.last_switch` (none when a stage was not seen).
    fn of(
        last_payload_ms: u64,
        first_payload_ms: u64,
        t: &orchestrator::handover::SwitchTimes,
    ) -> Option<Self> {
        let points = [
            last_payload_ms,
            t.cup_written_unix_ms?,
            t.cup_noticed_unix_ms,
            t.new_started_unix_ms?,
            t.old_stopped_unix_ms?,
            t.replica_started_unix_ms?,
            first_payload_ms,
        ];
        // Each stage ends at the latest point so far, so the stages add up to the
        // downtime whatever order the points came in.
        let mut latest = points[0];
        let ends: Vec<u64> = points
            .iter()
            .map(|&p| {
                latest = latest.max(p);
                latest
            })
            .collect();
        let d = |i: usize| (ends[i + 1] - ends[i]) as f64;
        Some(Self {
            cup_ready_ms: d(0),
            noticed_ms: d(1),
            new_started_ms: d(2),
            old_stopped_ms: d(3),
            replica_started_ms: d(4),
            first_block_ms: d(5),
        })
    }

    /// The median of each stage over `all`.
    fn median(all: &[Self]) -> Option<Self> {
        if all.is_empty() {
            return None;
        }
        let m = |k: usize| percentile(&all.iter().map(|s| s.values()[k]).collect::<Vec<_>>(), 50.0);
        Some(Self {
            cup_ready_ms: m(0),
            noticed_ms: m(1),
            new_started_ms: m(2),
            old_stopped_ms: m(3),
            replica_started_ms: m(4),
            first_block_ms: m(5),
        })
    }
}

/// How the nodes' switches went, counted over the nodes that reported one.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct SwitchCounts {
    pub switched: usize,
    /// Noticed the CUP because their replica woke them (the others at a poll).
    pub woken_by_replica: usize,
    /// Rehearsed the release at the switch (the others' preflight had).
    pub rehearsed: usize,
    /// The earliest time a node's replica wrote the CUP naming the new release: the
    /// subnet's halt (unix ms; none when no node wrote it itself).
    pub first_cup_written_unix_ms: Option<u64>,
}

/// The median over the nodes of each stage of their downtime, from each orchestrator's
/// `upgrade.last_switch` for the switch to `to` (nodes that missed a stage are left out),
/// and how the switches went.
pub(super) fn node_stages(
    rt: &Runtime,
    client: &reqwest::Client,
    net: &Testnet,
    to: &str,
    old_last: &[Option<u64>],
    new_first: &[Option<u64>],
) -> (Option<Stages>, SwitchCounts) {
    let mut all = Vec::new();
    let mut counts = SwitchCounts::default();
    for (i, url) in net.orchestrators.iter().enumerate() {
        let status = rt.block_on(get_json(client, &format!("{url}/status")));
        let Some(t) = status
            .and_then(|s| serde_json::from_value(s["upgrade"]["last_switch"].clone()).ok())
            .filter(|t: &orchestrator::handover::SwitchTimes| t.to_version == to)
        else {
            continue;
        };
        counts.switched += 1;
        counts.woken_by_replica += usize::from(t.noticed_by == "replica");
        counts.rehearsed += usize::from(t.rehearsed);
        if let Some(w) = t.cup_written_unix_ms {
            let first = counts.first_cup_written_unix_ms.get_or_insert(w);
            *first = (*first).min(w);
        }
        if let (Some(l), Some(f)) = (old_last[i], new_first[i])
            && let Some(s) = Stages::of(l, f, &t)
        {
            all.push(s);
        }
    }
    (Stages::median(&all), counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator::handover::SwitchTimes;

    #[test]
    fn the_stages_add_up_to_the_nodes_downtime_and_a_missed_stage_drops_the_node() {
        let mut t = SwitchTimes {
            to_version: "2.0.0".into(),
            cup_written_unix_ms: Some(1_300),
            cup_noticed_unix_ms: 1_310,
            new_started_unix_ms: Some(1_340),
            old_stopped_unix_ms: Some(1_400),
            replica_started_unix_ms: Some(1_460),
            ..SwitchTimes::default()
        };
        let s = Stages::of(1_000, 1_900, &t).unwrap();
        assert_eq!(s.values(), [300.0, 10.0, 30.0, 60.0, 60.0, 440.0]);
        assert_eq!(s.values().iter().sum::<f64>(), 900.0);
        // An orchestrator that stopped the old replica before re-executing: that stage
        // is 0 and the stages still add up.
        let mut before = t.clone();
        before.old_stopped_unix_ms = Some(1_330);
        let b = Stages::of(1_000, 1_900, &before).unwrap();
        assert_eq!(b.values(), [300.0, 10.0, 30.0, 0.0, 120.0, 440.0]);
        assert_eq!(b.values().iter().sum::<f64>(), 900.0);
        // A CUP from a peer has no time written here: the node is left out.
        t.cup_written_unix_ms = None;
        assert!(Stages::of(1_000, 1_900, &t).is_none());
        let m = Stages::median(&[s, Stages::default(), s]).unwrap();
        assert_eq!(m.values(), s.values());
        assert!(Stages::median(&[]).is_none());
    }
}

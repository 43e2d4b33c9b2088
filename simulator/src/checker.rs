//! The checkers' record: what honest nodes finalized, certified and made CUPs of, and
//! the violations found.

use super::*;

pub(crate) struct Checker {
    pub(crate) finalized: BTreeMap<Height, (CryptoHash, NodeIndex)>,
    pub(crate) certified: BTreeMap<Height, CryptoHash>,
    pub(crate) cups: BTreeMap<Height, CryptoHash>,
    /// The state hash honest nodes computed at each height.
    pub(crate) states: BTreeMap<Height, CryptoHash>,
    pub(crate) halts: BTreeMap<NodeIndex, Height>,
    /// The heights any core halted at for the upgrade.
    pub(crate) any_halts: BTreeSet<Height>,
    /// The content hashes of the CUPs cores reported (`Action::CupReady`: assembled from
    /// a high-threshold quorum's verified shares): the only signed CUPs an honest node
    /// may start from (`orchestration.rs`).
    pub(crate) quorum_cups: BTreeSet<CryptoHash>,
    pub(crate) violations: Vec<String>,
}

impl Checker {
    pub(crate) fn violation(&mut self, msg: String) {
        if self.violations.len() < 20 {
            self.violations.push(msg);
        }
    }
}

/// How far ahead of the true time a finalized block's time may be: what honest nodes
/// with good clocks accept (their skew bound, their offset, their drift over a run).
pub(crate) const CHAIN_TIME_AHEAD_NS: u64 =
    BLOCK_TIME_SKEW_NS + clock::SMALL_OFFSET_NS as u64 + 100 * MS;

impl Sim {
    /// The chain's time follows the true time: no finalized block is further ahead of it
    /// than good clocks allow (users' updates expire against block times).
    pub(crate) fn check_block_time(&mut self, i: NodeIndex, height: Height, time_ns: u64) {
        if time_ns > self.now.saturating_add(CHAIN_TIME_AHEAD_NS) {
            let ahead_ms = (time_ns - self.now) / MS;
            self.checker.violation(format!(
                "node {i} finalized height {height} with a block time {ahead_ms} ms ahead of the true time"
            ));
        }
    }
}

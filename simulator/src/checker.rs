//! The checkers' record: what honest nodes finalized, certified and made CUPs of, and
//! the violations found.

use super::*;

pub(crate) struct Checker {
    pub(crate) finalized: BTreeMap<Height, (CryptoHash, NodeIndex)>,
    pub(crate) certified: BTreeMap<Height, CryptoHash>,
    pub(crate) cups: BTreeMap<Height, CryptoHash>,
    pub(crate) halts: BTreeMap<NodeIndex, Height>,
    pub(crate) violations: Vec<String>,
}

impl Checker {
    pub(crate) fn violation(&mut self, msg: String) {
        if self.violations.len() < 20 {
            self.violations.push(msg);
        }
    }
}

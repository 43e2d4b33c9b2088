//! The upgrade (halting) rule: a small pure function.
//!
//! The registry version that applies from a summary block on is the one that block pins
//! (its context's registry version). If, at that version, the subnet's replica version is
//! not the one running, or `halt_at_cup_height` is set, the summary height `S` is where
//! this version stops:
//!
//! A new replica version stops this release only if the summary block that pins it also
//! carries `n - f` nodes' readiness for that version (`ready`): a release that a quorum
//! could not fetch, verify or rehearse never halts the subnet, which runs on and pins
//! the version again at the next summary.
//!
//! - **Running**: the pinned version keeps this release running; blocks carry payloads.
//! - **Halting**: this release stops at `S`. Blocks after `S` are empty and are not
//!   delivered; the state at `S` is certified and the CUP for `S` is made (without waiting
//!   for a finalized block whose context certifies `S`: that wait once stalled the
//!   Internet Computer).
//! - **Halted**: the CUP for `S` exists; this release proposes nothing more.
//!
//! `is_halted` in the subnet record freezes the subnet outright (Halted at any height).

use types::ReplicaVersion;

/// What the registry says about the subnet at one registry version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetInfo {
    pub replica_version: ReplicaVersion,
    pub halt_at_cup_height: bool,
    pub is_halted: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Running,
    Halting,
    Halted,
}

/// The status of a release `running` on a chain whose latest summary block pinned a
/// registry version where the subnet looks like `pinned`; `ready` says whether that
/// summary carries a quorum's readiness for the pinned version, and `cup_made` whether
/// the CUP at that summary height exists.
pub fn status(
    running: &ReplicaVersion,
    pinned: &SubnetInfo,
    ready: bool,
    cup_made: bool,
) -> Status {
    if pinned.is_halted {
        return Status::Halted;
    }
    let should_stop = (&pinned.replica_version != running && ready) || pinned.halt_at_cup_height;
    match (should_stop, cup_made) {
        (false, _) => Status::Running,
        (true, false) => Status::Halting,
        (true, true) => Status::Halted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> ReplicaVersion {
        ReplicaVersion::new(s).expect("valid")
    }

    fn check(running: &str, pinned: (&str, bool, bool), cup_made: bool, expected: Status) {
        check_ready(running, pinned, true, cup_made, expected)
    }

    fn check_ready(
        running: &str,
        pinned: (&str, bool, bool),
        ready: bool,
        cup_made: bool,
        expected: Status,
    ) {
        let info = SubnetInfo {
            replica_version: v(pinned.0),
            halt_at_cup_height: pinned.1,
            is_halted: pinned.2,
        };
        assert_eq!(
            status(&v(running), &info, ready, cup_made),
            expected,
            "{running} {pinned:?} ready {ready} cup {cup_made}"
        );
    }

    #[test]
    fn status_table() {
        use Status::*;
        // Same version, no flags: running, CUP or not.
        check("A", ("A", false, false), false, Running);
        check("A", ("A", false, false), true, Running);
        // A new version pinned: halting until the CUP, then halted.
        check("A", ("B", false, false), false, Halting);
        check("A", ("B", false, false), true, Halted);
        // halt_at_cup_height on the same version: the same path.
        check("A", ("A", true, false), false, Halting);
        check("A", ("A", true, false), true, Halted);
        // The new release resumes from that CUP: the pinned version is its own.
        check("B", ("B", false, false), true, Running);
        // is_halted freezes whatever else holds.
        check("A", ("A", false, true), false, Halted);
        check("A", ("B", true, true), false, Halted);
        // Without a ready quorum a new version does not stop the running one...
        check_ready("A", ("B", false, false), false, false, Running);
        check_ready("A", ("B", false, false), false, true, Running);
        // ...but the halt flag and the freeze do not wait for readiness.
        check_ready("A", ("B", true, false), false, false, Halting);
        check_ready("A", ("A", false, true), false, false, Halted);
    }
}

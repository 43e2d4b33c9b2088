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
//! A membership change stops the running committee the same way: the summary that
//! finishes a resharing of the threshold keys (`Resharing::Done`) halts this committee,
//! and its CUP names the next. The summary that starts one (`Resharing::Started`) never
//! halts for a new version: the version waits for the resharing's end, so that a
//! membership change and an upgrade pinned together take effect at one CUP.
//!
//! `is_halted` in the subnet record freezes the subnet outright (Halted at any height).

use crypto::reshare::EncryptionPublicKey;
use types::{NodeId, ReplicaVersion};

/// What the registry says about the subnet at one registry version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetInfo {
    pub replica_version: ReplicaVersion,
    pub halt_at_cup_height: bool,
    pub is_halted: bool,
    /// The subnet's members as governance assigned them, in share order for the next
    /// resharing. Empty: not known (the committee then never changes).
    pub members: Vec<Member>,
}

/// A member as a resharing needs it: who, the key its complaints are signed with, and
/// the key its values are encrypted to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    /// Its ed25519 node key.
    pub node_key: [u8; 32],
    /// Its dealing encryption key (a member without one cannot receive a share).
    pub encryption_key: Option<EncryptionPublicKey>,
}

/// Where the latest summary stands in a resharing of the threshold keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resharing {
    /// The committee stays.
    #[default]
    None,
    /// This summary started one: the committee deals in the interval it begins.
    Started,
    /// This summary finished one: the committee it dealt to takes over at its CUP.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Running,
    Halting,
    Halted,
}

/// The status of a release `running` on a chain whose latest summary block pinned a
/// registry version where the subnet looks like `pinned`; `ready` says whether that
/// summary carries a quorum's readiness for the pinned version, `resharing` where it
/// stands in a resharing, and `cup_made` whether the CUP at that summary height exists.
pub fn status(
    running: &ReplicaVersion,
    pinned: &SubnetInfo,
    ready: bool,
    resharing: Resharing,
    cup_made: bool,
) -> Status {
    if pinned.is_halted {
        return Status::Halted;
    }
    let ready = ready && resharing != Resharing::Started;
    let should_stop = (&pinned.replica_version != running && ready)
        || pinned.halt_at_cup_height
        || resharing == Resharing::Done;
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
        check_all(running, pinned, ready, Resharing::None, cup_made, expected)
    }

    fn check_all(
        running: &str,
        pinned: (&str, bool, bool),
        ready: bool,
        resharing: Resharing,
        cup_made: bool,
        expected: Status,
    ) {
        let info = SubnetInfo {
            replica_version: v(pinned.0),
            halt_at_cup_height: pinned.1,
            is_halted: pinned.2,
            members: Vec::new(),
        };
        assert_eq!(
            status(&v(running), &info, ready, resharing, cup_made),
            expected,
            "{running} {pinned:?} ready {ready} {resharing:?} cup {cup_made}"
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
        // A finished resharing stops the committee whatever the version...
        check_all(
            "A",
            ("A", false, false),
            false,
            Resharing::Done,
            false,
            Halting,
        );
        check_all(
            "A",
            ("A", false, false),
            false,
            Resharing::Done,
            true,
            Halted,
        );
        check_all(
            "A",
            ("B", false, false),
            true,
            Resharing::Done,
            false,
            Halting,
        );
        // ...a starting one holds a ready new version back until its end...
        check_all(
            "A",
            ("B", false, false),
            true,
            Resharing::Started,
            false,
            Running,
        );
        // ...but not the halt flag or the freeze.
        check_all(
            "A",
            ("A", true, false),
            false,
            Resharing::Started,
            false,
            Halting,
        );
        check_all(
            "A",
            ("A", false, true),
            false,
            Resharing::Started,
            false,
            Halted,
        );
    }
}

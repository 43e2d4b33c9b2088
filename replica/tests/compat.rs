//! Compatibility, the first release's side: it reads its own golden fixtures, writes
//! them again byte for byte, reads the next release's CUPs (CUPs cross an upgrade in
//! both directions: a node still on this release reads the CUP the next one made), and
//! refuses what it must of the rest (a newer state schema, the other wire protocol).
//! The fixtures and their writer: `replica::compat`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use replica as release;

mod compat_checks;

use compat_checks::*;
use release::{compat, state::StateError};

#[test]
fn the_first_release_reads_its_own_fixtures() {
    let f = read(1);
    check_set(&f, 1);
    check_updates_validate(&f, 1);
    // On icup-consensus/1 the wire encoding is the pool store's (canonical) one.
    for (kind, e) in &f.wire {
        assert_eq!(e.as_ref(), Ok(&f.pool[kind]), "{kind}");
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let state = open_checkpoint(&f, 1, scratch.path());
    assert_eq!(state.schema(), 1);
}

#[test]
fn the_first_release_reads_the_next_release_s_cups_and_refuses_its_state_and_wire() {
    let f = read(2);
    check_set(&f, 2);
    // The append method is the next release's: it decodes, and is refused here.
    check_updates_validate(&f, 2);
    for (kind, e) in &f.wire {
        assert!(
            e.is_err(),
            "icup-consensus/2 bytes decoded as {kind}: {e:?}"
        );
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let refused = compat::open_checkpoint(&set(2), scratch.path()).expect_err("schema 2");
    assert!(
        matches!(
            refused,
            compat::CompatError::State(StateError::NewerSchema {
                found: 2,
                supported: 1,
                ..
            })
        ),
        "{refused}"
    );
}

#[test]
fn the_first_release_writes_its_committed_fixtures_again() {
    check_regenerated_set_is_committed();
}

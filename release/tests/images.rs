//! The images directory: switching `current`, and pruning.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use release::ReleaseError;
use std::{
    path::Path,
    time::{Duration, UNIX_EPOCH},
};

/// Makes `images/<v>` a directory with modification time `age_s` seconds after the epoch.
fn image(images: &Path, v: &str, age_s: u64) {
    let dir = images.join(v);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("marker"), v).unwrap();
    std::fs::File::open(&dir)
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::from_secs(age_s))
        .unwrap();
}

#[test]
fn switch_current_moves_current_and_previous() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path();
    assert_eq!(release::current(images), None);
    image(images, "1", 1);
    image(images, "2", 2);

    release::switch_current(images, &version("1")).unwrap();
    assert_eq!(release::current(images), Some(version("1")));
    assert_eq!(release::previous(images), None);
    // `current` is a relative symlink, so the directory can move.
    assert_eq!(
        std::fs::read_link(images.join("current")).unwrap(),
        Path::new("1")
    );

    release::switch_current(images, &version("2")).unwrap();
    assert_eq!(release::current(images), Some(version("2")));
    assert_eq!(release::previous(images), Some(version("1")));
    assert_eq!(
        std::fs::read_to_string(images.join("current/marker")).unwrap(),
        "2"
    );

    // Switching to the current version keeps `previous`.
    release::switch_current(images, &version("2")).unwrap();
    assert_eq!(release::previous(images), Some(version("1")));

    // Not unpacked, or not a name an image can have: refused, nothing changes.
    let err = release::switch_current(images, &version("3")).unwrap_err();
    assert!(matches!(err, ReleaseError::NotUnpacked { .. }), "{err}");
    let err = release::switch_current(images, &version("previous")).unwrap_err();
    assert!(matches!(err, ReleaseError::UnusableVersion { .. }), "{err}");
    assert_eq!(release::current(images), Some(version("2")));
    assert_eq!(release::previous(images), Some(version("1")));
    // No temporary symlinks are left.
    assert_eq!(list(images), ["1", "2", "current", "previous"]);
}

#[test]
fn prune_keeps_current_previous_and_protected_and_removes_the_oldest_beyond_keep() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path();
    // Oldest first: v1 .. v6.
    for (i, v) in ["v1", "v2", "v3", "v4", "v5", "v6"].iter().enumerate() {
        image(images, v, 1_000 + i as u64);
    }
    release::switch_current(images, &version("v1")).unwrap();
    release::switch_current(images, &version("v2")).unwrap(); // previous = v1
    // Leftovers of an interrupted unpack are removed; unrelated files are left alone.
    std::fs::create_dir(images.join(".tmp-unpack-v7-123")).unwrap();
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();

    // Six images, keep four: the two oldest that are not pinned go (v3, v5; v4 is
    // protected, v1 and v2 are previous and current).
    let removed = release::prune(images, 4, &[version("v4")]).unwrap();
    assert_eq!(removed, [version("v3"), version("v5")]);
    assert_eq!(
        list(images),
        ["current", "notes.txt", "previous", "v1", "v2", "v4", "v6"]
    );

    // Already within the bound: nothing.
    assert_eq!(
        release::prune(images, 4, &[version("v4")]).unwrap(),
        Vec::<types::ReplicaVersion>::new()
    );

    // keep = 0 removes everything that is not pinned, and pinned ones stay even though
    // that is more than `keep`.
    let removed = release::prune(images, 0, &[version("v4")]).unwrap();
    assert_eq!(removed, [version("v6")]);
    assert_eq!(
        list(images),
        ["current", "notes.txt", "previous", "v1", "v2", "v4"]
    );
    assert_eq!(release::current(images), Some(version("v2")));
    assert_eq!(release::previous(images), Some(version("v1")));
    assert_eq!(
        std::fs::read_to_string(images.join("current/marker")).unwrap(),
        "v2"
    );
}

#[test]
fn prune_orders_by_modification_time_not_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path();
    image(images, "a", 3_000); // newest
    image(images, "b", 1_000); // oldest
    image(images, "c", 2_000);
    let removed = release::prune(images, 1, &[]).unwrap();
    assert_eq!(removed, [version("b"), version("c")]);
    assert_eq!(list(images), ["a"]);
}

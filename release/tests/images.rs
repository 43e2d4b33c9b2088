//! The images directory: images named by package hash, switching `current`, pruning.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use release::{ReleaseError, VerifiedPackage};
use std::{
    path::Path,
    time::{Duration, UNIX_EPOCH},
};

/// Builds and unpacks a fake release of version `v` (with `tag` in its replica, so two
/// packages of one version differ), with modification time `age_s` seconds after the
/// epoch; returns its package hash.
fn image(root: &Path, v: &str, tag: &str, age_s: u64) -> String {
    let src = FakeRelease::write(&root.join(format!("src-{v}-{tag}")), v);
    std::fs::write(&src.replica, format!("#!/bin/sh\necho replica {v} {tag}\n")).unwrap();
    let (path, _, sha) = src.build(&root.join(format!("out-{v}-{tag}")), "p.tar.gz", v);
    let package = VerifiedPackage::verify(&path, &sha).unwrap();
    let dir = release::unpack(&package, &version(v), &root.join("images")).unwrap();
    std::fs::File::open(&dir)
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::from_secs(age_s))
        .unwrap();
    sha
}

fn current(images: &Path) -> Option<String> {
    release::current(images).map(|i| i.package_sha256)
}

fn previous(images: &Path) -> Option<String> {
    release::previous(images).map(|i| i.package_sha256)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn switch_current_moves_current_and_previous() {
    let dir = tempfile::tempdir().unwrap();
    let images = &dir.path().join("images");
    std::fs::create_dir_all(images).unwrap();
    assert_eq!(current(images), None);
    let one = image(dir.path(), "1", "a", 1);
    let two = image(dir.path(), "2", "a", 2);

    release::switch_current(images, &one).unwrap();
    assert_eq!(current(images), Some(one.clone()));
    assert_eq!(release::current(images).unwrap().version, version("1"));
    assert_eq!(previous(images), None);
    assert_eq!(
        release::last_switch(images),
        None,
        "installed, never switched"
    );
    // `current` is a relative symlink, so the directory can move.
    assert_eq!(
        std::fs::read_link(images.join("current")).unwrap(),
        Path::new(&one)
    );

    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    release::switch_current(images, &two).unwrap();
    assert_eq!(current(images), Some(two.clone()));
    assert_eq!(previous(images), Some(one.clone()));
    assert!(release::last_switch(images).is_some_and(|t| t >= before));
    assert_eq!(run(&images.join("current/bin/replica")), "replica 2 a\n");

    // Switching to the current image keeps `previous`.
    release::switch_current(images, &two).unwrap();
    assert_eq!(previous(images), Some(one.clone()));

    // Not unpacked: refused, nothing changes.
    let err = release::switch_current(images, &"3".repeat(64)).unwrap_err();
    assert!(matches!(err, ReleaseError::NotUnpacked { .. }), "{err}");
    assert_eq!(current(images), Some(two.clone()));
    assert_eq!(previous(images), Some(one.clone()));
    // No temporary symlinks are left.
    assert_eq!(
        list(images),
        sorted(vec![one, two, "current".into(), "previous".into()])
    );
}

#[test]
fn a_symlink_to_a_version_named_directory_is_not_an_image() {
    // The layout before images were named by hash: `current -> 1.0.0`. Nothing runs
    // from a directory whose package nobody can tell.
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path();
    std::fs::create_dir_all(images.join("1.0.0/bin")).unwrap();
    std::os::unix::fs::symlink("1.0.0", images.join("current")).unwrap();
    assert_eq!(release::current(images), None);
}

#[test]
fn prune_keeps_current_previous_and_protected_and_removes_the_oldest_beyond_keep() {
    let dir = tempfile::tempdir().unwrap();
    let images = &dir.path().join("images");
    // Oldest first: v1 .. v6.
    let v: Vec<String> = (1..=6)
        .map(|i| image(dir.path(), &format!("v{i}"), "a", 1_000 + i))
        .collect();
    release::switch_current(images, &v[0]).unwrap();
    release::switch_current(images, &v[1]).unwrap(); // previous = v1
    // Leftovers of an interrupted unpack are removed; unrelated files are left alone.
    std::fs::create_dir(images.join(".tmp-unpack-v7-123")).unwrap();
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    std::fs::create_dir(images.join("1.0.0")).unwrap();

    // Six images, keep four: the two oldest that are not pinned go (v3, v5; v4 is
    // protected, v1 and v2 are previous and current).
    let removed = release::prune(images, 4, &[v[3].as_str()]).unwrap();
    assert_eq!(removed, [v[2].clone(), v[4].clone()]);
    let mut expected = vec![
        "1.0.0".to_string(),
        "current".into(),
        "notes.txt".into(),
        "previous".into(),
    ];
    expected.extend([v[0].clone(), v[1].clone(), v[3].clone(), v[5].clone()]);
    assert_eq!(list(images), sorted(expected.clone()));

    // Already within the bound: nothing.
    assert_eq!(
        release::prune(images, 4, &[v[3].as_str()]).unwrap(),
        Vec::<String>::new()
    );

    // keep = 0 removes everything that is not pinned, and pinned ones stay even though
    // that is more than `keep`.
    let removed = release::prune(images, 0, &[v[3].as_str()]).unwrap();
    assert_eq!(removed, [v[5].clone()]);
    expected.retain(|e| e != &v[5]);
    assert_eq!(list(images), sorted(expected));
    assert_eq!(current(images), Some(v[1].clone()));
    assert_eq!(previous(images), Some(v[0].clone()));
    assert_eq!(run(&images.join("current/bin/replica")), "replica v2 a\n");
}

#[test]
fn prune_orders_by_modification_time_not_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let images = &dir.path().join("images");
    let a = image(dir.path(), "a", "a", 3_000); // newest
    let b = image(dir.path(), "b", "a", 1_000); // oldest
    let c = image(dir.path(), "c", "a", 2_000);
    let removed = release::prune(images, 1, &[]).unwrap();
    assert_eq!(removed, [b, c]);
    assert_eq!(list(images), [a]);
}

#[test]
fn two_packages_of_one_version_are_two_images() {
    let dir = tempfile::tempdir().unwrap();
    let images = &dir.path().join("images");
    let a = image(dir.path(), "2.0.0", "a", 1);
    let b = image(dir.path(), "2.0.0", "b", 2);
    assert_ne!(a, b);
    for (sha, tag) in [(&a, "a"), (&b, "b")] {
        let i = release::verify_image(images, sha, &version("2.0.0")).unwrap();
        assert_eq!(run(&i.replica_binary()), format!("replica 2.0.0 {tag}\n"));
    }
    release::switch_current(images, &a).unwrap();
    release::switch_current(images, &b).unwrap();
    assert_eq!(
        run(&images.join("current/bin/replica")),
        "replica 2.0.0 b\n"
    );
}

#[test]
fn downloads_keep_the_newest_and_the_protected_packages() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path();
    let names: Vec<String> = (0..5u8).map(|i| hex::encode([i; 32])).collect();
    for (i, n) in names.iter().enumerate() {
        let p = cache.join(n);
        std::fs::write(&p, b"package").unwrap();
        std::fs::File::open(&p)
            .unwrap()
            .set_modified(UNIX_EPOCH + Duration::from_secs(1_000 + i as u64))
            .unwrap();
    }
    // A partial download of a protected package (being fetched) and of another one.
    let fetching = hex::encode([9u8; 32]);
    std::fs::write(cache.join(format!("{fetching}.part")), b"half").unwrap();
    std::fs::write(
        cache.join(format!("{}.part", hex::encode([8u8; 32]))),
        b"half",
    )
    .unwrap();
    std::fs::write(cache.join("notes.txt"), b"an operator's").unwrap();
    // Keep two besides the protected: names[0] (the oldest, but running) stays.
    let removed = release::prune_downloads(cache, 2, &[&names[0], &fetching]).unwrap();
    assert_eq!(
        sorted(removed),
        sorted(vec![
            names[1].clone(),
            names[2].clone(),
            format!("{}.part", hex::encode([8u8; 32]))
        ])
    );
    assert_eq!(
        list(cache),
        sorted(vec![
            names[0].clone(),
            names[3].clone(),
            names[4].clone(),
            format!("{fetching}.part"),
            "notes.txt".into()
        ])
    );
}

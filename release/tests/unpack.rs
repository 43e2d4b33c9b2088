//! unpack refuses unsafe or inconsistent packages and leaves no partial image.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use release::{ReleaseError, UnpackLimits, VerifiedPackage};
use tar::EntryType;

/// Unpacks a hand-made package as version 1.0.0 into a fresh images directory, expects a
/// refusal, and checks that nothing was left behind.
fn refused(entries: Vec<RawEntry>) -> ReleaseError {
    refused_with(entries, &UnpackLimits::DEFAULT)
}

fn refused_with(entries: Vec<RawEntry>, limits: &UnpackLimits) -> ReleaseError {
    let dir = tempfile::tempdir().unwrap();
    let package = write_raw_package(&dir.path().join("p.tar.gz"), &entries);
    let images = dir.path().join("images");
    let err = release::unpack_with_limits(&package, &version("1.0.0"), &images, limits)
        .expect_err("the package was accepted");
    assert!(!err.is_retryable(), "{err}");
    // No image, no temporary directory, nothing outside.
    assert_eq!(list(&images), Vec::<String>::new(), "after: {err}");
    assert_eq!(list(dir.path()), ["images", "p.tar.gz"], "after: {err}");
    err
}

fn with(mut entries: Vec<RawEntry>, extra: RawEntry) -> Vec<RawEntry> {
    entries.push(extra);
    entries
}

fn assert_unsafe(err: ReleaseError, entry_name: &str) {
    match err {
        ReleaseError::UnsafeEntry { entry, .. } => assert_eq!(entry, entry_name),
        other => panic!("expected UnsafeEntry for {entry_name}, got {other}"),
    }
}

#[test]
fn a_well_formed_hand_made_package_is_accepted() {
    // The base the refusals below add one defect to is itself fine.
    let dir = tempfile::tempdir().unwrap();
    let package = write_raw_package(&dir.path().join("p.tar.gz"), &good_entries("1.0.0"));
    let images = dir.path().join("images");
    let image = release::unpack(&package, &version("1.0.0"), &images).unwrap();
    assert_eq!(
        std::fs::read(image.join("bin/replica")).unwrap(),
        REPLICA_BYTES
    );
    assert_eq!(list(&images), [package.sha256().to_string()]);
}

#[test]
fn path_traversal_is_refused() {
    let err = refused(with(
        good_entries("1.0.0"),
        RawEntry::file("../x", b"escape"),
    ));
    assert_unsafe(err, "../x");
    let err = refused(with(
        good_entries("1.0.0"),
        RawEntry::file("bin/../../y", b"escape"),
    ));
    assert_unsafe(err, "bin/../../y");
}

#[test]
fn absolute_paths_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("z");
    let name = target.to_str().unwrap();
    let err = refused(with(good_entries("1.0.0"), RawEntry::file(name, b"escape")));
    assert_unsafe(err, name);
    assert!(!target.exists());
}

#[test]
fn links_and_special_files_are_refused() {
    for (kind, name) in [
        (EntryType::Symlink, "bin/link"),
        (EntryType::Link, "bin/hard"),
        (EntryType::Char, "dev/null"),
        (EntryType::Fifo, "fifo"),
    ] {
        let err = refused(with(
            good_entries("1.0.0"),
            RawEntry::link(name, kind, "/etc/passwd"),
        ));
        assert_unsafe(err, name);
    }
    // A symlink first and a file through it: refused at the symlink, nothing written.
    let mut entries = vec![RawEntry::link("bin", EntryType::Symlink, "/tmp")];
    entries.extend(good_entries("1.0.0"));
    assert_unsafe(refused(entries), "bin");
}

#[test]
fn a_manifest_for_another_version_is_refused() {
    // A real package, for 2.0.0, expected as 1.0.0.
    let dir = tempfile::tempdir().unwrap();
    let src = FakeRelease::write(&dir.path().join("src"), "2.0.0");
    let (path, _, sha) = src.build(dir.path(), "p.tar.zst", "2.0.0");
    let package = VerifiedPackage::verify(&path, &sha).unwrap();
    let images = dir.path().join("images");
    match release::unpack(&package, &version("1.0.0"), &images) {
        Err(ReleaseError::VersionMismatch {
            expected, found, ..
        }) => {
            assert_eq!(expected, version("1.0.0"));
            assert_eq!(found, version("2.0.0"));
        }
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
    assert_eq!(list(&images), Vec::<String>::new());
}

#[test]
fn a_file_whose_hash_differs_from_the_manifest_is_refused() {
    let entries = vec![
        RawEntry::manifest(
            "1.0.0",
            &[
                ("bin/replica", b"what the manifest promised"),
                ("bin/orchestrator", ORCHESTRATOR_BYTES),
            ],
        ),
        RawEntry::file("bin/replica", REPLICA_BYTES),
        RawEntry::file("bin/orchestrator", ORCHESTRATOR_BYTES),
    ];
    match refused(entries) {
        ReleaseError::FileHashMismatch {
            file,
            expected,
            actual,
            ..
        } => {
            assert_eq!(file, "bin/replica");
            assert_eq!(expected, sha256_hex(b"what the manifest promised"));
            assert_eq!(actual, sha256_hex(REPLICA_BYTES));
        }
        other => panic!("expected FileHashMismatch, got {other}"),
    }
}

#[test]
fn missing_unlisted_and_duplicate_files_are_refused() {
    // bin/orchestrator neither listed nor present.
    let entries = vec![
        RawEntry::manifest("1.0.0", &[("bin/replica", REPLICA_BYTES)]),
        RawEntry::file("bin/replica", REPLICA_BYTES),
    ];
    match refused(entries) {
        ReleaseError::MissingFile { file, .. } => assert_eq!(file, "bin/orchestrator"),
        other => panic!("expected MissingFile, got {other}"),
    }
    // Listed but not present.
    let mut entries = good_entries("1.0.0");
    entries.pop();
    match refused(entries) {
        ReleaseError::MissingFile { file, .. } => assert_eq!(file, "bin/orchestrator"),
        other => panic!("expected MissingFile, got {other}"),
    }
    // Present but not listed.
    match refused(with(good_entries("1.0.0"), RawEntry::file("extra", b"x"))) {
        ReleaseError::UnlistedFile { file, .. } => assert_eq!(file, "extra"),
        other => panic!("expected UnlistedFile, got {other}"),
    }
    // Twice (the second copy would silently win in tar).
    let err = refused(with(
        good_entries("1.0.0"),
        RawEntry::file("./bin/replica", b"#!/bin/sh\necho evil\n"),
    ));
    assert_unsafe(err, "./bin/replica");
    // No manifest at all.
    let mut entries = good_entries("1.0.0");
    entries.remove(0);
    assert!(matches!(refused(entries), ReleaseError::BadManifest { .. }));
}

#[test]
fn the_bounds_on_entries_and_bytes_hold() {
    let entries = good_entries("1.0.0").len() as u64;
    let err = refused_with(
        good_entries("1.0.0"),
        &UnpackLimits {
            max_entries: entries - 1,
            ..UnpackLimits::DEFAULT
        },
    );
    assert!(
        matches!(
            err,
            ReleaseError::TooLarge {
                what: "entries",
                ..
            }
        ),
        "{err}"
    );
    let err = refused_with(
        good_entries("1.0.0"),
        &UnpackLimits {
            max_bytes: 10,
            ..UnpackLimits::DEFAULT
        },
    );
    assert!(matches!(err, ReleaseError::TooLarge { .. }), "{err}");
}

#[test]
fn a_file_that_is_not_a_package_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.tar");
    // An uncompressed tar: neither gzip nor zstd.
    let bytes = raw_tar(&good_entries("1.0.0"));
    std::fs::write(&path, &bytes).unwrap();
    let package = VerifiedPackage::verify(&path, &sha256_hex(&bytes)).unwrap();
    let images = dir.path().join("images");
    let err = release::unpack(&package, &version("1.0.0"), &images).unwrap_err();
    assert!(matches!(err, ReleaseError::UnknownFormat { .. }), "{err}");
    // Truncated gzip: an archive error.
    let gz = gzip(&bytes);
    std::fs::write(&path, &gz[..gz.len() / 2]).unwrap();
    let package = VerifiedPackage::verify(&path, &sha256_hex(&gz[..gz.len() / 2])).unwrap();
    let err = release::unpack(&package, &version("1.0.0"), &images).unwrap_err();
    assert!(matches!(err, ReleaseError::Archive { .. }), "{err}");
    assert_eq!(list(&images), Vec::<String>::new());
}

#[test]
fn a_refused_package_leaves_an_existing_image_alone() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let good = write_raw_package(&dir.path().join("good.tar.gz"), &good_entries("1.0.0"));
    let image = release::unpack(&good, &version("1.0.0"), &images).unwrap();
    // Damage the image so unpack tries again, with a bad package this time.
    std::fs::write(image.join("bin/orchestrator"), b"damaged").unwrap();
    let bad = write_raw_package(
        &dir.path().join("bad.tar.gz"),
        &with(good_entries("1.0.0"), RawEntry::file("../x", b"x")),
    );
    assert!(release::unpack(&bad, &version("1.0.0"), &images).is_err());
    assert_eq!(list(&images), [good.sha256().to_string()]);
    assert_eq!(
        std::fs::read(image.join("bin/orchestrator")).unwrap(),
        b"damaged"
    );
}

#[test]
fn any_version_id_can_be_unpacked_because_images_are_named_by_hash() {
    // "current" was refused when images were named by version; a name is only a name now.
    let dir = tempfile::tempdir().unwrap();
    let package = write_raw_package(&dir.path().join("p.tar.gz"), &good_entries("current"));
    let images = dir.path().join("images");
    let image = release::unpack(&package, &version("current"), &images).unwrap();
    assert_eq!(image, images.join(package.sha256()));
    release::switch_current(&images, package.sha256()).unwrap();
    assert_eq!(
        release::current(&images).map(|i| i.version),
        Some(version("current"))
    );
}

#[test]
fn the_package_hash_file_is_a_reserved_name() {
    assert_unsafe(
        refused(with(
            good_entries("1.0.0"),
            RawEntry::file(release::PACKAGE_HASH_FILE, b"0"),
        )),
        release::PACKAGE_HASH_FILE,
    );
}

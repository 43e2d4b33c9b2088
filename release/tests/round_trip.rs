//! Build, fetch, unpack and switch, in both formats; determinism; reuse and repair.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use release::{Downloader, Format, Manifest, Progress, VerifiedPackage};
use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    time::Duration,
};

const CHUNK_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BYTES: u64 = 16 << 20;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn build_fetch_unpack_switch_in_both_formats() {
    guard(async {
        let dir = tempfile::tempdir().unwrap();
        let src1 = FakeRelease::write(&dir.path().join("src1"), "1.0.0");
        let src2 = FakeRelease::write(&dir.path().join("src2"), "2.0.0");
        let (_, gz, gz_sha) = src1.build(dir.path(), "r1.tar.gz", "1.0.0");
        let (_, zst, zst_sha) = src2.build(dir.path(), "r2.tar.zst", "2.0.0");
        assert_eq!(Format::from_magic(&gz), Some(Format::TarGz));
        assert_eq!(Format::from_magic(&zst), Some(Format::TarZst));

        let server = TestServer::start(vec![
            (
                "/r1.tar.gz",
                Route::Serve {
                    body: gz.clone(),
                    ranges: true,
                },
            ),
            (
                "/r2.tar.zst",
                Route::Serve {
                    body: zst.clone(),
                    ranges: true,
                },
            ),
        ])
        .await;
        let downloader = Downloader::new(CHUNK_TIMEOUT, MAX_BYTES).unwrap();
        let cache = dir.path().join("cache");
        let images = dir.path().join("images");

        for (v, path, sha, body) in [
            ("1.0.0", "/r1.tar.gz", &gz_sha, &gz),
            ("2.0.0", "/r2.tar.zst", &zst_sha, &zst),
        ] {
            let mut events: Vec<Progress> = Vec::new();
            let package = downloader
                .fetch(&[server.url(path)], 0, sha, &cache, &mut |p| events.push(p))
                .await
                .unwrap();
            assert_eq!(package.path(), cache.join(sha));
            assert_eq!(package.sha256(), sha.as_str());
            assert_eq!(std::fs::read(package.path()).unwrap(), *body);
            let last = events.last().expect("progress was reported");
            assert_eq!(last.bytes, body.len() as u64);
            assert_eq!(last.total, Some(body.len() as u64));
            assert_eq!(last.url, server.url(path));
            assert!(events.windows(2).all(|w| w[0].bytes <= w[1].bytes));

            let image = release::unpack(&package, &version(v), &images).unwrap();
            assert_eq!(image, images.join(sha));
            release::switch_current(&images, sha).unwrap();
            let current = release::current(&images).unwrap();
            assert_eq!(
                (current.version, current.package_sha256),
                (version(v), sha.clone())
            );
            assert_eq!(
                std::fs::read_to_string(image.join(release::PACKAGE_HASH_FILE)).unwrap(),
                format!("{sha}\n")
            );

            // The files are there, executable where they should be, and run.
            let current = images.join("current");
            assert_eq!(run(&current.join("bin/replica")), format!("replica {v}\n"));
            assert_eq!(
                run(&current.join("bin/orchestrator")),
                format!("orchestrator {v}\n")
            );
            assert_eq!(mode(&current.join("bin/replica")), 0o755);
            assert_eq!(mode(&current.join("share/blob")), 0o644);
            let manifest =
                Manifest::from_json(&std::fs::read(current.join("manifest.json")).unwrap())
                    .unwrap();
            assert_eq!(manifest.version, version(v));
            assert_eq!(manifest.build, "test build");
            assert_eq!(
                manifest.files.keys().collect::<Vec<_>>(),
                ["bin/orchestrator", "bin/replica", "share/blob"]
            );
            for (file, hash) in &manifest.files {
                let bytes = std::fs::read(current.join(file)).unwrap();
                assert_eq!(&sha256_hex(&bytes), hash, "{file}");
            }
        }
        assert_eq!(
            release::previous(&images).map(|i| i.version),
            Some(version("1.0.0"))
        );
        let mut expected = vec![
            gz_sha.clone(),
            zst_sha.clone(),
            "current".into(),
            "previous".into(),
        ];
        expected.sort();
        assert_eq!(list(&images), expected);
        assert_eq!(server.seen().len(), 2);
    })
    .await;
}

#[test]
fn the_same_inputs_build_the_same_package() {
    let dir = tempfile::tempdir().unwrap();
    let src = FakeRelease::write(&dir.path().join("src"), "1.0.0");
    for name in ["p.tar.gz", "p.tar.zst"] {
        let (_, a, sha_a) = src.build(&dir.path().join("a"), name, "1.0.0");
        // Other modification times of the sources change nothing.
        for source in [&src.replica, &src.blob] {
            std::fs::File::options()
                .write(true)
                .open(source)
                .unwrap()
                .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000))
                .unwrap();
        }
        let (_, b, sha_b) = src.build(&dir.path().join("b"), name, "1.0.0");
        assert_eq!(sha_a, sha_b, "{name}");
        assert_eq!(a, b, "{name}");
        // And the hash does depend on the inputs.
        let (_, _, sha_c) = src.build(&dir.path().join("b"), name, "1.0.1");
        assert_ne!(sha_a, sha_c, "{name}");
    }
}

#[test]
fn build_refuses_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let src = FakeRelease::write(&dir.path().join("src"), "1.0.0");
    let v = version("1.0.0");
    let build = |name: &str, files: &[(&str, &Path)]| {
        release::build_package(&dir.path().join(name), &v, "b", files)
    };
    let replica = ("bin/replica", src.replica.as_path());
    let orchestrator = ("bin/orchestrator", src.orchestrator.as_path());
    assert!(matches!(
        build("p.tar", &[replica, orchestrator]),
        Err(release::ReleaseError::UnknownFormat { .. })
    ));
    for files in [
        vec![replica],
        vec![replica, orchestrator, ("../x", src.blob.as_path())],
        vec![replica, orchestrator, ("./x", src.blob.as_path())],
        vec![replica, orchestrator, ("manifest.json", src.blob.as_path())],
        vec![replica, orchestrator, ("bin/replica", src.blob.as_path())],
    ] {
        let err = build("p.tar.gz", &files).unwrap_err();
        assert!(
            matches!(err, release::ReleaseError::BadInput { .. }),
            "{files:?}: {err}"
        );
    }
    // Nothing was left behind, not even a temporary file.
    assert_eq!(list(dir.path()), ["src"]);
}

/// A version id retired and elected again with another package: unpacking the new
/// package gives the new package's files, never the old image of the same version id.
#[test]
fn a_version_elected_again_with_another_package_gets_the_new_package() {
    let dir = tempfile::tempdir().unwrap();
    let v = version("2.0.0");
    let images = dir.path().join("images");
    let first = FakeRelease::write(&dir.path().join("a"), "2.0.0");
    let (path_a, _, sha_a) = first.build(&dir.path().join("out-a"), "p.tar.gz", "2.0.0");
    let a = VerifiedPackage::verify(&path_a, &sha_a).unwrap();
    let image_a = release::unpack(&a, &v, &images).unwrap();
    // Package B: the same version id, other contents.
    let second = FakeRelease::write(&dir.path().join("b"), "2.0.0");
    std::fs::write(&second.replica, "#!/bin/sh\necho replica B\n").unwrap();
    let (path_b, _, sha_b) = second.build(&dir.path().join("out-b"), "p.tar.gz", "2.0.0");
    assert_ne!(sha_a, sha_b);
    let b = VerifiedPackage::verify(&path_b, &sha_b).unwrap();
    let image_b = release::unpack(&b, &v, &images).unwrap();
    assert_eq!(run(&image_b.join("bin/replica")), "replica B\n");
    // A is still there, as it was, for a node that goes back.
    assert_ne!(image_a, image_b);
    assert_eq!(run(&image_a.join("bin/replica")), "replica 2.0.0\n");
}

#[test]
fn unpack_detects_the_format_by_magic_reuses_intact_images_and_repairs_damaged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let src = FakeRelease::write(&dir.path().join("src"), "1.0.0");
    let (_, zst, sha) = src.build(dir.path(), "p.tar.zst", "1.0.0");
    // A name that says nothing about the format.
    let package_path = dir.path().join("package.bin");
    std::fs::write(&package_path, &zst).unwrap();
    let package = VerifiedPackage::verify(&package_path, &sha.to_uppercase()).unwrap();
    let images = dir.path().join("images");
    let v = version("1.0.0");

    let image = release::unpack(&package, &v, &images).unwrap();
    let inode = std::fs::metadata(&image).unwrap().ino();
    // Intact: reused as it is (same directory).
    let again = release::unpack(&package, &v, &images).unwrap();
    assert_eq!(again, image);
    assert_eq!(std::fs::metadata(&again).unwrap().ino(), inode);

    // Damaged: refused by the check before a run, unpacked again, into a new directory
    // under the same name.
    std::fs::write(image.join("bin/replica"), b"#!/bin/sh\necho tampered\n").unwrap();
    let err = release::verify_image(&images, &sha, &v).unwrap_err();
    assert!(
        matches!(&err, release::ReleaseError::ImageMismatch { reason, .. } if reason.contains("bin/replica")),
        "{err}"
    );
    // The cheap look does not hash: it still names the image.
    assert_eq!(release::inspect_image(&images, &sha).unwrap().version, v);
    let repaired = release::unpack(&package, &v, &images).unwrap();
    assert_eq!(repaired, image);
    assert_ne!(std::fs::metadata(&repaired).unwrap().ino(), inode);
    assert_eq!(run(&repaired.join("bin/replica")), "replica 1.0.0\n");
    assert_eq!(list(&images), std::slice::from_ref(&sha));

    // The image records its package: one that records another is not this package's.
    release::verify_image(&images, &sha, &v).unwrap();
    std::fs::write(
        image.join(release::PACKAGE_HASH_FILE),
        format!("{}\n", "0".repeat(64)),
    )
    .unwrap();
    let err = release::verify_image(&images, &sha, &v).unwrap_err();
    assert!(err.to_string().contains("records package"), "{err}");
    // And it is the version asked for, or refused.
    release::unpack(&package, &v, &images).unwrap();
    let err = release::verify_image(&images, &sha, &version("1.0.1")).unwrap_err();
    assert!(err.to_string().contains("names version 1.0.0"), "{err}");

    // A package whose hash is not the expected one is never a VerifiedPackage.
    let err = VerifiedPackage::verify(&package_path, &"0".repeat(64)).unwrap_err();
    assert!(matches!(
        err,
        release::ReleaseError::PackageHashMismatch { .. }
    ));
}

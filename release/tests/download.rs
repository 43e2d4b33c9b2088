//! The downloader against a local server that misbehaves on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use release::{
    DownloadLimits, Downloader, MAX_ATTEMPTS_PER_URL, Progress, ReleaseError, VerifiedPackage,
};
use std::{
    path::{Path, PathBuf},
    time::Duration,
};
use tempfile::TempDir;

const CHUNK_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BYTES: u64 = 16 << 20;

/// A built package and an empty cache directory.
struct Fixture {
    dir: TempDir,
    body: Vec<u8>,
    sha: String,
    cache: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = FakeRelease::write(&dir.path().join("src"), "2.0.0");
    let (_, body, sha) = src.build(&dir.path().join("out"), "r.tar.gz", "2.0.0");
    let cache = dir.path().join("cache");
    Fixture {
        dir,
        body,
        sha,
        cache,
    }
}

fn downloader() -> Downloader {
    Downloader::new(CHUNK_TIMEOUT, MAX_BYTES).unwrap()
}

async fn fetch(
    d: &Downloader,
    urls: &[String],
    first: usize,
    f: &Fixture,
) -> Result<VerifiedPackage, ReleaseError> {
    d.fetch(urls, first, &f.sha, &f.cache, &mut |_| {}).await
}

fn failures(err: ReleaseError) -> Vec<release::UrlFailure> {
    match err {
        ReleaseError::AllUrlsFailed { failures, .. } => failures,
        other => panic!("expected AllUrlsFailed, got {other}"),
    }
}

fn serve(body: &[u8]) -> Route {
    Route::Serve {
        body: body.to_vec(),
        ranges: true,
    }
}

/// What the orchestrator does with a version: fetch, unpack, switch.
async fn install(
    d: &Downloader,
    urls: &[String],
    sha: &str,
    cache: &Path,
    images: &Path,
    v: &str,
) -> Result<(), ReleaseError> {
    let package = d.fetch(urls, 0, sha, cache, &mut |_| {}).await?;
    release::unpack(&package, &version(v), images)?;
    release::switch_current(images, package.sha256())
}

#[tokio::test]
async fn a_wrong_hash_at_the_first_url_falls_through_to_the_second() {
    guard(async {
        let f = fixture();
        let other = noise(f.body.len(), 99);
        let server =
            TestServer::start(vec![("/bad", serve(&other)), ("/good", serve(&f.body))]).await;
        server.set_probe(&f.cache.join(&f.sha));

        let package = fetch(
            &downloader(),
            &[server.url("/bad"), server.url("/good")],
            0,
            &f,
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read(package.path()).unwrap(), f.body);
        let seen = server.seen();
        assert_eq!(
            seen.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(),
            ["/bad", "/good"]
        );
        // When the good URL was asked, the bad bytes were not in the cache under the
        // package's name (and afterwards only the good package is there).
        assert!(!seen[1].probe_existed);
        assert_eq!(list(&f.cache), vec![f.sha.clone()]);
    })
    .await;
}

#[tokio::test]
async fn the_bad_bytes_never_reach_the_cache_when_every_mirror_serves_them() {
    guard(async {
        let f = fixture();
        let other = noise(f.body.len(), 99);
        let server = TestServer::start(vec![("/bad", serve(&other))]).await;
        let err = fetch(&downloader(), &[server.url("/bad")], 0, &f)
            .await
            .unwrap_err();
        assert_eq!(failures(err).len(), 1);
        assert_eq!(list(&f.cache), Vec::<String>::new());
    })
    .await;
}

#[tokio::test]
async fn urls_are_tried_from_first_and_wrap_around() {
    guard(async {
        let f = fixture();
        let server = TestServer::start(vec![("/a", serve(&f.body))]).await;
        let urls = [server.url("/a"), server.url("/b"), server.url("/c")];
        // first = 4 is index 1: /b, /c (both 404), then /a.
        fetch(&downloader(), &urls, 4, &f).await.unwrap();
        let order: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
        assert_eq!(order, ["/b", "/c", "/a"]);
    })
    .await;
}

#[tokio::test]
async fn a_transfer_cut_in_the_middle_resumes_with_a_range_request() {
    guard(async {
        let f = fixture();
        let server = TestServer::start(vec![(
            "/p",
            Route::CutFirst {
                body: f.body.clone(),
                ranges: true,
            },
        )])
        .await;
        let mut events: Vec<Progress> = Vec::new();
        let package = downloader()
            .fetch(&[server.url("/p")], 0, &f.sha, &f.cache, &mut |p| {
                events.push(p)
            })
            .await
            .unwrap();
        assert_eq!(std::fs::read(package.path()).unwrap(), f.body);

        // What the first request left on disk: the last progress of the first request,
        // which the second request reports again as its starting point.
        let received = events
            .windows(2)
            .find(|w| w[0].bytes == w[1].bytes)
            .map(|w| w[0].bytes)
            .expect("a second request that started from the partial file");
        assert!(
            received > 0 && received <= (f.body.len() / 2) as u64,
            "{received}"
        );
        let seen = server.seen();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].range, None);
        assert_eq!(seen[1].range, Some(format!("bytes={received}-")));
        assert_eq!(events.last().unwrap().bytes, f.body.len() as u64);
        assert_eq!(list(&f.cache), vec![f.sha.clone()]);
    })
    .await;
}

#[tokio::test]
async fn a_server_that_ignores_range_gets_a_fresh_download() {
    guard(async {
        let f = fixture();
        let server = TestServer::start(vec![(
            "/p",
            Route::CutFirst {
                body: f.body.clone(),
                ranges: false,
            },
        )])
        .await;
        let package = fetch(&downloader(), &[server.url("/p")], 0, &f)
            .await
            .unwrap();
        assert_eq!(std::fs::read(package.path()).unwrap(), f.body);
        let seen = server.seen();
        assert_eq!(seen.len(), 2);
        // It asked for the rest, got a 200 with everything, and started again.
        assert!(seen[1].range.is_some());
    })
    .await;
}

#[tokio::test]
async fn a_partial_file_left_by_an_earlier_run_is_resumed_or_if_bad_restarted() {
    guard(async {
        let f = fixture();
        let server = TestServer::start(vec![("/p", serve(&f.body))]).await;
        std::fs::create_dir_all(&f.cache).unwrap();
        let part = f.cache.join(format!("{}.part", f.sha));

        // A good prefix: one request, for the rest.
        std::fs::write(&part, &f.body[..1000]).unwrap();
        let package = fetch(&downloader(), &[server.url("/p")], 0, &f)
            .await
            .unwrap();
        assert_eq!(std::fs::read(package.path()).unwrap(), f.body);
        assert_eq!(server.seen().len(), 1);
        assert_eq!(server.seen()[0].range.as_deref(), Some("bytes=1000-"));

        // A poisoned prefix (from a bad mirror): the resumed file fails the hash check,
        // and the same URL is asked again from zero instead of being given up.
        std::fs::remove_file(package.path()).unwrap();
        std::fs::write(&part, noise(1000, 5)).unwrap();
        let package = fetch(&downloader(), &[server.url("/p")], 0, &f)
            .await
            .unwrap();
        assert_eq!(std::fs::read(package.path()).unwrap(), f.body);
        let ranges: Vec<Option<String>> = server.seen().into_iter().map(|s| s.range).collect();
        assert_eq!(ranges[1..], [Some("bytes=1000-".to_string()), None]);
        assert!(!part.exists());
    })
    .await;
}

#[tokio::test]
async fn every_url_bad_is_an_error_naming_each_url_and_changes_nothing() {
    guard(async {
        let f = fixture();
        let other = noise(f.body.len(), 3);
        let server = TestServer::start(vec![("/wrong-hash", serve(&other))]).await;
        let urls = [
            server.url("/missing"),
            server.url("/wrong-hash"),
            refused_url().await,
        ];

        // A node running 1.0.0.
        let images = f.dir.path().join("images");
        let src = FakeRelease::write(&f.dir.path().join("src1"), "1.0.0");
        let (path1, _, sha1) = src.build(&f.dir.path().join("out1"), "r.tar.gz", "1.0.0");
        let package1 = VerifiedPackage::verify(&path1, &sha1).unwrap();
        release::unpack(&package1, &version("1.0.0"), &images).unwrap();
        release::switch_current(&images, &sha1).unwrap();
        let before = list(&images);

        let err = install(&downloader(), &urls, &f.sha, &f.cache, &images, "2.0.0")
            .await
            .unwrap_err();
        assert!(err.is_retryable());
        let text = err.to_string();
        for url in &urls {
            assert!(text.contains(url.as_str()), "{url} missing from: {text}");
        }
        let failures = failures(err);
        assert_eq!(
            failures.iter().map(|x| x.url.clone()).collect::<Vec<_>>(),
            urls
        );
        assert!(failures[0].reason.contains("404"), "{}", failures[0].reason);
        assert!(
            failures[1].reason.contains("SHA-256"),
            "{}",
            failures[1].reason
        );
        assert!(
            failures[2].reason.contains("request failed"),
            "{}",
            failures[2].reason
        );

        assert_eq!(list(&images), before);
        assert_eq!(
            release::current(&images).map(|i| i.version),
            Some(version("1.0.0"))
        );
        assert_eq!(list(&f.cache), Vec::<String>::new());
    })
    .await;
}

#[tokio::test]
async fn a_cached_package_is_reused_without_a_request_and_a_corrupt_one_is_replaced() {
    guard(async {
        let f = fixture();
        let server = TestServer::start(vec![("/p", serve(&f.body))]).await;
        std::fs::create_dir_all(&f.cache).unwrap();
        let cached = f.cache.join(&f.sha);

        std::fs::write(&cached, &f.body).unwrap();
        let package = fetch(&downloader(), &[server.url("/p")], 0, &f)
            .await
            .unwrap();
        assert_eq!(package.path(), cached);
        assert_eq!(server.seen().len(), 0);

        std::fs::write(&cached, noise(f.body.len(), 11)).unwrap();
        let package = fetch(&downloader(), &[server.url("/p")], 0, &f)
            .await
            .unwrap();
        assert_eq!(std::fs::read(package.path()).unwrap(), f.body);
        assert_eq!(server.seen().len(), 1);
        assert_eq!(server.seen()[0].range, None);

        // Corrupt, and nowhere to fetch from: the bad file is still deleted.
        std::fs::write(&cached, b"corrupt").unwrap();
        let err = fetch(&downloader(), &[server.url("/gone")], 0, &f)
            .await
            .unwrap_err();
        assert_eq!(failures(err).len(), 1);
        assert!(!cached.exists());
    })
    .await;
}

#[tokio::test]
async fn a_package_over_the_size_limit_is_refused_and_not_kept() {
    guard(async {
        let f = fixture();
        let server = TestServer::start(vec![("/p", serve(&f.body))]).await;
        let small = Downloader::new(CHUNK_TIMEOUT, f.body.len() as u64 - 1).unwrap();
        let err = fetch(&small, &[server.url("/p")], 0, &f).await.unwrap_err();
        let failures = failures(err);
        assert!(
            failures[0].reason.contains("limit"),
            "{}",
            failures[0].reason
        );
        assert_eq!(list(&f.cache), Vec::<String>::new());
        // Exactly the limit is fine.
        let exact = Downloader::new(CHUNK_TIMEOUT, f.body.len() as u64).unwrap();
        fetch(&exact, &[server.url("/p")], 0, &f).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_stalled_transfer_times_out_per_chunk_and_keeps_its_partial_file() {
    guard(async {
        let f = fixture();
        let server = TestServer::start(vec![(
            "/p",
            Route::Stall {
                body: f.body.clone(),
            },
        )])
        .await;
        let impatient = Downloader::new(Duration::from_millis(300), MAX_BYTES).unwrap();
        let err = fetch(&impatient, &[server.url("/p")], 0, &f)
            .await
            .unwrap_err();
        let failures = failures(err);
        assert!(
            failures[0].reason.contains("no data"),
            "{}",
            failures[0].reason
        );
        // Each request made progress before stalling, so the URL got every attempt.
        assert_eq!(server.seen().len(), MAX_ATTEMPTS_PER_URL);
        let part = f.cache.join(format!("{}.part", f.sha));
        // What arrived is kept for the next call to resume from.
        let kept = std::fs::metadata(&part).unwrap().len();
        assert!(kept > 0 && kept <= (f.body.len() / 2) as u64, "{kept}");
    })
    .await;
}

#[tokio::test]
async fn bad_arguments_are_refused_before_any_request() {
    guard(async {
        let f = fixture();
        let server = TestServer::start(vec![("/p", serve(&f.body))]).await;
        let d = downloader();
        let err = d
            .fetch(&[], 0, &f.sha, &f.cache, &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, ReleaseError::NoUrls { .. }), "{err}");
        let err = d
            .fetch(&[server.url("/p")], 0, "abc", &f.cache, &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, ReleaseError::BadExpectedHash { .. }), "{err}");
        assert!(!err.is_retryable());
        assert_eq!(server.seen().len(), 0);
    })
    .await;
}

/// A mirror that sends a byte every 200 ms never trips a chunk timeout; the rate floor
/// drops it once the grace period is over, and the next URL serves the package.
#[tokio::test]
async fn a_trickling_mirror_is_dropped_at_the_rate_floor() {
    guard(async {
        let f = fixture();
        let server = TestServer::start(vec![
            (
                "/trickle",
                Route::Trickle {
                    body: f.body.clone(),
                    every: Duration::from_millis(200),
                },
            ),
            ("/good", serve(&f.body)),
        ])
        .await;
        let limits = DownloadLimits {
            max_bytes: MAX_BYTES,
            chunk_timeout: Duration::from_secs(30),
            deadline: Duration::from_secs(60),
            min_bytes_per_s: 1024,
            grace: Duration::from_secs(1),
        };
        let d = Downloader::with_limits(limits).unwrap();
        let urls = [server.url("/trickle"), server.url("/good")];
        fetch(&d, &urls, 0, &f).await.unwrap();
        // Only the trickle alone: a clear failure, well before the chunk timeout.
        std::fs::remove_dir_all(&f.cache).unwrap();
        let started = std::time::Instant::now();
        let err = fetch(&d, &urls[..1], 0, &f).await.unwrap_err();
        let reason = &failures(err)[0].reason;
        assert!(reason.contains("too slow"), "{reason}");
        assert!(started.elapsed() < limits.chunk_timeout, "{reason}");
    })
    .await;
}

/// The whole fetch, every URL included, ends at the deadline.
#[tokio::test]
async fn the_overall_deadline_ends_a_fetch() {
    guard(async {
        let f = fixture();
        let server = TestServer::start(vec![(
            "/trickle",
            Route::Trickle {
                body: f.body.clone(),
                every: Duration::from_millis(100),
            },
        )])
        .await;
        let limits = DownloadLimits {
            max_bytes: MAX_BYTES,
            chunk_timeout: Duration::from_secs(30),
            deadline: Duration::from_secs(2),
            min_bytes_per_s: 0,
            grace: Duration::from_secs(30),
        };
        let d = Downloader::with_limits(limits).unwrap();
        let urls = [server.url("/trickle"), server.url("/trickle")];
        let err = fetch(&d, &urls, 0, &f).await.unwrap_err();
        let all = failures(err);
        assert!(all[0].reason.contains("deadline"), "{}", all[0].reason);
        assert!(all[1].reason.contains("deadline"), "{}", all[1].reason);
    })
    .await;
}

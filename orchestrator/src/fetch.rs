//! Downloading and unpacking a release beside the loop.
//!
//! A [`Job`] fetches one release's package (the registry's SHA-256 and URLs) into
//! `DIR/downloads/` and unpacks it into `images/<sha256>/` in a spawned task, reporting
//! its progress for `/status`; the loop starts it, keeps ticking (the supervisor keeps
//! the replica running, peers are asked, the registry is followed), and takes the result
//! on a later tick. At most one job runs ([`MAX_JOBS`]): the `.part` file of a package
//! is shared, and one mirror's bandwidth is better spent on one package at a time. The
//! download is bounded by [`DOWNLOAD_LIMITS`] (size, chunk timeout, overall deadline,
//! minimum rate).

use crate::{decide::Release, server::DownloadView};
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The largest release package.
pub const MAX_PACKAGE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Downloads running at once.
pub const MAX_JOBS: usize = 1;
/// What one download may cost: a mirror that stalls for 30 s, sends slower than 32 KiB/s
/// on average after the first 30 s, or has not delivered within 30 minutes, is dropped
/// (the next URL is tried, and the whole fetch is retried after a backoff).
pub const DOWNLOAD_LIMITS: release::DownloadLimits = release::DownloadLimits {
    max_bytes: MAX_PACKAGE_BYTES,
    chunk_timeout: Duration::from_secs(30),
    deadline: Duration::from_secs(30 * 60),
    min_bytes_per_s: 32 * 1024,
    grace: Duration::from_secs(30),
};

/// Where a job works.
#[derive(Clone, Debug)]
pub struct Dirs {
    /// `DIR/downloads`.
    pub cache: PathBuf,
    /// The images directory.
    pub images: PathBuf,
}

/// One release being fetched and unpacked.
#[derive(Debug)]
pub struct Job {
    pub release: Release,
    started: Instant,
    progress: Arc<Mutex<Option<release::Progress>>>,
    handle: tokio::task::JoinHandle<Result<(), String>>,
}

impl Job {
    /// Starts fetching `release` (URLs from index `first`, so nodes spread over mirrors).
    pub fn spawn(
        release: Release,
        downloader: release::Downloader,
        dirs: Dirs,
        first: usize,
    ) -> Self {
        let progress = Arc::new(Mutex::new(None));
        let seen = progress.clone();
        let r = release.clone();
        let handle = tokio::spawn(async move {
            let mut report = move |p: release::Progress| {
                if let Ok(mut s) = seen.lock() {
                    *s = Some(p);
                }
            };
            let package = downloader
                .fetch(&r.urls, first, &r.package_sha256, &dirs.cache, &mut report)
                .await
                .map_err(|e| e.to_string())?;
            // Unpacking reads and writes the whole package: off the async threads.
            let images = dirs.images.clone();
            let version = r.version.clone();
            tokio::task::spawn_blocking(move || release::unpack(&package, &version, &images))
                .await
                .map_err(|e| format!("unpacking: {e}"))?
                .map_err(|e| e.to_string())?;
            Ok(())
        });
        Self {
            release,
            started: Instant::now(),
            progress,
            handle,
        }
    }

    /// The result, once the job is over (`None` while it runs). `Ok` means the image of
    /// the release is unpacked and was verified as it was written.
    pub async fn take_if_done(&mut self) -> Option<Result<(), String>> {
        if !self.handle.is_finished() {
            return None;
        }
        Some(
            (&mut self.handle)
                .await
                .unwrap_or_else(|e| Err(format!("the download task ended: {e}"))),
        )
    }

    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.progress
            .lock()
            .ok()
            .and_then(|p| p.as_ref().map(|p| p.bytes))
            .unwrap_or(0)
    }

    /// What `/status` shows of it.
    pub fn view(&self) -> DownloadView {
        let p = self.progress.lock().ok().and_then(|p| p.clone());
        DownloadView {
            version: self.release.version.clone(),
            sha256: self.release.package_sha256.clone(),
            url: p.as_ref().map(|p| p.url.clone()).unwrap_or_default(),
            bytes: p.as_ref().map(|p| p.bytes).unwrap_or(0),
            total: p.and_then(|p| p.total),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // A job replaced by another (the registry changed its mind) stops downloading.
        self.handle.abort();
    }
}

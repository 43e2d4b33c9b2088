//! Downloading a package: mirrors in turn, resume with `Range`, bounded in size, time and
//! rate, hash before use; and keeping the cache directory bounded.

use crate::{ReleaseError, UrlFailure, VerifiedPackage, normalize_sha256, sha256_file};
use reqwest::{StatusCode, header};
use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};
use tokio::{io::AsyncWriteExt, time::Instant};

/// The most requests one URL gets in one [`Downloader::fetch`]: a transfer cut off after
/// some bytes arrived is resumed from the same URL until this many requests were made.
pub const MAX_ATTEMPTS_PER_URL: usize = 3;
/// A progress line is logged every time this many more bytes arrived.
pub const PROGRESS_LOG_INTERVAL_BYTES: u64 = 16 << 20;
/// The most nested causes written into one URL's failure reason.
const MAX_ERROR_CHAIN: usize = 8;
/// How often a transfer that receives nothing wakes to check its rate and deadline.
const RATE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// The largest file of extra CA certificates read.
pub const MAX_CA_FILE_BYTES: u64 = 1 << 20;
/// The most entries [`prune_downloads`] looks at in a cache directory.
pub const MAX_CACHE_DIR_ENTRIES: usize = 4096;

/// What one [`Downloader::fetch`] may cost (crate docs, "Download rules").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadLimits {
    /// The largest package.
    pub max_bytes: u64,
    /// The longest wait for a connection, a response head, or the next chunk.
    pub chunk_timeout: Duration,
    /// The whole fetch, every URL and attempt included, ends by then.
    pub deadline: Duration,
    /// After `grace`, a request's average rate since it started must stay at or above
    /// this (0: no floor).
    pub min_bytes_per_s: u64,
    pub grace: Duration,
}

impl DownloadLimits {
    /// Only a size bound and a chunk timeout: no rate floor, a deadline of a day.
    pub const fn chunked(chunk_timeout: Duration, max_bytes: u64) -> Self {
        Self {
            max_bytes,
            chunk_timeout,
            deadline: Duration::from_secs(24 * 3600),
            min_bytes_per_s: 0,
            grace: chunk_timeout,
        }
    }
}

/// How far a download is, reported to [`Downloader::fetch`]'s callback after every chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub url: String,
    /// Bytes of the package on disk so far (a resumed prefix included).
    pub bytes: u64,
    /// The package's size, if the server said.
    pub total: Option<u64>,
}

/// Downloads packages over HTTP or HTTPS; see the crate docs, "Download rules".
#[derive(Debug, Clone)]
pub struct Downloader {
    client: reqwest::Client,
    limits: DownloadLimits,
    chunk_timeout: Duration,
    max_bytes: u64,
    extra_roots: Vec<reqwest::Certificate>,
}

/// Why one request to a URL failed, and whether the same URL is worth another request
/// now (bytes arrived before the failure, or a bad partial file was thrown away).
struct Failure {
    reason: String,
    retry: bool,
}

fn fail(reason: String, retry: bool) -> Failure {
    Failure { reason, retry }
}

/// The HTTP client: rustls (ring) with the compiled-in Mozilla roots and `extra_roots`.
fn client(
    connect_timeout: Duration,
    extra_roots: &[reqwest::Certificate],
) -> Result<reqwest::Client, ReleaseError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .tls_built_in_root_certs(true);
    for root in extra_roots {
        builder = builder.add_root_certificate(root.clone());
    }
    builder
        .build()
        .map_err(|e| ReleaseError::HttpClient { reason: chain(&e) })
}

/// An error with its causes, `a: b: c` (reqwest's own message alone says little).
fn chain(error: &dyn std::error::Error) -> String {
    std::iter::successors(Some(error), |e| e.source())
        .take(MAX_ERROR_CHAIN)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// `Content-Range: bytes <start>-<end>/<total>` or `bytes */<total>`, as
/// `(start, total)`; `None` for either part given as `*`.
fn parse_content_range(value: &str) -> Option<(Option<u64>, Option<u64>)> {
    let (range, total) = value.strip_prefix("bytes ")?.trim().split_once('/')?;
    let total = match total {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let start = match range {
        "*" => None,
        r => {
            let (start, end) = r.split_once('-')?;
            let (start, end): (u64, u64) = (start.parse().ok()?, end.parse().ok()?);
            if end < start || total.is_some_and(|t| end >= t) {
                return None;
            }
            Some(start)
        }
    };
    Some((start, total))
}

/// The length of a file, 0 if it does not exist.
async fn file_len(path: &Path) -> u64 {
    tokio::fs::metadata(path)
        .await
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Hashes a file off the async threads.
async fn hash_file(path: &Path) -> Result<String, ReleaseError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || sha256_file(&owned))
        .await
        .map_err(|e| ReleaseError::io("hash", path, std::io::Error::other(e)))?
}

async fn remove_if_present(path: &Path) -> Result<(), ReleaseError> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ReleaseError::io("remove", path, e))
        }
        _ => Ok(()),
    }
}

impl Downloader {
    /// A downloader that waits at most `chunk_timeout` for a connection, a response head
    /// or the next chunk of a body, and refuses packages over `max_bytes`
    /// ([`DownloadLimits::chunked`]).
    pub fn new(chunk_timeout: Duration, max_bytes: u64) -> Result<Self, ReleaseError> {
        Self::with_limits(DownloadLimits::chunked(chunk_timeout, max_bytes))
    }

    /// A downloader bounded by `limits`.
    pub fn with_limits(limits: DownloadLimits) -> Result<Self, ReleaseError> {
        Ok(Self {
            client: client(limits.chunk_timeout, &[])?,
            limits,
            chunk_timeout: limits.chunk_timeout,
            max_bytes: limits.max_bytes,
            extra_roots: Vec::new(),
        })
    }

    /// Also trusts the CA certificates in the PEM file `path` for `https://` URLs (say, a
    /// mirror inside the operator's network), besides the compiled-in roots.
    pub fn with_extra_roots(mut self, path: &Path) -> Result<Self, ReleaseError> {
        let bad = |reason: String| ReleaseError::ExtraRoots {
            path: path.to_path_buf(),
            reason,
        };
        let mut pem = Vec::new();
        {
            use std::io::Read;
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_CA_FILE_BYTES + 1).read_to_end(&mut pem))
                .map_err(|e| bad(e.to_string()))?;
        }
        if pem.len() as u64 > MAX_CA_FILE_BYTES {
            return Err(bad(format!("larger than {MAX_CA_FILE_BYTES} bytes")));
        }
        let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(chain(&e)))?;
        if roots.is_empty() {
            return Err(bad("no PEM certificate in it".into()));
        }
        self.extra_roots.extend(roots);
        self.client = client(self.limits.chunk_timeout, &self.extra_roots)?;
        Ok(self)
    }

    pub fn limits(&self) -> &DownloadLimits {
        &self.limits
    }

    /// Returns the package with SHA-256 `expected_sha256` as `cache_dir/<sha256>`, from
    /// the cache if it is there and intact, or else downloaded from `urls` starting at
    /// `urls[first % urls.len()]`. `progress` is called after every chunk received.
    /// The rules are in the crate docs, "Download rules".
    pub async fn fetch(
        &self,
        urls: &[String],
        first: usize,
        expected_sha256: &str,
        cache_dir: &Path,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<VerifiedPackage, ReleaseError> {
        let expected =
            normalize_sha256(expected_sha256).ok_or_else(|| ReleaseError::BadExpectedHash {
                given: expected_sha256.to_string(),
            })?;
        if urls.is_empty() {
            return Err(ReleaseError::NoUrls { sha256: expected });
        }
        tokio::fs::create_dir_all(cache_dir)
            .await
            .map_err(|e| ReleaseError::io("create", cache_dir, e))?;
        let target = cache_dir.join(&expected);
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            let actual = hash_file(&target).await?;
            if actual == expected {
                tracing::info!(package = %target.display(), "cached package is intact; no download");
                return Ok(VerifiedPackage::hashed(target, actual));
            }
            tracing::warn!(package = %target.display(), %actual, "cached package has the wrong hash; deleting it");
            remove_if_present(&target).await?;
        }

        let part = cache_dir.join(format!("{expected}.part"));
        let deadline = Instant::now() + self.limits.deadline;
        let mut failures = Vec::new();
        let start = first % urls.len();
        for i in 0..urls.len() {
            let url = &urls[(start + i) % urls.len()];
            if Instant::now() >= deadline {
                failures.push(UrlFailure {
                    url: url.clone(),
                    reason: "not tried: the download's deadline had passed".into(),
                });
                continue;
            }
            match self
                .fetch_from(url, &expected, &part, &target, deadline, progress)
                .await
            {
                Ok(package) => return Ok(package),
                Err(reason) => {
                    tracing::warn!(%url, sha256 = %expected, %reason, "download from this URL failed");
                    failures.push(UrlFailure {
                        url: url.clone(),
                        reason,
                    });
                }
            }
        }
        Err(ReleaseError::AllUrlsFailed {
            sha256: expected,
            failures,
        })
    }

    /// Downloads from one URL (resuming `part` if it exists) until the file is complete
    /// and verified, or the URL failed; the reason is a sentence for the error.
    async fn fetch_from(
        &self,
        url: &str,
        expected: &str,
        part: &Path,
        target: &Path,
        deadline: Instant,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<VerifiedPackage, String> {
        let mut last_reason = String::new();
        for _ in 0..MAX_ATTEMPTS_PER_URL {
            let mut offset = file_len(part).await;
            if offset > self.max_bytes {
                remove_if_present(part).await.map_err(|e| e.to_string())?;
                offset = 0;
            }
            tracing::info!(%url, sha256 = %expected, resume_from_bytes = offset, "downloading package");
            match self.transfer(url, part, offset, deadline, progress).await {
                Ok(()) => {}
                Err(Failure { reason, retry }) => {
                    if !retry || Instant::now() >= deadline {
                        return Err(reason);
                    }
                    tracing::info!(%url, %reason, "download interrupted; trying this URL again");
                    last_reason = reason;
                    continue;
                }
            }
            let actual = hash_file(part).await.map_err(|e| e.to_string())?;
            if actual == expected {
                crate::rename(part, target).map_err(|e| e.to_string())?;
                tracing::info!(%url, package = %target.display(), "package downloaded and verified");
                return Ok(VerifiedPackage::hashed(target.to_path_buf(), actual));
            }
            remove_if_present(part).await.map_err(|e| e.to_string())?;
            last_reason = format!("the download's SHA-256 is {actual}, expected {expected}");
            if offset == 0 {
                return Err(last_reason);
            }
            // The resumed prefix may have come from another, bad, mirror.
            tracing::warn!(%url, reason = %last_reason, "resumed download has the wrong hash; trying again from zero");
        }
        Err(format!(
            "{last_reason} (gave up after {MAX_ATTEMPTS_PER_URL} requests)"
        ))
    }

    /// One request: appends to `part` from `offset` (or rewrites it if the server sends
    /// the whole body) until the body ends.
    async fn transfer(
        &self,
        url: &str,
        part: &Path,
        offset: u64,
        deadline: Instant,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), Failure> {
        let mut request = self.client.get(url);
        if offset > 0 {
            request = request.header(header::RANGE, format!("bytes={offset}-"));
        }
        let began = Instant::now();
        let head_by = deadline.min(began + self.chunk_timeout);
        let mut response = match tokio::time::timeout_at(head_by, request.send()).await {
            Err(_) => {
                return Err(fail(
                    format!("no response within {:?}", self.chunk_timeout),
                    false,
                ));
            }
            Ok(Err(e)) => return Err(fail(format!("request failed: {}", chain(&e)), false)),
            Ok(Ok(response)) => response,
        };
        let content_range = response
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let parsed_range = content_range.as_deref().and_then(parse_content_range);
        let discard = |reason: String| async move {
            match remove_if_present(part).await {
                Ok(()) => fail(reason, true),
                Err(e) => fail(format!("{reason}; {e}"), false),
            }
        };
        let (mut written, total, append) = match response.status() {
            StatusCode::PARTIAL_CONTENT if offset > 0 => match parsed_range {
                Some((Some(start), total)) if start == offset => (offset, total, true),
                _ => {
                    return Err(discard(format!(
                        "HTTP 206 with Content-Range {content_range:?} for a request from byte {offset}"
                    ))
                    .await);
                }
            },
            StatusCode::OK => {
                if offset > 0 {
                    tracing::info!(%url, "the server sent the whole package; starting from zero");
                }
                (0, response.content_length(), false)
            }
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                // The partial file may be complete already (stopped between its last
                // byte and the rename): then the hash check decides.
                if parsed_range.is_some_and(|(_, total)| total == Some(offset)) {
                    return Ok(());
                }
                return Err(discard(format!(
                    "HTTP 416 for a request from byte {offset} (Content-Range {content_range:?})"
                ))
                .await);
            }
            status => return Err(fail(format!("HTTP {status}"), false)),
        };
        if let Some(total) = total.filter(|t| *t > self.max_bytes) {
            let _ = remove_if_present(part).await;
            return Err(fail(
                format!(
                    "the package is {total} bytes, more than the limit of {} bytes",
                    self.max_bytes
                ),
                false,
            ));
        }

        let mut options = tokio::fs::OpenOptions::new();
        if append {
            options.append(true);
        } else {
            options.write(true).create(true).truncate(true);
        }
        let mut file = options
            .open(part)
            .await
            .map_err(|e| fail(ReleaseError::io("open", part, e).to_string(), false))?;
        let start = written;
        let mut logged = written;
        progress(Progress {
            url: url.to_string(),
            bytes: written,
            total,
        });
        // Bounded: every chunk is non-empty or ends the body, max_bytes bounds the sum, and
        // the deadline and the rate floor bound the time.
        let rate = netio::Limits {
            max_bytes: usize::MAX,
            deadline: self.limits.deadline,
            min_bytes_per_s: self.limits.min_bytes_per_s,
            grace: self.limits.grace,
        };
        let mut last_data = Instant::now();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(fail(
                    format!(
                        "the download's deadline of {} s passed after {written} bytes",
                        self.limits.deadline.as_secs()
                    ),
                    false,
                ));
            }
            let silent_until = last_data + self.chunk_timeout;
            let wake = silent_until.min(now + RATE_CHECK_INTERVAL).min(deadline);
            let chunk = match tokio::time::timeout_at(wake, response.chunk()).await {
                Err(_) if Instant::now() >= silent_until => {
                    return Err(fail(
                        format!("no data for {:?} after {written} bytes", self.chunk_timeout),
                        written > start,
                    ));
                }
                Err(_) => None,
                Ok(Err(e)) => {
                    return Err(fail(
                        format!("transfer cut after {written} bytes: {}", chain(&e)),
                        written > start,
                    ));
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => Some(chunk),
            };
            if let Some(chunk) = chunk {
                last_data = Instant::now();
                let len = chunk.len() as u64;
                if written.saturating_add(len) > self.max_bytes {
                    drop(file);
                    let _ = remove_if_present(part).await;
                    return Err(fail(
                        format!("more than the limit of {} bytes", self.max_bytes),
                        false,
                    ));
                }
                file.write_all(&chunk)
                    .await
                    .map_err(|e| fail(ReleaseError::io("write", part, e).to_string(), false))?;
                written += len;
                progress(Progress {
                    url: url.to_string(),
                    bytes: written,
                    total,
                });
                if written - logged >= PROGRESS_LOG_INTERVAL_BYTES {
                    tracing::info!(%url, bytes = written, ?total, "downloading package");
                    logged = written;
                }
            }
            let received = usize::try_from(written - start).unwrap_or(usize::MAX);
            if let Err(e) = netio::check_rate(&rate, began.elapsed(), received) {
                return Err(fail(format!("{e} (at byte {written})"), false));
            }
        }
        // durable: a resumable `.part` is appended to across requests; it is synced here
        // and renamed durably once its hash matched (fetch_from).
        file.sync_all()
            .await
            .map_err(|e| fail(ReleaseError::io("sync", part, e).to_string(), false))?;
        if let Some(total) = total.filter(|t| *t != written) {
            return Err(fail(
                format!("the body ended at {written} of {total} bytes"),
                written > start,
            ));
        }
        Ok(())
    }
}

/// Keeps the cache directory of [`Downloader::fetch`] bounded: removes packages
/// (`<sha256>` files) beyond the `keep` newest unprotected ones, and partial downloads
/// (`<sha256>.part`); never those of the packages in `protect` (the one being fetched,
/// the ones the node runs or may go back to); and temporary files a killed writer left.
/// Returns the names removed. Call it when no fetch into `cache_dir` runs.
pub fn prune_downloads(
    cache_dir: &Path,
    keep: usize,
    protect: &[&str],
) -> Result<Vec<String>, ReleaseError> {
    let list_err = |e| ReleaseError::io("list", cache_dir, e);
    let entries = match std::fs::read_dir(cache_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(list_err(e)),
    };
    let protected = |sha: &str| protect.iter().any(|p| p.eq_ignore_ascii_case(sha));
    let mut packages: Vec<(SystemTime, String)> = Vec::new();
    let mut doomed: Vec<String> = Vec::new();
    for entry in entries.take(MAX_CACHE_DIR_ENTRIES) {
        let entry = entry.map_err(list_err)?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let is_hash = |n: &str| normalize_sha256(n).as_deref() == Some(n);
        if let Some(sha) = name.strip_suffix(".part") {
            if is_hash(sha) && !protected(sha) {
                doomed.push(name);
            }
        } else if is_hash(&name) && !protected(&name) {
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(|e| ReleaseError::io("stat", &entry.path(), e))?;
            packages.push((modified, name));
        }
    }
    // Newest first; the unprotected ones past `keep` go.
    packages.sort_by(|a, b| b.cmp(a));
    doomed.extend(packages.into_iter().skip(keep).map(|(_, name)| name));
    let mut removed = Vec::new();
    for name in doomed {
        let path: PathBuf = cache_dir.join(&name);
        std::fs::remove_file(&path).map_err(|e| ReleaseError::io("remove", &path, e))?;
        tracing::info!(package = %path.display(), "pruned a downloaded package");
        removed.push(name);
    }
    durable::remove_stale(cache_dir).map_err(ReleaseError::durable)?;
    if !removed.is_empty() {
        crate::sync_dir(cache_dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<(Option<u64>, Option<u64>)>) {
        assert_eq!(parse_content_range(input), expected, "input {input:?}");
    }

    #[test]
    fn content_range_table() {
        check("bytes 100-199/200", Some((Some(100), Some(200))));
        check("bytes 0-0/*", Some((Some(0), None)));
        check("bytes */200", Some((None, Some(200))));
        check("bytes 100-99/200", None);
        check("bytes 100-200/200", None);
        check("bytes 100-199", None);
        check("items 0-1/2", None);
        check("bytes x-1/2", None);
    }

    #[test]
    fn error_chains_name_every_cause() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("outer")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
    }
}

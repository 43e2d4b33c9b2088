//! Downloading a package: mirrors in turn, resume with `Range`, hash before use.

use crate::{ReleaseError, UrlFailure, VerifiedPackage, normalize_sha256, sha256_file, sync_dir};
use reqwest::{StatusCode, header};
use std::{path::Path, time::Duration};
use tokio::io::AsyncWriteExt;

/// The most requests one URL gets in one [`Downloader::fetch`]: a transfer cut off after
/// some bytes arrived is resumed from the same URL until this many requests were made.
pub const MAX_ATTEMPTS_PER_URL: usize = 3;
/// A progress line is logged every time this many more bytes arrived.
pub const PROGRESS_LOG_INTERVAL_BYTES: u64 = 16 << 20;
/// The most nested causes written into one URL's failure reason.
const MAX_ERROR_CHAIN: usize = 8;

/// How far a download is, reported to [`Downloader::fetch`]'s callback after every chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub url: String,
    /// Bytes of the package on disk so far (a resumed prefix included).
    pub bytes: u64,
    /// The package's size, if the server said.
    pub total: Option<u64>,
}

/// Downloads packages over HTTP; see the crate docs, "Download rules".
#[derive(Debug, Clone)]
pub struct Downloader {
    client: reqwest::Client,
    chunk_timeout: Duration,
    max_bytes: u64,
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
    /// or the next chunk of a body, and refuses packages over `max_bytes`.
    pub fn new(chunk_timeout: Duration, max_bytes: u64) -> Result<Self, ReleaseError> {
        let client = reqwest::Client::builder()
            .connect_timeout(chunk_timeout)
            .build()
            .map_err(|e| ReleaseError::HttpClient { reason: chain(&e) })?;
        Ok(Self {
            client,
            chunk_timeout,
            max_bytes,
        })
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
        let mut failures = Vec::new();
        let start = first % urls.len();
        for i in 0..urls.len() {
            let url = &urls[(start + i) % urls.len()];
            match self
                .fetch_from(url, &expected, &part, &target, progress)
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
            match self.transfer(url, part, offset, progress).await {
                Ok(()) => {}
                Err(Failure { reason, retry }) => {
                    if !retry {
                        return Err(reason);
                    }
                    tracing::info!(%url, %reason, "download interrupted; trying this URL again");
                    last_reason = reason;
                    continue;
                }
            }
            let actual = hash_file(part).await.map_err(|e| e.to_string())?;
            if actual == expected {
                tokio::fs::rename(part, target)
                    .await
                    .map_err(|e| ReleaseError::io("rename into", target, e).to_string())?;
                if let Some(dir) = target.parent() {
                    sync_dir(dir).map_err(|e| e.to_string())?;
                }
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
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), Failure> {
        let mut request = self.client.get(url);
        if offset > 0 {
            request = request.header(header::RANGE, format!("bytes={offset}-"));
        }
        let mut response = match tokio::time::timeout(self.chunk_timeout, request.send()).await {
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
        // Bounded: every chunk is non-empty or ends the body, and max_bytes bounds the sum.
        loop {
            let chunk = match tokio::time::timeout(self.chunk_timeout, response.chunk()).await {
                Err(_) => {
                    return Err(fail(
                        format!("no data for {:?} after {written} bytes", self.chunk_timeout),
                        written > start,
                    ));
                }
                Ok(Err(e)) => {
                    return Err(fail(
                        format!("transfer cut after {written} bytes: {}", chain(&e)),
                        written > start,
                    ));
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => chunk,
            };
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

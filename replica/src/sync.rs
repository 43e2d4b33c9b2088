//! State sync: rebuilding the state at a CUP's height from peers' checkpoints over their
//! HTTP API (`GET /_/state/{h}/manifest`, `GET /_/state/{h}/chunk?bucket=B&slot=S`).
//!
//! The protocol and its checks are in [`crate::state::chunks`]: the manifest must lead
//! to the CUP's state hash before any chunk is asked for, and each chunk must verify
//! against the manifest before any of it is written. Here: every body is read through
//! `netio::read_body` within [`MANIFEST_LIMITS`] or [`CHUNK_LIMITS`] (size, deadline,
//! minimum rate) before it is decoded; a peer whose manifest or chunk does not verify,
//! or that is slow, too large or unreachable, is dropped at that request, and the next
//! peer continues from the same cursor, keeping every chunk already verified. A write
//! that fails here (a full disk) is this node's fault, not the peer's: the sync stops
//! with a storage error and no peer is blamed, so the caller can wait and retry.

use crate::{
    ReplicaError,
    state::{
        StateError, StateImport,
        chunks::{self, MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES},
    },
};
use netio::Limits;
use std::{path::Path, time::Duration};
use types::{CryptoHash, Height};

/// Reading a manifest (at most 2.5 MiB): 60 s in all, at least 32 KiB/s after 10 s.
pub const MANIFEST_LIMITS: Limits = Limits {
    max_bytes: MAX_MANIFEST_BYTES,
    deadline: Duration::from_secs(60),
    min_bytes_per_s: 32 * 1024,
    grace: Duration::from_secs(10),
};
/// Reading a chunk (at most 1 MiB): 30 s in all, at least 32 KiB/s after 5 s.
pub const CHUNK_LIMITS: Limits = Limits {
    max_bytes: MAX_CHUNK_BYTES,
    deadline: Duration::from_secs(30),
    min_bytes_per_s: 32 * 1024,
    grace: Duration::from_secs(5),
};
/// How long a peer may take to answer a request's headers (the body has its own limits).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a successful sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Entries written (the manifest's count).
    pub entries: u64,
    /// Chunks that verified and were written.
    pub chunks: u64,
    /// Each peer dropped on the way, with why.
    pub dropped: Vec<String>,
}

/// Fetches the state at `height` with hash `expected` into `target` from `peers`
/// (`ip:port` HTTP addresses), in order, each continuing where the last one was dropped.
pub async fn fetch_state(
    peers: &[String],
    height: Height,
    expected: CryptoHash,
    target: &Path,
) -> Result<SyncReport, ReplicaError> {
    let client = reqwest::Client::builder()
        .connect_timeout(RESPONSE_TIMEOUT)
        .build()
        .map_err(|e| ReplicaError::Io(format!("http client: {e}")))?;
    let mut import = None;
    let mut report = SyncReport::default();
    for peer in peers {
        match sync_from(
            &client,
            peer,
            height,
            expected,
            target,
            &mut import,
            &mut report,
        )
        .await
        {
            Ok(()) => {
                let Some(done) = import.take() else {
                    break;
                };
                report.entries = done.written();
                done.finish()?;
                return Ok(report);
            }
            Err(Failure::Peer(e)) => {
                tracing::warn!(%peer, %height, error = %e, "state sync: dropped this peer");
                report.dropped.push(format!("{peer}: {e}"));
            }
            Err(Failure::Local(e)) => {
                drop(import);
                let _ = std::fs::remove_dir_all(target);
                return Err(ReplicaError::State(e));
            }
        }
    }
    drop(import);
    let _ = std::fs::remove_dir_all(target);
    Err(ReplicaError::StateSyncFailed(format!(
        "state sync for height {height} failed from every peer: {}",
        report.dropped.join("; ")
    )))
}

async fn get(client: &reqwest::Client, url: &str, limits: &Limits) -> Result<Vec<u8>, String> {
    let resp = tokio::time::timeout(RESPONSE_TIMEOUT, client.get(url).send())
        .await
        .map_err(|_| format!("{url}: no answer within {} s", RESPONSE_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    netio::read_body(resp, limits)
        .await
        .map_err(|e| format!("{url}: {e}"))
}

/// Why a sync from one peer stopped.
enum Failure {
    /// The peer: unreachable, slow, too large, or data that does not verify.
    Peer(String),
    /// This node's storage refused a write.
    Local(StateError),
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Peer(e)
    }
}

impl From<StateError> for Failure {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Storage(_) => Failure::Local(e),
            other => Failure::Peer(other.to_string()),
        }
    }
}

async fn sync_from(
    client: &reqwest::Client,
    peer: &str,
    height: Height,
    expected: CryptoHash,
    target: &Path,
    import: &mut Option<StateImport>,
    report: &mut SyncReport,
) -> Result<(), Failure> {
    let base = format!("http://{peer}/_/state/{}", height.get());
    let manifest =
        chunks::decode_manifest(&get(client, &format!("{base}/manifest"), &MANIFEST_LIMITS).await?)
            .map_err(|e| e.to_string())?;
    let i = match import {
        Some(i) => {
            i.accept_manifest(&manifest)?;
            i
        }
        None => import.insert(StateImport::create(target, height, expected, &manifest)?),
    };
    // Every chunk that verifies advances by at least one entry.
    let max_requests = manifest.entries() + 1;
    for _ in 0..max_requests {
        let Some(at) = i.cursor() else {
            return Ok(());
        };
        let url = format!("{base}/chunk?bucket={}&slot={}", at.bucket, at.slot);
        let chunk = get(client, &url, &CHUNK_LIMITS)
            .await
            .and_then(|b| chunks::decode_chunk(&b).map_err(|e| e.to_string()))
            .map_err(|e| format!("the chunk at {at}: {e}"))?;
        match i.add(&chunk).map_err(Failure::from) {
            Ok(_) => report.chunks += 1,
            Err(Failure::Peer(e)) => return Err(format!("the chunk at {at}: {e}").into()),
            Err(local) => return Err(local),
        }
    }
    match i.cursor() {
        None => Ok(()),
        Some(at) => Err(format!("still at {at} after {max_requests} chunk requests").into()),
    }
}

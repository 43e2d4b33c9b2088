//! State sync: rebuilding the state at a CUP's height from peers' checkpoints, chunk by
//! chunk over their HTTP API, trusted only once its hash equals the CUP's state hash.

use crate::{
    ReplicaError,
    state::{MAX_CHUNK_BYTES, StateChunk, StateImport},
};
use std::path::Path;
use types::{CryptoHash, Height, codec};

/// The most chunks one sync reads from one peer (a bound on a peer that never says done).
pub const MAX_CHUNKS: usize = 1 << 20;

/// Fetches the state at `height` into `target` from the first peer that serves one with
/// hash `expected`. `peers` are `ip:port` HTTP addresses.
pub async fn fetch_state(
    peers: &[String],
    height: Height,
    expected: CryptoHash,
    target: &Path,
) -> Result<(), ReplicaError> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| ReplicaError::Io(format!("http client: {e}")))?;
    let mut errors = Vec::new();
    for peer in peers {
        match fetch_from(&client, peer, height, expected, target).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(%peer, %height, error = %e, "state sync from this peer failed");
                errors.push(format!("{peer}: {e}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(target);
    Err(ReplicaError::Refused(format!(
        "state sync for height {height} failed from every peer: {}",
        errors.join("; ")
    )))
}

async fn fetch_from(
    client: &reqwest::Client,
    peer: &str,
    height: Height,
    expected: CryptoHash,
    target: &Path,
) -> Result<(), String> {
    let mut import = StateImport::create(target).map_err(|e| e.to_string())?;
    for _ in 0..MAX_CHUNKS {
        let mut url = format!("http://{peer}/_/state/{}", height.get());
        if let Some(c) = import.cursor() {
            url.push_str(&format!("?after={}", hex::encode(c)));
        }
        let resp = client.get(&url).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        let chunk: StateChunk =
            codec::decode(&bytes, 2 * MAX_CHUNK_BYTES + 4096).map_err(|e| e.to_string())?;
        if chunk.height != height {
            return Err(format!("chunk for height {}, asked {height}", chunk.height));
        }
        crate::state::check_readable(chunk.schema).map_err(|e| e.to_string())?;
        import.add(&chunk.entries).map_err(|e| e.to_string())?;
        if chunk.done {
            return import
                .finish(height, expected, chunk.schema)
                .map_err(|e| e.to_string());
        }
        if chunk.entries.is_empty() {
            return Err("an empty chunk that is not the last".into());
        }
    }
    Err(format!("more than {MAX_CHUNKS} chunks"))
}

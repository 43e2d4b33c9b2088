//! The node side: copies the registry into a node-local store, verifying every page
//! against the registry's root public key. The local store answers `get(key, version)`
//! with the store laws, and keeps answering while the server is unreachable.

use crate::{
    api::MAX_VERSIONS_PER_PAGE,
    client::{ClientError, RegistryClient},
    store::{RegistryStore, StoreError},
};
use std::sync::Mutex;
use types::RegistryVersion;

/// The most pages one poll fetches (a bound on a poll's work: 1000 × 1000 versions).
pub const MAX_PAGES_PER_POLL: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicatorError {
    #[error("replicator needs the registry's root public key")]
    NoRootKey,
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("local registry store: {0}")]
    Store(#[from] StoreError),
    #[error("the registry reports version {remote} but sent no delta after {local}")]
    Stalled {
        local: RegistryVersion,
        remote: RegistryVersion,
    },
}

/// The outcome of one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub versions_added: u64,
    pub local_version: RegistryVersion,
    pub remote_version: RegistryVersion,
}

#[derive(Debug, Clone)]
pub struct Replicator {
    client: RegistryClient,
}

impl Replicator {
    /// `client` must verify signatures (built with the root public key).
    pub fn new(client: RegistryClient, has_root_key: bool) -> Result<Self, ReplicatorError> {
        if !has_root_key {
            return Err(ReplicatorError::NoRootKey);
        }
        Ok(Self { client })
    }

    /// Fetches and appends every version the local store lacks (up to the poll bound).
    pub async fn poll_once<S: RegistryStore>(
        &self,
        store: &Mutex<S>,
    ) -> Result<Progress, ReplicatorError> {
        let lock = || store.lock().unwrap_or_else(|p| p.into_inner());
        let start = lock().latest_version();
        let mut remote = start;
        for _ in 0..MAX_PAGES_PER_POLL {
            let local = lock().latest_version();
            let page = self.client.changes(local, MAX_VERSIONS_PER_PAGE).await?;
            remote = page.latest_version;
            if page.deltas.is_empty() {
                if remote > local {
                    return Err(ReplicatorError::Stalled { local, remote });
                }
                break;
            }
            let mut s = lock();
            // One atomic, durable write per page (not per version).
            s.append_all(&page.deltas)?;
            if s.latest_version() >= remote {
                break;
            }
        }
        let local = lock().latest_version();
        Ok(Progress {
            versions_added: local.get() - start.get(),
            local_version: local,
            remote_version: remote,
        })
    }
}

//! The registry replicated from the NNS subnet (issue 19): each poll asks a node of the
//! NNS subnet for the changes after the local copy's latest version
//! (`GET /api/v1/registry/changes?since=V`), checks the page with the NNS subnet's public
//! key and the chain hash of the local copy ([`verify_registry_page`]), and appends what
//! it proves. Whichever node answered, nothing but what the NNS subnet certified enters
//! the copy; a node that lies, withholds or is down costs a poll, and the orchestrator
//! asks the next one (`node::Orchestrator::replicate` tries its sources in turn).
//!
//! The chain hash of the local copy is computed from its deltas (from genesis, once per
//! process, then incrementally), so it needs no state beside the copy.

use crypto::bls::BlsPublicKey;
use registry::{
    page::{MAX_PAGE_BYTES, RegistryPage, verify_registry_page},
    replicator::Progress,
    store::{
        RegistryStore,
        kv::{chain_hash, genesis_chain_hash},
    },
};
use std::{sync::Mutex, time::Duration};
use types::{CryptoHash, RegistryVersion, codec};

/// The most pages one poll fetches.
pub const MAX_PAGES_PER_POLL: usize = 100;
/// A page must have arrived by then.
pub const PAGE_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NnsSourceError {
    #[error("the NNS node at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the NNS node at {url} sent a page that does not verify: {reason}")]
    Unverified { url: String, reason: String },
    #[error("the local registry copy: {0}")]
    Store(String),
}

/// One node of the NNS subnet, as a source of the registry.
#[derive(Debug)]
pub struct NnsSource {
    url: String,
    key: BlsPublicKey,
    http: reqwest::Client,
    /// The chain hash of the local copy at a version (computed, then kept up to date).
    chain: Mutex<Option<(RegistryVersion, CryptoHash)>>,
}

impl NnsSource {
    pub fn new(url: &str, key: BlsPublicKey) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("{url}: only http and https are supported"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            key,
            http,
            chain: Mutex::new(None),
        })
    }

    /// The chain hash after `latest` of `store`: the kept one, extended by the deltas
    /// after it.
    fn chain_at<S: RegistryStore>(
        &self,
        store: &S,
        latest: RegistryVersion,
    ) -> Result<CryptoHash, NnsSourceError> {
        let mut kept = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        let (mut version, mut hash) = match *kept {
            Some((v, h)) if v <= latest => (v, h),
            _ => (RegistryVersion::ZERO, genesis_chain_hash()),
        };
        while version < latest {
            let deltas = store
                .changes_since(version, registry::api::MAX_VERSIONS_PER_PAGE)
                .map_err(|e| NnsSourceError::Store(e.to_string()))?;
            let Some(last) = deltas.last().map(|d| d.version) else {
                return Err(NnsSourceError::Store(format!(
                    "no delta after version {version}, the copy is at {latest}"
                )));
            };
            for d in &deltas {
                hash = chain_hash(&hash, d);
            }
            version = last;
        }
        *kept = Some((version, hash));
        Ok(hash)
    }

    async fn page(&self, since: RegistryVersion) -> Result<RegistryPage, NnsSourceError> {
        let unreachable = |reason: String| NnsSourceError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let resp = self
            .http
            .get(format!(
                "{}/api/v1/registry/changes?since={}",
                self.url,
                since.get()
            ))
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let body = netio::read_body(resp, &netio::Limits::small(MAX_PAGE_BYTES, PAGE_DEADLINE))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !status.is_success() {
            return Err(unreachable(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )));
        }
        codec::decode(&body, MAX_PAGE_BYTES).map_err(|e| NnsSourceError::Unverified {
            url: self.url.clone(),
            reason: format!("malformed page: {e}"),
        })
    }

    /// Fetches, checks and appends every version the local copy lacks (up to the poll
    /// bound). Nothing that does not verify is appended.
    pub async fn poll_once<S: RegistryStore>(
        &self,
        store: &Mutex<S>,
    ) -> Result<Progress, NnsSourceError> {
        let lock = || store.lock().unwrap_or_else(|p| p.into_inner());
        let start = lock().latest_version();
        let mut remote = start;
        for _ in 0..MAX_PAGES_PER_POLL {
            let local = lock().latest_version();
            let trusted = self.chain_at(&*lock(), local)?;
            let page = self.page(local).await?;
            if page.since != local {
                return Err(NnsSourceError::Unverified {
                    url: self.url.clone(),
                    reason: format!("a page after version {}, asked {local}", page.since),
                });
            }
            let deltas = verify_registry_page(&page, &trusted, &self.key).map_err(|e| {
                NnsSourceError::Unverified {
                    url: self.url.clone(),
                    reason: e.to_string(),
                }
            })?;
            remote = page.latest;
            if deltas.is_empty() {
                break;
            }
            let mut s = lock();
            // One atomic, durable write per page.
            s.append_all(deltas)
                .map_err(|e| NnsSourceError::Store(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use registry::page::Certificate;
    use registry::store::MemoryStore;

    /// Serves `page` (encoded) at every path; the URL.
    async fn serve(page: Vec<u8>) -> String {
        let app = axum::Router::new().fallback(move || {
            let page = page.clone();
            async move { page }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn key() -> BlsPublicKey {
        crypto::bls::BlsSecretKey::from_bytes(&[7u8; 32])
            .unwrap()
            .public_key()
    }

    #[tokio::test]
    async fn a_page_that_does_not_verify_appends_nothing() {
        let delta = registry::store::VersionDelta {
            version: RegistryVersion::new(1),
            changes: vec![registry::store::KeyChange {
                key: "subnet_list".into(),
                value: Some(vec![1]),
            }],
        };
        // A node's page with a made-up certificate: deltas that would apply cleanly.
        let page = RegistryPage {
            since: RegistryVersion::ZERO,
            certified_height: 5,
            certificate: Certificate {
                height: 5,
                state_hash: CryptoHash([9; 32]),
                signature: hex::encode([0xa0u8; 96]),
                kind: "certification".into(),
                replica_version: types::ReplicaVersion::new("1.0.0").unwrap(),
                cup_content: None,
            },
            state_schema: 1,
            latest: RegistryVersion::new(1),
            latest_witness: Vec::new(),
            deltas: vec![delta],
            head: None,
        };
        let url = serve(codec::encode(&page)).await;
        let source = NnsSource::new(&url, key()).unwrap();
        let store = Mutex::new(MemoryStore::new());
        let r = source.poll_once(&store).await;
        assert!(matches!(r, Err(NnsSourceError::Unverified { .. })), "{r:?}");
        assert_eq!(
            store.lock().unwrap().latest_version(),
            RegistryVersion::ZERO
        );
        // Garbage is refused the same way.
        let url = serve(b"not a page".to_vec()).await;
        let source = NnsSource::new(&url, key()).unwrap();
        let r = source.poll_once(&store).await;
        assert!(matches!(r, Err(NnsSourceError::Unverified { .. })), "{r:?}");
        assert_eq!(
            store.lock().unwrap().latest_version(),
            RegistryVersion::ZERO
        );
    }
}

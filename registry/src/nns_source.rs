//! The registry replicated from the NNS subnet (issue 19): each poll asks a node of the
//! NNS subnet for the changes after the local copy's latest version
//! (`GET /api/v1/registry/changes?since=V`), checks the page with the NNS subnet's public
//! key and the chain hash of the local copy ([`verify_registry_page`]), and appends what
//! it proves. Whichever node answered, nothing but what the NNS subnet certified enters
//! the copy; a node that lies, withholds or is down costs a poll, and the reader asks the
//! next one (an orchestrator tries its sources in turn).
//!
//! Governance's proposals are read the same way ([`NnsSource::proposals`],
//! `GET /api/v1/registry/proposals?from=ID`, [`verify_governance_page`]).
//!
//! The chain hash of the local copy is computed from its deltas (from genesis, once per
//! process, then incrementally), so it needs no state beside the copy.
//!
//! Every reader of an NNS node's registry goes through here: orchestrators, `nns`
//! ([`crate::nns_node`]) and a registry server that follows the NNS subnet.

use crate::{
    governance::{Proposal, ProposalId},
    page::{
        GovernancePage, MAX_PAGE_BYTES, RegistryPage, verify_governance_page, verify_registry_page,
    },
    replicator::Progress,
    store::{
        RegistryStore,
        kv::{chain_hash, genesis_chain_hash},
    },
};
use crypto::bls::BlsPublicKey;
use std::{sync::Mutex, time::Duration};
use types::{CryptoHash, RegistryVersion, codec};

/// The most pages one poll fetches.
pub const MAX_PAGES_PER_POLL: usize = 100;
/// A page must have arrived by then.
pub const PAGE_DEADLINE: Duration = Duration::from_secs(30);

/// The most governance pages one read follows (100 proposals each).
pub const MAX_GOVERNANCE_PAGES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NnsSourceError {
    #[error("the NNS node at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the node at {url} serves no registry: {reason}")]
    NoRegistry { url: String, reason: String },
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
                .changes_since(version, crate::api::MAX_VERSIONS_PER_PAGE)
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

    /// The body of a page at `path`: a 404 is a node that keeps no registry, any other
    /// failure one that cannot answer now.
    async fn fetch(&self, path: &str) -> Result<Vec<u8>, NnsSourceError> {
        let unreachable = |reason: String| NnsSourceError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let body = netio::read_body(resp, &netio::Limits::small(MAX_PAGE_BYTES, PAGE_DEADLINE))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !status.is_success() {
            let reason = format!(
                "{status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
            return Err(if status == reqwest::StatusCode::NOT_FOUND {
                NnsSourceError::NoRegistry {
                    url: self.url.clone(),
                    reason,
                }
            } else {
                unreachable(reason)
            });
        }
        Ok(body)
    }

    fn decode<T: serde::de::DeserializeOwned + serde::Serialize>(
        &self,
        body: &[u8],
    ) -> Result<T, NnsSourceError> {
        codec::decode(body, MAX_PAGE_BYTES).map_err(|e| NnsSourceError::Unverified {
            url: self.url.clone(),
            reason: format!("malformed page: {e}"),
        })
    }

    async fn page(&self, since: RegistryVersion) -> Result<RegistryPage, NnsSourceError> {
        let body = self
            .fetch(&format!("/api/v1/registry/changes?since={}", since.get()))
            .await?;
        self.decode(&body)
    }

    /// Every proposal governance has made, as the NNS subnet certifies it, page by page,
    /// each checked with the key ([`verify_governance_page`]); the next proposal id.
    pub async fn proposals(&self) -> Result<(Vec<Proposal>, u64), NnsSourceError> {
        self.proposals_from(1).await
    }

    /// [`Self::proposals`] from id `first` on (ids from 1), and the certified next id. A
    /// next id below `first` (a node behind the caller's copy) is refused.
    pub async fn proposals_from(
        &self,
        first: ProposalId,
    ) -> Result<(Vec<Proposal>, u64), NnsSourceError> {
        let mut all = Vec::new();
        let mut from = first.max(1);
        let mut next = from;
        for _ in 0..MAX_GOVERNANCE_PAGES {
            let body = self
                .fetch(&format!("/api/v1/registry/proposals?from={from}"))
                .await?;
            let page: GovernancePage = self.decode(&body)?;
            if page.from != from {
                return Err(NnsSourceError::Unverified {
                    url: self.url.clone(),
                    reason: format!("proposals from {}, asked {from}", page.from),
                });
            }
            let verified = verify_governance_page(&page, &self.key).map_err(|e| {
                NnsSourceError::Unverified {
                    url: self.url.clone(),
                    reason: e.to_string(),
                }
            })?;
            next = verified.next_proposal_id;
            if next < first {
                return Err(NnsSourceError::Unverified {
                    url: self.url.clone(),
                    reason: format!(
                        "its certified next proposal id {next} is below {first}, which this copy already holds: the node is behind"
                    ),
                });
            }
            from += verified.proposals.len() as u64;
            let done = verified.proposals.is_empty() || from >= next;
            all.extend(verified.proposals);
            if done {
                break;
            }
        }
        Ok((all, next))
    }

    /// Fetches, checks and appends every version the local copy lacks (up to the poll
    /// bound). Nothing that does not verify is appended.
    pub async fn poll_once<S: RegistryStore>(
        &self,
        store: &Mutex<S>,
    ) -> Result<Progress, NnsSourceError> {
        self.poll_once_in(store, |s| s).await
    }

    /// [`Self::poll_once`] into the store `project` finds inside what `copy` guards (a
    /// registry server's `Registry`).
    pub async fn poll_once_in<G, S: RegistryStore>(
        &self,
        copy: &Mutex<G>,
        project: impl Fn(&mut G) -> &mut S,
    ) -> Result<Progress, NnsSourceError> {
        // Each step locks for a moment, never across a request.
        let with = |f: &mut dyn FnMut(&mut S) -> Result<(), NnsSourceError>| {
            let mut g = copy.lock().unwrap_or_else(|p| p.into_inner());
            f(project(&mut g))
        };
        let latest = || {
            let mut v = RegistryVersion::ZERO;
            let _ = with(&mut |s| {
                v = s.latest_version();
                Ok(())
            });
            v
        };
        let start = latest();
        let mut remote = start;
        for _ in 0..MAX_PAGES_PER_POLL {
            let local = latest();
            let mut trusted = CryptoHash([0; 32]);
            with(&mut |s| {
                trusted = self.chain_at(s, local)?;
                Ok(())
            })?;
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
            let mut caught_up = false;
            with(&mut |s| {
                // One atomic, durable write per page.
                s.append_all(deltas)
                    .map_err(|e| NnsSourceError::Store(e.to_string()))?;
                caught_up = s.latest_version() >= remote;
                Ok(())
            })?;
            if caught_up {
                break;
            }
        }
        let local = latest();
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
    use crate::page::Certificate;
    use crate::store::MemoryStore;

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
        let delta = crate::store::VersionDelta {
            version: RegistryVersion::new(1),
            changes: vec![crate::store::KeyChange {
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

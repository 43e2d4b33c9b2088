//! Where the node's registry copy comes from, tried in turn at each poll: the registry
//! servers `node.toml` names, or, with an NNS subnet (issue 19), its nodes: first those
//! `node.toml` names, then those the copy itself names (the NNS subnet's members' public
//! APIs, [`registry::local::nns_node_urls`], read again whenever the copy's version
//! changes), so that a node keeps finding the NNS subnet as its membership changes and
//! when every node its configuration names is gone. Every NNS page is checked with the
//! NNS subnet's key, whichever node answered.

use crate::{config::NodeConfig, metrics::Metrics};
use crypto::bls::BlsPublicKey;
use registry::{
    client::RegistryClient,
    local::nns_node_urls,
    nns_source::{NnsSource, NnsSourceError},
    replicator::Replicator,
    store::{RegistryStore, RocksStore},
};
use std::sync::Mutex;
use types::RegistryVersion;

/// The most NNS nodes learned from the registry copy.
pub const MAX_LEARNED: usize = crate::config::MAX_NNS_URLS;

/// A source of the registry: a registry server (answers signed with the registry key) or
/// a node of the NNS subnet (pages certified by the NNS subnet's key).
#[derive(Debug)]
enum Source {
    Server(Replicator),
    Nns(NnsSource),
}

#[derive(Debug)]
pub struct Sources {
    configured: Vec<Source>,
    /// The NNS subnet's key, with an NNS subnet.
    nns_key: Option<BlsPublicKey>,
    /// NNS nodes the copy names that `node.toml` does not, by URL.
    learned: Vec<(String, NnsSource)>,
    /// The copy's version `learned` was read at.
    learned_at: Option<RegistryVersion>,
}

impl Sources {
    /// The sources `cfg` names: its NNS nodes when it names the NNS subnet's key, else
    /// its registry servers.
    pub fn new(cfg: &NodeConfig) -> Result<Self, String> {
        let root = cfg.root_key();
        let nns_key = cfg.nns_key();
        let configured = match nns_key {
            Some(key) => cfg
                .nns_urls
                .iter()
                .map(|u| NnsSource::new(u, key).map(Source::Nns))
                .collect::<Result<Vec<_>, String>>()?,
            None => cfg
                .registry_urls
                .iter()
                .map(|u| {
                    let c = RegistryClient::new(u, root).map_err(|e| format!("{u}: {e}"))?;
                    Replicator::new(c, root.is_some())
                        .map(Source::Server)
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, String>>()?,
        };
        Ok(Self {
            configured,
            nns_key,
            learned: Vec::new(),
            learned_at: None,
        })
    }

    /// The URLs of the NNS nodes learned from the copy (not named by `node.toml`).
    pub fn learned_urls(&self) -> Vec<String> {
        self.learned.iter().map(|(u, _)| u.clone()).collect()
    }

    /// Reads the NNS subnet's members from the copy again if its version changed.
    fn learn(&mut self, store: &Mutex<RocksStore>, configured_urls: &[String]) {
        let Some(key) = self.nns_key else {
            return;
        };
        let urls = {
            let store = store.lock().unwrap_or_else(|p| p.into_inner());
            let latest = store.latest_version();
            if self.learned_at == Some(latest) {
                return;
            }
            self.learned_at = Some(latest);
            match nns_node_urls(&*store, latest) {
                Ok(urls) => urls,
                Err(e) => {
                    tracing::debug!(error = %e, "reading the NNS subnet's nodes from the copy");
                    return;
                }
            }
        };
        let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
        let mut kept = std::mem::take(&mut self.learned);
        for url in urls.into_iter().take(MAX_LEARNED) {
            if configured_urls.iter().any(|c| same(c, &url))
                || self.learned.iter().any(|(u, _)| same(u, &url))
            {
                continue;
            }
            // A source already learned keeps its chain hash.
            let source = match kept.iter().position(|(u, _)| same(u, &url)) {
                Some(i) => kept.swap_remove(i).1,
                None => match NnsSource::new(&url, key) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "an NNS node's URL in the copy");
                        continue;
                    }
                },
            };
            self.learned.push((url, source));
        }
    }

    /// One poll: the configured sources in turn, then the learned ones; true once one
    /// answered. A page that does not verify is counted and logged as a warning.
    pub async fn poll(
        &mut self,
        store: &Mutex<RocksStore>,
        configured_urls: &[String],
        metrics: &Metrics,
    ) -> bool {
        self.learn(store, configured_urls);
        let learned = self.learned.iter().map(|(_, s)| s);
        for source in self.configured.iter().filter_map(nns_of).chain(learned) {
            match source.poll_once(store).await {
                Ok(_) => return true,
                Err(e) => refused(&e, metrics),
            }
        }
        for source in &self.configured {
            if let Source::Server(r) = source {
                match r.poll_once(store).await {
                    Ok(_) => return true,
                    Err(e) => tracing::debug!(error = %e, "registry poll failed"),
                }
            }
        }
        metrics.registry_poll_failures.inc();
        false
    }
}

fn nns_of(s: &Source) -> Option<&NnsSource> {
    match s {
        Source::Nns(n) => Some(n),
        Source::Server(_) => None,
    }
}

fn refused(e: &NnsSourceError, metrics: &Metrics) {
    // A node that answers what its subnet did not certify is lying or broken: worth a
    // warning, unlike one that is down.
    if matches!(e, NnsSourceError::Unverified { .. }) {
        metrics.registry_pages_refused.inc();
        tracing::warn!(error = %e, "refused a registry page");
    } else {
        tracing::debug!(error = %e, "registry poll failed");
    }
}

//! Where the answers come from: [`Sources`], a small trait the refresh is written
//! against, and [`HttpSources`], the real one (the registry through [`RegistryClient`],
//! the nodes over HTTP). Tests put fakes behind the trait.
//!
//! Every read is bounded: a node answer at most [`MAX_NODE_ANSWER_BYTES`] within
//! [`NODE_DEADLINE`], the whole registry read within [`REGISTRY_DEADLINE`] (and each of its
//! answers within the registry client's own size limits). [`refresh`] reads the registry
//! and polls every endpoint of every known node at once, each in its own task, so one slow
//! or silent node costs its own row one deadline and nothing else.

use crate::{
    RECENT_PROPOSALS,
    answers::{NodeAddress, NodeAnswers, OrchestratorStatus, RegistryRead, ReplicaStatus},
};
use registry::{
    api::{ElectedVersionView, SubnetView},
    client::RegistryClient,
    records::{NodeRecord, RegistryRecord, keys},
};
use serde::de::DeserializeOwned;
use std::{future::Future, sync::Arc, sync::Mutex, time::Duration};
use types::RegistryVersion;

/// The most bytes read of one node status answer (a replica's lists every node's
/// readiness word: a few hundred bytes each).
pub const MAX_NODE_ANSWER_BYTES: usize = 1024 * 1024;
/// A node endpoint that has not answered by then is shown unreachable this refresh.
pub const NODE_DEADLINE: Duration = Duration::from_secs(2);
/// The most time connecting to a node may take (within [`NODE_DEADLINE`]).
pub const NODE_CONNECT_DEADLINE: Duration = Duration::from_secs(1);
/// The whole registry read (status, proposals, and on a new registry version the
/// subnets, versions and node records) must be done by then.
pub const REGISTRY_DEADLINE: Duration = Duration::from_secs(3);

/// How long [`refresh`] waits for each answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    pub node: Duration,
    pub registry: Duration,
}

impl Deadlines {
    pub const DEFAULT: Deadlines = Deadlines {
        node: NODE_DEADLINE,
        registry: REGISTRY_DEADLINE,
    };
}

/// What a refresh reads. Implementations bound their own reads; [`refresh`] bounds them
/// again with the deadlines above.
pub trait Sources: Send + Sync + 'static {
    fn registry(&self) -> impl Future<Output = Result<RegistryRead, String>> + Send;
    /// The replica's `/api/v1/status` at `address` (`ip:port`).
    fn replica(
        &self,
        address: String,
    ) -> impl Future<Output = Result<ReplicaStatus, String>> + Send;
    /// The orchestrator's `/status` at `address` (`ip:port`).
    fn orchestrator(
        &self,
        address: String,
    ) -> impl Future<Output = Result<OrchestratorStatus, String>> + Send;
}

/// One refresh: the registry read beside every known node's two endpoints.
pub async fn refresh<S: Sources>(
    sources: &Arc<S>,
    nodes: &[NodeAddress],
    deadlines: Deadlines,
) -> (Result<RegistryRead, String>, Vec<NodeAnswers>) {
    let registry = {
        let s = sources.clone();
        tokio::spawn(async move { bounded(deadlines.registry, s.registry()).await })
    };
    let mut tasks = Vec::with_capacity(nodes.len());
    for n in nodes {
        let (s1, s2) = (sources.clone(), sources.clone());
        let (http, cup) = (n.http_address.clone(), n.cup_address.clone());
        let replica = tokio::spawn(async move { bounded(deadlines.node, s1.replica(http)).await });
        let orchestrator =
            tokio::spawn(async move { bounded(deadlines.node, s2.orchestrator(cup)).await });
        tasks.push((n.node_id, replica, orchestrator));
    }
    let mut answers = Vec::with_capacity(nodes.len());
    for (node_id, replica, orchestrator) in tasks {
        answers.push(NodeAnswers {
            node_id,
            replica: joined(replica.await),
            orchestrator: joined(orchestrator.await),
        });
    }
    (joined(registry.await), answers)
}

async fn bounded<T>(
    deadline: Duration,
    read: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", deadline.as_millis())))
}

fn joined<T>(r: Result<Result<T, String>, tokio::task::JoinError>) -> Result<T, String> {
    r.unwrap_or_else(|e| Err(format!("the read failed: {e}")))
}

/// The registry and nodes over HTTP.
#[derive(Debug)]
pub struct HttpSources {
    registry: RegistryClient,
    http: reqwest::Client,
    /// The lists that change only with the registry version, and that version.
    cache: Mutex<Option<Cached>>,
}

#[derive(Clone, Debug)]
struct Cached {
    registry_version: u64,
    subnets: Vec<SubnetView>,
    versions: Vec<ElectedVersionView>,
    nodes: Vec<NodeAddress>,
}

impl HttpSources {
    pub fn new(registry: RegistryClient) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(NODE_CONNECT_DEADLINE)
            .timeout(NODE_DEADLINE)
            // One poll a second per endpoint: no pooled connection is worth going stale.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            registry,
            http,
            cache: Mutex::new(None),
        })
    }

    async fn node_json<T: DeserializeOwned>(&self, url: String) -> Result<T, String> {
        let resp = self.http.get(&url).send().await.map_err(|e| describe(&e))?;
        let status = resp.status();
        let limits = netio::Limits::small(MAX_NODE_ANSWER_BYTES, NODE_DEADLINE);
        let body = netio::read_body(resp, &limits)
            .await
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(format!("answered {status}: {text}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("unreadable answer: {e}"))
    }

    /// Subnets, versions and node records as of `version` (read again only when the
    /// registry version moved).
    async fn lists(&self, version: u64) -> Result<Cached, String> {
        if let Ok(guard) = self.cache.lock()
            && let Some(c) = guard.as_ref().filter(|c| c.registry_version == version)
        {
            return Ok(c.clone());
        }
        let e = |e: registry::client::ClientError| e.to_string();
        let subnets = self.registry.subnets().await.map_err(e)?;
        let versions = self.registry.versions().await.map_err(e)?;
        let mut reads = Vec::new();
        for s in &subnets {
            for m in &s.members {
                let client = self.registry.clone();
                let (node, subnet) = (*m, s.subnet_id);
                reads.push(tokio::spawn(async move {
                    let key = keys::node_record(&node);
                    let got = client
                        .get(&key, Some(RegistryVersion::new(version)))
                        .await
                        .map_err(|e| e.to_string())?;
                    let hex = got
                        .value_hex
                        .ok_or(format!("{key} is not in the registry"))?;
                    let bytes = hex::decode(hex).map_err(|e| format!("{key}: {e}"))?;
                    let r = NodeRecord::decode_value(&bytes).map_err(|e| format!("{key}: {e}"))?;
                    Ok::<_, String>(NodeAddress {
                        node_id: r.node_id,
                        subnet_id: Some(subnet),
                        http_address: r.http_address,
                        cup_address: r.cup_address,
                    })
                }));
            }
        }
        let mut nodes = Vec::with_capacity(reads.len());
        for r in reads {
            nodes.push(joined(r.await)?);
        }
        let c = Cached {
            registry_version: version,
            subnets,
            versions,
            nodes,
        };
        if let Ok(mut guard) = self.cache.lock() {
            *guard = Some(c.clone());
        }
        Ok(c)
    }
}

/// A failed request in a few words (reqwest's own message names the whole URL).
fn describe(e: &reqwest::Error) -> String {
    let mut why = if e.is_timeout() {
        "no answer in time".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    // The innermost cause says it best ("Connection refused (os error 111)").
    let mut innermost = None;
    for _ in 0..8 {
        let Some(s) = source else { break };
        innermost = Some(s.to_string());
        source = s.source();
    }
    if let Some(cause) = innermost {
        why.push_str(": ");
        why.push_str(&cause);
    }
    why
}

impl Sources for HttpSources {
    async fn registry(&self) -> Result<RegistryRead, String> {
        let status = self.registry.status().await.map_err(|e| e.to_string())?;
        let lists = self.lists(status.registry_version).await?;
        let total = status.proposals_total as u64;
        let after = total.saturating_sub(RECENT_PROPOSALS as u64);
        // Proposal ids run from 1 without gaps: the newest are those after `after`.
        let page = self
            .registry
            .proposals_page((after > 0).then_some(after), RECENT_PROPOSALS)
            .await
            .map_err(|e| e.to_string())?;
        Ok(RegistryRead {
            registry_version: status.registry_version,
            network_id: status.network_id.to_string(),
            proposals_open: status.proposals_open,
            proposals_total: status.proposals_total,
            subnets: lists.subnets,
            versions: lists.versions,
            proposals: page.proposals,
            nodes: lists.nodes,
        })
    }

    async fn replica(&self, address: String) -> Result<ReplicaStatus, String> {
        self.node_json(format!("http://{address}/api/v1/status"))
            .await
    }

    async fn orchestrator(&self, address: String) -> Result<OrchestratorStatus, String> {
        self.node_json(format!("http://{address}/status")).await
    }
}

//! Governance calls to a node of an NNS subnet (issue 19): the proposal or ballot, signed
//! by the neuron's controller, travels as an update ([`ingress::Operation::Propose`],
//! [`ingress::Operation::Vote`]) to any node of the subnet, which executes it in block
//! order; the caller waits until the block that executed it is certified and reads the
//! outcome ([`GovernanceReply`]) from the node's `request_status`.
//!
//! Every answer is read within a bound ([`MAX_ANSWER_BYTES`]), like the registry
//! client's.

use crate::{
    api::{ElectedVersionView, GetView, NeuronView, NodeView, ProposalView, SubnetView},
    client::{ClientError, http_client},
    exit::Failure,
    governance::GovernanceReply,
    invariants::Snapshot,
    nns_source::{NnsSource, NnsSourceError},
    store::{MemoryStore, RegistryStore},
};
use crypto::{bls::BlsPublicKey, ed25519::Ed25519KeyPair};
use ingress::{Ingress, Operation, SignedIngress};
use serde::Deserialize;
use std::{
    sync::Mutex,
    time::{Duration, Instant},
};
use types::NetworkId;

/// The most bytes read of a node's answer (a status, a request status).
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// How far ahead a call's expiry is set: under the replicas' five minutes, leaving room
/// for this machine's clock to run ahead of theirs.
pub const EXPIRY_AHEAD: Duration = Duration::from_secs(4 * 60);
/// Each `request_status` waits this long on the node before answering.
const WAIT_PER_REQUEST_MS: u64 = 10_000;
/// The most pages one read of the whole registry follows.
pub const MAX_PAGES_READ: usize = 10_000;

/// What a node's `/api/v1/status` says, as far as a caller needs it.
#[derive(Debug, Deserialize)]
struct NodeStatus {
    /// Present only in a replica's answer: required, so that a registry server's status
    /// (which has none) does not parse as a node's.
    #[serde(rename = "finalized_height")]
    _finalized_height: u64,
    network_id: NetworkId,
}

#[derive(Debug, Deserialize)]
struct Accepted {
    message_id: String,
}

#[derive(Debug, Deserialize)]
struct RequestStatus {
    status: String,
    #[serde(default)]
    governance: Option<GovernanceReply>,
}

/// A node of an NNS subnet, at its public API.
#[derive(Clone, Debug)]
pub struct NnsNode {
    http: reqwest::Client,
    base: String,
}

/// How a failed certified read ends the command: a node that is down or not ready is
/// worth a retry (exit 3); one that keeps no registry or answers what does not verify is
/// a refusal (exit 1).
fn read_failure(e: NnsSourceError) -> Failure {
    match e {
        NnsSourceError::Unreachable { .. } => Failure::Unreachable(e.to_string()),
        NnsSourceError::NoRegistry { .. }
        | NnsSourceError::Unverified { .. }
        | NnsSourceError::Store(_) => Failure::Refused(e.to_string()),
    }
}

fn unreachable(url: &str, e: impl std::fmt::Display) -> Failure {
    Failure::Unreachable(format!("the node at {url} is unreachable: {e}"))
}

impl NnsNode {
    pub fn new(url: &str) -> Result<Self, ClientError> {
        let (http, base) = http_client(url)?;
        Ok(Self { http, base })
    }

    async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), Failure> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| unreachable(&self.base, e))?;
        self.body(resp).await
    }

    async fn body(&self, resp: reqwest::Response) -> Result<(u16, Vec<u8>), Failure> {
        self.body_within(resp, MAX_ANSWER_BYTES).await
    }

    async fn body_within(
        &self,
        resp: reqwest::Response,
        max_bytes: usize,
    ) -> Result<(u16, Vec<u8>), Failure> {
        let code = resp.status().as_u16();
        let bytes = netio::read_body(resp, &crate::client::limits(max_bytes))
            .await
            .map_err(|e| unreachable(&self.base, e))?;
        Ok((code, bytes))
    }

    /// The network the node serves, if the URL answers as a replica does (`None`: it
    /// answers as something else, such as a registry server). A URL that does not answer
    /// now (a replica switching releases) is [`Failure::Unreachable`], not "something
    /// else": taken for a registry server, a replica's answers would be misread.
    pub async fn probe(&self) -> Result<Option<NetworkId>, Failure> {
        let (code, body) = self.get("/api/v1/status").await?;
        if code >= 500 {
            return Err(Failure::Unreachable(format!(
                "the node at {} cannot answer now (HTTP {code}): retry",
                self.base
            )));
        }
        Ok((code == 200)
            .then(|| serde_json::from_slice::<NodeStatus>(&body).ok())
            .flatten()
            .map(|s| s.network_id))
    }

    /// The whole registry as the NNS subnet certifies it, read from this node page by
    /// page from genesis, each page checked with `key` (the NNS subnet's public key) and
    /// the chain hash of what was read before it ([`NnsSource`]). Nothing unverified is
    /// kept.
    pub async fn certified_registry(
        &self,
        key: &BlsPublicKey,
    ) -> Result<CertifiedRegistry, Failure> {
        let source = NnsSource::new(&self.base, *key).map_err(Failure::BadArgument)?;
        let store = Mutex::new(MemoryStore::new());
        for _ in 0..MAX_PAGES_READ {
            let p = source.poll_once(&store).await.map_err(read_failure)?;
            if p.local_version >= p.remote_version {
                break;
            }
        }
        let store = store.into_inner().unwrap_or_else(|p| p.into_inner());
        let snapshot = Snapshot::decode(
            &store
                .latest_snapshot()
                .map_err(|e| Failure::Refused(e.to_string()))?,
        )
        .map_err(|e| Failure::Refused(format!("the certified registry: {e}")))?;
        Ok(CertifiedRegistry { store, snapshot })
    }

    /// Every proposal, as the NNS subnet certifies it, checked with `key`.
    pub async fn certified_proposals(
        &self,
        key: &BlsPublicKey,
    ) -> Result<Vec<ProposalView>, Failure> {
        let source = NnsSource::new(&self.base, *key).map_err(Failure::BadArgument)?;
        let (proposals, _) = source.proposals().await.map_err(read_failure)?;
        Ok(proposals.iter().map(ProposalView::from).collect())
    }

    /// Sends `operation` signed by `key` for `network`, waits until the node reports it
    /// certified, and returns its outcome. A refusal by the node (a bad signature, a
    /// subnet that does not keep the registry) is [`Failure::Refused`]; a subnet that is
    /// upgrading, or no certification by the call's expiry, is [`Failure::Unreachable`]
    /// (worth a retry).
    pub async fn call(
        &self,
        key: &Ed25519KeyPair,
        network: NetworkId,
        operation: Operation,
        now_ns: u64,
    ) -> Result<GovernanceReply, Failure> {
        let expiry_ns = now_ns.saturating_add(EXPIRY_AHEAD.as_nanos() as u64);
        let m = SignedIngress::sign(
            Ingress {
                network,
                sender: key.public_key(),
                nonce: rand::random(),
                expiry_ns,
                operation,
            },
            key,
        );
        let resp = self
            .http
            .post(format!("{}/api/v1/update", self.base))
            .header("content-type", "application/octet-stream")
            .body(m.encode())
            .send()
            .await
            .map_err(|e| unreachable(&self.base, e))?;
        let (code, body) = self.body(resp).await?;
        let reason = || {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned())
        };
        match code {
            202 => {}
            503 => {
                return Err(Failure::Unreachable(format!(
                    "the NNS node at {} cannot take the call now ({}): retry",
                    self.base,
                    reason()
                )));
            }
            _ => return Err(Failure::Refused(reason())),
        }
        let accepted: Accepted = serde_json::from_slice(&body)
            .map_err(|e| Failure::Refused(format!("malformed answer to the update: {e}")))?;
        let id = m.id().to_string();
        if accepted.message_id != id {
            return Err(Failure::Refused(format!(
                "the node accepted message {} for {id}",
                accepted.message_id
            )));
        }
        // Until the message can no longer execute: its expiry, on this machine's clock.
        let deadline = Instant::now() + EXPIRY_AHEAD;
        loop {
            let path = format!("/api/v1/request_status?id={id}&wait_ms={WAIT_PER_REQUEST_MS}");
            // The message was accepted: a node that stops answering for a while (its
            // subnet switching releases) may still certify it, so ask again until expiry.
            let (code, body) = match self.get(&path).await {
                Ok(answer) => answer,
                Err(Failure::Unreachable(_)) => (0, Vec::new()),
                Err(e) => return Err(e),
            };
            if code == 200 {
                let s: RequestStatus = serde_json::from_slice(&body)
                    .map_err(|e| Failure::Refused(format!("malformed request status: {e}")))?;
                if s.status == "certified" {
                    return s.governance.ok_or_else(|| {
                        Failure::Refused(format!(
                            "message {id} executed, but the node holds no governance reply for it (is it a node of the NNS subnet?)"
                        ))
                    });
                }
            }
            if Instant::now() > deadline {
                return Err(Failure::Unreachable(format!(
                    "message {id} was not certified before it expired: see `nns proposals`, then retry"
                )));
            }
            if code != 200 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// The registry read from an NNS node, every version checked ([`NnsNode::certified_registry`]),
/// answering what a registry server answers, in the same views.
#[derive(Debug)]
pub struct CertifiedRegistry {
    store: MemoryStore,
    snapshot: Snapshot,
}

impl CertifiedRegistry {
    pub fn registry_version(&self) -> types::RegistryVersion {
        self.store.latest_version()
    }

    pub fn versions(&self) -> Vec<ElectedVersionView> {
        self.snapshot
            .versions
            .values()
            .map(ElectedVersionView::from)
            .collect()
    }

    pub fn subnets(&self) -> Vec<SubnetView> {
        self.snapshot
            .subnets
            .values()
            .map(SubnetView::from)
            .collect()
    }

    pub fn nodes(&self) -> Vec<NodeView> {
        NodeView::all(&self.snapshot)
    }

    pub fn neurons(&self) -> Vec<NeuronView> {
        self.snapshot
            .neurons
            .values()
            .map(NeuronView::from)
            .collect()
    }

    /// `key` at `at` (default: the latest version), as `GET /api/v1/get` answers.
    pub fn get(&self, key: &str, at: Option<types::RegistryVersion>) -> Result<GetView, Failure> {
        let at = at.unwrap_or(self.store.latest_version());
        let found = self
            .store
            .get_versioned(key, at)
            .map_err(|e| Failure::Refused(e.to_string()))?;
        Ok(GetView::new(key, at, found))
    }
}

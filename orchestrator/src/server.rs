//! The orchestrator's HTTP endpoint, up while the replica restarts: `GET /status`,
//! `GET /metrics`, and `POST /_/catch_up_package`.
//!
//! # The CUP exchange
//!
//! A member asks with a signed [`CupRequest`]: its CUP's `(height, registry_version)`,
//! the network it is on ([`NetworkId`], the hash of the registry's root key), a fresh
//! random `nonce`, its `node_id`, and its ed25519 `signature` (domain `CUP_REQUEST`) over
//! [`CupRequest::signed_bytes`]. The answer, `200` with a CUP that is newer or `204`
//! "nothing newer", carries `x-node-id` and `x-node-signature`: the answering node's
//! signature (domain `CUP_RESPONSE`) over [`answer_bytes`], which binds the network, the
//! nonce, the request, the status and the body. So a captured answer, a `204` included,
//! verifies for no other request, and nothing signed on one network is valid on another.
//!
//! A signed request is refused (403) unless its signer is a member of this node's subnet,
//! it names this node's network and it verifies. There is no timestamp: a node whose
//! clock is off is answered like any other. A replayed request gets an answer to a nonce
//! nobody waits for; the work it can cause is bounded per member by [`crate::ratelimit`]
//! (429 past the budget).
//!
//! An unsigned request (empty body, or `{"height","registry_version"}`, optionally with
//! `network` and `nonce`) is still answered, from a shared budget: a CUP is public and
//! threshold-signed. Its answer is signed the same way (with the nonce, if it sent one).
//!
//! Every field and the format version are in the signed bytes, encoded by
//! `types::codec`; [`CUP_EXCHANGE_VERSION`] is the first of them.

use crate::ratelimit::{RateLimiter, Requester};
use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use crypto::ed25519::{Ed25519KeyPair, Ed25519PublicKey, Ed25519Signature};
use cup::{Cup, CupParam};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};
use types::{Height, NetworkId, NodeId, RegistryVersion, ReplicaVersion, SubnetId, domain};

/// The version of the CUP exchange's signed bytes (1 was a timestamp and a body-only
/// answer signature).
pub const CUP_EXCHANGE_VERSION: u8 = 2;

/// A request's nonce: 32 random bytes, hex in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nonce(pub [u8; 32]);
types::hex_serde!(Nonce);

impl std::fmt::Display for Nonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for Nonce {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| format!("nonce: {e}"))?;
        Ok(Self(out))
    }
}

impl Nonce {
    /// A fresh nonce from `rng` (the caller's: the loop passes the OS's).
    pub fn random(rng: &mut impl rand::RngCore) -> Self {
        let mut out = [0u8; 32];
        rng.fill_bytes(&mut out);
        Self(out)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CupView {
    pub height: u64,
    pub registry_version: u64,
    pub replica_version: ReplicaVersion,
    /// The state hash at `height` (hex): with `height`, what `nns propose recover-subnet`
    /// needs to bring a stuck subnet back from this CUP.
    pub state_hash: types::CryptoHash,
}

#[derive(Clone, Debug, Serialize)]
pub struct UpgradeView {
    /// `idle`, `downloading`, `preflight` (rehearsing the deployed release), `ready`
    /// (fetched, verified and rehearsed: this node's readiness is gossiped), `switching`
    /// `failed` (`last_error` and `preflight.reason` say why), or `recalled` (the release
    /// the CUP names was recalled: nothing runs until a recovery or a new deployment).
    pub state: &'static str,
    pub target_version: Option<ReplicaVersion>,
    pub last_error: Option<String>,
    /// The SHA-256 of the target version's package, as the registry lists it.
    pub target_package_sha256: Option<String>,
    /// The download running beside the loop, if one does.
    pub download: Option<DownloadView>,
    /// The latest preflight of the target release, once one finished.
    pub preflight: Option<PreflightView>,
    /// After this node switched releases: whether the new one works (null before any
    /// switch by this process).
    pub health: Option<HealthView>,
    /// The stages of this node's last switch, timed (null before one).
    pub last_switch: Option<crate::handover::SwitchTimes>,
}

/// `/status`'s `upgrade.health`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct HealthView {
    /// `watching` (switched, no newer CUP yet), `healthy` (the subnet made a CUP above
    /// the one switched at, on this release) or `unhealthy` (the replica exited first).
    pub state: &'static str,
    pub reason: Option<String>,
    pub switched_at_cup_height: u64,
    /// Replica restarts since the switch, and the latest exit (a crash loop shows here).
    pub replica_restarts: u64,
    pub last_exit: Option<String>,
}

/// A finished preflight: the deployed release's `replica --check` against this node's
/// CUP, with its migration rehearsed on a hard-link copy of a checkpoint
/// (`/status`'s `upgrade.preflight`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PreflightView {
    pub version: ReplicaVersion,
    pub package_sha256: String,
    pub ok: bool,
    /// Why it failed (the release's own words).
    pub reason: Option<String>,
    /// The migration on the copy (none when this node has no checkpoint yet).
    pub migration_ms: Option<u64>,
    pub schema_from: Option<u32>,
    pub schema_to: Option<u32>,
    pub values_migrated: Option<u64>,
    pub checkpoint_height: Option<u64>,
    /// Whether the migrated copy was kept for the switch, which then migrates only what
    /// changed since that checkpoint.
    pub kept_for_the_switch: bool,
    /// The whole rehearsal, the process included.
    pub elapsed_ms: u64,
    pub finished_unix_ms: u64,
}

/// A package download in progress (`/status`'s `upgrade.download`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DownloadView {
    pub version: ReplicaVersion,
    pub sha256: String,
    /// The URL bytes are coming from (empty before the first response).
    pub url: String,
    pub bytes: u64,
    /// The package's size, if the server said.
    pub total: Option<u64>,
    pub elapsed_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatusView {
    pub node_id: NodeId,
    pub subnet_id: Option<SubnetId>,
    pub running_version: ReplicaVersion,
    /// The SHA-256 of the package the running image was unpacked from.
    pub running_package_sha256: String,
    /// How long checking the running image's files took at start (0 when the
    /// orchestrator that re-executed into it had just verified it).
    pub image_check_ms: u64,
    pub replica_pid: Option<u32>,
    pub registry_version: RegistryVersion,
    pub cup: Option<CupView>,
    pub upgrade: UpgradeView,
    pub decision: String,
}

/// What the loop publishes for the endpoint.
#[derive(Debug)]
pub struct Shared {
    pub status: Mutex<StatusView>,
    pub metrics: crate::metrics::Metrics,
    pub best_cup: Mutex<Option<Cup>>,
    /// Signs answers.
    pub node_key: Ed25519KeyPair,
    /// The network this node is on (from node.toml's `registry_root_key`).
    pub network: NetworkId,
    /// The subnet's members and their registry keys (refreshed every tick).
    pub members: Mutex<BTreeMap<NodeId, Ed25519PublicKey>>,
    /// Budgets of CUP requesters.
    pub limiter: Mutex<RateLimiter>,
    /// The origin of the limiter's clock.
    pub started: std::time::Instant,
}

/// A CUP request: the asker's CUP's `(height, registry_version)`; for a member, also
/// its network, a nonce, its id and its signature (module docs).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct CupRequest {
    pub height: u64,
    pub registry_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<Nonce>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Ed25519Signature>,
}

/// Why a request is refused (403), in words for the asker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefused {
    #[error("a signed request needs network, nonce, node_id and signature")]
    Incomplete,
    #[error("the request names another network")]
    WrongNetwork,
    #[error("the signer is not a member of this subnet")]
    NotAMember,
    #[error("bad request signature")]
    BadSignature,
}

impl CupRequest {
    /// What a member signs: the format version, network, nonce, asked CUP and node.
    pub fn signed_bytes(
        network: &NetworkId,
        nonce: &Nonce,
        height: u64,
        registry_version: u64,
        node: &NodeId,
    ) -> Vec<u8> {
        types::codec::encode(&(
            CUP_EXCHANGE_VERSION,
            network,
            nonce.0,
            height,
            registry_version,
            node,
        ))
    }

    /// A request signed by `key` for `network`, bound to `nonce`.
    pub fn signed(
        height: u64,
        registry_version: u64,
        network: NetworkId,
        nonce: Nonce,
        key: &Ed25519KeyPair,
    ) -> Self {
        let node = key.node_id();
        let signature = key.sign(
            domain::CUP_REQUEST,
            &Self::signed_bytes(&network, &nonce, height, registry_version, &node),
        );
        Self {
            height,
            registry_version,
            network: Some(network),
            nonce: Some(nonce),
            node_id: Some(node),
            signature: Some(signature),
        }
    }

    /// `Ok(Some(node))` for a valid signed request from a member of `network`, `Ok(None)`
    /// for an unsigned one (naming no other network), `Err(why)` otherwise.
    pub fn authenticate(
        &self,
        network: &NetworkId,
        members: &BTreeMap<NodeId, Ed25519PublicKey>,
    ) -> Result<Option<NodeId>, RequestRefused> {
        if self.network.as_ref().is_some_and(|n| n != network) {
            return Err(RequestRefused::WrongNetwork);
        }
        let (Some(node), Some(sig)) = (self.node_id, &self.signature) else {
            if self.node_id.is_some() || self.signature.is_some() {
                return Err(RequestRefused::Incomplete);
            }
            return Ok(None);
        };
        let (Some(asked_network), Some(nonce)) = (&self.network, &self.nonce) else {
            return Err(RequestRefused::Incomplete);
        };
        let key = members.get(&node).ok_or(RequestRefused::NotAMember)?;
        key.verify(
            domain::CUP_REQUEST,
            &Self::signed_bytes(
                asked_network,
                nonce,
                self.height,
                self.registry_version,
                &node,
            ),
            sig,
        )
        .map_err(|_| RequestRefused::BadSignature)?;
        Ok(Some(node))
    }
}

/// What an answer's `x-node-signature` signs: the format version, the answering node's
/// network, the request's nonce, the request (asked CUP and asker), the status, then the
/// body. The prefix has a fixed layout, so the body after it is unambiguous.
pub fn answer_bytes(
    network: &NetworkId,
    request: &CupRequest,
    status: u16,
    body: &[u8],
) -> Vec<u8> {
    let mut out = types::codec::encode(&(
        CUP_EXCHANGE_VERSION,
        network,
        request.nonce.map(|n| n.0),
        request.node_id,
        request.height,
        request.registry_version,
        status,
    ));
    out.extend_from_slice(body);
    out
}

/// Checks an answer's `x-node-signature` against the key of the node that was asked, for
/// the request that was sent.
pub fn verify_answer(
    network: &NetworkId,
    request: &CupRequest,
    status: u16,
    body: &[u8],
    signature_hex: &str,
    key: &Ed25519PublicKey,
) -> bool {
    hex::decode(signature_hex)
        .ok()
        .and_then(|b| Ed25519Signature::from_bytes(&b).ok())
        .is_some_and(|sig| {
            key.verify(
                domain::CUP_RESPONSE,
                &answer_bytes(network, request, status, body),
                &sig,
            )
            .is_ok()
        })
}

/// The largest request body.
const MAX_REQUEST_BYTES: usize = 1024;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/_/catch_up_package", post(catch_up_package))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(shared)
}

async fn status(State(s): State<Arc<Shared>>) -> Response {
    match s.status.lock() {
        Ok(v) => Json(v.clone()).into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn catch_up_package(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let request = if body.is_empty() {
        CupRequest::default()
    } else {
        match serde_json::from_slice::<CupRequest>(&body) {
            Ok(r) => r,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("malformed request: {e}"))
                    .into_response();
            }
        }
    };
    let verdict = match s.members.lock() {
        Ok(m) => request.authenticate(&s.network, &m),
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    let requester = match verdict {
        Ok(Some(node)) => Requester::Member(node),
        Ok(None) => Requester::Public,
        Err(why) => return (StatusCode::FORBIDDEN, why.to_string()).into_response(),
    };
    let now_ms = s.started.elapsed().as_millis() as u64;
    let allowed = s
        .limiter
        .lock()
        .map(|mut l| l.allow(requester, now_ms))
        .unwrap_or(false);
    if !allowed {
        s.metrics.cup_requests_rate_limited.inc();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "over this requester's budget of CUP requests",
        )
            .into_response();
    }
    // An empty body asks for any CUP.
    let asked = (!body.is_empty()).then(|| CupParam {
        height: Height::new(request.height),
        registry_version: RegistryVersion::new(request.registry_version),
    });
    let answer = match s.best_cup.lock() {
        Ok(best) => best
            .as_ref()
            .filter(|c| asked.is_none_or(|a| c.param() > a))
            .map(|c| c.encode()),
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    let (code, body) = match answer {
        Some(bytes) => (StatusCode::OK, bytes),
        None => (StatusCode::NO_CONTENT, Vec::new()),
    };
    let signature = s.node_key.sign(
        domain::CUP_RESPONSE,
        &answer_bytes(&s.network, &request, code.as_u16(), &body),
    );
    (
        code,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static("x-node-id"),
                s.node_key.node_id().to_string(),
            ),
            (
                header::HeaderName::from_static("x-node-signature"),
                signature.to_string(),
            ),
        ],
        body,
    )
        .into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    match s.status.lock() {
        Ok(st) => s.metrics.observe(&st),
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
    s.metrics.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed(&[seed; 32])
    }

    const NET: NetworkId = NetworkId([7; 32]);
    const NONCE: Nonce = Nonce([9; 32]);

    #[test]
    fn cup_requests_authenticate_members_of_this_network_only() {
        let (member, stranger) = (key(1), key(2));
        let members: BTreeMap<NodeId, Ed25519PublicKey> =
            [(member.node_id(), member.public_key())].into();
        let ok = CupRequest::signed(10, 3, NET, NONCE, &member);
        assert_eq!(ok.authenticate(&NET, &members), Ok(Some(member.node_id())));
        let unsigned = CupRequest {
            height: 10,
            registry_version: 3,
            ..Default::default()
        };
        assert_eq!(unsigned.authenticate(&NET, &members), Ok(None));
        let other_net = NetworkId([8; 32]);
        let cases: Vec<(CupRequest, RequestRefused)> = vec![
            (
                CupRequest::signed(10, 3, NET, NONCE, &stranger),
                RequestRefused::NotAMember,
            ),
            // Signed for another network: refused here, whatever its signature.
            (
                CupRequest::signed(10, 3, other_net, NONCE, &member),
                RequestRefused::WrongNetwork,
            ),
            (
                CupRequest {
                    height: 11,
                    ..ok.clone()
                },
                RequestRefused::BadSignature,
            ),
            (
                CupRequest {
                    nonce: Some(Nonce([1; 32])),
                    ..ok.clone()
                },
                RequestRefused::BadSignature,
            ),
            (
                CupRequest {
                    nonce: None,
                    ..ok.clone()
                },
                RequestRefused::Incomplete,
            ),
            (
                CupRequest {
                    signature: None,
                    ..ok.clone()
                },
                RequestRefused::Incomplete,
            ),
            (
                CupRequest {
                    network: Some(other_net),
                    ..unsigned.clone()
                },
                RequestRefused::WrongNetwork,
            ),
        ];
        for (r, why) in cases {
            assert_eq!(r.authenticate(&NET, &members), Err(why), "{r:?}");
        }
        // The documented bodies still parse, and a version 1 request (a timestamp, no
        // nonce) is refused, not mistaken for an unsigned one.
        let plain: CupRequest =
            serde_json::from_str(r#"{"height":5,"registry_version":2}"#).expect("parse");
        assert_eq!(plain.authenticate(&NET, &members), Ok(None));
        let v1 = format!(
            r#"{{"height":5,"registry_version":2,"node_id":"{}","timestamp_ns":1,"signature":"{}"}}"#,
            member.node_id(),
            ok.signature.expect("signed")
        );
        let v1: CupRequest = serde_json::from_str(&v1).expect("parse");
        assert_eq!(
            v1.authenticate(&NET, &members),
            Err(RequestRefused::Incomplete)
        );
    }

    #[test]
    fn an_answer_verifies_only_for_its_request_status_body_network_and_signer() {
        let (node, other, asker) = (key(1), key(2), key(3));
        let request = CupRequest::signed(10, 3, NET, NONCE, &asker);
        let sign = |r: &CupRequest, status: u16, body: &[u8]| {
            node.sign(domain::CUP_RESPONSE, &answer_bytes(&NET, r, status, body))
                .to_string()
        };
        let no_newer = sign(&request, 204, b"");
        assert!(verify_answer(
            &NET,
            &request,
            204,
            b"",
            &no_newer,
            &node.public_key()
        ));
        // A captured "nothing newer" does not answer the next request (another nonce) ...
        let next = CupRequest::signed(10, 3, NET, Nonce([10; 32]), &asker);
        assert!(!verify_answer(
            &NET,
            &next,
            204,
            b"",
            &no_newer,
            &node.public_key()
        ));
        // ... nor another asked CUP, status, body, network or signer.
        let lower = CupRequest::signed(9, 3, NET, NONCE, &asker);
        assert!(!verify_answer(
            &NET,
            &lower,
            204,
            b"",
            &no_newer,
            &node.public_key()
        ));
        assert!(!verify_answer(
            &NET,
            &request,
            200,
            b"",
            &no_newer,
            &node.public_key()
        ));
        let cup = sign(&request, 200, b"a cup");
        assert!(verify_answer(
            &NET,
            &request,
            200,
            b"a cup",
            &cup,
            &node.public_key()
        ));
        assert!(!verify_answer(
            &NET,
            &request,
            200,
            b"another",
            &cup,
            &node.public_key()
        ));
        assert!(!verify_answer(
            &NetworkId([8; 32]),
            &request,
            200,
            b"a cup",
            &cup,
            &node.public_key()
        ));
        assert!(!verify_answer(
            &NET,
            &request,
            200,
            b"a cup",
            &cup,
            &other.public_key()
        ));
        assert!(!verify_answer(
            &NET,
            &request,
            200,
            b"a cup",
            "not hex",
            &node.public_key()
        ));
    }
}

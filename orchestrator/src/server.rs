//! The orchestrator's HTTP endpoint, up while the replica restarts: `GET /status`,
//! `GET /metrics`, and `POST /_/catch_up_package`.
//!
//! The CUP exchange is mutually authenticated at the application layer: a peer signs its
//! request (`node_id`, `timestamp_ns`, `signature` over the asked `(height, registry
//! version)`, domain `CUP_REQUEST`), refused with 403 unless the signer is a subnet
//! member and the timestamp is within [`MAX_REQUEST_SKEW_NS`]; every answer carries
//! `x-node-id` and `x-node-signature` (domain `CUP_RESPONSE`, over the body), which the
//! asking orchestrator checks against the registry key of the node it asked. An unsigned
//! request (the documented `{"height","registry_version"}` or an empty body) is still
//! answered: a CUP is public and threshold-signed.

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
use types::{Height, NodeId, RegistryVersion, ReplicaVersion, SubnetId, domain};

#[derive(Clone, Debug, Serialize)]
pub struct CupView {
    pub height: u64,
    pub registry_version: u64,
    pub replica_version: ReplicaVersion,
}

#[derive(Clone, Debug, Serialize)]
pub struct UpgradeView {
    /// `idle`, `downloading`, `ready`, `switching` or `failed`.
    pub state: &'static str,
    pub target_version: Option<ReplicaVersion>,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatusView {
    pub node_id: NodeId,
    pub subnet_id: Option<SubnetId>,
    pub running_version: ReplicaVersion,
    pub replica_pid: Option<u32>,
    pub registry_version: RegistryVersion,
    pub cup: Option<CupView>,
    pub upgrade: UpgradeView,
    pub decision: String,
}

#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub replica_restarts: u64,
    pub bytes_downloaded: u64,
    pub download_failures: u64,
    pub registry_poll_failures: u64,
    pub last_switch_unix_ms: u64,
}

/// What the loop publishes for the endpoint.
#[derive(Debug)]
pub struct Shared {
    pub status: Mutex<StatusView>,
    pub counters: Mutex<Counters>,
    pub best_cup: Mutex<Option<Cup>>,
    /// Signs answers.
    pub node_key: Ed25519KeyPair,
    /// The subnet's members and their registry keys (refreshed every tick).
    pub members: Mutex<BTreeMap<NodeId, Ed25519PublicKey>>,
}

/// A peer's request: its CUP's `(height, registry_version)`, signed by the asking node.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CupRequest {
    pub height: u64,
    pub registry_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Ed25519Signature>,
}

/// How far a signed request's timestamp may be from the server's clock.
pub const MAX_REQUEST_SKEW_NS: u64 = 60 * 1_000_000_000;

impl CupRequest {
    fn signed_bytes(height: u64, registry_version: u64, node: &NodeId, t: u64) -> Vec<u8> {
        types::codec::encode(&(height, registry_version, node, t))
    }

    /// A request signed by `key`.
    pub fn signed(height: u64, registry_version: u64, key: &Ed25519KeyPair, now_ns: u64) -> Self {
        let node = key.node_id();
        let signature = key.sign(
            domain::CUP_REQUEST,
            &Self::signed_bytes(height, registry_version, &node, now_ns),
        );
        Self {
            height,
            registry_version,
            node_id: Some(node),
            timestamp_ns: Some(now_ns),
            signature: Some(signature),
        }
    }

    /// `Ok(Some(node))` for a valid signed request from a member, `Ok(None)` for an
    /// unsigned one, `Err(why)` otherwise.
    pub fn authenticate(
        &self,
        members: &BTreeMap<NodeId, Ed25519PublicKey>,
        now_ns: u64,
    ) -> Result<Option<NodeId>, &'static str> {
        let (Some(node), Some(t), Some(sig)) = (self.node_id, self.timestamp_ns, &self.signature)
        else {
            if self.node_id.is_some() || self.signature.is_some() {
                return Err("a signed request needs node_id, timestamp_ns and signature");
            }
            return Ok(None);
        };
        if t.abs_diff(now_ns) > MAX_REQUEST_SKEW_NS {
            return Err("the request's timestamp is too far from this node's clock");
        }
        let key = members
            .get(&node)
            .ok_or("the signer is not a member of this subnet")?;
        key.verify(
            domain::CUP_REQUEST,
            &Self::signed_bytes(self.height, self.registry_version, &node, t),
            sig,
        )
        .map_err(|_| "bad request signature")?;
        Ok(Some(node))
    }
}

/// Checks an answer's `x-node-signature` against the key of the node that was asked.
pub fn verify_answer(body: &[u8], signature_hex: &str, key: &Ed25519PublicKey) -> bool {
    hex::decode(signature_hex)
        .ok()
        .and_then(|b| Ed25519Signature::from_bytes(&b).ok())
        .is_some_and(|sig| key.verify(domain::CUP_RESPONSE, body, &sig).is_ok())
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
    let asked = if body.is_empty() {
        None
    } else {
        let r = match serde_json::from_slice::<CupRequest>(&body) {
            Ok(r) => r,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("malformed request: {e}"))
                    .into_response();
            }
        };
        let verdict = match s.members.lock() {
            Ok(m) => r.authenticate(&m, now_ns()),
            Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        };
        if let Err(why) = verdict {
            return (StatusCode::FORBIDDEN, why).into_response();
        }
        Some(CupParam {
            height: Height::new(r.height),
            registry_version: RegistryVersion::new(r.registry_version),
        })
    };
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
    let signature = s.node_key.sign(domain::CUP_RESPONSE, &body);
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

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let (Ok(st), Ok(c)) = (s.status.lock(), s.counters.lock()) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP orchestrator_{name} {help}\n# TYPE orchestrator_{name} {kind}\norchestrator_{name} {v}\n"
        ));
    };
    metric(
        "registry_version",
        "gauge",
        "Latest local registry version.",
        st.registry_version.get(),
    );
    metric(
        "cup_height",
        "gauge",
        "Height of the best CUP.",
        st.cup.as_ref().map(|c| c.height).unwrap_or(0),
    );
    metric(
        "replica_restarts_total",
        "counter",
        "Replica restarts after an exit.",
        c.replica_restarts,
    );
    metric(
        "bytes_downloaded_total",
        "counter",
        "Release package bytes downloaded.",
        c.bytes_downloaded,
    );
    metric(
        "download_failures_total",
        "counter",
        "Release package downloads that failed.",
        c.download_failures,
    );
    metric(
        "registry_poll_failures_total",
        "counter",
        "Registry polls that failed.",
        c.registry_poll_failures,
    );
    metric(
        "last_switch_unix_ms",
        "gauge",
        "When this node last switched versions.",
        c.last_switch_unix_ms,
    );
    out.push_str(&format!(
        "# HELP orchestrator_running_version The running version.\n# TYPE orchestrator_running_version gauge\norchestrator_running_version{{version=\"{}\"}} 1\n",
        st.running_version
    ));
    out.push_str(&format!(
        "# HELP orchestrator_upgrade_state The upgrade state.\n# TYPE orchestrator_upgrade_state gauge\norchestrator_upgrade_state{{state=\"{}\"}} 1\n",
        st.upgrade.state
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000_000_000_000;

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed(&[seed; 32])
    }

    #[test]
    fn cup_requests_authenticate_members_only() {
        let (member, stranger) = (key(1), key(2));
        let members: BTreeMap<NodeId, Ed25519PublicKey> =
            [(member.node_id(), member.public_key())].into();
        let ok = CupRequest::signed(10, 3, &member, NOW);
        assert_eq!(ok.authenticate(&members, NOW), Ok(Some(member.node_id())));
        let unsigned = CupRequest {
            height: 10,
            registry_version: 3,
            ..Default::default()
        };
        assert_eq!(unsigned.authenticate(&members, NOW), Ok(None));
        let cases: Vec<(CupRequest, &str)> = vec![
            (CupRequest::signed(10, 3, &stranger, NOW), "not a member"),
            (
                CupRequest::signed(10, 3, &member, NOW - 2 * MAX_REQUEST_SKEW_NS),
                "timestamp",
            ),
            (
                CupRequest {
                    height: 11,
                    ..ok.clone()
                },
                "bad request signature",
            ),
            (
                CupRequest {
                    signature: None,
                    ..ok.clone()
                },
                "needs node_id",
            ),
        ];
        for (r, why) in cases {
            let e = r.authenticate(&members, NOW).expect_err(why);
            assert!(e.contains(why), "{e}");
        }
        // The documented body still parses.
        let plain: CupRequest =
            serde_json::from_str(r#"{"height":5,"registry_version":2}"#).expect("parse");
        assert_eq!(plain.authenticate(&members, NOW), Ok(None));
    }

    #[test]
    fn answers_verify_only_against_the_signing_node() {
        let (node, other) = (key(1), key(2));
        let body = b"a cup";
        let sig = node.sign(domain::CUP_RESPONSE, body).to_string();
        assert!(verify_answer(body, &sig, &node.public_key()));
        assert!(!verify_answer(body, &sig, &other.public_key()));
        assert!(!verify_answer(b"another cup", &sig, &node.public_key()));
        assert!(!verify_answer(body, "not hex", &node.public_key()));
    }
}

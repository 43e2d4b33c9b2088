//! The orchestrator's HTTP endpoint, up while the replica restarts: `GET /status`,
//! `GET /metrics`, and `POST /_/catch_up_package` (peers ask for a CUP newer than theirs;
//! CUPs are threshold-signed, so the answer needs no other authentication).

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use cup::{Cup, CupParam};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use types::{Height, NodeId, RegistryVersion, ReplicaVersion, SubnetId};

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
}

/// A peer's request: its CUP's `(height, registry_version)`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize)]
pub struct CupRequest {
    pub height: u64,
    pub registry_version: u64,
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
        match serde_json::from_slice::<CupRequest>(&body) {
            Ok(r) => Some(CupParam {
                height: Height::new(r.height),
                registry_version: RegistryVersion::new(r.registry_version),
            }),
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("malformed request: {e}"))
                    .into_response();
            }
        }
    };
    let Ok(best) = s.best_cup.lock() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    match best.as_ref() {
        Some(c) if asked.is_none_or(|a| c.param() > a) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            c.encode(),
        )
            .into_response(),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
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

//! The replica's HTTP API: `POST /api/v1/update`, `GET /api/v1/query`,
//! `GET /api/v1/request_status`, `GET /api/v1/status`, `GET /metrics`, and for peers'
//! state sync `GET /_/state/{height}/manifest` and `GET /_/state/{height}/chunk`
//! (verified by the receiver against a CUP, so they need no authentication). For a node
//! joining the subnet: `GET /api/v1/resharing` (the resharing under way and the
//! dealings on this node's chain, canonically encoded; 404 when none) and
//! `POST /api/v1/resharing/complaint` (a canonically encoded signed complaint, 202; the
//! core checks its signature against the receiver's registered node key).
//!
//! An update's body is the canonical encoding of a [`SignedIngress`]
//! (`ingress::SignedIngress::encode`), `application/octet-stream`.

use crate::{
    driver::{CertifiedRegistryRead, Request, Shared, UpdateRefused},
    ingress::SignedIngress,
    state::{Cursor, export_chunk, export_manifest},
};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::sync::{mpsc, oneshot};
use types::{CryptoHash, Height, codec};

/// The largest update body.
pub const MAX_UPDATE_BYTES: usize = 128 * 1024;

#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
}

pub fn router(shared: Arc<Shared>, requests: mpsc::Sender<Request>) -> Router {
    Router::new()
        .route("/api/v1/update", post(update))
        .route("/api/v1/query", get(query))
        .route("/api/v1/status", get(status))
        .route("/api/v1/request_status", get(request_status))
        .route("/api/v1/registry/changes", get(registry_changes))
        .route("/api/v1/registry/proposals", get(registry_proposals))
        .route("/api/v1/resharing", get(resharing))
        .route("/api/v1/resharing/complaint", post(complaint))
        .route("/metrics", get(metrics))
        .route("/_/state/{height}/manifest", get(state_manifest))
        .route("/_/state/{height}/chunk", get(state_chunk))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_UPDATE_BYTES))
        .with_state(Ctx { shared, requests })
}

fn error(code: StatusCode, reason: impl Into<String>) -> Response {
    (code, Json(json!({ "error": reason.into() }))).into_response()
}

fn busy() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the replica is busy or stopping",
    )
}

/// A user's update; the driver pools it and relays it to the peers
/// (`driver::relay`).
async fn update(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let m: SignedIngress = match codec::decode(&body, MAX_UPDATE_BYTES) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed update: {e}")),
    };
    let (tx, rx) = oneshot::channel();
    if ctx.requests.try_send(Request::Update(m, tx)).is_err() {
        return busy();
    }
    match rx.await {
        Ok(Ok(id)) => (
            StatusCode::ACCEPTED,
            Json(json!({ "message_id": id.to_string() })),
        )
            .into_response(),
        Ok(Err(UpdateRefused::Upgrading)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "subnet is upgrading")
        }
        Ok(Err(UpdateRefused::Invalid(e))) => {
            let code = match e {
                crate::ingress::IngressError::PoolFull { .. }
                | crate::ingress::IngressError::SenderShareFull { .. } => {
                    StatusCode::TOO_MANY_REQUESTS
                }
                crate::ingress::IngressError::QuotaExceeded { .. } => StatusCode::FORBIDDEN,
                crate::ingress::IngressError::Duplicate(_) => StatusCode::CONFLICT,
                _ => StatusCode::BAD_REQUEST,
            };
            error(code, e.to_string())
        }
        Err(_) => busy(),
    }
}

async fn query(State(ctx): State<Ctx>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(key) = q.get("key") else {
        return error(StatusCode::BAD_REQUEST, "missing ?key=");
    };
    let (tx, rx) = oneshot::channel();
    if ctx
        .requests
        .try_send(Request::Query(key.clone(), tx))
        .is_err()
    {
        return busy();
    }
    match rx.await {
        Ok(a) => Json(a).into_response(),
        Err(_) => busy(),
    }
}

/// `?id=<message id>[&wait_ms=N]`: what became of an update; with `wait_ms`, answers
/// once it is certified or after N ms (at most `requests::MAX_WAIT_MS`) with what is
/// known then.
async fn request_status(
    State(ctx): State<Ctx>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(id) = q.get("id") else {
        return error(StatusCode::BAD_REQUEST, "missing ?id=");
    };
    let Ok(id) = id.parse::<CryptoHash>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("id {id:?} is not a message id (64 hex digits)"),
        );
    };
    let wait_ms = match q.get("wait_ms").map(|w| w.parse::<u64>()) {
        None => 0,
        Some(Ok(w)) if w <= crate::requests::MAX_WAIT_MS => w,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "wait_ms must be a number of milliseconds up to {}",
                    crate::requests::MAX_WAIT_MS
                ),
            );
        }
    };
    let ask = |wait: bool| {
        let (reply, rx) = oneshot::channel();
        let sent = ctx
            .requests
            .try_send(Request::Status { id, wait, reply })
            .is_ok();
        (sent, rx)
    };
    let mut answer = None;
    if wait_ms > 0 {
        let (sent, rx) = ask(true);
        if !sent {
            return busy();
        }
        if let Ok(Ok(a)) = tokio::time::timeout(Duration::from_millis(wait_ms), rx).await {
            answer = Some(a);
        }
    }
    let answer = match answer {
        Some(a) => a,
        None => match ask(false) {
            (true, rx) => match rx.await {
                Ok(a) => a,
                Err(_) => return busy(),
            },
            (false, _) => return busy(),
        },
    };
    Json(answer).into_response()
}

/// `?since=V`: a certified page of the registry's changes after version `V` (an NNS
/// subnet's node; see `registry_page`), canonically encoded.
async fn registry_changes(
    State(ctx): State<Ctx>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(Ok(since)) = q.get("since").map(|v| v.parse::<u64>()) else {
        return error(StatusCode::BAD_REQUEST, "need ?since=<registry version>");
    };
    certified_registry_read(
        &ctx,
        CertifiedRegistryRead::Changes(types::RegistryVersion::new(since)),
    )
    .await
}

/// `?from=ID`: a certified page of governance's proposals from id `ID` on (an NNS
/// subnet's node; see `registry_page`), canonically encoded.
async fn registry_proposals(
    State(ctx): State<Ctx>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let from = match q.get("from").map(|v| v.parse::<u64>()) {
        None => 1,
        Some(Ok(from)) if from >= 1 => from,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "need ?from=<proposal id, 1 or more>",
            );
        }
    };
    certified_registry_read(&ctx, CertifiedRegistryRead::Proposals(from)).await
}

async fn certified_registry_read(ctx: &Ctx, read: CertifiedRegistryRead) -> Response {
    let (tx, rx) = oneshot::channel();
    if ctx
        .requests
        .try_send(Request::RegistryPage(read, tx))
        .is_err()
    {
        return busy();
    }
    match rx.await {
        Ok(Ok(page)) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], page).into_response()
        }
        Ok(Err((true, reason))) => error(StatusCode::NOT_FOUND, reason),
        Ok(Err((false, reason))) => error(StatusCode::SERVICE_UNAVAILABLE, reason),
        Err(_) => busy(),
    }
}

async fn status(State(ctx): State<Ctx>) -> Response {
    match ctx.shared.status.lock() {
        Ok(s) => Json(s.clone()).into_response(),
        Err(_) => busy(),
    }
}

async fn resharing(State(ctx): State<Ctx>) -> Response {
    let (tx, rx) = oneshot::channel();
    if ctx.requests.try_send(Request::Resharing(tx)).is_err() {
        return busy();
    }
    match rx.await {
        Ok(Some(view)) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            codec::encode(&view),
        )
            .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no resharing under way"),
        Err(_) => busy(),
    }
}

async fn complaint(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let c: consensus::resharing::SignedComplaint = match codec::decode(&body, MAX_COMPLAINT_BYTES) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed complaint: {e}")),
    };
    if ctx.requests.try_send(Request::Complaint(c)).is_err() {
        return busy();
    }
    StatusCode::ACCEPTED.into_response()
}

/// The largest complaint body (a complaint and an ed25519 signature).
pub const MAX_COMPLAINT_BYTES: usize = 1024;

async fn metrics(State(ctx): State<Ctx>) -> Response {
    match ctx.shared.status.lock() {
        Ok(s) => ctx
            .shared
            .metrics
            .observe(&s, &ctx.shared.transport.stats()),
        Err(_) => return busy(),
    }
    ctx.shared.metrics.render()
}

/// The checkpoint directory at `height`, or the answer that there is none.
fn checkpoint_at(ctx: &Ctx, height: u64) -> Result<std::path::PathBuf, Box<Response>> {
    let dir = ctx.shared.dir.checkpoint(Height::new(height));
    if dir.join("CURRENT").exists() {
        Ok(dir)
    } else {
        Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("no checkpoint at height {height}"),
        )))
    }
}

/// Runs a read of a checkpoint off the async threads and encodes its result.
async fn export<T: serde::Serialize + Send + 'static>(
    read: impl FnOnce() -> Result<T, crate::state::StateError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(v)) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            codec::encode(&v),
        )
            .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(_) => busy(),
    }
}

/// `GET /_/state/{height}/manifest`: the checkpoint's bucket summaries.
async fn state_manifest(State(ctx): State<Ctx>, Path(height): Path<u64>) -> Response {
    match checkpoint_at(&ctx, height) {
        Ok(dir) => export(move || export_manifest(&dir)).await,
        Err(r) => *r,
    }
}

/// `GET /_/state/{height}/chunk?bucket=B&slot=S`: the checkpoint's entries from there on.
async fn state_chunk(
    State(ctx): State<Ctx>,
    Path(height): Path<u64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (Some(Ok(bucket)), Some(Ok(slot))) = (
        q.get("bucket").map(|b| b.parse::<u16>()),
        q.get("slot").map(|s| s.parse::<u32>()),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bucket= (0..65535) and slot= (a number) are required",
        );
    };
    match checkpoint_at(&ctx, height) {
        Ok(dir) => export(move || export_chunk(&dir, Cursor { bucket, slot })).await,
        Err(r) => *r,
    }
}

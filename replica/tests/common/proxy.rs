//! A lying HTTP proxy in front of a real replica: it forwards every request and answer,
//! but changes one byte inside a run of 64 `x` bytes in the answers it is told to lie
//! in (state-sync chunks, query answers). It knows nothing of their formats: the test
//! writes values of `x`s, and any encoding carries a value's bytes as they are.

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

/// What the proxy changed so far.
#[derive(Debug, Default)]
pub struct Lies {
    /// State-sync answers other than manifests (chunks) it changed.
    pub chunks: AtomicUsize,
    /// State-sync requests other than manifests it forwarded, changed or not.
    pub chunk_requests: AtomicUsize,
    /// Query answers it changed.
    pub queries: AtomicUsize,
}

#[derive(Clone)]
struct Ctx {
    upstream: String,
    client: reqwest::Client,
    lies: Arc<Lies>,
}

/// Changes one byte of the first run of 64 `x`s; whether there was one.
pub fn tamper(body: &mut [u8]) -> bool {
    let Some(at) = body.windows(64).position(|w| w.iter().all(|b| *b == b'x')) else {
        return false;
    };
    body[at + 32] = b'y';
    true
}

async fn forward(State(ctx): State<Ctx>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let url = format!(
        "{}{}",
        ctx.upstream,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let answer = ctx
        .client
        .request(method, &url)
        .body(body.to_vec())
        .send()
        .await;
    let Ok(answer) = answer else {
        return (StatusCode::BAD_GATEWAY, "upstream down").into_response();
    };
    let status = answer.status();
    let content_type = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let Ok(bytes) = answer.bytes().await else {
        return (StatusCode::BAD_GATEWAY, "upstream body").into_response();
    };
    let mut bytes = bytes.to_vec();
    if path.starts_with("/_/state/") && !path.ends_with("/manifest") {
        ctx.lies.chunk_requests.fetch_add(1, Ordering::SeqCst);
        if tamper(&mut bytes) {
            ctx.lies.chunks.fetch_add(1, Ordering::SeqCst);
        }
    }
    if path == "/api/v1/query" && tamper(&mut bytes) {
        ctx.lies.queries.fetch_add(1, Ordering::SeqCst);
    }
    (status, [(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

/// Serves the proxy on `listener` in front of `upstream` (`http://ip:port`).
pub fn start(listener: tokio::net::TcpListener, upstream: String) -> Arc<Lies> {
    let lies = Arc::new(Lies::default());
    let ctx = Ctx {
        upstream,
        client: reqwest::Client::new(),
        lies: lies.clone(),
    };
    let app = Router::new().fallback(forward).with_state(ctx);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    lies
}

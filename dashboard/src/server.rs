//! The HTTP side: the page and the latest overview, serialized once per refresh.

use crate::{metrics::Metrics, overview::Overview};
use axum::{
    Router,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use std::sync::{Arc, RwLock};

/// The page: one file, its CSS and script inline, nothing loaded from elsewhere.
pub const PAGE: &str = include_str!("page.html");

/// The page may run its own inline script and style, and fetch from this server only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'";

/// The latest overview as JSON bytes, and the refreshes' metrics.
#[derive(Debug)]
pub struct Published {
    json: RwLock<Arc<Vec<u8>>>,
    pub metrics: Metrics,
}

impl Published {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            json: RwLock::default(),
            metrics: Metrics::new()?,
        })
    }

    pub fn publish(&self, o: &Overview) {
        let bytes = match serde_json::to_vec(o) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "critical_error: the overview does not serialize");
                return;
            }
        };
        if let Ok(mut g) = self.json.write() {
            *g = Arc::new(bytes);
        }
    }

    fn latest(&self) -> Option<Arc<Vec<u8>>> {
        self.json
            .read()
            .ok()
            .map(|g| g.clone())
            .filter(|b| !b.is_empty())
    }
}

pub fn router(published: Arc<Published>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/v1/overview", get(overview))
        .route("/metrics", get(metrics))
        .with_state(published)
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

async fn metrics(State(p): State<Arc<Published>>) -> Response {
    match p.metrics.text() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn overview(State(p): State<Arc<Published>>) -> Response {
    match p.latest() {
        Some(bytes) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            bytes.as_ref().clone(),
        )
            .into_response(),
        None => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"the first refresh has not finished"}"#,
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::PAGE;

    #[test]
    fn the_page_parses_no_data_as_html_and_loads_nothing_from_elsewhere() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!PAGE.contains(sink), "the page uses {sink}");
        }
        for external in ["http://", "https://", "src=", "<link", "@import", "url("] {
            assert!(!PAGE.contains(external), "the page refers to {external}");
        }
        // The cells a browser test reads are there.
        for hook in [
            "\"data-field\"",
            "\"data-node\"",
            "\"data-step\"",
            "/api/v1/overview",
        ] {
            assert!(PAGE.contains(hook), "the page lacks {hook}");
        }
    }
}

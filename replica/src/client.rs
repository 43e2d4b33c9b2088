//! `ReplicaClient`: the typed client of a replica's public status, read with a bound on
//! size and time. Tools (`testnet`, the dashboard's kin, the tests) read a replica's
//! state through it instead of picking fields out of JSON by name, so a renamed or
//! retyped field is a compile error in every reader rather than a silent `null`.

use crate::driver::StatusView;
use std::time::Duration;

/// The most of a status answer read (a few KiB in practice; readiness words grow with n).
pub const MAX_STATUS_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url}: HTTP {status}")]
    Refused { url: String, status: u16 },
    #[error("{url}: {reason}")]
    Invalid { url: String, reason: String },
}

/// One replica's HTTP API (`http://ADDR`).
#[derive(Clone, Debug)]
pub struct ReplicaClient {
    base: String,
    http: reqwest::Client,
    deadline: Duration,
}

impl ReplicaClient {
    /// `base`: `http://host:port` (a trailing `/` is ignored); each call gives up after
    /// `deadline`.
    pub fn new(http: reqwest::Client, base: &str, deadline: Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            deadline,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /api/v1/status`.
    pub async fn status(&self) -> Result<StatusView, ClientError> {
        let url = format!("{}/api/v1/status", self.base);
        let unreachable = |reason: String| ClientError::Unreachable {
            url: url.clone(),
            reason,
        };
        let resp = tokio::time::timeout(self.deadline, self.http.get(&url).send())
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.deadline)))?
            .map_err(|e| unreachable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(ClientError::Refused {
                url,
                status: resp.status().as_u16(),
            });
        }
        let limits = netio::Limits::small(MAX_STATUS_BYTES, self.deadline);
        let body = netio::read_body(resp, &limits)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Invalid {
            url,
            reason: e.to_string(),
        })
    }
}

//! `ReplicaClient`: the typed client of a replica's public API (status, updates, queries,
//! request status), every answer read with a bound on size and time. Tools (`testnet`,
//! `bench`, the tests) talk to a replica through it instead of picking fields out of JSON
//! by name, so a renamed or retyped field is a compile error in every reader rather than
//! a silent `null`.

use crate::{
    certified::QueryAnswer, driver::StatusView, ingress::SignedIngress, requests::RequestStatus,
};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// The most of a status answer read (a few KiB in practice; readiness words grow with n).
pub const MAX_STATUS_BYTES: usize = 1 << 20;
/// The most of any other answer read (a query carries a value of at most 64 KiB in hex,
/// its witness and certificate).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The replica answered with an error status; `reason` is its own words.
    #[error("{url}: HTTP {status}: {reason}")]
    Refused {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("{url}: {reason}")]
    Invalid { url: String, reason: String },
}

impl ClientError {
    /// The HTTP status of a refusal (`503` while the subnet upgrades, `429` when a pool
    /// is full, `409` for a duplicate).
    pub fn refusal_status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
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
    /// `deadline`, or after the longer wait it asks the replica for.
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
        self.get("/api/v1/status", &[], MAX_STATUS_BYTES, self.deadline)
            .await
    }

    /// `GET /api/v1/query?key=KEY`: the value at the replica's latest certified height,
    /// with its certificate and witness (check them with `certified::verify_answer`).
    pub async fn query(&self, key: &str) -> Result<QueryAnswer, ClientError> {
        self.get(
            "/api/v1/query",
            &[("key", key)],
            MAX_ANSWER_BYTES,
            self.deadline,
        )
        .await
    }

    /// `GET /api/v1/request_status?id=ID[&wait_ms=N]`: with `wait` above zero, the replica
    /// answers once the update is certified or after `wait`.
    pub async fn request_status(
        &self,
        message_id: &str,
        wait: Duration,
    ) -> Result<RequestStatus, ClientError> {
        let wait_ms = wait.as_millis().to_string();
        let mut q = vec![("id", message_id)];
        if !wait.is_zero() {
            q.push(("wait_ms", &wait_ms));
        }
        self.get(
            "/api/v1/request_status",
            &q,
            MAX_ANSWER_BYTES,
            self.deadline + wait,
        )
        .await
    }

    /// `POST /api/v1/update`: the message id once the replica accepted the update into
    /// its pool (not yet executed: ask [`Self::request_status`]).
    pub async fn update(&self, m: &SignedIngress) -> Result<String, ClientError> {
        #[derive(serde::Deserialize)]
        struct Accepted {
            message_id: String,
        }
        let url = format!("{}/api/v1/update", self.base);
        let req = self.http.post(&url).body(m.encode());
        let a: Accepted = self
            .answer(url, req, MAX_ANSWER_BYTES, self.deadline)
            .await?;
        Ok(a.message_id)
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        max_bytes: usize,
        deadline: Duration,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let req = self.http.get(&url).query(query);
        self.answer(url, req, max_bytes, deadline).await
    }

    async fn answer<T: DeserializeOwned>(
        &self,
        url: String,
        req: reqwest::RequestBuilder,
        max_bytes: usize,
        deadline: Duration,
    ) -> Result<T, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            url: url.clone(),
            reason,
        };
        let resp = tokio::time::timeout(deadline, req.timeout(deadline).send())
            .await
            .map_err(|_| unreachable(format!("no answer within {deadline:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let limits = netio::Limits::small(max_bytes, deadline);
        let body = netio::read_body(resp, &limits)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !status.is_success() {
            #[derive(serde::Deserialize)]
            struct Refusal {
                error: String,
            }
            let reason = serde_json::from_slice::<Refusal>(&body)
                .map(|r| r.error)
                .unwrap_or_else(|_| "no reason given".to_string());
            return Err(ClientError::Refused {
                url,
                status: status.as_u16(),
                reason,
            });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Invalid {
            url,
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::{Ingress, Operation};
    use axum::{
        Json, Router,
        http::StatusCode,
        routing::{get, post},
    };
    use crypto::ed25519::Ed25519KeyPair;

    /// A server that refuses updates as an upgrading replica does and answers status with
    /// more than a status may be.
    async fn server() -> String {
        let app = Router::new()
            .route(
                "/api/v1/update",
                post(|| async {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(serde_json::json!({ "error": "subnet is upgrading" })),
                    )
                }),
            )
            .route(
                "/api/v1/status",
                get(|| async { "x".repeat(MAX_STATUS_BYTES + 1) }),
            )
            .route(
                "/api/v1/query",
                get(|| async { Json(serde_json::json!({ "key": 7 })) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn refusals_carry_the_replicas_reason_and_oversized_or_mistyped_answers_are_errors() {
        let c = ReplicaClient::new(
            reqwest::Client::new(),
            &server().await,
            Duration::from_secs(5),
        );
        let user = Ed25519KeyPair::from_seed(&[1; 32]);
        let m = SignedIngress::sign(
            Ingress {
                network: types::NetworkId::from_registry_root_key(&[0; 32]),
                sender: user.public_key(),
                nonce: 1,
                expiry_ns: 1,
                operation: Operation::Put {
                    key: "k".into(),
                    value: vec![],
                },
            },
            &user,
        );
        let e = c.update(&m).await.unwrap_err();
        assert_eq!(e.refusal_status(), Some(503));
        assert!(e.to_string().contains("subnet is upgrading"), "{e}");
        let e = c.status().await.unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains("bytes"), "{e}");
        let e = c.query("k").await.unwrap_err();
        assert!(matches!(e, ClientError::Invalid { .. }), "{e}");
    }
}

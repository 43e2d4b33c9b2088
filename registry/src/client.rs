//! A client of the registry server, verifying response signatures when it holds the
//! registry's root public key (the replicator always does).

use crate::api::{self, *};
use crypto::ed25519::{Ed25519PublicKey, Ed25519Signature};
use serde::{Serialize, de::DeserializeOwned};
use std::time::Duration;
use types::{RegistryVersion, codec, domain};

/// Why a registry request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("invalid registry URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("registry at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{message}")]
    Refused { status: u16, message: String },
    #[error("the response to {path} is not signed by the registry's key")]
    BadSignature { path: String },
    #[error("malformed response to {path}: {reason}")]
    Malformed { path: String, reason: String },
}

/// Talks to one registry server.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    root_key: Option<Ed25519PublicKey>,
}

impl RegistryClient {
    /// `root_key`: when given, every response must carry a valid signature by it.
    pub fn new(url: &str, root_key: Option<Ed25519PublicKey>) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("only http and https are supported".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            http,
            base: url.trim_end_matches('/').to_string(),
            root_key,
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    async fn send(&self, path: &str, body: Option<Vec<u8>>) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{}", self.base, path);
        let req = match body {
            None => self.http.get(&url),
            Some(b) => self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(b),
        };
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let signature = resp
            .headers()
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.map_err(unreachable)?.to_vec();
        if let Some(root) = &self.root_key {
            let valid = signature
                .and_then(|s| hex::decode(s).ok())
                .and_then(|s| Ed25519Signature::from_bytes(&s).ok())
                .is_some_and(|sig| {
                    root.verify(
                        domain::REGISTRY_RESPONSE,
                        &response_message(path, &bytes),
                        &sig,
                    )
                    .is_ok()
                });
            if !valid {
                return Err(ClientError::BadSignature {
                    path: path.to_string(),
                });
            }
        }
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        Ok(bytes)
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let bytes = self.send(path, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Malformed {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Malformed {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        let bytes = self.send(path, Some(body)).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Malformed {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    pub async fn registry_version(&self) -> Result<RegistryVersion, ClientError> {
        let v: VersionView = self.get_json("/api/v1/registry/version").await?;
        Ok(RegistryVersion::new(v.registry_version))
    }

    pub async fn changes(
        &self,
        since: RegistryVersion,
        max: usize,
    ) -> Result<ChangesPage, ClientError> {
        let path = format!("/api/v1/registry/changes?since={}&max={max}", since.get());
        let bytes = self.send(&path, None).await?;
        codec::decode(&bytes, api::MAX_PAGE_BYTES * 2).map_err(|e| ClientError::Malformed {
            path,
            reason: e.to_string(),
        })
    }

    pub async fn get(
        &self,
        key: &str,
        at: Option<RegistryVersion>,
    ) -> Result<GetView, ClientError> {
        let mut path = format!("/api/v1/registry/get?key={}", urlencode(key));
        if let Some(at) = at {
            path.push_str(&format!("&at={}", at.get()));
        }
        self.get_json(&path).await
    }

    pub async fn versions(&self) -> Result<Vec<ElectedVersionView>, ClientError> {
        self.get_json("/api/v1/versions").await
    }

    pub async fn subnets(&self) -> Result<Vec<SubnetView>, ClientError> {
        self.get_json("/api/v1/subnets").await
    }

    pub async fn neurons(&self) -> Result<Vec<NeuronView>, ClientError> {
        self.get_json("/api/v1/neurons").await
    }

    pub async fn proposals(&self) -> Result<Vec<ProposalView>, ClientError> {
        self.get_json("/api/v1/proposals").await
    }

    pub async fn proposal(&self, id: u64) -> Result<ProposalView, ClientError> {
        self.get_json(&format!("/api/v1/proposals/{id}")).await
    }

    pub async fn submit(&self, signed: &SignedSubmission) -> Result<u64, ClientError> {
        let v: ProposalIdView = self.post_json("/api/v1/proposals", signed).await?;
        Ok(v.proposal_id)
    }

    pub async fn vote(&self, signed: &SignedBallot) -> Result<VoteResultView, ClientError> {
        let path = format!("/api/v1/proposals/{}/votes", signed.ballot.proposal_id);
        self.post_json(&path, signed).await
    }

    pub async fn status(&self) -> Result<StatusView, ClientError> {
        self.get_json("/api/v1/status").await
    }
}

/// Percent-encodes a registry key for a query string (keys are printable ASCII).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

//! A client of the registry server, verifying response signatures when it holds the
//! registry's root public key (the replicator always does).
//!
//! Every answer is read through [`netio::read_body`] within a named limit: a page (of
//! changes, proposals, versions, or a record) at most [`MAX_PAGE_ANSWER_BYTES`], anything
//! else at most [`MAX_SMALL_ANSWER_BYTES`], all within [`ANSWER_DEADLINE`] and above
//! [`MIN_ANSWER_BYTES_PER_S`], so a registry that streams without end is cut off at the
//! limit, not read into memory.

use crate::api::{self, *};
use crypto::ed25519::{Ed25519PublicKey, Ed25519Signature};
use netio::Limits;
use serde::{Serialize, de::DeserializeOwned};
use std::time::Duration;
use types::{RegistryVersion, ReplicaVersion, codec, domain};

/// The most bytes read of a page: what the server sends at most.
pub const MAX_PAGE_ANSWER_BYTES: usize = api::MAX_RESPONSE_BYTES;
/// The most bytes read of any other answer (a status, one proposal: at most a request
/// body's worth of payload and its fields).
pub const MAX_SMALL_ANSWER_BYTES: usize = 2 * 1024 * 1024;
/// The whole answer must have arrived by then.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(30);
/// After [`ANSWER_GRACE`], an answer slower than this on average is dropped.
pub const MIN_ANSWER_BYTES_PER_S: u64 = 16 * 1024;
pub const ANSWER_GRACE: Duration = Duration::from_secs(5);
/// The most pages [`RegistryClient::proposals`] and [`RegistryClient::versions`] follow.
pub const MAX_PAGES_FOLLOWED: usize = 10_000;

/// The bounds every answer is read within ([`netio::read_body`]).
pub(crate) fn limits(max_bytes: usize) -> Limits {
    Limits {
        max_bytes,
        deadline: ANSWER_DEADLINE,
        min_bytes_per_s: MIN_ANSWER_BYTES_PER_S,
        grace: ANSWER_GRACE,
    }
}

/// Why a registry request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("invalid registry URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("registry at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the answer to {path} from {url} was dropped: {reason}")]
    Unreadable {
        url: String,
        path: String,
        reason: String,
    },
    #[error("{message}")]
    Refused { status: u16, message: String },
    #[error("the response to {path} is not signed by the registry's key")]
    BadSignature { path: String },
    #[error("malformed response to {path}: {reason}")]
    Malformed { path: String, reason: String },
}

/// An HTTP client for `url` (http or https only) and the URL without a trailing `/`.
pub(crate) fn http_client(url: &str) -> Result<(reqwest::Client, String), ClientError> {
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
    Ok((http, url.trim_end_matches('/').to_string()))
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
        let (http, base) = http_client(url)?;
        Ok(Self {
            http,
            base,
            root_key,
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        path: &str,
        body: Option<Vec<u8>>,
        max_bytes: usize,
    ) -> Result<Vec<u8>, ClientError> {
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
        let bytes = netio::read_body(resp, &limits(max_bytes))
            .await
            .map_err(|e| ClientError::Unreadable {
                url: self.base.clone(),
                path: path.to_string(),
                reason: e.to_string(),
            })?;
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

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        max_bytes: usize,
    ) -> Result<T, ClientError> {
        let bytes = self.send(path, None, max_bytes).await?;
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
        let bytes = self.send(path, Some(body), MAX_SMALL_ANSWER_BYTES).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Malformed {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    pub async fn registry_version(&self) -> Result<RegistryVersion, ClientError> {
        let v: VersionView = self
            .get_json("/api/v1/registry/version", MAX_SMALL_ANSWER_BYTES)
            .await?;
        Ok(RegistryVersion::new(v.registry_version))
    }

    pub async fn changes(
        &self,
        since: RegistryVersion,
        max: usize,
    ) -> Result<ChangesPage, ClientError> {
        let path = format!("/api/v1/registry/changes?since={}&max={max}", since.get());
        let bytes = self.send(&path, None, MAX_PAGE_ANSWER_BYTES).await?;
        codec::decode(&bytes, MAX_PAGE_ANSWER_BYTES).map_err(|e| ClientError::Malformed {
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
        self.get_json(&path, MAX_PAGE_ANSWER_BYTES).await
    }

    /// One page of elected versions after `after` (see the paging rules in [`api`]).
    pub async fn versions_page(
        &self,
        after: Option<&ReplicaVersion>,
        limit: usize,
    ) -> Result<VersionsPage, ClientError> {
        let mut path = format!("/api/v1/versions?limit={limit}");
        if let Some(after) = after {
            path.push_str(&format!("&after={}", urlencode(after.as_str())));
        }
        self.get_json(&path, MAX_PAGE_ANSWER_BYTES).await
    }

    /// Every elected version, following the pages.
    pub async fn versions(&self) -> Result<Vec<ElectedVersionView>, ClientError> {
        let mut out = Vec::new();
        let mut after: Option<ReplicaVersion> = None;
        for _ in 0..MAX_PAGES_FOLLOWED {
            let page = self
                .versions_page(after.as_ref(), MAX_VERSIONS_PER_LIST_PAGE)
                .await?;
            out.extend(page.versions);
            match page.next {
                Some(next) if after.as_ref().is_none_or(|a| &next > a) => after = Some(next),
                Some(next) => return Err(self.no_progress("/api/v1/versions", &next)),
                None => return Ok(out),
            }
        }
        Err(self.too_many_pages("/api/v1/versions"))
    }

    pub async fn subnets(&self) -> Result<Vec<SubnetView>, ClientError> {
        self.get_json("/api/v1/subnets", MAX_PAGE_ANSWER_BYTES)
            .await
    }

    /// Every node record, each with its subnet (or none).
    pub async fn nodes(&self) -> Result<Vec<NodeView>, ClientError> {
        self.get_json("/api/v1/nodes", MAX_PAGE_ANSWER_BYTES).await
    }

    pub async fn neurons(&self) -> Result<Vec<NeuronView>, ClientError> {
        self.get_json("/api/v1/neurons", MAX_PAGE_ANSWER_BYTES)
            .await
    }

    /// One page of proposals after `after` (see the paging rules in [`api`]).
    pub async fn proposals_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<ProposalsPage, ClientError> {
        let mut path = format!("/api/v1/proposals?limit={limit}");
        if let Some(after) = after {
            path.push_str(&format!("&after={after}"));
        }
        self.get_json(&path, MAX_PAGE_ANSWER_BYTES).await
    }

    /// Every proposal, following the pages.
    pub async fn proposals(&self) -> Result<Vec<ProposalView>, ClientError> {
        let mut out = Vec::new();
        let mut after = None;
        for _ in 0..MAX_PAGES_FOLLOWED {
            let page = self.proposals_page(after, MAX_PROPOSALS_PER_PAGE).await?;
            out.extend(page.proposals);
            match page.next {
                Some(next) if after.is_none_or(|a| next > a) => after = Some(next),
                Some(next) => return Err(self.no_progress("/api/v1/proposals", &next)),
                None => return Ok(out),
            }
        }
        Err(self.too_many_pages("/api/v1/proposals"))
    }

    /// A server whose `next` does not move forward would be followed forever.
    fn no_progress(&self, path: &str, next: &dyn std::fmt::Display) -> ClientError {
        ClientError::Malformed {
            path: path.to_string(),
            reason: format!("the next page starts at {next}, not after this one"),
        }
    }

    fn too_many_pages(&self, path: &str) -> ClientError {
        ClientError::Malformed {
            path: path.to_string(),
            reason: format!("more than {MAX_PAGES_FOLLOWED} pages"),
        }
    }

    pub async fn proposal(&self, id: u64) -> Result<ProposalView, ClientError> {
        self.get_json(&format!("/api/v1/proposals/{id}"), MAX_SMALL_ANSWER_BYTES)
            .await
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
        self.get_json("/api/v1/status", MAX_SMALL_ANSWER_BYTES)
            .await
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// How much the fake registry sends at most (four times what a client may read), so
    /// a client that does not stop makes the test fail rather than hang.
    const FAKE_SEND_BYTES: usize = 4 * MAX_PAGE_ANSWER_BYTES;

    /// A fake registry that answers every request with `head`, then a chunked body of
    /// `x`s that goes on until the client hangs up (or [`FAKE_SEND_BYTES`]).
    async fn streaming(head: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let size = 64 * 1024;
                    let chunk = format!("{size:x}\r\n{}\r\n", "x".repeat(size));
                    for _ in 0..FAKE_SEND_BYTES / size {
                        if socket.write_all(chunk.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn an_endless_page_is_refused_at_the_limit() {
        let url = streaming("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
        let client = RegistryClient::new(&url, None).unwrap();
        match client.changes(RegistryVersion::ZERO, 10).await {
            Err(ClientError::Unreadable { reason, .. }) => assert!(
                reason.contains(&format!(
                    "passed the limit of {MAX_PAGE_ANSWER_BYTES} bytes"
                )),
                "{reason}"
            ),
            other => panic!("an endless page was not refused at the limit: {other:?}"),
        }
        // A small answer has its own, smaller limit.
        match client.status().await {
            Err(ClientError::Unreadable { reason, .. }) => assert!(
                reason.contains(&format!("limit of {MAX_SMALL_ANSWER_BYTES} bytes")),
                "{reason}"
            ),
            other => panic!("an endless status was not refused at the limit: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_reading() {
        let url = streaming("HTTP/1.1 200 OK\r\ncontent-length: 1000000000000\r\n\r\n").await;
        let client = RegistryClient::new(&url, None).unwrap();
        match client.proposals().await {
            Err(ClientError::Unreadable { reason, .. }) => {
                assert!(reason.contains("declares 1000000000000 bytes"), "{reason}")
            }
            other => panic!("a huge declared length was read: {other:?}"),
        }
    }
}

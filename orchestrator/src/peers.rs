//! Asking the subnet's other members for a newer CUP, beside the loop.
//!
//! A round asks every member that is not backing off, all at once, in a spawned task;
//! the loop starts a round when none runs and takes its results on a later tick, so a
//! peer that answers slowly, endlessly or not at all never holds the loop. Each answer is
//! read through [`netio::read_body`] within [`PEER_ANSWER_LIMITS`]: a body larger than a
//! CUP is refused at that size, before it is held, and the whole request ends at
//! [`PEER_TIMEOUT`]. An answer counts only if the asked node's registry key signed it for
//! this very request (`server::verify_answer`).

use crate::server::{CupRequest, verify_answer};
use crypto::ed25519::Ed25519PublicKey;
use cup::Cup;
use std::time::{Duration, Instant};
use types::{NetworkId, NodeId};

/// The largest answer body read from a peer: one CUP.
pub const MAX_CUP_ANSWER_BYTES: usize = cup::MAX_CUP_BYTES;
/// How long one peer request may take, answer body included.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// The bounds of one answer body.
pub const PEER_ANSWER_LIMITS: netio::Limits =
    netio::Limits::small(MAX_CUP_ANSWER_BYTES, PEER_TIMEOUT);
/// A peer that failed is asked again after this long, doubling up to the maximum.
pub const PEER_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const PEER_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Rounds start at most this often. A round is the fallback for a node whose own replica
/// fell behind (its replica's CUPs reach the loop at once); each round costs every member
/// a signed request and answer per peer, n² a round for the subnet, so it does not run
/// at every tick (at n = 13 and a tick of 300 ms that was 520 requests a second).
pub const ROUND_INTERVAL: Duration = Duration::from_secs(1);
/// The most peers one round asks (a subnet's size is far below it).
pub const MAX_PEERS_PER_ROUND: usize = 256;

/// A member to ask: where, and the key its answers must verify against.
#[derive(Clone, Debug)]
pub struct Peer {
    pub node_id: NodeId,
    pub key: Ed25519PublicKey,
    /// `http://<cup_address>/_/catch_up_package`.
    pub url: String,
}

/// Why a peer's answer did not count.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("request failed: {0}")]
    Request(String),
    #[error("no answer within {} ms", PEER_TIMEOUT.as_millis())]
    Timeout,
    #[error("HTTP {0}")]
    Status(u16),
    #[error("answer refused: {0}")]
    Read(#[from] netio::ReadError),
    #[error("the answer's signature does not verify for this request")]
    BadSignature,
    #[error("the answer is not a signed CUP: {0}")]
    NotACup(String),
}

impl PeerError {
    /// A limit or a signature refused the answer (worth counting: a Byzantine sign).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Read(_) | Self::BadSignature | Self::NotACup(_))
    }
}

/// Asks one peer; `Ok(None)` is a verified "nothing newer".
pub async fn ask(
    http: &reqwest::Client,
    network: &NetworkId,
    peer: &Peer,
    request: &CupRequest,
) -> Result<Option<Cup>, PeerError> {
    let send = http.post(&peer.url).json(request).send();
    let response = tokio::time::timeout(PEER_TIMEOUT, send)
        .await
        .map_err(|_| PeerError::Timeout)?
        .map_err(|e| PeerError::Request(e.to_string()))?;
    let status = response.status();
    if !matches!(status.as_u16(), 200 | 204) {
        return Err(PeerError::Status(status.as_u16()));
    }
    let signature = response
        .headers()
        .get("x-node-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = netio::read_body(response, &PEER_ANSWER_LIMITS).await?;
    if !verify_answer(
        network,
        request,
        status.as_u16(),
        &body,
        &signature,
        &peer.key,
    ) {
        return Err(PeerError::BadSignature);
    }
    if status.as_u16() == 204 {
        return Ok(None);
    }
    match Cup::decode(&body) {
        // Only signed CUPs count from peers; decide verifies them.
        Ok(c @ Cup::Signed(_)) => Ok(Some(c)),
        Ok(_) => Err(PeerError::NotACup("an unsigned CUP".into())),
        Err(e) => Err(PeerError::NotACup(e.to_string())),
    }
}

/// One round's outcome: per peer asked, its CUP or why not.
pub type RoundResult = Vec<(NodeId, Result<Option<Cup>, PeerError>)>;

/// A round running beside the loop.
#[derive(Debug)]
pub struct Round {
    handle: tokio::task::JoinHandle<RoundResult>,
}

impl Round {
    /// Asks every `(peer, request)` at once (at most [`MAX_PEERS_PER_ROUND`]).
    pub fn spawn(http: reqwest::Client, network: NetworkId, asks: Vec<(Peer, CupRequest)>) -> Self {
        let handle = tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for (peer, request) in asks.into_iter().take(MAX_PEERS_PER_ROUND) {
                let http = http.clone();
                set.spawn(async move {
                    let answer = ask(&http, &network, &peer, &request).await;
                    (peer.node_id, answer)
                });
            }
            let mut out = Vec::new();
            while let Some(joined) = set.join_next().await {
                if let Ok(r) = joined {
                    out.push(r);
                }
            }
            out
        });
        Self { handle }
    }

    /// The results, once the round is over (`None` while it runs).
    pub async fn take_if_done(&mut self) -> Option<RoundResult> {
        if !self.handle.is_finished() {
            return None;
        }
        Some((&mut self.handle).await.unwrap_or_default())
    }
}

impl Drop for Round {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Per peer: the wait after a failure, and until when.
#[derive(Debug, Default)]
pub struct Backoff {
    wait: Duration,
    until: Option<Instant>,
}

impl Backoff {
    pub fn due(&self, now: Instant) -> bool {
        self.until.is_none_or(|t| now >= t)
    }

    pub fn succeeded(&mut self) {
        *self = Self::default();
    }

    pub fn failed(&mut self, now: Instant) {
        self.wait = (self.wait * 2).clamp(PEER_BACKOFF_MIN, PEER_BACKOFF_MAX);
        self.until = Some(now + self.wait);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::server::Nonce;
    use crypto::ed25519::Ed25519KeyPair;

    const NET: NetworkId = NetworkId([7; 32]);

    /// A peer whose CUP endpoint answers 200 and then streams zeros without end.
    async fn endless_peer() -> String {
        use axum::{body::Body, routing::post};
        let app = axum::Router::new().route(
            "/_/catch_up_package",
            post(|| async {
                let chunk = bytes_of_zeros();
                let stream = futures_util::stream::repeat_with(move || {
                    Ok::<_, std::io::Error>(chunk.clone())
                });
                Body::from_stream(stream)
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        format!("http://{addr}/_/catch_up_package")
    }

    fn bytes_of_zeros() -> axum::body::Bytes {
        axum::body::Bytes::from(vec![0u8; 64 * 1024])
    }

    #[tokio::test]
    async fn an_endless_answer_is_refused_at_the_cup_limit() {
        let url = endless_peer().await;
        let asker = Ed25519KeyPair::from_seed(&[1; 32]);
        let peer = Peer {
            node_id: NodeId([2; 32]),
            key: Ed25519KeyPair::from_seed(&[2; 32]).public_key(),
            url,
        };
        let request = CupRequest::signed(1, 1, NET, Nonce([3; 32]), &asker);
        let http = reqwest::Client::new();
        let e = ask(&http, &NET, &peer, &request).await.unwrap_err();
        assert!(
            matches!(
                e,
                PeerError::Read(netio::ReadError::TooLarge {
                    limit: MAX_CUP_ANSWER_BYTES
                })
            ),
            "{e}"
        );
        assert!(e.is_refusal());
    }
}

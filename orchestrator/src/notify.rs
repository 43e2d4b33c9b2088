//! Notifications: the orchestrator posts a JSON [`Event`] to each webhook URL of
//! `node.toml` (`webhooks = ["http://..."]`) at every step of an upgrade. Each URL has its
//! own bounded queue ([`MAX_QUEUED`]) and its own task, so one slow receiver delays no
//! other and events reach each receiver in order. The control loop only `try_send`s: a
//! full queue drops the event (counted in `orchestrator_webhook_events_dropped_total`);
//! a failed post is retried with backoff ([`RETRY_MIN`] doubling to [`RETRY_MAX`], at
//! most [`MAX_ATTEMPTS`] tries), each post bounded by [`POST_TIMEOUT`].

use serde::Serialize;
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::sync::mpsc;
use types::{NodeId, ReplicaVersion, SubnetId};

/// Events waiting per URL.
pub const MAX_QUEUED: usize = 256;
/// Tries per event and URL.
pub const MAX_ATTEMPTS: u32 = 6;
pub const RETRY_MIN: Duration = Duration::from_millis(500);
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// One post, from connecting to the answer.
pub const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// One step of an upgrade on one node, as posted.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Event {
    pub node: NodeId,
    pub subnet: Option<SubnetId>,
    /// The release the step is about.
    pub version: Option<ReplicaVersion>,
    /// `deployed_seen`, `downloaded`, `download_failed`, `preflight_passed`,
    /// `preflight_failed`, `cup_signed` (the CUP that halts for the release exists),
    /// `switched`, `healthy`, `unhealthy`, `recalled`, `recovered`.
    pub step: &'static str,
    pub time_unix_ms: u64,
    pub detail: String,
}

/// The posting side: one queue per URL.
#[derive(Debug, Default)]
pub struct Notifier {
    queues: Vec<mpsc::Sender<Event>>,
    dropped: Arc<AtomicU64>,
    /// Events queued and not yet posted (or given up on).
    pending: Arc<AtomicUsize>,
}

impl Notifier {
    /// Starts one posting task per URL (none: notifications are off).
    pub fn start(urls: &[String]) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let pending = Arc::new(AtomicUsize::new(0));
        let queues = urls
            .iter()
            .map(|url| {
                let (tx, rx) = mpsc::channel(MAX_QUEUED);
                tokio::spawn(deliver(client.clone(), url.clone(), rx, pending.clone()));
                tx
            })
            .collect();
        Ok(Self {
            queues,
            dropped: Arc::default(),
            pending,
        })
    }

    /// Queues `event` for every URL; never waits.
    pub fn notify(&self, event: Event) {
        tracing::info!(step = event.step, version = ?event.version, detail = %event.detail, "upgrade step");
        for q in &self.queues {
            self.pending.fetch_add(1, Ordering::Relaxed);
            if q.try_send(event.clone()).is_err() {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits, at most `limit`, until every queued event is posted or given up on: the
    /// orchestrator calls it before re-executing itself, which would drop the queues.
    pub async fn flush(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.pending.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Events dropped because a receiver's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn deliver(
    client: reqwest::Client,
    url: String,
    mut rx: mpsc::Receiver<Event>,
    pending: Arc<AtomicUsize>,
) {
    while let Some(event) = rx.recv().await {
        post(&client, &url, &event).await;
        pending.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn post(client: &reqwest::Client, url: &str, event: &Event) {
    let mut wait = RETRY_MIN;
    for attempt in 1..=MAX_ATTEMPTS {
        match client.post(url).json(event).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => {
                tracing::debug!(%url, status = %r.status(), attempt, "webhook refused an event")
            }
            Err(e) => tracing::debug!(%url, error = %e, attempt, "webhook post failed"),
        }
        if attempt < MAX_ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
    }
    tracing::warn!(%url, step = event.step, "gave up posting an event");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A receiver that answers 503 to the first post and 200 after; the bodies it got.
    async fn receiver() -> (String, Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", l.local_addr().unwrap());
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let g = got.clone();
        tokio::spawn(async move {
            let mut first = true;
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then as many body bytes as Content-Length says.
                let body = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break Some(buf[end + 4..end + 4 + len].to_vec());
                        }
                    }
                };
                let status = if first {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                if !first && let Some(b) = body {
                    g.lock().unwrap().push(serde_json::from_slice(&b).unwrap());
                }
                first = false;
                let answer =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        (url, got)
    }

    fn event(step: &'static str) -> Event {
        Event {
            node: NodeId([1; 32]),
            subnet: None,
            version: Some(ReplicaVersion::new("2.0.0").unwrap()),
            step,
            time_unix_ms: 1,
            detail: String::new(),
        }
    }

    #[tokio::test]
    async fn events_arrive_in_order_after_a_retry_and_a_dead_url_blocks_nothing() {
        let (url, got) = receiver().await;
        // Nothing listens on port 9: its queue retries in the background.
        let n = Notifier::start(&[url, "http://127.0.0.1:9/x".into()]).unwrap();
        let started = std::time::Instant::now();
        for step in ["deployed_seen", "downloaded", "preflight_passed"] {
            n.notify(event(step));
        }
        assert!(started.elapsed() < Duration::from_secs(1), "notify waited");
        for _ in 0..200 {
            if got.lock().unwrap().len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let steps: Vec<String> = got
            .lock()
            .unwrap()
            .iter()
            .map(|e| e["step"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(steps, ["deployed_seen", "downloaded", "preflight_passed"]);
        assert_eq!(n.dropped(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let n = Notifier::start(&["http://127.0.0.1:9/x".into()]).unwrap();
        for _ in 0..MAX_QUEUED + 10 {
            n.notify(event("downloaded"));
        }
        assert!(n.dropped() >= 10, "dropped {}", n.dropped());
    }
}

//! `testnet load` and `testnet demo`: signed writes, and the whole upgrade story.
//!
//! A write is *acknowledged* once a replica answers a query with its value and a
//! certified height (it executed and its state was certified), not when the update was
//! merely accepted into a pool: an accepted update that never executes (say, still in a
//! pool when the old release halts) was never acknowledged, and is not counted as lost.

use crypto::ed25519::Ed25519KeyPair;
use replica::ingress::{Ingress, Operation, SignedIngress};
use serde_json::{Value, json};
use std::{
    collections::HashSet,
    io::Write,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::mpsc;
use types::NetworkId;

/// The network a testnet in `dir` serves: its registry's (what every node's `node.toml`
/// names), so its writes are signed for it.
pub fn network_id(dir: &Path) -> Result<NetworkId, String> {
    registry::server::network_id(&dir.join("registry"))
}

/// A runtime with two workers of its own: a load runs there while the caller's thread
/// polls and drives the network.
pub fn workers() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Signed writes at a rate, confirmed beside the sending (`send`, `confirm`).
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    sender: tokio::task::JoinHandle<Sent>,
    confirmer: tokio::task::JoinHandle<Vec<Write1>>,
}

impl Load {
    pub fn start(
        rt: &tokio::runtime::Runtime,
        urls: &[String],
        network: NetworkId,
        rate: u64,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let run = registry::server::now_ns() / 1_000_000;
        let (tx, rx) = mpsc::unbounded_channel();
        let sender = rt.spawn(send(
            urls.to_vec(),
            network,
            rate,
            run,
            stop.clone(),
            None,
            tx,
        ));
        let confirmer = rt.spawn(confirm(urls.to_vec(), rx));
        Load {
            stop,
            sender,
            confirmer,
        }
    }

    /// Stops sending; the number of writes accepted, and those acknowledged.
    pub fn finish(self, rt: &tokio::runtime::Runtime) -> Result<(u64, Vec<Write1>), String> {
        self.stop.store(true, Ordering::Relaxed);
        let accepted = rt
            .block_on(self.sender)
            .map_err(|e| e.to_string())?
            .accepted;
        let acknowledged = rt.block_on(self.confirmer).map_err(|e| e.to_string())?;
        Ok((accepted, acknowledged))
    }
}

/// How long an accepted write may take to show up in a query before it counts as not
/// acknowledged: past its expiry (two minutes) it can no longer execute.
pub const CONFIRM_PATIENCE: Duration = Duration::from_secs(130);
/// Once sending has ended, confirmation stops when no pending write has shown up for
/// this long.
pub const QUIET: Duration = Duration::from_secs(10);
/// How long the demo waits for the upgrade.
pub const UPGRADE_PATIENCE: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct Write1 {
    pub key: String,
    pub value: String,
    pub height: u64,
}

/// Sends updates signed for `network` round-robin to `urls` at `rate` per second until
/// `stop` or the deadline; each accepted one `(key, value)` goes to `accepted` (for
/// [`confirm`]).
pub async fn send(
    urls: Vec<String>,
    network: NetworkId,
    rate: u64,
    run: u64,
    stop: Arc<AtomicBool>,
    deadline: Option<Instant>,
    accepted: mpsc::UnboundedSender<(String, String)>,
) -> Sent {
    let mut sent = Sent::default();
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    else {
        return sent;
    };
    let user = Ed25519KeyPair::from_seed(&[(run % 251) as u8 + 1; 32]);
    let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut tick = tokio::time::interval(period);
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        tick.tick().await;
        n += 1;
        let key = format!("w-{run}-{n}");
        let value = format!("value-{n}");
        let m = sign(
            &user,
            network,
            n,
            Operation::Put {
                key: key.clone(),
                value: value.clone().into_bytes(),
            },
        );
        let url = &urls[n as usize % urls.len()];
        sent.sent += 1;
        if submit(&client, url, &m).await.is_ok() {
            sent.accepted += 1;
            let _ = accepted.send((key, value));
        }
    }
    sent
}

/// How many updates [`send`] sent, and how many of them a replica accepted. A loaded
/// machine sends fewer than the rate asks: each is sent after the last one's answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    pub sent: u64,
    pub accepted: u64,
}

/// An update of `user` signed for `network`, valid for two minutes.
pub fn sign(
    user: &Ed25519KeyPair,
    network: NetworkId,
    nonce: u64,
    operation: Operation,
) -> SignedIngress {
    SignedIngress::sign(
        Ingress {
            network,
            sender: user.public_key(),
            nonce,
            expiry_ns: replica::now_ns() + 120_000_000_000,
            operation,
        },
        user,
    )
}

/// Submits an update; the replica's reason when it refuses.
pub async fn submit(client: &reqwest::Client, url: &str, m: &SignedIngress) -> Result<(), String> {
    crate::replica(client, url)
        .update(m)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The accepted writes that became readable, each with the certified height it was first
/// read at. Runs beside [`send`]: it takes accepted writes as they come and asks the
/// nodes in turn (one being down does not stall it) until sending has ended and nothing
/// pending has shown up for [`QUIET`]. A write not readable within [`CONFIRM_PATIENCE`]
/// of its acceptance was never acknowledged (say, still in a pool when a release halted
/// and expired before the next one ran it).
pub async fn confirm(
    urls: Vec<String>,
    mut accepted: mpsc::UnboundedReceiver<(String, String)>,
) -> Vec<Write1> {
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    else {
        return Vec::new();
    };
    let mut pending: Vec<(Instant, String, String)> = Vec::new();
    let mut out = Vec::new();
    let mut sending = true;
    let mut last_progress = Instant::now();
    let mut turn = 0usize;
    loop {
        loop {
            match accepted.try_recv() {
                Ok((k, v)) => pending.push((Instant::now(), k, v)),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    if sending {
                        last_progress = Instant::now();
                    }
                    sending = false;
                    break;
                }
            }
        }
        if !sending && (pending.is_empty() || last_progress.elapsed() > QUIET) {
            return out;
        }
        let mut still = Vec::new();
        for (at, key, value) in pending {
            if at.elapsed() > CONFIRM_PATIENCE {
                continue;
            }
            turn = turn.wrapping_add(1);
            let url = &urls[turn % urls.len()];
            match crate::replica(&client, url).query(&key).await {
                // Certified: an answer without a certificate is the executed state only.
                Ok(a) if a.value.as_deref() == Some(value.as_str()) && a.certificate.is_some() => {
                    out.push(Write1 {
                        key,
                        value,
                        height: a.certified_height,
                    });
                    last_progress = Instant::now();
                }
                _ => still.push((at, key, value)),
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// What checking acknowledged writes on every node found.
#[derive(Debug, Default)]
pub struct Verified {
    /// `key at url` for each write a node does not return.
    pub lost: Vec<String>,
    /// `key at url: reason` for each write a node returns whose witness or certificate
    /// does not verify under the subnet's public key.
    pub unverified: Vec<String>,
    /// `key at url` for each write a node on state schema 2 or later returns without its
    /// checksum, or with a wrong one (the migration did not reach it).
    pub unmigrated: Vec<String>,
    /// Each node's state schema, as its replica reports it (`None`: no answer).
    pub schemas: Vec<Option<u64>>,
}

/// Queries in flight per node while checking writes: enough to hide a link's round trip,
/// few enough not to queue behind a replica's request channel.
const VERIFY_IN_FLIGHT: usize = 16;

/// Checks every acknowledged write on every node in `urls`: its value, its witness and
/// certificate under `subnet_key` (`replica::certified::verify_read`), and on a node
/// whose state is in schema 2 or later, the checksum stored with it. The nodes are asked
/// at once, each with [`VERIFY_IN_FLIGHT`] queries in flight; a certificate is checked
/// once per node however many answers carry it (one per certified height).
pub async fn verify(
    urls: &[String],
    writes: &[Write1],
    subnet_key: &crypto::bls::BlsPublicKey,
) -> Verified {
    let mut out = Verified::default();
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    else {
        out.lost.push("no HTTP client".into());
        return out;
    };
    let nodes = futures_util::future::join_all(
        urls.iter()
            .map(|u| verify_node(&client, u, writes, subnet_key)),
    )
    .await;
    for n in nodes {
        out.schemas.extend(n.schemas);
        out.lost.extend(n.lost);
        out.unverified.extend(n.unverified);
        out.unmigrated.extend(n.unmigrated);
    }
    out
}

/// [`verify`] on one node.
async fn verify_node(
    client: &reqwest::Client,
    u: &str,
    writes: &[Write1],
    subnet_key: &crypto::bls::BlsPublicKey,
) -> Verified {
    use futures_util::StreamExt;
    let replica = crate::replica(client, u);
    let schema = replica
        .status()
        .await
        .ok()
        .map(|s| u64::from(s.state_schema));
    let mut out = Verified {
        schemas: vec![schema],
        ..Verified::default()
    };
    // Certificates whose signature verified, whole (a signature reused with other
    // contents is a different entry).
    let mut good_certificates: HashSet<String> = HashSet::new();
    let mut answers = futures_util::stream::iter(writes)
        .map(|w| {
            let replica = &replica;
            async move { (w, replica.query(&w.key).await) }
        })
        .buffered(VERIFY_IN_FLIGHT);
    while let Some((w, answer)) = answers.next().await {
        let a = match answer {
            Ok(a) if a.value.as_deref() == Some(w.value.as_str()) => a,
            _ => {
                out.lost.push(format!("{} at {u}", w.key));
                continue;
            }
        };
        let checked = replica::certified::verify_witness(&a).and_then(|(_, cert)| {
            let whole = serde_json::to_string(cert).unwrap_or_default();
            if good_certificates.contains(&whole) {
                return Ok(());
            }
            replica::certified::verify_certificate(cert, subnet_key)?;
            good_certificates.insert(whole);
            Ok(())
        });
        if let Err(e) = checked {
            out.unverified.push(format!("{} at {u}: {e}", w.key));
        }
        if schema.is_some_and(|s| s >= 2) {
            let want = hex::encode(replica::state::value_checksum(w.value.as_bytes()));
            if a.checksum.as_deref() != Some(want.as_str()) {
                out.unmigrated.push(format!("{} at {u}", w.key));
            }
        }
    }
    out
}

pub fn read_lines(path: &Path) -> Result<Vec<Write1>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l)
                .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?;
            match (v["key"].as_str(), v["value"].as_str()) {
                (Some(k), Some(val)) => Ok(Write1 {
                    key: k.to_string(),
                    value: val.to_string(),
                    height: v["height"].as_u64().unwrap_or(0),
                }),
                _ => Err(format!(
                    "{} line {}: needs \"key\" and \"value\" strings",
                    path.display(),
                    i + 1
                )),
            }
        })
        .collect()
}

pub fn write_lines(out: &Path, writes: &[Write1]) -> Result<(), String> {
    let mut f = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    for w in writes {
        writeln!(
            f,
            "{}",
            json!({"key": w.key, "value": w.value, "height": w.height})
        )
        .map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(())
}

//! The orchestrator's loop: replicate the registry, collect CUPs, [`decide`], act. Every
//! tick is retried from scratch: a failed step is logged and reported in `/status`, and
//! nothing panics (a node that stops deciding is a node that stops upgrading).

use crate::{
    config::NodeConfig,
    decide::{Decision, Local, decide},
    process::{Launch, Supervisor, orchestrator_binary, replica_binary},
    server::{CupRequest, CupView, Shared, StatusView, UpgradeView, verify_answer},
};
use cup::Cup;
use registry::{
    client::RegistryClient,
    local::subnet_at,
    records::{RegistryRecord, ReplicaVersionRecord, keys},
    replicator::Replicator,
    store::{RegistryStore, RocksStore},
};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use types::{NodeId, ReplicaVersion};

/// The most bytes of a CUP a peer may send.
pub const MAX_CUP_BYTES: usize = cup::MAX_CUP_BYTES;
/// How long one peer CUP request may take.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// A peer that failed is asked again after this long, doubling up to the maximum.
pub const PEER_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const PEER_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The largest release package.
pub const MAX_PACKAGE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// A failed download is retried after this long, doubling up to the maximum.
pub const DOWNLOAD_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const DOWNLOAD_BACKOFF_MAX: Duration = Duration::from_secs(120);
/// Images kept besides the current and previous ones.
pub const KEEP_IMAGES: usize = 3;
/// The longest a new release's rehearsal (`replica --check`) may take.
pub const REHEARSAL_TIMEOUT: Duration = Duration::from_secs(60);
/// A release that refused this node's state is rehearsed again after this long.
pub const REHEARSAL_RETRY: Duration = Duration::from_secs(20);

/// Where the best CUP is kept.
pub fn cup_path(node_dir: &Path) -> PathBuf {
    node_dir.join("cup.cup")
}

#[derive(Debug, Default)]
struct PeerBackoff {
    wait: Duration,
    until: Option<Instant>,
}

pub struct Orchestrator {
    node_dir: PathBuf,
    images: PathBuf,
    cfg: NodeConfig,
    node_id: NodeId,
    version: ReplicaVersion,
    store: Mutex<RocksStore>,
    replicators: Vec<Replicator>,
    http: reqwest::Client,
    supervisor: Supervisor,
    peers: BTreeMap<NodeId, PeerBackoff>,
    shared: Arc<Shared>,
    upgrade_state: &'static str,
    upgrade_target: Option<ReplicaVersion>,
    last_error: Option<String>,
    /// Peers' CUPs from the latest round.
    peer_cups: Vec<Cup>,
    /// The best local CUP this tick read from disk (or persisted since), for `/status`.
    best_seen: Option<Cup>,
    /// Per version: the current wait after a failed download, and until when.
    download_backoff: BTreeMap<ReplicaVersion, (Duration, Instant)>,
    /// Per version: a refused rehearsal, and when to rehearse again.
    refused: BTreeMap<ReplicaVersion, Instant>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Orchestrator({} at {})", self.node_id, self.version)
    }
}

impl Orchestrator {
    pub fn new(
        node_dir: &Path,
        cfg: NodeConfig,
        version: ReplicaVersion,
    ) -> Result<(Self, Arc<Shared>), String> {
        let key = crypto::ed25519::Ed25519KeyPair::read_from_file(&node_dir.join("node.key"))
            .map_err(|e| format!("{}: {e}", node_dir.join("node.key").display()))?;
        let node_id = key.node_id();
        let store = RocksStore::open(&node_dir.join("registry"))
            .map_err(|e| format!("the node-local registry copy: {e}"))?;
        let root = cfg.root_key();
        let replicators = cfg
            .registry_urls
            .iter()
            .map(|u| {
                let c = RegistryClient::new(u, root).map_err(|e| format!("{u}: {e}"))?;
                Replicator::new(c, root.is_some()).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, String>>()?;
        let http = reqwest::Client::builder()
            .timeout(PEER_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let images = node_dir.join(&cfg.images_dir);
        let shared = Arc::new(Shared {
            status: Mutex::new(StatusView {
                node_id,
                subnet_id: None,
                running_version: version.clone(),
                replica_pid: None,
                registry_version: store.latest_version(),
                cup: None,
                upgrade: UpgradeView {
                    state: "idle",
                    target_version: None,
                    last_error: None,
                },
                decision: "starting".into(),
            }),
            counters: Mutex::new(Default::default()),
            best_cup: Mutex::new(read_cup(&cup_path(node_dir))),
            node_key: key,
            members: Mutex::new(BTreeMap::new()),
        });
        let grace = Duration::from_millis(cfg.replica_stop_grace_ms);
        Ok((
            Self {
                node_dir: node_dir.to_path_buf(),
                images,
                cfg,
                node_id,
                version,
                store: Mutex::new(store),
                replicators,
                http,
                supervisor: Supervisor::new(grace),
                peers: BTreeMap::new(),
                shared: shared.clone(),
                upgrade_state: "idle",
                upgrade_target: None,
                last_error: None,
                peer_cups: Vec::new(),
                download_backoff: BTreeMap::new(),
                refused: BTreeMap::new(),
                best_seen: None,
            },
            shared,
        ))
    }

    /// Runs ticks until `stop` fires; then stops the replica.
    pub async fn run(mut self, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.poll_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.supervisor.stop_leftover(&self.node_dir).await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => break,
            }
            if let Some(exec) = self.tick().await {
                // Re-execute into the new version's orchestrator. Only returns on error.
                let err = exec_into(&exec, &self.node_dir);
                self.fail(format!("cannot execute {}: {err}", exec.display()));
                self.upgrade_state = "failed";
            }
            self.publish();
        }
        self.supervisor.stop().await;
    }

    fn fail(&mut self, e: String) {
        tracing::warn!(error = %e, "orchestrator step failed; retrying next tick");
        self.last_error = Some(e);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RocksStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One round. Returns an orchestrator binary to re-execute into.
    async fn tick(&mut self) -> Option<PathBuf> {
        self.replicate().await;
        let local_cup = self.local_cup();
        self.best_seen = local_cup.clone();
        if let Some(c) = &local_cup {
            self.ask_peers(c).await;
        }
        let local = Local {
            node_id: self.node_id,
            running_version: self.version.clone(),
            cup: local_cup,
        };
        let decision = {
            let store = self.lock();
            decide(&local, &self.peer_cups, &*store)
        };
        self.act(decision).await
    }

    async fn replicate(&mut self) {
        for r in &self.replicators {
            match r.poll_once(&self.store).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "registry poll failed");
                }
            }
        }
        if let Ok(mut c) = self.shared.counters.lock() {
            c.registry_poll_failures += 1;
        }
    }

    /// The best CUP this node has: the persisted one or the newest its replica made.
    fn local_cup(&self) -> Option<Cup> {
        let mut all: Vec<Cup> = read_cup(&cup_path(&self.node_dir)).into_iter().collect();
        if let Ok(entries) = std::fs::read_dir(self.node_dir.join("cups")) {
            let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            names.sort();
            if let Some(c) = names.iter().rev().find_map(|p| read_cup(p)) {
                all.push(c);
            }
        }
        all.into_iter().max_by_key(|c| {
            let p = c.param();
            (p.height, p.registry_version)
        })
    }

    /// Asks the subnet's other members for a newer CUP (each with its own backoff).
    async fn ask_peers(&mut self, mine: &Cup) {
        let subnet = mine.content().subnet_id;
        let members = {
            let store = self.lock();
            let latest = store.latest_version();
            match subnet_at(&*store, &subnet, latest) {
                Ok(s) => s.members,
                Err(_) => return,
            }
        };
        if let Ok(mut keys) = self.shared.members.lock() {
            *keys = members
                .iter()
                .map(|m| (m.node_id, m.ed25519_public_key))
                .collect();
        }
        let req = CupRequest::signed(
            mine.content().height.get(),
            mine.content().registry_version.get(),
            &self.shared.node_key,
            unix_ms() * 1_000_000,
        );
        self.peer_cups.clear();
        // All peers at once: one slow peer (say, one re-executing) costs one timeout,
        // not one per peer, before this node can act on what the others said.
        let mut asks = tokio::task::JoinSet::new();
        for m in members.iter().filter(|m| m.node_id != self.node_id) {
            let b = self.peers.entry(m.node_id).or_default();
            if b.until.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            let url = format!("http://{}/_/catch_up_package", m.cup_address);
            let (http, req, node, key) = (
                self.http.clone(),
                req.clone(),
                m.node_id,
                m.ed25519_public_key,
            );
            asks.spawn(async move {
                let answer = async {
                    let r = http.post(&url).json(&req).send().await?;
                    let status = r.status();
                    let signature = r
                        .headers()
                        .get("x-node-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let bytes = r.bytes().await?;
                    Ok::<_, reqwest::Error>((status, signature, bytes))
                }
                .await;
                (node, key, answer)
            });
        }
        while let Some(joined) = asks.join_next().await {
            let Ok((node, key, answer)) = joined else {
                continue;
            };
            let b = self.peers.entry(node).or_default();
            match answer {
                // Only the node asked may answer: its registry key signs the body.
                Ok((s, signature, bytes))
                    if s.is_success() && verify_answer(&bytes, &signature, &key) =>
                {
                    b.wait = Duration::ZERO;
                    b.until = None;
                    if s == reqwest::StatusCode::OK
                        && bytes.len() <= MAX_CUP_BYTES
                        && let Ok(c) = Cup::decode(&bytes)
                    {
                        // Only signed CUPs count from peers; decide verifies them.
                        if matches!(c, Cup::Signed(_)) {
                            self.peer_cups.push(c);
                        }
                    }
                }
                _ => {
                    b.wait = (b.wait * 2).clamp(PEER_BACKOFF_MIN, PEER_BACKOFF_MAX);
                    b.until = Some(Instant::now() + b.wait);
                }
            }
        }
    }

    async fn act(&mut self, decision: Decision) -> Option<PathBuf> {
        if let Ok(mut s) = self.shared.status.lock() {
            s.decision = format!("{decision:?}").chars().take(200).collect();
        }
        match decision {
            Decision::Unassigned => {
                self.supervisor.stop().await;
                None
            }
            Decision::Wait { reason } => {
                tracing::debug!(%reason, "waiting");
                None
            }
            Decision::Leave { subnet, wipe } => {
                tracing::info!(%subnet, wipe, "left the subnet: stopping the replica");
                self.supervisor.stop().await;
                if wipe {
                    for d in ["replica", "cups"] {
                        let _ = std::fs::remove_dir_all(self.node_dir.join(d));
                    }
                    let _ = std::fs::remove_file(cup_path(&self.node_dir));
                    if let Ok(mut b) = self.shared.best_cup.lock() {
                        *b = None;
                    }
                }
                None
            }
            Decision::Run {
                cup,
                version,
                prefetch,
                ..
            } => {
                if let Err(e) = self.persist_best(&cup) {
                    self.fail(e);
                    return None;
                }
                if let Some(next) = prefetch
                    && !self.download_wait(&next)
                    && let Err(e) = self.prepare(&next).await
                {
                    self.fail(format!("downloading {next} ahead: {e}"));
                }
                if self.upgrade_target.is_none() {
                    self.upgrade_state = "idle";
                }
                let launch = Launch {
                    binary: replica_binary(&self.images, &version),
                    node_dir: self.node_dir.clone(),
                    version,
                    cup: cup_path(&self.node_dir),
                    cup_height: cup.content().height,
                };
                let before = self.supervisor.restarts;
                if let Err(e) = self.supervisor.ensure(&launch) {
                    self.fail(e);
                }
                if self.supervisor.restarts > before
                    && let Ok(mut c) = self.shared.counters.lock()
                {
                    c.replica_restarts = self.supervisor.restarts;
                }
                None
            }
            Decision::Upgrade { cup, version, .. } => {
                if let Err(e) = self.persist_best(&cup) {
                    self.fail(e);
                    return None;
                }
                self.upgrade_target = Some(version.clone());
                if self.download_wait(&version)
                    || self
                        .refused
                        .get(&version)
                        .is_some_and(|t| Instant::now() < *t)
                {
                    // A failed download or a refused rehearsal is retried later; state
                    // and error stay.
                    return None;
                }
                self.upgrade_state = "downloading";
                if let Err(e) = self.prepare(&version).await {
                    self.upgrade_state = "failed";
                    self.fail(format!("preparing {version}: {e}"));
                    return None;
                }
                // The rehearsal: the new release checks it can start from this node's CUP
                // and state, writing nothing, while the running replica stays up.
                if let Err(e) = self.rehearse(&version).await {
                    self.upgrade_state = "failed";
                    tracing::error!(
                        from = %self.version,
                        to = %version,
                        reason = %e,
                        "refused the upgrade: the new release cannot start from this node's state; the running replica and the state stay as they are"
                    );
                    self.fail(format!("refused {version}: {e}"));
                    self.refused
                        .insert(version, Instant::now() + REHEARSAL_RETRY);
                    return None;
                }
                self.refused.remove(&version);
                self.upgrade_state = "switching";
                self.publish();
                tracing::info!(from = %self.version, to = %version, "switching versions");
                self.supervisor.stop().await;
                if let Err(e) = release::switch_current(&self.images, &version) {
                    self.upgrade_state = "failed";
                    self.fail(format!("switching to {version}: {e}"));
                    return None;
                }
                if let Ok(mut c) = self.shared.counters.lock() {
                    c.last_switch_unix_ms = unix_ms();
                }
                Some(orchestrator_binary(&self.images, &version))
            }
        }
    }

    /// Runs `version`'s replica with `--check` against the persisted best CUP: every check
    /// a start makes, and whether it can read the state, with nothing written.
    async fn rehearse(&self, version: &ReplicaVersion) -> Result<(), String> {
        let binary = replica_binary(&self.images, version);
        let run = tokio::process::Command::new(&binary)
            .arg("--node-dir")
            .arg(&self.node_dir)
            .arg("--version")
            .arg(version.as_str())
            .arg("--cup")
            .arg(cup_path(&self.node_dir))
            .arg("--check")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(REHEARSAL_TIMEOUT, run)
            .await
            .map_err(|_| {
                format!(
                    "its rehearsal did not finish within {} s",
                    REHEARSAL_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        if out.status.success() {
            let plan = String::from_utf8_lossy(&out.stdout);
            tracing::info!(to = %version, plan = %plan.trim(), "rehearsal passed");
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let reason = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no reason given")
            .trim()
            .trim_start_matches("replica: ")
            .to_string();
        Err(format!("its rehearsal failed ({}): {reason}", out.status))
    }

    /// Keeps `cup` as the best CUP if it is higher than the persisted one.
    fn persist_best(&mut self, cup: &Cup) -> Result<(), String> {
        let path = cup_path(&self.node_dir);
        if read_cup(&path).is_some_and(|c| c.param() == cup.param() && &c == cup) {
            return Ok(());
        }
        let tmp = path.with_extension("tmp");
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&cup.encode()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        self.best_seen = Some(cup.clone());
        if let Ok(mut b) = self.shared.best_cup.lock() {
            *b = Some(cup.clone());
        }
        Ok(())
    }

    /// True while a failed download of `version` waits for its retry.
    fn download_wait(&self, version: &ReplicaVersion) -> bool {
        self.download_backoff
            .get(version)
            .is_some_and(|(_, until)| Instant::now() < *until)
    }

    /// Downloads (or reuses) and unpacks `version`'s package as the registry lists it.
    /// A failure is retried after a backoff that doubles up to [`DOWNLOAD_BACKOFF_MAX`].
    async fn prepare(&mut self, version: &ReplicaVersion) -> Result<PathBuf, String> {
        let image = self.images.join(version.as_str());
        if replica_binary(&self.images, version).exists()
            && orchestrator_binary(&self.images, version).exists()
        {
            return Ok(image);
        }
        if self.download_wait(version) {
            return Err("waiting to retry the download".into());
        }
        let result = self.fetch_and_unpack(version).await;
        match &result {
            Ok(_) => {
                self.download_backoff.remove(version);
            }
            Err(_) => {
                let wait = self
                    .download_backoff
                    .get(version)
                    .map(|(w, _)| *w * 2)
                    .unwrap_or(DOWNLOAD_BACKOFF_MIN)
                    .min(DOWNLOAD_BACKOFF_MAX);
                self.download_backoff
                    .insert(version.clone(), (wait, Instant::now() + wait));
            }
        }
        result
    }

    async fn fetch_and_unpack(&mut self, version: &ReplicaVersion) -> Result<PathBuf, String> {
        let record = {
            let store = self.lock();
            let latest = store.latest_version();
            let bytes = store
                .get(&keys::replica_version(version), latest)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("version {version} is not elected in the registry"))?;
            ReplicaVersionRecord::decode_value(&bytes).map_err(|e| e.to_string())?
        };
        let downloader = release::Downloader::new(Duration::from_secs(30), MAX_PACKAGE_BYTES)
            .map_err(|e| e.to_string())?;
        // Each node starts at a different URL, so one mirror does not take every node.
        let first = self.node_id.as_bytes()[0] as usize;
        let cache = self.node_dir.join("downloads");
        let mut last = 0;
        let mut progress = |p: release::Progress| last = p.bytes;
        let result = downloader
            .fetch(
                &record.release_package_urls,
                first,
                &record.release_package_sha256_hex,
                &cache,
                &mut progress,
            )
            .await;
        if let Ok(mut c) = self.shared.counters.lock() {
            c.bytes_downloaded += last;
            if result.is_err() {
                c.download_failures += 1;
            }
        }
        let package = result.map_err(|e| e.to_string())?;
        let image = release::unpack(&package, version, &self.images).map_err(|e| e.to_string())?;
        // Keep a few images to go back to; never the running or the new one.
        let keep = [self.version.clone(), version.clone()];
        if let Err(e) = release::prune(&self.images, KEEP_IMAGES, &keep) {
            tracing::warn!(error = %e, "pruning old images");
        }
        Ok(image)
    }

    fn publish(&self) {
        let best = self.best_seen.clone();
        if let Ok(mut s) = self.shared.status.lock() {
            s.subnet_id = best.as_ref().map(|c| c.content().subnet_id);
            s.replica_pid = self.supervisor.pid();
            s.registry_version = self.lock().latest_version();
            s.cup = best.as_ref().map(|c| CupView {
                height: c.content().height.get(),
                registry_version: c.content().registry_version.get(),
                replica_version: c.content().replica_version.clone(),
            });
            // The replica's last exit is news too: a version that does not come up shows here.
            let last_error = self
                .last_error
                .clone()
                .or_else(|| self.supervisor.last_exit.clone());
            s.upgrade = UpgradeView {
                state: self.upgrade_state,
                target_version: self.upgrade_target.clone(),
                last_error,
            };
        }
        if let (Some(c), Ok(mut b)) = (best, self.shared.best_cup.lock())
            && b.as_ref().is_none_or(|x| c.param() > x.param())
        {
            *b = Some(c);
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn read_cup(path: &Path) -> Option<Cup> {
    std::fs::read(path).ok().and_then(|b| Cup::decode(&b).ok())
}

/// Replaces this process with `binary --node-dir DIR`; returns only on failure.
fn exec_into(binary: &Path, node_dir: &Path) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(binary)
        .arg("--node-dir")
        .arg(node_dir)
        .exec()
}

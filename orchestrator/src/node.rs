//! The orchestrator's loop: replicate the registry, collect CUPs, [`decide`], act. Every
//! tick is retried from scratch: a failed step is logged and reported in `/status`, and
//! nothing panics (a node that stops deciding is a node that stops upgrading).
//!
//! What may take long runs beside the loop, and the loop picks its result up on a later
//! tick: asking peers for CUPs ([`crate::peers::Round`]) and downloading + unpacking a
//! release ([`crate::fetch::Job`]). So a peer streaming an endless answer or a mirror
//! sending a byte every few seconds never stops the supervisor from restarting a replica
//! that exited: the loop keeps ticking. The rehearsal of a new release (bounded by
//! [`switch::REHEARSAL_TIMEOUT`]) runs in the loop: the subnet is halted then, and the old
//! replica could not restart from the halting CUP anyway.
//!
//! **Only an image whose package hash the registry lists for the decided release is ever
//! executed.** Images are named by their package's SHA-256 (`release` crate docs). The
//! image this orchestrator runs from is checked at start (every file against its
//! manifest; skipped only when the orchestrator that re-executed into it had just
//! verified it, [`VERIFIED_IMAGE_ENV`]); an image unpacked by a job was verified as it
//! was written. A replica is started, and a re-execution made, only from an image in
//! that verified set whose hash and version are the decision's.

use crate::{
    config::NodeConfig,
    decide::{Decision, Local, Release, decide},
    fetch::{DOWNLOAD_LIMITS, Dirs, Job},
    notify::{self, Notifier},
    peers::{self, Backoff, Peer, Round},
    preflight,
    process::{Launch, Supervisor},
    ratelimit::RateLimiter,
    server::{
        CupRequest, CupView, HealthView, Nonce, PreflightView, Shared, StatusView, UpgradeView,
    },
    switch::{self, VERIFIED_IMAGE_ENV},
};
use cup::Cup;
use registry::{
    client::RegistryClient,
    local::subnet_at,
    replicator::Replicator,
    store::{RegistryStore, RocksStore},
};
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use types::{NetworkId, NodeId};

/// A failed download is retried after this long, doubling up to the maximum.
pub const DOWNLOAD_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const DOWNLOAD_BACKOFF_MAX: Duration = Duration::from_secs(120);
/// Images kept besides the current and previous ones.
pub const KEEP_IMAGES: usize = 3;
/// Downloaded packages kept in `DIR/downloads` besides the ones of the running and the
/// target release.
pub const KEEP_DOWNLOADS: usize = 2;
/// A release that refused this node's state is rehearsed again after this long.
pub const REHEARSAL_RETRY: Duration = Duration::from_secs(20);
/// The most entries of `DIR/cups` looked at for the newest CUP.
const MAX_CUPS_DIR_ENTRIES: usize = 4096;

/// Where the best CUP is kept.
pub fn cup_path(node_dir: &Path) -> PathBuf {
    node_dir.join("cup.cup")
}

pub struct Orchestrator {
    node_dir: PathBuf,
    images: PathBuf,
    cfg: NodeConfig,
    node_id: NodeId,
    network: NetworkId,
    /// The image this orchestrator runs from (`images/current` at start).
    image: release::Image,
    store: Mutex<RocksStore>,
    replicators: Vec<Replicator>,
    http: reqwest::Client,
    downloader: release::Downloader,
    supervisor: Supervisor,
    /// The launch of the latest `Run`: kept alive at the start of every tick.
    launch: Option<Launch>,
    peers: BTreeMap<NodeId, Backoff>,
    round: Option<Round>,
    job: Option<Job>,
    /// Package hashes whose images this process checked file by file (or unpacked).
    verified: BTreeSet<String>,
    shared: Arc<Shared>,
    upgrade_state: &'static str,
    upgrade_target: Option<Release>,
    last_error: Option<String>,
    image_check_ms: u64,
    /// Peers' CUPs from the latest finished round.
    peer_cups: Vec<Cup>,
    /// The best local CUP this tick read from disk (or persisted since), for `/status`.
    best_seen: Option<Cup>,
    /// Per package: the current wait after a failed download, and until when.
    download_backoff: BTreeMap<String, (Duration, Instant)>,
    /// Per package: a refused rehearsal, and when to rehearse again.
    refused: BTreeMap<String, Instant>,
    /// The preflight of the deployed release running beside the loop.
    preflight_job: Option<preflight::Job>,
    /// The latest finished preflight, and when it finished.
    preflight_done: Option<(PreflightView, Instant)>,
    /// The latest failed download: its package and why.
    download_error: Option<(String, String)>,
    notifier: Notifier,
    /// Steps already posted, by step and what they are about (each is posted once).
    notified: BTreeSet<(&'static str, String)>,
    /// This process was re-executed into by the previous release's orchestrator.
    just_switched: bool,
    /// After a switch, until a CUP above it: the CUP height switched at, and the
    /// replica restarts then (more restarts before a newer CUP: unhealthy).
    watching_health: Option<(u64, u64)>,
    /// `/status`'s `upgrade.health`, once this process switched.
    health: Option<HealthView>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Orchestrator({} at {} {})",
            self.node_id, self.image.version, self.image.package_sha256
        )
    }
}

impl Orchestrator {
    /// An orchestrator running from `image` (the one `images/current` names).
    pub fn new(
        node_dir: &Path,
        cfg: NodeConfig,
        image: release::Image,
    ) -> Result<(Self, Arc<Shared>), String> {
        let key = crypto::ed25519::Ed25519KeyPair::read_from_file(&node_dir.join("node.key"))
            .map_err(|e| format!("{}: {e}", node_dir.join("node.key").display()))?;
        let node_id = key.node_id();
        let root = cfg.root_key();
        let network = root
            .map(|k| NetworkId::from_registry_root_key(k.as_bytes()))
            .ok_or("node.toml: registry_root_key is not a public key")?;
        let store = RocksStore::open(&node_dir.join("registry"))
            .map_err(|e| format!("the node-local registry copy: {e}"))?;
        let replicators = cfg
            .registry_urls
            .iter()
            .map(|u| {
                let c = RegistryClient::new(u, root).map_err(|e| format!("{u}: {e}"))?;
                Replicator::new(c, root.is_some()).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, String>>()?;
        let http = reqwest::Client::builder()
            .timeout(peers::PEER_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let mut downloader =
            release::Downloader::with_limits(DOWNLOAD_LIMITS).map_err(|e| e.to_string())?;
        if let Some(ca) = &cfg.tls_extra_ca_file {
            downloader = downloader
                .with_extra_roots(&node_dir.join(ca))
                .map_err(|e| e.to_string())?;
        }
        let images = node_dir.join(&cfg.images_dir);
        let shared = Arc::new(Shared {
            status: Mutex::new(StatusView {
                node_id,
                subnet_id: None,
                running_version: image.version.clone(),
                running_package_sha256: image.package_sha256.clone(),
                image_check_ms: 0,
                replica_pid: None,
                registry_version: store.latest_version(),
                cup: None,
                upgrade: UpgradeView {
                    state: "idle",
                    target_version: None,
                    last_error: None,
                    target_package_sha256: None,
                    download: None,
                    preflight: None,
                    health: None,
                },
                decision: "starting".into(),
            }),
            counters: Mutex::new(Default::default()),
            best_cup: Mutex::new(read_cup(&cup_path(node_dir))),
            node_key: key,
            network,
            members: Mutex::new(BTreeMap::new()),
            limiter: Mutex::new(RateLimiter::default()),
            started: std::time::Instant::now(),
        });
        let grace = Duration::from_millis(cfg.replica_stop_grace_ms);
        let notifier = Notifier::start(&cfg.webhooks)?;
        Ok((
            Self {
                node_dir: node_dir.to_path_buf(),
                images,
                cfg,
                node_id,
                network,
                image,
                store: Mutex::new(store),
                replicators,
                http,
                downloader,
                supervisor: Supervisor::new(grace),
                launch: None,
                peers: BTreeMap::new(),
                round: None,
                job: None,
                verified: BTreeSet::new(),
                shared: shared.clone(),
                upgrade_state: "idle",
                upgrade_target: None,
                last_error: None,
                image_check_ms: 0,
                peer_cups: Vec::new(),
                download_backoff: BTreeMap::new(),
                refused: BTreeMap::new(),
                preflight_job: None,
                preflight_done: None,
                download_error: None,
                notifier,
                notified: BTreeSet::new(),
                just_switched: false,
                watching_health: None,
                health: None,
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
        self.check_own_image().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => break,
            }
            if let Some((binary, sha256)) = self.tick().await {
                // The queued steps would die with this process.
                self.notifier.flush(Duration::from_secs(2)).await;
                // Re-execute into the new release's orchestrator. Only returns on error.
                let err = switch::exec_into(&binary, &self.node_dir, &sha256);
                self.fail(format!("cannot execute {}: {err}", binary.display()));
                self.upgrade_state = "failed";
            }
            self.publish();
        }
        self.supervisor.stop().await;
    }

    /// Checks the image this orchestrator runs from, before any replica starts from it:
    /// every file against its manifest, unless the orchestrator that re-executed into
    /// it verified exactly this image a moment ago.
    async fn check_own_image(&mut self) {
        let sha = self.image.package_sha256.clone();
        let inherited = std::env::var(VERIFIED_IMAGE_ENV).ok();
        let started = Instant::now();
        let checked = if inherited.as_deref() == Some(sha.as_str()) {
            release::inspect_image(&self.images, &sha).map(|_| ())
        } else {
            let (images, version, sha) =
                (self.images.clone(), self.image.version.clone(), sha.clone());
            tokio::task::spawn_blocking(move || {
                release::verify_image(&images, &sha, &version).map(|_| ())
            })
            .await
            .unwrap_or_else(|e| {
                Err(release::ReleaseError::ImageMismatch {
                    image: self.image.dir.clone(),
                    reason: e.to_string(),
                })
            })
        };
        self.image_check_ms = started.elapsed().as_millis() as u64;
        match checked {
            Ok(()) => {
                tracing::info!(
                    package = %sha,
                    version = %self.image.version,
                    image_check_ms = self.image_check_ms,
                    inherited = inherited.is_some(),
                    "the running image is intact"
                );
                self.just_switched = inherited.as_deref() == Some(sha.as_str());
                self.verified.insert(sha);
            }
            Err(e) => {
                // Nothing runs from it; the release is fetched and unpacked again.
                tracing::error!(error = %e, "the running image failed its check: no replica starts from it");
                self.fail(format!("the running image failed its check: {e}"));
            }
        }
    }

    /// Posts an upgrade step to the webhooks, once per step and `key`.
    fn step(
        &mut self,
        step: &'static str,
        version: &types::ReplicaVersion,
        key: &str,
        detail: String,
    ) {
        if self.notified.len() > 1024 {
            self.notified.clear();
        }
        if !self.notified.insert((step, key.to_string())) {
            return;
        }
        let subnet = self.best_seen.as_ref().map(|c| c.content().subnet_id);
        self.notifier.notify(notify::Event {
            node: self.node_id,
            subnet,
            version: Some(version.clone()),
            step,
            time_unix_ms: unix_ms(),
            detail,
        });
    }

    fn fail(&mut self, e: String) {
        tracing::warn!(error = %e, "orchestrator step failed; retrying next tick");
        self.last_error = Some(e);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RocksStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn local(&self, cup: Option<Cup>) -> Local {
        Local {
            node_id: self.node_id,
            running_version: self.image.version.clone(),
            running_package_sha256: self.image.package_sha256.clone(),
            cup,
        }
    }

    /// One round. Returns an orchestrator binary to re-execute into, and its package.
    async fn tick(&mut self) -> Option<(PathBuf, String)> {
        // First of all, whatever else is slow: a replica that exited comes back.
        self.keep_replica_alive();
        self.take_job_result().await;
        self.take_preflight_result().await;
        self.take_round_result().await;
        self.replicate().await;
        let local_cup = self.local_cup();
        self.best_seen = local_cup.clone();
        if let Some(c) = &local_cup {
            self.start_round(c);
        }
        let decision = {
            let store = self.lock();
            decide(&self.local(local_cup), &self.peer_cups, &*store)
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
            let mut names: Vec<PathBuf> = entries
                .take(MAX_CUPS_DIR_ENTRIES)
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "cup"))
                .collect();
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

    /// Starts asking the subnet's other members for a newer CUP, unless a round runs.
    fn start_round(&mut self, mine: &Cup) {
        if self.round.is_some() {
            return;
        }
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
        if let Ok(mut l) = self.shared.limiter.lock() {
            l.retain_members(|n| members.iter().any(|m| &m.node_id == n));
        }
        let now = Instant::now();
        let mut rng = rand::rng();
        let asks: Vec<(Peer, CupRequest)> = members
            .iter()
            .filter(|m| m.node_id != self.node_id)
            .filter(|m| self.peers.entry(m.node_id).or_default().due(now))
            .map(|m| {
                let request = CupRequest::signed(
                    mine.content().height.get(),
                    mine.content().registry_version.get(),
                    self.network,
                    Nonce::random(&mut rng),
                    &self.shared.node_key,
                );
                let peer = Peer {
                    node_id: m.node_id,
                    key: m.ed25519_public_key,
                    url: format!("http://{}/_/catch_up_package", m.cup_address),
                };
                (peer, request)
            })
            .collect();
        if asks.is_empty() {
            return;
        }
        self.round = Some(Round::spawn(self.http.clone(), self.network, asks));
    }

    /// Takes a finished round's CUPs and updates each peer's backoff.
    async fn take_round_result(&mut self) {
        let Some(round) = self.round.as_mut() else {
            return;
        };
        let Some(results) = round.take_if_done().await else {
            return;
        };
        self.round = None;
        let now = Instant::now();
        let mut cups = Vec::new();
        let mut refused = 0;
        for (node, answer) in results {
            let b = self.peers.entry(node).or_default();
            match answer {
                Ok(cup) => {
                    b.succeeded();
                    cups.extend(cup);
                }
                Err(e) => {
                    if e.is_refusal() {
                        refused += 1;
                        tracing::warn!(peer = %node, error = %e, "refused a peer's CUP answer");
                    } else {
                        tracing::debug!(peer = %node, error = %e, "a peer did not answer");
                    }
                    b.failed(now);
                }
            }
        }
        if refused > 0
            && let Ok(mut c) = self.shared.counters.lock()
        {
            c.peer_answers_refused += refused;
        }
        self.peer_cups = cups;
    }

    /// Restarts the replica of the latest `Run` if it exited (after its backoff).
    fn keep_replica_alive(&mut self) {
        let Some(launch) = self.launch.clone() else {
            return;
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
    }

    /// Takes a finished download's result: a verified image, or a failure to retry later.
    async fn take_job_result(&mut self) {
        let Some(job) = self.job.as_mut() else {
            return;
        };
        let Some(result) = job.take_if_done().await else {
            return;
        };
        let bytes = job.bytes();
        let release = job.release.clone();
        self.job = None;
        if let Ok(mut c) = self.shared.counters.lock() {
            c.bytes_downloaded += bytes;
            if result.is_err() {
                c.download_failures += 1;
            }
        }
        match result {
            Ok(()) => {
                tracing::info!(version = %release.version, package = %release.package_sha256, "release unpacked and verified");
                let detail = format!("{bytes} bytes, verified and unpacked");
                self.step(
                    "downloaded",
                    &release.version,
                    &release.package_sha256,
                    detail,
                );
                self.download_backoff.remove(&release.package_sha256);
                self.verified.insert(release.package_sha256.clone());
                self.prune(&release);
            }
            Err(e) => {
                let sha = release.package_sha256.clone();
                self.download_error = Some((sha.clone(), e.to_string()));
                self.step("download_failed", &release.version, &sha, e.to_string());
                let wait = self
                    .download_backoff
                    .get(&sha)
                    .map(|(w, _)| *w * 2)
                    .unwrap_or(DOWNLOAD_BACKOFF_MIN)
                    .min(DOWNLOAD_BACKOFF_MAX);
                self.download_backoff
                    .insert(sha, (wait, Instant::now() + wait));
                self.upgrade_state = "failed";
                self.fail(format!("downloading {}: {e}", release.version));
            }
        }
    }

    /// Keeps a few images and packages to go back to; never the running or the new one.
    fn prune(&self, new: &Release) {
        let keep = [
            self.image.package_sha256.as_str(),
            new.package_sha256.as_str(),
        ];
        if let Err(e) = release::prune(&self.images, KEEP_IMAGES, &keep) {
            tracing::warn!(error = %e, "pruning old images");
        }
        let cache = self.node_dir.join("downloads");
        if let Err(e) = release::prune_downloads(&cache, KEEP_DOWNLOADS, &keep) {
            tracing::warn!(error = %e, "pruning old downloads");
        }
    }

    /// Whether `release`'s image is unpacked and verified by this process.
    fn ready(&self, release: &Release) -> bool {
        self.verified.contains(&release.package_sha256)
            && release::inspect_image(&self.images, &release.package_sha256)
                .is_ok_and(|i| i.version == release.version)
    }

    /// Starts fetching `release` beside the loop unless it is ready, being fetched, or
    /// waiting for a retry. A job for another release is replaced.
    fn ensure_fetching(&mut self, release: &Release) {
        if self.ready(release) {
            return;
        }
        if self.job.as_ref().is_some_and(|j| &j.release == release) {
            return;
        }
        if self
            .download_backoff
            .get(&release.package_sha256)
            .is_some_and(|(_, until)| Instant::now() < *until)
        {
            return;
        }
        if let Some(old) = self.job.take() {
            tracing::info!(old = %old.release.version, new = %release.version, "another release is wanted: dropping the running download");
        }
        // Each node starts at a different URL, so one mirror does not take every node.
        let first = self.node_id.as_bytes()[0] as usize;
        let dirs = Dirs {
            cache: self.node_dir.join("downloads"),
            images: self.images.clone(),
        };
        tracing::info!(version = %release.version, package = %release.package_sha256, "downloading a release beside the loop");
        self.job = Some(Job::spawn(
            release.clone(),
            self.downloader.clone(),
            dirs,
            first,
        ));
    }

    /// The download state of `release` for `/status`.
    fn download_state(&self, release: &Release) -> &'static str {
        if self.ready(release) {
            "ready"
        } else if self
            .download_backoff
            .get(&release.package_sha256)
            .is_some_and(|(_, until)| Instant::now() < *until)
        {
            "failed"
        } else {
            "downloading"
        }
    }

    async fn act(&mut self, decision: Decision) -> Option<(PathBuf, String)> {
        if let Ok(mut s) = self.shared.status.lock() {
            s.decision = format!("{decision:?}").chars().take(200).collect();
        }
        match decision {
            Decision::Unassigned => {
                self.launch = None;
                self.supervisor.stop().await;
                None
            }
            Decision::Wait { reason } => {
                tracing::debug!(%reason, "waiting");
                None
            }
            Decision::Hold { reason, .. } => {
                let running = self.image.version.clone();
                self.step("recalled", &running, "hold", reason.clone());
                if self.launch.is_some() || self.upgrade_state != "recalled" {
                    tracing::error!(%reason, "holding: the release to run was recalled; its replica stops");
                }
                self.launch = None;
                self.supervisor.stop().await;
                self.upgrade_state = "recalled";
                self.upgrade_target = None;
                self.last_error = Some(reason);
                preflight::clear_readiness(&self.node_dir);
                None
            }
            Decision::Leave { subnet, wipe } => {
                tracing::info!(%subnet, wipe, "left the subnet: stopping the replica");
                self.launch = None;
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
                release,
                prefetch,
                ..
            } => {
                if let Err(e) = self.persist_best(&cup) {
                    self.fail(e);
                    return None;
                }
                if !self.ready(&release) {
                    // The running image failed its check: fetch and unpack it again; no
                    // replica starts from it meanwhile.
                    self.launch = None;
                    self.upgrade_target = Some(release.clone());
                    self.ensure_fetching(&release);
                    self.upgrade_state = self.download_state(&release);
                    return None;
                }
                match &prefetch {
                    Some(next) => {
                        self.upgrade_target = Some(next.clone());
                        self.prepare(next);
                    }
                    None => {
                        self.upgrade_state = "idle";
                        self.upgrade_target = None;
                        preflight::clear_readiness(&self.node_dir);
                    }
                }
                self.watch(&cup, &release);
                let image = release::image_dir(&self.images, &release.package_sha256);
                self.launch = Some(Launch {
                    binary: image.join(release::REPLICA_BINARY),
                    node_dir: self.node_dir.clone(),
                    version: release.version.clone(),
                    cup: cup_path(&self.node_dir),
                    cup_height: cup.content().height,
                });
                self.keep_replica_alive();
                None
            }
            Decision::Upgrade { cup, release, .. } => {
                if let Err(e) = self.persist_best(&cup) {
                    self.fail(e);
                    return None;
                }
                let h = cup.content().height;
                let detail = format!("the CUP at height {h} names it ({})", cup.kind_name());
                self.step(
                    "cup_signed",
                    &release.version,
                    &release.package_sha256,
                    detail,
                );
                // The old replica cannot start from the halting CUP: no restarts now.
                self.launch = None;
                self.upgrade_target = Some(release.clone());
                let sha = release.package_sha256.clone();
                if self.refused.get(&sha).is_some_and(|t| Instant::now() < *t) {
                    // A refused rehearsal is retried later; state and error stay.
                    return None;
                }
                if !self.ready(&release) {
                    self.ensure_fetching(&release);
                    self.upgrade_state = self.download_state(&release);
                    return None;
                }
                self.switch(release).await
            }
        }
    }

    /// Gets the release the registry deploys ready before any halt: fetched, verified,
    /// then rehearsed beside the loop; and tells the replica this node's verdict, which
    /// it gossips as its readiness.
    fn prepare(&mut self, next: &Release) {
        let detail = format!("the registry deploys package {}", next.package_sha256);
        self.step("deployed_seen", &next.version, &next.package_sha256, detail);
        self.ensure_fetching(next);
        let sha = &next.package_sha256;
        let (state, ready, reason) = if !self.ready(next) {
            let state = self.download_state(next);
            let reason = match &self.download_error {
                Some((failed, e)) if failed == sha && state == "failed" => {
                    format!("cannot download {}: {e}", next.version)
                }
                _ => format!("downloading {}", next.version),
            };
            (state, false, reason)
        } else {
            let verdict = self
                .preflight_done
                .as_ref()
                .filter(|(v, _)| &v.package_sha256 == sha);
            match verdict {
                Some((v, _)) if v.ok => ("ready", true, "preflight passed".to_string()),
                Some((v, at)) => {
                    let reason = v.reason.clone().unwrap_or_default();
                    if at.elapsed() >= preflight::PREFLIGHT_RETRY {
                        self.start_preflight(next);
                    }
                    ("failed", false, format!("preflight failed: {reason}"))
                }
                None => {
                    self.start_preflight(next);
                    ("preflight", false, "preflight running".to_string())
                }
            }
        };
        self.upgrade_state = state;
        if let Err(e) = preflight::write_readiness(&self.node_dir, &next.version, ready, &reason) {
            self.fail(e);
        }
    }

    /// Starts rehearsing `release` (verified and unpacked) beside the loop, unless it is.
    fn start_preflight(&mut self, release: &Release) {
        if self
            .preflight_job
            .as_ref()
            .is_some_and(|j| &j.release == release)
        {
            return;
        }
        let image = match release::inspect_image(&self.images, &release.package_sha256) {
            Ok(i) => i,
            Err(e) => {
                self.fail(format!("preflight of {}: {e}", release.version));
                return;
            }
        };
        tracing::info!(version = %release.version, "preflight: rehearsing the deployed release beside the loop");
        self.preflight_job = Some(preflight::Job::spawn(
            release.clone(),
            self.node_dir.clone(),
            cup_path(&self.node_dir),
            image,
        ));
    }

    async fn take_preflight_result(&mut self) {
        let Some(job) = self.preflight_job.as_mut() else {
            return;
        };
        let Some(verdict) = job.take_if_done().await else {
            return;
        };
        self.preflight_job = None;
        let (step, detail) = if verdict.ok {
            let ms = verdict
                .migration_ms
                .map(|m| format!(", migration {m} ms"))
                .unwrap_or_default();
            (
                "preflight_passed",
                format!("rehearsed in {} ms{ms}", verdict.elapsed_ms),
            )
        } else {
            (
                "preflight_failed",
                verdict.reason.clone().unwrap_or_default(),
            )
        };
        let key = format!("{} {}", verdict.package_sha256, verdict.finished_unix_ms);
        self.step(step, &verdict.version.clone(), &key, detail);
        if verdict.ok {
            tracing::info!(version = %verdict.version, migration_ms = ?verdict.migration_ms, "preflight passed: this node is ready");
            self.last_error = None;
        } else {
            let reason = verdict.reason.clone().unwrap_or_default();
            tracing::error!(to = %verdict.version, %reason, "refused the upgrade in preflight: this node is not ready for it; the subnet runs on");
            if let Ok(mut c) = self.shared.counters.lock() {
                c.preflight_failures += 1;
            }
            self.fail(format!(
                "refused {} in preflight: {reason}",
                verdict.version
            ));
        }
        self.preflight_done = Some((verdict, Instant::now()));
    }

    /// The steps after a switch or a recovery: `switched` once this release runs,
    /// `healthy` once the subnet made a CUP above the one it switched at, `unhealthy`
    /// if its replica exited before that; `recovered` when a recovery CUP is run from.
    fn watch(&mut self, cup: &Cup, release: &Release) {
        let h = cup.content().height.get();
        let sha = release.package_sha256.clone();
        if let Cup::Registry(r) = cup
            && r.kind == cup::RegistryCupKind::Recovery
        {
            let detail = format!("running from the recovery CUP at height {h}");
            self.step("recovered", &release.version, &format!("{sha} {h}"), detail);
        }
        if self.just_switched {
            self.just_switched = false;
            let detail = format!("running from the CUP at height {h}");
            self.step("switched", &release.version, &sha, detail);
            self.watching_health = Some((h, self.supervisor.restarts));
            self.health = Some(HealthView {
                state: "watching",
                reason: None,
                switched_at_cup_height: h,
                replica_restarts: 0,
                last_exit: None,
            });
        }
        let Some((at, restarts)) = self.watching_health else {
            return;
        };
        let since = self.supervisor.restarts.saturating_sub(restarts);
        let last_exit = self.supervisor.last_exit.clone();
        if h > at {
            self.watching_health = None;
            let detail = format!("the subnet made the CUP at height {h} on this release");
            self.set_health("healthy", Some(detail.clone()), since, last_exit);
            self.step("healthy", &release.version, &sha, detail);
        } else if since > 0 {
            let exit = last_exit.clone().unwrap_or_default();
            let reason = format!("the replica exited: {exit}");
            self.set_health("unhealthy", Some(reason.clone()), since, last_exit);
            self.step("unhealthy", &release.version, &sha, reason);
        }
    }

    fn set_health(
        &mut self,
        state: &'static str,
        reason: Option<String>,
        restarts: u64,
        last_exit: Option<String>,
    ) {
        if let Some(h) = self.health.as_mut() {
            h.state = state;
            h.reason = reason;
            h.replica_restarts = restarts;
            h.last_exit = last_exit;
        }
    }

    /// Rehearses `release` (verified and unpacked) and switches to it: stops the replica,
    /// points `images/current` at it, and returns its orchestrator to re-execute into.
    async fn switch(&mut self, release: Release) -> Option<(PathBuf, String)> {
        let sha = release.package_sha256.clone();
        let image = match release::inspect_image(&self.images, &sha) {
            Ok(i) if i.version == release.version && self.verified.contains(&sha) => i,
            Ok(i) => {
                self.upgrade_state = "failed";
                self.fail(format!(
                    "refused to run image {}: it is version {} and was {}verified by this orchestrator, the registry lists {} for {}",
                    i.dir.display(),
                    i.version,
                    if self.verified.contains(&sha) { "" } else { "not " },
                    sha,
                    release.version
                ));
                return None;
            }
            Err(e) => {
                self.upgrade_state = "failed";
                self.fail(format!("refused to run {}: {e}", release.version));
                return None;
            }
        };
        // The rehearsal: the new release checks it can start from this node's CUP and
        // state, writing nothing, while the running replica stays up.
        if let Err(e) = switch::rehearse(&self.node_dir, &cup_path(&self.node_dir), &image).await {
            self.upgrade_state = "failed";
            tracing::error!(
                from = %self.image.version,
                to = %release.version,
                reason = %e,
                "refused the upgrade: the new release cannot start from this node's state; the running replica and the state stay as they are"
            );
            self.fail(format!("refused {}: {e}", release.version));
            self.refused.insert(sha, Instant::now() + REHEARSAL_RETRY);
            return None;
        }
        self.refused.remove(&sha);
        self.upgrade_state = "switching";
        self.publish();
        tracing::info!(from = %self.image.version, to = %release.version, package = %sha, "switching releases");
        self.supervisor.stop().await;
        if let Err(e) = release::switch_current(&self.images, &sha) {
            self.upgrade_state = "failed";
            self.fail(format!("switching to {}: {e}", release.version));
            return None;
        }
        if let Ok(mut c) = self.shared.counters.lock() {
            c.last_switch_unix_ms = unix_ms();
        }
        Some((image.orchestrator_binary(), sha))
    }

    /// Keeps `cup` as the best CUP if it differs from the persisted one (durably).
    fn persist_best(&mut self, cup: &Cup) -> Result<(), String> {
        let path = cup_path(&self.node_dir);
        if read_cup(&path).is_some_and(|c| &c == cup) {
            return Ok(());
        }
        durable::write(&path, &cup.encode()).map_err(|e| e.to_string())?;
        self.best_seen = Some(cup.clone());
        if let Ok(mut b) = self.shared.best_cup.lock() {
            *b = Some(cup.clone());
        }
        Ok(())
    }

    fn publish(&self) {
        if let Ok(mut c) = self.shared.counters.lock() {
            c.webhook_events_dropped = self.notifier.dropped();
        }
        let best = self.best_seen.clone();
        if let Ok(mut s) = self.shared.status.lock() {
            s.subnet_id = best.as_ref().map(|c| c.content().subnet_id);
            s.replica_pid = self.supervisor.pid();
            s.registry_version = self.lock().latest_version();
            s.image_check_ms = self.image_check_ms;
            s.cup = best.as_ref().map(|c| CupView {
                height: c.content().height.get(),
                registry_version: c.content().registry_version.get(),
                replica_version: c.content().replica_version.clone(),
                state_hash: c.content().state_hash,
            });
            // The replica's last exit is news too: a version that does not come up shows here.
            let last_error = self
                .last_error
                .clone()
                .or_else(|| self.supervisor.last_exit.clone());
            s.upgrade = UpgradeView {
                state: self.upgrade_state,
                target_version: self.upgrade_target.as_ref().map(|r| r.version.clone()),
                last_error,
                target_package_sha256: self
                    .upgrade_target
                    .as_ref()
                    .map(|r| r.package_sha256.clone()),
                download: self.job.as_ref().map(Job::view),
                preflight: self
                    .preflight_done
                    .as_ref()
                    .filter(|(v, _)| {
                        self.upgrade_target
                            .as_ref()
                            .is_some_and(|t| t.package_sha256 == v.package_sha256)
                    })
                    .map(|(v, _)| v.clone()),
                health: self.health.clone(),
            };
        }
        if let (Some(c), Ok(mut b)) = (best, self.shared.best_cup.lock())
            && b.as_ref().is_none_or(|x| c.param() > x.param())
        {
            *b = Some(c);
        }
    }
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn read_cup(path: &Path) -> Option<Cup> {
    // A CUP file is at most a CUP's size; anything larger is not one.
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > cup::MAX_CUP_BYTES as u64 + 4096 {
        return None;
    }
    std::fs::read(path).ok().and_then(|b| Cup::decode(&b).ok())
}

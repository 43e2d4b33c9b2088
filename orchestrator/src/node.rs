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
    decide::{self, Decision, Local, Memo, NOT_IN_COMMITTEE, Release},
    fetch::{DOWNLOAD_LIMITS, Dirs, Job},
    handover::{self, SwitchTimes, Wake},
    joining,
    notify::{self, Notifier},
    peers::{self, Backoff, Peer, Round},
    preflight,
    process::{Launch, Supervisor},
    ratelimit::RateLimiter,
    server::{
        CupRequest, CupView, HealthView, Nonce, PreflightView, Shared, StatusView, UpgradeView,
    },
    sources::Sources,
    switch::{self, VERIFIED_IMAGE_ENV},
    upgrade::Upgrade,
};

mod act;
use crypto::reshare::EncryptionSecretKey;
use cup::Cup;
use registry::{
    local::{member_records, registry_cup, subnet_at, subnet_of},
    store::{RegistryStore, RocksStore},
};
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use types::{NetworkId, NodeId};

/// `encryption.key` in the node directory, if there is one.
fn read_encryption_key(node_dir: &Path) -> Result<Option<EncryptionSecretKey>, String> {
    let path = node_dir.join("encryption.key");
    if !path.exists() {
        return Ok(None);
    }
    let bytes = crypto::key_file::read(&path, 32).map_err(|e| e.to_string())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| format!("{}: not 32 bytes", path.display()))?;
    Ok(Some(EncryptionSecretKey::from_bytes(bytes)))
}

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
    /// Where the registry comes from, tried in turn at each poll.
    sources: Sources,
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
    /// The upgrade's typed state; its effects are carried out by [`Self::apply`].
    upgrade: Upgrade,
    /// The machine's clock: milliseconds since this process started.
    started: Instant,
    last_error: Option<String>,
    image_check_ms: u64,
    /// Peers' CUPs from the latest finished round.
    peer_cups: Vec<Cup>,
    /// The best local CUP this tick read from disk (or persisted since), for `/status`.
    best_seen: Option<Cup>,
    /// Per package: the current wait after a failed download, and until when.
    download_backoff: BTreeMap<String, (Duration, Instant)>,
    /// Per package: a refused rehearsal, and when to rehearse again (the machine's clock).
    refused: BTreeMap<String, u64>,
    /// The preflight of the deployed release running beside the loop.
    preflight_job: Option<preflight::Job>,
    /// The latest finished preflight, and when it finished (the machine's clock).
    preflight_done: Option<(PreflightView, u64)>,
    /// The latest failed download: its package and why.
    download_error: Option<(String, String)>,
    notifier: Notifier,
    /// Whether the current tick was started by the replica's wake-up.
    woken: bool,
    /// The last decision, by its inputs.
    memo: Memo,
    /// A node added to a subnet, checking what the resharing deals it.
    joiner: joining::Joiner,
    /// `encryption.key`: what resharings encrypt this node's values to (absent in node
    /// directories made before resharing).
    encryption: Option<EncryptionSecretKey>,
    /// When the latest CUP round started.
    round_started: Option<Instant>,
    /// The subnet's members at a registry version, as the last round read them.
    members: Option<(
        types::SubnetId,
        types::RegistryVersion,
        Vec<registry::records::NodeRecord>,
    )>,
    /// The stages of this node's last switch: filled in up to the re-execution by the
    /// process that switched, the rest by the one it re-executed into.
    switch_times: Option<SwitchTimes>,
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
        let sources = Sources::new(&cfg)?;
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
                    last_switch: None,
                },
                decision: "starting".into(),
            }),
            metrics: crate::metrics::Metrics::new().map_err(|e| format!("metrics: {e}"))?,
            best_cup: Mutex::new(read_cup(&cup_path(node_dir))),
            node_key: key,
            network,
            members: Mutex::new(BTreeMap::new()),
            limiter: Mutex::new(RateLimiter::default()),
            started: std::time::Instant::now(),
        });
        if let Some(at) =
            release::last_switch(&images).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        {
            shared
                .metrics
                .last_switch_timestamp_seconds
                .set(at.as_secs_f64());
        }
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
                sources,
                http,
                downloader,
                supervisor: Supervisor::new(grace),
                launch: None,
                peers: BTreeMap::new(),
                round: None,
                job: None,
                verified: BTreeSet::new(),
                shared: shared.clone(),
                upgrade: Upgrade::new(false),
                started: Instant::now(),
                last_error: None,
                image_check_ms: 0,
                peer_cups: Vec::new(),
                download_backoff: BTreeMap::new(),
                refused: BTreeMap::new(),
                preflight_job: None,
                preflight_done: None,
                download_error: None,
                notifier,
                best_seen: None,
                woken: false,
                memo: Memo::default(),
                joiner: joining::Joiner::default(),
                encryption: read_encryption_key(node_dir)?,
                round_started: None,
                members: None,
                switch_times: SwitchTimes::from_env().map(|mut t| {
                    t.new_started_unix_ms = Some(unix_ms());
                    t
                }),
            },
            shared,
        ))
    }

    /// Runs ticks until `stop` fires; then stops the replica.
    pub async fn run(mut self, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.poll_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Waited for only when a replica is to start: meanwhile this process checks its
        // image and decides.
        if !self.supervisor.take_leftover(&self.node_dir)
            && let Some(t) = self.switch_times.as_mut()
        {
            // The old replica was gone before this process looked.
            t.old_stopped_unix_ms = Some(unix_ms());
        }
        self.check_own_image().await;
        let mut wake = Wake::bind(&self.node_dir);
        loop {
            self.woken = tokio::select! {
                _ = tick.tick() => false,
                _ = handover::woken(wake.as_mut()) => {
                    tick.reset();
                    true
                }
                _ = &mut stop => break,
            };
            if let Some((binary, sha256)) = self.tick().await {
                // The queued steps would die with this process.
                self.notifier.flush(Duration::from_secs(2)).await;
                // Re-execute into the new release's orchestrator. Only returns on error.
                let times = self.switch_times.as_ref().map(SwitchTimes::to_env);
                let err = switch::exec_into(&binary, &self.node_dir, &sha256, times.as_deref());
                // The old replica was asked to stop for the process that did not start:
                // it must be gone before any replica starts again.
                self.supervisor.stop_leftover(&self.node_dir).await;
                let reason = format!("cannot execute {}: {err}", binary.display());
                self.upgrade.failed(reason.clone());
                self.fail(reason);
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
                self.upgrade = Upgrade::new(inherited.as_deref() == Some(sha.as_str()));
                self.verified.insert(sha);
            }
            Err(e) => {
                // Nothing runs from it; the release is fetched and unpacked again.
                tracing::error!(error = %e, "the running image failed its check: no replica starts from it");
                self.fail(format!("the running image failed its check: {e}"));
            }
        }
    }

    /// Posts an upgrade step to the webhooks (the machine posts each step once).
    fn post(&self, step: &'static str, version: types::ReplicaVersion, detail: String) {
        let subnet = self.best_seen.as_ref().map(|c| c.content().subnet_id);
        self.notifier.notify(notify::Event {
            node: self.node_id,
            subnet,
            version: Some(version),
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
        self.keep_replica_alive().await;
        self.take_job_result().await;
        self.take_preflight_result().await;
        self.take_round_result().await;
        // Right after a re-execution the copy was replicated a moment ago by the process
        // that switched: the new replica starts first, not after a registry round trip.
        let just_switched = self
            .switch_times
            .as_ref()
            .is_some_and(|t| t.replica_started_unix_ms.is_none());
        if !just_switched {
            self.replicate().await;
        }
        let local_cup = self.local_cup();
        self.best_seen = local_cup.clone();
        // A node added to a subnet has no CUP of it yet: it asks from the registry's.
        if let Some(c) = local_cup.clone().or_else(|| self.assigned_registry_cup()) {
            self.start_round(&c);
        }
        let decision = {
            let local = self.local(local_cup.clone());
            let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
            self.memo.decide(&local, &self.peer_cups, &*store)
        };
        if matches!(&decision, Decision::Wait { reason } if reason.contains(NOT_IN_COMMITTEE))
            && self.joiner.due()
        {
            self.join_round(local_cup).await;
        }
        self.act(decision).await
    }

    /// Added to a subnet and not in its committee yet: checks the values the resharing
    /// under way deals this node, and complains about bad ones (`joining`).
    async fn join_round(&mut self, local_cup: Option<Cup>) {
        let Some(key) = self.encryption.clone() else {
            return;
        };
        let round = {
            let store = self.lock();
            let local = self.local(local_cup);
            decide::best_cup(&local, &self.peer_cups, &*store, &decide::BlsCupVerifier)
                .ok()
                .and_then(|(subnet, _, best)| {
                    let at = subnet_at(&*store, &subnet, best.content().registry_version).ok()?;
                    joining::Round::read(&*store, at, &best)
                })
        };
        let Some(round) = round else {
            return;
        };
        let node_key = &self.shared.node_key;
        if let Err(e) = self
            .joiner
            .round(&self.http, &self.store, round, self.node_id, node_key, &key)
            .await
        {
            tracing::debug!(error = %e, "reading the resharing failed; another member next");
        }
    }

    async fn replicate(&mut self) {
        self.sources
            .poll(&self.store, &self.cfg.nns_urls, &self.shared.metrics)
            .await;
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

    /// The registry CUP of the subnet governance assigned this node to, if any.
    fn assigned_registry_cup(&self) -> Option<Cup> {
        let store = self.lock();
        let latest = store.latest_version();
        let subnet = subnet_of(&*store, &self.node_id, latest).ok()??;
        registry_cup(&*store, &subnet, latest)
            .ok()
            .map(Cup::Registry)
    }

    /// Starts asking the subnet's other members for a newer CUP, unless a round runs.
    fn start_round(&mut self, mine: &Cup) {
        if self.round.is_some()
            || self
                .round_started
                .is_some_and(|t| t.elapsed() < peers::ROUND_INTERVAL)
        {
            return;
        }
        self.round_started = Some(Instant::now());
        let subnet = mine.content().subnet_id;
        let latest = self.lock().latest_version();
        // Decoded once per registry version: the records carry BLS keys, each checked
        // as it decodes, and this runs every tick.
        let members = match &self.members {
            Some((s, v, m)) if *s == subnet && *v == latest => m.clone(),
            _ => {
                // The committee and governance's members: a node joining the subnet asks
                // them for the CUP that names it, and is one of them to its peers.
                let read = {
                    let store = self.lock();
                    subnet_at(&*store, &subnet, latest).and_then(|s| {
                        let mut all = s.members.clone();
                        for r in member_records(&*store, &s.record, latest)? {
                            if !all.iter().any(|m| m.node_id == r.node_id) {
                                all.push(r);
                            }
                        }
                        Ok(all)
                    })
                };
                match read {
                    Ok(all) => {
                        self.members = Some((subnet, latest, all.clone()));
                        all
                    }
                    Err(_) => return,
                }
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
        self.shared.metrics.peer_answers_refused.inc_by(refused);
        self.peer_cups = cups;
    }

    /// Restarts the replica of the latest `Run` if it exited (after its backoff), once
    /// a replica an earlier orchestrator left has exited.
    async fn keep_replica_alive(&mut self) {
        let Some(launch) = self.launch.clone() else {
            return;
        };
        if self.supervisor.wait_leftover().await
            && let Some(t) = self.switch_times.as_mut()
            && t.old_stopped_unix_ms.is_none()
        {
            // The previous process asked the old replica to stop and left the wait to
            // this one.
            t.old_stopped_unix_ms = Some(unix_ms());
        }
        let before = self.supervisor.restarts;
        if let Err(e) = self.supervisor.ensure(&launch) {
            self.fail(e);
        }
        // The first time the new release's replica is seen running is when it started.
        if let Some(t) = self.switch_times.as_mut()
            && t.replica_started_unix_ms.is_none()
            && self
                .supervisor
                .running_version()
                .is_some_and(|v| v.as_str() == t.to_version)
        {
            t.replica_started_unix_ms = Some(unix_ms());
        }
        let restarts = &self.shared.metrics.replica_restarts;
        restarts.inc_by(self.supervisor.restarts.saturating_sub(before));
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
        self.shared.metrics.downloaded_bytes.inc_by(bytes);
        if result.is_err() {
            self.shared.metrics.download_failures.inc();
        }
        let fx = self
            .upgrade
            .downloaded(&release, &result.clone().map(|()| bytes));
        self.apply(fx).await;
        match result {
            Ok(()) => {
                tracing::info!(version = %release.version, package = %release.package_sha256, "release unpacked and verified");
                self.download_backoff.remove(&release.package_sha256);
                self.verified.insert(release.package_sha256.clone());
                self.prune(&release);
            }
            Err(e) => {
                let sha = release.package_sha256.clone();
                self.download_error = Some((sha.clone(), e.to_string()));
                let wait = self
                    .download_backoff
                    .get(&sha)
                    .map(|(w, _)| *w * 2)
                    .unwrap_or(DOWNLOAD_BACKOFF_MIN)
                    .min(DOWNLOAD_BACKOFF_MAX);
                self.download_backoff
                    .insert(sha, (wait, Instant::now() + wait));
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
        registry::metrics::catch_up(
            &self.shared.metrics.webhook_events_dropped,
            self.notifier.dropped(),
        );
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
                .or_else(|| self.upgrade.phase().reason().map(str::to_string))
                .or_else(|| self.supervisor.last_exit.clone());
            let target = self.upgrade.target();
            s.upgrade = UpgradeView {
                state: self.upgrade.phase().name(),
                target_version: target.map(|r| r.version.clone()),
                last_error,
                target_package_sha256: target.map(|r| r.package_sha256.clone()),
                download: self.job.as_ref().map(Job::view),
                preflight: self
                    .preflight_done
                    .as_ref()
                    .filter(|(v, _)| target.is_some_and(|t| t.package_sha256 == v.package_sha256))
                    .map(|(v, _)| v.clone()),
                health: self.upgrade.health().map(|h| HealthView {
                    state: h.state.name(),
                    reason: h.reason.clone(),
                    switched_at_cup_height: h.switched_at_cup_height,
                    replica_restarts: h.replica_restarts,
                    last_exit: h.last_exit.clone(),
                }),
                last_switch: self.switch_times.clone(),
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
    let bytes = durable::read_bounded(path, cup::MAX_CUP_BYTES as u64).ok()?;
    Cup::decode(&bytes).ok()
}

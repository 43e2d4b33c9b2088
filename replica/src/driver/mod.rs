//! The tokio driver: real time, the network, the disk and users around the pure
//! consensus core. Every effect of an [`Action`] happens in [`Driver::perform`], in the
//! order the core emitted them: a share is persisted (synced) before it is sent, a block
//! is executed before its state hash is fed back.
//!
//! One task owns everything mutable (core, state, pools); the HTTP handlers talk to it
//! through a bounded channel and read a status snapshot it publishes after every step.

mod catch_up;
mod execute;
mod queries;
mod relay;

use execute::{Queued, storage_unavailable};
use queries::cup_certificates;

use crate::{
    ReplicaError,
    ingress::{
        IngressError, IngressPool, SignedIngress, decode_payload, encode_carryover, encode_payload,
        read_carryover,
    },
    metrics::Metrics,
    node_dir::{NodeDir, ProgressFile},
    now_ns,
    pool_store::PoolStore,
    requests::{RequestState, RequestStatus, Tracker},
    start::{self, MAX_PAYLOAD_BYTES},
    state::{BlockUndo, ReplicatedState},
};
use consensus::{
    Action, Consensus, Delivery, Event, RealCrypto,
    artifact::{Envelope, NodeIndex},
};
use cup::{Cup, SignedCup};
use registry::{
    local::SubnetAt,
    store::{RegistryStore, RocksStore},
};
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::{mpsc, oneshot};
use transport::Transport;
use types::{CryptoHash, Height, NetworkId, NodeId, RegistryVersion, ReplicaVersion, SubnetId};

/// The most user requests waiting for the driver.
pub const MAX_PENDING_REQUESTS: usize = 4096;
/// The most updates in the ingress pool, and their bytes.
pub const MAX_INGRESS_MESSAGES: usize = 20_000;
pub const MAX_INGRESS_BYTES: usize = 64 * 1024 * 1024;
/// Certificates kept for queries (the newest).
pub const MAX_CERTIFICATES: usize = 200;
/// Checkpoints kept on disk (the newest; at least the current CUP's).
pub const MAX_CHECKPOINTS: usize = 3;
/// How often the driver looks for new registry versions and refreshes the payload.
pub const TICK: Duration = Duration::from_millis(100);
/// While storage is unavailable, how often the driver tries again.
pub const STORAGE_RETRY: Duration = Duration::from_secs(1);
/// After a catch-up no peer could serve, how long before the driver tries it again (a
/// newer CUP from a peer is tried at once).
pub const CATCH_UP_RETRY: Duration = Duration::from_secs(1);
/// How long catching up may keep failing before the replica exits with the reason (its
/// orchestrator then starts it again from the newest CUP it can find).
pub const CATCH_UP_PATIENCE: Duration = Duration::from_secs(30);

/// What a certified read of an NNS subnet's registry asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertifiedRegistryRead {
    /// The registry's changes after a version ([`crate::registry_page::RegistryPage`]).
    Changes(RegistryVersion),
    /// Governance's proposals from an id on ([`crate::registry_page::GovernancePage`]).
    Proposals(registry::governance::ProposalId),
}

/// A user request for the driver.
#[derive(Debug)]
pub enum Request {
    Update(
        SignedIngress,
        oneshot::Sender<Result<CryptoHash, UpdateRefused>>,
    ),
    Query(String, oneshot::Sender<QueryAnswer>),
    /// What became of an update; with `wait`, answered once it is certified (or when
    /// the tracker is full).
    Status {
        id: CryptoHash,
        wait: bool,
        reply: oneshot::Sender<RequestStatus>,
    },
    /// A certified page of the registry or of governance (an NNS subnet's), encoded;
    /// `Err`: whether this subnet keeps no registry at all, and why there is none.
    RegistryPage(
        CertifiedRegistryRead,
        oneshot::Sender<Result<Vec<u8>, (bool, String)>>,
    ),
    /// The resharing under way, as this node's chain holds it (`None`: none).
    Resharing(oneshot::Sender<Option<consensus::resharing::ResharingView>>),
    /// A joining receiver's complaint, for the core to check, pool and gossip.
    Complaint(consensus::resharing::SignedComplaint),
}

/// Why an update was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateRefused {
    #[error("subnet is upgrading")]
    Upgrading,
    #[error("{0}")]
    Invalid(IngressError),
}

pub use crate::certified::{Certificate, QueryAnswer};

/// `GET /api/v1/status` (`crate::client::ReplicaClient::status` reads it back).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    pub replica_version: ReplicaVersion,
    pub subnet_id: SubnetId,
    pub node_id: NodeId,
    /// The network updates must be signed for (the registry root key's hash).
    pub network_id: NetworkId,
    pub finalized_height: u64,
    pub certified_height: u64,
    pub executed_height: u64,
    pub cup_height: u64,
    pub state_hash: CryptoHash,
    pub state_schema: u32,
    pub peers_connected: usize,
    pub halting: bool,
    pub halted: bool,
    pub registry_version: RegistryVersion,
    pub ingress_pool: usize,
    /// The first and the newest block with updates in it that this process executed
    /// (null before one): how long a subnet went without executing updates across an
    /// upgrade is the gap between the old release's last and the new release's first.
    pub first_payload: Option<PayloadBlock>,
    pub last_payload: Option<PayloadBlock>,
    /// Set while this node cannot write its state or its shares (a full disk, say): it
    /// executes and signs nothing, answers queries, and resumes when a write succeeds.
    pub storage_error: Option<String>,
    /// The highest finalized height whose notarization or finalization carries this
    /// node's share, since this process started (null before one): whether it takes
    /// part in the subnet or only follows it.
    pub own_share_height: Option<u64>,
    /// Each node's latest word on the release deployed to the subnet: ready (fetched,
    /// verified, rehearsed) or why not. `n - f` ready words let a summary halt for it.
    pub readiness: Vec<ReadinessView>,
}

/// One node's readiness word, as `/status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReadinessView {
    pub node_id: NodeId,
    pub version: ReplicaVersion,
    pub ready: bool,
    pub reason: String,
    /// The node's finalized height when it said so.
    pub height: u64,
}

/// A finalized block with updates in it, and when this node executed it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PayloadBlock {
    pub height: u64,
    pub messages: usize,
    /// Wall clock, milliseconds since the Unix epoch.
    pub executed_at_ms: u64,
}

/// What the HTTP side reads.
#[derive(Debug)]
pub struct Shared {
    pub status: Mutex<StatusView>,
    /// Behind `/metrics`; the driver counts into the same metrics.
    pub metrics: Metrics,
    pub transport: Transport,
    pub dir: NodeDir,
}

pub struct Driver {
    dir: NodeDir,
    version: ReplicaVersion,
    node_id: NodeId,
    network: NetworkId,
    registry: RocksStore,
    subnet: SubnetAt,
    /// Derived from `subnet` (share order), for attributing peers' messages.
    index_of: BTreeMap<NodeId, NodeIndex>,
    core: Consensus<RealCrypto>,
    /// `None` only while catching up replaces it.
    state: Option<ReplicatedState>,
    /// `None` only while a storage retry reopens it.
    pool: Option<PoolStore>,
    ingress: IngressPool,
    /// Per executed height above the newest certified height at or below the executed
    /// one: what the block changed, as it was (values and tree), to answer queries with
    /// witnesses as of the certified height.
    undo: BTreeMap<Height, BlockUndo>,
    certificates: BTreeMap<Height, Certificate>,
    cup_height: Height,
    payload_dirty: bool,
    registry_seen: RegistryVersion,
    transport: Transport,
    shared: Arc<Shared>,
    metrics: Metrics,
    requests: Tracker,
    /// Ids of the updates in valid blocks above the delivered height, per height.
    in_blocks: BTreeMap<Height, BTreeSet<CryptoHash>>,
    first_payload: Option<PayloadBlock>,
    last_payload: Option<PayloadBlock>,
    /// Finalized blocks delivered by the core and not executed yet: more than one only
    /// while storage is unavailable (the core is then paused, so the queue stops growing).
    queued: VecDeque<Queued>,
    /// Why storage is unavailable, while it is.
    storage_error: Option<String>,
    /// An own share whose persist failed: it was not sent, and is persisted then sent
    /// once storage is back.
    unpersisted: Option<Envelope>,
    last_storage_retry: Option<std::time::Instant>,
    /// A peer's CUP (content, signature) to catch up to, and when to try it.
    pending_catch_up: catch_up::PendingCatchUp<(cup::CupContent, Vec<u8>)>,
    /// The height of a CUP made here that names another committee for this release (a
    /// resharing): once halted there, the process exits and its orchestrator starts it
    /// again from that CUP, with the new committee's connections and shares.
    committee_changes_at: Option<Height>,
    /// When this replica last exchanged files with its orchestrator (the readiness verdict
    /// in, its progress out), and the progress it last wrote.
    last_exchange: Option<std::time::Instant>,
    progress_written: Option<ProgressFile>,
    /// Users' updates accepted here and not yet relayed to the peers.
    outgoing: relay::Outgoing,
    /// Users' updates accepted here, to relay again while they wait.
    relay_again: relay::Again,
    /// The executed height this process started at: updates executed at or below it
    /// are known by their replay records only.
    started_at: Height,
}

/// How often the replica reads its orchestrator's readiness verdict and reports its
/// progress: both change on the scale of seconds, the driver ticks every 100 ms.
const EXCHANGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Driver({} at {:?})", self.node_id, self.state)
    }
}

/// Everything [`Driver::new`] needs, checked and opened by the caller.
#[derive(Debug)]
pub struct Parts {
    pub dir: NodeDir,
    pub version: ReplicaVersion,
    pub node_id: NodeId,
    /// The network whose updates this node takes ([`NodeDir::network_id`]).
    pub network: NetworkId,
    pub registry: RocksStore,
    pub subnet: SubnetAt,
    pub cup: Cup,
    pub core: Consensus<RealCrypto>,
    pub state: ReplicatedState,
    pub pool: PoolStore,
    pub transport: Transport,
    pub metrics: Metrics,
}

fn index_of(subnet: &SubnetAt) -> BTreeMap<NodeId, NodeIndex> {
    subnet
        .record
        .committee()
        .iter()
        .enumerate()
        .map(|(i, m)| (*m, i as NodeIndex))
        .collect()
}

impl Driver {
    pub fn new(p: Parts) -> (Self, Arc<Shared>) {
        let index_of = index_of(&p.subnet);
        let c = p.cup.content();
        let certificates = cup_certificates(&p.cup, &p.state);
        let status = StatusView {
            replica_version: p.version.clone(),
            subnet_id: c.subnet_id,
            node_id: p.node_id,
            network_id: p.network,
            finalized_height: c.height.get(),
            certified_height: c.height.get(),
            executed_height: p.state.height().get(),
            cup_height: c.height.get(),
            state_hash: p.state.state_hash(),
            state_schema: p.state.schema(),
            peers_connected: 0,
            halting: false,
            halted: false,
            registry_version: p.registry.latest_version(),
            ingress_pool: 0,
            first_payload: None,
            last_payload: None,
            storage_error: None,
            own_share_height: None,
            readiness: Vec::new(),
        };
        let shared = Arc::new(Shared {
            status: Mutex::new(status),
            metrics: p.metrics.clone(),
            transport: p.transport.clone(),
            dir: p.dir.clone(),
        });
        let registry_seen = p.registry.latest_version();
        let started_at = p.state.height();
        let d = Self {
            dir: p.dir,
            version: p.version,
            node_id: p.node_id,
            network: p.network,
            registry: p.registry,
            subnet: p.subnet,
            index_of,
            core: p.core,
            state: Some(p.state),
            pool: Some(p.pool),
            ingress: IngressPool::new(p.network, MAX_INGRESS_MESSAGES, MAX_INGRESS_BYTES)
                .with_sender_share(crate::ingress::POOL_SHARE_PER_SENDER_DIVISOR),
            undo: BTreeMap::new(),
            certificates,
            cup_height: c.height,
            payload_dirty: true,
            registry_seen,
            transport: p.transport,
            shared: shared.clone(),
            metrics: p.metrics,
            requests: Tracker::new(c.height),
            in_blocks: BTreeMap::new(),
            first_payload: None,
            last_payload: None,
            queued: VecDeque::new(),
            storage_error: None,
            unpersisted: None,
            last_storage_retry: None,
            pending_catch_up: Default::default(),
            committee_changes_at: None,
            last_exchange: None,
            progress_written: None,
            outgoing: relay::Outgoing::default(),
            relay_again: relay::Again::default(),
            started_at,
        };
        (d, shared)
    }

    /// Runs until `shutdown` fires or a fatal error (a disk write failed: continuing
    /// could sign something not persisted).
    pub async fn run(
        mut self,
        mut inbox: mpsc::Receiver<(NodeId, Vec<u8>)>,
        mut requests: mpsc::Receiver<Request>,
        mut shutdown: oneshot::Receiver<()>,
    ) -> Result<(), ReplicaError> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.perform()?;
        let mut requests_open = true;
        loop {
            let deadline = self.core.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(t) => {
                        let wait = t.saturating_sub(crate::clocks().mono_ns);
                        tokio::time::sleep(Duration::from_nanos(wait)).await
                    }
                    None => std::future::pending().await,
                }
            };
            let relay_due = self.outgoing.due();
            let relay = async {
                match relay_due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = relay => self.flush_relay(),
                m = inbox.recv() => match m {
                    Some((from, bytes)) => self.on_message(from, &bytes),
                    None => return Err(ReplicaError::Transport("the transport stopped".into())),
                },
                r = requests.recv(), if requests_open => match r {
                    Some(r) => self.on_request(r),
                    None => requests_open = false,
                },
                _ = sleep, if self.storage_error.is_none() => {
                    self.core.on_event(crate::clocks(), Event::Timer)
                }
                _ = tick.tick() => self.on_tick(),
                _ = &mut shutdown => return Ok(()),
            }
            if let Some(target) = self.perform()? {
                self.pending_catch_up.offer(target);
            }
            if self.core.is_halted()
                && let Some(h) = self.committee_changes_at
                && self.storage_error.is_none()
            {
                tracing::info!(cup_height = %h, "the subnet's committee changes at this CUP: exiting so the orchestrator starts this release again from it");
                return Ok(());
            }
            self.try_pending_catch_up().await?;
            self.publish();
        }
    }

    fn on_message(&mut self, from: NodeId, bytes: &[u8]) {
        let Some(&index) = self.index_of.get(&from) else {
            return;
        };
        // Paused: what the core would make of it could not be written down.
        if self.storage_error.is_some() {
            return;
        }
        match crate::wire::decode_inbound(bytes) {
            Ok(crate::wire::Inbound::Artifact(envelope)) => self.core.on_event(
                crate::clocks(),
                Event::Message {
                    from: index,
                    envelope,
                },
            ),
            Ok(crate::wire::Inbound::Ingress(batch)) => self.on_ingress_batch(batch),
            Err(_) => self.metrics.undecodable_messages.inc(),
        }
    }

    fn on_tick(&mut self) {
        if self.storage_error.is_some() {
            self.retry_storage();
            return;
        }
        // New registry versions, as consensus events.
        if let Ok(latest) = self.registry.catch_up()
            && latest > self.registry_seen
        {
            let from = RegistryVersion::new(self.registry_seen.get() + 1);
            for (version, info) in
                start::registry_events(&self.registry, &self.subnet.record.subnet_id, from)
            {
                self.core
                    .on_event(crate::clocks(), Event::Registry { version, info });
            }
            self.registry_seen = latest;
        }
        if self
            .last_exchange
            .is_none_or(|t| t.elapsed() >= EXCHANGE_INTERVAL)
        {
            self.last_exchange = Some(std::time::Instant::now());
            self.exchange_with_orchestrator();
        }
        if self.payload_dirty {
            self.offer_payload();
        }
        self.relay_waiting_again();
    }

    /// Takes the orchestrator's preflight verdict as this node's readiness (the core signs
    /// and gossips a word only when it changes), and reports this node's own part in
    /// the subnet when it changed.
    fn exchange_with_orchestrator(&mut self) {
        if let Some(r) = self.dir.readiness() {
            self.core.on_event(
                crate::clocks(),
                Event::Readiness {
                    version: r.version,
                    ready: r.ready,
                    reason: r.reason,
                },
            );
        }
        let progress = ProgressFile {
            version: self.core.config().version.clone(),
            own_share_height: self.core.own_share_height().map(|h| h.get()),
        };
        if self.progress_written.as_ref() != Some(&progress) {
            match self.dir.write_progress(&progress) {
                Ok(()) => self.progress_written = Some(progress),
                Err(e) => tracing::warn!(error = %e, "reporting progress to the orchestrator"),
            }
        }
    }

    /// Hands the core the payload for the next block this node makes: the pool's
    /// updates, less those a valid block not yet delivered already carries.
    fn offer_payload(&mut self) {
        self.payload_dirty = false;
        let now = now_ns();
        let in_blocks = &self.in_blocks;
        let selected = self.ingress.select(now, MAX_PAYLOAD_BYTES, |id| {
            in_blocks.values().any(|ids| ids.contains(id))
        });
        self.core
            .on_event(crate::clocks(), Event::Payload(encode_payload(&selected)));
    }

    /// Performs the core's actions. Returns a CUP to catch up to, if a peer sent one.
    fn perform(&mut self) -> Result<Option<(cup::CupContent, Vec<u8>)>, ReplicaError> {
        let mut catch_up = None;
        let mut offer = false;
        // State hashes fed back make more actions: loop until quiet (bounded by the
        // core's own action bound).
        loop {
            while let Some(action) = self.core.poll_action() {
                match action {
                    // Once storage failed, nothing more goes out: an own share that
                    // was not persisted must not be seen (and the rest can wait).
                    Action::Broadcast(_) | Action::SendTo(..) if self.storage_error.is_some() => {}
                    Action::Broadcast(e) => self.transport.broadcast(crate::wire::encode(&e)),
                    Action::SendTo(i, e) => {
                        if let Some(to) = self.subnet.record.committee().get(i as usize) {
                            self.transport.send(*to, crate::wire::encode(&e));
                        }
                    }
                    Action::Persist(e) if self.storage_error.is_some() => {
                        // Keep the first; the core re-sends the rest after a quiet period.
                        self.unpersisted.get_or_insert(e);
                    }
                    Action::Persist(e) => {
                        if let Err(err) = self.pool_mut().and_then(|p| Ok(p.append(&e)?)) {
                            if !storage_unavailable(&err) {
                                return Err(err);
                            }
                            self.unpersisted = Some(e);
                            self.stall(&err);
                        }
                    }
                    Action::Deliver(d) => {
                        self.queued.push_back(Queued {
                            delivery: d,
                            executed: None,
                        });
                        self.execute_queued()?;
                    }
                    Action::Certified {
                        height,
                        state_hash,
                        signature,
                    } => {
                        self.certificates.insert(
                            height,
                            Certificate {
                                height: height.get(),
                                state_hash,
                                signature: hex::encode(&signature),
                                kind: "certification".into(),
                                replica_version: self.version.clone(),
                                cup_content: None,
                            },
                        );
                        while self.certificates.len() > MAX_CERTIFICATES {
                            self.certificates.pop_first();
                        }
                        let (nns, state) = (self.is_nns(), self.state.as_ref());
                        self.requests
                            .certified(height, |a| queries::with_governance(nns, state, a));
                        self.prune_undo();
                    }
                    Action::CupReady { content, signature } => {
                        if content
                            .committee
                            .as_ref()
                            .is_some_and(|c| c.nodes.as_slice() != self.subnet.record.committee())
                            && content.next_replica_version.as_ref() == Some(&self.version)
                        {
                            self.committee_changes_at = Some(content.height);
                        }
                        // Without space for the file, the CUP still exists: every peer
                        // holds it, and the orchestrator asks them.
                        match self.cup_ready(content, &signature) {
                            Err(e) if storage_unavailable(&e) => self.stall(&e),
                            other => other?,
                        }
                    }
                    Action::Halted { cup_height } => {
                        tracing::info!(%cup_height, "halted for the upgrade: the CUP carries the subnet on");
                        self.carry_over();
                    }
                    Action::CatchUp { content, signature } => catch_up = Some((content, signature)),
                    Action::BlockPayload { height, payload } => {
                        let ids = decode_payload(&payload, MAX_PAYLOAD_BYTES)
                            .unwrap_or_default()
                            .iter()
                            .map(SignedIngress::id)
                            .collect::<Vec<_>>();
                        self.in_blocks.entry(height).or_default().extend(ids);
                        offer = true;
                    }
                }
            }
            // Before the block at that height is notarized (a round trip away), so the
            // next block this node makes on top of it carries other updates; the core
            // waits for it, and may act on it at once.
            if !offer {
                break;
            }
            offer = false;
            self.offer_payload();
        }
        Ok(catch_up)
    }

    /// Publishes the status for the HTTP side.
    fn publish(&self) {
        let peers = self.transport.connected_peers().len();
        if let Ok(mut s) = self.shared.status.lock() {
            s.finalized_height = self.core.finalized_height().get();
            s.certified_height = self
                .certificates
                .keys()
                .next_back()
                .map(|h| h.get())
                .unwrap_or(s.certified_height);
            if let Some(state) = &self.state {
                s.executed_height = state.height().get();
                s.state_hash = state.state_hash();
                s.state_schema = state.schema();
            }
            s.cup_height = self.cup_height.get();
            s.peers_connected = peers;
            s.halting = self.core.is_halting();
            s.halted = self.core.is_halted();
            s.own_share_height = self.core.own_share_height().map(|h| h.get());
            s.registry_version = self.registry_seen;
            s.ingress_pool = self.ingress.len();
            s.first_payload = self.first_payload;
            s.last_payload = self.last_payload;
            s.storage_error = self.storage_error.clone();
            s.readiness = self
                .core
                .readiness()
                .filter_map(|r| {
                    Some(ReadinessView {
                        node_id: self.subnet.members.get(r.signer as usize)?.node_id,
                        version: r.version.clone(),
                        ready: r.ready,
                        reason: r.reason.clone(),
                        height: r.height.get(),
                    })
                })
                .collect();
        }
    }
}

//! The registry server (axum). See [`crate::api`] for the endpoints.
//!
//! One `Registry<RocksStore>` behind a mutex: requests are short, and every write is one
//! synced RocksDB commit, so an acknowledged proposal or vote survives a kill -9.

use crate::metrics::{self as m, Builder};
use crate::{
    Registry, RegistryError,
    api::*,
    governance::{GovernanceError, ProposalStatus, VerifiedBallot, VerifiedSubmission},
    store::{RegistryStore, RocksStore, StoreError},
};
use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Query, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use crypto::ed25519::Ed25519KeyPair;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, Registry as Metrics};
use serde::Deserialize;
use std::{
    ops::Bound,
    path::{Path as FsPath, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use types::{NetworkId, RegistryVersion, ReplicaVersion, codec, domain};

/// Files in a registry directory.
pub fn key_path(dir: &FsPath) -> PathBuf {
    dir.join("registry.key")
}
pub fn public_key_path(dir: &FsPath) -> PathBuf {
    dir.join("registry_public_key.hex")
}

/// The largest registry public key file read (64 hex characters and a newline).
const MAX_PUBLIC_KEY_FILE_BYTES: u64 = 1024;

/// The network the registry in `dir` serves: the hash of its root public key (what every
/// node's `node.toml` names and every signed update, submission and ballot carries).
pub fn network_id(dir: &FsPath) -> Result<NetworkId, String> {
    use std::io::Read;
    let path = public_key_path(dir);
    let mut text = String::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_PUBLIC_KEY_FILE_BYTES).read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let key: crypto::ed25519::Ed25519PublicKey = text
        .trim()
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(NetworkId::from_registry_root_key(key.as_bytes()))
}
pub fn store_path(dir: &FsPath) -> PathBuf {
    dir.join("store")
}

/// The largest request body accepted.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Bounds of `registry_http_request_duration_seconds`'s buckets: half a millisecond (a
/// read) to 5 s (a proposal that decodes a large registry).
const REQUEST_SECONDS_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub struct ServerState {
    registry: Mutex<Registry<RocksStore>>,
    /// A copy that follows the NNS subnet ([`crate::follow`]): it takes no proposal or
    /// vote and decides no deadline.
    follows: bool,
    key: Ed25519KeyPair,
    /// This registry's network: what every submission and ballot must name.
    network: NetworkId,
    metrics: Metrics,
    requests: IntCounterVec,
    refusals: IntCounterVec,
    decodes: IntCounter,
    version_gauge: IntGauge,
    open_gauge: IntGauge,
    request_seconds: Histogram,
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerState(key {})", self.key.public_key())
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    KeyFile(#[from] crypto::key_file::KeyFileError),
    #[error("registry store in {dir}: {source}")]
    Registry {
        dir: PathBuf,
        source: Box<RegistryError>,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Current time in nanoseconds since the Unix epoch: the one clock read of the registry.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl ServerState {
    /// Opens an initialized registry directory.
    pub fn open(dir: &FsPath) -> Result<Arc<Self>, ServerError> {
        Self::open_as(dir, false)
    }

    /// Opens an initialized registry directory as a copy that follows the NNS subnet
    /// ([`crate::follow`]).
    pub fn open_following(dir: &FsPath) -> Result<Arc<Self>, ServerError> {
        Self::open_as(dir, true)
    }

    fn open_as(dir: &FsPath, follows: bool) -> Result<Arc<Self>, ServerError> {
        let key = Ed25519KeyPair::read_from_file(&key_path(dir))?;
        let registry_err = |source: RegistryError| ServerError::Registry {
            dir: dir.to_path_buf(),
            source: Box::new(source),
        };
        let store = RocksStore::open(&store_path(dir))
            .map_err(|e| registry_err(RegistryError::Store(e)))?;
        if store.latest_version() == RegistryVersion::ZERO {
            return Err(registry_err(RegistryError::Store(StoreError::Corrupt(
                "the registry is empty: run `registry init` first".into(),
            ))));
        }
        let registry = if follows {
            Registry::open_copy(store)
        } else {
            Registry::open(store)
        }
        .map_err(registry_err)?;
        let metrics = Metrics::new();
        let b = Builder::new(&metrics);
        let requests = b.counter_vec(
            "registry_http_requests_total",
            "HTTP requests by endpoint",
            &["endpoint"],
        )?;
        let refusals = b.counter_vec(
            "registry_refusals_total",
            "Refused proposals and votes by kind",
            &["kind"],
        )?;
        let decodes = b.counter(
            "registry_snapshot_decodes_total",
            "Decodes of the whole registry (the expensive step of a proposal)",
        )?;
        let version_gauge = b.gauge("registry_version", "The latest registry version")?;
        let open_gauge = b.gauge("registry_proposals_open", "Open proposals")?;
        let request_seconds = b.seconds_histogram(
            "registry_http_request_duration_seconds",
            "Time to answer an HTTP request, its signature included",
            &REQUEST_SECONDS_BUCKETS,
        )?;
        let network = NetworkId::from_registry_root_key(key.public_key().as_bytes());
        Ok(Arc::new(Self {
            registry: Mutex::new(registry),
            follows,
            key,
            network,
            metrics,
            requests,
            refusals,
            decodes,
            version_gauge,
            open_gauge,
            request_seconds,
        }))
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry<RocksStore>> {
        // A panic while holding the lock cannot leave the registry half-written (every
        // write is one atomic commit), so a poisoned lock is safe to keep using.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The guarded registry, for [`crate::follow`] to append to.
    pub(crate) fn registry_lock(&self) -> &Mutex<Registry<RocksStore>> {
        &self.registry
    }

    fn count(&self, endpoint: &str) {
        self.requests.with_label_values(&[endpoint]).inc();
    }

    pub fn network(&self) -> NetworkId {
        self.network
    }

    /// The cheap checks of a submission (network, neuron, signature) with the lock held
    /// only for the one record read, so a flood of bad signatures never queues honest
    /// requests behind signature checks, and never reaches a snapshot decode.
    fn verify_submission(
        &self,
        signed: &SignedSubmission,
    ) -> Result<VerifiedSubmission, RegistryError> {
        signed.check_network(&self.network)?;
        let controller = self
            .registry()
            .neuron_controller(signed.submission.neuron_id)?;
        Ok(signed.verify(&self.network, &controller)?)
    }

    /// The cheap checks of a ballot, as [`ServerState::verify_submission`].
    fn verify_ballot(&self, signed: &SignedBallot) -> Result<VerifiedBallot, RegistryError> {
        signed.check_network(&self.network)?;
        let controller = self.registry().neuron_controller(signed.ballot.neuron_id)?;
        Ok(signed.verify(&self.network, &controller)?)
    }
}

/// The router with response signing.
pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/api/v1/registry/version", get(registry_version))
        .route("/api/v1/registry/changes", get(changes))
        .route("/api/v1/registry/get", get(get_key))
        .route("/api/v1/versions", get(versions))
        .route("/api/v1/subnets", get(subnets))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/neurons", get(neurons))
        .route("/api/v1/proposals", get(proposals).post(submit))
        .route("/api/v1/proposals/{id}", get(proposal))
        .route("/api/v1/proposals/{id}/votes", post(vote))
        .route("/api/v1/status", get(status))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            sign_responses,
        ))
        .with_state(state)
}

/// Serves until the listener fails; decides proposals past their deadline every second
/// (a copy that follows the NNS subnet does not: [`crate::follow::serve_following`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
) -> std::io::Result<()> {
    if state.follows {
        return axum::serve(listener, router(state)).await;
    }
    let ticker = state.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            interval.tick().await;
            if let Err(e) = ticker.registry().tick(now_ns()) {
                tracing::error!(error = %e, "critical_error: deciding proposals at their deadline failed");
            }
        }
    });
    axum::serve(listener, router(state)).await
}

async fn sign_responses(
    State(state): State<Arc<ServerState>>,
    req: Request,
    next: Next,
) -> Response {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let timer = state.request_seconds.start_timer();
    let (mut parts, body) = next.run(req).await.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_RESPONSE_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("response too large: {e}"),
            );
        }
    };
    let sig = state.key.sign(
        domain::REGISTRY_RESPONSE,
        &response_message(&path_and_query, &bytes),
    );
    if let Ok(v) = HeaderValue::from_str(&sig.to_string()) {
        parts.headers.insert(SIGNATURE_HEADER, v);
    }
    timer.observe_duration();
    Response::from_parts(parts, Body::from(bytes))
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

fn registry_error(state: &ServerState, e: RegistryError) -> Response {
    let code = match &e {
        RegistryError::Governance(GovernanceError::UnknownProposal(_)) => StatusCode::NOT_FOUND,
        RegistryError::Store(StoreError::VersionNotAvailable { .. }) => StatusCode::NOT_FOUND,
        RegistryError::Governance(_) | RegistryError::Invariant(_) => StatusCode::BAD_REQUEST,
        RegistryError::Store(_)
        | RegistryError::Corrupt(_)
        | RegistryError::AlreadyInitialized(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if code == StatusCode::BAD_REQUEST {
        let kind = match &e {
            RegistryError::Governance(GovernanceError::WrongNetwork { .. }) => "wrong_network",
            RegistryError::Governance(GovernanceError::UnknownNeuron(_)) => "unknown_neuron",
            RegistryError::Governance(GovernanceError::BadSignature(_)) => "bad_signature",
            RegistryError::Governance(GovernanceError::Replay { .. }) => "replay",
            RegistryError::Governance(GovernanceError::Invalid(_)) => "invalid_proposal",
            RegistryError::Governance(GovernanceError::TooManyOpen(_)) => "too_many_open",
            RegistryError::Invariant(_) => "invariant",
            _ => "other",
        };
        state.refusals.with_label_values(&[kind]).inc();
        tracing::info!(error = %e, "refused");
    }
    error(code, e.to_string())
}

/// A proposal or vote sent to a copy that follows the NNS subnet: refused, nothing done.
fn follows(s: &ServerState) -> Response {
    s.refusals.with_label_values(&["follows_the_nns"]).inc();
    error(
        StatusCode::FORBIDDEN,
        "this registry server follows the NNS subnet and takes no proposal or vote: send it to a node of the NNS subnet (nns --registry <its URL>)",
    )
}

async fn registry_version(State(s): State<Arc<ServerState>>) -> Response {
    s.count("registry_version");
    Json(VersionView {
        registry_version: s.registry().latest_version().get(),
    })
    .into_response()
}

#[derive(Deserialize)]
struct ChangesQuery {
    since: u64,
    max: Option<usize>,
}

async fn changes(State(s): State<Arc<ServerState>>, Query(q): Query<ChangesQuery>) -> Response {
    s.count("changes");
    let max = q
        .max
        .unwrap_or(MAX_VERSIONS_PER_PAGE)
        .clamp(1, MAX_VERSIONS_PER_PAGE);
    let reg = s.registry();
    let latest = reg.latest_version();
    let mut deltas = match reg
        .store()
        .changes_since(RegistryVersion::new(q.since), max)
    {
        Ok(d) => d,
        Err(e) => return registry_error(&s, e.into()),
    };
    drop(reg);
    // Keep the page under its byte budget (but always send at least one delta).
    let mut bytes = 0usize;
    let mut keep = 0;
    for d in &deltas {
        bytes += codec::encode(d).len();
        if keep > 0 && bytes > MAX_PAGE_BYTES {
            break;
        }
        keep += 1;
    }
    deltas.truncate(keep);
    let page = ChangesPage {
        latest_version: latest,
        deltas,
    };
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        codec::encode(&page),
    )
        .into_response()
}

#[derive(Deserialize)]
struct GetQuery {
    key: String,
    at: Option<u64>,
}

async fn get_key(State(s): State<Arc<ServerState>>, Query(q): Query<GetQuery>) -> Response {
    s.count("get");
    let reg = s.registry();
    let at =
        q.at.map(RegistryVersion::new)
            .unwrap_or(reg.latest_version());
    match reg.store().get_versioned(&q.key, at) {
        Ok(found) => Json(GetView::new(&q.key, at, found)).into_response(),
        Err(e) => registry_error(&s, e.into()),
    }
}

/// A JSON list made from the latest snapshot.
fn snapshot_list<T: serde::Serialize>(
    s: &ServerState,
    endpoint: &str,
    view: impl FnOnce(&crate::invariants::Snapshot) -> Vec<T>,
) -> Response {
    s.count(endpoint);
    let snapshot = s.registry().snapshot();
    match snapshot {
        Ok(snap) => Json(view(&snap)).into_response(),
        Err(e) => registry_error(s, e),
    }
}

/// `?after=&limit=` of a paged list.
#[derive(Deserialize)]
struct PageQuery<C> {
    after: Option<C>,
    limit: Option<usize>,
}

impl<C> PageQuery<C> {
    /// Whether the caller asked for pages (else it gets the first page as a bare list).
    fn paged(&self) -> bool {
        self.after.is_some() || self.limit.is_some()
    }

    fn limit(&self, max: usize) -> usize {
        self.limit.unwrap_or(max).clamp(1, max)
    }
}

/// Up to `limit` items and about `max_bytes` of JSON (at least one item), and the cursor
/// of the next page when items are left.
fn page<T: serde::Serialize, C>(
    items: impl Iterator<Item = T>,
    limit: usize,
    max_bytes: usize,
    cursor: impl Fn(&T) -> C,
) -> (Vec<T>, Option<C>) {
    let mut items = items.peekable();
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(item) = items.peek() {
        if out.len() >= limit {
            break;
        }
        // The item's JSON and its comma.
        let size = serde_json::to_vec(item).map_or(0, |b| b.len()) + 1;
        if !out.is_empty() && bytes + size > max_bytes {
            break;
        }
        bytes += size;
        out.extend(items.next());
    }
    let next = match items.peek() {
        Some(_) => out.last().map(cursor),
        None => None,
    };
    (out, next)
}

async fn versions(
    State(s): State<Arc<ServerState>>,
    Query(q): Query<PageQuery<ReplicaVersion>>,
) -> Response {
    s.count("versions");
    let snap = match s.registry().snapshot() {
        Ok(snap) => snap,
        Err(e) => return registry_error(&s, e),
    };
    let start = q.after.clone().map_or(Bound::Unbounded, Bound::Excluded);
    let (versions, next) = page(
        snap.versions
            .range((start, Bound::Unbounded))
            .map(|(_, v)| ElectedVersionView::from(v)),
        q.limit(MAX_VERSIONS_PER_LIST_PAGE),
        MAX_LIST_PAGE_BYTES,
        |v| v.version.clone(),
    );
    if q.paged() {
        Json(VersionsPage { versions, next }).into_response()
    } else {
        Json(versions).into_response()
    }
}

async fn subnets(State(s): State<Arc<ServerState>>) -> Response {
    snapshot_list(&s, "subnets", |snap| {
        snap.subnets.values().map(SubnetView::from).collect()
    })
}

async fn nodes(State(s): State<Arc<ServerState>>) -> Response {
    snapshot_list(&s, "nodes", NodeView::all)
}

async fn neurons(State(s): State<Arc<ServerState>>) -> Response {
    snapshot_list(&s, "neurons", |snap| {
        snap.neurons.values().map(NeuronView::from).collect()
    })
}

async fn proposals(State(s): State<Arc<ServerState>>, Query(q): Query<PageQuery<u64>>) -> Response {
    s.count("proposals");
    let start = q.after.map_or(Bound::Unbounded, Bound::Excluded);
    let (proposals, next) = {
        let reg = s.registry();
        page(
            reg.governance()
                .proposals
                .range((start, Bound::Unbounded))
                .map(|(_, p)| ProposalView::from(p)),
            q.limit(MAX_PROPOSALS_PER_PAGE),
            MAX_LIST_PAGE_BYTES,
            |p| p.proposal_id,
        )
    };
    if q.paged() {
        Json(ProposalsPage { proposals, next }).into_response()
    } else {
        Json(proposals).into_response()
    }
}

async fn proposal(State(s): State<Arc<ServerState>>, Path(id): Path<u64>) -> Response {
    s.count("proposal");
    let reg = s.registry();
    match reg.governance().proposals.get(&id) {
        Some(p) => Json(ProposalView::from(p)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("proposal {id} does not exist"),
        ),
    }
}

async fn submit(
    State(s): State<Arc<ServerState>>,
    Json(signed): Json<SignedSubmission>,
) -> Response {
    s.count("submit");
    if s.follows {
        return follows(&s);
    }
    let verified = match s.verify_submission(&signed) {
        Ok(v) => v,
        Err(e) => return registry_error(&s, e),
    };
    let result = s.registry().submit(now_ns(), &verified);
    match result {
        Ok(id) => {
            tracing::info!(
                proposal = id,
                neuron = signed.submission.neuron_id,
                "proposal submitted"
            );
            Json(ProposalIdView { proposal_id: id }).into_response()
        }
        Err(e) => registry_error(&s, e),
    }
}

async fn vote(
    State(s): State<Arc<ServerState>>,
    Path(id): Path<u64>,
    Json(signed): Json<SignedBallot>,
) -> Response {
    s.count("vote");
    if s.follows {
        return follows(&s);
    }
    if signed.ballot.proposal_id != id {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "the ballot is for proposal {}, not {id}",
                signed.ballot.proposal_id
            ),
        );
    }
    let verified = match s.verify_ballot(&signed) {
        Ok(v) => v,
        Err(e) => return registry_error(&s, e),
    };
    let result = s.registry().vote(now_ns(), &verified);
    match result {
        Ok(status) => {
            tracing::info!(
                proposal = id,
                neuron = signed.ballot.neuron_id,
                status = status.name(),
                "vote"
            );
            Json(VoteResultView {
                proposal_id: id,
                status,
            })
            .into_response()
        }
        Err(e) => registry_error(&s, e),
    }
}

async fn status(State(s): State<Arc<ServerState>>) -> Response {
    s.count("status");
    let reg = s.registry();
    let open = reg
        .governance()
        .proposals
        .values()
        .filter(|p| p.status == ProposalStatus::Open)
        .count();
    Json(StatusView {
        registry_version: reg.latest_version().get(),
        proposals_open: open,
        proposals_total: reg.governance().proposals.len(),
        public_key: s.key.public_key().to_string(),
        network_id: s.network,
    })
    .into_response()
}

async fn metrics(State(s): State<Arc<ServerState>>) -> Response {
    {
        let reg = s.registry();
        s.version_gauge.set(reg.latest_version().get() as i64);
        // The count lives in the registry; the counter catches up with it.
        m::catch_up(&s.decodes, reg.snapshot_decodes());
        let open = reg
            .governance()
            .proposals
            .values()
            .filter(|p| p.status == ProposalStatus::Open)
            .count();
        s.open_gauge.set(open as i64);
    }
    m::render(&s.metrics)
}

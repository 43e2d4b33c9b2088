//! The handle, the accept loop (receiving) and one dialing task per peer (sending). The
//! rules are in the crate docs.

use crate::{
    HANDSHAKE_TIMEOUT_MS, INBOUND_CHANNEL_CAPACITY, MAX_INCOMING_CONNECTIONS, SHUTDOWN_DRAIN_MS,
    SHUTDOWN_GRACE_MS, TransportConfig, TransportError,
    membership::{Member, MemberTable, Membership},
    queue::{Message, PeerQueue},
    stats::{Counters, TransportStats},
    tls::{self, NodeTls},
    wire::{self, FrameError},
};
use crypto::ed25519::{Ed25519KeyPair, Ed25519PublicKey};
use quinn::VarInt;
use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::{
    sync::{mpsc, watch},
    task::{JoinHandle, JoinSet},
    time::timeout,
};
use tracing::{Instrument, debug, info, info_span, warn};
use types::NodeId;

/// QUIC application close codes, so that a peer's logs say why.
const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0);
const CLOSE_NOT_A_MEMBER: VarInt = VarInt::from_u32(1);
const CLOSE_MESSAGE_TOO_LONG: VarInt = VarInt::from_u32(2);
const CLOSE_REPLACED: VarInt = VarInt::from_u32(3);
const CLOSE_PROTOCOL_VIOLATION: VarInt = VarInt::from_u32(4);

/// Locks a mutex whose critical sections are single map or flag updates, so a panic in
/// one cannot leave it inconsistent: a poisoned lock is taken over.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running transport. Cheap to clone; all clones drive the same endpoint. Dropping the
/// last clone stops it (as [`Transport::shutdown`] does, without waiting).
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Handle>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("me", &self.inner.shared.me)
            .field("local_addr", &self.inner.shared.local_addr)
            .finish_non_exhaustive()
    }
}

struct Handle {
    shared: Arc<Shared>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The tasks are left to finish on their own.
        drop(self.shared.begin_shutdown());
    }
}

/// What the handle and the tasks share.
struct Shared {
    me: NodeId,
    cfg: TransportConfig,
    local_addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    endpoint: quinn::Endpoint,
    tls: NodeTls,
    membership: Arc<Membership>,
    counters: Arc<Counters>,
    inbound: mpsc::Sender<(NodeId, Vec<u8>)>,
    /// One entry per member other than this node. Lock order: `peers`, then `incoming`.
    peers: Mutex<BTreeMap<NodeId, Peer>>,
    /// The newest authenticated incoming connection of each member.
    incoming: Mutex<BTreeMap<NodeId, InboundConnection>>,
    shutdown: watch::Sender<bool>,
}

struct Peer {
    link: Arc<PeerLink>,
    task: JoinHandle<()>,
}

/// What a peer's task and the handle share.
struct PeerLink {
    member: Member,
    queue: PeerQueue,
    /// The bulk class ([`Transport::broadcast_bulk`]): written when `queue` is empty.
    bulk: PeerQueue,
    connected: AtomicBool,
    /// Raised when the peer connected to this node while this side had no connection to
    /// it: the peer is up, so a dial waiting on it (a QUIC Initial retransmitted on a
    /// timer that starts near a second) or a backoff is started over at once.
    kick: tokio::sync::Notify,
    stop: watch::Sender<bool>,
}

struct InboundConnection {
    key: Ed25519PublicKey,
    conn: quinn::Connection,
}

impl Transport {
    /// Binds `cfg.listen`, starts accepting connections from `members` and dialing them,
    /// and returns the handle and the receiver of `(sender, message)`; the sender is always
    /// an authenticated member. `key` is this node's registry key. `members` may include
    /// this node; it may also be empty and set later with [`Transport::set_members`].
    pub async fn start(
        cfg: TransportConfig,
        key: Ed25519KeyPair,
        members: Vec<Member>,
    ) -> Result<(Transport, mpsc::Receiver<(NodeId, Vec<u8>)>), TransportError> {
        cfg.validate()?;
        let table = MemberTable::new(members)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| TransportError::NoRuntime(e.to_string()))?;
        let membership = Arc::new(Membership::default());
        let counters = Arc::new(Counters::default());
        let tls = NodeTls::new(
            &key,
            cfg.protocol.as_bytes(),
            membership.clone(),
            counters.clone(),
        )?;
        let bind_error = |source| TransportError::Bind {
            addr: cfg.listen,
            source,
        };
        let endpoint = {
            // `Endpoint::new` spawns the endpoint's driver on the current runtime.
            let _guard = runtime.enter();
            let socket = std::net::UdpSocket::bind(cfg.listen).map_err(bind_error)?;
            quinn::Endpoint::new(
                tls::endpoint_config(&key),
                Some(tls.server_config()?),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
            .map_err(bind_error)?
        };
        let local_addr = endpoint.local_addr().map_err(bind_error)?;
        let (inbound, receiver) = mpsc::channel(INBOUND_CHANNEL_CAPACITY);
        let shared = Arc::new(Shared {
            me: key.node_id(),
            cfg,
            local_addr,
            runtime,
            endpoint,
            tls,
            membership,
            counters,
            inbound,
            peers: Mutex::default(),
            incoming: Mutex::default(),
            shutdown: watch::Sender::new(false),
        });
        shared.apply_members(table);
        let span = info_span!("transport", me = ?shared.me);
        let accept_task = shared
            .runtime
            .spawn(accept_loop(shared.clone()).instrument(span));
        info!(me = ?shared.me, %local_addr, "transport started");
        let handle = Handle {
            shared,
            accept_task: Mutex::new(Some(accept_task)),
        };
        Ok((
            Transport {
                inner: Arc::new(handle),
            },
            receiver,
        ))
    }

    /// Queues `bytes` for `to`. Never blocks: if `to`'s queue is full its oldest message is
    /// dropped (counted). A message longer than `max_message_bytes`, or for a node that is
    /// not a current member, is dropped and counted.
    pub fn send(&self, to: NodeId, bytes: Vec<u8>) {
        let shared = &self.inner.shared;
        if !shared.accepts_size(&bytes) {
            return;
        }
        let link = lock(&shared.peers).get(&to).map(|p| p.link.clone());
        match link {
            Some(link) => shared.enqueue(&link, Message::from(bytes)),
            None => {
                shared.counters.dropped_unknown_peer.inc();
                debug!(to = ?to, "dropped a message for a node that is not a peer");
            }
        }
    }

    /// Queues `bytes` for every current member except this node in the *bulk* class:
    /// a second queue per peer, of [`crate::BULK_QUEUE_PER_PEER`] messages (oldest
    /// dropped, counted in `dropped_bulk_queue_full`), written only when the peer's
    /// consensus queue is empty. For traffic that may wait or be lost without harm to
    /// consensus (relayed user updates), so that a burst of it never evicts an artifact.
    pub fn broadcast_bulk(&self, bytes: Vec<u8>) {
        let shared = &self.inner.shared;
        self.to_every_peer(bytes, |link, msg| {
            let dropped = link.bulk.push(msg);
            shared.counters.dropped_bulk_queue_full.add(dropped);
        });
    }

    /// Queues `bytes` for every current member except this node, as [`Transport::send`].
    pub fn broadcast(&self, bytes: Vec<u8>) {
        let shared = &self.inner.shared;
        self.to_every_peer(bytes, |link, msg| shared.enqueue(link, msg));
    }

    /// `put` one shared copy of `bytes` for each current peer, unless it is oversize.
    fn to_every_peer(&self, bytes: Vec<u8>, mut put: impl FnMut(&PeerLink, Message)) {
        let shared = &self.inner.shared;
        if !shared.accepts_size(&bytes) {
            return;
        }
        let links: Vec<_> = lock(&shared.peers)
            .values()
            .map(|p| p.link.clone())
            .collect();
        let msg = Message::from(bytes);
        for link in &links {
            put(link, msg.clone());
        }
    }

    /// Replaces the member set (a registry change): dials new members; drops the queue of
    /// removed ones and closes their connections, which are refused from then on. A member
    /// whose key or address changed is treated as removed and added. After this returns,
    /// the receiver gets no further message from a removed node. An inconsistent list
    /// (an id that is not its key's, a duplicate) is refused whole; the old set stays.
    pub fn set_members(&self, members: Vec<Member>) -> Result<(), TransportError> {
        let table = MemberTable::new(members)?;
        self.inner.shared.apply_members(table);
        Ok(())
    }

    /// Members with an admitted outgoing connection (those `send` reaches now), sorted.
    pub fn connected_peers(&self) -> Vec<NodeId> {
        lock(&self.inner.shared.peers)
            .values()
            .filter(|p| p.link.connected.load(Ordering::Relaxed))
            .map(|p| p.link.member.node_id)
            .collect()
    }

    /// The counters since `start`.
    pub fn stats(&self) -> TransportStats {
        self.inner.shared.counters.snapshot()
    }

    /// The bound UDP address (the actual port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.shared.local_addr
    }

    /// This node's id (from its key).
    pub fn node_id(&self) -> NodeId {
        self.inner.shared.me
    }

    /// Stops dialing and accepting, closes every connection and waits (at most
    /// [`SHUTDOWN_GRACE_MS`]) for the tasks to end, then at most [`SHUTDOWN_DRAIN_MS`] for
    /// the endpoint to go idle. Other clones of this handle stop working too.
    pub async fn shutdown(self) {
        let shared = self.inner.shared.clone();
        let accept_task = lock(&self.inner.accept_task).take();
        let mut tasks = shared.begin_shutdown();
        tasks.extend(accept_task);
        drop(self);
        let grace = Duration::from_millis(SHUTDOWN_GRACE_MS);
        let joined = timeout(grace, async {
            for task in tasks {
                // A task that panicked has nothing left to clean up.
                let _ = task.await;
            }
        })
        .await;
        if joined.is_err() {
            warn!(me = ?shared.me, "transport tasks did not stop within the grace period");
        }
        let drain = Duration::from_millis(SHUTDOWN_DRAIN_MS);
        if timeout(drain, shared.endpoint.wait_idle()).await.is_err() {
            debug!(me = ?shared.me, "closed connections still draining; not waiting for them");
        }
        info!(me = ?shared.me, "transport stopped");
    }
}

impl Shared {
    fn accepts_size(&self, bytes: &[u8]) -> bool {
        if bytes.len() > self.cfg.max_message_bytes {
            self.counters.dropped_oversize.inc();
            warn!(
                len = bytes.len(),
                max = self.cfg.max_message_bytes,
                "refused to send an oversize message"
            );
            return false;
        }
        true
    }

    fn enqueue(&self, link: &PeerLink, msg: Message) {
        let dropped = link.queue.push(msg);
        if dropped > 0 {
            self.counters.dropped_queue_full.add(dropped);
            debug!(peer = ?link.member.node_id, "queue full: dropped the oldest message");
        }
    }

    fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Sets the shutdown flag, stops every peer task, closes every connection and the
    /// endpoint. Idempotent. Returns the peer tasks to wait for.
    fn begin_shutdown(&self) -> Vec<JoinHandle<()>> {
        self.shutdown.send_replace(true);
        let peers = std::mem::take(&mut *lock(&self.peers));
        for peer in peers.values() {
            peer.link.stop.send_replace(true);
        }
        for (_, inbound) in std::mem::take(&mut *lock(&self.incoming)) {
            inbound.conn.close(CLOSE_SHUTDOWN, b"shutting down");
        }
        self.endpoint.close(CLOSE_SHUTDOWN, b"shutting down");
        peers.into_values().map(|p| p.task).collect()
    }

    fn apply_members(self: &Arc<Self>, table: MemberTable) {
        // Holding `peers` throughout serializes concurrent calls and orders this after
        // (or entirely before) a shutdown.
        let mut peers = lock(&self.peers);
        if self.is_shut_down() {
            return;
        }
        // First the verifiers' view: from here on, removed nodes' handshakes fail and
        // `register_incoming` refuses them.
        self.membership.replace(table.clone());
        lock(&self.incoming).retain(|node, inbound| {
            let keep = table.get(node).is_some_and(|m| m.public_key == inbound.key);
            if !keep {
                info!(peer = ?node, "closing the connection of a removed member");
                inbound.conn.close(CLOSE_NOT_A_MEMBER, b"not a member");
            }
            keep
        });
        peers.retain(|node, peer| {
            let keep = table.get(node) == Some(&peer.link.member);
            if !keep {
                info!(peer = ?node, "stopping the sender of a removed or changed member");
                peer.link.stop.send_replace(true);
            }
            keep
        });
        for member in table.members() {
            if member.node_id == self.me || peers.contains_key(&member.node_id) {
                continue;
            }
            let link = Arc::new(PeerLink {
                member: member.clone(),
                queue: PeerQueue::new(self.cfg.max_queue_per_peer),
                bulk: PeerQueue::new(crate::BULK_QUEUE_PER_PEER),
                connected: AtomicBool::new(false),
                kick: tokio::sync::Notify::new(),
                stop: watch::Sender::new(false),
            });
            let span = info_span!("peer", me = ?self.me, peer = ?member.node_id);
            let task = self
                .runtime
                .spawn(run_peer(self.clone(), link.clone()).instrument(span));
            peers.insert(member.node_id, Peer { link, task });
        }
    }

    /// Records an authenticated incoming connection under its member's id (replacing an
    /// older one from the same member), or closes it.
    fn register_incoming(&self, conn: &quinn::Connection) -> Option<NodeId> {
        let refuse = |code, reason: &'static str| {
            conn.close(code, reason.as_bytes());
            None
        };
        let Some(key) = tls::peer_key(conn) else {
            self.counters.critical_error_unidentified_peer.inc();
            tracing::error!(remote = %conn.remote_address(), "accepted a connection without an ed25519 certificate");
            return refuse(CLOSE_PROTOCOL_VIOLATION, "no identity");
        };
        if tls::negotiated_protocol(conn).as_deref() != Some(self.cfg.protocol.as_bytes()) {
            self.counters.critical_error_unidentified_peer.inc();
            tracing::error!(remote = %conn.remote_address(), "accepted a connection without our protocol");
            return refuse(CLOSE_PROTOCOL_VIOLATION, "wrong protocol");
        }
        let mut incoming = lock(&self.incoming);
        if self.is_shut_down() {
            return refuse(CLOSE_SHUTDOWN, "shutting down");
        }
        // Checked under `incoming`, which `apply_members` takes after updating the
        // membership: either this sees the removal or the removal sees this connection.
        let Some(node) = self.membership.read(|t| t.node_of_key(&key)) else {
            self.counters.rejected_connections.inc();
            warn!(remote = %conn.remote_address(), "refused a node removed during its handshake");
            return refuse(CLOSE_NOT_A_MEMBER, "not a member");
        };
        let newer = InboundConnection {
            key,
            conn: conn.clone(),
        };
        if let Some(old) = incoming.insert(node, newer) {
            old.conn
                .close(CLOSE_REPLACED, b"replaced by a newer connection");
        }
        Some(node)
    }

    /// `node` just connected to this node: if this side has no connection to it, its
    /// dialer starts over now.
    fn kick_dialer(&self, node: NodeId) {
        if let Some(p) = lock(&self.peers).get(&node)
            && !p.link.connected.load(Ordering::Relaxed)
        {
            p.link.kick.notify_one();
        }
    }

    fn unregister_incoming(&self, node: NodeId, conn: &quinn::Connection) {
        let mut incoming = lock(&self.incoming);
        if incoming
            .get(&node)
            .is_some_and(|c| c.conn.stable_id() == conn.stable_id())
        {
            incoming.remove(&node);
        }
    }

    /// Hands `msg` to the receiver iff `conn` is still `node`'s registered connection;
    /// done under `incoming`, so it cannot interleave with a membership change.
    fn deliver(
        &self,
        permit: mpsc::Permit<'_, (NodeId, Vec<u8>)>,
        node: NodeId,
        conn: &quinn::Connection,
        msg: Vec<u8>,
    ) -> bool {
        let incoming = lock(&self.incoming);
        let current = incoming
            .get(&node)
            .is_some_and(|c| c.conn.stable_id() == conn.stable_id());
        if current {
            // Counted first, so a receiver that has a message sees it counted.
            self.counters.messages_received.inc();
            permit.send((node, msg));
        }
        current
    }
}

/// Waits until `flag` is set (or its sender is gone).
async fn raised(flag: &mut watch::Receiver<bool>) {
    // An error means the sender is dropped: nothing can lower the flag any more, stop.
    let _ = flag.wait_for(|set| *set).await;
}

/// Accepts connections until shutdown, one task per connection, at most
/// [`MAX_INCOMING_CONNECTIONS`] at once.
async fn accept_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let incoming = tokio::select! {
            biased;
            () = raised(&mut shutdown) => break,
            incoming = shared.endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { break };
        if connections.len() >= MAX_INCOMING_CONNECTIONS {
            shared.counters.refused_over_capacity.inc();
            warn!(remote = %incoming.remote_address(), "too many incoming connections: refused");
            incoming.refuse();
            continue;
        }
        connections.spawn(serve_connection(shared.clone(), incoming).in_current_span());
    }
    connections.shutdown().await;
}

/// Completes an incoming handshake (the verifier admits members only), then reads the
/// member's messages until the connection ends.
async fn serve_connection(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let conn = match timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            debug!(%remote, error = %e, "incoming handshake failed");
            return;
        }
        Err(_) => {
            debug!(%remote, "incoming handshake timed out");
            return;
        }
    };
    let Some(node) = shared.register_incoming(&conn) else {
        return;
    };
    shared.kick_dialer(node);
    let span = info_span!("from", peer = ?node);
    async {
        let admitted = timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), admit(&conn)).await;
        if let Err(why) = admitted.unwrap_or_else(|_| Err("timed out".into())) {
            info!(%remote, reason = %why, "could not admit a connection");
            conn.close(CLOSE_PROTOCOL_VIOLATION, b"admission failed");
            return;
        }
        info!(%remote, "accepted a connection");
        let why = receive(&shared, node, &conn).await;
        info!(%remote, reason = %why, "incoming connection ended");
    }
    .instrument(span)
    .await;
    shared.unregister_incoming(node, &conn);
}

/// Tells the dialer it is admitted (see [`wire::ADMITTED`]).
async fn admit(conn: &quinn::Connection) -> Result<(), String> {
    let mut stream = conn.open_uni().await.map_err(|e| e.to_string())?;
    stream
        .write_all(&[wire::ADMITTED])
        .await
        .map_err(|e| e.to_string())?;
    stream.finish().map_err(|e| e.to_string())
}

/// Reads frames from the connection's streams, one stream at a time, and delivers them
/// (waiting while the receiver is full: backpressure). Returns why it stopped.
async fn receive(shared: &Shared, node: NodeId, conn: &quinn::Connection) -> String {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let mut stream = tokio::select! {
            biased;
            () = raised(&mut shutdown) => return "shutdown".into(),
            stream = conn.accept_uni() => match stream {
                Ok(stream) => stream,
                Err(e) => return e.to_string(),
            },
        };
        loop {
            let frame = tokio::select! {
                biased;
                () = raised(&mut shutdown) => return "shutdown".into(),
                frame = wire::read_frame(&mut stream, shared.cfg.max_message_bytes) => frame,
            };
            let msg = match frame {
                Ok(Some(msg)) => msg,
                // The peer finished this stream; it may open another.
                Ok(None) => break,
                Err(FrameError::TooLong { len, max }) => {
                    shared.counters.oversize_received.inc();
                    warn!(
                        len,
                        max, "peer sent an oversize message: closing its connection"
                    );
                    conn.close(CLOSE_MESSAGE_TOO_LONG, b"message too long");
                    return format!("oversize message ({len} > {max} bytes)");
                }
                Err(FrameError::Truncated) => {
                    conn.close(CLOSE_PROTOCOL_VIOLATION, b"stream ended inside a frame");
                    return "stream ended inside a frame".into();
                }
                Err(FrameError::Io(e)) => return e.to_string(),
            };
            let permit = tokio::select! {
                biased;
                permit = shared.inbound.reserve() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return "the receiver is gone".into(),
                },
                () = raised(&mut shutdown) => return "shutdown".into(),
                e = conn.closed() => return e.to_string(),
            };
            if !shared.deliver(permit, node, conn, msg) {
                return "no longer the member's registered connection".into();
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error(transparent)]
    Config(#[from] TransportError),
    #[error(transparent)]
    Connect(#[from] quinn::ConnectError),
    #[error(transparent)]
    Handshake(#[from] quinn::ConnectionError),
    #[error("handshake timed out")]
    Timeout,
    #[error("the peer did not negotiate our protocol")]
    WrongProtocol,
    #[error("not admitted: {0}")]
    NotAdmitted(String),
    /// The peer connected to this node while this handshake had not completed.
    #[error("the peer came up during the handshake: dialing again")]
    Kicked,
}

/// One peer's sender: dial, drain the queue into one stream, and on any failure redial
/// with exponential backoff, until stopped.
async fn run_peer(shared: Arc<Shared>, link: Arc<PeerLink>) {
    let mut stop = link.stop.subscribe();
    let member = &link.member;
    let min_ms = shared.cfg.reconnect_min_ms;
    let mut delay_ms = min_ms;
    let mut connected_before = false;
    let mut client = None;
    loop {
        let attempt = tokio::select! {
            biased;
            () = raised(&mut stop) => return,
            attempt = dial(&shared, member, &mut client, &link.kick) => attempt,
        };
        match attempt {
            Ok(conn) => {
                shared.counters.connections_established.inc();
                if connected_before {
                    shared.counters.reconnects.inc();
                }
                connected_before = true;
                delay_ms = min_ms;
                info!(address = %member.address, "connected");
                link.connected.store(true, Ordering::Relaxed);
                let end = drain(&shared, &link, &conn, &mut stop).await;
                link.connected.store(false, Ordering::Relaxed);
                match end {
                    Drained::Stopped => {
                        conn.close(CLOSE_NOT_A_MEMBER, b"stopped sending");
                        return;
                    }
                    Drained::Lost(why) => info!(reason = %why, "connection lost"),
                }
            }
            Err(DialError::Kicked) => {
                // Dial again at once: the peer is up.
                shared.counters.dials_kicked.inc();
                delay_ms = min_ms;
                continue;
            }
            Err(e) => {
                shared.counters.connect_failures.inc();
                debug!(address = %member.address, error = %e, retry_ms = delay_ms, "dial failed");
            }
        }
        tokio::select! {
            biased;
            () = raised(&mut stop) => return,
            () = link.kick.notified() => {
                shared.counters.dials_kicked.inc();
                delay_ms = min_ms;
                continue;
            }
            () = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
        }
        delay_ms = delay_ms.saturating_mul(2).min(shared.cfg.reconnect_max_ms);
    }
}

/// Connects to `member` and waits until it admits this node; at most
/// [`HANDSHAKE_TIMEOUT_MS`]. `client` caches the TLS configuration for this member. A
/// `kick` before the handshake completes abandons it ([`DialError::Kicked`]): the peer
/// has just come up, and this attempt's Initial may be waiting on a retransmit timer.
/// Only the handshake is abandoned, never the wait for admission, so two peers kicking
/// each other cannot abandon each other's connections in turn.
async fn dial(
    shared: &Shared,
    member: &Member,
    client: &mut Option<quinn::ClientConfig>,
    kick: &tokio::sync::Notify,
) -> Result<quinn::Connection, DialError> {
    let config = match client {
        Some(config) => config.clone(),
        None => client
            .insert(shared.tls.client_config(member.node_id)?)
            .clone(),
    };
    let connecting =
        shared
            .endpoint
            .connect_with(config, member.address, &tls::tls_name(&member.node_id))?;
    timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), async {
        let conn = tokio::select! {
            conn = connecting => conn?,
            () = kick.notified() => return Err(DialError::Kicked),
        };
        if tls::negotiated_protocol(&conn).as_deref() != Some(shared.cfg.protocol.as_bytes()) {
            shared.counters.critical_error_unidentified_peer.inc();
            conn.close(CLOSE_PROTOCOL_VIOLATION, b"wrong protocol");
            return Err(DialError::WrongProtocol);
        }
        // The TLS handshake is complete on this side, but the peer may still refuse our
        // certificate: wait for its word.
        let not_admitted = |e: &dyn std::fmt::Display| DialError::NotAdmitted(e.to_string());
        let mut stream = conn.accept_uni().await.map_err(|e| not_admitted(&e))?;
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .await
            .map_err(|e| not_admitted(&e))?;
        if byte[0] != wire::ADMITTED {
            conn.close(CLOSE_PROTOCOL_VIOLATION, b"bad admission");
            return Err(not_admitted(&format!(
                "unexpected admission byte {}",
                byte[0]
            )));
        }
        Ok(conn)
    })
    .await
    .map_err(|_| DialError::Timeout)?
}

enum Drained {
    Stopped,
    Lost(String),
}

/// Writes the peer's queue into one stream until the connection fails or the peer is
/// stopped. A message whose write failed goes back to the front of the queue (a failed
/// write was not fully buffered, so the peer cannot have received it whole).
async fn drain(
    shared: &Shared,
    link: &PeerLink,
    conn: &quinn::Connection,
    stop: &mut watch::Receiver<bool>,
) -> Drained {
    let mut stream = tokio::select! {
        biased;
        () = raised(stop) => return Drained::Stopped,
        stream = conn.open_uni() => match stream {
            Ok(stream) => stream,
            Err(e) => return Drained::Lost(e.to_string()),
        },
    };
    loop {
        // Consensus first: bulk is written only when no artifact waits.
        let (msg, bulk) = tokio::select! {
            biased;
            () = raised(stop) => return Drained::Stopped,
            e = conn.closed() => return Drained::Lost(e.to_string()),
            msg = link.queue.pop() => (msg, false),
            msg = link.bulk.pop() => (msg, true),
        };
        let written = tokio::select! {
            biased;
            () = raised(stop) => return Drained::Stopped,
            written = wire::write_frame(&mut stream, &msg) => written,
        };
        match written {
            Ok(()) => shared.counters.messages_sent.inc(),
            Err(e) => {
                if bulk {
                    if !link.bulk.push_front(msg) {
                        shared.counters.dropped_bulk_queue_full.inc();
                    }
                } else if !link.queue.push_front(msg) {
                    shared.counters.dropped_queue_full.inc();
                }
                return Drained::Lost(e.to_string());
            }
        }
    }
}

//! QUIC between the members of one subnet, with mutual TLS in which each node's
//! certificate is bound to the ed25519 key the registry lists for it. The replica's driver
//! hands it already-encoded consensus messages (the consensus `Envelope` carries its own
//! protocol version); this crate moves bytes and says who sent them, nothing more.
//!
//! # API
//!
//! - [`Transport::start`]`(config, key, members)` binds the endpoint and returns the handle
//!   and the receiver of `(sender, bytes)`.
//! - [`Transport::send`] / [`Transport::broadcast`] never block: they append to bounded
//!   per-peer queues. [`Transport::broadcast_bulk`] appends to a second, lower-priority
//!   queue per peer (relayed user updates), written only while the first is empty.
//! - [`Transport::set_members`] applies a registry change (it returns a `Result`: an
//!   inconsistent list is refused whole); [`Transport::connected_peers`],
//!   [`Transport::stats`] and [`Transport::local_addr`] observe; [`Transport::shutdown`]
//!   stops everything.
//!
//! # How it works (normative)
//!
//! **Connections.** Each node dials every other current member for its *own outgoing*
//! traffic: one connection per peer, owned by one task that drains that peer's queue. It
//! accepts connections only to *receive*. Two members therefore hold two connections, one
//! each way, and no tie-breaking is needed. A dial that fails, or a connection that ends,
//! is retried after a delay that starts at `reconnect_min_ms` and doubles up to
//! `reconnect_max_ms`; a successful connection resets it. (No jitter: the transport has no
//! randomness of its own, and a subnet is small.)
//!
//! **Authentication.** A node's certificate is self-signed by its registry ed25519 key
//! (made with rcgen from that very key, so the key that signs the TLS handshake is the
//! registry key). One verifier type (`tls::PinnedVerifier`) serves both sides:
//! it takes the end-entity certificate's SubjectPublicKeyInfo, requires it to be an
//! ed25519 key, and accepts it only if it is the registry key of *the member being dialed*
//! (client side) or of *any current member* (server side, client authentication
//! mandatory). No chain, name or validity period is consulted: key pinning replaces them.
//! The handshake signatures are still checked (rustls' TLS 1.3 verification with ring's
//! algorithms), so the peer proves it holds the key. Sessions are never resumed (a
//! resumed session would skip the verifier), so every connection is checked against the
//! member set of its own time. TLS 1.3 only; the ALPN is
//! [`TransportConfig::protocol`], so nodes of another wire protocol do not connect. After
//! the handshake the acceptor maps the certificate's key to the member's [`NodeId`],
//! registers the connection under it, and *admits* the dialer: it opens one
//! unidirectional stream and writes a single byte. The dialer writes nothing before it has
//! read that byte. Why: in TLS 1.3 the client finishes its handshake before the server has
//! checked the client's certificate, so a refused dialer would otherwise believe itself
//! connected and write queued messages into a connection about to be closed (they would
//! be lost, and its counters would lie).
//!
//! **Architecture Invariant: a message is attributed only to an authenticated member.**
//! Every `(NodeId, bytes)` on the receiver came over a connection whose client proved
//! possession of that node's registry key while that node was a member: a connection is
//! registered under a node id only if its key is a current member's, a message is handed
//! over only while its connection is still the registered one (checked under the same
//! lock that membership changes take), and a membership change unregisters and closes the
//! connections of the nodes it removes (or whose key it changes). So after `set_members`
//! returns, no message of a removed node reaches the receiver.
//!
//! **Framing.** One long-lived unidirectional stream per connection, carrying messages as
//! `u32` big-endian length, then that many bytes. Why one stream rather than one per
//! message: it keeps each sender's messages in order for free, costs no stream setup per
//! message, and needs no concurrent-stream budget; the price, head-of-line blocking behind
//! a large message, does not matter to a consensus peer that processes one sender in order
//! anyway. A frame longer than `max_message_bytes` closes the connection and is counted;
//! `send` refuses such a message before queueing it.
//!
//! **Bounds and backpressure.** Each peer's queue holds at most `max_queue_per_peer`
//! messages; when it is full the *oldest* is dropped and counted (consensus resends what
//! matters, and newer messages are worth more). Received messages go into one channel of
//! [`INBOUND_CHANNEL_CAPACITY`]; when it is full, each connection's reader waits, so QUIC
//! flow control pushes back on the sender rather than anything buffering without bound.
//! Incoming connections are capped at [`MAX_INCOMING_CONNECTIONS`], handshakes at
//! [`HANDSHAKE_TIMEOUT_MS`], and a silent connection dies after [`IDLE_TIMEOUT_MS`].
//! Worst-case queued memory is `members × (max_queue_per_peer + BULK_QUEUE_PER_PEER) ×
//! max_message_bytes`: the bound is in messages, not bytes (the replica's bulk messages
//! are at most `replica::wire::MAX_INGRESS_BATCH_BYTES`).
//!
//! **Restarts.** A node that comes back on its address with its key (after a crash, or an
//! upgrade's new replica) must be reachable at once, even by peers that never heard its
//! previous process close their connections: nothing else would end those connections
//! before [`IDLE_TIMEOUT_MS`], and a peer would write into them meanwhile. So the
//! endpoint's stateless-reset key and its connection-id key are derived from the node's
//! secret key (`tls::endpoint_config`), not drawn per process: the new endpoint recognizes
//! the old one's connection ids and answers the first packet on such a connection with a
//! QUIC stateless reset carrying the token the old endpoint announced. The peer's
//! connection ends, its sender redials, and the message queued after the one lost in the
//! dead connection goes out on the new one.
//!
//! **Delivery.** Best effort and at most once. A message waits in its peer's queue until
//! a connection exists, so it survives reconnections; but a message already written into
//! a connection that then breaks is lost, as is anything in a removed peer's queue.
//! Messages from one sender arrive in the order sent while one connection lasts.
//!
//! **Membership.** [`Transport::set_members`] replaces the member set: new members are
//! dialed, removed ones (and ones whose key or address changed) have their queue dropped
//! and their connections, both ways, closed; from then on their handshakes are refused.
//! This node may appear in the list (it is skipped when dialing).

mod config;
mod membership;
mod queue;
mod stats;
mod tls;
mod transport;
mod wire;

pub use config::TransportConfig;
pub use membership::Member;
pub use stats::TransportStats;
pub use transport::Transport;

use std::net::SocketAddr;
use types::NodeId;

/// Messages of the bulk class waiting for one peer; beyond it the oldest is dropped.
pub const BULK_QUEUE_PER_PEER: usize = 256;
/// Capacity of the one channel of received messages (messages, not bytes).
pub const INBOUND_CHANNEL_CAPACITY: usize = 1024;
/// At most this many incoming connections, handshaking or established, at once.
pub const MAX_INCOMING_CONNECTIONS: usize = 256;
/// A dial or an accepted handshake that takes longer than this is abandoned.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// A connection that hears nothing for this long is closed (keep-alives are sent well
/// within it, so only a dead peer or path is detected).
pub const IDLE_TIMEOUT_MS: u64 = 20_000;
/// Keep-alive interval on every connection.
pub const KEEP_ALIVE_INTERVAL_MS: u64 = 4_000;
/// `shutdown` waits at most this long for tasks to stop.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;
/// ... and at most this long for closed connections to drain. The close frames go out at
/// once (this leaves the endpoint's driver time to send them); draining (three probe
/// timeouts, seconds) only answers a peer that missed them, and a replica stopping for an
/// upgrade should not hold the switch for it: a peer that missed the close has its
/// connection reset by the new replica's endpoint at its next packet (see "Restarts").
/// (300 ms until issue 17: the stop was then 0.36 s of the downtime, measured stage by
/// stage.) 10 ms was tried once before (cc1551b), when the reset keys were still random
/// per process: under a burst of 10% loss a restarted node then lagged behind its peers
/// until the end of a chaos run (they kept sending into connections whose close they had
/// missed), and it went back to 50 ms. With the keys derived from the node key, that
/// chaos run passed 12 times in 12 at 10 ms (`tests/tests/netns.rs`).
pub const SHUTDOWN_DRAIN_MS: u64 = 10;
/// Largest `reconnect_max_ms` a config may ask for.
pub const RECONNECT_MAX_CEILING_MS: u64 = 600_000;
/// Longest protocol name (an ALPN identifier is at most 255 bytes).
pub const MAX_PROTOCOL_BYTES: usize = 255;

/// Errors of the transport's API. Running connections do not fail the transport: their
/// errors are logged, counted in [`TransportStats`] and retried.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A [`TransportConfig`] rule is broken; the message names it.
    #[error("invalid transport config: {0}")]
    InvalidConfig(String),
    /// A member list entry is inconsistent; the whole list is refused.
    #[error("invalid member {node_id}: {reason}")]
    InvalidMember { node_id: NodeId, reason: String },
    /// Building this node's certificate or TLS configuration failed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind the QUIC endpoint on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// `start` was called outside a tokio runtime.
    #[error("the transport needs a tokio runtime: {0}")]
    NoRuntime(String),
}

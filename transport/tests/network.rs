//! Real QUIC on 127.0.0.1: transports started on port 0, member lists built from their
//! bound addresses. Every wait is bounded by `WAIT`, generous for a slow shared machine;
//! no assertion depends on speed.
// Test code: a failed expectation is a test failure with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crypto::ed25519::Ed25519KeyPair;
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};
use tokio::sync::mpsc::{Receiver, error::TryRecvError};
use transport::{Member, Transport, TransportConfig};
use types::NodeId;

const PROTOCOL: &str = "icup-consensus/1";
const WAIT: Duration = Duration::from_secs(30);
/// Attempts to bind a restarted node's old address while the old socket is released.
const REBIND_ATTEMPTS: u32 = 100;

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn key(seed: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed(&[seed; 32])
}

fn id(seed: u8) -> NodeId {
    key(seed).node_id()
}

fn config() -> TransportConfig {
    let mut cfg = TransportConfig::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), PROTOCOL);
    cfg.reconnect_min_ms = 20;
    cfg.reconnect_max_ms = 200;
    cfg
}

struct Node {
    seed: u8,
    t: Transport,
    rx: Receiver<(NodeId, Vec<u8>)>,
}

impl Node {
    async fn start(seed: u8, cfg: TransportConfig) -> Node {
        let (t, rx) = Transport::start(cfg, key(seed), vec![])
            .await
            .expect("start");
        assert_eq!(t.node_id(), id(seed));
        Node { seed, t, rx }
    }

    fn member(&self) -> Member {
        Member {
            node_id: id(self.seed),
            public_key: key(self.seed).public_key(),
            address: self.t.local_addr(),
        }
    }

    fn id(&self) -> NodeId {
        id(self.seed)
    }

    async fn recv(&mut self) -> (NodeId, Vec<u8>) {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("a message within the wait")
            .expect("the channel is open")
    }

    fn assert_nothing_more(&mut self) {
        match self.rx.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => panic!("node {} received more: {other:?}", self.seed),
        }
    }
}

/// Shuts the nodes down concurrently (each may wait for its connections to drain).
async fn shutdown_all(nodes: impl IntoIterator<Item = Node>) {
    let tasks: Vec<_> = nodes
        .into_iter()
        .map(|n| tokio::spawn(n.t.shutdown()))
        .collect();
    for task in tasks {
        task.await.expect("shutdown");
    }
}

fn members(nodes: &[&Node]) -> Vec<Member> {
    nodes.iter().map(|n| n.member()).collect()
}

/// Waits until `cond` holds, polling; fails the test after `WAIT`.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let polled = tokio::time::timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "timed out waiting until {what}");
}

/// Sender index, sequence number, then a sequence-dependent amount of padding.
fn numbered(sender: u8, seq: u32) -> Vec<u8> {
    let mut msg = vec![sender];
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.resize(5 + (seq as usize % 7) * 300, 0xab);
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_exchange_broadcasts_attributed_to_their_senders_in_order() {
    init_logs();
    let mut nodes = Vec::new();
    for seed in 1..=4 {
        nodes.push(Node::start(seed, config()).await);
    }
    let all = members(&nodes.iter().collect::<Vec<_>>());
    for n in &nodes {
        n.t.set_members(all.clone()).expect("valid members");
    }
    for n in &nodes {
        for seq in 0..100 {
            n.t.broadcast(numbered(n.seed, seq));
        }
    }
    let seed_of: BTreeMap<NodeId, u8> = nodes.iter().map(|n| (n.id(), n.seed)).collect();
    for n in &mut nodes {
        let mut next_seq: BTreeMap<u8, u32> = BTreeMap::new();
        for _ in 0..300 {
            let (from, msg) = n.recv().await;
            let sender = seed_of[&from];
            assert_ne!(sender, n.seed, "a node does not receive its own broadcast");
            assert_eq!(msg[0], sender, "attributed to the node that sent it");
            let seq = u32::from_be_bytes(msg[1..5].try_into().expect("4 bytes"));
            let expected = next_seq.entry(sender).or_insert(0);
            assert_eq!(
                seq, *expected,
                "node {} got {sender}'s messages out of order",
                n.seed
            );
            assert_eq!(msg, numbered(sender, seq));
            *expected += 1;
        }
        assert_eq!(next_seq.values().copied().collect::<Vec<_>>(), vec![100; 3]);
        assert_eq!(n.t.stats().messages_received, 300);
    }
    // Everyone received everything, so everything was written (the counter follows the
    // write, which may be a moment behind the peer's read).
    for n in &nodes {
        eventually("all writes are counted", || {
            n.t.stats().messages_sent == 300
        })
        .await;
        assert_eq!(n.t.stats().dropped_queue_full, 0);
        let mut others: Vec<_> = nodes
            .iter()
            .filter(|o| o.seed != n.seed)
            .map(Node::id)
            .collect();
        others.sort();
        assert_eq!(n.t.connected_peers(), others);
    }
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_key_is_not_a_member_cannot_deliver_anything() {
    init_logs();
    let mut a = Node::start(1, config()).await;
    let b = Node::start(2, config()).await;
    let x = Node::start(9, config()).await;
    let ab = members(&[&a, &b]);
    a.t.set_members(ab.clone()).expect("members");
    b.t.set_members(ab).expect("members");
    // The outsider believes it belongs: it dials `a` with `a`'s real key pinned.
    x.t.set_members(members(&[&a, &x])).expect("members");
    x.t.send(a.id(), b"from an outsider".to_vec());

    // Two refusals: the outsider tried, was refused, backed off and was refused again.
    eventually("a refused the outsider twice", || {
        a.t.stats().rejected_connections >= 2
    })
    .await;
    assert_eq!(x.t.stats().connections_established, 0);
    assert_eq!(x.t.stats().messages_sent, 0);
    assert!(x.t.connected_peers().is_empty());

    // A member still gets through, and is the only thing `a` ever received.
    b.t.send(a.id(), b"from a member".to_vec());
    assert_eq!(a.recv().await, (b.id(), b"from a member".to_vec()));
    a.assert_nothing_more();
    assert_eq!(a.t.stats().messages_received, 1);
    shutdown_all([a, b, x]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_presenting_another_key_than_the_registry_lists_is_refused_by_the_dialer() {
    init_logs();
    let a = Node::start(1, config()).await;
    let mut m = Node::start(3, config()).await;
    // The registry says node 2 is at `m`'s address; `m` answers there with its own key.
    let impersonated = Member {
        node_id: id(2),
        public_key: key(2).public_key(),
        address: m.t.local_addr(),
    };
    a.t.set_members(vec![a.member(), impersonated])
        .expect("members");
    // `m` would accept `a` as a client, so a refusal can only come from `a`'s side.
    m.t.set_members(members(&[&a, &m])).expect("members");
    a.t.send(id(2), b"for node 2 only".to_vec());

    eventually("a refused the impostor twice", || {
        a.t.stats().rejected_servers >= 2
    })
    .await;
    let stats = a.t.stats();
    assert_eq!(stats.connections_established, 0);
    assert_eq!(stats.messages_sent, 0);
    assert!(a.t.connected_peers().is_empty());
    assert_eq!(m.t.stats().messages_received, 0);
    m.assert_nothing_more();
    shutdown_all([a, m]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_restarts_on_the_same_address_gets_what_is_sent_after_it_is_back() {
    init_logs();
    let mut a = Node::start(1, config()).await;
    let mut b = Node::start(2, config()).await;
    let ab = members(&[&a, &b]);
    a.t.set_members(ab.clone()).expect("members");
    b.t.set_members(ab.clone()).expect("members");
    a.t.send(b.id(), b"before".to_vec());
    assert_eq!(b.recv().await, (a.id(), b"before".to_vec()));

    let b_addr = b.t.local_addr();
    b.t.shutdown().await;
    eventually("a sees b gone", || !a.t.connected_peers().contains(&id(2))).await;

    // Same key, same address; the old socket may take a moment to be released.
    let mut cfg = config();
    cfg.listen = b_addr;
    let mut restarted = None;
    for _ in 0..REBIND_ATTEMPTS {
        match Transport::start(cfg.clone(), key(2), ab.clone()).await {
            Ok(started) => {
                restarted = Some(started);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let (t, rx) = restarted.expect("b restarts on its old address");
    b = Node { seed: 2, t, rx };
    assert_eq!(b.t.local_addr(), b_addr);

    eventually("a redialed b", || a.t.stats().reconnects >= 1).await;
    for i in 0..10u8 {
        a.t.send(b.id(), vec![b'n', i]);
    }
    for i in 0..10u8 {
        assert_eq!(b.recv().await, (a.id(), vec![b'n', i]));
    }
    // And the other way: the restarted node dials `a` on its own.
    b.t.send(a.id(), b"back".to_vec());
    assert_eq!(a.recv().await, (b.id(), b"back".to_vec()));
    shutdown_all([a, b]).await;
}

/// A runtime of its own for one node, so the node can die with it.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A peer that dies without its close reaching anyone (a crash, or the close frames lost
/// on the way) and comes back on the same address with the same key is sent to again well
/// before the idle timeout: its new endpoint answers the old connection's packets with a
/// stateless reset (the reset key comes from the node key, so it is the one the old
/// endpoint announced), and the sender redials instead of writing into a dead connection
/// until [`transport::IDLE_TIMEOUT_MS`]. With a random reset key per endpoint (quinn's
/// default) nothing arrives within the bound and this test fails.
#[test]
fn a_peer_that_died_without_a_close_is_sent_to_again_once_it_is_back() {
    init_logs();
    let rt_a = runtime();
    let rt_b = runtime();
    let a = rt_a.block_on(Node::start(1, config()));
    let mut b = rt_b.block_on(Node::start(2, config()));
    let ab = members(&[&a, &b]);
    a.t.set_members(ab.clone()).expect("members");
    b.t.set_members(ab.clone()).expect("members");
    a.t.send(b.id(), b"before".to_vec());
    assert_eq!(rt_b.block_on(b.recv()), (a.id(), b"before".to_vec()));

    // The crash: b's tasks stop where they are, nothing more is sent.
    let b_addr = b.t.local_addr();
    rt_b.shutdown_background();
    drop(b);
    assert!(
        a.t.connected_peers().contains(&id(2)),
        "a must not have heard of b's end, or this tests nothing"
    );

    let mut cfg = config();
    cfg.listen = b_addr;
    let (t, rx) = rt_a.block_on(async {
        for _ in 0..REBIND_ATTEMPTS {
            if let Ok(started) = Transport::start(cfg.clone(), key(2), ab.clone()).await {
                return started;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("b restarts on its old address")
    });
    let mut b = Node { seed: 2, t, rx };
    // Whatever went into the dead connection is lost; what a sends once it has redialed
    // arrives, well before the idle timeout would have ended that connection.
    let bound = Duration::from_millis(transport::IDLE_TIMEOUT_MS / 2);
    let got = rt_a.block_on(async {
        tokio::time::timeout(bound, async {
            for i in 0u32.. {
                a.t.send(b.id(), numbered(1, i));
                if let Ok(Some(got)) =
                    tokio::time::timeout(Duration::from_millis(100), b.rx.recv()).await
                {
                    return got;
                }
            }
            unreachable!()
        })
        .await
    });
    let (from, _) = got.expect("a reaches the restarted b before the idle timeout");
    assert_eq!(from, a.id());
    assert!(a.t.stats().reconnects >= 1, "a redialed b");
    rt_a.block_on(shutdown_all([a, b]));
}

/// A node dialing a peer that is not up yet (its QUIC Initial unanswered, retransmitted
/// on a timer near a second, later longer) dials again as soon as that peer connects to
/// it: the peer is up. This is every node after an upgrade, the replicas starting one
/// after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_comes_up_later_is_dialed_again_as_soon_as_it_connects() {
    init_logs();
    // `b`'s address, free until `b` starts on it.
    let b_addr = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("a free port");
    let mut a_cfg = config();
    // Backoffs long enough that only the kick can explain a quick connection.
    a_cfg.reconnect_min_ms = 60_000;
    a_cfg.reconnect_max_ms = 60_000;
    let mut a = Node::start(1, a_cfg).await;
    let b_member = Member {
        node_id: id(2),
        public_key: key(2).public_key(),
        address: b_addr,
    };
    a.t.set_members(vec![a.member(), b_member])
        .expect("members");
    a.t.send(id(2), b"queued while b was down".to_vec());
    // Let `a`'s first Initial go unanswered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut cfg = config();
    cfg.listen = b_addr;
    let (t, rx) = Transport::start(cfg, key(2), vec![])
        .await
        .expect("b starts");
    let mut b = Node { seed: 2, t, rx };
    b.t.set_members(members(&[&a, &b])).expect("members");
    assert_eq!(
        b.recv().await,
        (a.id(), b"queued while b was down".to_vec())
    );
    assert!(a.t.stats().dials_kicked >= 1, "{:?}", a.t.stats());
    b.t.send(a.id(), b"and back".to_vec());
    assert_eq!(a.recv().await, (b.id(), b"and back".to_vec()));
    shutdown_all([a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_messages_are_refused_on_send_and_on_receipt() {
    init_logs();
    let a = Node::start(1, config()).await;
    let mut small = config();
    small.max_message_bytes = 1000;
    let mut b = Node::start(2, small).await;
    let ab = members(&[&a, &b]);
    a.t.set_members(ab.clone()).expect("members");
    b.t.set_members(ab).expect("members");

    // `b` refuses to send what it would refuse to receive.
    b.t.send(a.id(), vec![1; 1001]);
    assert_eq!(b.t.stats().dropped_oversize, 1);

    a.t.send(b.id(), vec![2; 1000]);
    assert_eq!(b.recv().await, (a.id(), vec![2; 1000]));
    // `a` allows more than `b` does: `b` closes the connection on the header.
    a.t.send(b.id(), vec![3; 1001]);
    eventually("b refused the oversize frame", || {
        b.t.stats().oversize_received == 1
    })
    .await;
    eventually("a redialed b", || a.t.stats().reconnects >= 1).await;
    a.t.send(b.id(), b"after".to_vec());
    assert_eq!(b.recv().await, (a.id(), b"after".to_vec()));
    b.assert_nothing_more();
    assert_eq!(b.t.stats().messages_received, 2);
    shutdown_all([a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_oldest_messages_and_counts_them() {
    init_logs();
    let mut cfg = config();
    cfg.max_queue_per_peer = 4;
    let a = Node::start(1, cfg).await;
    let mut b = Node::start(2, config()).await;
    a.t.set_members(members(&[&a, &b])).expect("members");
    // `b` does not know `a` yet: it refuses `a`, so `a`'s queue cannot drain.
    b.t.set_members(members(&[&b])).expect("members");
    for i in 0..10u8 {
        a.t.send(b.id(), vec![i]);
    }
    assert_eq!(a.t.stats().dropped_queue_full, 6);
    eventually("b refused a", || b.t.stats().rejected_connections >= 1).await;
    assert_eq!(a.t.stats().messages_sent, 0);

    // Once `b` admits `a`, the four newest arrive, in order.
    b.t.set_members(members(&[&a, &b])).expect("members");
    for i in 6..10u8 {
        assert_eq!(b.recv().await, (a.id(), vec![i]));
    }
    a.t.send(b.id(), vec![100]);
    assert_eq!(b.recv().await, (a.id(), vec![100]));
    b.assert_nothing_more();
    assert_eq!(a.t.stats().dropped_queue_full, 6);
    shutdown_all([a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_messages_wait_behind_consensus_ones_and_drop_their_own_oldest() {
    init_logs();
    let a = Node::start(1, config()).await;
    let mut b = Node::start(2, config()).await;
    a.t.set_members(members(&[&a, &b])).expect("members");
    // `b` refuses `a` for now: both of `a`'s queues fill.
    b.t.set_members(members(&[&b])).expect("members");
    let bulk = transport::BULK_QUEUE_PER_PEER;
    for i in 0..bulk + 3 {
        a.t.broadcast_bulk(format!("bulk {i}").into_bytes());
    }
    for i in 0..3u8 {
        a.t.send(b.id(), vec![i]);
    }
    let stats = a.t.stats();
    assert_eq!(stats.dropped_bulk_queue_full, 3, "{stats:?}");
    assert_eq!(
        stats.dropped_queue_full, 0,
        "a bulk burst evicted a consensus message"
    );
    eventually("b refused a", || b.t.stats().rejected_connections >= 1).await;

    // Admitted: the consensus messages come first, then the newest bulk ones in order.
    b.t.set_members(members(&[&a, &b])).expect("members");
    for i in 0..3u8 {
        assert_eq!(b.recv().await, (a.id(), vec![i]));
    }
    for i in 3..bulk + 3 {
        assert_eq!(b.recv().await, (a.id(), format!("bulk {i}").into_bytes()));
    }
    b.assert_nothing_more();
    shutdown_all([a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_member_closes_its_connections_and_refuses_it_afterwards() {
    init_logs();
    let mut a = Node::start(1, config()).await;
    let mut b = Node::start(2, config()).await;
    let c = Node::start(3, config()).await;
    let abc = members(&[&a, &b, &c]);
    for n in [&a, &b, &c] {
        n.t.set_members(abc.clone()).expect("members");
    }
    // Connections both ways between `a` and `b`.
    b.t.send(a.id(), b"b1".to_vec());
    assert_eq!(a.recv().await, (b.id(), b"b1".to_vec()));
    a.t.send(b.id(), b"a1".to_vec());
    assert_eq!(b.recv().await, (a.id(), b"a1".to_vec()));
    assert!(a.t.connected_peers().contains(&b.id()));
    // `b`'s connection to `c` too, so that `b`'s connection counter stays put from here.
    eventually("b is connected to a and c", || {
        b.t.connected_peers().len() == 2
    })
    .await;
    let b_connections = b.t.stats().connections_established;
    let refused_before = a.t.stats().rejected_connections;

    a.t.set_members(members(&[&a, &c])).expect("members");
    assert!(!a.t.connected_peers().contains(&b.id()));
    // `b`'s connection to `a` was closed by `a`; its redials are refused.
    eventually("b lost its connection to a", || {
        !b.t.connected_peers().contains(&id(1))
    })
    .await;
    eventually("a refused b's redial", || {
        a.t.stats().rejected_connections > refused_before
    })
    .await;
    b.t.send(a.id(), b"b2, after removal".to_vec());
    c.t.send(a.id(), b"c1".to_vec());
    assert_eq!(a.recv().await, (c.id(), b"c1".to_vec()));
    a.assert_nothing_more();
    assert_eq!(b.t.stats().connections_established, b_connections);
    // Nor does `a` send to a removed node.
    a.t.send(b.id(), b"a2".to_vec());
    assert_eq!(a.t.stats().dropped_unknown_peer, 1);
    b.assert_nothing_more();
    shutdown_all([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_another_wire_protocol_do_not_connect() {
    init_logs();
    let mut a = Node::start(1, config()).await;
    let mut other = config();
    other.protocol = "icup-consensus/2".into();
    let b = Node::start(2, other).await;
    let ab = members(&[&a, &b]);
    a.t.set_members(ab.clone()).expect("members");
    b.t.set_members(ab).expect("members");
    b.t.send(a.id(), b"v2 bytes".to_vec());
    eventually("b failed to connect twice", || {
        b.t.stats().connect_failures >= 2
    })
    .await;
    assert_eq!(b.t.stats().connections_established, 0);
    a.assert_nothing_more();
    assert_eq!(a.t.stats().messages_received, 0);
    shutdown_all([a, b]).await;
}

#[tokio::test]
async fn an_inconsistent_member_list_is_refused_whole() {
    let (t, _rx) = Transport::start(config(), key(1), vec![])
        .await
        .expect("start");
    let mut forged = Member {
        node_id: id(2),
        public_key: key(3).public_key(),
        address: SocketAddr::from((Ipv4Addr::LOCALHOST, 9)),
    };
    assert!(t.set_members(vec![forged.clone()]).is_err());
    forged.public_key = key(2).public_key();
    assert!(t.set_members(vec![forged.clone(), forged.clone()]).is_err());
    // The old (empty) set stayed: nothing to send to.
    t.send(id(2), b"x".to_vec());
    assert_eq!(t.stats().dropped_unknown_peer, 1);
    let mut bad = config();
    bad.reconnect_min_ms = 0;
    let err = Transport::start(bad, key(1), vec![])
        .await
        .expect_err("invalid config");
    assert!(err.to_string().contains("reconnect_min_ms"), "{err}");
    t.shutdown().await;
}

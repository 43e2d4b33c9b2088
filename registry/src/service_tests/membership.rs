//! Membership proposals (`add_nodes`, `remove_nodes`): what is refused, with which words,
//! and that an adopted change moves the members and keeps the dealt keys' holders.

use super::*;
use crate::genesis::GenesisSubnet;
use crypto::threshold::{deal, high_threshold, low_threshold};
use types::NodeId;

/// A registry with the fixture's subnet of four, three spare nodes, and a second subnet
/// whose one member is the third spare. The second spare has no dealing encryption key.
fn with_spares() -> (Fixture<MemoryStore>, Vec<NodeId>, SubnetId) {
    let mut net = network(3);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(8);
    net.add_spares(3, 20_000, &mut rng);
    let spares: Vec<NodeId> = net.spares.iter().map(|s| s.record.node_id).collect();
    let no_key = net.genesis.nodes.len() - 2;
    net.genesis.nodes[no_key].dealing_encryption_key = None;
    let low = deal(1, low_threshold(1), &mut rng).expect("deal");
    let high = deal(1, high_threshold(1), &mut rng).expect("deal");
    let other = SubnetId::from_threshold_public_key(&high.public.group_key.to_bytes());
    let first = net.genesis.subnets[0].clone();
    net.genesis.subnets.push(GenesisSubnet {
        subnet_id: other,
        members: vec![spares[2]],
        low_threshold_key: low.public,
        high_threshold_key: high.public,
        ..first
    });
    let mut reg = Registry::open(MemoryStore::new()).expect("open");
    reg.init(&net.genesis.mutations(), 4 * 24 * HOUR_NS)
        .expect("init");
    let f = Fixture {
        reg,
        net,
        now_ns: HOUR_NS,
        nonce: 0,
    };
    (f, spares, other)
}

fn add(subnet: SubnetId, nodes: &[NodeId]) -> ProposalKind {
    ProposalKind::AddNodes {
        subnet,
        nodes: nodes.to_vec(),
    }
}

fn remove(subnet: SubnetId, nodes: &[NodeId]) -> ProposalKind {
    ProposalKind::RemoveNodes {
        subnet,
        nodes: nodes.to_vec(),
    }
}

/// Each refused membership proposal says why, and creates neither a proposal nor a
/// registry version.
#[test]
fn refused_membership_proposals_name_the_node_and_change_nothing() {
    let (mut f, spares, other) = with_spares();
    let subnet = f.subnet();
    let members = f.subnet_record().members;
    let unknown = NodeId([3; 32]);
    let too_many: Vec<NodeId> = (0..41u8).map(|i| NodeId([i; 32])).collect();
    let table: Vec<(ProposalKind, String)> = vec![
        (
            add(subnet, &[unknown]),
            format!("node {unknown} is not registered"),
        ),
        (
            add(subnet, &[spares[2]]),
            format!("node {} is a member of subnet {other}", spares[2]),
        ),
        (
            add(subnet, &[members[1]]),
            format!("node {} is already a member of subnet {subnet}", members[1]),
        ),
        (
            add(subnet, &[spares[1]]),
            format!("node {} has no dealing encryption key", spares[1]),
        ),
        (
            add(subnet, &[spares[0], spares[0]]),
            format!("node {} is named twice", spares[0]),
        ),
        (add(subnet, &[]), "no node named".into()),
        (add(subnet, &too_many), "41 nodes named; at most 40".into()),
        (
            add(SubnetId([9; 32]), &[spares[0]]),
            "does not exist".into(),
        ),
        (
            remove(subnet, &[spares[0]]),
            format!("node {} is not a member of subnet {subnet}", spares[0]),
        ),
        (
            remove(subnet, &members),
            format!("removing every member would leave subnet {subnet} empty"),
        ),
        (
            remove(other, &[spares[2]]),
            format!("removing every member would leave subnet {other} empty"),
        ),
    ];
    for (kind, message) in table {
        let version = f.reg.latest_version();
        let proposals = f.reg.governance().proposals.len();
        let err = f.propose(0, kind.clone()).expect_err("must be refused");
        assert!(err.to_string().contains(&message), "{kind:?}: {err}");
        assert_eq!(f.reg.latest_version(), version, "{kind:?}");
        assert_eq!(f.reg.governance().proposals.len(), proposals, "{kind:?}");
    }
}

/// Adopted changes move the members, one registry version each, while the record's
/// threshold keys stay described by the committee they were dealt to; a recovery CUP
/// would name that committee, so it is refused once the members differ.
#[test]
fn adopted_changes_move_the_members_and_keep_the_key_holders() {
    let (mut f, spares, _) = with_spares();
    let subnet = f.subnet();
    let genesis = f.subnet_record();
    assert_eq!(genesis.key_holders, None);

    let id = f.propose(0, add(subnet, &[spares[0]])).expect("valid");
    let before = f.reg.latest_version();
    assert_eq!(f.vote(1, id, Vote::Yes), Ok(ProposalStatus::Executed));
    assert_eq!(
        f.reg.latest_version(),
        RegistryVersion::new(before.get() + 1)
    );
    let added = f.subnet_record();
    let mut expected = genesis.members.clone();
    expected.push(spares[0]);
    assert_eq!(added.members, expected);
    assert_eq!(added.key_holders.as_ref(), Some(&genesis.members));
    assert_eq!(added.high_threshold_key, genesis.high_threshold_key);

    let gone = [genesis.members[0], genesis.members[2]];
    let id = f.propose(0, remove(subnet, &gone)).expect("valid");
    assert_eq!(f.vote(1, id, Vote::Yes), Ok(ProposalStatus::Executed));
    let removed = f.subnet_record();
    assert_eq!(
        removed.members,
        vec![genesis.members[1], genesis.members[3], spares[0]]
    );
    assert_eq!(removed.key_holders.as_ref(), Some(&genesis.members));

    f.elect("2.0.0");
    let before = f.reg.latest_version();
    let err = f
        .propose(
            0,
            ProposalKind::RecoverSubnet {
                subnet,
                version: v("2.0.0"),
                height: Height::new(30),
                state_hash: CryptoHash([5; 32]),
            },
        )
        .expect_err("refused");
    assert!(err.to_string().contains("members changed"), "{err}");
    assert_eq!(f.reg.latest_version(), before);
}

//! Whether a node takes part in its subnet or only follows it: its own shares in the
//! finalized chain's notarizations and finalizations.

use super::*;

#[test]
fn own_share_height_is_the_highest_finalized_height_carrying_this_nodes_share() {
    let mut net = Net::new(4, &[WALL; 4]);
    // Node 3 hears nothing and says nothing: the other three finalize without it.
    net.cut[3] = true;
    net.settle();
    net.advance(150 * MS);
    for i in 0..3 {
        let f = net.cores[i].finalized_height();
        assert!(f >= Height::new(1), "node {i}");
        assert_eq!(net.cores[i].own_share_height(), Some(f), "node {i}");
    }
    assert_eq!(net.cores[3].own_share_height(), None);
    // It then hears what the others said: it follows their chain, on which no
    // notarization or finalization carries its share.
    let said: Vec<(NodeIndex, Envelope)> = (0..3)
        .flat_map(|i| {
            net.log[i].iter().filter_map(move |a| match a {
                Action::Broadcast(e) => Some((i as NodeIndex, e.clone())),
                _ => None,
            })
        })
        .collect();
    let now = net.clocks[3];
    for (from, envelope) in said {
        net.cores[3].on_event(now, Event::Message { from, envelope });
    }
    assert!(net.cores[3].finalized_height() >= Height::new(1));
    assert_eq!(net.cores[3].own_share_height(), None);
}

//! The current member set, shared by the verifier (who may connect), the acceptor (who
//! sent this) and the dialer (where to, and which key to expect).

use crate::TransportError;
use crypto::ed25519::Ed25519PublicKey;
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{PoisonError, RwLock},
};
use types::NodeId;

/// One subnet member as the registry lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The node's id; it must be `public_key.node_id()` (a registry invariant, checked
    /// again here).
    pub node_id: NodeId,
    /// The node's registry ed25519 key, which its TLS certificate must carry.
    pub public_key: Ed25519PublicKey,
    /// Where it accepts QUIC connections.
    pub address: SocketAddr,
}

/// A validated member set: ids and keys are unique, and each id is its key's.
#[derive(Clone, Debug, Default)]
pub(crate) struct MemberTable {
    by_id: BTreeMap<NodeId, Member>,
    by_key: BTreeMap<Ed25519PublicKey, NodeId>,
}

impl MemberTable {
    pub(crate) fn new(members: Vec<Member>) -> Result<Self, TransportError> {
        let mut table = Self::default();
        for m in members {
            let invalid = |reason: String| TransportError::InvalidMember {
                node_id: m.node_id,
                reason,
            };
            if m.public_key.node_id() != m.node_id {
                return Err(invalid(format!(
                    "its key {} belongs to node {}",
                    m.public_key,
                    m.public_key.node_id()
                )));
            }
            if table.by_id.contains_key(&m.node_id) {
                return Err(invalid("listed twice".into()));
            }
            // Distinct ids come from distinct keys (the id is the key's hash), so the key
            // index cannot collide once the id check above passed.
            table.by_key.insert(m.public_key, m.node_id);
            table.by_id.insert(m.node_id, m);
        }
        Ok(table)
    }

    pub(crate) fn get(&self, node: &NodeId) -> Option<&Member> {
        self.by_id.get(node)
    }

    pub(crate) fn node_of_key(&self, key: &Ed25519PublicKey) -> Option<NodeId> {
        self.by_key.get(key).copied()
    }

    pub(crate) fn members(&self) -> impl Iterator<Item = &Member> {
        self.by_id.values()
    }
}

/// The member set behind a lock, shared with the TLS verifiers.
#[derive(Debug, Default)]
pub(crate) struct Membership(RwLock<MemberTable>);

impl Membership {
    #[cfg(test)]
    pub(crate) fn new(table: MemberTable) -> Self {
        Self(RwLock::new(table))
    }

    /// Runs `f` on the current set. The lock is never held across an await; a panic
    /// while holding it cannot leave the table half-written (it is replaced whole), so a
    /// poisoned lock is simply taken over.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&MemberTable) -> T) -> T {
        f(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn replace(&self, table: MemberTable) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = table;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypto::ed25519::Ed25519KeyPair;

    fn member(seed: u8) -> Member {
        let key = Ed25519KeyPair::from_seed(&[seed; 32]).public_key();
        Member {
            node_id: key.node_id(),
            public_key: key,
            address: SocketAddr::from(([127, 0, 0, 1], 4000 + u16::from(seed))),
        }
    }

    #[test]
    fn a_table_refuses_a_foreign_key_and_duplicates() {
        let table = MemberTable::new(vec![member(1), member(2)]).expect("valid");
        assert_eq!(
            table.node_of_key(&member(2).public_key),
            Some(member(2).node_id)
        );
        assert_eq!(table.node_of_key(&member(3).public_key), None);

        let mut forged = member(1);
        forged.public_key = member(2).public_key;
        let err = MemberTable::new(vec![forged]).expect_err("id is not the key's");
        assert!(err.to_string().contains("belongs to node"), "{err}");

        let err = MemberTable::new(vec![member(1), member(1)]).expect_err("duplicate");
        assert!(err.to_string().contains("listed twice"), "{err}");
    }
}

//! Domain tags: every signature and every protocol hash is computed over
//! `(domain tag, bytes)`, never over bare bytes, so that a signature made for one purpose
//! (say, a notarization share) can never be replayed as another (say, a CUP share).
//!
//! All tags live in this one module. The tag is length-prefixed in [`Domain::frame`], so
//! no tag is a prefix-ambiguity of another.

/// A domain-separation tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Domain(&'static str);

impl Domain {
    pub const fn as_str(self) -> &'static str {
        self.0
    }

    /// The bytes that are actually signed or hashed: `len(tag) || tag || bytes`.
    pub fn frame(self, bytes: &[u8]) -> Vec<u8> {
        let tag = self.0.as_bytes();
        let mut out = Vec::with_capacity(1 + tag.len() + bytes.len());
        // Tags are short ASCII constants; the length always fits in one byte.
        out.push(tag.len() as u8);
        out.extend_from_slice(tag);
        out.extend_from_slice(bytes);
        out
    }
}

// Hashes.
/// `NodeId = H(NODE_ID, ed25519 public key)`.
pub const NODE_ID: Domain = Domain("ic-node-id");
/// `SubnetId = H(SUBNET_ID, subnet threshold public key)`.
pub const SUBNET_ID: Domain = Domain("ic-subnet-id");
/// `NetworkId = H(NETWORK_ID, registry root public key)`.
pub const NETWORK_ID: Domain = Domain("ic-network-id");
/// Hash of a consensus block.
pub const BLOCK_HASH: Domain = Domain("ic-block-hash");
/// The replicated state at a height: `(height, root of the state tree)`.
pub const STATE_HASH: Domain = Domain("ic-state-hash");
/// State tree (`replica::state::tree`): a stored value with the schema it is stored in.
pub const STATE_TREE_VALUE: Domain = Domain("ic-state-tree-value");
/// State tree: an entry, `(key, value hash)`.
pub const STATE_TREE_LEAF: Domain = Domain("ic-state-tree-leaf");
/// State tree: an inner node, `left || right`.
pub const STATE_TREE_NODE: Domain = Domain("ic-state-tree-node");
/// State tree: a bucket, `(entry count, root of its entries)`.
pub const STATE_TREE_BUCKET: Domain = Domain("ic-state-tree-bucket");
/// State tree: which bucket a key falls in.
pub const STATE_TREE_BUCKET_OF: Domain = Domain("ic-state-tree-bucket-of");
/// The block hash and beacon of a CUP built from registry contents (genesis, recovery).
pub const REGISTRY_CUP: Domain = Domain("ic-registry-cup");
/// Checksum of a CUP file envelope (integrity on disk, not authenticity).
pub const CUP_FILE_CHECKSUM: Domain = Domain("ic-cup-file-checksum");
/// Checksum stored beside each user value (state schema 2 and later).
pub const STATE_VALUE_CHECKSUM: Domain = Domain("ic-state-value-checksum");

// Signatures.
/// A block maker's ed25519 signature on its block proposal.
pub const BLOCK_PROPOSAL: Domain = Domain("ic-block-proposal");
/// A node's ed25519 signature on its readiness for a new release.
pub const UPGRADE_READINESS: Domain = Domain("ic-upgrade-readiness");
/// BLS multi-signature share on a block (notarization).
pub const NOTARIZATION: Domain = Domain("ic-notarization");
/// BLS multi-signature share on a block (finalization).
pub const FINALIZATION: Domain = Domain("ic-finalization");
/// Low-threshold signature share on the previous random beacon.
pub const RANDOM_BEACON: Domain = Domain("ic-random-beacon");
/// High-threshold signature share on a state hash at a height.
pub const STATE_CERTIFICATION: Domain = Domain("ic-state-certification");
/// High-threshold signature share on the encoded CUP content.
pub const CUP_CONTENT: Domain = Domain("ic-cup-content");
/// A user's ed25519 signature on an ingress message.
pub const INGRESS: Domain = Domain("ic-ingress");
/// A node's ed25519 signature on its CUP request to a peer's orchestrator.
pub const CUP_REQUEST: Domain = Domain("ic-cup-request");
/// A node's ed25519 signature on its orchestrator's CUP endpoint answer.
pub const CUP_RESPONSE: Domain = Domain("ic-cup-response");
/// The registry's ed25519 signature on a response.
pub const REGISTRY_RESPONSE: Domain = Domain("ic-registry-response");
/// A neuron controller's ed25519 signature on a proposal submission.
pub const GOVERNANCE_PROPOSAL: Domain = Domain("ic-governance-proposal");
/// A neuron controller's ed25519 signature on a vote.
pub const GOVERNANCE_VOTE: Domain = Domain("ic-governance-vote");
/// The hash that binds a resharing's dealings to it (subnet, start, committees, keys).
pub const RESHARING: Domain = Domain("ic-resharing");
/// A committee member's ed25519 signature on its resharing dealing.
pub const RESHARING_DEALING: Domain = Domain("ic-resharing-dealing");
/// A receiver's ed25519 signature on its complaint about a dealing.
pub const RESHARING_COMPLAINT: Domain = Domain("ic-resharing-complaint");
/// The registry's chain of deltas kept in a replicated state (`registry::store::kv`).
pub const REGISTRY_CHAIN: Domain = Domain("ic-registry-chain");
/// A node's QUIC stateless-reset key, from its key's secret seed (`transport`): a
/// restarted node's endpoint can then reset connections its previous one held.
pub const TRANSPORT_RESET_KEY: Domain = Domain("ic-transport-reset-key");

/// Every tag, for the test that checks they are distinct.
pub const ALL: &[Domain] = &[
    NODE_ID,
    SUBNET_ID,
    NETWORK_ID,
    BLOCK_HASH,
    STATE_HASH,
    STATE_TREE_VALUE,
    STATE_TREE_LEAF,
    STATE_TREE_NODE,
    STATE_TREE_BUCKET,
    STATE_TREE_BUCKET_OF,
    REGISTRY_CUP,
    CUP_FILE_CHECKSUM,
    STATE_VALUE_CHECKSUM,
    BLOCK_PROPOSAL,
    UPGRADE_READINESS,
    NOTARIZATION,
    FINALIZATION,
    RANDOM_BEACON,
    STATE_CERTIFICATION,
    CUP_CONTENT,
    INGRESS,
    CUP_REQUEST,
    CUP_RESPONSE,
    REGISTRY_RESPONSE,
    GOVERNANCE_PROPOSAL,
    GOVERNANCE_VOTE,
    RESHARING,
    RESHARING_DEALING,
    RESHARING_COMPLAINT,
    REGISTRY_CHAIN,
    TRANSPORT_RESET_KEY,
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn tags_are_distinct_ascii_and_short() {
        let set: BTreeSet<&str> = ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(set.len(), ALL.len(), "two domains share a tag");
        for d in ALL {
            assert!(d.as_str().is_ascii() && d.as_str().len() < 64, "{d:?}");
        }
    }

    #[test]
    fn frames_differ_across_domains_for_the_same_bytes() {
        // "ab" + "c" vs "a" + "bc" style ambiguity is excluded by the length prefix.
        assert_ne!(Domain("ab").frame(b"c"), Domain("a").frame(b"bc"));
        assert_ne!(NOTARIZATION.frame(b"x"), FINALIZATION.frame(b"x"));
    }
}

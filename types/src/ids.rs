use crate::{CryptoHash, ParseError, domain, parse_hex32};
use std::{fmt, str::FromStr};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        $crate::hex_serde!($name);

        impl $name {
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            // Ids show up in every log line; eight hex digits are enough to tell them apart.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({}…)", stringify!($name), &hex::encode(&self.0[..4]))
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex32(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A node's identity: the domain-separated SHA-256 of its ed25519 public key, so that
    /// the id alone pins the key that must sign for it.
    NodeId
);
id_type!(
    /// A subnet's identity: the domain-separated SHA-256 of its threshold public key as
    /// dealt at genesis.
    SubnetId
);

id_type!(
    /// A network's identity: the domain-separated SHA-256 of its registry's root public
    /// key. Everything signed for use on one network (ingress, proposals, ballots, CUP
    /// requests) names it, so that nothing signed for one network is valid on another.
    NetworkId
);

impl NetworkId {
    pub fn from_registry_root_key(public_key: &[u8; 32]) -> Self {
        Self(CryptoHash::of(domain::NETWORK_ID, public_key).0)
    }
}

impl NodeId {
    pub fn from_ed25519_public_key(public_key: &[u8; 32]) -> Self {
        Self(CryptoHash::of(domain::NODE_ID, public_key).0)
    }
}

impl SubnetId {
    pub fn from_threshold_public_key(public_key: &[u8]) -> Self {
        Self(CryptoHash::of(domain::SUBNET_ID, public_key).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn node_and_subnet_ids_round_trip_through_text(bytes in any::<[u8; 32]>()) {
            let n = NodeId(bytes);
            prop_assert_eq!(n.to_string().parse::<NodeId>(), Ok(n));
            let s = SubnetId(bytes);
            prop_assert_eq!(s.to_string().parse::<SubnetId>(), Ok(s));
        }
    }

    #[test]
    fn node_id_is_derived_from_the_key_and_differs_per_key() {
        let a = NodeId::from_ed25519_public_key(&[1; 32]);
        assert_eq!(a, NodeId::from_ed25519_public_key(&[1; 32]));
        assert_ne!(a, NodeId::from_ed25519_public_key(&[2; 32]));
        // Not the bare SHA-256: a node id cannot be confused with another hash of the key.
        assert_ne!(a.0, CryptoHash::sha256(&[1; 32]).0);
    }
}

#[cfg(test)]
mod serde_tests {
    use super::*;

    #[test]
    fn json_is_hex_and_binary_is_the_raw_bytes() {
        let id = NodeId([0xab; 32]);
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<NodeId>(&json).expect("back"), id);
        assert_eq!(crate::codec::encode(&id), vec![0xab; 32]);
        assert_eq!(crate::codec::decode::<NodeId>(&[0xab; 32], 32), Ok(id));
        assert!(serde_json::from_str::<NodeId>("\"abc\"").is_err());
    }
}

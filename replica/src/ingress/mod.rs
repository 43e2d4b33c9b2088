//! Signed ingress: what users send (the message itself is the `ingress` crate's), how
//! this release checks it, and the pool blocks draw from.
//!
//! An update is `(network, sender key, nonce, expiry, operation)` signed by the sender
//! (domain `INGRESS`). Its id is the hash of that content. It is valid only on the network
//! it names (the [`NetworkId`] of the registry's root key, which a replica reads from its
//! node directory and serves as `network_id` in its status), while `expiry` has not
//! passed, and executes at most once: a replay (same id) is refused by the pool and
//! skipped by execution, which records executed ids in the replicated state until they
//! expire. So an update signed for one network (a test network, say) is never valid on
//! another that knows the same user key.

pub use ingress::{
    Ingress, IngressError, MAX_EXPIRY_AHEAD_NS, MAX_KEY_BYTES, MAX_VALUE_BYTES, Operation,
    SignedIngress,
};
use std::collections::BTreeMap;
use types::{CryptoHash, NetworkId, codec};

mod verified;
pub use verified::{MAX_VERIFIED_SIGNATURES, VerifiedSignatures};

/// The most bytes (encoded updates) of one sender in one block: a block maker leaves
/// the rest for later blocks, and execution skips what a block carries beyond it, so no
/// sender can fill blocks alone. A quarter of a block's payload.
pub const MAX_BLOCK_BYTES_PER_SENDER: usize = 512 * 1024;
/// The replica's pool lets one sender hold 1/8 of it (of its messages and its bytes).
pub const POOL_SHARE_PER_SENDER_DIVISOR: usize = 8;

/// Whether this release executes the method.
pub fn supported(op: &Operation) -> bool {
    !matches!(op, Operation::Append { .. }) || cfg!(feature = "next-release")
}

/// An update's checks by this release (a trait: the message is the `ingress` crate's).
pub trait Validate {
    /// The network against `network` (this node's), sizes, the method, expiry against
    /// `now_ns` (the block time when executing), then the signature.
    fn validate(&self, now_ns: u64, network: &NetworkId) -> Result<(), IngressError>;

    /// [`Validate::validate`], with the signature checked through `verified` (once per
    /// node).
    fn validate_with(
        &self,
        now_ns: u64,
        network: &NetworkId,
        verified: &mut VerifiedSignatures,
    ) -> Result<(), IngressError>;
}

impl Validate for SignedIngress {
    fn validate(&self, now_ns: u64, network: &NetworkId) -> Result<(), IngressError> {
        self.check_fields(now_ns, network, cfg!(feature = "next-release"))?;
        self.verify_signature()
    }

    fn validate_with(
        &self,
        now_ns: u64,
        network: &NetworkId,
        verified: &mut VerifiedSignatures,
    ) -> Result<(), IngressError> {
        self.check_fields(now_ns, network, cfg!(feature = "next-release"))?;
        verified.verify(self)
    }
}

/// Updates waiting to be put in a block, bounded in count and bytes, selected oldest
/// first (so a user's sequential updates execute in order and none starves).
#[derive(Debug)]
pub struct IngressPool {
    /// This node's network: the only one whose updates the pool takes.
    network: NetworkId,
    max_messages: usize,
    max_bytes: usize,
    bytes: usize,
    /// Per sender: messages and bytes in the pool.
    by_sender: BTreeMap<[u8; 32], (usize, usize)>,
    /// The most messages and bytes one sender may hold.
    sender_share: (usize, usize),
    next_seq: u64,
    messages: BTreeMap<CryptoHash, (u64, SignedIngress)>,
    arrival: BTreeMap<u64, CryptoHash>,
    /// Signatures checked on the way in, so execution need not check them again.
    pub verified: VerifiedSignatures,
}

impl IngressPool {
    pub fn new(network: NetworkId, max_messages: usize, max_bytes: usize) -> Self {
        Self {
            network,
            max_messages,
            max_bytes,
            bytes: 0,
            by_sender: BTreeMap::new(),
            sender_share: (max_messages, max_bytes),
            next_seq: 0,
            messages: BTreeMap::new(),
            arrival: BTreeMap::new(),
            verified: VerifiedSignatures::default(),
        }
    }

    /// Limits what one sender may hold to a part of the pool (1/`divisor` of its messages
    /// and of its bytes), so that one user cannot crowd everyone else out.
    pub fn with_sender_share(mut self, divisor: usize) -> Self {
        let d = divisor.max(1);
        self.sender_share = ((self.max_messages / d).max(1), (self.max_bytes / d).max(1));
        self
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn contains(&self, id: &CryptoHash) -> bool {
        self.messages.contains_key(id)
    }

    pub fn get(&self, id: &CryptoHash) -> Option<&SignedIngress> {
        self.messages.get(id).map(|(_, m)| m)
    }

    /// Validates and adds an update; returns its id.
    pub fn insert(&mut self, m: SignedIngress, now_ns: u64) -> Result<CryptoHash, IngressError> {
        let id = m.id();
        if self.messages.contains_key(&id) {
            return Err(IngressError::Duplicate(id));
        }
        m.validate_with(now_ns, &self.network, &mut self.verified)?;
        if self.messages.contains_key(&id) {
            return Err(IngressError::Duplicate(id));
        }
        let size = m.size();
        if self.messages.len() >= self.max_messages || self.bytes + size > self.max_bytes {
            return Err(IngressError::PoolFull {
                messages: self.messages.len(),
                bytes: self.bytes,
            });
        }
        let sender = *m.ingress.sender.as_bytes();
        let (messages, bytes) = self.by_sender.get(&sender).copied().unwrap_or((0, 0));
        if messages + 1 > self.sender_share.0 || bytes + size > self.sender_share.1 {
            return Err(IngressError::SenderShareFull { messages, bytes });
        }
        self.by_sender.insert(sender, (messages + 1, bytes + size));
        self.bytes += size;
        self.messages.insert(id, (self.next_seq, m));
        self.arrival.insert(self.next_seq, id);
        self.next_seq += 1;
        Ok(id)
    }

    /// A block payload: valid updates in arrival order, up to `max_bytes` encoded,
    /// leaving out those `skip` names (already in a block on its way to finalization).
    pub fn select(
        &self,
        now_ns: u64,
        max_bytes: usize,
        skip: impl Fn(&CryptoHash) -> bool,
    ) -> Vec<SignedIngress> {
        let mut out = Vec::new();
        let mut bytes = 8; // the encoded length prefix of the list
        let mut per_sender: BTreeMap<[u8; 32], usize> = BTreeMap::new();
        for id in self.arrival.values() {
            let Some((_, m)) = self.messages.get(id) else {
                continue;
            };
            if m.ingress.expiry_ns < now_ns || skip(id) {
                continue;
            }
            let size = m.size();
            if bytes + size > max_bytes {
                break;
            }
            // Past its share of this block, a sender waits for the next one.
            let spent = per_sender.entry(*m.ingress.sender.as_bytes()).or_default();
            if *spent + size > MAX_BLOCK_BYTES_PER_SENDER {
                continue;
            }
            *spent += size;
            bytes += size;
            out.push(m.clone());
        }
        out
    }

    fn remove(&mut self, id: &CryptoHash) {
        if let Some((seq, m)) = self.messages.remove(id) {
            self.bytes -= m.size();
            self.arrival.remove(&seq);
            let sender = *m.ingress.sender.as_bytes();
            if let Some((messages, bytes)) = self.by_sender.get_mut(&sender) {
                *messages -= 1;
                *bytes -= m.size();
                if *messages == 0 {
                    self.by_sender.remove(&sender);
                }
            }
        }
    }

    /// Drops executed and expired updates.
    pub fn purge(&mut self, executed: &[CryptoHash], now_ns: u64) {
        for id in executed {
            self.remove(id);
        }
        let expired: Vec<CryptoHash> = self
            .messages
            .iter()
            .filter(|(_, (_, m))| m.ingress.expiry_ns < now_ns)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.remove(&id);
        }
    }
}

/// Encodes a block payload.
pub fn encode_payload(messages: &[SignedIngress]) -> Vec<u8> {
    // No updates, no bytes: consensus notarizes a rank-0 block with a payload at once and
    // paces empty ones, and it sees only bytes.
    if messages.is_empty() {
        return Vec::new();
    }
    codec::encode(messages)
}

/// Decodes a block payload (canonically); each message is checked at execution.
pub fn decode_payload(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<Vec<SignedIngress>, codec::CodecError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    codec::decode(bytes, max_bytes)
}

/// Why a carry-over file was not read.
#[derive(Debug, thiserror::Error)]
pub enum CarryoverError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: larger than {limit} bytes")]
    TooLarge { path: String, limit: usize },
    #[error("{path}: {source}")]
    Codec {
        path: String,
        source: codec::CodecError,
    },
}

/// The carry-over file's contents: the updates a halted release still held, encoded as a
/// block payload. The next release reads it ([`read_carryover`]), so its encoding crosses
/// an upgrade (golden fixtures in `replica/tests/fixtures/`).
pub fn encode_carryover(waiting: &[SignedIngress]) -> Vec<u8> {
    codec::encode(waiting)
}

/// Reads a carry-over file, at most `max_bytes` of it (more is refused before anything
/// is decoded). `Ok(None)`: there is none.
pub fn read_carryover(
    path: &std::path::Path,
    max_bytes: usize,
) -> Result<Option<Vec<SignedIngress>>, CarryoverError> {
    use std::io::ErrorKind;
    let shown = || path.display().to_string();
    let bytes = match durable::read_bounded(path, max_bytes as u64) {
        Ok(b) => b,
        Err(e) if e.source.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if e.source.kind() == ErrorKind::FileTooLarge => {
            return Err(CarryoverError::TooLarge {
                path: shown(),
                limit: max_bytes,
            });
        }
        Err(e) => {
            return Err(CarryoverError::Io {
                path: shown(),
                source: e.source,
            });
        }
    };
    decode_payload(&bytes, max_bytes)
        .map(Some)
        .map_err(|source| CarryoverError::Codec {
            path: shown(),
            source,
        })
}

/// An update signed by the key of `seed`, for tests: network `[1; 32]`, expiry 1.
#[cfg(test)]
pub(crate) fn signed_for_test(seed: u8, nonce: u64, operation: Operation) -> SignedIngress {
    let user = crypto::ed25519::Ed25519KeyPair::from_seed(&[seed; 32]);
    SignedIngress::sign(
        Ingress {
            network: NetworkId([1; 32]),
            sender: user.public_key(),
            nonce,
            expiry_ns: 1,
            operation,
        },
        &user,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypto::ed25519::Ed25519KeyPair;

    const NOW: u64 = 1_000_000_000_000;
    const NET: NetworkId = NetworkId([5; 32]);

    fn msg(seed: u8, nonce: u64, expiry_ns: u64, op: Operation) -> SignedIngress {
        msg_for(NET, seed, nonce, expiry_ns, op)
    }

    fn msg_for(
        network: NetworkId,
        seed: u8,
        nonce: u64,
        expiry_ns: u64,
        op: Operation,
    ) -> SignedIngress {
        let key = Ed25519KeyPair::from_seed(&[seed; 32]);
        SignedIngress::sign(
            Ingress {
                network,
                sender: key.public_key(),
                nonce,
                expiry_ns,
                operation: op,
            },
            &key,
        )
    }

    fn put(k: &str, v: &[u8]) -> Operation {
        Operation::Put {
            key: k.into(),
            value: v.to_vec(),
        }
    }

    #[test]
    fn a_signature_is_verified_once_and_only_for_the_same_bytes() {
        let mut v = VerifiedSignatures::with_capacity(2);
        let m = msg(1, 1, NOW + 1, put("k", b"v"));
        assert_eq!(m.validate_with(NOW, &NET, &mut v), Ok(()));
        assert_eq!((v.len(), v.hits), (1, 0));
        assert_eq!(m.validate_with(NOW, &NET, &mut v), Ok(()));
        assert_eq!(v.hits, 1, "the second check came from memory");
        // The same content under another signature is checked, and refused.
        let mut forged = m.clone();
        forged.signature = msg(2, 1, NOW + 1, put("k", b"v")).signature;
        assert_eq!(
            forged.validate_with(NOW, &NET, &mut v),
            Err(IngressError::BadSignature)
        );
        assert_eq!((v.len(), v.hits), (1, 1), "a refusal is not remembered");
        // What is not the signature is checked every time: expired by the block time.
        assert!(matches!(
            m.validate_with(NOW + 2, &NET, &mut v),
            Err(IngressError::Expired { .. })
        ));
        // Bounded: the oldest is forgotten, and checked again when it comes back.
        for i in 2..5 {
            msg(i, 1, NOW + 1, put("k", b"v"))
                .validate_with(NOW, &NET, &mut v)
                .unwrap();
        }
        assert_eq!(v.len(), 2);
        m.validate_with(NOW, &NET, &mut v).unwrap();
        assert_eq!(v.hits, 1);
    }

    #[test]
    fn validation_table() {
        let ok = msg(1, 1, NOW + 1000, put("k", b"v"));
        assert_eq!(ok.validate(NOW, &NET), Ok(()));
        assert!(matches!(
            msg(1, 1, NOW - 1, put("k", b"v")).validate(NOW, &NET),
            Err(IngressError::Expired { .. })
        ));
        assert!(matches!(
            msg(1, 1, NOW + MAX_EXPIRY_AHEAD_NS + 1, put("k", b"v")).validate(NOW, &NET),
            Err(IngressError::ExpiryTooFar { .. })
        ));
        assert_eq!(
            msg(1, 1, NOW + 1, put("", b"v")).validate(NOW, &NET),
            Err(IngressError::BadKey(0))
        );
        let big = vec![0u8; MAX_VALUE_BYTES + 1];
        assert_eq!(
            msg(1, 1, NOW + 1, put("k", &big)).validate(NOW, &NET),
            Err(IngressError::ValueTooLarge(big.len()))
        );
        let mut forged = ok.clone();
        forged.ingress.nonce = 2;
        assert_eq!(forged.validate(NOW, &NET), Err(IngressError::BadSignature));
    }

    #[test]
    fn an_update_signed_for_another_network_is_refused() {
        let other = NetworkId([6; 32]);
        let foreign = msg_for(other, 1, 1, NOW + 1000, put("k", b"v"));
        let refused = Err(IngressError::WrongNetwork {
            signed_for: other,
            expected: NET,
        });
        assert_eq!(foreign.validate(NOW, &NET), refused);
        assert_eq!(foreign.validate(NOW, &other), Ok(()));
        // Relabelled for this network, its signature no longer holds.
        let mut relabelled = foreign.clone();
        relabelled.ingress.network = NET;
        assert_eq!(
            relabelled.validate(NOW, &NET),
            Err(IngressError::BadSignature)
        );
        let mut pool = IngressPool::new(NET, 10, 1_000_000);
        assert_eq!(
            pool.insert(foreign, NOW),
            refused.map(|()| CryptoHash([0; 32]))
        );
        assert!(pool.is_empty());
    }

    #[test]
    fn pool_refuses_duplicates_and_respects_its_bounds() {
        let mut pool = IngressPool::new(NET, 2, 1_000_000);
        let a = msg(1, 1, NOW + 1000, put("a", b"1"));
        let id = pool.insert(a.clone(), NOW).expect("insert");
        assert_eq!(pool.insert(a, NOW), Err(IngressError::Duplicate(id)));
        pool.insert(msg(1, 2, NOW + 1000, put("b", b"2")), NOW)
            .expect("second");
        assert!(matches!(
            pool.insert(msg(1, 3, NOW + 1000, put("c", b"3")), NOW),
            Err(IngressError::PoolFull { .. })
        ));
        // Selection respects the byte budget and skips what expired.
        let one = pool.select(
            NOW,
            8 + msg(1, 1, NOW + 1000, put("a", b"1")).size(),
            |_| false,
        );
        assert_eq!(one.len(), 1);
        assert!(pool.select(NOW + 2000, 1_000_000, |_| false).is_empty());
        pool.purge(&[id], NOW);
        assert_eq!(pool.len(), 1);
        pool.purge(&[], NOW + 2000);
        assert!(pool.is_empty());
    }

    #[test]
    fn the_pool_selects_in_arrival_order() {
        let mut pool = IngressPool::new(NET, 100, 1_000_000);
        let ms: Vec<SignedIngress> = (0..20)
            .map(|n| msg(1, n, NOW + 1000, put("k", &n.to_be_bytes())))
            .collect();
        for m in &ms {
            pool.insert(m.clone(), NOW).expect("insert");
        }
        assert_eq!(pool.select(NOW, 1_000_000, |_| false), ms);
        // What a block on its way to finalization carries is left out.
        let first = ms[0].id();
        assert_eq!(pool.select(NOW, 1_000_000, |id| *id == first), ms[1..]);
        // Removing from the middle keeps the order of the rest.
        pool.purge(&[ms[3].id(), ms[10].id()], NOW);
        let rest: Vec<SignedIngress> = ms
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 10)
            .map(|(_, m)| m.clone())
            .collect();
        assert_eq!(pool.select(NOW, 1_000_000, |_| false), rest);
    }

    #[test]
    fn one_sender_holds_at_most_its_share_of_the_pool_and_of_a_block() {
        let mut pool = IngressPool::new(NET, 16, 1_000_000).with_sender_share(4);
        for n in 0..4 {
            pool.insert(msg(1, n, NOW + 1000, put("k", b"v")), NOW)
                .expect("within the share");
        }
        assert!(matches!(
            pool.insert(msg(1, 4, NOW + 1000, put("k", b"v")), NOW),
            Err(IngressError::SenderShareFull { messages: 4, .. })
        ));
        // Another sender is not held back, and a sender's share frees as it executes.
        pool.insert(msg(2, 0, NOW + 1000, put("k", b"v")), NOW)
            .expect("another sender");
        let first = pool.select(NOW, 1_000_000, |_| false)[0].id();
        pool.purge(&[first], NOW);
        pool.insert(msg(1, 4, NOW + 1000, put("k", b"v")), NOW)
            .expect("room again");
        // A block takes at most MAX_BLOCK_BYTES_PER_SENDER of one sender, and others after.
        let mut big = IngressPool::new(NET, 100, 10_000_000);
        let value = vec![7u8; MAX_VALUE_BYTES];
        for n in 0..12 {
            big.insert(msg(1, n, NOW + 1000, put("big", &value)), NOW)
                .expect("insert");
        }
        big.insert(msg(2, 0, NOW + 1000, put("small", b"1")), NOW)
            .expect("insert");
        let picked = big.select(NOW, 10_000_000, |_| false);
        let from_one: usize = picked
            .iter()
            .filter(|m| m.ingress.sender == msg(1, 0, NOW, put("k", b"")).ingress.sender)
            .map(SignedIngress::size)
            .sum();
        assert!(
            from_one <= MAX_BLOCK_BYTES_PER_SENDER && from_one > MAX_BLOCK_BYTES_PER_SENDER / 2
        );
        assert!(
            picked.len() < 13
                && picked
                    .iter()
                    .any(|m| m.ingress.operation.key() == Some("small"))
        );
    }

    #[test]
    fn payloads_round_trip_and_reject_garbage() {
        let ms = vec![
            msg(1, 1, NOW + 1, put("a", b"1")),
            msg(2, 7, NOW + 1, Operation::Delete { key: "a".into() }),
        ];
        let bytes = encode_payload(&ms);
        assert_eq!(decode_payload(&bytes, 1 << 20), Ok(ms));
        assert_eq!(decode_payload(&[], 1 << 20), Ok(vec![]));
        assert!(
            encode_payload(&[]).is_empty(),
            "an empty payload is no bytes"
        );
        assert!(decode_payload(&bytes[..bytes.len() - 1], 1 << 20).is_err());
    }

    #[test]
    fn a_carryover_file_reads_back_and_too_large_or_garbage_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("carryover.bin");
        assert!(matches!(read_carryover(&path, 1 << 20), Ok(None)));
        let ms = vec![msg(1, 1, NOW + 1, put("a", b"1"))];
        std::fs::write(&path, encode_carryover(&ms)).expect("write");
        assert_eq!(read_carryover(&path, 1 << 20).expect("read"), Some(ms));
        assert!(matches!(
            read_carryover(&path, 8),
            Err(CarryoverError::TooLarge { limit: 8, .. })
        ));
        std::fs::write(&path, b"garbage").expect("write");
        assert!(matches!(
            read_carryover(&path, 1 << 20),
            Err(CarryoverError::Codec { .. })
        ));
    }
}

//! [`KvStore`]: the registry kept in an ordered map of byte keys to byte values, the form
//! it takes inside a replicated state (issue 19: the NNS subnet's state, where every entry
//! is hashed into the state tree and so certified with the subnet's key). [`MemoryKv`] is
//! that map in memory.
//!
//! Layout (every key starts with `r/` or `g/`):
//! - `r/latest`: the latest version (u64 BE); absent at version 0.
//! - `r/delta/<version: u64 BE>`: that version's [`VersionDelta`] (canonical encoding).
//! - `r/chain/<version: u64 BE>`: the chain hash after that version ([`chain_hash`]). One
//!   certified chain hash vouches for every delta up to its version: a reader checks a
//!   page of deltas by hashing them onto the chain hash it already trusts.
//! - `r/history/<key>\0<version: u64 BE>`: the value `key` got at that version (encoded
//!   `Option<Vec<u8>>`, `None` a deletion). Keys are printable ASCII, so `\0` ends one.
//! - `r/now/<key>`: `key`'s value at the latest version (present keys only).
//! - `g/<auxiliary key>`: the owner's auxiliary entries (governance state).
//!
//! Determinism: the entries a commit writes depend only on the store's contents and the
//! delta, so every replica executing the same commits holds the same entries.

use super::{AuxWrite, RegistryStore, StoreError, VersionDelta, validate_delta};
use std::collections::BTreeMap;
use types::{CryptoHash, RegistryVersion, codec, domain};

/// One write: `Some` sets the entry, `None` deletes it.
pub type KvWrite = (Vec<u8>, Option<Vec<u8>>);

/// One entry: its key and its value.
pub type KvEntry = (Vec<u8>, Vec<u8>);

/// An ordered map of byte keys to byte values, read and written by a [`KvStore`].
pub trait Kv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Among the entries whose key starts with `prefix`, the one with the greatest key
    /// that is `<= upto`.
    fn last_at_or_before(&self, prefix: &[u8], upto: &[u8]) -> Result<Option<KvEntry>, StoreError>;

    /// Every entry whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &[u8]) -> Result<Vec<KvEntry>, StoreError>;

    /// Applies every write, or (on an error) none of them.
    fn write(&mut self, writes: Vec<KvWrite>) -> Result<(), StoreError>;
}

/// A [`Kv`] in memory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemoryKv(pub BTreeMap<Vec<u8>, Vec<u8>>);

impl Kv for MemoryKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key).cloned())
    }

    fn last_at_or_before(&self, prefix: &[u8], upto: &[u8]) -> Result<Option<KvEntry>, StoreError> {
        Ok(self
            .0
            .range(..=upto.to_vec())
            .next_back()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone())))
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<KvEntry>, StoreError> {
        Ok(self
            .0
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn write(&mut self, writes: Vec<KvWrite>) -> Result<(), StoreError> {
        for (k, v) in writes {
            match v {
                Some(v) => self.0.insert(k, v),
                None => self.0.remove(&k),
            };
        }
        Ok(())
    }
}

/// The entry holding the latest version: present exactly when the registry is not empty.
pub const LATEST: &[u8] = b"r/latest";
const DELTA: &[u8] = b"r/delta/";
const CHAIN: &[u8] = b"r/chain/";
const HISTORY: &[u8] = b"r/history/";
const NOW: &[u8] = b"r/now/";
const AUX: &[u8] = b"g/";

/// The most bytes one stored history value decodes from: the largest value, and its
/// encoding's tag and length.
const MAX_HISTORY_VALUE_BYTES: usize = super::MAX_VALUE_BYTES + 16;

/// The entry key of `version`'s delta.
pub fn delta_key(version: RegistryVersion) -> Vec<u8> {
    [DELTA, &version.get().to_be_bytes()].concat()
}

/// The entry key of the chain hash after `version`.
pub fn chain_key(version: RegistryVersion) -> Vec<u8> {
    [CHAIN, &version.get().to_be_bytes()].concat()
}

fn history_prefix(key: &str) -> Vec<u8> {
    [HISTORY, key.as_bytes(), b"\0"].concat()
}

fn now_key(key: &str) -> Vec<u8> {
    [NOW, key.as_bytes()].concat()
}

/// The entry key of the owner's auxiliary entry `key`.
pub fn aux_key(key: &str) -> Vec<u8> {
    [AUX, key.as_bytes()].concat()
}

/// The chain hash at version 0 (the empty registry).
pub fn genesis_chain_hash() -> CryptoHash {
    CryptoHash::of(domain::REGISTRY_CHAIN, b"")
}

/// The chain hash after `delta`, given the one before it:
/// `H(REGISTRY_CHAIN, previous || encode(delta))`.
pub fn chain_hash(previous: &CryptoHash, delta: &VersionDelta) -> CryptoHash {
    CryptoHash::of_parts(
        domain::REGISTRY_CHAIN,
        &[&previous.0, &codec::encode(delta)],
    )
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn u64_of(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt(format!("{what}: not 8 bytes")))
}

/// Scanned entries under `prefix`, keyed by the rest of their key (a registry or
/// auxiliary key: UTF-8, or the store is corrupt).
fn without_prefix(
    entries: Vec<KvEntry>,
    prefix: &[u8],
) -> impl Iterator<Item = Result<(String, Vec<u8>), StoreError>> {
    let at = prefix.len();
    entries.into_iter().map(move |(k, v)| {
        String::from_utf8(k.get(at..).unwrap_or_default().to_vec())
            .map(|k| (k, v))
            .map_err(|_| corrupt("a key that is not UTF-8"))
    })
}

/// The registry over a [`Kv`]. Obeys the store laws (`store::tests`).
#[derive(Debug, Default, Clone)]
pub struct KvStore<K> {
    kv: K,
    /// `r/latest`, read once.
    latest: RegistryVersion,
}

impl<K: Kv> KvStore<K> {
    /// The registry in `kv` (an empty map is the empty registry).
    pub fn open(kv: K) -> Result<Self, StoreError> {
        let latest = match kv.get(LATEST)? {
            None => RegistryVersion::ZERO,
            Some(b) => RegistryVersion::new(u64_of(&b, "r/latest")?),
        };
        Ok(Self { kv, latest })
    }

    pub fn kv(&self) -> &K {
        &self.kv
    }

    pub fn into_kv(self) -> K {
        self.kv
    }

    /// The chain hash after `version` (`version <= latest`).
    pub fn chain_hash_at(&self, version: RegistryVersion) -> Result<CryptoHash, StoreError> {
        if version == RegistryVersion::ZERO {
            return Ok(genesis_chain_hash());
        }
        let b = self
            .kv
            .get(&chain_key(version))?
            .ok_or_else(|| corrupt(format!("no chain hash at version {version}")))?;
        <[u8; 32]>::try_from(b.as_slice())
            .map(CryptoHash)
            .map_err(|_| corrupt("a chain hash of the wrong size"))
    }
}

impl<K: Kv + Send + Sync> RegistryStore for KvStore<K> {
    fn latest_version(&self) -> RegistryVersion {
        self.latest
    }

    fn get_versioned(
        &self,
        key: &str,
        version: RegistryVersion,
    ) -> Result<Option<(RegistryVersion, Vec<u8>)>, StoreError> {
        super::check_available(version, self.latest)?;
        let prefix = history_prefix(key);
        let upto = [prefix.as_slice(), &version.get().to_be_bytes()].concat();
        let Some((k, v)) = self.kv.last_at_or_before(&prefix, &upto)? else {
            return Ok(None);
        };
        let written = RegistryVersion::new(u64_of(&k[prefix.len()..], "a history key")?);
        let value: Option<Vec<u8>> = codec::decode(&v, MAX_HISTORY_VALUE_BYTES).map_err(corrupt)?;
        Ok(value.map(|v| (written, v)))
    }

    fn changes_since(
        &self,
        version: RegistryVersion,
        max_versions: usize,
    ) -> Result<Vec<VersionDelta>, StoreError> {
        let first = version.get().saturating_add(1);
        let last = version
            .get()
            .saturating_add(max_versions as u64)
            .min(self.latest.get());
        (first..=last)
            .map(|v| {
                let v = RegistryVersion::new(v);
                let bytes = self
                    .kv
                    .get(&delta_key(v))?
                    .ok_or_else(|| corrupt(format!("no delta at version {v}")))?;
                let delta: VersionDelta =
                    codec::decode(&bytes, codec::MAX_ENCODED_BYTES).map_err(corrupt)?;
                if delta.version != v {
                    return Err(corrupt(format!(
                        "the delta stored for version {v} is for {}",
                        delta.version
                    )));
                }
                Ok(delta)
            })
            .collect()
    }

    fn latest_snapshot(&self) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        without_prefix(self.kv.scan(NOW)?, NOW).collect()
    }

    fn commit(&mut self, delta: Option<&VersionDelta>, aux: &[AuxWrite]) -> Result<(), StoreError> {
        let mut writes = Vec::new();
        let mut latest = self.latest;
        if let Some(delta) = delta {
            validate_delta(delta, self.latest)?;
            for c in &delta.changes {
                writes.push((
                    [
                        history_prefix(&c.key).as_slice(),
                        &delta.version.get().to_be_bytes(),
                    ]
                    .concat(),
                    Some(codec::encode(&c.value)),
                ));
                writes.push((now_key(&c.key), c.value.clone()));
            }
            let chain = chain_hash(&self.chain_hash_at(self.latest)?, delta);
            writes.push((chain_key(delta.version), Some(chain.0.to_vec())));
            writes.push((delta_key(delta.version), Some(codec::encode(delta))));
            writes.push((
                LATEST.to_vec(),
                Some(delta.version.get().to_be_bytes().to_vec()),
            ));
            latest = delta.version;
        }
        for (k, v) in aux {
            writes.push((aux_key(k), v.clone()));
        }
        self.kv.write(writes)?;
        self.latest = latest;
        Ok(())
    }

    fn aux_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv.get(&aux_key(key))
    }

    fn aux_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        without_prefix(self.kv.scan(&aux_key(prefix))?, AUX).collect()
    }
}

/// Checks a page of deltas against a chain hash a reader trusts: starting from
/// `trusted` (the chain hash after the reader's latest version), each delta must follow
/// the previous version, and the chain hash after the last must be `expected` (which the
/// reader proves separately, for instance with a witness to `r/chain/<version>` in a
/// certified state). Returns the chain hash after the page.
pub fn verify_page(
    trusted: &CryptoHash,
    from: RegistryVersion,
    deltas: &[VersionDelta],
    expected: &CryptoHash,
) -> Result<CryptoHash, StoreError> {
    let mut hash = *trusted;
    let mut latest = from;
    for d in deltas {
        validate_delta(d, latest)?;
        hash = chain_hash(&hash, d);
        latest = d.version;
    }
    if hash != *expected {
        return Err(StoreError::InvalidDelta {
            version: latest,
            reason: format!("the page's chain hash is {hash}, the certified one {expected}"),
        });
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KeyChange, Mutation};

    fn put(key: &str, value: u8) -> Mutation {
        Mutation::Insert {
            key: key.into(),
            value: vec![value],
        }
    }

    #[test]
    fn reopening_the_map_reads_the_same_registry() {
        let mut s = KvStore::open(MemoryKv::default()).expect("open");
        s.apply(&[put("a", 1), put("b", 2)]).expect("v1");
        s.apply(&[Mutation::Delete { key: "a".into() }])
            .expect("v2");
        let chain = s.chain_hash_at(RegistryVersion::new(2)).expect("chain");
        let s = KvStore::open(s.into_kv()).expect("reopen");
        assert_eq!(s.latest_version(), RegistryVersion::new(2));
        assert_eq!(s.get("a", RegistryVersion::new(1)), Ok(Some(vec![1])));
        assert_eq!(s.get("a", RegistryVersion::new(2)), Ok(None));
        assert_eq!(s.chain_hash_at(RegistryVersion::new(2)), Ok(chain));
        // A key that is a prefix of another reads only its own history.
        let mut s = s;
        s.apply(&[put("b2", 3)]).expect("v3");
        assert_eq!(s.get("b", RegistryVersion::new(3)), Ok(Some(vec![2])));
        assert_eq!(s.get("b2", RegistryVersion::new(2)), Ok(None));
    }

    #[test]
    fn a_page_verifies_onto_the_certified_chain_hash_and_nothing_else_does() {
        let mut s = KvStore::open(MemoryKv::default()).expect("open");
        for i in 0..5u8 {
            s.apply(&[put(&format!("k{i}"), i)]).expect("apply");
        }
        let trusted = s.chain_hash_at(RegistryVersion::new(1)).expect("trusted");
        let head = s.chain_hash_at(RegistryVersion::new(4)).expect("head");
        let page = s.changes_since(RegistryVersion::new(1), 3).expect("page");
        assert_eq!(
            verify_page(&trusted, RegistryVersion::new(1), &page, &head),
            Ok(head)
        );
        // A changed value, a dropped delta, or the wrong starting point: refused.
        let mut forged = page.clone();
        forged[1].changes[0].value = Some(vec![99]);
        assert!(verify_page(&trusted, RegistryVersion::new(1), &forged, &head).is_err());
        let short = [page[0].clone(), page[2].clone()];
        assert!(matches!(
            verify_page(&trusted, RegistryVersion::new(1), &short, &head),
            Err(StoreError::NonContiguous { .. })
        ));
        assert!(verify_page(&head, RegistryVersion::new(1), &page, &head).is_err());
        // A page that stops early verifies against the chain hash at its own end.
        let mid = s.chain_hash_at(RegistryVersion::new(3)).expect("mid");
        assert_eq!(
            verify_page(&trusted, RegistryVersion::new(1), &page[..2], &mid),
            Ok(mid)
        );
        // An invented delta appended past the head.
        let mut longer = page.clone();
        longer.push(VersionDelta {
            version: RegistryVersion::new(5),
            changes: vec![KeyChange {
                key: "x".into(),
                value: None,
            }],
        });
        assert!(verify_page(&trusted, RegistryVersion::new(1), &longer, &head).is_err());
    }

    #[test]
    fn corrupt_entries_are_reported_not_guessed() {
        let mut s = KvStore::open(MemoryKv::default()).expect("open");
        s.apply(&[put("a", 1)]).expect("v1");
        let mut kv = s.into_kv();
        kv.0.insert(delta_key(RegistryVersion::new(1)), vec![0xff; 3]);
        let s = KvStore::open(kv.clone()).expect("open");
        assert!(matches!(
            s.changes_since(RegistryVersion::ZERO, 10),
            Err(StoreError::Corrupt(_))
        ));
        kv.0.insert(LATEST.to_vec(), vec![1, 2]);
        assert!(matches!(KvStore::open(kv), Err(StoreError::Corrupt(_))));
    }
}

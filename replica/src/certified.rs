//! Certified reads: a query answer carries a witness from the value (or its absence) to
//! the state root, and the subnet's certificate on the state hash at that height, so a
//! client believes a value with the subnet's public key alone ([`verify_read`]), whatever
//! replica answered.
//!
//! What [`verify_read`] checks, in order:
//! 1. The answer's value (`value` as UTF-8, or `value_hex`) in the form its
//!    `state_schema` stores it (schema 2 appends the 8-byte checksum; the answer's
//!    `checksum` must be that checksum) gives the leaf's value hash, which commits to the
//!    schema too; absent (`value` and `value_hex` null) means an absence proof.
//! 2. The witness (hex of [`Witness`]'s encoding) leads from that leaf, under entry key
//!    `v/<key>`, to a root; `H(STATE_HASH, (certified_height, root))` must equal the
//!    certificate's `state_hash`, and the certificate's height `certified_height`.
//! 3. The certificate's signature verifies under the subnet's high-threshold public key:
//!    a certification (`kind` "certification") signs
//!    `consensus::artifact::signed_bytes(replica_version, (height, state_hash bytes))`
//!    under domain `STATE_CERTIFICATION`; the CUP a replica started from (`kind` "cup")
//!    signs its content (`cup_content`, hex) under `CUP_CONTENT`, and that content must
//!    name the same height and state hash. An unsigned certificate (a registry CUP) is
//!    refused: its trust comes from the registry, not the subnet key.
//!
//! Any change to the value, the key, the height, the witness or the certificate makes one
//! of these fail (unless SHA-256 collides or BLS is forged).

pub use certification::{Certificate, VerifyError, verify_certificate};

use crate::state::{
    self, NEWEST_KNOWN_SCHEMA,
    tree::{self, Witness},
};
use crypto::bls::BlsPublicKey;
use serde::{Deserialize, Serialize};
use types::Height;

/// `GET /api/v1/query`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryAnswer {
    pub key: String,
    /// The value as of `certified_height`, as the user wrote it (UTF-8), or null.
    pub value: Option<String>,
    /// Set when the value is not UTF-8: its hex (and `value` is null).
    pub value_hex: Option<String>,
    /// The checksum stored beside the value (hex), in state schemas that store one.
    pub checksum: Option<String>,
    pub certified_height: u64,
    pub certificate: Option<Certificate>,
    /// The layout the state stores values in at `certified_height`.
    #[serde(default)]
    pub state_schema: Option<u32>,
    /// Hex of the witness from the value (or its absence) to the root at
    /// `certified_height`; null when the replica has no state or no certificate.
    #[serde(default)]
    pub witness: Option<String>,
}

/// Checks an answer with the subnet's high-threshold public key alone; returns the value
/// it proves (`None`: the key is absent at `certified_height`).
pub fn verify_read(
    answer: &QueryAnswer,
    subnet_key: &BlsPublicKey,
) -> Result<Option<Vec<u8>>, VerifyError> {
    let (value, cert) = verify_witness(answer)?;
    verify_certificate(cert, subnet_key)?;
    Ok(value)
}

/// Half of [`verify_read`]: the value, its checksum and its witness lead to the state
/// hash the answer's certificate names. The certificate's signature is not checked: a
/// reader checking many answers under one certificate checks it once with
/// [`verify_certificate`].
pub fn verify_witness(
    answer: &QueryAnswer,
) -> Result<(Option<Vec<u8>>, &Certificate), VerifyError> {
    let cert = answer
        .certificate
        .as_ref()
        .ok_or(VerifyError::NoCertificate)?;
    let witness = answer.witness.as_deref().ok_or(VerifyError::NoWitness)?;
    let malformed = |why: String| VerifyError::Malformed(why);
    let schema = answer
        .state_schema
        .ok_or_else(|| malformed("no state_schema".into()))?;
    if schema == 0 || schema > NEWEST_KNOWN_SCHEMA {
        return Err(malformed(format!("unknown state schema {schema}")));
    }
    if cert.height != answer.certified_height {
        return Err(VerifyError::HeightMismatch {
            certificate: cert.height,
            answer: answer.certified_height,
        });
    }
    let value = match (&answer.value, &answer.value_hex) {
        (Some(v), None) => Some(v.as_bytes().to_vec()),
        (None, Some(h)) => Some(hex::decode(h).map_err(|e| malformed(format!("value_hex: {e}")))?),
        (None, None) => None,
        (Some(_), Some(_)) => return Err(malformed("both value and value_hex".into())),
    };
    let checksum = match &value {
        Some(v) if schema >= 2 => Some(hex::encode(state::value_checksum(v))),
        _ => None,
    };
    if answer.checksum != checksum {
        return Err(malformed(format!(
            "checksum {:?}, schema {schema} stores {checksum:?} for this value",
            answer.checksum
        )));
    }
    let witness = Witness::decode(
        &hex::decode(witness).map_err(|e| malformed(format!("witness hex: {e}")))?,
    )?;
    let value_hash = value
        .as_ref()
        .map(|v| tree::value_hash(schema, &state::to_stored(schema, v)));
    let root = witness.root(&state::user_entry_key(&answer.key), value_hash.as_ref())?;
    let computed = tree::state_hash(Height::new(answer.certified_height), &root);
    if computed != cert.state_hash {
        return Err(VerifyError::StateHashMismatch {
            computed,
            certified: cert.state_hash,
        });
    }
    Ok((value, cert))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ingress::{Ingress, Operation, SignedIngress},
        state::ReplicatedState,
    };
    use crypto::{bls::BlsSecretKey, ed25519::Ed25519KeyPair};
    use types::{CryptoHash, ReplicaVersion, domain};

    const T: u64 = 1_000_000_000_000;
    const NET: types::NetworkId = types::NetworkId([5; 32]);

    fn subnet_secret() -> BlsSecretKey {
        BlsSecretKey::from_bytes(&[7u8; 32]).expect("a valid scalar")
    }

    fn version() -> ReplicaVersion {
        ReplicaVersion::new("1.0.0").expect("version")
    }

    /// A state with `a` = "1" and `b` = bytes that are not UTF-8 at height 1, and an
    /// answer for `key` as the driver builds it, certified by the subnet key.
    fn answer(key: &str) -> (tempfile::TempDir, QueryAnswer) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = ReplicatedState::open(dir.path()).expect("open");
        let user = Ed25519KeyPair::from_seed(&[3; 32]);
        let put = |nonce, key: &str, value: &[u8]| {
            SignedIngress::sign(
                Ingress {
                    network: NET,
                    sender: user.public_key(),
                    nonce,
                    expiry_ns: T + 100,
                    operation: Operation::Put {
                        key: key.into(),
                        value: value.to_vec(),
                    },
                },
                &user,
            )
        };
        s.execute(
            Height::new(1),
            T,
            &NET,
            &[put(1, "a", b"1"), put(2, "b", &[0xff, 0])],
        )
        .expect("execute");
        let read = s.read_at(key, &[]).expect("read");
        let value = read
            .stored
            .map(|v| state::from_stored(s.schema(), &v).expect("stored"));
        let state_hash = s.state_hash();
        let m = consensus::artifact::signed_bytes(
            &version(),
            &(Height::new(1), &state_hash.0.to_vec()),
        );
        let sig = subnet_secret().sign(domain::STATE_CERTIFICATION, &m);
        let (value, value_hex) = match value.as_ref().map(|(v, _)| String::from_utf8(v.clone())) {
            None => (None, None),
            Some(Ok(s)) => (Some(s), None),
            Some(Err(e)) => (None, Some(hex::encode(e.into_bytes()))),
        };
        let a = QueryAnswer {
            key: key.into(),
            value,
            value_hex,
            checksum: None,
            certified_height: 1,
            certificate: Some(Certificate {
                height: 1,
                state_hash,
                signature: hex::encode(sig.to_bytes()),
                kind: "certification".into(),
                replica_version: version(),
                cup_content: None,
            }),
            state_schema: Some(s.schema()),
            witness: Some(hex::encode(read.witness.encode())),
        };
        let a = QueryAnswer {
            checksum: (s.schema() >= 2)
                .then(|| {
                    a.value
                        .as_ref()
                        .map(|v| v.as_bytes().to_vec())
                        .or_else(|| a.value_hex.as_ref().map(|h| hex::decode(h).expect("hex")))
                        .map(|v| hex::encode(state::value_checksum(&v)))
                })
                .flatten(),
            ..a
        };
        drop(s);
        (dir, a)
    }

    fn check(a: &QueryAnswer) -> Result<Option<Vec<u8>>, VerifyError> {
        verify_read(a, &subnet_secret().public_key())
    }

    #[test]
    fn a_genuine_answer_verifies_for_a_value_a_binary_value_and_an_absent_key() {
        assert_eq!(check(&answer("a").1), Ok(Some(b"1".to_vec())));
        assert_eq!(check(&answer("b").1), Ok(Some(vec![0xff, 0])));
        assert_eq!(check(&answer("zz").1), Ok(None));
    }

    #[test]
    fn every_change_to_an_answer_fails_its_check() {
        let (_d, good) = answer("a");
        let (_d2, absent) = answer("zz");
        let changed = |f: &dyn Fn(&mut QueryAnswer)| {
            let mut a = good.clone();
            f(&mut a);
            a
        };
        let cert = |f: &dyn Fn(&mut Certificate)| {
            changed(&|a| {
                if let Some(c) = a.certificate.as_mut() {
                    f(c)
                }
            })
        };
        let other_key = BlsSecretKey::from_bytes(&[9u8; 32]).expect("key");
        let cases: Vec<(&str, QueryAnswer)> = vec![
            ("a changed value", changed(&|a| a.value = Some("2".into()))),
            (
                "the value dropped (absence claimed)",
                changed(&|a| a.value = None),
            ),
            ("another key", changed(&|a| a.key = "zz".into())),
            ("another height", changed(&|a| a.certified_height = 2)),
            (
                "another height in both places",
                changed(&|a| {
                    a.certified_height = 2;
                    if let Some(c) = a.certificate.as_mut() {
                        c.height = 2;
                    }
                }),
            ),
            (
                "a changed witness",
                changed(&|a| {
                    let mut w =
                        hex::decode(a.witness.as_deref().unwrap_or_default()).unwrap_or_default();
                    let last = w.len() - 1;
                    w[last] ^= 1;
                    a.witness = Some(hex::encode(w));
                }),
            ),
            (
                "another key's witness",
                changed(&|a| a.witness = absent.witness.clone()),
            ),
            ("no witness", changed(&|a| a.witness = None)),
            ("no certificate", changed(&|a| a.certificate = None)),
            (
                "the other schema",
                changed(&|a| a.state_schema = a.state_schema.map(|s| 3 - s)),
            ),
            (
                "a wrong checksum",
                changed(&|a| a.checksum = Some("00".repeat(8))),
            ),
            ("another state hash", cert(&|c| c.state_hash.0[0] ^= 1)),
            (
                "another replica version",
                cert(&|c| c.replica_version = ReplicaVersion::new("2.0.0").expect("v")),
            ),
            (
                "a signature by another key",
                cert(&|c| {
                    let m = consensus::artifact::signed_bytes(
                        &c.replica_version,
                        &(Height::new(c.height), &c.state_hash.0.to_vec()),
                    );
                    c.signature =
                        hex::encode(other_key.sign(domain::STATE_CERTIFICATION, &m).to_bytes());
                }),
            ),
            ("an unsigned certificate", cert(&|c| c.signature.clear())),
            ("an unknown kind", cert(&|c| c.kind = "trust-me".into())),
        ];
        assert!(check(&good).is_ok());
        for (what, a) in cases {
            let r = check(&a);
            assert!(r.is_err(), "{what}: {r:?}");
        }
        // An absence proof for a present key: the absent key's answer under key "a".
        let mut a = absent.clone();
        a.key = "a".into();
        assert!(check(&a).is_err());
    }

    #[test]
    fn a_cup_certificate_verifies_through_the_cup_content_it_signs() {
        let (_d, mut a) = answer("a");
        let Some(cert) = a.certificate.as_mut() else {
            panic!("certified")
        };
        let content = cup::CupContent {
            subnet_id: types::SubnetId::from_threshold_public_key(
                &subnet_secret().public_key().to_bytes(),
            ),
            height: Height::new(1),
            block_hash: CryptoHash([1; 32]),
            block_time_ns: T,
            registry_version: types::RegistryVersion::new(1),
            replica_version: version(),
            random_beacon: cup::RandomBeacon(vec![2; 96]),
            state_hash: cert.state_hash,
            oldest_registry_version_in_use: types::RegistryVersion::new(1),
            next_replica_version: None,
            committee: None,
            extensions: Default::default(),
        };
        let sig = subnet_secret().sign(domain::CUP_CONTENT, &content.encode());
        cert.kind = "cup".into();
        cert.signature = hex::encode(sig.to_bytes());
        cert.cup_content = Some(hex::encode(content.encode()));
        assert_eq!(check(&a), Ok(Some(b"1".to_vec())));
        // A CUP for another state hash, genuinely signed, does not vouch for this one.
        let other = cup::CupContent {
            state_hash: CryptoHash([3; 32]),
            ..content
        };
        let Some(cert) = a.certificate.as_mut() else {
            panic!("certified")
        };
        cert.signature = hex::encode(
            subnet_secret()
                .sign(domain::CUP_CONTENT, &other.encode())
                .to_bytes(),
        );
        cert.cup_content = Some(hex::encode(other.encode()));
        assert!(matches!(check(&a), Err(VerifyError::Malformed(_))));
    }
}

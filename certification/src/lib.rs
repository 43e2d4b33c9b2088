//! The subnet's word on its state, checked with its public key alone: a certificate on
//! the state hash at a height ([`Certificate`], [`verify_certificate`]). Pure: a replica
//! serves these, and a reader that links no replica (a client, an orchestrator, the
//! registry's certified pages, `registry::page`) checks them.

use crypto::bls::{BlsPublicKey, BlsSignature};
use serde::{Deserialize, Serialize};
use state_tree::tree::ProofError;
use types::{CryptoHash, Height, ReplicaVersion, domain};

/// A certified state hash: `signature` is the subnet's high-threshold signature on
/// `(replica version, (height, state hash))` with the state-certification domain, or,
/// for the CUP the replica started from, the CUP's signature on `cup_content`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    pub height: u64,
    pub state_hash: CryptoHash,
    /// Hex of the BLS signature; empty for a CUP built from the registry.
    pub signature: String,
    /// `certification` or `cup`.
    pub kind: String,
    pub replica_version: ReplicaVersion,
    /// For `kind` "cup": hex of the CUP content the signature covers (null otherwise;
    /// always present, so the canonical encoding of a registry page round-trips).
    #[serde(default)]
    pub cup_content: Option<String>,
}

/// Why an answer is not believed. Each names what failed, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the answer has no certificate")]
    NoCertificate,
    #[error("the answer has no witness")]
    NoWitness,
    #[error("the answer is malformed: {0}")]
    Malformed(String),
    #[error("the certificate is for height {certificate}, the answer says {answer}")]
    HeightMismatch { certificate: u64, answer: u64 },
    #[error("the witness does not check: {0}")]
    Witness(#[from] ProofError),
    #[error(
        "the value and witness lead to state hash {computed}, the certificate certifies {certified}"
    )]
    StateHashMismatch {
        computed: CryptoHash,
        certified: CryptoHash,
    },
    #[error("the certificate is unsigned (a registry CUP): the subnet key cannot vouch for it")]
    Unsigned,
    #[error("the certificate's signature does not verify under the subnet key: {0}")]
    BadSignature(String),
}

/// Checks a certificate's signature with the subnet's high-threshold public key.
pub fn verify_certificate(
    cert: &Certificate,
    subnet_key: &BlsPublicKey,
) -> Result<(), VerifyError> {
    if cert.signature.is_empty() {
        return Err(VerifyError::Unsigned);
    }
    let bad = |e: String| VerifyError::BadSignature(e);
    let sig = hex::decode(&cert.signature)
        .map_err(|e| e.to_string())
        .and_then(|b| BlsSignature::from_bytes(&b).map_err(|e| e.to_string()))
        .map_err(|e| VerifyError::Malformed(format!("signature: {e}")))?;
    match cert.kind.as_str() {
        "certification" => {
            let m = consensus::artifact::signed_bytes(
                &cert.replica_version,
                &(Height::new(cert.height), &cert.state_hash.0.to_vec()),
            );
            subnet_key
                .verify(domain::STATE_CERTIFICATION, &m, &sig)
                .map_err(|e| bad(e.to_string()))
        }
        "cup" => {
            let content = cert
                .cup_content
                .as_deref()
                .ok_or_else(|| {
                    VerifyError::Malformed("a CUP certificate without its content".into())
                })
                .and_then(|h| {
                    hex::decode(h).map_err(|e| VerifyError::Malformed(format!("cup_content: {e}")))
                })?;
            let cup = cup::SignedCup::from_parts(content, sig)
                .map_err(|e| VerifyError::Malformed(format!("cup_content: {e}")))?;
            cup.verify(subnet_key).map_err(|e| bad(e.to_string()))?;
            let c = cup.content();
            if (c.height.get(), c.state_hash) != (cert.height, cert.state_hash) {
                return Err(VerifyError::Malformed(format!(
                    "the CUP is for height {} with state hash {}, the certificate says {} with {}",
                    c.height, c.state_hash, cert.height, cert.state_hash
                )));
            }
            Ok(())
        }
        other => Err(VerifyError::Malformed(format!(
            "unknown certificate kind {other:?}"
        ))),
    }
}

//! Certified registry reads from an NNS subnet (issue 19): `GET
//! /api/v1/registry/changes?since=V` answers a [`RegistryPage`], the registry's changes
//! after version `V` as of a certified height of the NNS subnet's state, which a reader
//! checks with the NNS subnet's public key and the chain hash it already trusts at `V`
//! ([`verify_registry_page`]), whichever node answered.
//!
//! What [`verify_registry_page`] checks, in order:
//! 1. The certificate's signature under the subnet key ([`verify_certificate`]).
//! 2. The witness of `r/latest` (its value: the latest version, u64 big-endian, absent at
//!    version 0) leads to a root whose state hash at the certified height is the
//!    certified one: `latest` is the registry's latest version at that height.
//! 3. With deltas: they are versions `since + 1` onwards, contiguous, none past
//!    `latest`; the witness of `r/chain/<last>` with the page's head chain hash leads to
//!    the same root; and hashing the deltas onto the trusted chain hash gives that head
//!    (`registry::store::kv::verify_page`). Without deltas: `latest` must not be past
//!    `since` (a node that withholds changes it has is caught).
//!
//! A node can still answer with an older certified height (a stale but true page); a
//! reader that needs the newest asks another node too.

use crate::store::{
    VersionDelta,
    kv::{LATEST, chain_key, verify_page},
};
use certification::verify_certificate;
pub use certification::{Certificate, VerifyError};
use crypto::bls::BlsPublicKey;
use serde::{Deserialize, Serialize};
use state_tree::{
    NEWEST_KNOWN_SCHEMA,
    tree::{self, Witness},
};
use types::{CryptoHash, Height, RegistryVersion};

/// The most versions in one page.
pub const MAX_PAGE_VERSIONS: usize = crate::api::MAX_VERSIONS_PER_PAGE;
/// The deltas of one page stop before this many bytes (a page has at least one delta
/// when there is one to give).
pub const MAX_PAGE_DELTA_BYTES: usize = crate::api::MAX_PAGE_BYTES;
/// The most bytes a reader reads of one page.
pub const MAX_PAGE_BYTES: usize = crate::api::MAX_RESPONSE_BYTES;

/// `GET /api/v1/registry/changes?since=V`, canonically encoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryPage {
    pub since: RegistryVersion,
    pub certified_height: u64,
    pub certificate: Certificate,
    /// The layout the state's entries are hashed in.
    pub state_schema: u32,
    /// The latest registry version at `certified_height`.
    pub latest: RegistryVersion,
    /// The encoded witness of `r/latest`.
    #[serde(with = "serde_bytes")]
    pub latest_witness: Vec<u8>,
    pub deltas: Vec<VersionDelta>,
    /// The chain hash after the last delta and the encoded witness of `r/chain/<last>`.
    pub head: Option<(CryptoHash, serde_bytes::ByteBuf)>,
}

/// Checks `page` against the subnet's public key and `trusted`, the chain hash the
/// reader holds at `page.since`; returns the deltas it proves. See the module docs.
pub fn verify_registry_page<'a>(
    page: &'a RegistryPage,
    trusted: &CryptoHash,
    subnet_key: &BlsPublicKey,
) -> Result<&'a [VersionDelta], VerifyError> {
    let cert = &page.certificate;
    verify_certificate(cert, subnet_key)?;
    if cert.height != page.certified_height {
        return Err(VerifyError::HeightMismatch {
            certificate: cert.height,
            answer: page.certified_height,
        });
    }
    let malformed = |why: String| VerifyError::Malformed(why);
    let schema = page.state_schema;
    if schema == 0 || schema > NEWEST_KNOWN_SCHEMA {
        return Err(malformed(format!("unknown state schema {schema}")));
    }
    let height = Height::new(page.certified_height);
    let leads_to_certified = |key: &[u8], value: Option<&[u8]>, witness: &[u8]| {
        let witness = Witness::decode(witness)?;
        let value_hash = value.map(|v| tree::value_hash(schema, v));
        let root = witness.root(key, value_hash.as_ref())?;
        let computed = tree::state_hash(height, &root);
        if computed != cert.state_hash {
            return Err(VerifyError::StateHashMismatch {
                computed,
                certified: cert.state_hash,
            });
        }
        Ok(())
    };
    let latest = page.latest.get().to_be_bytes();
    let latest_value = (page.latest != RegistryVersion::ZERO).then_some(&latest[..]);
    leads_to_certified(LATEST, latest_value, &page.latest_witness)?;
    let (Some(first), Some(last)) = (page.deltas.first(), page.deltas.last()) else {
        if page.latest > page.since {
            return Err(malformed(format!(
                "no changes after version {}, but the registry is at {}",
                page.since, page.latest
            )));
        }
        return Ok(&page.deltas);
    };
    if first.version.get() != page.since.get() + 1 || last.version > page.latest {
        return Err(malformed(format!(
            "versions {} to {} are not after {} and at most {}",
            first.version, last.version, page.since, page.latest
        )));
    }
    let (head, witness) = page
        .head
        .as_ref()
        .ok_or_else(|| malformed("deltas without a head chain hash".into()))?;
    leads_to_certified(&chain_key(last.version), Some(&head.0), witness)?;
    verify_page(trusted, page.since, &page.deltas, head)
        .map_err(|e| malformed(format!("the deltas do not chain to the head: {e}")))?;
    Ok(&page.deltas)
}

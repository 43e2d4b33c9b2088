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

use crate::{
    governance::{Proposal, ProposalId},
    store::{
        VersionDelta,
        kv::{LATEST, chain_key, verify_page},
    },
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
    let certified = certified_by(
        &page.certificate,
        page.certified_height,
        page.state_schema,
        subnet_key,
    )?;
    let latest = page.latest.get().to_be_bytes();
    let latest_value = (page.latest != RegistryVersion::ZERO).then_some(&latest[..]);
    certified.check(LATEST, latest_value, &page.latest_witness)?;
    let (Some(first), Some(last)) = (page.deltas.first(), page.deltas.last()) else {
        if page.latest > page.since {
            return Err(VerifyError::Malformed(format!(
                "no changes after version {}, but the registry is at {}",
                page.since, page.latest
            )));
        }
        return Ok(&page.deltas);
    };
    if first.version.get() != page.since.get() + 1 || last.version > page.latest {
        return Err(VerifyError::Malformed(format!(
            "versions {} to {} are not after {} and at most {}",
            first.version, last.version, page.since, page.latest
        )));
    }
    let (head, witness) = page
        .head
        .as_ref()
        .ok_or_else(|| VerifyError::Malformed("deltas without a head chain hash".into()))?;
    certified.check(&chain_key(last.version), Some(&head.0), witness)?;
    verify_page(trusted, page.since, &page.deltas, head)
        .map_err(|e| VerifyError::Malformed(format!("the deltas do not chain to the head: {e}")))?;
    Ok(&page.deltas)
}

/// A certificate checked with the subnet key, for checking entries against it.
struct Certified<'c> {
    cert: &'c Certificate,
    height: Height,
    schema: u32,
}

/// Checks `cert` (for `certified_height`, of a state in `schema`) with the subnet key.
fn certified_by<'c>(
    cert: &'c Certificate,
    certified_height: u64,
    schema: u32,
    subnet_key: &BlsPublicKey,
) -> Result<Certified<'c>, VerifyError> {
    verify_certificate(cert, subnet_key)?;
    if cert.height != certified_height {
        return Err(VerifyError::HeightMismatch {
            certificate: cert.height,
            answer: certified_height,
        });
    }
    if schema == 0 || schema > NEWEST_KNOWN_SCHEMA {
        return Err(VerifyError::Malformed(format!(
            "unknown state schema {schema}"
        )));
    }
    Ok(Certified {
        cert,
        height: Height::new(certified_height),
        schema,
    })
}

impl Certified<'_> {
    /// Whether an entry's value (`None`: absent) and its encoded witness lead to the
    /// certified state hash.
    fn check(&self, key: &[u8], value: Option<&[u8]>, witness: &[u8]) -> Result<(), VerifyError> {
        let witness = Witness::decode(witness)?;
        let value_hash = value.map(|v| tree::value_hash(self.schema, v));
        let root = witness.root(key, value_hash.as_ref())?;
        let computed = tree::state_hash(self.height, &root);
        if computed != self.cert.state_hash {
            return Err(VerifyError::StateHashMismatch {
                computed,
                certified: self.cert.state_hash,
            });
        }
        Ok(())
    }
}

/// The most proposals in one governance page.
pub const MAX_PAGE_PROPOSALS: usize = 100;
/// The proposals of one governance page stop before this many encoded bytes (a page has
/// at least one proposal when there is one to give).
pub const MAX_PAGE_PROPOSAL_BYTES: usize = MAX_PAGE_DELTA_BYTES;

/// The state key of governance's metadata (the next proposal id, the voting period).
pub fn governance_meta_key() -> Vec<u8> {
    crate::store::kv::aux_key(crate::service::GOV_META)
}

/// The state key of proposal `id`.
pub fn proposal_entry_key(id: ProposalId) -> Vec<u8> {
    crate::store::kv::aux_key(&crate::service::proposal_key(id))
}

/// `GET /api/v1/registry/proposals?from=ID`, canonically encoded: governance's proposals
/// from `from` on, as of a certified height of the NNS subnet's state, each with the
/// witness of its entry, and the witness of governance's metadata (which says how many
/// proposals there are, so none can be withheld).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernancePage {
    pub from: ProposalId,
    pub certified_height: u64,
    pub certificate: Certificate,
    pub state_schema: u32,
    /// The encoded metadata entry (absent before the registry is installed) and its
    /// encoded witness.
    pub meta: Option<serde_bytes::ByteBuf>,
    pub meta_witness: serde_bytes::ByteBuf,
    /// Proposals `from`, `from + 1`, ...: each encoded, with the encoded witness of its
    /// entry.
    pub proposals: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
}

/// What a [`GovernancePage`] proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedGovernance {
    /// The id the next proposal will get: proposals `1..next_proposal_id` exist.
    pub next_proposal_id: ProposalId,
    pub voting_period_ns: u64,
    /// The page's proposals, ids `from` onwards, contiguous.
    pub proposals: Vec<Proposal>,
}

/// Checks `page` with the subnet's public key: the certificate, the metadata's witness,
/// each proposal's witness under the key its id names, and that none is withheld (a page
/// with no proposal from an id below the next one is refused).
pub fn verify_governance_page(
    page: &GovernancePage,
    subnet_key: &BlsPublicKey,
) -> Result<VerifiedGovernance, VerifyError> {
    let certified = certified_by(
        &page.certificate,
        page.certified_height,
        page.state_schema,
        subnet_key,
    )?;
    let malformed = VerifyError::Malformed;
    certified.check(
        &governance_meta_key(),
        page.meta.as_deref().map(|m| &m[..]),
        &page.meta_witness,
    )?;
    let meta = match &page.meta {
        None => crate::service::GovMeta::default(),
        Some(bytes) => types::codec::decode(bytes, 64)
            .map_err(|e| malformed(format!("governance's metadata: {e}")))?,
    };
    if page.from == 0 {
        return Err(malformed("proposal ids start at 1".into()));
    }
    let available = meta.next_proposal_id.saturating_sub(page.from);
    if page.proposals.len() as u64 > available || (available > 0 && page.proposals.is_empty()) {
        return Err(malformed(format!(
            "{} proposals from id {}, but the next id is {}",
            page.proposals.len(),
            page.from,
            meta.next_proposal_id
        )));
    }
    let mut proposals = Vec::with_capacity(page.proposals.len());
    for (i, (bytes, witness)) in page.proposals.iter().enumerate() {
        let id = page.from + i as u64;
        certified.check(&proposal_entry_key(id), Some(bytes), witness)?;
        let p: Proposal = types::codec::decode(bytes, types::codec::MAX_ENCODED_BYTES)
            .map_err(|e| malformed(format!("proposal {id}: {e}")))?;
        if p.id != id {
            return Err(malformed(format!(
                "the entry of proposal {id} holds {}",
                p.id
            )));
        }
        proposals.push(p);
    }
    Ok(VerifiedGovernance {
        next_proposal_id: meta.next_proposal_id,
        voting_period_ns: meta.voting_period_ns,
        proposals,
    })
}

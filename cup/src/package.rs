use crate::content::CupContent;
use crypto::{
    CryptoError,
    bls::{BlsPublicKey, BlsSignature},
    threshold::{SecretShare, SignatureShare, ThresholdPublicKey},
};
use std::cmp::Ordering;
use types::{
    CryptoHash, Height, RegistryVersion,
    codec::{CodecError, Fields, FieldsWriter},
    domain,
};

/// The largest CUP file or message accepted.
pub const MAX_CUP_BYTES: usize = 1024 * 1024;

const FILE_MAGIC: &[u8; 4] = b"CUP\0";
const FILE_FORMAT: u8 = 1;
const CHECKSUM_BYTES: usize = 32;
const HEADER_BYTES: usize = 5;

mod tag {
    pub const KIND: u16 = 1;
    pub const CONTENT: u16 = 2;
    pub const SIGNATURE: u16 = 3;
}

const KIND_SIGNED: u8 = 1;
const KIND_GENESIS: u8 = 2;
const KIND_RECOVERY: u8 = 3;

/// Why a CUP was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CupError {
    #[error("{got} bytes is more than the {limit} bytes a CUP may have")]
    TooLarge { got: usize, limit: usize },
    #[error("truncated: {got} bytes is too short to be a CUP")]
    Truncated { got: usize },
    #[error("not a CUP file (it does not start with the CUP magic bytes)")]
    BadMagic,
    #[error("{what} format {found} is not supported by this release (supported: 1)")]
    UnsupportedFormat { what: &'static str, found: u8 },
    #[error("checksum mismatch: the file is corrupt (stored {stored}, computed {computed})")]
    ChecksumMismatch { stored: String, computed: String },
    #[error("malformed CUP: {0}")]
    Malformed(String),
    #[error("malformed CUP encoding: {0}")]
    Codec(#[from] CodecError),
    #[error("unknown CUP kind {0}")]
    UnknownKind(u8),
    #[error("a signed CUP has no signature")]
    MissingSignature,
    #[error("a {kind} CUP must not carry a signature")]
    UnexpectedSignature { kind: &'static str },
    #[error("expected a signed CUP, got a {kind} CUP (unsigned CUPs come only from the registry)")]
    NotSigned { kind: &'static str },
    #[error("invalid signature on the CUP at height {height}: {reason}")]
    InvalidSignature { height: Height, reason: String },
    #[error("cannot make the CUP at height {height}: {source}")]
    Combine { height: Height, source: CryptoError },
}

/// A CUP's position in the (partial) order of CUPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CupParam {
    pub height: Height,
    pub registry_version: RegistryVersion,
}

impl PartialOrd for CupParam {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        use Ordering::*;
        let h = self.height.cmp(&other.height);
        let r = self.registry_version.cmp(&other.registry_version);
        match (h, r) {
            (Equal, r) => Some(r),
            (Greater, Greater | Equal) => Some(Greater),
            (Less, Less | Equal) => Some(Less),
            // Higher but with an older registry version (or the reverse): incomparable.
            _ => None,
        }
    }
}

/// A CUP threshold-signed by its subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCup {
    content: CupContent,
    /// The exact signed bytes (equal to `content.encode()`, since decoding is canonical
    /// and unknown fields are kept).
    content_bytes: Vec<u8>,
    signature: BlsSignature,
}

/// Genesis or recovery: why a registry CUP exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryCupKind {
    Genesis,
    Recovery,
}

/// An unsigned CUP built from registry contents (genesis or recovery).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryCup {
    pub kind: RegistryCupKind,
    pub content: CupContent,
}

/// Any CUP, as stored in a file.
// A node holds a handful of CUPs at a time: boxing to save 200 bytes is not worth the
// extra indirection in every match.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cup {
    Signed(SignedCup),
    Registry(RegistryCup),
}

impl SignedCup {
    /// This node's share of the CUP signature.
    pub fn sign_share(content: &CupContent, share: &SecretShare) -> SignatureShare {
        share.sign(domain::CUP_CONTENT, &content.encode())
    }

    /// Verifies one node's share (before it is counted towards the threshold).
    pub fn verify_share(
        content: &CupContent,
        public: &ThresholdPublicKey,
        share: &SignatureShare,
    ) -> Result<(), CryptoError> {
        public.verify_share(domain::CUP_CONTENT, &content.encode(), share)
    }

    /// Combines shares into the CUP and checks the result against the subnet key.
    pub fn combine(
        content: CupContent,
        public: &ThresholdPublicKey,
        shares: &[SignatureShare],
    ) -> Result<Self, CupError> {
        let height = content.height;
        let content_bytes = content.encode();
        let signature = public
            .combine(shares)
            .map_err(|source| CupError::Combine { height, source })?;
        let cup = Self {
            content,
            content_bytes,
            signature,
        };
        cup.verify(&public.group_key)?;
        Ok(cup)
    }

    /// Assembles a CUP from signed content bytes and a signature (not verified here).
    pub fn from_parts(content_bytes: Vec<u8>, signature: BlsSignature) -> Result<Self, CupError> {
        let content = CupContent::decode(&content_bytes)?;
        Ok(Self {
            content,
            content_bytes,
            signature,
        })
    }

    pub fn content(&self) -> &CupContent {
        &self.content
    }

    pub fn content_bytes(&self) -> &[u8] {
        &self.content_bytes
    }

    pub fn signature(&self) -> &BlsSignature {
        &self.signature
    }

    /// Checks the threshold signature over the exact content bytes.
    pub fn verify(&self, subnet_key: &BlsPublicKey) -> Result<(), CupError> {
        subnet_key
            .verify(domain::CUP_CONTENT, &self.content_bytes, &self.signature)
            .map_err(|e| CupError::InvalidSignature {
                height: self.content.height,
                reason: e.to_string(),
            })
    }

    /// Decodes a CUP that must be signed (anything received from a peer).
    pub fn decode(bytes: &[u8]) -> Result<Self, CupError> {
        match Cup::decode(bytes)? {
            Cup::Signed(s) => Ok(s),
            Cup::Registry(r) => Err(CupError::NotSigned {
                kind: r.kind.name(),
            }),
        }
    }
}

impl RegistryCupKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Genesis => "genesis",
            Self::Recovery => "recovery",
        }
    }
}

impl Cup {
    pub fn content(&self) -> &CupContent {
        match self {
            Self::Signed(s) => &s.content,
            Self::Registry(r) => &r.content,
        }
    }

    pub fn param(&self) -> CupParam {
        self.content().param()
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Signed(_) => "signed",
            Self::Registry(r) => r.kind.name(),
        }
    }

    /// The file/wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, content, signature) = match self {
            Self::Signed(s) => (
                KIND_SIGNED,
                s.content_bytes.clone(),
                Some(s.signature.to_bytes()),
            ),
            Self::Registry(r) => {
                let kind = match r.kind {
                    RegistryCupKind::Genesis => KIND_GENESIS,
                    RegistryCupKind::Recovery => KIND_RECOVERY,
                };
                (kind, r.content.encode(), None)
            }
        };
        let mut w = FieldsWriter::new()
            .raw(tag::KIND, &[kind])
            .raw(tag::CONTENT, &content);
        if let Some(sig) = signature {
            w = w.raw(tag::SIGNATURE, &sig);
        }
        let mut out = Vec::new();
        out.extend_from_slice(FILE_MAGIC);
        out.push(FILE_FORMAT);
        out.extend_from_slice(&w.finish());
        let checksum = CryptoHash::of(domain::CUP_FILE_CHECKSUM, &out);
        out.extend_from_slice(checksum.as_bytes());
        out
    }

    /// Decodes a CUP file: size, magic, format and checksum first, then the fields.
    /// Does not verify the signature (that needs the subnet key: [`SignedCup::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, CupError> {
        if bytes.len() > MAX_CUP_BYTES {
            return Err(CupError::TooLarge {
                got: bytes.len(),
                limit: MAX_CUP_BYTES,
            });
        }
        if bytes.len() < HEADER_BYTES + CHECKSUM_BYTES {
            return Err(CupError::Truncated { got: bytes.len() });
        }
        if &bytes[..4] != FILE_MAGIC {
            return Err(CupError::BadMagic);
        }
        if bytes[4] != FILE_FORMAT {
            return Err(CupError::UnsupportedFormat {
                what: "file",
                found: bytes[4],
            });
        }
        let (body, stored) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
        let computed = CryptoHash::of(domain::CUP_FILE_CHECKSUM, body);
        if computed.as_bytes().as_slice() != stored {
            return Err(CupError::ChecksumMismatch {
                stored: hex::encode(stored),
                computed: computed.to_hex(),
            });
        }
        let f = Fields::parse(&body[HEADER_BYTES..], MAX_CUP_BYTES)?;
        let kind = match f.raw(tag::KIND) {
            Some([k]) => *k,
            _ => {
                return Err(CupError::Malformed(
                    "missing or malformed kind field".into(),
                ));
            }
        };
        let content_bytes = f
            .raw(tag::CONTENT)
            .ok_or_else(|| CupError::Malformed("missing content field".into()))?
            .to_vec();
        let signature = f.raw(tag::SIGNATURE);
        let registry = |kind: RegistryCupKind| -> Result<Self, CupError> {
            if signature.is_some() {
                return Err(CupError::UnexpectedSignature { kind: kind.name() });
            }
            let content = CupContent::decode(&content_bytes)?;
            Ok(Self::Registry(RegistryCup { kind, content }))
        };
        match kind {
            KIND_SIGNED => {
                let sig = signature.ok_or(CupError::MissingSignature)?;
                let signature = BlsSignature::from_bytes(sig)
                    .map_err(|e| CupError::Malformed(format!("signature: {e}")))?;
                SignedCup::from_parts(content_bytes, signature).map(Self::Signed)
            }
            KIND_GENESIS => registry(RegistryCupKind::Genesis),
            KIND_RECOVERY => registry(RegistryCupKind::Recovery),
            other => Err(CupError::UnknownKind(other)),
        }
    }
}

/// The highest valid CUP among `candidates`, or `None` if none is valid.
///
/// Signed CUPs count only if their signature verifies with `subnet_key`. Registry CUPs
/// carry no signature and are taken as valid: pass only ones built from the registry.
/// "Highest" maximises `(height, registry_version)` lexicographically, a linear extension
/// of the partial order, so the result is never below another valid candidate; on a
/// complete tie a signed CUP is preferred, then the earliest candidate.
pub fn choose_highest<'a>(
    candidates: impl IntoIterator<Item = &'a Cup>,
    subnet_key: &BlsPublicKey,
) -> Option<&'a Cup> {
    choose_highest_by(candidates, |s| s.verify(subnet_key).is_ok())
}

/// [`choose_highest`] with the signature check as an argument: `verifies(cup)` says
/// whether a signed CUP carries its subnet's signature. The production check is
/// [`SignedCup::verify`] against the subnet key; the simulator passes the check of its
/// stand-in signatures, so that the choice itself is the same code in both.
pub fn choose_highest_by<'a>(
    candidates: impl IntoIterator<Item = &'a Cup>,
    mut verifies: impl FnMut(&SignedCup) -> bool,
) -> Option<&'a Cup> {
    let rank = |c: &Cup| {
        let p = c.param();
        (p.height, p.registry_version, matches!(c, Cup::Signed(_)))
    };
    // Highest rank first (a stable sort keeps the given order among equals), so only
    // candidates down to the first valid one cost a signature check: an orchestrator
    // weighs its own CUP and its peers' (mostly the same one) every few hundred ms.
    let mut sorted: Vec<&'a Cup> = candidates.into_iter().collect();
    sorted.sort_by_key(|c| std::cmp::Reverse(rank(c)));
    sorted.into_iter().find(|c| match c {
        Cup::Signed(s) => verifies(s),
        Cup::Registry(_) => true,
    })
}

//! How this release puts consensus artifacts on the wire.
//!
//! The first release sends an [`Envelope`]'s canonical encoding under the QUIC protocol
//! `icup-consensus/1`. The next release sends a tagged record (format, artifact, version)
//! under `icup-consensus/2`. Replicas of the two releases cannot mix: they do not complete
//! a QUIC handshake, and each release rejects the other's bytes. A subnet changes format
//! only at a CUP, where the whole subnet switches release.
//!
//! Beside artifacts, the same connections carry [`IngressBatch`]es: user updates a node
//! accepted, relayed to its peers in batches (the transport's bulk class, written only
//! when no artifact waits), tagged with the sender's replica version like artifacts. The
//! first release marks a batch with a leading `INGRESS_BATCH_MARK`, a byte no envelope
//! starts with (an envelope starts with its version's length as a big-endian `u64`, at
//! most 64, so with 0); the next release gives it a format value of its own.

use crate::ingress::SignedIngress;
use consensus::artifact::Envelope;
use serde::{Deserialize, Serialize};
use types::{ReplicaVersion, codec};

/// The most bytes of updates a batch carries; a larger one is not decoded.
pub const MAX_INGRESS_BATCH_BYTES: usize = 1024 * 1024;
/// The first release's mark of an ingress batch.
#[cfg(not(feature = "next-release"))]
pub const INGRESS_BATCH_MARK: u8 = 0xFF;

/// Updates relayed from the node that accepted them to its peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressBatch {
    /// The sender's replica version: a batch of another version is dropped.
    pub version: ReplicaVersion,
    pub updates: Vec<SignedIngress>,
}

/// What a peer sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    Artifact(Envelope),
    Ingress(IngressBatch),
}

/// An artifact or an ingress batch.
pub fn decode_inbound(bytes: &[u8]) -> Result<Inbound, codec::CodecError> {
    decode_inbound_impl(bytes)
}

#[cfg(not(feature = "next-release"))]
pub fn encode_ingress(b: &IngressBatch) -> Vec<u8> {
    let mut out = vec![INGRESS_BATCH_MARK];
    out.extend_from_slice(&codec::encode(b));
    out
}

#[cfg(not(feature = "next-release"))]
fn decode_inbound_impl(bytes: &[u8]) -> Result<Inbound, codec::CodecError> {
    match bytes.split_first() {
        Some((&INGRESS_BATCH_MARK, rest)) => {
            codec::decode(rest, MAX_INGRESS_BATCH_BYTES).map(Inbound::Ingress)
        }
        _ => decode(bytes).map(Inbound::Artifact),
    }
}

/// The consensus wire protocol (the QUIC ALPN): peers speaking another one do not connect.
#[cfg(not(feature = "next-release"))]
pub const WIRE_PROTOCOL: &str = "icup-consensus/1";
/// The consensus wire protocol (the QUIC ALPN): peers speaking another one do not connect.
#[cfg(feature = "next-release")]
pub const WIRE_PROTOCOL: &str = "icup-consensus/2";

/// The record tags of the next release's format.
#[cfg(feature = "next-release")]
mod tag {
    pub const FORMAT: u16 = 1;
    pub const ARTIFACT: u16 = 2;
    pub const VERSION: u16 = 3;
    /// The value of the format field.
    pub const FORMAT_2: u16 = 2;
    /// The format field of an ingress batch, and its field.
    pub const FORMAT_INGRESS: u16 = 3;
    pub const UPDATES: u16 = 4;
}

#[cfg(feature = "next-release")]
pub fn encode_ingress(b: &IngressBatch) -> Vec<u8> {
    codec::FieldsWriter::new()
        .field(tag::FORMAT, &tag::FORMAT_INGRESS)
        .field(tag::VERSION, &b.version)
        .field(tag::UPDATES, &b.updates)
        .finish()
}

#[cfg(feature = "next-release")]
fn decode_inbound_impl(bytes: &[u8]) -> Result<Inbound, codec::CodecError> {
    let f = codec::Fields::parse(bytes, consensus::artifact::MAX_ENVELOPE_BYTES)?;
    let format: u16 = f.required(tag::FORMAT, "format")?;
    if format != tag::FORMAT_INGRESS {
        return decode(bytes).map(Inbound::Artifact);
    }
    if bytes.len() > MAX_INGRESS_BATCH_BYTES + 1024 {
        return Err(codec::CodecError::Malformed(format!(
            "an ingress batch of {} bytes",
            bytes.len()
        )));
    }
    Ok(Inbound::Ingress(IngressBatch {
        version: f.required(tag::VERSION, "version")?,
        updates: f.required(tag::UPDATES, "updates")?,
    }))
}

#[cfg(not(feature = "next-release"))]
pub fn encode(e: &Envelope) -> Vec<u8> {
    e.encode()
}

#[cfg(not(feature = "next-release"))]
pub fn decode(bytes: &[u8]) -> Result<Envelope, codec::CodecError> {
    Envelope::decode(bytes)
}

#[cfg(feature = "next-release")]
pub fn encode(e: &Envelope) -> Vec<u8> {
    codec::FieldsWriter::new()
        .field(tag::FORMAT, &tag::FORMAT_2)
        .field(tag::ARTIFACT, &e.artifact)
        .field(tag::VERSION, &e.version)
        .finish()
}

#[cfg(feature = "next-release")]
pub fn decode(bytes: &[u8]) -> Result<Envelope, codec::CodecError> {
    let f = codec::Fields::parse(bytes, consensus::artifact::MAX_ENVELOPE_BYTES)?;
    let format: u16 = f.required(tag::FORMAT, "format")?;
    if format != tag::FORMAT_2 {
        return Err(codec::CodecError::Malformed(format!(
            "wire format {format}, this release speaks {}",
            tag::FORMAT_2
        )));
    }
    let artifact = f.required(tag::ARTIFACT, "artifact")?;
    let version = f.required(tag::VERSION, "version")?;
    Ok(Envelope { version, artifact })
}

#[cfg(test)]
mod tests {
    use super::*;
    use consensus::artifact::Artifact;
    use types::{Height, ReplicaVersion};

    fn envelope() -> Envelope {
        Envelope {
            version: ReplicaVersion::new("1.0.0").expect("version"),
            artifact: Artifact::Request {
                height: Height::new(7),
            },
        }
    }

    /// The other release's encoding of the same envelope, written out here.
    fn other_release_bytes(e: &Envelope) -> Vec<u8> {
        if cfg!(feature = "next-release") {
            codec::encode(e)
        } else {
            codec::FieldsWriter::new()
                .field(1, &2u16)
                .field(2, &e.artifact)
                .field(3, &e.version)
                .finish()
        }
    }

    fn batch() -> IngressBatch {
        let updates = (0..3u64)
            .map(|i| {
                let key = format!("k{i}");
                let value = vec![i as u8; 10];
                crate::ingress::signed_for_test(5, i, crate::ingress::Operation::Put { key, value })
            })
            .collect();
        IngressBatch {
            version: ReplicaVersion::new("1.0.0").expect("version"),
            updates,
        }
    }

    #[test]
    fn artifacts_and_ingress_batches_are_told_apart_and_round_trip() {
        let e = envelope();
        assert_eq!(
            decode_inbound(&encode(&e)),
            Ok(Inbound::Artifact(e.clone()))
        );
        let b = batch();
        let bytes = encode_ingress(&b);
        assert_eq!(decode_inbound(&bytes), Ok(Inbound::Ingress(b)));
        assert!(decode(&bytes).is_err(), "a batch decoded as an artifact");
        assert!(decode_inbound(&bytes[..bytes.len() - 1]).is_err());
        // No envelope starts with the first release's batch mark: its first byte is
        // the high byte of its version's length (a big-endian u64 of at most 64).
        let long = Envelope {
            version: ReplicaVersion::new("v".repeat(ReplicaVersion::MAX_CHARS)).expect("v"),
            artifact: e.artifact.clone(),
        };
        for e in [e, long] {
            let first = codec::encode(&e)[0];
            assert_eq!(first, 0);
        }
    }

    #[test]
    fn an_envelope_round_trips_and_the_other_release_s_bytes_do_not_decode() {
        let e = envelope();
        assert_eq!(decode(&encode(&e)), Ok(e.clone()));
        let other = other_release_bytes(&e);
        assert_ne!(other, encode(&e));
        assert!(decode(&other).is_err(), "decoded the other release's bytes");
        assert!(decode(&encode(&e)[1..]).is_err());
    }
}

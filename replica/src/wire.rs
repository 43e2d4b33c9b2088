//! How this release puts consensus artifacts on the wire.
//!
//! The first release sends an [`Envelope`]'s canonical encoding under the QUIC protocol
//! `icup-consensus/1`. The next release sends a tagged record (format, artifact, version)
//! under `icup-consensus/2`. Replicas of the two releases cannot mix: they do not complete
//! a QUIC handshake, and each release rejects the other's bytes. A subnet changes format
//! only at a CUP, where the whole subnet switches release.

use consensus::artifact::Envelope;
use types::codec;

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

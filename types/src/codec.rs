//! The one codec for everything that is hashed, signed, stored or sent.
//!
//! Two layers:
//! - **Values** ([`encode`] / [`decode`]): bincode 2 through serde, big-endian with fixed-width
//!   integers, under one configuration ([`config`]). bincode alone is malleable (it accepts
//!   trailing bytes and several encodings of one value), so [`decode`] checks the size limit
//!   first, rejects trailing bytes, and re-encodes the value and compares: only the one
//!   canonical byte string decodes. Hashed types must not contain `HashMap`s or floats.
//! - **Extensible records** ([`FieldsWriter`] / [`Fields`]): a record is a sequence of
//!   `(tag: u16, length: u32, value)` fields with strictly ascending tags, each value encoded
//!   with the value codec. A reader takes the tags it knows and ignores the others, so a
//!   release can add a field and both older and newer releases still decode each other's
//!   records. This is how CUP contents and registry records cross an upgrade.

use serde::{Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;

/// An absolute ceiling on anything this codec decodes, whatever the caller's own limit.
pub const MAX_ENCODED_BYTES: usize = 64 * 1024 * 1024;

/// The single bincode configuration. Changing it changes every hash: don't.
pub fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_big_endian()
        .with_fixed_int_encoding()
        .with_limit::<MAX_ENCODED_BYTES>()
}

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("input of {got} bytes exceeds the limit of {limit} bytes")]
    TooLarge { got: usize, limit: usize },
    #[error("malformed encoding: {0}")]
    Malformed(String),
    #[error("{trailing} trailing bytes after the value")]
    TrailingBytes { trailing: usize },
    #[error("non-canonical encoding (re-encoding the value gives different bytes)")]
    NonCanonical,
    #[error("truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("field tags must be strictly ascending: tag {tag} follows tag {previous}")]
    FieldOrder { previous: u16, tag: u16 },
    #[error("too many fields: more than {limit}")]
    TooManyFields { limit: usize },
    #[error("required field {tag} ({name}) is missing")]
    MissingField { tag: u16, name: &'static str },
    #[error("field {tag} ({name}): {reason}")]
    BadField {
        tag: u16,
        name: &'static str,
        reason: String,
    },
}

/// Encodes a value canonically.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Encoding into a Vec only fails for types serde cannot represent (maps with
    // unknown length and the like), which our types never are.
    match bincode::serde::encode_to_vec(value, config()) {
        Ok(bytes) => bytes,
        Err(e) => panic!("codec: a protocol type failed to encode: {e}"),
    }
}

/// Decodes a value, accepting only its canonical encoding and at most `limit` bytes.
pub fn decode<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, CodecError> {
    let limit = limit.min(MAX_ENCODED_BYTES);
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            got: bytes.len(),
            limit,
        });
    }
    let (value, read): (T, usize) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if read != bytes.len() {
        return Err(CodecError::TrailingBytes {
            trailing: bytes.len() - read,
        });
    }
    if encode(&value) != bytes {
        return Err(CodecError::NonCanonical);
    }
    Ok(value)
}

/// Builds an extensible record. Tags must be added in strictly ascending order.
#[derive(Debug, Default)]
pub struct FieldsWriter {
    buf: Vec<u8>,
    last_tag: Option<u16>,
}

impl FieldsWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a field whose value is encoded with [`encode`].
    pub fn field<T: Serialize + ?Sized>(self, tag: u16, value: &T) -> Self {
        let bytes = encode(value);
        self.raw(tag, &bytes)
    }

    /// Adds a field whose value bytes are given as they are.
    pub fn raw(mut self, tag: u16, bytes: &[u8]) -> Self {
        assert!(
            self.last_tag.is_none_or(|last| tag > last),
            "FieldsWriter: tag {tag} added out of order (last {:?})",
            self.last_tag
        );
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        assert!(
            bytes.len() <= MAX_ENCODED_BYTES,
            "FieldsWriter: field {tag} too large"
        );
        self.buf.extend_from_slice(&tag.to_be_bytes());
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(bytes);
        self.last_tag = Some(tag);
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// Encodes a whole record whose fields are already encoded, in tag order.
    pub fn from_map(fields: &BTreeMap<u16, Vec<u8>>) -> Vec<u8> {
        fields
            .iter()
            .fold(Self::new(), |w, (tag, bytes)| w.raw(*tag, bytes))
            .finish()
    }
}

/// A parsed extensible record: each field's raw value bytes by tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields<'a> {
    fields: BTreeMap<u16, &'a [u8]>,
}

impl<'a> Fields<'a> {
    /// The most fields a record may have; a bound on work for hostile input.
    pub const MAX_FIELDS: usize = 256;

    /// Parses the framing (not the values), checking order, lengths and limits.
    pub fn parse(bytes: &'a [u8], limit: usize) -> Result<Self, CodecError> {
        let limit = limit.min(MAX_ENCODED_BYTES);
        if bytes.len() > limit {
            return Err(CodecError::TooLarge {
                got: bytes.len(),
                limit,
            });
        }
        let mut fields = BTreeMap::new();
        let mut offset = 0usize;
        let mut previous: Option<u16> = None;
        while offset < bytes.len() {
            let header = bytes
                .get(offset..offset + 6)
                .ok_or_else(|| CodecError::Truncated {
                    offset,
                    needed: offset + 6 - bytes.len(),
                })?;
            let tag = u16::from_be_bytes([header[0], header[1]]);
            let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
            if let Some(previous) = previous
                && tag <= previous
            {
                return Err(CodecError::FieldOrder { previous, tag });
            }
            let start = offset + 6;
            let end = start
                .checked_add(len)
                .ok_or(CodecError::TooLarge { got: len, limit })?;
            let value = bytes.get(start..end).ok_or_else(|| CodecError::Truncated {
                offset: start,
                needed: end - bytes.len(),
            })?;
            if fields.len() == Self::MAX_FIELDS {
                return Err(CodecError::TooManyFields {
                    limit: Self::MAX_FIELDS,
                });
            }
            fields.insert(tag, value);
            previous = Some(tag);
            offset = end;
        }
        Ok(Self { fields })
    }

    /// The raw bytes of a field, if present.
    pub fn raw(&self, tag: u16) -> Option<&'a [u8]> {
        self.fields.get(&tag).copied()
    }

    /// Decodes a field that must be present.
    pub fn required<T: Serialize + DeserializeOwned>(
        &self,
        tag: u16,
        name: &'static str,
    ) -> Result<T, CodecError> {
        self.optional(tag, name)?
            .ok_or(CodecError::MissingField { tag, name })
    }

    /// Decodes a field that may be absent (every field added after the first release).
    pub fn optional<T: Serialize + DeserializeOwned>(
        &self,
        tag: u16,
        name: &'static str,
    ) -> Result<Option<T>, CodecError> {
        match self.fields.get(&tag) {
            None => Ok(None),
            Some(bytes) => {
                decode(bytes, MAX_ENCODED_BYTES)
                    .map(Some)
                    .map_err(|e| CodecError::BadField {
                        tag,
                        name,
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// Tags present that are not in `known`, for diagnostics ("written by a newer release").
    pub fn unknown_tags(&self, known: &[u16]) -> Vec<u16> {
        self.fields
            .keys()
            .copied()
            .filter(|t| !known.contains(t))
            .collect()
    }

    /// The fields whose tags are not in `known`, with their raw bytes.
    pub fn unknown_fields(&self, known: &[u16]) -> BTreeMap<u16, Vec<u8>> {
        self.fields
            .iter()
            .filter(|(t, _)| !known.contains(t))
            .map(|(t, b)| (*t, b.to_vec()))
            .collect()
    }
}

/// The largest extensible record [`extensible_record!`] decodes.
pub const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;

/// Declares a struct stored as an extensible record: each field has a fixed tag and is
/// `required` (absent is an error), `defaulted` (absent reads as `Default::default()`:
/// every field added after a record's first release), or `optional` (an `Option<T>`
/// written only when `Some`, so records that never set it keep their old bytes). Unknown
/// fields are kept in `extensions` and written back, so
/// `encode_record(decode_record(b)) == b` for every `b` that decodes.
///
/// ```
/// types::extensible_record! {
///     /// A example.
///     pub struct Example {
///         1 required name: String,
///         2 defaulted retries: u32,
///     }
/// }
/// let e = Example { name: "x".into(), retries: 3, extensions: Default::default() };
/// assert_eq!(Example::decode_record(&e.encode_record()), Ok(e));
/// ```
#[macro_export]
macro_rules! extensible_record {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $tag:literal $mode:ident $field:ident : $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        $vis struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            /// Fields written by a newer release that this one does not know, by tag,
            /// kept verbatim so that re-encoding reproduces the bytes.
            pub extensions: ::std::collections::BTreeMap<u16, ::std::vec::Vec<u8>>,
        }

        impl $name {
            /// The tags this release knows.
            pub const KNOWN_TAGS: &'static [u16] = &[$($tag),*];

            /// The canonical extensible-record encoding.
            pub fn encode_record(&self) -> ::std::vec::Vec<u8> {
                let mut fields = self.extensions.clone();
                $( $crate::__record_write!($mode, fields, $tag, &self.$field); )*
                $crate::codec::FieldsWriter::from_map(&fields)
            }

            /// Decodes a record; see [`extensible_record!`](types::extensible_record).
            pub fn decode_record(bytes: &[u8]) -> ::std::result::Result<Self, $crate::codec::CodecError> {
                let f = $crate::codec::Fields::parse(bytes, $crate::codec::MAX_RECORD_BYTES)?;
                Ok(Self {
                    $( $field: $crate::__record_field!($mode, f, $tag, stringify!($field)), )*
                    extensions: f.unknown_fields(Self::KNOWN_TAGS),
                })
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __record_field {
    (required, $f:ident, $tag:expr, $name:expr) => {
        $f.required($tag, $name)?
    };
    (defaulted, $f:ident, $tag:expr, $name:expr) => {
        $f.optional($tag, $name)?.unwrap_or_default()
    };
    (optional, $f:ident, $tag:expr, $name:expr) => {
        $f.optional($tag, $name)?
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __record_write {
    (optional, $fields:ident, $tag:expr, $value:expr) => {
        if let Some(v) = $value {
            $fields.insert($tag, $crate::codec::encode(v));
        }
    };
    ($mode:ident, $fields:ident, $tag:expr, $value:expr) => {
        $fields.insert($tag, $crate::codec::encode($value));
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    /// Byte fields marked `serde_bytes` (block payloads, update values) must encode
    /// exactly as plain `Vec<u8>` did: hashes and signatures cover these bytes.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Plain {
        tag: u32,
        bytes: Vec<u8>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Marked {
        tag: u32,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    }

    proptest! {
        #[test]
        fn bytes_marked_serde_bytes_encode_and_decode_as_a_plain_vec(
            tag in any::<u32>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let plain = encode(&Plain { tag, bytes: bytes.clone() });
            let marked = encode(&Marked { tag, bytes: bytes.clone() });
            prop_assert_eq!(&plain, &marked);
            let back: Marked = decode(&plain, plain.len()).expect("decodes");
            prop_assert_eq!(back, Marked { tag, bytes });
        }
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        height: u64,
        name: String,
        flag: bool,
        items: Vec<u32>,
        maybe: Option<[u8; 4]>,
    }

    fn sample() -> Sample {
        Sample {
            height: 7,
            name: "abc".into(),
            flag: true,
            items: vec![1, 2],
            maybe: Some([9; 4]),
        }
    }

    #[test]
    fn round_trip_and_fixed_layout() {
        let bytes = encode(&7u64);
        assert_eq!(
            bytes,
            [0, 0, 0, 0, 0, 0, 0, 7],
            "big-endian fixed-width integers"
        );
        assert_eq!(decode::<Sample>(&encode(&sample()), 1024), Ok(sample()));
    }

    #[test]
    fn rejects_trailing_bytes_truncation_and_oversize() {
        let mut bytes = encode(&sample());
        bytes.push(0);
        assert_eq!(
            decode::<Sample>(&bytes, 1024),
            Err(CodecError::TrailingBytes { trailing: 1 })
        );
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(
            decode::<Sample>(&bytes, 1024),
            Err(CodecError::Malformed(_))
        ));
        let ok = encode(&sample());
        assert!(matches!(
            decode::<Sample>(&ok, 3),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn rejects_non_canonical_bool_and_option_tags() {
        let mut bytes = encode(&sample());
        // The bool sits right after height (8) + string length (8) + "abc" (3).
        assert_eq!(bytes[19], 1);
        bytes[19] = 2;
        assert!(decode::<Sample>(&bytes, 1024).is_err());
    }

    #[test]
    fn rejects_a_huge_claimed_length_without_allocating_it() {
        // A Vec<u8> claiming 2^60 elements in a 12-byte input.
        let mut bytes = (1u64 << 60).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        assert!(decode::<Vec<u8>>(&bytes, 1024).is_err());
    }

    #[test]
    fn fields_round_trip_ignore_unknown_and_report_missing() {
        let bytes = FieldsWriter::new()
            .field(1, &5u64)
            .field(3, "x")
            .raw(200, b"future")
            .finish();
        let f = Fields::parse(&bytes, 1024).expect("parses");
        assert_eq!(f.required::<u64>(1, "a"), Ok(5));
        assert_eq!(f.optional::<String>(3, "b"), Ok(Some("x".to_string())));
        assert_eq!(f.optional::<u64>(2, "c"), Ok(None));
        assert_eq!(
            f.required::<u64>(2, "c"),
            Err(CodecError::MissingField { tag: 2, name: "c" })
        );
        assert_eq!(f.unknown_tags(&[1, 3]), vec![200]);
        assert!(matches!(
            f.required::<u64>(3, "b"),
            Err(CodecError::BadField { tag: 3, .. })
        ));
    }

    crate::extensible_record! {
        struct OldRecord {
            1 required name: String,
            2 defaulted count: u32,
        }
    }

    crate::extensible_record! {
        /// The same record in a later release: one more field.
        struct NewRecord {
            1 required name: String,
            2 defaulted count: u32,
            3 defaulted label: Option<String>,
        }
    }

    #[test]
    fn extensible_records_cross_releases_both_ways() {
        let new = NewRecord {
            name: "n".into(),
            count: 2,
            label: Some("l".into()),
            extensions: Default::default(),
        };
        let bytes = new.encode_record();
        // Old reads new: keeps the unknown field and writes it back.
        let old = OldRecord::decode_record(&bytes).expect("old decodes new");
        assert_eq!((old.name.as_str(), old.count), ("n", 2));
        assert_eq!(old.extensions.keys().copied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(old.encode_record(), bytes);
        // New reads old: the missing field is its default.
        let old = OldRecord {
            name: "o".into(),
            count: 0,
            extensions: Default::default(),
        };
        let back = NewRecord::decode_record(&old.encode_record()).expect("new decodes old");
        assert_eq!(back.label, None);
        // A required field missing is an error naming it.
        let missing = FieldsWriter::new().field(2, &1u32).finish();
        assert_eq!(
            OldRecord::decode_record(&missing),
            Err(CodecError::MissingField {
                tag: 1,
                name: "name"
            })
        );
    }

    crate::extensible_record! {
        /// `OldRecord` with an `optional` field: unset, it writes the old bytes.
        struct WithOptional {
            1 required name: String,
            2 defaulted count: u32,
            3 optional label: Option<String>,
        }
    }

    #[test]
    fn an_unset_optional_field_keeps_the_old_bytes() {
        let old = OldRecord {
            name: "n".into(),
            count: 2,
            extensions: Default::default(),
        };
        let bytes = old.encode_record();
        let read = WithOptional::decode_record(&bytes).expect("decodes");
        assert_eq!(read.label, None);
        assert_eq!(read.encode_record(), bytes, "re-encoded unchanged");
        let set = WithOptional {
            label: Some("l".into()),
            ..read
        };
        let bytes = set.encode_record();
        assert_eq!(WithOptional::decode_record(&bytes), Ok(set));
        let old = OldRecord::decode_record(&bytes).expect("old decodes new");
        assert_eq!(old.extensions.keys().copied().collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn fields_reject_disorder_duplicates_and_truncation() {
        let a = FieldsWriter::new().field(2, &1u8).finish();
        let b = FieldsWriter::new().field(1, &1u8).finish();
        let out_of_order = [a.clone(), b].concat();
        assert_eq!(
            Fields::parse(&out_of_order, 1024),
            Err(CodecError::FieldOrder {
                previous: 2,
                tag: 1
            })
        );
        let duplicate = [a.clone(), a.clone()].concat();
        assert!(matches!(
            Fields::parse(&duplicate, 1024),
            Err(CodecError::FieldOrder { .. })
        ));
        for cut in 1..a.len() {
            assert!(
                matches!(
                    Fields::parse(&a[..cut], 1024),
                    Err(CodecError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_single_byte_change_is_rejected_or_decodes_to_a_different_value(
            pos in 0usize..38, delta in 1u8..=255
        ) {
            let bytes = encode(&sample());
            prop_assume!(pos < bytes.len());
            let mut bad = bytes.clone();
            bad[pos] = bad[pos].wrapping_add(delta);
            if let Ok(v) = decode::<Sample>(&bad, 1024) {
                prop_assert_ne!(v, sample());
            }
        }

        #[test]
        fn fields_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Fields::parse(&bytes, 1024);
        }
    }
}

use crate::ParseError;
use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr};

macro_rules! counter_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
        )]
        pub struct $name(pub u64);

        impl $name {
            pub const ZERO: Self = Self(0);

            pub const fn new(value: u64) -> Self {
                Self(value)
            }

            pub const fn get(self) -> u64 {
                self.0
            }

            /// The next value; saturates rather than wrapping (u64 never runs out in practice).
            pub const fn increment(self) -> Self {
                Self(self.0.saturating_add(1))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                // u64's parser accepts a leading '+'; canonical text has none.
                if s.starts_with('+') {
                    return Err(ParseError::NotANumber(s.to_string()));
                }
                s.parse::<u64>().map(Self).map_err(|_| ParseError::NotANumber(s.to_string()))
            }
        }
    };
}

counter_type!(
    /// A consensus height (block number).
    Height
);
counter_type!(
    /// A registry version: version `v` is the registry after the `v`-th mutation batch.
    /// Version 0 is the empty registry.
    RegistryVersion
);

/// The version id of a release: 1 to 64 characters of `[A-Za-z0-9._-]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ReplicaVersion(String);

/// Why a text is not a valid [`ReplicaVersion`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaVersionError {
    #[error("a replica version must not be empty")]
    Empty,
    #[error("a replica version has at most {max} characters, this one has {got}")]
    TooLong { max: usize, got: usize },
    #[error("a replica version may only contain A-Z, a-z, 0-9, '.', '_' and '-'; found {found:?}")]
    BadCharacter { found: char },
}

impl ReplicaVersion {
    pub const MAX_CHARS: usize = 64;

    pub fn new(text: impl Into<String>) -> Result<Self, ReplicaVersionError> {
        let text = text.into();
        if text.is_empty() {
            return Err(ReplicaVersionError::Empty);
        }
        if let Some(found) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(ReplicaVersionError::BadCharacter { found });
        }
        // All characters are ASCII here, so bytes == characters.
        if text.len() > Self::MAX_CHARS {
            return Err(ReplicaVersionError::TooLong {
                max: Self::MAX_CHARS,
                got: text.len(),
            });
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Deserialization validates too: a version read from disk or the wire is as checked as
// one typed on a command line.
impl<'de> Deserialize<'de> for ReplicaVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::new(text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ReplicaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ReplicaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplicaVersion({})", self.0)
    }
}

impl FromStr for ReplicaVersion {
    type Err = ReplicaVersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(input: &str, expected: Result<(), ReplicaVersionError>) {
        assert_eq!(
            ReplicaVersion::new(input).map(|_| ()),
            expected,
            "input {input:?}"
        );
    }

    #[test]
    fn replica_version_validation_table() {
        check("0.1.0", Ok(()));
        check("a", Ok(()));
        check("release-2026_11.rc1", Ok(()));
        check(&"x".repeat(64), Ok(()));
        check("", Err(ReplicaVersionError::Empty));
        check(
            &"x".repeat(65),
            Err(ReplicaVersionError::TooLong { max: 64, got: 65 }),
        );
        check(
            "1.0 beta",
            Err(ReplicaVersionError::BadCharacter { found: ' ' }),
        );
        check("v/1", Err(ReplicaVersionError::BadCharacter { found: '/' }));
        check("vé", Err(ReplicaVersionError::BadCharacter { found: 'é' }));
    }

    #[test]
    fn counters_reject_signs_and_garbage() {
        assert_eq!("42".parse::<Height>(), Ok(Height(42)));
        assert!("+42".parse::<Height>().is_err());
        assert!("-1".parse::<RegistryVersion>().is_err());
        assert!("".parse::<RegistryVersion>().is_err());
        assert_eq!(Height(u64::MAX).increment(), Height(u64::MAX));
    }

    proptest! {
        #[test]
        fn counters_round_trip(v in any::<u64>()) {
            prop_assert_eq!(Height(v).to_string().parse::<Height>(), Ok(Height(v)));
            prop_assert_eq!(
                RegistryVersion(v).to_string().parse::<RegistryVersion>(),
                Ok(RegistryVersion(v))
            );
        }

        #[test]
        fn valid_versions_round_trip(text in "[A-Za-z0-9._-]{1,64}") {
            let v = ReplicaVersion::new(text.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(v.to_string(), text.clone());
            prop_assert_eq!(text.parse::<ReplicaVersion>(), Ok(v));
        }
    }
}

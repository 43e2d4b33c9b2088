//! How the registry's command-line tools (`nns`, `registry`) end: the exit code says
//! which kind of failure it was, so a script can tell a "no" from a typo from a network
//! that is down, and retry only the last.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | refused: the registry or a check said no (a proposal or vote refused, a record that is not there, an invalid genesis, a directory that already holds a registry, an answer whose signature does not verify) |
//! | 2 | a bad argument, found before anything was asked or written (clap's usage errors exit 2 as well) |
//! | 3 | the registry is unreachable: no connection, or no usable answer in time |

use crate::client::ClientError;

/// A failed command, by kind; [`Failure::code`] is its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The registry or a check said no.
    Refused(String),
    /// A bad argument, found before anything was asked or written.
    BadArgument(String),
    /// No usable answer from the registry.
    Unreachable(String),
}

pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_BAD_ARGUMENT: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Self::Refused(_) => EXIT_REFUSED,
            Self::BadArgument(_) => EXIT_BAD_ARGUMENT,
            Self::Unreachable(_) => EXIT_UNREACHABLE,
        }
    }

    /// The one-line reason, for stderr.
    pub fn reason(&self) -> &str {
        match self {
            Self::Refused(r) | Self::BadArgument(r) | Self::Unreachable(r) => r,
        }
    }

    /// Prints `error: <reason>` on stderr and returns the exit code.
    pub fn report(&self) -> std::process::ExitCode {
        eprintln!("error: {}", self.reason());
        std::process::ExitCode::from(self.code())
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let reason = e.to_string();
        match e {
            ClientError::BadUrl { .. } => Self::BadArgument(reason),
            ClientError::Unreachable { .. } | ClientError::Unreadable { .. } => {
                Self::Unreachable(reason)
            }
            ClientError::Refused { .. }
            | ClientError::BadSignature { .. }
            | ClientError::Malformed { .. } => Self::Refused(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_map_to_their_exit_codes() {
        let s = String::new;
        let cases = [
            (
                ClientError::BadUrl {
                    url: s(),
                    reason: s(),
                },
                2,
            ),
            (
                ClientError::Unreachable {
                    url: s(),
                    reason: s(),
                },
                3,
            ),
            (
                ClientError::Unreadable {
                    url: s(),
                    path: s(),
                    reason: s(),
                },
                3,
            ),
            (
                ClientError::Refused {
                    status: 404,
                    message: s(),
                },
                1,
            ),
            (ClientError::BadSignature { path: s() }, 1),
            (
                ClientError::Malformed {
                    path: s(),
                    reason: s(),
                },
                1,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(Failure::from(e.clone()).code(), code, "{e:?}");
        }
    }
}

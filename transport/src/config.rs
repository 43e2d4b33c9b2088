//! The transport's configuration and its rules.

use crate::{MAX_PROTOCOL_BYTES, RECONNECT_MAX_CEILING_MS, TransportError};
use std::net::SocketAddr;

/// How a [`Transport`](crate::Transport) listens, bounds its queues and retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// The UDP address to bind (port 0: any free port, see `Transport::local_addr`).
    pub listen: SocketAddr,
    /// Largest message accepted by `send` and from the wire. The replica sets it to the
    /// consensus envelope limit.
    pub max_message_bytes: usize,
    /// Messages waiting for one peer; beyond it the oldest is dropped.
    pub max_queue_per_peer: usize,
    /// First delay before redialing a peer; it doubles after each failure.
    pub reconnect_min_ms: u64,
    /// The delay stops doubling here.
    pub reconnect_max_ms: u64,
    /// The wire protocol's name, used as the TLS ALPN identifier (e.g.
    /// `icup-consensus/1`): nodes configured with another name cannot connect.
    pub protocol: String,
}

impl TransportConfig {
    /// Default largest message: 8 MiB, the consensus envelope limit at the time of writing.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
    /// Default queue bound per peer, in messages.
    pub const DEFAULT_MAX_QUEUE_PER_PEER: usize = 1024;
    /// Default first redial delay.
    pub const DEFAULT_RECONNECT_MIN_MS: u64 = 100;
    /// Default longest redial delay.
    pub const DEFAULT_RECONNECT_MAX_MS: u64 = 10_000;

    /// A config with the default bounds and delays.
    pub fn new(listen: SocketAddr, protocol: impl Into<String>) -> Self {
        Self {
            listen,
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
            max_queue_per_peer: Self::DEFAULT_MAX_QUEUE_PER_PEER,
            reconnect_min_ms: Self::DEFAULT_RECONNECT_MIN_MS,
            reconnect_max_ms: Self::DEFAULT_RECONNECT_MAX_MS,
            protocol: protocol.into(),
        }
    }

    /// Checks every rule; the error names the first one broken.
    pub fn validate(&self) -> Result<(), TransportError> {
        let broken = |rule: String| Err(TransportError::InvalidConfig(rule));
        if self.max_message_bytes == 0 {
            return broken("max_message_bytes must be at least 1".into());
        }
        if u32::try_from(self.max_message_bytes).is_err() {
            return broken(format!(
                "max_message_bytes must fit the u32 length prefix (at most {}), got {}",
                u32::MAX,
                self.max_message_bytes
            ));
        }
        if self.max_queue_per_peer == 0 {
            return broken("max_queue_per_peer must be at least 1".into());
        }
        if self.reconnect_min_ms == 0 {
            return broken("reconnect_min_ms must be at least 1".into());
        }
        if self.reconnect_max_ms < self.reconnect_min_ms {
            return broken(format!(
                "reconnect_max_ms ({}) must be at least reconnect_min_ms ({})",
                self.reconnect_max_ms, self.reconnect_min_ms
            ));
        }
        if self.reconnect_max_ms > RECONNECT_MAX_CEILING_MS {
            return broken(format!(
                "reconnect_max_ms must be at most {RECONNECT_MAX_CEILING_MS}, got {}",
                self.reconnect_max_ms
            ));
        }
        if self.protocol.is_empty() || self.protocol.len() > MAX_PROTOCOL_BYTES {
            return broken(format!(
                "protocol must be 1 to {MAX_PROTOCOL_BYTES} bytes, got {}",
                self.protocol.len()
            ));
        }
        if !self.protocol.bytes().all(|b| b.is_ascii_graphic()) {
            return broken(format!(
                "protocol must be printable ASCII without spaces, got {:?}",
                self.protocol
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `change` to a valid config and checks that `validate` answers `expected`
    /// (`None`: valid; `Some(words)`: an error whose message contains `words`).
    fn check(change: impl FnOnce(&mut TransportConfig), expected: Option<&str>) {
        let mut cfg =
            TransportConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), "icup-consensus/1");
        change(&mut cfg);
        match (cfg.validate(), expected) {
            (Ok(()), None) => {}
            (Err(e), Some(words)) => {
                assert!(e.to_string().contains(words), "{e} lacks {words:?}")
            }
            (got, want) => panic!("{cfg:?}: got {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn validate_names_the_broken_rule() {
        check(|_| {}, None);
        check(
            |c| c.max_message_bytes = 0,
            Some("max_message_bytes must be at least 1"),
        );
        check(|c| c.max_message_bytes = u32::MAX as usize, None);
        check(
            |c| c.max_message_bytes = u32::MAX as usize + 1,
            Some("fit the u32 length prefix"),
        );
        check(|c| c.max_queue_per_peer = 0, Some("max_queue_per_peer"));
        check(
            |c| c.reconnect_min_ms = 0,
            Some("reconnect_min_ms must be at least 1"),
        );
        check(
            |c| {
                c.reconnect_min_ms = 500;
                c.reconnect_max_ms = 499;
            },
            Some("reconnect_max_ms (499) must be at least reconnect_min_ms (500)"),
        );
        check(
            |c| c.reconnect_max_ms = RECONNECT_MAX_CEILING_MS + 1,
            Some("at most 600000"),
        );
        check(
            |c| c.protocol.clear(),
            Some("protocol must be 1 to 255 bytes"),
        );
        check(|c| c.protocol = "x".repeat(256), Some("got 256"));
        check(|c| c.protocol = "x".repeat(255), None);
        check(
            |c| c.protocol = "icup consensus".into(),
            Some("printable ASCII"),
        );
    }
}

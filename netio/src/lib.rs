//! Bounded network reads.
//!
//! Every HTTP body a node reads from a peer, a mirror or the registry comes through
//! [`read_body`]: it refuses a declared length above the limit before reading anything,
//! stops as soon as the bytes received pass the limit (so at most `max_bytes` plus one
//! chunk is ever held), gives up at an overall deadline, and drops a sender whose average
//! rate, once a grace period has passed, falls under a minimum (a peer that sends one
//! byte every 29 seconds never trips a per-read timeout, but it trips this).
//!
//! Rules for callers: every limit has a name at the call site (`MAX_*_BYTES`), and the
//! deadline covers the whole body, not one read.

use std::time::Duration;
use tokio::time::Instant;

/// What one body read may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes accepted; one more and the read fails.
    pub max_bytes: usize,
    /// The whole body must have arrived by then (from the call).
    pub deadline: Duration,
    /// After `grace`, the average rate since the call must stay at or above this.
    pub min_bytes_per_s: u64,
    /// How long a sender may be slower than `min_bytes_per_s` at the start.
    pub grace: Duration,
}

impl Limits {
    /// A small answer (a CUP, a status, a registry page): `max_bytes` within `deadline`,
    /// with no rate floor beyond the deadline itself.
    pub const fn small(max_bytes: usize, deadline: Duration) -> Self {
        Self {
            max_bytes,
            deadline,
            min_bytes_per_s: 0,
            grace: deadline,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    #[error("the body declares {declared} bytes, more than the limit of {limit}")]
    DeclaredTooLarge { declared: u64, limit: usize },
    #[error("the body passed the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body did not arrive within {deadline_ms} ms ({received} bytes received)")]
    Deadline { deadline_ms: u64, received: usize },
    #[error(
        "the sender is too slow: {received} bytes in {elapsed_ms} ms, under the minimum of {min_bytes_per_s} bytes/s"
    )]
    TooSlow {
        received: usize,
        elapsed_ms: u64,
        min_bytes_per_s: u64,
    },
    #[error("reading the body: {0}")]
    Transport(String),
}

/// Reads `resp`'s body within `limits`.
pub async fn read_body(mut resp: reqwest::Response, limits: &Limits) -> Result<Vec<u8>, ReadError> {
    if let Some(declared) = resp.content_length()
        && declared > limits.max_bytes as u64
    {
        return Err(ReadError::DeclaredTooLarge {
            declared,
            limit: limits.max_bytes,
        });
    }
    let start = Instant::now();
    let deadline = start + limits.deadline;
    // Never trust the declared length for the allocation: start small, grow as bytes come.
    let mut out = Vec::with_capacity(resp.content_length().unwrap_or(0).min(64 * 1024) as usize);
    loop {
        // Wake at least once a second to check the rate even when nothing arrives.
        let wake = deadline.min(Instant::now() + Duration::from_secs(1));
        match tokio::time::timeout_at(wake, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                if out.len() + chunk.len() > limits.max_bytes {
                    return Err(ReadError::TooLarge {
                        limit: limits.max_bytes,
                    });
                }
                out.extend_from_slice(&chunk);
            }
            Ok(Ok(None)) => return Ok(out),
            Ok(Err(e)) => return Err(ReadError::Transport(e.to_string())),
            Err(_) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ReadError::Deadline {
                deadline_ms: limits.deadline.as_millis() as u64,
                received: out.len(),
            });
        }
        check_rate(limits, now - start, out.len())?;
    }
}

/// The rate rule of [`read_body`] on its own, for callers that stream a body elsewhere
/// (a package to a file): `received` bytes after `elapsed` since the start.
pub fn check_rate(limits: &Limits, elapsed: Duration, received: usize) -> Result<(), ReadError> {
    if limits.min_bytes_per_s == 0 || elapsed < limits.grace {
        return Ok(());
    }
    let floor = limits.min_bytes_per_s as u128 * elapsed.as_millis() / 1000;
    if (received as u128) < floor {
        return Err(ReadError::TooSlow {
            received,
            elapsed_ms: elapsed.as_millis() as u64,
            min_bytes_per_s: limits.min_bytes_per_s,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_floor_applies_only_after_the_grace_period() {
        let l = Limits {
            max_bytes: 1 << 20,
            deadline: Duration::from_secs(60),
            min_bytes_per_s: 1000,
            grace: Duration::from_secs(5),
        };
        assert_eq!(check_rate(&l, Duration::from_secs(4), 0), Ok(()));
        assert_eq!(check_rate(&l, Duration::from_secs(10), 10_000), Ok(()));
        assert!(matches!(
            check_rate(&l, Duration::from_secs(10), 9_999),
            Err(ReadError::TooSlow { .. })
        ));
        assert_eq!(
            check_rate(
                &Limits::small(10, Duration::from_secs(1)),
                Duration::from_secs(9),
                0
            ),
            Ok(())
        );
    }
}

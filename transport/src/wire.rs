//! Framing on a stream: `u32` big-endian length, then the message.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What the dialed side writes, alone on a stream it opens, once it has registered an
/// authenticated connection: the dialer sends nothing before reading it. (In TLS 1.3 the
/// client finishes its handshake before the server has checked the client's certificate,
/// so without this a refused dialer would believe itself connected and write messages
/// into a connection about to be closed.)
pub(crate) const ADMITTED: u8 = 0x01;

/// Bytes of the length prefix.
pub(crate) const FRAME_HEADER_BYTES: usize = 4;
/// The receive buffer starts at most this large and grows as bytes arrive, so a length
/// prefix alone never makes the reader allocate the whole announced size.
const INITIAL_BODY_CAPACITY_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLong { len: u64, max: usize },
    #[error("stream ended inside a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Writes one frame. `msg` must fit the `u32` prefix (callers check `max_message_bytes`).
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &[u8],
) -> Result<(), FrameError> {
    let len = u32::try_from(msg.len()).map_err(|_| FrameError::TooLong {
        len: msg.len() as u64,
        max: u32::MAX as usize,
    })?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(msg).await?;
    Ok(())
}

/// Reads one frame: `Ok(None)` when the stream ended cleanly between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < FRAME_HEADER_BYTES {
        match r.read(&mut header[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(FrameError::Truncated),
            n => filled += n,
        }
    }
    let len = u64::from(u32::from_be_bytes(header));
    if len > max as u64 {
        return Err(FrameError::TooLong { len, max });
    }
    // `len <= max`, a usize.
    let len_bytes = len as usize;
    let mut body = Vec::with_capacity(len_bytes.min(INITIAL_BODY_CAPACITY_BYTES));
    (&mut *r).take(len).read_to_end(&mut body).await?;
    if body.len() != len_bytes {
        return Err(FrameError::Truncated);
    }
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_a_clean_end_is_not_an_error() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            for msg in [&b""[..], b"x", &[7u8; 3000][..]] {
                write_frame(&mut a, msg).await.expect("write");
            }
            // Dropping `a` ends the stream.
        });
        assert_eq!(read_frame(&mut b, 3000).await.expect("0"), Some(vec![]));
        assert_eq!(
            read_frame(&mut b, 3000).await.expect("1"),
            Some(b"x".to_vec())
        );
        assert_eq!(
            read_frame(&mut b, 3000).await.expect("2"),
            Some(vec![7; 3000])
        );
        assert_eq!(read_frame(&mut b, 3000).await.expect("end"), None);
        writer.await.expect("writer");
    }

    #[tokio::test]
    async fn an_oversize_frame_is_refused_from_its_header_alone() {
        let (mut a, mut b) = tokio::io::duplex(64);
        // The header announces 1001 bytes; none follow.
        a.write_all(&1001u32.to_be_bytes()).await.expect("write");
        match read_frame(&mut b, 1000).await {
            Err(FrameError::TooLong {
                len: 1001,
                max: 1000,
            }) => {}
            other => panic!("expected TooLong, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_stream_ending_inside_a_frame_is_truncated() {
        for bytes in [&[0u8, 0][..], &[0, 0, 0, 5, 1, 2][..]] {
            let (mut a, mut b) = tokio::io::duplex(64);
            a.write_all(bytes).await.expect("write");
            drop(a);
            assert!(
                matches!(read_frame(&mut b, 100).await, Err(FrameError::Truncated)),
                "{bytes:?}"
            );
        }
    }
}

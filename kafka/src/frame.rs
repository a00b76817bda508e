//! Kafka's framing: every request and response is a 4-byte big-endian
//! length, then that many bytes.

use std::io;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reads one frame. `Ok(None)`: the peer closed the connection between
/// frames. A length above `max_bytes(api_key)` (or negative) is an error:
/// the connection is closed, as a Kafka broker does with a request over
/// `socket.request.max.bytes`. `room` is taken for the length before the
/// body is read, in KiB (the listener's bound on request bytes held at
/// once); the permit is returned with the frame. The
/// buffer grows with the bytes that arrive, so a peer that announces a
/// large frame and sends little holds little.
pub(crate) async fn read<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: impl Fn(i16) -> usize,
    room: &Arc<Semaphore>,
) -> io::Result<Option<(Bytes, OwnedSemaphorePermit)>> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = i32::from_be_bytes(length);
    let Ok(length) = usize::try_from(length) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("negative frame length {length}"),
        ));
    };
    // The API key decides the limit: read it first.
    let mut key = [0u8; 2];
    let head = length.min(2);
    reader.read_exact(&mut key[..head]).await?;
    let limit = max_bytes(i16::from_be_bytes(key));
    if length > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {length} bytes, more than the limit of {limit}"),
        ));
    }
    let permit = crate::take_room(room, length)
        .await
        .map_err(|_| io::Error::other("the listener is stopping"))?;
    let mut frame = Vec::with_capacity(length.min(64 * 1024));
    frame.extend_from_slice(&key[..head]);
    let rest = (length - head) as u64;
    let read = head + reader.take(rest).read_to_end(&mut frame).await?;
    if read < length {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the connection closed inside a frame ({read} of {length} bytes)"),
        ));
    }
    Ok(Some((Bytes::from(frame), permit)))
}

/// Writes `body` as one frame and flushes it.
pub(crate) async fn write<W: AsyncWrite + Unpin>(writer: &mut W, body: &[u8]) -> io::Result<()> {
    let length = i32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "response over 2 GiB"))?;
    let mut head = BytesMut::with_capacity(4);
    head.put_i32(length);
    writer.write_all(&head).await?;
    writer.write_all(body).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: usize) -> impl Fn(i16) -> usize {
        move |_key| max
    }

    fn body(frame: Option<(Bytes, OwnedSemaphorePermit)>) -> Bytes {
        frame.unwrap().0
    }

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let room = &Arc::new(Semaphore::new(1024));
        let mut wire = Vec::new();
        write(&mut wire, b"hello").await.unwrap();
        write(&mut wire, b"").await.unwrap();
        let mut reader = &wire[..];
        let first = read(&mut reader, limit(16), room).await.unwrap();
        assert_eq!(body(first), &b"hello"[..]);
        let second = read(&mut reader, limit(16), room).await.unwrap();
        assert_eq!(body(second), &b""[..]);
        assert!(read(&mut reader, limit(16), room).await.unwrap().is_none());

        let mut reader = &wire[..];
        let err = read(&mut reader, limit(4), room).await.unwrap_err();
        assert!(
            err.to_string().contains("more than the limit of 4"),
            "{err}"
        );

        // The limit depends on the API key: the first two bytes.
        let by_key = |key: i16| {
            if key == i16::from_be_bytes(*b"he") {
                16
            } else {
                0
            }
        };
        let mut reader = &wire[..];
        let first = read(&mut reader, by_key, room).await.unwrap();
        assert_eq!(body(first), &b"hello"[..]);

        let negative = (-1i32).to_be_bytes();
        let err = read(&mut &negative[..], limit(16), room).await.unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");

        let truncated = [0, 0, 0, 9, 1, 2, 3];
        let err = read(&mut &truncated[..], limit(16), room)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("3 of 9"), "{err}");
    }
}

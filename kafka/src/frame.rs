//! Kafka's framing: every request and response is a 4-byte big-endian
//! length, then that many bytes.

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one frame. `Ok(None)`: the peer closed the connection between
/// frames. A length above `max_bytes` (or negative) is an error: the
/// connection is closed, as a Kafka broker does with a request over
/// `socket.request.max.bytes`. The buffer grows with the bytes that arrive,
/// so a peer that announces a large frame and sends little holds little.
pub(crate) async fn read<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> io::Result<Option<Bytes>> {
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
    if length > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {length} bytes, more than the limit of {max_bytes}"),
        ));
    }
    let mut frame = Vec::with_capacity(length.min(64 * 1024));
    let read = reader.take(length as u64).read_to_end(&mut frame).await?;
    if read < length {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the connection closed inside a frame ({read} of {length} bytes)"),
        ));
    }
    Ok(Some(Bytes::from(frame)))
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

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let mut wire = Vec::new();
        write(&mut wire, b"hello").await.unwrap();
        write(&mut wire, b"").await.unwrap();
        let mut reader = &wire[..];
        assert_eq!(read(&mut reader, 16).await.unwrap().unwrap(), &b"hello"[..]);
        assert_eq!(read(&mut reader, 16).await.unwrap().unwrap(), &b""[..]);
        assert!(read(&mut reader, 16).await.unwrap().is_none());

        let mut reader = &wire[..];
        let err = read(&mut reader, 4).await.unwrap_err();
        assert!(
            err.to_string().contains("more than the limit of 4"),
            "{err}"
        );

        let negative = (-1i32).to_be_bytes();
        let err = read(&mut &negative[..], 16).await.unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");

        let truncated = [0, 0, 0, 9, 1, 2];
        let err = read(&mut &truncated[..], 16).await.unwrap_err();
        assert!(err.to_string().contains("2 of 9"), "{err}");
    }
}

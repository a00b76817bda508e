//! One Kafka connection: requests are read, answered and written back one
//! at a time, in order, as a Kafka broker does (it reads the next request
//! of a connection only after answering the last).
//!
//! What closes the connection, as in Kafka: a frame over the size limit or
//! cut short, a request header that does not decode, an API key Kafka does
//! not define, and an API or version this listener does not advertise
//! (except `ApiVersions`, which is answered with `UNSUPPORTED_VERSION` and
//! the supported ranges, so that a client can pick a version). A request
//! body that does not decode closes it too (Kafka's `InvalidRequestException`).
//! Everything else is answered, failures with the API's error codes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Encodable, decode_request_header_from_buffer};
use tokio::io::{BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::MAX_OTHER_REQUEST_BYTES;
use crate::fetch::Readers;
use crate::{
    Gateway, admin, commits, fetch, frame, groups, idempotence, metadata, offsets, produce,
    versions,
};

/// Bytes of the fixed part of every request header: API key, version,
/// correlation id.
const FIXED_HEADER: usize = 8;
/// A connection with no request for this long is closed (Kafka's
/// `connections.max.idle.ms`): a vanished client's reads are let go.
const IDLE: Duration = Duration::from_secs(600);
/// A response the client does not take in this long closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// What one request comes to.
pub(crate) enum Outcome {
    /// A response body (without the response header).
    Respond(Box<ResponseKind>),
    /// No response: a Produce with `acks=0`.
    Silent,
    /// Close the connection (a failed Produce with `acks=0`: Kafka closes
    /// it so that the producer notices).
    Close(String),
}

/// Serves one connection until the peer closes it, a request closes it, or
/// `stop` is cancelled.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    gateway: Arc<Gateway>,
    stop: CancellationToken,
) {
    let span = tracing::debug_span!("kafka_conn", %peer);
    async move {
        let (read, write) = stream.into_split();
        let mut read = BufReader::new(read);
        let mut write = BufWriter::new(write);
        let mut readers = Readers::default();
        loop {
            let max_bytes = |key: i16| {
                if key == ApiKey::Produce as i16 {
                    gateway.options.max_request_bytes
                } else {
                    MAX_OTHER_REQUEST_BYTES
                }
            };
            let read_frame =
                tokio::time::timeout(IDLE, frame::read(&mut read, max_bytes, &gateway.queued));
            let frame = tokio::select! {
                _ = stop.cancelled() => return,
                frame = read_frame => frame,
            };
            let (frame, _room) = match frame {
                Ok(Ok(Some(frame))) => frame,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "kafka: closing the connection");
                    return;
                }
                Err(_) => {
                    tracing::debug!("kafka: closing an idle connection");
                    return;
                }
            };
            let response = match answer(&gateway, &mut readers, frame).await {
                Ok(Some(response)) => response,
                Ok(None) => continue,
                Err(why) => {
                    tracing::info!(%why, "kafka: closing the connection");
                    return;
                }
            };
            let written = tokio::time::timeout(WRITE_TIMEOUT, frame::write(&mut write, &response));
            if let Err(e) = written.await.unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "write timed out",
                ))
            }) {
                tracing::debug!(error = %e, "kafka: the response could not be written");
                return;
            }
        }
    }
    .instrument(span)
    .await
}

/// The encoded response (header and body) to one request frame; `None` for
/// a request answered with silence; `Err` closes the connection.
async fn answer(
    gateway: &Gateway,
    readers: &mut Readers,
    mut frame: Bytes,
) -> Result<Option<Bytes>, String> {
    if frame.len() < FIXED_HEADER {
        return Err(format!(
            "a request of {} bytes is shorter than a request header",
            frame.len()
        ));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(key).map_err(|_| format!("unknown API key {key}"))?;
    if api == ApiKey::ApiVersions && !versions::supports(api, version) {
        // KIP-511: the client learns the ranges from a v0 answer.
        let mut body = ApiVersionsResponse::default();
        body.error_code = kafka_protocol::ResponseError::UnsupportedVersion.code();
        body.api_keys = admin::api_versions();
        return encode(correlation_id, api, 0, &ResponseKind::ApiVersions(body)).map(Some);
    }
    if !versions::supports(api, version) {
        return Err(format!("{api:?} v{version} is not supported"));
    }
    let header: RequestHeader = decode_request_header_from_buffer(&mut frame)
        .map_err(|e| format!("{api:?} v{version}: malformed request header: {e}"))?;
    let request = RequestKind::decode(api, &mut frame, version)
        .map_err(|e| format!("{api:?} v{version}: malformed request: {e}"))?;
    if frame.has_remaining() {
        tracing::debug!(api = ?api, left = frame.remaining(), "kafka: bytes after the request");
    }
    let client = header.client_id.as_ref().map(|c| c.to_string());
    let span = tracing::debug_span!("kafka_request", api = ?api, version, client = ?client);
    let outcome = async {
        Ok(match request {
            RequestKind::ApiVersions(_) => {
                Outcome::Respond(Box::new(admin::api_versions_response()))
            }
            RequestKind::Metadata(request) => metadata::metadata(gateway, request, version).await,
            RequestKind::CreateTopics(request) => {
                admin::create_topics(gateway, request, version).await
            }
            RequestKind::DeleteTopics(request) => {
                admin::delete_topics(gateway, request, version).await
            }
            RequestKind::Produce(request) => produce::produce(gateway, request, version).await,
            RequestKind::Fetch(request) => fetch::fetch(gateway, readers, request, version).await,
            RequestKind::ListOffsets(request) => offsets::list_offsets(gateway, request).await,
            RequestKind::FindCoordinator(request) => {
                groups::find_coordinator(gateway, request).await
            }
            RequestKind::JoinGroup(request) => {
                let client = client.as_deref().unwrap_or("consumer");
                groups::join(gateway, request, client, version).await
            }
            RequestKind::SyncGroup(request) => groups::sync(gateway, request).await,
            RequestKind::Heartbeat(request) => groups::heartbeat(gateway, request).await,
            RequestKind::LeaveGroup(request) => groups::leave(gateway, request, version).await,
            RequestKind::OffsetCommit(request) => commits::commit(gateway, request).await,
            RequestKind::OffsetFetch(request) => commits::fetch(gateway, request, version).await,
            RequestKind::InitProducerId(request) => idempotence::init_producer_id(request, version),
            // `versions::supports` admits only the APIs above.
            _ => return Err(format!("{api:?} is not served")),
        })
    }
    .instrument(span)
    .await?;
    match outcome {
        Outcome::Respond(body) => encode(correlation_id, api, version, &body).map(Some),
        Outcome::Silent => Ok(None),
        Outcome::Close(why) => Err(why),
    }
}

/// The response header and body, encoded.
fn encode(
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    body: &ResponseKind,
) -> Result<Bytes, String> {
    let mut buf = BytesMut::new();
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut buf, api.response_header_version(version))
        .and_then(|()| body.encode(&mut buf, version))
        .map_err(|e| format!("{api:?} v{version}: the response does not encode: {e}"))?;
    Ok(buf.freeze())
}

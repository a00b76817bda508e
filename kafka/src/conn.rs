//! One Kafka connection. Requests are taken in and answered in the order
//! they came, as by a Kafka broker. Produce requests are pipelined: each is
//! taken in (checked, and its batches queued for their partitions'
//! appenders, appender.rs) before the next request is read, and up to
//! [`PIPELINE`] of them wait for their appends at once, so that a producer
//! that sends several requests without waiting (librdkafka does) is not
//! held to one quorum fsync per request. Any other request waits until
//! every earlier one was answered, then runs alone: it sees the effects of
//! the requests before it, exactly as on a broker that serves a connection
//! one request at a time. A writer task sends the answers, in order.
//!
//! What closes the connection, as in Kafka: a frame over the size limit or
//! cut short, a request header that does not decode, an API key Kafka does
//! not define, and an API or version this listener does not advertise
//! (except `ApiVersions`, which is answered with `UNSUPPORTED_VERSION` and
//! the supported ranges, so that a client can pick a version). A request
//! body that does not decode closes it too (Kafka's `InvalidRequestException`).
//! Everything else is answered, failures with the API's error codes. The
//! requests taken in before the one that closes the connection are still
//! answered first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::FutureExt;
use futures::future::BoxFuture;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Encodable, decode_request_header_from_buffer};
use tokio::io::{BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
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
/// Requests of one connection taken in and not yet answered, at most: the
/// next one is read when the oldest was answered.
const PIPELINE: usize = 16;

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

/// A request's encoded response (header and body), to come: `None` for a
/// request answered with silence; `Err` closes the connection.
type Answer = BoxFuture<'static, Result<Option<Bytes>, String>>;

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
        let (answers, queue) = mpsc::channel::<Answer>(PIPELINE);
        let writer = tokio::spawn(
            write_answers(BufWriter::new(write), queue, stop.clone()).in_current_span(),
        );
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
                _ = stop.cancelled() => break,
                // The writer ended: the connection failed or is closing.
                _ = answers.closed() => break,
                frame = read_frame => frame,
            };
            let (frame, room) = match frame {
                Ok(Ok(Some(frame))) => frame,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "kafka: closing the connection");
                    break;
                }
                Err(_) => {
                    tracing::debug!("kafka: closing an idle connection");
                    break;
                }
            };
            let Some((answer, last)) = take_in(&gateway, &mut readers, &answers, frame).await
            else {
                break;
            };
            // The request's bytes stay counted until it is answered.
            let answer = async move {
                let answered = answer.await;
                drop(room);
                answered
            };
            if answers.send(answer.boxed()).await.is_err() || last {
                break;
            }
        }
        // The writer answers what was taken in, then ends.
        drop(answers);
        let _ = writer.await;
    }
    .instrument(span)
    .await
}

/// Sends the answers in the order they were queued, until the queue ends,
/// an answer closes the connection, a write fails, or `stop`.
async fn write_answers(
    mut write: BufWriter<OwnedWriteHalf>,
    mut queue: mpsc::Receiver<Answer>,
    stop: CancellationToken,
) {
    while let Some(answer) = queue.recv().await {
        let answered = tokio::select! {
            _ = stop.cancelled() => return,
            answered = answer => answered,
        };
        let response = match answered {
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

/// Takes one request frame in (module doc): a Produce is queued and its
/// answer comes later; any other request runs once every earlier one was
/// answered. The answer, and whether it is the connection's last (it
/// closes the connection: no later request is read, so none is applied).
/// `None`: the writer ended, the connection is closing.
async fn take_in(
    gateway: &Arc<Gateway>,
    readers: &mut Readers,
    answers: &mpsc::Sender<Answer>,
    frame: Bytes,
) -> Option<(Answer, bool)> {
    let request = match decode(frame) {
        Ok(Decoded::Request(request)) => request,
        Ok(Decoded::Answered(response)) => {
            return Some((std::future::ready(Ok(Some(response))).boxed(), false));
        }
        Err(why) => return Some((std::future::ready(Err(why)).boxed(), true)),
    };
    let Request {
        api,
        version,
        correlation_id,
        client,
        body,
    } = *request;
    let span = tracing::debug_span!("kafka_request", api = ?api, version, client = ?client);
    if let RequestKind::Produce(body) = body {
        let outcome = produce::take_in(gateway, body, version)
            .instrument(span.clone())
            .await;
        let answer = async move { respond(correlation_id, api, version, outcome.await) };
        return Some((answer.instrument(span).boxed(), false));
    }
    // Every earlier request answered first: the writer reaches this mark
    // only after it wrote their responses.
    let (mark, reached) = oneshot::channel();
    let marker = async move {
        let _ = mark.send(());
        Ok(None)
    };
    answers.send(marker.boxed()).await.ok()?;
    reached.await.ok()?;
    let outcome = handle(gateway, readers, api, body, version, client.as_deref())
        .instrument(span)
        .await;
    let answered = respond(correlation_id, api, version, outcome);
    let last = answered.is_err();
    Some((std::future::ready(answered).boxed(), last))
}

/// A decoded request, with what its response needs.
struct Request {
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    client: Option<String>,
    body: RequestKind,
}

/// What a frame decodes to.
enum Decoded {
    Request(Box<Request>),
    /// An `ApiVersions` at a version not supported, answered at v0.
    Answered(Bytes),
}

/// Decodes a request frame; `Err` closes the connection (module doc).
fn decode(mut frame: Bytes) -> Result<Decoded, String> {
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
        return encode(correlation_id, api, 0, &ResponseKind::ApiVersions(body))
            .map(Decoded::Answered);
    }
    if !versions::supports(api, version) {
        return Err(format!("{api:?} v{version} is not supported"));
    }
    let header: RequestHeader = decode_request_header_from_buffer(&mut frame)
        .map_err(|e| format!("{api:?} v{version}: malformed request header: {e}"))?;
    let body = RequestKind::decode(api, &mut frame, version)
        .map_err(|e| format!("{api:?} v{version}: malformed request: {e}"))?;
    if frame.has_remaining() {
        tracing::debug!(api = ?api, left = frame.remaining(), "kafka: bytes after the request");
    }
    Ok(Decoded::Request(Box::new(Request {
        api,
        version,
        correlation_id,
        client: header.client_id.as_ref().map(|c| c.to_string()),
        body,
    })))
}

/// Serves every request but Produce.
async fn handle(
    gateway: &Gateway,
    readers: &mut Readers,
    api: ApiKey,
    request: RequestKind,
    version: i16,
    client: Option<&str>,
) -> Outcome {
    match request {
        RequestKind::ApiVersions(_) => Outcome::Respond(Box::new(admin::api_versions_response())),
        RequestKind::Metadata(request) => metadata::metadata(gateway, request, version).await,
        RequestKind::CreateTopics(request) => admin::create_topics(gateway, request, version).await,
        RequestKind::DeleteTopics(request) => admin::delete_topics(gateway, request, version).await,
        RequestKind::Fetch(request) => fetch::fetch(gateway, readers, request, version).await,
        RequestKind::ListOffsets(request) => offsets::list_offsets(gateway, request).await,
        RequestKind::FindCoordinator(request) => groups::find_coordinator(gateway, request).await,
        RequestKind::JoinGroup(request) => {
            groups::join(gateway, request, client.unwrap_or("consumer"), version).await
        }
        RequestKind::SyncGroup(request) => groups::sync(gateway, request).await,
        RequestKind::Heartbeat(request) => groups::heartbeat(gateway, request).await,
        RequestKind::LeaveGroup(request) => groups::leave(gateway, request, version).await,
        RequestKind::OffsetCommit(request) => commits::commit(gateway, request).await,
        RequestKind::OffsetFetch(request) => commits::fetch(gateway, request, version).await,
        RequestKind::InitProducerId(request) => idempotence::init_producer_id(request, version),
        // `versions::supports` admits only the APIs above (and Produce,
        // taken in by `take_in`).
        _ => Outcome::Close(format!("{api:?} is not served")),
    }
}

/// The encoded response to an outcome; `None` for silence.
fn respond(
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    outcome: Outcome,
) -> Result<Option<Bytes>, String> {
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

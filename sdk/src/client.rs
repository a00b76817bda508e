//! The Rust client of distributedlog: admin calls and appends here, reads in
//! [`crate::log_reader`], batched ordered writes in [`crate::log_writer`].
//!
//! Requests go to the configured endpoint; when a node answers that another
//! node owns the log (`UNAVAILABLE` with the owner's address in `dlog-owner`
//! metadata), the client follows the redirect and remembers the owner for
//! that log. Only retryable failures are retried; a retried append is never
//! reordered with later ones, because the client sends the next only after
//! this one was answered (pipelined sessions keep their own order).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlog_wire::error::ErrorKind;
use dlog_wire::metadata;
use dlog_wire::proto::admin_service_client::AdminServiceClient;
use dlog_wire::proto::log_service_client::LogServiceClient;
use dlog_wire::proto::read_service_client::ReadServiceClient;
use dlog_wire::proto::{self as pb};
use dlog_wire::record::{Record, RecordError};
use futures::future::BoxFuture;
use tonic::transport::{Channel, Endpoint};

use crate::info::{ClusterStatus, LogInfo, Sealed};
use crate::retry::{MAX_ATTEMPTS, Retries};
use crate::settings::{Settings, SettingsChange};
use crate::unreachable::{Role, Unreachable};

/// Longest a single request may take: a frozen node must not hang a client.
/// (For a `Read` stream it bounds nothing: streams use a channel without it,
/// and HTTP/2 keep-alive pings find a frozen node instead.)
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on connections with open streams, and how long to wait for
/// the answer: a node that stopped answering fails its streams with
/// `UNAVAILABLE` within about 20 s.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message the client decodes: appends answer small messages, read
/// batches carry up to a few MiB of records.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A failed call: the server's status, a connection failure, or a failure
/// the SDK found itself.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The server (or the transport under the call) answered with this
    /// status.
    #[error("{}", .0.message())]
    Status(tonic::Status),
    /// No connection to an endpoint could be set up.
    #[error("connect to {endpoint}: {reason}")]
    Connect {
        /// The endpoint, as given to [`Client::new`].
        endpoint: String,
        /// Why it failed.
        reason: String,
    },
    /// A record the limits refuse; found before it was sent.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A [`LogWriter`](crate::LogWriter) found the log at another offset
    /// than its own appends left it: another writer appended to it (a
    /// `LogWriter` must be the only writer of its log), or a batch whose
    /// outcome was in doubt landed in part.
    #[error(
        "log {log} is at offset {actual}, not at {expected} where this writer's appends left it{}",
        if *.in_doubt { " (the batch sent there was in doubt and may be in the log)" } else { "; another writer appended to it" }
    )]
    Conflict {
        /// The log written.
        log: String,
        /// Where this writer's appends left the log.
        expected: u64,
        /// Where the log is.
        actual: u64,
        /// The batch sent at `expected` was in doubt (it may be in the log).
        in_doubt: bool,
    },
    /// The server broke the protocol (e.g. a read skipped offsets).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The writer's background task is gone (its runtime shut down).
    #[error("the writer is closed")]
    Closed,
}

impl Error {
    /// Whether an attempt before the one that failed so may have been
    /// applied (it timed out, or lost its connection or its quorum): a
    /// plain append that failed with this set may be in the log, once or
    /// more. `UNAVAILABLE` failures are always in doubt, set or not.
    pub fn earlier_attempt_in_doubt(&self) -> bool {
        matches!(self, Error::Status(status) if status.metadata().contains_key(IN_DOUBT_KEY))
    }

    /// What kind of failure this is (decides retries).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Status(status) => ErrorKind::from_code(status.code()),
            Error::Connect { .. } => ErrorKind::Unavailable,
            Error::Record(_) => ErrorKind::InvalidArgument,
            Error::Conflict { .. } => ErrorKind::FailedPrecondition,
            Error::Protocol(_) | Error::Closed => ErrorKind::Internal,
        }
    }

    /// The gRPC code, for callers that map errors themselves.
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::Status(status) => status.code(),
            Error::Connect { .. } => tonic::Code::Unavailable,
            other => other.kind().code(),
        }
    }

    /// On an `expected_offset` mismatch (`FAILED_PRECONDITION`), the log's
    /// actual next offset, as the owner reported it.
    pub fn next_offset(&self) -> Option<u64> {
        match self {
            Error::Status(status) if status.code() == tonic::Code::FailedPrecondition => {
                metadata::read_u64(status, metadata::NEXT_OFFSET)
            }
            Error::Conflict { actual, .. } => Some(*actual),
            _ => None,
        }
    }
}

/// The result of an SDK call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The kind of a failed call, for retries: a request that timed out (tonic
/// reports `Cancelled`) and a connection that broke under the call (tonic
/// reports `UNKNOWN` or `INTERNAL` made from a transport error, which a
/// status from a server never carries as its source) count as an
/// unavailable node.
pub(crate) fn failure_kind(status: &tonic::Status) -> ErrorKind {
    use std::error::Error as _;
    match status.code() {
        tonic::Code::Cancelled => ErrorKind::Unavailable,
        tonic::Code::Unknown | tonic::Code::Internal if status.source().is_some() => {
            ErrorKind::Unavailable
        }
        code => ErrorKind::from_code(code),
    }
}

/// The error of a call that failed after an earlier attempt may have been
/// applied (`in_doubt`) says so. `RESOURCE_EXHAUSTED` says "nothing was
/// written", which is false then: such a call fails with `UNAVAILABLE`
/// instead, so a caller never writes again what may already be in the log.
/// Any other refusal (an append after end of stream, an offset mismatch)
/// keeps its code and metadata, and its message says it too.
fn in_doubt_status(status: tonic::Status, in_doubt: bool) -> tonic::Status {
    const MAY_BE_APPLIED: &str = "an earlier attempt may have been applied";
    if !in_doubt || status.code() == tonic::Code::Unavailable {
        return status;
    }
    let message = format!("{}; {MAY_BE_APPLIED}", status.message());
    let mut metadata = status.metadata().clone();
    metadata.insert(
        IN_DOUBT_KEY,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    if status.code() == tonic::Code::ResourceExhausted {
        return tonic::Status::with_metadata(tonic::Code::Unavailable, message, metadata);
    }
    tonic::Status::with_metadata(status.code(), message, metadata)
}

/// Set on a failure's status when an earlier attempt was in doubt
/// ([`Error::earlier_attempt_in_doubt`]); never sent by a server.
const IN_DOUBT_KEY: &str = "x-dlog-earlier-attempt-in-doubt";

/// One page of a log listing ([`Client::list_logs_page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsPage {
    /// Log names, in name order.
    pub logs: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// The outcome of a call with its retries.
#[derive(Debug)]
pub(crate) struct Called<T> {
    pub result: Result<T>,
    /// An attempt before the last failed in a way that leaves open whether
    /// the server applied it (timeout, lost connection, `UNAVAILABLE` from
    /// the node that had it): a request that is not idempotent may have
    /// taken effect although `result` is an error, or twice.
    pub in_doubt: bool,
}

impl<T> Called<T> {
    /// The outcome of a `LogService` call (not idempotent): a failure
    /// after an attempt in doubt says so ([`in_doubt_status`]). Reads are
    /// idempotent and keep their errors as they are.
    fn said_in_doubt(mut self) -> Called<T> {
        if let Err(Error::Status(status)) = self.result {
            self.result = Err(Error::Status(in_doubt_status(status, self.in_doubt)));
        }
        self
    }
}

/// Offsets an append got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The offset of the append's first record.
    pub first_offset: u64,
    /// The offset of its last record.
    pub last_offset: u64,
    /// The time the owner stamped on every record of the append, ms since
    /// the Unix epoch.
    pub timestamp_ms: i64,
}

/// Conditions of [`Client::append_if`]; each `None` is not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendIf {
    /// Only if the log's next offset is this (`FAILED_PRECONDITION`
    /// otherwise, with the acknowledged end in [`Error::next_offset`]).
    pub next_offset: Option<u64>,
    /// Only if the log's id (`LogInfo::log_id`) is this (`NOT_FOUND`
    /// otherwise: the log was deleted, perhaps re-created under its name).
    pub log_id: Option<u64>,
}

/// A connection to a distributedlog cluster.
///
/// Cheap to clone: clones share connections and the cache of log owners.
/// Writes ([`Client::writer`], [`Client::append`]) and admin calls go to
/// the endpoints given to [`Client::new`] (ingest nodes); reads
/// ([`Client::reader`]) go to the same ones unless
/// [`Client::with_read_endpoints`] names reader nodes. In `dlog standalone`
/// every role listens on one address; in a cluster, name both.
///
/// ```no_run
/// use distributedlog::{Client, Record};
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let endpoint = "http://127.0.0.1:7070";
/// // e.g. "http://127.0.0.1:7070"; several endpoints comma-separated.
/// let client = Client::new(&endpoint);
/// client.create_log("ns/events").await?;
/// // Only if the log is still at offset 0: a retry cannot write it twice.
/// let appended = client
///     .append("ns/events", vec![Record::new("hello")], Some(0))
///     .await?;
/// assert_eq!(appended.first_offset, 0);
/// let info = client.get_log("ns/events").await?;
/// println!("next offset {}", info.next_offset);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    /// Nodes serving `LogService` (appends, admin): ingest nodes.
    write: Endpoints,
    /// Nodes serving `ReadService`: reader nodes. The same list as `write`
    /// unless [`Client::with_read_endpoints`] set one.
    read: Endpoints,
    /// Channels by address; `stream:`-prefixed keys are the channels of
    /// `Read` streams (no per-request timeout).
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    owners: Arc<Mutex<HashMap<String, String>>>,
    /// The live ingest nodes, to send a log's first request to its
    /// preferred owner ([`crate::routing`]).
    pub(crate) directory: Arc<tokio::sync::Mutex<crate::routing::Directory>>,
    /// Sent with every request ([`Client::with_token`]).
    credentials: Credentials,
    /// How `https://` endpoints are checked ([`Client::with_tls`]).
    tls: Option<tonic::transport::ClientTlsConfig>,
}

/// The `authorization` header every request of a client carries, if any.
#[derive(Clone, Default)]
pub(crate) struct Credentials(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.write_str(if self.0.is_some() {
            "Credentials(token)"
        } else {
            "Credentials(none)"
        })
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// How a client's calls travel: its channel, with its credentials.
pub(crate) type Transport = tonic::service::interceptor::InterceptedService<Channel, Credentials>;

/// A list of endpoints, the role expected of them, and the one in use; the
/// next is tried when it is unreachable. Clones share the position.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    list: Arc<[String]>,
    current: Arc<AtomicUsize>,
    role: Role,
}

impl Endpoints {
    /// `http://host:port`, comma-separated, of nodes serving `role`.
    fn parse(endpoints: &str, role: Role) -> Endpoints {
        let list: Vec<String> = endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        Endpoints {
            list: list.into(),
            current: Arc::default(),
            role,
        }
    }

    /// The same list and position, expected to serve `role` too.
    fn serving(&self, role: Role) -> Endpoints {
        Endpoints {
            role,
            ..self.clone()
        }
    }

    /// What a call could not reach among these endpoints.
    pub(crate) fn unreachable(&self) -> Unreachable {
        Unreachable::new(self.role)
    }

    /// The endpoint in use.
    pub(crate) fn current(&self) -> String {
        let i = self.current.load(Ordering::Relaxed);
        self.list
            .get(i % self.list.len().max(1))
            .cloned()
            .unwrap_or_else(|| "http://127.0.0.1:7070".to_owned())
    }

    /// Moves on to the next endpoint.
    pub(crate) fn advance(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }
}

impl Client {
    /// A client of the cluster behind `endpoints`: one or more
    /// `http://host:port`, comma-separated. Connections are made on first
    /// use; when an endpoint is unreachable the next one is tried.
    /// Reads go to the same endpoints unless
    /// [`with_read_endpoints`](Client::with_read_endpoints) names others.
    pub fn new(endpoints: impl AsRef<str>) -> Client {
        let write = Endpoints::parse(endpoints.as_ref(), Role::Ingest);
        Client {
            read: write.serving(Role::Reader),
            write,
            channels: Arc::default(),
            owners: Arc::default(),
            directory: Arc::default(),
            credentials: Credentials::default(),
            tls: None,
        }
    }

    /// Connects to `https://` endpoints over TLS, trusting the node
    /// certificates that `ca_pem` (the cluster CA, PEM) signed, and to no
    /// plaintext address (so a token never travels in the clear). Owner
    /// redirects of a cluster with TLS name `https://` addresses too.
    pub fn with_tls(mut self, ca_pem: impl AsRef<[u8]>) -> Client {
        let ca = tonic::transport::Certificate::from_pem(ca_pem);
        self.tls = Some(tonic::transport::ClientTlsConfig::new().ca_certificate(ca));
        self
    }

    /// Checks node certificates against `name` instead of the host of each
    /// address (needs [`Client::with_tls`] first).
    pub fn with_tls_server_name(mut self, name: &str) -> Client {
        self.tls = self.tls.map(|tls| tls.domain_name(name));
        self
    }

    /// Sends `token` (`dlog_<id>_<secret>`, from `dlog token create`) with
    /// every request, as `authorization: Bearer <token>`. Fails on a token
    /// that cannot be a header value.
    pub fn with_token(mut self, token: &str) -> Result<Client> {
        let mut value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("Bearer {}", token.trim()).parse().map_err(|_| {
                Error::Status(tonic::Status::invalid_argument(
                    "the token is not a valid header value",
                ))
            })?;
        // Kept out of HTTP/2 header compression tables and debug output.
        value.set_sensitive(true);
        self.credentials = Credentials(Some(value));
        Ok(self)
    }

    /// Sends reads (`Read`, `CheckTail`, subscriptions) to these endpoints
    /// (comma-separated): the reader nodes of a cluster, whose `ReadService`
    /// ingest nodes do not serve. In `dlog standalone` one address serves
    /// both, and this is not needed.
    pub fn with_read_endpoints(mut self, endpoints: impl AsRef<str>) -> Client {
        self.read = Endpoints::parse(endpoints.as_ref(), Role::Reader);
        self
    }

    /// The read (`ReadService`) endpoints.
    pub(crate) fn read_endpoints(&self) -> &Endpoints {
        &self.read
    }

    /// A channel to one node, with this client's TLS settings, for the
    /// other gRPC services a node serves (such as `grpc.health.v1`). It
    /// carries no token.
    pub fn node_channel(&self, address: &str) -> Result<Channel> {
        self.channel(address, false)
    }

    /// The channel to `address`: with the request timeout for unary calls,
    /// without it for streams (`streaming`), whose responses may take as
    /// long as the reader wants.
    fn channel(&self, address: &str, streaming: bool) -> Result<Channel> {
        let key = if streaming {
            format!("stream:{address}")
        } else {
            address.to_owned()
        };
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(&key) {
            return Ok(channel.clone());
        }
        let mut endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(|err| Error::Connect {
                endpoint: address.to_owned(),
                reason: err.to_string(),
            })?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            // Many tailing reads on one connection receive many small
            // frames; h2 closes a connection holding too many unread
            // (dlog_wire::http2).
            .initial_connection_window_size(dlog_wire::http2::CONNECTION_WINDOW)
            .initial_stream_window_size(dlog_wire::http2::STREAM_WINDOW)
            .tcp_nodelay(true);
        if !streaming {
            endpoint = endpoint.timeout(REQUEST_TIMEOUT);
        }
        if self.tls.is_some() && !address.starts_with("https://") {
            // A redirect or a list naming a plaintext address must not
            // carry this client's token in the clear.
            return Err(Error::Connect {
                endpoint: address.to_owned(),
                reason: "not a TLS address, and this client talks TLS only (with_tls)".to_owned(),
            });
        }
        if address.starts_with("https://") {
            let tls = self.tls.clone().ok_or_else(|| Error::Connect {
                endpoint: address.to_owned(),
                reason: "a TLS endpoint: give the CA that signed the node certificates \
                         (Client::with_tls, dlog --tls-ca)"
                    .to_owned(),
            })?;
            endpoint = endpoint.tls_config(tls).map_err(|err| Error::Connect {
                endpoint: address.to_owned(),
                reason: format!("TLS settings: {err}"),
            })?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(key, channel.clone());
        Ok(channel)
    }

    pub(crate) fn log_client(&self, address: &str) -> Result<LogServiceClient<Transport>> {
        Ok(LogServiceClient::with_interceptor(
            self.channel(address, false)?,
            self.credentials.clone(),
        )
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(16 * 1024 * 1024))
    }

    /// A `ReadService` client for unary calls.
    pub(crate) fn read_client(&self, address: &str) -> Result<ReadServiceClient<Transport>> {
        Ok(ReadServiceClient::with_interceptor(
            self.channel(address, false)?,
            self.credentials.clone(),
        )
        .max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A `ReadService` client for `Read` streams.
    pub(crate) fn read_stream_client(&self, address: &str) -> Result<ReadServiceClient<Transport>> {
        Ok(ReadServiceClient::with_interceptor(
            self.channel(address, true)?,
            self.credentials.clone(),
        )
        .max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// The write endpoint requests go to now.
    pub(crate) fn write_endpoint(&self) -> String {
        self.write.current()
    }

    /// Remembers `log`'s preferred owner by the placement rule as its
    /// owner, unless an owner is known already: its first request goes
    /// there straight.
    async fn guess_owner(&self, log: &str) {
        let known = (self.owners.lock().unwrap_or_else(|p| p.into_inner())).contains_key(log);
        if known {
            return;
        }
        if let Some(address) = self.preferred_address(log).await {
            (self.owners.lock().unwrap_or_else(|p| p.into_inner()))
                .entry(log.to_owned())
                .or_insert(address);
        }
    }

    fn address_for(&self, log: Option<&str>, endpoints: &Endpoints) -> String {
        log.and_then(|log| {
            self.owners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(log)
                .cloned()
        })
        .unwrap_or_else(|| endpoints.current())
    }

    /// Runs a `LogService` call, following redirects for `log` and retrying
    /// transient failures with backoff.
    async fn call<T>(
        &self,
        log: Option<&str>,
        call: impl Fn(LogServiceClient<Transport>) -> BoxFuture<'static, Result<T, tonic::Status>>,
    ) -> Result<T> {
        self.call_with(log, &self.write, Client::log_client, call)
            .await
            .said_in_doubt()
            .result
    }

    /// Runs a unary `ReadService` call on the read endpoints, retrying
    /// transient failures with backoff.
    pub(crate) async fn read_call<T>(
        &self,
        call: impl Fn(ReadServiceClient<Transport>) -> BoxFuture<'static, Result<T, tonic::Status>>,
    ) -> Result<T> {
        self.call_with(None, &self.read, Client::read_client, call)
            .await
            .result
    }

    /// Runs a call on the service client `make` builds for one of
    /// `endpoints`, following redirects for `log` and retrying transient
    /// failures with backoff. Also tells whether an earlier attempt may have
    /// taken effect ([`Called::in_doubt`]).
    pub(crate) async fn call_with<C, T>(
        &self,
        log: Option<&str>,
        endpoints: &Endpoints,
        make: impl Fn(&Client, &str) -> Result<C>,
        call: impl Fn(C) -> BoxFuture<'static, Result<T, tonic::Status>>,
    ) -> Called<T> {
        let mut retries = Retries::new();
        let mut last_error = None;
        let mut in_doubt = false;
        // Redirects count as attempts too, so two nodes that each name the
        // other cannot loop. Waits a quota asked for do not: they end when
        // the quota lets the call through, or at the deadline.
        let mut attempts = 0;
        // The endpoints that did not answer, and the last answer a server
        // gave, for a call that ends without one.
        let mut unreachable = endpoints.unreachable();
        let mut last_answer: Option<String> = None;
        let mut redirected_by = std::collections::HashSet::new();
        if let Some(log) = log
            && std::ptr::eq(endpoints, &self.write)
        {
            self.guess_owner(log).await;
        }
        while attempts < MAX_ATTEMPTS {
            attempts += 1;
            let address = self.address_for(log, endpoints);
            let client = match make(self, &address) {
                Ok(client) => client,
                Err(err) => {
                    return Called {
                        result: Err(err),
                        in_doubt,
                    };
                }
            };
            match call(client).await {
                Ok(value) => {
                    return Called {
                        result: Ok(value),
                        in_doubt,
                    };
                }
                Err(status) => {
                    let redirect = status
                        .metadata()
                        .get(metadata::OWNER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let kind = failure_kind(&status);
                    if std::error::Error::source(&status).is_none() {
                        last_answer = Some(format!("{address} answered: {}", status.message()));
                    }
                    unreachable.note(&address, &status);
                    if let (Some(owner), Some(log)) = (&redirect, log)
                        && *owner != address
                    {
                        tracing::debug!(log, owner, "following a redirect");
                        self.owners
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(log.to_owned(), owner.clone());
                        last_error = Some(status);
                        // Redirected by a node a second time: nodes name
                        // each other while their views of the live nodes
                        // differ (a moment): wait before going round again.
                        if !redirected_by.insert(address) && !retries.pause().await {
                            break;
                        }
                        continue;
                    }
                    if !kind.is_retryable() {
                        return Called {
                            result: Err(Error::Status(status)),
                            in_doubt,
                        };
                    }
                    // Refused for backpressure: not applied. Anything else
                    // (timeout, lost connection, lost ownership) may have
                    // been applied before the failure.
                    if kind != ErrorKind::ResourceExhausted {
                        in_doubt = true;
                    }
                    if let Some(millis) = metadata::read_u64(&status, metadata::RETRY_AFTER_MS) {
                        // Over a quota: the owner is right; wait as long as
                        // it said and try it again.
                        last_error = Some(status);
                        if !retries.wait(Duration::from_millis(millis)).await {
                            break;
                        }
                        attempts -= 1;
                        continue;
                    }
                    // The cached owner may be gone: ask an endpoint again,
                    // the next one if this one is the unreachable one.
                    let cached = log.and_then(|log| {
                        self.owners
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(log)
                    });
                    if cached.is_none() {
                        endpoints.advance();
                    }
                    last_error = Some(status);
                    if !retries.pause().await {
                        break;
                    }
                }
            }
        }
        let last_error = match last_error {
            Some(status) => unreachable.status(status, last_answer.as_deref()),
            None => tonic::Status::unavailable("no attempt was made"),
        };
        Called {
            result: Err(Error::Status(last_error)),
            in_doubt,
        }
    }

    /// Creates the log `log` (`namespace/log`); fails with `ALREADY_EXISTS`
    /// when it exists.
    pub async fn create_log(&self, log: &str) -> Result<LogInfo> {
        let request = pb::CreateLogRequest {
            log: log.to_owned(),
        };
        self.call(None, move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                let info = c.create_log(request).await?.into_inner().log;
                Ok(LogInfo::from(info.unwrap_or_default()))
            })
        })
        .await
    }

    /// Runs an `AdminService` call on the write endpoints (ingest nodes),
    /// retrying transient failures with backoff.
    pub(crate) async fn admin_call<T>(
        &self,
        call: impl Fn(AdminServiceClient<Transport>) -> BoxFuture<'static, Result<T, tonic::Status>>,
    ) -> Result<T> {
        let make = |client: &Client, address: &str| {
            Ok(AdminServiceClient::with_interceptor(
                client.channel(address, false)?,
                client.credentials.clone(),
            ))
        };
        self.call_with(None, &self.write, make, call).await.result
    }

    /// Gives namespace `ns` settings of its own: the cluster default with
    /// `change` applied. `ALREADY_EXISTS` when it has them;
    /// `INVALID_ARGUMENT` with the reason for settings that cannot work.
    pub async fn create_namespace(&self, ns: &str, change: &SettingsChange) -> Result<Settings> {
        let request = pb::ConfigureNamespaceRequest {
            namespace: ns.to_owned(),
            change: Some(change.to_wire()),
        };
        self.admin_call(move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                let answer = c.create_namespace(request).await?.into_inner();
                Ok(Settings::from_wire(answer.settings, answer.own))
            })
        })
        .await
    }

    /// Changes what `change` names in namespace `ns`'s settings; running
    /// owners of its logs apply it without a restart.
    pub async fn configure_namespace(&self, ns: &str, change: &SettingsChange) -> Result<Settings> {
        let request = pb::ConfigureNamespaceRequest {
            namespace: ns.to_owned(),
            change: Some(change.to_wire()),
        };
        self.admin_call(move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                let answer = c.configure_namespace(request).await?.into_inner();
                Ok(Settings::from_wire(answer.settings, answer.own))
            })
        })
        .await
    }

    /// Namespace `ns`'s settings in force.
    pub async fn namespace(&self, ns: &str) -> Result<Settings> {
        let request = pb::GetNamespaceRequest {
            namespace: ns.to_owned(),
        };
        self.admin_call(move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                let answer = c.get_namespace(request).await?.into_inner();
                Ok(Settings::from_wire(answer.settings, answer.own))
            })
        })
        .await
    }

    /// Namespaces with settings of their own or with logs, in name order.
    pub async fn list_namespaces(&self) -> Result<Vec<String>> {
        self.admin_call(move |mut c| {
            Box::pin(async move {
                let answer = c.list_namespaces(pb::ListNamespacesRequest {}).await?;
                Ok(answer.into_inner().namespaces)
            })
        })
        .await
    }

    /// Changes what `change` names in log `log`'s own settings (starting
    /// from those in force); with `inherit`, the log goes back to its
    /// namespace's settings.
    pub async fn configure_log(
        &self,
        log: &str,
        change: &SettingsChange,
        inherit: bool,
    ) -> Result<Settings> {
        let request = pb::ConfigureLogRequest {
            log: log.to_owned(),
            change: Some(change.to_wire()),
            inherit,
        };
        self.admin_call(move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                let answer = c.configure_log(request).await?.into_inner();
                Ok(Settings::from_wire(answer.settings, answer.own))
            })
        })
        .await
    }

    /// Log `log`'s settings in force.
    pub async fn log_settings(&self, log: &str) -> Result<Settings> {
        let request = pb::GetLogSettingsRequest {
            log: log.to_owned(),
        };
        self.admin_call(move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                let answer = c.get_log_settings(request).await?.into_inner();
                Ok(Settings::from_wire(answer.settings, answer.own))
            })
        })
        .await
    }

    /// Deletes the log `log` and, in the background, its data.
    pub async fn delete_log(&self, log: &str) -> Result<()> {
        let request = pb::DeleteLogRequest {
            log: log.to_owned(),
        };
        self.call(None, move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                c.delete_log(request).await?;
                Ok(())
            })
        })
        .await
    }

    /// The names of the logs whose full name starts with `prefix`.
    pub async fn list_logs(&self, prefix: &str) -> Result<Vec<String>> {
        let mut logs = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.list_logs_page(prefix, 0, &token).await?;
            logs.extend(page.logs);
            match page.next_page_token {
                Some(next) => token = next,
                None => return Ok(logs),
            }
        }
    }

    /// One page of [`Client::list_logs`]: at most `page_size` logs (0: the
    /// server's default, 1 000) after `page_token` (empty: from the start),
    /// and the token of the next page when more follow.
    pub async fn list_logs_page(
        &self,
        prefix: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<LogsPage> {
        let request = pb::ListLogsRequest {
            prefix: prefix.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
        };
        self.call(None, move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                let page = c.list_logs(request).await?.into_inner();
                Ok(LogsPage {
                    logs: page.logs,
                    next_page_token: Some(page.next_page_token).filter(|t| !t.is_empty()),
                })
            })
        })
        .await
    }

    /// The log `log`: its offsets and segments.
    pub async fn get_log(&self, log: &str) -> Result<LogInfo> {
        let request = pb::GetLogRequest {
            log: log.to_owned(),
        };
        self.call(Some(log), move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                let info = c.get_log(request).await?.into_inner().log;
                Ok(LogInfo::from(info.unwrap_or_default()))
            })
        })
        .await
    }

    /// Appends records, atomically and in order; with `expected_offset`,
    /// only if the log's next offset is exactly that.
    ///
    /// Transient failures are retried. A retry of an append whose first
    /// attempt failed after the owner took it (a timeout, a lost connection,
    /// a lost ownership) can write the records twice when `expected_offset`
    /// is `None`: that is at-least-once. With `expected_offset`, the retry
    /// fails with `FAILED_PRECONDITION` instead ([`Error::next_offset`] is
    /// then the log's acknowledged, durable end), so nothing is written
    /// twice; [`LogWriter`](crate::LogWriter) resolves that case itself.
    /// While earlier appends are still in flight in the owner, a retry is
    /// answered "retry later" (`RESOURCE_EXHAUSTED`) and tried again.
    pub async fn append(
        &self,
        log: &str,
        records: Vec<Record>,
        expected_offset: Option<u64>,
    ) -> Result<Appended> {
        let condition = AppendIf {
            next_offset: expected_offset,
            log_id: None,
        };
        self.append_traced(log, records, condition).await.result
    }

    /// [`Client::append`] under conditions the log's owner checks before it
    /// takes the records: the next offset, and the log's id. With
    /// `log_id`, a writer of a log that was deleted (and perhaps re-created
    /// under the same name) gets `NOT_FOUND` instead of writing into the
    /// new log.
    pub async fn append_if(
        &self,
        log: &str,
        records: Vec<Record>,
        condition: AppendIf,
    ) -> Result<Appended> {
        self.append_traced(log, records, condition).await.result
    }

    /// [`Client::append`], also telling whether an attempt before the last
    /// one may have written the records.
    pub(crate) async fn append_traced(
        &self,
        log: &str,
        records: Vec<Record>,
        condition: AppendIf,
    ) -> Called<Appended> {
        let request = pb::AppendRequest {
            log: log.to_owned(),
            records: records.into_iter().map(Into::into).collect(),
            expected_offset: condition.next_offset,
            log_id: condition.log_id,
        };
        self.call_with(Some(log), &self.write, Client::log_client, move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                let response = c.append(request).await?.into_inner();
                Ok(Appended {
                    first_offset: response.first_offset,
                    last_offset: response.last_offset,
                    timestamp_ms: response.timestamp_ms,
                })
            })
        })
        .await
        .said_in_doubt()
    }

    /// Deletes the records of `log` below `before_offset`; returns the log's
    /// first readable offset after the trim.
    pub async fn trim(&self, log: &str, before_offset: u64) -> Result<u64> {
        let request = pb::TrimRequest {
            log: log.to_owned(),
            before_offset,
        };
        self.call(Some(log), move |mut c| {
            let request = request.clone();
            Box::pin(async move { Ok(c.trim(request).await?.into_inner().first_offset) })
        })
        .await
    }

    /// Seals the open segment of `log` (the next append opens a new one).
    pub async fn seal(&self, log: &str) -> Result<Sealed> {
        let request = pb::SealLogRequest {
            log: log.to_owned(),
        };
        self.call(Some(log), move |mut c| {
            let request = request.clone();
            Box::pin(async move { Ok(Sealed::from(c.seal_log(request).await?.into_inner())) })
        })
        .await
    }

    /// Marks `log` end-of-stream: later appends fail, readers that follow
    /// it end. Returns the final end offset.
    pub async fn mark_end_of_stream(&self, log: &str) -> Result<u64> {
        let request = pb::MarkEndOfStreamRequest {
            log: log.to_owned(),
        };
        self.call(Some(log), move |mut c| {
            let request = request.clone();
            Box::pin(
                async move { Ok(c.mark_end_of_stream(request).await?.into_inner().end_offset) },
            )
        })
        .await
    }

    /// Nodes, logs and segments by state (`dlog status`).
    pub async fn status(&self) -> Result<ClusterStatus> {
        self.call(None, move |mut c| {
            Box::pin(async move {
                let status = c.get_status(pb::GetStatusRequest {}).await?.into_inner();
                Ok(ClusterStatus::from(status))
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node no one listens on: the error names it, the role expected
    /// there, and the root cause.
    #[tokio::test]
    async fn a_node_that_does_not_answer_is_named_with_the_cause() {
        // A port bound without listening, held for the whole test: a
        // connection is refused, and no other test's server can take the
        // port (a port freed at once could be, and was, in CI).
        let held = tokio::net::TcpSocket::new_v4().unwrap();
        held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = held.local_addr().unwrap().port();
        let address = format!("http://127.0.0.1:{port}");
        let err = Client::new(&address).get_log("ns/a").await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot reach the ingest endpoint {address} (")),
            "{text}"
        );
        assert!(text.contains("refused"), "{text}");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
        // Reads name the role they expect there.
        let err = Client::new(&address).check_tail("ns/a").await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot reach the reader endpoint {address} (")),
            "{text}"
        );
    }

    #[test]
    fn a_refusal_after_an_attempt_in_doubt_says_the_attempt_may_be_in_the_log() {
        // An append after end of stream: the earlier attempt may have
        // landed before the log ended.
        let ended = tonic::Status::failed_precondition("log ns/a ended at offset 3");
        let status = in_doubt_status(ended.clone(), true);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "log ns/a ended at offset 3; an earlier attempt may have been applied"
        );
        assert_eq!(
            in_doubt_status(ended, false).message(),
            "log ns/a ended at offset 3"
        );

        // A mismatch keeps the offset the writer needs.
        let mut mismatch = tonic::Status::failed_precondition("expected offset 1");
        mismatch
            .metadata_mut()
            .insert(dlog_wire::metadata::NEXT_OFFSET, "4".parse().unwrap());
        let err = Error::Status(in_doubt_status(mismatch, true));
        assert_eq!(err.next_offset(), Some(4));
        assert!(err.earlier_attempt_in_doubt());

        // Callers that split a refused append tell the two apart.
        let invalid = tonic::Status::invalid_argument("record 2: field \"a\"");
        let doubted = Error::Status(in_doubt_status(invalid.clone(), true));
        assert!(doubted.earlier_attempt_in_doubt());
        assert!(!Error::Status(in_doubt_status(invalid, false)).earlier_attempt_in_doubt());

        let busy = in_doubt_status(tonic::Status::resource_exhausted("retry later"), true);
        assert_eq!(busy.code(), tonic::Code::Unavailable);
    }
}

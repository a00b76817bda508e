//! The Rust client of distributedlog (its first part: admin calls and
//! appends; reads come with the reader tier).
//!
//! Requests go to the configured endpoint; when a node answers that another
//! node owns the log (`UNAVAILABLE` with the owner's address in `dlog-owner`
//! metadata), the client follows the redirect and remembers the owner for
//! that log. Only retryable failures are retried; a retried append is never
//! reordered with later ones, because the client sends the next only after
//! this one was answered (pipelined sessions keep their own order).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dlog_infra::error::ErrorKind;
use dlog_infra::proto::log_service_client::LogServiceClient;
use dlog_infra::proto::{self as pb};
use dlog_infra::record::Record;
use futures::future::BoxFuture;
use tonic::transport::{Channel, Endpoint};

/// Metadata key of redirects (see `dlog_ingest::error`).
const OWNER_METADATA: &str = "dlog-owner";
/// Attempts of one call (redirects and retries of transient failures).
const MAX_ATTEMPTS: usize = 10;
/// Longest a single request may take: a frozen node must not hang a client.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed call: the server's status, or a connection failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", .0.message())]
    Status(tonic::Status),
    #[error("connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
}

impl Error {
    /// What kind of failure this is (decides retries).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Status(status) => ErrorKind::from_code(status.code()),
            Error::Connect { .. } => ErrorKind::Unavailable,
        }
    }

    /// The gRPC code, for callers that map errors themselves.
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::Status(status) => status.code(),
            Error::Connect { .. } => tonic::Code::Unavailable,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Offsets an append got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub first_offset: u64,
    pub last_offset: u64,
    pub timestamp_ms: i64,
}

/// A connection to a distributedlog cluster.
#[derive(Debug)]
pub struct Client {
    endpoints: Vec<String>,
    /// Index of the endpoint in use; moves on when one is unreachable.
    current: AtomicUsize,
    channels: Mutex<HashMap<String, Channel>>,
    owners: Mutex<HashMap<String, String>>,
}

impl Client {
    /// A client of the cluster behind `endpoints`: one or more
    /// `http://host:port`, comma-separated. Connections are made on first
    /// use; when an endpoint is unreachable the next one is tried.
    pub fn new(endpoints: impl AsRef<str>) -> Client {
        let endpoints: Vec<String> = endpoints
            .as_ref()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        Client {
            endpoints,
            current: AtomicUsize::new(0),
            channels: Mutex::default(),
            owners: Mutex::default(),
        }
    }

    fn endpoint(&self) -> String {
        let i = self.current.load(Ordering::Relaxed);
        self.endpoints
            .get(i % self.endpoints.len().max(1))
            .cloned()
            .unwrap_or_else(|| "http://127.0.0.1:7070".to_owned())
    }

    fn next_endpoint(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    fn channel(&self, address: &str) -> Result<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(address.to_owned())
            .map_err(|err| Error::Connect {
                endpoint: address.to_owned(),
                reason: err.to_string(),
            })?
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    fn log_client(&self, address: &str) -> Result<LogServiceClient<Channel>> {
        Ok(LogServiceClient::new(self.channel(address)?)
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(16 * 1024 * 1024))
    }

    fn address_for(&self, log: Option<&str>) -> String {
        log.and_then(|log| {
            self.owners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(log)
                .cloned()
        })
        .unwrap_or_else(|| self.endpoint())
    }

    /// Runs a call, following redirects for `log` and retrying transient
    /// failures with backoff.
    async fn call<T>(
        &self,
        log: Option<&str>,
        call: impl Fn(LogServiceClient<Channel>) -> BoxFuture<'static, Result<T, tonic::Status>>,
    ) -> Result<T> {
        let mut backoff = Duration::from_millis(50);
        let mut last_error = None;
        for _ in 0..MAX_ATTEMPTS {
            let address = self.address_for(log);
            let client = self.log_client(&address)?;
            match call(client).await {
                Ok(value) => return Ok(value),
                Err(status) => {
                    let redirect = status
                        .metadata()
                        .get(OWNER_METADATA)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    // A request that timed out (tonic reports `Cancelled`)
                    // is retried elsewhere like any unavailable node.
                    let kind = match status.code() {
                        tonic::Code::Cancelled => ErrorKind::Unavailable,
                        code => ErrorKind::from_code(code),
                    };
                    if let (Some(owner), Some(log)) = (&redirect, log)
                        && *owner != address
                    {
                        tracing::debug!(log, owner, "following a redirect");
                        self.owners
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(log.to_owned(), owner.clone());
                        last_error = Some(status);
                        continue;
                    }
                    if !kind.is_retryable() {
                        return Err(Error::Status(status));
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
                        self.next_endpoint();
                    }
                    last_error = Some(status);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        Err(Error::Status(last_error.unwrap_or_else(|| {
            tonic::Status::unavailable("no attempt was made")
        })))
    }

    pub async fn create_log(&self, log: &str) -> Result<pb::LogInfo> {
        let request = pb::CreateLogRequest {
            log: log.to_owned(),
        };
        self.call(None, move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                Ok(c.create_log(request)
                    .await?
                    .into_inner()
                    .log
                    .unwrap_or_default())
            })
        })
        .await
    }

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

    pub async fn list_logs(&self, prefix: &str) -> Result<Vec<String>> {
        let request = pb::ListLogsRequest {
            prefix: prefix.to_owned(),
        };
        self.call(None, move |mut c| {
            let request = request.clone();
            Box::pin(async move { Ok(c.list_logs(request).await?.into_inner().logs) })
        })
        .await
    }

    pub async fn get_log(&self, log: &str) -> Result<pb::LogInfo> {
        let request = pb::GetLogRequest {
            log: log.to_owned(),
        };
        self.call(Some(log), move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                Ok(c.get_log(request)
                    .await?
                    .into_inner()
                    .log
                    .unwrap_or_default())
            })
        })
        .await
    }

    /// Appends records; with `expected_offset`, only if the log's next
    /// offset is exactly that (retries then cannot duplicate).
    pub async fn append(
        &self,
        log: &str,
        records: Vec<Record>,
        expected_offset: Option<u64>,
    ) -> Result<Appended> {
        let request = pb::AppendRequest {
            log: log.to_owned(),
            records: records.into_iter().map(Into::into).collect(),
            expected_offset,
        };
        self.call(Some(log), move |mut c| {
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
    }

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

    pub async fn seal(&self, log: &str) -> Result<pb::SealLogResponse> {
        let request = pb::SealLogRequest {
            log: log.to_owned(),
        };
        self.call(Some(log), move |mut c| {
            let request = request.clone();
            Box::pin(async move { Ok(c.seal_log(request).await?.into_inner()) })
        })
        .await
    }

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

    pub async fn status(&self) -> Result<pb::GetStatusResponse> {
        self.call(None, move |mut c| {
            Box::pin(async move { Ok(c.get_status(pb::GetStatusRequest {}).await?.into_inner()) })
        })
        .await
    }
}

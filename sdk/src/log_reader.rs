//! Reading a log: [`LogReader`], a stream of records that survives node
//! failures, and the unary calls of `ReadService` (tail, subscriptions).
//!
//! A `LogReader` calls `ReadService.Read` on the client's read endpoint
//! ([`Client::with_read_endpoints`]; by default the client's endpoint). When the
//! stream fails with a retryable error (`UNAVAILABLE`, a broken or timed
//! out connection, a stream that ends without `end_of_stream` while
//! following), it reconnects — to the next endpoint — and asks for the
//! offset after the last record it delivered, so the records it yields have
//! no gap and no duplicate, and `limit` counts across reconnects. Errors a
//! retry cannot cure (`OUT_OF_RANGE`, `NOT_FOUND`, `INVALID_ARGUMENT`, …) end
//! the stream with the error.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use dlog_wire::proto::{self as pb};
pub use dlog_wire::record::Start;
use dlog_wire::record::StoredRecord;
use futures::stream::{BoxStream, FusedStream};
use futures::{Stream, StreamExt};

use crate::client::{Client, Error, Result, failure_kind};
use crate::retry::Retries;
use crate::unreachable::Unreachable;

/// A stream that lasted this long counts as having worked: the failures
/// before it are forgotten (an idle follower delivers no records).
const HEALTHY_STREAM: Duration = Duration::from_secs(10);

/// How much to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Stop after this many records.
    pub limit: Option<u64>,
    /// Keep reading as records are appended (until `limit`, end of stream,
    /// or an error); otherwise stop at the tail.
    pub follow: bool,
    /// Read only the log with this id (`LogInfo::log_id`): the read fails
    /// with `NOT_FOUND` once the log is deleted, even if a log of the same
    /// name was created since. `None`: whatever log has the name when the
    /// read starts (a read never continues into a re-created log).
    pub log_id: Option<u64>,
}

/// What `CheckTail` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailInfo {
    /// The first readable offset (below it the log is trimmed).
    pub first_offset: u64,
    /// One past the last acknowledged record.
    pub next_offset: u64,
    /// The log was marked end-of-stream: `next_offset` is final.
    pub end_of_stream: bool,
    /// The id of the log measured (`LogInfo::log_id`).
    pub log_id: u64,
}

impl Client {
    /// Reads `log` from `start`: a [`Stream`] of records in offset order.
    ///
    /// ```no_run
    /// use distributedlog::{Client, ReadOptions, Start};
    /// use futures::TryStreamExt;
    ///
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let endpoint = "http://127.0.0.1:7070";
    /// let client = Client::new(&endpoint);
    /// # client.create_log("ns/events").await?;
    /// # for i in 0..100 {
    /// #     client.append("ns/events", vec![distributedlog::Record::new(format!("r{i}"))], None).await?;
    /// # }
    /// # let mut seen = 0;
    /// let options = ReadOptions { limit: Some(100), follow: true, ..ReadOptions::default() };
    /// let mut reader = client.reader("ns/events", Start::Earliest, options);
    /// while let Some(record) = reader.try_next().await? {
    ///     println!("{}: {:?}", record.offset, record.record.payload);
    /// #   assert_eq!(record.offset, seen);
    /// #   seen += 1;
    /// }
    /// # assert_eq!(seen, 100, "the limit ends the followed read");
    /// # Ok(())
    /// # }
    /// ```
    pub fn reader(&self, log: &str, start: Start, options: ReadOptions) -> LogReader {
        let state = ReadLoop {
            client: self.clone(),
            log: log.to_owned(),
            follow: options.follow,
            log_id: options.log_id,
            cursor: Cursor::new(start, options.limit),
            stream: None,
            buffered: VecDeque::new(),
            end_of_stream: false,
            retries: Retries::new(),
            unreachable: self.read_endpoints().unreachable(),
            address: String::new(),
            opened_at: Instant::now(),
            finished: false,
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        });
        LogReader {
            log: log.to_owned(),
            // Fused: polling after the end answers `None` again.
            stream: stream.boxed().fuse(),
        }
    }

    /// The log's readable range and whether it ended.
    pub async fn check_tail(&self, log: &str) -> Result<TailInfo> {
        let request = pb::CheckTailRequest {
            log: log.to_owned(),
        };
        self.read_call(move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                let tail = c.check_tail(request).await?.into_inner();
                Ok(TailInfo {
                    first_offset: tail.first_offset,
                    next_offset: tail.next_offset,
                    end_of_stream: tail.end_of_stream,
                    log_id: tail.log_id,
                })
            })
        })
        .await
    }

    /// Stores `offset` as the next offset subscription `name` of `log` wants
    /// to read. A commit never moves the subscription back (a late retry of
    /// an older commit changes nothing), and a log deleted and re-created
    /// under the same name starts without subscriptions.
    pub async fn commit_subscription(&self, log: &str, name: &str, offset: u64) -> Result<()> {
        let request = pb::CommitSubscriptionRequest {
            log: log.to_owned(),
            subscription: name.to_owned(),
            offset,
        };
        self.read_call(move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                c.commit_subscription(request).await?;
                Ok(())
            })
        })
        .await
    }

    /// Every subscription of `log` and its committed offset, by name.
    pub async fn subscriptions(&self, log: &str) -> Result<Vec<(String, u64)>> {
        let request = pb::ListSubscriptionsRequest {
            log: log.to_owned(),
        };
        self.read_call(move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                let answer = c.list_subscriptions(request).await?.into_inner();
                Ok(answer
                    .subscriptions
                    .into_iter()
                    .map(|s| (s.name, s.offset))
                    .collect())
            })
        })
        .await
    }

    /// Forgets subscription `name` of `log` (one that does not exist too).
    pub async fn delete_subscription(&self, log: &str, name: &str) -> Result<()> {
        let request = pb::DeleteSubscriptionRequest {
            log: log.to_owned(),
            subscription: name.to_owned(),
        };
        self.read_call(move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                c.delete_subscription(request).await?;
                Ok(())
            })
        })
        .await
    }

    /// The offset subscription `name` of `log` committed last, if any.
    pub async fn subscription(&self, log: &str, name: &str) -> Result<Option<u64>> {
        let request = pb::GetSubscriptionRequest {
            log: log.to_owned(),
            subscription: name.to_owned(),
        };
        self.read_call(move |mut c| {
            let request = request.clone();
            Box::pin(async move { Ok(c.get_subscription(request).await?.into_inner().offset) })
        })
        .await
    }
}

/// The records of a log, in offset order: a
/// `Stream<Item = Result<StoredRecord, ClientError>>` made by
/// [`Client::reader`].
///
/// Reconnects after retryable failures and resumes after the last record
/// it yielded (no gap, no duplicate); ends after `limit` records, at the
/// tail when not following, at the end of stream, or with an error a retry
/// cannot cure (then the error is the last item). Dropping it cancels the
/// read.
///
/// ```no_run
/// use distributedlog::{Client, ReadOptions, Start};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let endpoint = "http://127.0.0.1:7070";
/// let client = Client::new(&endpoint);
/// # client.create_log("ns/events").await?;
/// # for i in 0..10 {
/// #     client.append("ns/events", vec![distributedlog::Record::new(format!("r{i}"))], None).await?;
/// # }
/// # client.commit_subscription("ns/events", "billing", 4).await?;
/// // Resume a subscription where it left off, and follow the log.
/// let from = client.subscription("ns/events", "billing").await?.unwrap_or(0);
/// let follow = ReadOptions { limit: None, follow: true, ..ReadOptions::default() };
/// let mut reader = client.reader("ns/events", Start::Offset(from), follow);
/// while let Some(record) = reader.next().await {
///     let record = record?;
///     // … process the record, then remember the position:
///     client
///         .commit_subscription("ns/events", "billing", record.offset + 1)
///         .await?;
/// #   if record.offset == 9 {
/// #       break; // the example follows forever; the test stops at the tail
/// #   }
/// }
/// # assert_eq!(from, 4);
/// # assert_eq!(client.subscription("ns/events", "billing").await?, Some(10));
/// # Ok(())
/// # }
/// ```
pub struct LogReader {
    log: String,
    stream: futures::stream::Fuse<BoxStream<'static, Result<StoredRecord>>>,
}

impl LogReader {
    /// The log this reader reads.
    pub fn log(&self) -> &str {
        &self.log
    }
}

impl fmt::Debug for LogReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogReader")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl Stream for LogReader {
    type Item = Result<StoredRecord>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.poll_next_unpin(cx)
    }
}

impl FusedStream for LogReader {
    fn is_terminated(&self) -> bool {
        self.stream.is_terminated()
    }
}

/// What the reader does with a record the server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The next record: yield it.
    Deliver,
    /// Delivered already (a resumed stream repeating itself): skip it.
    Duplicate,
    /// Offsets are dense, so a later offset means the server skipped
    /// records from `expected` on.
    Gap { expected: u64 },
}

/// The resume bookkeeping of a read: where it started, how far it got, how
/// many records it may still deliver. Pure, so it is tested on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    start: Start,
    limit: Option<u64>,
    delivered: u64,
    /// The offset after the last record delivered.
    next: Option<u64>,
}

impl Cursor {
    pub(crate) fn new(start: Start, limit: Option<u64>) -> Cursor {
        Cursor {
            start,
            limit,
            delivered: 0,
            next: None,
        }
    }

    /// Where the next `Read` starts: after the last record delivered, else
    /// where the read was asked to start.
    pub(crate) fn position(&self) -> Start {
        match self.next {
            Some(next) => Start::Offset(next),
            None => self.start,
        }
    }

    /// Fixes a `Tail` start at the offset the tail had: a read resumed
    /// before the first record must not skip the records appended since.
    pub(crate) fn resolve_tail(&mut self, next_offset: u64) {
        if self.start == Start::Tail {
            self.start = Start::Offset(next_offset);
        }
    }

    /// Records still to deliver, if limited.
    pub(crate) fn remaining(&self) -> Option<u64> {
        self.limit.map(|limit| limit.saturating_sub(self.delivered))
    }

    /// The limit is reached.
    pub(crate) fn is_complete(&self) -> bool {
        self.remaining() == Some(0)
    }

    /// Decides about a record at `offset`, counting it when delivered.
    pub(crate) fn accept(&mut self, offset: u64) -> Verdict {
        match self.next {
            Some(next) if offset < next => return Verdict::Duplicate,
            Some(next) if offset > next => return Verdict::Gap { expected: next },
            _ => {}
        }
        self.next = Some(offset + 1);
        self.delivered += 1;
        Verdict::Deliver
    }

    /// The `Read` request that continues this read.
    pub(crate) fn request(&self, log: &str, follow: bool) -> pb::ReadRequest {
        let start = self.position().into();
        pb::ReadRequest {
            log: log.to_owned(),
            start: Some(start),
            limit: self.remaining(),
            follow,
            log_id: None,
        }
    }
}

/// Whether a failed read is worth another attempt. Reads are idempotent,
/// so every transient failure is: the node, the connection or the stream
/// broke, or the node sheds load.
fn retryable(err: &Error) -> bool {
    match err {
        Error::Status(status) => {
            failure_kind(status).is_retryable() || status.code() == tonic::Code::Unknown
        }
        _ => false,
    }
}

/// The state of a [`LogReader`] between records.
struct ReadLoop {
    client: Client,
    log: String,
    follow: bool,
    /// The incarnation the read is pinned to, if the caller asked for one.
    log_id: Option<u64>,
    cursor: Cursor,
    stream: Option<tonic::Streaming<pb::ReadResponse>>,
    /// Records received and not yet yielded.
    buffered: VecDeque<pb::StoredRecord>,
    /// The server said the log ended and every record was sent.
    end_of_stream: bool,
    /// The retries left since the last progress (a record delivered, or a
    /// stream that lasted [`HEALTHY_STREAM`]).
    retries: Retries,
    /// The read endpoints that did not answer since the last progress.
    unreachable: Unreachable,
    /// Where the current (or last) stream was opened.
    address: String,
    /// When the current stream was opened.
    opened_at: Instant,
    finished: bool,
}

impl ReadLoop {
    /// The next item of the stream; `None` when it ended.
    async fn next(&mut self) -> Option<Result<StoredRecord>> {
        loop {
            if self.finished || self.cursor.is_complete() {
                return self.finish(None);
            }
            if let Some(record) = self.buffered.pop_front() {
                match self.cursor.accept(record.offset) {
                    Verdict::Deliver => {
                        self.progressed();
                        return Some(Ok(StoredRecord::from(record)));
                    }
                    Verdict::Duplicate => continue,
                    Verdict::Gap { expected } => {
                        let message = format!(
                            "read of {} skipped from offset {expected} to {}",
                            self.log, record.offset
                        );
                        return self.finish(Some(Err(Error::Protocol(message))));
                    }
                }
            }
            if self.end_of_stream {
                return self.finish(None);
            }
            let Some(stream) = self.stream.as_mut() else {
                if let Err(err) = self.open().await
                    && let Some(err) = self.retry(err).await
                {
                    return self.finish(Some(Err(err)));
                }
                continue;
            };
            let failure = match stream.message().await {
                Ok(Some(response)) => {
                    // Every reopen names the incarnation read so far: a read
                    // never continues into a log re-created under the name.
                    if self.log_id.is_none() && response.log_id != 0 {
                        self.log_id = Some(response.log_id);
                    }
                    self.buffered.extend(response.records);
                    self.end_of_stream |= response.end_of_stream;
                    continue;
                }
                Ok(None) if !self.follow => return self.finish(None),
                Ok(None) => Error::Status(tonic::Status::unavailable(format!(
                    "the read stream of {} ended before the end of the log",
                    self.log
                ))),
                Err(status) => Error::Status(status),
            };
            self.stream = None;
            if let Some(err) = self.retry(failure).await {
                return self.finish(Some(Err(err)));
            }
        }
    }

    /// Starts a `Read` where the cursor is.
    async fn open(&mut self) -> Result<()> {
        if self.cursor.position() == Start::Tail {
            // Has its own retries: its failure is final.
            match self.client.check_tail(&self.log).await {
                Ok(tail) if self.log_id.is_some_and(|id| id < tail.log_id) => {
                    self.finished = true;
                    return Err(Error::Status(tonic::Status::not_found(format!(
                        "log {} with id {} was deleted",
                        self.log,
                        self.log_id.unwrap_or_default()
                    ))));
                }
                Ok(tail) if self.log_id.is_some_and(|id| id > tail.log_id) => {
                    // The reader node has not seen the pinned log yet.
                    return Err(Error::Status(tonic::Status::unavailable(format!(
                        "the tail of {} was measured on an older log id; retry",
                        self.log
                    ))));
                }
                Ok(tail) => {
                    self.log_id = self.log_id.or(Some(tail.log_id).filter(|id| *id != 0));
                    self.cursor.resolve_tail(tail.next_offset)
                }
                Err(err) => {
                    self.finished = true;
                    return Err(err);
                }
            }
        }
        let address = self.client.read_endpoints().current();
        self.address.clone_from(&address);
        let mut client = self.client.read_stream_client(&address)?;
        let mut request = self.cursor.request(&self.log, self.follow);
        request.log_id = self.log_id;
        self.opened_at = Instant::now();
        tracing::debug!(log = self.log, address, start = ?request.start, "read");
        let stream = client.read(request).await.map_err(Error::Status)?;
        self.stream = Some(stream.into_inner());
        Ok(())
    }

    /// After a failure: `None` to try again (after a backoff, on the next
    /// endpoint), or the error to end the stream with.
    async fn retry(&mut self, err: Error) -> Option<Error> {
        if self.finished || !retryable(&err) {
            return Some(err);
        }
        if self.opened_at.elapsed() >= HEALTHY_STREAM {
            self.progressed();
        }
        tracing::debug!(log = self.log, error = %err, "read failed; resuming");
        self.client.read_endpoints().advance();
        let Error::Status(status) = err else {
            return Some(err);
        };
        self.unreachable.note(&self.address, &status);
        if !self.retries.pause().await {
            return Some(Error::Status(self.unreachable.status(status, None)));
        }
        None
    }

    /// A fresh budget of retries, and of endpoints not reached, after
    /// progress.
    fn progressed(&mut self) {
        self.retries = Retries::new();
        self.unreachable = self.client.read_endpoints().unreachable();
    }

    fn finish(&mut self, last: Option<Result<StoredRecord>>) -> Option<Result<StoredRecord>> {
        self.finished = true;
        self.stream = None;
        self.buffered.clear();
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_after_the_last_delivered_record() {
        let mut cursor = Cursor::new(Start::Timestamp(1_000), Some(5));
        assert_eq!(cursor.position(), Start::Timestamp(1_000));
        let request = cursor.request("ns/log", true);
        assert_eq!(
            request.start,
            Some(pb::read_request::Start::TimestampMs(1_000))
        );
        assert_eq!(request.limit, Some(5));
        assert!(request.follow);

        assert_eq!(cursor.accept(40), Verdict::Deliver);
        assert_eq!(cursor.accept(41), Verdict::Deliver);
        // Reconnect: continue at 42, with the rest of the limit.
        let request = cursor.request("ns/log", true);
        assert_eq!(request.start, Some(pb::read_request::Start::Offset(42)));
        assert_eq!(request.limit, Some(3));
        assert_eq!(cursor.remaining(), Some(3));
    }

    #[test]
    fn skips_duplicates_and_refuses_gaps() {
        let mut cursor = Cursor::new(Start::Offset(10), None);
        assert_eq!(cursor.accept(10), Verdict::Deliver);
        assert_eq!(cursor.accept(11), Verdict::Deliver);
        // A resumed server repeating records: skipped, not counted.
        assert_eq!(cursor.accept(10), Verdict::Duplicate);
        assert_eq!(cursor.accept(11), Verdict::Duplicate);
        assert_eq!(cursor.accept(12), Verdict::Deliver);
        assert_eq!(cursor.accept(14), Verdict::Gap { expected: 13 });
        assert_eq!(cursor.position(), Start::Offset(13));
        assert_eq!(cursor.remaining(), None);
        assert!(!cursor.is_complete());
    }

    #[test]
    fn the_first_record_may_be_anywhere() {
        // The server positions the first record (txid, time, earliest,
        // trimmed offsets); only later ones must follow it densely.
        let mut cursor = Cursor::new(Start::Txid(7), None);
        assert_eq!(cursor.accept(1_000), Verdict::Deliver);
        assert_eq!(cursor.position(), Start::Offset(1_001));
        let mut cursor = Cursor::new(Start::Earliest, None);
        assert_eq!(cursor.request("a/b", false).limit, None);
        assert_eq!(
            cursor.request("a/b", false).start,
            Some(pb::read_request::Start::Earliest(pb::Earliest {}))
        );
        assert_eq!(cursor.accept(0), Verdict::Deliver);
    }

    #[test]
    fn the_limit_counts_across_reconnects() {
        let mut cursor = Cursor::new(Start::Earliest, Some(2));
        assert!(!cursor.is_complete());
        assert_eq!(cursor.accept(0), Verdict::Deliver);
        assert_eq!(cursor.accept(0), Verdict::Duplicate);
        assert_eq!(cursor.remaining(), Some(1));
        assert_eq!(cursor.accept(1), Verdict::Deliver);
        assert!(cursor.is_complete());
        assert_eq!(Cursor::new(Start::Earliest, Some(0)).remaining(), Some(0));
    }

    #[test]
    fn a_tail_start_is_pinned_to_an_offset() {
        let mut cursor = Cursor::new(Start::Tail, None);
        assert_eq!(
            cursor.request("a/b", true).start,
            Some(pb::read_request::Start::Tail(pb::Tail {}))
        );
        cursor.resolve_tail(77);
        assert_eq!(cursor.position(), Start::Offset(77));
        // Only a tail start moves.
        let mut other = Cursor::new(Start::Offset(3), None);
        other.resolve_tail(77);
        assert_eq!(other.position(), Start::Offset(3));
    }

    /// A `ReadService` that plays a script: each `Read` call takes the next
    /// list of responses (the stream ends after them, cleanly); every
    /// request is recorded.
    #[derive(Default)]
    struct Scripted {
        reads: std::sync::Mutex<VecDeque<Vec<Result<pb::ReadResponse, tonic::Status>>>>,
        requests: std::sync::Mutex<Vec<pb::ReadRequest>>,
        tail: u64,
    }

    #[tonic::async_trait]
    impl pb::read_service_server::ReadService for Scripted {
        type ReadStream = BoxStream<'static, Result<pb::ReadResponse, tonic::Status>>;

        async fn read(
            &self,
            request: tonic::Request<pb::ReadRequest>,
        ) -> Result<tonic::Response<Self::ReadStream>, tonic::Status> {
            self.requests.lock().unwrap().push(request.into_inner());
            let script = self.reads.lock().unwrap().pop_front();
            let stream: Self::ReadStream = match script {
                Some(items) => Box::pin(futures::stream::iter(items)),
                None => Box::pin(futures::stream::pending()),
            };
            Ok(tonic::Response::new(stream))
        }

        async fn check_tail(
            &self,
            _: tonic::Request<pb::CheckTailRequest>,
        ) -> Result<tonic::Response<pb::CheckTailResponse>, tonic::Status> {
            Ok(tonic::Response::new(pb::CheckTailResponse {
                first_offset: 0,
                next_offset: self.tail,
                end_of_stream: false,
                log_id: 0,
            }))
        }

        async fn commit_subscription(
            &self,
            _: tonic::Request<pb::CommitSubscriptionRequest>,
        ) -> Result<tonic::Response<pb::CommitSubscriptionResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("commit"))
        }

        async fn get_subscription(
            &self,
            _: tonic::Request<pb::GetSubscriptionRequest>,
        ) -> Result<tonic::Response<pb::GetSubscriptionResponse>, tonic::Status> {
            Ok(tonic::Response::new(pb::GetSubscriptionResponse {
                offset: Some(9),
            }))
        }

        async fn list_subscriptions(
            &self,
            _: tonic::Request<pb::ListSubscriptionsRequest>,
        ) -> Result<tonic::Response<pb::ListSubscriptionsResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not scripted"))
        }

        async fn delete_subscription(
            &self,
            _: tonic::Request<pb::DeleteSubscriptionRequest>,
        ) -> Result<tonic::Response<pb::DeleteSubscriptionResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not scripted"))
        }
    }

    /// Serves `service` on a free loopback port; returns its URL.
    async fn serve(service: std::sync::Arc<Scripted>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let server = pb::read_service_server::ReadServiceServer::from_arc(service);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        address
    }

    fn records(offsets: std::ops::Range<u64>) -> Result<pb::ReadResponse, tonic::Status> {
        Ok(pb::ReadResponse {
            records: offsets
                .map(|offset| pb::StoredRecord {
                    offset,
                    payload: bytes::Bytes::from(format!("r{offset}")),
                    ..Default::default()
                })
                .collect(),
            end_of_stream: false,
            log_id: 0,
        })
    }

    fn scripted(
        reads: Vec<Vec<Result<pb::ReadResponse, tonic::Status>>>,
    ) -> std::sync::Arc<Scripted> {
        std::sync::Arc::new(Scripted {
            reads: std::sync::Mutex::new(reads.into()),
            ..Scripted::default()
        })
    }

    fn starts(service: &Scripted) -> Vec<(Option<pb::read_request::Start>, Option<u64>)> {
        let requests = service.requests.lock().unwrap();
        requests.iter().map(|r| (r.start, r.limit)).collect()
    }

    #[tokio::test]
    async fn a_read_moves_to_the_next_endpoint_and_resumes_without_gap_or_duplicate() {
        use futures::TryStreamExt;
        use pb::read_request::Start as P;
        let a = scripted(vec![vec![
            records(0..2),
            records(2..4),
            Err(tonic::Status::unavailable("node going away")),
        ]]);
        // B repeats offset 3, which the reader delivered already.
        let b = scripted(vec![vec![records(3..7), records(7..10)]]);
        let client = Client::new(format!(
            "{},{}",
            serve(a.clone()).await,
            serve(b.clone()).await
        ));
        let read: Vec<StoredRecord> = client
            .reader("ns/log", Start::Earliest, ReadOptions::default())
            .try_collect()
            .await
            .unwrap();
        let offsets: Vec<u64> = read.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..10).collect::<Vec<_>>());
        assert_eq!(read[7].record.payload, "r7");
        assert_eq!(starts(&a), [(Some(P::Earliest(pb::Earliest {})), None)]);
        assert_eq!(starts(&b), [(Some(P::Offset(4)), None)]);
    }

    #[tokio::test]
    async fn a_resumed_read_names_the_log_id_it_started_on() {
        use futures::StreamExt;
        // The first node answers for log id 7, then goes away; the read
        // resumes on the second, which must be asked for id 7 only (the
        // log may have been deleted and re-created under its name since).
        let with_id = |mut response: Result<pb::ReadResponse, tonic::Status>| {
            if let Ok(response) = &mut response {
                response.log_id = 7;
            }
            response
        };
        let a = scripted(vec![vec![
            with_id(records(0..3)),
            Err(tonic::Status::unavailable("node going away")),
        ]]);
        let b = scripted(vec![vec![Err(tonic::Status::not_found(
            "log ns/log with id 7 was deleted",
        ))]]);
        let client = Client::new(format!(
            "{},{}",
            serve(a.clone()).await,
            serve(b.clone()).await
        ));
        let read: Vec<_> = client
            .reader("ns/log", Start::Earliest, ReadOptions::default())
            .collect()
            .await;
        assert_eq!(read.len(), 4, "three records, then the error: {read:?}");
        assert!(matches!(&read[3], Err(err) if err.code() == tonic::Code::NotFound));
        let asked: Vec<Option<u64>> = b
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.log_id)
            .collect();
        assert_eq!(asked, [Some(7)]);
        assert_eq!(a.requests.lock().unwrap()[0].log_id, None);
    }

    #[tokio::test]
    async fn a_follower_reconnects_when_the_stream_ends_and_keeps_the_limit() {
        use futures::TryStreamExt;
        use pb::read_request::Start as P;
        // The first stream ends cleanly without end_of_stream; the second
        // would go on past the limit.
        let service = scripted(vec![vec![records(5..8)], vec![records(8..20)]]);
        let client = Client::new(serve(service.clone()).await);
        let options = ReadOptions {
            limit: Some(6),
            follow: true,
            ..ReadOptions::default()
        };
        let read: Vec<u64> = client
            .reader("ns/log", Start::Offset(5), options)
            .map_ok(|r| r.offset)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(read, (5..11).collect::<Vec<_>>());
        assert_eq!(
            starts(&service),
            [(Some(P::Offset(5)), Some(6)), (Some(P::Offset(8)), Some(3))]
        );
    }

    #[tokio::test]
    async fn errors_a_retry_cannot_cure_end_the_read() {
        use futures::StreamExt;
        let service = scripted(vec![vec![
            records(0..2),
            Err(tonic::Status::out_of_range("offset 2 is trimmed")),
        ]]);
        let client = Client::new(serve(service.clone()).await);
        let mut reader = client.reader("ns/log", Start::Earliest, ReadOptions::default());
        assert_eq!(reader.next().await.unwrap().unwrap().offset, 0);
        assert_eq!(reader.next().await.unwrap().unwrap().offset, 1);
        let err = reader.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        assert_eq!(err.to_string(), "offset 2 is trimmed");
        assert!(reader.next().await.is_none());
        assert_eq!(service.requests.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn end_of_stream_gaps_tails_and_subscriptions() {
        use futures::TryStreamExt;
        use pb::read_request::Start as P;
        let mut last = records(3..5).unwrap();
        last.end_of_stream = true;
        let service = std::sync::Arc::new(Scripted {
            reads: std::sync::Mutex::new(
                vec![vec![Ok(last)], vec![records(0..2), records(3..4)]].into(),
            ),
            tail: 3,
            ..Scripted::default()
        });
        let client = Client::new(serve(service.clone()).await);
        let follow = ReadOptions {
            limit: None,
            follow: true,
            ..ReadOptions::default()
        };
        // A tail read starts where CheckTail says the tail is, and a
        // follower stops at the end of stream.
        let read: Vec<u64> = client
            .reader("ns/log", Start::Tail, follow)
            .map_ok(|r| r.offset)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(read, [3, 4]);
        assert_eq!(starts(&service), [(Some(P::Offset(3)), None)]);
        // A server that skips offsets is caught.
        let err = client
            .reader("ns/log", Start::Earliest, ReadOptions::default())
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err}");
        assert_eq!(client.subscription("ns/log", "s").await.unwrap(), Some(9));
        let err = client
            .commit_subscription("ns/log", "s", 1)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);
    }

    #[test]
    fn transient_failures_are_retried_and_others_end_the_read() {
        let status = |code| Error::Status(tonic::Status::new(code, "x"));
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::ResourceExhausted,
            tonic::Code::DeadlineExceeded,
            tonic::Code::Aborted,
            tonic::Code::Cancelled,
            tonic::Code::Unknown,
        ] {
            assert!(retryable(&status(code)), "{code:?}");
        }
        for code in [
            tonic::Code::OutOfRange,
            tonic::Code::NotFound,
            tonic::Code::InvalidArgument,
            tonic::Code::FailedPrecondition,
            tonic::Code::DataLoss,
            tonic::Code::PermissionDenied,
            tonic::Code::Internal,
        ] {
            assert!(!retryable(&status(code)), "{code:?}");
        }
        assert!(!retryable(&Error::Protocol("gap".into())));
    }
}

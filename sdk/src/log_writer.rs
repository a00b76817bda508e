//! Writing a log: [`LogWriter`] batches records into appends, in order,
//! each written exactly once.
//!
//! # Order
//!
//! Records are queued in the order of the [`LogWriter::write`] calls. A
//! background task cuts the queue, front first, into batches and has at
//! most one append in flight; the next batch accumulates meanwhile and goes
//! when the previous one was acknowledged. A failed batch fails the writer:
//! that batch and every record after it fail with the error (later writes
//! too), so no record can land after one that did not.
//!
//! # Exactly once
//!
//! Before its first batch the writer learns the log's next offset
//! (`GetLog`); every batch carries it as `expected_offset`, and each
//! acknowledgement moves it on. A retried append (the client retries
//! transient failures) therefore either lands once or is refused with
//! `FAILED_PRECONDITION` and the log's acknowledged end. The owner never
//! reports an end that counts records in flight (not yet durable): while
//! appends are in flight at or after the expected offset it answers
//! "retry later" (`RESOURCE_EXHAUSTED`, retried by the client) instead. So:
//!
//! - if an earlier attempt of the batch was in doubt (timed out, lost its
//!   connection or its owner) and the log is now exactly one batch further,
//!   the writer reads those records back: if they are the batch's (payload,
//!   key, headers, txid), that attempt landed and is durable, and the batch
//!   is acknowledged with the offsets it got; if not, another writer's batch
//!   of the same size is there (a crashed predecessor's append in flight):
//!   [`Error::Conflict`]. The read goes to the client's read endpoints
//!   ([`Client::with_read_endpoints`]; ingest nodes of a cluster serve no
//!   reads): if it fails, the writer fails with [`Error::Conflict`] marked
//!   `in_doubt` (the batch may be in the log);
//! - if no attempt was in doubt and no batch was acknowledged yet, the
//!   offset learnt was stale: the batch goes again at the actual offset;
//! - otherwise the writer fails with [`Error::Conflict`].
//!
//! The writer also learns the log's id there, and every batch names it: a
//! log deleted and re-created under the same name fails the writer with
//! `NOT_FOUND`, never takes its records or its offsets.
//!
//! This relies on the writer being the only writer of its log while it is
//! open (the single-writer model of docs/wire.md): another writer's appends
//! surface as [`Error::Conflict`] rather than interleaving silently. That
//! includes a *previous* writer that crashed with an append in flight: its
//! batch landing where this writer's batch in doubt was sent is told apart
//! by reading it back, unless its records are identical to this batch's
//! (appends carry no writer identity; the log then holds exactly the
//! records this writer meant to write, at the offsets it reports). A batch
//! that still failed after the client's retries with a retryable error
//! (`UNAVAILABLE`) may or may not be in the log; the writer fails then too,
//! and [`Client::get_log`] tells where the log stands.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use dlog_wire::limits::Limits;
use dlog_wire::record::{Record, check_record};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{AppendIf, Appended, Called, Client, Error, Result};

/// How a [`LogWriter`] batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// Most records in one append (at most the service limit, 10 000).
    pub max_batch_records: usize,
    /// Most bytes (payloads, keys, headers) in one append (at most the
    /// service limit, 4 MiB). A larger single record goes alone.
    pub max_batch_bytes: usize,
    /// How long the first queued record waits for others when nothing is in
    /// flight; while an append is in flight the next batch fills anyway.
    pub linger: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            max_batch_records: 1_000,
            max_batch_bytes: 1024 * 1024,
            linger: Duration::from_millis(1),
        }
    }
}

impl WriterOptions {
    /// The options within the service limits.
    fn clamped(self) -> WriterOptions {
        let limits = Limits::DEFAULT;
        WriterOptions {
            max_batch_records: self.max_batch_records.clamp(1, limits.max_append_records),
            max_batch_bytes: self.max_batch_bytes.clamp(1, limits.max_append_bytes),
            linger: self.linger,
        }
    }
}

impl Client {
    /// A batching writer of `log`; see [`LogWriter`]. Must be called within
    /// a Tokio runtime (the writer runs a task on it).
    pub fn writer(&self, log: &str, options: WriterOptions) -> LogWriter {
        let (commands, rx) = mpsc::unbounded_channel();
        let task = WriterTask {
            client: self.clone(),
            log: log.to_owned(),
            options: options.clamped(),
            rx,
            queue: VecDeque::new(),
            queued_bytes: 0,
            received: 0,
            sent: 0,
            acked: 0,
            flushes: VecDeque::new(),
            next_offset: None,
            log_id: None,
            acked_any: false,
            restarts: 0,
            failed: None,
        };
        LogWriter {
            log: log.to_owned(),
            commands,
            task: tokio::spawn(task.run()),
        }
    }
}

/// Writes records to one log in batches, in order, each exactly once (see
/// [the module](crate::log_writer) for how).
///
/// [`write`](LogWriter::write) queues a record at once and returns a future
/// of its offset, which resolves when the record's batch is acknowledged;
/// awaiting it is optional ([`flush`](LogWriter::flush) waits for all).
/// The queue is unbounded: a producer that does not await its writes should
/// flush now and then. Dropping the writer still sends what it queued;
/// [`close`](LogWriter::close) also waits for it.
///
/// ```no_run
/// use distributedlog::{Client, LogWriter, Record, WriterOptions};
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let endpoint = "http://127.0.0.1:7070";
/// let client = Client::new(&endpoint);
/// # client.create_log("ns/events").await?;
/// let writer: LogWriter = client.writer("ns/events", WriterOptions::default());
/// let first = writer.write(Record::new("one"));
/// let second = writer.write(Record::new("two"));
/// let (first, second) = (first.await?, second.await?);
/// assert_eq!(second, first + 1);
/// for i in 0..1_000 {
///     // Not awaited one by one: they go in batches.
///     drop(writer.write(Record::new(format!("record {i}"))));
/// }
/// writer.flush().await?;
/// writer.close().await?;
/// # assert_eq!(client.get_log("ns/events").await?.next_offset, 1_002);
/// # Ok(())
/// # }
/// ```
pub struct LogWriter {
    log: String,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogWriter")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl LogWriter {
    /// The log this writer writes.
    pub fn log(&self) -> &str {
        &self.log
    }

    /// Queues `record` after the records queued before and returns a future
    /// of the offset it gets. A record over the size limits fails at once
    /// (and only itself); any other failure fails the writer.
    pub fn write(&self, record: Record) -> PendingWrite {
        if let Err(err) = check_record(0, &record, &Limits::DEFAULT) {
            return PendingWrite::failed(err.into());
        }
        let (ack, rx) = oneshot::channel();
        match self.commands.send(Command::Write(record, ack)) {
            Ok(()) => PendingWrite {
                state: Pending::Waiting(rx),
            },
            Err(_) => PendingWrite::failed(Error::Closed),
        }
    }

    /// Waits until every record written before is acknowledged; fails if the
    /// writer failed.
    pub async fn flush(&self) -> Result<()> {
        let (done, rx) = oneshot::channel();
        self.commands
            .send(Command::Flush(done))
            .map_err(|_| Error::Closed)?;
        rx.await.unwrap_or(Err(Error::Closed))
    }

    /// Flushes and stops the writer.
    pub async fn close(self) -> Result<()> {
        let LogWriter { commands, task, .. } = self;
        let (done, rx) = oneshot::channel();
        let sent = commands.send(Command::Flush(done));
        // The task ends once the queue is empty and this was the last sender.
        drop(commands);
        let flushed = match sent {
            Ok(()) => rx.await.unwrap_or(Err(Error::Closed)),
            Err(_) => Err(Error::Closed),
        };
        task.await.map_err(|_| Error::Closed)?;
        flushed
    }
}

/// The offset of a record given to [`LogWriter::write`], once acknowledged.
#[derive(Debug)]
pub struct PendingWrite {
    state: Pending,
}

#[derive(Debug)]
enum Pending {
    Waiting(oneshot::Receiver<Result<u64>>),
    Failed(Option<Error>),
}

impl PendingWrite {
    fn failed(err: Error) -> PendingWrite {
        PendingWrite {
            state: Pending::Failed(Some(err)),
        }
    }
}

impl Future for PendingWrite {
    type Output = Result<u64>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<u64>> {
        match &mut self.state {
            Pending::Waiting(rx) => rx
                .poll_unpin(cx)
                .map(|answer| answer.unwrap_or(Err(Error::Closed))),
            Pending::Failed(err) => Poll::Ready(Err(err.take().unwrap_or(Error::Closed))),
        }
    }
}

#[derive(Debug)]
enum Command {
    Write(Record, oneshot::Sender<Result<u64>>),
    Flush(oneshot::Sender<Result<()>>),
}

/// A record waiting for its batch.
#[derive(Debug)]
struct Queued {
    record: Record,
    ack: oneshot::Sender<Result<u64>>,
    since: Instant,
}

/// An append on its way.
struct Batch {
    records: Vec<Record>,
    acks: Vec<oneshot::Sender<Result<u64>>>,
    expected: u64,
}

type InFlight = (BoxFuture<'static, Called<Appended>>, Batch);

/// What to do after an append answered.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Acknowledge the batch from this offset.
    Acked { first_offset: u64 },
    /// The log is exactly one batch further than where an attempt in doubt
    /// was sent: acknowledge the batch from this offset if the records
    /// there are this batch's, else fail with a conflict.
    Verify { first_offset: u64 },
    /// Send the batch again at this offset.
    Resend { expected: u64 },
    /// Fail the writer.
    Fail(FailWith),
}

#[derive(Debug, PartialEq, Eq)]
enum FailWith {
    /// The error of the append.
    Error,
    /// A conflict with the log's actual next offset; `in_doubt`: this
    /// writer's batch may be in the log.
    Conflict { actual: u64, in_doubt: bool },
    /// The server acknowledged other offsets than expected.
    Protocol { first_offset: u64 },
}

/// How long a writer waits to read back a batch that was in doubt.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times the first batch may chase a moving tail.
const MAX_RESTARTS: u32 = 3;

/// Decides about an answered append of `count` records sent at `expected`.
/// `restartable`: no batch was acknowledged yet (and the restarts left).
fn decide(
    result: &Result<Appended>,
    in_doubt: bool,
    expected: u64,
    count: u64,
    restartable: bool,
) -> Outcome {
    match result {
        Ok(appended) if appended.first_offset == expected => Outcome::Acked {
            first_offset: expected,
        },
        Ok(appended) => Outcome::Fail(FailWith::Protocol {
            first_offset: appended.first_offset,
        }),
        Err(err) if err.code() == tonic::Code::FailedPrecondition => match err.next_offset() {
            Some(actual) if in_doubt && actual == expected + count => Outcome::Verify {
                first_offset: expected,
            },
            Some(actual) if !in_doubt && restartable => Outcome::Resend { expected: actual },
            Some(actual) => Outcome::Fail(FailWith::Conflict { actual, in_doubt }),
            // Not an offset mismatch (end of stream).
            None => Outcome::Fail(FailWith::Error),
        },
        Err(_) => Outcome::Fail(FailWith::Error),
    }
}

struct WriterTask {
    client: Client,
    log: String,
    options: WriterOptions,
    rx: mpsc::UnboundedReceiver<Command>,
    /// Records not sent yet, oldest first.
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// Records received, sent, acknowledged (each a prefix of the previous).
    received: u64,
    sent: u64,
    acked: u64,
    /// Flushes waiting for `acked` to reach their count.
    flushes: VecDeque<(u64, oneshot::Sender<Result<()>>)>,
    /// The `expected_offset` of the next batch, once known.
    next_offset: Option<u64>,
    /// The log id learnt with the first offset: every batch names it, so a
    /// writer never writes into a log re-created under the same name.
    log_id: Option<u64>,
    acked_any: bool,
    restarts: u32,
    /// Set once an append failed: everything after fails with it.
    failed: Option<Error>,
}

enum Event {
    Command(Option<Command>),
    Answered(Called<Appended>),
    Linger,
}

impl WriterTask {
    async fn run(mut self) {
        let mut in_flight: Option<InFlight> = None;
        let mut closed = false;
        loop {
            if in_flight.is_none() && self.failed.is_none() && self.ready(closed) {
                in_flight = self.send_next().await;
            }
            if closed && in_flight.is_none() && self.queue.is_empty() {
                break;
            }
            let linger = match self.queue.front() {
                Some(first) if in_flight.is_none() && self.failed.is_none() => {
                    Some(first.since + self.options.linger)
                }
                _ => None,
            };
            let event = tokio::select! {
                command = self.rx.recv(), if !closed => Event::Command(command),
                called = async {
                    match in_flight.as_mut() {
                        Some((call, _)) => call.await,
                        None => std::future::pending().await,
                    }
                }, if in_flight.is_some() => Event::Answered(called),
                () = async {
                    match linger {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                }, if linger.is_some() => Event::Linger,
                // Nothing left to wait for (not reached: a closed writer
                // has an append in flight or left the loop above).
                else => break,
            };
            match event {
                Event::Command(Some(command)) => self.receive(command),
                Event::Command(None) => closed = true,
                Event::Answered(called) => {
                    if let Some((_, batch)) = in_flight.take() {
                        in_flight = self.answered(batch, called).await;
                    }
                }
                // `ready` sees the deadline passed.
                Event::Linger => {}
            }
        }
        // Only flushes of a failed writer can be left.
        let err = self.failed.clone().unwrap_or(Error::Closed);
        for (_, done) in self.flushes.drain(..) {
            let _ = done.send(Err(err.clone()));
        }
    }

    fn receive(&mut self, command: Command) {
        match command {
            Command::Write(record, ack) => {
                if let Some(err) = &self.failed {
                    let _ = ack.send(Err(err.clone()));
                    return;
                }
                self.received += 1;
                self.queued_bytes += record.size();
                self.queue.push_back(Queued {
                    record,
                    ack,
                    since: Instant::now(),
                });
            }
            Command::Flush(done) => {
                if let Some(err) = &self.failed {
                    let _ = done.send(Err(err.clone()));
                } else if self.acked >= self.received {
                    let _ = done.send(Ok(()));
                } else {
                    self.flushes.push_back((self.received, done));
                }
            }
        }
    }

    /// Whether the front of the queue should go now.
    fn ready(&self, closed: bool) -> bool {
        let Some(first) = self.queue.front() else {
            return false;
        };
        closed
            || self.queue.len() >= self.options.max_batch_records
            || self.queued_bytes >= self.options.max_batch_bytes
            || self
                .flushes
                .back()
                .is_some_and(|&(upto, _)| upto > self.sent)
            || first.since + self.options.linger <= Instant::now()
    }

    /// Sends the next batch from the front of the queue.
    async fn send_next(&mut self) -> Option<InFlight> {
        let expected = match self.next_offset {
            Some(offset) => offset,
            None => match self.client.get_log(&self.log).await {
                Ok(info) if self.log_id.is_some_and(|id| id != info.log_id) => {
                    let gone = tonic::Status::not_found(format!(
                        "log {} with id {} was deleted; a log of that name now has id {}",
                        self.log,
                        self.log_id.unwrap_or_default(),
                        info.log_id
                    ));
                    self.fail(Error::Status(gone), Vec::new());
                    return None;
                }
                Ok(info) => {
                    self.next_offset = Some(info.next_offset);
                    self.log_id = Some(info.log_id);
                    info.next_offset
                }
                Err(err) => {
                    self.fail(err, Vec::new());
                    return None;
                }
            },
        };
        let mut batch = Batch {
            records: Vec::new(),
            acks: Vec::new(),
            expected,
        };
        let mut bytes = 0;
        while let Some(next) = self.queue.front() {
            let size = next.record.size();
            if batch.records.len() >= self.options.max_batch_records
                || (!batch.records.is_empty() && bytes + size > self.options.max_batch_bytes)
            {
                break;
            }
            let Some(queued) = self.queue.pop_front() else {
                break;
            };
            bytes += size;
            batch.records.push(queued.record);
            batch.acks.push(queued.ack);
        }
        self.queued_bytes -= bytes;
        self.sent += batch.records.len() as u64;
        Some(self.start(batch))
    }

    fn start(&self, batch: Batch) -> InFlight {
        let client = self.client.clone();
        let log = self.log.clone();
        let records = batch.records.clone();
        let condition = AppendIf {
            next_offset: Some(batch.expected),
            log_id: self.log_id,
        };
        let call = async move { client.append_traced(&log, records, condition).await };
        (Box::pin(call), batch)
    }

    /// Handles the answer to `batch`; returns the batch again if it must be
    /// resent.
    async fn answered(&mut self, batch: Batch, called: Called<Appended>) -> Option<InFlight> {
        let count = batch.records.len() as u64;
        let restartable = !self.acked_any && self.restarts < MAX_RESTARTS;
        let outcome = match decide(
            &called.result,
            called.in_doubt,
            batch.expected,
            count,
            restartable,
        ) {
            Outcome::Verify { first_offset } => match self.read_back(&batch).await {
                Ok(true) => {
                    tracing::debug!(
                        log = self.log,
                        first_offset,
                        "an append in doubt had landed"
                    );
                    Outcome::Acked { first_offset }
                }
                // Another writer's batch of the same size (a crashed
                // predecessor's append in flight) is there, not this one.
                // Ours cannot land later either: the log is past `expected`
                // and every attempt was conditional on it.
                Ok(false) => Outcome::Fail(FailWith::Conflict {
                    actual: first_offset + count,
                    in_doubt: false,
                }),
                // Unknown whether the batch landed: say so, with where the
                // log stands.
                Err(err) => {
                    tracing::warn!(
                        log = self.log,
                        first_offset,
                        error = %err,
                        "an append in doubt could not be read back"
                    );
                    Outcome::Fail(FailWith::Conflict {
                        actual: first_offset + count,
                        in_doubt: true,
                    })
                }
            },
            outcome => outcome,
        };
        match outcome {
            Outcome::Verify { .. } => unreachable!("verified above"),
            Outcome::Acked { first_offset } => {
                for (i, ack) in batch.acks.into_iter().enumerate() {
                    let _ = ack.send(Ok(first_offset + i as u64));
                }
                self.next_offset = Some(first_offset + count);
                self.acked_any = true;
                self.acked += count;
                while let Some((upto, _)) = self.flushes.front() {
                    if *upto > self.acked {
                        break;
                    }
                    if let Some((_, done)) = self.flushes.pop_front() {
                        let _ = done.send(Ok(()));
                    }
                }
                None
            }
            Outcome::Resend { expected } => {
                tracing::debug!(
                    log = self.log,
                    from = batch.expected,
                    to = expected,
                    "the log's next offset moved before the first append"
                );
                self.restarts += 1;
                self.next_offset = Some(expected);
                Some(self.start(Batch { expected, ..batch }))
            }
            Outcome::Fail(with) => {
                let err = match (with, called.result) {
                    (FailWith::Conflict { actual, in_doubt }, _) => Error::Conflict {
                        log: self.log.clone(),
                        expected: batch.expected,
                        actual,
                        in_doubt,
                    },
                    (FailWith::Protocol { first_offset }, _) => Error::Protocol(format!(
                        "an append to {} at expected offset {} was acknowledged at {first_offset}",
                        self.log, batch.expected
                    )),
                    (FailWith::Error, Err(err)) => err,
                    (FailWith::Error, Ok(_)) => Error::Protocol("unexpected append answer".into()),
                };
                self.fail(err, batch.acks);
                None
            }
        }
    }

    /// Whether the records at `batch.expected` (of the writer's log id)
    /// are this batch's: read back, within [`READ_BACK_TIMEOUT`].
    async fn read_back(&self, batch: &Batch) -> Result<bool> {
        use futures::TryStreamExt;
        let options = crate::ReadOptions {
            limit: Some(batch.records.len() as u64),
            follow: true,
            log_id: self.log_id,
        };
        let mut reader =
            self.client
                .reader(&self.log, crate::Start::Offset(batch.expected), options);
        let read = async {
            let mut found = Vec::with_capacity(batch.records.len());
            while let Some(stored) = reader.try_next().await? {
                let at = batch.expected + found.len() as u64;
                if stored.offset != at {
                    return Err(Error::Protocol(format!(
                        "read back of {} from offset {} gave offset {} where {at} was due",
                        self.log, batch.expected, stored.offset
                    )));
                }
                found.push(stored.record);
            }
            Ok::<_, Error>(found)
        };
        match tokio::time::timeout(READ_BACK_TIMEOUT, read).await {
            Ok(found) => Ok(found? == batch.records),
            Err(_) => Err(Error::Status(tonic::Status::deadline_exceeded(format!(
                "no read back within {READ_BACK_TIMEOUT:?}"
            )))),
        }
    }

    /// Fails the writer: `acks` (a batch), the queue and the flushes.
    fn fail(&mut self, err: Error, acks: Vec<oneshot::Sender<Result<u64>>>) {
        tracing::debug!(log = self.log, error = %err, "writer failed");
        for ack in acks {
            let _ = ack.send(Err(err.clone()));
        }
        for queued in self.queue.drain(..) {
            let _ = queued.ack.send(Err(err.clone()));
        }
        self.queued_bytes = 0;
        for (_, done) in self.flushes.drain(..) {
            let _ = done.send(Err(err.clone()));
        }
        self.failed = Some(err);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use dlog_wire::proto as pb;

    use super::*;

    fn appended(first_offset: u64, count: u64) -> Result<Appended> {
        Ok(Appended {
            first_offset,
            last_offset: first_offset + count - 1,
            timestamp_ms: 0,
        })
    }

    fn mismatch(actual: u64) -> Result<Appended> {
        let mut status = tonic::Status::failed_precondition("expected offset mismatch");
        status.metadata_mut().insert(
            dlog_wire::metadata::NEXT_OFFSET,
            actual.to_string().parse().unwrap(),
        );
        Err(Error::Status(status))
    }

    #[test]
    fn an_append_in_doubt_that_landed_is_acknowledged_once() {
        // Sent at 10, timed out, retried: the log is past the batch (to be
        // read back: it may be another writer's batch of the same size).
        assert_eq!(
            decide(&mismatch(13), true, 10, 3, false),
            Outcome::Verify { first_offset: 10 }
        );
        // In doubt, but the log moved by another amount: a conflict.
        assert_eq!(
            decide(&mismatch(12), true, 10, 3, true),
            Outcome::Fail(FailWith::Conflict {
                actual: 12,
                in_doubt: true
            })
        );
        // Not in doubt: someone else wrote exactly as many records.
        assert_eq!(
            decide(&mismatch(13), false, 10, 3, false),
            Outcome::Fail(FailWith::Conflict {
                actual: 13,
                in_doubt: false
            })
        );
    }

    #[test]
    fn a_stale_start_is_corrected_only_before_the_first_ack() {
        assert_eq!(
            decide(&mismatch(42), false, 10, 3, true),
            Outcome::Resend { expected: 42 }
        );
        assert_eq!(
            decide(&mismatch(42), false, 10, 3, false),
            Outcome::Fail(FailWith::Conflict {
                actual: 42,
                in_doubt: false
            })
        );
    }

    #[test]
    fn answers_and_other_errors() {
        assert_eq!(
            decide(&appended(10, 3), false, 10, 3, false),
            Outcome::Acked { first_offset: 10 }
        );
        assert_eq!(
            decide(&appended(11, 3), false, 10, 3, false),
            Outcome::Fail(FailWith::Protocol { first_offset: 11 })
        );
        let end_of_stream = Err(Error::Status(tonic::Status::failed_precondition(
            "log ended",
        )));
        assert_eq!(
            decide(&end_of_stream, true, 10, 3, true),
            Outcome::Fail(FailWith::Error)
        );
        // Still "retry later" after the client's retries: the batch in
        // doubt is not known to be durable, so it is not acknowledged.
        let in_flight = Err(Error::Status(tonic::Status::resource_exhausted(
            "appends in flight: retry later",
        )));
        assert_eq!(
            decide(&in_flight, true, 10, 3, false),
            Outcome::Fail(FailWith::Error)
        );
        let unavailable = Err(Error::Status(tonic::Status::unavailable("down")));
        assert_eq!(
            decide(&unavailable, true, 10, 3, true),
            Outcome::Fail(FailWith::Error)
        );
    }

    #[test]
    fn options_stay_within_the_service_limits() {
        let options = WriterOptions {
            max_batch_records: 0,
            max_batch_bytes: usize::MAX,
            linger: Duration::ZERO,
        }
        .clamped();
        assert_eq!(options.max_batch_records, 1);
        assert_eq!(options.max_batch_bytes, 4 * 1024 * 1024);
    }

    /// A `LogService` holding one log in memory. Appends honour
    /// `expected_offset` as the owner does; the appends numbered in
    /// `in_doubt` (from 0) are applied but answered `UNAVAILABLE`, as when
    /// a timeout hides a success.
    #[derive(Default)]
    struct Owner {
        state: std::sync::Mutex<OwnerState>,
    }

    #[derive(Default)]
    struct OwnerState {
        log: Vec<Bytes>,
        /// What `GetLog` answers, if not the truth.
        stale_next_offset: Option<u64>,
        in_doubt: Vec<usize>,
        /// Mismatched appends answered "retry later" (an earlier append
        /// still in flight), before the mismatch is answered.
        still_in_flight: usize,
        /// Appends (numbered from 0) answered `UNAVAILABLE` without being
        /// applied (refused by an owner losing its lease, a reset
        /// connection): the client cannot tell them from the `in_doubt` ones.
        unapplied_in_doubt: Vec<usize>,
        /// Another writer's records that land just before the append with
        /// this number is handled (a predecessor's append in flight).
        foreign_before: Vec<(usize, Bytes)>,
        /// The log id `GetLog` answers, and the one each append named.
        log_id: u64,
        named_log_ids: Vec<Option<u64>>,
        appends: usize,
        in_flight: usize,
        max_in_flight: usize,
    }

    type Answer<T> = Result<tonic::Response<T>, tonic::Status>;

    #[tonic::async_trait]
    impl pb::log_service_server::LogService for Owner {
        async fn get_log(
            &self,
            _: tonic::Request<pb::GetLogRequest>,
        ) -> Answer<pb::GetLogResponse> {
            let state = self.state.lock().unwrap();
            let next_offset = state.stale_next_offset.unwrap_or(state.log.len() as u64);
            Ok(tonic::Response::new(pb::GetLogResponse {
                log: Some(pb::LogInfo {
                    next_offset,
                    log_id: state.log_id,
                    ..Default::default()
                }),
            }))
        }

        async fn append(
            &self,
            request: tonic::Request<pb::AppendRequest>,
        ) -> Answer<pb::AppendResponse> {
            let request = request.into_inner();
            let call = {
                let mut state = self.state.lock().unwrap();
                state.in_flight += 1;
                state.max_in_flight = state.max_in_flight.max(state.in_flight);
                state.appends += 1;
                state.named_log_ids.push(request.log_id);
                state.appends - 1
            };
            tokio::time::sleep(Duration::from_millis(2)).await;
            let mut state = self.state.lock().unwrap();
            state.in_flight -= 1;
            let foreign: Vec<Bytes> = state
                .foreign_before
                .iter()
                .filter(|(at, _)| *at == call)
                .map(|(_, record)| record.clone())
                .collect();
            state.log.extend(foreign);
            if state.unapplied_in_doubt.contains(&call) {
                return Err(tonic::Status::unavailable("connection reset"));
            }
            let next = state.log.len() as u64;
            if let Some(expected) = request.expected_offset
                && expected != next
            {
                if state.still_in_flight > 0 {
                    state.still_in_flight -= 1;
                    return Err(tonic::Status::resource_exhausted(
                        "appends in flight: retry later",
                    ));
                }
                let mut status = tonic::Status::failed_precondition(format!(
                    "expected offset {expected}, log is at {next}"
                ));
                status.metadata_mut().insert(
                    dlog_wire::metadata::NEXT_OFFSET,
                    next.to_string().parse().unwrap(),
                );
                return Err(status);
            }
            let count = request.records.len() as u64;
            state
                .log
                .extend(request.records.into_iter().map(|r| r.payload));
            if state.in_doubt.contains(&call) {
                return Err(tonic::Status::unavailable("timed out"));
            }
            Ok(tonic::Response::new(pb::AppendResponse {
                first_offset: next,
                last_offset: next + count - 1,
                timestamp_ms: 0,
            }))
        }

        async fn create_log(
            &self,
            _: tonic::Request<pb::CreateLogRequest>,
        ) -> Answer<pb::CreateLogResponse> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn delete_log(
            &self,
            _: tonic::Request<pb::DeleteLogRequest>,
        ) -> Answer<pb::DeleteLogResponse> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn list_logs(
            &self,
            _: tonic::Request<pb::ListLogsRequest>,
        ) -> Answer<pb::ListLogsResponse> {
            Err(tonic::Status::unimplemented(""))
        }
        type AppendSessionStream =
            futures::stream::BoxStream<'static, Result<pb::AppendResponse, tonic::Status>>;
        async fn append_session(
            &self,
            _: tonic::Request<tonic::Streaming<pb::AppendRequest>>,
        ) -> Answer<Self::AppendSessionStream> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn trim(&self, _: tonic::Request<pb::TrimRequest>) -> Answer<pb::TrimResponse> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn mark_end_of_stream(
            &self,
            _: tonic::Request<pb::MarkEndOfStreamRequest>,
        ) -> Answer<pb::MarkEndOfStreamResponse> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn seal_log(
            &self,
            _: tonic::Request<pb::SealLogRequest>,
        ) -> Answer<pb::SealLogResponse> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn get_status(
            &self,
            _: tonic::Request<pb::GetStatusRequest>,
        ) -> Answer<pb::GetStatusResponse> {
            Err(tonic::Status::unimplemented(""))
        }

        async fn list_ingest_nodes(
            &self,
            _: tonic::Request<pb::ListIngestNodesRequest>,
        ) -> Answer<pb::ListIngestNodesResponse> {
            Err(tonic::Status::unimplemented(""))
        }
    }

    /// Reads of the one log: its payloads from an offset, at most `limit`.
    #[tonic::async_trait]
    impl pb::read_service_server::ReadService for Owner {
        type ReadStream =
            futures::stream::BoxStream<'static, Result<pb::ReadResponse, tonic::Status>>;
        async fn read(&self, request: tonic::Request<pb::ReadRequest>) -> Answer<Self::ReadStream> {
            let request = request.into_inner();
            let Some(pb::read_request::Start::Offset(from)) = request.start else {
                return Err(tonic::Status::unimplemented("reads from an offset only"));
            };
            let state = self.state.lock().unwrap();
            let limit = request.limit.unwrap_or(u64::MAX);
            let records = state
                .log
                .iter()
                .enumerate()
                .skip(from as usize)
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .map(|(offset, payload)| pb::StoredRecord {
                    offset: offset as u64,
                    payload: payload.clone(),
                    ..Default::default()
                })
                .collect();
            let response = pb::ReadResponse {
                records,
                end_of_stream: false,
                log_id: state.log_id,
            };
            Ok(tonic::Response::new(Box::pin(futures::stream::iter([Ok(
                response,
            )]))))
        }
        async fn check_tail(
            &self,
            _: tonic::Request<pb::CheckTailRequest>,
        ) -> Answer<pb::CheckTailResponse> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn commit_subscription(
            &self,
            _: tonic::Request<pb::CommitSubscriptionRequest>,
        ) -> Answer<pb::CommitSubscriptionResponse> {
            Err(tonic::Status::unimplemented(""))
        }
        async fn get_subscription(
            &self,
            _: tonic::Request<pb::GetSubscriptionRequest>,
        ) -> Answer<pb::GetSubscriptionResponse> {
            Err(tonic::Status::unimplemented(""))
        }

        async fn list_subscriptions(
            &self,
            _: tonic::Request<pb::ListSubscriptionsRequest>,
        ) -> Answer<pb::ListSubscriptionsResponse> {
            Err(tonic::Status::unimplemented(""))
        }

        async fn delete_subscription(
            &self,
            _: tonic::Request<pb::DeleteSubscriptionRequest>,
        ) -> Answer<pb::DeleteSubscriptionResponse> {
            Err(tonic::Status::unimplemented(""))
        }
    }

    /// Serves the owner's `LogService` and `ReadService` on one address.
    async fn serve(owner: Arc<Owner>) -> Client {
        Client::new(serve_parts(owner, true, true).await)
    }

    /// Serves the owner's services named on an address of its own.
    async fn serve_parts(owner: Arc<Owner>, writes: bool, reads: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let reads =
            reads.then(|| pb::read_service_server::ReadServiceServer::from_arc(owner.clone()));
        let writes = writes.then(|| pb::log_service_server::LogServiceServer::from_arc(owner));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_optional_service(reads)
                .add_optional_service(writes)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        address
    }

    fn owner(state: OwnerState) -> Arc<Owner> {
        Arc::new(Owner {
            state: std::sync::Mutex::new(state),
        })
    }

    fn payloads(owner: &Owner) -> Vec<String> {
        let state = owner.state.lock().unwrap();
        state
            .log
            .iter()
            .map(|p| String::from_utf8(p.to_vec()).unwrap())
            .collect()
    }

    fn small_batches() -> WriterOptions {
        WriterOptions {
            max_batch_records: 2,
            ..WriterOptions::default()
        }
    }

    #[tokio::test]
    async fn writes_go_in_order_in_batches_one_append_at_a_time() {
        let owner = owner(OwnerState::default());
        let client = serve(owner.clone()).await;
        let writer = client.writer(
            "ns/log",
            WriterOptions {
                max_batch_records: 64,
                ..WriterOptions::default()
            },
        );
        let pending: Vec<PendingWrite> = (0..1_000)
            .map(|i| writer.write(Record::new(format!("{i}"))))
            .collect();
        writer.flush().await.unwrap();
        for (i, pending) in pending.into_iter().enumerate() {
            assert_eq!(pending.await.unwrap(), i as u64);
        }
        writer.close().await.unwrap();
        let expected: Vec<String> = (0..1_000).map(|i| format!("{i}")).collect();
        assert_eq!(payloads(&owner), expected);
        let state = owner.state.lock().unwrap();
        assert_eq!(state.max_in_flight, 1);
        assert!(state.appends < 100, "{} appends", state.appends);
        assert!(state.appends >= 1_000 / 64, "{} appends", state.appends);
    }

    /// Writes records 0..5 in small batches to an owner in `state`, and
    /// checks that each got its offset.
    async fn write_five(state: OwnerState) -> Arc<Owner> {
        let owner = owner(state);
        let client = serve(owner.clone()).await;
        let writer = client.writer("ns/log", small_batches());
        let pending: Vec<PendingWrite> = (0..5)
            .map(|i| writer.write(Record::new(format!("{i}"))))
            .collect();
        writer.close().await.unwrap();
        for (i, pending) in pending.into_iter().enumerate() {
            assert_eq!(pending.await.unwrap(), i as u64);
        }
        owner
    }

    #[tokio::test]
    async fn every_batch_names_the_log_id_learnt_with_the_first_offset() {
        // A log deleted and re-created under the name has another id: the
        // owner refuses a batch naming the old one instead of taking it.
        let owner = write_five(OwnerState {
            log_id: 42,
            ..OwnerState::default()
        })
        .await;
        let state = owner.state.lock().unwrap();
        assert!(state.appends > 1);
        assert!(
            state.named_log_ids.iter().all(|id| *id == Some(42)),
            "{:?}",
            state.named_log_ids
        );
    }

    #[tokio::test]
    async fn an_append_in_doubt_is_written_once() {
        // The second append lands but its answer is lost; the retry is
        // refused (expected offset) and the writer sees that it landed.
        let owner = write_five(OwnerState {
            in_doubt: vec![1],
            ..OwnerState::default()
        })
        .await;
        assert_eq!(payloads(&owner), ["0", "1", "2", "3", "4"]);
    }

    #[tokio::test]
    async fn an_append_in_doubt_waits_while_the_owner_has_it_in_flight() {
        // The retry of the append in doubt is answered "retry later" while
        // the owner still has it in flight, then the acknowledged end.
        let owner = write_five(OwnerState {
            in_doubt: vec![1],
            still_in_flight: 3,
            ..OwnerState::default()
        })
        .await;
        assert_eq!(payloads(&owner), ["0", "1", "2", "3", "4"]);
        assert_eq!(owner.state.lock().unwrap().still_in_flight, 0);
    }

    #[tokio::test]
    async fn a_batch_that_may_be_in_the_log_never_fails_as_not_written() {
        // The first attempt lands but its answer is lost (in doubt); every
        // retry meets "retry later" (the owner still has it in flight, a
        // stalled cache tier) until the client's attempts run out. The
        // writer fails with RESOURCE_EXHAUSTED, which the wire contract
        // (docs/wire.md) defines as "nothing was written": an application
        // that believes it writes the records again, and they are in the
        // log twice.
        let owner = owner(OwnerState {
            in_doubt: vec![0],
            still_in_flight: 100,
            ..OwnerState::default()
        });
        let client = serve(owner.clone()).await;
        let writer = client.writer("ns/log", small_batches());
        let mine = writer.write(Record::new("mine"));
        let _ = writer.close().await;
        let err = mine.await.expect_err("never acknowledged");
        assert_eq!(payloads(&owner), ["mine"], "the batch is in the log");
        assert_ne!(
            err.code(),
            tonic::Code::ResourceExhausted,
            "the batch is in the log, but the writer failed with {err}, i.e. \"nothing was written\""
        );
    }

    /// What a new writer's one record "mine" got.
    async fn write_mine(client: &Client) -> Result<u64> {
        let writer = client.writer("ns/log", small_batches());
        let mine = writer.write(Record::new("mine"));
        let _ = writer.close().await;
        mine.await
    }

    /// `(expected, actual, in_doubt)` of a conflict.
    fn conflict_of(answer: &Result<u64>) -> Option<(u64, u64, bool)> {
        match answer {
            Err(Error::Conflict {
                expected,
                actual,
                in_doubt,
                ..
            }) => Some((*expected, *actual, *in_doubt)),
            _ => None,
        }
    }

    /// A writer whose first batch was in doubt (its first attempt answered
    /// "connection reset" without being applied) while a crashed
    /// predecessor's append of the same size landed: the retry finds the
    /// log one batch further and used to take that batch for its own,
    /// acknowledging "mine" at offset 0 where "theirs" is. Reading it back
    /// tells them apart: a conflict, and "mine" is certainly not in the log.
    #[tokio::test]
    async fn a_predecessors_batch_of_the_same_size_is_not_taken_for_ours() {
        let owner = owner(OwnerState {
            unapplied_in_doubt: vec![0],
            foreign_before: vec![(1, Bytes::from("theirs"))],
            ..OwnerState::default()
        });
        let answer = write_mine(&serve(owner.clone()).await).await;
        assert_eq!(payloads(&owner), ["theirs"]);
        assert_eq!(
            conflict_of(&answer),
            Some((0, 1, false)),
            "the predecessor's record was taken for this writer's: {answer:?}"
        );
    }

    /// A batch in doubt that landed, written through an endpoint that
    /// serves no reads (an ingest node of a cluster): the writer cannot
    /// read it back, and says it may be in the log. Given the read
    /// endpoints, it reads it back and acknowledges it.
    #[tokio::test]
    async fn a_batch_in_doubt_that_cannot_be_read_back_fails_as_in_doubt() {
        let state = || OwnerState {
            in_doubt: vec![0],
            ..OwnerState::default()
        };
        let owner_a = owner(state());
        let client = Client::new(serve_parts(owner_a.clone(), true, false).await);
        let answer = write_mine(&client).await;
        assert_eq!(payloads(&owner_a), ["mine"]);
        assert_eq!(conflict_of(&answer), Some((0, 1, true)), "{answer:?}");

        let owner_b = owner(state());
        let writes = serve_parts(owner_b.clone(), true, false).await;
        let reads = serve_parts(owner_b.clone(), false, true).await;
        let client = Client::new(writes).with_read_endpoints(reads);
        let writer = client.writer("ns/log", small_batches());
        assert_eq!(writer.write(Record::new("mine")).await.unwrap(), 0);
        writer.close().await.unwrap();
        assert_eq!(payloads(&owner_b), ["mine"]);
    }

    #[tokio::test]
    async fn a_stale_start_offset_is_corrected() {
        let owner = owner(OwnerState {
            log: vec![Bytes::from("a"), Bytes::from("b")],
            stale_next_offset: Some(0),
            ..OwnerState::default()
        });
        let client = serve(owner.clone()).await;
        let writer = client.writer("ns/log", small_batches());
        assert_eq!(writer.write(Record::new("c")).await.unwrap(), 2);
        assert_eq!(writer.write(Record::new("d")).await.unwrap(), 3);
        writer.close().await.unwrap();
        assert_eq!(payloads(&owner), ["a", "b", "c", "d"]);
    }

    #[tokio::test]
    async fn another_writer_fails_the_writer_and_everything_after() {
        let owner = owner(OwnerState::default());
        let client = serve(owner.clone()).await;
        let writer = client.writer("ns/log", small_batches());
        assert_eq!(writer.write(Record::new("mine")).await.unwrap(), 0);
        owner.state.lock().unwrap().log.push(Bytes::from("theirs"));
        let err = writer.write(Record::new("lost")).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Conflict {
                    expected: 1,
                    actual: 2,
                    in_doubt: false,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "log ns/log is at offset 2, not at 1 where this writer's appends left it; \
             another writer appended to it"
        );
        assert!(matches!(
            writer.write(Record::new("later")).await,
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(writer.flush().await, Err(Error::Conflict { .. })));
        assert!(writer.close().await.is_err());
        assert_eq!(payloads(&owner), ["mine", "theirs"]);
    }

    #[tokio::test]
    async fn an_oversize_record_fails_alone_and_at_once() {
        let client = Client::new("http://127.0.0.1:1");
        let writer = client.writer("ns/log", WriterOptions::default());
        let big = Record::new(vec![0u8; 2 * 1024 * 1024]);
        assert!(matches!(writer.write(big).await, Err(Error::Record(_))));
        // Nothing was queued: the flush is done at once.
        writer.flush().await.unwrap();
        writer.close().await.unwrap();
    }
}

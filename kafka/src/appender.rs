//! Appends to one partition, in the order the listener took them in.
//!
//! A connection reads its next Produce request while earlier ones wait for
//! their quorum fsync (conn.rs), so several requests of one connection can
//! carry batches for the same partition at once. Their order must survive:
//! each partition log has one appender task, fed by a queue in the order
//! the connections handed batches over ([`Appenders::submit`], called
//! while a request is taken in, before the next request is read). The task
//! has one append in flight at a time; the plain (non-idempotent) batches
//! that queued meanwhile go together as the next append, in queue order,
//! within the service's append limits. An idempotent batch goes alone,
//! through the producer table (idempotence.rs), after every batch queued
//! before it was answered: so its sequence check sees its predecessors.
//!
//! A plain append goes to the node's ingest service in process when the
//! node has one ([`crate::Ingest`]), through the node's gRPC address
//! otherwise or when that attempt fails retryably ([`append`]); an
//! idempotent one always through the client, whose retries its conditional
//! append relies on. An idempotent batch holds its partition's appender
//! while its producer table is read and checked: plain batches of the same
//! partition wait behind it (docs/kafka.md, "Idempotent producers").
//!
//! What a crash does: a batch is answered only with its append's result.
//! If the node dies with appends queued or in flight, their requests get no
//! answer (the connection is gone), and the producer retries them: as with
//! one append per batch, a plain batch whose append was durable is written
//! again (Kafka's at-least-once without idempotence), and an idempotent one
//! is found in the log by its header and answered as a duplicate.
//!
//! A task with nothing queued for [`IDLE`] ends; the next batch for its
//! partition starts another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distributedlog::{ErrorKind, Record};
use dlog_wire::limits::Limits;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::Gateway;
use crate::codec::Producer;
use crate::errors::{Refusal, refusal};
use crate::idempotence;

/// An appender with nothing queued for this long ends.
const IDLE: Duration = Duration::from_secs(30);
/// An in-process append not done in this long is made again through the
/// client (as the SDK's per-attempt timeout does).
const INGEST_ATTEMPT: Duration = Duration::from_secs(5);

/// Where a batch went: its first offset, and the owner's time on it.
pub(crate) type Placed = Result<(u64, i64), Refusal>;

/// One Produce partition's batch, waiting for its append.
struct Submission {
    records: Vec<Record>,
    /// The records' size ([`Record::size`] summed).
    bytes: usize,
    /// Set for an idempotent producer's batch.
    producer: Option<Producer>,
    placed: oneshot::Sender<Placed>,
}

/// The appender tasks of the partitions this listener writes.
#[derive(Debug, Default)]
pub(crate) struct Appenders {
    /// Each partition log's queue. A sender is used only under this lock,
    /// and a task leaves only under it with its queue empty, so no batch is
    /// left in the queue of a task that ended.
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Submission>>>,
}

impl Appenders {
    /// Queues `records` (of `bytes` in all, [`Record::size`] summed) for
    /// `log` behind every batch submitted for it before; the answer comes
    /// when the append is done (module doc).
    pub(crate) fn submit(
        gateway: &Arc<Gateway>,
        log: &str,
        records: Vec<Record>,
        bytes: usize,
        producer: Option<Producer>,
    ) -> oneshot::Receiver<Placed> {
        let (placed, answer) = oneshot::channel();
        let mut submission = Submission {
            records,
            bytes,
            producer,
            placed,
        };
        let mut queues = gateway.appenders.lock_queues();
        if let Some(queue) = queues.get(log) {
            match queue.send(submission) {
                Ok(()) => return answer,
                // Cannot happen: a task drops its queue only after leaving
                // the map. Start a new one rather than lose the batch.
                Err(mpsc::error::SendError(back)) => submission = back,
            }
        }
        let (queue, receiver) = mpsc::unbounded_channel();
        queue
            .send(submission)
            .unwrap_or_else(|_| unreachable!("the receiver is held here"));
        queues.insert(log.to_owned(), queue);
        let span = tracing::debug_span!("kafka_appender", log);
        tokio::spawn(run(gateway.clone(), log.to_owned(), receiver).instrument(span));
        answer
    }

    fn lock_queues(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Submission>>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends `log`'s task if nothing is queued for it: `None`. Otherwise the
    /// next batch, which the task goes on with.
    fn leave(
        &self,
        log: &str,
        queue: &mut mpsc::UnboundedReceiver<Submission>,
    ) -> Option<Submission> {
        let mut queues = self.lock_queues();
        match queue.try_recv() {
            Ok(next) => Some(next),
            Err(_) => {
                queues.remove(log);
                None
            }
        }
    }
}

/// The appender task of `log` (module doc).
async fn run(gateway: Arc<Gateway>, log: String, mut queue: mpsc::UnboundedReceiver<Submission>) {
    let limits = Limits::DEFAULT;
    let mut held: Option<Submission> = None;
    loop {
        let first = match held.take() {
            Some(next) => next,
            None => match tokio::time::timeout(IDLE, queue.recv()).await {
                Ok(Some(next)) => next,
                Ok(None) => return,
                Err(_) => match gateway.appenders.leave(&log, &mut queue) {
                    Some(next) => next,
                    None => return,
                },
            },
        };
        if let Some(producer) = first.producer {
            let placed = idempotence::append(&gateway, &log, producer, first.records)
                .await
                .map(|written| (written.first_offset, written.timestamp_ms));
            // A requester that went away (its connection closed) needs no
            // answer.
            let _ = first.placed.send(placed);
            continue;
        }
        let mut count = first.records.len();
        let mut bytes = first.bytes;
        let mut together = vec![first];
        while let Ok(next) = queue.try_recv() {
            if next.producer.is_some()
                || count + next.records.len() > limits.max_append_records
                || bytes + next.bytes > limits.max_append_bytes
            {
                held = Some(next);
                break;
            }
            count += next.records.len();
            bytes += next.bytes;
            together.push(next);
        }
        append_together(&gateway, &log, together, count).await;
    }
}

/// Appends the batches of `together` (`count` records) as one append, in
/// order, and answers each with where its records went. When that append
/// is refused as invalid (a payload that does not match the namespace's
/// payload schema) and no attempt of it was in doubt, nothing of it was
/// appended: each batch then goes alone, in order, so that one producer's
/// bad record fails its own batch only. After an attempt in doubt (which
/// may have appended every batch before the namespace's schema changed
/// and refused the next attempt) every batch gets the refusal instead:
/// going alone could append a batch twice and answer it as once.
async fn append_together(gateway: &Gateway, log: &str, together: Vec<Submission>, count: usize) {
    let mut records = Vec::with_capacity(count);
    let mut answers = Vec::with_capacity(together.len());
    for mut submission in together {
        answers.push((submission.records.len(), submission.placed));
        records.append(&mut submission.records);
    }
    tracing::trace!(batches = answers.len(), records = count, "kafka: append");
    let one_by_one = (answers.len() > 1).then(|| records.clone());
    let (appended, in_doubt) = append(gateway, log, records).await;
    match appended {
        Ok(appended) => {
            let mut first_offset = appended.first_offset;
            for (len, placed) in answers {
                let _ = placed.send(Ok((first_offset, appended.timestamp_ms)));
                first_offset += len as u64;
            }
        }
        Err(e) if e.kind() == ErrorKind::InvalidArgument && !in_doubt && one_by_one.is_some() => {
            tracing::debug!(error = %e, "kafka: append refused as invalid; batch by batch");
            let mut records = one_by_one.unwrap_or_default().into_iter();
            for (len, placed) in answers {
                let batch: Vec<Record> = records.by_ref().take(len).collect();
                let (appended, _) = append(gateway, log, batch).await;
                let _ = placed.send(
                    appended
                        .map(|a| (a.first_offset, a.timestamp_ms))
                        .map_err(|e| refusal(&e)),
                );
            }
        }
        Err(e) => {
            let why = refusal(&e);
            for (_, placed) in answers {
                let _ = placed.send(Err(why.clone()));
            }
        }
    }
}

/// Appends `records` to `log`: in process when the node has an ingest
/// service, falling back to the client (which follows an owner elsewhere,
/// waits out backpressure and retries, as the SDK does) when that attempt
/// failed with a retryable failure or took over [`INGEST_ATTEMPT`]. A
/// failure that applied nothing (another owner, backpressure) is retried
/// as before; one in doubt (a timeout, a quorum lost mid-append) may write
/// the records twice, as the SDK's own retry of a plain append does. Order
/// holds either way: the retry is queued at the owner after the attempt.
/// Also answers whether an attempt before the last may have been applied:
/// an in-process attempt that timed out or failed `UNAVAILABLE` (which
/// may come after the records were sent to cache nodes), or one the
/// client made and marked so ([`distributedlog::ClientError::earlier_attempt_in_doubt`]).
async fn append(
    gateway: &Gateway,
    log: &str,
    records: Vec<Record>,
) -> (
    Result<distributedlog::Appended, distributedlog::ClientError>,
    bool,
) {
    let mut in_doubt = false;
    if let Some(ingest) = &gateway.ingest {
        let attempt = tokio::time::timeout(INGEST_ATTEMPT, ingest.append(log, records.clone()));
        match attempt.await {
            Ok(Ok(appended)) => return (Ok(appended), false),
            Ok(Err(e))
                if !matches!(
                    e.kind(),
                    ErrorKind::Unavailable | ErrorKind::ResourceExhausted
                ) =>
            {
                return (Err(e), false);
            }
            Ok(Err(e)) => {
                // A redirect to the owner elsewhere applied nothing.
                in_doubt = e.kind() == ErrorKind::Unavailable && !is_redirect(&e);
                tracing::debug!(error = %e, "kafka: in-process append failed; through the client")
            }
            Err(_) => {
                in_doubt = true;
                tracing::debug!("kafka: in-process append timed out; through the client")
            }
        }
    }
    let appended = gateway.client.append(log, records, None).await;
    let in_doubt = in_doubt
        || appended
            .as_ref()
            .is_err_and(|e| e.earlier_attempt_in_doubt());
    (appended, in_doubt)
}

/// Whether a failure is a redirect to the log's owner on another node
/// (which refused the append before taking it).
fn is_redirect(e: &distributedlog::ClientError) -> bool {
    matches!(e, distributedlog::ClientError::Status(status)
        if status.metadata().contains_key(dlog_wire::metadata::OWNER))
}

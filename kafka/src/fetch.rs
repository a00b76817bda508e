//! `Fetch`: records from any offset, with a long poll.
//!
//! Each connection keeps an open, following dlog read per partition it
//! fetches ([`Readers`]); a fetch at the offset where the last one stopped
//! continues that read, so a consumer streams a log through one read
//! instead of opening one per fetch. When nothing is ready the fetch waits,
//! up to `max_wait_ms`, for the first record of any of its partitions: the
//! reader delivers records as the LAC advances, so a waiting consumer is
//! woken by the append itself. The high watermark is the log's next offset
//! (CheckTail), never below the records returned.

use std::collections::HashMap;
use std::time::Duration;

use distributedlog::{LogReader, ReadOptions, Start, StoredRecord, TailInfo};
use futures::StreamExt;
use futures::future::{FutureExt, select_all};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseKind};
use tokio::time::Instant;

use crate::conn::Outcome;
use crate::errors::Refusal;
use crate::in_order;
use crate::{Gateway, codec, topics};

/// Longest wait a fetch may ask for.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Most reads one connection keeps open. The reader role admits a bounded
/// number of reads per client address, and every Kafka connection of the
/// node reads as the node itself: a connection may not take them all.
const MAX_OPEN_READS: usize = 64;
/// Most bytes of records in one fetch response.
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// The open reads of one connection, by log.
#[derive(Debug, Default)]
pub(crate) struct Readers {
    open: HashMap<String, OpenRead>,
}

#[derive(Debug)]
struct OpenRead {
    /// The offset of the next record the read yields.
    next: u64,
    /// The log (incarnation) it reads.
    log_id: u64,
    reader: LogReader,
}

/// One partition of the fetch, as it is worked on.
struct Want {
    log: String,
    offset: u64,
    max_bytes: usize,
    tail: Result<TailInfo, Refusal>,
    records: Vec<StoredRecord>,
    bytes: usize,
    /// The read ended (end of stream) or failed: nothing more this fetch.
    done: bool,
    /// Why it failed: the error, if no record came before it.
    failed: Option<Refusal>,
}

impl Want {
    fn readable(&self) -> bool {
        self.tail.is_ok() && !self.done
    }
}

pub(crate) async fn fetch(
    gateway: &Gateway,
    readers: &mut Readers,
    request: FetchRequest,
    version: i16,
) -> Outcome {
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    // Whatever the client allows, one response holds at most
    // MAX_RESPONSE_BYTES (Kafka's `fetch.max.bytes` default is 50 MiB).
    let mut budget = if request.max_bytes <= 0 {
        MAX_RESPONSE_BYTES
    } else {
        (request.max_bytes as usize).min(MAX_RESPONSE_BYTES)
    };
    let namespace = &gateway.options.namespace;

    // Every asked partition, with its tail (or why it cannot be read).
    let mut shape: Vec<(kafka_protocol::messages::TopicName, Vec<i32>)> = Vec::new();
    // Each asked partition, refused here or to be measured (CheckTail).
    let mut asked_parts: Vec<(String, i64, i32, Result<(), Refusal>)> = Vec::new();
    let mut asked = std::collections::HashSet::new();
    for topic in request.topics {
        let mut indexes = Vec::new();
        for partition in topic.partitions {
            indexes.push(partition.partition);
            let log = topics::log_name(namespace, &topic.topic, partition.partition);
            // One partition twice in a fetch: only the first is read.
            let first_time = asked.insert(log.clone());
            let valid =
                topics::check_topic(&topic.topic).is_ok() && partition.partition >= 0 && first_time;
            let checked = if !valid {
                Err(Refusal::new(
                    ResponseError::UnknownTopicOrPartition,
                    "no such topic or partition",
                ))
            } else if partition.fetch_offset < 0 {
                Err(Refusal::new(
                    ResponseError::OffsetOutOfRange,
                    format!("offset {} is negative", partition.fetch_offset),
                ))
            } else {
                Ok(())
            };
            asked_parts.push((
                log,
                partition.fetch_offset,
                partition.partition_max_bytes,
                checked,
            ));
        }
        shape.push((topic.topic, indexes));
    }
    let tails = in_order(asked_parts.iter().map(|(log, _, _, checked)| async move {
        match checked {
            Ok(()) => gateway
                .client
                .check_tail(log)
                .await
                .map_err(|e| fetch_refusal(&e)),
            Err(refusal) => Err(refusal.clone()),
        }
    }))
    .await;
    let mut wants: Vec<Want> = asked_parts
        .into_iter()
        .zip(tails)
        .map(|((log, offset, max_bytes, _), tail)| {
            let offset = offset.max(0) as u64;
            // A tail measured on replicas that lag the read's own may sit
            // below where this connection's read already is: that read's
            // position counts, not an out-of-range answer (which would make
            // the consumer reset and skip or re-read records).
            let reading_there = |tail: &TailInfo| {
                readers
                    .open
                    .get(&log)
                    .is_some_and(|read| read.next == offset && read.log_id == tail.log_id)
            };
            let tail = tail.and_then(|tail| {
                let beyond = offset > tail.next_offset && !reading_there(&tail);
                if offset < tail.first_offset || beyond {
                    Err(Refusal::new(
                        ResponseError::OffsetOutOfRange,
                        format!(
                            "offset {offset} is outside {}..={}",
                            tail.first_offset, tail.next_offset
                        ),
                    ))
                } else {
                    Ok(tail)
                }
            });
            Want {
                log,
                offset,
                max_bytes: max_bytes.max(0) as usize,
                tail,
                records: Vec::new(),
                bytes: 0,
                done: false,
                failed: None,
            }
        })
        .collect();
    for want in &wants {
        match &want.tail {
            Ok(tail) => readers.open_at(gateway, &want.log, want.offset, tail.log_id, &asked),
            // Gone, trimmed or unreachable: its read is of no use.
            Err(_) => {
                readers.open.remove(&want.log);
            }
        }
    }

    // Take what is ready; wait for the first record while none is.
    loop {
        let mut total = 0;
        for want in wants.iter_mut().filter(|w| w.readable()) {
            drain_ready(readers, want, &mut budget);
            total += want.bytes;
        }
        // min_bytes 0: answer at once with what is ready.
        if min_bytes == 0 || total >= min_bytes || Instant::now() >= deadline || budget == 0 {
            break;
        }
        let waiting: Vec<usize> = (0..wants.len())
            .filter(|&i| wants[i].readable() && wants[i].bytes < wants[i].max_bytes.max(1))
            .collect();
        if waiting.is_empty() {
            break;
        }
        let woke = {
            let mut futures = Vec::new();
            let mut logs = Vec::new();
            for (log, read) in readers.open.iter_mut() {
                if let Some(&i) = waiting.iter().find(|&&i| &wants[i].log == log) {
                    futures.push(read.reader.next());
                    logs.push(i);
                }
            }
            if futures.is_empty() {
                break;
            }
            match tokio::time::timeout_at(deadline, select_all(futures)).await {
                Ok((item, index, _)) => Some((logs[index], item)),
                Err(_) => None,
            }
        };
        let Some((i, item)) = woke else { break };
        take(readers, &mut wants[i], item, &mut budget);
    }

    // The high watermark: the tail, never below what is returned.
    let mut partitions = wants.into_iter().map(|want| {
        let mut data = PartitionData::default();
        match want.tail {
            Ok(tail) => {
                let returned = want.records.last().map_or(0, |r| r.offset + 1);
                let high = tail.next_offset.max(returned) as i64;
                data.high_watermark = high;
                data.last_stable_offset = high;
                // The field exists from v5 on.
                if version >= 5 {
                    data.log_start_offset = tail.first_offset as i64;
                }
                if let (true, Some(refusal)) = (want.records.is_empty(), want.failed) {
                    data.error_code = refusal.code.code();
                }
                match codec::fetched_batches(&want.records) {
                    Ok(batches) => data.records = Some(batches),
                    Err(e) => {
                        tracing::warn!(log = %want.log, error = %e, "kafka: a fetch did not encode");
                        data.error_code = ResponseError::KafkaStorageError.code();
                        data.records = Some(bytes::Bytes::new());
                    }
                }
            }
            Err(refusal) => {
                data.error_code = refusal.code.code();
                data.high_watermark = -1;
                data.last_stable_offset = -1;
            }
        }
        data
    });
    let mut response = FetchResponse::default();
    for (topic, indexes) in shape {
        let mut answer = FetchableTopicResponse::default();
        answer.topic = topic;
        for index in indexes {
            let mut data = partitions.next().expect("one answer per asked partition");
            data.partition_index = index;
            answer.partitions.push(data);
        }
        response.responses.push(answer);
    }
    Outcome::Respond(Box::new(ResponseKind::Fetch(response)))
}

impl Readers {
    /// Makes sure an open read of `log` yields `offset` next.
    fn open_at(
        &mut self,
        gateway: &Gateway,
        log: &str,
        offset: u64,
        log_id: u64,
        asked: &std::collections::HashSet<String>,
    ) {
        if self
            .open
            .get(log)
            .is_some_and(|read| read.next == offset && read.log_id == log_id)
        {
            return;
        }
        if self.open.len() >= MAX_OPEN_READS && !self.open.contains_key(log) {
            // A client fetching many partitions on one connection: let go of
            // a read this fetch does not ask for; if all are asked for, the
            // partition is not read this time (its turn comes when others
            // are let go).
            let Some(victim) = self.open.keys().find(|l| !asked.contains(*l)).cloned() else {
                return;
            };
            self.open.remove(&victim);
        }
        let options = ReadOptions {
            limit: None,
            follow: true,
            log_id: Some(log_id),
        };
        let reader = gateway.client.reader(log, Start::Offset(offset), options);
        self.open.insert(
            log.to_owned(),
            OpenRead {
                next: offset,
                log_id,
                reader,
            },
        );
    }
}

/// Moves the records `want`'s read has ready into `want`, within its
/// partition limit and the fetch's budget (at least one record per fetch,
/// as Kafka returns an oversized first batch rather than none).
fn drain_ready(readers: &mut Readers, want: &mut Want, budget: &mut usize) {
    while want.readable() && want.bytes < want.max_bytes.max(1) && *budget > 0 {
        let Some(read) = readers.open.get_mut(&want.log) else {
            return;
        };
        let Some(item) = read.reader.next().now_or_never() else {
            return;
        };
        take(readers, want, item, budget);
    }
}

/// Takes one item of `want`'s read.
fn take(
    readers: &mut Readers,
    want: &mut Want,
    item: Option<Result<StoredRecord, distributedlog::ClientError>>,
    budget: &mut usize,
) {
    match item {
        Some(Ok(record)) => {
            let size = codec::fetched_size(&record);
            want.bytes += size;
            *budget = budget.saturating_sub(size);
            if let Some(read) = readers.open.get_mut(&want.log) {
                read.next = record.offset + 1;
            }
            want.records.push(record);
        }
        Some(Err(e)) => {
            readers.open.remove(&want.log);
            want.done = true;
            want.failed = Some(fetch_refusal(&e));
        }
        None => {
            // The log was marked end-of-stream and fully read.
            readers.open.remove(&want.log);
            want.done = true;
        }
    }
}

/// The Kafka error for a failed read, among the codes consumers expect of
/// a fetch; every transient failure is one they retry.
fn fetch_refusal(error: &distributedlog::ClientError) -> Refusal {
    use distributedlog::ErrorKind;
    let code = match error.kind() {
        ErrorKind::NotFound => ResponseError::UnknownTopicOrPartition,
        ErrorKind::OutOfRange => ResponseError::OffsetOutOfRange,
        ErrorKind::Unavailable | ErrorKind::ResourceExhausted => ResponseError::NotLeaderOrFollower,
        ErrorKind::Unauthenticated | ErrorKind::PermissionDenied => {
            ResponseError::TopicAuthorizationFailed
        }
        _ => ResponseError::KafkaStorageError,
    };
    Refusal::new(code, error.to_string())
}

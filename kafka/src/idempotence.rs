//! Idempotent producers: `InitProducerId`, and the check that writes each
//! idempotent batch once, in sequence order, across retries, reconnects
//! and owner failovers.
//!
//! The state is kept in the log itself, as Kafka keeps it in its batches:
//! the first record of every idempotent batch carries the header
//! [`PRODUCER_HEADER`] (`PID:EPOCH:FIRST_SEQUENCE:COUNT:LOG_ID`; a header
//! naming another log id was copied from another log and is ignored). A
//! partition's producer table — the last five batches of each producer — is
//! folded from those headers: at first use, from the last
//! [`MAX_FOLD_RECORDS`] records younger than [`STATE_WINDOW`] (a producer
//! whose last batch is older or further back is treated as new, as Kafka
//! treats an expired producer), then from each record appended since.
//!
//! The check and the append are one step: the batch is appended with
//! `expected_offset` = the end of the log as far as the table was folded.
//! Whatever else was appended meanwhile — by another client, another node's
//! listener, an earlier attempt of this very batch whose answer was lost
//! when an owner died — makes the append fail with the log's end, the table
//! is folded up to it, and the batch is checked again: a batch already in
//! the log is answered with its first offset (Kafka's duplicate answer) and
//! not written again. Recovery settles every entry of a dead owner before
//! the next owner takes appends, so nothing of an old attempt can land
//! after the check.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use distributedlog::{AppendIf, ErrorKind, ReadOptions, Record, Start, StoredRecord};
use futures::TryStreamExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, ResponseKind,
};

use crate::Gateway;
use crate::codec::{PRODUCER_HEADER, Producer};
use crate::conn::Outcome;
use crate::errors::{Refusal, refusal};

/// How far back the producer table is read when a partition is first used.
pub(crate) const STATE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Batches remembered per producer (Kafka's `max.in.flight` bound).
const REMEMBERED: usize = 5;
/// Folds and re-checks of one batch before giving up with a retryable code.
const MAX_ATTEMPTS: usize = 32;
/// Most records read back when a partition's table is first read.
pub(crate) const MAX_FOLD_RECORDS: u64 = 100_000;
/// How long records known acknowledged may take to become readable.
const FOLD_TIMEOUT: Duration = Duration::from_secs(10);

/// Producer tables, one per partition log this node wrote idempotently.
#[derive(Debug, Default)]
pub(crate) struct Producers {
    partitions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Table>>>>,
}

#[derive(Debug, Default)]
struct Table {
    /// The log offset up to which the table is folded; `None`: not read yet.
    folded_to: Option<u64>,
    log_id: u64,
    producers: HashMap<i64, ProducerState>,
}

#[derive(Debug)]
struct ProducerState {
    epoch: i16,
    batches: VecDeque<Batch>,
}

#[derive(Debug, Clone, Copy)]
struct Batch {
    first_sequence: i32,
    last_sequence: i32,
    first_offset: u64,
    timestamp_ms: i64,
}

/// What the table says of a batch.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Append,
    /// Already written at this first offset, at this time.
    Duplicate(u64, i64),
    Refuse(ResponseError),
}

/// Where an appended batch went.
#[derive(Debug)]
pub(crate) struct Written {
    pub first_offset: u64,
    pub timestamp_ms: i64,
}

fn last_sequence(first: i32, count: usize) -> i32 {
    // Sequences wrap from i32::MAX to 0, as in Kafka.
    ((first as i64 + count as i64 - 1) % (i32::MAX as i64 + 1)) as i32
}

fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX { 0 } else { last + 1 }
}

impl Table {
    fn verdict(&self, producer: &Producer, count: usize) -> Verdict {
        let Some(state) = self.producers.get(&producer.id) else {
            // Unknown (new, or older than the window): any sequence starts it.
            return Verdict::Append;
        };
        if producer.epoch < state.epoch {
            return Verdict::Refuse(ResponseError::InvalidProducerEpoch);
        }
        if producer.epoch > state.epoch {
            return if producer.first_sequence == 0 {
                Verdict::Append
            } else {
                Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
            };
        }
        let last = last_sequence(producer.first_sequence, count);
        if let Some(batch) = state
            .batches
            .iter()
            .find(|b| b.first_sequence == producer.first_sequence && b.last_sequence == last)
        {
            return Verdict::Duplicate(batch.first_offset, batch.timestamp_ms);
        }
        match state.batches.back() {
            Some(newest) if producer.first_sequence != next_sequence(newest.last_sequence) => {
                Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
            }
            _ => Verdict::Append,
        }
    }

    fn remember(&mut self, producer: &Producer, batch: Batch) {
        let state = self
            .producers
            .entry(producer.id)
            .or_insert_with(|| ProducerState {
                epoch: producer.epoch,
                batches: VecDeque::new(),
            });
        if producer.epoch != state.epoch {
            state.epoch = producer.epoch;
            state.batches.clear();
        }
        // A record read twice (a fold cut short and redone) counts once.
        if state
            .batches
            .back()
            .is_some_and(|newest| newest.first_offset >= batch.first_offset)
        {
            return;
        }
        state.batches.push_back(batch);
        while state.batches.len() > REMEMBERED {
            state.batches.pop_front();
        }
    }

    /// Forgets producers whose newest batch is older than [`STATE_WINDOW`]
    /// at `now_ms` (as the first read of a table never learns them).
    fn forget_expired(&mut self, now_ms: i64) {
        let since = now_ms - STATE_WINDOW.as_millis() as i64;
        self.producers.retain(|_, state| {
            state
                .batches
                .back()
                .is_some_and(|b| b.timestamp_ms >= since)
        });
    }

    /// Folds one stored record (only those with the header count; of a
    /// record with several, which only a gRPC writer can make, the first).
    fn fold(&mut self, stored: &StoredRecord) {
        let Some(value) = stored.record.headers.get(PRODUCER_HEADER) else {
            return;
        };
        let Some((producer, count, log_id)) = parse_header(value) else {
            return;
        };
        if log_id != self.log_id {
            return; // copied from another log
        }
        let batch = Batch {
            first_sequence: producer.first_sequence,
            last_sequence: last_sequence(producer.first_sequence, count),
            first_offset: stored.offset,
            timestamp_ms: stored.timestamp_ms,
        };
        self.remember(&producer, batch);
    }
}

fn header_value(producer: &Producer, count: usize, log_id: u64) -> Bytes {
    Bytes::from(format!(
        "{}:{}:{}:{count}:{log_id}",
        producer.id, producer.epoch, producer.first_sequence
    ))
}

/// `(producer, count, log id)` of a header value.
fn parse_header(value: &[u8]) -> Option<(Producer, usize, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split(':');
    let producer = Producer {
        id: parts.next()?.parse().ok()?,
        epoch: parts.next()?.parse().ok()?,
        first_sequence: parts.next()?.parse().ok()?,
    };
    let count = parts.next()?.parse().ok()?;
    let log_id = parts.next()?.parse().ok()?;
    (parts.next().is_none() && count > 0).then_some((producer, count, log_id))
}

impl Producers {
    fn table(&self, log: &str) -> Arc<tokio::sync::Mutex<Table>> {
        let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        partitions.entry(log.to_owned()).or_default().clone()
    }
}

/// Appends an idempotent batch to `log` once (module doc).
pub(crate) async fn append(
    gateway: &Gateway,
    log: &str,
    producer: Producer,
    records: Vec<Record>,
) -> Result<Written, Refusal> {
    let count = records.len();
    let table = gateway.producers.table(log);
    let mut table = table.lock().await;
    if table.folded_to.is_none() {
        first_fold(gateway, log, &mut table).await?;
    }
    let mut caught_up = false;
    for attempt in 0..MAX_ATTEMPTS {
        match table.verdict(&producer, count) {
            // The table may be behind: the producer may have written
            // through another node since. Read the log up to its tail
            // before refusing.
            Verdict::Refuse(_) if !caught_up => {
                caught_up = true;
                let tail = gateway
                    .client
                    .check_tail(log)
                    .await
                    .map_err(|e| refusal(&e))?;
                if let Some(folded) = table.folded_to
                    && tail.next_offset > folded
                {
                    fold_range(gateway, log, &mut table, folded, tail.next_offset).await?;
                }
                continue;
            }
            Verdict::Refuse(code) => {
                return Err(Refusal::new(
                    code,
                    format!(
                        "producer {} epoch {} sequence {}",
                        producer.id, producer.epoch, producer.first_sequence
                    ),
                ));
            }
            Verdict::Duplicate(first_offset, timestamp_ms) => {
                tracing::debug!(
                    log,
                    producer = producer.id,
                    first_offset,
                    "kafka: duplicate batch"
                );
                return Ok(Written {
                    first_offset,
                    timestamp_ms,
                });
            }
            Verdict::Append => {}
        }
        // The header names the log (incarnation) too: a copy of the record
        // in another log says nothing of that log's producers.
        let mut batch = records.clone();
        if let Some(first) = batch.first_mut() {
            let value = header_value(&producer, count, table.log_id);
            first.headers.push(PRODUCER_HEADER, value);
        }
        crate::produce::check_limits(&batch)?;
        let condition = AppendIf {
            next_offset: table.folded_to,
            log_id: Some(table.log_id),
        };
        match gateway.client.append_if(log, batch, condition).await {
            Ok(appended) => {
                let batch = Batch {
                    first_sequence: producer.first_sequence,
                    last_sequence: last_sequence(producer.first_sequence, count),
                    first_offset: appended.first_offset,
                    timestamp_ms: appended.timestamp_ms,
                };
                table.remember(&producer, batch);
                table.folded_to = Some(appended.last_offset + 1);
                table.forget_expired(appended.timestamp_ms);
                return Ok(Written {
                    first_offset: appended.first_offset,
                    timestamp_ms: appended.timestamp_ms,
                });
            }
            // Something else was appended first (perhaps an earlier attempt
            // of this batch, whose answer was lost): read it into the table
            // and check again.
            Err(e) if e.kind() == ErrorKind::FailedPrecondition && e.next_offset().is_some() => {
                let end = e.next_offset().unwrap_or_default();
                match table.folded_to {
                    Some(folded) if end > folded => {
                        fold_range(gateway, log, &mut table, folded, end).await?;
                    }
                    // The log ends before where the table was read to: it
                    // is not the log the table was read from.
                    _ => {
                        *table = Table::default();
                        first_fold(gateway, log, &mut table).await?;
                    }
                }
                // Others keep appending: stagger the next try a little.
                let pause = stagger_millis(attempt as u64 + 1);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            Err(e) => {
                if e.kind() == ErrorKind::NotFound {
                    // Deleted, perhaps re-created: read it afresh next time.
                    *table = Table::default();
                }
                return Err(refusal(&e));
            }
        }
    }
    Err(Refusal::new(
        ResponseError::NotLeaderOrFollower,
        "the partition kept changing under the batch: retry",
    ))
}

/// A pause of 0..=`max` ms, varied by the clock (no random crate needed
/// for a stagger).
fn stagger_millis(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    nanos % (max + 1)
}

/// Reads the table of a partition not read yet: the producers of its last
/// [`MAX_FOLD_RECORDS`] records that are younger than [`STATE_WINDOW`].
async fn first_fold(gateway: &Gateway, log: &str, table: &mut Table) -> Result<(), Refusal> {
    let tail = gateway
        .client
        .check_tail(log)
        .await
        .map_err(|e| refusal(&e))?;
    *table = Table {
        log_id: tail.log_id,
        ..Table::default()
    };
    let start = tail
        .next_offset
        .saturating_sub(MAX_FOLD_RECORDS)
        .max(tail.first_offset);
    let options = ReadOptions {
        limit: None,
        follow: false,
        log_id: Some(tail.log_id),
    };
    let since = now_ms() - STATE_WINDOW.as_millis() as i64;
    let mut reader = gateway.client.reader(log, Start::Offset(start), options);
    let mut end = tail.next_offset;
    while let Some(stored) = reader.try_next().await.map_err(|e| refusal(&e))? {
        if stored.timestamp_ms >= since {
            table.fold(&stored);
        }
        end = end.max(stored.offset + 1);
    }
    table.folded_to = Some(end);
    Ok(())
}

/// Reads the records `from..to` into the table; `to` is the log's
/// acknowledged end, which reads see once the LAC reaches it (waited for,
/// up to [`FOLD_TIMEOUT`]).
async fn fold_range(
    gateway: &Gateway,
    log: &str,
    table: &mut Table,
    from: u64,
    to: u64,
) -> Result<(), Refusal> {
    let options = ReadOptions {
        limit: Some(to - from),
        follow: true,
        log_id: Some(table.log_id),
    };
    let mut reader = gateway.client.reader(log, Start::Offset(from), options);
    let read = async {
        while let Some(stored) = reader.try_next().await.map_err(|e| refusal(&e))? {
            table.fold(&stored);
            table.folded_to = Some(stored.offset + 1);
        }
        Ok::<(), Refusal>(())
    };
    match tokio::time::timeout(FOLD_TIMEOUT, read).await {
        Ok(result) => result,
        Err(_) => Err(Refusal::new(
            ResponseError::NotLeaderOrFollower,
            format!("{log}: records up to {to} did not become readable in time: retry"),
        )),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn init_producer_id(request: InitProducerIdRequest, version: i16) -> Outcome {
    let mut response = InitProducerIdResponse::default();
    if request.transactional_id.is_some() {
        response.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        response.producer_id = ProducerId(-1);
        response.producer_epoch = -1;
    } else if version >= 3 && request.producer_id.0 >= 0 && request.producer_epoch >= 0 {
        // KIP-360: a producer that lost track of its sequences bumps its
        // epoch and starts again at sequence 0.
        response.producer_id = request.producer_id;
        response.producer_epoch = request.producer_epoch.checked_add(1).unwrap_or(0);
        if response.producer_epoch == 0 {
            response.producer_id = ProducerId(new_producer_id());
        }
    } else {
        response.producer_id = ProducerId(new_producer_id());
        response.producer_epoch = 0;
    }
    Outcome::Respond(Box::new(ResponseKind::InitProducerId(response)))
}

/// A producer id no other producer has, with overwhelming odds: 62 random
/// bits (ids are never coordinated between nodes).
fn new_producer_id() -> i64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 2) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn producer(epoch: i16, first_sequence: i32) -> Producer {
        Producer {
            id: 7,
            epoch,
            first_sequence,
        }
    }

    fn written(table: &mut Table, p: Producer, count: usize, first_offset: u64) {
        let batch = Batch {
            first_sequence: p.first_sequence,
            last_sequence: last_sequence(p.first_sequence, count),
            first_offset,
            timestamp_ms: 1,
        };
        table.remember(&p, batch);
    }

    #[test]
    fn batches_are_checked_as_kafka_checks_them() {
        let mut table = Table::default();
        assert_eq!(table.verdict(&producer(0, 0), 10), Verdict::Append);
        written(&mut table, producer(0, 0), 10, 100);
        written(&mut table, producer(0, 10), 5, 110);
        // The same batches again: duplicates, answered with their offsets.
        assert_eq!(
            table.verdict(&producer(0, 0), 10),
            Verdict::Duplicate(100, 1)
        );
        assert_eq!(
            table.verdict(&producer(0, 10), 5),
            Verdict::Duplicate(110, 1)
        );
        // The next one, and gaps or overlaps.
        assert_eq!(table.verdict(&producer(0, 15), 3), Verdict::Append);
        let out_of_order = Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber);
        assert_eq!(table.verdict(&producer(0, 16), 3), out_of_order);
        assert_eq!(table.verdict(&producer(0, 5), 3), out_of_order);
        // A new epoch starts at 0; an old epoch is fenced.
        assert_eq!(table.verdict(&producer(1, 0), 3), Verdict::Append);
        assert_eq!(table.verdict(&producer(1, 4), 3), out_of_order);
        written(&mut table, producer(1, 0), 3, 200);
        assert_eq!(
            table.verdict(&producer(0, 15), 3),
            Verdict::Refuse(ResponseError::InvalidProducerEpoch)
        );
    }

    #[test]
    fn the_table_folds_back_from_the_headers_in_the_log() {
        let mut table = Table::default();
        for (offset, first, count) in [(0u64, 0, 4usize), (4, 4, 2), (6, 6, 1)] {
            let mut record = Record::new("x");
            record
                .headers
                .push(PRODUCER_HEADER, header_value(&producer(2, first), count, 0));
            table.fold(&StoredRecord {
                offset,
                timestamp_ms: 5,
                record,
            });
            // The other records of a batch carry no header.
            table.fold(&StoredRecord {
                offset: offset + 1,
                timestamp_ms: 5,
                record: Record::new("y"),
            });
        }
        assert_eq!(table.verdict(&producer(2, 4), 2), Verdict::Duplicate(4, 5));
        assert_eq!(table.verdict(&producer(2, 7), 1), Verdict::Append);
        assert_eq!(parse_header(b"1:2:3:4"), None);
        assert_eq!(parse_header(b"1:2:3:0:0"), None);
        // A header copied from another log (another log id) is not folded.
        let mut copied = Record::new("x");
        copied
            .headers
            .push(PRODUCER_HEADER, header_value(&producer(2, 8), 1, 99));
        table.fold(&StoredRecord {
            offset: 20,
            timestamp_ms: 5,
            record: copied,
        });
        assert_eq!(
            table.verdict(&producer(2, 8), 1),
            Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
        );
        // Read twice, a batch counts once; old producers are forgotten.
        let again = Batch {
            first_sequence: 6,
            last_sequence: 6,
            first_offset: 6,
            timestamp_ms: 5,
        };
        table.remember(&producer(2, 6), again);
        assert_eq!(table.producers[&7].batches.len(), 3);
        table.forget_expired(5 + STATE_WINDOW.as_millis() as i64 + 1);
        assert!(table.producers.is_empty());
    }

    #[test]
    fn sequences_wrap_as_in_kafka() {
        assert_eq!(last_sequence(i32::MAX, 1), i32::MAX);
        assert_eq!(last_sequence(i32::MAX, 2), 0);
        assert_eq!(next_sequence(i32::MAX), 0);
        assert!(new_producer_id() >= 0);
    }
}

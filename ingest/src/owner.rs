//! The owner of one log: a task that sequences appends, batches them into
//! entries, replicates each entry to its segment's ensemble and answers
//! appends in offset order once an ack quorum made the entry durable.
//!
//! ```text
//!  appends ──▶ batch ──flush──▶ entry k (offsets assigned) ──▶ W replicas
//!                                                               │ acks
//!  answers ◀── in offset order ◀── LAC advances when A acked ◀──┘
//! ```
//!
//! Invariants:
//! * an append is answered only after every entry up to its own reached A
//!   replicas (the LAC passed it): acknowledged means durable on A nodes;
//! * offsets are dense and assigned in arrival order; timestamps never go
//!   back; txids never decrease;
//! * an `expected_offset` mismatch reports only the acknowledged end, never
//!   an offset counting records in flight; while appends are in flight at
//!   or after the expected offset it answers "retry later"
//!   (`RESOURCE_EXHAUSTED`) instead, so a writer retrying an append in doubt
//!   never takes records in flight for its own durable ones;
//! * every manifest write is fenced by this owner's log id and epoch; when one fails
//!   with a stale epoch the owner stops and fails what it holds (retryable).
//!
//! A segment rolls (seal at the LAC, open the next on a fresh ensemble) at
//! the namespace's size / record / age limits, on demand, and when a replica
//! fails; entries not yet acknowledged when it seals are re-sent, at the same
//! offsets, in the next segment. Crash points: dying with entries in flight
//! leaves the segment open; the next owner's recovery keeps exactly what
//! reached the cache nodes (see [`crate::recovery`]), so an unanswered append
//! may or may not be in the log, and an answered one always is.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dlog_meta::manifest::{
    Fence, MAX_ROLL_BYTES, Manifest, NamespaceConfig, NodeInfo, SealInfo, SegmentMeta,
};
use dlog_wire::codec::{EntryHeader, EntryRecord, encode_entry, framed_len};
use dlog_wire::ids::{EntryId, Offset};
use dlog_wire::names::LogName;
use dlog_wire::payload_schema::PayloadSchema;
use dlog_wire::proto::SegmentRef;
use dlog_wire::record::Append;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::pool::CachePool;
use crate::quota::{LogQuotas, NamespaceQuotas};
use crate::replicas::{EventSender, ReplicaEvent, Replicas};
use crate::series::{self, OwnerSeries};

/// Tuning of an owner.
#[derive(Debug, Clone)]
pub struct OwnerOptions {
    /// An entry is flushed once its appends cost this much
    /// ([`queued_cost`]), and holds no more unless one append alone does.
    pub max_entry_bytes: usize,
    /// Longest a record waits for more to batch with while entries are in
    /// flight (with none in flight, a batch goes at once).
    pub linger: Duration,
    /// Cost ([`queued_cost`]) of the appends not yet acknowledged, per log.
    pub max_in_flight_bytes: usize,
    /// How long a rolling segment waits for in-flight entries after a
    /// replica failed, before it seals at the LAC anyway.
    pub drain_timeout: Duration,
}

impl Default for OwnerOptions {
    fn default() -> Self {
        OwnerOptions {
            max_entry_bytes: 1024 * 1024,
            linger: Duration::from_millis(1),
            max_in_flight_bytes: 64 * 1024 * 1024,
            drain_timeout: Duration::from_secs(2),
        }
    }
}

/// Bytes appended but not yet answered on the whole node, shared by its
/// owners: past the limit appends get `RESOURCE_EXHAUSTED`.
#[derive(Debug)]
pub struct NodeBudget {
    used: AtomicUsize,
    limit: usize,
}

impl NodeBudget {
    pub fn new(limit: usize) -> NodeBudget {
        NodeBudget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    fn reserve(&self, bytes: usize) -> Result<()> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used > 0 && used + bytes > self.limit {
                return Err(Error::NodeBackpressure {
                    in_flight: used,
                    limit: self.limit,
                });
            }
            match self.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => used = actual,
            }
        }
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes in flight now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// What a successful append gets back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAck {
    pub first_offset: u64,
    pub last_offset: u64,
    pub timestamp_ms: i64,
}

/// Where a log stands, as its owner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerInfo {
    /// Offset of the next acknowledged record.
    pub next_offset: u64,
    pub epoch: u64,
    pub end_of_stream: Option<u64>,
}

/// Requests to an owner.
#[derive(Debug)]
pub enum Command {
    Append {
        append: Append,
        reply: oneshot::Sender<Result<AppendAck>>,
        /// The append session it came on, if any.
        session: Option<SessionGate>,
    },
    /// Seal the open segment (after what is in flight is acknowledged).
    Seal {
        reply: oneshot::Sender<Result<Option<SegmentMeta>>>,
    },
    /// Refuse appends from now on; answers with the end offset.
    EndOfStream {
        reply: oneshot::Sender<Result<u64>>,
    },
    Info {
        reply: oneshot::Sender<OwnerInfo>,
    },
    /// The log's settings changed in the manifest: read them again (the
    /// roll policy applies at once, replication from the next segment).
    Reconfigure,
    /// Hand the log over to `to` (balanced ownership): finish what is in
    /// flight, seal, stop; appends not yet sent, and those after, are
    /// redirected to `to` (not applied). The node releases the owner key
    /// once the owner stopped.
    HandOver {
        to: Box<NodeInfo>,
    },
}

/// Where a recovered log continues.
#[derive(Debug, Clone)]
pub struct Resume {
    pub log_id: u64,
    pub epoch: u64,
    pub next_offset: u64,
    pub last_timestamp_ms: i64,
    pub last_txid: Option<i64>,
    pub end_of_stream: Option<u64>,
    pub config: NamespaceConfig,
}

impl Resume {
    /// What every manifest write of this owner is fenced by.
    pub fn fence(&self) -> Fence {
        Fence {
            log_id: self.log_id,
            epoch: self.epoch,
        }
    }
}

/// One append session's gate: closed by the first append of the session
/// that fails, after which the session's later appends are refused
/// unapplied. Without it a refused append followed by an accepted one
/// would put the later one in the log alone, and a client that sends both
/// again would write it twice (ARCHITECTURE.md, "Append sessions").
///
/// It also pins, per log, the owner (epoch) the session's first append
/// there went to: an append that would go to another owner (the first was
/// replaced, perhaps still holding earlier appends of the session) closes
/// the gate instead.
#[derive(Debug, Clone, Default)]
pub struct SessionGate(Arc<GateState>);

#[derive(Debug, Default)]
struct GateState {
    closed: AtomicBool,
    owners: std::sync::Mutex<HashMap<LogName, u64>>,
}

impl SessionGate {
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    pub fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
    }

    /// Whether an append of the session to `log` may go to its owner at
    /// `epoch`: the first one to the log pins the epoch; another epoch
    /// later closes the gate.
    pub fn admits(&self, log: &LogName, epoch: u64) -> bool {
        if self.is_closed() {
            return false;
        }
        let mut owners = self.0.owners.lock().unwrap_or_else(|p| p.into_inner());
        let pinned = *owners.entry(log.clone()).or_insert(epoch);
        if pinned != epoch {
            self.close();
        }
        pinned == epoch
    }
}

/// Where an append's answer goes; a failure closes its session's gate, and
/// so does an answer never sent (the owner dropped it).
#[derive(Debug)]
struct AppendReply {
    tx: Option<oneshot::Sender<Result<AppendAck>>>,
    session: Option<SessionGate>,
}

impl AppendReply {
    fn new(tx: oneshot::Sender<Result<AppendAck>>, session: Option<SessionGate>) -> AppendReply {
        AppendReply {
            tx: Some(tx),
            session,
        }
    }

    fn send(mut self, result: Result<AppendAck>) {
        if result.is_err()
            && let Some(session) = &self.session
        {
            session.close();
        }
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(result);
        }
    }
}

impl Drop for AppendReply {
    fn drop(&mut self) {
        if self.tx.is_some()
            && let Some(session) = &self.session
        {
            session.close();
        }
    }
}

#[derive(Debug)]
struct Waiter {
    reply: AppendReply,
    ack: AppendAck,
    /// The append's [`queued_cost`].
    cost: usize,
    /// When the owner accepted it (the append latency's start).
    accepted: Instant,
}

impl Waiter {
    fn records(&self) -> usize {
        (self.ack.last_offset - self.ack.first_offset + 1) as usize
    }
}

/// What an append costs the in-flight budgets (the log's and the node's)
/// while it is queued or in flight: each record's bytes in the entry with
/// their framing, and the memory it is held in. A record with no bytes
/// costs that much too; counted by its bytes alone, any number of them
/// could be queued.
fn queued_cost(append: &Append) -> usize {
    let held = std::mem::size_of::<EntryRecord>();
    append.records.iter().map(|r| framed_len(r) + held).sum()
}

/// Counts a back-pressure refusal by its scope.
fn count_refusal(err: &Error) {
    let scope = match err {
        Error::Backpressure { .. } => "log",
        Error::NodeBackpressure { .. } => "node",
        Error::OverQuota { over, .. } => {
            metrics::counter!(series::QUOTA_REFUSALS, "scope" => over.scope, "unit" => over.unit)
                .increment(1);
            return;
        }
        _ => return,
    };
    metrics::counter!(series::BACKPRESSURE_REFUSALS, "scope" => scope).increment(1);
}

/// Records batched for the next entries, whole appends in order.
#[derive(Debug, Default)]
struct Batch {
    first_offset: u64,
    records: Vec<EntryRecord>,
    waiters: Vec<Waiter>,
    /// Sum of the waiters' costs.
    bytes: usize,
    since: Option<Instant>,
    /// The log's last txid before the batch's first record: where it goes
    /// back to when the whole batch is refused unsent.
    txid_before: Option<i64>,
}

impl Batch {
    /// Takes the oldest appends that fit in `max_bytes` (at least one) for
    /// one entry; the rest stays. A batch that grew while no segment took
    /// writes therefore goes as several entries, never as one too large
    /// for a cache node to take.
    fn take_entry(&mut self, max_bytes: usize) -> Batch {
        let (mut bytes, mut records, mut appends) = (0, 0, 0);
        for waiter in &self.waiters {
            if appends > 0 && bytes + waiter.cost > max_bytes {
                break;
            }
            bytes += waiter.cost;
            records += waiter.records();
            appends += 1;
        }
        if appends == self.waiters.len() {
            return std::mem::take(self);
        }
        let taken = Batch {
            first_offset: self.first_offset,
            records: self.records.drain(..records).collect(),
            waiters: self.waiters.drain(..appends).collect(),
            bytes,
            since: self.since,
            txid_before: self.txid_before,
        };
        if let Some(txid) = taken.records.iter().rev().find_map(|r| r.record.txid) {
            self.txid_before = Some(txid);
        }
        self.first_offset += records as u64;
        self.bytes -= bytes;
        taken
    }
}

#[derive(Debug)]
struct InFlight {
    entry_id: u64,
    first_offset: u64,
    records: Vec<EntryRecord>,
    waiters: Vec<Waiter>,
    encoded: Bytes,
    size: usize,
    acked_by: u64,
}

#[derive(Debug)]
struct OpenSegment {
    meta: SegmentMeta,
    replicas: Replicas,
    ack_quorum: usize,
    next_entry_id: u64,
    lac: Option<u64>,
    lac_sent: Option<u64>,
    stats: SealInfo,
    records: u64,
    opened: Instant,
    /// Why it must be sealed, and by when at the latest.
    rolling: Option<Instant>,
    seal_waiters: Vec<oneshot::Sender<Result<Option<SegmentMeta>>>>,
}

/// The owner task of one log.
pub struct Owner {
    log: LogName,
    resume: Resume,
    options: OwnerOptions,
    manifest: Manifest,
    pool: Arc<CachePool>,
    budget: Arc<NodeBudget>,
    namespace_quotas: Arc<NamespaceQuotas>,
    /// The quotas of `resume.config`.
    quotas: LogQuotas,
    series: OwnerSeries,
    events: EventSender,
    next_offset: u64,
    acked_offset: u64,
    last_timestamp_ms: i64,
    last_txid: Option<i64>,
    end_of_stream: Option<u64>,
    batch: Batch,
    in_flight: VecDeque<InFlight>,
    /// Entries of a sealed segment that were not acknowledged, to re-send.
    resend: VecDeque<InFlight>,
    in_flight_bytes: usize,
    segment: Option<OpenSegment>,
    open_retry_at: Option<Instant>,
    eos_waiters: Vec<oneshot::Sender<Result<u64>>>,
    /// The settings changed since `resume.config` was read.
    config_stale: bool,
    /// The payload schema of `resume.config`, for the handle's check.
    payload_schema: watch::Sender<Option<Arc<PayloadSchema>>>,
    /// Handing the log over to this node: what is refused from now on is
    /// redirected there.
    handing_to: Option<NodeInfo>,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("log", &self.log)
            .field("epoch", &self.resume.epoch)
            .field("next_offset", &self.next_offset)
            .finish()
    }
}

/// What every owner of a node shares.
#[derive(Debug, Clone)]
pub struct OwnerEnv {
    pub options: OwnerOptions,
    pub manifest: Manifest,
    pub pool: Arc<CachePool>,
    pub budget: Arc<NodeBudget>,
    pub namespace_quotas: Arc<NamespaceQuotas>,
}

/// A handle to a running owner.
#[derive(Debug, Clone)]
pub struct OwnerHandle {
    pub epoch: u64,
    /// The incarnation of the log this owner owns.
    pub log_id: u64,
    commands: mpsc::Sender<Command>,
    stopped: CancellationToken,
    /// The namespace's payload schema as the owner last read it.
    payload_schema: watch::Receiver<Option<Arc<PayloadSchema>>>,
}

/// The payload schema of `config` that appends are checked against.
fn schema_in_force(config: &NamespaceConfig) -> Option<Arc<PayloadSchema>> {
    config.active_payload_schema().cloned().map(Arc::new)
}

impl OwnerHandle {
    /// Sends a command; `None` if the owner stopped.
    pub async fn send(&self, command: Command) -> Option<()> {
        self.commands.send(command).await.ok()
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.is_cancelled() || self.commands.is_closed()
    }

    /// Waits until the owner task ended.
    pub async fn stopped(&self) {
        self.stopped.cancelled().await;
    }

    /// Checks every payload of `append` against the namespace's payload
    /// schema, if it has one, before the append reaches the owner: one
    /// record that does not match refuses the whole append, unapplied. On
    /// the caller's task, so parsing payloads never holds up the owner's
    /// acknowledgements; a namespace without a schema pays nothing.
    pub fn check_payloads(&self, append: &Append) -> Result<()> {
        let Some(schema) = self.payload_schema.borrow().clone() else {
            return Ok(());
        };
        for (index, record) in append.records.iter().enumerate() {
            let payload = record.nullable_payload().map(|p| &p[..]);
            schema
                .check(payload)
                .map_err(|mismatch| Error::PayloadMismatch {
                    log: append.log.clone(),
                    index,
                    mismatch,
                })?;
        }
        Ok(())
    }
}

impl Owner {
    /// Starts the owner task of a recovered log.
    pub fn spawn(
        log: LogName,
        resume: Resume,
        env: &OwnerEnv,
        shutdown: CancellationToken,
        lost: CancellationToken,
    ) -> OwnerHandle {
        let OwnerEnv {
            options,
            manifest,
            pool,
            budget,
            namespace_quotas,
        } = env.clone();
        let (commands, receiver) = mpsc::channel(4096);
        let (events, event_receiver) = mpsc::unbounded_channel();
        let stopped = CancellationToken::new();
        let epoch = resume.epoch;
        let log_id = resume.log_id;
        let mut quotas = LogQuotas::default();
        quotas.configure(&resume.config, log.namespace(), &namespace_quotas);
        let (payload_schema, schema_in_handle) = watch::channel(schema_in_force(&resume.config));
        let owner = Owner {
            log,
            next_offset: resume.next_offset,
            acked_offset: resume.next_offset,
            last_timestamp_ms: resume.last_timestamp_ms,
            last_txid: resume.last_txid,
            end_of_stream: resume.end_of_stream,
            resume,
            options,
            manifest,
            pool,
            budget,
            namespace_quotas,
            quotas,
            series: OwnerSeries::new(),
            events,
            batch: Batch::default(),
            in_flight: VecDeque::new(),
            resend: VecDeque::new(),
            in_flight_bytes: 0,
            segment: None,
            open_retry_at: None,
            eos_waiters: Vec::new(),
            // Read once more at the first wake: a change made while the
            // log was being recovered found no owner to tell.
            config_stale: true,
            payload_schema,
            handing_to: None,
        };
        let done = stopped.clone();
        tokio::spawn(async move {
            owner.run(receiver, event_receiver, shutdown, lost).await;
            done.cancel();
        });
        OwnerHandle {
            epoch,
            log_id,
            commands,
            stopped,
            payload_schema: schema_in_handle,
        }
    }

    #[tracing::instrument(name = "owner", skip_all, fields(log = %self.log, epoch = self.resume.epoch))]
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::UnboundedReceiver<(u64, ReplicaEvent)>,
        shutdown: CancellationToken,
        lost: CancellationToken,
    ) {
        tracing::info!(next_offset = self.next_offset, "owning the log");
        let result = loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                // The node lost its lease: another node may own the log now.
                _ = lost.cancelled() => break Err(Error::OwnershipLost {
                    log: self.log.clone(),
                    epoch: self.resume.epoch,
                    reason: "this node lost its lease".into(),
                }),
                _ = shutdown.cancelled() => break self.shut_down(&mut events).await,
                Some((segment_id, event)) = events.recv() => self.on_event(segment_id, event),
                command = commands.recv() => match command {
                    Some(Command::HandOver { to }) => {
                        tracing::info!(to = to.id, "handing the log over");
                        self.handing_to = Some(*to);
                        break self.shut_down(&mut events).await;
                    }
                    Some(command) => self.on_command(command),
                    None => break Ok(()),
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
            if let Err(err) = self.drive().await {
                break Err(err);
            }
        };
        if let Err(err) = result {
            tracing::warn!("owner stopped: {err:#}");
            let (log, epoch) = (self.log.clone(), self.resume.epoch);
            let reason = match &err {
                Error::OwnershipLost { reason, .. } => reason.clone(),
                other => dlog_wire::error::error_chain(other),
            };
            self.fail_all(|| Error::OwnershipLost {
                log: log.clone(),
                epoch,
                reason: reason.clone(),
            });
        }
        commands.close();
        while let Ok(command) = commands.try_recv() {
            self.refuse(command, self.stopping());
        }
    }

    /// Why an append is refused while this owner stops cleanly: a redirect
    /// to the node taking the log over, or the node shutting down. Either
    /// way the append was not applied.
    fn stopping(&self) -> Error {
        match &self.handing_to {
            Some(to) => Error::Elsewhere {
                log: self.log.clone(),
                node: Box::new(to.clone()),
            },
            None => Error::ShuttingDown,
        }
    }

    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(1);
        let mut wake = far;
        // The batch's linger matters only once it can be flushed: waking
        // for it while no segment is writable would spin (the sleep of a
        // passed instant ends at once) until the segment opens or seals.
        if let Some(since) = self.batch.since
            && self.writable()
            && self.resend.is_empty()
        {
            wake = wake.min(since + self.options.linger);
        }
        if let Some(segment) = &self.segment
            && let Some(deadline) = segment.rolling
        {
            wake = wake.min(deadline);
        }
        // Likewise the next try to open a segment matters only while
        // something waits for one (appends refused by `refuse_unsent` left
        // nothing behind).
        if let Some(at) = self.open_retry_at
            && (!self.batch.records.is_empty() || !self.resend.is_empty())
        {
            wake = wake.min(at);
        }
        wake
    }

    fn refuse(&self, command: Command, error: Error) {
        match command {
            Command::Append { reply, session, .. } => {
                AppendReply::new(reply, session).send(Err(error));
            }
            Command::Seal { reply } => {
                let _ = reply.send(Err(error));
            }
            Command::EndOfStream { reply } => {
                let _ = reply.send(Err(error));
            }
            Command::Info { reply } => {
                let _ = reply.send(self.info());
            }
            Command::Reconfigure | Command::HandOver { .. } => {}
        }
    }

    fn info(&self) -> OwnerInfo {
        OwnerInfo {
            next_offset: self.acked_offset,
            epoch: self.resume.epoch,
            end_of_stream: self.end_of_stream,
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Append {
                append,
                reply,
                session,
            } => self.accept(append, AppendReply::new(reply, session)),
            Command::Seal { reply } => match &mut self.segment {
                Some(segment) => {
                    segment.seal_waiters.push(reply);
                    segment
                        .rolling
                        .get_or_insert(Instant::now() + Duration::from_secs(3600));
                }
                None => {
                    let _ = reply.send(Ok(None));
                }
            },
            Command::EndOfStream { reply } => {
                if let Some(end) = self.end_of_stream {
                    let _ = reply.send(Ok(end));
                } else {
                    self.eos_waiters.push(reply);
                }
            }
            Command::Info { reply } => {
                let _ = reply.send(self.info());
            }
            Command::Reconfigure => self.config_stale = true,
            // Taken in the run loop, before commands reach here.
            Command::HandOver { .. } => {}
        }
    }

    /// Checks an append against the log's state: log id, end of stream,
    /// expected offset, txid order across appends, in-flight budget.
    fn check(&self, append: &Append) -> Result<()> {
        if let Some(expected) = append.expected_log_id
            && expected != self.resume.log_id
        {
            return Err(Error::LogIdMismatch {
                log: self.log.clone(),
                expected,
                actual: self.resume.log_id,
            });
        }
        if let Some(end) = self.end_of_stream {
            return Err(Error::EndOfStream {
                log: self.log.clone(),
                end,
            });
        }
        if !self.eos_waiters.is_empty() {
            return Err(Error::EndOfStream {
                log: self.log.clone(),
                end: self.next_offset,
            });
        }
        if let Some(expected) = append.expected_offset
            && expected != self.next_offset
        {
            // A mismatch reports only the acknowledged end: a writer that
            // retries an append in doubt takes `actual == expected + count`
            // as "my append landed", so `actual` must never count records
            // that a crash can still lose. While appends are in flight at or
            // after `expected`, whether the writer's landed is not known
            // yet: it retries later.
            if self.acked_offset < self.next_offset && expected >= self.acked_offset {
                return Err(Error::AppendsInFlight {
                    log: self.log.clone(),
                    expected,
                    acknowledged: self.acked_offset,
                });
            }
            return Err(Error::ExpectedOffset {
                log: self.log.clone(),
                expected,
                actual: self.acked_offset,
            });
        }
        if let (Some(last), Some(first)) =
            (self.last_txid, append.records.iter().find_map(|r| r.txid))
            && first < last
        {
            return Err(Error::TxidDecreasing {
                log: self.log.clone(),
                txid: first,
                last,
            });
        }
        let queued = self.in_flight_bytes + self.batch.bytes;
        if queued > 0 && queued + queued_cost(append) > self.options.max_in_flight_bytes {
            return Err(Error::Backpressure {
                log: self.log.clone(),
                in_flight: queued,
                limit: self.options.max_in_flight_bytes,
            });
        }
        Ok(())
    }

    /// Takes the append from the log's and its namespace's quotas.
    fn take_quota(&self, append: &Append) -> Result<()> {
        let bytes: usize = append.records.iter().map(framed_len).sum();
        let records = append.records.len() as u64;
        self.quotas
            .take(bytes as u64, records)
            .map_err(|over| Error::OverQuota {
                log: self.log.clone(),
                over,
            })
    }

    /// Assigns offsets and a timestamp to a checked append and batches it.
    fn accept(&mut self, append: Append, reply: AppendReply) {
        let cost = queued_cost(&append);
        let session_open = match &reply.session {
            Some(session) if session.is_closed() => Err(Error::SessionBroken {
                log: self.log.clone(),
            }),
            _ => Ok(()),
        };
        let checked = session_open
            .and_then(|()| self.check(&append))
            .and_then(|()| self.budget.reserve(cost))
            .and_then(|()| {
                // Last, so an append refused for any other reason takes
                // nothing from the quota.
                self.take_quota(&append)
                    .inspect_err(|_| self.budget.release(cost))
            });
        if let Err(err) = checked {
            tracing::debug!("append refused: {err}");
            count_refusal(&err);
            reply.send(Err(err));
            return;
        }
        let timestamp_ms = dlog_wire::now_ms().max(self.last_timestamp_ms);
        self.last_timestamp_ms = timestamp_ms;
        if self.batch.records.is_empty() {
            self.batch.txid_before = self.last_txid;
        }
        if let Some(txid) = append.records.iter().rev().find_map(|r| r.txid) {
            self.last_txid = Some(txid);
        }
        let count = append.records.len() as u64;
        let ack = AppendAck {
            first_offset: self.next_offset,
            last_offset: self.next_offset + count - 1,
            timestamp_ms,
        };
        if self.batch.records.is_empty() {
            self.batch.first_offset = self.next_offset;
            self.batch.since = Some(Instant::now());
        }
        self.next_offset += count;
        self.batch.bytes += cost;
        self.batch
            .records
            .extend(append.records.into_iter().map(|record| EntryRecord {
                timestamp_ms,
                record,
            }));
        self.batch.waiters.push(Waiter {
            reply,
            ack,
            cost,
            accepted: Instant::now(),
        });
    }

    fn on_event(&mut self, segment_id: u64, event: ReplicaEvent) {
        let Some(segment) = self
            .segment
            .as_mut()
            .filter(|s| s.meta.segment_id == segment_id)
        else {
            return; // an event of a segment already sealed
        };
        match event {
            ReplicaEvent::Acked { replica, entry_id } => {
                // A replica closed after a failure may still answer adds
                // queued before the failure; only live replicas count.
                if !segment.replicas.is_live(replica) {
                    return;
                }
                if let Some(entry) = self.in_flight.iter_mut().find(|e| e.entry_id == entry_id) {
                    entry.acked_by |= 1 << replica;
                }
                while let Some(front) = self.in_flight.front() {
                    // MUTANT (mutation check only): one replica is enough.
                    #[cfg(feature = "mutation-ack-before-quorum")]
                    let quorum = 1;
                    #[cfg(not(feature = "mutation-ack-before-quorum"))]
                    let quorum = segment.ack_quorum;
                    if (front.acked_by.count_ones() as usize) < quorum {
                        break;
                    }
                    let entry = self.in_flight.pop_front().expect("front exists");
                    segment.lac = Some(entry.entry_id);
                    let end = entry.first_offset + entry.records.len() as u64;
                    self.acked_offset = end;
                    self.in_flight_bytes -= entry.size;
                    self.budget.release(entry.size);
                    segment.records += entry.records.len() as u64;
                    segment.stats.add_records(
                        EntryId(entry.entry_id),
                        Offset(entry.first_offset),
                        &entry.records,
                        entry.encoded.len(),
                    );
                    let records = entry.records.len();
                    self.series.appended_records.increment(records as u64);
                    self.series.entry_records.record(records as f64);
                    self.series
                        .appended_bytes
                        .increment(entry.encoded.len() as u64);
                    for waiter in entry.waiters {
                        self.series
                            .append_duration
                            .record(waiter.accepted.elapsed());
                        waiter.reply.send(Ok(waiter.ack));
                    }
                }
            }
            ReplicaEvent::Failed { replica, error } => {
                tracing::warn!(
                    segment = segment_id,
                    "replica failed, rolling the segment: {}",
                    dlog_wire::error::error_chain(&error)
                );
                self.pool.suspect(segment.replicas.node(replica));
                segment.replicas.close(replica);
                let deadline = Instant::now() + self.options.drain_timeout;
                segment.rolling = Some(segment.rolling.map_or(deadline, |d| d.min(deadline)));
            }
        }
    }

    /// Does whatever the state calls for: seal, open, flush, LAC.
    async fn drive(&mut self) -> Result<()> {
        if self.config_stale {
            // Kept as it was when the manifest does not answer; tried again
            // at the next wake.
            match self.manifest.log_config(&self.log).await {
                Ok(config) => {
                    tracing::info!(?config, "settings changed");
                    self.quotas
                        .configure(&config, self.log.namespace(), &self.namespace_quotas);
                    self.payload_schema.send_replace(schema_in_force(&config));
                    self.resume.config = config;
                    self.config_stale = false;
                }
                Err(err) => tracing::warn!("re-reading the log's settings: {err:#}"),
            }
        }
        self.maybe_roll_by_policy();
        if let Some(segment) = &self.segment
            && let Some(deadline) = segment.rolling
            && (self.in_flight.is_empty() || Instant::now() >= deadline)
        {
            self.seal_segment().await?;
        }
        if self.segment.is_none()
            && (!self.batch.records.is_empty() || !self.resend.is_empty())
            && self.open_retry_at.is_none_or(|at| Instant::now() >= at)
        {
            self.open_segment().await?;
        }
        self.resend_entries();
        self.flush();
        self.send_idle_lac();
        self.finish_end_of_stream().await?;
        Ok(())
    }

    fn maybe_roll_by_policy(&mut self) {
        let roll = self.resume.config.roll;
        let Some(segment) = &mut self.segment else {
            return;
        };
        if segment.rolling.is_some() || segment.records == 0 {
            return;
        }
        // Capped here too: a roll size stored before the cap existed.
        let max_bytes = roll.max_bytes.min(MAX_ROLL_BYTES);
        let too_big = segment.stats.bytes >= max_bytes || segment.records >= roll.max_records;
        let too_old = segment.opened.elapsed() >= Duration::from_millis(roll.max_age_ms);
        if too_big || too_old {
            tracing::debug!(
                segment = segment.meta.segment_id,
                too_big,
                too_old,
                "rolling by policy"
            );
            segment.rolling = Some(Instant::now() + Duration::from_secs(3600));
        }
    }

    async fn seal_segment(&mut self) -> Result<()> {
        let Some(mut segment) = self.segment.take() else {
            return Ok(());
        };
        let mut seal = segment.stats.clone();
        seal.end_offset = self.acked_offset;
        seal.last_entry_id = segment.lac;
        let sealed = self
            .manifest
            .seal_segment(
                &self.log,
                self.resume.fence(),
                segment.meta.segment_id,
                &seal,
            )
            .await;
        let sealed = match sealed {
            Ok(sealed) => sealed,
            Err(err) => {
                for waiter in segment.seal_waiters.drain(..) {
                    let _ = waiter.send(Err(Error::OwnershipLost {
                        log: self.log.clone(),
                        epoch: self.resume.epoch,
                        reason: format!("seal refused: {err}"),
                    }));
                }
                return Err(err.into());
            }
        };
        tracing::info!(
            segment = sealed.segment_id,
            end_offset = seal.end_offset,
            unacknowledged = self.in_flight.len(),
            "sealed segment"
        );
        // Entries the old ensemble did not acknowledge go out again in the
        // next segment, at the same offsets.
        self.resend.extend(self.in_flight.drain(..));
        for waiter in segment.seal_waiters.drain(..) {
            let _ = waiter.send(Ok(Some(sealed.clone())));
        }
        Ok(())
    }

    async fn open_segment(&mut self) -> Result<()> {
        let config = &self.resume.config;
        let replication = config.replication;
        let placement = match self
            .pool
            .choose_ensemble(
                replication.ensemble as usize,
                replication.ack_quorum as usize,
                self.resume.log_id,
            )
            .await
        {
            Ok(placement) => placement,
            Err(err) => {
                tracing::warn!("cannot open a segment yet: {err:#}");
                self.open_retry_at = Some(Instant::now() + Duration::from_millis(500));
                if let Error::NoCacheNodes { live, needed } = err {
                    self.refuse_unsent(|| Error::NoCacheNodes { live, needed });
                }
                return Ok(());
            }
        };
        self.open_retry_at = None;
        let ensemble = &placement.nodes;
        let ack_quorum = (replication.ack_quorum as usize).min(ensemble.len());
        let write_quorum = (replication.write_quorum as usize).min(ensemble.len());
        let start_offset = self
            .resend
            .front()
            .map_or(self.acked_offset, |entry| entry.first_offset);
        let template = SegmentMeta::open(
            self.resume.epoch,
            ensemble.iter().map(|n| n.id.clone()).collect(),
            write_quorum as u32,
            ack_quorum as u32,
            start_offset,
        )
        .with_zones(placement.zones());
        let meta = self
            .manifest
            .create_segment(&self.log, self.resume.fence(), template)
            .await?;
        for relaxed in &placement.relaxed {
            tracing::warn!(
                segment = meta.segment_id,
                rule = relaxed.rule(),
                ensemble = ?meta.ensemble,
                zones = ?meta.zones,
                "placement relaxed: {relaxed}"
            );
            metrics::counter!(series::PLACEMENT_RELAXED, "rule" => relaxed.rule()).increment(1);
        }
        let reference = SegmentRef {
            log: self.log.to_string(),
            log_id: self.resume.log_id,
            segment_id: meta.segment_id,
        };
        let replicas = Replicas::open(
            &self.pool,
            reference,
            self.resume.epoch,
            &meta.ensemble,
            self.events.clone(),
        )
        .await;
        // A `DeleteLog` between the segment's creation and these streams
        // fenced the segment on nodes as they were then; a node that lost
        // that fence since (wiped, re-initialised) could take this owner's
        // entries. Checked after the streams are open: a deletion after
        // this check fences nodes these very streams write to, and a node
        // restarted since breaks its stream for good.
        if let Err(err) = self
            .manifest
            .check_live(&self.log, self.resume.log_id)
            .await
        {
            return Err(Error::OwnershipLost {
                log: self.log.clone(),
                epoch: self.resume.epoch,
                reason: format!("the log was deleted as its segment opened: {err}"),
            });
        }
        tracing::info!(segment = meta.segment_id, ensemble = ?meta.ensemble, zones = ?meta.zones, start_offset, "opened segment");
        self.segment = Some(OpenSegment {
            stats: SealInfo::empty(start_offset),
            meta,
            replicas,
            ack_quorum,
            next_entry_id: 0,
            lac: None,
            lac_sent: None,
            records: 0,
            opened: Instant::now(),
            rolling: None,
            seal_waiters: Vec::new(),
        });
        Ok(())
    }

    fn writable(&self) -> bool {
        self.segment.as_ref().is_some_and(|s| s.rolling.is_none())
    }

    fn send_entry(&mut self, mut entry: InFlight) {
        let segment = self.segment.as_mut().expect("writable checked");
        entry.entry_id = segment.next_entry_id;
        segment.next_entry_id += 1;
        let header = EntryHeader {
            log_id: self.resume.log_id,
            segment_id: segment.meta.segment_id,
            entry_id: entry.entry_id,
            epoch: self.resume.epoch,
            first_offset: entry.first_offset,
            lac: segment.lac,
            record_count: entry.records.len() as u32,
        };
        entry.encoded = encode_entry(&header, &entry.records);
        entry.acked_by = 0;
        segment.lac_sent = segment.lac;
        segment.replicas.send(&entry.encoded, &self.events);
        self.in_flight.push_back(entry);
    }

    fn resend_entries(&mut self) {
        while self.writable() {
            let Some(entry) = self.resend.pop_front() else {
                return;
            };
            self.send_entry(entry);
        }
    }

    fn flush(&mut self) {
        while self.writable() && self.resend.is_empty() && !self.batch.records.is_empty() {
            let due = self.in_flight.is_empty()
                || self.batch.bytes >= self.options.max_entry_bytes
                || self
                    .batch
                    .since
                    .is_some_and(|since| since.elapsed() >= self.options.linger);
            if !due {
                return;
            }
            let batch = self.batch.take_entry(self.options.max_entry_bytes);
            self.in_flight_bytes += batch.bytes;
            self.send_entry(InFlight {
                entry_id: 0,
                first_offset: batch.first_offset,
                records: batch.records,
                waiters: batch.waiters,
                encoded: Bytes::new(),
                size: batch.bytes,
                acked_by: 0,
            });
        }
    }

    /// With nothing in flight, tells the replicas how far the LAC is, so
    /// tailing readers see the last entries without waiting for more writes.
    fn send_idle_lac(&mut self) {
        if !self.in_flight.is_empty() {
            return;
        }
        let Some(segment) = self.segment.as_mut() else {
            return;
        };
        if let Some(lac) = segment.lac
            && segment.lac_sent != Some(lac)
        {
            segment.lac_sent = Some(lac);
            segment.replicas.send_lac(lac, &self.events);
        }
    }

    async fn finish_end_of_stream(&mut self) -> Result<()> {
        if self.eos_waiters.is_empty()
            || !self.in_flight.is_empty()
            || !self.resend.is_empty()
            || !self.batch.records.is_empty()
        {
            return Ok(());
        }
        let end = self.acked_offset;
        self.manifest
            .mark_end_of_stream(&self.log, self.resume.fence(), end)
            .await?;
        self.end_of_stream = Some(end);
        for waiter in self.eos_waiters.drain(..) {
            let _ = waiter.send(Ok(end));
        }
        tracing::info!(end, "log marked end of stream");
        Ok(())
    }

    /// Clean shutdown or hand-over: let what is in flight finish (briefly),
    /// seal at what was acknowledged, stop. Appends not yet sent, and
    /// those still unacknowledged at the seal, are not in the log: they
    /// are refused as [`Self::stopping`] says.
    ///
    /// Crash points: dying before the seal leaves the segment open, and
    /// the next owner recovers it (an ordinary failover); after it, the
    /// next owner finds every segment sealed and recovers nothing.
    async fn shut_down(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<(u64, ReplicaEvent)>,
    ) -> Result<()> {
        let stopping = self.stopping();
        let refusal = || match &stopping {
            Error::Elsewhere { log, node } => Error::Elsewhere {
                log: log.clone(),
                node: node.clone(),
            },
            _ => Error::ShuttingDown,
        };
        self.fail_batch(refusal);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.in_flight.is_empty() && Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some((segment_id, event))) => self.on_event(segment_id, event),
                _ => break,
            }
        }
        if self.segment.is_some() {
            self.seal_segment().await?;
        }
        self.fail_all(refusal);
        tracing::info!("released the log");
        Ok(())
    }

    /// Refuses every append not yet sent to any replica, when none can be
    /// placed now (too few live cache nodes): their writers get the reason
    /// at once instead of waiting out their deadline. Their offsets and
    /// txids were never replicated, so the log's next offset and last txid
    /// go back to where they were before them, and the next append takes
    /// the same offsets. Only while nothing of a sealed segment waits to be
    /// re-sent: those entries keep their offsets and wait for nodes.
    ///
    /// Crash safety: nothing of these appends reached a cache node or the
    /// manifest; a crash before or after this leaves the log as it was.
    fn refuse_unsent(&mut self, error: impl Fn() -> Error) {
        if !self.resend.is_empty() || !self.in_flight.is_empty() || self.batch.records.is_empty() {
            return;
        }
        self.next_offset = self.batch.first_offset;
        self.last_txid = self.batch.txid_before;
        self.fail_batch(error);
    }

    fn fail_batch(&mut self, error: impl Fn() -> Error) {
        let batch = std::mem::take(&mut self.batch);
        self.budget.release(batch.bytes);
        for waiter in batch.waiters {
            waiter.reply.send(Err(error()));
        }
    }

    fn fail_all(&mut self, error: impl Fn() -> Error) {
        self.fail_batch(&error);
        for entry in self.in_flight.drain(..).chain(self.resend.drain(..)) {
            self.budget.release(entry.size);
            for waiter in entry.waiters {
                waiter.reply.send(Err(error()));
            }
        }
        if let Some(segment) = &mut self.segment {
            for waiter in segment.seal_waiters.drain(..) {
                let _ = waiter.send(Err(error()));
            }
        }
        for waiter in self.eos_waiters.drain(..) {
            let _ = waiter.send(Err(error()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_gate_closes_on_another_owner_and_on_an_answer_never_sent() {
        let log: LogName = "ns/gate".parse().unwrap();
        let gate = SessionGate::default();
        assert!(gate.admits(&log, 3));
        assert!(gate.admits(&log, 3));
        // Another log pins its own owner.
        assert!(gate.admits(&"ns/other".parse().unwrap(), 9));
        assert!(!gate.admits(&log, 4), "a new owner of the log was admitted");
        assert!(gate.is_closed());

        let gate = SessionGate::default();
        let (tx, _rx) = oneshot::channel();
        AppendReply::new(tx, Some(gate.clone())).send(Ok(AppendAck {
            first_offset: 0,
            last_offset: 0,
            timestamp_ms: 0,
        }));
        assert!(!gate.is_closed(), "an acknowledged append closed the gate");
        let (tx, _rx) = oneshot::channel();
        drop(AppendReply::new(tx, Some(gate.clone())));
        assert!(
            gate.is_closed(),
            "an answer dropped unsent left the gate open"
        );
    }

    /// A batch of appends of `sizes` bytes (one record each).
    fn batch_of(sizes: &[usize]) -> Batch {
        let mut batch = Batch::default();
        for (offset, size) in sizes.iter().enumerate() {
            let append = Append {
                log: "ns/log".parse().unwrap(),
                records: vec![dlog_wire::record::Record::new(vec![0u8; *size])],
                expected_offset: None,
                expected_log_id: None,
            };
            let cost = queued_cost(&append);
            batch.bytes += cost;
            batch.records.push(EntryRecord {
                timestamp_ms: 0,
                record: append.records[0].clone(),
            });
            let offset = offset as u64;
            batch.waiters.push(Waiter {
                reply: AppendReply::new(oneshot::channel().0, None),
                ack: AppendAck {
                    first_offset: offset,
                    last_offset: offset,
                    timestamp_ms: 0,
                },
                cost,
                accepted: Instant::now(),
            });
        }
        batch
    }

    #[test]
    fn a_grown_batch_goes_as_entries_of_at_most_the_entry_size() {
        let mut batch = batch_of(&[600_000, 600_000, 300_000, 3_000_000, 10]);
        let mut entries = Vec::new();
        while !batch.waiters.is_empty() {
            let entry = batch.take_entry(1024 * 1024);
            let sizes: Vec<usize> = entry.records.iter().map(|r| r.record.size()).collect();
            let first = entry.waiters[0].ack.first_offset;
            assert_eq!(entry.first_offset, first);
            assert_eq!(
                entry.bytes,
                entry.waiters.iter().map(|w| w.cost).sum::<usize>()
            );
            entries.push(sizes);
        }
        assert_eq!(
            entries,
            [
                vec![600_000],
                vec![600_000, 300_000],
                vec![3_000_000], // one append alone may be larger
                vec![10],
            ]
        );
        assert_eq!(batch.bytes, 0);
        assert!(batch.records.is_empty());
    }

    #[test]
    fn the_node_budget_refuses_past_its_limit_and_frees_on_release() {
        let budget = NodeBudget::new(100);
        budget.reserve(60).unwrap();
        budget.reserve(40).unwrap();
        let err = budget.reserve(1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "this ingest node has 100 bytes in flight, over its limit of 100: retry later"
        );
        budget.release(50);
        budget.reserve(30).unwrap();
        assert_eq!(budget.used(), 80);
        // One append larger than the whole budget still goes through alone.
        let empty = NodeBudget::new(10);
        empty.reserve(1000).unwrap();
    }
}

//! The `CacheService` gRPC server over a [`CacheStore`].
//!
//! `AddEntries` pipelines: requests are queued to the journal in stream
//! order as they arrive, and answered in the same order as each becomes
//! durable. A refused add answers with its error status, after the answers
//! of the adds queued before it, and ends the stream.
//!
//! Fences and recovery reads first ask the node's [`Trust`]: a node whose
//! data was re-initialised does not answer for segments older than it.
//! Adds, fences and recovery reads need a valid [`Confirmation`] of the
//! node's identity, where the server has one ([`crate::confirm`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use dlog_wire::error::to_status;
use dlog_wire::ids::Epoch;
use dlog_wire::pipeline::{Answer, ResponseStream, serve_ordered};
use dlog_wire::proto::cache_service_server::CacheService;
use dlog_wire::proto::{
    AddEntryRequest, AddEntryResponse, AddOutcome, DropSegmentRequest, DropSegmentResponse,
    FenceRequest, FenceResponse, ReadEntriesRequest, ReadEntriesResponse, ReadLacRequest,
    ReadLacResponse, SegmentRef,
};
use futures::future::Either;
use tonic::{Request, Response, Status, Streaming};

use crate::confirm::Confirmation;
use crate::segment_key::SegmentKey;
use crate::store::{CacheStore, ReadMode};
use crate::trust::Trust;

/// Adds one stream may have queued but not yet answered.
const MAX_IN_FLIGHT_ADDS: usize = 4096;
/// The same for a `Replicate` stream, which carries the adds of every log an
/// ingest node writes to this node.
const MAX_IN_FLIGHT_REPLICATED: usize = 64 * 1024;
/// Most segments a `Replicate` stream remembers as refused; beyond it the
/// memory is cleared (the store still refuses their adds, as gaps or below
/// the fence).
const MAX_REFUSED_SEGMENTS: usize = 64 * 1024;
/// Longest LAC long-poll.
const MAX_LAC_WAIT: Duration = Duration::from_secs(60);
/// Most entries one `ReadEntries` returns.
const MAX_READ_ENTRIES: usize = 10_000;
/// Most bytes of entries one `ReadEntries` loads and returns (one entry
/// larger than this still goes alone). With the count, it bounds the work
/// of one call, so a caller's deadline per call holds on a cold disk too;
/// callers page on from the last entry they got.
const MAX_READ_BYTES: u64 = 16 * 1024 * 1024;

/// The gRPC face of a cache node.
#[derive(Debug, Clone)]
pub struct CacheServer {
    store: Arc<CacheStore>,
    trust: Option<Arc<Trust>>,
    confirmation: Option<Arc<Confirmation>>,
}

impl CacheServer {
    pub fn new(store: Arc<CacheStore>) -> CacheServer {
        CacheServer {
            store,
            trust: None,
            confirmation: None,
        }
    }

    /// Takes adds only while `confirmation` is valid ([`crate::confirm`]).
    pub fn with_confirmation(self, confirmation: Arc<Confirmation>) -> CacheServer {
        CacheServer {
            confirmation: Some(confirmation),
            ..self
        }
    }

    /// Answers fences and recovery reads only for segments `trust` allows.
    pub fn with_trust(self, trust: Arc<Trust>) -> CacheServer {
        CacheServer {
            trust: Some(trust),
            ..self
        }
    }

    async fn check_trust(&self, segment: Option<&SegmentRef>) -> Result<(), Status> {
        // A node whose identity is not confirmed may have been replaced by
        // a re-initialised instance: its "not held" must not count.
        check_confirmed(self.confirmation.as_deref())?;
        let (Some(trust), Some(reference)) = (&self.trust, segment) else {
            return Ok(());
        };
        let key = segment_key(Some(reference))?;
        trust
            .check(&reference.log, key)
            .await
            .map_err(|err| to_status(&err))
    }

    /// A tonic service for a `Router`.
    pub fn into_service(
        self,
    ) -> dlog_wire::proto::cache_service_server::CacheServiceServer<CacheServer> {
        dlog_wire::proto::cache_service_server::CacheServiceServer::new(self)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }
}

fn segment_key(segment: Option<&SegmentRef>) -> Result<SegmentKey, Status> {
    let segment = segment.ok_or_else(|| Status::invalid_argument("segment is required"))?;
    Ok(SegmentKey {
        log_id: segment.log_id,
        segment_id: segment.segment_id,
    })
}

/// `UNAVAILABLE` while the node's identity is not confirmed (where it is
/// checked at all).
fn check_confirmed(confirmation: Option<&Confirmation>) -> Result<(), Status> {
    if confirmation.is_some_and(|c| !c.is_valid()) {
        return Err(Status::unavailable(
            "this cache node's identity is not confirmed by the manifest: adds, fences and \
             recovery reads are refused until it is (or another instance took its node id)",
        ));
    }
    Ok(())
}

/// Queues one add (or an explicit LAC). With a `confirmation`, an entry is
/// refused (`UNAVAILABLE`) while the node's identity is not confirmed.
pub fn submit_add(
    store: &CacheStore,
    confirmation: Option<&Confirmation>,
    request: AddEntryRequest,
) -> Answer<AddEntryResponse> {
    match start_add(store, confirmation, &request) {
        Ok(durable) => Answer::new(async move {
            let entry_id = durable.await?;
            Ok(AddEntryResponse {
                segment: request.segment,
                entry_id,
            })
        }),
        Err(status) => Answer::ready(Err(status)),
    }
}

/// [`submit_add`]'s work: `Err` for an add refused when submitted, else the
/// future of its durability, giving the entry id (an explicit LAC is done
/// at once, and gives the LAC).
fn start_add(
    store: &CacheStore,
    confirmation: Option<&Confirmation>,
    request: &AddEntryRequest,
) -> Result<impl Future<Output = Result<u64, Status>> + Send + 'static, Status> {
    let key = segment_key(request.segment.as_ref())?;
    let epoch = Epoch(request.epoch);
    if request.entry.is_empty() {
        let Some(lac) = request.lac else {
            return Err(Status::invalid_argument(
                "an add needs an entry, or a lac for an explicit LAC update",
            ));
        };
        store
            .advance_lac(key, epoch, lac)
            .map_err(|err| to_status(&err))?;
        return Ok(Either::Left(std::future::ready(Ok(lac))));
    }
    check_confirmed(confirmation)?;
    let durable = store
        .add(key, epoch, request.entry.clone())
        .map_err(|err| to_status(&err))?;
    Ok(Either::Right(async move {
        durable.await.map_err(|err| to_status(&err))
    }))
}

/// [`submit_add`] for a stream of many segments (`Replicate`): every
/// answer is an [`AddOutcome`], a refusal included, and once an add of a
/// segment is refused when submitted, the segment's later adds on the stream
/// are refused too.
fn submit_to_stream(
    store: &CacheStore,
    confirmation: Option<&Confirmation>,
    refused: &mut HashSet<SegmentKey>,
    request: AddEntryRequest,
) -> Answer<AddOutcome> {
    let key = segment_key(request.segment.as_ref()).ok();
    if key.is_some_and(|key| refused.contains(&key)) {
        let status = Status::failed_precondition(
            "an earlier add of this segment on this stream was refused",
        );
        return Answer::ready(Ok(refusal(request.segment, &status)));
    }
    match start_add(store, confirmation, &request) {
        Ok(durable) => Answer::new(async move {
            Ok(match durable.await {
                Ok(entry_id) => AddOutcome {
                    segment: request.segment,
                    entry_id,
                    code: 0,
                    message: String::new(),
                },
                Err(status) => refusal(request.segment, &status),
            })
        }),
        Err(status) => {
            if refused.len() >= MAX_REFUSED_SEGMENTS {
                refused.clear();
            }
            refused.extend(key);
            Answer::ready(Ok(refusal(request.segment, &status)))
        }
    }
}

/// The outcome of an add refused with `status`.
fn refusal(segment: Option<SegmentRef>, status: &Status) -> AddOutcome {
    AddOutcome {
        segment,
        entry_id: 0,
        code: status.code() as i32,
        message: status.message().to_owned(),
    }
}

#[tonic::async_trait]
impl CacheService for CacheServer {
    type AddEntriesStream = ResponseStream<AddEntryResponse>;
    type ReadEntriesStream = ResponseStream<ReadEntriesResponse>;
    type ReplicateStream = ResponseStream<AddOutcome>;

    async fn add_entries(
        &self,
        request: Request<Streaming<AddEntryRequest>>,
    ) -> Result<Response<Self::AddEntriesStream>, Status> {
        let store = self.store.clone();
        let confirmation = self.confirmation.clone();
        let answers = serve_ordered(request.into_inner(), MAX_IN_FLIGHT_ADDS, move |add| {
            std::future::ready(submit_add(&store, confirmation.as_deref(), add))
        });
        Ok(Response::new(answers))
    }

    async fn replicate(
        &self,
        request: Request<Streaming<AddEntryRequest>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        let store = self.store.clone();
        let confirmation = self.confirmation.clone();
        // Segments with an add refused at submission on this stream: their
        // later adds are refused outright, as if each segment had a stream
        // of its own that the refusal ended. Safety does not rest on it: the
        // store refuses an add past a gap, below the fence or after a
        // journal failure, whatever stream it comes on.
        let mut refused: HashSet<SegmentKey> = HashSet::new();
        let answers = serve_ordered(request.into_inner(), MAX_IN_FLIGHT_REPLICATED, move |add| {
            std::future::ready(submit_to_stream(
                &store,
                confirmation.as_deref(),
                &mut refused,
                add,
            ))
        });
        Ok(Response::new(answers))
    }

    async fn read_entries(
        &self,
        request: Request<ReadEntriesRequest>,
    ) -> Result<Response<Self::ReadEntriesStream>, Status> {
        let request = request.into_inner();
        let key = segment_key(request.segment.as_ref())?;
        let max = match request.max_entries {
            0 => MAX_READ_ENTRIES,
            n => (n as usize).min(MAX_READ_ENTRIES),
        };
        if request.fence_epoch.is_some() {
            self.check_trust(request.segment.as_ref()).await?;
        }
        let mode = match (request.fence_epoch, request.sealed_last_entry) {
            (Some(epoch), _) => ReadMode::Recovery { epoch },
            (None, Some(last_entry)) => ReadMode::Sealed { last_entry },
            (None, None) => ReadMode::Committed,
        };
        let entries = self
            .store
            .read_page(key, request.from_entry, max, MAX_READ_BYTES, mode)
            .await
            .map_err(|err| to_status(&err))?;
        let stream = futures::stream::iter(
            entries
                .into_iter()
                .map(|entry| Ok(ReadEntriesResponse { entry })),
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn read_lac(
        &self,
        request: Request<ReadLacRequest>,
    ) -> Result<Response<ReadLacResponse>, Status> {
        let request = request.into_inner();
        let key = segment_key(request.segment.as_ref())?;
        let timeout = Duration::from_millis(u64::from(request.timeout_ms)).min(MAX_LAC_WAIT);
        let progress = self
            .store
            .wait_for_lac(key, request.after_entry, timeout)
            .await
            .map_err(|err| to_status(&err))?;
        Ok(Response::new(ReadLacResponse {
            lac: progress.lac,
            last_entry_id: progress.last_entry_id,
        }))
    }

    async fn fence(
        &self,
        request: Request<FenceRequest>,
    ) -> Result<Response<FenceResponse>, Status> {
        let request = request.into_inner();
        let key = segment_key(request.segment.as_ref())?;
        self.check_trust(request.segment.as_ref()).await?;
        let progress = self
            .store
            .fence(key, Epoch(request.epoch))
            .await
            .map_err(|err| to_status(&err))?;
        Ok(Response::new(FenceResponse {
            last_entry_id: progress.last_entry_id,
            lac: progress.lac,
            held_end: self.store.held_end(key),
        }))
    }

    async fn drop_segment(
        &self,
        request: Request<DropSegmentRequest>,
    ) -> Result<Response<DropSegmentResponse>, Status> {
        let key = segment_key(request.into_inner().segment.as_ref())?;
        self.store
            .drop_segment(key)
            .await
            .map_err(|err| to_status(&err))?;
        Ok(Response::new(DropSegmentResponse {}))
    }
}

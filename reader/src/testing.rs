//! Test fixture of the read path: an embedded metastore in a temporary
//! directory, an in-memory object store, and logs built segment by segment
//! straight in the manifest (offloaded ones with a real Parquet file).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dlog_meta::manifest::{Fence, Manifest, ObjectInfo, SealInfo, SegmentMeta};
use dlog_meta::metastore::embedded::EmbeddedStore;
use dlog_storage::objstore::{self, ObjectStoreHandle};
use dlog_storage::segment_file::{FileInfo, encode_segment};
use dlog_wire::codec::{Entry, EntryHeader, EntryRecord};
use dlog_wire::ids::{Epoch, LogId, SegmentId};
use dlog_wire::names::LogName;
use dlog_wire::record::Record;
use object_store::{ObjectStoreExt, PutPayload};

use crate::engine::{ReadEngine, ReaderOptions};

pub struct Fixture {
    pub manifest: Manifest,
    pub objects: ObjectStoreHandle,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    pub async fn new() -> Fixture {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dlog-reader-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let store = EmbeddedStore::open(&dir).await.unwrap();
        Fixture {
            manifest: Manifest::new(Arc::new(store), "default"),
            objects: objstore::open("memory://").unwrap(),
            dir,
        }
    }

    pub fn engine(&self, options: ReaderOptions) -> Arc<ReadEngine> {
        Arc::new(ReadEngine::new(
            self.manifest.clone(),
            self.objects.clone(),
            options,
        ))
    }

    /// Creates `log` and takes its first epoch.
    pub async fn create_log(&self, log: &LogName) -> Fence {
        let meta = self.manifest.create_log(log).await.unwrap();
        self.manifest
            .bump_epoch(log, LogId(meta.log_id), Epoch(0))
            .await
            .unwrap()
    }

    /// Opens the next segment of `log` at `start_offset` on `ensemble`.
    pub async fn open_segment(
        &self,
        log: &LogName,
        fence: Fence,
        start_offset: u64,
        ensemble: &[&str],
    ) -> SegmentMeta {
        let template = SegmentMeta::open(
            fence.epoch,
            ensemble.iter().map(|s| s.to_string()).collect(),
            ensemble.len() as u32,
            (ensemble.len() as u32).min(2),
            start_offset,
        );
        self.manifest
            .create_segment(log, fence, template)
            .await
            .unwrap()
    }

    /// Adds an offloaded, cache-dropped segment holding `payloads` from
    /// `start_offset`, with its Parquet file in the object store.
    pub async fn offloaded_segment(
        &self,
        log: &LogName,
        fence: Fence,
        start_offset: u64,
        payloads: Vec<Bytes>,
    ) -> SegmentMeta {
        let records = payloads
            .into_iter()
            .map(|p| EntryRecord {
                timestamp_ms: 1,
                record: Record::new(p),
            })
            .collect();
        self.offloaded_records(log, fence, start_offset, records)
            .await
    }

    /// Adds an offloaded, cache-dropped segment holding `records` from
    /// `start_offset`, with its Parquet file in the object store.
    pub async fn offloaded_records(
        &self,
        log: &LogName,
        fence: Fence,
        start_offset: u64,
        records: Vec<EntryRecord>,
    ) -> SegmentMeta {
        let segment = self.open_segment(log, fence, start_offset, &[]).await;
        let end_offset = start_offset + records.len() as u64;
        let log_id = self.manifest.log(log).await.unwrap().log_id;
        let timestamps = records.iter().map(|r| r.timestamp_ms);
        let seal = SealInfo {
            end_offset,
            last_entry_id: Some(0),
            bytes: records.iter().map(|r| r.record.size() as u64).sum(),
            min_timestamp_ms: timestamps.clone().min(),
            max_timestamp_ms: timestamps.max(),
            min_txid: None,
            max_txid: None,
        };
        let entry = Entry {
            header: EntryHeader {
                log_id,
                segment_id: segment.segment_id,
                entry_id: 0,
                epoch: fence.epoch,
                first_offset: start_offset,
                lac: None,
                record_count: records.len() as u32,
            },
            records,
        };
        let info = FileInfo {
            log,
            segment_id: segment.segment_id,
            start_offset,
            end_offset,
            payload_schema: None,
        };
        let file = encode_segment(&[entry], &info).unwrap();
        self.offloaded_file(log, fence, &segment, seal, file.bytes)
            .await
    }

    /// Seals `segment` (open, from [`Fixture::open_segment`]) as `seal`
    /// says and offloads it with `file` as its Parquet file (any bytes a
    /// test wants the reader to meet); drops it from the cache tier.
    pub async fn offloaded_file(
        &self,
        log: &LogName,
        fence: Fence,
        segment: &SegmentMeta,
        seal: SealInfo,
        file: Bytes,
    ) -> SegmentMeta {
        let (start_offset, end_offset) = (segment.start_offset, seal.end_offset);
        self.manifest
            .seal_segment(log, fence, segment.segment_id, &seal)
            .await
            .unwrap();
        let key = format!("{log}/{start_offset:020}-{end_offset:020}.parquet");
        self.objects
            .store
            .put(&key.as_str().into(), PutPayload::from(file.clone()))
            .await
            .unwrap();
        let object = ObjectInfo {
            key,
            size: file.len() as u64,
            crc32c: crc32c::crc32c(&file),
            offloaded_at_ms: 1,
            merged: None,
        };
        self.manifest
            .mark_offloaded(log, fence.log_id, segment.segment_id, object)
            .await
            .unwrap();
        self.manifest
            .mark_cache_dropped(log, LogId(fence.log_id), SegmentId(segment.segment_id))
            .await
            .unwrap();
        self.manifest
            .segment(log, segment.segment_id)
            .await
            .unwrap()
            .value
    }
}

/// Polls `check` every 20 ms for up to `within`; whether it came true.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Offsets from here on are only used by the test that makes a read panic.
pub const PANIC_AT_OFFSET_BASE: u64 = 1 << 40;
static PANIC_AT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Makes every read panic when it delivers `offset` (at or above
/// [`PANIC_AT_OFFSET_BASE`]), so a test can see what a panic does.
pub fn panic_at_offset(offset: u64) {
    assert!(offset >= PANIC_AT_OFFSET_BASE);
    PANIC_AT.store(offset, Ordering::SeqCst);
}

/// Called by the read loop for every record it delivers (tests only).
pub fn maybe_panic(offset: u64) {
    if offset == PANIC_AT.load(Ordering::Relaxed) {
        panic!("test panic at offset {offset}");
    }
}

/// Serves `engine`'s `ReadService` on a free local port; its address.
pub async fn serve(engine: Arc<ReadEngine>) -> String {
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let service = crate::ReadServer::new(engine).into_service();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve(address),
    );
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    format!("http://{address}")
}

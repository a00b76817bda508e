//! Read-path safety tests on the [`crate::testing`] fixture (embedded
//! metastore, in-memory object store, cache nodes that do not exist): a log
//! named `sub` is watched like any other, an unknown LAC is an error and
//! never "the start of the open segment", and a read whose client went away
//! stops with everything it held.

use std::time::Duration;

use dlog_wire::error::{Classify, ErrorKind};
use dlog_wire::ids::{LogId, SegmentId};
use dlog_wire::names::LogName;

use crate::engine::{ReadSpec, ReaderOptions, Start};
use crate::log_view::LogViews;
use crate::testing::{Fixture, eventually};

fn spec(log: &LogName, start: Start, follow: bool) -> ReadSpec {
    ReadSpec {
        log: log.clone(),
        start,
        limit: None,
        follow,
        log_id: None,
        client: None,
    }
}

fn payloads(count: usize, size: usize) -> Vec<bytes::Bytes> {
    (0..count)
        .map(|i| bytes::Bytes::from(vec![(i % 251) as u8; size]))
        .collect()
}

/// Issue 22 item 4: the watch filter dropped every event whose key held
/// `/sub/`, so a namespace or log named `sub` never saw its segments move.
#[tokio::test]
async fn logs_and_namespaces_named_sub_see_their_manifest_change() {
    let fixture = Fixture::new().await;
    let views = LogViews::new(fixture.manifest.clone());
    for name in ["sub/events", "orders/sub", "sub/sub"] {
        let log: LogName = name.parse().unwrap();
        let epoch = fixture.create_log(&log).await;
        let view = views.subscribe(&log).await.unwrap();
        assert!(view.borrow().segments.is_empty());
        fixture.open_segment(&log, epoch, 0, &["cache-1"]).await;
        let seen = eventually(Duration::from_secs(3), || {
            !view.borrow().segments.is_empty()
        })
        .await;
        assert!(seen, "{name}: the view never showed the new segment");
        // A subscription commit still changes nothing a read plans by.
        fixture
            .manifest
            .commit_subscription(&log, "sub", 0)
            .await
            .unwrap();
    }
}

/// Issue 22 item 9: with every replica of the open segment unreachable the
/// tail was reported as the open segment's start, so `Start::Tail`
/// re-delivered the whole open segment.
#[tokio::test]
async fn an_unknown_lac_is_an_error_not_the_start_of_the_open_segment() {
    let fixture = Fixture::new().await;
    let log: LogName = "tail/unreachable".parse().unwrap();
    let epoch = fixture.create_log(&log).await;
    fixture
        .offloaded_segment(&log, epoch, 0, payloads(10, 8))
        .await;
    fixture
        .open_segment(&log, epoch, 10, &["gone-1", "gone-2", "gone-3"])
        .await;
    let engine = fixture.engine(ReaderOptions::default());

    let tail = engine.check_tail(&log).await;
    let err = tail.expect_err("a tail nobody could tell");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");

    let mut items = engine.read(spec(&log, Start::Tail, false));
    match items.recv().await {
        Some(Err(err)) => assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}"),
        other => panic!("a tail read with an unknown LAC gave {other:?}"),
    }
}

/// Issue 22 item 11: an idle follow read whose receiver was dropped kept
/// its task, its manifest watch and its LAC poll.
#[tokio::test]
async fn a_cancelled_follow_read_releases_its_watch_and_lac_poll() {
    let fixture = Fixture::new().await;
    let open: LogName = "follow/open".parse().unwrap();
    let epoch = fixture.create_log(&open).await;
    fixture.open_segment(&open, epoch, 0, &["gone-1"]).await;
    let empty: LogName = "follow/empty".parse().unwrap();
    fixture.create_log(&empty).await;
    let engine = fixture.engine(ReaderOptions::default());

    let a = engine.read(spec(&open, Start::Offset(0), true));
    let b = engine.read(spec(&empty, Start::Earliest, true));
    let started = eventually(Duration::from_secs(3), || {
        engine.watched_logs() == 2 && engine.followed_segments() == 1
    })
    .await;
    assert!(started, "both reads are following");
    drop((a, b));
    let stopped = eventually(Duration::from_secs(3), || {
        engine.watched_logs() == 0 && engine.followed_segments() == 0
    })
    .await;
    assert!(
        stopped,
        "after the clients left: {} log watches, {} LAC polls",
        engine.watched_logs(),
        engine.followed_segments()
    );
}

/// Issue 22 item 5: batches were capped at 1 000 records and no bytes, so
/// 64 records of 1 MiB made a message over the 64 MiB response limit that
/// tonic refused on every retry. Read over gRPC as a client does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_a_mebibyte_stream_in_messages_under_the_limit() {
    let fixture = Fixture::new().await;
    let log: LogName = "big/records".parse().unwrap();
    let epoch = fixture.create_log(&log).await;
    let count = 70;
    fixture
        .offloaded_segment(&log, epoch, 0, payloads(count, 1024 * 1024))
        .await;
    let engine = fixture.engine(ReaderOptions::default());
    let address = crate::testing::serve(engine).await;
    let mut client = dlog_wire::proto::read_service_client::ReadServiceClient::connect(address)
        .await
        .unwrap()
        .max_decoding_message_size(64 * 1024 * 1024);
    let request = dlog_wire::proto::ReadRequest {
        log: log.to_string(),
        start: Some(dlog_wire::proto::read_request::Start::Earliest(
            dlog_wire::proto::Earliest {},
        )),
        limit: None,
        follow: false,
        log_id: None,
    };
    let mut stream = client.read(request).await.unwrap().into_inner();
    let mut offsets = Vec::new();
    while let Some(message) = stream.message().await.expect("every message arrives") {
        let bytes: usize = message.records.iter().map(|r| r.payload.len()).sum();
        assert!(
            bytes <= ReaderOptions::default().max_batch_bytes,
            "a message of {bytes} bytes"
        );
        offsets.extend(message.records.iter().map(|r| r.offset));
    }
    assert_eq!(offsets, (0..count as u64).collect::<Vec<_>>());
}

/// Issue 22 item 6: an object deleted by retention while a read was on it
/// gave DATA_LOSS (not retried) instead of OUT_OF_RANGE with the first
/// readable offset.
#[tokio::test]
async fn an_object_deleted_by_retention_mid_read_is_out_of_range() {
    let fixture = Fixture::new().await;
    let log: LogName = "retention/mid-read".parse().unwrap();
    let epoch = fixture.create_log(&log).await;
    // Two row groups (64 Ki rows each at most), then a newer segment.
    let first = fixture
        .offloaded_segment(&log, epoch, 0, payloads(70_000, 1))
        .await;
    fixture
        .offloaded_segment(&log, epoch, 70_000, payloads(10, 1))
        .await;
    let engine = fixture.engine(ReaderOptions::default());
    let mut items = engine.read(spec(&log, Start::Earliest, false));
    // The read is in the first row group, held back by its client.
    let Some(Ok(crate::ReadItem::Records(batch))) = items.recv().await else {
        panic!("first batch");
    };
    assert_eq!(batch[0].offset, 0);
    // Retention: trim point first, then the object and the segment.
    fixture.manifest.trim(&log, 70_000).await.unwrap();
    let key = first.object.as_ref().unwrap().key.as_str();
    use object_store::ObjectStoreExt;
    fixture.objects.store.delete(&key.into()).await.unwrap();
    fixture
        .manifest
        .delete_segment(&log, LogId(epoch.log_id), SegmentId(first.segment_id))
        .await
        .unwrap();
    let err = loop {
        match items.recv().await {
            Some(Ok(_)) => {}
            Some(Err(err)) => break err,
            None => panic!("the read ended cleanly without the deleted rows"),
        }
    };
    assert_eq!(err.kind(), ErrorKind::OutOfRange, "{err}");
    let status = tonic::Status::from(err);
    assert_eq!(
        status
            .metadata()
            .get(dlog_wire::metadata::FIRST_OFFSET)
            .unwrap(),
        "70000"
    );
}

/// Issue 22 item 6: object-store failures are transient (UNAVAILABLE, the
/// client retries), whether they reach the read directly or through the
/// Parquet reader; only undecodable bytes are DATA_LOSS.
#[test]
fn object_store_errors_are_unavailable_and_bad_bytes_data_loss() {
    use parquet::errors::ParquetError;
    let transient = || object_store::Error::Generic {
        store: "S3",
        source: "connection reset by peer".into(),
    };
    let through_parquet = crate::Error::Parquet {
        key: "k".to_owned(),
        source: ParquetError::External(Box::new(transient())),
    };
    assert_eq!(through_parquet.kind(), ErrorKind::Unavailable);
    let direct = crate::Error::Object {
        key: "k".to_owned(),
        source: transient(),
    };
    assert_eq!(direct.kind(), ErrorKind::Unavailable);
    let corrupt = crate::Error::Parquet {
        key: "k".to_owned(),
        source: ParquetError::General("invalid page header".to_owned()),
    };
    assert_eq!(corrupt.kind(), ErrorKind::DataLoss);
}

/// Suspicion "silent truncation": a panic in a read task ended the stream
/// cleanly, which a client takes for a complete read.
#[tokio::test]
async fn a_panic_in_a_read_is_an_error_not_a_clean_end() {
    let fixture = Fixture::new().await;
    let log: LogName = "panic/read".parse().unwrap();
    let epoch = fixture.create_log(&log).await;
    let start = crate::testing::PANIC_AT_OFFSET_BASE;
    fixture
        .offloaded_segment(&log, epoch, start, payloads(10, 8))
        .await;
    crate::testing::panic_at_offset(start + 3);
    let engine = fixture.engine(ReaderOptions::default());
    let mut items = engine.read(spec(&log, Start::Offset(start), false));
    let err = loop {
        match items.recv().await {
            Some(Ok(_)) => {}
            Some(Err(err)) => break err,
            None => panic!("the read ended cleanly after its task panicked"),
        }
    };
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
}

/// Suspicion "Parquet corruption": bytes that differ from what was
/// offloaded (the manifest's CRC32C) are DATA_LOSS, never wrong rows.
#[tokio::test]
async fn a_corrupt_parquet_file_is_data_loss_not_wrong_rows() {
    let fixture = Fixture::new().await;
    let log: LogName = "corrupt/file".parse().unwrap();
    let epoch = fixture.create_log(&log).await;
    // Incompressible payloads: zstd stores them as raw blocks.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let written: Vec<bytes::Bytes> = (0..50)
        .map(|_| {
            (0..4096)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect::<Vec<u8>>()
                .into()
        })
        .collect();
    let segment = fixture
        .offloaded_segment(&log, epoch, 0, written.clone())
        .await;
    use object_store::{ObjectStoreExt, PutPayload};
    let path: object_store::path::Path = segment.object.as_ref().unwrap().key.as_str().into();
    let bytes = fixture
        .objects
        .store
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut damaged = bytes.to_vec();
    // A byte in the middle of the payload column's pages.
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x5a;
    fixture
        .objects
        .store
        .put(&path, PutPayload::from(damaged))
        .await
        .unwrap();

    let engine = fixture.engine(ReaderOptions::default());
    let mut items = engine.read(spec(&log, Start::Earliest, false));
    let mut outcome = None;
    while let Some(item) = items.recv().await {
        match item {
            Ok(crate::ReadItem::Records(records)) => {
                for record in records {
                    assert!(
                        record.record.payload == written[record.offset as usize],
                        "record {} came back different from what was written",
                        record.offset
                    );
                }
            }
            Ok(crate::ReadItem::EndOfStream) => {}
            Err(err) => outcome = Some(err),
        }
    }
    let err = outcome.expect("the damaged file is refused");
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
}

/// Issue 22 item 11: reads are bounded per node; a read whose client went
/// away gives its place back.
#[tokio::test]
async fn reads_over_the_node_bound_are_resource_exhausted_until_one_leaves() {
    let fixture = Fixture::new().await;
    let log: LogName = "bound/reads".parse().unwrap();
    fixture.create_log(&log).await;
    let engine = fixture.engine(ReaderOptions {
        max_reads: 2,
        ..ReaderOptions::default()
    });
    let a = engine.read(spec(&log, Start::Earliest, true));
    let _b = engine.read(spec(&log, Start::Earliest, true));
    assert!(eventually(Duration::from_secs(3), || engine.running_reads() == 2).await);
    let mut c = engine.read(spec(&log, Start::Earliest, true));
    match c.recv().await {
        Some(Err(err)) => assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}"),
        other => panic!("a third read gave {other:?}"),
    }
    drop(a);
    assert!(eventually(Duration::from_secs(3), || engine.running_reads() == 1).await);
    let mut d = engine.read(spec(&log, Start::Earliest, false));
    assert!(d.recv().await.is_none(), "admitted, and nothing to read");
}

/// A read pinned to a log id reads that incarnation or nothing: an older
/// id (deleted) is `NOT_FOUND`, a newer one (this node's view lags) is a
/// retryable `UNAVAILABLE`, whatever the start; the start (tail, earliest)
/// is never measured on another incarnation first.
#[tokio::test]
async fn a_read_pinned_to_another_log_id_reads_nothing_of_this_one() {
    let fixture = Fixture::new().await;
    fixture.create_log(&"pinned/first".parse().unwrap()).await;
    let log: LogName = "pinned/read".parse().unwrap();
    let epoch = fixture.create_log(&log).await;
    fixture
        .offloaded_segment(&log, epoch, 0, payloads(5, 8))
        .await;
    let id = fixture.manifest.log(&log).await.unwrap().log_id;
    assert!(id > 1);
    let engine = fixture.engine(ReaderOptions::default());
    for (pinned, kind) in [
        (id - 1, ErrorKind::NotFound),
        (id + 1, ErrorKind::Unavailable),
    ] {
        let err = engine
            .check_start(&log, Start::Earliest, Some(pinned))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        for start in [Start::Earliest, Start::Tail, Start::Offset(0)] {
            let mut pinned_spec = spec(&log, start, true);
            pinned_spec.log_id = Some(pinned);
            let mut items = engine.read(pinned_spec);
            match items.recv().await {
                Some(Err(err)) => assert_eq!(err.kind(), kind, "{start:?}: {err}"),
                other => panic!("a read pinned to id {pinned} from {start:?} gave {other:?}"),
            }
        }
    }
    let checked = engine.check_start(&log, Start::Earliest, Some(id)).await;
    assert_eq!(checked.unwrap(), id);
    assert_eq!(engine.check_tail(&log).await.unwrap().log_id, id);
}

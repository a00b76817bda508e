//! Read-path safety tests on the [`crate::testing`] fixture (embedded
//! metastore, in-memory object store, cache nodes that do not exist): a log
//! named `sub` is watched like any other, an unknown LAC is an error and
//! never "the start of the open segment", and a read whose client went away
//! stops with everything it held.

use std::time::Duration;

use dlog_infra::error::{Classify, ErrorKind};
use dlog_infra::names::LogName;

use crate::engine::{ReadSpec, ReaderOptions, Start};
use crate::log_view::LogViews;
use crate::testing::{Fixture, eventually};

fn spec(log: &LogName, start: Start, follow: bool) -> ReadSpec {
    ReadSpec {
        log: log.clone(),
        start,
        limit: None,
        follow,
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

//! What guards a cache node's journal beyond replay: a segment damaged here
//! refuses adds and fences (however the damage was found) until it is
//! dropped, and the journal directory's lock keeps a second store out
//! without getting in the way of the node's own directory lock.

use bytes::Bytes;
use dlog_cache::error::Error;
use dlog_cache::{CacheStore, ReadMode, SegmentKey, StoreOptions, identity};
use dlog_wire::codec::{EntryHeader, EntryRecord, encode_entry};
use dlog_wire::ids::Epoch;
use dlog_wire::record::Record;

fn key(log_id: u64, segment_id: u64) -> SegmentKey {
    SegmentKey { log_id, segment_id }
}

fn entry(segment: SegmentKey, entry_id: u64) -> Bytes {
    encode_entry(
        &EntryHeader {
            log_id: segment.log_id,
            segment_id: segment.segment_id,
            entry_id,
            epoch: 1,
            first_offset: entry_id,
            lac: entry_id.checked_sub(1),
            record_count: 1,
        },
        &[EntryRecord {
            timestamp_ms: 1_700_000_000_000,
            record: Record::new(format!("guarded {segment} {entry_id}")),
        }],
    )
}

async fn add(store: &CacheStore, segment: SegmentKey, entry_id: u64) {
    store
        .add(segment, Epoch(1), entry(segment, entry_id))
        .unwrap()
        .await
        .unwrap();
}

/// Flips a bit in the payload of `segment`'s entry `entry_id` in the newest
/// journal file.
fn flip(dir: &std::path::Path, segment: SegmentKey, entry_id: u64) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    let file = files.pop().unwrap();
    let mut data = std::fs::read(&file).unwrap();
    let needle = format!("guarded {segment} {entry_id}");
    let at = data
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap();
    data[at] ^= 0x20;
    std::fs::write(&file, &data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_segment_refuses_adds_and_fences_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (s, t) = (key(1, 1), key(2, 1));
    {
        let store = CacheStore::open(StoreOptions::new(dir.path())).unwrap();
        add(&store, s, 0).await;
        add(&store, s, 1).await;
        add(&store, t, 0).await;
        store.shutdown();
    }
    flip(dir.path(), s, 0);
    {
        let store = CacheStore::open(StoreOptions::new(dir.path())).unwrap();
        assert!(matches!(
            store.fence(s, Epoch(2)).await,
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            store.add(s, Epoch(2), entry(s, 2)),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            store.advance_lac(s, Epoch(2), 1),
            Err(Error::Corrupt { .. })
        ));
        // The other segment is served, and the damaged one can be dropped
        // (its data was offloaded from another replica).
        store.fence(t, Epoch(2)).await.unwrap();
        store.drop_segment(s).await.unwrap();
        store.shutdown();
    }
    let store = CacheStore::open(StoreOptions::new(dir.path())).unwrap();
    let read = store.read(s, 0, 10, ReadMode::Recovery { epoch: 3 }).await;
    assert!(matches!(read, Err(Error::Dropped { .. })), "{read:?}");
    assert_eq!(store.segments(), vec![t]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_failure_on_read_stops_fences_and_adds() {
    let dir = tempfile::tempdir().unwrap();
    let s = key(1, 1);
    {
        let store = CacheStore::open(StoreOptions::new(dir.path())).unwrap();
        add(&store, s, 0).await;
        add(&store, s, 1).await;
        store.shutdown();
    }
    // Replayed intact, then damaged on disk while the node runs (nothing is
    // in the hot cache after a restart).
    let store = CacheStore::open(StoreOptions::new(dir.path())).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files.pop(); // the file this run writes
    let older = files.pop().unwrap();
    let mut data = std::fs::read(&older).unwrap();
    let needle = format!("guarded {s} 0");
    let at = data
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap();
    data[at] ^= 0x20;
    std::fs::write(&older, &data).unwrap();

    let read = store
        .read(s, 0, 10, ReadMode::Sealed { last_entry: 1 })
        .await;
    assert!(matches!(read, Err(Error::Corrupt { .. })), "{read:?}");
    assert!(matches!(
        store.fence(s, Epoch(2)).await,
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        store.add(s, Epoch(2), entry(s, 2)),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn the_journal_lock_keeps_a_second_store_out_and_lives_with_the_node_lock() {
    let dir = tempfile::tempdir().unwrap();
    // The node's own directory lock (held for the process's life) does not
    // stop the node from opening its store.
    let _node = identity::lock_dir(dir.path()).unwrap();
    let first = CacheStore::open(StoreOptions::new(dir.path())).unwrap();
    let second = CacheStore::open(StoreOptions::new(dir.path()));
    assert!(
        matches!(second, Err(Error::Locked { .. })),
        "{:?}",
        second.err()
    );
    // Released with the store.
    first.shutdown();
    drop(first);
    CacheStore::open(StoreOptions::new(dir.path())).unwrap();
}

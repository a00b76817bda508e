//! Read pages are bounded by count and by bytes: a caller's deadline per
//! call holds however large the segment and its entries are.

use bytes::Bytes;
use dlog_cache::{CacheStore, ReadMode, SegmentKey, StoreOptions};
use dlog_wire::codec::{EntryHeader, EntryRecord, encode_entry};
use dlog_wire::ids::Epoch;
use dlog_wire::record::Record;

const SEGMENT: SegmentKey = SegmentKey {
    log_id: 1,
    segment_id: 1,
};

/// Entry `id` with a payload of `size` bytes.
fn entry(id: u64, size: usize) -> Bytes {
    let header = EntryHeader {
        log_id: SEGMENT.log_id,
        segment_id: SEGMENT.segment_id,
        entry_id: id,
        epoch: 1,
        first_offset: id,
        lac: id.checked_sub(1),
        record_count: 1,
    };
    let record = EntryRecord {
        timestamp_ms: 0,
        record: Record::new(vec![b'x'; size]),
    };
    encode_entry(&header, &[record])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_stops_at_its_byte_cap_and_a_large_entry_goes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = CacheStore::open(StoreOptions::new(dir.path())).unwrap();
    let sizes = [1000, 1000, 1000, 5000, 1000];
    let mut adds = Vec::new();
    for (id, size) in (0..).zip(sizes) {
        adds.push(store.add(SEGMENT, Epoch(1), entry(id, size)).unwrap());
    }
    for add in futures::future::join_all(adds).await {
        add.unwrap();
    }
    let recovery = ReadMode::Recovery { epoch: 2 };
    let ids = |page: &[Bytes]| -> Vec<u64> {
        page.iter()
            .map(|bytes| dlog_wire::codec::verify_entry(bytes).unwrap().entry_id)
            .collect()
    };

    // Three entries of ~1 KB fit in 2.5 KB only two at a time.
    let page = store
        .read_page(SEGMENT, 0, 100, 2500, recovery)
        .await
        .unwrap();
    assert_eq!(ids(&page), [0, 1]);
    // The count bound still holds.
    let page = store
        .read_page(SEGMENT, 0, 1, 1 << 20, recovery)
        .await
        .unwrap();
    assert_eq!(ids(&page), [0]);
    // An entry larger than the cap is read alone, not refused.
    let page = store
        .read_page(SEGMENT, 3, 100, 2500, recovery)
        .await
        .unwrap();
    assert_eq!(ids(&page), [3]);
    // Without a byte cap, everything up to the count.
    let page = store.read(SEGMENT, 0, 100, recovery).await.unwrap();
    assert_eq!(ids(&page), [0, 1, 2, 3, 4]);
    store.shutdown();
}

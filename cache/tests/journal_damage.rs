//! Damage in the middle of the newest journal file versus a torn last batch.
//!
//! The newest file holds every batch synced since the node's last start, so
//! a damaged frame header there is not necessarily a torn write: replay must
//! not cut synced, acknowledged records (entries, fences) and keep serving
//! as if it never had them. A torn last batch (the one in flight at a crash)
//! is still cut, and the node stays trusted.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use dlog_cache::{CacheStore, ReadMode, SegmentKey, StoreOptions};
use dlog_wire::codec::{EntryHeader, EntryRecord, encode_entry};
use dlog_wire::error::{Classify, ErrorKind};
use dlog_wire::ids::Epoch;
use dlog_wire::record::Record;

use dlog_cache::journal::frame::{FRAME_HEADER_LEN, OPENER_LEN};

fn key(log_id: u64, segment_id: u64) -> SegmentKey {
    SegmentKey { log_id, segment_id }
}

fn entry(segment: SegmentKey, entry_id: u64, payload: Vec<u8>) -> Bytes {
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
            timestamp_ms: 1_700_000_000_000 + entry_id as i64,
            record: Record::new(Bytes::from(payload)),
        }],
    )
}

fn small(segment: SegmentKey, entry_id: u64) -> Bytes {
    entry(
        segment,
        entry_id,
        format!("payload {segment} {entry_id}").into_bytes(),
    )
}

fn open(dir: &Path) -> CacheStore {
    CacheStore::open(StoreOptions::new(dir)).unwrap()
}

/// Adds and waits until durable: every call is a group commit of its own.
async fn add(store: &CacheStore, segment: SegmentKey, bytes: Bytes) {
    store.add(segment, Epoch(1), bytes).unwrap().await.unwrap();
}

fn newest_file(dir: &Path) -> PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files.pop().unwrap()
}

fn find(data: &[u8], needle: &[u8]) -> usize {
    data.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in journal")
}

/// Every entry of `segment` the node serves to recovery, or its error kind.
async fn recovery_read(store: &CacheStore, segment: SegmentKey) -> Result<Vec<Bytes>, ErrorKind> {
    store
        .read(segment, 0, 100, ReadMode::Recovery { epoch: 2 })
        .await
        .map_err(|err| err.kind())
}

/// The loss sequence: S0..S4 and a fence of T at epoch 7 are synced and
/// acknowledged, each in a batch of its own, all in the newest file. A bit
/// of S1's frame header flips on the disk. Before the fix, replay took this
/// for a torn tail and cut the file there: the node came back trusted,
/// served S0 only (a definite "not held" for the acknowledged S1..S4) and
/// accepted a fence of T at 3 after it had answered one at 7.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_frame_header_mid_newest_file_does_not_silently_drop_synced_records() {
    let dir = tempfile::tempdir().unwrap();
    let (s, t) = (key(1, 1), key(2, 1));
    let entries: Vec<_> = (0..5).map(|id| small(s, id)).collect();
    {
        let store = open(dir.path());
        for bytes in &entries[..3] {
            add(&store, s, bytes.clone()).await;
        }
        add(&store, t, small(t, 0)).await;
        store.fence(t, Epoch(7)).await.unwrap();
        for bytes in &entries[3..] {
            add(&store, s, bytes.clone()).await;
        }
        store.shutdown();
    }
    let file = newest_file(dir.path());
    let mut data = std::fs::read(&file).unwrap();
    let payload = find(&data, &entries[1]);
    // The frame header ends where the payload starts; flip a bit of its
    // log id field (offset 5 of the header).
    data[payload - FRAME_HEADER_LEN + 5] ^= 0x01;
    std::fs::write(&file, &data).unwrap();

    let store = open(dir.path());
    let mut broken = Vec::new();
    match recovery_read(&store, s).await {
        Ok(read) if read == entries => {}
        Ok(read) => broken.push(format!(
            "node trusted, serves {} of S's 5 acknowledged entries: a definite \"not held\" for the rest",
            read.len()
        )),
        Err(ErrorKind::DataLoss) => {}
        Err(kind) => broken.push(format!("read of S failed with {kind:?}")),
    }
    if let Ok(progress) = store.fence(t, Epoch(3)).await {
        broken.push(format!(
            "fence of T at 3 accepted ({progress:?}) after the node answered a fence at 7"
        ));
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

/// The batch in flight at a crash is the only one that can be torn: cut at
/// its first bad frame, and the node stays trusted (it serves, fences and
/// acknowledges as before). Three ways the last batch can look: the file
/// ends inside it; a bit of its frame header never reached the disk; bytes
/// after it (here a copy of the file's first batch, marker included, and
/// garbage) that the writer never synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_batch_is_cut_and_the_node_stays_trusted() {
    #[derive(Debug, Clone, Copy)]
    enum Tear {
        Truncated,
        FlippedHeader,
        GarbageAfter,
    }
    for tear in [Tear::Truncated, Tear::FlippedHeader, Tear::GarbageAfter] {
        let dir = tempfile::tempdir().unwrap();
        let s = key(1, 1);
        let entries: Vec<_> = (0..4).map(|id| small(s, id)).collect();
        {
            let store = open(dir.path());
            for bytes in &entries {
                add(&store, s, bytes.clone()).await;
            }
            store.shutdown();
        }
        let file = newest_file(dir.path());
        let mut data = std::fs::read(&file).unwrap();
        let last = find(&data, &entries[3]);
        let first_batch_end = find(&data, &entries[0]) + entries[0].len();
        let kept = match tear {
            Tear::Truncated => {
                data.truncate(last + 10);
                3
            }
            Tear::FlippedHeader => {
                // The last batch was in flight: the opener written after
                // its sync never was.
                data.truncate(data.len() - OPENER_LEN);
                data[last - FRAME_HEADER_LEN + 5] ^= 0x01;
                3
            }
            Tear::GarbageAfter => {
                let copy = data[28..first_batch_end].to_vec();
                data.extend_from_slice(&copy);
                data.extend_from_slice(&[0xA5; 100]);
                4
            }
        };
        std::fs::write(&file, &data).unwrap();

        let store = open(dir.path());
        assert_eq!(
            recovery_read(&store, s).await,
            Ok(entries[..kept].to_vec()),
            "{tear:?}: the synced batches are served, the torn one is cut"
        );
        let progress = store.fence(s, Epoch(5)).await;
        assert!(progress.is_ok(), "{tear:?}: node trusted: {progress:?}");
        store
            .add(s, Epoch(5), small(s, kept as u64))
            .unwrap()
            .await
            .unwrap_or_else(|err| panic!("{tear:?}: add after the cut: {err}"));
    }
}

/// A payload may hold anything, also a byte-exact copy of a real batch
/// start of the same file (sync marker and frame). The last batch's frame
/// header is damaged (a torn write) and its payload holds such a copy after
/// the damage: the copy does not verify at its new offset, so it is not
/// taken for a later batch (which would make the node give up its copy as
/// lost) and is never read as a record; the batch is cut as torn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_start_copied_into_a_payload_is_not_taken_for_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (s, x) = (key(1, 1), key(9, 1));
    let x0 = small(x, 0);
    let (s0, s1) = {
        let store = open(dir.path());
        add(&store, x, x0.clone()).await;
        let data = std::fs::read(newest_file(dir.path())).unwrap();
        // Everything after the file header: X0's batch, as the writer put it.
        let mut copy = b"copied: ".to_vec();
        copy.extend_from_slice(&data[28..]);
        copy.extend_from_slice(b" :copied");
        let (s0, s1) = (entry(s, 0, copy.clone()), entry(s, 1, copy));
        add(&store, s, s0.clone()).await;
        add(&store, s, s1.clone()).await;
        store.shutdown();
        (s0, s1)
    };
    let file = newest_file(dir.path());
    let mut data = std::fs::read(&file).unwrap();
    // S1's batch was in flight (no opener after it) and torn.
    data.truncate(data.len() - OPENER_LEN);
    let last = find(&data, &s1);
    data[last - FRAME_HEADER_LEN + 5] ^= 0x01;
    std::fs::write(&file, &data).unwrap();

    let store = open(dir.path());
    assert_eq!(recovery_read(&store, s).await, Ok(vec![s0]));
    assert_eq!(recovery_read(&store, x).await, Ok(vec![x0]));
    let mut segments = store.segments();
    segments.sort_by_key(|k| (k.log_id, k.segment_id));
    assert_eq!(segments, vec![s, x], "no record read out of a payload");
}

/// A flipped bit in the magic or version of a file's header (the file holds
/// records) is damage, not a file of another format: the node starts, and
/// serves nothing (`DATA_LOSS`) until its journal directory is wiped,
/// instead of refusing to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_a_file_magic_or_version_makes_the_node_lost() {
    for byte in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let s = key(1, 1);
        {
            let store = open(dir.path());
            add(&store, s, small(s, 0)).await;
            store.shutdown();
        }
        let file = newest_file(dir.path());
        let mut data = std::fs::read(&file).unwrap();
        data[byte] ^= 0x02;
        std::fs::write(&file, &data).unwrap();

        let store = CacheStore::open(StoreOptions::new(dir.path()))
            .unwrap_or_else(|err| panic!("byte {byte}: refused to start: {err}"));
        assert_eq!(
            recovery_read(&store, s).await,
            Err(ErrorKind::DataLoss),
            "byte {byte}"
        );
        store.shutdown();
        drop(store);
        assert!(file.exists(), "the damaged file is kept");
        let again = CacheStore::open(StoreOptions::new(dir.path())).unwrap();
        assert_eq!(recovery_read(&again, s).await, Err(ErrorKind::DataLoss));
    }
}

/// The LAST synced batch of the newest file (here a fence of T at 7,
/// answered) gets one flipped bit, in its frame header or its payload,
/// while the node is down after a clean stop, nothing in flight. Before
/// journal format 5 no later batch start followed it, so replay took it for
/// a torn tail and cut it: the node stayed trusted and accepted a fence of
/// T at 3. Now the opener written after its sync is behind it: damage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_the_last_synced_batch_is_not_cut() {
    for (part, at) in [("header", 5), ("payload", FRAME_HEADER_LEN)] {
        let dir = tempfile::tempdir().unwrap();
        let (s, t) = (key(1, 1), key(2, 1));
        {
            let store = open(dir.path());
            for id in 0..5 {
                add(&store, s, small(s, id)).await;
            }
            add(&store, t, small(t, 0)).await;
            store.fence(t, Epoch(7)).await.unwrap();
            store.shutdown();
        }
        let file = newest_file(dir.path());
        let mut data = std::fs::read(&file).unwrap();
        // The fence frame (header and 8-byte epoch) ends where the opener starts.
        let fence_frame = data.len() - OPENER_LEN - 8 - FRAME_HEADER_LEN;
        data[fence_frame + at] ^= 0x01;
        std::fs::write(&file, &data).unwrap();

        let store = open(dir.path());
        assert!(
            store.fence(t, Epoch(3)).await.is_err(),
            "{part}: a fence below the one the node had synced (7) was accepted"
        );
    }
}

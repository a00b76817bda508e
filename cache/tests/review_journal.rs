//! Adversarial review of the v2 journal (chained frames, damage marking):
//! event sequences that the replay rules handle wrongly. Each test states
//! the sequence; each currently FAILS on main (no production fix here).

use dlog_wire::ids::Epoch;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use dlog_cache::error::Error;
use dlog_cache::journal::frame::OPENER_LEN;
use dlog_cache::{CacheStore, ReadMode, SegmentKey, StoreOptions};
use dlog_wire::codec::{EntryHeader, EntryRecord, encode_entry};
use dlog_wire::error::{Classify, ErrorKind};
use dlog_wire::record::Record;

fn key(log_id: u64, segment_id: u64) -> SegmentKey {
    SegmentKey { log_id, segment_id }
}

fn entry(segment: SegmentKey, entry_id: u64, epoch: u64, payload: Vec<u8>) -> Bytes {
    encode_entry(
        &EntryHeader {
            log_id: segment.log_id,
            segment_id: segment.segment_id,
            entry_id,
            epoch,
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

fn small(segment: SegmentKey, entry_id: u64, epoch: u64) -> Bytes {
    entry(
        segment,
        entry_id,
        epoch,
        format!("payload {segment} {entry_id}").into_bytes(),
    )
}

fn open_with(dir: &Path, roll_bytes: Option<u64>) -> Arc<CacheStore> {
    let mut options = StoreOptions::new(dir);
    if let Some(roll) = roll_bytes {
        options.journal.roll_bytes = roll;
    }
    Arc::new(CacheStore::open(options).unwrap())
}

async fn add(store: &CacheStore, bytes: Bytes, segment: SegmentKey, epoch: u64) {
    store
        .add(segment, Epoch(epoch), bytes)
        .unwrap()
        .await
        .unwrap();
}

fn journal_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn find(data: &[u8], needle: &[u8]) -> usize {
    data.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in journal")
}

/// Finding 1. Power loss while a group-commit batch [S entry 3 (12 KiB),
/// T entry 0] is being written: the batch's pages reach the disk in any
/// order, here the pages wholly inside S3's payload do not, while T0's
/// frame (a later page) does. Nothing of the batch was acknowledged, and
/// ARCHITECTURE.md says replay "cuts the newest file at its first bad frame
/// (the batch's pages may land in any order: all after it goes too)".
/// Replay instead sees "payload bad, next frame good" and marks S damaged:
/// S's ACKNOWLEDGED, intact entries 0..2 are refused with DATA_LOSS on this
/// node for good, while the node still answers fences and acks adds for S
/// (see finding 3 for why that loses acknowledged entries in recovery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_unacknowledged_batch_does_not_hide_acknowledged_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (s, t) = (key(1, 1), key(2, 1));
    let big = entry(s, 3, 1, vec![0x5A; 12 * 1024]);
    let mut acked = Vec::new();
    {
        let mut options = StoreOptions::new(dir.path());
        options.journal.max_batch_bytes = 64 * 1024;
        let store = CacheStore::open(options).unwrap();
        for id in 0..3 {
            let bytes = small(s, id, 1);
            add(&store, bytes.clone(), s, 1).await;
            acked.push(bytes);
        }
        // One batch in flight at the crash (queued back to back). An entry
        // of another segment that fills a batch of its own goes first, so
        // S3 and T0 queue while the writer syncs it and are taken together.
        let u = key(3, 1);
        let filler = store
            .add(u, Epoch(1), entry(u, 0, 1, vec![0xA5; 64 * 1024]))
            .unwrap();
        let a = store.add(s, Epoch(1), big.clone()).unwrap();
        let b = store.add(t, Epoch(1), small(t, 0, 1)).unwrap();
        let _ = (filler.await, a.await, b.await);
        store.shutdown();
    }
    let file = journal_files(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&file).unwrap();
    // In flight at the crash: no opener of a next batch behind it.
    data.truncate(data.len() - OPENER_LEN);
    let payload = find(&data, &big[..64]);
    let (first_page, end) = (payload.div_ceil(4096) * 4096, payload + big.len());
    let last_page = end / 4096 * 4096;
    assert!(last_page > first_page, "a whole page inside the payload");
    data[first_page..last_page].fill(0); // never reached the disk
    std::fs::write(&file, &data).unwrap();

    let store = open_with(dir.path(), None);
    let read = store
        .read(s, 0, 10, ReadMode::Recovery { epoch: 2 })
        .await
        .map_err(|err| err.to_string());
    assert_eq!(
        read.map(|entries| entries[..3.min(entries.len())].to_vec()),
        Ok(acked),
        "acknowledged entries before a torn, unacknowledged write must stay readable"
    );
}

/// Finding 2. A bit flip in the 8-byte payload of a `Fence` record (any
/// file, a good frame after it): replay marks the segment damaged but drops
/// the fence, so the fencing epoch goes back to what earlier records say
/// (here: nothing). The deposed owner's adds at the old epoch are accepted
/// and ACKNOWLEDGED again, and a lower fence is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_fence_record_does_not_let_the_deposed_owner_add() {
    let dir = tempfile::tempdir().unwrap();
    let (s, t) = (key(7, 3), key(8, 1));
    let fence_end = {
        let store = open_with(dir.path(), None);
        add(&store, small(s, 0, 1), s, 1).await;
        store.fence(s, Epoch(5)).await.unwrap();
        let file = journal_files(dir.path()).pop().unwrap();
        // The fence's batch, then the next batch's opener.
        let fence_end = std::fs::metadata(&file).unwrap().len() as usize - OPENER_LEN;
        add(&store, small(t, 0, 1), t, 1).await;
        store.shutdown();
        fence_end
    };
    let file = journal_files(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&file).unwrap();
    assert_eq!(&data[fence_end - 8..fence_end], &5u64.to_le_bytes());
    data[fence_end - 8] ^= 0x02; // the epoch's low byte
    std::fs::write(&file, &data).unwrap();

    let store = open_with(dir.path(), None);
    let mut broken = Vec::new();
    match store.add(s, Epoch(1), small(s, 1, 1)) {
        Ok(ack) => broken.push(format!(
            "add at epoch 1 after fence 5 accepted, acknowledged: {:?}",
            ack.await
        )),
        Err(err) => eprintln!("add refused: {err}"),
    }
    if let Ok(progress) = store.fence(s, Epoch(2)).await {
        broken.push(format!("fence 2 after fence 5 accepted: {progress:?}"));
    }
    assert!(broken.is_empty(), "fence went backwards: {broken:#?}");
}

/// Finding 3. A segment marked damaged on replay (bit flip, or finding 1's
/// torn batch) refuses every read, recovery reads included, with DATA_LOSS,
/// but still answers `Fence` with its progress and acknowledges adds and
/// recovery copies. Ingest recovery counts a fence answer as coverage of the
/// acknowledged entries (needs E-A+1 answers) and treats a failed read as
/// "try another node", then seals where no responder can serve: so with
/// E=3, A=2, entries acked by {damaged D, C}, C down, recovery fences {D, B},
/// reads nothing past B's copy and seals short of acknowledged entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_damaged_here_does_not_count_as_a_fence_answer_or_ack() {
    let dir = tempfile::tempdir().unwrap();
    let (s, t) = (key(1, 1), key(2, 1));
    {
        let store = open_with(dir.path(), None);
        for id in 0..3 {
            add(&store, small(s, id, 1), s, 1).await;
            add(&store, small(t, id, 1), t, 1).await;
        }
        store.shutdown();
    }
    let file = journal_files(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&file).unwrap();
    let at = find(&data, b"payload 1/1 1");
    data[at + 3] ^= 0x10;
    std::fs::write(&file, &data).unwrap();

    let store = open_with(dir.path(), None);
    let read = store
        .read(s, 0, 10, ReadMode::Recovery { epoch: 2 })
        .await
        .unwrap_err();
    assert_eq!(read.kind(), ErrorKind::DataLoss, "setup: S is damaged here");
    let mut broken = Vec::new();
    match store.fence(s, Epoch(2)).await {
        Ok(progress) => broken.push(format!(
            "fence answered {progress:?} although no entry can be read"
        )),
        Err(err) => eprintln!("fence: {err}"),
    }
    match store.add(s, Epoch(2), small(s, 3, 2)) {
        Ok(ack) => broken.push(format!(
            "add acknowledged ({:?}) for a segment this node refuses to read",
            ack.await
        )),
        Err(err) => eprintln!("add: {err}"),
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

/// Finding 4. The damaged frame is not registered as a use of its file, so
/// GC may delete the file holding the only evidence of the damage; after a
/// restart the segment is no longer marked damaged and answers as if it
/// simply never held the entry (and a lost `Fence` is no longer flagged).
/// Sequence (a file per batch): T0 in file 1, S0 in file 2, S1 in file 3;
/// S0's payload flipped; restart (S damaged); T dropped, GC deletes files 1
/// and 2; restart: S is served undamaged with a hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damage_mark_survives_the_gc_of_the_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let (s, t) = (key(1, 1), key(2, 1));
    {
        let store = open_with(dir.path(), Some(1));
        add(&store, small(t, 0, 1), t, 1).await;
        add(&store, small(s, 0, 1), s, 1).await;
        add(&store, small(s, 1, 1), s, 1).await;
        store.shutdown();
    }
    let files = journal_files(dir.path());
    let second = files[1].clone();
    let mut data = std::fs::read(&second).unwrap();
    let at = find(&data, b"payload 1/1 0");
    data[at + 3] ^= 0x10;
    std::fs::write(&second, &data).unwrap();
    {
        let store = open_with(dir.path(), Some(1));
        let err = store
            .read(s, 0, 10, ReadMode::Recovery { epoch: 2 })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DataLoss, "setup: S damaged: {err}");
        store.drop_segment(t).await.unwrap();
        store.shutdown();
    }
    assert!(!second.exists(), "setup: GC deleted the damaged file");

    let store = open_with(dir.path(), Some(1));
    let read = store.read(s, 0, 10, ReadMode::Recovery { epoch: 3 }).await;
    assert!(
        matches!(&read, Err(Error::Corrupt { .. })),
        "S must still be marked damaged after the restart: {read:?}"
    );
}

/// Finding 5 (minor, liveness). A torn creation of the newest file whose
/// 28 header bytes landed only in part (magic written, rest zeros) is
/// refused as "format version 0" and the node cannot start, where a fully
/// zero header of the same length is removed as a torn creation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_written_header_of_the_newest_file_is_a_torn_creation() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_with(dir.path(), None);
        add(&store, small(key(1, 1), 0, 1), key(1, 1), 1).await;
        store.shutdown();
    }
    let newest = journal_files(dir.path()).pop().unwrap();
    let name = newest.file_name().unwrap().to_str().unwrap();
    let seq: u64 = name["journal-".len()..name.len() - 4].parse().unwrap();
    let torn = dir.path().join(format!("journal-{:020}.log", seq + 1));
    let mut header = b"DLJF".to_vec();
    header.resize(28, 0);
    std::fs::write(&torn, &header).unwrap();
    let opened = CacheStore::open(StoreOptions::new(dir.path()));
    assert!(opened.is_ok(), "{:?}", opened.err().map(|e| e.to_string()));
}

/// Finding 6. Nothing stops a second process opening a journal directory a
/// running node is writing (the embedded metastore takes a LOCK file, the
/// cache store does not): e.g. a restarted node while the old process is
/// still draining. The second open's replay treats the running writer's
/// file as a crashed one: if it reads it mid-batch it cuts the "torn tail"
/// with `set_len`, truncating bytes the first process then fsyncs and
/// ACKNOWLEDGES (its index then points past the end of the file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_on_a_journal_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = key(1, 1);
    let first = open_with(dir.path(), None);
    add(&first, small(s, 0, 1), s, 1).await;
    let second = CacheStore::open(StoreOptions::new(dir.path()));
    assert!(
        second.is_err(),
        "a second store opened (and replayed, and may cut) a journal in use"
    );
}

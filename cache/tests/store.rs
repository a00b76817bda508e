//! The cache store against its guarantees: durability across reopen,
//! torn tails and bit flips, sticky fencing, LAC long-polls and reads that
//! never pass the LAC, many concurrent segments with group commit, drops
//! and journal garbage collection.

use dlog_wire::ids::Epoch;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dlog_cache::error::Error;
use dlog_cache::journal::frame::OPENER_LEN;
use dlog_cache::{CacheStore, ReadMode, SegmentKey, StoreOptions};
use dlog_wire::codec::{EntryHeader, EntryRecord, encode_entry};
use dlog_wire::record::Record;

fn key(log_id: u64, segment_id: u64) -> SegmentKey {
    SegmentKey { log_id, segment_id }
}

/// Entry `entry_id` of `segment`, one record per entry, carrying `lac`.
fn entry(segment: SegmentKey, entry_id: u64, epoch: u64, lac: Option<u64>, payload: &str) -> Bytes {
    encode_entry(
        &EntryHeader {
            log_id: segment.log_id,
            segment_id: segment.segment_id,
            entry_id,
            epoch,
            first_offset: entry_id,
            lac,
            record_count: 1,
        },
        &[EntryRecord {
            timestamp_ms: 1_700_000_000_000 + entry_id as i64,
            record: Record::new(payload.to_owned()),
        }],
    )
}

fn open(dir: &std::path::Path) -> Arc<CacheStore> {
    Arc::new(CacheStore::open(StoreOptions::new(dir)).unwrap())
}

async fn add(
    store: &CacheStore,
    segment: SegmentKey,
    id: u64,
    epoch: u64,
    lac: Option<u64>,
) -> Bytes {
    let bytes = entry(segment, id, epoch, lac, &format!("payload {segment} {id}"));
    store
        .add(segment, Epoch(epoch), bytes.clone())
        .unwrap()
        .await
        .unwrap();
    bytes
}

fn journal_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_survive_reopen_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let s = key(1, 1);
    let mut written = Vec::new();
    {
        let store = open(dir.path());
        for id in 0..20 {
            written.push(add(&store, s, id, 1, id.checked_sub(1)).await);
        }
        store.advance_lac(s, Epoch(1), 19).unwrap();
        store.shutdown();
    }
    let store = open(dir.path());
    // The LAC piggybacked on entry 19 was 18; the explicit one was not journaled.
    let read = store.read(s, 0, 100, ReadMode::Committed).await.unwrap();
    assert_eq!(read, written[..19].to_vec());
    // A recovery read sees every entry held, byte for byte.
    let all = store
        .read(s, 0, 100, ReadMode::Recovery { epoch: 2 })
        .await
        .unwrap();
    assert_eq!(all, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_never_served() {
    // Torn two ways: the file ends inside the last frame, or it has its full
    // length but the last frame's end never reached the disk (zeros).
    for zeroed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let s = key(1, 1);
        let (kept, full_len) = {
            let store = open(dir.path());
            let mut kept = Vec::new();
            for id in 0..5 {
                kept.push(add(&store, s, id, 1, None).await);
            }
            let full_len = std::fs::metadata(journal_files(dir.path()).pop().unwrap())
                .unwrap()
                .len();
            add(&store, s, 5, 1, None).await;
            store.shutdown();
            (kept, full_len)
        };
        // A crash while entry 5 was being written: the opener of the batch
        // after it was never written.
        let file = journal_files(dir.path()).pop().unwrap();
        let mut data = std::fs::read(&file).unwrap();
        data.truncate(data.len() - OPENER_LEN);
        let end = data.len();
        if zeroed {
            data[end - 10..].fill(0);
        } else {
            data.truncate(end - 10);
        }
        std::fs::write(&file, &data).unwrap();

        let store = open(dir.path());
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            full_len,
            "torn tail cut (zeroed: {zeroed})"
        );
        let all = store
            .read(s, 0, 100, ReadMode::Recovery { epoch: 2 })
            .await
            .unwrap();
        assert_eq!(
            all, kept,
            "entries before the tear are intact, the torn one is absent"
        );
        assert_eq!(store.progress(s).unwrap().last_entry_id, Some(4));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_file_creation_is_removed_and_other_formats_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = key(1, 1);
    let kept = {
        let store = open(dir.path());
        let kept = add(&store, s, 0, 1, None).await;
        store.shutdown();
        kept
    };
    // A crash right after a new file was created: its header never landed.
    let torn = dir.path().join("journal-00000000000000000009.log");
    std::fs::write(&torn, [0u8; 12]).unwrap();
    let store = open(dir.path());
    assert!(!torn.exists(), "the torn new file is removed");
    assert_eq!(
        store
            .read(s, 0, 10, ReadMode::Recovery { epoch: 2 })
            .await
            .unwrap(),
        vec![kept]
    );
    store.shutdown();
    drop(store);

    // A file of another format version (its header's checksum verifies)
    // is refused, never guessed at. (Only the version changed, checksum
    // not: a flipped bit, see `journal_damage.rs`.)
    let file = journal_files(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&file).unwrap();
    data[4..8].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32c::crc32c(&data[..24]);
    data[24..28].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&file, &data).unwrap();
    let err = CacheStore::open(StoreOptions::new(dir.path())).unwrap_err();
    let expected = format!(
        "journal file {} is refused: journal format version 1; this build reads versions 3 to 5 \
         only; ",
        file.display()
    );
    assert!(err.to_string().starts_with(&expected), "{err}");
    assert!(err.to_string().contains("--reinit-cache"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_marks_only_the_damaged_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (damaged, healthy) = (key(1, 1), key(2, 1));
    let healthy_entries = {
        let store = open(dir.path());
        let mut healthy_entries = Vec::new();
        for id in 0..3 {
            add(&store, damaged, id, 1, None).await;
            healthy_entries.push(add(&store, healthy, id, 1, None).await);
        }
        store.shutdown();
        healthy_entries
    };
    // Flip one bit inside the payload of the damaged segment's entry 1.
    let file = journal_files(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&file).unwrap();
    let needle = b"payload 1/1 1";
    let at = data
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    data[at + 3] ^= 0x10;
    std::fs::write(&file, &data).unwrap();

    let store = open(dir.path());
    let err = store
        .read(damaged, 0, 10, ReadMode::Recovery { epoch: 2 })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { segment, .. } if segment == damaged),
        "{err}"
    );
    assert!(err.to_string().contains("read it from another replica"));
    assert_eq!(
        dlog_wire::error::Classify::kind(&err),
        dlog_wire::error::ErrorKind::DataLoss
    );
    let read = store
        .read(healthy, 0, 10, ReadMode::Recovery { epoch: 2 })
        .await
        .unwrap();
    assert_eq!(
        read, healthy_entries,
        "the records after the damage are kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_is_sticky_covers_unheld_entries_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = key(7, 3);
    {
        let store = open(dir.path());
        add(&store, s, 0, 1, None).await;
        add(&store, s, 1, 1, Some(0)).await;
        let progress = store.fence(s, Epoch(2)).await.unwrap();
        assert_eq!((progress.last_entry_id, progress.lac), (Some(1), Some(0)));

        // The old owner can add nothing, not even entries this node lacks.
        for id in [1, 2, 50] {
            let err = store
                .add(s, Epoch(1), entry(s, id, 1, None, "late"))
                .err()
                .unwrap();
            assert!(
                matches!(
                    err,
                    Error::Fenced {
                        epoch: 1,
                        fenced: 2,
                        ..
                    }
                ),
                "{err}"
            );
        }
        assert_eq!(
            err_text(
                store
                    .add(s, Epoch(1), entry(s, 2, 1, None, "late"))
                    .err()
                    .unwrap()
            ),
            "segment 7/3 is fenced at epoch 2: epoch 1 refused"
        );
        assert!(matches!(
            store.advance_lac(s, Epoch(1), 5),
            Err(Error::Fenced { .. })
        ));
        // A lower fence is refused too; the recovering owner copies at epoch 2.
        assert!(matches!(
            store.fence(s, Epoch(1)).await,
            Err(Error::Fenced { .. })
        ));
        store
            .add(s, Epoch(2), entry(s, 2, 1, Some(1), "copied"))
            .unwrap()
            .await
            .unwrap();
        // A fence on a segment the node never saw still refuses older adds.
        let unseen = key(7, 4);
        store.fence(unseen, Epoch(5)).await.unwrap();
        assert!(matches!(
            store.add(unseen, Epoch(4), entry(unseen, 0, 4, None, "x")),
            Err(Error::Fenced { fenced: 5, .. })
        ));
        store.shutdown();
    }
    let store = open(dir.path());
    assert!(matches!(
        store.add(s, Epoch(1), entry(s, 3, 1, None, "after restart")),
        Err(Error::Fenced { fenced: 2, .. })
    ));
    assert!(matches!(
        store.add(key(7, 4), Epoch(4), entry(key(7, 4), 0, 4, None, "x")),
        Err(Error::Fenced { fenced: 5, .. })
    ));
    // Recovery reads fence as they read: epoch 3 refuses epoch 2 afterwards.
    let read = store
        .read(s, 0, 10, ReadMode::Recovery { epoch: 3 })
        .await
        .unwrap();
    assert_eq!(read.len(), 3);
    assert!(matches!(
        store.add(s, Epoch(2), entry(s, 3, 2, None, "x")),
        Err(Error::Fenced { fenced: 3, .. })
    ));
}

fn err_text(err: Error) -> String {
    err.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_adds_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let s = key(1, 1);
    let mut corrupt = entry(s, 0, 1, None, "x").to_vec();
    corrupt[70] ^= 1;
    let err = store.add(s, Epoch(1), Bytes::from(corrupt)).err().unwrap();
    assert!(matches!(err, Error::InvalidEntry(_)), "{err}");
    let err = store
        .add(key(1, 2), Epoch(1), entry(s, 0, 1, None, "x"))
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "entry does not match its request: entry of segment 1/1 sent for segment 1/2"
    );
    let err = store
        .add(s, Epoch(1), entry(s, 0, 2, None, "x"))
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("written at epoch 2 sent with epoch 1")
    );
    assert!(store.progress(s).is_none_or(|p| p.last_entry_id.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_stop_at_the_lac_and_long_polls_wake_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let s = key(3, 1);
    add(&store, s, 0, 1, None).await;
    add(&store, s, 1, 1, Some(0)).await;
    // Entry 1 is durable here but not known to be acknowledged: not readable.
    assert_eq!(
        store
            .read(s, 0, 10, ReadMode::Committed)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .read(s, 1, 10, ReadMode::Committed)
            .await
            .unwrap()
            .is_empty()
    );

    // A long-poll for LAC > 0 times out when nothing happens...
    let start = Instant::now();
    let progress = store
        .wait_for_lac(s, Some(0), Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(progress.lac, Some(0));
    assert!(start.elapsed() >= Duration::from_millis(190));

    // ...and returns as soon as the LAC moves.
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let p = store
                .wait_for_lac(s, Some(0), Duration::from_secs(10))
                .await
                .unwrap();
            (p, start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    store.advance_lac(s, Epoch(1), 1).unwrap();
    let (progress, waited) = waiter.await.unwrap();
    assert_eq!(progress.lac, Some(1));
    assert!(waited < Duration::from_secs(2), "woke after {waited:?}");
    assert_eq!(
        store
            .read(s, 0, 10, ReadMode::Committed)
            .await
            .unwrap()
            .len(),
        2
    );

    // A long-poll on a segment not seen yet waits for its first LAC.
    let fresh = key(3, 2);
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .wait_for_lac(fresh, None, Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    add(&store, fresh, 0, 1, None).await;
    add(&store, fresh, 1, 1, Some(0)).await;
    assert_eq!(waiter.await.unwrap().unwrap().lac, Some(0));

    // An entry below the LAC that this node misses (a lagging replica
    // hears the LAC before its entries): ask another replica.
    let gap = key(3, 3);
    add(&store, gap, 0, 1, None).await;
    store.advance_lac(gap, Epoch(1), 2).unwrap();
    let err = store
        .read(gap, 1, 10, ReadMode::Committed)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "entry 1 of segment 3/3 is not on this node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_segments_written_concurrently_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tasks = Vec::new();
    for segment_id in 0..1000u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let s = key(segment_id % 10, segment_id);
            for id in 0..5 {
                add(&store, s, id, 1, id.checked_sub(1)).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = store.journal_stats();
    let records = stats.records.load(std::sync::atomic::Ordering::Relaxed);
    let fsyncs = stats.fsyncs.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(records, 5000);
    assert!(
        fsyncs < records / 4,
        "group commit: {fsyncs} fsyncs for {records} records"
    );
    for segment_id in (0..1000u64).step_by(37) {
        let s = key(segment_id % 10, segment_id);
        let read = store.read(s, 0, 10, ReadMode::Committed).await.unwrap();
        assert_eq!(read.len(), 4, "entries up to the LAC (3) of segment {s}");
    }
    assert_eq!(store.segment_count(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_segments_free_their_journal_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.journal.roll_bytes = 2 * 1024;
    let (old, live) = (key(1, 1), key(1, 2));
    {
        let store = Arc::new(CacheStore::open(options.clone()).unwrap());
        for id in 0..100 {
            add(&store, old, id, 1, None).await;
        }
        let before = journal_files(dir.path());
        assert!(before.len() >= 3, "rolled into several files: {before:?}");
        store.drop_segment(old).await.unwrap();
        // Later writes roll on; the files only the old segment used go.
        // The last one also takes the live segment's first entries.
        for id in 0..100 {
            add(&store, live, id, 1, None).await;
        }
        let after = journal_files(dir.path());
        let (only_old, shared) = before.split_at(before.len() - 1);
        let kept: Vec<_> = only_old.iter().filter(|f| after.contains(f)).collect();
        assert!(
            kept.is_empty(),
            "files only the dropped segment used are still there: {kept:?}"
        );
        assert!(
            after.contains(&shared[0]),
            "the file shared with the live segment was deleted: {:?}",
            shared[0]
        );
        assert!(matches!(
            store.read(old, 0, 1, ReadMode::Recovery { epoch: 2 }).await,
            Err(Error::Dropped { .. })
        ));
        assert!(matches!(
            store.add(old, Epoch(1), entry(old, 100, 1, None, "x")),
            Err(Error::Dropped { .. })
        ));
        store.shutdown();
    }
    let store = Arc::new(CacheStore::open(options).unwrap());
    assert!(
        store.progress(old).is_none(),
        "a dropped segment does not come back on replay"
    );
    assert_eq!(
        store
            .read(live, 0, 1000, ReadMode::Recovery { epoch: 2 })
            .await
            .unwrap()
            .len(),
        100
    );
}

/// Entry `entry_id` of `segment` whose one record holds `payload` verbatim.
fn entry_holding(segment: SegmentKey, entry_id: u64, payload: &[u8]) -> Bytes {
    encode_entry(
        &EntryHeader {
            log_id: segment.log_id,
            segment_id: segment.segment_id,
            entry_id,
            epoch: 1,
            first_offset: entry_id,
            lac: None,
            record_count: 1,
        },
        &[EntryRecord {
            timestamp_ms: 1_700_000_000_000,
            record: Record::new(Bytes::copy_from_slice(payload)),
        }],
    )
}

/// A real `Drop` frame for `victim`, byte for byte as a journal holds it
/// (copied from the end of a scratch journal, whatever the format).
async fn real_drop_frame(victim: SegmentKey) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let file = journal_files(dir.path()).pop().unwrap();
    let before = std::fs::metadata(&file).unwrap().len() as usize;
    store.drop_segment(victim).await.unwrap();
    store.shutdown();
    std::fs::read(&file).unwrap()[before..].to_vec()
}

/// Writes the victim's entries, then an attacker entry whose payload embeds
/// a complete, valid `Drop` frame for the victim; returns the victim's
/// entries and where the embedded frame ends in the journal file.
async fn write_forgery(
    dir: &std::path::Path,
    victim: SegmentKey,
    attacker: SegmentKey,
) -> (Vec<Bytes>, std::path::PathBuf, usize) {
    let forged = real_drop_frame(victim).await;
    let store = open(dir);
    let mut kept = Vec::new();
    for id in 0..3 {
        kept.push(add(&store, victim, id, 1, None).await);
    }
    let mut payload = b"innocent-looking prefix ".to_vec();
    payload.extend_from_slice(&forged);
    payload.extend_from_slice(&[0xAB; 4096]);
    store
        .add(attacker, Epoch(1), entry_holding(attacker, 0, &payload))
        .unwrap()
        .await
        .unwrap();
    store.shutdown();
    let file = journal_files(dir).pop().unwrap();
    let data = std::fs::read(&file).unwrap();
    let at = data
        .windows(forged.len())
        .position(|w| w == forged.as_slice())
        .expect("the forged frame is in the journal verbatim");
    (kept, file, at + forged.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_forged_in_a_payload_is_never_replayed_after_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let (victim, attacker) = (key(2, 1), key(1, 1));
    let (kept, file, forged_end) = write_forgery(dir.path(), victim, attacker).await;
    // kill -9 while the attacker's entry was being written: the file ends
    // right after the embedded frame.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(forged_end as u64)
        .unwrap();

    let store = open(dir.path());
    let read = store
        .read(victim, 0, 10, ReadMode::Recovery { epoch: 2 })
        .await
        .expect("the victim segment survives the replay");
    assert_eq!(read, kept);
    assert!(
        store
            .progress(attacker)
            .is_none_or(|p| p.last_entry_id.is_none()),
        "the torn attacker entry is not served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bit_flip_in_an_older_file_never_replays_a_forged_frame() {
    let dir = tempfile::tempdir().unwrap();
    let (victim, attacker, later) = (key(2, 1), key(1, 1), key(3, 1));
    let (kept, file, forged_end) = write_forgery(dir.path(), victim, attacker).await;
    // A second run writes a newer file, so the forged one is an older file.
    {
        let store = open(dir.path());
        add(&store, later, 0, 1, None).await;
        store.shutdown();
    }
    assert!(journal_files(dir.path()).len() >= 2);
    // One flipped bit in the attacker's payload, just before the forgery.
    let mut data = std::fs::read(&file).unwrap();
    let prefix = b"innocent-looking prefix ";
    let at = data
        .windows(prefix.len())
        .position(|w| w == prefix)
        .unwrap();
    assert!(at < forged_end);
    data[at + 2] ^= 0x01;
    std::fs::write(&file, &data).unwrap();

    let store = open(dir.path());
    let read = store
        .read(victim, 0, 10, ReadMode::Recovery { epoch: 2 })
        .await
        .expect("the victim segment survives the replay");
    assert_eq!(read, kept);
    let err = store
        .read(attacker, 0, 10, ReadMode::Recovery { epoch: 2 })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { segment, .. } if segment == attacker),
        "the damaged entry's segment is marked damaged: {err}"
    );
    assert_eq!(
        store
            .read(later, 0, 10, ReadMode::Recovery { epoch: 2 })
            .await
            .unwrap()
            .len(),
        1,
        "records in later files are kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_frame_header_in_an_older_file_makes_the_node_step_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (victim, attacker, later) = (key(2, 1), key(1, 1), key(3, 1));
    let (_, file, _) = write_forgery(dir.path(), victim, attacker).await;
    {
        let store = open(dir.path());
        add(&store, later, 0, 1, None).await;
        store.shutdown();
    }
    // Flip a bit in the header of the attacker's frame: the byte just before
    // its payload (the entry, stored verbatim, starts with "DLE1" and the
    // attacker's log and segment ids).
    let mut data = std::fs::read(&file).unwrap();
    let mut needle = b"DLE1".to_vec();
    needle.extend_from_slice(&attacker.log_id.to_le_bytes());
    needle.extend_from_slice(&attacker.segment_id.to_le_bytes());
    let payload_at = data
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .unwrap();
    data[payload_at - 1] ^= 0x01;
    std::fs::write(&file, &data).unwrap();

    // Where the records after the damage were is unknown: no segment is
    // served or fenced from this node any more, none is dropped, and a
    // segment it never heard of is not answered as "not held".
    let store = open(dir.path());
    for segment in [victim, attacker, later, key(9, 9)] {
        let err = store
            .read(segment, 0, 10, ReadMode::Recovery { epoch: 2 })
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { segment: s, .. } if s == segment),
            "segment {segment}: {err}"
        );
        assert!(
            matches!(
                store.fence(segment, Epoch(3)).await,
                Err(Error::Corrupt { .. })
            ),
            "segment {segment} fenced"
        );
    }
    assert!(matches!(
        store.add(key(9, 9), Epoch(1), entry(key(9, 9), 0, 1, None, "x")),
        Err(Error::Corrupt { .. })
    ));
}

/// A node holds a prefix of each segment, never a segment with a hole: an
/// add past the end of what it holds (or has queued) is refused. So a copy
/// that succeeds proves the node holds every entry before it (recovery
/// relies on it), also across a restart and with adds pipelined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_that_would_leave_a_hole_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = key(3, 1);
    {
        let store = open(dir.path());
        let err = store
            .add(s, Epoch(1), entry(s, 1, 1, None, "first without 0"))
            .err()
            .expect("entry 1 before entry 0 is refused");
        assert_eq!(
            err_text(err),
            "entry 1 of segment 3/1 would leave a hole: this node holds entries before 0 only"
        );
        // Pipelined: queued but not yet durable entries count.
        let queued: Vec<_> = (0..4)
            .map(|id| {
                let bytes = entry(s, id, 1, None, &format!("payload {s} {id}"));
                store.add(s, Epoch(1), bytes).unwrap()
            })
            .collect();
        for add in queued {
            add.await.unwrap();
        }
        // Adding again what is held is allowed (a recovery copy).
        add(&store, s, 2, 1, None).await;
        assert!(matches!(
            store.add(s, Epoch(1), entry(s, 5, 1, None, "gap")),
            Err(Error::Gap {
                entry: 5,
                held_end: 4,
                ..
            })
        ));
        store.shutdown();
    }
    let store = open(dir.path());
    assert!(matches!(
        store.add(s, Epoch(1), entry(s, 6, 1, None, "gap after restart")),
        Err(Error::Gap {
            entry: 6,
            held_end: 4,
            ..
        })
    ));
    add(&store, s, 4, 1, None).await;
    assert_eq!(store.progress(s).unwrap().last_entry_id, Some(4));
}

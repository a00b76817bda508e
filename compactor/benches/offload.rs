//! Offload benchmark: how fast one core turns a sealed segment's entries
//! into a Parquet file and stores it, for 100 B and 1 KiB records.
//!
//!     cargo bench -p dlog-compactor --bench offload [-- --mib N --dir DIR]
//!
//! Per record size, on a current-thread runtime (one core does the work):
//! * `encode`: entries → Parquet bytes (arrow batch, zstd, statistics);
//! * `offload`: encode, then the create-only upload to a `file://` store
//!   and the read-back CRC check the compactor does before its manifest CAS;
//! * `offload+table`: the same, then the append to the log's Iceberg table
//!   (a SQLite catalog file beside the store).
//!
//! * `merge`: the same payload offloaded as 16 small files (not timed),
//!   then merged as the compactor merges small files
//!   (`dlog_compactor::merge::merge_files`: each object read, its row
//!   groups copied into one file), uploaded, read back, and swapped for
//!   the 16 in the table in one `replace` commit; and `merge, rows
//!   re-encoded`, the same with every row decoded and encoded again (the
//!   way before the copy, still taken for files of earlier layouts).
//!
//! Then the latency of one table append as the table grows (one small file
//! per commit, 200 commits), the figure a compactor pays per segment.
//!
//! Reading the entries from the cache nodes is not in it (that is network
//! and the cache node's work, measured in the cache benchmark). Payloads
//! are pseudo-random letters and digits (about 6 bits of entropy a byte),
//! so zstd has some but not much to gain. Prints a Markdown table.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dlog_compactor::LogTables;
use dlog_compactor::merge::merge_files;
use dlog_compactor::offload::{read_object, upload};
use dlog_compactor::table::TableFile;
use dlog_storage::objstore::{self, ObjectStoreHandle};
use dlog_storage::segment_file::{
    FileInfo, SegmentFile, decode_file, encode_records, encode_segment, log_folder, object_key,
};
use dlog_wire::codec::{Entry, EntryHeader, EntryRecord};
use dlog_wire::names::LogName;
use dlog_wire::record::Record;

const RECORDS_PER_ENTRY: usize = 100;

fn parse_args() -> (usize, Option<std::path::PathBuf>) {
    let (mut mib, mut dir) = (128, None);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--mib" => mib = it.next().and_then(|s| s.parse().ok()).unwrap_or(mib),
            "--dir" => dir = it.next().map(Into::into),
            _ => {} // cargo passes --bench
        }
    }
    (mib, dir)
}

/// A segment of `count` records of `size` bytes, in entries of 100.
fn segment(count: usize, size: usize) -> Vec<Entry> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut payload = || {
        let bytes: Vec<u8> = (0..size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ALPHABET[(state % ALPHABET.len() as u64) as usize]
            })
            .collect();
        Bytes::from(bytes)
    };
    (0..count.div_ceil(RECORDS_PER_ENTRY))
        .map(|e| {
            let first = e * RECORDS_PER_ENTRY;
            let n = RECORDS_PER_ENTRY.min(count - first);
            Entry {
                header: EntryHeader {
                    log_id: 1,
                    segment_id: 1,
                    entry_id: e as u64,
                    epoch: 1,
                    first_offset: first as u64,
                    lac: None,
                    record_count: n as u32,
                },
                records: (0..n)
                    .map(|i| EntryRecord {
                        timestamp_ms: 1_800_000_000_000 + ((first + i) / 1000) as i64,
                        record: Record::new(payload()),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The compactor's upload and read-back check.
async fn store(objects: &ObjectStoreHandle, key: &object_store::path::Path, file: &SegmentFile) {
    upload(objects, key, file).await.unwrap();
    let stored = read_object(objects, key).await.unwrap();
    assert_eq!(crc32c::crc32c(&stored), file.crc32c);
}

fn rate(bytes: usize, records: usize, elapsed: Duration) -> (f64, f64) {
    let secs = elapsed.as_secs_f64();
    (bytes as f64 / secs / 1e6, records as f64 / secs)
}

fn main() {
    let (mib, dir) = parse_args();
    let tmp = tempfile::tempdir().unwrap();
    let dir = dir.unwrap_or_else(|| tmp.path().to_owned());
    let objects = objstore::open(&format!("file://{}", dir.display())).unwrap();
    let catalog = format!("sqlite://{}/catalog.db?mode=rwc", dir.display());
    let log: LogName = "bench/offload".parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    println!("| record | records | payload MiB | step | MB/s | records/s | file MiB | ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    for (n, size) in [100usize, 1024].into_iter().enumerate() {
        let count = mib * 1024 * 1024 / size;
        let entries = segment(count, size);
        let payload_bytes = count * size;
        let info = FileInfo {
            log: &log,
            segment_id: 1,
            start_offset: 0,
            end_offset: count as u64,
            payload_schema: None,
        };
        // Warm-up: allocator and page cache.
        encode_segment(
            &entries[..entries.len().min(100)],
            &FileInfo {
                end_offset: (RECORDS_PER_ENTRY * entries.len().min(100)).min(count) as u64,
                ..info.clone()
            },
        )
        .unwrap();

        let started = Instant::now();
        let file = encode_segment(&entries, &info).unwrap();
        let encode = started.elapsed();

        let key = object_key(
            &objects.prefix,
            &log,
            1,
            n as u64 * 1_000_000_000,
            count as u64,
        );
        let started = Instant::now();
        let file_again = encode_segment(&entries, &info).unwrap();
        runtime.block_on(store(&objects, &key, &file_again));
        let offload = started.elapsed();

        let tables = runtime
            .block_on(LogTables::open(&catalog, objects.clone()))
            .unwrap();
        let table_log: LogName = format!("bench/table-{size}").parse().unwrap();
        let key = object_key(&objects.prefix, &table_log, 1, 0, count as u64);
        let started = Instant::now();
        let file_again = encode_segment(&entries, &info).unwrap();
        runtime.block_on(async {
            store(&objects, &key, &file_again).await;
            let entry = TableFile {
                key: &key,
                file: &file_again,
                segment_id: 1,
                start_offset: 0,
                end_offset: count as u64,
                time_range_ms: file_again.time_range_ms,
            };
            tables.append(&table_log, 1, 0, &entry).await.unwrap();
        });
        let with_table = started.elapsed();

        let merge_log: LogName = format!("bench/merge-{size}").parse().unwrap();
        let (merge, merge_commit) = runtime.block_on(merge_small_files(
            &objects,
            &tables,
            &merge_log,
            &entries,
            count as u64,
            Join::Copy,
        ));
        let reencode_log: LogName = format!("bench/reencode-{size}").parse().unwrap();
        let (reencode, _) = runtime.block_on(merge_small_files(
            &objects,
            &tables,
            &reencode_log,
            &entries,
            count as u64,
            Join::Reencode,
        ));

        let file_mib = file.bytes.len() as f64 / (1024.0 * 1024.0);
        let ratio = payload_bytes as f64 / file.bytes.len() as f64;
        for (step, elapsed) in [
            ("encode", encode),
            ("offload", offload),
            ("offload+table", with_table),
            ("merge", merge),
            ("merge, rows re-encoded", reencode),
        ] {
            let (mbps, rps) = rate(payload_bytes, count, elapsed);
            println!(
                "| {size} B | {count} | {mib} | {step} | {mbps:.0} | {rps:.0} | {file_mib:.1} | {ratio:.2} |"
            );
        }
        println!(
            "| {size} B | | | merge commit (16 files → 1) | {:.1} ms | | | |",
            merge_commit.as_secs_f64() * 1e3
        );
    }
    commit_latency(&runtime, &catalog, &objects);
}

/// How a merge joins its files.
#[derive(Clone, Copy)]
enum Join {
    /// As the compactor does: row groups copied ([`merge_files`]).
    Copy,
    /// Every row decoded and encoded again (the compactor before the copy,
    /// and its way with files of earlier layouts), for comparison.
    Reencode,
}

/// Offloads `entries` as 16 small files in `log`'s table (not timed), then
/// merges them by `join`; returns the time of the whole merge
/// and of its table commit.
async fn merge_small_files(
    objects: &ObjectStoreHandle,
    tables: &LogTables,
    log: &LogName,
    entries: &[Entry],
    count: u64,
    join: Join,
) -> (Duration, Duration) {
    const FILES: usize = 16;
    let (mut olds, mut segments) = (Vec::new(), Vec::new());
    for (n, part) in entries.chunks(entries.len().div_ceil(FILES)).enumerate() {
        let start = part[0].header.first_offset;
        let end = part.last().unwrap().header.end_offset();
        let info = FileInfo {
            log,
            segment_id: n as u64 + 1,
            start_offset: start,
            end_offset: end,
            payload_schema: None,
        };
        let file = encode_segment(part, &info).unwrap();
        let key = object_key(&objects.prefix, log, 1, start, end);
        store(objects, &key, &file).await;
        let entry = TableFile {
            key: &key,
            file: &file,
            segment_id: n as u64 + 1,
            start_offset: start,
            end_offset: end,
            time_range_ms: file.time_range_ms,
        };
        tables.append(log, 1, 0, &entry).await.unwrap();
        olds.push(key);
        segments.push((n as u64 + 1, start, end));
    }
    let started = Instant::now();
    let mut files = Vec::new();
    for key in &olds {
        files.push(read_object(objects, key).await.unwrap());
    }
    let info = FileInfo {
        log,
        segment_id: 1,
        start_offset: 0,
        end_offset: count,
        payload_schema: None,
    };
    let file = match join {
        Join::Copy => merge_files(files, &segments, &info, None).unwrap(),
        Join::Reencode => {
            let mut records = Vec::new();
            for bytes in files {
                records.extend(decode_file(bytes).unwrap());
            }
            encode_records(&records, &info).unwrap()
        }
    };
    let key = log_folder(&objects.prefix, log, 1).join("merged.parquet");
    store(objects, &key, &file).await;
    let entry = TableFile {
        key: &key,
        file: &file,
        segment_id: 1,
        start_offset: 0,
        end_offset: count,
        time_range_ms: file.time_range_ms,
    };
    let locations: Vec<String> = olds.iter().map(|k| objects.url_of(k)).collect();
    let committing = Instant::now();
    let merged = tables.merge(log, 1, 0, &locations, &entry).await.unwrap();
    assert_eq!(merged, dlog_compactor::table::Replaced::Committed);
    (started.elapsed(), committing.elapsed())
}

/// Times `COMMITS` table appends of one small file each, to one table.
fn commit_latency(runtime: &tokio::runtime::Runtime, catalog: &str, objects: &ObjectStoreHandle) {
    const COMMITS: u64 = 200;
    let tables = runtime
        .block_on(LogTables::open(catalog, objects.clone()))
        .unwrap();
    let log: LogName = "bench/commits".parse().unwrap();
    let entries = segment(1000, 100);
    let mut latencies = Vec::new();
    for n in 0..COMMITS {
        let (start, end) = (n * 1000, (n + 1) * 1000);
        let info = FileInfo {
            log: &log,
            segment_id: n + 1,
            start_offset: 0,
            end_offset: 1000,
            payload_schema: None,
        };
        let file = encode_segment(&entries, &info).unwrap();
        let key = object_key(&objects.prefix, &log, 1, start, end);
        runtime.block_on(upload(objects, &key, &file)).unwrap();
        let entry = TableFile {
            key: &key,
            file: &file,
            segment_id: n + 1,
            start_offset: start,
            end_offset: end,
            time_range_ms: file.time_range_ms,
        };
        let started = Instant::now();
        runtime.block_on(tables.append(&log, 1, 0, &entry)).unwrap();
        latencies.push(started.elapsed());
    }
    println!();
    println!("| table append | files in the table | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (from, to) in [(0, 50), (150, 200)] {
        let mut window: Vec<Duration> = latencies[from..to].to_vec();
        window.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let p = |q: f64| ms(window[((window.len() - 1) as f64 * q) as usize]);
        println!(
            "| commits {}..{} | {from}..{to} | {:.1} | {:.1} | {:.1} |",
            from + 1,
            to,
            p(0.5),
            p(0.99),
            ms(*window.last().unwrap())
        );
    }
}

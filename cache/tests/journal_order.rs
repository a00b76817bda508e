//! "fdatasync before acknowledging", checked on the real order of
//! operations: the journal runs on a file layer that records every write and
//! sync, the test records every acknowledgement it receives, and each ack
//! must come after a sync that covers its record's bytes.
//!
//! A kill -9 test cannot see a missing sync (the page cache survives the
//! process), and a sync counter kept beside the call survives the call's
//! removal; this order can only be produced by syncing before acking.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlog_cache::SegmentKey;
use dlog_cache::journal::{
    FileLayer, Journal, JournalFile, JournalOptions, Location, OsFiles, Record,
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// Bytes of `file` written so far, after a write.
    Write { file: PathBuf, end: u64 },
    /// Bytes of `file` durable, after a sync returned.
    Sync { file: PathBuf, durable: u64 },
    /// An acknowledgement the caller received.
    Ack { file: PathBuf, end: u64 },
}

type Log = Arc<Mutex<Vec<Op>>>;

struct Recording {
    real: OsFiles,
    log: Log,
}

struct RecordingFile {
    real: File,
    path: PathBuf,
    written: u64,
    log: Log,
}

impl JournalFile for RecordingFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.real.write_all(bytes)?;
        self.written += bytes.len() as u64;
        self.log.lock().unwrap().push(Op::Write {
            file: self.path.clone(),
            end: self.written,
        });
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        // A slow disk: an ack sent before the sync would be seen first.
        std::thread::sleep(Duration::from_millis(5));
        JournalFile::sync_data(&mut self.real)?;
        self.log.lock().unwrap().push(Op::Sync {
            file: self.path.clone(),
            durable: self.written,
        });
        Ok(())
    }
}

impl FileLayer for Recording {
    type File = RecordingFile;

    fn create(&mut self, path: &Path) -> io::Result<RecordingFile> {
        Ok(RecordingFile {
            real: self.real.create(path)?,
            path: path.to_owned(),
            written: 0,
            log: self.log.clone(),
        })
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.real.sync_dir(dir)
    }
}

fn file_path(dir: &Path, location: Location) -> PathBuf {
    dir.join(format!("journal-{:020}.log", location.file))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_append_was_synced_before_its_ack() {
    const APPENDS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    let mut options = JournalOptions::new(dir.path());
    // Roll now and then, so acks in later files are checked too.
    options.roll_bytes = 400;
    let journal = Journal::start_with(
        Recording {
            real: OsFiles,
            log: log.clone(),
        },
        options,
        0,
        Box::new(|_, _| Vec::new()),
    )
    .unwrap();
    for i in 0..APPENDS as u64 {
        let segment = SegmentKey {
            log_id: 1,
            segment_id: i % 3,
        };
        let record = if i % 2 == 0 {
            Record::Fence { segment, epoch: i }
        } else {
            Record::Drop { segment }
        };
        let location = journal.submit(record).unwrap().await.unwrap().unwrap();
        log.lock().unwrap().push(Op::Ack {
            file: file_path(dir.path(), location),
            end: location.offset + u64::from(location.len),
        });
    }
    journal.shutdown();

    let ops = log.lock().unwrap().clone();
    let mut covering_syncs = std::collections::BTreeSet::new();
    let mut acks = 0;
    for (at, op) in ops.iter().enumerate() {
        let Op::Ack { file, end } = op else { continue };
        acks += 1;
        let written = ops[..at]
            .iter()
            .position(|op| matches!(op, Op::Write { file: f, end: e } if f == file && e >= end))
            .unwrap_or_else(|| {
                panic!("ack {acks} ({file:?} up to {end}) before its write: {ops:#?}")
            });
        let synced = ops[written..at]
            .iter()
            .position(
                |op| matches!(op, Op::Sync { file: f, durable } if f == file && durable >= end),
            )
            .unwrap_or_else(|| {
                panic!(
                    "ack {acks} ({file:?} up to byte {end}) before any sync covering it: {ops:#?}"
                )
            });
        covering_syncs.insert(written + synced);
    }
    assert_eq!(acks, APPENDS);
    // Each append waited for its ack before the next was sent, so each
    // needed a sync of its own.
    assert_eq!(
        covering_syncs.len(),
        APPENDS,
        "one sync per sequential append: {ops:#?}"
    );
    let files = ops
        .iter()
        .filter_map(|op| match op {
            Op::Ack { file, .. } => Some(file),
            _ => None,
        })
        .collect::<std::collections::BTreeSet<_>>();
    assert!(files.len() >= 2, "the journal rolled: {files:?}");
}

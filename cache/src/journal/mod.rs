//! The journal: one append-only log per node, shared by every segment, made
//! durable by group commit.
//!
//! A single writer thread takes every pending record off its queue, writes
//! them with one `write` and makes them durable with one `fdatasync`, then
//! hands them to the index ([`OnDurable`]) and only then completes the
//! callers. So thousands of concurrently written segments cost one fsync
//! stream, and nothing is indexed, served or acknowledged before it is on
//! disk. While one batch syncs, the next accumulates.
//!
//! Files are `journal-<seq:020>.log`, rolled at a size limit. A new file is
//! started at every open, so replay only ever cuts the tail of a file no one
//! writes to any more. Files are deleted oldest first once no live segment
//! has a record in them (see [`crate::index`]); deleting in order keeps a
//! segment's `Drop` record until every file with its entries is gone, so a
//! dropped segment never comes back on replay.
//!
//! Crash points:
//! * before the `fdatasync` returns: nothing of the batch was acknowledged;
//!   on replay a torn last frame fails its CRC and is cut off.
//! * after it: the batch is replayed, indexed and served.

pub mod frame;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

pub use frame::Record;

use crate::error::{Error, Result, SegmentKey};

/// Where a record's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub file: u64,
    pub offset: u64,
    pub len: u32,
}

/// Journal settings.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// Directory of the journal files; put it on its own disk for I/O isolation.
    pub dir: PathBuf,
    /// Roll to a new file past this size.
    pub roll_bytes: u64,
    /// Most bytes written by one group commit.
    pub max_batch_bytes: usize,
}

impl JournalOptions {
    pub fn new(dir: impl Into<PathBuf>) -> JournalOptions {
        JournalOptions {
            dir: dir.into(),
            roll_bytes: 256 * 1024 * 1024,
            max_batch_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Damage found on replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub file: u64,
    pub offset: u64,
    /// The segment the damaged record seems to belong to, if readable.
    pub segment: Option<SegmentKey>,
    /// True for a torn tail that was cut off (an unacknowledged write);
    /// false for damage inside the file (acknowledged data lost here).
    pub torn_tail: bool,
}

/// Everything replay found, in journal order.
#[derive(Debug, Default)]
pub struct Replay {
    pub records: Vec<(Record, Location)>,
    pub damage: Vec<Damage>,
    /// Existing files, oldest first.
    pub files: Vec<u64>,
}

fn file_name(seq: u64) -> String {
    format!("journal-{seq:020}.log")
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.display().to_string(),
        what,
        source,
    }
}

/// Journal files in `dir`, oldest first.
fn list_files(dir: &Path) -> Result<Vec<u64>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir, "list"))? {
        let entry = entry.map_err(io_err(dir, "list"))?;
        let name = entry.file_name();
        let seq = name
            .to_str()
            .and_then(|n| n.strip_prefix("journal-"))
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            files.push(seq);
        }
    }
    files.sort_unstable();
    Ok(files)
}

/// Reads every journal file, cutting a torn tail off the newest one.
pub fn replay(dir: &Path) -> Result<Replay> {
    fs::create_dir_all(dir).map_err(io_err(dir, "create directory"))?;
    let files = list_files(dir)?;
    let mut replay = Replay {
        files: files.clone(),
        ..Replay::default()
    };
    for (i, &seq) in files.iter().enumerate() {
        let newest = i + 1 == files.len();
        let path = dir.join(file_name(seq));
        let data = Bytes::from(fs::read(&path).map_err(io_err(&path, "read"))?);
        let mut at = 0;
        while at < data.len() {
            match frame::parse_at(&data, at) {
                Ok((parsed, next)) => {
                    let location = Location {
                        file: seq,
                        offset: parsed.payload_offset,
                        len: parsed.payload_len,
                    };
                    replay.records.push((parsed.record, location));
                    at = next;
                }
                Err(_) => {
                    let segment = frame::guess_segment(&data, at);
                    match frame::resync(&data, at + 1) {
                        Some(next) => {
                            tracing::error!(file = %path.display(), offset = at, ?segment,
                                "journal: damaged record in the middle of a file");
                            replay.damage.push(Damage {
                                file: seq,
                                offset: at as u64,
                                segment,
                                torn_tail: false,
                            });
                            at = next;
                        }
                        None => {
                            let torn_tail = newest;
                            if torn_tail {
                                tracing::warn!(file = %path.display(), offset = at,
                                    cut = data.len() - at, "journal: cutting a torn tail");
                                let file = OpenOptions::new()
                                    .write(true)
                                    .open(&path)
                                    .map_err(io_err(&path, "open to cut torn tail"))?;
                                file.set_len(at as u64)
                                    .and_then(|()| file.sync_all())
                                    .map_err(io_err(&path, "cut torn tail"))?;
                            } else {
                                tracing::error!(file = %path.display(), offset = at, ?segment,
                                    "journal: damaged tail of an older file");
                            }
                            replay.damage.push(Damage {
                                file: seq,
                                offset: at as u64,
                                segment,
                                torn_tail,
                            });
                            break;
                        }
                    }
                }
            }
        }
    }
    Ok(replay)
}

/// Called on the writer thread with each durable batch, before any caller
/// hears of it, and the sequence number of the file being written. Returns
/// the files that may now be deleted.
pub type OnDurable = Box<dyn FnMut(&[(Record, Location)], u64) -> Vec<u64> + Send>;

struct Request {
    record: Record,
    done: oneshot::Sender<Result<Location>>,
}

/// Counters of the journal's work.
#[derive(Debug, Default)]
pub struct JournalStats {
    pub fsyncs: AtomicU64,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
}

/// Open read handles of journal files.
#[derive(Debug, Default)]
struct Readers {
    files: Mutex<HashMap<u64, Arc<File>>>,
}

/// Reads record payloads from the journal files.
#[derive(Debug, Clone)]
pub struct JournalReader {
    dir: PathBuf,
    readers: Arc<Readers>,
}

impl JournalReader {
    /// Reads a record's payload (blocking I/O).
    pub fn read(&self, location: Location) -> Result<Bytes> {
        let path = self.dir.join(file_name(location.file));
        let file = {
            let mut files = self.readers.files.lock().unwrap_or_else(|p| p.into_inner());
            match files.get(&location.file) {
                Some(file) => file.clone(),
                None => {
                    let file =
                        Arc::new(File::open(&path).map_err(io_err(&path, "open for reading"))?);
                    files.insert(location.file, file.clone());
                    file
                }
            }
        };
        let mut buf = vec![0u8; location.len as usize];
        file.read_exact_at(&mut buf, location.offset)
            .map_err(io_err(&path, "read"))?;
        Ok(Bytes::from(buf))
    }
}

/// Handle to the journal and its writer thread.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    sender: Mutex<Option<mpsc::Sender<Request>>>,
    failed: Arc<AtomicBool>,
    readers: Arc<Readers>,
    stats: Arc<JournalStats>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Journal {
    /// Starts writing a new file numbered after `after_file`.
    pub fn start(
        options: JournalOptions,
        after_file: u64,
        on_durable: OnDurable,
    ) -> Result<Journal> {
        let (sender, receiver) = mpsc::channel();
        let failed = Arc::new(AtomicBool::new(false));
        let readers = Arc::new(Readers::default());
        let stats = Arc::new(JournalStats::default());
        let mut writer = Writer::create(options.clone(), after_file + 1, on_durable)?;
        writer.failed = failed.clone();
        writer.readers = readers.clone();
        writer.stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("dlog-journal".into())
            .spawn(move || writer.run(receiver))
            .map_err(io_err(&options.dir, "start the writer thread"))?;
        Ok(Journal {
            dir: options.dir,
            sender: Mutex::new(Some(sender)),
            failed,
            readers,
            stats,
            writer: Mutex::new(Some(thread)),
        })
    }

    /// Queues a record; the receiver completes once it is durable.
    pub fn submit(&self, record: Record) -> Result<oneshot::Receiver<Result<Location>>> {
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::JournalFailed);
        }
        let (done, receiver) = oneshot::channel();
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let sender = sender.as_ref().ok_or(Error::ShuttingDown)?;
        sender
            .send(Request { record, done })
            .map_err(|_| Error::ShuttingDown)?;
        Ok(receiver)
    }

    /// A handle for reading records, usable from any thread.
    pub fn reader(&self) -> JournalReader {
        JournalReader {
            dir: self.dir.clone(),
            readers: self.readers.clone(),
        }
    }

    pub fn stats(&self) -> &JournalStats {
        &self.stats
    }

    /// Stops accepting records, lets the writer finish what is queued, and
    /// waits for it.
    pub fn shutdown(&self) {
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Writer {
    options: JournalOptions,
    seq: u64,
    file: File,
    len: u64,
    on_durable: OnDurable,
    failed: Arc<AtomicBool>,
    readers: Arc<Readers>,
    stats: Arc<JournalStats>,
}

impl Writer {
    fn create(options: JournalOptions, seq: u64, on_durable: OnDurable) -> Result<Writer> {
        let file = Self::new_file(&options.dir, seq)?;
        Ok(Writer {
            options,
            seq,
            file,
            len: 0,
            on_durable,
            failed: Arc::default(),
            readers: Arc::default(),
            stats: Arc::default(),
        })
    }

    fn new_file(dir: &Path, seq: u64) -> Result<File> {
        let path = dir.join(file_name(seq));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path, "create"))?;
        // The new name must be durable before records in it are acknowledged.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir, "sync directory"))?;
        Ok(file)
    }

    fn run(mut self, receiver: mpsc::Receiver<Request>) {
        while let Ok(first) = receiver.recv() {
            let mut bytes = first.record.frame_len();
            let mut batch = vec![first];
            while bytes < self.options.max_batch_bytes {
                match receiver.try_recv() {
                    Ok(request) => {
                        bytes += request.record.frame_len();
                        batch.push(request);
                    }
                    Err(_) => break,
                }
            }
            if let Err(err) = self.commit(batch) {
                tracing::error!("journal: write failed, refusing further writes: {err:#}");
                self.failed.store(true, Ordering::Release);
                // Whatever is still queued fails too; nothing more is written.
                for request in receiver.try_iter() {
                    let _ = request.done.send(Err(Error::JournalFailed));
                }
                return;
            }
        }
    }

    fn commit(&mut self, batch: Vec<Request>) -> Result<()> {
        let mut buf = BytesMut::with_capacity(batch.iter().map(|r| r.record.frame_len()).sum());
        let mut durable = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        for request in batch {
            let at = request.record.encode(&mut buf);
            let location = Location {
                file: self.seq,
                offset: self.len + at as u64,
                len: (request.record.frame_len() - frame::FRAME_HEADER_LEN) as u32,
            };
            durable.push((request.record, location));
            waiters.push(request.done);
        }
        let path = self.options.dir.join(file_name(self.seq));
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            for done in waiters {
                let _ = done.send(Err(Error::JournalFailed));
            }
            return Err(Error::Io {
                path: path.display().to_string(),
                what: "append and fdatasync",
                source,
            });
        }
        self.len += buf.len() as u64;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .records
            .fetch_add(durable.len() as u64, Ordering::Relaxed);
        self.stats
            .bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);

        let deletable = (self.on_durable)(&durable, self.seq);
        for (done, (_, location)) in waiters.into_iter().zip(&durable) {
            let _ = done.send(Ok(*location));
        }
        self.delete_files(deletable);
        if self.len >= self.options.roll_bytes {
            self.seq += 1;
            self.file = Self::new_file(&self.options.dir, self.seq)?;
            self.len = 0;
        }
        Ok(())
    }

    fn delete_files(&self, files: Vec<u64>) {
        for seq in files {
            self.readers
                .files
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&seq);
            let path = self.options.dir.join(file_name(seq));
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "journal: deleted a file with no live segments")
                }
                Err(err) => tracing::warn!(file = %path.display(), "journal: delete failed: {err}"),
            }
        }
    }
}

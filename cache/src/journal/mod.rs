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
//! Files are `journal-<seq:020>.log`, rolled at a size limit; each starts
//! with a header naming the format version and the file (see [`frame`] for
//! the format, [`mod@replay`] for reading it back). A new file is started at
//! every open, so replay only ever cuts the tail of a file no one writes to
//! any more. Files are deleted oldest first once no live segment has a
//! record in them (see [`crate::index`]); deleting in order keeps a
//! segment's `Drop` record until every file with its entries is gone, so a
//! dropped segment never comes back on replay.
//!
//! Crash points:
//! * creating a file: create, write its header, `fdatasync`, `fsync` of the
//!   directory, before any record goes in; a file no longer than a header
//!   whose header does not verify is a torn creation and is removed.
//! * before a batch's `fdatasync` returns: nothing of the batch was
//!   acknowledged; on replay its first bad frame and all after it are cut.
//!   Every batch starts with the file's sync marker and a frame that
//!   verifies on its own, so replay can tell this, the last batch, from
//!   damage in an earlier, synced batch: damage followed by a later batch's
//!   start is never cut (see [`mod@replay`]).
//! * after it: the batch is replayed, indexed and served. Right after the
//!   sync the writer opens the next batch (writes its marker and an empty
//!   opener frame, not synced), so the last synced batch too has a later
//!   batch start behind it once that write reaches the disk (at once for a
//!   kill -9, by writeback for an idle node): a flipped bit in it is then
//!   damage, not a torn tail. Only a power loss before writeback together
//!   with damage in that same batch is still cut.
//! * the simulation's writer ([`Journal::start_task`]) waits between the
//!   write and the `fdatasync` (a simulated sync latency): a crash there
//!   loses the unsynced write, or keeps a torn prefix of it, exactly the
//!   "before the batch's `fdatasync` returns" case above.
//! * records given to [`Journal::start_after`] (damage marks found by
//!   replay) are written and synced as the new file's first batch before
//!   `start_after` returns, so before any other record and any file
//!   deletion; a crash before that leaves the damage where replay finds it
//!   again.

pub mod files;
pub mod frame;
pub mod replay;

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

pub use files::{FileLayer, JournalFile, OsFiles};
pub use frame::Record;
pub use replay::{Damage, DamageKind, Replay, replay};

use crate::error::{Error, Result};
use crate::series::CommitSeries;

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

/// Called on the writer thread with each durable batch, before any caller
/// hears of it, and the sequence number of the file being written. Returns
/// the files that may now be deleted.
pub type OnDurable = Box<dyn FnMut(&[(Record, Location)], u64) -> Vec<u64> + Send>;

struct Request {
    record: Record,
    done: oneshot::Sender<Result<Location>>,
}

/// What the journal holds on disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JournalUsage {
    pub files: u64,
    pub bytes: u64,
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

/// How long the simulated writer waits between a batch's write and its
/// sync (called once per batch).
pub type SyncDelay = Box<dyn FnMut() -> Duration + Send>;

/// Where queued records go: the writer thread, or the simulation's task.
#[derive(Debug)]
enum Queue {
    Thread(mpsc::Sender<Request>),
    Task(tokio::sync::mpsc::UnboundedSender<Request>),
}

impl Queue {
    fn send(&self, request: Request) -> std::result::Result<(), ()> {
        match self {
            Queue::Thread(sender) => sender.send(request).map_err(drop),
            Queue::Task(sender) => sender.send(request).map_err(drop),
        }
    }
}

/// Handle to the journal and its writer thread.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    sender: Mutex<Option<Queue>>,
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
        Self::start_with(OsFiles, options, after_file, on_durable)
    }

    /// [`Journal::start`] on a given file layer (tests record through one).
    pub fn start_with<L: FileLayer>(
        layer: L,
        options: JournalOptions,
        after_file: u64,
        on_durable: OnDurable,
    ) -> Result<Journal> {
        Self::start_after(layer, options, after_file, Vec::new(), on_durable)
    }

    /// [`Journal::start_with`], and writes `first` as the new file's first
    /// batch (durable, handed to `on_durable`) before returning.
    pub fn start_after<L: FileLayer>(
        layer: L,
        options: JournalOptions,
        after_file: u64,
        first: Vec<Record>,
        on_durable: OnDurable,
    ) -> Result<Journal> {
        let (sender, receiver) = mpsc::channel();
        let (writer, journal) = Self::prepare(layer, options, after_file, first, on_durable)?;
        let thread = std::thread::Builder::new()
            .name("dlog-journal".into())
            .spawn(move || writer.run(receiver))
            .map_err(io_err(&journal.dir, "start the writer thread"))?;
        *journal.sender.lock().unwrap_or_else(|p| p.into_inner()) = Some(Queue::Thread(sender));
        *journal.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        Ok(journal)
    }

    /// [`Journal::start_after`] with the writer as a task on the current
    /// tokio runtime instead of a thread, waiting `sync_delay()` (simulated
    /// time) between each batch's write and its sync: the deterministic
    /// simulation runs the journal on its one thread this way.
    pub fn start_task<L: FileLayer>(
        layer: L,
        options: JournalOptions,
        after_file: u64,
        first: Vec<Record>,
        on_durable: OnDurable,
        sync_delay: SyncDelay,
    ) -> Result<Journal> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let (writer, journal) = Self::prepare(layer, options, after_file, first, on_durable)?;
        tokio::spawn(writer.run_task(receiver, sync_delay));
        *journal.sender.lock().unwrap_or_else(|p| p.into_inner()) = Some(Queue::Task(sender));
        Ok(journal)
    }

    /// Creates the writer (its first file, and `first` written) and the
    /// handle, not yet connected.
    fn prepare<L: FileLayer>(
        layer: L,
        options: JournalOptions,
        after_file: u64,
        first: Vec<Record>,
        on_durable: OnDurable,
    ) -> Result<(Writer<L>, Journal)> {
        let failed = Arc::new(AtomicBool::new(false));
        let readers = Arc::new(Readers::default());
        let stats = Arc::new(JournalStats::default());
        let mut writer = Writer::create(layer, options.clone(), after_file + 1, on_durable)?;
        writer.failed = failed.clone();
        writer.readers = readers.clone();
        writer.stats = stats.clone();
        if !first.is_empty() {
            let batch = first
                .into_iter()
                .map(|record| Request {
                    record,
                    done: oneshot::channel().0,
                })
                .collect();
            writer.commit(batch)?;
        }
        let journal = Journal {
            dir: options.dir,
            sender: Mutex::new(None),
            failed,
            readers,
            stats,
            writer: Mutex::new(None),
        };
        Ok((writer, journal))
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
            .map_err(|()| Error::ShuttingDown)?;
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

    /// The journal's files and their bytes on disk now (blocking I/O).
    pub fn usage(&self) -> Result<JournalUsage> {
        let mut usage = JournalUsage::default();
        for seq in list_files(&self.dir)? {
            let path = self.dir.join(file_name(seq));
            // A file deleted since the listing no longer counts.
            if let Ok(meta) = fs::metadata(&path) {
                usage.files += 1;
                usage.bytes += meta.len();
            }
        }
        Ok(usage)
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

/// A batch written but not yet synced.
struct Written {
    durable: Vec<(Record, Location)>,
    waiters: Vec<oneshot::Sender<Result<Location>>>,
    len: u64,
}

struct Writer<L: FileLayer> {
    options: JournalOptions,
    layer: L,
    seq: u64,
    file: L::File,
    encoder: frame::Encoder,
    len: u64,
    /// Number of the next group commit (rises for the writer's life).
    batch: u64,
    /// Whether the next group commit was already opened in this file (its
    /// opener written after the previous batch's sync).
    opened: bool,
    on_durable: OnDurable,
    failed: Arc<AtomicBool>,
    readers: Arc<Readers>,
    stats: Arc<JournalStats>,
    series: CommitSeries,
}

impl<L: FileLayer> Writer<L> {
    fn create(
        mut layer: L,
        options: JournalOptions,
        seq: u64,
        on_durable: OnDurable,
    ) -> Result<Writer<L>> {
        let (file, encoder) = Self::new_file(&mut layer, &options.dir, seq)?;
        Ok(Writer {
            options,
            layer,
            seq,
            file,
            encoder,
            len: frame::FILE_HEADER_LEN as u64,
            batch: 0,
            opened: false,
            on_durable,
            failed: Arc::default(),
            readers: Arc::default(),
            stats: Arc::default(),
            series: CommitSeries::new(),
        })
    }

    /// Creates file `seq` with its header, durable with its name before any
    /// record goes in.
    fn new_file(layer: &mut L, dir: &Path, seq: u64) -> Result<(L::File, frame::Encoder)> {
        let path = dir.join(file_name(seq));
        let mut file = layer.create(&path).map_err(io_err(&path, "create"))?;
        let (header, keys) = frame::FileHeader::new(seq).encode();
        file.write_all(&header)
            .and_then(|()| file.sync_data())
            .map_err(io_err(&path, "write the file header"))?;
        layer.sync_dir(dir).map_err(io_err(dir, "sync directory"))?;
        Ok((file, frame::Encoder::new(keys)))
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

    /// Writes and syncs a batch, then hands it on (see [`Writer::write`]
    /// and [`Writer::finish`]).
    fn commit(&mut self, batch: Vec<Request>) -> Result<()> {
        let written = self.write(batch)?;
        self.finish(written)
    }

    /// The simulation's writer: like [`Writer::run`], on a task, with a
    /// simulated sync latency between a batch's write and its sync.
    async fn run_task(
        mut self,
        mut receiver: tokio::sync::mpsc::UnboundedReceiver<Request>,
        mut sync_delay: SyncDelay,
    ) {
        while let Some(first) = receiver.recv().await {
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
            let result = match self.write(batch) {
                Ok(written) => {
                    #[cfg(feature = "mutation-ack-before-fsync")]
                    let written = self.mutant_ack_early(written);
                    tokio::time::sleep(sync_delay()).await;
                    self.finish(written)
                }
                Err(err) => Err(err),
            };
            if let Err(err) = result {
                tracing::error!("journal: write failed, refusing further writes: {err:#}");
                self.failed.store(true, Ordering::Release);
                receiver.close();
                while let Ok(request) = receiver.try_recv() {
                    let _ = request.done.send(Err(Error::JournalFailed));
                }
                return;
            }
        }
    }

    /// MUTANT (mutation check only): indexes and acknowledges a batch when
    /// it is written, before its sync.
    #[cfg(feature = "mutation-ack-before-fsync")]
    fn mutant_ack_early(&mut self, mut written: Written) -> Written {
        let deletable = (self.on_durable)(&written.durable, self.seq);
        for (done, (_, location)) in written.waiters.drain(..).zip(&written.durable) {
            let _ = done.send(Ok(*location));
        }
        self.delete_files(deletable);
        written.durable.clear();
        written
    }

    /// Encodes a batch and writes it to the file (not yet synced).
    fn write(&mut self, batch: Vec<Request>) -> Result<Written> {
        let mut buf = BytesMut::with_capacity(
            frame::SYNC_MARKER_LEN + batch.iter().map(|r| r.record.frame_len()).sum::<usize>(),
        );
        let mut durable = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        if !std::mem::take(&mut self.opened) {
            self.encoder.start_batch(self.len, &mut buf);
        }
        for request in batch {
            let at = self.encoder.encode(&request.record, self.batch, &mut buf);
            let location = Location {
                file: self.seq,
                offset: self.len + at as u64,
                len: request.record.payload_len() as u32,
            };
            durable.push((request.record, location));
            waiters.push(request.done);
        }
        if let Err(source) = self.file.write_all(&buf) {
            return Err(self.failed_write(waiters, source));
        }
        Ok(Written {
            durable,
            waiters,
            len: buf.len() as u64,
        })
    }

    fn failed_write(
        &self,
        waiters: Vec<oneshot::Sender<Result<Location>>>,
        source: std::io::Error,
    ) -> Error {
        for done in waiters {
            let _ = done.send(Err(Error::JournalFailed));
        }
        let path = self.options.dir.join(file_name(self.seq));
        Error::Io {
            path: path.display().to_string(),
            what: "append and fdatasync",
            source,
        }
    }

    /// Syncs a written batch, hands it to the index and completes its
    /// callers; rolls the file past its size limit.
    fn finish(&mut self, written: Written) -> Result<()> {
        let Written {
            durable,
            waiters,
            len,
        } = written;
        let syncing = std::time::Instant::now();
        if let Err(source) = self.file.sync_data() {
            return Err(self.failed_write(waiters, source));
        }
        self.series.fdatasync.record(syncing.elapsed());
        self.series.records.record(durable.len() as f64);
        self.len += len;
        self.batch += 1;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .records
            .fetch_add(durable.len() as u64, Ordering::Relaxed);
        self.stats.bytes.fetch_add(len, Ordering::Relaxed);
        let roll = self.len >= self.options.roll_bytes;
        // Before the acknowledgements, so that a kill -9 after any of them
        // finds the opener behind the batch (it failing stops the journal
        // after the batch, durable, is acknowledged).
        let opened = if roll { Ok(()) } else { self.open_next_batch() };

        let deletable = (self.on_durable)(&durable, self.seq);
        for (done, (_, location)) in waiters.into_iter().zip(&durable) {
            let _ = done.send(Ok(*location));
        }
        self.delete_files(deletable);
        opened?;
        if roll {
            self.seq += 1;
            (self.file, self.encoder) =
                Self::new_file(&mut self.layer, &self.options.dir, self.seq)?;
            self.len = frame::FILE_HEADER_LEN as u64;
        }
        Ok(())
    }

    /// Writes the next batch's opener right after a batch's sync, without a
    /// sync of its own, so that every synced batch has a later batch start
    /// behind it once a kill -9 or an idle node's writeback puts it on disk:
    /// replay then takes damage in that batch for damage, never for a torn
    /// tail (see [`mod@replay`]).
    ///
    /// Crash points: before the write, or with the opener torn or lost (a
    /// power loss before writeback), the file ends at the synced batch as it
    /// did before openers existed; a torn opener is cut as a torn tail and
    /// held no record. After it, the opener is an empty batch start. Not
    /// done before a roll: an older file is never cut, so a torn opener
    /// there would read as damage.
    fn open_next_batch(&mut self) -> Result<()> {
        let mut buf = BytesMut::with_capacity(frame::OPENER_LEN);
        self.encoder.open_batch(self.len, self.batch, &mut buf);
        self.file.write_all(&buf).map_err(|source| Error::Io {
            path: self
                .options
                .dir
                .join(file_name(self.seq))
                .display()
                .to_string(),
            what: "write the next batch's opener",
            source,
        })?;
        self.len += buf.len() as u64;
        self.opened = true;
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

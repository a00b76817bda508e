//! The embedded [`MetaStore`]: etcd semantics in one process, persisted in a
//! local directory. Used by standalone mode and unit tests.
//!
//! Durability: every change is appended to a write-ahead log (`meta.wal`,
//! frames of `len u32 | crc32c u32 | json`) and fdatasynced before it is
//! applied in memory, acknowledged or shown to watchers. Every 10 000 records
//! the whole state is written to `meta.snapshot` (temp file, fsync, rename,
//! fsync of the directory) and the log is truncated.
//!
//! Crash points:
//! * creating the WAL: the directory is fsynced after the file is created,
//!   so the name of a WAL holding acknowledged changes survives power loss.
//! * during a WAL append: the torn frame fails its length or CRC check on
//!   replay and is cut off; the change was never acknowledged. Only the last
//!   frame of the file can be torn (each append is synced before the next
//!   starts), so only a damaged frame that no valid record follows is cut.
//!   Damage with valid records after it (a flipped bit, a lost sector) is
//!   not a torn write: open refuses with [`Error::Corrupt`] (`DATA_LOSS`)
//!   naming the file and byte, rather than silently drop acknowledged
//!   changes. So does a gap in the records' sequence numbers.
//! * after the snapshot rename, before the WAL truncation: WAL records carry a
//!   sequence number and replay skips those the snapshot already holds.
//!
//! Leases survive a restart with a fresh TTL (as etcd does after a leader
//! change), and expire on the same schedule as etcd's: a sweeper revokes
//! leases not kept alive within their TTL, deleting their keys.
//!
//! Watches can start at any revision still in the in-memory history (events
//! since the last snapshot, at most [`HISTORY_LIMIT`]); older starts get
//! [`Error::Compacted`], as a compacted etcd would answer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

// tokio's clock: the same as std's, except under a paused test clock (the
// simulation), where lease deadlines then follow simulated time.
use tokio::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{
    Error, KeyValue, LeaseId, MetaStore, RangeResponse, Result, Revision, Txn, TxnOp, TxnResponse,
    WatchEvent, WatchStream,
};

const WAL_FILE: &str = "meta.wal";
const SNAPSHOT_FILE: &str = "meta.snapshot";
const LOCK_FILE: &str = "LOCK";
/// WAL records between snapshots.
const SNAPSHOT_EVERY: u64 = 10_000;
/// Most watch events kept for watches that start in the past.
pub const HISTORY_LIMIT: usize = 100_000;
const SWEEP_PERIOD: Duration = Duration::from_millis(50);

/// A [`MetaStore`] persisted in a local directory.
#[derive(Debug)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    sweeper: tokio::task::JoinHandle<()>,
    /// Runs every operation on the calling task instead of a blocking
    /// thread ([`EmbeddedStore::open_inline`]).
    inline: bool,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    /// Held for the store's lifetime: one process per directory.
    _lock: File,
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

#[derive(Debug)]
struct Watcher {
    prefix: String,
    events: mpsc::UnboundedSender<Result<WatchEvent>>,
}

#[derive(Debug)]
struct State {
    kvs: BTreeMap<String, KeyValue>,
    revision: Revision,
    /// Watches must start after this revision.
    compacted: Revision,
    history: VecDeque<WatchEvent>,
    leases: BTreeMap<LeaseId, Lease>,
    next_lease: LeaseId,
    watchers: Vec<Watcher>,
    wal: File,
    /// Sequence number of the last WAL record written.
    seq: u64,
    records_since_snapshot: u64,
    /// Set when a WAL write failed: the file may hold a partial frame, so no
    /// further change is accepted until the store is reopened.
    poisoned: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Mutation {
    Put {
        key: String,
        value: Bytes,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum WalRecord {
    Txn {
        revision: Revision,
        mutations: Vec<Mutation>,
    },
    LeaseGrant {
        id: LeaseId,
        ttl_ms: u64,
    },
    /// The lease's keys are deleted at `revision` (unused when it had none).
    LeaseRevoke {
        id: LeaseId,
        revision: Revision,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Framed {
    seq: u64,
    record: WalRecord,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotKv {
    key: String,
    value: Bytes,
    create_revision: Revision,
    mod_revision: Revision,
    version: i64,
    lease: Option<LeaseId>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    seq: u64,
    revision: Revision,
    next_lease: LeaseId,
    leases: Vec<(LeaseId, u64)>,
    kvs: Vec<SnapshotKv>,
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.display().to_string(),
        what,
        source,
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir` and replays its state.
    pub async fn open(dir: impl AsRef<Path>) -> Result<EmbeddedStore> {
        let dir = dir.as_ref().to_path_buf();
        let shared = tokio::task::spawn_blocking(move || Shared::open(dir))
            .await
            .map_err(|err| Error::Unavailable(format!("open embedded metastore: {err}")))??;
        let shared = Arc::new(shared);
        let sweeper = tokio::spawn(sweep_leases(Arc::downgrade(&shared), false));
        Ok(EmbeddedStore {
            shared,
            sweeper,
            inline: false,
        })
    }

    /// [`EmbeddedStore::open`], with every operation (and the lease sweep)
    /// run on the calling task: no blocking threads, so a single-threaded
    /// runtime with a paused clock runs it deterministically (the
    /// simulation). Each operation blocks its thread for its file I/O.
    pub fn open_inline(dir: impl AsRef<Path>) -> Result<EmbeddedStore> {
        let shared = Arc::new(Shared::open(dir.as_ref().to_path_buf())?);
        let sweeper = tokio::spawn(sweep_leases(Arc::downgrade(&shared), true));
        Ok(EmbeddedStore {
            shared,
            sweeper,
            inline: true,
        })
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        if self.inline {
            return op(&shared);
        }
        tokio::task::spawn_blocking(move || op(&shared))
            .await
            .map_err(|err| Error::Unavailable(format!("embedded metastore task: {err}")))?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

async fn sweep_leases(shared: Weak<Shared>, inline: bool) {
    loop {
        tokio::time::sleep(SWEEP_PERIOD).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let result = if inline {
            Ok(shared.expire_leases())
        } else {
            tokio::task::spawn_blocking(move || shared.expire_leases()).await
        };
        if let Ok(Err(err)) = result {
            tracing::warn!("embedded metastore: lease expiry failed: {err:#}");
        }
    }
}

impl Shared {
    fn open(dir: PathBuf) -> Result<Shared> {
        fs::create_dir_all(&dir).map_err(io_err(&dir, "create directory"))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::create(&lock_path).map_err(io_err(&lock_path, "create lock file"))?;
        lock.try_lock().map_err(|_| Error::Io {
            path: dir.display().to_string(),
            what: "lock directory (is another process using it?)",
            source: std::io::Error::from(std::io::ErrorKind::WouldBlock),
        })?;

        let snapshot = read_snapshot(&dir.join(SNAPSHOT_FILE))?;
        let wal_path = dir.join(WAL_FILE);
        let mut wal = open_wal(&dir, &wal_path)?;
        let now = Instant::now();
        let mut state = State {
            kvs: BTreeMap::new(),
            revision: 1,
            compacted: 1,
            history: VecDeque::new(),
            leases: BTreeMap::new(),
            next_lease: 1,
            watchers: Vec::new(),
            wal: wal.try_clone().map_err(io_err(&wal_path, "open"))?,
            seq: 0,
            records_since_snapshot: 0,
            poisoned: false,
        };
        if let Some(snapshot) = snapshot {
            state.seq = snapshot.seq;
            state.revision = snapshot.revision;
            state.compacted = snapshot.revision;
            state.next_lease = snapshot.next_lease;
            for (id, ttl_ms) in snapshot.leases {
                let ttl = Duration::from_millis(ttl_ms);
                state.leases.insert(
                    id,
                    Lease {
                        ttl,
                        deadline: now + ttl,
                        keys: BTreeSet::new(),
                    },
                );
            }
            for kv in snapshot.kvs {
                if let Some(lease) = kv.lease.and_then(|id| state.leases.get_mut(&id)) {
                    lease.keys.insert(kv.key.clone());
                }
                state.kvs.insert(
                    kv.key.clone(),
                    KeyValue {
                        key: kv.key,
                        value: kv.value,
                        create_revision: kv.create_revision,
                        mod_revision: kv.mod_revision,
                        version: kv.version,
                        lease: kv.lease,
                    },
                );
            }
        }

        let mut bytes = Vec::new();
        wal.read_to_end(&mut bytes)
            .map_err(io_err(&wal_path, "read"))?;
        let (records, good_len) = parse_frames(&bytes);
        if good_len < bytes.len() {
            if let Some(next) = next_record_after(&bytes, good_len) {
                return Err(Error::Corrupt {
                    path: wal_path.display().to_string(),
                    reason: format!(
                        "damaged write-ahead log record at byte {good_len} of {}, with a valid \
                         record after it at byte {next}: not a torn write; refusing to open \
                         rather than drop acknowledged changes (restore the directory from a \
                         backup)",
                        bytes.len()
                    ),
                });
            }
            tracing::warn!(
                path = %wal_path.display(),
                cut = bytes.len() - good_len,
                "embedded metastore: cutting a torn write-ahead log tail"
            );
            wal.set_len(good_len as u64)
                .and_then(|()| wal.sync_data())
                .map_err(io_err(&wal_path, "truncate torn tail"))?;
        }
        for framed in records {
            let framed: Framed = serde_json::from_slice(&framed).map_err(|err| Error::Corrupt {
                path: wal_path.display().to_string(),
                reason: format!("undecodable record: {err}"),
            })?;
            if framed.seq <= state.seq {
                continue; // already in the snapshot
            }
            if framed.seq != state.seq + 1 {
                return Err(Error::Corrupt {
                    path: wal_path.display().to_string(),
                    reason: format!(
                        "write-ahead log record {} follows record {}: records are missing",
                        framed.seq, state.seq
                    ),
                });
            }
            state.seq = framed.seq;
            state.records_since_snapshot += 1;
            state.replay(framed.record, now);
        }
        Ok(Shared {
            dir,
            state: Mutex::new(state),
            _lock: lock,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change:
        // changes are applied only after their WAL record is durable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expire_leases(&self) -> Result<()> {
        let mut state = self.lock();
        let now = Instant::now();
        let expired: Vec<LeaseId> = state
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            tracing::debug!(lease = id, "embedded metastore: lease expired");
            state.revoke(&self.dir, id)?;
        }
        Ok(())
    }
}

fn read_snapshot(path: &Path) -> Result<Option<Snapshot>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| Error::Corrupt {
                path: path.display().to_string(),
                reason: format!("undecodable snapshot: {err}"),
            }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_err(path, "read snapshot")(err)),
    }
}

/// Opens the WAL for appending, creating it (and making its name durable
/// with an fsync of the directory) if needed.
fn open_wal(dir: &Path, path: &Path) -> Result<File> {
    let existing = OpenOptions::new().read(true).append(true).open(path);
    match existing {
        Ok(file) => Ok(file),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(path)
                .map_err(io_err(path, "create"))?;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir, "sync directory after creating the WAL"))?;
            Ok(file)
        }
        Err(err) => Err(io_err(path, "open")(err)),
    }
}

/// The offset of a valid, decodable record after the damaged frame at
/// `damaged`, if there is one: then the damage is not a torn tail. Used only
/// to refuse, never to accept a record.
fn next_record_after(bytes: &[u8], damaged: usize) -> Option<usize> {
    (damaged + 1..bytes.len().saturating_sub(8)).find(|&at| {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        // Records are JSON objects: cheap filters before the CRC.
        len > 0
            && bytes.len() - at - 8 >= len
            && bytes[at + 8] == b'{'
            && crc32c::crc32c(&bytes[at + 8..at + 8 + len]) == crc
            && serde_json::from_slice::<Framed>(&bytes[at + 8..at + 8 + len]).is_ok()
    })
}

/// Splits a WAL into record payloads; returns them and the length of the
/// valid prefix (everything after it is a torn or corrupt tail).
fn parse_frames(bytes: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        records.push(payload.to_vec());
        at += 8 + len;
    }
    (records, at)
}

impl State {
    /// Appends a record to the WAL and makes it durable.
    fn log(&mut self, dir: &Path, record: WalRecord) -> Result<()> {
        if self.poisoned {
            return Err(Error::Unavailable(format!(
                "embedded metastore {}: an earlier write failed; reopen the store",
                dir.display()
            )));
        }
        let framed = Framed {
            seq: self.seq + 1,
            record,
        };
        let payload = serde_json::to_vec(&framed).expect("WAL records serialize");
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        let wal_path = dir.join(WAL_FILE);
        if let Err(err) = self
            .wal
            .write_all(&frame)
            .and_then(|()| self.wal.sync_data())
        {
            self.poisoned = true;
            return Err(io_err(&wal_path, "append")(err));
        }
        self.seq += 1;
        self.records_since_snapshot += 1;
        Ok(())
    }

    /// Writes a snapshot and truncates the WAL when enough records piled up.
    fn maybe_snapshot(&mut self, dir: &Path) -> Result<()> {
        if self.records_since_snapshot < SNAPSHOT_EVERY {
            return Ok(());
        }
        let snapshot = Snapshot {
            seq: self.seq,
            revision: self.revision,
            next_lease: self.next_lease,
            leases: self
                .leases
                .iter()
                .map(|(id, lease)| (*id, lease.ttl.as_millis() as u64))
                .collect(),
            kvs: self
                .kvs
                .values()
                .map(|kv| SnapshotKv {
                    key: kv.key.clone(),
                    value: kv.value.clone(),
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                    version: kv.version,
                    lease: kv.lease,
                })
                .collect(),
        };
        let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let path = dir.join(SNAPSHOT_FILE);
        let bytes = serde_json::to_vec(&snapshot).expect("snapshots serialize");
        let mut file = File::create(&tmp).map_err(io_err(&tmp, "create snapshot"))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_err(&tmp, "write snapshot"))?;
        fs::rename(&tmp, &path).map_err(io_err(&path, "install snapshot"))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir, "sync directory"))?;
        // Crash here: the WAL still holds records the snapshot covers; replay
        // skips them by sequence number.
        let wal_path = dir.join(WAL_FILE);
        self.wal
            .set_len(0)
            .and_then(|()| self.wal.sync_data())
            .map_err(io_err(&wal_path, "truncate after snapshot"))?;
        self.records_since_snapshot = 0;
        Ok(())
    }

    /// Re-applies a WAL record during open.
    fn replay(&mut self, record: WalRecord, now: Instant) {
        match record {
            WalRecord::Txn {
                revision,
                mutations,
            } => {
                self.revision = revision;
                self.apply(revision, mutations);
            }
            WalRecord::LeaseGrant { id, ttl_ms } => {
                let ttl = Duration::from_millis(ttl_ms);
                self.next_lease = self.next_lease.max(id + 1);
                self.leases.insert(
                    id,
                    Lease {
                        ttl,
                        deadline: now + ttl,
                        keys: BTreeSet::new(),
                    },
                );
            }
            WalRecord::LeaseRevoke { id, revision } => {
                if let Some(lease) = self.leases.remove(&id) {
                    let mutations: Vec<Mutation> = lease
                        .keys
                        .into_iter()
                        .map(|key| Mutation::Delete { key })
                        .collect();
                    if !mutations.is_empty() {
                        self.revision = revision;
                        self.apply(revision, mutations);
                    }
                }
            }
        }
    }

    /// Applies mutations at `revision` to memory, records and publishes the
    /// watch events.
    fn apply(&mut self, revision: Revision, mutations: Vec<Mutation>) {
        for mutation in mutations {
            let event = match mutation {
                Mutation::Put { key, value, lease } => {
                    let previous = self.kvs.get(&key);
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision: previous.map_or(revision, |p| p.create_revision),
                        mod_revision: revision,
                        version: previous.map_or(1, |p| p.version + 1),
                        lease,
                    };
                    if let Some(old) = previous.and_then(|p| p.lease)
                        && let Some(old) = self.leases.get_mut(&old)
                    {
                        old.keys.remove(&key);
                    }
                    if let Some(new) = lease.and_then(|l| self.leases.get_mut(&l)) {
                        new.keys.insert(key.clone());
                    }
                    self.kvs.insert(key, kv.clone());
                    WatchEvent::Put(kv)
                }
                Mutation::Delete { key } => {
                    if let Some(old) = self.kvs.remove(&key)
                        && let Some(lease) = old.lease.and_then(|l| self.leases.get_mut(&l))
                    {
                        lease.keys.remove(&key);
                    }
                    WatchEvent::Delete { key, revision }
                }
            };
            self.watchers.retain(|w| {
                !event.key().starts_with(&w.prefix) || w.events.send(Ok(event.clone())).is_ok()
            });
            self.history.push_back(event);
            if self.history.len() > HISTORY_LIMIT
                && let Some(dropped) = self.history.pop_front()
            {
                self.compacted = dropped.revision();
            }
        }
    }

    fn revoke(&mut self, dir: &Path, id: LeaseId) -> Result<()> {
        let Some(lease) = self.leases.get(&id) else {
            return Err(Error::LeaseNotFound(id));
        };
        let revision = if lease.keys.is_empty() {
            self.revision
        } else {
            self.revision + 1
        };
        self.log(dir, WalRecord::LeaseRevoke { id, revision })?;
        let lease = self.leases.remove(&id).expect("checked above");
        let mutations: Vec<Mutation> = lease
            .keys
            .into_iter()
            .map(|key| Mutation::Delete { key })
            .collect();
        if !mutations.is_empty() {
            self.revision = revision;
            self.apply(revision, mutations);
        }
        self.maybe_snapshot(dir)
    }

    fn txn(&mut self, dir: &Path, txn: Txn) -> Result<TxnResponse> {
        let succeeded = txn.compares.iter().all(|c| c.holds(self.kvs.get(&c.key)));
        let ops = if succeeded { txn.success } else { txn.failure };
        let mut gets = Vec::new();
        let mut mutations = Vec::new();
        // Keys deleted or written earlier in this txn, so a later delete of
        // the same key is not a no-op and a prefix delete sees earlier puts.
        let mut touched: BTreeMap<String, bool> = BTreeMap::new();
        for op in ops {
            match op {
                TxnOp::Get { key } => gets.push(self.kvs.get(&key).cloned()),
                TxnOp::Put { key, value, lease } => {
                    if let Some(lease) = lease
                        && !self.leases.contains_key(&lease)
                    {
                        return Err(Error::LeaseNotFound(lease));
                    }
                    touched.insert(key.clone(), true);
                    mutations.push(Mutation::Put { key, value, lease });
                }
                TxnOp::Delete { key } => {
                    let exists = touched
                        .get(&key)
                        .copied()
                        .unwrap_or_else(|| self.kvs.contains_key(&key));
                    if exists {
                        touched.insert(key.clone(), false);
                        mutations.push(Mutation::Delete { key });
                    }
                }
                TxnOp::DeletePrefix { prefix } => {
                    let mut keys: BTreeSet<String> = self
                        .kvs
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(&prefix))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for (key, live) in touched.range(prefix.clone()..) {
                        if !key.starts_with(&prefix) {
                            break;
                        }
                        if *live {
                            keys.insert(key.clone());
                        } else {
                            keys.remove(key);
                        }
                    }
                    for key in keys {
                        touched.insert(key.clone(), false);
                        mutations.push(Mutation::Delete { key });
                    }
                }
            }
        }
        if !mutations.is_empty() {
            let revision = self.revision + 1;
            self.log(
                dir,
                WalRecord::Txn {
                    revision,
                    mutations: mutations.clone(),
                },
            )?;
            self.revision = revision;
            self.apply(revision, mutations);
            self.maybe_snapshot(dir)?;
        }
        Ok(TxnResponse {
            succeeded,
            revision: self.revision,
            gets,
        })
    }
}

#[async_trait]
impl MetaStore for EmbeddedStore {
    async fn range(&self, key: &str, prefix: bool) -> Result<RangeResponse> {
        let state = self.shared.lock();
        let kvs = if prefix {
            state
                .kvs
                .range(key.to_owned()..)
                .take_while(|(k, _)| k.starts_with(key))
                .map(|(_, kv)| kv.clone())
                .collect()
        } else {
            state.kvs.get(key).cloned().into_iter().collect()
        };
        Ok(RangeResponse {
            kvs,
            revision: state.revision,
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.blocking(move |shared| shared.lock().txn(&shared.dir, txn))
            .await
    }

    async fn watch(&self, prefix: &str, start_revision: Option<Revision>) -> Result<WatchStream> {
        let mut state = self.shared.lock();
        let start = start_revision.unwrap_or(state.revision + 1);
        if start <= state.compacted {
            return Err(Error::Compacted {
                requested: start,
                compacted: state.compacted,
            });
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        for event in &state.history {
            if event.revision() >= start && event.key().starts_with(prefix) {
                // The receiver is alive: we hold it.
                let _ = sender.send(Ok(event.clone()));
            }
        }
        state.watchers.push(Watcher {
            prefix: prefix.to_owned(),
            events: sender,
        });
        Ok(UnboundedReceiverStream::new(receiver).boxed())
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let ttl = ttl.max(Duration::from_secs(1));
        self.blocking(move |shared| {
            let mut state = shared.lock();
            let id = state.next_lease;
            state.log(
                &shared.dir,
                WalRecord::LeaseGrant {
                    id,
                    ttl_ms: ttl.as_millis() as u64,
                },
            )?;
            state.next_lease += 1;
            state.leases.insert(
                id,
                Lease {
                    ttl,
                    deadline: Instant::now() + ttl,
                    keys: BTreeSet::new(),
                },
            );
            state.maybe_snapshot(&shared.dir)?;
            Ok(id)
        })
        .await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let mut state = self.shared.lock();
        let now = Instant::now();
        match state.leases.get_mut(&lease) {
            Some(l) if l.deadline > now => {
                l.deadline = now + l.ttl;
                Ok(l.ttl)
            }
            _ => Err(Error::LeaseNotFound(lease)),
        }
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.blocking(move |shared| shared.lock().revoke(&shared.dir, lease))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_frames_are_cut_at_the_last_good_record() {
        let frame = |payload: &[u8]| {
            let mut f = (payload.len() as u32).to_le_bytes().to_vec();
            f.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
            f.extend_from_slice(payload);
            f
        };
        let mut wal = frame(b"one");
        wal.extend(frame(b"two"));
        let good = wal.len();
        let mut torn = frame(b"three");
        torn.truncate(torn.len() - 1);
        wal.extend(torn);
        let (records, len) = parse_frames(&wal);
        assert_eq!(records, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(len, good);

        let mut flipped = frame(b"one");
        flipped[9] ^= 0x40;
        assert_eq!(parse_frames(&flipped), (vec![], 0));
    }

    /// Writes ten changes (`key/0` … `key/9`) and returns the WAL path and
    /// where each frame starts.
    async fn ten_changes(dir: &Path) -> (PathBuf, Vec<usize>) {
        let store = EmbeddedStore::open(dir).await.unwrap();
        for i in 0..10 {
            let txn = Txn::new().and_then([TxnOp::put(format!("key/{i}"), format!("value {i}"))]);
            store.txn(txn).await.unwrap();
        }
        drop(store);
        let path = dir.join(WAL_FILE);
        let bytes = fs::read(&path).unwrap();
        let mut starts = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            starts.push(at);
            at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        }
        assert_eq!(starts.len(), 10);
        (path, starts)
    }

    async fn keys(dir: &Path) -> Vec<String> {
        let store = EmbeddedStore::open(dir).await.unwrap();
        let range = store.range("key/", true).await.unwrap();
        range.kvs.into_iter().map(|kv| kv.key).collect()
    }

    #[tokio::test]
    async fn a_damaged_record_before_the_tail_refuses_to_open() {
        for (what, byte_in_frame, bit) in [("payload", 20, 0x04), ("length", 1, 0x40)] {
            let dir = tempfile::tempdir().unwrap();
            let (path, starts) = ten_changes(dir.path()).await;
            let mut bytes = fs::read(&path).unwrap();
            let at = starts[4] + byte_in_frame;
            bytes[at] ^= bit;
            fs::write(&path, &bytes).unwrap();

            let err = EmbeddedStore::open(dir.path()).await.expect_err(&format!(
                "a flipped {what} bit in record 5 of 10 must refuse"
            ));
            assert_eq!(
                dlog_wire::error::Classify::kind(&err),
                dlog_wire::error::ErrorKind::DataLoss,
                "{err}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&path.display().to_string())
                    && text.contains(&format!("byte {}", starts[4])),
                "names the file and the offset: {text}"
            );
            eprintln!("{what} bit flipped: {text}");
            assert_eq!(fs::read(&path).unwrap(), bytes, "nothing was cut");
        }
    }

    #[tokio::test]
    async fn a_torn_last_record_is_cut_and_the_earlier_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (path, starts) = ten_changes(dir.path()).await;
        let len = fs::metadata(&path).unwrap().len();
        // Torn short, and torn to full length with its end not written.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 5).unwrap();
        let expected: Vec<String> = (0..9).map(|i| format!("key/{i}")).collect();
        assert_eq!(keys(dir.path()).await, expected);
        assert_eq!(fs::metadata(&path).unwrap().len(), starts[9] as u64);

        let dir = tempfile::tempdir().unwrap();
        let (path, starts) = ten_changes(dir.path()).await;
        let mut bytes = fs::read(&path).unwrap();
        let end = bytes.len();
        bytes[end - 6..].fill(0);
        fs::write(&path, &bytes).unwrap();
        assert_eq!(keys(dir.path()).await, expected);
        assert_eq!(fs::metadata(&path).unwrap().len(), starts[9] as u64);
    }
}

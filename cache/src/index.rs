//! The in-memory index of a cache node: per segment, where each entry is in
//! the journal, the fencing epoch, the LAC, and whether the segment was
//! damaged here. Rebuilt by replaying the journal on start.
//!
//! Also decides journal garbage collection: it knows which segments have
//! records in which file, and hands back the oldest files no live segment
//! uses (oldest first only: see [`crate::journal`]).
//!
//! When replay could not locate the records after some damage
//! ([`Index::mark_lost`]), the node may have lost entries, fences or drops
//! of any segment, even of segments it no longer knows: it then marks every
//! segment damaged, refuses every add, fence and read, and deletes no
//! journal file (so the state survives restarts until the journal directory
//! is wiped).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use tokio::sync::watch;

use crate::journal::{Location, Record};
use crate::segment_key::SegmentKey;

/// Where a segment's LAC and last entry stand; sent to long-pollers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Last add confirmed: every entry up to it is acknowledged by a quorum.
    pub lac: Option<u64>,
    /// Highest entry id this node holds.
    pub last_entry_id: Option<u64>,
}

/// What the node knows of one segment.
#[derive(Debug)]
pub struct SegmentState {
    pub entries: BTreeMap<u64, Location>,
    /// Entries below it are held (or queued to the journal), with no hole:
    /// the next add may be at most this id. Advanced by an add as it is
    /// queued, and on replay. A node thus holds a prefix of each segment,
    /// so an add it accepts proves it holds every entry before it.
    pub held_end: u64,
    /// Adds below this epoch are refused. Raised in memory as soon as a
    /// fence is accepted, made durable by its journal record.
    pub fence_epoch: u64,
    /// Set when a record of this segment was found damaged here (on replay,
    /// on a read, or by a `Damaged` record): the segment then refuses adds,
    /// fences and reads with `DATA_LOSS` until it is dropped.
    pub damaged: Option<String>,
    files: BTreeSet<u64>,
    progress: watch::Sender<Progress>,
}

impl SegmentState {
    fn new() -> SegmentState {
        SegmentState {
            entries: BTreeMap::new(),
            held_end: 0,
            fence_epoch: 0,
            damaged: None,
            files: BTreeSet::new(),
            progress: watch::Sender::new(Progress::default()),
        }
    }

    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Follows the segment's progress (for LAC long-polls).
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Raises the LAC; it never goes back.
    pub fn advance_lac(&self, lac: u64) {
        self.progress.send_if_modified(|p| {
            if p.lac.is_none_or(|current| lac > current) {
                p.lac = Some(lac);
                true
            } else {
                false
            }
        });
    }
}

/// The node's index.
#[derive(Debug, Default)]
pub struct Index {
    segments: HashMap<SegmentKey, SegmentState>,
    /// Dropped segments, refused from then on.
    dropped: HashSet<SegmentKey>,
    /// Live segments with records in each journal file.
    file_users: BTreeMap<u64, HashSet<SegmentKey>>,
    /// Why the node's journal cannot be trusted for any segment, if so.
    lost: Option<String>,
}

impl Index {
    pub fn segment(&self, key: &SegmentKey) -> Option<&SegmentState> {
        self.segments.get(key)
    }

    pub fn segment_mut(&mut self, key: &SegmentKey) -> Option<&mut SegmentState> {
        self.segments.get_mut(key)
    }

    /// The segment's state, created empty if unknown.
    pub fn segment_or_new(&mut self, key: SegmentKey) -> &mut SegmentState {
        self.segments.entry(key).or_insert_with(SegmentState::new)
    }

    pub fn is_dropped(&self, key: &SegmentKey) -> bool {
        self.dropped.contains(key)
    }

    /// The live (not dropped) segments.
    pub fn segment_keys(&self) -> Vec<SegmentKey> {
        self.segments.keys().copied().collect()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Journal files that exist, by sequence number.
    pub fn note_file(&mut self, file: u64) {
        self.file_users.entry(file).or_default();
    }

    /// Applies a durable record (on replay and on the writer thread).
    pub fn apply(&mut self, record: &Record, location: Location) {
        match record {
            Record::Entry {
                segment,
                entry_id,
                lac,
                ..
            } => {
                if self.dropped.contains(segment) {
                    return;
                }
                let state = self
                    .segments
                    .entry(*segment)
                    .or_insert_with(SegmentState::new);
                state.entries.insert(*entry_id, location);
                // Live, the add advanced it already; on replay, here.
                while state.entries.contains_key(&state.held_end) {
                    state.held_end += 1;
                }
                state.files.insert(location.file);
                state.progress.send_if_modified(|p| {
                    let changed = p.last_entry_id.is_none_or(|last| *entry_id > last);
                    if changed {
                        p.last_entry_id = Some(*entry_id);
                    }
                    changed
                });
                if let Some(lac) = lac {
                    state.advance_lac(*lac);
                }
                self.file_users
                    .entry(location.file)
                    .or_default()
                    .insert(*segment);
            }
            Record::Fence { segment, epoch } => {
                if self.dropped.contains(segment) {
                    return;
                }
                let state = self
                    .segments
                    .entry(*segment)
                    .or_insert_with(SegmentState::new);
                state.fence_epoch = state.fence_epoch.max(*epoch);
                state.files.insert(location.file);
                self.file_users
                    .entry(location.file)
                    .or_default()
                    .insert(*segment);
            }
            Record::Damaged { segment, reason } => {
                if self.dropped.contains(segment) {
                    return;
                }
                let state = self
                    .segments
                    .entry(*segment)
                    .or_insert_with(SegmentState::new);
                state.damaged.get_or_insert_with(|| reason.clone());
                // The mark's file is kept while the segment lives.
                state.files.insert(location.file);
                self.file_users
                    .entry(location.file)
                    .or_default()
                    .insert(*segment);
            }
            Record::Drop { segment } => {
                self.dropped.insert(*segment);
                if let Some(state) = self.segments.remove(segment) {
                    for file in state.files {
                        if let Some(users) = self.file_users.get_mut(&file) {
                            users.remove(segment);
                        }
                    }
                }
                self.file_users.entry(location.file).or_default();
            }
        }
    }

    /// Marks a segment damaged on this node (adds, fences and reads then
    /// fail with `DATA_LOSS`, so writers, recovery and readers go to another
    /// replica). Returns whether this newly marked a live segment.
    pub fn mark_damaged(&mut self, key: SegmentKey, reason: String) -> bool {
        if self.dropped.contains(&key) {
            return false;
        }
        let state = self.segment_or_new(key);
        let new = state.damaged.is_none();
        state.damaged.get_or_insert(reason);
        new
    }

    /// Records that replay could not locate the records after some damage:
    /// every segment is damaged on this node from now on (call after every
    /// replayed record is applied).
    pub fn mark_lost(&mut self, reason: String) {
        for state in self.segments.values_mut() {
            state.damaged.get_or_insert_with(|| reason.clone());
        }
        self.lost.get_or_insert(reason);
    }

    /// Why this node serves no segment, if it does not (see
    /// [`Index::mark_lost`]).
    pub fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    /// Takes the oldest files, up to the first still in use, that no live
    /// segment has records in; never the file being written, and none while
    /// the node is lost.
    pub fn take_deletable_files(&mut self, active: u64) -> Vec<u64> {
        let mut deletable = Vec::new();
        if self.lost.is_some() {
            return deletable;
        }
        for (&file, users) in &self.file_users {
            if file >= active || !users.is_empty() {
                break;
            }
            deletable.push(file);
        }
        for file in &deletable {
            self.file_users.remove(file);
        }
        deletable
    }
}

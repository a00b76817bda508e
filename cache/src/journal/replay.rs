//! Replay: reading every journal file back at open.
//!
//! Replay follows the frame chain (see [`super::frame`]) and never reads a
//! frame out of a payload, so bytes inside a payload are never taken for a
//! record. What it does with damage depends on where the damage is:
//!
//! | damage | in the newest file | in an older file |
//! |---|---|---|
//! | the file header, file no longer than a header | torn creation: the file (it holds no record) is deleted | — (an older file always has records after its header) |
//! | the file header, file longer (also a flipped bit in its magic or version) | [`DamageKind::Unlocatable`] | [`DamageKind::Unlocatable`] |
//! | a frame whose header verifies, payload does not, and a later batch was started after it | [`DamageKind::Segment`]: that segment is damaged on this node, replay goes on | same, later batch or not |
//! | the same with no later batch started after it | torn tail: cut off there | (see above) |
//! | a header that does not verify (or a truncated frame), and a later batch was started after it (version 4 and later: found by its sync marker) | [`DamageKind::Unlocatable`] | [`DamageKind::Unlocatable`] |
//! | the same with no later batch started after it | torn tail: cut off there | (see above) |
//!
//! Only the newest file can have a torn tail: the writer starts a new file
//! at every open, and rolls only after a batch's `fdatasync` returned; and
//! replay syncs the newest file (after cutting it, if it cuts) before the
//! writer starts the next one, so bytes that a kill -9 left unsynced there
//! (the last batch's opener, a batch written but not yet synced) cannot be
//! torn by a later power loss once the file is an older one. And
//! only its last batch can be torn: the writer starts a batch only after the
//! previous one's `fdatasync` returned, so damage followed by the start of a
//! later batch is in a batch that was synced (and acknowledged): real
//! damage. Damage with no later batch after it is in the batch in flight at
//! the crash, never acknowledged, whose pages may reach the disk in any
//! order: it is cut off there with everything after it. Since version 5
//! the writer opens the next batch right after each sync (see
//! [`super::frame`]), so "no later batch after it" no longer holds for the
//! last synced batch either, once its opener reached the disk: a damaged
//! frame there is damage, and only the batch in flight is cut.
//!
//! "A later batch was started": a frame of a later batch reached by
//! following the chain, or (version 4 and later) a batch start found by
//! [`frame::find_batch_start`] further on, which needs no chain through the
//! damage. So in a version-4 or 5 file a damaged frame header in any batch but
//! the last makes the node [`DamageKind::Unlocatable`]: the records from
//! the damage to the next batch start cannot be located, and they may be
//! entries, fences or drops of any segment (replay does not resume at the
//! batch start: the node serves nothing either way, and the file stays as
//! it is until the journal directory is wiped). A version-3 file (written
//! before an upgrade) has no markers: there, a damaged header in the newest
//! file still looks like a torn tail and is cut, as that format always
//! did; it is the newest file for one start at most, the first after the
//! upgrade.
//!
//! Why the scan is safe both ways. A batch start found where there is none
//! would only make the node give up its copy (it serves nothing): it needs
//! the file's 16-byte marker (derived from its 64-bit random nonce, which
//! never leaves the node) followed by a header whose check verifies at that
//! offset, so neither a payload nor a copy of a real batch start qualifies.
//! A later batch start missed would cut synced records: that needs the
//! damage to reach the start of every later batch in the file too.

use std::fs::{self, OpenOptions};
use std::path::Path;

use bytes::Bytes;

use super::frame::{self, FILE_HEADER_LEN, FileKeys, FrameError, HeaderError};
use super::{Location, Record, file_name, io_err, list_files};
use crate::error::{Error, Result};
use crate::segment_key::SegmentKey;

/// What kind of damage replay found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// A torn write at the end of the newest file, cut off: it was never
    /// acknowledged.
    TornTail,
    /// A frame of this segment whose payload fails its checksum, in a batch
    /// that was synced; the frames after it were located and kept. The
    /// segment is damaged on this node. `fence`: the frame was a fence, so
    /// the segment's fencing epoch is unknown.
    Segment { segment: SegmentKey, fence: bool },
    /// A header that fails its check anywhere a torn write cannot be: the
    /// records after it in the file cannot be located, so this node may have
    /// lost records of any segment.
    Unlocatable,
}

/// Damage found on replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub file: u64,
    pub offset: u64,
    pub kind: DamageKind,
}

/// Everything replay found, in journal order.
#[derive(Debug, Default)]
pub struct Replay {
    pub records: Vec<(Record, Location)>,
    pub damage: Vec<Damage>,
    /// Existing files, oldest first.
    pub files: Vec<u64>,
}

/// Reads every journal file, cutting a torn tail off the newest one.
pub fn replay(dir: &Path) -> Result<Replay> {
    fs::create_dir_all(dir).map_err(io_err(dir, "create directory"))?;
    let files = list_files(dir)?;
    let mut replay = Replay::default();
    for (i, &seq) in files.iter().enumerate() {
        let newest = i + 1 == files.len();
        let path = dir.join(file_name(seq));
        let data = Bytes::from(fs::read(&path).map_err(io_err(&path, "read"))?);
        let format_error = |reason: String| Error::JournalFormat {
            path: path.display().to_string(),
            reason,
        };
        let keys = match frame::parse_file_header(&data, seq) {
            Ok(keys) => keys,
            Err(HeaderError::Damaged) if newest && data.len() <= FILE_HEADER_LEN => {
                tracing::warn!(file = %path.display(),
                    "journal: removing a file whose creation was torn (it holds no record)");
                fs::remove_file(&path)
                    .and_then(|()| fs::File::open(dir).and_then(|d| d.sync_all()))
                    .map_err(io_err(&path, "remove a torn new file"))?;
                replay.damage.push(Damage {
                    file: seq,
                    offset: 0,
                    kind: DamageKind::TornTail,
                });
                continue;
            }
            Err(HeaderError::Damaged) => {
                replay.files.push(seq);
                unlocatable(&mut replay, &path, seq, 0);
                continue;
            }
            Err(HeaderError::NotAJournal) => {
                return Err(format_error(format!(
                    "not a journal file of any format this build knows; {REFUSED}"
                )));
            }
            Err(HeaderError::Version(version)) => {
                return Err(format_error(format!(
                    "journal format version {version}; this build reads versions {} to {} \
                     only; {REFUSED}",
                    frame::VERSION_3,
                    frame::VERSION
                )));
            }
            Err(HeaderError::WrongSeq(found)) => {
                return Err(format_error(format!(
                    "its header says it is journal file {found}; {REFUSED}"
                )));
            }
        };
        replay.files.push(seq);
        let mut chain = keys.first_chain();
        let mut at = FILE_HEADER_LEN;
        while at < data.len() {
            let err = match frame::parse_at(&data, at, &keys, chain) {
                Ok(next) => {
                    if let Some(parsed) = next.parsed {
                        let location = Location {
                            file: seq,
                            offset: parsed.payload_offset,
                            len: parsed.payload_len,
                        };
                        replay.records.push((parsed.record, location));
                    }
                    (at, chain) = (next.next, next.chain);
                    continue;
                }
                Err(err) => err,
            };
            let synced = !newest || later_batch_started(&data, &keys, at, &err);
            match err {
                FrameError::BadPayload {
                    segment,
                    fence,
                    next,
                    chain: after,
                    ..
                } if synced => {
                    tracing::error!(file = %path.display(), offset = at, %segment,
                        "journal: damaged record; the segment is damaged on this node");
                    replay.damage.push(Damage {
                        file: seq,
                        offset: at as u64,
                        kind: DamageKind::Segment { segment, fence },
                    });
                    (at, chain) = (next, after);
                }
                _ if !synced => {
                    tracing::warn!(file = %path.display(), offset = at,
                        cut = data.len() - at, "journal: cutting a torn tail");
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_err(&path, "open to cut torn tail"))?;
                    file.set_len(at as u64)
                        .and_then(|()| file.sync_all())
                        .map_err(io_err(&path, "cut torn tail"))?;
                    replay.damage.push(Damage {
                        file: seq,
                        offset: at as u64,
                        kind: DamageKind::TornTail,
                    });
                    break;
                }
                _ => {
                    unlocatable(&mut replay, &path, seq, at);
                    break;
                }
            }
        }
        if newest {
            // The writer is about to start a newer file, which makes this
            // one an older file, where a torn tail reads as damage. What
            // replay accepted here may be only in the page cache (the
            // opener written after the last sync, a batch written before
            // a kill -9), so it is made durable first: a power loss after
            // this start cannot tear what this replay read.
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|file| file.sync_all())
                .map_err(io_err(&path, "sync the newest file"))?;
        }
    }
    Ok(replay)
}

/// What the operator of a node refused for a journal file can do.
const REFUSED: &str = "move the file out of the journal directory if it does not belong there, \
    or start a build that reads it, or wipe the journal directory and start the node with \
    --reinit-cache (its copies are then lost)";

/// Whether a batch after the one holding the damaged frame at `at` was
/// started, proving that one was synced: a frame of a later batch reached
/// by following the chain past a damaged payload, or (version 4 and later) a batch
/// start found by its marker anywhere after the damage.
fn later_batch_started(data: &Bytes, keys: &FileKeys, at: usize, err: &FrameError) -> bool {
    let (from, following) = match *err {
        FrameError::BadPayload {
            batch, next, chain, ..
        } => (next, Some((batch, chain))),
        FrameError::BadHeader | FrameError::Truncated => (at + 1, None),
    };
    if keys.has_markers() {
        return frame::find_batch_start(data, from, keys).is_some();
    }
    following.is_some_and(|(batch, chain)| later_batch_follows(data, keys, from, chain, batch))
}

/// Whether a frame of a batch after `batch` verifies at or after `at`
/// (following the chain from seed `chain`): proof that `batch` was synced.
fn later_batch_follows(
    data: &Bytes,
    keys: &FileKeys,
    mut at: usize,
    mut chain: u32,
    batch: u64,
) -> bool {
    while at < data.len() {
        let (found, next, after) = match frame::parse_at(data, at, keys, chain) {
            Ok(ok) => (ok.batch, ok.next, ok.chain),
            Err(FrameError::BadPayload {
                batch, next, chain, ..
            }) => (batch, next, chain),
            Err(_) => return false,
        };
        if found > batch {
            return true;
        }
        (at, chain) = (next, after);
    }
    false
}

fn unlocatable(replay: &mut Replay, path: &Path, seq: u64, at: usize) {
    tracing::error!(file = %path.display(), offset = at,
        "journal: a damaged header where no torn write can be; the records after it cannot \
         be located, so any segment may have lost records on this node");
    replay.damage.push(Damage {
        file: seq,
        offset: at as u64,
        kind: DamageKind::Unlocatable,
    });
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::journal::frame::{Encoder, FRAME_HEADER_LEN, FileHeader};

    const S: SegmentKey = SegmentKey {
        log_id: 1,
        segment_id: 1,
    };
    const T: SegmentKey = SegmentKey {
        log_id: 2,
        segment_id: 1,
    };

    fn fence(segment: SegmentKey, epoch: u64) -> Record {
        Record::Fence { segment, epoch }
    }

    /// A frame to write: its batch, its record, whether its payload or its
    /// header is damaged.
    #[derive(Clone)]
    struct Frame {
        batch: u64,
        record: Record,
        damage: Option<Part>,
    }

    #[derive(Clone, Copy)]
    enum Part {
        Payload,
        Header,
    }

    fn frame(batch: u64, record: Record, damage: Option<Part>) -> Frame {
        Frame {
            batch,
            record,
            damage,
        }
    }

    /// Writes file `seq` of format `version`; returns where each frame
    /// starts (its batch's marker, for a batch's first frame).
    fn write_file(dir: &Path, seq: u64, version: u32, frames: &[Frame]) -> Vec<usize> {
        let header = FileHeader {
            version,
            ..FileHeader::new(seq)
        };
        let (header, keys) = header.encode();
        let mut buf = BytesMut::from(&header[..]);
        let mut encoder = Encoder::new(keys);
        let mut starts = Vec::new();
        let mut batch = None;
        for frame in frames {
            starts.push(buf.len());
            if batch != Some(frame.batch) {
                encoder.start_batch(buf.len() as u64, &mut buf);
                batch = Some(frame.batch);
            }
            let payload = encoder.encode(&frame.record, frame.batch, &mut buf);
            match frame.damage {
                Some(Part::Payload) => buf[payload] ^= 0x04,
                Some(Part::Header) => buf[payload - FRAME_HEADER_LEN + 2] ^= 0x04,
                None => {}
            }
        }
        fs::write(dir.join(file_name(seq)), &buf).unwrap();
        starts
    }

    /// Batch 0: S fence 1. Batch 1: S fence 2, payload damaged. Batch 2:
    /// T fence 1. Batch 3 (in flight at the crash): T fence 2 damaged, then
    /// T fence 3 intact.
    fn frames() -> Vec<Frame> {
        vec![
            frame(0, fence(S, 1), None),
            frame(1, fence(S, 2), Some(Part::Payload)),
            frame(2, fence(T, 1), None),
            frame(3, fence(T, 2), Some(Part::Payload)),
            frame(3, fence(T, 3), None),
        ]
    }

    fn records(replay: &Replay) -> Vec<Record> {
        replay.records.iter().map(|(r, _)| r.clone()).collect()
    }

    fn file_len(dir: &Path, seq: u64) -> u64 {
        fs::metadata(dir.join(file_name(seq))).unwrap().len()
    }

    #[test]
    fn damage_before_a_later_batch_is_kept_and_the_last_batch_is_cut() {
        for version in [frame::VERSION, frame::VERSION_3] {
            let dir = tempfile::tempdir().unwrap();
            let starts = write_file(dir.path(), 1, version, &frames());
            let replay = super::replay(dir.path()).unwrap();
            assert_eq!(records(&replay), vec![fence(S, 1), fence(T, 1)]);
            let kinds: Vec<_> = replay.damage.iter().map(|d| (d.kind, d.offset)).collect();
            assert_eq!(
                kinds,
                vec![
                    (
                        DamageKind::Segment {
                            segment: S,
                            fence: true
                        },
                        starts[1] as u64
                    ),
                    (DamageKind::TornTail, starts[3] as u64),
                ],
                "version {version}: synced damage marks S; the torn last batch is cut at its damage"
            );
            assert_eq!(
                file_len(dir.path(), 1),
                starts[3] as u64,
                "version {version}: the torn batch is cut off the file"
            );
        }
    }

    #[test]
    fn in_an_older_file_every_batch_was_synced() {
        for version in [frame::VERSION, frame::VERSION_3] {
            let dir = tempfile::tempdir().unwrap();
            write_file(dir.path(), 1, version, &frames());
            write_file(dir.path(), 2, frame::VERSION, &[]);
            let replay = super::replay(dir.path()).unwrap();
            assert_eq!(replay.records.len(), 3, "{:?}", replay.records);
            let damaged: Vec<_> = replay.damage.iter().map(|d| d.kind).collect();
            assert_eq!(
                damaged,
                vec![
                    DamageKind::Segment {
                        segment: S,
                        fence: true
                    },
                    DamageKind::Segment {
                        segment: T,
                        fence: true
                    },
                ]
            );
        }
    }

    /// Batch 0: S fence 1. Batch 1: S fence 2 with a damaged header, then
    /// T fence 1. Batch 2: T fence 2.
    fn damaged_header_mid_file() -> Vec<Frame> {
        vec![
            frame(0, fence(S, 1), None),
            frame(1, fence(S, 2), Some(Part::Header)),
            frame(1, fence(T, 1), None),
            frame(2, fence(T, 2), None),
        ]
    }

    #[test]
    fn a_damaged_header_before_a_later_batch_of_the_newest_file_is_unlocatable() {
        let dir = tempfile::tempdir().unwrap();
        let starts = write_file(dir.path(), 1, frame::VERSION, &damaged_header_mid_file());
        let len = file_len(dir.path(), 1);
        let replay = super::replay(dir.path()).unwrap();
        assert_eq!(records(&replay), vec![fence(S, 1)]);
        let kinds: Vec<_> = replay.damage.iter().map(|d| (d.kind, d.offset)).collect();
        assert_eq!(
            kinds,
            vec![(DamageKind::Unlocatable, starts[1] as u64)],
            "batch 2 was started, so batch 1 was synced: real damage"
        );
        assert_eq!(file_len(dir.path(), 1), len, "nothing is cut");
    }

    #[test]
    fn a_damaged_header_in_the_last_batch_of_the_newest_file_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut frames = damaged_header_mid_file();
        frames.pop();
        let starts = write_file(dir.path(), 1, frame::VERSION, &frames);
        let replay = super::replay(dir.path()).unwrap();
        assert_eq!(records(&replay), vec![fence(S, 1)]);
        let kinds: Vec<_> = replay.damage.iter().map(|d| (d.kind, d.offset)).collect();
        assert_eq!(kinds, vec![(DamageKind::TornTail, starts[1] as u64)]);
        assert_eq!(file_len(dir.path(), 1), starts[1] as u64);
    }

    /// Version 3 (written before an upgrade) has no markers: a damaged
    /// header in its newest file cannot be told from a torn write and is
    /// cut, as that format always was; in an older file it is unlocatable.
    #[test]
    fn version_3_files_replay_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let starts = write_file(dir.path(), 1, frame::VERSION_3, &damaged_header_mid_file());
        let replay = super::replay(dir.path()).unwrap();
        assert_eq!(records(&replay), vec![fence(S, 1)]);
        let kinds: Vec<_> = replay.damage.iter().map(|d| (d.kind, d.offset)).collect();
        assert_eq!(kinds, vec![(DamageKind::TornTail, starts[1] as u64)]);

        let dir = tempfile::tempdir().unwrap();
        let starts = write_file(dir.path(), 1, frame::VERSION_3, &damaged_header_mid_file());
        write_file(
            dir.path(),
            2,
            frame::VERSION,
            &[frame(0, fence(T, 3), None)],
        );
        let replay = super::replay(dir.path()).unwrap();
        assert_eq!(records(&replay), vec![fence(S, 1), fence(T, 3)]);
        let kinds: Vec<_> = replay.damage.iter().map(|d| (d.kind, d.offset)).collect();
        assert_eq!(kinds, vec![(DamageKind::Unlocatable, starts[1] as u64)]);
    }
}

//! Replay: reading every journal file back at open.
//!
//! Replay follows the frame chain (see [`super::frame`]) and never searches
//! for a frame, so bytes inside a payload are never taken for a record. What
//! it does with damage depends on where the damage is:
//!
//! | damage | in the newest file | in an older file |
//! |---|---|---|
//! | the file header, file no longer than a header | torn creation: the file (it holds no record) is deleted | — (an older file always has records after its header) |
//! | the file header, file longer | [`DamageKind::Unlocatable`] | [`DamageKind::Unlocatable`] |
//! | a frame whose header verifies, payload does not, and a verified frame of a later batch follows | [`DamageKind::Segment`]: that segment is damaged on this node, replay goes on | same, later batch or not |
//! | the same with no verified frame of a later batch after it | torn tail: cut off there | (see above) |
//! | any other bad or truncated frame | torn tail: cut off there | [`DamageKind::Unlocatable`] |
//!
//! Only the newest file can have a torn tail: the writer starts a new file
//! at every open, and rolls only after a batch's `fdatasync` returned. And
//! only its last batch can be torn: the writer starts a batch only after the
//! previous one's `fdatasync` returned, so damage followed by a verified
//! frame of a later batch is in a batch that was synced (and acknowledged):
//! real damage. Damage with no later batch after it is in the batch in
//! flight at the crash, never acknowledged, whose pages may reach the disk
//! in any order: it is cut off there with everything after it.

use std::fs::{self, OpenOptions};
use std::path::Path;

use bytes::Bytes;

use super::frame::{self, FILE_HEADER_LEN, FrameError, HeaderError};
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
        let mut chain = match frame::parse_file_header(&data, seq) {
            Ok(seed) => seed,
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
                return Err(format_error(
                    "not a journal file of any format this build knows".into(),
                ));
            }
            Err(HeaderError::Version(version)) => {
                return Err(format_error(format!(
                    "journal format version {version}; this build reads version {} only",
                    frame::VERSION
                )));
            }
            Err(HeaderError::WrongSeq(found)) => {
                return Err(format_error(format!(
                    "its header says it is journal file {found}"
                )));
            }
        };
        replay.files.push(seq);
        let mut at = FILE_HEADER_LEN;
        while at < data.len() {
            match frame::parse_at(&data, at, chain) {
                Ok(next) => {
                    let location = Location {
                        file: seq,
                        offset: next.parsed.payload_offset,
                        len: next.parsed.payload_len,
                    };
                    replay.records.push((next.parsed.record, location));
                    (at, chain) = (next.next, next.chain);
                }
                Err(FrameError::BadPayload {
                    segment,
                    batch,
                    fence,
                    next,
                    chain: after,
                }) if !newest || later_batch_follows(&data, next, after, batch) => {
                    tracing::error!(file = %path.display(), offset = at, %segment,
                        "journal: damaged record; the segment is damaged on this node");
                    replay.damage.push(Damage {
                        file: seq,
                        offset: at as u64,
                        kind: DamageKind::Segment { segment, fence },
                    });
                    (at, chain) = (next, after);
                }
                Err(_) if newest => {
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
                Err(_) => {
                    unlocatable(&mut replay, &path, seq, at);
                    break;
                }
            }
        }
    }
    Ok(replay)
}

/// Whether a frame of a batch after `batch` verifies at or after `at`
/// (following the chain from seed `chain`): proof that `batch` was synced.
fn later_batch_follows(data: &Bytes, mut at: usize, mut chain: u32, batch: u64) -> bool {
    while at < data.len() {
        let (found, next, after) = match frame::parse_at(data, at, chain) {
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
        "journal: damaged header in a file no longer written; the records after it cannot \
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
    use crate::journal::frame::{Encoder, FileHeader};

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

    /// Writes file `seq` of `(batch, record, damaged payload)` frames;
    /// returns where each frame starts.
    fn write_file(dir: &Path, seq: u64, frames: &[(u64, Record, bool)]) -> Vec<usize> {
        let (header, seed) = FileHeader::new(seq).encode();
        let mut buf = BytesMut::from(&header[..]);
        let mut encoder = Encoder::new(seed);
        let mut starts = Vec::new();
        for (batch, record, damaged) in frames {
            starts.push(buf.len());
            let payload = encoder.encode(record, *batch, &mut buf);
            if *damaged {
                buf[payload] ^= 0x04;
            }
        }
        fs::write(dir.join(file_name(seq)), &buf).unwrap();
        starts
    }

    /// Batch 0: S fence 1. Batch 1: S fence 2, payload damaged. Batch 2:
    /// T fence 1. Batch 3 (in flight at the crash): T fence 2 damaged, then
    /// T fence 3 intact.
    fn frames() -> Vec<(u64, Record, bool)> {
        vec![
            (0, fence(S, 1), false),
            (1, fence(S, 2), true),
            (2, fence(T, 1), false),
            (3, fence(T, 2), true),
            (3, fence(T, 3), false),
        ]
    }

    #[test]
    fn damage_before_a_later_batch_is_kept_and_the_last_batch_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let starts = write_file(dir.path(), 1, &frames());
        let replay = replay(dir.path()).unwrap();
        let records: Vec<_> = replay.records.iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(records, vec![fence(S, 1), fence(T, 1)]);
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
            "synced damage marks S; the torn last batch is cut at its damage"
        );
        let len = fs::metadata(dir.path().join(file_name(1))).unwrap().len();
        assert_eq!(len, starts[3] as u64, "the torn batch is cut off the file");
    }

    #[test]
    fn in_an_older_file_every_batch_was_synced() {
        let dir = tempfile::tempdir().unwrap();
        write_file(dir.path(), 1, &frames());
        write_file(dir.path(), 2, &[]);
        let replay = replay(dir.path()).unwrap();
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

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
//! | a frame whose header verifies, payload does not, with a good frame after it | [`DamageKind::Segment`]: that segment is damaged on this node, replay goes on | same |
//! | any other bad or truncated frame | torn tail: cut off there | [`DamageKind::Unlocatable`] |
//!
//! Only the newest file can have a torn tail: the writer starts a new file
//! at every open, and rolls only after a batch's `fdatasync` returned. Cutting
//! at the first bad frame of the newest file is therefore cutting a write
//! that was never acknowledged (the batch in flight at the crash, whose
//! pages may reach the disk in any order: everything after its first bad
//! frame goes too).

use std::fs::{self, OpenOptions};
use std::path::Path;

use bytes::Bytes;

use super::frame::{self, FILE_HEADER_LEN, FrameError, HeaderError};
use super::{Location, Record, file_name, io_err, list_files};
use crate::error::{Error, Result, SegmentKey};

/// What kind of damage replay found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// A torn write at the end of the newest file, cut off: it was never
    /// acknowledged.
    TornTail,
    /// A frame of this segment whose payload fails its checksum; the frames
    /// after it were located and kept. The segment is damaged on this node.
    Segment(SegmentKey),
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
                    next,
                    chain: after,
                }) if !newest || frame::parse_at(&data, next, after).is_ok() => {
                    tracing::error!(file = %path.display(), offset = at, %segment,
                        "journal: damaged record; the segment is damaged on this node");
                    replay.damage.push(Damage {
                        file: seq,
                        offset: at as u64,
                        kind: DamageKind::Segment(segment),
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

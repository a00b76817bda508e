//! The lazy disk: the cache journal's [`FileLayer`] over real files in a
//! temporary directory, which remembers what was made durable. A crash
//! ([`Disk::crash`]) then does what power loss may do: every byte written
//! after the file's last `fdatasync` is lost, except maybe a torn prefix of
//! it; a file whose name was never made durable (`fsync` of the directory)
//! is gone. Writes through a layer of an earlier life of the node fail, so
//! a crashed node's leftover tasks cannot touch the disk. [`Disk::flip_bit`]
//! damages a journal file of a stopped node.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dlog_cache::journal::{FileLayer, JournalFile};

use crate::rng::Rng;

/// What the disk knows about one file written in this life of the node.
#[derive(Debug, Default)]
struct Track {
    len: u64,
    synced: u64,
    named: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Life of the node: bumped by each crash.
    life: u64,
    files: BTreeMap<PathBuf, Track>,
    /// Syncs fail from now on (EIO) until the next crash.
    failing: bool,
}

/// One cache node's disk.
#[derive(Debug, Default)]
pub struct Disk {
    state: Mutex<State>,
}

fn stale() -> io::Error {
    io::Error::other("simulated crash: this life of the node is over")
}

impl Disk {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A file layer for the node's current life.
    pub fn layer(self: &Arc<Disk>) -> SimFiles {
        SimFiles {
            disk: self.clone(),
            life: self.lock().life,
        }
    }

    /// Makes the next syncs fail (an I/O error of the device).
    pub fn fail_syncs(&self) {
        self.lock().failing = true;
    }

    /// A crash of the node. `power_loss`: drops what was not durable, keeps
    /// a torn prefix of the unsynced tail of a file when `rng` says so.
    /// Otherwise a kill -9 of the process: the kernel keeps every byte
    /// written, synced or not, and they count as durable from then on, as
    /// the node's next start makes them (journal replay syncs the newest
    /// file before starting a new one; the nemesis restarts a killed node
    /// before it can lose power). Returns what it did.
    pub fn crash(&self, rng: &Rng, power_loss: bool) -> Vec<String> {
        let mut state = self.lock();
        state.life += 1;
        state.failing = false;
        let files = std::mem::take(&mut state.files);
        if !power_loss {
            return vec!["killed: every written byte kept".into()];
        }
        let mut done = Vec::new();
        for (path, track) in files {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            if !track.named {
                let _ = std::fs::remove_file(&path);
                done.push(format!("lost unnamed {name}"));
                continue;
            }
            if track.len > track.synced {
                let unsynced = track.len - track.synced;
                let keep = if rng.chance(0.5) {
                    rng.below(unsynced + 1)
                } else {
                    0
                };
                if let Ok(file) = OpenOptions::new().write(true).open(&path) {
                    let _ = file.set_len(track.synced + keep);
                }
                done.push(format!(
                    "{name}: lost {} of {unsynced} unsynced bytes",
                    unsynced - keep
                ));
            }
        }
        done
    }

    /// Flips one bit past the file header of one journal file in `dir`:
    /// not in the newest file unless `newest`. After a power loss, damage
    /// in the newest file's last synced batch looks exactly like a torn
    /// write (its next batch's opener was lost with the unsynced bytes) and
    /// is cut like one, a documented limit of the journal; after a kill -9
    /// the opener is there and such damage is found.
    pub fn flip_bit(&self, dir: &Path, rng: &Rng, newest: bool) -> Option<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        files.sort();
        if !newest {
            files.pop();
        }
        let path = files.get(rng.below(files.len() as u64) as usize)?.clone();
        let mut bytes = std::fs::read(&path).ok()?;
        let header = dlog_cache::journal::frame::FILE_HEADER_LEN;
        if bytes.len() <= header {
            return None;
        }
        let at = header + rng.below((bytes.len() - header) as u64) as usize;
        let bit = rng.below(8) as u8;
        bytes[at] ^= 1 << bit;
        std::fs::write(&path, &bytes).ok()?;
        let name = path.file_name()?.to_string_lossy().into_owned();
        Some(format!("flipped bit {bit} of byte {at} of {name}"))
    }
}

/// The journal's file layer for one life of a node.
#[derive(Debug)]
pub struct SimFiles {
    disk: Arc<Disk>,
    life: u64,
}

impl SimFiles {
    fn check(&self) -> io::Result<std::sync::MutexGuard<'_, State>> {
        let state = self.disk.lock();
        if state.life != self.life {
            return Err(stale());
        }
        Ok(state)
    }
}

impl FileLayer for SimFiles {
    type File = SimFile;

    fn create(&mut self, path: &Path) -> io::Result<SimFile> {
        let mut state = self.check()?;
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        state.files.insert(path.to_path_buf(), Track::default());
        Ok(SimFile {
            file,
            path: path.to_path_buf(),
            disk: self.disk.clone(),
            life: self.life,
        })
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        let mut state = self.check()?;
        for (path, track) in &mut state.files {
            if path.parent() == Some(dir) {
                track.named = true;
            }
        }
        Ok(())
    }
}

/// A journal file on the lazy disk.
#[derive(Debug)]
pub struct SimFile {
    file: File,
    path: PathBuf,
    disk: Arc<Disk>,
    life: u64,
}

impl SimFile {
    fn with_track<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.disk.lock();
        if state.life != self.life {
            return Err(stale());
        }
        f(&mut state)
    }
}

impl JournalFile for SimFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let path = self.path.clone();
        let file = &mut self.file;
        let mut state = self.disk.lock();
        if state.life != self.life {
            return Err(stale());
        }
        Write::write_all(file, bytes)?;
        state.files.entry(path).or_default().len += bytes.len() as u64;
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.with_track(|state| {
            if state.failing {
                return Err(io::Error::other("simulated EIO on fdatasync"));
            }
            let track = state.files.entry(self.path.clone()).or_default();
            track.synced = track.len;
            Ok(())
        })
    }
}

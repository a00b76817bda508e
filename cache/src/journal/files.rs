//! The journal's file operations, behind a small trait so a test can record
//! the real order of writes, syncs and acknowledgements (a kill -9 test
//! cannot see a missing sync: the page cache survives the process).
//!
//! Production uses [`OsFiles`]; the writer is generic over the layer, so
//! the real path is monomorphised and costs nothing extra.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// An open journal file, appended to by the writer thread only.
pub trait JournalFile: Send + 'static {
    /// Appends all of `bytes`.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
}

/// Creates journal files and makes their names durable.
pub trait FileLayer: Send + 'static {
    type File: JournalFile;
    /// Creates `path` for appending; it must not exist.
    fn create(&mut self, path: &Path) -> io::Result<Self::File>;
    /// Makes the directory's entries durable (`fsync` of the directory).
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFiles;

impl JournalFile for File {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        Write::write_all(self, bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
}

impl FileLayer for OsFiles {
    type File = File;

    fn create(&mut self, path: &Path) -> io::Result<File> {
        OpenOptions::new().create_new(true).append(true).open(path)
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        File::open(dir).and_then(|d| d.sync_all())
    }
}

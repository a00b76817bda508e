//! The sweep of objects no live log owns: folders `ns=<ns>/log=<log>/id=<id>`
//! whose log id is not the live id of the log of that name.
//!
//! A purge deletes a deleted log's folder before it removes the log's keys,
//! but a compactor paused past its lease (or killed mid-upload) can still
//! finish an upload into that folder afterwards. Nothing records such an
//! object and nothing reads it; without the sweep it stays forever. Log ids
//! are never reused, so once the manifest names another id for the log (or
//! no log at all), a folder's objects can never be needed again.
//!
//! The folders are listed before the manifest is read: an object listed
//! under an id that is not live at the read that follows is dead, because a
//! log's objects are uploaded only while its id is live (a log created
//! after the listing has no folder in it).
//!
//! Crash points: deleting is idempotent; a sweep that stops half-way leaves
//! the rest for the next one.

use dlog_meta::manifest::{self, Manifest};
use dlog_storage::objstore::ObjectStoreHandle;
use dlog_wire::names::LogName;
use object_store::ObjectStore;
use object_store::path::Path;

use crate::error::{Error, Result};

/// One folder of the object store: `ns=<ns>/log=<log>/id=<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFolder {
    pub log: LogName,
    pub log_id: u64,
}

/// The immediate sub-folders of `folder` whose name starts with `key=`,
/// with the rest of the name.
async fn sub_folders(
    objects: &ObjectStoreHandle,
    folder: &Path,
    key: &str,
) -> Result<Vec<(Path, String)>> {
    let listed = objects
        .store
        .list_with_delimiter(Some(folder))
        .await
        .map_err(Error::object_store("list", folder))?;
    let prefix = format!("{key}=");
    Ok(listed
        .common_prefixes
        .into_iter()
        .filter_map(|path| {
            let name = path.filename()?.strip_prefix(&prefix)?.to_owned();
            Some((path, name))
        })
        .collect())
}

/// Every log-id folder under the store's prefix.
pub async fn log_folders(objects: &ObjectStoreHandle) -> Result<Vec<LogFolder>> {
    let mut folders = Vec::new();
    for (ns_path, ns) in sub_folders(objects, &objects.prefix, "ns").await? {
        for (log_path, name) in sub_folders(objects, &ns_path, "log").await? {
            let Ok(log) = format!("{ns}/{name}").parse::<LogName>() else {
                continue; // not a folder this service wrote
            };
            for (_, id) in sub_folders(objects, &log_path, "id").await? {
                if let Ok(log_id) = id.parse() {
                    folders.push(LogFolder {
                        log: log.clone(),
                        log_id,
                    });
                }
            }
        }
    }
    Ok(folders)
}

/// The folders of `listed` (listed before this call) whose log id is not
/// the live id of their log now.
pub async fn dead_folders(manifest: &Manifest, listed: Vec<LogFolder>) -> Result<Vec<LogFolder>> {
    let mut dead = Vec::new();
    for folder in listed {
        let live = match manifest.log(&folder.log).await {
            Ok(meta) => meta.log_id == folder.log_id,
            Err(manifest::Error::LogNotFound(_)) => false,
            Err(err) => return Err(err.into()),
        };
        if !live {
            dead.push(folder);
        }
    }
    Ok(dead)
}

//! The identity of a cache node's data directory (its "cookie", as
//! BookKeeper calls it), the lock that keeps a second process out of the
//! directory, and the trust rule of a node whose data was re-initialised.
//!
//! A cache node answers fences and recovery reads for the segments it was
//! given; those answers count only if the node still holds what it was
//! given. A node that comes back under its id with an empty or replaced
//! disk, or a second process started with the same `--node-id`, would
//! answer "I hold nothing" for entries that were acknowledged on it. So:
//!
//! * At first start the directory gets a cookie: node id, a random
//!   instance id, creation time, and the manifest revision it starts at.
//!   It is written to `COOKIE` (temp file, fsync, rename, directory fsync)
//!   and then registered in the manifest at `cookie/cache/<node id>`,
//!   created once.
//! * At every start the directory's cookie must equal the registered one.
//!   A directory without a cookie for an id that has one registered (wiped
//!   or replaced disk, another process with this id), or with another
//!   instance's cookie, is refused, unless the operator re-initialises it
//!   (`--reinit-cache`, only on an empty journal directory).
//! * A directory without a cookie for an id with none registered is a first
//!   start, or a directory from before cookies existed (it keeps what it
//!   holds). An empty one for an id that some segment in the manifest names
//!   lost them (wiped during the upgrade): it serves from the manifest
//!   revision it starts at (next point), as it does if that cannot be read.
//! * A re-initialised node starts at a manifest revision: for segments
//!   created before it, it may have lost entries, so it never answers their
//!   fences or recovery reads ([`crate::trust`]: `DATA_LOSS`, an unknown
//!   answer, never a definite "not held"), whatever it holds of them.
//! * `LOCK` is held with `flock` for the life of the process (the store
//!   also locks `journal.lock` while it is open, see [`crate::store`]).
//!
//! Crash points of the first start / re-initialisation:
//! * before the `COOKIE` rename: no cookie; the next start begins again
//!   (a re-initialisation needs the flag again).
//! * after it, before the manifest write: the directory has a cookie the
//!   manifest lacks (first start: registered on the next start) or one that
//!   differs from the registered one (re-initialisation: refused until the
//!   operator re-initialises again).

use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use dlog_meta::manifest::Manifest;
use dlog_meta::metastore::{Compare, Txn, TxnOp};
use serde::{Deserialize, Serialize};

const COOKIE_FILE: &str = "COOKIE";
/// `serves_from_revision` of a re-initialisation that has not taken its
/// revision yet: it answers for no segment.
pub const PENDING: i64 = i64::MAX;
const LOCK_FILE: &str = "LOCK";
/// The cache store's own lock of its journal (see [`crate::store`]).
pub const JOURNAL_LOCK_FILE: &str = "journal.lock";

/// The identity of one incarnation of a cache node's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cookie {
    pub node_id: String,
    /// Random, new at every first start and re-initialisation.
    pub instance_id: String,
    pub created_at_ms: i64,
    /// Set by a re-initialisation: the manifest revision this data starts
    /// at. Segments created at or before it may have had entries on this
    /// node id that this instance never held. 0 at a first start: nothing
    /// was placed on the id before.
    pub serves_from_revision: i64,
}

/// Why a node may not serve from its directory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cache directory {dir}: {what}")]
    Io {
        dir: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cache directory {dir} is locked by another process (is another cache node running on it?)"
    )]
    Locked { dir: String },
    #[error("cache directory {dir} does not match node {node_id}: {reason}")]
    Mismatch {
        dir: String,
        node_id: String,
        reason: String,
    },
    #[error("cache directory {dir}: {reason}")]
    Refused { dir: String, reason: String },
    #[error("cache identity in the manifest")]
    Manifest(#[from] dlog_meta::manifest::Error),
    #[error("cache identity in the manifest")]
    Store(#[from] dlog_meta::metastore::Error),
    #[error("cookie {what} is unreadable: {reason}")]
    Corrupt { what: String, reason: String },
}

/// A directory this process owns: its lock and its cookie.
#[derive(Debug)]
pub struct Identity {
    pub cookie: Cookie,
    /// True when this start re-initialised the directory.
    pub reinitialised: bool,
    _lock: File,
}

fn io(dir: &Path, what: &str) -> impl FnOnce(std::io::Error) -> Error {
    let dir = dir.display().to_string();
    let what = what.to_owned();
    move |source| Error::Io { dir, what, source }
}

/// Takes the directory's lock (created if needed); held while the file is.
pub fn lock_dir(dir: &Path) -> Result<File, Error> {
    lock_file(dir, LOCK_FILE)
}

/// Takes an exclusive `flock` on `dir/name` (created if needed), held while
/// the file is open. The node's `LOCK` and the journal's `journal.lock` are
/// separate files, so a process holding one can still take the other.
pub fn lock_file(dir: &Path, name: &str) -> Result<File, Error> {
    fs::create_dir_all(dir).map_err(io(dir, "create"))?;
    let path = dir.join(name);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(dir, "open the lock file"))?;
    file.try_lock().map_err(|_| Error::Locked {
        dir: dir.display().to_string(),
    })?;
    Ok(file)
}

fn read_local(dir: &Path) -> Result<Option<Cookie>, Error> {
    let path = dir.join(COOKIE_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| Error::Corrupt {
                what: path.display().to_string(),
                reason: err.to_string(),
            }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io(dir, "read the cookie")(err)),
    }
}

/// Temp file, fsync, rename over `COOKIE`, fsync of the directory.
fn write_local(dir: &Path, cookie: &Cookie) -> Result<(), Error> {
    let temp = dir.join(format!("{COOKIE_FILE}.tmp"));
    let mut file = File::create(&temp).map_err(io(dir, "create the cookie"))?;
    file.write_all(&serde_json::to_vec(cookie).expect("cookies serialize"))
        .and_then(|()| file.sync_all())
        .map_err(io(dir, "write the cookie"))?;
    fs::rename(&temp, dir.join(COOKIE_FILE)).map_err(io(dir, "rename the cookie"))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "fsync the directory"))
}

/// Whether the directory holds anything but the locks and the cookie.
fn has_data(dir: &Path) -> Result<bool, Error> {
    for entry in fs::read_dir(dir).map_err(io(dir, "list"))? {
        let name = entry.map_err(io(dir, "list"))?.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with(COOKIE_FILE) && name != LOCK_FILE && name != JOURNAL_LOCK_FILE {
            return Ok(true);
        }
    }
    Ok(false)
}

fn cookie_key(manifest: &Manifest, node_id: &str) -> String {
    format!("{}cookie/cache/{node_id}", manifest.root())
}

/// A random instance id (128 bits from the process's random hash keys,
/// the clock and the pid).
fn random_instance_id() -> String {
    let mut words = [0u64; 2];
    for (i, word) in words.iter_mut().enumerate() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.write_u32(std::process::id());
        hasher.write_usize(i);
        *word = hasher.finish();
    }
    format!("{:016x}{:016x}", words[0], words[1])
}

/// Locks `dir` and checks (or creates) its identity for `node_id` against
/// the manifest. `reinit`: the operator asks to start this id afresh on
/// an empty directory; that takes `reinit_wait` (at least
/// [`crate::confirm::REINIT_WAIT`] in a cluster) between replacing the
/// registration and taking the revision to serve from.
pub async fn establish(
    manifest: &Manifest,
    dir: &Path,
    node_id: &str,
    reinit: bool,
    reinit_wait: Duration,
) -> Result<Identity, Error> {
    let lock = lock_dir(dir)?;
    let shown = dir.display().to_string();
    let local = read_local(dir)?;
    let key = cookie_key(manifest, node_id);
    let registered_kv = manifest.store().get(&key).await?;
    let registered: Option<Cookie> = match &registered_kv {
        Some(kv) => Some(
            serde_json::from_slice(&kv.value).map_err(|err| Error::Corrupt {
                what: key.clone(),
                reason: err.to_string(),
            })?,
        ),
        None => None,
    };
    let mismatch = |reason: String| Error::Mismatch {
        dir: shown.clone(),
        node_id: node_id.to_owned(),
        reason,
    };
    if let Some(local) = &local
        && local.node_id != node_id
    {
        return Err(mismatch(format!(
            "it belongs to node {}; start it with that --node-id",
            local.node_id
        )));
    }
    let identity = |cookie: Cookie, reinitialised: bool| Identity {
        cookie,
        reinitialised,
        _lock: lock,
    };
    match (local, registered) {
        (Some(local), Some(registered))
            if local == registered && local.serves_from_revision == PENDING =>
        {
            // A re-initialisation that stopped before it took its revision.
            let cookie = finish_reinit(manifest, dir, &key, local, reinit_wait).await?;
            Ok(identity(cookie, true))
        }
        (Some(local), Some(registered))
            if local.instance_id == registered.instance_id
                && registered.serves_from_revision == PENDING =>
        {
            // A re-initialisation that stopped between writing its final
            // cookie (revision taken after the wait) and registering it.
            let revision = registered_kv.as_ref().map_or(0, |kv| kv.mod_revision);
            register(manifest, &key, &local, Some(revision)).await?;
            Ok(identity(local, true))
        }
        (Some(local), Some(registered)) if local == registered && !reinit => {
            Ok(identity(local, false))
        }
        (Some(local), None) if !reinit => {
            register(manifest, &key, &local, None).await?;
            Ok(identity(local, false))
        }
        (None, None) if !reinit => {
            // A first start, or a directory from before cookies existed,
            // which keeps what it holds and answers for every segment. An
            // empty one of an id the manifest placed segments on lost them
            // (a disk wiped during the upgrade): it serves from the
            // revision now, as a re-initialised node does. So does one
            // whose placements could not be read (a new id holds nothing
            // older anyway).
            let wiped = !has_data(dir)? && placed_on(manifest, node_id).await.unwrap_or(true);
            let cookie = new_cookie(manifest, node_id, wiped).await?;
            write_local(dir, &cookie)?;
            register(manifest, &key, &cookie, None).await?;
            tracing::info!(node = node_id, instance = %cookie.instance_id,
                from_revision = cookie.serves_from_revision, "cache directory initialised");
            Ok(identity(cookie, false))
        }
        (_, registered) if reinit => {
            if has_data(dir)? {
                return Err(Error::Refused {
                    dir: shown,
                    reason:
                        "--reinit-cache needs an empty directory (move the old journal away first)"
                            .into(),
                });
            }
            // First replace the registration, so that a process still
            // running with the old cookie stops taking adds, then take the
            // revision to serve from once its last confirmation expired
            // ([`crate::confirm`]).
            let mut cookie = new_cookie(manifest, node_id, false).await?;
            cookie.serves_from_revision = PENDING;
            write_local(dir, &cookie)?;
            let revision = registered_kv.as_ref().map_or(0, |kv| kv.mod_revision);
            register(manifest, &key, &cookie, Some(revision)).await?;
            let cookie = finish_reinit(manifest, dir, &key, cookie, reinit_wait).await?;
            tracing::warn!(
                node = node_id,
                instance = %cookie.instance_id,
                replaced = registered.map(|r| r.instance_id).unwrap_or_default(),
                from_revision = cookie.serves_from_revision,
                "cache directory re-initialised: segments created before it are not answered for"
            );
            Ok(identity(cookie, true))
        }
        (None, Some(registered)) => Err(mismatch(format!(
            "the directory has no identity, but instance {} (created at {} ms) is registered for this id: \
             the disk was wiped or replaced, or another process uses this --node-id; \
             start with --reinit-cache on an empty directory to rejoin without the old data",
            registered.instance_id, registered.created_at_ms
        ))),
        (Some(local), Some(registered)) => Err(mismatch(format!(
            "the directory holds instance {} but instance {} is registered for this id: \
             it is an old copy or another process uses this --node-id; \
             start with --reinit-cache on an empty directory to rejoin without the old data",
            local.instance_id, registered.instance_id
        ))),
        (_, None) => unreachable!("every unregistered case is handled above"),
    }
}

/// Whether some segment in the manifest names `node_id` in its ensemble
/// (one read of every log's keys, in pages on etcd).
async fn placed_on(manifest: &Manifest, node_id: &str) -> Result<bool, Error> {
    #[derive(Deserialize)]
    struct Placed {
        ensemble: Vec<String>,
    }
    let logs = format!("{}log/", manifest.root());
    let range = manifest.store().range(&logs, true).await?;
    Ok(range.kvs.iter().any(|kv| {
        kv.key.contains("/seg/")
            && serde_json::from_slice::<Placed>(&kv.value)
                .is_ok_and(|segment| segment.ensemble.iter().any(|id| id == node_id))
    }))
}

/// Ends a re-initialisation whose cookie (serving from [`PENDING`]) is
/// registered: waits `wait`, so any process still running with the
/// replaced cookie stopped taking adds, then records the revision now as
/// where this instance serves from, locally and in the manifest.
///
/// Crash points: before the local write, the pending cookie stays; the
/// next start finds it and finishes (waiting again). Between the local
/// write and the registration, the local cookie is the final one and the
/// registered one its pending form (same instance): the next start
/// registers the final one (its revision was taken after the wait).
async fn finish_reinit(
    manifest: &Manifest,
    dir: &Path,
    key: &str,
    pending: Cookie,
    wait: Duration,
) -> Result<Cookie, Error> {
    let shown = dir.display().to_string();
    tracing::warn!(node = %pending.node_id, ?wait,
        "cache re-initialisation: waiting until a process still running with the old          identity has stopped taking adds");
    tokio::time::sleep(wait).await;
    let registered = manifest.store().get(key).await?;
    let ours = registered
        .as_ref()
        .is_some_and(|kv| serde_json::from_slice::<Cookie>(&kv.value).is_ok_and(|c| c == pending));
    let Some(registered) = registered.filter(|_| ours) else {
        return Err(Error::Refused {
            dir: shown,
            reason: "another instance registered this node id during the re-initialisation".into(),
        });
    };
    let cookie = Cookie {
        serves_from_revision: new_cookie(manifest, &pending.node_id, true)
            .await?
            .serves_from_revision,
        ..pending
    };
    write_local(dir, &cookie)?;
    register(manifest, key, &cookie, Some(registered.mod_revision)).await?;
    Ok(cookie)
}

async fn new_cookie(manifest: &Manifest, node_id: &str, reinit: bool) -> Result<Cookie, Error> {
    let serves_from_revision = if reinit {
        // The revision now: any segment created later was created while
        // this instance existed.
        manifest
            .store()
            .range(&cookie_key(manifest, ""), true)
            .await?
            .revision
    } else {
        0
    };
    Ok(Cookie {
        node_id: node_id.to_owned(),
        instance_id: random_instance_id(),
        created_at_ms: dlog_wire::now_ms(),
        serves_from_revision,
    })
}

/// Creates the registration (`replacing: None`) or replaces the one last
/// changed at `replacing`; fails if another process got there first.
async fn register(
    manifest: &Manifest,
    key: &str,
    cookie: &Cookie,
    replacing: Option<i64>,
) -> Result<(), Error> {
    let value = Bytes::from(serde_json::to_vec(cookie).expect("cookies serialize"));
    let condition = match replacing {
        None | Some(0) => Compare::absent(key),
        Some(revision) => Compare::mod_revision_is(key, revision),
    };
    let response = manifest
        .store()
        .txn(
            Txn::new()
                .when([condition])
                .and_then([TxnOp::put(key, value)]),
        )
        .await?;
    if !response.succeeded {
        return Err(Error::Refused {
            dir: cookie.node_id.clone(),
            reason: format!(
                "another process registered an identity for node {} at the same time",
                cookie.node_id
            ),
        });
    }
    Ok(())
}

/// What the manifest registers for a node id, compared with a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// This cookie.
    Ours,
    /// Another instance's cookie: this process must stop.
    Replaced,
    /// Nothing (removed by hand).
    Missing,
}

/// What the manifest registers for `cookie`'s node id.
pub async fn registration(manifest: &Manifest, cookie: &Cookie) -> Result<Registration, Error> {
    let key = cookie_key(manifest, &cookie.node_id);
    Ok(match manifest.store().get(&key).await? {
        Some(kv) if serde_json::from_slice::<Cookie>(&kv.value).is_ok_and(|c| c == *cookie) => {
            Registration::Ours
        }
        Some(_) => Registration::Replaced,
        None => Registration::Missing,
    })
}

/// Whether the manifest still registers `cookie` for its node (false when
/// another instance replaced it: this process must stop).
pub async fn still_registered(manifest: &Manifest, cookie: &Cookie) -> Result<bool, Error> {
    Ok(registration(manifest, cookie).await? != Registration::Replaced)
}

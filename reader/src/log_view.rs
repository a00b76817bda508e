//! What the reader knows of a log's manifest: its metadata, segments and
//! trim point, kept current by one manifest watch per log (shared by every
//! reader of the log on this node), never by polling.

use std::sync::Arc;
use std::time::Duration;

use dlog_meta::manifest::{self, LogMeta, LogState, Manifest, SegmentMeta};
use dlog_meta::metastore::Revision;
use dlog_wire::names::LogName;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::shared_watch::SharedWatches;

/// A consistent-enough view of one log: everything changed after
/// `revision` is delivered as a newer view.
#[derive(Debug, Clone)]
pub struct LogView {
    /// `None` once the log was deleted.
    pub meta: Option<LogMeta>,
    /// In segment id (and so offset) order.
    pub segments: Vec<SegmentMeta>,
    pub trim_point: u64,
    pub revision: Revision,
}

impl LogView {
    /// The segment holding `offset`, or the open one starting at it.
    pub fn segment_for(&self, offset: u64) -> Option<&SegmentMeta> {
        self.segments
            .iter()
            .rev()
            .find(|s| s.start_offset <= offset && s.end_offset.is_none_or(|end| offset < end))
    }

    /// One past the last offset of the closed segments.
    pub fn sealed_end(&self) -> u64 {
        self.segments
            .iter()
            .filter_map(|s| s.end_offset)
            .max()
            .unwrap_or(0)
            .max(self.trim_point)
    }

    pub fn open_segment(&self) -> Option<&SegmentMeta> {
        self.segments.iter().find(|s| s.end_offset.is_none())
    }
}

/// The view at one revision (one read), so it never mixes two
/// incarnations of a deleted and re-created log; a deleting log has no
/// `meta`.
pub(crate) async fn load(manifest: &Manifest, log: &LogName) -> manifest::Result<LogView> {
    let snapshot = manifest.log_snapshot(log).await?;
    Ok(LogView {
        meta: snapshot.meta.filter(|meta| meta.state == LogState::Active),
        segments: snapshot.segments,
        trim_point: snapshot.trim_point,
        revision: snapshot.revision,
    })
}

/// Shared, watched views of logs.
#[derive(Debug)]
pub struct LogViews {
    manifest: Manifest,
    watches: SharedWatches<LogName, Arc<LogView>>,
}

impl LogViews {
    pub fn new(manifest: Manifest) -> LogViews {
        LogViews {
            manifest,
            watches: SharedWatches::default(),
        }
    }

    /// The current view of `log`, updated as the manifest changes.
    pub async fn subscribe(
        &self,
        log: &LogName,
    ) -> manifest::Result<watch::Receiver<Arc<LogView>>> {
        let first = Arc::new(load(&self.manifest, log).await?);
        if first.meta.is_none() {
            return Err(manifest::Error::LogNotFound(log.clone()));
        }
        let (manifest, owned_log) = (self.manifest.clone(), log.clone());
        let fresh = first.clone();
        let receiver = self
            .watches
            .subscribe(log.clone(), first.clone(), move |sender| {
                follow(manifest, owned_log, first.revision, sender)
            });
        // A running watch may lag behind the view just loaded (e.g. while
        // it restarts): the newer of the two is what every reader sees.
        if let Some(sender) = self.watches.sender(log) {
            publish_newer(&sender, fresh);
        }
        Ok(receiver)
    }

    /// Logs with a running manifest watch on this node.
    pub fn watched(&self) -> usize {
        self.watches.len()
    }
}

/// Publishes `view` unless the one published is as new or newer: views
/// never go back in revision, whoever loaded them.
fn publish_newer(sender: &watch::Sender<Arc<LogView>>, view: Arc<LogView>) {
    sender.send_if_modified(|current| {
        let newer = view.revision > current.revision;
        if newer {
            *current = view;
        }
        newer
    });
}

/// Keeps `sender` current: reloads the view on every batch of watch events.
async fn follow(
    manifest: Manifest,
    log: LogName,
    mut revision: Revision,
    sender: Arc<watch::Sender<Arc<LogView>>>,
) {
    // Subscription commits change nothing a read plans by. Matched as the
    // key segment right under the log's prefix, so a namespace or log that
    // happens to be named `sub` is not mistaken for one.
    let subscriptions = format!("{}sub/", manifest.log_prefix(&log));
    loop {
        let mut events = match manifest.watch_log(&log, Some(revision + 1)).await {
            Ok(events) => events,
            Err(err) => {
                // E.g. the revision was compacted away: a watch from it can
                // never start, so start again from a fresh view.
                tracing::warn!(%log, "manifest watch failed: {err}; reloading and retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(view) = load(&manifest, &log).await {
                    revision = view.revision;
                    publish_newer(&sender, Arc::new(view));
                }
                continue;
            }
        };
        loop {
            match events.next().await {
                Some(Ok(event)) if event.key().starts_with(&subscriptions) => continue,
                Some(Ok(_)) => {
                    // Take whatever else is ready too, then reload once.
                    while let Some(Some(Ok(_))) = events.next().now_or_never() {}
                }
                Some(Err(err)) => {
                    tracing::warn!(%log, "manifest watch ended: {err}; restarting");
                    break;
                }
                None => break,
            }
            match load(&manifest, &log).await {
                Ok(view) => {
                    revision = revision.max(view.revision);
                    publish_newer(&sender, Arc::new(view));
                }
                Err(err) => {
                    tracing::warn!(%log, "reloading the log view failed: {err}");
                    break;
                }
            }
        }
        // Catch up with whatever happened while the watch was down.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(view) = load(&manifest, &log).await {
            revision = view.revision;
            publish_newer(&sender, Arc::new(view));
        }
    }
}

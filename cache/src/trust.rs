//! Which segments a cache node may answer fences and recovery reads for.
//!
//! A node re-initialised with `--reinit-cache` may have lost entries of
//! every segment created before its new identity ([`Cookie`]'s
//! `serves_from_revision`); answering "I hold nothing" (or "entry not
//! found") for them could let recovery seal short. For those it answers
//! `DATA_LOSS`, which recovery and readers treat as "unknown, ask another
//! replica". A node that was never re-initialised answers for everything.

use std::collections::HashMap;
use std::sync::Mutex;

use dlog_meta::manifest::{Manifest, SegmentMeta};
use dlog_wire::names::LogName;

use crate::error::Error as StoreError;
use crate::identity::Cookie;
use crate::segment_key::SegmentKey;

/// Which segments this instance may answer fences and recovery reads for:
/// those created in the manifest after [`Cookie::serves_from_revision`].
#[derive(Debug)]
pub struct Trust {
    manifest: Manifest,
    from_revision: i64,
    instance_id: String,
    decided: Mutex<HashMap<SegmentKey, bool>>,
}

impl Trust {
    pub fn new(manifest: Manifest, cookie: &Cookie) -> Trust {
        Trust {
            manifest,
            from_revision: cookie.serves_from_revision,
            instance_id: cookie.instance_id.clone(),
            decided: Mutex::default(),
        }
    }

    /// `Ok` when this instance has held the segment since it was created;
    /// else `DATA_LOSS` (the answer is unknown, not "not held").
    pub async fn check(&self, log: &str, segment: SegmentKey) -> Result<(), StoreError> {
        if self.from_revision == 0 {
            return Ok(());
        }
        let known = self
            .decided
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&segment)
            .copied();
        let trusted = match known {
            Some(trusted) => trusted,
            None => {
                let trusted = self.created_after_start(log, segment).await?;
                self.decided
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(segment, trusted);
                trusted
            }
        };
        if trusted {
            Ok(())
        } else {
            Err(StoreError::Corrupt {
                segment,
                reason: format!(
                    "this node's data was re-initialised (instance {}) after the segment was \
                     created; it may have lost entries of it",
                    self.instance_id
                ),
            })
        }
    }

    /// Looks the segment's key up: created after this instance started?
    /// A segment the manifest does not know (any more) is not trusted.
    async fn created_after_start(
        &self,
        log: &str,
        segment: SegmentKey,
    ) -> Result<bool, StoreError> {
        let unavailable = |what: String| StoreError::Io {
            path: format!("manifest segment {segment}"),
            what: "look up the segment's creation",
            source: std::io::Error::other(what),
        };
        let Ok(name) = log.parse::<LogName>() else {
            return Ok(false);
        };
        let meta = match self.manifest.log(&name).await {
            Ok(meta) => meta,
            Err(dlog_meta::manifest::Error::LogNotFound(_)) => return Ok(false),
            Err(err) => return Err(unavailable(err.to_string())),
        };
        if meta.log_id != segment.log_id {
            return Ok(false);
        }
        let prefix = self.manifest.segments_prefix(&name);
        let range = self
            .manifest
            .store()
            .range(&prefix, true)
            .await
            .map_err(|err| unavailable(err.to_string()))?;
        Ok(range.kvs.iter().any(|kv| {
            serde_json::from_slice::<SegmentMeta>(&kv.value)
                .is_ok_and(|s| s.segment_id == segment.segment_id)
                && kv.create_revision > self.from_revision
        }))
    }
}

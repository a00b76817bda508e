//! Records of purged logs: `purged/<log_id:020>` → [`Purged`], written by
//! the purge's own transaction.
//!
//! A compactor paused past its lease can finish an upload into a log's
//! object folder after the purge deleted that folder. The record names the
//! folder, so later sweeps delete such late objects again (a compactor's
//! orphan sweep), for as long as the record is kept. Only the manifest
//! says which folders are dead: a listing of the bucket cannot, after an
//! etcd restore or with two clusters on one prefix, and a sweep from the
//! listing would delete live data there.

use serde::{Deserialize, Serialize};

use dlog_wire::names::LogName;

use super::{Manifest, Result, TxnOp, decode_json, encode_json};

/// A log id whose keys a purge removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    pub log: LogName,
    pub log_id: u64,
    pub purged_at_ms: i64,
}

/// [`Purged`] as stored (JSON).
#[derive(Serialize, Deserialize)]
struct Stored {
    log: String,
    log_id: u64,
    purged_at_ms: i64,
}

impl Manifest {
    fn purged_prefix(&self) -> String {
        format!("{}purged/", self.root)
    }

    fn purged_key(&self, log_id: u64) -> String {
        format!("{}{log_id:020}", self.purged_prefix())
    }

    /// The write that records the purge of `log_id` (part of the purge's
    /// transaction).
    pub(super) fn record_purge(&self, log: &LogName, log_id: u64) -> TxnOp {
        let stored = Stored {
            log: log.to_string(),
            log_id,
            purged_at_ms: dlog_wire::now_ms(),
        };
        TxnOp::put(self.purged_key(log_id), encode_json(&stored))
    }

    /// Every recorded purge, oldest log id first. A record that does not
    /// decode, or whose log name does not parse, is skipped (with a
    /// warning): it names no folder this service wrote.
    pub async fn purged_logs(&self) -> Result<Vec<Purged>> {
        let range = self.store.range(&self.purged_prefix(), true).await?;
        let mut purged = Vec::with_capacity(range.kvs.len());
        for kv in &range.kvs {
            let stored: Stored = match decode_json(kv) {
                Ok(stored) => stored,
                Err(err) => {
                    tracing::warn!(key = kv.key, "a purge record does not decode: {err}");
                    continue;
                }
            };
            match stored.log.parse() {
                Ok(log) => purged.push(Purged {
                    log,
                    log_id: stored.log_id,
                    purged_at_ms: stored.purged_at_ms,
                }),
                Err(err) => tracing::warn!(key = kv.key, "a purge record names no log: {err}"),
            }
        }
        Ok(purged)
    }

    /// Drops the record of `log_id`'s purge (its folder is no longer swept).
    pub async fn forget_purge(&self, log_id: u64) -> Result<()> {
        self.store.delete(&self.purged_key(log_id)).await?;
        Ok(())
    }
}

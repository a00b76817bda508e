//! An ingest node: which logs it owns, how it takes ownership, and how it
//! routes requests to its owners or redirects them to another node's.
//!
//! Taking ownership of a log (the first write reaching this node):
//! 1. create `owner/<log>` on this node's lease (fails if another node holds
//!    it: the request is redirected there);
//! 2. compare-and-swap the epoch up by one;
//! 3. recover every segment left `open` (fence, copy, seal: [`crate::recovery`]);
//! 4. start the owner task, which opens a new segment on its first write.
//!
//! Crash points: dying after 1 leaves an owner key that expires with the
//! lease; after 2 an epoch nobody uses (the next owner bumps past it); in 3
//! a fenced, still-open segment the next owner recovers again. The epoch
//! fence on every later manifest write and the cache nodes' fencing make a
//! node that lost its lease harmless even if it keeps running (SIGSTOP).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dlog_infra::limits::Limits;
use dlog_infra::manifest::{self, LogState, Manifest, NodeInfo, SegmentState};
use dlog_infra::metastore::LeaseId;
use dlog_infra::names::LogName;
use dlog_infra::record::Append;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::owner::{
    AppendAck, Command, NodeBudget, Owner, OwnerEnv, OwnerHandle, OwnerInfo, OwnerOptions, Resume,
};
use crate::pool::CachePool;
use crate::recovery::recover_segment;

/// Settings of an ingest node.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub owner: OwnerOptions,
    pub limits: Limits,
    /// Bytes appended but not yet answered, over all logs of the node.
    pub max_node_in_flight_bytes: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            owner: OwnerOptions::default(),
            limits: Limits::default(),
            max_node_in_flight_bytes: 512 * 1024 * 1024,
        }
    }
}

/// A running ingest node.
#[derive(Debug)]
pub struct IngestNode {
    manifest: Manifest,
    pool: Arc<CachePool>,
    budget: Arc<NodeBudget>,
    me: NodeInfo,
    lease: LeaseId,
    options: IngestOptions,
    owners: Mutex<HashMap<LogName, OwnerHandle>>,
    /// One lock per log being taken over, so two requests never take the
    /// same log twice while different logs are taken over in parallel.
    acquiring: Mutex<HashMap<LogName, Arc<tokio::sync::Mutex<()>>>>,
    /// Clean shutdown of the owners (they seal).
    shutdown: CancellationToken,
    /// The lease is gone: owners stop at once.
    lost: CancellationToken,
}

impl IngestNode {
    /// `lease` is the node's lease (its registration and owner keys live on
    /// it); `lease_lost` fires when it cannot be kept alive.
    pub fn new(
        manifest: Manifest,
        me: NodeInfo,
        lease: LeaseId,
        lease_lost: CancellationToken,
        options: IngestOptions,
    ) -> Arc<IngestNode> {
        let pool = Arc::new(CachePool::new(manifest.clone()));
        let budget = Arc::new(NodeBudget::new(options.max_node_in_flight_bytes));
        Arc::new(IngestNode {
            manifest,
            pool,
            budget,
            me,
            lease,
            options,
            owners: Mutex::default(),
            acquiring: Mutex::default(),
            shutdown: CancellationToken::new(),
            lost: lease_lost,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn limits(&self) -> &Limits {
        &self.options.limits
    }

    pub fn me(&self) -> &NodeInfo {
        &self.me
    }

    fn running_owner(&self, log: &LogName) -> Option<OwnerHandle> {
        let owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        owners.get(log).filter(|h| !h.is_stopped()).cloned()
    }

    /// This node's owner of `log`, taking ownership if no node has it.
    pub async fn owner(&self, log: &LogName) -> Result<OwnerHandle> {
        if let Some(handle) = self.running_owner(log) {
            return Ok(handle);
        }
        if self.lost.is_cancelled() || self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let log_lock = self
            .acquiring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(log.clone())
            .or_default()
            .clone();
        let _one_at_a_time = log_lock.lock().await;
        let result = self.take_ownership(log).await;
        let mut acquiring = self.acquiring.lock().unwrap_or_else(|p| p.into_inner());
        // The map holds one reference; ours is the other: nobody waits.
        if Arc::strong_count(&log_lock) <= 2 {
            acquiring.remove(log);
        }
        result
    }

    /// Claims `log` and starts its owner (the caller holds the log's lock).
    async fn take_ownership(&self, log: &LogName) -> Result<OwnerHandle> {
        if let Some(handle) = self.running_owner(log) {
            return Ok(handle);
        }
        let meta = self.manifest.log(log).await?;
        if meta.state == LogState::Deleting {
            return Err(manifest::Error::LogNotFound(log.clone()).into());
        }
        match self.manifest.claim_owner(log, &self.me, self.lease).await {
            Ok(()) => {}
            Err(manifest::Error::OwnedBy { owner, .. }) => {
                return Err(Error::NotOwner {
                    log: log.clone(),
                    owner,
                });
            }
            Err(err) => return Err(err.into()),
        }
        match self.take_over(log, meta.log_id, meta.end_of_stream).await {
            Ok(handle) => {
                self.owners
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(log.clone(), handle.clone());
                Ok(handle)
            }
            Err(err) => {
                tracing::warn!(%log, "taking ownership failed: {err:#}");
                let _ = self.manifest.release_owner(log, &self.me.id).await;
                Err(err)
            }
        }
    }

    async fn take_over(
        &self,
        log: &LogName,
        log_id: u64,
        end_of_stream: Option<u64>,
    ) -> Result<OwnerHandle> {
        let seen = self.manifest.epoch(log).await?;
        let epoch = self.manifest.bump_epoch(log, seen).await?;
        let config = self.manifest.log_config(log).await?;
        let (segments, _) = self.manifest.segments(log).await?;
        let mut resume = Resume {
            log_id,
            epoch,
            next_offset: self.manifest.trim_point(log).await?,
            last_timestamp_ms: 0,
            last_txid: None,
            end_of_stream,
            config,
        };
        for segment in segments {
            let segment = if segment.state == SegmentState::Open {
                recover_segment(&self.pool, &self.manifest, log, log_id, epoch, &segment).await?
            } else {
                segment
            };
            let end = segment.end_offset.unwrap_or(segment.start_offset);
            resume.next_offset = resume.next_offset.max(end);
            resume.last_timestamp_ms = resume
                .last_timestamp_ms
                .max(segment.max_timestamp_ms.unwrap_or(0));
            resume.last_txid = resume.last_txid.max(segment.max_txid);
        }
        let env = OwnerEnv {
            options: self.options.owner.clone(),
            manifest: self.manifest.clone(),
            pool: self.pool.clone(),
            budget: self.budget.clone(),
        };
        Ok(Owner::spawn(
            log.clone(),
            resume,
            &env,
            self.shutdown.child_token(),
            self.lost.clone(),
        ))
    }

    /// Sends a command to this node's owner of `log` and waits for the answer.
    async fn ask<T>(
        &self,
        log: &LogName,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T> {
        let handle = self.owner(log).await?;
        let (reply, answer) = oneshot::channel();
        handle
            .send(command(reply))
            .await
            .ok_or(Error::OwnershipLost {
                log: log.clone(),
                epoch: handle.epoch,
                reason: "its task stopped".into(),
            })?;
        answer.await.map_err(|_| Error::OwnershipLost {
            log: log.clone(),
            epoch: handle.epoch,
            reason: "its task stopped".into(),
        })
    }

    pub async fn append(&self, append: Append) -> Result<AppendAck> {
        let log = append.log.clone();
        self.ask(&log, |reply| Command::Append { append, reply })
            .await?
    }

    /// Queues an append and returns the answer to wait for (for pipelined
    /// sessions: answers come in the order the appends were queued).
    pub async fn submit(&self, append: Append) -> Result<oneshot::Receiver<Result<AppendAck>>> {
        let log = append.log.clone();
        let handle = self.owner(&log).await?;
        let (reply, answer) = oneshot::channel();
        handle
            .send(Command::Append { append, reply })
            .await
            .ok_or(Error::OwnershipLost {
                log,
                epoch: handle.epoch,
                reason: "its task stopped".into(),
            })?;
        Ok(answer)
    }

    pub async fn seal(&self, log: &LogName) -> Result<Option<manifest::SegmentMeta>> {
        self.ask(log, |reply| Command::Seal { reply }).await?
    }

    pub async fn end_of_stream(&self, log: &LogName) -> Result<u64> {
        self.ask(log, |reply| Command::EndOfStream { reply })
            .await?
    }

    /// The owner's view of a log, taking ownership if no node has it.
    pub async fn info(&self, log: &LogName) -> Result<OwnerInfo> {
        self.ask(log, |reply| Command::Info { reply }).await
    }

    /// The owner's view when this node owns the log now, without taking it.
    pub async fn info_if_owned(&self, log: &LogName) -> Option<OwnerInfo> {
        let handle = self.running_owner(log)?;
        let (reply, answer) = oneshot::channel();
        handle.send(Command::Info { reply }).await?;
        answer.await.ok()
    }

    /// Stops owning a log (it was deleted).
    pub fn forget(&self, log: &LogName) {
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(log);
    }

    /// Clean shutdown: owners finish what is in flight and seal, then the
    /// owner keys are released so clients move on at once.
    pub async fn shut_down(&self) {
        self.shutdown.cancel();
        let owners: Vec<(LogName, OwnerHandle)> = self
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (log, handle) in owners {
            handle.stopped().await;
            if let Err(err) = self.manifest.release_owner(&log, &self.me.id).await {
                tracing::warn!(%log, "releasing ownership failed: {err:#}");
            }
        }
    }
}

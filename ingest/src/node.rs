//! An ingest node: which logs it owns, how it takes ownership, and how it
//! routes requests to its owners or redirects them to another node's.
//!
//! Taking ownership of a log (the first write reaching this node, when the
//! placement rule prefers this node; otherwise the request is redirected
//! to the preferred node, [`balance`]):
//! 1. create `owner/<log>` on this node's lease (fails if another node holds
//!    it: the request is redirected there);
//! 2. compare-and-swap the epoch up by one;
//! 3. recover every segment left `open` (fence, copy, seal: [`crate::recovery`]);
//! 4. start the owner task, which opens a new segment on its first write.
//!
//! Crash points: dying after 1 leaves an owner key that expires with the
//! lease; after 2 an epoch nobody uses (the next owner bumps past it); in 3
//! a fenced, still-open segment the next owner recovers again. The fence
//! (log id and epoch) on every later manifest write and the cache nodes'
//! fencing make a node that lost its lease harmless even if it keeps
//! running (SIGSTOP).
//!
//! An owner runs only while its owner key is its own: the node watches the
//! owner keys and stops an owner whose key was deleted (its log deleted,
//! through any node, or purged) or taken by another node (the log
//! re-created and owned elsewhere). A log deleted and re-created under the
//! same name is a new log (new log id, epochs from 1 again); the old
//! owner's manifest writes fail on the log id even before it stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use dlog_meta::manifest::{
    self, LogState, Manifest, NodeInfo, PlacementView, SegmentState, SettingsChange,
};
use dlog_meta::metastore::{LeaseId, Revision, WatchEvent};
use dlog_wire::ids::{Epoch, LogId};
use dlog_wire::limits::Limits;
use dlog_wire::names::LogName;
use dlog_wire::record::Append;
use futures::StreamExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::owner::{
    AppendAck, Command, NodeBudget, Owner, OwnerEnv, OwnerHandle, OwnerInfo, OwnerOptions, Resume,
    SessionGate,
};
use crate::pool::CachePool;
use crate::quota::NamespaceQuotas;
use crate::recovery::recover_segment;
use crate::series;

mod balance;

/// Settings of an ingest node.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub owner: OwnerOptions,
    pub limits: Limits,
    /// Bytes appended but not yet answered, over all logs of the node.
    pub max_node_in_flight_bytes: usize,
    /// Balanced ownership ([`balance`]): take only the logs the placement
    /// rule gives this node, redirect the rest there, and hand a log over
    /// when the rule moves it. Off: any node takes any unowned log.
    pub balance: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            owner: OwnerOptions::default(),
            limits: Limits::default(),
            max_node_in_flight_bytes: 512 * 1024 * 1024,
            balance: true,
        }
    }
}

/// A running owner of this node, and how to stop it.
#[derive(Debug)]
struct Owned {
    handle: OwnerHandle,
    /// Stops the owner as if the lease were lost: it fails what it holds.
    stop: CancellationToken,
    /// The revision of the owner key this owner claimed: a watched change
    /// of the key at an older revision (a late event of the log's previous
    /// owner or incarnation) does not concern it.
    since: Revision,
}

/// A running ingest node.
#[derive(Debug)]
pub struct IngestNode {
    manifest: Manifest,
    pool: Arc<CachePool>,
    budget: Arc<NodeBudget>,
    /// Namespace quotas, shared by this node's owners.
    namespace_quotas: Arc<NamespaceQuotas>,
    me: NodeInfo,
    lease: LeaseId,
    options: IngestOptions,
    owners: Mutex<HashMap<LogName, Owned>>,
    /// One lock per log being taken over, so two requests never take the
    /// same log twice while different logs are taken over in parallel.
    acquiring: Mutex<HashMap<LogName, Arc<tokio::sync::Mutex<()>>>>,
    /// The live ingest nodes and the logs moved by hand, as last read
    /// ([`balance`]); `None` until the first read.
    placement: tokio::sync::watch::Sender<Option<Arc<PlacementView>>>,
    /// Told each time a view is stored (requests wait for the first).
    view_stored: tokio::sync::Notify,
    /// Wakes the rebalancer: the view changed, or a log was taken.
    rebalance: tokio::sync::Notify,
    /// Logs whose owner key this node may hold without running their
    /// owner: a hand-over whose release failed, a take-over that failed or
    /// was cancelled (its request dropped) after its claim. The rebalancer
    /// releases such a key unless the log's owner runs here by then.
    unreleased: Mutex<std::collections::BTreeSet<LogName>>,
    /// Shutting down: no log is taken any more; requests are redirected to
    /// the logs' preferred nodes.
    draining: std::sync::atomic::AtomicBool,
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
        Self::with_pool(manifest, me, lease, lease_lost, options, pool)
    }

    /// [`IngestNode::new`] reaching cache nodes through `pool` (the
    /// simulation passes one with its in-process connector).
    pub fn with_pool(
        manifest: Manifest,
        me: NodeInfo,
        lease: LeaseId,
        lease_lost: CancellationToken,
        options: IngestOptions,
        pool: Arc<CachePool>,
    ) -> Arc<IngestNode> {
        let budget = Arc::new(NodeBudget::new(options.max_node_in_flight_bytes));
        let node = Arc::new(IngestNode {
            manifest,
            pool,
            budget,
            namespace_quotas: Arc::default(),
            me,
            lease,
            options,
            owners: Mutex::default(),
            acquiring: Mutex::default(),
            placement: tokio::sync::watch::Sender::new(None),
            view_stored: tokio::sync::Notify::new(),
            rebalance: tokio::sync::Notify::new(),
            unreleased: Mutex::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            lost: lease_lost,
        });
        tokio::spawn(watch_ownership(Arc::downgrade(&node)));
        tokio::spawn(watch_settings(Arc::downgrade(&node)));
        if node.options.balance {
            tokio::spawn(balance::watch_placement(Arc::downgrade(&node)));
            tokio::spawn(balance::run_rebalancer(Arc::downgrade(&node)));
        }
        node
    }

    /// The live cache nodes now.
    pub async fn live_cache_nodes(&self) -> Result<usize> {
        self.pool.live_count().await
    }

    /// Tells the owners a settings change concerns to read their settings
    /// again: one log's, a namespace's, or (the default changed) all.
    async fn on_settings_change(&self, change: &SettingsChange) {
        let mut concerned: Vec<(LogName, OwnerHandle)> = {
            let owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
            owners
                .iter()
                .filter(|(log, _)| match change {
                    SettingsChange::Default => true,
                    SettingsChange::Namespace(ns) => log.namespace() == ns,
                    SettingsChange::Log(changed) => *log == changed,
                })
                .map(|(log, owned)| (log.clone(), owned.handle.clone()))
                .collect()
        };
        // In name order, so a simulated run is reproducible.
        concerned.sort_by(|(a, _), (b, _)| a.cmp(b));
        for (_, handle) in concerned {
            let _ = handle.send(Command::Reconfigure).await;
        }
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
        owners
            .get(log)
            .map(|owned| &owned.handle)
            .filter(|h| !h.is_stopped())
            .cloned()
    }

    /// This node's owner of `log`, taking ownership if no node has it.
    pub async fn owner(&self, log: &LogName) -> Result<OwnerHandle> {
        if let Some(handle) = self.running_owner(log) {
            return Ok(handle);
        }
        if self.lost.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        self.wait_for_placement().await;
        if let Some(node) = self.preferred_elsewhere(log) {
            // A log that does not exist is not found here, as anywhere.
            if self.manifest.log(log).await?.state == LogState::Deleting {
                return Err(manifest::Error::LogNotFound(log.clone()).into());
            }
            return Err(Error::Elsewhere {
                log: log.clone(),
                node: Box::new(node),
            });
        }
        if self.is_draining() {
            return Err(Error::ShuttingDown);
        }
        self.one_at_a_time(log, self.take_ownership(log)).await
    }

    /// Runs `work` on `log` holding the log's lock: no two take-overs or
    /// hand-overs of one log at a time on this node, while different logs
    /// go in parallel.
    async fn one_at_a_time<T>(&self, log: &LogName, work: impl Future<Output = T>) -> T {
        let log_lock = self
            .acquiring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(log.clone())
            .or_default()
            .clone();
        let guard = log_lock.lock().await;
        let result = work.await;
        drop(guard);
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
        // The rule may have moved the log while this request waited for
        // the lock (a hand-over of it ran).
        if let Some(node) = self.preferred_elsewhere(log) {
            return Err(Error::Elsewhere {
                log: log.clone(),
                node: Box::new(node),
            });
        }
        let meta = self.manifest.log(log).await?;
        if meta.state == LogState::Deleting {
            return Err(manifest::Error::LogNotFound(log.clone()).into());
        }
        // Until the owner runs: should this future be dropped after the
        // claim, the rebalancer releases the key.
        self.mark_unreleased(log);
        let since = match self.claim(log).await {
            Ok(since) => since,
            Err(err) => {
                // Another node holds the key: nothing of ours to release.
                // Any other failure (etcd did not answer) may have
                // committed the claim: the rebalancer checks the key.
                if matches!(err, Error::NotOwner { .. }) {
                    self.forget_unreleased(log);
                }
                return Err(err);
            }
        };
        let stop = self.lost.child_token();
        match self.take_over(log, meta.log_id, stop.clone()).await {
            Ok(handle) => {
                let owned = Owned {
                    handle: handle.clone(),
                    stop,
                    since,
                };
                let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(old) = owners.insert(log.clone(), owned) {
                    old.stop.cancel();
                } else {
                    metrics::counter!(series::OWNERSHIP_CHANGES, "change" => "acquired")
                        .increment(1);
                }
                drop(owners);
                self.forget_unreleased(log);
                // The view may have moved the log while it was taken.
                self.rebalance.notify_one();
                Ok(handle)
            }
            Err(err) => {
                tracing::warn!(%log, "taking ownership failed: {err:#}");
                let released = (self.manifest)
                    .release_owner(log, &self.me.id, Some(self.lease))
                    .await;
                // Not released (etcd failed): the rebalancer tries again.
                if released.is_ok() {
                    self.forget_unreleased(log);
                }
                Err(err)
            }
        }
    }

    async fn take_over(
        &self,
        log: &LogName,
        log_id: u64,
        stop: CancellationToken,
    ) -> Result<OwnerHandle> {
        let seen = self.manifest.epoch(log).await?;
        // The end of stream as of the epoch move, not as read before the
        // claim: the previous owner may have marked one meanwhile (during
        // a hand-over), and can mark none after the move.
        let (fence, meta) = (self.manifest)
            .take_epoch(log, LogId(log_id), Epoch(seen))
            .await?;
        let end_of_stream = meta.end_of_stream;
        let epoch = fence.epoch;
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
                let started = std::time::Instant::now();
                let recovered =
                    recover_segment(&self.pool, &self.manifest, log, log_id, epoch, &segment)
                        .await?;
                metrics::counter!(series::RECOVERIES).increment(1);
                metrics::histogram!(series::RECOVERY_DURATION).record(started.elapsed());
                recovered
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
            namespace_quotas: self.namespace_quotas.clone(),
        };
        Ok(Owner::spawn(
            log.clone(),
            resume,
            &env,
            self.shutdown.child_token(),
            stop,
        ))
    }

    /// Sends a command to this node's owner of `log` and waits for the answer.
    async fn ask<T>(
        &self,
        log: &LogName,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T> {
        let handle = self.owner(log).await?;
        Self::ask_owner(&handle, log, command).await
    }

    /// Sends a command to `handle` and waits for the answer.
    async fn ask_owner<T>(
        handle: &OwnerHandle,
        log: &LogName,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T> {
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

    /// Appends through this node's owner of the log, once its payloads
    /// passed the namespace's payload schema.
    pub async fn append(&self, append: Append) -> Result<AppendAck> {
        self.retire_older_incarnation(&append).await?;
        let log = append.log.clone();
        let handle = self.owner(&log).await?;
        handle.check_payloads(&append)?;
        Self::ask_owner(&handle, &log, |reply| Command::Append {
            append,
            reply,
            session: None,
        })
        .await?
    }

    /// Queues an append of `session` and returns the answer to wait for
    /// (for pipelined sessions: answers come in the order the appends were
    /// queued). Once an append of the session failed, the owner refuses
    /// its later ones unapplied; one whose payloads do not match the
    /// namespace's payload schema fails here, before the owner.
    pub async fn submit(
        &self,
        append: Append,
        session: &SessionGate,
    ) -> Result<oneshot::Receiver<Result<AppendAck>>> {
        self.retire_older_incarnation(&append).await?;
        let log = append.log.clone();
        let handle = self.owner(&log).await?;
        if !session.admits(&log, handle.epoch) {
            return Err(Error::SessionBroken { log });
        }
        handle.check_payloads(&append)?;
        let (reply, answer) = oneshot::channel();
        handle
            .send(Command::Append {
                append,
                reply,
                session: Some(session.clone()),
            })
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

    /// An append that names a newer log id than this node's owner of the
    /// log owns: when the manifest says that owner's incarnation is gone
    /// (deleted and re-created while this node's watch lagged), the owner
    /// is stopped, so the append reaches an owner of the live log instead
    /// of being refused by the dead one. A made-up id costs one manifest
    /// read and stops nothing (the owner refuses it, `NOT_FOUND`).
    async fn retire_older_incarnation(&self, append: &Append) -> Result<()> {
        let Some(expected) = append.expected_log_id else {
            return Ok(());
        };
        let Some(handle) = self.running_owner(&append.log) else {
            return Ok(());
        };
        if expected > handle.log_id {
            let live = self.manifest.log(&append.log).await?;
            if live.log_id != handle.log_id {
                self.forget_incarnation(&append.log, handle.log_id);
            }
        }
        Ok(())
    }

    /// Stops this node's owner of `log` if it owns incarnation `log_id`.
    fn forget_incarnation(&self, log: &LogName, log_id: u64) {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        if owners.get(log).is_some_and(|o| o.handle.log_id == log_id) {
            let owned = owners.remove(log).expect("just looked up");
            tracing::info!(%log, log_id, "the log was re-created: stopping the owner of the old one");
            owned.stop.cancel();
        }
    }

    /// The owner's view when this node owns incarnation `log_id` of `log`
    /// now, without taking it. An owner of an older incarnation is stopped.
    pub async fn info_if_owned(&self, log: &LogName, log_id: u64) -> Option<OwnerInfo> {
        let handle = self.running_owner(log)?;
        if handle.log_id != log_id {
            if handle.log_id < log_id {
                self.forget_incarnation(log, handle.log_id);
            }
            return None;
        }
        let (reply, answer) = oneshot::channel();
        handle.send(Command::Info { reply }).await?;
        answer.await.ok()
    }

    /// Deletes a log ([`crate::delete`]): marks it deleted, stops this
    /// node's owner of it, and fences its open segments' replicas, so no
    /// owner anywhere acknowledges another append into it.
    pub async fn delete_log(&self, log: &LogName) -> Result<()> {
        let deleted = crate::delete::delete_log(&self.manifest, &self.pool, log).await;
        if deleted.is_ok() || matches!(deleted, Err(Error::DeletedUnfenced { .. })) {
            self.forget(log);
        }
        deleted.map(drop)
    }

    /// Stops this node's owner of a log (it was deleted, or its owner key
    /// is no longer this owner's); what it holds fails, retryable.
    pub fn forget(&self, log: &LogName) {
        let owned = self
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(log);
        if let Some(owned) = owned {
            metrics::counter!(series::OWNERSHIP_CHANGES, "change" => "released").increment(1);
            tracing::info!(%log, epoch = owned.handle.epoch, "no longer the owner: stopping");
            owned.stop.cancel();
        }
    }

    /// Sets the role's gauges: owned logs, in-flight bytes and, with
    /// `lag`, the lag of every subscription of an owned log (the owner
    /// knows the log's acknowledged end exactly; a log nobody owns takes no
    /// appends). The lag costs one manifest range per owned log.
    pub async fn sample_gauges(&self, lag: bool) {
        let logs = self.owned_logs();
        metrics::gauge!(series::OWNED_LOGS).set(logs.len() as f64);
        metrics::gauge!(series::IN_FLIGHT_BYTES).set(self.budget.used() as f64);
        if !lag {
            return;
        }
        for log in logs {
            let Some(handle) = self.running_owner(&log) else {
                continue;
            };
            // A busy or stuck owner is skipped, not waited for.
            let (reply, answer) = oneshot::channel();
            let asked = async {
                handle.send(Command::Info { reply }).await?;
                answer.await.ok()
            };
            let Ok(Some(info)) = tokio::time::timeout(SAMPLE_WAIT, asked).await else {
                continue;
            };
            let subscriptions = match self.manifest.subscriptions(&log).await {
                Ok(subscriptions) => subscriptions,
                Err(err) => {
                    tracing::debug!(%log, "subscription lag not sampled: {err:#}");
                    continue;
                }
            };
            for (name, committed) in subscriptions {
                metrics::gauge!(
                    series::SUBSCRIPTION_LAG,
                    "log" => log.to_string(),
                    "subscription" => name,
                )
                .set(info.next_offset.saturating_sub(committed) as f64);
            }
        }
    }

    /// Whether an owner key (as watched) is this node's, on its lease.
    fn holds(&self, owner: &NodeInfo, lease: Option<LeaseId>) -> bool {
        owner.id == self.me.id && lease == Some(self.lease)
    }

    fn owned_logs(&self) -> Vec<LogName> {
        let owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let mut logs: Vec<LogName> = owners.keys().cloned().collect();
        // In name order, so a simulated run is reproducible.
        logs.sort();
        logs
    }

    /// Stops every owner whose key is no longer its own (after a gap in the
    /// watch). Returns the revision to watch from.
    async fn check_ownership(&self) -> manifest::Result<i64> {
        let revision = self.manifest.revision().await?;
        for log in self.owned_logs() {
            let ours = match self.manifest.owner_lease(&log).await? {
                Some((owner, lease)) => self.holds(&owner, lease),
                None => false,
            };
            if !ours {
                self.forget(&log);
            }
        }
        Ok(revision)
    }

    /// After the owner-key watch (re)started: has the keys on this node's
    /// lease with no owner running released, as the watch would have had
    /// it seen them written. Best effort, and at most once a minute (it
    /// reads every owner key).
    async fn release_strays_listed(&self) {
        if !self.options.balance {
            return;
        }
        match self.manifest.owned_on_lease(&self.me.id, self.lease).await {
            Ok(logs) => logs.iter().for_each(|log| self.release_if_stray(log)),
            Err(err) => tracing::warn!("listing this node's owner keys: {err:#}"),
        }
    }

    /// Applies one watched change of an owner key.
    fn on_owner_event(&self, event: &WatchEvent) {
        let Some(log) = self.manifest.log_of_owner_key(event.key()) else {
            return;
        };
        let revision = match event {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        };
        let current = self
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&log)
            .map(|owned| owned.since);
        let ours = match event {
            // The lease first: most events are other nodes' keys, which
            // need no decoding.
            WatchEvent::Put(kv) => {
                kv.lease == Some(self.lease)
                    && Manifest::decode_owner(kv).is_ok_and(|owner| self.holds(&owner, kv.lease))
            }
            WatchEvent::Delete { .. } => false,
        };
        let Some(since) = current else {
            if ours {
                self.release_if_stray(&log);
            }
            return;
        };
        if revision < since {
            return;
        }
        if !ours {
            self.forget(&log);
        }
    }

    /// Clean shutdown: the node leaves the placement rule (its
    /// registration is removed), so the other nodes take its logs; each
    /// owner hands its log over to the log's preferred node (appends not
    /// applied are redirected there), or with no other node finishes what
    /// is in flight and seals; then the owner keys are released so the
    /// next owners take over at once.
    pub async fn shut_down(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if self.options.balance {
            self.leave_placement().await;
        }
        let owners: Vec<(LogName, Owned)> = self
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        metrics::counter!(series::OWNERSHIP_CHANGES, "change" => "released")
            .increment(owners.len() as u64);
        // Hand-overs first: the shutdown signal would take precedence over
        // a hand-over command the owner has not read yet.
        let mut handed = Vec::new();
        for (log, owned) in &owners {
            if let Some(to) = self.preferred_elsewhere(log)
                && (owned.handle)
                    .send(Command::HandOver { to: Box::new(to) })
                    .await
                    .is_some()
            {
                handed.push(owned.handle.clone());
            }
        }
        // Bounded, so the other owners still seal within the drain period
        // (a hand-over's owner waits up to 5 s for what is in flight).
        let handed_over = futures::future::join_all(handed.iter().map(OwnerHandle::stopped));
        if tokio::time::timeout(HAND_OVER_DRAIN, handed_over)
            .await
            .is_err()
        {
            tracing::warn!("hand-overs still running after {HAND_OVER_DRAIN:?}: sealing the rest");
        }
        self.shutdown.cancel();
        let release = |(log, owned): (LogName, Owned)| async move {
            owned.handle.stopped().await;
            if let Err(err) = (self.manifest)
                .release_owner(&log, &self.me.id, Some(self.lease))
                .await
            {
                tracing::warn!(%log, "releasing ownership failed: {err:#}");
            }
        };
        futures::future::join_all(owners.into_iter().map(release)).await;
    }

    fn is_draining(&self) -> bool {
        self.shutdown.is_cancelled() || self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Keeps running owners on their current settings: follows changes of
/// namespace settings and log metadata and tells the owners concerned;
/// after a gap in the watch, tells every owner (a change may have been
/// missed). Ends with the node.
async fn watch_settings(node: Weak<IngestNode>) {
    loop {
        let Some(strong) = node.upgrade() else { return };
        if strong.shutdown.is_cancelled() || strong.lost.is_cancelled() {
            return;
        }
        let mut events = match strong.manifest.watch_settings(None).await {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!("watching the settings: {err:#}");
                drop(strong);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        strong.on_settings_change(&SettingsChange::Default).await;
        let (shutdown, lost) = (strong.shutdown.clone(), strong.lost.clone());
        drop(strong);
        loop {
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = lost.cancelled() => return,
                event = events.next() => event,
            };
            let Some(strong) = node.upgrade() else { return };
            let key = match event {
                Some(Ok(WatchEvent::Put(kv))) => kv.key,
                Some(Ok(WatchEvent::Delete { key, .. })) => key,
                Some(Err(err)) => {
                    tracing::warn!("the settings watch ended: {err:#}");
                    break;
                }
                None => break,
            };
            if let Some(change) = strong.manifest.settings_change(&key) {
                strong.on_settings_change(&change).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The owner keys on a node's lease are listed when its owner-key watch
/// starts, then after a watch gap at most this often.
const STRAY_LISTING_EVERY: Duration = Duration::from_secs(60);

/// How long a node shutting down waits for its hand-overs before it tells
/// every owner left to seal (the drain period, 10 s by default, bounds the
/// whole shutdown).
const HAND_OVER_DRAIN: Duration = Duration::from_secs(6);

/// How long the gauge sampler waits for one owner's answer.
const SAMPLE_WAIT: Duration = Duration::from_secs(1);

/// Keeps this node's owners in step with the owner keys: resynchronises
/// (reads the key of every owned log), then follows the changes; again
/// after any gap. Ends with the node (dropped, shut down or lease lost).
async fn watch_ownership(node: Weak<IngestNode>) {
    let mut listed: Option<tokio::time::Instant> = None;
    loop {
        let Some(strong) = node.upgrade() else { return };
        if strong.shutdown.is_cancelled() || strong.lost.is_cancelled() {
            return;
        }
        let watched = match strong.check_ownership().await {
            Ok(revision) => strong.manifest.watch_owners(Some(revision + 1)).await,
            Err(err) => Err(err),
        };
        let mut events = match watched {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!("watching the owner keys: {err:#}");
                drop(strong);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if listed.is_none_or(|at| at.elapsed() >= STRAY_LISTING_EVERY) {
            listed = Some(tokio::time::Instant::now());
            strong.release_strays_listed().await;
        }
        let (shutdown, lost) = (strong.shutdown.clone(), strong.lost.clone());
        drop(strong);
        loop {
            let event = tokio::select! {
                // In a fixed order, so a simulated run is reproducible.
                biased;
                _ = shutdown.cancelled() => return,
                _ = lost.cancelled() => return,
                event = events.next() => event,
            };
            let Some(strong) = node.upgrade() else { return };
            match event {
                Some(Ok(event)) => strong.on_owner_event(&event),
                Some(Err(err)) => {
                    tracing::warn!("the owner-key watch ended: {err:#}");
                    break;
                }
                None => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use dlog_wire::error::{Classify, ErrorKind};

    use super::*;

    /// An ingest node on an embedded metastore holding the log `log`, with
    /// no cache node: its owners never open a segment, so appends stay
    /// queued.
    async fn node_without_cache_nodes(
        dir: &std::path::Path,
        log: &str,
    ) -> (Arc<IngestNode>, Manifest, LogName) {
        let url = format!("embedded://{}", dir.join("meta").display());
        let (store, cluster) = dlog_meta::metastore::open(&url).await.unwrap();
        let lease = store.lease_grant(Duration::from_secs(600)).await.unwrap();
        let manifest = Manifest::new(store, &cluster);
        let me = NodeInfo {
            id: "ingest-1".into(),
            address: "http://127.0.0.1:1".into(),
            zone: String::new(),
            capacity: 0,
            kafka: None,
        };
        let node = IngestNode::new(
            manifest.clone(),
            me,
            lease,
            CancellationToken::new(),
            IngestOptions::default(),
        );
        let log: LogName = log.parse().unwrap();
        manifest.create_log(&log).await.unwrap();
        (node, manifest, log)
    }

    /// Balanced ownership on one node with a second ingest node
    /// registered: a log the rule gives to that node is redirected there
    /// (`Elsewhere`, with its address), a missing log is still not found,
    /// and an owner key this node holds for such a log without running its
    /// owner (a take-over whose request was dropped after the claim) is
    /// released by the rebalancer (before: it stayed, and the two nodes
    /// redirected to each other until this one restarted).
    #[tokio::test]
    async fn logs_placed_elsewhere_are_redirected_and_stray_keys_released() {
        let dir = tempfile::tempdir().unwrap();
        let (node, manifest, _) = node_without_cache_nodes(dir.path(), "ns/first").await;
        let other = NodeInfo {
            id: "ingest-2".into(),
            address: "http://127.0.0.1:2".into(),
            zone: String::new(),
            capacity: 0,
            kafka: None,
        };
        let store = manifest.store().clone();
        let lease = store.lease_grant(Duration::from_secs(600)).await.unwrap();
        manifest
            .register_node(manifest::Role::Ingest, &other, lease)
            .await
            .unwrap();
        // A log the rule gives to ingest-2 among the two.
        let name = (0..)
            .map(|i| format!("ns/log-{i}"))
            .find(|log| {
                dlog_wire::placement::preferred(log, ["ingest-1", "ingest-2"]) == Some("ingest-2")
            })
            .unwrap();
        let log: LogName = name.parse().unwrap();
        manifest.create_log(&log).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while node.placement_nodes().len() < 2 {
            assert!(std::time::Instant::now() < deadline, "ingest-2 never seen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let err = node.owner(&log).await.unwrap_err();
        assert!(
            matches!(&err, Error::Elsewhere { node, .. } if node.id == "ingest-2"),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(
            err.owner().map(|n| n.address.as_str()),
            Some("http://127.0.0.1:2")
        );
        let missing: LogName = "ns/missing".parse().unwrap();
        let err = node.owner(&missing).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

        // A key of this node's, with no owner running here.
        manifest
            .claim_owner(&log, node.me(), node.lease)
            .await
            .unwrap();
        node.mark_unreleased(&log);
        node.rebalance().await;
        assert_eq!(
            manifest.owner(&log).await.unwrap(),
            None,
            "the stray key stayed"
        );
    }

    /// Waits until `log` has no owner key, failing after 15 s (the
    /// rebalancer's period is 10 s: a release must come from the event).
    async fn wait_released(manifest: &Manifest, log: &LogName, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while manifest.owner(log).await.unwrap().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: the key stayed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// However an owner key of this node's came to be held with no owner
    /// running here, it is released once the owner-key watch shows it (or
    /// its start lists it). Before, only the paths that mark the log
    /// released one: a key written without the mark (as a claim whose etcd
    /// answer was lost was, until 079dd45) stayed, and the preferred node
    /// waited for it, then redirected here, and this node there.
    #[tokio::test]
    async fn an_owner_key_without_an_owner_is_released_however_it_came() {
        let dir = tempfile::tempdir().unwrap();
        let (node, manifest, log) = node_without_cache_nodes(dir.path(), "ns/first").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while node.placement_nodes().is_empty() || node.placement.borrow().is_none() {
            assert!(std::time::Instant::now() < deadline, "no placement view");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let started = std::time::Instant::now();
        manifest
            .claim_owner(&log, node.me(), node.lease)
            .await
            .unwrap();
        wait_released(&manifest, &log, "seen in the watch").await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );

        // Written before the watch started (a store of its own, so the
        // node above does not see it): only the listing finds it.
        let dir = tempfile::tempdir().unwrap();
        let url = format!("embedded://{}", dir.path().join("meta").display());
        let (store, cluster) = dlog_meta::metastore::open(&url).await.unwrap();
        let lease = store.lease_grant(Duration::from_secs(600)).await.unwrap();
        let manifest = Manifest::new(store, &cluster);
        manifest.create_log(&log).await.unwrap();
        manifest.claim_owner(&log, node.me(), lease).await.unwrap();
        let started = std::time::Instant::now();
        let listing = IngestNode::new(
            manifest.clone(),
            node.me().clone(),
            lease,
            CancellationToken::new(),
            IngestOptions::default(),
        );
        wait_released(&manifest, &log, "listed at the start").await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(listing.running_owner(&log).is_none());
    }

    /// Records with no bytes (an empty payload, no key, no headers) cost
    /// their framing in an entry and their memory while queued; the
    /// in-flight budget counted only their bytes, so a client could queue
    /// any number of them (before: 1 000 appends of 10 000 such records,
    /// all queued, none refused).
    #[tokio::test]
    async fn records_without_bytes_count_against_the_in_flight_budget() {
        let dir = tempfile::tempdir().unwrap();
        let (node, _, log) = node_without_cache_nodes(dir.path(), "ns/empty").await;
        let mut answers = Vec::new();
        for _ in 0..1_000 {
            let append = Append {
                log: log.clone(),
                records: vec![dlog_wire::record::Record::default(); 10_000],
                expected_offset: None,
                expected_log_id: None,
            };
            let session = SessionGate::default();
            answers.push(node.submit(append, &session).await.unwrap());
        }
        // With no cache node nothing is ever acknowledged, so the answers
        // that come are refusals. A slow machine may take a while to give
        // them; a node that queues everything never does.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut refused = 0;
        while refused == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            refused += answers
                .iter_mut()
                .filter_map(|answer| {
                    matches!(
                        answer.try_recv(),
                        Ok(Err(
                            Error::Backpressure { .. } | Error::NodeBackpressure { .. }
                        ))
                    )
                    .then_some(())
                })
                .count();
        }
        assert!(
            refused > 0,
            "10 000 000 records were queued and none refused"
        );
    }

    /// In a session, an append refused (here for back-pressure) closes the
    /// session: a smaller append after it, which would fit, is refused
    /// too, so the log never holds a session's later append without its
    /// earlier one (before: the third append was accepted).
    #[tokio::test]
    async fn after_a_refused_append_the_rest_of_its_session_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (node, _, log) = node_without_cache_nodes(dir.path(), "ns/session").await;
        let append = |records: usize| Append {
            log: log.clone(),
            records: vec![dlog_wire::record::Record::default(); records],
            expected_offset: None,
            expected_log_id: None,
        };
        let session = SessionGate::default();
        // Large appends until one fails (over the in-flight budget, or
        // refused unsent: this node has no cache nodes).
        let mut answers = Vec::new();
        for _ in 0..1_000 {
            if session.is_closed() {
                break;
            }
            answers.push(node.submit(append(10_000), &session).await.unwrap());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(session.is_closed(), "no append of the session failed");
        // A small one after it, which would fit, is refused unapplied.
        let after = node.submit(append(1), &session).await;
        assert!(
            matches!(after, Err(Error::SessionBroken { .. })),
            "{after:?}"
        );
        // Another session is not affected.
        let other = SessionGate::default();
        let mut fresh = node.submit(append(1), &other).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !matches!(fresh.try_recv(), Ok(Err(Error::SessionBroken { .. }))),
            "a fresh session was refused as broken"
        );
    }

    /// A log deleted and re-created: this node took the new incarnation's
    /// ownership after an append named it, while the owner key's delete
    /// event of the old incarnation was still on its way. That late event
    /// must not stop the new owner (before: it did, and appends in flight
    /// failed until the next one took ownership again). An event after the
    /// claim still does.
    #[tokio::test]
    async fn a_late_owner_key_event_does_not_stop_a_newer_owner() {
        let dir = tempfile::tempdir().unwrap();
        let (node, manifest, log) = node_without_cache_nodes(dir.path(), "ns/recreated").await;
        let before_claim = manifest.revision().await.unwrap();
        node.owner(&log).await.expect("takes ownership");
        let owner_key = format!("{}ns/recreated", manifest.owners_prefix());
        assert_eq!(manifest.log_of_owner_key(&owner_key), Some(log.clone()));

        node.on_owner_event(&WatchEvent::Delete {
            key: owner_key.clone(),
            revision: before_claim,
        });
        assert!(
            node.running_owner(&log).is_some(),
            "a delete event older than the claim stopped the owner"
        );

        let now = manifest.revision().await.unwrap();
        node.on_owner_event(&WatchEvent::Delete {
            key: owner_key,
            revision: now + 1,
        });
        assert!(
            node.running_owner(&log).is_none(),
            "a delete after the claim stops the owner"
        );
    }

    /// With too few live cache nodes an append is answered at once with
    /// the reason (`UNAVAILABLE`), instead of waiting out its deadline
    /// (before: no answer at all until the client gave up). A refused
    /// append leaves nothing behind: the next one may expect the same
    /// offset and use lower txids.
    #[tokio::test]
    async fn appends_without_enough_cache_nodes_are_refused_at_once_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (node, _, log) = node_without_cache_nodes(dir.path(), "ns/nowhere").await;
        for attempt in 0..3 {
            let mut record = dlog_wire::record::Record::new("x");
            record.txid = Some(10 - attempt);
            let append = Append {
                log: log.clone(),
                records: vec![record],
                expected_offset: Some(0),
                expected_log_id: None,
            };
            let answer = tokio::time::timeout(Duration::from_secs(2), node.append(append))
                .await
                .unwrap_or_else(|_| panic!("attempt {attempt}: no answer within 2 s"));
            let err = answer.expect_err("appended without cache nodes");
            assert!(
                matches!(err, Error::NoCacheNodes { live: 0, .. }),
                "attempt {attempt}: {err}"
            );
            assert_eq!(err.kind(), ErrorKind::Unavailable);
            assert!(
                err.to_string().contains("not enough live cache nodes"),
                "{err}"
            );
        }
    }

    /// A namespace's payload schema refuses an append with a payload that
    /// does not match before it reaches the owner, naming the record and
    /// the field (a matching one goes on to the owner, which has no cache
    /// node to write to); a session append refused so closes its session;
    /// and a schema set later reaches the running owner's check.
    #[tokio::test]
    async fn payloads_are_checked_against_the_namespace_schema_before_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let (node, manifest, log) = node_without_cache_nodes(dir.path(), "typed/orders").await;
        let declare = |document: &str| {
            dlog_wire::payload_schema::PayloadSchema::declare(document, None).unwrap()
        };
        let config = manifest::NamespaceConfig {
            payload_schema: Some(declare(
                r#"{"fields":[{"name":"user","type":"string","required":true},{"name":"amount","type":"int64"}]}"#,
            )),
            ..manifest::NamespaceConfig::default()
        };
        manifest
            .put_namespace(log.namespace(), &config)
            .await
            .unwrap();
        let append = |payloads: &[&str]| Append {
            log: log.clone(),
            records: (payloads.iter())
                .map(|p| dlog_wire::record::Record::new(p.to_string()))
                .collect(),
            expected_offset: None,
            expected_log_id: None,
        };
        let good = r#"{"user":"u1","amount":5}"#;
        let err = (node
            .append(append(&[good, good, good, r#"{"user":"u2","amount":"x"}"#]))
            .await)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            err.to_string(),
            r#"log typed/orders: record 3: field "amount": expected int64, got string "x""#
        );
        let err = node.append(append(&[good, "[]"])).await.unwrap_err();
        assert!(
            err.to_string()
                .ends_with("record 1: payload is an array, expected a JSON object"),
            "{err}"
        );
        let passed = node.append(append(&[good])).await.unwrap_err();
        assert!(matches!(passed, Error::NoCacheNodes { .. }), "{passed}");

        let session = SessionGate::default();
        let refused = node.submit(append(&[r#"{"amount":1}"#]), &session).await;
        assert!(
            matches!(&refused, Err(Error::PayloadMismatch { index: 0, .. })),
            "{refused:?}"
        );
        assert!(
            refused
                .unwrap_err()
                .to_string()
                .contains(r#"field "user": missing (required)"#)
        );

        // A stricter schema set now reaches the owner through its watch.
        let stricter = manifest::NamespaceConfig {
            payload_schema: Some(declare(
                r#"{"fields":[{"name":"user","type":"string","required":true},{"name":"amount","type":"int64","required":true},{"name":"region","type":"string","required":true}]}"#,
            )),
            ..config
        };
        manifest
            .put_namespace(log.namespace(), &stricter)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match node.append(append(&[good])).await {
                Err(Error::PayloadMismatch { mismatch, .. }) => {
                    assert_eq!(
                        mismatch.to_string(),
                        r#"field "region": missing (required)"#
                    );
                    break;
                }
                other => assert!(
                    std::time::Instant::now() < deadline,
                    "the new schema never applied: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

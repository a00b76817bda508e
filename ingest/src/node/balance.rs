//! Balanced ownership (ARCHITECTURE.md, "Balanced ownership"): which logs
//! this node should own, and the hand-over of the others.
//!
//! Every ingest node follows the live ingest registrations and the logs
//! moved by hand ([`PlacementView`]). A request for a log nobody here owns
//! is taken only if the rule prefers this node; otherwise it is redirected
//! to the preferred node (`UNAVAILABLE` + `dlog-owner`, not applied). When
//! the view changes, each owned log the rule now gives to another node is
//! handed over:
//!
//! 1. drain: the log leaves this node's owners (new requests are
//!    redirected), and its owner is told to hand over: appends not yet sent
//!    are refused with a redirect, those in flight finish (briefly);
//! 2. seal: the owner seals its open segment at what was acknowledged
//!    (fenced by its epoch), refuses the rest with a redirect, and stops;
//! 3. release: the owner key is deleted, compared on its revision;
//! 4. take over: the next request reaches the preferred node, which claims
//!    the key (waiting briefly if the old owner still holds it), bumps the
//!    epoch and finds every segment sealed: no recovery.
//!
//! Crash points: the old node dying before the seal leaves an open segment
//! and an owner key on its lease; the lease expires and the new owner
//! recovers the segment (an ordinary failover). Dying after the seal,
//! before the release: the key expires with the lease, and nothing needs
//! recovery. After the release, before the new owner claims: the log is
//! unowned, and the next request claims it. The new owner dying in the
//! take-over is the failover of [`super`]. Whatever the rule says, the
//! owner key and the epoch fence decide who may write: nodes that
//! disagree for a moment on the live set only redirect once more.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use dlog_meta::manifest::{self, NodeInfo, PlacementView, Role};
use dlog_meta::metastore::Revision;
use dlog_wire::names::LogName;
use dlog_wire::proto as pb;
use futures::{FutureExt, StreamExt};
use tracing::Instrument;

use super::IngestNode;
use crate::error::{Error, Result};
use crate::owner::Command;
use crate::series;

/// How long a node the rule prefers waits for the current owner to hand
/// a log over before redirecting the request there.
const HAND_OVER_WAIT: Duration = Duration::from_secs(2);
/// How long a hand-over waits for its owner to seal and stop before it
/// releases the key anyway (the next owner then recovers the segment).
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Hand-overs one node runs at a time.
const PARALLEL_HAND_OVERS: usize = 16;
/// A burst of registration changes (a node starting) is read once.
const SETTLE: Duration = Duration::from_millis(100);
/// How long a starting node waits for its first placement view before it
/// decides without one.
const FIRST_VIEW_WAIT: Duration = Duration::from_secs(2);
/// Releases of a handed-over log's key tried at once; then the rebalancer
/// tries again.
const RELEASE_ATTEMPTS: u32 = 3;
/// How long a node shutting down waits to remove its registration.
const DEREGISTER_WAIT: Duration = Duration::from_secs(1);
/// The rebalancer runs at least this often: a log taken while the view
/// changed, or a key not released, is dealt with without a new change.
const REBALANCE_EVERY: Duration = Duration::from_secs(10);

impl IngestNode {
    /// The node the rule gives `log` to, when it is not this one.
    pub(super) fn preferred_elsewhere(&self, log: &LogName) -> Option<NodeInfo> {
        if !self.options.balance {
            return None;
        }
        let view = self.placement.borrow().clone()?;
        view.preferred(log)
            .filter(|node| node.id != self.me.id)
            .cloned()
    }

    /// Waits (a moment at most) for the first read of the placement view,
    /// so a starting node does not take logs the rule gives elsewhere.
    pub(super) async fn wait_for_placement(&self) {
        if !self.options.balance || self.placement.borrow().is_some() {
            return;
        }
        // A plain `Notify`, not the watch channel's own wait: that one
        // wakes its waiters in an order of tokio's random choosing, which a
        // simulated run could not repeat.
        let seen = self.view_stored.notified();
        tokio::pin!(seen);
        seen.as_mut().enable();
        if self.placement.borrow().is_some() {
            return;
        }
        let _ = tokio::time::timeout(FIRST_VIEW_WAIT, seen).await;
    }

    /// The live ingest nodes as this node last read them (itself
    /// included while it runs), for clients computing the rule themselves.
    pub fn placement_nodes(&self) -> Vec<NodeInfo> {
        match self.placement.borrow().as_ref() {
            Some(view) => view.nodes.clone(),
            None if self.is_draining() => Vec::new(),
            None => vec![self.me.clone()],
        }
    }

    /// The placement view to decide by, with this node in it while it
    /// runs (live even before its registration is seen), never while it
    /// shuts down; wakes the rebalancer.
    fn set_view(&self, view: PlacementView) {
        self.store_view(view);
        self.rebalance.notify_one();
    }

    /// [`Self::set_view`] without waking the rebalancer.
    fn store_view(&self, mut view: PlacementView) {
        let draining = self.is_draining();
        view.nodes.retain(|n| !(draining && n.id == self.me.id));
        if !draining && !view.nodes.iter().any(|n| n.id == self.me.id) {
            view.nodes.push(self.me.clone());
        }
        self.placement.send_replace(Some(Arc::new(view)));
        self.view_stored.notify_waiters();
    }

    /// Shutting down: removes this node's ingest registration, so every
    /// node's rule stops naming it within moments, and from its own view
    /// at once.
    pub(super) async fn leave_placement(&self) {
        let deregister = (self.manifest).deregister_node(Role::Ingest, &self.me.id, self.lease);
        let what = "removing this node's registration before shutting down";
        match tokio::time::timeout(DEREGISTER_WAIT, deregister).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!("{what}: {err:#}"),
            Err(_) => tracing::warn!("{what}: no answer in {DEREGISTER_WAIT:?}"),
        }
        let view = self
            .placement
            .borrow()
            .as_deref()
            .cloned()
            .unwrap_or_default();
        self.set_view(view);
    }

    /// Claims the owner key of `log`. With balancing, when another node
    /// holds it while the rule gives the log to this one, waits a moment
    /// for that node's hand-over before redirecting the request to it.
    pub(super) async fn claim(&self, log: &LogName) -> Result<Revision> {
        let deadline = Instant::now() + HAND_OVER_WAIT;
        loop {
            match self.manifest.claim_owner(log, &self.me, self.lease).await {
                Ok(revision) => return Ok(revision),
                Err(manifest::Error::OwnedBy { owner, .. }) => {
                    if !self.options.balance
                        || Instant::now() >= deadline
                        || self.preferred_elsewhere(log).is_some()
                        || self.is_draining()
                    {
                        return Err(Error::NotOwner {
                            log: log.clone(),
                            owner,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Hands over every owned log the rule now gives to another node, and
    /// releases the keys of logs handed over earlier that are still held.
    pub(super) async fn rebalance(&self) {
        let moves: Vec<LogName> = self
            .owned_logs()
            .into_iter()
            .filter(|log| self.preferred_elsewhere(log).is_some())
            .collect();
        if !moves.is_empty() {
            tracing::info!(
                logs = moves.len(),
                "handing logs over to the nodes the placement rule prefers"
            );
        }
        futures::stream::iter(moves)
            .for_each_concurrent(PARALLEL_HAND_OVERS, |log| async move {
                self.hand_over(&log).await;
            })
            .await;
        let unreleased: Vec<LogName> = (self.unreleased.lock().unwrap_or_else(|p| p.into_inner()))
            .iter()
            .cloned()
            .collect();
        for log in unreleased {
            // Shutting down, owners that left the map may still seal (their
            // keys go with the shutdown's release or the lease): checked
            // under the lock, as a take-over may have just ended.
            let release = async { !self.is_draining() && self.release_unowned(&log).await };
            if self.one_at_a_time(&log, release).await {
                tracing::info!(%log, "released the owner key of a log not owned here");
            }
        }
    }

    /// Drains, seals and releases `log` for its preferred node (the
    /// module's steps 1–3).
    async fn hand_over(&self, log: &LogName) {
        let work = async {
            // Decided under the log's lock, on the view as it is now.
            let Some(to) = self.preferred_elsewhere(log) else {
                return;
            };
            let owned = self
                .owners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(log);
            let Some(owned) = owned else { return };
            let epoch = owned.handle.epoch;
            tracing::info!(%log, epoch, to = to.id, "handing the log over");
            if owned
                .handle
                .send(Command::HandOver { to: Box::new(to) })
                .await
                .is_some()
                && tokio::time::timeout(HAND_OVER_TIMEOUT, owned.handle.stopped())
                    .await
                    .is_err()
            {
                tracing::warn!(%log, epoch, "the owner did not stop in time: stopping it; the next owner recovers the log");
            }
            owned.stop.cancel();
            self.mark_unreleased(log);
            if self.release_unowned(log).await {
                metrics::counter!(series::OWNERSHIP_CHANGES, "change" => "handed_over")
                    .increment(1);
                tracing::info!(%log, epoch, "handed the log over");
            }
        };
        self.one_at_a_time(log, work.instrument(tracing::info_span!("hand_over", %log)))
            .await
    }

    /// Releases this node's owner key of `log` when no owner of it runs
    /// here (step 3, and the clean-up of `unreleased`), trying a few times;
    /// a key still held stays in `unreleased` for the rebalancer. True
    /// when this call deleted the key. The caller holds the log's lock.
    async fn release_unowned(&self, log: &LogName) -> bool {
        if self.running_owner(log).is_some() {
            // Taken again since (the rule came back to this node).
            self.forget_unreleased(log);
            return false;
        }
        for attempt in 1..=RELEASE_ATTEMPTS {
            match (self.manifest)
                .release_owner(log, &self.me.id, Some(self.lease))
                .await
            {
                Ok(released) => {
                    self.forget_unreleased(log);
                    return released;
                }
                Err(err) => {
                    tracing::warn!(%log, attempt, "releasing the owner key of a log not owned here: {err:#}");
                    tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                }
            }
        }
        false
    }

    /// An owner key of this node's was seen for `log` while no owner of
    /// it runs here. Unless a take-over of the log is under way (it is
    /// marked then) or a hand-over (it releases the key itself, and the
    /// rebalancer's release waits for its lock), nothing would ever
    /// release that key, and the node the rule prefers would wait for it,
    /// then redirect here, while this node redirects there: it goes to the
    /// rebalancer. A stale event (the key was released since) costs one
    /// compare in etcd.
    pub(super) fn release_if_stray(&self, log: &LogName) {
        // Shutting down, the owners left the map while they still hand
        // over or seal: their keys are the shutdown's to release.
        if self.is_draining() || self.running_owner(log).is_some() {
            return;
        }
        if self.mark_unreleased(log) {
            tracing::info!(%log, "found an owner key of this node's with no owner running: releasing it");
            self.rebalance.notify_one();
        }
    }

    /// Marks `log` for the rebalancer (with balancing); true when it was
    /// not marked yet.
    pub(super) fn mark_unreleased(&self, log: &LogName) -> bool {
        self.options.balance
            && (self.unreleased.lock().unwrap_or_else(|p| p.into_inner())).insert(log.clone())
    }

    pub(super) fn forget_unreleased(&self, log: &LogName) {
        (self.unreleased.lock().unwrap_or_else(|p| p.into_inner())).remove(log);
    }
}

impl IngestNode {
    /// Where logs are owned: each live ingest node with the logs it owns
    /// and how many of those the rule gives elsewhere, and the logs moved
    /// by hand.
    pub async fn placement_report(&self) -> manifest::Result<pb::GetPlacementResponse> {
        let view = self.manifest.placement_view().await?;
        let owners = self.manifest.owners().await?;
        let mut nodes: BTreeMap<&str, pb::NodePlacement> = (view.nodes.iter())
            .map(|n| {
                let placement = pb::NodePlacement {
                    id: n.id.clone(),
                    address: n.address.clone(),
                    zone: n.zone.clone(),
                    owned: 0,
                    misplaced: 0,
                };
                (n.id.as_str(), placement)
            })
            .collect();
        let mut owned_elsewhere = 0;
        let mut owner_of = HashMap::new();
        for (log, owner) in &owners {
            owner_of.insert(log, owner.id.as_str());
            let Some(node) = nodes.get_mut(owner.id.as_str()) else {
                owned_elsewhere += 1;
                continue;
            };
            node.owned += 1;
            if view.preferred(log).is_some_and(|p| p.id != owner.id) {
                node.misplaced += 1;
            }
        }
        let mut moved: Vec<pb::MovedLog> = (view.moved.iter())
            .map(|(log, node)| pb::MovedLog {
                log: log.to_string(),
                node: node.clone(),
                owner: owner_of.get(log).map(|o| o.to_string()).unwrap_or_default(),
            })
            .collect();
        moved.sort_by(|a, b| a.log.cmp(&b.log));
        Ok(pb::GetPlacementResponse {
            nodes: nodes.into_values().collect(),
            moved,
            owned_elsewhere,
        })
    }

    /// Moves `log` to the ingest node `node` by hand (`None`: back to the
    /// rule), answering the node that should own it now. The owner sees
    /// the placement key change and hands the log over.
    pub async fn move_log(&self, log: &LogName, node: Option<&str>) -> Result<String> {
        let view = self.manifest.placement_view().await?;
        if let Some(node) = node
            && !view.nodes.iter().any(|n| n.id == node)
        {
            let live: Vec<&str> = view.nodes.iter().map(|n| n.id.as_str()).collect();
            return Err(Error::NoSuchNode {
                node: node.to_owned(),
                live: live.join(", "),
            });
        }
        self.manifest.set_placement(log, node).await?;
        let mut view = view;
        match node {
            Some(node) => view.moved.insert(log.clone(), node.to_owned()),
            None => view.moved.remove(log),
        };
        let preferred = view
            .preferred(log)
            .map(|n| n.id.clone())
            .unwrap_or_default();
        tracing::info!(%log, node = node.unwrap_or("(the rule)"), preferred, "log moved by hand");
        Ok(preferred)
    }
}

/// Hands logs over whenever the view changes or a log was taken, and
/// every [`REBALANCE_EVERY`]; in a task of its own, so the view stays
/// current while hand-overs run. Ends with the node.
pub(super) async fn run_rebalancer(node: Weak<IngestNode>) {
    loop {
        let Some(strong) = node.upgrade() else { return };
        let (shutdown, lost) = (strong.shutdown.clone(), strong.lost.clone());
        let woken = async {
            tokio::select! {
                // In a fixed order, so a simulated run is reproducible.
                biased;
                _ = strong.rebalance.notified() => false,
                _ = tokio::time::sleep(REBALANCE_EVERY) => true,
            }
        };
        let timed_out = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = lost.cancelled() => return,
            timed_out = woken => timed_out,
        };
        if strong.is_draining() || strong.placement.borrow().is_none() {
            continue;
        }
        if timed_out {
            // A watch that stalls without an error must not keep a stale
            // view: read it again now and then.
            match strong.manifest.placement_view().await {
                Ok(view) => strong.store_view(view),
                Err(err) => tracing::debug!("reading the placement view: {err:#}"),
            }
        }
        strong.rebalance().await;
    }
}

/// Follows the live ingest nodes and the logs moved by hand, and hands
/// over the logs the rule moves elsewhere. Ends with the node.
pub(super) async fn watch_placement(node: Weak<IngestNode>) {
    loop {
        let Some(strong) = node.upgrade() else { return };
        if strong.shutdown.is_cancelled() || strong.lost.is_cancelled() {
            return;
        }
        let watched = async {
            let view = strong.manifest.placement_view().await?;
            let from = Some(view.revision + 1);
            strong.set_view(view);
            let nodes = strong.manifest.watch_ingest_nodes(from).await?;
            let moved = strong.manifest.watch_placements(from).await?;
            Ok::<_, manifest::Error>(futures::stream::select(nodes, moved))
        };
        let mut events = match watched.await {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!("watching the ingest nodes and placements: {err:#}");
                drop(strong);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (shutdown, lost) = (strong.shutdown.clone(), strong.lost.clone());
        drop(strong);
        loop {
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = lost.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    tracing::warn!("the placement watch ended: {err:#}");
                    break;
                }
                None => break,
            }
            // Let a burst settle, then read the whole view again.
            tokio::time::sleep(SETTLE).await;
            let mut ended = false;
            while let Some(event) = events.next().now_or_never() {
                if !matches!(event, Some(Ok(_))) {
                    ended = true;
                    break;
                }
            }
            let Some(strong) = node.upgrade() else { return };
            match strong.manifest.placement_view().await {
                Ok(view) => strong.set_view(view),
                Err(err) => {
                    tracing::warn!("reading the ingest nodes and placements: {err:#}");
                    break;
                }
            }
            if ended {
                tracing::warn!("the placement watch ended");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

//! Exhaustive model of segment recovery (ARCHITECTURE.md, "The recovery protocol"), checked with
//! stateright's breadth-first model checker.
//!
//! # What is modelled
//!
//! One open segment on an ensemble of `E = 3` cache nodes, written with write
//! quorum `W = 3` (every entry goes to every node) and ack quorum `A = 2`.
//! Each cache node keeps, for that segment:
//!
//! * the entries it holds (entry id → epoch of the write that stored it),
//! * its fencing epoch (initially 0): adds below it are refused, also for
//!   entries the node does not hold yet (sticky fencing, ARCHITECTURE.md),
//! * the highest LAC piggybacked on an add it accepted.
//!
//! **The old owner** (epoch 1) appends entries `0..N` in order. Appending an
//! entry puts one add per node on the network, each carrying the owner's LAC
//! at send time. The network delivers adds in any order, and may never
//! deliver some (that is how losses are modelled). A node accepts an add iff
//! `1 >= its fencing epoch`. The old owner learns of an acceptance as soon
//! as it happens (delaying or losing that reply only makes the owner
//! acknowledge later or less, and piggyback a lower LAC, which makes recovery
//! start earlier: neither can break the properties below). The old owner is
//! a paused, deposed owner: it never learns that recovery started, ignores
//! refusals, and keeps appending until it has sent all `N` entries.
//!
//! An entry is *quorum-accepted* once `A` nodes accepted it. It is
//! *acknowledged* (to the client) once it and every entry before it are
//! quorum-accepted: the owner acks clients in offset order, and the
//! old owner's LAC is exactly the highest acknowledged entry. This
//! distinction matters: an entry can be quorum-accepted behind a hole (an
//! earlier entry that reached fewer than `A` nodes), and recovery is right to
//! cut it off, because no client was told it is durable (the `sometimes`
//! property [`CUT_OFF_BEHIND_HOLE`] shows the checker reaches such a state).
//! With a per-entry definition of "acknowledged" even the correct protocol
//! would fail [`NO_ACK_BEYOND_SEAL`].
//!
//! **The new owner** (epoch 2; the epoch CAS in etcd is not modelled) runs
//! recovery, which may start at any moment, concurrently with the old owner:
//!
//! 1. it sends `Fence(epoch 2)` to all three nodes. A node receiving it
//!    raises its fencing epoch to 2 (in the modes that fence on it) and
//!    answers with its progress (last entry id, LAC). A `Fence` is itself a
//!    read;
//! 2. on the `E − A + 1 = 2`nd answer it takes the highest LAC among the
//!    answers (fences still in flight may be delivered later, or never, and
//!    their answers are ignored). The model keeps only that LAC: as in the protocol,
//!    the recovery below is driven by its stop rule, not by the last
//!    entry ids;
//! 3. for entry ids from that LAC + 1 upward, it makes a *recovery read* of
//!    the entry from the nodes (any of them may answer, in any order, or not
//!    at all). On the first answer from a node that holds the entry it
//!    copies the entry, at epoch 2, to every node (a node accepts iff
//!    `2 >= its fencing epoch`; a copy does not raise the fence, as in
//!    `cache::store`) and waits for `A` acks, then moves to the
//!    next id. If `E − A + 1 = 2` nodes answered that they do not hold the
//!    entry, it stops;
//! 4. it seals the segment just before the entry it stopped at: the sealed
//!    end (one past the last entry of the segment) is that entry's id, which
//!    is `LAC + 1` when nothing beyond the LAC was found.
//!
//! A recovery read may also fail on any node at any time (a damaged frame
//! answers `DATA_LOSS`, a timeout, a dropped connection), after fencing the
//! node or not. As in `ingest::recovery`, a failure is "unknown": it is not
//! an answer that the node does not hold the entry. (The code also reads
//! the entries up to the LAC, for the seal's statistics, and fails rather
//! than seal at or below the LAC; the model starts after the LAC, which
//! gives the same seals.)
//!
//! Read requests and copies that are still in flight when recovery moves on
//! are dropped (a read answer or a copy arriving later could only fence or
//! replicate more, which cannot break the properties), so the model explores
//! the adversarial case.
//!
//! # Fencing modes
//!
//! [`FencingMode`] says which requests of the recovery fence a node:
//!
//! * [`FencingMode::Full`], the protocol of ARCHITECTURE.md: the `Fence`
//!   and every recovery read fence the node before it answers;
//! * [`FencingMode::NoReadFencing`]: no read fences, not even the step 1
//!   `Fence`/LAC read: nodes just answer. This removes sticky fencing
//!   altogether, and the checker finds an acknowledged entry cut off by the
//!   seal;
//! * [`FencingMode::FenceRequestOnly`]: the step 1 `Fence` fences, the entry
//!   reads of step 3 do not (the variant with which BookKeeper lost acknowledged entries,
//!   because only its LAC read fenced).
//!   Two nodes are fenced when the reads start, so the old owner cannot get
//!   a *new* entry onto two nodes; but an entry that reached one fenced node
//!   before its fence can still reach the third, unfenced, node later. If
//!   that third node answers a recovery read "not held" before the add
//!   arrives (its `Fence` lost or overtaken, so it is not fenced), two
//!   answers say "not held", recovery seals before the entry, and then the
//!   entry becomes acknowledged. The checker finds this too. With one FIFO
//!   connection per node that never resets, the `Fence` would always arrive
//!   before the read; the model's network may lose or reorder messages, as a
//!   reconnect does.
//!
//! # Read failures and lost disks
//!
//! [`ReadFailures::AsAbsent`] takes a failed read for "not held" (what
//! recovery did before): the checker finds an acknowledged entry cut off
//! after a read of a node holding it failed.
//!
//! [`IdentityLoss`] lets one node (n0) lose its disk once, before the seal,
//! and come back empty under the same id. If it serves as if nothing
//! happened ([`IdentityLoss::ServesEmpty`]) it counts as a fence responder
//! that holds nothing, and its fence is gone: the checker finds an
//! acknowledged entry cut off. If it refuses to serve because its data
//! directory's identity does not match its registration
//! ([`IdentityLoss::RefusesToServe`], the cache node's identity check) it
//! is one node down, and every property holds (with one copy fewer
//! required, see below).
//!
//! # Properties
//!
//! * `always` [`NO_ACK_BEYOND_SEAL`]: once the segment is sealed, every
//!   acknowledged entry is below the sealed end, including entries the old
//!   owner acknowledges after the seal. This is the property that fencing
//!   protects.
//! * `always` [`ACKED_READABLE`]: once the segment is sealed, every
//!   acknowledged entry is held by at least `A` nodes (so it stays readable
//!   with `E − A` nodes down), less one per lost disk: a lost disk is one
//!   of those `E − A` failures, and recovery does not copy entries up to
//!   the LAC again. Apart from that disk, nodes never lose entries, so
//!   this can only fail if recovery itself drops or replaces data; it holds
//!   in every mode and guards the model against such a regression.
//!   Together with [`NO_ACK_BEYOND_SEAL`] it means a reader of the sealed
//!   segment finds every acknowledged entry.
//! * `always` [`SEALED_PREFIX_COMPLETE`]: once sealed, every entry below the
//!   sealed end is held by at least `A` nodes: recovery never seals over a
//!   hole (readers of a sealed segment never miss an entry in the middle).
//! * `sometimes` [`RECOVERY_COMPLETES`]: recovery can seal the segment (the
//!   model is not vacuous).
//! * `sometimes` [`RECOVERY_COPIES`]: recovery can seal after copying an
//!   entry past the LAC (step 3 is exercised, not only the LAC + 1 case).
//! * `sometimes` [`CUT_OFF_BEHIND_HOLE`]: a quorum-accepted but
//!   unacknowledged entry can end up beyond the sealed end (why
//!   acknowledgements must go out in order).
//!
//! # Bounds
//!
//! `N = 2` entries (enough for a hole, a piggybacked LAC and a copy past the
//! LAC), one segment, epochs 1 (old owner) and 2 (new owner), one recovery.
//! Each test explores the whole reachable state space single-threaded
//! (the lost-disk counterexample stops at the first one): about 194 000
//! states with full fencing and read failures, 361 000 with a lost disk
//! that refuses to serve, fewer in the broken modes; 5–20 s per test in a
//! debug build with optimised dependencies. (`N = 3` takes ~12 million
//! states and minutes, too slow for CI.)
//!
//! Not modelled: crashes other than one lost disk (a cache node's journal
//! is durable, so a node that restarts keeps every entry it accepted; see
//! ARCHITECTURE "The cache node, crash by crash"), the old owner's own roll
//! or seal (its etcd writes fail the epoch
//! compare), explicit LAC heartbeats (§4 step 7), striping (`W < E`), and a
//! second recovery at a higher epoch running concurrently with this one.

use std::fmt;

use stateright::{Checker, HasDiscoveries, Model, Path, Property};

/// `E`: nodes in the ensemble; also `W`, every entry goes to all of them.
const NODES: usize = 3;
/// `A`: acceptances that make an entry durable.
const ACK_QUORUM: usize = 2;
/// `E − A + 1`: answers that must include a node of every ack quorum.
const ANSWER_QUORUM: usize = NODES - ACK_QUORUM + 1;
/// The node that may lose its disk (see [`IdentityLoss`]).
const WIPED: NodeId = 0;
/// Epoch of the old (deposed) owner.
const OLD_EPOCH: Epoch = 1;
/// Epoch of the recovering owner.
const NEW_EPOCH: Epoch = 2;

const NO_ACK_BEYOND_SEAL: &str = "no acknowledged entry is beyond the sealed end";
const ACKED_READABLE: &str = "all acknowledged entries are readable";
const SEALED_PREFIX_COMPLETE: &str = "every entry below the sealed end is on an ack quorum";
const RECOVERY_COMPLETES: &str = "recovery can complete";
const RECOVERY_COPIES: &str = "recovery can copy an entry past the LAC";
const CUT_OFF_BEHIND_HOLE: &str = "an unacknowledged quorum-accepted entry can be cut off";

type EntryId = u8;
type Epoch = u8;
type NodeId = u8;

/// Which recovery requests fence the node they reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum FencingMode {
    /// The `Fence` of step 1 and every recovery read fence (ARCHITECTURE.md, "The recovery protocol").
    Full,
    /// Only the `Fence` of step 1 fences; entry reads do not.
    FenceRequestOnly,
    /// Nothing fences: nodes just answer.
    NoReadFencing,
}

impl FencingMode {
    fn fence_request_fences(self) -> bool {
        matches!(self, Self::Full | Self::FenceRequestOnly)
    }

    fn entry_read_fences(self) -> bool {
        matches!(self, Self::Full)
    }
}

/// How recovery takes a recovery read that failed (a timeout, `DATA_LOSS`
/// from a damaged frame, a dropped connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ReadFailures {
    /// "Unknown": the failure says nothing about the entry; recovery asks
    /// again or another node (`ingest::recovery`).
    Unknown,
    /// "Not held": the failure counts as an answer that the node does not
    /// hold the entry.
    AsAbsent,
}

/// Whether a cache node can lose its disk and come back under the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum IdentityLoss {
    /// Disks are never lost.
    Never,
    /// Once, one node comes back empty (no entries, fence 0, no LAC) and
    /// serves as if nothing happened: it answers fences and reads and
    /// accepts adds.
    ServesEmpty,
    /// Once, one node comes back empty and refuses to serve anything: the
    /// identity of its data directory no longer matches its registration
    /// (the cache node's identity check).
    RefusesToServe,
}

/// A set of cache nodes, as a bit mask.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
struct NodeSet(u8);

impl NodeSet {
    const ALL: Self = Self((1 << NODES) - 1);

    fn contains(self, node: NodeId) -> bool {
        self.0 & (1 << node) != 0
    }

    fn with(self, node: NodeId) -> Self {
        Self(self.0 | (1 << node))
    }

    fn without(self, node: NodeId) -> Self {
        Self(self.0 & !(1 << node))
    }

    fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    fn iter(self) -> impl Iterator<Item = NodeId> {
        node_ids().filter(move |&node| self.contains(node))
    }

    fn complement(self) -> Self {
        Self(Self::ALL.0 & !self.0)
    }
}

impl fmt::Debug for NodeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = self.iter().map(|node| format!("n{node}")).collect();
        write!(f, "{{{}}}", nodes.join(", "))
    }
}

fn node_ids() -> impl Iterator<Item = NodeId> {
    (0..NODES).map(|node| NodeId::try_from(node).expect("few nodes"))
}

/// One cache node's view of the segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheNode {
    /// `held[id]`: epoch of the write that stored entry `id`, if held.
    held: Vec<Option<Epoch>>,
    /// Adds below this epoch are refused.
    fence: Epoch,
    /// Highest LAC piggybacked on an accepted add.
    lac: Option<EntryId>,
    /// The node lost its disk and came back under the same id.
    wiped: bool,
}

impl CacheNode {
    fn new(entries: EntryId) -> Self {
        Self {
            held: vec![None; usize::from(entries)],
            fence: 0,
            lac: None,
            wiped: false,
        }
    }

    fn holds(&self, entry: EntryId) -> bool {
        self.held
            .get(usize::from(entry))
            .is_some_and(Option::is_some)
    }

    /// Stores `entry` if `epoch` is not fenced; returns whether it did.
    fn add(&mut self, entry: EntryId, epoch: Epoch, lac: Option<EntryId>) -> bool {
        if epoch < self.fence {
            return false;
        }
        let slot = &mut self.held[usize::from(entry)];
        *slot = (*slot).max(Some(epoch));
        self.lac = self.lac.max(lac);
        true
    }

    fn raise_fence(&mut self, epoch: Epoch) {
        self.fence = self.fence.max(epoch);
    }
}

/// What the old owner did with one entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SentEntry {
    /// The LAC carried by the entry's adds.
    lac: Option<EntryId>,
    /// Nodes whose add is still on the network.
    in_flight: NodeSet,
    /// Nodes that accepted the add.
    accepted: NodeSet,
}

/// The deposed owner at epoch 1.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct OldOwner {
    /// Entries sent so far, by id.
    sent: Vec<SentEntry>,
}

impl SentEntry {
    fn quorum_accepted(&self) -> bool {
        self.accepted.len() >= ACK_QUORUM
    }
}

impl OldOwner {
    fn quorum_accepted(&self, entry: EntryId) -> bool {
        self.sent
            .get(usize::from(entry))
            .is_some_and(SentEntry::quorum_accepted)
    }

    /// Highest entry such that it and all before it are quorum-accepted.
    fn lac(&self) -> Option<EntryId> {
        let prefix = self
            .sent
            .iter()
            .take_while(|sent| sent.quorum_accepted())
            .count();
        prefix
            .checked_sub(1)
            .map(|lac| EntryId::try_from(lac).expect("few entries"))
    }

    /// Entries acknowledged to clients: `0..=lac`.
    fn acknowledged(&self) -> impl Iterator<Item = EntryId> {
        self.lac().map_or(0..0, |lac| 0..lac + 1)
    }
}

/// The new owner's recovery, step by step.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Recovery {
    NotStarted,
    /// Step 1–2: `Fence` sent to every node, waiting for answers.
    Fencing {
        answered: NodeSet,
        max_lac: Option<EntryId>,
    },
    /// Step 3: recovery read of `entry`; `not_held` answered without it.
    Reading {
        entry: EntryId,
        not_held: NodeSet,
    },
    /// Step 3: copying `entry` at the new epoch; `acked` accepted the copy.
    Copying {
        entry: EntryId,
        acked: NodeSet,
    },
    /// Step 4: sealed; the segment is entries `0..end`.
    Sealed {
        end: EntryId,
    },
}

/// The whole system: nodes, both owners, and the network.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SegmentState {
    nodes: [CacheNode; NODES],
    old_owner: OldOwner,
    /// Nodes whose step 1 `Fence` is still on the network.
    fences_in_flight: NodeSet,
    recovery: Recovery,
}

impl SegmentState {
    fn node(&self, node: NodeId) -> &CacheNode {
        &self.nodes[usize::from(node)]
    }

    fn node_mut(&mut self, node: NodeId) -> &mut CacheNode {
        &mut self.nodes[usize::from(node)]
    }

    fn holders(&self, entry: EntryId) -> usize {
        self.nodes.iter().filter(|node| node.holds(entry)).count()
    }

    /// Copies every acknowledged entry must have once sealed: `A`, less
    /// the disks lost (each is one of the `E − A` failures the segment
    /// tolerates, and recovery does not copy entries up to the LAC).
    fn copies_required(&self) -> usize {
        ACK_QUORUM - self.nodes.iter().filter(|node| node.wiped).count()
    }

    fn sealed_end(&self) -> Option<EntryId> {
        match self.recovery {
            Recovery::Sealed { end } => Some(end),
            _ => None,
        }
    }

    /// One line per participant, for printing counterexamples.
    fn summary(&self) -> String {
        let mut lines = vec![format!(
            "recovery: {:?}; old owner LAC: {:?}",
            self.recovery,
            self.old_owner.lac()
        )];
        for (id, sent) in self.old_owner.sent.iter().enumerate() {
            lines.push(format!(
                "entry {id}: accepted by {:?}, still in flight to {:?}",
                sent.accepted, sent.in_flight
            ));
        }
        for (id, node) in self.nodes.iter().enumerate() {
            lines.push(format!(
                "n{id}: {}fence {}, LAC {:?}, held (id: epoch) {:?}",
                if node.wiped { "WIPED, " } else { "" },
                node.fence,
                node.lac,
                node.held
                    .iter()
                    .enumerate()
                    .filter_map(|(entry, epoch)| epoch.map(|epoch| (entry, epoch)))
                    .collect::<Vec<_>>()
            ));
        }
        lines.join("\n")
    }
}

/// One step of the system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    /// The old owner sends the next entry to every node.
    Append { entry: EntryId },
    /// The network delivers the old owner's add of `entry` to `node`.
    DeliverAdd { node: NodeId, entry: EntryId },
    /// The new owner starts recovery: `Fence` to every node.
    StartRecovery,
    /// The network delivers a `Fence` to `node`, which answers.
    DeliverFence { node: NodeId },
    /// `node` answers the recovery read of `entry`.
    RecoveryRead { node: NodeId, entry: EntryId },
    /// The recovery read of `entry` reached `node` (and fenced it, in the
    /// modes where reads fence), but failed: a damaged frame, or the answer
    /// was lost.
    RecoveryReadFails { node: NodeId, entry: EntryId },
    /// `node` loses its disk and comes back empty under the same id.
    Wipe { node: NodeId },
    /// `node` receives the recovery's copy of `entry`.
    RecoveryWrite { node: NodeId, entry: EntryId },
}

#[derive(Clone, Debug)]
struct RecoveryModel {
    /// `N`: entries the old owner appends.
    entries: EntryId,
    fencing: FencingMode,
    read_failures: ReadFailures,
    identity_loss: IdentityLoss,
}

impl RecoveryModel {
    /// The protocol of ARCHITECTURE.md with `fencing`: failed reads are
    /// "unknown", disks are never lost.
    fn new(fencing: FencingMode) -> Self {
        Self {
            entries: ENTRIES,
            fencing,
            read_failures: ReadFailures::Unknown,
            identity_loss: IdentityLoss::Never,
        }
    }

    fn with_read_failures(self, read_failures: ReadFailures) -> Self {
        Self {
            read_failures,
            ..self
        }
    }

    fn with_identity_loss(self, identity_loss: IdentityLoss) -> Self {
        Self {
            identity_loss,
            ..self
        }
    }

    /// Whether `node` refuses every request (it was wiped, and checks its
    /// identity).
    fn refuses(&self, state: &SegmentState, node: NodeId) -> bool {
        self.identity_loss == IdentityLoss::RefusesToServe && state.node(node).wiped
    }

    /// Recovery after `not_held` answered that they do not hold `entry`:
    /// with enough such answers it seals before `entry`.
    fn after_not_held(entry: EntryId, not_held: NodeSet) -> Recovery {
        if not_held.len() >= ANSWER_QUORUM {
            Recovery::Sealed { end: entry }
        } else {
            Recovery::Reading { entry, not_held }
        }
    }
}

impl Model for RecoveryModel {
    type State = SegmentState;
    type Action = Action;

    fn init_states(&self) -> Vec<SegmentState> {
        vec![SegmentState {
            nodes: std::array::from_fn(|_| CacheNode::new(self.entries)),
            old_owner: OldOwner { sent: Vec::new() },
            fences_in_flight: NodeSet::default(),
            recovery: Recovery::NotStarted,
        }]
    }

    fn actions(&self, state: &SegmentState, actions: &mut Vec<Action>) {
        let next = state.old_owner.sent.len();
        if next < usize::from(self.entries) {
            let entry = EntryId::try_from(next).expect("few entries");
            actions.push(Action::Append { entry });
        }
        for (entry, sent) in (0..).zip(&state.old_owner.sent) {
            for node in sent.in_flight.iter() {
                actions.push(Action::DeliverAdd { node, entry });
            }
        }
        for node in state.fences_in_flight.iter() {
            actions.push(Action::DeliverFence { node });
        }
        match state.recovery {
            Recovery::NotStarted => actions.push(Action::StartRecovery),
            Recovery::Reading { entry, not_held } => {
                for node in not_held.complement().iter() {
                    actions.push(Action::RecoveryRead { node, entry });
                    actions.push(Action::RecoveryReadFails { node, entry });
                }
            }
            Recovery::Copying { entry, acked } => {
                for node in acked.complement().iter() {
                    actions.push(Action::RecoveryWrite { node, entry });
                }
            }
            Recovery::Fencing { .. } | Recovery::Sealed { .. } => {}
        }
        // At most one disk is lost, before the seal (after it, a lost copy
        // is a matter of the sealed segment's replication, not recovery).
        // Only n0's: every rule treats the nodes alike, so a run that wipes
        // another node is this run with the nodes renamed.
        if self.identity_loss != IdentityLoss::Never
            && state.sealed_end().is_none()
            && !state.node(WIPED).wiped
        {
            actions.push(Action::Wipe { node: WIPED });
        }
    }

    fn next_state(&self, last: &SegmentState, action: Action) -> Option<SegmentState> {
        let mut state = last.clone();
        match action {
            Action::Append { .. } => {
                let lac = state.old_owner.lac();
                state.old_owner.sent.push(SentEntry {
                    lac,
                    in_flight: NodeSet::ALL,
                    accepted: NodeSet::default(),
                });
            }
            Action::DeliverAdd { node, entry } => {
                let sent = &mut state.old_owner.sent[usize::from(entry)];
                sent.in_flight = sent.in_flight.without(node);
                let lac = sent.lac;
                if !self.refuses(&state, node) && state.node_mut(node).add(entry, OLD_EPOCH, lac) {
                    let sent = &mut state.old_owner.sent[usize::from(entry)];
                    sent.accepted = sent.accepted.with(node);
                }
            }
            Action::StartRecovery => {
                state.fences_in_flight = NodeSet::ALL;
                state.recovery = Recovery::Fencing {
                    answered: NodeSet::default(),
                    max_lac: None,
                };
            }
            Action::DeliverFence { node } => {
                state.fences_in_flight = state.fences_in_flight.without(node);
                if self.refuses(&state, node) {
                    return Some(state);
                }
                if self.fencing.fence_request_fences() {
                    state.node_mut(node).raise_fence(NEW_EPOCH);
                }
                if let Recovery::Fencing { answered, max_lac } = state.recovery {
                    let answered = answered.with(node);
                    let max_lac = max_lac.max(state.node(node).lac);
                    state.recovery = if answered.len() >= ANSWER_QUORUM {
                        Recovery::Reading {
                            entry: max_lac.map_or(0, |lac| lac + 1),
                            not_held: NodeSet::default(),
                        }
                    } else {
                        Recovery::Fencing { answered, max_lac }
                    };
                }
            }
            Action::RecoveryRead { node, entry } => {
                let Recovery::Reading { not_held, .. } = state.recovery else {
                    unreachable!("read outside the reading step");
                };
                if self.refuses(&state, node) {
                    return None;
                }
                if self.fencing.entry_read_fences() {
                    state.node_mut(node).raise_fence(NEW_EPOCH);
                }
                state.recovery = if state.node(node).holds(entry) {
                    Recovery::Copying {
                        entry,
                        acked: NodeSet::default(),
                    }
                } else {
                    Self::after_not_held(entry, not_held.with(node))
                };
            }
            Action::RecoveryReadFails { node, entry } => {
                let Recovery::Reading { not_held, .. } = state.recovery else {
                    unreachable!("read outside the reading step");
                };
                if self.refuses(&state, node) {
                    return None;
                }
                if self.fencing.entry_read_fences() {
                    state.node_mut(node).raise_fence(NEW_EPOCH);
                }
                match self.read_failures {
                    ReadFailures::Unknown => {}
                    ReadFailures::AsAbsent => {
                        state.recovery = Self::after_not_held(entry, not_held.with(node));
                    }
                }
            }
            Action::Wipe { node } => {
                *state.node_mut(node) = CacheNode {
                    wiped: true,
                    ..CacheNode::new(self.entries)
                };
            }
            Action::RecoveryWrite { node, entry } => {
                let Recovery::Copying { acked, .. } = state.recovery else {
                    unreachable!("copy outside the copying step");
                };
                // A refused copy is a no-op: recovery keeps waiting.
                if self.refuses(&state, node) || !state.node_mut(node).add(entry, NEW_EPOCH, None) {
                    return None;
                }
                let acked = acked.with(node);
                state.recovery = if acked.len() >= ACK_QUORUM {
                    Recovery::Reading {
                        entry: entry + 1,
                        not_held: NodeSet::default(),
                    }
                } else {
                    Recovery::Copying { entry, acked }
                };
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(NO_ACK_BEYOND_SEAL, |_, state: &SegmentState| {
                state
                    .sealed_end()
                    .is_none_or(|end| state.old_owner.acknowledged().all(|entry| entry < end))
            }),
            Property::always(ACKED_READABLE, |_, state: &SegmentState| {
                state.sealed_end().is_none()
                    || state
                        .old_owner
                        .acknowledged()
                        .all(|entry| state.holders(entry) >= state.copies_required())
            }),
            Property::always(SEALED_PREFIX_COMPLETE, |_, state: &SegmentState| {
                state.sealed_end().is_none_or(|end| {
                    (0..end).all(|entry| state.holders(entry) >= state.copies_required())
                })
            }),
            Property::sometimes(RECOVERY_COMPLETES, |_, state: &SegmentState| {
                state.sealed_end().is_some()
            }),
            Property::sometimes(RECOVERY_COPIES, |_, state: &SegmentState| {
                state.sealed_end().is_some()
                    && state
                        .nodes
                        .iter()
                        .any(|node| node.held.contains(&Some(NEW_EPOCH)))
            }),
            Property::sometimes(CUT_OFF_BEHIND_HOLE, |model, state: &SegmentState| {
                state.sealed_end().is_some_and(|end| {
                    (end..model.entries).any(|entry| state.old_owner.quorum_accepted(entry))
                })
            }),
        ]
    }
}

/// `N` used by the tests: two entries are enough for a hole (entry 1
/// accepted before entry 0), a piggybacked LAC, and a copy past the LAC;
/// three entries grow the state space from ~10^5 to ~10^7 states.
const ENTRIES: EntryId = 2;

/// Explores the whole state space of `model`.
fn check_exhaustively(model: RecoveryModel) -> impl Checker<RecoveryModel> {
    let name = format!("{model:?}");
    let checker = model.checker().spawn_bfs().join();
    assert!(checker.is_done());
    println!(
        "{name}: {} unique states ({} generated), max depth {}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth()
    );
    checker
}

/// A shortest (up to a few steps) counterexample to [`NO_ACK_BEYOND_SEAL`].
///
/// A complete run reports the *last* counterexample it met (stateright keeps
/// overwriting the discovery), which is one of the longest; stopping the
/// breadth-first search at the first failure gives one of the shortest.
fn shortest_lost_acknowledged_entry(model: RecoveryModel) -> Path<SegmentState, Action> {
    model
        .checker()
        .finish_when(HasDiscoveries::AnyOf([NO_ACK_BEYOND_SEAL].into()))
        .spawn_bfs()
        .join()
        .discovery(NO_ACK_BEYOND_SEAL)
        .expect("the checker should find an acknowledged entry beyond the sealed end")
}

/// Prints a short counterexample to [`NO_ACK_BEYOND_SEAL`] and checks that
/// it really ends with an acknowledged entry beyond the seal.
fn assert_finds_lost_acknowledged_entry(model: RecoveryModel) {
    let name = format!("{model:?}");
    let path = shortest_lost_acknowledged_entry(model);
    println!("{name}: counterexample to \"{NO_ACK_BEYOND_SEAL}\": {path}");
    let last = path.last_state();
    println!("final state:\n{}", last.summary());
    let end = last.sealed_end().expect("the counterexample ends sealed");
    let lac = last.old_owner.lac().expect("something was acknowledged");
    assert!(lac >= end, "entry {lac} acknowledged, sealed end {end}");
}

/// Asserts that `model` loses an acknowledged entry: the exhaustive check
/// finds a counterexample to [`NO_ACK_BEYOND_SEAL`] (and only to it: the
/// entry is not deleted, it is cut off by the seal).
fn assert_loses_acknowledged_entry(model: RecoveryModel) {
    let checker = check_exhaustively(model.clone());
    assert!(
        checker.discovery(NO_ACK_BEYOND_SEAL).is_some(),
        "the checker should find an acknowledged entry beyond the sealed end"
    );
    checker.assert_no_discovery(ACKED_READABLE);
    checker.assert_no_discovery(SEALED_PREFIX_COMPLETE);
    assert_finds_lost_acknowledged_entry(model);
}

/// Asserts every property of `model`: no counterexample to an `always`
/// one, an example of every `sometimes` one.
fn assert_keeps_every_acknowledged_entry(model: RecoveryModel) {
    let checker = check_exhaustively(model);
    checker.assert_properties();
    assert!(
        checker.unique_state_count() > 100_000,
        "suspiciously small state space: {}",
        checker.unique_state_count()
    );
}

/// The protocol: full fencing, failed reads are "unknown" (reads may fail
/// on any node at any time, fencing it or not).
#[test]
fn full_fencing_keeps_every_acknowledged_entry() {
    assert_keeps_every_acknowledged_entry(RecoveryModel::new(FencingMode::Full));
}

#[test]
fn without_read_fencing_the_checker_finds_a_lost_acknowledged_entry() {
    assert_loses_acknowledged_entry(RecoveryModel::new(FencingMode::NoReadFencing));
}

#[test]
fn fencing_only_the_fence_request_loses_an_acknowledged_entry() {
    assert_loses_acknowledged_entry(RecoveryModel::new(FencingMode::FenceRequestOnly));
}

/// Taking a failed read of a node that holds the entry for "not held"
/// lets two answers end the segment before an acknowledged entry.
#[test]
fn a_failed_read_taken_as_not_held_loses_an_acknowledged_entry() {
    assert_finds_lost_acknowledged_entry(
        RecoveryModel::new(FencingMode::Full).with_read_failures(ReadFailures::AsAbsent),
    );
}

/// A node that lost its disk and still answers counts as a fence
/// responder and says "not held" about entries it had accepted (and its
/// fence is gone): an acknowledged entry is cut off.
#[test]
fn a_wiped_node_that_still_serves_loses_an_acknowledged_entry() {
    assert_finds_lost_acknowledged_entry(
        RecoveryModel::new(FencingMode::Full).with_identity_loss(IdentityLoss::ServesEmpty),
    );
}

/// A node that lost its disk and refuses to serve (its identity check)
/// is one node down: with at most `E − A` of those, recovery keeps every
/// acknowledged entry.
#[test]
fn a_wiped_node_that_refuses_to_serve_keeps_every_acknowledged_entry() {
    assert_keeps_every_acknowledged_entry(
        RecoveryModel::new(FencingMode::Full).with_identity_loss(IdentityLoss::RefusesToServe),
    );
}

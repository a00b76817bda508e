//! Consumer groups (Kafka's classic protocol): `FindCoordinator`,
//! `JoinGroup`, `SyncGroup`, `Heartbeat`, `LeaveGroup`. Committed offsets
//! are dlog subscriptions ([`crate::commits`]); membership lives here, in
//! the memory of the node the group's members talk to.
//!
//! A group moves through Kafka's phases: *empty*; *joining* (a rebalance:
//! every member must send JoinGroup again, until the members that did not
//! are dropped at the rebalance timeout); *syncing* (the leader, the first
//! member to join, computes the assignment and sends it with SyncGroup);
//! *stable*. A member that sends no heartbeat for its session timeout, or
//! leaves, starts a rebalance. The first rebalance of an empty group waits
//! [`INITIAL_REBALANCE_DELAY`] for more members (Kafka's
//! `group.initial.rebalance.delay.ms`).
//!
//! Each node coordinates the groups whose members reach it (FindCoordinator
//! answers the node itself): members of one group must use one node, which
//! a single bootstrap address gives. If that node restarts, members learn
//! `UNKNOWN_MEMBER_ID` and join again; committed offsets are in the
//! manifest and survive.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ResponseKind,
    SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Gateway;
use crate::conn::Outcome;

/// How long the first rebalance of an empty group waits for more members.
pub(crate) const INITIAL_REBALANCE_DELAY: Duration = Duration::from_secs(3);
/// Longest session or rebalance timeout a member may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// How often sessions are checked for expiry.
const REAP_EVERY: Duration = Duration::from_millis(500);

/// Every group this node coordinates.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    groups: Mutex<HashMap<String, Arc<Group>>>,
}

#[derive(Debug, Default)]
struct Group {
    state: Mutex<State>,
    /// Woken on every change of `state`.
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    generation: i32,
    phase: Phase,
    protocol_type: String,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Members that sent JoinGroup in the current rebalance.
    joined: BTreeSet<String>,
    /// When the current rebalance stops waiting for members.
    join_deadline: Option<Instant>,
    /// Not before then (the initial delay of an empty group).
    join_not_before: Option<Instant>,
    assignments: HashMap<String, Bytes>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    Empty,
    Joining,
    Syncing,
    Stable,
}

#[derive(Debug)]
struct Member {
    protocols: Vec<(String, Bytes)>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    last_seen: Instant,
}

/// Group ids are subscription names: `[A-Za-z0-9._-]{1,128}`.
pub(crate) fn check_group(group: &str) -> Result<(), ResponseError> {
    dlog_wire::names::Namespace::new(group)
        .map(|_| ())
        .map_err(|_| ResponseError::InvalidGroupId)
}

impl Groups {
    /// The group, made if missing: JoinGroup only.
    fn joined_group(&self, id: &str) -> Arc<Group> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.entry(id.to_owned()).or_default().clone()
    }

    /// The group, if it exists (no request but JoinGroup makes one).
    fn group(&self, id: &str) -> Option<Arc<Group>> {
        let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.get(id).cloned()
    }

    /// Whether the group has members now (OffsetCommit without a member is
    /// only for groups without).
    pub(crate) fn has_members(&self, group: &str) -> bool {
        self.group(group).is_some_and(|g| {
            !g.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .members
                .is_empty()
        })
    }

    /// Whether `member` is in `group` at `generation` (OffsetCommit's check).
    pub(crate) fn check_member(
        &self,
        group: &str,
        member: &str,
        generation: i32,
    ) -> Result<(), ResponseError> {
        let Some(group) = self.group(group) else {
            return Err(ResponseError::UnknownMemberId);
        };
        let mut state = group.state.lock().unwrap_or_else(|e| e.into_inner());
        let current = state.generation;
        match state.members.get_mut(member) {
            None => Err(ResponseError::UnknownMemberId),
            Some(_) if generation != current => Err(ResponseError::IllegalGeneration),
            Some(found) => {
                found.last_seen = Instant::now();
                Ok(())
            }
        }
    }

    /// Drops members whose session expired, every [`REAP_EVERY`], for as
    /// long as the listener runs.
    pub(crate) async fn reap(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REAP_EVERY) => {}
            }
            let groups: Vec<(String, Arc<Group>)> = {
                let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
                groups.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            let now = Instant::now();
            for (id, group) in groups {
                let mut state = group.state.lock().unwrap_or_else(|e| e.into_inner());
                let expired: Vec<String> = state
                    .members
                    .iter()
                    .filter(|(member, m)| {
                        // A member waiting in JoinGroup is not expected to beat.
                        let waiting =
                            state.phase == Phase::Joining && state.joined.contains(*member);
                        !waiting && now.duration_since(m.last_seen) > m.session_timeout
                    })
                    .map(|(member, _)| member.clone())
                    .collect();
                let mut changed = false;
                for member in expired {
                    tracing::info!(group = %id, %member, "kafka: member session expired");
                    state.members.remove(&member);
                    changed = true;
                }
                if state.phase == Phase::Joining && state.join_deadline.is_some_and(|d| now >= d) {
                    changed = true;
                }
                if changed {
                    state.rebalance_or_complete(now);
                    drop(state);
                    group.changed.notify_waiters();
                }
            }
            // Empty groups no request holds go (their committed offsets are
            // subscriptions, kept elsewhere).
            let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            groups.retain(|_, group| {
                if Arc::strong_count(group) > 1 {
                    return true;
                }
                let state = group.state.lock().unwrap_or_else(|e| e.into_inner());
                !(state.phase == Phase::Empty && state.members.is_empty())
            });
        }
    }
}

impl State {
    /// Starts a rebalance (members changed), or completes the current one
    /// if everyone it waits for has joined or its time is up.
    fn rebalance_or_complete(&mut self, now: Instant) {
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            self.leader = None;
            self.joined.clear();
            self.assignments.clear();
            return;
        }
        if self.phase != Phase::Joining {
            self.start_rebalance(now, false);
        }
        self.try_complete_join(now);
    }

    fn start_rebalance(&mut self, now: Instant, initial: bool) {
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(MAX_TIMEOUT);
        self.phase = Phase::Joining;
        self.joined.clear();
        self.assignments.clear();
        self.join_deadline = Some(now + longest);
        self.join_not_before = initial.then(|| now + INITIAL_REBALANCE_DELAY);
    }

    /// Completes the join when every member rejoined (after the initial
    /// delay), or at the deadline without those that did not.
    fn try_complete_join(&mut self, now: Instant) {
        if self.phase != Phase::Joining {
            return;
        }
        let everyone = self.members.keys().all(|m| self.joined.contains(m));
        let waited = self.join_not_before.is_none_or(|t| now >= t);
        let late = self.join_deadline.is_some_and(|d| now >= d);
        if !(everyone && waited || late) {
            return;
        }
        let joined = self.joined.clone();
        self.members.retain(|m, _| joined.contains(m));
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            return;
        }
        // The protocol every member supports, in the leader's order.
        let leader = match &self.leader {
            Some(leader) if self.members.contains_key(leader) => leader.clone(),
            _ => self
                .members
                .keys()
                .next()
                .cloned()
                .expect("members is not empty"),
        };
        let protocol = self.members[&leader]
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .find(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            });
        self.generation += 1;
        self.leader = Some(leader);
        self.protocol = protocol;
        self.phase = Phase::Syncing;
        for member in self.members.values_mut() {
            member.last_seen = now;
        }
        tracing::info!(
            generation = self.generation,
            members = self.members.len(),
            "kafka: group rebalanced"
        );
    }
}

static MEMBER_IDS: AtomicU64 = AtomicU64::new(0);

fn new_member_id(client: &str) -> String {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = MEMBER_IDS.fetch_add(1, Ordering::Relaxed);
    format!("{client}-{started:x}-{n}")
}

fn timeout_ms(ms: i32) -> Duration {
    Duration::from_millis(ms.max(1) as u64).min(MAX_TIMEOUT)
}

fn respond(kind: ResponseKind) -> Outcome {
    Outcome::Respond(Box::new(kind))
}

pub(crate) async fn find_coordinator(
    gateway: &Gateway,
    request: FindCoordinatorRequest,
) -> Outcome {
    let mut response = FindCoordinatorResponse::default();
    if request.key_type != 0 {
        response.error_code = ResponseError::CoordinatorNotAvailable.code();
    } else {
        let (id, addr) = crate::routing::coordinator(gateway, &request.key).await;
        response.node_id = BrokerId(id);
        response.host = StrBytes::from_string(addr.ip().to_string());
        response.port = i32::from(addr.port());
    }
    respond(ResponseKind::FindCoordinator(response))
}

/// `NOT_COORDINATOR` unless this node coordinates `group`
/// ([`crate::routing::coordinator`]).
async fn not_here(gateway: &Gateway, group: &str) -> Option<i16> {
    (!crate::routing::coordinates(gateway, group).await)
        .then(|| ResponseError::NotCoordinator.code())
}

pub(crate) async fn join(
    gateway: &Gateway,
    request: JoinGroupRequest,
    client: &str,
    version: i16,
) -> Outcome {
    let mut response = JoinGroupResponse::default();
    response.generation_id = -1;
    if let Err(code) = check_group(&request.group_id) {
        response.error_code = code.code();
        return respond(ResponseKind::JoinGroup(response));
    }
    if let Some(code) = not_here(gateway, &request.group_id).await {
        response.error_code = code;
        return respond(ResponseKind::JoinGroup(response));
    }
    let group = gateway.groups.joined_group(&request.group_id);
    let now = Instant::now();
    let member_id = {
        let mut state = group.state.lock().unwrap_or_else(|e| e.into_inner());
        let known = !request.member_id.is_empty();
        if known && !state.members.contains_key(request.member_id.as_str()) {
            response.error_code = ResponseError::UnknownMemberId.code();
            return respond(ResponseKind::JoinGroup(response));
        }
        let others_share = |state: &State| {
            request.protocols.iter().any(|p| {
                state
                    .members
                    .iter()
                    .filter(|(id, _)| id.as_str() != request.member_id.as_str())
                    .all(|(_, m)| m.protocols.iter().any(|(n, _)| n == p.name.as_str()))
            })
        };
        if !state.members.is_empty() && state.protocol_type != request.protocol_type.as_str()
            || request.protocols.is_empty()
            || !others_share(&state)
        {
            response.error_code = ResponseError::InconsistentGroupProtocol.code();
            return respond(ResponseKind::JoinGroup(response));
        }
        let member_id = if known {
            request.member_id.to_string()
        } else {
            new_member_id(client)
        };
        state.protocol_type = request.protocol_type.to_string();
        // v0 has no rebalance timeout: the session timeout stands for it.
        let rebalance = if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        };
        let member = Member {
            protocols: request
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            session_timeout: timeout_ms(request.session_timeout_ms),
            rebalance_timeout: timeout_ms(rebalance),
            last_seen: now,
        };
        let was_empty = state.members.is_empty();
        state.members.insert(member_id.clone(), member);
        if state.phase != Phase::Joining {
            state.start_rebalance(now, was_empty);
        }
        state.joined.insert(member_id.clone());
        state.try_complete_join(now);
        member_id
    };
    group.changed.notify_waiters();

    // Wait for the rebalance to complete.
    loop {
        let notified = group.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let wake_at = {
            let mut state = group.state.lock().unwrap_or_else(|e| e.into_inner());
            if !state.members.contains_key(&member_id) {
                response.error_code = ResponseError::UnknownMemberId.code();
                return respond(ResponseKind::JoinGroup(response));
            }
            if state.phase == Phase::Joining && !state.joined.contains(&member_id) {
                // A new round began before this member saw the last one
                // end: it is waiting here, so it has joined the new round.
                state.joined.insert(member_id.clone());
            }
            state.try_complete_join(Instant::now());
            if state.phase != Phase::Joining {
                response.generation_id = state.generation;
                response.protocol_name = state.protocol.clone().map(StrBytes::from_string);
                let leader = state.leader.clone().unwrap_or_default();
                if leader == member_id {
                    let protocol = state.protocol.clone().unwrap_or_default();
                    response.members = state
                        .members
                        .iter()
                        .map(|(id, m)| {
                            let mut member = JoinGroupResponseMember::default();
                            member.member_id = StrBytes::from_string(id.clone());
                            member.metadata = m
                                .protocols
                                .iter()
                                .find(|(n, _)| *n == protocol)
                                .map(|(_, meta)| meta.clone())
                                .unwrap_or_default();
                            member
                        })
                        .collect();
                }
                response.leader = StrBytes::from_string(leader);
                response.member_id = StrBytes::from_string(member_id);
                if response.protocol_name.is_none() {
                    response.error_code = ResponseError::InconsistentGroupProtocol.code();
                }
                drop(state);
                group.changed.notify_waiters();
                return respond(ResponseKind::JoinGroup(response));
            }
            [state.join_deadline, state.join_not_before]
                .into_iter()
                .flatten()
                .filter(|t| *t > Instant::now())
                .min()
        };
        match wake_at {
            Some(at) => {
                let _ = tokio::time::timeout_at(at, notified).await;
            }
            None => notified.await,
        }
    }
}

pub(crate) async fn sync(gateway: &Gateway, request: SyncGroupRequest) -> Outcome {
    let mut response = SyncGroupResponse::default();
    if let Err(code) = check_group(&request.group_id) {
        response.error_code = code.code();
        return respond(ResponseKind::SyncGroup(response));
    }
    if let Some(code) = not_here(gateway, &request.group_id).await {
        response.error_code = code;
        return respond(ResponseKind::SyncGroup(response));
    }
    let Some(group) = gateway.groups.group(&request.group_id) else {
        response.error_code = ResponseError::UnknownMemberId.code();
        return respond(ResponseKind::SyncGroup(response));
    };
    let member_id = request.member_id.to_string();
    let generation = request.generation_id;
    let deadline = {
        let mut state = group.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(member) = state.members.get_mut(&member_id) else {
            response.error_code = ResponseError::UnknownMemberId.code();
            return respond(ResponseKind::SyncGroup(response));
        };
        member.last_seen = Instant::now();
        let deadline = Instant::now() + member.session_timeout;
        if generation != state.generation {
            response.error_code = ResponseError::IllegalGeneration.code();
            return respond(ResponseKind::SyncGroup(response));
        }
        if state.phase == Phase::Joining {
            response.error_code = ResponseError::RebalanceInProgress.code();
            return respond(ResponseKind::SyncGroup(response));
        }
        if state.phase == Phase::Syncing && state.leader.as_deref() == Some(member_id.as_str()) {
            state.assignments = request
                .assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                .collect();
            state.phase = Phase::Stable;
        }
        deadline
    };
    group.changed.notify_waiters();
    loop {
        let notified = group.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let state = group.state.lock().unwrap_or_else(|e| e.into_inner());
            // A new round began (or this member was dropped): join again.
            if state.generation != generation
                || state.phase == Phase::Joining
                || !state.members.contains_key(&member_id)
            {
                response.error_code = ResponseError::RebalanceInProgress.code();
                return respond(ResponseKind::SyncGroup(response));
            }
            if state.phase == Phase::Stable {
                response.assignment = state
                    .assignments
                    .get(&member_id)
                    .cloned()
                    .unwrap_or_default();
                return respond(ResponseKind::SyncGroup(response));
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            response.error_code = ResponseError::RebalanceInProgress.code();
            return respond(ResponseKind::SyncGroup(response));
        }
    }
}

pub(crate) async fn heartbeat(gateway: &Gateway, request: HeartbeatRequest) -> Outcome {
    let mut response = HeartbeatResponse::default();
    if let Err(code) = check_group(&request.group_id) {
        response.error_code = code.code();
        return respond(ResponseKind::Heartbeat(response));
    }
    if let Some(code) = not_here(gateway, &request.group_id).await {
        response.error_code = code;
        return respond(ResponseKind::Heartbeat(response));
    }
    let Some(group) = gateway.groups.group(&request.group_id) else {
        response.error_code = ResponseError::UnknownMemberId.code();
        return respond(ResponseKind::Heartbeat(response));
    };
    let mut state = group.state.lock().unwrap_or_else(|e| e.into_inner());
    let phase = state.phase;
    let generation = state.generation;
    response.error_code = match state.members.get_mut(request.member_id.as_str()) {
        None => ResponseError::UnknownMemberId.code(),
        Some(member) => {
            member.last_seen = Instant::now();
            if phase == Phase::Joining {
                ResponseError::RebalanceInProgress.code()
            } else if request.generation_id != generation {
                ResponseError::IllegalGeneration.code()
            } else {
                0
            }
        }
    };
    respond(ResponseKind::Heartbeat(response))
}

pub(crate) async fn leave(gateway: &Gateway, request: LeaveGroupRequest, version: i16) -> Outcome {
    let mut response = LeaveGroupResponse::default();
    if let Err(code) = check_group(&request.group_id) {
        response.error_code = code.code();
        return respond(ResponseKind::LeaveGroup(response));
    }
    let leaving: Vec<String> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| m.member_id.to_string())
            .collect()
    } else {
        vec![request.member_id.to_string()]
    };
    if let Some(code) = not_here(gateway, &request.group_id).await {
        response.error_code = code;
        return respond(ResponseKind::LeaveGroup(response));
    }
    let Some(group) = gateway.groups.group(&request.group_id) else {
        response.error_code = ResponseError::UnknownMemberId.code();
        return respond(ResponseKind::LeaveGroup(response));
    };
    {
        let mut state = group.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut any = false;
        for member in &leaving {
            let known = state.members.remove(member).is_some();
            state.joined.remove(member);
            any |= known;
            if version >= 3 {
                let mut answer = MemberResponse::default();
                answer.member_id = StrBytes::from_string(member.clone());
                if !known {
                    answer.error_code = ResponseError::UnknownMemberId.code();
                }
                response.members.push(answer);
            } else if !known {
                response.error_code = ResponseError::UnknownMemberId.code();
            }
        }
        if any {
            tracing::info!(group = %request.group_id.as_str(), members = ?leaving, "kafka: members left");
            state.rebalance_or_complete(Instant::now());
        }
    }
    group.changed.notify_waiters();
    respond(ResponseKind::LeaveGroup(response))
}

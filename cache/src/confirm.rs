//! Confirmation of a running cache node's identity: the node takes adds
//! only while the manifest confirmed, recently, that its cookie is still
//! the one registered for its id.
//!
//! Why: an operator may re-initialise a node id (`--reinit-cache`) while
//! the old process still runs somewhere (a partitioned host, a mistaken
//! restart). The new instance answers "not held" for segments created after
//! its re-initialisation; if the old process still acknowledged adds of
//! such a segment, those acknowledged entries would be on a node id whose
//! answers deny them. So:
//!
//! * the old process acknowledges an add only within
//!   [`CONFIRMATION_VALIDITY`] of the start of its last successful check
//!   that its cookie is still registered ([`Confirmation`], renewed by
//!   [`keep_confirming`] every quarter of it), and stops once a check
//!   finds another cookie;
//! * a re-initialisation first replaces the registered cookie, then waits
//!   longer than that validity ([`REINIT_WAIT`]) before it takes the
//!   revision it serves from ([`crate::identity`]): every add the old
//!   process acknowledged was acknowledged before that revision, so it
//!   belongs to a segment the new instance does not answer for.
//!
//! Fences and recovery reads are refused too while the identity is not
//! confirmed: a replaced process must not answer "not held" for segments
//! the new instance holds.
//!
//! The bound relies on the two hosts' clocks running at about the same
//! rate (not on their being in sync), as every lease does, and on the old
//! host not being suspended (a suspended machine's monotonic clock stops:
//! it resumes still "confirmed" for what was left of the validity).

use std::sync::Mutex;
use std::time::Duration;

use dlog_meta::manifest::Manifest;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::identity::{self, Cookie, Registration};

/// How long a successful identity check lets the node take adds.
pub const CONFIRMATION_VALIDITY: Duration = Duration::from_secs(8);
/// How long a re-initialisation waits between replacing the registered
/// cookie and taking its revision: the validity plus a margin for clock
/// rates and the check's own duration.
pub const REINIT_WAIT: Duration = Duration::from_secs(10);

/// Pause before a failed check is tried again.
const RETRY: Duration = Duration::from_millis(200);

/// Until when the node's identity counts as confirmed.
#[derive(Debug)]
pub struct Confirmation {
    validity: Duration,
    until: Mutex<Option<Instant>>,
}

impl Confirmation {
    /// Not confirmed yet; each confirmation lasts `validity`.
    pub fn new(validity: Duration) -> Confirmation {
        Confirmation {
            validity,
            until: Mutex::new(None),
        }
    }

    /// A check that started at `checked_at` found the cookie registered.
    pub fn confirmed(&self, checked_at: Instant) {
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        let new = checked_at + self.validity;
        if until.is_none_or(|current| new > current) {
            *until = Some(new);
        }
    }

    /// Whether the node may acknowledge an add now.
    pub fn is_valid(&self) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }
}

/// Checks every quarter of the validity that `cookie` is still registered,
/// renewing `confirmation`; cancels `replaced` and returns once another
/// cookie is. A check that fails or takes longer than a quarter of the
/// validity (an etcd member that stopped answering) renews nothing and is
/// tried again soon, so the node stops taking adds only when its identity
/// cannot be checked for the whole validity. A registration that is gone
/// altogether renews nothing either.
pub async fn keep_confirming(
    manifest: Manifest,
    cookie: Cookie,
    confirmation: std::sync::Arc<Confirmation>,
    stop: CancellationToken,
    replaced: CancellationToken,
) {
    let period = confirmation.validity / 4;
    loop {
        let started = Instant::now();
        let check = tokio::time::timeout(period, identity::registration(&manifest, &cookie));
        let pause = match check.await {
            Ok(Ok(Registration::Ours)) => {
                confirmation.confirmed(started);
                period
            }
            Ok(Ok(Registration::Replaced)) => {
                tracing::error!(node = %cookie.node_id, instance = %cookie.instance_id,
                    "another instance registered this cache node id: refusing adds, stopping");
                replaced.cancel();
                return;
            }
            Ok(Ok(Registration::Missing)) => {
                tracing::warn!(node = %cookie.node_id,
                    "this cache node's identity is not registered any more: not confirmed");
                RETRY
            }
            Ok(Err(err)) => {
                tracing::warn!(node = %cookie.node_id, "cache identity check failed (adds stop \
                    once the last check is {CONFIRMATION_VALIDITY:?} old): {err:#}");
                RETRY
            }
            Err(_) => {
                tracing::warn!(node = %cookie.node_id,
                    "cache identity check took over {period:?}: trying again");
                RETRY
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

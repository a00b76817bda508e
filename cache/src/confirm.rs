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
//! The bound relies on the two hosts' clocks running at about the same
//! rate (not on their being in sync), as every lease does.

use std::sync::Mutex;
use std::time::Duration;

use dlog_meta::manifest::Manifest;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::identity::{self, Cookie};

/// How long a successful identity check lets the node take adds.
pub const CONFIRMATION_VALIDITY: Duration = Duration::from_secs(8);
/// How long a re-initialisation waits between replacing the registered
/// cookie and taking its revision: the validity plus a margin for clock
/// rates and the check's own duration.
pub const REINIT_WAIT: Duration = Duration::from_secs(10);

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
/// cookie is. A failed check (the manifest unreachable) renews nothing, so
/// the node stops taking adds when its identity can no longer be checked.
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
        match identity::still_registered(&manifest, &cookie).await {
            Ok(true) => confirmation.confirmed(started),
            Ok(false) => {
                tracing::error!(node = %cookie.node_id, instance = %cookie.instance_id,
                    "another instance registered this cache node id: refusing adds, stopping");
                replaced.cancel();
                return;
            }
            Err(err) => tracing::warn!(node = %cookie.node_id,
                "cache identity check failed (adds stop once the last check is \
                 {CONFIRMATION_VALIDITY:?} old): {err:#}"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}

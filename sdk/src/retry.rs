//! The SDK's one retry policy, for calls ([`Client`](crate::Client)) and
//! for resuming reads ([`LogReader`](crate::LogReader)): exponential
//! backoff from 50 ms to 1 s with jitter (`backon`), at most
//! [`MAX_ATTEMPTS`] attempts, and a total deadline of [`DEADLINE`] from the
//! first attempt (or from the last progress, for a reader). What counts as
//! retryable is the caller's decision; this only says how long to wait and
//! when to stop. A server's retry-after hint (an append over a quota) is
//! waited out as given and uses up no attempt.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

/// Attempts of one call or one read between progress, the first included.
pub(crate) const MAX_ATTEMPTS: usize = 10;
/// No retry starts later than this after the first attempt: a client whose
/// cluster stays unreachable fails within it (an attempt already started
/// still runs to its own timeout).
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

const POLICY: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(50))
    .with_max_delay(Duration::from_secs(1))
    .with_factor(2.0)
    .with_jitter()
    .with_max_times(MAX_ATTEMPTS - 1);

/// The pauses between the attempts of one call (or one stretch of a read).
#[derive(Debug)]
pub(crate) struct Retries {
    pauses: ExponentialBackoff,
    deadline: Instant,
}

impl Retries {
    /// A fresh budget: [`MAX_ATTEMPTS`] attempts within [`DEADLINE`] from now.
    pub(crate) fn new() -> Retries {
        Retries {
            pauses: POLICY.build(),
            deadline: Instant::now() + DEADLINE,
        }
    }

    /// Waits before the next attempt; `false` (at once) when the attempts
    /// or the deadline ran out, and the caller should give up.
    pub(crate) async fn pause(&mut self) -> bool {
        match self.pauses.next() {
            Some(pause) if Instant::now() + pause <= self.deadline => {
                tokio::time::sleep(pause).await;
                true
            }
            _ => false,
        }
    }

    /// Waits `hint` (a server's retry-after, [`MIN_HINT`] to [`MAX_HINT`]) without
    /// using up an attempt; `false` (at once) when that passes the deadline.
    pub(crate) async fn wait(&mut self, hint: Duration) -> bool {
        let hint = hint.clamp(MIN_HINT, MAX_HINT);
        if Instant::now() + hint > self.deadline {
            return false;
        }
        tokio::time::sleep(hint).await;
        true
    }
}

/// The longest single wait a server's retry-after hint can ask for.
pub(crate) const MAX_HINT: Duration = Duration::from_secs(10);
/// The shortest: a hint of 0 (from a proxy, or a hostile server) must not
/// make a client resend without pause.
pub(crate) const MIN_HINT: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backs_off_with_jitter_and_stops_after_the_attempts() {
        let mut retries = Retries::new();
        let mut pauses = Vec::new();
        let mut last = Instant::now();
        while retries.pause().await {
            pauses.push(last.elapsed());
            last = Instant::now();
        }
        assert_eq!(pauses.len(), MAX_ATTEMPTS - 1, "{pauses:?}");
        // Jitter adds up to the pause itself: 50 ms becomes 50..100 ms.
        assert!(pauses[0] >= Duration::from_millis(50), "{pauses:?}");
        assert!(pauses[0] <= Duration::from_millis(100), "{pauses:?}");
        assert!(
            pauses.iter().all(|p| *p <= Duration::from_secs(2)),
            "{pauses:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_the_deadline() {
        let mut retries = Retries::new();
        tokio::time::sleep(DEADLINE - Duration::from_millis(10)).await;
        assert!(!retries.pause().await, "a pause past the deadline");
    }
}

//! Append quotas: bytes and records per second, per log and per namespace,
//! checked by the owner when it accepts an append (`governor`'s GCRA).
//!
//! - A log's quota (`max_append_bytes_per_sec`, `max_append_records_per_sec`)
//!   is exact: one owner sequences all of a log's appends.
//! - A namespace's quota (`namespace_max_append_*`) is the sum over the
//!   namespace's logs that one ingest node owns. Like Kafka's client quotas,
//!   which each broker enforces on its own, a namespace spread over N ingest
//!   nodes may take up to N times it in the cluster (ARCHITECTURE.md,
//!   "Quotas").
//!
//! Each limit is a bucket holding one second of its rate. An append larger
//! than a whole bucket passes when the bucket is full and leaves the rest
//! as a debt that later appends wait out, so every byte counts and no
//! append is refused for good. (Under contention for a namespace's bucket,
//! such an append waits for a moment the bucket is full: keep appends
//! smaller than a second of the quota.)
//!
//! Time is tokio's clock, so tests with paused time and the deterministic
//! simulation see quotas refill as their clock says.
//!
//! Crash safety: a quota is soft state. Nothing is written; a new owner
//! starts with full buckets.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlog_meta::manifest::NamespaceConfig;
use dlog_wire::names::Namespace;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// What was over its quota, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverQuota {
    /// `"log"` or `"namespace"`.
    pub scope: &'static str,
    /// `"bytes"` or `"records"`.
    pub unit: &'static str,
    /// The limit per second.
    pub limit: u64,
    /// How long until the append would fit.
    pub retry_after: Duration,
}

/// tokio's clock, as time since the limiter was made.
#[derive(Debug, Clone)]
struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// One rate: a bucket of one second's worth, and what oversized appends
/// still owe it.
struct Rate {
    limiter: Limiter,
    per_sec: NonZeroU32,
    unit: &'static str,
    /// The part of appends larger than the bucket not yet taken from it:
    /// paid off before anything else passes.
    debt: Mutex<u64>,
}

impl std::fmt::Debug for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/s", self.per_sec, self.unit)
    }
}

impl Rate {
    /// `None` without a limit. Limits above `u32::MAX` per second are
    /// taken as `u32::MAX` (4 GiB/s; in effect no limit).
    fn new(per_sec: Option<u64>, unit: &'static str) -> Option<Rate> {
        let per_sec = NonZeroU32::new(u32::try_from(per_sec?).unwrap_or(u32::MAX))?;
        let clock = TokioClock {
            origin: tokio::time::Instant::now(),
        };
        Some(Rate {
            limiter: RateLimiter::direct_with_clock(Quota::per_second(per_sec), clock),
            per_sec,
            unit,
            debt: Mutex::new(0),
        })
    }

    /// Takes `amount` from the bucket, or says how long until it fits.
    /// What an earlier append larger than the bucket still owes is taken
    /// first; such an append passes with a full bucket and owes the rest,
    /// so every byte is paid for and none waits forever.
    fn take(&self, amount: u64) -> Result<(), Duration> {
        let mut debt = self.debt.lock().unwrap_or_else(|p| p.into_inner());
        while *debt > 0 {
            let part = self.part(*debt);
            self.take_part(part)?;
            *debt -= u64::from(part.get());
        }
        let Some(part) = NonZeroU32::new(self.part(amount).get()).filter(|_| amount > 0) else {
            return Ok(());
        };
        self.take_part(part)?;
        *debt = amount - u64::from(part.get());
        Ok(())
    }

    /// At most a whole bucket of `amount`, at least 1.
    fn part(&self, amount: u64) -> NonZeroU32 {
        let part = u32::try_from(amount)
            .unwrap_or(u32::MAX)
            .min(self.per_sec.get());
        NonZeroU32::new(part).unwrap_or(NonZeroU32::MIN)
    }

    fn take_part(&self, part: NonZeroU32) -> Result<(), Duration> {
        match self.limiter.check_n(part) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.limiter.clock().now())),
            Err(_) => unreachable!("a part is at most the bucket's size"),
        }
    }
}

/// A bytes limit and a records limit, either or both absent.
#[derive(Debug)]
pub struct Limits {
    bytes: Option<Rate>,
    records: Option<Rate>,
    /// The settings they were made from.
    settings: (Option<u64>, Option<u64>),
}

impl Limits {
    pub fn new(bytes_per_sec: Option<u64>, records_per_sec: Option<u64>) -> Limits {
        Limits {
            bytes: Rate::new(bytes_per_sec, "bytes"),
            records: Rate::new(records_per_sec, "records"),
            settings: (bytes_per_sec, records_per_sec),
        }
    }

    fn is_unlimited(&self) -> bool {
        self.bytes.is_none() && self.records.is_none()
    }

    /// Takes an append's bytes and records from the buckets. A refusal by
    /// the records limit leaves the bytes taken: the writer is asked to
    /// wait anyway, and the bucket refills within a second.
    fn take(&self, scope: &'static str, bytes: u64, records: u64) -> Result<(), OverQuota> {
        for (rate, amount) in [(&self.bytes, bytes), (&self.records, records)] {
            if let Some(rate) = rate {
                rate.take(amount).map_err(|retry_after| OverQuota {
                    scope,
                    unit: rate.unit,
                    limit: u64::from(rate.per_sec.get()),
                    retry_after,
                })?;
            }
        }
        Ok(())
    }
}

/// The namespace quotas of one ingest node, shared by its owners.
#[derive(Debug, Default)]
pub struct NamespaceQuotas {
    limits: Mutex<HashMap<Namespace, Arc<Limits>>>,
}

impl NamespaceQuotas {
    /// The namespace's shared limits for these settings: the ones in use
    /// while the settings stay the same (so owners share one bucket), new
    /// ones when they changed. `None` when the namespace has no quota.
    fn limits(&self, ns: &Namespace, settings: (Option<u64>, Option<u64>)) -> Option<Arc<Limits>> {
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        if settings == (None, None) {
            limits.remove(ns);
            return None;
        }
        let current = limits
            .entry(ns.clone())
            .or_insert_with(|| Arc::new(Limits::new(settings.0, settings.1)));
        if current.settings != settings {
            *current = Arc::new(Limits::new(settings.0, settings.1));
        }
        Some(current.clone())
    }
}

/// The quotas one owner checks its appends against.
#[derive(Debug, Default)]
pub struct LogQuotas {
    log: Option<Limits>,
    namespace: Option<Arc<Limits>>,
}

impl LogQuotas {
    /// Quotas for `config`; a log's own buckets are kept while its limits
    /// stay the same.
    pub fn configure(
        &mut self,
        config: &NamespaceConfig,
        ns: &Namespace,
        shared: &NamespaceQuotas,
    ) {
        let log = (
            config.max_append_bytes_per_sec,
            config.max_append_records_per_sec,
        );
        if self.log.as_ref().map(|l| l.settings) != Some(log) {
            self.log = Some(Limits::new(log.0, log.1)).filter(|l| !l.is_unlimited());
        }
        self.namespace = shared.limits(
            ns,
            (
                config.namespace_max_append_bytes_per_sec,
                config.namespace_max_append_records_per_sec,
            ),
        );
    }

    /// Takes an append from the log's quota, then from its namespace's.
    pub fn take(&self, bytes: u64, records: u64) -> Result<(), OverQuota> {
        if let Some(log) = &self.log {
            log.take("log", bytes, records)?;
        }
        if let Some(namespace) = &self.namespace {
            namespace.take("namespace", bytes, records)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bytes: Option<u64>, records: Option<u64>) -> NamespaceConfig {
        NamespaceConfig {
            max_append_bytes_per_sec: bytes,
            max_append_records_per_sec: records,
            ..NamespaceConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_log_over_its_bytes_quota_is_told_when_to_retry() {
        let ns = Namespace::new("ns").unwrap();
        let shared = NamespaceQuotas::default();
        let mut quotas = LogQuotas::default();
        quotas.configure(&config(Some(1000), None), &ns, &shared);
        quotas.take(600, 1).unwrap();
        let over = quotas.take(600, 1).unwrap_err();
        assert_eq!((over.scope, over.unit, over.limit), ("log", "bytes", 1000));
        // 200 bytes short at 1000 bytes/s: 200 ms.
        assert_eq!(over.retry_after, Duration::from_millis(200), "{over:?}");
        tokio::time::advance(over.retry_after).await;
        quotas.take(600, 1).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_append_larger_than_a_bucket_passes_and_the_next_ones_pay_for_it() {
        let ns = Namespace::new("ns").unwrap();
        let shared = NamespaceQuotas::default();
        let mut quotas = LogQuotas::default();
        quotas.configure(&config(None, Some(10)), &ns, &shared);
        // 50 records against 10/s: passes with a full bucket and owes 40,
        // which the next appends pay first: 4 s of waiting in all.
        quotas.take(1, 50).unwrap();
        let over = quotas.take(1, 1).unwrap_err();
        assert_eq!((over.unit, over.limit), ("records", 10));
        assert_eq!(over.retry_after, Duration::from_secs(1));
        let mut waited = Duration::ZERO;
        while let Err(over) = quotas.take(1, 1) {
            tokio::time::advance(over.retry_after).await;
            waited += over.retry_after;
        }
        assert_eq!(waited, Duration::from_secs(4) + Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn owners_of_one_namespace_share_its_bucket_until_the_quota_changes() {
        let ns = Namespace::new("ns").unwrap();
        let shared = NamespaceQuotas::default();
        let with_quota = NamespaceConfig {
            namespace_max_append_bytes_per_sec: Some(1000),
            ..NamespaceConfig::default()
        };
        let (mut a, mut b) = (LogQuotas::default(), LogQuotas::default());
        a.configure(&with_quota, &ns, &shared);
        b.configure(&with_quota, &ns, &shared);
        a.take(800, 1).unwrap();
        let over = b.take(800, 1).unwrap_err();
        assert_eq!(over.scope, "namespace");
        // A new limit is a new, full bucket; a log without a quota of its
        // own and a namespace without one pass anything.
        let raised = NamespaceConfig {
            namespace_max_append_bytes_per_sec: Some(2000),
            ..NamespaceConfig::default()
        };
        b.configure(&raised, &ns, &shared);
        b.take(1500, 1).unwrap();
        b.configure(&NamespaceConfig::default(), &ns, &shared);
        b.take(1_000_000, 1_000_000).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_log_keeps_its_bucket_while_its_quota_stays() {
        let ns = Namespace::new("ns").unwrap();
        let shared = NamespaceQuotas::default();
        let mut quotas = LogQuotas::default();
        quotas.configure(&config(Some(1000), None), &ns, &shared);
        quotas.take(1000, 1).unwrap();
        // Reconfigured with the same limits (another setting changed).
        quotas.configure(&config(Some(1000), None), &ns, &shared);
        assert!(
            quotas.take(100, 1).is_err(),
            "a fresh bucket after a no-op change"
        );
    }
}

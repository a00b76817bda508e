//! Append quotas: bytes and records per second, per log and per namespace,
//! checked by the owner when it accepts an append.
//!
//! - A log's quota (`max_append_bytes_per_sec`, `max_append_records_per_sec`)
//!   is exact: one owner sequences all of a log's appends.
//! - A namespace's quota (`namespace_max_append_*`) is the sum over the
//!   namespace's logs that one ingest node owns. Like Kafka's client quotas,
//!   which each broker enforces on its own, a namespace spread over N ingest
//!   nodes may take up to N times it in the cluster (ARCHITECTURE.md,
//!   "Quotas").
//!
//! Each limit is a GCRA bucket (the virtual-scheduling form of a token
//! bucket) holding one second of its rate. An append passes while every
//! bucket it counts against holds anything at all, and is then charged in
//! full: a large append can take a bucket below empty, and that debt is
//! time that passes by itself. So the sustained rate is exactly the quota,
//! an append of any size gets in as soon as anyone could (no starvation of
//! large appends by small ones), and a refused append is charged nowhere:
//! all limits are checked before any is charged.
//!
//! Time is tokio's clock, so tests with paused time and the deterministic
//! simulation see quotas refill as their clock says.
//!
//! Crash safety: a quota is soft state. Nothing is written; a new owner
//! starts with full buckets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlog_meta::manifest::NamespaceConfig;
use dlog_wire::names::Namespace;
use tokio::time::Instant;

/// What was over its quota, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverQuota {
    /// `"log"` or `"namespace"`.
    pub scope: &'static str,
    /// `"bytes"` or `"records"`.
    pub unit: &'static str,
    /// The limit per second.
    pub limit: u64,
    /// How long until the append would be let through.
    pub retry_after: Duration,
}

impl OverQuota {
    /// The wait in whole milliseconds, rounded up (at least 1): a client
    /// back a fraction of a millisecond early would be refused again.
    pub fn retry_after_ms(&self) -> u64 {
        let millis = self.retry_after.as_nanos().div_ceil(1_000_000).max(1);
        u64::try_from(millis).unwrap_or(u64::MAX)
    }
}

/// How much a bucket holds: one second of its rate.
const BUCKET: Duration = Duration::from_secs(1);
/// The shortest retry-after given (a bucket a few nanoseconds from
/// holding anything would otherwise ask for 0 ms).
const MIN_RETRY: Duration = Duration::from_millis(1);

/// One rate limit: bytes or records per second.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_sec: u64,
    unit: &'static str,
}

impl Rate {
    /// The time `amount` takes at this rate.
    fn cost(&self, amount: u64) -> Duration {
        let nanos = u128::from(amount) * 1_000_000_000 / u128::from(self.per_sec);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// A bucket's state: the theoretical arrival time of the next unit (at or
/// before now: full; later than `now + BUCKET`: in debt, refusing).
type Tat = Option<Instant>;

/// Whether a bucket at `tat` lets something through at `now`; if not, how
/// long until it does.
fn admits(tat: Tat, now: Instant) -> Result<(), Duration> {
    match tat {
        Some(tat) if tat > now + BUCKET => Err((tat - (now + BUCKET)).max(MIN_RETRY)),
        _ => Ok(()),
    }
}

/// The bucket after charging `cost` at `now`.
fn charged(tat: Tat, now: Instant, cost: Duration) -> Tat {
    Some(tat.map_or(now, |tat| tat.max(now)) + cost)
}

/// A bytes limit and a records limit (either or both absent) and their
/// buckets.
#[derive(Debug)]
pub struct Limits {
    rates: [Option<Rate>; 2],
    state: Mutex<[Tat; 2]>,
    /// The settings they were made from.
    settings: (Option<u64>, Option<u64>),
}

impl Limits {
    pub fn new(bytes_per_sec: Option<u64>, records_per_sec: Option<u64>) -> Limits {
        let rate = |per_sec: Option<u64>, unit| {
            per_sec
                .filter(|n| *n > 0)
                .map(|per_sec| Rate { per_sec, unit })
        };
        Limits {
            rates: [
                rate(bytes_per_sec, "bytes"),
                rate(records_per_sec, "records"),
            ],
            state: Mutex::new([None, None]),
            settings: (bytes_per_sec, records_per_sec),
        }
    }

    fn is_unlimited(&self) -> bool {
        self.rates.iter().all(Option::is_none)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Tat; 2]> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the buckets against an append at `now`; a refusal keeps the
    /// longest wait of those in `over`.
    fn check(
        &self,
        state: &[Tat; 2],
        scope: &'static str,
        now: Instant,
        over: &mut Option<OverQuota>,
    ) {
        for (rate, tat) in self.rates.iter().zip(state) {
            if let Some(rate) = rate
                && let Err(retry_after) = admits(*tat, now)
                && over.as_ref().is_none_or(|o| o.retry_after < retry_after)
            {
                *over = Some(OverQuota {
                    scope,
                    unit: rate.unit,
                    limit: rate.per_sec,
                    retry_after,
                });
            }
        }
    }

    /// Charges the buckets for `amounts` (bytes, records) at `now`.
    fn charge(&self, state: &mut [Tat; 2], amounts: [u64; 2], now: Instant) {
        for ((rate, tat), amount) in self.rates.iter().zip(state.iter_mut()).zip(amounts) {
            if let Some(rate) = rate {
                *tat = charged(*tat, now, rate.cost(amount));
            }
        }
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

    /// Takes an append from the log's quota and its namespace's: checks
    /// every bucket, and charges them all only if none refuses.
    pub fn take(&self, bytes: u64, records: u64) -> Result<(), OverQuota> {
        let now = Instant::now();
        let amounts = [bytes, records];
        // Always the log's lock before the namespace's; the log's is only
        // ever taken by its owner.
        let mut log = self.log.as_ref().map(|limits| (limits, limits.lock()));
        let mut namespace = self
            .namespace
            .as_deref()
            .map(|limits| (limits, limits.lock()));
        let mut over = None;
        if let Some((limits, state)) = &log {
            limits.check(state, "log", now, &mut over);
        }
        if let Some((limits, state)) = &namespace {
            limits.check(state, "namespace", now, &mut over);
        }
        if let Some(over) = over {
            // The longest wait: retrying sooner would be refused again.
            return Err(over);
        }
        if let Some((limits, state)) = &mut log {
            limits.charge(state, amounts, now);
        }
        if let Some((limits, state)) = &mut namespace {
            limits.charge(state, amounts, now);
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

    fn namespace_config(bytes: Option<u64>) -> NamespaceConfig {
        NamespaceConfig {
            namespace_max_append_bytes_per_sec: bytes,
            ..NamespaceConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_log_over_its_bytes_quota_is_told_when_to_retry() {
        let ns = Namespace::new("ns").unwrap();
        let shared = NamespaceQuotas::default();
        let mut quotas = LogQuotas::default();
        quotas.configure(&config(Some(1000), None), &ns, &shared);
        // A full bucket (1000 bytes) lets 600 and then 600 more through,
        // the second into 200 bytes of debt.
        quotas.take(600, 1).unwrap();
        quotas.take(600, 1).unwrap();
        let over = quotas.take(1, 1).unwrap_err();
        assert_eq!((over.scope, over.unit, over.limit), ("log", "bytes", 1000));
        assert_eq!(over.retry_after, Duration::from_millis(200), "{over:?}");
        tokio::time::advance(over.retry_after).await;
        quotas.take(1, 1).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_append_passes_and_its_debt_passes_with_time() {
        let ns = Namespace::new("ns").unwrap();
        let shared = NamespaceQuotas::default();
        let mut quotas = LogQuotas::default();
        quotas.configure(&config(None, Some(10)), &ns, &shared);
        // 50 records against 10/s: 5 s of rate, 4 s beyond the bucket.
        quotas.take(1, 50).unwrap();
        let over = quotas.take(1, 1).unwrap_err();
        assert_eq!((over.unit, over.limit), ("records", 10));
        assert_eq!(over.retry_after, Duration::from_secs(4));
        // Idle time pays it off: a day later the bucket is full again.
        tokio::time::advance(Duration::from_secs(86_400)).await;
        quotas.take(1, 10).unwrap();
        quotas.take(1, 1).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn owners_of_one_namespace_share_its_bucket_until_the_quota_changes() {
        let ns = Namespace::new("ns").unwrap();
        let shared = NamespaceQuotas::default();
        let (mut a, mut b) = (LogQuotas::default(), LogQuotas::default());
        a.configure(&namespace_config(Some(1000)), &ns, &shared);
        b.configure(&namespace_config(Some(1000)), &ns, &shared);
        a.take(1100, 1).unwrap();
        let over = b.take(1, 1).unwrap_err();
        assert_eq!(over.scope, "namespace");
        assert_eq!(over.retry_after, Duration::from_millis(100));
        // A new limit is a new, full bucket; no quota passes anything.
        b.configure(&namespace_config(Some(2000)), &ns, &shared);
        b.take(1500, 1).unwrap();
        b.configure(&NamespaceConfig::default(), &ns, &shared);
        b.take(1_000_000, 1_000_000).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_append_is_charged_nowhere() {
        let ns = Namespace::new("ns").unwrap();
        let shared = NamespaceQuotas::default();
        let both = NamespaceConfig {
            max_append_records_per_sec: Some(10),
            namespace_max_append_bytes_per_sec: Some(1000),
            ..NamespaceConfig::default()
        };
        let (mut noisy, mut quiet) = (LogQuotas::default(), LogQuotas::default());
        noisy.configure(&namespace_config(Some(1000)), &ns, &shared);
        quiet.configure(&both, &ns, &shared);
        noisy.take(2000, 1).unwrap();
        // The namespace refuses the quiet log's appends for 1 s: its own
        // records bucket must stay full meanwhile.
        for _ in 0..100 {
            assert_eq!(quiet.take(1, 1).unwrap_err().scope, "namespace");
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        quiet.take(1, 10).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_asks_for_the_longest_wait_rounded_up() {
        let ns = Namespace::new("ns").unwrap();
        let shared = NamespaceQuotas::default();
        let mut quotas = LogQuotas::default();
        quotas.configure(&config(Some(1000), Some(3)), &ns, &shared);
        // 1001 bytes and 6 records put bytes 1 ms and records 1 s past
        // their buckets: the records' wait is the answer.
        quotas.take(1001, 6).unwrap();
        let over = quotas.take(1, 1).unwrap_err();
        assert_eq!(over.unit, "records");
        assert_eq!(over.retry_after, Duration::from_secs(1));
        let partial = OverQuota {
            retry_after: Duration::from_micros(1500),
            ..over
        };
        assert_eq!(partial.retry_after_ms(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_log_keeps_its_bucket_while_its_quota_stays() {
        let ns = Namespace::new("ns").unwrap();
        let shared = NamespaceQuotas::default();
        let mut quotas = LogQuotas::default();
        quotas.configure(&config(Some(1000), None), &ns, &shared);
        quotas.take(1500, 1).unwrap();
        // Reconfigured with the same limits (another setting changed).
        quotas.configure(&config(Some(1000), None), &ns, &shared);
        assert!(
            quotas.take(100, 1).is_err(),
            "a fresh bucket after a no-op change"
        );
    }
}

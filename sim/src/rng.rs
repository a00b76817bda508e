//! The one seeded random source of a run: every fault, delay and workload
//! choice draws from it, on one thread, in an order fixed by the seed.

use std::sync::Mutex;
use std::time::Duration;

/// A seeded RNG shared by the tasks of a run.
#[derive(Debug)]
pub struct Rng(Mutex<fastrand::Rng>);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(Mutex::new(fastrand::Rng::with_seed(seed)))
    }

    fn with<T>(&self, f: impl FnOnce(&mut fastrand::Rng) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.with(|r| r.u64(0..n))
    }

    /// True with probability `p`.
    pub fn chance(&self, p: f64) -> bool {
        self.with(|r| r.f64() < p)
    }

    /// A duration in `0..max`.
    pub fn delay(&self, max: Duration) -> Duration {
        Duration::from_micros(self.below(max.as_micros() as u64))
    }

    /// An index into a slice of `len` items.
    pub fn pick(&self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
}

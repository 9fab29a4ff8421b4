//! Waits between the attempts of an optimistic (compare-and-set) write that lost a race.

use std::time::{Duration, Instant};

/// Jittered, growing waits between the attempts of one operation, within a time budget.
///
/// A writer that lost a compare-and-set race re-reads and tries again; uniform jitter
/// spreads racing writers apart so that each round has a winner instead of the same
/// collision, and the bound doubles per attempt up to a cap.
#[derive(Debug)]
pub struct Backoff {
    started: Instant,
    bound: Duration,
    budget: Duration,
}

impl Backoff {
    /// How long [`Backoff::default`] keeps trying: only writers to the same keys race, and
    /// each round has one winner, so this is reached only under sustained contention on
    /// one resource far beyond what API clients produce.
    pub const BUDGET: Duration = Duration::from_secs(10);
    /// The first wait's upper bound.
    pub const FIRST: Duration = Duration::from_micros(500);
    /// The largest wait's upper bound.
    pub const MAX: Duration = Duration::from_millis(50);

    /// A backoff that gives up after `budget`.
    pub fn with_budget(budget: Duration) -> Self {
        Backoff {
            started: Instant::now(),
            bound: Self::FIRST,
            budget,
        }
    }

    /// Waits before the next attempt; `false` (without waiting) once the budget is spent.
    pub async fn wait(&mut self) -> bool {
        if self.started.elapsed() >= self.budget {
            return false;
        }
        let micros = fastrand::u64(0..=self.bound.as_micros() as u64);
        tokio::time::sleep(Duration::from_micros(micros)).await;
        self.bound = (self.bound * 2).min(Self::MAX);
        true
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::with_budget(Self::BUDGET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_grow_within_the_cap_and_stop_at_the_budget() {
        let budget = Duration::from_millis(200);
        let mut b = Backoff::with_budget(budget);
        let started = Instant::now();
        let mut waits = 0;
        while b.wait().await {
            waits += 1;
            assert!(b.bound <= Backoff::MAX);
        }
        let took = started.elapsed();
        assert!(waits > 2, "{waits}");
        assert!(took >= budget, "{took:?}");
        // At most one wait (bounded by MAX) starts before the budget runs out.
        assert!(
            took < budget + Backoff::MAX + Duration::from_millis(100),
            "{took:?}"
        );
        assert_eq!(b.bound, Backoff::MAX);
    }
}

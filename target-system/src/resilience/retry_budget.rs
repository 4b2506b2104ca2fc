//! A retry budget (Finagle / linkerd): retries may add at most `ratio` of the requests
//! seen over the window, plus `min_per_sec` so that a quiet service can still retry.
//! When a dependency fails outright, this turns "every request tried 3 times" into
//! "20% more load", which is what keeps retries from storming.

use std::time::Duration;

use tokio::time::Instant;

use super::window::SlidingWindow;

#[derive(Debug, Clone, Copy)]
pub struct RetryBudgetConfig {
    pub ratio: f64,
    pub min_per_sec: f64,
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_sec: 10.0,
            window: Duration::from_secs(10),
        }
    }
}

const REQUESTS: usize = 0;
const RETRIES: usize = 1;

#[derive(Debug)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    window: SlidingWindow<2>,
}

impl RetryBudget {
    pub fn new(config: RetryBudgetConfig, now: Instant) -> Self {
        Self {
            config,
            window: SlidingWindow::new(config.window, 10, now),
        }
    }

    /// Records an original (first-try) request.
    pub fn deposit(&mut self, now: Instant) {
        self.window.add(now, REQUESTS, 1);
    }

    /// Takes permission for one retry; false when the budget is spent.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        let [requests, retries] = self.window.totals(now);
        let allowance = self.config.min_per_sec * self.config.window.as_secs_f64()
            + self.config.ratio * requests as f64;
        if (retries as f64) < allowance.floor() {
            self.window.add(now, RETRIES, 1);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_by_a_share_of_requests() {
        let config = RetryBudgetConfig {
            ratio: 0.2,
            min_per_sec: 0.0,
            window: Duration::from_secs(10),
        };
        let mut budget = RetryBudget::new(config, Instant::now());
        for _ in 0..100 {
            budget.deposit(Instant::now());
        }
        let granted = (0..100)
            .filter(|_| budget.try_withdraw(Instant::now()))
            .count();
        assert_eq!(granted, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_minimum_rate_lets_a_quiet_service_retry() {
        let config = RetryBudgetConfig {
            ratio: 0.2,
            min_per_sec: 1.0,
            window: Duration::from_secs(10),
        };
        let mut budget = RetryBudget::new(config, Instant::now());
        let granted = (0..50)
            .filter(|_| budget.try_withdraw(Instant::now()))
            .count();
        assert_eq!(granted, 10, "1/s over a 10 s window");
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_refills_as_the_window_slides() {
        let config = RetryBudgetConfig {
            ratio: 0.5,
            min_per_sec: 0.0,
            window: Duration::from_secs(10),
        };
        let mut budget = RetryBudget::new(config, Instant::now());
        for _ in 0..10 {
            budget.deposit(Instant::now());
        }
        assert_eq!(
            (0..10)
                .filter(|_| budget.try_withdraw(Instant::now()))
                .count(),
            5
        );
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(
            !budget.try_withdraw(Instant::now()),
            "no requests, no retries"
        );
        for _ in 0..4 {
            budget.deposit(Instant::now());
        }
        assert_eq!(
            (0..10)
                .filter(|_| budget.try_withdraw(Instant::now()))
                .count(),
            2
        );
    }
}

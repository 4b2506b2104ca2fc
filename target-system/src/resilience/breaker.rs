//! A circuit breaker with closed / open / half-open states (the resilience4j model).
//!
//! Closed: calls pass; outcomes go into a time-based sliding window. Once the window
//! holds at least `min_calls` outcomes and the failure rate reaches `failure_rate`, the
//! breaker opens. Open: calls are refused at once for `open_wait`. Half-open: up to
//! `half_open_calls` trial calls pass; one failure reopens the breaker, that many
//! successes close it.

use std::time::Duration;

use tokio::time::Instant;

use super::window::SlidingWindow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The value exported as the `shop_upstream_breaker_state` gauge.
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Share of failed calls in the window, from 0 to 1, that opens the breaker.
    pub failure_rate: f64,
    /// The breaker never opens on fewer calls than this in the window.
    pub min_calls: u64,
    pub window: Duration,
    /// How long the breaker stays open before letting trial calls through.
    pub open_wait: Duration,
    pub half_open_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            min_calls: 10,
            window: Duration::from_secs(10),
            open_wait: Duration::from_secs(5),
            half_open_calls: 3,
        }
    }
}

/// Refusal: the breaker is open (or half-open with every trial slot taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected;

const OK: usize = 0;
const FAIL: usize = 1;

#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    window: SlidingWindow<2>,
    opened_at: Instant,
    trials_started: u32,
    trials_succeeded: u32,
    /// Bumped on every transition, so outcomes of calls admitted in an earlier state
    /// (a slow call that started before the breaker opened) are not counted twice.
    generation: u64,
    transitions: u64,
}

/// Proof that a call was admitted; hand it back to [`Breaker::record`].
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct Permit {
    generation: u64,
}

impl Breaker {
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            window: SlidingWindow::new(config.window, 10, now),
            opened_at: now,
            trials_started: 0,
            trials_succeeded: 0,
            generation: 0,
            transitions: 0,
        }
    }

    /// The current state, moving from open to half-open when the wait is over.
    pub fn state(&mut self, now: Instant) -> BreakerState {
        if self.state == BreakerState::Open
            && now.saturating_duration_since(self.opened_at) >= self.config.open_wait
        {
            self.transition(BreakerState::HalfOpen, now);
        }
        self.state
    }

    /// How many state changes the breaker has made (for metrics).
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, Rejected> {
        match self.state(now) {
            BreakerState::Closed => Ok(self.permit()),
            BreakerState::Open => Err(Rejected),
            BreakerState::HalfOpen => {
                if self.trials_started < self.config.half_open_calls {
                    self.trials_started += 1;
                    Ok(self.permit())
                } else {
                    Err(Rejected)
                }
            }
        }
    }

    pub fn record(&mut self, permit: Permit, success: bool, now: Instant) {
        if permit.generation != self.generation {
            return;
        }
        match self.state(now) {
            BreakerState::Closed => {
                self.window.add(now, if success { OK } else { FAIL }, 1);
                let [ok, fail] = self.window.totals(now);
                let total = ok + fail;
                if total >= self.config.min_calls
                    && fail as f64 >= self.config.failure_rate * total as f64
                {
                    self.transition(BreakerState::Open, now);
                }
            }
            BreakerState::HalfOpen => {
                if success {
                    self.trials_succeeded += 1;
                    if self.trials_succeeded >= self.config.half_open_calls {
                        self.transition(BreakerState::Closed, now);
                    }
                } else {
                    self.transition(BreakerState::Open, now);
                }
            }
            BreakerState::Open => {}
        }
    }

    /// Hands back a permit whose call never reached the dependency (the request was
    /// refused for what the caller put in it): no outcome is recorded, and a half-open
    /// trial slot it held is free again, so callers' bad input neither opens nor closes
    /// the breaker nor holds trials hostage.
    pub fn release(&mut self, permit: Permit) {
        if permit.generation == self.generation && self.state == BreakerState::HalfOpen {
            self.trials_started = self.trials_started.saturating_sub(1);
        }
    }

    fn permit(&self) -> Permit {
        Permit {
            generation: self.generation,
        }
    }

    fn transition(&mut self, to: BreakerState, now: Instant) {
        tracing::info!(
            from = self.state.as_str(),
            to = to.as_str(),
            "circuit breaker"
        );
        self.state = to;
        self.generation += 1;
        self.transitions += 1;
        self.trials_started = 0;
        self.trials_succeeded = 0;
        match to {
            BreakerState::Open => self.opened_at = now,
            BreakerState::Closed => self.window.clear(now),
            BreakerState::HalfOpen => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig::default(), Instant::now())
    }

    fn call(b: &mut Breaker, success: bool) -> Result<(), Rejected> {
        let now = Instant::now();
        let p = b.try_acquire(now)?;
        b.record(p, success, now);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn stays_closed_below_the_minimum_number_of_calls() {
        let mut b = breaker();
        for _ in 0..9 {
            call(&mut b, false).unwrap();
        }
        assert_eq!(b.state(Instant::now()), BreakerState::Closed);
        call(&mut b, false).unwrap();
        assert_eq!(b.state(Instant::now()), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_at_the_failure_rate_and_not_below_it() {
        let mut b = breaker();
        // 6 successes, 5 failures: 45% < 50%.
        for _ in 0..6 {
            call(&mut b, true).unwrap();
        }
        for _ in 0..5 {
            call(&mut b, false).unwrap();
        }
        assert_eq!(b.state(Instant::now()), BreakerState::Closed);
        call(&mut b, false).unwrap(); // 6 of 12 = 50%
        assert_eq!(b.state(Instant::now()), BreakerState::Open);
        assert_eq!(call(&mut b, true), Err(Rejected), "open refuses at once");
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_leave_the_window() {
        let mut b = breaker();
        for _ in 0..9 {
            call(&mut b, false).unwrap();
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        call(&mut b, false).unwrap();
        assert_eq!(b.state(Instant::now()), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_after_the_wait_then_closes_on_successful_trials() {
        let mut b = breaker();
        for _ in 0..10 {
            call(&mut b, false).unwrap();
        }
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert_eq!(b.state(Instant::now()), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.state(Instant::now()), BreakerState::HalfOpen);

        // Only three trial calls are admitted at a time.
        let now = Instant::now();
        let permits: Vec<_> = (0..3).map(|_| b.try_acquire(now).unwrap()).collect();
        assert_eq!(b.try_acquire(now).map(|_| ()), Err(Rejected));
        for p in permits {
            b.record(p, true, now);
        }
        assert_eq!(b.state(now), BreakerState::Closed);
        // The window was cleared: one failure does not reopen it.
        call(&mut b, false).unwrap();
        assert_eq!(b.state(Instant::now()), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_reopens_for_another_full_wait() {
        let mut b = breaker();
        for _ in 0..10 {
            call(&mut b, false).unwrap();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        call(&mut b, false).unwrap();
        assert_eq!(b.state(Instant::now()), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(4_900)).await;
        assert_eq!(b.state(Instant::now()), BreakerState::Open);
        assert_eq!(b.transitions(), 3, "closed->open->half-open->open");
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_permit_counts_for_nothing_and_frees_its_trial() {
        let mut b = breaker();
        for _ in 0..100 {
            let p = b.try_acquire(Instant::now()).unwrap();
            b.release(p);
        }
        assert_eq!(b.state(Instant::now()), BreakerState::Closed);
        for _ in 0..10 {
            call(&mut b, false).unwrap();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        let trials: Vec<_> = (0..3).map(|_| b.try_acquire(now).unwrap()).collect();
        b.release(trials[0]);
        let again = b.try_acquire(now).expect("the released trial slot is free");
        for p in [trials[1], trials[2], again] {
            b.record(p, true, now);
        }
        assert_eq!(b.state(now), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_from_an_earlier_state_are_ignored() {
        let mut b = breaker();
        let slow = b.try_acquire(Instant::now()).unwrap();
        for _ in 0..10 {
            call(&mut b, false).unwrap();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.state(Instant::now()), BreakerState::HalfOpen);
        // The slow call admitted while closed finally fails: it must not count as a
        // failed trial.
        b.record(slow, false, Instant::now());
        assert_eq!(b.state(Instant::now()), BreakerState::HalfOpen);
    }
}

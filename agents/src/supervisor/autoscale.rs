//! The autoscaler, the design's auto-scaling group: once a second it measures each
//! autoscaled service's load (requests a second per replica, counted by the edge
//! proxies of its callers) and sets its replica count from it, the way Kubernetes'
//! HPA does: `desired = ceil(rate / target)` within `min..=max`, out at once (then not
//! again within the scale-out cooldown), in only to the largest count wanted over the
//! whole scale-in window.

use std::collections::{HashMap, VecDeque};
use std::sync::Weak;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Supervisor;
use crate::topology::Autoscale;

/// How often load is measured.
pub const TICK: Duration = Duration::from_secs(1);

/// Load within this fraction of the target changes nothing (HPA's tolerance), so
/// noise around the target does not flap the group.
const TOLERANCE: f64 = 0.1;

/// What the autoscaler last saw of one service, for the metrics and the status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AutoscaleView {
    pub service: String,
    pub min: u32,
    pub max: u32,
    /// Requests a second per replica it aims at.
    pub target: f64,
    /// Requests a second per replica, measured over the last two seconds.
    pub load: f64,
    /// The replica count the load asks for now.
    pub desired: u32,
    pub replicas: u32,
}

/// One service's measurements.
struct Group {
    service: String,
    spec: Autoscale,
    /// Each edge's request count at the last tick, by edge name; `None` before the
    /// first tick, which only takes this baseline (whatever was counted before it is
    /// not a rate).
    seen: Option<HashMap<String, u64>>,
    /// Requests a second of the last ticks (two kept).
    rates: VecDeque<f64>,
    /// Counts wanted over the scale-in window.
    wanted: VecDeque<(Instant, u32)>,
    last_change: Instant,
}

/// The replica count `rate` (requests a second, all replicas) asks for, `current`
/// replicas running: unchanged within the tolerance, else `ceil(rate / target)`,
/// always within `min..=max`.
pub fn desired(spec: &Autoscale, rate: f64, current: u32) -> u32 {
    let per_replica = rate / f64::from(current.max(1));
    let ratio = per_replica / spec.target;
    let n = if (ratio - 1.0).abs() <= TOLERANCE {
        current
    } else {
        (rate / spec.target).ceil() as u32
    };
    n.clamp(spec.min, spec.max)
}

/// What to do at `now`: the count to scale to, if any. Out as soon as more are wanted
/// and the cooldown has passed; in only when every count wanted over the whole
/// scale-in window (measured since the last change) is below `current`, to the largest.
fn decide(g: &Group, current: u32, want: u32, now: Instant) -> Option<u32> {
    if want > current {
        return (now.duration_since(g.last_change) >= g.spec.scale_out_cooldown).then_some(want);
    }
    if now.duration_since(g.last_change) < g.spec.scale_in_window {
        return None;
    }
    let most = g.wanted.iter().map(|(_, n)| *n).max().unwrap_or(current);
    (most < current).then_some(most)
}

/// Runs until `cancel`, or until the supervisor is gone.
pub(crate) async fn run(sup: Weak<Supervisor>, cancel: CancellationToken) {
    let mut groups: Vec<Group> = match sup.upgrade() {
        Some(s) => s
            .shared
            .topology
            .services
            .iter()
            .filter_map(|svc| {
                Some(Group {
                    service: svc.name.clone(),
                    spec: svc.autoscale.clone()?,
                    seen: None,
                    rates: VecDeque::new(),
                    wanted: VecDeque::new(),
                    last_change: Instant::now(),
                })
            })
            .collect(),
        None => return,
    };
    if groups.is_empty() {
        return;
    }
    // The first tick a whole period from now: the rate divides by the time since.
    let mut ticker = tokio::time::interval_at(Instant::now() + TICK, TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(sup) = sup.upgrade() else { return };
        let now = Instant::now();
        let elapsed = now.duration_since(last).as_secs_f64().max(0.001);
        last = now;
        for g in &mut groups {
            let Some(to) = measure(&sup, g, elapsed, now) else {
                continue;
            };
            if cancel.is_cancelled() {
                return;
            }
            match sup.scale(&g.service, u64::from(to), "autoscaler").await {
                Ok(_) => {
                    g.last_change = Instant::now();
                    g.wanted.clear();
                    g.rates.clear();
                }
                Err(e) => {
                    tracing::warn!(service = %g.service, error = %e, "the autoscaler cannot scale");
                    g.last_change = Instant::now();
                }
            }
        }
    }
}

/// One tick of group `g`: its load and the count it wants, recorded for the metrics;
/// the count to scale to, if any.
fn measure(sup: &Supervisor, g: &mut Group, elapsed: f64, now: Instant) -> Option<u32> {
    let current = sup.topology().service(&g.service)?.replicas;
    let mut requests = 0;
    let mut seen = HashMap::new();
    for e in sup.edges() {
        let Some(index) = e
            .server
            .strip_prefix(&g.service)
            .and_then(|r| r.strip_prefix('-'))
        else {
            continue;
        };
        if index.parse::<u32>().is_err() {
            continue;
        }
        let n = e.stats.requests.load(std::sync::atomic::Ordering::Relaxed);
        // An edge not seen before is new (a replica added): all it counted is new.
        let before = g.seen.as_ref().and_then(|s| s.get(&e.name)).copied();
        requests += n.saturating_sub(before.unwrap_or(0));
        seen.insert(e.name.clone(), n);
    }
    // The first tick only takes the baseline.
    g.seen.replace(seen)?;
    g.rates.push_back(requests as f64 / elapsed);
    while g.rates.len() > 2 {
        g.rates.pop_front();
    }
    let rate = g.rates.iter().sum::<f64>() / g.rates.len() as f64;
    let want = desired(&g.spec, rate, current);
    g.wanted.push_back((now, want));
    while g
        .wanted
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) > g.spec.scale_in_window)
    {
        g.wanted.pop_front();
    }
    sup.autoscale_views.lock().unwrap().insert(
        g.service.clone(),
        AutoscaleView {
            service: g.service.clone(),
            min: g.spec.min,
            max: g.spec.max,
            target: g.spec.target,
            load: rate / f64::from(current.max(1)),
            desired: want,
            replicas: current,
        },
    );
    decide(g, current, want, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Autoscale {
        Autoscale {
            min: 1,
            max: 6,
            target: 10.0,
            scale_in_window: Duration::from_secs(30),
            scale_out_cooldown: Duration::from_secs(3),
        }
    }

    fn group(now: Instant) -> Group {
        Group {
            service: "api".into(),
            spec: spec(),
            seen: None,
            rates: VecDeque::new(),
            wanted: VecDeque::new(),
            last_change: now,
        }
    }

    #[test]
    fn the_count_follows_the_load_within_the_bounds_and_the_tolerance() {
        let s = spec();
        assert_eq!(desired(&s, 0.0, 3), 1, "never below min");
        assert_eq!(desired(&s, 1000.0, 2), 6, "never above max");
        assert_eq!(desired(&s, 45.0, 2), 5, "ceil(45 / 10)");
        assert_eq!(
            desired(&s, 21.0, 2),
            2,
            "within 10% of the target: no change"
        );
        assert_eq!(desired(&s, 25.0, 2), 3);
        assert_eq!(
            desired(&s, 11.0, 2),
            2,
            "11 / 2 = 5.5 a replica, below target: ceil(1.1)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn out_at_once_after_the_cooldown_in_only_after_a_whole_window_of_less() {
        let start = Instant::now();
        let mut g = group(start);
        let at = |s: u64| start + Duration::from_secs(s);
        // Within the cooldown after the last change: no scale-out yet.
        assert_eq!(decide(&g, 1, 4, at(1)), None);
        assert_eq!(decide(&g, 1, 4, at(3)), Some(4));
        // Less wanted, but not for a whole window since the last change.
        g.wanted.push_back((at(5), 4));
        g.wanted.push_back((at(6), 2));
        assert_eq!(decide(&g, 4, 2, at(10)), None);
        // A whole window on: the largest count wanted in it.
        g.wanted.pop_front();
        assert_eq!(decide(&g, 4, 1, at(31)), Some(2));
        g.wanted.push_back((at(31), 4));
        assert_eq!(
            decide(&g, 4, 1, at(32)),
            None,
            "a burst in the window holds it"
        );
    }
}

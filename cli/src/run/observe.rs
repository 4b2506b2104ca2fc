//! The observer: once a second, what the agent reports (replicas, faults, the
//! topology's `[messaging]`), the broker's queues and the circuit breakers the replicas
//! of services that declare a metrics path (`metrics = "/metrics"`) expose there. The
//! runner and `faultline tui` read the latest look. With several agents, every agent is
//! looked at and the looks are merged, each replica, fault and proxy qualified with its
//! agent's name (`host-a/web-1`), which is how every view shows every host.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_agent::client::AgentClient;

use crate::fleet::Fleet;
use faultline_agent::faults::FaultInfo;
use faultline_agent::supervisor::{ReplicaState, ReplicaStatus};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::state::OutsideNow;
use crate::shop::{BREAKER_STATE, BROKER_QUEUES, QueueListing, QueueNow};

/// What one look at the system saw.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub replicas: Vec<ReplicaStatus>,
    pub faults: Vec<FaultInfo>,
    /// The queues the topology's `[messaging]` names, as the broker reports them.
    pub queues: Vec<QueueNow>,
    /// The broker service of the topology's `[messaging]`.
    pub broker: Option<String>,
    /// Per replica, its circuit breakers that are not closed: `upstream open`.
    pub breakers: BTreeMap<String, Vec<String>>,
    /// Whether any replica's metrics expose circuit breakers at all: without, the
    /// dashboard has no breaker column to show.
    pub has_breakers: bool,
    /// Proxies made at run time, then the edges to externals.
    pub outside: Vec<OutsideNow>,
    /// Every scaling the agents made (`faultline scale`, the autoscaler), oldest first.
    pub scalings: Vec<faultline_agent::supervisor::Scaled>,
}

/// The proxies to what the agent does not supervise: run-time proxies, and the edges
/// whose server is no replica (an external's).
fn outside(status: &faultline_agent::api::Status) -> Vec<OutsideNow> {
    let proxies = status.proxies.iter().map(|p| OutsideNow {
        name: p.name.clone(),
        kind: "proxy",
        upstream: p.upstream.clone(),
        enabled: p.enabled,
    });
    let externals = status
        .edges
        .iter()
        .filter(|e| !status.replicas.iter().any(|r| r.name == e.server))
        .map(|e| OutsideNow {
            name: e.name.clone(),
            kind: "external",
            upstream: e.target.clone(),
            enabled: true,
        });
    proxies.chain(externals).collect()
}

/// The breakers of one replica that are not closed, from its metrics at `path`; and
/// whether it exposes breakers at all.
async fn breakers(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    path: &str,
) -> (bool, Vec<String>) {
    let Ok(resp) = http
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_millis(500))
        .send()
        .await
    else {
        return (false, Vec::new());
    };
    let Ok(text) = resp.text().await else {
        return (false, Vec::new());
    };
    let Ok(scrape) = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))) else {
        return (false, Vec::new());
    };
    let series: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == BREAKER_STATE)
        .collect();
    let open = series
        .iter()
        .filter_map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let upstream = s.labels.get("upstream").unwrap_or("?");
            match v as u8 {
                1 => Some(format!("{upstream} open")),
                2 => Some(format!("{upstream} half-open")),
                _ => None,
            }
        })
        .collect();
    (!series.is_empty(), open)
}

/// The broker's figures for the queues `names`; empty when it does not answer.
async fn queues(
    http: &reqwest::Client,
    broker: std::net::SocketAddr,
    names: &BTreeSet<&str>,
) -> Vec<QueueNow> {
    let listing = match http
        .get(format!("http://{broker}{BROKER_QUEUES}"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
    {
        Ok(r) => r.json::<QueueListing>().await.unwrap_or_default(),
        Err(_) => QueueListing::default(),
    };
    listing
        .queues
        .into_iter()
        .filter(|q| names.contains(q.name.as_str()))
        .collect()
}

/// One look at the system: the agent's status, the queues of the topology's broker
/// (when it has one) and the breakers of every healthy replica. `None` when the agent
/// does not answer.
pub async fn observe_once(client: &AgentClient, http: &reqwest::Client) -> Option<Observed> {
    let status = client.status().await.ok()?;
    let messaging = status.messaging.as_ref();
    let broker = messaging.and_then(|m| {
        status
            .replicas
            .iter()
            .find(|r| r.service == m.broker)
            .map(|r| r.addr)
    });
    let queues = match (broker, messaging) {
        (Some(addr), Some(m)) => {
            queues(http, addr, &m.queues.keys().map(String::as_str).collect()).await
        }
        _ => Vec::new(),
    };
    // Only services that declare a metrics path are scraped: a user's nginx has no
    // `/metrics`, and must not see requests for one.
    let scrapes = status
        .replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Healthy)
        .filter_map(|r| Some((r, status.metrics.get(&r.service)?)))
        .map(|(r, path)| async move { (r.name.clone(), breakers(http, r.addr, path).await) });
    let scraped = futures::future::join_all(scrapes).await;
    let has_breakers = scraped.iter().any(|(_, (has, _))| *has);
    let breakers = scraped
        .into_iter()
        .filter(|(_, (_, b))| !b.is_empty())
        .map(|(name, (_, b))| (name, b))
        .collect();
    Some(Observed {
        outside: outside(&status),
        scalings: status.scalings,
        broker: messaging.map(|m| m.broker.clone()),
        replicas: status.replicas,
        faults: status.faults,
        queues,
        breakers,
        has_breakers,
    })
}

/// One look at every agent of `fleet`, merged; agents that do not answer are left out,
/// `None` when none answers. With one agent, that agent's look as it is.
pub async fn observe_fleet(fleet: &Fleet, http: &reqwest::Client) -> Option<Observed> {
    if !fleet.is_several() {
        return observe_once(fleet.first()?, http).await;
    }
    let looks =
        futures::future::join_all(fleet.members.iter().map(|m| observe_once(&m.client, http)))
            .await;
    let mut merged: Option<Observed> = None;
    for (i, look) in looks.into_iter().enumerate() {
        let Some(mut o) = look else { continue };
        let q = |s: &str| fleet.qualify(i, s);
        for r in &mut o.replicas {
            r.name = q(&r.name);
        }
        for f in &mut o.faults {
            f.id = q(&f.id);
            f.target = q(&f.target);
        }
        for x in &mut o.outside {
            x.name = q(&x.name);
        }
        for s in &mut o.scalings {
            s.service = q(&s.service);
        }
        o.breakers = o.breakers.into_iter().map(|(k, v)| (q(&k), v)).collect();
        match &mut merged {
            None => merged = Some(o),
            Some(m) => {
                m.replicas.extend(o.replicas);
                m.faults.extend(o.faults);
                m.queues.extend(o.queues);
                m.breakers.extend(o.breakers);
                m.has_breakers |= o.has_breakers;
                m.outside.extend(o.outside);
                m.scalings.extend(o.scalings);
                if m.broker.is_none() {
                    m.broker = o.broker.map(|b| q(&b));
                }
            }
        }
    }
    merged
}

/// Looks at the system every second until dropped or stopped; [`Observer::latest`] is
/// the last look (a broker that did not answer keeps its last figures).
pub struct Observer {
    latest: Arc<Mutex<Observed>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Observer {
    /// An observer of `client`'s system, or of nothing (no agent: nothing to see).
    pub fn spawn(client: Option<AgentClient>, http: reqwest::Client) -> Observer {
        let latest = Arc::new(Mutex::new(Observed::default()));
        let stop = CancellationToken::new();
        let task =
            client.map(|c| tokio::spawn(watch(Fleet::one(c), http, latest.clone(), stop.clone())));
        Observer { latest, stop, task }
    }

    /// An observer of every agent of `fleet` (of nothing when it is empty).
    pub fn spawn_fleet(fleet: Fleet, http: reqwest::Client) -> Observer {
        let latest = Arc::new(Mutex::new(Observed::default()));
        let stop = CancellationToken::new();
        let task = (!fleet.is_empty())
            .then(|| tokio::spawn(watch(fleet, http, latest.clone(), stop.clone())));
        Observer { latest, stop, task }
    }

    pub fn latest(&self) -> Observed {
        self.latest.lock().unwrap().clone()
    }

    /// Stops looking and waits for the last look to end.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn watch(
    fleet: Fleet,
    http: reqwest::Client,
    into: Arc<Mutex<Observed>>,
    stop: CancellationToken,
) {
    loop {
        let look = tokio::select! {
            _ = stop.cancelled() => return,
            o = observe_fleet(&fleet, &http) => o,
        };
        if let Some(o) = look {
            let mut into = into.lock().unwrap();
            if o.queues.is_empty() && !into.queues.is_empty() {
                *into = Observed {
                    queues: std::mem::take(&mut into.queues),
                    ..o
                };
            } else {
                *into = o;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

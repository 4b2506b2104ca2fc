//! Checks that hold for any topology, and when they run: before the load the
//! steady-state probes and the `[[checks.http]]` and `[[checks.command]]` of `when =
//! "before"` or `"both"` (a failure stops the run before any load); after it the queues
//! of the topology's `[messaging]` drain (bounded), the shop's invariants when asked
//! ([`crate::shop::invariants`]), the steady-state probes and the generic checks again,
//! each allowed to retry for its `within`. Services are found through the agent's
//! status, so they work the same for an embedded or a standalone agent. How one HTTP
//! check and one command check are carried out is in [`super::check_http`] and
//! [`super::check_command`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use faultline_agent::api::Status;
use faultline_agent::client::{AgentClient, ClientError};
use faultline_agent::supervisor::ReplicaState;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::target::Target;
use super::{check_command, check_http};
use crate::experiment::{CommandCheck, Experiment, Probe, When};
use crate::shop::invariants;
use crate::shop::{BROKER_QUEUES, QueueListing};

/// One check's verdict, as the reports show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    /// What was found, in words.
    pub detail: String,
    /// `before` or `after` the load (absent for checks that only run after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Seconds it took, every attempt included.
    #[serde(default)]
    pub duration_s: f64,
    /// How many times it was tried (a check after the run may retry for its `within`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// On failure: what was expected, and what came instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    /// A command check's last output: the tails of its standard output and error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl CheckResult {
    pub fn new(name: String, passed: bool, detail: String) -> Self {
        CheckResult {
            name,
            passed,
            detail,
            ..CheckResult::default()
        }
    }
}

/// Why a look at the system's endpoints found nothing to judge.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Agent(#[from] ClientError),
    #[error("the topology has no `{0}` service")]
    NoService(String),
    #[error("the topology has no [messaging] table naming its broker")]
    NoBroker,
    #[error("{url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("{url}: {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("{url}: {source}")]
    Body { url: String, source: reqwest::Error },
}

/// `http://ADDR` of a live replica of `service` (any replica when none is live).
pub fn replica_url(status: &Status, service: &str) -> Result<String, AuditError> {
    status
        .replicas
        .iter()
        .filter(|r| r.service == service)
        .find(|r| r.state == ReplicaState::Healthy)
        .or_else(|| status.replicas.iter().find(|r| r.service == service))
        .map(|r| format!("http://{}", r.addr))
        .ok_or_else(|| AuditError::NoService(service.to_owned()))
}

/// `http://ADDR` of the topology's broker, and the queues the topology names.
pub fn broker_url(status: &Status) -> Result<(String, BTreeSet<&str>), AuditError> {
    let m = status.messaging.as_ref().ok_or(AuditError::NoBroker)?;
    let queues = m.queues.keys().map(String::as_str).collect();
    Ok((replica_url(status, &m.broker)?, queues))
}

/// `GET url` as JSON of type `T`; a non-2xx answer is an error.
pub async fn get_json<T: DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
) -> Result<T, AuditError> {
    let resp = match http.get(&url).send().await {
        Ok(r) => r,
        Err(source) => return Err(AuditError::Unreachable { url, source }),
    };
    if !resp.status().is_success() {
        let status = resp.status();
        return Err(AuditError::Status { url, status });
    }
    resp.json()
        .await
        .map_err(|source| AuditError::Body { url, source })
}

/// The topology's queues that still hold messages (visible, in flight or delayed).
async fn busy_queues(
    client: &AgentClient,
    http: &reqwest::Client,
) -> Result<Vec<String>, AuditError> {
    let status = client.status().await?;
    let (broker, queues) = broker_url(&status)?;
    let listing: QueueListing = get_json(http, format!("{broker}{BROKER_QUEUES}")).await?;
    Ok(listing
        .queues
        .iter()
        .filter(|q| queues.contains(q.name.as_str()))
        .filter_map(|q| {
            let n = q.visible + q.in_flight + q.delayed;
            (n > 0).then(|| format!("{} holds {n}", q.name))
        })
        .collect())
}

/// Waits until every queue of the topology's `[messaging]` is empty (nothing visible,
/// in flight or delayed), or `timeout` passes.
pub async fn drain(client: &AgentClient, http: &reqwest::Client, timeout: Duration) -> CheckResult {
    let start = Instant::now();
    let name = "queues drained".to_owned();
    loop {
        let last = match busy_queues(client, http).await {
            Ok(busy) if busy.is_empty() => {
                let detail = format!(
                    "every queue empty after {:.1} s",
                    start.elapsed().as_secs_f64()
                );
                return CheckResult {
                    duration_s: start.elapsed().as_secs_f64(),
                    ..CheckResult::new(name, true, detail)
                };
            }
            Ok(busy) => busy.join(", "),
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= timeout {
            let detail = format!(
                "not drained within {}: {last}",
                humantime::format_duration(timeout)
            );
            return CheckResult {
                duration_s: start.elapsed().as_secs_f64(),
                ..CheckResult::new(name, false, detail)
            };
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A steady-state probe: `GET base+path` answers `status`.
pub async fn probe(http: &reqwest::Client, base: &str, p: &Probe, when: &str) -> CheckResult {
    let url = format!("{base}{}", p.path);
    let start = Instant::now();
    let (passed, detail, found) = match http.get(&url).send().await {
        Ok(r) if r.status().as_u16() == p.status => {
            (true, format!("{} as expected", p.status), None)
        }
        Ok(r) => (
            false,
            format!("answered {}, expected {}", r.status(), p.status),
            Some(format!("status {}", r.status().as_u16())),
        ),
        Err(e) => (
            false,
            format!("no answer: {e}"),
            Some(format!("no answer: {e}")),
        ),
    };
    CheckResult {
        when: Some(when.to_owned()),
        duration_s: start.elapsed().as_secs_f64(),
        attempts: 1,
        expected: (!passed).then(|| format!("status {}", p.status)),
        found,
        ..CheckResult::new(
            format!("steady state {when}: GET {}", p.path),
            passed,
            detail,
        )
    }
}

/// The steady-state probes after the run: each may take up to `settle` to pass (the
/// system may need a moment once the faults heal).
pub async fn steady_state_after(
    http: &reqwest::Client,
    base: &str,
    probes: &[Probe],
    settle: Duration,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for p in probes {
        let start = Instant::now();
        let deadline = start + settle;
        let mut attempts = 0;
        let mut c = loop {
            attempts += 1;
            let c = probe(http, base, p, "after").await;
            if c.passed || Instant::now() >= deadline {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        c.attempts = attempts;
        c.duration_s = start.elapsed().as_secs_f64();
        out.push(c);
    }
    out
}

/// What a command check finds in its environment: the run's addresses.
///
/// - `FAULTLINE_ENTRYPOINT`: the base URL the load goes to (`http://127.0.0.1:PORT`);
/// - `FAULTLINE_AGENT`: the agent's control API, when the run has an agent (so
///   `faultline status` in a check talks to it);
/// - `FAULTLINE_RUN_DIR`: the agent's run directory (logs, data);
/// - `FAULTLINE_SERVICE_<NAME>`: the `host:port` of every replica of service NAME,
///   comma-separated in replica order, NAME in capitals with every character other than
///   a letter or digit made `_` (`store-primary`: `FAULTLINE_SERVICE_STORE_PRIMARY`).
pub async fn environment(target: &Target) -> Vec<(String, String)> {
    let mut env = vec![("FAULTLINE_ENTRYPOINT".to_owned(), target.base.clone())];
    let Some(agent) = &target.agent else {
        return env;
    };
    env.push(("FAULTLINE_AGENT".into(), agent.url().to_owned()));
    if let Ok(status) = agent.status().await {
        env.push(("FAULTLINE_RUN_DIR".into(), status.run_dir.clone()));
        env.extend(service_variables(&status));
    }
    env
}

/// `FAULTLINE_SERVICE_<NAME>` for every service of `status`, in the order of its
/// replicas.
pub fn service_variables(status: &Status) -> Vec<(String, String)> {
    let mut by_service: Vec<(String, Vec<String>)> = Vec::new();
    for r in &status.replicas {
        match by_service.iter_mut().find(|(s, _)| *s == r.service) {
            Some((_, addrs)) => addrs.push(r.addr.to_string()),
            None => by_service.push((r.service.clone(), vec![r.addr.to_string()])),
        }
    }
    by_service
        .into_iter()
        .map(|(s, addrs)| (service_variable(&s), addrs.join(",")))
        .collect()
}

/// `FAULTLINE_SERVICE_` and the service's name in capitals, `_` for anything but a
/// letter or a digit.
pub fn service_variable(service: &str) -> String {
    let name: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("FAULTLINE_SERVICE_{name}")
}

/// One attempt of a check: what it found when it passed, or what it expected and found.
pub type Attempt = Result<String, Miss>;

/// What a failed attempt expected and what came.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Miss {
    pub expected: String,
    pub found: String,
}

/// Tries `attempt` until it passes or `within` has passed (once when `within` is zero),
/// then the verdict as a report row.
async fn retried<F, Fut>(name: &str, when: &str, within: Duration, mut attempt: F) -> CheckResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (Attempt, Option<String>, Option<String>)>,
{
    let start = Instant::now();
    let deadline = start + within;
    let mut attempts = 0;
    let (last, stdout, stderr) = loop {
        attempts += 1;
        let (a, out, err) = attempt().await;
        let now = Instant::now();
        if a.is_ok() || now >= deadline {
            break (a, out, err);
        }
        tokio::time::sleep(RETRY_EVERY.min(deadline - now)).await;
    };
    let base = CheckResult {
        when: Some(when.to_owned()),
        duration_s: start.elapsed().as_secs_f64(),
        attempts,
        stdout,
        stderr,
        ..CheckResult::default()
    };
    let tries = if attempts > 1 {
        format!(
            " (after {attempts} attempts in {})",
            humantime::format_duration(round(start.elapsed()))
        )
    } else {
        String::new()
    };
    match last {
        Ok(detail) => CheckResult {
            name: name.to_owned(),
            passed: true,
            detail: format!("{detail}{tries}"),
            ..base
        },
        Err(miss) => CheckResult {
            name: name.to_owned(),
            passed: false,
            detail: format!("expected {}, found {}{tries}", miss.expected, miss.found),
            expected: Some(miss.expected),
            found: Some(miss.found),
            ..base
        },
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}

/// How long a retried check waits between attempts.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// The experiment's HTTP and command checks of one side of the load (`before` or
/// `after`); before it each is tried once, after it each may retry for its `within`.
pub async fn generic(
    exp: &Experiment,
    target: &Target,
    http: &reqwest::Client,
    before: bool,
) -> Vec<CheckResult> {
    let when = if before { "before" } else { "after" };
    let applies = |w: When| if before { w.before() } else { w.after() };
    let mut out = Vec::new();
    for c in exp.checks.http.iter().filter(|c| applies(c.when)) {
        let within = if before { Duration::ZERO } else { c.within };
        let attempt = || async { (check_http::attempt(http, &target.base, c).await, None, None) };
        out.push(retried(&c.name, when, within, attempt).await);
    }
    let commands: Vec<&CommandCheck> = exp
        .checks
        .command
        .iter()
        .filter(|c| applies(c.when))
        .collect();
    if commands.is_empty() {
        return out;
    }
    let env = environment(target).await;
    for c in commands {
        let within = if before { Duration::ZERO } else { c.within };
        let attempt = || async {
            let ran = check_command::run(c, &env).await;
            (ran.verdict, ran.stdout, ran.stderr)
        };
        out.push(retried(&c.name, when, within, attempt).await);
    }
    out
}

/// The checks before the load: the steady-state probes, then the HTTP and command
/// checks of `when = "before"` or `"both"`. Any failure stops the run before the load.
pub async fn before(exp: &Experiment, target: &Target, http: &reqwest::Client) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for p in &exp.steady_state {
        out.push(probe(http, &target.base, p, "before").await);
    }
    out.extend(generic(exp, target, http, true).await);
    out
}

/// The checks after the load: the queues drain and the shop's invariants hold (when the
/// experiment asks for them and there is an agent to find the services through), then
/// the steady-state probes pass (the system may need a moment to settle), then the HTTP
/// and command checks of `when = "after"` or `"both"`. `history` is what the load
/// engine recorded: the shop's acknowledged orders among it.
pub async fn after(
    exp: &Experiment,
    target: &Target,
    http: &reqwest::Client,
    history: &BTreeMap<String, Vec<String>>,
    quiet: bool,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    if let (true, Some(client)) = (exp.checks.invariants, &target.agent) {
        if !quiet {
            eprintln!(
                "draining the queues (at most {})...",
                humantime::format_duration(exp.checks.drain_timeout)
            );
        }
        out.push(drain(client, http, exp.checks.drain_timeout).await);
        let acknowledged: BTreeSet<String> = history
            .get(invariants::ACKNOWLEDGED)
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default();
        let start = Instant::now();
        let found = invariants::settle(client, http, &acknowledged, SETTLE).await;
        let took = start.elapsed().as_secs_f64();
        out.extend(invariants::checks(found).into_iter().map(|c| CheckResult {
            duration_s: took,
            ..c
        }));
    }
    out.extend(steady_state_after(http, &target.base, &exp.steady_state, SETTLE).await);
    out.extend(generic(exp, target, http, false).await);
    out
}

/// How long the invariants and the steady state may take to hold once the load ends.
const SETTLE: Duration = Duration::from_secs(10);

//! `faultline load URL`: ad-hoc load against one URL, like oha: open model with `-r`
//! (a rate, latency from the intended send time), closed model with `-c` alone; a text
//! summary or `--json`.

use std::time::Duration;

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Uri};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::exit::Exit;
use crate::experiment::Slo;
use crate::limits::{self, MAX_COUNT, MAX_DURATION, MAX_IN_FLIGHT, MAX_RATE, MAX_USERS};
use crate::load::client::{Endpoint, Req};
use crate::load::distributed::{self, Plan, WorkerTotals, Workers};
use crate::load::schedule::{self, Schedule};
use crate::load::stats::{ErrorKind, Percentiles};
use crate::load::{LoadSpec, Model, Snapshot, Summary, Work};
use crate::run::collect::Collector;
use crate::run::progress::Progress;
use crate::run::state::{RunState, Stage};
use crate::slo::{self, BudgetLeft, Evaluation, Objective, Windows};

/// A duration flag, at most [`MAX_DURATION`].
pub fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write durations like 500ms, 10s, 1m)"))?;
    if d > MAX_DURATION {
        return Err(format!("must be at most {}", limits::human(MAX_DURATION)));
    }
    Ok(d)
}

/// Load one URL: open model with `-r` (requests a second, whatever the server does),
/// closed model without (`-c` users one request after another).
///
/// Examples:
///   faultline load http://127.0.0.1:8080/api/v1/products/1 -r 2000 -d 30s
///   faultline load http://127.0.0.1:8080/api/v1/products/1 -c 64 -n 100000 --json
///   faultline load http://127.0.0.1:8080/api/v1/auth/login -m POST \
///     -H 'content-type: application/json' -b '{"username":"user1","password":"pass1"}'
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The URL (http only).
    pub url: String,
    /// Requests a second (open model). Without it, the closed model runs `-c` users.
    #[arg(short = 'r', long)]
    pub rate: Option<f64>,
    /// Open model: rise from 0 to the rate over this long first (then hold it).
    #[arg(long, value_parser = duration, requires = "rate")]
    pub ramp: Option<Duration>,
    /// Connections (open model) or users (closed model).
    #[arg(short = 'c', long, default_value_t = 50)]
    pub connections: usize,
    /// How long to run (default 10s unless -n is given; not with -n).
    #[arg(short = 'd', long, value_parser = duration, conflicts_with = "count")]
    pub duration: Option<Duration>,
    /// How many requests to send.
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,
    /// A header, `name: value`. Repeatable.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// The request body.
    #[arg(short = 'b', long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// The request body, from a file.
    #[arg(long)]
    pub body_file: Option<std::path::PathBuf>,
    /// Longest wait for one answer.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub timeout: Duration,
    /// Open model: requests waiting or running at most; further ones are dropped and
    /// counted.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// An objective the run must meet, like k6's thresholds: `availability>=99.9` or
    /// `latency<200ms>=99`. Repeatable. A missed objective makes the exit code 1.
    #[arg(long = "slo")]
    pub slos: Vec<Objective>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Show the live dashboard while the load runs (q stops it early).
    #[arg(long)]
    pub tui: bool,
    /// Spread the load over these load workers (`faultline worker`), worker i of N
    /// taking every N-th request (open model) or user (closed model); their results
    /// are merged exactly and judged once.
    #[arg(long, value_name = "URL,URL", value_delimiter = ',', value_parser = worker_url)]
    pub workers: Vec<String>,
    /// Bearer token of the load workers.
    #[arg(long, value_name = "TOKEN", env = crate::cmd::worker::TOKEN_ENV, hide_env_values = true)]
    pub worker_token: Option<String>,
    /// How long to wait for every load worker to answer before the load starts.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub workers_wait: Duration,
    /// Where the load's own Prometheus `/metrics` listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub metrics_listen: std::net::SocketAddr,
}

fn worker_url(s: &str) -> Result<String, String> {
    crate::experiment::worker_url(s)
}

/// Every number within its limit (durations are bounded as they are parsed).
fn check_limits(a: &Args) -> anyhow::Result<()> {
    if let Some(r) = a.rate
        && r > MAX_RATE
    {
        bail!(
            "{}",
            limits::too_high(
                "-r",
                format!("{} requests a second", limits::number(MAX_RATE)),
                limits::number(r)
            )
        );
    }
    if a.connections > MAX_USERS {
        bail!("{}", limits::too_high("-c", MAX_USERS, a.connections));
    }
    if a.max_in_flight > MAX_IN_FLIGHT {
        bail!(
            "{}",
            limits::too_high("--max-in-flight", MAX_IN_FLIGHT, a.max_in_flight)
        );
    }
    if let Some(n) = a.count.filter(|n| *n > MAX_COUNT) {
        bail!("{}", limits::too_high("-n", MAX_COUNT, n));
    }
    Ok(())
}

/// The spec the arguments describe.
pub async fn spec(a: &Args) -> anyhow::Result<LoadSpec> {
    check_limits(a)?;
    let uri: Uri = a
        .url
        .parse()
        .with_context(|| format!("`{}` is not a URL (write http://HOST:PORT/PATH)", a.url))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => bail!("`{}`: only http is supported, not {other}", a.url),
        None => bail!("`{}` needs a scheme: http://HOST:PORT/PATH", a.url),
    }
    let host = uri.host().context("the URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let authority = format!("{host}:{port}");
    let addr = tokio::net::lookup_host(&authority)
        .await
        .with_context(|| format!("cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to no address"))?;
    let method: Method = a
        .method
        .to_uppercase()
        .parse()
        .map_err(|_| anyhow::anyhow!("`{}` is not an HTTP method", a.method))?;
    let mut headers = HeaderMap::new();
    for h in &a.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("header `{h}` must be `name: value`"))?;
        let name: HeaderName = name
            .trim()
            .parse()
            .with_context(|| format!("`{}` is not a header name", name.trim()))?;
        let value: HeaderValue = value
            .trim()
            .parse()
            .with_context(|| format!("header `{h}` has a bad value"))?;
        headers.append(name, value);
    }
    let body = match (&a.body, &a.body_file) {
        (Some(b), _) => Bytes::from(b.clone()),
        (None, Some(f)) => {
            Bytes::from(std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?)
        }
        (None, None) => Bytes::new(),
    };
    if a.connections == 0 {
        bail!("-c must be at least 1");
    }
    let endpoint = Endpoint {
        addr,
        authority,
        timeout: a.timeout,
    };
    let req = Req {
        path_and_query: uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.to_string()),
        method,
        headers,
        body,
    };
    Ok(LoadSpec {
        endpoint,
        work: Work::Fixed(req),
        model: model(a)?,
        connections: a.connections,
        count: a.count,
        segment: crate::load::segment::Segment::WHOLE,
    })
}

/// The open model with `-r`, else the closed one.
fn model(a: &Args) -> anyhow::Result<Model> {
    Ok(match a.rate {
        Some(r) if !(r > 0.0 && r.is_finite()) => bail!("-r must be a positive rate, not {r}"),
        Some(rate) => {
            let duration = match (a.duration, a.count) {
                (Some(d), _) => d,
                (None, Some(n)) => {
                    let secs = n as f64 / rate;
                    // The rate is above zero and finite, so `secs` is a number (maybe
                    // infinite), never NaN.
                    if secs > MAX_DURATION.as_secs_f64() {
                        bail!(
                            "-n {n} at -r {} a second would run longer than {}: send fewer or faster",
                            limits::number(rate),
                            limits::human(MAX_DURATION)
                        );
                    }
                    Duration::from_secs_f64(secs)
                }
                (None, None) => Duration::from_secs(10),
            };
            let schedule = match a.ramp {
                None => Schedule::constant(rate, duration),
                Some(ramp) if ramp > duration => bail!(
                    "--ramp {} is longer than the run",
                    humantime::format_duration(ramp)
                ),
                Some(ramp) => Schedule::ramping(
                    0.0,
                    vec![
                        schedule::Stage {
                            duration: ramp,
                            target: rate,
                        },
                        schedule::Stage {
                            duration: duration - ramp,
                            target: rate,
                        },
                    ],
                ),
            };
            Model::Open {
                schedule,
                max_in_flight: a.max_in_flight,
            }
        }
        None => Model::Closed {
            users: a.connections,
            duration: a.duration.or(if a.count.is_none() {
                Some(Duration::from_secs(10))
            } else {
                None
            }),
            think: Duration::ZERO,
        },
    })
}

/// What `faultline load --json` prints: the run's figures and its objectives' verdicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub requests: u64,
    pub duration_s: f64,
    /// Every answer and every request without one, a second.
    pub requests_per_s: f64,
    /// 2xx and 3xx answers a second.
    pub ok_per_s: f64,
    /// The availability SLI's good share: answers below 500 (a 4xx is the client's
    /// fault).
    pub success_ratio: f64,
    pub dropped: u64,
    /// Open model: sends that found every connection busy and waited for one (the
    /// target made them late, not the generator).
    pub queued: u64,
    pub statuses: BTreeMap<String, u64>,
    pub errors: BTreeMap<ErrorKind, u64>,
    pub bytes: u64,
    pub latency_ms: Percentiles,
    pub service_time_ms: Percentiles,
    pub scheduler_lag_ms: Percentiles,
    pub slos: Vec<Evaluation>,
    /// What each load worker made (empty when this process made the load).
    pub workers: Vec<WorkerTotals>,
}

impl LoadReport {
    pub fn of(s: &Summary, slos: &[Evaluation]) -> Self {
        let secs = s.elapsed.as_secs_f64();
        let requests = s.stats.requests();
        let ok: u64 = s
            .stats
            .statuses
            .iter()
            .filter(|(c, _)| (200..400).contains(*c))
            .map(|(_, n)| n)
            .sum();
        let good = slo::good_answers(&s.stats);
        LoadReport {
            requests,
            duration_s: secs,
            requests_per_s: requests as f64 / secs,
            ok_per_s: ok as f64 / secs,
            success_ratio: if requests == 0 {
                0.0
            } else {
                good as f64 / requests as f64
            },
            dropped: s.dropped,
            queued: s.queued,
            statuses: s
                .stats
                .statuses
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            errors: s.stats.errors.clone(),
            bytes: s.stats.bytes,
            latency_ms: Percentiles::of(&s.stats.latency),
            service_time_ms: Percentiles::of(&s.stats.service),
            scheduler_lag_ms: Percentiles::of(&s.stats.lag),
            slos: slos.to_vec(),
            workers: s.workers.clone(),
        }
    }

    /// Pretty JSON, keys in alphabetical order at every level.
    pub fn json(&self) -> String {
        let value = serde_json::to_value(self).expect("load reports serialise");
        serde_json::to_string_pretty(&value).expect("JSON values serialise")
    }
}

fn slo_text(e: &[Evaluation]) -> String {
    if e.is_empty() {
        return String::new();
    }
    let mut out = String::from("objectives (burn-rate windows {w})\n");
    let windows = format!("{}s/{}s", e[0].windows.short_s, e[0].windows.long_s);
    out = out.replace("{w}", &windows);
    for ev in e {
        out.push_str(&format!(
            "  {:<24} {:<4} SLI {:>9}  objective {:>8}  budget left {:>7}  max burn short {:>6.1}x long {:>6.1}x\n",
            ev.name,
            if ev.met { "MET" } else { "MISS" },
            ev.sli.map_or("-".to_owned(), |s| format!("{:.4}%", s * 100.0)),
            format!("{}%", ev.objective * 100.0),
            BudgetLeft(ev.budget_remaining),
            ev.max_short_burn,
            ev.max_long_burn
        ));
    }
    out
}

fn line(label: &str, p: &Percentiles) -> String {
    format!(
        "  {label:<44} p50 {:>8.2}  p90 {:>8.2}  p99 {:>8.2}  p99.9 {:>8.2}  max {:>8.2}  ms",
        p.p50, p.p90, p.p99, p.p999, p.max
    )
}

pub fn summary_text(s: &Summary, open: bool, connections: usize) -> String {
    let secs = s.elapsed.as_secs_f64();
    let requests = s.stats.requests();
    let mut out = String::new();
    out.push_str(&format!(
        "requests   {requests} in {secs:.2} s: {:.1}/s{}\n",
        requests as f64 / secs,
        if open {
            format!(", {} dropped (in-flight bound reached)", s.dropped)
        } else {
            String::new()
        }
    ));
    if !s.workers.is_empty() {
        out.push_str(&format!("workers    {}, merged\n", s.workers.len()));
        for w in &s.workers {
            out.push_str(&format!(
                "  {:<5} {:<32} {} requests, {} errors{}\n",
                w.segment,
                w.url,
                w.requests,
                w.errors,
                if open {
                    format!(", {} dropped", w.dropped)
                } else {
                    String::new()
                }
            ));
        }
    }
    let statuses: Vec<String> = s
        .stats
        .statuses
        .iter()
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    out.push_str(&format!(
        "statuses   {}\n",
        if statuses.is_empty() {
            "none".into()
        } else {
            statuses.join(", ")
        }
    ));
    let errors: Vec<String> = s
        .stats
        .errors
        .iter()
        .map(|(k, n)| {
            format!(
                "{}: {n}",
                serde_json::to_value(k).unwrap().as_str().unwrap()
            )
        })
        .collect();
    out.push_str(&format!(
        "errors     {}\n",
        if errors.is_empty() {
            "none".into()
        } else {
            errors.join(", ")
        }
    ));
    out.push_str("latency\n");
    if open {
        out.push_str(&line(
            "from the intended send (no coordinated omission)",
            &Percentiles::of(&s.stats.latency),
        ));
        out.push('\n');
        out.push_str(&line(
            "from the actual send",
            &Percentiles::of(&s.stats.service),
        ));
        out.push('\n');
        out.push_str(&line(
            "scheduler lag (waiting for a free connection or the generator)",
            &Percentiles::of(&s.stats.lag),
        ));
        out.push('\n');
        if let Some(note) = lag_note(s, connections) {
            out.push_str(&note);
            out.push('\n');
        }
    } else {
        out.push_str(&line("per request", &Percentiles::of(&s.stats.latency)));
        out.push('\n');
    }
    out
}

/// Who made requests wait to be sent, when they waited: the target, when sends found
/// every connection busy with it, else the generator.
fn lag_note(s: &Summary, connections: usize) -> Option<String> {
    let p99 = s.stats.lag.value_at_quantile(0.99) as f64 / 1000.0;
    if p99 < 1.0 {
        return None;
    }
    let requests = s.stats.requests().max(1);
    let share = s.queued as f64 / requests as f64 * 100.0;
    Some(if s.queued * 100 >= requests {
        format!(
            "note: requests waited up to {p99:.1} ms (p99) to be sent; {share:.0}% of them found all {connections} connections busy waiting on the target: the target is the limit at this concurrency (raise -c to hold the rate, or lower -r)"
        )
    } else {
        format!(
            "note: requests waited up to {p99:.1} ms (p99) to be sent while connections were free: the generator could not keep up (lower -r, or give it more CPU)"
        )
    })
}

/// Why a run in which no request succeeded failed, from what its requests met.
fn nothing_succeeded(s: &Summary, url: &str) -> String {
    let requests = s.stats.requests();
    if requests == 0 {
        return "no request succeeded: none was sent".to_owned();
    }
    let mut met: Vec<String> = s
        .stats
        .errors
        .iter()
        .map(|(k, n)| format!("{n} {}", serde_json::to_value(k).unwrap().as_str().unwrap()))
        .collect();
    met.extend(
        s.stats
            .statuses
            .iter()
            .map(|(c, n)| format!("{n} answered {c}")),
    );
    let top = s
        .stats
        .errors
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(k, _)| *k);
    let why = match top {
        Some(crate::load::stats::ErrorKind::Connect) => {
            format!("; is anything listening at {url}?")
        }
        Some(crate::load::stats::ErrorKind::Timeout) => {
            "; the target did not answer within --timeout".to_owned()
        }
        _ if s.stats.errors.is_empty() => {
            "; the target answered only with server errors".to_owned()
        }
        _ => String::new(),
    };
    format!(
        "no request succeeded: of {requests}, {}{why}",
        met.join(", ")
    )
}

pub fn run_cmd(args: Args) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(load(args))
}

/// The state `--tui` starts from.
fn initial_state(args: &Args, planned: Duration) -> RunState {
    RunState {
        experiment: format!("load {}", args.url),
        target: args.url.clone(),
        stage: Stage::Running,
        duration_s: planned.as_secs_f64(),
        target_rate: args.rate,
        phase: "load".into(),
        ..Default::default()
    }
}

async fn load(args: Args) -> anyhow::Result<Exit> {
    let spec = match spec(&args).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Exit::BadInput);
        }
    };
    let open = matches!(spec.model, Model::Open { .. });
    // The planned length when there is one (a closed run of -n requests has none).
    let planned = match &spec.model {
        Model::Open { schedule, .. } => Some(schedule.duration()),
        Model::Closed { duration, .. } => *duration,
    };
    if let Model::Open { schedule, .. } = &spec.model {
        eprintln!(
            "{:.0} requests planned over {}",
            schedule.total(),
            humantime::format_duration(schedule.duration())
        );
    }
    let live = if args.tui {
        use std::io::IsTerminal;
        if !std::io::stdout().is_terminal() {
            eprintln!("error: --tui needs a terminal");
            return Ok(Exit::BadInput);
        }
        let planned = planned.unwrap_or(Duration::from_secs(10));
        Some(tokio::sync::watch::channel(initial_state(&args, planned)))
    } else {
        None
    };
    let stop = CancellationToken::new();
    let s = stop.clone();
    let signals = tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s.cancel();
    });
    // The load's own /metrics, for a Prometheus watching the run.
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let metrics_stop = CancellationToken::new();
    let _stop_metrics = metrics_stop.clone().drop_guard();
    let metrics_addr = metrics
        .clone()
        .serve(args.metrics_listen, metrics_stop)
        .await
        .context("cannot serve the load's metrics")?;
    if !args.tui {
        eprintln!("metrics: http://{metrics_addr}/metrics");
    }
    let slos = args.slos.iter().map(Slo::of).collect();
    let windows = Windows::scaled(planned.unwrap_or(Duration::from_secs(10)));
    let collector = Collector::new(slos, windows, vec!["load".into()]).with_metrics(metrics);
    // Snapshots come every second (the SLO engine's resolution); a progress line goes to
    // stderr every 5 s (unless the dashboard shows the run) and the summary to stdout.
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let publish = live.as_ref().map(|(tx, _)| tx.clone());
    let progress = Progress::new(Duration::from_secs(5), planned);
    let collecting = tokio::spawn(collect(rx, collector, publish, progress));
    let workers = Workers {
        urls: args.workers.clone(),
        token: args.worker_token.clone(),
        wait: args.workers_wait,
    };
    let tick = Duration::from_secs(1);
    let plan = match Plan::prepare(spec, &workers, tick).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::BadInput);
        }
    };
    let (_, load) = plan.start(tick, Some(tx), stop.clone());
    if let Some((_, rx)) = live {
        crate::tui::run(rx, None, None, stop.clone()).await?;
    }
    let (summary, lost) = load.await.context("the load engine failed")?;
    let collector = collecting.await.context("the collector failed")?;
    signals.abort();
    Ok(finish(&args, &summary, lost, &collector, open))
}

/// Prints the summary and its objectives' verdicts; the exit code.
fn finish(
    args: &Args,
    summary: &Summary,
    lost: Option<distributed::WorkerError>,
    collector: &Collector,
    open: bool,
) -> Exit {
    let windows = Windows::scaled(summary.elapsed);
    let evaluations: Vec<Evaluation> = collector
        .slos()
        .iter()
        .zip(collector.series())
        .map(|(s, series)| slo::evaluate(&s.objective, series, &[], windows))
        .collect();
    if args.json {
        println!("{}", LoadReport::of(summary, &evaluations).json());
    } else {
        print!("{}", summary_text(summary, open, args.connections));
        print!("{}", slo_text(&evaluations));
    }
    if let Some(e) = lost {
        eprintln!("error: {e}; the figures above are what the workers sent before");
        return Exit::HypothesisFailed;
    }
    if slo::good_answers(&summary.stats) == 0 {
        eprintln!("error: {}", nothing_succeeded(summary, &args.url));
        return Exit::HypothesisFailed;
    }
    if evaluations.iter().any(|e| !e.met) {
        return Exit::HypothesisFailed;
    }
    Exit::Success
}

/// Folds the snapshots until the load ends: into the dashboard's state when it shows
/// the run, else into progress lines.
async fn collect(
    mut rx: tokio::sync::mpsc::Receiver<Snapshot>,
    mut collector: Collector,
    publish: Option<tokio::sync::watch::Sender<RunState>>,
    mut progress: Progress,
) -> Collector {
    while let Some(snap) = rx.recv().await {
        collector.push(&snap);
        match &publish {
            // The dashboard draws the same figures the summary reports.
            Some(tx) => tx.send_modify(|st| {
                st.follow(&collector);
                st.elapsed_s = snap.elapsed.as_secs_f64();
            }),
            None => {
                if let Some(line) = progress.push(&snap, &collector) {
                    eprintln!("{line}");
                }
            }
        }
    }
    if let Some(tx) = &publish {
        tx.send_modify(|st| {
            st.stage = Stage::Done;
            st.passed = Some(st.slos.iter().all(|s| s.met));
            st.phase = "done: q shows the summary".into();
        });
    }
    collector
}

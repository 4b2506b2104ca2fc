//! `faultline fault KIND TARGET [params]`: inject a fault through the agent and print its
//! id; `faultline fault list`: the faults in effect.

use std::time::Duration;

use faultline_agent::faults::spec::{MAX_DURATION, MAX_TTL};
use faultline_agent::faults::{FaultRequest, FaultSpec};

use crate::discover::AgentArgs;
use crate::exit::Exit;
use crate::limits;

/// A duration flag, at most the agent's `MAX_DURATION` (which is also its `MAX_TTL`):
/// bounded here, the milliseconds and microseconds the API takes cannot wrap.
fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write durations like 200ms, 30s, 5m)"))?;
    if d > MAX_DURATION.max(MAX_TTL) {
        return Err(format!(
            "must be at most {}",
            limits::human(MAX_DURATION.max(MAX_TTL))
        ));
    }
    Ok(d)
}

/// Whole milliseconds (a bounded duration's fit in a u64; saturating all the same).
fn ms(d: Duration) -> serde_json::Value {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).into()
}

/// Inject a fault (or `list` the faults in effect, or `renew ID` a fault's lease).
///
/// Kinds: kill, terminate, pause, restart (target: a service, a replica such as orders-2,
/// or pid:N); latency, bandwidth, blackhole, reset, slicer, slow-close, limit-data,
/// http-abort, http-delay (target: an edge, client->server or client->server-N);
/// partition (two comma-separated service lists: `partition orders broker`);
/// zone-outage (target: a zone); poison, queue-partition (target: a queue).
///
/// Examples:
///   faultline fault kill orders-2 --hold --ttl 30s
///   faultline fault pause content-1 --ttl 10s
///   faultline fault latency payments->bank --delay 200ms --jitter 20ms --ttl 60s
///   faultline fault partition orders broker --ttl 30s
///   faultline fault http-abort gateway->cdn --status 503 --percent 50 --ttl 30s
///   faultline fault poison payments --count 5
///   faultline fault list
///   faultline fault renew f1a2b3c4 --ttl 30s
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The fault kind, or `list`, or `renew`.
    pub kind: String,
    /// What to fault: service, replica, client->server edge, zone, queue or pid:N.
    pub target: Option<String>,
    /// The other side, for `partition`.
    pub with: Option<String>,
    /// How long the fault lasts unless healed or renewed (default 5m).
    #[arg(long, value_parser = duration)]
    pub ttl: Option<Duration>,
    /// kill, terminate: keep the replica down until the fault heals.
    #[arg(long)]
    pub hold: bool,
    /// latency, slow-close, http-delay: the delay.
    #[arg(long, value_parser = duration)]
    pub delay: Option<Duration>,
    /// latency: up to this much more or less, at random.
    #[arg(long, value_parser = duration)]
    pub jitter: Option<Duration>,
    /// Network faults: upstream (requests), downstream (responses) or both.
    #[arg(long, value_parser = ["upstream", "downstream", "both"])]
    pub direction: Option<String>,
    /// Network faults: share of connections affected, 0 to 1 (default 1).
    #[arg(long)]
    pub toxicity: Option<f64>,
    /// bandwidth: bytes a second.
    #[arg(long)]
    pub rate: Option<u64>,
    /// blackhole: close held connections after this long.
    #[arg(long, value_parser = duration)]
    pub close_after: Option<Duration>,
    /// reset: reset connections after this long.
    #[arg(long, value_parser = duration)]
    pub after: Option<Duration>,
    /// slicer: average piece size in bytes.
    #[arg(long)]
    pub average_size: Option<usize>,
    /// slicer: plus or minus this many bytes.
    #[arg(long)]
    pub size_variation: Option<usize>,
    /// slicer: pause between pieces.
    #[arg(long, value_parser = duration)]
    pub slice_delay: Option<Duration>,
    /// limit-data: close after this many bytes.
    #[arg(long)]
    pub bytes: Option<u64>,
    /// http-abort: the status to answer with.
    #[arg(long)]
    pub status: Option<u16>,
    /// http-abort, http-delay: share of matching requests, 0 to 100 (default 100).
    #[arg(long)]
    pub percent: Option<f64>,
    /// http-abort, http-delay: only requests with this method.
    #[arg(long)]
    pub method: Option<String>,
    /// http-abort, http-delay: only requests whose path starts with this.
    #[arg(long)]
    pub path: Option<String>,
    /// poison: how many messages.
    #[arg(long)]
    pub count: Option<usize>,
    /// queue-partition: cut off the queue's `consumers` or `producers`.
    #[arg(long, value_parser = ["consumers", "producers"])]
    pub side: Option<String>,
    /// Seed of the fault's random draws.
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// The request the arguments describe; a message naming the problem otherwise.
pub fn request(a: &Args) -> Result<FaultRequest, String> {
    let kind = a.kind.as_str();
    if !FaultSpec::KINDS.contains(&kind) {
        return Err(format!(
            "unknown fault kind `{kind}`; kinds are: {}, or `list`",
            FaultSpec::KINDS.join(", ")
        ));
    }
    let target = a
        .target
        .clone()
        .ok_or_else(|| format!("`faultline fault {kind}` needs a target"))?;
    let mut body = serde_json::Map::new();
    body.insert("kind".into(), kind.into());
    body.insert("target".into(), target.into());
    let mut set = |key: &str, value: serde_json::Value| {
        body.insert(key.into(), value);
    };
    if a.hold {
        set("hold", true.into());
    }
    if let Some(d) = a.delay {
        set("delay_ms", ms(d));
    }
    if let Some(d) = a.jitter {
        set("jitter_ms", ms(d));
    }
    if let Some(d) = &a.direction {
        set("direction", d.clone().into());
    }
    if let Some(t) = a.toxicity {
        set("toxicity", t.into());
    }
    if let Some(r) = a.rate {
        set("rate", r.into());
    }
    if let Some(d) = a.close_after {
        set("close_after_ms", ms(d));
    }
    if let Some(d) = a.after {
        set("after_ms", ms(d));
    }
    if let Some(n) = a.average_size {
        set("average_size", n.into());
    }
    if let Some(n) = a.size_variation {
        set("size_variation", n.into());
    }
    if let Some(d) = a.slice_delay {
        set(
            "delay_us",
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX).into(),
        );
    }
    if let Some(n) = a.bytes {
        set("bytes", n.into());
    }
    if let Some(s) = a.status {
        set("status", s.into());
    }
    if let Some(p) = a.percent {
        set("percent", p.into());
    }
    if let Some(m) = &a.method {
        set("method", m.clone().into());
    }
    if let Some(p) = &a.path {
        set("path", p.clone().into());
    }
    if let Some(n) = a.count {
        set("count", n.into());
    }
    if let Some(s) = &a.side {
        set("side", s.clone().into());
    }
    if let Some(w) = &a.with {
        set("with", w.clone().into());
    }
    if let Some(t) = a.ttl {
        set("ttl_ms", ms(t));
    }
    if let Some(s) = a.seed {
        set("seed", s.into());
    }
    let json = serde_json::Value::Object(body).to_string();
    FaultRequest::from_json(json.as_bytes())
        .map_err(|e| format!("{kind}: {}", flags_for_fields(&e)))
}

/// serde names the JSON fields; the user typed flags: `delay_ms` becomes `--delay`.
fn flags_for_fields(message: &str) -> String {
    let mut out = String::new();
    let mut parts = message.split('`');
    out.push_str(parts.next().unwrap_or(""));
    let mut inside = true;
    for part in parts {
        if inside {
            let flag = match part {
                "delay_ms" => "delay".to_owned(),
                "jitter_ms" => "jitter".to_owned(),
                "close_after_ms" => "close-after".to_owned(),
                "after_ms" => "after".to_owned(),
                "delay_us" => "slice-delay".to_owned(),
                "ttl_ms" => "ttl".to_owned(),
                "with" => {
                    out.push_str("the second target");
                    inside = !inside;
                    continue;
                }
                other => other.replace('_', "-"),
            };
            out.push_str("--");
            out.push_str(&flag);
        } else {
            out.push_str(part);
        }
        inside = !inside;
    }
    out.replace("unknown field", "option that does not apply to this kind:")
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    if matches!(args.kind.as_str(), "renew" | "list") {
        return renew_or_list(&args);
    }
    // Checked before anything reaches (or looks for) the agent.
    let request = match request(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::BadInput);
        }
    };
    let client = args.agent.client()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let info = runtime.block_on(client.inject(&request))?;
    println!("{}", info.id);
    if info.healed_ms.is_some() {
        // Nothing to undo (a kill without --hold, a restart, poison): already over.
        eprintln!("{} on {}: done", info.kind, info.target);
    } else {
        eprintln!(
            "{} on {} for {}s (heal early with `faultline heal {}`)",
            info.kind,
            info.target,
            info.remaining_ms.div_ceil(1000),
            info.id
        );
    }
    Ok(Exit::Success)
}

/// `fault renew ID` and `fault list`.
fn renew_or_list(args: &Args) -> anyhow::Result<Exit> {
    let client = args.agent.client()?;
    let runtime = tokio::runtime::Runtime::new()?;
    if args.kind == "renew" {
        let id = args
            .target
            .clone()
            .ok_or_else(|| anyhow::anyhow!("`faultline fault renew` needs a fault id"))?;
        let info = runtime.block_on(client.renew(&id, args.ttl))?;
        println!(
            "{} renewed: {}s left",
            info.id,
            info.remaining_ms.div_ceil(1000)
        );
        return Ok(Exit::Success);
    }
    let faults = runtime.block_on(client.faults())?;
    if faults.is_empty() {
        println!("no faults in effect");
    }
    for f in faults {
        println!(
            "{}  {:<15} {:<28} {}s left",
            f.id,
            f.kind,
            f.target,
            f.remaining_ms.div_ceil(1000)
        );
    }
    Ok(Exit::Success)
}

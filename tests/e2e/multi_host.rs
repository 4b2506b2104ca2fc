//! One run across several hosts: each host a network namespace of its own
//! ([`faultline_tests::hosts`]) with its own address, an agent and part of the system.
//! Host a runs `web`, which calls host b's `api` through `[external.b-api]`; one
//! `faultline run` with two `[[target.agents]]` kills and pauses replicas on both hosts
//! and partitions the hosts, while a load worker on each host makes the load; an agent SIGKILLed mid-run ends the run; bad agent names
//! and a replica two agents own are refused at their place in the file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use faultline::run::report::{Report, RunStatus};
use faultline_tests::hosts::{Host, Network};
use faultline_tests::{Killed, bin, wait_until};

const TOKEN: &str = "multi-host-test-token";
const T: Duration = Duration::from_secs(20);

/// Answers every request with `b`.
const API: &str = r#"
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

host, port = sys.argv[1].rsplit(":", 1)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "1")
        self.end_headers()
        self.wfile.write(b"b")

    def log_message(self, *args):
        pass

ThreadingHTTPServer((host, int(port)), Handler).serve_forever()
"#;

use faultline_tests::PY_WEB as WEB;

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn get(agent: &str, path: &str) -> serde_json::Value {
    http()
        .get(format!("{agent}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("{agent}{path}: {e}"))
}

fn faults_on(agent: &str) -> Vec<serde_json::Value> {
    get(agent, "/v1/faults")["faults"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn replica(agent: &str, name: &str) -> serde_json::Value {
    get(agent, "/v1/status")["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no replica {name} on {agent}"))
}

/// The two hosts of a test, each with its agent; `web` on a calls `api` on b.
struct Two {
    _a_agent: Killed,
    b_agent: Option<Killed>,
    a: String,
    b: String,
    // Dropped last: every process in the hosts is killed with them.
    _hosts: (Host, Host),
    _net: Network,
    dir: tempfile::TempDir,
}

/// Host b with `api`; with `web_on_a`, host a with `web` calling b's api, else a second
/// `api` (two agents that own the same replica name).
fn two_hosts(web_on_a: bool) -> Two {
    let net = Network::new();
    let (ha, hb) = (net.host(), net.host());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("api.py"), API).unwrap();
    std::fs::write(d.join("web.py"), WEB).unwrap();
    let api_topology = |name: &str, host: &Host| -> PathBuf {
        let file = d.join(format!("{name}.toml"));
        std::fs::write(
            &file,
            format!(
                "entrypoint = \"api\"\n[services.api]\ncommand = [\"python3\", \"{}\", \"{{listen}}\"]\nhost = \"{}\"\nhealth = \"tcp\"\n",
                d.join("api.py").display(),
                host.addr()
            ),
        )
        .unwrap();
        file
    };
    let (b_agent, b) = hb.start_agent(&d.join("run-b"), &api_topology("b", &hb), TOKEN);
    let a_topology = if web_on_a {
        let api = replica(&b, "api-1")["addr"].as_str().unwrap().to_owned();
        let file = d.join("a.toml");
        std::fs::write(
            &file,
            format!(
                "entrypoint = \"web\"\n[external.b-api]\naddress = \"{api}\"\n[services.web]\ncommand = [\"python3\", \"{}\", \"{{listen}}\", \"{{upstream:b-api}}\"]\ncalls = [\"b-api\"]\nhost = \"{}\"\nhealth = \"tcp\"\n",
                d.join("web.py").display(),
                ha.addr()
            ),
        )
        .unwrap();
        file
    } else {
        api_topology("a", &ha)
    };
    let (a_agent, a) = ha.start_agent(&d.join("run-a"), &a_topology, TOKEN);
    Two {
        _a_agent: a_agent,
        b_agent: Some(b_agent),
        a,
        b,
        _hosts: (ha, hb),
        _net: net,
        dir,
    }
}

impl Two {
    fn agents(&self) -> String {
        format!(
            "[[target.agents]]\nname = \"a\"\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n[[target.agents]]\nname = \"b\"\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n",
            self.a, self.b
        )
    }

    /// The replicas' logs and the agents' stderr, for a failure's message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for host in ["run-a", "run-b"] {
            let run = self.dir.path().join(host);
            let mut files: Vec<PathBuf> = std::fs::read_dir(run.join("logs"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            files.push(run.with_extension("stderr"));
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap_or_default();
                out.push_str(&format!("--- {}\n{text}\n", f.display()));
            }
        }
        out
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn faultline(&self) -> Command {
        let mut c = Command::new(bin("faultline"));
        c.env("FAULTLINE_HOME", self.dir.path().join("home"))
            .env_remove("FAULTLINE_AGENT")
            .env_remove("FAULTLINE_AGENT_TOKEN");
        c
    }

    /// `faultline ARGS` with both agents named on the command line.
    fn cli(&self, args: &[&str]) -> Output {
        self.faultline()
            .args(args)
            .args(["--agent", &format!("a={}", self.a)])
            .args(["--agent", &format!("b={}", self.b)])
            .args(["--agent-token", TOKEN])
            .output()
            .unwrap()
    }

    fn run(&self, file: &Path, report: &Path) -> Output {
        self.run_with(file, report, &[])
    }

    fn run_with(&self, file: &Path, report: &Path, extra: &[&str]) -> Output {
        self.faultline()
            .arg("run")
            .arg(file)
            .arg("--report")
            .arg(report)
            .arg("--no-tui")
            .args(extra)
            .env("FAULTLINE_WORKER_TOKEN", TOKEN)
            .output()
            .unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn report(dir: &Path) -> Report {
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("report.json: {e}\n{text}"))
}

const LOAD: &str = "[load]\nrate = 10\ntimeout = \"5s\"\n[[load.flows]]\nname = \"get\"\nsteps = [{ name = \"get\", path = \"/\" }]\n";

#[test]
fn one_run_faults_replicas_on_two_hosts_and_partitions_them() {
    let two = two_hosts(true);
    // The system works across the hosts before anything is faulted.
    let entry = get(&two.a, "/v1/status")["entrypoint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(http().get(&entry).send().unwrap().text().unwrap(), "b");

    let file = two.write(
        "two-hosts.toml",
        &format!(
            "name = \"two hosts\"\nduration = \"16s\"\n[target]\n{}{LOAD}\
             [[faults]]\nat = \"1s\"\nkind = \"kill\"\ntarget = \"api-1\"\n\
             [[faults]]\nat = \"2s\"\nduration = \"2s\"\nkind = \"pause\"\ntarget = \"web-1\"\n\
             [[faults]]\nat = \"6s\"\nduration = \"3s\"\nkind = \"partition\"\ntarget = \"host:a\"\nwith = \"host:b\"\n",
            two.agents()
        ),
    );
    // Two load workers, one on each host, make the load.
    let (ha, hb) = &two._hosts;
    let ((_wa, wa), (_wb, wb)) = (ha.start_worker(TOKEN), hb.start_worker(TOKEN));
    let out_dir = two.dir.path().join("out");
    let out = two.run_with(&file, &out_dir, &["--workers", &format!("{wa},{wb}")]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let r = report(&out_dir);
    assert_eq!(r.status, RunStatus::Completed);
    // The load came from both hosts, and its totals are theirs.
    let urls: Vec<&str> = r.load.workers.iter().map(|w| w.url.as_str()).collect();
    assert_eq!(urls, [wa.as_str(), wb.as_str()]);
    assert!(wa.contains(&ha.addr().to_string()) && wb.contains(&hb.addr().to_string()));
    assert_eq!(
        r.load.workers.iter().map(|w| w.requests).sum::<u64>(),
        r.load.requests
    );
    assert!(
        r.load.workers.iter().all(|w| w.requests >= 70),
        "{:?}",
        r.load.workers
    );

    // Three faults, one entry each: the partition between hosts too.
    let labels: Vec<&str> = r.faults.iter().map(|f| f.label.as_str()).collect();
    assert_eq!(
        labels,
        ["kill api-1", "pause web-1", "partition host:a | host:b"]
    );
    for f in &r.faults {
        assert_eq!(f.error, None, "{f:?}");
        assert!(f.healed_at_s.is_some(), "{f:?}");
    }
    let ids: Vec<&str> = r.faults.iter().map(|f| f.id.as_deref().unwrap()).collect();
    assert!(ids[0].starts_with("b/"), "the kill went to b: {ids:?}");
    assert!(ids[1].starts_with("a/"), "the pause went to a: {ids:?}");
    // b calls nothing on a: the one edge that crosses is a's web->b-api.
    assert!(
        ids[2].starts_with("a/") && !ids[2].contains(','),
        "the partition is a's edge: {ids:?}"
    );

    // What really happened: b's api restarted after its kill...
    assert!(replica(&two.b, "api-1")["restarts"].as_u64().unwrap() >= 1);
    // ...the calls from a to b failed during the partition (6 s to 9 s) and came back.
    let second = |t: usize| {
        r.seconds
            .iter()
            .find(|s| s.t == t)
            .unwrap_or_else(|| panic!("no second {t} in {:?}", r.seconds))
    };
    // A call held by the partition fails after web's 2 s timeout (a second counts what
    // completes in it): nothing succeeds while the hosts are apart, what was sent then
    // fails up to 2 s after the heal, and after that every call succeeds again.
    for t in [7, 8] {
        let s = second(t);
        assert!(
            s.ok == 0,
            "second {t} during the partition: {s:?}\n{:?}\n{}",
            r.seconds,
            two.logs()
        );
    }
    let failed: u64 = (6..=12).map(|t| second(t).errors).sum();
    assert!(
        failed >= 20,
        "{failed} calls failed across the partition: {:?}",
        r.seconds
    );
    for t in [13, 14] {
        let s = second(t);
        assert!(
            s.errors == 0 && s.ok > 0,
            "second {t} after the partition: {s:?}\n{:?}\n{}",
            r.seconds,
            two.logs()
        );
    }
    // And nothing is left applied on either host.
    assert!(faults_on(&two.a).is_empty(), "{:?}", faults_on(&two.a));
    assert!(faults_on(&two.b).is_empty(), "{:?}", faults_on(&two.b));
    assert_eq!(replica(&two.a, "web-1")["state"], "healthy");

    // The commands see both hosts: a section per agent, faults routed by owner.
    let out = two.cli(&["status"]);
    let status = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{status}{}", text(&out.stderr));
    assert!(
        status.contains(&format!("agent a at {}", two.a))
            && status.contains(&format!("agent b at {}", two.b))
            && status.contains("web-1")
            && status.contains("api-1"),
        "{status}"
    );
    let out = two.cli(&["fault", "pause", "api-1", "--ttl", "30s"]);
    let id = text(&out.stdout).trim().to_owned();
    assert_eq!(out.status.code(), Some(0), "{id}{}", text(&out.stderr));
    assert!(id.starts_with("b/"), "{id}");
    assert_eq!(faults_on(&two.b).len(), 1);
    let out = two.cli(&["fault", "list"]);
    assert!(text(&out.stdout).contains(&id), "{}", text(&out.stdout));
    let out = two.cli(&["heal", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(faults_on(&two.b).is_empty());
}

#[test]
fn an_agent_killed_mid_run_ends_it_by_name_and_the_other_heals() {
    let mut two = two_hosts(true);
    let file = two.write(
        "lost.toml",
        &format!(
            "name = \"lost\"\nduration = \"40s\"\n[target]\n{}{LOAD}\
             [[faults]]\nat = \"1s\"\nduration = \"30s\"\nkind = \"latency\"\ntarget = \"web->b-api\"\ndelay = \"50ms\"\n\
             [[faults]]\nat = \"1s\"\nduration = \"30s\"\nkind = \"pause\"\ntarget = \"api-1\"\n",
            two.agents()
        ),
    );
    let out_dir = two.dir.path().join("out");
    let stderr_file = two.dir.path().join("run.stderr");
    let child = two
        .faultline()
        .arg("run")
        .arg(&file)
        .arg("--report")
        .arg(&out_dir)
        .arg("--no-tui")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    let mut run = Killed(child);
    assert!(
        wait_until(T, || faults_on(&two.a).len() == 1
            && faults_on(&two.b).len() == 1),
        "the faults were not applied on both hosts"
    );
    let killed_at = Instant::now();
    drop(two.b_agent.take());
    let mut code = None;
    assert!(
        wait_until(T, || {
            code = run.try_wait().unwrap().map(|s| s.code());
            code.is_some()
        }),
        "the run went on without agent b"
    );
    let stderr = std::fs::read_to_string(&stderr_file).unwrap();
    assert_eq!(code, Some(Some(1)), "{stderr}");
    assert!(stderr.contains("agent b stopped answering"), "{stderr}");
    assert!(
        killed_at.elapsed() < Duration::from_secs(15),
        "the run took {:?} to notice",
        killed_at.elapsed()
    );
    let r = report(&out_dir);
    assert_eq!(r.status, RunStatus::Aborted);
    assert!(
        r.failures
            .iter()
            .any(|f| f.starts_with("agent b stopped answering")),
        "{:?}",
        r.failures
    );
    // The surviving agent healed: nothing of the run is left on a.
    assert!(faults_on(&two.a).is_empty(), "{:?}", faults_on(&two.a));
}

/// The line and column where `needle` starts in `text`.
fn place(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} in {text}"));
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[test]
fn bad_agent_names_and_a_replica_two_agents_own_are_refused_at_their_place() {
    let two = two_hosts(false);
    let fault =
        |target: &str| format!("[[faults]]\nat = \"1s\"\nkind = \"kill\"\ntarget = \"{target}\"\n");
    let check = |name: &str, text: String, needle: &str, message: &str| {
        let file = two.write(name, &text);
        let out_dir = two.dir.path().join(format!("{name}.out"));
        let out = two.run(&file, &out_dir);
        let stderr = text_of(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        let (line, column) = place(&text, needle);
        let expected = format!("{}:{line}:{column}: {message}", file.display());
        assert!(
            stderr.contains(&expected),
            "{name}: expected `{expected}` in\n{stderr}"
        );
        assert!(!out_dir.exists(), "{name}: a report was written");
    };
    let head = "name = \"bad\"\nduration = \"5s\"\n[target]\n";
    check(
        "duplicate.toml",
        format!(
            "{head}[[target.agents]]\nname = \"a\"\nurl = \"{}\"\n[[target.agents]]\nname = \"a\" \nurl = \"{}\"\n{LOAD}",
            two.a, two.b
        ),
        "\"a\" \n",
        "two agents are named `a`: give each agent of [[target.agents]] its own name",
    );
    check(
        "unknown.toml",
        format!("{head}{}{LOAD}{}", two.agents(), fault("c/api-1")),
        "\"c/api-1\"",
        "no agent named `c`; agents are: a, b",
    );
    check(
        "ambiguous.toml",
        format!("{head}{}{LOAD}{}", two.agents(), fault("api-1")),
        "\"api-1\"",
        "`api-1` is on agents a and b: qualify it, like a/api-1",
    );
    // Nothing was applied anywhere; qualified, the same fault is accepted.
    assert!(faults_on(&two.a).is_empty() && faults_on(&two.b).is_empty());
    let out = two.cli(&["fault", "kill", "api-1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text_of(&out.stderr));
    assert!(
        text_of(&out.stderr).contains("`api-1` is on agents a and b"),
        "{}",
        text_of(&out.stderr)
    );
    let before = replica(&two.b, "api-1")["restarts"].as_u64().unwrap();
    let out = two.cli(&["fault", "kill", "b/api-1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out.stderr));
    assert!(wait_until(T, || {
        replica(&two.b, "api-1")["restarts"].as_u64().unwrap() > before
    }));
    assert_eq!(replica(&two.a, "api-1")["restarts"], 0);
}

fn text_of(b: &[u8]) -> String {
    text(b)
}

#[test]
fn the_dashboard_shows_every_host_and_acts_through_the_agent_that_owns_the_selection() {
    let two = two_hosts(true);
    let command = format!(
        "{} tui --agent a={} --agent b={} --agent-token {TOKEN}",
        bin("faultline").display(),
        two.a,
        two.b
    );
    let tmux = crate::tui::Tmux::start(&command);
    let screen = tmux.wait_for("b/api-1", Duration::from_secs(20));
    assert!(screen.contains("a/web-1"), "{screen}");
    let found = wait_until(Duration::from_secs(10), || {
        if tmux.screen().contains("> b/api-1") {
            return true;
        }
        tmux.keys("j");
        false
    });
    assert!(found, "b/api-1 selected:\n{}", tmux.screen());
    tmux.keys("p");
    tmux.wait_for("PAUSED", Duration::from_secs(10));
    assert_eq!(faults_on(&two.b).len(), 1, "the pause is b's");
    assert!(faults_on(&two.a).is_empty(), "{:?}", faults_on(&two.a));
    assert_eq!(replica(&two.b, "api-1")["state"], "paused");
    // Quitting heals what the dashboard applied, on the agent it applied it on.
    tmux.keys("q");
    assert!(
        wait_until(T, || faults_on(&two.b).is_empty()),
        "{:?}",
        faults_on(&two.b)
    );
}

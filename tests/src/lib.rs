//! Harness for faultline's end-to-end tests: finds the workspace's binaries, runs
//! topologies (in-process through the supervisor library, or as a `faultline up`
//! process), and reads Prometheus metrics.
//!
//! # Layout
//!
//! - [`bin`]: paths of the built binaries.
//! - [`Shop`]: the bundled shop under an in-process supervisor, with env overrides.
//! - [`Up`]: a `faultline up` child process and what it printed.
//! - [`metrics`]: reading one sample out of a `/metrics` page.
//! - [`invariants`]: the shop's invariants on a [`Shop`], judged by faultline's own checker.
//! - [`hosts`]: hosts on this machine (network namespaces on a bridge), for tests
//!   across several hosts.

pub mod docker;
pub mod hosts;
pub mod invariants;
pub mod metrics;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::sync::Arc;

use faultline_agent::agent::{Agent, AgentOptions};
use faultline_agent::client::AgentClient;
use faultline_agent::rundir::RunDir;
use faultline_agent::supervisor::Supervisor;
use faultline_agent::topology::{Piece, Template, Topology};

/// The directory the workspace's binaries are built into: the test executable lives in
/// `target/<profile>/deps/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps")
        .to_path_buf()
}

/// Path of the workspace binary `name`, which `cargo test --workspace` builds.
///
/// Cargo builds another package's binaries only when that package is tested too, so
/// `cargo test -p faultline-tests` alone would run whatever binaries a previous build
/// left behind. A binary older than the sources it is built from is refused rather than
/// silently tested.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    let built = std::fs::metadata(&p).and_then(|m| m.modified()).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run the tests with `cargo test --workspace` so every binary is built",
            p.display()
        )
    });
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sources: &[&str] = match name {
        "shop" => &["target-system/src"],
        "faultline-agent" => &["agents/src"],
        _ => &["cli/src", "agents/src", "target-system/topology.toml"],
    };
    let newest = sources
        .iter()
        .filter_map(|d| newest_mtime(&root.join(d)))
        .max();
    if let Some(newest) = newest {
        assert!(
            built >= newest,
            "{} is older than its sources: run `cargo test --workspace` (or `cargo build --workspace` first)",
            p.display()
        );
    }
    p
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    if dir.is_file() {
        return dir.metadata().and_then(|m| m.modified()).ok();
    }
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// The bundled topology file.
pub fn shop_topology_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target-system/topology.toml")
}

/// The bundled shop run by an agent in this process (supervisor, fault proxies, fault
/// engine and control API), so tests can drive the supervisor's controls directly or go
/// through the API. Dropping it kills every replica.
pub struct Shop {
    pub sup: Arc<Supervisor>,
    pub faults: Arc<faultline_agent::faults::Faults>,
    /// The control API's client.
    pub agent: AgentClient,
    pub gateway: String,
    pub http: reqwest::Client,
    _agent: Agent,
    _dir: tempfile::TempDir,
}

impl Shop {
    /// Starts the shop with extra environment for every service (`SHOP_*` settings).
    pub async fn start(env: &[(&str, &str)]) -> Shop {
        let path = shop_topology_path();
        let topology = Topology::load(&path).expect("the bundled topology is valid");
        Self::start_topology(topology, env).await
    }

    /// Starts the shop with `args` added to the command line of `service`'s replicas
    /// (flags win over the `SHOP_*` environment, so one service can differ).
    pub async fn start_with_args(env: &[(&str, &str)], service: &str, args: &[&str]) -> Shop {
        let mut topology =
            Topology::load(&shop_topology_path()).expect("the bundled topology is valid");
        let svc = topology
            .service_mut(service)
            .expect("a service of the shop");
        for a in args {
            svc.command
                .push(Template(vec![Piece::Lit((*a).to_owned())]));
        }
        Self::start_topology(topology, env).await
    }

    /// Starts a topology written for the test (its programs found beside the test's
    /// binaries), e.g. a single broker.
    pub async fn start_text(text: &str, env: &[(&str, &str)]) -> Shop {
        let topology =
            Topology::parse("test.toml", text, PathBuf::new()).expect("test topology is valid");
        Self::start_topology(topology, env).await
    }

    async fn start_topology(mut topology: Topology, env: &[(&str, &str)]) -> Shop {
        if let Some(ep) = topology.entrypoint.clone() {
            topology.service_mut(&ep).unwrap().port = 0;
        }
        for svc in &mut topology.services {
            svc.port = 0;
        }
        for (k, v) in env {
            topology
                .env
                .push(((*k).to_owned(), Template(vec![Piece::Lit((*v).to_owned())])));
        }
        let dir = tempfile::tempdir().unwrap();
        bin("shop");
        let opts = AgentOptions {
            bin_path: vec![bin_dir()],
            ..AgentOptions::new(topology, RunDir::at(dir.path()).unwrap())
        };
        let agent = match Agent::start(opts).await {
            Ok(a) => a,
            Err(e) => panic!("the shop did not start: {e}"),
        };
        let sup = agent.supervisor.clone();
        let gateway = sup
            .entrypoint()
            .map(|a| format!("http://{a}"))
            .unwrap_or_default();
        Shop {
            sup,
            faults: agent.faults.clone(),
            agent: AgentClient::new(&agent.url, None),
            gateway,
            http: client(),
            _agent: agent,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    /// `http://ADDR` of replica `name`, for its internal API.
    pub fn replica_url(&self, name: &str, path: &str) -> String {
        let addr = self.sup.replica_status(name).expect("known replica").addr;
        format!("http://{addr}{path}")
    }

    /// POSTs an order; returns the status and the JSON answer.
    pub async fn order(
        &self,
        token: &str,
        key: &str,
        items: serde_json::Value,
    ) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
        let resp = self
            .http
            .post(self.url("/api/v1/orders"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&serde_json::json!({ "items": items }))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (
            status,
            resp.json().await.unwrap_or(serde_json::Value::Null),
            headers,
        )
    }

    /// GET of a replica's internal JSON endpoint.
    pub async fn internal(&self, replica: &str, path: &str) -> serde_json::Value {
        self.http
            .get(self.replica_url(replica, path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The `/metrics` page of replica `name`, or `None` while it does not answer (a
    /// replica being restarted).
    pub async fn try_metrics(&self, replica: &str) -> Option<String> {
        let addr = self.sup.replica_status(replica)?.addr;
        self.http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// The `/metrics` page of replica `name`.
    pub async fn metrics(&self, replica: &str) -> String {
        let addr = self
            .sup
            .replica_status(replica)
            .expect("known replica")
            .addr;
        self.http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .unwrap()
    }

    /// Logs `user` in through the gateway and returns the token.
    pub async fn login(&self, user: &str, password: &str) -> String {
        let resp = self
            .http
            .post(self.url("/api/v1/auth/login"))
            .json(&serde_json::json!({ "username": user, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "login of {user}");
        let body: serde_json::Value = resp.json().await.unwrap();
        body["token"]
            .as_str()
            .expect("token in the answer")
            .to_owned()
    }
}

/// An HTTP client that never uses a proxy, whatever the environment says.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// A row of the table `faultline up` prints.
#[derive(Debug, Clone)]
pub struct Row {
    pub service: String,
    pub replica: String,
    pub zone: String,
    pub addr: String,
    pub pid: u32,
}

/// A `faultline up` process. Dropping it kills the process (its replicas die with it).
pub struct Up {
    pub child: Child,
    /// The entrypoint's URL, the ready line's first field (whatever its key).
    pub gateway: String,
    /// That field's key: the entrypoint service's name (`gateway` for the shop).
    pub entrypoint_key: String,
    pub agent: String,
    pub rows: Vec<Row>,
    pub run_dir: PathBuf,
    pub stdout: Vec<String>,
    pub stderr_path: PathBuf,
    /// `FAULTLINE_HOME` of this run: commands given it find this run as the latest.
    pub home: PathBuf,
    /// The Prometheus file_sd file it wrote.
    pub targets: PathBuf,
    _dir: tempfile::TempDir,
}

impl Up {
    /// Runs `faultline up --entrypoint-port 0 --run-dir <tmp>` plus `args`, and waits for
    /// its ready line and table.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Up {
        Self::start_in(None, args, env)
    }

    /// [`Up::start`] from working directory `cwd` (the test's own by default).
    pub fn start_in(cwd: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Up {
        Self::launch(cwd, &["--entrypoint-port", "0"], args, env)
    }

    /// `faultline up --run-dir <tmp>` plus `args` only: for topologies without an
    /// entrypoint to place (`--docker-project`).
    pub fn start_plain(args: &[&str], env: &[(&str, &str)]) -> Up {
        Self::launch(None, &[], args, env)
    }

    fn launch(cwd: Option<&Path>, first: &[&str], args: &[&str], env: &[(&str, &str)]) -> Up {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        let stderr_path = dir.path().join("stderr");
        let home = dir.path().join("home");
        let mut cmd = Command::new(bin("faultline"));
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd
            .env("FAULTLINE_HOME", &home)
            .arg("up")
            .args(first)
            .arg("--run-dir")
            .arg(&run_dir)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("start faultline up");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stdout = Vec::new();
        // Reading blocks until faultline prints or exits; it exits by itself when the
        // topology cannot start, so this cannot hang on failure.
        for line in lines.by_ref() {
            let line = line.unwrap();
            let done = line.starts_with("logs:");
            stdout.push(line);
            if done {
                break;
            }
        }
        let ready = stdout.iter().find(|l| l.starts_with("ready: "));
        let Some(ready) = ready else {
            let _ = child.kill();
            let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("faultline up did not get ready; stdout: {stdout:?}\nstderr: {err}");
        };
        let field = |key: &str| {
            ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_default()
                .to_owned()
        };
        // The first field is the entrypoint's, keyed by its service's name (`gateway=`
        // for the shop, `lb=` for examples/own-system).
        let (entrypoint_key, gateway) = ready
            .strip_prefix("ready: ")
            .and_then(|r| r.split_whitespace().next())
            .filter(|w| !w.starts_with("agent="))
            .and_then(|w| w.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .unwrap_or_default();
        let agent = field("agent=");
        let rows = stdout
            .iter()
            .skip_while(|l| !l.starts_with("SERVICE"))
            .skip(1)
            .take_while(|l| !l.starts_with("logs:") && !l.starts_with("prometheus targets:"))
            .map(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                Row {
                    service: c[0].into(),
                    replica: c[1].into(),
                    zone: c[2].into(),
                    addr: c[3].into(),
                    pid: c[5].parse().expect("pid column"),
                }
            })
            .collect();
        let targets = stdout
            .iter()
            .find_map(|l| l.strip_prefix("prometheus targets: "))
            .map(PathBuf::from)
            .unwrap_or_default();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Up {
            child,
            gateway,
            entrypoint_key,
            agent,
            rows,
            run_dir,
            stdout,
            stderr_path,
            home,
            targets,
            _dir: dir,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A standalone `faultline-agent` on `topology` with run directory `run_dir`: its
/// process and the API's URL from its ready line. What it writes to stderr is appended
/// to `<run_dir>.stderr`.
pub fn start_agent(run_dir: &Path, topology: &Path, extra: &[&str]) -> (Killed, String) {
    let mut args = vec!["--topology", topology.to_str().expect("a UTF-8 path")];
    args.extend_from_slice(extra);
    let (child, ready) = start_agent_with(run_dir, &args);
    (child, ready_field(&ready, "agent"))
}

/// A child process killed and reaped when dropped, so a test that fails leaves none
/// behind; otherwise a `Child`.
pub struct Killed(pub Child);

impl std::ops::Deref for Killed {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Killed {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A standalone `faultline-agent` with `args` and run directory `run_dir`: its process
/// and its ready line. What it writes to stderr is appended to `<run_dir>.stderr`.
pub fn start_agent_with(run_dir: &Path, args: &[&str]) -> (Killed, String) {
    start_agent_env(run_dir, args, &[])
}

/// [`start_agent_with`], with `env` set for the agent.
pub fn start_agent_env(run_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Killed, String) {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.with_extension("stderr"))
        .unwrap();
    let mut child = Command::new(bin("faultline-agent"))
        .env("FAULTLINE_HOME", run_dir.with_extension("home"))
        .arg("--run-dir")
        .arg(run_dir)
        .args(args)
        .envs(env.iter().copied())
        // A group of its own: a bug that signals the agent's own group (killpg(0), seen)
        // then fails its test instead of killing the test runner.
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let Some(Ok(ready)) = lines.next() else {
        let _ = child.wait();
        let err = std::fs::read_to_string(run_dir.with_extension("stderr")).unwrap_or_default();
        panic!("faultline-agent {args:?} printed no ready line; stderr: {err}");
    };
    std::thread::spawn(move || for _ in lines {});
    (Killed(child), ready)
}

/// The value of field `key` (`agent`, `toxiproxy`, ...) of a ready line.
pub fn ready_field(ready: &str, key: &str) -> String {
    ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the ready line `{ready}`"))
        .to_owned()
}

/// The Python that has the third-party clients the compatibility tests drive
/// (toxiproxy-python): `$FAULTLINE_TEST_PYTHON`, else the virtual environment `.ci/run`
/// makes in `target/venv`. Missing, it is a failure that says how to make it.
pub fn python() -> PathBuf {
    let path = std::env::var_os("FAULTLINE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/python3")
        });
    assert!(
        path.exists(),
        "no Python with the test clients at {}: run .ci/run, or python3 -m venv target/venv && target/venv/bin/pip install -r tests/requirements.txt (or set FAULTLINE_TEST_PYTHON)",
        path.display()
    );
    path
}

/// The service: serves HTTP on argv[1]; each request fetches `/` from argv[2] (2 s
/// timeout) and answers its body, or 502 when that fails.
pub const PY_WEB: &str = r#"
import sys, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

host, port = sys.argv[1].rsplit(":", 1)
upstream = sys.argv[2]

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            with urllib.request.urlopen("http://" + upstream + "/", timeout=2) as r:
                body, code = r.read(), 200
        except Exception as e:
            body, code = str(e).encode(), 502
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer((host, int(port)), Handler).serve_forever()
"#;

/// A topology of one shop cache, written into `dir`.
pub fn one_cache_topology(dir: &Path) -> PathBuf {
    let file = dir.join("t.toml");
    std::fs::write(
        &file,
        format!(
            "entrypoint = \"cache\"\n[services.cache]\ncommand = [\"{}\", \"cache\", \"--listen\", \"{{listen}}\"]\n",
            bin("shop").display()
        ),
    )
    .unwrap();
    file
}

/// Runs `faultline ARGS --agent AGENT`: its exit code, stdout and stderr (trimmed).
pub fn cli(agent: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("faultline"))
        .args(args)
        .args(["--agent", agent])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

/// The workspace's copy of the example in `examples/NAME`.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .canonicalize()
        .expect("the example exists")
}

/// `pid` and every process descended from it, from `/proc` (parents first).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        if let Some(ppid) = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
        {
            parents.push((p, ppid));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// True while `pid` is a live process (a zombie waiting to be reaped counts as dead).
pub fn alive(pid: u32) -> bool {
    !matches!(process_state(pid).as_deref(), Some("Z") | Some("X") | None)
}

/// Whether process `pid` is stopped: state T (SIGSTOP), or its cgroup2 is frozen (a
/// frozen process shows as sleeping).
pub fn stopped(pid: u32) -> bool {
    process_state(pid).as_deref() == Some("T") || cgroup_frozen(pid)
}

/// Whether the cgroup2 of process `pid` is frozen (`frozen 1` in its `cgroup.events`).
pub fn cgroup_frozen(pid: u32) -> bool {
    let Ok(own) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return false;
    };
    let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
        return false;
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(mount) = mountinfo.lines().find_map(|l| {
        let (before, after) = l.split_once(" - ")?;
        (after.split_whitespace().next() == Some("cgroup2"))
            .then(|| before.split_whitespace().nth(4).map(str::to_owned))?
    }) else {
        return false;
    };
    std::fs::read_to_string(format!("{mount}{path}/cgroup.events"))
        .is_ok_and(|e| e.lines().any(|l| l == "frozen 1"))
}

/// The state letter of process `pid` from `/proc/PID/stat`, if it exists.
pub fn process_state(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised command name.
    stat.rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .map(str::to_owned)
}

/// Reads lines from a child's output until `pick` finds what it wants in one (the line
/// comes without its newline); panics, naming `what`, if the output ends first.
pub fn find_line<T>(
    out: &mut impl std::io::BufRead,
    what: &str,
    mut pick: impl FnMut(&str) -> Option<T>,
) -> T {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no {what} line");
        if let Some(found) = pick(line.trim_end()) {
            return found;
        }
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What `GET /v1/faults` answers.
#[derive(serde::Deserialize)]
struct FaultList {
    faults: Vec<faultline_agent::faults::FaultInfo>,
}

/// The faults in effect at the agent at `agent` (a blocking call, for tests that drive
/// child processes).
pub fn active_faults(agent: &str) -> Vec<faultline_agent::faults::FaultInfo> {
    reqwest::blocking::Client::new()
        .get(format!("{agent}/v1/faults"))
        .send()
        .expect("the agent answers")
        .json::<FaultList>()
        .expect("a fault list")
        .faults
}

/// Panics unless the agent at `agent` has no fault in effect.
pub fn assert_no_faults(agent: &str) {
    let left = active_faults(agent);
    assert!(left.is_empty(), "faults left: {left:?}");
}

/// Replica `replica` as `faultline status --json` shows it on `agent` (null when it has
/// no such replica).
pub fn replica_json(agent: &str, replica: &str) -> serde_json::Value {
    let (code, out, err) = cli(agent, &["status", "--json"]);
    assert_eq!(code, 0, "faultline status: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("status --json is JSON");
    v["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == replica)
        .cloned()
        .unwrap_or_default()
}

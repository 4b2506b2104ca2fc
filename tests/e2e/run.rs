//! `faultline run` and `faultline demo` as a CI job runs them: real binaries, the real
//! shop, real faults; the verdict read from the exit code and the reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use faultline::run::report::{Report, RunStatus};
use faultline::shop::invariants::ACKNOWLEDGED;
use faultline_agent::api::Status;
use faultline_tests::{Up, active_faults, assert_no_faults, bin, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
}

fn faultline(d: &Dir, args: &[&str]) -> Command {
    let mut c = Command::new(bin("faultline"));
    c.env("FAULTLINE_HOME", d.home()).args(args);
    c
}

fn run(d: &Dir, args: &[&str]) -> Output {
    faultline(d, args).output().expect("run faultline")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The run's report.json, read back into the product's own type.
fn report(dir: &Path) -> Report {
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("report.json: {e}\n{text}"))
}

#[test]
fn run_judges_a_gameday_and_writes_its_reports() {
    let d = Dir::new();
    let file = d.write(
        "gameday.toml",
        r#"
name = "kill-and-poison"
description = "an orders replica down for 4 s, poison in the payments queue"
seed = 3
duration = "12s"

[load]
rate = 40
users = 16
workload = "shop"

[[slo]]
name = "availability"
objective = "availability>=95"

[[slo]]
objective = "latency<1s>=90"
step = "create order"

[[faults]]
at = "3s"
duration = "4s"
kind = "kill"
target = "orders-1"
hold = true

[[faults]]
at = "5s"
kind = "poison"
target = "payments"
count = 3

[[steady_state]]
path = "/api/v1/products/1"
"#,
    );
    let out_dir = d.path("out");
    let junit = d.path("ci/junit.xml");
    let out = run(
        &d,
        &[
            "run",
            file.to_str().unwrap(),
            "--report",
            out_dir.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("PASSED"), "{stdout}");
    // No [target]: the header says the bundled shop is the target, and how to name one.
    assert!(
        stderr.starts_with(&format!(
            "note: {} has no [target], so it runs against the bundled shop; to test your own system, name it under [target]: topology = ",
            file.display()
        )),
        "{stderr}"
    );
    // Not a terminal: plain progress lines.
    assert!(
        stderr.contains("t=   5s/12s") || stderr.contains("t=   6s/12s"),
        "{stderr}"
    );

    let r = report(&out_dir);
    assert_eq!(r.status, RunStatus::Completed);
    assert!(r.passed, "{:?}", r.failures);
    assert_eq!(r.seed, 3);
    let seconds = r.seconds.len();
    assert!((12..=13).contains(&seconds), "{seconds} per-second rows");
    assert_eq!(r.faults.len(), 2);
    let kill = &r.faults[0];
    assert_eq!(kill.label, "kill orders-1");
    let applied = kill.applied_at_s.unwrap();
    let healed = kill.healed_at_s.unwrap();
    assert!((2.9..3.8).contains(&applied), "applied at {applied}");
    assert!((6.9..7.8).contains(&healed), "healed at {healed}");
    let phases: Vec<&str> = r.phases.iter().map(|p| p.name.as_str()).collect();
    // The poison falls within the kill: one phase for both, every second in one phase.
    assert_eq!(
        phases,
        ["baseline", "kill orders-1 + poison payments", "recovery"]
    );
    let mut at = 0;
    for p in &r.phases {
        assert_eq!(p.start_s, at, "{:?}", r.phases);
        at = p.end_s;
    }
    assert_eq!(at, seconds, "{:?}", r.phases);
    let latency = &r.slos[1];
    assert_eq!(latency.evaluation.name, "create order latency<1s>=90");
    assert_eq!(latency.step.as_deref(), Some("create order"));
    assert!(latency.evaluation.total > 0);
    let acked = r.load.recorded[ACKNOWLEDGED];
    assert!(acked > 10, "{acked} orders acknowledged");
    let checks: Vec<(&str, bool)> = r
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.passed))
        .collect();
    for name in [
        "queues drained",
        "no acknowledged order lost",
        "every order terminal",
        "no order charged twice",
        "dead letter queues hold only injected poison",
        "steady state after: GET /api/v1/products/1",
    ] {
        assert!(checks.contains(&(name, true)), "{name} in {checks:?}");
    }
    let dlq = r
        .checks
        .iter()
        .find(|c| c.name == "dead letter queues hold only injected poison")
        .unwrap();
    assert_eq!(dlq.detail, "3 poison messages, nothing else");

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"<testcase name="slo: availability""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testcase name="check: no acknowledged order lost""#),
        "{xml}"
    );
    assert!(!xml.contains("<failure"), "{xml}");
    assert_eq!(
        xml,
        std::fs::read_to_string(out_dir.join("junit.xml")).unwrap()
    );
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("| kill orders-1 | 3 s for 4 s |"), "{md}");
}

#[test]
fn a_missed_objective_fails_the_run_and_says_why() {
    let d = Dir::new();
    let file = d.write(
        "failing.toml",
        r#"
name = "cdn-aborts"
duration = "8s"

[load]
rate = 50
users = 16
[[load.flows]]
name = "view"
steps = [{ name = "product", path = "/api/v1/products/{{random_int 1 1000}}" }]

[[slo]]
name = "availability"
objective = "availability>=99.9"

[[faults]]
at = "2s"
duration = "4s"
kind = "http-abort"
target = "gateway->cdn"
status = 503
percent = 100
"#,
    );
    let out_dir = d.path("out");
    let out = run(
        &d,
        &[
            "run",
            file.to_str().unwrap(),
            "--report",
            out_dir.to_str().unwrap(),
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("FAILED"), "{stdout}");
    let r = report(&out_dir);
    assert!(!r.passed);
    assert_eq!(r.status, RunStatus::Completed);
    assert!(
        r.failures
            .iter()
            .any(|f| f.starts_with("SLO `availability` missed")),
        "{:?}",
        r.failures
    );
    // The damage sits in the fault's phase, and the SLO noticed it.
    let slo = &r.slos[0];
    let phases = &slo.evaluation.phases;
    let baseline = phases[0].sli.unwrap();
    let during = phases[1].sli.unwrap();
    // (A loaded machine may fail a few baseline requests; the fault fails most.)
    assert!(baseline > 0.9, "baseline {baseline}");
    assert!(
        during < 0.5 && during < baseline - 0.4,
        "during the fault {during}"
    );
    let ttd = slo.faults[0].time_to_detect_s;
    assert!(ttd.is_some_and(|t| t <= 2), "time to detect {ttd:?}");
    let xml = std::fs::read_to_string(out_dir.join("junit.xml")).unwrap();
    assert!(
        xml.contains(r#"<failure message="SLI "#),
        "a failure with the reason: {xml}"
    );
    // No invariant checks without the bundled workload's orders? They run: the target is
    // the bundled shop; with no orders placed, nothing can be lost.
    assert!(r.checks.iter().all(|c| c.passed), "{:?}", r.checks);
}

fn experiment_against(agent: &str, body: &str) -> String {
    format!(
        r#"
name = "against-a-running-agent"
duration = "40s"

[target]
agent = "{agent}"

[load]
rate = 20
users = 8
[[load.flows]]
name = "view"
steps = [{{ name = "product", path = "/api/v1/products/{{{{random_int 1 1000}}}}" }}]

[checks]
invariants = false
{body}
"#
    )
}

#[test]
fn an_abort_guard_stops_the_run_and_every_fault_is_healed() {
    let up = Up::start(&[], &[]);
    let d = Dir::new();
    let file = d.write(
        "abort.toml",
        &experiment_against(
            &up.agent,
            r#"
[[slo]]
name = "availability"
objective = "availability>=99"

[[faults]]
at = "2s"
duration = "30s"
kind = "http-abort"
target = "gateway->cdn"
status = 500

[[abort]]
slo = "availability"
burn_rate = 10
for = "2s"
"#,
        ),
    );
    let out_dir = d.path("out");
    let started = std::time::Instant::now();
    let out = run(
        &d,
        &[
            "run",
            file.to_str().unwrap(),
            "--report",
            out_dir.to_str().unwrap(),
        ],
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        took < Duration::from_secs(20),
        "the guard stopped it: {took:?}"
    );
    // Healed by the runner itself, not by a lapsing lease: nothing is left now.
    assert_no_faults(&up.agent);
    let r = report(&out_dir);
    assert_eq!(r.status, RunStatus::Aborted);
    assert!(
        r.failures[0].starts_with("abort: SLO `availability` burned its budget"),
        "{:?}",
        r.failures
    );
    assert!(r.faults[0].healed_at_s.is_some());
}

/// Starts a run against `up`'s agent with one long fault and waits until the agent has
/// applied it.
fn start_long_fault_run(up: &Up, d: &Dir) -> Child {
    let file = d.write(
        "long.toml",
        &experiment_against(
            &up.agent,
            r#"
[[faults]]
at = "1s"
duration = "35s"
kind = "latency"
target = "payments->bank"
delay = "50ms"
"#,
        ),
    );
    let child = faultline(
        d,
        &[
            "run",
            file.to_str().unwrap(),
            "--report",
            d.path("out").to_str().unwrap(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || active_faults(&up.agent).len()
            == 1),
        "the run applied its fault"
    );
    child
}

#[test]
fn a_sigkilled_run_leaves_faults_that_heal_when_their_lease_lapses() {
    let up = Up::start(&[], &[]);
    let d = Dir::new();
    let mut child = start_long_fault_run(&up, &d);
    let fault = active_faults(&up.agent).remove(0);
    // The runner leases for at most 15 s and renews; killed, it renews no more.
    let lease_ms = fault.expires_ms - fault.applied_ms;
    assert!(lease_ms <= 15_500, "lease {lease_ms} ms");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    let killed = std::time::Instant::now();
    assert_eq!(active_faults(&up.agent).len(), 1, "nobody healed it yet");
    assert!(
        wait_until(Duration::from_secs(20), || active_faults(&up.agent)
            .is_empty()),
        "the agent healed the fault when its lease lapsed"
    );
    // Well before the fault's planned 35 s: the lease, not the plan, ended it.
    assert!(killed.elapsed() < Duration::from_secs(17));
}

#[test]
fn sigterm_heals_at_once_and_reports_the_run_interrupted() {
    let up = Up::start(&[], &[]);
    let d = Dir::new();
    let mut child = start_long_fault_run(&up, &d);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    assert_no_faults(&up.agent);
    let r = report(&d.path("out"));
    assert_eq!(r.status, RunStatus::Interrupted);
    assert!(r.elapsed_s < 30.0, "{} s", r.elapsed_s);
}

#[test]
fn a_bad_file_is_refused_before_anything_starts() {
    let d = Dir::new();
    let file = d.write(
        "bad.toml",
        "name = \"x\"\nduration = \"10s\"\n[load]\nrate = 5\nworkload = \"shop\"\n\n[[faults]]\nat = \"1s\"\nduration = \"2s\"\nkind = \"pause\"\ntarget = \"orderz\"\n",
    );
    let out = run(&d, &["run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:11:10: no service or replica `orderz`",
            file.display()
        )),
        "{stderr}"
    );
    assert!(!d.home().exists(), "no run directory was made");
}

#[test]
fn the_demo_passes_on_the_bundled_shop() {
    let d = Dir::new();
    let out_dir = d.path("out");
    let out = run(&d, &["demo", "--report", out_dir.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    // The demo is the bundled shop's by design: no note about a missing [target].
    assert!(!text(&out.stderr).contains("has no [target]"));
    let r = report(&out_dir);
    assert_eq!(r.experiment, "demo");
    let labels: Vec<&str> = r.faults.iter().map(|f| f.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "kill orders-2",
            "latency payments->bank",
            "queue-partition payments",
            "poison payments"
        ]
    );
    assert!(
        r.faults
            .iter()
            .all(|f| f.error.is_none() && f.healed_at_s.is_some()),
        "{:?}",
        r.faults
    );
}

/// Reads the `ready:` line the runner prints when it started the system itself.
fn ready_agent(stderr: &mut impl std::io::BufRead) -> String {
    faultline_tests::find_line(stderr, "ready", |line| {
        let rest = line.strip_prefix("ready: ")?;
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix("agent="))
            .map(str::to_owned)
    })
}

#[test]
fn sigint_of_a_run_that_started_the_shop_leaves_no_fault_and_no_process_behind() {
    let d = Dir::new();
    let file = d.write(
        "long.toml",
        r#"
name = "long"
duration = "60s"
[load]
rate = 20
workload = "shop"
[[faults]]
at = "1s"
duration = "50s"
kind = "pause"
target = "content-1"
"#,
    );
    let mut child = faultline(&d, &["run", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let agent = ready_agent(&mut stderr);
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    assert!(wait_until(Duration::from_secs(20), || active_faults(
        &agent
    )
    .len()
        == 1));
    let status: Status = reqwest::blocking::get(format!("{agent}/v1/status"))
        .unwrap()
        .json()
        .unwrap();
    let pids: Vec<u32> = status.replicas.iter().filter_map(|r| r.pid).collect();
    assert_eq!(pids.len(), 23);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(1));
    // The paused replica was resumed before the system stopped: its journal says healed.
    let journal = std::fs::read_to_string(
        std::fs::read_link(d.home().join("latest"))
            .unwrap()
            .join("faults.jsonl"),
    )
    .unwrap();
    assert!(journal.contains(r#""event":"healed""#), "{journal}");
    let left: Vec<u32> = pids
        .into_iter()
        .filter(|p| faultline_tests::alive(*p))
        .collect();
    assert!(left.is_empty(), "replicas left running: {left:?}");
}

/// Runs `experiment` against the bundled shop with `env` (the runner passes its
/// environment to every replica) and returns the checks of its report by name.
fn checks_of(env: &[(&str, &str)], experiment: &str) -> BTreeMap<String, (bool, String)> {
    let d = Dir::new();
    let file = d.write("x.toml", experiment);
    let out_dir = d.path("out");
    let out = faultline(
        &d,
        &[
            "run",
            file.to_str().unwrap(),
            "--report",
            out_dir.to_str().unwrap(),
        ],
    )
    .envs(env.iter().copied())
    .output()
    .unwrap();
    let r = report(&out_dir);
    assert!(
        out.status.code() == Some(if r.passed { 0 } else { 1 }),
        "{}",
        text(&out.stderr)
    );
    r.checks
        .into_iter()
        .map(|c| (c.name, (c.passed, c.detail)))
        .collect()
}

const ORDERS_ONLY: &str = r#"
[load.pool]
count = 100
username = "user{{n}}"
password = "pass{{n}}"
[[load.flows]]
name = "order"
[[load.flows.steps]]
name = "login"
once = true
method = "POST"
path = "/api/v1/auth/login"
headers = { content-type = "application/json" }
body = '{"username":"{{username}}","password":"{{password}}"}'
capture = { token = "token" }
[[load.flows.steps]]
name = "create order"
method = "POST"
path = "/api/v1/orders"
headers = { authorization = "Bearer {{token}}", content-type = "application/json", idempotency-key = "{{uuid}}" }
body = '{"items":[{"product_id":{{random_int 1 50}},"quantity":1}]}'
expect = [201]
capture = { order_id = "order_id" }
record = "order_id"
"#;

#[test]
fn the_checker_catches_lost_orders_when_the_store_does_not_fsync() {
    let experiment = format!(
        "name = \"no-fsync\"\nduration = \"8s\"\n[load]\nrate = 150\nusers = 32\n{ORDERS_ONLY}\n[[faults]]\nat = \"4s\"\nkind = \"kill\"\ntarget = \"store-primary\"\n"
    );
    let checks = checks_of(&[("SHOP_UNSAFE_NO_FSYNC", "1")], &experiment);
    let (passed, detail) = &checks["no acknowledged order lost"];
    assert!(!passed, "{detail}");
    assert!(
        detail.contains("acknowledged orders are missing"),
        "{detail}"
    );
}

#[test]
fn the_checker_catches_stranded_orders_without_the_outbox() {
    let experiment = format!(
        "name = \"no-outbox\"\nduration = \"8s\"\n[load]\nrate = 40\nusers = 16\n{ORDERS_ONLY}\n[[faults]]\nat = \"2s\"\nduration = \"3s\"\nkind = \"kill\"\ntarget = \"broker\"\nhold = true\n[checks]\ndrain_timeout = \"10s\"\n"
    );
    let checks = checks_of(&[("SHOP_UNSAFE_NO_OUTBOX", "1")], &experiment);
    let (passed, detail) = &checks["every order terminal"];
    assert!(!passed, "{detail}");
    assert!(detail.contains("still pending"), "{detail}");
}

#[test]
fn the_checker_catches_double_charges_without_idempotency_keys() {
    // The bank answers slowly, so payments holds messages mid-charge when it is killed;
    // the broker redelivers them.
    let experiment = format!(
        "name = \"no-idempotency\"\nduration = \"8s\"\n[load]\nrate = 20\nusers = 16\n{ORDERS_ONLY}\n[[faults]]\nat = \"4s\"\nkind = \"kill\"\ntarget = \"payments\"\n"
    );
    let checks = checks_of(
        &[
            ("SHOP_UNSAFE_NO_IDEMPOTENCY", "1"),
            ("SHOP_BANK_LATENCY", "1s"),
            ("SHOP_BROKER_VISIBILITY", "2s"),
        ],
        &experiment,
    );
    let (passed, detail) = &checks["no order charged twice"];
    assert!(!passed, "{detail}");
    assert!(detail.contains("charged more than once"), "{detail}");
}

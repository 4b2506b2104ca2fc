//! Generic checks (`[[checks.http]]`, `[[checks.command]]`) in `faultline run` against
//! a small system of the test's own: a Python HTTP server under a topology written as a
//! user would. Real binaries, real processes, real sockets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use faultline::run::report::{Report, RunStatus, Verdict};
use faultline_tests::bin;

/// A server answering `/health`, `/items` (JSON) and 404 otherwise, on `{listen}`.
const APP: &str = r#"
import http.server, json, sys
host, port = sys.argv[1].rsplit(":", 1)
ITEMS = json.dumps({"items": [{"id": 3, "name": "a"}], "count": 1}).encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/health":
            code, body = 200, b"ok"
        elif self.path.startswith("/items"):
            code, body = 200, ITEMS
        else:
            code, body = 404, b"no such page"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((host, int(port)), H).serve_forever()
"#;

struct System {
    dir: tempfile::TempDir,
}

impl System {
    /// A directory with the app, its topology and the experiment `body` is appended to.
    fn new(body: &str) -> System {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app.py");
        std::fs::write(&app, APP).unwrap();
        std::fs::write(
            dir.path().join("topology.toml"),
            format!(
                "name = \"mine\"\nentrypoint = \"web\"\n[services.web]\ncommand = [\"python3\", \"{}\", \"{{listen}}\"]\n",
                app.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("gameday.toml"),
            format!(
                "name = \"checks\"\nduration = \"3s\"\n[target]\ntopology = \"topology.toml\"\n[load]\nrate = 20\nusers = 4\n[[load.flows]]\nname = \"f\"\nsteps = [{{ name = \"items\", path = \"/items\" }}]\n[[slo]]\nname = \"availability\"\nobjective = \"availability>=90\"\n{body}"
            ),
        )
        .unwrap();
        System { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn faultline(&self, args: &[&str]) -> Output {
        Command::new(bin("faultline"))
            .env("FAULTLINE_HOME", self.path("home"))
            .env_remove("FAULTLINE_AGENT")
            .args(args)
            .output()
            .expect("run faultline")
    }

    /// `faultline run gameday.toml --report out`: the output and the report.
    fn run(&self) -> (Output, Report) {
        let file = self.path("gameday.toml");
        let out_dir = self.path("out");
        let out = self.faultline(&[
            "run",
            file.to_str().unwrap(),
            "--report",
            out_dir.to_str().unwrap(),
        ]);
        let text = std::fs::read_to_string(out_dir.join("report.json")).unwrap_or_else(|e| {
            panic!(
                "no report ({e}): {}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
        let report = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (out, report)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn http_and_command_checks_pass_and_fail_before_the_load_and_after_the_drain() {
    let s = System::new(
        r#"
[[checks.http]]
path = "/items"
json = { "$.items[0].id" = 3, "count" = 1 }
body_contains = "items"

[[checks.http]]
name = "missing page"
path = "/nope"
status = 404
when = "after"

[[checks.http]]
name = "two items"
path = "/items"
json = { "count" = 2 }
when = "after"
within = "1s"

[[checks.command]]
name = "environment"
argv = ["sh", "-c", "env | grep '^FAULTLINE_' | sort > seen-env.txt"]

[[checks.command]]
name = "broken"
argv = ["sh", "-c", "echo all is well; echo the ledger is off by 3 >&2; exit 4"]
when = "after"
within = "0s"
"#,
    );
    let (out, r) = s.run();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    // Two checks after the load fail: the hypothesis did not hold.
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(r.status, RunStatus::Completed);
    assert!(r.load.requests > 20, "{} requests", r.load.requests);
    assert_eq!(r.slos[0].verdict, Verdict::Met);
    let rows: BTreeMap<(String, String), (bool, String)> = r
        .checks
        .iter()
        .map(|c| {
            (
                (c.when.clone().unwrap_or_default(), c.name.clone()),
                (c.passed, c.detail.clone()),
            )
        })
        .collect();
    let row = |when: &str, name: &str| {
        rows.get(&(when.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no check `{name}` {when} in {rows:?}"))
            .clone()
    };
    assert!(row("before", "GET /items").0, "{rows:?}");
    assert!(row("after", "GET /items").0, "{rows:?}");
    assert!(row("after", "missing page").0, "{rows:?}");
    assert!(row("before", "environment").0, "{rows:?}");
    assert!(row("after", "environment").0, "{rows:?}");
    assert!(!rows.contains_key(&("before".into(), "broken".into())));
    let (passed, detail) = row("after", "two items");
    assert!(!passed);
    assert!(
        detail.starts_with("expected `count` = 2, found `count` = 1 (after "),
        "{detail}"
    );
    let two = r.checks.iter().find(|c| c.name == "two items").unwrap();
    assert!(
        two.attempts > 1,
        "retried within its second: {}",
        two.attempts
    );
    assert!((0.9..5.0).contains(&two.duration_s), "{}", two.duration_s);
    assert_eq!(two.expected.as_deref(), Some("`count` = 2"));
    let broken = r.checks.iter().find(|c| c.name == "broken").unwrap();
    assert_eq!(
        (broken.expected.as_deref(), broken.found.as_deref()),
        (Some("exit status 0"), Some("exit status 4"))
    );
    assert_eq!(broken.stderr.as_deref(), Some("the ledger is off by 3\n"));
    assert_eq!(broken.stdout.as_deref(), Some("all is well\n"));
    assert!(
        r.failures
            .iter()
            .any(|f| f.starts_with("broken: expected exit status 0")),
        "{:?}",
        r.failures
    );

    // What a command sees: the run's addresses, in the experiment's directory.
    let env: BTreeMap<String, String> = read(&s.path("seen-env.txt"))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let web = &env["FAULTLINE_SERVICE_WEB"];
    assert_eq!(
        env["FAULTLINE_ENTRYPOINT"],
        format!("http://{web}"),
        "{env:?}"
    );
    assert!(web.starts_with("127.0.0.1:"), "{env:?}");
    assert!(
        env["FAULTLINE_AGENT"].starts_with("http://127.0.0.1:"),
        "{env:?}"
    );
    let run_dir = Path::new(&env["FAULTLINE_RUN_DIR"]);
    assert!(
        run_dir.starts_with(s.path("home")) && run_dir.join("logs").is_dir(),
        "{env:?}"
    );

    // Each check is a JUnit case with its time; a failure says what was expected.
    let xml = read(&s.path("out/junit.xml"));
    for case in [
        "check before: GET /items",
        "check after: GET /items",
        "check before: environment",
        "check after: environment",
        "check after: broken",
    ] {
        assert!(
            xml.contains(&format!(r#"<testcase name="{case}""#)),
            "{case}: {xml}"
        );
    }
    assert!(
        xml.contains(r#"<failure message="expected exit status 0, found exit status 4""#),
        "{xml}"
    );
    assert!(
        xml.contains("the ledger is off by 3"),
        "stderr in the case: {xml}"
    );
    let md = read(&s.path("out/report.md"));
    assert!(
        md.contains("| broken | after | ❌ failed |"),
        "a row per check: {md}"
    );
    assert!(md.contains("`broken` stderr (its end):"), "{md}");
}

#[test]
fn a_failed_check_before_the_load_stops_the_run_with_exit_2_and_nothing_judged() {
    let s = System::new(
        r#"
[[checks.http]]
name = "ready"
path = "/items"
status = 201
when = "before"

[[checks.command]]
argv = ["sh", "-c", "echo before >> ran.txt"]
when = "after"
"#,
    );
    let (out, r) = s.run();
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert_eq!(r.status, RunStatus::NotStarted);
    assert_eq!(r.load.requests, 0, "no load was sent");
    assert!(r.phases.is_empty() && r.seconds.is_empty());
    assert_eq!(r.slos[0].verdict, Verdict::NotJudged);
    assert!(!r.slos[0].evaluation.met);
    assert_eq!(
        r.failures,
        [
            "check before the load `ready`: expected status 201, found status 200 with `{\"items\": [{\"id\": 3, \"name\": \"a\"}], \"count\": 1}`"
        ]
    );
    assert!(
        !s.path("ran.txt").exists(),
        "no check after a load that never ran"
    );
    assert!(stdout.contains("NOT STARTED"), "{stdout}");
    assert!(
        stdout.contains("| availability | 90% | - | - | - | not judged |"),
        "{stdout}"
    );
    let xml = read(&s.path("out/junit.xml"));
    assert!(xml.contains("<skipped message=\"not judged"), "{xml}");
}

#[test]
fn invariants_on_a_system_without_the_shops_audit_endpoints_are_refused_at_check_time() {
    let s = System::new("[checks]\ninvariants = true\n");
    let file = s.path("gameday.toml");
    let want = format!(
        "{}:15:14: [checks] invariants are the bundled shop's",
        file.display()
    );
    for command in ["check", "run"] {
        let out = s.faultline(&[command, file.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(stderr.contains(&want), "{command}: {stderr}");
        assert!(
            stderr.contains(
                "topology `mine` has no `orders` service, no `bank` service, no [messaging] broker"
            ),
            "{stderr}"
        );
    }
    assert!(!s.path("home").exists(), "nothing started");
}

#[test]
fn invariants_against_an_agent_without_the_shops_services_stop_the_run_before_its_load() {
    let s = System::new("");
    let (child, agent) =
        faultline_tests::start_agent(&s.path("agent-run"), &s.path("topology.toml"), &[]);
    let _agent = child;
    let file = s.path("against-agent.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"x\"\nduration = \"3s\"\n[target]\nagent = \"{agent}\"\n[load]\nrate = 5\n[[load.flows]]\nname = \"f\"\nsteps = [{{ name = \"items\", path = \"/items\" }}]\n[checks]\ninvariants = true\n"
        ),
    )
    .unwrap();
    let out_dir = s.path("out");
    let out = s.faultline(&[
        "run",
        file.to_str().unwrap(),
        "--report",
        out_dir.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("[checks] invariants are the bundled shop's")
            && stderr.contains("topology `mine` has no `orders` service"),
        "{stderr}"
    );
    assert!(!stderr.contains("running `x`"), "no load started: {stderr}");
    assert!(!out_dir.exists(), "nothing was judged, no report: {stderr}");
}

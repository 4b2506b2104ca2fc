//! The agent as a hostile or careless user meets it: targets that could reach a
//! process group or every process, faults that overlap, a journal damaged by a crash,
//! floods of idle connections, and requests that are wrong in every way a JSON body can
//! be. Each test is the regression test of a defect found that way.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use faultline_tests::metrics::sum;
use faultline_tests::{Killed, alive, bin, one_cache_topology, start_agent, stopped, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// POSTs a fault; its status and body.
fn inject(url: &str, body: Value) -> (u16, Value) {
    let resp = http()
        .post(format!("{url}/v1/faults"))
        .json(&body)
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.json().unwrap_or(Value::Null))
}

fn inject_ok(url: &str, body: Value) -> String {
    let (status, v) = inject(url, body.clone());
    assert_eq!(status, 201, "{body}: {v}");
    v["id"].as_str().unwrap().to_owned()
}

fn heal(url: &str, id: &str) {
    let resp = http()
        .delete(format!("{url}/v1/faults/{id}"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "heal {id}");
}

fn status(url: &str) -> Value {
    http()
        .get(format!("{url}/v1/status"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn replica(url: &str, name: &str) -> Value {
    status(url)["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no replica {name}"))
}

/// Waits until replica `name` is in `state`; returns it then.
fn wait_state(url: &str, name: &str, state: &str) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(20), || {
        last = replica(url, name);
        last["state"] == state
    });
    assert!(ok, "{name} never became {state}: {last}");
    last
}

fn sleeper() -> Killed {
    Killed(Command::new("sleep").arg("300").spawn().unwrap())
}

/// Two cache replicas in zones a and b, and a content service that calls them, so
/// there are edges to fault.
fn two_zone_topology(dir: &Path) -> PathBuf {
    let shop = bin("shop");
    let file = dir.join("zones.toml");
    std::fs::write(
        &file,
        format!(
            r#"entrypoint = "content"
[services.cache]
command = ["{shop}", "cache", "--listen", "{{listen}}"]
replicas = 2
zones = ["a", "b"]
[services.content]
command = ["{shop}", "content", "--listen", "{{listen}}", "--cache", "{{upstream:cache}}"]
calls = ["cache"]
"#,
            shop = shop.display()
        ),
    )
    .unwrap();
    file
}

/// A standalone agent on the topology `write` puts in a new directory, with `extra`
/// flags; the directory (the run directory is `run` in it), the agent and its URL.
fn agent_on(write: fn(&Path) -> PathBuf, extra: &[&str]) -> (tempfile::TempDir, Killed, String) {
    let dir = tempfile::tempdir().unwrap();
    let topology = write(dir.path());
    let (agent, url) = start_agent(&dir.path().join("run"), &topology, extra);
    (dir, agent, url)
}

#[test]
fn pid_targets_reach_one_process_never_a_group_or_every_process() {
    let (_dir, agent, url) = agent_on(one_cache_topology, &[]);
    // A process leading a group of its own. Read as u32 and passed to kill(2) as i32,
    // 2^32 - its pid is minus its pid: the whole group.
    let victim = Killed(
        Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let group = victim.0.id();
    let wraps_to_group = format!("pid:{}", (1u64 << 32) - u64::from(group));
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let too_big = format!("pid:{}", pid_max + 1);
    for target in [
        wraps_to_group.as_str(),
        "pid:4294967295",
        "pid:+5",
        "pid:-1",
        "pid:0",
        "pid:1",
        "pid:007",
        "pid:",
        "pid:1e3",
        " pid:5",
        too_big.as_str(),
    ] {
        for kind in ["kill", "pause", "terminate"] {
            let (status, v) = inject(&url, json!({"kind": kind, "target": target}));
            let error = v["error"].as_str().unwrap_or_default();
            assert_eq!(
                status,
                if target.starts_with(' ') { 404 } else { 400 },
                "{kind} {target}: {v}"
            );
            if !target.starts_with(' ') {
                assert!(
                    error.contains("not a process id target"),
                    "{target}: {error}"
                );
                assert!(error.contains(&format!("from 2 to {pid_max}")), "{error}");
            }
        }
    }
    // The same through the CLI.
    let out = Command::new(bin("faultline"))
        .args(["fault", "kill", &wraps_to_group, "--agent", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a process id target"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(alive(group), "nothing reached the victim's group");

    let own = format!("pid:{}", agent.0.id());
    let (status, v) = inject(&url, json!({"kind": "pause", "target": own}));
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("this agent itself"),
        "{v}"
    );
    let gone = {
        let mut c = Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    let (status, v) = inject(
        &url,
        json!({"kind": "kill", "target": format!("pid:{gone}")}),
    );
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no process"), "{v}");
    let victim_pid = format!("pid:{group}");
    let (status, v) = inject(
        &url,
        json!({"kind": "kill", "target": victim_pid, "hold": true}),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("`hold`"), "{v}");
    let (status, v) = inject(&url, json!({"kind": "restart", "target": victim_pid}));
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("takes kill, terminate, pause"),
        "{v}"
    );
    assert!(alive(group));
}

/// Where the fault proxy of edge `name` listens.
fn edge_listen(url: &str, name: &str) -> String {
    status(url)["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["listen"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no edge {name}"))
}

/// Latency from sending a request through `proxy` to the end of its answer.
fn round_trip(proxy: &str) -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    start.elapsed()
}

#[test]
fn overlapping_faults_undo_only_what_no_other_fault_still_needs() {
    let (_dir, _agent, url) = agent_on(two_zone_topology, &[]);
    let pid_of = |name: &str| replica(&url, name)["pid"].as_u64().unwrap() as u32;

    // pause + pause: the first heal leaves the replica stopped.
    let a = inject_ok(&url, json!({"kind": "pause", "target": "cache-1"}));
    let b = inject_ok(&url, json!({"kind": "pause", "target": "cache-1"}));
    heal(&url, &a);
    assert_eq!(replica(&url, "cache-1")["state"], "paused");
    assert!(
        stopped(pid_of("cache-1")),
        "cache-1 stays stopped while b pauses it"
    );
    heal(&url, &b);
    wait_state(&url, "cache-1", "healthy");

    // kill --hold + zone-outage: the first heal leaves the replica down.
    let k = inject_ok(
        &url,
        json!({"kind": "kill", "target": "cache-2", "hold": true}),
    );
    wait_state(&url, "cache-2", "held");
    let z = inject_ok(&url, json!({"kind": "zone-outage", "target": "b"}));
    heal(&url, &k);
    let r = replica(&url, "cache-2");
    assert_eq!(r["state"], "held", "{r}");
    // A restart does not lift a hold either.
    let (code, v) = inject(&url, json!({"kind": "restart", "target": "cache-2"}));
    assert_eq!(code, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("held down by"), "{v}");
    heal(&url, &z);
    wait_state(&url, "cache-2", "healthy");

    // pause + kill: the replica restarts, and waits paused while the pause lasts.
    let before = pid_of("cache-1");
    let p = inject_ok(&url, json!({"kind": "pause", "target": "cache-1"}));
    let (code, v) = inject(&url, json!({"kind": "kill", "target": "cache-1"}));
    assert_eq!(code, 201, "{v}");
    let mut r = Value::Null;
    assert!(
        wait_until(Duration::from_secs(20), || {
            r = replica(&url, "cache-1");
            r["restarts"] == 1 && r["state"] == "paused"
        }),
        "restarted into its pause: {r}"
    );
    let after = r["pid"].as_u64().unwrap() as u32;
    assert_ne!(after, before);
    assert!(stopped(after), "the new process waits stopped");
    heal(&url, &p);
    wait_state(&url, "cache-1", "healthy");

    // A process outside the topology paused twice.
    let victim = sleeper();
    let target = format!("pid:{}", victim.0.id());
    let a = inject_ok(&url, json!({"kind": "pause", "target": target}));
    let b = inject_ok(&url, json!({"kind": "pause", "target": target}));
    assert!(wait_until(Duration::from_secs(2), || stopped(
        victim.0.id()
    )));
    heal(&url, &a);
    assert!(stopped(victim.0.id()), "still paused by b");
    heal(&url, &b);
    assert!(wait_until(Duration::from_secs(2), || !stopped(
        victim.0.id()
    )));

    // Latency on an edge twice: the delays add up; healing one leaves the other.
    let edge = edge_listen(&url, "content->cache-1");
    let delay = |ms| json!({"kind": "latency", "target": "content->cache-1", "delay_ms": ms});
    let a = inject_ok(&url, delay(400));
    let b = inject_ok(&url, delay(400));
    let both = round_trip(&edge);
    assert!(
        both >= Duration::from_millis(790),
        "two latencies add up: {both:?}"
    );
    heal(&url, &a);
    let one = round_trip(&edge);
    assert!(
        one >= Duration::from_millis(390),
        "the other latency still holds: {one:?}"
    );
    assert!(one < both, "{one:?} after one heal, {both:?} before");
    heal(&url, &b);
    let none = round_trip(&edge);
    assert!(
        none < Duration::from_millis(390),
        "no latency left: {none:?}"
    );
}

/// The journal of an agent SIGKILLed with faults applied, damaged by `damage`, then
/// two agents in turn on the run directory: each must resume every process the one
/// before paused, start every replica it held, and list no fault.
/// `damage` returns the line it damaged, which the second agent must name.
fn survives_journal_damage(damage: impl Fn(&Path) -> usize) {
    let dir = tempfile::tempdir().unwrap();
    let topology = one_cache_topology(dir.path());
    let run_dir = dir.path().join("run");
    let journal = run_dir.join("faults.jsonl");
    let (agent, url) = start_agent(&run_dir, &topology, &[]);
    // A fault applied and healed first, so the file has a record before the ones that
    // matter.
    let early = sleeper();
    let id = inject_ok(
        &url,
        json!({"kind": "pause", "target": format!("pid:{}", early.0.id())}),
    );
    heal(&url, &id);
    let first = sleeper();
    inject_ok(
        &url,
        json!({"kind": "pause", "target": format!("pid:{}", first.0.id()), "ttl_ms": 600_000}),
    );
    inject_ok(
        &url,
        json!({"kind": "kill", "target": "cache-1", "hold": true, "ttl_ms": 600_000}),
    );
    wait_state(&url, "cache-1", "held");
    let mut agent = agent;
    kill(Pid::from_raw(agent.0.id() as i32), Signal::SIGKILL).unwrap();
    agent.0.wait().unwrap();
    assert!(stopped(first.0.id()), "the pause outlives the dead agent");
    let wants_line = damage(&journal);

    let (second, url) = start_agent(&run_dir, &topology, &[]);
    let mut second = second;
    assert!(
        wait_until(Duration::from_secs(5), || !stopped(first.0.id())),
        "the second agent resumed the first pause; journal:\n{}",
        String::from_utf8_lossy(&std::fs::read(&journal).unwrap())
    );
    assert_eq!(status(&url)["faults"], json!([]));
    wait_state(&url, "cache-1", "healthy");
    let stderr = std::fs::read_to_string(run_dir.with_extension("stderr")).unwrap();
    let said = format!("{}:{wants_line}:", journal.display());
    assert!(stderr.contains(&said), "`{said}` in:\n{stderr}");

    // What the second agent appends after the damage reads back whole.
    let later = sleeper();
    inject_ok(
        &url,
        json!({"kind": "pause", "target": format!("pid:{}", later.0.id()), "ttl_ms": 600_000}),
    );
    kill(Pid::from_raw(second.0.id() as i32), Signal::SIGKILL).unwrap();
    second.0.wait().unwrap();
    assert!(stopped(later.0.id()));
    let (third, url) = start_agent(&run_dir, &topology, &[]);
    let _third = third;
    assert!(
        wait_until(Duration::from_secs(5), || !stopped(later.0.id())),
        "the third agent resumed the second pause; journal:\n{}",
        String::from_utf8_lossy(&std::fs::read(&journal).unwrap())
    );
    assert!(!stopped(first.0.id()));
    assert_eq!(status(&url)["faults"], json!([]));
}

fn lines_of(journal: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(journal).unwrap();
    let mut lines: Vec<Vec<u8>> = bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    assert_eq!(
        lines.pop(),
        Some(Vec::new()),
        "the journal ends with a newline"
    );
    lines
}

fn write_lines(journal: &Path, lines: &[Vec<u8>]) {
    let mut out = lines.join(&b'\n');
    out.push(b'\n');
    std::fs::write(journal, out).unwrap();
}

#[test]
fn a_torn_last_record_is_cut_before_anything_is_appended() {
    survives_journal_damage(|j| {
        let n = lines_of(j).len();
        let mut f = std::fs::OpenOptions::new().append(true).open(j).unwrap();
        f.write_all(br#"{"crc32":1234,"record":{"event":"applied","id":"f0"#)
            .unwrap();
        n + 1
    });
}

#[test]
fn a_garbage_first_line_hides_no_later_record() {
    survives_journal_damage(|j| {
        let mut lines = lines_of(j);
        lines.insert(0, b"this is not a record".to_vec());
        write_lines(j, &lines);
        1
    });
}

#[test]
fn bytes_that_are_not_utf8_are_skipped_and_named() {
    survives_journal_damage(|j| {
        let mut lines = lines_of(j);
        lines.insert(2, vec![0xff, 0xfe, 0x00, b'{']);
        write_lines(j, &lines);
        3
    });
}

#[test]
fn a_damaged_record_in_the_middle_is_skipped_and_later_ones_recovered() {
    survives_journal_damage(|j| {
        let mut lines = lines_of(j);
        // The early fault's heal, line 2 of 4: a byte of its id changed, so its
        // checksum fails.
        let at = lines[1].windows(4).position(|w| w == b"\"id\"").unwrap() + 6;
        lines[1][at] = if lines[1][at] == b'0' { b'1' } else { b'0' };
        write_lines(j, &lines);
        2
    });
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Lets this test process hold `n` more sockets.
fn allow_open_files(n: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= n + 200,
        "the test needs {n} sockets; the hard limit is {hard}"
    );
    if soft < n + 200 {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
}

#[test]
fn ten_thousand_idle_connections_leave_probes_proxies_and_memory_alone() {
    const IDLE: u64 = 10_000;
    allow_open_files(IDLE);
    let (dir, agent, url) = agent_on(
        two_zone_topology,
        &["--api-max-connections", "256", "--api-header-timeout", "3s"],
    );
    let run_dir = dir.path().join("run");
    let edge = edge_listen(&url, "content->cache-1");
    let cache_pid = replica(&url, "cache-1")["pid"].as_u64().unwrap() as u32;
    let base = rss(agent.0.id());

    let addr = url.trim_start_matches("http://").to_owned();
    let mut held: Vec<TcpStream> = Vec::with_capacity(IDLE as usize);
    // Each sends half a request's headers, as a slowloris client does, and waits.
    for _ in 0..IDLE {
        match TcpStream::connect(&addr) {
            Ok(mut s) => {
                let _ = s.write_all(b"GET /v1/status HTTP/1.1\r\nhost: x\r\nx-wait: ");
                held.push(s);
            }
            Err(e) => panic!("connect {}: {e}", held.len()),
        }
    }
    let flooded = rss(agent.0.id());

    // Probes and restarts still work: a killed replica is seen, restarted and probed
    // healthy, all through the agent's file descriptors.
    kill(Pid::from_raw(cache_pid as i32), Signal::SIGKILL).unwrap();
    let status_file = run_dir.join("status.json");
    let mut last = Value::Null;
    let restarted = wait_until(Duration::from_secs(20), || {
        let Ok(text) = std::fs::read_to_string(&status_file) else {
            return false;
        };
        last = serde_json::from_str(&text).unwrap_or(Value::Null);
        last["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["name"] == "cache-1" && r["restarts"] == 1 && r["state"] == "healthy")
    });
    assert!(restarted, "cache-1 restarted under the flood: {last}");
    // The edge proxy carries traffic.
    round_trip(&edge);
    assert!(
        flooded < base + 48 * 1024 * 1024,
        "the agent grew from {} MB to {} MB under {IDLE} idle connections",
        base >> 20,
        flooded >> 20
    );

    // The held connections are closed at the header-read timeout; the API serves again.
    let mut first = held.swap_remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(first.read(&mut buf).unwrap_or(0), 0, "closed by the agent");
    drop(held);
    let metrics = wait_for_metrics(&url);
    let refused = sum(
        &metrics,
        "faultline_agent_api_connections_refused_total",
        &[],
    );
    assert!(
        refused >= (IDLE / 2) as f64,
        "refused {refused}:\n{metrics}"
    );
    eprintln!(
        "agent RSS: {} kB before, {} kB with {IDLE} idle connections held ({refused} refused)",
        base / 1024,
        flooded / 1024
    );
}

/// The agent's /metrics, once it answers again.
fn wait_for_metrics(url: &str) -> String {
    let mut text = String::new();
    let ok = wait_until(Duration::from_secs(20), || {
        match http().get(format!("{url}/metrics")).send() {
            Ok(r) if r.status() == 200 => {
                text = r.text().unwrap();
                true
            }
            _ => false,
        }
    });
    assert!(ok, "the API answers again");
    text
}

#[test]
fn every_wrong_request_gets_a_json_error_that_names_it() {
    let (_dir, _agent, url) = agent_on(two_zone_topology, &["--max-faults", "2"]);
    let raw = |body: &str| -> (u16, Value) {
        let resp = http()
            .post(format!("{url}/v1/faults"))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.json().unwrap_or(Value::Null))
    };
    let check = |body: &str, status: u16, message: &str| {
        let (s, v) = raw(body);
        assert_eq!(s, status, "{body}: {v}");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(e.contains(message), "{body}: {e}");
    };
    check(
        r#"{"kind":"pause","target":"cache-1","target":"cache-2"}"#,
        400,
        "duplicate key `target`",
    );
    check(
        r#"{"kind":"kill","target":5}"#,
        400,
        "`target` must be a string",
    );
    check(
        r#"{"kind":7,"target":"cache"}"#,
        400,
        "`kind` must be a string",
    );
    check(
        r#"{"kind":"latency","target":"content->cache","delay_ms":9467280000000}"#,
        400,
        "`delay_ms` must be at most 86400000 (24h)",
    );
    check(
        r#"{"kind":"slicer","target":"content->cache","average_size":18446744073709551615,"size_variation":5}"#,
        400,
        "at most 1048576",
    );
    check(
        r#"{"kind":"pause","target":"cache","ttl_ms":-1}"#,
        400,
        "`ttl_ms` must be",
    );
    check(
        r#"{"kind":"pause","target":"cache","ttl_ms":86400001}"#,
        400,
        "from 1 to 86400000",
    );

    // 405 and 413 are JSON too; 405 keeps its Allow header.
    let resp = http().put(format!("{url}/v1/status")).send().unwrap();
    assert_eq!(resp.status(), 405);
    assert!(resp.headers().get("allow").is_some());
    let v: Value = resp.json().unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("method not allowed"),
        "{v}"
    );
    let (s, v) = raw(&"x".repeat(100_000));
    assert_eq!(s, 413, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("larger than 65536 bytes"),
        "{v}"
    );

    // Ids have 64 random bits; the cap on faults in effect is a 429 that says so.
    let delay = json!({"kind": "latency", "target": "content->cache", "delay_ms": 1});
    let a = inject_ok(&url, delay.clone());
    let b = inject_ok(&url, delay.clone());
    for id in [&a, &b] {
        assert_eq!(id.len(), 17, "{id}");
        assert!(id[1..].chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    }
    let (s, v) = inject(&url, delay.clone());
    assert_eq!(s, 429, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("the limit is 2 (--max-faults)"),
        "{v}"
    );
    heal(&url, &a);
    inject_ok(&url, delay);
}

#[test]
fn the_token_is_checked_before_a_byte_of_the_body_is_read() {
    let (_dir, _agent, url) = agent_on(
        one_cache_topology,
        &["--listen", "127.0.0.1:0", "--token", "s3cret"],
    );
    let mut s = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Headers that promise a megabyte, and not one byte of it.
    s.write_all(b"POST /v1/faults HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 512];
    let n = s.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("bearer token"), "{answer}");
}

#[test]
fn start_up_errors_name_the_flag_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let topology = one_cache_topology(dir.path());
    let run = |args: &[&str]| {
        let out = Command::new(bin("faultline-agent"))
            .arg("--topology")
            .arg(&topology)
            .args(args)
            .env_remove("FAULTLINE_AGENT_TOKEN")
            .env("FAULTLINE_HOME", dir.path().join("home"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--listen", "0.0.0.0:0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("set a token (--token or FAULTLINE_AGENT_TOKEN)"),
        "{err}"
    );
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let (code, err) = run(&["--run-dir", file.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "cannot create the run directory {}",
            file.display()
        )),
        "{err}"
    );

    // A `latest` that loops is reported as what it is.
    let home = dir.path().join("loop-home");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::symlink(home.join("latest"), home.join("latest")).unwrap();
    let out = Command::new(bin("faultline"))
        .arg("status")
        .env("FAULTLINE_HOME", &home)
        .env_remove("FAULTLINE_AGENT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("does not exist"), "{err}");
    assert!(err.contains("symbolic links"), "{err}");
}

#[test]
fn sighup_stops_faultline_up_and_heals_its_faults() {
    let dir = tempfile::tempdir().unwrap();
    let topology = one_cache_topology(dir.path());
    let up = faultline_tests::Up::start(&["--topology", topology.to_str().unwrap()], &[]);
    let victim = sleeper();
    inject_ok(
        &up.agent,
        json!({"kind": "pause", "target": format!("pid:{}", victim.0.id())}),
    );
    assert!(wait_until(Duration::from_secs(2), || stopped(
        victim.0.id()
    )));
    let mut up = up;
    kill(Pid::from_raw(up.child.id() as i32), Signal::SIGHUP).unwrap();
    let status = up.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", up.stderr());
    assert!(!stopped(victim.0.id()), "healed on the way out");
    assert!(up.stderr().contains("SIGHUP: stopping"), "{}", up.stderr());
}

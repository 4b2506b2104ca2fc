//! A replica is its whole process tree: nginx's master and its two workers are paused,
//! killed and restarted together, and nothing a replica started (nginx's workers, a
//! double-forked `setsid` daemon) outlives a SIGKILL of `faultline up` or
//! `faultline-agent`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline_tests::{Shop, Up, alive, bin, start_agent, stopped, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A topology of nginx (`web`, master and two workers) and, with `daemon`, a Python
/// server that double-forks a `sleep` into a session of its own (`daemon`), both
/// marked with `marker` (nginx in its configuration path, the sleep in its argv[0]).
fn topology(dir: &Path, marker: &str, daemon: bool) -> PathBuf {
    let conf = dir.join(format!("nginx-{marker}.conf.in"));
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process on;\nworker_processes 2;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{ access_log off; server {{ listen 127.0.0.1:PORT;\n\
             location / {{ return 200 \"ok\\n\"; }} }} }}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let script = format!(
        "sed s/PORT/$1/ {c} > {c}.conf && exec /usr/sbin/nginx -e {d}/error.log -c {c}.conf",
        c = conf.display(),
        d = dir.display()
    );
    let mut text = format!(
        "entrypoint = \"web\"\n[services.web]\ncommand = [\"/bin/sh\", \"-c\", {script:?}, \"sh\", \"{{port}}\"]\n"
    );
    if daemon {
        let py = dir.join("daemon.py");
        std::fs::write(
            &py,
            format!(
                "import http.server, os, sys\n\
                 if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n\
                 \x20       os.execv('/bin/sleep', ['sleep-{marker}', '3600'])\n    os._exit(0)\n\
                 class H(http.server.BaseHTTPRequestHandler):\n\
                 \x20   def do_GET(self):\n        self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n\
                 \x20   def log_message(self, *a): pass\n\
                 http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
            ),
        )
        .unwrap();
        text.push_str(&format!(
            "[services.daemon]\ncommand = [\"python3\", {:?}, \"{{port}}\"]\n",
            py.display().to_string()
        ));
    }
    let file = dir.join("topology.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// A string no other test's process carries.
fn marker() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("ptree{}x{n}x{nanos}", std::process::id())
}

/// The children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1))
                    == Some(&pid.to_string())
            })
        })
        .collect()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live processes whose command line mentions `marker`.
fn marked(marker: &str) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|p| {
            alive(*p)
                && std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

/// nginx's master and its workers, once both workers run.
fn nginx_tree(master: u32) -> Vec<u32> {
    let mut workers = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            workers = children(master);
            workers.len() == 2
        }),
        "nginx's two workers: {workers:?}"
    );
    let mut all = vec![master];
    all.extend(workers);
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_nginxs_master_and_workers_and_resume_serves_again() {
    let dir = tempfile::tempdir().unwrap();
    let m = marker();
    let text = std::fs::read_to_string(topology(dir.path(), &m, false)).unwrap();
    let shop = Shop::start_text(&text, &[]).await;
    let master = shop.sup.replica_status("web-1").unwrap().pid.unwrap();
    let tree = nginx_tree(master);
    let http = shop.http.clone();
    let url = shop.url("/");
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);

    shop.sup.pause("web-1", "t").await.unwrap();
    for p in &tree {
        assert!(stopped(*p), "pid {p} of nginx's tree is not stopped");
    }
    let during = http
        .get(&url)
        .timeout(Duration::from_millis(800))
        .send()
        .await;
    assert!(during.is_err(), "a paused nginx answered: {during:?}");

    shop.sup.resume("web-1", "t").await.unwrap();
    assert!(tree.iter().all(|p| !stopped(*p)));
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_leave_no_old_nginx_worker() {
    let dir = tempfile::tempdir().unwrap();
    let m = marker();
    let text = std::fs::read_to_string(topology(dir.path(), &m, false)).unwrap();
    let shop = Shop::start_text(&text, &[]).await;
    for restart in [false, true] {
        let old = shop.sup.replica_status("web-1").unwrap().pid.unwrap();
        let old_tree = nginx_tree(old);
        if restart {
            shop.sup.restart("web-1").await.unwrap();
        } else {
            shop.sup.kill("web-1", None).await.unwrap();
        }
        let s = shop
            .sup
            .wait_for("web-1", Duration::from_secs(20), |s| {
                s.state == faultline_agent::supervisor::ReplicaState::Healthy
                    && s.pid.is_some_and(|p| p != old)
            })
            .await
            .expect("nginx back, healthy");
        let left: Vec<_> = old_tree.iter().filter(|p| alive(**p)).collect();
        assert!(left.is_empty(), "old nginx processes left: {left:?}");
        let new_tree = nginx_tree(s.pid.unwrap());
        assert!(new_tree.iter().all(|p| !old_tree.contains(p)));
        assert_eq!(
            shop.http.get(shop.url("/")).send().await.unwrap().status(),
            200
        );
    }
}

/// The cgroups of agent `pid` (none where the machine has no cgroup2).
fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup/unified/faultline");
    std::fs::read_dir(base)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{pid}-")))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The pids of `status.json`'s replicas in `run_dir`.
fn status_pids(run_dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    wait_until(Duration::from_secs(5), || {
        let doc: serde_json::Value = std::fs::read(run_dir.join("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        pids = doc["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["pid"].as_u64().map(|p| p as u32))
            .collect();
        pids.len() == 2
    });
    pids
}

/// SIGKILLs `agent` (pid) and checks that none of what its replicas started is left:
/// neither nginx's tree, nor the daemon, nor the agent's cgroups.
fn sigkill_leaves_nothing(agent: u32, trees: &[u32], m: &str) {
    assert!(!marked(m).is_empty(), "the marked processes run");
    kill(Pid::from_raw(agent as i32), Signal::SIGKILL).unwrap();
    let gone = wait_until(Duration::from_secs(15), || {
        trees.iter().all(|p| !alive(*p)) && marked(m).is_empty() && cgroups_of(agent).is_empty()
    });
    let left: Vec<_> = trees.iter().filter(|p| alive(**p)).collect();
    assert!(
        gone,
        "after SIGKILL of the agent: pids {left:?}, marked {:?}, cgroups {:?}",
        marked(m),
        cgroups_of(agent)
    );
}

#[test]
fn sigkill_of_the_agent_leaves_no_process_of_any_replica_tree() {
    let dir = tempfile::tempdir().unwrap();
    let m = marker();
    let file = topology(dir.path(), &m, true);
    let run_dir = dir.path().join("run");
    let (mut agent, _url) = start_agent(&run_dir, &file, &[]);
    let pids = status_pids(&run_dir);
    let mut trees = Vec::new();
    for p in pids {
        trees.extend(children(p));
        trees.push(p);
    }
    assert!(
        wait_until(Duration::from_secs(5), || marked(&format!("sleep-{m}"))
            .len()
            == 1),
        "the daemon's sleep runs"
    );
    sigkill_leaves_nothing(agent.id(), &trees, &m);
    agent.wait().unwrap();
}

#[test]
fn sigkill_of_up_leaves_no_nginx_process_nor_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let m = marker();
    let file = topology(dir.path(), &m, true);
    let mut up = Up::start(&["--topology", file.to_str().unwrap()], &[]);
    let mut trees = Vec::new();
    for r in &up.rows {
        if r.service == "web" {
            trees.extend(nginx_tree(r.pid));
        } else {
            trees.push(r.pid);
        }
    }
    assert!(wait_until(Duration::from_secs(5), || marked(&format!(
        "sleep-{m}"
    ))
    .len()
        == 1));
    sigkill_leaves_nothing(up.child.id(), &trees, &m);
    up.child.wait().unwrap();
}

/// The same SIGKILL with the reaper disabled leaves the daemon and nginx's workers
/// running: the reaper is what the test above depends on.
#[test]
fn without_the_reaper_a_sigkill_leaves_the_tree_behind() {
    let dir = tempfile::tempdir().unwrap();
    let m = marker();
    let file = topology(dir.path(), &m, true);
    let run_dir = dir.path().join("run");
    bin("faultline-agent");
    std::fs::create_dir_all(&run_dir).unwrap();
    let stderr = std::fs::File::create(run_dir.with_extension("stderr")).unwrap();
    let mut child = std::process::Command::new(bin("faultline-agent"))
        .env("FAULTLINE_HOME", run_dir.with_extension("home"))
        .env("FAULTLINE_UNSAFE_NO_REAPER", "1")
        .args(["--topology", file.to_str().unwrap(), "--run-dir"])
        .arg(&run_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    faultline_tests::find_line(&mut out, "ready", |l| l.starts_with("ready:").then_some(()));
    assert!(wait_until(Duration::from_secs(5), || marked(&format!(
        "sleep-{m}"
    ))
    .len()
        == 1));
    let agent = child.id();
    kill(Pid::from_raw(agent as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    // Nothing would ever kill the daemon now: it is in a session of its own and not a
    // child of the agent.
    let survivors = marked(&format!("sleep-{m}"));
    // Clean up what the missing reaper would have: the agent's cgroups.
    for cg in cgroups_of(agent) {
        for replica in std::fs::read_dir(&cg).unwrap().flatten() {
            let _ = std::fs::write(replica.path().join("cgroup.kill"), "1");
            wait_until(Duration::from_secs(5), || {
                std::fs::read_to_string(replica.path().join("cgroup.procs"))
                    .is_ok_and(|s| s.trim().is_empty())
            });
            let _ = std::fs::remove_dir(replica.path());
        }
        let _ = std::fs::remove_dir(&cg);
    }
    assert_eq!(
        survivors.len(),
        1,
        "the daemon's sleep was expected to survive without a reaper"
    );
}

/// Where cgroups cannot be used (`FAULTLINE_NO_CGROUPS=1`, or a namespace that hides
/// them), a replica is a process group. Killing it again and again must kill only the
/// replica: once its first process was reaped, a group id taken from it would be 0,
/// and `killpg(0)` is the agent's own group (seen: the agent, and the shell that
/// started it, killed by a replica's kill).
#[test]
fn without_cgroups_a_replicas_kill_leaves_the_agent_running() {
    let dir = tempfile::tempdir().unwrap();
    let topology = faultline_tests::one_cache_topology(dir.path());
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let (mut agent, ready) = faultline_tests::start_agent_env(
        &run_dir,
        &["--topology", topology.to_str().unwrap()],
        &[("FAULTLINE_NO_CGROUPS", "1")],
    );
    let url = faultline_tests::ready_field(&ready, "agent");
    let restarts = |url: &str| {
        faultline_tests::replica_json(url, "cache-1")["restarts"]
            .as_u64()
            .unwrap()
    };
    let client = reqwest::blocking::Client::new();
    for round in 1..=3u64 {
        let r = client
            .post(format!("{url}/v1/faults"))
            .json(&serde_json::json!({ "kind": "kill", "target": "cache-1" }))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text());
        assert!(
            wait_until(Duration::from_secs(20), || {
                agent.try_wait().unwrap().is_none()
                    && faultline_tests::replica_json(&url, "cache-1")["state"] == "healthy"
                    && restarts(&url) >= round
            }),
            "round {round}: the agent {} and cache-1 is {}",
            match agent.try_wait().unwrap() {
                Some(s) => format!("died ({s})"),
                None => "runs".into(),
            },
            faultline_tests::replica_json(&url, "cache-1")
        );
    }
    assert!(agent.try_wait().unwrap().is_none(), "the agent died");
    assert!(alive(agent.id()));
}

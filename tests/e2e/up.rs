//! `faultline up` as a user runs it.

use std::process::Command;
use std::time::Duration;

use faultline_tests::{Up, alive, bin, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn up_prints_ready_and_the_table_and_stops_cleanly_on_sigterm() {
    let mut up = Up::start(&[], &[]);
    assert!(
        up.gateway.starts_with("http://127.0.0.1:"),
        "{}",
        up.gateway
    );
    let services: std::collections::BTreeSet<_> =
        up.rows.iter().map(|r| r.service.as_str()).collect();
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        [
            "api",
            "auth",
            "bank",
            "broker",
            "cache",
            "cdn",
            "content",
            "gateway",
            "notifications",
            "orders",
            "payments",
            "store-primary",
            "store-replica",
            "store-witness"
        ]
    );
    assert_eq!(up.rows.iter().filter(|r| r.service == "content").count(), 2);
    assert!(
        up.rows
            .iter()
            .any(|r| r.replica == "content-2" && r.zone == "b")
    );
    let gw = up.rows.iter().find(|r| r.service == "gateway").unwrap();
    assert_eq!(format!("http://{}", gw.addr), up.gateway);

    let mut stream = std::net::TcpStream::connect(&up.gateway["http://".len()..]).unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let pids: Vec<u32> = up.rows.iter().map(|r| r.pid).collect();
    kill(Pid::from_raw(up.child.id() as i32), Signal::SIGTERM).unwrap();
    let status = up.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {}", up.stderr());
    for p in pids {
        assert!(!alive(p), "pid {p} survived faultline up");
    }
    assert!(up.run_dir.join("logs/gateway-1.log").exists());
}

#[test]
fn sigkill_of_up_leaves_no_shop_process_behind() {
    let mut up = Up::start(&[], &[]);
    let pids: Vec<u32> = up.rows.iter().map(|r| r.pid).collect();
    assert_eq!(pids.len(), 23);
    assert!(pids.iter().all(|p| alive(*p)));
    kill(Pid::from_raw(up.child.id() as i32), Signal::SIGKILL).unwrap();
    up.child.wait().unwrap();
    let gone = wait_until(Duration::from_secs(5), || pids.iter().all(|p| !alive(*p)));
    let left: Vec<_> = pids.iter().filter(|p| alive(**p)).collect();
    assert!(gone, "orphans after SIGKILL of the supervisor: {left:?}");
}

fn up_with_topology(text: &str) -> (std::process::Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(bin("faultline"))
        .args(["up", "--entrypoint-port", "0", "--topology"])
        .arg(&file)
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    (out, dir)
}

#[test]
fn a_bad_topology_is_reported_with_its_position_and_starts_nothing() {
    let (out, dir) = up_with_topology(
        "entrypoint = \"web\"\n[services.web]\ncommand = [\"x\", \"{upstream:db}\"]\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = dir.path().join("bad.toml");
    assert_eq!(
        err.trim(),
        format!(
            "error: {}:3:17: `{{upstream:db}}` needs `db` in the calls of `web` (calls = [])",
            file.display()
        )
    );
    assert!(out.stdout.is_empty());
    assert!(!dir.path().join("run").exists(), "nothing was started");

    let (out, _dir) = up_with_topology("[services.web]\ncommand = [\"x\"]\nreplicas = \"two\"\n");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3:12: "), "{err}");
    assert!(
        err.contains("invalid type: string \"two\", expected i64"),
        "{err}"
    );
}

#[test]
fn a_missing_program_is_a_setup_error() {
    let (out, dir) = up_with_topology(
        "entrypoint = \"web\"\n[services.web]\ncommand = [\"no-such-program-here\"]\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("program `no-such-program-here` of service `web` not found"),
        "{err}"
    );
    assert!(
        !dir.path().join("run/logs/web-1.log").exists(),
        "nothing was started"
    );
}

#[test]
fn a_service_that_never_gets_healthy_fails_the_start_with_its_log() {
    let (out, _dir) = up_with_topology(
        "entrypoint = \"web\"\n[services.web]\ncommand = [\"sh\", \"-c\", \"echo cannot open the database >&2; exit 3\"]\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replica web-1 did not become healthy: it failed to start 3 times (last: exited with code 3)"), "{err}");
    assert!(
        err.contains("cannot open the database"),
        "the log tail is shown: {err}"
    );
}

#[test]
fn a_port_held_by_another_server_is_not_mistaken_for_a_healthy_replica() {
    // An impostor answers 200 to everything on the port the topology asks for.
    let impostor = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = impostor.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in impostor.incoming() {
            let Ok(mut c) = conn else { return };
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    // The replica itself never binds: it takes a second to fail. Meanwhile the probe
    // reaches the impostor, which must not make the replica healthy.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.toml");
    std::fs::write(
        &file,
        format!(
            "entrypoint = \"web\"\n[services.web]\ncommand = [\"sh\", \"-c\", \"sleep 1; echo cannot listen on {{listen}} >&2; exit 1\"]\nport = {port}\nstartup_timeout = \"20s\"\n"
        ),
    )
    .unwrap();
    // No --entrypoint-port: the topology's taken port must be used.
    let mut child = Command::new(bin("faultline"))
        .args(["up", "--topology"])
        .arg(&file)
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A supervisor fooled by the impostor would print ready and run on: bound the wait.
    let exited = wait_until(Duration::from_secs(30), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        exited,
        "faultline up took the impostor for the replica: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("replica web-1 did not become healthy"),
        "{err}"
    );
    assert!(
        err.contains("cannot listen on 127.0.0.1:"),
        "the replica's own error is shown: {err}"
    );
}

//! A running Docker Compose project adopted (`faultline up --docker-project NAME`): its
//! containers are the services and replicas, faults act on them through the engine,
//! and on exit everything heals and the containers are left running as they were
//! found. The project is brought up by docker-compose (Debian's package), from the
//! shop's locally built image.

use std::process::Command;
use std::time::Duration;

use faultline_tests::docker::inspect;
use faultline_tests::{Up, bin, cli, replica_json, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn shop_image() -> String {
    faultline_tests::docker::images("e2e-compose")
}

/// A Compose project of two caches and a bank, up until dropped.
struct Project {
    name: String,
    dir: tempfile::TempDir,
}

impl Project {
    fn up() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("fle2e{}x{nanos}", std::process::id());
        std::fs::write(
            dir.path().join("docker-compose.yml"),
            format!(
                r#"version: "3.7"
services:
  cache:
    image: faultline/shop:{tag}
    command: ["cache", "--listen", "0.0.0.0:7000"]
    expose: ["7000"]
  bank:
    image: faultline/shop:{tag}
    command: ["bank", "--listen", "0.0.0.0:7200", "--data-dir", "/ledger"]
    expose: ["7200"]
"#,
                tag = shop_image()
            ),
        )
        .unwrap();
        let project = Project { name, dir };
        let out = project
            .compose(&["up", "-d", "--scale", "cache=2"])
            .output()
            .expect("run docker-compose (installed by .ci/run)");
        assert!(
            out.status.success(),
            "docker-compose up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        project
    }

    fn compose(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.current_dir(self.dir.path())
            .args(["-p", &self.name])
            .args(args);
        cmd
    }

    fn container(&self, service: &str, n: u32) -> String {
        format!("{}_{service}_{n}", self.name)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-t", "1", "-v"]).output();
    }
}

fn state_of(agent: &str, replica: &str) -> String {
    replica_json(agent, replica)["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn answers(addr: &str) -> bool {
    std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1)).is_ok()
}

#[test]
fn a_compose_project_is_adopted_faulted_and_left_running_as_it_was_found() {
    let project = Project::up();
    let containers = [
        project.container("bank", 1),
        project.container("cache", 1),
        project.container("cache", 2),
    ];
    let ids: Vec<String> = containers.iter().map(|c| inspect(c, "{{.Id}}")).collect();
    let mut up = Up::start_plain(&["--docker-project", &project.name], &[]);

    // The project's services and replicas, at the containers' own addresses.
    let rows: Vec<(&str, &str)> = up
        .rows
        .iter()
        .map(|r| (r.service.as_str(), r.replica.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("bank", "bank-1"),
            ("cache", "cache-1"),
            ("cache", "cache-2")
        ]
    );
    for (row, c) in up.rows.iter().zip(&containers) {
        let ip = inspect(
            c,
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        );
        let port = if row.service == "bank" { 7200 } else { 7000 };
        assert_eq!(row.addr, format!("{ip}:{port}"), "{c}");
        assert!(answers(&row.addr), "{c} answers at {}", row.addr);
    }
    let addr = |replica: &str| {
        up.rows
            .iter()
            .find(|r| r.replica == replica)
            .unwrap()
            .addr
            .clone()
    };

    // A kill without a hold: faultline starts the same container again.
    let started = inspect(&containers[2], "{{.State.StartedAt}}");
    let (code, _, err) = cli(&up.agent, &["fault", "kill", "cache-2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_until(Duration::from_secs(20), || {
            inspect(&containers[2], "{{.State.StartedAt}}") != started
                && state_of(&up.agent, "cache-2") == "healthy"
        }),
        "cache-2 was not started again: {}",
        state_of(&up.agent, "cache-2")
    );
    assert_eq!(inspect(&containers[2], "{{.Id}}"), ids[2], "not recreated");

    // Held down and paused, as the engine sees them.
    let (code, _, err) = cli(
        &up.agent,
        &["fault", "kill", "cache-1", "--hold", "--ttl", "60s"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&up.agent, &["fault", "pause", "bank-1", "--ttl", "60s"]);
    assert_eq!(code, 0, "{err}");
    assert!(wait_until(Duration::from_secs(10), || {
        inspect(&containers[1], "{{.State.Status}}") == "exited"
    }));
    assert!(!answers(&addr("cache-1")));
    assert_eq!(inspect(&containers[0], "{{.State.Status}}"), "paused");
    assert_eq!(state_of(&up.agent, "cache-1"), "held");

    // Stopped with both faults on: they heal, and every container runs again, the
    // same containers, none removed.
    kill(Pid::from_raw(up.child.id() as i32), Signal::SIGTERM).unwrap();
    let status = up.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", up.stderr());
    for (c, id) in containers.iter().zip(&ids) {
        assert_eq!(inspect(c, "{{.State.Status}}"), "running", "{c}");
        assert_eq!(&inspect(c, "{{.Id}}"), id, "{c}");
    }
    assert!(wait_until(Duration::from_secs(10), || answers(&addr(
        "cache-1"
    ))));
}

#[test]
fn a_container_that_stops_by_itself_is_not_started_by_faultline() {
    let project = Project::up();
    let cache2 = project.container("cache", 2);
    let up = Up::start_plain(&["--docker-project", &project.name], &[]);
    let out = Command::new("docker")
        .args(["stop", "-t", "1", &cache2])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(wait_until(Duration::from_secs(10), || {
        state_of(&up.agent, "cache-2") != "healthy"
    }));
    // Left as the user left it for a while (a bounded observation, not a readiness
    // wait): faultline adopted it and starts nothing of its own accord.
    assert!(
        !wait_until(Duration::from_secs(3), || {
            inspect(&cache2, "{{.State.Status}}") == "running"
        }),
        "faultline started a container the user stopped"
    );
    // Started again by hand, it is taken back.
    let out = Command::new("docker")
        .args(["start", &cache2])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        wait_until(Duration::from_secs(15), || state_of(&up.agent, "cache-2")
            == "healthy"),
        "{}",
        state_of(&up.agent, "cache-2")
    );
}

#[test]
fn a_project_that_is_not_running_is_named_in_the_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("faultline"))
        .args(["up", "--docker-project", "faultline-no-such-project"])
        .env("FAULTLINE_HOME", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("no container of Compose project `faultline-no-such-project`"),
        "{err}"
    );
    let out = Command::new(bin("faultline"))
        .args(["up", "--docker-project", "x", "--runtime", "docker"])
        .env("FAULTLINE_HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

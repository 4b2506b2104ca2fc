//! The dashboard as a user drives it: the real binary in tmux, keys sent, the screen
//! read back.

use std::process::Command;
use std::time::Duration;

use faultline_tests::{Up, active_faults, assert_no_faults, bin, wait_until};

/// A tmux server of this test's own (`-L`), so tests in parallel never meet (the
/// dashboard tests of `multi_host` use it too).
pub(crate) struct Tmux {
    socket: String,
}

impl Tmux {
    pub(crate) fn start(command: &str) -> Tmux {
        // One server per test: tests of one process run side by side.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("faultline-test-{}-{n}", std::process::id());
        let t = Tmux { socket };
        let ok = t
            .cmd(&[
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "120",
                "-y",
                "40",
                command,
            ])
            .success();
        assert!(ok, "tmux starts");
        // Keep the pane (and what the command printed last) after it exits.
        t.cmd(&["set-option", "-t", "t", "remain-on-exit", "on"]);
        t
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> std::process::ExitStatus {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .status()
            .expect("tmux runs (install it: apt-get install tmux)")
    }

    pub(crate) fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn keys(&self, keys: &str) {
        self.cmd(&["send-keys", "-t", "t", keys]);
    }

    pub(crate) fn wait_for(&self, what: &str, timeout: Duration) -> String {
        let mut last = String::new();
        let seen = wait_until(timeout, || {
            last = self.screen();
            last.contains(what)
        });
        assert!(seen, "`{what}` never showed; the screen:\n{last}");
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[test]
fn the_dashboard_pauses_kills_and_heals_with_keys_and_restores_the_terminal() {
    let up = Up::start(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let exit_file = dir.path().join("exit");
    let command = format!(
        "{} tui --agent {}; echo $? > {}; echo; echo; stty -a | tr ' ' '\\n' | grep -x -- '-*icanon'; echo DONE",
        bin("faultline").display(),
        up.agent,
        exit_file.display()
    );
    let tmux = Tmux::start(&command);
    tmux.wait_for("services (23 replicas", Duration::from_secs(20));
    // Down the list to orders-2.
    let found = wait_until(Duration::from_secs(10), || {
        if tmux.screen().contains("> orders-2") {
            return true;
        }
        tmux.keys("j");
        false
    });
    assert!(found, "orders-2 selected:\n{}", tmux.screen());
    tmux.keys("p");
    let screen = tmux.wait_for("PAUSED", Duration::from_secs(10));
    assert!(screen.contains("tui: pause orders-2"), "{screen}");
    assert_eq!(active_faults(&up.agent).len(), 1);
    // Kill it: the supervisor restarts it, and the screen says so.
    tmux.keys("x");
    tmux.wait_for("tui: kill orders-2", Duration::from_secs(10));
    let screen = tmux.wait_for("orders-2 restarted", Duration::from_secs(20));
    let row = screen
        .lines()
        .find(|l| l.contains("> orders-2"))
        .unwrap()
        .to_owned();
    // replica, zone, state, restarts: the restart shows in the row too.
    let words: Vec<&str> = row.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "orders-2").unwrap();
    let restarts: u32 = words[at + 3].parse().unwrap();
    assert!(restarts >= 1, "a restart in the row: {row}");
    // Help, then quit: the pause the dashboard applied is healed, the terminal is back.
    tmux.keys("?");
    tmux.wait_for("heal every fault", Duration::from_secs(5));
    tmux.keys("Escape");
    tmux.keys("q");
    // DONE comes after the terminal's mode is printed. (tmux may redraw the first row
    // of the main screen after the alternate screen goes: the blank lines absorb it.)
    let screen = tmux.wait_for("DONE", Duration::from_secs(10));
    let code = std::fs::read_to_string(&exit_file).unwrap();
    assert_eq!(
        code.trim(),
        "0",
        "faultline tui's exit code; the screen:\n{screen}"
    );
    assert!(
        screen.lines().any(|l| l.trim() == "icanon"),
        "the terminal is back in canonical mode:\n{screen}"
    );
    assert!(
        !screen.contains("services ("),
        "the alternate screen is gone:\n{screen}"
    );
    assert_no_faults(&up.agent);
}

/// A closed terminal (SIGHUP, here from tmux's killed session) heals what the dashboard
/// applied at once, as quitting does, rather than leaving it until its lease lapses.
#[test]
fn a_closed_terminal_heals_the_dashboards_faults() {
    let dir = tempfile::tempdir().unwrap();
    let topology = faultline_tests::one_cache_topology(dir.path());
    let up = Up::start(&["--topology", topology.to_str().unwrap()], &[]);
    let command = format!("{} tui --agent {}", bin("faultline").display(), up.agent);
    let tmux = Tmux::start(&command);
    tmux.wait_for("> cache-1", Duration::from_secs(20));
    tmux.keys("p");
    tmux.wait_for("PAUSED", Duration::from_secs(10));
    assert_eq!(active_faults(&up.agent).len(), 1);
    // The session goes, and its terminal with it: the dashboard gets SIGHUP.
    tmux.cmd(&["kill-session", "-t", "t"]);
    assert!(
        wait_until(Duration::from_secs(60), || active_faults(&up.agent)
            .is_empty()),
        "the pause is healed"
    );
    let metrics = reqwest::blocking::get(format!("{}/metrics", up.agent))
        .unwrap()
        .text()
        .unwrap();
    let healed = |reason| {
        faultline_tests::metrics::sum(
            &metrics,
            "faultline_agent_faults_healed_total",
            &[("kind", "pause"), ("reason", reason)],
        )
    };
    assert_eq!(healed("healed"), 1.0, "healed by the dashboard:\n{metrics}");
    assert_eq!(healed("expired"), 0.0, "not left to its lease:\n{metrics}");
}

/// The dashboard is the same on replicas that are containers (`runtime = "docker"`):
/// its pause is the engine's, and quitting heals it.
#[test]
fn the_dashboard_pauses_a_replica_that_is_a_container_and_heals_on_quit() {
    let tag = faultline_tests::docker::images("e2e-tui");
    let dir = tempfile::tempdir().unwrap();
    let topology = dir.path().join("topology.toml");
    std::fs::write(
        &topology,
        format!(
            "entrypoint = \"cache\"\nruntime = \"docker\"\nimage = \"faultline/shop:{tag}\"\n[services.cache]\ncommand = [\"shop\", \"cache\", \"--listen\", \"{{listen}}\"]\n"
        ),
    )
    .unwrap();
    let reaper = format!("faultline/agent:{tag}");
    let up = Up::start(
        &["--topology", topology.to_str().unwrap()],
        &[("FAULTLINE_REAPER_IMAGE", reaper.as_str())],
    );
    let container = faultline_tests::replica_json(&up.agent, "cache-1")["container"]
        .as_str()
        .expect("cache-1 runs in a container")
        .to_owned();
    let tmux = Tmux::start(&format!(
        "{} tui --agent {}",
        bin("faultline").display(),
        up.agent
    ));
    tmux.wait_for("> cache-1", Duration::from_secs(20));
    tmux.keys("p");
    tmux.wait_for("PAUSED", Duration::from_secs(10));
    let state = || faultline_tests::docker::inspect(&container, "{{.State.Status}}");
    assert_eq!(state(), "paused");
    tmux.keys("q");
    assert!(
        wait_until(Duration::from_secs(20), || state() == "running"
            && active_faults(&up.agent).is_empty()),
        "after quitting: {}, faults {:?}",
        state(),
        active_faults(&up.agent)
    );
}

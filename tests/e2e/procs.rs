//! Processes faultline did not start: `proc:PATTERN` finds them by command line, and a
//! process target is its whole tree unless `--no-tree` says otherwise.

use std::process::{Child, Command};
use std::time::Duration;

use faultline_tests::{Up, alive, bin, cli, process_state, process_tree, wait_until};

const T: Duration = Duration::from_secs(10);

/// A topology with one quiet replica: an agent to talk to, nothing of the shop.
fn quiet_up() -> (Up, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("topology.toml");
    std::fs::write(
        &file,
        "entrypoint = \"quiet\"\n[services.quiet]\ncommand = [\"sleep\", \"300\"]\nhealth = \"none\"\n",
    )
    .unwrap();
    let up = Up::start(&["--topology", file.to_str().unwrap()], &[]);
    (up, d)
}

/// A shell, named by `marker` in its command line, with two children that are not.
struct Tree {
    shell: Child,
    pids: Vec<u32>,
}

impl Tree {
    fn start(marker: &str) -> Tree {
        let shell = Command::new("sh")
            .args(["-c", "sleep 300 & sleep 300 & wait", marker])
            .spawn()
            .unwrap();
        let root = shell.id();
        assert!(wait_until(T, || process_tree(root).len() == 3));
        let pids = process_tree(root);
        Tree { shell, pids }
    }

    fn states(&self) -> Vec<Option<String>> {
        self.pids.iter().map(|p| process_state(*p)).collect()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        for p in &self.pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.shell.wait();
    }
}

fn marker() -> String {
    format!(
        "faultline-test-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn stopped(states: &[Option<String>]) -> Vec<bool> {
    states.iter().map(|s| s.as_deref() == Some("T")).collect()
}

#[test]
fn proc_pauses_and_kills_a_whole_tree_and_no_tree_only_the_match() {
    let (up, _d) = quiet_up();
    let m = marker();
    let tree = Tree::start(&m);
    let target = format!("proc:{m}");

    // Pause: the shell and both its children stop; heal: they run again.
    let (code, id, err) = cli(&up.agent, &["fault", "pause", &target, "--ttl", "60s"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_until(T, || stopped(&tree.states()) == [true, true, true]),
        "{:?}",
        tree.states()
    );
    let (code, _, err) = cli(&up.agent, &["heal", id.trim()]);
    assert_eq!(code, 0, "{err}");
    assert!(wait_until(T, || stopped(&tree.states()) == [false, false, false]));

    // --no-tree: the matched shell alone.
    let (code, id, err) = cli(
        &up.agent,
        &["fault", "pause", &target, "--no-tree", "--ttl", "60s"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_until(T, || stopped(&tree.states()) == [true, false, false]),
        "{:?}",
        tree.states()
    );
    let (code, _, err) = cli(&up.agent, &["heal", id.trim()]);
    assert_eq!(code, 0, "{err}");
    assert!(wait_until(T, || stopped(&tree.states()) == [false, false, false]));

    // Kill: the whole tree goes.
    let (code, _, err) = cli(&up.agent, &["fault", "kill", &target]);
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_until(T, || tree.pids.iter().all(|p| !alive(*p))),
        "{:?}",
        tree.states()
    );
}

#[test]
fn process_targets_that_name_nothing_or_ask_the_impossible_are_refused() {
    let (up, _d) = quiet_up();
    let m = marker();
    let _tree = Tree::start(&m);
    let refused = |args: &[&str], message: &str| {
        let (code, out, err) = cli(&up.agent, args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(message), "{args:?}: {err}");
    };
    let nothing = format!("proc:{}", marker());
    refused(
        &["fault", "kill", &nothing],
        &format!("no process matches {nothing}"),
    );
    refused(
        &["fault", "kill", "proc:("],
        "`proc:(` is not a valid regular expression",
    );
    let target = format!("proc:{m}");
    refused(
        &["fault", "restart", &target],
        &format!("nobody restarts {target}, a process faultline did not start"),
    );
    refused(
        &["fault", "kill", &target, "--hold"],
        &format!("`hold` keeps a supervised replica down, and nobody restarts {target}"),
    );
    refused(
        &["fault", "pause", "quiet-1", "--no-tree"],
        "`tree` applies to pid:N and proc:PATTERN targets; `quiet-1` is a replica or service",
    );
    // A pattern that only the agent's own command line holds matches nothing: the
    // agent never faults itself.
    let own = format!("proc:{}", up.run_dir.display());
    refused(&["fault", "kill", &own], "no process matches");
    assert!(alive(up.child.id()));
}

#[test]
fn an_experiment_places_process_target_mistakes_at_their_keys() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("gameday.toml");
    std::fs::write(
        &file,
        r#"name = "procs"
duration = "10s"

[target]
url = "http://127.0.0.1:9"
agent = "http://127.0.0.1:9"

[load]
rate = 1
workload = "shop"

[[faults]]
at = "1s"
kind = "kill"
target = "proc:("

[[faults]]
at = "2s"
kind = "kill"
target = "proc:worker"
hold = true

[[faults]]
at = "3s"
kind = "pause"
duration = "1s"
target = "api-1"
tree = false

[[faults]]
at = "4s"
kind = "pause"
duration = "1s"
target = "proc:worker --id [0-9]+"
tree = false
"#,
    )
    .unwrap();
    let out = Command::new(bin("faultline"))
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let f = file.display();
    for want in [
        format!("{f}:15:10: `proc:(` is not a valid regular expression"),
        format!(
            "{f}:21:8: `hold` keeps a supervised replica down, and nobody restarts proc:worker"
        ),
        format!("{f}:28:8: `tree` applies to pid:N and proc:PATTERN targets"),
    ] {
        assert!(err.contains(&want), "{want}\nnot in:\n{err}");
    }
    // The last fault is fine: three problems, not four.
    assert_eq!(err.matches(&format!("{f}:")).count(), 3, "{err}");
}

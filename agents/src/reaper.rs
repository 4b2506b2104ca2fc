//! The reaper: a small process each supervisor starts, which outlives the agent to kill
//! whatever the agent's replicas left, however the agent died.
//!
//! `PR_SET_PDEATHSIG` reaches only an agent's direct children; a replica's workers,
//! daemons and double-forked grandchildren would survive a SIGKILL of the agent. The
//! reaper is the agent's own binary run again (`/proc/self/exe`, or `faultline-agent`
//! where the running program does not call [`run_if_reaper`], as in tests) with the
//! marker [`MARKER_ENV`]. It runs in a session of its own without a death signal and
//! reads a pipe whose write end only the agent holds. End of file (the agent stopped,
//! or died, however) is its cue: it kills every replica cgroup of the agent (or, without
//! cgroups, every process group the agent told it about), waits until they are empty,
//! removes the cgroups and exits. On a clean stop the replicas are gone already and it
//! only removes the directories.

use std::io::{self, BufRead as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::supervisor::tree::{self, Kind};

/// Set to `1` in a process's environment: the process is a reaper.
pub const MARKER_ENV: &str = "FAULTLINE_REAPER";
/// Set to `1`: start no reaper, so replicas' trees can outlive a SIGKILLed agent. Only
/// for showing what the reaper is for (the tests do).
pub const UNSAFE_NO_REAPER_ENV: &str = "FAULTLINE_UNSAFE_NO_REAPER";

static HOOKED: AtomicBool = AtomicBool::new(false);

/// Called first thing in the `main` of every binary that embeds an agent: when this
/// process is a reaper, it does a reaper's work and exits; otherwise it returns at once,
/// and the binary can serve as its own reaper.
pub fn run_if_reaper() {
    HOOKED.store(true, Ordering::Relaxed);
    if std::env::var_os(MARKER_ENV).is_none_or(|v| v != "1") {
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(reap(&args));
}

/// The agent's end of a running reaper.
pub(crate) struct Reaper {
    child: Option<Child>,
    pipe: Option<ChildStdin>,
}

impl Reaper {
    /// Starts the reaper for the cgroups under `dir` (process groups when `None`);
    /// `Ok(None)` when disabled.
    pub(crate) fn start(bin_path: &[PathBuf], dir: Option<&Path>) -> io::Result<Option<Reaper>> {
        if std::env::var_os(UNSAFE_NO_REAPER_ENV).is_some_and(|v| v == "1") {
            tracing::warn!(
                "{UNSAFE_NO_REAPER_ENV}=1: no reaper; replicas may outlive a SIGKILLed agent"
            );
            return Ok(None);
        }
        let program = program(bin_path)
            .ok_or_else(|| io::Error::other("no faultline-agent binary to run as reaper"))?;
        let mut cmd = Command::new(program);
        cmd.arg0("faultline-reaper")
            .env(MARKER_ENV, "1")
            .arg(dir.map_or_else(|| "-".into(), |d| d.as_os_str().to_owned()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: setsid is async-signal-safe. A session of its own: signals to the
        // agent's process group or terminal do not reach the reaper, and no death
        // signal is set, so the agent's death does not end it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pipe = child.stdin.take();
        Ok(Some(Reaper {
            child: Some(child),
            pipe,
        }))
    }

    /// Tells the reaper that process group `pgid` exists (`live`) or is gone.
    pub(crate) fn tell(&mut self, pgid: u32, live: bool) {
        if let Some(p) = &mut self.pipe {
            let _ = writeln!(p, "{}{pgid}", if live { '+' } else { '-' });
        }
    }

    /// Closes the pipe and waits until the reaper has done its work.
    pub(crate) async fn finish(mut self) {
        drop(self.pipe.take());
        if let Some(mut child) = self.child.take() {
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        drop(self.pipe.take());
        // Not finished: a thread waits for it, so it leaves no zombie behind.
        if let Some(mut child) = self.child.take() {
            std::thread::spawn(move || {
                let _ = child.wait();
            });
        }
    }
}

/// The program to run as reaper: this one, when its `main` calls [`run_if_reaper`];
/// else `faultline-agent` from `bin_path` or beside this program.
fn program(bin_path: &[PathBuf]) -> Option<PathBuf> {
    if HOOKED.load(Ordering::Relaxed) {
        return Some(PathBuf::from("/proc/self/exe"));
    }
    let exe = std::env::current_exe().ok();
    let beside = exe.iter().flat_map(|e| e.ancestors().skip(1).take(2));
    bin_path
        .iter()
        .map(PathBuf::as_path)
        .chain(beside)
        .map(|d| d.join("faultline-agent"))
        .find(|p| p.is_file())
}

/// The reaper's work; returns its exit code.
fn reap(args: &[String]) -> i32 {
    // Job-control signals are not for the reaper; it ends when the pipe does.
    // SAFETY: setting a signal's disposition to ignore.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let dir = match args.first().map(String::as_str) {
        None => return 2,
        Some("-") => None,
        Some(d) => Some(PathBuf::from(d)),
    };
    let mut groups = std::collections::BTreeSet::new();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if let Some(g) = line.strip_prefix('+').and_then(|g| g.parse::<u32>().ok()) {
            groups.insert(g);
        } else if let Some(g) = line.strip_prefix('-').and_then(|g| g.parse::<u32>().ok()) {
            groups.remove(&g);
        }
    }
    for g in groups {
        let _ = tree::signal_group(g, nix::sys::signal::Signal::SIGKILL);
    }
    if let Some(dir) = dir {
        let kind = if dir.join("cgroup.procs").exists() && !dir.join("tasks").exists() {
            Kind::Cgroup2 {
                kill: dir.join("cgroup.kill").exists(),
            }
        } else {
            Kind::FreezerV1
        };
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        else {
            return 1;
        };
        rt.block_on(tree::remove_tree_dir(&dir, kind));
    }
    0
}

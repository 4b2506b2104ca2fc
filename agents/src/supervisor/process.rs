//! Starting and signalling replica processes.
//!
//! Every replica is the leader of its own process group, so a signal reaches anything it
//! started too, and it is bound to the supervisor's life with `PR_SET_PDEATHSIG`: when
//! the supervisor dies, even by SIGKILL, the kernel kills the replica. That signal
//! follows the *thread* that forked the child, which is why replicas are only spawned
//! from runtime worker threads, which live as long as the runtime.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Stdio;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

pub(crate) fn spawn(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (setpgid, prctl, getppid, _exit).
    unsafe {
        cmd.as_std_mut().pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The supervisor may have died between fork and prctl; then no signal will
            // ever come, so do not start at all.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Sends `signal` to the process group led by `pid`. A group that is already gone is
/// not an error.
pub(crate) fn signal_group(pid: u32, signal: Signal) -> io::Result<()> {
    match killpg(Pid::from_raw(pid as i32), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// A readable account of how a process ended.
pub(crate) fn describe_exit(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exited with code {code}")
    } else if let Some(sig) = status.signal() {
        let name = Signal::try_from(sig)
            .map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_owned());
        format!("killed by {name}")
    } else {
        "ended".to_owned()
    }
}

/// Waits until `pid` shows as stopped in `/proc` (SIGSTOP is delivered asynchronously,
/// and a multi-threaded process stops thread by thread), so a pause is in effect when
/// the call returns. Gives up after `timeout`.
pub(crate) async fn wait_stopped(pid: u32, timeout: std::time::Duration) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next());
        match state {
            Some("T") | Some("t") => return true,
            None | Some("Z") | Some("X") => return false,
            _ => {}
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

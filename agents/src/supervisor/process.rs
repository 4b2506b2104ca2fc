//! Starting replica processes and reading their state from `/proc`.
//!
//! A replica's first process joins its tree (its cgroup, see [`super::tree`]) between
//! fork and exec, so everything it forks is in the tree from the start. It also leads
//! its own process group, and it is bound to the supervisor's life with
//! `PR_SET_PDEATHSIG`: when the supervisor dies, even by SIGKILL, the kernel kills it
//! (its descendants are the reaper's, [`crate::reaper`]). That signal follows the
//! *thread* that forked the child, which is why replicas are only spawned from runtime
//! worker threads, which live as long as the runtime.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Stdio;

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};

use super::tree::JoinFile;

/// Starts `program`; with `join`, the new process writes itself into that cgroup's
/// `cgroup.procs` before exec.
pub(crate) fn spawn(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    cwd: &Path,
    log: &Path,
    join: Option<&JoinFile>,
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
    if !cwd.as_os_str().is_empty() {
        cmd.current_dir(cwd);
    }
    let parent = std::process::id() as libc::pid_t;
    let join = join.map(JoinFile::fd);
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (write, setpgid, prctl, getppid, _exit). The file descriptor stays open
    // in the parent until `spawn` returns.
    unsafe {
        cmd.as_std_mut().pre_exec(move || {
            // "0" is the writing process itself.
            if let Some(fd) = join
                && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
            {
                return Err(io::Error::last_os_error());
            }
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

/// A readable account of how a process ended.
pub fn describe_exit(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exited with code {code}")
    } else if let Some(sig) = status.signal() {
        format!("killed by {}", signal_name(sig))
    } else {
        "ended".to_owned()
    }
}

/// `SIGKILL` for 9; `signal N` for a number that names none.
pub(crate) fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_owned())
}

/// Waits until `pid` shows as stopped in `/proc` (SIGSTOP is delivered asynchronously,
/// and a multi-threaded process stops thread by thread), so a pause is in effect when
/// the call returns. Gives up after `timeout`.
pub(crate) async fn wait_stopped(pid: u32, timeout: std::time::Duration) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        match run_state(pid) {
            Some('T' | 't') => return true,
            None | Some('Z' | 'X') => return false,
            _ => {}
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// The state letter of `pid` in `/proc/PID/stat` (R, S, D, T, Z...); None when it is
/// gone.
fn run_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Whether `pid` is stopped by a signal (SIGSTOP, or a tracer): paused on purpose by
/// someone, not hung.
pub(crate) fn is_stopped(pid: u32) -> bool {
    matches!(run_state(pid), Some('T' | 't'))
}

/// True when one of `pids` (a replica's tree: a wrapper script's child counts) holds
/// the socket listening on TCP `port` (IPv4 or IPv6).
///
/// A health probe alone cannot tell *which* process answered: when a port picked for a
/// new replica is taken by another program in the meantime, the probe reaches that
/// program and would declare a replica healthy that never bound its port. Checking the
/// listener's owner in `/proc` closes that gap for any program, without its help.
pub(crate) fn owns_listener(pids: &[u32], port: u16) -> bool {
    let inodes = listening_inodes(port);
    !inodes.is_empty() && pids.iter().any(|p| holds_socket(*p, &inodes))
}

fn holds_socket(pid: u32, inodes: &[u64]) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            let t = target.to_string_lossy();
            t.strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|inode| inodes.contains(&inode))
        })
    })
}

/// Inodes of the sockets in LISTEN state on `port`, from `/proc/net/tcp{,6}`.
fn listening_inodes(port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let local_port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port)
                && let Ok(inode) = cols[9].parse()
            {
                out.push(inode);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_owner_of_a_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(owns_listener(&[std::process::id()], port));
        // pid 1 does not hold our socket.
        assert!(!owns_listener(&[1], port));
        drop(l);
        assert!(!owns_listener(&[std::process::id()], port));
    }
}

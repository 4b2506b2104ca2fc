//! A replica's process tree: every process a replica started, however it forked, found
//! and signalled as one.
//!
//! Where the kernel allows it (cgroup2 with `cgroup.freeze`, else the cgroup v1 freezer)
//! each replica runs in a cgroup of its own, `<mount>/faultline/<agent id>/<replica>`,
//! which its first process joins before `exec`, so nothing it forks escapes: kill is
//! `cgroup.kill` (or freeze, SIGKILL every member, thaw), pause is a freeze. Without
//! cgroups a replica is its process group, and the agent is a child subreaper so
//! orphans come back to it. The reaper ([`crate::reaper`]) cleans up after an agent
//! that died, however it died.

use std::io::{self, Write as _};
use std::os::fd::{AsRawFd as _, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::reaper::Reaper;

/// Set to `1` to run replicas as process groups even where cgroups are available (to
/// test the fallback).
pub const NO_CGROUPS_ENV: &str = "FAULTLINE_NO_CGROUPS";

/// How long a kill may take to empty a tree before it is reported as failed.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(10);

/// The kernel mechanism that holds replicas' process trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// cgroup2; `kill` says whether `cgroup.kill` exists (Linux 5.14).
    Cgroup2 { kill: bool },
    /// The cgroup v1 freezer hierarchy.
    FreezerV1,
    /// Process groups, with the agent as child subreaper.
    Group,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Cgroup2 { .. } => "cgroup2",
            Kind::FreezerV1 => "cgroup v1 freezer",
            Kind::Group => "process groups",
        }
    }
}

/// Every replica tree of one supervisor: the mechanism, the supervisor's own cgroup
/// directory and its reaper.
pub(crate) struct Trees {
    kind: Kind,
    dir: Option<PathBuf>,
    reaper: Mutex<Option<Reaper>>,
}

static LOGGED: std::sync::Once = std::sync::Once::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Trees {
    /// Finds the mechanism, creates this supervisor's cgroup directory, removes what
    /// dead agents left and starts the reaper.
    pub(crate) fn open(bin_path: &[PathBuf]) -> Trees {
        let id = format!(
            "{}-{}-{}",
            std::process::id(),
            start_time(std::process::id()).unwrap_or(0),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let (kind, dir) = detect(&id);
        if kind == Kind::Group {
            // Orphans of a replica come back to the agent, which can find and reap them.
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        }
        LOGGED.call_once(|| {
            tracing::info!(mechanism = kind.as_str(), dir = ?dir, "replica process trees");
        });
        if let Some(dir) = &dir
            && let Some(base) = dir.parent()
        {
            sweep_stale(base, kind);
        }
        let reaper = match Reaper::start(bin_path, dir.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "no reaper: replicas may outlive a SIGKILLed agent");
                None
            }
        };
        Trees {
            kind,
            dir,
            reaper: Mutex::new(reaper),
        }
    }

    /// The tree of replica `name` (its cgroup is created here, and kept across
    /// restarts).
    pub(crate) fn tree(&self, name: &str) -> Tree {
        let dir = self.dir.as_ref().and_then(|d| {
            let p = d.join(name);
            match std::fs::create_dir(&p) {
                Ok(()) => Some(p),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Some(p),
                Err(e) => {
                    tracing::warn!(replica = name, error = %e, "cannot create the replica's cgroup");
                    None
                }
            }
        });
        Tree {
            kind: if dir.is_some() {
                self.kind
            } else {
                Kind::Group
            },
            dir,
        }
    }

    /// Tells the reaper about a process group to kill if the agent dies (fallback).
    pub(crate) fn record_group(&self, pgid: u32, live: bool) {
        if self.kind == Kind::Group
            && let Some(r) = self.reaper.lock().unwrap().as_mut()
        {
            r.tell(pgid, live);
        }
    }

    /// Ends the reaper (it kills what is left, waits, removes the cgroups) and removes
    /// this supervisor's cgroup directory. Called once the replicas are stopped.
    pub(crate) async fn close(&self) {
        let reaper = self.reaper.lock().unwrap().take();
        if let Some(r) = reaper {
            r.finish().await;
        }
        if let Some(dir) = &self.dir {
            remove_tree_dir(dir, self.kind).await;
        }
    }
}

impl Drop for Trees {
    fn drop(&mut self) {
        // Closing the pipe is enough: the reaper kills and removes what is left.
        drop(self.reaper.lock().unwrap().take());
    }
}

/// One replica's processes.
pub(crate) struct Tree {
    kind: Kind,
    dir: Option<PathBuf>,
}

/// The file a new process writes `0` into, between fork and exec, to join its tree.
pub(crate) struct JoinFile(std::fs::File);

impl JoinFile {
    pub(crate) fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Tree {
    /// Opened before fork; `None` for process groups.
    pub(crate) fn join_file(&self) -> io::Result<Option<JoinFile>> {
        match &self.dir {
            Some(d) => Ok(Some(JoinFile(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))?,
            ))),
            None => Ok(None),
        }
    }

    /// Every live process of the tree whose first process is `leader`.
    pub(crate) fn pids(&self, leader: u32) -> Vec<u32> {
        match &self.dir {
            Some(d) => read_pids(&d.join("cgroup.procs")),
            None => group_members(leader),
        }
    }

    /// Sends `signal` to every process of the tree.
    pub(crate) fn signal(&self, leader: u32, signal: Signal) -> io::Result<()> {
        if self.dir.is_none() {
            return signal_group(leader, signal);
        }
        for p in self.pids(leader) {
            match kill(Pid::from_raw(p as i32), signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// SIGKILL to every process of the tree, at once; waits until the tree is empty
    /// (no process left, zombies aside).
    pub(crate) async fn kill(&self, leader: u32) -> io::Result<()> {
        match (&self.dir, self.kind) {
            (Some(d), Kind::Cgroup2 { kill: true }) => write(&d.join("cgroup.kill"), "1")?,
            (Some(_), _) => {
                // Frozen, no member can fork a process the kill would miss.
                self.freeze(leader).await?;
                let killed = self.signal(leader, Signal::SIGKILL);
                self.thaw(leader)?;
                killed?;
            }
            (None, _) => {
                signal_group(leader, Signal::SIGKILL)?;
                // Orphans that left the group came back to the agent (subreaper).
                return Ok(());
            }
        }
        let end = tokio::time::Instant::now() + EMPTY_TIMEOUT;
        while !self.pids(leader).is_empty() {
            if tokio::time::Instant::now() >= end {
                return Err(io::Error::other("processes left after SIGKILL"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// Stops every process of the tree and waits until all have stopped.
    pub(crate) async fn freeze(&self, leader: u32) -> io::Result<()> {
        match &self.dir {
            Some(d) => {
                set_frozen(d, self.kind, true)?;
                wait_frozen(d, self.kind, Duration::from_secs(2)).await;
            }
            None => {
                signal_group(leader, Signal::SIGSTOP)?;
                super::process::wait_stopped(leader, Duration::from_secs(1)).await;
            }
        }
        Ok(())
    }

    pub(crate) fn thaw(&self, leader: u32) -> io::Result<()> {
        match &self.dir {
            Some(d) => set_frozen(d, self.kind, false),
            None => signal_group(leader, Signal::SIGCONT),
        }
    }

    /// Ready for a new first process: not frozen (a process joining a frozen cgroup
    /// before exec would never get to exec).
    pub(crate) fn prepare(&self) -> io::Result<()> {
        match &self.dir {
            Some(d) => set_frozen(d, self.kind, false),
            None => Ok(()),
        }
    }
}

/// Sends `signal` to the process group led by `pid`. A group that is already gone is
/// not an error. Groups 0 (the caller's own: the agent's) and 1 are refused, whatever
/// bug would ask for them.
pub(crate) fn signal_group(pid: u32, signal: Signal) -> io::Result<()> {
    if pid <= 1 || pid > i32::MAX as u32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no process group {pid} to signal"),
        ));
    }
    match killpg(Pid::from_raw(pid as i32), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

fn set_frozen(dir: &Path, kind: Kind, frozen: bool) -> io::Result<()> {
    match kind {
        Kind::FreezerV1 => write(
            &dir.join("freezer.state"),
            if frozen { "FROZEN" } else { "THAWED" },
        ),
        _ => write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" }),
    }
}

fn is_frozen(dir: &Path, kind: Kind) -> bool {
    match kind {
        Kind::FreezerV1 => {
            std::fs::read_to_string(dir.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
        }
        _ => std::fs::read_to_string(dir.join("cgroup.events"))
            .is_ok_and(|s| s.lines().any(|l| l == "frozen 1")),
    }
}

async fn wait_frozen(dir: &Path, kind: Kind, timeout: Duration) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        if is_frozen(dir, kind) {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub(crate) fn read_pids(procs: &Path) -> Vec<u32> {
    std::fs::read_to_string(procs)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Processes whose process group is `pgid`.
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|p| stat_field(*p, 2).as_deref() == Some(&pgid.to_string()))
        .collect()
}

fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// Field `n` of `/proc/PID/stat` counted after the command name (0 is the state).
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(n)
        .map(str::to_owned)
}

/// When process `pid` started, in clock ticks since boot: with the pid, it names a
/// process for good (pids are reused, this pair is not).
fn start_time(pid: u32) -> Option<u64> {
    stat_field(pid, 19)?.parse().ok()
}

/// The mechanism this machine offers, and this supervisor's directory under it.
fn detect(id: &str) -> (Kind, Option<PathBuf>) {
    if std::env::var_os(NO_CGROUPS_ENV).is_some_and(|v| v == "1") {
        return (Kind::Group, None);
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if let Some(mount) = find_mount(&mountinfo, |fs, _| fs == "cgroup2") {
        let dir = mount.join("faultline").join(id);
        if std::fs::create_dir_all(&dir).is_ok() {
            if dir.join("cgroup.freeze").exists() {
                let kill = dir.join("cgroup.kill").exists();
                return (Kind::Cgroup2 { kill }, Some(dir));
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
    if let Some(mount) = find_mount(&mountinfo, |fs, opts| {
        fs == "cgroup" && opts.split(',').any(|o| o == "freezer")
    }) {
        let dir = mount.join("faultline").join(id);
        if std::fs::create_dir_all(&dir).is_ok() {
            if dir.join("freezer.state").exists() {
                return (Kind::FreezerV1, Some(dir));
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
    (Kind::Group, None)
}

/// The mount point of the first filesystem in `mountinfo` that `matches` (its type
/// and super options).
fn find_mount(mountinfo: &str, matches: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split_whitespace();
        let fs = after.next()?;
        let _source = after.next();
        let opts = after.next().unwrap_or("");
        let mount_point = before.split_whitespace().nth(4)?;
        matches(fs, opts).then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// Mount points in mountinfo escape space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Kills what is left in the replica cgroups under `dir`, waits until they are empty
/// and removes them and `dir` (best effort).
pub(crate) async fn remove_tree_dir(dir: &Path, kind: Kind) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let tree = Tree {
            kind,
            dir: Some(e.path()),
        };
        if let Err(err) = tree.kill(0).await {
            tracing::warn!(cgroup = %e.path().display(), error = %err, "cannot empty a replica cgroup");
        }
        let _ = std::fs::remove_dir(e.path());
    }
    let _ = std::fs::remove_dir(dir);
}

/// Removes the directories under `base` (`<mount>/faultline`) that agents which are
/// gone left, when no reaper is working on them any more (best effort).
fn sweep_stale(base: &Path, kind: Kind) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let stale: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && is_stale(p))
        .collect();
    if stale.is_empty() {
        return;
    }
    // Runs before the runtime may exist (and outside it); a thread of its own keeps
    // the kills' waiting off the caller.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build();
        if let Ok(rt) = rt {
            for dir in stale {
                tracing::info!(cgroup = %dir.display(), "removing a dead agent's cgroups");
                rt.block_on(remove_tree_dir(&dir, kind));
            }
        }
    });
}

/// A directory `<pid>-<start time>-<n>` whose agent is gone and whose reaper is not at
/// work on it.
fn is_stale(dir: &Path) -> bool {
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let mut parts = name.split('-');
    let (Some(pid), Some(start)) = (
        parts.next().and_then(|p| p.parse::<u32>().ok()),
        parts.next().and_then(|s| s.parse::<u64>().ok()),
    ) else {
        return false;
    };
    if start_time(pid) == Some(start) {
        return false;
    }
    let needle = dir.as_os_str().as_encoded_bytes();
    !all_pids().into_iter().any(|p| {
        std::fs::read(format!("/proc/{p}/cmdline"))
            .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == needle))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup_mounts_in_mountinfo() {
        let info = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                    37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n\
                    41 31 0:38 / /sys/fs/cgroup/un\\040ified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_mount(info, |fs, _| fs == "cgroup2"),
            Some(PathBuf::from("/sys/fs/cgroup/un ified"))
        );
        assert_eq!(
            find_mount(info, |fs, o| fs == "cgroup"
                && o.split(',').any(|o| o == "freezer")),
            Some(PathBuf::from("/sys/fs/cgroup/freezer"))
        );
        assert_eq!(find_mount("", |_, _| true), None);
    }

    #[test]
    fn a_live_agents_directory_is_not_stale() {
        let me = std::process::id();
        let dir = PathBuf::from(format!("/x/{me}-{}-0", start_time(me).unwrap()));
        assert!(!is_stale(&dir));
        // Same pid, another start time: that agent is gone.
        assert!(is_stale(&PathBuf::from(format!("/x/{me}-1-0"))));
        assert!(!is_stale(Path::new("/x/not-ours")));
    }
}

//! The processes a `pid:N` or `proc:PATTERN` target names, found in `/proc` when the
//! fault is applied: the matches (never this agent, its ancestors, kernel threads,
//! zombies, or the command that asked, whose own command line holds the pattern) and,
//! for a tree, every descendant, parents before children.

use std::collections::{BTreeSet, HashMap};

use nix::unistd::Pid;

use super::FaultError;
use super::spec::ProcessTarget;

/// The most processes one fault acts on.
pub const MAX_PROCESSES: usize = 1000;

/// One process as `/proc` shows it.
struct Proc {
    pid: i32,
    ppid: i32,
    zombie: bool,
    /// Arguments joined by spaces; empty for a kernel thread.
    cmdline: String,
}

fn read(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: read after the last.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    // Arguments end in NUL; an empty argument stays (two spaces), as `pgrep -f` shows it.
    // A program that rewrote its title (redis-server, nginx) leaves NULs after it.
    let end = raw.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let raw = &raw[..end];
    let cmdline = raw
        .split(|b| *b == 0)
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    Some(Proc {
        pid,
        ppid,
        zombie: matches!(state, "Z" | "X"),
        cmdline,
    })
}

fn all() -> Vec<Proc> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read)
        .collect()
}

/// This process and its ancestors: never a target.
fn lineage(by_pid: &HashMap<i32, &Proc>) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let mut pid = std::process::id() as i32;
    while pid > 1 && out.insert(pid) {
        pid = by_pid.get(&pid).map_or(0, |p| p.ppid);
    }
    out
}

/// The processes `target` names (written `asked`), with their descendants when `tree`,
/// parents before children.
pub fn find(target: &ProcessTarget, tree: bool, asked: &str) -> Result<Vec<i32>, FaultError> {
    let procs = all();
    let by_pid: HashMap<i32, &Proc> = procs.iter().map(|p| (p.pid, p)).collect();
    let spared = lineage(&by_pid);
    let roots: Vec<i32> = match target {
        ProcessTarget::Pid(pid) => {
            if spared.contains(pid) {
                return Err(FaultError::BadRequest(format!(
                    "{asked} is this agent itself or one of its ancestors"
                )));
            }
            match nix::sys::signal::kill(Pid::from_raw(*pid), None) {
                Ok(()) => vec![*pid],
                Err(nix::errno::Errno::ESRCH) => {
                    return Err(FaultError::UnknownTarget(format!(
                        "no process {pid} on this machine"
                    )));
                }
                Err(e) => {
                    return Err(FaultError::BadRequest(format!(
                        "this agent may not signal process {pid}: {e}"
                    )));
                }
            }
        }
        ProcessTarget::Pattern(pattern) => {
            let re = regex::Regex::new(pattern)
                .map_err(|e| FaultError::BadRequest(format!("{asked}: {e}")))?;
            let found: Vec<i32> = procs
                .iter()
                .filter(|p| {
                    !p.zombie
                        && !p.cmdline.is_empty()
                        && !spared.contains(&p.pid)
                        // The command that asked holds the pattern in its own arguments.
                        && !p.cmdline.contains(asked)
                        && re.is_match(&p.cmdline)
                })
                .map(|p| p.pid)
                .collect();
            if found.is_empty() {
                return Err(FaultError::UnknownTarget(format!(
                    "no process matches {asked} (a regular expression over command lines, as `pgrep -f` reads them; this agent, its ancestors and the command that asked never match)"
                )));
            }
            found
        }
    };
    let mut out = roots.clone();
    let mut seen: BTreeSet<i32> = roots.iter().copied().collect();
    if tree {
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for p in procs.iter().filter(|p| !p.zombie) {
            children.entry(p.ppid).or_default().push(p.pid);
        }
        let mut i = 0;
        while i < out.len() && out.len() <= MAX_PROCESSES {
            for c in children.get(&out[i]).into_iter().flatten() {
                if !spared.contains(c) && seen.insert(*c) {
                    out.push(*c);
                }
            }
            i += 1;
        }
    }
    if out.len() > MAX_PROCESSES {
        return Err(FaultError::BadRequest(format!(
            "{asked} names more than {MAX_PROCESSES} processes{}; the limit is {MAX_PROCESSES}: make the pattern narrower",
            if tree { " with their trees" } else { "" }
        )));
    }
    Ok(out)
}

//! The fault journal: an append-only file in the run directory recording each fault
//! applied, renewed and healed, with what it takes to heal it. An agent that starts on a
//! run directory heals whatever the journal says is still applied, so a fault cannot
//! outlive an agent that crashed.
//!
//! Each record is one line of JSON, `{"crc32":N,"record":{...}}`, whose checksum covers
//! the record's bytes, so the file stays readable with `jq` and every kind of damage is
//! told apart:
//! - a *torn tail* (a crash mid-write leaves a last line without its newline) is cut off
//!   before anything is appended, so a new record never lands on a broken line; the
//!   fault it described never took effect, since a fault is applied only once its record
//!   is synced;
//! - a *damaged record* (a complete line whose checksum, JSON or UTF-8 is wrong) is
//!   reported with its line number and skipped, and every record after it still counts.
//!
//! Damage never stops an agent from starting.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::spec::FaultRequest;

/// What healing a fault takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "snake_case")]
pub enum Undo {
    /// Nothing left to undo (a kill whose replica restarts by itself, injected messages).
    Nothing,
    /// Let held-down replicas start again.
    Release { replicas: Vec<String> },
    /// SIGCONT paused replicas.
    Resume { replicas: Vec<String> },
    /// SIGCONT paused processes outside the topology.
    ResumePids { pids: Vec<u32> },
    /// Remove the fault's toxics from these edges.
    Toxics { edges: Vec<String> },
    /// Unpause these Docker containers.
    UnpauseContainers { containers: Vec<String> },
    /// Start these Docker containers again (a held kill or stop).
    StartContainers { containers: Vec<String> },
    /// A network fault in Docker containers: delete its iptables rules and root qdiscs
    /// in their network namespaces, and connect them again to the networks it
    /// disconnected them from.
    ContainerNetwork {
        #[serde(default)]
        rules: Vec<super::netns::Rule>,
        #[serde(default)]
        qdiscs: Vec<super::netns::Qdisc>,
        #[serde(default)]
        reconnect: Vec<super::containers::Link>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    Applied {
        id: String,
        request: FaultRequest,
        undo: Undo,
        applied_ms: u64,
        expires_ms: u64,
    },
    Renewed {
        id: String,
        expires_ms: u64,
    },
    Healed {
        id: String,
        healed_ms: u64,
        reason: String,
    },
}

/// A line of the journal that could not be read, or the torn tail that was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// 1-based line number in the file.
    pub line: usize,
    pub reason: String,
}

/// What a journal holds: its records, and what was damaged.
#[derive(Debug, Default)]
pub struct Contents {
    pub entries: Vec<Entry>,
    pub damaged: Vec<Damage>,
    /// Bytes of a torn last line (no newline), if any.
    pub torn: Option<Damage>,
    /// Where the last complete line ends: what a cut keeps.
    complete_len: u64,
}

impl Contents {
    /// Faults applied and never healed, with what healing them takes.
    pub fn unhealed(&self) -> Vec<(String, FaultRequest, Undo)> {
        let mut open: Vec<(String, FaultRequest, Undo)> = Vec::new();
        for e in &self.entries {
            match e {
                Entry::Applied {
                    id, request, undo, ..
                } => open.push((id.clone(), request.clone(), undo.clone())),
                Entry::Healed { id, .. } => open.retain(|(i, _, _)| i != id),
                Entry::Renewed { .. } => {}
            }
        }
        open
    }

    /// One line per problem, `PATH:LINE: what`, for the user.
    pub fn problems(&self, path: &Path) -> Vec<String> {
        self.damaged
            .iter()
            .chain(&self.torn)
            .map(|d| format!("{}:{}: {}", path.display(), d.line, d.reason))
            .collect()
    }
}

#[derive(Serialize)]
struct FramedOut<'a> {
    crc32: u32,
    record: &'a RawValue,
}

#[derive(Deserialize)]
struct FramedIn<'a> {
    crc32: u32,
    #[serde(borrow)]
    record: &'a RawValue,
}

/// One complete line's record.
fn parse_line(line: &[u8]) -> Result<Entry, String> {
    let text = std::str::from_utf8(line)
        .map_err(|e| format!("damaged record skipped: not UTF-8 ({e})"))?;
    if let Ok(framed) = serde_json::from_str::<FramedIn>(text) {
        let got = crc32fast::hash(framed.record.get().as_bytes());
        if got != framed.crc32 {
            return Err(format!(
                "damaged record skipped: checksum {got:08x}, recorded {:08x}",
                framed.crc32
            ));
        }
        return serde_json::from_str(framed.record.get())
            .map_err(|e| format!("damaged record skipped: {e}"));
    }
    // A line written before records carried a checksum.
    serde_json::from_str(text).map_err(|e| format!("damaged record skipped: {e}"))
}

/// Reads the journal at `path` without changing it (a missing file is empty).
pub fn read(path: &Path) -> io::Result<Contents> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Contents::default()),
        Err(e) => return Err(e),
    }
    let mut out = Contents::default();
    let mut start = 0usize;
    let mut number = 0usize;
    while start < bytes.len() {
        number += 1;
        let Some(len) = bytes[start..].iter().position(|b| *b == b'\n') else {
            out.torn = Some(Damage {
                line: number,
                reason: format!(
                    "torn last record cut ({} bytes without a newline: a write the agent did not finish)",
                    bytes.len() - start
                ),
            });
            break;
        };
        let line = &bytes[start..start + len];
        start += len + 1;
        out.complete_len = start as u64;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(line) {
            Ok(e) => out.entries.push(e),
            Err(reason) => out.damaged.push(Damage {
                line: number,
                reason,
            }),
        }
    }
    Ok(out)
}

pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    /// Opens the journal of `run_dir` for appending, creating it, after reading what it
    /// holds and cutting a torn tail off, so the next record starts on a line of its own.
    pub fn open(run_dir: &Path) -> io::Result<(Journal, Contents)> {
        let path = run_dir.join("faults.jsonl");
        let contents = read(&path)?;
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        if contents.torn.is_some() {
            file.set_len(contents.complete_len)?;
            file.sync_data()?;
        }
        let mut file = file;
        file.seek(io::SeekFrom::End(0))?;
        Ok((
            Journal {
                path,
                file: Mutex::new(file),
            },
            contents,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and syncs it: a fault is on record before it takes effect.
    pub fn append(&self, entry: &Entry) -> io::Result<()> {
        let record = serde_json::to_string(entry).map_err(io::Error::other)?;
        let record = RawValue::from_string(record).map_err(io::Error::other)?;
        let mut line = serde_json::to_vec(&FramedOut {
            crc32: crc32fast::hash(record.get().as_bytes()),
            record: &record,
        })
        .map_err(io::Error::other)?;
        line.push(b'\n');
        let mut f = self.file.lock().unwrap();
        f.write_all(&line)?;
        f.sync_data()
    }
}

/// Heals what `contents` (the journal's, as [`Journal::open`] read it) says is still
/// applied, left by an agent that stopped without healing it (a crash, a SIGKILL).
/// Processes outside the topology that it paused are resumed, containers it paused or
/// held down are unpaused or started, and its network faults in containers undone
/// (containers outlive it); replicas and proxies of that agent died with it, so nothing
/// of their faults is left to undo. Returns the faults healed.
pub async fn recover(
    journal: &Journal,
    contents: &Contents,
    containers: &super::containers::Containers,
) -> io::Result<Vec<String>> {
    let mut healed = Vec::new();
    for (id, request, undo) in contents.unhealed() {
        match &undo {
            Undo::ResumePids { pids } => {
                for pid in pids {
                    // Only what `pid_target` accepted was ever journalled; check again
                    // rather than trust a file: never a group, never every process.
                    if (2..=super::spec::pid_max()).contains(&u64::from(*pid)) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(*pid as i32),
                            nix::sys::signal::Signal::SIGCONT,
                        );
                    }
                }
            }
            // Containers outlive the agent that faulted them: put them back as they were.
            Undo::UnpauseContainers { containers: names } => {
                for n in names {
                    containers.recover_unpause(n).await;
                }
            }
            Undo::StartContainers { containers: names } => {
                for n in names {
                    containers.start(n).await;
                }
            }
            Undo::ContainerNetwork {
                rules,
                qdiscs,
                reconnect,
            } => containers.recover_net(&id, rules, qdiscs, reconnect).await,
            Undo::Nothing | Undo::Release { .. } | Undo::Resume { .. } | Undo::Toxics { .. } => {}
        }
        tracing::warn!(
            fault = id,
            kind = request.spec.kind(),
            "healed a fault left applied by a previous agent"
        );
        journal.append(&Entry::Healed {
            id: id.clone(),
            healed_ms: super::now_ms(),
            reason: "recovered".into(),
        })?;
        healed.push(id);
    }
    Ok(healed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::spec::FaultSpec;

    fn applied(id: &str) -> Entry {
        Entry::Applied {
            id: id.into(),
            request: FaultRequest {
                tree: None,
                spec: FaultSpec::Pause,
                target: "pid:12345".into(),
                ttl_ms: None,
                seed: None,
            },
            undo: Undo::ResumePids { pids: vec![12345] },
            applied_ms: 1,
            expires_ms: 2,
        }
    }

    fn ids(c: &Contents) -> Vec<String> {
        c.unhealed().into_iter().map(|(id, _, _)| id).collect()
    }

    #[test]
    fn a_torn_tail_is_cut_before_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path()).unwrap();
        j.append(&applied("a")).unwrap();
        drop(j);
        let path = dir.path().join("faults.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"crc32":1,"record":{"event":"hea"#)
            .unwrap();
        drop(f);
        let (j, c) = Journal::open(dir.path()).unwrap();
        assert_eq!(c.torn.as_ref().unwrap().line, 2);
        assert!(c.damaged.is_empty());
        j.append(&applied("b")).unwrap();
        let c = read(&path).unwrap();
        assert!(
            c.torn.is_none() && c.damaged.is_empty(),
            "{:?}",
            c.problems(&path)
        );
        assert_eq!(ids(&c), ["a", "b"]);
    }

    #[test]
    fn a_damaged_record_is_skipped_and_later_ones_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faults.jsonl");
        let (j, _) = Journal::open(dir.path()).unwrap();
        j.append(&applied("a")).unwrap();
        j.append(&applied("b")).unwrap();
        j.append(&applied("c")).unwrap();
        drop(j);
        let text = std::fs::read(&path).unwrap();
        let mut lines: Vec<Vec<u8>> = text.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
        // Line 1 is garbage, line 2 has a flipped byte in its record, line 3 holds
        // bytes that are not UTF-8.
        lines[0] = b"garbage".to_vec();
        let at = lines[1].iter().position(|b| *b == b'a').unwrap();
        lines[1][at] = b'z';
        lines.insert(2, vec![0xff, 0xfe, b'{']);
        std::fs::write(&path, lines.join(&b'\n')).unwrap();
        let (_, c) = Journal::open(dir.path()).unwrap();
        let lines: Vec<usize> = c.damaged.iter().map(|d| d.line).collect();
        assert_eq!(lines, [1, 2, 3], "{:?}", c.problems(&path));
        assert!(c.damaged[1].reason.contains("checksum"), "{:?}", c.damaged);
        assert!(c.damaged[2].reason.contains("UTF-8"), "{:?}", c.damaged);
        assert_eq!(ids(&c), ["c"]);
    }

    #[test]
    fn unframed_lines_of_earlier_journals_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut line = serde_json::to_vec(&applied("old")).unwrap();
        line.push(b'\n');
        std::fs::write(dir.path().join("faults.jsonl"), line).unwrap();
        let (_, c) = Journal::open(dir.path()).unwrap();
        assert_eq!(ids(&c), ["old"]);
    }
}

//! The fault journal: an append-only JSON-lines file in the run directory recording each
//! fault applied and healed, with what it takes to heal it. An agent that starts on a run
//! directory heals whatever the journal says is still applied, so a fault cannot outlive
//! an agent that crashed.

use std::fs::OpenOptions;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn new(run_dir: &Path) -> Self {
        Self {
            path: run_dir.join("faults.jsonl"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry and syncs it: a fault is on record before it takes effect.
    pub fn append(&self, entry: &Entry) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        f.write_all(&line)?;
        f.sync_data()
    }

    /// Every entry, in order; a torn last line (a crash mid-write) is ignored.
    pub fn read(&self) -> io::Result<Vec<Entry>> {
        let f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for line in io::BufReader::new(f).lines() {
            let line = line?;
            match serde_json::from_str(&line) {
                Ok(e) => out.push(e),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// Faults applied and never healed, with what healing them takes.
    pub fn unhealed(&self) -> io::Result<Vec<(String, FaultRequest, Undo)>> {
        let mut open: Vec<(String, FaultRequest, Undo)> = Vec::new();
        for e in self.read()? {
            match e {
                Entry::Applied {
                    id, request, undo, ..
                } => open.push((id, request, undo)),
                Entry::Healed { id, .. } => open.retain(|(i, _, _)| *i != id),
                Entry::Renewed { .. } => {}
            }
        }
        Ok(open)
    }
}

/// Heals what the journal in `run_dir` says is still applied, left by an agent that
/// stopped without healing it (a crash, a SIGKILL). Processes outside the topology that
/// it paused are resumed; replicas and proxies of that agent died with it, so nothing of
/// their faults is left to undo. Returns the faults healed.
pub fn recover(run_dir: &Path) -> io::Result<Vec<String>> {
    let journal = Journal::new(run_dir);
    let open = journal.unhealed()?;
    let mut healed = Vec::new();
    for (id, request, undo) in open {
        if let Undo::ResumePids { pids } = &undo {
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGCONT,
                );
            }
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

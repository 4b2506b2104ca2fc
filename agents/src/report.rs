//! Plain-text views of a running topology, shared by `faultline up` and the standalone
//! agent.

use crate::supervisor::{ReplicaStatus, Supervisor};

/// `ready: NAME=http://ADDR agent=http://ADDR`, the line scripts wait for. NAME is the
/// entrypoint service's own name (`gateway=` for the bundled shop, `lb=` for a topology
/// whose entrypoint is `lb`); a topology without an entrypoint prints the agent alone.
pub fn ready_line(sup: &Supervisor, agent_url: &str) -> String {
    match (sup.entrypoint(), sup.topology().entrypoint.as_deref()) {
        (Some(addr), Some(name)) => {
            format!("ready: {}=http://{addr} agent={agent_url}", ready_key(name))
        }
        _ => format!("ready: agent={agent_url}"),
    }
}

/// The ready line's key for entrypoint `service`: its name, or `entrypoint` for a
/// service called `agent`, whose key the agent's address holds.
pub fn ready_key(service: &str) -> &str {
    if service == "agent" {
        "entrypoint"
    } else {
        service
    }
}

/// One row per replica: service, replica, zone, address, state, pid, restarts.
pub fn table(replicas: &[ReplicaStatus]) -> String {
    let header = [
        "SERVICE", "REPLICA", "ZONE", "ADDRESS", "STATE", "PID", "RESTARTS",
    ];
    let rows: Vec<[String; 7]> = replicas
        .iter()
        .map(|r| {
            [
                r.service.clone(),
                r.name.clone(),
                r.zone.clone(),
                r.addr.to_string(),
                r.state.as_str().to_owned(),
                r.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                r.restarts.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&header);
    for row in &rows {
        out.push_str(&line(&row.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    out
}

/// SIGINT and SIGTERM, caught from the moment this is made. Make it before telling
/// anyone that the process is ready: a caller that sends SIGTERM as soon as it reads the
/// ready line must get a clean stop, not the default action (seen in CI).
pub struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    /// The terminal went away (a closed window, a dropped SSH session): stop and heal
    /// as on SIGTERM rather than die by the default action with faults applied.
    hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves on the first of them (one that came before this call included), with
    /// its name.
    pub async fn wait(mut self) -> &'static str {
        self.next().await
    }

    /// Like [`StopSignals::wait`], keeping the handlers installed.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

//! Plain-text views of a running topology, shared by `faultline up` and the standalone
//! agent.

use crate::supervisor::{ReplicaStatus, Supervisor};

/// `ready: NAME=http://ADDR agent=http://ADDR`, the line scripts wait for. `NAME` is the
/// entrypoint service's name (`gateway` for the bundled shop, `lb` for a topology whose
/// entrypoint is `lb`; see [`ready_key`]), so the line names what the user wrote.
pub fn ready_line(sup: &Supervisor, agent_url: &str) -> String {
    match (sup.topology().entrypoint.as_deref(), sup.entrypoint()) {
        (Some(name), Some(addr)) => ready_fields(name, &format!("http://{addr}"), agent_url),
        _ => format!("ready: agent={agent_url}"),
    }
}

/// `ready: NAME=URL agent=AGENT`, the fields of the ready line, for the runner too.
pub fn ready_fields(entrypoint: &str, url: &str, agent_url: &str) -> String {
    format!("ready: {}={url} agent={agent_url}", ready_key(entrypoint))
}

/// The ready line's key for the entrypoint service `name`: the name itself (service
/// names are plain words), unless the service is called `agent`, which would collide
/// with the agent's field; then `entrypoint`.
pub fn ready_key(name: &str) -> &str {
    if name == "agent" { "entrypoint" } else { name }
}

/// A replica's restarts, with those after a failed liveness probe said apart: `3 (1
/// hung)`.
fn restarts(r: &ReplicaStatus) -> String {
    if r.liveness_restarts == 0 {
        r.restarts.to_string()
    } else {
        format!("{} ({} hung)", r.restarts, r.liveness_restarts)
    }
}

/// One row per replica: service, replica, zone, address, state, pid, restarts, and
/// the container when any replica runs in one.
pub fn table(replicas: &[ReplicaStatus]) -> String {
    if replicas.is_empty() {
        return "no replicas: this agent supervises no topology (proxies made at run time and process faults only)\n".into();
    }
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
                restarts(r),
            ]
        })
        .collect();
    if replicas.iter().all(|r| r.container.is_none()) {
        return columns(&header, &rows);
    }
    // The Docker runtime: the container each replica runs in now.
    let mut wide = [""; 8];
    wide[..7].copy_from_slice(&header);
    wide[7] = "CONTAINER";
    let rows: Vec<[String; 8]> = rows
        .into_iter()
        .zip(replicas)
        .map(|(row, r)| {
            let mut cells: [String; 8] = Default::default();
            for (c, v) in cells.iter_mut().zip(row) {
                *c = v;
            }
            cells[7] = r.container.clone().unwrap_or_else(|| "-".to_owned());
            cells
        })
        .collect();
    columns(&wide, &rows)
}

/// `header` and `rows` in columns, two spaces apart, the last one unpadded.
pub fn columns<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; N]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(*header);
    for row in rows {
        out.push_str(&line(std::array::from_fn(|i| row[i].as_str())));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_is_keyed_by_the_entrypoint_name() {
        assert_eq!(
            ready_fields("lb", "http://127.0.0.1:1", "http://127.0.0.1:2"),
            "ready: lb=http://127.0.0.1:1 agent=http://127.0.0.1:2"
        );
        assert_eq!(ready_key("gateway"), "gateway");
        assert_eq!(ready_key("agent"), "entrypoint");
    }
}

//! Proxies made at run time: a fault proxy from a listen address to any `host:port`,
//! created, changed and deleted through the control API (`faultline proxy`, an
//! experiment's `[[proxies]]`) or the Toxiproxy-compatible API, living as long as the
//! agent. Each is an [`EdgeProxy`] named by the proxy's name, so every network fault
//! acts on it as on a topology's edge; its toxics stay with it while it is disabled.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::EdgeProxy;

/// The most run-time proxies one agent holds.
pub const MAX_PROXIES: usize = 1000;
/// The longest proxy name and address.
pub const MAX_NAME: usize = 128;

/// A run-time proxy as the APIs show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyView {
    pub name: String,
    /// The address it listens on (the real port once bound, also while disabled).
    pub listen: String,
    /// Where its connections go, `host:port`.
    pub upstream: String,
    pub enabled: bool,
    /// Toxics installed on it, of every fault.
    #[serde(default)]
    pub toxics: usize,
    /// Connections it has accepted, and those open now.
    #[serde(default)]
    pub connections: u64,
    #[serde(default)]
    pub active: u64,
}

/// What a change to a proxy asks: each field given replaces the proxy's.
#[derive(Debug, Clone, Default)]
pub struct ProxyChange {
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    Invalid(String),
    #[error("proxy `{0}` already exists")]
    Exists(String),
    #[error("no proxy `{0}`")]
    NotFound(String),
    #[error("too many proxies: the limit is {MAX_PROXIES}; delete some first")]
    TooMany,
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
}

/// A proxy's name: 1 to 128 of `A-Z a-z 0-9 _ . - :` (`:` for the `host:port` names
/// some Toxiproxy clients give), so that it never reads as an edge (`a->b`) or a list
/// (`a,b`), and not beginning `pid:` or `proc:`, which are process targets.
pub fn check_name(name: &str) -> Result<(), ProxyError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with("pid:")
        && !name.starts_with("proc:")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(ProxyError::Invalid(format!(
            "`{name}` is not a proxy name: use 1 to {MAX_NAME} letters, digits, `_`, `.`, `-` or `:`, not beginning `pid:` or `proc:`"
        )))
    }
}

/// An address `host:port`: a host (a name, an IPv4 address or a bracketed IPv6 one)
/// and a port. `what` names the field in the message.
pub fn check_address(what: &str, addr: &str) -> Result<(), ProxyError> {
    let bad = |why: &str| {
        Err(ProxyError::Invalid(format!(
            "{what} `{addr}` is not host:port ({why})"
        )))
    };
    if addr.len() > MAX_NAME {
        return bad("too long");
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("no port");
    };
    if host.is_empty() {
        return bad("no host");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return bad("an IPv6 address goes in brackets");
    }
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return bad("the host has a space or a slash");
    }
    match port.parse::<u16>() {
        Ok(_) => Ok(()),
        Err(_) => bad("the port is a number from 0 to 65535"),
    }
}

struct Entry {
    edge: Arc<EdgeProxy>,
    upstream: String,
    enabled: bool,
    /// The accept loop while enabled; cancelling it closes its connections too.
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Entry {
    fn view(&self) -> ProxyView {
        use std::sync::atomic::Ordering::Relaxed;
        ProxyView {
            name: self.edge.name.clone(),
            listen: self.edge.listen.to_string(),
            upstream: self.upstream.clone(),
            enabled: self.enabled,
            toxics: self.edge.toxics().len(),
            connections: self.edge.stats.connections.load(Relaxed),
            active: self.edge.stats.active.load(Relaxed),
        }
    }

    /// Stops listening and closes every connection, waiting until they are closed.
    async fn stop(&mut self) {
        if let Some((cancel, task)) = self.running.take() {
            cancel.cancel();
            let _ = task.await;
        }
    }
}

/// The run-time proxies of one agent, by name.
pub struct RuntimeProxies {
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Changes one at a time: binding awaits, and no two may race for one name.
    ops: tokio::sync::Mutex<()>,
}

async fn bind(listen: &str) -> Result<(SocketAddr, tokio::net::TcpListener), ProxyError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| ProxyError::Listen(listen.to_owned(), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ProxyError::Listen(listen.to_owned(), e))?;
    Ok((addr, listener))
}

impl RuntimeProxies {
    /// No proxies yet; they stop at [`RuntimeProxies::shutdown`].
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(BTreeMap::new()),
            ops: tokio::sync::Mutex::new(()),
        })
    }

    fn start(&self, entry: &mut Entry, listener: tokio::net::TcpListener) {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(entry.edge.clone().run(listener, cancel.clone()));
        entry.running = Some((cancel, task));
    }

    /// Makes proxy `name` from `listen` (port 0 picks one) to `upstream`; listening at
    /// once when `enabled`.
    pub async fn create(
        &self,
        name: &str,
        listen: &str,
        upstream: &str,
        enabled: bool,
    ) -> Result<ProxyView, ProxyError> {
        check_name(name)?;
        check_address("listen", listen)?;
        check_address("upstream", upstream)?;
        let _op = self.ops.lock().await;
        {
            let entries = self.entries.lock().unwrap();
            if entries.contains_key(name) {
                return Err(ProxyError::Exists(name.to_owned()));
            }
            if entries.len() >= MAX_PROXIES {
                return Err(ProxyError::TooMany);
            }
        }
        // Bound even when disabled, to learn the real port, then closed again.
        let (addr, listener) = bind(listen).await?;
        let mut entry = Entry {
            edge: EdgeProxy::new(name.to_owned(), "", name, addr, upstream),
            upstream: upstream.to_owned(),
            enabled,
            running: None,
        };
        if enabled {
            self.start(&mut entry, listener);
        }
        let view = entry.view();
        self.entries.lock().unwrap().insert(name.to_owned(), entry);
        tracing::info!(proxy = name, listen = %addr, upstream, "proxy created");
        Ok(view)
    }

    /// Changes what `change` gives; the rest stays. A new listen address moves the
    /// proxy (its toxics go with it); disabling closes its connections and stops
    /// listening, enabling listens again on the same address.
    pub async fn update(&self, name: &str, change: ProxyChange) -> Result<ProxyView, ProxyError> {
        if let Some(l) = &change.listen {
            check_address("listen", l)?;
        }
        if let Some(u) = &change.upstream {
            check_address("upstream", u)?;
        }
        let _op = self.ops.lock().await;
        // Worked on as a copy that holds the accept loop, while the map keeps showing
        // the proxy: it stays listed and faults still find it during the change.
        let mut entry = {
            let mut entries = self.entries.lock().unwrap();
            let e = entries
                .get_mut(name)
                .ok_or_else(|| ProxyError::NotFound(name.to_owned()))?;
            Entry {
                edge: e.edge.clone(),
                upstream: e.upstream.clone(),
                enabled: e.enabled,
                running: e.running.take(),
            }
        };
        let result = self.change(&mut entry, change).await;
        let view = entry.view();
        self.entries.lock().unwrap().insert(name.to_owned(), entry);
        result.map(|()| view)
    }

    async fn change(&self, entry: &mut Entry, change: ProxyChange) -> Result<(), ProxyError> {
        if let Some(u) = change.upstream {
            entry.edge.set_target(&u);
            entry.upstream = u;
        }
        let enabled = change.enabled.unwrap_or(entry.enabled);
        let listen = change
            .listen
            .filter(|l| *l != entry.edge.listen.to_string());
        if let Some(listen) = listen {
            // Bound before the old one stops, so a refused address changes nothing.
            let (addr, listener) = bind(&listen).await?;
            entry.stop().await;
            entry.edge = entry.edge.moved(addr);
            entry.enabled = enabled;
            if enabled {
                self.start(entry, listener);
            }
            return Ok(());
        }
        match (entry.enabled, enabled) {
            (true, false) => entry.stop().await,
            (false, true) => {
                let (_, listener) = bind(&entry.edge.listen.to_string()).await?;
                self.start(entry, listener);
            }
            _ => {}
        }
        entry.enabled = enabled;
        Ok(())
    }

    /// Deletes proxy `name`: it stops listening and its connections close.
    pub async fn delete(&self, name: &str) -> Result<(), ProxyError> {
        let _op = self.ops.lock().await;
        let mut entry = self.take(name)?;
        entry.stop().await;
        tracing::info!(proxy = name, "proxy deleted");
        Ok(())
    }

    /// Takes proxy `name` out of the map.
    fn take(&self, name: &str) -> Result<Entry, ProxyError> {
        self.entries
            .lock()
            .unwrap()
            .remove(name)
            .ok_or_else(|| ProxyError::NotFound(name.to_owned()))
    }

    pub fn get(&self, name: &str) -> Option<ProxyView> {
        self.entries.lock().unwrap().get(name).map(Entry::view)
    }

    pub fn list(&self) -> Vec<ProxyView> {
        self.entries
            .lock()
            .unwrap()
            .values()
            .map(Entry::view)
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.entries.lock().unwrap().keys().cloned().collect()
    }

    /// Every proxy's edge, for the fault engine.
    pub fn edges(&self) -> Vec<Arc<EdgeProxy>> {
        self.entries
            .lock()
            .unwrap()
            .values()
            .map(|e| e.edge.clone())
            .collect()
    }

    /// Stops every proxy; called when the agent stops.
    pub async fn shutdown(&self) {
        let _op = self.ops.lock().await;
        let entries = std::mem::take(&mut *self.entries.lock().unwrap());
        for (_, mut e) in entries {
            e.stop().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        assert!(check_name("redis").is_ok());
        assert!(check_name("mysql_master.1-a").is_ok());
        assert!(check_name("redis:6379").is_ok());
        for bad in [
            "",
            "a->b",
            "a,b",
            "pid:1",
            "proc:x",
            "a b",
            "a/b",
            &"x".repeat(129),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for good in [
            "127.0.0.1:0",
            "localhost:6379",
            "[::1]:80",
            "db.internal:5432",
        ] {
            assert!(check_address("upstream", good).is_ok(), "{good}");
        }
        for bad in ["127.0.0.1", ":80", "::1:80", "a:70000", "a b:1", "a:x"] {
            let e = check_address("upstream", bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}

//! Hosts on this machine for tests across several hosts: each [`Host`] is a network
//! namespace the test makes, with its own address on a bridge the test makes too
//! ([`Network`]), so that what runs in it listens, calls and is cut off as on a machine
//! of its own. The test runs as root. Every name (namespace, bridge, veth) and the
//! subnet `10.X.Y.0/24` are unique per test process; everything is removed when the
//! `Network` and its hosts are dropped, a failing test's included: the processes left
//! in a namespace are SIGKILLed, then the namespace, the bridge and the firewall rule
//! that lets the bridge forward are deleted.
//!
//! ```no_run
//! # use faultline_tests::hosts::Network;
//! let net = Network::new();
//! let a = net.host();
//! let mut child = a.spawn(std::process::Command::new("python3").args(["-m", "http.server"]));
//! println!("{}", a.addr());
//! ```

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::Killed;

static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS` (or another tool), panicking with its stderr when it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command whose failure does not matter (removing what may be gone).
fn quietly(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A bridge with an address of the machine's own (`10.X.Y.1`), the hosts on it.
pub struct Network {
    id: u32,
    bridge: String,
    /// `10.X.Y`
    prefix: [u8; 3],
    hosts: Mutex<Vec<String>>,
    rule: Vec<String>,
}

impl Network {
    /// A new bridge with a subnet of its own.
    pub fn new() -> Network {
        for _ in 0..16 {
            let n = NETWORKS.fetch_add(1, Ordering::Relaxed);
            let id = (std::process::id().wrapping_mul(16).wrapping_add(n)) & 0xffff;
            let bridge = format!("flb{id:04x}");
            let made = Command::new("ip")
                .args(["link", "add", &bridge, "type", "bridge"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !made {
                // Another test process's: try the next name.
                continue;
            }
            let prefix = [10, (id >> 8) as u8, (id & 0xff) as u8];
            // Bridged traffic passes the firewall's FORWARD chain (br_netfilter), whose
            // policy Docker sets to DROP: this bridge's own traffic is let through by
            // a rule of its own, removed with the network.
            let comment = format!("faultline-test-{bridge}");
            let rule: Vec<String> = [
                "FORWARD",
                "-i",
                &bridge,
                "-o",
                &bridge,
                "-j",
                "ACCEPT",
                "-m",
                "comment",
                "--comment",
                &comment,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let net = Network {
                id,
                bridge: bridge.clone(),
                prefix,
                hosts: Mutex::new(Vec::new()),
                rule,
            };
            let mut insert = vec!["-I"];
            insert.extend(net.rule.iter().map(String::as_str));
            run("iptables", &insert);
            let cidr = format!("{}/24", net.ip(1));
            run("ip", &["addr", "add", &cidr, "dev", &bridge]);
            run("ip", &["link", "set", &bridge, "up"]);
            return net;
        }
        panic!("no free bridge name for this test's network");
    }

    fn ip(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], last)
    }

    /// The machine's own address on the bridge (where the tests' own clients are).
    pub fn gateway(&self) -> Ipv4Addr {
        self.ip(1)
    }

    /// A new host on the bridge: a namespace with loopback and one address.
    pub fn host(&self) -> Host {
        let mut hosts = self
            .hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let i = hosts.len() + 2;
        assert!(i < 250, "at most 248 hosts on a test network");
        let name = format!("faultline-{:04x}-{i}", self.id);
        let veth = format!("flv{:04x}{i:02x}", self.id);
        run("ip", &["netns", "add", &name]);
        hosts.push(name.clone());
        run(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name,
            ],
        );
        run("ip", &["link", "set", &veth, "master", &self.bridge, "up"]);
        let addr = self.ip(i as u8);
        let cidr = format!("{addr}/24");
        run("ip", &["-n", &name, "addr", "add", &cidr, "dev", "eth0"]);
        run("ip", &["-n", &name, "link", "set", "eth0", "up"]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        // No default route: what is not on the test network is unreachable at once, so
        // a name lookup (Python's HTTPServer looks its own address up) fails at once
        // rather than waiting out the resolver's timeouts.
        Host { name, addr }
    }
}

impl Default for Network {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for name in self
            .hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            kill_everything_in(&name);
            quietly("ip", &["netns", "del", &name]);
        }
        // The veths went with their namespaces.
        quietly("ip", &["link", "del", &self.bridge]);
        let mut delete = vec!["-D"];
        delete.extend(self.rule.iter().map(String::as_str));
        quietly("iptables", &delete);
    }
}

/// SIGKILLs every process in namespace `name`, until none is left (a supervisor's
/// children may be forked while it dies).
fn kill_everything_in(name: &str) {
    for _ in 0..50 {
        let out = Command::new("ip")
            .args(["netns", "pids", name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let pids: Vec<i32> = out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for p in pids {
            // SAFETY: a plain signal to a pid read from the namespace.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A host: a network namespace with its own address.
pub struct Host {
    name: String,
    addr: Ipv4Addr,
}

impl Host {
    /// Its address on the test's network.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The namespace's name (`ip netns exec NAME ...`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes `cmd` run inside this host: the child enters the namespace before it
    /// executes, keeping everything else `cmd` says (arguments, environment, stdio).
    pub fn enter<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let path = Path::new("/var/run/netns").join(&self.name);
        let ns = std::fs::File::open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        // SAFETY: setns is async-signal-safe, and the file outlives the fork.
        unsafe {
            cmd.pre_exec(move || {
                use std::os::fd::AsRawFd;
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }

    /// A `faultline-agent --listen ADDR:0 --token TOKEN --topology TOPOLOGY` on this
    /// host, once it has printed its ready line: the guard and its API's URL. Its
    /// stderr goes to `<run_dir>.stderr`.
    pub fn start_agent(&self, run_dir: &Path, topology: &Path, token: &str) -> (Killed, String) {
        use std::io::{BufRead, BufReader};
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run_dir.with_extension("stderr"))
            .unwrap();
        let listen = format!("{}:0", self.addr);
        let mut child = self.spawn(
            Command::new(crate::bin("faultline-agent"))
                .env("FAULTLINE_HOME", run_dir.with_extension("home"))
                .args(["--listen", &listen, "--token", token, "--run-dir"])
                .arg(run_dir)
                .arg("--topology")
                .arg(topology)
                .stdout(Stdio::piped())
                .stderr(stderr),
        );
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let Some(Ok(ready)) = lines.next() else {
            let err = std::fs::read_to_string(run_dir.with_extension("stderr")).unwrap_or_default();
            panic!(
                "faultline-agent on {} printed no ready line; stderr: {err}",
                self.name
            );
        };
        std::thread::spawn(move || for _ in lines {});
        (child, crate::ready_field(&ready, "agent"))
    }

    /// A load worker (`faultline worker --listen ADDR:0 --token TOKEN`) on this host, once
    /// it has printed its ready line: the guard and its URL.
    pub fn start_worker(&self, token: &str) -> (Killed, String) {
        use std::io::{BufRead, BufReader};
        let listen = format!("{}:0", self.addr);
        let mut child = self.spawn(
            Command::new(crate::bin("faultline"))
                .args(["worker", "--listen", &listen, "--token", token])
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let Some(Ok(ready)) = lines.next() else {
            panic!("faultline worker on {} printed no ready line", self.name);
        };
        std::thread::spawn(move || for _ in lines {});
        (child, crate::ready_field(&ready, "worker"))
    }

    /// Starts `cmd` inside this host; the child is killed when the guard drops (and
    /// with the network in any case).
    pub fn spawn(&self, cmd: &mut Command) -> Killed {
        Killed(
            self.enter(cmd)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {cmd:?} on {}: {e}", self.name)),
        )
    }
}

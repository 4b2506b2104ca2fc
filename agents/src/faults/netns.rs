//! Network faults inside a container's network namespace, carried out by the host's own
//! tools entered into it (`nsenter -t PID -n iptables ...`, `... tc ...`), since a
//! container image may hold no tools at all (the shop's is `FROM scratch`); and which of
//! those tools this machine has, found once when the agent starts ([`Mechanisms`]).
//!
//! Every iptables rule a fault adds carries the comment `faultline:<fault id>`, and its
//! heal deletes exactly the rules it added (recorded in the journal, so a restarted
//! agent deletes them too): the rules of overlapping faults on one container compose.
//! Every root qdisc a fault adds has the handle [`QDISC_HANDLE`], and is deleted only
//! while it still has it, so a heal never removes a qdisc somebody else put there.

use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use super::spec::Traffic;

/// The handle of every root qdisc a fault adds.
pub const QDISC_HANDLE: &str = "fa17:";

/// How long one run of a tool may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The mechanisms of network faults on containers this machine has, as found at agent
/// start; `/v1/status` and `faultline status` report them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mechanisms {
    /// `nsenter` runs and may enter a network namespace (it needs root).
    pub nsenter: bool,
    /// iptables' backend (`nf_tables` or `legacy`), when iptables works in a network
    /// namespace of its own with the `statistic` and `comment` matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables: Option<String>,
    /// `tc` runs.
    pub tc: bool,
    /// The kernel has the `tbf` qdisc (bandwidth).
    pub tbf: bool,
    /// The kernel has the `netem` qdisc (latency).
    pub netem: bool,
}

/// A mechanism a fault needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Nsenter,
    Iptables,
    Tc,
    Tbf,
    Netem,
}

impl Need {
    fn name(self) -> &'static str {
        match self {
            Need::Nsenter => "nsenter",
            Need::Iptables => "iptables",
            Need::Tc => "tc",
            Need::Tbf => "the tbf qdisc",
            Need::Netem => "the netem qdisc",
        }
    }
}

impl Mechanisms {
    /// Tries each tool: iptables and both qdiscs in throwaway network namespaces
    /// (`unshare -n`), which vanish with the process, so nothing is left to clean up.
    pub async fn detect() -> Mechanisms {
        let me = std::process::id().to_string();
        let nsenter_probe = ["-t", me.as_str(), "-n", "true"];
        let iptables_probe = [
            "-n",
            "iptables",
            "-w",
            "5",
            "-A",
            "INPUT",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "0.5",
            "-m",
            "comment",
            "--comment",
            "faultline:probe",
            "-j",
            "DROP",
        ];
        let tbf_probe = [
            "-n", "tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "1mbit", "burst",
            "32kbit", "latency", "50ms",
        ];
        let netem_probe = [
            "-n", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
        ];
        let (nsenter, version, iptables, tc, tbf, netem) = tokio::join!(
            run("nsenter", &nsenter_probe),
            run("iptables", &["-V"]),
            run("unshare", &iptables_probe),
            run("tc", &["-V"]),
            run("unshare", &tbf_probe),
            run("unshare", &netem_probe),
        );
        let backend = version.ok().map(|v| {
            if v.contains("nf_tables") {
                "nf_tables".to_owned()
            } else if v.contains("legacy") {
                "legacy".to_owned()
            } else {
                "unknown backend".to_owned()
            }
        });
        let m = Mechanisms {
            nsenter: nsenter.is_ok(),
            iptables: backend.filter(|_| iptables.is_ok()),
            tc: tc.is_ok(),
            tbf: tbf.is_ok(),
            netem: netem.is_ok(),
        };
        tracing::info!(
            mechanisms = m.line(),
            "network fault mechanisms for containers"
        );
        m
    }

    fn has(&self, need: Need) -> bool {
        match need {
            Need::Nsenter => self.nsenter,
            Need::Iptables => self.iptables.is_some(),
            Need::Tc => self.tc,
            Need::Tbf => self.tbf,
            Need::Netem => self.netem,
        }
    }

    /// One line: what is available, then what is missing.
    pub fn line(&self) -> String {
        let all = [
            Need::Nsenter,
            Need::Iptables,
            Need::Tc,
            Need::Tbf,
            Need::Netem,
        ];
        let word = |n: Need| match (n, &self.iptables) {
            (Need::Iptables, Some(b)) => format!("iptables ({b})"),
            (Need::Tbf, _) => "tbf".to_owned(),
            (Need::Netem, _) => "netem".to_owned(),
            (n, _) => n.name().to_owned(),
        };
        let have: Vec<String> = all
            .iter()
            .filter(|n| self.has(**n))
            .map(|n| word(*n))
            .collect();
        let lack: Vec<String> = all
            .iter()
            .filter(|n| !self.has(**n))
            .map(|n| word(*n))
            .collect();
        let have = if have.is_empty() {
            "none".to_owned()
        } else {
            have.join(", ")
        };
        if lack.is_empty() {
            have
        } else {
            format!("{have}; missing: {}", lack.join(", "))
        }
    }

    /// Refuses a fault on a container whose mechanisms `needs` are not all here.
    pub fn require(&self, kind: &str, needs: &[Need]) -> Result<(), String> {
        let missing: Vec<&str> = needs
            .iter()
            .filter(|n| !self.has(**n))
            .map(|n| n.name())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let why = if needs.contains(&Need::Netem) && !self.netem {
            "this kernel has no netem; latency on containers goes through fault proxies (edges) instead: put one in front of the container with `faultline proxy create` and add the latency to it"
        } else {
            "nsenter, iptables and tc must be on the agent's PATH, and the agent must run as root"
        };
        Err(format!(
            "a `{kind}` fault on a container needs {}, missing here ({why})",
            missing.join(" and ")
        ))
    }
}

/// The chains `traffic` takes, each with the option that leaves loopback alone (a
/// container talking to itself is not on the network).
fn chains(traffic: Traffic) -> &'static [(&'static str, &'static str)] {
    match traffic {
        Traffic::In => &[("INPUT", "-i")],
        Traffic::Out => &[("OUTPUT", "-o")],
        Traffic::Both => &[("INPUT", "-i"), ("OUTPUT", "-o")],
    }
}

/// One iptables rule of a fault in a container's network namespace: the rule as
/// `iptables -S` writes it after `-A`, its chain first and the fault's comment in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub container: String,
    pub rule: Vec<String>,
}

/// The comment that tags fault `id`'s rules.
pub fn tag(id: &str) -> String {
    format!("faultline:{id}")
}

fn rule(id: &str, container: &str, chain: &str, matches: &[&str], target: &[&str]) -> Rule {
    let tag = tag(id);
    let mut rule = vec![chain];
    rule.extend_from_slice(matches);
    rule.extend_from_slice(&["-m", "comment", "--comment", &tag, "-j"]);
    rule.extend_from_slice(target);
    Rule {
        container: container.to_owned(),
        rule: rule.into_iter().map(str::to_owned).collect(),
    }
}

/// Packet loss: a random `percent` of the packets dropped, each drawn by the kernel.
pub fn loss(id: &str, container: &str, percent: f64, traffic: Traffic) -> Vec<Rule> {
    let p = format!("{:.4}", (percent / 100.0).clamp(0.0, 1.0));
    chains(traffic)
        .iter()
        .map(|(chain, dev)| {
            let m = [
                "!",
                dev,
                "lo",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
            ];
            let mut m = m.to_vec();
            m.push(&p);
            rule(id, container, chain, &m, &["DROP"])
        })
        .collect()
}

/// TCP resets: every TCP segment answered with a RST, live connections included. The
/// resets themselves pass (each chain would drop the other's otherwise: a RST that
/// REJECT sends in INPUT leaves through OUTPUT).
pub fn reset(id: &str, container: &str, traffic: Traffic) -> Vec<Rule> {
    chains(traffic)
        .iter()
        .map(|(chain, dev)| {
            rule(
                id,
                container,
                chain,
                &[
                    "-p",
                    "tcp",
                    "!",
                    "--tcp-flags",
                    "RST",
                    "RST",
                    "!",
                    dev,
                    "lo",
                ],
                &["REJECT", "--reject-with", "tcp-reset"],
            )
        })
        .collect()
}

/// A cut from `peers` (IPv4 addresses): every packet the container receives from them
/// dropped. A partition puts this in both containers, so each side's packets are lost
/// on arrival: live connections stall as new ones do, and a sender sees a silent
/// network, where a drop in OUTPUT would fail its sends at once (EPERM).
pub fn cut(id: &str, container: &str, peers: &[String]) -> Vec<Rule> {
    peers
        .iter()
        .map(|ip| rule(id, container, "INPUT", &["-s", ip], &["DROP"]))
        .collect()
}

impl Rule {
    /// Whether the rule is one fault `id` could have added: in INPUT or OUTPUT, tagged
    /// with its comment. Rules read back from the journal are checked before use.
    pub fn is_of(&self, id: &str) -> bool {
        let tag = tag(id);
        matches!(
            self.rule.first().map(String::as_str),
            Some("INPUT" | "OUTPUT")
        ) && self
            .rule
            .windows(2)
            .any(|w| w[0] == "--comment" && w[1] == tag)
    }

    /// Adds the rule first in its chain, in the namespace of process `pid`.
    pub async fn insert(&self, pid: u32) -> Result<(), String> {
        let mut args = vec!["-w", "5", "-I", &self.rule[0], "1"];
        args.extend(self.rule[1..].iter().map(String::as_str));
        in_netns(pid, "iptables", &args).await.map(drop)
    }

    /// Deletes the rule from the namespace of process `pid` (an error when it is not
    /// there).
    pub async fn delete(&self, pid: u32) -> Result<(), String> {
        let mut args = vec!["-w", "5", "-D"];
        args.extend(self.rule.iter().map(String::as_str));
        in_netns(pid, "iptables", &args).await.map(drop)
    }
}

/// A root qdisc a fault put on one interface of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Qdisc {
    pub container: String,
    pub dev: String,
}

/// The interfaces of process `pid`'s network namespace but loopback, as its
/// `/proc/PID/net/dev` lists them.
pub fn interfaces(pid: u32) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map_err(|e| format!("cannot read /proc/{pid}/net/dev: {e}"))?;
    Ok(text
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_owned()))
        .filter(|n| n != "lo" && is_device(n))
        .collect())
}

/// An interface name as the kernel allows it (at most 15 bytes, no `/`, no space).
fn is_device(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// The tbf qdisc's parameters for `rate` bytes a second: a bucket of a tenth of a
/// second's worth (at least 4 KiB, so a full-size packet always fits), and a queue of
/// half a second's worth on top of it, past which packets are dropped (TCP slows down
/// to the rate either way).
pub fn tbf(rate: u64) -> Vec<String> {
    let burst = (rate / 10).max(4096);
    let limit = (rate / 2).saturating_add(burst).min(1 << 30);
    ["tbf", "rate"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([
            format!("{rate}bps"),
            "burst".into(),
            burst.to_string(),
            "limit".into(),
            limit.to_string(),
        ])
        .collect()
}

/// The netem qdisc's parameters for a delay plus or minus a jitter.
pub fn netem(delay_ms: u64, jitter_ms: u64) -> Vec<String> {
    let mut v = vec!["netem".to_owned(), "delay".into(), format!("{delay_ms}ms")];
    if jitter_ms > 0 {
        v.push(format!("{jitter_ms}ms"));
    }
    v
}

impl Qdisc {
    /// Adds `params` as the interface's root qdisc, with the faults' handle.
    pub async fn add(&self, pid: u32, params: &[String]) -> Result<(), String> {
        let mut args = vec![
            "qdisc",
            "add",
            "dev",
            &self.dev,
            "root",
            "handle",
            QDISC_HANDLE,
        ];
        args.extend(params.iter().map(String::as_str));
        in_netns(pid, "tc", &args).await.map(drop)
    }

    /// Deletes the interface's root qdisc if it still has the faults' handle (the
    /// kernel refuses the delete otherwise).
    pub async fn delete(&self, pid: u32) -> Result<(), String> {
        if !is_device(&self.dev) {
            return Err(format!("`{}` is not an interface name", self.dev));
        }
        let args = [
            "qdisc",
            "del",
            "dev",
            &self.dev,
            "root",
            "handle",
            QDISC_HANDLE,
        ];
        in_netns(pid, "tc", &args).await.map(drop)
    }
}

/// Runs `program` in process `pid`'s network namespace, from the host's file system.
async fn in_netns(pid: u32, program: &str, args: &[&str]) -> Result<String, String> {
    let pid = pid.to_string();
    let mut all = vec!["-t", &pid, "-n", "--", program];
    all.extend_from_slice(args);
    run("nsenter", &all)
        .await
        .map_err(|e| format!("{program} in the network namespace of pid {pid}: {e}"))
}

/// Runs a program to its end (at most [`TIMEOUT`]); its output, or what went wrong on
/// one line.
async fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(TIMEOUT, cmd.output()).await {
        Err(_) => Err(format!("`{program}` did not finish within {TIMEOUT:?}")),
        Ok(Err(e)) => Err(format!("cannot run `{program}`: {e}")),
        Ok(Ok(out)) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let err = err.split_whitespace().collect::<Vec<_>>().join(" ");
            Err(if err.is_empty() {
                format!("`{program}` failed ({})", out.status)
            } else {
                err
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_carry_their_fault_and_are_checked_as_such() {
        let rules = loss("f1", "c", 50.0, Traffic::Both);
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0].rule.join(" "),
            "INPUT ! -i lo -m statistic --mode random --probability 0.5000 -m comment --comment faultline:f1 -j DROP"
        );
        assert!(rules.iter().all(|r| r.is_of("f1") && !r.is_of("f2")));
        let forged = Rule {
            container: "c".into(),
            rule: vec!["FORWARD".into(), "--comment".into(), tag("f1")],
        };
        assert!(!forged.is_of("f1"));
        assert_eq!(cut("f1", "c", &["10.0.0.2".into()]).len(), 1);
        assert_eq!(reset("f1", "c", Traffic::In)[0].rule[0], "INPUT");
    }

    #[test]
    fn tbf_fits_a_packet_in_its_bucket_and_bounds_its_queue() {
        assert_eq!(
            tbf(10_000).join(" "),
            "tbf rate 10000bps burst 4096 limit 9096"
        );
        let big = tbf(10_000_000_000);
        assert_eq!(big[4], "1000000000");
        assert_eq!(big[6], (1u64 << 30).to_string());
    }

    #[test]
    fn the_line_says_what_is_missing() {
        let m = Mechanisms {
            nsenter: true,
            iptables: Some("nf_tables".into()),
            tc: true,
            tbf: true,
            netem: false,
        };
        assert_eq!(
            m.line(),
            "nsenter, iptables (nf_tables), tc, tbf; missing: netem"
        );
        let e = m
            .require("latency", &[Need::Nsenter, Need::Netem])
            .unwrap_err();
        assert!(e.contains("needs the netem qdisc"), "{e}");
        assert!(e.contains("fault proxies"), "{e}");
        assert!(m.require("loss", &[Need::Nsenter, Need::Iptables]).is_ok());
    }
}

//! `faultline images build`: the images are built FROM scratch, run, and the shop's
//! image really serves; faultline's own (the load workers' and the runs' of
//! deploy/kubernetes) runs a real command as a non-root user; naming images builds only
//! those. Needs a Docker daemon: without one the test fails, never skips.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::Duration;

use faultline_tests::{bin, wait_until};

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker is needed by this test and cannot run: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every image `faultline images build` makes.
const REPOS: [&str; 3] = ["faultline/shop", "faultline/agent", "faultline/faultline"];

/// Removes the test's tags (never `latest` or the version) when dropped.
struct Tags(Vec<String>);

impl Drop for Tags {
    fn drop(&mut self) {
        for tag in &self.0 {
            for repo in REPOS {
                let _ = docker(&["rmi", &format!("{repo}:{tag}")]);
            }
        }
    }
}

/// A container removed (`docker rm -f`) when dropped, even when an assertion fails.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

/// `GET /health` over a real socket answers 200.
fn healthy(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

#[test]
fn images_build_makes_runnable_shop_agent_and_faultline_images() {
    let daemon = docker(&["version", "--format", "{{.Server.Version}}"]);
    assert!(
        daemon.status.success(),
        "this test needs a running Docker daemon: {}",
        text(&daemon)
    );
    let tag = format!("e2e-{}", std::process::id());
    let only = format!("{tag}-only");
    let _tags = Tags(vec![tag.clone(), only.clone()]);
    let out = Command::new(bin("faultline"))
        .args(["images", "build", "--tag", &tag])
        .output()
        .unwrap();
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let version = env!("CARGO_PKG_VERSION");
    for repo in REPOS {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{repo}:{version} ")))
            .unwrap_or_else(|| panic!("no line for {repo}: {printed}"));
        assert!(line.contains(&format!("(latest, {tag})")), "{line}");
        let size: f64 = line
            .strip_suffix(" MB")
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no size in {line:?}"));
        assert!(size > 0.0, "{line}");
    }

    // Named images only: faultline's, and no other gets the tag.
    let out = Command::new(bin("faultline"))
        .args(["images", "build", "faultline", "--tag", &only])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 1, "{}", text(&out));
    assert!(
        lines[0].starts_with("faultline/faultline:"),
        "{}",
        text(&out)
    );
    for (repo, built) in [
        ("faultline/faultline", true),
        ("faultline/shop", false),
        ("faultline/agent", false),
    ] {
        let inspect = docker(&["image", "inspect", &format!("{repo}:{only}")]);
        assert_eq!(inspect.status.success(), built, "{repo}:{only}");
    }
    let unknown = Command::new(bin("faultline"))
        .args(["images", "build", "faultlin"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("[possible values: shop, agent, faultline]"),
        "{}",
        text(&unknown)
    );

    let shop = format!("faultline/shop:{tag}");
    let help = docker(&["run", "--rm", &shop, "--help"]);
    assert!(help.status.success(), "{}", text(&help));
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("Usage: shop"),
        "{}",
        text(&help)
    );
    let agent = docker(&[
        "run",
        "--rm",
        &format!("faultline/agent:{tag}"),
        "--version",
    ]);
    assert!(agent.status.success(), "{}", text(&agent));
    assert!(
        String::from_utf8_lossy(&agent.stdout).contains("faultline-agent"),
        "{}",
        text(&agent)
    );
    // faultline's image runs the CLI: its version, and a real command on a file
    // mounted in (the run Job's experiment comes from a ConfigMap the same way).
    let cli = format!("faultline/faultline:{tag}");
    let version_out = docker(&["run", "--rm", &cli, "--version"]);
    assert!(version_out.status.success(), "{}", text(&version_out));
    assert_eq!(
        String::from_utf8_lossy(&version_out.stdout).trim(),
        format!("faultline {version}"),
        "{}",
        text(&version_out)
    );
    let experiment = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/own-system")
        .canonicalize()
        .unwrap();
    let check = docker(&[
        "run",
        "--rm",
        "--user",
        "65532",
        "-v",
        &format!("{}:/experiment:ro", experiment.display()),
        &cli,
        "check",
        "/experiment/gameday.toml",
    ]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("ok: `visits-backend-down`"),
        "{}",
        text(&check)
    );

    let label = format!("faultline.test={tag}-{}", std::process::id());
    let started = docker(&[
        "run",
        "-d",
        "--rm",
        "--label",
        &label,
        "-p",
        "127.0.0.1::7000",
        &shop,
        "cache",
        "--listen",
        "0.0.0.0:7000",
    ]);
    assert!(started.status.success(), "{}", text(&started));
    let id = String::from_utf8_lossy(&started.stdout).trim().to_owned();
    let container = Container(id);
    let port = docker(&["port", &container.0, "7000/tcp"]);
    assert!(port.status.success(), "{}", text(&port));
    let addr = String::from_utf8_lossy(&port.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{}", text(&port));
    assert!(
        wait_until(Duration::from_secs(20), || healthy(&addr)),
        "the shop's cache in its container never answered GET /health on {addr}; logs: {}",
        text(&docker(&["logs", &container.0]))
    );
}

//! The `faultline-agent` crate through its real entry points: the binary's command line,
//! and the fault proxies on real sockets. (This test target also makes
//! `cargo test --workspace` build the binary.)

mod proxy;

use std::process::Command;

#[test]
fn a_bad_topology_is_reported_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.toml");
    std::fs::write(&file, "[services.a]\ncommand = [\"x\"]\nreplicas = 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_faultline-agent"))
        .arg("--topology")
        .arg(&file)
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!(
            "error: {}:3:12: replicas must be from 1 to 64, not 0",
            file.display()
        )
    );
    assert!(!dir.path().join("run").exists(), "nothing was started");
}

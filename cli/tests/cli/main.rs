//! The `faultline` binary's command line. (This test target also makes
//! `cargo test --workspace` build the binary the end-to-end tests run.)

mod experiments;
mod fault;
mod habits;
mod load;
mod workers;

use std::process::Command;

fn faultline(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_the_commands() {
    let (code, out, _) = faultline(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("up"), "{out}");
    let (code, out, _) = faultline(&["up", "--help"]);
    assert_eq!(code, Some(0));
    for flag in ["--topology", "--entrypoint-port", "--run-dir"] {
        assert!(out.contains(flag), "{out}");
    }
}

#[test]
fn a_missing_topology_file_is_bad_input() {
    let (code, out, err) = faultline(&["up", "--topology", "/nonexistent/topology.toml"]);
    assert_eq!(code, Some(2));
    assert!(out.is_empty());
    assert!(
        err.starts_with(
            "error: /nonexistent/topology.toml: cannot read the topology file: No such file"
        ),
        "{err}"
    );
}

#[test]
fn an_unknown_command_or_flag_is_bad_input() {
    let (code, _, err) = faultline(&["upp"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unrecognized subcommand 'upp'"), "{err}");
    let (code, _, err) = faultline(&["up", "--entrypoint-port", "99999"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("99999"), "{err}");
}

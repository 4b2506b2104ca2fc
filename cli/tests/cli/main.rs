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

/// The exported dashboards refer to their datasource only through the `datasource`
/// variable, which file provisioning resolves; `--datasource-uid` starts it with one.
#[test]
fn exported_dashboards_read_from_the_datasource_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let (code, _, err) = faultline(&["dashboards", "export", out, "--datasource-uid", "abc123"]);
    assert_eq!(code, Some(0), "{err}");
    for name in [
        "faultline-overview.json",
        "shop-services.json",
        "shop-data.json",
    ] {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(
            !text.contains("DS_PROMETHEUS"),
            "{name} names an import input"
        );
        let d: serde_json::Value = serde_json::from_str(&text).unwrap();
        let var = &d["templating"]["list"][0];
        assert_eq!(var["type"], "datasource", "{name}");
        assert_eq!(var["current"]["value"], "abc123", "{name}");
        for p in d["panels"].as_array().unwrap() {
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{name}: {}",
                p["title"]
            );
        }
    }
    let provisioning = std::fs::read_to_string(dir.path().join("provisioning/datasources.yml"));
    assert!(provisioning.unwrap().contains("isDefault: true"));
}

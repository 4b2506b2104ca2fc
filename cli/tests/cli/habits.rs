//! Command-line habits a user brings from other tools: global options in either place,
//! errors that say where an address came from.

use std::process::Command;

/// `faultline` with `env` set, and FAULTLINE_AGENT unset unless `env` sets it.
fn faultline_env(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline"));
    cmd.args(args).env_remove("FAULTLINE_AGENT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An address nothing listens on: a port bound and released.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[test]
fn agent_is_taken_before_and_after_the_command() {
    let url = dead_url();
    let home = tempfile::tempdir().unwrap();
    let home = home.path().to_str().unwrap();
    for args in [
        vec!["--agent", &url, "status"],
        vec!["status", "--agent", &url],
        vec!["--agent", &url, "heal", "--all"],
        vec!["fault", "kill", "api-1", "--agent", &url],
        vec!["--agent", &url, "fault", "list"],
    ] {
        let (code, out, err) = faultline_env(&args, &[("FAULTLINE_HOME", home)]);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(out.is_empty(), "{out}");
        assert!(
            err.contains(&format!("cannot reach the agent at {url}")),
            "{args:?}: {err}"
        );
        // The user named the address: no hint about where it came from.
        assert!(!err.contains("hint:"), "{err}");
    }
    // A command that talks to no agent refuses it rather than ignore it.
    let (code, _, err) = faultline_env(&["--agent", &url, "check", "x.toml"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(
            "--agent applies to fault, heal, scale, status, proxy, tui, run and demo, not to `check`"
        ),
        "{err}"
    );
}

#[test]
fn an_agent_found_through_latest_that_does_not_answer_is_named_with_its_source() {
    let home = tempfile::tempdir().unwrap();
    let url = dead_url();
    let latest = home.path().join("latest");
    std::fs::create_dir_all(&latest).unwrap();
    let record = latest.join("agent.json");
    std::fs::write(&record, format!("{{\"url\": \"{url}\"}}")).unwrap();
    let env = [("FAULTLINE_HOME", home.path().to_str().unwrap())];
    let (code, _, err) = faultline_env(&["status"], &env);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("cannot reach the agent at {url}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("hint: the address came from {}", record.display())),
        "{err}"
    );
    assert!(err.contains("pass --agent URL"), "{err}");
    // $FAULTLINE_AGENT wins over latest, and is named when it does not answer.
    let other = dead_url();
    let (code, _, err) = faultline_env(&["status"], &[env[0], ("FAULTLINE_AGENT", other.as_str())]);
    assert_eq!(code, Some(2));
    assert!(err.contains(&format!("at {other}")), "{err}");
    assert!(
        err.contains("hint: the address came from $FAULTLINE_AGENT"),
        "{err}"
    );
    // And --agent wins over both.
    let third = dead_url();
    let (_, _, err) = faultline_env(
        &["status", "--agent", &third],
        &[env[0], ("FAULTLINE_AGENT", other.as_str())],
    );
    assert!(err.contains(&format!("at {third}")), "{err}");
}

#[test]
fn a_load_in_which_no_request_succeeded_fails_and_says_why() {
    let url = format!("{}/", dead_url());
    let (code, out, err) = faultline_env(&["load", &url, "-n", "20", "-c", "2"], &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(&format!(
            "error: no request succeeded: of 20, 20 connect; is anything listening at {url}?"
        )),
        "{err}"
    );
    // The summary is still printed, as for any run.
    assert!(out.contains("errors     connect: 20"), "{out}");
}

#[test]
fn a_count_and_a_duration_together_are_refused() {
    let (code, out, err) =
        faultline_env(&["load", "http://127.0.0.1:9/", "-n", "5", "-d", "1s"], &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains(
            "error: the argument '--count <COUNT>' cannot be used with '--duration <DURATION>'"
        ),
        "{err}"
    );
}

/// What bash completes for `words` (the last one being typed) with the script that
/// `faultline completions bash` printed.
fn bash_completes(script: &std::path::Path, words: &[&str]) -> String {
    let line = words.join(" ");
    let shell = format!(
        "source {}; COMP_WORDS=({line}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; _faultline faultline {} {}; echo \"${{COMPREPLY[@]}}\"",
        script.display(),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let out = Command::new("bash").args(["-c", &shell]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn completions_complete_commands_fault_kinds_and_their_flags() {
    let (code, bash, err) = faultline_env(&["completions", "bash"], &[]);
    assert_eq!(code, Some(0), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("faultline.bash");
    std::fs::write(&script, &bash).unwrap();
    assert_eq!(bash_completes(&script, &["faultline", "fau"]), "fault");
    assert_eq!(
        bash_completes(&script, &["faultline", "fault", "par"]),
        "partition"
    );
    assert_eq!(
        bash_completes(&script, &["faultline", "fault", "latency", "--de"]),
        "--delay"
    );
    for (shell, marker) in [
        ("zsh", "#compdef faultline"),
        ("fish", "complete -c faultline"),
    ] {
        let (code, out, err) = faultline_env(&["completions", shell], &[]);
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(out.contains("partition"), "{shell} completes fault kinds");
    }
    let (code, _, err) = faultline_env(&["completions", "tcsh"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
}

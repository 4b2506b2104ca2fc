//! The `shop` binary's command line: bad input is refused with a clear message and exit
//! code 2, before anything listens. (Besides checking that, this test target makes
//! `cargo test --workspace` build the `shop` binary that the end-to-end tests run.)

use std::process::Command;

fn shop(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shop"))
        .args(args)
        .env_remove("SHOP_JWT_SECRET")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn services_that_verify_tokens_need_the_secret() {
    let (code, err) = shop(&["auth", "--listen", "127.0.0.1:0"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("SHOP_JWT_SECRET is not set"), "{err}");
    let (code, err) = shop(
        &["auth", "--listen", "127.0.0.1:0"],
        &[("SHOP_JWT_SECRET", "short")],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("SHOP_JWT_SECRET is too short"), "{err}");
}

#[test]
fn bad_flags_name_the_problem() {
    let (code, err) = shop(&["cdn", "--origin", "not-an-address"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad address \"not-an-address\""), "{err}");
    let (code, err) = shop(
        &["content", "--cache", "127.0.0.1:1", "--db-latency", "soon"],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("write durations like 250ms"), "{err}");
    let (code, err) = shop(&["warehouse"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unrecognized subcommand 'warehouse'"), "{err}");
}

#[test]
fn connection_limits_that_would_close_everything_are_refused() {
    let (code, err) = shop(&["cache", "--idle-timeout", "0s"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--idle-timeout") && err.contains("must be more than 0s"),
        "{err}"
    );
    let (code, err) = shop(&["cache"], &[("SHOP_HEADER_READ_TIMEOUT", "0ms")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("must be more than 0s"), "{err}");
    let (code, err) = shop(&["cache", "--max-connections", "0"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--max-connections") && err.contains("0 is not in 1.."),
        "{err}"
    );
}

#[test]
fn a_taken_address_is_a_clear_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (code, err) = shop(&["cache", "--listen", &addr], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

/// The soft and hard limits on open files of process `pid`.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut fields = line["Max open files".len()..].split_whitespace();
    let soft = fields.next().unwrap().to_owned();
    (soft, fields.next().unwrap().to_owned())
}

#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shop"));
    cmd.args(["cache", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped());
    // SAFETY: getrlimit and setrlimit are async-signal-safe and touch only the struct.
    unsafe {
        cmd.pre_exec(|| {
            let mut l = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
            l.rlim_cur = l.rlim_max.min(256);
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    // Once it listens, the limit was raised (that happens first).
    let listening = out
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("listening"));
    let (soft, hard) = open_files_limits(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(listening, "the cache never listened");
    let hard_cap = if hard == "unlimited" {
        "1048576".to_owned()
    } else {
        hard.clone()
    };
    assert_eq!(soft, hard_cap, "soft {soft}, hard {hard}");
}

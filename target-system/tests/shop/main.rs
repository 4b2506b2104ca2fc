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

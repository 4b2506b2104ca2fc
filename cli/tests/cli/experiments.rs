//! `faultline check` on experiment files: every file of `tests/fixtures/experiments/bad`
//! holds one mistake and is refused with it placed where the file's first line says;
//! every experiment of `target-system/experiments` is accepted.
//!
//! A bad fixture starts with `# expect: LINE:COLUMN: MESSAGE`: LINE and COLUMN count in
//! that same file (the comment is line 1), MESSAGE is a part of the error's message.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The bad fixtures, relative to the crate (the directory the checks run in).
const BAD: &str = "tests/fixtures/experiments/bad";
/// The bundled experiments, relative to the crate.
const BUNDLED: &str = "../target-system/experiments";

/// `faultline check FILES...`, run from the crate's directory so that the files are
/// named as written.
fn check(files: &[String]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("check")
        .args(files)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `.toml` files directly in `dir` (relative to the crate), sorted, as `dir/NAME`.
fn toml_files(dir: &str) -> Vec<String> {
    let abs: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut names: Vec<String> = std::fs::read_dir(&abs)
        .unwrap_or_else(|e| panic!("{}: {e}", abs.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().map(|n| format!("{dir}/{n}")).collect()
}

#[derive(Debug)]
struct Expect {
    line: usize,
    column: usize,
    message: String,
}

/// Reads `# expect: LINE:COLUMN: MESSAGE` from the first line of `text`.
fn expectation(text: &str) -> Result<Expect, String> {
    let first = text.lines().next().unwrap_or("");
    let rest = first.strip_prefix("# expect: ").ok_or_else(|| {
        format!("the first line is not `# expect: LINE:COLUMN: MESSAGE`: {first:?}")
    })?;
    let mut parts = rest.splitn(3, ':');
    let (Some(line), Some(column), Some(message)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("`{rest}` is not LINE:COLUMN: MESSAGE"));
    };
    let number = |s: &str| {
        s.trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{s}` is not a line or column number in `{rest}`"))
    };
    let message = message.trim();
    if message.is_empty() {
        return Err(format!("`{rest}` names no message"));
    }
    Ok(Expect {
        line: number(line)?,
        column: number(column)?,
        message: message.to_owned(),
    })
}

/// What is wrong with the answer to `check FILE`, if anything.
fn judge(file: &str, expect: &Expect, code: Option<i32>, stderr: &str) -> Option<String> {
    let at = format!("error: {file}:{}:{}: ", expect.line, expect.column);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    let placed = errors.iter().any(|l| {
        l.strip_prefix(&at)
            .is_some_and(|m| m.contains(&expect.message))
    });
    let mut wrong = Vec::new();
    if code != Some(2) {
        wrong.push(format!("exit code {code:?}, not 2"));
    }
    if !placed {
        wrong.push(format!(
            "no error `{file}:{}:{}: ...{}...`",
            expect.line, expect.column, expect.message
        ));
    }
    if errors.len() != 1 {
        wrong.push(format!(
            "{} errors for a file with one mistake",
            errors.len()
        ));
    }
    (!wrong.is_empty()).then(|| {
        format!(
            "{file}: {}\n  stderr:\n{}",
            wrong.join("; "),
            stderr
                .lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

#[test]
fn every_bad_experiment_is_refused_where_its_mistake_is() {
    let files = toml_files(BAD);
    assert!(
        files.len() >= 20,
        "{BAD} holds {} fixtures, expected at least 20",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
        let expect = match expectation(&text) {
            Ok(e) => e,
            Err(m) => {
                failures.push(format!("{file}: {m}"));
                continue;
            }
        };
        if expect.line > text.lines().count() {
            failures.push(format!(
                "{file}: the expected line {} is past the end of the file",
                expect.line
            ));
            continue;
        }
        let (code, _, stderr) = check(std::slice::from_ref(file));
        if let Some(f) = judge(file, &expect, code, &stderr) {
            failures.push(f);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad experiments are not refused as their `# expect:` line says:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_bundled_experiment_passes_check() {
    let files = toml_files(BUNDLED);
    assert!(
        files.iter().any(|f| f.ends_with("/demo.toml")),
        "no demo.toml among {files:?}"
    );
    let (code, out, err) = check(&files);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.trim().is_empty(), "{err}");
    for f in &files {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{f}: ok: "))),
            "no ok line for {f}:\n{out}"
        );
    }
}

#[test]
fn the_expectations_are_read_and_judged_strictly() {
    // The judge itself: a right answer passes, and each way of being wrong fails.
    let e = expectation("# expect: 3:12: is not a duration\nname = \"x\"\n").unwrap();
    assert_eq!(
        (e.line, e.column, e.message.as_str()),
        (3, 12, "is not a duration")
    );
    for bad in [
        "name = \"x\"",
        "# expect: 3: is not a duration",
        "# expect: 0:1: message",
        "# expect: 3:x: message",
        "# expect: 3:12:",
    ] {
        assert!(expectation(bad).is_err(), "{bad:?} was read");
    }
    let f = "bad/x.toml";
    let right = "error: bad/x.toml:3:12: `duration`: `x` is not a duration\n";
    assert_eq!(judge(f, &e, Some(2), right), None);
    assert!(judge(f, &e, Some(0), right).is_some(), "exit code");
    assert!(judge(f, &e, Some(1), right).is_some(), "exit code");
    assert!(
        judge(
            f,
            &e,
            Some(2),
            "error: bad/x.toml:3:11: `x` is not a duration\n"
        )
        .is_some(),
        "column"
    );
    assert!(
        judge(
            f,
            &e,
            Some(2),
            "error: bad/x.toml:4:12: `x` is not a duration\n"
        )
        .is_some(),
        "line"
    );
    assert!(
        judge(f, &e, Some(2), "error: bad/x.toml:3:12: missing field\n").is_some(),
        "message"
    );
    assert!(
        judge(
            f,
            &e,
            Some(2),
            "error: bad/x.toml:1:1: missing field\nerror: bad/y.toml:3:12: is not a duration\n"
        )
        .is_some(),
        "the place and the message on different errors"
    );
    assert!(
        judge(
            f,
            &e,
            Some(2),
            &format!("{right}error: bad/x.toml:9:1: also this\n")
        )
        .is_some(),
        "a second error"
    );
}

/// An empty directory of its own under Cargo's temporary directory for tests.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("experiments")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A FIFO at `path`, which nobody will ever write to.
fn fifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path; mkfifo only creates a file.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// `faultline check PATH` that must answer within `limit`: one that blocks (on a FIFO
/// nobody writes) is killed and the test fails saying so.
fn check_within(path: &Path, limit: Duration) -> (Option<i32>, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("check")
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => {
            let out = out.unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            // SAFETY: `pid` is our own child, which has not been reaped (its waiter is
            // still waiting), so the pid cannot have been reused.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let _ = rx.recv();
            panic!(
                "`faultline check {}` was still running after {limit:?}: it blocks",
                path.display()
            );
        }
    }
}

const VALID: &str = "name = \"ok\"\nduration = \"30s\"\n\n[load]\nrate = 10\n\n[[load.flows]]\nname = \"browse\"\nsteps = [{ name = \"view product\", path = \"/api/v1/products/1\" }]\n";

#[test]
fn files_that_are_not_regular_are_refused_without_blocking() {
    let dir = scratch("not-regular");
    let pipe = dir.join("pipe.toml");
    fifo(&pipe);
    let subdir = dir.join("dir.toml");
    std::fs::create_dir(&subdir).unwrap();
    for (path, what) in [
        (pipe.as_path(), "a FIFO"),
        (subdir.as_path(), "a directory"),
        (Path::new("/dev/null"), "a character device"),
    ] {
        let (code, err) = check_within(path, Duration::from_secs(10));
        let expected = format!("error: {}: is {what}, not a regular file", path.display());
        assert_eq!(code, Some(2), "{}: {err}", path.display());
        assert!(err.starts_with(&expected), "{}: {err}", path.display());
    }
}

#[test]
fn a_workload_that_is_a_fifo_is_refused_where_it_is_named() {
    let dir = scratch("workload-fifo");
    fifo(&dir.join("workload.toml"));
    let file = dir.join("x.toml");
    std::fs::write(
        &file,
        "name = \"x\"\nduration = \"30s\"\n[load]\nrate = 10\nworkload = \"workload.toml\"\n",
    )
    .unwrap();
    let (code, err) = check_within(&file, Duration::from_secs(10));
    assert_eq!(code, Some(2), "{err}");
    let expected = format!(
        "error: {}:5:12: cannot read the workload {}: is a FIFO, not a regular file",
        file.display(),
        dir.join("workload.toml").display()
    );
    assert!(err.starts_with(&expected), "{err}");
}

#[test]
fn an_experiment_file_may_hold_at_most_4_mib() {
    let dir = scratch("size");
    let limit = 4 << 20;
    // Padded with a comment to exactly the limit: accepted; one byte more: refused.
    let mut text = VALID.to_owned();
    text.push('#');
    text.push_str(&" ".repeat(limit - text.len() - 1));
    text.push('\n');
    assert_eq!(text.len(), limit);
    let at_limit = dir.join("at-limit.toml");
    std::fs::write(&at_limit, &text).unwrap();
    let (code, err) = check_within(&at_limit, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}");
    text.insert(VALID.len() + 1, ' ');
    let over = dir.join("over.toml");
    std::fs::write(&over, &text).unwrap();
    let (code, err) = check_within(&over, Duration::from_secs(60));
    assert_eq!(code, Some(2), "{err}");
    let expected = format!(
        "error: {}: is 4194305 bytes, over the 4 MiB limit for input files",
        over.display()
    );
    assert!(err.starts_with(&expected), "{err}");
}

#[test]
fn text_that_is_not_utf8_is_refused_at_its_place() {
    let dir = scratch("utf8");
    let file = dir.join("x.toml");
    std::fs::write(&file, b"duration = \"30s\"\nname = \"caf\xe9\"\n").unwrap();
    let (code, err) = check_within(&file, Duration::from_secs(10));
    assert_eq!(code, Some(2), "{err}");
    let expected = format!("error: {}:2:12: the file is not UTF-8 text", file.display());
    assert!(err.starts_with(&expected), "{err}");
}

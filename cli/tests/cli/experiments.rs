//! `faultline check` on experiment files: every file of `tests/fixtures/experiments/bad`
//! holds one mistake and is refused with it placed where the file's first line says;
//! every experiment of `target-system/experiments` is accepted.
//!
//! A bad fixture starts with `# expect: LINE:COLUMN: MESSAGE`: LINE and COLUMN count in
//! that same file (the comment is line 1), MESSAGE is a part of the error's message.

use std::path::{Path, PathBuf};
use std::process::Command;

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

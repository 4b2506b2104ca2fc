//! One run of a `[[checks.command]]` check: the program without a shell, in a process
//! group of its own, with the run's addresses in its environment. Past its timeout the
//! whole group is killed and the check fails; when it exits, whatever it left running
//! in its group is killed too, so no check outlives its run. The tails of its standard
//! output and error are kept for the report.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::checks::{Attempt, Miss};
use crate::experiment::CommandCheck;
use crate::experiment::checks::command_line;

/// How much of each output stream is kept: the end, where the reason usually is.
pub const TAIL: usize = 4096;
/// How long the output may still take once the program has ended (something outside
/// its process group may hold the pipes).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// What one run found.
pub struct Ran {
    pub verdict: Attempt,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

/// Runs the check once.
pub async fn run(c: &CommandCheck, env: &[(String, String)]) -> Ran {
    let expected = format!("exit status {}", c.exit);
    let mut cmd = Command::new(program(&c.argv[0], &c.cwd));
    cmd.args(&c.argv[1..])
        .current_dir(&c.cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Ran {
                verdict: Err(Miss {
                    expected,
                    found: format!(
                        "`{}` could not start in {}: {e}",
                        command_line(&c.argv),
                        c.cwd.display()
                    ),
                }),
                stdout: None,
                stderr: None,
            };
        }
    };
    let group = child.id().map(|id| Pid::from_raw(id as i32));
    let (out_kept, err_kept) = (Kept::default(), Kept::default());
    let out = tokio::spawn(tail(child.stdout.take(), out_kept.clone()));
    let err = tokio::spawn(tail(child.stderr.take(), err_kept.clone()));
    let waited = tokio::time::timeout(c.timeout, child.wait()).await;
    // Whatever the program left in its group goes with it, on a timeout and after an
    // exit alike (ESRCH: nothing was left).
    if let Some(g) = group {
        let _ = killpg(g, Signal::SIGKILL);
    }
    let found = match waited {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(format!("could not be waited for: {e}")),
        Err(_) => {
            let _ = child.wait().await;
            Err(format!(
                "still running after {} (its process group was killed)",
                humantime::format_duration(c.timeout)
            ))
        }
    };
    let stdout = collect(out, out_kept).await;
    let stderr = collect(err, err_kept).await;
    let verdict = match found {
        Ok(status) if status.code() == Some(c.exit) => Ok(format!("exit status {}", c.exit)),
        Ok(status) => Err(Miss {
            expected,
            found: exited(status),
        }),
        Err(found) => Err(Miss { expected, found }),
    };
    Ran {
        verdict,
        stdout,
        stderr,
    }
}

/// The program to start: a relative path with a `/` (`./check.sh`) is relative to the
/// check's working directory, a bare name is looked up in `PATH`.
fn program(name: &str, cwd: &Path) -> std::path::PathBuf {
    let p = Path::new(name);
    if p.is_relative() && name.contains('/') {
        cwd.join(p)
    } else {
        p.to_path_buf()
    }
}

fn exited(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        (None, None) => status.to_string(),
    }
}

/// The end of a stream as read so far.
type Kept = Arc<Mutex<Vec<u8>>>;

/// Reads a stream to its end into `kept`, keeping the last [`TAIL`] bytes.
async fn tail(stream: Option<impl AsyncRead + Unpin>, kept: Kept) {
    let Some(mut stream) = stream else {
        return;
    };
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let mut k = kept.lock().expect("not poisoned");
        k.extend_from_slice(&buf[..n]);
        if k.len() > TAIL {
            let cut = k.len() - TAIL;
            k.drain(..cut);
        }
    }
}

/// The tail a reader kept, as text (`None` when empty). A stream still held open by a
/// process outside the group is given up after [`OUTPUT_GRACE`], with what it gave.
async fn collect(task: tokio::task::JoinHandle<()>, kept: Kept) -> Option<String> {
    let abort = task.abort_handle();
    if tokio::time::timeout(OUTPUT_GRACE, task).await.is_err() {
        abort.abort();
    }
    let bytes = std::mem::take(&mut *kept.lock().expect("not poisoned"));
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (!text.trim().is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::When;

    fn check(script: &str, timeout: Duration) -> CommandCheck {
        CommandCheck {
            name: "c".into(),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            exit: 0,
            timeout,
            cwd: std::env::temp_dir(),
            within: Duration::ZERO,
            when: When::Both,
        }
    }

    fn alive(pid: i32) -> bool {
        // A zombie is dead: only a process that still runs counts.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed_with_everything_it_started() {
        let c = check("sleep 60 & echo $!; sleep 60", Duration::from_millis(500));
        let start = std::time::Instant::now();
        let ran = run(&c, &[]).await;
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        let miss = ran.verdict.unwrap_err();
        assert_eq!(miss.expected, "exit status 0");
        assert!(
            miss.found.starts_with("still running after 500ms"),
            "{}",
            miss.found
        );
        let pid: i32 = ran.stdout.unwrap().trim().parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(pid), "the background sleep {pid} outlived its check");
    }

    #[tokio::test]
    async fn exit_status_environment_and_output_tails() {
        let c = CommandCheck {
            exit: 3,
            ..check(
                "echo \"$FAULTLINE_ENTRYPOINT\"; head -c 10000 /dev/zero | tr '\\0' x >&2; exit 3",
                Duration::from_secs(10),
            )
        };
        let env = [(
            "FAULTLINE_ENTRYPOINT".to_owned(),
            "http://127.0.0.1:9".to_owned(),
        )];
        let ran = run(&c, &env).await;
        assert_eq!(ran.verdict, Ok("exit status 3".into()));
        assert_eq!(ran.stdout.as_deref(), Some("http://127.0.0.1:9\n"));
        assert_eq!(ran.stderr.unwrap().len(), TAIL, "only the end is kept");
        let ran = run(&check("kill -9 $$", Duration::from_secs(10)), &[]).await;
        assert_eq!(ran.verdict.unwrap_err().found, "killed by SIGKILL");
        let missing = CommandCheck {
            argv: vec!["./no-such-program".into()],
            ..check("", Duration::from_secs(1))
        };
        let found = run(&missing, &[]).await.verdict.unwrap_err().found;
        assert!(
            found.starts_with("`./no-such-program` could not start in"),
            "{found}"
        );
    }
}

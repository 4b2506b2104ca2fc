//! One bounded run of a program that is not a replica: an exec health probe, or a
//! `[[checks.command]]` check of a run. The program starts without a shell, in a process
//! group of its own, with stdin closed. Past its timeout the whole group is killed; when
//! it exits, whatever it left running in its group is killed too, so nothing it started
//! outlives the run. Both output streams are read at once to their ends (a program that
//! fills one pipe while the other stays open cannot block), keeping the last
//! [`TAIL`] bytes of each: the end, where the reason usually is.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

pub use super::process::describe_exit;

/// How much of each output stream is kept.
pub const TAIL: usize = 4096;
/// How long the output may still take once the program has ended (something outside
/// its process group may hold the pipes).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// What to run.
pub struct Bounded<'a> {
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    /// Its working directory; empty for the caller's. A relative program path with a
    /// `/` (`./check.sh`) is taken from here, a bare name from `PATH`.
    pub cwd: &'a Path,
    pub timeout: Duration,
}

/// How it ended.
#[derive(Debug)]
pub enum Outcome {
    Exited(ExitStatus),
    /// It could not be started (no such program, not executable, ...).
    NotStarted(std::io::Error),
    /// Still running at its timeout: its process group was killed.
    TimedOut,
    WaitFailed(std::io::Error),
}

/// What one run found.
#[derive(Debug)]
pub struct Ran {
    pub outcome: Outcome,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Bounded<'_> {
    /// The command line as shown in messages.
    pub fn shown(&self) -> String {
        self.argv.join(" ")
    }

    /// Runs the program once.
    pub async fn run(&self) -> Ran {
        let mut cmd = Command::new(program(&self.argv[0], self.cwd));
        cmd.args(&self.argv[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if !self.cwd.as_os_str().is_empty() {
            cmd.current_dir(self.cwd);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Ran {
                    outcome: Outcome::NotStarted(e),
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                };
            }
        };
        let group = child.id().map(|id| Pid::from_raw(id as i32));
        let (out_kept, err_kept) = (Kept::default(), Kept::default());
        let out = tokio::spawn(tail(child.stdout.take(), out_kept.clone()));
        let err = tokio::spawn(tail(child.stderr.take(), err_kept.clone()));
        let waited = tokio::time::timeout(self.timeout, child.wait()).await;
        // Whatever the program left in its group goes with it, on a timeout and after
        // an exit alike (ESRCH: nothing was left).
        if let Some(g) = group {
            let _ = killpg(g, Signal::SIGKILL);
        }
        let outcome = match waited {
            Ok(Ok(status)) => Outcome::Exited(status),
            Ok(Err(e)) => Outcome::WaitFailed(e),
            Err(_) => {
                let _ = child.wait().await;
                Outcome::TimedOut
            }
        };
        Ran {
            outcome,
            stdout: collect(out, out_kept).await,
            stderr: collect(err, err_kept).await,
        }
    }
}

/// The program to start: a relative path with a `/` is relative to `cwd`.
fn program(name: &str, cwd: &Path) -> PathBuf {
    let p = Path::new(name);
    if p.is_relative() && name.contains('/') {
        cwd.join(p)
    } else {
        p.to_path_buf()
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

/// The tail a reader kept. A stream still held open by a process outside the group is
/// given up after [`OUTPUT_GRACE`], with what it gave.
async fn collect(task: tokio::task::JoinHandle<()>, kept: Kept) -> Vec<u8> {
    let abort = task.abort_handle();
    if tokio::time::timeout(OUTPUT_GRACE, task).await.is_err() {
        abort.abort();
    }
    std::mem::take(&mut *kept.lock().expect("not poisoned"))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn past_its_timeout_the_program_goes_with_everything_it_started() {
        let argv = sh("sleep 60 & echo $!; sleep 60");
        let ran = Bounded {
            argv: &argv,
            env: &[],
            cwd: Path::new(""),
            timeout: Duration::from_millis(500),
        }
        .run()
        .await;
        assert!(
            matches!(ran.outcome, Outcome::TimedOut),
            "{:?}",
            ran.outcome
        );
        let pid: i32 = String::from_utf8(ran.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(pid) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(pid), "the background sleep {pid} outlived its run");
    }

    #[tokio::test]
    async fn a_program_that_fills_one_pipe_ends_in_time_and_only_tails_are_kept() {
        // 256 KiB on stderr, more than a pipe holds, while stdout stays open: read one
        // stream after the other, the run would wait out its timeout.
        let argv = sh("echo first; head -c 262144 /dev/zero >&2; exit 3");
        let ran = Bounded {
            argv: &argv,
            env: &[],
            cwd: Path::new(""),
            timeout: Duration::from_secs(20),
        }
        .run()
        .await;
        let Outcome::Exited(status) = ran.outcome else {
            panic!("{:?}", ran.outcome)
        };
        assert_eq!(describe_exit(&status), "exited with code 3");
        assert_eq!(ran.stdout, b"first\n");
        assert_eq!(ran.stderr.len(), TAIL);
    }
}

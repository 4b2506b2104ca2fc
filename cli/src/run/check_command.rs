//! One run of a `[[checks.command]]` check, with the run's addresses in its
//! environment: the agent's bounded runner (the one exec health probes use, see
//! `faultline_agent::supervisor::command`) starts it in a process group of its own and
//! kills the group past its timeout and after it exits, so no check outlives its run.
//! Here its outcome becomes a verdict, and the tails of its output go to the report.

use faultline_agent::supervisor::command::{Bounded, Outcome, describe_exit};

use super::checks::{Attempt, Miss};
use crate::experiment::CommandCheck;
use crate::experiment::checks::command_line;

/// What one run found.
pub struct Ran {
    pub verdict: Attempt,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

/// Runs the check once.
pub async fn run(c: &CommandCheck, env: &[(String, String)]) -> Ran {
    let expected = format!("exit status {}", c.exit);
    let ran = Bounded {
        argv: &c.argv,
        env,
        cwd: &c.cwd,
        timeout: c.timeout,
    }
    .run()
    .await;
    let found = match ran.outcome {
        Outcome::Exited(status) if status.code() == Some(c.exit) => {
            Ok(format!("exit status {}", c.exit))
        }
        Outcome::Exited(status) => Err(match status.code() {
            Some(code) => format!("exit status {code}"),
            None => describe_exit(&status),
        }),
        Outcome::NotStarted(e) => Err(format!(
            "`{}` could not start in {}: {e}",
            command_line(&c.argv),
            c.cwd.display()
        )),
        Outcome::WaitFailed(e) => Err(format!("could not be waited for: {e}")),
        Outcome::TimedOut => Err(format!(
            "still running after {} (its process group was killed)",
            humantime::format_duration(c.timeout)
        )),
    };
    Ran {
        verdict: found.map_err(|found| Miss { expected, found }),
        stdout: text(ran.stdout),
        stderr: text(ran.stderr),
    }
}

/// A kept tail as text (`None` when empty).
fn text(bytes: Vec<u8>) -> Option<String> {
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (!text.trim().is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::When;
    use faultline_agent::supervisor::command::TAIL;
    use std::time::Duration;

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

    #[tokio::test]
    async fn a_command_past_its_timeout_fails_the_check() {
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
        // That its background sleep went with it is the runner's own test.
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

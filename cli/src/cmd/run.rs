//! `faultline run FILE`: a gameday from an experiment file, judged by its SLOs and checks,
//! with JSON, JUnit and Markdown reports; `faultline demo`: the bundled demo gameday.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::exit::Exit;
use crate::experiment::{self, Experiment, Overrides, TargetSpec};
use crate::run::report::Report;
use crate::run::{self, Options};

/// Run an experiment: bring up the bundled shop (or use the running system the file or
/// --agent names), run the load and the fault timeline, heal everything (also on Ctrl-C
/// or SIGTERM), drain, check, and judge. Exit code 0: the hypothesis held; 1: it did
/// not, or the run aborted on a guard or was interrupted; 2: bad input or setup error.
///
/// Examples:
///   faultline run target-system/experiments/demo.toml --report out/
///   faultline run gameday.toml --junit junit.xml --seed 7
///   faultline run gameday.toml --agent http://127.0.0.1:7400
///   faultline run gameday.toml --agent a=http://10.0.0.2:7400 --agent b=http://10.0.0.3:7400
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The experiment file.
    pub file: PathBuf,
    #[command(flatten)]
    pub common: Common,
}

/// Run the demo gameday on the bundled shop: a minute of baseline, an orders replica
/// killed, latency on payments, the payments consumers cut off from the broker, poison
/// messages, and recovery; then the checks. Same options and exit codes as `run`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args, Debug)]
pub struct Common {
    /// Write report.json, report.md and junit.xml into this directory.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Seed of every random draw (overrides the file's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// `--agent` (a global option, repeatable): run against the agents of a running
    /// `faultline up` or standalone agents instead of starting the system.
    #[arg(skip)]
    pub agent: Vec<String>,
    /// Bearer token of the agents' API (an agent of [[target.agents]] may set its own).
    #[arg(long, env = "FAULTLINE_AGENT_TOKEN", hide_env_values = true)]
    pub agent_token: Option<String>,
    /// Print the report as JSON on stdout instead of the Markdown summary.
    #[arg(long)]
    pub json: bool,
    /// No live dashboard, even on a terminal (progress lines on stderr instead).
    #[arg(long)]
    pub no_tui: bool,
    /// Spread the load over these load workers (`faultline worker`), instead of the
    /// file's `[load] workers`: worker i of N makes every N-th iteration (open model) or
    /// user (closed); their results are merged exactly and judged once.
    #[arg(long, value_name = "URL,URL", value_delimiter = ',', value_parser = worker_url)]
    pub workers: Option<Vec<String>>,
    /// Bearer token of the load workers.
    #[arg(long, value_name = "TOKEN", env = crate::cmd::worker::TOKEN_ENV, hide_env_values = true)]
    pub worker_token: Option<String>,
    /// How long to wait for every load worker to answer before the run starts.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::cmd::load::duration)]
    pub workers_wait: std::time::Duration,
    /// Run the system this run starts (the bundled shop, or [target] topology) as
    /// `docker` containers or as processes, whatever its topology says.
    #[arg(long, value_enum, value_name = "RUNTIME")]
    pub runtime: Option<faultline_agent::topology::RuntimeKind>,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let overrides = overrides(&args.common);
    match experiment::load_file(&args.file, &overrides) {
        Ok(exp) => {
            // Forgetting [target] must not silently test the shop instead of the user's
            // system: the header says so, and so does every setup error.
            let bundled = matches!(exp.target, TargetSpec::Start { bundled: true, .. })
                .then(|| bundled_note(&args.file));
            if let Some(note) = &bundled {
                eprintln!("note: {note}");
            }
            execute(exp, &args.common, bundled.as_deref())
        }
        Err(problems) => {
            eprintln!("{problems}");
            Ok(Exit::BadInput)
        }
    }
}

pub fn demo(args: DemoArgs) -> anyhow::Result<Exit> {
    let overrides = overrides(&args.common);
    match experiment::parse(
        experiment::DEMO_NAME,
        experiment::DEMO,
        Path::new("."),
        &overrides,
    ) {
        Ok(exp) => execute(exp, &args.common, None),
        Err(problems) => {
            eprintln!("{problems}");
            Ok(Exit::BadInput)
        }
    }
}

/// What a run of `file`, which has no `[target]`, runs against, and how to name another.
fn bundled_note(file: &Path) -> String {
    format!(
        "{} has no [target], so it runs against the bundled shop; to test your own system, name it under [target]: topology = \"path/to/topology.toml\", or url = \"http://HOST:PORT\" (and agent = \"http://HOST:PORT\" for faults)",
        file.display()
    )
}

fn overrides(c: &Common) -> Overrides {
    Overrides {
        seed: c.seed,
        agents: c.agent.clone(),
        workers: c.workers.clone(),
    }
}

fn worker_url(s: &str) -> Result<String, String> {
    experiment::worker_url(s)
}

fn write_reports(report: &Report, c: &Common) -> anyhow::Result<()> {
    if let Some(dir) = &c.report {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, text) in [
            ("report.json", report.json()),
            ("report.md", report.markdown()),
            ("junit.xml", report.junit()),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
        }
        eprintln!("reports: {}", dir.display());
    }
    if let Some(p) = &c.junit {
        if let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).ok();
        }
        std::fs::write(p, report.junit())
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    // GitHub Actions shows this file on the run's page.
    if let Some(p) = std::env::var_os("GITHUB_STEP_SUMMARY") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
        {
            let _ = f.write_all(report.markdown().as_bytes());
        }
    }
    Ok(())
}

/// Runs `exp`; `bundled` is the note for a run that targets the bundled shop because its
/// file names no target, repeated under a setup error.
fn execute(exp: Experiment, c: &Common, bundled: Option<&str>) -> anyhow::Result<Exit> {
    use std::io::IsTerminal;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let tui = !c.no_tui && !c.json && std::io::stdout().is_terminal();
    let mut opts = Options {
        agent_token: c.agent_token.clone(),
        runtime: c.runtime,
        worker_token: c.worker_token.clone(),
        workers_wait: c.workers_wait,
        ..Options::default()
    };
    let result = if tui {
        let (tx, rx) = tokio::sync::watch::channel(crate::run::state::RunState::default());
        let interrupt = tokio_util::sync::CancellationToken::new();
        opts.live = Some(tx);
        opts.quiet = true;
        opts.interrupt = Some(interrupt.clone());
        let token = c.agent_token.clone();
        runtime.block_on(async move {
            let running = tokio::spawn(async move { run::execute(&exp, &opts).await });
            // A setup error is reported like one without the dashboard (exit code 2).
            let shown = crate::tui::run(rx, None, token, interrupt).await;
            if !running.is_finished() {
                eprintln!("stopping: healing every fault, draining, checking...");
            }
            let report = running.await.context("the run failed")?;
            shown?;
            Ok::<_, anyhow::Error>(report.map_err(anyhow::Error::from))
        })?
    } else {
        runtime
            .block_on(run::execute(&exp, &opts))
            .map_err(anyhow::Error::from)
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(note) = bundled {
                eprintln!("hint: {note}");
            }
            return Ok(Exit::BadInput);
        }
    };
    write_reports(&report, c)?;
    if c.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.markdown());
    }
    Ok(match report.status {
        status if status.is_setup_failure() => Exit::BadInput,
        _ if report.passed => Exit::Success,
        _ => Exit::HypothesisFailed,
    })
}

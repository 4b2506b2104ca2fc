//! faultline: chaos testing with live SLOs. One command drives load and faults against a
//! system, judges it by its SLOs and the system's own invariants, and shows it all live.
//! The `faultline` binary is a thin shell over this library: it parses the command line
//! into a [`Cli`], calls [`Cli::run`] and turns the outcome into an exit code.
//!
//! # Layout
//!
//! - [`cmd`]: one module per command; [`Command`] dispatches to them.
//! - [`experiment`]: experiment files, checked into an [`experiment::Experiment`].
//! - [`load`]: the load engine (open and closed models, flows of templated steps).
//! - [`slo`]: the SLO engine: SLIs, error budgets, burn rates, phases (pure arithmetic).
//! - [`mod@run`]: the runner, along its data flow: target, observe, collect, judge,
//!   report.
//! - [`tui`]: the live dashboard.
//! - [`metrics`], [`dashboards`]: the CLI's own `/metrics`, and the Grafana dashboards.
//! - [`shop`]: what faultline knows of the bundled shop (its files, invariants,
//!   dashboards and SLO rules): the one place that names its services and endpoints.
//! - [`bundled`], [`discover`], [`fleet`], [`exit`], [`input`], [`limits`]: the bundled
//!   topology, which agents a command talks to and which owns a target, exit codes,
//!   reading user files, input bounds.

pub mod bundled;
pub mod cmd;
pub mod dashboards;
pub mod discover;
pub mod exit;
pub mod experiment;
pub mod fleet;
pub mod input;
pub mod limits;
pub mod load;
pub mod metrics;
pub mod run;
pub mod shop;
pub mod slo;
pub mod tui;
pub mod worker;

use clap::{Parser, Subcommand};

use crate::exit::Exit;

/// Chaos testing with live SLOs: load, faults and a dashboard from one command.
#[derive(Parser)]
#[command(name = "faultline", version, propagate_version = true)]
pub struct Cli {
    /// The agent's URL, for fault, heal, scale, status, proxy, tui, run and demo; before or after the
    /// command's name. Repeat it for several agents (not for proxy), each `URL` (named by
    /// its host:port) or `NAME=URL`; a target two agents own is qualified, `NAME/orders-2`
    /// [default: $FAULTLINE_AGENT, else the agent of the most recent `faultline up` or
    /// `faultline run` on this machine; run and demo start their own]
    #[arg(long, global = true, value_name = "URL", action = clap::ArgAction::Append)]
    pub agent: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start a topology (the bundled shop by default) in the foreground.
    Up(cmd::up::Args),
    /// Inject a fault through the agent (or `fault list`).
    Fault(Box<cmd::fault::Args>),
    /// Heal a fault, or all of them.
    Heal(cmd::heal::Args),
    /// Set a running service to N replicas (`scale orders 5`).
    Scale(cmd::scale::Args),
    /// Show the replicas and the faults in effect (a section per agent with several).
    Status(cmd::status::Args),
    /// Make, list and delete fault proxies to any address (`proxy create NAME --upstream HOST:PORT`).
    Proxy(cmd::proxy::Args),
    /// Load one URL (open model with -r, closed with -c) and summarise the latency.
    Load(Box<cmd::load::Args>),
    /// Serve as a load worker for `run --workers` and `load --workers`.
    Worker(cmd::worker::Args),
    /// Run an experiment file: load, faults, SLOs, checks, reports.
    Run(Box<cmd::run::Args>),
    /// Run the demo gameday on the bundled shop.
    Demo(Box<cmd::run::DemoArgs>),
    /// The live dashboard, attached to a running `faultline up`.
    Tui(cmd::tui::Args),
    /// Validate experiment files without running them.
    Check(cmd::check::Args),
    /// Grafana dashboards and provisioning files (`dashboards export DIR`).
    Dashboards(cmd::dashboards::Args),
    /// Prometheus rules for SLOs (`slo rules FILE`).
    Slo(cmd::slo::Args),
    /// Print the JSON Schema of experiment files.
    Schema(cmd::check::SchemaArgs),
    /// Print a shell completion script (bash, zsh or fish).
    Completions(cmd::completions::Args),
    /// Build container images of the shop, the agent and faultline (`images build`).
    Images(cmd::images::Args),
}

/// Logs go to stderr, filtered by `FAULTLINE_LOG` (default `warn`), and nowhere while
/// the dashboard owns the terminal (log lines would tear its picture).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_ansi(faultline_agent::diag::stderr_colour())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FAULTLINE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(|| -> Box<dyn std::io::Write> {
            if tui::active() {
                Box::new(std::io::sink())
            } else {
                Box::new(std::io::stderr())
            }
        })
        .with_target(false)
        .init();
}

impl Command {
    /// The command's name as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Up(_) => "up",
            Command::Fault(_) => "fault",
            Command::Heal(_) => "heal",
            Command::Scale(_) => "scale",
            Command::Status(_) => "status",
            Command::Proxy(_) => "proxy",
            Command::Load(_) => "load",
            Command::Worker(_) => "worker",
            Command::Run(_) => "run",
            Command::Demo(_) => "demo",
            Command::Tui(_) => "tui",
            Command::Check(_) => "check",
            Command::Dashboards(_) => "dashboards",
            Command::Slo(_) => "slo",
            Command::Schema(_) => "schema",
            Command::Completions(_) => "completions",
            Command::Images(_) => "images",
        }
    }
}

impl Cli {
    /// Runs the command. `Err` is a setup error the command did not report itself
    /// (exit code 2); whatever happened, the terminal is left as it was found.
    pub fn run(self) -> anyhow::Result<Exit> {
        let agent = self.agent;
        let given = |mut a: discover::AgentArgs| {
            a.agent = agent.clone();
            a
        };
        let result = match self.command {
            Command::Fault(mut args) => {
                args.agent = given(args.agent);
                let a = args.agent.clone();
                cmd::fault::run(*args).map_err(|e| a.explain(e))
            }
            Command::Heal(mut args) => {
                args.agent = given(args.agent);
                let a = args.agent.clone();
                cmd::heal::run(args).map_err(|e| a.explain(e))
            }
            Command::Scale(mut args) => {
                args.agent = given(args.agent);
                let a = args.agent.clone();
                cmd::scale::run(args).map_err(|e| a.explain(e))
            }
            Command::Status(mut args) => {
                args.agent = given(args.agent);
                let a = args.agent.clone();
                cmd::status::run(args).map_err(|e| a.explain(e))
            }
            Command::Proxy(mut args) => {
                args.agent = given(args.agent);
                let a = args.agent.clone();
                cmd::proxy::run(args).map_err(|e| a.explain(e))
            }
            Command::Tui(mut args) => {
                args.agent = given(args.agent);
                let a = args.agent.clone();
                cmd::tui::run(args).map_err(|e| a.explain(e))
            }
            Command::Run(mut args) => {
                args.common.agent = agent;
                cmd::run::run(*args)
            }
            Command::Demo(mut args) => {
                args.common.agent = agent;
                cmd::run::demo(*args)
            }
            _ if !agent.is_empty() => Err(anyhow::anyhow!(
                "--agent applies to fault, heal, scale, status, proxy, tui, run and demo, not to `{}`",
                self.command.name()
            )),
            Command::Up(args) => cmd::up::run(args),
            Command::Load(args) => cmd::load::run_cmd(*args),
            Command::Worker(args) => cmd::worker::run(args),
            Command::Check(args) => cmd::check::run(args),
            Command::Schema(args) => cmd::check::schema(args),
            Command::Slo(args) => cmd::slo::run(args),
            Command::Dashboards(args) => cmd::dashboards::run(args),
            Command::Completions(args) => cmd::completions::run(args),
            Command::Images(args) => cmd::images::run(args),
        };
        tui::restore();
        result
    }
}

//! `faultline`: the CLI. This file is the command-line definition and the glue that
//! maps outcomes to exit codes; each command lives in `cmd/`.

mod bundled;
mod cmd;
mod dashboards;
mod discover;
mod exit;
mod experiment;
mod input;
mod limits;
mod load;
mod metrics;
mod run;
mod slo;
mod tui;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Chaos testing with live SLOs: load, faults and a dashboard from one command.
#[derive(Parser)]
#[command(name = "faultline", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a topology (the bundled shop by default) in the foreground.
    Up(cmd::up::Args),
    /// Inject a fault through the agent (or `fault list`).
    Fault(Box<cmd::fault::Args>),
    /// Heal a fault, or all of them.
    Heal(cmd::heal::Args),
    /// Show the replicas and the faults in effect.
    Status(cmd::status::Args),
    /// Load one URL (open model with -r, closed with -c) and summarise the latency.
    Load(Box<cmd::load::Args>),
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FAULTLINE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        // While the dashboard owns the terminal, log lines would tear its picture.
        .with_writer(|| -> Box<dyn std::io::Write> {
            if tui::active() {
                Box::new(std::io::sink())
            } else {
                Box::new(std::io::stderr())
            }
        })
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Up(args) => cmd::up::run(args),
        Command::Fault(args) => cmd::fault::run(*args),
        Command::Heal(args) => cmd::heal::run(args),
        Command::Status(args) => cmd::status::run(args),
        Command::Load(args) => cmd::load::run_cmd(*args),
        Command::Run(args) => cmd::run::run(*args),
        Command::Demo(args) => cmd::run::demo(*args),
        Command::Tui(args) => cmd::tui::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Schema(args) => cmd::check::schema(args),
        Command::Slo(args) => cmd::slo::run(args),
        Command::Dashboards(args) => cmd::dashboards::run(args),
    };
    // Whatever happened, the terminal is left as it was found.
    tui::restore();
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::Exit::BadInput.into()
        }
    }
}

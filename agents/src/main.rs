//! `faultline-agent`: the standalone agent, for machines that `faultline` does not run
//! on. It supervises a topology in the foreground, as `faultline up` does.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use faultline_agent::report;
use faultline_agent::rundir::RunDir;
use faultline_agent::supervisor::{Supervisor, SupervisorConfig};
use faultline_agent::topology::Topology;

/// faultline's agent: supervises the processes of a topology on this machine.
#[derive(Parser)]
#[command(name = "faultline-agent", version)]
struct Args {
    /// The topology file to run.
    #[arg(long)]
    topology: PathBuf,
    /// Run directory for logs and status (default: a new one under the faultline home).
    #[arg(long)]
    run_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FAULTLINE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let topology = match Topology::load(&args.topology) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("start the async runtime");
    runtime.block_on(async move {
        let run_dir = match &args.run_dir {
            Some(p) => RunDir::at(p),
            None => RunDir::create_in_home(),
        };
        let run_dir = match run_dir {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: cannot create the run directory: {e}");
                return ExitCode::from(2);
            }
        };
        let mut config = SupervisorConfig::new(run_dir);
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
        {
            config.bin_path.push(dir);
        }
        let sup = match Supervisor::start(topology, config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        println!("{}", report::ready_line(&sup));
        print!("{}", report::table(&sup.status()));
        println!("run directory: {}", sup.run_dir().display());
        if let Err(e) = report::wait_for_signal().await {
            eprintln!("error: cannot wait for signals: {e}");
        }
        sup.shutdown().await;
        ExitCode::SUCCESS
    })
}

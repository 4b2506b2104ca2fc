//! `faultline up`: start a topology in the foreground, print where it is, and stop it
//! cleanly on Ctrl-C or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use faultline_agent::report;
use faultline_agent::rundir::RunDir;
use faultline_agent::supervisor::{StartError, Supervisor, SupervisorConfig};

use crate::bundled;
use crate::exit::Exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Topology file to start (default: the bundled shop).
    #[arg(long, value_name = "FILE")]
    pub topology: Option<PathBuf>,
    /// Port of the entrypoint (the gateway); 0 picks a free one.
    #[arg(long, value_name = "N")]
    pub gateway_port: Option<u16>,
    /// Run directory for logs and status (default: a new one under
    /// $FAULTLINE_HOME/runs, recorded as the latest run).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    // Validate everything before starting anything: a bad file starts nothing.
    let mut topology = match bundled::load_topology(args.topology.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::BadInput);
        }
    };
    if let Some(port) = args.gateway_port {
        let ep = topology
            .entrypoint
            .clone()
            .context("--gateway-port needs a topology with an `entrypoint`")?;
        let svc = topology.service_mut(&ep).expect("validated entrypoint");
        if svc.replicas > 1 && port != 0 {
            anyhow::bail!(
                "--gateway-port {port}: the entrypoint `{ep}` has {} replicas, which cannot share a port",
                svc.replicas
            );
        }
        svc.port = port;
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let run_dir = match &args.run_dir {
            Some(p) => RunDir::at(p),
            None => RunDir::create_in_home(),
        }
        .context("cannot create the run directory")?;
        let mut config = SupervisorConfig::new(run_dir);
        if let Some(dir) = std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from)) {
            config.bin_path.push(dir);
        }
        let sup = match Supervisor::start(topology, config).await {
            Ok(s) => s,
            Err(e @ StartError::ProgramNotFound { .. }) => {
                anyhow::bail!("{e}\nhint: build every binary of the workspace first: cargo build --release --workspace")
            }
            Err(e) => return Err(e.into()),
        };
        println!("{}", report::ready_line(&sup));
        print!("{}", report::table(&sup.status()));
        println!("logs: {}", sup.run_dir().join("logs").display());
        let waited = report::wait_for_signal().await;
        eprintln!("stopping...");
        sup.shutdown().await;
        waited.context("cannot wait for signals")?;
        Ok(Exit::Success)
    })
}

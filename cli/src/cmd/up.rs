//! `faultline up`: start a topology in the foreground with its embedded agent, print
//! where everything is, and stop cleanly (healing every fault) on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use faultline_agent::agent::{Agent, AgentError, AgentOptions};
use faultline_agent::report;
use faultline_agent::rundir::RunDir;
use faultline_agent::supervisor::StartError;

use crate::bundled;
use crate::exit::Exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Topology file to start (default: the bundled shop).
    #[arg(long, value_name = "FILE", conflicts_with = "no_topology")]
    pub topology: Option<PathBuf>,
    /// Start no topology: the agent serves only proxies made at run time
    /// (`faultline proxy create`, --toxiproxy-listen) and faults on processes.
    #[arg(long, conflicts_with = "entrypoint_port")]
    pub no_topology: bool,
    /// Adopt the running Docker Compose project NAME: its containers become the
    /// services and replicas (by their Compose labels), open to every replica fault.
    /// Nothing is started or stopped; on exit every fault heals and the containers
    /// are left as they were found.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["topology", "no_topology", "runtime", "entrypoint_port"])]
    pub docker_project: Option<String>,
    /// Run every service as this: `docker` starts each replica as a container of its
    /// service's image (the bundled shop's is `faultline/shop`, from `faultline images
    /// build`) on a network made for the run; `process` runs them all as processes.
    /// Default: what the topology says (`runtime =`), else processes.
    #[arg(
        long,
        value_enum,
        value_name = "RUNTIME",
        conflicts_with = "no_topology"
    )]
    pub runtime: Option<faultline_agent::topology::RuntimeKind>,
    /// Port of the topology's entrypoint service (the shop's is `gateway`); 0 picks a
    /// free one.
    #[arg(long, value_name = "N", alias = "gateway-port")]
    pub entrypoint_port: Option<u16>,
    /// Run directory for logs, status and the fault journal (default: a new one under
    /// $FAULTLINE_HOME/runs). Either way it is recorded as the latest run, which
    /// `faultline fault`, `heal` and `status` talk to by default.
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Run every edge directly instead of through a fault proxy (a baseline; network
    /// faults are then unavailable).
    #[arg(long)]
    pub no_proxies: bool,
    /// Address of the agent's control API. Anything but loopback needs --agent-token.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub agent_listen: SocketAddr,
    /// Bearer token the agent's API requires.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FAULTLINE_AGENT_TOKEN",
        hide_env_values = true
    )]
    pub agent_token: Option<String>,
    #[command(flatten)]
    pub limits: faultline_agent::agent::LimitArgs,
    #[command(flatten)]
    pub toxiproxy: faultline_agent::toxiproxy::ToxiproxyArgs,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    // Validate everything before starting anything: a bad file starts nothing.
    let loaded = if args.no_topology {
        Ok(faultline_agent::topology::Topology::none())
    } else if let Some(project) = &args.docker_project {
        Ok(faultline_agent::topology::Topology::adopt(project))
    } else {
        bundled::load_topology(args.topology.as_deref())
    };
    let mut topology = match loaded {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::BadInput);
        }
    };
    if let Some(kind) = args.runtime
        && let Err(e) = topology.set_runtime(kind)
    {
        eprintln!("error: --runtime: {e}");
        return Ok(Exit::BadInput);
    }
    if let Err(e) = args.toxiproxy.check() {
        eprintln!("error: {e}");
        return Ok(Exit::BadInput);
    }
    if let Some(port) = args.entrypoint_port {
        let ep = topology
            .entrypoint
            .clone()
            .context("--entrypoint-port needs a topology with an `entrypoint`")?;
        let svc = topology.service_mut(&ep).expect("validated entrypoint");
        if svc.replicas > 1 && port != 0 {
            anyhow::bail!(
                "--entrypoint-port {port}: the entrypoint `{ep}` has {} replicas, which cannot share a port",
                svc.replicas
            );
        }
        svc.port = port;
    }
    faultline_agent::api::check_bind(
        args.agent_listen,
        args.agent_token.as_deref(),
        "--agent-token",
    )?;
    faultline_agent::http_server::raise_open_files_limit();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let run_dir = match &args.run_dir {
            Some(p) => RunDir::at(p),
            None => RunDir::create_in_home(),
        }?;
        run_dir.mark_latest()?;
        let opts = AgentOptions {
            topology,
            run_dir,
            bin_path: faultline_agent::agent::beside_current_exe(),
            proxies: !args.no_proxies,
            listen: args.agent_listen,
            token: args.agent_token,
            max_faults: args.limits.max_faults as usize,
            api_limits: args.limits.api_limits(),
            token_flag: "--agent-token",
            toxiproxy: args.toxiproxy,
        };
        let agent = match Agent::start(opts).await {
            Ok(a) => a,
            Err(AgentError::Start(e @ StartError::ProgramNotFound { .. })) => {
                anyhow::bail!("{e}\nhint: build every binary of the workspace first: cargo build --release --workspace")
            }
            Err(e) => return Err(e.into()),
        };
        // Caught before the ready line: whoever reads it may signal at once.
        let signals = match report::StopSignals::install() {
            Ok(s) => s,
            Err(e) => {
                agent.shutdown().await;
                return Err(anyhow::Error::new(e).context("cannot catch signals"));
            }
        };
        for p in &agent.journal_problems {
            eprintln!("warning: {p}");
        }
        println!("{}", agent.ready_line());
        print!("{}", report::table(&agent.supervisor.status()));
        println!(
            "prometheus targets: {}",
            agent.supervisor.run_dir().join("prometheus-targets.json").display()
        );
        println!("logs: {}", agent.supervisor.run_dir().join("logs").display());
        let signal = signals.wait().await;
        eprintln!("{signal}: stopping...");
        agent.shutdown().await;
        Ok(Exit::Success)
    })
}

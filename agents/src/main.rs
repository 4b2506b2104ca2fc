//! `faultline-agent`: the standalone agent, for machines that `faultline` does not run
//! on. It supervises a topology and serves the control API that `faultline fault`,
//! `heal` and `status` (with `--agent URL`) and `faultline run` talk to.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use faultline_agent::agent::{Agent, AgentOptions};
use faultline_agent::report;
use faultline_agent::rundir::RunDir;
use faultline_agent::topology::Topology;

/// faultline's agent: supervises the processes of a topology on this machine and injects
/// faults into them, behind an HTTP control API.
#[derive(Parser)]
#[command(name = "faultline-agent", version)]
struct Args {
    /// The topology file to run. Without one the agent supervises nothing: it serves
    /// proxies made at run time (`faultline proxy`, --toxiproxy-listen) and faults on
    /// processes (`pid:N`, `proc:PATTERN`).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Run directory for logs, status and the fault journal (default: a new one under the
    /// faultline home). An agent restarted on the same directory heals what the previous
    /// one left applied.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Address of the control API. Anything but loopback needs --token.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Bearer token the API requires.
    #[arg(long, env = "FAULTLINE_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Run every edge directly instead of through a fault proxy.
    #[arg(long)]
    no_proxies: bool,
    /// Adopt the running Docker Compose project NAME as the topology (its containers
    /// the replicas); nothing is started or stopped.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["topology", "runtime"])]
    docker_project: Option<String>,
    /// Run every service as this (`docker`: a container per replica; `process`);
    /// default: what the topology says.
    #[arg(long, value_enum, requires = "topology")]
    runtime: Option<faultline_agent::topology::RuntimeKind>,
    #[command(flatten)]
    limits: faultline_agent::agent::LimitArgs,
    #[command(flatten)]
    toxiproxy: faultline_agent::toxiproxy::ToxiproxyArgs,
}

fn main() -> ExitCode {
    // First: this process may be a reaper, not an agent.
    faultline_agent::reaper::run_if_reaper();
    faultline_agent::container_reaper::run_if_container_reaper();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_ansi(faultline_agent::diag::stderr_colour())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FAULTLINE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    faultline_agent::http_server::raise_open_files_limit();
    if let Err(e) = faultline_agent::api::check_bind(args.listen, args.token.as_deref(), "--token")
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = args.toxiproxy.check() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let topology = match &args.topology {
        None if args.docker_project.is_some() => {
            Topology::adopt(args.docker_project.as_deref().unwrap_or_default())
        }
        None => Topology::none(),
        Some(path) => match Topology::load(path) {
            Ok(mut t) => {
                if let Some(kind) = args.runtime
                    && let Err(e) = t.set_runtime(kind)
                {
                    eprintln!("error: --runtime: {e}");
                    return ExitCode::from(2);
                }
                t
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let runtime = tokio::runtime::Runtime::new().expect("start the async runtime");
    runtime.block_on(async move {
        let run_dir = match &args.run_dir {
            Some(p) => RunDir::at(p),
            None => RunDir::create_in_home(),
        };
        let run_dir = match run_dir.and_then(|d| d.mark_latest().map(|()| d)) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let opts = AgentOptions {
            topology,
            run_dir,
            bin_path: faultline_agent::agent::beside_current_exe(),
            proxies: !args.no_proxies,
            listen: args.listen,
            token: args.token,
            max_faults: args.limits.max_faults as usize,
            api_limits: args.limits.api_limits(),
            token_flag: "--token",
            toxiproxy: args.toxiproxy,
        };
        let agent = match Agent::start(opts).await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let signals = match report::StopSignals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot catch signals: {e}");
                agent.shutdown().await;
                return ExitCode::from(2);
            }
        };
        for p in &agent.journal_problems {
            eprintln!("warning: {p}");
        }
        println!("{}", agent.ready_line());
        print!("{}", report::table(&agent.supervisor.status()));
        println!("run directory: {}", agent.supervisor.run_dir().display());
        signals.wait().await;
        agent.shutdown().await;
        ExitCode::SUCCESS
    })
}

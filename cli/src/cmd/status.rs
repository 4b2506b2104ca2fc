//! `faultline status`: the services, replicas and faults of a running agent.

use faultline_agent::report;

use crate::discover::AgentArgs;
use crate::exit::Exit;

/// Show every replica (state, health, restarts) and the faults in effect.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the agent's status as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub agent: AgentArgs,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let client = args.agent.client()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let status = runtime.block_on(client.status())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(Exit::Success);
    }
    println!(
        "topology {} at {} (agent {})",
        status.topology,
        status.entrypoint.as_deref().unwrap_or("-"),
        client.url()
    );
    print!("{}", report::table(&status.replicas));
    let outside: Vec<_> = status
        .edges
        .iter()
        .filter(|e| !status.replicas.iter().any(|r| r.name == e.server))
        .collect();
    if !outside.is_empty() {
        println!("edges to externals:");
        for e in outside {
            println!(
                "  {} via {} to {} ({} toxics)",
                e.name, e.listen, e.target, e.toxics
            );
        }
    }
    if let Some(d) = &status.docker {
        println!(
            "docker: network {}, containers labelled faultline.run={}",
            d.network, d.run_id
        );
    }
    if let Some(m) = &status.mechanisms {
        println!("container network mechanisms: {}", m.line());
    }
    if !status.proxies.is_empty() {
        println!("proxies made at run time:");
        print!("{}", crate::cmd::proxy::table(&status.proxies));
    }
    if status.faults.is_empty() {
        println!("no faults in effect");
    } else {
        println!("faults:");
        for f in &status.faults {
            println!(
                "  {}  {:<15} {:<28} {}s left",
                f.id,
                f.kind,
                f.target,
                f.remaining_ms.div_ceil(1000)
            );
        }
    }
    Ok(Exit::Success)
}

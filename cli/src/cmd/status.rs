//! `faultline status`: the services, replicas and faults of a running agent, or of
//! every agent given (a section per agent).

use faultline_agent::api::Status;
use faultline_agent::report;

use crate::discover::AgentArgs;
use crate::exit::Exit;

/// Show every replica (state, health, restarts) and the faults in effect; with several
/// `--agent`s, a section per agent (`agent NAME at URL`), and with --json
/// `{"agents": [{"name", "url", "status"}]}`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the agent's status as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub agent: AgentArgs,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let fleet = args.agent.fleet()?;
    let runtime = tokio::runtime::Runtime::new()?;
    if !fleet.is_several() {
        let client = fleet.first().expect("a fleet of one");
        let status = runtime.block_on(client.status())?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print_one(&status, client.url());
        }
        return Ok(Exit::Success);
    }
    let statuses = runtime.block_on(fleet.statuses(std::time::Duration::from_secs(10)));
    let mut failed = false;
    let mut json = Vec::new();
    for (i, (m, s)) in fleet.members.iter().zip(statuses).enumerate() {
        match s {
            Ok(status) if args.json => json.push(serde_json::json!({
                "name": m.name, "url": m.client.url(), "status": status,
            })),
            Ok(status) => {
                if i > 0 {
                    println!();
                }
                println!("agent {} at {}", m.name, m.client.url());
                print_one(&status, m.client.url());
            }
            Err(e) => {
                failed = true;
                eprintln!("error: agent {}: {e}", m.name);
                if args.json {
                    json.push(serde_json::json!({
                        "name": m.name, "url": m.client.url(), "error": e.to_string(),
                    }));
                }
            }
        }
    }
    if args.json {
        let all = serde_json::json!({ "agents": json });
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(if failed {
        Exit::BadInput
    } else {
        Exit::Success
    })
}

/// One agent's status in words.
fn print_one(status: &Status, url: &str) {
    println!(
        "topology {} at {} (agent {url})",
        status.topology,
        status.entrypoint.as_deref().unwrap_or("-"),
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
}

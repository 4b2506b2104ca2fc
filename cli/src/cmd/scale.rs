//! `faultline scale SERVICE N`: add or remove replicas of a running service.

use crate::discover::AgentArgs;
use crate::exit::Exit;

/// Set a running service to N replicas: new ones start with their edge proxies and
/// join their callers' upstream files once healthy; removed ones (the highest
/// numbered) leave those files first, drain, then stop with SIGTERM.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The service (`NAME/service` with several agents; a bare name is looked for on
    /// every agent).
    pub service: String,
    /// How many replicas it should have, from 1 to 64.
    #[arg(value_parser = clap::value_parser!(u64).range(1..=64))]
    pub replicas: u64,
    #[command(flatten)]
    pub agent: AgentArgs,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let fleet = args.agent.fleet()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (i, service) = runtime.block_on(fleet.owner_of_service(&args.service))?;
    let s = runtime.block_on(fleet.members[i].client.scale(&service, args.replicas))?;
    let what = if !s.added.is_empty() {
        format!(" (started {})", s.added.join(", "))
    } else if !s.removed.is_empty() {
        format!(" (drained and stopped {})", s.removed.join(", "))
    } else {
        String::new()
    };
    println!(
        "scaled {} from {} to {} replica{}{what}",
        fleet.qualify(i, &s.service),
        s.from,
        s.to,
        if s.to == 1 { "" } else { "s" }
    );
    Ok(Exit::Success)
}

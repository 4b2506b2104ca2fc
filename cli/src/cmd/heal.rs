//! `faultline heal ID | --all`: heal faults before their lease runs out.

use crate::discover::AgentArgs;
use crate::exit::Exit;

/// Heal a fault by id, or every fault.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The fault's id (as `faultline fault` printed it).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub id: Option<String>,
    /// Heal every fault in effect.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub agent: AgentArgs,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let client = args.agent.client()?;
    let runtime = tokio::runtime::Runtime::new()?;
    if args.all {
        let healed = runtime.block_on(client.heal_all())?;
        println!(
            "healed {} fault{}",
            healed.len(),
            if healed.len() == 1 { "" } else { "s" }
        );
    } else {
        let id = args.id.expect("clap requires an id without --all");
        let f = runtime.block_on(client.heal(&id))?;
        println!("healed {} ({} on {})", f.id, f.kind, f.target);
    }
    Ok(Exit::Success)
}

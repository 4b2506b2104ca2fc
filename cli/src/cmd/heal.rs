//! `faultline heal ID | --all`: heal faults before their lease runs out.

use crate::discover::AgentArgs;
use crate::exit::Exit;

/// Heal a fault by id, or every fault (of every agent given).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The fault's id (as `faultline fault` printed it: `NAME/ID` with several agents; a
    /// bare id is looked for on every agent).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub id: Option<String>,
    /// Heal every fault in effect.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub agent: AgentArgs,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let fleet = args.agent.fleet()?;
    let runtime = tokio::runtime::Runtime::new()?;
    if args.all {
        // Every agent is asked, whichever fails: one that cannot heal must not keep the
        // others' faults in effect.
        let (mut healed, mut failed) = (0, Vec::new());
        for m in &fleet.members {
            match runtime.block_on(m.client.heal_all()) {
                Ok(h) => healed += h.len(),
                Err(e) if fleet.is_several() => failed.push(format!("agent {}: {e}", m.name)),
                Err(e) => return Err(e.into()),
            }
        }
        println!(
            "healed {healed} fault{}",
            if healed == 1 { "" } else { "s" }
        );
        if !failed.is_empty() {
            anyhow::bail!("{}", failed.join("; "));
        }
    } else {
        let id = args.id.expect("clap requires an id without --all");
        let (i, bare) = runtime.block_on(fleet.owner_of_fault(&id))?;
        let f = runtime.block_on(fleet.members[i].client.heal(&bare))?;
        println!(
            "healed {} ({} on {})",
            fleet.qualify(i, &f.id),
            f.kind,
            fleet.qualify(i, &f.target)
        );
    }
    Ok(Exit::Success)
}

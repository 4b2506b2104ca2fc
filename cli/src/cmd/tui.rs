//! `faultline tui`: the live dashboard attached to a running `faultline up` (or agent):
//! replicas, faults, queues, events, with the keys to break and heal things.

use anyhow::Context;

use crate::discover::AgentArgs;
use crate::exit::Exit;

/// Watch and break a running system: attach the dashboard to the agent of a running
/// `faultline up` (the latest by default), or to every agent given (`--agent` repeated:
/// every host's replicas and faults, each qualified with its agent's name). Keys: arrows or hjkl to select, x kill,
/// p pause/resume, d latency, b partition from the broker, u heal the selection,
/// U heal all, ? help, q quit (healing what the dashboard applied).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub agent: AgentArgs,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        eprintln!("error: `faultline tui` needs a terminal (use `faultline status` in scripts)");
        return Ok(Exit::BadInput);
    }
    let fleet = match args.agent.fleet() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Exit::BadInput);
        }
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Not answering is a setup error, explained with where the address came from.
        for m in &fleet.members {
            m.client.status().await?;
        }
        let (tx, rx) = tokio::sync::watch::channel(crate::run::state::RunState::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let watcher = tokio::spawn(crate::tui::attach(fleet.clone(), tx, stop.clone()));
        let shown = crate::tui::run(rx, Some(fleet), None, stop.clone()).await;
        stop.cancel();
        let _ = watcher.await;
        shown?;
        Ok(Exit::Success)
    })
}

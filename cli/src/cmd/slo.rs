//! `faultline slo rules FILE`: Prometheus recording and alerting rules for an
//! experiment's SLOs (or the shop's own, with `--shop`).

use std::path::PathBuf;

use anyhow::Context;

use crate::exit::Exit;
use crate::experiment::{self, Overrides};
use crate::slo::rules;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Prometheus rules for an experiment's SLOs over the metrics `faultline run` serves:
    /// recording rules of the error ratio over 5m to 3d (the window as a label) and the
    /// SRE workbook's multi-window, multi-burn-rate alerts (14.4x over 1h and 5m, 6x over
    /// 6h and 30m: page; 3x over 1d and 2h, 1x over 3d and 6h: ticket).
    ///
    /// Examples:
    ///   faultline slo rules gameday.toml > slo-rules.yml && promtool check rules slo-rules.yml
    ///   faultline slo rules --shop      # the shop's own SLOs, measured at its gateway
    #[command(verbatim_doc_comment)]
    Rules {
        /// The experiment file.
        #[arg(required_unless_present = "shop")]
        file: Option<PathBuf>,
        /// The bundled shop's own SLOs instead (dashboards/prometheus/shop-slo-rules.yml).
        #[arg(long, conflicts_with = "file")]
        shop: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    match args.command {
        Command::Rules { shop: true, .. } => {
            // The shop is measured at its entrypoint, as the bundled topology names it.
            let topology = crate::bundled::load_topology(None)?;
            let entrypoint = topology
                .entrypoint
                .as_deref()
                .context("the bundled topology has no entrypoint")?;
            print!("{}", crate::shop::slo_rules(entrypoint));
            Ok(Exit::Success)
        }
        Command::Rules { file, .. } => {
            let file = file.expect("clap requires it");
            let exp = match experiment::load_file(&file, &Overrides::default()) {
                Ok(e) => e,
                Err(p) => {
                    eprintln!("{p}");
                    return Ok(Exit::BadInput);
                }
            };
            if exp.slos.is_empty() {
                eprintln!("error: {}: the experiment has no [[slo]]", file.display());
                return Ok(Exit::BadInput);
            }
            match rules::experiment_queries(&exp.slos, &exp.load.flows.steps) {
                Ok(q) => {
                    print!("{}", rules::rules(&exp.name, &q));
                    Ok(Exit::Success)
                }
                Err(m) => {
                    eprintln!("error: {}: {m}", file.display());
                    Ok(Exit::BadInput)
                }
            }
        }
    }
}

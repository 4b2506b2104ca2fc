//! `faultline check FILE...`: validate experiment files without running anything, and
//! `faultline schema`: print the JSON Schema of the format.

use std::path::PathBuf;

use crate::exit::Exit;
use crate::experiment::{self, LoadModel, Overrides};

/// Validate experiment files without running them: every problem is printed as
/// FILE:LINE:COLUMN: message, and the exit code is 2 if any file has one.
///
/// Examples:
///   faultline check target-system/experiments/*.toml
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Experiment files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let mut bad = false;
    for f in &args.files {
        match experiment::load_file(f, &Overrides::default()) {
            Ok(e) => {
                let load = match &e.load.model {
                    LoadModel::Open { schedule, .. } => format!(
                        "open model, {:.0} iterations over {}",
                        schedule.total(),
                        humantime::format_duration(e.duration)
                    ),
                    LoadModel::Closed { .. } => format!(
                        "closed model, {} users for {}",
                        e.load.users,
                        humantime::format_duration(e.duration)
                    ),
                };
                println!(
                    "{}: ok: `{}`: {load}, {} flows, {} steps, {} SLOs, {} faults, {} abort guards{}",
                    f.display(),
                    e.name,
                    e.load.flows.flows.len(),
                    e.load.flows.steps.len(),
                    e.slos.len(),
                    e.faults.len(),
                    e.aborts.len(),
                    if e.checks.invariants {
                        ", invariant checks"
                    } else {
                        ""
                    }
                );
                let total = e.load.flows.total_weight();
                let flows: Vec<String> = e
                    .load
                    .flows
                    .flows
                    .iter()
                    .map(|f| {
                        format!(
                            "{} {:.0}%",
                            f.name,
                            f64::from(f.weight) * 100.0 / total.max(1) as f64
                        )
                    })
                    .collect();
                println!("  flows: {}", flows.join(", "));
            }
            Err(problems) => {
                bad = true;
                eprintln!("{problems}");
            }
        }
    }
    Ok(if bad { Exit::BadInput } else { Exit::Success })
}

/// Print the JSON Schema of experiment files (for editor completion: point your TOML
/// editor's schema setting at the file, or see schemas/experiment.schema.json).
#[derive(clap::Args, Debug)]
pub struct SchemaArgs {}

pub fn schema(_: SchemaArgs) -> anyhow::Result<Exit> {
    println!("{}", serde_json::to_string_pretty(&experiment::schema())?);
    Ok(Exit::Success)
}

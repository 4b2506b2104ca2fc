//! `faultline dashboards export DIR`: the Grafana dashboards and provisioning files.

use std::path::PathBuf;

use anyhow::Context;

use crate::dashboards;
use crate::exit::Exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Write the Grafana dashboards (JSON: import them, or provision them from files;
    /// their `datasource` variable starts with the default Prometheus datasource) and
    /// the provisioning files into DIR.
    ///
    /// Examples:
    ///   faultline dashboards export ./grafana
    ///   faultline dashboards export /var/lib/grafana/dashboards/faultline --datasource-uid faultline-prometheus
    #[command(verbatim_doc_comment)]
    Export {
        dir: PathBuf,
        /// Start the dashboards' `datasource` variable with this datasource (by uid)
        /// rather than the default Prometheus one; the others stay selectable.
        #[arg(long, value_name = "UID")]
        datasource_uid: Option<String>,
    },
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let Command::Export {
        dir,
        datasource_uid,
    } = args.command;
    std::fs::create_dir_all(dir.join("provisioning"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, value) in dashboards::all() {
        let mut value = value;
        if let Some(uid) = &datasource_uid {
            dashboards::bind_datasource(&mut value, uid);
        }
        let text = serde_json::to_string_pretty(&value)? + "\n";
        std::fs::write(dir.join(name), text)?;
    }
    std::fs::write(
        dir.join("provisioning/dashboards.yml"),
        dashboards::PROVISIONING_DASHBOARDS,
    )?;
    std::fs::write(
        dir.join("provisioning/datasources.yml"),
        dashboards::PROVISIONING_DATASOURCE,
    )?;
    println!(
        "wrote the dashboards and provisioning files to {}",
        dir.display()
    );
    Ok(Exit::Success)
}

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
    /// Write the Grafana dashboards (JSON, importable: they ask for a Prometheus
    /// datasource) and the provisioning files into DIR.
    ///
    /// Examples:
    ///   faultline dashboards export ./grafana
    ///   faultline dashboards export /var/lib/grafana/dashboards/faultline --datasource-uid DS_PROMETHEUS
    #[command(verbatim_doc_comment)]
    Export {
        dir: PathBuf,
        /// For file provisioning, where Grafana cannot ask for the datasource: write this
        /// datasource uid in place of the `${DS_PROMETHEUS}` input.
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
        let mut text = serde_json::to_string_pretty(&value)? + "\n";
        if let Some(uid) = &datasource_uid {
            text = text.replace("${DS_PROMETHEUS}", uid);
        }
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

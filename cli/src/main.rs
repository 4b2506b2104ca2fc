//! `faultline`: parses the command line, runs the command (the `faultline` library does
//! the work) and maps the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use faultline::exit::Exit;

fn main() -> ExitCode {
    // First: this process may be the reaper of an agent `up` or `run` embeds.
    faultline_agent::reaper::run_if_reaper();
    let cli = faultline::Cli::parse();
    faultline::init_logging();
    match cli.run() {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::BadInput.into()
        }
    }
}

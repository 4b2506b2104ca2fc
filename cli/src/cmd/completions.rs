//! `faultline completions SHELL`: a completion script for bash, zsh or fish, written to
//! stdout, generated from the same command definitions that parse the command line (so
//! every command, fault kind and flag completes).

use clap::CommandFactory;
use clap_complete::Shell;

use crate::exit::Exit;

/// Print a shell completion script.
///
/// Install it, for example:
///   faultline completions bash > ~/.local/share/bash-completion/completions/faultline
///   faultline completions zsh > "${fpath[1]}/_faultline"
///   faultline completions fish > ~/.config/fish/completions/faultline.fish
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The shell.
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let shell = match args.shell.as_str() {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        _ => Shell::Fish,
    };
    let mut cmd = crate::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "faultline", &mut script);
    // A reader that stops early (`| head`) is not an error.
    match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(Exit::Success),
    }
}

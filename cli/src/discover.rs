//! Finding the agents a command talks to: `--agent URL` or `--agent NAME=URL`, repeated
//! for several (before or after the command's name), else `$FAULTLINE_AGENT`, else the
//! one the most recent `faultline up` or `faultline run` on this machine recorded in its
//! run directory. Where the address came from is kept, so that an agent that does not
//! answer is named with its source. Several agents make a [`Fleet`].

use faultline_agent::client::{AgentClient, ClientError};
use faultline_agent::rundir::faultline_home;

use crate::fleet::{self, Fleet};

/// The environment variable that names the agent when `--agent` does not.
pub const AGENT_ENV: &str = "FAULTLINE_AGENT";

#[derive(clap::Args, Debug, Clone, Default)]
pub struct AgentArgs {
    /// `--agent` (repeatable), a global option of [`crate::Cli`], filled in before the
    /// command runs.
    #[arg(skip)]
    pub agent: Vec<String>,
    /// Bearer token, for an agent listening beyond loopback.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FAULTLINE_AGENT_TOKEN",
        hide_env_values = true
    )]
    pub agent_token: Option<String>,
}

/// Where a command's agent address came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    /// The run directory's record of the most recent `faultline up` or `run`.
    Latest(std::path::PathBuf),
}

impl Source {
    /// Why a command talked to an agent that did not answer, and what to do.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Source::Flag => return None,
            Source::Env => {
                format!("the address came from ${AGENT_ENV}; unset it or pass --agent URL")
            }
            Source::Latest(record) => format!(
                "the address came from {}, which the most recent `faultline up` or `faultline run` on this machine wrote; that agent has likely stopped: pass --agent URL (the `ready:` line of `faultline up` prints it) or set ${AGENT_ENV}",
                record.display()
            ),
        })
    }
}

impl AgentArgs {
    /// The agent's URL and where it came from (the first `--agent`'s, with several).
    pub fn locate(&self) -> anyhow::Result<(String, Source)> {
        if let Some(u) = self.agent.first() {
            let r = fleet::parse_arg(u, None).map_err(anyhow::Error::msg)?;
            return Ok((r.url, Source::Flag));
        }
        if let Some(u) = std::env::var(AGENT_ENV).ok().filter(|u| !u.is_empty()) {
            return Ok((u, Source::Env));
        }
        let record = faultline_home().join("latest").join("agent.json");
        let text = std::fs::read_to_string(&record).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "no agent to talk to: {} does not exist; start `faultline up` first or pass --agent URL",
                record.display()
            ),
            // A symlink loop, a permission, a directory: say which.
            _ => anyhow::anyhow!(
                "no agent to talk to: cannot read {}: {e}; pass --agent URL",
                record.display()
            ),
        })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not valid: {e}", record.display()))?;
        let url = v["url"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("{} has no url", record.display()))?
            .to_owned();
        Ok((url, Source::Latest(record)))
    }

    /// The one agent of a command that talks to one (`proxy`).
    pub fn client(&self) -> anyhow::Result<AgentClient> {
        if self.agent.len() > 1 {
            anyhow::bail!("this command talks to one agent: pass --agent once");
        }
        let (url, _) = self.locate()?;
        Ok(AgentClient::new(&url, self.agent_token.clone()))
    }

    /// Every agent given (`--agent`, repeated), else the one agent found as
    /// [`AgentArgs::locate`] finds it; each with `--agent-token`.
    pub fn fleet(&self) -> anyhow::Result<Fleet> {
        if self.agent.is_empty() {
            let (url, _) = self.locate()?;
            return Ok(Fleet::one(AgentClient::new(&url, self.agent_token.clone())));
        }
        let agents = fleet::parse_args(&self.agent, self.agent_token.as_deref())
            .map_err(anyhow::Error::msg)?;
        Ok(Fleet::new(&agents))
    }

    /// `e` with where the agent's address came from, when the agent did not answer.
    pub fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        let unreachable = e.chain().any(|c| {
            matches!(
                c.downcast_ref::<ClientError>(),
                Some(ClientError::Unreachable { .. })
            )
        });
        match self.locate() {
            Ok((_, source)) if unreachable => match source.hint() {
                Some(hint) => anyhow::anyhow!("{e:#}\nhint: {hint}"),
                None => e,
            },
            _ => e,
        }
    }
}

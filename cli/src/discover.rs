//! Finding the agent a command talks to: `--agent URL`, else `$FAULTLINE_AGENT`, else
//! the one the most recent `faultline up` on this machine recorded in its run directory.

use faultline_agent::client::AgentClient;
use faultline_agent::rundir::faultline_home;

#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// The agent's URL (default: the most recent `faultline up` on this machine).
    #[arg(long, value_name = "URL", env = "FAULTLINE_AGENT")]
    pub agent: Option<String>,
    /// Bearer token, for an agent listening beyond loopback.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FAULTLINE_AGENT_TOKEN",
        hide_env_values = true
    )]
    pub agent_token: Option<String>,
}

impl AgentArgs {
    pub fn client(&self) -> anyhow::Result<AgentClient> {
        let url = match &self.agent {
            Some(u) => u.clone(),
            None => {
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
                v["url"]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("{} has no url", record.display()))?
                    .to_owned()
            }
        };
        Ok(AgentClient::new(&url, self.agent_token.clone()))
    }
}

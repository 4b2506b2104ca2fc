//! Why a run could not be set up: nothing was judged (exit code 2).

use faultline_agent::agent::AgentError;
use faultline_agent::client::ClientError;
use faultline_agent::supervisor::StartError;

/// Why a run could not be set up. Messages name the problem; the cause follows as the
/// error's source.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot create the run directory")]
    RunDir(#[source] std::io::Error),
    #[error("cannot record the run as the latest")]
    MarkLatest(#[source] std::io::Error),
    #[error(
        "{0}\nhint: build every binary of the workspace first: cargo build --release --workspace"
    )]
    ProgramNotFound(StartError),
    #[error(transparent)]
    Agent(AgentError),
    #[error("--runtime: {0}")]
    Runtime(String),
    #[error(transparent)]
    Workers(crate::load::distributed::WorkerError),
    #[error("the topology's entrypoint has no replica")]
    NoEntrypoint,
    #[error("cannot use the agent at {url}")]
    AgentUnreachable {
        url: String,
        #[source]
        source: ClientError,
    },
    #[error("the agent's topology has no entrypoint: set `url` under [target]")]
    AgentWithoutEntrypoint,
    #[error("the experiment names neither a url nor an agent")]
    NoTarget,
    #[error("`{0}` is not a URL")]
    BadUrl(String),
    #[error("the target URL `{0}` has a path; write the base URL only (steps give paths)")]
    UrlWithPath(String),
    #[error("the target URL has no host")]
    NoHost,
    #[error("cannot resolve {authority}")]
    Resolve {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("an HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error("cannot serve the run's metrics")]
    Metrics(#[source] std::io::Error),
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot make proxy `{name}` of [[proxies]]")]
    Proxy {
        name: String,
        #[source]
        source: ClientError,
    },
    /// Fault targets no agent, or several, own (each `file:line:column: message`).
    #[error("{0}")]
    Targets(String),
    #[error("the load engine failed")]
    LoadEngine(#[source] tokio::task::JoinError),
}

//! `faultline proxy`: fault proxies made at run time, to any address, on the agent:
//! `create`, `list`, `delete`, `enable`, `disable`. Every network fault then targets a
//! proxy by its name; a proxy lives as long as the agent, or until deleted.

use faultline_agent::api::{NewProxy, ProxyUpdate};
use faultline_agent::proxy::runtime::ProxyView;

use crate::discover::AgentArgs;
use crate::exit::Exit;

/// Make, list and delete fault proxies to any address.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
    #[command(flatten)]
    pub agent: AgentArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Make a proxy from a listen address to HOST:PORT; faults then target it by NAME.
    Create {
        /// The proxy's name: letters, digits, `_`, `.`, `-` and `:`.
        name: String,
        /// Where its connections go, HOST:PORT (a host name is resolved at each connect).
        #[arg(long, value_name = "HOST:PORT")]
        upstream: String,
        /// Where it listens; port 0 picks a free one.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
        listen: String,
        /// Make it without listening yet (`faultline proxy enable` starts it).
        #[arg(long)]
        disabled: bool,
    },
    /// List the proxies made at run time.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a proxy: its faults heal, its connections close.
    Delete { name: String },
    /// Listen again.
    Enable { name: String },
    /// Close every connection and stop listening (its faults stay).
    Disable { name: String },
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let client = args.agent.client()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match args.action {
            Action::Create {
                name,
                upstream,
                listen,
                disabled,
            } => {
                let p = NewProxy {
                    name,
                    upstream,
                    listen,
                    enabled: !disabled,
                };
                let v = client.create_proxy(&p).await?;
                println!(
                    "proxy {} listens on {} for {}",
                    v.name, v.listen, v.upstream
                );
            }
            Action::List { json } => {
                let list = client.proxies().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    print!("{}", table(&list));
                }
            }
            Action::Delete { name } => {
                let v = client.delete_proxy(&name).await?;
                println!("deleted proxy {} ({} -> {})", v.name, v.listen, v.upstream);
            }
            Action::Enable { name } => switch(&client, &name, true).await?,
            Action::Disable { name } => switch(&client, &name, false).await?,
        }
        Ok(Exit::Success)
    })
}

async fn switch(
    client: &faultline_agent::client::AgentClient,
    name: &str,
    enabled: bool,
) -> anyhow::Result<()> {
    let update = ProxyUpdate {
        enabled: Some(enabled),
        ..ProxyUpdate::default()
    };
    let v = client.update_proxy(name, &update).await?;
    println!(
        "proxy {} {}",
        v.name,
        if v.enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}

/// One row per proxy: name, listen, upstream, enabled, toxics, connections.
pub fn table(list: &[ProxyView]) -> String {
    if list.is_empty() {
        return "no proxies made at run time\n".into();
    }
    let rows: Vec<[String; 6]> = list
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                p.listen.clone(),
                p.upstream.clone(),
                if p.enabled { "yes" } else { "no" }.into(),
                p.toxics.to_string(),
                format!("{} ({} open)", p.connections, p.active),
            ]
        })
        .collect();
    let header = [
        "PROXY",
        "LISTEN",
        "UPSTREAM",
        "ENABLED",
        "TOXICS",
        "CONNECTIONS",
    ];
    faultline_agent::report::columns(&header, &rows)
}

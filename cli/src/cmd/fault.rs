//! `faultline fault KIND TARGET [params]`: inject a fault through the agent and print its
//! id; `faultline fault list`: the faults in effect; `faultline fault renew ID`. One
//! subcommand per fault kind, made from the kind's description
//! ([`faultline_agent::faults::kinds`]): its help, its target, and a flag per parameter
//! that checks its value as it is parsed. Nothing here names a fault kind.

use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches};
use faultline_agent::faults::FaultRequest;
use faultline_agent::faults::kind::{Dialect, Kind, Param, Raw, Type, parse_duration};
use faultline_agent::faults::kinds::{self, KINDS};
use faultline_agent::faults::spec::MAX_TTL;

use crate::discover::AgentArgs;
use crate::exit::Exit;

/// What `faultline fault` was asked to do.
#[derive(Debug)]
pub enum Action {
    /// Inject a fault of `kind` with the subcommand's arguments.
    Inject {
        kind: &'static Kind,
        matches: ArgMatches,
    },
    List,
    Renew {
        id: String,
    },
}

#[derive(Debug)]
pub struct Args {
    pub action: Action,
    pub ttl: Option<Duration>,
    pub seed: Option<u64>,
    /// `--no-tree`: a pid:/proc: target's processes alone, not their descendants.
    pub no_tree: bool,
    pub agent: AgentArgs,
}

const ABOUT: &str = "Inject a fault through the agent (or `fault list`, `fault renew ID`)";

const SEVERAL: &str = "With several agents (--agent repeated, URL or NAME=URL), the target is found on the agent that owns it; a name two agents own is qualified, NAME/orders-2, and ids are printed NAME/ID. A partition between hosts cuts every edge from one host's services to addresses the other serves: faultline fault partition host:a host:b";

fn ttl(s: &str) -> Result<Duration, String> {
    parse_duration(s, "--ttl", MAX_TTL).map_err(|m| without_name(&m, "--ttl"))
}

/// A message about a flag's value without the flag's name in front: clap names it.
fn without_name(message: &str, name: &str) -> String {
    message
        .strip_prefix(name)
        .map_or(message, str::trim_start)
        .trim_start_matches(": ")
        .to_owned()
}

/// The argument of one parameter, checking its value as clap parses it.
fn param_arg(p: &'static Param) -> Arg {
    let mut arg = Arg::new(p.name).help(match p.default {
        Some(d) => format!("{} [default: {d}]", p.help),
        None => p.help.to_owned(),
    });
    if p.positional {
        return arg
            .required(p.required)
            .value_name(p.name.to_uppercase())
            .index(2);
    }
    arg = arg
        .long(p.flag())
        .value_name(p.name.to_uppercase())
        .required(p.required);
    if let Type::Flag = p.ty {
        return arg.action(ArgAction::SetTrue);
    }
    if let Type::Choice(words) = p.ty {
        arg = arg.value_parser(clap::builder::PossibleValuesParser::new(words));
    } else {
        let spelled = p.spelled(Dialect::Flag);
        arg = arg.value_parser(move |s: &str| {
            p.read(Dialect::Flag, Raw::Text(s))
                .map(|_| s.to_owned())
                .map_err(|m| without_name(&m, &spelled))
        });
    }
    arg
}

/// The subcommand of one kind.
fn kind_command(k: &'static Kind) -> Command {
    let mut cmd = Command::new(k.name)
        .about(k.help)
        .after_help(format!(
            "Target: {}.\nExample: faultline fault {}",
            k.targets_said(),
            k.example
        ))
        .arg(
            Arg::new("target")
                .required(true)
                .value_name("TARGET")
                .help(format!("What to fault: {}", k.targets_said())),
        );
    // The kind's own parameters first in its help, the options of every kind after.
    for (i, p) in k.params.iter().enumerate() {
        cmd = cmd.arg(param_arg(p).display_order(i));
    }
    cmd
}

impl clap::Args for Args {
    fn augment_args(cmd: Command) -> Command {
        let cmd = AgentArgs::augment_args(cmd)
            .mut_arg("agent_token", |a| a.global(true).display_order(101))
            .about(ABOUT)
            .after_help(SEVERAL)
            .subcommand_required(true)
            .allow_external_subcommands(true)
            .arg(
                Arg::new("ttl")
                    .long("ttl")
                    .value_name("TTL")
                    .display_order(98)
                    .global(true)
                    .value_parser(ttl)
                    .help("How long the fault lasts unless healed or renewed [default: 5m]"),
            )
            .arg(
                Arg::new("seed")
                    .long("seed")
                    .value_name("SEED")
                    .display_order(99)
                    .global(true)
                    .value_parser(clap::value_parser!(u64))
                    .help("Seed of the fault's random draws"),
            )
            .arg(
                Arg::new("no_tree")
                    .long("no-tree")
                    .display_order(100)
                    .global(true)
                    .action(clap::ArgAction::SetTrue)
                    .help("With pid:N or proc:PATTERN: act on the processes alone, not on their descendants (by default, each process's whole tree)"),
            )
            .subcommand(Command::new("list").about("The faults in effect"))
            .subcommand(
                Command::new("renew")
                    .about("Extend a fault's lease by --ttl (its own TTL by default)")
                    .arg(Arg::new("id").required(true).value_name("ID")),
            );
        KINDS
            .iter()
            .fold(cmd, |cmd, k| cmd.subcommand(kind_command(k)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for Args {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let Some((name, sub)) = m.subcommand() else {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::MissingSubcommand,
                "name a fault kind, `list` or `renew`\n",
            ));
        };
        let action = match name {
            "list" => Action::List,
            "renew" => Action::Renew {
                id: sub.get_one::<String>("id").cloned().unwrap_or_default(),
            },
            _ => match kinds::find(name) {
                Some(kind) => Action::Inject {
                    kind,
                    matches: sub.clone(),
                },
                None => {
                    return Err(clap::Error::raw(
                        clap::error::ErrorKind::InvalidSubcommand,
                        format!(
                            "unknown fault kind `{name}`; kinds are: {}, or `list`, `renew`\n",
                            kinds::names().join(", ")
                        ),
                    ));
                }
            },
        };
        Ok(Args {
            action,
            ttl: sub.get_one::<Duration>("ttl").copied(),
            seed: sub.get_one::<u64>("seed").copied(),
            no_tree: sub.get_flag("no_tree"),
            agent: AgentArgs::from_arg_matches(sub)?,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// The request a kind's subcommand describes; a message naming the problem otherwise.
pub fn request(
    kind: &'static Kind,
    m: &ArgMatches,
    ttl: Option<Duration>,
    seed: Option<u64>,
    no_tree: bool,
) -> Result<FaultRequest, String> {
    let target = m.get_one::<String>("target").cloned().unwrap_or_default();
    let given = kind.params.iter().filter_map(|p| match p.ty {
        Type::Flag => m.get_flag(p.name).then_some((p.name, Raw::Text("true"))),
        _ => m
            .get_one::<String>(p.name)
            .map(|v| (p.name, Raw::Text(v.as_str()))),
    });
    let spec = kind
        .parse(Dialect::Flag, given)
        .map_err(|e| format!("{}: {}", kind.name, e.message))?;
    let request = FaultRequest {
        spec,
        target,
        ttl_ms: ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        seed,
        tree: no_tree.then_some(false),
    };
    request
        .validate()
        .map_err(|e| format!("{}: {e}", kind.name))?;
    Ok(request)
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let (kind, matches) = match &args.action {
        Action::Inject { kind, matches } => (*kind, matches),
        Action::List => return list(&args),
        Action::Renew { id } => return renew(&args, id),
    };
    // Checked before anything reaches (or looks for) the agent.
    let request = match request(kind, matches, args.ttl, args.seed, args.no_tree) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::BadInput);
        }
    };
    let fleet = args.agent.fleet()?;
    let runtime = tokio::runtime::Runtime::new()?;
    // A target no agent or two agents own is refused here (exit code 2).
    let parts = runtime.block_on(fleet.route_now(&request))?;
    // A partition between hosts is a fault on each agent with an edge that crosses:
    // every part is applied, or none stays.
    let mut applied: Vec<(usize, String)> = Vec::new();
    for part in &parts {
        let m = &fleet.members[part.agent];
        let info = match runtime.block_on(m.client.inject(&part.request)) {
            Ok(info) => info,
            Err(e) => {
                for (a, id) in &applied {
                    let _ = runtime.block_on(fleet.members[*a].client.heal(id));
                }
                return Err(if fleet.is_several() {
                    anyhow::anyhow!("agent {}: {e}", m.name)
                } else {
                    e.into()
                });
            }
        };
        let id = fleet.qualify(part.agent, &info.id);
        let target = fleet.qualify(part.agent, &info.target);
        println!("{id}");
        if info.healed_ms.is_some() {
            // Nothing to undo (a kill without --hold, a restart, poison): already over.
            eprintln!("{} on {target}: done", info.kind);
        } else {
            eprintln!(
                "{} on {target} for {}s (heal early with `faultline heal {id}`)",
                info.kind,
                info.remaining_ms.div_ceil(1000),
            );
        }
        applied.push((part.agent, info.id));
    }
    Ok(Exit::Success)
}

fn renew(args: &Args, id: &str) -> anyhow::Result<Exit> {
    let fleet = args.agent.fleet()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (i, bare) = runtime.block_on(fleet.owner_of_fault(id))?;
    let info = runtime.block_on(fleet.members[i].client.renew(&bare, args.ttl))?;
    println!(
        "{} renewed: {}s left",
        fleet.qualify(i, &info.id),
        info.remaining_ms.div_ceil(1000)
    );
    Ok(Exit::Success)
}

fn list(args: &Args) -> anyhow::Result<Exit> {
    let fleet = args.agent.fleet()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut any = false;
    for (i, m) in fleet.members.iter().enumerate() {
        let faults = runtime.block_on(m.client.faults()).map_err(|e| {
            if fleet.is_several() {
                anyhow::anyhow!("agent {}: {e}", m.name)
            } else {
                e.into()
            }
        })?;
        for f in faults {
            any = true;
            println!(
                "{}  {:<15} {:<28} {}s left",
                fleet.qualify(i, &f.id),
                f.kind,
                fleet.qualify(i, &f.target),
                f.remaining_ms.div_ceil(1000)
            );
        }
    }
    if !any {
        println!("no faults in effect");
    }
    Ok(Exit::Success)
}

//! `benchtel-agent`: the bench-side telemetry agent.

use std::process::ExitCode;

use std::path::{Path, PathBuf};

use anyhow::Context;
use benchtel::agent::config::{self, AgentConfig, Locations};
use benchtel::agent::state::Snapshot;
use benchtel::cli::{Cli, CommonArgs};
use benchtel::config::Env;
use benchtel::wire::{self, ExecutionContext};
use clap::Subcommand;
use outbox::OutboxCommand;

#[path = "benchtel-agent/malloc.rs"]
mod malloc;
#[path = "benchtel-agent/no_libm.rs"]
mod no_libm;
#[path = "benchtel-agent/outbox.rs"]
mod outbox;
#[path = "benchtel-agent/relocs.rs"]
mod relocs;

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default)
    Run,
    /// Check the configuration and exit: 0 if valid, 78 if not
    Validate,
    /// Inspect the durable outbox: status, rejected records (list, show,
    /// replay), drop --rejected
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Run one configured check or probe once and print the result: exit 0
    /// if it passed, 1 if not (what to run while wiring a bench)
    Probe {
        /// The check's `name`
        name: String,
    },
    /// Configured checks and probes
    Probes {
        #[command(subcommand)]
        command: ProbesCommand,
    },
    /// Tell the running agent which execution it works for; stamped on all
    /// its telemetry until cleared
    Context {
        #[command(subcommand)]
        command: ContextCommand,
    },
    /// List the serial adapters and GPIO chips on this machine, as config
    /// snippets to paste (reads no configuration)
    Suggest {
        /// Where sysfs is (tests pass their own tree)
        #[arg(long, hide = true, default_value = "/sys")]
        sys: PathBuf,
        /// Where the device nodes are (tests pass their own tree)
        #[arg(long, hide = true, default_value = "/dev")]
        dev: PathBuf,
    },
    /// Put the bench into maintenance, or take it out; kept across agent
    /// restarts and reboots until it is ended or its end time passes
    Maintenance {
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// Why (shown in heartbeats, `status` and alerts)
        #[arg(long)]
        reason: Option<String>,
        /// End it by itself after this long (e.g. `2h`, `30m`)
        #[arg(long = "for", value_parser = humantime::parse_duration, conflicts_with = "until")]
        for_: Option<std::time::Duration>,
        /// End it by itself at this time (e.g. `2026-12-01T08:00:00Z`)
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        until: Option<std::time::SystemTime>,
    },
    /// Tell the running agent what the test harness just did to the device
    /// under test
    Mark {
        #[command(subcommand)]
        command: MarkCommand,
    },
    /// Print the bench's state, why, since when, and each check's last
    /// verdict (asks the running agent)
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum MarkCommand {
    /// The device under test was just reset or power-cycled: readiness is
    /// timed from now (`bench_ready_time_seconds{from="dut_reset"}`)
    Reset {
        /// What was done (shown in the log and `status`)
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum ContextCommand {
    Set {
        #[arg(long)]
        execution_id: Option<String>,
        #[arg(long)]
        task_id: Option<String>,
        #[arg(long)]
        correlation_id: Option<String>,
    },
    Clear,
}

#[derive(Subcommand)]
enum ProbesCommand {
    /// List them with their type, interval and whether they gate readiness
    List,
}

fn main() -> ExitCode {
    malloc::tune();
    relocs::release();
    let cli = Cli::<Command>::parse_with(
        "Telemetry agent for hardware test benches",
        "Configuration file [default: $BENCHTEL_CONFIG, else /etc/benchtel/agent.toml]",
    );
    // Only the commands that use the whole configuration load it strictly;
    // the others read what they need and go on past a mistake elsewhere.
    match cli.command.unwrap_or(Command::Run) {
        Command::Suggest { sys, dev } => {
            print!("{}", benchtel::agent::probes::suggest::render(&sys, &dev));
            ExitCode::SUCCESS
        }
        Command::Outbox { command } => outbox::run(&cli.common, command),
        Command::Context { command } => beside_agent(
            &cli.common,
            match command {
                ContextCommand::Set {
                    execution_id,
                    task_id,
                    correlation_id,
                } => Request::Send(wire::Command::ContextSet(ExecutionContext {
                    execution_id,
                    task_id,
                    correlation_id,
                })),
                ContextCommand::Clear => Request::Send(wire::Command::ContextClear),
            },
        ),
        Command::Maintenance {
            state,
            reason,
            for_,
            until,
        } => match maintenance(state == "on", reason, for_, until) {
            Ok(command) => beside_agent(&cli.common, Request::Send(command)),
            Err(e) => benchtel::cli::exit_status("benchtel-agent", Err(e)),
        },
        Command::Mark {
            command: MarkCommand::Reset { reason },
        } => beside_agent(
            &cli.common,
            Request::Send(wire::Command::DutReset { reason }),
        ),
        Command::Status { json } => beside_agent(&cli.common, Request::Status { json }),
        command => with_config(&cli.common, command),
    }
}

/// The commands that need the whole configuration, valid.
fn with_config(common: &CommonArgs, command: Command) -> ExitCode {
    let loaded = common.load_config("benchtel-agent", config::load, |c| &mut c.log);
    let cfg = match loaded {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let result = match command {
        Command::Validate => {
            println!("configuration is valid: {}", cfg.summary());
            Ok(())
        }
        Command::Probe { name } => return probe_once(&cfg, &name),
        Command::Probes {
            command: ProbesCommand::List,
        } => {
            list_probes(&cfg);
            Ok(())
        }
        _ => run(cfg),
    };
    benchtel::cli::exit_status("benchtel-agent", result)
}

/// What a command beside the running agent asks it.
enum Request {
    Send(wire::Command),
    Status { json: bool },
}

/// A command for the running agent: it needs only the control socket.
fn beside_agent(common: &CommonArgs, request: Request) -> ExitCode {
    let located = config::locate(common.config.as_deref(), &Env::from_process());
    note_errors(&located, "the control socket");
    let socket = &located.control_socket;
    let result = match request {
        Request::Send(command) => control(socket, command).map(drop),
        Request::Status { json } => status(socket, json),
    };
    benchtel::cli::exit_status("benchtel-agent", result)
}

/// Says which file has mistakes, and that this command goes on because it
/// needs only `needs`.
fn note_errors(located: &Locations, needs: &str) {
    if let Some(errors) = &located.errors {
        eprintln!(
            "benchtel-agent: note: the configuration ({}) has {} error(s) (`benchtel-agent \
             validate` lists them); this command needs only {needs}, so it goes on",
            located.source.describe(),
            errors.0.len()
        );
    }
}

fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    benchtel::service::run_until_signalled(|cancel| benchtel::agent::run::run(cfg, cancel))?;
    Ok(())
}

/// Sends one command to the running agent; returns its answer's status.
fn control(socket: &Path, req: wire::Command) -> anyhow::Result<Option<serde_json::Value>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(benchtel::agent::control::send(socket, &req))?)
}

/// The `maintenance` command as the agent takes it.
fn maintenance(
    on: bool,
    reason: Option<String>,
    for_: Option<std::time::Duration>,
    until: Option<std::time::SystemTime>,
) -> anyhow::Result<wire::Command> {
    if !on && (reason.is_some() || for_.is_some() || until.is_some()) {
        anyhow::bail!("--reason, --for and --until go with `maintenance on`");
    }
    let now = std::time::SystemTime::now();
    if let Some(past) = until.filter(|t| *t <= now) {
        // A window that is already over would end at once: almost surely a
        // typo (a date, or a time zone) rather than what was meant.
        anyhow::bail!(
            "--until {} is not in the future",
            humantime::format_rfc3339_seconds(past)
        );
    }
    let until = until.or_else(|| for_.map(|d| now + d));
    Ok(wire::Command::Maintenance { on, reason, until })
}

fn status(socket: &Path, json: bool) -> anyhow::Result<()> {
    let answer =
        control(socket, wire::Command::Status)?.context("the agent answered without a status")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let snapshot: Snapshot = serde_json::from_value(answer).context("unexpected status")?;
    print!("{snapshot}");
    Ok(())
}

fn list_probes(cfg: &AgentConfig) {
    if cfg.checks.is_empty() {
        println!("no [[checks]] configured in {}", cfg.summary());
        return;
    }
    println!(
        "{:<24} {:<14} {:>9} {:>9}  ready",
        "name", "type", "interval", "timeout"
    );
    for c in &cfg.checks {
        println!(
            "{:<24} {:<14} {:>9} {:>9}  {}",
            c.name,
            c.kind.type_name(),
            humantime::format_duration(c.interval).to_string(),
            humantime::format_duration(c.timeout).to_string(),
            if c.affects_ready { "yes" } else { "no" }
        );
    }
}

fn probe_once(cfg: &AgentConfig, name: &str) -> ExitCode {
    let Some(check) = cfg.checks.iter().find(|c| c.name == name) else {
        let known: Vec<&str> = cfg.checks.iter().map(|c| c.name.as_str()).collect();
        eprintln!("benchtel-agent: no check named {name:?}; configured: {known:?}");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("benchtel-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = std::time::Instant::now();
    let outcome = runtime.block_on(check.run_once());
    println!(
        "{} {} in {:.3} s: {}",
        check.name,
        outcome.code.as_str(),
        started.elapsed().as_secs_f64(),
        outcome.detail
    );
    for (k, v) in &outcome.values {
        println!("  {k} = {v}");
    }
    if outcome.code == benchtel::agent::checks::Code::Ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

//! `benchtel-agent`: the bench-side telemetry agent.

use std::process::ExitCode;

use anyhow::Context;
use benchtel::agent::config::{self, AgentConfig};
use benchtel::agent::state::Snapshot;
use benchtel::cli::Cli;
use benchtel::outbox::{Outbox, StatusReport};
use benchtel::wire::{self, ExecutionContext};
use clap::Subcommand;

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default)
    Run,
    /// Check the configuration and exit: 0 if valid, 78 if not
    Validate,
    /// Inspect the durable outbox
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
    /// snippets to paste
    Suggest,
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

#[derive(Subcommand)]
enum OutboxCommand {
    /// Print depth, bytes, oldest age, per-signal counts and drops
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::<Command>::parse_with(
        "Telemetry agent for hardware test benches",
        "Configuration file [default: $BENCHTEL_CONFIG, else /etc/benchtel/agent.toml]",
    );
    let loaded = cli
        .common
        .load_config("benchtel-agent", config::load, |c| &mut c.log);
    let cfg = match loaded {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(cfg),
        Command::Validate => {
            println!("configuration is valid: {}", cfg.summary());
            Ok(())
        }
        Command::Outbox {
            command: OutboxCommand::Status { json },
        } => outbox_status(&cfg, json),
        Command::Probe { name } => return probe_once(&cfg, &name),
        Command::Suggest => {
            print!(
                "{}",
                benchtel::agent::probes::suggest::render(
                    std::path::Path::new("/sys"),
                    std::path::Path::new("/dev")
                )
            );
            Ok(())
        }
        Command::Context { command } => control(
            &cfg,
            match command {
                ContextCommand::Set {
                    execution_id,
                    task_id,
                    correlation_id,
                } => wire::Command::ContextSet(ExecutionContext {
                    execution_id,
                    task_id,
                    correlation_id,
                }),
                ContextCommand::Clear => wire::Command::ContextClear,
            },
        )
        .map(drop),
        Command::Maintenance {
            state,
            reason,
            for_,
            until,
        } => maintenance(&cfg, state == "on", reason, for_, until),
        Command::Mark {
            command: MarkCommand::Reset { reason },
        } => control(&cfg, wire::Command::DutReset { reason }).map(drop),
        Command::Status { json } => status(&cfg, json),
        Command::Probes {
            command: ProbesCommand::List,
        } => {
            list_probes(&cfg);
            Ok(())
        }
    };
    benchtel::cli::exit_status("benchtel-agent", result)
}

fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    benchtel::service::run_until_signalled(|cancel| benchtel::agent::run::run(cfg, cancel))?;
    Ok(())
}

/// Sends one command to the running agent; returns its answer's status.
fn control(cfg: &AgentConfig, req: wire::Command) -> anyhow::Result<Option<serde_json::Value>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(benchtel::agent::control::send(&cfg.control_socket, &req))?)
}

fn maintenance(
    cfg: &AgentConfig,
    on: bool,
    reason: Option<String>,
    for_: Option<std::time::Duration>,
    until: Option<std::time::SystemTime>,
) -> anyhow::Result<()> {
    if !on && (reason.is_some() || for_.is_some() || until.is_some()) {
        anyhow::bail!("--reason, --for and --until go with `maintenance on`");
    }
    let until = until.or_else(|| for_.map(|d| std::time::SystemTime::now() + d));
    control(cfg, wire::Command::Maintenance { on, reason, until })?;
    Ok(())
}

fn status(cfg: &AgentConfig, json: bool) -> anyhow::Result<()> {
    let answer =
        control(cfg, wire::Command::Status)?.context("the agent answered without a status")?;
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

fn outbox_status(cfg: &AgentConfig, json: bool) -> anyhow::Result<()> {
    let opts = benchtel::agent::run::store_options(cfg);
    let path = opts.path.clone();
    let status = Outbox::open_read_only(opts)?.status()?;
    let report = StatusReport::new(path, status, std::time::SystemTime::now());
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

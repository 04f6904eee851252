//! `benchtel-agent`: the bench-side telemetry agent.

use std::process::ExitCode;

use anyhow::Context;
use benchtel::agent::config::{self, AgentConfig};
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
    /// Put the bench into maintenance, or take it out
    Maintenance {
        #[arg(value_parser = ["on", "off"])]
        state: String,
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
        ),
        Command::Maintenance { state } => {
            control(&cfg, wire::Command::Maintenance { on: state == "on" })
        }
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

fn control(cfg: &AgentConfig, req: wire::Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(benchtel::agent::control::send(&cfg.control_socket, &req))?;
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

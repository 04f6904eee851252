//! `benchtel-agent outbox …`: inspect the durable outbox beside the running
//! agent. These commands read only `[outbox]` of the configuration (its
//! path) and go on past mistakes elsewhere in the file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use benchtel::agent::config;
use benchtel::cli::{CommonArgs, EX_DATAERR, EX_NOINPUT};
use benchtel::config::Env;
use benchtel::outbox::{Outbox, OutboxError, StatusReport};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum OutboxCommand {
    /// Print depth, bytes, oldest age, per-signal counts, drops and current
    /// export problems; exit 66 if there is no outbox yet
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// The records a collector refused for good (moved aside, counted)
    Rejected {
        #[command(subcommand)]
        command: RejectedCommand,
    },
    /// Delete what the outbox keeps aside
    Drop {
        /// Delete every rejected record (counted as `cleared`)
        #[arg(long, required = true)]
        rejected: bool,
    },
}

#[derive(Subcommand)]
pub enum RejectedCommand {
    /// id, signal, status, items, when and why, oldest first
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// One record: its metadata and what its body holds; exit 65 if there
    /// is no such id
    Show {
        id: i64,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Put records back at the end of the queue; the running agent
    /// forwards them. Exit 65 if there is no such id
    Replay {
        #[arg(required_unless_present = "all")]
        id: Option<i64>,
        /// Every rejected record
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
}

const PROGRAM: &str = "benchtel-agent";

/// Runs one `outbox` command: exit 0, 66 (`EX_NOINPUT`) when there is no
/// outbox, 65 (`EX_DATAERR`) for an unknown id, 78 when the outbox's path
/// cannot be read from the configuration.
pub fn run(common: &CommonArgs, command: OutboxCommand) -> ExitCode {
    let path = match outbox_path(common) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let result = match command {
        OutboxCommand::Status { json } => status(&path, json),
        OutboxCommand::Rejected {
            command: RejectedCommand::List { json },
        } => list(&path, json),
        OutboxCommand::Rejected {
            command: RejectedCommand::Show { id, json },
        } => show(&path, id, json),
        OutboxCommand::Rejected {
            command: RejectedCommand::Replay { id, .. },
        } => replay(&path, id),
        OutboxCommand::Drop { .. } => drop_rejected(&path),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Outbox(e @ OutboxError::Missing { .. })) => {
            eprintln!("{PROGRAM}: {e}");
            ExitCode::from(EX_NOINPUT)
        }
        Err(Failure::UnknownId(id)) => {
            eprintln!("{PROGRAM}: no rejected record with id {id} (`outbox rejected list`)");
            ExitCode::from(EX_DATAERR)
        }
        Err(Failure::Outbox(e)) => benchtel::cli::exit_status(PROGRAM, Err(e)),
        Err(Failure::Json(e)) => benchtel::cli::exit_status(PROGRAM, Err(e)),
    }
}

enum Failure {
    Outbox(OutboxError),
    UnknownId(i64),
    Json(serde_json::Error),
}

impl From<OutboxError> for Failure {
    fn from(e: OutboxError) -> Self {
        Failure::Outbox(e)
    }
}

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Self {
        Failure::Json(e)
    }
}

fn outbox_path(common: &CommonArgs) -> Result<PathBuf, ExitCode> {
    let located = config::locate(common.config.as_deref(), &Env::from_process());
    let path = match &located.outbox {
        Ok(path) => path.clone(),
        Err(errors) => return Err(benchtel::cli::config_failed(PROGRAM, errors)),
    };
    super::note_errors(&located, "[outbox]");
    Ok(path)
}

fn status(path: &Path, json: bool) -> Result<(), Failure> {
    let outbox = Outbox::open_read_only(path)?;
    let export = outbox.export_report()?;
    let report = StatusReport::new(
        path.to_path_buf(),
        outbox.status()?,
        std::time::SystemTime::now(),
    )
    .with_export(export);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

fn list(path: &Path, json: bool) -> Result<(), Failure> {
    let rows = Outbox::open_read_only(path)?.rejected_list()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no rejected records");
        return Ok(());
    }
    println!("{}", list_header());
    for row in &rows {
        println!("{row}");
    }
    Ok(())
}

/// The list's header, aligned with the rows' `Display`.
fn list_header() -> &'static str {
    "      id  signal   status   items  rejected at           reason"
}

fn show(path: &Path, id: i64, json: bool) -> Result<(), Failure> {
    let detail = Outbox::open_read_only(path)?
        .rejected_show(id)?
        .ok_or(Failure::UnknownId(id))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&detail)?);
    } else {
        print!("{detail}");
    }
    Ok(())
}

fn replay(path: &Path, id: Option<i64>) -> Result<(), Failure> {
    let outbox = Outbox::open_beside_agent(path)?;
    let ids = id.map(|id| vec![id]);
    let moved = outbox.replay_rejected(ids.as_deref())?;
    if let (Some(id), 0) = (id, moved.records) {
        return Err(Failure::UnknownId(id));
    }
    println!(
        "replayed {} record(s) ({} items) to the end of the queue; the running agent forwards them",
        moved.records, moved.items
    );
    Ok(())
}

fn drop_rejected(path: &Path) -> Result<(), Failure> {
    let gone = Outbox::open_beside_agent(path)?.drop_rejected()?;
    println!(
        "deleted {} rejected record(s) ({} items); counted as cleared in `outbox status`",
        gone.records, gone.items
    );
    Ok(())
}

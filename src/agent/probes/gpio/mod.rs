//! GPIO probes on the Linux GPIO character device (v2 uAPI, via
//! `gpiocdev`), never the deprecated sysfs interface.
//!
//! The probe logic talks to a [`Line`] behind a small trait: in production
//! the chardev backend ([`chardev`]), in tests and demos the simulated chip
//! ([`sim`]). Kinds: `gpio_level` (expected level), `gpio_edges` (edges per
//! window, e.g. a heartbeat LED or a watchdog toggle) and `gpio_stuck` (a
//! line, e.g. a reset, held at one level too long).

pub mod chardev;
pub mod sim;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Why a line could not be used, or what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpioError {
    #[error("{0}: no such chip or line")]
    Missing(String),
    #[error("{0}: line is busy (requested by another program)")]
    Busy(String),
    #[error("{0}")]
    Other(String),
    /// `gpio_level`: the line is not at the healthy level.
    #[error("line is {seen:?}, expected {expected:?}")]
    WrongLevel { seen: Level, expected: Level },
    /// `gpio_edges`: too few edges in the window.
    #[error("{} edges in {:?}, expected at least {min}", count.edges, count.window)]
    TooFewEdges { count: EdgeCount, min: u32 },
    /// `gpio_stuck`: no edge within `max_hold`.
    #[error("held {} for {held:?} or longer", if *high { "high" } else { "low" })]
    Stuck { high: bool, held: Duration },
}

/// Edges counted by `gpio_edges`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeCount {
    pub edges: u32,
    pub window: Duration,
}

impl EdgeCount {
    pub fn per_second(&self) -> f64 {
        f64::from(self.edges) / self.window.as_secs_f64()
    }
}

/// One requested input line. Levels are logical: active-low is applied.
pub trait Line: Send {
    fn level(&mut self) -> Result<bool, GpioError>;
    /// Waits up to `timeout` for an edge; true if one came.
    fn wait_edge(&mut self, timeout: Duration) -> Result<bool, GpioError>;
}

/// Which line: by name (as the board's device tree calls it) or by offset.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "a line offset (a number, 0 or more) or a line name (a string)"
)]
pub enum LineId {
    Offset(u32),
    Name(String),
}

/// Where a line is, shared by every GPIO probe kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// Chip path (`/dev/gpiochip0`) or name (`gpiochip0`); with a line
    /// name it may be left out.
    #[serde(default)]
    pub chip: Option<PathBuf>,
    /// Line offset or name.
    pub line: LineId,
    #[serde(default)]
    pub active_low: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    High,
    Low,
}

/// `type = "gpio_level"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelConfig {
    /// Chip path (`/dev/gpiochip0`) or name; may be left out with a line name.
    #[serde(default)]
    pub chip: Option<PathBuf>,
    /// Line offset or name.
    pub line: LineId,
    #[serde(default)]
    pub active_low: bool,
    /// The level that means healthy, e.g. `high` for power-good.
    pub expect: Level,
}

/// `type = "gpio_edges"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgesConfig {
    /// Chip path (`/dev/gpiochip0`) or name; may be left out with a line name.
    #[serde(default)]
    pub chip: Option<PathBuf>,
    /// Line offset or name.
    pub line: LineId,
    #[serde(default)]
    pub active_low: bool,
    /// How long to count edges.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Fewer edges than this in the window is a failure.
    pub min_edges: u32,
}

/// `type = "gpio_stuck"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StuckConfig {
    /// Chip path (`/dev/gpiochip0`) or name; may be left out with a line name.
    #[serde(default)]
    pub chip: Option<PathBuf>,
    /// Line offset or name.
    pub line: LineId,
    #[serde(default)]
    pub active_low: bool,
    /// Held at one level for this long without an edge is `stuck`.
    #[serde(with = "humantime_serde")]
    pub max_hold: Duration,
}

/// Which edges of a `gpio_reset` line are a reset (logical levels, after
/// `active_low`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Edge {
    /// To active: a reset line asserted, a power line switched on.
    #[default]
    Rising,
    Falling,
    Both,
}

impl Edge {
    /// Whether an edge that left the line at `high` is one of these.
    pub fn matches(self, high: bool) -> bool {
        match self {
            Edge::Rising => high,
            Edge::Falling => !high,
            Edge::Both => true,
        }
    }
}

/// `type = "gpio_reset"`: a reset or power line of the device under test;
/// each matching edge is a reset of the DUT for the bench's readiness.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetConfig {
    /// Chip path (`/dev/gpiochip0`) or name; may be left out with a line name.
    #[serde(default)]
    pub chip: Option<PathBuf>,
    /// Line offset or name.
    pub line: LineId,
    /// Set for an active-low line (`nRESET`): `rising` is then the line
    /// being pulled low.
    #[serde(default)]
    pub active_low: bool,
    /// Which edges are a reset: `rising` (default), `falling` or `both`.
    #[serde(default)]
    pub edge: Edge,
}

/// The kinds share where their line is.
macro_rules! line_of {
    ($($t:ty),*) => {$(
        impl $t {
            pub fn line(&self) -> LineConfig {
                LineConfig {
                    chip: self.chip.clone(),
                    line: self.line.clone(),
                    active_low: self.active_low,
                }
            }
        }
    )*};
}
line_of!(LevelConfig, EdgesConfig, StuckConfig, ResetConfig);

/// Opens lines; the chardev backend in production.
pub trait Chip: Send + Sync {
    fn open(&self, line: &LineConfig, edges: bool) -> Result<Box<dyn Line>, GpioError>;
}

/// The line's level, if it is the expected one.
pub fn probe_level(chip: &dyn Chip, cfg: &LevelConfig) -> Result<Level, GpioError> {
    let high = chip.open(&cfg.line(), false)?.level()?;
    let seen = if high { Level::High } else { Level::Low };
    if seen != cfg.expect {
        return Err(GpioError::WrongLevel {
            seen,
            expected: cfg.expect,
        });
    }
    Ok(seen)
}

/// Counts edges for `window`; blocking, run it off the async runtime.
pub fn probe_edges(chip: &dyn Chip, cfg: &EdgesConfig) -> Result<EdgeCount, GpioError> {
    let mut line = chip.open(&cfg.line(), true)?;
    let end = std::time::Instant::now() + cfg.window;
    let mut edges = 0u32;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || !line.wait_edge(left)? {
            break;
        }
        edges += 1;
    }
    let count = EdgeCount {
        edges,
        window: cfg.window,
    };
    if edges < cfg.min_edges {
        return Err(GpioError::TooFewEdges {
            count,
            min: cfg.min_edges,
        });
    }
    Ok(count)
}

/// Follows a line's edges until `stop()` says so, calling `on_reset` for
/// each edge that `cfg.edge` names; blocking. Returns only on a GPIO error
/// or when stopped (`Ok`).
pub fn follow_resets(
    chip: &dyn Chip,
    cfg: &ResetConfig,
    stop: impl Fn() -> bool,
    mut on_reset: impl FnMut(bool),
) -> Result<(), GpioError> {
    let mut line = chip.open(&cfg.line(), true)?;
    // Short waits, so a stop is seen within one of them.
    const POLL: Duration = Duration::from_millis(250);
    while !stop() {
        if line.wait_edge(POLL)? {
            let high = line.level()?;
            if cfg.edge.matches(high) {
                on_reset(high);
            }
        }
    }
    Ok(())
}

/// Fails if no edge comes within `max_hold`; blocking.
pub fn probe_stuck(chip: &dyn Chip, cfg: &StuckConfig) -> Result<(), GpioError> {
    let mut line = chip.open(&cfg.line(), true)?;
    let high = line.level()?;
    if line.wait_edge(cfg.max_hold)? {
        return Ok(());
    }
    Err(GpioError::Stuck {
        high,
        held: cfg.max_hold,
    })
}

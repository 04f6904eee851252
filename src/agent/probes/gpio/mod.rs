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

use crate::agent::checks::{Code, Outcome};

/// Why a line could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpioError {
    #[error("{0}: no such chip or line")]
    Missing(String),
    #[error("{0}: line is busy (requested by another program)")]
    Busy(String),
    #[error("{0}")]
    Other(String),
}

impl GpioError {
    fn outcome(&self) -> Outcome {
        let code = match self {
            GpioError::Missing(_) => Code::Missing,
            GpioError::Busy(_) => Code::Busy,
            GpioError::Other(_) => Code::Error,
        };
        Outcome::fail(code, self.to_string())
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
line_of!(LevelConfig, EdgesConfig, StuckConfig);

/// Opens lines; the chardev backend in production.
pub trait Chip: Send + Sync {
    fn open(&self, line: &LineConfig, edges: bool) -> Result<Box<dyn Line>, GpioError>;
}

pub fn probe_level(chip: &dyn Chip, cfg: &LevelConfig) -> Outcome {
    let mut line = match chip.open(&cfg.line(), false) {
        Ok(l) => l,
        Err(e) => return e.outcome(),
    };
    match line.level() {
        Ok(high) => {
            let seen = if high { Level::High } else { Level::Low };
            if seen == cfg.expect {
                Outcome::ok(format!("{seen:?}"))
            } else {
                Outcome::fail(
                    Code::Mismatch,
                    format!("line is {seen:?}, expected {:?}", cfg.expect),
                )
            }
        }
        Err(e) => e.outcome(),
    }
}

/// Counts edges for `window`; blocking, run it off the async runtime.
pub fn probe_edges(chip: &dyn Chip, cfg: &EdgesConfig) -> Outcome {
    let mut line = match chip.open(&cfg.line(), true) {
        Ok(l) => l,
        Err(e) => return e.outcome(),
    };
    let end = std::time::Instant::now() + cfg.window;
    let mut edges = 0u32;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match line.wait_edge(left) {
            Ok(true) => edges += 1,
            Ok(false) => break,
            Err(e) => return e.outcome(),
        }
    }
    let rate = f64::from(edges) / cfg.window.as_secs_f64();
    let mut out = if edges >= cfg.min_edges {
        Outcome::ok(format!("{edges} edges in {:?}", cfg.window))
    } else {
        Outcome::fail(
            Code::Mismatch,
            format!(
                "{edges} edges in {:?}, expected at least {}",
                cfg.window, cfg.min_edges
            ),
        )
    };
    out.values = vec![("edges_per_second".into(), rate)];
    out
}

/// Fails if no edge comes within `max_hold`; blocking.
pub fn probe_stuck(chip: &dyn Chip, cfg: &StuckConfig) -> Outcome {
    let mut line = match chip.open(&cfg.line(), true) {
        Ok(l) => l,
        Err(e) => return e.outcome(),
    };
    let level = match line.level() {
        Ok(l) => l,
        Err(e) => return e.outcome(),
    };
    match line.wait_edge(cfg.max_hold) {
        Ok(true) => Outcome::ok("line toggles"),
        Ok(false) => Outcome::fail(
            Code::Mismatch,
            format!(
                "held {} for {:?} or longer",
                if level { "high" } else { "low" },
                cfg.max_hold
            ),
        ),
        Err(e) => e.outcome(),
    }
}

#[cfg(test)]
mod tests {
    use super::sim::SimChip;
    use super::*;

    fn level(line: u32) -> LevelConfig {
        LevelConfig {
            chip: Some("/dev/gpiochip0".into()),
            line: LineId::Offset(line),
            active_low: false,
            expect: Level::High,
        }
    }

    fn edges(line: u32) -> EdgesConfig {
        EdgesConfig {
            chip: None,
            line: LineId::Offset(line),
            active_low: false,
            window: Duration::from_millis(300),
            min_edges: 5,
        }
    }

    fn stuck(line: u32) -> StuckConfig {
        StuckConfig {
            chip: None,
            line: LineId::Offset(line),
            active_low: false,
            max_hold: Duration::from_millis(100),
        }
    }

    #[test]
    fn level_with_active_low_missing_and_busy() {
        let chip = SimChip::new(4);
        chip.set_level(1, true);
        let mut cfg = level(1);
        assert_eq!(probe_level(&chip, &cfg).code, Code::Ok);
        cfg.active_low = true;
        assert_eq!(probe_level(&chip, &cfg).code, Code::Mismatch);
        assert_eq!(probe_level(&chip, &level(9)).code, Code::Missing);
        chip.set_busy(2, true);
        assert_eq!(probe_level(&chip, &level(2)).code, Code::Busy);
    }

    #[test]
    fn edges_are_counted_over_the_window() {
        let chip = SimChip::new(4);
        chip.toggle_every(3, Duration::from_millis(20));
        let out = probe_edges(&chip, &edges(3));
        assert_eq!(out.code, Code::Ok, "{out:?}");
        assert!(out.values[0].1 > 10.0, "{out:?}");
        assert_eq!(probe_edges(&chip, &edges(0)).code, Code::Mismatch);
    }

    #[test]
    fn a_line_held_too_long_is_stuck() {
        let chip = SimChip::new(4);
        chip.set_level(0, true);
        let out = probe_stuck(&chip, &stuck(0));
        assert_eq!(out.code, Code::Mismatch);
        assert!(out.detail.contains("held high"), "{}", out.detail);
        chip.toggle_every(2, Duration::from_millis(10));
        assert_eq!(probe_stuck(&chip, &stuck(2)).code, Code::Ok);
    }
}

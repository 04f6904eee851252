//! GPIO probes as checks: runs them on the chardev backend and maps what
//! they report ([`GpioError`]) to result codes.

use crate::agent::probes::gpio::{
    self, Chip, EdgeCount, EdgesConfig, GpioError, LevelConfig, StuckConfig, chardev::Chardev,
};

use super::{Code, Outcome};

/// The result code of a GPIO probe's error.
pub fn code(e: &GpioError) -> Code {
    match e {
        GpioError::Missing(_) => Code::Missing,
        GpioError::Busy(_) => Code::Busy,
        GpioError::Other(_) => Code::Error,
        GpioError::WrongLevel { .. } | GpioError::TooFewEdges { .. } | GpioError::Stuck { .. } => {
            Code::Mismatch
        }
    }
}

fn failed(e: &GpioError) -> Outcome {
    Outcome::fail(code(e), e.to_string())
}

fn rate(count: &EdgeCount) -> Vec<(String, f64)> {
    vec![("edges_per_second".into(), count.per_second())]
}

pub fn probe_level(chip: &dyn Chip, cfg: &LevelConfig) -> Outcome {
    match gpio::probe_level(chip, cfg) {
        Ok(seen) => Outcome::ok(format!("{seen:?}")),
        Err(e) => failed(&e),
    }
}

/// Blocking: run it off the async runtime.
pub fn probe_edges(chip: &dyn Chip, cfg: &EdgesConfig) -> Outcome {
    match gpio::probe_edges(chip, cfg) {
        Ok(count) => Outcome {
            values: rate(&count),
            ..Outcome::ok(format!("{} edges in {:?}", count.edges, count.window))
        },
        Err(e) => Outcome {
            values: match &e {
                GpioError::TooFewEdges { count, .. } => rate(count),
                _ => Vec::new(),
            },
            ..failed(&e)
        },
    }
}

/// Blocking: run it off the async runtime.
pub fn probe_stuck(chip: &dyn Chip, cfg: &StuckConfig) -> Outcome {
    match gpio::probe_stuck(chip, cfg) {
        Ok(()) => Outcome::ok("line toggles"),
        Err(e) => failed(&e),
    }
}

pub(super) fn run_level(cfg: &LevelConfig) -> Outcome {
    probe_level(&Chardev, cfg)
}

pub(super) async fn run_edges(cfg: &EdgesConfig) -> Outcome {
    blocking(cfg.clone(), |c| probe_edges(&Chardev, &c)).await
}

pub(super) async fn run_stuck(cfg: &StuckConfig) -> Outcome {
    blocking(cfg.clone(), |c| probe_stuck(&Chardev, &c)).await
}

/// Runs a blocking probe (waiting on GPIO edges) off the async runtime.
async fn blocking<C: Send + 'static>(cfg: C, f: fn(C) -> Outcome) -> Outcome {
    tokio::task::spawn_blocking(move || f(cfg))
        .await
        .unwrap_or_else(|e| Outcome::fail(Code::Error, format!("probe task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::probes::gpio::sim::SimChip;
    use crate::agent::probes::gpio::{Level, LineId};
    use std::time::Duration;

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

//! GPIO probes as checks: runs them on the chardev backend and maps what
//! they report ([`GpioError`]) to result codes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::probes::gpio::{
    self, Chip, EdgeCount, EdgesConfig, GpioError, LevelConfig, ResetConfig, StuckConfig,
    chardev::Chardev,
};
use crate::agent::readiness::{Input, ResetSource, Verdict};

use super::record::Labels;
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

pub(super) fn run_edges(cfg: &EdgesConfig) -> Outcome {
    probe_edges(&Chardev, cfg)
}

pub(super) fn run_stuck(cfg: &StuckConfig) -> Outcome {
    probe_stuck(&Chardev, cfg)
}

/// `benchtel-agent probe` on a `gpio_reset` line: can it be read?
pub(super) fn run_reset_once(cfg: &ResetConfig) -> Outcome {
    match Chardev.open(&cfg.line(), false).and_then(|mut l| l.level()) {
        Ok(high) => Outcome::ok(format!(
            "line readable, {}",
            if high { "active" } else { "inactive" }
        )),
        Err(e) => failed(&e),
    }
}

/// Follows a `gpio_reset` line for as long as the agent runs: each
/// matching edge is a reset of the device under test. The check is up
/// while the line can be followed; when it cannot (missing, busy), it is
/// down and the line is opened again with backoff.
pub(super) async fn run_reset(
    labels: Labels,
    affects_ready: bool,
    cfg: ResetConfig,
    inputs: mpsc::Sender<Input>,
    cancel: CancellationToken,
) {
    let mut retry = Duration::from_secs(1);
    loop {
        let verdict = |up| {
            Input::Verdict(Verdict {
                check: labels.name.to_string(),
                up,
                affects_ready,
            })
        };
        let _ = inputs.send(verdict(true)).await;
        let followed = follow_resets(Arc::new(Chardev), &labels, &cfg, &inputs, &cancel).await;
        if cancel.is_cancelled() {
            return;
        }
        tracing::warn!(check = %labels.name, error = %followed, "gpio_reset line lost");
        let _ = inputs.send(verdict(false)).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(Duration::from_secs(30));
    }
}

/// Follows the line off the async runtime until it fails or `cancel`;
/// returns the failure.
async fn follow_resets(
    chip: Arc<dyn Chip>,
    labels: &Labels,
    cfg: &ResetConfig,
    inputs: &mpsc::Sender<Input>,
    cancel: &CancellationToken,
) -> GpioError {
    let stop = Arc::new(AtomicBool::new(false));
    let (cfg, inputs, name, stopped) = (
        cfg.clone(),
        inputs.clone(),
        labels.name.to_string(),
        stop.clone(),
    );
    let edges = cfg.edge;
    let task = tokio::task::spawn_blocking(move || {
        gpio::follow_resets(
            chip.as_ref(),
            &cfg,
            || stopped.load(Ordering::Relaxed),
            |_| {
                let reset = Input::DutReset {
                    source: ResetSource::Gpio,
                    reason: Some(format!("{name}: {edges:?} edge")),
                    seen_by: None,
                };
                // On the blocking pool: waiting for room is fine, dropping is not.
                let _ = inputs.blocking_send(reset);
            },
        )
    });
    let _guard = StopOnDrop(stop.clone());
    tokio::select! {
        _ = cancel.cancelled() => GpioError::Other("stopped".into()),
        joined = task => match joined {
            Ok(Ok(())) => GpioError::Other("stopped".into()),
            Ok(Err(e)) => e,
            Err(e) => GpioError::Other(format!("gpio task failed: {e}")),
        },
    }
}

/// Tells the blocking follower to stop when its caller goes away.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::probes::gpio::sim::SimChip;
    use crate::agent::probes::gpio::{Edge, Level, LineId};

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

    /// A reset line pulled active is a DUT reset; the other edge is not,
    /// and the follower stops when told.
    #[tokio::test]
    async fn edges_of_a_reset_line_become_dut_resets() {
        let chip = SimChip::new(2);
        let cfg = ResetConfig {
            chip: None,
            line: LineId::Offset(1),
            active_low: false,
            edge: Edge::Rising,
        };
        let labels = Labels::new("dut-reset", &super::super::Kind::GpioReset(cfg.clone()));
        let (tx, mut rx) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let follower = {
            let (chip, cancel) = (Arc::new(chip.clone()), cancel.clone());
            tokio::spawn(async move { follow_resets(chip, &labels, &cfg, &tx, &cancel).await })
        };
        let next = async |rx: &mut mpsc::Receiver<Input>| {
            tokio::time::timeout(Duration::from_secs(5), rx.recv()).await
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        chip.set_level(1, true);
        let reset = next(&mut rx).await.expect("a reset").expect("open");
        assert!(
            matches!(&reset, Input::DutReset { source: ResetSource::Gpio, reason: Some(r), .. } if r.contains("dut-reset")),
            "{reset:?}"
        );
        chip.set_level(1, false);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "a falling edge is no reset");
        chip.set_level(1, true);
        assert!(next(&mut rx).await.is_ok(), "the next rising edge is");
        cancel.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(5), follower).await;
        assert!(stopped.is_ok(), "the follower stops when cancelled");
    }
}

//! A simulated GPIO chip for tests and demos (this machine kind has no GPIO
//! hardware and no gpio-sim kernel module): lines with a level, a busy flag,
//! and optionally a toggling period that produces edges.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Chip, GpioError, Line, LineConfig, LineId};

#[derive(Debug, Clone, Default)]
struct SimLine {
    level: bool,
    busy: bool,
    /// Toggles every period from `since` on.
    toggle: Option<(Duration, Instant)>,
}

impl SimLine {
    fn level_at(&self, t: Instant) -> bool {
        match self.toggle {
            Some((period, since)) => {
                let n = t.saturating_duration_since(since).as_nanos() / period.as_nanos().max(1);
                self.level ^ (n % 2 == 1)
            }
            None => self.level,
        }
    }
}

/// The simulated chip; clones share lines.
#[derive(Debug, Clone)]
pub struct SimChip {
    lines: Arc<Mutex<HashMap<u32, SimLine>>>,
}

impl SimChip {
    pub fn new(lines: u32) -> SimChip {
        SimChip {
            lines: Arc::new(Mutex::new(
                (0..lines).map(|i| (i, SimLine::default())).collect(),
            )),
        }
    }

    fn with<T>(&self, offset: u32, f: impl FnOnce(&mut SimLine) -> T) -> Option<T> {
        self.lines.lock().ok()?.get_mut(&offset).map(f)
    }

    pub fn set_level(&self, offset: u32, high: bool) {
        self.with(offset, |l| {
            l.level = high;
            l.toggle = None;
        });
    }

    pub fn set_busy(&self, offset: u32, busy: bool) {
        self.with(offset, |l| l.busy = busy);
    }

    pub fn toggle_every(&self, offset: u32, period: Duration) {
        self.with(offset, |l| l.toggle = Some((period, Instant::now())));
    }
}

struct SimHandle {
    chip: SimChip,
    offset: u32,
    active_low: bool,
    last: bool,
}

impl Chip for SimChip {
    fn open(&self, cfg: &LineConfig, _edges: bool) -> Result<Box<dyn Line>, GpioError> {
        let LineId::Offset(offset) = cfg.line else {
            return Err(GpioError::Missing(format!("{:?}", cfg.line)));
        };
        let state = self
            .with(offset, |l| (l.busy, l.level_at(Instant::now())))
            .ok_or_else(|| GpioError::Missing(format!("sim line {offset}")))?;
        if state.0 {
            return Err(GpioError::Busy(format!("sim line {offset}")));
        }
        Ok(Box::new(SimHandle {
            chip: self.clone(),
            offset,
            active_low: cfg.active_low,
            last: state.1,
        }))
    }
}

impl SimHandle {
    fn raw(&self, t: Instant) -> bool {
        self.chip
            .with(self.offset, |l| l.level_at(t))
            .unwrap_or(false)
    }
}

impl Line for SimHandle {
    fn level(&mut self) -> Result<bool, GpioError> {
        Ok(self.raw(Instant::now()) ^ self.active_low)
    }

    fn wait_edge(&mut self, timeout: Duration) -> Result<bool, GpioError> {
        // Polls the simulated level; a real chip blocks in the kernel.
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let now = self.raw(Instant::now());
            if now != self.last {
                self.last = now;
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(false)
    }
}

//! `type = "serial_watch"`: tails the console and follows each boot. A
//! reset marker starts a boot; ordered milestones (`U-Boot SPL` → `Starting
//! kernel` → `Linux version` → `login:`) each have a deadline counted from
//! the reset; fatal patterns (`Kernel panic`, `Oops`) fail the boot at
//! once; N resets within a window is a boot loop, a state of its own, not a
//! generic timeout. The time from reset to each milestone goes to
//! `bench_boot_milestone_seconds{probe,milestone}`.

use std::collections::VecDeque;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use tokio::time::Instant;

use super::console::Console;
use super::port::{PortEvent, PortState};
use super::{FlowControl, Parity, PortRef, SerialError, b115200};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Milestone {
    pub name: String,
    #[serde(with = "serde_regex")]
    pub pattern: Regex,
    /// Deadline, counted from the reset marker.
    #[serde(with = "humantime_serde")]
    pub within: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A device path (prefer `/dev/serial/by-id/…`), or a USB identity:
    /// `port = { vid = "0403", pid = "6001", serial = "A10K1234" }`.
    pub port: PortRef,
    #[serde(default = "b115200")]
    pub baud: u32,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default)]
    pub flow_control: FlowControl,
    /// A line matching this starts a boot (e.g. `U-Boot SPL`).
    #[serde(with = "serde_regex")]
    pub reset: Regex,
    /// In order; the last one means booted.
    pub milestones: Vec<Milestone>,
    /// Fails the boot at once.
    #[serde(default, with = "serde_regex")]
    pub fatal: Option<Regex>,
    /// This many resets within `boot_loop_window` is a boot loop.
    #[serde(default = "three")]
    pub boot_loop_resets: usize,
    #[serde(default = "five_min", with = "humantime_serde")]
    pub boot_loop_window: Duration,
    /// Console lines attached to a failure.
    #[serde(default = "twenty")]
    pub keep_lines: usize,
    /// Also send console lines as OTel log records (target `console`).
    #[serde(default)]
    pub forward_lines: bool,
    /// At most this many forwarded lines per second; the rest are counted
    /// and the count is logged when forwarding resumes.
    #[serde(default = "twenty_per_s")]
    pub forward_rate: u32,
}

fn twenty_per_s() -> u32 {
    20
}

/// A per-second budget for forwarded console lines: a board spewing a
/// stack trace in a loop must not flood the collector.
struct Budget {
    per_second: u32,
    window: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl Budget {
    fn allow(&mut self, now: Instant) -> bool {
        if self
            .window
            .is_none_or(|w| now - w >= Duration::from_secs(1))
        {
            self.window = Some(now);
            self.used = 0;
        }
        self.used += 1;
        self.used <= self.per_second
    }
}

fn three() -> usize {
    3
}
fn five_min() -> Duration {
    Duration::from_secs(300)
}
fn twenty() -> usize {
    20
}

/// What the tracker saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Reset,
    Milestone { name: String, after: Duration },
    Booted,
    Missed { name: String, within: Duration },
    Fatal { line: String },
    BootLoop { resets: usize },
}

impl Event {
    /// Whether the event fails the boot (or the bench, for a boot loop);
    /// the others are progress.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Event::Missed { .. } | Event::Fatal { .. } | Event::BootLoop { .. }
        )
    }
}

/// Follows boots line by line; pure, so it is tested on a paused clock.
pub struct BootTracker {
    cfg: Config,
    boot_started: Option<Instant>,
    next: usize,
    resets: VecDeque<Instant>,
    looping: bool,
    console: Console,
}

impl BootTracker {
    pub fn new(cfg: Config) -> BootTracker {
        let keep_lines = cfg.keep_lines;
        BootTracker {
            cfg,
            boot_started: None,
            next: 0,
            resets: VecDeque::new(),
            looping: false,
            console: Console::new(keep_lines),
        }
    }

    pub fn last_lines(&self) -> String {
        self.console.last_lines()
    }

    pub fn line(&mut self, text: &str, now: Instant) -> Vec<Event> {
        self.console.line(text);
        let mut events = Vec::new();
        if self.cfg.reset.is_match(text) {
            events.extend(self.reset(now));
        }
        if let Some(fatal) = &self.cfg.fatal
            && fatal.is_match(text)
        {
            events.push(Event::Fatal {
                line: text.to_string(),
            });
            self.boot_started = None;
        }
        if let (Some(start), Some(m)) = (self.boot_started, self.cfg.milestones.get(self.next))
            && m.pattern.is_match(text)
        {
            events.push(Event::Milestone {
                name: m.name.clone(),
                after: now - start,
            });
            self.next += 1;
            if self.next == self.cfg.milestones.len() {
                self.boot_started = None;
                self.resets.clear();
                self.looping = false;
                events.push(Event::Booted);
            }
        }
        events
    }

    fn reset(&mut self, now: Instant) -> Vec<Event> {
        self.boot_started = Some(now);
        self.next = 0;
        self.resets.push_back(now);
        while self
            .resets
            .front()
            .is_some_and(|t| now - *t > self.cfg.boot_loop_window)
        {
            self.resets.pop_front();
        }
        let mut events = vec![Event::Reset];
        if self.resets.len() >= self.cfg.boot_loop_resets && !self.looping {
            self.looping = true;
            events.push(Event::BootLoop {
                resets: self.resets.len(),
            });
        }
        events
    }

    /// Deadline checks; call when time passes without console output.
    pub fn tick(&mut self, now: Instant) -> Vec<Event> {
        let (Some(start), Some(m)) = (self.boot_started, self.cfg.milestones.get(self.next)) else {
            return Vec::new();
        };
        if now - start <= m.within {
            return Vec::new();
        }
        self.boot_started = None;
        vec![Event::Missed {
            name: m.name.clone(),
            within: m.within,
        }]
    }

    /// When the next deadline falls, if a boot is under way.
    pub fn next_deadline(&self) -> Option<Instant> {
        let start = self.boot_started?;
        Some(start + self.cfg.milestones.get(self.next)?.within)
    }
}

/// Follows the console (through the port's owner, so `serial_expect`
/// probes can share it) until the port goes away or `on_event` returns
/// true; every event goes to `on_event`. `Ok` when `on_event` stopped it,
/// else why the port was lost.
pub async fn follow(
    cfg: &Config,
    tracker: &mut BootTracker,
    mut on_event: impl FnMut(&Event, &BootTracker) -> bool,
) -> Result<(), SerialError> {
    let port = super::port::open_shared(
        &cfg.port,
        cfg.baud,
        cfg.parity,
        cfg.flow_control,
        Duration::ZERO,
    )?;
    let mut lines = port.subscribe();
    let mut budget = Budget {
        per_second: cfg.forward_rate,
        window: None,
        used: 0,
        suppressed: 0,
    };
    if let PortState::Gone(why) = port.ready(Duration::from_secs(10)).await {
        return Err(SerialError::Gone(why));
    }
    loop {
        let deadline = tracker.next_deadline();
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, lines.recv()).await.ok(),
                None => Some(lines.recv().await),
            }
        };
        let events = match next.await {
            None => tracker.tick(Instant::now()),
            Some(Some(PortEvent::Line(text))) => {
                if cfg.forward_lines {
                    forward(&mut budget, &text);
                }
                tracker.line(&text, Instant::now())
            }
            Some(Some(PortEvent::Partial(_))) => continue,
            Some(Some(PortEvent::Gone(why))) => return Err(SerialError::Gone(why)),
            Some(None) => return Err(SerialError::OwnerStopped),
        };
        for e in events {
            if on_event(&e, tracker) {
                return Ok(());
            }
        }
    }
}

fn forward(budget: &mut Budget, text: &str) {
    if !budget.allow(Instant::now()) {
        budget.suppressed += 1;
        return;
    }
    if budget.suppressed > 0 {
        tracing::warn!(target: "console", suppressed = budget.suppressed, "console lines not forwarded (rate limit)");
        budget.suppressed = 0;
    }
    tracing::info!(target: "console", line = %text, "console");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        toml::from_str(
            r#"
port = "/dev/null"
reset = "U-Boot SPL"
fatal = "Kernel panic|Oops"
milestones = [
  { name = "spl", pattern = "U-Boot SPL", within = "2s" },
  { name = "kernel", pattern = "Starting kernel", within = "10s" },
  { name = "login", pattern = "login:", within = "60s" },
]
"#,
        )
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn forwarding_is_rate_limited_per_second() {
        let mut b = Budget {
            per_second: 3,
            window: None,
            used: 0,
            suppressed: 0,
        };
        let now = Instant::now();
        let allowed = (0..10).filter(|_| b.allow(now)).count();
        assert_eq!(allowed, 3);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(b.allow(Instant::now()), "a new second, a new budget");
    }

    async fn at(t: &mut BootTracker, secs: u64, line: &str) -> Vec<Event> {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        t.line(line, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn a_good_boot_reaches_every_milestone_with_its_time() {
        let mut t = BootTracker::new(cfg());
        let e = at(&mut t, 0, "U-Boot SPL 2024.01").await;
        assert_eq!(e[0], Event::Reset);
        assert!(
            matches!(&e[1], Event::Milestone { name, after } if name == "spl" && after.is_zero())
        );
        let e = at(&mut t, 4, "Starting kernel ...").await;
        assert_eq!(
            e,
            vec![Event::Milestone {
                name: "kernel".into(),
                after: Duration::from_secs(4)
            }]
        );
        let e = at(&mut t, 20, "bench login:").await;
        assert!(e.contains(&Event::Booted), "{e:?}");
        assert_eq!(t.tick(Instant::now() + Duration::from_secs(600)), vec![]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_missed_deadline_and_a_panic_fail_the_boot() {
        let mut t = BootTracker::new(cfg());
        at(&mut t, 0, "U-Boot SPL").await;
        tokio::time::sleep(Duration::from_secs(11)).await;
        let e = t.tick(Instant::now());
        assert_eq!(
            e,
            vec![Event::Missed {
                name: "kernel".into(),
                within: Duration::from_secs(10)
            }]
        );
        assert!(e[0].is_failure());
        at(&mut t, 1, "U-Boot SPL").await;
        let e = at(&mut t, 3, "Kernel panic - not syncing").await;
        assert!(matches!(&e[0], Event::Fatal { .. }));
        assert!(t.last_lines().contains("Kernel panic"));
    }

    #[tokio::test(start_paused = true)]
    async fn three_resets_in_five_minutes_is_a_boot_loop() {
        let mut t = BootTracker::new(cfg());
        assert!(
            !at(&mut t, 0, "U-Boot SPL")
                .await
                .iter()
                .any(|e| matches!(e, Event::BootLoop { .. }))
        );
        at(&mut t, 60, "U-Boot SPL").await;
        let e = at(&mut t, 60, "U-Boot SPL").await;
        assert!(e.contains(&Event::BootLoop { resets: 3 }), "{e:?}");
        // Reported once per loop, not on every further reset.
        let e = at(&mut t, 60, "U-Boot SPL").await;
        assert!(!e.iter().any(|e| matches!(e, Event::BootLoop { .. })));
        // Resets spread out are not a loop.
        let mut t = BootTracker::new(cfg());
        for _ in 0..5 {
            let e = at(&mut t, 200, "U-Boot SPL").await;
            assert!(
                !e.iter().any(|e| matches!(e, Event::BootLoop { .. })),
                "{e:?}"
            );
        }
    }
}

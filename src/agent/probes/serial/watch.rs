//! `type = "serial_watch"`: tails the console and follows each boot. A
//! reset marker starts a boot; ordered milestones (`U-Boot SPL` → `Starting
//! kernel` → `Linux version` → `login:`) each have a deadline counted from
//! the reset; fatal patterns (`Kernel panic`, `Oops`) fail the boot at
//! once; N resets within a window is a boot loop, a state of its own, not a
//! generic timeout. The time from reset to each milestone goes to
//! `bench_boot_milestone_seconds{probe,milestone}`.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::console::Console;
use super::lines::Prompt;
use super::port::{self, PortEvent, PortState};
use super::{FlowControl, Parity, PortRef, SerialError, b115200};
use crate::config::Pattern;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Milestone {
    pub name: String,
    pub pattern: Pattern,
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
    pub reset: Pattern,
    /// In order; the last one means booted.
    pub milestones: Vec<Milestone>,
    /// Fails the boot at once.
    #[serde(default)]
    pub fatal: Option<Pattern>,
    /// A line matching this during a boot gives the firmware version the
    /// boot's trace carries (`firmware.version`): its group `version`, else
    /// `major`.`minor`.`patch`, else the whole match.
    #[serde(default)]
    pub version: Option<Pattern>,
    /// This many resets within `boot_loop_window` is a boot loop.
    #[serde(default = "three")]
    pub boot_loop_resets: usize,
    #[serde(default = "five_min", with = "humantime_serde")]
    pub boot_loop_window: Duration,
    /// Pokes the console to learn whether a device that is already up
    /// answers, at start and after a silence: `alive = { send = "\r",
    /// expect = "login:|# $|=> " }`. An answer counts as booted.
    #[serde(default)]
    pub alive: Option<Alive>,
    /// Without `alive`: a console that shows no reset this long after the
    /// port opened counts as booted (the device booted before the agent
    /// started). With `alive`, the poke decides and this key is refused.
    #[serde(default, with = "humantime_serde")]
    pub assume_booted_after: Option<Duration>,
    /// A prompt (a line without an ending: `login: `, `=> `) that stays
    /// quiet this long is judged as a line, once.
    #[serde(default = "quarter_s", with = "humantime_serde")]
    pub prompt_quiet: Duration,
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

/// The poke of `alive`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alive {
    /// What to write (escapes as in TOML: `"\r"`).
    pub send: String,
    /// The answer of a device that is up (a prompt: matched on the
    /// unterminated tail too).
    pub expect: Pattern,
    /// How long to wait for the answer.
    #[serde(default = "five_s", with = "humantime_serde")]
    pub timeout: Duration,
    /// Poke again after the console has been silent this long.
    #[serde(default = "five_min", with = "humantime_serde")]
    pub after_silence: Duration,
}

/// Without `alive`, how long a console without a reset means booted.
pub const ASSUME_BOOTED_AFTER: Duration = Duration::from_secs(30);

fn five_s() -> Duration {
    Duration::from_secs(5)
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
fn quarter_s() -> Duration {
    Duration::from_millis(250)
}
fn twenty() -> usize {
    20
}

/// What the tracker saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Reset,
    Milestone {
        name: String,
        after: Duration,
    },
    Booted,
    Missed {
        name: String,
        within: Duration,
    },
    Fatal {
        line: String,
    },
    BootLoop {
        resets: usize,
    },
    /// The device answered the `alive` poke: it is up.
    Alive,
    /// The device did not answer the `alive` poke in time.
    NoAnswer {
        waited: Duration,
    },
    /// No `alive` poke and no reset seen since the port opened: the device
    /// booted before the agent started.
    AssumedBooted {
        quiet: Duration,
    },
    /// The boot under way printed its firmware version (`version`).
    Version {
        version: String,
    },
}

impl Event {
    /// Whether the event fails the boot (or the bench, for a boot loop);
    /// the others are progress.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Event::Missed { .. }
                | Event::Fatal { .. }
                | Event::BootLoop { .. }
                | Event::NoAnswer { .. }
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

    /// The last console line (after a [`Event::Reset`]: the reset marker's).
    pub fn last_line(&self) -> Option<&str> {
        self.console.last()
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
        if let (Some(_), Some(re)) = (self.boot_started, &self.cfg.version)
            && let Some(caps) = re.captures(text)
        {
            let version = super::expect::version(&caps).unwrap_or_else(|| caps[0].to_string());
            events.push(Event::Version { version });
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

    /// When the boot under way started (its reset marker), if one is.
    pub fn boot_started(&self) -> Option<Instant> {
        self.boot_started
    }

    /// Whether a boot is under way (a reset seen, not yet booted or failed).
    pub fn booting(&self) -> bool {
        self.boot_started.is_some()
    }

    /// The device answered a poke: whatever boot was under way is over.
    pub fn alive(&mut self) -> Vec<Event> {
        self.boot_started = None;
        self.next = 0;
        vec![Event::Alive]
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

/// Follows the console through the port's owner, so `serial_expect`
/// probes can share it: [`Watcher::next`] waits for console output or a
/// timer and returns the events it led to.
pub struct Watcher<'a> {
    port: std::sync::Arc<port::SharedPort>,
    lines: Lines,
    follower: Follower<'a>,
}

impl<'a> Watcher<'a> {
    /// Opens (or joins) the port and waits until it is usable.
    pub async fn open(cfg: &'a Config) -> Result<Watcher<'a>, SerialError> {
        let port = port::open_shared(
            &cfg.port,
            cfg.baud,
            cfg.parity,
            cfg.flow_control,
            Duration::ZERO,
        )?;
        let lines = port.subscribe();
        if let PortState::Gone(why) = port.ready(Duration::from_secs(10)).await {
            return Err(SerialError::Gone(why));
        }
        Ok(Watcher {
            port,
            lines,
            follower: Follower::new(cfg, Instant::now()),
        })
    }

    /// The next events (possibly none), or why the console is gone.
    pub async fn next(&mut self, tracker: &mut BootTracker) -> Result<Vec<Event>, SerialError> {
        self.follower
            .next(&self.port, &mut self.lines, tracker)
            .await
    }
}

/// The state of one [`Watcher`]: the prompt judge, the forwarding budget, and
/// the timers of the `alive` poke and of `assume_booted_after`.
struct Follower<'a> {
    cfg: &'a Config,
    prompt: Prompt,
    budget: Budget,
    /// When the console last said anything.
    heard: Instant,
    /// When, without `alive`, a console without a reset means booted;
    /// `None` once decided.
    assume_at: Option<Instant>,
    /// When to poke next, with `alive`.
    poke_at: Option<Instant>,
}

type Lines = tokio::sync::mpsc::Receiver<PortEvent>;

impl<'a> Follower<'a> {
    fn new(cfg: &'a Config, now: Instant) -> Follower<'a> {
        let assume = cfg.assume_booted_after.unwrap_or(ASSUME_BOOTED_AFTER);
        Follower {
            cfg,
            prompt: Prompt::new(cfg.prompt_quiet),
            budget: Budget {
                per_second: cfg.forward_rate,
                window: None,
                used: 0,
                suppressed: 0,
            },
            heard: now,
            assume_at: cfg.alive.is_none().then_some(now + assume),
            // At start: a device that is up already is known at once.
            poke_at: cfg.alive.as_ref().map(|_| now),
        }
    }

    /// Waits for the next console event or timer; returns the events it
    /// led to, or why the console is gone.
    async fn next(
        &mut self,
        port: &port::SharedPort,
        lines: &mut Lines,
        tracker: &mut BootTracker,
    ) -> Result<Vec<Event>, SerialError> {
        let now = Instant::now();
        if let Some(alive) = &self.cfg.alive
            && !tracker.booting()
            && self.poke_at.is_some_and(|at| at <= now)
        {
            return self.poke(alive, port, lines, tracker).await;
        }
        if self.assume_at.is_some_and(|at| at <= now) {
            self.assume_at = None;
            let quiet = self.cfg.assume_booted_after.unwrap_or(ASSUME_BOOTED_AFTER);
            return Ok(vec![Event::AssumedBooted { quiet }]);
        }
        let event = match self.wake_at(tracker) {
            Some(d) => match tokio::time::timeout_at(d, lines.recv()).await {
                Ok(event) => event,
                Err(_) => return Ok(self.quiet(tracker, Instant::now())),
            },
            None => lines.recv().await,
        };
        self.consume(event, tracker)
    }

    /// When to stop waiting for the console. No poke during a boot: one
    /// that fell due mid-boot waits for the boot's end, not a busy loop.
    fn wake_at(&self, tracker: &BootTracker) -> Option<Instant> {
        let poke = self.poke_at.filter(|_| !tracker.booting());
        [
            tracker.next_deadline(),
            self.prompt.due(),
            self.assume_at,
            poke,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Time passed without console output: a quiet prompt is judged, and
    /// deadlines are checked.
    fn quiet(&mut self, tracker: &mut BootTracker, now: Instant) -> Vec<Event> {
        let mut events = match self.prompt.fire(now) {
            Some(tail) => tracker.line(&tail, now),
            None => Vec::new(),
        };
        events.extend(tracker.tick(now));
        self.note(&events);
        events
    }

    /// One console event.
    fn consume(
        &mut self,
        event: Option<PortEvent>,
        tracker: &mut BootTracker,
    ) -> Result<Vec<Event>, SerialError> {
        let now = Instant::now();
        self.heard = now;
        if let (Some(alive), Some(_)) = (&self.cfg.alive, self.poke_at) {
            self.poke_at = Some(now + alive.after_silence);
        }
        let events = match event {
            Some(PortEvent::Line(text)) => {
                if self.cfg.forward_lines {
                    forward(&mut self.budget, &text);
                }
                tracker.line(self.prompt.line(&text), now)
            }
            Some(PortEvent::Partial(tail)) => {
                self.prompt.partial(tail, now);
                Vec::new()
            }
            Some(PortEvent::Gone(why)) => return Err(SerialError::Gone(why)),
            None => return Err(SerialError::OwnerStopped),
        };
        self.note(&events);
        Ok(events)
    }

    /// A reset seen: the device did not boot before the agent started.
    fn note(&mut self, events: &[Event]) {
        if events.contains(&Event::Reset) {
            self.assume_at = None;
        }
    }

    /// Writes the poke (in its turn, like a `serial_expect` probe) and
    /// waits for the answer, judging whatever the console says meanwhile.
    async fn poke(
        &mut self,
        alive: &Alive,
        port: &port::SharedPort,
        lines: &mut Lines,
        tracker: &mut BootTracker,
    ) -> Result<Vec<Event>, SerialError> {
        let deadline = Instant::now() + alive.timeout;
        self.poke_at = Some(deadline + alive.after_silence);
        let Ok(_turn) = tokio::time::timeout_at(deadline, port.turn()).await else {
            return Ok(vec![Event::NoAnswer {
                waited: alive.timeout,
            }]);
        };
        if !port.write(alive.send.clone().into_bytes()).await {
            return Err(SerialError::OwnerStopped);
        }
        let mut events = Vec::new();
        loop {
            let Ok(event) = tokio::time::timeout_at(deadline, lines.recv()).await else {
                events.push(Event::NoAnswer {
                    waited: alive.timeout,
                });
                return Ok(events);
            };
            let answered = match &event {
                Some(PortEvent::Line(t) | PortEvent::Partial(t)) => alive.expect.is_match(t),
                _ => false,
            };
            events.extend(self.consume(event, tracker)?);
            if answered {
                // The answer is a prompt: judged now, not once it is quiet.
                self.prompt = Prompt::new(self.cfg.prompt_quiet);
                events.extend(tracker.alive());
                return Ok(events);
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

    /// A poke that falls due during a boot (the console silent for longer
    /// than `after_silence` while a milestone's deadline is further off)
    /// waits for the boot's end instead of waking at once, again and again.
    #[tokio::test(start_paused = true)]
    async fn a_poke_due_during_a_boot_does_not_wake_the_watcher() {
        let mut c = cfg();
        c.alive = Some(Alive {
            send: "\r".into(),
            expect: Pattern::new("login: $").unwrap(),
            timeout: Duration::from_secs(5),
            after_silence: Duration::from_secs(30),
        });
        let mut t = BootTracker::new(c.clone());
        let mut f = Follower::new(&c, Instant::now());
        f.poke_at = Some(Instant::now() + Duration::from_secs(30));
        t.line("U-Boot SPL", Instant::now());
        t.line("Starting kernel", Instant::now());
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert!(t.booting());
        let wake = f.wake_at(&t).expect("the login deadline");
        assert!(wake > Instant::now(), "woken in the past: a busy loop");
        assert_eq!(Some(wake), t.next_deadline());
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

use std::time::Duration;

use opentelemetry::trace::{SpanId, TracerProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracer, SdkTracerProvider, SpanData};

use super::*;
use crate::agent::probes::serial::lines::{Lines, MAX_LINE};
use crate::agent::probes::serial::watch::Config;

/// The watch of `tests/serial.rs` for a Linux board: anchored patterns.
const LINUX_BOOT: &str = r#"
port = "/dev/null"
reset = "^U-Boot SPL"
fatal = "Kernel panic|Oops:"
version = 'Linux version (?P<version>\S+)'
milestones = [
  { name = "spl", pattern = "^U-Boot SPL 20", within = "2s" },
  { name = "u-boot", pattern = "^U-Boot 20", within = "5s" },
  { name = "kernel", pattern = "^Starting kernel", within = "5s" },
  { name = "linux", pattern = '^\[ *[0-9.]+\] Linux version', within = "5s" },
  { name = "systemd", pattern = '^\[  OK  \] Reached target multi-user\.target - Multi-User System\.$', within = "5s" },
  { name = "login", pattern = "^bench login: $", within = "5s" },
]
"#;

struct Watch {
    exporter: InMemorySpanExporter,
    _provider: SdkTracerProvider,
    trace: BootTrace<SdkTracer>,
    tracker: BootTracker,
}

impl Watch {
    fn new() -> Watch {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let cfg: Config = toml::from_str(LINUX_BOOT).unwrap();
        Watch {
            trace: BootTrace::new(provider.tracer("t"), KeyValue::new("check", "dut-boot")),
            _provider: provider,
            exporter,
            tracker: BootTracker::new(cfg),
        }
    }

    /// Feeds the events `events` to the trace, as the watch does; returns
    /// the context of the last one.
    fn judge(&mut self, events: &[Event]) -> Context {
        let mut last = Context::new();
        for e in events {
            last = self.trace.event(e, events, &self.tracker);
        }
        last
    }

    fn line(&mut self, text: &str) -> Context {
        let events = self.tracker.line(text, Instant::now());
        self.judge(&events)
    }

    /// Replays `tests/fixtures/consoles/NAME.console` with its timing on
    /// tokio's (paused) clock, through the console decoder; the prompt left
    /// at the end is judged as a quiet prompt is.
    async fn replay(&mut self, name: &str) {
        let mut lines = Lines::new(MAX_LINE);
        for (wait, bytes) in fixture(name) {
            tokio::time::sleep(wait).await;
            for l in lines.feed(&bytes) {
                self.line(&l);
            }
        }
        let tail = lines.tail().to_string();
        if !tail.is_empty() {
            self.line(&tail);
        }
    }

    fn spans(&self) -> Vec<SpanData> {
        self.exporter.get_finished_spans().unwrap()
    }
}

fn fixture(name: &str) -> Vec<(Duration, Vec<u8>)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/consoles")
        .join(format!("{name}.console"));
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix('+'))
        .map(|l| {
            let (ms, payload) = l.split_once(' ').unwrap_or((l, ""));
            (
                Duration::from_millis(ms.parse().unwrap()),
                unescape(payload),
            )
        })
        .collect()
}

fn unescape(s: &str) -> Vec<u8> {
    let (mut out, mut bytes) = (Vec::new(), s.bytes());
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
            }
            Some(other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    out
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn roots(spans: &[SpanData]) -> Vec<&SpanData> {
    spans.iter().filter(|s| s.name == "boot").collect()
}

fn since_reset(root: &SpanData, span: &SpanData) -> Duration {
    span.end_time.duration_since(root.start_time).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_replayed_boot_is_a_root_span_with_a_child_per_milestone() {
    let mut w = Watch::new();
    w.replay("uboot-linux-login").await;
    let spans = w.spans();
    let roots = roots(&spans);
    assert_eq!(roots.len(), 1, "{spans:#?}");
    let root = roots[0];
    assert_eq!(root.parent_span_id, SpanId::INVALID, "a trace of its own");
    assert_eq!(attr(root, "check").as_deref(), Some("dut-boot"));
    assert_eq!(attr(root, "boot.outcome").as_deref(), Some("booted"));
    assert_eq!(
        attr(root, "boot.reason").as_deref(),
        Some("U-Boot SPL 2024.01 (Jan 08 2024 - 12:00:00 +0000)")
    );
    assert_eq!(attr(root, "firmware.version").as_deref(), Some("6.6.15"));
    assert_eq!(root.status, Status::Unset);
    // The fixture's delays after the reset marker (+20 ms).
    assert_eq!(since_reset(root, root), Duration::from_millis(650));
    let milestones: Vec<(String, Duration)> = spans
        .iter()
        .filter(|s| s.name == "milestone")
        .map(|s| {
            assert_eq!(s.parent_span_id, root.span_context.span_id());
            assert_eq!(s.span_context.trace_id(), root.span_context.trace_id());
            assert_eq!(s.start_time, root.start_time, "from the reset marker");
            (attr(s, "milestone").unwrap(), since_reset(root, s))
        })
        .collect();
    let ms = Duration::from_millis;
    assert_eq!(
        milestones,
        [
            ("spl".to_string(), ms(0)),
            ("u-boot".into(), ms(150)),
            ("kernel".into(), ms(250)),
            ("linux".into(), ms(330)),
            ("systemd".into(), ms(580)),
            ("login".into(), ms(650)),
        ]
    );
    assert_eq!(spans.len(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_a_fatal_event_and_fails_the_boot_with_its_log_linked() {
    let mut w = Watch::new();
    w.line("U-Boot SPL 2024.01");
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.line("U-Boot 2024.01");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let about = w.line("Kernel panic - not syncing: VFS");
    let spans = w.spans();
    let root = roots(&spans)[0];
    assert_eq!(attr(root, "boot.outcome").as_deref(), Some("fatal"));
    assert_eq!(root.status, Status::error("fatal"));
    assert_eq!(since_reset(root, root), Duration::from_millis(500));
    assert_eq!(root.events.len(), 2);
    let fatal = &root.events[0];
    assert_eq!(fatal.name, "fatal");
    assert_eq!(
        fatal.attributes[0].value.to_string(),
        "Kernel panic - not syncing: VFS"
    );
    let names: Vec<_> = spans.iter().filter_map(|s| attr(s, "milestone")).collect();
    assert_eq!(names, ["spl", "u-boot"]);
    // The failure's log line is written under the boot's context.
    assert_eq!(
        about.span().span_context().trace_id(),
        root.span_context.trace_id()
    );
}

#[tokio::test(start_paused = true)]
async fn a_missed_deadline_names_the_milestone() {
    let mut w = Watch::new();
    w.line("U-Boot SPL 2024.01");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let events = w.tracker.tick(Instant::now());
    w.judge(&events);
    let spans = w.spans();
    let root = roots(&spans)[0];
    assert_eq!(
        attr(root, "boot.outcome").as_deref(),
        Some("missed_milestone")
    );
    assert_eq!(attr(root, "boot.missed").as_deref(), Some("u-boot"));
    assert_eq!(root.status, Status::error("missed_milestone"));
}

#[tokio::test(start_paused = true)]
async fn resets_before_a_verdict_end_the_boot_and_the_one_that_loops_says_so() {
    let mut w = Watch::new();
    w.replay("boot-loop").await;
    assert_eq!(roots(&w.spans()).len(), 2, "the third boot is still open");
    drop(w.trace);
    let spans = w.exporter.get_finished_spans().unwrap();
    let roots = roots(&spans);
    let outcomes: Vec<_> = roots.iter().map(|s| attr(s, "boot.outcome")).collect();
    assert_eq!(
        outcomes,
        [Some("reset".into()), Some("boot_loop".into()), None],
        "the last boot, open when the agent stopped, ends without one"
    );
    assert_eq!(roots[0].status, Status::Unset);
    assert_eq!(roots[1].status, Status::error("boot_loop"));
    let event = &roots[1].events[0];
    assert_eq!(event.name, "boot_loop");
    assert_eq!(event.attributes[0].value.to_string(), "3");
    let ids: std::collections::HashSet<_> =
        roots.iter().map(|s| s.span_context.trace_id()).collect();
    assert_eq!(ids.len(), 3, "one trace per boot");
}

#[tokio::test(start_paused = true)]
async fn a_boot_joined_mid_way_has_no_trace() {
    let mut w = Watch::new();
    w.line("Starting kernel ...");
    w.line("[    0.000000] Linux version 6.6.15");
    w.line("bench login: ");
    // A panic long after a boot belongs to no boot: its log is not linked.
    let about = w.line("Kernel panic - not syncing: VFS");
    assert!(!about.has_active_span());
    assert!(w.spans().is_empty());
    assert!(!w.trace.context().has_active_span());
}

//! `deploy/` against real programs.
//!
//! A real agent (with real checks, a serial probe and a console watcher on
//! simulated firmware, whose device under test is reset by `benchtel-agent
//! mark reset` and never comes back, then panics, then boots well) is
//! scraped every second by a real Prometheus that loads
//! `deploy/prometheus/benchtel-rules.yml`; so is, in another test, a
//! real benchtel-watch hearing OTLP heartbeats from benches at two sites,
//! some of which go silent. Every Grafana panel's query runs there with its
//! template variables filled in: the panels the agent or the watch feeds
//! must show data, the liveness counts and states must be the ones the
//! scenario makes; the rules must load and evaluate without error, the
//! agent's DUT alerts must fire on its real series, and the watch's
//! fallback rules must pick the silent benches and only them;
//! every metric name the rules and dashboards use must be one the agent
//! really exports or one a real benchtel-watch serves. The Alertmanager
//! example runs in a real Alertmanager, which must route and inhibit as
//! its comments say.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use support::alertmanager::Alertmanager;
use support::firmware::{Behaviour, Firmware};
use support::http::{sample, wait_for};
use support::prometheus::Prometheus;
use support::watch::{Beater, Watch};

const AGENT: &str = env!("CARGO_BIN_EXE_benchtel-agent");
const BENCH: &str = "deploy-bench";
const SITE: &str = "deploy-lab";

/// What the agent test fills the dashboards' variables with.
const AGENT_VARS: Vars = Vars {
    site: SITE,
    bench: BENCH,
};

/// Where a panel's data comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The agent exports it on every machine: the panel must show data.
    Agent,
    /// The agent exports this metric only where the machine has the thing
    /// (temperature sensors, a network interface, a real filesystem): the
    /// panel must show data when the agent's /metrics has it.
    AgentIfExported(&'static str),
    /// Prometheus's ALERTS series for benchtel-rules.yml: the test agent's
    /// failing check makes BenchCheckDown pending, the watch test's silent
    /// benches BenchOfflineFallback.
    Rules,
    /// benchtel-watch's /metrics: the panel must show data in the watch
    /// test.
    Watch,
    /// Loki or Tempo (the panel uses the `loki` or `tempo` variable): not
    /// run against Prometheus; tests/deploy_logs.rs checks its query
    /// against the Alloy pipeline, the agent's real spans and the
    /// provisioned data sources.
    LogsOrTraces,
}

use Source::*;

/// Every panel of deploy/grafana/dashboards, by dashboard uid and title.
/// A panel added there must be added here (the tests check both ways).
const PANELS: &[(&str, &str, Source)] = &[
    ("benchtel-fleet", "Benches online", Watch),
    ("benchtel-fleet", "Benches late", Watch),
    ("benchtel-fleet", "Benches offline", Watch),
    ("benchtel-fleet", "Stopped or in maintenance", Watch),
    ("benchtel-fleet", "Liveness by site", Watch),
    ("benchtel-fleet", "Heartbeat age", Watch),
    ("benchtel-fleet", "Liveness timeline", Watch),
    ("benchtel-fleet", "Jobs on the benches", Watch),
    ("benchtel-fleet", "Ingest up", Watch),
    ("benchtel-fleet", "Benches known", Watch),
    ("benchtel-fleet", "Heartbeats received", Watch),
    ("benchtel-fleet", "Heartbeats rejected, by reason", Watch),
    ("benchtel-fleet", "Clock skew (10 largest)", Watch),
    ("benchtel-fleet", "Alert notifications by the watch", Watch),
    ("benchtel-fleet", "Alerts now (Prometheus rules)", Rules),
    ("benchtel-fleet", "Alert sends by receiver", Watch),
    ("benchtel-fleet", "Agent heartbeats per site", Agent),
    ("benchtel-fleet", "Bench states reported", Agent),
    ("benchtel-fleet", "Checks and probes down", Agent),
    (
        "benchtel-fleet",
        "Oldest undelivered record (10 worst benches)",
        Agent,
    ),
    ("benchtel-fleet", "Telemetry dropped by agents", Agent),
    ("benchtel-bench", "Bench state", Agent),
    ("benchtel-bench", "Liveness", Watch),
    ("benchtel-bench", "Heartbeat age", Watch),
    ("benchtel-bench", "Clock skew", Watch),
    ("benchtel-bench", "Ready time", Agent),
    ("benchtel-bench", "Heartbeats sent", Agent),
    ("benchtel-bench", "Checks and probes", Agent),
    ("benchtel-bench", "Check failures", Agent),
    ("benchtel-bench", "Check run time", Agent),
    ("benchtel-bench", "Probe values", Agent),
    ("benchtel-bench", "Boot milestones", Agent),
    ("benchtel-bench", "DUT reset → ready", Agent),
    ("benchtel-bench", "DUT resets", Agent),
    ("benchtel-bench", "Log lines", LogsOrTraces),
    ("benchtel-bench", "Last boots", LogsOrTraces),
    ("benchtel-bench", "Failed check runs", LogsOrTraces),
    ("benchtel-bench", "CPU", Agent),
    ("benchtel-bench", "Memory", Agent),
    (
        "benchtel-bench",
        "Disk used",
        AgentIfExported("bench_disk_used_ratio"),
    ),
    (
        "benchtel-bench",
        "Temperatures",
        AgentIfExported("bench_temperature_celsius"),
    ),
    (
        "benchtel-bench",
        "Network",
        AgentIfExported("bench_network_io_bytes_total"),
    ),
    ("benchtel-bench", "Outbox depth", Agent),
    ("benchtel-bench", "Oldest undelivered record", Agent),
    ("benchtel-bench", "Records dropped", Agent),
    ("benchtel-bench", "Export requests", Agent),
    ("benchtel-bench", "Outbox databases replaced", Agent),
];

/// Label names that look like metric names.
const BENCH_LABELS: &[&str] = &["bench_id", "bench_site"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rules_file() -> PathBuf {
    repo().join("deploy/prometheus/benchtel-rules.yml")
}

// ---------------------------------------------------------------------------
// The dashboards as the tests see them.

struct Query {
    ref_id: String,
    expr: String,
    instant: bool,
}

struct Panel {
    dashboard: String,
    title: String,
    queries: Vec<Query>,
}

impl Panel {
    fn source(&self) -> Source {
        PANELS
            .iter()
            .find(|(d, t, _)| *d == self.dashboard && *t == self.title)
            .map(|(_, _, s)| *s)
            .unwrap_or_else(|| {
                panic!(
                    "panel \"{}\" of {} is not in PANELS in tests/deploy.rs: \
                     say where its data comes from",
                    self.title, self.dashboard
                )
            })
    }
}

/// A template variable of type `query`: (dashboard, name, label_values(...)).
struct Variable {
    dashboard: String,
    name: String,
    query: String,
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = repo().join("deploy/grafana/dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let v: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 2, "no dashboards in {}", dir.display());
    out
}

fn is_datasource_variable(ds: &Value) -> bool {
    ds["uid"] == "${datasource}" && ds["type"] == "prometheus"
}

/// A Loki or Tempo panel's data source: the `loki` or `tempo` variable.
fn is_logs_or_traces_variable(ds: &Value) -> bool {
    ds == &json!({"type": "loki", "uid": "${loki}"})
        || ds == &json!({"type": "tempo", "uid": "${tempo}"})
}

/// The Loki and Tempo panels, (dashboard uid, title); checks on the way
/// that each of them and its queries uses the `loki` or `tempo` variable.
fn logs_and_traces_panels() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        for p in d["panels"].as_array().unwrap() {
            if p["type"] == "row" || is_datasource_variable(&p["datasource"]) {
                continue;
            }
            let title = p["title"].as_str().unwrap().to_string();
            assert!(
                is_logs_or_traces_variable(&p["datasource"]),
                "{file}: panel \"{title}\" uses neither ${{datasource}}, ${{loki}} nor ${{tempo}}: {}",
                p["datasource"]
            );
            for t in p["targets"].as_array().unwrap() {
                assert_eq!(t["datasource"], p["datasource"], "{file}: \"{title}\"");
            }
            out.push((d["uid"].as_str().unwrap().to_string(), title));
        }
    }
    out
}

/// Every Prometheus panel (rows, Loki and Tempo panels aside) with its
/// queries; checks on the way that each panel and query uses the
/// `datasource` variable.
fn panels() -> Vec<Panel> {
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        let uid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no uid"));
        for p in d["panels"].as_array().unwrap() {
            if p["type"] == "row" || is_logs_or_traces_variable(&p["datasource"]) {
                continue;
            }
            let title = p["title"].as_str().unwrap().to_string();
            assert!(
                is_datasource_variable(&p["datasource"]),
                "{file}: panel \"{title}\" does not use ${{datasource}}: {}",
                p["datasource"]
            );
            let targets = p["targets"].as_array().unwrap();
            assert!(
                !targets.is_empty(),
                "{file}: panel \"{title}\" has no query"
            );
            let queries = targets
                .iter()
                .map(|t| {
                    assert!(
                        is_datasource_variable(&t["datasource"]),
                        "{file}: a query of \"{title}\" does not use ${{datasource}}"
                    );
                    Query {
                        ref_id: t["refId"].as_str().unwrap().to_string(),
                        expr: t["expr"].as_str().unwrap().to_string(),
                        instant: t["instant"].as_bool().unwrap_or(false),
                    }
                })
                .collect();
            out.push(Panel {
                dashboard: uid.to_string(),
                title,
                queries,
            });
        }
    }
    out
}

fn variables() -> Vec<Variable> {
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        let list = d["templating"]["list"].as_array().unwrap();
        let first = &list[0];
        assert!(
            first["type"] == "datasource"
                && first["name"] == "datasource"
                && first["query"] == "prometheus",
            "{file}: the first variable must be the datasource variable: {first}"
        );
        for v in &list[1..] {
            // The Loki and Tempo data source variables.
            if v["type"] == "datasource" && v["name"] == v["query"] {
                assert!(
                    ["loki", "tempo"].contains(&v["query"].as_str().unwrap_or("")),
                    "{file}: variable {}",
                    v["name"]
                );
                continue;
            }
            assert_eq!(v["type"], "query", "{file}: variable {}", v["name"]);
            assert!(
                is_datasource_variable(&v["datasource"]),
                "{file}: variable {} does not use ${{datasource}}",
                v["name"]
            );
            out.push(Variable {
                dashboard: d["uid"].as_str().unwrap().to_string(),
                name: v["name"].as_str().unwrap().to_string(),
                query: v["query"]["query"].as_str().unwrap().to_string(),
            });
        }
    }
    out
}

/// The text a panel's value mapping gives `value`.
fn state_mapping(dashboard: &str, title: &str, value: u32) -> String {
    let (_, d) = dashboards()
        .into_iter()
        .find(|(_, d)| d["uid"] == dashboard)
        .unwrap();
    let panel = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == title)
        .unwrap();
    panel["fieldConfig"]["defaults"]["mappings"][0]["options"][value.to_string()]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("\"{title}\" maps no value {value}"))
        .to_string()
}

/// The values of the dashboards' own variables.
struct Vars {
    /// `$bench_site`, used as `bench_site=~"$bench_site"`: a regex.
    site: &'static str,
    bench: &'static str,
}

/// Fills in Grafana's variables as Grafana would for a 1 s scrape interval.
fn substitute(expr: &str, vars: &Vars) -> String {
    let values = [
        ("$__rate_interval", "1m"),
        ("$__interval", "15s"),
        ("$__range", "5m"),
        ("$bench_site", vars.site),
        ("$bench_id", vars.bench),
    ];
    let mut out = expr.to_string();
    for (name, value) in values {
        out = out.replace(name, value);
    }
    assert!(
        !out.contains('$'),
        "a variable tests/deploy.rs does not know in: {expr}"
    );
    out
}

/// `label_values(selector, label)` -> (selector, label).
fn label_values(query: &str) -> (String, String) {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values(selector, label): {query}"));
    let (selector, label) = inner.rsplit_once(',').unwrap();
    (selector.trim().to_string(), label.trim().to_string())
}

#[test]
fn every_panel_is_classified_and_uses_the_datasource_variable() {
    let mut found: BTreeSet<(String, String)> = panels()
        .iter()
        .map(|p| {
            p.source();
            (p.dashboard.clone(), p.title.clone())
        })
        .collect();
    let logs_and_traces = logs_and_traces_panels();
    for (d, t) in &logs_and_traces {
        let source = PANELS.iter().find(|(pd, pt, _)| pd == d && pt == t);
        assert!(
            matches!(source, Some((_, _, LogsOrTraces))),
            "panel \"{t}\" of {d} uses Loki or Tempo: list it in PANELS as LogsOrTraces"
        );
    }
    let total = panels().len() + logs_and_traces.len();
    found.extend(logs_and_traces);
    assert_eq!(found.len(), total, "two panels share a title");
    for (d, t, _) in PANELS {
        assert!(
            found.contains(&(d.to_string(), t.to_string())),
            "PANELS lists \"{t}\" of {d}, which the dashboards do not have"
        );
    }
    assert!(!variables().is_empty());
}

// ---------------------------------------------------------------------------
// Prometheus's HTTP API.

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: String) -> Api {
        // reqwest is built without a TLS provider of its own.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            base,
        }
    }

    /// GET `path` with `params`: the decoded JSON body, or None if the
    /// server is not answering yet.
    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Option<Value> {
        let mut url = url::Url::parse(&format!("{}{path}", self.base)).unwrap();
        url.query_pairs_mut().extend_pairs(params);
        let resp = self.client.get(url).send().await.ok()?;
        let text = resp.text().await.ok()?;
        Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")))
    }

    async fn text(&self, url: &str) -> Option<String> {
        let resp = self.client.get(url).send().await.ok()?;
        resp.text().await.ok()
    }

    /// Runs a panel query as Grafana would: a range query over the last two
    /// minutes, or an instant query. Ok(data) or Err(Prometheus's error).
    async fn query(&self, expr: &str, instant: bool) -> Option<Result<Value, String>> {
        let body = if instant {
            self.get("/api/v1/query", &[("query", expr)]).await?
        } else {
            let end = unix_now();
            let start = (end - 120.0).to_string();
            let end = end.to_string();
            self.get(
                "/api/v1/query_range",
                &[
                    ("query", expr),
                    ("start", &start),
                    ("end", &end),
                    ("step", "1"),
                ],
            )
            .await?
        };
        Some(if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        })
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Whether a query result holds at least one finite sample.
fn has_finite(data: &Value) -> bool {
    let finite = |pair: &Value| {
        pair[1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    };
    data["result"].as_array().is_some_and(|series| {
        series.iter().any(|s| {
            s["values"].as_array().is_some_and(|v| v.iter().any(finite))
                || (s["value"].is_array() && finite(&s["value"]))
        })
    })
}

// ---------------------------------------------------------------------------
// The agent.

struct AgentProcess {
    child: Child,
    metrics: String,
    config: PathBuf,
    /// `STATE_DIRECTORY`, where its control socket is.
    state: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An agent with fast intervals, a check that passes, one that fails, a
/// serial probe that reads a firmware version and a console watcher (that
/// knows a kernel panic), and no collector (its outbox fills and its
/// exports are retried). A reset of the device under test must be ready
/// again within 5 s: the console's boots are printed at once.
fn start_agent(version_port: &Path, console_port: &Path) -> AgentProcess {
    let dir = tempfile::tempdir().unwrap();
    // Outside the ephemeral range: no other test's server can take them.
    let metrics = format!("127.0.0.1:{}", support::port_outside_ephemeral_range());
    let closed = format!("127.0.0.1:{}", support::port_outside_ephemeral_range());
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[bench]
id = "{BENCH}"
site = "{SITE}"
dut_ready_within = "5s"

[otlp]
endpoint = "http://{closed}"
backoff_min = "50ms"
backoff_max = "500ms"

[outbox]
path = "{outbox}"

[http]
listen = "{metrics}"

[telemetry]
export_interval = "1s"

[sources.heartbeat]
interval = "1s"

[sources.host_metrics]
interval = "1s"

[[checks]]
name = "always-ok"
type = "exec"
command = "true"
interval = "1s"

[[checks]]
name = "closed-port"
type = "tcp"
address = "{closed}"
interval = "1s"
affects_ready = false

[[checks]]
name = "dut-version"
type = "serial_expect"
port = "{version_port}"
send = "version"
expect = 'Zephyr version (?P<major>\d+)\.(?P<minor>\d+)'
interval = "1s"

[[checks]]
name = "dut-boot"
type = "serial_watch"
port = "{console_port}"
reset = "U-Boot SPL"
fatal = "Kernel panic"
boot_loop_resets = 1000
milestones = [
  {{ name = "spl", pattern = "U-Boot SPL", within = "5s" }},
  {{ name = "kernel", pattern = "Starting kernel", within = "10s" }},
]
"#,
            outbox = dir.path().join("outbox.db").display(),
            version_port = version_port.display(),
            console_port = console_port.display(),
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let child = agent_command(&config, &state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    AgentProcess {
        child,
        metrics,
        config,
        state,
        _dir: dir,
    }
}

/// `benchtel-agent --config <config>` with `state` as its state directory
/// and none of the environment that would redirect it.
fn agent_command(config: &Path, state: &Path) -> Command {
    let mut cmd = Command::new(AGENT);
    cmd.arg("--config")
        .arg(config)
        .env_remove("BENCHTEL_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUNTIME_DIRECTORY")
        .env("STATE_DIRECTORY", state);
    cmd
}

/// `benchtel-agent mark reset`, as a test harness runs it next to the
/// agent: over the agent's control socket.
fn mark_reset(agent: &AgentProcess) {
    let out = agent_command(&agent.config, &agent.state)
        .args([
            "mark",
            "reset",
            "--reason",
            "tests/deploy.rs power-cycled it",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "benchtel-agent mark reset failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls the agent's /metrics until `cond` holds for its text.
async fn metrics_until(api: &Api, agent: &AgentProcess, what: &str, cond: impl Fn(&str) -> bool) {
    let url = format!("http://{}/metrics", agent.metrics);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = api.text(&url).await;
        if text.as_deref().is_some_and(&cond) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent's /metrics never showed {what}; they last said:\n{}",
            text.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Prints one good boot at a time on the console until the agent says the
/// bench is ready. Not faster: each reset line clears the readiness
/// verdicts, and the checks need a second to give theirs again.
async fn boot_until_ready(api: &Api, agent: &AgentProcess, console: &Firmware) {
    let url = format!("http://{}/metrics", agent.metrics);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        console.print("U-Boot SPL 2024.01 (Jan 01 2024 - 00:00:00 +0000)\r\n");
        console.print("Starting kernel ...\r\n");
        let printed = Instant::now();
        while printed.elapsed() < Duration::from_secs(4) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if let Some(text) = api.text(&url).await
                && sample(&text, "bench_state", &[("state", "ready")]) == Some(1.0)
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the bench never became ready again after a good boot"
        );
    }
}

/// The device under test's bad day, for the DUT panels and rules: the
/// harness resets it, its console shows the reset and it never comes back
/// (a reset not ready in time),
/// then it boots into a kernel panic (code `fatal`), then it boots well
/// and the bench is ready again (a reset timed into
/// `bench_dut_ready_seconds`).
async fn dut_resets_panics_and_recovers(api: &Api, agent: &AgentProcess, console: &Firmware) {
    // From a ready bench only. Right after a console boot the agent still
    // awaits that reset's readiness (its interval checks have not run again
    // yet); a mark then is counted but joins the pending reset, whose
    // failure names the console, not the mark (see `Readiness::dut_reset`).
    metrics_until(api, agent, "the bench ready after the recorded boot", |m| {
        sample(m, "bench_state", &[("state", "ready")]) == Some(1.0)
    })
    .await;
    mark_reset(agent);
    // The console shows the reset, and then nothing: the watch waits for a
    // boot that does not come.
    console.print("U-Boot SPL 2024.01 (Jan 01 2024 - 00:00:00 +0000)\r\n");
    metrics_until(
        api,
        agent,
        "a marked reset that did not become ready",
        |m| {
            sample(m, "bench_dut_resets_total", &[("source", "mark")]) == Some(1.0)
                && sample(
                    m,
                    "bench_dut_reset_failures_total",
                    &[("source", "mark"), ("code", "reset_not_ready")],
                ) == Some(1.0)
                && sample(m, "bench_state", &[("state", "degraded")]) == Some(1.0)
        },
    )
    .await;
    console.print("U-Boot SPL 2024.01 (Jan 01 2024 - 00:00:00 +0000)\r\n");
    console.print("Kernel panic - not syncing: VFS: Unable to mount root fs\r\n");
    metrics_until(api, agent, "the console's kernel panic", |m| {
        sample(
            m,
            "bench_health_failures_total",
            &[("check", "dut-boot"), ("code", "fatal")],
        )
        .is_some()
    })
    .await;
    boot_until_ready(api, agent, console).await;
}

/// Prints a boot on the console until the agent's /metrics has timed one:
/// the watcher may open the port after the first print.
async fn boot_until_recorded(api: &Api, agent: &AgentProcess, console: &Firmware) {
    let url = format!("http://{}/metrics", agent.metrics);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        console.print("U-Boot SPL 2024.01 (Jan 01 2024 - 00:00:00 +0000)\r\n");
        console.print("Trying to boot from MMC1\r\n");
        console.print("Starting kernel ...\r\n");
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(text) = api.text(&url).await
            && text.contains("bench_boot_milestone_seconds_count{")
            && text.contains("milestone=\"kernel\"")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never timed a boot on the simulated console"
        );
    }
}

/// Metric names (not labels) in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\b(?:bench|benchtel)_[a-z0-9_]+\b").unwrap();
    re.find_iter(expr)
        .map(|m| m.as_str().to_string())
        .filter(|n| !BENCH_LABELS.contains(&n.as_str()))
        .collect()
}

/// Every metric name the rules (as Prometheus loaded them), the panels and
/// the template variables use.
fn used_metric_names(loaded_rules: &[Value]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for r in loaded_rules {
        names.extend(metric_names(r["query"].as_str().unwrap()));
    }
    for p in &panels() {
        for q in &p.queries {
            names.extend(metric_names(&q.expr));
        }
    }
    for v in variables() {
        names.extend(metric_names(&v.query));
    }
    names
}

/// The names of the samples in a Prometheus text exposition (a histogram's
/// `_bucket`, `_sum` and `_count` each): families without samples are not
/// served as far as a query can tell.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_panels_rules_and_names_work_against_a_real_agent_and_prometheus() {
    let panels = panels();
    // Meanwhile, a real watch shows which names it serves.
    let watch_names = std::thread::spawn(names_served_by_a_real_watch);
    let firmware = Firmware::start(Behaviour::ZephyrShell);
    let console = Firmware::start(Behaviour::Hang);
    let agent = start_agent(&firmware.port(), &console.port());
    let rules = rules_file();
    let prom = Prometheus::start(&[("benchtel-agent", &agent.metrics)], &[&rules]);
    let api = Api::new(prom.url());
    boot_until_recorded(&api, &agent, &console).await;
    dut_resets_panics_and_recovers(&api, &agent, &console).await;
    let exported = api
        .text(&format!("http://{}/metrics", agent.metrics))
        .await
        .unwrap();

    // Every panel fed by the agent shows data. The first scrapes and rule
    // evaluations take a few seconds, hence the polling.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut checked = 0;
    for panel in &panels {
        let must_have_data = match panel.source() {
            Agent | Rules => true,
            AgentIfExported(metric) => exported.contains(&format!("\n{metric}{{")),
            Watch => false,
            LogsOrTraces => unreachable!("panels() has only Prometheus panels"),
        };
        for q in &panel.queries {
            let expr = substitute(&q.expr, &AGENT_VARS);
            loop {
                let result = api.query(&expr, q.instant).await;
                let done = match &result {
                    Some(Err(e)) => panic!(
                        "panel \"{}\" ({}) query {}: Prometheus refused it: {e}\n{expr}",
                        panel.title, panel.dashboard, q.ref_id
                    ),
                    Some(Ok(data)) => !must_have_data || has_finite(data),
                    None => false,
                };
                if done {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "panel \"{}\" ({}) query {} shows no data from the agent:\n{expr}\n\
                     last answer: {result:?}\nprometheus log:\n{}",
                    panel.title,
                    panel.dashboard,
                    q.ref_id,
                    prom.log()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            checked += usize::from(must_have_data);
        }
    }
    assert!(
        checked >= 25,
        "only {checked} queries were checked for data"
    );

    // The state timeline encodes the state as a number that its value
    // mappings name: once every readiness check passed, "ready".
    let state = panels
        .iter()
        .find(|p| p.dashboard == "benchtel-bench" && p.title == "Bench state")
        .unwrap();
    assert_eq!(state_mapping("benchtel-bench", "Bench state", 1), "ready");
    let expr = substitute(&state.queries[0].expr, &AGENT_VARS);
    loop {
        let data = api.query(&expr, true).await.unwrap().unwrap();
        if data["result"][0]["value"][1] == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bench never showed as ready: {data}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The template variables list this bench and its site.
    for v in variables() {
        let (selector, label) = label_values(&v.query);
        let want = match label.as_str() {
            "bench_id" => BENCH,
            "bench_site" => SITE,
            other => panic!("variable {} lists {other}: what should it hold?", v.name),
        };
        let body = api
            .get(
                &format!("/api/v1/label/{label}/values"),
                &[("match[]", &selector)],
            )
            .await
            .unwrap();
        assert!(
            body["data"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == want)),
            "variable {} of {} ({}) does not list {want}: {body}",
            v.name,
            v.dashboard,
            v.query
        );
    }

    // The rules loaded, all of them, and evaluate without error.
    let rule_count = std::fs::read_to_string(&rules)
        .unwrap()
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("- alert:") || l.starts_with("- record:")
        })
        .count();
    let loaded = loop {
        let body = api.get("/api/v1/rules", &[]).await.unwrap();
        let loaded: Vec<Value> = body["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        if loaded.len() == rule_count && loaded.iter().all(|r| r["health"] != "unknown") {
            break loaded;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {rule_count} rules loaded, or not yet evaluated: {body}\n{}",
            loaded.len(),
            prom.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for r in &loaded {
        assert_eq!(
            r["health"], "ok",
            "rule {} fails in Prometheus: {}",
            r["name"], r["lastError"]
        );
    }

    // An agent alert fires on the agent's real metric names: the failing
    // check makes BenchCheckDown pending (its `for` is 5 minutes).
    let pending = format!(
        r#"ALERTS{{alertname="BenchCheckDown", alertstate="pending", bench_id="{BENCH}", bench_site="{SITE}", check="closed-port"}}"#
    );
    loop {
        let data = api.query(&pending, true).await.unwrap().unwrap();
        if has_finite(&data) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "BenchCheckDown never went pending for the failing check"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The DUT alerts fire (they have no `for`) on the agent's real series:
    // the kernel panic on the console, the marked reset never ready.
    for (alert, label) in [
        ("BenchDutFatal", r#"check="dut-boot""#),
        ("BenchDutNotReadyAfterReset", r#"source="mark""#),
    ] {
        let firing = format!(
            r#"ALERTS{{alertname="{alert}", alertstate="firing", bench_id="{BENCH}", bench_site="{SITE}", {label}}}"#
        );
        eventually(
            &format!("{alert} to fire for the agent"),
            async || match api.query(&firing, true).await {
                Some(Ok(data)) if has_finite(&data) => Ok(()),
                other => Err(format!("{firing}: {other:?}")),
            },
        )
        .await;
    }
    let looped = format!(r#"ALERTS{{alertname="BenchDutBootLoop", bench_id="{BENCH}"}}"#);
    let none = instant(&api, &looped).await.unwrap();
    assert!(none.is_empty(), "no boot loop was printed: {none:?}");

    // Every metric name in the rules and the dashboards is one the agent
    // exports (seen in Prometheus) or one a real benchtel-watch serves.
    let names = used_metric_names(&loaded);
    let watch_names = watch_names
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let host_dependent: Vec<&str> = PANELS
        .iter()
        .filter_map(|(_, _, s)| match s {
            AgentIfExported(m) => Some(*m),
            _ => None,
        })
        .collect();
    let mut unknown = Vec::new();
    for name in &names {
        if watch_names.contains(name) {
            continue;
        }
        let selector = format!(r#"{{__name__="{name}", job="benchtel-agent"}}"#);
        let body = api
            .get("/api/v1/series", &[("match[]", &selector)])
            .await
            .unwrap();
        let found = body["data"].as_array().is_some_and(|a| !a.is_empty());
        let excused =
            host_dependent.contains(&name.as_str()) && !exported.contains(&format!("\n{name}{{"));
        if !found && !excused {
            unknown.push(name.clone());
        }
    }
    assert!(
        unknown.is_empty(),
        "the rules or dashboards use metric names that neither the agent exports \
         nor benchtel-watch serves: {unknown:?}\nbenchtel-watch served: {watch_names:?}"
    );
}

// ---------------------------------------------------------------------------
// benchtel-watch.

/// The watch scenario. At the first site one bench goes silent on its own
/// and one is in maintenance; then the second site goes down as a whole;
/// then every bench still beating stops, and the watch is deaf.
const LAB1: &str = "watch-lab1";
const LAB2: &str = "watch-lab2";
const SILENT: &str = "w1-silent";
const MAINT: &str = "w1-maint";
const WATCH_BENCHES: [(&str, &str); 6] = [
    (LAB1, "w1-a"),
    (LAB1, "w1-b"),
    (LAB1, SILENT),
    (LAB1, MAINT),
    (LAB2, "w2-a"),
    (LAB2, "w2-b"),
];

/// What the watch test fills the dashboards' variables with: both sites,
/// and the bench that goes silent.
const WATCH_VARS: Vars = Vars {
    site: "watch-lab1|watch-lab2",
    bench: SILENT,
};

/// How often the benches beat.
const EVERY: Duration = Duration::from_millis(500);

/// The watch's grace period in the scenario (`liveness.offline_after`).
const OFFLINE_AFTER: f64 = 3.0;

/// Second-scale thresholds, as tests/watch.rs uses: late after 1 s,
/// offline after 3 s; deaf once no bench it expects was heard for 2 s,
/// which is less than the grace period, so that a fleet gone silent at
/// once is held late instead of judged offline; a site of 2 benches or
/// more with half of them offline is one outage; alerts wait 1 s and are
/// re-sent every second.
fn watch_config(am: &Alertmanager) -> String {
    format!(
        r#"
[liveness]
late_after = "1s"
offline_after = "{OFFLINE_AFTER}s"
[ingest]
silence = "2s"
[storm]
min_benches = 2
[alerts]
alertmanagers = ["{}"]
resend_interval = "1s"
hold = "1s"
"#,
        am.url()
    )
}

/// A real watch pushing to a real Alertmanager and hearing benches that
/// beat over OTLP/HTTP. Fields drop in order: the beats stop first.
struct WatchRig {
    beater: Beater,
    watch: Watch,
    am: Alertmanager,
}

impl WatchRig {
    /// Starts them and waits until every bench is online and the watch has
    /// learnt their interval (until then it assumes 10 s, and a grace
    /// period of two intervals).
    fn start(benches: &[(&str, &str)]) -> WatchRig {
        let am = Alertmanager::start();
        let watch = Watch::start(&watch_config(&am));
        let beater = Beater::start(vec![watch.addr()], benches, EVERY, 0.0);
        wait_for(
            &format!("{} benches online at their interval", benches.len()),
            Duration::from_secs(20),
            || {
                let known = watch.benches();
                known.len() == benches.len()
                    && known.iter().all(|b| {
                        b["liveness"] == "online"
                            && b["heartbeat_interval_seconds"].as_f64() < Some(2.0)
                    })
            },
        );
        WatchRig { beater, watch, am }
    }

    /// A request the watch rejects as a whole: a body that is not protobuf.
    fn reject_a_request(&self) {
        let (code, body) = self.watch.post_otlp(b"not protobuf", &[]);
        assert_eq!(code, 400, "{body}");
    }

    /// `bench` at `site` says, in an OTLP heartbeat log record, that it
    /// runs `job`.
    fn report_job(&self, site: &str, bench: &str, job: &str) {
        let attr = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
        let nanos = (unix_now() * 1e9) as u64;
        let body = json!({"resourceLogs": [{
            "resource": {"attributes": [attr("bench.id", bench), attr("bench.site", site)]},
            "scopeLogs": [{"logRecords": [{
                "timeUnixNano": nanos.to_string(),
                "body": {"stringValue": "heartbeat"},
                "attributes": [attr("state", "ready"), attr("execution_id", job), attr("task_id", "flash")],
            }]}],
        }]});
        let (code, text) = support::http::post(
            &self.watch.addr(),
            "/v1/logs",
            &["Content-Type: application/json"],
            body.to_string().as_bytes(),
        )
        .expect("watch answers");
        assert_eq!(code, 200, "{text}");
        wait_for(
            &format!("{bench}'s job at the watch"),
            Duration::from_secs(10),
            || {
                self.watch
                    .benches()
                    .iter()
                    .any(|b| b["bench_id"] == bench && b["execution_id"] == job)
            },
        );
    }

    fn maintenance(&self, bench: &str) {
        let (code, body) = support::http::post(
            &self.watch.addr(),
            &format!("/api/v1/benches/{bench}/maintenance"),
            &["Content-Type: application/json"],
            br#"{"on": true}"#,
        )
        .expect("watch answers");
        assert_eq!(code, 200, "{body}");
    }
}

/// The metric names a real benchtel-watch serves once its families have
/// samples: it has heard benches, rejected a request, judged a bench
/// offline and pushed that alert to Alertmanager. (Its MQTT families stay
/// empty without a broker.)
fn names_served_by_a_real_watch() -> BTreeSet<String> {
    let rig = WatchRig::start(&[
        ("names-lab", "n1"),
        ("names-lab", "n2"),
        ("names-lab", "n3"),
    ]);
    rig.reject_a_request();
    rig.report_job("names-lab", "n1", "job-names");
    rig.beater.kill("n3");
    wait_for(
        "the watch to push BenchOffline for n3 to Alertmanager",
        Duration::from_secs(30),
        || {
            let m = rig.watch.metrics();
            let fired = &[("alertname", "BenchOffline"), ("state", "firing")];
            sample(&m, "benchtel_watch_alerts_total", fired) == Some(1.0)
                && sample(&m, "benchtel_watch_alert_sends_total", &[("result", "ok")])
                    .is_some_and(|n| n >= 1.0)
        },
    );
    sample_names(&rig.watch.metrics())
}

type Series = Vec<(BTreeMap<String, String>, f64)>;

/// An instant query's series: labels and value.
async fn instant(api: &Api, expr: &str) -> Result<Series, String> {
    let data = api
        .query(expr, true)
        .await
        .ok_or_else(|| "Prometheus does not answer".to_string())?
        .map_err(|e| format!("Prometheus refused {expr}: {e}"))?;
    Ok(data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let value = s["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            (labels, value)
        })
        .collect())
}

/// `series` keyed by the values of `labels`, joined with `/`.
fn by(series: &Series, labels: &[&str]) -> BTreeMap<String, f64> {
    series
        .iter()
        .map(|(l, v)| {
            let key: Vec<&str> = labels
                .iter()
                .map(|k| l.get(*k).map_or("", String::as_str))
                .collect();
            (key.join("/"), *v)
        })
        .collect()
}

/// Polls `check` until it holds, or fails with `what` and its last
/// complaint after 30 s.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(Instant::now() < deadline, "{what}: {last}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn panel(dashboard: &str, title: &str) -> Panel {
    panels()
        .into_iter()
        .find(|p| p.dashboard == dashboard && p.title == title)
        .unwrap_or_else(|| panic!("no panel \"{title}\" in {dashboard}"))
}

/// The Fleet dashboard's stats that count benches by liveness.
const LIVENESS_STATS: [&str; 4] = [
    "Benches online",
    "Benches late",
    "Benches offline",
    "Stopped or in maintenance",
];

/// Waits until the liveness stats show `want` (as Grafana shows a stat:
/// the last value of its one series; no value is not 0).
async fn liveness_stats_reach(api: &Api, want: [f64; 4], when: &str) {
    let exprs: Vec<String> = LIVENESS_STATS
        .iter()
        .map(|t| substitute(&panel("benchtel-fleet", t).queries[0].expr, &WATCH_VARS))
        .collect();
    eventually(
        &format!("{LIVENESS_STATS:?} should show {want:?} {when}"),
        async || {
            let mut got = Vec::new();
            for e in &exprs {
                match instant(api, e).await?.as_slice() {
                    [(_, v)] => got.push(*v),
                    other => return Err(format!("{e} gave {other:?}")),
                }
            }
            if got == want {
                Ok(())
            } else {
                Err(format!("they show {got:?}"))
            }
        },
    )
    .await;
}

/// Waits until BenchOfflineFallback is pending for exactly `benches` (its
/// `for` of 2 minutes is longer than this test: promtool's tests check
/// that it fires after it).
async fn fallback_pending_for(api: &Api, benches: &[(&str, &str)]) {
    let want: BTreeMap<String, f64> = benches
        .iter()
        .map(|(site, bench)| (format!("{bench}/{site}/pending/critical"), 1.0))
        .collect();
    eventually(
        &format!("BenchOfflineFallback should be pending for exactly {benches:?}"),
        async || {
            let alerts = instant(api, r#"ALERTS{alertname="BenchOfflineFallback"}"#).await?;
            let got = by(
                &alerts,
                &["bench_id", "bench_site", "alertstate", "severity"],
            );
            if got == want {
                Ok(())
            } else {
                Err(format!("it is for {got:?}"))
            }
        },
    )
    .await;
}

/// Checks a range query of `bench:heartbeat_age_seconds` over the time
/// since `silent_since`: the silent bench's age grows with the clock, the
/// others' stays below the grace period.
fn check_ages(range: &Value, silent_since: f64) {
    // The last beat and the scrape that shows it take up to ~1.5 s.
    let from = silent_since + 2.0;
    let mut silent_points = 0;
    for s in range["result"].as_array().unwrap() {
        let bench = s["metric"]["bench_id"].as_str().unwrap();
        let points: Vec<(f64, f64)> = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_f64().unwrap(),
                    p[1].as_str().unwrap().parse().unwrap(),
                )
            })
            .filter(|(t, _)| *t >= from)
            .collect();
        if bench == SILENT {
            silent_points = points.len();
            for w in points.windows(2) {
                assert!(w[1].1 >= w[0].1, "{bench}'s age went down: {points:?}");
            }
            let (first, last) = (points[0], points[points.len() - 1]);
            assert!(
                last.1 - first.1 >= last.0 - first.0 - 2.0,
                "{bench}'s age does not grow with the clock: {points:?}"
            );
            for (t, age) in &points {
                assert!(
                    *age <= t - silent_since + 1.0,
                    "{bench} at {t}: age {age} older than its silence"
                );
            }
        } else {
            for (t, age) in &points {
                assert!(
                    *age < OFFLINE_AFTER,
                    "{bench} is beating, yet its age was {age} at {t}: {points:?}"
                );
            }
        }
    }
    assert!(
        silent_points >= 4,
        "{silent_points} points of {SILENT}'s age: {range}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_panels_and_rules_work_against_a_real_watch_and_prometheus() {
    let rig = WatchRig::start(&WATCH_BENCHES);
    rig.maintenance(MAINT);
    rig.report_job(LAB1, "w1-a", "job-deploy");
    rig.reject_a_request();
    let rules = rules_file();
    let prom = Prometheus::start(&[("benchtel-watch", &rig.watch.addr())], &[&rules]);
    let api = Api::new(prom.url());

    // Every bench beats: five online, one in maintenance.
    liveness_stats_reach(&api, [5.0, 0.0, 0.0, 1.0], "with every bench beating").await;

    // One bench goes silent: offline for the watch, and for the fallback
    // rule, which picks it and only it.
    rig.beater.kill(SILENT);
    let silent_since = unix_now();
    liveness_stats_reach(&api, [4.0, 0.0, 1.0, 1.0], "with one bench silent").await;
    fallback_pending_for(&api, &[(LAB1, SILENT)]).await;

    // Its heartbeat age grows; the others' does not.
    eventually("the silent bench's age to pass 6 s", async || {
        let ages = by(
            &instant(&api, "bench:heartbeat_age_seconds").await?,
            &["bench_id"],
        );
        match ages.get(SILENT) {
            Some(age) if *age >= 6.0 && ages.len() == WATCH_BENCHES.len() => Ok(()),
            _ => Err(format!("ages: {ages:?}")),
        }
    })
    .await;
    let range = api
        .query("bench:heartbeat_age_seconds", false)
        .await
        .unwrap()
        .unwrap();
    check_ages(&range, silent_since);

    // The second site goes down as a whole: one BenchSiteOffline, and the
    // fallback for each of its benches.
    rig.beater.kill("w2-a");
    rig.beater.kill("w2-b");
    liveness_stats_reach(&api, [2.0, 0.0, 3.0, 1.0], "with a site down").await;
    fallback_pending_for(&api, &[(LAB1, SILENT), (LAB2, "w2-a"), (LAB2, "w2-b")]).await;
    eventually("BenchSiteOffline in Alertmanager", async || {
        let sites: Vec<Value> = rig
            .am
            .active("BenchSiteOffline")
            .iter()
            .map(|a| a["labels"]["bench_site"].clone())
            .collect();
        if sites == [json!(LAB2)] {
            Ok(())
        } else {
            Err(format!("for {sites:?}"))
        }
    })
    .await;
    eventually(
        "the watch's BenchSiteOffline counted in Prometheus",
        async || {
            let fired = instant(
                &api,
                r#"benchtel_watch_alerts_total{alertname="BenchSiteOffline", state="firing"}"#,
            )
            .await?;
            match fired.as_slice() {
                [(_, v)] if *v == 1.0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // The table counts benches per site and state.
    let table = substitute(
        &panel("benchtel-fleet", "Liveness by site").queries[0].expr,
        &WATCH_VARS,
    );
    let want: BTreeMap<String, f64> = [
        ("watch-lab1/maintenance", 1.0),
        ("watch-lab1/offline", 1.0),
        ("watch-lab1/online", 2.0),
        ("watch-lab2/offline", 2.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    eventually("Liveness by site to count the benches", async || {
        let got = by(&instant(&api, &table).await?, &["bench_site", "state"]);
        if got == want {
            Ok(())
        } else {
            Err(format!("it shows {got:?}"))
        }
    })
    .await;

    // The jobs table names the job each bench reported, with its verdict.
    let jobs = substitute(
        &panel("benchtel-fleet", "Jobs on the benches").queries[0].expr,
        &WATCH_VARS,
    );
    eventually("Jobs on the benches to name w1-a's job", async || {
        let got = by(
            &instant(&api, &jobs).await?,
            &["bench_id", "execution_id", "task_id", "state"],
        );
        let want = BTreeMap::from([("w1-a/job-deploy/flash/online".to_string(), 1.0)]);
        if got == want {
            Ok(())
        } else {
            Err(format!("it shows {got:?}"))
        }
    })
    .await;

    // The timelines encode each bench's liveness as a number that their
    // value mappings name.
    let timeline = substitute(
        &panel("benchtel-fleet", "Liveness timeline").queries[0].expr,
        &WATCH_VARS,
    );
    let want: BTreeMap<String, String> = [
        ("w1-a", "online"),
        ("w1-b", "online"),
        (SILENT, "offline"),
        (MAINT, "maintenance"),
        ("w2-a", "offline"),
        ("w2-b", "offline"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let named = |dashboard: &str, title: &str, series: &Series, key: &[&str]| {
        by(series, key)
            .into_iter()
            .map(|(k, v)| (k, state_mapping(dashboard, title, v as u32)))
            .collect::<BTreeMap<String, String>>()
    };
    eventually(
        "the Liveness timeline to name each bench's state",
        async || {
            let series = instant(&api, &timeline).await?;
            let got = named(
                "benchtel-fleet",
                "Liveness timeline",
                &series,
                &["bench_id"],
            );
            if got == want {
                Ok(())
            } else {
                Err(format!("it shows {got:?}"))
            }
        },
    )
    .await;
    for (bench, state) in [
        (SILENT, "offline"),
        (MAINT, "maintenance"),
        ("w1-a", "online"),
    ] {
        let vars = Vars {
            site: WATCH_VARS.site,
            bench,
        };
        let expr = substitute(&panel("benchtel-bench", "Liveness").queries[0].expr, &vars);
        let series = instant(&api, &expr).await.unwrap();
        let got = named("benchtel-bench", "Liveness", &series, &[]);
        assert_eq!(
            got.values().collect::<Vec<_>>(),
            [state],
            "the Bench dashboard's Liveness of {bench}: {expr}"
        );
    }

    // The agents' "Bench states reported" also reads the watch's
    // bench_state, which carries only the current state and keeps it for
    // silent benches: each bench counts once, in the state it last reported.
    let reported = substitute(
        &panel("benchtel-fleet", "Bench states reported").queries[0].expr,
        &WATCH_VARS,
    );
    let got = by(&instant(&api, &reported).await.unwrap(), &["state"]);
    assert_eq!(
        got,
        BTreeMap::from([("ready".to_string(), 6.0)]),
        "{reported}"
    );

    // Every panel the watch feeds (and the rules' alerts) shows data, as
    // Grafana queries it. (The stats show 0 rather than nothing when no
    // bench is in their state: their values are checked above.)
    let mut checked = 0;
    for p in panels()
        .iter()
        .filter(|p| matches!(p.source(), Watch | Rules))
    {
        for q in &p.queries {
            let expr = substitute(&q.expr, &WATCH_VARS);
            let what = format!(
                "panel \"{}\" ({}) query {} should show data from the watch:\n{expr}\n",
                p.title, p.dashboard, q.ref_id
            );
            eventually(&what, async || match api.query(&expr, q.instant).await {
                None => Err("Prometheus does not answer".to_string()),
                Some(Err(e)) => panic!("{what}Prometheus refused it: {e}"),
                Some(Ok(data)) if has_finite(&data) => Ok(()),
                Some(Ok(data)) => Err(format!("last answer {data}\n{}", prom.log())),
            })
            .await;
            checked += 1;
        }
    }
    assert!(checked >= 16, "only {checked} watch queries");

    // The template variables list the watch's benches and sites.
    for v in variables() {
        let (selector, label) = label_values(&v.query);
        let want: BTreeSet<&str> = match label.as_str() {
            "bench_id" => WATCH_BENCHES.iter().map(|(_, b)| *b).collect(),
            "bench_site" => [LAB1, LAB2].into(),
            other => panic!("variable {} lists {other}: what should it hold?", v.name),
        };
        let body = api
            .get(
                &format!("/api/v1/label/{label}/values"),
                &[("match[]", &selector)],
            )
            .await
            .unwrap();
        let listed: BTreeSet<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            want.is_subset(&listed),
            "variable {} of {} ({}) lists {listed:?}, not all of {want:?}",
            v.name,
            v.dashboard,
            v.query
        );
    }

    // Every bench still beating stops at once: the watch is deaf. It holds
    // the two that were online as late and says its ingest is down; the
    // offline fallback stands down, and the ingest fallback goes pending.
    for bench in ["w1-a", "w1-b", MAINT] {
        rig.beater.kill(bench);
    }
    let ingest = substitute(
        &panel("benchtel-fleet", "Ingest up").queries[0].expr,
        &WATCH_VARS,
    );
    eventually("Ingest up to show 0", async || {
        match instant(&api, &ingest).await?.as_slice() {
            [(_, v)] if *v == 0.0 => Ok(()),
            other => Err(format!("it shows {other:?}")),
        }
    })
    .await;
    liveness_stats_reach(&api, [0.0, 2.0, 3.0, 1.0], "with the watch deaf").await;
    fallback_pending_for(&api, &[]).await;
    let addr = rig.watch.addr();
    eventually(
        "BenchWatchIngestDownFallback pending for the watch",
        async || {
            let alerts =
                instant(&api, r#"ALERTS{alertname="BenchWatchIngestDownFallback"}"#).await?;
            let got = by(&alerts, &["job", "instance", "alertstate"]);
            let want = BTreeMap::from([(format!("benchtel-watch/{addr}/pending"), 1.0)]);
            if got == want {
                Ok(())
            } else {
                Err(format!("it is {got:?}"))
            }
        },
    )
    .await;
    eventually("BenchWatchIngestDown in Alertmanager", async || {
        let watches: Vec<Value> = rig
            .am
            .active("BenchWatchIngestDown")
            .iter()
            .map(|a| a["labels"]["watch"].clone())
            .collect();
        if watches == [json!("test-watch")] {
            Ok(())
        } else {
            Err(format!("for {watches:?}"))
        }
    })
    .await;

    // Every rule evaluated the watch's real series without error, and the
    // watch, scraped all along, raised none of the rules for a lost watch.
    let body = api.get("/api/v1/rules", &[]).await.unwrap();
    for r in body["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        assert_eq!(
            r["health"], "ok",
            "rule {} fails on the watch's series: {}",
            r["name"], r["lastError"]
        );
    }
    let lost = instant(
        &api,
        r#"ALERTS{alertname=~"BenchtelWatchDown|BenchtelWatchMetricsAbsent"}"#,
    )
    .await
    .unwrap();
    assert!(lost.is_empty(), "{lost:?}");
}

// ---------------------------------------------------------------------------
// Alertmanager.

/// The example configuration with its placeholder receivers pointed at a
/// closed port on this machine, so that nothing leaves it.
fn alertmanager_config(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("deploy/alertmanager/alertmanager.yml"))
        .unwrap()
        .replace(
            "alert-gateway.example.invalid",
            &format!("127.0.0.1:{}", support::free_port()),
        );
    for line in text.lines().filter(|l| l.contains("url:")) {
        assert!(
            line.contains("http://127.0.0.1:"),
            "left pointing away: {line}"
        );
    }
    let path = dir.join("alertmanager.yml");
    std::fs::write(&path, text).unwrap();
    path
}

fn alert(labels: &[(&str, &str)], starts: SystemTime, ends: Option<SystemTime>) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let mut a = json!({
        "labels": labels,
        "annotations": {"summary": "from tests/deploy.rs"},
        "startsAt": humantime::format_rfc3339_millis(starts).to_string(),
        "generatorURL": "http://127.0.0.1/tests/deploy.rs",
    });
    if let Some(ends) = ends {
        a["endsAt"] = json!(humantime::format_rfc3339_millis(ends).to_string());
    }
    a
}

async fn post_alerts(api: &Api, alerts: &[Value]) {
    let url = format!("{}/api/v2/alerts", api.base);
    let resp = api
        .client
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_string(alerts).unwrap())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        resp.text().await.unwrap()
    );
}

/// (alertname, bench_id or "") -> inhibited, for the alerts Alertmanager
/// holds now.
async fn inhibited(api: &Api) -> Vec<(String, String, bool)> {
    let body = api.get("/api/v2/alerts", &[]).await.unwrap();
    body.as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let label = |k: &str| a["labels"][k].as_str().unwrap_or("").to_string();
            let by = a["status"]["inhibitedBy"]
                .as_array()
                .is_some_and(|b| !b.is_empty());
            (label("alertname"), label("bench_id"), by)
        })
        .collect()
}

/// Waits until every (alertname, bench_id, inhibited) in `want` holds at
/// once, and returns that snapshot.
async fn wait_inhibitions(api: &Api, want: &[(&str, &str, bool)], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = inhibited(api).await;
        let holds = |(name, bench, inh): &(&str, &str, bool)| {
            now.iter()
                .any(|(n, b, i)| n == name && b == bench && i == inh)
        };
        if want.iter().all(holds) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: wanted {want:?}, Alertmanager has {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_example_inhibits_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let am = Alertmanager::from_file(&alertmanager_config(dir.path()));
    let api = Api::new(am.url());
    let t0 = SystemTime::now() - Duration::from_secs(60);
    let offline = |bench: &str, site: &str, outage: &str| {
        alert(
            &[
                ("alertname", "BenchOffline"),
                ("bench_id", bench),
                ("bench_site", site),
                ("severity", "critical"),
                ("site_outage", outage),
            ],
            t0,
            None,
        )
    };
    let site_down = |ends| {
        alert(
            &[
                ("alertname", "BenchSiteOffline"),
                ("bench_site", "lab1"),
                ("severity", "critical"),
            ],
            t0,
            ends,
        )
    };
    let check_down = |bench: &str| {
        alert(
            &[
                ("alertname", "BenchCheckDown"),
                ("bench_id", bench),
                ("bench_site", "lab1"),
                ("check", "dut-console"),
                ("severity", "warning"),
            ],
            t0,
            None,
        )
    };
    let fallback = alert(
        &[
            ("alertname", "BenchOfflineFallback"),
            ("bench_id", "b2"),
            ("bench_site", "lab1"),
            ("severity", "critical"),
        ],
        t0,
        None,
    );
    // Alertmanager answers before it is ready to take alerts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.text(&format!("{}/-/ready", am.url())).await.is_none() {
        assert!(Instant::now() < deadline, "{}", am.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A site outage: lab1 is down; b1 is counted in it, b2 went offline on
    // its own, b3 is at another site.
    post_alerts(
        &api,
        &[
            site_down(None),
            offline("b1", "lab1", "true"),
            offline("b2", "lab1", "false"),
            offline("b3", "lab2", "true"),
            fallback,
            check_down("b2"),
            check_down("b4"),
        ],
    )
    .await;
    wait_inhibitions(
        &api,
        &[
            ("BenchOffline", "b1", true),
            ("BenchOfflineFallback", "b2", true),
            ("BenchCheckDown", "b2", true),
            ("BenchSiteOffline", "", false),
            ("BenchOffline", "b2", false),
            ("BenchOffline", "b3", false),
            ("BenchCheckDown", "b4", false),
        ],
        "during the site outage",
    )
    .await;

    // The site comes back: b1 is paged for on its own again.
    post_alerts(&api, &[site_down(Some(SystemTime::now()))]).await;
    wait_inhibitions(
        &api,
        &[("BenchOffline", "b1", false), ("BenchOffline", "b2", false)],
        "after the site outage",
    )
    .await;

    // A watch hears nothing at all: the Prometheus fallback (which sees
    // every heartbeat age grow) is inhibited, the watch's own BenchOffline
    // (from a replica that still hears) is not.
    post_alerts(
        &api,
        &[
            alert(
                &[
                    ("alertname", "BenchWatchIngestDown"),
                    ("severity", "critical"),
                    ("watch", "w1"),
                ],
                t0,
                None,
            ),
            alert(
                &[
                    ("alertname", "BenchOfflineFallback"),
                    ("severity", "critical"),
                    ("bench_id", "b4"),
                    ("bench_site", "lab2"),
                ],
                t0,
                None,
            ),
        ],
    )
    .await;
    wait_inhibitions(
        &api,
        &[
            ("BenchOffline", "b1", false),
            ("BenchOffline", "b2", false),
            ("BenchOffline", "b3", false),
            ("BenchOfflineFallback", "b4", true),
            ("BenchWatchIngestDown", "", false),
        ],
        "while a watch's ingest is down",
    )
    .await;
}

#[test]
fn alertmanager_example_routes_by_severity() {
    let amtool = support::require("amtool", "apt-get install prometheus-alertmanager");
    let config = repo().join("deploy/alertmanager/alertmanager.yml");
    for (labels, receiver) in [
        (
            &["alertname=BenchOffline", "severity=critical"][..],
            "pager",
        ),
        (
            &["alertname=BenchtelWatchDown", "severity=critical"][..],
            "pager",
        ),
        (
            &["alertname=BenchCheckDown", "severity=warning"][..],
            "tickets",
        ),
        (&["alertname=Something", "severity=info"][..], "blackhole"),
        (&["alertname=Unlabelled"][..], "tickets"),
    ] {
        let out = Command::new(&amtool)
            .args(["config", "routes", "test"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--verify.receivers={receiver}"))
            .args(labels)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{labels:?} should go to {receiver}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

//! `deploy/` against real programs.
//!
//! A real agent (with real checks, a serial probe and a console watcher on
//! simulated firmware) is scraped every second by a real Prometheus that
//! loads `deploy/prometheus/benchtel-rules.yml`. Every Grafana panel's query
//! runs there with its template variables filled in: the panels the agent
//! feeds must show data; the rules must load and evaluate without error;
//! every metric name the rules and dashboards use must be one the agent
//! really exports or one benchtel-watch serves. The Alertmanager example
//! runs in a real Alertmanager, which must route and inhibit as its
//! comments say.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use support::alertmanager::Alertmanager;
use support::firmware::{Behaviour, Firmware};
use support::prometheus::Prometheus;

const AGENT: &str = env!("CARGO_BIN_EXE_benchtel-agent");
const BENCH: &str = "deploy-bench";
const SITE: &str = "deploy-lab";

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
    /// failing check makes BenchCheckDown pending.
    Rules,
    /// benchtel-watch's /metrics.
    Watch,
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

/// What benchtel-watch serves on its /metrics (its own issue defines them).
const WATCH_METRICS: &[&str] = &[
    "bench_heartbeat_age_seconds",
    "bench_last_heartbeat_timestamp_seconds",
    "bench_up",
    "bench_liveness",
    "bench_state",
    "bench_clock_skew_seconds",
    "benchtel_watch_alerts_total",
    "benchtel_watch_ingest_up",
    "benchtel_watch_heartbeats_total",
    "benchtel_watch_rejected_total",
    "benchtel_watch_alert_sends_total",
    "benchtel_watch_benches",
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

/// Every panel (rows aside) with its queries; checks on the way that each
/// panel and query uses the `datasource` variable.
fn panels() -> Vec<Panel> {
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        let uid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no uid"));
        for p in d["panels"].as_array().unwrap() {
            if p["type"] == "row" {
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

/// Fills in Grafana's variables as Grafana would for a 1 s scrape interval.
fn substitute(expr: &str) -> String {
    let vars = [
        ("$__rate_interval", "1m"),
        ("$__interval", "15s"),
        ("$__range", "5m"),
        ("$bench_site", SITE),
        ("$bench_id", BENCH),
    ];
    let mut out = expr.to_string();
    for (name, value) in vars {
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
    let found: BTreeSet<(String, String)> = panels()
        .iter()
        .map(|p| {
            p.source();
            (p.dashboard.clone(), p.title.clone())
        })
        .collect();
    assert_eq!(found.len(), panels().len(), "two panels share a title");
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
    _dir: tempfile::TempDir,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An agent with fast intervals, a check that passes, one that fails, a
/// serial probe that reads a firmware version and a console watcher, and no
/// collector (its outbox fills and its exports are retried).
fn start_agent(version_port: &Path, console_port: &Path) -> AgentProcess {
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let closed = format!("127.0.0.1:{}", support::free_port());
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[bench]
id = "{BENCH}"
site = "{SITE}"

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
    let child = Command::new(AGENT)
        .arg("--config")
        .arg(&config)
        .env_remove("BENCHTEL_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("NOTIFY_SOCKET")
        .env("STATE_DIRECTORY", dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    AgentProcess {
        child,
        metrics,
        _dir: dir,
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_panels_rules_and_names_work_against_a_real_agent_and_prometheus() {
    let panels = panels();
    let firmware = Firmware::start(Behaviour::ZephyrShell);
    let console = Firmware::start(Behaviour::Hang);
    let agent = start_agent(&firmware.port(), &console.port());
    let rules = rules_file();
    let prom = Prometheus::start(&[("benchtel-agent", &agent.metrics)], &[&rules]);
    let api = Api::new(prom.url());
    boot_until_recorded(&api, &agent, &console).await;
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
        };
        for q in &panel.queries {
            let expr = substitute(&q.expr);
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
    let expr = substitute(&state.queries[0].expr);
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

    // Every metric name in the rules and the dashboards is one the agent
    // exports (seen in Prometheus) or one benchtel-watch serves.
    let mut names = BTreeSet::new();
    for r in &loaded {
        names.extend(metric_names(r["query"].as_str().unwrap()));
    }
    for p in &panels {
        for q in &p.queries {
            names.extend(metric_names(&q.expr));
        }
    }
    for v in variables() {
        names.extend(metric_names(&v.query));
    }
    let host_dependent: Vec<&str> = PANELS
        .iter()
        .filter_map(|(_, _, s)| match s {
            AgentIfExported(m) => Some(*m),
            _ => None,
        })
        .collect();
    let mut unknown = Vec::new();
    for name in &names {
        if WATCH_METRICS.contains(&name.as_str()) {
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
         nor benchtel-watch serves: {unknown:?}"
    );
}

/// benchtel-watch does not serve its metrics yet: its panels are only
/// checked to be queries Prometheus accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_panels_are_valid_promql() {
    // TODO(watch): once benchtel-watch serves its /metrics, start it
    // (CARGO_BIN_EXE_benchtel-watch) with a Mosquitto broker
    // (tests/support/mosquitto.rs), publish heartbeats for two benches of a
    // site, let this Prometheus scrape it with the rules loaded, stop one
    // bench, and assert that every Watch panel shows data (as the agent test
    // does), that bench:heartbeat_age_seconds grows for the silent bench, and
    // that BenchOfflineFallback goes pending for it and for it only.
    let prom = Prometheus::start(&[], &[&rules_file()]);
    let api = Api::new(prom.url());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut checked = 0;
    for panel in panels().iter().filter(|p| p.source() == Watch) {
        for q in &panel.queries {
            let expr = substitute(&q.expr);
            let result = loop {
                if let Some(r) = api.query(&expr, q.instant).await {
                    break r;
                }
                assert!(Instant::now() < deadline, "prometheus does not answer");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            if let Err(e) = result {
                panic!(
                    "panel \"{}\" ({}) query {}: Prometheus refused it: {e}\n{expr}",
                    panel.title, panel.dashboard, q.ref_id
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} watch queries");
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

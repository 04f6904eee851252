//! Logs and traces for Loki and Tempo users, against a real agent.
//!
//! - The agent's JSON lines carry `bench_id` and `bench_site`, and the
//!   example Grafana Alloy pipeline (`deploy/loki/benchtel-agent.alloy`),
//!   read by a small parser of its own syntax and applied stage by stage to
//!   the lines a real agent wrote, labels every one of them by bench and
//!   level only, and keeps the ids as structured metadata. No Alloy or
//!   Promtail binary is packaged for this machine (Debian has neither), so
//!   the test is the stages' documented semantics, applied by hand: a stage
//!   or an expression it does not know fails it.
//! - The Grafana data sources (`deploy/grafana/provisioning`) link Loki and
//!   Tempo both ways through names the pipeline and the agent's spans
//!   really carry, and the dashboards' Loki and Tempo panels select on them.
//! - `[telemetry] traces = false`: a running agent commits no span, while
//!   spans are committed with it on; a wrong type is a config error.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use serde_json::Value;
use support::agent::{AGENT, Agent, Bench, committed_bodies};

const BENCH: &str = "loki-bench-3";
const SITE: &str = "loki-lab";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// Alloy's configuration syntax, as much of it as the example uses: blocks
// with an optional label, attributes, strings, numbers, lists, objects,
// references (`loki.process.x.receiver`) and calls (`sys.env("X")`).

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Str(String),
    Num(String),
    Ref(String),
    Call(String, Vec<Expr>),
    List(Vec<Expr>),
    Object(Vec<(String, Expr)>),
}

#[derive(Debug, Default)]
struct Block {
    name: String,
    label: Option<String>,
    attrs: Vec<(String, Expr)>,
    blocks: Vec<Block>,
}

impl Block {
    fn attr(&self, key: &str) -> Option<&Expr> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn str_attr(&self, key: &str) -> String {
        match self.attr(key) {
            Some(Expr::Str(s)) => s.clone(),
            other => panic!("{}: {key} is not a string: {other:?}", self.name),
        }
    }

    /// An attribute that is an object of strings, in file order.
    fn map_attr(&self, key: &str) -> Vec<(String, String)> {
        match self.attr(key) {
            Some(Expr::Object(entries)) => entries
                .iter()
                .map(|(k, v)| match v {
                    Expr::Str(s) => (k.clone(), s.clone()),
                    other => panic!("{}: {key}.{k} is not a string: {other:?}", self.name),
                })
                .collect(),
            other => panic!("{}: {key} is not an object: {other:?}", self.name),
        }
    }

    fn refs(&self, key: &str) -> Vec<String> {
        match self.attr(key) {
            Some(Expr::List(items)) => items
                .iter()
                .map(|i| match i {
                    Expr::Ref(r) => r.clone(),
                    other => panic!("{}: {key} holds {other:?}", self.name),
                })
                .collect(),
            other => panic!("{}: {key} is not a list: {other:?}", self.name),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Punct(char),
}

fn tokenize(text: &str) -> Vec<Tok> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let end = text[i..].find("*/").expect("unterminated /* comment");
            i += end + 2;
        } else if c == '"' {
            let mut s = String::new();
            i += 1;
            while chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                    s.push(match chars[i] {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                } else {
                    s.push(chars[i]);
                }
                i += 1;
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else if "{}[]()=,.".contains(c) {
            out.push(Tok::Punct(c));
            i += 1;
        } else {
            panic!("unexpected {c:?} at char {i} of the Alloy file");
        }
    }
    out
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Tok {
        let t = self.toks[self.at].clone();
        self.at += 1;
        t
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) {
        let t = self.next();
        assert_eq!(t, Tok::Punct(c), "at token {}", self.at);
    }

    /// `a.b.c`
    fn path(&mut self) -> String {
        let Tok::Ident(mut name) = self.next() else {
            panic!("a name expected at token {}", self.at - 1)
        };
        while self.eat('.') {
            let Tok::Ident(part) = self.next() else {
                panic!("a name expected after '.'")
            };
            name = format!("{name}.{part}");
        }
        name
    }

    fn body(&mut self) -> Block {
        let mut block = Block::default();
        while let Some(t) = self.peek() {
            if *t == Tok::Punct('}') {
                break;
            }
            let name = self.path();
            if self.eat('=') {
                let value = self.expr();
                block.attrs.push((name, value));
                continue;
            }
            let label = match self.peek() {
                Some(Tok::Str(_)) => match self.next() {
                    Tok::Str(s) => Some(s),
                    _ => unreachable!(),
                },
                _ => None,
            };
            self.expect('{');
            let mut inner = self.body();
            self.expect('}');
            inner.name = name;
            inner.label = label;
            block.blocks.push(inner);
        }
        block
    }

    fn expr(&mut self) -> Expr {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.at += 1;
                Expr::Str(s)
            }
            Some(Tok::Num(n)) => {
                self.at += 1;
                Expr::Num(n)
            }
            Some(Tok::Punct('[')) => {
                self.at += 1;
                let mut items = Vec::new();
                while !self.eat(']') {
                    items.push(self.expr());
                    self.eat(',');
                }
                Expr::List(items)
            }
            Some(Tok::Punct('{')) => {
                self.at += 1;
                let mut entries = Vec::new();
                while !self.eat('}') {
                    let key = match self.next() {
                        Tok::Ident(k) | Tok::Str(k) => k,
                        other => panic!("an object key expected, got {other:?}"),
                    };
                    self.expect('=');
                    entries.push((key, self.expr()));
                    self.eat(',');
                }
                Expr::Object(entries)
            }
            Some(Tok::Ident(_)) => {
                let name = self.path();
                if self.eat('(') {
                    let mut args = Vec::new();
                    while !self.eat(')') {
                        args.push(self.expr());
                        self.eat(',');
                    }
                    Expr::Call(name, args)
                } else {
                    Expr::Ref(name)
                }
            }
            other => panic!("an expression expected, got {other:?}"),
        }
    }
}

fn parse_alloy(text: &str) -> Vec<Block> {
    let mut p = Parser {
        toks: tokenize(text),
        at: 0,
    };
    let top = p.body();
    assert_eq!(p.at, p.toks.len(), "stray tokens after the last block");
    top.blocks
}

// ---------------------------------------------------------------------------
// The example pipeline, and what it does to one line.

/// A `loki.process` stage this test knows how to apply.
#[derive(Debug)]
enum Stage {
    /// stage.json: output key -> JMESPath (a dotted path here).
    Json(Vec<(String, String)>),
    /// stage.labels: label -> extracted key.
    Labels(Vec<(String, String)>),
    /// stage.structured_metadata: key -> extracted key.
    Metadata(Vec<(String, String)>),
    /// stage.timestamp: extracted key, Go layout name.
    Timestamp(String, String),
}

struct Pipeline {
    /// `matches` of the journal source.
    matches: String,
    static_labels: Vec<(String, String)>,
    stages: Vec<Stage>,
}

/// What Loki gets for one line.
#[derive(Debug, Default)]
struct Entry {
    labels: BTreeMap<String, String>,
    metadata: BTreeMap<String, String>,
    timestamp: Option<String>,
}

/// "" means the key itself (Alloy's rule for empty values).
fn or_key(key: &str, value: &str) -> String {
    if value.is_empty() {
        key.to_string()
    } else {
        value.to_string()
    }
}

fn alloy_pipeline() -> Pipeline {
    let path = repo().join("deploy/loki/benchtel-agent.alloy");
    let blocks = parse_alloy(&std::fs::read_to_string(&path).unwrap());
    let find = |name: &str| -> &Block {
        let found: Vec<&Block> = blocks.iter().filter(|b| b.name == name).collect();
        assert_eq!(found.len(), 1, "{}: one {name} expected", path.display());
        found[0]
    };
    let source = find("loki.source.journal");
    let process = find("loki.process");
    let write = find("loki.write");
    // The components are wired to each other, in this order.
    let receiver = |b: &Block| format!("{}.{}.receiver", b.name, b.label.as_deref().unwrap());
    assert_eq!(source.refs("forward_to"), [receiver(process)]);
    assert_eq!(process.refs("forward_to"), [receiver(write)]);
    assert_eq!(write.blocks.len(), 1, "loki.write needs one endpoint");
    assert!(write.blocks[0].attr("url").is_some());
    let stages = process
        .blocks
        .iter()
        .map(|b| match b.name.as_str() {
            "stage.json" => Stage::Json(b.map_attr("expressions")),
            "stage.labels" => Stage::Labels(b.map_attr("values")),
            "stage.structured_metadata" => Stage::Metadata(b.map_attr("values")),
            "stage.timestamp" => Stage::Timestamp(b.str_attr("source"), b.str_attr("format")),
            other => panic!("{other} in the example: tests/deploy_logs.rs cannot apply it"),
        })
        .collect();
    Pipeline {
        matches: source.str_attr("matches"),
        static_labels: source.map_attr("labels"),
        stages,
    }
}

/// A JMESPath of plain dotted names on a JSON value; null is "not found".
fn search(line: &Value, path: &str) -> Option<String> {
    assert!(
        path.split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')),
        "JMESPath {path:?}: only dotted names are understood here"
    );
    let v = path.split('.').try_fold(line, |v, p| v.get(p))?;
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl Pipeline {
    fn apply(&self, line: &str) -> Entry {
        let json: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stage.json cannot parse this line ({e}): {line}"));
        let mut extracted: BTreeMap<String, String> = BTreeMap::new();
        let mut entry = Entry::default();
        for (k, v) in &self.static_labels {
            entry.labels.insert(k.clone(), v.clone());
        }
        let copy = |pairs: &[(String, String)],
                    into: &mut BTreeMap<String, String>,
                    from: &BTreeMap<String, String>| {
            for (key, source) in pairs {
                if let Some(v) = from.get(&or_key(key, source)).filter(|v| !v.is_empty()) {
                    into.insert(key.clone(), v.clone());
                }
            }
        };
        for stage in &self.stages {
            match stage {
                Stage::Json(exprs) => {
                    for (key, expr) in exprs {
                        if let Some(v) = search(&json, &or_key(key, expr)) {
                            extracted.insert(key.clone(), v);
                        }
                    }
                }
                Stage::Labels(pairs) => copy(pairs, &mut entry.labels, &extracted),
                Stage::Metadata(pairs) => copy(pairs, &mut entry.metadata, &extracted),
                Stage::Timestamp(source, format) => {
                    assert!(
                        ["RFC3339", "RFC3339Nano"].contains(&format.as_str()),
                        "timestamp format {format}"
                    );
                    entry.timestamp = extracted.get(source).cloned();
                }
            }
        }
        entry
    }

    fn label_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> =
            self.static_labels.iter().map(|(k, _)| k.clone()).collect();
        for s in &self.stages {
            if let Stage::Labels(pairs) = s {
                names.extend(pairs.iter().map(|(k, _)| k.clone()));
            }
        }
        names
    }

    fn metadata_names(&self) -> BTreeSet<String> {
        self.stages
            .iter()
            .filter_map(|s| match s {
                Stage::Metadata(pairs) => Some(pairs.iter().map(|(k, _)| k.clone())),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn json_paths(&self) -> Vec<String> {
        self.stages
            .iter()
            .filter_map(|s| match s {
                Stage::Json(exprs) => Some(exprs.iter().map(|(k, e)| or_key(k, e))),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

/// Labels a Loki user may select on: few values each.
const LOW_CARDINALITY: &[&str] = &["service_name", "bench_id", "bench_site", "level"];
/// Keys with a new value per run, job or line: never labels.
const PER_RUN: &[&str] = &[
    "trace_id",
    "span_id",
    "execution_id",
    "task_id",
    "correlation_id",
    "timestamp",
    "message",
];

// ---------------------------------------------------------------------------
// A real agent writing JSON lines.

/// A bench whose agent logs JSON, with a check that fails (a closed port)
/// and one that passes; `extra_telemetry` goes into `[telemetry]`.
fn json_bench(extra_telemetry: &str) -> Bench {
    let closed = support::free_port();
    let checks = format!(
        r#"
[[checks]]
name = "instrument"
type = "tcp"
address = "127.0.0.1:{closed}"
interval = "100ms"
timeout = "1s"

[[checks]]
name = "tool"
type = "exec"
command = "true"
interval = "100ms"
"#
    );
    let bench = Bench::new("100ms", &checks);
    let text = std::fs::read_to_string(&bench.cfg)
        .unwrap()
        .replace(r#"id = "test-bench""#, &format!(r#"id = "{BENCH}""#))
        .replace(r#"site = "lab""#, &format!(r#"site = "{SITE}""#))
        .replace(r#"format = "text""#, r#"format = "json""#)
        .replace("[telemetry]\n", &format!("[telemetry]\n{extra_telemetry}"));
    assert!(text.contains(BENCH) && text.contains(r#"format = "json""#));
    std::fs::write(&bench.cfg, text).unwrap();
    bench
}

fn outbox_of(cfg: &Path) -> PathBuf {
    let text = std::fs::read_to_string(cfg).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("path = ") && l.contains("outbox"))
        .unwrap();
    PathBuf::from(line.trim_start_matches("path = ").trim_matches('"'))
}

fn text_of(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> Option<String> {
    match v.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        other => Some(format!("{other:?}")),
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| text_of(&kv.value))
}

/// A committed span: its resource's bench.id, name, failed, attributes.
struct Span {
    bench: Option<String>,
    name: String,
    failed: bool,
    attrs: Vec<KeyValue>,
}

fn committed_spans(db: &Path) -> Vec<Span> {
    let mut out = Vec::new();
    for body in committed_bodies(db, 3) {
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        for rs in req.resource_spans {
            let bench = rs
                .resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, "bench.id"));
            for s in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                out.push(Span {
                    bench: bench.clone(),
                    failed: s
                        .status
                        .as_ref()
                        .is_some_and(|st| st.code == StatusCode::Error as i32),
                    name: s.name,
                    attrs: s.attributes,
                });
            }
        }
    }
    out
}

/// Runs a JSON-logging agent until its failing check went down and has run
/// `runs` times, with an execution context set on the way; stops it with
/// SIGTERM. Its stdout lines and its outbox file.
fn run_json_agent(extra_telemetry: &str, runs: f64) -> (Vec<String>, PathBuf, Bench) {
    let bench = json_bench(extra_telemetry);
    let agent: Agent = bench.start();
    agent.wait_line(
        &["health check down", "instrument"],
        Duration::from_secs(30),
    );
    bench.cli(&[
        "context",
        "set",
        "--execution-id",
        "ex-42",
        "--task-id",
        "t-7",
    ]);
    agent.wait_line(&["execution context set", "ex-42"], Duration::from_secs(30));
    agent.wait_metric(
        "bench_health_check_duration_seconds_count",
        &[("check", "instrument")],
        Duration::from_secs(30),
        |n| n >= runs,
    );
    let db = outbox_of(&bench.cfg);
    let (status, err) = agent.terminate();
    assert!(status.success(), "{err}");
    // Its stdout, shutdown lines included: the one log file beside the
    // config (the agent, consumed by terminate, can no longer read it).
    let dir = bench.cfg.parent().unwrap();
    let logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let text = std::fs::read_to_string(&logs[0]).unwrap();
    (text.lines().map(str::to_string).collect(), db, bench)
}

#[test]
fn the_alloy_example_labels_real_agent_lines_by_bench_and_level_only() {
    let pipeline = alloy_pipeline();
    assert_eq!(pipeline.matches, "_SYSTEMD_UNIT=benchtel-agent.service");
    let (lines, _db, _bench) = run_json_agent("", 3.0);
    assert!(lines.len() >= 4, "{lines:?}");

    // Every line is an ADR-010 object with the bench on it.
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["bench_id"], BENCH, "{line}");
        assert_eq!(v["bench_site"], SITE, "{line}");
    }

    // The pipeline reads keys the agent writes: each top-level one on every
    // line, each nested one on at least one.
    for path in pipeline.json_paths() {
        let parsed: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if path.contains('.') {
            assert!(
                parsed.iter().any(|v| search(v, &path).is_some()),
                "no agent line has {path}"
            );
        } else {
            for v in &parsed {
                assert!(v.get(&path).is_some(), "a line without {path}: {v}");
            }
        }
    }

    // Labels: bench and level on every line, nothing per run, few streams.
    let names = pipeline.label_names();
    for required in ["bench_id", "level"] {
        assert!(
            names.contains(required),
            "{required} is not a label: {names:?}"
        );
    }
    for n in &names {
        assert!(
            LOW_CARDINALITY.contains(&n.as_str()),
            "label {n} is not low-cardinality"
        );
        assert!(!PER_RUN.contains(&n.as_str()), "label {n} changes per run");
    }
    let entries: Vec<Entry> = lines.iter().map(|l| pipeline.apply(l)).collect();
    let mut streams = BTreeSet::new();
    for (line, e) in lines.iter().zip(&entries) {
        assert_eq!(
            e.labels.get("bench_id").map(String::as_str),
            Some(BENCH),
            "{line}"
        );
        assert_eq!(
            e.labels.get("bench_site").map(String::as_str),
            Some(SITE),
            "{line}"
        );
        let level = e.labels.get("level").map(String::as_str);
        assert!(
            matches!(level, Some("ERROR" | "WARN" | "INFO" | "DEBUG" | "TRACE")),
            "level {level:?}: {line}"
        );
        let ts = e
            .timestamp
            .as_deref()
            .unwrap_or_else(|| panic!("no timestamp: {line}"));
        humantime::parse_rfc3339(ts).unwrap_or_else(|err| panic!("{ts}: {err}"));
        streams.insert(e.labels.clone());
    }
    assert!(
        streams.len() <= 5,
        "one stream per level at most: {streams:?}"
    );

    // Structured metadata: the ids and the check, from the lines that have
    // them.
    let meta = pipeline.metadata_names();
    for key in ["trace_id", "span_id", "execution_id", "check"] {
        assert!(
            meta.contains(key),
            "{key} is not structured metadata: {meta:?}"
        );
    }
    let down = entries
        .iter()
        .zip(&lines)
        .find(|(_, l)| l.contains("health check down"))
        .map(|(e, _)| e)
        .unwrap();
    assert_eq!(
        down.metadata.get("check").map(String::as_str),
        Some("instrument")
    );
    assert_eq!(
        down.metadata.get("code").map(String::as_str),
        Some("connection_failed")
    );
    assert_eq!(down.labels.get("level").map(String::as_str), Some("WARN"));
    let in_job: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.metadata.get("execution_id").map(String::as_str) == Some("ex-42"))
        .collect();
    assert!(!in_job.is_empty(), "no line carries the execution context");
    assert!(
        in_job
            .iter()
            .all(|e| e.metadata.get("task_id").map(String::as_str) == Some("t-7"))
    );
    // The verdict line links to the run that changed it, and a line logged
    // inside a span carries its ids as metadata, never as a label.
    assert_eq!(
        down.metadata.get("trace_id").map(String::len),
        Some(32),
        "the verdict line is not linked to its run"
    );
    for (line, e) in lines.iter().zip(&entries) {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            e.metadata.get("trace_id").map(String::as_str),
            v["trace_id"].as_str(),
            "{line}"
        );
    }
}

// ---------------------------------------------------------------------------
// Grafana: data sources and the Loki and Tempo panels.

/// A YAML file as JSON, through PyYAML (scripts/test installs it).
fn yaml(path: &Path) -> Value {
    let python = support::require("python3", "apt-get install python3 python3-yaml");
    let out = Command::new(python)
        .args([
            "-c",
            "import sys, json, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {} (install python3-yaml)",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every provisioned data source, and the raw text of each file.
fn datasources() -> (Vec<Value>, String) {
    let dir = repo().join("deploy/grafana/provisioning/datasources");
    let mut all = Vec::new();
    let mut text = String::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            let doc = yaml(&path);
            assert_eq!(doc["apiVersion"], 1, "{}", path.display());
            all.extend(doc["datasources"].as_array().unwrap().iter().cloned());
            text.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    (all, text)
}

fn by_type<'a>(all: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = all.iter().filter(|d| d["type"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} data source expected");
    found[0]
}

/// (panel title, data source type, query) of every Loki and Tempo query.
fn logs_and_traces_queries() -> Vec<(String, String, String)> {
    let path = repo().join("deploy/grafana/dashboards/benchtel-bench.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        let kind = p["datasource"]["type"].as_str().unwrap_or("");
        if !["loki", "tempo"].contains(&kind) {
            continue;
        }
        for t in p["targets"].as_array().unwrap() {
            let q = if kind == "loki" {
                &t["expr"]
            } else {
                &t["query"]
            };
            out.push((
                p["title"].as_str().unwrap().to_string(),
                kind.to_string(),
                q.as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

#[test]
fn grafana_links_logs_and_traces_through_names_the_pipeline_and_the_agent_really_use() {
    let (all, text) = datasources();
    let loki = by_type(&all, "loki");
    let tempo = by_type(&all, "tempo");
    let pipeline = alloy_pipeline();
    let labels = pipeline.label_names();
    let meta = pipeline.metadata_names();

    // Provisioning expands $VAR and ${VAR} from the environment: Grafana's
    // own ${__...} variables must be written $${__...}.
    let unescaped = regex::Regex::new(r"(^|[^$])\$\{__").unwrap();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        assert!(
            !unescaped.is_match(line),
            "unescaped Grafana variable: {line}"
        );
    }

    // Loki -> Tempo: a derived field on the trace_id the pipeline keeps.
    let fields = loki["jsonData"]["derivedFields"].as_array().unwrap();
    assert_eq!(fields.len(), 1, "{fields:?}");
    let f = &fields[0];
    assert_eq!(f["datasourceUid"], tempo["uid"]);
    assert_eq!(f["matcherType"], "label");
    let key = f["matcherRegex"].as_str().unwrap();
    assert!(
        meta.contains(key),
        "derived field on {key}, not kept by the pipeline"
    );
    assert_eq!(f["url"], "$${__value.raw}");

    // Tempo -> Loki: the span's bench as the pipeline's label, the trace id
    // as its structured metadata.
    let t2l = &tempo["jsonData"]["tracesToLogsV2"];
    assert_eq!(t2l["datasourceUid"], loki["uid"]);
    assert_eq!(
        tempo["jsonData"]["lokiSearch"]["datasourceUid"],
        loki["uid"]
    );
    let tags = t2l["tags"].as_array().unwrap();
    assert_eq!(tags.len(), 1);
    assert_eq!(tags[0]["key"], "bench.id");
    assert!(labels.contains(tags[0]["value"].as_str().unwrap()));
    assert_eq!(t2l["customQuery"], true);
    let query = t2l["query"].as_str().unwrap();
    assert!(query.starts_with("{$${__tags}}"), "{query}");
    assert!(
        query.contains(r#"| trace_id="$${__trace.traceId}""#),
        "{query}"
    );

    // The dashboard's Loki panels select on the pipeline's labels; its Tempo
    // panels on the span names and attributes of the contract.
    let queries = logs_and_traces_queries();
    assert!(queries.iter().any(|(_, k, _)| k == "loki"));
    let selector = regex::Regex::new(r#"([a-z_]+)\s*=~?\s*""#).unwrap();
    for (title, kind, q) in &queries {
        if kind == "loki" {
            let stream = q.split('}').next().unwrap();
            for c in selector.captures_iter(stream) {
                assert!(
                    labels.contains(&c[1]),
                    "\"{title}\" selects on {}, no label",
                    &c[1]
                );
            }
            assert!(stream.contains(r#"bench_id="$bench_id""#), "{title}: {q}");
        } else {
            assert!(
                q.contains(r#"resource.bench.id = "$bench_id""#),
                "{title}: {q}"
            );
        }
    }
    let boots = &queries
        .iter()
        .find(|(t, _, _)| t == "Last boots")
        .unwrap()
        .2;
    assert!(boots.contains(r#"name = "boot""#), "{boots}");
    let failed = &queries
        .iter()
        .find(|(t, _, _)| t == "Failed check runs")
        .unwrap()
        .2;
    assert!(failed.contains(r#"name =~ "check .*""#) && failed.contains("status = error"));
    assert!(failed.contains("select(span.check, span.code)"), "{failed}");
}

#[test]
fn the_failed_runs_panel_matches_the_spans_a_real_agent_commits() {
    let (_lines, db, _bench) = run_json_agent("", 3.0);
    let spans = committed_spans(&db);
    let name = regex::Regex::new("^check .*$").unwrap();
    let failed: Vec<&Span> = spans
        .iter()
        .filter(|s| s.failed && name.is_match(&s.name))
        .collect();
    assert!(failed.len() >= 3, "{} spans, none failed", spans.len());
    for s in &failed {
        assert_eq!(s.bench.as_deref(), Some(BENCH));
        assert_eq!(attr(&s.attrs, "check").as_deref(), Some("instrument"));
        assert_eq!(attr(&s.attrs, "code").as_deref(), Some("connection_failed"));
    }
}

// ---------------------------------------------------------------------------
// [telemetry] traces.

#[test]
fn with_traces_off_running_checks_commit_no_span_and_lines_carry_no_trace_id() {
    let (lines, db, _bench) = run_json_agent("traces = false\n", 5.0);
    assert!(
        lines.iter().any(|l| l.contains("traces=off")),
        "the start line does not say spans are off"
    );
    assert!(
        committed_spans(&db).is_empty(),
        "spans were committed with traces off"
    );
    // The other signals still are.
    assert!(!committed_bodies(&db, 1).is_empty(), "no metrics committed");
    assert!(!committed_bodies(&db, 2).is_empty(), "no logs committed");
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v["trace_id"].is_null(), "{line}");
    }
}

#[test]
fn a_traces_key_of_the_wrong_type_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, "[telemetry]\ntraces = \"no\"\n").unwrap();
    let out = Command::new(AGENT)
        .args(["validate", "--config"])
        .arg(&cfg)
        .env_remove("BENCHTEL_CONFIG")
        .env("STATE_DIRECTORY", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    let want = format!(r#"{}: telemetry.traces = "no": "#, cfg.display());
    assert!(err.contains(&want), "{want:?} not in:\n{err}");
}

#[test]
fn a_real_watch_names_the_bench_on_its_lines_about_one_and_null_elsewhere() {
    let watch = support::watch::Watch::start("");
    let beat = support::otlp::heartbeats("lab9", "wb-1", 7, &[(1, support::otlp::now_s())]);
    let (code, text) = watch.post_otlp(&beat.encode_to_vec(), &[]);
    assert_eq!(code, 200, "{text}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !watch.output().contains("new bench") {
        assert!(
            std::time::Instant::now() < deadline,
            "no \"new bench\" line:\n{}",
            watch.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines: Vec<Value> = watch
        .output()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for l in &lines {
        let o = l.as_object().unwrap();
        assert!(
            o.contains_key("bench_id") && o.contains_key("bench_site"),
            "{l}"
        );
    }
    let new = lines.iter().find(|l| l["message"] == "new bench").unwrap();
    assert_eq!(new["bench_id"], "wb-1", "{new}");
    assert_eq!(new["bench_site"], "lab9", "{new}");
    assert!(
        lines
            .iter()
            .any(|l| l["bench_id"].is_null() && l["bench_site"].is_null()),
        "no line without a bench (start-up)"
    );
}

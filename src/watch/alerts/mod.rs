//! Alerts out: the alerts the watch raises, and their delivery to every
//! configured Alertmanager (as Prometheus does it) and to JSON webhooks.
//!
//! Alertmanager keeps alerts in memory and resolves an alert whose `endsAt`
//! passed, so, like Prometheus: a firing alert is re-sent every
//! `resend_interval` with `endsAt` four intervals ahead (a watch that dies
//! lets its alerts expire instead of leaving them firing forever); a
//! resolution is sent at once with `endsAt` = the resolve time and re-sent
//! for `resolved_resend`, so a replica that missed it still learns it.
//! Identity is the label set, so two watch replicas that push the same
//! alert are deduplicated by Alertmanager.

pub mod alertmanager;
pub mod dispatch;
pub mod lifecycle;
pub mod webhook;

use std::collections::BTreeMap;

use serde::Serialize;

use super::clock::Ts;

pub const BENCH_OFFLINE: &str = "BenchOffline";
pub const SITE_OFFLINE: &str = "BenchSiteOffline";
pub const INGEST_DOWN: &str = "BenchWatchIngestDown";

/// One alert, as Alertmanager's v2 API takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: Ts,
    /// Set once resolved.
    pub resolved_at: Option<Ts>,
}

impl Alert {
    pub fn new(name: &str, starts_at: Ts) -> Alert {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), name.to_string());
        labels.insert("severity".to_string(), "critical".to_string());
        Alert {
            labels,
            annotations: BTreeMap::new(),
            starts_at,
            resolved_at: None,
        }
    }

    pub fn label(mut self, k: &str, v: impl Into<String>) -> Alert {
        self.labels.insert(k.to_string(), v.into());
        self
    }

    pub fn annotation(mut self, k: &str, v: impl Into<String>) -> Alert {
        self.annotations.insert(k.to_string(), v.into());
        self
    }

    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    /// The identity Alertmanager uses: the label set.
    pub fn identity(&self) -> String {
        self.labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// An alert that started firing or was resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Fired(Alert),
    Resolved(Alert),
}

impl Event {
    pub fn alert(&self) -> &Alert {
        match self {
            Event::Fired(a) | Event::Resolved(a) => a,
        }
    }

    pub fn state(&self) -> &'static str {
        match self {
            Event::Fired(_) => "firing",
            Event::Resolved(_) => "resolved",
        }
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ts: Ts) -> String {
    let d = std::time::Duration::try_from_secs_f64(ts.max(0.0)).unwrap_or_default();
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + d).to_string()
}

/// The JSON body element of `POST /api/v2/alerts`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: &'a str,
}

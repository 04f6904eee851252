//! The watch's own metrics (`benchtel_watch_*`), on the same `/metrics` as
//! the per-bench series.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct Stats {
    pub registry: Registry,
    /// `{transport, result}`: accepted, stale, duplicate, refused.
    pub heartbeats: IntCounterVec,
    /// `{transport, reason}`: messages and requests rejected as a whole.
    pub rejected: IntCounterVec,
    /// `{alertname, state}`: alerts that fired or resolved.
    pub alerts: IntCounterVec,
    /// `{receiver, result}`: deliveries to Alertmanagers and webhooks.
    pub sends: IntCounterVec,
    /// `{transport, result}`: status messages.
    pub statuses: IntCounterVec,
    /// `{result}`: heartbeat log records over OTLP (`/v1/logs`).
    pub reports: IntCounterVec,
    pub mqtt_connected: IntGauge,
    /// `{result}`: registry saves.
    pub registry_saves: IntCounterVec,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot register the watch's metrics: {0}")]
pub struct StatsError(#[from] prometheus::Error);

fn counter(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, StatsError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Stats {
    /// `mqtt`: whether MQTT ingest is configured; without it the session
    /// gauge is not exported (a 0 would read as "broker down").
    pub fn new(mqtt: bool) -> Result<Stats, StatsError> {
        let registry = Registry::new();
        let r = &registry;
        let mqtt_connected = IntGauge::new(
            "benchtel_watch_mqtt_connected",
            "1 while the watch's MQTT session is up (absent without MQTT)",
        )?;
        if mqtt {
            registry.register(Box::new(mqtt_connected.clone()))?;
        }
        Ok(Stats {
            heartbeats: counter(
                r,
                "benchtel_watch_heartbeats_total",
                "Heartbeats received, by transport and what they proved",
                &["transport", "result"],
            )?,
            rejected: counter(
                r,
                "benchtel_watch_rejected_total",
                "Messages or requests rejected, by transport and reason",
                &["transport", "reason"],
            )?,
            alerts: counter(
                r,
                "benchtel_watch_alerts_total",
                "Alerts that fired or resolved",
                &["alertname", "state"],
            )?,
            sends: counter(
                r,
                "benchtel_watch_alert_sends_total",
                "Alert deliveries by receiver and result",
                &["receiver", "result"],
            )?,
            statuses: counter(
                r,
                "benchtel_watch_statuses_total",
                "Status messages received, by transport and result",
                &["transport", "result"],
            )?,
            registry_saves: counter(
                r,
                "benchtel_watch_registry_saves_total",
                "Saves of the bench registry, by result",
                &["result"],
            )?,
            reports: counter(
                r,
                "benchtel_watch_log_reports_total",
                "Heartbeat log records received over OTLP, by result (accepted, stale, unknown_bench)",
                &["result"],
            )?,
            mqtt_connected,
            registry,
        })
    }
}

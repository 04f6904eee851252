//! What travels between agents and `benchtel-watch` over MQTT: the topic
//! names and the JSON payloads. Both sides use these types, so a change here
//! is a change of the protocol.
//!
//! Topics (`<site>` and `<bench>` are label-safe names, checked when the
//! configuration is loaded):
//! - `benchtel/<site>/<bench>/heartbeat`: [`Heartbeat`], QoS 1, not retained.
//! - `benchtel/<site>/<bench>/status`: [`Status`], retained; the agent's
//!   Last Will sets it to `offline` with reason `connection_lost`, a clean
//!   stop to `offline` with reason `shutdown`.
//! - `benchtel/<site>/<bench>/probe/<name>`: [`ProbeVerdict`], retained, on
//!   change.
//! - `benchtel/<site>/<bench>/cmd`: [`Command`]s to the agent.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub const ROOT: &str = "benchtel";

/// What a topic under [`ROOT`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    Heartbeat,
    Status,
    Probe(String),
    Command,
}

/// A topic split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub site: String,
    pub bench: String,
    pub channel: Channel,
}

impl Topic {
    pub fn heartbeat(site: &str, bench: &str) -> String {
        format!("{ROOT}/{site}/{bench}/heartbeat")
    }

    pub fn status(site: &str, bench: &str) -> String {
        format!("{ROOT}/{site}/{bench}/status")
    }

    pub fn probe(site: &str, bench: &str, probe: &str) -> String {
        format!("{ROOT}/{site}/{bench}/probe/{probe}")
    }

    pub fn command(site: &str, bench: &str) -> String {
        format!("{ROOT}/{site}/{bench}/cmd")
    }

    /// The subscription filter for one site's heartbeats and statuses, or
    /// every site's with `site = "+"`.
    pub fn filters(site: &str) -> [String; 2] {
        [
            format!("{ROOT}/{site}/+/heartbeat"),
            format!("{ROOT}/{site}/+/status"),
        ]
    }

    /// Splits a topic; `None` for anything that is not a benchtel topic.
    pub fn parse(topic: &str) -> Option<Topic> {
        let mut parts = topic.split('/');
        if parts.next()? != ROOT {
            return None;
        }
        let site = parts.next().filter(|s| !s.is_empty())?.to_string();
        let bench = parts.next().filter(|s| !s.is_empty())?.to_string();
        let channel = match (parts.next()?, parts.next(), parts.next()) {
            ("heartbeat", None, _) => Channel::Heartbeat,
            ("status", None, _) => Channel::Status,
            ("cmd", None, _) => Channel::Command,
            ("probe", Some(name), None) if !name.is_empty() => Channel::Probe(name.to_string()),
            _ => return None,
        };
        Some(Topic {
            site,
            bench,
            channel,
        })
    }
}

/// One heartbeat. `sent_at` is the bench's wall clock (RFC 3339), which the
/// watch never trusts for ages; `boot_id`, `uptime_s`, `run_id` and `seq`
/// let it tell a reboot, an agent restart, a lost beat and a replayed old
/// beat apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub bench: String,
    pub site: String,
    /// Starts at 1 with every agent run.
    pub seq: u64,
    /// Identifies one run of the agent process.
    pub run_id: String,
    /// The kernel's boot id.
    pub boot_id: String,
    pub sent_at: String,
    pub uptime_s: u64,
    /// The bench state the agent reports (`starting`, `ready`, …).
    pub state: String,
    /// Why the bench is in that state (e.g. `reset_not_ready: …` for a DUT
    /// reset that never became ready); absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    pub agent_version: String,
    /// The agent's heartbeat interval, so the watch can judge lateness per
    /// bench.
    #[serde(default)]
    pub interval_s: Option<f64>,
    /// Maintenance set on the bench; absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
    /// The execution context the bench works under (`context set`), so the
    /// central side can name the job a bench was running when it failed.
    #[serde(default, skip_serializing_if = "ExecutionContext::is_empty")]
    pub context: ExecutionContext,
}

/// `online` or `offline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Online,
    Offline,
}

/// Why a bench said (or its broker said for it) that it is offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflineReason {
    /// The Last Will: the broker lost the agent's connection.
    ConnectionLost,
    /// A planned stop (`systemctl stop`): not an outage.
    Shutdown,
}

/// The retained status of a bench.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub status: Presence,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<OfflineReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
}

impl Status {
    /// Parses JSON, or a bare `online` / `offline` as other tools publish.
    pub fn parse(payload: &[u8]) -> Option<Status> {
        let text = std::str::from_utf8(payload).ok()?.trim();
        let bare = |status| Status {
            status,
            reason: None,
            run_id: None,
            sent_at: None,
        };
        match text {
            "online" => Some(bare(Presence::Online)),
            "offline" => Some(bare(Presence::Offline)),
            _ => serde_json::from_str(text).ok(),
        }
    }
}

/// A check's verdict on `…/probe/<name>`: retained, published when it
/// changes and again after each reconnect of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeVerdict {
    pub probe: String,
    /// `true` while the check passes (after its `fail_after` /
    /// `recover_after` hysteresis).
    pub up: bool,
    /// Whether the bench is ready only while this check is up.
    pub affects_ready: bool,
    pub run_id: String,
    pub sent_at: String,
}

/// Commands to a running agent on `…/cmd`, the same requests as its local
/// control socket: `{"cmd":"maintenance","on":true,"reason":"…","until":"2026-12-01T08:00:00Z"}`,
/// `{"cmd":"dut_reset","reason":"…"}`,
/// `{"cmd":"context_set","execution_id":"…","task_id":"…","correlation_id":"…"}`,
/// `{"cmd":"context_clear"}`; and on the socket only `{"cmd":"status"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    ContextSet(ExecutionContext),
    ContextClear,
    /// Maintenance on, with an optional reason and end, or off.
    Maintenance {
        on: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        until: Option<SystemTime>,
    },
    /// The test harness has just reset (power-cycled) the device under test.
    DutReset {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The bench's state, why, since when, and its checks' verdicts.
    Status,
}

/// Maintenance set on a bench: why, since when, and until when (`None`:
/// until a command ends it). Kept by the agent across restarts, and sent
/// in every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(with = "humantime_serde")]
    pub since: SystemTime,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<SystemTime>,
}

/// The execution context the orchestrator hands the agent (which test run,
/// which task, which request chain), as it travels in a [`Command`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionContext {
    pub execution_id: Option<String>,
    pub task_id: Option<String>,
    pub correlation_id: Option<String>,
}

impl ExecutionContext {
    pub fn is_empty(&self) -> bool {
        self.execution_id.is_none() && self.task_id.is_none() && self.correlation_id.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip() {
        for (topic, channel) in [
            (Topic::heartbeat("lab-a", "b1"), Channel::Heartbeat),
            (Topic::status("lab-a", "b1"), Channel::Status),
            (Topic::command("lab-a", "b1"), Channel::Command),
            (
                Topic::probe("lab-a", "b1", "uart"),
                Channel::Probe("uart".into()),
            ),
        ] {
            let t = Topic::parse(&topic).unwrap();
            assert_eq!((t.site.as_str(), t.bench.as_str()), ("lab-a", "b1"));
            assert_eq!(t.channel, channel);
        }
        for bad in [
            "other/lab/b1/heartbeat",
            "benchtel/lab/b1",
            "benchtel//b1/heartbeat",
            "benchtel/lab/b1/heartbeat/extra",
            "benchtel/lab/b1/probe/",
            "benchtel/lab/b1/nonsense",
        ] {
            assert_eq!(Topic::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn status_accepts_json_and_bare_words() {
        assert_eq!(Status::parse(b"online").unwrap().status, Presence::Online);
        let s = Status::parse(br#"{"status":"offline","reason":"shutdown"}"#).unwrap();
        assert_eq!(
            (s.status, s.reason),
            (Presence::Offline, Some(OfflineReason::Shutdown))
        );
        assert_eq!(Status::parse(b"\xff"), None);
        assert_eq!(Status::parse(b"{\"status\":\"maybe\"}"), None);
    }
}

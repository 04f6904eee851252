//! The publisher's connection: one task drives `rumqttc`'s event loop and
//! sleeps the reconnect backoff, and one (the session) reacts to its events,
//! beats, verdicts and the stop signal.
//!
//! The event loop is never polled inside a `select!` that another branch
//! could win: dropping `EventLoop::poll` half-way can leave half a packet on
//! the wire, and a broken packet makes the broker publish the Last Will,
//! the very thing a clean stop must avoid.
//!
//! Every publish handed to the client ends as exactly one of `acked`
//! (PUBACK), `lost` (the connection dropped first) or `dropped` (the
//! client's queue was full), per topic kind. Publishes are matched to their
//! packet ids by order: the client writes requests in the order it got
//! them, and the session reads events before anything else (`biased`), so
//! on the agent's single-threaded runtime the order is exact.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use backon::BackoffBuilder;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, LastWill, Outgoing, QoS,
    SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Config, Identity, Links, PublisherError};

mod metrics;

use crate::agent::control;
use crate::agent::readiness::{Input, Verdict};
use crate::agent::sources::heartbeat::Beat;
use crate::wire::{self, OfflineReason, Presence, Topic};
use metrics::{Kind, Metrics};

/// How long a clean stop waits for the broker to acknowledge `offline`.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);
/// Requests the client buffers before `try_publish` refuses: a
/// reconnect's status, subscription and verdicts fit, an unbounded
/// backlog does not.
const CLIENT_QUEUE: usize = 16;
/// QoS 1 publishes written but not yet acknowledged.
const MAX_INFLIGHT: u16 = 8;
/// Largest command payload quoted in a log line.
const QUOTE_BYTES: usize = 200;

struct Topics {
    heartbeat: String,
    status: String,
    command: String,
}

/// The publisher's state between events.
struct Session {
    client: AsyncClient,
    identity: Identity,
    describe: String,
    topics: Topics,
    publish_probes: bool,
    readiness: mpsc::Sender<Input>,
    metrics: Metrics,
    connected: bool,
    /// Work owed to the broker after a (re)connect, retried after each
    /// event until the client takes it.
    status_due: bool,
    subscribe_due: bool,
    probes_due: bool,
    /// Handed to the client, not yet written, in order.
    queued: VecDeque<Kind>,
    /// Written, awaiting PUBACK.
    inflight: HashMap<u16, Kind>,
    /// The last verdict of each check, re-published after a reconnect
    /// (a restarted broker without persistence forgot them).
    verdicts: BTreeMap<String, Verdict>,
    last_seq: u64,
    /// Failed connection attempts since the last success, and the last
    /// error shown, so a broker that stays away is logged once per kind
    /// of failure, not once per attempt.
    failures: u64,
    last_error: Option<String>,
    shutdown_acked: bool,
}

/// An event from the driver task.
type Polled = Result<Event, ConnectionError>;

pub(super) async fn run(
    cfg: Config,
    identity: Identity,
    links: Links,
    meter: &Meter,
    stop: CancellationToken,
) -> Result<(), PublisherError> {
    let will = LastWill::new(
        Topic::status(&identity.site, &identity.bench),
        serde_json::to_vec(&status(
            Presence::Offline,
            Some(OfflineReason::ConnectionLost),
            &identity.run_id,
            false,
        ))?,
        QoS::AtLeastOnce,
        true,
    );
    let mut options = cfg
        .connection
        .options(&identity.default_client_id(), Some(will))?;
    options.set_inflight(MAX_INFLIGHT);
    let (client, eventloop) = AsyncClient::new(options, CLIENT_QUEUE);
    let (events_tx, mut events) = mpsc::channel(64);
    let driver = tokio::spawn(drive(eventloop, events_tx, backoff_builder(&cfg)));
    let describe = cfg.connection.describe();
    tracing::info!(broker = %describe, "MQTT publisher starting");
    let mut s = Session::new(
        client,
        identity,
        describe,
        cfg.options.publish_probes,
        links.readiness,
        meter,
    );
    let mut beats = links.beats;
    let mut verdicts = links.verdicts;
    let (mut beats_open, mut verdicts_open) = (true, s.publish_probes);
    loop {
        tokio::select! {
            biased;
            polled = events.recv() => match polled {
                Some(polled) => s.on_event(polled).await,
                None => break,
            },
            _ = stop.cancelled() => break,
            changed = beats.changed(), if beats_open => match changed {
                Ok(()) => {
                    let beat = beats.borrow_and_update().clone();
                    if let Some(beat) = beat {
                        s.on_beat(&beat);
                    }
                }
                Err(_) => beats_open = false,
            },
            v = verdicts.recv(), if verdicts_open => match v {
                Some(v) => s.on_verdict(v),
                None => verdicts_open = false,
            },
        }
        s.catch_up();
    }
    s.shutdown(&mut events).await;
    driver.abort();
    Ok(())
}

/// Polls the event loop and hands each event over; after a failure,
/// sleeps the backoff before the next poll (which reconnects).
async fn drive(
    mut eventloop: EventLoop,
    events: mpsc::Sender<Polled>,
    backoff: backon::ExponentialBuilder,
) {
    let mut delays = backoff.build();
    loop {
        let polled = eventloop.poll().await;
        let failed = polled.is_err();
        if matches!(polled, Ok(Event::Incoming(Incoming::ConnAck(_)))) {
            delays = backoff.build();
        }
        if events.send(polled).await.is_err() {
            return;
        }
        if failed {
            tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(60))).await;
        }
    }
}

fn backoff_builder(cfg: &Config) -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::new()
        .with_min_delay(cfg.options.reconnect_min)
        .with_max_delay(cfg.options.reconnect_max)
        .with_jitter()
        .without_max_times()
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn status(
    presence: Presence,
    reason: Option<OfflineReason>,
    run_id: &str,
    stamped: bool,
) -> wire::Status {
    wire::Status {
        status: presence,
        reason,
        run_id: Some(run_id.to_string()),
        // The will is fixed at connect time: a time in it would be stale.
        sent_at: stamped.then(now),
    }
}

impl Session {
    fn new(
        client: AsyncClient,
        identity: Identity,
        describe: String,
        publish_probes: bool,
        readiness: mpsc::Sender<Input>,
        meter: &Meter,
    ) -> Session {
        let metrics = Metrics::new(meter);
        metrics.connected.record(0, &[]);
        Session {
            client,
            topics: Topics {
                heartbeat: Topic::heartbeat(&identity.site, &identity.bench),
                status: Topic::status(&identity.site, &identity.bench),
                command: Topic::command(&identity.site, &identity.bench),
            },
            identity,
            describe,
            publish_probes,
            readiness,
            metrics,
            connected: false,
            status_due: false,
            subscribe_due: false,
            probes_due: false,
            queued: VecDeque::new(),
            inflight: HashMap::new(),
            verdicts: BTreeMap::new(),
            last_seq: 0,
            failures: 0,
            last_error: None,
            shutdown_acked: false,
        }
    }

    /// Hands a QoS 1 publish to the client; `false` if its queue was full.
    fn publish(&mut self, kind: Kind, topic: &str, retain: bool, payload: Vec<u8>) -> bool {
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                self.queued.push_back(kind);
                true
            }
            Err(_) => {
                self.metrics.publish(kind, "dropped", 1);
                false
            }
        }
    }

    fn publish_json(
        &mut self,
        kind: Kind,
        topic: &str,
        retain: bool,
        value: &impl serde::Serialize,
    ) -> bool {
        match serde_json::to_vec(value) {
            Ok(payload) => self.publish(kind, topic, retain, payload),
            Err(e) => {
                tracing::error!(error = %e, topic, "cannot encode an MQTT payload");
                false
            }
        }
    }

    async fn on_event(&mut self, polled: Polled) {
        let event = match polled {
            Ok(event) => event,
            Err(e) => return self.on_error(&e),
        };
        match event {
            Event::Incoming(Incoming::ConnAck(_)) => self.on_connected(),
            Event::Incoming(Incoming::PubAck(ack)) => {
                if let Some(kind) = self.inflight.remove(&ack.pkid) {
                    self.metrics.publish(kind, "acked", 1);
                    self.shutdown_acked |= kind == Kind::Shutdown;
                }
            }
            Event::Incoming(Incoming::SubAck(ack))
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure)) =>
            {
                tracing::warn!(topic = %self.topics.command,
                    "the broker refused the command subscription (ACL?); commands over MQTT are off");
            }
            Event::Incoming(Incoming::Publish(p)) => self.on_command(&p).await,
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(kind) = self.queued.pop_front() {
                    self.inflight.insert(pkid, kind);
                }
            }
            _ => {}
        }
    }

    fn on_connected(&mut self) {
        self.metrics
            .connects
            .add(1, &[KeyValue::new("result", "ok")]);
        self.metrics.connected.record(1, &[]);
        self.connected = true;
        tracing::info!(broker = %self.describe, failed_attempts = self.failures, "MQTT connected");
        self.failures = 0;
        self.last_error = None;
        self.status_due = true;
        self.subscribe_due = true;
        self.probes_due = self.publish_probes;
        self.catch_up();
    }

    fn on_error(&mut self, e: &ConnectionError) {
        let error = e.to_string();
        if self.connected {
            self.connected = false;
            self.metrics.connected.record(0, &[]);
            tracing::warn!(broker = %self.describe, error = %error,
                "MQTT connection lost; reconnecting with backoff (the broker publishes the Last Will)");
            // A clean session: what was not acknowledged is gone.
            for kind in self
                .queued
                .drain(..)
                .chain(self.inflight.drain().map(|(_, k)| k))
            {
                self.metrics.publish(kind, "lost", 1);
            }
        } else {
            self.metrics
                .connects
                .add(1, &[KeyValue::new("result", "failed")]);
            if self.last_error.as_deref() != Some(error.as_str()) {
                tracing::warn!(broker = %self.describe, error = %error, failed_attempts = self.failures + 1,
                    "cannot connect to the MQTT broker; retrying with backoff");
            } else {
                tracing::debug!(error = %error, failed_attempts = self.failures + 1, "MQTT connect failed again");
            }
        }
        self.failures += 1;
        self.last_error = Some(error);
    }

    /// Publishes `beat` if connected; otherwise counts it as skipped, as
    /// well as any beat the watch channel replaced before it was read.
    fn on_beat(&mut self, beat: &Beat) {
        let replaced = beat.seq.saturating_sub(self.last_seq.saturating_add(1));
        self.last_seq = beat.seq;
        let mut skipped = replaced;
        if !self.connected {
            skipped += 1;
        } else {
            let hb = wire::Heartbeat {
                bench: self.identity.bench.clone(),
                site: self.identity.site.clone(),
                seq: beat.seq,
                run_id: beat.run_id.clone(),
                boot_id: beat.boot_id.clone(),
                sent_at: beat.sent_at.clone(),
                uptime_s: beat.uptime_s,
                state: beat.state.as_str().to_string(),
                why: Some(beat.why.clone()),
                agent_version: beat.agent_version.to_string(),
                interval_s: Some(self.identity.interval.as_secs_f64()),
                maintenance: beat.maintenance.clone(),
                context: beat.context.clone(),
            };
            let topic = self.topics.heartbeat.clone();
            if !self.publish_json(Kind::Heartbeat, &topic, false, &hb) {
                skipped += 1;
            }
        }
        if skipped > 0 {
            self.metrics.skipped.add(skipped, &[]);
        }
    }

    fn on_verdict(&mut self, v: Verdict) {
        let name = v.check.clone();
        self.verdicts.insert(name.clone(), v);
        if self.connected && !self.probes_due && !self.publish_verdict(&name) {
            self.probes_due = true;
        }
    }

    fn publish_verdict(&mut self, name: &str) -> bool {
        let Some(v) = self.verdicts.get(name) else {
            return true;
        };
        let payload = wire::ProbeVerdict {
            probe: v.check.clone(),
            up: v.up,
            affects_ready: v.affects_ready,
            run_id: self.identity.run_id.clone(),
            sent_at: now(),
        };
        let topic = Topic::probe(&self.identity.site, &self.identity.bench, name);
        self.publish_json(Kind::Probe, &topic, true, &payload)
    }

    /// Retries what a reconnect owes the broker, in order of importance.
    fn catch_up(&mut self) {
        if !self.connected {
            return;
        }
        if self.status_due {
            let online = status(Presence::Online, None, &self.identity.run_id, true);
            let topic = self.topics.status.clone();
            self.status_due = !self.publish_json(Kind::Status, &topic, true, &online);
        }
        if self.subscribe_due {
            self.subscribe_due = self
                .client
                .try_subscribe(self.topics.command.clone(), QoS::AtLeastOnce)
                .is_err();
        }
        if self.probes_due {
            let names: Vec<String> = self.verdicts.keys().cloned().collect();
            self.probes_due = !names.iter().all(|n| self.publish_verdict(n));
        }
    }

    /// Applies a command from `…/cmd` as the control socket would.
    async fn on_command(&mut self, p: &rumqttc::Publish) {
        let quote =
            || String::from_utf8_lossy(&p.payload[..p.payload.len().min(QUOTE_BYTES)]).into_owned();
        if p.topic != self.topics.command {
            tracing::warn!(topic = %p.topic, "MQTT message on a topic the agent did not subscribe to; ignored");
            return;
        }
        // A retained command would be applied again at every reconnect,
        // long after whoever sent it moved on.
        if p.retain {
            self.metrics.command("rejected");
            tracing::warn!(payload = %quote(), "MQTT command rejected: it is retained; publish commands without the retain flag");
            return;
        }
        match serde_json::from_slice::<wire::Command>(&p.payload) {
            Ok(cmd) => {
                control::apply(&cmd, &self.readiness, control::Origin::Mqtt).await;
                self.metrics.command("applied");
                tracing::info!(command = ?cmd, "MQTT command applied");
            }
            Err(e) => {
                self.metrics.command("rejected");
                tracing::warn!(error = %e, payload = %quote(), "MQTT command rejected");
            }
        }
    }

    /// A clean stop: retained `offline`/`shutdown`, its PUBACK, then
    /// DISCONNECT (which makes the broker drop the will). If the PUBACK
    /// does not come, the connection is just dropped so the will says
    /// `offline`, rather than leaving a stale `online`.
    async fn shutdown(&mut self, events: &mut mpsc::Receiver<Polled>) {
        if !self.connected {
            tracing::info!("MQTT publisher stopped (not connected)");
            return;
        }
        let deadline = Instant::now() + SHUTDOWN_DEADLINE;
        let offline = status(
            Presence::Offline,
            Some(OfflineReason::Shutdown),
            &self.identity.run_id,
            true,
        );
        let topic = self.topics.status.clone();
        if !self.publish_json(Kind::Shutdown, &topic, true, &offline) {
            tracing::warn!("MQTT queue full at shutdown; the broker will publish the Last Will");
            return;
        }
        if !self.wait(events, deadline, |s| s.shutdown_acked).await {
            tracing::warn!(deadline = ?SHUTDOWN_DEADLINE,
                "the broker did not acknowledge the offline status; leaving it to the Last Will");
            return;
        }
        if self.client.try_disconnect().is_err() {
            return;
        }
        let mut sent = false;
        let _ = tokio::time::timeout_at(deadline, async {
            while let Some(polled) = events.recv().await {
                if matches!(polled, Ok(Event::Outgoing(Outgoing::Disconnect))) {
                    sent = true;
                    return;
                }
                self.on_event(polled).await;
            }
        })
        .await;
        if sent {
            tracing::info!("MQTT publisher stopped: offline status acknowledged, disconnected");
        } else {
            tracing::warn!(
                "MQTT disconnect not sent in time; the broker may publish the Last Will"
            );
        }
    }

    /// Handles events until `done` or the deadline; `false` on a timeout or
    /// a lost connection.
    async fn wait(
        &mut self,
        events: &mut mpsc::Receiver<Polled>,
        deadline: Instant,
        done: impl Fn(&Session) -> bool,
    ) -> bool {
        while !done(self) {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(polled)) => {
                    self.on_event(polled).await;
                    if !self.connected {
                        return false;
                    }
                }
                _ => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests;

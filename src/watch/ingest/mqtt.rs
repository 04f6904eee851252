//! Heartbeats, statuses and probe verdicts over MQTT.
//!
//! The watch subscribes (clean session, so the broker never queues old
//! messages for it while it is away) to `benchtel/<site>/+/heartbeat`,
//! `…/status` and `…/probe/+` for each configured site filter (`+`: all),
//! resubscribing after every reconnect. Retained statuses arrive again on
//! each subscribe; the fleet keeps the time it first saw each one.
//!
//! The watch also proves its own path through the broker: every
//! `ping_interval` it publishes to `benchtel-watch/<replica>/ping`, to which
//! it is subscribed. While the session is down, or its pings stop coming
//! back, it is deaf, and holds offline verdicts instead of paging for every
//! bench (see [`crate::watch::fleet`]).
//!
//! Malformed messages are counted by reason and dropped; the session stays
//! up.

use std::time::Duration;

use backon::BackoffBuilder;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, Publish, QoS};
use tokio_util::sync::CancellationToken;

use crate::mqtt::Connection;
use crate::watch::bench::{Beat, Presence, Reported, Transport};
use crate::watch::shared::Shared;
use crate::wire::{self, Channel, OfflineReason, Topic};

/// Requests the client may queue (subscriptions and pings only).
const CLIENT_QUEUE: usize = 64;

/// The ping topic of one replica.
pub fn ping_topic(replica: &str) -> String {
    format!("benchtel-watch/{replica}/ping")
}

/// Why a message was dropped: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Topic,
    Json,
    TopicMismatch,
    SentAt,
}

impl Malformed {
    fn as_str(self) -> &'static str {
        match self {
            Malformed::Topic => "bad_topic",
            Malformed::Json => "malformed_json",
            Malformed::TopicMismatch => "topic_mismatch",
            Malformed::SentAt => "bad_sent_at",
        }
    }
}

/// Runs the subscriber until `cancel` fires.
pub async fn run(shared: Shared, conn: Connection, cancel: CancellationToken) {
    let cfg = shared.cfg.clone();
    let client_id = format!("benchtel-watch-{}", cfg.replica);
    let options = match conn.options(&client_id, None) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the MQTT options; MQTT ingest is off");
            return;
        }
    };
    let ping_every = cfg.ingest.ping_interval;
    shared.lock_fleet().ingest.ping_deadline = 3.0 * ping_every.as_secs_f64();
    set_connected(&shared, false);
    let (client, eventloop) = AsyncClient::new(options, CLIENT_QUEUE);
    tracing::info!(broker = %conn.describe(), sites = ?cfg.ingest.sites, "MQTT ingest starting");
    let pinger = tokio::spawn(ping(client.clone(), ping_topic(&cfg.replica), ping_every));
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = drive(shared.clone(), client.clone(), eventloop) => {}
    }
    pinger.abort();
    let _ = client.try_disconnect();
    set_connected(&shared, false);
}

/// Polls the event loop forever, reconnecting with backoff.
async fn drive(shared: Shared, client: AsyncClient, mut eventloop: EventLoop) {
    let ping = ping_topic(&shared.cfg.replica);
    let mut backoff = reconnect_backoff();
    let mut connected = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                connected = true;
                backoff = reconnect_backoff();
                set_connected(&shared, true);
                tracing::info!("MQTT session up; subscribing");
                subscribe(&shared, &client).await;
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => handle(&shared, &ping, &p),
            Ok(_) => {}
            Err(e) => {
                if connected {
                    tracing::error!(error = %e, "MQTT session lost; the watch is deaf until it is back");
                }
                connected = false;
                set_connected(&shared, false);
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn reconnect_backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

fn set_connected(shared: &Shared, up: bool) {
    shared.lock_fleet().ingest.mqtt_connected = Some(up);
    shared.stats.mqtt_connected.set(i64::from(up));
}

async fn subscribe(shared: &Shared, client: &AsyncClient) {
    let mut filters: Vec<String> = shared
        .cfg
        .ingest
        .sites
        .iter()
        .flat_map(|site| {
            let [hb, st] = Topic::filters(site);
            [hb, st, format!("{}/{site}/+/probe/+", wire::ROOT)]
        })
        .collect();
    filters.push(ping_topic(&shared.cfg.replica));
    for f in filters {
        if let Err(e) = client.subscribe(&f, QoS::AtLeastOnce).await {
            tracing::error!(filter = %f, error = %e, "cannot queue the MQTT subscription");
        }
    }
}

/// Publishes a ping every `every`; the subscription brings it back.
async fn ping(client: AsyncClient, topic: String, every: Duration) {
    let mut tick = tokio::time::interval(every);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        // A full queue means the session is down; the missing ping says so.
        let _ = client.try_publish(&topic, QoS::AtMostOnce, false, n.to_string());
    }
}

/// Takes one message; `ping` is this replica's ping topic.
fn handle(shared: &Shared, ping: &str, p: &Publish) {
    let now = shared.clock.now();
    if p.topic == ping {
        shared.lock_fleet().ingest.ping_returned = Some(now);
        return;
    }
    let result = match Topic::parse(&p.topic) {
        None => Err(Malformed::Topic),
        Some(t) => match &t.channel {
            Channel::Heartbeat => heartbeat(shared, &t, &p.payload, now),
            Channel::Status => status(shared, &t, &p.payload, now),
            Channel::Probe(name) => probe(shared, &t, name, &p.payload),
            Channel::Command => Ok(()),
        },
    };
    if let Err(m) = result {
        shared
            .stats
            .rejected
            .with_label_values(&["mqtt", m.as_str()])
            .inc();
        tracing::debug!(topic = %p.topic, reason = m.as_str(), "MQTT message dropped");
    }
}

fn heartbeat(shared: &Shared, t: &Topic, payload: &[u8], now: f64) -> Result<(), Malformed> {
    let hb: wire::Heartbeat = serde_json::from_slice(payload).map_err(|_| Malformed::Json)?;
    if hb.bench != t.bench || hb.site != t.site {
        return Err(Malformed::TopicMismatch);
    }
    let sent =
        epoch_secs(humantime::parse_rfc3339_weak(&hb.sent_at).map_err(|_| Malformed::SentAt)?);
    let beat = Beat {
        transport: Transport::Mqtt,
        run_id: hb.run_id,
        seq: hb.seq,
        sent: Some(sent),
        state: Some(hb.state),
        interval: hb.interval_s,
        boot_id: Some(hb.boot_id),
        agent_version: Some(hb.agent_version),
        why: hb.why,
        maintenance: hb.maintenance.map(|m| Reported {
            reason: m.reason,
            since: Some(epoch_secs(m.since)),
            until: m.until.map(epoch_secs),
        }),
        context: Some(hb.context),
    };
    let result = match shared.lock_fleet().receive(&t.site, &t.bench, &beat, now) {
        Ok(r) => r.as_str(),
        Err(refusal) => {
            tracing::debug!(bench = %t.bench, site = %t.site, reason = %refusal, "heartbeat refused");
            "refused"
        }
    };
    shared
        .stats
        .heartbeats
        .with_label_values(&["mqtt", result])
        .inc();
    Ok(())
}

fn epoch_secs(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn status(shared: &Shared, t: &Topic, payload: &[u8], now: f64) -> Result<(), Malformed> {
    if payload.is_empty() {
        // A cleared retained status: nothing to learn.
        return Ok(());
    }
    let s = wire::Status::parse(payload).ok_or(Malformed::Json)?;
    let presence = match (s.status, s.reason) {
        (wire::Presence::Online, _) => Presence::Online,
        (wire::Presence::Offline, Some(OfflineReason::Shutdown)) => Presence::Stopped { at: now },
        (wire::Presence::Offline, _) => Presence::Lost { at: now },
    };
    let result = match shared.lock_fleet().status(&t.site, &t.bench, presence, now) {
        Ok(()) => "accepted",
        Err(_) => "unknown_bench",
    };
    shared
        .stats
        .statuses
        .with_label_values(&["mqtt", result])
        .inc();
    Ok(())
}

fn probe(shared: &Shared, t: &Topic, name: &str, payload: &[u8]) -> Result<(), Malformed> {
    if payload.is_empty() {
        let _ = shared.lock_fleet().probe(&t.site, &t.bench, name, None);
        return Ok(());
    }
    let v: wire::ProbeVerdict = serde_json::from_slice(payload).map_err(|_| Malformed::Json)?;
    let failing = (!v.up).then(|| "down".to_string());
    let _ = shared.lock_fleet().probe(&t.site, &t.bench, name, failing);
    Ok(())
}

//! The session's bookkeeping, driven by hand with the events rumqttc
//! would yield. Its client is real but never connected, so its queue
//! fills exactly as against a stuck broker.

use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use rumqttc::{ConnAck, ConnectReturnCode, MqttOptions, PubAck};

use super::*;
use crate::agent::readiness::ResetSource;
use crate::agent::state::BenchState;

struct Fixture {
    session: Session,
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
    _eventloop: EventLoop,
    readiness: mpsc::Receiver<Input>,
}

fn fixture() -> Fixture {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let (client, eventloop) = AsyncClient::new(MqttOptions::new("t", "127.0.0.1", 1), CLIENT_QUEUE);
    let (tx, readiness) = mpsc::channel(4);
    let identity = Identity {
        bench: "b1".into(),
        site: "lab".into(),
        interval: Duration::from_secs(10),
        run_id: "run-1".into(),
    };
    let session = Session::new(
        client,
        identity,
        "mqtt://127.0.0.1:1".into(),
        true,
        tx,
        &provider.meter("t"),
    );
    Fixture {
        session,
        provider,
        exporter,
        _eventloop: eventloop,
        readiness,
    }
}

impl Fixture {
    /// The sum of the points of `name` whose attributes include `attrs`.
    fn count(&self, name: &str, attrs: &[(&str, &str)]) -> i64 {
        self.provider.force_flush().unwrap();
        let rm = self.exporter.get_finished_metrics().unwrap().pop().unwrap();
        let matches = |kvs: Vec<(String, String)>| {
            attrs
                .iter()
                .all(|(k, v)| kvs.contains(&(k.to_string(), v.to_string())))
        };
        let mut total = 0;
        for m in rm.scope_metrics().flat_map(|s| s.metrics()) {
            if m.name() != name {
                continue;
            }
            let kv = |a: &mut dyn Iterator<Item = &KeyValue>| {
                a.map(|kv| (kv.key.to_string(), kv.value.to_string()))
                    .collect::<Vec<_>>()
            };
            match m.data() {
                AggregatedMetrics::U64(MetricData::Sum(s)) => {
                    for p in s.data_points() {
                        if matches(kv(&mut p.attributes())) {
                            total += p.value() as i64;
                        }
                    }
                }
                AggregatedMetrics::I64(MetricData::Gauge(g)) => {
                    for p in g.data_points() {
                        if matches(kv(&mut p.attributes())) {
                            total += p.value();
                        }
                    }
                }
                _ => {}
            }
        }
        total
    }

    async fn event(&mut self, e: Event) {
        self.session.on_event(Ok(e)).await;
        self.session.catch_up();
    }

    async fn connack(&mut self) {
        self.event(Event::Incoming(Incoming::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        ))))
        .await;
    }
}

fn beat(seq: u64) -> Beat {
    Beat {
        seq,
        run_id: "run-1".into(),
        boot_id: "boot".into(),
        uptime_s: 1,
        state: BenchState::Ready,
        why: "ready".into(),
        agent_version: "0",
        sent_at: "2026-01-01T00:00:00Z".into(),
        maintenance: None,
        context: Default::default(),
    }
}

fn lost_connection() -> ConnectionError {
    ConnectionError::Io(std::io::Error::other("reset"))
}

const HB: [(&str, &str); 1] = [("topic_kind", "heartbeat")];

#[tokio::test]
async fn beats_while_disconnected_or_replaced_are_skipped_not_queued() {
    let mut f = fixture();
    for seq in 1..=3 {
        f.session.on_beat(&beat(seq));
    }
    assert_eq!(f.count("benchtel_mqtt_heartbeats_skipped", &[]), 3);
    assert!(f.session.queued.is_empty(), "nothing handed to the client");
    f.connack().await;
    assert_eq!(f.count("benchtel_mqtt_connected", &[]), 1);
    // online status first, then the beat; seq 4 and 5 were replaced in
    // the watch channel before the publisher read them.
    f.session.on_beat(&beat(6));
    assert_eq!(
        f.session.queued,
        [Kind::Status, Kind::Heartbeat],
        "subscribe is not a publish"
    );
    assert_eq!(f.count("benchtel_mqtt_heartbeats_skipped", &[]), 5);
}

#[tokio::test]
async fn every_publish_ends_acked_lost_or_dropped() {
    let mut f = fixture();
    f.connack().await;
    // The status and the subscription take 2 of the 16 places.
    for seq in 1..=20 {
        f.session.on_beat(&beat(seq));
    }
    assert_eq!(
        f.count("benchtel_mqtt_publishes", &[HB[0], ("result", "dropped")]),
        6
    );
    assert_eq!(f.count("benchtel_mqtt_heartbeats_skipped", &[]), 6);
    // The client writes the status (pkid 1) and two beats (2, 3); the
    // broker acknowledges the status and one beat.
    for pkid in 1..=3 {
        f.event(Event::Outgoing(Outgoing::Publish(pkid))).await;
    }
    f.event(Event::Incoming(Incoming::PubAck(PubAck::new(1))))
        .await;
    f.event(Event::Incoming(Incoming::PubAck(PubAck::new(3))))
        .await;
    assert_eq!(
        f.count(
            "benchtel_mqtt_publishes",
            &[("topic_kind", "status"), ("result", "acked")]
        ),
        1
    );
    assert_eq!(
        f.count("benchtel_mqtt_publishes", &[HB[0], ("result", "acked")]),
        1
    );
    // The connection drops: beat 1 (written) and beats 3..=14 (queued)
    // are lost with the clean session.
    f.session.on_event(Err(lost_connection())).await;
    assert_eq!(
        f.count("benchtel_mqtt_publishes", &[HB[0], ("result", "lost")]),
        13
    );
    assert_eq!(f.count("benchtel_mqtt_connected", &[]), 0);
    assert!(f.session.queued.is_empty() && f.session.inflight.is_empty());
    // 14 handed over = 1 acked + 13 lost; 6 dropped; 20 in all.
    f.session.on_beat(&beat(21));
    assert_eq!(f.count("benchtel_mqtt_heartbeats_skipped", &[]), 7);
}

#[tokio::test]
async fn a_reconnect_says_online_again_and_republishes_the_verdicts() {
    let mut f = fixture();
    f.session.on_verdict(Verdict {
        check: "psu".into(),
        up: false,
        affects_ready: true,
    });
    assert!(f.session.queued.is_empty(), "not connected: kept for later");
    f.connack().await;
    assert_eq!(f.session.queued, [Kind::Status, Kind::Probe]);
    f.session.on_event(Err(lost_connection())).await;
    f.connack().await;
    assert_eq!(f.session.queued, [Kind::Status, Kind::Probe]);
    assert_eq!(f.count("benchtel_mqtt_publishes", &[("result", "lost")]), 2);
    assert_eq!(f.count("benchtel_mqtt_connects", &[("result", "ok")]), 2);
}

#[tokio::test]
async fn commands_apply_and_bad_or_retained_ones_are_counted() {
    let mut f = fixture();
    f.connack().await;
    let cmd = |payload: &str, retain: bool| {
        let mut p = rumqttc::Publish::new(
            "benchtel/lab/b1/cmd",
            QoS::AtLeastOnce,
            payload.as_bytes().to_vec(),
        );
        p.retain = retain;
        Event::Incoming(Incoming::Publish(p))
    };
    f.event(cmd(r#"{"cmd":"maintenance","on":true}"#, false))
        .await;
    assert!(
        matches!(f.readiness.try_recv(), Ok(Input::Maintenance(Some(m))) if m.reason.is_none()),
        "maintenance on"
    );
    f.event(cmd(r#"{"cmd":"maintenance","on":false}"#, true))
        .await;
    f.event(cmd(r#"{"cmd":"shutdown"}"#, false)).await;
    f.event(cmd("{", false)).await;
    assert!(
        f.readiness.try_recv().is_err(),
        "rejected commands change nothing"
    );
    f.event(cmd(r#"{"cmd":"dut_reset","reason":"power cycle"}"#, false))
        .await;
    assert_eq!(
        f.readiness.try_recv(),
        Ok(Input::DutReset {
            source: ResetSource::Mqtt,
            reason: Some("power cycle".into()),
            seen_by: None,
        }),
        "a reset marked over MQTT is counted as such"
    );
    assert_eq!(
        f.count("benchtel_mqtt_commands", &[("result", "applied")]),
        2
    );
    assert_eq!(
        f.count("benchtel_mqtt_commands", &[("result", "rejected")]),
        3
    );
}

#[test]
fn reconnect_delays_grow_to_the_cap_with_jitter_that_differs_per_agent() {
    let cfg = |min, max| super::super::Options {
        publish_probes: false,
        reconnect_min: Duration::from_secs(min),
        reconnect_max: Duration::from_secs(max),
    };
    let delays = |b: backon::ExponentialBuilder| -> Vec<Duration> { b.build().take(8).collect() };
    let o = cfg(1, 8);
    let builder = || {
        backoff_builder(&Config {
            connection: crate::mqtt::ConnectionConfig {
                url: "mqtt://b".into(),
                client_id: None,
                keepalive: Duration::from_secs(15),
                username: None,
                password_file: None,
                tls: None,
            }
            .resolve("t", "mqtt", &crate::config::Env::default(), &mut Vec::new())
            .unwrap(),
            options: o.clone(),
        })
    };
    let a = delays(builder());
    for (i, d) in a.iter().enumerate() {
        // Base 1, 2, 4, 8, 8, … seconds plus jitter below the base.
        let base = Duration::from_secs(1 << i.min(3));
        assert!(*d >= base && *d < base * 2, "delay {i} = {d:?}");
    }
    // Agents must not retry in lockstep after a broker outage.
    assert_ne!(a, delays(builder()), "same jitter sequence twice");
}

//! A bench as the broker sees it, without an agent process: its own MQTT
//! connection with the agent's Last Will, a retained `online`, and
//! heartbeats in the wire format. Cutting it drops the socket without a
//! DISCONNECT, so the broker publishes the will at once, as for a bench
//! whose link died or whose agent was killed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use benchtel::wire::{self, OfflineReason, Presence, Status, Topic};
use rumqttc::{AsyncClient, Event, Incoming, LastWill, MqttOptions, QoS};

pub struct FakeBench {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn status(presence: Presence, reason: Option<OfflineReason>) -> Vec<u8> {
    serde_json::to_vec(&Status {
        status: presence,
        reason,
        run_id: None,
        sent_at: None,
    })
    .unwrap()
}

impl FakeBench {
    pub fn start(port: u16, site: &str, bench: &str, every: Duration) -> FakeBench {
        let (site, bench) = (site.to_string(), bench.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(run(port, site, bench, every, st));
        });
        FakeBench {
            stop,
            thread: Some(thread),
        }
    }

    /// The link dies: no more beats, the broker publishes the will.
    pub fn cut(mut self) {
        self.halt();
    }

    /// Cuts every bench at the same moment (stopping them one by one would
    /// spread the cut over their heartbeat intervals).
    pub fn cut_all(benches: Vec<FakeBench>) {
        for b in &benches {
            b.stop.store(true, Ordering::SeqCst);
        }
        drop(benches);
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FakeBench {
    fn drop(&mut self) {
        self.halt();
    }
}

async fn run(port: u16, site: String, bench: String, every: Duration, stop: Arc<AtomicBool>) {
    let status_topic = Topic::status(&site, &bench);
    let mut opts = MqttOptions::new(format!("fake-{site}-{bench}"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5))
        .set_last_will(LastWill::new(
            &status_topic,
            status(Presence::Offline, Some(OfflineReason::ConnectionLost)),
            QoS::AtLeastOnce,
            true,
        ));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let beats = {
        let (client, stop) = (client.clone(), stop.clone());
        async move {
            let mut seq = 0;
            while !stop.load(Ordering::SeqCst) {
                seq += 1;
                let hb = wire::Heartbeat {
                    bench: bench.clone(),
                    site: site.clone(),
                    seq,
                    run_id: "fake-run".into(),
                    boot_id: "fake-boot".into(),
                    sent_at: humantime::format_rfc3339_millis(std::time::SystemTime::now())
                        .to_string(),
                    uptime_s: seq,
                    state: "ready".into(),
                    why: None,
                    agent_version: "fake".into(),
                    interval_s: Some(every.as_secs_f64()),
                    maintenance: None,
                    context: Default::default(),
                };
                let _ = client.try_publish(
                    Topic::heartbeat(&site, &bench),
                    QoS::AtLeastOnce,
                    false,
                    serde_json::to_vec(&hb).unwrap(),
                );
                // Short naps: a cut takes effect at once, not up to a period
                // later, so a site cut (many cuts in a row) is one moment.
                let until = tokio::time::Instant::now() + every;
                while tokio::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    };
    let events = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let _ = client.try_publish(
                        &status_topic,
                        QoS::AtLeastOnce,
                        true,
                        status(Presence::Online, None),
                    );
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    };
    tokio::select! {
        _ = beats => {}
        _ = events => {}
    }
    // Returning drops the event loop and its socket without a DISCONNECT.
}

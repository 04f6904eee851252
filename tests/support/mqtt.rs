//! An MQTT test client on a real broker: it records every message on its
//! filters (reconnecting and re-subscribing when the broker restarts) and
//! publishes on demand.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

/// One message as the subscriber received it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Set when the broker delivered a retained message on subscribing.
    pub retain: bool,
}

impl Msg {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.topic, self.text()))
    }
}

pub struct Subscriber {
    client: AsyncClient,
    msgs: Arc<Mutex<Vec<Msg>>>,
    subscribed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    markers: AtomicUsize,
}

const MARKER: &str = "benchtel-test/marker";

impl Subscriber {
    /// Connects to the broker's plain listener on `port` and subscribes to
    /// `filters` (and the marker topic); returns once subscribed.
    pub fn connect(port: u16, filters: &[&str]) -> Subscriber {
        let id = format!("test-sub-{}", super::free_port());
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        // Long enough to ride out a test's frozen (SIGSTOP) broker.
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        filters.push(format!("{MARKER}/#"));
        let wanted = filters.len();
        let thread = {
            let (client, msgs, subscribed, stop) = (
                client.clone(),
                msgs.clone(),
                subscribed.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    while !stop.load(Ordering::SeqCst) {
                        match eventloop.poll().await {
                            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                                for f in &filters {
                                    let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                                }
                            }
                            Ok(Event::Incoming(Incoming::SubAck(_))) => {
                                subscribed.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(Event::Incoming(Incoming::Publish(p))) => {
                                msgs.lock().unwrap().push(Msg {
                                    topic: p.topic.clone(),
                                    payload: p.payload.to_vec(),
                                    retain: p.retain,
                                });
                            }
                            Ok(_) => {}
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                });
            })
        };
        let s = Subscriber {
            client,
            msgs,
            subscribed,
            stop,
            thread: Some(thread),
            markers: AtomicUsize::new(0),
        };
        // One SUBACK per filter.
        s.wait_until("the subscriptions", Duration::from_secs(10), || {
            s.subscribed.load(Ordering::SeqCst) >= wanted
        });
        s
    }

    fn wait_until(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; messages so far:\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many SUBACKs arrived (they come again after a reconnect).
    pub fn subacks(&self) -> usize {
        self.subscribed.load(Ordering::SeqCst)
    }

    pub fn messages(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// How many messages so far: a mark for [`Subscriber::wait_for`].
    pub fn len(&self) -> usize {
        self.msgs.lock().unwrap().len()
    }

    /// Like [`Subscriber::wait_for`], but `None` at the deadline.
    pub fn try_wait_for(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Msg) -> bool,
    ) -> Option<Msg> {
        let deadline = Instant::now() + timeout;
        loop {
            let msgs = self.msgs.lock().unwrap()[from..].to_vec();
            if let Some(m) = msgs.into_iter().find(|m| pred(m)) {
                return Some(m);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The first message from index `from` on that satisfies `pred`.
    pub fn wait_for(
        &self,
        what: &str,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Msg) -> bool,
    ) -> Msg {
        let mut found = None;
        self.wait_until(what, timeout, || {
            // Copied out first: `pred` may look at the subscriber too.
            let msgs = self.msgs.lock().unwrap()[from..].to_vec();
            found = msgs.into_iter().find(|m| pred(m));
            found.is_some()
        });
        found.unwrap()
    }

    /// Messages on `topic` from index `from` on.
    pub fn on(&self, topic: &str, from: usize) -> Vec<Msg> {
        self.msgs.lock().unwrap()[from..]
            .iter()
            .filter(|m| m.topic == topic)
            .cloned()
            .collect()
    }

    pub fn publish(&self, topic: &str, payload: &str, retain: bool) {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
            .unwrap();
    }

    /// A round trip through the broker: everything it routed to this
    /// subscriber before has arrived once this returns.
    pub fn sync(&self) {
        let n = self.markers.fetch_add(1, Ordering::SeqCst);
        let topic = format!("{MARKER}/{n}");
        let from = self.len();
        self.publish(&topic, "marker", false);
        self.wait_for("a marker round trip", from, Duration::from_secs(10), |m| {
            m.topic == topic
        });
    }

    fn dump(&self) -> String {
        self.msgs
            .lock()
            .unwrap()
            .iter()
            .map(|m| {
                format!(
                    "  {}{} {}",
                    m.topic,
                    if m.retain { " (retained)" } else { "" },
                    m.text()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.client.try_disconnect();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

use std::io::Write;
use std::sync::Arc;

use super::*;
use crate::config::{Env, Secret};
use crate::watch::clock::Clock;
use crate::watch::config::{SiteToken, WatchConfig};
use crate::watch::fleet::Fleet;
use crate::watch::stats::Stats;

/// What the agent's SDK sends: a cumulative `bench_heartbeats` sum and the
/// `bench_state` gauge, under a resource naming the bench (built from OTLP
/// JSON, which also checks that form).
fn heartbeat_request(
    site: &str,
    bench: &str,
    points: &[(u64, f64)],
) -> ExportMetricsServiceRequest {
    let attr = |k: &str, v: &str| serde_json::json!({"key": k, "value": {"stringValue": v}});
    let beats: Vec<serde_json::Value> = points
        .iter()
        .map(|(count, t)| {
            serde_json::json!({
                "startTimeUnixNano": "1700000000000000000",
                "timeUnixNano": ((t * 1e9) as u64).to_string(),
                "asInt": count.to_string(),
            })
        })
        .collect();
    let states: Vec<serde_json::Value> = ["starting", "ready"]
        .iter()
        .map(|s| serde_json::json!({"attributes": [attr("state", s)], "asInt": i64::from(*s == "ready").to_string()}))
        .collect();
    serde_json::from_value(serde_json::json!({"resourceMetrics": [{
        "resource": {"attributes": [attr("service.name", "benchtel-agent"), attr("bench.id", bench), attr("bench.site", site)]},
        "scopeMetrics": [{"metrics": [
            {"name": "bench_heartbeats", "sum": {"aggregationTemporality": 2, "isMonotonic": true, "dataPoints": beats}},
            {"name": "bench_state", "gauge": {"dataPoints": states}},
        ]}],
    }]}))
    .unwrap()
}

#[test]
fn heartbeats_and_the_reported_state_are_extracted() {
    let req = heartbeat_request("lab", "b1", &[(5, 200.0), (4, 190.0)]);
    let got = extract(&req);
    assert_eq!(got.anonymous_points, 0);
    assert_eq!(got.benches.len(), 1);
    let b = &got.benches[0];
    assert_eq!((b.site.as_str(), b.bench.as_str()), ("lab", "b1"));
    let seqs: Vec<u64> = b.beats.iter().map(|x| x.seq).collect();
    assert_eq!(seqs, [4, 5], "oldest first");
    assert_eq!(b.beats[1].state.as_deref(), Some("ready"));
    assert_eq!(b.beats[0].sent, Some(190.0));
    assert_eq!(b.beats[0].run_id, "1700000000000000000");
}

#[test]
fn points_without_a_bench_are_counted_not_guessed() {
    let mut req = heartbeat_request("lab", "b1", &[(1, 1.0)]);
    if let Some(r) = req.resource_metrics[0].resource.as_mut() {
        r.attributes.retain(|kv| kv.key != "bench.id");
    }
    let got = extract(&req);
    assert!(got.benches.is_empty());
    assert_eq!(got.anonymous_points, 1);
}

#[test]
fn otlp_json_as_collectors_send_it_decodes() {
    let json = r#"{"resourceMetrics":[{"resource":{"attributes":[
        {"key":"bench.id","value":{"stringValue":"b7"}},
        {"key":"bench.site","value":{"stringValue":"lab"}}]},
      "scopeMetrics":[{"scope":{"name":"benchtel"},"metrics":[{"name":"bench_heartbeats",
        "sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[
          {"startTimeUnixNano":"1700000000000000000","timeUnixNano":"1700000010000000000","asInt":"3"}]}}]}]}]}"#;
    let req = decode(json.as_bytes(), Format::Json).unwrap();
    let got = extract(&req);
    assert_eq!(got.benches[0].bench, "b7");
    assert_eq!(got.benches[0].beats[0].seq, 3);
    assert_eq!(got.benches[0].beats[0].sent, Some(1_700_000_010.0));
}

// ---- the handler, served for real on an ephemeral port ----

struct Server {
    base: String,
    shared: Shared,
    client: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

async fn serve(edit: impl FnOnce(&mut WatchConfig)) -> Server {
    let mut cfg = crate::watch::config::load(None, &Env::default()).unwrap();
    cfg.http.max_body_bytes = 64 * 1024;
    cfg.http.max_decompressed_bytes = 256 * 1024;
    edit(&mut cfg);
    let cfg = Arc::new(cfg);
    let clock = Clock::new();
    let shared = Shared::new(
        cfg.clone(),
        Fleet::new(cfg, clock.now()),
        clock,
        Stats::new(false).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(crate::watch::http::serve(
        listener,
        shared.clone(),
        stop.clone(),
    ));
    Server {
        base,
        shared,
        client: {
            crate::tls::install_provider();
            reqwest::Client::new()
        },
        _stop: stop.drop_guard(),
    }
}

impl Server {
    async fn post(&self, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
        let mut req = self
            .client
            .post(format!("{}/v1/metrics", self.base))
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
    }

    fn rejected(&self, reason: &str) -> u64 {
        self.shared
            .stats
            .rejected
            .with_label_values(&["otlp", reason])
            .get()
    }
}

const PROTO: (&str, &str) = ("content-type", "application/x-protobuf");

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn gzip_protobuf_heartbeats_reach_the_fleet() {
    let s = serve(|_| {}).await;
    let body = gzip(&heartbeat_request("lab", "b1", &[(1, 100.0)]).encode_to_vec());
    let (status, resp) = s.post(body, &[PROTO, ("content-encoding", "gzip")]).await;
    assert_eq!(status, 200);
    let resp = ExportMetricsServiceResponse::decode(&resp[..]).unwrap();
    assert_eq!(resp.partial_success, None);
    let fleet = s.shared.lock_fleet();
    let b = fleet.get("lab", "b1").expect("bench registered");
    assert_eq!(b.reported_state.as_deref(), Some("ready"));
    assert!(b.last_heard.is_some());
}

#[tokio::test]
async fn tokens_are_checked_and_bound_to_their_site() {
    let s = serve(|c| {
        c.otlp.tokens = vec![SiteToken {
            site: "lab".into(),
            token: Secret::new("t-lab"),
        }]
    })
    .await;
    let body = heartbeat_request("lab", "b1", &[(1, 1.0)]).encode_to_vec();
    assert_eq!(s.post(body.clone(), &[PROTO]).await.0, 401);
    assert_eq!(
        s.post(body.clone(), &[PROTO, ("authorization", "Bearer nope")])
            .await
            .0,
        401
    );
    assert_eq!(s.rejected("unauthorized"), 2);
    let other = heartbeat_request("lab2", "b1", &[(1, 1.0)]).encode_to_vec();
    let (status, text) = s
        .post(other, &[PROTO, ("authorization", "Bearer t-lab")])
        .await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&text));
    assert_eq!(s.rejected("forbidden_site"), 1);
    assert_eq!(
        s.post(body, &[PROTO, ("authorization", "Bearer t-lab")])
            .await
            .0,
        200
    );
    assert!(s.shared.lock_fleet().get("lab2", "b1").is_none());
}

#[tokio::test]
async fn oversized_bombs_garbage_and_strangers_are_rejected_and_counted() {
    let s = serve(|c| c.benches.allow = Some(regex::Regex::new("^ok-").unwrap())).await;
    let (status, _) = s.post(vec![0u8; 65 * 1024], &[PROTO]).await;
    assert_eq!(status, 413);
    assert_eq!(s.rejected("too_large"), 1);
    // 1 MiB of zeros gzips to about 1 KiB: a bomb for a 256 KiB limit.
    let bomb = gzip(&vec![0u8; 1 << 20]);
    assert!(bomb.len() < 64 * 1024);
    let (status, _) = s.post(bomb, &[PROTO, ("content-encoding", "gzip")]).await;
    assert_eq!(status, 413);
    assert_eq!(s.rejected("inflates_too_large"), 1);
    let (status, text) = s.post(b"\xff\xff\xff garbage".to_vec(), &[PROTO]).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&text).contains("malformed body: protobuf"));
    let (status, _) = s
        .post(b"{".to_vec(), &[("content-type", "application/json")])
        .await;
    assert_eq!(status, 400);
    assert_eq!(s.rejected("malformed"), 2);
    let (status, _) = s
        .post(b"x".to_vec(), &[("content-type", "text/plain")])
        .await;
    assert_eq!(status, 415);
    let (status, _) = s
        .post(b"x".to_vec(), &[PROTO, ("content-encoding", "br")])
        .await;
    assert_eq!(status, 415);
    // A bench the policy refuses: answered as partial success, counted.
    let stranger = heartbeat_request("lab", "stranger", &[(1, 1.0), (2, 2.0)]).encode_to_vec();
    let (status, resp) = s.post(stranger, &[PROTO]).await;
    assert_eq!(status, 200);
    let partial = ExportMetricsServiceResponse::decode(&resp[..])
        .unwrap()
        .partial_success
        .unwrap();
    assert_eq!(partial.rejected_data_points, 2);
    assert!(
        partial.error_message.contains("benches.allow"),
        "{}",
        partial.error_message
    );
    assert_eq!(
        s.shared
            .stats
            .heartbeats
            .with_label_values(&["otlp", "refused"])
            .get(),
        2
    );
    // And the service is still fine.
    let health = s
        .client
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ok = heartbeat_request("lab", "ok-1", &[(1, 1.0)]).encode_to_vec();
    assert_eq!(s.post(ok, &[PROTO]).await.0, 200);
}

#[tokio::test]
async fn json_requests_get_json_answers() {
    let s = serve(|_| {}).await;
    let body = serde_json::to_vec(&heartbeat_request("lab", "b1", &[(1, 1.0)])).unwrap();
    let (status, resp) = s.post(body, &[("content-type", "application/json")]).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&resp).unwrap();
    assert!(v.is_object(), "{v}");
    assert!(s.shared.lock_fleet().get("lab", "b1").is_some());
}

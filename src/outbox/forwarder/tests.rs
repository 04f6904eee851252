use super::lane::MAX_RETRY_AFTER;
use super::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;
use reqwest::StatusCode;

#[test]
fn retry_after_seconds_and_dates() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
    let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
    assert_eq!(
        parse_retry_after(&later, now),
        Some(Duration::from_secs(30))
    );
    assert_eq!(parse_retry_after("soon", now), None);
}

#[test]
fn classification_follows_otlp_http() {
    let c = |code: u16| {
        classify(
            Signal::Logs,
            StatusCode::from_u16(code).unwrap(),
            None,
            false,
            b"",
        )
    };
    assert!(matches!(
        c(200),
        Outcome::Delivered {
            rejected_items: 0,
            ..
        }
    ));
    for code in [429, 502, 503, 504, 408, 401, 403, 404, 407] {
        assert!(matches!(c(code), Outcome::Retry { .. }), "{code}");
    }
    assert!(matches!(c(413), Outcome::Split { .. }));
    for code in [400, 405, 409, 415, 422, 500, 501] {
        assert!(matches!(c(code), Outcome::Permanent { .. }), "{code}");
    }
}

#[test]
fn partial_success_is_read_from_protobuf_answers() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;
    let body = ExportLogsServiceResponse {
        partial_success: Some(ExportLogsPartialSuccess {
            rejected_log_records: 3,
            error_message: "too old".into(),
        }),
    }
    .encode_to_vec();
    assert_eq!(
        classify(Signal::Logs, StatusCode::OK, None, true, &body),
        Outcome::Delivered {
            rejected_items: 3,
            message: "too old".into()
        }
    );
}

fn lane_options() -> ForwarderOptions {
    ForwarderOptions {
        endpoint: Url::parse("http://127.0.0.1:1").unwrap(),
        headers: vec![],
        timeout: Duration::from_secs(1),
        gzip: true,
        max_request_bytes: 1 << 20,
        batch_max_records: 8,
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(2),
        idle_poll: Duration::from_secs(1),
    }
}

#[test]
fn server_delay_wins_over_a_shorter_backoff() {
    let mut lane = Lane::new(&lane_options());
    assert_eq!(
        lane.next_delay(Some(Duration::from_secs(30))),
        Duration::from_secs(30)
    );
    let capped = lane.next_delay(Some(Duration::from_secs(86_400)));
    assert_eq!(capped, MAX_RETRY_AFTER);
    for _ in 0..50 {
        assert!(lane.next_delay(None) <= Duration::from_secs(4));
    }
}

#[test]
fn while_nothing_answers_a_retry_carries_one_record() {
    let mut lane = Lane::new(&lane_options());
    let answer = |lane: &mut Lane, answered: Answered, delivered: bool| {
        let url = "http://127.0.0.1:1/v1/traces";
        let now = std::time::SystemTime::now();
        let _ = episode::follow(
            &mut lane.episode,
            Signal::Traces,
            url,
            answered,
            delivered,
            "",
            now,
        );
    };
    answer(&mut lane, Answered::Unreachable, false);
    assert_eq!(lane.limit(8), 1, "no connection: the retry only probes");
    answer(&mut lane, Answered::Http(503), false);
    assert_eq!(
        lane.limit(8),
        8,
        "an answer, even a refusal, gets full batches"
    );
    answer(&mut lane, Answered::Unreachable, false);
    answer(&mut lane, Answered::Http(200), true);
    assert_eq!(lane.limit(8), 8, "delivered: full batches again");
}

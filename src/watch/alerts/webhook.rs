//! A generic JSON webhook: each alert that fires or resolves is POSTed once,
//! in the shape of Alertmanager's own webhook payload (`version`, `status`,
//! `alerts[]` with `status`, `labels`, `annotations`, `startsAt`, `endsAt`),
//! so receivers written for Alertmanager can take it. Failures are retried
//! with backoff for a few minutes, then counted as lost.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde::Serialize;

use super::{Event, rfc3339};
use crate::watch::config::Webhook;

/// How long a webhook delivery is retried.
const GIVE_UP_AFTER: usize = 8;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    version: &'static str,
    status: &'static str,
    receiver: &'static str,
    alerts: Vec<WebhookAlert<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAlert<'a> {
    status: &'static str,
    labels: &'a std::collections::BTreeMap<String, String>,
    annotations: &'a std::collections::BTreeMap<String, String>,
    starts_at: String,
    ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    generator_url: &'a str,
}

/// The JSON body for one event.
pub fn payload(event: &Event, generator_url: &str) -> Vec<u8> {
    let a = event.alert();
    let p = Payload {
        version: "4",
        status: event.state(),
        receiver: "benchtel-watch",
        alerts: vec![WebhookAlert {
            status: event.state(),
            labels: &a.labels,
            annotations: &a.annotations,
            starts_at: rfc3339(a.starts_at),
            ends_at: a.resolved_at.map(rfc3339),
            generator_url,
        }],
    };
    serde_json::to_vec(&p).unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{url}: {source}")]
    Network { url: String, source: reqwest::Error },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
}

impl WebhookError {
    /// 4xx other than 408/429 will not get better by retrying.
    fn retryable(&self) -> bool {
        match self {
            WebhookError::Network { .. } => true,
            WebhookError::Status { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
        }
    }
}

/// Delivers one body, retrying with backoff.
pub async fn deliver(
    client: &reqwest::Client,
    hook: &Webhook,
    body: Vec<u8>,
    min_delay: Duration,
) -> Result<(), WebhookError> {
    let attempt = || async {
        let mut req = client
            .post(hook.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        for (k, v) in &hook.headers {
            req = req.header(k.as_str(), v.expose());
        }
        let resp = req.send().await.map_err(|source| WebhookError::Network {
            url: hook.url.to_string(),
            source,
        })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(WebhookError::Status {
                url: hook.url.to_string(),
                status: resp.status().as_u16(),
            })
        }
    };
    attempt
        .retry(
            ExponentialBuilder::new()
                .with_min_delay(min_delay)
                .with_max_delay(Duration::from_secs(60))
                .with_jitter()
                .with_max_times(GIVE_UP_AFTER),
        )
        .when(WebhookError::retryable)
        .await
}

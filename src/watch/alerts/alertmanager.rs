//! Pushing to Alertmanager's v2 API: `POST {base}/api/v2/alerts` with a JSON
//! array of alerts, to every configured Alertmanager (replicas do not share
//! alerts with each other).

use reqwest::StatusCode;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{url}: {source}")]
    Network { url: String, source: reqwest::Error },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
}

/// Where `POST /api/v2/alerts` of an Alertmanager at `base` is.
pub fn endpoint(base: &Url) -> String {
    format!("{}/api/v2/alerts", base.as_str().trim_end_matches('/'))
}

/// Posts one batch (a JSON array of alerts).
pub async fn post(client: &reqwest::Client, base: &Url, body: Vec<u8>) -> Result<(), SendError> {
    let url = endpoint(base);
    let resp = client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|source| SendError::Network {
            url: url.clone(),
            source,
        })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    Err(SendError::Status {
        url,
        status,
        body: body.chars().take(300).collect(),
    })
}

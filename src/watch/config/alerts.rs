//! `[alerts]` resolved: Alertmanagers, webhooks with their header files,
//! and the URL alerts link back to.

use url::Url;

use super::raw::{RawAlerts, RawWebhook};
use super::{Alerts, HttpConfig, Webhook};
use crate::config::{Checker, read_headers};

impl Alerts {
    /// A warning when alerts are computed but sent nowhere (no Alertmanager,
    /// no webhook), naming the keys to set; for the start-up log and
    /// `validate`.
    pub fn nowhere(&self) -> Option<&'static str> {
        (self.alertmanagers.is_empty() && self.webhooks.is_empty()).then_some(
            "alerts are computed but go nowhere: set alerts.alertmanagers \
             (e.g. [\"http://alertmanager:9093\"]) or add an [[alerts.webhook]] with a url",
        )
    }
}

pub(super) fn resolve(check: &mut Checker<'_>, raw: &RawAlerts, http: &HttpConfig) -> Alerts {
    let alertmanagers = raw
        .alertmanagers
        .iter()
        .enumerate()
        .filter_map(|(i, u)| check.endpoint(&format!("alerts.alertmanagers[{i}]"), u))
        .collect();
    let webhooks = raw
        .webhook
        .iter()
        .enumerate()
        .filter_map(|(i, w)| webhook(check, i, w))
        .collect();
    // Without one, alerts link to this watch as it listens.
    let external = if raw.external_url.is_empty() {
        format!("http://{}/", http.listen)
    } else {
        raw.external_url.clone()
    };
    let external_url = check
        .endpoint("alerts.external_url", &external)
        .unwrap_or_else(|| Url::parse("http://localhost/").expect("a fixed valid URL"));
    Alerts {
        alertmanagers,
        webhooks,
        resend_interval: check.positive("alerts.resend_interval", raw.resend_interval),
        hold: raw.hold,
        resolved_resend: raw.resolved_resend,
        external_url,
        timeout: check.positive("alerts.timeout", raw.timeout),
    }
}

/// `[[alerts.webhook]]` number `i`; `None` without a usable URL.
fn webhook(check: &mut Checker<'_>, i: usize, w: &RawWebhook) -> Option<Webhook> {
    let url = check.endpoint(&format!("alerts.webhook[{i}].url"), &w.url)?;
    let headers = match &w.headers_file {
        None => Vec::new(),
        Some(p) => match read_headers(p) {
            Ok(headers) => headers,
            Err(e) => {
                check.error(
                    &format!("alerts.webhook[{i}].headers_file"),
                    &format!("{:?}", p.display().to_string()),
                    format!("cannot read the headers file: {e}"),
                );
                Vec::new()
            }
        },
    };
    Some(Webhook { url, headers })
}

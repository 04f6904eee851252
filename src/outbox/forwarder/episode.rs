//! Export episodes: a stretch of answers of one kind (credentials refused,
//! no pipeline, throttled, too slow, …) from its first answer to the next
//! delivery. Each is logged once when it starts, with its remedy, and once
//! when it ends, not at every retry; while it lasts, the lane persists it
//! so `benchtel-agent outbox status` in another process can show it.

use std::time::SystemTime;

use super::Answered;
use crate::outbox::Signal;
use crate::outbox::status::{ExportEpisode, unix_ms};

/// The kinds of trouble a lane can be in; one episode is one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// 401, 403: our credentials are missing or refused.
    Credentials,
    /// 407: a proxy wants credentials.
    ProxyCredentials,
    /// 404: nothing receives this signal at that URL.
    NoPipeline,
    /// 429, 503: the collector sheds load.
    Throttled,
    /// 502, 504: a proxy in front of the collector cannot reach it.
    Gateway,
    /// No answer within `otlp.timeout`, or 408.
    Slow,
    /// No connection at all.
    Unreachable,
    /// 413: requests are split until they fit.
    TooLarge,
    /// Other 4xx/5xx: records are moved aside.
    Rejected,
}

impl Problem {
    pub fn of(answered: Answered) -> Problem {
        match answered {
            Answered::Timeout => Problem::Slow,
            Answered::Unreachable => Problem::Unreachable,
            Answered::Http(code) => match code {
                401 | 403 => Problem::Credentials,
                407 => Problem::ProxyCredentials,
                404 => Problem::NoPipeline,
                429 | 503 => Problem::Throttled,
                502 | 504 => Problem::Gateway,
                408 => Problem::Slow,
                413 => Problem::TooLarge,
                _ => Problem::Rejected,
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Credentials => "credentials",
            Problem::ProxyCredentials => "proxy_credentials",
            Problem::NoPipeline => "no_pipeline",
            Problem::Throttled => "throttled",
            Problem::Gateway => "gateway",
            Problem::Slow => "slow",
            Problem::Unreachable => "unreachable",
            Problem::TooLarge => "too_large",
            Problem::Rejected => "rejected",
        }
    }

    /// What a person should do about it.
    pub fn remedy(self, signal: Signal, url: &str) -> String {
        let s = signal.as_str();
        match self {
            Problem::Credentials => "check [otlp] headers / the secret file (otlp.headers_file, \
                 $CREDENTIALS_DIRECTORY/otlp-headers) against what the collector expects; \
                 records stay queued"
                .into(),
            Problem::ProxyCredentials => "the HTTP proxy on the way wants credentials: check \
                 HTTPS_PROXY/HTTP_PROXY (user:password@host) or NO_PROXY; records stay queued"
                .into(),
            Problem::NoPipeline => format!(
                "the collector has no {s} pipeline at {url}: add an otlp receiver to a {s} \
                 pipeline, or fix otlp.endpoint; records stay queued"
            ),
            Problem::Throttled => "the collector is shedding load; records stay queued and \
                 go when it asks (Retry-After); if it lasts, scale the collector"
                .into(),
            Problem::Gateway => "a proxy or load balancer in front of the collector cannot \
                 reach it: check the collector behind it; records stay queued"
                .into(),
            Problem::Slow => "the collector takes the connection but does not answer within \
                 otlp.timeout: check its load, or raise otlp.timeout; records stay queued \
                 (a request it finished late may arrive twice)"
                .into(),
            Problem::Unreachable => format!(
                "cannot connect to {url}: check otlp.endpoint, the network and that the \
                 collector runs; records stay queued"
            ),
            Problem::TooLarge => "the collector refuses requests this large: requests are \
                 split in halves; lower otlp.max_request_bytes to avoid the extra round trips"
                .into(),
            Problem::Rejected => "the collector refused these records for good: they are in \
                 the outbox's rejected table (`benchtel-agent outbox rejected list`, `show`, \
                 `replay`)"
                .into(),
        }
    }
}

/// One lane's current episode, in memory.
#[derive(Debug, Clone)]
pub struct Episode {
    pub problem: Problem,
    pub record: ExportEpisode,
}

/// What a lane must do after an answer: persist an episode, clear it, or
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persist {
    Nothing,
    Save(ExportEpisode),
    Clear,
}

/// Follows one answer: starts, continues or ends the lane's episode,
/// logging starts and ends (not continuations).
pub fn follow(
    current: &mut Option<Episode>,
    signal: Signal,
    url: &str,
    answered: Answered,
    delivered: bool,
    message: &str,
    now: SystemTime,
) -> Persist {
    let now_ms = unix_ms(now);
    if delivered {
        return match current.take() {
            Some(ended) => {
                log_end(signal, &ended, now_ms);
                Persist::Clear
            }
            None => Persist::Nothing,
        };
    }
    let problem = Problem::of(answered);
    if let Some(ep) = current.as_mut().filter(|e| e.problem == problem) {
        ep.record.attempts += 1;
        ep.record.last_ms = now_ms;
        ep.record.status = answered.label();
        ep.record.message = message.to_string();
        return Persist::Save(ep.record.clone());
    }
    if let Some(ended) = current.take() {
        log_end(signal, &ended, now_ms);
    }
    let record = ExportEpisode {
        status: answered.label(),
        problem: problem.as_str().into(),
        url: url.into(),
        since_ms: now_ms,
        last_ms: now_ms,
        attempts: 1,
        message: message.into(),
        remedy: problem.remedy(signal, url),
    };
    log_start(signal, problem, &record);
    let saved = record.clone();
    *current = Some(Episode { problem, record });
    Persist::Save(saved)
}

fn log_start(signal: Signal, problem: Problem, e: &ExportEpisode) {
    let s = signal.as_str();
    match problem {
        // Records move aside: each move is logged where it happens.
        Problem::Rejected => {}
        Problem::Credentials | Problem::ProxyCredentials | Problem::NoPipeline => {
            tracing::error!(signal = s, status = %e.status, problem = problem.as_str(), url = %e.url,
                answer = %e.message, remedy = %e.remedy, "collector refuses our {s}; retrying until it is fixed")
        }
        _ => {
            tracing::warn!(signal = s, status = %e.status, problem = problem.as_str(), url = %e.url,
            answer = %e.message, remedy = %e.remedy, "{s} cannot be forwarded now; retrying")
        }
    }
}

fn log_end(signal: Signal, ended: &Episode, now_ms: i64) {
    let e = &ended.record;
    let lasted_s = (now_ms - e.since_ms).max(0) / 1000;
    tracing::info!(
        signal = signal.as_str(),
        problem = %e.problem,
        status = %e.status,
        attempts = e.attempts,
        lasted_s,
        "export episode over: the collector takes {} again",
        signal.as_str()
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_episode_is_one_kind_from_its_first_answer_to_a_delivery() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let url = "http://c:4318/v1/logs";
        let mut ep = None;
        let mut follow_at = |a, ok, s| follow(&mut ep, Signal::Logs, url, a, ok, "m", t0 + s);
        let Persist::Save(first) = follow_at(Answered::Http(401), false, Duration::ZERO) else {
            panic!("an episode starts");
        };
        assert_eq!((first.problem.as_str(), first.attempts), ("credentials", 1));
        assert!(first.remedy.contains("[otlp] headers"), "{}", first.remedy);
        // 403 is the same kind: the same episode, one more attempt.
        let Persist::Save(more) = follow_at(Answered::Http(403), false, Duration::from_secs(5))
        else {
            panic!("it goes on");
        };
        assert_eq!((more.attempts, more.since_ms), (2, first.since_ms));
        assert_eq!(more.status, "403");
        // Another kind replaces it.
        let Persist::Save(nf) = follow_at(Answered::Http(404), false, Duration::from_secs(9))
        else {
            panic!("a new episode");
        };
        assert_eq!((nf.problem.as_str(), nf.attempts), ("no_pipeline", 1));
        assert!(
            nf.remedy
                .contains("no logs pipeline at http://c:4318/v1/logs")
        );
        assert_eq!(
            follow_at(Answered::Http(200), true, Duration::from_secs(10)),
            Persist::Clear
        );
        assert_eq!(
            follow_at(Answered::Http(200), true, Duration::from_secs(11)),
            Persist::Nothing
        );
    }

    #[test]
    fn each_answer_has_its_kind() {
        let kind = |a| Problem::of(a).as_str();
        assert_eq!(kind(Answered::Timeout), "slow");
        assert_eq!(kind(Answered::Unreachable), "unreachable");
        assert_eq!(kind(Answered::Http(407)), "proxy_credentials");
        assert_eq!(kind(Answered::Http(429)), "throttled");
        assert_eq!(kind(Answered::Http(504)), "gateway");
        assert_eq!(kind(Answered::Http(413)), "too_large");
        assert_eq!(kind(Answered::Http(400)), "rejected");
        assert_eq!(kind(Answered::Http(500)), "rejected");
    }
}

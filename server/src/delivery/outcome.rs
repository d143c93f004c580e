//! What one attempt's result does to its delivery and its endpoint. Pure, so each rule
//! (2xx, 410, Retry-After, retries exhausted, auto-disable) is unit-tested alone.

use std::time::Duration;

use super::{
    retry::{Next, RetryPolicy},
    status,
};

/// The facts of an attempt that decide what comes next.
#[derive(Clone, Debug, Default)]
pub struct AttemptResult {
    pub status_code: Option<u16>,
    pub retry_after: Option<Duration>,
    /// Why no response was obtained (`timeout`, `blocked_address`, ...).
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
}

impl AttemptResult {
    pub fn succeeded(&self) -> bool {
        self.error_kind.is_none() && self.status_code.is_some_and(|s| (200..300).contains(&s))
    }

    /// One line for `last_error`: the transport error, or the non-2xx status.
    pub fn summary(&self) -> Option<String> {
        if self.succeeded() {
            return None;
        }
        Some(
            match (&self.error_kind, &self.error_message, self.status_code) {
                (Some(kind), Some(msg), _) => format!("{kind}: {msg}"),
                (Some(kind), None, _) => kind.clone(),
                (None, _, Some(code)) if (300..400).contains(&code) => {
                    format!("HTTP {code} (redirects are not followed)")
                }
                (None, _, Some(code)) => format!("HTTP {code}"),
                (None, _, None) => "no response".into(),
            },
        )
    }
}

/// What happens to the endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointChange {
    None,
    /// A success ends a run of failures.
    ClearFailing,
    /// The first failure of a run starts it at this time.
    StartFailing(i64),
    /// Stop sending to it, for this reason.
    Disable(String),
}

/// The new state of a delivery after an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub status: &'static str,
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub endpoint: EndpointChange,
}

/// Decides the outcome of attempt number `attempt` (1-based) made at `now`.
/// `failing_since` is the endpoint's current run of failures; `auto_disable_after` is
/// zero to never auto-disable.
pub fn decide(
    result: &AttemptResult,
    attempt: u32,
    now: i64,
    policy: &RetryPolicy,
    failing_since: Option<i64>,
    auto_disable_after: Duration,
) -> Decision {
    if result.succeeded() {
        return Decision {
            status: status::DELIVERED,
            next_attempt_at: None,
            last_error: None,
            endpoint: if failing_since.is_some() {
                EndpointChange::ClearFailing
            } else {
                EndpointChange::None
            },
        };
    }
    let last_error = result.summary();
    if result.status_code == Some(410) {
        return Decision {
            status: status::FAILED,
            next_attempt_at: None,
            last_error,
            endpoint: EndpointChange::Disable(
                "the endpoint answered 410 Gone; re-enable it with UpdateEndpoint".into(),
            ),
        };
    }
    // Retry-After is a request to slow down, meaningful on 429 and 503.
    let retry_after = match result.status_code {
        Some(429 | 503) => result.retry_after,
        _ => None,
    };
    let (status, next_attempt_at) = match policy.next(attempt, retry_after) {
        Next::RetryIn(delay) => (
            status::FAILING,
            Some(now + i64::try_from(delay.as_micros()).unwrap_or(i64::MAX / 2)),
        ),
        Next::GiveUp => (status::FAILED, None),
    };
    let endpoint = match failing_since {
        None => EndpointChange::StartFailing(now),
        Some(since)
            if !auto_disable_after.is_zero()
                && now - since
                    >= i64::try_from(auto_disable_after.as_micros()).unwrap_or(i64::MAX) =>
        {
            EndpointChange::Disable(format!(
                "automatically disabled: every attempt failed for {}; re-enable it with UpdateEndpoint",
                human(auto_disable_after)
            ))
        }
        Some(_) => EndpointChange::None,
    };
    Decision {
        status,
        next_attempt_at,
        last_error,
        endpoint,
    }
}

fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s % 86400 == 0 => format!("{} days", s / 86400),
        s if s % 3600 == 0 => format!("{} hours", s / 3600),
        s => format!("{s} seconds"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000;

    fn result(code: Option<u16>) -> AttemptResult {
        AttemptResult {
            status_code: code,
            ..Default::default()
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy::from_secs(&[5, 300])
    }

    const FIVE_DAYS: Duration = Duration::from_secs(5 * 86400);

    #[test]
    fn success_delivers_and_clears_the_failure_run() {
        let d = decide(&result(Some(204)), 2, 0, &policy(), Some(-5), FIVE_DAYS);
        assert_eq!(d.status, status::DELIVERED);
        assert_eq!(d.endpoint, EndpointChange::ClearFailing);
        assert_eq!(d.last_error, None);
    }

    #[test]
    fn failure_retries_then_fails() {
        let d = decide(&result(Some(500)), 1, 0, &policy(), None, FIVE_DAYS);
        assert_eq!(d.status, status::FAILING);
        assert!(d.next_attempt_at.unwrap() > 4_000_000);
        assert_eq!(d.endpoint, EndpointChange::StartFailing(0));
        assert_eq!(d.last_error.as_deref(), Some("HTTP 500"));
        let d = decide(&result(Some(500)), 3, 0, &policy(), Some(0), FIVE_DAYS);
        assert_eq!(d.status, status::FAILED);
        assert_eq!(d.next_attempt_at, None);
    }

    #[test]
    fn redirects_and_transport_errors_are_failures() {
        let d = decide(&result(Some(302)), 1, 0, &policy(), None, FIVE_DAYS);
        assert_eq!(d.status, status::FAILING);
        assert!(d.last_error.unwrap().contains("redirects"));
        let timeout = AttemptResult {
            error_kind: Some("timeout".into()),
            error_message: Some("no answer in 15 s".into()),
            ..Default::default()
        };
        let d = decide(&timeout, 1, 0, &policy(), None, FIVE_DAYS);
        assert_eq!(d.last_error.as_deref(), Some("timeout: no answer in 15 s"));
    }

    #[test]
    fn gone_disables_the_endpoint() {
        let d = decide(&result(Some(410)), 1, 0, &policy(), None, FIVE_DAYS);
        assert_eq!(d.status, status::FAILED);
        assert!(matches!(d.endpoint, EndpointChange::Disable(r) if r.contains("410")));
    }

    #[test]
    fn retry_after_only_on_429_and_503() {
        let mut r = result(Some(429));
        r.retry_after = Some(Duration::from_secs(60));
        let d = decide(&r, 1, 0, &policy(), None, FIVE_DAYS);
        assert_eq!(d.next_attempt_at, Some(60_000_000));
        r.status_code = Some(500);
        let d = decide(&r, 1, 0, &policy(), None, FIVE_DAYS);
        assert!(d.next_attempt_at.unwrap() < 6_000_000);
    }

    #[test]
    fn sustained_failure_disables() {
        let d = decide(
            &result(Some(500)),
            1,
            6 * DAY,
            &policy(),
            Some(0),
            FIVE_DAYS,
        );
        assert!(matches!(d.endpoint, EndpointChange::Disable(r) if r.contains("5 days")));
        let d = decide(
            &result(Some(500)),
            1,
            4 * DAY,
            &policy(),
            Some(0),
            FIVE_DAYS,
        );
        assert_eq!(d.endpoint, EndpointChange::None);
        let d = decide(
            &result(Some(500)),
            1,
            60 * DAY,
            &policy(),
            Some(0),
            Duration::ZERO,
        );
        assert_eq!(d.endpoint, EndpointChange::None);
    }
}

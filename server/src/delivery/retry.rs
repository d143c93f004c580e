//! The retry schedule: how long to wait after each failed attempt, with jitter so that
//! the retries of many deliveries that failed together do not arrive together.

use std::time::Duration;

/// Jitter: a delay is spread over ±10% of itself.
const JITTER: f64 = 0.10;
/// Bounds on a receiver's `Retry-After`.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Try again after this long.
    RetryIn(Duration),
    /// No attempts left.
    GiveUp,
}

/// Delays between attempts: `schedule[0]` after the first failure, and so on; the
/// delivery fails for good after `schedule.len() + 1` attempts.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    schedule: Vec<Duration>,
}

impl RetryPolicy {
    pub fn from_secs(schedule: &[u32]) -> RetryPolicy {
        RetryPolicy {
            schedule: schedule
                .iter()
                .map(|s| Duration::from_secs(u64::from(*s)))
                .collect(),
        }
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.schedule.len() as u32 + 1
    }

    /// What follows `failed_attempts` failures; a receiver's `Retry-After` replaces the
    /// scheduled delay, within bounds, but never adds attempts.
    pub fn next(&self, failed_attempts: u32, retry_after: Option<Duration>) -> Next {
        let Some(delay) = self
            .schedule
            .get(failed_attempts.saturating_sub(1) as usize)
            .copied()
        else {
            return Next::GiveUp;
        };
        match retry_after {
            Some(asked) => Next::RetryIn(asked.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER)),
            None => Next::RetryIn(jitter(delay)),
        }
    }
}

fn jitter(delay: Duration) -> Duration {
    if delay.is_zero() {
        return delay;
    }
    let factor = 1.0 + JITTER * (rand::random::<f64>() * 2.0 - 1.0);
    delay.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_schedule_then_gives_up() {
        let policy = RetryPolicy::from_secs(&[5, 300]);
        assert_eq!(policy.max_attempts(), 3);
        let Next::RetryIn(first) = policy.next(1, None) else {
            panic!("expected a retry")
        };
        assert!(first >= Duration::from_millis(4500) && first <= Duration::from_millis(5500));
        let Next::RetryIn(second) = policy.next(2, None) else {
            panic!("expected a retry")
        };
        assert!(second >= Duration::from_secs(270) && second <= Duration::from_secs(330));
        assert_eq!(policy.next(3, None), Next::GiveUp);
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let policy = RetryPolicy::from_secs(&[5, 300]);
        assert_eq!(
            policy.next(1, Some(Duration::from_secs(42))),
            Next::RetryIn(Duration::from_secs(42))
        );
        assert_eq!(
            policy.next(1, Some(Duration::from_secs(10 * 24 * 3600))),
            Next::RetryIn(MAX_RETRY_AFTER)
        );
        assert_eq!(
            policy.next(1, Some(Duration::ZERO)),
            Next::RetryIn(MIN_RETRY_AFTER)
        );
        assert_eq!(policy.next(3, Some(Duration::from_secs(1))), Next::GiveUp);
    }

    #[test]
    fn an_empty_schedule_means_one_attempt() {
        let policy = RetryPolicy::from_secs(&[]);
        assert_eq!(policy.max_attempts(), 1);
        assert_eq!(policy.next(1, None), Next::GiveUp);
    }
}

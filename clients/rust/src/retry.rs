use std::time::Duration;

use tonic::Code;

use crate::FerryError;

/// How publishes are retried. Publish retries are safe: the event ids are fixed before the
/// first attempt, so a retry of an event Ferry already logged answers `duplicate = true`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// First backoff; it doubles per retry up to `max_backoff` (each wait jittered to 50-100 %).
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Time for the whole call, retries and waits included.
    pub deadline: Duration,
    /// Time for one attempt; a late attempt counts as `DEADLINE_EXCEEDED` and is retried.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(20),
        }
    }
}

/// What the client does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Permanent: the error is returned.
    No,
    /// Retried after the policy's next backoff.
    Backoff,
    /// Retried after the delay of the status's `google.rpc.RetryInfo`.
    After(Duration),
}

/// Classifies a failed publish attempt.
///
/// - `UNAVAILABLE`: retried (Ferry draining, storage failed, or no connection).
/// - `RESOURCE_EXHAUSTED`: retried only with an ErrorInfo (the log or disk is full); without
///   one the gRPC transport refused an oversized request, which can never succeed.
/// - `CANCELLED`: retried. A caller cancels by dropping the future, which never yields a
///   status, so a `CANCELLED` seen here came from the server's side.
/// - `DEADLINE_EXCEEDED`: retried (one attempt ran out of time; the overall deadline still
///   bounds the call).
/// - `UNKNOWN` without an ErrorInfo: retried; Ferry always sends one, so this is the
///   connection breaking mid-call (tonic reports an HTTP/2 reset that way).
/// - Everything else (`INVALID_ARGUMENT`, `ALREADY_EXISTS`, `FAILED_PRECONDITION`,
///   `NOT_FOUND`, `INTERNAL`, ...): permanent.
///
/// A `RetryInfo` delay is honoured whenever the error is retried.
pub fn classify(err: &FerryError) -> Retry {
    let retryable = match err.code() {
        Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded => true,
        Code::ResourceExhausted => err.reason().is_some(),
        Code::Unknown => err.reason().is_none(),
        _ => false,
    };
    match (retryable, err.retry_delay()) {
        (false, _) => Retry::No,
        (true, Some(delay)) => Retry::After(delay),
        (true, None) => Retry::Backoff,
    }
}

/// Capped exponential backoff with jitter.
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(self.max);
        // Half fixed, half random: retries of many clients spread out but never come early.
        base / 2 + base.mul_f64(fastrand::f64() / 2.0)
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let bounds = [(50, 100), (100, 200), (200, 400), (200, 400), (200, 400)];
        for (lo, hi) in bounds {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(lo) && d <= Duration::from_millis(hi),
                "{d:?} not in {lo}..{hi} ms"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}

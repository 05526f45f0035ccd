//! What to do after an attempt (protocol.md §9) and when to try again.

use kuper_bridge_storage::OutboxRecord;
use rand::Rng;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the request timeout: Kuper may have applied it.
    Timeout,
    /// Could not connect: Kuper never saw the request.
    Connect(String),
    /// The connection broke after the request may have been sent.
    Transport(String),
    /// No access token could be obtained.
    Token(String),
}

/// The error and its causes, without the request URL.
fn full_chain(e: &reqwest::Error) -> String {
    let mut text = match e.url() {
        Some(url) => e.to_string().replace(url.as_str(), "[url]"),
        None => e.to_string(),
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Failure {
    pub fn from_reqwest(e: &reqwest::Error) -> Self {
        // Without the URL: a subscriber's URL may carry a token in its query string, and this
        // text goes to the log and the audit log.
        let text = || full_chain(e);
        if e.is_timeout() {
            Failure::Timeout
        } else if e.is_connect() {
            Failure::Connect(text())
        } else {
            Failure::Transport(text())
        }
    }

    /// The request may have reached Kuper, so a later 422 may be a repeat.
    pub fn in_doubt(&self) -> bool {
        matches!(self, Failure::Timeout | Failure::Transport(_))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout => f.write_str("timeout waiting for Kuper"),
            Failure::Connect(e) => write!(f, "connection failed: {e}"),
            Failure::Transport(e) => write!(f, "transport error: {e}"),
            Failure::Token(e) => write!(f, "no access token: {e}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Delivered {
        repeat: bool,
    },
    /// `at`: unix ms of the next attempt.
    Retry {
        at: i64,
        in_doubt: bool,
    },
    Dead {
        reason: String,
    },
}

/// The retry schedule: a table, not open-ended doubling (engineering-notes.md).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before retry n (1-based); the last entry repeats.
    pub schedule: Vec<Duration>,
    /// ±fraction applied to every delay, so retries of many orders spread out.
    pub jitter: f64,
    /// Minimum delay after 429 or a timeout (Kuper is overloaded; do not pile on).
    pub throttle_floor: Duration,
    /// Upper bound for Kuper's `Retry-After`.
    pub retry_after_max: Duration,
    /// After this long since the notification was queued, stop and dead-letter it.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            schedule: [1, 5, 30, 120, 300, 900].into_iter().map(Duration::from_secs).collect(),
            jitter: 0.2,
            throttle_floor: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(900),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// Delay before the next attempt after `attempts` attempts so far, with jitter.
    pub fn delay(
        &self,
        attempts: i64,
        floor: Option<Duration>,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Duration {
        let index = usize::try_from(attempts.max(1) - 1).unwrap_or(0).min(self.schedule.len().saturating_sub(1));
        let base = self.schedule.get(index).copied().unwrap_or(Duration::from_secs(60));
        let factor = if self.jitter > 0.0 { 1.0 + rng.random_range(-self.jitter..=self.jitter) } else { 1.0 };
        let mut delay = base.mul_f64(factor.max(0.0));
        if let Some(f) = floor {
            delay = delay.max(f);
        }
        if let Some(ra) = retry_after {
            delay = delay.max(ra.min(self.retry_after_max));
        }
        delay
    }
}

/// Decides the fate of an attempt. Pure apart from the jitter.
#[allow(clippy::too_many_arguments)]
pub fn classify(
    status: Option<u16>,
    failure: Option<Failure>,
    message: &str,
    repeat: bool,
    record: &OutboxRecord,
    retry_after: Option<Duration>,
    policy: &RetryPolicy,
    now_ms: i64,
) -> Verdict {
    let mut rng = rand::rng();
    let give_up_ms = i64::try_from(policy.give_up_after.as_millis()).unwrap_or(i64::MAX);
    let retry = |floor: Option<Duration>, in_doubt: bool, rng: &mut rand::rngs::ThreadRng| {
        if now_ms.saturating_sub(record.retry_since) >= give_up_ms {
            return Verdict::Dead {
                reason: format!("gave up after {} attempts over {:?}", record.attempts, policy.give_up_after),
            };
        }
        let d = policy.delay(record.attempts, floor, retry_after, rng);
        Verdict::Retry { at: now_ms + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2), in_doubt }
    };
    match (status, failure) {
        (Some(200..=299), _) => Verdict::Delivered { repeat: false },
        (Some(422), _) if record.in_doubt && repeat => {
            // An earlier attempt reached Kuper but its answer never reached us, and Kuper says
            // this very event was already applied.
            Verdict::Delivered { repeat: true }
        }
        (Some(s @ (400 | 404 | 405 | 422)), _) => {
            Verdict::Dead { reason: format!("Kuper refused with {s}: {message}") }
        }
        (Some(429), _) => retry(Some(policy.throttle_floor), false, &mut rng),
        (Some(401 | 403), _) => retry(None, false, &mut rng),
        (Some(408), _) | (None, Some(Failure::Timeout)) => retry(Some(policy.throttle_floor), true, &mut rng),
        (Some(500..=599), _) => retry(None, true, &mut rng),
        (Some(s), _) if (300..400).contains(&s) => {
            Verdict::Dead { reason: format!("Kuper answered a redirect ({s}); check kuper.base_url") }
        }
        (Some(s), _) => Verdict::Dead { reason: format!("unexpected status {s}: {message}") },
        (None, Some(f)) => {
            let in_doubt = f.in_doubt();
            retry(None, in_doubt, &mut rng)
        }
        (None, None) => retry(None, true, &mut rng),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuper_bridge_storage::OutboxStatus;

    fn record(attempts: i64, in_doubt: bool) -> OutboxRecord {
        OutboxRecord {
            id: 1,
            order_id: 1,
            kind: kuper_bridge_storage::OutboxKind::Notification,
            destination: kuper_bridge_storage::Destination::kuper(),
            event: "order.in_work".into(),
            body: "{}".into(),
            status: OutboxStatus::Pending,
            attempts,
            next_attempt_at: 0,
            waiting: false,
            in_doubt,
            last_status: None,
            last_error: None,
            created_at: 0,
            sent_at: None,
            lease: Some("t/1/1".into()),
            retry_since: 0,
            idempotency_key: "kb-test".into(),
        }
    }

    fn no_jitter() -> RetryPolicy {
        RetryPolicy { jitter: 0.0, ..RetryPolicy::default() }
    }

    #[test]
    fn table_of_answers() {
        let p = no_jitter();
        let cases: &[(Option<u16>, Option<Failure>, bool, &str)] = &[
            (Some(200), None, false, "delivered"),
            (Some(202), None, false, "delivered"),
            (Some(400), None, false, "dead"),
            (Some(404), None, false, "dead"),
            (Some(405), None, false, "dead"),
            (Some(422), None, false, "dead"),
            (Some(422), None, true, "repeat"),
            (Some(429), None, false, "retry"),
            (Some(500), None, false, "retry"),
            (Some(503), None, false, "retry"),
            (Some(401), None, false, "retry"),
            (Some(302), None, false, "dead"),
            (None, Some(Failure::Timeout), false, "retry"),
            (None, Some(Failure::Connect("refused".into())), false, "retry"),
        ];
        for (status, failure, in_doubt, expected) in cases {
            let v = classify(
                *status,
                failure.clone(),
                "order.in_work already applied",
                true,
                &record(1, *in_doubt),
                None,
                &p,
                1000,
            );
            let got = match v {
                Verdict::Delivered { repeat: true } => "repeat",
                Verdict::Delivered { .. } => "delivered",
                Verdict::Retry { .. } => "retry",
                Verdict::Dead { .. } => "dead",
            };
            assert_eq!(got, *expected, "{status:?} {failure:?} in_doubt={in_doubt}");
        }
        // A 422 that is not a repeat stays dead even after an in-doubt attempt.
        let v =
            classify(Some(422), None, "order_of_events: ready before in_work", false, &record(2, true), None, &p, 0);
        assert!(matches!(v, Verdict::Dead { .. }));
    }

    #[test]
    fn schedule_then_floor_then_retry_after() {
        let p = no_jitter();
        let mut rng = rand::rng();
        let secs: Vec<u64> = (1..=8).map(|n| p.delay(n, None, None, &mut rng).as_secs()).collect();
        assert_eq!(secs, vec![1, 5, 30, 120, 300, 900, 900, 900]);
        assert_eq!(p.delay(1, Some(Duration::from_secs(60)), None, &mut rng), Duration::from_secs(60));
        assert_eq!(p.delay(1, None, Some(Duration::from_secs(10)), &mut rng), Duration::from_secs(10));
        assert_eq!(
            p.delay(1, None, Some(Duration::from_secs(99_999)), &mut rng),
            Duration::from_secs(900),
            "Retry-After is clamped"
        );
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = RetryPolicy::default();
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let d = p.delay(3, None, None, &mut rng).as_secs_f64();
            assert!((24.0..=36.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn gives_up_after_the_orders_lifetime() {
        let p = RetryPolicy { give_up_after: Duration::from_secs(10), ..no_jitter() };
        let v = classify(Some(503), None, "", false, &record(7, false), None, &p, 11_000);
        assert!(matches!(v, Verdict::Dead { .. }), "{v:?}");
    }

    /// A two-hour Kuper outage on a virtual clock: the record is retried on the schedule (with
    /// jitter inside ±20 %), never faster than the floor after 429s and timeouts, honours a
    /// clamped Retry-After, and gives up into a dead letter only after `give_up_after`.
    #[test]
    fn outage_on_a_virtual_clock() {
        let p = RetryPolicy { give_up_after: Duration::from_secs(2 * 3600), ..RetryPolicy::default() };
        let mut r = record(0, false);
        let mut now = 0i64;
        let mut delays = Vec::new();
        let answers = [Some(503), Some(429), None, Some(500), Some(503)];
        loop {
            r.attempts += 1;
            let (status, failure) = match answers[(r.attempts as usize - 1) % answers.len()] {
                Some(s) => (Some(s), None),
                None => (None, Some(Failure::Timeout)),
            };
            match classify(status, failure.clone(), "", false, &r, None, &p, now) {
                Verdict::Retry { at, .. } => {
                    let delay = at - now;
                    let base = p.schedule[(r.attempts as usize - 1).min(p.schedule.len() - 1)].as_millis() as i64;
                    // Throttling answers (429, timeouts) wait at least the floor.
                    let floor = if status == Some(429) || failure.is_some() { 60_000 } else { 0 };
                    let (lowest, highest) = ((base * 8 / 10).max(floor), (base * 12 / 10).max(floor));
                    assert!(
                        (lowest..=highest + 1).contains(&delay),
                        "attempt {}: {delay} ms outside {lowest}..{highest}",
                        r.attempts
                    );
                    delays.push(delay);
                    now = at;
                }
                Verdict::Dead { reason } => {
                    assert!(now >= 2 * 3600 * 1000, "gave up too early at {now} ms: {reason}");
                    break;
                }
                Verdict::Delivered { .. } => unreachable!("nothing succeeds during the outage"),
            }
            assert!(r.attempts < 100, "retries must stop");
        }
        // 1 s, 5 s (floored to 60 s), 30 s (floored), 2 min, 5 min, then every 15 min.
        assert!(delays.len() >= 8 && delays.len() <= 14, "{} attempts in two hours: {delays:?}", delays.len());
        assert!(delays[0] <= 1_200, "the first retry is quick");
        let late: Vec<i64> = delays[6..].to_vec();
        assert!(late.iter().all(|d| (720_000..=1_080_000).contains(d)), "then every 15 min ± 20 %: {late:?}");
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let p = no_jitter();
        let r = record(1, false);
        let at = |ra: u64| match classify(Some(503), None, "", false, &r, Some(Duration::from_secs(ra)), &p, 0) {
            Verdict::Retry { at, .. } => at,
            v => panic!("{v:?}"),
        };
        assert_eq!(at(10), 10_000, "a longer Retry-After than the schedule wins");
        assert_eq!(at(0), 1_000, "a shorter one does not shorten the schedule");
        assert_eq!(at(86_400), 900_000, "clamped to retry_after_max");
    }
}

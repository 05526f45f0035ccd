//! Scripted failures: a FIFO of per-request faults and a timed outage.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Which requests a fault applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPath {
    /// The three notification paths.
    #[default]
    Notifications,
    /// `POST /auth/token`.
    Token,
    /// `GET /ofm/api/v1/shipments` and `GET /ofm/api/v1/shipments/…` (the pull API).
    Shipments,
    /// Any of the above.
    Any,
}

impl FaultPath {
    fn matches(self, endpoint: FaultPath) -> bool {
        self == FaultPath::Any || self == endpoint
    }
}

/// `POST /sim/v1/faults` body.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    #[serde(default = "one")]
    pub times: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub drop: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    #[serde(default)]
    pub path: FaultPath,
}

fn one() -> u32 {
    1
}

impl FaultSpec {
    pub fn check(&self) -> Result<(), String> {
        if self.times == 0 {
            return Err("times must be at least 1".into());
        }
        if let Some(status) = self.status {
            if !(100..=599).contains(&status) {
                return Err(format!("status {status} is not an HTTP status"));
            }
        }
        if self.status.is_none() && self.delay_ms.is_none() && !self.drop {
            return Err("a fault needs status, delay_ms or drop".into());
        }
        Ok(())
    }

    /// A fault that only delays lets the request be processed normally afterwards.
    pub fn answers(&self) -> bool {
        self.status.is_some() || self.drop
    }

    pub fn delay(&self) -> Option<Duration> {
        self.delay_ms.map(Duration::from_millis)
    }
}

/// `POST /sim/v1/outage` body.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OutageSpec {
    pub status: Option<u16>,
    pub for_ms: Option<u64>,
    pub hang_ms: Option<u64>,
    pub retry_after: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outage {
    Status { status: u16, until: Instant, retry_after: Option<u64> },
    Hang { until: Instant },
}

impl OutageSpec {
    pub fn into_outage(self, now: Instant) -> Result<Outage, String> {
        match (self.hang_ms, self.for_ms) {
            (Some(_), Some(_)) => Err("give either for_ms (with status) or hang_ms".into()),
            (Some(hang), None) => Ok(Outage::Hang { until: now + Duration::from_millis(hang) }),
            (None, Some(duration)) => {
                let status = self.status.unwrap_or(503);
                if !(100..=599).contains(&status) {
                    return Err(format!("status {status} is not an HTTP status"));
                }
                Ok(Outage::Status {
                    status,
                    until: now + Duration::from_millis(duration),
                    retry_after: self.retry_after,
                })
            }
            (None, None) => Err("an outage needs for_ms or hang_ms".into()),
        }
    }
}

#[derive(Debug, Default)]
pub struct Faults {
    queue: VecDeque<(u64, FaultSpec, u32)>,
    next_id: u64,
    outage: Option<Outage>,
}

impl Faults {
    pub fn push(&mut self, spec: FaultSpec) -> Result<u64, String> {
        spec.check()?;
        self.next_id += 1;
        let times = spec.times;
        self.queue.push_back((self.next_id, spec, times));
        Ok(self.next_id)
    }

    /// Consumes one use of the oldest fault that applies to this endpoint.
    pub fn take(&mut self, endpoint: FaultPath) -> Option<FaultSpec> {
        let index = self.queue.iter().position(|(_, spec, _)| spec.path.matches(endpoint))?;
        let entry = self.queue.get_mut(index)?;
        entry.2 = entry.2.saturating_sub(1);
        let spec = entry.1.clone();
        if entry.2 == 0 {
            self.queue.remove(index);
        }
        Some(spec)
    }

    pub fn clear(&mut self) -> usize {
        let count = self.queue.len();
        self.queue.clear();
        count
    }

    pub fn set_outage(&mut self, outage: Outage) {
        self.outage = Some(outage);
    }

    pub fn end_outage(&mut self) -> bool {
        self.outage.take().is_some()
    }

    /// The outage in force, forgetting one that is over.
    pub fn outage(&mut self, now: Instant) -> Option<Outage> {
        let until = match &self.outage {
            Some(Outage::Status { until, .. } | Outage::Hang { until }) => *until,
            None => return None,
        };
        if until <= now {
            self.outage = None;
        }
        self.outage.clone()
    }

    pub fn snapshot(&mut self, now: Instant) -> Value {
        let queue: Vec<Value> =
            self.queue.iter().map(|(id, spec, left)| json!({"id": id, "left": left, "fault": spec})).collect();
        let outage = match self.outage(now) {
            Some(Outage::Status { status, until, retry_after }) => json!({
                "status": status,
                "left_ms": until.saturating_duration_since(now).as_millis() as u64,
                "retry_after": retry_after,
            }),
            Some(Outage::Hang { until }) => {
                json!({"hang": true, "left_ms": until.saturating_duration_since(now).as_millis() as u64})
            }
            None => Value::Null,
        };
        json!({"faults": queue, "outage": outage})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(times: u32, status: u16, path: FaultPath) -> FaultSpec {
        FaultSpec { times, status: Some(status), delay_ms: None, drop: false, retry_after: None, path }
    }

    #[test]
    fn faults_are_consumed_in_order_per_path() {
        let mut faults = Faults::default();
        assert!(faults.push(spec(2, 500, FaultPath::Notifications)).is_ok());
        assert!(faults.push(spec(1, 401, FaultPath::Token)).is_ok());
        assert!(faults.push(spec(1, 503, FaultPath::Notifications)).is_ok());
        let take = |f: &mut Faults, p| f.take(p).and_then(|s| s.status);
        assert_eq!(take(&mut faults, FaultPath::Token), Some(401));
        assert_eq!(take(&mut faults, FaultPath::Token), None);
        assert_eq!(take(&mut faults, FaultPath::Notifications), Some(500));
        assert_eq!(take(&mut faults, FaultPath::Notifications), Some(500));
        assert_eq!(take(&mut faults, FaultPath::Notifications), Some(503));
        assert_eq!(take(&mut faults, FaultPath::Notifications), None);
    }

    #[test]
    fn specs_are_checked() {
        let parsed: Result<FaultSpec, _> = serde_json::from_str(r#"{"times":1}"#);
        assert!(parsed.is_ok_and(|s| s.check().is_err()));
        let parsed: Result<FaultSpec, _> = serde_json::from_str(r#"{"times":1,"status":503,"bogus":1}"#);
        assert!(parsed.is_err());
        let parsed: Result<FaultSpec, _> = serde_json::from_str(r#"{"delay_ms":10}"#);
        assert!(parsed.is_ok_and(|s| s.check().is_ok() && !s.answers() && s.times == 1));
    }

    #[test]
    fn outages_end() {
        let mut faults = Faults::default();
        let now = Instant::now();
        let outage =
            OutageSpec { status: Some(503), for_ms: Some(100), hang_ms: None, retry_after: None }.into_outage(now);
        assert!(outage.is_ok());
        if let Ok(outage) = outage {
            faults.set_outage(outage);
        }
        assert!(faults.outage(now).is_some());
        assert!(faults.outage(now + Duration::from_millis(150)).is_none());
        assert!(faults.outage(now).is_none());
    }
}

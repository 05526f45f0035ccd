//! The pure half of `kuper-bridge-bench`: statistics, the FIFO check, request bodies, `/proc`
//! parsing, the seeded random source and the crash soak's verdict. Everything here is deterministic and unit-tested (`tests/helpers.rs`);
//! the binary (`main.rs`) does the IO. The one exception is [`database`]: the throwaway
//! database (SQLite file or fresh PostgreSQL database) that the benchmark and the soak share.

pub mod stats {
    use std::time::Duration;

    /// Nearest-rank percentile of an ascending slice (`p` in 0..=100). `None` when empty.
    ///
    /// The rank is `ceil(p/100 × n)`, so p99.9 of fewer than 1,000 samples is the maximum:
    /// the figure never claims a precision the sample cannot give.
    pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
        if sorted.is_empty() || !p.is_finite() {
            return None;
        }
        let n = sorted.len();
        let rank = (p.clamp(0.0, 100.0) / 100.0 * n as f64).ceil() as usize;
        sorted.get(rank.clamp(1, n) - 1).copied()
    }

    /// Latency summary of one run.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct Summary {
        pub count: usize,
        pub p50: Duration,
        pub p99: Duration,
        pub p999: Duration,
        pub max: Duration,
        pub mean: Duration,
    }

    impl Summary {
        pub fn of(mut samples: Vec<Duration>) -> Self {
            if samples.is_empty() {
                return Self::default();
            }
            samples.sort_unstable();
            let total: Duration = samples.iter().sum();
            let pick = |p| percentile(&samples, p).unwrap_or_default();
            Self {
                count: samples.len(),
                p50: pick(50.0),
                p99: pick(99.0),
                p999: pick(99.9),
                max: samples.last().copied().unwrap_or_default(),
                mean: total / u32::try_from(samples.len()).unwrap_or(u32::MAX),
            }
        }

        pub fn to_json(&self) -> serde_json::Value {
            serde_json::json!({
                "count": self.count,
                "p50_ms": ms(self.p50),
                "p99_ms": ms(self.p99),
                "p999_ms": ms(self.p999),
                "max_ms": ms(self.max),
                "mean_ms": ms(self.mean),
            })
        }
    }

    /// Milliseconds with microsecond precision, for JSON.
    pub fn ms(d: Duration) -> f64 {
        (d.as_secs_f64() * 1e6).round() / 1e3
    }

    /// `0.42 ms`, `3.1 ms`, `27 ms`, `1.25 s`: three significant digits at most.
    pub fn fmt_ms(d: Duration) -> String {
        let v = d.as_secs_f64() * 1e3;
        if v >= 1000.0 {
            format!("{:.2} s", v / 1000.0)
        } else if v >= 100.0 {
            format!("{v:.0} ms")
        } else if v >= 10.0 {
            format!("{v:.1} ms")
        } else {
            format!("{v:.2} ms")
        }
    }

    /// `12,345` — thousands separated, for the table.
    pub fn thousands(v: f64) -> String {
        let rounded = v.round();
        if !rounded.is_finite() {
            return "-".into();
        }
        let negative = rounded < 0.0;
        let digits = format!("{:.0}", rounded.abs());
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if negative {
            format!("-{out}")
        } else {
            out
        }
    }
}

pub mod fifo {
    use std::collections::HashMap;

    /// One notification as the simulator logged it: the order, the event and the arrival
    /// sequence number the simulator gave it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Arrival {
        pub order: String,
        pub event: String,
        pub seq: u64,
    }

    impl Arrival {
        pub fn new(order: &str, event: &str, seq: u64) -> Self {
            Self { order: order.to_string(), event: event.to_string(), seq }
        }
    }

    /// Per-order FIFO violations: every order is expected to receive `expected` in that
    /// order. Arrivals are taken in the simulator's arrival order (`seq`); an arrival whose
    /// place in `expected` is before that of an event of the same order that already arrived
    /// overtook it, and counts once. A repeat of the latest event (an at-least-once resend)
    /// is not a violation. Events not in `expected` are ignored here (count them apart).
    pub fn fifo_violations(expected: &[&str], arrivals: &[Arrival]) -> usize {
        let mut sorted: Vec<&Arrival> = arrivals.iter().collect();
        sorted.sort_by_key(|a| a.seq);
        let mut highest: HashMap<&str, usize> = HashMap::new();
        let mut violations = 0;
        for a in sorted {
            let Some(place) = expected.iter().position(|e| *e == a.event) else { continue };
            let seen = highest.entry(a.order.as_str()).or_insert(place);
            if place < *seen {
                violations += 1;
            } else {
                *seen = place;
            }
        }
        violations
    }

    /// Orders (of `orders`) that did not receive every event of `expected` at least once.
    pub fn incomplete_orders(expected: &[&str], orders: &[String], arrivals: &[Arrival]) -> usize {
        let mut got: HashMap<&str, Vec<&str>> = HashMap::new();
        for a in arrivals {
            got.entry(a.order.as_str()).or_default().push(a.event.as_str());
        }
        orders
            .iter()
            .filter(|o| {
                let events = got.get(o.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                !expected.iter().all(|e| events.contains(e))
            })
            .count()
    }
}

pub mod body {
    use serde_json::{json, Value};

    /// Kuper's `order.created` for a Kuper-delivery store, as recorded in the fixtures.
    pub const FIXTURE: &str = include_str!("../../../fixtures/webhooks/order.created.kuper-delivery.json");

    pub const ORDER_ID_SLOT: &str = "__BENCH_ORIGINAL_ORDER_ID__";
    pub const ORDER_UUID_SLOT: &str = "__BENCH_ORDER_UUID__";

    /// `"94.99"` → 9499. Only what Kuper's money strings look like (digits, one dot, at
    /// most two decimals); anything else is `None`.
    pub fn kopecks(text: &str) -> Option<i64> {
        let (whole, frac) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        if whole.is_empty() || frac.len() > 2 || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let frac = format!("{frac:0<2}");
        Some(whole.parse::<i64>().ok()? * 100 + frac.parse::<i64>().ok()?)
    }

    pub fn money(kopecks: i64) -> String {
        format!("{}.{:02}", kopecks / 100, kopecks % 100)
    }

    /// `n` positions built from the fixture's lines (cycled), each with its own SKU id.
    pub fn positions(fixture: &Value, n: usize) -> anyhow::Result<Vec<Value>> {
        let lines = fixture["payload"]["positions"]
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| anyhow::anyhow!("the fixture has no payload.positions"))?;
        Ok((0..n)
            .map(|i| {
                let mut line = lines[i % lines.len()].clone();
                let id = line["id"].as_str().unwrap_or("SKU").to_string();
                line["id"] = json!(format!("{id}-{i:02}"));
                line
            })
            .collect())
    }

    /// The `order.created` body with `n` positions and correct totals, with slots for the
    /// order's ids ([`ORDER_ID_SLOT`], [`ORDER_UUID_SLOT`]) so that a request costs the load
    /// generator two string replacements, not a JSON serialization.
    pub fn order_created_template(n: usize) -> anyhow::Result<String> {
        let mut v: Value = serde_json::from_str(FIXTURE)?;
        let lines = positions(&v, n)?;
        let sum = |key: &str| -> anyhow::Result<i64> {
            lines.iter().try_fold(0i64, |acc, l| {
                let text = l[key].as_str().unwrap_or("");
                kopecks(text).map(|k| acc + k).ok_or_else(|| anyhow::anyhow!("fixture {key} {text:?} is not money"))
            })
        };
        let (total, discount) = (sum("totalPrice")?, sum("totalDiscountPrice")?);
        let payload = v["payload"].as_object_mut().ok_or_else(|| anyhow::anyhow!("the fixture has no payload"))?;
        payload.insert("originalOrderId".into(), json!(ORDER_ID_SLOT));
        payload.insert("orderUUID".into(), json!(ORDER_UUID_SLOT));
        payload.insert("positions".into(), Value::Array(lines));
        payload.insert("total".into(), json!({"totalPrice": money(total), "discountTotalPrice": money(discount)}));
        Ok(serde_json::to_string(&v)?)
    }

    /// [`order_created_template`] as if Kuper sent it at `now`: the webhook's `timestamp` is
    /// `now` and the delivery window is two to three hours later, so the order's deadlines
    /// (assembly: `timestamp` + the policy's minutes) lie ahead, as in production. The
    /// fixture's own dates are in the past, which would make every stored order "missed" at
    /// the gateway's first deadline sweep and add an audit write per order.
    pub fn order_created_template_at(n: usize, now: chrono::DateTime<chrono::FixedOffset>) -> anyhow::Result<String> {
        let mut v: Value = serde_json::from_str(&order_created_template(n)?)?;
        let at = |d: chrono::DateTime<chrono::FixedOffset>| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
        v["timestamp"] = json!(at(now));
        if let Some(delivery) = v["payload"]["delivery"].as_object_mut() {
            delivery.insert("expectedFrom".into(), json!(at(now + chrono::Duration::hours(2))));
            delivery.insert("expectedTo".into(), json!(at(now + chrono::Duration::hours(3))));
        }
        Ok(serde_json::to_string(&v)?)
    }

    /// One request body: the template with this order's ids.
    pub fn fill(template: &str, original_order_id: &str, order_uuid: &str) -> String {
        template.replacen(ORDER_ID_SLOT, original_order_id, 1).replacen(ORDER_UUID_SLOT, order_uuid, 1)
    }

    /// A Kuper-looking order id, unique per sequence number.
    pub fn order_id(seq: u64) -> String {
        format!("H{:011}", 90_000_000_000u64 + seq)
    }
}

pub mod procfs {
    /// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
    pub fn status_bytes(status: &str, field: &str) -> Option<u64> {
        status.lines().find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            let mut parts = rest.split_whitespace();
            let value: u64 = parts.next()?.parse().ok()?;
            match parts.next() {
                Some("kB") | None => Some(value * 1024),
                Some(_) => None,
            }
        })
    }

    /// `utime + stime` of `/proc/PID/stat`, in clock ticks. The command name may contain
    /// spaces and parentheses, so fields are counted from the last `)`.
    pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
        let after = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        // after ")": state(3) ppid(4) … utime(14) stime(15) → indexes 11 and 12.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(utime + stime)
    }

    /// Time a thread spent waiting on a run queue (ready, not running), in ns: the second
    /// field of `/proc/PID/task/TID/schedstat`. Summed over a process's threads it tells
    /// how much the process was held back by other work competing for the CPUs.
    pub fn schedstat_wait_ns(schedstat: &str) -> Option<u64> {
        schedstat.split_whitespace().nth(1)?.parse().ok()
    }

    /// The mount (device, type) holding `path`, from `/proc/mounts` text: the longest
    /// mount point that is a prefix of `path`.
    pub fn mount_of(mounts: &str, path: &str) -> Option<(String, String)> {
        let mut best: Option<(usize, String, String)> = None;
        for line in mounts.lines() {
            let mut f = line.split_whitespace();
            let (Some(dev), Some(point), Some(kind)) = (f.next(), f.next(), f.next()) else { continue };
            let point = point.replace("\\040", " ");
            let inside = path == point
                || point == "/"
                || path.strip_prefix(point.as_str()).is_some_and(|rest| rest.starts_with('/'));
            if inside && best.as_ref().is_none_or(|b| point.len() >= b.0) {
                best = Some((point.len(), dev.to_string(), kind.to_string()));
            }
        }
        best.map(|(_, dev, kind)| (dev, kind))
    }
}

pub mod rng {
    use std::time::Duration;

    /// SplitMix64: a small, seeded, reproducible source for the soak's kill schedule and the
    /// board's orders. Not for anything secret.
    #[derive(Debug, Clone)]
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Self(seed)
        }

        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49EB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        pub fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// `mean` ± `spread` (a fraction, 0..1), uniformly.
        pub fn jittered(&mut self, mean: Duration, spread: f64) -> Duration {
            let spread = spread.clamp(0.0, 1.0);
            mean.mul_f64(1.0 - spread + 2.0 * spread * self.unit())
        }
    }
}

pub mod verdict;

pub mod database;

pub mod scratch;

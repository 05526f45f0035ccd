//! The pure half of `kuper-bridge-bench`: statistics, the FIFO check, request bodies and
//! `/proc` parsing. Everything here is deterministic and unit-tested (`tests/helpers.rs`);
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

/// The crash soak's pure half (`kuper-bridge-bench soak`): the seeded random source of the
/// kill schedule, what each kind of order does and must produce, and the verdict computed
/// from the simulator's records. The IO is in `src/soak.rs`.
pub mod soak {
    use crate::fifo::{fifo_violations, Arrival};
    use serde_json::{json, Value};
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::time::Duration;

    /// Store ids the soak configures in the gateway (as `crates/cli/tests/common` does).
    pub const KUPER_STORE: &str = "1184";
    pub const MERCHANT_STORE: &str = "merchant-1";
    pub const RESTAURANT_STORE: &str = "rest-1";

    /// SplitMix64: a small, seeded, reproducible source for the kill schedule. Not for
    /// anything secret.
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

    /// The four kinds of order the soak cycles through: the three schemes and a restaurant.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum Kind {
        /// Scheme A: the store assembles, Kuper's courier delivers.
        A,
        /// Scheme A at a restaurant: `accept` first.
        Restaurant,
        /// Scheme B: pickup.
        B,
        /// Scheme C: the merchant delivers.
        C,
    }

    impl Kind {
        pub const ALL: [Kind; 4] = [Kind::A, Kind::Restaurant, Kind::B, Kind::C];

        /// The kind of the `n`-th order: the four kinds in turn.
        pub fn of(n: usize) -> Kind {
            Self::ALL[n % Self::ALL.len()]
        }

        pub fn label(self) -> &'static str {
            match self {
                Kind::A => "A",
                Kind::Restaurant => "A restaurant",
                Kind::B => "B",
                Kind::C => "C",
            }
        }

        /// `POST /sim/v1/orders` parameters (without target and auth).
        pub fn params(self) -> Value {
            match self {
                Kind::A => json!({"store": KUPER_STORE, "shipmentMethod": "by_courier"}),
                Kind::Restaurant => json!({"store": RESTAURANT_STORE, "restaurant": true}),
                Kind::B => json!({"store": KUPER_STORE, "shipmentMethod": "pickup"}),
                Kind::C => json!({"store": MERCHANT_STORE, "integration": "delivery_by_merchant"}),
            }
        }

        /// The store's REST actions, in order, with their bodies. Scheme B's `pickup-code`
        /// carries no code here: the soak gives each order its own ([`pickup_code_for`]) and
        /// verifies it before `delivered`, as the counter does.
        pub fn actions(self) -> Vec<(&'static str, Value)> {
            let mut v = Vec::new();
            if self == Kind::Restaurant {
                v.push(("accept", json!({})));
            }
            v.extend([("start-assembly", json!({})), ("assembled", json!({})), ("ready", json!({}))]);
            match self {
                Kind::B => v.extend([("pickup-code", json!({})), ("delivered", json!({}))]),
                Kind::C => v.extend([
                    // Still ahead when sent: the gateway refuses a promised time that has passed.
                    ("estimated-delivery-time", json!({"at": (chrono::Utc::now() + chrono::Duration::minutes(90)).to_rfc3339_opts(chrono::SecondsFormat::Secs, false)})),
                    ("delivering", json!({})),
                    ("delivered", json!({})),
                ]),
                _ => {}
            }
            v
        }

        /// The notifications Kuper must accept, exactly once each, in this order.
        pub fn expected(self) -> Vec<&'static str> {
            self.actions().iter().map(|(a, _)| event_of(a)).collect()
        }

        /// Whether Kuper's courier finishes the order (scheme A): its webhooks can only come
        /// once Kuper has accepted `ready_for_delivery`.
        pub fn kuper_delivers(self) -> bool {
            matches!(self, Kind::A | Kind::Restaurant)
        }
    }

    /// The pickup code the soak gives a scheme B order: the last 12 letters and digits of its
    /// Kuper id. Unique as the id is, so codes of one store's open orders never clash (the
    /// gateway refuses a duplicate), and the same on every retry of the action.
    pub fn pickup_code_for(id: &str) -> String {
        let alnum: Vec<char> = id.chars().filter(char::is_ascii_alphanumeric).collect();
        let code: String = alnum[alnum.len().saturating_sub(12)..].iter().collect();
        // Too short an id (never one of Kuper's) still gets a code of the allowed length.
        format!("{code:0>4}")
    }

    /// Kuper's webhooks after `ready_for_delivery` reached it, for scheme A.
    pub const COURIER_WEBHOOKS: [&str; 4] = ["order.paid", "order.received", "order.delivering", "order.delivered"];

    /// The notification a REST action queues.
    pub fn event_of(action: &str) -> &'static str {
        match action {
            "accept" => "order.accepted",
            "start-assembly" => "order.in_work",
            "assembled" => "order.assembled",
            "ready" => "order.ready_for_delivery",
            "pickup-code" => "order.pickup_code_created",
            "estimated-delivery-time" => "order.estimated_delivery_time",
            "delivering" => "order.delivering",
            "delivered" => "order.delivered",
            "cancel" => "order.canceled",
            _ => "unknown",
        }
    }

    /// Kuper's states from which scheme A's courier webhooks may follow.
    pub fn ready_for_courier(state: &str) -> bool {
        matches!(state, "ready_to_ship" | "shipping" | "shipped")
    }

    /// What Kuper holds at the end for every kind: delivered and paid.
    pub const FINAL_STATE: &str = "shipped";
    pub const FINAL_PAYMENT: &str = "paid";

    /// The verdict on Kuper's side, from the simulator's notification log and its order list.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct Tally {
        pub orders: usize,
        pub per_kind: BTreeMap<Kind, usize>,
        pub expected: usize,
        /// Expected notifications accepted (at least once).
        pub delivered: usize,
        /// Expected notifications never accepted.
        pub lost: usize,
        /// Kuper's at-least-once duplicates: `rejected`/`repeat` or `repeat_accepted`.
        pub duplicates: usize,
        /// Arrivals (accepted, repeats, refusals; not faults) that came after a later event
        /// of the same order (`fifo::fifo_violations`).
        pub fifo_violations: usize,
        /// Orders whose accepted sequence is complete but not the expected order.
        pub out_of_order: usize,
        /// Accepted notifications that were not expected at all.
        pub unexpected: usize,
        /// Refusals by any other rule (a bug in the gateway or in the soak).
        pub rejected: usize,
        pub rejected_rules: BTreeMap<String, usize>,
        /// Requests answered by an injected fault or the outage, by rule.
        pub faults: BTreeMap<String, usize>,
        /// Orders not `shipped` + `paid` in Kuper's view.
        pub stuck: usize,
        pub stuck_states: BTreeMap<String, usize>,
        /// Human-readable details, first ones first.
        pub problems: Vec<String>,
    }

    impl Tally {
        /// No invariant on Kuper's side is broken.
        pub fn clean(&self) -> bool {
            self.lost == 0
                && self.fifo_violations == 0
                && self.out_of_order == 0
                && self.unexpected == 0
                && self.rejected == 0
                && self.stuck == 0
                && self.delivered == self.expected
        }
    }

    fn verdict(r: &Value) -> &str {
        r["verdict"].as_str().unwrap_or("")
    }

    /// Whether a simulator record is one of Kuper's at-least-once duplicates.
    pub fn is_duplicate(r: &Value) -> bool {
        (verdict(r) == "rejected" && r["rule"] == "repeat") || verdict(r) == "repeat_accepted"
    }

    /// Judges the run. `orders`: every order Kuper placed, with its kind; `log`: the
    /// simulator's `GET /sim/v1/notifications`; `summaries`: its `GET /sim/v1/orders`.
    pub fn tally(orders: &[(String, Kind)], log: &[Value], summaries: &[Value]) -> Tally {
        let mut t = Tally { orders: orders.len(), ..Tally::default() };
        let ours: HashSet<&str> = orders.iter().map(|(id, _)| id.as_str()).collect();
        let mut per_order: HashMap<&str, Vec<&Value>> = HashMap::new();
        for r in log {
            let id = r["originalOrderId"].as_str().unwrap_or("");
            if verdict(r) == "fault" {
                let rule = r["rule"].as_str().unwrap_or("fault").to_string();
                *t.faults.entry(rule).or_default() += 1;
                continue;
            }
            if !ours.contains(id) {
                // A notification Kuper could not attribute to any order of this run.
                if verdict(r) == "rejected" && !is_duplicate(r) {
                    t.rejected += 1;
                    let rule = r["rule"].as_str().unwrap_or("?").to_string();
                    *t.rejected_rules.entry(rule).or_default() += 1;
                    t.problems.push(format!("unattributed notification rejected: {}", r["message"]));
                }
                continue;
            }
            per_order.entry(id).or_default().push(r);
        }
        let states: HashMap<&str, (&str, &str)> = summaries
            .iter()
            .filter_map(|s| {
                Some((
                    s["originalOrderId"].as_str()?,
                    (s["state"].as_str().unwrap_or("?"), s["paymentState"].as_str().unwrap_or("?")),
                ))
            })
            .collect();
        let mut arrivals = Vec::new();
        for (id, kind) in orders {
            *t.per_kind.entry(*kind).or_default() += 1;
            let expected = kind.expected();
            t.expected += expected.len();
            let mut records = per_order.remove(id.as_str()).unwrap_or_default();
            records.sort_by_key(|r| r["seq"].as_u64().unwrap_or(0));
            let mut accepted: Vec<&str> = Vec::new();
            for r in &records {
                let event = r["event"].as_str().unwrap_or("");
                let seq = r["seq"].as_u64().unwrap_or(0);
                arrivals.push(Arrival::new(id, event, seq));
                match verdict(r) {
                    "accepted" => accepted.push(event),
                    _ if is_duplicate(r) => t.duplicates += 1,
                    "rejected" => {
                        t.rejected += 1;
                        let rule = r["rule"].as_str().unwrap_or("?").to_string();
                        *t.rejected_rules.entry(rule).or_default() += 1;
                        t.problems.push(format!("{id}: Kuper rejected {event} (seq {seq}): {}", r["message"]));
                    }
                    _ => {}
                }
            }
            let missing: Vec<&str> = expected.iter().copied().filter(|e| !accepted.contains(e)).collect();
            t.lost += missing.len();
            t.delivered += expected.len() - missing.len();
            let unexpected = accepted.iter().filter(|e| !expected.contains(e)).count();
            t.unexpected += unexpected;
            if !missing.is_empty() {
                t.problems.push(format!("{id} ({}): lost {missing:?}; Kuper accepted {accepted:?}", kind.label()));
            } else if accepted != expected {
                t.out_of_order += 1;
                t.problems.push(format!("{id} ({}): Kuper accepted {accepted:?}, expected {expected:?}", kind.label()));
            }
            let (state, payment) = states.get(id.as_str()).copied().unwrap_or(("missing", "missing"));
            if state != FINAL_STATE || payment != FINAL_PAYMENT {
                t.stuck += 1;
                *t.stuck_states.entry(format!("{state}/{payment}")).or_default() += 1;
                t.problems.push(format!("{id} ({}): stuck at {state}/{payment} in Kuper's view", kind.label()));
            }
            let v = fifo_violations(&expected, &arrivals);
            if v > 0 {
                t.fifo_violations += v;
                t.problems.push(format!(
                    "{id} ({}): {v} FIFO violation(s), arrivals {:?}",
                    kind.label(),
                    records.iter().map(|r| format!("{}#{}:{}", r["event"], r["seq"], verdict(r))).collect::<Vec<_>>()
                ));
            }
            arrivals.clear();
        }
        t
    }

    /// One row of the gateway's `GET /api/v1/orders`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct StoredOrder {
        pub original_order_id: String,
        pub number: String,
        /// `state` and `paymentState` as the gateway holds them.
        pub state: String,
        pub payment: String,
    }

    /// What the gateway holds at the end for every kind of the soak: handed over (by the
    /// store in B and C, by Kuper's courier in A) and paid (Kuper's `order.paid`).
    pub const GATEWAY_FINAL_STATE: &str = "delivered";
    pub const GATEWAY_FINAL_PAYMENT: &str = "paid";

    /// The gateway's database against the orders Kuper placed.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct StoredTally {
        pub rows: usize,
        pub distinct: usize,
        /// Rows beyond one per Kuper order.
        pub duplicates: usize,
        /// Orders Kuper placed (and the gateway answered 200) that are not stored.
        pub missing: usize,
        /// Stored orders Kuper never placed.
        pub extra: usize,
        /// Orders whose stored number differs from a number the gateway answered Kuper.
        pub number_mismatches: usize,
        /// Stored orders not delivered + paid: a webhook or an action answered 2xx whose
        /// effect is not in the database.
        pub unfinished: usize,
        pub unfinished_states: BTreeMap<String, usize>,
        pub problems: Vec<String>,
    }

    impl StoredTally {
        pub fn clean(&self) -> bool {
            self.duplicates == 0
                && self.missing == 0
                && self.extra == 0
                && self.number_mismatches == 0
                && self.unfinished == 0
        }
    }

    /// `answered`: every Kuper order with the numbers the gateway answered `order.created`
    /// with (all deliveries, retries and redeliveries included).
    pub fn stored_tally(answered: &[(String, Vec<String>)], stored: &[StoredOrder]) -> StoredTally {
        let mut t = StoredTally { rows: stored.len(), ..StoredTally::default() };
        let mut by_id: HashMap<&str, Vec<&str>> = HashMap::new();
        for s in stored {
            by_id.entry(s.original_order_id.as_str()).or_default().push(s.number.as_str());
            if s.state != GATEWAY_FINAL_STATE || s.payment != GATEWAY_FINAL_PAYMENT {
                t.unfinished += 1;
                *t.unfinished_states.entry(format!("{}/{}", s.state, s.payment)).or_default() += 1;
                t.problems
                    .push(format!("{}: the gateway holds {}/{} at the end", s.original_order_id, s.state, s.payment));
            }
        }
        t.distinct = by_id.len();
        t.duplicates = t.rows - t.distinct;
        for (id, numbers) in &by_id {
            if numbers.len() > 1 {
                t.problems.push(format!("{id}: {} rows in the gateway's database ({numbers:?})", numbers.len()));
            }
        }
        let placed: HashSet<&str> = answered.iter().map(|(id, _)| id.as_str()).collect();
        for (id, numbers) in answered {
            match by_id.get(id.as_str()) {
                None => {
                    t.missing += 1;
                    t.problems.push(format!("{id}: answered {numbers:?} to Kuper but not in the gateway's database"));
                }
                Some(stored) => {
                    if numbers.iter().any(|n| !stored.contains(&n.as_str())) {
                        t.number_mismatches += 1;
                        t.problems.push(format!("{id}: answered {numbers:?} to Kuper, stored {stored:?}"));
                    }
                }
            }
        }
        t.extra = by_id.keys().filter(|id| !placed.contains(*id)).count();
        if t.extra > 0 {
            t.problems.push(format!("{} stored order(s) Kuper never placed", t.extra));
        }
        t
    }

    /// A sample of a Prometheus text exposition: the value of an unlabelled metric.
    pub fn prom_value(text: &str, name: &str) -> Option<f64> {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = rest.strip_prefix(' ')?;
            value.split_whitespace().next()?.parse().ok()
        })
    }
}

/// The database a run of the benchmark or the soak gives the gateway: a SQLite file in the
/// run's temporary directory, or a fresh PostgreSQL database `<prefix>_<hex>` on
/// `KUPER_BRIDGE_TEST_PG` (default [`database::DEFAULT_PG`]), dropped at the end.
pub mod database {
    use anyhow::{Context, Result};
    use sqlx::Connection;
    use std::path::Path;

    /// The PostgreSQL server used when `KUPER_BRIDGE_TEST_PG` is not set (as the tests do).
    pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    #[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
    pub enum Backend {
        Sqlite,
        Postgres,
    }

    impl Backend {
        pub fn label(self) -> &'static str {
            match self {
                Backend::Sqlite => "SQLite",
                Backend::Postgres => "PostgreSQL",
            }
        }
    }

    /// The PostgreSQL server URL (an existing database to connect to for admin work).
    pub fn pg_server() -> String {
        std::env::var("KUPER_BRIDGE_TEST_PG").unwrap_or_else(|_| DEFAULT_PG.into())
    }

    /// `postgres://u@h:p/postgres` + `kb_x` → `postgres://u@h:p/kb_x` (a query string is kept).
    pub fn with_database(server: &str, name: &str) -> String {
        let (base, query) = match server.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (server, None),
        };
        let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
        let root = match base[scheme_end..].find('/') {
            Some(i) => &base[..scheme_end + i],
            None => base,
        };
        match query {
            Some(q) => format!("{root}/{name}?{q}"),
            None => format!("{root}/{name}"),
        }
    }

    pub struct Database {
        pub backend: Backend,
        /// What the gateway's `[database] url` gets.
        pub url: String,
        /// PostgreSQL: (server URL for admin work, database name) to drop at the end.
        pub pg: Option<(String, String)>,
    }

    impl Database {
        /// `sqlite://DIR/kuper-bridge.db`, or a new PostgreSQL database `<prefix>_<12 hex>`.
        pub async fn create(backend: Backend, dir: &Path, prefix: &str) -> Result<Database> {
            match backend {
                Backend::Sqlite => Ok(Database {
                    backend,
                    url: format!("sqlite://{}", dir.join("kuper-bridge.db").display()),
                    pg: None,
                }),
                Backend::Postgres => {
                    let server = pg_server();
                    let mut admin = sqlx::PgConnection::connect(&server)
                        .await
                        .with_context(|| format!("PostgreSQL at {server} is unreachable (set KUPER_BRIDGE_TEST_PG)"))?;
                    let name = format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
                    let _ = admin.close().await;
                    Ok(Database { backend, url: with_database(&server, &name), pg: Some((server, name)) })
                }
            }
        }

        /// The PostgreSQL database's name, if any.
        pub fn pg_name(&self) -> Option<&str> {
            self.pg.as_ref().map(|(_, n)| n.as_str())
        }

        /// Drops the PostgreSQL database (its connections are closed by force). No-op for SQLite.
        pub async fn drop_database(&self) -> Result<()> {
            if let Some((server, name)) = &self.pg {
                let mut admin = sqlx::PgConnection::connect(server).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await?;
                let _ = admin.close().await;
            }
            Ok(())
        }
    }
}

/// A scratch directory for one run, removed when dropped unless kept.
///
/// Not the `tempfile` crate on purpose: it is the only dependency the benchmark would add to
/// the gateway's graph, and its `rustix` turns on `bitflags/std`, which changes the features
/// of ten crates the gateway shares, so `cargo build --release -p kuper-bridge -p
/// kuper-bridge-bench` and then `cargo run --release -p kuper-bridge` would build them twice
/// (`crates/cli/tests/features.rs` guards this).
pub mod scratch {
    use std::path::{Path, PathBuf};

    pub struct ScratchDir {
        path: Option<PathBuf>,
    }

    impl ScratchDir {
        /// `parent/PREFIX<pid>-<n>`, created new (never an existing directory).
        pub fn new_in(parent: &Path, prefix: &str) -> std::io::Result<Self> {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            for attempt in 0..1000u32 {
                let path = parent.join(format!("{prefix}{}-{}", std::process::id(), nanos.wrapping_add(attempt)));
                match std::fs::create_dir(&path) {
                    Ok(()) => return Ok(Self { path: Some(path) }),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "no free scratch directory name"))
        }

        pub fn path(&self) -> &Path {
            self.path.as_deref().unwrap_or(Path::new(""))
        }

        /// Leaves the directory in place and returns its path.
        pub fn keep(mut self) -> PathBuf {
            self.path.take().unwrap_or_default()
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            if let Some(path) = self.path.take() {
                let _ = std::fs::remove_dir_all(path);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn removed_on_drop_unless_kept() {
            let parent = std::env::temp_dir();
            let a = ScratchDir::new_in(&parent, "kb-scratch-test-").unwrap();
            let b = ScratchDir::new_in(&parent, "kb-scratch-test-").unwrap();
            assert_ne!(a.path(), b.path());
            let (pa, pb) = (a.path().to_path_buf(), b.path().to_path_buf());
            assert!(pa.is_dir() && pb.is_dir());
            drop(a);
            assert!(!pa.exists());
            let kept = b.keep();
            assert_eq!(kept, pb);
            assert!(kept.is_dir());
            std::fs::remove_dir_all(kept).unwrap();
        }
    }
}

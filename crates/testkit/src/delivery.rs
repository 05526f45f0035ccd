//! "Delivered once, in order", judged from the simulator's records: `GET
//! /sim/v1/orders/{id}`'s `notifications` for one order, or `GET /sim/v1/notifications` for
//! many. Every expected notification must be accepted (applied) exactly once, in the expected
//! order; nothing may be refused except Kuper's answers to at-least-once resends (`rejected`
//! under rule `repeat`, or `repeat_accepted`), which are counted, not failed; no arrival may
//! overtake a later event of its order. Injected faults (`fault`) are counted apart.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// A record's verdict: `accepted`, `rejected`, `repeat_accepted` or `fault`.
pub fn verdict(record: &Value) -> &str {
    record["verdict"].as_str().unwrap_or("")
}

/// Whether a record is Kuper's answer to an at-least-once resend of something it has.
pub fn is_repeat(record: &Value) -> bool {
    (verdict(record) == "rejected" && record["rule"] == "repeat") || verdict(record) == "repeat_accepted"
}

/// The Kuper order a record of the log belongs to.
pub fn order_of(record: &Value) -> &str {
    record["originalOrderId"].as_str().or(record["order"].as_str()).unwrap_or("")
}

/// Per-order FIFO violations among `records` (one order's arrivals, any order: sorted here by
/// the simulator's `seq`): an arrival whose place in `expected` is before that of an event of
/// the order that already arrived overtook it, and counts once. A resend of the latest event
/// is no violation; events not in `expected` and injected faults are ignored here.
pub fn fifo_violations(expected: &[&str], records: &[&Value]) -> usize {
    let mut sorted: Vec<&&Value> = records.iter().filter(|r| verdict(r) != "fault").collect();
    sorted.sort_by_key(|r| r["seq"].as_u64().unwrap_or(0));
    let mut highest: Option<usize> = None;
    let mut violations = 0;
    for r in sorted {
        let Some(place) = expected.iter().position(|e| r["event"] == *e) else { continue };
        match highest {
            Some(h) if place < h => violations += 1,
            _ => highest = Some(place),
        }
    }
    violations
}

/// A notification Kuper refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub event: String,
    pub seq: u64,
    pub rule: String,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (seq {}, rule {}): {}", self.event, self.seq, self.rule, self.message)
    }
}

/// One order's notifications judged against what it must receive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderDelivery {
    pub expected: Vec<String>,
    /// Events Kuper accepted (applied), in arrival order.
    pub accepted: Vec<String>,
    /// At-least-once resends Kuper recognised (allowed).
    pub repeats: usize,
    /// Refusals under any other rule.
    pub refused: Vec<Refusal>,
    /// Injected faults and outage answers, by rule.
    pub faults: BTreeMap<String, usize>,
    pub fifo_violations: usize,
}

impl OrderDelivery {
    /// Judges one order's records (in any order; `seq` orders them). Refusals under the rule
    /// `tolerated` (a test that provokes them, e.g. `unauthorized` after a revoked token) are
    /// part of the scenario and ignored.
    pub fn judge(expected: &[&str], records: &[Value], tolerated: Option<&str>) -> Self {
        Self::judge_refs(expected, &records.iter().collect::<Vec<_>>(), tolerated)
    }

    /// [`Self::judge`] on the `notifications` of `GET /sim/v1/orders/{id}`.
    pub fn of_sim_order(expected: &[&str], sim_order: &Value, tolerated: Option<&str>) -> Self {
        let records = sim_order["notifications"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        Self::judge(expected, records, tolerated)
    }

    fn judge_refs(expected: &[&str], records: &[&Value], tolerated: Option<&str>) -> Self {
        let mut sorted = records.to_vec();
        sorted.sort_by_key(|r| r["seq"].as_u64().unwrap_or(0));
        let mut d = OrderDelivery {
            expected: expected.iter().map(|e| e.to_string()).collect(),
            fifo_violations: fifo_violations(expected, &sorted),
            ..Self::default()
        };
        for r in sorted {
            let event = r["event"].as_str().unwrap_or("").to_string();
            match verdict(r) {
                "accepted" => d.accepted.push(event),
                "fault" => *d.faults.entry(r["rule"].as_str().unwrap_or("fault").to_string()).or_default() += 1,
                _ if is_repeat(r) => d.repeats += 1,
                "rejected" if tolerated.is_some_and(|rule| r["rule"] == rule) => {}
                "rejected" => d.refused.push(Refusal {
                    event,
                    seq: r["seq"].as_u64().unwrap_or(0),
                    rule: r["rule"].as_str().unwrap_or("?").to_string(),
                    message: r["message"].as_str().unwrap_or("").to_string(),
                }),
                _ => {}
            }
        }
        d
    }

    /// Every expected notification accepted, once each, in order.
    pub fn is_complete(&self) -> bool {
        self.accepted == self.expected
    }

    /// Expected events not accepted (yet).
    pub fn missing(&self) -> Vec<&str> {
        self.expected.iter().filter(|e| !self.accepted.contains(e)).map(String::as_str).collect()
    }

    /// What is already wrong, whether or not everything has arrived: a refusal, an accepted
    /// sequence that is not the start of the expected one (out of order, twice, unexpected),
    /// an arrival that overtook a later one.
    pub fn problem(&self) -> Option<String> {
        if !self.refused.is_empty() {
            let refused: Vec<String> = self.refused.iter().map(Refusal::to_string).collect();
            return Some(format!("Kuper refused {refused:?}"));
        }
        if !self.expected.starts_with(&self.accepted) {
            return Some(format!(
                "Kuper accepted {:?}, expected {:?} once each, in order",
                self.accepted, self.expected
            ));
        }
        if self.fifo_violations > 0 {
            return Some(format!("{} FIFO violation(s)", self.fifo_violations));
        }
        None
    }

    /// Panics (naming `id`) unless everything arrived once, in order, and nothing else is wrong.
    pub fn assert_delivered(&self, id: &str) {
        if let Some(problem) = self.problem() {
            panic!("{id}: {problem}");
        }
        assert!(self.is_complete(), "{id}: missing {:?}; Kuper accepted {:?}", self.missing(), self.accepted);
    }
}

/// The verdict over many orders, from the simulator's whole notification log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub orders: usize,
    /// Expected notifications, all orders together.
    pub expected: usize,
    /// Expected notifications accepted.
    pub delivered: usize,
    /// Expected notifications never accepted.
    pub lost: usize,
    /// Orders with everything accepted, but not once each in the expected order.
    pub out_of_order: usize,
    /// Accepted notifications that were not expected.
    pub unexpected: usize,
    /// Kuper's answers to at-least-once resends (allowed).
    pub repeats: usize,
    /// Refusals under any other rule (of the orders, or of no order of the run), by rule.
    pub rejected: usize,
    pub rejected_rules: BTreeMap<String, usize>,
    pub fifo_violations: usize,
    /// Injected faults and outage answers, by rule.
    pub faults: BTreeMap<String, usize>,
    /// Human-readable details, first ones first.
    pub problems: Vec<String>,
}

impl Tally {
    /// Every expected notification delivered once, in order; nothing refused.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.out_of_order == 0
            && self.unexpected == 0
            && self.rejected == 0
            && self.fifo_violations == 0
            && self.delivered == self.expected
    }

    /// Panics with the first problems unless [`Self::clean`].
    pub fn assert_clean(&self) {
        assert!(
            self.clean(),
            "{self:?}\n{} problems, first ones:\n{}",
            self.problems.len(),
            self.problems.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
        );
    }
}

/// Judges `orders` (each Kuper order id with the events it must receive, in order) against the
/// log of `GET /sim/v1/notifications`.
pub fn tally<'a>(orders: impl IntoIterator<Item = (&'a str, Vec<&'a str>)>, log: &[Value]) -> Tally {
    let orders: Vec<(&str, Vec<&str>)> = orders.into_iter().collect();
    let ours: HashSet<&str> = orders.iter().map(|(id, _)| *id).collect();
    let mut per_order: HashMap<&str, Vec<&Value>> = HashMap::new();
    let mut t = Tally { orders: orders.len(), ..Tally::default() };
    for r in log {
        let id = order_of(r);
        if ours.contains(id) {
            per_order.entry(id).or_default().push(r);
        } else if verdict(r) == "fault" {
            *t.faults.entry(r["rule"].as_str().unwrap_or("fault").to_string()).or_default() += 1;
        } else if verdict(r) == "rejected" && !is_repeat(r) {
            // A notification Kuper could not attribute to any order of the run.
            t.rejected += 1;
            *t.rejected_rules.entry(r["rule"].as_str().unwrap_or("?").to_string()).or_default() += 1;
            t.problems.push(format!("unattributed notification rejected: {}", r["message"]));
        }
    }
    for (id, expected) in &orders {
        let records = per_order.remove(id).unwrap_or_default();
        let d = OrderDelivery::judge_refs(expected, &records, None);
        t.expected += expected.len();
        t.repeats += d.repeats;
        for (rule, n) in &d.faults {
            *t.faults.entry(rule.clone()).or_default() += n;
        }
        for refusal in &d.refused {
            t.rejected += 1;
            *t.rejected_rules.entry(refusal.rule.clone()).or_default() += 1;
            t.problems.push(format!("{id}: Kuper rejected {refusal}"));
        }
        let missing = d.missing();
        t.lost += missing.len();
        t.delivered += expected.len() - missing.len();
        t.unexpected += d.accepted.iter().filter(|e| !expected.contains(&e.as_str())).count();
        if !missing.is_empty() {
            t.problems.push(format!("{id}: lost {missing:?}; Kuper accepted {:?}", d.accepted));
        } else if !d.is_complete() {
            t.out_of_order += 1;
            t.problems.push(format!("{id}: Kuper accepted {:?}, expected {expected:?}", d.accepted));
        }
        if d.fifo_violations > 0 {
            t.fifo_violations += d.fifo_violations;
            t.problems.push(format!(
                "{id}: {} FIFO violation(s), arrivals {:?}",
                d.fifo_violations,
                records.iter().map(|r| format!("{}#{}:{}", r["event"], r["seq"], verdict(r))).collect::<Vec<_>>()
            ));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FLOW: [&str; 3] = ["order.in_work", "order.assembled", "order.ready_for_delivery"];

    fn rec(order: &str, event: &str, seq: u64, verdict: &str, rule: Option<&str>) -> Value {
        let mut r = json!({"originalOrderId": order, "event": event, "seq": seq, "verdict": verdict});
        if let Some(rule) = rule {
            r["rule"] = json!(rule);
        }
        r
    }

    #[test]
    fn in_order_once_with_repeats_and_faults_is_clean() {
        let log = [
            rec("a", "order.in_work", 1, "fault", Some("injected")),
            rec("a", "order.in_work", 2, "accepted", None),
            rec("a", "order.in_work", 3, "rejected", Some("repeat")),
            rec("a", "order.assembled", 4, "accepted", None),
            rec("a", "order.assembled", 5, "repeat_accepted", None),
            rec("a", "order.ready_for_delivery", 6, "accepted", None),
        ];
        let t = tally([("a", FLOW.to_vec())], &log);
        assert!(t.clean(), "{t:?}");
        assert_eq!((t.repeats, t.faults["injected"], t.delivered), (2, 1, 3));
        OrderDelivery::judge(&FLOW, &log, None).assert_delivered("a");
    }

    #[test]
    fn lost_reordered_refused_and_overtaking_are_each_found() {
        let log = [
            rec("a", "order.assembled", 1, "accepted", None),
            rec("a", "order.in_work", 2, "accepted", None),
            rec("a", "order.ready_for_delivery", 3, "accepted", None),
            rec("b", "order.in_work", 4, "accepted", None),
            rec("b", "order.assembled", 5, "rejected", Some("bad_transition")),
            rec("z", "order.in_work", 6, "rejected", Some("unknown_order")),
        ];
        let t = tally([("a", FLOW.to_vec()), ("b", FLOW.to_vec())], &log);
        assert_eq!((t.out_of_order, t.fifo_violations, t.lost, t.rejected), (1, 1, 2, 2), "{t:?}");
        assert_eq!(t.rejected_rules.keys().collect::<Vec<_>>(), ["bad_transition", "unknown_order"]);
        assert!(!t.clean());
        let b = OrderDelivery::judge(&FLOW, &log[3..5], None);
        assert!(b.problem().is_some_and(|p| p.contains("bad_transition")), "{b:?}");
        let tolerated = OrderDelivery::judge(&FLOW, &log[3..5], Some("bad_transition"));
        assert_eq!((tolerated.problem(), tolerated.is_complete()), (None, false), "pending, nothing wrong");
    }
}

//! The verdict of the crash soak (`kuper-bridge-bench soak`), its pure half: what each kind
//! of order does and must produce, and the tallies computed from the simulator's records and
//! the gateway's database. The soak itself (the processes, the kills, the outage) is in the
//! binary's `soak` module.

use kuper_bridge_testkit::delivery;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Store ids the soak configures in the gateway (as `crates/cli/tests/common` does).
pub const KUPER_STORE: &str = "1184";
pub const MERCHANT_STORE: &str = "merchant-1";
pub const RESTAURANT_STORE: &str = "rest-1";

use kuper_bridge_testkit::flows::Stores;
pub use kuper_bridge_testkit::flows::{event_of, pickup_code_for, Kind};

/// The stores of the soak's gateway, for [`Kind::params`].
pub const STORES: Stores<'static> =
    Stores { kuper: KUPER_STORE, merchant: MERCHANT_STORE, restaurant: RESTAURANT_STORE };

/// Kuper's webhooks after `ready_for_delivery` reached it, for scheme A.
pub const COURIER_WEBHOOKS: [&str; 4] = ["order.paid", "order.received", "order.delivering", "order.delivered"];

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
    /// Delivered once, in order: the test kit's verdict, the one the test suite applies too
    /// (Kuper's at-least-once resends are its `repeats`; injected faults and the outage its
    /// `faults`).
    pub kuper: delivery::Tally,
    pub per_kind: BTreeMap<Kind, usize>,
    /// Orders not `shipped` + `paid` in Kuper's view.
    pub stuck: usize,
    pub stuck_states: BTreeMap<String, usize>,
    /// The stuck orders, one line each (the delivery problems are `kuper.problems`).
    pub problems: Vec<String>,
}

impl Tally {
    /// No invariant on Kuper's side is broken.
    pub fn clean(&self) -> bool {
        self.kuper.clean() && self.stuck == 0
    }
}

/// Judges the run. `orders`: every order Kuper placed, with its kind; `log`: the
/// simulator's `GET /sim/v1/notifications`; `summaries`: its `GET /sim/v1/orders`.
pub fn tally(orders: &[(String, Kind)], log: &[Value], summaries: &[Value]) -> Tally {
    let mut t = Tally {
        kuper: delivery::tally(orders.iter().map(|(id, kind)| (id.as_str(), kind.expected())), log),
        ..Tally::default()
    };
    let states: HashMap<&str, (&str, &str)> = summaries
        .iter()
        .filter_map(|s| {
            Some((
                s["originalOrderId"].as_str()?,
                (s["state"].as_str().unwrap_or("?"), s["paymentState"].as_str().unwrap_or("?")),
            ))
        })
        .collect();
    for (id, kind) in orders {
        *t.per_kind.entry(*kind).or_default() += 1;
        let (state, payment) = states.get(id.as_str()).copied().unwrap_or(("missing", "missing"));
        if state != FINAL_STATE || payment != FINAL_PAYMENT {
            t.stuck += 1;
            *t.stuck_states.entry(format!("{state}/{payment}")).or_default() += 1;
            t.problems.push(format!("{id} ({}): stuck at {state}/{payment} in Kuper's view", kind.label()));
        }
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
            t.problems.push(format!("{}: the gateway holds {}/{} at the end", s.original_order_id, s.state, s.payment));
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

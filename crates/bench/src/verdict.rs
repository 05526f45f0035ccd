//! The verdict of the crash soak (`kuper-bridge-bench soak`), its pure half: what each kind
//! of order does and must produce, and the tallies computed from the simulator's records and
//! the gateway's database. The soak itself (the processes, the kills, the outage) is in the
//! binary's `soak` module.

use kuper_bridge_testkit::delivery;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Store ids the soak configures in the gateway (as `crates/cli/tests/common` does).
pub const KUPER_STORE: &str = "1184";
pub const MERCHANT_STORE: &str = "merchant-1";
pub const RESTAURANT_STORE: &str = "rest-1";

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
    /// Delivered once, in order: the test kit's verdict, the one the test suite applies too
    /// (Kuper's at-least-once resends are its `repeats`; injected faults and the outage its
    /// `faults`).
    pub kuper: delivery::Tally,
    pub per_kind: BTreeMap<Kind, usize>,
    /// Orders not `shipped` + `paid` in Kuper's view.
    pub stuck: usize,
    pub stuck_states: BTreeMap<String, usize>,
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
            t.kuper.problems.push(format!("{id} ({}): stuck at {state}/{payment} in Kuper's view", kind.label()));
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

//! The order flows that the end-to-end checks drive through the gateway (the replicas test,
//! the crash soak): one kind per scheme plus a restaurant, each with the store's REST actions
//! in order and the notifications Kuper must accept for them, once each, in that order.

use serde_json::{json, Value};

/// The stores a gateway under test is configured with: a Kuper-delivery store (schemes A and B),
/// a merchant-delivery store (scheme C) and a restaurant.
#[derive(Debug, Clone, Copy)]
pub struct Stores<'a> {
    pub kuper: &'a str,
    pub merchant: &'a str,
    pub restaurant: &'a str,
}

/// The four kinds of order: the three schemes and a restaurant.
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

    /// The simulator's `POST /sim/v1/orders` parameters (without target and auth).
    pub fn params(self, stores: Stores<'_>) -> Value {
        match self {
            Kind::A => json!({"store": stores.kuper, "shipmentMethod": "by_courier"}),
            Kind::Restaurant => json!({"store": stores.restaurant, "restaurant": true}),
            Kind::B => json!({"store": stores.kuper, "shipmentMethod": "pickup"}),
            Kind::C => json!({"store": stores.merchant, "integration": "delivery_by_merchant"}),
        }
    }

    /// The store's REST actions, in order, with their bodies. Scheme B's `pickup-code`
    /// carries no code here: the caller gives each order its own ([`pickup_code_for`]) and
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
                ("estimated-delivery-time", json!({"at": moscow_in(90)})),
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

/// The pickup code a store gives a scheme B order: the last 12 letters and digits of its Kuper
/// id. Unique as the id is, so codes of one store's open orders never clash (the gateway
/// refuses a duplicate), and the same on every retry of the action.
pub fn pickup_code_for(id: &str) -> String {
    let alnum: Vec<char> = id.chars().filter(char::is_ascii_alphanumeric).collect();
    let code: String = alnum[alnum.len().saturating_sub(12)..].iter().collect();
    // Too short an id (never one of Kuper's) still gets a code of the allowed length.
    format!("{code:0>4}")
}

/// `minutes` from now in Moscow time, as a store system sends a promised time.
pub fn moscow_in(minutes: i64) -> String {
    let msk = chrono::FixedOffset::east_opt(3 * 3600).expect("+03:00 is a valid offset");
    (chrono::Utc::now() + chrono::Duration::minutes(minutes))
        .with_timezone(&msk)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_expects_one_notification_per_action() {
        let expected: Vec<Vec<&str>> = Kind::ALL.iter().map(|k| k.expected()).collect();
        assert_eq!(expected[0], ["order.in_work", "order.assembled", "order.ready_for_delivery"]);
        assert_eq!(expected[1][0], "order.accepted");
        assert_eq!(expected[2].last(), Some(&"order.delivered"));
        assert_eq!(expected[3].len(), 6);
        assert!(expected.iter().flatten().all(|e| *e != "unknown"));
        assert_eq!(Kind::of(5), Kind::Restaurant);
    }

    #[test]
    fn pickup_codes_are_the_ids_last_letters_and_digits() {
        assert_eq!(pickup_code_for("H1234-5678-90123"), "234567890123");
        assert_eq!(pickup_code_for("W7"), "00W7");
    }
}

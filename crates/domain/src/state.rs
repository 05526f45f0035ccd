use serde::{Deserialize, Serialize};
use std::fmt;

/// Fulfilment scheme (protocol.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// A: merchant assembles, Kuper delivers.
    KuperDelivery,
    /// B: merchant assembles, the customer picks up.
    Pickup,
    /// C: merchant assembles and delivers.
    MerchantDelivery,
}

impl Scheme {
    pub const ALL: [Scheme; 3] = [Scheme::KuperDelivery, Scheme::Pickup, Scheme::MerchantDelivery];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::KuperDelivery => "kuper_delivery",
            Self::Pickup => "pickup",
            Self::MerchantDelivery => "merchant_delivery",
        }
    }

    pub fn letter(self) -> &'static str {
        match self {
            Self::KuperDelivery => "A",
            Self::Pickup => "B",
            Self::MerchantDelivery => "C",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s || x.letter().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The merchant-side state of an order in kuper-bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// `order.created` answered; waiting for `accept` (restaurants) or `start-assembly`.
    Created,
    /// Restaurant order accepted.
    Accepted,
    InWork,
    Assembled,
    /// `order.ready_for_delivery` enqueued with the final composition.
    Ready,
    /// Scheme A: the courier took the order (`order.received` from Kuper).
    Shipping,
    /// On the way to the customer (A: Kuper's webhook; C: the merchant's action).
    Delivering,
    Delivered,
    Canceled,
}

impl OrderState {
    pub const ALL: [OrderState; 9] = [
        Self::Created,
        Self::Accepted,
        Self::InWork,
        Self::Assembled,
        Self::Ready,
        Self::Shipping,
        Self::Delivering,
        Self::Delivered,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Accepted => "accepted",
            Self::InWork => "in_work",
            Self::Assembled => "assembled",
            Self::Ready => "ready",
            Self::Shipping => "shipping",
            Self::Delivering => "delivering",
            Self::Delivered => "delivered",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Canceled)
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kuper's view of the order (protocol.md §6), as far as Kuper has acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KuperState {
    Ready,
    Collecting,
    Assembled,
    ReadyToShip,
    Shipping,
    Shipped,
    Canceled,
}

impl KuperState {
    pub const ALL: [KuperState; 7] = [
        Self::Ready,
        Self::Collecting,
        Self::Assembled,
        Self::ReadyToShip,
        Self::Shipping,
        Self::Shipped,
        Self::Canceled,
    ];

    /// Kuper's state names (protocol.md §6).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Collecting => "collecting",
            Self::Assembled => "assembled",
            Self::ReadyToShip => "ready_to_ship",
            Self::Shipping => "shipping",
            Self::Shipped => "shipped",
            Self::Canceled => "canceled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    NotPaid,
    Paid,
}

impl PaymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotPaid => "not_paid",
            Self::Paid => "paid",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kuper_state_names_round_trip() {
        for k in KuperState::ALL {
            assert_eq!(KuperState::parse(k.as_str()), Some(k));
        }
        assert_eq!(KuperState::parse("delivered"), None, "not one of Kuper's names (protocol.md §6)");
    }

    /// The engine compares states (`order.state < OrderState::Ready`, `kuper_state < kuper`,
    /// `target.max(current)`), and the derived `Ord` follows the order the variants are
    /// declared in: moving one would silently change those decisions. This pins the lifecycle
    /// order, independently of `ALL`, so a reordering fails here first.
    #[test]
    fn states_compare_in_lifecycle_order() {
        use OrderState as O;
        let lifecycle =
            [O::Created, O::Accepted, O::InWork, O::Assembled, O::Ready, O::Shipping, O::Delivering, O::Delivered];
        for pair in lifecycle.windows(2) {
            assert!(pair[0] < pair[1], "{:?} must come before {:?}", pair[0], pair[1]);
        }
        assert!(lifecycle.iter().all(|s| *s < O::Canceled), "canceled is last: nothing moves past it");
        use KuperState as K;
        let kuper = [K::Ready, K::Collecting, K::Assembled, K::ReadyToShip, K::Shipping, K::Shipped];
        for pair in kuper.windows(2) {
            assert!(pair[0] < pair[1], "{:?} must come before {:?}", pair[0], pair[1]);
        }
        assert!(kuper.iter().all(|s| *s < K::Canceled));
        assert_eq!(OrderState::ALL.len(), lifecycle.len() + 1, "a new state needs its place in this test");
        assert_eq!(KuperState::ALL.len(), kuper.len() + 1, "a new state needs its place in this test");
    }
}

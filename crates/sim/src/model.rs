//! Kuper's vocabulary: fulfilment schemes, order states and notification kinds.

use rust_decimal::Decimal;
use serde::Serialize;

/// The fulfilment scheme of an order (protocol.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Scheme {
    /// Merchant assembly, Kuper delivery.
    A,
    /// Merchant assembly, pickup.
    B,
    /// Merchant assembly, merchant delivery.
    C,
}

impl Scheme {
    /// `pickup` wins over the integration, since nobody delivers a pickup order.
    pub fn decide(shipment_method: &str, integration: Integration) -> Self {
        if shipment_method == "pickup" {
            Scheme::B
        } else if integration == Integration::DeliveryByMerchant {
            Scheme::C
        } else {
            Scheme::A
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Integration {
    DeliveryByKuper,
    DeliveryByMerchant,
}

impl Integration {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "delivery_by_kuper" => Some(Self::DeliveryByKuper),
            "delivery_by_merchant" => Some(Self::DeliveryByMerchant),
            _ => None,
        }
    }
}

/// Kuper's state of a shipment (protocol.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
    pub fn is_final(self) -> bool {
        matches!(self, KuperState::Shipped | KuperState::Canceled)
    }

    fn rank(self) -> u8 {
        match self {
            KuperState::Ready => 0,
            KuperState::Collecting => 1,
            KuperState::Assembled => 2,
            KuperState::ReadyToShip => 3,
            KuperState::Shipping => 4,
            KuperState::Shipped => 5,
            KuperState::Canceled => 6,
        }
    }

    /// Moves forward only: a late `assembled` must not pull a shipping order back.
    pub fn advance(self, to: KuperState) -> KuperState {
        if self.is_final() {
            self
        } else if to == KuperState::Canceled || to.rank() > self.rank() {
            to
        } else {
            self
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    NotPaid,
    Paid,
}

/// A notification the merchant sends to Kuper (protocol.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Accepted,
    InWork,
    Assembled,
    ReadyForDelivery,
    PickupCodeCreated,
    EstimatedDeliveryTime,
    Delivering,
    Delivered,
    Canceled,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::Accepted,
        EventKind::InWork,
        EventKind::Assembled,
        EventKind::ReadyForDelivery,
        EventKind::PickupCodeCreated,
        EventKind::EstimatedDeliveryTime,
        EventKind::Delivering,
        EventKind::Delivered,
        EventKind::Canceled,
    ];

    pub fn wire(self) -> &'static str {
        match self {
            EventKind::Accepted => "order.accepted",
            EventKind::InWork => "order.in_work",
            EventKind::Assembled => "order.assembled",
            EventKind::ReadyForDelivery => "order.ready_for_delivery",
            EventKind::PickupCodeCreated => "order.pickup_code_created",
            EventKind::EstimatedDeliveryTime => "order.estimated_delivery_time",
            EventKind::Delivering => "order.delivering",
            EventKind::Delivered => "order.delivered",
            EventKind::Canceled => "order.canceled",
        }
    }

    pub fn from_wire(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.wire() == text)
    }
}

/// One ordered line with the unit prices Kuper recomputes compositions from (protocol.md §8).
#[derive(Clone, Debug, PartialEq)]
pub struct OrderPosition {
    pub id: String,
    pub price: Decimal,
    pub discount_price: Decimal,
    pub original_quantity: Decimal,
    /// Grams for `original_quantity`; `None` for piece goods.
    pub weight_g: Option<Decimal>,
    /// Sum of modifier prices for one unit (restaurant orders); zero otherwise.
    pub modifiers_per_unit: Decimal,
}

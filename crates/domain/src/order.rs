use crate::composition::Composition;
use crate::state::{KuperState, OrderState, PaymentState, Scheme};
use kuper_bridge_wire::notification::{Cancellation, NotificationData};
use kuper_bridge_wire::{NotificationEvent, OrderPayload};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who ended an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanceledBy {
    Merchant,
    Kuper,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelInfo {
    pub by: CanceledBy,
    pub slug: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PickupCode {
    pub code: String,
    pub failed_attempts: u32,
    /// Unix seconds until which verification is refused after too many failures.
    pub locked_until: Option<i64>,
    pub verified: bool,
}

/// An order as kuper-bridge keeps it. Stored as one JSON document plus indexed columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub original_order_id: Option<String>,
    #[serde(rename = "orderUUID")]
    pub order_uuid: Option<String>,
    pub number: String,
    pub store_id: String,
    pub scheme: Scheme,
    pub restaurant: bool,
    pub state: OrderState,
    pub kuper_state: KuperState,
    pub payment_state: PaymentState,
    pub expected_assembly_time: String,
    pub ordered: OrderPayload,
    pub ready_composition: Option<Composition>,
    pub handed_over: Option<Composition>,
    /// Why an operator handed a pickup order over without a verified code (`None`: it was
    /// verified, or the order is not handed over yet). Absent from orders stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover_override: Option<String>,
    pub pickup: Option<PickupCode>,
    pub estimated_delivery_time: Option<String>,
    pub courier: Option<Value>,
    pub courier_arrived: bool,
    pub cancellation: Option<CancelInfo>,
    /// Every notification ever enqueued for this order, in order (at most once each).
    pub notified: Vec<NotificationEvent>,
    /// Webhooks that arrived where the scheme did not expect them (kept, never fatal).
    pub anomalies: Vec<String>,
}

impl Order {
    pub fn has_notified(&self, event: NotificationEvent) -> bool {
        self.notified.contains(&event)
    }

    /// The base of every notification body for this order.
    pub fn notification(&self, event: NotificationEvent) -> NotificationData {
        NotificationData::new(event, self.original_order_id.clone(), self.order_uuid.clone(), self.number.clone())
    }

    pub fn cancellation_wire(&self) -> Option<Cancellation> {
        self.cancellation.as_ref().map(|c| Cancellation { slug: c.slug.clone(), description: c.description.clone() })
    }

    /// Kuper itself ended the order (its cancel, or its courier delivered in scheme A).
    pub fn ended_by_kuper(&self) -> bool {
        match self.state {
            OrderState::Canceled => self.cancellation.as_ref().is_some_and(|c| c.by == CanceledBy::Kuper),
            OrderState::Delivered => self.scheme == Scheme::KuperDelivery,
            _ => false,
        }
    }

    /// The reference an operator sees first.
    pub fn display_ref(&self) -> &str {
        self.original_order_id.as_deref().or(self.order_uuid.as_deref()).unwrap_or(&self.number)
    }
}

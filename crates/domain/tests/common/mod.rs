//! Helpers shared by the integration tests of the order domain: sample orders in any state,
//! valid inputs for every merchant action, and Kuper webhooks built from bytes the way the
//! HTTP layer builds them.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use kuper_bridge_domain::order::{CancelInfo, CanceledBy, PickupCode};
use kuper_bridge_domain::{
    Action, ActionKind, CancelDescription, CancelReason, CustomerCode, Order, OrderState, Policy, PromisedTime, Scheme,
};
use kuper_bridge_wire::{NotificationEvent, WebhookEnvelope, WebhookEvent};
use serde_json::{json, Value};

pub const PICKUP_CODE: &str = "482913";
pub const ETA: &str = "2026-03-14T12:30:00+03:00";
pub const CANCEL_REASON: &str = "out_of_stock";

/// Both values of every flag, for loops over all combinations.
pub const BOOLS: [bool; 2] = [false, true];

/// The guard facts that decide more than the state does (protocol.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// `order.pickup_code_created` was already enqueued (scheme B).
    pub code_sent: bool,
    /// The customer's code was checked at the counter and found valid (only after it was sent).
    pub code_verified: bool,
    /// `order.estimated_delivery_time` was already enqueued (scheme C).
    pub eta_sent: bool,
    /// `policy.synthesize_assembled`.
    pub synthesize: bool,
}

impl Facts {
    /// All twelve combinations that can happen (a code is verified only after it was sent).
    pub fn all() -> Vec<Facts> {
        let mut out = Vec::new();
        for code_sent in BOOLS {
            for code_verified in BOOLS {
                if code_verified && !code_sent {
                    continue;
                }
                for eta_sent in BOOLS {
                    for synthesize in BOOLS {
                        out.push(Facts { code_sent, code_verified, eta_sent, synthesize });
                    }
                }
            }
        }
        out
    }

    /// None of the order's own facts, with the given policy.
    pub const fn none(synthesize: bool) -> Facts {
        Facts { code_sent: false, code_verified: false, eta_sent: false, synthesize }
    }
}

pub fn policy(synthesize: bool) -> Policy {
    Policy { synthesize_assembled: synthesize, ..Policy::default() }
}

/// A cancel as the edge parses it, against the default `kuper.cancel_reasons`.
pub fn cancel(reason: &str, description: &str) -> Action {
    Action::Cancel {
        reason: CancelReason::parse(reason, &Policy::default().cancel_reasons),
        description: CancelDescription::parse(description),
    }
}

/// A fresh order (state `created`) built from the fixtures.
pub fn fresh_order(scheme: Scheme, restaurant: bool) -> Order {
    let order = kuper_bridge_domain::diagram::sample_order(scheme, restaurant, &Policy::default())
        .expect("the fixtures build a sample order");
    assert_eq!(order.scheme, scheme, "sample_order must honour the scheme");
    assert_eq!(order.restaurant, restaurant, "sample_order must honour the restaurant flag");
    order
}

/// An order put directly into `state`, with `notified` holding exactly the facts asked for.
pub fn order_in(scheme: Scheme, restaurant: bool, state: OrderState, facts: Facts) -> Order {
    let fresh = fresh_order(scheme, restaurant);
    let mut order = match fresh.clone().in_state(state) {
        Some(order) => order,
        None => fresh.canceled(CancelInfo {
            by: CanceledBy::Merchant,
            slug: CANCEL_REASON.into(),
            description: String::new(),
        }),
    };
    order.notified = Default::default();
    if facts.code_sent {
        order.notified.insert(NotificationEvent::PickupCodeCreated);
        order.pickup = Some(PickupCode {
            code: PICKUP_CODE.into(),
            failed_attempts: 0,
            locked_until: None,
            verified: facts.code_verified,
        });
    }
    if facts.eta_sent {
        order.notified.insert(NotificationEvent::EstimatedDeliveryTime);
    }
    order
}

/// A valid input for each action (the brief's example values).
pub fn valid_action(kind: ActionKind) -> Action {
    match kind {
        ActionKind::Accept => Action::Accept { expected_assembly_time: None },
        ActionKind::StartAssembly => Action::StartAssembly,
        ActionKind::Assembled => Action::Assembled,
        ActionKind::Ready => Action::Ready { positions: None },
        ActionKind::PickupCode => Action::PickupCode { code: CustomerCode::parse(PICKUP_CODE) },
        ActionKind::EstimatedDeliveryTime => Action::EstimatedDeliveryTime { at: PromisedTime::parse("at", ETA) },
        ActionKind::Delivering => Action::Delivering,
        ActionKind::Delivered => Action::Delivered { positions: None, handover_override: None },
        ActionKind::Cancel => cancel(CANCEL_REASON, "Нет товара"),
    }
}

/// A Kuper webhook for `order` with the given `event_type` and extra payload fields, parsed
/// from bytes exactly as the HTTP layer does.
pub fn webhook_raw(order: &Order, event_type: &str, extra: Value) -> WebhookEnvelope {
    let mut payload = json!({
        "originalOrderId": order.original_order_id,
        "orderUUID": order.order_uuid,
    });
    if let (Some(p), Value::Object(extra)) = (payload.as_object_mut(), extra) {
        p.extend(extra);
    }
    let body = json!({"event_type": event_type, "payload": payload});
    WebhookEnvelope::parse(body.to_string().as_bytes()).expect("a well-formed webhook body")
}

/// A known webhook with the payload Kuper typically sends for it.
pub fn webhook(order: &Order, event: WebhookEvent) -> WebhookEnvelope {
    let extra = match event {
        WebhookEvent::OrderCanceled => {
            json!({"cancellation": {"slug": "customer_request", "description": "Клиент передумал"}})
        }
        WebhookEvent::CourierAssigned | WebhookEvent::CourierArrived => {
            json!({"courier": {"name": "Алексей", "phone": "+79990001122"}})
        }
        WebhookEvent::OrderPaid => json!({"paymentState": "paid"}),
        WebhookEvent::OrderUpdated => json!({
            "kind": "delivery_changed",
            "delivery": {"expectedFrom": "2026-03-14T14:00:00+03:00", "expectedTo": "2026-03-14T15:00:00+03:00"},
        }),
        _ => json!({}),
    };
    webhook_raw(order, event.as_str(), extra)
}

/// An event type Kuper may add in the future.
pub fn unknown_webhook(order: &Order) -> WebhookEnvelope {
    webhook_raw(order, "order.teleported", json!({}))
}

/// Names for assertion messages.
pub fn cell(scheme: Scheme, restaurant: bool, state: OrderState) -> String {
    format!("scheme {} ({scheme}), restaurant={restaurant}, state {state}", scheme.letter())
}

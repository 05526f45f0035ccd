//! Decisions: an order plus an input gives a new order and the notifications to enqueue.

use crate::composition::{self, Composition};
use crate::error::DomainError;
use crate::input::PromisedTime;
use crate::order::{CancelInfo, CanceledBy, Order, PickupCode};
use crate::policy::Policy;
use crate::rules::{self, Action, ActionKind, Facts};
use crate::state::{KuperState, OrderState, PaymentState, Scheme};
use chrono::{DateTime, Duration, FixedOffset};
use kuper_bridge_wire::notification::NotificationData;
use kuper_bridge_wire::{NotificationEvent, WebhookEnvelope, WebhookEvent};
use serde::{Deserialize, Serialize};

/// What a merchant action decided.
#[derive(Debug, Clone)]
pub struct ActionDecision {
    pub order: Order,
    /// In the order they must reach Kuper.
    pub notifications: Vec<NotificationData>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookOutcome {
    /// Changed the order.
    Applied,
    /// Already applied earlier; acknowledged and ignored.
    Duplicate,
    /// Not where the scheme expects it; recorded, applied as far as it moves forward.
    OutOfOrder,
    /// Known but carries nothing to apply (or arrived after the order ended); recorded.
    Recorded,
}

impl WebhookOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::OutOfOrder => "out_of_order",
            Self::Recorded => "recorded",
        }
    }
}

#[derive(Debug, Clone)]
pub struct WebhookDecision {
    pub order: Order,
    pub outcome: WebhookOutcome,
    pub note: String,
    /// Kuper ended the order: notifications still waiting for it are obsolete.
    pub supersede_pending: bool,
}

pub fn format_time(t: DateTime<FixedOffset>) -> String {
    PromisedTime::from(t).to_string()
}

/// A new order from `order.created`. `number` is the merchant order id storage assigned.
pub fn create_order(
    env: &WebhookEnvelope,
    policy: &Policy,
    number: String,
    now: DateTime<FixedOffset>,
) -> Result<Order, kuper_bridge_wire::ParseError> {
    let ordered = env.order()?;
    let store_id = ordered.store_id.clone().unwrap_or_default();
    let profile = policy.store(&store_id);
    let scheme = profile.scheme_for(ordered.is_pickup());
    let expected = now.with_timezone(&policy.offset) + Duration::minutes(policy.assembly_minutes);
    Ok(Order {
        original_order_id: env.identity.original_order_id.clone(),
        order_uuid: env.identity.order_uuid.clone(),
        number,
        store_id,
        scheme,
        restaurant: profile.restaurant,
        state: OrderState::Created,
        kuper_state: KuperState::Ready,
        payment_state: PaymentState::NotPaid,
        expected_assembly_time: format_time(expected),
        ordered,
        ready_composition: None,
        handed_over: None,
        handover_override: None,
        pickup: None,
        estimated_delivery_time: None,
        courier: None,
        courier_arrived: false,
        cancellation: None,
        notified: Default::default(),
        anomalies: Vec::new(),
    })
}

pub fn facts(order: &Order, policy: &Policy) -> Facts {
    Facts {
        pickup_code_sent: order.has_notified(NotificationEvent::PickupCodeCreated),
        pickup_code_verified: order.pickup.as_ref().is_some_and(|p| p.verified),
        handover_override: false,
        eta_sent: order.has_notified(NotificationEvent::EstimatedDeliveryTime),
        synthesize_assembled: policy.synthesize_assembled,
    }
}

pub fn allowed_actions(order: &Order, policy: &Policy) -> Vec<ActionKind> {
    rules::allowed_actions(order.scheme, order.restaurant, order.state(), facts(order, policy))
}

/// Checks `action` against the rules and the input, and decides.
pub fn apply_action(order: &Order, action: Action, policy: &Policy) -> Result<ActionDecision, DomainError> {
    let kind = action.kind();
    let handover_override = handover_override(order, &action)?;
    let f = Facts { handover_override: handover_override.is_some(), ..facts(order, policy) };
    let Some(rule) = rules::find_rule(kind, order.scheme, order.restaurant, order.state(), f) else {
        return Err(DomainError::InvalidTransition {
            action: kind,
            state: order.state(),
            allowed: allowed_actions(order, policy),
            reason: rules::guard_reason(kind, order.scheme, order.restaurant, order.state(), f)
                .map(str::to_string)
                .or_else(|| not_in_scheme(kind, order)),
        });
    };
    let mut next = order.clone();
    if let Some(to) = rule.to {
        // Into `canceled` only with the reason: the Cancel arm below.
        next.move_to(to);
    }
    let mut notifications = Vec::with_capacity(rule.emits.len());
    for &event in rule.emits {
        let mut n = next.notification(event);
        match (&action, event) {
            (Action::Accept { expected_assembly_time }, NotificationEvent::Accepted) => {
                if let Some(t) = expected_assembly_time {
                    next.expected_assembly_time = t.clone()?.to_string();
                }
                n.expected_assembly_time = Some(next.expected_assembly_time.clone());
            }
            (Action::Ready { positions }, NotificationEvent::ReadyForDelivery) => {
                let c = match positions {
                    None => Composition::as_ordered(&order.ordered.positions)?,
                    Some(lines) => composition::compute(&order.ordered.positions, &[], lines)?,
                };
                fill_composition(&mut n, &c);
                next.ready_composition = Some(c);
            }
            (Action::Delivered { positions, .. }, NotificationEvent::Delivered) => {
                let ready = match &order.ready_composition {
                    Some(c) => c.clone(),
                    None => Composition::as_ordered(&order.ordered.positions)?,
                };
                let c = match positions {
                    None => ready,
                    Some(lines) => composition::compute(&order.ordered.positions, &ready.lines, lines)?,
                };
                fill_composition(&mut n, &c);
                next.handed_over = Some(c);
                // A verified code needs no excuse: the reason is kept only when it was used.
                if !f.pickup_code_verified {
                    next.handover_override = handover_override.clone();
                }
            }
            (Action::PickupCode { code }, NotificationEvent::PickupCodeCreated) => {
                let code = code.clone()?;
                n.pickup_code = Some(code.as_str().to_string());
                next.pickup = Some(PickupCode {
                    code: code.as_str().to_string(),
                    failed_attempts: 0,
                    locked_until: None,
                    verified: false,
                });
            }
            (Action::EstimatedDeliveryTime { at }, NotificationEvent::EstimatedDeliveryTime) => {
                let t = at.clone()?.to_string();
                next.estimated_delivery_time = Some(t.clone());
                n.estimated_delivery_time = Some(t);
            }
            (Action::Cancel { reason, description }, NotificationEvent::Canceled) => {
                let reason = reason.clone()?;
                next.cancel(CancelInfo {
                    by: CanceledBy::Merchant,
                    slug: reason.as_str().to_string(),
                    description: description.clone()?.as_str().to_string(),
                });
                n.cancellation = next.cancellation_wire();
            }
            _ => {}
        }
        next.notified.insert(event);
        notifications.push(n);
    }
    // Ready/delivered bodies were built before `next` learned the composition; nothing else
    // in a body depends on the order after this point.
    Ok(ActionDecision { order: next, notifications })
}

/// The written reason of a hand-over without a verified code, checked: only a pickup order has
/// a code to override.
fn handover_override(order: &Order, action: &Action) -> Result<Option<String>, DomainError> {
    let Action::Delivered { handover_override: Some(reason), .. } = action else {
        return Ok(None);
    };
    if order.scheme != Scheme::Pickup {
        return Err(DomainError::invalid(
            "overrideReason",
            format!(
                "only a pickup order is handed over against a code; scheme {} ({}) has none to override",
                order.scheme.letter(),
                order.scheme
            ),
        ));
    }
    Ok(Some(reason.clone()?.as_str().to_string()))
}

fn not_in_scheme(kind: ActionKind, order: &Order) -> Option<String> {
    let in_scheme = rules::RULES.iter().any(|r| {
        r.action == kind && r.schemes.contains(&order.scheme) && r.restaurant.is_none_or(|x| x == order.restaurant)
    });
    if in_scheme {
        None
    } else if kind == ActionKind::Accept {
        Some("only restaurant orders are accepted".into())
    } else {
        Some(format!("not part of scheme {} ({})", order.scheme.letter(), order.scheme))
    }
}

fn fill_composition(n: &mut NotificationData, c: &Composition) {
    n.positions = Some(c.lines.clone());
    n.totals = Some(c.totals.clone());
    n.changed = c.changed;
}

/// Applies a Kuper webhook to an existing order. Kuper is the source of truth for its own
/// events: they never fail, they move the order forward or are recorded as they are.
pub fn apply_webhook(order: &Order, env: &WebhookEnvelope) -> WebhookDecision {
    let mut next = order.clone();
    // An order first known by one id learns the other the first time Kuper sends both.
    if next.original_order_id.is_none() {
        next.original_order_id = env.identity.original_order_id.clone();
    }
    if next.order_uuid.is_none() {
        next.order_uuid = env.identity.order_uuid.clone();
    }
    let Some(event) = env.event else {
        return WebhookDecision {
            order: next,
            outcome: WebhookOutcome::Recorded,
            note: "unknown event type".into(),
            supersede_pending: false,
        };
    };
    let decided = |order: Order, outcome, note: String, supersede| WebhookDecision {
        order,
        outcome,
        note,
        supersede_pending: supersede,
    };
    match event {
        WebhookEvent::OrderCreated => decided(next, WebhookOutcome::Duplicate, "order already exists".into(), false),
        WebhookEvent::OrderUpdated => {
            if let Ok(update) = env.order() {
                if update.delivery.is_some() {
                    next.ordered.delivery = update.delivery;
                }
                if update.address.is_some() {
                    next.ordered.address = update.address;
                }
                if update.customer.is_some() {
                    next.ordered.customer = update.customer;
                }
                if update.comment.is_some() {
                    next.ordered.comment = update.comment;
                }
            }
            let kind = env.payload.get("kind").and_then(|v| v.as_str()).unwrap_or("unspecified");
            let outcome = if next == *order { WebhookOutcome::Duplicate } else { WebhookOutcome::Applied };
            decided(next, outcome, format!("order updated ({kind})"), false)
        }
        WebhookEvent::CourierAssigned | WebhookEvent::CourierArrived => {
            let courier = env.payload.get("courier").cloned();
            if event == WebhookEvent::CourierArrived {
                next.courier_arrived = true;
            }
            if courier.is_some() {
                next.courier = courier;
            }
            if next == *order {
                return decided(next, WebhookOutcome::Duplicate, format!("{event} already known"), false);
            }
            if order.scheme != Scheme::KuperDelivery || order.state().is_final() {
                note_anomaly(&mut next, format!("{event} in scheme {} state {}", order.scheme.letter(), order.state()));
                return decided(
                    next,
                    WebhookOutcome::OutOfOrder,
                    format!("{event} not expected here; recorded"),
                    false,
                );
            }
            decided(next, WebhookOutcome::Applied, event.to_string(), false)
        }
        WebhookEvent::OrderPaid => {
            if order.payment_state == PaymentState::Paid {
                return decided(next, WebhookOutcome::Duplicate, "already paid".into(), false);
            }
            next.payment_state = PaymentState::Paid;
            if order.state() == OrderState::Canceled {
                let _ = note_anomaly(&mut next, "order.paid after canceled".into());
                return decided(next, WebhookOutcome::OutOfOrder, "paid after cancellation; recorded".into(), false);
            }
            if order.state() < OrderState::Ready {
                note_anomaly(&mut next, format!("order.paid before ready_for_delivery (state {})", order.state()));
                return decided(next, WebhookOutcome::OutOfOrder, "paid before ready; recorded".into(), false);
            }
            decided(next, WebhookOutcome::Applied, "payment captured".into(), false)
        }
        // Received/delivering belong to scheme A; in B and C those steps are the merchant's,
        // so Kuper's copies are recorded but never skip the merchant's own sequence.
        WebhookEvent::OrderReceived | WebhookEvent::OrderDelivering if order.scheme != Scheme::KuperDelivery => {
            if !note_anomaly(&mut next, format!("{event} in scheme {}", order.scheme.letter())) {
                return decided(next, WebhookOutcome::Duplicate, format!("{event} already recorded"), false);
            }
            decided(
                next,
                WebhookOutcome::OutOfOrder,
                format!("{event} is not part of scheme {}; recorded, state kept", order.scheme.letter()),
                false,
            )
        }
        WebhookEvent::OrderReceived => advance(order, next, event, OrderState::Shipping, KuperState::Shipping),
        WebhookEvent::OrderDelivering => advance(order, next, event, OrderState::Delivering, KuperState::Shipping),
        WebhookEvent::OrderDelivered => advance(order, next, event, OrderState::Delivered, KuperState::Shipped),
        WebhookEvent::OrderCanceled => {
            if order.state() == OrderState::Canceled {
                return decided(next, WebhookOutcome::Duplicate, "already canceled".into(), false);
            }
            if order.state() == OrderState::Delivered {
                note_anomaly(&mut next, "order.canceled after delivered".into());
                return decided(
                    next,
                    WebhookOutcome::Recorded,
                    "canceled after delivery; recorded, state kept".into(),
                    false,
                );
            }
            let (slug, description) = env.cancellation().unwrap_or_default();
            next.cancel(CancelInfo { by: CanceledBy::Kuper, slug: slug.clone(), description });
            next.kuper_state = KuperState::Canceled;
            decided(next, WebhookOutcome::Applied, format!("canceled by Kuper ({slug})"), true)
        }
    }
}

/// Anomalies are kept once each: Kuper's retries of a late webhook add nothing new.
/// Returns false when it was already known.
fn note_anomaly(order: &mut Order, text: String) -> bool {
    if order.anomalies.contains(&text) {
        return false;
    }
    order.anomalies.push(text);
    true
}

/// Kuper moves the order forward; never backward, never out of a final state.
fn advance(order: &Order, mut next: Order, event: WebhookEvent, to: OrderState, kuper: KuperState) -> WebhookDecision {
    let decided = |order: Order, outcome, note: String, supersede| WebhookDecision {
        order,
        outcome,
        note,
        supersede_pending: supersede,
    };
    if order.state() == to {
        return decided(next, WebhookOutcome::Duplicate, format!("{event} already applied"), false);
    }
    if order.state().is_final() || order.state() > to {
        let _ = note_anomaly(&mut next, format!("{event} in state {}", order.state()));
        return decided(
            next,
            WebhookOutcome::Recorded,
            format!("{event} after {}; recorded, state kept", order.state()),
            false,
        );
    }
    let expected = order.scheme == Scheme::KuperDelivery && order.state() >= OrderState::Ready;
    next.move_to(to);
    if next.kuper_state < kuper {
        next.kuper_state = kuper;
    }
    // Kuper finished the order: whatever we still meant to tell it is moot.
    let supersede = to == OrderState::Delivered;
    if expected {
        decided(next, WebhookOutcome::Applied, event.to_string(), supersede)
    } else {
        note_anomaly(&mut next, format!("{event} in scheme {} state {}", order.scheme.letter(), order.state()));
        decided(
            next,
            WebhookOutcome::OutOfOrder,
            format!("{event} not expected in state {}; applied (Kuper decides)", order.state()),
            supersede,
        )
    }
}

/// Kuper acknowledged a notification: its view of the order moves (protocol.md §6).
pub fn kuper_state_after_ack(current: KuperState, event: NotificationEvent, scheme: Scheme) -> KuperState {
    let target = match event {
        NotificationEvent::InWork => KuperState::Collecting,
        NotificationEvent::Assembled => KuperState::Assembled,
        NotificationEvent::ReadyForDelivery => KuperState::ReadyToShip,
        NotificationEvent::Delivering if scheme == Scheme::MerchantDelivery => KuperState::Shipping,
        NotificationEvent::Delivered => KuperState::Shipped,
        NotificationEvent::Canceled => KuperState::Canceled,
        _ => return current,
    };
    if current == KuperState::Canceled || current == KuperState::Shipped {
        return current;
    }
    target.max(current)
}

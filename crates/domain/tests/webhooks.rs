//! Kuper webhooks applied to existing orders (`apply_webhook`): Kuper is the source of truth
//! for its own events, so they never fail; they move the order forward, or are recognised as
//! duplicates, or are recorded without moving the order backward or out of a final state.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;

use common::{cell, order_in, unknown_webhook, webhook, webhook_raw, Facts, BOOLS};
use kuper_bridge_domain::engine::apply_webhook;
use kuper_bridge_domain::order::CanceledBy;
use kuper_bridge_domain::{KuperState, Order, OrderState, PaymentState, Scheme, WebhookOutcome};
use kuper_bridge_wire::{WebhookEnvelope, WebhookEvent};
use proptest::prelude::*;
use serde_json::{json, Value};

use OrderState as S;
use WebhookEvent as W;
use WebhookOutcome as O;

const FACTS: Facts = Facts::none(true);
const A: &[Scheme] = &[Scheme::KuperDelivery];
const B_C: &[Scheme] = &[Scheme::Pickup, Scheme::MerchantDelivery];
const ALL: &[Scheme] = &Scheme::ALL;
const NOT_FINAL: &[OrderState] =
    &[S::Created, S::Accepted, S::InWork, S::Assembled, S::Ready, S::Shipping, S::Delivering];

/// One expectation: in these schemes and states, this webhook gives this outcome and state.
struct Case {
    schemes: &'static [Scheme],
    states: &'static [OrderState],
    event: WebhookEvent,
    outcome: WebhookOutcome,
    /// `None`: the state does not change.
    to: Option<OrderState>,
    supersede: bool,
}

const fn case(
    schemes: &'static [Scheme],
    states: &'static [OrderState],
    event: WebhookEvent,
    outcome: WebhookOutcome,
    to: Option<OrderState>,
    supersede: bool,
) -> Case {
    Case { schemes, states, event, outcome, to, supersede }
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // A, the expected exchange: received → shipping → delivering → delivered.
    case(A, &[S::Ready], W::OrderReceived, O::Applied, Some(S::Shipping), false),
    case(A, &[S::Shipping], W::OrderDelivering, O::Applied, Some(S::Delivering), false),
    // Kuper finished the order: whatever is still queued for it is moot.
    case(A, &[S::Delivering], W::OrderDelivered, O::Applied, Some(S::Delivered), true),
    // A: a skipped webhook does not block the next one (forward moves only).
    case(A, &[S::Ready], W::OrderDelivering, O::Applied, Some(S::Delivering), false),
    case(A, &[S::Shipping], W::OrderDelivered, O::Applied, Some(S::Delivered), true),
    // A: Kuper's courier took an order we had not declared ready: Kuper decides, flagged.
    case(A, &[S::Created, S::InWork, S::Assembled], W::OrderReceived, O::OutOfOrder, Some(S::Shipping), false),
    // Repeats of a move already applied.
    case(A, &[S::Shipping], W::OrderReceived, O::Duplicate, None, false),
    case(A, &[S::Delivering], W::OrderDelivering, O::Duplicate, None, false),
    case(ALL, &[S::Delivered], W::OrderDelivered, O::Duplicate, None, false),
    case(ALL, &[S::Canceled], W::OrderCanceled, O::Duplicate, None, false),
    case(ALL, NOT_FINAL, W::OrderCreated, O::Duplicate, None, false),
    // Backward moves are recorded, never applied.
    case(A, &[S::Delivering], W::OrderReceived, O::Recorded, None, false),
    case(A, &[S::Delivered], W::OrderReceived, O::Recorded, None, false),
    case(A, &[S::Delivered], W::OrderDelivering, O::Recorded, None, false),
    // After the end nothing moves.
    case(A, &[S::Canceled], W::OrderReceived, O::Recorded, None, false),
    case(A, &[S::Canceled], W::OrderDelivering, O::Recorded, None, false),
    case(ALL, &[S::Canceled], W::OrderDelivered, O::Recorded, None, false),
    case(ALL, &[S::Delivered], W::OrderCanceled, O::Recorded, None, false),
    // Kuper may cancel in any state before the end (§6), and what we still meant to send dies.
    case(ALL, NOT_FINAL, W::OrderCanceled, O::Applied, Some(S::Canceled), true),
    // Payment: paid after ready_for_delivery is expected; before it, recorded as an anomaly.
    case(ALL, &[S::Ready, S::Shipping, S::Delivering], W::OrderPaid, O::Applied, None, false),
    case(ALL, &[S::Created, S::Accepted, S::InWork, S::Assembled], W::OrderPaid, O::OutOfOrder, None, false),
    // Couriers belong to scheme A; elsewhere they are kept as anomalies but move nothing.
    case(A, NOT_FINAL, W::CourierAssigned, O::Applied, None, false),
    case(A, NOT_FINAL, W::CourierArrived, O::Applied, None, false),
    case(B_C, &OrderState::ALL, W::CourierAssigned, O::OutOfOrder, None, false),
    case(B_C, &OrderState::ALL, W::CourierArrived, O::OutOfOrder, None, false),
    case(A, &[S::Delivered, S::Canceled], W::CourierAssigned, O::OutOfOrder, None, false),
    // B, C: received/delivering are not Kuper's steps there; recorded once, the state is kept.
    case(B_C, &OrderState::ALL, W::OrderReceived, O::OutOfOrder, None, false),
    case(B_C, &OrderState::ALL, W::OrderDelivering, O::OutOfOrder, None, false),
];

#[test]
fn webhook_table() {
    let mut checked = 0;
    for c in CASES {
        for &scheme in c.schemes {
            for restaurant in BOOLS {
                for &state in c.states {
                    let order = order_in(scheme, restaurant, state, FACTS);
                    let d = apply_webhook(&order, &webhook(&order, c.event));
                    let here = format!("{} + {}: {}", cell(scheme, restaurant, state), c.event, d.note);
                    assert_eq!(d.outcome, c.outcome, "{here}");
                    assert_eq!(d.order.state(), c.to.unwrap_or(state), "{here}");
                    assert_eq!(d.supersede_pending, c.supersede, "{here}");
                    assert_eq!(d.order.notified, order.notified, "{here}: webhooks enqueue nothing");
                    if c.outcome == O::Duplicate {
                        assert_eq!(d.order, order, "{here}: a duplicate changes nothing");
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 200, "{checked}");
}

#[test]
fn paid_sets_the_payment_state_once() {
    for scheme in Scheme::ALL {
        let order = order_in(scheme, false, S::Ready, FACTS);
        let first = apply_webhook(&order, &webhook(&order, W::OrderPaid));
        assert_eq!(first.order.payment_state, PaymentState::Paid);
        let again = apply_webhook(&first.order, &webhook(&first.order, W::OrderPaid));
        assert_eq!(again.outcome, O::Duplicate);
        assert_eq!(again.order, first.order);
        // Too early is still a fact Kuper told us: the payment is recorded anyway.
        let early = order_in(scheme, false, S::InWork, FACTS);
        let d = apply_webhook(&early, &webhook(&early, W::OrderPaid));
        assert_eq!(d.order.payment_state, PaymentState::Paid);
        assert!(!d.order.anomalies.is_empty(), "the anomaly is kept for the operator");
    }
}

#[test]
fn kuper_cancellation_is_recorded_with_its_reason() {
    for scheme in Scheme::ALL {
        let order = order_in(scheme, false, S::Assembled, FACTS);
        let d = apply_webhook(&order, &webhook(&order, W::OrderCanceled));
        let c = d.order.cancellation().expect("cancellation kept");
        assert_eq!(
            (c.by, c.slug.as_str(), c.description.as_str()),
            (CanceledBy::Kuper, "customer_request", "Клиент передумал")
        );
        assert_eq!(d.order.kuper_state, KuperState::Canceled);
        // Any slug is accepted from Kuper, and a missing reason does not block the cancellation.
        let bare = apply_webhook(&order, &webhook_raw(&order, "order.canceled", json!({})));
        assert_eq!(bare.order.state(), S::Canceled);
        let odd = webhook_raw(&order, "order.canceled", json!({"cancellation": {"slug": "weather"}}));
        assert_eq!(apply_webhook(&order, &odd).order.cancellation().map(|c| c.slug.as_str()), Some("weather"));
    }
}

/// The merchant canceled first: Kuper's confirmation is a duplicate and keeps our reason.
#[test]
fn kuper_cancel_after_merchant_cancel_keeps_the_merchant_reason() {
    let order = order_in(Scheme::KuperDelivery, false, S::InWork, FACTS);
    let canceled = kuper_bridge_domain::engine::apply_action(
        &order,
        common::valid_action(kuper_bridge_domain::ActionKind::Cancel),
        &common::policy(true),
    )
    .expect("cancel in in_work")
    .order;
    let d = apply_webhook(&canceled, &webhook(&canceled, W::OrderCanceled));
    assert_eq!(d.outcome, O::Duplicate);
    assert!(!d.supersede_pending, "our own order.canceled must still reach Kuper");
    assert_eq!(d.order.cancellation().map(|c| c.by), Some(CanceledBy::Merchant));
}

#[test]
fn unknown_events_are_recorded_and_change_nothing() {
    for scheme in Scheme::ALL {
        for state in OrderState::ALL {
            let order = order_in(scheme, true, state, FACTS);
            let d = apply_webhook(&order, &unknown_webhook(&order));
            assert_eq!(d.outcome, O::Recorded, "{}", cell(scheme, true, state));
            assert_eq!(d.order, order);
            assert!(!d.supersede_pending);
        }
        // Unknown events need no identity at all (forward compatibility).
        let order = order_in(scheme, false, S::Ready, FACTS);
        let env = WebhookEnvelope::parse(br#"{"event_type":"order.teleported"}"#).expect("lenient");
        assert_eq!(apply_webhook(&order, &env).outcome, O::Recorded);
    }
}

#[test]
fn order_updated_applies_changes_once() {
    let order = order_in(Scheme::KuperDelivery, false, S::InWork, FACTS);
    let first = apply_webhook(&order, &webhook(&order, W::OrderUpdated));
    assert_eq!(first.outcome, O::Applied);
    assert_eq!(first.order.state(), S::InWork);
    assert_eq!(
        first.order.ordered.delivery.as_ref().and_then(|d| d.get("expectedFrom")).and_then(Value::as_str),
        Some("2026-03-14T14:00:00+03:00")
    );
    assert_eq!(first.order.ordered.positions, order.ordered.positions, "an update never reprices the order");
    let again = apply_webhook(&first.order, &webhook(&first.order, W::OrderUpdated));
    assert_eq!(again.outcome, O::Duplicate);
    assert_eq!(again.order, first.order);
}

/// The lifecycle rank of protocol.md §5 (created … delivered), with canceled as the terminal
/// exit reachable from anywhere.
fn rank(s: OrderState) -> u8 {
    match s {
        S::Created => 0,
        S::Accepted => 1,
        S::InWork => 2,
        S::Assembled => 3,
        S::Ready => 4,
        S::Shipping => 5,
        S::Delivering => 6,
        S::Delivered => 7,
        S::Canceled => 8,
    }
}

/// protocol.md §6: ready → collecting → assembled → ready_to_ship → shipping → shipped.
fn kuper_rank(s: KuperState) -> u8 {
    match s {
        KuperState::Ready => 0,
        KuperState::Collecting => 1,
        KuperState::Assembled => 2,
        KuperState::ReadyToShip => 3,
        KuperState::Shipping => 4,
        KuperState::Shipped => 5,
        KuperState::Canceled => 6,
    }
}

/// What must hold for any webhook in any state; returns a description of each violation.
fn invariants(order: &Order, env: &WebhookEnvelope) -> Vec<String> {
    let d = apply_webhook(order, env);
    let mut problems = Vec::new();
    let here = format!(
        "{} + {}: {:?} {}",
        cell(order.scheme, order.restaurant, order.state()),
        env.event_type,
        d.outcome,
        d.note
    );
    let mut check = |ok: bool, what: &str| {
        if !ok {
            problems.push(format!("{here}: {what}"));
        }
    };
    let after = &d.order;
    check(after.notified == order.notified, "a webhook enqueued a notification");
    check(rank(after.state()) >= rank(order.state()), "the state moved backward");
    check(!order.state().is_final() || after.state() == order.state(), "a final state was left");
    check(kuper_rank(after.kuper_state) >= kuper_rank(order.kuper_state), "Kuper's view moved backward");
    check(d.outcome != O::Duplicate || after == order, "a duplicate changed the order");
    check(d.outcome != O::Recorded || after.state() == order.state(), "a recorded webhook moved the state");
    check(d.outcome == O::Duplicate || d.outcome == O::Recorded || after != order, "applied but nothing changed");
    check(!d.supersede_pending || after.state().is_final(), "superseded notifications of a live order");
    check(
        after.state() != S::Canceled || order.state() == S::Canceled || env.event == Some(W::OrderCanceled),
        "canceled without order.canceled",
    );
    check(
        after.payment_state == order.payment_state || env.event == Some(W::OrderPaid),
        "payment changed by another event",
    );
    check(env.event.is_some() || after == order, "an unknown event changed the order");
    if matches!(env.event, Some(W::CourierAssigned | W::CourierArrived)) && order.scheme != Scheme::KuperDelivery {
        check(matches!(d.outcome, O::OutOfOrder | O::Duplicate) && after.state() == order.state(), "courier outside A");
    }
    // Applying the same webhook again is a no-op once it was applied (Kuper retries).
    if matches!(d.outcome, O::Applied | O::OutOfOrder) {
        let again = apply_webhook(after, env);
        check(again.outcome == O::Duplicate && again.order == *after, "a repeat was applied again");
    }
    problems
}

fn every_webhook(order: &Order) -> Vec<WebhookEnvelope> {
    let mut all: Vec<WebhookEnvelope> = W::ALL.iter().map(|&e| webhook(order, e)).collect();
    all.push(unknown_webhook(order));
    all
}

#[test]
fn every_webhook_in_every_state_keeps_the_invariants() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for scheme in Scheme::ALL {
        for restaurant in BOOLS {
            for state in OrderState::ALL {
                for paid in BOOLS {
                    for kuper_state in
                        [KuperState::Ready, KuperState::ReadyToShip, KuperState::Shipped, KuperState::Canceled]
                    {
                        let mut order = order_in(scheme, restaurant, state, FACTS);
                        order.payment_state = if paid { PaymentState::Paid } else { PaymentState::NotPaid };
                        order.kuper_state = kuper_state;
                        for env in every_webhook(&order) {
                            checked += 1;
                            problems.extend(invariants(&order, &env));
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 3 * 2 * 9 * 2 * 4 * 10);
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// Payload values of every JSON type, for the fields the engine reads.
fn any_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!("")),
        Just(json!("text")),
        Just(json!(42)),
        Just(json!(-1.5)),
        Just(json!(true)),
        Just(json!([])),
        Just(json!([{"id": "SKU-100245", "quantity": "x"}])),
        Just(json!({})),
        Just(json!({"slug": 5, "description": ["x"]})),
        Just(json!({"name": "Алексей"})),
    ]
}

const PAYLOAD_KEYS: [&str; 10] =
    ["cancellation", "courier", "delivery", "address", "customer", "comment", "positions", "kind", "storeID", "total"];

proptest! {
    /// Odd payloads (every JSON type in every field the engine reads) never panic and keep the
    /// same invariants: Kuper's messages are stored, never fatal.
    #[test]
    fn odd_payloads_never_panic(
        scheme in prop::sample::select(Scheme::ALL.to_vec()),
        state in prop::sample::select(OrderState::ALL.to_vec()),
        event in prop::sample::select(W::ALL.to_vec()),
        fields in prop::collection::vec((prop::sample::select(PAYLOAD_KEYS.to_vec()), any_json()), 0..5),
    ) {
        let order = order_in(scheme, false, state, FACTS);
        let extra: serde_json::Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let env = webhook_raw(&order, event.as_str(), Value::Object(extra));
        let problems = invariants(&order, &env);
        prop_assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

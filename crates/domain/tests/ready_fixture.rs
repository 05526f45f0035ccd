//! The brief's reference `order.ready_for_delivery` body, produced end to end: an explicit
//! collected list through `apply_action(Ready)`, priced from the order's unit prices
//! (protocol.md §8) and rendered in the `brief` format (§7).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;

use common::{order_in, policy, Facts};
use kuper_bridge_domain::engine::apply_action;
use kuper_bridge_domain::{Action, CollectedLine, OrderState, Scheme};
use kuper_bridge_wire::{NotificationEvent, NotificationFormat};
use rust_decimal::Decimal;
use serde_json::Value;

const FIXTURE: &str = include_str!("../../../fixtures/notifications/brief.order.ready_for_delivery.json");

/// Fixture order H48210377615: 1 of the 2 ordered SKU-100245 and 1135 g of apples (SKU-550071,
/// ordered 1000 g at 189.00), SKU-770300 not collected at all.
fn collected() -> Vec<CollectedLine> {
    vec![
        CollectedLine { id: "SKU-100245".into(), quantity: Decimal::ONE, ..Default::default() },
        CollectedLine {
            id: "SKU-550071".into(),
            quantity: Decimal::ONE,
            weight: Some(Decimal::from(1135)),
            ..Default::default()
        },
    ]
}

fn ready_body() -> (kuper_bridge_domain::Order, kuper_bridge_wire::notification::NotificationData) {
    let facts = Facts::none(true);
    let order = order_in(Scheme::KuperDelivery, false, OrderState::Assembled, facts);
    assert_eq!(order.original_order_id.as_deref(), Some("H48210377615"), "the fixture order");
    let decision = apply_action(&order, Action::Ready { positions: Some(collected()) }, &policy(true))
        .expect("the brief's composition is valid");
    let [n] = <[_; 1]>::try_from(decision.notifications).expect("exactly one notification");
    assert_eq!(n.event, NotificationEvent::ReadyForDelivery);
    (decision.order, n)
}

#[test]
fn totals_match_the_fixture() {
    let (order, n) = ready_body();
    let totals = n.totals.as_ref().expect("totals");
    // 94.99 + 189.00 × 1135 / 1000 = 94.99 + 214.515 → 214.52 (half-up per line) = 309.51;
    // after discount 89.99 + 214.52 = 304.51.
    assert_eq!(totals.total_price.to_string(), "309.51");
    assert_eq!(totals.discount_total_price.to_string(), "304.51");
    assert!(n.changed, "the composition differs from the order");
    let kept = order.ready_composition.as_ref().expect("the order keeps the ready composition");
    assert_eq!(&kept.totals, totals, "the order remembers exactly what Kuper was told");
    assert_eq!(kept.lines.len(), 2, "the uncollected SKU-770300 is absent");
}

#[test]
fn brief_rendering_equals_the_fixture_except_identity() {
    let (order, n) = ready_body();
    let rendered = n.render(NotificationFormat::Brief);
    let expected: Value = serde_json::from_str(FIXTURE).expect("fixture is JSON");

    assert_eq!(rendered["event_type"], expected["event_type"]);
    assert_eq!(rendered["payload"]["positions"], expected["payload"]["positions"]);
    assert_eq!(rendered["payload"]["total"], expected["payload"]["total"]);
    // Identity: the same keys as the fixture, carrying this order's own values.
    assert_eq!(rendered["payload"]["orderUUID"].as_str(), order.order_uuid.as_deref());
    assert_eq!(rendered["payload"]["number"].as_str(), Some(order.number.as_str()));

    // Nothing else: with the identity values swapped in, the whole body equals the fixture.
    let mut normalised = rendered.clone();
    normalised["payload"]["orderUUID"] = expected["payload"]["orderUUID"].clone();
    normalised["payload"]["number"] = expected["payload"]["number"].clone();
    assert_eq!(normalised, expected);
}

/// Collected exactly as ordered (`positions: None`) reproduces Kuper's own totals.
#[test]
fn as_ordered_reproduces_kuper_totals() {
    let facts = Facts::none(true);
    let order = order_in(Scheme::KuperDelivery, false, OrderState::Assembled, facts);
    let d = apply_action(&order, Action::Ready { positions: None }, &policy(true)).expect("ready");
    let totals = d.notifications[0].totals.clone().expect("totals");
    assert_eq!(Some(totals.total_price), order.ordered.total_price);
    assert_eq!(Some(totals.discount_total_price), order.ordered.discount_total_price);
    assert!(!d.notifications[0].changed);
}

/// The event format tells Kuper `order.changed`; listing the very lines that were ordered in
/// another order is not a change of the composition.
#[test]
fn same_lines_in_another_order_are_not_a_change() {
    let facts = Facts::none(true);
    let order = order_in(Scheme::KuperDelivery, false, OrderState::Assembled, facts);
    let reversed: Vec<CollectedLine> = order
        .ordered
        .positions
        .iter()
        .rev()
        .map(|p| CollectedLine { id: p.id.clone(), quantity: p.quantity, weight: p.weight, ..Default::default() })
        .collect();
    let d = apply_action(&order, Action::Ready { positions: Some(reversed) }, &policy(true)).expect("ready");
    assert_eq!(Some(d.notifications[0].totals.clone().expect("totals").total_price), order.ordered.total_price);
    assert!(!d.notifications[0].changed, "nothing changed but the listing order");
}

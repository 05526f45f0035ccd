//! Input validation through `apply_action`: a well-formed request with wrong content is a
//! `DomainError::Invalid` naming the field at fault (HTTP 422), and the order is not touched.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;

use common::{cancel, order_in, policy, valid_action, Facts};
use kuper_bridge_domain::engine::apply_action;
use kuper_bridge_domain::{
    Action, ActionKind, CollectedLine, CustomerCode, DomainError, Order, OrderState, PromisedTime, Scheme,
};
use rust_decimal::Decimal;

const FACTS: Facts = Facts::none(true);

/// Applies `action` to `order`, expects `Invalid` for `field`, and checks the order is intact.
fn assert_invalid(order: &Order, action: Action, field: &str) -> String {
    let before = order.clone();
    let label = format!("{action:?}");
    let err = apply_action(order, action, &policy(true)).expect_err(&label);
    assert_eq!(order, &before, "{label}: the order must not change");
    match err {
        DomainError::Invalid { field: f, message } => {
            assert_eq!(f, field, "{label}: {message}");
            assert!(!message.is_empty(), "{label}: the message explains the problem");
            message
        }
        other => panic!("{label}: expected Invalid({field}), got {other:?}"),
    }
}

fn line(id: &str, quantity: i64) -> CollectedLine {
    CollectedLine { id: id.into(), quantity: Decimal::from(quantity), ..Default::default() }
}

#[test]
fn unknown_cancel_reason_is_refused_and_lists_the_allowed_ones() {
    for scheme in Scheme::ALL {
        let order = order_in(scheme, false, OrderState::InWork, FACTS);
        for reason in ["teleported", "", "OUT_OF_STOCK", "out of stock"] {
            let message = assert_invalid(&order, cancel(reason, "x"), "reason");
            assert!(message.contains("out_of_stock"), "the allowed slugs are listed: {message}");
        }
    }
}

#[test]
fn every_configured_cancel_reason_is_accepted() {
    let order = order_in(Scheme::KuperDelivery, false, OrderState::Created, FACTS);
    for reason in kuper_bridge_domain::policy::DEFAULT_CANCEL_REASONS {
        let d = apply_action(&order, cancel(reason, ""), &policy(true)).unwrap_or_else(|e| panic!("{reason}: {e}"));
        assert_eq!(d.order.cancellation().map(|c| c.slug.as_str()), Some(reason));
    }
}

#[test]
fn overlong_cancel_description_is_refused() {
    let order = order_in(Scheme::Pickup, false, OrderState::Ready, FACTS);
    assert_invalid(&order, cancel("out_of_stock", &"x".repeat(1001)), "description");
}

#[test]
fn malformed_pickup_codes_are_refused() {
    for state in [OrderState::InWork, OrderState::Assembled, OrderState::Ready] {
        let order = order_in(Scheme::Pickup, false, state, FACTS);
        for code in ["", "123", "   ", "48-913", "4829 13", "482913!", "１２３４５６", "кодкод", "1234567890123"]
        {
            assert_invalid(&order, Action::PickupCode { code: CustomerCode::parse(code) }, "code");
        }
    }
}

#[test]
fn well_formed_pickup_codes_are_accepted() {
    let order = order_in(Scheme::Pickup, false, OrderState::Ready, FACTS);
    for code in ["4829", "482913", "AB12cd", "123456789012", " 482913 "] {
        let d = apply_action(&order, Action::PickupCode { code: CustomerCode::parse(code) }, &policy(true))
            .unwrap_or_else(|e| panic!("{code:?}: {e}"));
        // Surrounding blanks are not part of the code Kuper receives.
        assert_eq!(d.notifications[0].pickup_code.as_deref(), Some(code.trim()));
    }
}

#[test]
fn bad_rfc3339_times_are_refused() {
    let bad =
        ["tomorrow", "", "2026-03-14T12:30:00", "2026-03-14 12:30", "14.03.2026 12:30+03:00", "2026-13-40T25:00:00Z"];
    let c_ready = order_in(Scheme::MerchantDelivery, false, OrderState::Ready, FACTS);
    let restaurant_created = order_in(Scheme::KuperDelivery, true, OrderState::Created, FACTS);
    for at in bad {
        assert_invalid(&c_ready, Action::EstimatedDeliveryTime { at: PromisedTime::parse("at", at) }, "at");
        assert_invalid(
            &restaurant_created,
            Action::Accept { expected_assembly_time: Some(PromisedTime::parse("expectedAssemblyTime", at)) },
            "expectedAssemblyTime",
        );
    }
}

#[test]
fn good_times_are_normalised_with_their_offset() {
    let c_ready = order_in(Scheme::MerchantDelivery, false, OrderState::Ready, FACTS);
    let d = apply_action(
        &c_ready,
        Action::EstimatedDeliveryTime { at: PromisedTime::parse("at", "2026-03-14T12:30:00.000+03:00") },
        &policy(true),
    )
    .expect("RFC 3339 with fractional seconds");
    assert_eq!(d.order.estimated_delivery_time.as_deref(), Some("2026-03-14T12:30:00+03:00"));

    let restaurant_created = order_in(Scheme::KuperDelivery, true, OrderState::Created, FACTS);
    let d = apply_action(
        &restaurant_created,
        Action::Accept {
            expected_assembly_time: Some(PromisedTime::parse("expectedAssemblyTime", "2026-03-14T10:45:00+03:00")),
        },
        &policy(true),
    )
    .expect("a valid assembly time");
    assert_eq!(d.order.expected_assembly_time, "2026-03-14T10:45:00+03:00");
    assert_eq!(d.notifications[0].expected_assembly_time.as_deref(), Some("2026-03-14T10:45:00+03:00"));
}

/// Composition errors name the line and the field (protocol.md §8).
fn composition_errors() -> Vec<(Vec<CollectedLine>, &'static str)> {
    vec![
        (vec![line("SKU-100245", 3)], "positions[0].quantity"), // more than ordered
        (vec![line("SKU-100245", 1), line("SKU-100245", 1)], "positions[1].id"), // twice
        (vec![line("SKU-100245", 1), line("SKU-NOT-ORDERED", 1)], "positions[1].id"), // replaces nothing
        (vec![CollectedLine { quantity: Decimal::new(15, 1), ..line("SKU-100245", 0) }], "positions[0].quantity"),
        (vec![CollectedLine { quantity: Decimal::from(-1), ..line("SKU-100245", 0) }], "positions[0].quantity"),
        (vec![CollectedLine { price: Some(Decimal::ONE), ..line("SKU-100245", 1) }], "positions[0].price"),
        (vec![CollectedLine { weight: Some(Decimal::ONE), ..line("SKU-100245", 1) }], "positions[0].weight"),
        (
            vec![CollectedLine { replaced_by_id: Some("SKU-NEW".into()), ..line("SKU-100245", 0) }],
            "positions[0].replacedByID",
        ),
        (vec![CollectedLine { marking_codes: vec!["a".into()], ..line("SKU-770300", 2) }], "positions[0].markingCodes"),
        (vec![line("", 1)], "positions[0].id"),
        (vec![line("SKU-100245", 0)], "positions"), // nothing collected: cancel instead
        (vec![], "positions"),
    ]
}

#[test]
fn ready_with_a_bad_composition_is_refused() {
    for scheme in [Scheme::KuperDelivery, Scheme::MerchantDelivery] {
        for state in [OrderState::InWork, OrderState::Assembled] {
            let order = order_in(scheme, false, state, FACTS);
            for (lines, field) in composition_errors() {
                assert_invalid(&order, Action::Ready { positions: Some(lines) }, field);
            }
        }
    }
}

#[test]
fn delivered_with_a_bad_composition_is_refused() {
    let order = order_in(Scheme::MerchantDelivery, false, OrderState::Delivering, FACTS);
    for (lines, field) in composition_errors() {
        assert_invalid(&order, Action::Delivered { positions: Some(lines), handover_override: None }, field);
    }
}

/// The order of checks: a forbidden action is a 409 even when its input is also wrong, so the
/// merchant learns first that the step itself is out of order.
#[test]
fn state_is_checked_before_content() {
    let order = order_in(Scheme::KuperDelivery, false, OrderState::Canceled, FACTS);
    let inputs = [
        cancel("teleported", ""),
        Action::PickupCode { code: CustomerCode::parse("1") },
        Action::EstimatedDeliveryTime { at: PromisedTime::parse("at", "tomorrow") },
        Action::Accept { expected_assembly_time: Some(PromisedTime::parse("expectedAssemblyTime", "soon")) },
        Action::Ready { positions: Some(vec![]) },
    ];
    for action in inputs {
        let err = apply_action(&order, action.clone(), &policy(true)).expect_err("final state");
        assert!(matches!(err, DomainError::InvalidTransition { .. }), "{action:?}: {err:?}");
    }
}

/// The valid inputs used by the transition table really are valid in a state that allows them.
#[test]
fn the_valid_inputs_are_valid() {
    let ready_b = order_in(Scheme::Pickup, false, OrderState::Ready, FACTS);
    apply_action(&ready_b, valid_action(ActionKind::PickupCode), &policy(true)).expect("pickup code");
    apply_action(&ready_b, valid_action(ActionKind::Cancel), &policy(true)).expect("cancel");
    let ready_c = order_in(Scheme::MerchantDelivery, false, OrderState::Ready, FACTS);
    apply_action(&ready_c, valid_action(ActionKind::EstimatedDeliveryTime), &policy(true)).expect("eta");
}

/// The limit is stated in characters; Kuper's descriptions are usually Russian, two bytes a
/// letter in UTF-8, so a byte count halves the limit.
#[test]
fn cancel_description_limit_counts_characters() {
    let order = order_in(Scheme::Pickup, false, OrderState::Ready, FACTS);
    let description = "я".repeat(600);
    let result = apply_action(&order, cancel("out_of_stock", &description), &policy(true));
    assert!(result.is_ok(), "{:?}", result.err());
}

//! Hand-over of a pickup order (issue #11, item 4): `delivered` in scheme B needs the
//! customer's code verified at the counter, or an operator's written reason to go without it.
//! One table of cases, each checked through `apply_action` and the allowed-action list.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;

use common::{order_in, policy, Facts, PICKUP_CODE};
use kuper_bridge_domain::engine::{allowed_actions, apply_action};
use kuper_bridge_domain::order::PickupCode;
use kuper_bridge_domain::{Action, ActionKind, DomainError, Order, OrderState, OverrideReason, Scheme};
use kuper_bridge_wire::NotificationEvent as N;

use OrderState as S;

/// Where the customer's code stands when the bag is about to be handed over.
#[derive(Debug, Clone, Copy)]
enum Code {
    NotSent,
    /// Sent to Kuper, not checked yet.
    Sent,
    Verified,
    /// Too many wrong codes: verification refused until later; never verified.
    Locked,
}

#[derive(Debug)]
enum Expect {
    /// Handed over; the order keeps this override reason (`None`: none recorded).
    HandedOver(Option<&'static str>),
    /// 409, the explanation containing this text.
    Refused(&'static str),
    /// 422 naming `overrideReason`.
    InvalidReason,
}

struct Case {
    name: &'static str,
    scheme: Scheme,
    state: OrderState,
    code: Code,
    reason: Option<&'static str>,
    expect: Expect,
}

const fn case(
    name: &'static str,
    scheme: Scheme,
    state: OrderState,
    code: Code,
    reason: Option<&'static str>,
    expect: Expect,
) -> Case {
    Case { name, scheme, state, code, reason, expect }
}

const B: Scheme = Scheme::Pickup;
const NOT_VERIFIED: &str = "the customer's pickup code has not been verified; verify it or override with a reason";
const REASON: &str = "Телефон сел, сверили имя и состав заказа";

#[rustfmt::skip]
const CASES: &[Case] = &[
    case("verified", B, S::Ready, Code::Verified, None, Expect::HandedOver(None)),
    case("sent, not verified", B, S::Ready, Code::Sent, None, Expect::Refused(NOT_VERIFIED)),
    case("locked after wrong codes", B, S::Ready, Code::Locked, None, Expect::Refused(NOT_VERIFIED)),
    case("never sent", B, S::Ready, Code::NotSent, None, Expect::Refused("send the pickup code first")),
    case("override, not verified", B, S::Ready, Code::Sent, Some(REASON), Expect::HandedOver(Some(REASON))),
    case("override of a locked code", B, S::Ready, Code::Locked, Some(REASON), Expect::HandedOver(Some(REASON))),
    case("override is trimmed", B, S::Ready, Code::Sent, Some("  Клиент без телефона \n"), Expect::HandedOver(Some("Клиент без телефона"))),
    // Nothing was overridden: the timeline must not claim a hand-over without a code.
    case("override of a verified code", B, S::Ready, Code::Verified, Some(REASON), Expect::HandedOver(None)),
    // Kuper refuses `delivered` before `pickup_code_created`: the override cannot skip it.
    case("override, code never sent", B, S::Ready, Code::NotSent, Some(REASON), Expect::Refused("send the pickup code first")),
    case("override with an empty reason", B, S::Ready, Code::Sent, Some(""), Expect::InvalidReason),
    case("override with a blank reason", B, S::Ready, Code::Locked, Some(" \t\n "), Expect::InvalidReason),
    case("override before ready", B, S::InWork, Code::Sent, Some(REASON), Expect::Refused("not allowed in state in_work")),
    case("override in scheme C", Scheme::MerchantDelivery, S::Delivering, Code::NotSent, Some(REASON), Expect::InvalidReason),
    case("override in scheme A", Scheme::KuperDelivery, S::Ready, Code::NotSent, Some(REASON), Expect::InvalidReason),
    // C hands over without any code, as before.
    case("scheme C without override", Scheme::MerchantDelivery, S::Delivering, Code::NotSent, None, Expect::HandedOver(None)),
];

fn order(c: &Case) -> Order {
    let sent = !matches!(c.code, Code::NotSent);
    let verified = matches!(c.code, Code::Verified);
    let mut order =
        order_in(c.scheme, false, c.state, Facts { code_sent: sent, code_verified: verified, ..Facts::none(true) });
    if matches!(c.code, Code::Locked) {
        order.pickup = Some(PickupCode {
            code: PICKUP_CODE.into(),
            failed_attempts: 5,
            locked_until: Some(4_102_444_800),
            verified: false,
        });
    }
    order
}

fn delivered(reason: Option<&str>) -> Action {
    Action::Delivered { positions: None, handover_override: reason.map(OverrideReason::parse) }
}

/// Checks one case; returns what disagrees (empty = as expected).
fn check(c: &Case) -> Vec<String> {
    let order = order(c);
    let here = format!("{} (scheme {}, {}, {:?})", c.name, c.scheme.letter(), c.state, c.code);
    let mut problems = Vec::new();
    match (&c.expect, apply_action(&order, delivered(c.reason), &policy(true))) {
        (Expect::HandedOver(kept), Ok(d)) => {
            if d.order.state() != S::Delivered {
                problems.push(format!("{here}: state {} instead of delivered", d.order.state()));
            }
            let events: Vec<N> = d.notifications.iter().map(|n| n.event).collect();
            if events != [N::Delivered] {
                problems.push(format!("{here}: enqueued {events:?}"));
            }
            if d.order.handover_override.as_deref() != *kept {
                problems.push(format!("{here}: override kept as {:?}, expected {kept:?}", d.order.handover_override));
            }
        }
        (Expect::Refused(why), Err(e @ DomainError::InvalidTransition { .. })) => {
            if !e.to_string().contains(why) {
                problems.push(format!("{here}: refusal does not say {why:?}: {e}"));
            }
        }
        (Expect::InvalidReason, Err(DomainError::Invalid { field, message })) => {
            if field != "overrideReason" || message.is_empty() {
                problems.push(format!("{here}: invalid {field}: {message:?}, expected overrideReason"));
            }
        }
        (expected, got) => problems.push(format!("{here}: expected {expected:?}, got {got:?}")),
    }
    // The lists the API and the console show never offer a hand-over that needs an override.
    let offered = allowed_actions(&order, &policy(true)).contains(&ActionKind::Delivered);
    let without_override = matches!(c.code, Code::Verified) || c.scheme != B;
    let deliverable_state = matches!((c.scheme, c.state), (B, S::Ready) | (Scheme::MerchantDelivery, S::Delivering));
    if offered != (without_override && deliverable_state) {
        problems.push(format!("{here}: delivered offered = {offered}"));
    }
    problems
}

#[test]
fn pickup_hand_over_needs_a_verified_code_or_a_written_override() {
    let problems: Vec<String> = CASES.iter().flat_map(check).collect();
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// The table above is not vacuous: it has each kind of outcome.
#[test]
fn the_table_covers_every_outcome() {
    let count = |f: fn(&Expect) -> bool| CASES.iter().filter(|c| f(&c.expect)).count();
    assert!(count(|e| matches!(e, Expect::HandedOver(Some(_)))) >= 2);
    assert!(count(|e| matches!(e, Expect::HandedOver(None))) >= 2);
    assert!(count(|e| matches!(e, Expect::Refused(_))) >= 3);
    assert!(count(|e| matches!(e, Expect::InvalidReason)) >= 3);
}

/// The limit counts characters (a Russian letter is two bytes).
#[test]
fn override_reason_length_is_limited_in_characters() {
    let sent = Facts { code_sent: true, ..Facts::none(true) };
    let order = order_in(B, false, S::Ready, sent);
    let longest = "я".repeat(OverrideReason::MAX_CHARS);
    let d = apply_action(&order, delivered(Some(&longest)), &policy(true)).expect("500 characters are enough");
    assert_eq!(d.order.handover_override.as_deref(), Some(longest.as_str()));
    let too_long = "я".repeat(OverrideReason::MAX_CHARS + 1);
    let err = apply_action(&order, delivered(Some(&too_long)), &policy(true)).expect_err("501 characters");
    assert!(matches!(&err, DomainError::Invalid { field, .. } if field == "overrideReason"), "{err:?}");
}

/// A refused hand-over leaves the merchant a way forward: the 409 lists what is allowed now
/// (cancel), and the reason names the verification.
#[test]
fn a_refused_hand_over_lists_what_is_allowed() {
    let sent = Facts { code_sent: true, ..Facts::none(true) };
    let order = order_in(B, false, S::Ready, sent);
    let err = apply_action(&order, delivered(None), &policy(true)).expect_err("not verified");
    let DomainError::InvalidTransition { allowed, reason, .. } = &err else { panic!("{err:?}") };
    assert_eq!(allowed, &[ActionKind::Cancel]);
    assert_eq!(reason.as_deref(), Some(NOT_VERIFIED));
}

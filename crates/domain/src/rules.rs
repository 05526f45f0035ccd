//! The rules table: which merchant action is allowed in which state of which scheme, where
//! it leads and what it tells Kuper (protocol.md §5). Everything else reads this table.

use crate::composition::CollectedLine;
use crate::input::{CancelDescription, CancelReason, CustomerCode, OverrideReason, Parsed, PromisedTime};
use crate::state::{OrderState, OrderState as S, Scheme};
use kuper_bridge_wire::{NotificationEvent, NotificationEvent as N};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A merchant action (one REST endpoint each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    Accept,
    StartAssembly,
    Assembled,
    Ready,
    PickupCode,
    EstimatedDeliveryTime,
    Delivering,
    Delivered,
    Cancel,
}

impl ActionKind {
    pub const ALL: [ActionKind; 9] = [
        Self::Accept,
        Self::StartAssembly,
        Self::Assembled,
        Self::Ready,
        Self::PickupCode,
        Self::EstimatedDeliveryTime,
        Self::Delivering,
        Self::Delivered,
        Self::Cancel,
    ];

    /// The REST path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::StartAssembly => "start-assembly",
            Self::Assembled => "assembled",
            Self::Ready => "ready",
            Self::PickupCode => "pickup-code",
            Self::EstimatedDeliveryTime => "estimated-delivery-time",
            Self::Delivering => "delivering",
            Self::Delivered => "delivered",
            Self::Cancel => "cancel",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A merchant action with its input, parsed at the edge ([`crate::input`]): an input that did
/// not parse is kept as its error, which the engine reports after the state check.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Accept {
        expected_assembly_time: Option<Parsed<PromisedTime>>,
    },
    StartAssembly,
    Assembled,
    /// `None` = collected exactly as ordered.
    Ready {
        positions: Option<Vec<CollectedLine>>,
    },
    /// The code is always concrete here: storage generates one when the merchant omits it.
    PickupCode {
        code: Parsed<CustomerCode>,
    },
    EstimatedDeliveryTime {
        at: Parsed<PromisedTime>,
    },
    Delivering,
    /// `positions`: `None` = handed over as ready. `handover_override`: an operator's written
    /// reason to hand a pickup order over although the customer's code was not verified (the
    /// customer cannot show it, verification is locked…); it reaches the order's timeline.
    Delivered {
        positions: Option<Vec<CollectedLine>>,
        handover_override: Option<Parsed<OverrideReason>>,
    },
    Cancel {
        reason: Parsed<CancelReason>,
        description: Parsed<CancelDescription>,
    },
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Self::Accept { .. } => ActionKind::Accept,
            Self::StartAssembly => ActionKind::StartAssembly,
            Self::Assembled => ActionKind::Assembled,
            Self::Ready { .. } => ActionKind::Ready,
            Self::PickupCode { .. } => ActionKind::PickupCode,
            Self::EstimatedDeliveryTime { .. } => ActionKind::EstimatedDeliveryTime,
            Self::Delivering => ActionKind::Delivering,
            Self::Delivered { .. } => ActionKind::Delivered,
            Self::Cancel { .. } => ActionKind::Cancel,
        }
    }
}

/// Extra conditions beyond the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    None,
    /// The pickup code has not been sent yet (each notification at most once).
    PickupCodeNotSent,
    /// Scheme B hands the bag over only to the customer who showed the code: the code was sent
    /// to Kuper and checked at the counter, or an operator overrides the check with a written
    /// reason (the code must still have been sent: Kuper refuses `delivered` before it).
    PickupCodeVerified,
    EtaNotSent,
    /// `policy.synthesize_assembled` is on (the store skipped `assembled`).
    SynthesizeAssembled,
}

#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub action: ActionKind,
    pub schemes: &'static [Scheme],
    /// `Some(true)` only restaurants, `Some(false)` only non-restaurants, `None` both.
    pub restaurant: Option<bool>,
    pub from: &'static [OrderState],
    /// `None`: the state does not change.
    pub to: Option<OrderState>,
    pub guard: Guard,
    pub emits: &'static [NotificationEvent],
}

const ALL_SCHEMES: &[Scheme] = &[Scheme::KuperDelivery, Scheme::Pickup, Scheme::MerchantDelivery];
const A: &[Scheme] = &[Scheme::KuperDelivery];
const B: &[Scheme] = &[Scheme::Pickup];
const C: &[Scheme] = &[Scheme::MerchantDelivery];
/// Before the order leaves the merchant's hands.
const BEFORE_HANDOVER: &[OrderState] = &[S::Created, S::Accepted, S::InWork, S::Assembled, S::Ready];

const fn rule(
    action: ActionKind,
    schemes: &'static [Scheme],
    restaurant: Option<bool>,
    from: &'static [OrderState],
    to: Option<OrderState>,
    guard: Guard,
    emits: &'static [NotificationEvent],
) -> Rule {
    Rule { action, schemes, restaurant, from, to, guard, emits }
}

#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    rule(ActionKind::Accept, ALL_SCHEMES, Some(true), &[S::Created], Some(S::Accepted), Guard::None, &[N::Accepted]),
    rule(ActionKind::StartAssembly, ALL_SCHEMES, Some(false), &[S::Created], Some(S::InWork), Guard::None, &[N::InWork]),
    rule(ActionKind::StartAssembly, ALL_SCHEMES, Some(true), &[S::Accepted], Some(S::InWork), Guard::None, &[N::InWork]),
    rule(ActionKind::Assembled, ALL_SCHEMES, None, &[S::InWork], Some(S::Assembled), Guard::None, &[N::Assembled]),
    rule(ActionKind::Ready, ALL_SCHEMES, None, &[S::Assembled], Some(S::Ready), Guard::None, &[N::ReadyForDelivery]),
    rule(ActionKind::Ready, ALL_SCHEMES, None, &[S::InWork], Some(S::Ready), Guard::SynthesizeAssembled, &[N::Assembled, N::ReadyForDelivery]),
    // protocol.md §5 B: the gateway allows the code from in_work on; the profile decides further.
    rule(ActionKind::PickupCode, B, None, &[S::InWork, S::Assembled, S::Ready], None, Guard::PickupCodeNotSent, &[N::PickupCodeCreated]),
    rule(ActionKind::EstimatedDeliveryTime, C, None, &[S::Ready], None, Guard::EtaNotSent, &[N::EstimatedDeliveryTime]),
    rule(ActionKind::Delivering, C, None, &[S::Ready], Some(S::Delivering), Guard::None, &[N::Delivering]),
    rule(ActionKind::Delivered, B, None, &[S::Ready], Some(S::Delivered), Guard::PickupCodeVerified, &[N::Delivered]),
    rule(ActionKind::Delivered, C, None, &[S::Delivering], Some(S::Delivered), Guard::None, &[N::Delivered]),
    // A: only before the courier takes the order (Kuper's `shipping`); B: before hand-over.
    rule(ActionKind::Cancel, A, None, BEFORE_HANDOVER, Some(S::Canceled), Guard::None, &[N::Canceled]),
    // (B/C never reach shipping/delivering through Kuper's webhooks; listed so that an order
    // stored in such a state by an older version can still be cancelled.)
    rule(ActionKind::Cancel, B, None, &[S::Created, S::Accepted, S::InWork, S::Assembled, S::Ready, S::Shipping, S::Delivering], Some(S::Canceled), Guard::None, &[N::Canceled]),
    // C: the merchant's own courier may still fail to deliver.
    rule(ActionKind::Cancel, C, None, &[S::Created, S::Accepted, S::InWork, S::Assembled, S::Ready, S::Shipping, S::Delivering], Some(S::Canceled), Guard::None, &[N::Canceled]),
];

/// The facts a guard needs, so rules can be evaluated for diagrams without a full order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub pickup_code_sent: bool,
    /// The customer's code was checked and found valid (`pickup-code/verify`); a locked code
    /// was not.
    pub pickup_code_verified: bool,
    /// The action being decided carries an operator's written reason to hand over without a
    /// verified code. Never a fact of the stored order, so the allowed-action lists (API,
    /// console) do not offer a hand-over before the code is verified.
    pub handover_override: bool,
    pub eta_sent: bool,
    pub synthesize_assembled: bool,
}

impl Rule {
    pub fn matches(&self, scheme: Scheme, restaurant: bool, state: OrderState, facts: Facts) -> bool {
        self.schemes.contains(&scheme)
            && self.restaurant.is_none_or(|r| r == restaurant)
            && self.from.contains(&state)
            && match self.guard {
                Guard::None => true,
                Guard::PickupCodeNotSent => !facts.pickup_code_sent,
                Guard::PickupCodeVerified => {
                    facts.pickup_code_verified || (facts.handover_override && facts.pickup_code_sent)
                }
                Guard::EtaNotSent => !facts.eta_sent,
                Guard::SynthesizeAssembled => facts.synthesize_assembled,
            }
    }
}

/// The first rule that allows `action` now, if any.
pub fn find_rule(
    action: ActionKind,
    scheme: Scheme,
    restaurant: bool,
    state: OrderState,
    facts: Facts,
) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.action == action && r.matches(scheme, restaurant, state, facts))
}

/// Every action allowed now, in the table's order, without repeats.
pub fn allowed_actions(scheme: Scheme, restaurant: bool, state: OrderState, facts: Facts) -> Vec<ActionKind> {
    let mut out: Vec<ActionKind> = Vec::new();
    for r in RULES.iter().filter(|r| r.matches(scheme, restaurant, state, facts)) {
        if !out.contains(&r.action) {
            out.push(r.action);
        }
    }
    out
}

/// Why an action is refused in a state where a rule exists but its guard fails.
pub fn guard_reason(
    action: ActionKind,
    scheme: Scheme,
    restaurant: bool,
    state: OrderState,
    facts: Facts,
) -> Option<&'static str> {
    let rule = RULES.iter().find(|r| {
        r.action == action
            && r.schemes.contains(&scheme)
            && r.restaurant.is_none_or(|x| x == restaurant)
            && r.from.contains(&state)
    })?;
    match rule.guard {
        Guard::PickupCodeNotSent if facts.pickup_code_sent => Some("the pickup code was already sent"),
        Guard::PickupCodeVerified if !facts.pickup_code_sent => Some("send the pickup code first"),
        Guard::PickupCodeVerified if !facts.pickup_code_verified && !facts.handover_override => {
            Some("the customer's pickup code has not been verified; verify it or override with a reason")
        }
        Guard::EtaNotSent if facts.eta_sent => Some("the estimated delivery time was already sent"),
        Guard::SynthesizeAssembled if !facts.synthesize_assembled => Some("send assembled first"),
        _ => None,
    }
}

//! Deadlines of an order as timers (issue #7 item 5): which promises of the merchant are still
//! open, when each is due and when to warn before it. Pure: the order, when it was created and
//! the settings in; the pending deadlines out. The sweep in the dispatcher decides what is
//! due "now" and storage records each warning and miss once.
//!
//! Three kinds (protocol.md "Deadlines"):
//! - `restaurant_accept`: a restaurant order must be `accepted` within a configured time of its
//!   creation. Kuper cancels restaurant orders that are not accepted in time, but does not
//!   publish the limit; the default (5 min) is ours, below what other marketplaces allow
//!   (10–11.5 min), so the warning comes while there is still time.
//! - `assembly`: the order must be assembled (or ready) by its `expectedAssemblyTime`.
//! - `delivery_window`: the order must be handed over by the end of its delivery window
//!   (`delivery.expectedTo`) — only where the hand-over is the merchant's: scheme C (merchant
//!   delivers) and B (the customer collects at the store). In scheme A Kuper's courier
//!   delivers; the merchant's part ends at `ready`, which the assembly deadline covers.
//!
//! A deadline is met once the order reached the state that keeps the promise, and no deadline
//! is pending for a final (delivered or canceled) order.

use crate::order::Order;
use crate::state::{OrderState, Scheme};
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineKind {
    RestaurantAccept,
    Assembly,
    DeliveryWindow,
}

impl DeadlineKind {
    pub const ALL: [DeadlineKind; 3] = [Self::RestaurantAccept, Self::Assembly, Self::DeliveryWindow];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RestaurantAccept => "restaurant_accept",
            Self::Assembly => "assembly",
            Self::DeliveryWindow => "delivery_window",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// What the merchant must do to meet it (for log lines and timeline details).
    pub fn promise(self) -> &'static str {
        match self {
            Self::RestaurantAccept => "accept the restaurant order",
            Self::Assembly => "assemble the order by expectedAssemblyTime",
            Self::DeliveryWindow => "hand the order over by the end of its delivery window",
        }
    }
}

impl fmt::Display for DeadlineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a pending deadline has come at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineStage {
    /// Before the warning time.
    Pending,
    /// Past the warning time, before the due time.
    Warning,
    /// Past the due time and still not met.
    Missed,
}

impl DeadlineStage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Warning => "warning",
            Self::Missed => "missed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Warning, Self::Missed].into_iter().find(|stage| stage.as_str() == s)
    }
}

/// The deadline settings of a deployment (config `[deadlines]`; the defaults are the
/// config's). Times in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadlineSettings {
    /// Restaurant orders must be accepted this long after creation.
    pub restaurant_accept_ms: i64,
    /// Warn this long before each kind's due time (0: no warning).
    pub restaurant_accept_warn_ms: i64,
    pub assembly_warn_ms: i64,
    pub delivery_window_warn_ms: i64,
}

impl Default for DeadlineSettings {
    fn default() -> Self {
        Self {
            restaurant_accept_ms: 5 * 60_000,
            restaurant_accept_warn_ms: 2 * 60_000,
            assembly_warn_ms: 2 * 60_000,
            delivery_window_warn_ms: 2 * 60_000,
        }
    }
}

impl DeadlineSettings {
    pub fn warn_before_ms(&self, kind: DeadlineKind) -> i64 {
        match kind {
            DeadlineKind::RestaurantAccept => self.restaurant_accept_warn_ms,
            DeadlineKind::Assembly => self.assembly_warn_ms,
            DeadlineKind::DeliveryWindow => self.delivery_window_warn_ms,
        }
        .max(0)
    }
}

/// One pending deadline. Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deadline {
    pub kind: DeadlineKind,
    pub due_at: i64,
    /// `due_at` minus the kind's warning lead; equal to `due_at` when no warning is configured.
    pub warn_at: i64,
}

impl Deadline {
    pub fn stage(&self, now_ms: i64) -> DeadlineStage {
        if now_ms >= self.due_at {
            DeadlineStage::Missed
        } else if now_ms >= self.warn_at && self.warn_at < self.due_at {
            DeadlineStage::Warning
        } else {
            DeadlineStage::Pending
        }
    }
}

/// Whether the order kept (or can no longer keep) the promise of `kind`: it reached the state
/// that meets it, or it is final.
pub fn is_met(order: &Order, kind: DeadlineKind) -> bool {
    is_met_in(order.state(), kind)
}

/// [`is_met`] by the state alone (it depends on nothing else).
pub fn is_met_in(state: OrderState, kind: DeadlineKind) -> bool {
    if state.is_final() {
        return true;
    }
    match kind {
        DeadlineKind::RestaurantAccept => state != OrderState::Created,
        // `ready` without `assembled` (the store skipped it) also meets it: the states are ordered.
        DeadlineKind::Assembly => state >= OrderState::Assembled,
        // Only `delivered` hands over in B and C, and `delivered` is final.
        DeadlineKind::DeliveryWindow => false,
    }
}

/// The states in which an order has not (yet) met `kind`: where a recorded miss still counts
/// as "past due".
pub fn unmet_states(kind: DeadlineKind) -> Vec<OrderState> {
    OrderState::ALL.into_iter().filter(|&s| !is_met_in(s, kind)).collect()
}

/// Whether `kind` is a promise the merchant makes for this order at all.
pub fn applies(order: &Order, kind: DeadlineKind) -> bool {
    match kind {
        DeadlineKind::RestaurantAccept => order.restaurant,
        DeadlineKind::Assembly => true,
        DeadlineKind::DeliveryWindow => matches!(order.scheme, Scheme::Pickup | Scheme::MerchantDelivery),
    }
}

/// Unix ms of an RFC 3339 time; `None` for a missing or malformed one (Kuper's payload is
/// checked elsewhere; here a time we cannot read only means no timer).
fn millis(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s.trim()).ok().map(|t| t.timestamp_millis())
}

/// The end of the delivery window (`delivery.expectedTo`), if the order has a readable one.
pub fn delivery_window_end(order: &Order) -> Option<i64> {
    order.ordered.delivery.as_ref()?.get("expectedTo")?.as_str().and_then(millis)
}

/// The due time of `kind` for this order, whether or not it is met.
fn due_at(order: &Order, created_at_ms: i64, kind: DeadlineKind, settings: &DeadlineSettings) -> Option<i64> {
    match kind {
        DeadlineKind::RestaurantAccept => created_at_ms.checked_add(settings.restaurant_accept_ms),
        DeadlineKind::Assembly => millis(&order.expected_assembly_time),
        DeadlineKind::DeliveryWindow => delivery_window_end(order),
    }
}

/// The deadlines still pending for the order (not met, order not final), in kind order.
/// `created_at_ms` is when kuper-bridge stored the order (the restaurant clock starts there).
pub fn deadlines(order: &Order, created_at_ms: i64, settings: &DeadlineSettings) -> Vec<Deadline> {
    DeadlineKind::ALL
        .into_iter()
        .filter(|&kind| applies(order, kind) && !is_met(order, kind))
        .filter_map(|kind| {
            let due_at = due_at(order, created_at_ms, kind, settings)?;
            let warn_at = due_at.saturating_sub(settings.warn_before_ms(kind));
            Some(Deadline { kind, due_at, warn_at })
        })
        .collect()
}

/// The pending deadlines with their stage at `now_ms`.
pub fn deadlines_at(
    order: &Order,
    created_at_ms: i64,
    settings: &DeadlineSettings,
    now_ms: i64,
) -> Vec<(Deadline, DeadlineStage)> {
    deadlines(order, created_at_ms, settings).into_iter().map(|d| (d, d.stage(now_ms))).collect()
}

/// When the deadline sweep must look at this order next: the earliest warning or miss of a
/// pending deadline that is not recorded yet (`recorded(kind, stage)`); `None` when nothing is
/// left to record (every deadline met, or its miss recorded). A warning that cannot happen
/// (no lead time) is not waited for.
pub fn next_check(
    order: &Order,
    created_at_ms: i64,
    settings: &DeadlineSettings,
    recorded: impl Fn(DeadlineKind, DeadlineStage) -> bool,
) -> Option<i64> {
    deadlines(order, created_at_ms, settings)
        .into_iter()
        .filter(|d| !recorded(d.kind, DeadlineStage::Missed))
        .map(|d| {
            let warning_due = d.warn_at < d.due_at && !recorded(d.kind, DeadlineStage::Warning);
            if warning_due {
                d.warn_at
            } else {
                d.due_at
            }
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagram::sample_order;
    use crate::policy::Policy;
    use proptest::prelude::*;
    use serde_json::json;
    use DeadlineKind::*;

    const CREATED: i64 = 1_773_471_731_000; // 2026-03-14T10:02:11+03:00, the sample's creation.

    fn order(scheme: Scheme, restaurant: bool, state: OrderState) -> Order {
        let o = sample_order(scheme, restaurant, &Policy::default()).unwrap();
        let by_kuper = crate::order::CancelInfo {
            by: crate::order::CanceledBy::Kuper,
            slug: "customer_request".into(),
            description: String::new(),
        };
        o.clone().in_state(state).unwrap_or_else(|| o.canceled(by_kuper))
    }

    fn kinds(o: &Order) -> Vec<DeadlineKind> {
        deadlines(o, CREATED, &DeadlineSettings::default()).iter().map(|d| d.kind).collect()
    }

    /// Scheme × restaurant × state → the kinds still pending.
    #[test]
    fn pending_kinds_per_scheme_and_state() {
        use OrderState as S;
        #[rustfmt::skip]
        let table: &[(Scheme, bool, OrderState, &[DeadlineKind])] = &[
            (Scheme::KuperDelivery, false, S::Created, &[Assembly]),
            (Scheme::KuperDelivery, true, S::Created, &[RestaurantAccept, Assembly]),
            (Scheme::KuperDelivery, true, S::Accepted, &[Assembly]),
            (Scheme::KuperDelivery, true, S::InWork, &[Assembly]),
            (Scheme::KuperDelivery, false, S::Assembled, &[]),
            (Scheme::KuperDelivery, false, S::Ready, &[]),
            (Scheme::KuperDelivery, false, S::Shipping, &[]),
            (Scheme::KuperDelivery, false, S::Delivering, &[]),
            (Scheme::Pickup, false, S::Created, &[Assembly, DeliveryWindow]),
            (Scheme::Pickup, true, S::Created, &[RestaurantAccept, Assembly, DeliveryWindow]),
            (Scheme::Pickup, false, S::InWork, &[Assembly, DeliveryWindow]),
            (Scheme::Pickup, false, S::Ready, &[DeliveryWindow]),
            (Scheme::MerchantDelivery, false, S::Created, &[Assembly, DeliveryWindow]),
            (Scheme::MerchantDelivery, true, S::Accepted, &[Assembly, DeliveryWindow]),
            (Scheme::MerchantDelivery, false, S::Assembled, &[DeliveryWindow]),
            (Scheme::MerchantDelivery, false, S::Ready, &[DeliveryWindow]),
            (Scheme::MerchantDelivery, false, S::Delivering, &[DeliveryWindow]),
        ];
        for &(scheme, restaurant, state, expected) in table {
            let o = order(scheme, restaurant, state);
            assert_eq!(kinds(&o), expected, "{scheme} restaurant={restaurant} {state}");
        }
        for scheme in Scheme::ALL {
            for restaurant in [false, true] {
                for state in [S::Delivered, S::Canceled] {
                    assert!(kinds(&order(scheme, restaurant, state)).is_empty(), "{scheme} {state}");
                }
            }
        }
    }

    #[test]
    fn due_and_warning_times() {
        let o = order(Scheme::MerchantDelivery, true, OrderState::Created);
        let s = DeadlineSettings::default();
        let d = deadlines(&o, CREATED, &s);
        assert_eq!(d[0], Deadline { kind: RestaurantAccept, due_at: CREATED + 300_000, warn_at: CREATED + 180_000 });
        // The sample's expectedAssemblyTime is creation + assembly_minutes (30).
        assert_eq!(d[1].due_at, CREATED + 30 * 60_000);
        assert_eq!(d[1].warn_at, d[1].due_at - 2 * 60_000);
        // The fixture's window ends 2026-03-14T13:00:00+03:00.
        assert_eq!(d[2].due_at, millis("2026-03-14T13:00:00+03:00").unwrap());
        assert_eq!(d[0].stage(CREATED), DeadlineStage::Pending);
        assert_eq!(d[0].stage(CREATED + 180_000), DeadlineStage::Warning);
        assert_eq!(d[0].stage(CREATED + 300_000), DeadlineStage::Missed);
    }

    #[test]
    fn no_warning_lead_means_no_warning_stage() {
        let s = DeadlineSettings { restaurant_accept_warn_ms: 0, ..DeadlineSettings::default() };
        let d = deadlines(&order(Scheme::KuperDelivery, true, OrderState::Created), CREATED, &s)[0];
        assert_eq!(d.warn_at, d.due_at);
        assert_eq!(d.stage(d.due_at - 1), DeadlineStage::Pending);
        assert_eq!(d.stage(d.due_at), DeadlineStage::Missed);
    }

    #[test]
    fn unreadable_times_mean_no_timer() {
        let mut o = order(Scheme::MerchantDelivery, false, OrderState::Created);
        o.expected_assembly_time = "soon".into();
        o.ordered.delivery = Some(json!({"expectedTo": 17}));
        assert!(kinds(&o).is_empty());
        o.ordered.delivery = None;
        assert!(kinds(&o).is_empty());
        // A creation time at the end of time does not overflow.
        let r = order(Scheme::KuperDelivery, true, OrderState::Created);
        assert!(deadlines(&r, i64::MAX, &DeadlineSettings::default()).iter().all(|d| d.kind != RestaurantAccept));
    }

    fn any_state() -> impl Strategy<Value = OrderState> {
        prop::sample::select(OrderState::ALL.to_vec())
    }

    fn any_scheme() -> impl Strategy<Value = Scheme> {
        prop::sample::select(Scheme::ALL.to_vec())
    }

    proptest! {
        /// A met or final order never has a pending deadline of that kind, whatever the times.
        #[test]
        fn met_or_final_never_pending(
            scheme in any_scheme(),
            restaurant in any::<bool>(),
            state in any_state(),
            created in 0i64..4_000_000_000_000,
            accept_ms in 0i64..86_400_000,
            warn_ms in 0i64..86_400_000,
            now in 0i64..4_000_000_000_000,
        ) {
            let o = order(scheme, restaurant, state);
            let s = DeadlineSettings {
                restaurant_accept_ms: accept_ms,
                restaurant_accept_warn_ms: warn_ms,
                assembly_warn_ms: warn_ms,
                delivery_window_warn_ms: warn_ms,
            };
            for (d, _) in deadlines_at(&o, created, &s, now) {
                prop_assert!(!state.is_final(), "final {state} has {d:?}");
                prop_assert!(!is_met(&o, d.kind), "met {:?} pending in {state}", d.kind);
                prop_assert!(applies(&o, d.kind));
                prop_assert!(d.warn_at <= d.due_at);
            }
        }
    }

    #[test]
    fn the_next_check_is_the_earliest_stage_not_recorded_yet() {
        let settings = DeadlineSettings::default();
        let o = order(Scheme::Pickup, true, OrderState::Created);
        let all = deadlines(&o, CREATED, &settings);
        let at = |kind: DeadlineKind| all.iter().find(|d| d.kind == kind).copied().unwrap();
        let (accept, window) = (at(RestaurantAccept), at(DeliveryWindow));
        let none = |_: DeadlineKind, _: DeadlineStage| false;
        assert_eq!(next_check(&o, CREATED, &settings, none), all.iter().map(|d| d.warn_at).min());
        // The restaurant's warning recorded: its miss is next (it is the earliest).
        let warned = |k: DeadlineKind, s: DeadlineStage| k == RestaurantAccept && s == DeadlineStage::Warning;
        assert_eq!(next_check(&o, CREATED, &settings, warned), Some(accept.due_at.min(at(Assembly).warn_at)));
        // Every miss recorded: nothing left to look at.
        let missed = |_: DeadlineKind, s: DeadlineStage| s == DeadlineStage::Missed;
        assert_eq!(next_check(&o, CREATED, &settings, missed), None);
        // Met deadlines are not waited for; a final order has none.
        let ready = order(Scheme::Pickup, false, OrderState::Ready);
        assert_eq!(next_check(&ready, CREATED, &settings, none), Some(window.warn_at));
        let delivered = order(Scheme::Pickup, false, OrderState::Delivered);
        assert_eq!(next_check(&delivered, CREATED, &settings, none), None);
        // No lead time: no warning to wait for.
        let no_lead = DeadlineSettings { delivery_window_warn_ms: 0, ..settings };
        assert_eq!(next_check(&ready, CREATED, &no_lead, none), Some(window.due_at));
    }

    #[test]
    fn unmet_states_are_the_open_states_short_of_the_promise() {
        use OrderState as S;
        assert_eq!(unmet_states(RestaurantAccept), vec![S::Created]);
        assert!(unmet_states(Assembly).iter().all(|s| !s.is_final() && *s < S::Assembled));
        assert!(unmet_states(DeliveryWindow).iter().all(|s| !s.is_final()));
        assert_eq!(unmet_states(DeliveryWindow).len(), S::ALL.iter().filter(|s| !s.is_final()).count());
    }
}

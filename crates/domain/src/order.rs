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
    /// Private to the domain, with `cancellation`, so that no one outside it can move an order into
    /// `canceled` without its reason: read with [`Order::state`].
    pub(crate) state: OrderState,
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
    /// `Some` exactly when `state` is `canceled` ([`Order::cancel`] sets both).
    pub(crate) cancellation: Option<CancelInfo>,
    /// Every notification ever enqueued for this order, in order, each at most once.
    pub notified: Notified,
    /// Webhooks that arrived where the scheme did not expect them (kept, never fatal).
    pub anomalies: Vec<String>,
}

/// The notifications enqueued for an order, in the order they were, each at most once: the
/// engine's "sent once" rules read it, so it cannot hold a duplicate. Stored as a JSON array; a
/// repeated entry in a stored array is read once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Notified(Vec<NotificationEvent>);

impl Notified {
    /// Records `event`; false (and no change) if it was recorded before.
    pub fn insert(&mut self, event: NotificationEvent) -> bool {
        if self.contains(event) {
            return false;
        }
        self.0.push(event);
        true
    }

    pub fn contains(&self, event: NotificationEvent) -> bool {
        self.0.contains(&event)
    }

    pub fn iter(&self) -> impl Iterator<Item = NotificationEvent> + '_ {
        self.0.iter().copied()
    }
}

impl Extend<NotificationEvent> for Notified {
    fn extend<I: IntoIterator<Item = NotificationEvent>>(&mut self, events: I) {
        for event in events {
            self.insert(event);
        }
    }
}

impl FromIterator<NotificationEvent> for Notified {
    fn from_iter<I: IntoIterator<Item = NotificationEvent>>(events: I) -> Self {
        let mut notified = Notified::default();
        notified.extend(events);
        notified
    }
}

impl<'de> Deserialize<'de> for Notified {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<NotificationEvent>::deserialize(d)?.into_iter().collect())
    }
}

impl Order {
    pub fn state(&self) -> OrderState {
        self.state
    }

    /// Who canceled the order and why: `Some` exactly when its state is `canceled`.
    pub fn cancellation(&self) -> Option<&CancelInfo> {
        self.cancellation.as_ref()
    }

    /// Ends the order as canceled, with its reason: the only way into `canceled`.
    pub(crate) fn cancel(&mut self, info: CancelInfo) {
        self.state = OrderState::Canceled;
        self.cancellation = Some(info);
    }

    /// Moves the order along. `canceled` is left to [`Order::cancel`], which has the reason: a
    /// rule that leads there cancels in the same step.
    pub(crate) fn move_to(&mut self, to: OrderState) {
        if to != OrderState::Canceled {
            self.state = to;
        }
    }

    /// This order in `state`, for a state that needs nothing more (tests, fixtures, the
    /// diagrams); `None` for `canceled`, which needs its reason: [`Order::canceled`].
    pub fn in_state(mut self, state: OrderState) -> Option<Self> {
        (state != OrderState::Canceled).then(|| {
            self.state = state;
            self.cancellation = None;
            self
        })
    }

    /// This order canceled with `info`.
    pub fn canceled(mut self, info: CancelInfo) -> Self {
        self.cancel(info);
        self
    }

    pub fn has_notified(&self, event: NotificationEvent) -> bool {
        self.notified.contains(event)
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

#[cfg(test)]
mod notified_tests {
    use super::*;

    #[test]
    fn a_canceled_order_has_its_cancellation_and_only_then() {
        let order = crate::diagram::sample_order(Scheme::Pickup, false, &crate::Policy::default()).expect("sample");
        assert!(order.clone().in_state(OrderState::Canceled).is_none(), "canceled needs its reason");
        let info = CancelInfo { by: CanceledBy::Kuper, slug: "customer_request".into(), description: String::new() };
        let canceled = order.canceled(info.clone());
        assert_eq!((canceled.state(), canceled.cancellation()), (OrderState::Canceled, Some(&info)));
        let reopened = canceled.in_state(OrderState::Ready).expect("ready needs nothing more");
        assert_eq!((reopened.state(), reopened.cancellation()), (OrderState::Ready, None));
    }

    #[test]
    fn a_notification_is_recorded_once_in_the_order_it_came() {
        let mut n = Notified::default();
        assert!(n.insert(NotificationEvent::InWork));
        assert!(n.insert(NotificationEvent::Assembled));
        assert!(!n.insert(NotificationEvent::InWork), "a second in_work changes nothing");
        assert_eq!(n.iter().collect::<Vec<_>>(), [NotificationEvent::InWork, NotificationEvent::Assembled]);
        // A stored array that repeats an entry (written before this type existed) reads once.
        let stored: Notified = serde_json::from_str(r#"["order.in_work","order.assembled","order.in_work"]"#).unwrap();
        assert_eq!(stored, n);
        assert_eq!(serde_json::to_string(&stored).unwrap(), r#"["order.in_work","order.assembled"]"#);
    }
}

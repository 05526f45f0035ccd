//! Outbound notification bodies (protocol.md §7) in both formats.

use crate::decimal::{money_string, quantity_value};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NotificationEvent {
    #[serde(rename = "order.accepted")]
    Accepted,
    #[serde(rename = "order.in_work")]
    InWork,
    #[serde(rename = "order.assembled")]
    Assembled,
    #[serde(rename = "order.ready_for_delivery")]
    ReadyForDelivery,
    #[serde(rename = "order.pickup_code_created")]
    PickupCodeCreated,
    #[serde(rename = "order.estimated_delivery_time")]
    EstimatedDeliveryTime,
    #[serde(rename = "order.delivering")]
    Delivering,
    #[serde(rename = "order.delivered")]
    Delivered,
    #[serde(rename = "order.canceled")]
    Canceled,
}

impl NotificationEvent {
    pub const ALL: [NotificationEvent; 9] = [
        Self::Accepted,
        Self::InWork,
        Self::Assembled,
        Self::ReadyForDelivery,
        Self::PickupCodeCreated,
        Self::EstimatedDeliveryTime,
        Self::Delivering,
        Self::Delivered,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "order.accepted",
            Self::InWork => "order.in_work",
            Self::Assembled => "order.assembled",
            Self::ReadyForDelivery => "order.ready_for_delivery",
            Self::PickupCodeCreated => "order.pickup_code_created",
            Self::EstimatedDeliveryTime => "order.estimated_delivery_time",
            Self::Delivering => "order.delivering",
            Self::Delivered => "order.delivered",
            Self::Canceled => "order.canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

impl fmt::Display for NotificationEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `kuper.notification_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationFormat {
    /// The brief's `{"event_type","payload"}` body (default).
    #[default]
    Brief,
    /// The v3 `{"event":{"type","payload"}}` body.
    Event,
}

/// One line of the final composition, with totals already computed by the domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PositionOut {
    pub id: String,
    pub quantity: Decimal,
    /// Grams (line total) for weighed goods.
    pub weight: Option<Decimal>,
    pub price: Decimal,
    pub discount_price: Decimal,
    /// Line total after discount, rounded to kopecks.
    pub total_price: Decimal,
    /// Line total before discount, rounded to kopecks.
    pub total_price_before_discount: Decimal,
    pub replaced_by_id: Option<String>,
    pub marking_codes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TotalsOut {
    /// Sum of rounded lines before discount.
    pub total_price: Decimal,
    /// Sum of rounded lines after discount.
    pub discount_total_price: Decimal,
}

/// Everything any notification may carry; the event decides which fields are rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationData {
    pub event: NotificationEvent,
    pub original_order_id: Option<String>,
    pub order_uuid: Option<String>,
    pub number: String,
    pub positions: Option<Vec<PositionOut>>,
    pub totals: Option<TotalsOut>,
    /// True when the composition differs from what was ordered (event format's `changed`).
    pub changed: bool,
    pub pickup_code: Option<String>,
    pub cancellation: Option<Cancellation>,
    pub estimated_delivery_time: Option<String>,
    pub expected_assembly_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    pub slug: String,
    pub description: String,
}

impl NotificationData {
    pub fn new(
        event: NotificationEvent,
        original_order_id: Option<String>,
        order_uuid: Option<String>,
        number: String,
    ) -> Self {
        Self {
            event,
            original_order_id,
            order_uuid,
            number,
            positions: None,
            totals: None,
            changed: false,
            pickup_code: None,
            cancellation: None,
            estimated_delivery_time: None,
            expected_assembly_time: None,
        }
    }

    pub fn render(&self, format: NotificationFormat) -> Value {
        match format {
            NotificationFormat::Brief => self.render_brief(),
            NotificationFormat::Event => self.render_event(),
        }
    }

    fn render_brief(&self) -> Value {
        let mut p = Map::new();
        match (&self.order_uuid, &self.original_order_id) {
            (Some(uuid), _) => {
                p.insert("orderUUID".into(), json!(uuid));
            }
            (None, Some(id)) => {
                p.insert("originalOrderId".into(), json!(id));
            }
            (None, None) => {}
        }
        p.insert("number".into(), json!(self.number));
        if let Some(positions) = &self.positions {
            let lines: Vec<Value> = positions
                .iter()
                .map(|l| {
                    let mut m = Map::new();
                    m.insert("id".into(), json!(l.id));
                    m.insert("quantity".into(), quantity_value(l.quantity));
                    m.insert("price".into(), json!(money_string(l.price)));
                    m.insert("discountPrice".into(), json!(money_string(l.discount_price)));
                    m.insert("totalPrice".into(), json!(money_string(l.total_price)));
                    m.insert("weight".into(), json!(weight_string(l.weight)));
                    if let Some(r) = &l.replaced_by_id {
                        m.insert("replacedByID".into(), json!(r));
                    }
                    if !l.marking_codes.is_empty() {
                        m.insert("markingCode".into(), marking(&l.marking_codes));
                    }
                    Value::Object(m)
                })
                .collect();
            p.insert("positions".into(), Value::Array(lines));
        }
        if let Some(t) = &self.totals {
            p.insert(
                "total".into(),
                json!({"totalPrice": money_string(t.total_price), "discountTotalPrice": money_string(t.discount_total_price)}),
            );
        }
        if let Some(code) = &self.pickup_code {
            p.insert("pickupCode".into(), json!(code));
        }
        if let Some(c) = &self.cancellation {
            p.insert("cancellation".into(), json!({"slug": c.slug, "description": c.description}));
        }
        if let Some(at) = &self.estimated_delivery_time {
            p.insert("estimatedDeliveryTime".into(), json!(at));
        }
        if let Some(at) = &self.expected_assembly_time {
            p.insert("expectedAssemblyTime".into(), json!(at));
        }
        json!({"event_type": self.event.as_str(), "payload": Value::Object(p)})
    }

    fn render_event(&self) -> Value {
        let mut p = Map::new();
        if let Some(id) = &self.original_order_id {
            p.insert("order_id".into(), json!(id));
        }
        if let Some(uuid) = &self.order_uuid {
            p.insert("orderUUID".into(), json!(uuid));
        }
        p.insert("number".into(), json!(self.number));
        if let Some(positions) = &self.positions {
            let lines: Vec<Value> = positions
                .iter()
                .map(|l| {
                    let mut m = Map::new();
                    m.insert("id".into(), json!(l.id));
                    m.insert("quantity".into(), quantity_value(l.quantity));
                    m.insert("weight".into(), json!(weight_string(l.weight)));
                    if let Some(r) = &l.replaced_by_id {
                        m.insert("replacedByID".into(), json!(r));
                    }
                    if !l.marking_codes.is_empty() {
                        m.insert("markingCode".into(), marking(&l.marking_codes));
                    }
                    Value::Object(m)
                })
                .collect();
            let mut order = Map::new();
            if let Some(id) = &self.original_order_id {
                order.insert("originalOrderId".into(), json!(id));
            }
            order.insert("changed".into(), json!(self.changed));
            order.insert("positions".into(), Value::Array(lines));
            p.insert("order".into(), Value::Object(order));
        }
        if let Some(code) = &self.pickup_code {
            p.insert("code".into(), json!(code));
        }
        if let Some(c) = &self.cancellation {
            p.insert("cancellation".into(), json!({"slug": c.slug, "description": c.description}));
        }
        if let Some(at) = &self.estimated_delivery_time {
            p.insert("estimated_delivery_at".into(), json!(at));
        }
        if let Some(at) = &self.expected_assembly_time {
            p.insert("estimated_assembly_at".into(), json!(at));
        }
        json!({"event": {"type": self.event.as_str(), "payload": Value::Object(p)}})
    }
}

fn weight_string(weight: Option<Decimal>) -> String {
    weight.map(|w| w.normalize().to_string()).unwrap_or_default()
}

fn marking(codes: &[String]) -> Value {
    Value::Array(codes.iter().map(|c| json!({"value": c})).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    fn ready() -> NotificationData {
        let mut d = NotificationData::new(
            NotificationEvent::ReadyForDelivery,
            Some("H48210377615".into()),
            Some("acme:7d0b3c52-9a1e-4f53-8c2e-1b6a44f0e912".into()),
            "ERP-2026-000781".into(),
        );
        d.positions = Some(vec![
            PositionOut {
                id: "SKU-100245".into(),
                quantity: Decimal::ONE,
                weight: None,
                price: Decimal::new(9499, 2),
                discount_price: Decimal::new(8999, 2),
                total_price: Decimal::new(8999, 2),
                total_price_before_discount: Decimal::new(9499, 2),
                replaced_by_id: None,
                marking_codes: vec![],
            },
            PositionOut {
                id: "SKU-550071".into(),
                quantity: Decimal::ONE,
                weight: Some(Decimal::from(1135)),
                price: Decimal::new(18900, 2),
                discount_price: Decimal::new(18900, 2),
                total_price: Decimal::new(21452, 2),
                total_price_before_discount: Decimal::new(21452, 2),
                replaced_by_id: None,
                marking_codes: vec![],
            },
        ]);
        d.totals =
            Some(TotalsOut { total_price: Decimal::new(30951, 2), discount_total_price: Decimal::new(30451, 2) });
        d
    }

    #[test]
    fn brief_ready_matches_fixture() {
        let expected = fixture(include_str!("../../../fixtures/notifications/brief.order.ready_for_delivery.json"));
        assert_eq!(ready().render(NotificationFormat::Brief), expected);
    }

    #[test]
    fn brief_simple_events_match_fixtures() {
        let base = |e| {
            NotificationData::new(
                e,
                None,
                Some("acme:7d0b3c52-9a1e-4f53-8c2e-1b6a44f0e912".into()),
                "ERP-2026-000781".into(),
            )
        };
        assert_eq!(
            base(NotificationEvent::InWork).render(NotificationFormat::Brief),
            fixture(include_str!("../../../fixtures/notifications/brief.order.in_work.json"))
        );
        let mut code = base(NotificationEvent::PickupCodeCreated);
        code.pickup_code = Some("482913".into());
        assert_eq!(
            code.render(NotificationFormat::Brief),
            fixture(include_str!("../../../fixtures/notifications/brief.order.pickup_code_created.json"))
        );
        let mut cancel = base(NotificationEvent::Canceled);
        cancel.cancellation =
            Some(Cancellation { slug: "out_of_stock".into(), description: "Нет товара".into() });
        assert_eq!(
            cancel.render(NotificationFormat::Brief),
            fixture(include_str!("../../../fixtures/notifications/brief.order.canceled.json"))
        );
    }

    #[test]
    fn event_format_shape() {
        let mut d = ready();
        d.changed = true;
        let v = d.render(NotificationFormat::Event);
        assert_eq!(v["event"]["type"], "order.ready_for_delivery");
        assert_eq!(v["event"]["payload"]["order_id"], "H48210377615");
        assert_eq!(v["event"]["payload"]["order"]["changed"], true);
        assert_eq!(v["event"]["payload"]["order"]["positions"][1]["weight"], "1135");
    }

    #[test]
    fn event_names_round_trip() {
        for e in NotificationEvent::ALL {
            assert_eq!(NotificationEvent::parse(e.as_str()), Some(e));
            assert_eq!(serde_json::to_value(e).unwrap(), json!(e.as_str()));
        }
    }
}

//! Inbound webhook bodies (protocol.md §3): `{"event_type","timestamp"?,"payload":{…}}`.
//!
//! The raw bytes are always stored by the caller; this module only decides whether the body
//! is usable and extracts what the order engine needs. Unknown fields are ignored here and
//! survive in the stored raw body.

use crate::decimal::{kind_of, read_decimal};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// A precise reason why a body was refused, naming the JSON path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ParseError {
    pub path: String,
    pub message: String,
}

impl ParseError {
    fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WebhookEvent {
    #[serde(rename = "order.created")]
    OrderCreated,
    #[serde(rename = "order.updated")]
    OrderUpdated,
    #[serde(rename = "courier.assigned")]
    CourierAssigned,
    #[serde(rename = "courier.arrived")]
    CourierArrived,
    #[serde(rename = "order.paid")]
    OrderPaid,
    #[serde(rename = "order.received")]
    OrderReceived,
    #[serde(rename = "order.delivering")]
    OrderDelivering,
    #[serde(rename = "order.delivered")]
    OrderDelivered,
    #[serde(rename = "order.canceled")]
    OrderCanceled,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 9] = [
        Self::OrderCreated,
        Self::OrderUpdated,
        Self::CourierAssigned,
        Self::CourierArrived,
        Self::OrderPaid,
        Self::OrderReceived,
        Self::OrderDelivering,
        Self::OrderDelivered,
        Self::OrderCanceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderCreated => "order.created",
            Self::OrderUpdated => "order.updated",
            Self::CourierAssigned => "courier.assigned",
            Self::CourierArrived => "courier.arrived",
            Self::OrderPaid => "order.paid",
            Self::OrderReceived => "order.received",
            Self::OrderDelivering => "order.delivering",
            Self::OrderDelivered => "order.delivered",
            Self::OrderCanceled => "order.canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

impl fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kuper's identity of an order: at least one of the two is present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderIdentity {
    #[serde(rename = "originalOrderId", skip_serializing_if = "Option::is_none")]
    pub original_order_id: Option<String>,
    #[serde(rename = "orderUUID", skip_serializing_if = "Option::is_none")]
    pub order_uuid: Option<String>,
}

/// A parsed webhook: its event (or the unknown type string) and the payload object.
#[derive(Debug, Clone)]
pub struct WebhookEnvelope {
    pub event_type: String,
    pub event: Option<WebhookEvent>,
    pub timestamp: Option<String>,
    pub payload: Map<String, Value>,
    /// Present for every known event (the parse fails otherwise).
    pub identity: OrderIdentity,
    /// The order object, once parsed by [`WebhookEnvelope::cache_order`].
    order: Option<OrderPayload>,
}

impl WebhookEnvelope {
    /// Parses the envelope. Unknown event types are accepted (forward compatibility) and
    /// need no identity; known ones must name the order.
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ParseError::at("$", format!("malformed JSON: {e}")))?;
        let Value::Object(mut root) = value else {
            return Err(ParseError::at("$", format!("expected an object, got {}", kind_of(&value))));
        };
        let event_type = match root.get("event_type") {
            Some(Value::String(s)) if s.contains('\0') => {
                return Err(ParseError::at("$.event_type", "contains a NUL character"))
            }
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(Value::String(_)) => return Err(ParseError::at("$.event_type", "must not be empty")),
            Some(other) => {
                return Err(ParseError::at("$.event_type", format!("expected a string, got {}", kind_of(other))))
            }
            None => return Err(ParseError::at("$.event_type", "missing")),
        };
        let timestamp = match root.get("timestamp") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(ParseError::at("$.timestamp", format!("expected a string, got {}", kind_of(other))))
            }
        };
        let event = WebhookEvent::parse(&event_type);
        let payload = match root.remove("payload") {
            Some(Value::Object(map)) => map,
            None | Some(Value::Null) if event.is_none() => Map::new(),
            None => return Err(ParseError::at("$.payload", "missing")),
            Some(other) => {
                return Err(ParseError::at("$.payload", format!("expected an object, got {}", kind_of(&other))))
            }
        };
        let identity = read_identity(&payload)?;
        if event.is_some() && identity.original_order_id.is_none() && identity.order_uuid.is_none() {
            return Err(ParseError::at(
                "$.payload",
                "missing order identity: originalOrderId or orderUUID is required",
            ));
        }
        Ok(Self { event_type, event, timestamp, payload, identity, order: None })
    }

    /// The order object of `order.created` / `order.updated`.
    pub fn order(&self) -> Result<OrderPayload, ParseError> {
        match &self.order {
            Some(o) => Ok(o.clone()),
            None => OrderPayload::from_payload(&self.payload, self.event == Some(WebhookEvent::OrderCreated)),
        }
    }

    /// Parses the order object now and keeps it: the receiver validates before it opens a
    /// write transaction, and storage reuses the result instead of parsing again under the lock.
    pub fn cache_order(&mut self) -> Result<(), ParseError> {
        if self.order.is_none() {
            self.order =
                Some(OrderPayload::from_payload(&self.payload, self.event == Some(WebhookEvent::OrderCreated))?);
        }
        Ok(())
    }

    pub fn cancellation(&self) -> Option<(String, String)> {
        let c = self.payload.get("cancellation")?;
        let slug = c.get("slug").and_then(Value::as_str).unwrap_or("").to_string();
        let description = c.get("description").and_then(Value::as_str).unwrap_or("").to_string();
        Some((slug, description))
    }
}

fn read_identity(payload: &Map<String, Value>) -> Result<OrderIdentity, ParseError> {
    Ok(OrderIdentity {
        original_order_id: optional_id(payload, "originalOrderId", "$.payload.originalOrderId")?,
        order_uuid: optional_id(payload, "orderUUID", "$.payload.orderUUID")?,
    })
}

/// Ids are strings in every sample, but integers appear in ids elsewhere (storeID): accept both.
fn optional_id(map: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, ParseError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() > 200 => Err(ParseError::at(path, "longer than 200 characters")),
        Some(Value::String(s)) if s.chars().any(char::is_control) => {
            Err(ParseError::at(path, "contains a control character"))
        }
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(Some(n.to_string())),
        Some(other) => Err(ParseError::at(path, format!("expected a string, got {}", kind_of(other)))),
    }
}

/// One ordered line as Kuper sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PositionIn {
    pub id: String,
    pub name: Option<String>,
    pub original_quantity: Decimal,
    pub quantity: Decimal,
    pub price: Decimal,
    pub discount_price: Decimal,
    /// Grams for weighed goods (line total); `None` for piece goods (`""` on the wire).
    pub weight: Option<Decimal>,
    /// Restaurant modifiers and any other fields, kept verbatim for display.
    pub modifiers: Vec<Value>,
}

/// The order object of `order.created` (and the changed parts of `order.updated`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderPayload {
    pub store_id: Option<String>,
    pub shipment_method: Option<String>,
    pub comment: Option<String>,
    pub customer: Option<Value>,
    pub address: Option<Value>,
    pub delivery: Option<Value>,
    pub payment_methods: Vec<String>,
    pub replacement_policy: Option<String>,
    pub complete_before: Option<String>,
    pub positions: Vec<PositionIn>,
    pub total_price: Option<Decimal>,
    pub discount_total_price: Option<Decimal>,
}

impl OrderPayload {
    fn from_payload(p: &Map<String, Value>, require_positions: bool) -> Result<Self, ParseError> {
        let store_id = optional_id(p, "storeID", "$.payload.storeID")?;
        let shipment_method = optional_string(p, "shipmentMethod", "$.payload.shipmentMethod")?;
        let comment = optional_string(p, "comment", "$.payload.comment")?;
        let replacement_policy = optional_string(p, "replacementPolicy", "$.payload.replacementPolicy")?;
        let complete_before = optional_string(p, "completeBefore", "$.payload.completeBefore")?;
        let customer = optional_object(p, "customer", "$.payload.customer")?;
        let address = optional_object(p, "address", "$.payload.address")?;
        let delivery = optional_object(p, "delivery", "$.payload.delivery")?;
        let payment_methods = match p.get("paymentMethods") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(ParseError::at(
                        format!("$.payload.paymentMethods[{i}]"),
                        format!("expected a string, got {}", kind_of(other)),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(ParseError::at(
                    "$.payload.paymentMethods",
                    format!("expected an array, got {}", kind_of(other)),
                ))
            }
        };
        let positions = match p.get("positions") {
            None | Some(Value::Null) if !require_positions => Vec::new(),
            None | Some(Value::Null) => return Err(ParseError::at("$.payload.positions", "missing")),
            Some(Value::Array(items)) => {
                if require_positions && items.is_empty() {
                    return Err(ParseError::at("$.payload.positions", "must not be empty"));
                }
                if items.len() > 10_000 {
                    return Err(ParseError::at("$.payload.positions", "more than 10000 positions"));
                }
                items.iter().enumerate().map(|(i, v)| read_position(i, v)).collect::<Result<_, _>>()?
            }
            Some(other) => {
                return Err(ParseError::at("$.payload.positions", format!("expected an array, got {}", kind_of(other))))
            }
        };
        let (total_price, discount_total_price) = match p.get("total") {
            None | Some(Value::Null) => (None, None),
            Some(Value::Object(t)) => (
                field_decimal(t, "totalPrice", "$.payload.total.totalPrice")?,
                field_decimal(t, "discountTotalPrice", "$.payload.total.discountTotalPrice")?,
            ),
            Some(other) => {
                return Err(ParseError::at("$.payload.total", format!("expected an object, got {}", kind_of(other))))
            }
        };
        Ok(Self {
            store_id,
            shipment_method,
            comment,
            customer,
            address,
            delivery,
            payment_methods,
            replacement_policy,
            complete_before,
            positions,
            total_price,
            discount_total_price,
        })
    }

    pub fn is_pickup(&self) -> bool {
        self.shipment_method.as_deref() == Some("pickup")
    }
}

fn read_position(index: usize, value: &Value) -> Result<PositionIn, ParseError> {
    let path = format!("$.payload.positions[{index}]");
    let Value::Object(m) = value else {
        return Err(ParseError::at(path, format!("expected an object, got {}", kind_of(value))));
    };
    let id =
        optional_id(m, "id", &format!("{path}.id"))?.ok_or_else(|| ParseError::at(format!("{path}.id"), "missing"))?;
    let quantity = field_decimal(m, "quantity", &format!("{path}.quantity"))?
        .ok_or_else(|| ParseError::at(format!("{path}.quantity"), "missing"))?;
    let original_quantity =
        field_decimal(m, "originalQuantity", &format!("{path}.originalQuantity"))?.unwrap_or(quantity);
    let price = field_decimal(m, "price", &format!("{path}.price"))?
        .ok_or_else(|| ParseError::at(format!("{path}.price"), "missing"))?;
    let discount_price = field_decimal(m, "discountPrice", &format!("{path}.discountPrice"))?.unwrap_or(price);
    let weight = field_decimal(m, "weight", &format!("{path}.weight"))?.filter(|w| !w.is_zero());
    // Far above any real order, far below where decimal arithmetic could overflow.
    let limit = Decimal::from(1_000_000_000u64);
    for (name, v) in [
        ("quantity", quantity),
        ("originalQuantity", original_quantity),
        ("price", price),
        ("discountPrice", discount_price),
        ("weight", weight.unwrap_or_default()),
    ] {
        if v.is_sign_negative() {
            return Err(ParseError::at(format!("{path}.{name}"), "must not be negative"));
        }
        if v > limit {
            return Err(ParseError::at(format!("{path}.{name}"), "too large"));
        }
    }
    let name = optional_string(m, "name", &format!("{path}.name"))?;
    let modifiers = match m.get("modifiers") {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    };
    Ok(PositionIn { id, name, original_quantity, quantity, price, discount_price, weight, modifiers })
}

fn field_decimal(map: &Map<String, Value>, key: &str, path: &str) -> Result<Option<Decimal>, ParseError> {
    match map.get(key) {
        None => Ok(None),
        Some(v) => read_decimal(v).map_err(|m| ParseError::at(path, m)),
    }
}

fn optional_string(map: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, ParseError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ParseError::at(path, format!("expected a string, got {}", kind_of(other)))),
    }
}

fn optional_object(map: &Map<String, Value>, key: &str, path: &str) -> Result<Option<Value>, ParseError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(other) => Err(ParseError::at(path, format!("expected an object, got {}", kind_of(other)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATED_A: &str = include_str!("../../../fixtures/webhooks/order.created.kuper-delivery.json");
    const CREATED_B: &str = include_str!("../../../fixtures/webhooks/order.created.pickup.json");
    const CREATED_R: &str = include_str!("../../../fixtures/webhooks/order.created.restaurant.json");

    #[test]
    fn parses_every_fixture() {
        for body in [
            CREATED_A,
            CREATED_B,
            CREATED_R,
            include_str!("../../../fixtures/webhooks/courier.arrived.json"),
            include_str!("../../../fixtures/webhooks/courier.assigned.json"),
            include_str!("../../../fixtures/webhooks/order.canceled.json"),
            include_str!("../../../fixtures/webhooks/order.delivered.json"),
            include_str!("../../../fixtures/webhooks/order.delivering.json"),
            include_str!("../../../fixtures/webhooks/order.paid.json"),
            include_str!("../../../fixtures/webhooks/order.received.json"),
            include_str!("../../../fixtures/webhooks/order.updated.json"),
        ] {
            let env = WebhookEnvelope::parse(body.as_bytes()).unwrap();
            assert!(env.event.is_some());
            if matches!(env.event, Some(WebhookEvent::OrderCreated | WebhookEvent::OrderUpdated)) {
                env.order().unwrap();
            }
        }
    }

    #[test]
    fn order_created_fields() {
        let env = WebhookEnvelope::parse(CREATED_A.as_bytes()).unwrap();
        assert_eq!(env.identity.original_order_id.as_deref(), Some("H48210377615"));
        let order = env.order().unwrap();
        assert_eq!(order.store_id.as_deref(), Some("1184"));
        assert_eq!(order.positions.len(), 3);
        assert_eq!(order.positions[1].weight, Some(Decimal::from(1000)));
        assert_eq!(order.positions[0].weight, None);
        assert_eq!(order.positions[0].discount_price, Decimal::new(8999, 2));
        let pickup = WebhookEnvelope::parse(CREATED_B.as_bytes()).unwrap().order().unwrap();
        assert_eq!(pickup.store_id.as_deref(), Some("27"), "integer storeID is read as a string");
        assert!(pickup.is_pickup());
        assert!(pickup.address.is_none());
    }

    #[test]
    fn refuses_with_precise_paths() {
        let cases: &[(&str, &str)] = &[
            ("{", "$"),
            ("[]", "$"),
            (r#"{"payload":{}}"#, "$.event_type"),
            (r#"{"event_type":5,"payload":{}}"#, "$.event_type"),
            (r#"{"event_type":"order.paid"}"#, "$.payload"),
            (r#"{"event_type":"order.paid","payload":[]}"#, "$.payload"),
            (r#"{"event_type":"order.paid","payload":{}}"#, "$.payload"),
            (r#"{"event_type":"order.paid","payload":{"orderUUID":{}}}"#, "$.payload.orderUUID"),
            // NUL cannot be stored (PostgreSQL TEXT) and is never a real id.
            (r#"{"event_type":"order.x\u0000y","payload":{}}"#, "$.event_type"),
            (r#"{"event_type":"order.paid","payload":{"originalOrderId":"H1\u0000"}}"#, "$.payload.originalOrderId"),
        ];
        for (body, path) in cases {
            let err = WebhookEnvelope::parse(body.as_bytes()).unwrap_err();
            assert_eq!(&err.path, path, "{body}: {err}");
        }
        let bad_price = CREATED_A.replace("\"94.99\"", "\"nine\"");
        let env = WebhookEnvelope::parse(bad_price.as_bytes()).unwrap();
        assert_eq!(env.order().unwrap_err().path, "$.payload.positions[0].price");
        let no_positions = r#"{"event_type":"order.created","payload":{"originalOrderId":"H1"}}"#;
        let env = WebhookEnvelope::parse(no_positions.as_bytes()).unwrap();
        assert_eq!(env.order().unwrap_err().path, "$.payload.positions");
    }

    #[test]
    fn unknown_event_needs_no_identity() {
        let env = WebhookEnvelope::parse(br#"{"event_type":"order.teleported"}"#).unwrap();
        assert_eq!(env.event, None);
        assert_eq!(env.event_type, "order.teleported");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            if let Ok(env) = WebhookEnvelope::parse(&bytes) {
                let _ = env.order();
            }
        }

        #[test]
        fn never_panics_on_mutated_fixture(pos in 0usize..2248, byte in proptest::num::u8::ANY) {
            let mut bytes = CREATED_A.as_bytes().to_vec();
            let i = pos % bytes.len();
            bytes[i] = byte;
            if let Ok(env) = WebhookEnvelope::parse(&bytes) {
                let _ = env.order();
            }
        }
    }
}

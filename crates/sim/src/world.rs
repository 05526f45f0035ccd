//! Kuper's side of every order the simulator created, and the log of notifications.

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset, Utc};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::driver::{Answer, TargetAuth};
use crate::generate::GeneratedOrder;
use crate::model::{EventKind, Integration, KuperState, OrderPosition, PaymentState, Scheme};
use crate::money::format_money;
use crate::validate::{CreatedCheck, OrderFacts, OrderIds, Rejection, Rule, Totals};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accepted,
    Rejected,
    Fault,
    RepeatAccepted,
}

/// One notification request as Kuper saw it.
#[derive(Clone, Debug, Serialize)]
pub struct NotificationRecord {
    pub seq: u64,
    pub event: Option<String>,
    pub at: String,
    pub path: String,
    pub status: u16,
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub body: Value,
    #[serde(rename = "originalOrderId")]
    pub original_order_id: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WebhookRecord {
    pub event: String,
    pub at: String,
    pub status: Option<u16>,
    pub body: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl WebhookRecord {
    pub fn new(event: &str, answer: &Answer) -> Self {
        Self {
            event: event.to_owned(),
            at: now_utc(),
            status: answer.status,
            body: answer.body.clone(),
            error: answer.error.clone(),
        }
    }

    /// A webhook Kuper decided on but did not send (`"deliver": false`).
    pub fn suppressed(event: &str) -> Self {
        Self {
            event: event.to_owned(),
            at: now_utc(),
            status: None,
            body: Value::Null,
            error: Some("not delivered (deliver: false)".to_owned()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct OrderRecord {
    pub original_order_id: String,
    pub order_uuid: String,
    pub number: Option<String>,
    pub integration: Integration,
    pub scheme: Scheme,
    pub restaurant: bool,
    pub target: String,
    pub auth: Option<TargetAuth>,
    pub state: KuperState,
    pub payment: PaymentState,
    pub payload: Value,
    pub positions: Vec<OrderPosition>,
    pub total: Totals,
    /// Notifications accepted, in order.
    pub done: Vec<EventKind>,
    /// The last accepted composition, as the merchant sent it.
    pub collected: Option<Value>,
    pub collected_totals: Option<Totals>,
    pub pickup_code: Option<String>,
    pub created_check: Option<CreatedCheck>,
    pub notifications: Vec<NotificationRecord>,
    pub webhooks: Vec<WebhookRecord>,
    /// Unix ms when Kuper placed the order, and when its view of it last changed: the pull
    /// API's `createdAt`/`updatedAt` and its `updated_since` filter read these.
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The `cancellation` object of Kuper's cancel, shown by the pull API.
    pub cancellation: Option<Value>,
}

impl OrderRecord {
    pub fn new(
        generated: GeneratedOrder,
        integration: Integration,
        restaurant: bool,
        target: String,
        auth: Option<TargetAuth>,
    ) -> Self {
        Self {
            original_order_id: generated.original_order_id,
            order_uuid: generated.order_uuid,
            number: None,
            integration,
            scheme: generated.scheme,
            restaurant,
            target,
            auth,
            state: KuperState::Ready,
            payment: PaymentState::NotPaid,
            payload: generated.payload,
            positions: generated.positions,
            total: Totals { total_price: generated.total_price, discount_total_price: generated.discount_total_price },
            done: Vec::new(),
            collected: None,
            collected_totals: None,
            pickup_code: None,
            created_check: None,
            notifications: Vec::new(),
            webhooks: Vec::new(),
            created_ms: now_ms(),
            updated_ms: now_ms(),
            cancellation: None,
        }
    }

    /// Kuper's view changed: the pull API reports the order as updated.
    pub fn touch(&mut self) {
        // Never backwards, even if the wall clock steps back: keyset paging relies on it.
        self.updated_ms = now_ms().max(self.updated_ms);
    }

    pub fn facts(&self) -> OrderFacts<'_> {
        OrderFacts {
            scheme: self.scheme,
            restaurant: self.restaurant,
            state: self.state,
            done: &self.done,
            positions: &self.positions,
        }
    }

    /// What Kuper charges: the collected composition once there is one, else the order.
    pub fn charged(&self) -> Totals {
        self.collected_totals.unwrap_or(self.total)
    }

    pub fn summary(&self) -> Value {
        json!({
            "originalOrderId": self.original_order_id,
            "orderUUID": self.order_uuid,
            "number": self.number,
            "integration": self.integration,
            "scheme": self.scheme,
            "restaurant": self.restaurant,
            "state": self.state,
            "paymentState": self.payment,
        })
    }

    /// The control API's full view (`GET /sim/v1/orders/{id}`).
    pub fn view(&self) -> Value {
        let mut view = self.summary();
        if let Some(map) = view.as_object_mut() {
            map.insert("order".into(), self.payload.clone());
            map.insert("accepted".into(), json!(self.done.iter().map(|k| k.wire()).collect::<Vec<_>>()));
            map.insert("pickupCode".into(), json!(self.pickup_code));
            map.insert("collected".into(), self.collected.clone().unwrap_or(Value::Null));
            map.insert(
                "createdCheck".into(),
                match &self.created_check {
                    Some(check) => json!({"ok": check.ok, "problems": check.problems}),
                    None => Value::Null,
                },
            );
            map.insert("notifications".into(), json!(self.notifications));
            map.insert("webhooks".into(), json!(self.webhooks));
        }
        view
    }

    /// The pull API's shipment: the order as Kuper holds it, with its states.
    pub fn shipment(&self) -> Value {
        let mut shipment = match &self.payload {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        shipment.insert("number".into(), json!(self.number));
        shipment.insert("state".into(), json!(self.state));
        shipment.insert("paymentState".into(), json!(self.payment));
        if let Some(collected) = &self.collected {
            shipment.insert("collected".into(), collected.clone());
        }
        if let Some(code) = &self.pickup_code {
            shipment.insert("pickupCode".into(), json!(code));
        }
        if let Some(cancellation) = &self.cancellation {
            shipment.insert("cancellation".into(), cancellation.clone());
        }
        shipment.insert("createdAt".into(), json!(ms_rfc3339(self.created_ms)));
        shipment.insert("updatedAt".into(), json!(ms_rfc3339(self.updated_ms)));
        Value::Object(shipment)
    }

    /// The `payload` of a webhook about this order: identity, sensible defaults for the
    /// event, then the caller's fields on top.
    pub fn webhook_payload(&self, event: &str, extra: Option<&Map<String, Value>>) -> Value {
        let mut payload = match (event, &self.payload) {
            // A second order.created carries the whole order again (idempotency tests).
            ("order.created", Value::Object(order)) => order.clone(),
            _ => Map::new(),
        };
        payload.insert("originalOrderId".into(), json!(self.original_order_id));
        payload.insert("orderUUID".into(), json!(self.order_uuid));
        match event {
            "courier.assigned" | "courier.arrived" => {
                payload.insert("courier".into(), json!({"name": "Алексей", "phone": "+79990001122"}));
            }
            "order.canceled" => {
                payload.insert(
                    "cancellation".into(),
                    json!({"slug": "customer_request", "description": "Клиент передумал"}),
                );
            }
            "order.paid" => {
                let charged = self.charged();
                payload.insert("paymentState".into(), json!("paid"));
                payload.insert(
                    "total".into(),
                    json!({
                        "totalPrice": format_money(charged.total_price),
                        "discountTotalPrice": format_money(charged.discount_total_price),
                    }),
                );
            }
            "order.updated" => {
                payload.insert("kind".into(), json!("delivery_changed"));
                for key in ["storeID", "delivery", "shipmentMethod"] {
                    if let Some(value) = self.payload.get(key) {
                        payload.insert(key.into(), value.clone());
                    }
                }
            }
            _ => {}
        }
        if let Some(extra) = extra {
            for (key, value) in extra {
                payload.insert(key.clone(), value.clone());
            }
        }
        Value::Object(payload)
    }

    /// Kuper's own events move its view of the order (protocol.md §6).
    pub fn apply_webhook(&mut self, event: &str) {
        let before = (self.state, self.payment);
        match event {
            "order.received" | "order.delivering" => self.state = self.state.advance(KuperState::Shipping),
            "order.delivered" => self.state = self.state.advance(KuperState::Shipped),
            "order.canceled" => self.state = self.state.advance(KuperState::Canceled),
            "order.paid" => self.payment = PaymentState::Paid,
            _ => {}
        }
        if (self.state, self.payment) != before {
            self.touch();
        }
    }
}

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Unix ms as RFC 3339 UTC with milliseconds (the pull API's times).
pub fn ms_rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn now_utc() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Kuper writes times in Moscow time.
pub fn now_moscow() -> DateTime<FixedOffset> {
    let now = Utc::now();
    match FixedOffset::east_opt(3 * 3600) {
        Some(moscow) => now.with_timezone(&moscow),
        None => now.fixed_offset(),
    }
}

pub struct World {
    pub rng: StdRng,
    orders: Vec<OrderRecord>,
    by_id: HashMap<String, usize>,
    by_uuid: HashMap<String, usize>,
    by_number: HashMap<String, Vec<usize>>,
    log: Vec<NotificationRecord>,
}

impl World {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            orders: Vec::new(),
            by_id: HashMap::new(),
            by_uuid: HashMap::new(),
            by_number: HashMap::new(),
            log: Vec::new(),
        }
    }

    pub fn contains_id(&self, original_order_id: &str) -> bool {
        self.by_id.contains_key(original_order_id)
    }

    pub fn insert(&mut self, order: OrderRecord) -> usize {
        let index = self.orders.len();
        self.by_id.insert(order.original_order_id.clone(), index);
        self.by_uuid.insert(order.order_uuid.clone(), index);
        self.orders.push(order);
        index
    }

    pub fn set_number(&mut self, index: usize, number: Option<String>) {
        let Some(order) = self.orders.get_mut(index) else {
            return;
        };
        if let Some(number) = &number {
            self.by_number.entry(number.clone()).or_default().push(index);
        }
        order.number = number;
    }

    pub fn order(&self, index: usize) -> Option<&OrderRecord> {
        self.orders.get(index)
    }

    pub fn order_mut(&mut self, index: usize) -> Option<&mut OrderRecord> {
        self.orders.get_mut(index)
    }

    pub fn orders(&self) -> &[OrderRecord] {
        &self.orders
    }

    pub fn log(&self) -> &[NotificationRecord] {
        &self.log
    }

    fn by_any(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).or_else(|| self.by_uuid.get(id)).copied()
    }

    /// Control API lookup: originalOrderId, orderUUID, or a merchant number naming one order.
    pub fn find(&self, id: &str) -> Option<usize> {
        self.by_any(id).or_else(|| match self.by_number.get(id) {
            Some(indexes) if indexes.len() == 1 => indexes.first().copied(),
            _ => None,
        })
    }

    /// Finds the order a notification is about. `orderUUID` is looked at first, then
    /// `order_id`/`originalOrderId`, then `number`; every identifier given must name the same
    /// order. A `number` not yet known (the answer to `order.created` still in flight) is not
    /// held against a notification that also names the order otherwise.
    pub fn resolve(&self, ids: &OrderIds) -> Result<usize, Rejection> {
        let not_found = |what: &str, value: &str| {
            Rejection::new(Rule::UnknownOrder, Some(what), format!("no order with {what} {value:?}"))
        };
        let index = if let Some(uuid) = &ids.order_uuid {
            self.by_any(uuid).ok_or_else(|| not_found("orderUUID", uuid))?
        } else if let Some(original) = &ids.original_order_id {
            self.by_any(original).ok_or_else(|| not_found("order_id", original))?
        } else if let Some(number) = &ids.number {
            match self.by_number.get(number).map(Vec::as_slice) {
                None | Some([]) => return Err(not_found("number", number)),
                Some([only]) => *only,
                Some(many) => {
                    return Err(Rejection::new(
                        Rule::IdentityMismatch,
                        Some("number"),
                        format!("number {number:?} names {} orders; send orderUUID or order_id", many.len()),
                    ))
                }
            }
        } else {
            return Err(Rejection::new(Rule::MissingOrderId, None, "the notification names no order"));
        };
        let Some(order) = self.orders.get(index) else {
            return Err(not_found("orderUUID", ""));
        };
        if let (Some(_), Some(original)) = (&ids.order_uuid, &ids.original_order_id) {
            if self.by_any(original) != Some(index) {
                return Err(Rejection::new(
                    Rule::IdentityMismatch,
                    Some("order_id"),
                    format!("order_id {original:?} and orderUUID {:?} name different orders", order.order_uuid),
                ));
            }
        }
        if let (Some(given), Some(known)) = (&ids.number, &order.number) {
            if given != known {
                return Err(Rejection::new(
                    Rule::IdentityMismatch,
                    Some("number"),
                    format!(
                        "number {given:?} is not the number {known:?} the merchant gave order {}",
                        order.original_order_id
                    ),
                ));
            }
        }
        Ok(index)
    }

    /// Finds the order of a request refused early, for its log entry only.
    pub fn resolve_quietly(&self, ids: &OrderIds) -> Option<usize> {
        [&ids.order_uuid, &ids.original_order_id].into_iter().flatten().find_map(|id| self.by_any(id)).or_else(|| {
            let number = ids.number.as_ref()?;
            match self.by_number.get(number).map(Vec::as_slice) {
                Some([only]) => Some(*only),
                _ => None,
            }
        })
    }

    /// Keeps both logs in arrival order: a slow request is recorded when it is answered, but
    /// under the sequence number it got when it arrived.
    pub fn record(&mut self, order: Option<usize>, mut record: NotificationRecord) {
        if let Some(order) = order.and_then(|i| self.orders.get_mut(i)) {
            record.original_order_id = Some(order.original_order_id.clone());
            let at = order.notifications.partition_point(|r| r.seq < record.seq);
            order.notifications.insert(at, record.clone());
        }
        let at = self.log.partition_point(|r| r.seq < record.seq);
        self.log.insert(at, record);
    }
}

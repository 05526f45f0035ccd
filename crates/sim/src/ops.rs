//! What Kuper does on its own initiative: place an order (send `order.created`) and send a
//! webhook about it. Shared by the control API and the conformance runner, so that both drive
//! the merchant in exactly the same way and leave the same records.

use chrono::{DateTime, FixedOffset};
use serde_json::{json, Map, Value};

use crate::driver::{Answer, TargetAuth};
use crate::generate::GeneratedOrder;
use crate::http::App;
use crate::model::Integration;
use crate::validate::{check_created_answer, CreatedCheck};
use crate::world::{now_moscow, OrderRecord, WebhookRecord};

/// Where and how an order's webhooks go.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    pub integration: Integration,
    pub restaurant: bool,
    pub target: String,
    pub auth: Option<TargetAuth>,
}

/// An order Kuper placed, with the merchant's answer to `order.created`.
#[derive(Clone, Debug)]
pub(crate) struct Placed {
    pub index: usize,
    pub original_order_id: String,
    pub order_uuid: String,
    pub answer: Answer,
    pub check: CreatedCheck,
}

/// A webhook to send: a named event (payload built from the order, `payload` on top), or a
/// raw body sent as it is.
#[derive(Clone, Debug, Default)]
pub(crate) struct WebhookRequest {
    pub event: Option<String>,
    pub payload: Option<Map<String, Value>>,
    pub raw: Option<Value>,
    pub repeat: u32,
    /// Change Kuper's view but send nothing: a webhook the merchant never receives (the
    /// reconciliation tests' lost webhook).
    pub suppress: bool,
}

impl App {
    /// Registers `generated` in Kuper's world and sends `order.created` to the merchant.
    ///
    /// The order is known before the webhook goes out: a merchant may notify before it answers.
    pub(crate) async fn place_order(
        &self,
        generated: GeneratedOrder,
        delivery: Delivery,
        now: DateTime<FixedOffset>,
    ) -> Placed {
        let created = json!({
            "event_type": "order.created",
            "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            "payload": generated.payload,
        });
        let record = OrderRecord::new(
            generated,
            delivery.integration,
            delivery.restaurant,
            delivery.target.clone(),
            delivery.auth.clone(),
        );
        let (original_order_id, order_uuid) = (record.original_order_id.clone(), record.order_uuid.clone());
        let index = self.world().insert(record);

        let body = serde_json::to_vec(&created).unwrap_or_default();
        let answer = self.driver.send(&delivery.target, delivery.auth.as_ref(), body).await;
        let mut check = check_created_answer(answer.status, &answer.body);
        if let Some(error) = &answer.error {
            check.problems.push(error.clone());
            check.ok = false;
        }
        {
            let mut world = self.world();
            world.set_number(index, check.number.clone());
            if let Some(order) = world.order_mut(index) {
                order.webhooks.push(WebhookRecord::new("order.created", &answer));
                order.created_check = Some(check.clone());
            }
        }
        Placed { index, original_order_id, order_uuid, answer, check }
    }

    /// Registers `generated` in Kuper's world without sending `order.created`: an order whose
    /// webhook was lost, which the merchant can only learn of through the pull API.
    pub(crate) fn place_order_undelivered(&self, generated: GeneratedOrder, delivery: Delivery) -> (String, String) {
        let record =
            OrderRecord::new(generated, delivery.integration, delivery.restaurant, delivery.target, delivery.auth);
        let ids = (record.original_order_id.clone(), record.order_uuid.clone());
        let index = self.world().insert(record);
        if let Some(order) = self.world().order_mut(index) {
            order.webhooks.push(WebhookRecord::suppressed("order.created"));
        }
        ids
    }

    /// Sends a webhook about order `index` (`repeat` times, at least once) and returns every
    /// answer. Kuper changes its own view when it decides, whatever the merchant answers; a raw
    /// body is a test of the merchant's input handling and changes nothing.
    pub(crate) async fn send_webhook(&self, index: usize, request: &WebhookRequest) -> Result<Vec<Answer>, String> {
        let mut cancellation = None;
        let (target, auth, event, bytes) = {
            let world = self.world();
            let Some(order) = world.order(index) else {
                return Err(format!("no order #{index}"));
            };
            let (event, bytes) = match (&request.raw, &request.event) {
                // A JSON string is sent as its text, so that tests can send malformed JSON.
                (Some(Value::String(text)), event) => (event.clone(), text.clone().into_bytes()),
                (Some(raw), event) => (event.clone(), serde_json::to_vec(raw).unwrap_or_default()),
                (None, Some(event)) => {
                    let payload = order.webhook_payload(event, request.payload.as_ref());
                    if event == "order.canceled" {
                        cancellation = payload.get("cancellation").cloned();
                    }
                    let body = json!({
                        "event_type": event,
                        "timestamp": now_moscow().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                        "payload": payload,
                    });
                    (Some(event.clone()), serde_json::to_vec(&body).unwrap_or_default())
                }
                (None, None) => return Err("give event (or raw)".to_owned()),
            };
            (order.target.clone(), order.auth.clone(), event, bytes)
        };
        if request.raw.is_none() {
            if let (Some(event), Some(order)) = (&event, self.world().order_mut(index)) {
                // The first cancellation stands, as Kuper's state does (a canceled order stays so).
                if order.cancellation.is_none() && !order.state.is_final() {
                    order.cancellation = cancellation;
                }
                order.apply_webhook(event);
            }
        }
        let label = event.unwrap_or_else(|| "raw".to_owned());
        if request.suppress {
            if let Some(order) = self.world().order_mut(index) {
                order.webhooks.push(WebhookRecord::suppressed(&label));
            }
            return Ok(Vec::new());
        }
        let repeat = request.repeat.max(1);
        let mut attempts = Vec::with_capacity(repeat as usize);
        for _ in 0..repeat {
            let answer = self.driver.send(&target, auth.as_ref(), bytes.clone()).await;
            if let Some(order) = self.world().order_mut(index) {
                order.webhooks.push(WebhookRecord::new(&label, &answer));
            }
            attempts.push(answer);
        }
        Ok(attempts)
    }
}

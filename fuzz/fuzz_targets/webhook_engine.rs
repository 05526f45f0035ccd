//! An order created from fuzzed bytes, then fuzzed webhooks applied to it: the engine never
//! panics, never moves an order out of a final state, and never enqueues anything.
#![no_main]
use kuper_bridge_domain::engine::{apply_webhook, create_order};
use kuper_bridge_domain::Policy;
use kuper_bridge_wire::{WebhookEnvelope, WebhookEvent};
use libfuzzer_sys::fuzz_target;

const CREATED: &str = include_str!("../../fixtures/webhooks/order.created.kuper-delivery.json");

fuzz_target!(|data: &[u8]| {
    let policy = Policy::default();
    let now = chrono::DateTime::parse_from_rfc3339("2026-03-14T10:02:11+03:00").expect("constant");
    // The first chunk is the order (the fixture when it does not parse as one).
    let mut parts = data.split(|b| *b == 0xff);
    let first = parts.next().unwrap_or_default();
    let env = match WebhookEnvelope::parse(first) {
        Ok(e) if e.event == Some(WebhookEvent::OrderCreated) => e,
        _ => WebhookEnvelope::parse(CREATED.as_bytes()).expect("fixture"),
    };
    let Ok(mut order) = create_order(&env, &policy, "KB-1".into(), now) else { return };
    for chunk in parts {
        let Ok(hook) = WebhookEnvelope::parse(chunk) else { continue };
        let before = order.clone();
        let d = apply_webhook(&order, &hook);
        if before.state().is_final() {
            assert_eq!(d.order.state(), before.state(), "a final state never changes");
        }
        assert_eq!(d.order.notified, before.notified, "webhooks enqueue nothing");
        order = d.order;
    }
});

//! Fuzzed collected lines (as a store system's JSON would give them) priced against the
//! fixture order: refused with a field, or totals that equal the sum of the rounded lines.
#![no_main]
use kuper_bridge_domain::composition::{compute, CollectedLine};
use kuper_bridge_wire::WebhookEnvelope;
use libfuzzer_sys::fuzz_target;

const CREATED: &str = include_str!("../../fixtures/webhooks/order.created.kuper-delivery.json");

fuzz_target!(|data: &[u8]| {
    let Ok(lines) = serde_json::from_slice::<Vec<CollectedLine>>(data) else { return };
    let ordered = WebhookEnvelope::parse(CREATED.as_bytes()).expect("fixture").order().expect("fixture").positions;
    if let Ok(c) = compute(&ordered, &[], &lines) {
        let after: rust_decimal::Decimal = c.lines.iter().map(|l| l.total_price).sum();
        let before: rust_decimal::Decimal = c.lines.iter().map(|l| l.total_price_before_discount).sum();
        assert_eq!(c.totals.discount_total_price, after);
        assert_eq!(c.totals.total_price, before);
    }
});

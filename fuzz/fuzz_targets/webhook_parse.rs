//! Any bytes as a Kuper webhook body: the parser answers Ok or a precise error, never panics.
#![no_main]
use kuper_bridge_wire::WebhookEnvelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut env) = WebhookEnvelope::parse(data) {
        let first = env.order();
        let cached = env.cache_order();
        // Caching must not change the verdict.
        assert_eq!(first.is_ok(), cached.is_ok());
        let _ = env.cancellation();
    }
});

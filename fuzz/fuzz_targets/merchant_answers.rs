//! Fuzzed answers of the merchant's acceptance hook (a system we do not control): either a
//! clear refusal, or an answer whose fields obey the documented limits.
#![no_main]
use kuper_bridge_wire::forward::{parse_acceptance_answer, AcceptanceAnswer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_acceptance_answer(data) {
        Err(e) => assert!(!e.is_empty()),
        Ok(AcceptanceAnswer::Accept { number, expected_assembly_time }) => {
            for s in [number, expected_assembly_time].into_iter().flatten() {
                assert!(!s.is_empty() && s.len() <= 64 && !s.chars().any(char::is_control));
            }
        }
        Ok(AcceptanceAnswer::Decline { reason, description }) => {
            assert!(!reason.is_empty() && reason.len() <= 64);
            assert!(reason.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
            assert!(description.is_none_or(|d| d.len() <= 500));
        }
    }
});

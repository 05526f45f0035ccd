//! Kuper's error bodies (protocol.md §9): the v3 `{"errors":[…],"code"}` shape and the
//! merchant-api problem-details-like `{"error":{…}}` shape. We only need a readable message
//! to keep with a dead letter, so anything else is returned verbatim (truncated).

use serde_json::Value;

const MAX_MESSAGE: usize = 1000;

/// Extracts a human-readable reason from whatever Kuper answered.
pub fn error_message(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return truncate(body.trim());
    };
    let mut parts = Vec::new();
    if let Some(errors) = value.get("errors").and_then(Value::as_array) {
        for e in errors {
            let field = e.get("field").and_then(Value::as_str).unwrap_or("");
            let message = e.get("message").and_then(Value::as_str).unwrap_or("");
            let kind = e.get("type").and_then(Value::as_str).unwrap_or("");
            parts.push(format!("{kind}: {field}: {message}").trim_matches([' ', ':']).to_string());
        }
    }
    if let Some(err) = value.get("error") {
        if let Some(s) = err.as_str() {
            parts.push(s.to_string());
        } else {
            for key in ["type", "title", "detail", "message"] {
                if let Some(s) = err.get(key).and_then(Value::as_str) {
                    parts.push(s.to_string());
                }
            }
            if let Some(params) = err.get("invalid_params").and_then(Value::as_array) {
                for p in params {
                    parts.push(p.to_string());
                }
            }
        }
    }
    if parts.is_empty() {
        truncate(body.trim())
    } else {
        truncate(&parts.join("; "))
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Kuper answers a repeated notification with 422 [v3 QA]. Only a structured marker counts:
/// an error type `repeat`/`duplicate`/`already_processed`, or a message that names this very
/// event together with "already". A loose word match would turn real refusals ("order already
/// handed to the courier") into deliveries.
pub fn is_repeat(body: &str, event: &str) -> bool {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    let repeat_type = |t: &str| matches!(t, "repeat" | "duplicate" | "already_processed" | "already_applied");
    let mut types = Vec::new();
    let mut messages = Vec::new();
    if let Some(errors) = value.get("errors").and_then(Value::as_array) {
        for e in errors {
            types.extend(e.get("type").and_then(Value::as_str));
            messages.extend(e.get("message").and_then(Value::as_str));
        }
    }
    if let Some(err) = value.get("error") {
        types.extend(err.get("type").and_then(Value::as_str));
        for key in ["detail", "title", "message"] {
            messages.extend(err.get(key).and_then(Value::as_str));
        }
    }
    types.into_iter().any(repeat_type)
        || messages.iter().any(|m| m.contains(event) && m.to_lowercase().contains("already"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v3_errors() {
        let body = include_str!("../../../fixtures/notifications/error.v3.422.json");
        let m = error_message(body);
        assert!(m.contains("order.in_work is not allowed in state ready_to_ship"), "{m}");
    }

    #[test]
    fn reads_problem_details() {
        let m = error_message(
            r#"{"error":{"type":"repeat","title":"Unprocessable","status":422,"detail":"order.in_work already applied"}}"#,
        );
        assert!(m.contains("already applied"));
    }

    #[test]
    fn repeats_need_a_structured_marker() {
        let typed = r#"{"errors":[{"type":"repeat","field":"event.type","message":"x"}],"code":422}"#;
        assert!(is_repeat(typed, "order.in_work"));
        let named = r#"{"error":{"type":"unprocessable","detail":"order.in_work already applied"}}"#;
        assert!(is_repeat(named, "order.in_work"));
        assert!(!is_repeat(named, "order.assembled"), "another event's repeat is not ours");
        let loose = r#"{"error":{"type":"order_of_events","detail":"order already handed to the courier"}}"#;
        assert!(!is_repeat(loose, "order.canceled"));
        assert!(!is_repeat("already", "order.in_work"));
    }

    #[test]
    fn keeps_plain_text_truncated() {
        let long = "x".repeat(5000);
        assert!(error_message(&long).chars().count() <= MAX_MESSAGE + 1);
        assert_eq!(error_message("oops"), "oops");
    }
}

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

/// Kuper answers a repeated notification with 422 [v3 QA]; the text is the only hint.
pub fn looks_like_repeat(message: &str) -> bool {
    let lower = message.to_lowercase();
    ["already", "repeat", "duplicate", "повтор", "уже"].iter().any(|w| lower.contains(w))
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
        assert!(looks_like_repeat(&m));
    }

    #[test]
    fn keeps_plain_text_truncated() {
        let long = "x".repeat(5000);
        assert!(error_message(&long).chars().count() <= MAX_MESSAGE + 1);
        assert_eq!(error_message("oops"), "oops");
    }
}

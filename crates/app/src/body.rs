//! Request bodies of the merchant API's actions: a JSON object with known fields, or nothing.
//! Anything else is refused with a plain message naming the field at fault (decisions.md,
//! "Action bodies"), instead of a deserializer's message or a silently ignored body.

use crate::error::ApiError;
use axum::http::StatusCode;
use serde_json::{json, Map, Value};

/// The fields of one JSON object of a body (the body itself or a line of `positions`).
pub struct Fields {
    map: Map<String, Value>,
    /// `positions[2].` for a line, empty for the body.
    prefix: String,
}

/// Reads an action's body. `None`: no body (empty or only whitespace), which every action
/// takes as `{}`. `allowed` lists the fields the action knows.
pub fn read(content_type: Option<&str>, bytes: &[u8], allowed: &[&str]) -> Result<Option<Fields>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let form = check_content_type(content_type)?;
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        // `curl -d` without a content type sends the form type: say the body must still be JSON.
        let hint = if form { "; the body must be JSON even when sent with curl -d" } else { "" };
        ApiError::bad_request(format!("body: not valid JSON ({e}){hint}"))
    })?;
    Fields::of(value, String::new(), allowed).map(Some)
}

/// JSON, or no content type, or the form type that `curl -d` sends by default (the README's
/// examples): all read as JSON. Returns whether it was the form type. Any other type (say
/// `text/plain`) is refused: a client sending it meant something else than our JSON.
fn check_content_type(content_type: Option<&str>) -> Result<bool, ApiError> {
    let Some(raw) = content_type else { return Ok(false) };
    let media = raw.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if media == "application/x-www-form-urlencoded" {
        return Ok(true);
    }
    if media == "application/json" || (media.starts_with("application/") && media.ends_with("+json")) {
        return Ok(false);
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("Content-Type {media:?} is not JSON; send the body as JSON with Content-Type: application/json"),
    ))
}

/// What a JSON value is, in words (never the value: it may be a pickup code).
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A 400 about one field: `details` is `{field, message}` like a 422's.
pub fn field_error(field: &str, message: impl Into<String>) -> ApiError {
    let message = message.into();
    ApiError::bad_request(format!("{field}: {message}")).with_details(json!({"field": field, "message": message}))
}

impl Fields {
    fn of(value: Value, prefix: String, allowed: &[&str]) -> Result<Self, ApiError> {
        let map = match value {
            Value::Object(map) => map,
            other if prefix.is_empty() => {
                return Err(ApiError::bad_request(format!(
                    "body: expected a JSON object (e.g. {{}}), got {}",
                    kind(&other)
                )))
            }
            other => {
                let field = prefix.trim_end_matches('.');
                return Err(field_error(field, format!("expected an object, got {}", kind(&other))));
            }
        };
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            let expected = if allowed.is_empty() {
                "this action takes no fields; send {} or no body".to_string()
            } else {
                format!("expected {}", allowed.join(", "))
            };
            return Err(field_error(&format!("{prefix}{unknown}"), format!("unknown field; {expected}")));
        }
        Ok(Self { map, prefix })
    }

    /// The field's full name for messages (`positions[0].id`).
    pub fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    /// The raw value; `null` when absent.
    pub fn value(&self, field: &str) -> Value {
        self.map.get(field).cloned().unwrap_or(Value::Null)
    }

    /// An optional string: absent and `null` are `None`.
    pub fn string(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(field_error(&self.name(field), format!("expected a string, got {}", kind(other)))),
        }
    }

    /// An optional list of strings: absent and `null` are empty.
    pub fn strings(&self, field: &str) -> Result<Vec<String>, ApiError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(field_error(
                        &format!("{}[{i}]", self.name(field)),
                        format!("expected a string, got {}", kind(other)),
                    )),
                })
                .collect(),
            Some(other) => {
                Err(field_error(&self.name(field), format!("expected an array of strings, got {}", kind(other))))
            }
        }
    }

    /// An optional array of objects, each read with `allowed` fields.
    pub fn objects(&self, field: &str, allowed: &[&str]) -> Result<Option<Vec<Fields>>, ApiError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| Fields::of(v.clone(), format!("{}[{i}].", self.name(field)), allowed))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(field_error(&self.name(field), format!("expected an array, got {}", kind(other)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<Option<Fields>, ApiError>) -> (u16, String, Value) {
        let e = r.err().expect("refused");
        (e.status.as_u16(), e.message, e.details)
    }

    #[test]
    fn empty_bodies_are_no_body_whatever_the_type() {
        for ct in [None, Some("text/plain"), Some("application/json")] {
            assert!(read(ct, b"", &[]).unwrap().is_none());
            assert!(read(ct, b" \n", &["at"]).unwrap().is_none());
        }
    }

    #[test]
    fn only_json_objects_with_known_fields_pass() {
        let json = Some("application/json; charset=utf-8");
        assert!(read(json, b"{}", &[]).unwrap().is_some());
        assert!(read(None, br#"{"at":"x"}"#, &["at"]).unwrap().is_some());
        assert!(read(Some("application/x-www-form-urlencoded"), br#"{"at":"x"}"#, &["at"]).unwrap().is_some());
        assert!(read(Some("application/merge-patch+json"), b"{}", &[]).unwrap().is_some());

        let (status, m, _) = message(read(json, b"[]", &[]));
        assert_eq!((status, m.as_str()), (400, "body: expected a JSON object (e.g. {}), got an array"));
        let (status, m, details) = message(read(json, br#"{"why":1}"#, &["reason", "description"]));
        assert_eq!(status, 400);
        assert_eq!(m, "why: unknown field; expected reason, description");
        assert_eq!(details["field"], "why");
        let (status, m, _) = message(read(Some("text/plain"), b"{}", &[]));
        assert_eq!(status, 415, "{m}");
        let (status, m, _) = message(read(Some("application/x-www-form-urlencoded"), b"code=1", &["code"]));
        assert_eq!(status, 400);
        assert!(m.starts_with("body: not valid JSON") && m.contains("curl -d"), "{m}");
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let f = read(None, br#"{"reason":5,"positions":[{"id":"1","markingCodes":[7]}]}"#, &["reason", "positions"])
            .unwrap()
            .unwrap();
        let e = f.string("reason").err().unwrap();
        assert_eq!(e.message, "reason: expected a string, got a number");
        assert_eq!(e.details["field"], "reason");
        let lines = f.objects("positions", &["id", "markingCodes"]).unwrap().unwrap();
        let e = lines[0].strings("markingCodes").err().unwrap();
        assert_eq!(e.details["field"], "positions[0].markingCodes[0]");
        let e = f.objects("positions", &["id"]).err().unwrap();
        assert_eq!(e.details["field"], "positions[0].markingCodes");
    }
}

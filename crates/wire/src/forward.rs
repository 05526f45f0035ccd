//! Events forwarded to the merchant's own systems (and the acceptance hook's question), in the
//! Standard Webhooks format: a JSON body `{"type","timestamp","data"}` and the headers
//! `webhook-id`, `webhook-timestamp`, `webhook-signature`. The schema of `data` is documented
//! in `docs/forwarded-events.md`.
//!
//! Signing follows <https://www.standardwebhooks.com/>: the signed content is
//! `"{id}.{timestamp}.{body}"`, the signature `v1,` + base64(HMAC-SHA256(key, content)), one
//! per active key, space-separated (key rotation: receivers accept any one).

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// A signing key, decoded. Its bytes never reach a log: `Debug` hides them.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

impl SigningKey {
    /// `whsec_<base64>` as Standard Webhooks libraries generate and expect; any other string is
    /// taken as the key's bytes (so a plain shared secret works too).
    pub fn parse(secret: &str) -> Result<Self, String> {
        let secret = secret.trim();
        if secret.is_empty() {
            return Err("is empty".into());
        }
        match secret.strip_prefix("whsec_") {
            Some(b64) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("is not base64 after whsec_: {e}"))?;
                if bytes.len() < 16 {
                    return Err("is shorter than 16 bytes after whsec_; generate 24–64 random bytes".into());
                }
                Ok(Self(bytes))
            }
            None => {
                if secret.len() < 16 {
                    return Err("is shorter than 16 characters".into());
                }
                Ok(Self(secret.as_bytes().to_vec()))
            }
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length; this cannot fail.
        match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC-SHA256 accepts keys of every length"),
        }
    }
}

/// The `webhook-signature` header value: one `v1,<base64>` per key.
pub fn sign(keys: &[SigningKey], id: &str, timestamp_s: i64, body: &str) -> String {
    keys.iter()
        .map(|key| {
            let mut mac = key.mac();
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp_s.to_string().as_bytes());
            mac.update(b".");
            mac.update(body.as_bytes());
            format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a `webhook-signature` header against any of `keys`, in constant time per signature
/// (what a receiver does; the gateway uses it in its own tests and for the acceptance hook's
/// documentation snippet).
pub fn verify(keys: &[SigningKey], id: &str, timestamp_s: i64, body: &str, header: &str) -> bool {
    header.split(' ').filter_map(|s| s.strip_prefix("v1,")).any(|given| {
        let Ok(given) = base64::engine::general_purpose::STANDARD.decode(given) else { return false };
        keys.iter().any(|key| {
            let mut mac = key.mac();
            mac.update(format!("{id}.{timestamp_s}.").as_bytes());
            mac.update(body.as_bytes());
            mac.verify_slice(&given).is_ok()
        })
    })
}

/// A URL as the audit log keeps it: scheme, host and path, without credentials or query (a
/// subscriber's URL may carry a token there).
pub fn url_for_audit(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let rest = match rest.split_once('/') {
                Some((authority, path)) => format!("{}/{path}", authority.rsplit('@').next().unwrap_or(authority)),
                None => rest.rsplit('@').next().unwrap_or(rest).to_string(),
            };
            format!("{scheme}://{rest}")
        }
        None => without_query.to_string(),
    }
}

/// The body of a forwarded event.
pub fn envelope(event_type: &str, timestamp_rfc3339: &str, data: Value) -> Value {
    json!({ "type": event_type, "timestamp": timestamp_rfc3339, "data": data })
}

/// Does a subscriber's filter take this event type? `*` takes all, `order.*` a prefix, anything
/// else exactly that type.
pub fn filter_matches(filter: &[String], event_type: &str) -> bool {
    filter.iter().any(|f| {
        f == "*" || f == event_type || f.strip_suffix('*').is_some_and(|prefix| event_type.starts_with(prefix))
    })
}

/// The acceptance hook's answer, parsed strictly: anything else is malformed (and the
/// configured fallback applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptanceAnswer {
    Accept { number: Option<String>, expected_assembly_time: Option<String> },
    Decline { reason: String, description: Option<String> },
}

pub fn parse_acceptance_answer(body: &[u8]) -> Result<AcceptanceAnswer, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let o = v.as_object().ok_or("not a JSON object")?;
    let text = |key: &str, max: usize| -> Result<Option<String>, String> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let s = s.trim();
                if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
                    Err(format!("{key}: must be 1–{max} printable characters"))
                } else {
                    Ok(Some(s.to_string()))
                }
            }
            Some(_) => Err(format!("{key}: must be a string")),
        }
    };
    match o.get("accept") {
        Some(Value::Bool(true)) => {
            let number = text("number", 64)?;
            let expected_assembly_time = text("expectedAssemblyTime", 64)?;
            if let Some(t) = &expected_assembly_time {
                chrono_free_rfc3339_check(t).map_err(|e| format!("expectedAssemblyTime: {e}"))?;
            }
            Ok(AcceptanceAnswer::Accept { number, expected_assembly_time })
        }
        Some(Value::Bool(false)) => {
            let reason = text("reason", 64)?.ok_or("reason: required when accept is false")?;
            if !reason.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                return Err("reason: must be a slug (a-z, 0-9, _)".into());
            }
            Ok(AcceptanceAnswer::Decline { reason, description: text("description", 500)? })
        }
        Some(_) => Err("accept: must be true or false".into()),
        None => Err("accept: required".into()),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`: the shape Kuper takes for times. The wire crate has
/// no date library; the values are checked, not interpreted.
fn chrono_free_rfc3339_check(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r.clone()).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    let ok_prefix = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !ok_prefix {
        return Err("not an RFC 3339 time with an offset".into());
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err("empty fraction of a second".into());
        }
        rest = &frac[n..];
    }
    // Bytes, not str slices: a multi-byte character here must be refused, not panic.
    let r = rest.as_bytes();
    let offset_ok = rest == "Z"
        || (r.len() == 6
            && (r[0] == b'+' || r[0] == b'-')
            && r[1].is_ascii_digit()
            && r[2].is_ascii_digit()
            && r[3] == b':'
            && r[4].is_ascii_digit()
            && r[5].is_ascii_digit());
    if offset_ok {
        Ok(())
    } else {
        Err("needs an offset (Z or ±HH:MM)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (and of its reference libraries).
    #[test]
    fn signs_the_specifications_example() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        let sig = sign(std::slice::from_ref(&key), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(std::slice::from_ref(&key), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, &sig));
        assert!(!verify(&[key], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, &body.replace('2', "3"), &sig));
    }

    #[test]
    fn several_keys_sign_once_each_and_either_verifies() {
        let old = SigningKey::parse("an-old-shared-secret-1").unwrap();
        let new = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(&[old.clone(), new.clone()], "id", 1, "{}");
        assert_eq!(sig.split(' ').count(), 2);
        assert!(verify(&[new], "id", 1, "{}", &sig));
        assert!(verify(&[old], "id", 1, "{}", &sig));
        let other = SigningKey::parse("some-other-secret-xyz").unwrap();
        assert!(!verify(&[other], "id", 1, "{}", &sig));
    }

    #[test]
    fn weak_or_broken_secrets_are_refused() {
        assert!(SigningKey::parse("").is_err());
        assert!(SigningKey::parse("short").is_err());
        assert!(SigningKey::parse("whsec_!!!").is_err());
        assert!(SigningKey::parse("whsec_c2hvcnQ=").is_err());
        assert!(!format!("{:?}", SigningKey::parse("a-secret-never-logged").unwrap()).contains("never"));
    }

    #[test]
    fn audit_urls_keep_no_credentials() {
        assert_eq!(url_for_audit("https://u:p@wms.example/hook?token=abc#x"), "https://wms.example/hook");
        assert_eq!(url_for_audit("http://erp.example:8080/can-accept"), "http://erp.example:8080/can-accept");
        assert_eq!(url_for_audit("http://h?k=v"), "http://h");
    }

    #[test]
    fn filters() {
        let f = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(filter_matches(&f(&["*"]), "order.created"));
        assert!(filter_matches(&f(&["order.*"]), "order.canceled"));
        assert!(!filter_matches(&f(&["order.*"]), "notification.dead"));
        assert!(filter_matches(&f(&["notification.dead", "order.created"]), "order.created"));
        assert!(!filter_matches(&f(&[]), "order.created"));
    }

    #[test]
    fn acceptance_answers() {
        use AcceptanceAnswer::*;
        let p = |s: &str| parse_acceptance_answer(s.as_bytes());
        assert_eq!(p(r#"{"accept":true}"#), Ok(Accept { number: None, expected_assembly_time: None }));
        assert_eq!(
            p(r#"{"accept":true,"number":"WMS-1","expectedAssemblyTime":"2026-11-29T18:00:00+03:00"}"#),
            Ok(Accept {
                number: Some("WMS-1".into()),
                expected_assembly_time: Some("2026-11-29T18:00:00+03:00".into())
            })
        );
        assert_eq!(
            p(r#"{"accept":false,"reason":"out_of_stock","description":"нет молока"}"#),
            Ok(Decline { reason: "out_of_stock".into(), description: Some("нет молока".into()) })
        );
        for bad in [
            "",
            "[]",
            r#"{"accept":"yes"}"#,
            r#"{}"#,
            r#"{"accept":false}"#,
            r#"{"accept":false,"reason":"Out Of Stock"}"#,
            r#"{"accept":true,"number":""}"#,
            r#"{"accept":true,"number":7}"#,
            r#"{"accept":true,"expectedAssemblyTime":"tomorrow"}"#,
            r#"{"accept":true,"expectedAssemblyTime":"2026-11-29T18:00:00"}"#,
            // Multi-byte characters where the offset's digits go (found by review: once a panic).
            r#"{"accept":true,"expectedAssemblyTime":"2026-11-29T18:00:00+00€"}"#,
            r#"{"accept":true,"expectedAssemblyTime":"2026-11-29T18:00:00+€:00"}"#,
            r#"{"accept":true,"expectedAssemblyTime":"2026-11-29T18:00:00.€"}"#,
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }
}

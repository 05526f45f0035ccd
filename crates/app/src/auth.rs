//! Credentials: what Kuper must present on the webhook, and the store systems' API keys.
//! Every comparison is constant-time; every secret is kept out of Debug output.

use crate::error::ApiError;
use axum::http::HeaderMap;
use base64::Engine;
use subtle::ConstantTimeEq;

/// Compares digests, so neither the content nor the length of a secret shows in the timing.
fn ct_eq(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    Sha256::digest(a.as_bytes()).ct_eq(&Sha256::digest(b.as_bytes())).into()
}

/// Any one credential matches (several at once allow rotation without downtime).
#[derive(Clone, Default)]
pub struct WebhookAuth {
    /// `user:password` pairs for HTTP Basic.
    pub basic: Vec<String>,
    pub bearer: Vec<String>,
    /// Values accepted in the `Client-Token` header.
    pub header_tokens: Vec<String>,
}

impl std::fmt::Debug for WebhookAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WebhookAuth {{ basic: {} [redacted], bearer: {} [redacted], header_tokens: {} [redacted] }}",
            self.basic.len(),
            self.bearer.len(),
            self.header_tokens.len()
        )
    }
}

impl WebhookAuth {
    pub fn is_empty(&self) -> bool {
        self.basic.is_empty() && self.bearer.is_empty() && self.header_tokens.is_empty()
    }

    pub fn check(&self, headers: &HeaderMap) -> bool {
        let mut ok = false;
        if let Some(auth) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            if let Some(encoded) = strip_scheme(auth, "basic") {
                if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) {
                    if let Ok(pair) = String::from_utf8(decoded) {
                        // Compare against every credential so timing does not reveal which matched.
                        for c in &self.basic {
                            ok |= ct_eq(c, &pair);
                        }
                    }
                }
            } else if let Some(token) = strip_scheme(auth, "bearer") {
                for c in &self.bearer {
                    ok |= ct_eq(c, token.trim());
                }
            }
        }
        if let Some(token) = headers.get("client-token").and_then(|v| v.to_str().ok()) {
            for c in &self.header_tokens {
                ok |= ct_eq(c, token.trim());
            }
        }
        ok
    }
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

#[derive(Clone)]
pub struct ApiKey {
    pub name: String,
    pub key: String,
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey {{ name: {:?}, key: [redacted], scopes: {:?} }}", self.name, self.scopes)
    }
}

/// The caller of the merchant API, after authentication.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Caller {
    /// `admin` includes `write`, which includes `read`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| *s >= scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(scope.as_str()))
        }
    }
}

pub fn authenticate(keys: &[ApiKey], headers: &HeaderMap) -> Result<Caller, ApiError> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| strip_scheme(v, "bearer"))
        .map(str::trim)
        .ok_or_else(ApiError::unauthorized)?;
    let mut found: Option<&ApiKey> = None;
    for k in keys {
        if ct_eq(&k.key, presented) && found.is_none() {
            found = Some(k);
        }
    }
    found.map(|k| Caller { name: k.name.clone(), scopes: k.scopes.clone() }).ok_or_else(ApiError::unauthorized)
}

/// Header values that must never reach a log or the audit log.
pub fn redact_headers(headers: &HeaderMap) -> String {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let n = name.as_str();
        let sensitive = matches!(n, "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "client-token")
            || n.contains("token")
            || n.contains("auth")
            || n.contains("secret")
            || n.contains("api-key")
            || n.contains("password");
        let shown = if sensitive {
            match value.to_str().ok().and_then(|v| v.split_once(' ')) {
                Some((scheme, _)) if n == "authorization" => format!("{scheme} [redacted]"),
                _ => "[redacted]".to_string(),
            }
        } else {
            value.to_str().unwrap_or("[binary]").to_string()
        };
        map.insert(n.to_string(), serde_json::Value::String(shown));
    }
    serde_json::Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn webhook_credentials() {
        let auth = WebhookAuth {
            basic: vec!["kuper:secret".into(), "kuper:next".into()],
            bearer: vec!["tok".into()],
            header_tokens: vec!["ct".into()],
        };
        let basic = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert!(auth.check(&headers(&[("authorization", &basic("kuper:secret"))])));
        assert!(auth.check(&headers(&[("authorization", &basic("kuper:next"))])), "rotation: both valid");
        assert!(!auth.check(&headers(&[("authorization", &basic("kuper:wrong"))])));
        assert!(auth.check(&headers(&[("authorization", "Bearer tok")])));
        assert!(auth.check(&headers(&[("authorization", "bearer tok")])));
        assert!(!auth.check(&headers(&[("authorization", "Bearer tok2")])));
        assert!(auth.check(&headers(&[("client-token", "ct")])));
        assert!(!auth.check(&headers(&[("client-token", "")])));
        assert!(!auth.check(&HeaderMap::new()));
        assert!(!auth.check(&headers(&[("authorization", "Basic !!!")])));
    }

    #[test]
    fn scopes_nest() {
        let c = Caller { name: "x".into(), scopes: vec![Scope::Write] };
        assert!(c.require(Scope::Read).is_ok());
        assert!(c.require(Scope::Write).is_ok());
        assert!(c.require(Scope::Admin).is_err());
    }

    #[test]
    fn redaction() {
        let h = headers(&[("authorization", "Basic a3VwZXI6c2VjcmV0"), ("client-token", "ct"), ("x-request-id", "r1")]);
        let s = redact_headers(&h);
        assert!(!s.contains("a3VwZXI6c2VjcmV0") && !s.contains("\"ct\""), "{s}");
        assert!(s.contains("Basic [redacted]") && s.contains("r1"));
    }
}

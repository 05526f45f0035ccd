//! The OpenAPI document (`crates/app/openapi.json`, served at `/api/v1/openapi.json`) stays
//! in step with the router: every route in `ROUTES` is documented and nothing else is, so a
//! new route must be added to `lib.rs`, to the document and to this list together.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

use serde_json::Value;
use std::collections::BTreeSet;

const DOC: &str = include_str!("../openapi.json");

/// Every route of `kuper_bridge_app::router`, with the webhook at its default path.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/kuper-webhook"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/orders"),
    ("get", "/api/v1/orders/{ref}"),
    ("get", "/api/v1/orders/{ref}/events"),
    ("post", "/api/v1/orders/{ref}/accept"),
    ("post", "/api/v1/orders/{ref}/start-assembly"),
    ("post", "/api/v1/orders/{ref}/assembled"),
    ("post", "/api/v1/orders/{ref}/ready"),
    ("post", "/api/v1/orders/{ref}/pickup-code"),
    ("post", "/api/v1/orders/{ref}/estimated-delivery-time"),
    ("post", "/api/v1/orders/{ref}/delivering"),
    ("post", "/api/v1/orders/{ref}/delivered"),
    ("post", "/api/v1/orders/{ref}/cancel"),
    ("post", "/api/v1/orders/{ref}/pickup-code/verify"),
    ("get", "/api/v1/outbox"),
    ("get", "/api/v1/outbox/{id}"),
    ("post", "/api/v1/outbox/{id}/replay"),
    ("post", "/api/v1/outbox/{id}/skip"),
];

/// The only route without credentials.
const OPEN: &str = "/healthz";

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn doc() -> Value {
    serde_json::from_str(DOC).expect("openapi.json is valid JSON")
}

/// Every (method, path, operation) in the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    let mut out = Vec::new();
    for (path, item) in paths {
        let item = item.as_object().unwrap_or_else(|| panic!("{path}: path item is not an object"));
        for (key, op) in item {
            if METHODS.contains(&key.as_str()) {
                out.push((key.clone(), path.clone(), op.clone()));
            }
        }
    }
    out
}

#[test]
fn is_openapi_3() {
    let doc = doc();
    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3."), "openapi version {version}");
    assert_eq!(doc["info"]["title"], "kuper-bridge");
    assert!(doc["info"]["description"].as_str().is_some_and(|d| !d.trim().is_empty()), "info.description is empty");
}

#[test]
fn documents_exactly_the_routes() {
    let doc = doc();
    let documented: BTreeSet<(String, String)> = operations(&doc).into_iter().map(|(m, p, _)| (m, p)).collect();
    let expected: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(expected.len(), ROUTES.len(), "ROUTES lists a route twice");
    let missing: Vec<_> = expected.difference(&documented).collect();
    let unlisted: Vec<_> = documented.difference(&expected).collect();
    assert!(missing.is_empty(), "routes not documented in openapi.json: {missing:?}");
    assert!(unlisted.is_empty(), "documented but not in this test's ROUTES (add them to both): {unlisted:?}");
}

#[test]
fn every_operation_but_healthz_needs_credentials() {
    let doc = doc();
    let schemes = doc["components"]["securitySchemes"].as_object().expect("securitySchemes");
    for name in ["apiKey", "kuperBasic", "kuperBearer", "kuperClientToken"] {
        assert!(schemes.contains_key(name), "security scheme {name} missing");
    }
    for (method, path, op) in operations(&doc) {
        let security = op.get("security").and_then(Value::as_array);
        if path == OPEN {
            assert_eq!(security.map(Vec::len), Some(0), "{method} {path} must declare `security: []`");
            continue;
        }
        let security = security.unwrap_or_else(|| panic!("{method} {path}: no security"));
        assert!(!security.is_empty(), "{method} {path}: empty security");
        for requirement in security {
            let requirement = requirement.as_object().expect("a security requirement is an object");
            assert!(!requirement.is_empty(), "{method} {path}: an empty security requirement allows anonymous calls");
            for name in requirement.keys() {
                assert!(schemes.contains_key(name), "{method} {path}: unknown security scheme {name}");
            }
        }
    }
}

#[test]
fn every_operation_answers_success_and_401() {
    let doc = doc();
    for (method, path, op) in operations(&doc) {
        let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}: no responses"));
        assert!(responses.keys().any(|code| code.starts_with('2')), "{method} {path}: no 2xx response");
        if path != OPEN {
            assert!(responses.contains_key("401"), "{method} {path}: no 401 response");
        }
    }
}

fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_ref_resolves() {
    let doc = doc();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty(), "no $ref at all: the components are unused");
    for r in refs {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("$ref {r} points outside the document"));
        assert!(doc.pointer(pointer).is_some(), "$ref {r} does not resolve");
    }
}

//! Bad input and wrong credentials: each gets its documented status and changes nothing.

mod common;
use base64_lite::basic;
use common::*;
use serde_json::{json, Value};

mod base64_lite {
    /// Just enough Base64 for an Authorization header in tests.
    pub fn basic(user_pass: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = user_pass.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = (u32::from(chunk[0]) << 16)
                | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
                | u32::from(*chunk.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        format!("Basic {out}")
    }
}

async fn post_webhook(env: &Env, auth: Option<(&str, String)>, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let mut req = env.http.post(env.webhook_url()).header("content-type", "application/json").body(body);
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// (what, credentials, body, expected status, expected error code)
type WebhookCase = (&'static str, Option<(&'static str, String)>, String, u16, &'static str);
/// (what, path, body, API key, expected status, expected error code)
type RestCase<'a> = (&'static str, &'a str, Option<Value>, &'static str, u16, &'static str);

fn good_auth() -> Option<(&'static str, String)> {
    Some(("authorization", basic(WEBHOOK_USER)))
}

/// Everything observable about an order and the outbox, to prove "changes nothing".
async fn snapshot(env: &Env, id: &str) -> (Value, Value) {
    let mut order = env.order(id).await;
    order.as_object_mut().unwrap().remove("allowedActions");
    let (_, outbox) = env.call("GET", "/api/v1/outbox?limit=1000", None, READ_KEY).await;
    (order, outbox)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_get_their_status_and_change_nothing() {
    let env = Env::new().await;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    assert_eq!(env.act(&id, "start-assembly", json!({})).await.0, 202);
    env.wait_accepted(&id, &["order.in_work"]).await;
    // Kuper has it; wait until the gateway has recorded that too, or the snapshot races it.
    env.wait_outbox("in_work sent", |r| r.iter().all(|x| x["status"] == "sent")).await;
    let before = snapshot(&env, &id).await;

    let paid = json!({"event_type": "order.paid", "payload": {"originalOrderId": id}}).to_string();
    let cases: Vec<WebhookCase> = vec![
        ("no credentials", None, paid.clone(), 401, "unauthorized"),
        ("wrong password", Some(("authorization", basic("kuper:wrong"))), paid.clone(), 401, "unauthorized"),
        ("wrong bearer", Some(("authorization", "Bearer nope".into())), paid.clone(), 401, "unauthorized"),
        ("wrong client token", Some(("client-token", "nope".into())), paid.clone(), 401, "unauthorized"),
        ("malformed JSON", good_auth(), "{\"event_type\": \"order.paid\",".into(), 400, "bad_request"),
        ("not an object", good_auth(), "[1,2]".into(), 400, "bad_request"),
        ("wrong type", good_auth(), json!({"event_type": 7, "payload": {"originalOrderId": id}}).to_string(), 400, "bad_request"),
        ("missing identity", good_auth(), json!({"event_type": "order.paid", "payload": {}}).to_string(), 400, "bad_request"),
        ("payload not an object", good_auth(), json!({"event_type": "order.paid", "payload": "x"}).to_string(), 400, "bad_request"),
        (
            "order.created with a bad price",
            good_auth(),
            json!({"event_type": "order.created", "payload": {"originalOrderId": "H1", "positions": [{"id": "1", "quantity": 1, "price": "nine"}]}}).to_string(),
            400,
            "bad_request",
        ),
        ("unknown order", good_auth(), json!({"event_type": "order.paid", "payload": {"originalOrderId": "H000"}}).to_string(), 404, "order_not_found"),
        ("oversized body", good_auth(), format!("{{\"event_type\":\"order.paid\",\"pad\":\"{}\"}}", "x".repeat(1024 * 1024 + 10)), 413, "payload_too_large"),
        ("far oversized body", good_auth(), "x".repeat(3 * 1024 * 1024), 413, "payload_too_large"),
    ];
    for (what, auth, body, status, code) in cases {
        let (got, answer) = post_webhook(&env, auth, body).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{what}: {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: a message");
        assert_eq!(snapshot(&env, &id).await, before, "{what} changed something");
    }
    // The 400 names the JSON path at fault.
    let (_, answer) =
        post_webhook(&env, good_auth(), json!({"event_type": "order.paid", "payload": {"orderUUID": {}}}).to_string())
            .await;
    assert_eq!(answer["error"]["details"]["path"], "$.payload.orderUUID");

    // An unknown event is acknowledged (forward compatibility), stored and counted.
    let (got, _) = post_webhook(
        &env,
        good_auth(),
        json!({"event_type": "order.teleported", "payload": {"originalOrderId": id}}).to_string(),
    )
    .await;
    assert_eq!(got, 200);
    assert_eq!(snapshot(&env, &id).await, before);
    let metrics = env
        .http
        .get(format!("{}/metrics", env.app_url))
        .bearer_auth(READ_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("event=\"unknown\",outcome=\"unknown_event\""), "{metrics}");
    assert!(metrics.contains("outcome=\"unauthorized\""));

    // Every accepted credential kind works, several at once.
    for auth in
        [("authorization", "Bearer kuper-bearer-token".to_string()), ("client-token", "kuper-client-token".to_string())]
    {
        let (got, v) = post_webhook(
            &env,
            Some(auth),
            json!({"event_type": "courier.assigned", "payload": {"originalOrderId": id}}).to_string(),
        )
        .await;
        assert_eq!(got, 200, "{v}");
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_order_created_returns_the_same_number_and_creates_nothing() {
    let env = Env::new().await;
    let created = env.create_order(json!({"store": "1184"})).await;
    let id = id_of(&created);
    let v =
        env.sim_post(&format!("/sim/v1/orders/{id}/webhooks"), json!({"event": "order.created", "repeat": 3})).await;
    let (_, orders) = env.call("GET", "/api/v1/orders", None, READ_KEY).await;
    assert_eq!(orders["orders"].as_array().unwrap().len(), 1, "one order after four deliveries: {v}");
    let sim = env.sim_order(&id).await;
    let numbers: Vec<&Value> = sim["webhooks"].as_array().unwrap().iter().map(|w| &w["body"]["number"]).collect();
    assert!(numbers.iter().all(|n| *n == &created["merchantAnswer"]["body"]["number"]), "{sim:#}");
    // Duplicate status webhooks are acknowledged and applied once.
    assert_eq!(env.kuper_sends_with(&id, json!({"event": "order.paid", "repeat": 2})).await, 200);
    let (_, events) = env.call("GET", &format!("/api/v1/orders/{id}/events"), None, READ_KEY).await;
    let outcomes: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "order.paid")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes.first(), Some(&"out_of_order"), "paid before ready is recorded as such: {outcomes:?}");
    assert!(outcomes[1..].iter().all(|o| *o == "duplicate"), "{outcomes:?}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rest_requests_get_their_status_and_change_nothing() {
    let env = Env::new().await;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    let before = snapshot(&env, &id).await;
    let ready = format!("/api/v1/orders/{id}/ready");
    let cancel = format!("/api/v1/orders/{id}/cancel");
    let cases: Vec<RestCase> = vec![
        ("no key", &ready, Some(json!({})), "", 401, "unauthorized"),
        ("wrong key", &ready, Some(json!({})), "not-a-key-0000000000", 401, "unauthorized"),
        ("read key writes", &ready, Some(json!({})), READ_KEY, 403, "forbidden"),
        ("unknown order", "/api/v1/orders/H0/start-assembly", Some(json!({})), ADMIN_KEY, 404, "order_not_found"),
        ("out of order", &ready, Some(json!({})), ADMIN_KEY, 409, "invalid_transition"),
        ("unknown field", &cancel, Some(json!({"reason": "store_closed", "why": 1})), ADMIN_KEY, 400, "bad_request"),
        ("missing reason", &cancel, Some(json!({})), ADMIN_KEY, 400, "bad_request"),
        ("unknown reason", &cancel, Some(json!({"reason": "bored"})), ADMIN_KEY, 422, "validation_failed"),
        ("wrong type", &cancel, Some(json!({"reason": 5})), ADMIN_KEY, 400, "bad_request"),
    ];
    for (what, path, body, key, status, code) in cases {
        let (got, v) = env.call("POST", path, body, key).await;
        assert_eq!(got, status, "{what}: {v}");
        assert_eq!(v["error"]["code"], code, "{what}: {v}");
        assert_eq!(snapshot(&env, &id).await, before, "{what} changed something");
    }
    let (_, v) = env.call("POST", &ready, Some(json!({})), ADMIN_KEY).await;
    assert_eq!(v["error"]["details"]["state"], "created");
    assert_eq!(v["error"]["details"]["allowed"], json!(["start-assembly", "cancel"]));
    // A composition error names the line and changes nothing.
    assert_eq!(env.act(&id, "start-assembly", json!({})).await.0, 202);
    env.wait_accepted(&id, &["order.in_work"]).await;
    env.wait_outbox("in_work sent", |r| r.iter().all(|x| x["status"] == "sent")).await;
    let before = snapshot(&env, &id).await;
    let (got, v) = env.act(&id, "ready", json!({"positions": [{"id": "NOT-IN-ORDER", "quantity": 1}]})).await;
    assert_eq!(got, 422, "{v}");
    assert_eq!(v["error"]["details"]["field"], "positions[0].id");
    assert_eq!(snapshot(&env, &id).await, before);
    let first = env.order(&id).await["ordered"]["positions"][0]["id"].clone();
    let replaced = json!({"positions": [
        {"id": first, "quantity": 0, "replacedByID": "NEW-1"},
        {"id": "NEW-1", "quantity": 1, "price": "99.999"}
    ]});
    let (got, v) = env.act(&id, "ready", replaced).await;
    assert_eq!(got, 422, "prices have at most two places: {v}");
    assert_eq!(v["error"]["details"]["field"], "positions[1].price");
    assert_eq!(snapshot(&env, &id).await, before);
    env.shutdown().await;
}

/// Every route of the router refuses a request without credentials (only /healthz is open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_requires_credentials() {
    let env = Env::new().await;
    let mut routes: Vec<(&str, String)> = vec![
        ("POST", "/kuper-webhook".into()),
        ("GET", "/readyz".into()),
        ("GET", "/metrics".into()),
        ("GET", "/api/v1/openapi.json".into()),
        ("GET", "/api/v1/orders".into()),
        ("GET", "/api/v1/orders/X".into()),
        ("GET", "/api/v1/orders/X/events".into()),
        ("POST", "/api/v1/orders/X/pickup-code/verify".into()),
        ("GET", "/api/v1/outbox".into()),
        ("GET", "/api/v1/outbox/1".into()),
        ("POST", "/api/v1/outbox/1/replay".into()),
        ("POST", "/api/v1/outbox/1/skip".into()),
    ];
    for action in kuper_bridge_domain::ActionKind::ALL {
        routes.push(("POST", format!("/api/v1/orders/X/{}", action.as_str())));
    }
    for (method, path) in &routes {
        for key in ["", "wrong-key-wrong-key-wrong"] {
            let (status, v) = env.call(method, path, Some(json!({})), key).await;
            assert_eq!(status, 401, "{method} {path} with {key:?}: {v}");
        }
    }
    let (status, _) = env.call("GET", "/healthz", None, "").await;
    assert_eq!(status, 200);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pickup_code_guessing_is_locked_out() {
    let env = Env::new().await;
    let id = id_of(&env.create_order(json!({"store": "27", "shipmentMethod": "pickup"})).await);
    assert_eq!(env.act(&id, "start-assembly", json!({})).await.0, 202);
    let (_, v) = env.act(&id, "pickup-code", json!({"code": "7306"})).await;
    assert_eq!(v["pickupCode"], "7306");
    for attempt in 0..5 {
        let (status, v) = env.act(&id, "pickup-code/verify", json!({"code": format!("000{attempt}")})).await;
        assert_eq!((status, v["valid"].clone()), (200, json!(false)), "{v}");
    }
    let (status, v) = env.act(&id, "pickup-code/verify", json!({"code": "7306"})).await;
    assert_eq!(status, 429, "locked even for the right code: {v}");
    assert_eq!(v["error"]["code"], "pickup_code_locked");
    let (_, events) = env.call("GET", &format!("/api/v1/orders/{id}/events"), None, READ_KEY).await;
    let text = events.to_string();
    assert!(text.contains("\"locked\""), "the lock-out is audited");
    assert!(!text.contains("0003"), "tried codes are not kept in the audit log");
    // The code itself is the customer's secret: read-only callers never see it.
    assert!(!text.contains("7306"), "events hide the code from a read key: {text}");
    let (_, outbox) = env.call("GET", "/api/v1/outbox", None, READ_KEY).await;
    assert!(!outbox.to_string().contains("7306"), "{outbox}");
    let (_, outbox) = env.call("GET", "/api/v1/outbox", None, ADMIN_KEY).await;
    assert!(outbox.to_string().contains("7306"), "an admin sees what was sent to Kuper");
    // A code given by the store must not clash with another active order of the same store.
    let other = id_of(&env.create_order(json!({"store": "27", "shipmentMethod": "pickup"})).await);
    assert_eq!(env.act(&other, "start-assembly", json!({})).await.0, 202);
    let (status, v) = env.act(&other, "pickup-code", json!({"code": "7306"})).await;
    assert_eq!(status, 409, "{v}");
    env.shutdown().await;
}

/// The database is locked by another process for longer than the busy timeout: webhooks are
/// answered 503 (never 200 for something not stored) and the gateway recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_database_answers_503_then_recovers() {
    let env = Env::with(|c| c.database.busy_timeout_ms = 200).await;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    let url = env.config.database.url.clone();
    // Another process holds the write lock for longer than the gateway waits for it.
    let locker = Locker::hold(&url).await;
    let paid = json!({"event_type": "order.paid", "payload": {"originalOrderId": id}}).to_string();
    let (status, v) = post_webhook(&env, good_auth(), paid.clone()).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "storage_unavailable");
    let (status, _) = env.act(&id, "start-assembly", json!({})).await;
    assert_eq!(status, 503);
    locker.release().await;
    let (status, _) = post_webhook(&env, good_auth(), paid).await;
    assert_eq!(status, 200, "recovered without a restart");
    assert_eq!(env.order(&id).await["paymentState"], "paid");
    assert_eq!(env.order(&id).await["state"], "created", "the refused action left no trace");
    env.shutdown().await;
}

/// Secrets never reach the audit log: webhook passwords and tokens, API keys, the OAuth
/// client secret and access tokens. Read straight from the database, refused requests included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_audit_log() {
    let env = Env::new().await;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    assert_eq!(env.act(&id, "start-assembly", json!({})).await.0, 202);
    env.wait_accepted(&id, &["order.in_work"]).await;
    let paid = json!({"event_type": "order.paid", "payload": {"originalOrderId": id}}).to_string();
    post_webhook(&env, Some(("authorization", "Bearer kuper-bearer-token".into())), paid.clone()).await;
    post_webhook(&env, Some(("client-token", "kuper-client-token".into())), paid.clone()).await;
    post_webhook(&env, Some(("authorization", basic("kuper:guessed-password"))), paid).await;
    let rows = text_rows(&env.config.database.url, "SELECT headers, body, response, detail FROM events").await;
    assert!(rows.len() >= 6, "the exchanges were recorded");
    let all: String = rows.iter().flatten().flatten().cloned().collect::<Vec<_>>().join("\n");
    for secret in [
        basic(WEBHOOK_USER).trim_start_matches("Basic ").to_string(),
        basic("kuper:guessed-password").trim_start_matches("Basic ").to_string(),
        "secret".into(),
        "kuper-bearer-token".into(),
        "kuper-client-token".into(),
        ADMIN_KEY.into(),
        "sim-secret".into(),
    ] {
        assert!(!all.contains(&secret), "{secret:?} leaked into the audit log");
    }
    assert!(all.contains("[redacted]"), "headers are kept, redacted");
    env.shutdown().await;
}

/// Holds every table of the gateway's database locked from another connection.
enum Locker {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Locker {
    async fn hold(url: &str) -> Self {
        use sqlx::Connection;
        if url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut c).await.unwrap();
            sqlx::query("LOCK TABLE orders, outbox, events IN ACCESS EXCLUSIVE MODE").execute(&mut c).await.unwrap();
            Locker::Postgres(c)
        } else {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query("BEGIN EXCLUSIVE").execute(&mut c).await.unwrap();
            Locker::Sqlite(c)
        }
    }

    async fn release(self) {
        match self {
            Locker::Sqlite(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
            Locker::Postgres(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
        }
    }
}

/// A store system that lost the answer to an action sends it again with the same
/// `Idempotency-Key`: it gets the first result (202, the same notification), and nothing is
/// queued twice. The same key for another request is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_retried_with_its_idempotency_key_gets_the_first_answer() {
    let env = Env::new().await;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    let send = |action: &'static str, key: &'static str| {
        let req = env
            .http
            .post(format!("{}/api/v1/orders/{id}/{action}", env.app_url))
            .bearer_auth(ADMIN_KEY)
            .header("idempotency-key", key)
            .json(&json!({}));
        async move {
            let resp = req.send().await.unwrap();
            let replayed = resp.headers().get("idempotent-replayed").is_some();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, replayed, body)
        }
    };
    let (status, replayed, first) = send("start-assembly", "wms-op-1").await;
    assert_eq!((status, replayed), (202, false), "{first}");
    let (status, replayed, again) = send("start-assembly", "wms-op-1").await;
    assert_eq!((status, replayed), (202, true), "{again}");
    assert_eq!(again["notifications"], first["notifications"], "the same notification, not a new one");
    let (status, _, err) = send("assembled", "wms-op-1").await;
    assert_eq!(status, 409, "the key belongs to another request: {err}");
    let (status, _, err) = send("start-assembly", "wms-op-2").await;
    assert_eq!(status, 409, "a new key is a new request, and the order is already in work: {err}");
    let records = env.wait_outbox("one in_work", |r| !r.is_empty()).await;
    assert_eq!(records.iter().filter(|r| r["event"] == "order.in_work").count(), 1);
    let long = "k".repeat(300);
    let resp = env
        .http
        .post(format!("{}/api/v1/orders/{id}/assembled", env.app_url))
        .bearer_auth(ADMIN_KEY)
        .header("idempotency-key", long)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(env.order(&id).await["state"], "in_work", "the refused requests changed nothing");
    env.wait_accepted(&id, &["order.in_work"]).await;
    env.shutdown().await;
}

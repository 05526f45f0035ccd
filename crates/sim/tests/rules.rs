//! Each rejection rule over real HTTP: the status, and the rule named in the body.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;

use std::time::Duration;

use common::*;
use kuper_bridge_sim::{RepeatPolicy, SimConfig};
use serde_json::{json, Value};

async fn setup(extra: Value) -> (Sim, Merchant, Value, String) {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, extra).await;
    let token = sim.token().await;
    (sim, merchant, created, token)
}

#[tokio::test]
async fn ready_for_delivery_before_in_work_is_out_of_order() {
    let (sim, _m, created, token) = setup(json!({})).await;
    let view = sim.order(created["originalOrderId"].as_str().unwrap_or("")).await;
    let body = brief("order.ready_for_delivery", &created, as_ordered(&view));
    let answer = sim.notify(OFM, &token, &body).await;
    assert_rejected(&answer, 422, "order_of_events");
    let view = sim.order(created["orderUUID"].as_str().unwrap_or("")).await;
    assert_eq!(view["state"], "ready");
    assert_eq!(view["notifications"][0]["verdict"], "rejected");
    assert_eq!(view["notifications"][0]["rule"], "order_of_events");
}

#[tokio::test]
async fn a_repeat_is_422_and_says_already() {
    let (sim, _m, created, token) = setup(json!({})).await;
    let body = brief("order.in_work", &created, json!({}));
    assert_ok(&sim.notify(OFM, &token, &body).await);
    let answer = sim.notify(OFM, &token, &body).await;
    assert_rejected(&answer, 422, "repeat");
    assert!(message(&answer.1).contains("already"), "{}", answer.1);
    let view = sim.order(created["orderUUID"].as_str().unwrap_or("")).await;
    assert_eq!(view["state"], "collecting");
}

#[tokio::test]
async fn a_repeat_is_202_with_accept202() {
    let sim = Sim::start(SimConfig { repeat: RepeatPolicy::Accept202, ..SimConfig::default() }).await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({})).await;
    let token = sim.token().await;
    let body = brief("order.in_work", &created, json!({}));
    assert_ok(&sim.notify(OFM, &token, &body).await);
    let (status, _) = sim.notify(OFM, &token, &body).await;
    assert_eq!(status, 202);
    let view = sim.order(created["orderUUID"].as_str().unwrap_or("")).await;
    assert_eq!(view["notifications"][1]["verdict"], "repeat_accepted");
}

#[tokio::test]
async fn delivering_for_kuper_delivery_is_405() {
    let (sim, _m, created, token) = setup(json!({"integration": "delivery_by_kuper"})).await;
    let answer = sim.notify(OFM, &token, &brief("order.delivering", &created, json!({}))).await;
    assert_rejected(&answer, 405, "not_allowed_for_integration");
    let answer =
        sim.notify(V3, &token, &brief("order.pickup_code_created", &created, json!({"pickupCode": "123456"}))).await;
    assert_rejected(&answer, 405, "not_allowed_for_integration");
}

#[tokio::test]
async fn accepted_for_a_grocery_order_is_not_restaurant() {
    let (sim, _m, created, token) = setup(json!({})).await;
    let answer = sim.notify(OFM, &token, &brief("order.accepted", &created, json!({}))).await;
    assert_rejected(&answer, 422, "not_restaurant");
}

#[tokio::test]
async fn ready_for_delivery_without_composition_is_refused() {
    let (sim, _m, created, token) = setup(json!({})).await;
    assert_ok(&sim.notify(OFM, &token, &brief("order.in_work", &created, json!({}))).await);
    let answer = sim.notify(OFM, &token, &brief("order.ready_for_delivery", &created, json!({}))).await;
    assert_rejected(&answer, 422, "composition_required");
    let event =
        json!({"event": {"type": "order.ready_for_delivery", "payload": {"order_id": created["originalOrderId"]}}});
    let answer = sim.notify(V3, &token, &event).await;
    assert_rejected(&answer, 422, "composition_required");
}

#[tokio::test]
async fn nothing_after_canceled() {
    let (sim, _m, created, token) = setup(json!({})).await;
    let cancel = brief(
        "order.canceled",
        &created,
        json!({"cancellation": {"slug": "out_of_stock", "description": "Нет товара"}}),
    );
    assert_ok(&sim.notify(OFM, &token, &cancel).await);
    let answer = sim.notify(OFM, &token, &brief("order.in_work", &created, json!({}))).await;
    assert_rejected(&answer, 422, "after_final");
    let view = sim.order(created["orderUUID"].as_str().unwrap_or("")).await;
    assert_eq!(view["state"], "canceled");
}

#[tokio::test]
async fn nothing_after_delivered() {
    let (sim, _m, created, token) = setup(json!({"integration": "delivery_by_merchant"})).await;
    let view = sim.order(created["orderUUID"].as_str().unwrap_or("")).await;
    let composition = as_ordered(&view);
    for (event, extra) in [
        ("order.in_work", json!({})),
        ("order.ready_for_delivery", composition.clone()),
        ("order.delivering", json!({})),
        ("order.delivered", composition.clone()),
    ] {
        assert_ok(&sim.notify(OFM, &token, &brief(event, &created, extra)).await);
    }
    let late =
        brief("order.estimated_delivery_time", &created, json!({"estimatedDeliveryTime": "2026-03-14T12:00:00+03:00"}));
    assert_rejected(&sim.notify(OFM, &token, &late).await, 422, "after_final");
    let cancel = brief("order.canceled", &created, json!({"cancellation": {"slug": "customer_request"}}));
    assert_rejected(&sim.notify(OFM, &token, &cancel).await, 422, "after_final");
}

#[tokio::test]
async fn nothing_after_kuper_delivered_it() {
    let (sim, _m, created, token) = setup(json!({})).await;
    let id = created["originalOrderId"].as_str().unwrap_or("");
    let (status, _) = sim.post(&format!("/sim/v1/orders/{id}/webhooks"), json!({"event": "order.delivered"})).await;
    assert_eq!(status, 200);
    let answer = sim.notify(OFM, &token, &brief("order.in_work", &created, json!({}))).await;
    assert_rejected(&answer, 422, "after_final");
}

#[tokio::test]
async fn unknown_event_type_is_400() {
    let (sim, _m, created, token) = setup(json!({})).await;
    let answer = sim.notify(OFM, &token, &brief("order.teleported", &created, json!({}))).await;
    assert_rejected(&answer, 400, "unknown_event");
    let answer = sim
        .http
        .post(format!("{}{OFM}", sim.base))
        .bearer_auth(&token)
        .body("{not json")
        .send()
        .await
        .expect("request");
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    assert_rejected(&(status, body), 400, "schema");
}

#[tokio::test]
async fn missing_order_id_is_400() {
    let (sim, _m, _created, token) = setup(json!({})).await;
    let body = json!({"event_type": "order.in_work", "payload": {}});
    assert_rejected(&sim.notify(OFM, &token, &body).await, 400, "missing_order_id");
    let body = json!({"event": {"type": "order.in_work", "payload": {}}});
    assert_rejected(&sim.notify(V3, &token, &body).await, 400, "missing_order_id");
}

#[tokio::test]
async fn unknown_order_is_404() {
    let (sim, _m, _created, token) = setup(json!({})).await;
    let body = json!({"event_type": "order.in_work", "payload": {"orderUUID": "sim:nope"}});
    assert_rejected(&sim.notify(OFM, &token, &body).await, 404, "unknown_order");
}

#[tokio::test]
async fn a_bad_or_missing_token_is_401() {
    let (sim, _m, created, _token) = setup(json!({})).await;
    let body = brief("order.in_work", &created, json!({}));
    assert_rejected(&sim.notify(OFM, "not-a-token", &body).await, 401, "unauthorized");
    let response = sim.http.post(format!("{}{OFM}", sim.base)).json(&body).send().await.expect("request");
    let status = response.status().as_u16();
    let body_json: Value = response.json().await.unwrap_or(Value::Null);
    assert_rejected(&(status, body_json), 401, "unauthorized");
    // Wrong credentials at the token endpoint.
    let response = sim
        .http
        .post(format!("{}/auth/token", sim.base))
        .form(&[("client_id", "sim-client"), ("client_secret", "wrong"), ("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), 401);
    let response = sim
        .http
        .post(format!("{}/auth/token", sim.base))
        .form(&[("client_id", "sim-client"), ("client_secret", "sim-secret"), ("grant_type", "password")])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), 401);
    // Nothing was applied.
    let view = sim.order(created["orderUUID"].as_str().unwrap_or("")).await;
    assert_eq!(view["state"], "ready");
}

#[tokio::test]
async fn an_expired_token_is_401() {
    let sim = Sim::start(SimConfig { token_ttl: Duration::from_millis(300), ..SimConfig::default() }).await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({})).await;
    let token = sim.token().await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    let answer = sim.notify(OFM, &token, &brief("order.in_work", &created, json!({}))).await;
    assert_rejected(&answer, 401, "unauthorized");
    assert!(message(&answer.1).contains("expired"), "{}", answer.1);
    let fresh = sim.token().await;
    assert_ok(&sim.notify(OFM, &fresh, &brief("order.in_work", &created, json!({}))).await);
}

#[tokio::test]
async fn totals_must_add_up() {
    let (sim, _m, created, token) = setup(json!({
        "positions": [
            {"id": "SKU-100245", "price": "94.99", "discountPrice": "89.99", "quantity": 1},
            {"id": "SKU-550071", "price": "189.00", "quantity": 1, "weight": "1000"}
        ]
    }))
    .await;
    assert_ok(&sim.notify(OFM, &token, &brief("order.in_work", &created, json!({}))).await);
    // The weighed line is rounded down instead of half-up: 214.515 → 214.52, not 214.51.
    let wrong_line = json!({
        "positions": [
            {"id": "SKU-100245", "quantity": 1, "price": "94.99", "discountPrice": "89.99", "totalPrice": "89.99", "weight": ""},
            {"id": "SKU-550071", "quantity": 1, "price": "189.00", "discountPrice": "189.00", "totalPrice": "214.51", "weight": "1135"}
        ],
        "total": {"totalPrice": "309.50", "discountTotalPrice": "304.50"}
    });
    let answer = sim.notify(OFM, &token, &brief("order.ready_for_delivery", &created, wrong_line)).await;
    assert_rejected(&answer, 422, "totals_mismatch");
    // Lines right, grand total wrong.
    let wrong_total = json!({
        "positions": [
            {"id": "SKU-100245", "quantity": 1, "price": "94.99", "discountPrice": "89.99", "totalPrice": "89.99", "weight": ""},
            {"id": "SKU-550071", "quantity": 1, "price": "189.00", "discountPrice": "189.00", "totalPrice": "214.52", "weight": "1135"}
        ],
        "total": {"totalPrice": "304.51", "discountTotalPrice": "304.51"}
    });
    let answer = sim.notify(OFM, &token, &brief("order.ready_for_delivery", &created, wrong_total)).await;
    assert_rejected(&answer, 422, "totals_mismatch");
    // A stranger among the lines.
    let stranger = json!({
        "positions": [{"id": "SKU-999", "quantity": 1, "price": "1.00", "totalPrice": "1.00", "weight": ""}],
        "total": {"totalPrice": "1.00", "discountTotalPrice": "1.00"}
    });
    let answer = sim.notify(OFM, &token, &brief("order.ready_for_delivery", &created, stranger)).await;
    assert_rejected(&answer, 422, "unknown_position");
    // The fixture's composition (protocol.md §8) is right.
    let fixture: Value =
        serde_json::from_str(include_str!("../../../fixtures/notifications/brief.order.ready_for_delivery.json"))
            .expect("fixture");
    let right = json!({"positions": fixture["payload"]["positions"], "total": fixture["payload"]["total"]});
    assert_ok(&sim.notify(OFM, &token, &brief("order.ready_for_delivery", &created, right)).await);
}

#[tokio::test]
async fn a_cancellation_needs_a_reason() {
    let (sim, _m, created, token) = setup(json!({})).await;
    let answer = sim.notify(OFM, &token, &brief("order.canceled", &created, json!({}))).await;
    assert_rejected(&answer, 400, "schema");
}

#[tokio::test]
async fn error_bodies_follow_the_path() {
    let (sim, _m, created, token) = setup(json!({})).await;
    let body = brief("order.delivering", &created, json!({}));
    let (status, v3) = sim.notify(V3, &token, &body).await;
    assert_eq!(status, 405);
    assert_eq!(v3["code"], 405);
    assert_eq!(v3["errors"][0]["type"], "not_allowed_for_integration");
    assert!(v3["errors"][0]["field"].is_string());
    let (status, ofm) = sim.notify(OFM, &token, &body).await;
    assert_eq!(status, 405);
    assert_eq!(ofm["error"]["status"], 405);
    assert_eq!(ofm["error"]["type"], "not_allowed_for_integration");
    assert!(ofm["error"]["title"].is_string());
    assert!(ofm["error"]["invalid_params"].is_array());
}

#[tokio::test]
async fn client_token_needs_api_version_on_v3_only() {
    let (sim, _m, created, _token) = setup(json!({})).await;
    let body = brief("order.in_work", &created, json!({}));
    let send = |path: &'static str, version: Option<&'static str>| {
        let mut request =
            sim.http.post(format!("{}{path}", sim.base)).header("Client-Token", "sim-client-token").json(&body);
        if let Some(version) = version {
            request = request.header("Api-Version", version);
        }
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_rejected(&send(OFM, Some("3.0")).await, 401, "unauthorized");
    assert_rejected(&send(V3, None).await, 400, "api_version");
    assert_ok(&send("/v1/notifications", Some("3.0")).await);
}

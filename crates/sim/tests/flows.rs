//! Whole flows over real HTTP: happy paths per scheme, profiles, faults, tokens, determinism.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;

use std::time::Duration;

use common::*;
use kuper_bridge_sim::{Profile, SimConfig};
use serde_json::{json, Value};

fn id(created: &Value) -> String {
    created["originalOrderId"].as_str().unwrap_or("").to_owned()
}

async fn webhook(sim: &Sim, created: &Value, event: &str) -> Value {
    let (status, body) = sim.post(&format!("/sim/v1/orders/{}/webhooks", id(created)), json!({"event": event})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], 200, "{body}");
    body
}

async fn send_all(sim: &Sim, token: &str, created: &Value, steps: &[(&str, Value)]) {
    for (event, extra) in steps {
        let answer = sim.notify(OFM, token, &brief(event, created, extra.clone())).await;
        assert_eq!(answer.0, 200, "{event}: {}", answer.1);
    }
}

#[tokio::test]
async fn order_created_reaches_the_merchant_with_its_auth() {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({"store": "1184"})).await;
    assert!(id(&created).starts_with('H') && id(&created).len() == 12);
    assert!(created["orderUUID"].as_str().is_some_and(|u| u.starts_with("sim:")));
    assert_eq!(created["number"], "M-1");
    assert_eq!(created["merchantAnswer"]["status"], 200);
    let received = merchant.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body["event_type"], "order.created");
    assert_eq!(received[0].body["payload"]["originalOrderId"], created["originalOrderId"]);
    assert_eq!(received[0].authorization.as_deref(), Some("Basic a3VwZXI6c2VjcmV0"));
    let orders = sim.get("/sim/v1/orders").await;
    assert_eq!(orders[0]["state"], "ready");
    assert_eq!(orders[0]["paymentState"], "not_paid");
}

#[tokio::test]
async fn a_bad_answer_to_order_created_is_reported() {
    let sim = Sim::default().await;
    let (status, body) = sim.post("/sim/v1/orders", json!({"target": format!("{}/sim/v1/nowhere", sim.base)})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["check"]["ok"], false);
    assert_eq!(body["merchantAnswer"]["status"], 404);
    let (status, body) = sim.post("/sim/v1/orders", json!({"integration": "teleport", "target": "http://x"})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request");
}

#[tokio::test]
async fn happy_path_a_kuper_delivery() {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({})).await;
    let token = sim.token().await;
    let view = sim.order(&id(&created)).await;
    send_all(
        &sim,
        &token,
        &created,
        &[
            ("order.in_work", json!({})),
            ("order.assembled", json!({})),
            ("order.ready_for_delivery", as_ordered(&view)),
        ],
    )
    .await;
    assert_eq!(sim.order(&id(&created)).await["state"], "ready_to_ship");
    webhook(&sim, &created, "courier.assigned").await;
    webhook(&sim, &created, "order.paid").await;
    webhook(&sim, &created, "order.received").await;
    assert_eq!(sim.order(&id(&created)).await["state"], "shipping");
    webhook(&sim, &created, "order.delivering").await;
    webhook(&sim, &created, "order.delivered").await;
    let view = sim.order(&id(&created)).await;
    assert_eq!(view["state"], "shipped");
    assert_eq!(view["paymentState"], "paid");
    let verdicts: Vec<&str> =
        view["notifications"].as_array().into_iter().flatten().filter_map(|n| n["verdict"].as_str()).collect();
    assert_eq!(verdicts, ["accepted"; 3]);
    let events: Vec<String> =
        merchant.received().iter().map(|r| r.body["event_type"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(
        events,
        ["order.created", "courier.assigned", "order.paid", "order.received", "order.delivering", "order.delivered"]
    );
    let paid = &merchant.received()[2].body["payload"];
    assert_eq!(paid["paymentState"], "paid");
    assert_eq!(paid["total"], view["order"]["total"]);
    assert_eq!(merchant.received()[1].body["payload"]["courier"]["name"], "Алексей");
}

#[tokio::test]
async fn happy_path_a_restaurant_with_accepted() {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({"restaurant": true, "store": "rest-77"})).await;
    let token = sim.token().await;
    let view = sim.order(&id(&created)).await;
    assert!(view["order"]["completeBefore"].is_string());
    let early = sim.notify(OFM, &token, &brief("order.in_work", &created, json!({}))).await;
    assert_rejected(&early, 422, "order_of_events");
    send_all(
        &sim,
        &token,
        &created,
        &[
            ("order.accepted", json!({"expectedAssemblyTime": "2026-03-14T19:30:00+03:00"})),
            ("order.in_work", json!({})),
            ("order.assembled", json!({})),
            ("order.ready_for_delivery", as_ordered(&view)),
        ],
    )
    .await;
    assert_eq!(sim.order(&id(&created)).await["state"], "ready_to_ship");
}

#[tokio::test]
async fn happy_path_b_pickup() {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({"shipmentMethod": "pickup"})).await;
    let token = sim.token().await;
    let view = sim.order(&id(&created)).await;
    assert!(view["order"].get("address").is_none());
    assert_eq!(view["scheme"], "B");
    let composition = as_ordered(&view);
    send_all(
        &sim,
        &token,
        &created,
        &[
            ("order.in_work", json!({})),
            ("order.assembled", json!({})),
            ("order.ready_for_delivery", composition.clone()),
            ("order.pickup_code_created", json!({"pickupCode": "482913"})),
        ],
    )
    .await;
    webhook(&sim, &created, "order.paid").await;
    let no_composition = sim.notify(OFM, &token, &brief("order.delivered", &created, json!({}))).await;
    assert_rejected(&no_composition, 422, "composition_required");
    send_all(&sim, &token, &created, &[("order.delivered", composition)]).await;
    let view = sim.order(&id(&created)).await;
    assert_eq!(view["state"], "shipped");
    assert_eq!(view["pickupCode"], "482913");
}

#[tokio::test]
async fn happy_path_c_merchant_delivery() {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({"integration": "delivery_by_merchant"})).await;
    let token = sim.token().await;
    let view = sim.order(&id(&created)).await;
    let composition = as_ordered(&view);
    send_all(
        &sim,
        &token,
        &created,
        &[
            ("order.in_work", json!({})),
            ("order.assembled", json!({})),
            ("order.ready_for_delivery", composition.clone()),
        ],
    )
    .await;
    webhook(&sim, &created, "order.paid").await;
    send_all(
        &sim,
        &token,
        &created,
        &[
            ("order.estimated_delivery_time", json!({"estimatedDeliveryTime": "2026-03-14T12:40:00+03:00"})),
            ("order.delivering", json!({})),
        ],
    )
    .await;
    assert_eq!(sim.order(&id(&created)).await["state"], "shipping");
    send_all(&sim, &token, &created, &[("order.delivered", composition)]).await;
    let view = sim.order(&id(&created)).await;
    assert_eq!(view["state"], "shipped");
    assert_eq!(view["paymentState"], "paid");
}

#[tokio::test]
async fn happy_path_in_the_event_format_with_client_token() {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({})).await;
    let view = sim.order(&id(&created)).await;
    let positions: Vec<Value> = view["order"]["positions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| json!({"id": p["id"], "quantity": p["quantity"], "weight": p["weight"]}))
        .collect();
    let order_id = id(&created);
    let steps = [
        json!({"event": {"type": "order.in_work", "payload": {"order_id": order_id}}}),
        json!({"event": {"type": "order.assembled", "payload": {"order_id": order_id, "number": "M-1"}}}),
        json!({"event": {"type": "order.ready_for_delivery", "payload": {
            "order_id": order_id,
            "order": {"originalOrderId": order_id, "changed": false, "positions": positions}
        }}}),
    ];
    for body in &steps {
        let response = sim
            .http
            .post(format!("{}{V3}", sim.base))
            .header("Client-Token", "sim-client-token")
            .header("Api-Version", "3.0")
            .json(body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "{body}");
    }
    let state = sim.order(&order_id).await;
    assert_eq!(state["state"], "ready_to_ship");
    assert!(state["collected"]["positions"].is_array());
}

async fn pickup_code_under(profile: Profile) -> (u16, u16) {
    let sim = Sim::start(SimConfig { profile, ..SimConfig::default() }).await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({"shipmentMethod": "pickup"})).await;
    let token = sim.token().await;
    let view = sim.order(&id(&created)).await;
    let code = brief("order.pickup_code_created", &created, json!({"pickupCode": "7306"}));
    send_all(&sim, &token, &created, &[("order.in_work", json!({}))]).await;
    let before = sim.notify(OFM, &token, &code).await;
    if before.0 != 200 {
        assert_rejected(&before, 422, "order_of_events");
    }
    send_all(&sim, &token, &created, &[("order.ready_for_delivery", as_ordered(&view))]).await;
    let after = sim.notify(OFM, &token, &code).await;
    if after.0 != 200 {
        // Under v3 the code was accepted before, so this is a repeat... unless it was refused.
        assert!(rule(&after.1) == "order_of_events" || rule(&after.1) == "repeat", "{}", after.1);
    }
    (before.0, after.0)
}

#[tokio::test]
async fn pickup_code_comes_after_ready_under_the_brief_profile() {
    assert_eq!(pickup_code_under(Profile::Brief).await, (422, 200));
}

#[tokio::test]
async fn pickup_code_comes_before_ready_under_the_v3_profile() {
    let (before, after) = pickup_code_under(Profile::V3).await;
    assert_eq!(before, 200);
    assert_eq!(after, 422);
}

#[tokio::test]
async fn pickup_code_after_ready_is_out_of_order_under_v3() {
    let sim = Sim::start(SimConfig { profile: Profile::V3, ..SimConfig::default() }).await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({"shipmentMethod": "pickup"})).await;
    let token = sim.token().await;
    let view = sim.order(&id(&created)).await;
    send_all(&sim, &token, &created, &[("order.in_work", json!({})), ("order.ready_for_delivery", as_ordered(&view))])
        .await;
    let code = brief("order.pickup_code_created", &created, json!({"pickupCode": "7306"}));
    assert_rejected(&sim.notify(OFM, &token, &code).await, 422, "order_of_events");
}

#[tokio::test]
async fn a_scripted_500_then_success() {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({})).await;
    let token = sim.token().await;
    let (status, _) = sim.post("/sim/v1/faults", json!({"times": 1, "status": 500, "retry_after": 1})).await;
    assert_eq!(status, 201);
    let body = brief("order.in_work", &created, json!({}));
    let response =
        sim.http.post(format!("{}{OFM}", sim.base)).bearer_auth(&token).json(&body).send().await.expect("request");
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    assert_eq!(sim.order(&id(&created)).await["state"], "ready");
    assert_ok(&sim.notify(OFM, &token, &body).await);
    let view = sim.order(&id(&created)).await;
    assert_eq!(view["state"], "collecting");
    let verdicts: Vec<&str> =
        view["notifications"].as_array().into_iter().flatten().filter_map(|n| n["verdict"].as_str()).collect();
    assert_eq!(verdicts, ["fault", "accepted"]);
    // The global log has both, in arrival order, with the order id.
    let log = sim.get("/sim/v1/notifications").await;
    assert_eq!(log[0]["seq"], 1);
    assert_eq!(log[0]["status"], 500);
    assert_eq!(log[1]["originalOrderId"], created["originalOrderId"]);
}

#[tokio::test]
async fn a_dropped_request_gets_no_answer_and_changes_nothing() {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({})).await;
    let token = sim.token().await;
    let (status, _) = sim.post("/sim/v1/faults", json!({"times": 1, "drop": true})).await;
    assert_eq!(status, 201);
    let body = brief("order.in_work", &created, json!({}));
    let started = std::time::Instant::now();
    let result = sim.http.post(format!("{}{OFM}", sim.base)).bearer_auth(&token).json(&body).send().await;
    assert!(result.is_err(), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(sim.order(&id(&created)).await["notifications"][0]["verdict"], "fault");
    assert_ok(&sim.notify(OFM, &token, &body).await);
}

#[tokio::test]
async fn a_delay_answers_slowly_then_processes() {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({})).await;
    let token = sim.token().await;
    sim.post("/sim/v1/faults", json!({"delay_ms": 300})).await;
    let started = std::time::Instant::now();
    assert_ok(&sim.notify(OFM, &token, &brief("order.in_work", &created, json!({}))).await);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn an_outage_answers_503_until_it_ends() {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({})).await;
    let token = sim.token().await;
    let (status, _) = sim.post("/sim/v1/outage", json!({"status": 503, "for_ms": 60_000})).await;
    assert_eq!(status, 201);
    let body = brief("order.in_work", &created, json!({}));
    assert_eq!(sim.notify(OFM, &token, &body).await.0, 503);
    assert_eq!(sim.notify(OFM, &token, &body).await.0, 503);
    let response = sim.http.delete(format!("{}/sim/v1/outage", sim.base)).send().await.expect("request");
    assert_eq!(response.status(), 200);
    assert_ok(&sim.notify(OFM, &token, &body).await);
}

#[tokio::test]
async fn a_hang_outage_drops_requests_when_it_ends() {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({})).await;
    let token = sim.token().await;
    sim.post("/sim/v1/outage", json!({"hang_ms": 200})).await;
    let result = sim
        .http
        .post(format!("{}{OFM}", sim.base))
        .bearer_auth(&token)
        .json(&brief("order.in_work", &created, json!({})))
        .send()
        .await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(sim.order(&id(&created)).await["state"], "ready");
}

#[tokio::test]
async fn revoked_tokens_get_401_until_refreshed() {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({})).await;
    let token = sim.token().await;
    let (status, body) = sim.post("/sim/v1/tokens/revoke", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["revoked"], 1);
    let body = brief("order.in_work", &created, json!({}));
    assert_rejected(&sim.notify(OFM, &token, &body).await, 401, "unauthorized");
    let fresh = sim.token().await;
    assert_ne!(fresh, token);
    assert_ok(&sim.notify(OFM, &fresh, &body).await);
}

#[tokio::test]
async fn a_token_fault_hits_the_token_endpoint_only() {
    let sim = Sim::default().await;
    sim.post("/sim/v1/faults", json!({"status": 503, "path": "token"})).await;
    let response = sim
        .http
        .post(format!("{}/auth/token", sim.base))
        .form(&[("client_id", "sim-client"), ("client_secret", "sim-secret"), ("grant_type", "client_credentials")])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 503);
    let token = sim.token().await;
    assert!(token.starts_with("sim."));
}

#[tokio::test]
async fn the_pull_api_shows_kupers_view() {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({})).await;
    let token = sim.token().await;
    send_all(&sim, &token, &created, &[("order.in_work", json!({}))]).await;
    let url = format!("{}/ofm/api/v1/shipments/{}/state", sim.base, id(&created));
    let response = sim.http.get(&url).bearer_auth(&token).send().await.expect("request");
    assert_eq!(response.status(), 200);
    let state: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(state, json!({"state": "collecting", "paymentState": "not_paid"}));
    let url = format!("{}/ofm/api/v1/shipments/{}", sim.base, id(&created));
    let shipment: Value =
        sim.http.get(&url).bearer_auth(&token).send().await.expect("request").json().await.unwrap_or(Value::Null);
    assert_eq!(shipment["originalOrderId"], created["originalOrderId"]);
    assert_eq!(shipment["number"], "M-1");
    let response = sim.http.get(&url).send().await.expect("request");
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn the_pull_api_lists_shipments_in_pages_with_filters() {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let first = sim.create_order(&merchant, json!({"store": "1184"})).await;
    // An order whose order.created never reaches the merchant.
    let (status, lost) =
        sim.post("/sim/v1/orders", json!({"target": merchant.url, "store": "27", "deliver": false})).await;
    assert_eq!(status, 201, "{lost}");
    assert_eq!(lost["delivered"], false);
    assert_eq!(merchant.received().len(), 1, "only the first order.created was sent");
    let third = sim.create_order(&merchant, json!({"store": "1184"})).await;
    let token = sim.token().await;
    let list = |query: String| {
        let (http, token, base) = (sim.http.clone(), token.clone(), sim.base.clone());
        async move {
            let response = http
                .get(format!("{base}/ofm/api/v1/shipments{query}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("list request");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let ids = |page: &Value| -> Vec<String> {
        page["shipments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["originalOrderId"].as_str().unwrap().to_owned())
            .collect()
    };

    // Paging: two pages of two and one, in the order of their last change.
    let (status, page1) = list("?page_size=2".into()).await;
    assert_eq!(status, 200, "{page1}");
    assert_eq!(ids(&page1), vec![id(&first), id(&lost)]);
    let shipment = &page1["shipments"][1];
    assert_eq!(shipment["state"], "ready");
    assert_eq!(shipment["paymentState"], "not_paid");
    assert_eq!(shipment["storeID"], "27");
    assert!(shipment["positions"].as_array().is_some_and(|p| !p.is_empty()), "the whole order: {shipment}");
    assert!(shipment["updatedAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    let token1 = page1["next_page_token"].as_str().unwrap().to_owned();
    let (_, page2) = list(format!("?page_size=2&page_token={token1}")).await;
    assert_eq!(ids(&page2), vec![id(&third)]);
    assert_eq!(page2["next_page_token"], Value::Null);

    // Filters.
    let (_, by_store) = list("?store_id=27".into()).await;
    assert_eq!(ids(&by_store), vec![id(&lost)]);
    let (_, both) = list("?store_id=27&store_id=1184".into()).await;
    assert_eq!(both["shipments"].as_array().unwrap().len(), 3);

    // A cancellation Kuper never sends: its view changes, the merchant hears nothing, and the
    // order moves to the end of the list with the cancellation.
    let before = merchant.received().len();
    let (status, answer) = sim
        .post(&format!("/sim/v1/orders/{}/webhooks", id(&first)), json!({"event": "order.canceled", "deliver": false}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], false);
    assert_eq!(merchant.received().len(), before);
    assert_eq!(sim.order(&id(&first)).await["state"], "canceled");
    let since = shipment["updatedAt"].as_str().unwrap().to_owned();
    let (_, changed) = list(format!("?updated_since={since}&page_token={token1}")).await;
    assert_eq!(ids(&changed), vec![id(&third), id(&first)]);
    assert_eq!(changed["shipments"][1]["state"], "canceled");
    assert_eq!(changed["shipments"][1]["cancellation"]["slug"], "customer_request");

    // Refusals: bad parameters, no credentials; Client-Token works as on /v3.
    for query in ["?page_size=0", "?page_size=999", "?page_token=nope", "?updated_since=yesterday", "?color=red"] {
        let (status, body) = list(query.into()).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["type"], "schema", "{query}: {body}");
    }
    let url = format!("{}/ofm/api/v1/shipments", sim.base);
    assert_eq!(sim.http.get(&url).send().await.expect("request").status(), 401);
    let response = sim
        .http
        .get(&url)
        .header("Client-Token", kuper_bridge_sim::SimConfig::default().client_tokens[0].clone())
        .header("Api-Version", "3.0")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    // The fault path `shipments` covers the list.
    let (status, _) = sim.post("/sim/v1/faults", json!({"status": 503, "path": "shipments"})).await;
    assert_eq!(status, 201);
    assert_eq!(list(String::new()).await.0, 503);
    assert_eq!(list(String::new()).await.0, 200);
}

#[tokio::test]
async fn webhooks_can_be_raw_or_repeated() {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({})).await;
    let path = format!("/sim/v1/orders/{}/webhooks", created["orderUUID"].as_str().unwrap_or(""));
    let (status, body) = sim.post(&path, json!({"raw": "{not json"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = sim
        .post(
            &path,
            json!({"event": "order.canceled", "repeat": 2, "payload": {"cancellation": {"slug": "store_closed"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["attempts"].as_array().map(Vec::len), Some(2));
    let received = merchant.received();
    assert_eq!(received.len(), 4);
    assert_eq!(received[1].body, Value::String("{not json".into()));
    assert_eq!(received[2].body, received[3].body);
    assert_eq!(received[3].body["payload"]["cancellation"]["slug"], "store_closed");
    let view = sim.order(&id(&created)).await;
    assert_eq!(view["state"], "canceled");
    assert_eq!(view["webhooks"].as_array().map(Vec::len), Some(4));
    // A repeated order.created carries the whole order again.
    let (status, _) = sim.post(&path, json!({"event": "order.created"})).await;
    assert_eq!(status, 200);
    let again = merchant.received().pop().map(|r| r.body).unwrap_or_default();
    assert_eq!(again["payload"]["positions"], view["order"]["positions"]);
    let (status, body) = sim.post("/sim/v1/orders/H000/webhooks", json!({"event": "order.paid"})).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "order_not_found");
}

#[tokio::test]
async fn the_same_seed_generates_the_same_orders() {
    async fn orders(seed: u64) -> Vec<Value> {
        let sim = Sim::start(SimConfig { seed, ..SimConfig::default() }).await;
        let merchant = merchant().await;
        let mut orders = Vec::new();
        for extra in [json!({}), json!({"shipmentMethod": "pickup"}), json!({"restaurant": true})] {
            let created = sim.create_order(&merchant, extra).await;
            let mut order = sim.order(&id(&created)).await["order"].clone();
            // Times follow the clock; everything else follows the seed.
            if let Some(map) = order.as_object_mut() {
                map.remove("delivery");
                map.remove("completeBefore");
            }
            orders.push(order);
        }
        sim.handle.shutdown().await;
        orders
    }
    let first = orders(2026).await;
    assert_eq!(first, orders(2026).await);
    assert_ne!(first, orders(2027).await);
}

#[tokio::test]
async fn shutdown_is_prompt_even_with_a_hung_request() {
    let sim = Sim::default().await;
    let merchant = merchant().await;
    let created = sim.create_order(&merchant, json!({})).await;
    let token = sim.token().await;
    sim.post("/sim/v1/outage", json!({"hang_ms": 60_000})).await;
    let http = sim.http.clone();
    let url = format!("{}{OFM}", sim.base);
    let body = brief("order.in_work", &created, json!({}));
    let pending = tokio::spawn(async move { http.post(url).bearer_auth(token).json(&body).send().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    sim.handle.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(3));
    let result = pending.await.expect("join");
    assert!(result.is_err());
}

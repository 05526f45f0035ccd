//! Every (scheme, restaurant, state, action) through the real HTTP API and a real SQLite file:
//! an allowed action answers 202, changes the state and queues its notification(s) in the
//! outbox; a forbidden one answers 409 naming the state and the allowed actions, and changes
//! neither the order nor the outbox. (The domain's own table test checks the rules
//! themselves against a literal table from protocol.md; this one checks that the API and
//! storage honour them.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;
use common::*;
use kuper_bridge::config::StoreConfig;
use kuper_bridge_domain::ActionKind;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};

const CREATED: &str = include_str!("../../../fixtures/webhooks/order.created.kuper-delivery.json");
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Clone, Copy, Debug)]
enum Step {
    Act(&'static str),
    Kuper(&'static str),
    /// The customer shows the pickup code issued earlier on the path; the store checks it.
    VerifyCode,
}
use Step::*;

struct Case {
    label: &'static str,
    store: &'static str,
    pickup: bool,
    restaurant: bool,
    /// state name → how to get there from `created`.
    paths: Vec<(&'static str, Vec<Step>)>,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for restaurant in [false, true] {
        let start: Vec<Step> = if restaurant { vec![Act("accept")] } else { vec![] };
        let with = |extra: &[Step]| -> Vec<Step> { start.iter().copied().chain(extra.iter().copied()).collect() };
        let mut common = vec![("created", vec![])];
        if restaurant {
            common.push(("accepted", vec![Act("accept")]));
        }
        common.push(("in_work", with(&[Act("start-assembly")])));
        common.push(("assembled", with(&[Act("start-assembly"), Act("assembled")])));
        common.push(("ready", with(&[Act("start-assembly"), Act("assembled"), Act("ready")])));
        common.push(("canceled", vec![Act("cancel")]));
        let ready = [Act("start-assembly"), Act("assembled"), Act("ready")];
        let mut a = common.clone();
        a.push(("shipping", with(&[&ready[..], &[Kuper("order.received")]].concat())));
        a.push(("delivering", with(&[&ready[..], &[Kuper("order.received"), Kuper("order.delivering")]].concat())));
        a.push((
            "delivered",
            with(
                &[&ready[..], &[Kuper("order.received"), Kuper("order.delivering"), Kuper("order.delivered")]].concat(),
            ),
        ));
        let mut b = common.clone();
        b.push(("in_work+code", with(&[Act("start-assembly"), Act("pickup-code")])));
        b.push(("ready+code", with(&[&ready[..], &[Act("pickup-code")]].concat())));
        b.push(("ready+verified", with(&[&ready[..], &[Act("pickup-code"), VerifyCode]].concat())));
        b.push(("delivered", with(&[&ready[..], &[Act("pickup-code"), VerifyCode, Act("delivered")]].concat())));
        let mut c = common.clone();
        c.push(("ready+eta", with(&[&ready[..], &[Act("estimated-delivery-time")]].concat())));
        c.push(("delivering", with(&[&ready[..], &[Act("delivering")]].concat())));
        c.push(("delivered", with(&[&ready[..], &[Act("delivering"), Act("delivered")]].concat())));
        let (sa, sc) = if restaurant { (RESTAURANT_STORE, "rest-merchant-1") } else { ("1184", MERCHANT_STORE) };
        out.push(Case { label: "A", store: sa, pickup: false, restaurant, paths: a });
        out.push(Case { label: "B", store: sa, pickup: true, restaurant, paths: b });
        out.push(Case { label: "C", store: sc, pickup: false, restaurant, paths: c });
    }
    out
}

fn body_for(action: &str) -> Value {
    match action {
        "pickup-code" => json!({}),
        "estimated-delivery-time" => json!({"at": moscow_in(90)}),
        "cancel" => json!({"reason": "out_of_stock", "description": "Нет товара"}),
        _ => json!({}),
    }
}

async fn new_order(env: &Env, store: &str, pickup: bool) -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let id = format!("H9{n:010}");
    let mut body: Value = serde_json::from_str(CREATED).unwrap();
    body["payload"]["originalOrderId"] = json!(id);
    body["payload"]["orderUUID"] = json!(format!("test:{n}"));
    body["payload"]["storeID"] = json!(store);
    if pickup {
        body["payload"]["shipmentMethod"] = json!("pickup");
    }
    assert_eq!(webhook(env, body).await, 200);
    id
}

async fn webhook(env: &Env, body: Value) -> u16 {
    let resp = env.http.post(env.webhook_url()).basic_auth("kuper", Some("secret")).json(&body).send().await.unwrap();
    resp.status().as_u16()
}

async fn outbox_of(env: &Env, number: &str) -> Vec<Value> {
    let (_, v) = env.call("GET", "/api/v1/outbox?limit=1000", None, ADMIN_KEY).await;
    v["records"].as_array().unwrap().iter().filter(|r| r["body"]["payload"]["number"] == number).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_in_every_reachable_state() {
    let env = Env::with(|c| {
        // Outbox rows stay where the action put them.
        c.server.role = "api".parse().expect("a role");
        c.stores.push(StoreConfig {
            id: "rest-merchant-1".into(),
            delivery: Some("merchant".parse().expect("a delivery")),
            restaurant: Some(true),
        });
    })
    .await;
    let mut checked = 0;
    let mut problems = Vec::new();
    for case in cases() {
        for (state_label, path) in &case.paths {
            for action in ActionKind::ALL {
                let id = new_order(&env, case.store, case.pickup).await;
                let mut code = None;
                for step in path {
                    match step {
                        Act(a) => {
                            let (s, v) = env.act(&id, a, body_for(a)).await;
                            assert_eq!(s, 202, "{} r={} path to {state_label}: {a}: {v}", case.label, case.restaurant);
                            if let Some(issued) = v["pickupCode"].as_str() {
                                code = Some(issued.to_string());
                            }
                        }
                        VerifyCode => {
                            let code = code.clone().expect("a pickup code issued earlier on the path");
                            let (s, v) = env.act(&id, "pickup-code/verify", json!({"code": code})).await;
                            assert_eq!((s, &v["valid"]), (200, &json!(true)), "path to {state_label}: {v}");
                        }
                        Kuper(e) => {
                            let s = webhook(&env, json!({"event_type": e, "payload": {"originalOrderId": id}})).await;
                            assert_eq!(s, 200);
                        }
                    }
                }
                let before = env.order(&id).await;
                let number = before["number"].as_str().unwrap().to_string();
                let outbox_before = outbox_of(&env, &number).await;
                let allowed: Vec<String> = before["allowedActions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect();
                let here = format!("{} restaurant={} {state_label} + {}", case.label, case.restaurant, action.as_str());
                let (status, v) = env.act(&id, action.as_str(), body_for(action.as_str())).await;
                checked += 1;
                if allowed.iter().any(|a| a == action.as_str()) {
                    let after = outbox_of(&env, &number).await;
                    let queued: Vec<&Value> =
                        v["notifications"].as_array().map(|n| n.iter().collect()).unwrap_or_default();
                    let synthesized = action == ActionKind::Ready && before["state"] == "in_work";
                    let expected_count = if synthesized { 2 } else { 1 };
                    if status != 202 {
                        problems.push(format!("{here}: allowed but answered {status}: {v}"));
                    } else if queued.len() != expected_count || after.len() != outbox_before.len() + expected_count {
                        problems.push(format!(
                            "{here}: queued {} (outbox {} → {}), expected {expected_count}",
                            queued.len(),
                            outbox_before.len(),
                            after.len()
                        ));
                    } else if action != ActionKind::PickupCode
                        && action != ActionKind::EstimatedDeliveryTime
                        && v["order"]["state"] == before["state"]
                    {
                        problems.push(format!("{here}: the state did not change"));
                    }
                } else {
                    let after = env.order(&id).await;
                    if status != 409 || v["error"]["code"] != "invalid_transition" {
                        problems.push(format!("{here}: forbidden but answered {status}: {v}"));
                    } else if v["error"]["details"]["state"] != before["state"]
                        || v["error"]["details"]["allowed"] != json!(allowed)
                    {
                        problems.push(format!(
                            "{here}: 409 details {} do not name state {} and allowed {allowed:?}",
                            v["error"]["details"], before["state"]
                        ));
                    } else if after != before || outbox_of(&env, &number).await != outbox_before {
                        problems.push(format!("{here}: a refused action changed something"));
                    }
                }
            }
        }
    }
    assert!(checked > 300, "{checked}");
    assert!(problems.is_empty(), "{} of {checked} combinations wrong:\n{}", problems.len(), problems.join("\n"));
    env.shutdown().await;
}

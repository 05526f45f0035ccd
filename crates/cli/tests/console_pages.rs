//! The console's order page, pickup desk and outbox over plain HTTP (no browser): the real
//! gateway and the Kuper simulator on loopback, on the backend the suite runs on (SQLite, or
//! PostgreSQL with `KUPER_BRIDGE_TEST_BACKEND=postgres`). Operators are created in the
//! gateway's own store and log in through `/ui/login` like a person; each request carries the
//! session cookie and, on a POST, the CSRF token read from the page, as a browser's form does.
//! (The real-Chromium tests are `console_browser.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;
use common::*;
use kuper_bridge_storage::{NewOperator, OperatorRole};
use serde_json::{json, Value};
use std::collections::BTreeMap;

const PASSWORD: &str = "correct horse battery";
const HOSTILE: &str = "<img src=x onerror=alert(1)>";
const ACTIONS: [&str; 9] = [
    "accept",
    "start-assembly",
    "assembled",
    "ready",
    "pickup-code",
    "estimated-delivery-time",
    "delivering",
    "delivered",
    "cancel",
];

/// One operator's browser, as far as the server can tell: a cookie jar and no redirects
/// followed (the tests look at each 303).
struct Session {
    http: reqwest::Client,
    base: String,
    cookies: std::sync::Mutex<BTreeMap<String, String>>,
}

struct Page {
    status: u16,
    html: String,
    location: Option<String>,
}

impl Session {
    async fn login(env: &Env, name: &str, role: OperatorRole) -> Session {
        let store = &env.app.as_ref().expect("the gateway runs").store;
        let password_hash = kuper_bridge_app::operators::hash_password(PASSWORD).expect("hash");
        store.create_operator(&NewOperator { name: name.into(), role, password_hash }).await.expect("create operator");
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        let session = Session { http, base: env.app_url.clone(), cookies: Default::default() };
        let page = session.send_form("/ui/login", &[("login", name), ("password", PASSWORD)]).await;
        assert_eq!(page.status, 303, "login of {name}: {}", page.html);
        assert!(session.cookies.lock().unwrap().contains_key("kb_session"), "a session cookie was set");
        session
    }

    fn remember(&self, resp: &reqwest::Response) {
        let mut jar = self.cookies.lock().unwrap();
        for value in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            let Some((pair, attributes)) = value.to_str().ok().map(|v| v.split_once(';').unwrap_or((v, ""))) else {
                continue;
            };
            let Some((name, value)) = pair.split_once('=') else { continue };
            if value.is_empty() || attributes.contains("Max-Age=0") {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_string(), value.trim().to_string());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies.lock().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn finish(&self, resp: reqwest::Response) -> Page {
        self.remember(&resp);
        let status = resp.status().as_u16();
        let location = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        let html = resp.text().await.unwrap_or_default();
        Page { status, html, location }
    }

    async fn get(&self, path: &str) -> Page {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .send()
            .await
            .expect("GET");
        self.finish(resp).await
    }

    async fn send_form(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .form(fields)
            .send()
            .await
            .expect("POST");
        self.finish(resp).await
    }

    /// Posts a form with the CSRF token of `page` (every console page carries one).
    async fn post(&self, page: &Page, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = csrf_of(&page.html);
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.send_form(path, &all).await
    }

    /// Follows a 303 to the page it names.
    async fn follow(&self, page: &Page) -> Page {
        assert_eq!(page.status, 303, "a redirect: {}", page.html);
        self.get(page.location.as_deref().expect("Location")).await
    }
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("the page carries a csrf field") + 19;
    html[at..].split('"').next().unwrap_or_default().to_string()
}

/// The order actions offered as buttons, in page order (without repeats).
fn action_buttons(html: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in html.split("data-action=\"").skip(1) {
        let slug = part.split('"').next().unwrap_or_default();
        if ACTIONS.contains(&slug) && !out.iter().any(|s| s == slug) {
            out.push(slug.to_string());
        }
    }
    out
}

fn allowed_of(order: &Value) -> Vec<String> {
    order["allowedActions"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

async fn events_of(env: &Env, id: &str) -> Vec<Value> {
    let (status, v) = env.call("GET", &format!("/api/v1/orders/{id}/events"), None, ADMIN_KEY).await;
    assert_eq!(status, 200, "{v}");
    v["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_page_offers_the_allowed_actions_and_records_who_took_them() {
    let env = Env::new().await;
    let anna = Session::login(&env, "anna", OperatorRole::Operator).await;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);

    let page = anna.get(&format!("/ui/orders/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("data-state=\"created\""), "{}", page.html);
    assert_eq!(action_buttons(&page.html), allowed_of(&env.order(&id).await), "exactly the engine's allowed actions");
    assert!(page.html.contains("<svg") && page.html.contains("data-node=\"created\""), "the state diagram");
    let svg = anna.get(&format!("/ui/orders/{id}/diagram.svg")).await;
    assert_eq!(svg.status, 200);
    assert!(svg.html.starts_with("<?xml") && svg.html.contains("current\" data-node=\"created\""));

    // start-assembly through the console: back to the page, which confirms it.
    let done = anna.post(&page, &format!("/ui/orders/{id}/action/start-assembly"), &[]).await;
    assert_eq!(done.location.as_deref(), Some(format!("/ui/orders/{id}").as_str()));
    let page = anna.follow(&done).await;
    assert!(page.html.contains("data-state=\"in_work\""), "{}", page.html);
    assert!(page.html.contains("data-flash"), "the action is confirmed");
    assert_eq!(action_buttons(&page.html), allowed_of(&env.order(&id).await));
    assert!(!anna.get(&format!("/ui/orders/{id}")).await.html.contains("data-flash"), "the confirmation is shown once");

    // The timeline names the operator, on the page and through the REST API.
    assert!(page.html.contains("data-actor=\"operator:anna\""), "{}", page.html);
    let events = events_of(&env, &id).await;
    let action = events.iter().find(|e| e["kind"] == "action").expect("the action is in the timeline");
    assert_eq!(action["actor"], "operator:anna", "{action:#}");
    assert_eq!(action["direction"], "console");
    env.wait_accepted(&id, &["order.in_work"]).await;

    // The collected composition: one line fewer of the first item is sent as positions.
    let order = env.order(&id).await;
    let first = &order["ordered"]["positions"][0];
    let quantity = first["quantity"].as_str().map(str::to_string).unwrap_or_else(|| first["quantity"].to_string());
    let fewer = (quantity.parse::<f64>().unwrap() - 1.0).max(0.0).to_string();
    let positions = order["ordered"]["positions"].as_array().unwrap().len();
    if positions > 1 {
        let done = anna.post(&page, &format!("/ui/orders/{id}/action/ready"), &[("q_0", &fewer)]).await;
        let page = anna.follow(&done).await;
        assert!(page.html.contains("data-state=\"ready\""), "{}", page.html);
        let ready = env.order(&id).await;
        assert_eq!(ready["readyComposition"]["changed"], true, "{ready:#}");
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_action_is_explained_on_the_page() {
    let env = Env::new().await;
    let boris = Session::login(&env, "boris", OperatorRole::Admin).await;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    let page = boris.get(&format!("/ui/orders/{id}")).await;

    // Out of order: the rules refuse (409), the page says why and nothing changes.
    let refused = boris.post(&page, &format!("/ui/orders/{id}/action/assembled"), &[]).await;
    assert_eq!(refused.status, 409, "{}", refused.html);
    assert!(refused.html.contains("data-refusal"), "{}", refused.html);
    assert!(refused.html.contains("«Начать сборку»"), "what is possible instead, in words: {}", refused.html);
    assert!(refused.html.contains("data-state=\"created\""));
    // A wrong input: the engine's validation (422), the form keeps what was typed.
    let refused = boris.post(&page, &format!("/ui/orders/{id}/action/cancel"), &[("reason", "no_such_reason")]).await;
    assert_eq!(refused.status, 422, "{}", refused.html);
    assert!(refused.html.contains("data-refusal") && refused.html.contains("unknown reason"), "{}", refused.html);
    assert_eq!(env.order(&id).await["state"], "created");
    // A cancel reason chosen from Kuper's slugs goes through.
    let select = page.html.split("name=\"reason\"").nth(1).unwrap_or_default();
    assert!(select.contains("value=\"out_of_stock\"") && select.contains("Нет товара в наличии"), "{select}");
    let done = boris.post(&page, &format!("/ui/orders/{id}/action/cancel"), &[("reason", "out_of_stock")]).await;
    assert_eq!(boris.follow(&done).await.status, 200);
    assert_eq!(env.order(&id).await["state"], "canceled");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pickup_desk_checks_the_code_then_hands_over() {
    let env = Env::new().await;
    let id = id_of(&env.create_order(json!({"store": "27", "shipmentMethod": "pickup"})).await);
    for action in ["start-assembly", "assembled", "ready"] {
        assert_eq!(env.act(&id, action, json!({})).await.0, 202, "{action}");
    }
    let (status, v) = env.act(&id, "pickup-code", json!({"code": "482913"})).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(env.kuper_sends(&id, "order.paid").await, 200);
    let order = env.order(&id).await;
    let number = order["number"].as_str().unwrap().to_string();
    let phone = order["ordered"]["customer"]["phone"].as_str().unwrap_or_default().to_string();
    let name = order["ordered"]["customer"]["name"].as_str().unwrap_or_default().to_string();

    let desk = Session::login(&env, "kassa", OperatorRole::Desk).await;
    let empty = desk.get("/ui/pickup").await;
    assert_eq!(empty.status, 200);
    assert!(empty.html.contains("name=\"ref\"") && empty.html.contains("autofocus"), "{}", empty.html);
    // The scanner types our number and presses Enter: a GET with `ref`.
    let page = desk.get(&format!("/ui/pickup?ref={number}")).await;
    assert_eq!(page.status, 200, "{}", page.html);
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    assert!(page.html.contains(&format!(
        "-{}-{}",
        &digits[digits.len() - 4..digits.len() - 2],
        &digits[digits.len() - 2..]
    )));
    assert!(!page.html.contains(&phone) && !page.html.contains(&digits), "the phone is masked");
    if let Some(first) = name.split_whitespace().next() {
        assert!(page.html.contains(first), "the customer's first name");
    }
    assert!(page.html.contains("name=\"code\""));
    assert!(!action_buttons(&page.html).contains(&"delivered".to_string()), "no hand-over before the code");

    let wrong = desk.post(&page, "/ui/pickup", &[("ref", &number), ("code", "000000")]).await;
    assert_eq!(wrong.status, 422, "{}", wrong.html);
    assert!(wrong.html.contains("data-verdict=\"invalid\""), "{}", wrong.html);
    assert!(wrong.html.contains("data-attempts-left=\"4\""), "{}", wrong.html);
    assert!(!action_buttons(&wrong.html).contains(&"delivered".to_string()));
    // A desk cannot override the check.
    let forbidden =
        desk.post(&page, "/ui/pickup/delivered", &[("ref", &number), ("override_reason", "знаю его")]).await;
    assert_eq!(forbidden.status, 403);

    let right = desk.post(&page, "/ui/pickup", &[("ref", &id), ("code", "482913")]).await;
    assert_eq!(right.status, 200, "{}", right.html);
    assert!(right.html.contains("data-verdict=\"valid\""), "{}", right.html);
    assert_eq!(action_buttons(&right.html), ["delivered"]);
    let done = desk.post(&right, "/ui/pickup/delivered", &[("ref", &id)]).await;
    assert_eq!(done.location.as_deref(), Some("/ui/pickup"));
    let next = desk.follow(&done).await;
    assert!(next.html.contains("data-flash") && next.html.contains(&number), "{}", next.html);
    assert_eq!(env.order(&id).await["state"], "delivered");
    env.wait_accepted(
        &id,
        &[
            "order.in_work",
            "order.assembled",
            "order.ready_for_delivery",
            "order.pickup_code_created",
            "order.delivered",
        ],
    )
    .await;
    let events = events_of(&env, &id).await;
    let checks: Vec<&Value> = events.iter().filter(|e| e["kind"] == "pickup_verification").collect();
    assert_eq!(checks.len(), 2, "{events:#?}");
    assert!(checks.iter().all(|e| e["actor"] == "operator:kassa"), "{checks:#?}");
    assert!(events
        .iter()
        .any(|e| e["kind"] == "action" && e["event"] == "delivered" && e["actor"] == "operator:kassa"));
    assert!(!shows_code(&serde_json::to_string(&checks).unwrap_or_default(), "000000"), "codes tried are not kept");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_wrong_codes_lock_the_desk() {
    let env = Env::new().await;
    let id = id_of(&env.create_order(json!({"store": "27", "shipmentMethod": "pickup"})).await);
    for action in ["start-assembly", "assembled", "ready"] {
        assert_eq!(env.act(&id, action, json!({})).await.0, 202, "{action}");
    }
    assert_eq!(env.act(&id, "pickup-code", json!({"code": "482913"})).await.0, 202);
    let desk = Session::login(&env, "kassa", OperatorRole::Desk).await;
    let page = desk.get(&format!("/ui/pickup?ref={id}")).await;
    for left in (1..5).rev() {
        let wrong = desk.post(&page, "/ui/pickup", &[("ref", &id), ("code", "000000")]).await;
        assert!(wrong.html.contains(&format!("data-attempts-left=\"{left}\"")), "{left}: {}", wrong.html);
    }
    let locked = desk.post(&page, "/ui/pickup", &[("ref", &id), ("code", "000000")]).await;
    assert_eq!(locked.status, 429, "{}", locked.html);
    assert!(locked.html.contains("data-verdict=\"locked\"") && locked.html.contains("data-locked-until"));
    // Locked means locked: the right code is refused too, and no hand-over is offered.
    let right = desk.post(&page, "/ui/pickup", &[("ref", &id), ("code", "482913")]).await;
    assert!(right.html.contains("data-verdict=\"locked\""), "{}", right.html);
    let again = desk.get(&format!("/ui/pickup?ref={id}")).await;
    assert!(again.html.contains("data-verdict=\"locked\"") && !again.html.contains("name=\"code\""));
    assert!(!action_buttons(&again.html).contains(&"delivered".to_string()));
    assert_eq!(env.order(&id).await["state"], "ready");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_hands_over_without_the_code_only_with_a_written_reason() {
    let env = Env::new().await;
    let id = id_of(&env.create_order(json!({"store": "27", "shipmentMethod": "pickup"})).await);
    for action in ["start-assembly", "assembled", "ready", "pickup-code"] {
        assert_eq!(env.act(&id, action, json!({})).await.0, 202, "{action}");
    }
    assert_eq!(env.kuper_sends(&id, "order.paid").await, 200);
    let olga = Session::login(&env, "olga", OperatorRole::Operator).await;
    let page = olga.get(&format!("/ui/orders/{id}")).await;
    assert!(!action_buttons(&page.html).contains(&"delivered".to_string()), "not verified: no plain hand-over");
    assert!(page.html.contains("data-action=\"delivered-override\""), "{}", page.html);
    assert!(page.html.contains("data-action=\"verify-code\""));
    // An empty reason is no reason.
    let refused = olga.post(&page, &format!("/ui/orders/{id}/action/delivered"), &[("override_reason", "  ")]).await;
    assert_eq!(refused.status, 409, "{}", refused.html);
    assert!(refused.html.contains("data-refusal"));
    let reason = "Покупатель без телефона, паспорт проверен";
    let done = olga.post(&page, &format!("/ui/orders/{id}/action/delivered"), &[("override_reason", reason)]).await;
    let page = olga.follow(&done).await;
    assert!(page.html.contains("data-state=\"delivered\""), "{}", page.html);
    assert!(page.html.contains(reason), "the reason is on the order: {}", page.html);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_gets_no_buttons_and_forged_posts_are_refused() {
    let env = Env::new().await;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    let vera = Session::login(&env, "vera", OperatorRole::Viewer).await;
    let page = vera.get(&format!("/ui/orders/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("data-state=\"created\""));
    assert!(action_buttons(&page.html).is_empty(), "{:?}", action_buttons(&page.html));
    assert!(!page.html.contains("data-action=\"verify-code\"") && !page.html.contains("/action/"));
    // The viewer's own valid CSRF token does not make it an operator.
    let forged = vera.post(&page, &format!("/ui/orders/{id}/action/start-assembly"), &[]).await;
    assert_eq!(forged.status, 403, "{}", forged.html);
    assert_eq!(vera.get("/ui/pickup").await.status, 403, "the desk needs the desk role");
    let outbox = vera.get("/ui/outbox").await;
    assert_eq!(outbox.status, 200);
    assert!(!outbox.html.contains("data-action=\"replay"), "no replay for a viewer");

    // An operator's POST without the token (a form on another site) is refused too.
    let anna = Session::login(&env, "anna", OperatorRole::Operator).await;
    let without = anna.send_form(&format!("/ui/orders/{id}/action/start-assembly"), &[]).await;
    assert_eq!(without.status, 403);
    let wrong = anna.send_form(&format!("/ui/orders/{id}/action/start-assembly"), &[("csrf", "0000")]).await;
    assert_eq!(wrong.status, 403);
    // And without a session at all.
    let stranger = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = stranger.get(format!("{}/ui/orders/{id}", env.app_url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 303, "to the login form");
    assert_eq!(env.order(&id).await["state"], "created", "nothing changed");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_replayed_from_the_outbox_reaches_the_simulator() {
    let env = Env::new().await;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    env.sim_post("/sim/v1/faults", json!({"times": 1, "status": 422})).await;
    assert_eq!(env.act(&id, "start-assembly", json!({})).await.0, 202);
    let records = env.wait_outbox("a dead letter", |r| r.iter().any(|x| x["status"] == "dead")).await;
    let dead = records.iter().find(|x| x["status"] == "dead").and_then(|x| x["id"].as_i64()).unwrap();

    let boss = Session::login(&env, "boss", OperatorRole::Admin).await;
    let list = boss.get("/ui/outbox?status=dead&destination=kuper").await;
    assert_eq!(list.status, 200);
    assert!(list.html.contains(&format!("data-outbox-id=\"{dead}\"")), "{}", list.html);
    // Kuper's id, or our number where the notification names the order by its orderUUID alone.
    let number = env.order(&id).await["number"].as_str().unwrap().to_string();
    assert!(
        [&id, &number].iter().any(|r| list.html.contains(&format!("href=\"/ui/orders/{r}\""))),
        "the row links its order: {}",
        list.html
    );
    let detail = boss.get(&format!("/ui/outbox/{dead}")).await;
    assert!(detail.html.contains("data-action=\"replay\"") && detail.html.contains("data-action=\"skip\""));
    assert!(detail.html.contains("422"), "Kuper's answer is shown: {}", detail.html);

    // An operator reads it but may not decide.
    let anna = Session::login(&env, "anna", OperatorRole::Operator).await;
    let seen = anna.get(&format!("/ui/outbox/{dead}")).await;
    assert!(!seen.html.contains("data-action=\"replay\""));
    assert_eq!(anna.post(&seen, &format!("/ui/outbox/{dead}/replay"), &[("reason", "x")]).await.status, 403);

    // The reason is required.
    let refused = boss.post(&detail, &format!("/ui/outbox/{dead}/replay"), &[("reason", " ")]).await;
    assert_eq!(refused.status, 422);
    assert!(refused.html.contains("data-refusal"));
    let reason = "Kuper исправил справочник";
    let done = boss.post(&list, &format!("/ui/outbox/{dead}/replay"), &[("reason", reason), ("back", "list")]).await;
    assert_eq!(done.location.as_deref(), Some("/ui/outbox"));
    assert!(boss.follow(&done).await.html.contains("data-flash"));
    env.wait_accepted(&id, &["order.in_work"]).await;
    let events = events_of(&env, &id).await;
    let decision = events.iter().find(|e| e["kind"] == "operator").expect("the decision is in the timeline");
    assert_eq!(decision["actor"], "operator:boss", "{decision:#}");
    assert!(decision["detail"].as_str().unwrap_or_default().contains(reason), "{decision:#}");

    // After an outage: every dead letter of Kuper replayed at once.
    let second = id_of(&env.create_order(json!({"store": "1184"})).await);
    env.sim_post("/sim/v1/faults", json!({"times": 1, "status": 422})).await;
    assert_eq!(env.act(&second, "start-assembly", json!({})).await.0, 202);
    env.wait_outbox("another dead letter", |r| r.iter().any(|x| x["status"] == "dead")).await;
    let list = boss.get("/ui/outbox").await;
    assert!(list.html.contains("data-action=\"replay-all\""), "{}", list.html);
    let done = boss
        .post(&list, "/ui/outbox/replay-all", &[("destination", "kuper"), ("reason", "Kuper снова работает")])
        .await;
    let after = boss.follow(&done).await;
    assert!(after.html.contains("data-flash") && after.html.contains(": 1"), "{}", after.html);
    env.wait_accepted(&second, &["order.in_work"]).await;

    // Webhooks refused before they touched an order are listed, without what was sent.
    let resp = env
        .http
        .post(env.webhook_url())
        .basic_auth("kuper", Some("not-the-secret"))
        .json(&json!({"event_type": "order.paid", "payload": {"originalOrderId": id}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let list = boss.get("/ui/outbox").await;
    assert!(list.html.contains("data-refused-webhook"), "{}", list.html);
    assert!(!list.html.contains("not-the-secret"));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_from_kuper_is_shown_as_text() {
    let env = Env::new().await;
    let id = id_of(&env.create_order(json!({"store": "27", "shipmentMethod": "pickup"})).await);
    let status = env
        .kuper_sends_with(
            &id,
            json!({"event": "order.updated", "payload": {
                "originalOrderId": id,
                "customer": {"name": HOSTILE, "phone": "+79035554567"},
                "comment": HOSTILE,
            }}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(env.order(&id).await["ordered"]["comment"], HOSTILE, "the update was applied");
    let anna = Session::login(&env, "anna", OperatorRole::Operator).await;
    let escaped = "&lt;img src=x onerror=alert(1)&gt;";
    let page = anna.get(&format!("/ui/orders/{id}")).await;
    assert!(!page.html.contains("<img"), "{}", page.html);
    assert!(page.html.contains(escaped), "the comment is there, as text");
    let desk = anna.get(&format!("/ui/pickup?ref={id}")).await;
    assert!(!desk.html.contains("<img"), "{}", desk.html);
    assert!(desk.html.contains("+7 *** ***-45-67"), "{}", desk.html);
    env.shutdown().await;
}

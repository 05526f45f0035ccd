//! The operator console (issue #11) in a real headless Chromium, against the real gateway and
//! simulator, on the backend the suite runs on (SQLite, or PostgreSQL with
//! `KUPER_BRIDGE_TEST_BACKEND=postgres`). Each test has its own gateway, database and browser.
//!
//! The tests find elements by the console's contract (docs/interfaces.md): the routes under
//! `/ui/`, the form fields `login`, `password`, `q`, `ref`, `code`, and the attributes
//! `data-order`, `data-state`, `data-action`, `data-verdict`, `data-outbox-id`, `data-error`,
//! `data-refusal`, `data-flash`. Every screen is saved as `target/console-screenshots/NAME.png`.
//!
//! Chromium and chromedriver come from Debian (`chromium`, `chromium-driver`); without them the
//! tests print why and pass, except in CI, where they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod browser;
mod common;

use browser::*;
use common::*;
use kuper_bridge_storage::OperatorRole;
use serde_json::{json, Value};

/// Order ids on the page are the ids Kuper gave; this selects one order's row on the board.
fn row(id: &str) -> String {
    format!("[data-order={}]", js_str(id))
}

async fn state_of(env: &Env, id: &str) -> String {
    env.order(id).await["state"].as_str().unwrap_or_default().to_string()
}

/// "+79161234567" as a cashier would type it from a paper note: "8 (916) 123-45-67".
fn phone_as_typed(e164: &str) -> String {
    let d: String = e164.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(d.len(), 11, "a Russian mobile number: {e164}");
    format!("8 ({}) {}-{}-{}", &d[1..4], &d[4..7], &d[7..9], &d[9..11])
}

/// POSTs `fields` to `form_action` from the page's own script, URL-encoded as a browser sends a
/// form, with the page's cookies: what a forged or tampered request looks like to the server.
/// Returns the HTTP status (0 for a redirect, which `redirect: 'manual'` leaves unfollowed).
async fn post_form_from_page(browser: &Browser, form_action: &str, fields: &Value) -> u64 {
    let script = r#"
        const [url, fields, done] = arguments;
        fetch(url, {
            method: 'POST',
            credentials: 'same-origin',
            redirect: 'manual',
            headers: {'Content-Type': 'application/x-www-form-urlencoded'},
            body: new URLSearchParams(fields).toString(),
        }).then(r => done(r.status), e => done('error: ' + e));
    "#;
    let status = browser.js_async(script, vec![json!(form_action), fields.clone()]).await;
    status.as_u64().unwrap_or_else(|| panic!("the forged POST did not get an answer: {status}"))
}

/// The form behind the action button `css` on the current page: its URL and its fields.
async fn action_form(browser: &Browser, css: &str) -> (String, serde_json::Map<String, Value>) {
    browser.find(css).await;
    let script = r#"
        const button = document.querySelector(arguments[0]);
        const form = button.form || button.closest('form');
        const fields = {};
        for (const [k, v] of new FormData(form)) { if (typeof v === 'string') fields[k] = v; }
        if (button.name) fields[button.name] = button.value;
        return {action: form.action, fields};
    "#;
    let form = browser.js(script, vec![json!(css)]).await;
    let action = form["action"].as_str().unwrap_or_else(|| panic!("{css} is in a form: {form}")).to_string();
    let fields = form["fields"].as_object().cloned().unwrap_or_default();
    (action, fields)
}

async fn lang(browser: &Browser) -> String {
    browser.attr("html", "lang").await.unwrap_or_default()
}

/// The state-changing buttons of the page (those of POST forms), logout aside.
async fn action_buttons(browser: &Browser) -> Vec<String> {
    let script = r#"
        return [...document.querySelectorAll('[data-action]')]
            .filter(b => b.dataset.action !== 'logout')
            .filter(b => { const f = b.form || b.closest('form'); return f && f.method.toLowerCase() === 'post'; })
            .map(b => b.dataset.action);
    "#;
    let found = browser.js(script, vec![]).await;
    found.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// The CSRF token the page carries (every page has one: the logout form).
async fn csrf_of(browser: &Browser) -> String {
    browser.attr("input[name=csrf]", "value").await.unwrap_or_else(|| panic!("the page carries a csrf field"))
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_opens_the_running_gateway() {
    let Some(console) = Console::start().await else { return };
    let browser = console.browser().await;
    browser.goto("/healthz").await;
    let text = browser.visible_text().await;
    assert!(text.contains("ok") || text.contains("status"), "healthz shows its answer: {text}");
    let shot = browser.screenshot("healthz").await;
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000), "{}", shot.display());
    browser.close().await;
    console.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_logs_in_and_out() {
    let Some(console) = Console::start().await else { return };
    let browser = console.browser().await;

    // A page behind the login sends there, and back after it.
    browser.goto("/ui/health").await;
    assert!(browser.path().await.starts_with("/ui/login"), "not logged in: {}", browser.path().await);
    browser.find("input[name=login]").await;
    browser.screenshot("login").await;
    login(&browser, "olga", PASSWORD).await;
    assert!(browser.path().await.starts_with("/ui/health"), "back to the page asked for: {}", browser.path().await);
    assert!(browser.visible_text().await.contains("olga"), "the header names who is logged in");

    // The session cookie is out of the page's reach (HttpOnly) and not sent cross-site.
    let cookies = browser.client.get_all_cookies().await.expect("cookies");
    let session: Vec<_> = cookies.iter().filter(|c| c.name() != "kb_lang").collect();
    assert_eq!(session.len(), 1, "one session cookie: {cookies:?}");
    assert_eq!(session[0].http_only(), Some(true), "{:?}", session[0]);
    assert!(session[0].same_site().is_some(), "{:?}", session[0]);
    let visible = browser.js("return document.cookie;", vec![]).await;
    assert!(!visible.as_str().unwrap_or_default().contains(session[0].name()), "document.cookie: {visible}");

    browser.click_and_wait("form[action='/ui/logout'] [type=submit]").await;
    assert!(browser.path().await.starts_with("/ui/login"), "logged out: {}", browser.path().await);
    browser.goto("/ui/orders").await;
    assert!(browser.path().await.starts_with("/ui/login"), "the session is over: {}", browser.path().await);
    browser.close().await;
    console.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_refused_and_then_throttled() {
    let Some(console) = Console::start().await else { return };
    let browser = console.browser().await;
    let mut wrong_message = String::new();
    for attempt in 1..=5 {
        login(&browser, "olga", "не тот пароль совсем").await;
        assert!(browser.path().await.starts_with("/ui/login"), "attempt {attempt} refused");
        wrong_message = browser.text("[data-error=login]").await;
        assert!(!wrong_message.trim().is_empty(), "attempt {attempt} says why");
        assert!(!browser.visible_text().await.contains("не тот пароль"), "the password is not echoed back");
    }
    browser.screenshot("login-wrong-password").await;

    // The sixth attempt is refused even with the right password, and says to wait.
    login(&browser, "olga", PASSWORD).await;
    assert!(browser.path().await.starts_with("/ui/login"), "throttled: {}", browser.path().await);
    let throttled = browser.text("[data-error=login]").await;
    assert_ne!(throttled, wrong_message, "the throttled refusal is not the wrong-password one");
    assert!(throttled.contains("Подождите"), "it says to wait: {throttled}");
    browser.screenshot("login-throttled").await;
    browser.close().await;
    console.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_shows_simulated_orders_filters_by_state_and_finds_by_phone_and_pickup_code() {
    let Some(console) = Console::start().await else { return };
    let env = &console.env;
    let fresh = id_of(&env.create_order(json!({"store": "1184"})).await);
    let working = id_of(&env.create_order(json!({"store": "1184"})).await);
    let pickup = id_of(&env.create_order(json!({"store": "27", "shipmentMethod": "pickup"})).await);
    assert_eq!(env.act(&working, "start-assembly", json!({})).await.0, 202);
    for action in ["start-assembly", "assembled", "ready"] {
        assert_eq!(env.act(&pickup, action, json!({})).await.0, 202, "{action}");
    }
    let (status, issued) = env.act(&pickup, "pickup-code", json!({})).await;
    assert_eq!(status, 202, "{issued}");
    let code = issued["pickupCode"].as_str().expect("the issuing call returns the code").to_string();
    let phone = env.sim_order(&fresh).await["order"]["customer"]["phone"].as_str().expect("a phone").to_string();

    let browser = console.logged_in(OperatorRole::Operator).await;
    for id in [&fresh, &working, &pickup] {
        browser.find(&row(id)).await;
    }
    assert_eq!(browser.count("[data-order]").await, 3);
    assert_eq!(browser.text("[data-count-state=in_work]").await.trim(), "1", "counts per state");
    assert_eq!(browser.text("[data-count-state=ready]").await.trim(), "1", "counts per state");
    browser.screenshot("board").await;
    // Each row leads to its order's page.
    browser.click_and_wait(&format!("{} a[href='/ui/orders/{fresh}']", row(&fresh))).await;
    assert_eq!(browser.path().await, format!("/ui/orders/{fresh}"));
    browser.find("[data-state=created]").await;

    // Filter by state: the chip of a state.
    browser.goto("/ui/orders").await;
    browser.click_and_wait("[data-chip=in_work]").await;
    browser.find(&row(&working)).await;
    assert_eq!(browser.count("[data-order]").await, 1, "only the order in assembly");

    // Search by the phone as typed from a note, in another format than Kuper's.
    browser.goto("/ui/orders").await;
    browser.fill("input[name=q]", &phone_as_typed(&phone)).await;
    browser.submit_from("input[name=q]").await;
    browser.find(&row(&fresh)).await;
    assert_eq!(browser.count("[data-order]").await, 1, "only the order with {phone}");
    browser.screenshot("board-search-phone").await;

    // Search by the pickup code the customer shows.
    browser.fill("input[name=q]", &code).await;
    browser.submit_from("input[name=q]").await;
    browser.find(&row(&pickup)).await;
    assert_eq!(browser.count("[data-order]").await, 1, "only the order with code {code}");
    browser.close().await;
    console.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheme_b_from_assembly_to_hand_over_at_the_pickup_desk() {
    let Some(console) = Console::start().await else { return };
    let env = &console.env;
    let id = id_of(&env.create_order(json!({"store": "27", "shipmentMethod": "pickup"})).await);
    let page = format!("/ui/orders/{id}");

    // The assembler moves the order on from its page.
    let staff = console.logged_in(OperatorRole::Operator).await;
    staff.goto(&page).await;
    staff.find("[data-state=created]").await;
    staff.screenshot("order").await;
    for (action, state) in [("start-assembly", "in_work"), ("assembled", "assembled"), ("ready", "ready")] {
        staff.click_and_wait(&format!("[data-action={action}]")).await;
        staff.find(&format!("[data-state={state}]")).await;
        staff.find("[data-flash]").await;
    }
    // An empty code field: the gateway makes the code up.
    staff.click_and_wait("[data-action=pickup-code]").await;
    staff.find("[data-state=ready]").await;
    env.wait_accepted(
        &id,
        &["order.in_work", "order.assembled", "order.ready_for_delivery", "order.pickup_code_created"],
    )
    .await;
    assert_eq!(env.kuper_sends(&id, "order.paid").await, 200);
    staff.goto(&page).await;
    staff.screenshot("order-ready").await;
    // The customer has the code from Kuper's app; the simulator holds it as Kuper does.
    let code = env.sim_order(&id).await["pickupCode"].as_str().expect("Kuper has the code").to_string();
    let wrong = if code == "000000" { "111111" } else { "000000" };

    // The cashier, on a tablet at the counter.
    let desk = console.browser_on(TABLET).await;
    login(&desk, "denis", PASSWORD).await;
    desk.goto("/ui/pickup").await;
    desk.fill("input[name=ref]", &id).await;
    desk.submit_from("input[name=ref]").await;
    desk.find("input[name=code]").await;
    desk.screenshot("pickup").await;
    assert!(!action_buttons(&desk).await.contains(&"delivered".to_string()), "no hand-over before a valid code");
    desk.fill("input[name=code]", wrong).await;
    desk.submit_from("input[name=code]").await;
    desk.find("[data-verdict=invalid]").await;
    assert!(!action_buttons(&desk).await.contains(&"delivered".to_string()), "no hand-over after a wrong code");
    desk.screenshot("pickup-invalid").await;
    desk.fill("input[name=code]", &code).await;
    desk.submit_from("input[name=code]").await;
    desk.find("[data-verdict=valid]").await;
    desk.screenshot("pickup-valid").await;
    desk.click_and_wait("[data-action=delivered]").await;
    desk.find("[data-flash]").await;
    desk.screenshot("pickup-handed-over").await;

    staff.goto(&page).await;
    staff.find("[data-state=delivered]").await;
    staff.screenshot("order-delivered").await;
    assert_eq!(state_of(env, &id).await, "delivered");
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
    // The timeline says who did what.
    assert!(staff.count("[data-actor='operator:denis']").await > 0, "the cashier's check and hand-over are signed");
    assert!(staff.count("[data-actor='operator:olga']").await > 0, "the assembler's actions are signed");
    desk.close().await;
    staff.close().await;
    console.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_refused_by_the_rules_shows_why() {
    let Some(console) = Console::start().await else { return };
    let env = &console.env;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    let browser = console.logged_in(OperatorRole::Operator).await;
    browser.goto(&format!("/ui/orders/{id}")).await;
    browser.find("[data-action=start-assembly]").await;

    // Meanwhile a colleague cancels the order through the API; this page is now stale.
    let (status, v) = env.act(&id, "cancel", json!({"reason": "out_of_stock", "description": "Нет товара"})).await;
    assert_eq!(status, 202, "{v}");
    browser.click_and_wait("[data-action=start-assembly]").await;
    let refusal = browser.text("[data-refusal]").await;
    assert!(refusal.contains("Начать сборку") && refusal.contains("Отменён"), "the refusal in plain words: {refusal}");
    browser.find("[data-state=canceled]").await;
    browser.screenshot("refusal").await;
    assert_eq!(state_of(env, &id).await, "canceled", "nothing changed");
    browser.close().await;
    console.shutdown().await;
}

/// A notification Kuper refused with 422 (the simulator told to), now a dead letter.
async fn dead_letter(env: &Env, id: &str) -> i64 {
    env.sim_post("/sim/v1/faults", json!({"times": 1, "status": 422})).await;
    assert_eq!(env.act(id, "start-assembly", json!({})).await.0, 202);
    let records = env.wait_outbox("a dead letter", |r| r.iter().any(|x| x["status"] == "dead")).await;
    records.iter().find(|x| x["status"] == "dead").and_then(|x| x["id"].as_i64()).expect("the dead letter's id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_replayed_from_the_outbox_reaches_kuper() {
    let Some(console) = Console::start().await else { return };
    let env = &console.env;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    let dead = dead_letter(env, &id).await;

    let browser = console.logged_in(OperatorRole::Admin).await;
    browser.goto("/ui/outbox").await;
    let record = format!("[data-outbox-id='{dead}']");
    browser.find(&format!("{record}[data-status=dead]")).await;
    browser.screenshot("outbox").await;
    // The record's own page: its attempts, Kuper's answers, and the decision.
    browser.click_and_wait(&format!("{record} a[href='/ui/outbox/{dead}']")).await;
    browser.find("[data-attempt]").await;
    assert!(browser.visible_text().await.contains("422"), "Kuper's answer is shown");
    browser.fill("form[action$='/replay'] textarea[name=reason]", "Kuper починил приём, отправляем снова").await;
    browser.screenshot("outbox-dead-letter").await;
    browser.click_and_wait("form[action$='/replay'] [data-action=replay]").await;
    browser.find("[data-flash]").await;
    browser.screenshot("outbox-replayed").await;
    // Kuper accepts the replayed notification (the simulator records it).
    env.wait_accepted(&id, &["order.in_work"]).await;
    env.wait_outbox("the replayed record sent", |r| r.iter().any(|x| x["id"] == dead && x["status"] == "sent")).await;
    browser.goto(&format!("/ui/outbox/{dead}")).await;
    browser.find(&format!("[data-outbox-id='{dead}'][data-status=sent]")).await;
    browser.close().await;
    console.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_actions_and_a_forged_post_is_refused() {
    let Some(console) = Console::start().await else { return };
    let env = &console.env;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    let held = id_of(&env.create_order(json!({"store": "1184"})).await);
    let dead = dead_letter(env, &held).await;
    let page = format!("/ui/orders/{id}");

    // Where the start-assembly form posts, as an operator's page shows it.
    let staff = console.logged_in(OperatorRole::Operator).await;
    staff.goto(&page).await;
    let (action, mut fields) = action_form(&staff, "[data-action=start-assembly]").await;
    staff.close().await;

    let viewer = console.logged_in(OperatorRole::Viewer).await;
    assert_eq!(action_buttons(&viewer).await, Vec::<String>::new(), "the board has no actions for a viewer");
    viewer.goto(&format!("/ui/outbox/{dead}")).await;
    viewer.find("[data-status=dead]").await;
    assert_eq!(action_buttons(&viewer).await, Vec::<String>::new(), "no replay/skip for a viewer");
    viewer.goto(&page).await;
    viewer.find("[data-state=created]").await;
    assert_eq!(action_buttons(&viewer).await, Vec::<String>::new(), "no order actions for a viewer");
    viewer.screenshot("order-viewer").await;

    // The viewer forges the operator's request with its own valid CSRF token.
    let csrf = csrf_of(&viewer).await;
    fields.insert("csrf".into(), json!(csrf));
    assert_eq!(post_form_from_page(&viewer, &action, &Value::Object(fields)).await, 403);
    assert_eq!(state_of(env, &id).await, "created", "the forged POST changed nothing");
    let replay = viewer.url(&format!("/ui/outbox/{dead}/replay"));
    let forged = json!({"csrf": csrf, "reason": "я просто посмотреть"});
    assert_eq!(post_form_from_page(&viewer, &replay, &forged).await, 403);
    let (_, record) = env.call("GET", &format!("/api/v1/outbox/{dead}"), None, READ_KEY).await;
    assert_eq!(record["status"], "dead", "the forged replay changed nothing: {record}");
    viewer.close().await;
    console.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_the_csrf_token_is_refused() {
    let Some(console) = Console::start().await else { return };
    let env = &console.env;
    let id = id_of(&env.create_order(json!({"store": "1184"})).await);
    let browser = console.logged_in(OperatorRole::Operator).await;
    browser.goto(&format!("/ui/orders/{id}")).await;
    let (action, fields) = action_form(&browser, "[data-action=start-assembly]").await;
    assert!(fields.contains_key("csrf"), "the form carries its token: {fields:?}");

    let mut without = fields.clone();
    without.remove("csrf");
    assert_eq!(post_form_from_page(&browser, &action, &Value::Object(without)).await, 403);
    let mut forged = fields.clone();
    forged.insert("csrf".into(), json!("0".repeat(fields["csrf"].as_str().map_or(64, str::len))));
    assert_eq!(post_form_from_page(&browser, &action, &Value::Object(forged)).await, 403);
    assert_eq!(state_of(env, &id).await, "created", "the refused POSTs changed nothing");

    // The same request with the token goes through: the refusals above were the token's.
    // (A redirect, which a fetch with redirect: 'manual' reports as status 0.)
    let status = post_form_from_page(&browser, &action, &Value::Object(fields)).await;
    assert!(status == 0 || status < 400, "with the token: HTTP {status}");
    assert_eq!(state_of(env, &id).await, "in_work");
    browser.close().await;
    console.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_from_kuper_is_shown_as_text_never_run() {
    let Some(console) = Console::start().await else { return };
    let env = &console.env;
    let attack = "<img src=x onerror=window.__xss=1>";
    let id = "H77700011122";
    let mut created: Value =
        serde_json::from_str(include_str!("../../../fixtures/webhooks/order.created.kuper-delivery.json")).unwrap();
    created["payload"]["originalOrderId"] = json!(id);
    created["payload"]["orderUUID"] = json!("test:xss");
    created["payload"]["comment"] = json!(attack);
    created["payload"]["customer"]["name"] = json!(attack);
    let resp = env.http.post(env.webhook_url()).basic_auth("kuper", Some("secret")).json(&created).send().await;
    assert_eq!(resp.map(|r| r.status().as_u16()).ok(), Some(200));

    let browser = console.logged_in(OperatorRole::Operator).await;
    browser.find(&row(id)).await;
    for path in ["/ui/orders".to_string(), format!("/ui/orders/{id}")] {
        browser.goto(&path).await;
        browser.find("[data-order]").await;
        assert!(browser.visible_text().await.contains(attack), "{path} shows Kuper's text as typed");
        let injected = browser.count("img[src='x'], img[onerror]").await;
        assert_eq!(injected, 0, "{path}: no element was made from Kuper's text");
        let ran = browser.js("return typeof window.__xss;", vec![]).await;
        assert_eq!(ran, json!("undefined"), "{path}: the handler never ran");
    }
    browser.screenshot("order-hostile-text").await;
    browser.close().await;
    console.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_russian_by_default_and_english_by_switch() {
    let Some(console) = Console::start().await else { return };
    let id = id_of(&console.env.create_order(json!({"store": "27", "shipmentMethod": "pickup"})).await);
    let browser = console.logged_in(OperatorRole::Operator).await;
    assert_eq!(lang(&browser).await, "ru");
    assert!(browser.visible_text().await.contains("Заказы"), "{}", browser.visible_text().await);

    // The switch keeps what the board shows: a cashier who searched does not search again.
    let other = id_of(&console.env.create_order(json!({"store": "1184"})).await);
    browser.goto("/ui/orders").await;
    browser.find(&row(&other)).await;
    browser.fill("input[name=q]", &id).await;
    browser.submit_from("input[name=q]").await;
    browser.click_and_wait("[data-lang=en]").await;
    assert_eq!(lang(&browser).await, "en");
    assert!(browser.visible_text().await.contains("Orders"));
    let path = browser.path().await;
    assert!(path.contains(&format!("q={id}")) && path.contains("lang=en"), "{path}");
    assert_eq!(browser.js("return document.querySelector('input[name=q]').value;", vec![]).await, json!(id));
    browser.find(&row(&id)).await;
    assert_eq!(browser.count("[data-order]").await, 1, "still only the order searched for");
    browser.screenshot("board-en").await;
    // The choice is remembered on the next pages.
    browser.goto(&format!("/ui/orders/{id}")).await;
    assert_eq!(lang(&browser).await, "en");
    assert!(browser.visible_text().await.contains("Start assembly"), "actions in English");
    browser.screenshot("order-en").await;
    browser.goto("/ui/health").await;
    assert_eq!(lang(&browser).await, "en");
    assert!(!browser.visible_text().await.contains("Заказы"), "no Russian left on an English page");
    browser.goto("/ui/health?lang=ru").await;
    assert_eq!(lang(&browser).await, "ru");
    browser.close().await;

    // A browser that asks for English gets it before any choice.
    let english = console.browser_on(Screen { languages: "en-US,en", ..DESKTOP }).await;
    english.goto("/ui/login").await;
    assert_eq!(lang(&english).await, "en");
    english.close().await;
    console.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_page_shows_the_backend_the_queue_and_what_needs_attention() {
    let Some(console) = Console::start().await else { return };
    let env = &console.env;
    let flowing = id_of(&env.create_order(json!({"store": "1184"})).await);
    assert_eq!(env.act(&flowing, "start-assembly", json!({})).await.0, 202);
    env.wait_accepted(&flowing, &["order.in_work"]).await;
    let held = id_of(&env.create_order(json!({"store": "1184"})).await);
    dead_letter(env, &held).await;

    let browser = console.logged_in(OperatorRole::Admin).await;
    browser.goto("/ui/health").await;
    let backend = browser.text("[data-value=backend]").await.to_lowercase();
    let expected = if backend_is_postgres() { "postgres" } else { "sqlite" };
    assert!(backend.contains(expected), "the health page names the backend {expected}: {backend}");
    assert_eq!(browser.text("[data-health=queues] [data-destination] a.bad").await.trim(), "1", "one dead letter");
    assert_eq!(browser.text("[data-value=orders_needing_attention]").await.trim(), "1");
    browser.screenshot("health").await;
    browser.close().await;
    console.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_and_desk_fit_a_tablet() {
    let Some(console) = Console::start().await else { return };
    let env = &console.env;
    let mut last = String::new();
    for _ in 0..3 {
        last = id_of(&env.create_order(json!({"store": "27", "shipmentMethod": "pickup"})).await);
    }
    let tablet = console.browser_on(TABLET).await;
    login(&tablet, "olga", PASSWORD).await;
    tablet.find("[data-order]").await;
    let overflow = "document.documentElement.scrollWidth > window.innerWidth";
    assert_eq!(tablet.js(&format!("return {overflow};"), vec![]).await, json!(false), "the board fits 1024 px");
    tablet.screenshot("tablet-board").await;
    tablet.goto(&format!("/ui/pickup?ref={last}")).await;
    tablet.find(".desk-card[data-order]").await;
    assert_eq!(tablet.js(&format!("return {overflow};"), vec![]).await, json!(false), "the desk fits 1024 px");
    tablet.screenshot("tablet-pickup").await;
    tablet.close().await;
    console.shutdown().await;
}

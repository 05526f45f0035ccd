//! The operator console over real loopback HTTP, on the backend the suite runs on (SQLite, or
//! PostgreSQL with `KUPER_BRIDGE_TEST_BACKEND=postgres`): login and logout, sessions and their
//! expiry, CSRF, failed-login throttling, the orders board (filters, search, pages, the live
//! rows, escaping of what Kuper sends), the health page, the security headers, the language
//! switch, and the sandbox's demo operator. No browser here: tests/console_browser.rs drives
//! a real Chromium.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;
use common::*;
use kuper_bridge_storage::{NewOperator, OperatorRole};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const PASSWORD: &str = "counter-password-1";
const PICKUP_FIXTURE: &str = include_str!("../../../fixtures/webhooks/order.created.pickup.json");

struct Page {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn location(&self) -> &str {
        self.header(LOCATION.as_str())
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect()
    }

    /// The `Set-Cookie` line of a cookie, if the answer sets it.
    fn cookie_line(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find(|c| c.starts_with(&format!("{name}=")))
    }

    /// The value of the first `name="csrf"` field.
    fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let start = self.body.find(marker).unwrap_or_else(|| panic!("no csrf field in:\n{}", self.body)) + marker.len();
        self.body[start..].split('"').next().unwrap_or_default().to_string()
    }

    fn count(&self, needle: &str) -> usize {
        self.body.matches(needle).count()
    }
}

/// A browser as far as the console cares: no redirects followed, one session cookie.
struct Browser {
    http: reqwest::Client,
    base: String,
    session: Option<String>,
    extra_cookie: Option<String>,
}

impl Browser {
    fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Self { http, base: base.to_string(), session: None, extra_cookie: None }
    }

    fn cookie_header(&self) -> Option<String> {
        let parts: Vec<String> =
            self.session.iter().map(|t| format!("kb_session={t}")).chain(self.extra_cookie.iter().cloned()).collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Page {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = self.cookie_header() {
            req = req.header("Cookie", c);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        read(req.send().await.expect("GET")).await
    }

    async fn get(&self, path: &str) -> Page {
        self.get_with(path, &[]).await
    }

    /// A form POST as a browser on the console's page sends it (with its Origin).
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.post_from(path, form, Some(&self.base.clone())).await
    }

    async fn post_from(&self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Page {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(c) = self.cookie_header() {
            req = req.header("Cookie", c);
        }
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        read(req.send().await.expect("POST")).await
    }

    /// Logs in; keeps the session cookie when one is set.
    async fn login(&mut self, name: &str, password: &str) -> Page {
        let page = self.post("/ui/login", &[("login", name), ("password", password)]).await;
        if let Some(line) = page.cookie_line("kb_session") {
            let value = line["kb_session=".len()..].split(';').next().unwrap_or_default().to_string();
            self.session = Some(value);
        }
        page
    }
}

async fn read(resp: reqwest::Response) -> Page {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap_or_default();
    Page { status, headers, body }
}

async fn add_operator(env: &Env, name: &str, role: OperatorRole) {
    let store = &env.app.as_ref().expect("app running").store;
    let password_hash = kuper_bridge_app::operators::hash_password(PASSWORD).expect("hash");
    store.create_operator(&NewOperator { name: name.into(), role, password_hash }).await.expect("create operator");
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Kuper's order.created for a pickup order with this id and customer, straight to the webhook.
async fn kuper_creates(env: &Env, id: &str, customer: Value) {
    let mut body: Value = serde_json::from_str(PICKUP_FIXTURE).expect("fixture");
    body["payload"]["originalOrderId"] = json!(id);
    body["payload"]["orderUUID"] = json!(format!("acme:{}", uuid::Uuid::new_v4()));
    body["payload"]["customer"] = customer;
    let (user, pass) = WEBHOOK_USER.split_once(':').expect("user:pass");
    let resp = env.http.post(env.webhook_url()).basic_auth(user, Some(pass)).json(&body).send().await.expect("webhook");
    assert_eq!(resp.status().as_u16(), 200, "order.created {id}: {}", resp.text().await.unwrap_or_default());
}

fn assert_security_headers(page: &Page, what: &str) {
    let csp = page.header("content-security-policy");
    for part in
        ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "form-action 'self'", "base-uri 'none'"]
    {
        assert!(csp.contains(part), "{what}: CSP {csp:?} lacks {part}");
    }
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(page.header("x-frame-options"), "DENY", "{what}");
    assert_eq!(page.header("referrer-policy"), "same-origin", "{what}");
    assert_eq!(page.header("x-content-type-options"), "nosniff", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_session_and_logout() {
    let env = Env::new().await;
    add_operator(&env, "anna", OperatorRole::Desk).await;
    let mut b = Browser::new(&env.app_url);

    // Every page needs a login; a GET is sent to the form and comes back afterwards.
    let root = b.get("/").await;
    assert_eq!((root.status, root.location()), (303, "/ui/orders"));
    let board = b.get("/ui/orders").await;
    assert_eq!((board.status, board.location()), (303, "/ui/login"));
    let health = b.get("/ui/health").await;
    assert_eq!((health.status, health.location()), (303, "/ui/login?next=%2Fui%2Fhealth"));
    let fragment = b.get_with("/ui/orders/rows", &[("X-KB-Fragment", "1")]).await;
    assert_eq!(fragment.status, 401, "the board's script gets 401, not the login page");
    let login_form = b.get("/ui/login?next=%2Fui%2Fhealth").await;
    assert_eq!(login_form.status, 200);
    assert!(login_form.body.contains(r#"name="login""#) && login_form.body.contains(r#"name="password""#));
    assert!(login_form.body.contains(r#"value="/ui/health""#), "next= carried by the form");
    assert!(login_form.body.contains("Вход в пульт оператора"), "Russian by default");
    assert_security_headers(&login_form, "login page");

    // Wrong password and unknown name: one message, no session.
    for (name, password) in [("anna", "wrong-password-1"), ("nobody", PASSWORD), ("", "")] {
        let page = b.login(name, password).await;
        assert_eq!(page.status, 401, "{name}");
        assert!(page.body.contains(r#"data-error="login""#), "{}", page.body);
        assert!(page.body.contains("Неверное имя или пароль."), "{}", page.body);
        assert!(page.cookie_line("kb_session").is_none());
    }
    // A form posted from another site is refused before any password check.
    let foreign =
        b.post_from("/ui/login", &[("login", "anna"), ("password", PASSWORD)], Some("http://evil.example")).await;
    assert_eq!(foreign.status, 403);
    assert!(foreign.cookie_line("kb_session").is_none());

    // The right password: a session cookie with the flags, and the way back to `next`.
    let ok = b.post("/ui/login", &[("login", "anna"), ("password", PASSWORD), ("next", "/ui/health")]).await;
    assert_eq!((ok.status, ok.location()), (303, "/ui/health"), "{}", ok.body);
    let line = ok.cookie_line("kb_session").expect("session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(line.contains(flag), "{line} lacks {flag}");
    }
    assert!(!line.contains("Secure"), "not configured: {line}");
    // An open redirect is not offered: a foreign `next` goes to the board.
    let evil = b.post("/ui/login", &[("login", "anna"), ("password", PASSWORD), ("next", "//evil.example/ui/")]).await;
    assert_eq!((evil.status, evil.location()), (303, "/ui/orders"));
    let page = b.login("anna", PASSWORD).await;
    assert_eq!((page.status, page.location()), (303, "/ui/orders"));
    let token = b.session.clone().expect("logged in");
    assert_eq!(token.len(), 43, "32 bytes, base64url: {token}");

    // Storage keeps the token's SHA-256, never the token.
    let url = &env.config.database.url;
    let rows = text_rows(url, "SELECT token_hash FROM sessions").await;
    let hashes: Vec<String> = rows.into_iter().filter_map(|r| r[0].clone()).collect();
    assert!(hashes.contains(&sha256_hex(&token)), "{hashes:?}");
    assert!(!hashes.contains(&token));
    // Logging in again with a session cookie replaces that session (no fixation, no pile-up).
    assert_eq!(hashes.len(), 3, "three logins so far");
    assert_eq!(b.login("anna", PASSWORD).await.status, 303);
    let renewed = b.session.clone().expect("logged in");
    assert_ne!(renewed, token);
    let rows = text_rows(url, "SELECT token_hash FROM sessions").await;
    let hashes: Vec<String> = rows.into_iter().filter_map(|r| r[0].clone()).collect();
    assert_eq!(hashes.len(), 3, "{hashes:?}");
    assert!(!hashes.contains(&sha256_hex(&token)) && hashes.contains(&sha256_hex(&renewed)));
    let token = renewed;

    let board = b.get("/ui/orders").await;
    assert_eq!(board.status, 200, "{}", board.body);
    assert!(board.body.contains(r#"data-operator="anna""#), "the operator's name in the header");
    assert!(board.body.contains("выдача"), "the role in plain words");
    assert_security_headers(&board, "board");
    assert_eq!(board.header("cache-control"), "no-store");
    let csrf = board.csrf();
    assert_eq!(csrf.len(), 64);

    // Logout needs the session's CSRF token.
    let no_token = b.post("/ui/logout", &[]).await;
    assert_eq!(no_token.status, 403);
    let wrong = b.post("/ui/logout", &[("csrf", &"0".repeat(64))]).await;
    assert_eq!(wrong.status, 403);
    let foreign = b.post_from("/ui/logout", &[("csrf", &csrf)], Some("http://evil.example")).await;
    assert_eq!(foreign.status, 403, "a foreign Origin is refused even with the token");
    assert_eq!(b.get("/ui/orders").await.status, 200, "refused logouts changed nothing");
    let out = b.post("/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!((out.status, out.location()), (303, "/ui/login"));
    assert!(out.cookie_line("kb_session").is_some_and(|c| c.contains("Max-Age=0")), "{:?}", out.set_cookies());
    // The old cookie opens nothing any more.
    assert_eq!(b.get("/ui/orders").await.status, 303);
    let rows = text_rows(url, "SELECT token_hash FROM sessions").await;
    assert!(!rows.iter().any(|r| r[0].as_deref() == Some(sha256_hex(&token).as_str())), "the session row is gone");

    env_stop(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_idle_too_old_or_disabled() {
    let env = Env::new().await;
    add_operator(&env, "boris", OperatorRole::Operator).await;
    let url = env.config.database.url.clone();
    let mut b = Browser::new(&env.app_url);
    let started = Instant::now();
    assert_eq!(b.login("boris", PASSWORD).await.status, 303);
    let hash = sha256_hex(b.session.as_deref().unwrap());
    let seen = |url: String, hash: String| async move {
        let rows = text_rows(
            &url,
            &format!(
                "SELECT CAST(last_seen_at AS TEXT), CAST(created_at AS TEXT) FROM sessions WHERE token_hash = '{hash}'"
            ),
        )
        .await;
        rows.first().map(|r| {
            (
                r[0].as_deref().unwrap_or("0").parse::<i64>().unwrap(),
                r[1].as_deref().unwrap_or("0").parse::<i64>().unwrap(),
            )
        })
    };

    // Requests within a minute of the last write do not write again.
    for _ in 0..3 {
        assert_eq!(b.get("/ui/orders").await.status, 200);
    }
    let (last_seen, created) = seen(url.clone(), hash.clone()).await.expect("session row");
    if started.elapsed() < Duration::from_secs(50) {
        assert_eq!(last_seen, created, "no write per request");
    }
    // Seen two minutes ago (within the hour of idleness): the next request records it.
    let two_min_ago = last_seen - 120_000;
    text_rows(&url, &format!("UPDATE sessions SET last_seen_at = {two_min_ago} WHERE token_hash = '{hash}'")).await;
    assert_eq!(b.get("/ui/orders").await.status, 200);
    let (touched, _) = seen(url.clone(), hash.clone()).await.expect("session row");
    assert!(touched > two_min_ago, "touched: {touched} vs {two_min_ago}");

    // Idle for longer than session_idle_minutes (60): over, and deleted.
    text_rows(&url, &format!("UPDATE sessions SET last_seen_at = last_seen_at - 3700000 WHERE token_hash = '{hash}'"))
        .await;
    assert_eq!(b.get("/ui/orders").await.status, 303);
    assert!(seen(url.clone(), hash.clone()).await.is_none(), "an idle session is deleted when found");

    // Busy but older than session_max_hours (12): over.
    assert_eq!(b.login("boris", PASSWORD).await.status, 303);
    let hash = sha256_hex(b.session.as_deref().unwrap());
    text_rows(&url, &format!("UPDATE sessions SET created_at = created_at - 43300000 WHERE token_hash = '{hash}'"))
        .await;
    assert_eq!(b.get("/ui/orders").await.status, 303);

    // Disabling an account ends its sessions at once, and it cannot log in again.
    assert_eq!(b.login("boris", PASSWORD).await.status, 303);
    assert_eq!(b.get("/ui/orders").await.status, 200);
    env.app.as_ref().unwrap().store.set_operator_disabled("boris", true).await.expect("disable");
    assert_eq!(b.get("/ui/orders").await.status, 303);
    let refused = b.login("boris", PASSWORD).await;
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("Неверное имя или пароль."), "a disabled account gets the same answer");

    // A POST without a live session is refused, not redirected.
    let post = b.post("/ui/logout", &[("csrf", "x")]).await;
    assert_eq!(post.status, 403);
    env_stop(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_per_account_and_per_address() {
    let env = Env::new().await;
    add_operator(&env, "anna", OperatorRole::Viewer).await;
    add_operator(&env, "boris", OperatorRole::Viewer).await;
    let mut b = Browser::new(&env.app_url);
    for _ in 0..5 {
        assert_eq!(b.login("anna", "not-the-password").await.status, 401);
    }
    // The sixth try is refused before the password is looked at, even the right one.
    let throttled = b.login("anna", PASSWORD).await;
    assert_eq!(throttled.status, 429, "{}", throttled.body);
    assert!(throttled.body.contains("Слишком много неудачных попыток входа. Подождите 15 мин"), "{}", throttled.body);
    assert!(throttled.body.contains(r#"data-error="login""#));
    assert!(throttled.header("retry-after").parse::<u64>().is_ok_and(|s| s > 0 && s <= 900));
    assert!(throttled.cookie_line("kb_session").is_none());
    // Another account from the same address is not locked by anna's failures…
    let mut other = Browser::new(&env.app_url);
    assert_eq!(other.login("boris", PASSWORD).await.status, 303);
    // …until the address has 20 failures in the window, whatever the names.
    for i in 0..15 {
        assert_eq!(b.login(&format!("guess{i}"), "not-the-password").await.status, 401, "failure {i}");
    }
    let address = b.login("boris", PASSWORD).await;
    assert_eq!(address.status, 429, "{}", address.body);
    // English on request.
    let en = b.post("/ui/login?lang=en", &[("login", "boris"), ("password", PASSWORD)]).await;
    assert_eq!(en.status, 429);
    assert!(en.body.contains("Too many failed sign-in attempts"), "{}", en.body);
    env_stop(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_lists_filters_searches_and_pages() {
    let env = Env::new().await;
    add_operator(&env, "vera", OperatorRole::Viewer).await;
    let hostile = "<img src=x onerror=alert(1)>Анна";
    kuper_creates(&env, "H70000000001", json!({"name": hostile, "phone": "+79035550011"})).await;
    kuper_creates(&env, "H70000000002", json!({"name": "Пётр Иванов", "phone": "+79161234567"})).await;
    let mut b = Browser::new(&env.app_url);
    assert_eq!(b.login("vera", PASSWORD).await.status, 303);

    let board = b.get("/ui/orders").await;
    assert_eq!(board.status, 200);
    // Newest first, each row linking to the order by Kuper's id.
    let first = board.body.find(r#"data-order="H70000000002""#).expect("second order on the board");
    let second = board.body.find(r#"data-order="H70000000001""#).expect("first order on the board");
    assert!(first < second, "newest first");
    assert!(board.body.contains(r#"href="/ui/orders/H70000000001""#));
    // What Kuper sent is text.
    assert!(!board.body.contains("<img src=x"), "{}", board.body);
    assert!(board.body.contains("&lt;img src=x onerror=alert(1)&gt;Анна"));
    // States in plain words, and counts.
    assert!(board.body.contains(r#"data-state="created""#) && board.body.contains("Новый"));
    assert!(board.body.contains(r#"data-count-state="created">2<"#), "counts per state");

    // Search: by phone in another format, by Kuper id, by part of a name.
    for (q, expected) in
        [("8 (916) 123-45-67", "H70000000002"), ("H70000000001", "H70000000001"), ("иванов", "H70000000002")]
    {
        let path = format!("/ui/orders?q={}", urlencode(q));
        let found = b.get(&path).await;
        assert_eq!(found.status, 200);
        assert_eq!(found.count("data-order="), 1, "{q}: {}", found.body);
        assert!(found.body.contains(&format!(r#"data-order="{expected}""#)), "{q}");
    }
    let nothing = b.get("/ui/orders?q=H00000000000").await;
    assert_eq!(nothing.count("data-order="), 0);
    assert!(nothing.body.contains("Ничего не найдено"));
    // Filters: state, scheme, attention.
    assert_eq!(b.get("/ui/orders?state=created&scheme=pickup").await.count("data-order="), 2);
    assert_eq!(b.get("/ui/orders?state=ready").await.count("data-order="), 0);
    assert_eq!(b.get("/ui/orders?scheme=merchant_delivery").await.count("data-order="), 0);
    let attention = b.get("/ui/orders?attention=1").await;
    assert!(attention.body.contains(r#"name="attention" value="1" checked"#), "the filter shows as set");
    assert_eq!(attention.count("data-order="), 0, "fresh orders need nobody's attention");

    // The live rows: the table body alone, for the same query.
    let rows = b.get_with("/ui/orders/rows?q=H70000000002", &[("X-KB-Fragment", "1")]).await;
    assert_eq!(rows.status, 200);
    assert!(rows.body.starts_with("<tbody"), "{}", rows.body);
    assert!(!rows.body.contains("<html"));
    assert_eq!(rows.count("data-order="), 1);
    assert!(rows.body.contains("data-counts=\"created=1&amp;"), "{}", rows.body);

    // Pages of 50, newest first, with a link to the next.
    for i in 0..50 {
        kuper_creates(&env, &format!("H7100000{i:04}"), json!({"name": "Покупатель", "phone": "+79000000000"})).await;
    }
    let page1 = b.get("/ui/orders").await;
    assert_eq!(page1.count("data-order="), 50);
    assert!(page1.body.contains(r#"data-order="H71000000049""#), "the newest is on page 1");
    let start = page1.body.find("before=").expect("a next-page link") + "before=".len();
    let before: String = page1.body[start..].chars().take_while(|c| c.is_ascii_digit()).collect();
    let page2 = b.get(&format!("/ui/orders?before={before}")).await;
    assert_eq!(page2.count("data-order="), 2, "{}", page2.body);
    assert!(page2.body.contains(r#"data-order="H70000000001""#));
    assert!(!page2.body.contains(r#"data-page="next""#), "no page after the last");
    env_stop(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_headers_languages_and_static_files() {
    let env = Env::new().await;
    add_operator(&env, "gleb", OperatorRole::Admin).await;
    let mut b = Browser::new(&env.app_url);
    assert_eq!(b.login("gleb", PASSWORD).await.status, 303);

    let health = b.get("/ui/health").await;
    assert_eq!(health.status, 200);
    assert!(
        health.body.contains(&format!(r#"data-value="version">{}<"#, env!("CARGO_PKG_VERSION"))),
        "{}",
        health.body
    );
    let backend = if backend_is_postgres() { "PostgreSQL" } else { "SQLite" };
    assert!(health.body.contains(&format!(r#"data-value="backend">{backend}<"#)), "{}", health.body);
    for card in ["kuper", "token", "queues", "webhooks", "attention", "reconciliation", "service"] {
        assert!(health.body.contains(&format!(r#"data-health="{card}""#)), "{card}");
    }
    assert_security_headers(&health, "health");

    // Languages: ?lang= switches and is remembered; Accept-Language is the default.
    let en = b.get("/ui/health?lang=en").await;
    assert!(en.body.contains(r#"<html lang="en""#) && en.body.contains("Health"), "{}", en.body);
    let remembered = en.cookie_line("kb_lang").expect("kb_lang cookie");
    assert!(remembered.starts_with("kb_lang=en;"), "{remembered}");
    b.extra_cookie = Some("kb_lang=en".into());
    assert!(b.get("/ui/orders").await.body.contains("Sign out"));
    b.extra_cookie = None;
    let ru = b.get("/ui/orders").await;
    assert!(ru.body.contains(r#"<html lang="ru""#) && ru.body.contains("Выйти"));
    let accept = b.get_with("/ui/orders", &[("Accept-Language", "en-GB,en;q=0.9")]).await;
    assert!(accept.body.contains(r#"<html lang="en""#));

    // Static files: served to anyone (the login page needs them), cached for a year, under the CSP.
    let css_link = ru.body.split(r#"href="/ui/static/app.css?v="#).nth(1).expect("stylesheet link");
    let version: String = css_link.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    let anon = Browser::new(&env.app_url);
    let css = anon.get(&format!("/ui/static/app.css?v={version}")).await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").starts_with("text/css"));
    assert!(css.header("cache-control").contains("max-age=31536000"));
    let js = anon.get("/ui/static/app.js").await;
    assert!(js.header("content-type").starts_with("text/javascript"));
    assert!(js.body.contains("/ui/orders/rows") || js.body.contains("data-live"));
    assert!(ru.body.contains(r#"<script src="/ui/static/app.js?v="#), "the script is a file");
    assert!(!ru.body.contains("<script>"), "no inline script");

    // Unknown pages and wrong methods answer with pages, not JSON.
    let missing = b.get("/ui/no-such-page").await;
    assert_eq!(missing.status, 404);
    assert!(missing.header("content-type").starts_with("text/html"), "{}", missing.header("content-type"));
    assert!(missing.body.contains("Такой страницы нет."));
    assert_security_headers(&missing, "404 page");
    let method = b.post("/ui/health", &[]).await;
    assert_eq!(method.status, 405);
    assert!(method.header("content-type").starts_with("text/html"));
    // The REST API keeps its JSON errors.
    let api = b.get("/api/v1/nothing").await;
    assert!(api.header("content-type").starts_with("application/json"));
    env_stop(env).await;
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

async fn env_stop(mut env: Env) {
    if let Some(app) = env.app.take() {
        app.stop().await;
    }
    drop_test_database(&env.config.database.url).await;
}

/// `serve --sandbox` creates the demo operator and prints the console's address and login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_prints_the_console_and_its_demo_login() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kuper-bridge.toml"), include_str!("../../../kuper-bridge.toml")).unwrap();
    let free_port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (port, kuper_port) = (free_port(), free_port());
    let database = test_database_url(dir.path()).await;
    let log = dir.path().join("serve.log");
    let out = || std::process::Stdio::from(std::fs::File::create(&log).expect("log file"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kuper-bridge"))
        .args(["serve", "--sandbox", "--sandbox-listen", &format!("127.0.0.1:{kuper_port}")])
        .current_dir(dir.path())
        .env("KUPER_BRIDGE_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("KUPER_BRIDGE_DATABASE__URL", &database)
        .stdout(out())
        .stderr(out())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kuper-bridge serve --sandbox");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let output = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("sandbox console") {
            break text;
        }
        assert!(Instant::now() < deadline, "the sandbox did not print its console line:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(output.contains(&format!("{url}/ui/")), "the console URL:\n{output}");
    assert!(output.contains("demo-sandbox-1") && output.contains("\"demo\""), "the demo login:\n{output}");

    let mut b = Browser::new(&url);
    let login = b.login("demo", "demo-sandbox-1").await;
    assert_eq!((login.status, login.location()), (303, "/ui/orders"), "{}", login.body);
    let board = b.get("/ui/orders").await;
    assert_eq!(board.count("data-order="), 4, "the four demo orders:\n{}", board.body);
    assert!(board.body.contains("оператор"), "the demo operator's role");
    let _ = child.kill().await;
    let _ = child.wait().await;
    drop_test_database(&database).await;
}

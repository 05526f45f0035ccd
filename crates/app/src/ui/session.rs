//! Logging in and out, sessions, roles and CSRF.
//!
//! - The cookie `kb_session` holds 32 random bytes (base64url); the database keeps only their
//!   SHA-256, so a copy of the database opens no session. HttpOnly, SameSite=Strict, Path=/,
//!   Secure when configured.
//! - A session ends after `session_idle` without use or `session_max` after login, when its
//!   account is disabled, or at logout. Its `last_seen_at` is written at most once a minute
//!   (not a database write per request).
//! - The CSRF token of a session is `hex(SHA-256("kb-csrf\0" + token))`: derived, so it needs
//!   no storage, and useless without the cookie it came from. Every state-changing form
//!   carries it as `csrf`; the login form (no session yet) is protected by SameSite and by
//!   refusing a foreign `Origin`.

use super::i18n::{tr, Lang};
use super::{layout, throttle, UiError};
use crate::operators;
use crate::AppState;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use base64::Engine as _;
use kuper_bridge_storage::{Operator, OperatorRole, SessionRecord, StoreError};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;
use std::time::Instant;
use subtle::ConstantTimeEq;

pub const SESSION_COOKIE: &str = "kb_session";
/// Sent by the board's script with its background requests: an ended session then gets a
/// 401 (the script reloads the page) instead of a redirect to the login form.
pub const FRAGMENT_HEADER: &str = "x-kb-fragment";
/// `last_seen_at` is written when it is at least this old.
const TOUCH_EVERY_MS: i64 = 60_000;
const TOKEN_BYTES: usize = 32;

/// What a role may do in the console.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Capability {
    /// Read orders, the outbox and health.
    View,
    /// Verify a pickup code and hand an order over.
    PickupDesk,
    /// Every order action, and handing over without a valid code (with a reason).
    OrderActions,
    /// Replay and skip dead letters.
    DeadLetters,
    /// Manage operator accounts.
    Operators,
}

/// Roles are ordered by reach: viewer < desk < operator < admin.
pub fn allowed(role: OperatorRole, capability: Capability) -> bool {
    match capability {
        Capability::View => true,
        Capability::PickupDesk => role >= OperatorRole::Desk,
        Capability::OrderActions => role >= OperatorRole::Operator,
        Capability::DeadLetters | Capability::Operators => role >= OperatorRole::Admin,
    }
}

/// The logged-in operator of a request. Without a valid session a GET is redirected to the
/// login form (and back afterwards); anything else is refused with 403.
pub struct Viewer {
    pub operator: Operator,
    /// The value every form of this session must send back as `csrf`.
    pub csrf: String,
    pub lang: Lang,
}

impl Viewer {
    pub fn can(&self, capability: Capability) -> bool {
        allowed(self.operator.role, capability)
    }

    pub fn require(&self, capability: Capability) -> Result<(), UiError> {
        if self.can(capability) {
            Ok(())
        } else {
            Err(UiError::forbidden())
        }
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let lang = Lang::from_request_parts(parts, state).await.unwrap_or_default();
        match authenticate(state, &parts.headers).await {
            Ok(Some((record, token))) => Ok(Viewer { operator: record.operator, csrf: csrf_of(&token), lang }),
            Ok(None) => Err(not_logged_in(parts)),
            Err(e) => Err(UiError::from(e).into_response()),
        }
    }
}

fn not_logged_in(parts: &Parts) -> Response {
    if parts.headers.contains_key(FRAGMENT_HEADER) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if parts.method == Method::GET || parts.method == Method::HEAD {
        let here = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/ui/orders");
        let location = match safe_next(Some(here)) {
            Some(next) if next != "/ui/orders" => format!("/ui/login?{}", super::query_string(&[("next", next)])),
            _ => "/ui/login".to_string(),
        };
        return Redirect::to(&location).into_response();
    }
    UiError::new(
        StatusCode::FORBIDDEN,
        "Вы не вошли в пульт или сеанс закончился. Войдите снова и повторите действие.",
        "You are not signed in, or your session has ended. Sign in again and repeat the action.",
    )
    .into_response()
}

/// The session of a request, if its cookie names a live one. Ends (deletes) a session found
/// expired or whose account was disabled.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(SessionRecord, String)>, StoreError> {
    let Some(token) = cookie(headers, SESSION_COOKIE).filter(|t| well_formed(t)) else {
        return Ok(None);
    };
    let hash = token_hash(token);
    let Some(record) = state.store.find_session(&hash).await? else {
        return Ok(None);
    };
    let now = super::now_ms();
    let settings = &state.console.settings;
    if let Some(why) = expired(&record, now, settings.session_idle_ms, settings.session_max_ms) {
        tracing::info!(operator = %record.operator.name, why, "console session ended");
        if let Err(e) = state.store.delete_session(&hash).await {
            tracing::warn!(error = %e, "console: an ended session could not be deleted");
        }
        return Ok(None);
    }
    if now - record.last_seen_at >= TOUCH_EVERY_MS {
        // A failed touch costs the session at most a minute of idle time; the request goes on.
        if let Err(e) = state.store.touch_session(&hash, now).await {
            tracing::warn!(error = %e, "console: session last-seen time not updated");
        }
    }
    Ok(Some((record, token.to_string())))
}

/// Why a session is over, if it is.
pub fn expired(record: &SessionRecord, now: i64, idle_ms: i64, max_ms: i64) -> Option<&'static str> {
    if record.operator.disabled {
        Some("account disabled")
    } else if now.saturating_sub(record.created_at) >= max_ms {
        Some("absolute lifetime reached")
    } else if now.saturating_sub(record.last_seen_at) >= idle_ms {
        Some("idle too long")
    } else {
        None
    }
}

pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What storage keeps of a token.
pub fn token_hash(token: &str) -> String {
    super::hex(&Sha256::digest(token.as_bytes()))
}

pub fn csrf_of(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"kb-csrf\0");
    h.update(token.as_bytes());
    super::hex(&h.finalize())
}

/// Constant-time comparison of a submitted CSRF token with the session's.
pub fn csrf_matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// A token as [`new_token`] makes them: anything else is not looked up.
fn well_formed(token: &str) -> bool {
    token.len() == 43 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Where to go after login: only a console path (`/ui/…`), so a link cannot send an
/// operator elsewhere after they typed their password (no open redirect). Characters a
/// `Location` header cannot carry, or that browsers treat as path separators, are refused.
pub fn safe_next(next: Option<&str>) -> Option<&str> {
    let next = next?;
    let printable = next.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'\\');
    if printable && next.starts_with("/ui/") && next.len() <= 2048 && !next.starts_with("/ui/login") {
        Some(next)
    } else {
        None
    }
}

/// Whether a form POST comes from a page of this server: a present `Origin` must be this
/// host (`Sec-Fetch-Site`, where browsers send it, must not be cross-site).
pub fn same_origin(headers: &HeaderMap) -> bool {
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_some_and(|s| s == "cross-site") {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else { return false };
    let Ok(origin) = origin.to_str() else { return false };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// A form POST whose `csrf` field matches the session cookie's token (403 otherwise).
/// The body is read twice (once for `csrf`, once as `T`), so `T` must not deny unknown
/// fields. Use it together with [`Viewer`], which checks that the session is live.
pub struct CsrfForm<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let refused = || {
            UiError::new(
                StatusCode::FORBIDDEN,
                "Форма устарела или отправлена не со страницы пульта. Обновите страницу и повторите.",
                "The form is out of date or was not sent from a console page. Reload the page and try again.",
            )
            .into_response()
        };
        if !same_origin(request.headers()) {
            return Err(refused());
        }
        let Some(token) = cookie(request.headers(), SESSION_COOKIE).map(str::to_string) else {
            return Err(refused());
        };
        let form_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !form_type {
            return Err(UiError::from_status(StatusCode::UNSUPPORTED_MEDIA_TYPE).into_response());
        }
        let bytes = Bytes::from_request(request, state).await.map_err(IntoResponse::into_response)?;
        #[derive(Deserialize)]
        struct Field {
            csrf: Option<String>,
        }
        let given = serde_urlencoded::from_bytes::<Field>(&bytes).ok().and_then(|f| f.csrf).unwrap_or_default();
        if !csrf_matches(&csrf_of(&token), &given) {
            return Err(refused());
        }
        serde_urlencoded::from_bytes::<T>(&bytes)
            .map(CsrfForm)
            .map_err(|e| UiError::bad_request(e.to_string()).into_response())
    }
}

/// The client's address, when the server recorded it (`server.rs` does for every connection).
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())))
    }
}

/// An argon2id hash of a random password: a login for a name that has no account is checked
/// against it, so the answer takes as long as for a real account with a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    operators::hash_password(&new_token()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "console: the dummy password hash could not be made");
        String::new()
    })
});

pub(crate) fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

/// argon2 takes tens of milliseconds of CPU: off the async workers.
async fn verify(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || operators::verify_password(&password, &phc)).await.unwrap_or(false)
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login_page(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref()).unwrap_or("/ui/orders");
    if let Ok(Some(_)) = authenticate(&state, &headers).await {
        return Redirect::to(next).into_response();
    }
    layout::login_page(lang, next, "", None).into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    lang: Lang,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref()).unwrap_or("/ui/orders").to_string();
    let login = form.login.trim().to_string();
    let page = |status: StatusCode, message: String| {
        (status, layout::login_page(lang, &next, &login, Some(&message))).into_response()
    };
    if !same_origin(&headers) {
        tracing::warn!(
            client = address.map(tracing::field::display),
            "console login refused: the form was posted from another site"
        );
        return page(
            StatusCode::FORBIDDEN,
            tr(lang, "Вход возможен только со страницы пульта.", "Sign in from the console's own page.").into(),
        );
    }
    let throttle = &state.console.throttle;
    if let Err(wait) = throttle.check(&login, address, Instant::now()) {
        tracing::warn!(client = address.map(tracing::field::display), "console login throttled");
        let minutes = throttle::minutes_up(wait);
        let message = match lang {
            Lang::Ru => format!("Слишком много неудачных попыток входа. Подождите {minutes} мин и попробуйте снова."),
            Lang::En => format!("Too many failed sign-in attempts. Wait {minutes} min and try again."),
        };
        let mut response = page(StatusCode::TOO_MANY_REQUESTS, message);
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    let store_error = |e: StoreError| UiError::from(e).into_response();
    let account = if login.is_empty() {
        None
    } else {
        match state.store.find_operator(&login).await {
            Ok(a) => a,
            Err(e) => return store_error(e),
        }
    };
    // The same work whether or not the account exists: no timing tells names apart.
    let password: String = form.password.chars().take(operators::MAX_PASSWORD_BYTES).collect();
    let phc = account.as_ref().map(|a| a.password_hash.clone()).unwrap_or_else(|| DUMMY_HASH.clone());
    let right = verify(password, phc).await;
    let operator = match account {
        Some(a) if right && !a.disabled => a,
        other => {
            throttle.failed(&login, address, Instant::now());
            match &other {
                Some(a) if a.disabled => {
                    tracing::warn!(operator = %a.name, client = address.map(tracing::field::display), "console login refused: account disabled")
                }
                Some(a) => {
                    tracing::warn!(operator = %a.name, client = address.map(tracing::field::display), "console login failed: wrong password")
                }
                // The typed name is not logged: people type passwords into the name field.
                None => tracing::warn!(
                    client = address.map(tracing::field::display),
                    "console login failed: no such account"
                ),
            }
            return page(
                StatusCode::UNAUTHORIZED,
                tr(lang, "Неверное имя или пароль.", "Wrong name or password.").into(),
            );
        }
    };
    throttle.succeeded(&login);
    // A session cookie the browser still had is replaced, and its session ended.
    if let Some(old) = cookie(&headers, SESSION_COOKIE).filter(|t| well_formed(t)) {
        let _ = state.store.delete_session(&token_hash(old)).await;
    }
    let token = new_token();
    let now = super::now_ms();
    if let Err(e) = state.store.create_session(&token_hash(&token), operator.id, now).await {
        return store_error(e);
    }
    tracing::info!(operator = %operator.name, role = %operator.role, client = address.map(tracing::field::display), "console login");
    if state.console.purge_due() {
        let settings = state.console.settings.clone();
        let store = state.store.clone();
        tokio::spawn(async move {
            match store.purge_sessions(now - settings.session_max_ms, now - settings.session_idle_ms).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "console: ended sessions purged"),
                Err(e) => tracing::warn!(error = %e, "console: purging ended sessions failed"),
            }
        });
    }
    let max_age = state.console.settings.session_max_ms / 1000;
    let mut response = Redirect::to(&next).into_response();
    set_session_cookie(&mut response, &token, max_age, state.console.settings.secure_cookie);
    response
}

fn set_session_cookie(response: &mut Response, token: &str, max_age_secs: i64, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

#[derive(Deserialize)]
pub struct Empty {}

/// Ends the session of the cookie (whether or not it is still live) and forgets the cookie.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap, CsrfForm(_): CsrfForm<Empty>) -> Response {
    if let Some(token) = cookie(&headers, SESSION_COOKIE).filter(|t| well_formed(t)) {
        let hash = token_hash(token);
        if let Ok(Some(record)) = state.store.find_session(&hash).await {
            tracing::info!(operator = %record.operator.name, "console logout");
        }
        if let Err(e) = state.store.delete_session(&hash).await {
            return UiError::from(e).into_response();
        }
    }
    let mut response = Redirect::to("/ui/login").into_response();
    set_session_cookie(&mut response, "", 0, state.console.settings.secure_cookie);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_base64url_of_32_bytes() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(well_formed(&a), "{a}");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&a).unwrap();
        assert_eq!(raw.len(), 32);
        assert!(!well_formed("short"));
        assert!(!well_formed(&format!("{}=", &a[..42])));
    }

    #[test]
    fn hash_and_csrf_are_distinct_hex_digests_of_the_token() {
        let t = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let (h, c) = (token_hash(t), csrf_of(t));
        assert_eq!(h.len(), 64);
        assert_eq!(c.len(), 64);
        assert_ne!(h, c);
        assert_eq!(csrf_of(t), c, "derived, so the same every time");
        assert_ne!(csrf_of("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB"), c);
        // SHA-256("kb-csrf\0" + token), independently computed.
        let mut expected = Sha256::new();
        expected.update([b"kb-csrf".as_slice(), &[0u8], t.as_bytes()].concat());
        assert_eq!(c, super::super::hex(&expected.finalize()));
    }

    #[test]
    fn csrf_comparison() {
        let t = csrf_of("x");
        assert!(csrf_matches(&t, &t.clone()));
        assert!(!csrf_matches(&t, ""));
        assert!(!csrf_matches(&t, &t[..63]));
        let mut wrong = t.clone().into_bytes();
        wrong[10] = if wrong[10] == b'0' { b'1' } else { b'0' };
        assert!(!csrf_matches(&t, std::str::from_utf8(&wrong).unwrap()));
        assert!(!csrf_matches(&t, &t.to_uppercase()));
    }

    #[test]
    fn next_only_to_console_paths() {
        assert_eq!(safe_next(Some("/ui/orders?state=ready&q=%D0%B0")), Some("/ui/orders?state=ready&q=%D0%B0"));
        assert_eq!(safe_next(Some("/ui/orders/H123")), Some("/ui/orders/H123"));
        for bad in [
            "https://evil.example/ui/",
            "//evil.example/ui/",
            "/\\evil.example",
            "/ui\\..\\evil",
            "/ui/\\evil.example",
            "/api/v1/orders",
            "/ui",
            "ui/orders",
            "/ui/orders\r\nSet-Cookie: x=1",
            "/ui/ orders",
            "/ui/заказы",
            "/ui/login?next=/ui/orders",
            "",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_next(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(safe_next(None), None);
        assert_eq!(safe_next(Some(&format!("/ui/{}", "a".repeat(3000)))), None);
    }

    #[test]
    fn origin_must_be_this_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h), "no Origin: old browsers and curl; SameSite still applies");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://127.0.0.1:8080"));
        assert!(same_origin(&h), "behind a TLS proxy");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080.evil.example"));
        assert!(!same_origin(&h));
        let mut cross = HeaderMap::new();
        cross.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&cross));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; kb_session=tok; kb_lang=en"));
        assert_eq!(cookie(&h, "kb_session"), Some("tok"));
        assert_eq!(cookie(&h, "kb_lang"), Some("en"));
        assert_eq!(cookie(&h, "kb"), None);
    }

    fn record(created_at: i64, last_seen_at: i64, disabled: bool) -> SessionRecord {
        SessionRecord {
            operator: Operator {
                id: 1,
                name: "anna".into(),
                role: OperatorRole::Desk,
                password_hash: String::new(),
                disabled,
                created_at: 0,
                updated_at: 0,
            },
            created_at,
            last_seen_at,
        }
    }

    #[test]
    fn sessions_end_when_idle_too_old_or_disabled() {
        let (idle, max) = (60 * 60_000, 12 * 3_600_000);
        let now = 100 * 3_600_000;
        assert_eq!(expired(&record(now - 3_600_000, now - 59 * 60_000, false), now, idle, max), None);
        assert!(expired(&record(now - 3_600_000, now - 60 * 60_000, false), now, idle, max).is_some());
        assert!(expired(&record(now - max, now, false), now, idle, max).is_some());
        assert!(expired(&record(now, now, true), now, idle, max).is_some());
    }

    #[test]
    fn roles_reach() {
        use Capability::*;
        let can = |role, caps: &[Capability]| caps.iter().all(|c| allowed(role, *c));
        let cannot = |role, caps: &[Capability]| caps.iter().all(|c| !allowed(role, *c));
        assert!(
            can(OperatorRole::Viewer, &[View])
                && cannot(OperatorRole::Viewer, &[PickupDesk, OrderActions, DeadLetters, Operators])
        );
        assert!(
            can(OperatorRole::Desk, &[View, PickupDesk])
                && cannot(OperatorRole::Desk, &[OrderActions, DeadLetters, Operators])
        );
        assert!(
            can(OperatorRole::Operator, &[View, PickupDesk, OrderActions])
                && cannot(OperatorRole::Operator, &[DeadLetters, Operators])
        );
        assert!(can(OperatorRole::Admin, &[View, PickupDesk, OrderActions, DeadLetters, Operators]));
    }
}

//! The operator console (issue #11): server-rendered pages under `/ui/`, Russian first.
//!
//! Pages are maud templates (checked at compile time, escaping every spliced value), one
//! stylesheet and one small script embedded in the binary; no inline script anywhere, so the
//! Content-Security-Policy can forbid them. Every screen reads and changes orders through the
//! same storage and engine calls as the REST API: the console keeps no rule of its own.
//!
//! Shared pieces for every screen: [`Viewer`] (the logged-in operator, an extractor),
//! [`CsrfForm`] (a POST form with its CSRF token checked), [`page`] (the chrome), [`tr`],
//! [`time`]/[`time_left`] and [`UiError`].

pub mod board;
pub mod clock;
pub(crate) mod counts;
pub mod diagram;
pub mod health;
pub mod i18n;
pub mod layout;
pub mod order;
pub mod outbox;
pub mod pickup;
pub mod session;
pub mod throttle;
pub mod words;

pub use clock::{time, time_left, time_with_left};
pub use i18n::{tr, Lang};
pub use layout::{csrf_field, flash, page, refusal, FlashKind, Nav};
pub use session::{Capability, CsrfForm, Viewer};

use crate::error::ApiError;
use crate::AppState;
use axum::extract::{FromRequestParts, Request};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::Router;
use kuper_bridge_storage::StoreError;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

/// Which database the process serves from (the health page names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    #[default]
    Sqlite,
    Postgres,
}

impl Backend {
    /// From a `database.url` (`sqlite:…` or `postgres(ql)://…`).
    pub fn from_url(url: &str) -> Backend {
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// How the gateway authenticates to Kuper (`kuper.auth`, read into this type: `oauth` or
/// `client-token`); the health page explains the token state with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KuperAuthMode {
    /// OAuth2 client credentials: a token fetched and refreshed by the dispatcher.
    #[default]
    #[serde(rename = "oauth")]
    OAuth,
    /// A fixed client token from the configuration.
    ClientToken,
}

/// The console's settings (`[console]` in the configuration, plus what the health page
/// shows about the process).
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// The display zone of every time on the pages, minutes east of UTC (Moscow: 180).
    pub time_zone_offset_minutes: i32,
    /// A session unused this long ends.
    pub session_idle_ms: i64,
    /// A session ends this long after login, used or not.
    pub session_max_ms: i64,
    /// Adds `Secure` to the session cookie (set it when a TLS proxy serves the console).
    pub secure_cookie: bool,
    pub backend: Backend,
    pub kuper_auth: KuperAuthMode,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            time_zone_offset_minutes: clock::DEFAULT_OFFSET_MINUTES,
            session_idle_ms: 60 * 60_000,
            session_max_ms: 12 * 3_600_000,
            secure_cookie: false,
            backend: Backend::Sqlite,
            kuper_auth: KuperAuthMode::OAuth,
        }
    }
}

/// The console's part of [`AppState`]: its settings and the per-process memory it needs
/// (login throttling). Sessions themselves are in the database.
pub struct Console {
    pub settings: ConsoleSettings,
    pub(crate) throttle: throttle::LoginThrottle,
    pub(crate) counts: std::sync::Arc<counts::StateCounts>,
    last_purge: Mutex<Option<Instant>>,
}

impl Console {
    pub fn new(settings: ConsoleSettings) -> Self {
        if !clock::set_display_offset(settings.time_zone_offset_minutes) {
            tracing::warn!(
                minutes = settings.time_zone_offset_minutes,
                "console: time zone offset outside UTC-12..UTC+14; showing Moscow time"
            );
        }
        // The dummy hash a login for an unknown name is checked against: made now, so the
        // first such login does not take twice as long as a real one.
        session::warm_up();
        Self {
            settings,
            throttle: throttle::LoginThrottle::default(),
            counts: Default::default(),
            last_purge: Mutex::new(None),
        }
    }

    /// Whether expired sessions should be purged now (at most every 10 minutes per process).
    pub(crate) fn purge_due(&self) -> bool {
        let mut last = self.last_purge.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(600)) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

impl Default for Console {
    fn default() -> Self {
        Self::new(ConsoleSettings::default())
    }
}

/// Every console route, with full paths (merged into the app's router, not nested).
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/orders") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/orders") }))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/orders", get(board::board))
        .route("/ui/orders/rows", get(board::rows))
        .route("/ui/health", get(health::health))
        .route("/ui/static/app.css", get(|| async { asset(&CSS, "text/css; charset=utf-8") }))
        .route("/ui/static/screens.css", get(|| async { asset(&SCREENS_CSS, "text/css; charset=utf-8") }))
        .route("/ui/static/app.js", get(|| async { asset(&JS, "text/javascript; charset=utf-8") }))
        .route("/ui/{*rest}", any(|| async { UiError::not_found() }))
        .merge(order::routes())
        .merge(diagram::routes())
        .merge(pickup::routes())
        .merge(outbox::routes())
        // Forms are small; the configured limit still bounds them.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(state.body_limit))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(ui_layer))
}

/// An embedded static file and the version its URL carries (so it can be cached for a year).
pub struct Asset {
    pub body: &'static str,
    pub version: String,
}

impl Asset {
    fn new(body: &'static str) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        Self { body, version: hex(&digest[..5]) }
    }
}

pub static CSS: LazyLock<Asset> = LazyLock::new(|| Asset::new(include_str!("static/app.css")));
pub static SCREENS_CSS: LazyLock<Asset> = LazyLock::new(|| Asset::new(include_str!("static/screens.css")));
pub static JS: LazyLock<Asset> = LazyLock::new(|| Asset::new(include_str!("static/app.js")));

fn asset(asset: &Asset, content_type: &'static str) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page links `?v=<digest>`: a changed file gets a new URL, so a year is safe.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    response
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Unix milliseconds now (the storage clock).
pub fn now_ms() -> i64 {
    kuper_bridge_storage::now_ms()
}

/// Percent-encodes one URL path segment (an order reference from Kuper is untrusted text).
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string from key/value pairs, encoded (`a=1&q=%D0%B0`); empty values are left out.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs.iter().copied().filter(|(_, v)| !v.is_empty()).collect();
    serde_urlencoded::to_string(kept).unwrap_or_default()
}

pub const LANG_COOKIE: &str = "kb_lang";

/// The request's language: `?lang=` first, then the `kb_lang` cookie, then `Accept-Language`,
/// else Russian. Also says whether `?lang=` asked for it (then it is remembered).
pub fn negotiate(uri: &axum::http::Uri, headers: &HeaderMap) -> (Lang, bool) {
    if let Some(lang) = uri
        .query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "lang").and_then(|(_, v)| Lang::parse(&v)))
    {
        return (lang, true);
    }
    if let Some(lang) = session::cookie(headers, LANG_COOKIE).and_then(Lang::parse) {
        return (lang, false);
    }
    let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
    (Lang::from_accept_language(accept).unwrap_or(Lang::Ru), false)
}

/// `Lang` as an extractor: what the console's middleware decided for this request.
impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(match parts.extensions.get::<Lang>() {
            Some(lang) => *lang,
            None => negotiate(&parts.uri, &parts.headers).0,
        })
    }
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Every /ui response: the language decided once, security headers, no caching of pages, and
/// errors as HTML pages (axum's own rejections are plain text; the app's outer layer would
/// otherwise turn them into JSON).
async fn ui_layer(mut request: Request, next: Next) -> Response {
    let (lang, chosen) = negotiate(request.uri(), request.headers());
    request.extensions_mut().insert(lang);
    let mut response = next.run(request).await;
    let status = response.status();
    if let Some(error) = response.extensions_mut().remove::<UiError>() {
        response = error.render(lang);
    } else if (status.is_client_error() || status.is_server_error()) && !is_html(response.headers()) {
        let (parts, body) = response.into_parts();
        let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
        let detail = String::from_utf8_lossy(&text).trim().to_string();
        let mut error = UiError::from_status(status);
        if !detail.is_empty() {
            error.detail = Some(detail);
        }
        response = error.render(lang);
        // Keep what the handler meant for the client (Allow on 405, Retry-After…).
        for (name, value) in parts.headers.iter() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                response.headers_mut().insert(name.clone(), value.clone());
            }
        }
    }
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if chosen {
        let cookie = format!("{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax", lang.code());
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

fn is_html(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/html"))
}

/// A refusal or failure shown to the operator as a page, in plain words. The message is
/// rendered in the request's language by the console's middleware.
#[derive(Debug, Clone)]
pub struct UiError {
    pub status: StatusCode,
    ru: Cow<'static, str>,
    en: Cow<'static, str>,
    /// A further explanation shown as is (the engine's message of a refused action).
    pub detail: Option<String>,
}

impl UiError {
    pub fn new(status: StatusCode, ru: impl Into<Cow<'static, str>>, en: impl Into<Cow<'static, str>>) -> Self {
        Self { status, ru: ru.into(), en: en.into(), detail: None }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The operator's role does not allow this.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Это действие недоступно вашей учётной записи. Обратитесь к администратору.",
            "Your account may not do this. Ask an administrator.",
        )
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Такой страницы нет.", "There is no such page.")
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::from_status(StatusCode::BAD_REQUEST).with_detail(detail)
    }

    /// The message in `lang` (the detail follows it on the page).
    pub fn message(&self, lang: Lang) -> &str {
        match lang {
            Lang::Ru => &self.ru,
            Lang::En => &self.en,
        }
    }

    /// A plain-words message for a status, when nothing more specific is known.
    pub fn from_status(status: StatusCode) -> Self {
        let (ru, en) = match status.as_u16() {
            400 | 422 => (
                "Запрос не понят: проверьте введённые данные.",
                "The request was not understood: check what you entered.",
            ),
            401 | 403 => ("Доступ запрещён.", "Access denied."),
            404 => ("Не найдено.", "Not found."),
            405 => ("Так эту страницу открыть нельзя.", "This page cannot be opened this way."),
            409 => ("Это действие сейчас невозможно.", "This action is not possible now."),
            413 => ("Слишком большой запрос.", "The request is too large."),
            429 => ("Слишком много попыток. Подождите и попробуйте снова.", "Too many attempts. Wait and try again."),
            503 => (
                "База данных или сервис сейчас недоступны. Попробуйте через минуту.",
                "The database or the service is unavailable. Try again in a minute.",
            ),
            _ => (
                "Что-то пошло не так. Попробуйте ещё раз или сообщите администратору.",
                "Something went wrong. Try again or tell an administrator.",
            ),
        };
        Self::new(status, ru, en)
    }

    fn render(&self, lang: Lang) -> Response {
        let markup = layout::error_page(lang, self);
        let mut response = (self.status, markup).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        response
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        // Rendered in Russian here; the middleware renders it again in the request's language.
        let mut response = self.render(Lang::Ru);
        response.extensions_mut().insert(self);
        response
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        let status = e.status;
        let mut error = Self::from_status(status);
        if status == StatusCode::NOT_FOUND {
            error = Self::new(status, "Не найдено.", "Not found.");
        }
        // The engine's own explanation (refused transitions, validation) is the useful part;
        // storage outages keep only the plain message.
        if status != StatusCode::SERVICE_UNAVAILABLE && status != StatusCode::INTERNAL_SERVER_ERROR {
            error.detail = Some(e.message);
        }
        error
    }
}

impl From<StoreError> for UiError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path_segment("H90011223344"), "H90011223344");
        assert_eq!(path_segment("acme:0b6c/x?y#z"), "acme%3A0b6c%2Fx%3Fy%23z");
        assert_eq!(path_segment("заказ"), "%D0%B7%D0%B0%D0%BA%D0%B0%D0%B7");
        assert_eq!(path_segment("../x"), "..%2Fx");
    }

    #[test]
    fn language_from_query_then_cookie_then_header() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("en-US,en;q=0.9"));
        let uri: axum::http::Uri = "/ui/orders".parse().unwrap();
        assert_eq!(negotiate(&uri, &headers), (Lang::En, false));
        headers.insert(header::COOKIE, HeaderValue::from_static("kb_session=x; kb_lang=ru"));
        assert_eq!(negotiate(&uri, &headers), (Lang::Ru, false));
        let uri: axum::http::Uri = "/ui/orders?q=1&lang=en".parse().unwrap();
        assert_eq!(negotiate(&uri, &headers), (Lang::En, true));
        let uri: axum::http::Uri = "/ui/orders?lang=de".parse().unwrap();
        assert_eq!(negotiate(&uri, &headers), (Lang::Ru, false));
        assert_eq!(negotiate(&uri, &HeaderMap::new()), (Lang::Ru, false));
    }

    #[test]
    fn query_strings_leave_out_empty_values() {
        assert_eq!(query_string(&[("state", "ready"), ("q", ""), ("store", "a b")]), "state=ready&store=a+b");
    }
}

//! A real headless Chromium for the console's end-to-end tests, driven through chromedriver
//! (WebDriver over loopback HTTP), against the real gateway and simulator of `common`.
//!
//! One chromedriver serves the whole test binary while any test uses it (it is killed when the
//! last test lets go of it); every test opens its own WebDriver session, which is its own
//! Chromium with its own profile, so tests running in parallel share no cookies.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them). Without them the tests say so and pass on a developer's machine, and fail in CI.
#![allow(dead_code)]

use crate::common::Env;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use kuper_bridge_storage::{NewOperator, OperatorRole};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How long a page may take to show what a test waits for. Only a bound on a wait: a test
/// never asserts how fast anything was.
const PATIENCE: Duration = Duration::from_secs(15);
/// The password of every test operator (the console refuses passwords under 10 characters).
pub const PASSWORD: &str = "пароль-кассы-2026";

/// The browser and its driver, found on this machine.
#[derive(Clone, Debug)]
pub struct Tools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The first of `candidates` that exists, else `name` found on PATH.
fn find_program(env_var: &str, candidates: &[&str], name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var).map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    candidates.iter().map(PathBuf::from).find(|p| p.is_file()).or_else(|| {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
    })
}

/// Chromium and chromedriver, or `None` (after saying why) when this machine lacks them.
/// In CI (`CI` set) a missing browser fails the test: there the suite is mandatory.
pub fn tools() -> Option<Tools> {
    let chromium = find_program("KUPER_BRIDGE_CHROMIUM", &["/usr/bin/chromium"], "chromium");
    let chromedriver = find_program("KUPER_BRIDGE_CHROMEDRIVER", &["/usr/bin/chromedriver"], "chromedriver");
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Some(Tools { chromium, chromedriver }),
        (chromium, driver) => {
            let missing = [("chromium", chromium.is_none()), ("chromedriver", driver.is_none())]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(" and ");
            let message = format!(
                "console browser tests need {missing} (Debian: apt-get install chromium chromium-driver; \
                 or set KUPER_BRIDGE_CHROMIUM / KUPER_BRIDGE_CHROMEDRIVER)"
            );
            assert!(!in_ci(), "{message}: in CI these tests are mandatory");
            eprintln!("SKIPPED: {message}");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// chromedriver

/// A running chromedriver, killed when dropped.
pub struct Driver {
    child: Mutex<Child>,
    pub port: u16,
    pub tools: Tools,
    /// TMPDIR of chromedriver and its Chromiums (profiles, shared memory files): Chromium
    /// leaves some behind, and they go with this directory.
    _tmp: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The binary's chromedriver while some test holds it.
static DRIVER: Mutex<Weak<Driver>> = Mutex::new(Weak::new());

/// The chromedriver of this test binary, started when no test holds one.
pub fn shared_driver(tools: &Tools) -> Arc<Driver> {
    let mut slot = DRIVER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(driver) = slot.upgrade() {
        return driver;
    }
    let driver = Arc::new(start_driver(tools));
    *slot = Arc::downgrade(&driver);
    driver
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

fn start_driver(tools: &Tools) -> Driver {
    let mut last_error = String::new();
    // The free port may be taken between our look and chromedriver's bind: try a few.
    for _ in 0..3 {
        let port = free_port();
        let tmp = tempfile::tempdir().expect("a temporary directory for Chromium");
        let mut child = match Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!("cannot run {}: {e}", tools.chromedriver.display()),
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last_error = format!("chromedriver exited with {status}");
                break;
            }
            if let Some((200, body)) = raw_http(port, "GET", "/status") {
                if body.contains("\"ready\":true") || body.contains("\"ready\": true") {
                    return Driver { child: Mutex::new(child), port, tools: tools.clone(), _tmp: tmp };
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                last_error = format!("chromedriver on port {port} did not answer /status");
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("could not start chromedriver: {last_error}");
}

/// One HTTP/1.1 request to chromedriver without an async runtime (used from `Drop`, where the
/// test's runtime may already be gone). Returns the status and the body.
fn raw_http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    // chromedriver keeps the connection open whatever we ask: read the head, then exactly
    // Content-Length bytes, never up to EOF.
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

// ---------------------------------------------------------------------------------------------
// A browser session

/// How a session's browser looks to the console.
#[derive(Clone, Copy, Debug)]
pub struct Screen {
    pub width: u32,
    pub height: u32,
    /// The browser's `Accept-Language`.
    pub languages: &'static str,
}

pub const DESKTOP: Screen = Screen { width: 1280, height: 900, languages: "ru-RU,ru" };
/// A tablet at the pickup counter, landscape.
pub const TABLET: Screen = Screen { width: 1024, height: 768, languages: "ru-RU,ru" };

/// One Chromium (its own profile, so its own cookies), closed when the test ends, or when it
/// is dropped on a failing test's unwind.
pub struct Browser {
    pub client: Client,
    session: Option<String>,
    driver: Arc<Driver>,
    pub base: String,
    pub screen: Screen,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            let _ = raw_http(self.driver.port, "DELETE", &format!("/session/{id}"));
        }
    }
}

impl Browser {
    pub async fn open(driver: Arc<Driver>, base: &str, screen: Screen) -> Self {
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": driver.tools.chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    format!("--window-size={},{}", screen.width, screen.height),
                    format!("--lang={}", screen.languages.split(',').next().unwrap_or("ru-RU")),
                ],
                "prefs": {"intl.accept_languages": screen.languages},
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .unwrap_or_else(|e| panic!("chromedriver could not open Chromium: {e}"));
        let session = client.session_id().await.ok().flatten();
        let browser = Self { client, session, driver, base: base.trim_end_matches('/').to_string(), screen };
        browser.size_viewport(screen.height).await;
        browser
    }

    /// Makes the page area (not the window) `width` × `height`: screenshots show exactly what
    /// a screen of that size shows.
    async fn size_viewport(&self, height: u32) {
        let width = self.screen.width;
        let _ = self.client.set_window_size(width, height).await;
        let inner = self.js("return [window.innerWidth, window.innerHeight];", vec![]).await;
        let (w, h) =
            (inner[0].as_u64().unwrap_or(width as u64) as u32, inner[1].as_u64().unwrap_or(height as u64) as u32);
        if (w, h) != (width, height) {
            let _ =
                self.client.set_window_size(width + width.saturating_sub(w), height + height.saturating_sub(h)).await;
        }
    }

    /// Ends the session (its Chromium exits).
    pub async fn close(mut self) {
        if self.session.take().is_some() {
            let _ = self.client.clone().close().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Opens a page of the gateway and waits until it has loaded.
    pub async fn goto(&self, path: &str) {
        self.client.goto(&self.url(path)).await.unwrap_or_else(|e| panic!("open {path}: {e}"));
        self.wait_loaded(path).await;
    }

    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current URL");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Runs `script` in the page (`return …` gives a value back).
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs an async `script`; it must call `arguments[arguments.length - 1](value)`.
    pub async fn js_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute_async(script, args).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until the JavaScript expression `condition` is true in the page.
    pub async fn wait_js(&self, what: &str, condition: &str) {
        let script = format!("return !!({condition});");
        let deadline = Instant::now() + PATIENCE;
        loop {
            // A page in the middle of navigating may refuse a script: ask again.
            if let Ok(Value::Bool(true)) = self.client.execute(&script, vec![]).await {
                return;
            }
            if Instant::now() > deadline {
                let page = self.visible_text().await;
                panic!("waited in vain for {what} ({condition}) on {}:\n{page}", self.path().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_loaded(&self, what: &str) {
        self.wait_js(&format!("{what} to load"), "document.readyState === 'complete'").await;
    }

    /// Waits until an element matches `css`, and returns the first.
    pub async fn find(&self, css: &str) -> Element {
        self.wait_js(&format!("an element {css}"), &format!("document.querySelector({})", js_str(css))).await;
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find {css}: {e}"))
    }

    /// Every element matching `css` now (no waiting).
    pub async fn all(&self, css: &str) -> Vec<Element> {
        self.client.find_all(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find all {css}: {e}"))
    }

    pub async fn count(&self, css: &str) -> usize {
        let n = self.js(&format!("return document.querySelectorAll({}).length;", js_str(css)), vec![]).await;
        n.as_u64().unwrap_or(0) as usize
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }

    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.find(css).await.attr(name).await.unwrap_or_else(|e| panic!("attribute {name} of {css}: {e}"))
    }

    /// What a person sees on the page (the body's rendered text).
    pub async fn visible_text(&self) -> String {
        match self.client.execute("return document.body ? document.body.innerText : '';", vec![]).await {
            Ok(Value::String(s)) => s,
            _ => String::new(),
        }
    }

    /// Types `value` into the field `css` (after clearing it).
    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap_or_else(|e| panic!("clear {css}: {e}"));
        field.send_keys(value).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Marks the current document, so that a new one can be told from it.
    async fn mark_document(&self) {
        self.js("window.__kbOldPage = true;", vec![]).await;
    }

    async fn wait_new_document(&self, what: &str) {
        self.wait_js(what, "window.__kbOldPage === undefined && document.readyState === 'complete'").await;
    }

    /// Clicks `css` (a link or a submit button) and waits for the page it leads to.
    pub async fn click_and_wait(&self, css: &str) {
        let element = self.find(css).await;
        self.mark_document().await;
        element.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
        self.wait_new_document(&format!("the page after clicking {css}")).await;
    }

    /// Presses Enter in the field `css` (submitting its form) and waits for the next page.
    pub async fn submit_from(&self, css: &str) {
        let field = self.find(css).await;
        self.mark_document().await;
        field.send_keys("\u{E007}").await.unwrap_or_else(|e| panic!("press Enter in {css}: {e}"));
        self.wait_new_document(&format!("the page after submitting {css}")).await;
    }

    /// The page as a PNG under `target/console-screenshots/NAME.png`, the whole page high (the
    /// window grows for the shot and shrinks back).
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let height = self
            .js("return Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0);", vec![])
            .await
            .as_u64()
            .unwrap_or(0) as u32;
        let grow = height > self.screen.height;
        if grow {
            self.size_viewport(height.min(6000)).await;
        }
        let png = self.client.screenshot().await.unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        if grow {
            self.size_viewport(self.screen.height).await;
        }
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        assert!(png.starts_with(b"\x89PNG"), "the screenshot {name} is a PNG");
        path
    }
}

/// A JavaScript string literal of `s`.
pub fn js_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// `target/console-screenshots`: under `CARGO_TARGET_DIR` when set, else the workspace's target.
pub fn screenshot_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    target.join("console-screenshots")
}

// ---------------------------------------------------------------------------------------------
// The console under test

/// The test operator of each role. Names are plain logins a store would give.
pub fn login_of(role: OperatorRole) -> &'static str {
    match role {
        OperatorRole::Viewer => "vera",
        OperatorRole::Desk => "denis",
        OperatorRole::Operator => "olga",
        OperatorRole::Admin => "anna",
    }
}

/// argon2 is deliberately slow: one hash of [`PASSWORD`] serves every account of the binary.
fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| kuper_bridge_app::operators::hash_password(PASSWORD).expect("hash the test password")).clone()
}

/// The gateway and simulator of `common`, an operator of every role, and chromedriver.
pub struct Console {
    pub env: Env,
    pub driver: Arc<Driver>,
}

impl Console {
    /// `None` when this machine has no Chromium (outside CI only; the reason is printed).
    pub async fn start() -> Option<Self> {
        let tools = tools()?;
        let driver = shared_driver(&tools);
        let env = Env::new().await;
        let store = &env.app.as_ref().expect("the gateway runs").store;
        for role in OperatorRole::ALL {
            let new = NewOperator { name: login_of(role).into(), role, password_hash: password_hash() };
            store.create_operator(&new).await.unwrap_or_else(|e| panic!("create operator {role}: {e}"));
        }
        Some(Self { env, driver })
    }

    pub async fn browser(&self) -> Browser {
        self.browser_on(DESKTOP).await
    }

    pub async fn browser_on(&self, screen: Screen) -> Browser {
        Browser::open(self.driver.clone(), &self.env.app_url, screen).await
    }

    /// A desktop browser logged in as the operator of `role`, on the orders board.
    pub async fn logged_in(&self, role: OperatorRole) -> Browser {
        let browser = self.browser().await;
        login(&browser, login_of(role), PASSWORD).await;
        assert!(browser.path().await.starts_with("/ui/orders"), "after logging in {role} is on the board");
        browser
    }

    pub async fn shutdown(self) {
        self.env.shutdown().await;
    }
}

/// Fills and sends the login form.
pub async fn login(browser: &Browser, name: &str, password: &str) {
    if !browser.path().await.starts_with("/ui/login") {
        browser.goto("/ui/login").await;
    }
    browser.fill("input[name=login]", name).await;
    browser.fill("input[name=password]", password).await;
    browser.submit_from("input[name=password]").await;
}

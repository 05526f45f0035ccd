//! Configuration: one TOML file plus `KUPER_BRIDGE_<SECTION>__<KEY>` environment overrides
//! (interfaces.md). `check()` explains every problem at once instead of failing on the first.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use kuper_bridge_app::ui::KuperAuthMode;
use kuper_bridge_app::{ApiKey, Scope, WebhookAuth};
use kuper_bridge_dispatcher::{DeadlineSweepConfig, DispatcherConfig, KuperAuth, ReconcileConfig, RetryPolicy};
use kuper_bridge_domain::policy::DEFAULT_CANCEL_REASONS;
use kuper_bridge_domain::{CancelReason, DeadlineSettings, Delivery, Policy, StoreProfile};
use kuper_bridge_wire::NotificationFormat;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    pub database: Database,
    pub kuper: Kuper,
    pub webhook_auth: WebhookAuthConfig,
    pub stores: Vec<StoreConfig>,
    pub defaults: Defaults,
    pub api_keys: Vec<ApiKeyConfig>,
    pub dispatcher: Dispatcher,
    pub deadlines: Deadlines,
    pub pickup: Pickup,
    pub audit: Audit,
    pub log: Log,
    /// Merchant systems that receive every Kuper webhook and every change (forwarding).
    pub subscribers: Vec<SubscriberConfig>,
    /// Asked "can you take this order?" before `order.created` is answered.
    pub acceptance_hook: Option<AcceptanceHookConfig>,
    /// The pull-API safety net (protocol.md §11); off by default.
    pub reconciliation: Reconciliation,
    /// The operator console under /ui/ (issue #11).
    pub console: Console,
}

/// Environment values are typed by their look (`12345678` is a number, `true` a boolean);
/// ids and secrets are strings whatever they look like. The error never echoes the value.
mod lenient {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }

    impl Scalar {
        fn into_string(self) -> String {
            match self {
                Scalar::S(s) => s,
                Scalar::I(i) => i.to_string(),
                Scalar::U(u) => u.to_string(),
                Scalar::F(f) => f.to_string(),
                Scalar::B(b) => b.to_string(),
            }
        }
    }

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Scalar::deserialize(d).map(Scalar::into_string).map_err(|_| serde::de::Error::custom("expected a string"))
    }

    pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            Many(Vec<Scalar>),
            One(Scalar),
        }
        match OneOrMany::deserialize(d).map_err(|_| serde::de::Error::custom("expected a list of strings"))? {
            OneOrMany::Many(v) => Ok(v.into_iter().map(Scalar::into_string).collect()),
            OneOrMany::One(s) => Ok(vec![s.into_string()]),
        }
    }
}

/// A key whose value is one of a few names (`server.role`, `kuper.auth`, …), read into `T`, an
/// enum that names its variants with serde (`rename_all`). Only a name is taken: figment would
/// also hand an enum a number as its variant's index (`role = 1` read as `api`). An unknown name
/// is serde's `UnknownVariant`, which [`plain`] words with the key's allowed names; the key then
/// keeps its default, so the other checks still run.
///
/// In code it is built from the enum (`Choice(Role::Api)`) or parsed (`"api".parse()`, which
/// words an unknown name as `config check` does); there is no conversion that could panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Choice<T>(pub T);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Choice<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        T::deserialize(serde::de::IntoDeserializer::<D::Error>::into_deserializer(name.as_str())).map(Choice)
    }
}

impl<T: serde::de::DeserializeOwned> std::str::FromStr for Choice<T> {
    type Err = String;

    /// `Err` words an unknown name like `config check` does: `"x" — expected "a" or "b"`.
    fn from_str(name: &str) -> Result<Self, String> {
        T::deserialize(serde::de::IntoDeserializer::<NameError>::into_deserializer(name)).map(Choice).map_err(|e| e.0)
    }
}

/// The name itself (`client-token`), as the configuration spells it.
impl<T: Serialize> std::fmt::Display for Choice<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_value(&self.0) {
            Ok(serde_json::Value::String(name)) => f.write_str(&name),
            // Every choice is a plain name; anything else prints as its JSON rather than
            // failing the formatter (which would panic in `format!`).
            Ok(other) => write!(f, "{other}"),
            Err(_) => f.write_str("?"),
        }
    }
}

/// `"a", "b" or "c"`.
fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

/// [`Choice`]'s `FromStr` error: the message `config check` would give.
#[derive(Debug)]
struct NameError(String);

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NameError {}

impl serde::de::Error for NameError {
    fn custom<M: std::fmt::Display>(message: M) -> Self {
        NameError(message.to_string())
    }

    fn unknown_variant(name: &str, expected: &'static [&'static str]) -> Self {
        NameError(format!("{name:?} — expected {}", one_of(expected)))
    }
}

/// `server.role`: what one process runs (several processes may share a database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Webhooks, REST API and the notification dispatcher.
    #[default]
    All,
    /// Webhooks and REST API only; never calls Kuper.
    Api,
    /// The dispatcher plus /healthz, /readyz and /metrics.
    Worker,
}

/// `acceptance_hook.on_error`: the verdict when the hook times out, fails or answers something
/// malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    #[default]
    Accept,
    Cancel,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (journald, log shippers).
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    pub listen: String,
    pub webhook_path: String,
    /// Largest accepted request body, bytes (protocol.md §4: 1 MiB).
    pub body_limit: usize,
    /// `all` (default): webhooks, REST API and the notification dispatcher; `api`: webhooks
    /// and REST API only; `worker`: the dispatcher plus /healthz, /readyz and /metrics.
    pub role: Choice<Role>,
    /// A client that has not sent a whole request head this long after connecting (or after
    /// the head's first byte, on a kept-alive connection) is disconnected.
    pub header_read_timeout_ms: u64,
    /// A kept-alive connection with no new request this long after its last response is closed.
    pub keep_alive_idle_ms: u64,
    /// Open connections at most; more wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// `[server.tls]`: serve HTTPS directly; absent = plain HTTP (behind a TLS proxy).
    pub tls: Option<ServerTls>,
}

/// `[server.tls]`: PEM files read at start and again on SIGHUP (a renewed certificate needs no
/// restart).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// The server's certificate, then its intermediates ("fullchain.pem").
    pub cert_file: PathBuf,
    /// The certificate's private key, unencrypted PEM.
    pub key_file: PathBuf,
}

impl Server {
    pub fn runs_dispatcher(&self) -> bool {
        self.role.0 != Role::Api
    }

    pub fn serves_api(&self) -> bool {
        self.role.0 != Role::Worker
    }

    pub fn limits(&self) -> kuper_bridge_app::ServeLimits {
        kuper_bridge_app::ServeLimits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            keep_alive_idle: Duration::from_millis(self.keep_alive_idle_ms),
            max_connections: self.max_connections,
        }
    }
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            webhook_path: "/kuper-webhook".into(),
            body_limit: 1024 * 1024,
            role: Choice(Role::All),
            header_read_timeout_ms: 10_000,
            keep_alive_idle_ms: 60_000,
            max_connections: 4096,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    pub url: String,
    /// How long a write waits for a lock held by another process (ms).
    pub busy_timeout_ms: u64,
    /// SQLite only: the most the database file may grow to, MiB; 0 = no limit (the disk's).
    /// Past it writes fail like on a full disk (webhooks answered 503, Kuper retries), while
    /// the disk keeps room for the system and the logs.
    pub sqlite_max_size_mb: u64,
}

impl Default for Database {
    fn default() -> Self {
        Self { url: "sqlite://kuper-bridge.db".into(), busy_timeout_ms: 5000, sqlite_max_size_mb: 0 }
    }
}

impl Database {
    pub fn store_options(&self) -> kuper_bridge_storage::StoreOptions {
        kuper_bridge_storage::StoreOptions {
            busy_timeout: std::time::Duration::from_millis(self.busy_timeout_ms),
            sqlite_max_size_bytes: (self.sqlite_max_size_mb > 0)
                .then(|| self.sqlite_max_size_mb.saturating_mul(1 << 20)),
            ..Default::default()
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Kuper {
    pub base_url: String,
    pub auth: Choice<KuperAuthMode>,
    #[serde(deserialize_with = "lenient::string")]
    pub client_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub client_secret: String,
    pub client_secret_file: Option<PathBuf>,
    #[serde(deserialize_with = "lenient::string")]
    pub client_token: String,
    pub client_token_file: Option<PathBuf>,
    pub notification_format: Choice<NotificationFormat>,
    /// Default: `/ofm/api/v1/notifications` with `oauth`, `/v3/notifications` with `client-token`.
    pub notifications_path: Option<String>,
    pub token_path: String,
    /// Send `order.assembled` before `ready_for_delivery` when the store skipped it.
    pub synthesize_assembled: bool,
    pub cancel_reasons: Vec<String>,
}

impl Default for Kuper {
    fn default() -> Self {
        Self {
            base_url: "https://merchant-api.sbermarket.ru".into(),
            auth: Choice(KuperAuthMode::OAuth),
            client_id: String::new(),
            client_secret: String::new(),
            client_secret_file: None,
            client_token: String::new(),
            client_token_file: None,
            notification_format: Choice(NotificationFormat::Brief),
            notifications_path: None,
            token_path: "/auth/token".into(),
            synthesize_assembled: true,
            cancel_reasons: DEFAULT_CANCEL_REASONS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookAuthConfig {
    #[serde(deserialize_with = "lenient::strings")]
    pub basic: Vec<String>,
    #[serde(deserialize_with = "lenient::strings")]
    pub bearer: Vec<String>,
    #[serde(deserialize_with = "lenient::strings")]
    pub header_tokens: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(deserialize_with = "lenient::string")]
    pub id: String,
    #[serde(default)]
    pub delivery: Option<Choice<Delivery>>,
    #[serde(default)]
    pub restaurant: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Defaults {
    pub delivery: Choice<Delivery>,
    pub restaurant: bool,
    pub assembly_minutes: i64,
    /// Offset written into every time we emit.
    pub timezone_offset: String,
    pub number_prefix: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            delivery: Choice(Delivery::Kuper),
            restaurant: false,
            assembly_minutes: 30,
            timezone_offset: "+03:00".into(),
            number_prefix: "KB-".into(),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    #[serde(default, deserialize_with = "lenient::string")]
    pub key: String,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

fn all_events() -> Vec<String> {
    vec!["*".into()]
}

/// `[[subscribers]]`: one merchant system receiving forwarded events (interfaces.md).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriberConfig {
    /// Names its queue in the outbox (`subscriber:<name>`); default: the URL. Keep it when the
    /// URL changes, or events still queued for the old name are dead-lettered.
    #[serde(default)]
    pub name: Option<String>,
    pub url: String,
    /// `whsec_<base64>` keys (or plain secrets of 16+ characters); several sign at once during
    /// a rotation.
    #[serde(default, deserialize_with = "lenient::strings")]
    pub secret: Vec<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// `*`, a prefix like `order.*`, or exact event types.
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// Store ids whose orders go to this subscriber; empty = all stores.
    #[serde(default, deserialize_with = "lenient::strings")]
    pub stores: Vec<String>,
}

impl SubscriberConfig {
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.url.clone())
    }
}

/// `[acceptance_hook]`: asked before a new order is accepted (interfaces.md).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptanceHookConfig {
    pub url: String,
    #[serde(default, deserialize_with = "lenient::strings")]
    pub secret: Vec<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Hard deadline of the question; Kuper is answered within it whatever the hook does.
    #[serde(default = "AcceptanceHookConfig::default_timeout_ms")]
    pub timeout_ms: u64,
    /// `accept` or `cancel` when the hook times out, fails or answers something malformed.
    #[serde(default)]
    pub on_error: Choice<OnError>,
    /// The cancel reason used by `on_error = "cancel"` (one of `kuper.cancel_reasons`).
    #[serde(default = "AcceptanceHookConfig::default_cancel_reason")]
    pub cancel_reason: String,
}

impl AcceptanceHookConfig {
    fn default_timeout_ms() -> u64 {
        2000
    }
    fn default_cancel_reason() -> String {
        "technical_issues".into()
    }
}

/// Secrets from the config value and/or a file (one per line), parsed as signing keys.
fn signing_keys(
    what: &str,
    inline: &[String],
    file: Option<&Path>,
    problems: &mut Vec<String>,
) -> Vec<kuper_bridge_wire::forward::SigningKey> {
    let mut secrets: Vec<String> = inline.to_vec();
    if let Some(f) = file {
        match std::fs::read_to_string(f) {
            Ok(text) => secrets.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from)),
            Err(e) => problems.push(format!("{what}.secret_file: cannot read {}: {e}", f.display())),
        }
    }
    if secrets.is_empty() {
        problems.push(format!("{what}.secret: required (whsec_<base64>; receivers verify the signature with it)"));
    }
    let mut keys = Vec::new();
    for (i, secret) in secrets.iter().enumerate() {
        // The error names the position, never the value.
        match kuper_bridge_wire::forward::SigningKey::parse(secret) {
            Ok(k) => keys.push(k),
            Err(e) => problems.push(format!("{what}.secret[{i}] {e}")),
        }
    }
    keys
}

fn http_url(what: &str, url: &str, problems: &mut Vec<String>) {
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(char::is_whitespace) {
        problems.push(format!("{what}.url: {url:?} is not an http(s) URL"));
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dispatcher {
    /// Delay before retry n, milliseconds (the last repeats).
    pub retry_schedule_ms: Vec<u64>,
    pub jitter: f64,
    pub throttle_floor_ms: u64,
    pub retry_after_max_ms: u64,
    pub give_up_after_secs: u64,
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub concurrency: usize,
    pub poll_interval_ms: u64,
    /// Lease = attempt budget (5 × request timeout) + this margin. A replica that dies has its
    /// claims taken over after the lease; keep the margin well above the replicas' clock skew.
    pub lease_margin_ms: u64,
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self {
            retry_schedule_ms: vec![1_000, 5_000, 30_000, 120_000, 300_000, 900_000],
            jitter: 0.2,
            throttle_floor_ms: 60_000,
            retry_after_max_ms: 900_000,
            give_up_after_secs: 24 * 3600,
            request_timeout_ms: 10_000,
            connect_timeout_ms: 3_000,
            concurrency: 32,
            poll_interval_ms: 1_000,
            lease_margin_ms: 30_000,
        }
    }
}

/// `[reconciliation]`: the pull API safety net for lost webhooks (protocol.md §11).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Reconciliation {
    /// Off by default: the pull API's list format is our assumption (decisions.md).
    pub enabled: bool,
    /// Between the end of one pass and the start of the next.
    pub interval_secs: u64,
    /// How far back the first pass after start looks.
    pub lookback_hours: u64,
    /// Each pass re-reads this much before the previous pass's start (clock skew between
    /// Kuper and us, changes committed while we paged).
    pub overlap_secs: u64,
    pub page_size: u32,
    /// The list endpoint on `kuper.base_url`.
    pub path: String,
    /// Sent as `store_id` filters; empty = every shipment the credentials see.
    #[serde(deserialize_with = "lenient::strings")]
    pub store_ids: Vec<String>,
}

impl Default for Reconciliation {
    fn default() -> Self {
        Self {
            enabled: false,
            interval_secs: 60,
            lookback_hours: 24,
            overlap_secs: 300,
            page_size: 100,
            path: "/ofm/api/v1/shipments".into(),
            store_ids: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pickup {
    pub code_length: usize,
    pub max_attempts: u32,
    pub lockout_secs: i64,
    /// Wrong codes per API key per minute before 429.
    pub client_failures_per_minute: u32,
}

impl Default for Pickup {
    fn default() -> Self {
        Self { code_length: 6, max_attempts: 5, lockout_secs: 900, client_failures_per_minute: 30 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Audit {
    /// Timeline/audit entries older than this are deleted (hourly); 0 keeps them for ever.
    pub retention_days: u32,
}

impl Default for Audit {
    fn default() -> Self {
        Self { retention_days: 90 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `json` (default) or `text`.
    pub format: Choice<LogFormat>,
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self { format: Choice(LogFormat::Json), level: "info".into() }
    }
}

/// Deadline timers (issue #7 item 5): warnings and misses recorded in the order timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Deadlines {
    /// Run the sweep in the processes that run the dispatcher (roles `all` and `worker`). The
    /// API shows an order's computed deadlines either way.
    pub enabled: bool,
    /// How often open orders are checked (ms): a warning or miss is recorded at most this late.
    pub sweep_interval_ms: u64,
    /// Restaurant orders must be accepted this long after creation. Kuper's own limit is not
    /// public; 5 minutes warns well before the 10–11.5 min other marketplaces allow.
    pub restaurant_accept_secs: u64,
    /// Warn this long before every deadline (0: no warnings, misses only)…
    pub warn_before_secs: u64,
    /// …unless the kind has its own lead.
    pub restaurant_accept_warn_before_secs: Option<u64>,
    pub assembly_warn_before_secs: Option<u64>,
    pub delivery_window_warn_before_secs: Option<u64>,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            enabled: true,
            sweep_interval_ms: 15_000,
            restaurant_accept_secs: 300,
            warn_before_secs: 120,
            restaurant_accept_warn_before_secs: None,
            assembly_warn_before_secs: None,
            delivery_window_warn_before_secs: None,
        }
    }
}

impl Deadlines {
    /// The validated settings; every problem is added to `problems`.
    fn resolve(&self, problems: &mut Vec<String>) -> DeadlineSettings {
        const DAY: u64 = 86_400;
        if !(50..=600_000).contains(&self.sweep_interval_ms) {
            problems.push("deadlines.sweep_interval_ms: between 50 and 600000".into());
        }
        if !(1..=DAY).contains(&self.restaurant_accept_secs) {
            problems.push("deadlines.restaurant_accept_secs: between 1 and 86400".into());
        }
        let lead = |key: &str, own: Option<u64>, problems: &mut Vec<String>| {
            let secs = own.unwrap_or(self.warn_before_secs);
            if secs > DAY {
                let key = if own.is_some() { key } else { "warn_before_secs" };
                problems.push(format!("deadlines.{key}: at most 86400"));
            }
            secs.min(DAY)
        };
        let accept_warn = lead("restaurant_accept_warn_before_secs", self.restaurant_accept_warn_before_secs, problems);
        let assembly_warn = lead("assembly_warn_before_secs", self.assembly_warn_before_secs, problems);
        let window_warn = lead("delivery_window_warn_before_secs", self.delivery_window_warn_before_secs, problems);
        if accept_warn > 0 && accept_warn >= self.restaurant_accept_secs {
            problems.push(format!(
                "deadlines.restaurant_accept_warn_before_secs: the warning lead ({accept_warn} s, from {}) must be shorter than restaurant_accept_secs ({} s), or every restaurant order is warned about at creation; set it lower or to 0",
                if self.restaurant_accept_warn_before_secs.is_some() { "restaurant_accept_warn_before_secs" } else { "warn_before_secs" },
                self.restaurant_accept_secs
            ));
        }
        let ms = |secs: u64| i64::try_from(secs.min(DAY) * 1000).unwrap_or(0);
        DeadlineSettings {
            restaurant_accept_ms: ms(self.restaurant_accept_secs),
            restaurant_accept_warn_ms: ms(accept_warn),
            assembly_warn_ms: ms(assembly_warn),
            delivery_window_warn_ms: ms(window_warn),
        }
    }
}

/// The operator console (`[console]`): its display zone and its sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Console {
    /// Times on the pages are shown in this zone, minutes east of UTC (Moscow: 180). Russia
    /// keeps no daylight saving time, so a fixed offset is exact.
    pub time_zone_offset_minutes: i32,
    /// A session unused this long ends (the operator logs in again).
    pub session_idle_minutes: u32,
    /// A session ends this long after login, however busy.
    pub session_max_hours: u32,
    /// Mark the session cookie `Secure` (browsers then send it over HTTPS only): set it when a
    /// TLS proxy serves the console.
    pub secure_cookie: bool,
}

impl Default for Console {
    fn default() -> Self {
        Self { time_zone_offset_minutes: 180, session_idle_minutes: 60, session_max_hours: 12, secure_cookie: false }
    }
}

impl Console {
    fn check(&self, problems: &mut Vec<String>) {
        if !(-720..=840).contains(&self.time_zone_offset_minutes) {
            problems.push(format!(
                "console.time_zone_offset_minutes: {} — expected -720 to 840 (UTC-12 to UTC+14; Moscow is 180)",
                self.time_zone_offset_minutes
            ));
        }
        if !(1..=7 * 24 * 60).contains(&self.session_idle_minutes) {
            problems.push("console.session_idle_minutes: between 1 and 10080 (a week)".into());
        }
        if !(1..=30 * 24).contains(&self.session_max_hours) {
            problems.push("console.session_max_hours: between 1 and 720 (30 days)".into());
        }
    }

    /// The app's settings for the console of a process serving `database_url`.
    pub fn settings(&self, database_url: &str, kuper_auth: KuperAuthMode) -> kuper_bridge_app::ui::ConsoleSettings {
        kuper_bridge_app::ui::ConsoleSettings {
            time_zone_offset_minutes: self.time_zone_offset_minutes,
            session_idle_ms: i64::from(self.session_idle_minutes) * 60_000,
            session_max_ms: i64::from(self.session_max_hours) * 3_600_000,
            secure_cookie: self.secure_cookie,
            backend: kuper_bridge_app::ui::Backend::from_url(database_url),
            kuper_auth,
        }
    }
}

/// The configuration as far as it could be read, and every problem with its keys.
pub struct Loaded {
    /// `None` only when the document could not be read into a configuration at all (a required
    /// key missing where an empty string does not fit); the checks of [`Config::resolve`] then
    /// wait until the problems are fixed.
    pub config: Option<Config>,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// Unknown keys, values of the wrong type and missing required keys, each as
    /// `path: what is wrong`. Those keys are left out of `config` (their defaults apply), so the
    /// other checks still run.
    pub problems: Vec<String>,
    /// Required keys that were missing and stand in `config` as empty strings (`stores[1].id`):
    /// what [`Config::resolve`] says about them repeats the problem above.
    pub missing: Vec<String>,
}

/// Loads defaults ← file ← environment, refusing a configuration with any key problem (every
/// one of them listed). `path` None: `kuper-bridge.toml` if present.
pub fn load(path: Option<&Path>) -> Result<(Config, Option<PathBuf>), String> {
    let loaded = load_report(path)?;
    match loaded.config {
        Some(config) if loaded.problems.is_empty() => Ok((config, loaded.file)),
        _ => Err(loaded.problems.iter().map(|p| format!("- {p}")).collect::<Vec<_>>().join("\n")),
    }
}

/// Like [`load`], but reports unknown keys and wrong types instead of stopping at the first:
/// each offending key is recorded and dropped, and the rest is read again, so one typo no
/// longer hides every other problem (decisions.md). `Err` only when the sources cannot be read
/// at all (a missing file, TOML syntax).
pub fn load_report(path: Option<&Path>) -> Result<Loaded, String> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    let used = match path {
        Some(p) => {
            if !p.exists() {
                return Err(format!("config file {} does not exist", p.display()));
            }
            Some(p.to_path_buf())
        }
        None => Some(PathBuf::from("kuper-bridge.toml")).filter(|p| p.exists()),
    };
    if let Some(p) = &used {
        figment = figment.merge(Toml::file(p));
    }
    // KUPER_BRIDGE_CONFIG names the file (the --config flag's variable), it is not a key.
    // KUPER_BRIDGE_TEST_* belong to the test suite (which database to test on).
    figment = figment.merge(
        Env::prefixed("KUPER_BRIDGE_")
            .ignore(&["config"])
            .filter(|key| !key.as_str().to_ascii_lowercase().starts_with("test_"))
            .split("__"),
    );
    // The merged document, each value tagged with where it came from.
    let mut root = figment.find_value("").map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    let mut missing = Vec::new();
    let mut config = None;
    // Each pass finds the first problem serde meets; every key has at most one, so the
    // bound is only a guard against a key that cannot be dropped.
    for _ in 0..256 {
        let error = match Config::deserialize(&root) {
            Ok(mut c) => {
                raw_env_strings(&mut c);
                config = Some(c);
                break;
            }
            Err(e) => e,
        };
        let at = key_path(&root, &error.path);
        let origin = origin(&figment, &root, &error.path);
        match &error.kind {
            figment::error::Kind::MissingField(field) => {
                let key = join_key(&at, field);
                problems.push(format!("{key}: required{origin}"));
                // Every required key is a string (an id, a name, a URL): an empty one lets the
                // rest be read; a key that is not a string stops here.
                if missing.contains(&key) || !fill_missing(&mut root, &error.path, field) {
                    break;
                }
                missing.push(key);
                continue;
            }
            figment::error::Kind::UnknownField(field, expected) => {
                let hint = closest(field, expected).map(|k| format!(" (did you mean {k}?)")).unwrap_or_default();
                problems.push(format!("{at}: unknown key{hint}{origin}"));
            }
            kind => problems.push(format!("{at}: {}{origin}", plain(kind))),
        }
        if !drop_key(&mut root, &error.path) {
            break;
        }
    }
    Ok(Loaded { config, file: used, problems, missing })
}

/// `stores[1].delivery` from figment's `["stores", "1", "delivery"]`.
fn key_path(root: &figment::value::Value, path: &[String]) -> String {
    use figment::value::Value;
    let mut out = String::new();
    let mut at = Some(root);
    for segment in path {
        match at {
            Some(Value::Array(_, items)) => {
                out.push_str(&format!("[{segment}]"));
                at = segment.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            _ => {
                out = join_key(&out, segment);
                at = at.and_then(|v| v.as_dict()).and_then(|d| d.get(segment));
            }
        }
    }
    if out.is_empty() {
        "(top level)".into()
    } else {
        out
    }
}

fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() || prefix == "(top level)" {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// ` (in FILE)` or ` (from KUPER_BRIDGE_…)`: where the offending value came from.
fn origin(figment: &Figment, root: &figment::value::Value, path: &[String]) -> String {
    let mut value = Some(root);
    for segment in path {
        value = match value {
            Some(figment::value::Value::Array(_, items)) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            Some(v) => v.as_dict().and_then(|d| d.get(segment)),
            None => None,
        };
    }
    let Some(metadata) = value.and_then(|v| figment.get_metadata(v.tag())) else { return String::new() };
    match &metadata.source {
        Some(figment::Source::File(file)) => format!(" (in {})", file.display()),
        _ if metadata.name.contains("environment") => {
            format!(" (from KUPER_BRIDGE_{})", path.join("__").to_ascii_uppercase())
        }
        _ => String::new(),
    }
}

/// A type error in words, without the value itself (it may be a secret; an unknown name of a
/// [`Choice`] key is shown).
fn plain(kind: &figment::error::Kind) -> String {
    use figment::error::{Actual, Kind};
    let what = |a: &Actual| match a {
        Actual::Bool(_) => "a boolean".to_string(),
        Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_) => "a number".into(),
        Actual::Str(_) | Actual::Char(_) => "a string".into(),
        Actual::Seq => "a list".into(),
        Actual::Map => "a table".into(),
        other => other.to_string(),
    };
    // serde names Rust types; say what to write instead.
    let expected = |e: &str| match e {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".to_string(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        other => other.to_string(),
    };
    match kind {
        Kind::InvalidType(actual, e) | Kind::InvalidValue(actual, e) => {
            format!("expected {}, found {}", expected(e), what(actual))
        }
        Kind::InvalidLength(n, expected) => format!("expected {expected}, found {n} item(s)"),
        // An enum key's value is a name, never a secret: shown, it makes a case slip plain.
        Kind::UnknownVariant(name, expected) => format!("{name:?} — expected {}", one_of(expected)),
        other => other.to_string(),
    }
}

/// Removes the key at `path` (or the nearest enclosing key, for an item of a list) so the
/// next pass reads the rest; false when there is no such key.
fn drop_key(root: &mut figment::value::Value, path: &[String]) -> bool {
    use figment::value::Value;
    // The last segment that names a key of a table.
    let mut last_key = None;
    let mut at: Option<&Value> = Some(root);
    for (i, segment) in path.iter().enumerate() {
        at = match at {
            Some(Value::Array(_, items)) => segment.parse::<usize>().ok().and_then(|n| items.get(n)),
            Some(Value::Dict(_, d)) => {
                last_key = Some(i);
                d.get(segment)
            }
            _ => None,
        };
    }
    let Some(last) = last_key else { return false };
    let mut parent: &mut Value = root;
    for segment in &path[..last] {
        let next = match parent {
            Value::Array(_, items) => segment.parse::<usize>().ok().and_then(|n| items.get_mut(n)),
            Value::Dict(_, d) => d.get_mut(segment),
            _ => None,
        };
        match next {
            Some(v) => parent = v,
            None => return false,
        }
    }
    match parent {
        Value::Dict(_, d) => d.remove(&path[last]).is_some(),
        _ => false,
    }
}

/// Puts an empty string at `field` of the table at `path`; false when there is no such table.
fn fill_missing(root: &mut figment::value::Value, path: &[String], field: &str) -> bool {
    use figment::value::Value;
    let mut at: &mut Value = root;
    for segment in path {
        let next = match at {
            Value::Array(_, items) => segment.parse::<usize>().ok().and_then(|n| items.get_mut(n)),
            Value::Dict(_, d) => d.get_mut(segment),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return false,
        }
    }
    match at {
        Value::Dict(_, d) => d.insert(field.to_string(), Value::from(String::new())).is_none(),
        _ => false,
    }
}

/// The known key nearest to a misspelt one, if it is near enough to be the likely intent.
fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut previous = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let substitution = previous + usize::from(ca != *cb);
                previous = row[j + 1];
                row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
            }
        }
        row[b.len()]
    };
    let limit = (word.chars().count() / 3).max(1);
    known.iter().map(|k| (distance(word, k), *k)).filter(|(d, _)| *d <= limit).min_by_key(|(d, _)| *d).map(|(_, k)| k)
}

/// figment types environment values by their look (`007` becomes the number 7); ids and
/// secrets must arrive exactly as written, so they are read again as raw strings.
fn raw_env_strings(config: &mut Config) {
    let raw = |key: &str| std::env::var(format!("KUPER_BRIDGE_{key}")).ok();
    if let Some(v) = raw("KUPER__CLIENT_ID") {
        config.kuper.client_id = v;
    }
    if let Some(v) = raw("KUPER__CLIENT_SECRET") {
        config.kuper.client_secret = v;
    }
    if let Some(v) = raw("KUPER__CLIENT_TOKEN") {
        config.kuper.client_token = v;
    }
    if let Some(v) = raw("DATABASE__URL") {
        config.database.url = v;
    }
    // A list in TOML syntax (`["a","b"]`) was parsed correctly; a bare value is one secret.
    let one = |key: &str| raw(key).filter(|v| !v.trim_start().starts_with('['));
    if let Some(v) = one("WEBHOOK_AUTH__BASIC") {
        config.webhook_auth.basic = vec![v];
    }
    if let Some(v) = one("WEBHOOK_AUTH__BEARER") {
        config.webhook_auth.bearer = vec![v];
    }
    if let Some(v) = one("WEBHOOK_AUTH__HEADER_TOKENS") {
        config.webhook_auth.header_tokens = vec![v];
    }
}

fn read_secret(inline: &str, file: &Option<PathBuf>, what: &str, problems: &mut Vec<String>) -> String {
    match file {
        Some(f) => match std::fs::read_to_string(f) {
            Ok(s) => s.trim().to_string(),
            Err(e) => {
                problems.push(format!("{what}_file {}: {e}", f.display()));
                String::new()
            }
        },
        None => inline.trim().to_string(),
    }
}

/// Everything the service needs, validated.
pub struct Resolved {
    pub policy: Policy,
    pub webhook_auth: WebhookAuth,
    /// `None`: `deadlines.enabled = false`.
    pub deadline_sweep: Option<DeadlineSweepConfig>,
    pub api_keys: Vec<ApiKey>,
    pub dispatcher: DispatcherConfig,
    pub forwarding: kuper_bridge_storage::Forwarding,
    pub acceptance: Option<kuper_bridge_app::AcceptanceHook>,
    /// The reconciliation job's settings; it runs periodically only when `enabled`.
    pub reconciliation: ReconcileConfig,
    pub reconciliation_enabled: bool,
    /// `[server.tls]`'s certificate, loaded and checked.
    pub tls: Option<Arc<kuper_bridge_app::ServerCert>>,
    pub warnings: Vec<String>,
}

impl Config {
    /// Validates every key; all problems are reported together. Each section is checked by its
    /// own function below, which adds what it finds to `problems` (refusals) or `warnings`.
    pub fn resolve(&self) -> Result<Resolved, Vec<String>> {
        let (mut problems, mut warnings) = (Vec::new(), Vec::new());
        let tls = self.resolve_server(&mut problems, &mut warnings);
        self.check_database(&mut problems);
        let (offset, default_store) = self.resolve_defaults(&mut problems);
        let stores = self.resolve_stores(default_store, &mut problems);
        let auth = self.resolve_kuper(&mut problems, &mut warnings);
        let webhook_auth = self.resolve_webhook_auth(&mut problems);
        let api_keys = self.resolve_api_keys(&mut problems, &mut warnings);
        self.check_dispatcher(&mut problems);
        self.check_pickup(&mut problems);
        let (forwarding, subscriber_targets) = self.resolve_subscribers(&mut problems);
        self.check_reconciliation(&mut problems, &mut warnings);
        let acceptance = self.resolve_acceptance_hook(&mut problems);
        let deadlines = self.deadlines.resolve(&mut problems);
        self.console.check(&mut problems);
        self.check_log(&mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Resolved {
            policy: Policy {
                stores,
                default_store,
                assembly_minutes: self.defaults.assembly_minutes,
                offset,
                synthesize_assembled: self.kuper.synthesize_assembled,
                cancel_reasons: self.kuper.cancel_reasons.clone(),
                notification_format: self.kuper.notification_format.0,
                number_prefix: self.defaults.number_prefix.clone(),
                pickup_code_length: self.pickup.code_length,
                pickup_max_attempts: self.pickup.max_attempts.max(1),
                pickup_lockout_secs: self.pickup.lockout_secs,
                deadlines,
            },
            webhook_auth,
            deadline_sweep: self.deadlines.enabled.then(|| DeadlineSweepConfig {
                settings: deadlines,
                offset,
                interval: Duration::from_millis(self.deadlines.sweep_interval_ms),
            }),
            api_keys,
            dispatcher: self.dispatcher_config(auth.clone(), subscriber_targets),
            forwarding,
            acceptance,
            reconciliation: self.reconcile_config(auth),
            reconciliation_enabled: self.reconciliation.enabled,
            tls,
            warnings,
        })
    }

    /// `[server]` and `[server.tls]`: the certificate, loaded and checked.
    fn resolve_server(
        &self,
        problems: &mut Vec<String>,
        warnings: &mut Vec<String>,
    ) -> Option<Arc<kuper_bridge_app::ServerCert>> {
        let s = &self.server;
        if s.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!("server.listen: {:?} is not host:port (e.g. 127.0.0.1:8080)", s.listen));
        }
        if !s.webhook_path.starts_with('/') || s.webhook_path.starts_with("/api/") {
            problems.push("server.webhook_path: must start with / and lie outside /api/".into());
        }
        if s.body_limit < 1024 {
            problems.push("server.body_limit: at least 1024 bytes".into());
        }
        for (key, ms) in
            [("header_read_timeout_ms", s.header_read_timeout_ms), ("keep_alive_idle_ms", s.keep_alive_idle_ms)]
        {
            if !(100..=3_600_000).contains(&ms) {
                problems.push(format!("server.{key}: {ms} — expected 100 to 3600000 (1 hour)"));
            }
        }
        if s.max_connections == 0 {
            problems.push("server.max_connections: at least 1".into());
        }
        let tls = s.tls.as_ref().and_then(|t| {
            let files = kuper_bridge_app::TlsFiles { cert_file: t.cert_file.clone(), key_file: t.key_file.clone() };
            kuper_bridge_app::ServerCert::load(files).map_err(|p| problems.extend(p)).ok()
        });
        if s.tls.is_some() && !self.console.secure_cookie {
            warnings.push(
                "console.secure_cookie: false while server.tls serves HTTPS; set it to true so browsers send the console's session cookie over HTTPS only".into(),
            );
        }
        tls
    }

    /// `[database]`.
    fn check_database(&self, problems: &mut Vec<String>) {
        let url = &self.database.url;
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            problems.push(format!(
                "database.url: {:?} — expected sqlite://PATH or postgres://USER@HOST/DB",
                kuper_bridge_storage::redact_url(url)
            ));
        }
        if !(1..=60_000).contains(&self.database.busy_timeout_ms) {
            problems.push("database.busy_timeout_ms: between 1 and 60000".into());
        }
    }

    /// `[defaults]`: the offset written into emitted times and the profile of unlisted stores.
    fn resolve_defaults(&self, problems: &mut Vec<String>) -> (chrono::FixedOffset, StoreProfile) {
        let d = &self.defaults;
        let offset = parse_offset(&d.timezone_offset).unwrap_or_else(|| {
            problems.push(format!("defaults.timezone_offset: {:?} is not like +03:00", d.timezone_offset));
            Utc.fix()
        });
        if !(1..=24 * 60).contains(&d.assembly_minutes) {
            problems.push("defaults.assembly_minutes: between 1 and 1440".into());
        }
        if d.number_prefix.ends_with(|c: char| c.is_ascii_digit()) {
            problems.push("defaults.number_prefix: must not end in a digit (KB-1 and KB1-1 would read alike)".into());
        }
        (offset, StoreProfile { delivery: d.delivery.0, restaurant: d.restaurant })
    }

    /// `[[stores]]`: each store's profile, unset keys taken from `[defaults]`.
    fn resolve_stores(
        &self,
        default_store: StoreProfile,
        problems: &mut Vec<String>,
    ) -> std::collections::HashMap<String, StoreProfile> {
        let mut stores = std::collections::HashMap::new();
        for (i, s) in self.stores.iter().enumerate() {
            if s.id.trim().is_empty() {
                problems.push(format!("stores[{i}].id: must not be empty"));
            }
            let profile = StoreProfile {
                delivery: s.delivery.map_or(default_store.delivery, |d| d.0),
                restaurant: s.restaurant.unwrap_or(default_store.restaurant),
            };
            if stores.insert(s.id.clone(), profile).is_some() {
                problems.push(format!("stores[{i}].id: {:?} listed twice", s.id));
            }
        }
        stores
    }

    /// `[kuper]`: the credentials the dispatcher and the reconciliation call Kuper with.
    fn resolve_kuper(&self, problems: &mut Vec<String>, warnings: &mut Vec<String>) -> KuperAuth {
        let k = &self.kuper;
        if !(k.base_url.starts_with("http://") || k.base_url.starts_with("https://")) {
            problems.push(format!("kuper.base_url: {:?} must be an http(s) URL", k.base_url));
        }
        for r in &k.cancel_reasons {
            if r.trim().is_empty() || r.contains(char::is_whitespace) {
                problems.push(format!("kuper.cancel_reasons: {r:?} is not a slug"));
            }
        }
        // Only processes that run the dispatcher (and the reconciliation) call Kuper: an API
        // replica without the credentials is a smaller place for them to leak from.
        let mut file_problems = Vec::new();
        let mut missing_credential = |key: &str, why: &str| {
            if self.server.runs_dispatcher() {
                problems.push(format!("{key}: required when kuper.auth = \"{}\" ({why})", k.auth));
            } else {
                warnings.push(format!(
                    "{key}: empty; fine for server.role = \"api\" (it never calls Kuper), required for all and worker"
                ));
            }
        };
        let auth = match k.auth.0 {
            KuperAuthMode::OAuth => {
                let secret =
                    read_secret(&k.client_secret, &k.client_secret_file, "kuper.client_secret", &mut file_problems);
                if k.client_id.trim().is_empty() {
                    missing_credential("kuper.client_id", "the dispatcher gets its access tokens with it");
                }
                if secret.is_empty() && file_problems.is_empty() {
                    missing_credential(
                        if k.client_secret_file.is_some() { "kuper.client_secret_file" } else { "kuper.client_secret" },
                        "set client_secret, client_secret_file or KUPER_BRIDGE_KUPER__CLIENT_SECRET",
                    );
                }
                KuperAuth::OAuth { client_id: k.client_id.trim().to_string(), client_secret: secret }
            }
            KuperAuthMode::ClientToken => {
                let token =
                    read_secret(&k.client_token, &k.client_token_file, "kuper.client_token", &mut file_problems);
                if token.is_empty() && file_problems.is_empty() {
                    missing_credential(
                        if k.client_token_file.is_some() { "kuper.client_token_file" } else { "kuper.client_token" },
                        "set client_token, client_token_file or KUPER_BRIDGE_KUPER__CLIENT_TOKEN",
                    );
                }
                KuperAuth::ClientToken { token }
            }
        };
        problems.extend(file_problems);
        auth
    }

    /// `[webhook_auth]`: the credentials Kuper's webhooks are accepted with.
    fn resolve_webhook_auth(&self, problems: &mut Vec<String>) -> WebhookAuth {
        let w = &self.webhook_auth;
        for (i, b) in w.basic.iter().enumerate() {
            if !b.contains(':') {
                problems.push(format!("webhook_auth.basic[{i}]: expected \"user:password\""));
            }
        }
        let non_empty = |list: &[String]| list.iter().filter(|s| !s.trim().is_empty()).cloned().collect();
        let webhook_auth = WebhookAuth {
            basic: w.basic.clone(),
            bearer: non_empty(&w.bearer),
            header_tokens: non_empty(&w.header_tokens),
        };
        if webhook_auth.is_empty() {
            problems.push("webhook_auth: no credential configured; Kuper's webhooks would all be refused (set basic, bearer or header_tokens)".into());
        }
        webhook_auth
    }

    /// `[[api_keys]]`.
    fn resolve_api_keys(&self, problems: &mut Vec<String>, warnings: &mut Vec<String>) -> Vec<ApiKey> {
        let mut api_keys = Vec::new();
        for (i, k) in self.api_keys.iter().enumerate() {
            let key = read_secret(&k.key, &k.key_file, &format!("api_keys[{i}].key"), problems);
            if key.len() < 16 {
                problems.push(format!("api_keys[{i}] ({}): key must be at least 16 characters", k.name));
            }
            let mut scopes = Vec::new();
            for s in &k.scopes {
                match Scope::parse(s) {
                    Some(scope) => scopes.push(scope),
                    None => problems.push(format!("api_keys[{i}].scopes: {s:?} — expected read, write or admin")),
                }
            }
            if scopes.is_empty() {
                problems.push(format!("api_keys[{i}] ({}): no scopes", k.name));
            }
            api_keys.push(ApiKey { name: k.name.clone(), key, scopes });
        }
        if api_keys.is_empty() {
            warnings.push("api_keys: none configured; the REST API, /readyz and /metrics refuse every request".into());
        }
        api_keys
    }

    /// `[dispatcher]`.
    fn check_dispatcher(&self, problems: &mut Vec<String>) {
        let d = &self.dispatcher;
        if d.retry_schedule_ms.is_empty() || d.retry_schedule_ms.contains(&0) {
            problems.push("dispatcher.retry_schedule_ms: a non-empty list of positive delays".into());
        }
        if !(0.0..=0.9).contains(&d.jitter) {
            problems.push("dispatcher.jitter: between 0 and 0.9".into());
        }
        if d.concurrency == 0 || d.concurrency > 1024 {
            problems.push("dispatcher.concurrency: between 1 and 1024".into());
        }
        if !(100..=600_000).contains(&d.request_timeout_ms) || !(100..=600_000).contains(&d.connect_timeout_ms) {
            problems.push("dispatcher.request_timeout_ms / connect_timeout_ms: between 100 and 600000".into());
        }
        if !(10..=3_600_000).contains(&d.poll_interval_ms) {
            problems.push("dispatcher.poll_interval_ms: between 10 and 3600000".into());
        }
        if d.retry_schedule_ms.iter().any(|ms| *ms > 24 * 3_600_000) || d.give_up_after_secs == 0 {
            problems.push("dispatcher: retry delays at most 24 h, give_up_after_secs positive".into());
        }
        if d.lease_margin_ms < 1_000 {
            problems.push("dispatcher.lease_margin_ms: at least 1000 (it must exceed the replicas' clock skew)".into());
        }
    }

    /// `[pickup]`.
    fn check_pickup(&self, problems: &mut Vec<String>) {
        let p = &self.pickup;
        if !(4..=12).contains(&p.code_length) {
            problems.push("pickup.code_length: between 4 and 12 (6 recommended)".into());
        }
        if p.max_attempts == 0 || !(0..=30 * 86_400).contains(&p.lockout_secs) || p.client_failures_per_minute == 0 {
            problems
                .push("pickup: max_attempts and client_failures_per_minute positive, lockout_secs not negative".into());
        }
    }

    /// `[[subscribers]]`: the outbox's routes and the dispatcher's targets.
    fn resolve_subscribers(
        &self,
        problems: &mut Vec<String>,
    ) -> (kuper_bridge_storage::Forwarding, Vec<kuper_bridge_dispatcher::SubscriberTarget>) {
        let mut forwarding = kuper_bridge_storage::Forwarding::default();
        let mut targets = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, sub) in self.subscribers.iter().enumerate() {
            let what = format!("subscribers[{i}]");
            http_url(&what, &sub.url, problems);
            let keys = signing_keys(&what, &sub.secret, sub.secret_file.as_deref(), problems);
            let name = sub.name();
            if name.trim().is_empty() || name.chars().any(char::is_control) || !names.insert(name.clone()) {
                problems.push(format!("{what}.name: {name:?} must be printable and unique among the subscribers"));
            }
            if sub.events.is_empty() || sub.events.iter().any(|e| e.trim().is_empty()) {
                problems.push(format!("{what}.events: at least one event type (or \"*\")"));
            }
            let destination = kuper_bridge_storage::Destination::subscriber(&name);
            forwarding.subscribers.push(kuper_bridge_storage::SubscriberRoute {
                destination: destination.clone(),
                events: sub.events.clone(),
                stores: sub.stores.clone(),
            });
            targets.push(kuper_bridge_dispatcher::SubscriberTarget { destination, url: sub.url.clone(), keys });
        }
        (forwarding, targets)
    }

    /// `[reconciliation]`.
    fn check_reconciliation(&self, problems: &mut Vec<String>, warnings: &mut Vec<String>) {
        let r = &self.reconciliation;
        if !(1..=86_400).contains(&r.interval_secs) {
            problems.push("reconciliation.interval_secs: between 1 and 86400".into());
        }
        if !(1..=24 * 30).contains(&r.lookback_hours) {
            problems.push("reconciliation.lookback_hours: between 1 and 720".into());
        }
        if r.overlap_secs > 86_400 {
            problems.push("reconciliation.overlap_secs: at most 86400".into());
        }
        if !(1..=1000).contains(&r.page_size) {
            problems.push("reconciliation.page_size: between 1 and 1000".into());
        }
        if !r.path.starts_with('/') {
            problems.push(format!("reconciliation.path: {:?} must start with /", r.path));
        }
        if r.store_ids.iter().any(|s| s.trim().is_empty()) {
            problems.push("reconciliation.store_ids: ids must not be empty".into());
        }
        if r.enabled && !self.server.runs_dispatcher() {
            warnings.push("reconciliation.enabled: runs only in processes with server.role all or worker".into());
        }
    }

    /// `[acceptance_hook]`, if configured.
    fn resolve_acceptance_hook(&self, problems: &mut Vec<String>) -> Option<kuper_bridge_app::AcceptanceHook> {
        let h = self.acceptance_hook.as_ref()?;
        http_url("acceptance_hook", &h.url, problems);
        let keys = signing_keys("acceptance_hook", &h.secret, h.secret_file.as_deref(), problems);
        if !(100..=10_000).contains(&h.timeout_ms) {
            problems.push(
                "acceptance_hook.timeout_ms: between 100 and 10000 (Kuper waits for the answer to order.created)"
                    .into(),
            );
        }
        let cancel_reason = CancelReason::parse(&h.cancel_reason, &self.kuper.cancel_reasons)
            .map_err(|_| {
                problems.push(format!(
                    "acceptance_hook.cancel_reason: {:?} is not one of kuper.cancel_reasons ({})",
                    h.cancel_reason,
                    self.kuper.cancel_reasons.join(", ")
                ))
            })
            .ok();
        Some(kuper_bridge_app::AcceptanceHook {
            url: h.url.clone(),
            keys,
            timeout: Duration::from_millis(h.timeout_ms),
            cancel_on_error: h.on_error.0 == OnError::Cancel,
            cancel_reason: cancel_reason?,
        })
    }

    /// `[log]` (`format` is a [`Choice`], checked when read).
    fn check_log(&self, problems: &mut Vec<String>) {
        // A bare word that is no level would parse as a target name and silence everything.
        let level = self.log.level.trim().to_ascii_lowercase();
        let bare_level = ["off", "error", "warn", "info", "debug", "trace"].contains(&level.as_str());
        if !(bare_level || level.contains('=') && tracing_subscriber::EnvFilter::try_new(&level).is_ok()) {
            problems.push(format!(
                "log.level: {:?} — expected error, warn, info, debug or trace (or RUST_LOG-style directives)",
                self.log.level
            ));
        }
    }

    /// The dispatcher's settings from `[kuper]`, `[dispatcher]` and `[database]` (checked).
    fn dispatcher_config(
        &self,
        auth: KuperAuth,
        subscribers: Vec<kuper_bridge_dispatcher::SubscriberTarget>,
    ) -> DispatcherConfig {
        let d = &self.dispatcher;
        // Worst case of one attempt: wait for another sender's token fetch, fetch, send,
        // forced refresh, resend.
        let attempt_budget = Duration::from_millis(d.request_timeout_ms) * 5;
        DispatcherConfig {
            base_url: self.kuper.base_url.clone(),
            notifications_path: self.kuper.notifications_path.clone().unwrap_or_else(|| {
                match self.kuper.auth.0 {
                    KuperAuthMode::ClientToken => "/v3/notifications",
                    KuperAuthMode::OAuth => "/ofm/api/v1/notifications",
                }
                .into()
            }),
            token_path: self.kuper.token_path.clone(),
            auth,
            request_timeout: Duration::from_millis(d.request_timeout_ms),
            connect_timeout: Duration::from_millis(d.connect_timeout_ms),
            retry: RetryPolicy {
                schedule: d.retry_schedule_ms.iter().map(|ms| Duration::from_millis(*ms)).collect(),
                jitter: d.jitter,
                throttle_floor: Duration::from_millis(d.throttle_floor_ms),
                retry_after_max: Duration::from_millis(d.retry_after_max_ms),
                give_up_after: Duration::from_secs(d.give_up_after_secs),
            },
            concurrency: d.concurrency,
            poll_interval: Duration::from_millis(d.poll_interval_ms),
            attempt_budget,
            lease: attempt_budget + Duration::from_millis(d.lease_margin_ms),
            release_stale_leases_on_start: self.database.url.starts_with("sqlite:"),
            subscribers,
        }
    }

    /// The reconciliation's settings from `[reconciliation]`, `[kuper]` and `[dispatcher]`
    /// (checked).
    fn reconcile_config(&self, auth: KuperAuth) -> ReconcileConfig {
        let (r, d) = (&self.reconciliation, &self.dispatcher);
        ReconcileConfig {
            base_url: self.kuper.base_url.clone(),
            list_path: r.path.clone(),
            token_path: self.kuper.token_path.clone(),
            auth,
            request_timeout: Duration::from_millis(d.request_timeout_ms),
            connect_timeout: Duration::from_millis(d.connect_timeout_ms),
            interval: Duration::from_secs(r.interval_secs),
            lookback: Duration::from_secs(r.lookback_hours * 3600),
            overlap: Duration::from_secs(r.overlap_secs),
            page_size: r.page_size,
            store_ids: r.store_ids.iter().map(|s| s.trim().to_string()).collect(),
        }
    }
}

use chrono::{Offset, Utc};

fn parse_offset(s: &str) -> Option<chrono::FixedOffset> {
    let s = s.trim();
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m) = (h.parse::<u8>().ok()?, m.parse::<u8>().ok()?);
    if h > 18 || m > 59 {
        return None;
    }
    chrono::FixedOffset::east_opt(sign * (i32::from(h) * 3600 + i32::from(m) * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest configuration `resolve` accepts.
    fn valid() -> Config {
        let mut c = Config::default();
        c.webhook_auth.basic = vec!["kuper:secret".into()];
        c.kuper.client_id = "client".into();
        c.kuper.client_secret = "secret".into();
        c
    }

    #[test]
    fn defaults_need_webhook_credentials() {
        let problems = Config::default().resolve().err().unwrap();
        assert!(problems.iter().any(|p| p.contains("webhook_auth")), "{problems:?}");
    }

    #[test]
    fn every_problem_is_reported() {
        let mut c = Config::default();
        c.server.listen = "nope".into();
        c.defaults.timezone_offset = "MSK".into();
        c.webhook_auth.basic = vec!["nocolon".into()];
        let problems = c.resolve().err().unwrap();
        for needle in ["server.listen", "timezone_offset", "webhook_auth.basic[0]"] {
            assert!(problems.iter().any(|p| p.contains(needle)), "{needle} missing in {problems:?}");
        }
    }

    /// The keys that take one of a few names (issue #15): each is read into its enum, an unknown
    /// name is reported with its key, its source and the allowed names, and so is a number
    /// (figment would otherwise take it as a variant's index).
    #[test]
    fn named_values_are_typed_and_a_wrong_one_is_reported_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kuper-bridge.toml");
        let toml = r#"
            [server]
            role = "worker"
            [kuper]
            auth = "client-token"
            notification_format = "event"
            [defaults]
            delivery = "merchant"
            [[stores]]
            id = "1"
            delivery = "kuper"
            [[stores]]
            id = "2"
            [acceptance_hook]
            url = "http://127.0.0.1:1/hook"
            on_error = "cancel"
            [log]
            format = "text"
        "#;
        std::fs::write(&file, toml).unwrap();
        let loaded = load_report(Some(&file)).unwrap();
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        let c = loaded.config.unwrap();
        assert_eq!(c.server.role, Choice(Role::Worker));
        assert!(c.server.runs_dispatcher() && !c.server.serves_api());
        assert_eq!(c.kuper.auth.0, KuperAuthMode::ClientToken);
        assert_eq!(c.kuper.notification_format.0, NotificationFormat::Event);
        assert_eq!(c.defaults.delivery.0, Delivery::Merchant);
        assert_eq!(c.stores[0].delivery, Some(Choice(Delivery::Kuper)));
        assert_eq!(c.stores[1].delivery, None, "unset: [defaults] applies");
        assert_eq!(c.acceptance_hook.as_ref().unwrap().on_error.0, OnError::Cancel);
        assert_eq!(c.log.format.0, LogFormat::Text);
        assert_eq!(format!("{} {}", c.kuper.auth, c.defaults.delivery), "client-token merchant", "shown as written");

        let bad = toml
            .replace(r#""worker""#, r#""Worker""#)
            .replace(r#""client-token""#, r#""client_token""#)
            .replace(r#""event""#, "3")
            .replace(r#"delivery = "merchant""#, r#"delivery = "self""#)
            .replace(r#"delivery = "kuper""#, r#"delivery = "courier""#)
            .replace(r#""cancel""#, r#""reject""#)
            .replace(r#""text""#, r#""yaml""#);
        std::fs::write(&file, bad).unwrap();
        let loaded = load_report(Some(&file)).unwrap();
        let at = format!(" (in {})", file.display());
        let expected = [
            r#"server.role: "Worker" — expected "all", "api" or "worker""#,
            r#"kuper.auth: "client_token" — expected "oauth" or "client-token""#,
            "kuper.notification_format: expected a string, found a number",
            r#"defaults.delivery: "self" — expected "kuper" or "merchant""#,
            r#"stores[0].delivery: "courier" — expected "kuper" or "merchant""#,
            r#"acceptance_hook.on_error: "reject" — expected "accept" or "cancel""#,
            r#"log.format: "yaml" — expected "json" or "text""#,
        ];
        for e in expected {
            assert!(loaded.problems.contains(&format!("{e}{at}")), "{e:?} missing in {:#?}", loaded.problems);
        }
        assert_eq!(loaded.problems.len(), expected.len(), "{:#?}", loaded.problems);
        let c = loaded.config.unwrap();
        assert_eq!(
            (c.server.role, c.kuper.notification_format),
            (Server::default().role, Kuper::default().notification_format),
            "the defaults stand in"
        );

        assert_eq!("api".parse::<Choice<Role>>(), Ok(Choice(Role::Api)));
        assert_eq!("API".parse::<Choice<Role>>(), Err(r#""API" — expected "all", "api" or "worker""#.to_string()));
    }

    #[test]
    fn secrets_and_ids_that_look_like_numbers_stay_strings() {
        let toml = r#"
            [kuper]
            client_secret = 12345678
            [webhook_auth]
            basic = "kuper:secret"
            [[stores]]
            id = 1184
        "#;
        let c: Config =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml)).extract().unwrap();
        assert_eq!(c.kuper.client_secret, "12345678");
        assert_eq!(c.webhook_auth.basic, vec!["kuper:secret".to_string()], "a single value is a list of one");
        assert_eq!(c.stores[0].id, "1184");
    }

    #[test]
    fn deadline_settings_are_validated_and_resolved() {
        let mut c = valid();
        let r = c.resolve().ok().unwrap();
        assert_eq!(r.policy.deadlines, DeadlineSettings::default(), "config and domain defaults agree");
        assert!(r.deadline_sweep.is_some());
        c.deadlines.assembly_warn_before_secs = Some(0);
        c.deadlines.restaurant_accept_secs = 3;
        c.deadlines.restaurant_accept_warn_before_secs = Some(1);
        let r = c.resolve().ok().unwrap();
        assert_eq!(r.policy.deadlines.restaurant_accept_ms, 3_000);
        assert_eq!(r.policy.deadlines.restaurant_accept_warn_ms, 1_000);
        assert_eq!(r.policy.deadlines.assembly_warn_ms, 0);
        assert_eq!(r.policy.deadlines.delivery_window_warn_ms, 120_000);
        c.deadlines.enabled = false;
        assert!(c.resolve().ok().unwrap().deadline_sweep.is_none());

        c.deadlines.restaurant_accept_warn_before_secs = None; // the global 120 s ≥ 3 s
        c.deadlines.sweep_interval_ms = 0;
        c.deadlines.delivery_window_warn_before_secs = Some(100_000);
        let problems = c.resolve().err().unwrap();
        for needle in [
            "deadlines.restaurant_accept_warn_before_secs",
            "deadlines.sweep_interval_ms",
            "deadlines.delivery_window_warn_before_secs",
        ] {
            assert!(problems.iter().any(|p| p.contains(needle)), "{needle} missing in {problems:?}");
        }
    }

    #[test]
    fn reconciliation_is_off_by_default_and_typed() {
        let c = valid();
        let resolved = c.resolve().ok().unwrap();
        assert!(!resolved.reconciliation_enabled);
        assert_eq!(resolved.reconciliation.interval, Duration::from_secs(60));
        assert_eq!(resolved.reconciliation.list_url(), "https://merchant-api.sbermarket.ru/ofm/api/v1/shipments");
        assert!(!resolved.warnings.iter().any(|w| w.contains("reconciliation")), "{:?}", resolved.warnings);

        let toml = r#"
            [reconciliation]
            enabled = true
            interval_secs = 5
            lookback_hours = 2
            store_ids = [1184, "27"]
        "#;
        let c: Config = Figment::from(Serialized::defaults(c)).merge(Toml::string(toml)).extract().unwrap();
        let resolved = c.resolve().ok().unwrap();
        assert!(resolved.reconciliation_enabled);
        assert_eq!(resolved.reconciliation.interval, Duration::from_secs(5));
        assert_eq!(resolved.reconciliation.lookback, Duration::from_secs(7200));
        assert_eq!(resolved.reconciliation.store_ids, vec!["1184".to_string(), "27".to_string()]);

        let mut bad = c.clone();
        bad.reconciliation.interval_secs = 0;
        bad.reconciliation.page_size = 0;
        bad.reconciliation.path = "shipments".into();
        let problems = bad.resolve().err().unwrap();
        for needle in ["reconciliation.interval_secs", "reconciliation.page_size", "reconciliation.path"] {
            assert!(problems.iter().any(|p| p.contains(needle)), "{needle} missing in {problems:?}");
        }
        let unknown = "[reconciliation]\nenabeld = true\n";
        let typo: Result<Config, _> =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(unknown)).extract();
        assert!(typo.is_err(), "a misspelt key is refused, not silently ignored");
    }

    #[test]
    fn kuper_credentials_are_required_where_kuper_is_called() {
        assert!(valid().resolve().is_ok());
        for (auth, clear, needle) in [
            ("oauth", "client_secret", "kuper.client_secret: required"),
            ("oauth", "client_id", "kuper.client_id: required"),
            ("client-token", "client_token", "kuper.client_token: required"),
        ] {
            let mut c = valid();
            c.kuper.auth = auth.parse().unwrap();
            c.kuper.client_token = "token".into();
            match clear {
                "client_secret" => c.kuper.client_secret.clear(),
                "client_id" => c.kuper.client_id.clear(),
                _ => c.kuper.client_token.clear(),
            }
            let problems = c.resolve().err().unwrap_or_default();
            assert!(problems.iter().any(|p| p.contains(needle)), "{needle} missing in {problems:?}");
            // An API-only replica never calls Kuper: a warning there, not a refusal.
            c.server.role = Choice(Role::Api);
            let resolved = c.resolve().ok().unwrap();
            assert!(resolved.warnings.iter().any(|w| w.contains(clear)), "{:?}", resolved.warnings);
        }
        let mut c = valid();
        c.kuper.client_secret.clear();
        c.kuper.client_secret_file = Some(PathBuf::from("/nonexistent/kuper-secret"));
        let problems = c.resolve().err().unwrap_or_default();
        assert_eq!(problems.iter().filter(|p| p.contains("client_secret")).count(), 1, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("/nonexistent/kuper-secret")), "{problems:?}");
    }

    #[test]
    fn every_key_problem_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kuper-bridge.toml");
        std::fs::write(
            &file,
            r#"
            [server]
            listn = "127.0.0.1:1"
            body_limit = "large"
            [kuper]
            client_id = "id"
            client_secret = "s"
            [webhook_auth]
            basic = ["kuper:secret"]
            [[stores]]
            id = "1"
            [[stores]]
            id = "2"
            delivry = "merchant"
            [pickup]
            code_length = 2
            [nonsense]
            x = 1
            "#,
        )
        .unwrap();
        let loaded = load_report(Some(&file)).unwrap();
        let problems = loaded.problems.join("\n");
        for needle in [
            "server.listn: unknown key (did you mean listen?)",
            "server.body_limit: expected",
            "stores[1].delivry: unknown key (did you mean delivery?)",
            "nonsense: unknown key",
        ] {
            assert!(problems.contains(needle), "{needle:?} missing in:\n{problems}");
        }
        assert!(problems.contains(&file.display().to_string()), "the problems say where: {problems}");
        let config = loaded.config.unwrap();
        assert_eq!(config.stores.len(), 2, "the rest was read");
        assert_eq!(config.server.body_limit, Server::default().body_limit, "a bad value falls back to the default");
        let problems = config.resolve().err().unwrap_or_default();
        assert!(problems.iter().any(|p| p.starts_with("pickup.code_length")), "{problems:?}");
        assert!(load(Some(&file)).is_err());

        std::fs::write(&file, "[[api_keys]]\nkey = \"0123456789abcdef\"\nscopes = [\"read\"]\n[server]\nlistn = 1\n")
            .unwrap();
        let loaded = load_report(Some(&file)).unwrap();
        assert_eq!(
            loaded.problems,
            vec![
                format!("api_keys[0].name: required (in {})", file.display()),
                format!("server.listn: unknown key (did you mean listen?) (in {})", file.display()),
            ],
            "a missing key does not hide the others"
        );
        assert_eq!(loaded.missing, vec!["api_keys[0].name".to_string()]);
        assert!(loaded.config.is_some_and(|c| c.api_keys[0].name.is_empty()));
    }

    #[test]
    fn the_example_config_parses() {
        let example = include_str!("../../../docs/kuper-bridge.example.toml");
        let c: Config =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(example)).extract().unwrap();
        assert!(!c.reconciliation.enabled);
        assert!(c.server.tls.is_none(), "[server.tls] stays commented out in the example");
    }

    /// What the Debian package installs as /etc/kuper-bridge/kuper-bridge.toml: every key known,
    /// and refused until the merchant's own credentials are in (`.ci/run` checks the installed
    /// binary says so too).
    #[test]
    fn the_package_template_waits_for_credentials() {
        let template = include_str!("../../../deploy/debian/kuper-bridge.toml");
        let c: Config =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(template)).extract().unwrap();
        assert_eq!(c.database.url, "sqlite:///var/lib/kuper-bridge/kuper-bridge.db", "the unit's StateDirectory");
        assert!(c.server.tls.is_none() && c.subscribers.is_empty() && c.stores.is_empty());
        let problems = c.resolve().err().unwrap_or_default().join("\n");
        for needle in ["kuper.client_id: required", "webhook_auth: no credential configured"] {
            assert!(problems.contains(needle), "{needle} missing in:\n{problems}");
        }
    }

    #[test]
    fn console_settings_are_checked_and_converted() {
        let mut c = Config::default();
        c.webhook_auth.basic = vec!["kuper:secret".into()];
        c.kuper.client_id = "id".into();
        c.kuper.client_secret = "secret".into();
        assert!(c.resolve().is_ok(), "the defaults are valid");
        c.console = Console {
            time_zone_offset_minutes: 900,
            session_idle_minutes: 0,
            session_max_hours: 721,
            secure_cookie: true,
        };
        let problems = c.resolve().err().unwrap_or_default().join("\n");
        for key in ["console.time_zone_offset_minutes", "console.session_idle_minutes", "console.session_max_hours"] {
            assert!(problems.contains(key), "{key} not reported:\n{problems}");
        }
        let settings = Console {
            time_zone_offset_minutes: 300,
            session_idle_minutes: 5,
            session_max_hours: 2,
            secure_cookie: true,
        }
        .settings("postgres://u@h/db", KuperAuthMode::ClientToken);
        assert_eq!(settings.session_idle_ms, 300_000);
        assert_eq!(settings.session_max_ms, 7_200_000);
        assert_eq!(settings.backend, kuper_bridge_app::ui::Backend::Postgres);
        assert_eq!(settings.kuper_auth, kuper_bridge_app::ui::KuperAuthMode::ClientToken);
        assert!(settings.secure_cookie);
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("+03:00").map(|o| o.local_minus_utc()), Some(10800));
        assert_eq!(parse_offset("-05:30").map(|o| o.local_minus_utc()), Some(-19800));
        assert_eq!(parse_offset("03:00"), None);
        assert_eq!(parse_offset("+999999:00"), None, "no overflow");
        assert_eq!(parse_offset("+03:-30"), None);
    }
}

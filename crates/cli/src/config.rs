//! Configuration: one TOML file plus `KUPER_BRIDGE_<SECTION>__<KEY>` environment overrides
//! (interfaces.md). `check()` explains every problem at once instead of failing on the first.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use kuper_bridge_app::{ApiKey, Scope, WebhookAuth};
use kuper_bridge_dispatcher::{DispatcherConfig, KuperAuth, ReconcileConfig, RetryPolicy};
use kuper_bridge_domain::policy::DEFAULT_CANCEL_REASONS;
use kuper_bridge_domain::{Delivery, Policy, StoreProfile};
use kuper_bridge_wire::NotificationFormat;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
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
    pub pickup: Pickup,
    pub audit: Audit,
    pub log: Log,
    /// Later features (forwarding, acceptance hook) are parsed so that a config written for
    /// them is not refused; `config check` says they are not active yet.
    pub subscribers: Vec<serde_json::Value>,
    pub acceptance_hook: Option<serde_json::Value>,
    pub reconciliation: Reconciliation,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    pub listen: String,
    pub webhook_path: String,
    /// Largest accepted request body, bytes (protocol.md §4: 1 MiB).
    pub body_limit: usize,
    /// `all` (default): webhooks, REST API and the notification dispatcher; `api`: webhooks
    /// and REST API only; `worker`: the dispatcher plus /healthz, /readyz and /metrics.
    pub role: String,
}

impl Server {
    pub fn runs_dispatcher(&self) -> bool {
        self.role != "api"
    }

    pub fn serves_api(&self) -> bool {
        self.role != "worker"
    }
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            webhook_path: "/kuper-webhook".into(),
            body_limit: 1024 * 1024,
            role: "all".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    pub url: String,
    /// How long a write waits for a lock held by another process (ms).
    pub busy_timeout_ms: u64,
}

impl Default for Database {
    fn default() -> Self {
        Self { url: "sqlite://kuper-bridge.db".into(), busy_timeout_ms: 5000 }
    }
}

impl Database {
    pub fn store_options(&self) -> kuper_bridge_storage::StoreOptions {
        kuper_bridge_storage::StoreOptions { busy_timeout: std::time::Duration::from_millis(self.busy_timeout_ms) }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Kuper {
    pub base_url: String,
    pub auth: String,
    #[serde(deserialize_with = "lenient::string")]
    pub client_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub client_secret: String,
    pub client_secret_file: Option<PathBuf>,
    #[serde(deserialize_with = "lenient::string")]
    pub client_token: String,
    pub client_token_file: Option<PathBuf>,
    pub notification_format: String,
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
            auth: "oauth".into(),
            client_id: String::new(),
            client_secret: String::new(),
            client_secret_file: None,
            client_token: String::new(),
            client_token_file: None,
            notification_format: "brief".into(),
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
    pub delivery: Option<String>,
    #[serde(default)]
    pub restaurant: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Defaults {
    pub delivery: String,
    pub restaurant: bool,
    pub assembly_minutes: i64,
    /// Offset written into every time we emit.
    pub timezone_offset: String,
    pub number_prefix: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            delivery: "kuper".into(),
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
    pub format: String,
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self { format: "json".into(), level: "info".into() }
    }
}

/// Loads defaults ← file ← environment. `path` None: `kuper-bridge.toml` if present.
pub fn load(path: Option<&Path>) -> Result<(Config, Option<PathBuf>), String> {
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
    let mut config: Config =
        figment.extract().map_err(|e| e.into_iter().map(|e| format!("- {e}")).collect::<Vec<_>>().join("\n"))?;
    raw_env_strings(&mut config);
    Ok((config, used))
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
    pub api_keys: Vec<ApiKey>,
    pub dispatcher: DispatcherConfig,
    /// The reconciliation job's settings; it runs periodically only when `enabled`.
    pub reconciliation: ReconcileConfig,
    pub reconciliation_enabled: bool,
    pub warnings: Vec<String>,
}

impl Config {
    /// Validates every key; all problems are reported together.
    pub fn resolve(&self) -> Result<Resolved, Vec<String>> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!("server.listen: {:?} is not host:port (e.g. 127.0.0.1:8080)", self.server.listen));
        }
        if !self.server.webhook_path.starts_with('/') || self.server.webhook_path.starts_with("/api/") {
            problems.push("server.webhook_path: must start with / and lie outside /api/".into());
        }
        if !matches!(self.server.role.as_str(), "all" | "api" | "worker") {
            problems.push(format!("server.role: {:?} — expected all, api or worker", self.server.role));
        }
        if self.server.body_limit < 1024 {
            problems.push("server.body_limit: at least 1024 bytes".into());
        }
        let url = &self.database.url;
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            problems.push(format!(
                "database.url: {:?} — expected sqlite://PATH or postgres://USER@HOST/DB",
                kuper_bridge_storage::redact_url(url)
            ));
        }
        let offset = parse_offset(&self.defaults.timezone_offset).unwrap_or_else(|| {
            problems.push(format!("defaults.timezone_offset: {:?} is not like +03:00", self.defaults.timezone_offset));
            Utc.fix()
        });
        let delivery = |s: &str, key: &str, problems: &mut Vec<String>| match s {
            "kuper" => Delivery::Kuper,
            "merchant" => Delivery::Merchant,
            other => {
                problems.push(format!("{key}: {other:?} — expected \"kuper\" or \"merchant\""));
                Delivery::Kuper
            }
        };
        let default_store = StoreProfile {
            delivery: delivery(&self.defaults.delivery, "defaults.delivery", &mut problems),
            restaurant: self.defaults.restaurant,
        };
        let mut stores = std::collections::HashMap::new();
        for (i, s) in self.stores.iter().enumerate() {
            if s.id.trim().is_empty() {
                problems.push(format!("stores[{i}].id: must not be empty"));
            }
            let profile = StoreProfile {
                delivery: s
                    .delivery
                    .as_deref()
                    .map(|d| delivery(d, &format!("stores[{i}].delivery"), &mut problems))
                    .unwrap_or(default_store.delivery),
                restaurant: s.restaurant.unwrap_or(default_store.restaurant),
            };
            if stores.insert(s.id.clone(), profile).is_some() {
                problems.push(format!("stores[{i}].id: {:?} listed twice", s.id));
            }
        }
        if !(1..=24 * 60).contains(&self.defaults.assembly_minutes) {
            problems.push("defaults.assembly_minutes: between 1 and 1440".into());
        }
        let format = match self.kuper.notification_format.as_str() {
            "brief" => NotificationFormat::Brief,
            "event" => NotificationFormat::Event,
            other => {
                problems.push(format!("kuper.notification_format: {other:?} — expected \"brief\" or \"event\""));
                NotificationFormat::Brief
            }
        };
        if !(self.kuper.base_url.starts_with("http://") || self.kuper.base_url.starts_with("https://")) {
            problems.push(format!("kuper.base_url: {:?} must be an http(s) URL", self.kuper.base_url));
        }
        let auth = match self.kuper.auth.as_str() {
            "oauth" => {
                let secret = read_secret(
                    &self.kuper.client_secret,
                    &self.kuper.client_secret_file,
                    "kuper.client_secret",
                    &mut problems,
                );
                if self.kuper.client_id.trim().is_empty() || secret.is_empty() {
                    warnings.push(
                        "kuper.client_id / kuper.client_secret are empty: notifications will fail until they are set"
                            .into(),
                    );
                }
                KuperAuth::OAuth { client_id: self.kuper.client_id.trim().to_string(), client_secret: secret }
            }
            "client-token" => {
                let token = read_secret(
                    &self.kuper.client_token,
                    &self.kuper.client_token_file,
                    "kuper.client_token",
                    &mut problems,
                );
                if token.is_empty() {
                    problems.push("kuper.client_token: required when kuper.auth = \"client-token\"".into());
                }
                KuperAuth::ClientToken { token }
            }
            other => {
                problems.push(format!("kuper.auth: {other:?} — expected \"oauth\" or \"client-token\""));
                KuperAuth::ClientToken { token: String::new() }
            }
        };
        for r in &self.kuper.cancel_reasons {
            if r.trim().is_empty() || r.contains(char::is_whitespace) {
                problems.push(format!("kuper.cancel_reasons: {r:?} is not a slug"));
            }
        }
        for (i, b) in self.webhook_auth.basic.iter().enumerate() {
            if !b.contains(':') {
                problems.push(format!("webhook_auth.basic[{i}]: expected \"user:password\""));
            }
        }
        let webhook_auth = WebhookAuth {
            basic: self.webhook_auth.basic.clone(),
            bearer: self.webhook_auth.bearer.iter().filter(|s| !s.trim().is_empty()).cloned().collect(),
            header_tokens: self.webhook_auth.header_tokens.iter().filter(|s| !s.trim().is_empty()).cloned().collect(),
        };
        if webhook_auth.is_empty() {
            problems.push("webhook_auth: no credential configured; Kuper's webhooks would all be refused (set basic, bearer or header_tokens)".into());
        }
        let mut api_keys = Vec::new();
        for (i, k) in self.api_keys.iter().enumerate() {
            let key = read_secret(&k.key, &k.key_file, &format!("api_keys[{i}].key"), &mut problems);
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
        if !(1..=60_000).contains(&self.database.busy_timeout_ms) {
            problems.push("database.busy_timeout_ms: between 1 and 60000".into());
        }
        if self.defaults.number_prefix.ends_with(|c: char| c.is_ascii_digit()) {
            problems.push("defaults.number_prefix: must not end in a digit (KB-1 and KB1-1 would read alike)".into());
        }
        if !(4..=12).contains(&self.pickup.code_length) {
            problems.push("pickup.code_length: between 4 and 12 (6 recommended)".into());
        }
        if self.pickup.max_attempts == 0
            || !(0..=30 * 86_400).contains(&self.pickup.lockout_secs)
            || self.pickup.client_failures_per_minute == 0
        {
            problems
                .push("pickup: max_attempts and client_failures_per_minute positive, lockout_secs not negative".into());
        }
        if !self.subscribers.is_empty() || self.acceptance_hook.is_some() {
            warnings.push("subscribers / acceptance_hook are accepted but not active in this version".into());
        }
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
        if !problems.is_empty() {
            return Err(problems);
        }
        let request_timeout = Duration::from_millis(d.request_timeout_ms);
        // Worst case of one attempt: wait for another sender's token fetch, fetch, send,
        // forced refresh, resend.
        let attempt_budget = request_timeout * 5;
        Ok(Resolved {
            policy: Policy {
                stores,
                default_store,
                assembly_minutes: self.defaults.assembly_minutes,
                offset,
                synthesize_assembled: self.kuper.synthesize_assembled,
                cancel_reasons: self.kuper.cancel_reasons.clone(),
                notification_format: format,
                number_prefix: self.defaults.number_prefix.clone(),
                pickup_code_length: self.pickup.code_length,
                pickup_max_attempts: self.pickup.max_attempts.max(1),
                pickup_lockout_secs: self.pickup.lockout_secs,
            },
            webhook_auth,
            api_keys,
            dispatcher: DispatcherConfig {
                base_url: self.kuper.base_url.clone(),
                notifications_path: self.kuper.notifications_path.clone().unwrap_or_else(|| {
                    if self.kuper.auth == "client-token" { "/v3/notifications" } else { "/ofm/api/v1/notifications" }
                        .into()
                }),
                token_path: self.kuper.token_path.clone(),
                auth: auth.clone(),
                request_timeout,
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
            },
            reconciliation: ReconcileConfig {
                base_url: self.kuper.base_url.clone(),
                list_path: r.path.clone(),
                token_path: self.kuper.token_path.clone(),
                auth: auth.clone(),
                request_timeout,
                connect_timeout: Duration::from_millis(d.connect_timeout_ms),
                interval: Duration::from_secs(r.interval_secs),
                lookback: Duration::from_secs(r.lookback_hours * 3600),
                overlap: Duration::from_secs(r.overlap_secs),
                page_size: r.page_size,
                store_ids: r.store_ids.iter().map(|s| s.trim().to_string()).collect(),
            },
            reconciliation_enabled: r.enabled,
            warnings,
        })
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

    #[test]
    fn defaults_need_webhook_credentials() {
        let problems = Config::default().resolve().err().unwrap();
        assert!(problems.iter().any(|p| p.contains("webhook_auth")), "{problems:?}");
    }

    #[test]
    fn every_problem_is_reported() {
        let mut c = Config::default();
        c.server.listen = "nope".into();
        c.kuper.auth = "magic".into();
        c.defaults.timezone_offset = "MSK".into();
        c.webhook_auth.basic = vec!["nocolon".into()];
        let problems = c.resolve().err().unwrap();
        for needle in ["server.listen", "kuper.auth", "timezone_offset", "webhook_auth.basic[0]"] {
            assert!(problems.iter().any(|p| p.contains(needle)), "{needle} missing in {problems:?}");
        }
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
    fn reconciliation_is_off_by_default_and_typed() {
        let mut c = Config::default();
        c.webhook_auth.basic = vec!["kuper:secret".into()];
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
    fn the_example_config_parses() {
        let example = include_str!("../../../docs/kuper-bridge.example.toml");
        let c: Config =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(example)).extract().unwrap();
        assert!(!c.reconciliation.enabled);
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

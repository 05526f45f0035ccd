//! The conformance runner behind `kuper-bridge sim run`: plays Kuper against a merchant under
//! test, scenario by scenario, and reports which rules the merchant broke.
//!
//! The runner serves the simulator on the listener it is given (the merchant sends its
//! notifications and token requests there), places orders through the simulator's own
//! machinery, sends Kuper's webhooks, and — when told where kuper-bridge's REST API is — plays
//! the store staff through that API. Without the API it waits for the merchant's own
//! notifications, each within a deadline. Every notification is judged by the simulator's
//! validator; the runner adds what only a whole scenario can show: the exact sequence of events,
//! Kuper's final state, and scenario-specific expectations.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use kuper_bridge_sim::runner::{run, RunOptions};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9090").await?;
//! let mut options = RunOptions::new("http://127.0.0.1:8080/kuper-webhook");
//! options.merchant_api = Some("http://127.0.0.1:8080".into());
//! options.api_key = Some("secret-key".into());
//! let report = run(listener, Default::default(), options, &mut |event| eprintln!("{}", event.line())).await;
//! print!("{}", report.table());
//! std::process::exit(if report.passed() { 0 } else { 1 });
//! # }
//! ```

mod ctx;
mod merchant_api;
mod report;
mod scenarios;
mod steps;

use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::config::{Profile, RepeatPolicy, SimConfig};
use crate::driver::TargetAuth;

pub use report::{ExchangeLine, Party, Report, ScenarioResult};

/// Which notification body format the merchant is expected to send (protocol.md §7). The
/// simulator accepts both; the runner checks that the merchant sticks to the chosen one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NotificationFormatChoice {
    /// `{"event_type","payload"}`
    #[default]
    Brief,
    /// `{"event":{"type","payload"}}`
    Event,
}

impl NotificationFormatChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationFormatChoice::Brief => "brief",
            NotificationFormatChoice::Event => "event",
        }
    }
}

impl std::str::FromStr for NotificationFormatChoice {
    type Err = String;

    /// `brief` or `event`, as the CLI's `--format` takes them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "brief" => Ok(NotificationFormatChoice::Brief),
            "event" => Ok(NotificationFormatChoice::Event),
            other => Err(format!("unknown format {other:?}: expected brief or event")),
        }
    }
}

/// The store the sandbox and the shipped development config (`kuper-bridge.toml`) list as
/// delivering itself (scheme C). One name for the config, the sandbox and the runner's default.
pub const SANDBOX_MERCHANT_STORE: &str = "sandbox-merchant";
/// The store the sandbox and the shipped development config list as a restaurant.
pub const SANDBOX_RESTAURANT_STORE: &str = "sandbox-restaurant";
/// Any store the merchant has not configured otherwise: Kuper delivers (schemes A and B).
pub const DEFAULT_KUPER_STORE: &str = "1184";

/// The stores the runner's orders name. The merchant decides the scheme from its own store
/// configuration (protocol.md §5), so these must be configured there: `merchant_delivery` as
/// delivering itself, `restaurant` as a restaurant with Kuper delivery; `kuper_delivery` may be
/// any store with the default (Kuper) delivery. The defaults are the stores of the shipped
/// `kuper-bridge.toml`, so the README's `sim run` passes against `serve` as shipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreIds {
    pub kuper_delivery: String,
    pub merchant_delivery: String,
    pub restaurant: String,
}

impl Default for StoreIds {
    fn default() -> Self {
        Self {
            kuper_delivery: DEFAULT_KUPER_STORE.to_owned(),
            merchant_delivery: SANDBOX_MERCHANT_STORE.to_owned(),
            restaurant: SANDBOX_RESTAURANT_STORE.to_owned(),
        }
    }
}

impl StoreIds {
    /// The store a scheme's orders name, and how the merchant must have it configured: for
    /// the message that explains a scheme the merchant ran differently.
    pub fn requirement(&self, scheme: crate::Scheme, restaurant: bool) -> String {
        match (scheme, restaurant) {
            (_, true) => format!(
                "restaurant orders name store {:?}, which the merchant must list as a restaurant \
                 (kuper-bridge: [[stores]] id = {:?}, restaurant = true); --stores restaurant=ID names another",
                self.restaurant, self.restaurant
            ),
            (crate::Scheme::C, false) => format!(
                "scheme C orders name store {:?}, which the merchant must list as delivering itself \
                 (kuper-bridge: [[stores]] id = {:?}, delivery = \"merchant\"); --stores merchant=ID names another",
                self.merchant_delivery, self.merchant_delivery
            ),
            _ => format!(
                "scheme A and B orders name store {:?}, which the merchant must treat as delivered by Kuper \
                 (the default for a store it does not list); --stores kuper=ID names another",
                self.kuper_delivery
            ),
        }
    }
}

impl std::fmt::Display for StoreIds {
    /// The form `FromStr` takes back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kuper={},merchant={},restaurant={}", self.kuper_delivery, self.merchant_delivery, self.restaurant)
    }
}

impl std::str::FromStr for StoreIds {
    type Err = String;

    /// `kuper=1184,merchant=sandbox-merchant,restaurant=sandbox-restaurant`, as `sim run
    /// --stores` takes it; a key left out keeps its default.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut stores = StoreIds::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!("{part:?}: expected KEY=STORE_ID (keys: kuper, merchant, restaurant)"));
            };
            let value = value.trim();
            if value.is_empty() {
                return Err(format!("{part:?}: the store id is empty"));
            }
            let slot = match key.trim() {
                "kuper" => &mut stores.kuper_delivery,
                "merchant" => &mut stores.merchant_delivery,
                "restaurant" => &mut stores.restaurant,
                other => return Err(format!("unknown key {other:?}: expected kuper, merchant or restaurant")),
            };
            value.clone_into(slot);
        }
        Ok(stores)
    }
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The merchant's webhook URL (`http://…/kuper-webhook`).
    pub target: String,
    /// How Kuper authenticates to the merchant.
    pub auth: TargetAuth,
    /// Base URL of kuper-bridge (`http://host:port`, with or without `/api/v1`). When given,
    /// the runner performs the store's actions through its REST API; otherwise it waits for
    /// the merchant's own notifications.
    pub merchant_api: Option<String>,
    /// Sent as `Authorization: Bearer <key>` to the REST API; needs the `write` scope.
    pub api_key: Option<String>,
    pub format: NotificationFormatChoice,
    /// Names from [`catalogue`]; a trailing `*` matches a prefix; empty runs every scenario.
    pub scenarios: Vec<String>,
    /// Seeds the order generator: scenario `i` of the catalogue uses a generator derived from
    /// `seed` and `i`, so a scenario's orders do not depend on which others run.
    pub seed: u64,
    /// Seeds the orders' Kuper ids (`originalOrderId`, `orderUUID`) apart from their content:
    /// random per run by default, so running again against the same merchant (which keeps
    /// every order it was sent) never repeats an order, whatever the seed.
    pub id_seed: u64,
    /// How long each step waits for the merchant's notification.
    pub deadline: Duration,
    /// How long the runner listens for notifications that must not come (after Kuper's
    /// cancellation, after duplicate webhooks).
    pub quiet: Duration,
    /// Override the simulator's [`SimConfig::profile`] and [`SimConfig::repeat`].
    pub profile: Profile,
    pub repeat: RepeatPolicy,
    pub stores: StoreIds,
}

impl RunOptions {
    /// Defaults: Basic `kuper:secret` (what kuper-bridge's sample config expects), brief
    /// format, every scenario, seed 42, 10 s per step, 1 s of quiet.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            auth: TargetAuth::Basic("kuper:secret".to_owned()),
            merchant_api: None,
            api_key: None,
            format: NotificationFormatChoice::Brief,
            scenarios: Vec::new(),
            seed: 42,
            id_seed: rand::random(),
            deadline: Duration::from_secs(10),
            quiet: Duration::from_secs(1),
            profile: Profile::Brief,
            repeat: RepeatPolicy::Reject422,
            stores: StoreIds::default(),
        }
    }

    /// What would make a run meaningless, for the CLI to refuse before it starts.
    pub fn check(&self) -> Result<(), String> {
        let url_ok = |text: &str| reqwest::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !url_ok(&self.target) {
            return Err(format!("target {:?} is not an http(s) URL", self.target));
        }
        if let Some(api) = &self.merchant_api {
            if !url_ok(api) {
                return Err(format!("merchant API {api:?} is not an http(s) URL"));
            }
            if self.api_key.as_deref().is_none_or(str::is_empty) {
                return Err("--merchant-api needs --api-key".to_owned());
            }
        }
        let unknown: Vec<&str> =
            self.scenarios.iter().map(String::as_str).filter(|name| scenarios::select(name).is_empty()).collect();
        if !unknown.is_empty() {
            return Err(format!("unknown scenario(s): {}; see the catalogue", unknown.join(", ")));
        }
        Ok(())
    }
}

/// One entry of the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScenarioInfo {
    pub name: &'static str,
    pub description: &'static str,
}

/// Every scenario, in the order a full run plays them.
pub fn catalogue() -> Vec<ScenarioInfo> {
    scenarios::CATALOGUE.iter().map(|entry| ScenarioInfo { name: entry.name, description: entry.description }).collect()
}

/// What the runner reports while it runs, for a progress bar.
#[derive(Clone, Debug, PartialEq)]
pub enum ProgressEvent {
    Started { index: usize, total: usize, name: String },
    Finished { index: usize, total: usize, name: String, passed: bool, duration: Duration },
}

impl ProgressEvent {
    /// `[#####---------------]  5/17 PASS a-happy-path (0.42 s)`
    pub fn line(&self) -> String {
        const WIDTH: usize = 20;
        let (done, total, label) = match self {
            ProgressEvent::Started { index, total, name } => (*index, *total, format!("RUN  {name}")),
            ProgressEvent::Finished { index, total, name, passed, duration } => {
                let verdict = if *passed { "PASS" } else { "FAIL" };
                (index + 1, *total, format!("{verdict} {name} ({:.2} s)", duration.as_secs_f64()))
            }
        };
        let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH).min(WIDTH);
        let width = total.to_string().len();
        format!("[{}{}] {done:>width$}/{total} {label}", "#".repeat(filled), "-".repeat(WIDTH - filled))
    }
}

/// Runs the selected scenarios against `opts.target`, serving the fake Kuper on `listener`
/// for the whole run, and reports each scenario. Never fails: a problem of the run itself
/// (the simulator cannot start, an unknown scenario name) is a failing result.
pub async fn run(
    listener: TcpListener,
    sim: SimConfig,
    opts: RunOptions,
    progress: &mut dyn FnMut(ProgressEvent),
) -> Report {
    let config = SimConfig { profile: opts.profile, repeat: opts.repeat, seed: opts.seed, ..sim };
    let mut results = Vec::new();
    let selected = scenarios::selection(&opts.scenarios);
    for name in &selected.unknown {
        results.push(ScenarioResult::broken(name, format!("unknown_scenario: no scenario named {name:?}")));
    }
    let handle = match crate::start(listener, config).await {
        Ok(handle) => handle,
        Err(error) => {
            results.push(ScenarioResult::broken("setup", format!("setup: cannot start the simulator: {error}")));
            return Report { results };
        }
    };
    let api = match merchant_api::MerchantApi::from_options(&opts) {
        Ok(api) => api,
        Err(message) => {
            results.push(ScenarioResult::broken("setup", format!("setup: {message}")));
            handle.shutdown().await;
            return Report { results };
        }
    };
    let total = selected.entries.len();
    for (position, (index, entry)) in selected.entries.iter().enumerate() {
        progress(ProgressEvent::Started { index: position, total, name: entry.name.to_owned() });
        let started = Instant::now();
        let result = scenarios::play(&handle.app, &opts, api.as_ref(), *index, entry).await;
        progress(ProgressEvent::Finished {
            index: position,
            total,
            name: entry.name.to_owned(),
            passed: result.passed,
            duration: started.elapsed(),
        });
        results.push(result);
    }
    handle.shutdown().await;
    Report { results }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_formats_and_draws_progress() {
        assert_eq!("Event".parse(), Ok(NotificationFormatChoice::Event));
        assert!("xml".parse::<NotificationFormatChoice>().is_err());
        let started = ProgressEvent::Started { index: 0, total: 4, name: "a".into() };
        assert_eq!(started.line(), "[--------------------] 0/4 RUN  a");
        let done = ProgressEvent::Finished {
            index: 1,
            total: 4,
            name: "b".into(),
            passed: false,
            duration: Duration::from_millis(1500),
        };
        assert_eq!(done.line(), "[##########----------] 2/4 FAIL b (1.50 s)");
    }

    #[test]
    fn store_ids_parse_with_defaults_for_what_is_left_out() {
        type Expected = Result<(&'static str, &'static str, &'static str), &'static str>;
        let table: [(&str, Expected); 6] = [
            ("", Ok(("1184", "sandbox-merchant", "sandbox-restaurant"))),
            ("merchant=m-1", Ok(("1184", "m-1", "sandbox-restaurant"))),
            ("kuper=27, merchant=m-1 ,restaurant=r-1", Ok(("27", "m-1", "r-1"))),
            ("merchant", Err("expected KEY=STORE_ID")),
            ("merchant=", Err("empty")),
            ("shop=5", Err("unknown key \"shop\"")),
        ];
        for (text, expected) in table {
            let got = text.parse::<StoreIds>();
            match (got, expected) {
                (Ok(ids), Ok((kuper, merchant, restaurant))) => {
                    assert_eq!(
                        (ids.kuper_delivery.as_str(), ids.merchant_delivery.as_str(), ids.restaurant.as_str()),
                        (kuper, merchant, restaurant),
                        "{text}"
                    );
                }
                (Err(e), Err(part)) => assert!(e.contains(part), "{text}: {e}"),
                (got, expected) => panic!("{text}: got {got:?}, expected {expected:?}"),
            }
        }
        let ids = StoreIds::default();
        assert_eq!(ids.to_string().parse::<StoreIds>(), Ok(ids.clone()), "Display is what FromStr takes");
        assert!(ids.requirement(crate::Scheme::C, false).contains("delivery = \"merchant\""));
        assert!(ids.requirement(crate::Scheme::A, true).contains("restaurant = true"));
    }

    #[test]
    fn options_are_checked() {
        let mut options = RunOptions::new("http://127.0.0.1:1/kuper-webhook");
        assert_eq!(options.check(), Ok(()));
        options.scenarios = vec!["a-happy-path".into(), "cancel-at-every-stage-*".into()];
        assert_eq!(options.check(), Ok(()));
        options.scenarios.push("z-nope".into());
        assert!(options.check().is_err_and(|e| e.contains("z-nope")));
        options.scenarios.clear();
        options.merchant_api = Some("http://127.0.0.1:2".into());
        assert!(options.check().is_err());
        options.api_key = Some("k".into());
        assert_eq!(options.check(), Ok(()));
        options.target = "nowhere".into();
        assert!(options.check().is_err());
    }
}

//! The operator's commands that work on the configuration and the database directly:
//! `config check`, `orders …`, `outbox …` and `operators …`. Exit codes (interfaces.md): 0 ok, 1 error (a
//! refused action included), 2 invalid configuration or invalid arguments, 3 not found.

use clap::Subcommand;
use kuper_bridge::config::{self, Config, Resolved};
use kuper_bridge_app::operators as passwords;
use kuper_bridge_domain::{ActionKind, OrderState, Scheme};
use kuper_bridge_storage::{Exchange, NewOperator, OperatorRole, OrderFilter, OutboxStatus, Store, StoreError};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

const ERROR: u8 = 1;
const INVALID: u8 = 2;
const NOT_FOUND: u8 = 3;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and explain every problem at once (exit 2 if any).
    Check,
}

#[derive(Subcommand)]
pub enum OrdersCommand {
    /// List orders, newest first.
    List {
        /// Only orders in this state: created, accepted, in_work, assembled, ready, shipping,
        /// delivering, delivered or canceled.
        #[arg(long, value_parser = parse_state)]
        state: Option<OrderState>,
        /// Only orders of this scheme: kuper_delivery (A), pickup (B) or merchant_delivery (C).
        #[arg(long, value_parser = parse_scheme)]
        scheme: Option<Scheme>,
        /// Only orders of this store id.
        #[arg(long)]
        store: Option<String>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        /// Print a JSON array of the orders exactly as GET /api/v1/orders shows them (needs a
        /// configuration that `config check` accepts: allowed actions and deadlines depend on it).
        #[arg(long)]
        json: bool,
    },
    /// Show one order (Kuper id, orderUUID or merchant number) with its timeline.
    Show { reference: String },
    /// Apply a store action to an order, as POST /api/v1/orders/REF/ACTION does: the same body,
    /// the same rules, the same audit entry. The notification is queued in the database; a
    /// running gateway sends it. Prints the API's answer (or its error body) as JSON. Exit 0
    /// applied, 1 refused by the order's state (the API's 409), 2 invalid body, 3 no such order.
    Act {
        /// Kuper id (originalOrderId), orderUUID or merchant number.
        reference: String,
        /// accept, start-assembly, assembled, ready, pickup-code, estimated-delivery-time,
        /// delivering, delivered or cancel.
        #[arg(value_parser = parse_action)]
        action: ActionKind,
        /// The action's JSON body, e.g. '{"reason":"out_of_stock"}' (omit for none).
        #[arg(long)]
        body: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum OutboxCommand {
    /// List notifications and forwarded events, newest first.
    List {
        /// pending, dead, sent or skipped.
        #[arg(long, value_parser = parse_status)]
        status: Option<OutboxStatus>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
    },
    /// Send a dead letter again (it goes back to the head of its order's queue).
    Replay {
        id: i64,
        /// Why (kept in the order's timeline): what was fixed, who asked.
        #[arg(long)]
        reason: String,
    },
    /// Give up on a dead letter so later notifications of its order can flow.
    Skip {
        id: i64,
        /// Why (kept in the order's timeline).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum OperatorsCommand {
    /// Add an operator account (enabled). The password is read from standard input, one line,
    /// or from --password-file; never from the command line, where `ps` and shell history see it.
    /// Exit 2 when the name is taken or the password is refused (at least 10 characters).
    Add {
        /// The login name: up to 64 characters, no spaces.
        name: String,
        /// viewer (read), desk (pickup desk), operator (every order action) or admin (dead
        /// letters and operator accounts too).
        #[arg(long, value_parser = parse_role)]
        role: OperatorRole,
        /// Read the password from this file (its first line) instead of standard input.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// List the operator accounts: name, role, disabled, created (never the password hash).
    List,
    /// Disable an account: it can no longer log in (exit 3 when there is none).
    Disable { name: String },
    /// Enable a disabled account again (exit 3 when there is none).
    Enable { name: String },
    /// Set a new password, read from standard input (one line) or --password-file.
    Passwd {
        name: String,
        /// Read the password from this file (its first line) instead of standard input.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

fn one_of<T: Copy>(what: &str, s: &str, all: &[T], name: impl Fn(T) -> &'static str) -> Result<T, String> {
    all.iter().copied().find(|x| name(*x) == s).ok_or_else(|| {
        format!("unknown {what} {s:?}; expected one of {}", all.iter().map(|x| name(*x)).collect::<Vec<_>>().join(", "))
    })
}

fn parse_state(s: &str) -> Result<OrderState, String> {
    one_of("state", s, &OrderState::ALL, OrderState::as_str)
}

fn parse_scheme(s: &str) -> Result<Scheme, String> {
    // The letters too, like the REST API's `scheme` filter.
    Scheme::parse(s).ok_or_else(|| {
        format!("unknown scheme {s:?}; expected one of kuper_delivery, pickup, merchant_delivery (or A, B, C)")
    })
}

fn parse_action(s: &str) -> Result<ActionKind, String> {
    one_of("action", s, &ActionKind::ALL, ActionKind::as_str)
}

fn parse_role(s: &str) -> Result<OperatorRole, String> {
    one_of("role", s, &OperatorRole::ALL, OperatorRole::as_str)
}

fn parse_status(s: &str) -> Result<OutboxStatus, String> {
    let all = [OutboxStatus::Pending, OutboxStatus::Dead, OutboxStatus::Sent, OutboxStatus::Skipped];
    one_of("status", s, &all, OutboxStatus::as_str)
}

/// The configuration for a command, or the exit code after explaining why there is none.
fn load(path: Option<&Path>) -> Result<Config, ExitCode> {
    config::load(path).map(|(c, _)| c).map_err(|e| {
        eprintln!("configuration has problems (see `kuper-bridge config check`):\n{e}");
        ExitCode::from(INVALID)
    })
}

/// The validated configuration, for commands that apply the domain's rules or show what the
/// API shows (allowed actions, deadlines).
fn resolve(config: &Config) -> Result<Resolved, ExitCode> {
    config.resolve().map_err(|problems| {
        eprintln!("configuration has {} problem(s) (see `kuper-bridge config check`):", problems.len());
        for p in problems {
            eprintln!("- {p}");
        }
        ExitCode::from(INVALID)
    })
}

async fn open_store(config: &Config, resolved: Option<&Resolved>) -> anyhow::Result<Arc<dyn Store>> {
    let mut options = config.database.store_options();
    // An action changes the order like the gateway does, so it queues the same forwarded
    // events for the configured subscribers.
    if let Some(r) = resolved {
        options.forwarding = r.forwarding.clone();
    }
    let store = kuper_bridge_storage::open(&config.database.url, &options).await?;
    store.migrate().await?;
    Ok(store)
}

/// `config check`: every problem at once (unknown keys, wrong types and invalid values).
pub fn config_check(path: Option<&Path>) -> ExitCode {
    let loaded = match config::load_report(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("configuration cannot be read:\n{e}");
            return ExitCode::from(INVALID);
        }
    };
    match &loaded.file {
        Some(p) => println!("config file: {}", p.display()),
        None => println!("config file: none (built-in defaults and KUPER_BRIDGE_* variables)"),
    }
    let mut problems = loaded.problems;
    // What resolve says about a missing key (standing in as "") repeats the load's problem.
    let about_missing = |p: &String| loaded.missing.iter().any(|k| p.starts_with(&format!("{k}:")));
    let resolved = match &loaded.config {
        Some(c) => c.resolve().map_err(|p| problems.extend(p.into_iter().filter(|p| !about_missing(p)))).ok(),
        None => None,
    };
    for w in resolved.iter().flat_map(|r| &r.warnings) {
        println!("warning: {w}");
    }
    let (Some(config), Some(r), true) = (&loaded.config, &resolved, problems.is_empty()) else {
        eprintln!("{} problem(s):", problems.len());
        for p in &problems {
            eprintln!("- {p}");
        }
        if loaded.config.is_none() {
            eprintln!("(the other checks run once the keys above are fixed)");
        }
        return ExitCode::from(INVALID);
    };
    let auth = match &r.dispatcher.auth {
        kuper_bridge_dispatcher::KuperAuth::OAuth { client_id, .. } => format!("oauth (client_id {client_id:?})"),
        kuper_bridge_dispatcher::KuperAuth::ClientToken { .. } => "client-token".to_string(),
    };
    println!("listen:          {} (webhook {})", config.server.listen, config.server.webhook_path);
    match &r.tls {
        Some(cert) => println!(
            "tls:             HTTPS, certificate {} ({} in the chain), key {}",
            cert.files().cert_file.display(),
            cert.summary().chain_len,
            cert.files().key_file.display()
        ),
        None => println!("tls:             off (plain HTTP; a TLS proxy in front, or [server.tls])"),
    }
    println!("database:        {}", kuper_bridge_storage::redact_url(&config.database.url));
    println!("kuper:           {} via {auth}, format {}", config.kuper.base_url, config.kuper.notification_format);
    println!("notifications:   {}", r.dispatcher.notifications_url());
    println!(
        "webhook auth:    {} basic, {} bearer, {} client-token credential(s)",
        r.webhook_auth.basic.len(),
        r.webhook_auth.bearer.len(),
        r.webhook_auth.header_tokens.len()
    );
    println!(
        "stores:          {} listed; default delivery {}, restaurant {}",
        config.stores.len(),
        config.defaults.delivery,
        config.defaults.restaurant
    );
    println!(
        "api keys:        {}",
        r.api_keys.iter().map(|k| format!("{} {:?}", k.name, k.scopes)).collect::<Vec<_>>().join(", ")
    );
    println!("ok");
    ExitCode::SUCCESS
}

pub async fn orders(path: Option<&Path>, command: OrdersCommand) -> anyhow::Result<ExitCode> {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    match command {
        OrdersCommand::List { state, scheme, store: store_id, limit, json } => {
            let resolved = if json {
                match resolve(&config) {
                    Ok(r) => Some(r),
                    Err(code) => return Ok(code),
                }
            } else {
                None
            };
            let store = open_store(&config, None).await?;
            let filter = OrderFilter {
                state: state.map(|s| s.as_str().to_string()),
                scheme: scheme.map(|s| s.as_str().to_string()),
                store: store_id,
                limit,
                ..Default::default()
            };
            let orders = store.list_orders(&filter).await?;
            if let Some(r) = resolved {
                let views: Vec<Value> =
                    orders.iter().map(|o| kuper_bridge_app::api::order_view(&r.policy, o)).collect();
                println!("{}", serde_json::to_string_pretty(&views)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<8} {:<16} {:<12} {:<18} {:<11} {:<14} store",
                "id", "kuper id", "number", "scheme", "state", "kuper state"
            );
            for o in orders {
                let order = &o.order;
                println!(
                    "{:<8} {:<16} {:<12} {:<18} {:<11} {:<14} {}",
                    o.id,
                    order.original_order_id.as_deref().unwrap_or("-"),
                    order.number,
                    order.scheme.as_str(),
                    order.state().as_str(),
                    order.kuper_state.as_str(),
                    order.store_id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        OrdersCommand::Show { reference } => {
            let store = open_store(&config, None).await?;
            let Some(o) = store.find_order(&reference).await? else {
                eprintln!("order {reference} not found");
                return Ok(ExitCode::from(NOT_FOUND));
            };
            let mut order = serde_json::to_value(&o)?;
            if let Some(p) = order.get_mut("pickup").and_then(|p| p.as_object_mut()) {
                p.insert("code".into(), Value::String("[hidden]".into()));
                // Milliseconds, like every other time shown (storage keeps seconds).
                let ms = kuper_bridge_app::api::seconds_to_ms(p.get("lockedUntil").and_then(Value::as_i64));
                p.insert("lockedUntil".into(), serde_json::json!(ms));
            }
            // The pickup code is the customer's secret, also in the bodies kept for audit.
            let mut events = serde_json::to_value(store.order_events(o.id).await?)?;
            for e in events.as_array_mut().into_iter().flatten() {
                for key in ["body", "response"] {
                    if let Some(Ok(mut v)) = e.get(key).and_then(|b| b.as_str()).map(serde_json::from_str::<Value>) {
                        kuper_bridge_app::api::redact_pickup_codes(&mut v);
                        e[key] = Value::String(v.to_string());
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({"order": order, "events": events}))?);
            Ok(ExitCode::SUCCESS)
        }
        OrdersCommand::Act { reference, action, body } => {
            let resolved = match resolve(&config) {
                Ok(r) => r,
                Err(code) => return Ok(code),
            };
            let store = open_store(&config, Some(&resolved)).await?;
            // The timeline tells it from the API's actions by its direction and "path": the
            // command that applied it.
            let exchange = Exchange {
                kind: "action".into(),
                direction: "internal".into(),
                path: Some(format!("kuper-bridge orders act {reference} {action}")),
                actor: Some(kuper_bridge_storage::Actor::Cli),
                ..Default::default()
            };
            let body = body.unwrap_or_default();
            // The REST API's own path: body checks, rules, outbox and audit in one place.
            let answer = kuper_bridge_app::api::apply_action(
                store.as_ref(),
                &resolved.policy,
                &reference,
                action,
                Some("application/json"),
                body.as_bytes(),
                exchange,
                None,
            )
            .await;
            match answer {
                Ok(a) => {
                    println!("{}", serde_json::to_string_pretty(&a.body)?);
                    eprintln!(
                        "{action} applied; order {reference} is {}; a running gateway sends the notification within its poll interval",
                        a.state
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("{}", serde_json::to_string_pretty(&e.body())?);
                    eprintln!("error: {}", e.message);
                    Ok(ExitCode::from(match e.status.as_u16() {
                        404 => NOT_FOUND,
                        400 | 415 | 422 => INVALID,
                        _ => ERROR,
                    }))
                }
            }
        }
    }
}

pub async fn outbox(path: Option<&Path>, command: OutboxCommand) -> anyhow::Result<ExitCode> {
    if let OutboxCommand::Replay { reason, .. } | OutboxCommand::Skip { reason, .. } = &command {
        if reason.trim().is_empty() {
            eprintln!("error: --reason is empty: say why (it is kept in the order's timeline)");
            return Ok(ExitCode::from(INVALID));
        }
    }
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let store = open_store(&config, None).await?;
    let operator = |reason: &str| Exchange {
        kind: "operator".into(),
        direction: "internal".into(),
        detail: Some(reason.trim().to_string()),
        actor: Some(kuper_bridge_storage::Actor::Cli),
        ..Default::default()
    };
    let decided = match command {
        OutboxCommand::List { status, limit } => {
            let records = store.list_outbox(status, limit).await?;
            // The order's Kuper id and our number, which the operator talks about with Kuper.
            let mut orders: HashMap<i64, (String, String)> = HashMap::new();
            for r in &records {
                if orders.contains_key(&r.order_id) {
                    continue;
                }
                // Storage finds orders by id only through the list's cursor: the newest order
                // below id + 1 is the order itself.
                let filter =
                    OrderFilter { limit: 1, before_id: Some(r.order_id.saturating_add(1)), ..Default::default() };
                let found = store.list_orders(&filter).await?.into_iter().find(|o| o.id == r.order_id);
                let names = found
                    .map(|o| (o.order.original_order_id.unwrap_or_else(|| "-".into()), o.order.number))
                    .unwrap_or_else(|| ("-".into(), "-".into()));
                orders.insert(r.order_id, names);
            }
            println!(
                "{:<8} {:<8} {:<16} {:<12} {:<32} {:<8} {:<6} last error",
                "id", "order", "kuper id", "number", "event", "status", "tries"
            );
            for r in records {
                let (kuper_id, number) = orders.get(&r.order_id).cloned().unwrap_or_default();
                println!(
                    "{:<8} {:<8} {:<16} {:<12} {:<32} {:<8} {:<6} {}",
                    r.id,
                    r.order_id,
                    kuper_id,
                    number,
                    r.event,
                    r.status.as_str(),
                    r.attempts,
                    r.last_error.unwrap_or_default()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        OutboxCommand::Replay { id, reason } => store.replay(id, operator(&reason)).await.map(|r| {
            format!(
                "outbox record {} ({}) is pending again; a running gateway sends it within its poll interval",
                r.id, r.event
            )
        }),
        OutboxCommand::Skip { id, reason } => store.skip(id, operator(&reason)).await.map(|r| {
            format!("outbox record {} ({}) skipped; later notifications of its order will flow", r.id, r.event)
        }),
    };
    match decided {
        Ok(message) => {
            println!("{message}");
            Ok(ExitCode::SUCCESS)
        }
        Err(StoreError::OutboxNotFound(id)) => {
            eprintln!("outbox record {id} not found");
            Ok(ExitCode::from(NOT_FOUND))
        }
        // Not a dead letter, say: the operator's decision does not apply.
        Err(e @ StoreError::NotDeadLetter { .. }) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(ERROR))
        }
        Err(e) => Err(e.into()),
    }
}

/// A password from `file` or standard input: one line, its line break removed. A second line
/// is refused rather than silently dropped (a wrong file, or two passwords pasted).
fn read_password(file: Option<&Path>) -> Result<String, String> {
    use std::io::{BufRead, IsTerminal};
    let text = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                // No echo control without a terminal library: say so, and point to the quiet ways.
                eprintln!("password (one line; it is shown as typed: prefer a pipe or --password-file):");
            }
            let mut line = String::new();
            stdin
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
            line
        }
    };
    let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if text.contains(['\n', '\r']) {
        return Err("the password must be one line".into());
    }
    passwords::check_password(text).map_err(|e| e.to_string())?;
    Ok(text.to_string())
}

/// The hash of a password read as [`read_password`] does, or the exit code after saying why not.
fn new_password_hash(file: Option<&Path>) -> Result<String, ExitCode> {
    let password = read_password(file).map_err(|m| {
        eprintln!("error: {m}");
        ExitCode::from(INVALID)
    })?;
    passwords::hash_password(&password).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(ERROR)
    })
}

/// `operators …`: the console's accounts, straight in the database (no running gateway needed).
pub async fn operators(path: Option<&Path>, command: OperatorsCommand) -> anyhow::Result<ExitCode> {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if let OperatorsCommand::Add { name, .. } = &command {
        if let Err(m) = passwords::check_name(name) {
            eprintln!("error: {m}");
            return Ok(ExitCode::from(INVALID));
        }
    }
    let store = open_store(&config, None).await?;
    let done = match command {
        OperatorsCommand::List => {
            println!("{:<24} {:<9} {:<9} created", "name", "role", "disabled");
            for o in store.list_operators().await? {
                let created = chrono::DateTime::from_timestamp_millis(o.created_at)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_else(|| o.created_at.to_string());
                println!("{:<24} {:<9} {:<9} {created}", o.name, o.role, if o.disabled { "yes" } else { "no" });
            }
            return Ok(ExitCode::SUCCESS);
        }
        OperatorsCommand::Add { name, role, password_file } => {
            // Before asking for the password: a taken name is known without typing one.
            if store.find_operator(&name).await?.is_some() {
                eprintln!("error: operator {name} already exists (change its password with `operators passwd`)");
                return Ok(ExitCode::from(INVALID));
            }
            let password_hash = match new_password_hash(password_file.as_deref()) {
                Ok(h) => h,
                Err(code) => return Ok(code),
            };
            store
                .create_operator(&NewOperator { name, role, password_hash })
                .await
                .map(|o| format!("operator {} added with role {}", o.name, o.role))
        }
        OperatorsCommand::Disable { name } => {
            store.set_operator_disabled(&name, true).await.map(|o| format!("operator {} disabled", o.name))
        }
        OperatorsCommand::Enable { name } => {
            store.set_operator_disabled(&name, false).await.map(|o| format!("operator {} enabled", o.name))
        }
        OperatorsCommand::Passwd { name, password_file } => {
            if store.find_operator(&name).await?.is_none() {
                eprintln!("operator {name} not found");
                return Ok(ExitCode::from(NOT_FOUND));
            }
            let password_hash = match new_password_hash(password_file.as_deref()) {
                Ok(h) => h,
                Err(code) => return Ok(code),
            };
            store
                .set_operator_password_hash(&name, &password_hash)
                .await
                .map(|o| format!("password of operator {} changed", o.name))
        }
    };
    match done {
        Ok(message) => {
            println!("{message}");
            Ok(ExitCode::SUCCESS)
        }
        Err(StoreError::OperatorNotFound(name)) => {
            eprintln!("operator {name} not found");
            Ok(ExitCode::from(NOT_FOUND))
        }
        // Taken between the check above and the insert (another `operators add`).
        Err(StoreError::OperatorExists(name)) => {
            eprintln!("error: operator {name} already exists");
            Ok(ExitCode::from(INVALID))
        }
        Err(e) => Err(e.into()),
    }
}

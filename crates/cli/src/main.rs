mod backup;
mod commands;
mod sandbox;

use anyhow::Context;
use clap::{Parser, Subcommand};
use commands::{ConfigCommand, OperatorsCommand, OrdersCommand, OutboxCommand};
use kuper_bridge::config::{self, Config};
use kuper_bridge_storage::Store;
use std::path::PathBuf;
use std::process::ExitCode;

// With the `jemalloc` feature (the Debian package's build) jemalloc replaces the system
// allocator: a profile of the SQLite writer thread under load put a third of its time in glibc's
// malloc and free (a unit is allocated on a runtime worker and freed on the writer). Measured
// in BENCHMARKS.md; docs/decisions.md, "The allocator", says why jemalloc, and why optional.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// kuper-bridge: the merchant side of Kuper's Push model for orders.
///
/// Takes Kuper's webhooks, runs every order through its fulfilment scheme, and delivers the
/// merchant's notifications to Kuper in order, with retries, dead letters and an audit log.
#[derive(Parser)]
#[command(name = "kuper-bridge", version, propagate_version = true)]
struct Cli {
    /// Config file (TOML). Default: ./kuper-bridge.toml if present, else built-in defaults.
    /// Every key can be overridden by KUPER_BRIDGE_<SECTION>__<KEY>.
    #[arg(long, global = true, env = "KUPER_BRIDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: webhook receiver, REST API and notification dispatcher.
    Serve(ServeArgs),
    /// The Kuper simulator (a fake Kuper for sandboxes and tests).
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Inspect orders.
    Orders {
        #[command(subcommand)]
        command: OrdersCommand,
    },
    /// Inspect the notification outbox and decide on dead letters.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Manage the console's operator accounts (people; store systems use API keys).
    Operators {
        #[command(subcommand)]
        command: OperatorsCommand,
    },
    /// Copy the SQLite database to PATH; safe while the gateway runs (PostgreSQL: pg_dump).
    ///
    /// A consistent snapshot taken with SQLite's online backup API: the gateway keeps taking
    /// webhooks and actions meanwhile. The copy is checked and fsynced before it appears at
    /// PATH, so PATH never holds a partial backup; an existing PATH is refused unless
    /// --overwrite. Prints the copy's size, orders and outbox. Run it as the service's user.
    /// Exit 0 written, 1 refused or failed (nothing written), 2 not a SQLite configuration.
    Backup(backup::BackupArgs),
    /// Replace the SQLite database with a backup; only while no gateway runs on it.
    ///
    /// Refused, with nothing changed, while any process has the database open (a gateway, a
    /// command, an sqlite3 session) and when PATH is not a whole kuper-bridge database
    /// (migrations, integrity_check) this version can run. The replacement is atomic; the
    /// replaced database is kept as <file>.before-restore-<UTC time> unless --no-keep.
    /// Notifications pending in the backup are sent again when the gateway starts. Exit 0
    /// restored, 1 refused or failed, 2 not a SQLite configuration (PostgreSQL: pg_restore).
    Restore(backup::RestoreArgs),
    /// Print the Mermaid state and sequence diagrams generated from the state machines.
    Diagrams,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// What this process runs; overrides server.role (all by default).
    #[arg(long)]
    role: Option<config::Role>,
    /// Also run a fake Kuper in this process, point the gateway at it and feed it demo orders
    /// of every scheme. For trying kuper-bridge out; never in production.
    #[arg(long)]
    sandbox: bool,
    /// Where the sandbox's fake Kuper listens.
    #[arg(long, default_value = "127.0.0.1:9090", requires = "sandbox")]
    sandbox_listen: String,
    /// How many demo orders of each scheme the sandbox sends at start.
    #[arg(long, default_value_t = 1, requires = "sandbox")]
    demo_orders: u32,
    /// Start the sandbox on an empty database: deletes the SQLite database first (never a
    /// PostgreSQL one), so the demo orders are the README's. Without it a restart keeps the
    /// earlier orders and says so.
    #[arg(long, requires = "sandbox")]
    fresh: bool,
}

#[derive(Subcommand)]
enum SimCommand {
    /// Serve a fake Kuper: /auth/token, the notification endpoints (validated against the
    /// protocol), the pull API, fault injection and the /sim/v1 control API.
    Serve(SimServeArgs),
    /// Run the conformance scenarios against a merchant endpoint (exit 0 only if all pass).
    ///
    /// During the run a fake Kuper serves on --listen: the merchant under test must send its
    /// notifications (and get its tokens) there. With --merchant-api the runner performs the
    /// store's actions through kuper-bridge's REST API; without it, it waits for the
    /// merchant's own notifications.
    Run(Box<SimRunArgs>),
    /// List the conformance scenarios.
    Scenarios,
}

#[derive(clap::Args)]
struct SimRunArgs {
    /// The merchant's webhook URL, e.g. http://127.0.0.1:8080/kuper-webhook.
    #[arg(long)]
    target: String,
    /// Where the fake Kuper listens during the run.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: String,
    /// How Kuper authenticates to the merchant: basic:USER:PASS, bearer:TOKEN or header:TOKEN.
    #[arg(long, default_value = "basic:kuper:secret")]
    auth: String,
    /// kuper-bridge's base URL, to perform the store's actions through its REST API.
    #[arg(long, requires = "api_key")]
    merchant_api: Option<String>,
    /// API key (write scope) for --merchant-api.
    #[arg(long)]
    api_key: Option<String>,
    /// The notification body format the merchant is expected to send.
    #[arg(long, default_value = "brief")]
    format: String,
    /// Run only these scenarios (repeatable; a trailing * matches a prefix). Default: all.
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// Seed of the order generator; the same seed gives the same order contents. Kuper order
    /// ids are new every run, so running again against the same gateway never repeats an order.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The stores the orders name, as the merchant has them configured:
    /// kuper=ID (Kuper delivers), merchant=ID (the merchant delivers, scheme C),
    /// restaurant=ID. A key left out keeps its default, the stores of the shipped
    /// kuper-bridge.toml.
    #[arg(long, default_value_t)]
    stores: kuper_bridge_sim::runner::StoreIds,
    /// brief: pickup code after ready_for_delivery; v3: before it.
    #[arg(long, default_value = "brief")]
    profile: kuper_bridge_sim::Profile,
    /// How a repeated notification is answered: 422 or 202.
    #[arg(long, default_value = "422")]
    repeat: kuper_bridge_sim::RepeatPolicy,
    /// Seconds each step waits for the merchant's notification.
    #[arg(long, default_value_t = 10)]
    deadline_secs: u64,
    /// Write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Write one Mermaid sequence diagram per scenario (the observed exchange) into this folder.
    #[arg(long)]
    diagrams: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SimServeArgs {
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: String,
    #[arg(long, default_value = "sim-client")]
    client_id: String,
    #[arg(long, default_value = "sim-secret")]
    client_secret: String,
    /// Static Client-Token values accepted on /v3 and /v1 (repeatable).
    #[arg(long = "client-token", default_value = "sim-client-token")]
    client_tokens: Vec<String>,
    /// Lifetime of issued tokens, seconds.
    #[arg(long, default_value_t = 300)]
    token_ttl_secs: u64,
    /// brief: pickup code after ready_for_delivery; v3: before it.
    #[arg(long, default_value = "brief")]
    profile: kuper_bridge_sim::Profile,
    /// How a repeated notification is answered: 422 (as observed) or 202.
    #[arg(long, default_value = "422")]
    repeat: kuper_bridge_sim::RepeatPolicy,
    /// Seed of the order generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn open_store(config: &Config) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let store = kuper_bridge_storage::open(&config.database.url, &config.database.store_options()).await?;
    store.migrate().await?;
    Ok(store)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Diagrams => {
            print!("{}", kuper_bridge_domain::diagram::document());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { command: ConfigCommand::Check } => Ok(commands::config_check(cli.config.as_deref())),
        Command::Sim { command: SimCommand::Serve(args) } => {
            // Only `[log]` applies to the fake Kuper; the rest of the file is the gateway's.
            match config::load_report(cli.config.as_deref()) {
                Ok(loaded) => init_logging(&loaded.config.map(|c| c.log).unwrap_or_default()),
                Err(e) => {
                    eprintln!("configuration cannot be read:\n{e}");
                    return Ok(ExitCode::from(2));
                }
            }
            let listener = tokio::net::TcpListener::bind(&args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            let sim_config = kuper_bridge_sim::SimConfig {
                client_id: args.client_id,
                client_secret: args.client_secret,
                client_tokens: args.client_tokens,
                token_ttl: std::time::Duration::from_secs(args.token_ttl_secs),
                profile: args.profile,
                repeat: args.repeat,
                seed: args.seed,
            };
            tracing::info!(listen = %args.listen, control = %format!("http://{}/sim/v1/orders", args.listen), "fake Kuper is serving");
            kuper_bridge_sim::serve(listener, sim_config, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sim { command: SimCommand::Scenarios } => {
            for s in kuper_bridge_sim::runner::catalogue() {
                println!("{:<32} {}", s.name, s.description);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sim { command: SimCommand::Run(args) } => sim_run(*args).await,
        Command::Serve(args) => {
            let mut config = match config::load(cli.config.as_deref()) {
                Ok((c, _)) => c,
                Err(e) => {
                    eprintln!("configuration cannot be read:\n{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            init_logging(&config.log);
            if let Some(role) = args.role {
                config.server.role = config::Choice(role);
            }
            let mut sandbox = None;
            if args.sandbox {
                if args.fresh {
                    sandbox::wipe(&config)?;
                }
                let found = sandbox::inspect(&config).await?;
                sandbox = Some(sandbox::start(&mut config, &args.sandbox_listen, found).await?);
            }
            let resolved = match config.resolve() {
                Ok(r) => r,
                Err(problems) => {
                    eprintln!("configuration has {} problem(s) (see `kuper-bridge config check`):", problems.len());
                    for p in problems {
                        eprintln!("- {p}");
                    }
                    return Ok(ExitCode::from(2));
                }
            };
            for w in &resolved.warnings {
                tracing::warn!(warning = %w, "configuration");
            }
            // Before anything serves: SIGHUP's default action would end the process, and
            // `systemctl reload` sends it (the unit's ExecReload).
            let mut hangups = Hangups::register();
            let listener = tokio::net::TcpListener::bind(&config.server.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.server.listen))?;
            let running = kuper_bridge::start(&config, resolved, listener).await?;
            if let Some(cert) = &running.tls {
                tracing::info!(
                    cert_file = %cert.files().cert_file.display(),
                    chain = cert.summary().chain_len,
                    "serving HTTPS; SIGHUP reloads the certificate"
                );
            }
            tracing::info!(
                listen = %running.addr,
                webhook = %format!("{}{}", running.url(), config.server.webhook_path),
                api = %format!("{}/api/v1/orders", running.url()),
                database = %kuper_bridge_storage::redact_url(&config.database.url),
                "kuper-bridge is serving"
            );
            if let Some(sim) = &sandbox {
                sandbox::feed(&config, &running, sim, args.demo_orders).await;
            }
            let mut shutdown = std::pin::pin!(shutdown_signal());
            loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    () = hangups.next() => running.reload_tls(),
                }
            }
            tracing::info!("shutting down");
            running.stop().await;
            if let Some(sim) = sandbox {
                sim.shutdown().await;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let config = match config::load(cli.config.as_deref()) {
                Ok((c, _)) => c,
                Err(e) => {
                    eprintln!("configuration has problems (see `kuper-bridge config check`):\n{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            open_store(&config).await?;
            println!("migrations applied to {}", kuper_bridge_storage::redact_url(&config.database.url));
            Ok(ExitCode::SUCCESS)
        }
        Command::Orders { command } => commands::orders(cli.config.as_deref(), command).await,
        Command::Outbox { command } => commands::outbox(cli.config.as_deref(), command).await,
        Command::Operators { command } => commands::operators(cli.config.as_deref(), command).await,
        Command::Backup(args) => backup::backup(cli.config.as_deref(), args).await,
        Command::Restore(args) => backup::restore(cli.config.as_deref(), args).await,
    }
}

async fn sim_run(args: SimRunArgs) -> anyhow::Result<ExitCode> {
    use kuper_bridge_sim::runner::{self, RunOptions};
    let mut opts = RunOptions::new(args.target);
    opts.auth = args.auth.parse().map_err(|e| anyhow::anyhow!("--auth: {e}"))?;
    opts.merchant_api = args.merchant_api;
    opts.api_key = args.api_key;
    opts.format = args.format.parse().map_err(|e| anyhow::anyhow!("--format: {e}"))?;
    opts.scenarios = args.scenarios;
    opts.seed = args.seed;
    opts.stores = args.stores;
    opts.profile = args.profile;
    opts.repeat = args.repeat;
    opts.deadline = std::time::Duration::from_secs(args.deadline_secs.max(1));
    if let Err(e) = opts.check() {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("fake Kuper for this run: http://{} (the merchant must send its notifications here)", args.listen);
    let mut progress = |event: runner::ProgressEvent| eprintln!("{}", event.line());
    let report = runner::run(listener, kuper_bridge_sim::SimConfig::default(), opts, &mut progress).await;
    println!("{}", report.table());
    if let Some(path) = &args.junit {
        std::fs::write(path, report.junit()).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(dir) = &args.diagrams {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        report.write_diagrams(dir).with_context(|| format!("cannot write diagrams into {}", dir.display()))?;
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn init_logging(log: &config::Log) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},sqlx=warn,hyper=warn", log.level)));
    // Colour codes only for a person at a terminal: journald, files and pipes would keep
    // them as `\x1b[2m…` noise.
    let ansi = std::io::stdout().is_terminal();
    if log.format.0 == config::LogFormat::Text {
        let _ = tracing_subscriber::fmt().with_ansi(ansi).with_env_filter(filter).try_init();
    } else {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_ansi(false)
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(filter)
            .try_init();
    }
}

/// SIGHUP, where there is one.
struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn register() -> Self {
        #[cfg(unix)]
        {
            let signal = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; the TLS certificate will not be reloaded");
                    None
                }
            };
            Self { signal }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

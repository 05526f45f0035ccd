//! One soak from start to verdict: the simulator, the gateway, the kills and the outage running
//! while the orders are driven, the drain, and the verdict from both sides' records.

use super::orders::{courier_dispatcher, drive_order, get, lock, Counters, Shared};
use super::outage::{outage_from_log, run_outage};
use super::process::{supervise, GatewayProc};
use super::report::{verdict, Outcome, Report};
use super::stored::{database_counts, pending_count, stored_orders};
use super::{Plan, SoakArgs, BASIC_CREDENTIALS_B64};
use crate::gateway::{free_port, gateway_config, API_KEY};
use crate::session::progress;
use anyhow::{Context, Result};
use kuper_bridge_bench::database::Database;
use kuper_bridge_bench::procfs;
use kuper_bridge_bench::verdict::{stored_tally, tally, Kind, StoredTally, Tally, MERCHANT_STORE, RESTAURANT_STORE};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) async fn soak(plan: &Arc<Plan>, args: &SoakArgs, bin: &Path, dir: &Path, db: &Database) -> Result<Report> {
    // The simulator: Kuper, in this process.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the simulator")?;
    let sim_config = kuper_bridge_sim::SimConfig { seed: args.seed, ..kuper_bridge_sim::SimConfig::default() };
    let sim = kuper_bridge_sim::start(listener, sim_config).await?;
    let sim_url = sim.base_url();

    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    // Production settings except the dispatcher's compressed retry schedule (RELIABILITY.md).
    let extra = format!(
        r#"
[dispatcher]
{dispatcher}
[[stores]]
id = "{MERCHANT_STORE}"
delivery = "merchant"

[[stores]]
id = "{RESTAURANT_STORE}"
delivery = "kuper"
restaurant = true
"#,
        dispatcher = plan.dispatcher_toml(),
    );
    let config = gateway_config(port, db.url(), &sim_url, "soak", &args.log_level, &extra);
    let config_path = dir.join("kuper-bridge.toml");
    std::fs::write(&config_path, &config).with_context(|| format!("cannot write {}", config_path.display()))?;
    let probe = reqwest::Client::builder().timeout(Duration::from_secs(1)).pool_max_idle_per_host(0).build()?;
    let mut gw = GatewayProc {
        bin: bin.to_path_buf(),
        config: config_path,
        dir: dir.to_path_buf(),
        log: dir.join("gateway.log"),
        url: url.clone(),
        child: None,
        probe,
        failed_starts: 0,
        log_level: args.log_level.clone(),
    };
    gw.start().await?;
    progress(format!("gateway pid {} at {url}, simulator at {sim_url}", gw.pid().unwrap_or(0)));

    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).tcp_nodelay(true).build()?;
    let sh = Arc::new(Shared {
        http,
        sim: sim_url.clone(),
        app: url.clone(),
        c: Counters::default(),
        problems: Mutex::new(Vec::new()),
        waiters: Mutex::new(HashMap::new()),
        placed: Mutex::new(Vec::with_capacity(plan.orders)),
        wait_limit: plan.outage + plan.drain_timeout,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (courier_stop_tx, courier_stop_rx) = tokio::sync::watch::channel(false);
    let courier = tokio::spawn(courier_dispatcher(sh.clone(), courier_stop_rx));
    let killer = tokio::spawn(supervise(gw, plan.kill_every, args.seed, stop_rx));
    let outage = tokio::spawn(run_outage(sh.clone(), plan.clone()));

    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(plan.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..plan.orders {
        tasks.spawn(drive_order(sh.clone(), n, permits.clone()));
    }
    let mut last_progress = Instant::now();
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(r) => r.context("an order task panicked")?,
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        if killer.is_finished() {
            break;
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            progress(format!(
                "{:.0} s: {} placed, {} done, {} waiting for Kuper, {} failed; action retries {}, webhook retries {}",
                started.elapsed().as_secs_f64(),
                get(&sh.c.placed),
                get(&sh.c.done),
                get(&sh.c.parked),
                get(&sh.c.failed),
                get(&sh.c.action_retries),
                get(&sh.c.webhook_retries),
            ));
        }
    }
    let driven = started.elapsed();
    let _ = stop_tx.send(true);
    let (gw, kills) = killer.await.context("the kill supervisor panicked")??;
    tasks.abort_all();
    let _ = courier_stop_tx.send(true);
    let _ = courier.await;
    progress(format!(
        "orders driven in {:.1} s; {} kills; waiting for the outbox to drain",
        driven.as_secs_f64(),
        kills.kills
    ));
    let outage_rep = outage.await.context("the outage task panicked")??;

    // The end: let the outbox drain with the gateway left alone.
    let drain_started = Instant::now();
    let drain_deadline = drain_started + plan.drain_timeout;
    let drained = loop {
        match pending_count(&sh, "pending", 1).await {
            Ok(0) => break true,
            _ if Instant::now() > drain_deadline => break false,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let final_drain = drain_started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Kuper's records.
    let log: Vec<Value> =
        sh.http.get(format!("{sim_url}/sim/v1/notifications")).send().await?.error_for_status()?.json().await?;
    let summaries: Vec<Value> =
        sh.http.get(format!("{sim_url}/sim/v1/orders")).send().await?.error_for_status()?.json().await?;
    let placed = lock(&sh.placed).clone();
    let kinds: Vec<(String, Kind)> = placed.iter().map(|(id, k, _)| (id.clone(), *k)).collect();
    let t: Tally = tally(&kinds, &log, &summaries);
    let (refused_attempts, never_accepted, last_refused_after) = outage_from_log(&log, &outage_rep);

    // The gateway's database.
    let answered: Vec<(String, Vec<String>)> =
        placed.iter().map(|(id, _, n)| (id.clone(), n.iter().filter(|x| !x.is_empty()).cloned().collect())).collect();
    let stored = stored_orders(&sh).await?;
    let st: StoredTally = stored_tally(&answered, &stored);
    let (db_rows, db_distinct, outbox_by_status) = database_counts(db.url()).await?;

    let mut gw = gw;
    let rss = gw.pid().and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok());
    let rss_now = rss.as_deref().and_then(|s| procfs::status_bytes(s, "VmRSS"));
    gw.kill9().await.ok();
    sim.shutdown().await;
    // Nothing secret in what the gateway wrote (stdout and stderr of every life, at --log-level).
    let log_text = std::fs::read_to_string(&gw.log).unwrap_or_default();
    let log_lines = log_text.lines().count();
    let leaked: usize =
        [API_KEY, "sim-secret", BASIC_CREDENTIALS_B64].iter().map(|s| log_text.matches(s).count()).sum();

    let outcome = Outcome {
        sh,
        placed: placed.len(),
        t,
        st,
        kills,
        failed_starts: gw.failed_starts,
        outage: outage_rep,
        refused_attempts,
        never_accepted,
        last_refused_after,
        db_rows,
        db_distinct,
        outbox_by_status,
        rss_now,
        log_lines,
        log_bytes: log_text.len(),
        leaked,
        drained,
        final_drain,
        driven,
    };
    Ok(verdict(plan, args, outcome))
}

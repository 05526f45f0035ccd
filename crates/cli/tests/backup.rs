//! `kuper-bridge backup` and `restore` (issue #13, item 5), run as the binary against a gateway
//! and the Kuper simulator on loopback: a backup taken under load restores, and the restored
//! gateway delivers every notification that was pending in it; a restore never replaces a
//! database in use or with something that is not a kuper-bridge database; a backup never
//! overwrites by accident; PostgreSQL is sent to pg_dump.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const A_FLOW: [&str; 3] = ["order.in_work", "order.assembled", "order.ready_for_delivery"];

/// Backup and restore are about SQLite files; the PostgreSQL pass runs `postgres_is_sent_to_pg_dump`.
fn sqlite_only() -> bool {
    if backend_is_postgres() {
        eprintln!("SKIPPED here: SQLite only; runs in the SQLite pass");
        return false;
    }
    true
}

async fn kb<I, S>(config: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kuper-bridge"))
        .arg("--config")
        .arg(config)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run kuper-bridge")
}

fn said(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_config(config: &kuper_bridge::config::Config, dir: &Path) -> PathBuf {
    let path = dir.join("kuper-bridge.toml");
    std::fs::write(&path, toml_of(config)).unwrap();
    path
}

fn database_file(config: &kuper_bridge::config::Config) -> PathBuf {
    kuper_bridge_storage::sqlite_file(&config.database.url).unwrap()
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

/// The Kuper notifications of a backup, per Kuper order id, in queue order: (event, status).
/// Read from a scratch copy, so the backup itself is never opened by anything but `restore`.
async fn kuper_queue_of(backup: &Path, scratch: &Path) -> BTreeMap<String, Vec<(String, String, bool)>> {
    std::fs::copy(backup, scratch).unwrap();
    let rows = text_rows(
        &format!("sqlite://{}", scratch.display()),
        "SELECT o.original_order_id, x.event, x.status, CAST(x.in_doubt AS TEXT) FROM outbox x JOIN orders o ON o.id = x.order_id
         WHERE x.destination = 'kuper' ORDER BY x.order_id, x.id",
    )
    .await;
    let mut queues: BTreeMap<String, Vec<(String, String, bool)>> = BTreeMap::new();
    for row in rows {
        let text = |i: usize| row[i].clone().unwrap_or_default();
        queues.entry(text(0)).or_default().push((text(1), text(2), text(3) == "1"));
    }
    queues
}

fn pending_of(queues: &BTreeMap<String, Vec<(String, String, bool)>>) -> Vec<(String, String)> {
    queues
        .iter()
        .flat_map(|(id, q)| q.iter().filter(|(_, s, _)| s == "pending").map(move |(e, _, _)| (id.clone(), e.clone())))
        .collect()
}

/// Stops the gateway, points a configuration at a new, empty directory and restores `backup`
/// there with the binary; returns the configuration of the restored database.
async fn restore_into_fresh_path(env: &mut Env, backup: &Path) -> (kuper_bridge::config::Config, String) {
    if let Some(app) = env.app.take() {
        app.stop().await;
    }
    let restored = env.dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    let mut config = env.config.clone();
    config.database.url = format!("sqlite://{}", restored.join("kuper-bridge.db").display());
    let path = write_config(&config, &restored);
    let out = kb(&path, [OsStr::new("restore"), backup.as_os_str()]).await;
    assert!(out.status.success(), "restore into a fresh path: {}", said(&out));
    (config, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn rejections_other_than_repeats(sim_order: &Value) -> Vec<Value> {
    sim_order["notifications"]
        .as_array()
        .map(|n| n.iter().filter(|x| x["verdict"] == "rejected" && x["rule"] != "repeat").cloned().collect())
        .unwrap_or_default()
}

/// The backup is taken while orders arrive and actions are posted, with Kuper down, so it
/// holds notifications that never reached Kuper; the first gateway stops without sending
/// them. A gateway started on the restored copy sends every one of them, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_and_its_pending_notifications_are_delivered() {
    if !sqlite_only() {
        return;
    }
    let mut env = Env::new().await;
    let config_path = write_config(&env.config, env.dir.path());
    let mut early = Vec::new();
    for _ in 0..3 {
        let id = id_of(&env.create_order(json!({"store": "1184"})).await);
        assert_eq!(env.act(&id, "start-assembly", json!({})).await.0, 202);
        early.push(id);
    }
    for id in &early {
        env.wait_accepted(id, &["order.in_work"]).await;
    }
    env.wait_outbox("the first notifications recorded as sent", |r| r.iter().all(|x| x["status"] == "sent")).await;

    env.sim_post("/sim/v1/outage", json!({"status": 503, "for_ms": 600_000})).await;
    for id in &early {
        assert_eq!(env.act(id, "assembled", json!({})).await.0, 202);
    }
    let backups = env.dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let backup = backups.join("kuper-bridge.db");

    // New orders and actions go on from before the backup starts until after it has ended.
    let (rounds_tx, mut rounds_rx) = tokio::sync::watch::channel(0usize);
    let backup_done = AtomicBool::new(false);
    let load = async {
        let mut rounds = 0usize;
        loop {
            let last = backup_done.load(Ordering::SeqCst);
            let id = id_of(&env.create_order(json!({"store": "1184"})).await);
            for action in ["start-assembly", "assembled", "ready"] {
                let (status, v) = env.act(&id, action, json!({})).await;
                assert_eq!(status, 202, "{action} on {id}: {v}");
            }
            rounds += 1;
            rounds_tx.send_replace(rounds);
            if last {
                return rounds;
            }
        }
    };
    let take_backup = async {
        rounds_rx.wait_for(|n| *n >= 2).await.unwrap();
        let out = kb(&config_path, [OsStr::new("backup"), backup.as_os_str()]).await;
        backup_done.store(true, Ordering::SeqCst);
        out
    };
    let (rounds, out) = tokio::join!(load, take_backup);
    assert!(out.status.success(), "backup under load: {}", said(&out));
    assert!(rounds >= 3, "the load ran before, during and after the backup");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("written to {}", backup.display())), "{stdout}");
    assert!(stdout.contains("orders:") && stdout.contains("size:") && stdout.contains("pending"), "{stdout}");

    let queues = kuper_queue_of(&backup, &env.dir.path().join("inspect.db")).await;
    let pending = pending_of(&queues);
    for id in &early {
        assert!(pending.contains(&(id.clone(), "order.assembled".into())), "{id}'s assembled is pending: {queues:#?}");
    }
    assert!(pending.len() > early.len(), "the load's notifications are pending too: {queues:#?}");

    // Kuper stays down until the first gateway has stopped: only the copy can deliver them.
    let (config, said_restore) = restore_into_fresh_path(&mut env, &backup).await;
    assert!(said_restore.contains("in doubt:"), "{said_restore}");
    let inspect = format!("sqlite://{}", env.dir.path().join("inspect.db").display());
    let orders = text_rows(&inspect, "SELECT CAST(count(*) AS TEXT) FROM orders").await[0][0].clone().unwrap();
    assert!(said_restore.contains(&format!("orders:     {orders}\n")), "{said_restore}");
    env.sim_delete("/sim/v1/outage").await;
    let app = start_app(&config).await;
    env.app_url = app.url();
    env.app = Some(app);

    // Every notification of the backup, in order, once.
    for (id, queue) in &queues {
        let expected: Vec<&str> =
            queue.iter().filter(|(_, s, _)| s == "sent" || s == "pending").map(|(e, _, _)| e.as_str()).collect();
        env.kuper().wait_delivered(id, &expected, Duration::from_secs(30)).await;
    }
    let settled = |r: &[Value]| r.iter().all(|x| x["status"] != "pending") || r.iter().any(|x| x["status"] == "dead");
    let records = env.wait_outbox("the restored outbox drained", settled).await;
    assert!(records.iter().all(|x| x["status"] == "sent"), "{records:#?}");
    env.shutdown().await;
}

/// The same, when the first gateway did deliver after the backup (Kuper was back before it
/// stopped): the copy sends them again, Kuper answers each "already applied", and that counts
/// as delivered. Records that were never attempted before the backup are among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_kuper_got_after_the_backup_are_absorbed_as_repeats() {
    if !sqlite_only() {
        return;
    }
    let mut env = Env::new().await;
    let config_path = write_config(&env.config, env.dir.path());
    let ids = [
        id_of(&env.create_order(json!({"store": "1184"})).await),
        id_of(&env.create_order(json!({"store": "1184"})).await),
    ];
    env.sim_post("/sim/v1/outage", json!({"status": 503, "for_ms": 600_000})).await;
    for id in &ids {
        for action in ["start-assembly", "assembled", "ready"] {
            assert_eq!(env.act(id, action, json!({})).await.0, 202, "{action} on {id}");
        }
    }
    let backup = env.dir.path().join("backup.db");
    let out = kb(&config_path, [OsStr::new("backup"), backup.as_os_str()]).await;
    assert!(out.status.success(), "{}", said(&out));
    env.sim_delete("/sim/v1/outage").await;
    for id in &ids {
        env.wait_accepted(id, &A_FLOW).await;
    }
    env.wait_outbox("all recorded as sent", |r| r.iter().all(|x| x["status"] == "sent")).await;

    let queues = kuper_queue_of(&backup, &env.dir.path().join("inspect.db")).await;
    let pending = pending_of(&queues);
    assert_eq!(pending.len(), 2 * A_FLOW.len(), "{queues:#?}");
    assert!(
        queues.values().flatten().any(|(_, status, in_doubt)| status == "pending" && !in_doubt),
        "a notification queued behind another was never attempted: {queues:#?}"
    );

    let (config, _) = restore_into_fresh_path(&mut env, &backup).await;
    let app = start_app(&config).await;
    env.app_url = app.url();
    env.app = Some(app);
    // A dead letter would hold its order's later records pending: stop waiting at the first.
    let settled = |r: &[Value]| r.iter().all(|x| x["status"] != "pending") || r.iter().any(|x| x["status"] == "dead");
    let records = env.wait_outbox("the restored outbox drained", settled).await;
    assert!(records.iter().all(|x| x["status"] == "sent"), "repeats are delivered, not dead letters: {records:#?}");
    for id in &ids {
        let v = env.sim_order(id).await;
        assert_eq!(accepted_events(&v), A_FLOW, "{id}: applied once each");
        assert!(rejections_other_than_repeats(&v).is_empty(), "{v:#}");
        for event in A_FLOW {
            let repeated = v["notifications"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["event"] == event && n["verdict"] == "rejected" && n["rule"] == "repeat");
            assert!(repeated, "{id}: the copy sent {event} again: {v:#}");
        }
    }
    env.shutdown().await;
}

/// The gateway binary serving the database refuses the restore (its lock file), and so does
/// any other open connection (SQLite's own lock); nothing in the directory changes. A
/// gateway killed with SIGKILL leaves its write-ahead log behind: the restore folds it into
/// the database it keeps, so the kept copy has every committed order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_database_in_use_and_changes_nothing() {
    if !sqlite_only() {
        return;
    }
    let sim = start_sim(kuper_bridge_sim::SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = base_config(dir.path(), &sim.base_url()).await;
    config.server.listen = format!("127.0.0.1:{port}");
    let config_path = write_config(&config, dir.path());
    let app_url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let kuper = SimKuper::new(&sim.base_url(), &app_url);
    let create_order = || async { id_of(&kuper.create_order(json!({"store": "1184"})).await) };
    let order_status = |id: String| {
        let request = http.get(format!("{app_url}/api/v1/orders/{id}")).bearer_auth(READ_KEY);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let database = database_file(&config);

    let mut gateway = spawn_gateway(&config_path, dir.path()).await;
    wait_healthy(&http, &app_url).await;
    let kept_id = create_order().await;
    let backup = dir.path().join("backups");
    std::fs::create_dir(&backup).unwrap();
    let backup = backup.join("backup.db");
    let out = kb(&config_path, [OsStr::new("backup"), backup.as_os_str()]).await;
    assert!(out.status.success(), "{}", said(&out));
    let later_id = create_order().await;

    let before = names_in(dir.path());
    let out = kb(&config_path, [OsStr::new("restore"), backup.as_os_str()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another kuper-bridge process is serving"), "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert_eq!(names_in(dir.path()), before);
    assert_eq!(order_status(later_id.clone()).await, 200, "the gateway serves on, with its orders");

    gateway.kill().await.unwrap(); // SIGKILL: the -wal and -shm stay behind
    let _ = gateway.wait().await;
    let out = kb(&config_path, [OsStr::new("restore"), backup.as_os_str()]).await;
    assert!(out.status.success(), "{}", said(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let names = names_in(dir.path());
    let kept = names.iter().find(|n| n.starts_with("kuper-bridge.db.before-restore-"));
    let kept = dir.path().join(kept.unwrap_or_else(|| panic!("the replaced database is kept: {names:?}\n{stdout}")));
    assert!(stdout.contains(&kept.display().to_string()), "{stdout}");
    let replaced = kuper_bridge_storage::backup::check_backup(&kept).expect("the kept database is whole");
    assert_eq!(replaced.contents.orders, 2, "the orders of the killed gateway's log are in the kept database");
    assert!(!names.iter().any(|n| n.starts_with('.')), "no scratch file left behind: {names:?}");
    for stale in ["kuper-bridge.db-wal", "kuper-bridge.db-shm"] {
        assert!(!names.contains(stale), "the old database's {stale} is gone: {names:?}");
    }

    // Not a gateway, but an open connection all the same: SQLite's lock tells.
    let mut holder = {
        use sqlx::Connection;
        sqlx::SqliteConnection::connect(&config.database.url).await.unwrap()
    };
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&mut holder).await.unwrap();
    assert_eq!(orders, 1, "the backup's orders");
    // Only stat, never open: closing any descriptor of the file would drop this process's
    // POSIX locks, the holder's among them.
    let stamp = |path: &Path| std::fs::metadata(path).map(|m| (m.len(), m.modified().unwrap())).unwrap();
    let before = (names_in(dir.path()), stamp(&database));
    let out = kb(&config_path, [OsStr::new("restore"), backup.as_os_str()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is open in another process") && stderr.contains("nothing was changed"), "{stderr}");
    assert!((names_in(dir.path()), stamp(&database)) == before, "nothing changed");
    {
        use sqlx::Connection;
        holder.close().await.unwrap();
    }

    let mut gateway = spawn_gateway(&config_path, dir.path()).await;
    wait_healthy(&http, &app_url).await;
    assert_eq!(order_status(kept_id).await, 200);
    assert_eq!(order_status(later_id).await, 404, "the database is the backup's, from before that order");
    gateway.kill().await.unwrap();
    let _ = gateway.wait().await;
    sim.shutdown().await;
}

/// What is not a whole kuper-bridge database is refused before the database is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_what_is_not_a_kuper_bridge_database() {
    if !sqlite_only() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path(), "http://127.0.0.1:9").await;
    let config_path = write_config(&config, dir.path());
    let out = kb(&config_path, ["migrate"]).await;
    assert!(out.status.success(), "{}", said(&out));
    let inputs = dir.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();

    let text = inputs.join("notes.txt");
    std::fs::write(&text, "orders: 1\n").unwrap();
    let stranger = inputs.join("stranger.db");
    {
        use sqlx::Connection;
        let mut c =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", stranger.display())).await.unwrap();
        sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY)").execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }
    let whole = inputs.join("whole.db");
    let out = kb(&config_path, [OsStr::new("backup"), whole.as_os_str()]).await;
    assert!(out.status.success(), "{}", said(&out));
    let bytes = std::fs::read(&whole).unwrap();
    let truncated = inputs.join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();

    let database = database_file(&config);
    let before = (names_in(dir.path()), std::fs::read(&database).unwrap());
    for (input, why) in [
        (text, "it is not a SQLite database"),
        (stranger, "it has no migrations table (_sqlx_migrations)"),
        (truncated, "not a usable kuper-bridge database"),
        (inputs.join("missing.db"), "there is no SQLite database at"),
    ] {
        let out = kb(&config_path, [OsStr::new("restore"), input.as_os_str()]).await;
        assert_eq!(out.status.code(), Some(1), "{}: {}", input.display(), said(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why) && stderr.contains("nothing was changed"), "{}: {stderr}", input.display());
        assert!((names_in(dir.path()), std::fs::read(&database).unwrap()) == before, "{}", input.display());
    }
    let out = kb(&config_path, [OsStr::new("restore"), whole.as_os_str()]).await;
    assert!(out.status.success(), "and a whole one is taken: {}", said(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_never_overwrites_unless_asked() {
    if !sqlite_only() {
        return;
    }
    let env = Env::new().await;
    let config_path = write_config(&env.config, env.dir.path());
    id_of(&env.create_order(json!({"store": "1184"})).await);
    let backups = env.dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let path = backups.join("kuper-bridge.db");
    std::fs::write(&path, "someone's file").unwrap();

    let out = kb(&config_path, [OsStr::new("backup"), path.as_os_str()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already exists") && stderr.contains("--overwrite"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "someone's file");
    assert_eq!(names_in(&backups), BTreeSet::from(["kuper-bridge.db".to_string()]), "no partial copy left");

    let out = kb(&config_path, [OsStr::new("backup"), OsStr::new("--overwrite"), path.as_os_str()]).await;
    assert!(out.status.success(), "{}", said(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("orders:     1"), "{}", said(&out));
    let checked = kuper_bridge_storage::backup::check_backup(&path).expect("a whole kuper-bridge database");
    assert_eq!(checked.contents.orders, 1);
    assert_eq!(names_in(&backups), BTreeSet::from(["kuper-bridge.db".to_string()]), "one self-contained file");
    env.shutdown().await;
}

/// PostgreSQL has its own tools; the commands say so instead of trying. No server needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_is_sent_to_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = kuper_bridge::config::Config::default();
    config.database.url = "postgres://kuper_bridge:secret@127.0.0.1:1/kuper_bridge".into();
    let config_path = write_config(&config, dir.path());
    let target = dir.path().join("backup.db");

    let out = kb(&config_path, [OsStr::new("backup"), target.as_os_str()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pg_dump -Fc") && stderr.contains("PostgreSQL"), "{stderr}");
    assert!(!stderr.contains("secret"), "the password stays out of the message: {stderr}");
    assert!(!target.exists());

    std::fs::write(&target, "").unwrap();
    let out = kb(&config_path, [OsStr::new("restore"), target.as_os_str()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pg_restore"), "{}", said(&out));
}

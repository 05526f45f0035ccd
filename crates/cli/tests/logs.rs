//! Secrets never reach the logs: the real binary at `debug` level, its whole output captured,
//! through a flow that uses every kind of credential (webhook Basic, Bearer and Client-Token,
//! wrong passwords, API keys, the OAuth client secret and the access tokens it obtains).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_the_logs_even_at_debug_level() {
    let sim = start_sim(kuper_bridge_sim::SimConfig::default()).await;
    let sim_url = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (mut config, _db) = test_config(dir.path(), &sim_url).await;
    config.server.listen = format!("127.0.0.1:{port}");
    // A subscriber and an acceptance hook that cannot be reached: their signing keys must not
    // show in the errors logged about them.
    let nowhere = format!(
        "http://127.0.0.1:{}/x",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    config.subscribers = vec![kuper_bridge::config::SubscriberConfig {
        name: Some("wms".into()),
        url: nowhere.clone(),
        secret: vec!["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(), "plain-subscriber-secret-in-logs".into()],
        secret_file: None,
        events: vec!["*".into()],
        stores: vec![],
    }];
    config.acceptance_hook = Some(kuper_bridge::config::AcceptanceHookConfig {
        url: nowhere,
        secret: vec!["plain-hook-secret-never-logged".into()],
        secret_file: None,
        timeout_ms: 500,
        on_error: "accept".parse().expect("accept or cancel"),
        cancel_reason: "technical_issues".into(),
    });
    let config_path = dir.path().join("kuper-bridge.toml");
    std::fs::write(&config_path, toml_of(&config)).unwrap();
    let log = dir.path().join("gateway.log");
    let mut child = spawn_gateway_logging(&config_path, dir.path(), "debug", Some(&log)).await;
    let app = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_healthy(&http, &app).await;

    let kuper = SimKuper::new(&sim_url, &app);
    let id = id_of(&kuper.create_order(json!({})).await);
    kuper.act(&id, &["start-assembly", "assembled"]).await;
    let paid = json!({"event_type": "order.paid", "payload": {"originalOrderId": id}});
    for (name, value) in [
        ("authorization", "Bearer kuper-bearer-token".to_string()),
        ("client-token", "kuper-client-token".to_string()),
        ("authorization", "Bearer wrong-bearer-guess".to_string()),
    ] {
        http.post(format!("{app}/kuper-webhook")).header(name, value).json(&paid).send().await.unwrap();
    }
    http.post(format!("{app}/kuper-webhook"))
        .basic_auth("kuper", Some("wrong-password-guess"))
        .json(&paid)
        .send()
        .await
        .unwrap();
    http.get(format!("{app}/api/v1/orders")).bearer_auth("wrong-api-key-guess-000").send().await.unwrap();
    // The dispatcher must have fetched a token and sent both notifications.
    kuper.wait_delivered(&id, &["order.in_work", "order.assembled"], Duration::from_secs(20)).await;
    child.kill().await.unwrap();
    let _ = child.wait().await;

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("webhook stored"), "the log was captured at debug level:\n{}", &text[..text.len().min(2000)]);
    assert!(text.contains("acceptance hook gave no usable answer"), "the hook's failure was logged");
    for secret in [
        "kuper:secret",
        "a3VwZXI6c2VjcmV0", // base64 of kuper:secret, as sent in the Basic header
        "kuper-bearer-token",
        "kuper-client-token",
        "wrong-bearer-guess",
        "wrong-password-guess",
        "wrong-api-key-guess",
        ADMIN_KEY,
        "sim-secret",
        "access_token",
        "C2FVsBQIhrscChlQIMV",
        "plain-subscriber-secret-in-logs",
        "plain-hook-secret-never-logged",
    ] {
        assert!(!text.contains(secret), "{secret:?} appears in the logs");
    }
    // Values as a person reads them: a Kuper order id as the id, a status as a number, never
    // Rust's `Some("…")`.
    assert!(!text.contains("Some("), "Debug-formatted options in the logs:\n{}", &text[..text.len().min(4000)]);
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let stored = lines
        .iter()
        .find(|l| l["message"] == "webhook stored" && l["kuper_order"] == id.as_str())
        .unwrap_or_else(|| panic!("no `webhook stored` line with kuper_order {id}:\n{text}"));
    assert!(stored["status"].is_u64(), "{stored}");
    let attempt = lines
        .iter()
        .find(|l| l["message"] == "notification attempt")
        .unwrap_or_else(|| panic!("no `notification attempt` line:\n{text}"));
    assert!(attempt["status"].is_u64(), "the HTTP status is a number: {attempt}");
    sim.shutdown().await;
}

/// No colour codes when stdout is not a terminal (journald, a file, a pipe): `[log] format =
/// "text"` writes plain text there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_carry_no_colour_codes_when_stdout_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (mut config, _db) = test_config(dir.path(), "http://127.0.0.1:9").await;
    config.server.listen = format!("127.0.0.1:{port}");
    config.log.format = "text".parse().expect("a log format");
    let config_path = dir.path().join("kuper-bridge.toml");
    std::fs::write(&config_path, toml_of(&config)).unwrap();
    let log = dir.path().join("gateway.log");
    let mut child = spawn_gateway_logging(&config_path, dir.path(), "info", Some(&log)).await;
    let app = format!("http://127.0.0.1:{port}");
    wait_healthy(&reqwest::Client::new(), &app).await;
    let text = wait_for_line(&log, "kuper-bridge is serving").await;
    child.kill().await.unwrap();
    let _ = child.wait().await;
    assert!(!text.contains('\x1b'), "ANSI escape codes in a log written to a file:\n{text:?}");
    assert!(!text.trim_start().starts_with('{'), "format = \"text\" writes text, not JSON:\n{text}");
}

/// `sim serve` takes `[log] format` from the configuration, as `serve` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_serve_honours_the_log_format() {
    for format in ["json", "text"] {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("kuper-bridge.toml");
        std::fs::write(&config_path, format!("[log]\nformat = \"{format}\"\nlevel = \"info\"\n")).unwrap();
        let listen =
            format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
        let log = dir.path().join("sim.log");
        let file =
            || std::process::Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap());
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kuper-bridge"))
            .arg("--config")
            .arg(&config_path)
            .args(["sim", "serve", "--listen", &listen])
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .stdout(file())
            .stderr(file())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn kuper-bridge sim serve");
        let text = wait_for_line(&log, "fake Kuper is serving").await;
        child.kill().await.unwrap();
        let _ = child.wait().await;
        let line = text.lines().find(|l| l.contains("fake Kuper is serving")).unwrap_or_default();
        let parsed = serde_json::from_str::<Value>(line);
        match format {
            "json" => {
                let v = parsed.unwrap_or_else(|e| panic!("format = \"json\": not a JSON line ({e}): {line}"));
                assert_eq!(v["message"], "fake Kuper is serving", "{v}");
                assert_eq!(v["listen"], listen.as_str(), "{v}");
            }
            _ => {
                assert!(parsed.is_err(), "format = \"text\": a JSON line: {line}");
                assert!(line.contains(&format!("listen={listen}")), "{line}");
            }
        }
        assert!(!text.contains('\x1b'), "ANSI escape codes in a log written to a file:\n{text:?}");
    }
}

async fn wait_for_line(log: &std::path::Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "{needle:?} not logged:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

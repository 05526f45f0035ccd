//! The conformance runner (`kuper-bridge sim run`) against the real gateway: every scenario
//! of the catalogue passes, in both notification formats.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;
use common::*;
use kuper_bridge_sim::runner::{self, RunOptions};

async fn conformance(format: &str, auth: &str) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let kuper_url = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path(), &kuper_url).await;
    config.kuper.notification_format = format.parse().expect("a format name");
    if auth == "client-token" {
        // The v3 API: a static Client-Token plus Api-Version: 3.0, to /v3/notifications.
        config.kuper.auth = "client-token".parse().expect("an auth name");
        config.kuper.client_token = kuper_bridge_sim::SimConfig::default().client_tokens[0].clone();
    }
    let app = start_app(&config).await;

    let mut opts = RunOptions::new(format!("{}{}", app.url(), config.server.webhook_path));
    opts.merchant_api = Some(app.url());
    opts.api_key = Some(ADMIN_KEY.into());
    opts.format = format.parse().unwrap();
    opts.check().unwrap();
    let mut progress = |_: runner::ProgressEvent| {};
    let report = runner::run(listener, kuper_bridge_sim::SimConfig::default(), opts, &mut progress).await;
    assert_eq!(report.results.len(), runner::catalogue().len(), "every scenario ran");
    assert!(report.passed(), "conformance failed with {auth} auth in the {format} format:\n{}", report.table());
    let junit = report.junit();
    assert_eq!(junit.matches("<testcase").count(), runner::catalogue().len());
    assert!(!junit.contains("<failure"));
    app.stop().await;
    drop_test_database(&config.database.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_with_oauth_in_the_brief_format() {
    conformance("brief", "oauth").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_with_oauth_in_the_event_format() {
    conformance("event", "oauth").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_with_client_token_in_the_brief_format() {
    conformance("brief", "client-token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_with_client_token_in_the_event_format() {
    conformance("event", "client-token").await;
}

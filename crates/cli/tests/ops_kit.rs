//! The operations kit (issue #13, items 1 and 2): the Prometheus rules in
//! `deploy/prometheus/` and the Grafana dashboard in `deploy/grafana/` may only use metrics
//! and labels the gateway really exports, so they can never drift apart from the code.
//!
//! A real gateway takes the sandbox's four demo orders from the simulator (one per scheme),
//! acts on one, refuses a webhook with a wrong credential, misses a restaurant's acceptance
//! deadline and runs a reconciliation pass, so every family has samples; then every PromQL
//! expression of the rules and the dashboard is taken apart by a small tokenizer (below) and
//! each metric name and label name checked against `/metrics`. `promtool check rules` and
//! `promtool test rules` run when promtool is installed, and must in CI (`CI=true`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Labels Prometheus attaches to every scraped series (the target's), which the gateway never
/// exports itself.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rules_path() -> PathBuf {
    repo_root().join("deploy/prometheus/kuper-bridge.rules.yml")
}

fn rules_test_path() -> PathBuf {
    repo_root().join("deploy/prometheus/kuper-bridge.rules.test.yml")
}

fn dashboard_path() -> PathBuf {
    repo_root().join("deploy/grafana/kuper-bridge.json")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// What the gateway exports

/// Series names in a `/metrics` answer with the label names seen on each, and the families
/// declared by `# TYPE` with their type (so a family with no sample yet, or a family name used
/// where a series name belongs, gets a precise message).
#[derive(Debug, Default)]
struct Exported {
    series: BTreeMap<String, BTreeSet<String>>,
    declared: BTreeMap<String, String>,
}

fn parse_exposition(text: &str) -> Exported {
    let mut out = Exported::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                out.declared.insert(name.to_string(), kind.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.series.entry(line[..end].to_string()).or_default();
        let Some(body) = line[end..].strip_prefix('{') else { continue };
        // name="value",… where a value may hold escaped quotes, commas and braces.
        let mut chars = body.chars();
        'pairs: loop {
            let mut name = String::new();
            for c in chars.by_ref() {
                match c {
                    '=' => break,
                    '}' => break 'pairs,
                    ',' | ' ' => {}
                    c => name.push(c),
                }
            }
            if name.is_empty() {
                break;
            }
            labels.insert(name);
            if chars.next() != Some('"') {
                break;
            }
            let mut escaped = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    _ => escaped = false,
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// What the rules and the dashboard use: a PromQL tokenizer, just enough to find metric names,
// the label names of their matchers and those of by/without/on/ignoring/group_* clauses.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// A string literal (a label value): never a name.
    Str,
    /// A number or a duration (`0.95`, `5m`).
    Num,
    /// `[5m]`, `[$__rate_interval]`, `[30m:1m]`: the content is never a name.
    Range,
    /// A Grafana variable outside a string (`$job`, `${job}`).
    Var,
    /// Matcher and comparison operators (`=`, `!=`, `=~`, `!~`, `==`, `>=`, `<=`).
    Op(String),
    Punct(char),
}

fn tokenize(expr: &str) -> Vec<Tok> {
    let chars: Vec<char> = expr.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            c if c.is_whitespace() => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' && c != '`' { 2 } else { 1 };
                }
                i += 1;
                toks.push(Tok::Str);
            }
            '[' => {
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                i += 1;
                toks.push(Tok::Range);
            }
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    while i < chars.len() && chars[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                }
                toks.push(Tok::Var);
            }
            c if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                toks.push(Tok::Num);
            }
            c if c.is_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                    i += 1;
                }
                toks.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            '=' | '!' | '>' | '<' if matches!(next, Some('=' | '~')) => {
                toks.push(Tok::Op([c, next.unwrap_or_default()].iter().collect()));
                i += 2;
            }
            '=' => {
                toks.push(Tok::Op("=".into()));
                i += 1;
            }
            c => {
                toks.push(Tok::Punct(c));
                i += 1;
            }
        }
    }
    toks
}

/// What one expression uses.
#[derive(Debug, Default)]
struct Uses {
    /// Each metric selector with the label names of its matchers.
    metrics: Vec<(String, Vec<String>)>,
    /// Label names in by/without/on/ignoring/group_left/group_right and in selectors without
    /// a metric name: each must be a label of some metric of the expression.
    grouping: Vec<String>,
}

const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
const KEYWORDS: [&str; 8] = ["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"];
const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The label names of a `{…}` starting at `toks[*i]` (which is `{`); leaves `*i` after `}`.
fn matcher_labels(toks: &[Tok], i: &mut usize) -> Vec<String> {
    let mut labels = Vec::new();
    *i += 1;
    while *i < toks.len() && toks[*i] != Tok::Punct('}') {
        if let (Tok::Ident(name), Some(Tok::Op(_))) = (&toks[*i], toks.get(*i + 1)) {
            labels.push(name.clone());
        }
        *i += 1;
    }
    *i += 1;
    labels
}

fn uses(expr: &str) -> Uses {
    let toks = tokenize(expr);
    let mut out = Uses::default();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Ident(word) if GROUPING.contains(&word.as_str()) => {
                i += 1;
                if toks.get(i) == Some(&Tok::Punct('(')) {
                    i += 1;
                    while i < toks.len() && toks[i] != Tok::Punct(')') {
                        if let Tok::Ident(label) = &toks[i] {
                            out.grouping.push(label.clone());
                        }
                        i += 1;
                    }
                }
                i += 1;
            }
            Tok::Ident(word) if KEYWORDS.contains(&word.as_str()) || AGGREGATIONS.contains(&word.as_str()) => i += 1,
            // A function call.
            Tok::Ident(_) if toks.get(i + 1) == Some(&Tok::Punct('(')) => i += 1,
            Tok::Ident(name) => {
                let name = name.clone();
                i += 1;
                let labels =
                    if toks.get(i) == Some(&Tok::Punct('{')) { matcher_labels(&toks, &mut i) } else { Vec::new() };
                out.metrics.push((name, labels));
            }
            Tok::Punct('{') => {
                let labels = matcher_labels(&toks, &mut i);
                out.grouping.extend(labels.into_iter().filter(|l| l != "__name__"));
            }
            _ => i += 1,
        }
    }
    out
}

/// Problems with one expression against what the gateway exports. `sqlite_optional`: the
/// gateway runs on PostgreSQL, where the SQLite gauges do not exist.
fn check_expr(place: &str, expr: &str, exported: &Exported, sqlite_optional: bool) -> Vec<String> {
    let used = uses(expr);
    let mut problems = Vec::new();
    if used.metrics.is_empty() {
        problems.push(format!("{place}: no metric found in {expr:?}"));
    }
    let mut known_labels: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
    for (metric, labels) in &used.metrics {
        let available: BTreeSet<String> = if metric == "up" {
            BTreeSet::new()
        } else {
            match exported.series.get(metric) {
                Some(l) => l.clone(),
                None if sqlite_optional && metric.starts_with("kuper_bridge_sqlite_") => {
                    println!("{place}: {metric} is SQLite-only; not exported on this backend");
                    continue;
                }
                None => {
                    // Prometheus stores a counter as NAME_total and a histogram as NAME_bucket,
                    // NAME_sum and NAME_count: the family's own name is no series.
                    let family = ["_total", "_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|suffix| metric.strip_suffix(suffix))
                        .filter(|family| exported.declared.contains_key(*family));
                    problems.push(match (exported.declared.get(metric).map(String::as_str), family) {
                        (Some(kind @ ("counter" | "histogram")), _) => format!(
                            "{place}: metric {metric} is the name of a {kind} family, not of a series (_total, _bucket, _sum, _count)"
                        ),
                        (Some(_), _) | (None, Some(_)) => {
                            format!("{place}: metric {metric} is declared but has no sample: exercise it in this test")
                        }
                        (None, None) => format!("{place}: metric {metric} is not exported by the gateway"),
                    });
                    continue;
                }
            }
        };
        for label in labels {
            if !(available.contains(label) || TARGET_LABELS.contains(&label.as_str()) || label == "__name__") {
                problems.push(format!("{place}: label {label} is not a label of {metric} (it has {available:?})"));
            }
        }
        known_labels.extend(available);
    }
    for label in &used.grouping {
        if !known_labels.contains(label) {
            problems.push(format!(
                "{place}: label {label} (in by/on/…) is not a label of any metric of the expression {expr:?}"
            ));
        }
    }
    problems
}

/// `(alert name, expr)` of every rule: the file is ours, so a line reader is enough (the
/// count is checked against the `- alert:` lines, so nothing is skipped silently).
fn rule_exprs(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let (mut out, mut alert, mut i) = (Vec::new(), String::new(), 0);
    while i < lines.len() {
        let line = lines[i].trim_start();
        if let Some(name) = line.strip_prefix("- alert:").or_else(|| line.strip_prefix("- record:")) {
            alert = name.trim().to_string();
        }
        if let Some(value) = line.strip_prefix("expr:") {
            let value = value.trim();
            if value.starts_with('|') || value.starts_with('>') {
                let own = indent(lines[i]);
                let mut block = String::new();
                while i + 1 < lines.len() && (lines[i + 1].trim().is_empty() || indent(lines[i + 1]) > own) {
                    i += 1;
                    block.push_str(lines[i]);
                    block.push('\n');
                }
                out.push((alert.clone(), block));
            } else if let Some(quoted) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
                out.push((alert.clone(), quoted.replace("''", "'")));
            } else if let Some(quoted) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                out.push((alert.clone(), quoted.replace("\\\"", "\"")));
            } else {
                out.push((alert.clone(), value.to_string()));
            }
        }
        i += 1;
    }
    out
}

/// `(where, expr)` of every panel target, at any depth (rows may nest panels).
fn dashboard_exprs(v: &Value, place: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            let here = map.get("title").and_then(Value::as_str).map(|t| format!("panel {t:?}"));
            let place = here.as_deref().unwrap_or(place);
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => out.push((place.to_string(), expr.clone())),
                    _ => dashboard_exprs(value, place, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| dashboard_exprs(item, place, out)),
        _ => {}
    }
}

/// A template variable's `label_values(SELECTOR, LABEL)`, checked like an expression with
/// LABEL as one of its selector's labels.
fn check_label_values(place: &str, query: &str, exported: &Exported, sqlite_optional: bool) -> Vec<String> {
    let Some(args) = query.trim().strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')) else {
        return vec![format!("{place}: only label_values(SELECTOR, LABEL) queries are checked, not {query:?}")];
    };
    let Some((selector, label)) = args.rsplit_once(',') else {
        return vec![format!("{place}: label_values without a label: {query:?}")];
    };
    check_expr(place, &format!("max by ({}) ({selector})", label.trim()), exported, sqlite_optional)
}

// ---------------------------------------------------------------------------------------------
// The tests

async fn scrape(env: &Env) -> String {
    let (status, body) = env.call("GET", "/metrics", None, READ_KEY).await;
    assert_eq!(status, 200, "{body}");
    body.as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_and_the_dashboard_use_only_metrics_and_labels_the_gateway_exports() {
    let env = Env::with(|c| {
        // The restaurant demo order, never accepted, misses its deadline within the test.
        c.deadlines.sweep_interval_ms = 100;
        c.deadlines.restaurant_accept_secs = 1;
        c.deadlines.warn_before_secs = 0;
        c.database.sqlite_max_size_mb = 256;
    })
    .await;

    // The sandbox's demo orders (crates/cli/src/sandbox.rs `feed`): one of each scheme.
    let kuper_store = kuper_bridge_sim::runner::DEFAULT_KUPER_STORE;
    let mut ids = Vec::new();
    for params in [
        json!({"store": kuper_store, "shipmentMethod": "by_courier"}),
        json!({"store": kuper_store, "shipmentMethod": "pickup"}),
        json!({"store": MERCHANT_STORE, "integration": "delivery_by_merchant"}),
        json!({"store": RESTAURANT_STORE, "restaurant": true}),
    ] {
        ids.push(id_of(&env.create_order(params).await));
    }
    // Notifications go out (a token is fetched for them).
    for id in &ids[..3] {
        assert_eq!(env.act(id, "start-assembly", json!({})).await.0, 202);
    }
    for id in &ids[..3] {
        env.wait_accepted(id, &["order.in_work"]).await;
    }
    // A webhook with a wrong credential is refused and counted.
    let refused = env
        .http
        .post(env.webhook_url())
        .basic_auth("kuper", Some("not-the-secret"))
        .json(&json!({"event_type": "order.paid"}))
        .send()
        .await
        .expect("webhook");
    assert_eq!(refused.status().as_u16(), 401);
    // A reconciliation pass over the simulator's pull API.
    let job = env.app.as_ref().and_then(|a| a.reconciler.clone()).expect("the worker has a reconciliation job");
    job.run_once().await.expect("reconciliation pass");

    let until = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = scrape(&env).await;
        if text.contains(r#"kuper_bridge_deadlines_total{kind="restaurant_accept",stage="missed"}"#) {
            break text;
        }
        assert!(Instant::now() < until, "the restaurant order's deadline miss never showed:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let exported = parse_exposition(&text);
    let postgres = backend_is_postgres();
    assert_eq!(
        exported.series.get("kuper_bridge_outbox_destination_pending").map(|l| l.contains("destination")),
        Some(true),
        "{text}"
    );
    if postgres {
        assert!(!text.contains("kuper_bridge_sqlite_"), "no SQLite gauges on PostgreSQL:\n{text}");
    } else {
        assert!(exported.series.contains_key("kuper_bridge_sqlite_database_bytes"), "{text}");
        assert!(text.contains("kuper_bridge_sqlite_database_max_bytes 268435456"), "{text}");
        assert!(exported.series.contains_key("kuper_bridge_sqlite_filesystem_avail_bytes"), "{text}");
    }

    let mut problems = Vec::new();
    let rules = read(&rules_path());
    let exprs = rule_exprs(&rules);
    let alerts = rules.lines().filter(|l| l.trim_start().starts_with("- alert:")).count();
    assert!(alerts >= 10 && exprs.len() == alerts, "{} exprs for {alerts} alerts", exprs.len());
    for (alert, expr) in &exprs {
        problems.extend(check_expr(&format!("rule {alert}"), expr, &exported, postgres));
    }

    let dashboard: Value = serde_json::from_str(&read(&dashboard_path())).expect("the dashboard is JSON");
    let mut panel_exprs = Vec::new();
    dashboard_exprs(&dashboard["panels"], "dashboard", &mut panel_exprs);
    assert!(panel_exprs.len() >= 20, "{} panel expressions", panel_exprs.len());
    for (place, expr) in &panel_exprs {
        problems.extend(check_expr(place, expr, &exported, postgres));
    }
    for variable in dashboard["templating"]["list"].as_array().expect("templating") {
        if variable["type"] == "query" {
            let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap_or_default();
            let place = format!("variable {}", variable["name"]);
            problems.extend(check_label_values(&place, query, &exported, postgres));
        }
    }
    assert!(
        problems.is_empty(),
        "the rules or the dashboard use what the gateway does not export:\n{}\n\nexported:\n{text}",
        problems.join("\n")
    );

    // The console pages the runbooks send people to exist (signed out, a page redirects to the
    // login; a path that is no page answers 404).
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    for page in console_pages(&read(&repo_root().join("docs/operations.md"))) {
        let status = no_redirects.get(format!("{}{page}", env.app_url)).send().await.expect("console page").status();
        assert_ne!(status.as_u16(), 404, "docs/operations.md names {page}, which the console does not have");
    }
    env.shutdown().await;
}

/// The console paths a document names (`/ui/outbox?status=dead`, `/ui/outbox/ID`), without
/// their query, placeholders (`ID`, `REF`) made concrete.
fn console_pages(markdown: &str) -> BTreeSet<String> {
    let mut pages = BTreeSet::new();
    for (start, _) in markdown.match_indices("/ui/") {
        let path: String =
            markdown[start..].chars().take_while(|c| c.is_alphanumeric() || "/_-.".contains(*c)).collect();
        let path = path.trim_end_matches('.');
        let concrete: Vec<&str> = path
            .split('/')
            .map(|seg| if seg.chars().all(|c| c.is_ascii_uppercase()) && !seg.is_empty() { "1" } else { seg })
            .collect();
        pages.insert(concrete.join("/"));
    }
    pages
}

/// Inline code spans and fenced lines of a Markdown text that invoke `kuper-bridge`.
fn invocations(markdown: &str) -> Vec<String> {
    let mut fenced = Vec::new();
    let mut prose = String::new();
    let mut in_fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if in_fence {
            fenced.push(line.trim().to_string());
        } else {
            prose.push_str(line);
            prose.push(' ');
        }
    }
    let spans = prose.split('`').skip(1).step_by(2).map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "));
    fenced.into_iter().chain(spans).filter(|s| s.starts_with("kuper-bridge ")).collect()
}

/// Every `kuper-bridge …` the runbooks tell someone to type is a command of the binary, with
/// flags it has.
#[test]
fn the_runbooks_name_real_commands_and_flags() {
    let bin = env!("CARGO_BIN_EXE_kuper-bridge");
    let commands = invocations(&read(&repo_root().join("docs/operations.md")));
    assert!(commands.len() >= 5, "{commands:?}");
    let mut problems = Vec::new();
    for command in &commands {
        let words: Vec<&str> = command.split_whitespace().skip(1).collect();
        let sub: Vec<&str> = words
            .iter()
            .copied()
            .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-'))
            .take(2)
            .collect();
        let out = std::process::Command::new(bin).args(&sub).arg("--help").output().expect("the binary runs");
        let help = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || sub.is_empty() {
            problems.push(format!("`{command}`: `kuper-bridge {}` is not a command", sub.join(" ")));
            continue;
        }
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            if !help.split(|c: char| c.is_whitespace() || ",=[]<>".contains(c)).any(|t| t == *flag) {
                problems.push(format!("`{command}`: no flag {flag}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/operations.md names commands the binary does not have:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_name_check_itself_catches_unknown_metrics_labels_and_bare_histograms() {
    let exported = parse_exposition(
        "# TYPE a counter\na_total{event=\"x\",outcome=\"o,\\\"}\"} 1\n# TYPE h histogram\n\
         h_bucket{route=\"/r\",le=\"0.1\"} 1\nh_sum{route=\"/r\"} 1\nh_count{route=\"/r\"} 1\n# TYPE empty counter\n",
    );
    let ok = |e: &str| check_expr("t", e, &exported, false);
    assert!(ok(r#"sum by (job, outcome) (increase(a_total{outcome="error", instance=~"$i"}[$__rate_interval])) > 5"#)
        .is_empty());
    assert!(ok("histogram_quantile(0.99, sum by (le, route) (rate(h_bucket[5m]))) / h_count offset 1h").is_empty());
    assert!(ok(r#"up{job="kuper-bridge"} == 0"#).is_empty());
    assert!(ok("a_total unless on (event) a_total and ignoring (outcome) h_sum").is_empty());
    let one = |e: &str| {
        let p = ok(e);
        assert_eq!(p.len(), 1, "{e}: {p:?}");
        p[0].clone()
    };
    assert!(one("rate(b_total[5m])").contains("metric b_total is not exported"));
    assert!(one("h").contains("not of a series"));
    assert!(one("a").contains("not of a series"));
    assert!(one("rate(empty_total[5m])").contains("declared but has no sample"));
    assert!(one(r#"a_total{destination="kuper"}"#).contains("label destination is not a label of a_total"));
    assert!(one("sum by (kind) (a_total)").contains("label kind"));
    assert!(one(r#"up{job="x", route="/"}"#).contains("label route"));
    assert!(one(r#"kuper_bridge_sqlite_database_bytes"#).contains("not exported"));
    assert!(check_expr("t", "kuper_bridge_sqlite_database_bytes", &exported, true).is_empty());
    assert!(check_label_values("v", "label_values(a_total, outcome)", &exported, false).is_empty());
    assert!(!check_label_values("v", "label_values(a_total, stage)", &exported, false).is_empty());
    assert_eq!(
        rule_exprs("- alert: A\n  expr: x > 1\n- alert: B\n  expr: |\n    a\n    or b\n  for: 1m\n"),
        vec![("A".to_string(), "x > 1".to_string()), ("B".to_string(), "    a\n    or b\n".to_string())]
    );
}

/// Every alert: a runbook section that exists in docs/operations.md, and in the unit tests a
/// case that fires and a case that stays quiet.
#[test]
fn every_alert_has_a_runbook_section_and_a_firing_and_a_quiet_test_case() {
    let rules = read(&rules_path());
    let tests = read(&rules_test_path());
    let operations = read(&repo_root().join("docs/operations.md"));
    // GitHub's anchors: lower case, punctuation dropped, spaces to hyphens.
    let anchors: BTreeSet<String> = operations
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| {
            h.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect();
    let mut alerts = Vec::new();
    let mut problems = Vec::new();
    for line in rules.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert:") {
            alerts.push(name.trim().to_string());
        }
        if let Some(url) = line.strip_prefix("runbook_url:") {
            let url = url.trim().trim_matches('"');
            match url.split_once("docs/operations.md#") {
                Some((_, anchor)) if anchors.contains(anchor) => {}
                _ => problems.push(format!("runbook_url {url} names no section of docs/operations.md")),
            }
        }
    }
    let runbooks = rules.lines().filter(|l| l.trim_start().starts_with("runbook_url:")).count();
    assert_eq!(runbooks, alerts.len(), "every alert has a runbook_url");
    // (alert, fires?) of every alert_rule_test entry.
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let mut cases: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(name) = line.strip_prefix("alertname:") {
            let quiet = lines.get(i + 1).is_some_and(|next| *next == "exp_alerts: []");
            let entry = cases.entry(name.trim()).or_default();
            if quiet {
                entry.1 = true;
            } else {
                entry.0 = true;
            }
        }
    }
    for alert in &alerts {
        match cases.get(alert.as_str()) {
            Some((true, true)) => {}
            Some((fires, quiet)) => {
                problems.push(format!("{alert}: a case that fires: {fires}, a case that stays quiet: {quiet}"))
            }
            None => problems.push(format!("{alert}: no test case")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(program)).find(|p| p.is_file())
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let Some(promtool) = on_path("promtool") else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "promtool is missing and CI=true makes this test mandatory: apt-get install prometheus"
        );
        println!("SKIPPED: promtool not on PATH (apt-get install -y --no-install-recommends prometheus)");
        return;
    };
    for (what, file) in [("check", rules_path()), ("test", rules_test_path())] {
        let out = std::process::Command::new(&promtool)
            .args([what, "rules"])
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", promtool.display()));
        assert!(
            out.status.success(),
            "promtool {what} rules {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

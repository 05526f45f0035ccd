//! The console benchmark's report: one backend's table and the backends side by side.

use super::pages::Page;
use super::{Report, GOAL_P99, IDLE_CPU_MIN_ORDERS};
use crate::report::mark;
use kuper_bridge_bench::database::Backend;
use kuper_bridge_bench::stats::{fmt_ms, thousands};
use serde_json::Value;
use std::time::Duration;

pub(super) fn print_report(j: &Value, backend: Backend) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let m = &j["machine"];
    println!();
    println!(
        "kuper-bridge console benchmark · {} · {} · {} orders · {} requests per page · {} × {} · kernel {} · load average {} → {}",
        j["date"].as_str().unwrap_or("?"),
        backend.label(),
        thousands(f(&j["orders"])),
        j["requests"],
        m["nproc"],
        m["cpu"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["loadavg"].as_str().unwrap_or("?"),
        m["loadavg_end"].as_str().unwrap_or("?"),
    );
    println!();
    println!("| page | in flight | p50 | p90 | p99 | max | size | p99 < {} ms | load average |", GOAL_P99.as_millis());
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for page in Page::ALL {
        let p = &j["pages"][page.slug()];
        for (key, flight) in [("sequential", "1".to_string()), ("concurrent", j["concurrency"].to_string())] {
            let v = &p[key];
            let ms = |k: &str| fmt_ms(Duration::from_secs_f64(f(&v[k]).max(0.0) / 1e3));
            let wrong = v["errors"].as_u64().unwrap_or(0);
            let verdict = if wrong > 0 {
                format!("WRONG ({wrong} answers)")
            } else {
                mark(v["goal_met"].as_bool().unwrap_or(false)).to_string()
            };
            let first = key == "sequential";
            println!(
                "| {} | {flight} | {} | {} | {} | {} | {:.1} KiB | {verdict} | {} |",
                if first { page.label() } else { "" },
                ms("p50_ms"),
                ms("p90_ms"),
                ms("p99_ms"),
                ms("max_ms"),
                f(&v["bytes_mean"]) / 1024.0,
                if first { p["loadavg"].as_str().unwrap_or("") } else { "" },
            );
        }
    }
    println!();
    let s = &j["seeding"];
    println!(
        "- seeding: {} orders in {:.1} s ({:.0} /s): {} `order.created` posted by 32 connections (p50 {:.2} ms, p99 {:.1} ms), {} placed through the simulator; then {} REST actions in {:.1} s and {:.1} s more until the outbox was empty; dead letters: {}",
        thousands(f(&j["orders"])),
        f(&s["seconds"]),
        f(&s["rate"]),
        thousands(f(&s["webhooks"])),
        f(&s["webhook_latency"]["p50_ms"]),
        f(&s["webhook_latency"]["p99_ms"]),
        thousands(f(&s["via_simulator"])),
        thousands(f(&s["actions"])),
        f(&s["actions_seconds"]),
        f(&s["drain_seconds"]),
        s["dead_letters"],
    );
    println!("- states: {}; late pickup orders (need attention): {}", j["states"], j["late"]);
    if backend == Backend::Postgres {
        let vacuumed = j["vacuum_analyze"].as_bool().unwrap_or(false);
        println!(
            "- {}",
            if vacuumed {
                "`VACUUM ANALYZE` after seeding, before the pages (statistics and visibility map as autovacuum leaves them)"
            } else {
                "no `VACUUM ANALYZE` after seeding (--no-vacuum): no statistics and no visibility map unless autovacuum ran"
            }
        );
    }
    println!(
        "- gateway RSS: {:.1} MiB before the pages, {:.1} MiB after, peak {:.1} MiB; CPU during the pages {:.1} CPU-s",
        f(&j["rss_mib"]["before_pages"]),
        f(&j["rss_mib"]["after_pages"]),
        f(&j["rss_mib"]["peak"]),
        f(&j["cpu_during_pages_s"]),
    );
    match j["idle_cpu_per_s"].as_f64() {
        Some(c) => println!(
            "- gateway CPU idle over {:.0} s with {} orders (the deadline sweep, every 15 s): {c:.4} CPU-s per s",
            f(&j["idle_window_s"]),
            thousands(f(&j["orders"])),
        ),
        None => println!(
            "- gateway CPU idle: not measured below {} orders (--idle-secs measures it)",
            thousands(IDLE_CPU_MIN_ORDERS as f64)
        ),
    }
    let db = &j["db_bytes"];
    let part = match backend {
        Backend::Sqlite => "-wal",
        Backend::Postgres => "tables with indexes and TOAST",
    };
    println!(
        "- database: {:.0} MiB ({part} {:.0} MiB); {:.1} MiB per 1,000 orders",
        f(&db["total"]) / 1024.0 / 1024.0,
        f(&db["part"]) / 1024.0 / 1024.0,
        (f(&db["total"]) - f(&db["empty"])) / 1024.0 / 1024.0 / f(&j["orders"]) * 1000.0,
    );
    if let Some(p) = j["profiles"].as_object().filter(|p| !p.is_empty()) {
        for (page, file) in p {
            println!("- profile of {page}: {}", file.as_str().unwrap_or("?"));
        }
    }
    println!();
}

pub(super) fn print_side_by_side(reports: &[(Backend, Report)]) {
    println!();
    println!("Console pages, p99 one request at a time (and with {} in flight):", reports[0].1.json["concurrency"]);
    println!();
    let header: Vec<String> = reports.iter().map(|(b, _)| b.label().to_string()).collect();
    println!("| page | {} |", header.join(" | "));
    println!("| --- |{}", " --- |".repeat(reports.len()));
    for page in Page::ALL {
        let cells: Vec<String> = reports
            .iter()
            .map(|(_, r)| {
                let p = &r.json["pages"][page.slug()];
                let ms =
                    |k: &str| fmt_ms(Duration::from_secs_f64(p[k]["p99_ms"].as_f64().unwrap_or(0.0).max(0.0) / 1e3));
                format!(
                    "{} ({}) {}",
                    ms("sequential"),
                    ms("concurrent"),
                    mark(p["sequential"]["goal_met"].as_bool().unwrap_or(false))
                )
            })
            .collect();
        println!("| {} | {} |", page.label(), cells.join(" | "));
    }
    println!();
}

//! The benchmark's pure helpers on small inputs: percentiles, the FIFO-violation counter,
//! the request body and the /proc parsers. No gateway is started.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

use kuper_bridge_bench::fifo::{fifo_violations, incomplete_orders, Arrival};
use kuper_bridge_bench::stats::{fmt_ms, percentile, thousands, Summary};
use kuper_bridge_bench::{body, procfs};
use serde_json::Value;
use std::time::Duration;

fn ms(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|&m| Duration::from_millis(m)).collect()
}

#[test]
fn percentile_is_nearest_rank() {
    let one_to_hundred = ms(&(1..=100).collect::<Vec<_>>());
    assert_eq!(percentile(&one_to_hundred, 50.0), Some(Duration::from_millis(50)));
    assert_eq!(percentile(&one_to_hundred, 99.0), Some(Duration::from_millis(99)));
    assert_eq!(percentile(&one_to_hundred, 99.9), Some(Duration::from_millis(100)));
    assert_eq!(percentile(&one_to_hundred, 100.0), Some(Duration::from_millis(100)));
    assert_eq!(percentile(&one_to_hundred, 0.0), Some(Duration::from_millis(1)));
    assert_eq!(percentile(&ms(&[7]), 50.0), Some(Duration::from_millis(7)));
    assert_eq!(percentile(&ms(&[1, 2]), 50.0), Some(Duration::from_millis(1)));
    assert_eq!(percentile(&ms(&[1, 2, 3]), 50.0), Some(Duration::from_millis(2)));
    assert_eq!(percentile(&[], 50.0), None);
    assert_eq!(percentile(&ms(&[1]), f64::NAN), None);
}

#[test]
fn summary_sorts_its_samples() {
    let s = Summary::of(ms(&[9, 1, 5, 3, 7]));
    assert_eq!(s.count, 5);
    assert_eq!(s.p50, Duration::from_millis(5));
    assert_eq!(s.p99, Duration::from_millis(9));
    assert_eq!(s.max, Duration::from_millis(9));
    assert_eq!(s.mean, Duration::from_millis(5));
    assert_eq!(Summary::of(Vec::new()), Summary::default());
}

#[test]
fn formatting() {
    assert_eq!(fmt_ms(Duration::from_micros(420)), "0.42 ms");
    assert_eq!(fmt_ms(Duration::from_micros(12_340)), "12.3 ms");
    assert_eq!(fmt_ms(Duration::from_millis(1250)), "1.25 s");
    assert_eq!(thousands(1234567.4), "1,234,567");
    assert_eq!(thousands(999.0), "999");
    assert_eq!(thousands(-1000.0), "-1,000");
}

#[test]
fn fifo_in_order_and_resends_are_not_violations() {
    let flow = ["in_work", "assembled", "ready"];
    let arrivals = vec![
        Arrival::new("A", "in_work", 1),
        Arrival::new("B", "in_work", 2),
        Arrival::new("A", "assembled", 3),
        Arrival::new("A", "assembled", 4), // at-least-once resend
        Arrival::new("B", "assembled", 5),
        Arrival::new("A", "ready", 6),
        Arrival::new("B", "ready", 7),
    ];
    assert_eq!(fifo_violations(&flow, &arrivals), 0);
    assert_eq!(incomplete_orders(&flow, &["A".into(), "B".into()], &arrivals), 0);
}

#[test]
fn fifo_counts_each_overtaken_arrival() {
    let flow = ["in_work", "assembled", "ready"];
    // Given out of seq order on purpose: the counter sorts by the simulator's seq.
    let arrivals = vec![
        Arrival::new("A", "in_work", 3), // overtaken by assembled (seq 1)
        Arrival::new("A", "assembled", 1),
        Arrival::new("A", "ready", 4),
        Arrival::new("B", "ready", 2),
        Arrival::new("B", "in_work", 5),        // after ready: violation
        Arrival::new("B", "assembled", 6),      // still before ready: violation
        Arrival::new("C", "something_else", 7), // not in the flow: ignored
    ];
    assert_eq!(fifo_violations(&flow, &arrivals), 3);
    let orders: Vec<String> = vec!["A".into(), "B".into(), "C".into(), "D".into()];
    assert_eq!(incomplete_orders(&flow, &orders, &arrivals), 2, "C and D got nothing of the flow");
    assert_eq!(fifo_violations(&flow, &[]), 0);
}

#[test]
fn order_created_body_has_twenty_unique_positions_and_right_totals() {
    let template = body::order_created_template(20).expect("template");
    let one = body::fill(&template, &body::order_id(1), "bench:one");
    let two = body::fill(&template, &body::order_id(2), "bench:two");
    let v: Value = serde_json::from_str(&one).expect("json");
    let w: Value = serde_json::from_str(&two).expect("json");
    assert_eq!(v["event_type"], "order.created");
    assert_eq!(v["payload"]["originalOrderId"], "H90000000001");
    assert_eq!(v["payload"]["orderUUID"], "bench:one");
    assert_ne!(v["payload"]["originalOrderId"], w["payload"]["originalOrderId"]);
    let positions = v["payload"]["positions"].as_array().expect("positions");
    assert_eq!(positions.len(), 20);
    let ids: std::collections::HashSet<&str> = positions.iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids.len(), 20, "position ids are unique");
    let sum = |key: &str| {
        positions.iter().map(|p| body::kopecks(p[key].as_str().unwrap_or("x")).expect("money")).sum::<i64>()
    };
    assert_eq!(v["payload"]["total"]["totalPrice"], body::money(sum("totalPrice")));
    assert_eq!(v["payload"]["total"]["discountTotalPrice"], body::money(sum("totalDiscountPrice")));
    // Fixture lines: 189.98 + 189.00 + 118.00 = 496.98, cycled: 7 × 189.98 + 7 × 189.00 + 6 × 118.00.
    assert_eq!(v["payload"]["total"]["totalPrice"], "3360.86");
}

#[test]
fn money_parsing() {
    assert_eq!(body::kopecks("94.99"), Some(9499));
    assert_eq!(body::kopecks("189"), Some(18900));
    assert_eq!(body::kopecks("0.5"), Some(50));
    assert_eq!(body::kopecks("1.234"), None);
    assert_eq!(body::kopecks("-1.00"), None);
    assert_eq!(body::kopecks(""), None);
    assert_eq!(body::money(336086), "3360.86");
    assert_eq!(body::money(5), "0.05");
}

#[test]
fn proc_parsers() {
    let status = "Name:\tkuper-bridge\nVmPeak:\t  900000 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   20480 kB\n";
    assert_eq!(procfs::status_bytes(status, "VmRSS"), Some(20480 * 1024));
    assert_eq!(procfs::status_bytes(status, "VmHWM"), Some(40960 * 1024));
    assert_eq!(procfs::status_bytes(status, "VmSwap"), None);
    // The command name may hold spaces and parentheses.
    let stat = "4242 (kuper (bridge) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
    assert_eq!(procfs::stat_cpu_ticks(stat), Some(300));
    assert_eq!(procfs::stat_cpu_ticks("garbage"), None);
    let mounts = "/dev/vda / ext4 rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n/dev/vdb /work ext4 rw 0 0\n";
    assert_eq!(procfs::mount_of(mounts, "/tmp/x/y"), Some(("tmpfs".into(), "tmpfs".into())));
    assert_eq!(procfs::mount_of(mounts, "/work/main"), Some(("/dev/vdb".into(), "ext4".into())));
    assert_eq!(procfs::mount_of(mounts, "/workspace"), Some(("/dev/vda".into(), "ext4".into())));
}

#[test]
fn schedstat_run_queue_wait() {
    assert_eq!(procfs::schedstat_wait_ns("123456 789000 42\n"), Some(789000));
    assert_eq!(procfs::schedstat_wait_ns("123456"), None);
}

#[test]
fn with_database_replaces_only_the_database_name() {
    use kuper_bridge_bench::database::with_database;
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "kb_bench_1"),
        "postgres://postgres@127.0.0.1:5432/kb_bench_1"
    );
    assert_eq!(with_database("postgres://u:p@h/db?sslmode=disable", "x"), "postgres://u:p@h/x?sslmode=disable");
    assert_eq!(with_database("postgres://h:5432", "x"), "postgres://h:5432/x");
}

#[test]
fn template_at_moves_the_dates_to_now() {
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-29T18:00:00+03:00").expect("date");
    let template = body::order_created_template_at(20, now).expect("template");
    let v: Value = serde_json::from_str(&template).expect("json");
    assert_eq!(v["timestamp"], "2026-11-29T18:00:00+03:00");
    assert_eq!(v["payload"]["delivery"]["expectedFrom"], "2026-11-29T20:00:00+03:00");
    assert_eq!(v["payload"]["delivery"]["expectedTo"], "2026-11-29T21:00:00+03:00");
    assert!(template.contains(body::ORDER_ID_SLOT) && template.contains(body::ORDER_UUID_SLOT));
}

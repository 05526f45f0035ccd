//! The crash soak's pure helpers on small inputs: the seeded kill schedule, what each kind of
//! order must produce, and the verdict from hand-made simulator records. No gateway is started.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

use kuper_bridge_bench::rng::Rng;
use kuper_bridge_bench::verdict::{
    event_of, pickup_code_for, prom_value, ready_for_courier, stored_tally, tally, Kind, StoredOrder,
};
use serde_json::{json, Value};
use std::time::Duration;

#[test]
fn the_kill_schedule_is_seeded_and_stays_within_the_spread() {
    let mean = Duration::from_millis(3000);
    let a: Vec<Duration> = {
        let mut r = Rng::new(7);
        (0..1000).map(|_| r.jittered(mean, 0.5)).collect()
    };
    let b: Vec<Duration> = {
        let mut r = Rng::new(7);
        (0..1000).map(|_| r.jittered(mean, 0.5)).collect()
    };
    assert_eq!(a, b, "same seed, same schedule");
    let mut c = Rng::new(8);
    assert_ne!(a[0], c.jittered(mean, 0.5), "another seed, another schedule");
    assert!(a.iter().all(|d| *d >= Duration::from_millis(1500) && *d < Duration::from_millis(4500)));
    let avg = a.iter().map(Duration::as_secs_f64).sum::<f64>() / a.len() as f64;
    assert!((avg - 3.0).abs() < 0.1, "mean {avg}");
    let mut r = Rng::new(1);
    assert!((0..1000).map(|_| r.unit()).all(|u| (0.0..1.0).contains(&u)));
}

/// Each B order gets its own code the gateway accepts (4 to 12 letters or digits), the same on
/// every retry, and one store's orders never share one.
#[test]
fn pickup_codes_are_valid_and_unique_per_order() {
    assert_eq!(pickup_code_for("H48668235335"), "H48668235335");
    assert_eq!(pickup_code_for("sim:H1234567890123"), "234567890123");
    assert_eq!(pickup_code_for("H1"), "00H1");
    let ids: Vec<String> = (0..1000u64).map(|n| format!("H{:011}", 48_668_235_335 + n * 7919)).collect();
    let codes: std::collections::BTreeSet<String> = ids.iter().map(|id| pickup_code_for(id)).collect();
    assert_eq!(codes.len(), ids.len());
    assert!(codes.iter().all(|c| (4..=12).contains(&c.len()) && c.chars().all(|ch| ch.is_ascii_alphanumeric())));
}

#[test]
fn every_kind_and_its_expected_notifications() {
    assert_eq!(Kind::of(0), Kind::A);
    assert_eq!(Kind::of(1), Kind::Restaurant);
    assert_eq!(Kind::of(2), Kind::B);
    assert_eq!(Kind::of(7), Kind::C);
    assert_eq!(Kind::A.expected(), ["order.in_work", "order.assembled", "order.ready_for_delivery"]);
    assert_eq!(Kind::Restaurant.expected()[0], "order.accepted");
    assert_eq!(
        Kind::B.expected(),
        [
            "order.in_work",
            "order.assembled",
            "order.ready_for_delivery",
            "order.pickup_code_created",
            "order.delivered"
        ]
    );
    assert_eq!(Kind::C.expected().len(), 6);
    assert_eq!(Kind::C.expected()[3], "order.estimated_delivery_time");
    let total: usize = Kind::ALL.iter().map(|k| k.expected().len()).sum();
    assert_eq!(total, 18, "four orders, one of each kind, make 18 notifications");
    assert!(Kind::A.kuper_delivers() && Kind::Restaurant.kuper_delivers());
    assert!(!Kind::B.kuper_delivers() && !Kind::C.kuper_delivers());
    assert_eq!(event_of("start-assembly"), "order.in_work");
    assert!(ready_for_courier("ready_to_ship") && ready_for_courier("shipped"));
    assert!(!ready_for_courier("assembled") && !ready_for_courier("canceled"));
}

fn rec(order: &str, event: &str, seq: u64, verdict: &str, rule: Option<&str>) -> Value {
    let mut v = json!({"originalOrderId": order, "event": event, "seq": seq, "verdict": verdict, "at": "2026-11-29T12:00:00.000Z"});
    if let Some(r) = rule {
        v["rule"] = json!(r);
        v["message"] = json!(format!("{r}: …"));
    }
    v
}

fn shipped(order: &str) -> Value {
    json!({"originalOrderId": order, "state": "shipped", "paymentState": "paid"})
}

#[test]
fn a_clean_run_with_resends_and_outage_faults_passes() {
    let orders = vec![("A1".to_string(), Kind::A)];
    let log = vec![
        rec("A1", "order.in_work", 1, "fault", Some("outage")),
        rec("A1", "order.in_work", 2, "accepted", None),
        rec("A1", "order.in_work", 3, "rejected", Some("repeat")), // answer lost, sent again
        rec("A1", "order.assembled", 4, "accepted", None),
        rec("A1", "order.ready_for_delivery", 5, "accepted", None),
        rec("A1", "order.ready_for_delivery", 6, "repeat_accepted", None),
    ];
    let t = tally(&orders, &log, &[shipped("A1")]);
    assert!(t.clean(), "{t:#?}");
    assert_eq!((t.kuper.expected, t.kuper.delivered, t.kuper.lost, t.kuper.repeats, t.kuper.rejected), (3, 3, 0, 2, 0));
    assert_eq!(t.kuper.faults.get("outage"), Some(&1));
}

#[test]
fn lost_reordered_rejected_and_stuck_orders_are_each_counted() {
    let orders = vec![
        ("LOST".to_string(), Kind::A),
        ("SWAP".to_string(), Kind::A),
        ("REJ".to_string(), Kind::A),
        ("STUCK".to_string(), Kind::A),
    ];
    let log = vec![
        rec("LOST", "order.in_work", 1, "accepted", None),
        rec("LOST", "order.ready_for_delivery", 2, "accepted", None),
        rec("SWAP", "order.assembled", 3, "accepted", None),
        rec("SWAP", "order.in_work", 4, "accepted", None),
        rec("SWAP", "order.ready_for_delivery", 5, "accepted", None),
        rec("REJ", "order.in_work", 6, "accepted", None),
        rec("REJ", "order.assembled", 7, "accepted", None),
        rec("REJ", "order.ready_for_delivery", 8, "rejected", Some("totals_mismatch")),
        rec("REJ", "order.ready_for_delivery", 9, "accepted", None),
        rec("STUCK", "order.in_work", 10, "accepted", None),
        rec("STUCK", "order.assembled", 11, "accepted", None),
        rec("STUCK", "order.ready_for_delivery", 12, "accepted", None),
        rec("STUCK", "order.in_work", 13, "rejected", Some("repeat")), // a resend after a later event
    ];
    let summaries = vec![
        shipped("LOST"),
        shipped("SWAP"),
        shipped("REJ"),
        json!({"originalOrderId": "STUCK", "state": "ready_to_ship", "paymentState": "not_paid"}),
    ];
    let t = tally(&orders, &log, &summaries);
    assert!(!t.clean());
    assert_eq!(t.kuper.lost, 1, "LOST never got assembled");
    assert_eq!(t.kuper.out_of_order, 1, "SWAP got all three, in the wrong order");
    assert_eq!(t.kuper.rejected, 1);
    assert_eq!(t.kuper.rejected_rules.get("totals_mismatch"), Some(&1));
    assert_eq!(t.stuck, 1);
    assert_eq!(t.stuck_states.get("ready_to_ship/not_paid"), Some(&1));
    assert!(t.problems.iter().any(|p| p.starts_with("STUCK (A): stuck at ready_to_ship/not_paid")), "{:?}", t.problems);
    // SWAP: in_work after assembled; STUCK: the in_work resend after ready_for_delivery.
    assert_eq!(t.kuper.fifo_violations, 2, "{:#?}", t.kuper.problems);
    assert_eq!(t.kuper.repeats, 1);
    assert_eq!(t.kuper.delivered, 11);
}

#[test]
fn an_order_kuper_never_heard_of_is_lost_and_stuck() {
    let orders = vec![("GONE".to_string(), Kind::C)];
    let t = tally(&orders, &[], &[]);
    assert_eq!((t.kuper.lost, t.stuck, t.kuper.delivered), (6, 1, 0));
    assert_eq!(t.stuck_states.get("missing/missing"), Some(&1));
}

fn stored(id: &str, number: &str) -> StoredOrder {
    StoredOrder {
        original_order_id: id.into(),
        number: number.into(),
        state: "delivered".into(),
        payment: "paid".into(),
    }
}

#[test]
fn the_gateways_rows_against_kupers_orders() {
    let answered = vec![
        ("H1".to_string(), vec!["KB-1".to_string(), "KB-1".to_string()]),
        ("H2".to_string(), vec!["KB-2".to_string()]),
    ];
    let ok = stored_tally(&answered, &[stored("H1", "KB-1"), stored("H2", "KB-2")]);
    assert!(ok.clean(), "{ok:#?}");
    let bad = stored_tally(
        &answered,
        &[stored("H1", "KB-1"), stored("H1", "KB-3"), stored("H9", "KB-9")], // H2 missing, H1 twice, H9 extra
    );
    assert!(!bad.clean());
    assert_eq!((bad.rows, bad.distinct, bad.duplicates, bad.missing, bad.extra), (3, 2, 1, 1, 1));
    let renumbered = stored_tally(&answered, &[stored("H1", "KB-7"), stored("H2", "KB-2")]);
    assert_eq!(renumbered.number_mismatches, 1);
    // A webhook answered 200 whose effect is not stored: H2 never got Kuper's order.paid.
    let unpaid = StoredOrder { payment: "not_paid".into(), ..stored("H2", "KB-2") };
    let lost_webhook = stored_tally(&answered, &[stored("H1", "KB-1"), unpaid]);
    assert!(!lost_webhook.clean());
    assert_eq!(lost_webhook.unfinished, 1);
    assert_eq!(lost_webhook.unfinished_states.get("delivered/not_paid"), Some(&1));
}

#[test]
fn prometheus_values() {
    let text = "# HELP kuper_bridge_outbox_pending Notifications waiting.\n# TYPE kuper_bridge_outbox_pending gauge\n\
                kuper_bridge_outbox_pending 42\nkuper_bridge_outbox_pending_total 7\n\
                kuper_bridge_outbox_oldest_pending_age_seconds 12.5\n# EOF\n";
    assert_eq!(prom_value(text, "kuper_bridge_outbox_pending"), Some(42.0));
    assert_eq!(prom_value(text, "kuper_bridge_outbox_oldest_pending_age_seconds"), Some(12.5));
    assert_eq!(prom_value(text, "kuper_bridge_outbox_dead"), None);
}

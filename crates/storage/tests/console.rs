//! What the console reads and keeps, on both backends: the board's search and filters, the
//! per-state counts, "needs attention", who made a change, the outbox by destination, and
//! sessions (found by their token's hash, ended with their account).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

#[macro_use]
mod common;
use common::db;
use common::db::Open;

use kuper_bridge_domain::{Action, Policy};
use kuper_bridge_storage::{
    ActionRequest, Actor, AttemptOutcome, AttemptReport, Attention, Destination, Exchange, IngestResult, NewOperator,
    OperatorRole, OrderFilter, OutboxFilter, OutboxStatus, Store,
};
use kuper_bridge_wire::WebhookEnvelope;
use serde_json::Value;

const CREATED: &str = include_str!("../../../fixtures/webhooks/order.created.kuper-delivery.json");

fn respond(_: &IngestResult) -> (u16, String) {
    (200, String::new())
}

/// A new order; returns its Kuper id.
async fn created(s: &dyn Store, n: u32, name: &str, phone: &str) -> String {
    let id = format!("C7{n:010}");
    let mut body: Value = serde_json::from_str(CREATED).unwrap();
    body["payload"]["originalOrderId"] = Value::String(id.clone());
    body["payload"]["orderUUID"] = Value::String(format!("uuid-{n}"));
    body["payload"]["customer"] = serde_json::json!({"name": name, "phone": phone});
    let env = WebhookEnvelope::parse(body.to_string().as_bytes()).unwrap();
    s.ingest_webhook(&env, Exchange::default(), &Policy::default(), respond).await.unwrap();
    id
}

fn filter() -> OrderFilter {
    OrderFilter { limit: 50, ..Default::default() }
}

async fn found(s: &dyn Store, search: &str) -> Vec<String> {
    let f = OrderFilter { search: Some(search.into()), ..filter() };
    s.list_orders(&f).await.unwrap().into_iter().filter_map(|o| o.order.original_order_id).collect()
}

async fn the_board_finds_an_order_by_any_of_its_names(s: &dyn Store) {
    let maria = created(s, 1, "Мария Соколова", "+7 (916) 123-45-67").await;
    let ivan = created(s, 2, "Ivan Petrov", "89031112233").await;
    let percent = created(s, 3, "100% Клиент", "+79990000000").await;
    let alena = created(s, 4, "Алёна Римская-Корсакова", "+79990000004").await;
    let number = s.find_order(&maria).await.unwrap().unwrap().order.number;

    #[rustfmt::skip]
    let cases: &[(&str, &[&str])] = &[
        (&maria, &[&maria]),                         // Kuper id
        ("uuid-2", &[&ivan]),                        // orderUUID
        (&number, &[&maria]),                        // our number
        ("+79161234567", &[&maria]),                 // the phone as Kuper sends it…
        ("8 (916) 123-45-67", &[&maria]),            // …as a cashier types it
        ("9161234567", &[&maria]),
        ("+7 903 111 22 33", &[&ivan]),
        ("соколова", &[&maria]),                     // a name, any case, Cyrillic too
        ("МАРИЯ", &[&maria]),
        ("Сокол", &[&maria]),                        // the start of any word of it
        ("колова", &[]),                             // not the middle of a word
        ("соколова мария", &[&maria]),               // several words, in any order: all of them
        ("мария петров", &[]),
        ("petr", &[&ivan]),
        ("клиент", &[&percent]),
        ("Алена", &[&alena]),                        // ё and е are one letter
        ("алЁна", &[&alena]),
        ("корсак", &[&alena]),                       // each part of a double-barrelled name
        ("римская-корсакова", &[&alena]),
        ("%", &[]),                                  // punctuation is no name, and no wildcard
        ("_", &[]),
        ("мария OR петров", &[]),                    // a query language's words are words here…
        ("\"мария\"*", &[&maria]),                   // …and its signs are not
        ("мария:* | !соколова", &[&maria]),
        ("nobody", &[]),
        ("  ", &[&alena, &percent, &ivan, &maria]),  // blank is no search
    ];
    for (search, want) in cases {
        assert_eq!(found(s, search).await, *want, "search {search:?}");
    }

    // Counts per state honour the search and ignore the state filter.
    act(s, &ivan, Action::StartAssembly).await;
    let counts = s
        .count_orders_by_state(&OrderFilter { state: Some("created".into()), search: Some("petr".into()), ..filter() })
        .await
        .unwrap();
    assert_eq!(counts, vec![("in_work".to_string(), 1)], "{counts:?}");
    let all = s.count_orders_by_state(&filter()).await.unwrap();
    assert_eq!(all.iter().map(|(_, n)| n).sum::<i64>(), 4);
}

async fn act(s: &dyn Store, id: &str, action: Action) -> kuper_bridge_storage::ActionResult {
    s.apply_action(id, ActionRequest::Action(action), &Policy::default(), Exchange::default()).await.unwrap()
}

async fn a_dead_letter_needs_attention_until_it_is_resolved(s: &dyn Store) {
    let quiet = created(s, 1, "A", "+79160000001").await;
    let troubled = created(s, 2, "B", "+79160000002").await;
    let result = act(s, &troubled, Action::StartAssembly).await;
    let record = &result.notifications[0];
    let claimed = s.claim_due("t", kuper_bridge_storage::now_ms() + 1000, 30_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let report = AttemptReport {
        outcome: AttemptOutcome::Dead,
        status: Some(422),
        error: Some("HTTP 422: refused".into()),
        exchange: Exchange::default(),
    };
    s.complete_attempt(record.id, &claimed[0].lease, report).await.unwrap();

    let ids = |orders: Vec<kuper_bridge_storage::StoredOrder>| {
        orders.into_iter().filter_map(|o| o.order.original_order_id).collect::<Vec<_>>()
    };
    let attention = OrderFilter { attention: true, ..filter() };
    assert_eq!(ids(s.list_orders(&attention).await.unwrap()), vec![troubled.clone()]);
    let both: Vec<i64> = s.list_orders(&filter()).await.unwrap().iter().map(|o| o.id).collect();
    let flags = s.attention_of(&both).await.unwrap();
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(flags.values().next().unwrap(), &vec![Attention::DeadLetter]);
    assert_eq!(s.health_snapshot(kuper_bridge_storage::now_ms()).await.unwrap().orders_needing_attention, 1);

    // Filters by destination and status; Kuper is always a destination.
    let dead = s
        .list_outbox_by(&OutboxFilter {
            status: Some(OutboxStatus::Dead),
            destination: Some(Destination::kuper()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.iter().map(|r| r.id).collect::<Vec<_>>(), vec![record.id]);
    let elsewhere = OutboxFilter { destination: Some(Destination::subscriber("erp")), limit: 10, ..Default::default() };
    assert!(s.list_outbox_by(&elsewhere).await.unwrap().is_empty());
    let destinations = s.outbox_destinations().await.unwrap();
    assert_eq!(destinations.len(), 1, "{destinations:?}");
    assert_eq!((destinations[0].destination.as_str(), destinations[0].dead), ("kuper", 1));

    // The operator's reason and name stay in the timeline; the order no longer needs attention.
    let exchange = Exchange {
        kind: "operator".into(),
        direction: "console".into(),
        detail: Some("Kuper fixed their side".into()),
        actor: Some(Actor::Operator("Анна".into())),
        ..Default::default()
    };
    s.skip(record.id, exchange).await.unwrap();
    assert!(s.list_orders(&attention).await.unwrap().is_empty());
    let order = s.find_order(&troubled).await.unwrap().unwrap();
    let events = s.order_events(order.id).await.unwrap();
    let decision = events.iter().find(|e| e.exchange.kind == "operator").expect("the operator's decision");
    assert_eq!(decision.exchange.actor, Some(Actor::Operator("Анна".into())));
    let json = serde_json::to_value(decision).unwrap();
    assert_eq!(json["actor"], "operator:Анна");
    assert!(ids(s.list_orders(&filter()).await.unwrap()).contains(&quiet));
}

async fn sessions_are_found_by_hash_and_end_with_their_account(s: &dyn Store) {
    let hash = |n: u8| format!("{n:064x}");
    let anna = s
        .create_operator(&NewOperator { name: "anna".into(), role: OperatorRole::Desk, password_hash: "$x".into() })
        .await
        .unwrap();
    s.create_session(&hash(1), anna.id, 1_000).await.unwrap();
    s.create_session(&hash(2), anna.id, 2_000).await.unwrap();
    let found = s.find_session(&hash(1)).await.unwrap().expect("session");
    assert_eq!((found.operator.name.as_str(), found.operator.role), ("anna", OperatorRole::Desk));
    assert_eq!((found.created_at, found.last_seen_at), (1_000, 1_000));
    s.touch_session(&hash(1), 5_000).await.unwrap();
    assert_eq!(s.find_session(&hash(1)).await.unwrap().unwrap().last_seen_at, 5_000);
    assert!(s.find_session(&hash(9)).await.unwrap().is_none());

    // Idle since before 3,000 ms: session 2 goes, session 1 (seen at 5,000) stays.
    assert_eq!(s.purge_sessions(0, 3_000).await.unwrap(), 1);
    assert!(s.find_session(&hash(2)).await.unwrap().is_none());
    s.delete_session(&hash(1)).await.unwrap();
    assert!(s.find_session(&hash(1)).await.unwrap().is_none());

    // A disabled account or a new password ends every session of the account.
    s.create_session(&hash(3), anna.id, 1_000).await.unwrap();
    s.set_operator_disabled("anna", true).await.unwrap();
    assert!(s.find_session(&hash(3)).await.unwrap().is_none());
    s.set_operator_disabled("anna", false).await.unwrap();
    s.create_session(&hash(4), anna.id, 1_000).await.unwrap();
    s.set_operator_password_hash("anna", "$y").await.unwrap();
    assert!(s.find_session(&hash(4)).await.unwrap().is_none());
}

/// A NUL typed into the board's filters (PostgreSQL TEXT cannot hold one) finds nothing and
/// fails nothing, on either backend.
async fn a_nul_in_a_filter_finds_nothing(s: &dyn Store) {
    created(s, 1, "Иван Петров", "+7 903 111-22-33").await;
    for f in [
        OrderFilter { search: Some("Ив\0ан".into()), ..filter() },
        OrderFilter { store: Some("1184\0".into()), ..filter() },
        OrderFilter { state: Some("created\0".into()), ..filter() },
    ] {
        assert!(s.list_orders(&f).await.unwrap().is_empty(), "{f:?}");
        let counts = s.count_orders_by_state(&OrderFilter { state: None, ..f.clone() }).await.unwrap();
        assert!(f.state.is_some() || counts.is_empty(), "{f:?}: {counts:?}");
    }
}

on_both_backends!(
    a_nul_in_a_filter_finds_nothing,
    the_board_finds_an_order_by_any_of_its_names,
    a_dead_letter_needs_attention_until_it_is_resolved,
    sessions_are_found_by_hash_and_end_with_their_account,
);

/// Orders stored before the search columns existed are found after the upgrade.
#[tokio::test]
async fn orders_from_an_older_version_are_searchable_after_the_upgrade() {
    let (s, dir) = db::sqlite().await;
    let maria = created(&*s, 1, "Мария Соколова", "+79161234567").await;
    drop(s);
    let url = dir.url().to_string();
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE orders SET customer_name = NULL, phone_key = NULL").execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }
    let s = kuper_bridge_storage::open(&url, &Default::default()).await.unwrap();
    s.migrate().await.unwrap();
    assert_eq!(found(&*s, "соколова").await, vec![maria.clone()]);
    assert_eq!(found(&*s, "8 916 123 45 67").await, vec![maria]);
}

/// The same on PostgreSQL, whose name index is a table kept by a trigger: a name filled in
/// after the upgrade gets its row, and a name that changes loses its old words.
#[tokio::test]
async fn orders_from_an_older_version_are_searchable_after_the_upgrade_on_postgres() {
    let Some(pg) = db::postgres().await else { return };
    let s = pg.store().await;
    let maria = created(&*s, 1, "Мария Соколова", "+79161234567").await;
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(pg.url()).await.unwrap();
        sqlx::query("UPDATE orders SET customer_name = NULL, phone_key = NULL").execute(&mut c).await.unwrap();
        assert_eq!(found(&*s, "соколова").await, Vec::<String>::new());
        c.close().await.unwrap();
    }
    drop(s);
    let s = pg.store().await;
    assert_eq!(found(&*s, "соколова").await, vec![maria.clone()]);
    assert_eq!(found(&*s, "8 916 123 45 67").await, vec![maria.clone()]);
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(pg.url()).await.unwrap();
        sqlx::query("UPDATE orders SET customer_name = 'Мария Орлова'").execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }
    assert_eq!(found(&*s, "соколова").await, Vec::<String>::new());
    assert_eq!(found(&*s, "орлов").await, vec![maria]);
    drop(s);
    pg.drop_database().await.expect("drop the test database");
}

//! Operator accounts on both backends — a real SQLite file, and a fresh PostgreSQL database
//! per test: create, look up, list, disable/enable, new password hash; names unique; roles
//! kept as their slugs.
//!
//! Storage only keeps what it is given: these tests pass made-up hash strings (hashing is
//! crates/app `operators`, tested there).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

#[macro_use]
mod common;
use common::db;

use kuper_bridge_storage::{NewOperator, OperatorRole, Store, StoreError};

fn new(name: &str, role: OperatorRole) -> NewOperator {
    NewOperator { name: name.into(), role, password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt${name}") }
}

async fn an_operator_is_created_found_and_listed(s: &dyn Store) {
    let before = kuper_bridge_storage::now_ms();
    let anna = s.create_operator(&new("anna", OperatorRole::Desk)).await.unwrap();
    assert_eq!((anna.name.as_str(), anna.role, anna.disabled), ("anna", OperatorRole::Desk, false));
    assert!(anna.created_at >= before && anna.updated_at == anna.created_at, "{anna:?}");
    assert_eq!(anna.password_hash, new("anna", OperatorRole::Desk).password_hash);

    let found = s.find_operator("anna").await.unwrap().expect("found by name");
    assert_eq!((found.id, found.role, found.password_hash), (anna.id, OperatorRole::Desk, anna.password_hash.clone()));
    assert!(s.find_operator("Anna").await.unwrap().is_none(), "names are exact");
    assert!(s.find_operator("nobody").await.unwrap().is_none());

    // Every role round-trips; the list is by name whatever the insertion order.
    s.create_operator(&new("zoe", OperatorRole::Admin)).await.unwrap();
    s.create_operator(&new("boris", OperatorRole::Viewer)).await.unwrap();
    s.create_operator(&new("Анна", OperatorRole::Operator)).await.unwrap();
    let listed: Vec<(String, OperatorRole)> =
        s.list_operators().await.unwrap().into_iter().map(|o| (o.name, o.role)).collect();
    assert_eq!(
        listed,
        [
            ("anna".to_string(), OperatorRole::Desk),
            ("boris".to_string(), OperatorRole::Viewer),
            ("zoe".to_string(), OperatorRole::Admin),
            ("Анна".to_string(), OperatorRole::Operator),
        ]
    );
}

async fn a_taken_name_is_refused_and_the_first_account_kept(s: &dyn Store) {
    let first = s.create_operator(&new("anna", OperatorRole::Viewer)).await.unwrap();
    let second = s.create_operator(&new("anna", OperatorRole::Admin)).await;
    assert!(matches!(&second, Err(StoreError::OperatorExists(n)) if n == "anna"), "{second:?}");
    let kept = s.find_operator("anna").await.unwrap().unwrap();
    assert_eq!((kept.id, kept.role), (first.id, OperatorRole::Viewer), "the refused create changed nothing");
    assert_eq!(s.list_operators().await.unwrap().len(), 1);
}

async fn disable_enable_and_a_new_password_hash(s: &dyn Store) {
    let anna = s.create_operator(&new("anna", OperatorRole::Operator)).await.unwrap();
    s.create_operator(&new("boris", OperatorRole::Operator)).await.unwrap();

    let disabled = s.set_operator_disabled("anna", true).await.unwrap();
    assert!(disabled.disabled);
    assert!(disabled.updated_at >= anna.updated_at);
    assert!(s.find_operator("anna").await.unwrap().unwrap().disabled);
    assert!(!s.find_operator("boris").await.unwrap().unwrap().disabled, "only the named account");
    // Idempotent: disabling a disabled account is not an error.
    assert!(s.set_operator_disabled("anna", true).await.unwrap().disabled);
    assert!(!s.set_operator_disabled("anna", false).await.unwrap().disabled);

    let changed = s.set_operator_password_hash("anna", "$argon2id$v=19$m=19456,t=2,p=1$new$hash").await.unwrap();
    assert_eq!(changed.password_hash, "$argon2id$v=19$m=19456,t=2,p=1$new$hash");
    let stored = s.find_operator("anna").await.unwrap().unwrap();
    assert_eq!(stored.password_hash, changed.password_hash);
    assert_eq!((stored.role, stored.created_at), (anna.role, anna.created_at), "nothing else changed");
    assert_eq!(
        s.find_operator("boris").await.unwrap().unwrap().password_hash,
        new("boris", OperatorRole::Operator).password_hash
    );

    for result in
        [s.set_operator_disabled("nobody", true).await, s.set_operator_password_hash("nobody", "$argon2id$x").await]
    {
        assert!(matches!(&result, Err(StoreError::OperatorNotFound(n)) if n == "nobody"), "{result:?}");
    }
    assert!(s.find_operator("nobody").await.unwrap().is_none(), "nothing was created");
}

/// The hash is kept, never shown: not in `Debug`, not in the JSON of an account.
async fn the_hash_is_never_printed(s: &dyn Store) {
    let anna = s.create_operator(&new("anna", OperatorRole::Admin)).await.unwrap();
    let debug = format!("{anna:?}");
    assert!(!debug.contains("$argon2id$"), "{debug}");
    let json = serde_json::to_string(&anna).unwrap();
    assert!(!json.contains("argon2") && !json.contains("password"), "{json}");
    assert!(json.contains(r#""role":"admin""#), "roles are serialized as their slugs: {json}");
}

on_both_backends!(
    an_operator_is_created_found_and_listed,
    a_taken_name_is_refused_and_the_first_account_kept,
    disable_enable_and_a_new_password_hash,
    the_hash_is_never_printed,
);

//! Kuper and the store through the restarts: every order driven from placement to the end of
//! its scheme, Kuper's courier for scheme A, and the counters of what happened on the way.

use super::STEP_DEADLINE;
use crate::gateway::{API_KEY, WEBHOOK_PASSWORD, WEBHOOK_USER};
use anyhow::{anyhow, bail, Context, Result};
use kuper_bridge_bench::verdict::{event_of, pickup_code_for, ready_for_courier, Kind, COURIER_WEBHOOKS, STORES};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub(super) struct Counters {
    pub(super) action_calls: AtomicUsize,
    pub(super) action_retries: AtomicUsize,
    pub(super) applied_earlier: AtomicUsize,
    /// Retries answered from the Idempotency-Key record (the first attempt was committed).
    pub(super) replayed: AtomicUsize,
    pub(super) webhook_calls: AtomicUsize,
    pub(super) webhook_retries: AtomicUsize,
    pub(super) created_resends: AtomicUsize,
    pub(super) redeliveries: AtomicUsize,
    pub(super) redelivery_failures: AtomicUsize,
    pub(super) placed: AtomicUsize,
    pub(super) created: AtomicUsize,
    pub(super) done: AtomicUsize,
    pub(super) parked: AtomicUsize,
    pub(super) failed: AtomicUsize,
}

pub(super) fn add(c: &AtomicUsize) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(super) fn get(c: &AtomicUsize) -> usize {
    c.load(Ordering::Relaxed)
}

pub(super) struct Shared {
    pub(super) http: reqwest::Client,
    pub(super) sim: String,
    pub(super) app: String,
    pub(super) c: Counters,
    pub(super) problems: Mutex<Vec<String>>,
    /// Scheme A orders waiting for Kuper to accept ready_for_delivery.
    pub(super) waiters: Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>,
    /// Every order Kuper placed: its kind and the numbers the gateway answered.
    pub(super) placed: Mutex<Vec<(String, Kind, Vec<String>)>>,
    pub(super) wait_limit: Duration,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(super) fn problem(&self, p: String) {
        lock(&self.problems).push(p);
    }

    pub(super) fn webhook_url(&self) -> String {
        format!("{}/kuper-webhook", self.app)
    }

    /// Kuper sends `event` through the simulator until the gateway answers 200 (a killed
    /// gateway: connection refused or reset → again). Any other answer is a failure.
    pub(super) async fn kuper_sends(&self, id: &str, event: &str) -> Result<Value> {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            add(&self.c.webhook_calls);
            let v: Value = self
                .http
                .post(format!("{}/sim/v1/orders/{id}/webhooks", self.sim))
                .json(&json!({"event": event}))
                .send()
                .await
                .context("the simulator's control API")?
                .json()
                .await?;
            let why = match v["status"].as_u64() {
                Some(200) => return Ok(v["body"].clone()),
                None => v["error"].as_str().unwrap_or("no answer").to_string(),
                Some(s) if s >= 500 => format!("HTTP {s} {}", v["body"]),
                Some(s) => bail!("{event} for {id}: the gateway answered {s}: {}", v["body"]),
            };
            add(&self.c.webhook_retries);
            if Instant::now() > deadline {
                bail!("{event} for {id} never answered 200 in {STEP_DEADLINE:?}: {why}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(super) async fn gateway_order(&self, id: &str) -> Result<Value> {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            match self.http.get(format!("{}/api/v1/orders/{id}", self.app)).bearer_auth(API_KEY).send().await {
                Ok(r) if r.status().is_success() => return Ok(r.json().await?),
                Ok(r) if r.status().is_client_error() => bail!("GET order {id}: HTTP {}", r.status()),
                _ if Instant::now() > deadline => bail!("GET order {id}: no answer in {STEP_DEADLINE:?}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The customer's pickup code checked at the counter, retried through restarts (checking
    /// a code again after an answer was lost finds it valid again).
    pub(super) async fn verify_pickup_code(&self, id: &str, code: &str) -> Result<()> {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            let url = format!("{}/api/v1/orders/{id}/pickup-code/verify", self.app);
            let why = match self.http.post(url).bearer_auth(API_KEY).json(&json!({ "code": code })).send().await {
                Ok(r) if r.status().as_u16() == 200 => {
                    let v: Value = r.json().await?;
                    if v["valid"] != true {
                        bail!("the pickup code of {id} was not found valid: {v}");
                    }
                    return Ok(());
                }
                Ok(r) if r.status().is_server_error() => {
                    format!("HTTP {} {}", r.status(), r.text().await.unwrap_or_default())
                }
                Ok(r) => {
                    bail!("pickup-code/verify on {id}: HTTP {} {}", r.status(), r.text().await.unwrap_or_default())
                }
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!("pickup-code/verify on {id}: no answer in {STEP_DEADLINE:?} ({why})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The store's action through the REST API, retried through restarts. A `409` after an
    /// attempt that may have been committed counts as applied when the order's `notified`
    /// list holds the action's event.
    pub(super) async fn act(&self, id: &str, action: &str, body: &Value) -> Result<()> {
        let deadline = Instant::now() + STEP_DEADLINE;
        let mut in_doubt = false;
        loop {
            add(&self.c.action_calls);
            let url = format!("{}/api/v1/orders/{id}/{action}", self.app);
            // One key for every attempt of this action: a retry after a lost answer is replayed.
            let key = format!("soak-{id}-{action}");
            let sent = self.http.post(url).bearer_auth(API_KEY).header("idempotency-key", key).json(body).send().await;
            let why = match sent {
                Ok(r) if r.status().as_u16() == 202 => {
                    if r.headers().contains_key("idempotent-replayed") {
                        add(&self.c.replayed);
                    }
                    return Ok(());
                }
                Ok(r) if r.status().as_u16() == 409 && in_doubt => {
                    let refusal = r.text().await.unwrap_or_default();
                    let order = self.gateway_order(id).await?;
                    let event = event_of(action);
                    if order["notified"].as_array().is_some_and(|n| n.iter().any(|e| e == event)) {
                        add(&self.c.applied_earlier);
                        return Ok(());
                    }
                    bail!("{action} on {id}: 409 {refusal}; {event} is not in notified {}", order["notified"]);
                }
                Ok(r) if r.status().is_server_error() => {
                    in_doubt = true;
                    format!("HTTP {} {}", r.status(), r.text().await.unwrap_or_default())
                }
                Ok(r) => bail!("{action} on {id}: HTTP {} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => {
                    // Refused: the request never reached the gateway. Anything else may have.
                    in_doubt |= !e.is_connect();
                    format!("{e:#}")
                }
            };
            add(&self.c.action_retries);
            if Instant::now() > deadline {
                bail!("{action} on {id} never answered 202 in {STEP_DEADLINE:?}: {why}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kuper's courier can come only once Kuper has every notification up to
    /// ready_for_delivery; waits (without holding a work permit) until it has.
    pub(super) async fn wait_courier_ready(&self, id: &str, expected: &[&str]) -> Result<()> {
        let deadline = Instant::now() + self.wait_limit;
        loop {
            let (tx, rx) = tokio::sync::oneshot::channel();
            lock(&self.waiters).insert(id.to_string(), tx);
            tokio::select! {
                _ = rx => {}
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                    lock(&self.waiters).remove(id);
                    bail!("{id}: Kuper did not get ready_for_delivery within {:?}", self.wait_limit);
                }
            }
            let v: Value = self
                .http
                .get(format!("{}/sim/v1/orders/{id}", self.sim))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let accepted: Vec<&str> =
                v["accepted"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            if expected.iter().all(|e| accepted.contains(e)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{id}: Kuper is {} but accepted only {accepted:?}", v["state"]);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    pub(super) fn set_numbers(&self, index: usize, numbers: Vec<String>) {
        if let Some(p) = lock(&self.placed).get_mut(index) {
            p.2 = numbers;
        }
    }
}

/// Wakes the waiting scheme A orders whose ready_for_delivery Kuper has accepted, from one
/// `GET /sim/v1/orders` every 250 ms (not one poll per order).
pub(super) async fn courier_dispatcher(sh: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if lock(&sh.waiters).is_empty() {
            continue;
        }
        let Ok(resp) = sh.http.get(format!("{}/sim/v1/orders", sh.sim)).send().await else { continue };
        let Ok(list) = resp.json::<Vec<Value>>().await else { continue };
        let mut waiters = lock(&sh.waiters);
        for o in &list {
            if ready_for_courier(o["state"].as_str().unwrap_or("")) {
                if let Some(tx) = o["originalOrderId"].as_str().and_then(|id| waiters.remove(id)) {
                    let _ = tx.send(());
                }
            }
        }
    }
}

pub(super) async fn drive_order(sh: Arc<Shared>, n: usize, permits: Arc<tokio::sync::Semaphore>) {
    let kind = Kind::of(n);
    if let Err(e) = drive(&sh, n, kind, &permits).await {
        add(&sh.c.failed);
        sh.problem(format!("order #{n} ({}): {e:#}", kind.label()));
    }
}

pub(super) async fn drive(sh: &Shared, n: usize, kind: Kind, permits: &Arc<tokio::sync::Semaphore>) -> Result<()> {
    let mut permit = permits.clone().acquire_owned().await?;
    // Kuper places the order and sends order.created.
    let mut body = kind.params(STORES);
    body["target"] = json!(sh.webhook_url());
    body["auth"] = json!({"basic": format!("{WEBHOOK_USER}:{WEBHOOK_PASSWORD}")});
    let v: Value = sh
        .http
        .post(format!("{}/sim/v1/orders", sh.sim))
        .json(&body)
        .send()
        .await
        .context("the simulator's control API")?
        .json()
        .await?;
    let id = v["originalOrderId"].as_str().ok_or_else(|| anyhow!("the simulator placed no order: {v}"))?.to_string();
    let index = {
        let mut placed = lock(&sh.placed);
        placed.push((id.clone(), kind, Vec::new()));
        placed.len() - 1
    };
    add(&sh.c.placed);
    let mut numbers = Vec::new();
    if v["merchantAnswer"]["status"] == 200 {
        numbers.push(v["merchantAnswer"]["body"]["number"].as_str().unwrap_or("").to_string());
    } else {
        // The gateway was down or being killed: Kuper retries order.created.
        add(&sh.c.created_resends);
        let answer = sh.kuper_sends(&id, "order.created").await?;
        numbers.push(answer["number"].as_str().unwrap_or("").to_string());
    }
    add(&sh.c.created);
    // Every fifth order: Kuper delivers order.created twice more, at the same moment.
    if n.is_multiple_of(5) {
        let view: Value = sh.http.get(format!("{}/sim/v1/orders/{id}", sh.sim)).send().await?.json().await?;
        let envelope = json!({"event_type": "order.created", "payload": view["order"]});
        let once = || async {
            let r = sh
                .http
                .post(sh.webhook_url())
                .basic_auth(WEBHOOK_USER, Some(WEBHOOK_PASSWORD))
                .json(&envelope)
                .send()
                .await
                .ok()?;
            if r.status().as_u16() != 200 {
                return None;
            }
            let v: Value = r.json().await.ok()?;
            v["number"].as_str().map(str::to_string)
        };
        let (a, b) = tokio::join!(once(), once());
        for r in [a, b] {
            add(&sh.c.redeliveries);
            match r {
                Some(number) => numbers.push(number),
                None => add(&sh.c.redelivery_failures),
            }
        }
    }
    sh.set_numbers(index, numbers);

    for (action, body) in kind.actions() {
        let body = if action == "pickup-code" { json!({"code": pickup_code_for(&id)}) } else { body };
        if action == "delivered" && kind == Kind::B {
            // The customer shows the code at the counter: the hand-over needs it verified.
            sh.verify_pickup_code(&id, &pickup_code_for(&id)).await?;
        }
        sh.act(&id, action, &body).await?;
        if action != "ready" {
            continue;
        }
        if kind.kuper_delivers() {
            drop(permit);
            add(&sh.c.parked);
            let waited = sh.wait_courier_ready(&id, &kind.expected()).await;
            sh.c.parked.fetch_sub(1, Ordering::Relaxed);
            waited?;
            permit = permits.clone().acquire_owned().await?;
            for e in COURIER_WEBHOOKS {
                sh.kuper_sends(&id, e).await?;
            }
        } else {
            sh.kuper_sends(&id, "order.paid").await?;
        }
    }
    drop(permit);
    add(&sh.c.done);
    Ok(())
}

//! Every unit of work that changes an order or its outbox, written once for both backends
//! (issue #12, item 1). Each one reads what it needs through [`UnitTx`], decides without the
//! database (the engine, `common`, and the `plan_*` functions here, which return a
//! [`WriteSet`]), applies the write set through the same primitives and commits. A backend
//! implements only the primitives, each a statement or two of its own SQL; it never decides.
//!
//! Locks: PostgreSQL's primitives that read an order inside a unit lock its row until commit
//! (one replica's writes to an order wait for another's); SQLite has one writer, so its reads
//! need none. The order is always locked before its outbox records: one lock order everywhere.

use crate::common::{self, OutboxRow, PickupCheck};
use crate::{
    AcceptanceDecision, ActionRequest, ActionResult, AttemptOutcome, AttemptReport, Exchange, Forwarding,
    IdempotencyKey, IngestResult, OutboxRecord, OutboxStatus, PickupVerification, Respond, Result, StoreError,
    StoredOrder,
};
use async_trait::async_trait;
use kuper_bridge_domain::engine::{self, kuper_state_after_ack};
use kuper_bridge_domain::{Action, CustomerCode, Order, Policy, WebhookOutcome};
use kuper_bridge_wire::{CreatedAnswer, NotificationEvent, WebhookEnvelope, WebhookEvent};

/// The new state of one outbox record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordChange {
    /// Delivered: final; its lease ends.
    Sent { last_status: Option<i64> },
    /// Tried again at `next_attempt_at`; its lease ends.
    Retry { next_attempt_at: i64, in_doubt: bool, last_status: Option<i64>, error: Option<String> },
    /// Given up: a dead letter, or skipped when it turned out moot; its lease ends.
    GivenUp { status: OutboxStatus, last_status: Option<i64>, error: String },
    /// An operator's decision on a dead letter: replayed (pending again, with a fresh retry
    /// schedule and give-up clock) or skipped.
    Decided { status: OutboxStatus },
}

/// What a unit of work writes for one order, decided before anything is written.
#[derive(Debug, Default)]
pub(crate) struct WriteSet {
    /// The order row rewritten: its state, document and search columns.
    pub order: Option<Order>,
    /// One outbox record's new state.
    pub record: Option<(i64, RecordChange)>,
    /// Kuper ended the order: its open notifications are skipped with this reason, and the
    /// timeline says how many.
    pub supersede: Option<String>,
    /// A record of this destination's queue became final: the next one may be its head.
    pub promote: Option<crate::Destination>,
    /// New records, queued behind the order's open ones of the same destination.
    pub queue: Vec<OutboxRow>,
    /// Timeline entries, in this order, each with the outbox record it is about.
    pub timeline: Vec<(Option<i64>, Exchange)>,
    /// The dispatchers must look again even if nothing new was queued (a delivered record's
    /// successor may now be due).
    pub wake: bool,
}

/// The primitives a backend implements for the units of work: one open write transaction.
#[async_trait]
pub(crate) trait UnitTx: Send {
    /// The order a webhook names.
    async fn order_by_identity(&mut self, env: &WebhookEnvelope) -> Result<Option<StoredOrder>>;
    /// The order with this Kuper id, orderUUID or our number.
    async fn order_by_reference(&mut self, reference: &str) -> Result<Option<StoredOrder>>;
    async fn order_by_id(&mut self, id: i64) -> Result<Option<StoredOrder>>;
    /// An outbox record and its order (the order first, then the record, both locked on
    /// PostgreSQL: a claim cannot take the record over between a lease check and its update).
    async fn record_and_order(&mut self, outbox_id: i64) -> Result<(OutboxRecord, StoredOrder)>;
    /// An outbox record as it is now (no lock).
    async fn record(&mut self, outbox_id: i64) -> Result<OutboxRecord>;
    async fn number_taken(&mut self, number: &str) -> Result<bool>;
    /// Serialises the pickup-code checks of one store until commit (PostgreSQL: two replicas
    /// giving codes to two orders of a store hold different order locks).
    async fn lock_pickup_codes(&mut self, _store_id: &str) -> Result<()> {
        Ok(())
    }
    async fn pickup_code_in_use(&mut self, store_id: &str, code: &str, except_order: i64) -> Result<bool>;
    /// The request an Idempotency-Key was first used for: its hash, order and outbox records.
    async fn earlier_request(&mut self, key: &str) -> Result<Option<(String, i64, Vec<i64>)>>;

    /// Inserts a new order numbered `{prefix}{id}`; `None` when another transaction inserted
    /// an order with its identity first (PostgreSQL replicas racing on one `order.created`).
    async fn create_order(&mut self, draft: &Order, prefix: &str, now: i64) -> Result<Option<(i64, Order)>>;
    async fn save_order(&mut self, id: i64, order: &Order, now: i64) -> Result<()>;
    async fn change_record(&mut self, id: i64, change: &RecordChange, now: i64) -> Result<()>;
    /// Skips the order's open records to Kuper that are not in flight; returns how many.
    async fn supersede_pending(&mut self, order_id: i64, reason: &str, now: i64) -> Result<u64>;
    /// Makes the first open record of the queue due if it was waiting.
    async fn promote_queue_head(&mut self, order_id: i64, destination: &crate::Destination, now: i64) -> Result<()>;
    /// The records as stored, in the order of `rows`.
    async fn insert_outbox(&mut self, order_id: i64, rows: &[OutboxRow], now: i64) -> Result<Vec<OutboxRecord>>;
    async fn insert_event(
        &mut self,
        order_id: Option<i64>,
        outbox_id: Option<i64>,
        exchange: &Exchange,
        now: i64,
    ) -> Result<()>;
    /// Records that a deadline stage was reached; false if it already was.
    async fn insert_deadline(
        &mut self,
        order_id: i64,
        kind: kuper_bridge_domain::deadlines::DeadlineKind,
        stage: kuper_bridge_domain::deadlines::DeadlineStage,
        due_at: i64,
        now: i64,
    ) -> Result<bool>;
    async fn remember_request(
        &mut self,
        key: &IdempotencyKey,
        order_id: i64,
        outbox_ids: &[i64],
        now: i64,
    ) -> Result<()>;
    /// Wakes other replicas' dispatchers at commit (PostgreSQL's NOTIFY); this process's own
    /// dispatcher is woken by the caller after the commit.
    async fn wake_replicas(&mut self) -> Result<()> {
        Ok(())
    }
    async fn commit(self) -> Result<()>;
}

/// A unit's answer, and whether this process's dispatcher should look at the outbox now.
pub(crate) struct Done<T> {
    pub value: T,
    pub wake: bool,
}

struct Applied {
    queued: Vec<OutboxRecord>,
    wake: bool,
}

async fn apply<T: UnitTx>(tx: &mut T, order_id: i64, ws: WriteSet, now: i64) -> Result<Applied> {
    if let Some(order) = &ws.order {
        tx.save_order(order_id, order, now).await?;
    }
    if let Some((id, change)) = &ws.record {
        tx.change_record(*id, change, now).await?;
    }
    let mut wake = ws.wake;
    if let Some(reason) = &ws.supersede {
        let skipped = tx.supersede_pending(order_id, reason, now).await?;
        tx.promote_queue_head(order_id, &crate::Destination::kuper(), now).await?;
        if skipped > 0 {
            tx.insert_event(Some(order_id), None, &common::superseded_note(skipped, reason), now).await?;
            wake = true;
        }
    }
    if let Some(destination) = &ws.promote {
        tx.promote_queue_head(order_id, destination, now).await?;
    }
    let queued = tx.insert_outbox(order_id, &ws.queue, now).await?;
    wake |= !queued.is_empty();
    for (outbox_id, exchange) in &ws.timeline {
        tx.insert_event(Some(order_id), *outbox_id, exchange, now).await?;
    }
    Ok(Applied { queued, wake })
}

/// Commits, having asked other replicas' dispatchers to look (at commit) if `wake`.
async fn finish<T: UnitTx>(mut tx: T, wake: bool) -> Result<()> {
    if wake {
        tx.wake_replicas().await?;
    }
    tx.commit().await
}

/// A webhook about an order we have: the engine's decision as a write set.
pub(crate) fn plan_webhook(
    found: &StoredOrder,
    env: &WebhookEnvelope,
    forwarding: &Forwarding,
    now: i64,
) -> Result<(IngestResult, WriteSet)> {
    let decision = engine::apply_webhook(&found.order, env);
    let mut ws = WriteSet::default();
    if decision.supersede_pending {
        ws.supersede = Some(format!("superseded: {} from Kuper", env.event_type));
    }
    if decision.outcome != WebhookOutcome::Duplicate {
        ws.queue =
            common::forwards(forwarding, &decision.order, env.event_type.as_str(), || common::kuper_event(env), now)?;
    }
    if decision.order != found.order {
        ws.order = Some(decision.order);
    }
    Ok((IngestResult::Applied { order_id: found.id, outcome: decision.outcome, note: decision.note }, ws))
}

/// The result of one delivery attempt as a write set. A result under a lease that is no longer
/// current (it expired and the record was claimed again) changes nothing but the timeline.
pub(crate) fn plan_completion(
    record: &OutboxRecord,
    order: &Order,
    lease: &str,
    report: AttemptReport,
    forwarding: &Forwarding,
    now: i64,
) -> Result<WriteSet> {
    if record.lease.as_deref() != Some(lease) || record.status != OutboxStatus::Pending {
        return Ok(WriteSet { timeline: vec![(Some(record.id), common::late_result(report))], ..Default::default() });
    }
    let to_kuper = record.destination.is_kuper();
    let mut ws = WriteSet { promote: Some(record.destination.clone()), ..Default::default() };
    let change = match &report.outcome {
        AttemptOutcome::Delivered => {
            if let Some(event) = NotificationEvent::parse(&record.event).filter(|_| to_kuper) {
                let next = kuper_state_after_ack(order.kuper_state, event, order.scheme);
                if next != order.kuper_state {
                    let mut order = order.clone();
                    order.kuper_state = next;
                    ws.order = Some(order);
                }
            }
            // The next notification of this order may have become the head of its queue.
            ws.wake = true;
            RecordChange::Sent { last_status: report.status }
        }
        // Kuper ended the order while this was in flight: retrying would only be refused.
        AttemptOutcome::Retry { .. } if to_kuper && common::moot(order) => RecordChange::GivenUp {
            status: OutboxStatus::Skipped,
            last_status: report.status,
            error: common::moot_reason(&report),
        },
        AttemptOutcome::Retry { next_attempt_at, in_doubt } => RecordChange::Retry {
            next_attempt_at: *next_attempt_at,
            in_doubt: *in_doubt,
            last_status: report.status,
            error: report.error.clone(),
        },
        AttemptOutcome::Dead => {
            // Kuper ended the order while this was in flight: its refusal is moot.
            let (status, error) = if to_kuper {
                common::give_up(record, order, &report)
            } else {
                (OutboxStatus::Dead, report.error.clone().unwrap_or_default())
            };
            if to_kuper && status == OutboxStatus::Dead {
                let event = || common::dead_letter_event(record, &report);
                ws.queue = common::forwards(forwarding, order, "notification.dead", event, now)?;
            }
            RecordChange::GivenUp { status, last_status: report.status, error }
        }
    };
    ws.record = Some((record.id, change));
    ws.timeline.push((Some(record.id), report.exchange));
    Ok(ws)
}

/// An operator's replay or skip of a dead letter as a write set.
pub(crate) fn plan_operator_decision(
    record: &OutboxRecord,
    to: OutboxStatus,
    note: &str,
    mut exchange: Exchange,
) -> Result<WriteSet> {
    common::require_dead(record)?;
    common::operator_exchange(&mut exchange, record, to.as_str(), note);
    Ok(WriteSet {
        record: Some((record.id, RecordChange::Decided { status: to })),
        // Skipped: the records behind it are unblocked.
        promote: Some(record.destination.clone()),
        timeline: vec![(Some(record.id), exchange)],
        // Replay re-queues the record; skip unblocks the records behind it.
        wake: true,
        ..Default::default()
    })
}

/// A webhook from Kuper: a new order, or a change to one we have.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn ingest<T: UnitTx>(
    mut tx: T,
    forwarding: &Forwarding,
    env: &WebhookEnvelope,
    mut exchange: Exchange,
    policy: &Policy,
    respond: Respond,
    acceptance: Option<AcceptanceDecision>,
    now: i64,
) -> Result<Done<IngestResult>> {
    let existing = if env.event.is_some() { tx.order_by_identity(env).await? } else { None };
    let mut notes = Vec::new();
    let mut ws = WriteSet::default();
    let result = match (env.event, existing) {
        (None, _) => IngestResult::UnknownEvent,
        (Some(WebhookEvent::OrderCreated), Some(found)) => created_again(&found),
        (Some(WebhookEvent::OrderCreated), None) => {
            let draft = common::new_order(env, policy, String::new())?;
            match tx.create_order(&draft, &policy.number_prefix, now).await? {
                Some((id, generated)) => {
                    let mut order = generated.clone();
                    if let Some(wanted) = acceptance.as_ref().and_then(common::wanted_number) {
                        let taken = tx.number_taken(wanted).await?;
                        common::take_number(&mut order, wanted, taken, &policy.number_prefix, &mut notes);
                    }
                    ws.queue = common::forwards(
                        forwarding,
                        &order,
                        env.event_type.as_str(),
                        || common::kuper_event(env),
                        now,
                    )?;
                    if let Some(decision) = &acceptance {
                        let (after, more) =
                            common::apply_acceptance(&order, decision, forwarding, policy, now, &mut notes)?;
                        order = after;
                        ws.queue.extend(more);
                        ws.timeline.push((None, decision.exchange.clone()));
                    }
                    let answer = CreatedAnswer::new(order.number.clone(), order.expected_assembly_time.clone());
                    if order != generated {
                        ws.order = Some(order);
                    }
                    // Kuper's answer is `created` even when the hook declined: the
                    // cancellation follows as a notification (protocol.md §4).
                    IngestResult::Created { order_id: id, answer, duplicate: false }
                }
                None => {
                    // The same order.created reached another replica (or a retry raced the
                    // first delivery) and its insert won. The insert waited for that
                    // transaction to commit, so the order is there: answer as every retry is
                    // answered, with its number.
                    let found = tx.order_by_identity(env).await?.ok_or_else(|| {
                        StoreError::Unavailable("the order's number or identity is taken by another order".into())
                    })?;
                    created_again(&found)
                }
            }
        }
        (Some(_), None) => IngestResult::UnknownOrder,
        (Some(_), Some(found)) => {
            let (result, planned) = plan_webhook(&found, env, forwarding, now)?;
            ws = planned;
            result
        }
    };
    common::finish_ingest_exchange(&mut exchange, &result, respond);
    if !notes.is_empty() {
        exchange.detail = Some(notes.join("; "));
    }
    let wake = match result.order_id() {
        Some(order_id) => {
            ws.timeline.push((None, exchange));
            apply(&mut tx, order_id, ws, now).await?.wake
        }
        None => {
            tx.insert_event(None, None, &exchange, now).await?;
            false
        }
    };
    finish(tx, wake).await?;
    Ok(Done { value: result, wake })
}

fn created_again(found: &StoredOrder) -> IngestResult {
    IngestResult::Created {
        order_id: found.id,
        answer: CreatedAnswer::new(found.order.number.clone(), found.order.expected_assembly_time.clone()),
        duplicate: true,
    }
}

/// A merchant's action on an order (REST, console or CLI), at most once per Idempotency-Key.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn apply_action<T: UnitTx>(
    mut tx: T,
    forwarding: &Forwarding,
    reference: &str,
    request: ActionRequest,
    policy: &Policy,
    mut exchange: Exchange,
    idempotency: Option<IdempotencyKey>,
    now: i64,
) -> Result<Done<ActionResult>> {
    let found = tx.order_by_reference(reference).await?.ok_or_else(|| StoreError::OrderNotFound(reference.into()))?;
    if let Some(key) = &idempotency {
        // After the order's lock (PostgreSQL): a concurrent request with the same key waits
        // for this one and then finds its record.
        if let Some((hash, order_id, ids)) = tx.earlier_request(&key.key).await? {
            if hash != key.request_hash || order_id != found.id {
                return Err(StoreError::IdempotencyKeyReused);
            }
            let mut notifications = Vec::with_capacity(ids.len());
            for id in ids {
                notifications.push(tx.record(id).await?);
            }
            tx.commit().await?;
            return Ok(Done { value: ActionResult { order: found, notifications, replayed: true }, wake: false });
        }
    }
    let supplied_code = matches!(request, ActionRequest::Action(Action::PickupCode { .. }));
    let action = match request {
        ActionRequest::Action(a) => a,
        ActionRequest::GeneratePickupCode => {
            // Unique among the store's active orders, so a code identifies one order at the desk.
            tx.lock_pickup_codes(&found.order.store_id).await?;
            let mut code = common::generate_code(policy.pickup_code_length);
            let mut tries = 0;
            while tx.pickup_code_in_use(&found.order.store_id, &code, found.id).await? {
                tries += 1;
                if tries >= 20 {
                    return Err(StoreError::NoFreePickupCode);
                }
                code = common::generate_code(policy.pickup_code_length);
            }
            Action::PickupCode { code: CustomerCode::parse(&code) }
        }
    };
    // The rules first: a refused action is a 409 whatever its input.
    let action_name = action.kind().as_str();
    let decision = engine::apply_action(&found.order, action, policy)?;
    if supplied_code {
        let code = decision.order.pickup.as_ref().map(|p| p.code.clone()).unwrap_or_default();
        tx.lock_pickup_codes(&found.order.store_id).await?;
        if tx.pickup_code_in_use(&found.order.store_id, &code, found.id).await? {
            return Err(StoreError::PickupCodeInUse);
        }
    }
    let cause = serde_json::json!({ "kind": "merchant", "action": action_name });
    let queue =
        common::change_rows(forwarding, &found.order, &decision.order, &decision.notifications, cause, policy, now)?;
    exchange.outcome = Some("accepted".into());
    exchange.detail = Some(common::action_detail(&found.order, &decision.order, &decision.notifications));
    let ws =
        WriteSet { order: Some(decision.order.clone()), queue, timeline: vec![(None, exchange)], ..Default::default() };
    let applied = apply(&mut tx, found.id, ws, now).await?;
    let mut notifications = applied.queued;
    // The rows to Kuper come first; the rest are forwards to subscribers.
    notifications.truncate(decision.notifications.len());
    if let Some(key) = &idempotency {
        let ids: Vec<i64> = notifications.iter().map(|r| r.id).collect();
        tx.remember_request(key, found.id, &ids, now).await?;
    }
    finish(tx, applied.wake).await?;
    let order = StoredOrder { id: found.id, order: decision.order, created_at: found.created_at, updated_at: now };
    Ok(Done { value: ActionResult { order, notifications, replayed: false }, wake: applied.wake })
}

/// A code typed at the pickup desk: counted (wrong codes lock the order for a while) and kept
/// in the timeline. The outer error: nothing was stored; the inner one is the committed answer
/// (a locked order's refusal is audited too).
pub(crate) async fn verify_pickup_code<T: UnitTx>(
    mut tx: T,
    reference: &str,
    code: &str,
    policy: &Policy,
    mut exchange: Exchange,
    now: i64,
) -> Result<Result<PickupVerification>> {
    // Locked on PostgreSQL: two replicas counting wrong codes of one order must not lose a count.
    let found = tx.order_by_reference(reference).await?.ok_or_else(|| StoreError::OrderNotFound(reference.into()))?;
    let (ws, outcome) = match common::check_pickup_code(&found.order, code, policy, now / 1000, &mut exchange)? {
        PickupCheck::Locked { until } => (WriteSet::default(), Err(StoreError::PickupLocked { until })),
        PickupCheck::Checked { order, result } => (WriteSet { order: Some(*order), ..Default::default() }, Ok(result)),
    };
    let ws = WriteSet { timeline: vec![(None, exchange)], ..ws };
    let applied = apply(&mut tx, found.id, ws, now).await?;
    finish(tx, applied.wake).await?;
    // Committed either way: a lock-out's refusal is audited and answered as an error.
    Ok(outcome)
}

/// The result of one delivery attempt.
pub(crate) async fn complete_attempt<T: UnitTx>(
    mut tx: T,
    forwarding: &Forwarding,
    outbox_id: i64,
    lease: &str,
    report: AttemptReport,
    now: i64,
) -> Result<Done<()>> {
    let (record, stored) = tx.record_and_order(outbox_id).await?;
    let ws = plan_completion(&record, &stored.order, lease, report, forwarding, now)?;
    let applied = apply(&mut tx, record.order_id, ws, now).await?;
    finish(tx, applied.wake).await?;
    Ok(Done { value: (), wake: applied.wake })
}

/// An operator's replay or skip of a dead letter; returns the record as it is now.
pub(crate) async fn operator_decision<T: UnitTx>(
    mut tx: T,
    outbox_id: i64,
    exchange: Exchange,
    to: OutboxStatus,
    note: &str,
    now: i64,
) -> Result<Done<OutboxRecord>> {
    let (record, _) = tx.record_and_order(outbox_id).await?;
    let ws = plan_operator_decision(&record, to, note, exchange)?;
    let applied = apply(&mut tx, record.order_id, ws, now).await?;
    let updated = tx.record(outbox_id).await?;
    finish(tx, applied.wake).await?;
    Ok(Done { value: updated, wake: applied.wake })
}

/// A deadline stage reached: recorded once (a concurrent sweep inserting the same stage waits
/// for this transaction and then inserts nothing), with its timeline entry, and forwarded to
/// the merchant's systems that subscribe to it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_deadline<T: UnitTx>(
    mut tx: T,
    forwarding: &Forwarding,
    order_id: i64,
    kind: kuper_bridge_domain::deadlines::DeadlineKind,
    stage: kuper_bridge_domain::deadlines::DeadlineStage,
    due_at: i64,
    exchange: Exchange,
    now: i64,
) -> Result<Done<bool>> {
    let new = tx.insert_deadline(order_id, kind, stage, due_at, now).await?;
    let mut wake = false;
    if new {
        let mut ws = WriteSet { timeline: vec![(None, exchange)], ..Default::default() };
        if !forwarding.subscribers.is_empty() {
            if let Some(stored) = tx.order_by_id(order_id).await? {
                ws.queue = common::deadline_forwards(forwarding, &stored.order, kind, stage, due_at, now)?;
            }
        }
        wake = apply(&mut tx, order_id, ws, now).await?.wake;
    }
    finish(tx, wake).await?;
    Ok(Done { value: new, wake })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Destination, SubscriberRoute};
    use kuper_bridge_domain::OrderState;

    const CREATED: &str = include_str!("../../../fixtures/webhooks/order.created.kuper-delivery.json");
    const CANCELED: &str = include_str!("../../../fixtures/webhooks/order.canceled.json");
    const NOW: i64 = 1_700_000_000_000;

    fn envelope(body: &str) -> WebhookEnvelope {
        WebhookEnvelope::parse(body.as_bytes()).unwrap()
    }

    fn open_order() -> StoredOrder {
        let order = common::new_order(&envelope(CREATED), &Policy::default(), "KB1".into()).unwrap();
        StoredOrder { id: 1, order, created_at: NOW, updated_at: NOW }
    }

    /// The same order after Kuper canceled it.
    fn canceled_by_kuper() -> Order {
        let found = open_order();
        let (_, ws) = plan_webhook(&found, &envelope(CANCELED), &Forwarding::default(), NOW).unwrap();
        ws.order.unwrap()
    }

    fn record(destination: &str, event: &str) -> OutboxRecord {
        OutboxRecord {
            id: 7,
            order_id: 1,
            kind: Destination::parse(destination).unwrap().kind(),
            destination: Destination::parse(destination).unwrap(),
            event: event.into(),
            body: "{}".into(),
            status: OutboxStatus::Pending,
            attempts: 1,
            next_attempt_at: NOW,
            waiting: false,
            in_doubt: false,
            last_status: None,
            last_error: None,
            created_at: NOW,
            sent_at: None,
            lease: Some("me/7/1".into()),
            retry_since: NOW,
            idempotency_key: "kb-1".into(),
        }
    }

    fn report(outcome: AttemptOutcome, status: Option<i64>) -> AttemptReport {
        AttemptReport { outcome, status, error: Some("refused".into()), exchange: Exchange::default() }
    }

    fn with_subscriber() -> Forwarding {
        Forwarding {
            subscribers: vec![SubscriberRoute {
                destination: Destination::subscriber("erp"),
                events: vec!["*".into()],
                stores: vec![],
            }],
        }
    }

    #[test]
    fn an_attempts_result_decides_the_records_next_state() {
        let open = open_order().order;
        let canceled = canceled_by_kuper();
        assert_eq!(canceled.state(), OrderState::Canceled);
        let retry = AttemptOutcome::Retry { next_attempt_at: NOW + 5_000, in_doubt: true };
        let given_up =
            |status, error: &str| RecordChange::GivenUp { status, last_status: Some(422), error: error.into() };
        #[rustfmt::skip]
        type Case<'a> = (&'a str, &'a Order, &'a str, AttemptOutcome, Option<RecordChange>, usize, bool);
        let cases: Vec<Case> = vec![
            // destination, order, lease, outcome → record change, rows queued, wake
            (
                "kuper",
                &open,
                "me/7/1",
                AttemptOutcome::Delivered,
                Some(RecordChange::Sent { last_status: Some(422) }),
                0,
                true,
            ),
            (
                "kuper",
                &open,
                "me/7/1",
                retry.clone(),
                Some(RecordChange::Retry {
                    next_attempt_at: NOW + 5_000,
                    in_doubt: true,
                    last_status: Some(422),
                    error: Some("refused".into()),
                }),
                0,
                false,
            ),
            // Kuper ended the order while the notification was in flight: moot, not retried.
            (
                "kuper",
                &canceled,
                "me/7/1",
                retry.clone(),
                Some(given_up(OutboxStatus::Skipped, "moot, Kuper ended the order: refused")),
                0,
                false,
            ),
            // A dead letter is forwarded to the merchant's systems as notification.dead…
            ("kuper", &open, "me/7/1", AttemptOutcome::Dead, Some(given_up(OutboxStatus::Dead, "refused")), 1, false),
            // …unless it is moot.
            (
                "kuper",
                &canceled,
                "me/7/1",
                AttemptOutcome::Dead,
                Some(given_up(OutboxStatus::Skipped, "moot, Kuper ended the order: refused")),
                0,
                false,
            ),
            // A subscriber's dead letter is not forwarded to subscribers again.
            (
                "subscriber:erp",
                &open,
                "me/7/1",
                AttemptOutcome::Dead,
                Some(given_up(OutboxStatus::Dead, "refused")),
                0,
                false,
            ),
            // A result under a lease that is no longer current changes nothing.
            ("kuper", &open, "other/7/2", AttemptOutcome::Delivered, None, 0, false),
        ];
        for (destination, order, lease, outcome, change, queued, wake) in cases {
            let label = format!("{destination} {lease} {outcome:?}");
            let ws = plan_completion(
                &record(destination, "order.in_work"),
                order,
                lease,
                report(outcome, Some(422)),
                &with_subscriber(),
                NOW,
            )
            .unwrap();
            assert_eq!(ws.record, change.map(|c| (7, c)), "{label}");
            assert_eq!(ws.queue.len(), queued, "{label}");
            assert_eq!(ws.wake, wake, "{label}");
            assert_eq!(ws.timeline.len(), 1, "{label}: the attempt is always in the timeline");
            assert_eq!(ws.promote.is_some(), ws.record.is_some(), "{label}: a changed record may free its queue");
        }
    }

    #[test]
    fn a_delivered_notification_moves_kupers_state_once() {
        let order = open_order().order;
        let ws = plan_completion(
            &record("kuper", "order.in_work"),
            &order,
            "me/7/1",
            report(AttemptOutcome::Delivered, Some(200)),
            &Forwarding::default(),
            NOW,
        )
        .unwrap();
        let after = ws.order.expect("Kuper's state follows the acknowledged notification");
        assert_ne!(after.kuper_state, order.kuper_state);
        // Acknowledged again (a repeat), nothing more to write.
        let ws = plan_completion(
            &record("kuper", "order.in_work"),
            &after,
            "me/7/1",
            report(AttemptOutcome::Delivered, Some(200)),
            &Forwarding::default(),
            NOW,
        )
        .unwrap();
        assert!(ws.order.is_none());
    }

    #[test]
    fn kupers_cancellation_supersedes_what_is_queued_and_a_repeat_changes_nothing() {
        let found = open_order();
        let (result, ws) = plan_webhook(&found, &envelope(CANCELED), &with_subscriber(), NOW).unwrap();
        assert!(matches!(result, IngestResult::Applied { order_id: 1, .. }));
        assert_eq!(ws.supersede.as_deref(), Some("superseded: order.canceled from Kuper"));
        assert_eq!(ws.queue.len(), 1, "forwarded to the subscriber");
        let canceled = StoredOrder { order: ws.order.expect("the order is canceled"), ..found };
        let (result, ws) = plan_webhook(&canceled, &envelope(CANCELED), &with_subscriber(), NOW).unwrap();
        assert!(matches!(result, IngestResult::Applied { outcome: WebhookOutcome::Duplicate, .. }));
        assert!(ws.order.is_none() && ws.queue.is_empty(), "a repeat is not forwarded again");
    }

    #[test]
    fn only_a_dead_letter_takes_an_operators_decision() {
        let mut dead = record("kuper", "order.in_work");
        dead.status = OutboxStatus::Dead;
        let ws =
            plan_operator_decision(&dead, OutboxStatus::Pending, "replayed by operator", Exchange::default()).unwrap();
        assert_eq!(ws.record, Some((7, RecordChange::Decided { status: OutboxStatus::Pending })));
        assert!(ws.wake && ws.promote.is_some());
        let pending = record("kuper", "order.in_work");
        assert!(matches!(
            plan_operator_decision(&pending, OutboxStatus::Skipped, "skipped by operator", Exchange::default()),
            Err(StoreError::NotDeadLetter { id: 7, status: OutboxStatus::Pending })
        ));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Every webhook Kuper sends about an order we have, in any order and repeated.
        const WEBHOOKS: [&str; 8] = [
            include_str!("../../../fixtures/webhooks/order.paid.json"),
            include_str!("../../../fixtures/webhooks/order.updated.json"),
            include_str!("../../../fixtures/webhooks/order.received.json"),
            include_str!("../../../fixtures/webhooks/order.delivering.json"),
            include_str!("../../../fixtures/webhooks/order.delivered.json"),
            include_str!("../../../fixtures/webhooks/courier.assigned.json"),
            include_str!("../../../fixtures/webhooks/courier.arrived.json"),
            CANCELED,
        ];
        const EVENTS: [&str; 5] =
            ["order.in_work", "order.assembled", "order.ready_for_delivery", "order.delivered", "order.canceled"];

        fn outcome() -> impl Strategy<Value = AttemptOutcome> {
            prop_oneof![
                Just(AttemptOutcome::Delivered),
                (1i64..100_000, any::<bool>())
                    .prop_map(|(later, in_doubt)| AttemptOutcome::Retry { next_attempt_at: NOW + later, in_doubt }),
                Just(AttemptOutcome::Dead),
            ]
        }

        fn status() -> impl Strategy<Value = OutboxStatus> {
            prop_oneof![
                4 => Just(OutboxStatus::Pending),
                1 => Just(OutboxStatus::Sent),
                1 => Just(OutboxStatus::Dead),
                1 => Just(OutboxStatus::Skipped),
            ]
        }

        proptest! {
            /// Whatever an attempt reports: the attempt is in the timeline; only the current
            /// lease of a pending record changes anything; a changed record may free its queue;
            /// only a delivery to Kuper moves the order, and only Kuper's side of it, forward;
            /// a moot order is never retried; only Kuper's live dead letter is forwarded.
            #[test]
            fn a_completion_changes_only_what_its_result_allows(
                to_kuper in any::<bool>(),
                canceled in any::<bool>(),
                current_lease in any::<bool>(),
                record_status in status(),
                event in proptest::sample::select(EVENTS.to_vec()),
                outcome in outcome(),
                code in proptest::option::of(200i64..600),
            ) {
                let order = if canceled { canceled_by_kuper() } else { open_order().order };
                let mut rec = record(if to_kuper { "kuper" } else { "subscriber:erp" }, event);
                rec.status = record_status;
                let lease = if current_lease { "me/7/1" } else { "other/7/2" };
                let ws = plan_completion(&rec, &order, lease, report(outcome.clone(), code), &with_subscriber(), NOW)
                    .unwrap();

                prop_assert_eq!(ws.timeline.len(), 1);
                prop_assert_eq!(ws.timeline[0].0, Some(rec.id));
                prop_assert!(ws.supersede.is_none());
                let live = current_lease && record_status == OutboxStatus::Pending;
                if !live {
                    prop_assert!(ws.record.is_none() && ws.order.is_none() && ws.queue.is_empty());
                    prop_assert!(ws.promote.is_none() && !ws.wake);
                    return Ok(());
                }
                prop_assert_eq!(ws.promote.as_ref(), Some(&rec.destination));
                let change = ws.record.as_ref().map(|(id, change)| (*id, change.clone()));
                prop_assert!(matches!(change, Some((7, _))));
                let change = change.map(|(_, c)| c);
                match outcome {
                    AttemptOutcome::Delivered => {
                        prop_assert_eq!(change, Some(RecordChange::Sent { last_status: code }));
                        prop_assert!(ws.wake, "the next notification may be due");
                    }
                    AttemptOutcome::Retry { next_attempt_at, in_doubt } if !(to_kuper && canceled) => {
                        prop_assert_eq!(change, Some(RecordChange::Retry {
                            next_attempt_at, in_doubt, last_status: code, error: Some("refused".into()),
                        }));
                    }
                    AttemptOutcome::Retry { .. } | AttemptOutcome::Dead => {
                        let Some(RecordChange::GivenUp { status, .. }) = change else {
                            return Err(TestCaseError::fail("a moot retry or a dead letter is given up"));
                        };
                        if to_kuper && canceled {
                            prop_assert_eq!(status, OutboxStatus::Skipped, "moot: Kuper ended the order");
                        } else {
                            prop_assert_eq!(status, OutboxStatus::Dead);
                        }
                    }
                }
                let forwarded_dead = matches!(
                    ws.record, Some((_, RecordChange::GivenUp { status: OutboxStatus::Dead, .. }))
                ) && to_kuper;
                prop_assert_eq!(ws.queue.len(), usize::from(forwarded_dead), "only Kuper's dead letter is forwarded");
                if let Some(after) = &ws.order {
                    prop_assert!(to_kuper && matches!(outcome, AttemptOutcome::Delivered));
                    prop_assert!(after.kuper_state > order.kuper_state, "Kuper's side only moves forward");
                    prop_assert_eq!(after.state(), order.state(), "our side is not touched by a delivery");
                }
            }

            /// Any sequence of Kuper's webhooks about an order: each one applied to the order as
            /// the previous ones left it, then the same one again. A repeat never changes the order
            /// or supersedes anything: it is a duplicate, forwarded to no one, or a webhook the
            /// order has nothing to take from (it ended, or moved past it), recorded and forwarded
            /// again as the first time was (subscribers take events at least once); and a canceled
            /// order stays canceled. (A repeated order.created never comes here: `ingest` answers
            /// it from the stored order.)
            #[test]
            fn a_repeated_webhook_changes_nothing(picks in proptest::collection::vec(0..WEBHOOKS.len(), 1..12)) {
                let mut found = open_order();
                let forwarding = with_subscriber();
                for pick in picks {
                    let env = envelope(WEBHOOKS[pick]);
                    let was_canceled = found.order.state() == OrderState::Canceled;
                    let (_, ws) = plan_webhook(&found, &env, &forwarding, NOW).unwrap();
                    if let Some(order) = ws.order {
                        found = StoredOrder { order, ..found };
                    }
                    if was_canceled {
                        prop_assert_eq!(found.order.state(), OrderState::Canceled);
                    }
                    let (again, ws) = plan_webhook(&found, &env, &forwarding, NOW).unwrap();
                    let IngestResult::Applied { outcome, .. } = again else {
                        return Err(TestCaseError::fail(format!("{} repeated: {again:?}", env.event_type)));
                    };
                    prop_assert!(
                        matches!(outcome, WebhookOutcome::Duplicate | WebhookOutcome::Recorded),
                        "{} repeated: {:?}", env.event_type, outcome
                    );
                    prop_assert!(ws.order.is_none() && ws.supersede.is_none(), "{} repeated", env.event_type);
                    if outcome == WebhookOutcome::Duplicate {
                        prop_assert!(ws.queue.is_empty(), "a duplicate is not forwarded again");
                    }
                }
            }
        }
    }
}

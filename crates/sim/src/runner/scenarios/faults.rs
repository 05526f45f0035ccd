//! Kuper misbehaving the ways real Kuper does: repeated and reordered webhooks, an outage,
//! revoked tokens.

use serde_json::json;

use super::super::ctx::{Ctx, OrderKind, Step};
use super::super::steps::{self, Op};
use crate::model::{EventKind, KuperState, PaymentState};
use crate::validate::check_created_answer;

pub(super) async fn duplicate_webhooks(ctx: &mut Ctx<'_>) -> Step {
    let order = ctx.create(OrderKind::A, |_| true).await?;
    let first = ctx.number(order);
    // A repeated order.created: same number, no second order (protocol.md §4).
    let answers = ctx.kuper_n(order, "order.created", 1).await;
    if let Some(answer) = answers.first() {
        let check = check_created_answer(answer.status, &answer.body);
        let id = ctx.id(order);
        if !check.ok {
            ctx.fail(
                "duplicate_created",
                format!("the repeated order.created for {id}: {}", check.problems.join("; ")),
            );
        } else if check.number != first {
            ctx.fail(
                "duplicate_created",
                format!("the repeated order.created for {id} got number {:?}, the first got {first:?}", check.number),
            );
        }
    }
    steps::perform(ctx, order, Op::StartAssembly).await?;
    ctx.kuper_n(order, "courier.assigned", 2).await;
    steps::walk(ctx, order, &[Op::Assembled, Op::Ready]).await?;
    for event in ["order.paid", "order.received"] {
        ctx.kuper_n(order, event, 2).await;
    }
    ctx.kuper(order, "order.delivering").await;
    ctx.kuper_n(order, "order.delivered", 2).await;
    ctx.quiet().await;
    ctx.finish(order, KuperState::Shipped, Some(PaymentState::Paid));
    Ok(())
}

pub(super) async fn reordered_courier_events(ctx: &mut Ctx<'_>) -> Step {
    let order = ctx.create(OrderKind::A, |_| true).await?;
    steps::perform(ctx, order, Op::StartAssembly).await?;
    ctx.kuper(order, "courier.arrived").await;
    ctx.kuper(order, "courier.assigned").await;
    steps::walk(ctx, order, &[Op::Assembled, Op::Ready, Op::Paid]).await?;
    ctx.kuper(order, "order.delivering").await;
    ctx.kuper(order, "order.received").await;
    ctx.kuper(order, "order.delivered").await;
    // A courier event delayed past the delivery.
    ctx.kuper(order, "courier.arrived").await;
    ctx.finish(order, KuperState::Shipped, Some(PaymentState::Paid));
    Ok(())
}

pub(super) async fn kuper_outage(ctx: &mut Ctx<'_>) -> Step {
    let order = ctx.create(OrderKind::A, |_| true).await?;
    steps::perform(ctx, order, Op::StartAssembly).await?;
    ctx.start_outage();
    // The store goes on working; the merchant must keep the notifications and retry. The
    // second action comes once the first notification has met the outage, so that it is
    // queued behind a failing one (and the transcript does not depend on timing).
    let mut hit = ctx.post_action(order, "assembled", json!({})).await;
    if hit.is_ok() {
        hit = ctx.wait_for_fault(order).await;
    }
    if hit.is_ok() {
        hit = ctx.post_action(order, "ready", json!({})).await;
    }
    // Always end the outage: later scenarios must not inherit it.
    ctx.end_outage();
    hit?;
    ctx.expect(order, &[EventKind::Assembled, EventKind::ReadyForDelivery]).await?;
    steps::walk(ctx, order, &[Op::Paid, Op::Received, Op::KuperDelivering, Op::KuperDelivered]).await?;
    ctx.finish(order, KuperState::Shipped, Some(PaymentState::Paid));
    Ok(())
}

pub(super) async fn token_expiry(ctx: &mut Ctx<'_>) -> Step {
    let order = ctx.create(OrderKind::A, |_| true).await?;
    steps::perform(ctx, order, Op::StartAssembly).await?;
    // The 401 that follows is the point of the scenario, not a fault of the merchant.
    ctx.tolerate("unauthorized");
    let before = ctx.tokens_issued();
    // A merchant on the v3 API authenticates with a static Client-Token and never asks for an
    // OAuth token: there is nothing to expire, and the scenario checks only that the flow goes on.
    let uses_oauth = before > 0;
    if !uses_oauth {
        ctx.note(
            "the merchant uses a static Client-Token (no OAuth token was ever requested): token expiry does not apply",
        );
    }
    ctx.revoke_tokens();
    let assembled = steps::perform(ctx, order, Op::Assembled).await;
    if uses_oauth && ctx.tokens_issued() == before {
        let id = ctx.id(order);
        ctx.fail(
            "token_refresh",
            format!("the merchant asked for no new token after Kuper revoked its tokens (order {id})"),
        );
    }
    assembled?;
    steps::walk(ctx, order, &[Op::Ready, Op::Paid, Op::Received, Op::KuperDelivering, Op::KuperDelivered]).await?;
    ctx.finish(order, KuperState::Shipped, Some(PaymentState::Paid));
    Ok(())
}

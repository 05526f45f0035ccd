//! The brief's six scenarios, and cancellation at every stage of every scheme.

use serde_json::json;

use super::super::ctx::{Ctx, OrderKind, Step};
use super::super::steps::{self, path, Op};
use crate::model::{EventKind, KuperState, PaymentState, Scheme};

pub(super) async fn a_happy(ctx: &mut Ctx<'_>) -> Step {
    let ops = path(OrderKind::A, ctx.opts.profile);
    let order = ctx.create(OrderKind::A, |_| true).await?;
    for op in ops {
        steps::perform(ctx, order, op).await?;
        if op == Op::Ready {
            // Kuper delivers in scheme A: the merchant must not claim the delivery itself.
            ctx.refused(order, "delivering", json!({}), "in scheme A, where Kuper delivers").await;
        }
    }
    ctx.finish(order, KuperState::Shipped, Some(PaymentState::Paid));
    Ok(())
}

pub(super) async fn b_happy(ctx: &mut Ctx<'_>) -> Step {
    let ops = path(OrderKind::B, ctx.opts.profile);
    let order = ctx.create(OrderKind::B, |_| true).await?;
    for op in ops {
        if op == Op::VerifyCode {
            // The bag goes over the counter only to the customer who showed the code.
            ctx.refused(order, "delivered", json!({}), "before the customer's pickup code was verified").await;
        }
        steps::perform(ctx, order, op).await?;
    }
    ctx.finish(order, KuperState::Shipped, Some(PaymentState::Paid));
    Ok(())
}

pub(super) async fn c_happy(ctx: &mut Ctx<'_>) -> Step {
    let ops = path(OrderKind::C, ctx.opts.profile);
    steps::happy(ctx, OrderKind::C, &ops).await.map(drop)
}

pub(super) async fn restaurant(ctx: &mut Ctx<'_>) -> Step {
    let ops = path(OrderKind::RESTAURANT, ctx.opts.profile);
    let order = ctx.create(OrderKind::RESTAURANT, |_| true).await?;
    steps::walk(ctx, order, &ops).await?;
    let accepted = ctx.accepted_payload(order, EventKind::Accepted);
    let time = accepted.as_ref().and_then(|p| p.get("expectedAssemblyTime").or_else(|| p.get("estimated_assembly_at")));
    if time.is_none_or(|t| t.is_null()) {
        let id = ctx.id(order);
        ctx.fail("accepted_time", format!("order.accepted for order {id} carries no expected assembly time"));
    }
    ctx.finish(order, KuperState::Shipped, Some(PaymentState::Paid));
    Ok(())
}

pub(super) async fn cancel_by_merchant(ctx: &mut Ctx<'_>) -> Step {
    let order = ctx.create(OrderKind::A, |_| true).await?;
    steps::cancel(ctx, order, "out_of_stock").await?;
    ctx.refused(order, "start-assembly", json!({}), "after the store canceled the order").await;
    ctx.quiet().await;
    ctx.finish(order, KuperState::Canceled, None);
    Ok(())
}

pub(super) async fn cancel_by_kuper(ctx: &mut Ctx<'_>) -> Step {
    let order = ctx.create(OrderKind::A, |_| true).await?;
    steps::perform(ctx, order, Op::StartAssembly).await?;
    ctx.kuper(order, "order.canceled").await;
    ctx.refused(order, "assembled", json!({}), "after Kuper canceled the order").await;
    // Kuper may deliver its webhook twice; the second changes nothing.
    ctx.kuper(order, "order.canceled").await;
    ctx.quiet().await;
    ctx.finish(order, KuperState::Canceled, None);
    Ok(())
}

/// How far into the path the store may still cancel (protocol.md §5: A before the courier
/// takes the order, B and C before hand-over).
fn store_may_cancel(kind: OrderKind, done: &[Op]) -> bool {
    match kind.scheme {
        Scheme::A => !done.contains(&Op::Received),
        Scheme::B | Scheme::C => !done.contains(&Op::Delivered),
    }
}

/// For every prefix of the path at which the order is still open: a fresh order walked that
/// far, then canceled by the store; then the same by Kuper. In scheme A the store is also
/// refused once the courier has the order.
pub(super) async fn cancel_at_every_stage(ctx: &mut Ctx<'_>, kind: OrderKind) -> Step {
    // Courier webhooks are not stages of the order.
    let ops: Vec<Op> = path(kind, ctx.opts.profile)
        .into_iter()
        .filter(|op| !matches!(op, Op::CourierAssigned | Op::CourierArrived | Op::KuperDelivered))
        .collect();
    let open: Vec<usize> = (0..=ops.len()).filter(|&n| store_may_cancel(kind, &ops[..n])).collect();
    for &stage in &open {
        let order = ctx.create(kind, |_| true).await?;
        steps::walk(ctx, order, &ops[..stage]).await?;
        steps::cancel(ctx, order, "out_of_stock").await?;
        ctx.finish(order, KuperState::Canceled, None);
    }
    if let Some(stage) = (0..=ops.len()).find(|&n| !store_may_cancel(kind, &ops[..n])) {
        if ctx.driven() && kind.scheme == Scheme::A {
            let order = ctx.create(kind, |_| true).await?;
            steps::walk(ctx, order, &ops[..stage]).await?;
            ctx.refused(order, "cancel", json!({"reason": "out_of_stock"}), "after the courier took the order").await;
            ctx.finish(order, KuperState::Shipping, None);
        }
    }
    for &stage in &open {
        let order = ctx.create(kind, |_| true).await?;
        steps::walk(ctx, order, &ops[..stage]).await?;
        ctx.kuper(order, "order.canceled").await;
        ctx.refused(order, "cancel", json!({"reason": "out_of_stock"}), "after Kuper canceled the order").await;
        ctx.finish(order, KuperState::Canceled, None);
    }
    // Nothing may follow a cancellation, whoever made it.
    ctx.quiet().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_may_cancel_until_hand_over() {
        assert!(store_may_cancel(OrderKind::A, &[Op::StartAssembly, Op::Ready, Op::Paid]));
        assert!(!store_may_cancel(OrderKind::A, &[Op::Paid, Op::Received]));
        assert!(store_may_cancel(OrderKind::C, &[Op::Delivering]));
        assert!(!store_may_cancel(OrderKind::B, &[Op::Delivered]));
    }
}

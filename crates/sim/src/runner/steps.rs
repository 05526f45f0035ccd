//! The store's and Kuper's moves, as reusable steps: each scheme's path is a list of [`Op`]s,
//! so the happy paths and "cancel at every stage" walk the very same steps.

use chrono::Duration as TimeDelta;
use serde_json::{json, Value};

use super::ctx::{Ctx, OrderKind, OrderRef, Step};
use crate::config::Profile;
use crate::model::{EventKind, KuperState, PaymentState, Scheme};
use crate::world::now_moscow;

/// One move of the store (through the REST API) or of Kuper (a webhook).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Accept,
    StartAssembly,
    Assembled,
    Ready,
    PickupCode,
    /// The customer shows the code Kuper gave them and the store checks it: the bag goes over
    /// the counter only after that (issue #11).
    VerifyCode,
    EstimatedDeliveryTime,
    Delivering,
    Delivered,
    /// Kuper's webhooks.
    CourierAssigned,
    CourierArrived,
    Paid,
    Received,
    KuperDelivering,
    KuperDelivered,
}

/// The happy path of a kind of order after `order.created` (protocol.md §5).
pub(super) fn path(kind: OrderKind, profile: Profile) -> Vec<Op> {
    use Op::*;
    let mut ops = Vec::new();
    if kind.restaurant {
        ops.push(Accept);
    }
    ops.push(StartAssembly);
    match kind.scheme {
        Scheme::A => ops.extend([
            CourierAssigned,
            CourierArrived,
            Assembled,
            Ready,
            Paid,
            Received,
            KuperDelivering,
            KuperDelivered,
        ]),
        // The brief wants the code after ready_for_delivery, v3 before it.
        Scheme::B => match profile {
            Profile::Brief => ops.extend([Assembled, Ready, PickupCode, Paid, VerifyCode, Delivered]),
            Profile::V3 => ops.extend([Assembled, PickupCode, Ready, Paid, VerifyCode, Delivered]),
        },
        Scheme::C => ops.extend([Assembled, Ready, Paid, EstimatedDeliveryTime, Delivering, Delivered]),
    }
    ops
}

fn moscow_in(minutes: i64) -> String {
    (now_moscow() + TimeDelta::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

pub(super) async fn perform(ctx: &mut Ctx<'_>, order: OrderRef, op: Op) -> Step {
    use EventKind as E;
    match op {
        Op::Accept => {
            let body = json!({"expectedAssemblyTime": moscow_in(25)});
            ctx.act(order, "accept", body, &[E::Accepted]).await.map(drop)
        }
        Op::StartAssembly => ctx.act(order, "start-assembly", json!({}), &[E::InWork]).await.map(drop),
        Op::Assembled => ctx.act(order, "assembled", json!({}), &[E::Assembled]).await.map(drop),
        Op::Ready => ready(ctx, order, None).await,
        Op::PickupCode => {
            let reply = ctx.act(order, "pickup-code", json!({}), &[E::PickupCodeCreated]).await?;
            check_pickup_code(ctx, order, &reply);
            Ok(())
        }
        Op::VerifyCode => ctx.verify_pickup_code(order).await,
        Op::EstimatedDeliveryTime => {
            let body = json!({"at": moscow_in(90)});
            ctx.act(order, "estimated-delivery-time", body, &[E::EstimatedDeliveryTime]).await.map(drop)
        }
        Op::Delivering => ctx.act(order, "delivering", json!({}), &[E::Delivering]).await.map(drop),
        Op::Delivered => ctx.act(order, "delivered", json!({}), &[E::Delivered]).await.map(drop),
        Op::CourierAssigned => kuper(ctx, order, "courier.assigned").await,
        Op::CourierArrived => kuper(ctx, order, "courier.arrived").await,
        Op::Paid => kuper(ctx, order, "order.paid").await,
        Op::Received => kuper(ctx, order, "order.received").await,
        Op::KuperDelivering => kuper(ctx, order, "order.delivering").await,
        Op::KuperDelivered => kuper(ctx, order, "order.delivered").await,
    }
}

async fn kuper(ctx: &mut Ctx<'_>, order: OrderRef, event: &str) -> Step {
    ctx.kuper(order, event).await;
    Ok(())
}

/// `ready` with the collected `positions` (`None`: everything as ordered).
pub(super) async fn ready(ctx: &mut Ctx<'_>, order: OrderRef, positions: Option<Vec<Value>>) -> Step {
    let body = match positions {
        Some(lines) => json!({"positions": lines}),
        None => json!({}),
    };
    ctx.act(order, "ready", body, &[EventKind::ReadyForDelivery]).await.map(drop)
}

/// The code the REST API handed out must be the one Kuper got.
fn check_pickup_code(ctx: &mut Ctx<'_>, order: OrderRef, reply: &Value) {
    let Some(given) = reply.get("pickupCode").and_then(Value::as_str) else {
        return;
    };
    let at_kuper = ctx.snapshot(order).and_then(|s| s.pickup_code);
    if at_kuper.as_deref() != Some(given) {
        let id = ctx.id(order);
        ctx.fail(
            "pickup_code",
            format!("the store was given one pickup code for order {id}, Kuper received another (or none)"),
        );
    }
}

pub(super) async fn walk(ctx: &mut Ctx<'_>, order: OrderRef, ops: &[Op]) -> Step {
    for op in ops {
        perform(ctx, order, *op).await?;
    }
    Ok(())
}

/// The store cancels: `order.canceled` with that reason must reach Kuper.
pub(super) async fn cancel(ctx: &mut Ctx<'_>, order: OrderRef, reason: &str) -> Step {
    let body = json!({"reason": reason, "description": "Товара нет в наличии"});
    ctx.act(order, "cancel", body, &[EventKind::Canceled]).await?;
    if ctx.driven() {
        let payload = ctx.accepted_payload(order, EventKind::Canceled);
        let slug = payload.as_ref().and_then(|p| p["cancellation"]["slug"].as_str().map(str::to_owned));
        if slug.as_deref() != Some(reason) {
            let id = ctx.id(order);
            ctx.fail(
                "cancellation_reason",
                format!("the store canceled order {id} with {reason:?}, Kuper got {slug:?}"),
            );
        }
    }
    Ok(())
}

/// A whole happy path: create, walk, and the final checks (delivered and paid).
pub(super) async fn happy(ctx: &mut Ctx<'_>, kind: OrderKind, ops: &[Op]) -> Step<OrderRef> {
    let order = ctx.create(kind, |_| true).await?;
    walk(ctx, order, ops).await?;
    ctx.finish(order, KuperState::Shipped, Some(PaymentState::Paid));
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_schemes() {
        use Op::*;
        assert_eq!(path(OrderKind::B, Profile::V3)[..3], [StartAssembly, Assembled, PickupCode]);
        assert_eq!(path(OrderKind::B, Profile::Brief)[2..4], [Ready, PickupCode]);
        assert_eq!(path(OrderKind::RESTAURANT, Profile::Brief)[..2], [Accept, StartAssembly]);
        assert_eq!(path(OrderKind::C, Profile::Brief).last(), Some(&Delivered));
        for profile in [Profile::Brief, Profile::V3] {
            assert!(path(OrderKind::B, profile).ends_with(&[VerifyCode, Delivered]), "{profile:?}");
        }
        assert!(path(OrderKind::A, Profile::Brief).iter().all(|op| !matches!(op, Delivered | Delivering)));
    }
}

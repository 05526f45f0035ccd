//! Collected compositions that differ from the order (protocol.md §8). Driven, the runner
//! tells the store exactly what was collected and checks that this is what reached Kuper;
//! against a foreign merchant it checks that the composition changed the way the scenario is
//! about. Either way the simulator's validator recomputes every total.

use std::collections::HashSet;

use rand::seq::IndexedRandom;
use rand::Rng;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::super::ctx::{Ctx, OrderKind, OrderRef, Step};
use super::super::steps::{self, Op};
use crate::generate::GeneratedOrder;
use crate::model::{EventKind, KuperState, OrderPosition, PaymentState};
use crate::money::{decimal_from_json, quantity_json, JsonDecimal};

/// SKUs that replace a missing good: id, price, discounted price. None is in the generator's
/// catalogue, so a replacement never collides with an ordered line.
const REPLACEMENTS: &[(&str, &str, &str)] =
    &[("SKU-100246", "99.90", "94.90"), ("SKU-200019", "69.90", "69.90"), ("SKU-410078", "119.00", "104.00")];

/// Characters a GS1 serial may hold, including the ones JSON and XML must escape.
const SERIAL_CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789!\"%&'*+-./_,:;=<>?";
const BASE64_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// GS1 group separator between the code's fields.
const GS: char = '\u{1d}';

fn marked_ids(payload: &Value) -> HashSet<String> {
    payload["positions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["markingCodeRequired"] == json!(true))
        .filter_map(|p| p["id"].as_str().map(str::to_owned))
        .collect()
}

fn is_piece(position: &OrderPosition) -> bool {
    position.weight_g.is_none() && position.modifiers_per_unit.is_zero()
}

/// A line exactly as ordered, as the REST API takes it.
fn as_ordered(position: &OrderPosition) -> Value {
    let mut line = json!({"id": position.id, "quantity": quantity_json(position.original_quantity)});
    if let Some(grams) = position.weight_g {
        line["weight"] = json!(grams.normalize().to_string());
    }
    line
}

fn decimal(value: Option<&Value>) -> Option<Decimal> {
    match decimal_from_json(value) {
        JsonDecimal::Value(d) => Some(d),
        _ => None,
    }
}

/// The lines of an accepted composition, in either body format.
fn reported(ctx: &Ctx<'_>, order: OrderRef) -> Vec<Value> {
    let payload = ctx.accepted_payload(order, EventKind::ReadyForDelivery).unwrap_or(Value::Null);
    let lines = payload.get("positions").or_else(|| payload.get("order").and_then(|o| o.get("positions")));
    lines.and_then(Value::as_array).cloned().unwrap_or_default()
}

fn line<'v>(lines: &'v [Value], id: &str) -> Option<&'v Value> {
    lines.iter().find(|l| l["id"].as_str() == Some(id))
}

/// Places a scheme A order with the features `want` asks for and assembles it.
async fn assembled_order(ctx: &mut Ctx<'_>, want: impl Fn(&GeneratedOrder) -> bool) -> Step<OrderRef> {
    let order = ctx.create(OrderKind::A, want).await?;
    steps::walk(ctx, order, &[Op::StartAssembly, Op::Assembled]).await?;
    Ok(order)
}

/// Kuper takes the order from here, and the final checks.
async fn hand_over(ctx: &mut Ctx<'_>, order: OrderRef) -> Step {
    steps::walk(ctx, order, &[Op::Paid, Op::Received, Op::KuperDelivering, Op::KuperDelivered]).await?;
    ctx.finish(order, KuperState::Shipped, Some(PaymentState::Paid));
    Ok(())
}

fn ordered_of(ctx: &Ctx<'_>, order: OrderRef) -> (Vec<OrderPosition>, Value) {
    ctx.ordered(order).unwrap_or_default()
}

pub(super) async fn fewer_units(ctx: &mut Ctx<'_>) -> Step {
    let order =
        assembled_order(ctx, |g| g.positions.iter().any(|p| is_piece(p) && p.original_quantity >= Decimal::TWO))
            .await?;
    let (positions, _) = ordered_of(ctx, order);
    let candidates: Vec<&OrderPosition> =
        positions.iter().filter(|p| is_piece(p) && p.original_quantity >= Decimal::TWO).collect();
    let Some(chosen) = candidates.choose(&mut ctx.rng).map(|p| (*p).clone()) else {
        ctx.fail("setup", "no piece good ordered twice");
        return Ok(());
    };
    let fewer = chosen.original_quantity - Decimal::ONE;
    let lines: Vec<Value> = positions
        .iter()
        .map(|p| if p.id == chosen.id { json!({"id": p.id, "quantity": quantity_json(fewer)}) } else { as_ordered(p) })
        .collect();
    steps::ready(ctx, order, Some(lines)).await?;
    let got = reported(ctx, order);
    let id = ctx.id(order);
    if ctx.driven() {
        let quantity = line(&got, &chosen.id).and_then(|l| decimal(l.get("quantity")));
        if quantity != Some(fewer) {
            ctx.fail(
                "composition",
                format!("{} of order {id}: the store collected {fewer}, Kuper got {quantity:?}", chosen.id),
            );
        }
    } else {
        let fewer_somewhere = positions.iter().any(|p| {
            line(&got, &p.id).and_then(|l| decimal(l.get("quantity"))).is_none_or(|q| q < p.original_quantity)
        });
        if !fewer_somewhere {
            ctx.fail("composition", format!("order {id} was reported with every unit collected"));
        }
    }
    hand_over(ctx, order).await
}

pub(super) async fn replacement(ctx: &mut Ctx<'_>) -> Step {
    let replaceable = |g: &GeneratedOrder| {
        let marked = marked_ids(&g.payload);
        g.positions.iter().any(|p| is_piece(p) && !marked.contains(&p.id))
    };
    let order = assembled_order(ctx, replaceable).await?;
    let (positions, payload) = ordered_of(ctx, order);
    let marked = marked_ids(&payload);
    let candidates: Vec<&OrderPosition> = positions.iter().filter(|p| is_piece(p) && !marked.contains(&p.id)).collect();
    let substitute = REPLACEMENTS.iter().find(|(sku, _, _)| positions.iter().all(|p| p.id != *sku));
    let (Some(chosen), Some(&(sku, price, discount))) =
        (candidates.choose(&mut ctx.rng).map(|p| (*p).clone()), substitute)
    else {
        ctx.fail("setup", "no replaceable piece good");
        return Ok(());
    };
    let mut lines: Vec<Value> =
        positions
            .iter()
            .map(|p| {
                if p.id == chosen.id {
                    json!({"id": p.id, "quantity": 0, "replacedByID": sku})
                } else {
                    as_ordered(p)
                }
            })
            .collect();
    let quantity = quantity_json(chosen.original_quantity);
    lines.push(json!({"id": sku, "quantity": quantity, "price": price, "discountPrice": discount}));
    steps::ready(ctx, order, Some(lines)).await?;
    let got = reported(ctx, order);
    let id = ctx.id(order);
    if ctx.driven() {
        let marked_replaced = line(&got, &chosen.id).and_then(|l| l["replacedByID"].as_str()) == Some(sku);
        let substitute_there =
            line(&got, sku).and_then(|l| decimal(l.get("quantity"))) == Some(chosen.original_quantity);
        if !(marked_replaced && substitute_there) {
            ctx.fail(
                "composition",
                format!("order {id}: {} replaced by {sku} did not reach Kuper as such: {}", chosen.id, json!(got)),
            );
        }
    } else {
        let replaced =
            got.iter().any(|l| l["replacedByID"].as_str().is_some_and(|r| !r.is_empty() && line(&got, r).is_some()));
        if !replaced {
            ctx.fail("composition", format!("order {id} was reported without a replacedByID line and its replacement"));
        }
    }
    hand_over(ctx, order).await
}

pub(super) async fn weight_change(ctx: &mut Ctx<'_>) -> Step {
    let order = assembled_order(ctx, |g| g.positions.iter().any(|p| p.weight_g.is_some())).await?;
    let (positions, _) = ordered_of(ctx, order);
    let candidates: Vec<&OrderPosition> = positions.iter().filter(|p| p.weight_g.is_some()).collect();
    let Some(chosen) = candidates.choose(&mut ctx.rng).map(|p| (*p).clone()) else {
        ctx.fail("setup", "no weighed good");
        return Ok(());
    };
    let grams = chosen.weight_g.unwrap_or_default();
    // Scales weigh a little more or less than ordered: ±3–20 %.
    let sign = if ctx.rng.random_bool(0.5) { 1 } else { -1 };
    let percent = Decimal::from(sign * ctx.rng.random_range(3..=20));
    let weighed = (grams * (Decimal::ONE_HUNDRED + percent) / Decimal::ONE_HUNDRED).round().max(Decimal::ONE);
    let lines: Vec<Value> = positions
        .iter()
        .map(|p| {
            if p.id == chosen.id {
                json!({"id": p.id, "quantity": quantity_json(p.original_quantity), "weight": weighed.to_string()})
            } else {
                as_ordered(p)
            }
        })
        .collect();
    steps::ready(ctx, order, Some(lines)).await?;
    let got = reported(ctx, order);
    let id = ctx.id(order);
    if ctx.driven() {
        let weight = line(&got, &chosen.id).and_then(|l| decimal(l.get("weight")));
        if weight != Some(weighed) {
            ctx.fail("composition", format!("{} of order {id}: weighed {weighed} g, Kuper got {weight:?}", chosen.id));
        }
    } else {
        let changed = positions
            .iter()
            .any(|p| p.weight_g.is_some() && line(&got, &p.id).and_then(|l| decimal(l.get("weight"))) != p.weight_g);
        if !changed {
            ctx.fail("composition", format!("order {id} was reported with every weight as ordered"));
        }
    }
    hand_over(ctx, order).await
}

/// A raw Честный знак DataMatrix code: GTIN, serial, then key and signature after GS.
fn marking_code(rng: &mut impl Rng) -> String {
    let pick = |rng: &mut dyn rand::RngCore, chars: &[u8], count: usize| -> String {
        (0..count).filter_map(|_| chars.get(rng.random_range(0..chars.len())).map(|b| char::from(*b))).collect()
    };
    let gtin = pick(rng, b"0123456789", 14);
    // A quote in every serial, so the code always needs JSON escaping on its way.
    let serial = format!("{}\"{}", pick(rng, SERIAL_CHARS, 6), pick(rng, SERIAL_CHARS, 6));
    let key = pick(rng, BASE64_CHARS, 4);
    let signature = pick(rng, BASE64_CHARS, 44);
    format!("01{gtin}21{serial}{GS}91{key}{GS}92{signature}")
}

pub(super) async fn marking_codes(ctx: &mut Ctx<'_>) -> Step {
    let order = assembled_order(ctx, |g| !marked_ids(&g.payload).is_empty()).await?;
    let (positions, payload) = ordered_of(ctx, order);
    let marked = marked_ids(&payload);
    let mut codes: Vec<(String, Vec<String>)> = Vec::new();
    let mut lines = Vec::with_capacity(positions.len());
    for p in &positions {
        let mut line = as_ordered(p);
        if marked.contains(&p.id) {
            let units = usize::try_from(p.original_quantity.normalize().mantissa()).unwrap_or(1);
            let these: Vec<String> = (0..units).map(|_| marking_code(&mut ctx.rng)).collect();
            line["markingCodes"] = json!(these);
            codes.push((p.id.clone(), these));
        }
        lines.push(line);
    }
    steps::ready(ctx, order, Some(lines)).await?;
    let got = reported(ctx, order);
    let id = ctx.id(order);
    for (sku, sent) in &codes {
        let values: Vec<String> = line(&got, sku)
            .and_then(|l| l["markingCode"].as_array())
            .map(|a| a.iter().filter_map(|c| c["value"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let as_expected = if ctx.driven() { values == *sent } else { values.len() == sent.len() };
        if !as_expected {
            ctx.fail(
                "marking_codes",
                format!("{sku} of order {id}: {} code(s) collected, Kuper got {values:?}", sent.len()),
            );
        }
    }
    hand_over(ctx, order).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn marking_codes_look_like_gs1_and_repeat_under_a_seed() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let code = marking_code(&mut rng);
        assert!(code.starts_with("01") && code.contains('"') && code.matches(GS).count() == 2, "{code:?}");
        assert_eq!(code.len(), 2 + 14 + 2 + 13 + 1 + 2 + 4 + 1 + 2 + 44);
        let mut again = rand::rngs::StdRng::seed_from_u64(5);
        assert_eq!(marking_code(&mut again), code);
    }
}

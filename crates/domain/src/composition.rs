//! The final composition of an order and its totals (protocol.md §8).
//!
//! The merchant says what was actually collected; the gateway prices it from the order's own
//! unit prices, so a store system can never send Kuper a total that disagrees with its lines.

use crate::error::DomainError;
use crate::money::{limit, round_kopecks};
use kuper_bridge_wire::notification::{PositionOut, TotalsOut};
use kuper_bridge_wire::PositionIn;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// One collected line as the merchant reports it (`POST …/ready`, `…/delivered`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectedLine {
    pub id: String,
    pub quantity: Decimal,
    /// Grams, line total, for weighed goods.
    pub weight: Option<Decimal>,
    /// This line was replaced by that SKU (which appears as its own line).
    pub replaced_by_id: Option<String>,
    /// One raw code per unit.
    pub marking_codes: Vec<String>,
    /// Only for replacement lines (SKUs not in the order).
    pub price: Option<Decimal>,
    pub discount_price: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Composition {
    pub lines: Vec<PositionOut>,
    pub totals: TotalsOut,
    /// Differs from what was ordered.
    pub changed: bool,
}

impl Composition {
    /// Everything exactly as ordered.
    pub fn as_ordered(ordered: &[PositionIn]) -> Result<Self, DomainError> {
        let collected: Vec<CollectedLine> = ordered
            .iter()
            .map(|p| CollectedLine { id: p.id.clone(), quantity: p.quantity, weight: p.weight, ..Default::default() })
            .collect();
        let mut c = compute(ordered, &[], &collected)?;
        c.changed = false;
        Ok(c)
    }
}

/// Prices `collected` against the order's lines. `known_replacements` are lines priced earlier
/// (the ready composition) whose prices may be reused when handing over.
pub fn compute(
    ordered: &[PositionIn],
    known_replacements: &[PositionOut],
    collected: &[CollectedLine],
) -> Result<Composition, DomainError> {
    if collected.len() > 10_000 {
        return Err(DomainError::invalid("positions", "more than 10000 lines"));
    }
    let by_id: HashMap<&str, &PositionIn> = ordered.iter().map(|p| (p.id.as_str(), p)).collect();
    let replacement_prices: HashMap<&str, &PositionOut> =
        known_replacements.iter().map(|p| (p.id.as_str(), p)).collect();
    let collected_ids: HashSet<&str> = collected.iter().map(|l| l.id.as_str()).collect();
    let named_as_replacement: HashSet<&str> =
        collected.iter().filter_map(|l| l.replaced_by_id.as_deref()).filter(|s| !s.is_empty()).collect();

    let mut seen = HashSet::new();
    let mut lines = Vec::with_capacity(collected.len());
    for (i, line) in collected.iter().enumerate() {
        let field = |name: &str| format!("positions[{i}].{name}");
        let id = line.id.trim();
        if id.is_empty() {
            return Err(DomainError::invalid(field("id"), "must not be empty"));
        }
        if !seen.insert(id) {
            return Err(DomainError::invalid(field("id"), format!("{id} appears twice")));
        }
        check_amount(line.quantity, &field("quantity"))?;
        if let Some(w) = line.weight {
            check_amount(w, &field("weight"))?;
        }
        let replaced_by = line.replaced_by_id.as_deref().map(str::trim).filter(|s| !s.is_empty());
        if let Some(r) = replaced_by {
            if r == id {
                return Err(DomainError::invalid(field("replacedByID"), "a line cannot replace itself"));
            }
            if !collected_ids.contains(r) {
                return Err(DomainError::invalid(
                    field("replacedByID"),
                    format!("{r} must appear as its own line (the replacement that was collected)"),
                ));
            }
        }
        for (k, code) in line.marking_codes.iter().enumerate() {
            if code.trim().is_empty() || code.len() > 512 {
                return Err(DomainError::invalid(
                    format!("positions[{i}].markingCodes[{k}]"),
                    "must be 1..512 characters",
                ));
            }
        }

        let out = if let Some(ordered_line) = by_id.get(id) {
            if line.price.is_some() || line.discount_price.is_some() {
                return Err(DomainError::invalid(
                    field("price"),
                    "prices come from the order; give them only for replacement lines",
                ));
            }
            price_ordered_line(ordered_line, line, &field)?
        } else if let Some(known) = replacement_prices.get(id) {
            let price = line.price.unwrap_or(known.price);
            let discount = line.discount_price.or(if line.price.is_some() { None } else { Some(known.discount_price) });
            check_money(price, &field("price"))?;
            check_money(discount.unwrap_or(price), &field("discountPrice"))?;
            price_replacement(line, price, discount.unwrap_or(price), &field)?
        } else {
            if !named_as_replacement.contains(id) {
                return Err(DomainError::invalid(
                    field("id"),
                    format!("{id} is not in the order and no line names it in replacedByID"),
                ));
            }
            let Some(price) = line.price else {
                return Err(DomainError::invalid(
                    field("price"),
                    format!("replacement line {id} must carry its price"),
                ));
            };
            check_money(price, &field("price"))?;
            let discount = line.discount_price.unwrap_or(price);
            check_money(discount, &field("discountPrice"))?;
            price_replacement(line, price, discount, &field)?
        };
        if !line.marking_codes.is_empty() && Decimal::from(line.marking_codes.len()) != out.quantity {
            return Err(DomainError::invalid(
                field("markingCodes"),
                format!(
                    "{} codes for quantity {}: one code per unit",
                    line.marking_codes.len(),
                    out.quantity.normalize()
                ),
            ));
        }
        if out.quantity.is_zero() && out.replaced_by_id.is_none() {
            // A line not collected at all is simply absent from the final composition.
            continue;
        }
        lines.push(out);
    }
    if lines.is_empty() {
        return Err(DomainError::invalid(
            "positions",
            "nothing collected: cancel the order (reason out_of_stock) instead of sending an empty composition",
        ));
    }
    let totals = totals_of(&lines)?;
    // The listing order of lines is not a change; compare as sorted sets.
    let mut as_ordered_ids: Vec<(&str, Decimal, Option<Decimal>)> =
        ordered.iter().map(|p| (p.id.as_str(), p.quantity.normalize(), p.weight.map(|w| w.normalize()))).collect();
    let mut collected_ids: Vec<(&str, Decimal, Option<Decimal>)> =
        lines.iter().map(|l| (l.id.as_str(), l.quantity.normalize(), l.weight.map(|w| w.normalize()))).collect();
    as_ordered_ids.sort();
    collected_ids.sort();
    let changed = as_ordered_ids != collected_ids || lines.iter().any(|l| l.replaced_by_id.is_some());
    Ok(Composition { lines, totals, changed })
}

pub fn totals_of(lines: &[PositionOut]) -> Result<TotalsOut, DomainError> {
    let sum = |f: fn(&PositionOut) -> Decimal| {
        lines
            .iter()
            .try_fold(Decimal::ZERO, |acc, l| acc.checked_add(f(l)))
            .ok_or_else(|| DomainError::invalid("positions", "total out of range"))
    };
    Ok(TotalsOut {
        total_price: round_kopecks(sum(|l| l.total_price_before_discount)?),
        discount_total_price: round_kopecks(sum(|l| l.total_price)?),
    })
}

fn price_ordered_line(
    ordered: &PositionIn,
    line: &CollectedLine,
    field: &dyn Fn(&str) -> String,
) -> Result<PositionOut, DomainError> {
    let (total, before) = match ordered.weight {
        Some(original_weight) => {
            // Weighed goods: price per unit of the ordered line, scaled by the weight collected.
            let weight = match line.weight {
                Some(w) => w,
                None => {
                    let per_unit = unit_weight(original_weight, ordered.original_quantity);
                    mul(per_unit, line.quantity, &field("weight"))?
                }
            };
            let unit = unit_weight(original_weight, ordered.original_quantity);
            if unit.is_zero() {
                return Err(DomainError::invalid(field("weight"), "the ordered line has no usable weight"));
            }
            let share =
                weight.checked_div(unit).ok_or_else(|| DomainError::invalid(field("weight"), "out of range"))?;
            (
                round_kopecks(mul(ordered.discount_price, share, &field("weight"))?),
                round_kopecks(mul(ordered.price, share, &field("weight"))?),
            )
        }
        None => {
            if line.weight.is_some() {
                return Err(DomainError::invalid(field("weight"), "weight is only for weighed goods"));
            }
            if !line.quantity.fract().is_zero() {
                return Err(DomainError::invalid(field("quantity"), "piece goods are counted in whole units"));
            }
            if line.quantity > ordered.quantity.max(ordered.original_quantity) {
                return Err(DomainError::invalid(
                    field("quantity"),
                    format!("{} collected but {} ordered", line.quantity.normalize(), ordered.quantity.normalize()),
                ));
            }
            (
                round_kopecks(mul(ordered.discount_price, line.quantity, &field("quantity"))?),
                round_kopecks(mul(ordered.price, line.quantity, &field("quantity"))?),
            )
        }
    };
    let weight = ordered.weight.map(|original| {
        line.weight.unwrap_or_else(|| unit_weight(original, ordered.original_quantity) * line.quantity)
    });
    Ok(PositionOut {
        id: ordered.id.clone(),
        quantity: line.quantity,
        weight,
        price: ordered.price,
        discount_price: ordered.discount_price,
        total_price: total,
        total_price_before_discount: before,
        replaced_by_id: line.replaced_by_id.clone().filter(|s| !s.trim().is_empty()),
        marking_codes: line.marking_codes.clone(),
    })
}

/// Replacement lines are priced per unit of quantity (a weighed replacement is reported as
/// quantity 1 at the price of the weighed amount); see docs/decisions.md.
fn price_replacement(
    line: &CollectedLine,
    price: Decimal,
    discount_price: Decimal,
    field: &dyn Fn(&str) -> String,
) -> Result<PositionOut, DomainError> {
    if discount_price > price {
        return Err(DomainError::invalid(field("discountPrice"), "must not exceed price"));
    }
    Ok(PositionOut {
        id: line.id.trim().to_string(),
        quantity: line.quantity,
        weight: line.weight,
        price,
        discount_price,
        total_price: round_kopecks(mul(discount_price, line.quantity, &field("quantity"))?),
        total_price_before_discount: round_kopecks(mul(price, line.quantity, &field("quantity"))?),
        replaced_by_id: line.replaced_by_id.clone().filter(|s| !s.trim().is_empty()),
        marking_codes: line.marking_codes.clone(),
    })
}

fn unit_weight(original_weight: Decimal, original_quantity: Decimal) -> Decimal {
    if original_quantity.is_zero() {
        original_weight
    } else {
        original_weight.checked_div(original_quantity).unwrap_or(Decimal::ZERO)
    }
}

fn mul(a: Decimal, b: Decimal, field: &str) -> Result<Decimal, DomainError> {
    a.checked_mul(b).ok_or_else(|| DomainError::invalid(field, "out of range"))
}

/// A price: an amount in roubles with at most two places (kopecks).
fn check_money(v: Decimal, field: &str) -> Result<(), DomainError> {
    check_amount(v, field)?;
    if v.normalize().scale() > 2 {
        return Err(DomainError::invalid(field, "at most two decimal places (kopecks)"));
    }
    Ok(())
}

fn check_amount(v: Decimal, field: &str) -> Result<(), DomainError> {
    if v.is_sign_negative() && !v.is_zero() {
        return Err(DomainError::invalid(field, "must not be negative"));
    }
    if v > limit() {
        return Err(DomainError::invalid(field, "too large"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuper_bridge_wire::WebhookEnvelope;

    fn ordered() -> Vec<PositionIn> {
        let body = include_str!("../../../fixtures/webhooks/order.created.kuper-delivery.json");
        WebhookEnvelope::parse(body.as_bytes()).unwrap().order().unwrap().positions
    }

    fn line(id: &str, q: i64) -> CollectedLine {
        CollectedLine { id: id.into(), quantity: Decimal::from(q), ..Default::default() }
    }

    #[test]
    fn as_ordered_matches_kuper_totals() {
        let c = Composition::as_ordered(&ordered()).unwrap();
        assert_eq!(c.totals.total_price.to_string(), "496.98");
        assert_eq!(c.totals.discount_total_price.to_string(), "478.98");
        assert!(!c.changed);
    }

    #[test]
    fn brief_fixture_weighed_line() {
        // The fixture's ready notification: 1 × SKU-100245 and 1135 g of apples.
        let mut apples = line("SKU-550071", 1);
        apples.weight = Some(Decimal::from(1135));
        let c = compute(&ordered(), &[], &[line("SKU-100245", 1), apples]).unwrap();
        assert_eq!(c.lines[1].total_price.to_string(), "214.52");
        assert_eq!(c.totals.total_price.to_string(), "309.51");
        assert_eq!(c.totals.discount_total_price.to_string(), "304.51");
        assert!(c.changed);
    }

    #[test]
    fn replacement_needs_price_and_reference() {
        let mut replaced = line("SKU-100245", 0);
        replaced.replaced_by_id = Some("SKU-NEW".into());
        let mut new = line("SKU-NEW", 2);
        assert!(compute(&ordered(), &[], &[replaced.clone(), new.clone()]).is_err(), "no price");
        new.price = Some(Decimal::new(9999, 2));
        let c = compute(&ordered(), &[], &[replaced, new.clone()]).unwrap();
        assert_eq!(c.totals.discount_total_price.to_string(), "199.98");
        assert_eq!(c.lines.len(), 2, "the replaced line stays to carry replacedByID");
        let err = compute(&ordered(), &[], &[new]).unwrap_err();
        assert!(err.to_string().contains("not in the order"), "{err}");
    }

    #[test]
    fn refusals() {
        let o = ordered();
        let cases: Vec<(Vec<CollectedLine>, &str)> = vec![
            (vec![line("SKU-100245", 3)], "ordered"),
            (vec![line("SKU-100245", 1), line("SKU-100245", 1)], "twice"),
            (vec![CollectedLine { quantity: Decimal::new(15, 1), ..line("SKU-100245", 0) }], "whole units"),
            (vec![CollectedLine { weight: Some(Decimal::ONE), ..line("SKU-100245", 1) }], "weighed"),
            (vec![CollectedLine { price: Some(Decimal::ONE), ..line("SKU-100245", 1) }], "prices come from the order"),
            (vec![CollectedLine { marking_codes: vec!["a".into()], ..line("SKU-770300", 2) }], "one code per unit"),
            (vec![line("SKU-100245", 0)], "nothing collected"),
            (vec![CollectedLine { quantity: Decimal::from(-1), ..line("SKU-100245", 0) }], "negative"),
        ];
        for (lines, needle) in cases {
            let err = compute(&o, &[], &lines).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }

    #[test]
    fn marking_codes_one_per_unit() {
        let l = CollectedLine { marking_codes: vec!["010460\u{1d}93a".into(), "b".into()], ..line("SKU-770300", 2) };
        let c = compute(&ordered(), &[], &[l]).unwrap();
        assert_eq!(c.lines[0].marking_codes.len(), 2);
    }

    proptest::proptest! {
        /// protocol.md §8: grand totals are the sums of the rounded lines, for any collection.
        #[test]
        fn totals_equal_sum_of_lines(q0 in 0i64..=2, grams in 1i64..5000, q2 in 0i64..=2) {
            let mut apples = line("SKU-550071", 1);
            apples.weight = Some(Decimal::from(grams));
            let collected = vec![line("SKU-100245", q0), apples, line("SKU-770300", q2)];
            let c = compute(&ordered(), &[], &collected).unwrap();
            let sum_after: Decimal = c.lines.iter().map(|l| l.total_price).sum();
            let sum_before: Decimal = c.lines.iter().map(|l| l.total_price_before_discount).sum();
            proptest::prop_assert_eq!(c.totals.discount_total_price, sum_after);
            proptest::prop_assert_eq!(c.totals.total_price, sum_before);
            for l in &c.lines {
                proptest::prop_assert_eq!(l.total_price.scale(), 2);
                proptest::prop_assert!(l.total_price <= l.total_price_before_discount);
            }
        }

        /// Random prices and quantities: each line is exactly round_half_up(price × qty).
        #[test]
        fn piece_line_is_rounded_product(cents in 0i64..10_000_000, qty in 0i64..50) {
            let price = Decimal::new(cents, 2);
            let o = vec![PositionIn {
                id: "X".into(), name: None, original_quantity: Decimal::from(qty.max(1)), quantity: Decimal::from(qty.max(1)),
                price, discount_price: price, weight: None, modifiers: vec![],
            }];
            match compute(&o, &[], &[line("X", qty)]) {
                Ok(c) => proptest::prop_assert_eq!(c.totals.discount_total_price, round_kopecks(price * Decimal::from(qty))),
                Err(e) => proptest::prop_assert!(qty == 0, "{}", e),
            }
        }
    }
}

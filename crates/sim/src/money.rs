//! Money and quantities: decimal arithmetic only, rounded half-up to kopecks (protocol.md §8).

use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;

/// Rounds half-up (away from zero) to kopecks and keeps exactly two places, so that the
/// string form is always `"189.00"`, never `"189"`.
pub fn round_kopecks(value: Decimal) -> Decimal {
    let mut rounded = value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(2);
    rounded
}

pub fn format_money(value: Decimal) -> String {
    round_kopecks(value).to_string()
}

/// Parses a decimal written as a string (`"94.99"`, `" 1135 "`). Empty strings are `None`.
pub fn parse_decimal_str(text: &str) -> Option<Decimal> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Decimal::from_str_exact(text).or_else(|_| Decimal::from_str(text)).or_else(|_| Decimal::from_scientific(text)).ok()
}

/// What a JSON value holds when a decimal is expected.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonDecimal {
    Absent,
    Empty,
    Value(Decimal),
    Invalid,
}

/// Reads a number or a numeric string; quantities and weights come in both forms.
pub fn decimal_from_json(value: Option<&Value>) -> JsonDecimal {
    match value {
        None | Some(Value::Null) => JsonDecimal::Absent,
        Some(Value::String(text)) if text.trim().is_empty() => JsonDecimal::Empty,
        Some(Value::String(text)) => match parse_decimal_str(text) {
            Some(d) => JsonDecimal::Value(d),
            None => JsonDecimal::Invalid,
        },
        Some(Value::Number(number)) => match parse_decimal_str(&number.to_string()) {
            Some(d) => JsonDecimal::Value(d),
            None => JsonDecimal::Invalid,
        },
        Some(_) => JsonDecimal::Invalid,
    }
}

/// Money must be a decimal string (protocol.md §3); a JSON number is a schema error.
pub fn money_from_json(value: Option<&Value>) -> JsonDecimal {
    match value {
        None | Some(Value::Null) => JsonDecimal::Absent,
        Some(Value::String(_)) => decimal_from_json(value),
        Some(_) => JsonDecimal::Invalid,
    }
}

/// A quantity as JSON: an integer when whole (as in Kuper's examples), else a number.
pub fn quantity_json(value: Decimal) -> Value {
    let normalized = value.normalize();
    if normalized.scale() == 0 {
        if let Ok(whole) = i64::try_from(normalized.mantissa()) {
            return Value::from(whole);
        }
    }
    serde_json::from_str::<Value>(&normalized.to_string()).unwrap_or(Value::String(normalized.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_up_to_kopecks() {
        let d = |s: &str| parse_decimal_str(s).unwrap_or_default();
        assert_eq!(format_money(d("214.515")), "214.52");
        assert_eq!(format_money(d("214.514")), "214.51");
        assert_eq!(format_money(d("189")), "189.00");
        assert_eq!(format_money(d("0.005")), "0.01");
    }

    #[test]
    fn reads_decimals_from_json() {
        assert_eq!(decimal_from_json(Some(&serde_json::json!(1.5))), JsonDecimal::Value(Decimal::new(15, 1)));
        assert_eq!(decimal_from_json(Some(&serde_json::json!("1135"))), JsonDecimal::Value(Decimal::new(1135, 0)));
        assert_eq!(decimal_from_json(Some(&serde_json::json!(""))), JsonDecimal::Empty);
        assert_eq!(decimal_from_json(Some(&serde_json::json!("x"))), JsonDecimal::Invalid);
        assert_eq!(money_from_json(Some(&serde_json::json!(1))), JsonDecimal::Invalid);
    }

    #[test]
    fn quantities_are_integers_when_whole() {
        assert_eq!(quantity_json(Decimal::new(200, 2)), serde_json::json!(2));
        assert_eq!(quantity_json(Decimal::new(15, 1)), serde_json::json!(1.5));
    }
}

//! Lenient decimal reading: Kuper sends money as strings ("94.99") and quantities as numbers,
//! but public integrations show both shapes for both. Floats never touch money: a JSON number
//! is re-read from its textual form.

use rust_decimal::Decimal;
use serde_json::Value;
use std::str::FromStr;

/// Reads a decimal from a JSON string or number. `None` for null / empty string.
pub fn read_decimal(value: &Value) -> Result<Option<Decimal>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => parse_decimal_str(s.trim()).map(Some),
        Value::Number(n) => parse_decimal_str(&n.to_string()).map(Some),
        other => Err(format!("expected a decimal (string or number), got {}", kind_of(other))),
    }
}

fn parse_decimal_str(s: &str) -> Result<Decimal, String> {
    let parsed = if s.contains(['e', 'E']) { Decimal::from_scientific(s) } else { Decimal::from_str(s) };
    parsed.map_err(|_| format!("expected a decimal, got {s:?}"))
}

/// Renders a money amount with exactly two places, the way Kuper expects ("189.00").
pub fn money_string(amount: Decimal) -> String {
    let mut rounded = amount.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(2);
    rounded.to_string()
}

/// Renders a quantity as a JSON number without going through a float for whole numbers.
pub fn quantity_value(quantity: Decimal) -> Value {
    let normalized = quantity.normalize();
    if normalized.fract().is_zero() {
        if let Ok(whole) = i64::try_from(normalized) {
            return Value::from(whole);
        }
    }
    // A fractional quantity (rare: Kuper reports weighed goods by `weight`) is not money;
    // JSON has no decimal type, so the number is emitted from its exact textual form.
    serde_json::from_str::<Value>(&normalized.to_string()).unwrap_or(Value::String(normalized.to_string()))
}

pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_strings_and_numbers_exactly() {
        assert_eq!(read_decimal(&json!("94.99")).unwrap(), Some(Decimal::new(9499, 2)));
        assert_eq!(read_decimal(&json!(2)).unwrap(), Some(Decimal::from(2)));
        assert_eq!(read_decimal(&json!(0.1)).unwrap(), Some(Decimal::new(1, 1)));
        assert_eq!(read_decimal(&json!("")).unwrap(), None);
        assert_eq!(read_decimal(&Value::Null).unwrap(), None);
        assert!(read_decimal(&json!("abc")).is_err());
        assert!(read_decimal(&json!([1])).is_err());
    }

    #[test]
    fn money_has_two_places_and_rounds_half_up() {
        assert_eq!(money_string(Decimal::new(214515, 3)), "214.52");
        assert_eq!(money_string(Decimal::from(189)), "189.00");
        assert_eq!(money_string(Decimal::new(-5, 3)), "-0.01");
    }

    #[test]
    fn quantities_are_numbers() {
        assert_eq!(quantity_value(Decimal::new(200, 2)), json!(2));
        assert_eq!(quantity_value(Decimal::new(15, 1)), json!(1.5));
    }
}

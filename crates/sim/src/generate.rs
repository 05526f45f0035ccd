//! Realistic orders from a seeded generator: the same seed and the same requests give the same
//! orders, so a failing end-to-end run can be replayed.

use chrono::{DateTime, Duration, FixedOffset, Timelike};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use crate::model::{Integration, OrderPosition, Scheme};
use crate::money::{decimal_from_json, format_money, money_from_json, quantity_json, JsonDecimal};

/// What the control API asked for.
#[derive(Clone, Debug)]
pub struct OrderParams {
    pub store: String,
    pub shipment_method: String,
    pub restaurant: bool,
    pub integration: Integration,
    /// Positions given by the caller instead of generated ones.
    pub positions: Option<Vec<Value>>,
}

impl Default for OrderParams {
    fn default() -> Self {
        Self {
            store: "1184".to_owned(),
            shipment_method: "by_courier".to_owned(),
            restaurant: false,
            integration: Integration::DeliveryByKuper,
            positions: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct GeneratedOrder {
    pub original_order_id: String,
    pub order_uuid: String,
    pub scheme: Scheme,
    /// The `payload` of `order.created`.
    pub payload: Value,
    pub positions: Vec<OrderPosition>,
    pub total_price: Decimal,
    pub discount_total_price: Decimal,
}

impl GeneratedOrder {
    /// Gives the order new Kuper ids drawn from `ids`, leaving its content as it was. The
    /// conformance runner draws contents from `--seed` (reproducible) and ids from a source
    /// that differs every run, so a second run against the same merchant never repeats an
    /// order the merchant already holds.
    pub fn renumber(&mut self, ids: &mut StdRng) {
        self.original_order_id = format!("H{}", digits(ids, 11));
        self.order_uuid = format!("sim:{}", uuid_from(ids));
        if let Some(payload) = self.payload.as_object_mut() {
            payload.insert("originalOrderId".into(), json!(self.original_order_id));
            payload.insert("orderUUID".into(), json!(self.order_uuid));
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GenerateError {
    #[error("positions[{index}]: {message}")]
    Position { index: usize, message: String },
    #[error("positions must not be empty")]
    NoPositions,
}

/// A piece good: id, name, price in kopecks, whether it carries a marking code.
struct Piece(&'static str, &'static str, i64, bool);
/// A weighed good: id, name, price per unit in kopecks, grams per unit.
struct Weighed(&'static str, &'static str, i64, i64);
/// A dish: id, name, price in kopecks.
struct Dish(&'static str, &'static str, i64);
/// A modifier: id, name, price in kopecks, group id, group name.
struct Modifier(&'static str, &'static str, i64, &'static str, &'static str);

const PIECES: &[Piece] = &[
    Piece("SKU-100245", "Молоко 3,2% 930 мл", 9499, false),
    Piece("SKU-100311", "Кефир 1% 900 г", 8999, false),
    Piece("SKU-200017", "Хлеб Бородинский 400 г", 6490, false),
    Piece("SKU-200452", "Батон нарезной 350 г", 5290, false),
    Piece("SKU-310008", "Яйца куриные С1, 10 шт", 12990, false),
    Piece("SKU-330120", "Сыр Российский 200 г", 23900, false),
    Piece("SKU-410077", "Гречка ядрица 900 г", 10990, false),
    Piece("SKU-420310", "Макароны спагетти 450 г", 8990, false),
    Piece("SKU-510002", "Масло сливочное 82,5% 180 г", 21990, false),
    Piece("SKU-620045", "Чай чёрный, 100 пакетиков", 27900, false),
    Piece("SKU-770300", "Вода минеральная 0,5 л (маркируемый товар)", 5900, true),
    Piece("SKU-770415", "Творог 5% 300 г (маркируемый товар)", 15990, true),
    Piece("SKU-770521", "Сок яблочный 1 л (маркируемый товар)", 13490, true),
];

const WEIGHED: &[Weighed] = &[
    Weighed("SKU-550071", "Яблоки Гала, кг", 18900, 1000),
    Weighed("SKU-550102", "Бананы, кг", 13990, 1000),
    Weighed("SKU-550230", "Помидоры черри, 250 г", 14990, 250),
    Weighed("SKU-560014", "Картофель молодой, кг", 6990, 1000),
    Weighed("SKU-570088", "Филе куриное охлаждённое, 500 г", 27990, 500),
    Weighed("SKU-580311", "Сыр Гауда весовой, 300 г", 29990, 300),
];

const DISHES: &[Dish] = &[
    Dish("PIZZA-MARG-30", "Маргарита 30 см", 59000),
    Dish("PIZZA-PEPP-30", "Пепперони 30 см", 69000),
    Dish("ROLL-PHIL-8", "Филадельфия, 8 шт", 64900),
    Dish("BOWL-POKE-TUNA", "Поке с тунцом", 54900),
    Dish("SOUP-TOMYUM", "Том ям", 47900),
    Dish("DRINK-MORS-05", "Морс клюквенный 0,5 л", 19000),
];

const MODIFIERS: &[Modifier] = &[
    Modifier("MOD-CHEESE", "Двойной сыр", 5000, "G-EXTRA", "Добавки"),
    Modifier("MOD-JALAPENO", "Халапеньо", 4000, "G-EXTRA", "Добавки"),
    Modifier("MOD-NO-ONION", "Без лука", 0, "G-WITHOUT", "Убрать"),
    Modifier("MOD-SAUCE-GARLIC", "Соус чесночный", 6000, "G-SAUCE", "Соусы"),
];

const NAMES: &[&str] =
    &["Мария Соколова", "Иван Петров", "Анна Кузнецова", "Дмитрий Смирнов", "Екатерина Волкова", "Олег"];

const STREETS: &[(&str, &str, f64, f64)] = &[
    ("Профсоюзная улица", "Москва", 55.6702, 37.5529),
    ("Тверская улица", "Москва", 55.7643, 37.6057),
    ("Ленинский проспект", "Москва", 55.7075, 37.5856),
    ("улица Бутлерова", "Москва", 55.6486, 37.5280),
    ("Невский проспект", "Санкт-Петербург", 59.9343, 30.3351),
];

const COMMENTS: &[Option<&str>] =
    &[None, Some("Позвонить за 10 минут"), Some("Не звонить в домофон, ребёнок спит"), Some("Оставить у двери")];

const REPLACEMENT_POLICIES: &[&str] = &["call_or_replace", "call_or_cancel", "replace", "cancel"];

fn kopecks(value: i64) -> Decimal {
    Decimal::new(value, 2)
}

fn digits(rng: &mut StdRng, count: usize) -> String {
    (0..count).map(|_| char::from(b'0' + rng.random_range(0..10u8))).collect()
}

fn uuid_from(rng: &mut StdRng) -> uuid::Uuid {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn rfc3339(time: DateTime<FixedOffset>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// A discount of 5–25 %, on about a third of the goods.
fn maybe_discount(rng: &mut StdRng, price: i64) -> i64 {
    if rng.random_bool(0.35) {
        let percent = rng.random_range(5..=25);
        price - price * percent / 100
    } else {
        price
    }
}

struct Built {
    json: Value,
    position: OrderPosition,
    total: Decimal,
    discount_total: Decimal,
}

fn piece_line(rng: &mut StdRng, good: &Piece) -> Built {
    let quantity = Decimal::from(rng.random_range(1..=3));
    let price = kopecks(good.2);
    let discount = kopecks(maybe_discount(rng, good.2));
    let total = price * quantity;
    let discount_total = discount * quantity;
    let mut json = json!({
        "id": good.0,
        "name": good.1,
        "originalQuantity": quantity_json(quantity),
        "quantity": quantity_json(quantity),
        "price": format_money(price),
        "discountPrice": format_money(discount),
        "totalPrice": format_money(total),
        "totalDiscountPrice": format_money(discount_total),
        "weight": "",
        "replacedByID": "",
    });
    if good.3 {
        if let Some(map) = json.as_object_mut() {
            map.insert("markingCodeRequired".to_owned(), Value::Bool(true));
        }
    }
    Built {
        json,
        position: OrderPosition {
            id: good.0.to_owned(),
            price,
            discount_price: discount,
            original_quantity: quantity,
            weight_g: None,
            modifiers_per_unit: Decimal::ZERO,
        },
        total,
        discount_total,
    }
}

fn weighed_line(rng: &mut StdRng, good: &Weighed) -> Built {
    // Kilogram goods are sometimes ordered by the half kilogram.
    let quantity = if good.3 == 1000 && rng.random_bool(0.3) {
        Decimal::new(rng.random_range(1..=2) * 10 + 5, 1)
    } else {
        Decimal::from(rng.random_range(1..=2))
    };
    let grams = quantity * Decimal::from(good.3);
    let price = kopecks(good.2);
    let discount = kopecks(maybe_discount(rng, good.2));
    let total = crate::money::round_kopecks(price * quantity);
    let discount_total = crate::money::round_kopecks(discount * quantity);
    Built {
        json: json!({
            "id": good.0,
            "name": good.1,
            "originalQuantity": quantity_json(quantity),
            "quantity": quantity_json(quantity),
            "price": format_money(price),
            "discountPrice": format_money(discount),
            "totalPrice": format_money(total),
            "totalDiscountPrice": format_money(discount_total),
            "weight": grams.normalize().to_string(),
            "replacedByID": "",
        }),
        position: OrderPosition {
            id: good.0.to_owned(),
            price,
            discount_price: discount,
            original_quantity: quantity,
            weight_g: Some(grams),
            modifiers_per_unit: Decimal::ZERO,
        },
        total,
        discount_total,
    }
}

/// Dish lines count their modifiers in `totalPrice`, as Kuper's restaurant example does.
fn dish_line(rng: &mut StdRng, dish: &Dish) -> Built {
    let quantity = Decimal::from(rng.random_range(1..=2));
    let price = kopecks(dish.2);
    let count = rng.random_range(0..=2);
    let chosen: Vec<&Modifier> = MODIFIERS.choose_multiple(rng, count).collect();
    let per_unit: Decimal = chosen.iter().map(|m| kopecks(m.2)).sum();
    let modifiers: Vec<Value> = chosen
        .iter()
        .map(|m| {
            json!({
                "id": m.0,
                "name": m.1,
                "price": format_money(kopecks(m.2)),
                "groupId": m.3,
                "groupName": m.4,
                "quantity": 1,
                "default": false,
            })
        })
        .collect();
    let total = (price + per_unit) * quantity;
    Built {
        json: json!({
            "id": dish.0,
            "name": dish.1,
            "originalQuantity": quantity_json(quantity),
            "quantity": quantity_json(quantity),
            "price": format_money(price),
            "discountPrice": format_money(price),
            "totalPrice": format_money(total),
            "totalDiscountPrice": format_money(total),
            "weight": "",
            "isCombo": false,
            "modifiers": modifiers,
        }),
        position: OrderPosition {
            id: dish.0.to_owned(),
            price,
            discount_price: price,
            original_quantity: quantity,
            weight_g: None,
            modifiers_per_unit: per_unit,
        },
        total,
        discount_total: total,
    }
}

fn generated_lines(rng: &mut StdRng, restaurant: bool) -> Vec<Built> {
    let count = rng.random_range(1..=5usize);
    if restaurant {
        let dishes: Vec<&Dish> = DISHES.choose_multiple(rng, count).collect();
        return dishes.into_iter().map(|d| dish_line(rng, d)).collect();
    }
    // At least one weighed good when there are two lines or more; a marked good sometimes.
    let weighed_count = if count >= 2 { rng.random_range(1..=count.min(WEIGHED.len()) - 1).max(1) } else { 0 };
    let mut lines = Vec::with_capacity(count);
    let weighed: Vec<&Weighed> = WEIGHED.choose_multiple(rng, weighed_count).collect();
    let pieces: Vec<&Piece> = PIECES.choose_multiple(rng, count - weighed_count).collect();
    for good in pieces {
        lines.push(piece_line(rng, good));
    }
    for good in weighed {
        lines.push(weighed_line(rng, good));
    }
    lines.shuffle(rng);
    lines
}

/// Completes a caller's position: prices are required, everything else gets a default, and the
/// line totals are computed the way Kuper would.
fn given_line(index: usize, value: &Value) -> Result<Built, GenerateError> {
    let fail = |message: &str| GenerateError::Position { index, message: message.to_owned() };
    let Value::Object(map) = value else {
        return Err(fail("must be an object"));
    };
    let id = match map.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(fail("id is required")),
    };
    let price = match money_from_json(map.get("price")) {
        JsonDecimal::Value(p) => p,
        _ => return Err(fail("price is required as a decimal string")),
    };
    let discount = match money_from_json(map.get("discountPrice")) {
        JsonDecimal::Value(p) => p,
        JsonDecimal::Absent | JsonDecimal::Empty => price,
        JsonDecimal::Invalid => return Err(fail("discountPrice must be a decimal string")),
    };
    let quantity = match decimal_from_json(map.get("quantity")) {
        JsonDecimal::Value(q) => q,
        JsonDecimal::Absent | JsonDecimal::Empty => Decimal::ONE,
        JsonDecimal::Invalid => return Err(fail("quantity must be a decimal")),
    };
    let original_quantity = match decimal_from_json(map.get("originalQuantity")) {
        JsonDecimal::Value(q) => q,
        JsonDecimal::Absent | JsonDecimal::Empty => quantity,
        JsonDecimal::Invalid => return Err(fail("originalQuantity must be a decimal")),
    };
    let weight = match decimal_from_json(map.get("weight")) {
        JsonDecimal::Value(w) if !w.is_zero() => Some(w),
        JsonDecimal::Invalid => return Err(fail("weight must be grams as a string")),
        _ => None,
    };
    let mut per_unit = Decimal::ZERO;
    if let Some(Value::Array(modifiers)) = map.get("modifiers") {
        for modifier in modifiers {
            let price = match money_from_json(modifier.get("price")) {
                JsonDecimal::Value(p) => p,
                JsonDecimal::Absent | JsonDecimal::Empty => Decimal::ZERO,
                JsonDecimal::Invalid => return Err(fail("modifier price must be a decimal string")),
            };
            let count = match decimal_from_json(modifier.get("quantity")) {
                JsonDecimal::Value(q) => q,
                _ => Decimal::ONE,
            };
            per_unit += price * count;
        }
    }
    let total = crate::money::round_kopecks((price + per_unit) * quantity);
    let discount_total = crate::money::round_kopecks((discount + per_unit) * quantity);
    let mut json = map.clone();
    let mut set_default = |key: &str, value: Value| {
        json.entry(key.to_owned()).or_insert(value);
    };
    set_default("name", Value::String(format!("Товар {id}")));
    set_default("quantity", quantity_json(quantity));
    set_default("originalQuantity", quantity_json(original_quantity));
    set_default("discountPrice", Value::String(format_money(discount)));
    set_default("weight", Value::String(String::new()));
    set_default("replacedByID", Value::String(String::new()));
    json.insert("totalPrice".to_owned(), Value::String(format_money(total)));
    json.insert("totalDiscountPrice".to_owned(), Value::String(format_money(discount_total)));
    Ok(Built {
        json: Value::Object(json),
        position: OrderPosition {
            id,
            price,
            discount_price: discount,
            original_quantity,
            weight_g: weight,
            modifiers_per_unit: per_unit,
        },
        total,
        discount_total,
    })
}

/// Generates one order. `now` is the moment of `order.created`; all times in the order are
/// derived from it, so with a fixed `now` the whole payload is reproducible.
pub fn generate(
    rng: &mut StdRng,
    params: &OrderParams,
    now: DateTime<FixedOffset>,
) -> Result<GeneratedOrder, GenerateError> {
    let original_order_id = format!("H{}", digits(rng, 11));
    let order_uuid = format!("sim:{}", uuid_from(rng));
    let scheme = Scheme::decide(&params.shipment_method, params.integration);

    let lines = match &params.positions {
        Some(given) if given.is_empty() => return Err(GenerateError::NoPositions),
        Some(given) => {
            given.iter().enumerate().map(|(index, value)| given_line(index, value)).collect::<Result<Vec<_>, _>>()?
        }
        None => generated_lines(rng, params.restaurant),
    };
    let total_price: Decimal = lines.iter().map(|l| l.total).sum();
    let discount_total_price: Decimal = lines.iter().map(|l| l.discount_total).sum();

    let name = NAMES.choose(rng).copied().unwrap_or("Клиент");
    let phone = format!("+79{}", digits(rng, 9));
    // Slots start on the hour, two to four hours from now.
    let slot_start = (now + Duration::hours(rng.random_range(2..=4)))
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now);
    let pickup = params.shipment_method == "pickup";
    let payment = if pickup && rng.random_bool(0.5) { "cash_desk" } else { "card" };

    let mut payload = Map::new();
    payload.insert("originalOrderId".into(), json!(original_order_id));
    payload.insert("orderUUID".into(), json!(order_uuid));
    payload.insert("storeID".into(), json!(params.store));
    payload.insert("comment".into(), json!(COMMENTS.choose(rng).copied().flatten()));
    payload.insert("clientType".into(), json!("b2c"));
    payload.insert("customer".into(), json!({"name": name, "phone": phone}));
    if !pickup {
        let (street, city, lat, lon) = STREETS.choose(rng).copied().unwrap_or(STREETS[0]);
        let building = rng.random_range(1..=120).to_string();
        let apartment = rng.random_range(1..=300).to_string();
        let lat = lat + f64::from(rng.random_range(-200..=200)) / 10_000.0;
        let lon = lon + f64::from(rng.random_range(-200..=200)) / 10_000.0;
        payload.insert(
            "address".into(),
            json!({
                "full_address": format!("{city}, {street}, {building}, кв. {apartment}"),
                "city": city,
                "street": street,
                "building": building,
                "apartment": apartment,
                "entrance": rng.random_range(1..=8).to_string(),
                "floor": rng.random_range(1..=17).to_string(),
                "elevator": "passenger",
                "door_phone": format!("{apartment}К"),
                "lat": format!("{lat:.4}"),
                "lon": format!("{lon:.4}"),
                "delivery_to_door": true,
            }),
        );
    }
    payload.insert(
        "delivery".into(),
        json!({
            "expectedFrom": rfc3339(slot_start),
            "expectedTo": rfc3339(slot_start + Duration::hours(1)),
            "isPlanned": rng.random_bool(0.5),
        }),
    );
    payload.insert("paymentMethods".into(), json!([payment]));
    payload.insert("shipmentMethod".into(), json!(params.shipment_method));
    payload.insert(
        "replacementPolicy".into(),
        json!(REPLACEMENT_POLICIES.choose(rng).copied().unwrap_or("call_or_replace")),
    );
    if params.restaurant {
        payload.insert("terminalGroupId".into(), json!(uuid_from(rng).to_string()));
        payload.insert("completeBefore".into(), json!(rfc3339(now + Duration::minutes(40))));
        payload.insert("extensions".into(), json!({"cutlery_quantity": rng.random_range(0..=4)}));
    }
    payload.insert("positions".into(), Value::Array(lines.iter().map(|l| l.json.clone()).collect()));
    payload.insert(
        "total".into(),
        json!({
            "totalPrice": format_money(total_price),
            "discountTotalPrice": format_money(discount_total_price),
        }),
    );

    Ok(GeneratedOrder {
        original_order_id,
        order_uuid,
        scheme,
        payload: Value::Object(payload),
        positions: lines.into_iter().map(|l| l.position).collect(),
        total_price,
        discount_total_price,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn now() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-03-14T10:02:11+03:00").unwrap_or_default()
    }

    fn generate_many(seed: u64, params: &OrderParams) -> Vec<Value> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..20).filter_map(|_| generate(&mut rng, params, now()).ok()).map(|o| o.payload).collect()
    }

    #[test]
    fn same_seed_same_orders() {
        let params = OrderParams::default();
        assert_eq!(generate_many(7, &params), generate_many(7, &params));
        assert_ne!(generate_many(7, &params), generate_many(8, &params));
    }

    #[test]
    fn renumbering_changes_the_ids_and_nothing_else() {
        let mut rng = StdRng::seed_from_u64(7);
        let original = generate(&mut rng, &OrderParams::default(), now()).unwrap();
        let mut renumbered = original.clone();
        renumbered.renumber(&mut StdRng::seed_from_u64(99));
        assert_ne!(renumbered.original_order_id, original.original_order_id);
        assert_ne!(renumbered.order_uuid, original.order_uuid);
        assert_eq!(renumbered.payload["originalOrderId"], renumbered.original_order_id.as_str());
        assert_eq!(renumbered.payload["orderUUID"], renumbered.order_uuid.as_str());
        let strip = |order: &GeneratedOrder| {
            let mut payload = order.payload.clone();
            payload["originalOrderId"] = Value::Null;
            payload["orderUUID"] = Value::Null;
            payload
        };
        assert_eq!(strip(&renumbered), strip(&original), "the content is the seed's");
        assert!(renumbered.original_order_id.starts_with('H') && renumbered.original_order_id.len() == 12);
    }

    #[test]
    fn orders_look_like_kuper_orders() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut saw_weighed = false;
        let mut saw_marked = false;
        for _ in 0..50 {
            let Ok(order) = generate(&mut rng, &OrderParams::default(), now()) else { panic!("generation failed") };
            let id = &order.original_order_id;
            assert!(id.len() == 12 && id.starts_with('H') && id[1..].chars().all(|c| c.is_ascii_digit()));
            assert!(order.order_uuid.starts_with("sim:"));
            let positions = order.payload["positions"].as_array().cloned().unwrap_or_default();
            assert!((1..=5).contains(&positions.len()));
            for p in &positions {
                let weight = p["weight"].as_str().unwrap_or("x");
                saw_weighed |= !weight.is_empty();
                saw_marked |= p.get("markingCodeRequired").is_some();
                for key in ["price", "discountPrice", "totalPrice", "totalDiscountPrice"] {
                    let text = p[key].as_str().unwrap_or("");
                    assert_eq!(text.split('.').nth(1).map(str::len), Some(2), "{key}: {text}");
                }
            }
            // The order's own totals follow the §8 formula.
            let sum: Decimal = order
                .positions
                .iter()
                .map(|p| crate::money::round_kopecks(p.discount_price * p.original_quantity))
                .sum();
            assert_eq!(sum, order.discount_total_price);
            assert_eq!(order.payload["total"]["discountTotalPrice"], json!(format_money(order.discount_total_price)));
            assert!(order.payload.get("address").is_some());
        }
        assert!(saw_weighed && saw_marked);
    }

    #[test]
    fn pickup_orders_have_no_address_and_restaurants_have_modifiers() {
        let mut rng = StdRng::seed_from_u64(3);
        let params = OrderParams { shipment_method: "pickup".into(), ..OrderParams::default() };
        let order = generate(&mut rng, &params, now()).ok();
        assert!(order.as_ref().is_some_and(|o| o.payload.get("address").is_none()));
        assert_eq!(order.map(|o| o.scheme), Some(Scheme::B));
        let params = OrderParams { restaurant: true, ..OrderParams::default() };
        let mut saw_modifiers = false;
        for _ in 0..10 {
            let order = generate(&mut rng, &params, now()).ok();
            let positions = order.map(|o| o.payload["positions"].clone()).unwrap_or_default();
            for p in positions.as_array().into_iter().flatten() {
                saw_modifiers |= p["modifiers"].as_array().is_some_and(|m| !m.is_empty());
            }
        }
        assert!(saw_modifiers);
    }

    #[test]
    fn given_positions_are_completed() {
        let mut rng = StdRng::seed_from_u64(3);
        let params = OrderParams {
            positions: Some(vec![
                json!({"id": "A", "price": "10.00", "quantity": 3}),
                json!({"id": "B", "price": "189.00", "quantity": 1, "weight": "1000"}),
            ]),
            ..OrderParams::default()
        };
        let order = generate(&mut rng, &params, now()).ok();
        assert_eq!(order.as_ref().map(|o| o.payload["total"]["totalPrice"].clone()), Some(json!("219.00")));
        assert_eq!(order.map(|o| o.positions[1].weight_g), Some(Some(Decimal::from(1000))));
        let params = OrderParams { positions: Some(vec![json!({"id": "A"})]), ..OrderParams::default() };
        assert!(generate(&mut rng, &params, now()).is_err());
    }
}

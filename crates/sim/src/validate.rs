//! Kuper's judgement of a notification: pure functions, no I/O, so every rule is unit-tested
//! without HTTP. The HTTP layer parses with [`parse_notification`], finds the order, and asks
//! [`validate`] what Kuper would answer.

use std::collections::HashSet;
use std::fmt::Display;

use chrono::DateTime;
use rust_decimal::Decimal;
use serde_json::{Map, Value};

use crate::config::{Profile, RepeatPolicy};
use crate::model::{EventKind, KuperState, OrderPosition, Scheme};
use crate::money::{decimal_from_json, format_money, money_from_json, round_kopecks, JsonDecimal};

/// Why a notification is refused; the slug is what tests and dispatchers match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Unauthorized,
    /// `Client-Token` without `Api-Version: 3.0`.
    ApiVersion,
    Schema,
    UnknownEvent,
    MissingOrderId,
    UnknownOrder,
    /// The identifiers of one notification name different orders, or a `number` names several.
    IdentityMismatch,
    NotAllowedForIntegration,
    NotRestaurant,
    AfterFinal,
    Repeat,
    OrderOfEvents,
    CompositionRequired,
    TotalsMismatch,
    UnknownPosition,
    /// A replacement line without its own `price` (protocol.md §8).
    ReplacementPriceRequired,
}

impl Rule {
    pub fn slug(self) -> &'static str {
        match self {
            Rule::Unauthorized => "unauthorized",
            Rule::ApiVersion => "api_version",
            Rule::Schema => "schema",
            Rule::UnknownEvent => "unknown_event",
            Rule::MissingOrderId => "missing_order_id",
            Rule::UnknownOrder => "unknown_order",
            Rule::IdentityMismatch => "identity_mismatch",
            Rule::NotAllowedForIntegration => "not_allowed_for_integration",
            Rule::NotRestaurant => "not_restaurant",
            Rule::AfterFinal => "after_final",
            Rule::Repeat => "repeat",
            Rule::OrderOfEvents => "order_of_events",
            Rule::CompositionRequired => "composition_required",
            Rule::TotalsMismatch => "totals_mismatch",
            Rule::UnknownPosition => "unknown_position",
            Rule::ReplacementPriceRequired => "replacement_price_required",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Rule::Unauthorized => 401,
            Rule::ApiVersion | Rule::Schema | Rule::UnknownEvent | Rule::MissingOrderId => 400,
            Rule::UnknownOrder => 404,
            Rule::NotAllowedForIntegration => 405,
            Rule::IdentityMismatch
            | Rule::NotRestaurant
            | Rule::AfterFinal
            | Rule::Repeat
            | Rule::OrderOfEvents
            | Rule::CompositionRequired
            | Rule::TotalsMismatch
            | Rule::UnknownPosition
            | Rule::ReplacementPriceRequired => 422,
        }
    }

    /// The short human title of merchant-api problem details.
    pub fn title(self) -> &'static str {
        match self {
            Rule::Unauthorized => "Unauthorized",
            Rule::ApiVersion | Rule::Schema => "Bad Request",
            Rule::UnknownEvent => "Unknown event type",
            Rule::MissingOrderId => "Order id is required",
            Rule::UnknownOrder => "Order not found",
            Rule::NotAllowedForIntegration => "Event not allowed for this integration",
            Rule::IdentityMismatch
            | Rule::NotRestaurant
            | Rule::AfterFinal
            | Rule::Repeat
            | Rule::OrderOfEvents
            | Rule::CompositionRequired
            | Rule::TotalsMismatch
            | Rule::UnknownPosition
            | Rule::ReplacementPriceRequired => "Unprocessable Entity",
        }
    }
}

/// A refusal as Kuper would phrase it. The message starts with the rule's slug, so a human
/// reading only the message still learns which rule was broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub status: u16,
    pub rule: Rule,
    pub field: Option<String>,
    pub message: String,
}

impl Rejection {
    pub fn new(rule: Rule, field: Option<&str>, detail: impl Display) -> Self {
        Self {
            status: rule.status(),
            rule,
            field: field.map(str::to_owned),
            message: format!("{}: {}", rule.slug(), detail),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// `{"event_type","payload":{…}}`
    Brief,
    /// `{"event":{"type","payload":{…}}}`
    Event,
}

impl BodyFormat {
    fn payload_prefix(self) -> &'static str {
        match self {
            BodyFormat::Brief => "payload",
            BodyFormat::Event => "event.payload",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderIds {
    pub order_uuid: Option<String>,
    pub original_order_id: Option<String>,
    pub number: Option<String>,
}

impl OrderIds {
    pub fn is_empty(&self) -> bool {
        self.order_uuid.is_none() && self.original_order_id.is_none() && self.number.is_none()
    }
}

/// One collected line as the merchant reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Line {
    pub id: String,
    pub quantity: Option<Decimal>,
    pub weight_g: Option<Decimal>,
    pub price: Option<Decimal>,
    pub discount_price: Option<Decimal>,
    pub total_price: Option<Decimal>,
    pub replaced_by: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Totals {
    pub total_price: Decimal,
    pub discount_total_price: Decimal,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Composition {
    Absent,
    /// `payload.positions` + `payload.total`, with prices.
    Brief {
        lines: Vec<Line>,
        total: Option<Totals>,
    },
    /// `payload.order` with `changed` and/or `positions`, without prices.
    Event {
        lines: Vec<Line>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    pub format: BodyFormat,
    pub kind: EventKind,
    pub ids: OrderIds,
    pub payload: Map<String, Value>,
    pub composition: Composition,
    pub pickup_code: Option<String>,
}

/// Event type and identifiers read as far as the body allows, for logging requests that are
/// refused before (or without) parsing: faults, 401s, schema errors.
pub fn peek(body: &[u8]) -> (Option<String>, OrderIds) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return (None, OrderIds::default());
    };
    let Ok((format, event_type, payload)) = envelope(&value) else {
        return (None, OrderIds::default());
    };
    let ids = read_ids(format, payload).unwrap_or_default();
    (Some(event_type.to_owned()), ids)
}

fn envelope(value: &Value) -> Result<(BodyFormat, &str, &Map<String, Value>), Rejection> {
    let Value::Object(root) = value else {
        return Err(Rejection::new(Rule::Schema, None, "the body must be a JSON object"));
    };
    if let Some(event_type) = root.get("event_type") {
        let Value::String(event_type) = event_type else {
            return Err(Rejection::new(Rule::Schema, Some("event_type"), "event_type must be a string"));
        };
        let Some(Value::Object(payload)) = root.get("payload") else {
            return Err(Rejection::new(Rule::Schema, Some("payload"), "payload must be an object"));
        };
        return Ok((BodyFormat::Brief, event_type, payload));
    }
    if let Some(event) = root.get("event") {
        let Value::Object(event) = event else {
            return Err(Rejection::new(Rule::Schema, Some("event"), "event must be an object"));
        };
        let Some(Value::String(event_type)) = event.get("type") else {
            return Err(Rejection::new(Rule::Schema, Some("event.type"), "event.type must be a string"));
        };
        let Some(Value::Object(payload)) = event.get("payload") else {
            return Err(Rejection::new(Rule::Schema, Some("event.payload"), "event.payload must be an object"));
        };
        return Ok((BodyFormat::Event, event_type, payload));
    }
    Err(Rejection::new(
        Rule::Schema,
        None,
        "expected {\"event_type\",\"payload\"} or {\"event\":{\"type\",\"payload\"}}",
    ))
}

fn id_field(map: &Map<String, Value>, key: &str, prefix: &str) -> Result<Option<String>, Rejection> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(_) => {
            let field = format!("{prefix}.{key}");
            Err(Rejection::new(Rule::Schema, Some(&field), format!("{field} must be a string")))
        }
    }
}

fn read_ids(format: BodyFormat, payload: &Map<String, Value>) -> Result<OrderIds, Rejection> {
    let prefix = format.payload_prefix();
    let mut original = match format {
        BodyFormat::Brief => id_field(payload, "originalOrderId", prefix)?,
        BodyFormat::Event => id_field(payload, "order_id", prefix)?,
    };
    if original.is_none() {
        original = match format {
            BodyFormat::Brief => id_field(payload, "order_id", prefix)?,
            BodyFormat::Event => id_field(payload, "originalOrderId", prefix)?,
        };
    }
    if original.is_none() {
        if let Some(Value::Object(order)) = payload.get("order") {
            original = id_field(order, "originalOrderId", &format!("{prefix}.order"))?;
        }
    }
    Ok(OrderIds {
        order_uuid: id_field(payload, "orderUUID", prefix)?,
        original_order_id: original,
        number: id_field(payload, "number", prefix)?,
    })
}

fn is_rfc3339(value: &Value) -> bool {
    matches!(value, Value::String(text) if DateTime::parse_from_rfc3339(text).is_ok())
}

/// Field names seen for the estimated delivery time; the brief does not name one.
const ETA_FIELDS: [&str; 7] = [
    "estimatedDeliveryTime",
    "estimated_delivery_time",
    "estimatedDeliveryAt",
    "estimated_delivery_at",
    "deliveryTime",
    "time",
    "at",
];

/// Parses a notification body (protocol.md §7) into what the rules need.
///
/// Checks, in order: JSON and envelope (`schema`), event type (`unknown_event`), identity
/// (`missing_order_id`), then the fields a given event must carry (`schema`).
pub fn parse_notification(body: &[u8]) -> Result<Notification, Rejection> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Rejection::new(Rule::Schema, None, format!("the body is not JSON: {e}")))?;
    let (format, event_type, payload) = envelope(&value)?;
    let type_field = match format {
        BodyFormat::Brief => "event_type",
        BodyFormat::Event => "event.type",
    };
    let kind = EventKind::from_wire(event_type).ok_or_else(|| {
        Rejection::new(Rule::UnknownEvent, Some(type_field), format!("unknown event type {event_type:?}"))
    })?;
    let ids = read_ids(format, payload)?;
    let prefix = format.payload_prefix();
    if ids.is_empty() {
        let field = match format {
            BodyFormat::Brief => "payload.orderUUID",
            BodyFormat::Event => "event.payload.order_id",
        };
        return Err(Rejection::new(
            Rule::MissingOrderId,
            Some(field),
            "the notification names no order (orderUUID, order_id/originalOrderId or number)",
        ));
    }

    let mut pickup_code = None;
    match kind {
        EventKind::Canceled => {
            let slug = payload
                .get("cancellation")
                .and_then(|c| c.get("slug"))
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty());
            if slug.is_none() {
                let field = format!("{prefix}.cancellation.slug");
                return Err(Rejection::new(Rule::Schema, Some(&field), format!("order.canceled must carry {field}")));
            }
        }
        EventKind::PickupCodeCreated => {
            let key = match format {
                BodyFormat::Brief => "pickupCode",
                BodyFormat::Event => "code",
            };
            pickup_code = id_field(payload, key, prefix)?;
            if pickup_code.is_none() {
                let field = format!("{prefix}.{key}");
                return Err(Rejection::new(
                    Rule::Schema,
                    Some(&field),
                    format!("order.pickup_code_created must carry {field}"),
                ));
            }
        }
        EventKind::EstimatedDeliveryTime => {
            let named = ETA_FIELDS.iter().any(|key| payload.get(*key).is_some_and(is_rfc3339));
            let anywhere = named || payload.values().any(is_rfc3339);
            if !anywhere {
                let field = format!("{prefix}.estimatedDeliveryTime");
                return Err(Rejection::new(
                    Rule::Schema,
                    Some(&field),
                    "order.estimated_delivery_time must carry the time as RFC 3339 with an offset",
                ));
            }
        }
        EventKind::Accepted => {
            let key = match format {
                BodyFormat::Brief => "expectedAssemblyTime",
                BodyFormat::Event => "estimated_assembly_at",
            };
            if let Some(time) = payload.get(key).filter(|v| !v.is_null()) {
                if !is_rfc3339(time) {
                    let field = format!("{prefix}.{key}");
                    return Err(Rejection::new(
                        Rule::Schema,
                        Some(&field),
                        format!("{field} must be RFC 3339 with an offset"),
                    ));
                }
            }
        }
        _ => {}
    }

    let composition = if matches!(kind, EventKind::ReadyForDelivery | EventKind::Delivered) {
        parse_composition(format, payload)?
    } else {
        Composition::Absent
    };

    Ok(Notification { format, kind, ids, payload: payload.clone(), composition, pickup_code })
}

fn parse_composition(format: BodyFormat, payload: &Map<String, Value>) -> Result<Composition, Rejection> {
    match format {
        BodyFormat::Brief => {
            let lines = match payload.get("positions") {
                None | Some(Value::Null) => Vec::new(),
                Some(positions) => parse_lines(positions, "payload.positions", true)?,
            };
            let total = match payload.get("total") {
                None | Some(Value::Null) => None,
                Some(Value::Object(total)) => Some(Totals {
                    total_price: required_money(total, "totalPrice", "payload.total")?,
                    discount_total_price: required_money(total, "discountTotalPrice", "payload.total")?,
                }),
                Some(_) => {
                    return Err(Rejection::new(Rule::Schema, Some("payload.total"), "payload.total must be an object"))
                }
            };
            if lines.is_empty() && total.is_none() {
                Ok(Composition::Absent)
            } else {
                Ok(Composition::Brief { lines, total })
            }
        }
        BodyFormat::Event => {
            let Some(order) = payload.get("order").filter(|v| !v.is_null()) else {
                return Ok(Composition::Absent);
            };
            let Value::Object(order) = order else {
                return Err(Rejection::new(
                    Rule::Schema,
                    Some("event.payload.order"),
                    "event.payload.order must be an object",
                ));
            };
            if !order.contains_key("changed") && !order.contains_key("positions") {
                return Ok(Composition::Absent);
            }
            let lines = match order.get("positions") {
                None | Some(Value::Null) => Vec::new(),
                Some(positions) => parse_lines(positions, "event.payload.order.positions", false)?,
            };
            Ok(Composition::Event { lines })
        }
    }
}

fn required_money(map: &Map<String, Value>, key: &str, prefix: &str) -> Result<Decimal, Rejection> {
    let field = format!("{prefix}.{key}");
    match money_from_json(map.get(key)) {
        JsonDecimal::Value(value) => Ok(value),
        JsonDecimal::Absent | JsonDecimal::Empty => {
            Err(Rejection::new(Rule::Schema, Some(&field), format!("{field} is required")))
        }
        JsonDecimal::Invalid => {
            Err(Rejection::new(Rule::Schema, Some(&field), format!("{field} must be a decimal string like \"189.99\"")))
        }
    }
}

fn optional_money(map: &Map<String, Value>, key: &str, prefix: &str) -> Result<Option<Decimal>, Rejection> {
    match money_from_json(map.get(key)) {
        JsonDecimal::Value(value) => Ok(Some(value)),
        JsonDecimal::Absent | JsonDecimal::Empty => Ok(None),
        JsonDecimal::Invalid => {
            let field = format!("{prefix}.{key}");
            Err(Rejection::new(Rule::Schema, Some(&field), format!("{field} must be a decimal string like \"189.99\"")))
        }
    }
}

fn optional_decimal(map: &Map<String, Value>, key: &str, prefix: &str) -> Result<Option<Decimal>, Rejection> {
    match decimal_from_json(map.get(key)) {
        JsonDecimal::Value(value) => Ok(Some(value)),
        JsonDecimal::Absent | JsonDecimal::Empty => Ok(None),
        JsonDecimal::Invalid => {
            let field = format!("{prefix}.{key}");
            Err(Rejection::new(Rule::Schema, Some(&field), format!("{field} must be a decimal number")))
        }
    }
}

fn parse_lines(positions: &Value, prefix: &str, with_money: bool) -> Result<Vec<Line>, Rejection> {
    let Value::Array(items) = positions else {
        return Err(Rejection::new(Rule::Schema, Some(prefix), format!("{prefix} must be an array")));
    };
    let mut lines = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let at = format!("{prefix}[{index}]");
        let Value::Object(item) = item else {
            return Err(Rejection::new(Rule::Schema, Some(&at), format!("{at} must be an object")));
        };
        let Some(id) = id_field(item, "id", &at)? else {
            let field = format!("{at}.id");
            return Err(Rejection::new(Rule::Schema, Some(&field), format!("{field} is required")));
        };
        let mut line = Line {
            id,
            quantity: optional_decimal(item, "quantity", &at)?,
            weight_g: optional_decimal(item, "weight", &at)?,
            replaced_by: id_field(item, "replacedByID", &at)?,
            ..Line::default()
        };
        if with_money {
            line.price = optional_money(item, "price", &at)?;
            line.discount_price = optional_money(item, "discountPrice", &at)?;
            line.total_price = optional_money(item, "totalPrice", &at)?;
        }
        lines.push(line);
    }
    Ok(lines)
}

/// What Kuper knows about an order when a notification arrives.
#[derive(Clone, Copy, Debug)]
pub struct OrderFacts<'a> {
    pub scheme: Scheme,
    pub restaurant: bool,
    pub state: KuperState,
    /// Notifications already accepted, in order.
    pub done: &'a [EventKind],
    pub positions: &'a [OrderPosition],
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Accept and apply: the new Kuper state, and the totals of a checked composition.
    Apply { state: KuperState, totals: Option<Totals> },
    /// A repeat answered `202` ([`RepeatPolicy::Accept202`]); nothing changes.
    Repeat,
}

/// Kuper's verdict on a parsed notification for a known order. The checks run in this order:
/// integration (`405`, `not_restaurant`), repeat, after final, order of events, composition.
/// A repeat is recognised before `after_final`, so a retried `delivered` or `canceled` whose
/// first answer was lost is reported as a repeat rather than as an error.
pub fn validate(
    profile: Profile,
    repeat: RepeatPolicy,
    facts: &OrderFacts<'_>,
    notification: &Notification,
) -> Result<Outcome, Rejection> {
    let kind = notification.kind;
    check_integration(facts.scheme, facts.restaurant, kind)?;
    if facts.done.contains(&kind) {
        return match repeat {
            RepeatPolicy::Accept202 => Ok(Outcome::Repeat),
            RepeatPolicy::Reject422 => Err(Rejection::new(
                Rule::Repeat,
                Some("event.type"),
                format!("{} was already accepted for this order", kind.wire()),
            )),
        };
    }
    if facts.state.is_final() {
        return Err(Rejection::new(
            Rule::AfterFinal,
            Some("event.type"),
            format!("{} after the order became {}", kind.wire(), state_name(facts.state)),
        ));
    }
    check_order_of_events(profile, facts, kind)?;
    let totals = check_composition_of(facts, notification)?;
    Ok(Outcome::Apply { state: facts.state.advance(state_after(facts.scheme, kind).unwrap_or(facts.state)), totals })
}

fn state_name(state: KuperState) -> &'static str {
    match state {
        KuperState::Ready => "ready",
        KuperState::Collecting => "collecting",
        KuperState::Assembled => "assembled",
        KuperState::ReadyToShip => "ready_to_ship",
        KuperState::Shipping => "shipping",
        KuperState::Shipped => "shipped",
        KuperState::Canceled => "canceled",
    }
}

fn state_after(scheme: Scheme, kind: EventKind) -> Option<KuperState> {
    match kind {
        EventKind::InWork => Some(KuperState::Collecting),
        EventKind::Assembled => Some(KuperState::Assembled),
        EventKind::ReadyForDelivery => Some(KuperState::ReadyToShip),
        EventKind::Delivering if scheme == Scheme::C => Some(KuperState::Shipping),
        EventKind::Delivered => Some(KuperState::Shipped),
        EventKind::Canceled => Some(KuperState::Canceled),
        _ => None,
    }
}

/// Which notifications an integration type accepts at all (protocol.md §5, [v3] answers 405).
pub fn check_integration(scheme: Scheme, restaurant: bool, kind: EventKind) -> Result<(), Rejection> {
    let forbidden: &[EventKind] = match scheme {
        Scheme::A => &[
            EventKind::Delivering,
            EventKind::Delivered,
            EventKind::EstimatedDeliveryTime,
            EventKind::PickupCodeCreated,
        ],
        Scheme::B => &[EventKind::Delivering, EventKind::EstimatedDeliveryTime],
        Scheme::C => &[EventKind::PickupCodeCreated],
    };
    if forbidden.contains(&kind) {
        let integration = match scheme {
            Scheme::A => "delivery by Kuper",
            Scheme::B => "pickup",
            Scheme::C => "delivery by the merchant",
        };
        return Err(Rejection::new(
            Rule::NotAllowedForIntegration,
            Some("event.type"),
            format!("{} is not allowed for {integration} orders", kind.wire()),
        ));
    }
    if kind == EventKind::Accepted && !restaurant {
        return Err(Rejection::new(
            Rule::NotRestaurant,
            Some("event.type"),
            "order.accepted is only for restaurant orders",
        ));
    }
    Ok(())
}

fn order_rejection(detail: impl Display) -> Rejection {
    Rejection::new(Rule::OrderOfEvents, Some("event.type"), detail)
}

/// The order of events per scheme (protocol.md §5, §6) and profile.
pub fn check_order_of_events(profile: Profile, facts: &OrderFacts<'_>, kind: EventKind) -> Result<(), Rejection> {
    let done = |k: EventKind| facts.done.contains(&k);
    let needs = |k: EventKind| {
        if done(k) {
            Ok(())
        } else {
            Err(order_rejection(format!("{} requires {} first", kind.wire(), k.wire())))
        }
    };
    let before = |k: EventKind| {
        if done(k) {
            Err(order_rejection(format!("{} must come before {}", kind.wire(), k.wire())))
        } else {
            Ok(())
        }
    };
    match kind {
        EventKind::Accepted => before(EventKind::InWork),
        EventKind::InWork if facts.restaurant => needs(EventKind::Accepted),
        EventKind::InWork => Ok(()),
        EventKind::Assembled => {
            needs(EventKind::InWork)?;
            before(EventKind::ReadyForDelivery)
        }
        EventKind::ReadyForDelivery => needs(EventKind::InWork),
        EventKind::PickupCodeCreated => match profile {
            Profile::Brief => needs(EventKind::ReadyForDelivery),
            Profile::V3 => {
                needs(EventKind::InWork)?;
                before(EventKind::ReadyForDelivery)
            }
        },
        EventKind::EstimatedDeliveryTime | EventKind::Delivering => needs(EventKind::ReadyForDelivery),
        EventKind::Delivered => match facts.scheme {
            Scheme::B => {
                needs(EventKind::ReadyForDelivery)?;
                needs(EventKind::PickupCodeCreated)
            }
            _ => needs(EventKind::Delivering),
        },
        EventKind::Canceled => {
            if facts.scheme == Scheme::A && facts.state == KuperState::Shipping {
                Err(order_rejection(
                    "order.canceled after the courier took the order (order.received); it was handed over",
                ))
            } else {
                Ok(())
            }
        }
    }
}

fn needs_composition(scheme: Scheme, kind: EventKind) -> bool {
    match kind {
        EventKind::ReadyForDelivery => true,
        EventKind::Delivered => matches!(scheme, Scheme::B | Scheme::C),
        _ => false,
    }
}

fn check_composition_of(facts: &OrderFacts<'_>, notification: &Notification) -> Result<Option<Totals>, Rejection> {
    let kind = notification.kind;
    let required = needs_composition(facts.scheme, kind);
    match &notification.composition {
        Composition::Brief { lines, total: Some(total) } if !lines.is_empty() => {
            check_composition(facts.positions, lines, total, "payload.positions").map(Some)
        }
        Composition::Event { lines } => {
            check_known(facts.positions, lines, "event.payload.order.positions")?;
            Ok(None)
        }
        _ if required => {
            let (field, what) = match notification.format {
                BodyFormat::Brief => ("payload.positions", "non-empty positions and total"),
                BodyFormat::Event => ("event.payload.order", "order.changed or order.positions"),
            };
            Err(Rejection::new(
                Rule::CompositionRequired,
                Some(field),
                format!("{} must carry the composition ({what})", kind.wire()),
            ))
        }
        _ => Ok(None),
    }
}

/// Every reported line is either in the order or replaces one (named by a `replacedByID`).
pub fn check_known(order: &[OrderPosition], lines: &[Line], prefix: &str) -> Result<(), Rejection> {
    let replacements: HashSet<&str> = lines.iter().filter_map(|l| l.replaced_by.as_deref()).collect();
    for (index, line) in lines.iter().enumerate() {
        let known = order.iter().any(|p| p.id == line.id) || replacements.contains(line.id.as_str());
        if !known {
            let field = format!("{prefix}[{index}].id");
            return Err(Rejection::new(
                Rule::UnknownPosition,
                Some(&field),
                format!("position {:?} is not in the order and no line names it in replacedByID", line.id),
            ));
        }
    }
    Ok(())
}

/// How many "units of price" a line of an ordered good is: the quantity for piece goods, or
/// `weight / (originalWeight / originalQuantity)` for weighed goods (protocol.md §8).
fn ordered_units(position: &OrderPosition, line: &Line, field: &str) -> Result<Decimal, Rejection> {
    let weighed = position.weight_g.filter(|w| !w.is_zero());
    match (weighed, line.weight_g, line.quantity) {
        (Some(original_weight), Some(weight), _) => Ok(weight * position.original_quantity / original_weight),
        // A weighed good reported by count only is valued by units, as ordered.
        (_, _, Some(quantity)) => Ok(quantity),
        _ => Err(Rejection::new(
            Rule::Schema,
            Some(field),
            format!("position {:?} carries neither quantity nor weight", line.id),
        )),
    }
}

/// Recomputes a `brief` composition from the order's unit prices (protocol.md §8).
///
/// Restaurant lines are accepted with or without their modifiers' prices (Kuper's restaurant
/// example counts them; the §8 formula does not); the grand total before discount follows
/// whichever reading matched each line. A replacement line's own `totalPrice` is not judged,
/// only summed; its amount before discount uses the quantity, or `weight / 1000` when that is
/// what its `totalPrice` was computed from.
pub fn check_composition(
    order: &[OrderPosition],
    lines: &[Line],
    total: &Totals,
    prefix: &str,
) -> Result<Totals, Rejection> {
    check_known(order, lines, prefix)?;
    let mut sum_discounted = Decimal::ZERO;
    let mut sum_full = Decimal::ZERO;
    for (index, line) in lines.iter().enumerate() {
        let at = format!("{prefix}[{index}]");
        let total_field = format!("{at}.totalPrice");
        let Some(given) = line.total_price else {
            return Err(Rejection::new(
                Rule::TotalsMismatch,
                Some(&total_field),
                format!("position {:?} carries no totalPrice", line.id),
            ));
        };
        if let Some(position) = order.iter().find(|p| p.id == line.id) {
            let units = ordered_units(position, line, &at)?;
            let mut readings = vec![Decimal::ZERO];
            if !position.modifiers_per_unit.is_zero() {
                readings.push(position.modifiers_per_unit);
            }
            let matched = readings
                .iter()
                .copied()
                .find(|extra| round_kopecks((position.discount_price + extra) * units) == given);
            let Some(extra) = matched else {
                let expected = round_kopecks(position.discount_price * units);
                return Err(Rejection::new(
                    Rule::TotalsMismatch,
                    Some(&total_field),
                    format!(
                        "position {:?}: totalPrice {} but {} × {} = {}",
                        line.id,
                        format_money(given),
                        format_money(position.discount_price),
                        units.normalize(),
                        format_money(expected)
                    ),
                ));
            };
            sum_full += round_kopecks((position.price + extra) * units);
        } else {
            let Some(price) = line.price else {
                let field = format!("{at}.price");
                return Err(Rejection::new(
                    Rule::ReplacementPriceRequired,
                    Some(&field),
                    format!("replacement position {:?} must carry its own price", line.id),
                ));
            };
            let discount = line.discount_price.unwrap_or(price);
            let mut readings = Vec::new();
            if let Some(weight) = line.weight_g.filter(|w| !w.is_zero()) {
                readings.push(weight / Decimal::ONE_THOUSAND);
            }
            if let Some(quantity) = line.quantity {
                readings.push(quantity);
            }
            let Some(first) = readings.first().copied() else {
                return Err(Rejection::new(
                    Rule::Schema,
                    Some(&at),
                    format!("position {:?} carries neither quantity nor weight", line.id),
                ));
            };
            let units =
                readings.iter().copied().find(|units| round_kopecks(discount * units) == given).unwrap_or(first);
            sum_full += round_kopecks(price * units);
        }
        sum_discounted += given;
    }
    let discount_field = "payload.total.discountTotalPrice";
    if total.discount_total_price != sum_discounted {
        return Err(Rejection::new(
            Rule::TotalsMismatch,
            Some(discount_field),
            format!(
                "total.discountTotalPrice is {} but the lines' totalPrice sum to {}",
                format_money(total.discount_total_price),
                format_money(sum_discounted)
            ),
        ));
    }
    if total.total_price != sum_full {
        return Err(Rejection::new(
            Rule::TotalsMismatch,
            Some("payload.total.totalPrice"),
            format!(
                "total.totalPrice is {} but the lines computed with price sum to {}",
                format_money(total.total_price),
                format_money(sum_full)
            ),
        ));
    }
    Ok(Totals { total_price: sum_full, discount_total_price: sum_discounted })
}

/// Kuper's reading of the merchant's answer to `order.created` (protocol.md §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedCheck {
    pub ok: bool,
    /// The merchant `number`, when the body has one (even a wrongly typed one, so that
    /// notifications naming it can still be matched).
    pub number: Option<String>,
    pub problems: Vec<String>,
}

pub fn check_created_answer(status: Option<u16>, body: &Value) -> CreatedCheck {
    let mut problems = Vec::new();
    let mut number = None;
    match status {
        Some(200) => {}
        Some(other) => problems.push(format!("HTTP status is {other}, expected 200")),
        None => problems.push("no HTTP answer".to_owned()),
    }
    match body {
        Value::Object(map) => {
            match map.get("status") {
                Some(Value::String(s)) if s == "created" => {}
                Some(other) => problems.push(format!("status is {other}, expected \"created\"")),
                None => problems.push("status is missing, expected \"created\"".to_owned()),
            }
            match map.get("number") {
                Some(Value::String(s)) if !s.trim().is_empty() => number = Some(s.clone()),
                Some(Value::String(_)) => problems.push("number is empty".to_owned()),
                Some(Value::Number(n)) => {
                    number = Some(n.to_string());
                    problems.push("number must be a JSON string, got a number".to_owned());
                }
                Some(other) => problems.push(format!("number must be a JSON string, got {other}")),
                None => problems.push("number is missing".to_owned()),
            }
            match map.get("expectedAssemblyTime") {
                Some(Value::String(s)) if DateTime::parse_from_rfc3339(s).is_ok() => {}
                Some(other) => problems.push(format!("expectedAssemblyTime {other} is not RFC 3339 with an offset")),
                None => problems.push("expectedAssemblyTime is missing".to_owned()),
            }
        }
        _ => problems.push("the body is not a JSON object".to_owned()),
    }
    CreatedCheck { ok: problems.is_empty(), number, problems }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(text: &str) -> Decimal {
        crate::money::parse_decimal_str(text).unwrap_or_default()
    }

    fn piece(id: &str, price: &str, discount: &str, quantity: i64) -> OrderPosition {
        OrderPosition {
            id: id.to_owned(),
            price: d(price),
            discount_price: d(discount),
            original_quantity: Decimal::from(quantity),
            weight_g: None,
            modifiers_per_unit: Decimal::ZERO,
        }
    }

    fn weighed(id: &str, price: &str, quantity: i64, grams: i64) -> OrderPosition {
        OrderPosition { weight_g: Some(Decimal::from(grams)), ..piece(id, price, price, quantity) }
    }

    /// The order of fixtures/webhooks/order.created.kuper-delivery.json.
    fn fixture_order() -> Vec<OrderPosition> {
        vec![
            piece("SKU-100245", "94.99", "89.99", 2),
            weighed("SKU-550071", "189.00", 1, 1000),
            piece("SKU-770300", "59.00", "55.00", 2),
        ]
    }

    fn facts<'a>(
        scheme: Scheme,
        state: KuperState,
        done: &'a [EventKind],
        positions: &'a [OrderPosition],
    ) -> OrderFacts<'a> {
        OrderFacts { scheme, restaurant: false, state, done, positions }
    }

    fn parse(value: Value) -> Notification {
        match parse_notification(value.to_string().as_bytes()) {
            Ok(n) => n,
            Err(e) => panic!("unexpected rejection {e:?}"),
        }
    }

    fn rule_of(result: Result<Outcome, Rejection>) -> Option<Rule> {
        result.err().map(|e| e.rule)
    }

    #[test]
    fn parses_the_brief_fixtures() {
        let n = parse(
            serde_json::from_str(include_str!("../../../fixtures/notifications/brief.order.ready_for_delivery.json"))
                .unwrap_or_default(),
        );
        assert_eq!(n.format, BodyFormat::Brief);
        assert_eq!(n.kind, EventKind::ReadyForDelivery);
        assert_eq!(n.ids.order_uuid.as_deref(), Some("acme:7d0b3c52-9a1e-4f53-8c2e-1b6a44f0e912"));
        assert_eq!(n.ids.number.as_deref(), Some("ERP-2026-000781"));
        let Composition::Brief { lines, total } = &n.composition else { panic!("composition expected") };
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].weight_g, Some(d("1135")));
        assert_eq!(total.map(|t| t.discount_total_price), Some(d("304.51")));

        let n = parse(
            serde_json::from_str(include_str!("../../../fixtures/notifications/brief.order.pickup_code_created.json"))
                .unwrap_or_default(),
        );
        assert_eq!(n.pickup_code.as_deref(), Some("482913"));
        let n = parse(
            serde_json::from_str(include_str!("../../../fixtures/notifications/brief.order.canceled.json"))
                .unwrap_or_default(),
        );
        assert_eq!(n.kind, EventKind::Canceled);
    }

    #[test]
    fn parses_the_event_fixtures() {
        let n = parse(
            serde_json::from_str(include_str!("../../../fixtures/notifications/event.order.ready_for_delivery.json"))
                .unwrap_or_default(),
        );
        assert_eq!(n.format, BodyFormat::Event);
        assert_eq!(n.ids.original_order_id.as_deref(), Some("H48210377615"));
        let Composition::Event { lines } = &n.composition else { panic!("composition expected") };
        assert_eq!(lines[0].replaced_by.as_deref(), Some("SKU-100246"));
        let n = parse(
            serde_json::from_str(include_str!("../../../fixtures/notifications/event.order.pickup_code_created.json"))
                .unwrap_or_default(),
        );
        assert_eq!(n.pickup_code.as_deref(), Some("7306"));
        let n = parse(
            serde_json::from_str(include_str!("../../../fixtures/notifications/event.order.accepted.json"))
                .unwrap_or_default(),
        );
        assert_eq!(n.kind, EventKind::Accepted);
        assert_eq!(n.ids.number.as_deref(), Some("ERP-2026-000790"));
    }

    #[test]
    fn rejects_bad_envelopes() {
        let rule = |body: &str| parse_notification(body.as_bytes()).err().map(|e| e.rule);
        assert_eq!(rule("not json"), Some(Rule::Schema));
        assert_eq!(rule("[]"), Some(Rule::Schema));
        assert_eq!(rule(r#"{"event_type":"order.in_work"}"#), Some(Rule::Schema));
        assert_eq!(rule(r#"{"event_type":"order.teleported","payload":{"orderUUID":"x"}}"#), Some(Rule::UnknownEvent));
        assert_eq!(rule(r#"{"event":{"type":"order.in_work","payload":{}}}"#), Some(Rule::MissingOrderId));
        assert_eq!(
            rule(r#"{"event_type":"order.canceled","payload":{"orderUUID":"x","cancellation":{}}}"#),
            Some(Rule::Schema)
        );
        assert_eq!(
            rule(r#"{"event_type":"order.pickup_code_created","payload":{"orderUUID":"x","code":"1"}}"#),
            Some(Rule::Schema)
        );
        assert_eq!(
            rule(r#"{"event_type":"order.estimated_delivery_time","payload":{"orderUUID":"x"}}"#),
            Some(Rule::Schema)
        );
        assert_eq!(
            rule(
                r#"{"event_type":"order.ready_for_delivery","payload":{"orderUUID":"x","positions":[{"id":"1","quantity":1,"totalPrice":1.5}],"total":{"totalPrice":"1.50","discountTotalPrice":"1.50"}}}"#
            ),
            Some(Rule::Schema)
        );
    }

    #[test]
    fn peeks_at_what_it_can() {
        let (event, ids) = peek(br#"{"event":{"type":"order.nope","payload":{"order_id":"H1"}}}"#);
        assert_eq!(event.as_deref(), Some("order.nope"));
        assert_eq!(ids.original_order_id.as_deref(), Some("H1"));
        assert_eq!(peek(b"garbage"), (None, OrderIds::default()));
    }

    #[test]
    fn the_fixture_composition_adds_up() {
        let n = parse(
            serde_json::from_str(include_str!("../../../fixtures/notifications/brief.order.ready_for_delivery.json"))
                .unwrap_or_default(),
        );
        let Composition::Brief { lines, total: Some(total) } = &n.composition else { panic!("composition expected") };
        let result = check_composition(&fixture_order(), lines, total, "payload.positions");
        assert_eq!(result, Ok(Totals { total_price: d("309.51"), discount_total_price: d("304.51") }));
    }

    fn line(id: &str, quantity: i64, weight: Option<i64>, total: &str) -> Line {
        Line {
            id: id.to_owned(),
            quantity: Some(Decimal::from(quantity)),
            weight_g: weight.map(Decimal::from),
            total_price: Some(d(total)),
            ..Line::default()
        }
    }

    #[test]
    fn composition_mismatches_are_named() {
        let order = fixture_order();
        let totals =
            |full: &str, discounted: &str| Totals { total_price: d(full), discount_total_price: d(discounted) };
        // A line whose totalPrice was computed with `price` instead of `discountPrice`.
        let lines = vec![line("SKU-100245", 1, None, "94.99")];
        let err = check_composition(&order, &lines, &totals("94.99", "94.99"), "p").err();
        assert_eq!(err.as_ref().map(|e| e.rule), Some(Rule::TotalsMismatch));
        assert!(err.is_some_and(|e| e.message.contains("89.99")));
        // Lines right, grand total wrong.
        let lines = vec![line("SKU-100245", 1, None, "89.99")];
        let err = check_composition(&order, &lines, &totals("94.99", "90.00"), "p").err();
        assert_eq!(err.map(|e| e.field), Some(Some("payload.total.discountTotalPrice".to_owned())));
        let err = check_composition(&order, &lines, &totals("89.99", "89.99"), "p").err();
        assert_eq!(err.map(|e| e.field), Some(Some("payload.total.totalPrice".to_owned())));
        // Weighed: 189.00 × 1135 / 1000 = 214.515 → 214.52; 214.51 is wrong.
        let lines = vec![line("SKU-550071", 1, Some(1135), "214.51")];
        let err = check_composition(&order, &lines, &totals("214.51", "214.51"), "p").err();
        assert_eq!(err.map(|e| e.rule), Some(Rule::TotalsMismatch));
        // A stranger.
        let lines = vec![line("SKU-000000", 1, None, "1.00")];
        let err = check_composition(&order, &lines, &totals("1.00", "1.00"), "p").err();
        assert_eq!(err.map(|e| e.rule), Some(Rule::UnknownPosition));
    }

    #[test]
    fn replacements_carry_their_own_prices() {
        let order = fixture_order();
        let mut replaced = line("SKU-100245", 0, None, "0.00");
        replaced.replaced_by = Some("SKU-100246".to_owned());
        let mut replacement = line("SKU-100246", 2, None, "180.00");
        replacement.price = Some(d("95.00"));
        replacement.discount_price = Some(d("90.00"));
        let lines = vec![replaced.clone(), replacement.clone()];
        let ok = check_composition(
            &order,
            &lines,
            &Totals { total_price: d("190.00"), discount_total_price: d("180.00") },
            "p",
        );
        assert!(ok.is_ok(), "{ok:?}");
        replacement.price = None;
        let lines = vec![replaced, replacement];
        let err = check_composition(
            &order,
            &lines,
            &Totals { total_price: d("190.00"), discount_total_price: d("180.00") },
            "p",
        )
        .err();
        assert_eq!(err.map(|e| e.rule), Some(Rule::ReplacementPriceRequired));
    }

    #[test]
    fn restaurant_lines_may_include_modifiers() {
        let mut pizza = piece("PIZZA", "590.00", "590.00", 1);
        pizza.modifiers_per_unit = d("50.00");
        let order = vec![pizza];
        for amount in ["590.00", "640.00"] {
            let lines = vec![line("PIZZA", 1, None, amount)];
            let totals = Totals { total_price: d(amount), discount_total_price: d(amount) };
            assert!(check_composition(&order, &lines, &totals, "p").is_ok(), "{amount}");
        }
    }

    fn brief(event: &str, extra: Value) -> Notification {
        let mut payload = json!({"orderUUID": "sim:1", "number": "M-1"});
        if let (Some(p), Value::Object(extra)) = (payload.as_object_mut(), extra) {
            p.extend(extra);
        }
        parse(json!({"event_type": event, "payload": payload}))
    }

    fn ready_body() -> Value {
        json!({
            "positions": [{"id": "SKU-100245", "quantity": 2, "price": "94.99", "discountPrice": "89.99", "totalPrice": "179.98", "weight": ""}],
            "total": {"totalPrice": "189.98", "discountTotalPrice": "179.98"}
        })
    }

    #[test]
    fn ready_for_delivery_needs_in_work() {
        let order = fixture_order();
        let n = brief("order.ready_for_delivery", ready_body());
        let f = facts(Scheme::A, KuperState::Ready, &[], &order);
        let result = validate(Profile::Brief, RepeatPolicy::Reject422, &f, &n);
        assert_eq!(rule_of(result), Some(Rule::OrderOfEvents));
        let done = [EventKind::InWork];
        let f = facts(Scheme::A, KuperState::Collecting, &done, &order);
        let result = validate(Profile::Brief, RepeatPolicy::Reject422, &f, &n);
        assert!(matches!(result, Ok(Outcome::Apply { state: KuperState::ReadyToShip, totals: Some(_) })));
    }

    #[test]
    fn repeats_are_422_or_202() {
        let order = fixture_order();
        let done = [EventKind::InWork];
        let f = facts(Scheme::A, KuperState::Collecting, &done, &order);
        let n = brief("order.in_work", json!({}));
        let err = validate(Profile::Brief, RepeatPolicy::Reject422, &f, &n).err();
        assert_eq!(err.as_ref().map(|e| e.rule), Some(Rule::Repeat));
        assert!(err.is_some_and(|e| e.message.contains("already") && e.status == 422));
        assert_eq!(validate(Profile::Brief, RepeatPolicy::Accept202, &f, &n), Ok(Outcome::Repeat));
    }

    #[test]
    fn integration_types_forbid_events() {
        use EventKind::*;
        assert_eq!(check_integration(Scheme::A, false, Delivering).err().map(|e| e.status), Some(405));
        for kind in [Delivering, Delivered, EstimatedDeliveryTime, PickupCodeCreated] {
            assert!(check_integration(Scheme::A, false, kind).is_err());
        }
        for kind in [Delivering, EstimatedDeliveryTime] {
            assert!(check_integration(Scheme::B, false, kind).is_err());
        }
        assert!(check_integration(Scheme::B, false, Delivered).is_ok());
        assert!(check_integration(Scheme::C, false, PickupCodeCreated).is_err());
        assert!(check_integration(Scheme::C, false, Delivering).is_ok());
        assert_eq!(check_integration(Scheme::A, false, Accepted).err().map(|e| e.rule), Some(Rule::NotRestaurant));
        assert!(check_integration(Scheme::A, true, Accepted).is_ok());
    }

    #[test]
    fn nothing_after_final_states() {
        let order = fixture_order();
        let done = [EventKind::InWork, EventKind::Canceled];
        let f = facts(Scheme::A, KuperState::Canceled, &done, &order);
        let n = brief("order.assembled", json!({}));
        let result = validate(Profile::Brief, RepeatPolicy::Reject422, &f, &n);
        assert_eq!(rule_of(result), Some(Rule::AfterFinal));
        // A retried cancellation is a repeat, not an error of order.
        let n = brief("order.canceled", json!({"cancellation": {"slug": "out_of_stock"}}));
        let result = validate(Profile::Brief, RepeatPolicy::Accept202, &f, &n);
        assert_eq!(result, Ok(Outcome::Repeat));
    }

    #[test]
    fn restaurants_accept_before_in_work() {
        let order = fixture_order();
        let mut f = facts(Scheme::A, KuperState::Ready, &[], &order);
        f.restaurant = true;
        let n = brief("order.in_work", json!({}));
        let result = validate(Profile::Brief, RepeatPolicy::Reject422, &f, &n);
        assert_eq!(rule_of(result), Some(Rule::OrderOfEvents));
        let done = [EventKind::Accepted];
        f.done = &done;
        assert!(validate(Profile::Brief, RepeatPolicy::Reject422, &f, &n).is_ok());
        let done = [EventKind::Accepted, EventKind::InWork];
        f.done = &done;
        let n = brief("order.accepted", json!({}));
        // Repeat wins over order: accepted is already done.
        let result = validate(Profile::Brief, RepeatPolicy::Reject422, &f, &n);
        assert_eq!(rule_of(result), Some(Rule::Repeat));
    }

    #[test]
    fn pickup_code_order_depends_on_profile() {
        use EventKind::*;
        let order = fixture_order();
        let before_ready = [InWork];
        let after_ready = [InWork, ReadyForDelivery];
        let f1 = facts(Scheme::B, KuperState::Collecting, &before_ready, &order);
        let f2 = facts(Scheme::B, KuperState::ReadyToShip, &after_ready, &order);
        assert!(check_order_of_events(Profile::Brief, &f1, PickupCodeCreated).is_err());
        assert!(check_order_of_events(Profile::Brief, &f2, PickupCodeCreated).is_ok());
        assert!(check_order_of_events(Profile::V3, &f1, PickupCodeCreated).is_ok());
        assert!(check_order_of_events(Profile::V3, &f2, PickupCodeCreated).is_err());
        let none: [EventKind; 0] = [];
        let f0 = facts(Scheme::B, KuperState::Ready, &none, &order);
        assert!(check_order_of_events(Profile::V3, &f0, PickupCodeCreated).is_err());
        // Delivered (B) needs the code as well as ready_for_delivery.
        assert!(check_order_of_events(Profile::Brief, &f2, Delivered).is_err());
        let all = [InWork, ReadyForDelivery, PickupCodeCreated];
        let f3 = facts(Scheme::B, KuperState::ReadyToShip, &all, &order);
        assert!(check_order_of_events(Profile::Brief, &f3, Delivered).is_ok());
    }

    #[test]
    fn merchant_delivery_order() {
        use EventKind::*;
        let order = fixture_order();
        let ready = [InWork, ReadyForDelivery];
        let f = facts(Scheme::C, KuperState::ReadyToShip, &ready, &order);
        assert!(check_order_of_events(Profile::Brief, &f, Delivered).is_err());
        assert!(check_order_of_events(Profile::Brief, &f, Delivering).is_ok());
        assert!(check_order_of_events(Profile::Brief, &f, EstimatedDeliveryTime).is_ok());
        let early = [InWork];
        let f = facts(Scheme::C, KuperState::Collecting, &early, &order);
        assert!(check_order_of_events(Profile::Brief, &f, Delivering).is_err());
        assert!(check_order_of_events(Profile::Brief, &f, EstimatedDeliveryTime).is_err());
    }

    #[test]
    fn cancel_only_before_handover() {
        let order = fixture_order();
        let done = [EventKind::InWork, EventKind::ReadyForDelivery];
        let f = facts(Scheme::A, KuperState::Shipping, &done, &order);
        assert!(check_order_of_events(Profile::Brief, &f, EventKind::Canceled).is_err());
        let f = facts(Scheme::C, KuperState::Shipping, &done, &order);
        assert!(check_order_of_events(Profile::Brief, &f, EventKind::Canceled).is_ok());
    }

    #[test]
    fn composition_is_required() {
        let order = fixture_order();
        let done = [EventKind::InWork];
        let f = facts(Scheme::A, KuperState::Collecting, &done, &order);
        let n = brief("order.ready_for_delivery", json!({}));
        let result = validate(Profile::Brief, RepeatPolicy::Reject422, &f, &n);
        assert_eq!(rule_of(result), Some(Rule::CompositionRequired));
        let n = brief(
            "order.ready_for_delivery",
            json!({"positions": [], "total": {"totalPrice": "0.00", "discountTotalPrice": "0.00"}}),
        );
        let result = validate(Profile::Brief, RepeatPolicy::Reject422, &f, &n);
        assert_eq!(rule_of(result), Some(Rule::CompositionRequired));
        let n = parse(json!({"event": {"type": "order.ready_for_delivery", "payload": {"order_id": "H1"}}}));
        let result = validate(Profile::Brief, RepeatPolicy::Reject422, &f, &n);
        assert_eq!(rule_of(result), Some(Rule::CompositionRequired));
        let n = parse(
            json!({"event": {"type": "order.ready_for_delivery", "payload": {"order_id": "H1", "order": {"changed": false}}}}),
        );
        assert!(validate(Profile::Brief, RepeatPolicy::Reject422, &f, &n).is_ok());
    }

    #[test]
    fn event_format_positions_must_be_known() {
        let order = fixture_order();
        let done = [EventKind::InWork];
        let f = facts(Scheme::A, KuperState::Collecting, &done, &order);
        let n = parse(
            json!({"event": {"type": "order.ready_for_delivery", "payload": {"order_id": "H1", "order": {"positions": [{"id": "NOPE", "quantity": 1}]}}}}),
        );
        let result = validate(Profile::Brief, RepeatPolicy::Reject422, &f, &n);
        assert_eq!(rule_of(result), Some(Rule::UnknownPosition));
    }

    #[test]
    fn checks_the_answer_to_order_created() {
        let good = json!({"status": "created", "number": "M-1", "expectedAssemblyTime": "2026-03-14T10:32:11+03:00"});
        let check = check_created_answer(Some(200), &good);
        assert!(check.ok);
        assert_eq!(check.number.as_deref(), Some("M-1"));
        let bad = json!({"status": "created", "number": 17, "expectedAssemblyTime": "2026-03-14T10:32:11"});
        let check = check_created_answer(Some(200), &bad);
        assert!(!check.ok);
        assert_eq!(check.problems.len(), 2);
        assert_eq!(check.number.as_deref(), Some("17"));
        assert!(!check_created_answer(Some(500), &good).ok);
    }
}

//! The order page (`/ui/orders/{ref}`): everything about one order, its allowed actions as
//! buttons, its timeline and its state diagram.
//!
//! Actions go through `api::apply_action`, the one way an action is applied (REST and the
//! command line call it too): the form is turned into the JSON body the REST API takes, so
//! the body checks, the rules and the audit entry are the same whichever way an action comes.
//! The buttons offered are the engine's `allowed_actions`, narrowed by what the operator's
//! role may do; the POST checks the role again and the engine checks the rules again.

use super::diagram::{state_diagram_svg, visited_states};
use super::i18n::{scheme_name, state_name, tr, Lang};
use super::words::{detail_line, event_label, outcome_badge};
use super::{
    csrf_field, flash, now_ms, page, path_segment, query_string, time, time_left, Capability, CsrfForm, FlashKind, Nav,
    UiError, Viewer,
};
use crate::api::{self, ActionAnswer};
use crate::auth::redact_headers;
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use kuper_bridge_domain::deadlines::deadlines_at;
use kuper_bridge_domain::engine::allowed_actions;
use kuper_bridge_domain::{
    ActionKind, Composition, DeadlineKind, DeadlineStage, KuperState, Order, PaymentState, Scheme,
};
use kuper_bridge_storage::{Actor, EventRecord, Exchange, StoredOrder};
use kuper_bridge_wire::decimal::money_string;
use kuper_bridge_wire::NotificationEvent;
use maud::{html, Markup, PreEscaped};
use serde_json::{json, Map, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/orders/{reference}", get(order_page))
        .route("/ui/orders/{reference}/action/{slug}", post(order_action))
}

/// A one-shot confirmation carried across a redirect in a short-lived cookie, so the page
/// after a POST keeps its own URL (no `?done=` to bookmark or to re-show on reload). The value
/// is a token of our own making, never text from a form or from Kuper.
pub const FLASH_COOKIE: &str = "kb_flash";

/// A 303 to `to` that shows `token`'s confirmation there.
pub fn redirect_with_flash(to: &str, token: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    let token: String =
        token.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.')).take(100).collect();
    let cookie = format!("{FLASH_COOKIE}={token}; Path=/ui; Max-Age=60; HttpOnly; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// The confirmation waiting for this request, when it starts with `prefix` (each page takes
/// only its own).
pub fn pending_flash<'a>(headers: &'a HeaderMap, prefix: &str) -> Option<&'a str> {
    super::session::cookie(headers, FLASH_COOKIE).and_then(|v| v.strip_prefix(prefix))
}

/// A page with the confirmation it showed, which is then forgotten.
pub fn shown_flash(markup: Markup) -> Response {
    let mut response = markup.into_response();
    let cookie = format!("{FLASH_COOKIE}=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// A form as sent: name/value pairs in order (the composition rows are numbered fields).
pub struct FormFields(pub Vec<(String, String)>);

impl FormFields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A field's value trimmed; `None` when absent or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
    }
}

/// What the page says above everything else after a POST.
pub enum Notice<'a> {
    None,
    Done(ActionKind),
    Refused(&'a ApiError),
}

async fn load(state: &AppState, reference: &str) -> Result<StoredOrder, UiError> {
    state.store.find_order(reference.trim()).await?.ok_or_else(|| {
        UiError::new(
            StatusCode::NOT_FOUND,
            "Заказ не найден. Проверьте номер: подходит номер Kuper, orderUUID или наш номер.",
            "Order not found. Check the number: Kuper's id, the orderUUID or our number.",
        )
    })
}

async fn order_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(reference): Path<String>,
    headers: HeaderMap,
) -> Result<Response, UiError> {
    let order = load(&state, &reference).await?;
    let events = state.store.order_events(order.id).await?;
    Ok(match pending_flash(&headers, "action:").and_then(ActionKind::parse) {
        Some(kind) => shown_flash(render(&state, &viewer, &reference, &order, &events, Notice::Done(kind), None)),
        None => render(&state, &viewer, &reference, &order, &events, Notice::None, None).into_response(),
    })
}

/// Whether the viewer's role may take this action on this order: a desk hands pickup orders
/// over (and verifies codes, on the desk's own form); operators and admins do everything.
pub fn may_act(viewer: &Viewer, order: &Order, kind: ActionKind) -> bool {
    viewer.can(Capability::OrderActions)
        || (kind == ActionKind::Delivered && order.scheme == Scheme::Pickup && viewer.can(Capability::PickupDesk))
}

/// Whether an operator may hand this pickup order over without a verified code (with a
/// written reason): the code was sent, so Kuper takes `delivered`, but not verified.
pub fn override_possible(viewer: &Viewer, order: &Order) -> bool {
    viewer.can(Capability::OrderActions)
        && order.scheme == Scheme::Pickup
        && order.state() == kuper_bridge_domain::OrderState::Ready
        && order.has_notified(NotificationEvent::PickupCodeCreated)
        && !order.pickup.as_ref().is_some_and(|p| p.verified)
}

async fn order_action(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path((reference, slug)): Path<(String, String)>,
    CsrfForm(pairs): CsrfForm<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let kind = ActionKind::parse(&slug).ok_or_else(UiError::not_found)?;
    let form = FormFields(pairs);
    let order = load(&state, &reference).await?;
    let overriding = kind == ActionKind::Delivered && form.text("override_reason").is_some();
    if !may_act(&viewer, &order.order, kind) || (overriding && !viewer.can(Capability::OrderActions)) {
        return Err(UiError::forbidden());
    }
    let body = action_body(kind, &order.order, &form);
    let path = format!("/ui/orders/{}/action/{}", path_segment(&reference), kind.as_str());
    match run_action(&state, &viewer, &headers, &reference, kind, &body, path).await {
        Ok(_) => {
            let to = format!("/ui/orders/{}", path_segment(&reference));
            Ok(redirect_with_flash(&to, &format!("action:{}", kind.as_str())))
        }
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE || e.status == StatusCode::NOT_FOUND => Err(e.into()),
        Err(e) => {
            // The order as it is now (another operator may have moved it meanwhile).
            let order = load(&state, &reference).await?;
            let events = state.store.order_events(order.id).await?;
            let status = e.status;
            let page = render(&state, &viewer, &reference, &order, &events, Notice::Refused(&e), Some((kind, &form)));
            Ok((status, page).into_response())
        }
    }
}

/// Applies an action for a console operator: the same call as `POST /api/v1/orders/{ref}/{action}`,
/// with the operator named as its actor.
pub async fn run_action(
    state: &AppState,
    viewer: &Viewer,
    headers: &HeaderMap,
    reference: &str,
    kind: ActionKind,
    body: &Value,
    path: String,
) -> Result<ActionAnswer, ApiError> {
    let exchange = Exchange {
        kind: "action".into(),
        direction: "console".into(),
        method: Some("POST".into()),
        path: Some(path),
        headers: Some(redact_headers(headers)),
        request_id: Some(crate::request_id(headers)),
        actor: Some(Actor::Operator(viewer.operator.name.clone())),
        ..Default::default()
    };
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let answer = api::apply_action(
        state.store.as_ref(),
        &state.policy,
        reference.trim(),
        kind,
        Some("application/json"),
        &bytes,
        exchange,
        None,
    )
    .await?;
    tracing::info!(order_id = answer.order_id, action = kind.as_str(), operator = %viewer.operator.name, state = %answer.state, "console action");
    Ok(answer)
}

/// The REST body of an action from its form. Whatever is odd in it (a malformed time, a
/// letter for a quantity) is passed on for the API to explain, as it would to a store system.
pub fn action_body(kind: ActionKind, order: &Order, form: &FormFields) -> Value {
    let mut body = Map::new();
    match kind {
        ActionKind::Accept => {
            if let Some(t) = form.text("expected_assembly_time") {
                body.insert("expectedAssemblyTime".into(), json!(local_to_rfc3339(&t)));
            }
        }
        ActionKind::Ready | ActionKind::Delivered => {
            if let Some(positions) = collected_positions(kind, order, form) {
                body.insert("positions".into(), positions);
            }
            if kind == ActionKind::Delivered {
                if let Some(reason) = form.text("override_reason") {
                    body.insert("overrideReason".into(), json!(reason));
                }
            }
        }
        ActionKind::Cancel => {
            body.insert("reason".into(), json!(form.text("reason").unwrap_or_default()));
            if let Some(d) = form.text("description") {
                body.insert("description".into(), json!(d));
            }
        }
        ActionKind::EstimatedDeliveryTime => {
            if let Some(t) = form.text("at") {
                body.insert("at".into(), json!(local_to_rfc3339(&t)));
            }
        }
        ActionKind::PickupCode => {
            if let Some(code) = form.text("code") {
                body.insert("code".into(), json!(code));
            }
        }
        ActionKind::StartAssembly | ActionKind::Assembled | ActionKind::Delivering => {}
    }
    Value::Object(body)
}

/// A `datetime-local` value ("2026-03-14T12:30") in the console's display zone as RFC 3339
/// with that zone's offset. Anything else is returned as typed (the API explains the format).
pub fn local_to_rfc3339(value: &str) -> String {
    let value = value.trim();
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(value, format) {
            let offset = super::clock::display_offset();
            if let chrono::LocalResult::Single(t) = naive.and_local_timezone(offset) {
                return t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
            }
        }
    }
    value.to_string()
}

/// One editable line of a collected composition.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    pub name: Option<String>,
    pub quantity: String,
    /// Grams; `None` for piece goods.
    pub weight: Option<String>,
    pub replaced_by: Option<String>,
    pub marking_codes: Vec<String>,
}

/// The rows a `ready` form starts from (as ordered) or a `delivered` form (as made ready).
pub fn composition_rows(kind: ActionKind, order: &Order) -> Vec<Row> {
    let name_of = |id: &str| order.ordered.positions.iter().find(|p| p.id == id).and_then(|p| p.name.clone());
    match (&order.ready_composition, kind) {
        (Some(ready), ActionKind::Delivered) => ready
            .lines
            .iter()
            .map(|l| Row {
                id: l.id.clone(),
                name: name_of(&l.id),
                quantity: l.quantity.normalize().to_string(),
                weight: l.weight.map(|w| w.normalize().to_string()),
                replaced_by: l.replaced_by_id.clone(),
                marking_codes: l.marking_codes.clone(),
            })
            .collect(),
        _ => order
            .ordered
            .positions
            .iter()
            .map(|p| Row {
                id: p.id.clone(),
                name: p.name.clone(),
                quantity: p.quantity.normalize().to_string(),
                weight: p.weight.map(|w| w.normalize().to_string()),
                replaced_by: None,
                marking_codes: Vec::new(),
            })
            .collect(),
    }
}

/// A number as typed at a Russian keyboard ("1,5") as the API reads it ("1.5").
fn decimal_text(s: &str) -> String {
    s.trim().replace(',', ".").replace(' ', "")
}

fn codes_of(text: &str) -> Vec<String> {
    text.split(['\n', '\r']).map(str::trim).filter(|c| !c.is_empty()).map(str::to_string).collect()
}

/// The `positions` of a `ready`/`delivered` body: `None` when every row is as prefilled
/// (collected as ordered, handed over as ready), so the engine uses the composition it has.
fn collected_positions(kind: ActionKind, order: &Order, form: &FormFields) -> Option<Value> {
    let rows = composition_rows(kind, order);
    let mut changed = false;
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let quantity = form.get(&format!("q_{i}")).map(decimal_text).unwrap_or_else(|| row.quantity.clone());
        let weight =
            row.weight.as_ref().map(|w| form.get(&format!("w_{i}")).map(decimal_text).unwrap_or_else(|| w.clone()));
        let codes = form.get(&format!("mc_{i}")).map(codes_of).unwrap_or_else(|| row.marking_codes.clone());
        changed |= quantity != row.quantity || weight != row.weight || codes != row.marking_codes;
        let mut line = json!({"id": row.id, "quantity": quantity});
        if let Some(w) = weight.filter(|w| !w.is_empty()) {
            line["weight"] = json!(w);
        }
        if let Some(r) = &row.replaced_by {
            line["replacedByID"] = json!(r);
        }
        if !codes.is_empty() {
            line["markingCodes"] = json!(codes);
        }
        out.push(line);
    }
    changed.then_some(Value::Array(out))
}

// ---------------------------------------------------------------------------------------
// Words

pub fn action_name(lang: Lang, kind: ActionKind, scheme: Scheme) -> &'static str {
    match kind {
        ActionKind::Accept => tr(lang, "Принять заказ", "Accept the order"),
        ActionKind::StartAssembly => tr(lang, "Начать сборку", "Start assembly"),
        ActionKind::Assembled => tr(lang, "Заказ собран", "Assembled"),
        ActionKind::Ready => tr(lang, "Заказ готов", "Ready"),
        ActionKind::PickupCode => tr(lang, "Выпустить код выдачи", "Issue the pickup code"),
        ActionKind::EstimatedDeliveryTime => tr(lang, "Сообщить время доставки", "Send the delivery time"),
        ActionKind::Delivering => tr(lang, "Передан курьеру", "Out for delivery"),
        ActionKind::Delivered if scheme == Scheme::Pickup => tr(lang, "Выдать заказ", "Hand over"),
        ActionKind::Delivered => tr(lang, "Заказ доставлен", "Delivered"),
        ActionKind::Cancel => tr(lang, "Отменить заказ", "Cancel the order"),
    }
}

fn done_message(lang: Lang, kind: ActionKind, scheme: Scheme) -> String {
    match lang {
        Lang::Ru => {
            format!("Готово: «{}». Уведомление для Kuper поставлено в очередь.", action_name(lang, kind, scheme))
        }
        Lang::En => format!("Done: “{}”. Kuper's notification is queued.", action_name(lang, kind, scheme)),
    }
}

/// Kuper's cancellation slugs (protocol.md §5) as a cashier would say them; a configured slug
/// we have no words for is shown as it is.
pub fn cancel_reason_name(lang: Lang, slug: &str) -> String {
    let name = match slug {
        "store_closed" => tr(lang, "Магазин закрыт", "Store closed"),
        "out_of_stock" => tr(lang, "Нет товара в наличии", "Out of stock"),
        "technical_issues" => tr(lang, "Технические проблемы", "Technical issues"),
        "order_not_paid" => tr(lang, "Заказ не оплачен", "Not paid"),
        "customer_request" => tr(lang, "По просьбе покупателя", "Customer's request"),
        other => return other.to_string(),
    };
    name.to_string()
}

fn kuper_state_name(lang: Lang, s: KuperState) -> &'static str {
    match s {
        KuperState::Ready => tr(lang, "новый, ждёт магазин", "new, waiting for the store"),
        KuperState::Collecting => tr(lang, "собирается", "collecting"),
        KuperState::Assembled => tr(lang, "собран", "assembled"),
        KuperState::ReadyToShip => tr(lang, "готов к передаче", "ready to ship"),
        KuperState::Shipping => tr(lang, "в доставке", "shipping"),
        KuperState::Shipped => tr(lang, "доставлен", "shipped"),
        KuperState::Canceled => tr(lang, "отменён", "canceled"),
    }
}

fn payment_name(lang: Lang, p: PaymentState) -> &'static str {
    match p {
        PaymentState::NotPaid => tr(lang, "не оплачен", "not paid"),
        PaymentState::Paid => tr(lang, "оплачен", "paid"),
    }
}

fn deadline_name(lang: Lang, kind: DeadlineKind) -> &'static str {
    match kind {
        DeadlineKind::RestaurantAccept => tr(lang, "Принять заказ ресторана", "Accept the restaurant order"),
        DeadlineKind::Assembly => tr(lang, "Собрать к обещанному времени", "Assemble by the promised time"),
        DeadlineKind::DeliveryWindow => {
            tr(lang, "Отдать до конца окна доставки", "Hand over within the delivery window")
        }
    }
}

fn stage_name(lang: Lang, stage: DeadlineStage) -> &'static str {
    match stage {
        DeadlineStage::Pending => tr(lang, "в срок", "on time"),
        DeadlineStage::Warning => tr(lang, "срок на исходе", "close"),
        DeadlineStage::Missed => tr(lang, "просрочен", "missed"),
    }
}

/// What a timeline entry is, in words.
pub fn event_kind_name(lang: Lang, kind: &str) -> String {
    let name = match kind {
        "webhook" => tr(lang, "Событие от Kuper", "Webhook from Kuper"),
        "action" => tr(lang, "Действие", "Action"),
        "notification" => tr(lang, "Уведомление в Kuper", "Notification to Kuper"),
        "forward" => tr(lang, "Пересылка подписчику", "Forward to a subscriber"),
        "pickup_verification" => tr(lang, "Проверка кода выдачи", "Pickup code check"),
        "operator" => tr(lang, "Решение оператора", "Operator's decision"),
        "deadline" => tr(lang, "Срок", "Deadline"),
        "reconciliation" => tr(lang, "Сверка с Kuper", "Reconciliation"),
        "outbox" => tr(lang, "Очередь уведомлений", "Outbox"),
        "acceptance_hook" => tr(lang, "Проверка приёма заказа", "Acceptance hook"),
        other => return other.to_string(),
    };
    name.to_string()
}

/// Who did it, in words: "оператор anna", "API-ключ erp", "командная строка".
pub fn actor_name(lang: Lang, actor: &Actor) -> String {
    match actor {
        Actor::Operator(name) => format!("{} {name}", tr(lang, "оператор", "operator")),
        Actor::ApiKey(name) => format!("{} {name}", tr(lang, "API-ключ", "API key")),
        Actor::Cli => tr(lang, "командная строка", "command line").to_string(),
    }
}

/// The engine's reasons (rules.rs `guard_reason`, engine.rs) in Russian; anything else as is.
fn reason_words(lang: Lang, reason: &str) -> String {
    if lang == Lang::En {
        return reason.to_string();
    }
    let known = [
        ("the pickup code was already sent", "код выдачи уже отправлен"),
        ("send the pickup code first", "сначала выпустите код выдачи"),
        (
            "the customer's pickup code has not been verified",
            "код покупателя ещё не проверен: проверьте код или выдайте с письменной причиной",
        ),
        ("the estimated delivery time was already sent", "время доставки уже сообщено"),
        ("send assembled first", "сначала отметьте, что заказ собран"),
        ("only restaurant orders are accepted", "принимают только заказы ресторанов, этот сразу собирают"),
        ("not part of scheme", "в схеме этого заказа такого шага нет"),
    ];
    known
        .iter()
        .find(|(en, _)| reason.starts_with(en))
        .map(|(_, ru)| ru.to_string())
        .unwrap_or_else(|| reason.to_string())
}

/// A refused action in plain words: which action, in which state, why, what is possible.
pub fn refusal_words(lang: Lang, e: &ApiError, scheme: Scheme) -> String {
    let d = &e.details;
    match e.code {
        "invalid_transition" => {
            let action = d["action"].as_str().and_then(ActionKind::parse);
            let action = action.map(|a| action_name(lang, a, scheme)).unwrap_or("?");
            let state = d["state"].as_str().and_then(kuper_bridge_domain::OrderState::parse);
            let state_words = state.map(|s| state_name(lang, s)).unwrap_or("?");
            let reason = d["reason"].as_str().map(|r| reason_words(lang, r));
            let allowed: Vec<&str> = d["allowed"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .filter_map(ActionKind::parse)
                        .map(|k| action_name(lang, k, scheme))
                        .collect()
                })
                .unwrap_or_default();
            let next = match (allowed.is_empty(), state.is_some_and(|s| s.is_final())) {
                (true, true) => {
                    tr(lang, "Заказ завершён, действий больше нет.", "The order is final; nothing more to do.")
                        .to_string()
                }
                (true, false) => tr(
                    lang,
                    "Сейчас шаг за Kuper, от магазина ничего не нужно.",
                    "Kuper completes this stage; nothing is needed from the store now.",
                )
                .to_string(),
                (false, _) => {
                    let list = allowed.iter().map(|a| format!("«{a}»")).collect::<Vec<_>>().join(", ");
                    format!("{} {list}.", tr(lang, "Сейчас можно:", "Possible now:"))
                }
            };
            match (lang, reason) {
                (Lang::Ru, Some(r)) => {
                    format!("«{action}» сейчас нельзя: заказ в статусе «{state_words}», {r}. {next}")
                }
                (Lang::Ru, None) => format!("«{action}» нельзя в статусе «{state_words}». {next}"),
                (Lang::En, Some(r)) => {
                    format!("“{action}” is not possible now: the order is “{state_words}” ({r}). {next}")
                }
                (Lang::En, None) => format!("“{action}” is not possible in state “{state_words}”. {next}"),
            }
        }
        "validation_failed" | "bad_request" => match lang {
            Lang::Ru => "Данные не подошли, исправьте и отправьте снова.".to_string(),
            Lang::En => "The data was not accepted; correct it and send again.".to_string(),
        },
        "pickup_code_locked" => tr(
            lang,
            "Слишком много неверных кодов, проверка временно заблокирована.",
            "Too many wrong codes; checking is locked for a while.",
        )
        .to_string(),
        "rate_limited" => tr(
            lang,
            "Слишком много неверных кодов подряд. Подождите минуту.",
            "Too many wrong codes in a row. Wait a minute.",
        )
        .to_string(),
        "pickup_code_in_use" => tr(
            lang,
            "Этот код уже выдан другому активному заказу магазина. Выберите другой код.",
            "This code already belongs to another active order of the store. Choose another code.",
        )
        .to_string(),
        "pickup_codes_exhausted" => tr(
            lang,
            "Свободных кодов выдачи не осталось: в магазине слишком много активных кодов. Попросите администратора увеличить длину кода.",
            "No free pickup code is left: the store has too many active codes. Ask the administrator for longer codes.",
        )
        .to_string(),
        "no_pickup_code" => tr(
            lang,
            "Для этого заказа ещё не создан код выдачи.",
            "No pickup code has been issued for this order yet.",
        )
        .to_string(),
        "order_closed" => {
            tr(lang, "Заказ уже выдан или отменён.", "The order is already delivered or canceled.").to_string()
        }
        "idempotency_key_reused" => tr(
            lang,
            "Этот запрос уже был отправлен с другими данными. Обновите страницу и повторите.",
            "This request was already sent with other data. Reload the page and try again.",
        )
        .to_string(),
        "not_dead_letter" => tr(
            lang,
            "Уведомление уже не в списке недоставленных: его повторили или пропустили.",
            "The notification is no longer a dead letter: it was replayed or skipped.",
        )
        .to_string(),
        "conflict" => tr(lang, "Это действие сейчас невозможно.", "This is not possible now.").to_string(),
        _ => UiError::from_status(e.status).message(lang).to_string(),
    }
}

/// The refusal block (`data-refusal`): plain words first, then the engine's own message.
pub fn refusal_block(lang: Lang, e: &ApiError, scheme: Scheme) -> Markup {
    html! {
        div.flash.flash-error.refusal data-refusal role="alert" data-code=(e.code) {
            p.refusal-words { (refusal_words(lang, e, scheme)) }
            p.refusal-engine { small { (tr(lang, "Ответ системы: ", "The engine says: ")) (e.message) } }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rendering

/// An amount as the cashier reads it: "496.98 ₽" (kopecks always shown, as Kuper sends them).
/// A macro because the decimal type belongs to a crate the app does not name.
macro_rules! money {
    ($amount:expr) => {
        format!("{} ₽", money_string($amount))
    };
}

fn rfc3339_time(lang: Lang, s: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(s.trim()) {
        Ok(t) => time(lang, t.timestamp_millis()),
        Err(_) => s.to_string(),
    }
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A JSON document for reading: pretty when it parses, pickup codes hidden from roles that
/// must not see them (a desk checks codes; it must not be able to read them off the page).
pub fn readable_body(raw: &str, show_codes: bool) -> String {
    match serde_json::from_str::<Value>(raw) {
        Ok(mut v) => {
            if !show_codes {
                api::redact_pickup_codes(&mut v);
            }
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| raw.to_string())
        }
        Err(_) => raw.to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn render(
    state: &AppState,
    viewer: &Viewer,
    reference: &str,
    stored: &StoredOrder,
    events: &[EventRecord],
    notice: Notice,
    submitted: Option<(ActionKind, &FormFields)>,
) -> Markup {
    let lang = viewer.lang;
    let o = &stored.order;
    let now = now_ms();
    let title = format!("{} {}", tr(lang, "Заказ", "Order"), o.display_ref());
    let allowed = allowed_actions(o, &state.policy);
    let shown: Vec<ActionKind> = allowed.iter().copied().filter(|k| may_act(viewer, o, *k)).collect();
    let visited = visited_states(o, events);
    // Built only from enums and the rules table's static names, never from order data, so it
    // is spliced as markup (an SVG cannot be built through maud's escaping of text).
    let svg = state_diagram_svg(lang, o.scheme, o.restaurant, &visited, o.state());
    let base = format!("/ui/orders/{}", path_segment(reference));
    let body = html! {
        div.order-page data-order=(o.display_ref()) {
            header.order-head {
                h1 { (title) }
                span class={ "state state-" (o.state().as_str()) } data-state=(o.state().as_str()) { (state_name(lang, o.state())) }
                span.kuper-state data-kuper-state=(o.kuper_state.as_str()) {
                    (tr(lang, "у Kuper: ", "at Kuper: ")) (kuper_state_name(lang, o.kuper_state))
                }
            }
            @match &notice {
                Notice::Done(kind) => { (flash(FlashKind::Ok, &done_message(lang, *kind, o.scheme))) }
                Notice::Refused(e) => { (refusal_block(lang, e, o.scheme)) }
                Notice::None => {}
            }
            div.order-grid {
                (summary(lang, stored, now))
                section.order-actions {
                    h2 { (tr(lang, "Действия", "Actions")) }
                    (actions(state, viewer, &base, reference, o, &shown, submitted))
                }
            }
            (compositions(lang, o))
            (deadlines(state, lang, stored, now))
            section.order-diagram {
                h2 { (tr(lang, "Схема статусов", "State diagram")) }
                p.hint { (scheme_name(lang, o.scheme)) ". " (tr(lang, "Пройденные статусы отмечены, текущий выделен; пунктир — шаги Kuper.", "Visited states are marked, the current one stands out; dashed edges are Kuper's steps.")) }
                div.diagram { (PreEscaped(svg)) }
            }
            (timeline(lang, viewer, o.scheme, events))
        }
    };
    page(viewer, &title, Nav::Orders, body)
}

fn summary(lang: Lang, stored: &StoredOrder, now: i64) -> Markup {
    let o = &stored.order;
    let customer = o.ordered.customer.as_ref();
    let field = |v: Option<&Value>, k: &str| v.and_then(|c| c.get(k)).and_then(value_text);
    let delivery = o.ordered.delivery.as_ref();
    let window = match (field(delivery, "expectedFrom"), field(delivery, "expectedTo")) {
        (Some(f), Some(t)) => Some(format!("{} — {}", rfc3339_time(lang, &f), rfc3339_time(lang, &t))),
        _ => None,
    };
    let address = o.ordered.address.as_ref().map(|a| address_words(lang, a)).unwrap_or_default();
    html! {
        section.order-summary {
            h2 { (tr(lang, "Заказ", "Order")) }
            dl.facts {
                dt { (tr(lang, "Номер Kuper", "Kuper id")) } dd data-field="originalOrderId" { (o.original_order_id.as_deref().unwrap_or("—")) }
                dt { "orderUUID" } dd data-field="orderUUID" { (o.order_uuid.as_deref().unwrap_or("—")) }
                dt { (tr(lang, "Наш номер", "Our number")) } dd data-field="number" { (o.number) }
                dt { (tr(lang, "Схема", "Scheme")) } dd data-field="scheme" data-scheme=(o.scheme.as_str()) {
                    (scheme_name(lang, o.scheme))
                    @if o.restaurant { ", " (tr(lang, "ресторан", "restaurant")) }
                }
                dt { (tr(lang, "Магазин", "Store")) } dd data-field="store" { (o.store_id) }
                dt { (tr(lang, "Статус", "State")) } dd title=(o.state().as_str()) { (state_name(lang, o.state())) }
                dt { (tr(lang, "Статус у Kuper", "Kuper's state")) } dd title=(o.kuper_state.as_str()) { (kuper_state_name(lang, o.kuper_state)) }
                dt { (tr(lang, "Оплата", "Payment")) } dd data-field="payment" data-payment=(o.payment_state.as_str()) {
                    (payment_name(lang, o.payment_state))
                    @if !o.ordered.payment_methods.is_empty() { " · " (o.ordered.payment_methods.join(", ")) }
                }
                dt { (tr(lang, "Создан", "Created")) } dd { (time(lang, stored.created_at)) }
                dt { (tr(lang, "Изменён", "Updated")) } dd { (time(lang, stored.updated_at)) " (" (time_left(lang, stored.updated_at, now)) ")" }
                dt { (tr(lang, "Собрать к", "Assemble by")) } dd { (rfc3339_time(lang, &o.expected_assembly_time)) }
                @if let Some(w) = window { dt { (tr(lang, "Окно доставки", "Delivery window")) } dd { (w) } }
                @if let Some(eta) = &o.estimated_delivery_time { dt { (tr(lang, "Время доставки", "Delivery time")) } dd { (rfc3339_time(lang, eta)) } }
                dt { (tr(lang, "Покупатель", "Customer")) } dd data-field="customer" {
                    (field(customer, "name").unwrap_or_else(|| "—".into()))
                    @if let Some(phone) = field(customer, "phone") { " · " (phone) }
                }
                @if !address.is_empty() {
                    dt { (tr(lang, "Адрес", "Address")) } dd data-field="address" {
                        (address.join(", "))
                    }
                }
                @if let Some(comment) = &o.ordered.comment {
                    dt { (tr(lang, "Комментарий", "Comment")) } dd.comment data-field="comment" { (comment) }
                }
                @if let Some(courier) = &o.courier {
                    dt { (tr(lang, "Курьер", "Courier")) } dd {
                        (field(Some(courier), "name").unwrap_or_else(|| "—".into()))
                        @if let Some(p) = field(Some(courier), "phone") { " · " (p) }
                        @if o.courier_arrived { " · " (tr(lang, "прибыл", "arrived")) }
                    }
                }
                @if o.scheme == Scheme::Pickup {
                    dt { (tr(lang, "Код выдачи", "Pickup code")) } dd data-field="pickup" {
                        @match &o.pickup {
                            None => { (tr(lang, "не выпущен", "not issued")) }
                            Some(p) => {
                                @if p.verified { (tr(lang, "выпущен, проверен", "issued, verified")) }
                                @else { (tr(lang, "выпущен, не проверен", "issued, not verified")) }
                                @if p.failed_attempts > 0 { " · " (tr(lang, "неверных попыток: ", "wrong attempts: ")) (p.failed_attempts) }
                                @if let Some(until) = p.locked_until.filter(|u| u.saturating_mul(1000) > now) {
                                    " · " (tr(lang, "заблокирован до ", "locked until ")) (time(lang, until.saturating_mul(1000)))
                                }
                            }
                        }
                    }
                }
                @if let Some(reason) = &o.handover_override {
                    dt { (tr(lang, "Выдан без кода", "Handed over without code")) } dd data-field="override" { (reason) }
                }
                @if let Some(c) = &o.cancellation() {
                    dt { (tr(lang, "Отмена", "Cancellation")) } dd data-field="cancellation" {
                        (match c.by { kuper_bridge_domain::order::CanceledBy::Kuper => tr(lang, "отменил Kuper", "by Kuper"), kuper_bridge_domain::order::CanceledBy::Merchant => tr(lang, "отменил магазин", "by the store") })
                        ": " (cancel_reason_name(lang, &c.slug))
                        @if !c.description.is_empty() { " — " (c.description) }
                    }
                }
                @if !o.anomalies.is_empty() {
                    dt { (tr(lang, "Странные события", "Anomalies")) } dd { ul.anomalies { @for a in &o.anomalies { li { (a) } } } }
                }
            }
        }
    }
}

/// Kuper's delivery address (protocol.md §3) as a courier would read it: the full address,
/// then the flat, entrance, floor and intercom in words. Coordinates and the keys this list
/// does not know are left out (the raw webhook in the timeline still has them).
fn address_words(lang: Lang, address: &Value) -> Vec<String> {
    let text = |k: &str| address.get(k).and_then(value_text).filter(|t| !t.trim().is_empty());
    let mut out = Vec::new();
    match text("full_address") {
        Some(full) => out.push(full),
        None => {
            let parts: Vec<String> = ["city", "street", "building"].into_iter().filter_map(text).collect();
            if !parts.is_empty() {
                out.push(parts.join(", "));
            }
        }
    }
    for (key, ru, en) in [
        ("apartment", "кв.", "flat"),
        ("entrance", "подъезд", "entrance"),
        ("floor", "этаж", "floor"),
        ("door_phone", "домофон", "intercom"),
    ] {
        if let Some(v) = text(key) {
            out.push(format!("{} {v}", tr(lang, ru, en)));
        }
    }
    if address.get("delivery_to_door").and_then(Value::as_bool) == Some(true) {
        out.push(tr(lang, "до двери", "to the door").to_string());
    }
    if let Some(comment) = text("comment") {
        out.push(comment);
    }
    out
}

/// A submit button for an action (the contract's `data-action="<slug>"`).
fn action_button(lang: Lang, kind: ActionKind, scheme: Scheme) -> Markup {
    let class = if kind == ActionKind::Cancel { "danger" } else { "primary" };
    html! { button type="submit" class=(class) data-action=(kind.as_str()) { (action_name(lang, kind, scheme)) } }
}

fn actions(
    state: &AppState,
    viewer: &Viewer,
    base: &str,
    reference: &str,
    o: &Order,
    shown: &[ActionKind],
    submitted: Option<(ActionKind, &FormFields)>,
) -> Markup {
    let lang = viewer.lang;
    // What the operator typed into a refused form is kept, so they correct it instead of
    // typing it all again.
    let typed = |kind: ActionKind, name: &str| -> Option<String> {
        submitted.filter(|(k, _)| *k == kind).and_then(|(_, f)| f.get(name).map(str::to_string))
    };
    let verify_possible = o.scheme == Scheme::Pickup
        && viewer.can(Capability::PickupDesk)
        && !o.state().is_final()
        && o.pickup.as_ref().is_some_and(|p| !p.verified);
    html! {
        @if shown.is_empty() && !verify_possible && !override_possible(viewer, o) {
            p.hint data-no-actions {
                @if !viewer.can(Capability::PickupDesk) { (tr(lang, "Ваша роль — только просмотр.", "Your role can only view.")) }
                @else if o.state().is_final() { (tr(lang, "Заказ завершён.", "The order is final.")) }
                @else { (tr(lang, "Сейчас от вас ничего не требуется.", "Nothing is needed from you now.")) }
            }
        }
        @for kind in shown.iter().copied() {
            form.action-form method="post" action=(format!("{base}/action/{}", kind.as_str())) data-form=(kind.as_str()) {
                (csrf_field(viewer))
                @match kind {
                    ActionKind::Accept => {
                        label { (tr(lang, "Соберём к (необязательно)", "Assembled by (optional)"))
                            input type="datetime-local" name="expected_assembly_time" value=[typed(kind, "expected_assembly_time")];
                        }
                    }
                    ActionKind::Ready | ActionKind::Delivered => {
                        (composition_form(lang, kind, o, submitted.filter(|(k, _)| *k == kind).map(|(_, f)| f)))
                    }
                    ActionKind::Cancel => {
                        label { (tr(lang, "Причина", "Reason"))
                            select name="reason" required {
                                option value="" { "—" }
                                @for slug in &state.policy.cancel_reasons {
                                    option value=(slug) selected[typed(kind, "reason").as_deref() == Some(slug.as_str())] { (cancel_reason_name(lang, slug)) }
                                }
                            }
                        }
                        label { (tr(lang, "Пояснение для Kuper (необязательно)", "Note for Kuper (optional)"))
                            textarea name="description" rows="2" maxlength="1000" { (typed(kind, "description").unwrap_or_default()) }
                        }
                    }
                    ActionKind::EstimatedDeliveryTime => {
                        label { (tr(lang, "Привезём к", "Delivered by"))
                            input type="datetime-local" name="at" required value=[typed(kind, "at")];
                        }
                    }
                    ActionKind::PickupCode => {
                        label { (tr(lang, "Код (пусто — придумаем сами)", "Code (empty: we make one up)"))
                            input type="text" name="code" inputmode="numeric" autocomplete="off" maxlength="12" value=[typed(kind, "code")];
                        }
                    }
                    _ => {}
                }
                (action_button(lang, kind, o.scheme))
            }
        }
        @if verify_possible {
            form.action-form method="post" action="/ui/pickup" data-form="verify-code" {
                (csrf_field(viewer))
                input type="hidden" name="ref" value=(reference);
                label { (tr(lang, "Код покупателя", "Customer's code"))
                    input type="text" name="code" inputmode="numeric" autocomplete="off" required maxlength="12";
                }
                button.primary type="submit" data-action="verify-code" { (tr(lang, "Проверить код", "Check the code")) }
            }
        }
        @if override_possible(viewer, o) {
            form.action-form.override method="post" action=(format!("{base}/action/delivered")) data-form="delivered-override" {
                (csrf_field(viewer))
                p.hint { (tr(lang, "Выдать без проверенного кода можно только с письменной причиной — она попадёт в историю заказа.", "Handing over without a verified code needs a written reason; it goes into the order's timeline.")) }
                label { (tr(lang, "Причина выдачи без кода", "Reason to hand over without the code"))
                    textarea name="override_reason" rows="2" required maxlength="500" { (typed(ActionKind::Delivered, "override_reason").unwrap_or_default()) }
                }
                button.danger type="submit" data-action="delivered-override" { (tr(lang, "Выдать без кода", "Hand over without the code")) }
            }
        }
        @if o.scheme == Scheme::Pickup && viewer.can(Capability::PickupDesk) && !o.state().is_final() {
            p { a href=(format!("/ui/pickup?{}", query_string(&[("ref", reference)]))) { (tr(lang, "Открыть на экране выдачи", "Open at the pickup desk")) } }
        }
    }
}

/// The collected composition as inputs: a row per line, prefilled (as ordered for `ready`,
/// as made ready for `delivered`), folded away because most orders go out as they are.
fn composition_form(lang: Lang, kind: ActionKind, o: &Order, typed: Option<&FormFields>) -> Markup {
    let rows = composition_rows(kind, o);
    let value = |name: String, default: &str| {
        typed.and_then(|f| f.get(&name).map(str::to_string)).unwrap_or_else(|| default.to_string())
    };
    html! {
        details.composition-edit open[typed.is_some()] {
            summary { (tr(lang, "Изменить состав (если собрано не всё или с заменой)", "Change the composition (missing items, other weight)")) }
            table.lines {
                thead { tr {
                    th { (tr(lang, "Товар", "Item")) }
                    th { (tr(lang, "Кол-во", "Qty")) }
                    th { (tr(lang, "Вес, г", "Weight, g")) }
                    th { (tr(lang, "Коды маркировки (по одному в строке)", "Marking codes (one per line)")) }
                } }
                tbody {
                    @for (i, row) in rows.iter().enumerate() {
                        tr data-line=(row.id) {
                            td {
                                (row.name.as_deref().unwrap_or(&row.id)) " " small.slug { (row.id) }
                                @if let Some(r) = &row.replaced_by { br; small { (tr(lang, "заменён на ", "replaced by ")) (r) } }
                            }
                            td { input type="text" inputmode="decimal" name=(format!("q_{i}")) value=(value(format!("q_{i}"), &row.quantity)) size="5"
                                aria-label=(tr(lang, "Количество", "Quantity")); }
                            td {
                                @if let Some(w) = &row.weight {
                                    input type="text" inputmode="decimal" name=(format!("w_{i}")) value=(value(format!("w_{i}"), w)) size="6"
                                        aria-label=(tr(lang, "Вес, г", "Weight, g"));
                                } @else { "—" }
                            }
                            td { textarea name=(format!("mc_{i}")) rows="1" aria-label=(tr(lang, "Коды маркировки", "Marking codes")) {
                                (value(format!("mc_{i}"), &row.marking_codes.join("\n")))
                            } }
                        }
                    }
                }
            }
        }
    }
}

fn composition_table(lang: Lang, o: &Order, c: &Composition) -> Markup {
    let name_of = |id: &str| o.ordered.positions.iter().find(|p| p.id == id).and_then(|p| p.name.clone());
    html! {
        table.lines {
            thead { tr {
                th { (tr(lang, "Товар", "Item")) }
                th.num { (tr(lang, "Кол-во", "Qty")) }
                th.num { (tr(lang, "Вес, г", "Weight, g")) }
                th.num { (tr(lang, "Цена", "Price")) }
                th.num { (tr(lang, "Сумма", "Total")) }
            } }
            tbody {
                @for l in &c.lines {
                    tr data-line=(l.id) {
                        td {
                            (name_of(&l.id).unwrap_or_else(|| l.id.clone())) " " small.slug { (l.id) }
                            @if let Some(r) = &l.replaced_by_id { br; small.replaced { (tr(lang, "заменён на ", "replaced by ")) (r) } }
                            @if !l.marking_codes.is_empty() {
                                details.codes { summary { (tr(lang, "коды маркировки: ", "marking codes: ")) (l.marking_codes.len()) }
                                    ul { @for code in &l.marking_codes { li { code { (code) } } } } }
                            }
                        }
                        td.num { (l.quantity.normalize()) }
                        td.num { @if let Some(w) = l.weight { (w.normalize()) } @else { "—" } }
                        td.num {
                            @if l.discount_price != l.price { s { (money!(l.price)) } " " }
                            (money!(l.discount_price))
                        }
                        td.num { (money!(l.total_price)) }
                    }
                }
            }
            tfoot { tr {
                td colspan="4" { (tr(lang, "Итого", "Total")) }
                td.num data-total=(money_string(c.totals.discount_total_price)) {
                    @if c.totals.total_price != c.totals.discount_total_price { s { (money!(c.totals.total_price)) } " " }
                    (money!(c.totals.discount_total_price))
                }
            } }
        }
    }
}

fn compositions(lang: Lang, o: &Order) -> Markup {
    let ordered = Composition::as_ordered(&o.ordered.positions).ok();
    let (collected_title, collected) = match (&o.handed_over, &o.ready_composition) {
        (Some(c), _) => (tr(lang, "Выдано", "Handed over"), Some(c)),
        (None, Some(c)) => (tr(lang, "Собрано", "Collected"), Some(c)),
        (None, None) => (tr(lang, "Собрано", "Collected"), None),
    };
    html! {
        section.order-compositions {
            div.side-by-side {
                div.composition data-composition="ordered" {
                    h2 { (tr(lang, "Заказано", "Ordered")) }
                    @match &ordered {
                        Some(c) => { (composition_table(lang, o, c)) }
                        // An order whose lines cannot be priced still lists them.
                        None => { ul { @for p in &o.ordered.positions { li { (p.name.as_deref().unwrap_or(&p.id)) " × " (p.quantity.normalize()) } } } }
                    }
                }
                div.composition data-composition="collected" {
                    h2 { (collected_title) }
                    @match collected {
                        Some(c) => {
                            @if c.changed { p.badge.badge-warn { (tr(lang, "Отличается от заказа", "Differs from the order")) } }
                            (composition_table(lang, o, c))
                        }
                        None => { p.hint { (tr(lang, "Ещё не собран.", "Not collected yet.")) } }
                    }
                }
            }
        }
    }
}

fn deadlines(state: &AppState, lang: Lang, stored: &StoredOrder, now: i64) -> Markup {
    let list = deadlines_at(&stored.order, stored.created_at, &state.policy.deadlines, now);
    html! {
        section.order-deadlines {
            h2 { (tr(lang, "Сроки", "Deadlines")) }
            @if list.is_empty() {
                p.hint { (tr(lang, "Открытых сроков нет.", "No open deadlines.")) }
            } @else {
                ul.deadlines {
                    @for (d, stage) in &list {
                        li class={ "deadline stage-" (stage.as_str()) } data-deadline=(d.kind.as_str()) data-stage=(stage.as_str()) {
                            strong { (deadline_name(lang, d.kind)) } ": "
                            (time(lang, d.due_at)) " (" (time_left(lang, d.due_at, now)) ") · "
                            span.stage { (stage_name(lang, *stage)) }
                        }
                    }
                }
            }
        }
    }
}

/// Where a change came from, when the kind does not say it already (webhooks come from Kuper,
/// notifications go to it).
fn direction_mark(lang: Lang, direction: &str) -> Option<&'static str> {
    match direction {
        "api" => Some(tr(lang, "через API", "via the API")),
        "console" => Some(tr(lang, "в пульте", "in the console")),
        "cli" => Some(tr(lang, "из командной строки", "from the command line")),
        _ => None,
    }
}

pub fn event_details(lang: Lang, e: &EventRecord, show_codes: bool) -> Markup {
    let x = &e.exchange;
    let has_raw = x.headers.is_some() || x.body.is_some() || x.response.is_some();
    html! {
        @if has_raw {
            details.raw {
                summary { (tr(lang, "Подробности запроса", "Request details")) }
                @if let (Some(m), Some(p)) = (&x.method, &x.path) { p { code { (m) " " (p) } } }
                @if let Some(h) = &x.headers { h4 { (tr(lang, "Заголовки", "Headers")) } pre { (readable_body(h, true)) } }
                @if let Some(b) = &x.body { h4 { (tr(lang, "Тело", "Body")) } pre { (readable_body(b, show_codes)) } }
                @if let Some(r) = &x.response { h4 { (tr(lang, "Ответ", "Response")) } pre { (readable_body(r, show_codes)) } }
            }
        }
    }
}

fn timeline(lang: Lang, viewer: &Viewer, scheme: Scheme, events: &[EventRecord]) -> Markup {
    let show_codes = viewer.can(Capability::OrderActions);
    html! {
        section.order-timeline {
            h2 { (tr(lang, "История", "Timeline")) " " small { "(" (events.len()) ")" } }
            @if events.is_empty() {
                p.hint { (tr(lang, "Записей нет (старые записи удаляются по сроку хранения).", "No entries (old ones are purged after the retention period).")) }
            }
            ol.timeline {
                @for e in events {
                    @let x = &e.exchange;
                    li.event data-event-kind=(x.kind) data-event-id=(e.id) {
                        div.event-head {
                            time { (time(lang, e.at)) }
                            " "
                            span.event-kind { (event_kind_name(lang, &x.kind)) }
                            @if let Some(mark) = direction_mark(lang, &x.direction) { " " span.direction { (mark) } }
                            @if let Some(ev) = &x.event {
                                @let label = event_label(lang, &x.kind, ev, scheme);
                                @if &label == ev { " " code.event-name { (ev) } }
                                @else { " " span.event-name.action-name title=(ev) { (label) } }
                            }
                            @if let Some(outcome) = &x.outcome { " " (outcome_badge(lang, outcome)) }
                            @if let Some(status) = x.status { " " span.http-status { "HTTP " (status) } }
                            @if let Some(ms) = x.latency_ms { " " small { (ms) " ms" } }
                            @if let Some(actor) = &x.actor {
                                " " span.actor data-actor=(actor.label()) { (actor_name(lang, actor)) }
                            }
                        }
                        (detail_line(lang, x))
                        (event_details(lang, e, show_codes))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuper_bridge_domain::diagram::sample_order;
    use kuper_bridge_domain::Policy;

    #[test]
    fn a_form_as_prefilled_sends_no_positions_and_a_change_sends_all_rows() {
        let order = sample_order(Scheme::KuperDelivery, false, &Policy::default()).unwrap();
        let rows = composition_rows(ActionKind::Ready, &order);
        assert_eq!(rows.len(), order.ordered.positions.len());
        let mut pairs: Vec<(String, String)> = vec![("csrf".into(), "x".into())];
        for (i, r) in rows.iter().enumerate() {
            pairs.push((format!("q_{i}"), r.quantity.clone()));
            if let Some(w) = &r.weight {
                pairs.push((format!("w_{i}"), w.clone()));
            }
            pairs.push((format!("mc_{i}"), String::new()));
        }
        assert_eq!(action_body(ActionKind::Ready, &order, &FormFields(pairs.clone())), json!({}));
        // One fewer of the first line, typed with a decimal comma on a weighed one.
        pairs[1].1 = "0".into();
        let body = action_body(ActionKind::Ready, &order, &FormFields(pairs));
        let positions = body["positions"].as_array().unwrap();
        assert_eq!(positions.len(), rows.len());
        assert_eq!(positions[0]["quantity"], "0");
        assert_eq!(positions[0]["id"], json!(rows[0].id));
    }

    #[test]
    fn local_times_get_the_display_offset() {
        assert_eq!(local_to_rfc3339("2026-03-14T12:30"), "2026-03-14T12:30:00+03:00");
        assert_eq!(local_to_rfc3339("2026-03-14T12:30:15"), "2026-03-14T12:30:15+03:00");
        assert_eq!(local_to_rfc3339(" tomorrow "), "tomorrow", "left for the API to explain");
    }

    #[test]
    fn cancel_and_override_bodies() {
        let order = sample_order(Scheme::Pickup, false, &Policy::default()).unwrap();
        let form =
            |pairs: &[(&str, &str)]| FormFields(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        assert_eq!(
            action_body(ActionKind::Cancel, &order, &form(&[("reason", "out_of_stock"), ("description", " ")])),
            json!({"reason": "out_of_stock"})
        );
        assert_eq!(
            action_body(ActionKind::Delivered, &order, &form(&[("override_reason", " телефон сел ")])),
            json!({"overrideReason": "телефон сел"})
        );
        assert_eq!(action_body(ActionKind::PickupCode, &order, &form(&[("code", "")])), json!({}));
    }

    #[test]
    fn an_address_reads_as_words_without_its_keys() {
        let address = json!({"full_address": "Москва, ул. Ленина, 1", "apartment": "12", "entrance": 2,
            "lat": 55.7, "lon": 37.6, "delivery_to_door": true, "unknown_key": "x"});
        assert_eq!(address_words(Lang::Ru, &address), ["Москва, ул. Ленина, 1", "кв. 12", "подъезд 2", "до двери"]);
        let parts = json!({"city": "Москва", "street": "ул. Ленина", "building": "1", "floor": "5"});
        assert_eq!(address_words(Lang::En, &parts), ["Москва, ул. Ленина, 1", "floor 5"]);
    }

    #[test]
    fn refusals_are_told_in_words() {
        let e = ApiError::from(kuper_bridge_domain::DomainError::InvalidTransition {
            action: ActionKind::Ready,
            state: kuper_bridge_domain::OrderState::Created,
            allowed: vec![ActionKind::StartAssembly, ActionKind::Cancel],
            reason: None,
        });
        let ru = refusal_words(Lang::Ru, &e, Scheme::KuperDelivery);
        assert!(ru.contains("«Заказ готов» нельзя в статусе «Новый»"), "{ru}");
        assert!(ru.contains("«Начать сборку», «Отменить заказ»"), "{ru}");
        let en = refusal_words(Lang::En, &e, Scheme::KuperDelivery);
        assert!(en.contains("Possible now"), "{en}");
    }

    /// Each storage refusal has its own code (issue #12, item 7) and its own words for the
    /// cashier, never the generic "not possible now".
    #[test]
    fn each_storage_refusal_has_its_own_words() {
        use kuper_bridge_storage::{OutboxStatus, StoreError};
        let generic = |lang| {
            refusal_words(lang, &ApiError::new(axum::http::StatusCode::CONFLICT, "conflict", "x"), Scheme::Pickup)
        };
        for (error, code) in [
            (StoreError::IdempotencyKeyReused, "idempotency_key_reused"),
            (StoreError::NoFreePickupCode, "pickup_codes_exhausted"),
            (StoreError::PickupCodeInUse, "pickup_code_in_use"),
            (StoreError::NoPickupCode, "no_pickup_code"),
            (StoreError::OrderClosed(kuper_bridge_domain::OrderState::Delivered), "order_closed"),
            (StoreError::NotDeadLetter { id: 1, status: OutboxStatus::Sent }, "not_dead_letter"),
        ] {
            let e = ApiError::from(error);
            assert_eq!((e.status, e.code), (axum::http::StatusCode::CONFLICT, code));
            for lang in [Lang::Ru, Lang::En] {
                let words = refusal_words(lang, &e, Scheme::Pickup);
                assert_ne!(words, generic(lang), "{code}");
            }
        }
    }
}

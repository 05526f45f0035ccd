//! The pickup desk (`/ui/pickup`): one screen for the counter. Type or scan the order number
//! (a barcode scanner types it and presses Enter, which submits the form), check the
//! customer's code, hand the bag over. The customer's first name and a masked phone are all
//! the desk sees of them.
//!
//! The hand-over rule is the engine's: a pickup order is `delivered` only after its code was
//! verified, or by an operator with a written reason. The page shows the hand-over button only
//! when the engine would take it, and the engine checks it again on the POST.

use super::i18n::{state_name, tr, Lang};
use super::order::{
    action_name, composition_rows, override_possible, pending_flash, redirect_with_flash, refusal_block, run_action,
    shown_flash,
};
use super::{
    csrf_field, flash, now_ms, page, path_segment, time, time_left, Capability, CsrfForm, FlashKind, Nav, UiError,
    Viewer,
};
use crate::auth::redact_headers;
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kuper_bridge_domain::engine::allowed_actions;
use kuper_bridge_domain::{ActionKind, OrderState, Scheme};
use kuper_bridge_storage::{Actor, Exchange, StoreError, StoredOrder};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new().route("/ui/pickup", get(desk).post(verify)).route("/ui/pickup/delivered", post(hand_over))
}

#[derive(Deserialize, Default)]
pub struct DeskQuery {
    #[serde(rename = "ref")]
    reference: Option<String>,
}

#[derive(Deserialize)]
pub struct VerifyForm {
    #[serde(rename = "ref", default)]
    reference: String,
    #[serde(default)]
    code: String,
}

#[derive(Deserialize)]
pub struct HandOverForm {
    #[serde(rename = "ref", default)]
    reference: String,
    #[serde(default)]
    override_reason: String,
}

/// What the code check said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    Invalid {
        attempts_left: u32,
    },
    /// Too many wrong codes; unix ms.
    Locked {
        until_ms: i64,
    },
}

impl Verdict {
    fn slug(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Invalid { .. } => "invalid",
            Verdict::Locked { .. } => "locked",
        }
    }
}

/// What the desk shows below the order.
enum DeskNotice<'a> {
    None,
    Verdict(Verdict),
    Refused(&'a ApiError),
    Message(FlashKind, String),
}

/// The phone as the desk shows it: only the last four digits ("+7 *** ***-45-67"), enough to
/// ask "is this your number?" and no more.
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 4 {
        return "—".to_string();
    }
    let n = digits.len();
    let tail = format!("{}{}-{}{}", digits[n - 4], digits[n - 3], digits[n - 2], digits[n - 1]);
    let russian = n == 10 || (n == 11 && (digits[0] == '7' || digits[0] == '8'));
    if russian {
        format!("+7 *** ***-{tail}")
    } else {
        format!("*** ***-{tail}")
    }
}

/// The customer's first name only (the first word of what Kuper sent).
pub fn first_name(name: &str) -> Option<String> {
    name.split_whitespace().next().map(str::to_string)
}

async fn desk(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(q): Query<DeskQuery>,
) -> Result<Response, UiError> {
    viewer.require(Capability::PickupDesk)?;
    let lang = viewer.lang;
    let reference = q.reference.as_deref().map(str::trim).filter(|r| !r.is_empty());
    let Some(reference) = reference else {
        return Ok(match pending_flash(&headers, "handed:") {
            Some(number) => {
                let notice = DeskNotice::Message(FlashKind::Ok, handed_over_message(lang, number));
                shown_flash(render(&state, &viewer, "", None, notice))
            }
            None => render(&state, &viewer, "", None, DeskNotice::None).into_response(),
        });
    };
    match state.store.find_order(reference).await? {
        Some(order) => {
            let notice = current_verdict(&order).map(DeskNotice::Verdict).unwrap_or(DeskNotice::None);
            Ok(render(&state, &viewer, reference, Some(&order), notice).into_response())
        }
        None => Ok((StatusCode::NOT_FOUND, render(&state, &viewer, reference, None, not_found(lang))).into_response()),
    }
}

fn not_found(lang: Lang) -> DeskNotice<'static> {
    DeskNotice::Message(
        FlashKind::Error,
        tr(
            lang,
            "Заказ не найден. Проверьте номер и попробуйте ещё раз.",
            "Order not found. Check the number and try again.",
        )
        .into(),
    )
}

fn handed_over_message(lang: Lang, reference: &str) -> String {
    match lang {
        Lang::Ru => format!("Заказ {reference} выдан. Можно принимать следующего покупателя."),
        Lang::En => format!("Order {reference} handed over. Next customer, please."),
    }
}

/// What the order itself says about its code: verified earlier, or locked now. A wrong try
/// is only shown right after it (the verdict of the POST).
fn current_verdict(order: &StoredOrder) -> Option<Verdict> {
    let p = order.order.pickup.as_ref()?;
    if p.verified {
        return Some(Verdict::Valid);
    }
    let until_ms = p.locked_until?.saturating_mul(1000);
    (until_ms > now_ms()).then_some(Verdict::Locked { until_ms })
}

async fn verify(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    CsrfForm(form): CsrfForm<VerifyForm>,
) -> Result<Response, UiError> {
    viewer.require(Capability::PickupDesk)?;
    let lang = viewer.lang;
    let reference = form.reference.trim();
    let Some(order) = state.store.find_order(reference).await? else {
        return Ok((StatusCode::NOT_FOUND, render(&state, &viewer, reference, None, not_found(lang))).into_response());
    };
    let code = form.code.trim();
    if code.is_empty() {
        let notice = DeskNotice::Message(
            FlashKind::Error,
            tr(lang, "Введите код покупателя.", "Type the customer's code.").into(),
        );
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&state, &viewer, reference, Some(&order), notice))
            .into_response());
    }
    let actor = Actor::Operator(viewer.operator.name.clone());
    // The same per-caller brake as the REST API's, keyed by the operator: a desk that guesses
    // is stopped across orders, on top of each order's own lock-out.
    if let Err(e) = state.verify_limiter.check(&actor.label()) {
        let page = render(&state, &viewer, reference, Some(&order), DeskNotice::Refused(&e));
        return Ok((e.status, page).into_response());
    }
    let exchange = Exchange {
        kind: "pickup_verification".into(),
        direction: "console".into(),
        method: Some("POST".into()),
        path: Some("/ui/pickup".into()),
        headers: Some(redact_headers(&headers)),
        // The code tried is not kept: the audit log must not become a list of codes.
        body: None,
        request_id: Some(crate::request_id(&headers)),
        actor: Some(actor.clone()),
        ..Default::default()
    };
    let verdict = match state.store.verify_pickup_code(reference, code, &state.policy, exchange).await {
        Ok(v) if v.valid => Verdict::Valid,
        Ok(v) => {
            state.verify_limiter.failed(&actor.label());
            match v.locked_until {
                Some(until) => Verdict::Locked { until_ms: until.saturating_mul(1000) },
                None => Verdict::Invalid { attempts_left: v.attempts_left },
            }
        }
        Err(StoreError::PickupLocked { until }) => Verdict::Locked { until_ms: until.saturating_mul(1000) },
        Err(e) if e.is_unavailable() || matches!(e, StoreError::OrderNotFound(_)) => return Err(e.into()),
        Err(e) => {
            let e = ApiError::from(e);
            let order = state.store.find_order(reference).await?.unwrap_or(order);
            let page = render(&state, &viewer, reference, Some(&order), DeskNotice::Refused(&e));
            return Ok((e.status, page).into_response());
        }
    };
    tracing::info!(order_id = order.id, operator = %viewer.operator.name, verdict = verdict.slug(), "console pickup code check");
    // The order as the check left it (verified, attempts, lock).
    let order = state.store.find_order(reference).await?.unwrap_or(order);
    let status = match verdict {
        Verdict::Valid => StatusCode::OK,
        Verdict::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Verdict::Locked { .. } => StatusCode::TOO_MANY_REQUESTS,
    };
    Ok((status, render(&state, &viewer, reference, Some(&order), DeskNotice::Verdict(verdict))).into_response())
}

async fn hand_over(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    CsrfForm(form): CsrfForm<HandOverForm>,
) -> Result<Response, UiError> {
    let reason = form.override_reason.trim();
    viewer.require(if reason.is_empty() { Capability::PickupDesk } else { Capability::OrderActions })?;
    let lang = viewer.lang;
    let reference = form.reference.trim();
    let Some(order) = state.store.find_order(reference).await? else {
        return Ok((StatusCode::NOT_FOUND, render(&state, &viewer, reference, None, not_found(lang))).into_response());
    };
    if order.order.scheme != Scheme::Pickup && !viewer.can(Capability::OrderActions) {
        return Err(UiError::forbidden());
    }
    let body: Value = if reason.is_empty() { json!({}) } else { json!({"overrideReason": reason}) };
    let path = "/ui/pickup/delivered".to_string();
    match run_action(&state, &viewer, &headers, reference, ActionKind::Delivered, &body, path).await {
        // Back to an empty desk for the next customer, with the confirmation.
        Ok(_) => Ok(redirect_with_flash("/ui/pickup", &format!("handed:{}", order.order.number))),
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => Err(e.into()),
        Err(e) => {
            let order = state.store.find_order(reference).await?.unwrap_or(order);
            let page = render(&state, &viewer, reference, Some(&order), DeskNotice::Refused(&e));
            Ok((e.status, page).into_response())
        }
    }
}

fn render(
    state: &AppState,
    viewer: &Viewer,
    reference: &str,
    order: Option<&StoredOrder>,
    notice: DeskNotice,
) -> Markup {
    let lang = viewer.lang;
    let title = tr(lang, "Выдача заказов", "Pickup desk");
    // One field has the focus: the number until an order is found, then the code.
    let code_wanted = order.is_some_and(|o| {
        o.order.scheme == Scheme::Pickup
            && o.order.pickup.as_ref().is_some_and(|p| !p.verified)
            && !o.order.state().is_final()
            && !matches!(notice, DeskNotice::Verdict(Verdict::Locked { .. }))
    });
    let body = html! {
        div.desk {
            h1 { (title) }
            form.desk-find method="get" action="/ui/pickup" {
                label for="desk-ref" { (tr(lang, "Номер заказа", "Order number")) }
                div.desk-row {
                    input #desk-ref.desk-input type="text" name="ref" value=(reference) required
                        autocomplete="off" autocapitalize="characters" spellcheck="false" enterkeyhint="search"
                        placeholder=(tr(lang, "Отсканируйте или введите номер", "Scan or type the number")) autofocus[!code_wanted];
                    button.primary.desk-button type="submit" { (tr(lang, "Найти", "Find")) }
                }
            }
            @match &notice {
                DeskNotice::Message(kind, text) => { (flash(*kind, text)) }
                DeskNotice::Refused(e) => { (refusal_block(lang, e, Scheme::Pickup)) }
                _ => {}
            }
            @if let Some(o) = order { (card(state, viewer, reference, o, &notice, code_wanted)) }
        }
    };
    page(viewer, title, Nav::Pickup, body)
}

fn verdict_block(lang: Lang, verdict: Verdict) -> Markup {
    let now = now_ms();
    let class = match verdict {
        Verdict::Valid => "verdict verdict-valid",
        Verdict::Invalid { .. } => "verdict verdict-invalid",
        Verdict::Locked { .. } => "verdict verdict-locked",
    };
    html! {
        div class=(class) data-verdict=(verdict.slug()) role="status" {
            @match verdict {
                Verdict::Valid => { strong { (tr(lang, "Код верный", "The code is right")) } " — " (tr(lang, "можно выдавать заказ.", "hand the order over.")) }
                Verdict::Invalid { attempts_left } => {
                    strong { (tr(lang, "Код неверный", "Wrong code")) } ". "
                    (tr(lang, "Осталось попыток: ", "Attempts left: ")) span data-attempts-left=(attempts_left) { (attempts_left) }
                }
                Verdict::Locked { until_ms } => {
                    strong { (tr(lang, "Проверка заблокирована", "Checking is locked")) } " — "
                    (tr(lang, "слишком много неверных кодов. Можно снова ", "too many wrong codes. Try again "))
                    span data-locked-until=(until_ms) { (time(lang, until_ms)) " (" (time_left(lang, until_ms, now)) ")" }
                    "."
                }
            }
        }
    }
}

fn card(
    state: &AppState,
    viewer: &Viewer,
    reference: &str,
    stored: &StoredOrder,
    notice: &DeskNotice,
    code_wanted: bool,
) -> Markup {
    let lang = viewer.lang;
    let o = &stored.order;
    let customer = o.ordered.customer.as_ref();
    let name = customer.and_then(|c| c.get("name")).and_then(Value::as_str).and_then(first_name);
    let phone = customer.and_then(|c| c.get("phone")).and_then(Value::as_str).map(mask_phone);
    let can_hand_over = allowed_actions(o, &state.policy).contains(&ActionKind::Delivered);
    let lines = composition_rows(ActionKind::Delivered, o);
    let order_link = format!("/ui/orders/{}", path_segment(o.display_ref()));
    let blocker = if o.scheme != Scheme::Pickup {
        Some(tr(
            lang,
            "Это заказ не на самовывоз — его не выдают на кассе.",
            "This is not a pickup order; it is not handed over at the desk.",
        ))
    } else if o.state() == OrderState::Delivered {
        Some(tr(lang, "Заказ уже выдан.", "The order was already handed over."))
    } else if o.state() == OrderState::Canceled {
        Some(tr(lang, "Заказ отменён — выдавать нельзя.", "The order is canceled; do not hand it over."))
    } else if o.state() < OrderState::Ready {
        Some(tr(lang, "Заказ ещё не готов — выдавать рано.", "The order is not ready yet."))
    } else if o.pickup.is_none() {
        Some(tr(
            lang,
            "Код выдачи ещё не выпущен — выдать заказ пока нельзя.",
            "No pickup code has been issued yet; it cannot be handed over.",
        ))
    } else {
        None
    };
    html! {
        section.desk-card data-order=(o.display_ref()) {
            header.desk-head {
                h2 { (tr(lang, "Заказ", "Order")) " " (o.number) }
                @if o.display_ref() != o.number { span.slug { (o.display_ref()) } }
                span class={ "state state-" (o.state().as_str()) } data-state=(o.state().as_str()) { (state_name(lang, o.state())) }
                a.small href=(order_link) { (tr(lang, "Подробнее о заказе", "Order details")) }
            }
            dl.desk-customer {
                dt { (tr(lang, "Покупатель", "Customer")) } dd.desk-name data-customer-name { (name.unwrap_or_else(|| "—".into())) }
                dt { (tr(lang, "Телефон", "Phone")) } dd.desk-phone data-customer-phone { (phone.unwrap_or_else(|| "—".into())) }
            }
            h3 {
                @if o.ready_composition.is_some() { (tr(lang, "Выдать", "Hand over")) }
                @else { (tr(lang, "Заказано (ещё не собран)", "Ordered (not collected yet)")) }
            }
            table.desk-lines {
                tbody {
                    @for row in &lines {
                        tr data-line=(row.id) {
                            td { (row.name.as_deref().unwrap_or(&row.id)) " " small.slug { (row.id) } }
                            td.num.desk-count { "× " (row.quantity) }
                            td.num { @if let Some(w) = &row.weight { (w) " " (tr(lang, "г", "g")) } }
                        }
                    }
                }
            }
            @if let Some(text) = blocker {
                (flash(FlashKind::Error, text))
            }
            @if let DeskNotice::Verdict(v) = notice { (verdict_block(lang, *v)) }
            @if code_wanted && blocker.is_none() {
                form.desk-code method="post" action="/ui/pickup" {
                    (csrf_field(viewer))
                    input type="hidden" name="ref" value=(reference);
                    label for="desk-code" { (tr(lang, "Код покупателя", "Customer's code")) }
                    div.desk-row {
                        input #desk-code.desk-input type="text" name="code" required inputmode="numeric" autocomplete="off"
                            maxlength="12" enterkeyhint="done" autofocus;
                        button.primary.desk-button type="submit" data-action="verify-code" { (tr(lang, "Проверить", "Check")) }
                    }
                }
            }
            @if can_hand_over && viewer.can(Capability::PickupDesk) {
                form.desk-deliver method="post" action="/ui/pickup/delivered" {
                    (csrf_field(viewer))
                    input type="hidden" name="ref" value=(reference);
                    button.primary.desk-button.desk-big type="submit" data-action="delivered" { (action_name(lang, ActionKind::Delivered, o.scheme)) }
                }
            }
            @if override_possible(viewer, o) {
                details.desk-override {
                    summary { (tr(lang, "Выдать без кода (только оператор)", "Hand over without the code (operators only)")) }
                    form method="post" action="/ui/pickup/delivered" {
                        (csrf_field(viewer))
                        input type="hidden" name="ref" value=(reference);
                        label for="override-reason" { (tr(lang, "Почему выдаёте без кода — это попадёт в историю заказа", "Why without the code: this goes into the order's timeline")) }
                        textarea #override-reason name="override_reason" rows="3" required maxlength="500" {}
                        button.danger type="submit" data-action="delivered-override" { (tr(lang, "Выдать без кода", "Hand over without the code")) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_show_only_their_last_four_digits() {
        assert_eq!(mask_phone("+79035554567"), "+7 *** ***-45-67");
        assert_eq!(mask_phone("8 (903) 555-45-67"), "+7 *** ***-45-67");
        assert_eq!(mask_phone("9035554567"), "+7 *** ***-45-67");
        assert_eq!(mask_phone("+44 20 7946 0958"), "*** ***-09-58");
        assert_eq!(mask_phone("12"), "—");
        assert_eq!(mask_phone(""), "—");
        for phone in ["+79035554567", "8 (903) 555-45-67"] {
            assert!(!mask_phone(phone).contains("903"), "the operator code is hidden");
        }
    }

    #[test]
    fn only_the_first_name() {
        assert_eq!(first_name("Анна Петрова").as_deref(), Some("Анна"));
        assert_eq!(first_name("  Иван ").as_deref(), Some("Иван"));
        assert_eq!(first_name(" "), None);
    }
}

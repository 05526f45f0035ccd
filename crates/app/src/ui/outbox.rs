//! The outbox and the dead-letter desk (`/ui/outbox`): what waits to reach Kuper and each
//! subscriber, what gave up, each record's attempts with Kuper's answers; replay and skip
//! with a written reason (kept in the timeline), "replay every dead letter of a destination"
//! after an outage, and the webhooks refused before they touched an order.

use super::i18n::{tr, Lang};
use super::order::{actor_name, event_details, pending_flash, readable_body, redirect_with_flash, shown_flash};
use super::words::{detail_line, note_words, outcome_badge};
use super::{
    csrf_field, flash, now_ms, page, path_segment, query_string, time, time_left, Capability, CsrfForm, FlashKind, Nav,
    UiError, Viewer,
};
use crate::auth::redact_headers;
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kuper_bridge_storage::{
    Actor, Destination, DestinationStats, EventRecord, Exchange, OutboxFilter, OutboxRecord, OutboxStatus,
};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/outbox", get(list))
        .route("/ui/outbox/replay-all", post(replay_all))
        .route("/ui/outbox/{id}", get(detail))
        .route("/ui/outbox/{id}/replay", post(replay))
        .route("/ui/outbox/{id}/skip", post(skip))
}

async fn replay(
    state: State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    id: Path<i64>,
    form: CsrfForm<ReasonForm>,
) -> Result<Response, UiError> {
    decide(Decision::Replay, state, viewer, headers, id, form).await
}

async fn skip(
    state: State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    id: Path<i64>,
    form: CsrfForm<ReasonForm>,
) -> Result<Response, UiError> {
    decide(Decision::Skip, state, viewer, headers, id, form).await
}

const PAGE: i64 = 50;
/// Most dead letters one "replay all" takes (it pages through them; an outage of a day at
/// most leaves that many).
const REPLAY_ALL_MAX: usize = 10_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Decision {
    Replay,
    Skip,
}

impl Decision {
    fn slug(self) -> &'static str {
        match self {
            Decision::Replay => "replay",
            Decision::Skip => "skip",
        }
    }
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    status: Option<String>,
    destination: Option<String>,
    before: Option<i64>,
}

#[derive(Deserialize)]
pub struct ReasonForm {
    #[serde(default)]
    reason: String,
    /// `list`: the decision was taken on the list, which is shown again.
    #[serde(default)]
    back: String,
}

#[derive(Deserialize)]
pub struct ReplayAllForm {
    #[serde(default)]
    destination: String,
    #[serde(default)]
    reason: String,
}

pub fn status_name(lang: Lang, s: OutboxStatus) -> &'static str {
    match s {
        OutboxStatus::Pending => tr(lang, "В очереди", "Pending"),
        OutboxStatus::Dead => tr(lang, "Не доставлено", "Dead"),
        OutboxStatus::Sent => tr(lang, "Доставлено", "Sent"),
        OutboxStatus::Skipped => tr(lang, "Пропущено", "Skipped"),
    }
}

/// "Kuper", or a subscriber by its configured name.
pub fn destination_name(lang: Lang, destination: &Destination) -> String {
    match destination.subscriber_name() {
        Some(name) => format!("{} {name}", tr(lang, "подписчик", "subscriber")),
        None => "Kuper".to_string(),
    }
}

/// The order a record belongs to, as a reference the order page takes, read from its body
/// (records name the order by Kuper's ids and our number, not by our row id). Kuper's id
/// first, as the board shows it; else our number, which every notification carries (the brief
/// format names an order by its orderUUID alone when it has one).
pub fn order_reference(body: &str) -> Option<String> {
    order_reference_keyed(body).map(|(_, r)| r)
}

/// [`order_reference`] with the body's key it came from.
fn order_reference_keyed(body: &str) -> Option<(&'static str, String)> {
    let v: Value = serde_json::from_str(body).ok()?;
    let event_payload = v.get("event").and_then(|e| e.get("payload"));
    let scopes = [v.get("payload"), event_payload, v.get("order"), v.get("data"), Some(&v)];
    for key in ["originalOrderId", "order_id", "number", "orderUUID"] {
        for scope in scopes.iter().flatten() {
            if let Some(s) = scope.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()) {
                return Some((key, s.to_string()));
            }
        }
    }
    None
}

/// How the page names each record's order: Kuper's id or our number, read from the body.
/// A brief-format notification names its order by the orderUUID alone, which no cashier
/// knows; for those the order is looked up, once per order on the page. `list_orders` cannot
/// fetch a set of ids and storage gets no new query for this, so it is one `find_order` per
/// such order (at most a page's worth, usually one or two).
async fn order_labels(state: &AppState, records: &[OutboxRecord]) -> Result<HashMap<i64, String>, UiError> {
    let mut labels = HashMap::new();
    for r in records {
        if labels.contains_key(&r.order_id) {
            continue;
        }
        let Some((key, reference)) = order_reference_keyed(&r.body) else { continue };
        let label = if key == "orderUUID" {
            match state.store.find_order(&reference).await? {
                Some(found) => found.order.original_order_id.clone().unwrap_or_else(|| found.order.number.clone()),
                None => reference,
            }
        } else {
            reference
        };
        labels.insert(r.order_id, label);
    }
    Ok(labels)
}

/// [`order_labels`] for one record (its own page).
async fn order_label(state: &AppState, r: &OutboxRecord) -> Result<Option<String>, UiError> {
    Ok(order_labels(state, std::slice::from_ref(r)).await?.remove(&r.order_id))
}

fn operator_exchange(viewer: &Viewer, headers: &HeaderMap, path: String, reason: &str) -> Exchange {
    Exchange {
        kind: "operator".into(),
        direction: "console".into(),
        method: Some("POST".into()),
        path: Some(path),
        headers: Some(redact_headers(headers)),
        request_id: Some(crate::request_id(headers)),
        // Storage keeps the operator's written reason in the timeline line.
        detail: Some(reason.to_string()),
        actor: Some(Actor::Operator(viewer.operator.name.clone())),
        ..Default::default()
    }
}

/// The confirmation of a decision (`outbox:replay`, `outbox:skip`) or of "replay all"
/// (`outbox:replayed:N:F`), as the page after the redirect shows it.
fn decision_flash(lang: Lang, token: &str) -> Option<Markup> {
    let text = match token.split(':').collect::<Vec<_>>().as_slice() {
        ["replay"] => {
            tr(lang, "Отправлено заново: запись снова в очереди.", "Replayed: the record is queued again.").to_string()
        }
        ["skip"] => tr(
            lang,
            "Пропущено: следующие уведомления заказа пойдут дальше.",
            "Skipped: the order's next notifications go on.",
        )
        .to_string(),
        ["replayed", n, failed] => {
            let (n, failed) = (n.parse::<u64>().ok()?, failed.parse::<u64>().ok()?);
            match lang {
                Lang::Ru if failed > 0 => {
                    format!("Отправлено заново: {n}. Не получилось: {failed} (их уже кто-то разобрал).")
                }
                Lang::Ru => format!("Отправлено заново: {n}."),
                Lang::En if failed > 0 => {
                    format!("Replayed: {n}. Not replayed: {failed} (someone else decided them meanwhile).")
                }
                Lang::En => format!("Replayed: {n}."),
            }
        }
        _ => return None,
    };
    Some(flash(FlashKind::Ok, &text))
}

/// The page, forgetting the confirmation it showed.
fn with_flash(markup: Markup, shown: bool) -> Response {
    if shown {
        shown_flash(markup)
    } else {
        markup.into_response()
    }
}

async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let lang = viewer.lang;
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(OutboxStatus::parse(s).ok_or_else(|| UiError::bad_request(format!("status: {s}")))?),
        None => None,
    };
    let destination = match q.destination.as_deref().filter(|d| !d.is_empty()) {
        Some(d) => Some(Destination::parse(d).ok_or_else(|| UiError::bad_request(format!("destination: {d}")))?),
        None => None,
    };
    let filter = OutboxFilter { status, destination: destination.clone(), limit: PAGE, before_id: q.before };
    let records = state.store.list_outbox_by(&filter).await?;
    let labels = order_labels(&state, &records).await?;
    let destinations = state.store.outbox_destinations().await?;
    let refused = state.store.refused_webhooks(50).await?;
    let notice = pending_flash(&headers, "outbox:").and_then(|t| decision_flash(lang, t));
    let notice_shown = notice.is_some();
    let next = (records.len() as i64 == PAGE).then(|| records.last().map(|r| r.id)).flatten();
    let status_slug = status.map(|s| s.as_str()).unwrap_or("");
    let dest_slug = destination.as_ref().map_or("", Destination::as_str);
    let title = tr(lang, "Исходящие", "Outbox");
    let body = html! {
        div.outbox-page {
            h1 { (title) }
            @if let Some(n) = notice { (n) }
            (destinations_block(&viewer, &destinations, dest_slug))
            nav.tabs.status-tabs {
                @for (slug, label) in [("", tr(lang, "Все", "All"))].into_iter().chain([OutboxStatus::Dead, OutboxStatus::Pending, OutboxStatus::Sent, OutboxStatus::Skipped].map(|s| (s.as_str(), status_name(lang, s)))) {
                    @let href = format!("/ui/outbox?{}", query_string(&[("status", slug), ("destination", dest_slug)]));
                    @if slug == status_slug { a.current href=(href) aria-current="page" data-status-tab=(slug) { (label) } }
                    @else { a href=(href) data-status-tab=(slug) { (label) } }
                }
            }
            @if records.is_empty() {
                p.hint data-empty { (tr(lang, "Записей нет.", "No records.")) }
            } @else {
                table.outbox {
                    thead { tr {
                        th { "#" }
                        th { (tr(lang, "Создано", "Created")) }
                        th { (tr(lang, "Куда", "To")) }
                        th { (tr(lang, "Событие", "Event")) }
                        th { (tr(lang, "Заказ", "Order")) }
                        th { (tr(lang, "Статус", "Status")) }
                        th.num { (tr(lang, "Попыток", "Attempts")) }
                        th { (tr(lang, "Последний ответ", "Last answer")) }
                    } }
                    tbody {
                        @for r in &records { (row(&viewer, r, labels.get(&r.order_id).map(String::as_str))) }
                    }
                }
                @if let Some(before) = next {
                    p { a.button.secondary href=(format!("/ui/outbox?{}", query_string(&[("status", status_slug), ("destination", dest_slug), ("before", &before.to_string())]))) {
                        (tr(lang, "Дальше", "More")) " →"
                    } }
                }
            }
            (refused_block(lang, &refused))
        }
    };
    let shown = notice_shown;
    Ok(with_flash(page(&viewer, title, Nav::Outbox, body), shown))
}

fn destinations_block(viewer: &Viewer, destinations: &[DestinationStats], current: &str) -> Markup {
    let lang = viewer.lang;
    let now = now_ms();
    html! {
        section.destinations {
            form.filter method="get" action="/ui/outbox" {
                label { (tr(lang, "Получатель", "Destination")) " "
                    select name="destination" {
                        option value="" selected[current.is_empty()] { (tr(lang, "Все", "All")) }
                        @for d in destinations {
                            option value=(d.destination) selected[d.destination.as_str() == current] {
                                (destination_name(lang, &d.destination)) " (" (tr(lang, "в очереди ", "pending ")) (d.pending) ", "
                                (tr(lang, "не доставлено ", "dead ")) (d.dead) ")"
                            }
                        }
                    }
                }
                " " button type="submit" { (tr(lang, "Показать", "Show")) }
            }
            table.destination-stats {
                thead { tr {
                    th { (tr(lang, "Получатель", "Destination")) }
                    th.num { (tr(lang, "В очереди", "Pending")) }
                    th { (tr(lang, "Самое старое", "Oldest")) }
                    th.num { (tr(lang, "Не доставлено", "Dead")) }
                    th {}
                } }
                tbody {
                    @for d in destinations {
                        tr data-destination=(d.destination) {
                            td { a href=(format!("/ui/outbox?{}", query_string(&[("destination", d.destination.as_str())]))) { (destination_name(lang, &d.destination)) } }
                            td.num data-pending=(d.pending) { (d.pending) }
                            td { @if let Some(t) = d.oldest_pending_at { (time_left(lang, t, now)) } @else { "—" } }
                            td.num data-dead=(d.dead) { (d.dead) }
                            td {
                                @if d.dead > 0 && viewer.can(Capability::DeadLetters) {
                                    details.replay-all {
                                        summary { (tr(lang, "Отправить все заново…", "Replay all…")) }
                                        form method="post" action="/ui/outbox/replay-all" {
                                            (csrf_field(viewer))
                                            input type="hidden" name="destination" value=(d.destination);
                                            label { (tr(lang, "Причина (попадёт в историю заказов)", "Reason (goes into the orders' timelines)"))
                                                textarea name="reason" rows="2" required maxlength=(crate::api::MAX_DECISION_REASON_CHARS) {}
                                            }
                                            button.primary type="submit" data-action="replay-all" {
                                                (tr(lang, "Отправить заново все недоставленные: ", "Replay every dead letter: ")) (d.dead)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn row(viewer: &Viewer, r: &OutboxRecord, order: Option<&str>) -> Markup {
    let lang = viewer.lang;
    html! {
        tr data-outbox-id=(r.id) data-status=(r.status.as_str()) {
            td { a href=(format!("/ui/outbox/{}", r.id)) { (r.id) } }
            td { (time(lang, r.created_at)) }
            td { (destination_name(lang, &r.destination)) }
            td { code { (r.event) } }
            td { @match &order {
                Some(o) => { a href=(format!("/ui/orders/{}", path_segment(o))) { (o) } }
                None => { "—" }
            } }
            td { span class={ "outbox-status status-" (r.status.as_str()) } { (status_name(lang, r.status)) }
                @if r.waiting { " " small { (tr(lang, "ждёт предыдущее", "waits for an earlier one")) } } }
            td.num { (r.attempts) }
            td.last-answer {
                // The dispatcher's error usually starts with the status already.
                @if let Some(s) = r.last_status.filter(|_| !r.last_error.as_deref().is_some_and(|e| e.starts_with("HTTP "))) { "HTTP " (s) " " }
                @if let Some(e) = &r.last_error { small title=(e) { (truncate(&note_words(lang, e), 160)) } }
                @if r.status == OutboxStatus::Dead && viewer.can(Capability::DeadLetters) {
                    (decision_forms(viewer, r, "list", None))
                }
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

fn refused_block(lang: Lang, refused: &[EventRecord]) -> Markup {
    html! {
        section.refused-webhooks {
            h2 { (tr(lang, "Отклонённые вебхуки", "Refused webhooks")) }
            p.hint { (tr(lang, "Запросы, которые не дошли до заказа: неверные учётные данные или нечитаемое тело.", "Requests that never reached an order: wrong credentials or an unreadable body.")) }
            @if refused.is_empty() {
                p.hint data-empty { (tr(lang, "Не было.", "None.")) }
            } @else {
                table.refused {
                    thead { tr {
                        th { (tr(lang, "Когда", "When")) }
                        th.num { "HTTP" }
                        th { (tr(lang, "Причина", "Reason")) }
                    } }
                    tbody {
                        @for e in refused {
                            // Status and reason only: a refused request's headers and body are
                            // exactly what an attacker sent, and may hold someone's secret.
                            tr data-refused-webhook=(e.id) {
                                td { (time(lang, e.at)) }
                                td.num { (e.exchange.status.map(|s| s.to_string()).unwrap_or_default()) }
                                td { (e.exchange.detail.as_deref().or(e.exchange.outcome.as_deref()).unwrap_or("—")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn find(state: &AppState, id: i64) -> Result<OutboxRecord, UiError> {
    state
        .store
        .get_outbox(id)
        .await?
        .ok_or_else(|| UiError::new(StatusCode::NOT_FOUND, "Такой записи нет.", "No such record."))
}

async fn detail(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, UiError> {
    let record = find(&state, id).await?;
    let attempts = state.store.outbox_attempts(id).await?;
    let notice = pending_flash(&headers, "outbox:").and_then(|t| decision_flash(viewer.lang, t));
    let shown = notice.is_some();
    let order = order_label(&state, &record).await?;
    Ok(with_flash(render_detail(&viewer, &record, order.as_deref(), &attempts, notice, None), shown))
}

/// Replay and skip, each with its required reason (on the list, folded into the row).
fn decision_forms(viewer: &Viewer, r: &OutboxRecord, back: &str, typed_reason: Option<&str>) -> Markup {
    let lang = viewer.lang;
    // One reason, two buttons: the skip button sends the same form to its own URL.
    html! {
        form.action-form.decide-form method="post" action=(format!("/ui/outbox/{}/{}", r.id, Decision::Replay.slug())) {
            (csrf_field(viewer))
            input type="hidden" name="back" value=(back);
            label { (tr(lang, "Причина (попадёт в историю заказа)", "Reason (goes into the order's timeline)"))
                textarea name="reason" rows="2" required maxlength=(crate::api::MAX_DECISION_REASON_CHARS) { (typed_reason.unwrap_or_default()) }
            }
            div.decide-buttons {
                button.primary type="submit" data-action="replay" { (tr(lang, "Отправить заново", "Replay")) }
                button.danger type="submit" data-action="skip"
                    formaction=(format!("/ui/outbox/{}/{}", r.id, Decision::Skip.slug())) { (tr(lang, "Пропустить", "Skip")) }
            }
        }
    }
}

fn render_detail(
    viewer: &Viewer,
    r: &OutboxRecord,
    order: Option<&str>,
    attempts: &[EventRecord],
    notice: Option<Markup>,
    typed_reason: Option<&str>,
) -> Markup {
    let lang = viewer.lang;
    let show_codes = viewer.can(Capability::OrderActions);
    let title = format!("{} #{}", tr(lang, "Запись", "Record"), r.id);
    let body = html! {
        div.outbox-detail data-outbox-id=(r.id) data-status=(r.status.as_str()) {
            p { a href="/ui/outbox" { "← " (tr(lang, "Исходящие", "Outbox")) } }
            h1 { (title) " · " code { (r.event) } }
            @if let Some(n) = notice { (n) }
            dl.facts {
                dt { (tr(lang, "Статус", "Status")) } dd { span class={ "outbox-status status-" (r.status.as_str()) } { (status_name(lang, r.status)) } }
                dt { (tr(lang, "Куда", "To")) } dd { (destination_name(lang, &r.destination)) }
                dt { (tr(lang, "Заказ", "Order")) } dd { @match &order {
                    Some(o) => { a href=(format!("/ui/orders/{}", path_segment(o))) { (o) } }
                    None => { "—" }
                } }
                dt { (tr(lang, "Попыток", "Attempts")) } dd { (r.attempts) }
                dt { (tr(lang, "Создано", "Created")) } dd { (time(lang, r.created_at)) }
                @if r.status == OutboxStatus::Pending {
                    dt { (tr(lang, "Следующая попытка", "Next attempt")) } dd { (time(lang, r.next_attempt_at)) " (" (time_left(lang, r.next_attempt_at, now_ms())) ")" }
                }
                @if let Some(t) = r.sent_at { dt { (tr(lang, "Доставлено", "Sent")) } dd { (time(lang, t)) } }
                @if r.waiting { dt { (tr(lang, "Ждёт", "Waiting")) } dd { (tr(lang, "предыдущее уведомление этого заказа", "for an earlier notification of the order")) } }
                @if r.in_doubt { dt { (tr(lang, "Под вопросом", "In doubt")) } dd { (tr(lang, "одна из попыток могла дойти, ответа мы не получили", "an attempt may have arrived without us learning the answer")) } }
                @if let Some(s) = r.last_status { dt { (tr(lang, "Последний HTTP", "Last HTTP")) } dd { (s) } }
                @if let Some(e) = &r.last_error { dt { (tr(lang, "Последняя ошибка", "Last error")) } dd.last-error title=(e) { (note_words(lang, e)) } }
                dt { "Idempotency-Key" } dd { code { (r.idempotency_key) } }
            }
            @if r.status == OutboxStatus::Dead && viewer.can(Capability::DeadLetters) {
                section.decide {
                    h2 { (tr(lang, "Решение", "Decision")) }
                    p.hint { (tr(lang, "Заново — отправить ещё раз (например, после исправления у Kuper). Пропустить — больше не отправлять; следующие уведомления заказа пойдут дальше.", "Replay: send it again (after Kuper fixed something, say). Skip: never send it; the order's next notifications go on.")) }
                    (decision_forms(viewer, r, "detail", typed_reason))
                }
            }
            section {
                h2 { (tr(lang, "Тело", "Body")) }
                pre.body { (readable_body(&r.body, show_codes)) }
            }
            section.attempts {
                h2 { (tr(lang, "Попытки и решения", "Attempts and decisions")) " " small { "(" (attempts.len()) ")" } }
                @if attempts.is_empty() { p.hint { (tr(lang, "Попыток ещё не было.", "No attempts yet.")) } }
                ol.timeline {
                    @for e in attempts {
                        @let x = &e.exchange;
                        li.event data-event-kind=(x.kind) data-attempt=(e.id) {
                            div.event-head {
                                time { (time(lang, e.at)) }
                                @if let Some(s) = x.status { " " span.http-status { "HTTP " (s) } }
                                @if let Some(o) = &x.outcome { " " (outcome_badge(lang, o)) }
                                @if let Some(ms) = x.latency_ms { " " small { (ms) " ms" } }
                                @if let Some(actor) = &x.actor { " " span.actor data-actor=(actor.label()) { (actor_name(lang, actor)) } }
                            }
                            (detail_line(lang, x))
                            // Kuper's answer is the response of the attempt.
                            (event_details(lang, e, show_codes))
                        }
                    }
                }
            }
        }
    };
    page(viewer, &title, Nav::Outbox, body)
}

async fn decide(
    decision: Decision,
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<i64>,
    CsrfForm(form): CsrfForm<ReasonForm>,
) -> Result<Response, UiError> {
    viewer.require(Capability::DeadLetters)?;
    let lang = viewer.lang;
    let record = find(&state, id).await?;
    let checked = crate::api::checked_reason(Some(&form.reason));
    if let Err(e) = checked {
        let attempts = state.store.outbox_attempts(id).await?;
        let e = ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, ..e };
        let notice = refusal_notice(
            lang,
            &e,
            tr(
                lang,
                "Напишите причину: она попадёт в историю заказа.",
                "Write the reason: it goes into the order's timeline.",
            ),
        );
        let order = order_label(&state, &record).await?;
        return Ok((e.status, render_detail(&viewer, &record, order.as_deref(), &attempts, Some(notice), None))
            .into_response());
    }
    let reason = checked.unwrap_or_default();
    let path = format!("/ui/outbox/{id}/{}", decision.slug());
    let exchange = operator_exchange(&viewer, &headers, path, &reason);
    let result = match decision {
        Decision::Replay => state.store.replay(id, exchange).await,
        Decision::Skip => state.store.skip(id, exchange).await,
    };
    match result {
        Ok(_) => {
            tracing::info!(outbox_id = id, operator = %viewer.operator.name, decision = decision.slug(), "console decision on a dead letter");
            let to = if form.back == "list" { "/ui/outbox".to_string() } else { format!("/ui/outbox/{id}") };
            Ok(redirect_with_flash(&to, &format!("outbox:{}", decision.slug())))
        }
        Err(e) => {
            let e = ApiError::from(e);
            if e.status == StatusCode::SERVICE_UNAVAILABLE {
                return Err(e.into());
            }
            let record = find(&state, id).await?;
            let attempts = state.store.outbox_attempts(id).await?;
            let notice = refusal_notice(
                lang,
                &e,
                tr(
                    lang,
                    "Решить можно только недоставленную запись; эту уже разобрали.",
                    "Only a dead letter can be decided; this one already was.",
                ),
            );
            let order = order_label(&state, &record).await?;
            let page = render_detail(&viewer, &record, order.as_deref(), &attempts, Some(notice), Some(&reason));
            Ok((e.status, page).into_response())
        }
    }
}

fn refusal_notice(lang: Lang, e: &ApiError, words: &str) -> Markup {
    html! {
        div.flash.flash-error.refusal data-refusal role="alert" {
            p.refusal-words { (words) }
            p.refusal-engine { small { (tr(lang, "Ответ системы: ", "The system says: ")) (e.message) } }
        }
    }
}

async fn replay_all(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    CsrfForm(form): CsrfForm<ReplayAllForm>,
) -> Result<Response, UiError> {
    viewer.require(Capability::DeadLetters)?;
    let reason = crate::api::checked_reason(Some(&form.reason)).ok().unwrap_or_default();
    let Some(destination) = Destination::parse(form.destination.trim()).filter(|_| !reason.is_empty()) else {
        return Err(UiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Выберите получателя и напишите причину (не длиннее 1000 знаков).",
            "Choose a destination and write the reason (at most 1000 characters).",
        ));
    };
    let (mut replayed, mut failed) = (0u64, 0u64);
    let mut before_id = None;
    let mut seen = 0usize;
    // Newest first, page by page below the last id seen: a replayed record is no longer dead,
    // one that someone else decided meanwhile is counted and passed.
    while seen < REPLAY_ALL_MAX {
        let filter = OutboxFilter {
            status: Some(OutboxStatus::Dead),
            destination: Some(destination.clone()),
            limit: 200,
            before_id,
        };
        let batch = state.store.list_outbox_by(&filter).await?;
        let Some(last) = batch.last() else { break };
        before_id = Some(last.id);
        for r in &batch {
            seen += 1;
            let exchange = operator_exchange(&viewer, &headers, "/ui/outbox/replay-all".into(), &reason);
            match state.store.replay(r.id, exchange).await {
                Ok(_) => replayed += 1,
                Err(e) if e.is_unavailable() => return Err(e.into()),
                Err(_) => failed += 1,
            }
        }
    }
    tracing::info!(destination = %destination, replayed, failed, operator = %viewer.operator.name, "console replayed every dead letter of a destination");
    let to = format!("/ui/outbox?{}", query_string(&[("destination", destination.as_str())]));
    Ok(redirect_with_flash(&to, &format!("outbox:replayed:{replayed}:{failed}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_of_a_record_comes_from_its_body() {
        assert_eq!(
            order_reference(r#"{"event":"order.in_work","payload":{"originalOrderId":"H1","number":"KB-1"}}"#)
                .as_deref(),
            Some("H1")
        );
        assert_eq!(order_reference(r#"{"payload":{"orderUUID":"u-1","number":"KB-1"}}"#).as_deref(), Some("KB-1"));
        assert_eq!(
            order_reference(r#"{"event":{"type":"order.in_work","payload":{"order_id":"H2"}}}"#).as_deref(),
            Some("H2")
        );
        assert_eq!(order_reference(r#"{"payload":{"orderUUID":"u-1"}}"#).as_deref(), Some("u-1"));
        assert_eq!(order_reference(r#"{"number":"KB-2"}"#).as_deref(), Some("KB-2"));
        assert_eq!(order_reference("not json"), None);
    }

    #[test]
    fn destinations_in_words() {
        let erp = Destination::parse("subscriber:erp").unwrap();
        assert_eq!(destination_name(Lang::Ru, &Destination::kuper()), "Kuper");
        assert_eq!(destination_name(Lang::Ru, &erp), "подписчик erp");
        assert_eq!(destination_name(Lang::En, &erp), "subscriber erp");
        for typo in ["", "Kuper", "kuper ", "subscriber:", "subscriber", "erp", "subscriber:a\0b"] {
            assert_eq!(Destination::parse(typo), None, "{typo:?}");
        }
    }
}

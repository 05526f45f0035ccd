//! The health page (`/ui/health`): is Kuper reachable, are the queues moving, what needs a
//! person — in plain words, from one storage snapshot.
//!
//! The access token lives in the dispatcher's memory (possibly another process), so the page
//! cannot read it; it judges the token by its effects instead: Kuper's last answers.

use super::clock::{time, time_left, time_with_left};
use super::i18n::{tr, Lang};
use super::layout::{page, Nav};
use super::session::Viewer;
use super::{now_ms, query_string, KuperAuthMode, UiError};
use crate::AppState;
use axum::extract::State;
use kuper_bridge_storage::{DestinationStats, EventRecord, HealthSnapshot};
use maud::{html, Markup};

/// A card's verdict: its colour and `data-level`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Level {
    Good,
    Warn,
    Bad,
    Unknown,
}

impl Level {
    fn slug(self) -> &'static str {
        match self {
            Level::Good => "good",
            Level::Warn => "warn",
            Level::Bad => "bad",
            Level::Unknown => "unknown",
        }
    }
}

/// Whether the last failure with Kuper is newer than the last success.
fn failing_now(s: &HealthSnapshot) -> Option<&EventRecord> {
    let error = s.last_kuper_error.as_ref()?;
    match s.last_kuper_success_at {
        Some(ok) if ok >= error.at => None,
        _ => Some(error),
    }
}

/// How the token is doing, judged from Kuper's answers.
pub fn token_verdict(lang: Lang, mode: KuperAuthMode, s: &HealthSnapshot) -> (Level, String) {
    let refused = failing_now(s).filter(|e| matches!(e.exchange.status, Some(401 | 403)));
    let unobtainable = failing_now(s).filter(|e| e.exchange.detail.as_deref().is_some_and(|d| d.contains("token")));
    let mode_text = match mode {
        KuperAuthMode::OAuth => tr(
            lang,
            "Вход в Kuper по OAuth: токен получается и обновляется автоматически.",
            "Kuper sign-in by OAuth: the token is fetched and renewed automatically.",
        ),
        KuperAuthMode::ClientToken => tr(
            lang,
            "Вход в Kuper по постоянному токену из настроек.",
            "Kuper sign-in with a fixed client token from the configuration.",
        ),
    };
    let (level, verdict) = if let Some(e) = refused {
        let status = e.exchange.status.unwrap_or_default();
        let text = match lang {
            Lang::Ru => {
                format!("Kuper не принимает наш токен (ответ {status}). Проверьте учётные данные Kuper в настройках.")
            }
            Lang::En => {
                format!("Kuper refuses our token (answer {status}). Check the Kuper credentials in the configuration.")
            }
        };
        (Level::Bad, text)
    } else if unobtainable.is_some() {
        (
            Level::Bad,
            tr(
                lang,
                "Токен получить не удаётся: сервер токенов Kuper не отвечает или отказывает.",
                "No token can be had: Kuper's token endpoint does not answer or refuses.",
            )
            .to_string(),
        )
    } else if s.last_kuper_success_at.is_some() {
        (
            Level::Good,
            tr(lang, "Действует: Kuper принимает наши уведомления.", "Valid: Kuper accepts our notifications.")
                .to_string(),
        )
    } else {
        (
            Level::Unknown,
            tr(
                lang,
                "Ещё не проверялся: уведомлений в Kuper пока не было.",
                "Not tried yet: no notification has gone to Kuper.",
            )
            .to_string(),
        )
    };
    (level, format!("{verdict} {mode_text}"))
}

/// As the outbox page names it, capitalised: it starts a table cell here.
fn destination_name(lang: Lang, d: &kuper_bridge_storage::Destination) -> String {
    let name = super::outbox::destination_name(lang, d);
    let mut chars = name.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or(name)
}

fn card(key: &str, level: Level, title: &str, body: Markup) -> Markup {
    // The queue table needs the room of two cards.
    let wide = if key == "queues" { " wide" } else { "" };
    html! {
        section class={ "card level-" (level.slug()) (wide) } data-health=(key) data-level=(level.slug()) {
            h2 { span.dot aria-hidden="true" {} (title) }
            (body)
        }
    }
}

pub async fn health(viewer: Viewer, State(state): State<AppState>) -> Result<Markup, UiError> {
    let now = now_ms();
    let snapshot = state.store.health_snapshot(now).await?;
    let lang = viewer.lang;
    let title = tr(lang, "Состояние", "Health");
    let body = render(lang, &snapshot, &state.console.settings, now);
    Ok(page(&viewer, title, Nav::Health, html! { h1 { (title) } (body) }))
}

pub fn render(lang: Lang, s: &HealthSnapshot, settings: &super::ConsoleSettings, now: i64) -> Markup {
    let kuper_level = match (failing_now(s), s.last_kuper_success_at) {
        (Some(_), _) => Level::Bad,
        (None, Some(_)) => Level::Good,
        (None, None) => Level::Unknown,
    };
    let (token_level, token_text) = token_verdict(lang, settings.kuper_auth, s);
    let dead: i64 = s.destinations.iter().map(|d| d.dead).sum();
    let queue_level = if dead > 0 { Level::Bad } else { Level::Good };
    let webhook_level = if s.webhook_errors_15min > 0 { Level::Warn } else { Level::Good };
    let attention_level = if s.orders_needing_attention > 0 { Level::Warn } else { Level::Good };
    html! {
        div.cards {
            (card("kuper", kuper_level, tr(lang, "Связь с Kuper", "Kuper connection"), html! {
                p {
                    (tr(lang, "Последний успешный обмен: ", "Last success: "))
                    @match s.last_kuper_success_at {
                        Some(at) => strong { (time_with_left(lang, at, now)) },
                        None => strong { (tr(lang, "ещё не было", "none yet")) },
                    }
                }
                @if let Some(e) = &s.last_kuper_error {
                    p {
                        (tr(lang, "Последняя ошибка: ", "Last error: "))
                        strong { (time_with_left(lang, e.at, now)) }
                        @if let Some(status) = e.exchange.status { " · " (tr(lang, "ответ ", "answer ")) (status) }
                    }
                    @if let Some(detail) = &e.exchange.detail { p.sub title=(detail) { (super::words::note_words(lang, detail)) } }
                } @else {
                    p { (tr(lang, "Ошибок связи не было.", "No connection errors.")) }
                }
            }))
            (card("token", token_level, tr(lang, "Токен доступа к Kuper", "Kuper access token"), html! {
                p { (token_text) }
            }))
            (card("queues", queue_level, tr(lang, "Очереди уведомлений", "Notification queues"), html! {
                @if s.destinations.is_empty() {
                    p { (tr(lang, "Очередей нет.", "No queues.")) }
                } @else {
                    table.compact {
                        thead { tr {
                            th { (tr(lang, "Куда", "Destination")) }
                            th.num { (tr(lang, "Ждут", "Waiting")) }
                            th.num { (tr(lang, "Не доставлены", "Dead letters")) }
                            th { (tr(lang, "Ждёт дольше всех", "Oldest waiting")) }
                        } }
                        tbody {
                            @for d in &s.destinations { (destination_row(lang, d, now)) }
                        }
                    }
                }
                @if dead > 0 {
                    p { a href="/ui/outbox?status=dead" { (tr(lang, "Разобрать недоставленные →", "Handle the dead letters →")) } }
                }
            }))
            (card("webhooks", webhook_level, tr(lang, "Входящие вебхуки", "Incoming webhooks"), html! {
                p {
                    (tr(lang, "Ошибок за 15 минут: ", "Errors in the last 15 minutes: "))
                    strong data-value="webhook_errors_15min" { (s.webhook_errors_15min) }
                }
                @if s.webhook_errors_15min > 0 {
                    p { a href="/ui/outbox" { (tr(lang, "Отклонённые вебхуки — в разделе «Исходящие» →", "Refused webhooks are listed under Outbox →")) } }
                }
            }))
            (card("attention", attention_level, tr(lang, "Заказы, требующие внимания", "Orders needing attention"), html! {
                p {
                    strong data-value="orders_needing_attention" { (s.orders_needing_attention) }
                    " " (tr(lang, "— срок на исходе или пропущен, уведомление не дошло, странное событие или расхождение с Kuper.",
                            "— deadline close or missed, a notification failed, an anomaly or a disagreement with Kuper."))
                }
                @if s.orders_needing_attention > 0 {
                    p { a href="/ui/orders?attention=1" { (tr(lang, "Показать эти заказы →", "Show these orders →")) } }
                }
            }))
            (card("reconciliation", if s.last_reconciliation.is_some() { Level::Good } else { Level::Unknown },
                  tr(lang, "Сверка с Kuper", "Reconciliation with Kuper"), html! {
                @match &s.last_reconciliation {
                    Some(e) => {
                        p { (tr(lang, "Последняя запись сверки: ", "Last reconciliation entry: ")) strong { (time_with_left(lang, e.at, now)) } }
                        @if let Some(detail) = &e.exchange.detail { p.sub { (detail) } }
                    },
                    None => p { (tr(lang, "Сверка ещё не находила ничего или выключена (reconciliation.enabled).",
                                    "Reconciliation has found nothing yet, or it is off (reconciliation.enabled).")) },
                }
            }))
            (card("service", Level::Good, tr(lang, "Сервис", "Service"), html! {
                dl.facts {
                    dt { (tr(lang, "Версия", "Version")) } dd data-value="version" { (env!("CARGO_PKG_VERSION")) }
                    dt { (tr(lang, "База данных", "Database")) } dd data-value="backend" { (settings.backend.name()) }
                    dt { (tr(lang, "Время на странице", "Page time")) } dd { (time(lang, now)) }
                }
            }))
        }
    }
}

fn destination_row(lang: Lang, d: &DestinationStats, now: i64) -> Markup {
    let dead_link =
        format!("/ui/outbox?{}", query_string(&[("status", "dead"), ("destination", d.destination.as_str())]));
    html! {
        tr data-destination=(d.destination) {
            td { (destination_name(lang, &d.destination)) }
            td.num { (d.pending) }
            td.num {
                @if d.dead > 0 { a.bad href=(dead_link) { (d.dead) } } @else { (d.dead) }
            }
            td {
                @match d.oldest_pending_at {
                    Some(at) => (time_left(lang, at, now)),
                    None => "—",
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuper_bridge_storage::Exchange;

    fn error(at: i64, status: Option<i64>, detail: &str) -> EventRecord {
        EventRecord {
            id: 1,
            order_id: None,
            outbox_id: Some(1),
            at,
            exchange: Exchange {
                kind: "notification".into(),
                status,
                detail: Some(detail.into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn the_token_is_judged_by_kupers_answers() {
        let mut s = HealthSnapshot::default();
        assert_eq!(token_verdict(Lang::Ru, KuperAuthMode::OAuth, &s).0, Level::Unknown);
        s.last_kuper_success_at = Some(1_000);
        assert_eq!(token_verdict(Lang::Ru, KuperAuthMode::OAuth, &s).0, Level::Good);
        s.last_kuper_error = Some(error(2_000, Some(401), "unauthorized"));
        let (level, text) = token_verdict(Lang::Ru, KuperAuthMode::OAuth, &s);
        assert_eq!(level, Level::Bad);
        assert!(text.contains("401"), "{text}");
        // A success after the error: the error is history.
        s.last_kuper_success_at = Some(3_000);
        assert_eq!(token_verdict(Lang::En, KuperAuthMode::ClientToken, &s).0, Level::Good);
        s.last_kuper_error = Some(error(4_000, None, "token endpoint unreachable: connection refused"));
        assert_eq!(token_verdict(Lang::En, KuperAuthMode::OAuth, &s).0, Level::Bad);
        // Other failures say nothing about the token.
        s.last_kuper_error = Some(error(4_000, Some(422), "validation"));
        assert_eq!(token_verdict(Lang::En, KuperAuthMode::OAuth, &s).0, Level::Good);
    }

    #[test]
    fn the_page_names_version_backend_and_escapes_details() {
        let s = HealthSnapshot {
            last_kuper_error: Some(error(2_000, Some(500), "<b>boom</b>")),
            destinations: vec![DestinationStats {
                destination: kuper_bridge_storage::Destination::subscriber("wms"),
                pending: 2,
                dead: 1,
                oldest_pending_at: Some(0),
            }],
            ..Default::default()
        };
        let settings = super::super::ConsoleSettings { backend: super::super::Backend::Postgres, ..Default::default() };
        let html = render(Lang::Ru, &s, &settings, 120_000).into_string();
        assert!(html.contains("PostgreSQL"), "{html}");
        assert!(html.contains(env!("CARGO_PKG_VERSION")), "{html}");
        assert!(html.contains("&lt;b&gt;boom&lt;/b&gt;"), "{html}");
        assert!(!html.contains("<b>boom"), "{html}");
        assert!(html.contains("Подписчик wms"), "{html}");
        assert!(html.contains("/ui/outbox?status=dead&amp;destination=subscriber%3Awms"), "{html}");
    }
}

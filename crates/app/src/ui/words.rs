//! The audit log's machine words (outcomes, details, action slugs) as an operator reads them.
//!
//! Storage keeps the engine's and the dispatcher's English as is (it is evidence, and the
//! REST API returns it); only the console translates, and every page that does keeps the raw
//! text in a `title` or in the expandable request details. Text we do not recognise is shown
//! raw rather than half-translated.

use super::i18n::{state_label, tr, Lang};
use super::order::{action_name, cancel_reason_name};
use kuper_bridge_domain::{ActionKind, Scheme};
use kuper_bridge_storage::Exchange;
use maud::{html, Markup};

/// An entry's outcome as a badge: in words, the stored label in `title` and `data-outcome`.
pub fn outcome_badge(lang: Lang, outcome: &str) -> Markup {
    html! { span.outcome data-outcome=(outcome) title=(outcome) { (outcome_name(lang, outcome).unwrap_or(outcome)) } }
}

/// An entry's detail line: in words where known (the stored text in `title`), else as stored.
pub fn detail_line(lang: Lang, x: &Exchange) -> Markup {
    let Some(raw) = x.detail.as_deref() else { return html! {} };
    html! {
        @match detail_words(lang, x) {
            Some(words) if words.is_empty() => {}
            Some(words) if words != raw => { div.event-detail title=(raw) { (words) } }
            _ => { div.event-detail { (raw) } }
        }
    }
}

/// An outcome label of the audit log; `None` for one this table does not know.
pub fn outcome_name(lang: Lang, outcome: &str) -> Option<&'static str> {
    Some(match outcome {
        "created" => tr(lang, "создан", "created"),
        "applied" => tr(lang, "применено", "applied"),
        "accepted" => tr(lang, "принято", "accepted"),
        "duplicate" => tr(lang, "повтор", "duplicate"),
        "out_of_order" => tr(lang, "не по порядку", "out of order"),
        "recorded" => tr(lang, "записано", "recorded"),
        "unknown_order" => tr(lang, "заказ не найден", "unknown order"),
        "unknown_event" => tr(lang, "незнакомое событие", "unknown event"),
        "delivered" => tr(lang, "доставлено", "delivered"),
        "repeat" => tr(lang, "уже было доставлено", "already delivered"),
        "retry" => tr(lang, "будет повтор", "will retry"),
        "dead" => tr(lang, "не доставлено", "dead"),
        "skipped" => tr(lang, "пропущено", "skipped"),
        "pending" => tr(lang, "снова в очереди", "queued again"),
        "valid" => tr(lang, "код верный", "code valid"),
        "invalid" => tr(lang, "код неверный", "wrong code"),
        "locked" => tr(lang, "проверка заблокирована", "checks locked"),
        "declined" => tr(lang, "отклонено", "declined"),
        "disagreement" => tr(lang, "расхождение", "disagreement"),
        "warning" => tr(lang, "срок на исходе", "deadline close"),
        "missed" => tr(lang, "срок прошёл", "deadline missed"),
        _ => return None,
    })
}

/// The name of what a timeline entry names in `event`: an action's name for an action's slug,
/// else the event as is (Kuper's event names are the protocol's words).
pub fn event_label(lang: Lang, kind: &str, event: &str, scheme: Scheme) -> String {
    match ActionKind::parse(event) {
        Some(action) if kind == "action" => action_name(lang, action, scheme).to_string(),
        _ => event.to_string(),
    }
}

/// A timeline entry's detail in the operator's words; `None` when it is best shown raw (or
/// not at all: a webhook whose note only repeats its event's name).
pub fn detail_words(lang: Lang, x: &Exchange) -> Option<String> {
    let detail = x.detail.as_deref()?;
    if x.event.as_deref() == Some(detail) {
        return Some(String::new());
    }
    if x.kind == "action" {
        return action_detail(lang, detail);
    }
    let words = note_words(lang, detail);
    (words != detail || lang == Lang::En).then_some(words)
}

/// An engine or dispatcher note (an outbox record's last error, say) in the operator's words,
/// part by part; parts this module does not know stay as they are.
pub fn note_words(lang: Lang, note: &str) -> String {
    note.split("; ").map(|part| segment(lang, part)).collect::<Vec<_>>().join("; ")
}

/// `"<from> → <to>; queued <events>[; hand-over without a verified code: <reason>]"`
/// (storage's `action_detail`).
fn action_detail(lang: Lang, detail: &str) -> Option<String> {
    let mut parts = detail.splitn(3, "; ");
    let (from, to) = parts.next()?.split_once(" → ")?;
    let queued = parts.next()?.strip_prefix("queued")?.trim();
    let mut out = format!("{} → {}", state_label(lang, from), state_label(lang, to));
    if !queued.is_empty() {
        out.push_str(&format!("; {} {queued}", tr(lang, "в очередь к Kuper:", "queued for Kuper:")));
    }
    if let Some(rest) = parts.next() {
        let reason = rest.strip_prefix("hand-over without a verified code: ")?;
        out.push_str(&format!(
            "; {} {reason}",
            tr(lang, "выдан без проверенного кода:", "handed over without a verified code:")
        ));
    }
    Some(out)
}

/// One `; `-separated part of an engine or dispatcher note.
fn segment(lang: Lang, part: &str) -> String {
    let fixed = match part {
        "payment captured" => Some(tr(lang, "оплата получена", "payment captured")),
        "order already exists" => Some(tr(lang, "заказ уже есть", "order already exists")),
        "already paid" => Some(tr(lang, "уже оплачен", "already paid")),
        "already canceled" => Some(tr(lang, "уже отменён", "already canceled")),
        "paid after cancellation" => Some(tr(lang, "оплачен после отмены", "paid after cancellation")),
        "paid before ready" => Some(tr(lang, "оплачен до готовности", "paid before ready")),
        "recorded" => Some(tr(lang, "записано", "recorded")),
        "verification refused: too many wrong codes" => {
            Some(tr(lang, "проверка закрыта: слишком много неверных кодов", "too many wrong codes: checks locked"))
        }
        "422 treated as a repeat of an earlier attempt that Kuper had applied" => Some(tr(
            lang,
            "ответ 422 — повтор: Kuper уже применил прошлую попытку",
            "422 treated as a repeat of an attempt Kuper had applied",
        )),
        _ => None,
    };
    if let Some(fixed) = fixed {
        return fixed.to_string();
    }
    if let Some(rest) = part.strip_prefix("pickup code verification: ") {
        // A right code: the outcome says it all; attempts left no longer matter.
        if rest.starts_with("valid") {
            return String::new();
        }
        if let Some(left) = rest.split("attempts left ").nth(1).and_then(|l| l.strip_suffix(')')) {
            return format!("{} {left}", tr(lang, "осталось попыток:", "attempts left:"));
        }
    }
    if let Some(slug) = part.strip_prefix("canceled by Kuper (").and_then(|s| s.strip_suffix(')')) {
        return format!(
            "{}: {}",
            tr(lang, "Kuper отменил заказ", "Kuper canceled the order"),
            cancel_reason_name(lang, slug)
        );
    }
    if let Some(rest) = part.strip_prefix("Kuper refused with ") {
        if let Some((status, message)) = rest.split_once(": ") {
            return format!("{} {status}: {message}", tr(lang, "Kuper отказал, HTTP", "Kuper refused, HTTP"));
        }
    }
    if let Some(rest) = part.strip_prefix("gave up after ") {
        if let Some(n) = rest.split(' ').next() {
            return format!("{} {n}", tr(lang, "больше не пытаемся, попыток было:", "gave up, attempts made:"));
        }
    }
    part.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(kind: &str, event: Option<&str>, detail: &str) -> Exchange {
        Exchange {
            kind: kind.into(),
            event: event.map(str::to_string),
            detail: Some(detail.into()),
            ..Default::default()
        }
    }

    #[test]
    fn action_details_name_states_in_russian() {
        let x = exchange("action", Some("start-assembly"), "created → in_work; queued order.in_work");
        assert_eq!(detail_words(Lang::Ru, &x).unwrap(), "Новый → Собирается; в очередь к Kuper: order.in_work");
        let x = exchange(
            "action",
            Some("delivered"),
            "ready → delivered; queued order.delivered; hand-over without a verified code: телефон сел; правда",
        );
        let words = detail_words(Lang::Ru, &x).unwrap();
        assert!(words.ends_with("выдан без проверенного кода: телефон сел; правда"), "{words}");
        assert_eq!(event_label(Lang::Ru, "action", "start-assembly", Scheme::Pickup), "Начать сборку");
        assert_eq!(event_label(Lang::Ru, "webhook", "order.paid", Scheme::Pickup), "order.paid");
    }

    #[test]
    fn engine_notes_are_translated_and_unknown_ones_left_raw() {
        let x = exchange("webhook", Some("order.paid"), "payment captured");
        assert_eq!(detail_words(Lang::Ru, &x).unwrap(), "оплата получена");
        let x = exchange("notification", Some("order.ready"), "Kuper refused with 422: order is final");
        assert_eq!(detail_words(Lang::Ru, &x).unwrap(), "Kuper отказал, HTTP 422: order is final");
        let x = exchange("pickup_verification", None, "pickup code verification: wrong code (attempts left 4)");
        assert_eq!(detail_words(Lang::Ru, &x).unwrap(), "осталось попыток: 4");
        let x = exchange("webhook", Some("courier.assigned"), "courier.assigned");
        assert_eq!(detail_words(Lang::Ru, &x).unwrap(), "");
        let x = exchange("webhook", Some("order.updated"), "something new");
        assert_eq!(detail_words(Lang::Ru, &x), None);
        assert_eq!(outcome_name(Lang::Ru, "dead"), Some("не доставлено"));
        assert_eq!(outcome_name(Lang::Ru, "brand_new"), None);
    }
}

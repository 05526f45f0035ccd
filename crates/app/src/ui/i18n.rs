//! The console's two languages. Russian is the default (the people at the counter read it);
//! English is one switch away. Every operator-facing text exists in both.

use kuper_bridge_domain::{OrderState, Scheme};
use kuper_bridge_storage::{Attention, OperatorRole};

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Lang {
    #[default]
    Ru,
    En,
}

impl Lang {
    /// The `lang` attribute of `<html>`, the `?lang=` value and the `kb_lang` cookie.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ru => "ru",
            Lang::En => "en",
        }
    }

    pub fn parse(s: &str) -> Option<Lang> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ru" => Some(Lang::Ru),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The language an `Accept-Language` header prefers among ours: the entry with the
    /// highest weight whose primary tag is `ru` or `en` (the earlier one on a tie); `q=0`
    /// means "not this one". None when it names neither.
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        let mut best: Option<(Lang, u16)> = None;
        for entry in header.split(',') {
            let mut parts = entry.split(';');
            let tag = parts.next().unwrap_or("").trim();
            let primary = tag.split(['-', '_']).next().unwrap_or("");
            let Some(lang) = Lang::parse(primary) else { continue };
            let mut weight = 1000u16;
            for param in parts {
                if let Some(q) = param.trim().strip_prefix("q=").or_else(|| param.trim().strip_prefix("Q=")) {
                    weight = parse_q(q).unwrap_or(0);
                }
            }
            if weight == 0 {
                continue;
            }
            if best.is_none_or(|(_, w)| weight > w) {
                best = Some((lang, weight));
            }
        }
        best.map(|(lang, _)| lang)
    }
}

/// An HTTP quality value (`0`, `0.8`, `1.000`) in thousandths; None when malformed.
fn parse_q(q: &str) -> Option<u16> {
    let q = q.trim();
    let (int, frac) = q.split_once('.').unwrap_or((q, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

/// One text in both languages: `tr(lang, "Заказы", "Orders")`.
pub fn tr(lang: Lang, ru: &'static str, en: &'static str) -> &'static str {
    match lang {
        Lang::Ru => ru,
        Lang::En => en,
    }
}

/// An order state as a cashier says it.
pub fn state_name(lang: Lang, state: OrderState) -> &'static str {
    use OrderState::*;
    match state {
        Created => tr(lang, "Новый", "New"),
        Accepted => tr(lang, "Принят", "Accepted"),
        InWork => tr(lang, "Собирается", "Being assembled"),
        Assembled => tr(lang, "Собран", "Assembled"),
        Ready => tr(lang, "Готов к выдаче", "Ready"),
        Shipping => tr(lang, "Передан курьеру", "With the courier"),
        Delivering => tr(lang, "В пути", "On the way"),
        Delivered => tr(lang, "Выдан", "Delivered"),
        Canceled => tr(lang, "Отменён", "Canceled"),
    }
}

/// The state's name for a stored slug; the slug itself when it is not one of ours.
pub fn state_label(lang: Lang, slug: &str) -> String {
    OrderState::parse(slug).map(|s| state_name(lang, s).to_string()).unwrap_or_else(|| slug.to_string())
}

/// A fulfilment scheme with its letter, as the documentation names them.
pub fn scheme_name(lang: Lang, scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::KuperDelivery => tr(lang, "A · доставка Kuper", "A · Kuper delivers"),
        Scheme::Pickup => tr(lang, "B · самовывоз", "B · pickup"),
        Scheme::MerchantDelivery => tr(lang, "C · своя доставка", "C · own delivery"),
    }
}

pub fn role_name(lang: Lang, role: OperatorRole) -> &'static str {
    match role {
        OperatorRole::Viewer => tr(lang, "просмотр", "viewer"),
        OperatorRole::Desk => tr(lang, "выдача", "pickup desk"),
        OperatorRole::Operator => tr(lang, "оператор", "operator"),
        OperatorRole::Admin => tr(lang, "администратор", "admin"),
    }
}

/// Why an order needs attention, as a short badge.
pub fn attention_name(lang: Lang, attention: Attention) -> &'static str {
    match attention {
        Attention::DeadLetter => tr(lang, "Уведомление не дошло", "Notification failed"),
        Attention::DeadlineWarning => tr(lang, "Срок на исходе", "Deadline close"),
        Attention::DeadlineMissed => tr(lang, "Срок пропущен", "Deadline missed"),
        Attention::Anomaly => tr(lang, "Странное событие", "Anomaly"),
        Attention::Reconciliation => tr(lang, "Расхождение с Kuper", "Differs from Kuper"),
    }
}

/// A CSS modifier per attention kind (colour of the badge).
pub fn attention_class(attention: Attention) -> &'static str {
    match attention {
        Attention::DeadLetter | Attention::DeadlineMissed => "badge badge-bad",
        Attention::DeadlineWarning | Attention::Reconciliation => "badge badge-warn",
        Attention::Anomaly => "badge badge-info",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_preferred_of_ours() {
        assert_eq!(Lang::from_accept_language("ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7"), Some(Lang::Ru));
        assert_eq!(Lang::from_accept_language("en-GB,en;q=0.9,ru;q=0.8"), Some(Lang::En));
        assert_eq!(Lang::from_accept_language("de-DE,de;q=0.9,en;q=0.5,ru;q=0.4"), Some(Lang::En));
        assert_eq!(Lang::from_accept_language("de-DE,ru;q=0.2,en;q=0.3"), Some(Lang::En));
        // Weights, not order, decide; the earlier one wins a tie.
        assert_eq!(Lang::from_accept_language("en;q=0.5, ru"), Some(Lang::Ru));
        assert_eq!(Lang::from_accept_language("en, ru"), Some(Lang::En));
        // q=0 refuses a language.
        assert_eq!(Lang::from_accept_language("en;q=0, ru;q=0.1"), Some(Lang::Ru));
        assert_eq!(Lang::from_accept_language("en;q=0"), None);
        assert_eq!(Lang::from_accept_language("de, fr"), None);
        assert_eq!(Lang::from_accept_language(""), None);
        assert_eq!(Lang::from_accept_language("*"), None);
        // Malformed weights count as refusals rather than as 1.
        assert_eq!(Lang::from_accept_language("en;q=2, ru;q=0.1"), Some(Lang::Ru));
        assert_eq!(Lang::from_accept_language("EN-us"), Some(Lang::En));
    }

    #[test]
    fn every_state_has_two_different_names() {
        for s in OrderState::ALL {
            assert_ne!(state_name(Lang::Ru, s), state_name(Lang::En, s));
            assert!(!state_name(Lang::Ru, s).is_empty());
        }
        assert_eq!(state_label(Lang::Ru, "in_work"), "Собирается");
        assert_eq!(state_label(Lang::Ru, "mystery"), "mystery");
    }

    #[test]
    fn lang_codes_round_trip() {
        for l in [Lang::Ru, Lang::En] {
            assert_eq!(Lang::parse(l.code()), Some(l));
        }
        assert_eq!(Lang::parse("de"), None);
    }
}

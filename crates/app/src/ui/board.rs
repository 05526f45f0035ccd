//! The orders board (`/ui/orders`): newest first, filters, search, counts per state, pages,
//! and `/ui/orders/rows`, the table body alone, which the page's script fetches every few
//! seconds to stay current without a reload.

use super::clock::{time, time_left};
use super::i18n::{attention_class, attention_name, scheme_name, state_name, tr, Lang};
use super::layout::{page, Nav};
use super::session::Viewer;
use super::{now_ms, path_segment, query_string, UiError};
use crate::AppState;
use axum::extract::{Query, State};
use kuper_bridge_domain::{OrderState, Scheme};
use kuper_bridge_storage::{Attention, OrderFilter, StoredOrder};
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::HashMap;

pub const PAGE_SIZE: usize = 50;
/// A search text longer than this is cut (nobody types more; the database need not see it).
const MAX_SEARCH_CHARS: usize = 200;

/// The board's query string, as typed: unknown or malformed values are ignored rather than
/// refused (a stale bookmark should still open the board).
#[derive(Deserialize, Default, Debug, Clone)]
pub struct BoardQuery {
    state: Option<String>,
    scheme: Option<String>,
    store: Option<String>,
    attention: Option<String>,
    q: Option<String>,
    before: Option<String>,
}

/// The board's filters, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub state: Option<OrderState>,
    pub scheme: Option<Scheme>,
    pub store: Option<String>,
    pub attention: bool,
    pub q: Option<String>,
    pub before: Option<i64>,
}

impl Filters {
    pub fn from_query(q: &BoardQuery) -> Filters {
        let text = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        Filters {
            state: q.state.as_deref().and_then(OrderState::parse),
            scheme: q.scheme.as_deref().and_then(Scheme::parse),
            store: text(&q.store).map(|s| s.chars().take(100).collect()),
            attention: q.attention.as_deref().is_some_and(|a| matches!(a, "1" | "on" | "true")),
            q: text(&q.q).map(|s| s.chars().take(MAX_SEARCH_CHARS).collect()),
            before: q.before.as_deref().and_then(|b| b.trim().parse::<i64>().ok()).filter(|b| *b > 0),
        }
    }

    fn order_filter(&self, limit: i64) -> OrderFilter {
        OrderFilter {
            state: self.state.map(|s| s.as_str().to_string()),
            scheme: self.scheme.map(|s| s.as_str().to_string()),
            store: self.store.clone(),
            limit,
            before_id: self.before,
            search: self.q.clone(),
            attention: self.attention,
        }
    }

    /// The query string of these filters with `state` replaced (the count chips) and
    /// without the page cursor.
    fn query_with_state(&self, state: Option<OrderState>) -> String {
        query_string(&[
            ("state", state.map(|s| s.as_str()).unwrap_or("")),
            ("scheme", self.scheme.map(|s| s.as_str()).unwrap_or("")),
            ("store", self.store.as_deref().unwrap_or("")),
            ("attention", if self.attention { "1" } else { "" }),
            ("q", self.q.as_deref().unwrap_or("")),
        ])
    }

    /// Whether the counts per state depend on the filters (the state filter and the page do
    /// not change them).
    fn narrows_counts(&self) -> bool {
        self.scheme.is_some() || self.store.is_some() || self.attention || self.q.is_some()
    }

    fn is_filtered(&self) -> bool {
        self.state.is_some() || self.scheme.is_some() || self.store.is_some() || self.attention || self.q.is_some()
    }
}

/// One page of the board, read from storage.
pub struct Loaded {
    pub orders: Vec<StoredOrder>,
    pub attention: HashMap<i64, Vec<Attention>>,
    pub counts: Vec<(String, i64)>,
    /// The cursor of the next page, when there is one.
    pub next_before: Option<i64>,
}

pub async fn load(state: &AppState, filters: &Filters) -> Result<Loaded, UiError> {
    // One more than a page: whether a next page exists without counting.
    let mut orders = state.store.list_orders(&filters.order_filter(PAGE_SIZE as i64 + 1)).await?;
    let next_before = if orders.len() > PAGE_SIZE {
        orders.truncate(PAGE_SIZE);
        orders.last().map(|o| o.id)
    } else {
        None
    };
    let ids: Vec<i64> = orders.iter().map(|o| o.id).collect();
    let attention = if ids.is_empty() { HashMap::new() } else { state.store.attention_of(&ids).await? };
    let counts = if filters.narrows_counts() {
        state.store.count_orders_by_state(&filters.order_filter(1)).await?
    } else {
        state.console.counts.all(&state.store).await?
    };
    Ok(Loaded { orders, attention, counts, next_before })
}

pub async fn board(
    viewer: Viewer,
    State(state): State<AppState>,
    Query(q): Query<BoardQuery>,
) -> Result<Markup, UiError> {
    let filters = Filters::from_query(&q);
    let loaded = load(&state, &filters).await?;
    let mut stores: Vec<&String> = state.policy.stores.keys().collect();
    stores.sort();
    let lang = viewer.lang;
    let title = tr(lang, "Заказы", "Orders");
    let body = html! {
        div.page-head {
            h1 { (title) }
            span.live-note data-live-status { (tr(lang, "Обновляется сам", "Updates itself")) }
        }
        (filter_form(lang, &filters, &stores))
        (count_chips(lang, &filters, &loaded.counts))
        div.table-wrap {
            table.board #board data-live="/ui/orders/rows" {
                thead {
                    tr {
                        th { (tr(lang, "Заказ", "Order")) }
                        th { (tr(lang, "Статус", "State")) }
                        th { (tr(lang, "Схема", "Scheme")) }
                        th { (tr(lang, "Магазин", "Store")) }
                        th { (tr(lang, "Покупатель", "Customer")) }
                        th { (tr(lang, "Создан", "Created")) }
                        th { (tr(lang, "Внимание", "Attention")) }
                    }
                }
                (tbody(lang, &loaded, &filters, now_ms()))
            }
        }
        nav.pager {
            @if filters.before.is_some() {
                a.button.secondary href={ "/ui/orders?" (filters.query_with_state(filters.state)) } data-page="first" {
                    "← " (tr(lang, "К началу", "Newest"))
                }
            }
            @if let Some(before) = loaded.next_before {
                @let query = filters.query_with_state(filters.state);
                @let sep = if query.is_empty() { "" } else { "&" };
                a.button.secondary href={ "/ui/orders?" (query) (sep) "before=" (before) } data-page="next" rel="next" {
                    (tr(lang, "Следующие 50", "Next 50")) " →"
                }
            }
        }
    };
    Ok(page(&viewer, title, Nav::Orders, body))
}

/// The table body alone, for the page's script.
pub async fn rows(
    viewer: Viewer,
    State(state): State<AppState>,
    Query(q): Query<BoardQuery>,
) -> Result<Markup, UiError> {
    let filters = Filters::from_query(&q);
    let loaded = load(&state, &filters).await?;
    Ok(tbody(viewer.lang, &loaded, &filters, now_ms()))
}

fn filter_form(lang: Lang, filters: &Filters, stores: &[&String]) -> Markup {
    html! {
        form.filters method="get" action="/ui/orders" role="search" {
            input.search type="search" name="q" value=[filters.q.as_deref()]
                placeholder=(tr(lang, "Номер, телефон, имя или код", "Number, phone, name or code"))
                title=(tr(lang, "Номер заказа, телефон, имя покупателя или код выдачи", "Order number, phone, customer's name or pickup code"))
                aria-label=(tr(lang, "Поиск", "Search"));
            select name="state" aria-label=(tr(lang, "Статус", "State")) {
                option value="" { (tr(lang, "Все статусы", "All states")) }
                @for s in OrderState::ALL {
                    option value=(s.as_str()) selected[filters.state == Some(s)] { (state_name(lang, s)) }
                }
            }
            select name="scheme" aria-label=(tr(lang, "Схема", "Scheme")) {
                option value="" { (tr(lang, "Все схемы", "All schemes")) }
                @for s in Scheme::ALL {
                    option value=(s.as_str()) selected[filters.scheme == Some(s)] { (scheme_name(lang, s)) }
                }
            }
            input.store type="text" name="store" value=[filters.store.as_deref()] list="stores"
                placeholder=(tr(lang, "Магазин", "Store")) aria-label=(tr(lang, "Магазин", "Store"));
            datalist #stores {
                @for s in stores { option value=(s) {} }
            }
            label.check {
                input type="checkbox" name="attention" value="1" checked[filters.attention];
                " " (tr(lang, "Только требующие внимания", "Needing attention only"))
            }
            button.primary type="submit" { (tr(lang, "Найти", "Search")) }
            @if filters.is_filtered() {
                a.button.secondary href="/ui/orders" { (tr(lang, "Сбросить", "Clear")) }
            }
        }
    }
}

fn count_chips(lang: Lang, filters: &Filters, counts: &[(String, i64)]) -> Markup {
    let by_state: HashMap<&str, i64> = counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    html! {
        nav.chips aria-label=(tr(lang, "Заказы по статусам", "Orders by state")) {
            a.chip.current[filters.state.is_none()] href={ "/ui/orders?" (filters.query_with_state(None)) } {
                (tr(lang, "Все", "All")) " " span.count data-count-state="" { (total) }
            }
            @for s in OrderState::ALL {
                @let n = by_state.get(s.as_str()).copied().unwrap_or(0);
                a.chip.current[filters.state == Some(s)].empty[n == 0]
                    href={ "/ui/orders?" (filters.query_with_state(Some(s))) } data-chip=(s.as_str()) {
                    (state_name(lang, s)) " " span.count data-count-state=(s.as_str()) { (n) }
                }
            }
        }
    }
}

/// The counts as the script reads them back: `created=3&in_work=2` (every state, zeros too).
fn counts_attr(counts: &[(String, i64)]) -> String {
    let by_state: HashMap<&str, i64> = counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    let pairs: Vec<(&str, String)> = OrderState::ALL
        .iter()
        .map(|s| (s.as_str(), by_state.get(s.as_str()).copied().unwrap_or(0).to_string()))
        .collect();
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// The reference an order's page is found by: Kuper's id, else our number.
pub fn order_ref(order: &StoredOrder) -> &str {
    order.order.original_order_id.as_deref().unwrap_or(&order.order.number)
}

fn customer_name(order: &StoredOrder) -> Option<&str> {
    order.order.ordered.customer.as_ref()?.get("name")?.as_str().map(str::trim).filter(|s| !s.is_empty())
}

/// The phone's last four digits, the rest hidden: enough to tell customers apart.
pub fn masked_phone(order: &StoredOrder) -> Option<String> {
    let phone = order.order.ordered.customer.as_ref()?.get("phone")?.as_str()?;
    let digits: Vec<char> = phone.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.len() < 4 {
        return None;
    }
    let tail: String = digits[digits.len() - 4..].iter().collect();
    Some(format!("•• {}-{}", &tail[..2], &tail[2..]))
}

pub fn tbody(lang: Lang, loaded: &Loaded, filters: &Filters, now: i64) -> Markup {
    html! {
        tbody #board-rows data-counts=(counts_attr(&loaded.counts)) {
            @if loaded.orders.is_empty() {
                tr.empty-row {
                    td colspan="7" {
                        @if filters.is_filtered() {
                            (tr(lang, "Ничего не найдено. Измените условия поиска.", "Nothing found. Change the search."))
                        } @else {
                            (tr(lang, "Заказов пока нет.", "No orders yet."))
                        }
                    }
                }
            }
            @for o in &loaded.orders {
                (row(lang, o, loaded.attention.get(&o.id).map(Vec::as_slice).unwrap_or(&[]), now))
            }
        }
    }
}

fn row(lang: Lang, o: &StoredOrder, attention: &[Attention], now: i64) -> Markup {
    let reference = order_ref(o);
    let href = format!("/ui/orders/{}", path_segment(reference));
    let state = o.order.state();
    html! {
        tr.attention[!attention.is_empty()] data-order=(reference) data-href=(href) {
            td.ref {
                a href=(href) { (reference) }
                @if o.order.original_order_id.is_some() {
                    div.sub { (o.order.number) }
                }
            }
            td { span class={ "state state-" (state.as_str()) } data-state=(state.as_str()) { (state_name(lang, state)) } }
            td { (scheme_name(lang, o.order.scheme)) }
            td { (o.order.store_id) }
            td.customer {
                @if let Some(name) = customer_name(o) { span.name { (name) } }
                @if let Some(phone) = masked_phone(o) { div.sub { (phone) } }
            }
            td.when {
                (time(lang, o.created_at))
                div.sub { (time_left(lang, o.created_at, now)) }
            }
            td {
                div.badges {
                    @for a in attention {
                        span class=(attention_class(*a)) data-attention=(attention_slug(*a)) { (attention_name(lang, *a)) }
                    }
                }
            }
        }
    }
}

fn attention_slug(a: Attention) -> &'static str {
    match a {
        Attention::DeadLetter => "dead_letter",
        Attention::DeadlineWarning => "deadline_warning",
        Attention::DeadlineMissed => "deadline_missed",
        Attention::Anomaly => "anomaly",
        Attention::Reconciliation => "reconciliation",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuper_bridge_domain::Order;
    use serde_json::json;

    /// An order as storage would hand it over (built from its stored JSON form).
    fn order(id: i64, customer: serde_json::Value) -> StoredOrder {
        let order: Order = serde_json::from_value(json!({
            "originalOrderId": format!("H{id}"), "orderUUID": null, "number": format!("KB-{id}"),
            "storeId": "27", "scheme": "pickup", "restaurant": false, "state": "ready",
            "kuperState": "ready", "paymentState": "not_paid", "expectedAssemblyTime": "",
            "ordered": {
                "storeId": "27", "shipmentMethod": "pickup", "comment": null, "customer": customer,
                "address": null, "delivery": null, "paymentMethods": [], "replacementPolicy": null,
                "completeBefore": null, "positions": [], "totalPrice": null, "discountTotalPrice": null
            },
            "readyComposition": null, "handedOver": null, "pickup": null, "estimatedDeliveryTime": null,
            "courier": null, "courierArrived": false, "cancellation": null, "notified": [], "anomalies": []
        }))
        .expect("a valid stored order");
        StoredOrder { id, order, created_at: 1_700_000_000_000, updated_at: 1_700_000_000_000 }
    }

    #[test]
    fn a_hostile_customer_name_is_text_not_markup() {
        let hostile = r#"<img src=x onerror="alert(1)"><script>alert(2)</script>"#;
        let mut o = order(7, json!({"name": hostile, "phone": "+7 (903) 555-00-11"}));
        o.order.original_order_id = Some(r#"H7"><b>x"#.into());
        let loaded = Loaded { orders: vec![o], attention: HashMap::new(), counts: vec![], next_before: None };
        let html = tbody(Lang::Ru, &loaded, &Filters::default(), 1_700_000_060_000).into_string();
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"), "{html}");
        // The id becomes a percent-encoded link and an escaped attribute.
        assert!(html.contains(r#"href="/ui/orders/H7%22%3E%3Cb%3Ex""#), "{html}");
        assert!(html.contains(r#"data-order="H7&quot;&gt;&lt;b&gt;x""#), "{html}");
        assert!(html.contains("•• 00-11"), "{html}");
    }

    #[test]
    fn rows_link_to_the_kuper_id_else_our_number() {
        let mut o = order(8, json!({"name": "Анна"}));
        assert_eq!(order_ref(&o), "H8");
        o.order.original_order_id = None;
        assert_eq!(order_ref(&o), "KB-8");
        let loaded = Loaded { orders: vec![o], attention: HashMap::new(), counts: vec![], next_before: None };
        let html = tbody(Lang::En, &loaded, &Filters::default(), 0).into_string();
        assert!(html.contains(r#"data-order="KB-8""#), "{html}");
        assert!(html.contains(r#"href="/ui/orders/KB-8""#), "{html}");
        assert!(html.contains(r#"data-state="ready""#), "{html}");
    }

    #[test]
    fn filters_ignore_what_they_do_not_understand() {
        let q = BoardQuery {
            state: Some("nonsense".into()),
            scheme: Some("B".into()),
            store: Some("  ".into()),
            attention: Some("1".into()),
            q: Some(format!("  {}  ", "я".repeat(500))),
            before: Some("-5".into()),
        };
        let f = Filters::from_query(&q);
        assert_eq!(f.state, None);
        assert_eq!(f.scheme, Some(Scheme::Pickup));
        assert_eq!(f.store, None);
        assert!(f.attention);
        assert_eq!(f.q.as_deref().map(|s| s.chars().count()), Some(MAX_SEARCH_CHARS));
        assert_eq!(f.before, None);
        assert_eq!(
            Filters { q: Some("+7 903".into()), attention: true, ..Default::default() }
                .query_with_state(Some(OrderState::Ready)),
            "state=ready&attention=1&q=%2B7+903"
        );
    }

    #[test]
    fn counts_cover_every_state() {
        let attr = counts_attr(&[("ready".into(), 3), ("created".into(), 1)]);
        assert_eq!(
            attr,
            "created=1&accepted=0&in_work=0&assembled=0&ready=3&shipping=0&delivering=0&delivered=0&canceled=0"
        );
    }
}

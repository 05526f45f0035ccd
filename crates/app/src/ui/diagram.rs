//! The order's state machine as an inline SVG, drawn from the rules table (`RULES`) and from
//! the webhook edges the domain's own Mermaid diagram lists, so the console never keeps a
//! copy of a rule: a rule added to the table appears here the next build.
//!
//! Layout: the states of the scheme in one column, in the order of `OrderState::ALL`; straight
//! arrows between neighbours with their label to the right; an action that stays in its state
//! (`pickup-code`, `estimated-delivery-time`) as a loop on the left; an edge that skips a state
//! (`ready` straight from `in_work` when `assembled` is synthesized) as an arc further left;
//! every cancellation as a stub into one bus on the right that ends in `canceled`. Merchant
//! actions are solid, Kuper's webhooks dashed. Colours are SVG presentation attributes (not
//! CSS), so the same picture is right inline and as a standalone `.svg`.

use super::i18n::{state_name, Lang};
use super::{UiError, Viewer};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use kuper_bridge_domain::rules::RULES;
use kuper_bridge_domain::{Order, OrderState, Scheme};
use kuper_bridge_storage::EventRecord;
use kuper_bridge_wire::NotificationEvent;
use maud::{html, Markup};
use std::collections::{BTreeMap, BTreeSet};

/// `GET /ui/orders/{ref}/diagram.svg`: the same picture as on the order page, on its own
/// (to print or to attach to a ticket).
pub fn routes() -> Router<AppState> {
    Router::new().route("/ui/orders/{reference}/diagram.svg", get(diagram_svg))
}

async fn diagram_svg(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(reference): Path<String>,
) -> Result<Response, UiError> {
    let order = state
        .store
        .find_order(&reference)
        .await?
        .ok_or_else(|| UiError::from(kuper_bridge_storage::StoreError::OrderNotFound(reference.clone())))?;
    let events = state.store.order_events(order.id).await?;
    let visited = visited_states(&order.order, &events);
    let svg = state_diagram_svg(viewer.lang, order.order.scheme, order.order.restaurant, &visited, order.order.state());
    Ok((
        [(header::CONTENT_TYPE, "image/svg+xml; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{svg}"),
    )
        .into_response())
}

/// The states an order went through.
///
/// Decided here: the union of (1) `created`, (2) the states its own notifications put it in
/// (`order.notified`, kept on the order itself, so this part survives the audit log's
/// purge), (3) the transitions the timeline recorded — an action's detail is
/// `"<from> → <to>; queued …"` (storage's `action_detail`), and a webhook that was applied
/// (outcome `applied`, or `out_of_order` unless its note says the state was kept) moved the
/// order to the state its event names — and (4) the current state. What Kuper moved (scheme
/// A's received/delivering/delivered, Kuper's cancel) is known only from the timeline; once
/// purged, the current state still shows where it ended.
pub fn visited_states(order: &Order, events: &[EventRecord]) -> Vec<OrderState> {
    let mut seen = BTreeSet::from([OrderState::Created, order.state()]);
    for event in order.notified.iter() {
        let state = match event {
            NotificationEvent::Accepted => Some(OrderState::Accepted),
            NotificationEvent::InWork => Some(OrderState::InWork),
            NotificationEvent::Assembled => Some(OrderState::Assembled),
            NotificationEvent::ReadyForDelivery => Some(OrderState::Ready),
            NotificationEvent::Delivering => Some(OrderState::Delivering),
            NotificationEvent::Delivered => Some(OrderState::Delivered),
            NotificationEvent::Canceled => Some(OrderState::Canceled),
            _ => None,
        };
        seen.extend(state);
    }
    for e in events {
        let x = &e.exchange;
        let detail = x.detail.as_deref().unwrap_or("");
        match x.kind.as_str() {
            "action" => {
                let transition = detail.split(';').next().unwrap_or("");
                if let Some((from, to)) = transition.split_once('→') {
                    seen.extend(OrderState::parse(from.trim()));
                    seen.extend(OrderState::parse(to.trim()));
                }
            }
            "webhook" => {
                let moved = match x.outcome.as_deref() {
                    Some("applied") => true,
                    Some("out_of_order") => !detail.contains("state kept"),
                    _ => false,
                };
                let to = match x.event.as_deref() {
                    Some("order.received") => Some(OrderState::Shipping),
                    Some("order.delivering") => Some(OrderState::Delivering),
                    Some("order.delivered") => Some(OrderState::Delivered),
                    Some("order.canceled") => Some(OrderState::Canceled),
                    _ => None,
                };
                if moved {
                    seen.extend(to);
                }
            }
            _ => {}
        }
    }
    seen.into_iter().collect()
}

#[derive(Debug, Default)]
struct Edge {
    labels: Vec<String>,
    /// At least one merchant action takes this edge (solid); otherwise only Kuper (dashed).
    merchant: bool,
}

/// Every edge of the scheme: the rules table's actions, then Kuper's webhooks (the same list
/// the domain's Mermaid diagram draws).
fn edges(scheme: Scheme, restaurant: bool) -> BTreeMap<(OrderState, OrderState), Edge> {
    let mut out: BTreeMap<(OrderState, OrderState), Edge> = BTreeMap::new();
    for rule in RULES.iter().filter(|r| r.schemes.contains(&scheme) && r.restaurant.is_none_or(|x| x == restaurant)) {
        for &from in rule.from {
            let edge = out.entry((from, rule.to.unwrap_or(from))).or_default();
            let label = rule.action.as_str().to_string();
            if !edge.labels.contains(&label) {
                edge.labels.push(label);
            }
            edge.merchant = true;
        }
    }
    for e in kuper_bridge_domain::diagram::kuper_webhook_edges(scheme, restaurant) {
        let edge = out.entry((e.from, e.to)).or_default();
        edge.labels.push(format!("{} ⇐ Kuper", e.event.as_str()));
    }
    out
}

/// States reachable from `created` over `edges`.
fn reachable(edges: &BTreeMap<(OrderState, OrderState), Edge>) -> BTreeSet<OrderState> {
    let mut seen = BTreeSet::from([OrderState::Created]);
    loop {
        let before = seen.len();
        for (from, to) in edges.keys() {
            if seen.contains(from) {
                seen.insert(*to);
            }
        }
        if seen.len() == before {
            return seen;
        }
    }
}

const NODE_W: i64 = 150;
const NODE_H: i64 = 36;
const STEP_Y: i64 = 76;
/// Room on the left for loop and arc labels.
const MAIN_X: i64 = 290;
const TOP: i64 = 24;
/// The cancellation bus, right of the neighbour labels.
const BUS_X: i64 = MAIN_X + NODE_W + 150;

const INK: &str = "#1f2933";
const MUTED: &str = "#9aa5b1";
const VISITED_FILL: &str = "#d9f2e3";
const CURRENT_FILL: &str = "#0b6e4f";
const PLAIN_FILL: &str = "#ffffff";

/// The order's state diagram, with the states in `visited` marked and `current` highlighted.
/// States are named in the operator's language (the slug is the node's tooltip); edge labels
/// stay the REST API's names (action slugs, Kuper's event names), short enough for an arrow.
pub fn state_diagram_svg(
    lang: Lang,
    scheme: Scheme,
    restaurant: bool,
    visited: &[OrderState],
    current: OrderState,
) -> String {
    render(lang, scheme, restaurant, visited, current).into_string()
}

fn render(lang: Lang, scheme: Scheme, restaurant: bool, visited: &[OrderState], current: OrderState) -> Markup {
    let all_edges = edges(scheme, restaurant);
    let mut shown = reachable(&all_edges);
    // An order stored in a state its scheme cannot reach (an older version's data) still
    // shows where it is and where it was.
    shown.extend(visited.iter().copied());
    shown.insert(current);
    let edges: Vec<(OrderState, OrderState, &Edge)> = all_edges
        .iter()
        .filter(|((from, to), _)| shown.contains(from) && shown.contains(to))
        .map(|((from, to), e)| (*from, *to, e))
        .collect();
    let column: Vec<OrderState> =
        OrderState::ALL.into_iter().filter(|s| *s != OrderState::Canceled && shown.contains(s)).collect();
    let row = |s: OrderState| column.iter().position(|x| *x == s).map(|i| i as i64);
    let y_of = |i: i64| TOP + i * STEP_Y;
    let canceled_y = y_of(column.len() as i64);
    let canceled_shown = shown.contains(&OrderState::Canceled);
    let height = canceled_y + NODE_H + TOP;
    let width = BUS_X + NODE_W / 2 + 20;
    let is_visited = |s: OrderState| visited.contains(&s) || s == current;
    // The last state before a cancellation: the edge into `canceled` that was taken.
    let last_before_cancel = visited.iter().copied().filter(|s| *s != OrderState::Canceled).max();
    let taken = |from: OrderState, to: OrderState| -> bool {
        if from == to || !is_visited(from) || !is_visited(to) {
            return false;
        }
        if to == OrderState::Canceled {
            return Some(from) == last_before_cancel;
        }
        // An edge that skips states was taken only when none of the skipped ones was visited.
        !column.iter().any(|s| *s > from && *s < to && is_visited(*s))
    };
    let title = format!("{} ({}){}", scheme.as_str(), scheme.letter(), if restaurant { ", restaurant" } else { "" });
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="state-diagram" role="img" viewBox=(format!("0 0 {width} {height}"))
            width=(width) height=(height) font-family="sans-serif" font-size="12" data-scheme=(scheme.as_str()) {
            title { (title) }
            defs {
                marker id="kb-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto-start-reverse" {
                    path d="M 0 0 L 10 5 L 0 10 z" fill=(INK) {}
                }
            }
            @for (from, to, edge) in edges.iter().copied() {
                @if let Some((d, label_x, label_y, anchor)) = edge_path(from, to, &row, canceled_y) {
                    @let on = taken(from, to);
                    @let class = format!("edge{}{}", if on { " taken" } else { "" }, if edge.merchant { "" } else { " kuper" });
                    g class=(class) data-edge=(format!("{from}→{to}")) {
                        title { (from) " → " (to) ": " (edge.labels.join(", ")) }
                        path d=(d) fill="none" stroke=(if on { INK } else { MUTED }) stroke-width=(if on { "2.5" } else { "1.3" })
                            stroke-dasharray=[(!edge.merchant).then_some("5 4")] marker-end="url(#kb-arrow)" {}
                        // Cancellations share one bus: one label beside `canceled` says it all.
                        @if to != OrderState::Canceled {
                            text x=(label_x) y=(label_y) text-anchor=(anchor) fill=(INK) font-size="11" {
                                (edge.labels.join(", "))
                            }
                        }
                    }
                }
            }
            @for (i, state) in column.iter().enumerate() {
                (node(lang, *state, MAIN_X, y_of(i as i64), is_visited(*state), *state == current))
            }
            @if canceled_shown {
                (node(lang, OrderState::Canceled, BUS_X - NODE_W / 2, canceled_y, is_visited(OrderState::Canceled), current == OrderState::Canceled))
                text x=(BUS_X - NODE_W / 2 - 8) y=(canceled_y + NODE_H / 2 + 4) text-anchor="end" fill=(INK) font-size="11" {
                    "cancel / order.canceled ⇐ Kuper"
                }
            }
        }
    }
}

/// The path of an edge and where its label goes (x, y, text-anchor); `None` when an end is
/// not drawn.
fn edge_path(
    from: OrderState,
    to: OrderState,
    row: &dyn Fn(OrderState) -> Option<i64>,
    canceled_y: i64,
) -> Option<(String, i64, i64, &'static str)> {
    let left = MAIN_X;
    let center = MAIN_X + NODE_W / 2;
    let mid = |r: i64| TOP + r * STEP_Y + NODE_H / 2;
    if to == OrderState::Canceled {
        let (x, y) = match row(from) {
            Some(r) => (MAIN_X + NODE_W, mid(r)),
            None => return None,
        };
        return Some((format!("M {x} {y} H {BUS_X} V {}", canceled_y - 2), BUS_X, canceled_y, "middle"));
    }
    let (rf, rt) = (row(from)?, row(to)?);
    if from == to {
        let y = mid(rf);
        return Some((
            format!("M {left} {} C {} {} {} {} {left} {}", y - 8, left - 44, y - 22, left - 44, y + 22, y + 8),
            left - 50,
            y + 4,
            "end",
        ));
    }
    if rt == rf + 1 {
        let (y1, y2) = (TOP + rf * STEP_Y + NODE_H, TOP + rt * STEP_Y - 2);
        return Some((format!("M {center} {y1} V {y2}"), center + 8, (y1 + y2) / 2 + 4, "start"));
    }
    // Skips states (or goes up, which no rule does): an arc on the left, wider the more it spans.
    let (y1, y2) = (mid(rf), mid(rt));
    // Far enough left that the arc passes outside the loops and their labels.
    let bulge = left - 190 - 24 * ((rt - rf).abs() - 2).max(0);
    Some((
        format!("M {left} {y1} C {bulge} {y1} {bulge} {y2} {} {y2}", left - 2),
        bulge + (left - bulge) / 4 - 6,
        (y1 + y2) / 2 + 4,
        "end",
    ))
}

fn node(lang: Lang, state: OrderState, x: i64, y: i64, visited: bool, current: bool) -> Markup {
    let (fill, text, stroke_width) = match (current, visited) {
        (true, _) => (CURRENT_FILL, "#ffffff", "3"),
        (false, true) => (VISITED_FILL, INK, "1.5"),
        (false, false) => (PLAIN_FILL, MUTED, "1"),
    };
    let class = format!("state{}{}", if visited { " visited" } else { "" }, if current { " current" } else { "" });
    html! {
        g class=(class) data-node=(state.as_str())
            aria-current=[current.then_some("step")] {
            title { (state.as_str()) }
            rect x=(x) y=(y) width=(NODE_W) height=(NODE_H) rx="8" fill=(fill) stroke=(if visited || current { INK } else { MUTED })
                stroke-width=(stroke_width) {}
            text x=(x + NODE_W / 2) y=(y + NODE_H / 2 + 4) text-anchor="middle" fill=(text)
                font-weight=(if current { "bold" } else { "normal" }) { (state_name(lang, state)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuper_bridge_domain::rules::RULES;

    /// A strict little XML check: every tag closed in order, attributes quoted, no stray `<`
    /// or `&`. Enough to prove the SVG stands on its own as XML (an `.svg` file must).
    fn assert_well_formed(xml: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = xml;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after.find('>').unwrap_or_else(|| panic!("unclosed tag in {after}"));
            let tag = &after[..close];
            rest = &after[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name.trim()), "mismatched </{name}>");
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let (name, mut attrs) = tag.split_once(' ').unwrap_or((tag, ""));
            assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "tag {name:?}");
            while !attrs.trim().is_empty() {
                let a = attrs.trim_start();
                let eq = a.find('=').unwrap_or_else(|| panic!("attribute without value in <{tag}>"));
                assert!(a[eq + 1..].starts_with('"'), "unquoted attribute in <{tag}>");
                let value_end = a[eq + 2..].find('"').unwrap_or_else(|| panic!("unterminated value in <{tag}>"));
                let value = &a[eq + 2..eq + 2 + value_end];
                assert!(!value.contains('<'), "< in an attribute of <{tag}>");
                check_text(value);
                attrs = &a[eq + 2 + value_end + 1..];
            }
            if !self_closing {
                stack.push(name.to_string());
            }
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    fn check_text(text: &str) {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#"].iter().any(|e| entity.starts_with(e)),
                "unescaped & in {text:?}"
            );
        }
    }

    fn node_classes(svg: &str, state: OrderState) -> String {
        let marker = format!("data-node=\"{}\"", state.as_str());
        let at = svg.find(&marker).unwrap_or_else(|| panic!("no node {state}"));
        let start = svg[..at].rfind("<g ").unwrap();
        let end = at + svg[at..].find('>').unwrap();
        svg[start..end].to_string()
    }

    #[test]
    fn every_rule_edge_of_the_scheme_appears() {
        for scheme in Scheme::ALL {
            for restaurant in [false, true] {
                let svg = state_diagram_svg(Lang::Ru, scheme, restaurant, &[OrderState::Created], OrderState::Created);
                let drawn = reachable(&edges(scheme, restaurant));
                let mut checked = 0;
                for rule in
                    RULES.iter().filter(|r| r.schemes.contains(&scheme) && r.restaurant.is_none_or(|x| x == restaurant))
                {
                    for &from in rule.from.iter().filter(|s| drawn.contains(s)) {
                        let to = rule.to.unwrap_or(from);
                        let marker = format!("data-edge=\"{from}→{to}\"");
                        let at = svg
                            .find(&marker)
                            .unwrap_or_else(|| panic!("{scheme} r={restaurant}: no edge {from}→{to}\n{svg}"));
                        let title_end = svg[at..].find("</title>").unwrap() + at;
                        assert!(svg[at..title_end].contains(rule.action.as_str()), "{from}→{to} names {}", rule.action);
                        checked += 1;
                    }
                }
                assert!(checked >= 8, "{scheme} {restaurant}: {checked}");
                // Kuper's edges too (scheme A's courier steps, Kuper's cancellation).
                if scheme == Scheme::KuperDelivery {
                    assert!(svg.contains("data-edge=\"shipping→delivering\""), "{svg}");
                    assert!(svg.contains("order.delivered ⇐ Kuper"));
                }
                assert!(svg.contains("data-edge=\"created→canceled\""));
                // Nothing the scheme cannot reach is drawn.
                if scheme == Scheme::Pickup {
                    assert!(!svg.contains("data-node=\"shipping\""), "{svg}");
                    assert!(svg.contains("pickup-code"));
                }
                if !restaurant {
                    assert!(!svg.contains("data-node=\"accepted\""));
                }
                assert_well_formed(&svg);
            }
        }
    }

    #[test]
    fn current_is_highlighted_and_visited_marked() {
        let visited = [OrderState::Created, OrderState::InWork, OrderState::Ready];
        let svg = state_diagram_svg(Lang::Ru, Scheme::Pickup, false, &visited, OrderState::Ready);
        assert_well_formed(&svg);
        assert!(node_classes(&svg, OrderState::Ready).contains("current"), "{svg}");
        assert!(node_classes(&svg, OrderState::Ready).contains("aria-current=\"step\""));
        assert!(node_classes(&svg, OrderState::InWork).contains("visited"));
        assert!(!node_classes(&svg, OrderState::InWork).contains("current"));
        assert!(!node_classes(&svg, OrderState::Assembled).contains("visited"));
        assert_eq!(svg.matches("aria-current").count(), 1, "one current state");
        // in_work → ready without assembled: the arc was taken, the two steps were not.
        let edge = |e: &str| {
            let at = svg.find(&format!("data-edge=\"{e}\"")).unwrap();
            svg[svg[..at].rfind("<g ").unwrap()..at].to_string()
        };
        assert!(edge("in_work→ready").contains("taken"), "{svg}");
        assert!(!edge("in_work→assembled").contains("taken"));
        assert!(!edge("ready→delivered").contains("taken"));
    }

    #[test]
    fn an_unreachable_stored_state_is_still_drawn() {
        // Scheme B never reaches shipping, but an older version may have stored it.
        let svg = state_diagram_svg(
            Lang::Ru,
            Scheme::Pickup,
            false,
            &[OrderState::Created, OrderState::Shipping],
            OrderState::Shipping,
        );
        assert!(node_classes(&svg, OrderState::Shipping).contains("current"));
        assert!(svg.contains("data-edge=\"shipping→canceled\""), "the rule that cancels it is drawn");
        assert_well_formed(&svg);
    }

    #[test]
    fn visited_states_come_from_notifications_and_the_timeline() {
        let policy = kuper_bridge_domain::Policy::default();
        let mut order = kuper_bridge_domain::diagram::sample_order(Scheme::KuperDelivery, false, &policy)
            .and_then(|o| o.in_state(OrderState::Delivering))
            .unwrap();
        order.notified = [NotificationEvent::InWork, NotificationEvent::ReadyForDelivery].into_iter().collect();
        let event = |kind: &str, event: Option<&str>, outcome: Option<&str>, detail: &str| EventRecord {
            id: 1,
            order_id: Some(1),
            outbox_id: None,
            at: 0,
            exchange: kuper_bridge_storage::Exchange {
                kind: kind.into(),
                event: event.map(Into::into),
                outcome: outcome.map(Into::into),
                detail: Some(detail.into()),
                ..Default::default()
            },
        };
        let events = vec![
            event("action", Some("start-assembly"), None, "created → in_work; queued order.in_work"),
            event("webhook", Some("order.received"), Some("applied"), "order.received"),
            event("webhook", Some("order.paid"), Some("applied"), "payment captured"),
        ];
        assert_eq!(
            visited_states(&order, &events),
            [OrderState::Created, OrderState::InWork, OrderState::Ready, OrderState::Shipping, OrderState::Delivering]
        );
        // A copy of Kuper's event that the scheme does not take moved nothing.
        let kept = vec![event("webhook", Some("order.delivered"), Some("out_of_order"), "recorded, state kept")];
        assert!(!visited_states(&order, &kept).contains(&OrderState::Delivered));
    }
}

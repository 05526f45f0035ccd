//! Mermaid diagrams generated from the rules table and by running the engine, so the
//! documentation cannot drift from the code (a test compares them with docs/diagrams.md).

use crate::engine::{self, apply_action, apply_webhook};
use crate::input::{CustomerCode, PromisedTime};
use crate::order::Order;
use crate::policy::{Delivery, Policy, StoreProfile};
use crate::rules::{Action, Facts, RULES};
use crate::state::{OrderState, Scheme};
use kuper_bridge_wire::{WebhookEnvelope, WebhookEvent};
use std::collections::BTreeSet;
use std::fmt::Write;

/// A state change Kuper makes with a webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebhookEdge {
    pub from: OrderState,
    pub to: OrderState,
    pub event: WebhookEvent,
}

/// Kuper webhooks that move the order forward, per scheme (see engine::apply_webhook).
fn webhook_steps(scheme: Scheme) -> Vec<WebhookEdge> {
    let edge = |from, to, event| WebhookEdge { from, to, event };
    let mut edges = Vec::new();
    if scheme == Scheme::KuperDelivery {
        edges.push(edge(OrderState::Ready, OrderState::Shipping, WebhookEvent::OrderReceived));
        edges.push(edge(OrderState::Shipping, OrderState::Delivering, WebhookEvent::OrderDelivering));
        edges.push(edge(OrderState::Delivering, OrderState::Delivered, WebhookEvent::OrderDelivered));
    }
    edges
}

/// Every webhook edge of a scheme, as [`state_diagram`] lists them: Kuper's own steps
/// (scheme A's courier) and its cancellation from every state the scheme reaches that is not
/// final. For pictures other than Mermaid (the console's SVG), so none has to parse Mermaid.
pub fn kuper_webhook_edges(scheme: Scheme, restaurant: bool) -> Vec<WebhookEdge> {
    let mut edges = webhook_steps(scheme);
    for from in OrderState::ALL {
        if from != OrderState::Canceled && from != OrderState::Delivered && reachable(scheme, restaurant, from) {
            edges.push(WebhookEdge { from, to: OrderState::Canceled, event: WebhookEvent::OrderCanceled });
        }
    }
    edges
}

/// One `stateDiagram-v2` for a scheme, restaurant or not.
pub fn state_diagram(scheme: Scheme, restaurant: bool) -> String {
    let mut lines = BTreeSet::new();
    let mut out = String::new();
    let _ = writeln!(out, "stateDiagram-v2");
    let _ = writeln!(out, "    [*] --> created: order.created ⇐ Kuper / answer created");
    for rule in RULES {
        if !rule.schemes.contains(&scheme) || rule.restaurant.is_some_and(|r| r != restaurant) {
            continue;
        }
        // Guards that depend on configuration are drawn with the default configuration.
        if rule.guard == crate::rules::Guard::SynthesizeAssembled {
            continue;
        }
        let emits: Vec<&str> = rule.emits.iter().map(|e| e.as_str()).collect();
        for &from in rule.from.iter().filter(|s| reachable(scheme, restaurant, **s)) {
            let to = rule.to.unwrap_or(from);
            lines.insert((
                order_index(from),
                order_index(to),
                format!("    {} --> {}: {} ⇒ {}", from, to, rule.action, emits.join(", ")),
            ));
        }
    }
    for WebhookEdge { from, to, event } in kuper_webhook_edges(scheme, restaurant) {
        lines.insert((order_index(from), order_index(to), format!("    {from} --> {to}: {} ⇐ Kuper", event.as_str())));
    }
    for (_, _, l) in lines {
        let _ = writeln!(out, "{l}");
    }
    let _ = writeln!(out, "    delivered --> [*]");
    let _ = writeln!(out, "    canceled --> [*]");
    out
}

fn order_index(s: OrderState) -> usize {
    OrderState::ALL.iter().position(|x| *x == s).unwrap_or(usize::MAX)
}

fn reachable(scheme: Scheme, restaurant: bool, state: OrderState) -> bool {
    let facts = [false, true].map(|p| Facts {
        pickup_code_sent: p,
        pickup_code_verified: p,
        handover_override: false,
        eta_sent: false,
        synthesize_assembled: false,
    });
    state == OrderState::Created
        || RULES.iter().any(|r| {
            r.schemes.contains(&scheme)
                && r.restaurant.is_none_or(|x| x == restaurant)
                && r.to == Some(state)
                && facts.iter().any(|f| r.from.iter().any(|from| r.matches(scheme, restaurant, *from, *f)))
        })
        || webhook_steps(scheme).iter().any(|e| e.to == state)
}

enum Step {
    Merchant(Action),
    Kuper(WebhookEvent),
    /// The customer shows the pickup code and the counter checks it (storage keeps the
    /// attempts; here it is simply found valid).
    CodeVerified,
}

/// The expected exchange of one scheme, as the brief draws it.
fn happy_path(scheme: Scheme, restaurant: bool) -> Vec<Step> {
    use Step::*;
    let mut steps = Vec::new();
    if restaurant {
        steps.push(Merchant(Action::Accept { expected_assembly_time: None }));
    }
    steps.push(Merchant(Action::StartAssembly));
    if scheme == Scheme::KuperDelivery {
        steps.push(Kuper(WebhookEvent::CourierAssigned));
        steps.push(Kuper(WebhookEvent::CourierArrived));
    }
    steps.push(Merchant(Action::Assembled));
    steps.push(Merchant(Action::Ready { positions: None }));
    match scheme {
        Scheme::KuperDelivery => {
            steps.extend([
                Kuper(WebhookEvent::OrderPaid),
                Kuper(WebhookEvent::OrderReceived),
                Kuper(WebhookEvent::OrderDelivering),
                Kuper(WebhookEvent::OrderDelivered),
            ]);
        }
        Scheme::Pickup => {
            steps.push(Merchant(Action::PickupCode { code: CustomerCode::parse("482913") }));
            steps.push(Kuper(WebhookEvent::OrderPaid));
            steps.push(CodeVerified);
            steps.push(Merchant(Action::Delivered { positions: None, handover_override: None }));
        }
        Scheme::MerchantDelivery => {
            steps.push(Kuper(WebhookEvent::OrderPaid));
            steps.push(Merchant(Action::EstimatedDeliveryTime {
                at: PromisedTime::parse("at", "2026-03-14T12:30:00+03:00"),
            }));
            steps.push(Merchant(Action::Delivering));
            steps.push(Merchant(Action::Delivered { positions: None, handover_override: None }));
        }
    }
    steps
}

/// A sample order of the given scheme, for diagrams and tests.
pub fn sample_order(scheme: Scheme, restaurant: bool, policy: &Policy) -> Option<Order> {
    let body = if scheme == Scheme::Pickup {
        include_str!("../../../fixtures/webhooks/order.created.pickup.json")
    } else {
        include_str!("../../../fixtures/webhooks/order.created.kuper-delivery.json")
    };
    let env = WebhookEnvelope::parse(body.as_bytes()).ok()?;
    let mut p = policy.clone();
    p.default_store = StoreProfile {
        delivery: if scheme == Scheme::MerchantDelivery { Delivery::Merchant } else { Delivery::Kuper },
        restaurant,
    };
    p.stores.clear();
    let now = chrono::DateTime::parse_from_rfc3339("2026-03-14T10:02:11+03:00").ok()?;
    engine::create_order(&env, &p, "KB-1".into(), now).ok()
}

fn webhook_body(order: &Order, event: WebhookEvent) -> Option<WebhookEnvelope> {
    let mut body = serde_json::json!({
        "event_type": event.as_str(),
        "payload": {"originalOrderId": order.original_order_id, "orderUUID": order.order_uuid},
    });
    if event == WebhookEvent::CourierAssigned {
        body["payload"]["courier"] = serde_json::json!({"name": "Алексей", "phone": "+79990001122"});
    }
    WebhookEnvelope::parse(body.to_string().as_bytes()).ok()
}

/// The sequence diagram of the expected exchange, produced by running the engine.
pub fn sequence_diagram(scheme: Scheme, restaurant: bool) -> String {
    let policy = Policy::default();
    let mut out = String::new();
    let _ = writeln!(out, "sequenceDiagram");
    let _ = writeln!(out, "    participant Kuper");
    let _ = writeln!(out, "    participant Bridge as kuper-bridge");
    let _ = writeln!(out, "    participant Store as Store systems");
    let Some(mut order) = sample_order(scheme, restaurant, &policy) else {
        let _ = writeln!(out, "    Note over Kuper: sample order unavailable");
        return out;
    };
    let _ = writeln!(out, "    Kuper->>Bridge: webhook order.created");
    let _ = writeln!(out, "    Bridge-->>Kuper: 200 status created, number, expectedAssemblyTime");
    for step in happy_path(scheme, restaurant) {
        match step {
            Step::Merchant(action) => {
                let kind = action.kind();
                match apply_action(&order, action, &policy) {
                    Ok(d) => {
                        let _ = writeln!(out, "    Store->>Bridge: POST /orders/{{ref}}/{kind}");
                        for n in &d.notifications {
                            let _ = writeln!(out, "    Bridge->>Kuper: notification {}", n.event);
                        }
                        order = d.order;
                    }
                    Err(e) => {
                        let _ = writeln!(out, "    Note over Bridge: {kind} refused: {e}");
                    }
                }
            }
            Step::CodeVerified => {
                let _ = writeln!(out, "    Store->>Bridge: POST /orders/{{ref}}/pickup-code/verify (valid)");
                if let Some(p) = order.pickup.as_mut() {
                    p.verified = true;
                }
            }
            Step::Kuper(event) => {
                if let Some(env) = webhook_body(&order, event) {
                    let d = apply_webhook(&order, &env);
                    let _ = writeln!(out, "    Kuper->>Bridge: webhook {event} ({})", d.outcome.as_str());
                    order = d.order;
                }
            }
        }
    }
    let _ = writeln!(out, "    Note over Kuper,Bridge: final state {}", order.state());
    out
}

/// docs/diagrams.md, whole.
pub fn document() -> String {
    let mut out = String::new();
    out.push_str("# Order state machines and expected exchanges\n\n");
    out.push_str("Generated by `kuper-bridge diagrams` from the rules table in `crates/domain/src/rules.rs`\n");
    out.push_str("and by running the order engine over each scheme's happy path. Do not edit by hand:\n");
    out.push_str("`cargo test` fails when this file and the code disagree; regenerate with\n");
    out.push_str("`cargo run -p kuper-bridge -- diagrams > docs/diagrams.md`.\n\n");
    out.push_str(
        "Edge labels: `action ⇒ notification` for merchant actions (REST API), `event ⇐ Kuper` for webhooks.\n",
    );
    out.push_str("Kuper may cancel in any state before the end; merchant cancellation follows protocol.md §5.\n");
    for scheme in Scheme::ALL {
        for restaurant in [false, true] {
            let title = match scheme {
                Scheme::KuperDelivery => "A — merchant assembly, Kuper delivery",
                Scheme::Pickup => "B — merchant assembly, pickup",
                Scheme::MerchantDelivery => "C — merchant assembly, merchant delivery",
            };
            let suffix = if restaurant { " (restaurant)" } else { "" };
            let _ = write!(out, "\n## {title}{suffix}\n\n### States\n\n```mermaid\n{}```\n\n### Expected exchange\n\n```mermaid\n{}```\n", state_diagram(scheme, restaurant), sequence_diagram(scheme, restaurant));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_edges_are_the_diagrams_kuper_lines() {
        for scheme in Scheme::ALL {
            for restaurant in [false, true] {
                let d = state_diagram(scheme, restaurant);
                let listed = d.lines().filter(|l| l.contains("⇐ Kuper") && !l.contains("[*]")).count();
                let edges = kuper_webhook_edges(scheme, restaurant);
                assert_eq!(edges.len(), listed, "{scheme} {restaurant}:\n{d}");
                for e in edges {
                    let line = format!("    {} --> {}: {} ⇐ Kuper\n", e.from, e.to, e.event.as_str());
                    assert!(d.contains(&line), "{line}{d}");
                }
            }
        }
    }

    #[test]
    fn happy_paths_reach_delivered_without_refusals() {
        for scheme in Scheme::ALL {
            for restaurant in [false, true] {
                let d = sequence_diagram(scheme, restaurant);
                assert!(d.contains("final state delivered"), "{scheme} {restaurant}:\n{d}");
                assert!(!d.contains("refused"), "{d}");
                assert!(!d.contains("out_of_order") && !d.contains("duplicate"), "{d}");
            }
        }
    }

    #[test]
    fn state_diagrams_name_scheme_specific_actions() {
        assert!(state_diagram(Scheme::Pickup, false).contains("pickup-code"));
        assert!(!state_diagram(Scheme::KuperDelivery, false).contains("pickup-code"));
        assert!(state_diagram(Scheme::MerchantDelivery, false).contains("delivering ⇒ order.delivering"));
        assert!(state_diagram(Scheme::KuperDelivery, true).contains("accept ⇒ order.accepted"));
    }
}

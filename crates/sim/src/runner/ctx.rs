//! One scenario while it plays: the orders it placed, what it expects of each, and the
//! primitive steps scenarios are written in. Every step first records what arrived since the
//! last one, so the transcript follows the order in which the runner observed things, which
//! for a well-behaved merchant is the same on every run.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

use super::merchant_api::MerchantApi;
use super::report::{ExchangeLine, Party, ScenarioResult};
use super::{NotificationFormatChoice, RunOptions};
use crate::driver::Answer;
use crate::faults::Outage;
use crate::generate::{generate, GeneratedOrder, OrderParams};
use crate::http::App;
use crate::model::{EventKind, Integration, KuperState, PaymentState, Scheme};
use crate::ops::{Delivery, WebhookRequest};
use crate::world::{now_moscow, NotificationRecord, Verdict};

/// How often the runner looks at Kuper's view while it waits.
const POLL: Duration = Duration::from_millis(20);
/// Orders drawn before giving up on one with the features a scenario needs.
const MAX_DRAWS: usize = 200;
/// Long enough to outlast any scenario; the runner ends the outage itself.
const OUTAGE: Duration = Duration::from_secs(600);

/// The scenario cannot go on; why is already among the failures.
#[derive(Debug)]
pub(super) struct Abort;

pub(super) type Step<T = ()> = Result<T, Abort>;

/// Which kind of order to place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct OrderKind {
    pub scheme: Scheme,
    pub restaurant: bool,
}

impl OrderKind {
    pub const A: OrderKind = OrderKind { scheme: Scheme::A, restaurant: false };
    pub const B: OrderKind = OrderKind { scheme: Scheme::B, restaurant: false };
    pub const C: OrderKind = OrderKind { scheme: Scheme::C, restaurant: false };
    pub const RESTAURANT: OrderKind = OrderKind { scheme: Scheme::A, restaurant: true };
}

/// An order of this scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct OrderRef(usize);

struct Tracked {
    /// Index in the simulator's world.
    index: usize,
    id: String,
    /// Every notification the merchant must have sent so far, in order.
    expected: Vec<EventKind>,
    /// Sequence numbers of the notification records already transcribed.
    seen: HashSet<u64>,
}

/// Something the merchant sent, for putting in arrival order.
enum Arrival {
    /// A notification of the order at this position in the scenario (`None`: of no order
    /// Kuper knows, such as one naming a wrong order id).
    Notification(Option<usize>, Box<NotificationRecord>),
    /// A token issued after the notification with this sequence number had arrived.
    Token(u64),
}

impl Arrival {
    fn key(&self) -> (u64, u8) {
        match self {
            Arrival::Notification(_, record) => (record.seq, 0),
            Arrival::Token(after) => (*after, 1),
        }
    }
}

/// Kuper's view of one order at one moment.
pub(super) struct Snapshot {
    pub done: Vec<EventKind>,
    pub state: KuperState,
    pub payment: PaymentState,
    pub pickup_code: Option<String>,
    pub notifications: Vec<NotificationRecord>,
}

pub(super) struct Ctx<'a> {
    app: &'a App,
    pub opts: &'a RunOptions,
    api: Option<&'a MerchantApi>,
    pub rng: StdRng,
    /// Draws the Kuper ids of this scenario's orders ([`RunOptions::id_seed`]).
    ids: StdRng,
    started: Instant,
    exchange: Vec<ExchangeLine>,
    failures: Vec<String>,
    orders: Vec<Value>,
    tracked: Vec<Tracked>,
    tokens_seen: u64,
    /// The last notification before this scenario: later ones tied to no order are its own.
    first_seq: u64,
    strays_seen: HashSet<u64>,
    /// Rejections this scenario provokes on purpose (a 401 after the tokens are revoked).
    tolerated: Vec<&'static str>,
    /// Notifications refused for a token Kuper does not know (401 `unauthorized`): judged
    /// when the scenario ends. A merchant that then gets a new token and sends the same event
    /// again has done what protocol.md §9 asks (a token it cached from another Kuper instance,
    /// e.g. an earlier run's, is no fault); one that never does fails.
    unauthorized: Vec<NotificationRecord>,
    format_reported: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(app: &'a App, opts: &'a RunOptions, api: Option<&'a MerchantApi>, seed: u64) -> Self {
        Self {
            app,
            opts,
            api,
            rng: StdRng::seed_from_u64(seed),
            ids: StdRng::seed_from_u64(opts.id_seed ^ seed),
            started: Instant::now(),
            exchange: Vec::new(),
            failures: Vec::new(),
            orders: Vec::new(),
            tracked: Vec::new(),
            tokens_seen: app.tokens().issued(),
            first_seq: app.last_seq(),
            strays_seen: HashSet::new(),
            tolerated: Vec::new(),
            unauthorized: Vec::new(),
            format_reported: false,
        }
    }

    pub fn into_result(mut self, name: &str, description: &str) -> ScenarioResult {
        self.sync();
        self.judge_unauthorized();
        ScenarioResult {
            name: name.to_owned(),
            description: description.to_owned(),
            passed: self.failures.is_empty(),
            duration: self.started.elapsed(),
            failures: self.failures,
            exchange: self.exchange,
            orders: self.orders,
        }
    }

    /// True when the runner plays the store staff through the merchant's REST API.
    pub fn driven(&self) -> bool {
        self.api.is_some()
    }

    pub fn tolerate(&mut self, rule: &'static str) {
        self.tolerated.push(rule);
    }

    pub fn fail(&mut self, rule: &str, detail: impl std::fmt::Display) {
        self.failures.push(format!("{rule}: {detail}"));
    }

    pub fn id(&self, order: OrderRef) -> String {
        self.tracked.get(order.0).map(|t| t.id.clone()).unwrap_or_default()
    }

    fn line(&mut self, from: Party, to: Party, what: String, answer: Option<String>, ok: bool) {
        let at = self.started.elapsed();
        self.exchange.push(ExchangeLine { at, from, to, what, answer, ok, note: false });
    }

    /// A note in the transcript about something Kuper did on its own (outage, revocation).
    pub fn note(&mut self, text: impl Into<String>) {
        let at = self.started.elapsed();
        self.exchange.push(ExchangeLine {
            at,
            from: Party::Kuper,
            to: Party::Kuper,
            what: text.into(),
            answer: None,
            ok: true,
            note: true,
        });
    }

    pub fn snapshot(&self, order: OrderRef) -> Option<Snapshot> {
        let index = self.tracked.get(order.0)?.index;
        let world = self.app.world();
        let record = world.order(index)?;
        Some(Snapshot {
            done: record.done.clone(),
            state: record.state,
            payment: record.payment,
            pickup_code: record.pickup_code.clone(),
            notifications: record.notifications.clone(),
        })
    }

    /// Records what arrived since the last look, in arrival order: every order's new
    /// notifications (reporting refusals and the wrong body format) and token requests.
    pub fn sync(&mut self) {
        let mut fresh: Vec<Arrival> = Vec::new();
        let marks: Vec<u64> = {
            let tokens = self.app.tokens();
            let seen = usize::try_from(self.tokens_seen).unwrap_or(usize::MAX);
            tokens.marks().get(seen..).map(<[u64]>::to_vec).unwrap_or_default()
        };
        self.tokens_seen += marks.len() as u64;
        fresh.extend(marks.into_iter().map(Arrival::Token));
        for position in 0..self.tracked.len() {
            let Some(snapshot) = self.snapshot(OrderRef(position)) else {
                continue;
            };
            if let Some(tracked) = self.tracked.get_mut(position) {
                let new = snapshot.notifications.into_iter().filter(|n| tracked.seen.insert(n.seq));
                fresh.extend(new.map(|n| Arrival::Notification(Some(position), Box::new(n))));
            }
        }
        // Notifications Kuper could not tie to any order, sent since this scenario began.
        let strays: Vec<NotificationRecord> = self
            .app
            .world()
            .log()
            .iter()
            .filter(|n| n.original_order_id.is_none() && n.seq > self.first_seq)
            .cloned()
            .collect();
        let strays = strays.into_iter().filter(|n| self.strays_seen.insert(n.seq));
        fresh.extend(strays.map(|n| Arrival::Notification(None, Box::new(n))));
        fresh.sort_by_key(Arrival::key);
        for arrival in fresh {
            match arrival {
                Arrival::Notification(position, record) => self.transcribe(position, *record),
                Arrival::Token(_) => self.line(
                    Party::Merchant,
                    Party::Kuper,
                    "POST /auth/token".to_owned(),
                    Some("200 access token".to_owned()),
                    true,
                ),
            }
        }
    }

    fn transcribe(&mut self, position: Option<usize>, record: NotificationRecord) {
        let id = match position {
            Some(position) => self.id(OrderRef(position)),
            None => "unknown to Kuper".to_owned(),
        };
        let event = record.event.clone().unwrap_or_else(|| "unreadable notification".to_owned());
        let (answer, ok) = match record.verdict {
            Verdict::Accepted => (format!("{} accepted", record.status), true),
            Verdict::RepeatAccepted => (format!("{} already processed", record.status), true),
            Verdict::Rejected | Verdict::Fault if record.status == 0 => {
                ("no answer (connection dropped)".to_owned(), false)
            }
            Verdict::Rejected | Verdict::Fault => {
                (format!("{} {}", record.status, record.rule.as_deref().unwrap_or("refused")), false)
            }
        };
        self.line(Party::Merchant, Party::Kuper, event.clone(), Some(answer), ok);
        if record.verdict == Verdict::Rejected {
            let rule = record.rule.clone().unwrap_or_else(|| "rejected".to_owned());
            if rule == "unauthorized" && !self.tolerated.contains(&rule.as_str()) {
                self.check_format(&record, &event);
                self.unauthorized.push(record);
                return;
            }
            if !self.tolerated.contains(&rule.as_str()) {
                let message = record.message.clone().unwrap_or_else(|| format!("{rule}: {event} refused"));
                let message = if message.starts_with(rule.as_str()) { message } else { format!("{rule}: {message}") };
                self.failures.push(format!("{message} ({event} for order {id})"));
            }
        }
        self.check_format(&record, &event);
    }

    /// Each 401 counts against the merchant only if the same event of the same order never
    /// got through afterwards.
    fn judge_unauthorized(&mut self) {
        let refused = std::mem::take(&mut self.unauthorized);
        if refused.is_empty() {
            return;
        }
        let world = self.app.world();
        let log = world.log();
        for record in refused {
            let resent = log.iter().any(|later| {
                later.seq > record.seq
                    && later.event == record.event
                    && later.original_order_id == record.original_order_id
                    && matches!(later.verdict, Verdict::Accepted | Verdict::RepeatAccepted)
            });
            if !resent {
                let event = record.event.as_deref().unwrap_or("unreadable notification");
                let order = record.original_order_id.as_deref().unwrap_or("unknown to Kuper");
                let why = record.message.as_deref().unwrap_or("the access token is not valid");
                self.failures.push(format!(
                    "unauthorized: {event} for order {order} was refused ({why}) and never sent again \
                     with a new token (protocol.md §9: on 401 get a new token and resend)"
                ));
            }
        }
    }

    fn check_format(&mut self, record: &NotificationRecord, event: &str) {
        if self.format_reported || record.verdict == Verdict::Fault {
            return;
        }
        let sent = if record.body.get("event_type").is_some() {
            NotificationFormatChoice::Brief
        } else if record.body.get("event").is_some() {
            NotificationFormatChoice::Event
        } else {
            return;
        };
        if sent != self.opts.format {
            self.format_reported = true;
            self.fail(
                "notification_format",
                format!("{event} came in the {} format; this run expects {}", sent.as_str(), self.opts.format.as_str()),
            );
        }
    }

    /// Places an order of `kind` whose generated content satisfies `want` (drawn from this
    /// scenario's seeded generator), sends `order.created` and checks the answer.
    pub async fn create(&mut self, kind: OrderKind, want: impl Fn(&GeneratedOrder) -> bool) -> Step<OrderRef> {
        let stores = &self.opts.stores;
        let (store, integration) = match (kind.scheme, kind.restaurant) {
            (_, true) => (stores.restaurant.clone(), Integration::DeliveryByKuper),
            (Scheme::C, false) => (stores.merchant_delivery.clone(), Integration::DeliveryByMerchant),
            _ => (stores.kuper_delivery.clone(), Integration::DeliveryByKuper),
        };
        let shipment_method = if kind.scheme == Scheme::B { "pickup" } else { "by_courier" };
        let params = OrderParams {
            store,
            shipment_method: shipment_method.to_owned(),
            restaurant: kind.restaurant,
            integration,
            positions: None,
        };
        let now = now_moscow();
        let mut chosen = None;
        for _ in 0..MAX_DRAWS {
            match generate(&mut self.rng, &params, now) {
                Ok(order) if want(&order) => {
                    let mut order = order;
                    order.renumber(&mut self.ids);
                    if self.app.world().contains_id(&order.original_order_id) {
                        continue;
                    }
                    chosen = Some(order);
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    self.fail("setup", format!("the generator refused: {error}"));
                    return Err(Abort);
                }
            }
        }
        let Some(generated) = chosen else {
            self.fail("setup", format!("no order with the features this scenario needs in {MAX_DRAWS} draws"));
            return Err(Abort);
        };
        self.orders.push(generated.payload.clone());
        self.sync();
        let delivery = Delivery {
            integration,
            restaurant: kind.restaurant,
            target: self.opts.target.clone(),
            auth: Some(self.opts.auth.clone()),
        };
        let placed = self.app.place_order(generated, delivery, now).await;
        let id = placed.original_order_id.clone();
        self.tracked.push(Tracked { index: placed.index, id: id.clone(), expected: Vec::new(), seen: HashSet::new() });
        let summary = created_summary(&placed.answer, placed.check.number.as_deref());
        self.line(Party::Kuper, Party::Merchant, format!("order.created {id}"), Some(summary), placed.check.ok);
        if !placed.check.ok {
            self.fail("created_answer", format!("{} (order {id})", placed.check.problems.join("; ")));
            return Err(Abort);
        }
        let order = OrderRef(self.tracked.len() - 1);
        self.check_scheme(order, kind).await?;
        Ok(order)
    }

    /// A driven run asks the merchant how it runs the new order: a store missing from its
    /// configuration makes every later step fail for a reason the scenario would not name.
    async fn check_scheme(&mut self, order: OrderRef, kind: OrderKind) -> Step {
        let Some(api) = self.api else {
            return Ok(());
        };
        let id = self.id(order);
        let answer = api.order(&id).await;
        if answer.status != Some(200) {
            // The actions will say what is wrong with the API; this check only explains stores.
            return Ok(());
        }
        let expected = match kind.scheme {
            Scheme::A => "kuper_delivery",
            Scheme::B => "pickup",
            Scheme::C => "merchant_delivery",
        };
        let scheme = answer.body["scheme"].as_str().unwrap_or("?").to_owned();
        let restaurant = answer.body["restaurant"].as_bool().unwrap_or(false);
        if scheme == expected && restaurant == kind.restaurant {
            return Ok(());
        }
        let shown = |scheme: &str, restaurant: bool| {
            if restaurant {
                format!("{scheme} (restaurant)")
            } else {
                scheme.to_owned()
            }
        };
        self.fail(
            "store_configuration",
            format!(
                "the merchant runs order {id} as {}, this scenario needs {}: {}",
                shown(&scheme, restaurant),
                shown(expected, kind.restaurant),
                self.opts.stores.requirement(kind.scheme, kind.restaurant)
            ),
        );
        Err(Abort)
    }

    /// The merchant number Kuper learnt from the answer to `order.created`.
    pub fn number(&self, order: OrderRef) -> Option<String> {
        let index = self.tracked.get(order.0)?.index;
        self.app.world().order(index)?.number.clone()
    }

    /// The store does `action` (driven), and the merchant must then notify `expect`.
    pub async fn act(&mut self, order: OrderRef, action: &str, body: Value, expect: &[EventKind]) -> Step<Value> {
        let reply = self.call(order, action, body).await?;
        self.expect(order, expect).await?;
        Ok(reply)
    }

    /// The store does `action` (driven runs only) without waiting for its notification.
    pub async fn post_action(&mut self, order: OrderRef, action: &str, body: Value) -> Step {
        self.call(order, action, body).await.map(drop)
    }

    /// The customer shows the pickup code Kuper gave them and the store checks it
    /// (`POST …/pickup-code/verify`, driven runs only): it must be found valid.
    pub async fn verify_pickup_code(&mut self, order: OrderRef) -> Step {
        let Some(api) = self.api else {
            return Ok(());
        };
        self.sync();
        let id = self.id(order);
        let Some(code) = self.snapshot(order).and_then(|s| s.pickup_code) else {
            self.fail("pickup_code", format!("Kuper holds no pickup code for order {id} to show at the counter"));
            return Err(Abort);
        };
        let action = "pickup-code/verify";
        let answer = api.act(&id, action, &json!({ "code": code })).await;
        let path = MerchantApi::action_path(&id, action);
        let valid = answer.status == Some(200) && answer.body["valid"].as_bool() == Some(true);
        self.line(Party::Store, Party::Merchant, format!("POST {path}"), Some(answer.summary()), valid);
        if !valid {
            self.fail(
                "merchant_api",
                format!("POST {path} with the code Kuper holds answered {}: {}", answer.summary(), answer.body),
            );
            return Err(Abort);
        }
        Ok(())
    }

    /// POSTs the action to the merchant's REST API, which must answer 202; `Null` when the run
    /// has no API (the merchant acts on its own).
    async fn call(&mut self, order: OrderRef, action: &str, body: Value) -> Step<Value> {
        let Some(api) = self.api else {
            return Ok(Value::Null);
        };
        self.sync();
        let id = self.id(order);
        let answer = api.act(&id, action, &body).await;
        let path = MerchantApi::action_path(&id, action);
        self.line(Party::Store, Party::Merchant, format!("POST {path}"), Some(answer.summary()), answer.accepted());
        if !answer.accepted() {
            self.fail("merchant_api", format!("POST {path} answered {}: {}", answer.summary(), answer.body));
            return Err(Abort);
        }
        Ok(answer.body)
    }

    /// The order as Kuper placed it: lines with unit prices, and the `order.created` payload.
    pub fn ordered(&self, order: OrderRef) -> Option<(Vec<crate::model::OrderPosition>, Value)> {
        let index = self.tracked.get(order.0)?.index;
        let world = self.app.world();
        let record = world.order(index)?;
        Some((record.positions.clone(), record.payload.clone()))
    }

    /// The store tries `action`, which the merchant must refuse (driven runs only).
    pub async fn refused(&mut self, order: OrderRef, action: &str, body: Value, why: &str) {
        let Some(api) = self.api else {
            return;
        };
        self.sync();
        let id = self.id(order);
        let answer = api.act(&id, action, &body).await;
        let path = MerchantApi::action_path(&id, action);
        let accepted = answer.status.is_some_and(|s| (200..300).contains(&s));
        self.line(Party::Store, Party::Merchant, format!("POST {path}"), Some(answer.summary()), !accepted);
        if accepted {
            self.fail("invalid_transition", format!("POST {path} was accepted {why}; it must be refused (409)"));
        }
    }

    /// Waits until Kuper has accepted `events` after everything expected before, in order.
    pub async fn expect(&mut self, order: OrderRef, events: &[EventKind]) -> Step {
        let want = match self.tracked.get_mut(order.0) {
            Some(tracked) => {
                tracked.expected.extend_from_slice(events);
                tracked.expected.clone()
            }
            None => return Err(Abort),
        };
        let deadline = Instant::now() + self.opts.deadline;
        loop {
            self.sync();
            let Some(snapshot) = self.snapshot(order) else {
                return Err(Abort);
            };
            if snapshot.done.len() >= want.len() {
                return match compare(&want, &snapshot.done) {
                    Some((rule, detail)) => {
                        self.fail(rule, format!("{detail} (order {})", self.id(order)));
                        Err(Abort)
                    }
                    None => Ok(()),
                };
            }
            // A refusal is final for a merchant (protocol.md §9): it will not send that again.
            let outstanding = &want[snapshot.done.len()..];
            let refused = snapshot.notifications.iter().any(|n| {
                n.verdict == Verdict::Rejected
                    && n.rule.as_deref() != Some("unauthorized")
                    && n.event.as_deref().and_then(EventKind::from_wire).is_some_and(|k| outstanding.contains(&k))
            });
            if refused {
                return Err(Abort);
            }
            if Instant::now() >= deadline {
                let missing: Vec<&str> = outstanding.iter().map(|k| k.wire()).collect();
                let got: Vec<&str> = snapshot.done.iter().map(|k| k.wire()).collect();
                self.fail(
                    "missing_notification",
                    format!(
                        "{} did not reach Kuper within {:.1} s (order {}; Kuper accepted {got:?})",
                        missing.join(", "),
                        self.opts.deadline.as_secs_f64(),
                        self.id(order)
                    ),
                );
                return Err(Abort);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kuper sends `event` about the order `times` times; each must be answered 2xx.
    pub async fn kuper_n(&mut self, order: OrderRef, event: &str, times: u32) -> Vec<Answer> {
        self.sync();
        let Some(index) = self.tracked.get(order.0).map(|t| t.index) else {
            return Vec::new();
        };
        let request = WebhookRequest { event: Some(event.to_owned()), repeat: times, ..WebhookRequest::default() };
        let answers = match self.app.send_webhook(index, &request).await {
            Ok(answers) => answers,
            Err(message) => {
                self.fail("setup", message);
                return Vec::new();
            }
        };
        let id = self.id(order);
        for answer in &answers {
            let ok = answer.status.is_some_and(|s| (200..300).contains(&s));
            let summary = match (answer.status, &answer.error) {
                (Some(status), _) => status.to_string(),
                (None, error) => format!("no answer: {}", error.as_deref().unwrap_or("")),
            };
            self.line(Party::Kuper, Party::Merchant, event.to_owned(), Some(summary.clone()), ok);
            if !ok && event != "order.created" {
                self.fail(
                    "webhook_answer",
                    format!("{event} for order {id} was answered {summary} {}; a known event must be acknowledged 200 once stored (protocol.md §4)", answer.body),
                );
            }
        }
        answers
    }

    pub async fn kuper(&mut self, order: OrderRef, event: &str) {
        self.kuper_n(order, event, 1).await;
    }

    /// Listens for `quiet` and checks that no order got a notification it should not have.
    pub async fn quiet(&mut self) {
        tokio::time::sleep(self.opts.quiet).await;
        self.sync();
        for position in 0..self.tracked.len() {
            let order = OrderRef(position);
            let (Some(snapshot), Some(tracked)) = (self.snapshot(order), self.tracked.get(position)) else {
                continue;
            };
            if let Some((rule, detail)) = compare(&tracked.expected, &snapshot.done) {
                let id = tracked.id.clone();
                self.fail(rule, format!("{detail} (order {id})"));
            }
        }
    }

    /// Final checks of an order: exactly the expected notifications, and Kuper's state.
    pub fn finish(&mut self, order: OrderRef, state: KuperState, payment: Option<PaymentState>) {
        self.sync();
        let (Some(snapshot), Some(tracked)) = (self.snapshot(order), self.tracked.get(order.0)) else {
            return;
        };
        let id = tracked.id.clone();
        if let Some((rule, detail)) = compare(&tracked.expected, &snapshot.done) {
            self.fail(rule, format!("{detail} (order {id})"));
        }
        if snapshot.state != state {
            self.fail(
                "final_state",
                format!("Kuper's view of order {id} is {}, expected {}", state_name(snapshot.state), state_name(state)),
            );
        }
        if let Some(payment) = payment {
            if snapshot.payment != payment {
                self.fail(
                    "final_state",
                    format!("order {id} is {:?} at Kuper, expected {payment:?}", snapshot.payment),
                );
            }
        }
    }

    /// The payload of the accepted notification of `kind`, in either body format.
    pub fn accepted_payload(&self, order: OrderRef, kind: EventKind) -> Option<Value> {
        let snapshot = self.snapshot(order)?;
        let record = snapshot
            .notifications
            .into_iter()
            .find(|n| n.verdict == Verdict::Accepted && n.event.as_deref() == Some(kind.wire()))?;
        record.body.get("payload").or_else(|| record.body.get("event").and_then(|e| e.get("payload"))).cloned()
    }

    pub fn start_outage(&mut self) {
        let until = Instant::now() + OUTAGE;
        self.app.faults().set_outage(Outage::Status { status: 503, until, retry_after: None });
        self.note("Kuper is down: every notification is answered 503");
    }

    pub fn end_outage(&mut self) {
        self.app.faults().end_outage();
        self.app.release.notify_waiters();
        self.note("Kuper is back");
    }

    /// Waits until a notification of the order met the outage (the merchant tried to send).
    pub async fn wait_for_fault(&mut self, order: OrderRef) -> Step {
        let deadline = Instant::now() + self.opts.deadline;
        loop {
            self.sync();
            let hit = self.snapshot(order).is_some_and(|s| s.notifications.iter().any(|n| n.verdict == Verdict::Fault));
            if hit {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let id = self.id(order);
                self.fail("outage_retry", format!("the merchant sent nothing for order {id} while Kuper was down"));
                return Err(Abort);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn tokens_issued(&self) -> u64 {
        self.app.tokens().issued()
    }

    pub fn revoke_tokens(&mut self) {
        self.app.tokens().revoke_all();
        self.note("Kuper revokes every access token");
    }
}

/// How the accepted notifications differ from the expected ones, as (rule, detail).
pub(super) fn compare(expected: &[EventKind], done: &[EventKind]) -> Option<(&'static str, String)> {
    if expected == done {
        return None;
    }
    let names = |kinds: &[EventKind]| kinds.iter().map(|k| k.wire()).collect::<Vec<_>>();
    let context = format!("Kuper accepted {:?}, expected {:?}", names(done), names(expected));
    let mut rest = expected.to_vec();
    let mut extra = Vec::new();
    for kind in done {
        match rest.iter().position(|k| k == kind) {
            Some(at) => {
                rest.remove(at);
            }
            None => extra.push(kind.wire()),
        }
    }
    if !extra.is_empty() {
        return Some(("unexpected_notification", format!("{} not expected; {context}", extra.join(", "))));
    }
    if !rest.is_empty() {
        let missing: Vec<&str> = rest.iter().map(|k| k.wire()).collect();
        return Some(("missing_notification", format!("{} never accepted; {context}", missing.join(", "))));
    }
    Some(("order_of_events", context))
}

fn state_name(state: KuperState) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// `200 created, number M-1`: what the answer said, without its times, so transcripts of two
/// runs compare equal.
fn created_summary(answer: &Answer, number: Option<&str>) -> String {
    let Some(status) = answer.status else {
        return format!("no answer: {}", answer.error.as_deref().unwrap_or(""));
    };
    let said = match answer.body.get("status") {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => "no status".to_owned(),
    };
    match number {
        Some(number) => format!("{status} {said}, number {number}"),
        None => format!("{status} {said}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventKind::*;

    #[test]
    fn differences_name_their_rule() {
        assert_eq!(compare(&[InWork, Assembled], &[InWork, Assembled]), None);
        assert_eq!(compare(&[InWork], &[InWork, Assembled]).map(|c| c.0), Some("unexpected_notification"));
        assert_eq!(compare(&[InWork, Assembled], &[InWork]).map(|c| c.0), Some("missing_notification"));
        assert_eq!(compare(&[InWork, Assembled], &[Assembled, InWork]).map(|c| c.0), Some("order_of_events"));
    }
}

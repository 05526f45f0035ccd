use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// A known event name or `unknown`: never the raw string (bounded cardinality).
    pub event: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The route pattern (`/api/v1/orders/{ref}`), never the concrete path.
    pub route: String,
    pub status: u16,
}

#[derive(Clone)]
pub struct AppMetrics {
    pub webhooks: Family<WebhookLabels, Counter>,
    pub http: Family<HttpLabels, Histogram>,
    pub outbox_pending: Gauge,
    pub outbox_dead: Gauge,
    pub outbox_oldest_age: Gauge<f64, AtomicU64>,
}

impl Default for AppMetrics {
    fn default() -> Self {
        Self {
            webhooks: Family::default(),
            http: Family::new_with_constructor(|| {
                Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
            }),
            outbox_pending: Gauge::default(),
            outbox_dead: Gauge::default(),
            outbox_oldest_age: Gauge::default(),
        }
    }
}

impl AppMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kuper_bridge_webhooks",
            "Kuper webhooks received by event and outcome",
            self.webhooks.clone(),
        );
        registry.register(
            "kuper_bridge_http_request_duration_seconds",
            "HTTP request latency by route",
            self.http.clone(),
        );
        registry.register(
            "kuper_bridge_outbox_pending",
            "Notifications waiting to be delivered",
            self.outbox_pending.clone(),
        );
        registry.register("kuper_bridge_outbox_dead", "Dead letters waiting for an operator", self.outbox_dead.clone());
        registry.register(
            "kuper_bridge_outbox_oldest_pending_age_seconds",
            "Age of the oldest notification still waiting",
            self.outbox_oldest_age.clone(),
        );
    }

    pub fn webhook(&self, event: &str, outcome: &str) {
        self.webhooks.get_or_create(&WebhookLabels { event: event.into(), outcome: outcome.into() }).inc();
    }
}

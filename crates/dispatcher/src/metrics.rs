use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub event: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: String,
}

/// Dispatcher metrics. Never labelled by order: cardinality stays bounded.
#[derive(Clone)]
pub struct DispatchMetrics {
    pub notifications: Family<NotificationLabels, Counter>,
    pub delivery_seconds: Family<EventLabel, Histogram>,
    pub token_refreshes: Counter,
    /// Requests to Kuper's token endpoint by outcome: a failing endpoint or refused client
    /// credentials stop every notification, and only this shows why.
    pub token_requests: Family<OutcomeLabel, Counter>,
}

impl Default for DispatchMetrics {
    fn default() -> Self {
        Self {
            notifications: Family::default(),
            delivery_seconds: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            }),
            token_refreshes: Counter::default(),
            token_requests: Family::default(),
        }
    }
}

impl DispatchMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kuper_bridge_notifications",
            "Notification delivery attempts to Kuper by event and outcome (delivered, repeat, retry, dead)",
            self.notifications.clone(),
        );
        registry.register(
            "kuper_bridge_notification_attempt_seconds",
            "Duration of one notification attempt, including a token refresh",
            self.delivery_seconds.clone(),
        );
        registry.register(
            "kuper_bridge_token_refreshes",
            "Forced token refreshes after 401/403",
            self.token_refreshes.clone(),
        );
        registry.register(
            "kuper_bridge_token_requests",
            "Requests to Kuper's OAuth token endpoint by outcome (ok, refused, unreachable, malformed)",
            self.token_requests.clone(),
        );
    }

    pub fn record(&self, event: &str, outcome: &str, took: Duration) {
        self.notifications.get_or_create(&NotificationLabels { event: event.into(), outcome: outcome.into() }).inc();
        self.delivery_seconds.get_or_create(&EventLabel { event: event.into() }).observe(took.as_secs_f64());
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// Reconciliation metrics: passes by outcome (ok, partial, failed) and shipments by what was
/// done (imported, canceled, disagreement, in_sync, already_present, skipped, invalid, failed).
#[derive(Clone, Default)]
pub struct ReconcileMetrics {
    pub passes: Family<OutcomeLabel, Counter>,
    pub shipments: Family<OutcomeLabel, Counter>,
}

impl ReconcileMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kuper_bridge_reconciliation_passes",
            "Reconciliation passes over Kuper's pull API by outcome (ok, partial, failed)",
            self.passes.clone(),
        );
        registry.register(
            "kuper_bridge_reconciliation_shipments",
            "Shipments seen by reconciliation by what was done (imported, canceled, disagreement, in_sync, already_present, skipped, invalid, failed)",
            self.shipments.clone(),
        );
    }

    pub fn pass(&self, outcome: &str) {
        self.passes.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
    }

    pub fn shipment(&self, outcome: &str) {
        self.shipments.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
    }
}

//! The deadline sweep (issue #7 item 5): every few seconds it computes the pending deadlines of
//! the open orders (the domain's [`deadlines`](kuper_bridge_domain::deadlines::deadlines_at))
//! and records each warning and miss once, with a timeline entry, a counter and, for a miss,
//! a warning log line.
//!
//! It reads only the orders whose check has come (issue #12 item 5): every write of an order
//! makes its check due, and after judging an order the sweep stores when its next warning or
//! miss falls ([`next_check`]). An idle sweep reads nothing, however many orders are open. Storage makes "once" hold across restarts and replicas, so every
//! worker may run the sweep; the counter only counts what this process recorded, so the sum
//! over replicas is exact.
//!
//! A warning is recorded only while the deadline is still ahead: when a deadline is found
//! already past (the sweep was down, or the lead is shorter than the sweep interval), the miss
//! alone is recorded, since a late "it is about to be missed" would say less than the miss.

use chrono::{DateTime, FixedOffset};
use kuper_bridge_domain::deadlines::{deadlines_at, next_check, DeadlineKind, DeadlineSettings, DeadlineStage};
use kuper_bridge_domain::engine::format_time;
use kuper_bridge_storage::{now_ms, DeadlineCandidate, DeadlineCheck, DeadlineCursor, Exchange, Store, StoreError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Orders read per page: bounds memory and the time one read holds a connection.
const PAGE: i64 = 500;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadlineLabels {
    pub kind: String,
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// Deadline metrics. Labelled by kind and stage only: cardinality stays bounded.
#[derive(Clone, Default)]
pub struct DeadlineMetrics {
    /// Warnings and misses recorded by this process.
    pub recorded: Family<DeadlineLabels, Counter>,
    /// Open orders past a deadline they have not met, as of the last sweep.
    pub past_due: Family<KindLabel, Gauge>,
}

impl DeadlineMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kuper_bridge_deadlines",
            "Order deadline warnings and misses recorded, by kind (restaurant_accept, assembly, delivery_window) and stage (warning, missed)",
            self.recorded.clone(),
        );
        registry.register(
            "kuper_bridge_orders_past_deadline",
            "Open orders past a deadline they have not met, by kind, as of the last deadline sweep",
            self.past_due.clone(),
        );
    }
}

#[derive(Debug, Clone)]
pub struct DeadlineSweepConfig {
    pub settings: DeadlineSettings,
    /// The offset of the times written into timeline details.
    pub offset: FixedOffset,
    pub interval: Duration,
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Orders looked at: those whose check had come.
    pub orders: usize,
    /// Newly recorded by this sweep.
    pub warnings: u64,
    pub misses: u64,
    /// Open orders past each kind's deadline (recorded now or earlier), from storage.
    pub past_due: BTreeMap<DeadlineKind, i64>,
}

pub struct DeadlineSweeper {
    store: Arc<dyn Store>,
    config: DeadlineSweepConfig,
    metrics: DeadlineMetrics,
}

impl DeadlineSweeper {
    pub fn new(store: Arc<dyn Store>, config: DeadlineSweepConfig, metrics: DeadlineMetrics) -> Self {
        Self { store, config, metrics }
    }

    /// Sweeps at once, then every interval, until `shutdown`. A failed sweep (database down)
    /// is logged and the next one tries again: nothing is lost, the stages are still due.
    pub async fn run(self, shutdown: CancellationToken) {
        // Until one full pass succeeds, every open order is looked at: checks stored by an
        // earlier process may follow other `[deadlines]` settings.
        let mut full_pass_done = false;
        loop {
            // `now` before reading: an order read as unmet was unmet at `now` too, so a miss
            // is never recorded for an order that met its deadline in time.
            let now = now_ms();
            let result =
                if full_pass_done { self.sweep_once(now).await } else { self.sweep_every_open_order(now).await };
            full_pass_done |= result.is_ok();
            match result {
                Ok(r) if r.warnings + r.misses > 0 => {
                    info!(orders = r.orders, warnings = r.warnings, misses = r.misses, "deadline sweep")
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "deadline sweep failed; retrying at the next interval"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One pass over the orders whose check has come (written since the last look, or a
    /// warning or miss due), judged at `now_ms`; then each one's next check.
    pub async fn sweep_once(&self, now_ms: i64) -> Result<SweepReport, StoreError> {
        self.sweep(now_ms, now_ms).await
    }

    /// One pass over every open order, whenever its check is due, judged at `now_ms`: what a
    /// process does first. It reads every open order but writes only the checks that change.
    pub async fn sweep_every_open_order(&self, now_ms: i64) -> Result<SweepReport, StoreError> {
        self.sweep(now_ms, i64::MAX).await
    }

    /// Judges at `now_ms` the open orders whose check is due by `checks_due_by`.
    async fn sweep(&self, now_ms: i64, checks_due_by: i64) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        let mut after = DeadlineCursor::START;
        loop {
            let page = self.store.orders_due_for_deadlines(checks_due_by, after, PAGE).await?;
            let Some(last) = page.last().map(|c| DeadlineCursor { check_at: c.check_at, order_id: c.order.id }) else {
                break;
            };
            let mut checks = Vec::with_capacity(page.len());
            for candidate in &page {
                let handled = self.judge(candidate, now_ms, &mut report).await?;
                let recorded = |kind: DeadlineKind, stage: DeadlineStage| {
                    handled.contains(&(kind, stage)) || candidate.has_recorded(kind, stage)
                };
                let order = &candidate.order;
                checks.push(DeadlineCheck {
                    order_id: order.id,
                    read_updated_at: order.updated_at,
                    next_at: next_check(&order.order, order.created_at, &self.config.settings, recorded),
                });
            }
            self.store.set_deadline_checks(&checks).await?;
            report.orders += page.len();
            if (page.len() as i64) < PAGE {
                break;
            }
            after = last;
        }
        report.past_due = self.store.past_due_counts().await?.into_iter().collect();
        for kind in DeadlineKind::ALL {
            let n = report.past_due.get(&kind).copied().unwrap_or(0);
            self.metrics.past_due.get_or_create(&KindLabel { kind: kind.as_str().into() }).set(n);
        }
        Ok(report)
    }

    /// Records the warnings and misses due at `now`; returns the stages now on record that
    /// were not in `c.recorded` (recorded here, or by another replica meanwhile).
    async fn judge(
        &self,
        c: &DeadlineCandidate,
        now: i64,
        report: &mut SweepReport,
    ) -> Result<Vec<(DeadlineKind, DeadlineStage)>, StoreError> {
        let order = &c.order.order;
        let mut handled = Vec::new();
        for (d, stage) in deadlines_at(order, c.order.created_at, &self.config.settings, now) {
            let stage_name = match stage {
                DeadlineStage::Pending => continue,
                DeadlineStage::Warning | DeadlineStage::Missed => stage.as_str(),
            };
            if c.has_recorded(d.kind, stage) {
                continue;
            }
            handled.push((d.kind, stage));
            let due = self.time(d.due_at);
            let detail = match stage {
                DeadlineStage::Missed => {
                    format!("{} missed: due {due} ({}); the order is still {}", d.kind, d.kind.promise(), order.state())
                }
                _ => format!(
                    "{} due {due} in {} s ({}); the order is {}",
                    d.kind,
                    ((d.due_at - now).max(0) + 999) / 1000,
                    d.kind.promise(),
                    order.state()
                ),
            };
            let exchange = Exchange {
                kind: "deadline".into(),
                direction: "internal".into(),
                event: Some(d.kind.as_str().into()),
                outcome: Some(stage_name.into()),
                detail: Some(detail),
                ..Default::default()
            };
            if !self.store.record_deadline(c.order.id, d.kind, stage, d.due_at, exchange).await? {
                // Another replica (or an earlier sweep whose page we read before it committed)
                // recorded it.
                continue;
            }
            self.metrics
                .recorded
                .get_or_create(&DeadlineLabels { kind: d.kind.as_str().into(), stage: stage_name.into() })
                .inc();
            if stage == DeadlineStage::Missed {
                report.misses += 1;
                warn!(order_id = c.order.id, order = order.display_ref(), kind = %d.kind, due = %due, state = %order.state(), "order deadline missed");
            } else {
                report.warnings += 1;
                info!(order_id = c.order.id, order = order.display_ref(), kind = %d.kind, due = %due, state = %order.state(), "order deadline approaching");
            }
        }
        Ok(handled)
    }

    fn time(&self, ms: i64) -> String {
        DateTime::from_timestamp_millis(ms)
            .map(|t| format_time(t.with_timezone(&self.config.offset)))
            .unwrap_or_else(|| format!("{ms} ms"))
    }
}

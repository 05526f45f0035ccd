//! The board's counts per state without a filter: what every board page, its live update
//! and the state filter show. Counting a large table is most of a board request's time
//! (an index scan over every order: 13 ms on SQLite and 30–36 ms on PostgreSQL at 100,000
//! orders, growing with the table), so with many orders the counts are kept for a moment
//! and refreshed in the background while the last ones are shown. With few orders they are
//! counted on every request, exactly. Filtered counts (a store, a search, "needs attention")
//! come from indexes over the filtered set and are always exact.

use kuper_bridge_storage::{OrderFilter, Store, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When counts are kept, and for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keeping {
    /// Counts this old are shown without waiting; a refresh starts in the background.
    fresh: Duration,
    /// Counts older than this (nobody looked at the board for a while) are counted again
    /// before they are shown.
    usable: Duration,
    /// Below this many orders the counts cost a few milliseconds: always exact.
    from_orders: i64,
}

impl Default for Keeping {
    fn default() -> Self {
        Self { fresh: Duration::from_secs(2), usable: Duration::from_secs(30), from_orders: 20_000 }
    }
}

#[derive(Clone)]
struct Counted {
    at: Instant,
    counts: Vec<(String, i64)>,
}

#[derive(Default)]
pub(crate) struct StateCounts {
    keeping: Keeping,
    last: Mutex<Option<Counted>>,
    refreshing: AtomicBool,
}

impl StateCounts {
    /// Every order's count per state (no filter).
    pub(crate) async fn all(self: &Arc<Self>, store: &Arc<dyn Store>) -> Result<Vec<(String, i64)>, StoreError> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(last) = last.filter(|l| total(&l.counts) >= self.keeping.from_orders) {
            let age = last.at.elapsed();
            if age < self.keeping.fresh {
                return Ok(last.counts);
            }
            if age < self.keeping.usable {
                if !self.refreshing.swap(true, Ordering::AcqRel) {
                    let (me, store) = (Arc::clone(self), Arc::clone(store));
                    tokio::spawn(async move {
                        if let Err(e) = me.count(&store).await {
                            tracing::warn!(error = %e, "console: counting orders per state failed");
                        }
                        me.refreshing.store(false, Ordering::Release);
                    });
                }
                return Ok(last.counts);
            }
        }
        self.count(store).await
    }

    async fn count(&self, store: &Arc<dyn Store>) -> Result<Vec<(String, i64)>, StoreError> {
        let counts = store.count_orders_by_state(&OrderFilter { limit: 1, ..Default::default() }).await?;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Counted { at: Instant::now(), counts: counts.clone() });
        Ok(counts)
    }
}

fn total(counts: &[(String, i64)]) -> i64 {
    counts.iter().map(|(_, n)| n).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuper_bridge_domain::Policy;
    use kuper_bridge_storage::{Exchange, StoreOptions};
    use kuper_bridge_wire::WebhookEnvelope;

    const CREATED: &str = include_str!("../../../../fixtures/webhooks/order.created.kuper-delivery.json");

    async fn add_order(store: &Arc<dyn Store>, n: u32) {
        let mut body: serde_json::Value = serde_json::from_str(CREATED).unwrap();
        body["payload"]["originalOrderId"] = format!("C9{n:010}").into();
        body["payload"]["orderUUID"] = format!("uuid-{n}").into();
        let env = WebhookEnvelope::parse(body.to_string().as_bytes()).unwrap();
        let respond: kuper_bridge_storage::Respond = |_| (200, String::new());
        store.ingest_webhook(&env, Exchange::default(), &Policy::default(), respond).await.unwrap();
    }

    async fn created(counts: &Arc<StateCounts>, store: &Arc<dyn Store>) -> i64 {
        counts.all(store).await.unwrap().iter().find(|(s, _)| s == "created").map_or(0, |(_, n)| *n)
    }

    #[tokio::test]
    async fn few_orders_are_counted_exactly_and_many_are_refreshed_behind_the_page() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = kuper_bridge_storage::open(&url, &StoreOptions::default()).await.unwrap();
        store.migrate().await.unwrap();

        // Under the threshold: every request counts.
        let exact = Arc::new(StateCounts::default());
        add_order(&store, 1).await;
        assert_eq!(created(&exact, &store).await, 1);
        add_order(&store, 2).await;
        assert_eq!(created(&exact, &store).await, 2);

        // Over it, fresh counts are shown as they are…
        let keeping = Keeping { fresh: Duration::from_secs(3600), usable: Duration::from_secs(7200), from_orders: 1 };
        let kept = Arc::new(StateCounts { keeping, ..Default::default() });
        assert_eq!(created(&kept, &store).await, 2);
        add_order(&store, 3).await;
        assert_eq!(created(&kept, &store).await, 2);

        // …and stale ones are shown once more while they are counted again.
        let keeping = Keeping { fresh: Duration::ZERO, ..keeping };
        let stale = Arc::new(StateCounts { keeping, ..Default::default() });
        assert_eq!(created(&stale, &store).await, 3);
        add_order(&store, 4).await;
        assert_eq!(created(&stale, &store).await, 3);
        for _ in 0..500 {
            if !stale.refreshing.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stale.last.lock().unwrap().as_ref().map(|c| total(&c.counts)), Some(4));

        // Counts too old to show are counted before the page is answered.
        let keeping = Keeping { fresh: Duration::ZERO, usable: Duration::ZERO, from_orders: 1 };
        let old = Arc::new(StateCounts { keeping, ..Default::default() });
        assert_eq!(created(&old, &store).await, 4);
        add_order(&store, 5).await;
        assert_eq!(created(&old, &store).await, 5);
    }
}

use kuper_bridge_storage::DestinationStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

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

/// `kuper` or `subscriber:<name>`: bounded by the configuration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabel {
    pub destination: String,
}

#[derive(Clone)]
pub struct AppMetrics {
    pub webhooks: Family<WebhookLabels, Counter>,
    pub http: Family<HttpLabels, Histogram>,
    pub outbox_pending: Gauge,
    pub outbox_dead: Gauge,
    pub outbox_oldest_age: Gauge<f64, AtomicU64>,
    /// The same three per destination: one subscriber that is down must not hide behind
    /// Kuper's healthy queue, nor page anyone about Kuper.
    pub destination_pending: Family<DestinationLabel, Gauge>,
    pub destination_dead: Family<DestinationLabel, Gauge>,
    pub destination_oldest_age: Family<DestinationLabel, Gauge<f64, AtomicU64>>,
    /// Destinations given a value since start: one whose queue has emptied drops out of the
    /// storage's listing and must read 0, not its last value, or its alert never resolves.
    destinations_seen: Arc<Mutex<BTreeSet<String>>>,
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
            destination_pending: Family::default(),
            destination_dead: Family::default(),
            destination_oldest_age: Family::default(),
            destinations_seen: Arc::default(),
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
        registry.register(
            "kuper_bridge_outbox_destination_pending",
            "Notifications and forwarded events waiting to be delivered, by destination (kuper, subscriber:NAME)",
            self.destination_pending.clone(),
        );
        registry.register(
            "kuper_bridge_outbox_destination_dead",
            "Dead letters waiting for an operator, by destination",
            self.destination_dead.clone(),
        );
        registry.register(
            "kuper_bridge_outbox_destination_oldest_pending_age_seconds",
            "Age of the oldest record still waiting, by destination (0 when none waits)",
            self.destination_oldest_age.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
    }

    /// Sets the outbox gauges, totals and per destination, from the storage's listing at `now_ms`.
    pub fn set_outbox(&self, destinations: &[DestinationStats], now_ms: i64) {
        let age = |oldest: Option<i64>| oldest.map(|t| (now_ms - t).max(0) as f64 / 1000.0).unwrap_or(0.0);
        self.outbox_pending.set(destinations.iter().map(|d| d.pending).sum());
        self.outbox_dead.set(destinations.iter().map(|d| d.dead).sum());
        self.outbox_oldest_age.set(age(destinations.iter().filter_map(|d| d.oldest_pending_at).min()));
        let mut seen = self.destinations_seen.lock().unwrap_or_else(PoisonError::into_inner);
        for name in seen.iter().filter(|name| !destinations.iter().any(|d| d.destination.as_str() == name.as_str())) {
            let label = DestinationLabel { destination: name.clone() };
            self.destination_pending.get_or_create(&label).set(0);
            self.destination_dead.get_or_create(&label).set(0);
            self.destination_oldest_age.get_or_create(&label).set(0.0);
        }
        for d in destinations {
            let label = DestinationLabel { destination: d.destination.to_string() };
            self.destination_pending.get_or_create(&label).set(d.pending);
            self.destination_dead.get_or_create(&label).set(d.dead);
            self.destination_oldest_age.get_or_create(&label).set(age(d.oldest_pending_at));
            seen.insert(d.destination.to_string());
        }
    }

    pub fn webhook(&self, event: &str, outcome: &str) {
        self.webhooks.get_or_create(&WebhookLabels { event: event.into(), outcome: outcome.into() }).inc();
    }
}

fn const_gauge<N>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: N) -> std::fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// The standard `process_*` metrics (CPU, memory, file descriptors, threads, start time), read
/// at each scrape. A value the platform does not give is left out.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let m = metrics_process::collector::collect();
        if let Some(seconds) = m.cpu_seconds_total {
            let counter = ConstCounter::new(seconds);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            ("process_open_fds", "Number of open file descriptors", m.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors (0: unlimited)", m.max_fds),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", m.virtual_memory_bytes),
            (
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes (0: unlimited)",
                m.virtual_memory_max_bytes,
            ),
            ("process_resident_memory_bytes", "Resident memory size in bytes", m.resident_memory_bytes),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                m.start_time_seconds,
            ),
            ("process_threads", "Number of OS threads in the process", m.threads),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                const_gauge(&mut encoder, name, help, value)?;
            }
        }
        Ok(())
    }
}

/// The SQLite database file, its size cap and the file system it lives on, read at each
/// scrape: past the cap (`database.sqlite_max_size_mb`) or on a full disk every write fails,
/// and webhooks are answered 503 until someone makes room.
#[derive(Debug)]
pub struct SqliteFileCollector {
    file: PathBuf,
    /// 0: no cap configured.
    max_bytes: u64,
}

impl SqliteFileCollector {
    pub fn new(file: PathBuf, max_bytes: Option<u64>) -> Self {
        Self { file, max_bytes: max_bytes.unwrap_or(0) }
    }
}

impl Collector for SqliteFileCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        // The main file only: the WAL is checkpointed into it every ~1000 pages, so it lags the
        // page count SQLite holds against the cap by a few MB at most.
        if let Ok(meta) = std::fs::metadata(&self.file) {
            const_gauge(
                &mut encoder,
                "kuper_bridge_sqlite_database_bytes",
                "Size of the SQLite database file",
                meta.len(),
            )?;
        }
        const_gauge(
            &mut encoder,
            "kuper_bridge_sqlite_database_max_bytes",
            "The SQLite database's size cap, database.sqlite_max_size_mb (0: none)",
            self.max_bytes,
        )?;
        #[cfg(unix)]
        if let Ok(fs) = rustix::fs::statvfs(&self.file) {
            // f_bavail: what an unprivileged process such as the gateway may still write.
            const_gauge(
                &mut encoder,
                "kuper_bridge_sqlite_filesystem_avail_bytes",
                "Bytes the gateway may still write on the file system holding the SQLite database",
                fs.f_bavail.saturating_mul(fs.f_frsize),
            )?;
            const_gauge(
                &mut encoder,
                "kuper_bridge_sqlite_filesystem_size_bytes",
                "Size of the file system holding the SQLite database",
                fs.f_blocks.saturating_mul(fs.f_frsize),
            )?;
        }
        Ok(())
    }
}

//! What the engine needs to know about the deployment (a projection of the config file).

use crate::deadlines::DeadlineSettings;
use crate::state::Scheme;
use chrono::FixedOffset;
use kuper_bridge_wire::NotificationFormat;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    #[default]
    Kuper,
    Merchant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StoreProfile {
    pub delivery: Delivery,
    pub restaurant: bool,
}

impl StoreProfile {
    /// protocol.md §5: the store's delivery plus the order's `shipmentMethod`.
    pub fn scheme_for(&self, is_pickup: bool) -> Scheme {
        match (is_pickup, self.delivery) {
            (true, _) => Scheme::Pickup,
            (false, Delivery::Kuper) => Scheme::KuperDelivery,
            (false, Delivery::Merchant) => Scheme::MerchantDelivery,
        }
    }
}

/// The brief's reason slugs (protocol.md §5).
pub const DEFAULT_CANCEL_REASONS: [&str; 5] =
    ["store_closed", "out_of_stock", "technical_issues", "order_not_paid", "customer_request"];

#[derive(Debug, Clone)]
pub struct Policy {
    pub stores: HashMap<String, StoreProfile>,
    pub default_store: StoreProfile,
    /// expectedAssemblyTime = now + this.
    pub assembly_minutes: i64,
    /// The offset written into every timestamp we emit (Moscow, +03:00, by default).
    pub offset: FixedOffset,
    /// Send `order.assembled` before `order.ready_for_delivery` when the store skipped it.
    pub synthesize_assembled: bool,
    /// Slugs the merchant may cancel with.
    pub cancel_reasons: Vec<String>,
    pub notification_format: NotificationFormat,
    /// Prefix of generated merchant order numbers.
    pub number_prefix: String,
    pub pickup_code_length: usize,
    pub pickup_max_attempts: u32,
    pub pickup_lockout_secs: i64,
    /// Deadline timers (config `[deadlines]`): also what the API shows as an order's deadlines.
    pub deadlines: DeadlineSettings,
}

/// Kuper's clock: it writes and reads times in Moscow time, UTC+3 all year.
pub const MOSCOW: FixedOffset = match FixedOffset::east_opt(3 * 3600) {
    Some(offset) => offset,
    // Evaluated when compiling: a bad constant fails the build, never a running gateway.
    None => panic!("UTC+3 is a valid offset"),
};

impl Default for Policy {
    fn default() -> Self {
        Self {
            stores: HashMap::new(),
            default_store: StoreProfile::default(),
            assembly_minutes: 30,
            offset: MOSCOW,
            synthesize_assembled: true,
            cancel_reasons: DEFAULT_CANCEL_REASONS.iter().map(|s| s.to_string()).collect(),
            notification_format: NotificationFormat::Brief,
            number_prefix: "KB-".into(),
            pickup_code_length: 6,
            pickup_max_attempts: 5,
            pickup_lockout_secs: 900,
            deadlines: DeadlineSettings::default(),
        }
    }
}

impl Policy {
    pub fn store(&self, store_id: &str) -> StoreProfile {
        self.stores.get(store_id).copied().unwrap_or(self.default_store)
    }
}

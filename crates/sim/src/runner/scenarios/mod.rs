//! The catalogue: which scenarios exist, how names select them, and how one is played.

mod basic;
mod composition;
mod faults;

use super::ctx::Ctx;
use super::merchant_api::MerchantApi;
use super::report::ScenarioResult;
use super::RunOptions;
use crate::http::App;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Id {
    AHappy,
    BHappy,
    CHappy,
    CancelByMerchant,
    CancelByKuper,
    Restaurant,
    DuplicateWebhooks,
    ReorderedCourierEvents,
    KuperOutage,
    TokenExpiry,
    CancelStagesA,
    CancelStagesB,
    CancelStagesC,
    FewerUnits,
    Replacement,
    WeightChange,
    MarkingCodes,
}

pub(super) struct Entry {
    pub id: Id,
    pub name: &'static str,
    pub description: &'static str,
}

const fn entry(id: Id, name: &'static str, description: &'static str) -> Entry {
    Entry { id, name, description }
}

/// In play order. Indexes seed each scenario's generator, so new scenarios go at the end.
pub(super) const CATALOGUE: &[Entry] = &[
    entry(Id::AHappy, "a-happy-path", "Scheme A (Kuper delivers): in_work, assembled, ready_for_delivery; courier and delivery webhooks; shipped and paid"),
    entry(Id::BHappy, "b-happy-path", "Scheme B (pickup): assembly, ready_for_delivery, pickup code in the profile's order, hand-over refused until the customer's code is verified, delivered with composition"),
    entry(Id::CHappy, "c-happy-path", "Scheme C (merchant delivers): assembly, ready_for_delivery, estimated time, delivering, delivered"),
    entry(Id::CancelByMerchant, "cancel-by-merchant", "The store cancels right after order.created: order.canceled with its reason, nothing after it"),
    entry(Id::CancelByKuper, "cancel-by-kuper", "Kuper cancels mid-assembly: acknowledged, repeated cancel acknowledged, no notification afterwards"),
    entry(Id::Restaurant, "restaurant", "A restaurant order: accepted (with the assembly time) before in_work, then scheme A"),
    entry(Id::DuplicateWebhooks, "duplicate-webhooks", "Kuper repeats order.created and status webhooks: same number, each acknowledged, no extra notification"),
    entry(Id::ReorderedCourierEvents, "reordered-courier-events", "courier.arrived before courier.assigned, delivering before received, a late courier event: all acknowledged"),
    entry(Id::KuperOutage, "kuper-outage-mid-order", "Kuper answers 503 mid-order: the merchant retries and everything arrives once, in order"),
    entry(Id::TokenExpiry, "token-expiry", "Kuper revokes the access tokens mid-order: the merchant gets a new token and the notification goes through"),
    entry(Id::CancelStagesA, "cancel-at-every-stage-a", "Scheme A: the store, then Kuper, cancels at every stage; the store cannot cancel once the courier has the order"),
    entry(Id::CancelStagesB, "cancel-at-every-stage-b", "Scheme B: the store, then Kuper, cancels at every stage before hand-over"),
    entry(Id::CancelStagesC, "cancel-at-every-stage-c", "Scheme C: the store, then Kuper, cancels at every stage before delivery (delivering included)"),
    entry(Id::FewerUnits, "composition-fewer-units", "ready_for_delivery with one unit fewer of a piece good: recomputed totals accepted"),
    entry(Id::Replacement, "composition-replacement", "ready_for_delivery with a line replaced by another SKU (replacedByID, own price)"),
    entry(Id::WeightChange, "composition-weight-change", "ready_for_delivery with a weighed good's actual weight: totals per protocol.md §8"),
    entry(Id::MarkingCodes, "composition-marking-codes", "ready_for_delivery with one raw GS1 marking code per unit, escaped and unchanged"),
];

/// The catalogue entries a name selects: the exact name, or a prefix ending in `*`.
pub(super) fn select(pattern: &str) -> Vec<(usize, &'static Entry)> {
    let pattern = pattern.trim();
    CATALOGUE
        .iter()
        .enumerate()
        .filter(|(_, e)| match pattern.strip_suffix('*') {
            Some(prefix) => e.name.starts_with(prefix),
            None => e.name == pattern,
        })
        .collect()
}

pub(super) struct Selection {
    /// Catalogue index and entry, in catalogue order, each once.
    pub entries: Vec<(usize, &'static Entry)>,
    pub unknown: Vec<String>,
}

pub(super) fn selection(names: &[String]) -> Selection {
    if names.is_empty() {
        return Selection { entries: CATALOGUE.iter().enumerate().collect(), unknown: Vec::new() };
    }
    let mut chosen = vec![false; CATALOGUE.len()];
    let mut unknown = Vec::new();
    for name in names {
        let matched = select(name);
        if matched.is_empty() {
            unknown.push(name.clone());
        }
        for (index, _) in matched {
            if let Some(flag) = chosen.get_mut(index) {
                *flag = true;
            }
        }
    }
    let entries = CATALOGUE.iter().enumerate().filter(|(i, _)| chosen.get(*i).copied().unwrap_or(false)).collect();
    Selection { entries, unknown }
}

/// Each scenario's generator seed: derived from the run's seed and the scenario's place in the
/// catalogue (spread by a large odd constant so neighbouring seeds do not overlap).
pub(super) fn scenario_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_add((index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

pub(super) async fn play(
    app: &App,
    opts: &RunOptions,
    api: Option<&MerchantApi>,
    index: usize,
    entry: &Entry,
) -> ScenarioResult {
    let mut ctx = Ctx::new(app, opts, api, scenario_seed(opts.seed, index));
    // A scenario that cannot go on has already said why; whatever else it saw is kept.
    let _ = match entry.id {
        Id::AHappy => basic::a_happy(&mut ctx).await,
        Id::BHappy => basic::b_happy(&mut ctx).await,
        Id::CHappy => basic::c_happy(&mut ctx).await,
        Id::CancelByMerchant => basic::cancel_by_merchant(&mut ctx).await,
        Id::CancelByKuper => basic::cancel_by_kuper(&mut ctx).await,
        Id::Restaurant => basic::restaurant(&mut ctx).await,
        Id::CancelStagesA => basic::cancel_at_every_stage(&mut ctx, super::ctx::OrderKind::A).await,
        Id::CancelStagesB => basic::cancel_at_every_stage(&mut ctx, super::ctx::OrderKind::B).await,
        Id::CancelStagesC => basic::cancel_at_every_stage(&mut ctx, super::ctx::OrderKind::C).await,
        Id::DuplicateWebhooks => faults::duplicate_webhooks(&mut ctx).await,
        Id::ReorderedCourierEvents => faults::reordered_courier_events(&mut ctx).await,
        Id::KuperOutage => faults::kuper_outage(&mut ctx).await,
        Id::TokenExpiry => faults::token_expiry(&mut ctx).await,
        Id::FewerUnits => composition::fewer_units(&mut ctx).await,
        Id::Replacement => composition::replacement(&mut ctx).await,
        Id::WeightChange => composition::weight_change(&mut ctx).await,
        Id::MarkingCodes => composition::marking_codes(&mut ctx).await,
    };
    ctx.into_result(entry.name, entry.description)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_select_scenarios() {
        assert_eq!(select("a-happy-path").len(), 1);
        assert_eq!(select("cancel-at-every-stage-*").len(), 3);
        assert_eq!(select("composition-*").len(), 4);
        assert!(select("cancel").is_empty());
        let picked = selection(&["token-expiry".into(), "a-happy-path".into(), "a-*".into(), "x".into()]);
        let names: Vec<&str> = picked.entries.iter().map(|(_, e)| e.name).collect();
        assert_eq!(names, ["a-happy-path", "token-expiry"]);
        assert_eq!(picked.unknown, ["x"]);
        assert_eq!(selection(&[]).entries.len(), CATALOGUE.len());
    }

    #[test]
    fn names_are_unique_kebab_case_and_seeds_differ() {
        for (i, e) in CATALOGUE.iter().enumerate() {
            assert!(e.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            assert_eq!(CATALOGUE.iter().filter(|o| o.name == e.name).count(), 1);
            assert_ne!(scenario_seed(7, i), scenario_seed(7, i + 1));
        }
        assert_eq!(CATALOGUE.len(), 17);
    }
}

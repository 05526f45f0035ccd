//! Times as operators read them: the wall clock of the store's zone and "in 12 min".
//!
//! The display zone is a fixed UTC offset (`[console] time_zone_offset_minutes`, Moscow's +180
//! by default): Russia has kept no daylight saving time since 2014, so a fixed offset is exact
//! for every Russian zone, and it spares the binary a time-zone database. It is process-wide
//! (set once when the console is built), because every page of one process shows one zone.

use super::i18n::{tr, Lang};
use chrono::{DateTime, FixedOffset};
use std::sync::atomic::{AtomicI32, Ordering};

pub const DEFAULT_OFFSET_MINUTES: i32 = 180;
static OFFSET_MINUTES: AtomicI32 = AtomicI32::new(DEFAULT_OFFSET_MINUTES);

/// Sets the display zone; offsets outside UTC−12…UTC+14 are refused (config validation
/// explains them first) and leave the zone as it was.
pub fn set_display_offset(minutes: i32) -> bool {
    if FixedOffset::east_opt(minutes.saturating_mul(60)).is_some() && (-720..=840).contains(&minutes) {
        OFFSET_MINUTES.store(minutes, Ordering::Relaxed);
        true
    } else {
        false
    }
}

pub fn display_offset() -> FixedOffset {
    let minutes = OFFSET_MINUTES.load(Ordering::Relaxed);
    // Only offsets east_opt accepted are ever stored; UTC is the unreachable fallback.
    FixedOffset::east_opt(minutes * 60).unwrap_or_else(|| chrono::Utc.fix())
}

use chrono::Offset as _;

/// The zone's name for the page footer: "московское (UTC+3)" / "Moscow (UTC+3)".
pub fn zone_label(lang: Lang) -> String {
    let minutes = OFFSET_MINUTES.load(Ordering::Relaxed);
    let sign = if minutes < 0 { '−' } else { '+' };
    let (h, m) = (minutes.abs() / 60, minutes.abs() % 60);
    let utc = if m == 0 { format!("UTC{sign}{h}") } else { format!("UTC{sign}{h}:{m:02}") };
    if minutes == DEFAULT_OFFSET_MINUTES {
        format!("{} ({utc})", tr(lang, "московское", "Moscow"))
    } else {
        utc
    }
}

/// "03.12.2026 18:04" (Russian) or "03 Dec 2026 18:04" (English) in the display zone.
pub fn time(lang: Lang, unix_ms: i64) -> String {
    time_in(lang, unix_ms, display_offset())
}

fn time_in(lang: Lang, unix_ms: i64, offset: FixedOffset) -> String {
    let Some(utc) = DateTime::from_timestamp_millis(unix_ms) else {
        return "—".to_string();
    };
    let local = utc.with_timezone(&offset);
    match lang {
        Lang::Ru => local.format("%d.%m.%Y %H:%M").to_string(),
        Lang::En => local.format("%d %b %Y %H:%M").to_string(),
    }
}

/// How far `unix_ms` is from `now_ms`, in words: "через 12 мин", "5 мин назад", "сейчас".
pub fn time_left(lang: Lang, unix_ms: i64, now_ms: i64) -> String {
    let diff = unix_ms.saturating_sub(now_ms);
    let span = span(lang, diff.unsigned_abs() / 1000);
    if diff.unsigned_abs() < 60_000 {
        return tr(lang, "сейчас", "now").to_string();
    }
    match (lang, diff > 0) {
        (Lang::Ru, true) => format!("через {span}"),
        (Lang::Ru, false) => format!("{span} назад"),
        (Lang::En, true) => format!("in {span}"),
        (Lang::En, false) => format!("{span} ago"),
    }
}

/// "12 мин", "3 ч 5 мин", "2 дн 4 ч".
fn span(lang: Lang, secs: u64) -> String {
    let minutes = secs / 60;
    let (d, h, m) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    let (ud, uh, um) = match lang {
        Lang::Ru => ("дн", "ч", "мин"),
        Lang::En => ("d", "h", "min"),
    };
    if d > 0 {
        if h > 0 {
            format!("{d} {ud} {h} {uh}")
        } else {
            format!("{d} {ud}")
        }
    } else if h > 0 {
        if m > 0 {
            format!("{h} {uh} {m} {um}")
        } else {
            format!("{h} {uh}")
        }
    } else {
        format!("{m} {um}")
    }
}

/// The time with its distance from now: "03.12.2026 18:04 (через 12 мин)".
pub fn time_with_left(lang: Lang, unix_ms: i64, now_ms: i64) -> String {
    format!("{} ({})", time(lang, unix_ms), time_left(lang, unix_ms, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    #[test]
    fn wall_clock_in_the_given_zone() {
        // 2026-12-03 15:04:00 UTC
        let t = 1_796_310_240_000;
        let moscow = FixedOffset::east_opt(3 * 3600).unwrap();
        assert_eq!(time_in(Lang::Ru, t, moscow), "03.12.2026 18:04");
        assert_eq!(time_in(Lang::En, t, moscow), "03 Dec 2026 18:04");
        let utc = FixedOffset::east_opt(0).unwrap();
        assert_eq!(time_in(Lang::Ru, t, utc), "03.12.2026 15:04");
        assert_eq!(time_in(Lang::Ru, i64::MAX, utc), "—");
    }

    #[test]
    fn distances_in_words() {
        let now = 1_700_000_000_000;
        assert_eq!(time_left(Lang::Ru, now + 12 * MINUTE, now), "через 12 мин");
        assert_eq!(time_left(Lang::En, now + 12 * MINUTE, now), "in 12 min");
        assert_eq!(time_left(Lang::Ru, now - 5 * MINUTE, now), "5 мин назад");
        assert_eq!(time_left(Lang::En, now - 5 * MINUTE, now), "5 min ago");
        assert_eq!(time_left(Lang::Ru, now + 30_000, now), "сейчас");
        assert_eq!(time_left(Lang::Ru, now + 185 * MINUTE, now), "через 3 ч 5 мин");
        assert_eq!(time_left(Lang::Ru, now + 120 * MINUTE, now), "через 2 ч");
        assert_eq!(time_left(Lang::En, now - (2 * 1440 + 4 * 60) * MINUTE, now), "2 d 4 h ago");
        assert!(time_left(Lang::Ru, i64::MIN, now).ends_with("назад"));
    }

    #[test]
    fn offsets_outside_the_earth_are_refused() {
        assert!(!set_display_offset(15 * 60));
        assert!(!set_display_offset(-13 * 60));
        // The refused value left the default in place.
        assert_eq!(display_offset().local_minus_utc(), DEFAULT_OFFSET_MINUTES * 60);
    }
}

//! The pages the benchmark requests and what each answer must hold, checked against what was
//! seeded.

use super::seed::{phone_typed, Seeded};
use super::{PAGE_SIZE, STORES, SURNAMES};
use kuper_bridge_bench::rng::Rng;
use std::collections::HashMap;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Page {
    Board,
    State,
    Attention,
    Store,
    Phone,
    Surname,
    KuperId,
    Deep,
    Rows,
    Order,
}

impl Page {
    pub(super) const ALL: [Page; 10] = [
        Page::Board,
        Page::State,
        Page::Attention,
        Page::Store,
        Page::Phone,
        Page::Surname,
        Page::KuperId,
        Page::Deep,
        Page::Rows,
        Page::Order,
    ];

    pub(super) fn slug(self) -> &'static str {
        match self {
            Page::Board => "board",
            Page::State => "state",
            Page::Attention => "attention",
            Page::Store => "store",
            Page::Phone => "phone",
            Page::Surname => "surname",
            Page::KuperId => "kuper_id",
            Page::Deep => "deep_page",
            Page::Rows => "rows",
            Page::Order => "order_page",
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Page::Board => "board, first page `/ui/orders`",
            Page::State => "board by state `?state=in_work`",
            Page::Attention => "needs attention `?attention=1`",
            Page::Store => "board by store `?store=…`",
            Page::Phone => "search: a phone in another format `?q=8 (9xx) …`",
            Page::Surname => "search: part of a surname `?q=Смирн`",
            Page::KuperId => "search: a Kuper id `?q=H…`",
            Page::Deep => "a deep page `?before=…`",
            Page::Rows => "live update `/ui/orders/rows`",
            Page::Order => "order page `/ui/orders/{ref}`",
        }
    }
}

/// What an answer must contain.
#[derive(Clone, Debug)]
pub(super) enum Expect {
    /// A board page: this many rows, every row in this state (if any), needing attention (if
    /// set), the named order among them (if any), every name containing this text (if any);
    /// the "all" count exactly `total`, or at least `total` when `at_least`.
    Board(BoardExpect),
    /// The table body alone.
    Fragment { rows: usize },
    /// An order's page.
    Order { reference: String, state: &'static str },
}

#[derive(Clone, Debug, Default)]
pub(super) struct BoardExpect {
    pub(super) rows: usize,
    pub(super) state: Option<&'static str>,
    pub(super) state_count: Option<usize>,
    pub(super) attention: bool,
    pub(super) contains: Option<String>,
    pub(super) name_part: Option<String>,
    pub(super) total: usize,
    pub(super) at_least: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Request {
    pub(super) path: String,
    pub(super) expect: Expect,
}

/// Percent-encodes a query value (everything but the unreserved characters).
pub(super) fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A name as the board compares it: lower case, `ё` as `е`.
pub(super) fn fold(name: &str) -> String {
    name.to_lowercase().replace('ё', "е")
}

/// What the board's name search finds: a name with a word that starts with the typed text
/// (words split at anything but a letter or digit).
pub(super) fn has_word_starting(folded_name: &str, folded_part: &str) -> bool {
    folded_name.split(|c: char| !c.is_alphanumeric()).any(|w| w.starts_with(folded_part))
}

/// The part of a surname a person types: its first five letters, as written.
pub(super) fn surname_part(name: &str) -> Option<String> {
    let words: Vec<&str> = name.split_whitespace().collect();
    let surname = words.iter().find(|w| SURNAMES.iter().any(|s| w.starts_with(s)))?;
    Some(surname.chars().take(5).collect())
}

/// The seeded world, as the requests' expectations need it.
pub(super) struct World<'a> {
    pub(super) orders: &'a [Seeded],
    /// Each order's name in lower case, as the gateway stores it for the search.
    pub(super) lower_names: Vec<String>,
    pub(super) by_state: HashMap<&'static str, usize>,
    pub(super) by_store: HashMap<&'static str, usize>,
    pub(super) late: usize,
    /// The gateway's id of the newest order (from the board's next-page link), for cursors.
    pub(super) newest_id: i64,
}

impl World<'_> {
    pub(super) fn requests(&self, page: Page, count: usize, seed: u64) -> Vec<Request> {
        let mut rng = Rng::new(seed);
        let n = self.orders.len();
        let full = |total: usize| total.min(PAGE_SIZE);
        let board = |total: usize| Expect::Board(BoardExpect { rows: full(total), total, ..Default::default() });
        (0..count)
            .map(|i| {
                let random = self.orders[(rng.next_u64() % n as u64) as usize].clone();
                match page {
                    Page::Board => Request { path: "/ui/orders".into(), expect: board(n) },
                    Page::State => {
                        let count = self.by_state.get("in_work").copied().unwrap_or(0);
                        Request {
                            path: "/ui/orders?state=in_work".into(),
                            expect: Expect::Board(BoardExpect {
                                rows: full(count),
                                state: Some("in_work"),
                                state_count: Some(count),
                                total: n,
                                ..Default::default()
                            }),
                        }
                    }
                    Page::Attention => Request {
                        path: "/ui/orders?attention=1".into(),
                        expect: Expect::Board(BoardExpect {
                            rows: full(self.late),
                            attention: true,
                            total: self.late,
                            at_least: true,
                            ..Default::default()
                        }),
                    },
                    Page::Store => {
                        let store = STORES[i % STORES.len()].0;
                        let count = self.by_store.get(store).copied().unwrap_or(0);
                        Request { path: format!("/ui/orders?store={store}"), expect: board(count) }
                    }
                    Page::Phone => Request {
                        path: format!("/ui/orders?q={}", encode(&phone_typed(&random.phone, rng.next_u64()))),
                        expect: Expect::Board(BoardExpect {
                            rows: 0,
                            contains: Some(random.reference.clone()),
                            total: 1,
                            at_least: true,
                            ..Default::default()
                        }),
                    },
                    Page::Surname => {
                        let part = surname_part(&random.name)
                            .or_else(|| self.orders.iter().find_map(|o| surname_part(&o.name)))
                            .unwrap_or_else(|| "Иван".into());
                        let lower = fold(&part);
                        let total = self.lower_names.iter().filter(|n| has_word_starting(n, &lower)).count();
                        Request {
                            path: format!("/ui/orders?q={}", encode(&part)),
                            expect: Expect::Board(BoardExpect {
                                rows: full(total),
                                name_part: Some(lower),
                                total,
                                ..Default::default()
                            }),
                        }
                    }
                    Page::KuperId => Request {
                        path: format!("/ui/orders?q={}", encode(&random.reference)),
                        expect: Expect::Board(BoardExpect {
                            rows: 1,
                            contains: Some(random.reference.clone()),
                            total: 1,
                            ..Default::default()
                        }),
                    },
                    Page::Deep => {
                        // Somewhere in the older half of the orders.
                        let low = (PAGE_SIZE as i64 * 2).min(self.newest_id);
                        let span = (self.newest_id / 2 - low).max(1) as u64;
                        let before = low + (rng.next_u64() % span) as i64;
                        Request { path: format!("/ui/orders?before={before}"), expect: board(n) }
                    }
                    Page::Rows => {
                        Request { path: "/ui/orders/rows".into(), expect: Expect::Fragment { rows: full(n) } }
                    }
                    Page::Order => Request {
                        path: format!("/ui/orders/{}", encode(&random.reference)),
                        expect: Expect::Order { reference: random.reference.clone(), state: random.state },
                    },
                }
            })
            .collect()
    }
}

/// The number after `data-count-state="{state}">` (the board's per-state chips; "" is all).
pub(super) fn chip_count(html: &str, state: &str) -> Option<usize> {
    let marker = format!("data-count-state=\"{state}\">");
    let at = html.find(&marker)? + marker.len();
    let digits: String = html[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The board's rows: each row's reference and its HTML (up to the next row).
pub(super) fn board_rows(html: &str) -> Vec<(&str, &str)> {
    const MARK: &str = " data-order=\"";
    let starts: Vec<usize> = html.match_indices(MARK).map(|(i, _)| i).collect();
    starts
        .iter()
        .enumerate()
        .filter_map(|(k, &i)| {
            let rest = &html[i + MARK.len()..];
            let reference = &rest[..rest.find('"')?];
            let end = starts.get(k + 1).copied().unwrap_or(html.len());
            Some((reference, &html[i..end]))
        })
        .collect()
}

/// The text inside `<span class="name">…</span>` of a row.
pub(super) fn row_name(row: &str) -> Option<&str> {
    const MARK: &str = "class=\"name\">";
    let at = row.find(MARK)? + MARK.len();
    let rest = &row[at..];
    Some(&rest[..rest.find('<')?])
}

/// Every `data-state="…"` value of a page, in order.
pub(super) fn states(html: &str) -> Vec<&str> {
    const MARK: &str = "data-state=\"";
    html.match_indices(MARK)
        .filter_map(|(i, _)| {
            let rest = &html[i + MARK.len()..];
            Some(&rest[..rest.find('"')?])
        })
        .collect()
}

/// Why an answer is wrong, if it is.
pub(super) fn check(expect: &Expect, html: &str) -> Option<String> {
    match expect {
        Expect::Board(BoardExpect { rows, state, state_count, attention, contains, name_part, total, at_least }) => {
            let found = board_rows(html);
            if contains.is_none() && found.len() != *rows {
                return Some(format!("{} rows, expected {rows}", found.len()));
            }
            if let Some(reference) = contains {
                if !found.iter().any(|(r, _)| r == reference) {
                    return Some(format!("order {reference} is not among the {} rows", found.len()));
                }
                if !*at_least && found.len() != 1 {
                    return Some(format!("{} rows, expected only {reference}", found.len()));
                }
            }
            match chip_count(html, "") {
                Some(all) if (*at_least && all >= *total) || all == *total => {}
                Some(all) => return Some(format!("the \"all\" count says {all}, expected {total}")),
                None => return Some("no \"all\" count (data-count-state=\"\")".into()),
            }
            if let Some(state) = state {
                if let Some(bad) = found.iter().find(|(_, row)| !row.contains(&format!("data-state=\"{state}\""))) {
                    return Some(format!("order {} is not {state}", bad.0));
                }
                if let Some(expected) = state_count {
                    let shown = chip_count(html, state);
                    if shown != Some(*expected) {
                        return Some(format!("the {state} count says {shown:?}, expected {expected}"));
                    }
                }
            }
            if *attention {
                if let Some(bad) = found.iter().find(|(_, row)| !row.contains("data-attention=\"")) {
                    return Some(format!("order {} is shown without an attention flag", bad.0));
                }
            }
            if let Some(part) = name_part {
                let bad =
                    found.iter().find(|(_, row)| !row_name(row).is_some_and(|n| has_word_starting(&fold(n), part)));
                if let Some((reference, row)) = bad {
                    return Some(format!("order {reference} ({:?}) does not match {part:?}", row_name(row)));
                }
            }
            None
        }
        Expect::Fragment { rows } => {
            if !html.trim_start().starts_with("<tbody") {
                return Some("not a table body".into());
            }
            let found = board_rows(html).len();
            (found != *rows).then(|| format!("{found} rows, expected {rows}"))
        }
        Expect::Order { reference, state } => {
            if !html.contains(reference.as_str()) {
                return Some(format!("the page does not name {reference}"));
            }
            match states(html).first() {
                Some(s) if s == state => None,
                other => Some(format!("the order's state is {other:?}, expected {state}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::newest_id;

    #[test]
    fn surname_parts_come_from_the_surname() {
        assert_eq!(surname_part("Мария Смирнова").as_deref(), Some("Смирн"));
        assert_eq!(surname_part("Фёдоров Илья").as_deref(), Some("Фёдор"));
        assert_eq!(surname_part("Олег"), None);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("8 (916) 123-45-67"), "8%20%28916%29%20123-45-67");
        assert_eq!(encode("+7"), "%2B7");
        assert_eq!(encode("Ив"), "%D0%98%D0%B2");
    }

    const PAGE: &str = r#"<nav class="chips"><a class="chip current" href="/ui/orders?">Все <span class="count" data-count-state="">3</span></a><a data-chip="in_work">В работе <span class="count" data-count-state="in_work">2</span></a></nav>
<tbody id="board-rows"><tr class="attention" data-order="H1" data-href="/ui/orders/H1"><td><span class="state state-in_work" data-state="in_work">В работе</span></td><td class="customer"><span class="name">Мария Смирнова</span></td><td><span class="badge" data-attention="deadline_missed">Просрочен</span></td></tr>
<tr data-order="H2" data-href="/ui/orders/H2"><td><span data-state="in_work">В работе</span></td><td class="customer"><span class="name">Иван Петров</span></td></tr></tbody>
<a class="button secondary" href="/ui/orders?before=7" data-page="next" rel="next">Следующие 50</a>"#;

    fn board(rows: usize, total: usize) -> Expect {
        Expect::Board(BoardExpect { rows, total, ..Default::default() })
    }

    #[test]
    fn board_pages_are_read_back() {
        assert_eq!(chip_count(PAGE, ""), Some(3));
        assert_eq!(chip_count(PAGE, "in_work"), Some(2));
        let rows = board_rows(PAGE);
        assert_eq!(rows.iter().map(|(r, _)| *r).collect::<Vec<_>>(), ["H1", "H2"]);
        assert_eq!(row_name(rows[0].1), Some("Мария Смирнова"));
        assert_eq!(newest_id(PAGE), Some(7 + PAGE_SIZE as i64 - 1));
    }

    #[test]
    fn wrong_answers_are_caught() {
        assert_eq!(check(&board(2, 3), PAGE), None);
        assert!(check(&board(2, 4), PAGE).is_some(), "wrong total");
        assert!(check(&board(3, 3), PAGE).is_some(), "wrong number of rows");
        let state = |s: &'static str, n| {
            Expect::Board(BoardExpect { rows: 2, state: Some(s), state_count: Some(n), total: 3, ..Default::default() })
        };
        assert_eq!(check(&state("in_work", 2), PAGE), None);
        assert!(check(&state("in_work", 5), PAGE).is_some());
        assert!(check(&state("ready", 2), PAGE).is_some());
        let attention =
            Expect::Board(BoardExpect { rows: 2, attention: true, total: 1, at_least: true, ..Default::default() });
        assert!(check(&attention, PAGE).unwrap_or_default().contains("H2"), "H2 has no flag");
        let name = |part: &str| {
            Expect::Board(BoardExpect { rows: 2, name_part: Some(part.into()), total: 3, ..Default::default() })
        };
        assert!(check(&name("смирн"), PAGE).is_some(), "Петров does not match");
        let contains = |r: &str, at_least| {
            Expect::Board(BoardExpect { rows: 0, contains: Some(r.into()), total: 1, at_least, ..Default::default() })
        };
        assert_eq!(check(&contains("H2", true), PAGE), None);
        assert!(check(&contains("H9", true), PAGE).is_some());
        assert!(check(&contains("H2", false), PAGE).is_some(), "two rows where one was expected");
        let order = |s: &'static str| Expect::Order { reference: "H1".into(), state: s };
        assert_eq!(check(&order("in_work"), PAGE), None);
        assert!(check(&order("ready"), PAGE).is_some());
        assert!(check(&Expect::Fragment { rows: 2 }, PAGE).is_some(), "not a tbody");
        let fragment = &PAGE[PAGE.find("<tbody").unwrap_or(0)..];
        assert_eq!(check(&Expect::Fragment { rows: 2 }, fragment), None);
    }
}

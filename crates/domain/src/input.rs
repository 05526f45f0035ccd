//! The inputs of merchant actions, parsed once at the edge (the REST body, the command line,
//! the console's forms) into types the engine trusts.
//!
//! A malformed input travels as an `Err` instead of being refused at the edge: the engine
//! answers a step that is out of order (409) before a wrong input (422), so that the merchant
//! learns first that the step itself is refused (`state_is_checked_before_content`). The
//! engine reports the edge's error after its state check and never parses the text again.

use crate::error::DomainError;
use chrono::{DateTime, FixedOffset, SecondsFormat};
use std::fmt;

/// An input as the edge parsed it, or why it could not be parsed.
pub type Parsed<T> = Result<T, DomainError>;

/// A time the store promises (`expectedAssemblyTime`, `at`): RFC 3339 with an explicit offset,
/// kept in the offset it was given in, since Kuper shows it to the customer as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromisedTime(DateTime<FixedOffset>);

impl PromisedTime {
    pub fn parse(field: &str, text: &str) -> Parsed<Self> {
        DateTime::parse_from_rfc3339(text.trim()).map(Self).map_err(|e| {
            DomainError::invalid(
                field,
                format!("expected RFC 3339 with an offset, e.g. 2026-03-14T12:30:00+03:00 ({e})"),
            )
        })
    }

    pub fn at(self) -> DateTime<FixedOffset> {
        self.0
    }
}

impl From<DateTime<FixedOffset>> for PromisedTime {
    fn from(t: DateTime<FixedOffset>) -> Self {
        Self(t)
    }
}

/// Whole seconds, the offset as given: the form Kuper's protocol uses.
impl fmt::Display for PromisedTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Secs, false))
    }
}

/// A pickup code as the customer shows it at the counter: 4 to 12 letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CustomerCode(String);

impl CustomerCode {
    pub const MIN_LEN: usize = 4;
    pub const MAX_LEN: usize = 12;

    pub fn parse(text: &str) -> Parsed<Self> {
        let code = text.trim();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&code.len()) || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(DomainError::invalid("code", "4 to 12 letters or digits"));
        }
        Ok(Self(code.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A cancellation reason: one of the slugs configured in `kuper.cancel_reasons`
/// (`out_of_stock`, …), the only ones Kuper is told. The list is configuration, so parsing takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelReason(String);

impl CancelReason {
    pub fn parse(text: &str, allowed: &[String]) -> Parsed<Self> {
        let slug = text.trim();
        match allowed.iter().find(|a| *a == slug) {
            Some(known) => Ok(Self(known.clone())),
            None => {
                Err(DomainError::invalid("reason", format!("unknown reason {slug:?}; allowed: {}", allowed.join(", "))))
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The free text of a cancellation, for the customer's support: at most
/// [`CancelDescription::MAX_CHARS`] characters (characters, not bytes: Russian text is two
/// bytes a letter, and a byte count would halve the limit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CancelDescription(String);

impl CancelDescription {
    pub const MAX_CHARS: usize = 1000;

    pub fn parse(text: &str) -> Parsed<Self> {
        if text.chars().count() > Self::MAX_CHARS {
            return Err(DomainError::invalid("description", format!("longer than {} characters", Self::MAX_CHARS)));
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An operator's written reason to hand a pickup order over although the customer's code was
/// not verified: a sentence or two for the order's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideReason(String);

impl OverrideReason {
    pub const MAX_CHARS: usize = 500;

    pub fn parse(text: &str) -> Parsed<Self> {
        let reason = text.trim();
        if reason.is_empty() {
            return Err(DomainError::invalid(
                "overrideReason",
                "a hand-over without a verified code needs a written reason",
            ));
        }
        if reason.chars().count() > Self::MAX_CHARS {
            return Err(DomainError::invalid("overrideReason", format!("longer than {} characters", Self::MAX_CHARS)));
        }
        Ok(Self(reason.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: DomainError) -> String {
        match e {
            DomainError::Invalid { field, .. } => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn promised_times_need_an_offset_and_keep_it() {
        let t = PromisedTime::parse("at", " 2026-03-14T12:30:00+03:00 ").expect("valid");
        assert_eq!(t.to_string(), "2026-03-14T12:30:00+03:00");
        assert_eq!(
            PromisedTime::parse("at", "2026-03-14T12:30:00.750+05:00").map(|t| t.to_string()),
            Ok("2026-03-14T12:30:00+05:00".into())
        );
        for bad in ["2026-03-14T12:30:00", "2026-03-14 12:30", "tomorrow", "", "1710408600"] {
            assert_eq!(PromisedTime::parse("at", bad).map_err(field), Err("at".into()), "{bad:?}");
        }
    }

    #[test]
    fn customer_codes() {
        for (text, expected) in [
            ("7306", Some("7306")),
            (" AB12CD ", Some("AB12CD")),
            ("123456789012", Some("123456789012")),
            ("123", None),
            ("1234567890123", None),
            ("12 34", None),
            ("12-34", None),
            ("кодик", None),
            ("", None),
        ] {
            assert_eq!(CustomerCode::parse(text).ok().as_ref().map(CustomerCode::as_str), expected, "{text:?}");
        }
    }

    #[test]
    fn cancel_reasons_are_the_configured_slugs() {
        let allowed = ["out_of_stock".to_string(), "other".to_string()];
        assert_eq!(CancelReason::parse(" out_of_stock ", &allowed).map(|r| r.to_string()), Ok("out_of_stock".into()));
        for bad in ["", "   ", "out of stock", "OUT_OF_STOCK", "teleported"] {
            match CancelReason::parse(bad, &allowed) {
                Err(DomainError::Invalid { field, message }) => {
                    assert_eq!(field, "reason");
                    assert!(message.contains("out_of_stock, other"), "the allowed slugs are listed: {message}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(CancelReason::parse("other", &[]).is_err(), "nothing is allowed when nothing is configured");
    }

    #[test]
    fn text_limits_count_characters() {
        let at_limit = "я".repeat(CancelDescription::MAX_CHARS);
        assert!(CancelDescription::parse(&at_limit).is_ok(), "2,000 bytes but 1,000 characters");
        assert_eq!(CancelDescription::parse(&format!("{at_limit}я")).map_err(field), Err("description".into()));
        assert!(OverrideReason::parse(&"я".repeat(OverrideReason::MAX_CHARS)).is_ok());
        for bad in ["", "  ", &"я".repeat(OverrideReason::MAX_CHARS + 1)] {
            assert_eq!(OverrideReason::parse(bad).map_err(field), Err("overrideReason".into()));
        }
        assert_eq!(
            OverrideReason::parse("  Потерял телефон ").map(|r| r.as_str().to_string()),
            Ok("Потерял телефон".into())
        );
    }
}

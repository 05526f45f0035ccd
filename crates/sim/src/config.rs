//! How a simulator instance behaves where Kuper's sources disagree.

use std::time::Duration;

/// Which source the simulator follows when the order of `pickup_code_created` is checked
/// (protocol.md §5 B).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Profile {
    /// The brief: the pickup code comes after `ready_for_delivery`.
    #[default]
    Brief,
    /// The v3 API: the pickup code comes after `in_work` and before `ready_for_delivery`.
    V3,
}

/// How a repeat of an already accepted notification is answered (protocol.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RepeatPolicy {
    /// `422` with rule `repeat` (what Kuper's QA tests show).
    #[default]
    Reject422,
    /// `202`, "already processed" (what the v3 spec describes).
    Accept202,
}

impl std::str::FromStr for Profile {
    type Err = String;

    /// `brief` or `v3`, as the CLI's `--profile` takes them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "brief" => Ok(Profile::Brief),
            "v3" => Ok(Profile::V3),
            other => Err(format!("unknown profile {other:?}: expected brief or v3")),
        }
    }
}

impl std::str::FromStr for RepeatPolicy {
    type Err = String;

    /// `422` or `202`, as the CLI's `--repeat` takes them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "422" => Ok(RepeatPolicy::Reject422),
            "202" => Ok(RepeatPolicy::Accept202),
            other => Err(format!("unknown repeat policy {other:?}: expected 422 or 202")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Credentials accepted by `POST /auth/token`.
    pub client_id: String,
    pub client_secret: String,
    /// Static `Client-Token` values accepted on `/v3` and `/v1` (v3 authentication).
    pub client_tokens: Vec<String>,
    /// Lifetime of tokens issued by `POST /auth/token`.
    pub token_ttl: Duration,
    pub profile: Profile,
    pub repeat: RepeatPolicy,
    /// Seed of the generator of orders: the same seed and the same sequence of control calls
    /// give the same orders.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            client_id: "sim-client".to_owned(),
            client_secret: "sim-secret".to_owned(),
            client_tokens: vec!["sim-client-token".to_owned()],
            token_ttl: Duration::from_secs(300),
            profile: Profile::Brief,
            repeat: RepeatPolicy::Reject422,
            seed: 42,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cli_words() {
        assert_eq!("brief".parse(), Ok(Profile::Brief));
        assert_eq!("V3".parse(), Ok(Profile::V3));
        assert!("x".parse::<Profile>().is_err());
        assert_eq!("202".parse(), Ok(RepeatPolicy::Accept202));
        assert_eq!("422".parse(), Ok(RepeatPolicy::Reject422));
        assert!("200".parse::<RepeatPolicy>().is_err());
    }
}

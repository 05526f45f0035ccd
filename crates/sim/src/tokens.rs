//! Access tokens issued by `POST /auth/token`: random, expiring, revocable.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum TokenCheck {
    Valid,
    Expired,
    Unknown,
}

#[derive(Debug, Default)]
pub struct Tokens {
    live: HashMap<String, Instant>,
    /// For every token ever issued, the sequence number of the last notification that had
    /// arrived by then: the runner places token requests among the notifications with it.
    marks: Vec<u64>,
}

impl Tokens {
    /// Tokens come from the OS-seeded generator, not the order seed: they must not be
    /// guessable, and issuing one must not shift the sequence of generated orders.
    pub fn issue(&mut self, ttl: Duration, now: Instant, after_seq: u64) -> String {
        self.live.retain(|_, expires| *expires > now);
        let bytes: [u8; 24] = rand::rng().random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let token = format!("sim.{token}");
        self.live.insert(token.clone(), now + ttl);
        self.marks.push(after_seq);
        token
    }

    pub fn check(&self, token: &str, now: Instant) -> TokenCheck {
        match self.live.get(token) {
            Some(expires) if *expires > now => TokenCheck::Valid,
            Some(_) => TokenCheck::Expired,
            None => TokenCheck::Unknown,
        }
    }

    pub fn issued(&self) -> u64 {
        self.marks.len() as u64
    }

    pub fn marks(&self) -> &[u64] {
        &self.marks
    }

    pub fn revoke_all(&mut self) -> usize {
        let count = self.live.len();
        self.live.clear();
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_revoke() {
        let mut tokens = Tokens::default();
        let start = Instant::now();
        let token = tokens.issue(Duration::from_secs(10), start, 0);
        assert_eq!(tokens.check(&token, start), TokenCheck::Valid);
        assert_eq!(tokens.check(&token, start + Duration::from_secs(11)), TokenCheck::Expired);
        assert_eq!(tokens.check("other", start), TokenCheck::Unknown);
        let second = tokens.issue(Duration::from_secs(10), start, 3);
        assert_ne!(token, second);
        assert_eq!(tokens.issued(), 2);
        assert_eq!(tokens.marks(), [0, 3]);
        assert_eq!(tokens.revoke_all(), 2);
        assert_eq!(tokens.check(&second, start), TokenCheck::Unknown);
    }
}

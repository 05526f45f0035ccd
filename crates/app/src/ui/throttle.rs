//! Failed-login throttling, in the memory of one process: at most 5 failures per account and
//! 20 per client address in any 15 minutes; past that the login form answers "wait N min"
//! without checking the password (which also keeps argon2's 19 MiB per check off the table).
//!
//! In memory, not in the database: a throttle that needs a write per failure would turn a
//! guessing attack into a write load, and a restart forgetting the windows only gives an
//! attacker one more window. With several replicas each counts its own (documented).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const PER_ACCOUNT: usize = 5;
pub const PER_ADDRESS: usize = 20;
/// Past this many tracked keys, windows that ended are dropped (the map never grows beyond
/// what the per-address limit lets the attacker's addresses add within one window).
const PRUNE_AT: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

/// A client's address as the throttle counts it: IPv6 by its /64 (one host usually owns a
/// whole /64, so single addresses would be free to vary).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(std::net::Ipv6Addr::from(segments))
            }
        },
    }
}

/// An account name as the throttle counts it: as typed, cut to the longest valid name (a
/// longer one names no account and must not cost memory).
fn account_key(name: &str) -> String {
    name.chars().take(crate::operators::MAX_NAME_CHARS).collect()
}

#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

impl LoginThrottle {
    /// `Err(wait)` while the account or the address has used up its failures.
    pub fn check(&self, account: &str, address: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = Duration::ZERO;
        let mut keys = vec![(Key::Account(account_key(account)), PER_ACCOUNT)];
        if let Some(ip) = address {
            keys.push((Key::Address(address_key(ip)), PER_ADDRESS));
        }
        for (key, limit) in keys {
            if let Some(times) = map.get_mut(&key) {
                expire(times, now);
                if times.len() >= limit {
                    // Free again when the oldest failure that still counts leaves the window.
                    let oldest = times[times.len() - limit];
                    wait = wait.max((oldest + WINDOW).saturating_duration_since(now));
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            // Never "wait 0 min": at least a second.
            Err(wait.max(Duration::from_secs(1)))
        }
    }

    pub fn failed(&self, account: &str, address: Option<IpAddr>, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= PRUNE_AT {
            map.retain(|_, times| {
                expire(times, now);
                !times.is_empty()
            });
        }
        map.entry(Key::Account(account_key(account))).or_default().push_back(now);
        if let Some(ip) = address {
            map.entry(Key::Address(address_key(ip))).or_default().push_back(now);
        }
    }

    /// A right password clears the account's failures (not the address's: one known account
    /// must not reset the count of guesses against the others).
    pub fn succeeded(&self, account: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&Key::Account(account_key(account)));
    }
}

fn expire(times: &mut VecDeque<Instant>, now: Instant) {
    while times.front().is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW) {
        times.pop_front();
    }
}

/// "через 4 мин" as whole minutes, rounded up.
pub fn minutes_up(wait: Duration) -> u64 {
    wait.as_secs().div_ceil(60).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn five_failures_lock_the_account_for_the_rest_of_the_window() {
        let t = LoginThrottle::default();
        let start = Instant::now();
        for i in 0..PER_ACCOUNT as u64 {
            // Each from a different address: the account limit alone applies.
            let at = start + Duration::from_secs(60 * i);
            assert_eq!(t.check("anna", ip(&format!("10.0.0.{i}")), at), Ok(()));
            t.failed("anna", ip(&format!("10.0.0.{i}")), at);
        }
        let fifth = start + Duration::from_secs(60 * 4);
        let wait = t.check("anna", ip("10.0.0.99"), fifth).unwrap_err();
        // Free once the first failure (at `start`) is 15 minutes old.
        assert_eq!(wait, Duration::from_secs(11 * 60));
        assert_eq!(minutes_up(wait), 11);
        // Other accounts are not affected.
        assert_eq!(t.check("boris", ip("10.0.0.99"), fifth), Ok(()));
        // Just before the window ends: still locked; at its end: free.
        assert!(t.check("anna", None, start + WINDOW - Duration::from_secs(1)).is_err());
        assert_eq!(t.check("anna", None, start + WINDOW), Ok(()));
    }

    #[test]
    fn twenty_failures_lock_the_address_across_accounts() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..PER_ADDRESS {
            t.failed(&format!("guess{i}"), ip("192.0.2.7"), now);
        }
        assert!(t.check("fresh-name", ip("192.0.2.7"), now).is_err());
        assert_eq!(t.check("fresh-name", ip("192.0.2.8"), now), Ok(()));
        assert_eq!(t.check("fresh-name", ip("192.0.2.7"), now + WINDOW), Ok(()));
    }

    #[test]
    fn ipv6_counts_per_64() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..PER_ADDRESS {
            t.failed(&format!("n{i}"), ip(&format!("2001:db8:1:2::{:x}", i + 1)), now);
        }
        assert!(t.check("x", ip("2001:db8:1:2:ffff::1"), now).is_err());
        assert_eq!(t.check("x", ip("2001:db8:1:3::1"), now), Ok(()));
        assert_eq!(address_key("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn success_clears_the_account_not_the_address() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for _ in 0..PER_ACCOUNT - 1 {
            t.failed("anna", ip("192.0.2.1"), now);
        }
        t.succeeded("anna");
        t.failed("anna", ip("192.0.2.1"), now);
        assert_eq!(t.check("anna", None, now), Ok(()));
        for _ in 0..PER_ADDRESS - PER_ACCOUNT {
            t.failed("other", ip("192.0.2.1"), now);
        }
        assert!(t.check("anna", ip("192.0.2.1"), now).is_err());
    }

    #[test]
    fn long_names_share_one_key() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let long = "x".repeat(10_000);
        for i in 0..PER_ACCOUNT {
            t.failed(&format!("{long}{i}"), None, now);
        }
        assert!(t.check(&long, None, now).is_err());
    }
}

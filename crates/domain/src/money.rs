//! Money rules (protocol.md §8): decimal arithmetic, each line rounded half-up to kopecks.

use rust_decimal::{Decimal, RoundingStrategy};

/// Rounds half-up (away from zero on .5) to two places.
pub fn round_kopecks(amount: Decimal) -> Decimal {
    let mut r = amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(2);
    r
}

/// The largest amount or quantity we accept anywhere: far above any grocery order and far
/// below where decimal multiplication could overflow.
pub fn limit() -> Decimal {
    Decimal::from(1_000_000_000u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_up() {
        assert_eq!(round_kopecks(Decimal::new(214515, 3)).to_string(), "214.52");
        assert_eq!(round_kopecks(Decimal::new(214514, 3)).to_string(), "214.51");
        assert_eq!(round_kopecks(Decimal::from(5)).to_string(), "5.00");
    }
}

//! Backoff arithmetic and the machine's own small PRNG.
//!
//! The PRNG is seeded by the caller so the machine stays deterministic under
//! test; jitter only has to spread reconnects, not be unpredictable.

/// SplitMix64: tiny, fast, good enough for jitter.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `lo..=hi` (`hi < lo` gives `lo`).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo;
        if span == u64::MAX {
            return self.next_u64();
        }
        lo + self.next_u64() % (span + 1)
    }
}

/// The upper bound of the delay after `failures` consecutive failures:
/// `base * factor^(failures-1)`, capped.
pub fn ceiling(base_ms: u64, cap_ms: u64, factor: u32, failures: u32) -> u64 {
    let exp = failures.saturating_sub(1);
    let growth = u64::from(factor).checked_pow(exp).unwrap_or(u64::MAX);
    base_ms.saturating_mul(growth).min(cap_ms)
}

/// Full jitter: anywhere between 0 and the ceiling, so many instances that
/// lost the same server do not come back in lockstep.
pub fn full_jitter(rng: &mut Rng, ceiling_ms: u64) -> u64 {
    rng.between(0, ceiling_ms)
}

/// Equal jitter: at least half the ceiling. Used where waiting is the point
/// (rate limits, flapping), so a lucky draw cannot turn into an instant retry.
pub fn equal_jitter(rng: &mut Rng, ceiling_ms: u64) -> u64 {
    rng.between(ceiling_ms / 2, ceiling_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_grows_by_the_factor_then_caps() {
        assert_eq!(ceiling(1000, 60_000, 2, 1), 1000);
        assert_eq!(ceiling(1000, 60_000, 2, 2), 2000);
        assert_eq!(ceiling(1000, 60_000, 2, 6), 32_000);
        assert_eq!(ceiling(1000, 60_000, 2, 7), 60_000);
        assert_eq!(ceiling(1000, 60_000, 2, 500), 60_000);
        assert_eq!(ceiling(u64::MAX, u64::MAX, 2, 64), u64::MAX);
        assert_eq!(ceiling(1000, 600_000, 3, 3), 9000);
        assert_eq!(ceiling(1000, 60_000, 1, 40), 1000, "factor 1: no growth");
        assert_eq!(ceiling(1000, 60_000, 10, u32::MAX), 60_000);
    }

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let mut rng = Rng::new(7);
        let draws: Vec<u64> = (0..1000).map(|_| full_jitter(&mut rng, 1000)).collect();
        assert!(draws.iter().all(|d| *d <= 1000));
        assert!(draws.iter().any(|d| *d < 250) && draws.iter().any(|d| *d > 750));
        let eq: Vec<u64> = (0..1000).map(|_| equal_jitter(&mut rng, 1000)).collect();
        assert!(eq.iter().all(|d| (500..=1000).contains(d)));
        assert_eq!(rng.between(5, 5), 5);
        assert_eq!(rng.between(9, 3), 9);
    }
}

//! The simulator's randomness: SplitMix64, seeded, split into independent sub-streams.
//!
//! A fixed, documented algorithm rather than a crate's "standard" generator: a failing seed is
//! committed as a regression test, so the stream a seed produces must never change with a
//! dependency upgrade. SplitMix64 (Steele, Lea and Flood, 2014) is tiny, fast and well mixed.

/// A seeded pseudo-random stream.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A stream from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// An independent sub-stream named `label`: the same seed and label always give the same
    /// stream, and different labels give unrelated ones.
    pub fn fork(seed: u64, label: &str) -> Rng {
        let mut h = 0xcbf2_9ce4_8422_2325_u64;
        for b in label.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let mut rng = Rng::new(seed ^ h);
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// A uniform integer in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// A uniform index below `n` (n > 0).
    pub fn index(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_replayable_and_forks_differ() {
        let a: Vec<u64> = (0..4).map(|_| Rng::fork(7, "faults").next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::fork(7, "faults").next_u64(), Rng::fork(7, "workload").next_u64());
        // Pinned: the stream of a seed must never change (committed regression seeds rely on it).
        assert_eq!(Rng::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn unit_and_range_stay_in_bounds() {
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
            let r = rng.range(3, 5);
            assert!((3..=5).contains(&r));
        }
    }
}

//! [`XorShift`]: a tiny seeded pseudo-random generator, so that the soak's random client
//! disconnects are the same on every run and every backend (a failure reproduces).
//!
//! ```
//! use conformance::kit::XorShift;
//!
//! let mut a = XorShift::new(42);
//! let mut b = XorShift::new(42);
//! let rolls: Vec<u64> = (0..5).map(|_| a.below(6)).collect();
//! assert_eq!(rolls, (0..5).map(|_| b.below(6)).collect::<Vec<_>>());
//! assert!(rolls.iter().all(|&r| r < 6));
//! ```

/// xorshift64* (Vigna): fast, small, good enough to pick disconnect points.
#[derive(Debug, Clone)]
pub struct XorShift {
    state: u64,
}

impl XorShift {
    /// A generator from `seed` (0 is replaced by a fixed non-zero seed).
    pub fn new(seed: u64) -> Self {
        XorShift {
            state: if seed == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                seed
            },
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.next_u64() % n
    }

    /// `true` with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }
}

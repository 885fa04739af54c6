//! Randomness for tokens, initial message ids and retransmission jitter.

/// Buffered OS CSPRNG output (`getrandom`), or a seeded generator for deterministic tests.
pub(crate) enum Rng {
    Os { buf: Box<[u8; 256]>, pos: usize },
    Seeded(u64),
}

impl Rng {
    pub(crate) fn os() -> Rng {
        let mut r = Rng::Os {
            buf: Box::new([0; 256]),
            pos: 256,
        };
        r.next_u64();
        if let Rng::Os { pos, .. } = &mut r {
            *pos = 256;
        }
        r
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        match self {
            Rng::Os { buf, pos } => {
                if *pos + 8 > buf.len() {
                    // The OS generator failing is an environment fault, not an input: there
                    // is no safe way to make tokens without it.
                    getrandom::fill(&mut buf[..]).expect("the OS random number generator failed");
                    *pos = 0;
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[*pos..*pos + 8]);
                *pos += 8;
                u64::from_le_bytes(b)
            }
            Rng::Seeded(state) => {
                // splitmix64: deterministic, for tests only.
                *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = *state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            }
        }
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

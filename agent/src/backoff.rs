//! Exponential back-off with "equal jitter", the one retry pacing of the
//! crate: the Consul watch loops, the leader lock, AWS call retries, the
//! outbox, the coordinator's loops and the node agent all wait with it.
//!
//! The delay after the `n`th failure in a row is `min(max, min * 2^(n-1))`,
//! half of it fixed and half random: successive delays grow, many replicas
//! do not retry in lockstep, and no delay is zero.

use std::time::Duration;

use rand::Rng as _;

/// The delay after `failures` failures in a row (1-based; 0 counts as 1).
pub fn delay(failures: u32, min: Duration, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let full = min.saturating_mul(1u32 << exp).min(max);
    let half = full / 2;
    let jitter = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rand::rng().random_range(0..=jitter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_stays_under_the_cap() {
        let (min, max) = (Duration::from_millis(250), Duration::from_secs(60));
        for f in 0..40 {
            let d = delay(f, min, max);
            assert!(d <= max, "{f}: {d:?}");
            assert!(d >= min / 2, "{f}: {d:?}");
        }
        assert!(delay(30, min, max) >= Duration::from_secs(30));
        assert!(delay(3, min, max) >= Duration::from_millis(500));
        assert!(delay(3, min, max) <= Duration::from_millis(1000));
    }
}

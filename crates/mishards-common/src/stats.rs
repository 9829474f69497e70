//! Summaries of samples: the one nearest-rank percentile that the bench report, the chaos checks and
//! the benches all use, so a p99 means the same everywhere.

/// The nearest-rank `p`-th percentile (`p` in 0..=100) of ascending `sorted` samples: the smallest
/// sample with at least p % of the samples at or below it. `T::default()` (zero) when there are none.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&sorted, 50.0), Duration::from_millis(5));
        assert_eq!(percentile(&sorted, 90.0), Duration::from_millis(9));
        assert_eq!(percentile(&sorted, 91.0), Duration::from_millis(10));
        assert_eq!(percentile(&sorted, 100.0), Duration::from_millis(10));
        assert_eq!(percentile::<Duration>(&[], 99.0), Duration::ZERO);
        let floats = [0.5, 1.5, 2.5, 3.5];
        assert_eq!(percentile(&floats, 50.0), 1.5);
        assert_eq!(percentile(&floats, 99.0), 3.5);
    }
}

//! Samples and their summaries: median, spread, percentiles.

/// A set of measurements of one quantity.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<f64>,
    sorted: bool,
}

impl Samples {
    /// No samples yet.
    pub fn new() -> Self {
        Samples::default()
    }

    /// Samples from `values`.
    pub fn from_vec(values: Vec<f64>) -> Self {
        Samples {
            values,
            sorted: false,
        }
    }

    /// Add one sample.
    pub fn push(&mut self, value: f64) {
        self.values.push(value);
        self.sorted = false;
    }

    /// Number of samples.
    fn len(&self) -> usize {
        self.values.len()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.values.sort_by(|a, b| a.total_cmp(b));
            self.sorted = true;
        }
    }

    /// The `p`-th percentile (0..=100), nearest rank; NaN when empty.
    pub fn percentile(&mut self, p: f64) -> f64 {
        if self.values.is_empty() {
            return f64::NAN;
        }
        self.sort();
        let n = self.values.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.values[rank.clamp(1, n) - 1]
    }

    /// The median (mean of the two middle values for an even count).
    pub fn median(&mut self) -> f64 {
        if self.values.is_empty() {
            return f64::NAN;
        }
        self.sort();
        let n = self.values.len();
        if !n.is_multiple_of(2) {
            self.values[n / 2]
        } else {
            (self.values[n / 2 - 1] + self.values[n / 2]) / 2.0
        }
    }

    /// The smallest sample.
    pub fn min(&mut self) -> f64 {
        self.percentile(0.0)
    }

    /// The largest sample.
    pub fn max(&mut self) -> f64 {
        self.percentile(100.0)
    }

    /// A summary of the samples.
    pub fn summary(&mut self) -> Summary {
        Summary {
            n: self.len(),
            median: self.median(),
            min: self.min(),
            max: self.max(),
            p10: self.percentile(10.0),
            p90: self.percentile(90.0),
            p99: self.percentile(99.0),
        }
    }
}

/// The usual statistics of a [`Samples`].
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// 10th percentile.
    pub p10: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Summary {
    /// Every statistic mapped through `f` (for unit conversions; `f` must be monotonic
    /// increasing, or min/max and the percentiles swap meaning).
    pub fn map(self, f: impl Fn(f64) -> f64) -> Summary {
        Summary {
            n: self.n,
            median: f(self.median),
            min: f(self.min),
            max: f(self.max),
            p10: f(self.p10),
            p90: f(self.p90),
            p99: f(self.p99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Samples;

    #[test]
    fn median_and_percentiles() {
        let mut s = Samples::from_vec(vec![5.0, 1.0, 4.0, 2.0, 3.0]);
        assert_eq!(s.median(), 3.0);
        assert_eq!(s.min(), 1.0);
        assert_eq!(s.max(), 5.0);
        assert_eq!(s.percentile(50.0), 3.0);
        let mut even = Samples::from_vec(vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(even.median(), 2.5);
        let mut hundred = Samples::from_vec((1..=100).map(f64::from).collect());
        assert_eq!(hundred.percentile(99.0), 99.0);
        assert_eq!(hundred.percentile(10.0), 10.0);
    }
}

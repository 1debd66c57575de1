//! Comparing a result with its reference: `|x − y| ≤ abs + rel·|y|`, reporting the worst element.

use std::fmt;

/// An element-wise tolerance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative tolerance, times `|want|`.
    pub rel: f32,
    /// Absolute tolerance.
    pub abs: f32,
}

/// The outcome of a comparison: the worst element, measured as the ratio of its error to what
/// the tolerance allows (≤ 1 passes).
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// What was compared (a label for messages).
    pub what: String,
    /// Number of elements compared (`got.len()`).
    pub len: usize,
    /// Index of the worst element.
    pub index: usize,
    /// The worst element's value.
    pub got: f32,
    /// The reference value at the worst element.
    pub want: f32,
    /// Largest `|got − want|` over all elements.
    pub max_abs_diff: f32,
    /// The worst `|got − want| / (abs + rel·|want|)`.
    pub ratio: f32,
    /// Whether every element is within tolerance (`ratio ≤ 1`, no NaN).
    pub passed: bool,
    /// A few elements side by side around the worst one.
    pub context: Vec<(usize, f32, f32)>,
}

impl Tolerance {
    /// A tolerance of `abs + rel·|want|`.
    pub const fn new(rel: f32, abs: f32) -> Self {
        Tolerance { rel, abs }
    }

    /// Compares `got` with the reference `want`. Lengths must match; NaN never passes.
    pub fn compare(&self, what: &str, got: &[f32], want: &[f32]) -> Comparison {
        let mut worst = Comparison {
            what: what.to_string(),
            len: got.len(),
            index: 0,
            got: 0.0,
            want: 0.0,
            max_abs_diff: 0.0,
            ratio: 0.0,
            passed: got.len() == want.len(),
            context: Vec::new(),
        };
        if got.len() != want.len() {
            worst.ratio = f32::INFINITY;
            return worst;
        }
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let diff = (g - w).abs();
            let ratio = if diff.is_nan() || g.is_nan() != w.is_nan() {
                f32::INFINITY
            } else {
                diff / (self.abs + self.rel * w.abs())
            };
            if diff > worst.max_abs_diff || diff.is_nan() {
                worst.max_abs_diff = diff;
            }
            if ratio > worst.ratio || i == 0 {
                worst.ratio = ratio;
                worst.index = i;
                worst.got = g;
                worst.want = w;
            }
        }
        worst.passed = worst.ratio <= 1.0;
        let lo = worst.index.saturating_sub(2);
        let hi = (worst.index + 3).min(got.len());
        worst.context = (lo..hi).map(|i| (i, got[i], want[i])).collect();
        worst
    }

    /// Panics with the worst element when `got` is not within tolerance of `want` (for tests).
    #[track_caller]
    pub fn assert_close(&self, what: &str, got: &[f32], want: &[f32]) -> Comparison {
        let c = self.compare(what, got, want);
        assert!(
            c.passed,
            "{c}\n(tolerance rel {} abs {})",
            self.rel, self.abs
        );
        c
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} over {} elements; worst at [{}]: got {} want {} (|diff| {:.3e}, {:.2}× the tolerance); max |diff| {:.3e}",
            self.what,
            if self.passed { "ok" } else { "MISMATCH" },
            self.len,
            self.index,
            self.got,
            self.want,
            (self.got - self.want).abs(),
            self.ratio,
            self.max_abs_diff
        )?;
        for (i, g, w) in &self.context {
            write!(f, "\n    [{i}] got {g:>14.7e}  want {w:>14.7e}")?;
        }
        Ok(())
    }
}

//! Preparing a dataset for training: a seeded train/validation split and feature normalization.

use std::collections::HashSet;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::rows::{for_each_chunk, RowSource};
use super::{check_finite, Dataset, Normalization, NormalizeMethod, Targets};
use crate::error::{Error, Result};

/// Standard deviations below this count as 0: the feature is constant and is only shifted.
const MIN_STD: f64 = 1e-12;

/// One pass over the training rows: calls its argument on every row's features in order, in
/// `[n, cols]` chunks.
type Pass<'a> = dyn FnMut(&mut dyn FnMut(&[f32])) -> Result<()> + 'a;

/// The features one chunk of a streaming fit holds at most.
const FIT_CHUNK_BYTES: usize = 16 << 20;

impl Dataset {
    /// Holds `round(rows × val_fraction)` rows out for validation, chosen by a shuffle with
    /// ChaCha8 seeded by `seed`. With class labels the split is stratified: each class gives
    /// its share of the validation rows (largest remainders settle the rounding), so both parts
    /// keep the class proportions. A fraction of 0, or one that rounds to no validation row,
    /// gives `(all rows in order, None)`. The fraction must lie in [0, 1) and leave at least
    /// one training row.
    pub fn split(&self, val_fraction: f32, seed: u64) -> Result<(Dataset, Option<Dataset>)> {
        match split_indices(self.rows, &self.targets, val_fraction, seed)? {
            (_, None) => Ok((self.clone(), None)),
            (train, Some(val)) => Ok((self.select(&train), Some(self.select(&val)))),
        }
    }
}

/// The row indices of [`Dataset::split`]'s training and validation parts (in the order that
/// split gives them), from the targets alone: the same split for rows held in memory or read
/// from files.
///
/// # Errors
/// As [`Dataset::split`].
pub fn split_indices(
    rows: usize,
    targets: &Targets,
    val_fraction: f32,
    seed: u64,
) -> Result<(Vec<usize>, Option<Vec<usize>>)> {
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(Error::InvalidConfig(format!(
            "the validation fraction must lie in [0, 1), got {val_fraction}: use e.g. 0.1 for \
             10% validation, or 0 for none"
        )));
    }
    let n_val = (rows as f64 * val_fraction as f64).round() as usize;
    if n_val == 0 {
        return Ok(((0..rows).collect(), None));
    }
    if n_val >= rows {
        return Err(Error::InvalidConfig(format!(
            "a validation fraction of {val_fraction} of {rows} rows leaves no training rows: \
             use a smaller fraction"
        )));
    }
    let mut order: Vec<usize> = (0..rows).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let held_out = match targets {
        Targets::Classes { labels, classes } => {
            stratified(&order, labels, *classes, n_val, val_fraction as f64)
        }
        Targets::Values { .. } => order[..n_val].iter().copied().collect(),
    };
    let (val, train): (Vec<usize>, Vec<usize>) = order.iter().partition(|i| held_out.contains(*i));
    Ok((train, Some(val)))
}

/// The `n_val` rows (by index) that a stratified split holds out: class `c` with
/// `count_c` rows gives `floor(count_c × fraction)`, and the classes with the largest
/// remainders (ties: the lower class) one more each until `n_val` is reached; within a class,
/// the first rows of the shuffled `order`.
fn stratified(
    order: &[usize],
    labels: &[u32],
    classes: usize,
    n_val: usize,
    fraction: f64,
) -> HashSet<usize> {
    let mut counts = vec![0usize; classes.max(1)];
    for &l in labels {
        if let Some(c) = counts.get_mut(l as usize) {
            *c += 1;
        }
    }
    let exact: Vec<f64> = counts.iter().map(|&c| c as f64 * fraction).collect();
    let mut take: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut by_remainder: Vec<usize> = (0..counts.len()).collect();
    by_remainder.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let mut missing = n_val.saturating_sub(take.iter().sum());
    for c in by_remainder.into_iter().cycle().take(counts.len() * 2) {
        if missing == 0 {
            break;
        }
        if take[c] < counts[c] {
            take[c] += 1;
            missing -= 1;
        }
    }
    let mut held = HashSet::with_capacity(n_val);
    for &i in order {
        let c = labels[i] as usize;
        if take.get(c).copied().unwrap_or(0) > 0 {
            take[c] -= 1;
            held.insert(i);
        }
    }
    held
}

impl Normalization {
    /// The map that leaves `cols` features as they are.
    pub fn identity(cols: usize) -> Normalization {
        Normalization {
            method: NormalizeMethod::None,
            shift: vec![0.0; cols],
            scale: vec![1.0; cols],
        }
    }

    /// Fits `method` on `data` (the training part). `Unit` divides by `known_range` when it is
    /// given (and positive), else by each feature's largest |x| (1 where that is 0); `Standard`
    /// subtracts each feature's mean and divides by its population standard deviation (1 where
    /// that is below 1e-12), both computed in f64.
    pub fn fit(method: NormalizeMethod, data: &Dataset, known_range: Option<f32>) -> Normalization {
        let mut pass = |f: &mut dyn FnMut(&[f32])| -> Result<()> {
            f(&data.features);
            Ok(())
        };
        Self::fit_passes(method, data.cols, known_range, &mut pass)
            .expect("a pass over memory does not fail")
    }

    /// [`Normalization::fit`] over a [`RowSource`] read a chunk at a time (one pass for `Unit`,
    /// two for `Standard`), giving the same numbers as `fit` on the rows in memory.
    ///
    /// # Errors
    /// A source that fails to read.
    pub fn fit_source(
        method: NormalizeMethod,
        source: &dyn RowSource,
        known_range: Option<f32>,
    ) -> Result<Normalization> {
        let chunk = (FIT_CHUNK_BYTES / (source.cols().max(1) * 4)).max(1);
        let mut pass = |f: &mut dyn FnMut(&[f32])| for_each_chunk(source, chunk, f);
        Self::fit_passes(method, source.cols(), known_range, &mut pass)
    }

    /// The fit, given `pass(f)`, which calls `f` on every training row's features in order,
    /// in `[n, cols]` chunks (it is called once per pass over the data).
    fn fit_passes(
        method: NormalizeMethod,
        cols: usize,
        known_range: Option<f32>,
        pass: &mut Pass<'_>,
    ) -> Result<Normalization> {
        let c = cols.max(1);
        let mut norm = Normalization::identity(cols);
        norm.method = method;
        match method {
            NormalizeMethod::None => {}
            NormalizeMethod::Unit => match known_range {
                Some(r) if r.is_finite() && r > 0.0 => norm.scale.fill(r),
                _ => {
                    let mut max = vec![0.0f32; cols];
                    pass(&mut |x| {
                        for row in x.chunks_exact(c) {
                            for (m, x) in max.iter_mut().zip(row) {
                                *m = m.max(x.abs());
                            }
                        }
                    })?;
                    for (s, m) in norm.scale.iter_mut().zip(max) {
                        *s = if m > 0.0 && m.is_finite() { m } else { 1.0 };
                    }
                }
            },
            NormalizeMethod::Standard => {
                let mut count = 0usize;
                let mut mean = vec![0.0f64; cols];
                pass(&mut |x| {
                    for row in x.chunks_exact(c) {
                        count += 1;
                        for (m, &x) in mean.iter_mut().zip(row) {
                            *m += x as f64;
                        }
                    }
                })?;
                let n = count.max(1) as f64;
                mean.iter_mut().for_each(|m| *m /= n);
                let mut var = vec![0.0f64; cols];
                pass(&mut |x| {
                    for row in x.chunks_exact(c) {
                        for ((v, &m), &x) in var.iter_mut().zip(&mean).zip(row) {
                            *v += (x as f64 - m).powi(2);
                        }
                    }
                })?;
                for c in 0..cols {
                    let std = (var[c] / n).sqrt();
                    norm.shift[c] = mean[c] as f32;
                    norm.scale[c] = if std >= MIN_STD && std.is_finite() {
                        std as f32
                    } else {
                        1.0
                    };
                }
            }
        }
        Ok(norm)
    }

    /// Maps every feature of `data` in place: `x' = (x − shift) / scale`.
    pub fn apply(&self, data: &mut Dataset) -> Result<()> {
        if data.features.len() != data.rows * data.cols {
            return Err(Error::shape(
                "features",
                format!("{} values", data.rows * data.cols),
                data.features.len(),
            ));
        }
        self.apply_features(&mut data.features, data.cols)
    }

    /// [`apply`](Self::apply) on bare features `[rows, data_cols]`.
    pub fn apply_features(&self, features: &mut [f32], data_cols: usize) -> Result<()> {
        let cols = self.shift.len();
        if self.scale.len() != cols {
            return Err(Error::shape(
                "normalization scale",
                format!("{cols} values, one per shift"),
                self.scale.len(),
            ));
        }
        if data_cols != cols || !features.len().is_multiple_of(cols.max(1)) {
            return Err(Error::shape(
                "normalization",
                format!("{cols} feature columns (as fitted)"),
                format!("{data_cols} feature columns in the data"),
            ));
        }
        if let Some(c) = (0..cols).find(|&c| {
            !(self.scale[c].is_finite() && self.scale[c] != 0.0 && self.shift[c].is_finite())
        }) {
            return Err(Error::InvalidData(format!(
                "normalization of feature {c} has shift {} and scale {}: the scale must be a \
                 finite non-zero number and the shift finite; fit the normalization again",
                self.shift[c], self.scale[c]
            )));
        }
        if cols == 0 {
            return Ok(());
        }
        for row in features.chunks_exact_mut(cols) {
            for ((x, &m), &s) in row.iter_mut().zip(&self.shift).zip(&self.scale) {
                *x = (*x - m) / s;
            }
        }
        check_finite("normalized features", features, cols)
    }
}

impl NormalizeMethod {
    /// The name the command line uses: `none`, `unit` or `standard`.
    pub fn name(&self) -> &'static str {
        match self {
            NormalizeMethod::None => "none",
            NormalizeMethod::Unit => "unit",
            NormalizeMethod::Standard => "standard",
        }
    }
}

impl FromStr for NormalizeMethod {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(NormalizeMethod::None),
            "unit" => Ok(NormalizeMethod::Unit),
            "standard" => Ok(NormalizeMethod::Standard),
            _ => Err(Error::InvalidConfig(format!(
                "unknown normalization \"{s}\": use none, unit or standard"
            ))),
        }
    }
}

impl std::fmt::Display for NormalizeMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

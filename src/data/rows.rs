//! Row sources: training data read a chunk of rows at a time, so that a set larger than the
//! device (or host) memory can stream. A [`RowSource`] gives features by row index; its
//! targets (labels are small) stay in memory. Implemented by the in-memory [`Dataset`], the
//! memory-mapped IDX and `.npy` files of [`super::mapped`], a row subset ([`Subset`], e.g. the
//! training part of a split) and a normalized view ([`Normalized`]).

use std::sync::Arc;

use super::{check_finite, Dataset, Normalization, Targets};
use crate::error::{Error, Result};

/// Training rows that can be gathered by index.
pub trait RowSource: Send + Sync {
    /// Number of rows.
    fn rows(&self) -> usize;
    /// Features per row.
    fn cols(&self) -> usize;
    /// The targets of every row, in memory.
    fn targets(&self) -> &Targets;
    /// The label vocabulary of string class labels.
    fn class_names(&self) -> Option<&[String]> {
        None
    }
    /// x: [idx.len(), cols] = the features of rows `idx`, in that order.
    ///
    /// # Errors
    /// An index outside the rows, or `x` of the wrong length.
    fn gather_features(&self, idx: &[u32], x: &mut [f32]) -> Result<()>;
    /// Whether the features are read from files (memory-mapped) rather than held in memory.
    fn mapped(&self) -> bool {
        false
    }
}

/// The rows `idx` of `source` as an in-memory dataset (features checked finite).
///
/// # Errors
/// As [`RowSource::gather_features`], and non-finite features.
pub fn gather(source: &dyn RowSource, idx: &[u32]) -> Result<Dataset> {
    let cols = source.cols();
    let bytes = crate::limits::bytes_of(&[idx.len(), cols], 4);
    crate::limits::check_host_bytes(
        &format!("{} gathered rows × {cols} features", idx.len()),
        bytes,
        "use a smaller chunk (--max-device-memory) or a smaller dataset",
    )?;
    let mut features = vec![0.0f32; idx.len() * cols];
    source.gather_features(idx, &mut features)?;
    check_finite("features", &features, cols)?;
    Ok(Dataset {
        features,
        rows: idx.len(),
        cols,
        targets: select_targets(source.targets(), idx),
        class_names: source.class_names().map(<[String]>::to_vec),
    })
}

/// Every row of `source`, in order, in memory.
pub fn gather_all(source: &dyn RowSource) -> Result<Dataset> {
    let idx = all_rows(source.rows())?;
    gather(source, &idx)
}

/// `0..rows` as u32 row indices.
fn all_rows(rows: usize) -> Result<Vec<u32>> {
    let n = u32::try_from(rows).map_err(|_| {
        Error::InvalidData(format!(
            "{rows} rows are more than the {} a row source may have: use a subset",
            u32::MAX
        ))
    })?;
    Ok((0..n).collect())
}

/// The targets of rows `idx` (in that order).
pub(crate) fn select_targets(targets: &Targets, idx: &[u32]) -> Targets {
    match targets {
        Targets::Classes { labels, classes } => Targets::Classes {
            labels: idx.iter().map(|&r| labels[r as usize]).collect(),
            classes: *classes,
        },
        Targets::Values { values, width } => {
            let mut v = Vec::with_capacity(idx.len() * width);
            for &r in idx {
                let r = r as usize;
                v.extend_from_slice(&values[r * width..(r + 1) * width]);
            }
            Targets::Values {
                values: v,
                width: *width,
            }
        }
    }
}

/// Errors unless every index is below `rows` and `x` holds `idx.len() × cols` values.
pub(crate) fn check_gather(idx: &[u32], x: &[f32], rows: usize, cols: usize) -> Result<()> {
    if Some(x.len()) != idx.len().checked_mul(cols) {
        return Err(Error::shape(
            "gathered features",
            format!("{} rows × {cols}", idx.len()),
            x.len(),
        ));
    }
    if let Some(&r) = idx.iter().find(|&&r| r as usize >= rows) {
        return Err(Error::InvalidConfig(format!(
            "row {r} is outside the source's {rows} rows"
        )));
    }
    Ok(())
}

impl RowSource for Dataset {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn targets(&self) -> &Targets {
        &self.targets
    }
    fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }
    fn gather_features(&self, idx: &[u32], x: &mut [f32]) -> Result<()> {
        check_gather(idx, x, self.rows, self.cols)?;
        let c = self.cols;
        for (dst, &r) in x.chunks_exact_mut(c.max(1)).zip(idx) {
            let r = r as usize;
            dst.copy_from_slice(&self.features[r * c..(r + 1) * c]);
        }
        Ok(())
    }
}

/// The rows `rows` of another source, in that order (e.g. the training part of a split).
pub struct Subset {
    inner: Arc<dyn RowSource>,
    rows: Vec<u32>,
    targets: Targets,
}

impl Subset {
    /// # Errors
    /// An index outside `inner`'s rows.
    pub fn new(inner: Arc<dyn RowSource>, rows: Vec<u32>) -> Result<Subset> {
        if let Some(&r) = rows.iter().find(|&&r| r as usize >= inner.rows()) {
            return Err(Error::InvalidConfig(format!(
                "row {r} is outside the source's {} rows",
                inner.rows()
            )));
        }
        let targets = select_targets(inner.targets(), &rows);
        Ok(Subset {
            inner,
            rows,
            targets,
        })
    }
}

impl RowSource for Subset {
    fn rows(&self) -> usize {
        self.rows.len()
    }
    fn cols(&self) -> usize {
        self.inner.cols()
    }
    fn targets(&self) -> &Targets {
        &self.targets
    }
    fn class_names(&self) -> Option<&[String]> {
        self.inner.class_names()
    }
    fn gather_features(&self, idx: &[u32], x: &mut [f32]) -> Result<()> {
        check_gather(idx, x, self.rows.len(), self.cols())?;
        let mapped: Vec<u32> = idx.iter().map(|&i| self.rows[i as usize]).collect();
        self.inner.gather_features(&mapped, x)
    }
    fn mapped(&self) -> bool {
        self.inner.mapped()
    }
}

/// Another source with a [`Normalization`] applied to each gathered row, exactly as
/// [`Normalization::apply`] maps an in-memory dataset.
pub struct Normalized {
    inner: Arc<dyn RowSource>,
    norm: Normalization,
}

impl Normalized {
    /// # Errors
    /// A normalization fitted on a different number of features.
    pub fn new(inner: Arc<dyn RowSource>, norm: Normalization) -> Result<Normalized> {
        if norm.shift.len() != inner.cols() {
            return Err(Error::shape(
                "normalization",
                format!("{} feature columns (as fitted)", norm.shift.len()),
                format!("{} feature columns in the data", inner.cols()),
            ));
        }
        Ok(Normalized { inner, norm })
    }
}

impl RowSource for Normalized {
    fn rows(&self) -> usize {
        self.inner.rows()
    }
    fn cols(&self) -> usize {
        self.inner.cols()
    }
    fn targets(&self) -> &Targets {
        self.inner.targets()
    }
    fn class_names(&self) -> Option<&[String]> {
        self.inner.class_names()
    }
    fn gather_features(&self, idx: &[u32], x: &mut [f32]) -> Result<()> {
        self.inner.gather_features(idx, x)?;
        self.norm.apply_features(x, self.cols())
    }
    fn mapped(&self) -> bool {
        self.inner.mapped()
    }
}

/// Calls `f` on the features of every row of `source` in order, `[n, cols]` chunks of at most
/// `chunk` rows (one streaming pass).
pub(crate) fn for_each_chunk(
    source: &dyn RowSource,
    chunk: usize,
    mut f: impl FnMut(&[f32]),
) -> Result<()> {
    let rows = source.rows();
    let cols = source.cols();
    let chunk = chunk.max(1);
    let mut x = vec![0.0f32; chunk.min(rows) * cols];
    let mut start = 0;
    while start < rows {
        let n = chunk.min(rows - start);
        let idx: Vec<u32> = (start as u32..(start + n) as u32).collect();
        source.gather_features(&idx, &mut x[..n * cols])?;
        f(&x[..n * cols]);
        start += n;
    }
    Ok(())
}

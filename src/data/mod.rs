//! Datasets: features `[n, in]` f32 and targets as class labels or real-valued vectors.

//!
//! Loaders: [`load_spec`] reads the command line's data specs; [`csv::load_csv`],
//! [`idx::load_idx`], [`digits()`] (built in) and [`idx::fashion_mnist`] load one source each.
//! [`prep`] splits off validation rows and fits a [`Normalization`].

pub mod csv;
pub mod digits;
pub mod idx;
pub mod mapped;
pub mod npy;
pub mod prep;
pub mod rows;
mod source;
pub mod spec;

pub use csv::{
    load_csv, load_csv_features, load_csv_features_with, load_csv_with, CsvHeader, CsvOptions,
    CsvTarget,
};
pub use digits::{digits, DIGITS_RANGE};
pub use idx::{fashion_mnist, load_idx};
pub use mapped::{open_spec, MappedIdx, MappedNpy};
pub use npy::load_npy;
pub use prep::split_indices;
pub use rows::{gather, gather_all, Normalized, RowSource, Subset};
pub use spec::{known_range, load_spec, load_spec_with, spec_paths};

use crate::error::{Error, Result};
use crate::model::{Loss, ModelSpec};

/// What a dataset's rows should produce.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Targets {
    /// One class index per row, `0..classes`.
    Classes {
        /// `[rows]` class indices.
        labels: Vec<u32>,
        /// Number of classes.
        classes: usize,
    },
    /// `width` real values per row: values `[n, width]` row-major.
    Values {
        /// `[rows, width]` row-major.
        values: Vec<f32>,
        /// Target values per row.
        width: usize,
    },
}

/// Features `[rows, cols]` row-major with their targets.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// `[rows, cols]` row-major.
    pub features: Vec<f32>,
    /// Number of rows (samples).
    pub rows: usize,
    /// Features per row.
    pub cols: usize,
    /// What each row should produce.
    pub targets: Targets,
    /// With string class labels: the label vocabulary, sorted, so class `i` is
    /// `class_names[i]` (built from the training data, saved in the checkpoint).
    pub class_names: Option<Vec<String>>,
}

impl Dataset {
    /// A dataset with class labels, checked for shape, NaN/Inf and label range.
    pub fn from_classes(
        features: Vec<f32>,
        cols: usize,
        labels: Vec<u32>,
        classes: usize,
    ) -> Result<Self> {
        let ds = Dataset {
            rows: labels.len(),
            features,
            cols,
            targets: Targets::Classes { labels, classes },
            class_names: None,
        };
        ds.validate()?;
        Ok(ds)
    }

    /// A dataset with real-valued targets `[rows, width]`, checked.
    pub fn from_values(
        features: Vec<f32>,
        cols: usize,
        values: Vec<f32>,
        width: usize,
    ) -> Result<Self> {
        let rows = values.len().checked_div(width).unwrap_or(0);
        let ds = Dataset {
            rows,
            features,
            cols,
            targets: Targets::Values { values, width },
            class_names: None,
        };
        ds.validate()?;
        Ok(ds)
    }

    /// Checks that the arrays agree and hold only finite numbers and in-range labels.
    pub fn validate(&self) -> Result<()> {
        if self.rows == 0 {
            return Err(Error::InvalidData(
                "the dataset is empty (0 samples)".into(),
            ));
        }
        if self.cols == 0 {
            return Err(Error::InvalidData(
                "the dataset has 0 feature columns".into(),
            ));
        }
        if self.features.len() != self.rows * self.cols {
            return Err(Error::shape(
                "features",
                format!(
                    "{} values ({} rows × {} columns)",
                    self.rows * self.cols,
                    self.rows,
                    self.cols
                ),
                self.features.len(),
            ));
        }
        check_finite("features", &self.features, self.cols)?;
        match &self.targets {
            Targets::Classes { labels, classes } => {
                if let Some((i, &l)) = labels
                    .iter()
                    .enumerate()
                    .find(|(_, &l)| l as usize >= *classes)
                {
                    return Err(Error::LabelOutOfRange {
                        label: l as i64,
                        index: i,
                        classes: *classes,
                    });
                }
            }
            Targets::Values { values, width } => {
                if *width == 0 || values.len() != self.rows * width {
                    return Err(Error::shape(
                        "targets",
                        format!("{} rows × {width}", self.rows),
                        values.len(),
                    ));
                }
                check_finite("targets", values, *width)?;
            }
        }
        Ok(())
    }

    /// The number of classes, or `None` for real-valued targets.
    pub fn classes(&self) -> Option<usize> {
        match &self.targets {
            Targets::Classes { classes, .. } => Some(*classes),
            Targets::Values { .. } => None,
        }
    }

    /// Targets as a dense `[rows, spec.outputs()]` matrix for this model: class labels become
    /// one-hot rows (or the label itself for a one-output sigmoid/identity net), checked against
    /// the model's widths.
    pub fn dense_targets(&self, spec: &ModelSpec) -> Result<Vec<f32>> {
        self.dense_targets_rows(spec, 0..self.rows)
    }

    /// [`Dataset::dense_targets`] of the rows `rows` only (`[rows.len(), spec.outputs()]`), so
    /// that a pass over the data in chunks never holds all the dense targets at once. The bytes
    /// are checked against the host memory limit before they are allocated.
    pub fn dense_targets_rows(
        &self,
        spec: &ModelSpec,
        rows: std::ops::Range<usize>,
    ) -> Result<Vec<f32>> {
        if rows.start > rows.end || rows.end > self.rows {
            return Err(Error::InvalidConfig(format!(
                "rows {}..{} are not inside the dataset's {} rows",
                rows.start, rows.end, self.rows
            )));
        }
        if self.cols != spec.inputs() {
            return Err(Error::shape(
                "input width",
                spec.inputs(),
                format!("{} feature columns in the data", self.cols),
            ));
        }
        match &self.targets {
            Targets::Classes { labels, classes } => {
                one_hot(&labels[rows.clone()], *classes, spec.outputs(), rows.start)
            }
            Targets::Values { values, width } => self.dense_values(values, *width, spec, rows),
        }
    }

    /// The real-valued targets values: [rows, width] of the rows `rows`, checked against the
    /// model's output width and, for a cross-entropy loss, to lie in [0, 1].
    fn dense_values(
        &self,
        values: &[f32],
        width: usize,
        spec: &ModelSpec,
        rows: std::ops::Range<usize>,
    ) -> Result<Vec<f32>> {
        let first = rows.start;
        let values = values.get(first * width..rows.end * width).ok_or_else(|| {
            Error::shape(
                "targets",
                format!("{} rows × {width}", self.rows),
                values.len(),
            )
        })?;
        if width != spec.outputs() {
            return Err(Error::shape(
                "target width",
                spec.outputs(),
                format!("{width} target columns in the data"),
            ));
        }
        if spec.loss == Loss::CrossEntropy || spec.loss == Loss::BinaryCrossEntropy {
            if let Some(i) = values.iter().position(|v| !(0.0..=1.0).contains(v)) {
                return Err(Error::InvalidData(format!(
                    "{} targets must lie in [0, 1], but row {} column {} is {}",
                    spec.loss,
                    first + i / width,
                    i % width,
                    values[i]
                )));
            }
        }
        Ok(values.to_vec())
    }

    /// The rows `idx` as a new dataset (in that order).
    pub fn select(&self, idx: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(idx.len() * self.cols);
        for &r in idx {
            features.extend_from_slice(&self.features[r * self.cols..(r + 1) * self.cols]);
        }
        let targets = match &self.targets {
            Targets::Classes { labels, classes } => Targets::Classes {
                labels: idx.iter().map(|&r| labels[r]).collect(),
                classes: *classes,
            },
            Targets::Values { values, width } => {
                let mut v = Vec::with_capacity(idx.len() * width);
                for &r in idx {
                    v.extend_from_slice(&values[r * width..(r + 1) * width]);
                }
                Targets::Values {
                    values: v,
                    width: *width,
                }
            }
        };
        Dataset {
            features,
            rows: idx.len(),
            cols: self.cols,
            targets,
            class_names: self.class_names.clone(),
        }
    }

    /// A dataset whose class labels are strings: row `r` has class `names[r]`. The
    /// vocabulary is the sorted set of names, so the same names always give the same classes.
    ///
    /// # Errors
    /// Shapes that disagree, or non-finite features.
    pub fn from_names(features: Vec<f32>, cols: usize, names: &[String]) -> Result<Self> {
        let vocabulary: Vec<String> = names
            .iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let labels = names
            .iter()
            .map(|n| vocabulary.binary_search(n).expect("in the vocabulary") as u32)
            .collect();
        let mut ds = Dataset::from_classes(features, cols, labels, vocabulary.len().max(1))?;
        ds.class_names = Some(vocabulary);
        Ok(ds)
    }

    /// This dataset's class labels in a model's `vocabulary` (class `i` is `vocabulary[i]`):
    /// string labels are looked up by name, numeric ones by their decimal form.
    ///
    /// # Errors
    /// [`Error::UnknownLabel`] for a label the vocabulary does not hold, naming its row.
    pub fn relabel(&self, vocabulary: &[String]) -> Result<Dataset> {
        let Targets::Classes { labels, .. } = &self.targets else {
            return Err(Error::InvalidData(
                "the model was trained on class labels, but this data has real-valued targets"
                    .into(),
            ));
        };
        let name = |l: u32| match &self.class_names {
            Some(names) => names[l as usize].clone(),
            None => l.to_string(),
        };
        let mut mapped = Vec::with_capacity(labels.len());
        for (row, &l) in labels.iter().enumerate() {
            let n = name(l);
            match vocabulary.iter().position(|v| *v == n) {
                Some(i) => mapped.push(i as u32),
                None => {
                    return Err(Error::UnknownLabel {
                        label: n,
                        row,
                        known: vocabulary.join(", "),
                    })
                }
            }
        }
        let mut ds = self.clone();
        ds.targets = Targets::Classes {
            labels: mapped,
            classes: vocabulary.len(),
        };
        ds.class_names = Some(vocabulary.to_vec());
        Ok(ds)
    }
}

/// Errors on the first NaN or Inf, naming its row and column. data: [rows, cols].
pub fn check_finite(what: &str, data: &[f32], cols: usize) -> Result<()> {
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: what.into(),
            row: i / cols.max(1),
            col: i % cols.max(1),
            value: data[i],
        });
    }
    Ok(())
}

/// How features are scaled before training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NormalizeMethod {
    /// Features as they are.
    None,
    /// Divided by the known range or the training maximum, into [0, 1].
    Unit,
    /// Per-feature mean and standard deviation of the training part.
    Standard,
}

/// A per-feature affine map `x' = (x − shift[i]) / scale[i]`, fitted on the training part and
/// saved with the model so that `eval` and `predict` apply it again.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    /// How the map was fitted.
    pub method: NormalizeMethod,
    /// `[cols]`
    pub shift: Vec<f32>,
    /// `[cols]`, never 0
    pub scale: Vec<f32>,
}

/// Class labels: [n] (of `classes` classes, the first being row `first`) as one-hot targets:
/// [n, out], or as the labels themselves ([n]) for a one-output model, which takes only 0 and 1.
/// The bytes are checked against the host memory limit before they are allocated.
fn one_hot(labels: &[u32], classes: usize, out: usize, first: usize) -> Result<Vec<f32>> {
    let n = labels.len();
    if out == 1 {
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l > 1) {
            return Err(Error::LabelOutOfRange {
                label: l as i64,
                index: first + i,
                classes: 2,
            });
        }
        return Ok(labels.iter().map(|&l| l as f32).collect());
    }
    if classes > out {
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= out) {
            return Err(Error::LabelOutOfRange {
                label: l as i64,
                index: first + i,
                classes: out,
            });
        }
    }
    let bytes = crate::limits::bytes_of(&[n, out], 4);
    crate::limits::check_host_bytes(
        &format!("one-hot targets for {n} samples × {out} classes"),
        bytes,
        &format!(
            "a class label of L makes L + 1 outputs, and the largest label here is {}: if the label column holds ids or real values rather than classes, load it as targets (csv:PATH:targets=1) or pick the class column with label=COL",
            labels.iter().max().copied().unwrap_or(0)
        ),
    )?;
    let mut t = vec![0.0f32; n * out];
    for (r, &l) in labels.iter().enumerate() {
        t[r * out + l as usize] = 1.0;
    }
    Ok(t)
}

//! Per-epoch metrics as JSON lines, and a plot of loss and accuracy (SVG or PNG).

use crate::error::{Error, Result};
use crate::files::{atomic_write_with, WriteOptions};
use crate::train::EpochReport;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One line of a `--metrics` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Training accuracy in [0, 1]; `None` for regression.
    pub train_accuracy: Option<f64>,
    /// Mean validation loss; `None` without a validation set.
    pub val_loss: Option<f64>,
    /// Validation accuracy in [0, 1]; `None` for regression or without a validation set.
    pub val_accuracy: Option<f64>,
    /// The learning rate used this epoch.
    pub lr: f32,
    /// Wall-clock seconds the epoch took.
    pub seconds: f64,
    /// Training throughput, samples per second.
    pub samples_per_second: f64,
    /// With early stopping: the best epoch so far by the monitored metric (so the last line
    /// names the run's best epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<usize>,
}

impl From<&EpochReport> for MetricsRecord {
    fn from(r: &EpochReport) -> Self {
        MetricsRecord {
            epoch: r.epoch,
            train_loss: r.train_loss,
            train_accuracy: r.train_accuracy,
            val_loss: r.val_loss,
            val_accuracy: r.val_accuracy,
            lr: r.lr,
            seconds: r.seconds,
            samples_per_second: r.samples_per_second,
            best_epoch: None,
        }
    }
}

/// A `--metrics` file: one JSON line per epoch, appended and flushed as each epoch ends, so
/// `tail -f` follows a run and the cost of an epoch does not grow with the epoch count.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Starts `path` (atomically, keeping an existing file's mode) with the lines of `earlier`
    /// epochs, e.g. those of a resumed run, and opens it for appending.
    ///
    /// # Errors
    /// `path` cannot be written (see [`crate::files`]).
    pub fn create(path: &Path, earlier: &[MetricsRecord], options: WriteOptions) -> Result<Self> {
        let mut text = String::new();
        for r in earlier {
            text += &line(path, r)?;
        }
        atomic_write_with(path, options, |f| f.write_all(text.as_bytes()))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one epoch's line and flushes it to the file.
    ///
    /// # Errors
    /// The write fails (a full disk, a removed folder).
    pub fn append(&mut self, r: &MetricsRecord) -> Result<()> {
        let text = line(&self.path, r)?;
        self.file
            .write_all(text.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}

fn line(path: &Path, r: &MetricsRecord) -> Result<String> {
    let mut text = serde_json::to_string(r).map_err(|e| Error::file(path, e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// The image format a plot path asks for, `"svg"` or `"png"` (by its extension, any case), or an
/// error that says which are supported. `gpumlp train` checks this before training.
pub fn plot_format(path: &Path) -> Result<&'static str> {
    match path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .as_deref()
    {
        Some("svg") => Ok("svg"),
        Some("png") => Ok("png"),
        _ => Err(Error::file(path, "a plot must end in .svg or .png")),
    }
}

#[cfg(feature = "plot")]
mod plot;
#[cfg(feature = "plot")]
pub use plot::plot;

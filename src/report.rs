//! Per-epoch metrics as JSON lines, and a plot of loss and accuracy (SVG or PNG).

use crate::error::{Error, Result};
use crate::files::{atomic_write_file, atomic_write_with, WriteOptions};
use crate::train::EpochReport;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One line of a `--metrics` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub lr: f32,
    pub seconds: f64,
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

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../data/fonts/DejaVuSans.ttf");

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

/// Draws loss (top) and accuracy (bottom) per epoch, train and validation, to an `.svg` or
/// `.png` file, written atomically (see [`crate::files`]).
pub fn plot(path: &Path, records: &[MetricsRecord], options: WriteOptions) -> Result<()> {
    let ext = plot_format(path)?;
    let size = (900, 700);
    // Text is laid out with the bundled DejaVu Sans, so plots need no system fonts.
    let _ = plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES);
    atomic_write_file(path, options, |tmp| {
        let drawn = match ext {
            "svg" => draw(SVGBackend::new(tmp, size).into_drawing_area(), records),
            _ => draw(BitMapBackend::new(tmp, size).into_drawing_area(), records),
        };
        drawn.map_err(|e| std::io::Error::other(format!("drawing the plot failed: {e}")))
    })
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    records: &[MetricsRecord],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(350);
    let series = |f: fn(&MetricsRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        records
            .iter()
            .filter_map(|r| f(r).map(|v| (r.epoch as f64, v)))
            .collect()
    };
    let losses = [series(|r| Some(r.train_loss)), series(|r| r.val_loss)];
    let max_loss = losses.iter().flatten().map(|p| p.1).fold(1e-6, f64::max) * 1.05;
    panel(
        &top,
        "loss",
        "mean loss",
        0.0..max_loss,
        records.len(),
        &losses,
    )?;
    let accuracies = [
        series(|r| r.train_accuracy.map(|a| a * 100.0)),
        series(|r| r.val_accuracy.map(|a| a * 100.0)),
    ];
    let min_acc = accuracies
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(100.0, f64::min);
    let range = (min_acc - 1.0).clamp(0.0, 99.0)..100.0;
    panel(
        &bottom,
        "accuracy",
        "accuracy %",
        range,
        records.len(),
        &accuracies,
    )?;
    root.present()?;
    Ok(())
}

/// One chart: train (blue) and validation (red) per epoch, with a legend when there is data.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    y_range: std::ops::Range<f64>,
    epochs: usize,
    lines: &[Vec<(f64, f64)>; 2],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..epochs.max(1) as f64, y_range)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_desc)
        .label_style((FONT, 14))
        .draw()?;
    for (data, color, name) in [(&lines[0], BLUE, "train"), (&lines[1], RED, "validation")] {
        if !data.is_empty() {
            chart
                .draw_series(LineSeries::new(data.iter().cloned(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
    }
    if lines.iter().any(|l| !l.is_empty()) {
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()?;
    }
    Ok(())
}

//! Loss and accuracy per epoch as an SVG or PNG (feature `plot`).

use super::{plot_format, MetricsRecord};
use crate::error::Result;
use crate::files::{atomic_write_file, WriteOptions};
use plotters::prelude::*;
use std::path::Path;

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../data/fonts/DejaVuSans.ttf");

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

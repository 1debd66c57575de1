//! `gpumlp eval` and `gpumlp predict`.

use crate::train::place_saved;
use crate::DeviceArgs;
use anyhow::bail;
use clap::Args;
use gpumlp::checkpoint::{atomic_write, Checkpoint};
use gpumlp::data::{load_csv_features, load_spec};
use gpumlp::reference::ops::argmax;
use gpumlp::{Activation, Dataset, Targets};
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalArgs {
    /// A checkpoint written by `gpumlp train --out`.
    #[arg(long)]
    pub model: PathBuf,
    /// The data to evaluate on (same forms as train --data).
    #[arg(long)]
    pub data: String,
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args)]
pub struct PredictArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub data: String,
    /// The CSV file to write: one row per sample.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// The checkpoint and the data, normalized as the model was trained.
fn load(model: &std::path::Path, data: &str) -> anyhow::Result<(Checkpoint, Dataset)> {
    let ck = Checkpoint::load(model)?;
    let ds = load_checked(&ck, data)?;
    Ok((ck, ds))
}

/// `data` loaded, checked against the model's inputs and normalized as the model was trained.
fn load_checked(ck: &Checkpoint, data: &str) -> anyhow::Result<Dataset> {
    let mut ds = load_spec(data)?;
    if ds.cols != ck.spec.inputs() {
        bail!(
            "{data}: {} features, but the model takes {} (predict also reads a CSV of just the {} inputs)",
            ds.cols,
            ck.spec.inputs(),
            ck.spec.inputs()
        );
    }
    if let Some(n) = &ck.normalization {
        n.apply(&mut ds)?;
    }
    Ok(ds)
}

/// The predicted class of each output row. y: [rows, out].
fn predicted_classes(y: &[f32], out: usize) -> Vec<usize> {
    y.chunks(out)
        .map(|r| {
            if out == 1 {
                (r[0] >= 0.5) as usize
            } else {
                argmax(r)
            }
        })
        .collect()
}

pub fn run_eval(args: EvalArgs) -> anyhow::Result<()> {
    args.device.device()?; // contradictory device flags fail before any file is read
    let (ck, ds) = load(&args.model, &args.data)?;
    let mut b = place_saved(&ck, &args.device, args.batch.clamp(1, ds.rows))?;
    let t = ds.dense_targets(&ck.spec)?;
    let stats = b.evaluate(&ds.features, &t, ds.rows)?;
    println!("model: {} on {}", args.model.display(), b.name());
    println!("samples: {}", ds.rows);
    println!("loss: {:.6}", stats.mean_loss());
    if let Targets::Classes { labels, .. } = &ds.targets {
        println!("accuracy: {:.2}%", stats.accuracy() * 100.0);
        let out = ck.spec.outputs();
        let y = b.predict(&ds.features, ds.rows)?;
        let pred = predicted_classes(&y, out);
        let classes = out.max(2);
        let mut confusion = vec![vec![0usize; classes]; classes];
        for (&l, &p) in labels.iter().zip(&pred) {
            confusion[l as usize][p] += 1;
        }
        println!("confusion matrix (rows: true class, columns: predicted class):");
        print!("{:>6}", "");
        for c in 0..classes {
            print!("{c:>6}");
        }
        println!();
        for (r, row) in confusion.iter().enumerate() {
            print!("{r:>6}");
            for v in row {
                print!("{v:>6}");
            }
            println!();
        }
    }
    Ok(())
}

/// The data to predict on: like [`load`], but a plain `csv:PATH` may also hold just the
/// model's inputs, with no label column. Returns features `[rows, inputs]` normalized as the
/// model was trained, and the class count when the data has labels.
fn predict_data(ck: &Checkpoint, data: &str) -> anyhow::Result<(Vec<f32>, usize, Option<usize>)> {
    let inputs = ck.spec.inputs();
    let plain_csv = data
        .strip_prefix("csv:")
        .filter(|rest| !rest.contains(":label=") && !rest.contains(":targets="));
    if let Some(path) = plain_csv {
        let (mut features, cols) = load_csv_features(std::path::Path::new(path))?;
        if cols == inputs {
            if let Some(n) = &ck.normalization {
                n.apply_features(&mut features, cols)?;
            }
            return Ok((features, cols, None));
        }
    }
    let ds = load_checked(ck, data)?;
    let classes = ds.classes();
    Ok((ds.features, ds.cols, classes))
}

pub fn run_predict(args: PredictArgs) -> anyhow::Result<()> {
    // Check the flags and the output folder before reading the model and data.
    args.device.device()?;
    gpumlp::checkpoint::check_writable(&args.out)?;
    let ck = Checkpoint::load(&args.model)?;
    let (features, cols, classes) = predict_data(&ck, &args.data)?;
    let rows = features.len() / cols;
    let mut b = place_saved(&ck, &args.device, args.batch.clamp(1, rows))?;
    let y = b.predict(&features, rows)?;
    let out = ck.spec.outputs();
    // Columns are probabilities (p0, …) only when the output layer makes them (softmax, or a
    // one-unit sigmoid for two classes); other outputs are raw values (y0, …).
    let last = ck.spec.activations.last().copied();
    let probabilities = matches!(last, Some(Activation::Softmax | Activation::Sigmoid));
    let prefix = if probabilities { "p" } else { "y" };
    let mut csv = String::new();
    if ck.spec.is_classifier() || classes.is_some() {
        let pred = predicted_classes(&y, out);
        if out == 1 && last == Some(Activation::Sigmoid) {
            csv += "predicted,p0,p1\n";
            for (p, v) in pred.iter().zip(&y) {
                csv += &format!("{p},{},{}\n", 1.0 - v, v);
            }
        } else {
            csv += "predicted";
            for k in 0..out {
                csv += &format!(",{prefix}{k}");
            }
            csv.push('\n');
            for (p, row) in pred.iter().zip(y.chunks(out)) {
                csv += &p.to_string();
                for v in row {
                    csv += &format!(",{v}");
                }
                csv.push('\n');
            }
        }
    } else {
        csv += &(0..out)
            .map(|k| format!("y{k}"))
            .collect::<Vec<_>>()
            .join(",");
        csv.push('\n');
        for row in y.chunks(out) {
            csv += &row
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",");
            csv.push('\n');
        }
    }
    atomic_write(&args.out, csv.as_bytes())?;
    eprintln!(
        "gpumlp: wrote {} predictions to {}",
        rows,
        args.out.display()
    );
    Ok(())
}

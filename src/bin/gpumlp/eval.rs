//! `gpumlp eval` and `gpumlp predict`.

use crate::train::place_saved;
use crate::{CsvArgs, DeviceArgs};
use anyhow::{bail, Context};
use clap::Args;
use gpumlp::checkpoint::Checkpoint;
use gpumlp::data::spec_paths;
use gpumlp::data::{load_csv_features_with, load_spec_with, CsvOptions};
use gpumlp::files::{atomic_write_with, check_distinct, check_writable, WriteOptions};
use gpumlp::reference::ops::argmax;
use gpumlp::{Activation, Dataset, Targets};
use std::io::Write;
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
    /// Print one JSON object (model, device, samples, loss, accuracy, confusion) instead.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub csv: CsvArgs,
}

#[derive(Args)]
pub struct PredictArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub data: String,
    /// The CSV file to write: one row per sample (`-`: standard output).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out even where it is a read-only file.
    #[arg(long)]
    pub force: bool,
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub csv: CsvArgs,
}

/// The checkpoint and the data, normalized as the model was trained.
fn load(
    model: &std::path::Path,
    data: &str,
    csv: &CsvOptions,
) -> anyhow::Result<(Checkpoint, Dataset)> {
    let ck = Checkpoint::load(model)?;
    let ds = load_checked(&ck, data, csv, false)?;
    Ok((ck, ds))
}

/// `data` loaded, checked against the model's inputs and normalized as the model was trained.
/// `predicting`: the data may also be a CSV of just the inputs (said in the error).
fn load_checked(
    ck: &Checkpoint,
    data: &str,
    csv: &CsvOptions,
    predicting: bool,
) -> anyhow::Result<Dataset> {
    let mut ds = load_spec_with(data, csv)?;
    if ds.cols != ck.spec.inputs() {
        let inputs = ck.spec.inputs();
        let also = if predicting {
            format!(" (predict also reads a CSV of just the {inputs} inputs)")
        } else {
            format!(": eval needs the {inputs} inputs and the targets the model was trained on")
        };
        bail!(
            "{data}: {} features, but the model takes {inputs}{also}",
            ds.cols
        );
    }
    if let Some(n) = &ck.normalization {
        n.apply(&mut ds)?;
    }
    match (&ck.class_names, &ds.class_names) {
        (Some(names), _) => Ok(ds.relabel(names).with_context(|| data.to_string())?),
        (None, Some(_)) => {
            bail!("{data}: its labels are names, but the model was trained on numeric class labels")
        }
        (None, None) => Ok(ds),
    }
}

/// Class `c` as `eval` prints it: its name (at most 5 characters) or its index.
fn class_name(ck: &Checkpoint, c: usize) -> String {
    match &ck.class_names {
        Some(names) => names[c].chars().take(5).collect(),
        None => c.to_string(),
    }
}

/// Class `c` as a CSV field: its name (quoted where it holds a comma, quote or line break) or
/// its index.
fn csv_class(ck: &Checkpoint, c: usize) -> String {
    match &ck.class_names {
        Some(names) if names[c].contains([',', '"', '\n', '\r']) => {
            format!("\"{}\"", names[c].replace('"', "\"\""))
        }
        Some(names) => names[c].clone(),
        None => c.to_string(),
    }
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

/// The most classes whose confusion matrix `eval` prints (it holds classes² counts).
const MAX_CONFUSION_CLASSES: usize = 100;

pub fn run_eval(args: EvalArgs) -> anyhow::Result<()> {
    args.device.device()?; // contradictory device flags fail before any file is read
    let (ck, ds) = load(&args.model, &args.data, &args.csv.options()?)?;
    let mut b = place_saved(&ck, &args.device, args.batch.clamp(1, ds.rows))?;
    let stats = gpumlp::train::evaluate(b.as_mut(), &ds)?;
    let out = ck.spec.outputs();
    let classes = out.max(2);
    let confusion = match &ds.targets {
        Targets::Classes { labels, .. } if classes <= MAX_CONFUSION_CLASSES => {
            let y = gpumlp::train::predict(b.as_mut(), &ds.features, ds.rows)?;
            let mut confusion = vec![vec![0usize; classes]; classes];
            for (&l, p) in labels.iter().zip(predicted_classes(&y, out)) {
                confusion[l as usize][p] += 1;
            }
            Some(confusion)
        }
        _ => None,
    };
    let accuracy = ds.classes().is_some().then(|| stats.accuracy());
    if args.json {
        let report = serde_json::json!({
            "model": args.model.display().to_string(),
            "data": args.data,
            "device": b.name(),
            "samples": ds.rows,
            "loss": stats.mean_loss(),
            "accuracy": accuracy,
            "confusion": confusion,
            "classes": ck.class_names,
        });
        println!("{report}");
        return Ok(());
    }
    println!("model: {} on {}", args.model.display(), b.name());
    println!("samples: {}", ds.rows);
    println!("loss: {:.6}", stats.mean_loss());
    if let Some(acc) = accuracy {
        println!("accuracy: {:.2}%", acc * 100.0);
    }
    if let (Some(_), None) = (accuracy, &confusion) {
        println!("confusion matrix: omitted ({classes} classes; it is printed for at most {MAX_CONFUSION_CLASSES})");
    }
    if let Some(confusion) = confusion {
        println!("confusion matrix (rows: true class, columns: predicted class):");
        print!("{:>6}", "");
        for c in 0..confusion.len() {
            print!(" {:>5}", class_name(&ck, c));
        }
        println!();
        for (r, row) in confusion.iter().enumerate() {
            print!("{:>6}", class_name(&ck, r));
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
fn predict_data(
    ck: &Checkpoint,
    data: &str,
    csv: &CsvOptions,
) -> anyhow::Result<(Vec<f32>, usize, Option<usize>)> {
    let inputs = ck.spec.inputs();
    let plain_csv = data
        .strip_prefix("csv:")
        .filter(|rest| !rest.contains(":label=") && !rest.contains(":targets="));
    if let Some(path) = plain_csv {
        // Just the inputs, or (a column that is not a number, e.g. string labels, or one
        // column more) a labelled file, read below.
        if let Ok((mut features, cols)) = load_csv_features_with(std::path::Path::new(path), csv) {
            if cols == inputs {
                if let Some(n) = &ck.normalization {
                    n.apply_features(&mut features, cols)?;
                }
                return Ok((features, cols, None));
            }
        }
    }
    let ds = load_checked(ck, data, csv, true)?;
    let classes = ds.classes();
    Ok((ds.features, ds.cols, classes))
}

/// `gpumlp predict`: one CSV row of predictions per sample, to `--out` or (`-`) stdout.
pub fn run_predict(args: PredictArgs) -> anyhow::Result<()> {
    // Check the flags and the output folder before reading the model and data.
    args.device.device()?;
    let mut write = WriteOptions::default();
    write.replace_read_only = args.force;
    let to_stdout = args.out.as_os_str() == "-";
    if !to_stdout {
        check_predict_out(&args, write)?;
    }
    let ck = Checkpoint::load(&args.model)?;
    let (features, cols, classes) = predict_data(&ck, &args.data, &args.csv.options()?)?;
    let rows = features.len() / cols;
    let mut b = place_saved(&ck, &args.device, args.batch.clamp(1, rows))?;
    let y = gpumlp::train::predict(b.as_mut(), &features, rows)?;
    let csv = if ck.spec.is_classifier() || classes.is_some() {
        class_table(&ck, &y)
    } else {
        value_table(ck.spec.outputs(), &y)
    };
    if to_stdout {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(csv.as_bytes())?;
        stdout.flush()?;
        return Ok(());
    }
    atomic_write_with(&args.out, write, |f| f.write_all(csv.as_bytes()))?;
    eprintln!(
        "gpumlp: wrote {} predictions to {}",
        rows,
        args.out.display()
    );
    Ok(())
}

/// Refuses an `--out` that cannot be written or that names the model or the data.
fn check_predict_out(args: &PredictArgs, write: WriteOptions) -> anyhow::Result<()> {
    check_writable(&args.out, write)?;
    let data = spec_paths(&args.data);
    let mut inputs: Vec<(&str, &std::path::Path)> = vec![("--model", &args.model)];
    inputs.extend(data.iter().map(|p| ("--data", p.as_path())));
    check_distinct(&[("--out", &args.out)], &inputs)?;
    Ok(())
}

/// The predictions of a classifier, y: [rows, outputs]: the predicted class, then one column
/// per output. Columns are probabilities (p0, …) only when the output layer makes them
/// (softmax, or a one-unit sigmoid for two classes); other outputs are raw values (y0, …).
fn class_table(ck: &Checkpoint, y: &[f32]) -> String {
    let out = ck.spec.outputs();
    let last = ck.spec.activations.last().copied();
    let probabilities = matches!(last, Some(Activation::Softmax | Activation::Sigmoid));
    let prefix = if probabilities { "p" } else { "y" };
    let pred = predicted_classes(y, out);
    let mut csv = String::new();
    if out == 1 && last == Some(Activation::Sigmoid) {
        csv += "predicted,p0,p1\n";
        for (p, v) in pred.iter().zip(y) {
            csv += &format!("{},{},{}\n", csv_class(ck, *p), 1.0 - v, v);
        }
        return csv;
    }
    csv += "predicted";
    for k in 0..out {
        csv += &format!(",{prefix}{k}");
    }
    csv.push('\n');
    for (p, row) in pred.iter().zip(y.chunks(out)) {
        csv += &csv_class(ck, *p);
        for v in row {
            csv += &format!(",{v}");
        }
        csv.push('\n');
    }
    csv
}

/// The predictions of a regression, y: [rows, out]: one column per output (y0, …).
fn value_table(out: usize, y: &[f32]) -> String {
    let mut csv = (0..out)
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
    csv
}

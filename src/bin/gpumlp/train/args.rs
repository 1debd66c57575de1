//! `gpumlp train`'s flags, and the checks each must pass by itself before any file is read.

use crate::choices::{
    LossChoice, MonitorChoice, NormalizeChoice, OptimizerChoice, OutputActivation,
};
use crate::{CsvArgs, DeviceArgs, LayerSizes};
use anyhow::{bail, Context};
use clap::Args;
use gpumlp::data::spec_paths;
use gpumlp::files::{check_distinct, check_writable, WriteOptions};
use gpumlp::report::plot_format;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct TrainArgs {
    /// digits, csv:PATH, csv:PATH:label=COL, csv:PATH:targets=K, idx:IMAGES,LABELS, fashion-mnist
    #[arg(long, default_value = "digits")]
    pub data: String,
    /// A separate test set (same forms as --data), evaluated after training.
    #[arg(long)]
    pub test: Option<String>,
    /// Layer sizes, input first, e.g. 64,128,10 or 64-128-10 (default: inputs,128,outputs).
    #[arg(long, conflicts_with = "hidden")]
    pub layers: Option<LayerSizes>,
    /// Hidden layer sizes only, e.g. 256,128: the data decides the input and output widths.
    #[arg(long)]
    #[serde(default)]
    pub hidden: Option<LayerSizes>,
    /// Hidden activation: one name, or one per hidden layer (comma-separated).
    #[arg(long, default_value = "relu")]
    pub activation: String,
    /// The output layer's activation.
    #[arg(long, value_enum, default_value = "auto", ignore_case = true)]
    pub output_activation: OutputActivation,
    /// The training objective.
    #[arg(long, value_enum, default_value = "auto", ignore_case = true)]
    pub loss: LossChoice,
    /// The update rule (adam, the default: on the embedded digits it reaches 97.8-98.6% held
    /// out over seeds 0-5, plain SGD 96.7-99.2%).
    #[arg(long, value_enum, default_value = "adam")]
    pub optimizer: OptimizerChoice,
    /// Learning rate (default 0.1 for sgd, 0.05 for momentum, 0.001 for adam).
    #[arg(long)]
    pub lr: Option<f32>,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// L2 strength λ on weights (not biases).
    #[arg(long, default_value_t = 0.0)]
    pub l2: f32,
    /// constant, step:EVERY:GAMMA, exp:GAMMA, invscaling:POWER, cosine:EPOCHS[:WARMUP] or
    /// plateau:FACTOR:PATIENCE (per epoch; plateau watches the validation loss).
    #[arg(long, default_value = "constant")]
    pub schedule: String,
    /// Mini-batch size; one at least as large as the data trains full-batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Total epochs (with --resume: the total, counting those already done).
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub no_shuffle: bool,
    /// The most bytes training may hold on the device (model, optimizer state, batch buffers,
    /// training data): a training set that does not fit streams in chunks. Plain bytes, or K, M,
    /// G, T (also KiB, MiB, GiB, TiB: powers of 1024) or KB, MB, GB, TB (powers of 1000), e.g. 64M.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    #[serde(default)]
    pub max_device_memory: Option<u64>,
    /// Fraction of the data held out for validation.
    #[arg(long, default_value_t = 0.2)]
    pub val_split: f32,
    /// How features are scaled (fitted on the training part, saved with the model).
    #[arg(long, value_enum, default_value = "standard", ignore_case = true)]
    pub normalize: NormalizeChoice,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Train one model on several devices as data-parallel replicas: SPEC,SPEC,... with each
    /// SPEC cpu, reference, gpu, gpu:N, gpu:all, or a backend (vulkan, metal, dx12, gl) alone,
    /// with :N (its N-th adapter, from 0) or :all. Each replica takes a shard of every batch;
    /// the gradients are summed before one identical update, so the result is that of one
    /// device with the same --batch. --threads is per CPU replica.
    #[arg(long, value_name = "SPEC,SPEC,...", conflicts_with_all = ["device", "backend", "adapter"])]
    #[serde(default)]
    pub devices: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub csv: CsvArgs,
    /// Start from saved weights (safetensors, layers.{i}.weight [out, in], layers.{i}.bias).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Checkpoint written at the end of every epoch (safetensors).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// One JSON object per epoch.
    #[arg(long)]
    pub metrics: Option<PathBuf>,
    /// Loss and accuracy per epoch, .svg or .png.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Continue a run from a checkpoint written with --out; checkpoints then go to --out if
    /// given, else back to this file (never to a path stored in the checkpoint).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Stop when --monitor has not improved by more than --min-delta for N epochs.
    #[arg(long)]
    pub patience: Option<usize>,
    /// What early stopping and --save-best watch.
    #[arg(long, value_enum, default_value = "val_loss")]
    pub monitor: MonitorChoice,
    /// The smallest change of --monitor that counts as an improvement.
    #[arg(long, default_value_t = 0.0)]
    pub min_delta: f64,
    /// Write the checkpoint of the best epoch (by --monitor) here, atomically, as it happens.
    #[arg(long)]
    pub save_best: Option<PathBuf>,
    /// End the run with the best epoch's weights (by --monitor), in --out too.
    #[arg(long)]
    #[serde(default)]
    pub restore_best: bool,
    /// A TOML file with the same keys as these flags (epochs = 2, layers = "64,32,10", ...);
    /// flags given on the command line override it.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Replace outputs (--out, --metrics, --plot) even where they are read-only files.
    #[arg(long)]
    #[serde(skip)]
    pub force: bool,
    /// Train the first K steps on this device (GPU or fast CPU) and the CPU reference side by
    /// side and compare.
    #[arg(long)]
    pub verify: Option<usize>,
    #[arg(long)]
    pub quiet: bool,
    /// Run as one rank of an MPI job: `mpirun -np N gpumlp train --distributed ...` (needs a
    /// build with `--features mpi`). Each rank takes a GPU adapter by its rank on the machine
    /// (or the CPU backend) and a shard of every batch; rank 0 alone writes and prints.
    #[arg(long)]
    #[serde(skip)]
    pub distributed: bool,
    /// The flags typed on the command line (by clap id), filled in by `main` from clap's value
    /// sources: `--resume` keeps the saved run's value of every flag not given. Not saved.
    #[arg(skip)]
    #[serde(skip)]
    pub given: BTreeSet<String>,
}

/// `--max-device-memory`'s value.
fn parse_size(s: &str) -> Result<u64, String> {
    gpumlp::limits::parse_bytes(s).map_err(|e| e.to_string())
}

/// Checks on the flags alone, before any file is read: each must make sense by itself.
pub(super) fn check_flags(args: &TrainArgs) -> anyhow::Result<()> {
    if args.epochs == 0 {
        bail!("--epochs must be at least 1 (it is the total number of epochs to train)");
    }
    if args.distributed && args.verify.is_some() {
        bail!("--verify compares one process's device with the CPU reference: run it without --distributed (and without mpirun)");
    }
    if args.verify == Some(0) {
        bail!("--verify K compares the first K steps: K must be at least 1");
    }
    if let Some(k) = args.verify {
        if k > gpumlp::limits::MAX_VERIFY_STEPS {
            bail!(
                "--verify {k}: at most {} steps are compared (the CPU reference runs every one of them): give a smaller K",
                gpumlp::limits::MAX_VERIFY_STEPS
            );
        }
    }
    if let Some(p) = &args.plot {
        plot_format(p)?;
    }
    args.device.device()?;
    if let Some(list) = &args.devices {
        gpumlp::parse_devices(list).context("--devices")?;
    }
    check_early_stopping(args)
}

/// `--patience`, `--monitor`, `--min-delta`, `--save-best` and `--restore-best`, checked
/// before any work.
fn check_early_stopping(args: &TrainArgs) -> anyhow::Result<()> {
    let monitor = args.monitor.monitor();
    gpumlp::EarlyStopping::new(monitor, args.patience.unwrap_or(1), args.min_delta)
        .context("--patience / --min-delta")?;
    let tracked = args.patience.is_some() || args.save_best.is_some() || args.restore_best;
    let needs_validation = monitor != gpumlp::Monitor::TrainLoss;
    if tracked && needs_validation && args.val_split <= 0.0 {
        bail!(
            "--monitor {monitor} needs a validation set, but --val-split is 0: give --val-split above 0, or --monitor train_loss"
        );
    }
    Ok(())
}

/// Refuses outputs that cannot be written (special files, read-only files without --force,
/// missing folders), that name each other, or that name an input.
pub(super) fn check_outputs(args: &TrainArgs) -> anyhow::Result<()> {
    let mut write = WriteOptions::default();
    write.replace_read_only = args.force;
    let outputs: Vec<(&str, &Path)> = [
        ("--out", &args.out),
        ("--metrics", &args.metrics),
        ("--plot", &args.plot),
        ("--save-best", &args.save_best),
    ]
    .into_iter()
    .filter_map(|(flag, p)| p.as_deref().map(|p| (flag, p)))
    .collect();
    for (_, p) in &outputs {
        check_writable(p, write)?;
    }
    let data = spec_paths(&args.data);
    let test = args.test.as_deref().map(spec_paths).unwrap_or_default();
    let mut inputs: Vec<(&str, &Path)> = data.iter().map(|p| ("--data", p.as_path())).collect();
    inputs.extend(test.iter().map(|p| ("--test", p.as_path())));
    if let Some(init) = &args.init {
        inputs.push(("--init", init));
    }
    check_distinct(&outputs, &inputs)?;
    // --resume's file is an input that --out may replace (that is how a run continues), but
    // no other output may.
    if let Some(resume) = &args.resume {
        check_distinct(
            &outputs[usize::from(args.out.is_some())..],
            &[("--resume", resume)],
        )?;
    }
    Ok(())
}

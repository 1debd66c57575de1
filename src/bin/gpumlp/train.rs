//! `gpumlp train`.

use crate::choices::{
    LossChoice, MonitorChoice, NormalizeChoice, OptimizerChoice, OutputActivation,
};
use crate::distributed::Job;
use crate::resume::resume_args;
use crate::rows::TrainRows;
use crate::{CsvArgs, DeviceArgs, LayerSizes};
use anyhow::{bail, Context};
use clap::Args;
use gpumlp::checkpoint::{load_weights_file, Checkpoint};
use gpumlp::data::{load_spec_with, spec_paths, CsvOptions, Normalization};
use gpumlp::files::{check_distinct, check_writable, WriteOptions};
use gpumlp::report::{plot, plot_format, MetricsRecord};
use gpumlp::verify::verify;
use gpumlp::{
    Activation, Backend, DataPlan, Dataset, Device, EpochReport, Loss, ModelSpec, Optimizer,
    ReferenceBackend, Schedule, TrainConfig, Trainer,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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

/// The model for these arguments and data.
fn build_spec(args: &TrainArgs, train: &Dataset) -> anyhow::Result<ModelSpec> {
    let outputs = match &train.targets {
        gpumlp::Targets::Classes { classes, .. } => {
            if *classes == 2 && args.output_activation == OutputActivation::Sigmoid {
                1
            } else {
                *classes
            }
        }
        gpumlp::Targets::Values { width, .. } => *width,
        _ => anyhow::bail!("these targets are not supported by the command line"),
    };
    let sizes = match (&args.layers, &args.hidden) {
        (Some(l), _) => l.0.clone(),
        // The data decides the input and output widths, as scikit-learn's hidden_layer_sizes.
        (None, Some(h)) => [vec![train.cols], h.0.clone(), vec![outputs]].concat(),
        (None, None) => vec![train.cols, 128, outputs],
    };
    if sizes.len() < 2 {
        bail!(
            "--layers needs at least an input and an output size, e.g. {},128,{outputs}",
            train.cols
        );
    }
    if sizes[0] != train.cols {
        bail!(
            "--layers starts with {} inputs, but the data has {} features: use --layers {},…",
            sizes[0],
            train.cols,
            train.cols
        );
    }
    let hidden_layers = sizes.len() - 2;
    let hidden: Vec<Activation> = args
        .activation
        .split(',')
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let hidden = match hidden.len() {
        1 => vec![hidden[0]; hidden_layers],
        n if n == hidden_layers => hidden,
        n => bail!("--activation gives {n} activations for {hidden_layers} hidden layers: give one, or one per hidden layer"),
    };
    let classes = train.classes().is_some();
    let out_act = match args.output_activation.activation() {
        Some(a) => a,
        None if classes && *sizes.last().unwrap_or(&1) == 1 => Activation::Sigmoid,
        None if classes => Activation::Softmax,
        None => Activation::Identity,
    };
    let loss = match args.loss.loss() {
        Some(l) => l,
        None => match out_act {
            Activation::Softmax => Loss::CrossEntropy,
            Activation::Sigmoid if classes => Loss::BinaryCrossEntropy,
            _ => Loss::SquaredError,
        },
    };
    if out_act == Activation::Softmax && sizes.last() == Some(&1) {
        bail!("a softmax over one output is always 1, so nothing can be learned: give the output layer 2 or more units (one per class), or use --output-activation sigmoid for one output");
    }
    let mut activations = hidden;
    activations.push(out_act);
    Ok(ModelSpec::with_activations(&sizes, activations, loss)?)
}

pub(crate) fn build_config(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let (optimizer, default_lr) = match args.optimizer {
        OptimizerChoice::Sgd => (Optimizer::Sgd, 0.1),
        OptimizerChoice::Momentum => (Optimizer::Momentum { mu: args.momentum }, 0.05),
        OptimizerChoice::Adam => (Optimizer::adam(), 0.001),
    };
    let mut c = TrainConfig::default();
    c.lr = args.lr.unwrap_or(default_lr);
    c.optimizer = optimizer;
    c.l2 = args.l2;
    c.batch_size = args.batch;
    c.epochs = args.epochs;
    c.seed = args.seed;
    c.shuffle = !args.no_shuffle;
    c.schedule = args.schedule.parse::<Schedule>()?;
    c.max_device_memory = args.max_device_memory;
    Ok(c)
}

/// `--max-device-memory`'s value.
fn parse_size(s: &str) -> Result<u64, String> {
    gpumlp::limits::parse_bytes(s).map_err(|e| e.to_string())
}

/// Checks on the flags alone, before any file is read: each must make sense by itself.
fn check_flags(args: &TrainArgs) -> anyhow::Result<()> {
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
fn check_outputs(args: &TrainArgs) -> anyhow::Result<()> {
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

pub(crate) fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |a| format!("{:.2}%", a * 100.0))
}

pub(crate) fn epoch_line(r: &EpochReport, epochs: usize) -> String {
    let mut s = format!(
        "epoch {:>3}/{epochs}  loss {:.4}  acc {}",
        r.epoch,
        r.train_loss,
        percent(r.train_accuracy)
    );
    if let Some(v) = r.val_loss {
        s += &format!("  val_loss {:.4}  val_acc {}", v, percent(r.val_accuracy));
    }
    s + &format!("  lr {:.4}  {:.0} samples/s", r.lr, r.samples_per_second)
}

pub fn run(cli: TrainArgs) -> anyhow::Result<ExitCode> {
    match cli.distributed {
        true => crate::distributed::run(cli),
        false => run_as(cli, None),
    }
}

/// Keeps only what rank 0 does of a distributed run's outputs: the other ranks write no file
/// and print nothing.
fn quiet_unless_root(args: &mut TrainArgs, job: Option<&Job>) {
    if job.is_some_and(|j| !j.is_root()) {
        args.quiet = true;
        args.out = None;
        args.metrics = None;
        args.plot = None;
        args.save_best = None;
    }
}

/// `gpumlp train`, alone or as one rank of a distributed `job`.
pub fn run_as(cli: TrainArgs, job: Option<&Job>) -> anyhow::Result<ExitCode> {
    let cli = match cli.config.clone() {
        Some(path) => crate::config::apply(cli, &path)?,
        None => cli,
    };
    check_flags(&cli)?;
    let resumed = match &cli.resume {
        Some(p) => Some(Checkpoint::load(p)?),
        None => None,
    };
    let args = match &resumed {
        Some(ck) => {
            let args = resume_args(&cli, ck)?;
            check_flags(&args)?;
            args
        }
        None => cli,
    };
    let mut args = args;
    quiet_unless_root(&mut args, job);
    let root = job.is_none_or(|j| j.is_root());
    // Check that outputs can be written, and destroy no input or other output, before reading
    // data or spending time on training.
    check_outputs(&args)?;
    let mut write = WriteOptions::default();
    write.replace_read_only = args.force;
    let device = args.device.device()?;
    let crate::rows::Prepared {
        train,
        val,
        norm,
        class_names,
    } = crate::rows::prepare(&args, resumed.as_ref())?;
    let spec = match &resumed {
        Some(ck) => ck.spec.clone(),
        None => build_spec(&args, train.probe())?,
    };
    let config = build_config(&args)?;
    config.validate()?;
    let batch = config.batch_size.clamp(1, train.rows());
    // The parameters are allocated below (initialized or read): refuse a model that cannot fit.
    spec.check_host_memory(config.optimizer, 0)?;
    // The test set is read and checked against the model now, not after training.
    let test = match &args.test {
        Some(t) => Some(load_test(
            t,
            &spec,
            &norm,
            &args.data,
            class_names.as_deref(),
            &args.csv.options()?,
        )?),
        None => None,
    };
    let params = match (&resumed, &args.init) {
        (Some(ck), _) => ck.params.clone(),
        (None, Some(init)) => load_weights_file(init, &spec)?,
        (None, None) => spec.init_params(args.seed),
    };
    if let (Some(ck), false) = (&resumed, args.quiet) {
        let done = ck.training.as_ref().map_or(0, |t| t.epoch);
        eprintln!(
            "gpumlp: resuming {} after epoch {done} of {}; checkpoints go to {}",
            args.resume.as_ref().expect("resumed").display(),
            args.epochs,
            args.out.as_ref().expect("resume sets --out").display()
        );
    }
    let mut trainer = match job {
        // One rank of an MPI job: its replica (by local rank) inside the job's DataParallel.
        Some(job) => {
            // Streamed rows are fingerprinted by their first rows (the probe).
            let fingerprinted = match &train {
                TrainRows::Memory(d) => d,
                TrainRows::Source { probe, .. } => probe,
            };
            job.check_same_start(&args.data, fingerprinted, val.as_ref(), &params)?;
            let backend = job.place(
                &args.device,
                args.devices.as_deref(),
                &spec,
                config.optimizer,
                batch,
                args.quiet,
            )?;
            Trainer::new(backend, &params, config.clone())?
        }
        // One configuration places the model (optimizer, batch size) and trains it.
        None => {
            let mut builder = Trainer::builder(&spec)
                .device(device.clone())
                .config(config.clone())
                .place_options(args.device.place_options())
                .params(params.clone())
                .train_rows(train.rows());
            if let Some(list) = &args.devices {
                builder = builder.devices(gpumlp::parse_devices(list).context("--devices")?);
            }
            let trainer = builder.build()?;
            if let (Some(reason), false) = (trainer.placement(), args.quiet) {
                let what = if args.devices.is_some() {
                    "devices"
                } else {
                    "device"
                };
                eprintln!("gpumlp: {what}: {reason}");
            }
            trainer
        }
    };
    let device_name = trainer.backend().name();
    if !args.quiet {
        eprintln!(
            "gpumlp: training {} ({}, {}) on {} | {} train / {} validation samples, batch {batch}",
            spec.sizes
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("-"),
            spec.activations
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(","),
            spec.loss,
            device_name,
            train.rows(),
            val.as_ref().map_or(0, |v| v.rows)
        );
    }
    if let Some(k) = args.verify {
        if device == Device::Reference || device_name == "cpu-reference" {
            bail!("--verify compares this run's device with the CPU reference, but this run is on the reference itself");
        }
        let TrainRows::Memory(train) = &train else {
            bail!("--verify compares steps over the training set in memory: run it without --max-device-memory");
        };
        let mut reference = ReferenceBackend::new(&spec, config.optimizer)?;
        let report = verify(
            trainer.backend(),
            &mut reference,
            &params,
            train,
            &config,
            k,
        )?;
        println!("verify: {k} steps on {} vs the CPU reference: largest parameter deviation {:.3e} (worst at [{}], {:.2}× the tolerance), largest loss deviation {:.3e}", report.device, report.params.max_abs_diff, report.params.index, report.params.ratio, report.losses.max_abs_diff);
        if !report.passed() {
            eprintln!(
                "gpumlp: verify FAILED\n{}\n{}",
                report.params, report.losses
            );
            return Ok(ExitCode::from(2));
        }
        println!("verify: passed");
        trainer.backend().set_params(&params)?;
        trainer
            .backend()
            .set_optimizer_state(&gpumlp::OptimizerState {
                m: vec![
                    0.0;
                    if config.optimizer.state_slots() >= 1 {
                        spec.param_count()
                    } else {
                        0
                    }
                ],
                v: vec![
                    0.0;
                    if config.optimizer.state_slots() >= 2 {
                        spec.param_count()
                    } else {
                        0
                    }
                ],
            })?;
    }
    let mut history: Vec<MetricsRecord> = Vec::new();
    if let Some(ck) = &resumed {
        let state = ck.training.as_ref().expect("checked in resume_args");
        trainer.restore(state.epoch, state.steps, &state.optimizer)?;
        if let Some(h) = state.extra.get("history") {
            // A damaged history would silently restart the metrics and the plot: refuse it.
            history = serde_json::from_str(h).with_context(|| {
                format!(
                    "--resume {}: metadata 'extra.history' is not the run's per-epoch metrics: the checkpoint is damaged",
                    args.resume.as_ref().expect("resumed").display()
                )
            })?;
        }
        let done: Vec<_> = history.iter().map(crate::epochs::report_of).collect();
        trainer.replay_schedule(&done);
    }
    match train {
        TrainRows::Memory(train) => trainer.set_train_data(&train)?,
        TrainRows::Source { rows, .. } => {
            let plan = trainer.set_train_source(rows)?;
            if let (DataPlan::Stream { chunk_rows }, false) = (plan, args.quiet) {
                eprintln!(
                    "gpumlp: the training set does not fit {}: streaming it in chunks of {chunk_rows} rows",
                    match args.max_device_memory {
                        Some(cap) => format!("--max-device-memory {}", gpumlp::limits::show_bytes(cap)),
                        None => "in host memory".into(),
                    }
                );
            }
        }
    }
    let run = crate::epochs::Run {
        args: &args,
        spec: &spec,
        norm: &norm,
        val: val.as_ref(),
        class_names,
        write,
    };
    let already = trainer.epoch();
    let finished = run.train(&mut trainer, history)?;
    if let Some(job) = job {
        job.report(args.quiet);
    }
    let history = finished.history;
    if let Some(p) = &args.plot {
        plot(p, &history, write)?;
    }
    if let (Some(why), false) = (&finished.stopped_early, args.quiet) {
        eprintln!("gpumlp: {why}");
    }
    if let (Some(best), true, false) = (finished.best_epoch, args.restore_best, args.quiet) {
        eprintln!(
            "gpumlp: restored the weights of epoch {best}, the best by --monitor {}",
            args.monitor
        );
    }
    // The epoch whose weights the run ends with: the best one where --restore-best restored it.
    let kept = match (finished.best_epoch, args.restore_best) {
        (Some(best), true) => history.iter().find(|r| r.epoch == best),
        _ => history.last(),
    };
    if let (Some(last), true, true) = (kept, trainer.epoch() > already, root) {
        match (last.val_loss, last.val_accuracy) {
            (Some(_), Some(acc)) => println!(
                "held-out accuracy: {:.2}% ({} samples) on {device_name}",
                acc * 100.0,
                val.as_ref().map_or(0, |v| v.rows)
            ),
            (Some(loss), None) => println!(
                "held-out loss: {loss:.6} ({} samples) on {device_name}",
                val.as_ref().map_or(0, |v| v.rows)
            ),
            // The mean of the last epoch's per-step losses, each taken before that step's update
            // (what training saw, not the final weights' loss: `eval` gives that).
            _ => println!(
                "mean training loss over the last epoch's steps (each before its update): {:.6} on {device_name}",
                last.train_loss
            ),
        }
    }
    if let Some(t) = &test {
        // Every rank evaluates (a distributed evaluation is collective); rank 0 prints.
        let s = trainer.evaluate(t)?;
        if !root {
            return Ok(ExitCode::SUCCESS);
        }
        if t.classes().is_some() {
            println!(
                "test accuracy: {:.2}% ({} samples), test loss {:.4}",
                s.accuracy() * 100.0,
                s.samples,
                s.mean_loss()
            );
        } else {
            println!("test loss: {:.6} ({} samples)", s.mean_loss(), s.samples);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--test` set, normalized like the training data and checked against the model (feature
/// count, labels and target widths).
fn load_test(
    test: &str,
    spec: &ModelSpec,
    norm: &Normalization,
    data: &str,
    class_names: Option<&[String]>,
    csv: &CsvOptions,
) -> anyhow::Result<Dataset> {
    let mut t = load_spec_with(test, csv).with_context(|| format!("--test {test}"))?;
    if let Some(names) = class_names {
        t = t.relabel(names).with_context(|| format!("--test {test}"))?;
    }
    if t.cols != spec.inputs() {
        bail!(
            "--test {test}: {} features per sample, but the model takes {} (the features of --data {data}): the test set needs the same columns",
            t.cols,
            spec.inputs()
        );
    }
    norm.apply(&mut t)
        .with_context(|| format!("--test {test}"))?;
    // Checked a chunk at a time: the test set's dense targets are never held whole.
    let mut start = 0;
    while start < t.rows {
        let end = t.rows.min(start + 4096);
        t.dense_targets_rows(spec, start..end)
            .with_context(|| format!("--test {test}: does not fit the model's outputs"))?;
        start = end;
    }
    Ok(t)
}

/// The checkpoint's model on the requested device, with its parameters.
pub fn place_saved(
    ck: &Checkpoint,
    device: &DeviceArgs,
    batch: usize,
) -> anyhow::Result<Box<dyn Backend>> {
    let mut b = device.place(&ck.spec, Optimizer::Sgd, batch, false)?;
    b.set_params(&ck.params)?;
    Ok(b)
}

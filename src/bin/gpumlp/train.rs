//! `gpumlp train`.

mod args;
mod report;

pub use args::TrainArgs;
use report::evaluate_test;
pub(crate) use report::{epoch_line, percent};

use crate::choices::{OptimizerChoice, OutputActivation};
use crate::distributed::Job;
use crate::resume::resume_args;
use crate::rows::TrainRows;
use crate::DeviceArgs;
use anyhow::{bail, Context};
use args::{check_flags, check_outputs};
use gpumlp::checkpoint::{load_weights_file, Checkpoint};
use gpumlp::data::{load_spec_with, CsvOptions, Normalization};
use gpumlp::files::WriteOptions;
use gpumlp::report::MetricsRecord;
use gpumlp::verify::verify;
use gpumlp::{
    Activation, Backend, DataPlan, Dataset, Device, Loss, ModelSpec, Optimizer, ReferenceBackend,
    Schedule, TrainConfig, Trainer,
};
use std::process::ExitCode;

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

/// The training configuration these arguments ask for (optimizer, its default learning rate,
/// schedule, batch, epochs, ...).
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

/// `gpumlp train`: with `--distributed`, as one rank of an MPI job; else alone.
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
    let (args, resumed) = settle_args(cli, job)?;
    let root = job.is_none_or(|j| j.is_root());
    // Check that outputs can be written, and destroy no input or other output, before reading
    // data or spending time on training.
    check_outputs(&args)?;
    let (run, train) = Setup::prepare(args, resumed)?;
    let mut trainer = run.trainer(&train, job)?;
    let device_name = trainer.backend().name();
    run.announce(&train, &device_name);
    if let Some(k) = run.args.verify {
        if !run.verify(&mut trainer, &train, &device_name, k)? {
            return Ok(ExitCode::from(2));
        }
    }
    let history = run.restore(&mut trainer)?;
    feed(&mut trainer, train, &run.args)?;
    let already = trainer.epoch();
    let finished = run.epochs().train(&mut trainer, history)?;
    if let Some(job) = job {
        job.report(run.args.quiet);
    }
    let trained = trainer.epoch() > already;
    run.report_outcome(&finished, trained && root, &device_name)?;
    match &run.test {
        Some(t) => evaluate_test(&mut trainer, t, root),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// The flags the run goes by: the `--config` file's under the command line's, checked, then
/// (with `--resume`) completed from the checkpoint, which is returned too.
fn settle_args(
    cli: TrainArgs,
    job: Option<&Job>,
) -> anyhow::Result<(TrainArgs, Option<Checkpoint>)> {
    let cli = match cli.config.clone() {
        Some(path) => crate::config::apply(cli, &path)?,
        None => cli,
    };
    check_flags(&cli)?;
    let resumed = match &cli.resume {
        Some(p) => Some(Checkpoint::load(p)?),
        None => None,
    };
    let mut args = match &resumed {
        Some(ck) => {
            let args = resume_args(&cli, ck)?;
            check_flags(&args)?;
            args
        }
        None => cli,
    };
    quiet_unless_root(&mut args, job);
    Ok((args, resumed))
}

/// A run once its flags are settled and its data read: what the trainer is built from, and
/// what the run reports against. (The training rows travel apart, so that they are dropped
/// as soon as the trainer holds them.)
struct Setup {
    args: TrainArgs,
    resumed: Option<Checkpoint>,
    device: Device,
    val: Option<Dataset>,
    norm: Normalization,
    class_names: Option<Vec<String>>,
    spec: ModelSpec,
    config: TrainConfig,
    /// `--batch`, at most the training rows.
    batch: usize,
    test: Option<Dataset>,
    /// The starting parameters: the checkpoint's, `--init`'s, or freshly initialized.
    params: Vec<f32>,
    write: WriteOptions,
}

impl Setup {
    /// Reads the data, the test set and the starting parameters, and builds the model and the
    /// training configuration; refuses a model the host cannot hold.
    fn prepare(args: TrainArgs, resumed: Option<Checkpoint>) -> anyhow::Result<(Setup, TrainRows)> {
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
        let setup = Setup {
            args,
            resumed,
            device,
            val,
            norm,
            class_names,
            spec,
            config,
            batch,
            test,
            params,
            write,
        };
        setup.announce_resume();
        Ok((setup, train))
    }

    /// The trainer: this rank's replica inside the `job`'s data parallelism, or the model
    /// placed by one configuration (`--device` or `--devices`).
    fn trainer(&self, train: &TrainRows, job: Option<&Job>) -> anyhow::Result<Trainer> {
        let (args, config) = (&self.args, &self.config);
        let Some(job) = job else {
            return self.placed_trainer(train);
        };
        // Streamed rows are fingerprinted by their first rows (the probe).
        let fingerprinted = match train {
            TrainRows::Memory(d) => d,
            TrainRows::Source { probe, .. } => probe,
        };
        job.check_same_start(&args.data, fingerprinted, self.val.as_ref(), &self.params)?;
        let backend = job.place(
            &args.device,
            args.devices.as_deref(),
            &self.spec,
            config.optimizer,
            self.batch,
            args.quiet,
        )?;
        Ok(Trainer::new(backend, &self.params, config.clone())?)
    }

    /// One configuration places the model (optimizer, batch size) and trains it; says why it
    /// chose the device it did, unless `--quiet`.
    fn placed_trainer(&self, train: &TrainRows) -> anyhow::Result<Trainer> {
        let args = &self.args;
        let mut builder = Trainer::builder(&self.spec)
            .device(self.device.clone())
            .config(self.config.clone())
            .place_options(args.device.place_options())
            .params(self.params.clone())
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
        Ok(trainer)
    }

    /// The held-out samples (0 without a validation set).
    fn val_rows(&self) -> usize {
        self.val.as_ref().map_or(0, |v| v.rows)
    }

    /// `--verify K`: trains the first K steps on this run's device and on the CPU reference
    /// side by side and prints the comparison; on a pass, puts the trainer back where it
    /// started. False where the devices disagree.
    fn verify(
        &self,
        trainer: &mut Trainer,
        train: &TrainRows,
        device_name: &str,
        k: usize,
    ) -> anyhow::Result<bool> {
        if self.device == Device::Reference || device_name == "cpu-reference" {
            bail!("--verify compares this run's device with the CPU reference, but this run is on the reference itself");
        }
        let TrainRows::Memory(train) = train else {
            bail!("--verify compares steps over the training set in memory: run it without --max-device-memory");
        };
        let (spec, config) = (&self.spec, &self.config);
        let mut reference = ReferenceBackend::new(spec, config.optimizer)?;
        let report = verify(
            trainer.backend(),
            &mut reference,
            &self.params,
            train,
            config,
            k,
        )?;
        println!("verify: {k} steps on {} vs the CPU reference: largest parameter deviation {:.3e} (worst at [{}], {:.2}× the tolerance), largest loss deviation {:.3e}", report.device, report.params.max_abs_diff, report.params.index, report.params.ratio, report.losses.max_abs_diff);
        if !report.passed() {
            eprintln!(
                "gpumlp: verify FAILED\n{}\n{}",
                report.params, report.losses
            );
            return Ok(false);
        }
        println!("verify: passed");
        self.reset(trainer)?;
        Ok(true)
    }

    /// Puts the trainer back to the starting parameters with a zero optimizer state.
    fn reset(&self, trainer: &mut Trainer) -> anyhow::Result<()> {
        let slots = self.config.optimizer.state_slots();
        let slot = |n: usize| {
            vec![
                0.0;
                if slots >= n {
                    self.spec.param_count()
                } else {
                    0
                }
            ]
        };
        trainer.backend().set_params(&self.params)?;
        trainer
            .backend()
            .set_optimizer_state(&gpumlp::OptimizerState {
                m: slot(1),
                v: slot(2),
            })?;
        Ok(())
    }

    /// A resumed run's trainer brought to where the checkpoint left it (epoch, steps,
    /// optimizer state, learning-rate schedule); returns the earlier epochs' metrics.
    fn restore(&self, trainer: &mut Trainer) -> anyhow::Result<Vec<MetricsRecord>> {
        let mut history: Vec<MetricsRecord> = Vec::new();
        let Some(ck) = &self.resumed else {
            return Ok(history);
        };
        let state = ck.training.as_ref().expect("checked in resume_args");
        trainer.restore(state.epoch, state.steps, &state.optimizer)?;
        if let Some(h) = state.extra.get("history") {
            // A damaged history would silently restart the metrics and the plot: refuse it.
            history = serde_json::from_str(h).with_context(|| {
                format!(
                    "--resume {}: metadata 'extra.history' is not the run's per-epoch metrics: the checkpoint is damaged",
                    self.args.resume.as_ref().expect("resumed").display()
                )
            })?;
        }
        let done: Vec<_> = history.iter().map(crate::epochs::report_of).collect();
        trainer.replay_schedule(&done);
        Ok(history)
    }

    /// The epoch loop's view of this run.
    fn epochs(&self) -> crate::epochs::Run<'_> {
        crate::epochs::Run {
            args: &self.args,
            spec: &self.spec,
            norm: &self.norm,
            val: self.val.as_ref(),
            class_names: self.class_names.clone(),
            write: self.write,
        }
    }
}

/// Hands the training rows to the trainer (in memory, or as a source it streams in chunks
/// when they do not fit, which it says unless `--quiet`); they are dropped here.
fn feed(trainer: &mut Trainer, train: TrainRows, args: &TrainArgs) -> anyhow::Result<()> {
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
    Ok(())
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

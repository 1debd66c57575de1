//! The training loop, written once against [`Backend`]: seeded shuffling, mini-batches (the
//! last partial batch included), the learning-rate schedule, per-epoch metrics.

use crate::backend::{Backend, BatchStats, OptimizerState};
use crate::data::{Dataset, RowSource};
use crate::error::{Error, Result};
use crate::optim::{Optimizer, PlateauState, Schedule};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

mod builder;
pub use builder::TrainerBuilder;
mod infer;
pub use infer::{check_finite_outputs, evaluate, predict};
mod stream;
pub use stream::DataPlan;
use stream::Steps;

/// How to train.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TrainConfig {
    /// Base learning rate `η`.
    pub lr: f32,
    /// The update rule and its hyper-parameters.
    pub optimizer: Optimizer,
    /// L2 strength `λ`: `E += (λ/2) Σ W²` over weights only.
    pub l2: f32,
    /// Mini-batch size; a batch at least as large as the data trains full-batch.
    pub batch_size: usize,
    /// Epochs to train.
    pub epochs: usize,
    /// Seeds the per-epoch shuffle (initialization has its own seed in [`crate::ModelSpec::init_params`]).
    pub seed: u64,
    /// A fresh seeded shuffle every epoch (on by default).
    pub shuffle: bool,
    /// Learning rate as a function of the epoch.
    pub schedule: Schedule,
    /// The most bytes the trainer may hold on the device (model, optimizer state, batch
    /// buffers and training data, as [`Backend::allocated_bytes`] counts them): a training set
    /// that does not fit streams in chunks (see [`Trainer::set_train_source`]). `None`: no cap.
    pub max_device_memory: Option<u64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            lr: 0.1,
            optimizer: Optimizer::Sgd,
            l2: 0.0,
            batch_size: 32,
            epochs: 10,
            seed: 0,
            shuffle: true,
            schedule: Schedule::Constant,
            max_device_memory: None,
        }
    }
}

impl TrainConfig {
    /// Checks the configuration before training.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the batch size is 0, the learning rate is not a positive number, L2 is negative or not finite, the schedule takes the rate to 0 (or non-finite) by the last epoch, or momentum is outside [0, 1).
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::InvalidConfig("batch size must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::InvalidConfig(format!(
                "learning rate must be a positive number, got {}",
                self.lr
            )));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(Error::InvalidConfig(format!(
                "L2 must be ≥ 0, got {}",
                self.l2
            )));
        }
        if self.epochs > 0 {
            // Every schedule decays (checked when parsed), so the last epoch's rate is the least.
            let last = self.schedule.lr(self.lr, self.epochs - 1);
            if !(last.is_finite() && last > 0.0) {
                return Err(Error::InvalidConfig(format!(
                    "the schedule {:?} takes the learning rate {} down to {last} by epoch {}: it would stop training; use a gentler decay or fewer epochs",
                    self.schedule, self.lr, self.epochs
                )));
            }
        }
        if let Optimizer::Momentum { mu } = self.optimizer {
            if !(0.0..1.0).contains(&mu) {
                return Err(Error::InvalidConfig(format!(
                    "momentum must be in [0, 1), got {mu}"
                )));
            }
        }
        Ok(())
    }
}

/// Refuses a configuration whose optimizer keeps other state than the one `backend` was placed
/// with: the kinds differ in their state slots (SGD none, momentum one, Adam two).
fn check_optimizer(backend: &mut dyn Backend, config: &TrainConfig) -> Result<()> {
    let state = backend.optimizer_state()?;
    let slots = usize::from(!state.m.is_empty()) + usize::from(!state.v.is_empty());
    let params = backend.spec().param_count();
    if params > 0 && slots != config.optimizer.state_slots() {
        let placed = ["sgd", "momentum", "adam"]
            .get(slots)
            .unwrap_or(&"another optimizer");
        return Err(Error::InvalidConfig(format!(
            "the backend was placed for {placed}, but the configuration trains with {}: place it with the configuration's optimizer (Trainer::builder does)",
            config.optimizer.name()
        )));
    }
    Ok(())
}

/// The visiting order of `rows` training rows in epoch `epoch`: a seeded shuffle, or in order.
/// Each epoch has its own ChaCha8 stream, so a resumed run shuffles exactly as an unbroken one.
pub fn epoch_order(rows: usize, seed: u64, epoch: usize, shuffle: bool) -> Vec<u32> {
    let mut order: Vec<u32> = (0..rows as u32).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch as u64 + 1);
        order.shuffle(&mut rng);
    }
    order
}

/// What one epoch did.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// `None` for regression.
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
}

/// What a [`Trainer::fit`] callback returns: `()` to go on, or a [`ControlFlow`] that may stop.
pub trait EpochControl {
    /// `Continue` to train on, `Break` to stop after this epoch.
    fn control_flow(self) -> ControlFlow<()>;
}

impl EpochControl for () {
    fn control_flow(self) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

impl EpochControl for ControlFlow<()> {
    fn control_flow(self) -> ControlFlow<()> {
        self
    }
}

/// Trains a model placed on any backend.
pub struct Trainer {
    backend: Box<dyn Backend>,
    config: TrainConfig,
    /// Epochs completed so far.
    epoch: usize,
    /// Optimizer steps taken so far (Adam's `t`).
    steps: u64,
    train_rows: usize,
    /// Whether accuracy means something: class targets or a classification loss.
    classification: bool,
    /// The state of a reduce-on-plateau schedule.
    plateau: PlateauState,
    /// Which device [`Trainer::builder`] chose and why.
    placement: Option<String>,
    /// The training rows when they stream, with the rows per chunk.
    stream: Option<(Arc<dyn RowSource>, usize)>,
}

impl Trainer {
    /// A trainer for a `backend` placed by hand, starting from `params` ([P], e.g.
    /// `spec.init_params(seed)`). The backend must have been placed with `config.optimizer`
    /// and for batches of `config.batch_size` rows: [`Trainer::builder`] does both, from the
    /// one configuration.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad configuration or one whose optimizer keeps another
    /// state than the backend's (e.g. Adam on a backend placed for SGD), [`Error::Shape`] for
    /// parameters of the wrong length.
    pub fn new(mut backend: Box<dyn Backend>, params: &[f32], config: TrainConfig) -> Result<Self> {
        config.validate()?;
        backend.set_params(params)?;
        check_optimizer(backend.as_mut(), &config)?;
        Ok(Trainer {
            backend,
            config,
            epoch: 0,
            steps: 0,
            train_rows: 0,
            classification: false,
            plateau: PlateauState::default(),
            placement: None,
            stream: None,
        })
    }

    /// Which device [`Trainer::builder`] chose and why (`None` for [`Trainer::new`]). The
    /// library prints nothing; `gpumlp` prints this on stderr unless `--quiet`.
    pub fn placement(&self) -> Option<&str> {
        self.placement.as_deref()
    }

    /// The backend the model is placed on.
    pub fn backend(&mut self) -> &mut dyn Backend {
        self.backend.as_mut()
    }
    /// The training configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }
    /// Epochs completed.
    pub fn epoch(&self) -> usize {
        self.epoch
    }
    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }
    /// Continue a run from a saved point (see the checkpoint module).
    /// Rebuilds a reduce-on-plateau schedule's state from the epochs a resumed run already
    /// trained: each one's validation loss, or its training loss where it had no validation.
    pub fn replay_schedule(&mut self, epochs: &[EpochReport]) {
        self.plateau = PlateauState::default();
        for r in epochs {
            self.plateau
                .update(&self.config.schedule, r.val_loss.unwrap_or(r.train_loss));
        }
    }

    /// Continues a run from a saved point: sets the optimizer state and the epoch and step counters.
    ///
    /// # Errors
    /// When the backend refuses `state` (its slots or lengths do not match the placed optimizer and model).
    pub fn restore(&mut self, epoch: usize, steps: u64, state: &OptimizerState) -> Result<()> {
        self.backend.set_optimizer_state(state)?;
        self.epoch = epoch;
        self.steps = steps;
        Ok(())
    }

    /// Uploads the training set once; later epochs reuse it. With
    /// [`TrainConfig::max_device_memory`] set, a set that does not fit the cap streams from a
    /// copy (as [`Trainer::set_train_source`] does).
    pub fn set_train_data(&mut self, train: &Dataset) -> Result<()> {
        if self.config.max_device_memory.is_some() {
            train.validate()?;
            if let DataPlan::Stream { .. } = self.plan_data(train.rows, false)? {
                return self.set_train_source(Arc::new(train.clone())).map(|_| ());
            }
        }
        self.upload_train_data(train)
    }

    /// [`Trainer::set_train_data`] without a plan: the whole set goes to the backend.
    fn upload_train_data(&mut self, train: &Dataset) -> Result<()> {
        train.validate()?;
        if u32::try_from(train.rows).is_err() {
            // Epoch orders are u32 row indices (the Backend trait's `begin_epoch`).
            return Err(Error::InvalidData(format!(
                "{} training rows are more than the {} a training set may have: use a subset",
                train.rows,
                u32::MAX
            )));
        }
        let t = train.dense_targets(self.backend.spec())?;
        // The backend keeps its own copy of the features and dense targets.
        crate::limits::check_host_bytes(
            &format!("the training set on the backend ({} rows)", train.rows),
            crate::limits::bytes_of(
                &[
                    train.rows,
                    train.cols.saturating_add(self.backend.spec().outputs()),
                ],
                4,
            ),
            "use a smaller training set",
        )?;
        self.backend
            .set_train_data(&train.features, &t, train.rows)?;
        self.stream = None;
        self.train_rows = train.rows;
        self.classification = train.classes().is_some() || self.backend.spec().is_classifier();
        Ok(())
    }

    /// Runs the next epoch over the data given to [`Trainer::set_train_data`].
    ///
    /// # Errors
    /// No training data, a device error, or [`Error::Diverged`].
    pub fn run_epoch(&mut self, val: Option<&Dataset>) -> Result<EpochReport> {
        self.run_epoch_with(val, |_, _| {}, || false)
    }

    /// Steps in one epoch over the current training data.
    pub fn steps_per_epoch(&self) -> usize {
        self.train_rows
            .div_ceil(self.config.batch_size.min(self.train_rows).max(1))
    }

    /// [`Trainer::run_epoch`], calling `on_step(done, total)` as each step is queued (for a
    /// progress bar; steps are queued without any readback, so no loss is known yet).
    ///
    /// # Errors
    /// As [`Trainer::run_epoch`].
    pub fn run_epoch_observed(
        &mut self,
        val: Option<&Dataset>,
        on_step: impl FnMut(usize, usize),
    ) -> Result<EpochReport> {
        self.run_epoch_with(val, on_step, || false)
    }

    /// [`Trainer::run_epoch`], asking `stop` before every step (e.g. whether Ctrl-C was
    /// pressed). When it says `true` the epoch ends there with [`Error::Interrupted`]: the steps
    /// already taken stay applied (parameters, optimizer state, step count), the epoch count does
    /// not advance, and the trainer is ready for another epoch.
    ///
    /// # Errors
    /// As [`Trainer::run_epoch`], and [`Error::Interrupted`].
    pub fn run_epoch_until(
        &mut self,
        val: Option<&Dataset>,
        stop: impl FnMut() -> bool,
    ) -> Result<EpochReport> {
        self.run_epoch_with(val, |_, _| {}, stop)
    }

    fn run_epoch_with(
        &mut self,
        val: Option<&Dataset>,
        mut on_step: impl FnMut(usize, usize),
        mut stop: impl FnMut() -> bool,
    ) -> Result<EpochReport> {
        if self.train_rows == 0 {
            return Err(Error::InvalidConfig(
                "no training data: call set_train_data first".into(),
            ));
        }
        self.backend.spec().check_trainable()?;
        let started = Instant::now();
        let lr = self.epoch_lr()?;
        let per_step = self.train_steps(lr, &mut on_step, &mut stop)?;
        let total = self.sum_steps(&per_step)?;
        let classifier = self.classification;
        let (val_loss, val_accuracy) = match val {
            Some(v) => {
                let s = self.evaluate(v)?;
                (Some(s.mean_loss()), classifier.then(|| s.accuracy()))
            }
            None => (None, None),
        };
        self.epoch += 1;
        let train_loss = total.mean_loss();
        self.plateau
            .update(&self.config.schedule, val_loss.unwrap_or(train_loss));
        let seconds = started.elapsed().as_secs_f64();
        Ok(EpochReport {
            epoch: self.epoch,
            train_loss,
            train_accuracy: classifier.then(|| total.accuracy()),
            val_loss,
            val_accuracy,
            lr,
            seconds,
            samples_per_second: self.train_rows as f64 / seconds.max(1e-9),
        })
    }

    /// The learning rate for the coming epoch: the schedule's, scaled by the plateau rule;
    /// refused unless finite and positive.
    fn epoch_lr(&self) -> Result<f32> {
        let c = &self.config;
        let lr = (c.schedule.lr(c.lr, self.epoch) as f64 * self.plateau.scale) as f32;
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::InvalidConfig(format!(
                "the schedule gives learning rate {lr} at epoch {}",
                self.epoch + 1
            )));
        }
        Ok(lr)
    }

    /// Takes this epoch's steps over the training rows in its shuffled order, streaming them in
    /// chunks when the data is streamed; returns each step's stats.
    fn train_steps(
        &mut self,
        lr: f32,
        on_step: &mut impl FnMut(usize, usize),
        stop: &mut impl FnMut() -> bool,
    ) -> Result<Vec<BatchStats>> {
        let c = &self.config;
        let order = epoch_order(self.train_rows, c.seed, self.epoch, c.shuffle);
        let (optimizer, l2, batch_size) = (c.optimizer, c.l2, c.batch_size);
        let hyper = move |steps: u64| optimizer.hyper(lr, steps, l2);
        if let Some((source, chunk)) = self.stream.clone() {
            return stream::epoch(self, &*source, chunk, &order, hyper, on_step, stop);
        }
        self.backend.begin_epoch(&order)?;
        let mut steps = Steps::new(self.train_rows, batch_size, self.epoch);
        steps.run(
            self.backend.as_mut(),
            &mut self.steps,
            0..self.train_rows,
            hyper,
            on_step,
            stop,
        )?;
        self.backend.finish_epoch()
    }

    /// The sum of an epoch's step stats, or [`Error::Diverged`] at the first step whose loss is
    /// not finite.
    fn sum_steps(&self, per_step: &[BatchStats]) -> Result<BatchStats> {
        let mut total = BatchStats::default();
        for (i, s) in per_step.iter().enumerate() {
            if !s.loss_sum.is_finite() {
                return Err(Error::Diverged {
                    epoch: self.epoch + 1,
                    step: i + 1,
                    value: s.loss_sum,
                });
            }
            total.add(s);
        }
        Ok(total)
    }

    /// Trains for the configured number of epochs (counting those already done), calling
    /// `on_epoch` after each. The callback may return nothing, or a [`ControlFlow`]:
    /// `ControlFlow::Break(())` stops training after that epoch (e.g. with an
    /// [`crate::EarlyStopping`]).
    ///
    /// # Errors
    /// Bad data or configuration, a device error, or [`Error::Diverged`] when the loss stops
    /// being finite.
    pub fn fit<C: EpochControl>(
        &mut self,
        train: &Dataset,
        val: Option<&Dataset>,
        mut on_epoch: impl FnMut(&EpochReport) -> C,
    ) -> Result<Vec<EpochReport>> {
        self.set_train_data(train)?;
        let mut reports = Vec::new();
        while self.epoch < self.config.epochs {
            let r = self.run_epoch(val)?;
            let flow = on_epoch(&r).control_flow();
            reports.push(r);
            if flow.is_break() {
                break;
            }
        }
        Ok(reports)
    }

    /// Summed loss and correct count on a dataset (see [`evaluate`]).
    pub fn evaluate(&mut self, data: &Dataset) -> Result<BatchStats> {
        evaluate(self.backend.as_mut(), data)
    }

    /// y: [rows, out] for x: [rows, in] (see [`predict`]).
    pub fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        predict(self.backend.as_mut(), x, rows)
    }

    /// params: [P].
    pub fn params(&mut self) -> Result<Vec<f32>> {
        self.backend.params()
    }
}

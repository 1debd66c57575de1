//! The training loop, written once against [`Backend`]: seeded shuffling, mini-batches (the
//! last partial batch included), the learning-rate schedule, per-epoch metrics.

use crate::backend::{Backend, BatchStats, OptimizerState};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::optim::{Optimizer, Schedule};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// How to train.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Base learning rate `η`.
    pub lr: f32,
    pub optimizer: Optimizer,
    /// L2 strength `λ`: `E += (λ/2) Σ W²` over weights only.
    pub l2: f32,
    /// Mini-batch size; a batch at least as large as the data trains full-batch.
    pub batch_size: usize,
    pub epochs: usize,
    /// Seeds the per-epoch shuffle (initialization has its own seed in [`crate::ModelSpec::init_params`]).
    pub seed: u64,
    /// A fresh seeded shuffle every epoch (on by default).
    pub shuffle: bool,
    pub schedule: Schedule,
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
        }
    }
}

impl TrainConfig {
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
    pub train_loss: f64,
    /// `None` for regression.
    pub train_accuracy: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub lr: f32,
    pub seconds: f64,
    pub samples_per_second: f64,
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
}

impl Trainer {
    /// A trainer for `backend`, starting from `params` ([P], e.g. `spec.init_params(seed)`).
    pub fn new(mut backend: Box<dyn Backend>, params: &[f32], config: TrainConfig) -> Result<Self> {
        config.validate()?;
        backend.set_params(params)?;
        Ok(Trainer {
            backend,
            config,
            epoch: 0,
            steps: 0,
            train_rows: 0,
            classification: false,
        })
    }

    pub fn backend(&mut self) -> &mut dyn Backend {
        self.backend.as_mut()
    }
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
    pub fn restore(&mut self, epoch: usize, steps: u64, state: &OptimizerState) -> Result<()> {
        self.backend.set_optimizer_state(state)?;
        self.epoch = epoch;
        self.steps = steps;
        Ok(())
    }

    /// Uploads the training set once; later epochs reuse it.
    pub fn set_train_data(&mut self, train: &Dataset) -> Result<()> {
        train.validate()?;
        let t = train.dense_targets(self.backend.spec())?;
        self.backend
            .set_train_data(&train.features, &t, train.rows)?;
        self.train_rows = train.rows;
        self.classification = train.classes().is_some() || self.backend.spec().is_classifier();
        Ok(())
    }

    /// Runs the next epoch over the data given to [`Trainer::set_train_data`].
    pub fn run_epoch(&mut self, val: Option<&Dataset>) -> Result<EpochReport> {
        self.run_epoch_until(val, || false)
    }

    /// [`Trainer::run_epoch`], asking `stop` before every step (e.g. whether Ctrl-C was
    /// pressed). When it says `true` the epoch ends there with [`Error::Interrupted`]: the steps
    /// already taken stay applied (parameters, optimizer state, step count), the epoch count does
    /// not advance, and the trainer is ready for another epoch.
    pub fn run_epoch_until(
        &mut self,
        val: Option<&Dataset>,
        mut stop: impl FnMut() -> bool,
    ) -> Result<EpochReport> {
        if self.train_rows == 0 {
            return Err(Error::InvalidConfig(
                "no training data: call set_train_data first".into(),
            ));
        }
        self.backend.spec().check_trainable()?;
        let started = Instant::now();
        let c = &self.config;
        let lr = c.schedule.lr(c.lr, self.epoch);
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::InvalidConfig(format!(
                "the schedule gives learning rate {lr} at epoch {}",
                self.epoch + 1
            )));
        }
        let order = epoch_order(self.train_rows, c.seed, self.epoch, c.shuffle);
        self.backend.begin_epoch(&order)?;
        let batch = c.batch_size.min(self.train_rows);
        let mut start = 0;
        let mut taken = 0;
        while start < self.train_rows {
            if stop() {
                self.backend.finish_epoch()?;
                return Err(Error::Interrupted {
                    epoch: self.epoch + 1,
                    step: taken,
                });
            }
            taken += 1;
            let len = batch.min(self.train_rows - start);
            self.steps += 1;
            let hyper = c.optimizer.hyper(lr, self.steps, c.l2);
            self.backend.step(start, len, &hyper)?;
            start += len;
        }
        let per_step = self.backend.finish_epoch()?;
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
        let classifier = self.classification;
        let (val_loss, val_accuracy) = match val {
            Some(v) => {
                let s = self.evaluate(v)?;
                (Some(s.mean_loss()), classifier.then(|| s.accuracy()))
            }
            None => (None, None),
        };
        self.epoch += 1;
        let seconds = started.elapsed().as_secs_f64();
        Ok(EpochReport {
            epoch: self.epoch,
            train_loss: total.mean_loss(),
            train_accuracy: classifier.then(|| total.accuracy()),
            val_loss,
            val_accuracy,
            lr,
            seconds,
            samples_per_second: self.train_rows as f64 / seconds.max(1e-9),
        })
    }

    /// Trains for the configured number of epochs (counting those already done), calling
    /// `on_epoch` after each.
    pub fn fit(
        &mut self,
        train: &Dataset,
        val: Option<&Dataset>,
        mut on_epoch: impl FnMut(&EpochReport),
    ) -> Result<Vec<EpochReport>> {
        self.set_train_data(train)?;
        let mut reports = Vec::new();
        while self.epoch < self.config.epochs {
            let r = self.run_epoch(val)?;
            on_epoch(&r);
            reports.push(r);
        }
        Ok(reports)
    }

    /// Summed loss and correct count on a dataset.
    pub fn evaluate(&mut self, data: &Dataset) -> Result<BatchStats> {
        data.validate()?;
        let t = data.dense_targets(self.backend.spec())?;
        self.backend.evaluate(&data.features, &t, data.rows)
    }

    /// y: [rows, out] for x: [rows, in].
    pub fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.backend.predict(x, rows)
    }

    /// params: [P].
    pub fn params(&mut self) -> Result<Vec<f32>> {
        self.backend.params()
    }
}

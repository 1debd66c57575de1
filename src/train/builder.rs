//! One way to set a run up: [`Trainer::builder`] places the model with the configuration's
//! optimizer and batch size, so the two cannot disagree.

use super::{TrainConfig, Trainer};
use crate::error::Result;
use crate::model::ModelSpec;
use crate::{place_replicas, place_with, AdapterSelector, Device, PlaceOptions};

/// Builds a [`Trainer`]: the model, where it runs, how it trains and where it starts.
///
/// ```
/// use gpumlp::{Activation, Device, Loss, ModelSpec, TrainConfig, Trainer};
///
/// let spec = ModelSpec::new(&[2, 4, 1], Activation::Tanh, Activation::Sigmoid, Loss::SquaredError)?;
/// let mut config = TrainConfig::default();
/// config.batch_size = 4;
/// let trainer = Trainer::builder(&spec).device(Device::Cpu).config(config).build()?;
/// assert_eq!(trainer.config().batch_size, 4);
/// # Ok::<(), gpumlp::Error>(())
/// ```
#[must_use = "a builder does nothing until .build()"]
#[derive(Clone, Debug)]
pub struct TrainerBuilder {
    spec: ModelSpec,
    device: Device,
    replicas: Option<Vec<Device>>,
    config: TrainConfig,
    options: PlaceOptions,
    params: Option<Vec<f32>>,
    init_seed: Option<u64>,
    train_rows: Option<usize>,
}

impl Trainer {
    /// A builder for a trainer of `spec`: [`Device::Auto`], [`TrainConfig::default`], and
    /// parameters initialized with the configuration's seed, unless told otherwise.
    pub fn builder(spec: &ModelSpec) -> TrainerBuilder {
        TrainerBuilder {
            spec: spec.clone(),
            device: Device::Auto(AdapterSelector::default()),
            replicas: None,
            config: TrainConfig::default(),
            options: PlaceOptions::default(),
            params: None,
            init_seed: None,
            train_rows: None,
        }
    }
}

impl TrainerBuilder {
    /// Where to place the model (default [`Device::Auto`]).
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// Train data-parallel on these devices, one replica each (see [`place_replicas`]):
    /// every global batch is sharded across them. Replaces [`Self::device`].
    pub fn devices(mut self, devices: Vec<Device>) -> Self {
        self.replicas = Some(devices);
        self
    }

    /// How to train; its optimizer and batch size also size the placed model.
    pub fn config(mut self, config: TrainConfig) -> Self {
        self.config = config;
        self
    }

    /// Placement options beyond the device (CPU threads).
    pub fn place_options(mut self, options: PlaceOptions) -> Self {
        self.options = options;
        self
    }

    /// Start from these parameters ([P], the layout of [`ModelSpec::layout`]) instead of a
    /// fresh initialization.
    pub fn params(mut self, params: Vec<f32>) -> Self {
        self.params = Some(params);
        self
    }

    /// Initialize the parameters with this seed ([`ModelSpec::init_params`]) rather than the
    /// configuration's shuffle seed.
    pub fn init_seed(mut self, seed: u64) -> Self {
        self.init_seed = Some(seed);
        self
    }

    /// The training set will have `rows` rows: a batch size above it trains full-batch, so the
    /// device is sized for `min(batch_size, rows)` rows instead of the batch size.
    pub fn train_rows(mut self, rows: usize) -> Self {
        self.train_rows = Some(rows);
        self
    }

    /// Checks the configuration, places the model with the configuration's optimizer and
    /// batch size, and sets its starting parameters. [`Trainer::placement`] then says which
    /// device was chosen and why.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] or [`crate::Error::InvalidModel`] for a bad
    /// configuration or model, [`crate::Error::Shape`] for parameters of the wrong length, a
    /// device error (e.g. [`crate::Error::NoAdapter`]) or [`crate::Error::TooLarge`].
    pub fn build(self) -> Result<Trainer> {
        self.config.validate()?;
        self.spec.validate()?;
        let max_batch = match self.train_rows {
            Some(rows) => self.config.batch_size.min(rows),
            None => self.config.batch_size,
        }
        .max(1);
        let placed = match &self.replicas {
            Some(devices) => place_replicas(
                devices,
                &self.spec,
                self.config.optimizer,
                max_batch,
                &self.options,
            )?,
            None => place_with(
                &self.device,
                &self.spec,
                self.config.optimizer,
                max_batch,
                &self.options,
            )?,
        };
        let params = match self.params {
            Some(p) => p,
            None => self
                .spec
                .init_params(self.init_seed.unwrap_or(self.config.seed)),
        };
        let mut trainer = Trainer::new(placed.backend, &params, self.config)?;
        trainer.placement = Some(placed.reason);
        Ok(trainer)
    }
}

//! Checkpoints as safetensors files, the format PyTorch and Hugging Face use.
//!
//! Tensors (float32): `layers.{i}.weight` with shape `[out, in]` (PyTorch's `nn.Linear`
//! layout, the transpose of our `W: [in, out]`) and `layers.{i}.bias` `[out]`; with training
//! state also `optimizer.m` and `optimizer.v` (`[P]`, our flat parameter layout). The header's
//! metadata holds the layer sizes, activations, loss, normalization statistics, format version
//! and, for a resumable checkpoint, the epoch, step count and RNG state; a classifier may also
//! carry its class names (`class_names`, a JSON list: output `k` is `class_names[k]`).

mod metadata;
mod tensors;

pub use tensors::{load_weights_file, read_safetensors};

use crate::backend::OptimizerState;
use crate::data::Normalization;
use crate::error::{Error, Result};
use crate::files::{atomic_write_with, WriteOptions};
use crate::model::ModelSpec;
use metadata::Metadata;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// The version written into every checkpoint's metadata (`format_version`).
pub const FORMAT_VERSION: &str = "1";

/// Where a run stands, for `--resume`.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken (Adam's `t`).
    pub steps: u64,
    /// The shuffle seed; epoch `e` shuffles with ChaCha8 stream `e + 1` of it, so this and the
    /// epoch are the whole RNG state.
    pub seed: u64,
    /// The optimizer's per-parameter state (`m`, `v`) at that point.
    pub optimizer: OptimizerState,
    /// Anything else the caller needs to continue (the command line stores its arguments).
    pub extra: HashMap<String, String>,
}

/// A saved model: its description, parameters, normalization and (optionally) training state.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The network: layer widths, activations and loss.
    pub spec: ModelSpec,
    /// [P] in [`ModelSpec::layout`] order.
    pub params: Vec<f32>,
    /// The feature normalization fitted on the training data, if any.
    pub normalization: Option<Normalization>,
    /// Where training stopped, for resuming; `None` for a model saved only to predict.
    pub training: Option<TrainingState>,
    /// The class names, output `k` (or class `k` of a one-output sigmoid) being `class_names[k]`;
    /// `None` when classes are just their indices. Saved as the metadata `class_names` (a JSON list
    /// of strings), so a Python model's `classes_` (strings included) round-trips.
    pub class_names: Option<Vec<String>>,
}

/// `message` as an error about the checkpoint at `path`.
fn ck_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl Checkpoint {
    /// The safetensors bytes of this checkpoint.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors = tensors::layer_tensors(&self.spec, &self.params);
        let meta = metadata::encode(self)?;
        if let Some(t) = &self.training {
            for (name, v) in [
                ("optimizer.m", &t.optimizer.m),
                ("optimizer.v", &t.optimizer.v),
            ] {
                if !v.is_empty() {
                    tensors.push(tensors::flat_tensor(name, v));
                }
            }
        }
        tensors::serialize(&tensors, meta)
    }

    /// Saves atomically (temporary file, then rename), refusing a read-only target; see
    /// [`crate::files`] for what every write promises.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_with(path, WriteOptions::default())
    }

    /// [`Checkpoint::save`] with explicit [`WriteOptions`].
    pub fn save_with(&self, path: &Path, options: WriteOptions) -> Result<()> {
        let bytes = self.to_bytes()?;
        atomic_write_with(path, options, |f| f.write_all(&bytes))
    }

    /// Loads a checkpoint written by [`Checkpoint::save`], checking every tensor.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_safetensors(path)?;
        let meta = Metadata::read(path, &bytes)?;
        let spec = meta.spec()?;
        let params = tensors::load_weights(path, &bytes, &spec)?;
        let normalization = meta.normalization(&spec)?;
        let training = meta.training(&bytes, &spec)?;
        let class_names = meta.class_names(&spec)?;
        Ok(Checkpoint {
            spec,
            params,
            normalization,
            training,
            class_names,
        })
    }
}

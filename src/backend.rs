//! The one interface both backends implement; the trainer is written once against it.

use crate::error::Result;
use crate::model::ModelSpec;
use crate::optim::StepHyper;

/// Summed loss and correct count over some samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchStats {
    /// `Σ_samples J` (not yet divided by `samples`).
    pub loss_sum: f64,
    /// Samples whose prediction was correct (by the loss's accuracy rule).
    pub correct: u64,
    /// Samples summed over.
    pub samples: u64,
}

impl BatchStats {
    /// `loss_sum / samples` (0 when there are no samples).
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.samples.max(1) as f64
    }
    /// `correct / samples` in [0, 1] (0 when there are no samples).
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.samples.max(1) as f64
    }
    /// Adds `other`'s sums and counts to `self`.
    pub fn add(&mut self, other: &BatchStats) {
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.samples += other.samples;
    }
}

/// Optimizer state per parameter: `m` (momentum's velocity or Adam's first moment) and `v`
/// (Adam's second moment), each `[P]` or empty when the optimizer has no such slot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState {
    /// Momentum's velocity or Adam's first moment: `[P]`, or empty for SGD.
    pub m: Vec<f32>,
    /// Adam's second moment: `[P]`, or empty unless Adam.
    pub v: Vec<f32>,
}

impl OptimizerState {
    /// Checks that `self` has the slots an optimizer with `slots` state vectors keeps for
    /// `params` parameters (`m` when `slots ≥ 1`, `v` when `slots ≥ 2`, else empty).
    ///
    /// # Errors
    /// [`crate::Error::Shape`] naming both shapes.
    pub fn check_shape(&self, slots: usize, params: usize) -> Result<()> {
        let want = |n: usize| if slots >= n { params } else { 0 };
        if self.m.len() != want(1) || self.v.len() != want(2) {
            return Err(crate::error::Error::shape(
                "optimizer state",
                format!("m: {}, v: {}", want(1), want(2)),
                format!("m: {}, v: {}", self.m.len(), self.v.len()),
            ));
        }
        Ok(())
    }
}

/// Copies `src` into `dst`, which must be as long. dst, src: [P].
pub(crate) fn set_params_checked(dst: &mut [f32], src: &[f32]) -> Result<()> {
    if src.len() != dst.len() {
        return Err(crate::error::Error::shape(
            "parameters",
            dst.len(),
            src.len(),
        ));
    }
    dst.copy_from_slice(src);
    Ok(())
}

/// Checks that a gradient buffer holds the model's `params` values. grad: [P].
pub(crate) fn check_gradient_len(grad: &[f32], params: usize) -> Result<()> {
    if grad.len() != params {
        return Err(crate::error::Error::shape("gradient", params, grad.len()));
    }
    Ok(())
}

/// Checks that a split step's shard `start..start + len` lies in the epoch's `rows` and within
/// a global batch of `global_batch` rows.
pub(crate) fn check_shard(
    start: usize,
    len: usize,
    global_batch: usize,
    rows: usize,
) -> Result<()> {
    if global_batch == 0 || len > global_batch || start.checked_add(len).is_none_or(|e| e > rows) {
        return Err(crate::error::Error::InvalidConfig(format!(
            "shard rows {start}..{} of a global batch of {global_batch} must lie inside the epoch's {rows} rows",
            start.saturating_add(len)
        )));
    }
    Ok(())
}

/// A model placed on a device, ready to train. Every call is checked; nothing panics on user
/// input. Parameters use the layout of [`ModelSpec::layout`].
///
/// `Send`, so a placed model can train on another thread (or from Python with the GIL released).
pub trait Backend: Send {
    /// The device, e.g. `cpu-reference` or `vulkan: llvmpipe (LLVM 15.0.6, 256 bits)`.
    fn name(&self) -> String;
    /// The model this backend was placed with.
    fn spec(&self) -> &ModelSpec;

    /// params: [P]
    fn set_params(&mut self, params: &[f32]) -> Result<()>;
    /// params: [P] (a readback on the GPU).
    fn params(&mut self) -> Result<Vec<f32>>;
    /// Replaces the optimizer state (`m`, `v`: each `[P]` or empty, per the optimizer's slots).
    ///
    /// # Errors
    /// When the slots or lengths do not match the placed optimizer and model.
    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()>;
    /// The optimizer state (a readback on the GPU).
    fn optimizer_state(&mut self) -> Result<OptimizerState>;

    /// Stores the training set on the device once. x: [rows, in]; t: [rows, out] dense targets.
    fn set_train_data(&mut self, x: &[f32], t: &[f32], rows: usize) -> Result<()>;
    /// Starts an epoch that visits the training rows in `order` ([rows], a permutation).
    fn begin_epoch(&mut self, order: &[u32]) -> Result<()>;
    /// One step (forward, loss, backward, update) on rows `order[start..start + len]`, queued
    /// without any readback.
    fn step(&mut self, start: usize, len: usize, hyper: &StepHyper) -> Result<()>;
    /// The loss and correct count of each step since `begin_epoch`, read back once.
    fn finish_epoch(&mut self) -> Result<Vec<BatchStats>>;

    /// The first half of a data-parallel step: forward, loss and backward on rows
    /// `order[start..start + len]` of the epoch's order, leaving on the device the data gradient
    /// `(1/global_batch)·Σ_shard ∇J` ([P]: no `λW`, no update). Its loss and correct count are
    /// recorded for `finish_epoch` as one step of `len` samples. `len == 0` (an empty shard) is
    /// allowed: a zero gradient and empty stats. `hyper` is the step's (its `l2` is not used
    /// here). `backward_shard(s, n, n, h)`, `shard_gradient`, `apply_gradient(g, h)` is `step`.
    fn backward_shard(
        &mut self,
        start: usize,
        len: usize,
        global_batch: usize,
        hyper: &StepHyper,
    ) -> Result<()>;
    /// Reads back the gradient the last `backward_shard` left. out: [P].
    fn shard_gradient(&mut self, out: &mut [f32]) -> Result<()>;
    /// The second half: uploads grad: [P] (the gradient summed over every shard), adds `λW` on
    /// the weights (not the biases) as `step` does, and applies the optimizer update with
    /// `hyper` (whose bias corrections carry the step count, as for `step`).
    fn apply_gradient(&mut self, grad: &[f32], hyper: &StepHyper) -> Result<()>;
    /// Streaming: makes x: [rows, in], t: [rows, out] (one chunk of an epoch, its rows already
    /// in the epoch's order) the rows the next steps train on, `step(start, len)` counting
    /// from the chunk's first row. Steps queued on the previous chunk still train on its rows.
    /// An epoch is a sequence of `load_chunk` and steps, with [`Backend::finish_chunk`] between
    /// chunks, ended by `finish_epoch`.
    ///
    /// The default replaces the training set with the chunk and starts an epoch over it in
    /// order; the GPU backend overrides it with two device slots, so that uploading chunk
    /// c + 1 overlaps the steps of chunk c.
    fn load_chunk(&mut self, x: &[f32], t: &[f32], rows: usize) -> Result<()> {
        self.set_train_data(x, t, rows)?;
        let order = u32::try_from(rows)
            .map(|n| (0..n).collect::<Vec<u32>>())
            .map_err(|_| {
                crate::error::Error::InvalidConfig(format!(
                    "a chunk of {rows} rows is more than {} rows",
                    u32::MAX
                ))
            })?;
        self.begin_epoch(&order)
    }
    /// Streaming: called before the next `load_chunk`; returns the stats of the steps since
    /// the last chunk was loaded that `finish_epoch` will not return (the default:
    /// `finish_epoch`, one readback per chunk; a backend that keeps an epoch's stats across
    /// chunks returns none here and all of them from `finish_epoch`).
    fn finish_chunk(&mut self) -> Result<Vec<BatchStats>> {
        self.finish_epoch()
    }

    /// y: [rows, out] = the network's outputs (after the output activation) for x: [rows, in].
    fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>>;
    /// Summed loss and correct count over x: [rows, in] with dense targets t: [rows, out].
    fn evaluate(&mut self, x: &[f32], t: &[f32], rows: usize) -> Result<BatchStats>;
    /// The gradient `∂E/∂params` ([P], including `λW`) of the last step, for tests and
    /// verification. The GPU backend must have been built with gradient capture.
    fn last_gradients(&mut self) -> Result<Vec<f32>>;
    /// Bytes this model, its batch buffers and its training set hold on the device.
    fn allocated_bytes(&self) -> u64;
}

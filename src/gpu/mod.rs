//! The wgpu backend: buffers, pipelines and bind groups made once when a model is placed, then
//! one command encoder and one submit per training step, with no readback inside a step.

pub mod context;
pub mod device;
pub mod fused;
pub mod kernels;
mod placement;
pub mod plan;
/// Single-kernel probes for tests (feature `test-support`).
#[cfg(any(test, feature = "test-support"))]
pub mod probe;
mod profile;
pub mod profiles;
mod record;
mod step;
mod stream;
mod training;
pub mod tune;

pub use context::{list_adapters, AdapterInfo, AdapterSelector, GpuContext};
pub use tune::Tune;

use crate::backend::{Backend, BatchStats, OptimizerState};
use crate::error::{Error, Result};
use crate::model::{Activation, ModelSpec};
use crate::optim::{Optimizer, StepHyper};
use fused::{FusedBuffers, FusedMlp, FusedOptions};
use kernels::{
    groups_1d, Family, Kernels, LossDims, MatmulConfig, MatmulDims, MatmulMode, OneU32, StepUniform,
};
use record::read_staging;
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// How the step is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GpuOptions {
    /// Fuse the optimizer update into the gradient matmul's epilogue (default). Off: the
    /// gradient is written, then a separate optimizer pass runs (the first, unfused schedule).
    pub fused: bool,
    /// Also write every step's gradient to a buffer, for [`Backend::last_gradients`].
    pub capture_gradients: bool,
    /// Split each step into micro-batches of at most this many rows, accumulating the gradient
    /// (same result as one big batch). `None`: only when a batch does not fit one binding.
    pub micro_batch: Option<usize>,
    /// The fully fused step for narrow nets (every width ≤ 128, `fused.rs`): `None` uses it where
    /// it is faster (GPUs; on CPU adapters the layered schedule measured faster), `Some(true)`
    /// wherever the net is eligible, `Some(false)` never.
    pub fused_mlp: Option<bool>,
    /// Time the plan's candidate kernels for this model's matmuls at placement and run the
    /// fastest, caching the choice on disk (`tune.rs`). `Auto`: on hardware GPUs only
    /// ([`plan::tune_by_default`]); `Off`: the static plan.
    pub tune: Tune,
    /// The tuner's budget in milliseconds (`None`: 2 s, [`plan::tune_budget`]).
    pub tune_budget_ms: Option<u64>,
    /// Run the GPU matmul (`matmul_tiled`: shared-memory tiles) whatever the adapter, so that
    /// the kernel real GPUs use is also tested and measured on CPU adapters.
    pub force_tiled_matmul: bool,
    /// Run every matmul as `matmul_gemm` in this tile (shaders/matmul_gemm.wgsl), whatever the
    /// adapter: how tests and benches force one candidate. Takes precedence over
    /// `force_tiled_matmul`. Check it with [`kernels::GemmConfig::fits`] first.
    pub force_gemm: Option<kernels::GemmConfig>,
    /// Training steps recorded before one submit (each reads its own slot of the step uniform).
    /// Applies when the training set lives on the device and a step is one micro-batch;
    /// anything that reads or writes device memory from the host submits what is queued first.
    pub steps_per_submit: usize,
    /// A replica of a data-parallel run ([`crate::dist::DataParallel`]): steps run as
    /// `backward_shard` / `apply_gradient`, so the plan picks the split schedule (the gradient
    /// is complete, and all-reduced, before a separate update pass) and places the pass that
    /// adds `λW` before it.
    pub data_parallel: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            fused: true,
            capture_gradients: false,
            micro_batch: None,
            fused_mlp: None,
            tune: Tune::Auto,
            tune_budget_ms: None,
            force_tiled_matmul: false,
            force_gemm: None,
            steps_per_submit: 8,
            data_parallel: false,
        }
    }
}

/// How a dispatch's workgroup grid follows the step's batch size.
#[derive(Clone, Copy, Debug)]
enum Grid {
    /// A matmul whose rows are the batch, over `cols` columns, in workgroups of `cfg`'s tile.
    BatchRows { cols: u32, cfg: MatmulConfig },
    /// A fixed grid.
    Fixed(u32, u32),
    /// A fixed grid with `z` split-K slices.
    Split(u32, u32, u32),
    /// A 1-D kernel with `per_row` invocations per batch row.
    PerRow { per_row: u32 },
}

/// One recorded kernel launch: pipeline, bind group and grid, built once.
struct Dispatch {
    /// For profiles, e.g. `forward 1 (784x512)`.
    label: String,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    grid: Grid,
}

/// One thing a step records: a kernel launch, or the fully fused step (two launches).
enum Item<'a> {
    Kernel(&'a Dispatch),
    Fused(&'a FusedMlp),
}

impl Item<'_> {
    fn label(&self) -> String {
        match self {
            Item::Kernel(d) => d.label.clone(),
            Item::Fused(f) => format!(
                "fully fused step ({} dispatches, {}-row tiles)",
                f.dispatches(),
                f.shape().tile
            ),
        }
    }
}

/// Per-layer activations and deltas, each `[max_batch, out_l]`.
struct LayerBuffers {
    a: wgpu::Buffer,
    z: wgpu::Buffer,
    delta: wgpu::Buffer,
}

/// The training set when it lives on the device, with its gather launches.
struct DeviceData {
    rows: usize,
    /// Bytes of the data, order and gather buffers (released when the data is replaced).
    bytes: u64,
    order: wgpu::Buffer,
    /// Gathers of x and t rows into x_batch and t_batch.
    gather: [Dispatch; 2],
    _x: wgpu::Buffer,
    _t: wgpu::Buffer,
}

/// The training set kept on the host (too large for one binding): rows are gathered on the host
/// and uploaded each step.
struct HostData {
    x: Vec<f32>,
    t: Vec<f32>,
    rows: usize,
    order: Vec<u32>,
}

/// Streamed training data: two device slots, chunk c in slot c % 2, each gathered through an
/// identity order (a chunk's rows arrive in the epoch's order).
struct StreamData {
    slots: Vec<DeviceData>,
    /// The slot the next steps read.
    current: usize,
    /// Rows of the chunk in the current slot.
    rows: usize,
}

enum TrainData {
    None,
    Device(DeviceData),
    Host(HostData),
    Stream(StreamData),
}

impl TrainData {
    /// The device-resident rows the next steps gather from, if any.
    fn on_device(&self) -> Option<&DeviceData> {
        match self {
            TrainData::Device(d) => Some(d),
            TrainData::Stream(s) => s.slots.get(s.current),
            _ => None,
        }
    }

    /// Rows the next steps may index.
    fn rows(&self) -> usize {
        match self {
            TrainData::None => 0,
            TrainData::Device(d) => d.rows,
            TrainData::Host(h) => h.rows,
            TrainData::Stream(s) => s.rows,
        }
    }
}

/// A model placed on a wgpu device.
pub struct GpuBackend {
    ctx: Arc<GpuContext>,
    spec: ModelSpec,
    optimizer: Optimizer,
    options: GpuOptions,
    max_batch: usize,
    /// Rows the batch buffers hold; a step of more rows runs as micro-batches of this size.
    micro: usize,
    kernels: Kernels,
    params: wgpu::Buffer,
    grads: wgpu::Buffer,
    /// The step's gradient summed over micro-batches (micro-batching only).
    grad_total: Option<wgpu::Buffer>,
    /// `grad_total += grads` (micro-batching only).
    accumulate: Option<Dispatch>,
    /// The fully fused step for narrow nets, when it is used.
    fused_mlp: Option<FusedMlp>,
    opt_m: wgpu::Buffer,
    opt_v: wgpu::Buffer,
    x_batch: wgpu::Buffer,
    t_batch: wgpu::Buffer,
    layers: Vec<LayerBuffers>,
    row_stats: wgpu::Buffer,
    stats: wgpu::Buffer,
    stats_capacity: usize,
    /// `steps_per_submit` slots of `StepUniform`, `step_stride` bytes apart.
    step_uniform: wgpu::Buffer,
    step_stride: u64,
    /// What the tuner measured at placement (`None`: the static plan ran).
    tuning: Option<plan::Tuning>,
    /// Recorded steps not yet submitted (at most `options.steps_per_submit`).
    pending: std::cell::RefCell<Vec<wgpu::CommandBuffer>>,
    forward: Vec<Dispatch>,
    loss: [Dispatch; 2],
    softmax: Option<Dispatch>,
    backward: Vec<Dispatch>,
    update: Option<Dispatch>,
    /// `g += λW` on each layer's weights, before `update` (data-parallel replicas only).
    weight_decay: Vec<Dispatch>,
    data: TrainData,
    /// Rows of each stats slot written since `begin_epoch` (a micro-batched step uses several).
    epoch_lens: Vec<usize>,
    /// The step each stats slot belongs to.
    slot_steps: Vec<usize>,
    /// Steps since `begin_epoch` (an empty data-parallel shard is a step with no stats slot).
    epoch_steps: usize,
    bytes: u64,
}

const F32: u64 = 4;

/// The most training steps recorded before one submit ([`GpuOptions::steps_per_submit`]).
pub const MAX_STEPS_PER_SUBMIT: usize = 4096;

impl Drop for GpuBackend {
    /// Queued steps still run: a backend dropped mid-queue leaves the device as if each step
    /// had been submitted on its own.
    fn drop(&mut self) {
        self.flush();
    }
}

impl GpuBackend {
    /// Places `spec` on `ctx` for batches of up to `max_batch` rows: every buffer, pipeline and
    /// bind group is made here, once. Parameters start at zero (use `set_params`). Where
    /// `options.tune` asks for it (by default on hardware GPUs), the plan's candidate kernels
    /// are timed first, with their choice cached at [`tune::cache_path`] ([`Self::tuning`]).
    pub fn new(
        ctx: Arc<GpuContext>,
        spec: &ModelSpec,
        optimizer: Optimizer,
        max_batch: usize,
        options: GpuOptions,
    ) -> Result<Self> {
        let cache = tune::cache_path();
        Self::new_with_cache(ctx, spec, optimizer, max_batch, options, cache.as_deref())
    }

    /// [`Self::new`] with the tuner's cache at `cache` (`None`: tune without a cache).
    pub fn new_with_cache(
        ctx: Arc<GpuContext>,
        spec: &ModelSpec,
        optimizer: Optimizer,
        max_batch: usize,
        options: GpuOptions,
        cache: Option<&std::path::Path>,
    ) -> Result<Self> {
        let caps = ctx.capabilities();
        let forced = options.force_gemm.is_some() || options.force_tiled_matmul;
        if forced || !plan::tune_by_default(&caps, options.tune) {
            return Self::place(ctx, spec, optimizer, max_batch, options, None);
        }
        spec.validate()?;
        let micro = plan::micro_batch_rows(spec, max_batch.max(1), &caps, &options)?;
        let tuning = tune::tune(&ctx, spec, optimizer, micro, &options, cache)?;
        Self::place(ctx, spec, optimizer, max_batch, options, Some(tuning))
    }

    /// Places `spec` with the kernels `tuning` chose (from [`tune::tune`]), timing nothing.
    pub fn new_tuned(
        ctx: Arc<GpuContext>,
        spec: &ModelSpec,
        optimizer: Optimizer,
        max_batch: usize,
        options: GpuOptions,
        tuning: plan::Tuning,
    ) -> Result<Self> {
        Self::place(ctx, spec, optimizer, max_batch, options, Some(tuning))
    }

    /// What the tuner measured at placement, or `None` where the static plan ran.
    pub fn tuning(&self) -> Option<&plan::Tuning> {
        self.tuning.as_ref()
    }

    /// The plan this backend runs: the static plan with the tuner's choices where it ran.
    pub fn plan(&self) -> Result<plan::StepPlan> {
        plan::plan_tuned(
            &self.spec,
            self.max_batch,
            &self.ctx.capabilities(),
            &self.options,
            self.tuning.as_ref(),
        )
    }

    /// Rows per micro-batch (the batch buffers' size): equal to `max_batch` unless a step is
    /// split with gradient accumulation.
    pub fn micro_batch(&self) -> usize {
        self.micro
    }

    /// Whether steps run as the fully fused narrow-MLP kernel.
    pub fn uses_fused_mlp(&self) -> bool {
        self.fused_mlp.is_some()
    }

    /// The device this backend runs on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// The largest batch this backend was placed for.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn storage_buffer(&mut self, label: &str, contents: &[u8]) -> wgpu::Buffer {
        self.bytes += contents.len() as u64;
        self.ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
            })
    }

    fn check_rows(&self, what: &str, data: &[f32], rows: usize, width: usize) -> Result<()> {
        if Some(data.len()) != rows.checked_mul(width) {
            return Err(Error::shape(
                what,
                format!("{rows} rows × {width} values"),
                data.len(),
            ));
        }
        crate::data::check_finite(what, data, width)
    }

    /// Runs the forward pass (and with targets the loss) over x in chunks of `max_batch`,
    /// calling `after_chunk(chunk_index, start, len, encoder)` to copy results out.
    fn forward_chunks(
        &mut self,
        x: &[f32],
        t: Option<&[f32]>,
        rows: usize,
        mut after_chunk: impl FnMut(&Self, usize, usize, &mut wgpu::CommandEncoder),
    ) {
        self.flush();
        let (inp, out) = (self.spec.inputs(), self.spec.outputs());
        let hyper = self.optimizer.hyper(0.0, 1, 0.0);
        let mut start = 0;
        let mut chunk = 0;
        while start < rows {
            let len = self.micro.min(rows - start);
            self.upload(&self.x_batch, &x[start * inp..(start + len) * inp]);
            if let Some(t) = t {
                self.upload(&self.t_batch, &t[start * out..(start + len) * out]);
            }
            self.write_step(0, len, chunk, 0, &hyper, 1.0 / len as f32);
            let mut d: Vec<Item> = self.forward.iter().map(Item::Kernel).collect();
            if t.is_some() {
                d.extend(self.loss.iter().map(Item::Kernel));
            } else if let Some(s) = &self.softmax {
                d.push(Item::Kernel(s));
            }
            let mut enc = self.encoder_with("forward", len, &d, 0);
            after_chunk(self, start, len, &mut enc);
            self.ctx.queue.submit([enc.finish()]);
            start += len;
            chunk += 1;
        }
    }
}

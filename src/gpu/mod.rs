//! The wgpu backend: buffers, pipelines and bind groups made once when a model is placed, then
//! one command encoder and one submit per training step, with no readback inside a step.

pub mod context;
pub mod device;
pub mod fused;
mod images;
pub mod kernels;
mod placement;
pub mod plan;
pub mod probe;
mod profile;
pub mod profiles;
mod step;
mod training;

pub use context::{list_adapters, AdapterInfo, AdapterSelector, GpuContext};

use crate::backend::{Backend, BatchStats, OptimizerState};
use crate::error::{Error, Result};
use crate::model::{Activation, ModelSpec};
use crate::optim::{Optimizer, StepHyper};
use fused::{FusedBuffers, FusedMlp, FusedOptions};
use kernels::{
    groups_1d, Family, Kernels, LossDims, MatmulConfig, MatmulDims, MatmulMode, OneU32, StepUniform,
};
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// How the step is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// The subgroup matmul (shaders/matmul_subgroup.wgsl) where it can run: CPU adapters with
    /// 8-lane subgroups, on layers whose widths are multiples of 4. Off: `matmul_blocked`.
    pub subgroup_matmul: bool,
    /// Where the subgroup matmul runs, read its operands from storage images that mirror them
    /// (`images.rs`; on lavapipe an image load is a vector gather, a buffer load a per-lane
    /// loop). Off: from the buffers. The results are bit-identical.
    pub image_operands: bool,
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
            subgroup_matmul: true,
            image_operands: true,
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
    /// The x gather writes `GpuBackend::x_image` when there is one, x_batch otherwise.
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

enum TrainData {
    None,
    Device(DeviceData),
    Host(HostData),
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
    /// The dispatch that mirrors x_batch into the input's image, where an image kernel reads
    /// x; recorded before `forward` whenever x_batch holds the input (uploads).
    x_mirror: Option<Dispatch>,
    /// The input's image where only image kernels read x (layered schedule): device-resident
    /// training data is then gathered straight into it, and x_batch and `x_mirror` go unused.
    x_image: Option<wgpu::TextureView>,
    /// Operand images of the image matmul (kept alive for its bind groups).
    _images: Vec<images::Mirror>,
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
    /// bind group is made here, once. Parameters start at zero (use `set_params`).
    pub fn new(
        ctx: Arc<GpuContext>,
        spec: &ModelSpec,
        optimizer: Optimizer,
        max_batch: usize,
        options: GpuOptions,
    ) -> Result<Self> {
        spec.validate()?;
        if max_batch == 0 {
            return Err(Error::InvalidConfig("batch size must be at least 1".into()));
        }
        if let Some(g) = options.force_gemm {
            if !g.fits(&ctx.limits) {
                return Err(Error::DeviceLimit(format!(
                    "the GEMM tile {g} needs {} bytes of workgroup memory and {} invocations \
                     (valid: {}); {} offers {} bytes and {}: force a smaller tile",
                    g.workgroup_bytes(),
                    g.invocations(),
                    g.valid(),
                    ctx.info,
                    ctx.limits.max_compute_workgroup_storage_size,
                    ctx.limits.max_compute_invocations_per_workgroup
                )));
            }
        }
        check_params_fit(&ctx, spec)?;
        // Each recorded step has its own uniform slot: bounded so the slots fit one buffer.
        let slots_limit = (ctx.limits.max_buffer_size / 256).clamp(1, MAX_STEPS_PER_SUBMIT as u64);
        if options.steps_per_submit as u64 > slots_limit {
            return Err(Error::InvalidConfig(format!(
                "{} steps per submit: at most {slots_limit} are recorded before one submit on this device",
                options.steps_per_submit
            )));
        }
        let micro = plan::micro_batch_rows(spec, max_batch, &ctx.capabilities(), &options)?;
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let scope_v = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let built = Self::build(ctx.clone(), spec, optimizer, max_batch, micro, options);
        let validation = pollster::block_on(scope_v.pop());
        let oom = pollster::block_on(scope.pop());
        if let Some(e) = oom {
            return Err(Error::DeviceLimit(format!(
                "out of device memory placing the model with batch {max_batch}: {e}; use a smaller --batch"
            )));
        }
        if let Some(e) = validation {
            return Err(Error::Gpu(format!("placing the model failed: {e}")));
        }
        Ok(built)
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

    /// The per-step uniform. `inv_batch` scales the output delta: 1/rows of the whole step, also
    /// for each of its micro-batches.
    fn write_step(
        &self,
        slot: usize,
        batch: usize,
        step_index: usize,
        row_start: usize,
        h: &StepHyper,
        inv_batch: f32,
    ) {
        let u = StepUniform {
            batch: batch as u32,
            step_index: step_index as u32,
            row_start: row_start as u32,
            _pad1: 0,
            lr: h.lr,
            l2: h.l2,
            momentum: h.momentum,
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
            bias_correction1: h.bias_correction1,
            bias_correction2: h.bias_correction2,
            inv_batch,
            _pad2: [0.0; 3],
        };
        self.ctx.queue.write_buffer(
            &self.step_uniform,
            slot as u64 * self.step_stride,
            bytemuck::bytes_of(&u),
        );
    }

    /// Submits the steps recorded so far. Called before anything else reaches the device from
    /// the host: a `write_buffer` takes effect before every command buffer of the next submit.
    fn flush(&self) {
        let mut pending = self.pending.borrow_mut();
        if !pending.is_empty() {
            self.ctx.queue.submit(pending.drain(..));
        }
    }

    /// Records one item for a batch of `batch` rows reading step uniform slot `slot`.
    fn record(&self, pass: &mut wgpu::ComputePass<'_>, item: &Item<'_>, batch: usize, slot: usize) {
        let offset = (slot as u64 * self.step_stride) as u32;
        let d = match item {
            Item::Kernel(d) => d,
            Item::Fused(f) => return f.record(pass, batch, offset),
        };
        let (x, y) = match d.grid {
            Grid::BatchRows { cols, cfg } => cfg.groups(batch as u32, cols),
            Grid::Fixed(x, y) => (x, y),
            Grid::Split(x, y, z) => {
                pass.set_pipeline(&d.pipeline);
                pass.set_bind_group(0, &d.bind_group, &[offset]);
                pass.dispatch_workgroups(x, y, z);
                return;
            }
            Grid::PerRow { per_row } => groups_1d(
                batch as u64 * per_row as u64,
                self.ctx.limits.max_compute_workgroups_per_dimension,
            ),
        };
        pass.set_pipeline(&d.pipeline);
        pass.set_bind_group(0, &d.bind_group, &[offset]);
        pass.dispatch_workgroups(x, y, 1);
    }

    /// A new encoder holding one compute pass over `items` for a batch of `batch` rows reading
    /// step uniform slot `slot`.
    fn encoder_with(
        &self,
        label: &str,
        batch: usize,
        items: &[Item<'_>],
        slot: usize,
    ) -> wgpu::CommandEncoder {
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(label),
                timestamp_writes: None,
            });
            for d in items {
                self.record(&mut pass, d, batch, slot);
            }
        }
        enc
    }

    /// Records `items` over a batch of `batch` rows reading step uniform slot `slot` into one
    /// command buffer.
    fn encode(&self, batch: usize, items: &[Item<'_>], slot: usize) -> wgpu::CommandBuffer {
        self.encoder_with("step", batch, items, slot).finish()
    }

    /// Queues `items` (written for slot `slot`, the number of steps pending) and submits the
    /// queue when it is full.
    fn queue_step(&self, batch: usize, items: &[Item<'_>], slot: usize) {
        let cmd = self.encode(batch, items, slot);
        let full = {
            let mut pending = self.pending.borrow_mut();
            pending.push(cmd);
            pending.len() >= self.options.steps_per_submit.max(1)
        };
        if full {
            self.flush();
        }
    }

    /// Submits what is queued, then records and submits `items` over a batch of `batch` rows
    /// (step uniform slot 0), in one encoder; `clear` is zeroed first.
    fn submit(&self, batch: usize, items: &[Item<'_>], clear: Option<&wgpu::Buffer>) {
        self.flush();
        let step = self.encode(batch, items, 0);
        match clear {
            Some(b) => {
                let mut first =
                    self.ctx
                        .device
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("clear"),
                        });
                first.clear_buffer(b, 0, None);
                self.ctx.queue.submit([first.finish(), step]);
            }
            None => {
                self.ctx.queue.submit([step]);
            }
        }
    }

    /// What one (micro-)batch records, in order: gathers, then the fused step or the layered
    /// forward, loss, backward (with gradient accumulation, or the update where separate and
    /// `update` asks for it).
    fn step_items(&self, update: bool) -> Vec<Item<'_>> {
        let mut v: Vec<Item> = Vec::new();
        if let TrainData::Device(data) = &self.data {
            v.extend(data.gather.iter().map(Item::Kernel));
        }
        if let Some(f) = &self.fused_mlp {
            v.push(Item::Fused(f));
            return v;
        }
        let gathered_to_image = matches!(self.data, TrainData::Device(_)) && self.x_image.is_some();
        if !gathered_to_image {
            v.extend(self.x_mirror.iter().map(Item::Kernel));
        }
        v.extend(self.forward.iter().map(Item::Kernel));
        v.extend(self.loss.iter().map(Item::Kernel));
        v.extend(self.backward.iter().map(Item::Kernel));
        v.extend(self.accumulate.iter().map(Item::Kernel));
        if self.accumulate.is_none() && update {
            v.extend(self.update.iter().map(Item::Kernel));
        }
        v
    }

    /// Dispatches per training step (gathers included when the data lives on the device).
    pub fn dispatches_per_step(&self) -> usize {
        self.step_items(true)
            .iter()
            .map(|i| match i {
                Item::Kernel(_) => 1,
                Item::Fused(f) => f.dispatches(),
            })
            .sum()
    }

    /// Reads `count` f32 from `buf` (a readback: only between steps).
    fn read(&self, buf: &wgpu::Buffer, count: usize) -> Result<Vec<f32>> {
        self.flush();
        if count == 0 {
            return Ok(Vec::new());
        }
        let size = count as u64 * F32;
        let staging = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        enc.copy_buffer_to_buffer(buf, 0, &staging, 0, size);
        self.ctx.queue.submit([enc.finish()]);
        read_staging(&self.ctx, &staging)
    }

    fn upload(&self, buf: &wgpu::Buffer, data: &[f32]) {
        self.flush();
        if !data.is_empty() {
            self.ctx
                .queue
                .write_buffer(buf, 0, bytemuck::cast_slice(data));
        }
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
            let mut d: Vec<Item> = self.x_mirror.iter().map(Item::Kernel).collect();
            d.extend(self.forward.iter().map(Item::Kernel));
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

/// Maps a MAP_READ buffer and returns its f32 contents.
fn read_staging(ctx: &GpuContext, staging: &wgpu::Buffer) -> Result<Vec<f32>> {
    let slice = staging.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    ctx.wait()?;
    rx.recv()
        .map_err(|_| Error::Gpu("readback callback never ran".into()))?
        .map_err(|e| Error::Gpu(format!("readback failed: {e}")))?;
    let data = {
        let view = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("readback failed: {e}")))?;
        bytemuck::cast_slice::<u8, f32>(&view).to_vec()
    };
    staging.unmap();
    Ok(data)
}

/// All parameters must fit one binding: the error names the layer that takes the most of it.
fn check_params_fit(ctx: &GpuContext, spec: &ModelSpec) -> Result<()> {
    let limit = ctx.max_binding_bytes();
    let params = crate::limits::bytes_of(&[spec.param_count()], F32);
    if params > limit {
        // All parameters live in one binding: name the layer that takes the most of it.
        let (l, w) = spec
            .sizes
            .windows(2)
            .enumerate()
            .max_by_key(|(_, w)| w[0] * w[1])
            .expect("at least one layer");
        return Err(Error::DeviceLimit(format!(
            "the model's {} parameters need {params} bytes, over this device's storage binding limit of {limit} bytes ({}); the largest is layer {} ({}x{}, {}): use fewer or narrower layers",
            spec.param_count(),
            ctx.info,
            l + 1,
            w[0],
            w[1],
            crate::limits::show_bytes(crate::limits::bytes_of(&[w[0] * w[1] + w[1]], F32)),
        )));
    }
    Ok(())
}

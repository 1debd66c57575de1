//! The step's device buffers, allocated once when a model is placed.

use super::super::*;
use super::dispatches::grad_launch;
use crate::gpu::device::Capabilities;

/// Every buffer a layered step binds, for (micro-)batches of `rows` rows.
pub(super) struct StepBuffers {
    /// All parameters, layer by layer: `[params]`.
    pub params: wgpu::Buffer,
    /// The step's gradient `[params]` (one float where the fused update never writes it).
    pub grads: wgpu::Buffer,
    /// The optimizer's first state `[params]` (one float where it has none).
    pub opt_m: wgpu::Buffer,
    /// The optimizer's second state `[params]` (one float where it has none).
    pub opt_v: wgpu::Buffer,
    /// The gradient summed over micro-batches `[params]` (micro-batching only).
    pub grad_total: Option<wgpu::Buffer>,
    /// The batch's inputs `[rows, in]`.
    pub x_batch: wgpu::Buffer,
    /// The batch's targets `[rows, out]`.
    pub t_batch: wgpu::Buffer,
    /// Per layer: a, z and δ, each `[rows, out_l]`.
    pub layers: Vec<LayerBuffers>,
    /// Per-row loss and correctness `[rows, 2]`.
    pub row_stats: wgpu::Buffer,
    /// Per-step loss and correct count `[stats_capacity, 2]`.
    pub stats: wgpu::Buffer,
    /// Steps the stats buffer holds.
    pub stats_capacity: usize,
    /// Every split-K layer's partial sums, `[slices, in + 1, out]` at most (where any splits).
    pub partials: Option<wgpu::Buffer>,
    /// `steps_per_submit` slots of `StepUniform`, `step_stride` bytes apart.
    pub step_uniform: wgpu::Buffer,
    /// Bytes between two step uniform slots (the device's uniform offset alignment).
    pub step_stride: u64,
    /// Bytes of the storage buffers above.
    pub bytes: u64,
}

/// Steps the stats buffer holds at placement (it grows by doubling).
const STATS_CAPACITY: usize = 1024;

impl StepBuffers {
    /// The buffers of a model placed for `rows`-row (micro-)batches; `micro_batching`: a step
    /// spans several, so the gradient is accumulated in `grad_total`.
    pub(super) fn allocate(
        ctx: &GpuContext,
        kernels: &Kernels,
        spec: &ModelSpec,
        optimizer: Optimizer,
        rows: usize,
        micro_batching: bool,
        options: &GpuOptions,
    ) -> Self {
        let mut bytes = 0u64;
        let mut storage =
            |label: &str, len: usize| storage_buffer(&ctx.device, &mut bytes, label, len);
        let p = spec.param_count();
        let slots = optimizer.state_slots();
        let fused_only = options.fused && !options.capture_gradients;
        let layers: Vec<LayerBuffers> = (spec.sizes.iter().skip(1))
            .map(|&w| LayerBuffers {
                a: storage("a", rows * w),
                z: storage("z", rows * w),
                delta: storage("delta", rows * w),
            })
            .collect();
        let partials_len = partials_len(kernels, &ctx.capabilities(), spec, rows);
        let (step_uniform, step_stride) = step_uniform(ctx, options.steps_per_submit);
        StepBuffers {
            params: storage("params", p),
            grads: storage("grads", if fused_only { 1 } else { p }),
            opt_m: storage("opt_m", if slots >= 1 { p } else { 1 }),
            opt_v: storage("opt_v", if slots >= 2 { p } else { 1 }),
            grad_total: micro_batching.then(|| storage("grad_total", p)),
            x_batch: storage("x_batch", rows * spec.inputs()),
            t_batch: storage("t_batch", rows * spec.outputs()),
            layers,
            row_stats: storage("row_stats", rows * 2),
            stats: storage("stats", STATS_CAPACITY * 2),
            stats_capacity: STATS_CAPACITY,
            partials: (partials_len > 0).then(|| storage("split-K partials", partials_len)),
            step_uniform,
            step_stride,
            bytes,
        }
    }
}

/// A storage buffer of `len` floats (at least 4), its size added to `bytes`.
fn storage_buffer(device: &wgpu::Device, bytes: &mut u64, label: &str, len: usize) -> wgpu::Buffer {
    let size = (len.max(4) as u64) * F32;
    *bytes += size;
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    })
}

/// Floats of the one buffer every split-K layer's partial sums share: the largest
/// `slices × (in + 1) × out` (0 where no layer splits).
fn partials_len(kernels: &Kernels, caps: &Capabilities, spec: &ModelSpec, rows: usize) -> usize {
    spec.layout()
        .iter()
        .map(|l| {
            let slices = grad_launch(kernels, caps, l, rows).slices as usize;
            if slices > 1 {
                slices * (l.inputs + 1) * l.outputs
            } else {
                0
            }
        })
        .max()
        .unwrap_or(0)
}

/// One `StepUniform` slot per step of a submit, at the device's uniform offset alignment:
/// the buffer and the stride between slots.
fn step_uniform(ctx: &GpuContext, steps_per_submit: usize) -> (wgpu::Buffer, u64) {
    let align = ctx.limits.min_uniform_buffer_offset_alignment as u64;
    let stride = kernels::STEP_UNIFORM_SIZE.div_ceil(align) * align;
    let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("step"),
        size: stride.saturating_mul(steps_per_submit.max(1) as u64),
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    (buf, stride)
}

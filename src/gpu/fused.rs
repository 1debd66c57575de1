//! A fully fused training step for narrow networks (every width, input and output included,
//! ≤ [`MAX_WIDTH`]), after tiny-cuda-nn's fully fused MLP, in portable WGSL (shaders/fused.wgsl).
//!
//! Two dispatches per step:
//! 1. `fused_tile`: each workgroup walks batch tiles of `tile` rows (tiles `g, g + G, …`). For a
//!    tile it runs the whole forward (activations ping-pong between two `[tile, stride]` tiles of
//!    workgroup memory; hidden pre-activations `a` also go to a per-workgroup scratch slice for
//!    φ'), the loss and output delta, and the whole backward, adding each layer's `[z, 1]ᵀ·δ` into
//!    the workgroup's own slice of a partial-gradient buffer `[G, P]` (stored on its first tile,
//!    added after: no atomics, no zeroing pass).
//! 2. `reduce_update`: one invocation per parameter sums the `G` partials in workgroup order,
//!    adds `λW` on weights, optionally keeps the gradient, and applies the optimizer update;
//!    workgroup 0 also reduces the per-invocation loss/correct partials into
//!    `stats[step_index]`.
//!
//! Both matmuls of a layer that read W (forward `z·W`, delta `δ·Wᵀ`) stage it in workgroup memory
//! in slabs of [`FusedShape::w_slab`] rows or columns, copied with coalesced loads and read as
//! swizzled vec4s; the tile takes the workgroup memory the slab leaves, shrunk where the batch
//! would otherwise leave compute units idle ([`plan::fused_shape`]).
//!
//! Every sum has a fixed order, so a rerun is bit-identical. The math is that of
//! `crate::reference::ops` (the same as the layered schedule).

use super::kernels::{groups_1d, ACTIVATION_WGSL, STEP_WGSL};
use super::{plan, GpuContext};
use crate::model::ModelSpec;
use crate::optim::Optimizer;
use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

// Single-step runners for tests (feature `test-support`).
#[cfg(any(test, feature = "test-support"))]
mod runner;
#[cfg(any(test, feature = "test-support"))]
pub use runner::{run_step, run_step_with, StepOutputs};
mod passes;
mod shape;
pub use shape::FusedShape;

/// The fused kernel's own WGSL (without its preludes).
pub const FUSED_WGSL: &str = include_str!("../../shaders/fused.wgsl");

/// The widest layer (input and output included) the fused step accepts.
pub const MAX_WIDTH: usize = 128;
/// Invocations per workgroup of `reduce_update` (fixed in the shader).
const REDUCE_WG: u32 = 256;
const F32: u64 = 4;

/// The full module source: activation.wgsl + step.wgsl + fused.wgsl.
pub fn source() -> String {
    [ACTIVATION_WGSL, STEP_WGSL, FUSED_WGSL].join("\n")
}

/// Mirrors `struct Layer` in shaders/fused.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct FusedLayer {
    inputs: u32,
    outputs: u32,
    weight: u32,
    bias: u32,
    act: u32,
    alpha: f32,
    a_off: u32,
    _pad: u32,
}

/// Choices beyond the model: gradient capture and (for tests) the number of partial slices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FusedOptions {
    /// Write the reduced gradient `∂E/∂params` (incl. `λW`) into [`FusedBuffers::grads`].
    pub capture_gradients: bool,
    /// Most workgroups of the tile pass (each owns one `[P]` partial slice). `None`: as the plan
    /// decides ([`plan::fused_shape`]), and never more than `max_batch` needs.
    pub max_groups: Option<usize>,
    /// Most invocations per workgroup of the tile pass (tests: fewer invocations than 4×4 blocks,
    /// so that each walks several rounds of blocks). `None`: as the adapter allows.
    pub max_invocations: Option<u32>,
}

/// The buffers a fused step reads and writes, owned by the caller.
pub struct FusedBuffers<'a> {
    /// Uniform [`StepUniform`] (batch, step_index, lr, …), written by the host before each step.
    pub step: &'a wgpu::Buffer,
    /// x: [max_batch, in], this step's inputs (already gathered).
    pub x: &'a wgpu::Buffer,
    /// t: [max_batch, out], dense targets.
    pub t: &'a wgpu::Buffer,
    /// [P], updated in place.
    pub params: &'a wgpu::Buffer,
    /// [P], or a 16-byte dummy when the optimizer has no such slot.
    pub opt_m: &'a wgpu::Buffer,
    /// [P], the optimizer's second-moment slot, or a 16-byte dummy when it has none.
    pub opt_v: &'a wgpu::Buffer,
    /// [P], the gradient when capturing, else a 16-byte dummy.
    pub grads: &'a wgpu::Buffer,
    /// [steps, 2]: loss sum and correct count per step.
    pub stats: &'a wgpu::Buffer,
}

/// The fused step of one model on one device: pipelines, bind group and scratch, built once.
pub struct FusedMlp {
    shape: FusedShape,
    params: usize,
    tile_pipeline: wgpu::ComputePipeline,
    reduce_pipeline: wgpu::ComputePipeline,
    tile_group: wgpu::BindGroup,
    reduce_group: wgpu::BindGroup,
    /// What `reduce_group` binds (it also holds the layer table and partials), and its layout.
    reduce: passes::ReduceBindings,
    reduce_layout: wgpu::BindGroupLayout,
    max_per_dim: u32,
    bytes: u64,
    _scratch: wgpu::Buffer,
}

impl FusedMlp {
    /// `None` if `spec` is not eligible (a width > 128, a step activation), does not fit this
    /// adapter's workgroup memory or binding limits, or the adapter rejects the pipelines.
    pub fn new(
        ctx: &GpuContext,
        spec: &ModelSpec,
        optimizer: Optimizer,
        max_batch: usize,
        bufs: &FusedBuffers<'_>,
        options: FusedOptions,
    ) -> Option<FusedMlp> {
        let device = &ctx.device;
        let mut caps = ctx.capabilities();
        if let Some(most) = options.max_invocations {
            caps.max_invocations = caps.max_invocations.min(most);
        }
        let shape = plan::fused_shape(spec, max_batch.max(1), &caps, options.max_groups)?;
        let p = spec.param_count();
        let (layers, hidden) = layer_table(spec, shape.tile);
        let (scratch_len, partial_len) = owned_sizes(ctx, &shape, p, hidden)?;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let layers_buf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("fused layers"),
            contents: bytemuck::cast_slice(&layers),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let scratch = passes::storage(device, "fused scratch", scratch_len);
        let partial = passes::storage(device, "fused partial gradients", partial_len);
        let tile = passes::TileBindings {
            step: bufs.step,
            layers: &layers_buf,
            x: bufs.x,
            t: bufs.t,
            scratch: &scratch,
            partial: &partial,
            weights: bufs.params,
        };
        let reduce = passes::ReduceBindings {
            step: bufs.step.clone(),
            layers: layers_buf.clone(),
            params: bufs.params.clone(),
            opt_m: bufs.opt_m.clone(),
            opt_v: bufs.opt_v.clone(),
            grads: bufs.grads.clone(),
            stats: bufs.stats.clone(),
            partial: partial.clone(),
        };
        let constants = Self::constants(spec, optimizer, &shape, options);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("shaders/fused.wgsl"),
            source: wgpu::ShaderSource::Wgsl(source().into()),
        });
        let (tile_pipeline, tile_group, _) =
            passes::build(device, &module, "fused_tile", &tile.entries(), &constants);
        let (reduce_pipeline, reduce_group, reduce_layout) = passes::build(
            device,
            &module,
            "reduce_update",
            &reduce.entries(),
            &constants,
        );
        if pollster::block_on(scope.pop()).is_some() {
            return None;
        }
        Some(FusedMlp {
            shape,
            params: p,
            tile_pipeline,
            reduce_pipeline,
            tile_group,
            reduce_group,
            max_per_dim: ctx.limits.max_compute_workgroups_per_dimension,
            bytes: layers_buf.size() + scratch.size() + partial.size(),
            reduce,
            reduce_layout,
            _scratch: scratch,
        })
    }

    /// Binds `stats` (a grown per-step stats buffer) in place of the old one: one new bind
    /// group, no new pipeline or scratch.
    pub fn rebind_stats(&mut self, device: &wgpu::Device, stats: &wgpu::Buffer) {
        self.reduce.stats = stats.clone();
        self.reduce_group = passes::bind_group(
            device,
            "reduce_update",
            &self.reduce_layout,
            &self.reduce.entries(),
        );
    }

    /// The override constants both passes of `spec`'s fused step take with launch `shape`:
    /// what the portability test specializes the shader with for each device profile.
    pub fn constants(
        spec: &ModelSpec,
        optimizer: Optimizer,
        shape: &FusedShape,
        options: FusedOptions,
    ) -> Vec<(&'static str, f64)> {
        let (_, hidden) = layer_table(spec, shape.tile);
        passes::constants(spec, optimizer, shape, hidden, options)
    }

    /// Records the whole step (both dispatches) for a batch of `batch` rows (≥ 1, ≤ `max_batch`,
    /// and equal to the Step uniform's `batch`) into `pass`; `step_offset` is the byte offset
    /// of the step's uniform slot.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, batch: usize, step_offset: u32) {
        pass.set_bind_group(0, &self.tile_group, &[step_offset]);
        pass.set_pipeline(&self.tile_pipeline);
        pass.dispatch_workgroups(self.shape.groups_for(batch), 1, 1);
        let (gx, gy) = groups_1d(self.params as u64, self.max_per_dim);
        debug_assert_eq!(REDUCE_WG, super::kernels::WORKGROUP_1D);
        pass.set_bind_group(0, &self.reduce_group, &[step_offset]);
        pass.set_pipeline(&self.reduce_pipeline);
        pass.dispatch_workgroups(gx, gy, 1);
    }

    /// Dispatches per step.
    pub fn dispatches(&self) -> usize {
        2
    }

    /// Bytes of the buffers this step owns (layer table, scratch, partial gradients).
    pub fn allocated_bytes(&self) -> u64 {
        self.bytes
    }

    /// The launch shape chosen for this model and adapter.
    pub fn shape(&self) -> FusedShape {
        self.shape
    }
}

/// The shader's layer table for `spec` with `tile` rows per tile, and the floats of hidden
/// pre-activations per row (each layer's `a` at `a_off` in a workgroup's scratch slice).
fn layer_table(spec: &ModelSpec, tile: usize) -> (Vec<FusedLayer>, usize) {
    let layout = spec.layout();
    let hidden = layout[..layout.len() - 1].iter().map(|l| l.outputs).sum();
    let mut a_off = 0;
    let layers = layout
        .iter()
        .zip(&spec.activations)
        .map(|(l, act)| {
            let layer = FusedLayer {
                inputs: l.inputs as u32,
                outputs: l.outputs as u32,
                weight: l.weight as u32,
                bias: l.bias as u32,
                act: act.code(),
                alpha: act.alpha(),
                a_off: a_off as u32,
                _pad: 0,
            };
            a_off += tile * l.outputs;
            layer
        })
        .collect();
    (layers, hidden)
}

/// Bytes of the scratch (`[groups, tile · hidden]`) and partials (`[groups, P]`, then
/// `[groups, workgroup, 2]`) buffers, or `None` where one is over a binding's limit.
fn owned_sizes(
    ctx: &GpuContext,
    shape: &FusedShape,
    p: usize,
    hidden: usize,
) -> Option<(u64, u64)> {
    let scratch = (shape.groups * shape.tile * hidden).max(4) as u64 * F32;
    let partial = (shape.groups * p + shape.groups * shape.workgroup as usize * 2) as u64 * F32;
    let limit = ctx.max_binding_bytes();
    (scratch <= limit && partial <= limit && p < u32::MAX as usize / 2)
        .then_some((scratch, partial))
}

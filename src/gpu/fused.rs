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
use crate::model::{Activation, ModelSpec};
use crate::optim::Optimizer;
use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

// Single-step runners for tests (feature `test-support`).
#[cfg(any(test, feature = "test-support"))]
mod runner;
#[cfg(any(test, feature = "test-support"))]
pub use runner::{run_step, run_step_with, StepOutputs};

/// The fused kernel's own WGSL (without its preludes).
pub const FUSED_WGSL: &str = include_str!("../../shaders/fused.wgsl");

/// The widest layer (input and output included) the fused step accepts.
pub const MAX_WIDTH: usize = 128;
/// The largest batch tile, whatever the workgroup memory allows.
const MAX_TILE: usize = 128;
/// Invocations per workgroup of the tile pass: at most, and at least.
const MAX_WG: u32 = 256;
const MIN_WG: u32 = 64;
/// Invocations per workgroup of `reduce_update` (fixed in the shader).
const REDUCE_WG: u32 = 256;
const F32: u64 = 4;
const VEC4_BYTES: usize = 16;

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

/// The launch shape the fused step picked for a model on an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusedShape {
    /// Batch rows per tile (a multiple of 4).
    pub tile: usize,
    /// Row stride of the workgroup tiles: the widest layer rounded up to 4.
    pub stride: usize,
    /// Rows (forward) or columns (delta) of a weight matrix staged in workgroup memory at once.
    pub w_slab: usize,
    /// vec4s per staged row of W: `stride / 4` rounded up to a multiple of 8 (the swizzle's span).
    pub w_row: usize,
    /// Invocations per workgroup of the tile pass.
    pub workgroup: u32,
    /// Most workgroups of the tile pass (partial-gradient slices).
    pub groups: usize,
    /// Workgroup memory of the tile pass in bytes: two `[tile, stride]` f32 tiles and the
    /// `[w_slab, w_row]` vec4 slab of W.
    pub workgroup_bytes: usize,
}

impl FusedShape {
    /// The launch shape for `spec` within `workgroup_limit` bytes of workgroup memory, or `None`
    /// when `spec` is not eligible (a width above [`MAX_WIDTH`], a step activation) or not even a
    /// 4-row tile fits. The W slab takes the largest of 32, 16, 8 or 4 rows within a quarter of
    /// the memory; the tiles take the rest.
    pub fn choose(
        spec: &ModelSpec,
        workgroup_limit: u32,
        max_invocations: u32,
        max_batch: usize,
        max_groups: usize,
    ) -> Option<FusedShape> {
        if spec.validate().is_err()
            || spec.activations.contains(&Activation::Step)
            || spec.sizes.iter().any(|&s| s > MAX_WIDTH)
        {
            return None;
        }
        let limit = workgroup_limit as usize;
        let stride = spec.sizes.iter().copied().max()?.next_multiple_of(4);
        let w_row = (stride / 4).next_multiple_of(8);
        let slab_bytes = |rows: usize| rows * w_row * VEC4_BYTES;
        let w_slab = [32, 16, 8, 4]
            .into_iter()
            .find(|&rows| slab_bytes(rows) <= limit / 4)?;
        let tile = (limit - slab_bytes(w_slab)) / (2 * stride * F32 as usize) / 4 * 4;
        FusedShape {
            tile: 0,
            stride,
            w_slab,
            w_row,
            workgroup: 0,
            groups: 0,
            workgroup_bytes: 0,
        }
        .with_tile(tile, max_invocations, max_batch, max_groups)
    }

    /// This shape with `tile` rows per tile (at most [`MAX_TILE`]): the workgroup size, the
    /// groups for `max_batch` rows and the workgroup memory follow; at most one row per
    /// invocation. `None` below 4 rows.
    pub fn with_tile(
        self,
        tile: usize,
        max_invocations: u32,
        max_batch: usize,
        max_groups: usize,
    ) -> Option<FusedShape> {
        let tile = tile.min(MAX_TILE).min(max_invocations as usize) / 4 * 4;
        if tile < 4 {
            return None;
        }
        let workgroup = ((tile * self.stride / 16) as u32)
            .clamp(MIN_WG, MAX_WG)
            .max(tile as u32)
            .min(max_invocations);
        if (workgroup as usize) < tile {
            return None;
        }
        Some(FusedShape {
            tile,
            workgroup,
            groups: max_batch.max(1).div_ceil(tile).clamp(1, max_groups.max(1)),
            workgroup_bytes: 2 * tile * self.stride * F32 as usize
                + self.w_slab * self.w_row * VEC4_BYTES,
            ..self
        })
    }

    /// Workgroups of the tile pass for a batch of `batch` rows (the shader computes the same).
    pub fn groups_for(&self, batch: usize) -> u32 {
        batch.div_ceil(self.tile).clamp(1, self.groups) as u32
    }
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
    max_per_dim: u32,
    bytes: u64,
    _layers: wgpu::Buffer,
    _scratch: wgpu::Buffer,
    _partial: wgpu::Buffer,
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
        let layout = spec.layout();
        let hidden: usize = layout[..layout.len() - 1].iter().map(|l| l.outputs).sum();
        let mut a_off = 0;
        let layers: Vec<FusedLayer> = layout
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
                a_off += shape.tile * l.outputs;
                layer
            })
            .collect();
        let scratch_len = (shape.groups * shape.tile * hidden).max(4) as u64 * F32;
        let partial_len =
            (shape.groups * p + shape.groups * shape.workgroup as usize * 2) as u64 * F32;
        let limit = ctx
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.limits.max_buffer_size);
        if scratch_len > limit || partial_len > limit || p >= u32::MAX as usize / 2 {
            return None;
        }
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let layers_buf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("fused layers"),
            contents: bytemuck::cast_slice(&layers),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let storage = |label, size| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let scratch = storage("fused scratch", scratch_len);
        let partial = storage("fused partial gradients", partial_len);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("shaders/fused.wgsl"),
            source: wgpu::ShaderSource::Wgsl(source().into()),
        });
        // binding 0, the step uniform, takes a dynamic offset (its slot), as in every family
        let entry = |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: binding == 0,
                min_binding_size: None,
            },
            count: None,
        };
        let read = wgpu::BufferBindingType::Storage { read_only: true };
        let rw = wgpu::BufferBindingType::Storage { read_only: false };
        // Every binding of the module, with its access; each pass binds only those it uses, so
        // that the tile pass reads the parameters through a read-only binding (11).
        let all: [(&wgpu::Buffer, wgpu::BufferBindingType); 12] = [
            (bufs.step, wgpu::BufferBindingType::Uniform),
            (&layers_buf, read),
            (bufs.x, read),
            (bufs.t, read),
            (bufs.params, rw),
            (bufs.opt_m, rw),
            (bufs.opt_v, rw),
            (bufs.grads, rw),
            (bufs.stats, rw),
            (&scratch, rw),
            (&partial, rw),
            (bufs.params, read),
        ];
        let group = |bindings: &[u32]| {
            let entries: Vec<_> = bindings
                .iter()
                .map(|&b| entry(b, all[b as usize].1))
                .collect();
            let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("fused"),
                entries: &entries,
            });
            let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("fused"),
                bind_group_layouts: &[Some(&bgl)],
                immediate_size: 0,
            });
            let entries: Vec<wgpu::BindGroupEntry> = bindings
                .iter()
                .map(|&b| wgpu::BindGroupEntry {
                    binding: b,
                    resource: if b == 0 {
                        super::kernels::step_binding(all[0].0)
                    } else {
                        all[b as usize].0.as_entire_binding()
                    },
                })
                .collect();
            let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("fused"),
                layout: &bgl,
                entries: &entries,
            });
            (pl, bg)
        };
        let (tile_layout, tile_group) = group(&[0, 1, 2, 3, 9, 10, 11]);
        let (reduce_layout, reduce_group) = group(&[0, 1, 4, 5, 6, 7, 8, 10]);
        let constants: Vec<(&str, f64)> = vec![
            ("TILE", shape.tile as f64),
            ("STRIDE", shape.stride as f64),
            ("SM_LEN", (2 * shape.tile * shape.stride) as f64),
            ("W_SLAB", shape.w_slab as f64),
            ("W_ROW", shape.w_row as f64),
            ("WS_LEN", (shape.w_slab * shape.w_row) as f64),
            ("WG", shape.workgroup as f64),
            ("GROUPS", shape.groups as f64),
            ("LAYERS", layout.len() as f64),
            ("PARAMS", p as f64),
            ("HIDDEN", hidden as f64),
            ("LOSS", spec.loss.code() as f64),
            ("OPT", optimizer.kind().code() as f64),
            ("KEEP_GRAD", options.capture_gradients as u32 as f64),
        ];
        let pipeline = |entry: &str, layout: &wgpu::PipelineLayout| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        };
        let tile_pipeline = pipeline("fused_tile", &tile_layout);
        let reduce_pipeline = pipeline("reduce_update", &reduce_layout);
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
            _layers: layers_buf,
            _scratch: scratch,
            _partial: partial,
        })
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

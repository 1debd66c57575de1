//! The fused step's two passes: their bindings, named as shaders/fused.wgsl declares them, and
//! their layouts, bind groups and pipelines.

use super::{FusedOptions, FusedShape};
use crate::gpu::kernels::{step_binding, Slot};
use crate::model::ModelSpec;
use crate::optim::Optimizer;

/// The bindings of `fused_tile`. It reads the parameters through a read-only binding (11), so
/// that no pass writes what another of its invocations reads.
pub(super) struct TileBindings<'a> {
    /// 0: the step uniform, one slot per dispatch.
    pub step: &'a wgpu::Buffer,
    /// 1: the layer table `[layers]`.
    pub layers: &'a wgpu::Buffer,
    /// 2: x `[B, in]`.
    pub x: &'a wgpu::Buffer,
    /// 3: t `[B, out]`.
    pub t: &'a wgpu::Buffer,
    /// 9: hidden pre-activations `[groups, tile · hidden]`.
    pub scratch: &'a wgpu::Buffer,
    /// 10: partial gradients `[groups, P]`, then loss/correct partials `[groups, workgroup, 2]`.
    pub partial: &'a wgpu::Buffer,
    /// 11: the parameters `[P]`, read-only.
    pub weights: &'a wgpu::Buffer,
}

impl<'a> TileBindings<'a> {
    /// Each buffer with its binding and slot kind.
    pub fn entries(&self) -> [(u32, &'a wgpu::Buffer, Slot); 7] {
        [
            (0, self.step, Slot::Step),
            (1, self.layers, Slot::Read),
            (2, self.x, Slot::Read),
            (3, self.t, Slot::Read),
            (9, self.scratch, Slot::ReadWrite),
            (10, self.partial, Slot::ReadWrite),
            (11, self.weights, Slot::Read),
        ]
    }
}

/// The bindings of `reduce_update`. Owned handles (wgpu buffers are reference-counted), so the
/// bind group can be rebuilt when the stats buffer grows ([`super::FusedMlp::rebind_stats`]).
pub(super) struct ReduceBindings {
    /// 0: the step uniform, one slot per dispatch.
    pub step: wgpu::Buffer,
    /// 1: the layer table `[layers]`.
    pub layers: wgpu::Buffer,
    /// 4: the parameters `[P]`, updated in place.
    pub params: wgpu::Buffer,
    /// 5: the optimizer's first state `[P]` (or a placeholder).
    pub opt_m: wgpu::Buffer,
    /// 6: the optimizer's second state `[P]` (or a placeholder).
    pub opt_v: wgpu::Buffer,
    /// 7: the gradient `[P]` when captured (or a placeholder).
    pub grads: wgpu::Buffer,
    /// 8: per-step loss and correct count `[steps, 2]`.
    pub stats: wgpu::Buffer,
    /// 10: the tile pass's partials.
    pub partial: wgpu::Buffer,
}

impl ReduceBindings {
    /// Each buffer with its binding and slot kind.
    pub fn entries(&self) -> [(u32, &wgpu::Buffer, Slot); 8] {
        [
            (0, &self.step, Slot::Step),
            (1, &self.layers, Slot::Read),
            (4, &self.params, Slot::ReadWrite),
            (5, &self.opt_m, Slot::ReadWrite),
            (6, &self.opt_v, Slot::ReadWrite),
            (7, &self.grads, Slot::ReadWrite),
            (8, &self.stats, Slot::ReadWrite),
            (10, &self.partial, Slot::ReadWrite),
        ]
    }
}

/// A storage buffer of `size` bytes that only kernels touch.
pub(super) fn storage(device: &wgpu::Device, label: &str, size: u64) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    })
}

/// The override constants of both passes (shaders/fused.wgsl's `override`s).
pub(super) fn constants(
    spec: &ModelSpec,
    optimizer: Optimizer,
    shape: &FusedShape,
    hidden: usize,
    options: FusedOptions,
) -> Vec<(&'static str, f64)> {
    vec![
        ("TILE", shape.tile as f64),
        ("STRIDE", shape.stride as f64),
        ("SM_LEN", (2 * shape.tile * shape.stride) as f64),
        ("W_SLAB", shape.w_slab as f64),
        ("W_ROW", shape.w_row as f64),
        ("WS_LEN", (shape.w_slab * shape.w_row) as f64),
        ("WG", shape.workgroup as f64),
        ("GROUPS", shape.groups as f64),
        ("LAYERS", spec.layout().len() as f64),
        ("PARAMS", spec.param_count() as f64),
        ("HIDDEN", hidden as f64),
        ("LOSS", spec.loss.code() as f64),
        ("OPT", optimizer.kind().code() as f64),
        ("KEEP_GRAD", options.capture_gradients as u32 as f64),
    ]
}

/// The pipeline of `entry`, its bind group over `entries` (binding, buffer, slot kind) and the
/// layout of exactly those bindings.
pub(super) fn build(
    device: &wgpu::Device,
    module: &wgpu::ShaderModule,
    entry: &str,
    entries: &[(u32, &wgpu::Buffer, Slot)],
    constants: &[(&str, f64)],
) -> (
    wgpu::ComputePipeline,
    wgpu::BindGroup,
    wgpu::BindGroupLayout,
) {
    let layout_entries: Vec<_> = entries
        .iter()
        .map(|&(binding, _, slot)| slot.layout_entry(binding))
        .collect();
    let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(entry),
        entries: &layout_entries,
    });
    let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(entry),
        bind_group_layouts: &[Some(&bgl)],
        immediate_size: 0,
    });
    let group = bind_group(device, entry, &bgl, entries);
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: Some(&layout),
        module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants,
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    (pipeline, group, bgl)
}

/// The bind group of `entries` (binding, buffer, slot kind) in layout `bgl`.
pub(super) fn bind_group(
    device: &wgpu::Device,
    label: &str,
    bgl: &wgpu::BindGroupLayout,
    entries: &[(u32, &wgpu::Buffer, Slot)],
) -> wgpu::BindGroup {
    let group_entries: Vec<_> = entries
        .iter()
        .map(|&(binding, buffer, slot)| wgpu::BindGroupEntry {
            binding,
            resource: match slot {
                Slot::Step => step_binding(buffer),
                _ => buffer.as_entire_binding(),
            },
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout: bgl,
        entries: &group_entries,
    })
}

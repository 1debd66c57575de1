//! Every WGSL source in one place, the uniform structs that mirror them, and pipeline creation.

use super::plan::{self, KernelSupport, Overrides};
use bytemuck::{Pod, Zeroable};

mod bindings;
mod matmul;
pub use bindings::{
    family_slots, step_binding, DataBindings, FamilyBindings, LossBindings, MatmulBindings,
    OptimizerBindings, Slot, STEP_UNIFORM_SIZE,
};
pub use matmul::{GemmConfig, MatmulConfig, MatmulMode, MatmulVariant, MATMUL_TILE};
pub(crate) use matmul::{BLOCK_M, BLOCK_N, BLOCK_WG};

/// The kernel families, one `shaders/*.wgsl` file each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// The plain matmul kernels of shaders/matmul.wgsl (tiled and blocked).
    Matmul,
    /// The real-GPU matmul in tiles chosen by override constants ([`GemmConfig`]):
    /// matmul.wgsl + matmul_gemm.wgsl, built on every device.
    MatmulGemm,
    /// The loss and output-delta kernels of shaders/loss.wgsl.
    Loss,
    /// The optimizer update kernels of shaders/optimizer.wgsl.
    Optimizer,
    /// The data kernels of shaders/data.wgsl (e.g. gathering rows).
    Data,
}

/// Shared WGSL: activation functions.
pub const ACTIVATION_WGSL: &str = include_str!("../../shaders/activation.wgsl");
/// Shared WGSL: the per-step uniform and the optimizer update.
pub const STEP_WGSL: &str = include_str!("../../shaders/step.wgsl");
/// WGSL: the plain matmul kernels (tiled and blocked).
pub const MATMUL_WGSL: &str = include_str!("../../shaders/matmul.wgsl");
/// WGSL: the `matmul_gemm` tile kernel, built on top of [`MATMUL_WGSL`].
pub const MATMUL_GEMM_WGSL: &str = include_str!("../../shaders/matmul_gemm.wgsl");
/// WGSL: the loss kernels.
pub const LOSS_WGSL: &str = include_str!("../../shaders/loss.wgsl");
/// WGSL: the optimizer kernels.
pub const OPTIMIZER_WGSL: &str = include_str!("../../shaders/optimizer.wgsl");
/// WGSL: the data kernels.
pub const DATA_WGSL: &str = include_str!("../../shaders/data.wgsl");

impl Family {
    /// Every family, in declaration order.
    pub const ALL: [Family; 5] = [
        Family::Matmul,
        Family::MatmulGemm,
        Family::Loss,
        Family::Optimizer,
        Family::Data,
    ];

    /// The full source of a family: its shared preludes, then its own file. WGSL has no
    /// `#include`, so the preludes are concatenated here (and in the naga validation test).
    pub fn source(self) -> String {
        let (preludes, own): (&[&str], &str) = match self {
            Family::Matmul => (&[ACTIVATION_WGSL, STEP_WGSL], MATMUL_WGSL),
            Family::MatmulGemm => (&[ACTIVATION_WGSL, STEP_WGSL, MATMUL_WGSL], MATMUL_GEMM_WGSL),
            Family::Loss => (&[ACTIVATION_WGSL, STEP_WGSL], LOSS_WGSL),
            Family::Optimizer => (&[STEP_WGSL], OPTIMIZER_WGSL),
            Family::Data => (&[STEP_WGSL], DATA_WGSL),
        };
        let mut s = preludes.join("\n");
        s.push('\n');
        s.push_str(own);
        s
    }

    /// The file a family lives in, for messages.
    pub fn file(self) -> &'static str {
        match self {
            Family::Matmul => "shaders/matmul.wgsl",
            Family::MatmulGemm => "shaders/matmul_gemm.wgsl",
            Family::Loss => "shaders/loss.wgsl",
            Family::Optimizer => "shaders/optimizer.wgsl",
            Family::Data => "shaders/data.wgsl",
        }
    }
}

/// Mirrors `struct Step` in shaders/step.wgsl. Written once per step.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct StepUniform {
    /// Rows in this step's batch.
    pub batch: u32,
    /// Slot of this step's loss in the stats buffer.
    pub step_index: u32,
    /// First position in the epoch order of this step's rows.
    pub row_start: u32,
    /// Padding.
    pub _pad1: u32,
    /// Learning rate.
    pub lr: f32,
    /// L2 regularization strength.
    pub l2: f32,
    /// Momentum coefficient.
    pub momentum: f32,
    /// Adam's first-moment decay rate.
    pub beta1: f32,
    /// Adam's second-moment decay rate.
    pub beta2: f32,
    /// Adam's epsilon.
    pub eps: f32,
    /// `1 - beta1^t`.
    pub bias_correction1: f32,
    /// `1 - beta2^t`.
    pub bias_correction2: f32,
    /// `1 / batch`: the mean over the batch is folded into the output delta.
    pub inv_batch: f32,
    /// Padding.
    pub _pad2: [f32; 3],
}

impl StepUniform {
    /// A step of `batch` rows with the optimizer's hyperparameters `h` and `inv_batch` (1/rows of
    /// the whole step, also for each of its micro-batches); slot and first row left at 0.
    pub fn new(batch: usize, h: &crate::optim::StepHyper, inv_batch: f32) -> Self {
        StepUniform {
            batch: batch as u32,
            lr: h.lr,
            l2: h.l2,
            momentum: h.momentum,
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
            bias_correction1: h.bias_correction1,
            bias_correction2: h.bias_correction2,
            inv_batch,
            ..Default::default()
        }
    }
}

/// Mirrors `struct Dims` in shaders/matmul.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct MatmulDims {
    /// Columns of C.
    pub n: u32,
    /// Forward/delta: the shared dimension (without the ones column).
    pub k: u32,
    /// Grad: rows of W (without the ones row).
    pub m: u32,
    /// Leaky ReLU slope for the activation.
    pub alpha: f32,
    /// Offset of A, in `f32` elements, into the left-hand buffer.
    pub a_off: u32,
    /// Offset of B, in `f32` elements, into the right-hand buffer.
    pub b_off: u32,
    /// Offset of C, in `f32` elements, into the output buffer.
    pub c_off: u32,
    /// Delta: offset of the previous activations in the second output buffer, in `f32` elements.
    pub aux_off: u32,
}

impl MatmulDims {
    /// Layer `lay`'s forward `[B, in] · W[in, out]` (W at its offset in the parameters), with
    /// the activation's leaky slope `alpha`.
    pub fn forward(lay: &crate::model::LayerLayout, alpha: f32) -> Self {
        MatmulDims {
            n: lay.outputs as u32,
            k: lay.inputs as u32,
            alpha,
            b_off: lay.weight as u32,
            ..Default::default()
        }
    }

    /// Layer `lay`'s delta `[B, out] · W[in, out]ᵀ`, with the previous activation's slope.
    pub fn delta(lay: &crate::model::LayerLayout, alpha: f32) -> Self {
        MatmulDims {
            n: lay.inputs as u32,
            k: lay.outputs as u32,
            alpha,
            b_off: lay.weight as u32,
            ..Default::default()
        }
    }

    /// Layer `lay`'s gradient `[in + 1, B] · [B, out]`, written at the layer's weights.
    pub fn grad(lay: &crate::model::LayerLayout) -> Self {
        MatmulDims {
            n: lay.outputs as u32,
            m: lay.inputs as u32,
            c_off: lay.weight as u32,
            ..Default::default()
        }
    }
}

/// Mirrors `struct LossDims` in shaders/loss.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct LossDims {
    /// Outputs per row.
    pub out: u32,
    /// Output activation code.
    pub act: u32,
    /// Loss code.
    pub loss: u32,
    /// Leaky ReLU slope.
    pub alpha: f32,
}

/// Mirrors `struct Count` (optimizer.wgsl) and `struct Gather` (data.wgsl): one u32, padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct OneU32 {
    /// The value (a count, or a row width).
    pub value: u32,
    /// Padding.
    pub _pad: [u32; 3],
}

/// Mirrors `struct Count` (optimizer.wgsl) where a kernel covers `count` elements from `offset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Range {
    /// Elements the kernel covers.
    pub count: u32,
    /// First element covered.
    pub offset: u32,
    /// Padding.
    pub _pad: [u32; 2],
}

/// Invocations per workgroup of the 1-D kernels.
pub const WORKGROUP_1D: u32 = 256;

/// Shader modules and bind group layouts, made once per device.
pub struct Kernels {
    /// Which matmul kernels this device runs, as the plan decided.
    support: KernelSupport,
    /// The tuner's measured choices, which take precedence over the static plan.
    overrides: Overrides,
    modules: Vec<(Family, wgpu::ShaderModule)>,
    layouts: Vec<(Family, wgpu::BindGroupLayout, wgpu::PipelineLayout)>,
}

impl Kernels {
    /// The modules and layouts of every family, for the kernels `support` names and the
    /// tuner's `overrides` (see [`plan::plan_tuned`]).
    pub fn new(device: &wgpu::Device, support: KernelSupport, overrides: Overrides) -> Self {
        let mut modules = Vec::new();
        let mut layouts = Vec::new();
        for f in Family::ALL {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(f.file()),
                source: wgpu::ShaderSource::Wgsl(f.source().into()),
            });
            modules.push((f, module));
            let entries: Vec<wgpu::BindGroupLayoutEntry> = family_slots(f)
                .into_iter()
                .enumerate()
                .map(|(i, s)| s.layout_entry(i as u32))
                .collect();
            let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(f.file()),
                entries: &entries,
            });
            let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(f.file()),
                bind_group_layouts: &[Some(&bgl)],
                immediate_size: 0,
            });
            layouts.push((f, bgl, pl));
        }
        Kernels {
            support,
            overrides,
            modules,
            layouts,
        }
    }

    /// The bind group layout of a family's kernels.
    pub fn bind_group_layout(&self, f: Family) -> &wgpu::BindGroupLayout {
        &self
            .layouts
            .iter()
            .find(|(g, _, _)| *g == f)
            .expect("all families")
            .1
    }

    /// The kernels this device runs.
    pub fn support(&self) -> KernelSupport {
        self.support
    }

    /// Runs `variant` for every launch whatever the adapter (tests, benches and the tuner:
    /// how one candidate is forced). A `Gemm` tile must [`GemmConfig::fits`] the device.
    pub fn with_variant(mut self, variant: MatmulVariant) -> Self {
        self.support.default_variant = variant;
        self.support.gemm_by_shape = false;
        self.overrides = Overrides::default();
        self
    }

    /// Uses `matmul_gemm` with the tile `cfg` for every launch ([`Kernels::with_variant`]).
    pub fn with_gemm(self, cfg: GemmConfig) -> Self {
        self.with_variant(MatmulVariant::Gemm(cfg))
    }

    /// The matmul launch shape for one launch of `mode` with `dims`: the tuner's choice where
    /// it measured this matmul, else the static plan's ([`plan::matmul_config`]).
    pub fn matmul_config_for(&self, mode: MatmulMode, dims: &MatmulDims) -> MatmulConfig {
        let key = plan::MatmulKey::of(mode, dims);
        match self.overrides.get(&key) {
            Some(&variant) => plan::launch_shape(variant, dims),
            None => plan::matmul_config(&self.support, mode, dims),
        }
    }

    /// A compute pipeline for `entry` of family `f` with override constants. The matmul's
    /// generic entry `matmul` resolves to `matmul_blocked` where that is this adapter's
    /// variant, else `matmul_tiled` (64×64).
    pub fn pipeline(
        &self,
        device: &wgpu::Device,
        f: Family,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> wgpu::ComputePipeline {
        let module = &self
            .modules
            .iter()
            .find(|(g, _)| *g == f)
            .expect("all families")
            .1;
        let layout = &self
            .layouts
            .iter()
            .find(|(g, _, _)| *g == f)
            .expect("all families")
            .2;
        let entry = if f == Family::Matmul && entry == "matmul" {
            // matmul.wgsl's own kernels only: `matmul_gemm` lives in another family's module.
            match self.support.default_variant {
                MatmulVariant::Blocked => "matmul_blocked",
                _ => "matmul_tiled",
            }
        } else {
            entry
        };
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(layout),
            module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        })
    }

    /// The matmul pipeline for a launch shape, mode, activation (φ for forward, φ' for delta)
    /// and optimizer.
    #[allow(clippy::too_many_arguments)] // one per override constant of the pipeline
    pub fn matmul(
        &self,
        device: &wgpu::Device,
        cfg: MatmulConfig,
        mode: MatmulMode,
        act: u32,
        opt: u32,
        keep_grad: bool,
        split_k: bool,
    ) -> wgpu::ComputePipeline {
        let mut constants = vec![
            ("MODE", mode as u32 as f64),
            ("ACT", act as f64),
            ("OPT", opt as f64),
            ("KEEP_GRAD", keep_grad as u32 as f64),
            ("SPLIT_K", split_k as u32 as f64),
        ];
        constants.extend(cfg.shape_constants());
        self.pipeline(device, cfg.family(), cfg.entry(), &constants)
    }

    /// A bind group of family `f` over `bindings`' whole buffers; the step uniform
    /// (binding 1) as one slot, placed by the dispatch's dynamic offset.
    pub fn bind_group(
        &self,
        device: &wgpu::Device,
        f: Family,
        bindings: &impl FamilyBindings,
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = bindings
            .entries(f)
            .into_iter()
            .map(|(binding, b, slot)| wgpu::BindGroupEntry {
                binding,
                resource: match slot {
                    Slot::Step => step_binding(b),
                    _ => b.as_entire_binding(),
                },
            })
            .collect();
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(f.file()),
            layout: self.bind_group_layout(f),
            entries: &entries,
        })
    }
}

/// Workgroup counts for `n` invocations of a 1-D kernel, folded into y past the per-dimension
/// limit (the kernels rebuild the index as `(y · groups_x) · 256 + x`).
pub fn groups_1d(n: u64, max_per_dim: u32) -> (u32, u32) {
    let groups = n.div_ceil(WORKGROUP_1D as u64).max(1);
    let x = groups.min(max_per_dim as u64);
    let y = groups.div_ceil(x);
    (x as u32, y as u32)
}
